//! One stream (or group) file on disk: its header line, and complete lines read forward or
//! backward from a line boundary.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::encoding::{encode, parse_event, unescape};
use super::{LogError, STREAM_EXT, STREAM_MAGIC, StreamInfo};

/// An open stream file: where events start, where complete lines end.
pub(super) struct StreamFile {
    pub(super) file: File,
    pub(super) name: String,
    pub(super) creation_time: i64,
    pub(super) data_start: u64,
    pub(super) end: u64,
}

impl StreamFile {
    /// `Ok(None)`: not a stream file (no valid header).
    pub(super) fn open(path: &Path) -> io::Result<Option<StreamFile>> {
        let mut file = File::open(path)?;
        let Some((creation_time, name, data_start)) = read_header_from(&mut file, STREAM_MAGIC)?
        else {
            return Ok(None);
        };
        let len = file.metadata()?.len();
        let end = complete_end(&mut file, data_start, len)?;
        Ok(Some(StreamFile {
            file,
            name,
            creation_time,
            data_start,
            end,
        }))
    }

    /// A token's offset must be a line boundary inside the events.
    pub(super) fn check_boundary(&mut self, pos: u64) -> Result<(), LogError> {
        let bad = || LogError::invalid("The specified nextToken is invalid.");
        if pos < self.data_start || pos > self.end {
            return Err(bad());
        }
        if pos == self.data_start {
            return Ok(());
        }
        let mut b = [0u8; 1];
        self.file.seek(SeekFrom::Start(pos - 1))?;
        self.file.read_exact(&mut b)?;
        if b[0] == b'\n' { Ok(()) } else { Err(bad()) }
    }

    pub(super) fn forward(&mut self, from: u64) -> io::Result<ForwardLines<'_>> {
        self.file.seek(SeekFrom::Start(from))?;
        Ok(ForwardLines {
            reader: BufReader::with_capacity(64 * 1024, &self.file),
            pos: from,
            end: self.end,
        })
    }

    pub(super) fn backward(&mut self, from: u64) -> BackwardLines<'_> {
        BackwardLines {
            file: &self.file,
            floor: self.data_start,
            pos: from,
            buf: Vec::new(),
            buf_start: from,
        }
    }
}

/// Complete lines from an offset up to a limit: `(start, next, line without newline)`.
pub(super) struct ForwardLines<'a> {
    reader: BufReader<&'a File>,
    pos: u64,
    end: u64,
}

impl ForwardLines<'_> {
    pub(super) fn next_line(&mut self) -> io::Result<Option<(u64, u64, Vec<u8>)>> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let mut line = Vec::new();
        let n = self.reader.read_until(b'\n', &mut line)? as u64;
        if n == 0 || line.last() != Some(&b'\n') || self.pos + n > self.end {
            // Shorter than when measured (truncated underneath us): stop here.
            return Ok(None);
        }
        line.pop();
        let start = self.pos;
        self.pos += n;
        Ok(Some((start, self.pos, line)))
    }
}

/// Complete lines walking back from a line boundary: `(start, next, line)` where `next` is the
/// offset just past the line's newline.
pub(super) struct BackwardLines<'a> {
    file: &'a File,
    floor: u64,
    /// The boundary the next line to return ends at.
    pos: u64,
    /// The file's bytes `[buf_start, pos)`.
    buf: Vec<u8>,
    buf_start: u64,
}

impl BackwardLines<'_> {
    const CHUNK: u64 = 64 * 1024;

    pub(super) fn next_line(&mut self) -> io::Result<Option<(u64, u64, Vec<u8>)>> {
        if self.pos <= self.floor {
            return Ok(None);
        }
        // The byte at pos-1 is this line's newline; the line starts after the previous one.
        loop {
            // Once the buffer holds the newline, search the bytes before it.
            if self.buf_start < self.pos {
                let body_end = (self.pos - 1 - self.buf_start) as usize;
                if let Some(i) = self.buf[..body_end].iter().rposition(|&b| b == b'\n') {
                    let start = self.buf_start + i as u64 + 1;
                    return Ok(Some(self.take(start)));
                }
                if self.buf_start <= self.floor {
                    let start = self.floor;
                    return Ok(Some(self.take(start)));
                }
            }
            let new_start = self.buf_start.saturating_sub(Self::CHUNK).max(self.floor);
            let mut chunk = vec![0u8; (self.buf_start - new_start) as usize];
            read_exact_at(self.file, &mut chunk, new_start)?;
            chunk.extend_from_slice(&self.buf);
            self.buf = chunk;
            self.buf_start = new_start;
        }
    }

    fn take(&mut self, start: u64) -> (u64, u64, Vec<u8>) {
        let from = (start - self.buf_start) as usize;
        let to = (self.pos - 1 - self.buf_start) as usize;
        let line = self.buf[from..to].to_vec();
        self.buf.truncate(from);
        let next = self.pos;
        self.pos = start;
        (start, next, line)
    }
}

pub(super) fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(buf, offset)
}

/// The offset just past the last newline at or after `data_start`: a write in progress leaves a
/// partial last line that readers must not see yet.
pub(super) fn complete_end(file: &mut File, data_start: u64, len: u64) -> io::Result<u64> {
    let mut end = len;
    let mut chunk = vec![0u8; 4096];
    while end > data_start {
        let from = end.saturating_sub(chunk.len() as u64).max(data_start);
        let n = (end - from) as usize;
        read_exact_at(file, &mut chunk[..n], from)?;
        if let Some(i) = chunk[..n].iter().rposition(|&b| b == b'\n') {
            return Ok(from + i as u64 + 1);
        }
        end = from;
    }
    Ok(data_start)
}

/// Reads a header line: `(creation ms, name, header length)`.
pub(super) fn read_header_from(
    file: &mut File,
    magic: &str,
) -> io::Result<Option<(i64, String, u64)>> {
    let mut line = Vec::new();
    // Names are at most 512 characters; escaped at most twice that. Bound the read anyway.
    let n = BufReader::new(file.take(8 * 1024)).read_until(b'\n', &mut line)?;
    if line.last() != Some(&b'\n') {
        return Ok(None);
    }
    line.pop();
    let Ok(text) = std::str::from_utf8(&line) else {
        return Ok(None);
    };
    let Some(rest) = text.strip_prefix(magic) else {
        return Ok(None);
    };
    let Some((created, name)) = rest.split_once(' ') else {
        return Ok(None);
    };
    let Ok(created) = created.parse() else {
        return Ok(None);
    };
    Ok(Some((created, unescape(name), n as u64)))
}

pub(super) fn read_header(path: &Path, magic: &str) -> io::Result<Option<(i64, String)>> {
    match File::open(path) {
        Ok(mut f) => Ok(read_header_from(&mut f, magic)?.map(|(c, n, _)| (c, n))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Creates `path` holding exactly `header`, atomically: a concurrent creator either wins or
/// loses whole, so no event is ever written ahead of a header.
pub(super) fn create_with_header(path: &Path, header: &str) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4()));
    fs::write(&tmp, header)?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// `(name, path)` of the streams in a group directory whose names start with `prefix`.
pub(super) fn list_streams(dir: &Path, prefix: &str) -> Result<Vec<(String, PathBuf)>, LogError> {
    let enc_prefix = encode(prefix);
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(stem) = file_name.to_str().and_then(|n| n.strip_suffix(STREAM_EXT)) else {
            continue;
        };
        // Encoding preserves prefixes, so most non-matching files are skipped unread.
        let could_match = match stem.split_once('~') {
            Some((kept, _)) => kept.starts_with(&enc_prefix) || enc_prefix.starts_with(kept),
            None => stem.starts_with(&enc_prefix),
        };
        if !could_match {
            continue;
        }
        let path = entry.path();
        if let Some((_, name)) = read_header(&path, STREAM_MAGIC)?
            && name.starts_with(prefix)
        {
            out.push((name, path));
        }
    }
    out.sort();
    Ok(out)
}

pub(super) fn stream_info(path: &Path) -> io::Result<Option<StreamInfo>> {
    let Some(mut f) = StreamFile::open(path)? else {
        return Ok(None);
    };
    let stored_bytes = f.end;
    let start = f.data_start;
    let mut first = None;
    let mut fwd = f.forward(start)?;
    while let Some((_, _, line)) = fwd.next_line()? {
        if let Some(ev) = parse_event(&line) {
            first = Some(ev.timestamp);
            break;
        }
    }
    let end = f.end;
    let mut last = None;
    let mut back = f.backward(end);
    while let Some((_, _, line)) = back.next_line()? {
        if let Some(ev) = parse_event(&line) {
            last = Some(ev);
            break;
        }
    }
    Ok(Some(StreamInfo {
        name: f.name,
        creation_time: f.creation_time,
        first_event_timestamp: first,
        last_event_timestamp: last.as_ref().map(|e| e.timestamp),
        last_ingestion_time: last.as_ref().map(|e| e.ingestion_time),
        stored_bytes,
    }))
}
