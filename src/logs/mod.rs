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
//! Clients treat them as opaque.//!
//! Files: the store, its writer and the API types here; the CloudWatch read calls in `read.rs`;
//! filter patterns in `filter.rs`; stream files (headers, reading lines both ways) in `file.rs`;
//! escaping, file stems and the event line format in `encoding.rs`. Tests in `tests.rs`.

mod encoding;
mod file;
mod filter;
mod read;

#[cfg(test)]
mod tests;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::util::time::now_ms;

use encoding::{escape, escape_into, file_stem, parse_event, split_message, validate_stream_name};
use file::{StreamFile, create_with_header};
pub use filter::FilterPattern;

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
