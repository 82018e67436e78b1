//! The CloudWatch Logs read calls: `GetLogEvents`, `FilterLogEvents`, `DescribeLogStreams`,
//! `DescribeLogGroups`, with their tokens, limits and response budget.

use std::fs;
use std::io;

use super::encoding::{parse_event, short_hash};
use super::file::{list_streams, read_header, stream_info};
use super::{
    DESCRIBE_LIMIT, DescribeGroups, DescribeStreams, EVENT_OVERHEAD, FilterLogEvents, FilterPage,
    FilterPattern, FilteredEvent, GROUP_FILE, GROUP_MAGIC, GetLogEvents, GroupInfo, LogError,
    LogEventsPage, LogStore, MAX_EVENTS, MAX_RESPONSE_BYTES, MAX_SCAN_BYTES, Page, STREAM_EXT,
    SearchedStream, StreamInfo, StreamOrder,
};

impl LogStore {
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
        let tag = token_tag(&["GetLogEvents", group, stream]);
        let (forward, from) = match q.next_token.as_deref() {
            None if q.start_from_head.unwrap_or(false) => (true, f.data_start),
            None => (false, f.end),
            Some(t) => {
                let (dir, pos) = parse_pos_token(t, &tag)?;
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
                next_forward_token: format!("f/{tag}/{consumed}"),
                next_backward_token: format!("b/{tag}/{}", first_start.unwrap_or(from)),
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
                next_forward_token: format!("f/{tag}/{}", last_end.unwrap_or(from)),
                next_backward_token: format!("b/{tag}/{consumed}"),
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
        // The streams searched are what a token is a position in.
        let mut scope = vec!["FilterLogEvents", group];
        match (&q.stream_names, &q.stream_prefix) {
            (Some(names), _) => scope.extend(names.iter().map(String::as_str)),
            (None, prefix) => scope.extend(["prefix", prefix.as_deref().unwrap_or("")]),
        }
        let tag = token_tag(&scope);
        let (mut resume_stream, mut resume_pos) = match q.next_token.as_deref() {
            None => (None, 0),
            Some(t) => {
                let (pos, name) = parse_filter_token(t, &tag)?;
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
                next_token = Some(format!("s/{tag}/{consumed}/{name}"));
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
        let order = match q.order_by {
            StreamOrder::Name => "name",
            StreamOrder::LastEventTime => "time",
        };
        let direction = if q.descending { "desc" } else { "asc" };
        let prefix = q.prefix.as_deref().unwrap_or("");
        let tag = token_tag(&["DescribeLogStreams", group, prefix, order, direction]);
        paginate(infos, q.next_token.as_deref(), limit, &tag)
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
        let tag = token_tag(&["DescribeLogGroups", prefix]);
        paginate(groups, q.next_token.as_deref(), limit, &tag)
    }
}

/// Response limits for one call: event count, CloudWatch's 1 MB, and bytes of file read.
pub(super) struct Budget {
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

/// What a token is bound to: a digest of the operation and what it reads (group, stream,
/// selection, order). Positions are byte offsets or counts, meaningless in another stream or
/// listing, and an offset that happens to fall on a line boundary there would otherwise be
/// accepted and read from the wrong place.
pub(super) fn token_tag(scope: &[&str]) -> String {
    format!("{:016x}", short_hash(&scope.join("\u{1f}")))
}

fn invalid_token() -> LogError {
    LogError::invalid("The specified nextToken is invalid.")
}

/// The rest of a token `<kind>/<tag>/<rest>` issued with `tag`.
fn untag<'a>(token: &'a str, kind: &str, tag: &str) -> Result<&'a str, LogError> {
    token
        .strip_prefix(kind)
        .and_then(|t| t.strip_prefix('/'))
        .and_then(|t| t.strip_prefix(tag))
        .and_then(|t| t.strip_prefix('/'))
        .ok_or_else(invalid_token)
}

pub(super) fn parse_pos_token(token: &str, tag: &str) -> Result<(char, u64), LogError> {
    let (dir, pos) = match (untag(token, "f", tag), untag(token, "b", tag)) {
        (Ok(pos), _) => ('f', pos),
        (_, Ok(pos)) => ('b', pos),
        (Err(e), _) => return Err(e),
    };
    Ok((dir, pos.parse().map_err(|_| invalid_token())?))
}

pub(super) fn parse_filter_token(token: &str, tag: &str) -> Result<(u64, String), LogError> {
    let rest = untag(token, "s", tag)?;
    let (pos, name) = rest.split_once('/').ok_or_else(invalid_token)?;
    if name.is_empty() {
        return Err(invalid_token());
    }
    Ok((pos.parse().map_err(|_| invalid_token())?, name.to_string()))
}

pub(super) fn paginate<T>(
    items: Vec<T>,
    token: Option<&str>,
    limit: usize,
    tag: &str,
) -> Result<Page<T>, LogError> {
    let skip = match token {
        None => 0,
        Some(t) => untag(t, "d", tag)?
            .parse::<usize>()
            .map_err(|_| invalid_token())?,
    };
    let total = items.len();
    let items: Vec<T> = items.into_iter().skip(skip).take(limit).collect();
    let next_token =
        (skip + items.len() < total).then(|| format!("d/{tag}/{}", skip + items.len()));
    Ok(Page { items, next_token })
}

pub(super) fn events_limit(limit: Option<i64>) -> Result<usize, LogError> {
    match limit {
        None => Ok(MAX_EVENTS),
        Some(n) if (1..=MAX_EVENTS as i64).contains(&n) => Ok(n as usize),
        Some(n) => Err(LogError::invalid(format!(
            "limit must be between 1 and {MAX_EVENTS}, got {n}"
        ))),
    }
}

pub(super) fn describe_limit(limit: Option<i64>) -> Result<usize, LogError> {
    match limit {
        None => Ok(DESCRIBE_LIMIT),
        Some(n) if (1..=DESCRIBE_LIMIT as i64).contains(&n) => Ok(n as usize),
        Some(n) => Err(LogError::invalid(format!(
            "limit must be between 1 and {DESCRIBE_LIMIT}, got {n}"
        ))),
    }
}

pub(super) fn check_times(start: Option<i64>, end: Option<i64>) -> Result<(), LogError> {
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
