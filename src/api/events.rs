//! Job-state events on the wire: EventBridge's envelope around a job's DescribeJobs detail, and
//! `GET /events`, a server-sent-event stream of the store's event log, resumable by event ID.

use super::AppState;
use crate::engine::job_events::QUEUE_BLOCKED;
use crate::model::{JobDetail, JobInternal};
use crate::store::{EventRow, Store};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// Events read from the store per query: bounds what one stream holds in memory.
const PAGE: u32 = 100;
/// How often a stream with nothing new looks at the store anyway (events another replica's
/// engine wrote wake nobody here).
const POLL: Duration = Duration::from_millis(500);
/// A comment line this often keeps proxies and clients from taking a quiet stream for dead.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `source` of the events Flotilla delivers itself (SSE, webhooks): AWS Batch's, so that a
/// handler written for AWS Batch's events reads these unchanged. EventBridge refuses `aws.*`
/// sources from PutEvents, so events put on a bus say [`BUS_SOURCE`] instead.
pub const SOURCE: &str = "aws.batch";
pub const BUS_SOURCE: &str = "flotilla.batch";

/// The event's ID in EventBridge's UUID shape, derived from its number in the log, so that a
/// redelivered event has the ID it had the first time (consumers deduplicate on it).
pub fn event_id(seq: i64) -> String {
    let s = seq as u64;
    format!("00000000-0000-4000-8000-{:012x}", s & 0xffff_ffff_ffff)
}

/// The event's `detail`: the job as DescribeJobs shows it, without what the engine keeps for
/// itself. `None` for a document this server cannot read (logged).
pub fn detail(row: &EventRow) -> Option<Value> {
    let mut d: JobDetail = serde_json::from_str(&row.doc)
        .inspect_err(|e| tracing::error!(seq = row.seq, error = %e, "unreadable job event"))
        .ok()?;
    d.internal = JobInternal::default();
    let mut answer = json!({ "jobs": [d] });
    super::defaults::fill("DescribeJobs", &mut answer);
    answer.get_mut("jobs")?.get_mut(0).map(Value::take)
}

/// RFC 3339 in seconds, as EventBridge writes `time`.
pub fn event_time(at_ms: i64) -> String {
    aws_sdk_batch::primitives::DateTime::from_secs(at_ms.div_euclid(1000))
        .fmt(aws_sdk_batch::primitives::DateTimeFormat::DateTime)
        .unwrap_or_default()
}

/// The whole event as EventBridge delivers it.
pub fn envelope(row: &EventRow, region: &str, account: &str) -> Option<Value> {
    let detail = detail(row)?;
    let mut resources = vec![detail.get("jobArn").cloned().unwrap_or(Value::Null)];
    if row.kind == QUEUE_BLOCKED
        && let Some(q) = detail.get("jobQueue")
    {
        resources.push(q.clone());
    }
    resources.retain(|r| !r.is_null());
    Some(json!({
        "version": "0",
        "id": event_id(row.seq),
        "detail-type": row.kind,
        "source": SOURCE,
        "account": account,
        "time": event_time(row.at),
        "region": region,
        "resources": resources,
        "detail": detail,
    }))
}

/// `GET /events`: every job event after `Last-Event-ID` (or `?after=N`), then new ones as they
/// are stored; without either, from now on. Signed with SigV4 (service `batch`) when the
/// server has credentials, like every other request.
pub async fn stream(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    if let Some(refused) = super::refuse_unsigned_get(&state, &mut parts, "event stream") {
        return refused;
    }
    let after = parts
        .headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            parts.uri.query().and_then(|q| {
                q.split('&')
                    .find_map(|kv| kv.strip_prefix("after=").map(str::to_string))
            })
        });
    let store = state.batch.store().clone();
    let cursor = match after {
        Some(v) => match v.trim().parse::<i64>() {
            Ok(n) if n >= 0 => n,
            _ => {
                return super::ApiError::client(format!(
                    "Last-Event-ID/after: expected an event number (a non-negative integer), got {v:?}"
                ))
                .into_response();
            }
        },
        None => match store.last_event_seq().await {
            Ok(n) => n,
            Err(e) => {
                return super::ApiError::from(crate::error::BatchError::from(e)).into_response();
            }
        },
    };
    let (region, account) = (
        state.batch.region().to_string(),
        state.batch.account_id().to_string(),
    );
    let reader = Reader {
        store,
        cursor,
        region,
        account,
        _open: StreamGauge::open(),
    };
    let body = Body::from_stream(futures::stream::unfold(reader, |mut r| async move {
        let chunk = r.next_chunk().await;
        Some((chunk, r))
    }));
    (
        StatusCode::OK,
        [
            ("content-type", "text/event-stream"),
            ("cache-control", "no-cache"),
            ("x-accel-buffering", "no"),
        ],
        body,
    )
        .into_response()
}

/// Counts the stream open while it lives.
struct StreamGauge;

impl StreamGauge {
    fn open() -> StreamGauge {
        crate::metrics::job_event_streams(1);
        StreamGauge
    }
}

impl Drop for StreamGauge {
    fn drop(&mut self) {
        crate::metrics::job_event_streams(-1);
    }
}

struct Reader {
    store: Arc<dyn Store>,
    cursor: i64,
    region: String,
    account: String,
    _open: StreamGauge,
}

impl Reader {
    /// The next events as SSE text, or a keep-alive comment after a quiet spell.
    async fn next_chunk(&mut self) -> Result<Bytes, std::io::Error> {
        let signal = self.store.event_signal();
        let mut quiet = Duration::ZERO;
        loop {
            // Registered before the read, so a commit between the read and the wait wakes it.
            let woken = signal.notified();
            let rows = match self.store.events_after(self.cursor, PAGE).await {
                Ok(r) => r,
                Err(e) if e.is_retryable() => {
                    tracing::debug!(error = %e, "event stream read failed; retrying");
                    Vec::new()
                }
                Err(e) => return Err(std::io::Error::other(e.to_string())),
            };
            if let Some(last) = rows.last() {
                self.cursor = last.seq;
                let mut out = String::new();
                for row in &rows {
                    let Some(ev) = envelope(row, &self.region, &self.account) else {
                        continue;
                    };
                    out.push_str(&format!(
                        "id: {}\nevent: {}\ndata: {}\n\n",
                        row.seq, row.kind, ev
                    ));
                }
                crate::metrics::job_events_delivered("sse", rows.len() as u64);
                if out.is_empty() {
                    continue;
                }
                return Ok(Bytes::from(out));
            }
            if quiet >= KEEP_ALIVE {
                return Ok(Bytes::from_static(b": keep-alive\n\n"));
            }
            let _ = tokio::time::timeout(POLL, woken).await;
            quiet += POLL;
        }
    }
}
