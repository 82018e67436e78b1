//! Job-state events end to end: 1,000 jobs through their lifecycle on a real server, with a
//! SIGKILL and restart in the middle; the SSE stream (`GET /events`, resumed by `Last-Event-ID`)
//! and a webhook receiver (HMAC-signed, failing at first) each get every transition of every
//! job, in order per job.

mod common;

use aws_sdk_batch::types::*;
use common::*;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = "webhook-test-secret";
const JOBS: usize = 1000;
/// Jobs that depend on the first one, so that they are announced PENDING first.
const DEPENDENTS: usize = 10;

#[derive(Default)]
struct Received {
    /// Every event of every accepted request, in arrival order.
    events: Vec<Value>,
    requests: usize,
    bad_signatures: usize,
}

/// A webhook receiver on 127.0.0.1 that checks the signature, refuses its first two requests
/// (503) so that delivery must retry, and keeps what it accepted.
async fn receiver() -> (String, Arc<Mutex<Received>>) {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, StatusCode};
    let got = Arc::new(Mutex::new(Received::default()));
    let state = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let got = state.clone();
            async move {
                let mut got = got.lock().unwrap();
                got.requests += 1;
                if got.requests <= 2 {
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                let sig = headers
                    .get("x-flotilla-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                let (t, v1) = sig
                    .split_once(',')
                    .map(|(t, v)| {
                        (
                            t.trim_start_matches("t=").to_string(),
                            v.trim_start_matches("v1=").to_string(),
                        )
                    })
                    .unwrap_or_default();
                let mut mac =
                    <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(SECRET.as_bytes()).unwrap();
                mac.update(format!("{t}.").as_bytes());
                mac.update(&body);
                if hex::decode(&v1).is_err()
                    || mac.verify_slice(&hex::decode(&v1).unwrap()).is_err()
                {
                    got.bad_signatures += 1;
                    return StatusCode::UNAUTHORIZED;
                }
                let batch: Vec<Value> = serde_json::from_slice(&body).expect("a JSON array");
                got.events.extend(batch);
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}/hook"), got)
}

#[derive(Default)]
struct Streamed {
    /// (SSE id, event type, envelope) in arrival order.
    events: Vec<(i64, String, Value)>,
    connections: usize,
}

/// Reads `GET /events` from the start of the log, reconnecting with `Last-Event-ID` whenever
/// the stream ends (the server is killed and restarted under it).
fn follow(raw: Raw, out: Arc<Mutex<Streamed>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let last = out.lock().unwrap().events.last().map(|e| e.0);
            let mut headers =
                raw.headers("GET", "/events", None, b"", std::time::SystemTime::now());
            let path = match last {
                Some(id) => {
                    headers.insert("last-event-id", id.to_string().parse().unwrap());
                    "/events".to_string()
                }
                None => {
                    headers = raw.headers(
                        "GET",
                        "/events?after=0",
                        None,
                        b"",
                        std::time::SystemTime::now(),
                    );
                    "/events?after=0".to_string()
                }
            };
            let resp = raw
                .http
                .get(format!("{}{path}", raw.endpoint))
                .headers(headers)
                .send()
                .await;
            let Ok(mut resp) = resp else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            if resp.status() != 200 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            out.lock().unwrap().connections += 1;
            let mut buf = String::new();
            while let Ok(Some(chunk)) = resp.chunk().await {
                buf.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
                while let Some(end) = buf.find("\n\n") {
                    let block: String = buf.drain(..end + 2).collect();
                    let (mut id, mut kind, mut data) = (None, None, None);
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("id: ") {
                            id = v.parse::<i64>().ok();
                        } else if let Some(v) = line.strip_prefix("event: ") {
                            kind = Some(v.to_string());
                        } else if let Some(v) = line.strip_prefix("data: ") {
                            data = Some(serde_json::from_str::<Value>(v).expect("JSON data"));
                        }
                    }
                    if let (Some(id), Some(kind), Some(data)) = (id, kind, data) {
                        out.lock().unwrap().events.push((id, kind, data));
                    }
                }
            }
        }
    })
}

fn status_of(ev: &Value) -> String {
    ev["detail"]["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn legal(from: &str, to: &str) -> bool {
    matches!(
        (from, to),
        ("PENDING", "RUNNABLE" | "FAILED")
            | ("RUNNABLE", "STARTING" | "FAILED")
            | ("STARTING", "RUNNING" | "RUNNABLE" | "SUCCEEDED" | "FAILED")
            | ("RUNNING", "RUNNABLE" | "SUCCEEDED" | "FAILED")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_transition_reaches_sse_and_webhook_in_order_across_a_restart() {
    let (hook, received) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("webhook-secret");
    std::fs::write(&secret_file, SECRET).unwrap();
    let mut server = Server::start_with(ServerOptions {
        extra_args: vec![
            "--local-runtime".into(),
            "process".into(),
            "--webhook".into(),
            hook,
            "--webhook-secret-file".into(),
            secret_file.display().to_string(),
        ],
        // Jobs wait until all are submitted, so that the SIGKILL comes with most still to run.
        dispatch: false,
        ..Default::default()
    });
    let client = server.client();
    let raw = server.raw();

    // Unsigned, and with a bad resume point: refused, naming what is wrong.
    let unsigned = raw
        .unsigned()
        .send("GET", "/events", None, Vec::new())
        .await;
    assert_eq!(unsigned.status, 403, "{}", unsigned.text);
    let bad = raw.send("GET", "/events?after=x", None, Vec::new()).await;
    assert_eq!(bad.status, 400);
    assert!(bad.message().contains("after"), "{}", bad.message());

    // A SIGKILLed server's host processes are lost; their attempts are retried.
    register_simple_retried(
        &client,
        "ev",
        Some(RetryStrategy::builder().attempts(3).build()),
    )
    .await;

    let streamed = Arc::new(Mutex::new(Streamed::default()));
    let reader = follow(raw.clone(), streamed.clone());

    let mut ids = Vec::with_capacity(JOBS);
    for i in 0..JOBS {
        let mut req = client
            .submit_job()
            .job_name(format!("ev-{i}"))
            .job_queue("default")
            .job_definition("ev");
        if (1..=DEPENDENTS).contains(&i) {
            req = req.depends_on(JobDependency::builder().job_id(&ids[0]).build());
        }
        ids.push(req.send().await.unwrap().job_id.unwrap());
    }

    client
        .update_compute_environment()
        .compute_environment("local")
        .state(CeState::Enabled)
        .send()
        .await
        .unwrap();
    // Mid-run: a third of the jobs have ended.
    let finals = |s: &Streamed| {
        s.events
            .iter()
            .filter(|e| matches!(status_of(&e.2).as_str(), "SUCCEEDED" | "FAILED"))
            .map(|e| e.2["detail"]["jobId"].as_str().unwrap().to_string())
            .collect::<HashSet<_>>()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while finals(&streamed.lock().unwrap()).len() < JOBS / 4 {
        assert!(
            Instant::now() < deadline,
            "a third of the jobs did not end in 120 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ended_before = finals(&streamed.lock().unwrap()).len();
    assert!(ended_before < JOBS, "the restart must come mid-run");
    let before_kill = streamed.lock().unwrap().events.len();
    server.restart();
    eprintln!(
        "killed with {ended_before} ended, {before_kill} events streamed; after restart: {}",
        streamed.lock().unwrap().events.len()
    );

    let deadline = Instant::now() + Duration::from_secs(300);
    while finals(&streamed.lock().unwrap()).len() < JOBS {
        assert!(
            Instant::now() < deadline,
            "only {} of {JOBS} jobs ended in 300 s",
            finals(&streamed.lock().unwrap()).len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let last_seq = streamed.lock().unwrap().events.last().unwrap().0;
    // The webhook catches up with everything the stream saw.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let seen: HashSet<String> = received
            .lock()
            .unwrap()
            .events
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect();
        if seen.len() as i64 >= last_seq {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the webhook has {} of {last_seq} events after 120 s",
            seen.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    reader.abort();

    let described = common::aws::describe_all(&client, &ids).await;
    let streamed = std::mem::take(&mut *streamed.lock().unwrap());
    let received = std::mem::take(&mut *received.lock().unwrap());
    assert!(
        streamed.connections >= 2,
        "the stream was resumed after the restart: {} connections, {} events",
        streamed.connections,
        streamed.events.len()
    );
    assert!(
        received.requests > 2,
        "deliveries were retried after the 503s"
    );
    assert_eq!(
        received.bad_signatures, 0,
        "every request was signed with the secret"
    );

    // The stream: every event once, numbered without gaps from the first.
    let seqs: Vec<i64> = streamed.events.iter().map(|e| e.0).collect();
    assert_eq!(
        seqs,
        (1..=last_seq).collect::<Vec<_>>(),
        "no event lost or repeated"
    );

    // Per job, by event number: the stream's statuses, and the webhook's (deduplicated by
    // event ID, which a redelivery keeps).
    let mut by_job: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
    for (seq, kind, ev) in &streamed.events {
        assert_eq!(kind, "Batch Job State Change");
        assert_eq!(ev["detail-type"], "Batch Job State Change");
        assert_eq!(ev["source"], "aws.batch");
        assert_eq!(ev["region"], "us-east-1");
        assert_eq!(ev["resources"][0], ev["detail"]["jobArn"]);
        assert!(
            ev["detail"]["container"].is_object(),
            "the detail is DescribeJobs' job"
        );
        let job = ev["detail"]["jobId"].as_str().unwrap().to_string();
        by_job.entry(job).or_default().push((*seq, status_of(ev)));
    }
    let seq_of_id: HashMap<&str, i64> = streamed
        .events
        .iter()
        .map(|e| (e.2["id"].as_str().unwrap(), e.0))
        .collect();
    let mut hooked: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
    let mut seen = HashSet::new();
    for ev in &received.events {
        let id = ev["id"].as_str().unwrap();
        let seq = *seq_of_id
            .get(id)
            .expect("the webhook got only events the stream had");
        let job = ev["detail"]["jobId"].as_str().unwrap().to_string();
        let list = hooked.entry(job).or_default();
        // At-least-once: a batch the receiver took just before the SIGKILL, whose cursor was
        // not stored yet, comes again. A first arrival is never behind the job's last one.
        if seen.insert(id.to_string()) {
            if let Some(prev) = list.last() {
                assert!(
                    prev.0 < seq,
                    "a job's events reached the webhook out of order"
                );
            }
            list.push((seq, status_of(ev)));
        }
    }
    assert_eq!(
        hooked, by_job,
        "the webhook got exactly what the stream got"
    );
    assert_eq!(by_job.len(), JOBS);

    let described: HashMap<String, JobDetail> = described
        .into_iter()
        .map(|j| (j.job_id.clone().unwrap(), j))
        .collect();
    let mut restarted = 0;
    for (i, id) in ids.iter().enumerate() {
        let statuses: Vec<&str> = by_job[id].iter().map(|(_, s)| s.as_str()).collect();
        let first = if (1..=DEPENDENTS).contains(&i) {
            "PENDING"
        } else {
            "RUNNABLE"
        };
        assert_eq!(statuses[0], first, "job {i}: {statuses:?}");
        assert_eq!(
            *statuses.last().unwrap(),
            "SUCCEEDED",
            "job {i}: {statuses:?}"
        );
        for w in statuses.windows(2) {
            assert!(
                legal(w[0], w[1]),
                "job {i}: {} -> {} in {statuses:?}",
                w[0],
                w[1]
            );
        }
        let d = &described[id];
        assert_eq!(d.status, Some(JobStatus::Succeeded));
        let starts = statuses.iter().filter(|s| **s == "STARTING").count();
        assert!(
            starts >= d.attempts().len(),
            "job {i}: every attempt began with a STARTING event: {statuses:?}"
        );
        if starts > 1 {
            restarted += 1;
        }
        // The last event carries the job as it ended.
        let last = streamed
            .events
            .iter()
            .rev()
            .find(|e| e.2["detail"]["jobId"] == id.as_str())
            .unwrap();
        assert_eq!(last.2["detail"]["stoppedAt"], d.stopped_at.unwrap());
        assert_eq!(
            last.2["detail"]["attempts"].as_array().unwrap().len(),
            d.attempts().len()
        );
    }
    // `flotilla events` prints the same log, signed with the CLI's credentials.
    let (ok, out, err) = cli(
        &server,
        &[
            "events", "--after", "0", "--count", "20", "--output", "json",
        ],
    );
    assert!(ok, "{err}");
    let printed: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(printed.len(), 20);
    for (p, s) in printed.iter().zip(&streamed.events) {
        assert_eq!(p, &s.2);
    }
    let (ok, out, err) = cli(
        &server,
        &[
            "events", "--after", "0", "--count", "3", "--queue", "default",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(out.lines().next().unwrap().contains("RUNNABLE"), "{out}");

    eprintln!(
        "{JOBS} jobs, {last_seq} events, {ended_before} ended before the SIGKILL, {restarted} started again after it, {} webhook requests, {} events received twice",
        received.requests,
        received.events.len() - seen.len()
    );
}

/// Event and metric settings that would be stored and never used are refused at start, naming
/// what is missing.
#[test]
fn settings_that_would_do_nothing_are_refused() {
    let run = |args: &[&str]| {
        let data = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data.path())
            .args(args)
            .env_remove("FLOTILLA_WEBHOOK_SECRET")
            .env_remove("FLOTILLA_AWS")
            .env_remove("FLOTILLA_AWS_ENDPOINT_URL")
            .output()
            .expect("run flotilla server");
        assert!(!out.status.success(), "{args:?} started: {out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = run(&["--webhook", "http://127.0.0.1:9/hook"]);
    assert!(e.contains("FLOTILLA_WEBHOOK_SECRET"), "{e}");
    let e = run(&[
        "--webhook",
        "ftp://127.0.0.1/x",
        "--webhook-secret-file",
        "/dev/null",
    ]);
    assert!(e.contains("--webhook ftp://127.0.0.1/x"), "{e}");
    let e = run(&["--webhook-secret-file", "/dev/null"]);
    assert!(e.contains("--webhook"), "{e}");
    let e = run(&["--events-bus", "b"]);
    assert!(e.contains("--aws"), "{e}");
    let e = run(&["--cloudwatch-namespace", "Flotilla"]);
    assert!(e.contains("--aws"), "{e}");
    let e = run(&["--cloudwatch-period-seconds", "5"]);
    assert!(e.contains("--cloudwatch-namespace"), "{e}");
    let e = run(&["--no-job-events", "--job-events-retention-seconds", "5"]);
    assert!(e.contains("--no-job-events"), "{e}");
}
