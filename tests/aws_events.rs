//! Job-state events put on an EventBridge bus (`--events-bus`) by the AWS driver's server,
//! against the emulator: a rule on the bus sends them to a CloudWatch Logs group, where the
//! test reads them back and compares them with the server's own stream (`GET /events`).

mod common;

use aws_sdk_batch::types::JobStatus;
use common::aws::*;
use common::emulator::Emulator;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const BUS: &str = "flotilla-test";
const GROUP: &str = "/flotilla/job-events";

/// Everything `GET /events?after=0` has now: read until the stream goes quiet.
async fn stream_all(raw: &common::Raw) -> Vec<Value> {
    let headers = raw.headers(
        "GET",
        "/events?after=0",
        None,
        b"",
        std::time::SystemTime::now(),
    );
    let mut resp = raw
        .http
        .get(format!("{}/events?after=0", raw.endpoint))
        .headers(headers)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut text = String::new();
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout(Duration::from_secs(2), resp.chunk()).await
    {
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

/// What the rule's target log group holds: each message is one event as the bus delivered it.
/// Read over the wire rather than through the SDK, whose parser refuses the fractional
/// `timestamp` moto writes in FilterLogEvents.
async fn bus_events(emu: &Emulator) -> Vec<Value> {
    let http = reqwest::Client::new();
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut body = json!({"logGroupName": GROUP});
        if let Some(t) = &token {
            body["nextToken"] = json!(t);
        }
        let page: Value = http
            .post(&emu.endpoint)
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", "Logs_20140328.FilterLogEvents")
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/logs/aws4_request, \
                 SignedHeaders=host, Signature=0",
            )
            .body(body.to_string())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for e in page["events"].as_array().into_iter().flatten() {
            out.push(serde_json::from_str(e["message"].as_str().unwrap()).unwrap());
        }
        token = page["nextToken"].as_str().map(str::to_string);
        if token.is_none() {
            return out;
        }
    }
}

/// Statuses per job ID, in the order given.
fn by_job<'a>(events: impl Iterator<Item = &'a Value>) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in events {
        out.entry(e["detail"]["jobId"].as_str().unwrap().to_string())
            .or_default()
            .push(e["detail"]["status"].as_str().unwrap().to_string());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_events_arrive_on_the_eventbridge_bus() {
    let emu = Emulator::start();
    let sdk = emulator_config(&emu).await;
    let events = aws_sdk_eventbridge::Client::new(&sdk);
    let logs = aws_sdk_cloudwatchlogs::Client::new(&sdk);
    events.create_event_bus().name(BUS).send().await.unwrap();
    logs.create_log_group()
        .log_group_name(GROUP)
        .send()
        .await
        .unwrap();
    events
        .put_rule()
        .name("batch-jobs")
        .event_bus_name(BUS)
        .event_pattern(
            json!({"source": ["flotilla.batch"], "detail-type": ["Batch Job State Change"]})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    events
        .put_targets()
        .rule("batch-jobs")
        .event_bus_name(BUS)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("logs")
                .arn(format!(
                    "arn:aws:logs:us-east-1:123456789012:log-group:{GROUP}"
                ))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();

    let server = start(&emu, 2, &["--events-bus", BUS]);
    let client = server.client();
    let queue = spot_setup(&client, &emu, "ev", 0, 8).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(submit(&client, &queue, "ev-def", &format!("job-{i}"), 1, 2).await);
    }
    // job-0's first attempt fails, so its events include the retry.
    let jobs = drive(&client, &emu, &ids, 8, 180, |name, attempt| {
        Some(if name == "job-0" && attempt == 1 {
            1
        } else {
            0
        })
    })
    .await;
    assert!(jobs.iter().all(|j| j.status == Some(JobStatus::Succeeded)));

    let streamed = stream_all(&server.raw()).await;
    let want = by_job(streamed.iter());
    assert_eq!(want.len(), ids.len());
    assert!(
        want.values()
            .all(|s| s.first().map(String::as_str) == Some("RUNNABLE")
                && s.last().map(String::as_str) == Some("SUCCEEDED")),
        "{want:?}"
    );
    assert!(want[&ids[0]].iter().filter(|s| *s == "STARTING").count() == 2);

    // EventBridge does not promise its targets an order, so the bus's events are compared
    // per job as sorted lists; the order is the stream's (and the webhook's) guarantee.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = bus_events(&emu).await;
        let mut have = by_job(got.iter());
        let mut want_sorted = want.clone();
        for v in have.values_mut().chain(want_sorted.values_mut()) {
            v.sort();
        }
        if have == want_sorted {
            for e in &got {
                assert_eq!(e["source"], "flotilla.batch");
                assert_eq!(e["detail-type"], "Batch Job State Change");
                assert_eq!(e["resources"][0], e["detail"]["jobArn"]);
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the bus delivered {have:?}, the stream has {want_sorted:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
