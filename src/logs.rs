//! Job logs: a file-backed stand-in for the part of CloudWatch Logs that AWS Batch users read.
//!
//! Layout under the store's directory (`<data-dir>/logs/`):
//!
//! ```text
//! <group file stem>/.group              "#flotilla-log-group v1 <creation ms> <escaped group name>\n"
//! <group file stem>/<stream stem>.log   "#flotilla-log v1 <creation ms> <escaped stream name>\n"
//!                                        then one line per event:
//!                                        "<timestamp ms> <ingestion ms> <escaped message>\n"
//! ```
//!
//! Escaping (messages and names): `\` → `\\`, newline → `\n`, carriage return → `\r`; nothing
//! else, so a line is the raw text and every event is exactly one line.
//!
//! File stems: bytes outside `[A-Za-z0-9_.-]` (and a leading `.`) become `%XX`, so `/` never
//! makes a directory and no stem is `.`/`..` or hidden. A stem longer than 200 bytes is cut to
//! its first ~120 bytes plus `~` and 32 hex digits of the name's SHA-256 (`~` itself is always
//! encoded, so the two forms cannot collide). The header line holds the real name, which is what
//! listings report.
//!
//! One stream is one append-only file: an append is one `write` to a file opened with
//! `O_APPEND`, so concurrent writers never interleave inside a line. Readers ignore a final line
//! without its newline (a write still in progress).
//!
//! Tokens are byte offsets of line boundaries: `f/<offset>` (read forward from there) and
//! `b/<offset>` (read backward from there); `FilterLogEvents` uses `s/<offset>/<stream name>`.
//! Clients treat them as opaque.

use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::util::time::now_ms;

/// The log group AWS Batch writes job output to.
pub use crate::model::arn::JOB_LOG_GROUP;
/// CloudWatch's cap on events per `GetLogEvents`/`FilterLogEvents` response, and the default.
pub const MAX_EVENTS: usize = 10_000;
/// CloudWatch's cap on the size of one response.
pub const MAX_RESPONSE_BYTES: usize = 1_048_576;
/// CloudWatch counts each event as its UTF-8 message plus 26 bytes.
const EVENT_OVERHEAD: usize = 26;
/// Longer messages are split into several events, as the awslogs driver does at its limit.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// One call reads at most this much of the files, so a narrow time window or a rare filter term
/// over a huge stream answers promptly with a token to continue, as CloudWatch does.
const MAX_SCAN_BYTES: u64 = 64 * 1024 * 1024;
const DESCRIBE_LIMIT: usize = 50;

const STREAM_MAGIC: &str = "#flotilla-log v1 ";
const GROUP_MAGIC: &str = "#flotilla-log-group v1 ";
const GROUP_FILE: &str = ".group";
const STREAM_EXT: &str = ".log";
const MAX_STEM: usize = 200;
const HASHED_STEM_PREFIX: usize = 120;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The group or stream does not exist. Answered as `ResourceNotFoundException`.
    #[error("{0}")]
    ResourceNotFound(String),
    /// A malformed token or argument; the same request fails again. `InvalidParameterException`.
    #[error("{0}")]
    InvalidParameter(String),
    /// The disk failed us; a retry may succeed. `ServiceUnavailableException`.
    #[error("log store i/o: {0}")]
    Io(#[from] io::Error),
}

impl LogError {
    /// The CloudWatch Logs error code (`__type`).
    pub fn error_type(&self) -> &'static str {
        match self {
            LogError::ResourceNotFound(_) => "ResourceNotFoundException",
            LogError::InvalidParameter(_) => "InvalidParameterException",
            LogError::Io(_) => "ServiceUnavailableException",
        }
    }

    fn invalid(msg: impl Into<String>) -> Self {
        LogError::InvalidParameter(msg.into())
    }

    fn no_group() -> Self {
        LogError::ResourceNotFound("The specified log group does not exist.".into())
    }

    fn no_stream() -> Self {
        LogError::ResourceNotFound("The specified log stream does not exist.".into())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEvent {
    /// Milliseconds since the epoch: when the line was produced (arrived at Flotilla).
    pub timestamp: i64,
    pub message: String,
    /// Milliseconds since the epoch: when it was written to the store.
    pub ingestion_time: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilteredEvent {
    pub log_stream_name: String,
    /// Unique per event in the group; stable across calls (clients dedupe on it).
    pub event_id: String,
    pub timestamp: i64,
    pub message: String,
    pub ingestion_time: i64,
}

/// `GetLogEvents` arguments besides the group and stream.
#[derive(Debug, Clone, Default)]
pub struct GetLogEvents {
    /// Inclusive.
    pub start_time: Option<i64>,
    /// Exclusive.
    pub end_time: Option<i64>,
    pub next_token: Option<String>,
    /// 1..=10,000; default 10,000 (and at most 1 MB either way).
    pub limit: Option<i64>,
    /// Without a token: `true` reads from the oldest event, `false` (default) returns the newest.
    pub start_from_head: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEventsPage {
    /// Oldest first.
    pub events: Vec<LogEvent>,
    /// Equal to the token passed in when there is nothing newer: the end-of-stream signal.
    pub next_forward_token: String,
    /// Equal to the token passed in when there is nothing older.
    pub next_backward_token: String,
}

/// `FilterLogEvents` arguments besides the group.
#[derive(Debug, Clone, Default)]
pub struct FilterLogEvents {
    /// At most 100; excludes `stream_prefix`.
    pub stream_names: Option<Vec<String>>,
    pub stream_prefix: Option<String>,
    pub start_time: Option<i64>,
    pub end_time: Option<i64>,
    /// See [`FilterPattern`] for the supported subset.
    pub filter_pattern: Option<String>,
    pub next_token: Option<String>,
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchedStream {
    pub log_stream_name: String,
    pub searched_completely: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterPage {
    pub events: Vec<FilteredEvent>,
    pub searched_log_streams: Vec<SearchedStream>,
    /// `None` once every selected stream was searched to its end.
    pub next_token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    pub name: String,
    pub creation_time: i64,
    pub first_event_timestamp: Option<i64>,
    pub last_event_timestamp: Option<i64>,
    pub last_ingestion_time: Option<i64>,
    pub stored_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    pub name: String,
    pub creation_time: i64,
    pub stored_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StreamOrder {
    #[default]
    Name,
    LastEventTime,
}

#[derive(Debug, Clone, Default)]
pub struct DescribeStreams {
    pub prefix: Option<String>,
    pub order_by: StreamOrder,
    pub descending: bool,
    pub next_token: Option<String>,
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct DescribeGroups {
    pub prefix: Option<String>,
    pub next_token: Option<String>,
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_token: Option<String>,
}

/// The file-backed log store. Cheap to share behind an `Arc`; every method does blocking file
/// I/O (async callers use `spawn_blocking` for reads; appends are single small writes).
#[derive(Debug)]
pub struct LogStore {
    root: PathBuf,
}

/// Appends events to one stream. Shared by the tasks copying a job's stdout and stderr.
#[derive(Debug)]
pub struct LogWriter {
    group: String,
    stream: String,
    file: Mutex<File>,
}

impl LogStore {
    /// Opens (creating if needed) a store at `root`, with the `/aws/batch/job` group.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<LogStore> {
        let store = LogStore { root: root.into() };
        fs::create_dir_all(&store.root)?;
        store.ensure_group(JOB_LOG_GROUP)?;
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn group_dir(&self, group: &str) -> PathBuf {
        self.root.join(file_stem(group))
    }

    fn stream_path(&self, group: &str, stream: &str) -> PathBuf {
        self.group_dir(group)
            .join(format!("{}{STREAM_EXT}", file_stem(stream)))
    }

    /// Creates the group if it does not exist.
    pub fn ensure_group(&self, group: &str) -> io::Result<()> {
        let dir = self.group_dir(group);
        let marker = dir.join(GROUP_FILE);
        if marker.exists() {
            return Ok(());
        }
        fs::create_dir_all(&dir)?;
        let header = format!("{GROUP_MAGIC}{} {}\n", now_ms(), escape(group));
        create_with_header(&marker, &header)
    }

    fn check_group(&self, group: &str) -> Result<PathBuf, LogError> {
        let dir = self.group_dir(group);
        if dir.join(GROUP_FILE).exists() {
            Ok(dir)
        } else {
            Err(LogError::no_group())
        }
    }

    /// A writer for `stream` in `group`, creating both if needed.
    pub fn writer(&self, group: &str, stream: &str) -> Result<LogWriter, LogError> {
        validate_stream_name(stream)?;
        if group.is_empty() {
            return Err(LogError::invalid("log group name must not be empty"));
        }
        self.ensure_group(group)?;
        let path = self.stream_path(group, stream);
        // Each attempt writes a stream of its own, so the file is new: created and given its
        // header in one write, with no temporary file (a create-link-unlink per attempt made
        // ext4 search past recently deleted inodes, ~1 ms each at thousands of attempts a
        // second). A reader that catches the file before its header sees no stream yet.
        let header = format!("{STREAM_MAGIC}{} {}\n", now_ms(), escape(stream));
        let file = match OpenOptions::new().append(true).create_new(true).open(&path) {
            Ok(mut f) => {
                f.write_all(header.as_bytes())?;
                f
            }
            // Written before (a writer reopened after a restart): append after what is there.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                OpenOptions::new().append(true).open(&path)?
            }
            Err(e) => return Err(e.into()),
        };
        Ok(LogWriter {
            group: group.to_string(),
            stream: stream.to_string(),
            file: Mutex::new(file),
        })
    }

    fn open_stream(&self, group: &str, stream: &str) -> Result<StreamFile, LogError> {
        self.check_group(group)?;
        match StreamFile::open(&self.stream_path(group, stream)) {
            Ok(Some(f)) if f.name == stream => Ok(f),
            // A different name with the same hashed stem: astronomically unlikely, but then
            // this stream does not exist.
            Ok(_) => Err(LogError::no_stream()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(LogError::no_stream()),
            Err(e) => Err(e.into()),
        }
    }

    /// CloudWatch `GetLogEvents`.
    pub fn get_log_events(
        &self,
        group: &str,
        stream: &str,
        q: &GetLogEvents,
    ) -> Result<LogEventsPage, LogError> {
        let limit = events_limit(q.limit)?;
        check_times(q.start_time, q.end_time)?;
        let mut f = self.open_stream(group, stream)?;
        let in_window =
            |ts: i64| q.start_time.is_none_or(|s| ts >= s) && q.end_time.is_none_or(|e| ts < e);
        let (forward, from) = match q.next_token.as_deref() {
            None if q.start_from_head.unwrap_or(false) => (true, f.data_start),
            None => (false, f.end),
            Some(t) => {
                let (dir, pos) = parse_pos_token(t)?;
                f.check_boundary(pos)?;
                (dir == 'f', pos)
            }
        };
        let mut budget = Budget::new(limit);
        let mut events = Vec::new();
        if forward {
            // `consumed`: the end of the last line looked at, kept or skipped.
            let mut consumed = from;
            let mut first_start = None;
            let mut lines = f.forward(from)?;
            while let Some((start, next, line)) = lines.next_line()? {
                if budget.scan_exhausted() {
                    break;
                }
                budget.scanned(next - start);
                if let Some(ev) = parse_event(&line)
                    && in_window(ev.timestamp)
                {
                    if !budget.admit(&ev.message, events.len()) {
                        break;
                    }
                    first_start.get_or_insert(start);
                    events.push(ev);
                }
                consumed = next;
            }
            Ok(LogEventsPage {
                events,
                next_forward_token: format!("f/{consumed}"),
                next_backward_token: format!("b/{}", first_start.unwrap_or(from)),
            })
        } else {
            let mut consumed = from;
            let mut last_end = None;
            let mut lines = f.backward(from);
            while let Some((start, next, line)) = lines.next_line()? {
                if budget.scan_exhausted() {
                    break;
                }
                budget.scanned(next - start);
                if let Some(ev) = parse_event(&line)
                    && in_window(ev.timestamp)
                {
                    if !budget.admit(&ev.message, events.len()) {
                        break;
                    }
                    last_end.get_or_insert(next);
                    events.push(ev);
                }
                consumed = start;
            }
            events.reverse();
            Ok(LogEventsPage {
                events,
                next_forward_token: format!("f/{}", last_end.unwrap_or(from)),
                next_backward_token: format!("b/{consumed}"),
            })
        }
    }

    /// CloudWatch `FilterLogEvents`. Streams are searched one after another in name order (each
    /// oldest event first), so a page holds a run of one stream before the next; CloudWatch
    /// interleaves by time instead. Every event still comes exactly once across the pages.
    pub fn filter_log_events(
        &self,
        group: &str,
        q: &FilterLogEvents,
    ) -> Result<FilterPage, LogError> {
        let limit = events_limit(q.limit)?;
        check_times(q.start_time, q.end_time)?;
        let pattern = FilterPattern::parse(q.filter_pattern.as_deref().unwrap_or(""))?;
        let dir = self.check_group(group)?;
        let mut streams: Vec<String> = match (&q.stream_names, &q.stream_prefix) {
            (Some(_), Some(_)) => {
                return Err(LogError::invalid(
                    "logStreamNames and logStreamNamePrefix are mutually exclusive",
                ));
            }
            (Some(names), None) => {
                if names.is_empty() || names.len() > 100 {
                    return Err(LogError::invalid(
                        "logStreamNames must name between 1 and 100 streams",
                    ));
                }
                for n in names {
                    self.open_stream(group, n)?;
                }
                names.clone()
            }
            (None, prefix) => list_streams(&dir, prefix.as_deref().unwrap_or(""))?
                .into_iter()
                .map(|(name, _)| name)
                .collect(),
        };
        streams.sort();
        streams.dedup();
        let (mut resume_stream, mut resume_pos) = match q.next_token.as_deref() {
            None => (None, 0),
            Some(t) => {
                let (pos, name) = parse_filter_token(t)?;
                (Some(name), pos)
            }
        };
        let in_window =
            |ts: i64| q.start_time.is_none_or(|s| ts >= s) && q.end_time.is_none_or(|e| ts < e);
        let mut budget = Budget::new(limit);
        let mut events = Vec::new();
        let mut searched = Vec::new();
        let mut next_token = None;
        let group_hash = short_hash(group);
        'streams: for name in &streams {
            let mut from = None;
            if let Some(r) = &resume_stream {
                match name.as_str().cmp(r.as_str()) {
                    std::cmp::Ordering::Less => continue,
                    std::cmp::Ordering::Equal => from = Some(resume_pos),
                    std::cmp::Ordering::Greater => {}
                }
                resume_stream = None;
                resume_pos = 0;
            }
            let mut f = match self.open_stream(group, name) {
                Ok(f) => f,
                // Listed a moment ago; gone now. Nothing to search.
                Err(LogError::ResourceNotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            let from = match from {
                Some(p) => {
                    f.check_boundary(p)?;
                    p
                }
                None => f.data_start,
            };
            let stream_hash = short_hash(name);
            let mut lines = f.forward(from)?;
            let mut consumed = from;
            let mut complete = true;
            while let Some((start, next, line)) = lines.next_line()? {
                if budget.scan_exhausted() {
                    complete = false;
                    break;
                }
                budget.scanned(next - start);
                if let Some(ev) = parse_event(&line)
                    && in_window(ev.timestamp)
                    && pattern.matches(&ev.message)
                {
                    if !budget.admit(&ev.message, events.len()) {
                        complete = false;
                        break;
                    }
                    events.push(FilteredEvent {
                        log_stream_name: name.clone(),
                        event_id: format!("{group_hash:016x}{stream_hash:016x}{start:020}"),
                        timestamp: ev.timestamp,
                        message: ev.message,
                        ingestion_time: ev.ingestion_time,
                    });
                }
                consumed = next;
            }
            searched.push(SearchedStream {
                log_stream_name: name.clone(),
                searched_completely: complete,
            });
            if !complete {
                next_token = Some(format!("s/{consumed}/{name}"));
                break 'streams;
            }
        }
        Ok(FilterPage {
            events,
            searched_log_streams: searched,
            next_token,
        })
    }

    /// CloudWatch `DescribeLogStreams`.
    pub fn describe_log_streams(
        &self,
        group: &str,
        q: &DescribeStreams,
    ) -> Result<Page<StreamInfo>, LogError> {
        let limit = describe_limit(q.limit)?;
        if q.prefix.is_some() && q.order_by == StreamOrder::LastEventTime {
            return Err(LogError::invalid(
                "Cannot order by LastEventTime with a logStreamNamePrefix.",
            ));
        }
        let dir = self.check_group(group)?;
        let mut infos = Vec::new();
        for (name, path) in list_streams(&dir, q.prefix.as_deref().unwrap_or(""))? {
            match stream_info(&path) {
                Ok(Some(info)) if info.name == name => infos.push(info),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        match q.order_by {
            StreamOrder::Name => infos.sort_by(|a, b| a.name.cmp(&b.name)),
            StreamOrder::LastEventTime => infos.sort_by(|a, b| {
                a.last_event_timestamp
                    .cmp(&b.last_event_timestamp)
                    .then_with(|| a.name.cmp(&b.name))
            }),
        }
        if q.descending {
            infos.reverse();
        }
        paginate(infos, q.next_token.as_deref(), limit)
    }

    /// CloudWatch `DescribeLogGroups`.
    pub fn describe_log_groups(&self, q: &DescribeGroups) -> Result<Page<GroupInfo>, LogError> {
        let limit = describe_limit(q.limit)?;
        let prefix = q.prefix.as_deref().unwrap_or("");
        let mut groups = Vec::new();
        for entry in fs::read_dir(&self.root)? {
            let entry = entry?;
            if !entry.file_type()?.is_dir() {
                continue;
            }
            let dir = entry.path();
            let Some((creation_time, name)) = read_header(&dir.join(GROUP_FILE), GROUP_MAGIC)?
            else {
                continue;
            };
            if !name.starts_with(prefix) {
                continue;
            }
            let mut stored_bytes = 0;
            for f in fs::read_dir(&dir)? {
                let f = f?;
                if f.file_name().to_string_lossy().ends_with(STREAM_EXT) {
                    stored_bytes += f.metadata()?.len();
                }
            }
            groups.push(GroupInfo {
                name,
                creation_time,
                stored_bytes,
            });
        }
        groups.sort_by(|a, b| a.name.cmp(&b.name));
        paginate(groups, q.next_token.as_deref(), limit)
    }

    /// The newest timestamp in the stream and every message stored with exactly that
    /// timestamp: enough to resume copying a source that can only restart "since second S"
    /// without storing a line twice. `None` when the stream is missing or empty.
    pub fn tail(&self, group: &str, stream: &str) -> Result<Option<(i64, Vec<String>)>, LogError> {
        let mut f = match self.open_stream(group, stream) {
            Ok(f) => f,
            Err(LogError::ResourceNotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let end = f.end;
        let mut lines = f.backward(end);
        let mut newest: Option<i64> = None;
        let mut messages = Vec::new();
        while let Some((_, _, line)) = lines.next_line()? {
            let Some(ev) = parse_event(&line) else {
                continue;
            };
            match newest {
                None => newest = Some(ev.timestamp),
                Some(ts) if ts != ev.timestamp => break,
                Some(_) => {}
            }
            messages.push(ev.message);
        }
        messages.reverse();
        Ok(newest.map(|ts| (ts, messages)))
    }
}

impl LogWriter {
    pub fn group(&self) -> &str {
        &self.group
    }

    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Appends one line of output, timestamped now.
    pub fn append(&self, message: &str) -> Result<(), LogError> {
        self.append_at(now_ms(), message)
    }

    /// Appends one line of output produced at `timestamp` (ms since the epoch).
    pub fn append_at(&self, timestamp: i64, message: &str) -> Result<(), LogError> {
        self.append_batch(&[(timestamp, message)])
    }

    /// Appends several events with one write.
    pub fn append_batch(&self, events: &[(i64, &str)]) -> Result<(), LogError> {
        let ingestion = now_ms();
        let mut buf = String::new();
        for (ts, message) in events {
            for part in split_message(message) {
                buf.push_str(&ts.to_string());
                buf.push(' ');
                buf.push_str(&ingestion.to_string());
                buf.push(' ');
                escape_into(part, &mut buf);
                buf.push('\n');
            }
        }
        if buf.is_empty() {
            return Ok(());
        }
        // A poisoned lock only means another appender panicked mid-call; the file is still fine.
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.write_all(buf.as_bytes())?;
        Ok(())
    }
}

/// The supported subset of CloudWatch Logs filter patterns, for unstructured text:
///
/// - `term`: the message contains `term` (case-sensitive substring). Several terms must all
///   appear, in any order.
/// - `"a quoted phrase"`: contains the phrase, spaces included; `\"` and `\\` escape inside.
/// - `-term` / `-"phrase"`: must NOT contain it.
/// - `?term` / `?"phrase"`: at least one of the `?` terms must appear.
/// - empty (or only spaces): every event matches.
///
/// JSON (`{ $.x = ... }`), space-delimited (`[a, b]`) and regular-expression (`%...%`) patterns
/// are refused with `InvalidParameterException`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterPattern {
    all: Vec<String>,
    none: Vec<String>,
    any: Vec<String>,
}

impl FilterPattern {
    pub fn parse(pattern: &str) -> Result<FilterPattern, LogError> {
        let trimmed = pattern.trim();
        if let Some(c) = trimmed.chars().next()
            && matches!(c, '{' | '[' | '%')
        {
            return Err(LogError::invalid(format!(
                "filter pattern {pattern:?}: Flotilla supports only terms, \"quoted phrases\", \
                 -exclusions and ?alternatives (no JSON, space-delimited or regex patterns)"
            )));
        }
        let mut out = FilterPattern::default();
        let mut chars = trimmed.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            let Some(&first) = chars.peek() else {
                break;
            };
            let kind = match first {
                '-' | '?' => {
                    chars.next();
                    first
                }
                _ => ' ',
            };
            let mut term = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                let mut closed = false;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => {
                            closed = true;
                            break;
                        }
                        '\\' => match chars.next() {
                            Some(n) => term.push(n),
                            None => break,
                        },
                        c => term.push(c),
                    }
                }
                if !closed {
                    return Err(LogError::invalid(format!(
                        "filter pattern {pattern:?}: unterminated quoted phrase"
                    )));
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() {
                        break;
                    }
                    term.push(c);
                    chars.next();
                }
            }
            if term.is_empty() {
                // A lone `-`/`?` or `""` constrains nothing.
                continue;
            }
            match kind {
                '-' => out.none.push(term),
                '?' => out.any.push(term),
                _ => out.all.push(term),
            }
        }
        Ok(out)
    }

    pub fn matches(&self, message: &str) -> bool {
        self.all.iter().all(|t| message.contains(t.as_str()))
            && !self.none.iter().any(|t| message.contains(t.as_str()))
            && (self.any.is_empty() || self.any.iter().any(|t| message.contains(t.as_str())))
    }
}

/// Response limits for one call: event count, CloudWatch's 1 MB, and bytes of file read.
struct Budget {
    limit: usize,
    bytes: usize,
    scanned: u64,
}

impl Budget {
    fn new(limit: usize) -> Self {
        Budget {
            limit,
            bytes: 0,
            scanned: 0,
        }
    }

    /// Whether one more event fits; the first always does, however large.
    fn admit(&mut self, message: &str, taken: usize) -> bool {
        let size = message.len() + EVENT_OVERHEAD;
        if taken >= self.limit || (taken > 0 && self.bytes + size > MAX_RESPONSE_BYTES) {
            return false;
        }
        self.bytes += size;
        true
    }

    fn scanned(&mut self, n: u64) {
        self.scanned += n;
    }

    fn scan_exhausted(&self) -> bool {
        self.scanned >= MAX_SCAN_BYTES
    }
}

/// An open stream file: where events start, where complete lines end.
struct StreamFile {
    file: File,
    name: String,
    creation_time: i64,
    data_start: u64,
    end: u64,
}

impl StreamFile {
    /// `Ok(None)`: not a stream file (no valid header).
    fn open(path: &Path) -> io::Result<Option<StreamFile>> {
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
    fn check_boundary(&mut self, pos: u64) -> Result<(), LogError> {
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

    fn forward(&mut self, from: u64) -> io::Result<ForwardLines<'_>> {
        self.file.seek(SeekFrom::Start(from))?;
        Ok(ForwardLines {
            reader: BufReader::with_capacity(64 * 1024, &self.file),
            pos: from,
            end: self.end,
        })
    }

    fn backward(&mut self, from: u64) -> BackwardLines<'_> {
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
struct ForwardLines<'a> {
    reader: BufReader<&'a File>,
    pos: u64,
    end: u64,
}

impl ForwardLines<'_> {
    fn next_line(&mut self) -> io::Result<Option<(u64, u64, Vec<u8>)>> {
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
struct BackwardLines<'a> {
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

    fn next_line(&mut self) -> io::Result<Option<(u64, u64, Vec<u8>)>> {
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

fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(buf, offset)
}

/// The offset just past the last newline at or after `data_start`: a write in progress leaves a
/// partial last line that readers must not see yet.
fn complete_end(file: &mut File, data_start: u64, len: u64) -> io::Result<u64> {
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
fn read_header_from(file: &mut File, magic: &str) -> io::Result<Option<(i64, String, u64)>> {
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

fn read_header(path: &Path, magic: &str) -> io::Result<Option<(i64, String)>> {
    match File::open(path) {
        Ok(mut f) => Ok(read_header_from(&mut f, magic)?.map(|(c, n, _)| (c, n))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Creates `path` holding exactly `header`, atomically: a concurrent creator either wins or
/// loses whole, so no event is ever written ahead of a header.
fn create_with_header(path: &Path, header: &str) -> io::Result<()> {
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
fn list_streams(dir: &Path, prefix: &str) -> Result<Vec<(String, PathBuf)>, LogError> {
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

fn stream_info(path: &Path) -> io::Result<Option<StreamInfo>> {
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

fn parse_event(line: &[u8]) -> Option<LogEvent> {
    let text = String::from_utf8_lossy(line);
    let (ts, rest) = text.split_once(' ')?;
    let (ing, msg) = rest.split_once(' ')?;
    Some(LogEvent {
        timestamp: ts.parse().ok()?,
        ingestion_time: ing.parse().ok()?,
        message: unescape(msg),
    })
}

fn parse_pos_token(token: &str) -> Result<(char, u64), LogError> {
    let bad = || LogError::invalid("The specified nextToken is invalid.");
    let (dir, pos) = token.split_once('/').ok_or_else(bad)?;
    let dir = match dir {
        "f" => 'f',
        "b" => 'b',
        _ => return Err(bad()),
    };
    Ok((dir, pos.parse().map_err(|_| bad())?))
}

fn parse_filter_token(token: &str) -> Result<(u64, String), LogError> {
    let bad = || LogError::invalid("The specified nextToken is invalid.");
    let rest = token.strip_prefix("s/").ok_or_else(bad)?;
    let (pos, name) = rest.split_once('/').ok_or_else(bad)?;
    if name.is_empty() {
        return Err(bad());
    }
    Ok((pos.parse().map_err(|_| bad())?, name.to_string()))
}

fn paginate<T>(items: Vec<T>, token: Option<&str>, limit: usize) -> Result<Page<T>, LogError> {
    let skip = match token {
        None => 0,
        Some(t) => t
            .strip_prefix("d/")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| LogError::invalid("The specified nextToken is invalid."))?,
    };
    let total = items.len();
    let items: Vec<T> = items.into_iter().skip(skip).take(limit).collect();
    let next_token = (skip + items.len() < total).then(|| format!("d/{}", skip + items.len()));
    Ok(Page { items, next_token })
}

fn events_limit(limit: Option<i64>) -> Result<usize, LogError> {
    match limit {
        None => Ok(MAX_EVENTS),
        Some(n) if (1..=MAX_EVENTS as i64).contains(&n) => Ok(n as usize),
        Some(n) => Err(LogError::invalid(format!(
            "limit must be between 1 and {MAX_EVENTS}, got {n}"
        ))),
    }
}

fn describe_limit(limit: Option<i64>) -> Result<usize, LogError> {
    match limit {
        None => Ok(DESCRIBE_LIMIT),
        Some(n) if (1..=DESCRIBE_LIMIT as i64).contains(&n) => Ok(n as usize),
        Some(n) => Err(LogError::invalid(format!(
            "limit must be between 1 and {DESCRIBE_LIMIT}, got {n}"
        ))),
    }
}

fn check_times(start: Option<i64>, end: Option<i64>) -> Result<(), LogError> {
    for t in [start, end].into_iter().flatten() {
        if t < 0 {
            return Err(LogError::invalid(format!(
                "timestamps must not be negative, got {t}"
            )));
        }
    }
    if let (Some(s), Some(e)) = (start, end)
        && s > e
    {
        return Err(LogError::invalid(format!(
            "startTime ({s}) must not be after endTime ({e})"
        )));
    }
    Ok(())
}

/// CloudWatch's rule: 1 to 512 characters, no `:` or `*`.
fn validate_stream_name(name: &str) -> Result<(), LogError> {
    if name.is_empty() || name.chars().count() > 512 || name.contains([':', '*']) {
        return Err(LogError::invalid(format!(
            "log stream name {name:?}: 1 to 512 characters, without ':' or '*'"
        )));
    }
    Ok(())
}

fn split_message(message: &str) -> impl Iterator<Item = &str> {
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

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_into(s, &mut out);
    out
}

fn escape_into(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

fn unescape(s: &str) -> String {
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

fn encode(name: &str) -> String {
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
fn file_stem(name: &str) -> String {
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

fn short_hash(s: &str) -> u64 {
    let d = Sha256::digest(s.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, LogStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LogStore::open(dir.path().join("logs")).expect("open");
        (dir, store)
    }

    const S: &str = "def/default/task-1";

    fn fill(store: &LogStore, n: i64) {
        let w = store.writer(JOB_LOG_GROUP, S).expect("writer");
        for i in 0..n {
            w.append_at(1_000 + i, &format!("line {i}"))
                .expect("append");
        }
    }

    fn msgs(p: &LogEventsPage) -> Vec<String> {
        p.events.iter().map(|e| e.message.clone()).collect()
    }

    fn get(store: &LogStore, q: GetLogEvents) -> LogEventsPage {
        store.get_log_events(JOB_LOG_GROUP, S, &q).expect("get")
    }

    #[test]
    fn forward_pagination_ends_with_the_same_token() {
        let (_d, store) = store();
        fill(&store, 25);
        let mut token = None;
        let mut seen = Vec::new();
        let mut calls = 0;
        loop {
            calls += 1;
            assert!(calls < 20, "no end of stream");
            let page = get(
                &store,
                GetLogEvents {
                    next_token: token.clone(),
                    limit: Some(10),
                    start_from_head: Some(true),
                    ..Default::default()
                },
            );
            seen.extend(msgs(&page));
            if token.as_deref() == Some(page.next_forward_token.as_str()) {
                assert!(page.events.is_empty());
                break;
            }
            token = Some(page.next_forward_token);
        }
        let want: Vec<String> = (0..25).map(|i| format!("line {i}")).collect();
        assert_eq!(seen, want);
        // 10 + 10 + 5, then the empty call that returns the same token.
        assert_eq!(calls, 4);
        // New events after the end are picked up from the end token.
        let w = store.writer(JOB_LOG_GROUP, S).expect("writer");
        w.append_at(5_000, "late").expect("append");
        let page = get(
            &store,
            GetLogEvents {
                next_token: token,
                ..Default::default()
            },
        );
        assert_eq!(msgs(&page), vec!["late"]);
    }

    #[test]
    fn default_read_returns_the_newest_and_pages_backward() {
        let (_d, store) = store();
        fill(&store, 25);
        let page = get(
            &store,
            GetLogEvents {
                limit: Some(10),
                ..Default::default()
            },
        );
        let want: Vec<String> = (15..25).map(|i| format!("line {i}")).collect();
        assert_eq!(msgs(&page), want);
        // Forward from the newest page: nothing yet, and the token says so.
        let fwd = get(
            &store,
            GetLogEvents {
                next_token: Some(page.next_forward_token.clone()),
                ..Default::default()
            },
        );
        assert!(fwd.events.is_empty());
        assert_eq!(fwd.next_forward_token, page.next_forward_token);
        let mut token = page.next_backward_token;
        let mut older = Vec::new();
        loop {
            let p = get(
                &store,
                GetLogEvents {
                    next_token: Some(token.clone()),
                    limit: Some(10),
                    ..Default::default()
                },
            );
            if p.next_backward_token == token {
                assert!(p.events.is_empty());
                break;
            }
            let mut m = msgs(&p);
            m.extend(older);
            older = m;
            token = p.next_backward_token;
        }
        let want: Vec<String> = (0..15).map(|i| format!("line {i}")).collect();
        assert_eq!(older, want);
    }

    #[test]
    fn time_window_is_start_inclusive_end_exclusive() {
        let (_d, store) = store();
        fill(&store, 25);
        let page = get(
            &store,
            GetLogEvents {
                start_time: Some(1_005),
                end_time: Some(1_008),
                start_from_head: Some(true),
                ..Default::default()
            },
        );
        assert_eq!(msgs(&page), vec!["line 5", "line 6", "line 7"]);
        let page = get(
            &store,
            GetLogEvents {
                start_time: Some(1_005),
                end_time: Some(1_008),
                ..Default::default()
            },
        );
        assert_eq!(msgs(&page), vec!["line 5", "line 6", "line 7"]);
        let err = store
            .get_log_events(
                JOB_LOG_GROUP,
                S,
                &GetLogEvents {
                    start_time: Some(9),
                    end_time: Some(1),
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert_eq!(err.error_type(), "InvalidParameterException");
    }

    #[test]
    fn newlines_and_backslashes_round_trip() {
        let (_d, store) = store();
        let w = store.writer(JOB_LOG_GROUP, S).expect("writer");
        let tricky = "a\nb\\nc\r\\\\ end \\";
        w.append_at(1, tricky).expect("append");
        w.append_at(2, "").expect("append");
        w.append_at(3, "naïve ✓").expect("append");
        let page = get(
            &store,
            GetLogEvents {
                start_from_head: Some(true),
                ..Default::default()
            },
        );
        assert_eq!(msgs(&page), vec![tricky, "", "naïve ✓"]);
        // One line per event on disk.
        let text = fs::read_to_string(store.stream_path(JOB_LOG_GROUP, S)).expect("read");
        assert_eq!(text.lines().count(), 4);
    }

    #[test]
    fn partial_last_line_is_invisible() {
        let (_d, store) = store();
        fill(&store, 2);
        let path = store.stream_path(JOB_LOG_GROUP, S);
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(b"3000 3000 half a li").expect("write");
        let page = get(
            &store,
            GetLogEvents {
                start_from_head: Some(true),
                ..Default::default()
            },
        );
        assert_eq!(msgs(&page), vec!["line 0", "line 1"]);
        f.write_all(b"ne\n").expect("write");
        let page2 = get(
            &store,
            GetLogEvents {
                next_token: Some(page.next_forward_token),
                ..Default::default()
            },
        );
        assert_eq!(msgs(&page2), vec!["half a line"]);
    }

    #[test]
    fn unknown_stream_group_and_bad_tokens() {
        let (_d, store) = store();
        fill(&store, 3);
        let e = store
            .get_log_events(JOB_LOG_GROUP, "nope", &GetLogEvents::default())
            .unwrap_err();
        assert_eq!(e.error_type(), "ResourceNotFoundException");
        assert!(e.to_string().contains("log stream"), "{e}");
        let e = store
            .get_log_events("/no/group", S, &GetLogEvents::default())
            .unwrap_err();
        assert_eq!(e.error_type(), "ResourceNotFoundException");
        assert!(e.to_string().contains("log group"), "{e}");
        for bad in ["x", "f/abc", "f/1", "q/0", "f/99999999", "b/"] {
            let e = store
                .get_log_events(
                    JOB_LOG_GROUP,
                    S,
                    &GetLogEvents {
                        next_token: Some(bad.into()),
                        ..Default::default()
                    },
                )
                .unwrap_err();
            assert_eq!(e.error_type(), "InvalidParameterException", "{bad}");
        }
        for limit in [0, 10_001, -1] {
            let e = store
                .get_log_events(
                    JOB_LOG_GROUP,
                    S,
                    &GetLogEvents {
                        limit: Some(limit),
                        ..Default::default()
                    },
                )
                .unwrap_err();
            assert_eq!(e.error_type(), "InvalidParameterException", "{limit}");
        }
    }

    #[test]
    fn one_megabyte_caps_a_page() {
        let (_d, store) = store();
        let w = store.writer(JOB_LOG_GROUP, S).expect("writer");
        let big = "x".repeat(100 * 1024);
        for i in 0..15 {
            w.append_at(i, &big).expect("append");
        }
        let page = get(
            &store,
            GetLogEvents {
                start_from_head: Some(true),
                ..Default::default()
            },
        );
        // 10 × (100 KiB + 26) fits in 1 MiB; 11 does not.
        assert_eq!(page.events.len(), 10);
        let rest = get(
            &store,
            GetLogEvents {
                next_token: Some(page.next_forward_token),
                ..Default::default()
            },
        );
        assert_eq!(rest.events.len(), 5);
    }

    #[test]
    fn long_messages_are_split() {
        let (_d, store) = store();
        let w = store.writer(JOB_LOG_GROUP, S).expect("writer");
        let long = "é".repeat(MAX_MESSAGE_BYTES); // two bytes each
        w.append_at(1, &long).expect("append");
        let page = get(
            &store,
            GetLogEvents {
                start_from_head: Some(true),
                ..Default::default()
            },
        );
        assert_eq!(page.events.len(), 2);
        assert!(
            page.events
                .iter()
                .all(|e| e.message.len() <= MAX_MESSAGE_BYTES)
        );
        let joined: String = page.events.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(joined, long);
    }

    #[test]
    fn filter_patterns() {
        let p = FilterPattern::parse("ERROR \"disk full\" -ignored ?a1 ?b2").expect("parse");
        assert!(p.matches("ERROR: disk full on a1"));
        assert!(!p.matches("ERROR: disk  full on a1"));
        assert!(!p.matches("ERROR: disk full on a1 (ignored)"));
        assert!(!p.matches("ERROR: disk full on c3"));
        assert!(!p.matches("error: disk full on a1"));
        assert!(FilterPattern::parse("").expect("empty").matches("anything"));
        assert!(FilterPattern::parse("  ").expect("blank").matches(""));
        let q = FilterPattern::parse(r#""say \"hi\"""#).expect("escaped quote");
        assert!(q.matches(r#"they say "hi" there"#));
        for bad in ["{ $.level = \"x\" }", "[ip, user]", "%ERR.*%", "\"open"] {
            let e = FilterPattern::parse(bad).unwrap_err();
            assert_eq!(e.error_type(), "InvalidParameterException", "{bad}");
        }
    }

    #[test]
    fn filter_across_streams_with_tokens() {
        let (_d, store) = store();
        for s in ["job/default/a", "job/default/b", "other/default/c"] {
            let w = store.writer(JOB_LOG_GROUP, s).expect("writer");
            for i in 0..5 {
                let kind = if i % 2 == 0 { "even" } else { "odd" };
                w.append_at(100 + i, &format!("{s} {kind} {i}"))
                    .expect("append");
            }
        }
        let q = |token: Option<String>| FilterLogEvents {
            stream_prefix: Some("job/".into()),
            filter_pattern: Some("even".into()),
            next_token: token,
            limit: Some(2),
            ..Default::default()
        };
        let mut token = None;
        let mut all = Vec::new();
        let mut ids = std::collections::HashSet::new();
        for _ in 0..10 {
            let page = store
                .filter_log_events(JOB_LOG_GROUP, &q(token))
                .expect("filter");
            for e in &page.events {
                assert!(ids.insert(e.event_id.clone()), "duplicate event id");
                all.push(format!("{}|{}", e.log_stream_name, e.message));
            }
            assert!(!page.searched_log_streams.is_empty());
            token = page.next_token;
            if token.is_none() {
                break;
            }
        }
        assert!(token.is_none());
        assert_eq!(all.len(), 6, "{all:?}");
        assert!(
            all.iter()
                .all(|m| m.starts_with("job/") && m.contains("even"))
        );
        assert!(all[0].starts_with("job/default/a|"));
        // Named streams, a time window, and the group-wide default.
        let page = store
            .filter_log_events(
                JOB_LOG_GROUP,
                &FilterLogEvents {
                    stream_names: Some(vec!["other/default/c".into()]),
                    start_time: Some(103),
                    ..Default::default()
                },
            )
            .expect("filter");
        assert_eq!(page.events.len(), 2);
        assert_eq!(
            page.searched_log_streams,
            vec![SearchedStream {
                log_stream_name: "other/default/c".into(),
                searched_completely: true
            }]
        );
        assert!(page.next_token.is_none());
        let page = store
            .filter_log_events(JOB_LOG_GROUP, &FilterLogEvents::default())
            .expect("filter");
        assert_eq!(page.events.len(), 15);
        let e = store
            .filter_log_events(
                JOB_LOG_GROUP,
                &FilterLogEvents {
                    stream_names: Some(vec!["missing".into()]),
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert_eq!(e.error_type(), "ResourceNotFoundException");
        let e = store
            .filter_log_events(
                JOB_LOG_GROUP,
                &FilterLogEvents {
                    stream_names: Some(vec!["a".into()]),
                    stream_prefix: Some("a".into()),
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert_eq!(e.error_type(), "InvalidParameterException");
    }

    #[test]
    fn odd_and_long_names_map_to_safe_files() {
        let (_d, store) = store();
        let long = format!("{}/default/{}", "d".repeat(300), "%é/..");
        for name in ["../../etc/passwd", ".hidden", "a b/c~d", long.as_str()] {
            let w = store.writer(JOB_LOG_GROUP, name).expect("writer");
            w.append_at(1, name).expect("append");
            let path = store.stream_path(JOB_LOG_GROUP, name);
            assert!(path.starts_with(store.root()), "{path:?}");
            let file = path
                .file_name()
                .and_then(|f| f.to_str())
                .expect("file name");
            assert!(!file.starts_with('.') && !file.contains('/') && file.len() <= 255);
            let page = store
                .get_log_events(JOB_LOG_GROUP, name, &GetLogEvents::default())
                .expect("get");
            assert_eq!(page.events[0].message, name);
        }
        let page = store
            .describe_log_streams(
                JOB_LOG_GROUP,
                &DescribeStreams {
                    prefix: Some("ddd".into()),
                    ..Default::default()
                },
            )
            .expect("describe");
        assert_eq!(page.items.len(), 1);
        assert_eq!(page.items[0].name, long);
        assert!(store.writer(JOB_LOG_GROUP, "a:b").is_err());
    }

    #[test]
    fn describe_streams_and_groups() {
        let (_d, store) = store();
        for (i, s) in ["b", "a", "c"].iter().enumerate() {
            let w = store.writer(JOB_LOG_GROUP, s).expect("writer");
            w.append_at(10 - i as i64, "x").expect("append");
        }
        let page = store
            .describe_log_streams(
                JOB_LOG_GROUP,
                &DescribeStreams {
                    limit: Some(2),
                    ..Default::default()
                },
            )
            .expect("describe");
        let names: Vec<_> = page.items.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["a", "b"]);
        assert_eq!(page.items[0].last_event_timestamp, Some(9));
        let next = store
            .describe_log_streams(
                JOB_LOG_GROUP,
                &DescribeStreams {
                    next_token: page.next_token,
                    ..Default::default()
                },
            )
            .expect("describe");
        assert_eq!(next.items.len(), 1);
        assert!(next.next_token.is_none());
        let by_time = store
            .describe_log_streams(
                JOB_LOG_GROUP,
                &DescribeStreams {
                    order_by: StreamOrder::LastEventTime,
                    descending: true,
                    ..Default::default()
                },
            )
            .expect("describe");
        let names: Vec<_> = by_time.items.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["b", "a", "c"]);
        store.ensure_group("/other").expect("group");
        let groups = store
            .describe_log_groups(&DescribeGroups::default())
            .expect("groups");
        let names: Vec<_> = groups.items.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, vec![JOB_LOG_GROUP, "/other"]);
        assert!(groups.items[0].stored_bytes > 0);
    }

    #[test]
    fn tail_reports_the_newest_timestamp_and_its_messages() {
        let (_d, store) = store();
        assert_eq!(store.tail(JOB_LOG_GROUP, S).expect("tail"), None);
        let w = store.writer(JOB_LOG_GROUP, S).expect("writer");
        w.append_batch(&[(5, "a"), (7, "b"), (7, "c")])
            .expect("append");
        assert_eq!(
            store.tail(JOB_LOG_GROUP, S).expect("tail"),
            Some((7, vec!["b".to_string(), "c".to_string()]))
        );
    }
}
