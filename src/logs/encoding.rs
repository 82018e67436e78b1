//! How names and events are written on disk: escaping, file stems, the event line.

use sha2::{Digest, Sha256};

use super::{HASHED_STEM_PREFIX, LogError, LogEvent, MAX_MESSAGE_BYTES, MAX_STEM};

pub(super) fn parse_event(line: &[u8]) -> Option<LogEvent> {
    let text = String::from_utf8_lossy(line);
    let (ts, rest) = text.split_once(' ')?;
    let (ing, msg) = rest.split_once(' ')?;
    Some(LogEvent {
        timestamp: ts.parse().ok()?,
        ingestion_time: ing.parse().ok()?,
        message: unescape(msg),
    })
}

/// CloudWatch's rule: 1 to 512 characters, no `:` or `*`.
pub(super) fn validate_stream_name(name: &str) -> Result<(), LogError> {
    if name.is_empty() || name.chars().count() > 512 || name.contains([':', '*']) {
        return Err(LogError::invalid(format!(
            "log stream name {name:?}: 1 to 512 characters, without ':' or '*'"
        )));
    }
    Ok(())
}

pub(super) fn split_message(message: &str) -> impl Iterator<Item = &str> {
    let mut rest = message;
    let mut first = true;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            // An empty line is still an event (once).
            return std::mem::take(&mut first).then_some("");
        }
        first = false;
        let mut cut = rest.len().min(MAX_MESSAGE_BYTES);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (head, tail) = rest.split_at(cut);
        rest = tail;
        Some(head)
    })
}

pub(super) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_into(s, &mut out);
    out
}

pub(super) fn escape_into(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

pub(super) fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            // Not written by us; keep it as it is.
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

pub(super) fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, b) in name.bytes().enumerate() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A safe, unique file name for a group or stream name (see the module doc).
pub(super) fn file_stem(name: &str) -> String {
    let enc = encode(name);
    if enc.len() <= MAX_STEM {
        return enc;
    }
    let bytes = enc.as_bytes();
    let mut cut = HASHED_STEM_PREFIX;
    // Never split a %XX triple.
    if bytes[cut - 1] == b'%' {
        cut -= 1;
    } else if bytes[cut - 2] == b'%' {
        cut -= 2;
    }
    let digest = hex::encode(Sha256::digest(name.as_bytes()));
    format!("{}~{}", &enc[..cut], &digest[..32])
}

pub(super) fn short_hash(s: &str) -> u64 {
    let d = Sha256::digest(s.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}
