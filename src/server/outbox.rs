//! Delivery of the job-event log to webhooks and to an EventBridge bus, and its pruning.
//!
//! The log in the store is the outbox: each sink keeps its cursor (the number of the last event
//! it delivered) in the store's `meta`, reads what follows in order, and moves the cursor only
//! after the receiver accepted a batch. A restart resumes from the cursor, so nothing is lost
//! and at most the last batch is sent twice (at-least-once, in log order, which keeps every
//! job's events in order). Sinks run on the server that runs the engine (the leader replica).

use crate::api::events::{BUS_SOURCE, detail, envelope};
use crate::store::{EventRow, Store, StoreError};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// Events read per batch (a webhook request carries up to this many).
const BATCH: u32 = 100;
/// A webhook body stops growing past this; the rest goes in the next request.
const MAX_WEBHOOK_BODY: usize = 1024 * 1024;
/// EventBridge's limits per PutEvents call: 10 entries, 256 KiB in all.
const BUS_ENTRIES: usize = 10;
const BUS_BYTES: usize = 256 * 1024;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A sink with nothing to send looks at the store at least this often.
const POLL: Duration = Duration::from_millis(500);
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// What `--webhook`, `--webhook-secret`, `--events-bus` and the retention flags configured.
#[derive(Clone, Debug, Default)]
pub struct OutboxConfig {
    pub webhooks: Vec<String>,
    pub webhook_secret: Option<String>,
    /// The EventBridge bus (name or ARN) to put events on; needs the AWS driver.
    pub bus: Option<String>,
    /// Delivered events are kept this long (for SSE clients resuming).
    pub retention: Duration,
    /// Undelivered events are dropped past this age, so a dead receiver cannot fill the disk.
    pub max_age: Duration,
}

/// Why a delivery failed; always retried (the receiver or the network may recover).
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("{0}")]
    Refused(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

type WebhookClient = crate::util::http::Client<http_body_util::Full<bytes::Bytes>>;

enum Target {
    Webhook {
        url: hyper::Uri,
        secret: Vec<u8>,
        client: Box<WebhookClient>,
    },
    Bus {
        client: aws_sdk_eventbridge::Client,
        bus: String,
    },
}

struct Sink {
    /// `webhook:<url>` or `eventbridge:<bus>`: the metrics label and the cursor's key.
    name: String,
    target: Target,
    /// Shared with the pruner: nothing after it is deleted unless past `max_age`.
    delivered: Arc<AtomicI64>,
}

/// Checks the configuration before anything starts: a URL that cannot be used, or webhooks
/// without a secret to sign with, are refused rather than stored and ignored.
pub fn check(cfg: &OutboxConfig, aws_driver: bool) -> Result<(), String> {
    for url in &cfg.webhooks {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| format!("--webhook {url}: not a URL: {e}"))?;
        match uri.scheme_str() {
            Some("http" | "https") if uri.host().is_some() => {}
            _ => {
                return Err(format!(
                    "--webhook {url}: expected an http:// or https:// URL"
                ));
            }
        }
    }
    if !cfg.webhooks.is_empty()
        && cfg
            .webhook_secret
            .as_deref()
            .is_none_or(|s| s.trim().is_empty())
    {
        return Err(
            "--webhook needs a signing secret: set FLOTILLA_WEBHOOK_SECRET (or --webhook-secret-file)"
                .into(),
        );
    }
    if cfg.bus.is_some() && !aws_driver {
        return Err(
            "--events-bus puts events on an EventBridge bus with the server's AWS access: it needs --aws (or --aws-endpoint-url)"
                .into(),
        );
    }
    if cfg.max_age < cfg.retention {
        return Err(
            "--job-events-max-age-seconds must be at least --job-events-retention-seconds".into(),
        );
    }
    Ok(())
}

/// Starts every sink and the pruner; they stop when `shutdown` turns true. Fails, starting
/// nothing, when webhooks are configured and no HTTPS client can be built (no TLS roots).
pub fn spawn(
    cfg: &OutboxConfig,
    store: Arc<dyn Store>,
    region: String,
    account: String,
    sdk: Option<&aws_config::SdkConfig>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), String> {
    let mut sinks = Vec::new();
    if !cfg.webhooks.is_empty() {
        let client = crate::util::http::client()
            .map_err(|e| format!("--webhook: no HTTPS client (system TLS roots): {e}"))?;
        let secret = cfg.webhook_secret.clone().unwrap_or_default();
        for url in &cfg.webhooks {
            let uri = url
                .parse()
                .map_err(|e| format!("--webhook {url}: not a URL: {e}"))?;
            sinks.push(Sink {
                name: format!("webhook:{url}"),
                target: Target::Webhook {
                    url: uri,
                    secret: secret.trim().as_bytes().to_vec(),
                    client: Box::new(client.clone()),
                },
                delivered: Arc::new(AtomicI64::new(0)),
            });
        }
    }
    if let (Some(bus), Some(sdk)) = (&cfg.bus, sdk) {
        sinks.push(Sink {
            name: format!("eventbridge:{bus}"),
            target: Target::Bus {
                client: aws_sdk_eventbridge::Client::new(sdk),
                bus: bus.clone(),
            },
            delivered: Arc::new(AtomicI64::new(0)),
        });
    }
    let cursors: Vec<Arc<AtomicI64>> = sinks.iter().map(|s| s.delivered.clone()).collect();
    let started: Arc<tokio::sync::Semaphore> = Arc::new(tokio::sync::Semaphore::new(0));
    let count = sinks.len();
    for sink in sinks {
        let (store, region, account, shutdown, started) = (
            store.clone(),
            region.clone(),
            account.clone(),
            shutdown.clone(),
            started.clone(),
        );
        tokio::spawn(async move {
            run(sink, store, region, account, shutdown, started).await;
        });
    }
    let (retention, max_age) = (cfg.retention, cfg.max_age);
    tokio::spawn(async move {
        // The pruner must not run before every sink has read its cursor.
        let _ = started.acquire_many(count as u32).await;
        prune_loop(store, cursors, retention, max_age, shutdown).await;
    });
    Ok(())
}

async fn run(
    sink: Sink,
    store: Arc<dyn Store>,
    region: String,
    account: String,
    mut shutdown: watch::Receiver<bool>,
    started: Arc<tokio::sync::Semaphore>,
) {
    let key = format!("events.cursor.{}", sink.name);
    let mut backoff = FIRST_BACKOFF;
    // A sink seen for the first time starts at the end of the log: it is sent what happens
    // from now on, not the retained history.
    let mut cursor = loop {
        let read = match store.get_meta(&key).await {
            Ok(Some(v)) => v
                .parse::<i64>()
                .map_err(|e| StoreError::Fatal(format!("meta {key}: not an event number: {e}"))),
            Ok(None) => match store.last_event_seq().await {
                Ok(n) => store.set_meta(&key, &n.to_string()).await.map(|()| n),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match read {
            Ok(n) => break n,
            Err(e) => {
                tracing::warn!(sink = %sink.name, error = %e, "event sink cannot read its cursor; retrying");
                if sleep_or_stop(backoff, &mut shutdown).await {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    };
    sink.delivered.store(cursor, Ordering::SeqCst);
    started.add_permits(1);
    backoff = FIRST_BACKOFF;
    tracing::info!(sink = %sink.name, cursor, "event sink started");
    let signal = store.event_signal();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let woken = signal.notified();
        let rows = match store.events_after(cursor, BATCH).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(sink = %sink.name, error = %e, "event sink cannot read the log; retrying");
                if sleep_or_stop(backoff, &mut shutdown).await {
                    return;
                }
                continue;
            }
        };
        if rows.is_empty() {
            if let Ok(last) = store.last_event_seq().await {
                crate::metrics::job_events_backlog(&sink.name, (last - cursor).max(0));
            }
            tokio::select! {
                _ = woken => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = shutdown.changed() => return,
            }
            continue;
        }
        match deliver(&sink, &rows, &region, &account).await {
            Ok(upto) => {
                let sent = rows.iter().take_while(|r| r.seq <= upto).count();
                cursor = upto;
                // The cursor is stored before the next batch is sent: a crash now resends at
                // most this batch.
                if let Err(e) = store.set_meta(&key, &cursor.to_string()).await {
                    tracing::warn!(sink = %sink.name, error = %e, "event sink cannot store its cursor");
                }
                sink.delivered.store(cursor, Ordering::SeqCst);
                crate::metrics::job_events_delivered(&sink.name, sent as u64);
                backoff = FIRST_BACKOFF;
            }
            Err(e) => {
                crate::metrics::job_events_failed(&sink.name);
                tracing::warn!(sink = %sink.name, error = %e, retry_in_ms = backoff.as_millis() as u64, "event delivery failed; retrying");
                if sleep_or_stop(backoff, &mut shutdown).await {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Sleeps, or returns true at once when the server stops.
async fn sleep_or_stop(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => *shutdown.borrow(),
        _ = shutdown.changed() => true,
    }
}

/// Delivers a prefix of `rows` (at least one event) and returns the number of the last one
/// delivered.
async fn deliver(
    sink: &Sink,
    rows: &[EventRow],
    region: &str,
    account: &str,
) -> Result<i64, DeliveryError> {
    match &sink.target {
        Target::Webhook {
            url,
            secret,
            client,
        } => {
            let mut body = String::from("[");
            let mut last = rows[0].seq;
            for row in rows {
                let Some(ev) = envelope(row, region, account) else {
                    last = row.seq;
                    continue;
                };
                let text = ev.to_string();
                if body.len() > 1 && body.len() + text.len() > MAX_WEBHOOK_BODY {
                    break;
                }
                if body.len() > 1 {
                    body.push(',');
                }
                body.push_str(&text);
                last = row.seq;
            }
            body.push(']');
            post(client, url, secret, body, rows[0].seq, last).await?;
            Ok(last)
        }
        Target::Bus { client, bus } => put_events(client, bus, rows).await,
    }
}

/// `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`: the timestamp is signed with the
/// body, so a receiver can refuse a replayed request as well as a forged one.
pub fn signature(secret: &[u8], unix: u64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(unix.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={unix},v1={}", hex::encode(mac.finalize().into_bytes()))
}

async fn post(
    client: &WebhookClient,
    url: &hyper::Uri,
    secret: &[u8],
    body: String,
    first: i64,
    last: i64,
) -> Result<(), DeliveryError> {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let request = hyper::Request::post(url.clone())
        .header("content-type", "application/json")
        .header(
            "user-agent",
            concat!("flotilla/", env!("CARGO_PKG_VERSION")),
        )
        .header(
            "x-flotilla-signature",
            signature(secret, unix, body.as_bytes()),
        )
        .header("x-flotilla-event-range", format!("{first}-{last}"))
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .map_err(|e| DeliveryError::Refused(format!("request: {e}")))?;
    let response = tokio::time::timeout(WEBHOOK_TIMEOUT, client.request(request))
        .await
        .map_err(|_| {
            DeliveryError::Refused(format!("no answer in {} s", WEBHOOK_TIMEOUT.as_secs()))
        })?
        .map_err(|e| DeliveryError::Refused(format!("{e}")))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(DeliveryError::Refused(format!(
            "the receiver answered {status}"
        )))
    }
}

/// One PutEvents call of up to 10 entries (256 KiB). Entries EventBridge failed are sent
/// again from the first of them, so a job's later event never overtakes an earlier one.
async fn put_events(
    client: &aws_sdk_eventbridge::Client,
    bus: &str,
    rows: &[EventRow],
) -> Result<i64, DeliveryError> {
    use aws_sdk_eventbridge::types::PutEventsRequestEntry;
    let mut entries = Vec::new();
    let mut seqs = Vec::new();
    let mut bytes = 0;
    let mut skipped_upto = None;
    for row in rows {
        let Some(d) = detail(row) else {
            skipped_upto.get_or_insert(row.seq);
            continue;
        };
        let text = d.to_string();
        let job_arn = d.get("jobArn").and_then(|v| v.as_str()).unwrap_or_default();
        let size = text.len() + BUS_SOURCE.len() + row.kind.len() + job_arn.len();
        if size > BUS_BYTES {
            // EventBridge refuses it whatever is done; sending the rest beats blocking on it.
            tracing::error!(seq = row.seq, job_id = %row.job_id, bytes = size, "job event over EventBridge's 256 KiB: not put on the bus");
            if entries.is_empty() {
                skipped_upto = Some(row.seq);
                continue;
            }
            break;
        }
        if entries.len() == BUS_ENTRIES || bytes + size > BUS_BYTES {
            break;
        }
        bytes += size;
        entries.push(
            PutEventsRequestEntry::builder()
                .event_bus_name(bus)
                .source(BUS_SOURCE)
                .detail_type(row.kind.as_str())
                .detail(text)
                .resources(job_arn)
                .time(aws_sdk_eventbridge::primitives::DateTime::from_millis(
                    row.at,
                ))
                .build(),
        );
        seqs.push(row.seq);
    }
    if entries.is_empty() {
        return Ok(skipped_upto.unwrap_or(rows[0].seq));
    }
    let out = client
        .put_events()
        .set_entries(Some(entries))
        .send()
        .await
        .map_err(|e| {
            DeliveryError::Refused(format!(
                "PutEvents: {}",
                aws_sdk_eventbridge::error::DisplayErrorContext(&e)
            ))
        })?;
    if out.failed_entry_count() == 0 {
        return Ok(*seqs.last().expect("entries were sent"));
    }
    let results = out.entries();
    let first_failed = results
        .iter()
        .position(|r| r.error_code().is_some())
        .unwrap_or(seqs.len());
    if first_failed == 0 {
        let why = results
            .first()
            .map(|r| {
                format!(
                    "{}: {}",
                    r.error_code().unwrap_or_default(),
                    r.error_message().unwrap_or_default()
                )
            })
            .unwrap_or_default();
        return Err(DeliveryError::Refused(format!(
            "PutEvents entry failed: {why}"
        )));
    }
    Ok(seqs[first_failed - 1])
}

/// Deletes delivered events past the retention, and any past the maximum age.
async fn prune_loop(
    store: Arc<dyn Store>,
    cursors: Vec<Arc<AtomicI64>>,
    retention: Duration,
    max_age: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let now = crate::util::time::now_ms();
        let delivered = cursors
            .iter()
            .map(|c| c.load(Ordering::SeqCst))
            .min()
            .unwrap_or(i64::MAX);
        let kept = store
            .prune_events(delivered, now - retention.as_millis() as i64)
            .await;
        let dropped = store
            .prune_events(i64::MAX, now - max_age.as_millis() as i64)
            .await;
        match (kept, dropped) {
            (Ok(n), Ok(d)) => {
                if d > 0 {
                    tracing::error!(
                        events = d,
                        "job events older than --job-events-max-age-seconds dropped before every sink delivered them"
                    );
                }
                crate::metrics::job_events_pruned(n + d, d);
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "pruning the job-event log failed; trying again later")
            }
        }
        if sleep_or_stop(PRUNE_EVERY, &mut shutdown).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_covers_timestamp_and_body() {
        let a = signature(b"k", 1_700_000_000, b"[1]");
        assert!(a.starts_with("t=1700000000,v1="));
        assert_ne!(a, signature(b"k", 1_700_000_001, b"[1]"));
        assert_ne!(a, signature(b"k", 1_700_000_000, b"[2]"));
        assert_ne!(a, signature(b"j", 1_700_000_000, b"[1]"));
        // Python: hmac.new(b"k", b"1700000000.[1]", hashlib.sha256).hexdigest()
        assert_eq!(
            a,
            "t=1700000000,v1=974d921908b0d48a18f9168b918873980dcaffb8253eb2ba5fac40a2320c85c4"
        );
    }

    #[test]
    fn check_refuses_what_cannot_work() {
        let mut cfg = OutboxConfig {
            webhooks: vec!["http://127.0.0.1:9/x".into()],
            retention: Duration::from_secs(60),
            max_age: Duration::from_secs(60),
            ..Default::default()
        };
        assert!(check(&cfg, false).unwrap_err().contains("secret"));
        cfg.webhook_secret = Some("s".into());
        assert!(check(&cfg, false).is_ok());
        cfg.webhooks = vec!["ftp://x/".into()];
        assert!(check(&cfg, false).unwrap_err().contains("http"));
        cfg.webhooks.clear();
        cfg.bus = Some("default".into());
        assert!(check(&cfg, false).unwrap_err().contains("--aws"));
        assert!(check(&cfg, true).is_ok());
    }
}
