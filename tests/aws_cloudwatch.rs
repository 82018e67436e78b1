//! CloudWatch metrics (`--cloudwatch-namespace`) against the emulator: while jobs run on a
//! managed environment, the server publishes jobs per queue and status, the fleet's vCPUs and
//! instances, and jobs finished, with PutMetricData (the SDK's CBOR protocol, decoded by the
//! emulator into moto's CloudWatch).

mod common;

use aws_sdk_batch::types::JobStatus;
use common::aws::*;
use common::emulator::Emulator;
use serde_json::Value;
use std::time::{Duration, Instant};

const NS: &str = "Flotilla/Test";

fn ours(all: Vec<Value>) -> Vec<Value> {
    all.into_iter().filter(|m| m["namespace"] == NS).collect()
}

fn named<'a>(ms: &'a [Value], name: &str, dims: &[(&str, &str)]) -> Vec<&'a Value> {
    ms.iter()
        .filter(|m| m["name"] == name && dims.iter().all(|(k, v)| m["dimensions"][k] == *v))
        .collect()
}

async fn wait_until(emu: &Emulator, what: &str, ok: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let ms = ours(emu.cloudwatch_metrics().await);
        if ok(&ms) {
            return ms;
        }
        if Instant::now() > deadline {
            let mut max: std::collections::BTreeMap<String, f64> = Default::default();
            for m in &ms {
                let k = format!("{} {}", m["name"], m["dimensions"]);
                let v = m["value"].as_f64().unwrap_or(0.0);
                let e = max.entry(k).or_insert(v);
                *e = e.max(v);
            }
            panic!("no {what} within 90 s; the largest value of each metric: {max:#?}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_and_its_jobs_are_published_to_cloudwatch() {
    let emu = Emulator::start();
    let server = start(
        &emu,
        2,
        &[
            "--cloudwatch-namespace",
            NS,
            "--cloudwatch-period-seconds",
            "1",
        ],
    );
    let client = server.client();
    let queue = spot_setup(&client, &emu, "cw", 0, 8).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(submit(&client, &queue, "cw-def", &format!("job-{i}"), 1, 1).await);
    }
    // Tasks stay RUNNING until the test completes them: the fleet and its use are published
    // meanwhile.
    let value = |m: &&Value| m["value"].as_f64().unwrap();
    let any = |ms: &[Value], name: &str, dims: &[(&str, &str)], at_least: f64| {
        named(ms, name, dims).iter().any(|m| value(m) >= at_least)
    };
    let cw = [("ComputeEnvironment", "cw")];
    let ms = wait_until(&emu, "the fleet at work", |ms| {
        any(ms, "RunningVcpus", &cw, 1.0)
            && any(ms, "FleetVcpus", &cw, 2.0)
            && any(ms, "FleetInstances", &cw, 1.0)
            && any(
                ms,
                "QueueJobs",
                &[("JobQueue", "cw-q"), ("Status", "RUNNING")],
                1.0,
            )
    })
    .await;
    // A SPOT environment's instances are Spot instances.
    assert!(
        named(
            &ms,
            "FleetInstances",
            &[
                ("ComputeEnvironment", "cw"),
                ("PurchaseOption", "ON_DEMAND")
            ]
        )
        .iter()
        .all(|m| value(m) == 0.0),
        "{:?}",
        named(&ms, "FleetInstances", &[])
    );
    assert!(
        named(&ms, "RunningVcpus", &cw)
            .iter()
            .zip(named(&ms, "FleetVcpus", &cw))
            .all(|(used, total)| value(used) <= value(&total)),
        "running vCPUs never exceed the fleet's"
    );

    // job-3 fails: one failure, three successes.
    let jobs = drive(&client, &emu, &ids, 8, 120, |name, _| {
        Some(if name == "job-3" { 2 } else { 0 })
    })
    .await;
    assert_eq!(
        jobs.iter()
            .filter(|j| j.status == Some(JobStatus::Succeeded))
            .count(),
        3
    );
    let ms = wait_until(&emu, "the finished jobs", |ms| {
        let sum = |name| named(ms, name, &[]).iter().map(value).sum::<f64>();
        sum("JobsSucceeded") >= 3.0 && sum("JobsFailed") >= 1.0
    })
    .await;
    let sum = |name| named(&ms, name, &[]).iter().map(value).sum::<f64>();
    assert_eq!(
        sum("JobsSucceeded"),
        3.0,
        "each finished job is counted once"
    );
    assert_eq!(sum("JobsFailed"), 1.0);
    let ms = wait_until(&emu, "the queue's final counts", |ms| {
        named(
            ms,
            "QueueJobs",
            &[("JobQueue", "cw-q"), ("Status", "SUCCEEDED")],
        )
        .last()
        .is_some_and(|m| value(m) == 3.0)
    })
    .await;
    let last = named(
        &ms,
        "QueueJobs",
        &[("JobQueue", "cw-q"), ("Status", "RUNNING")],
    );
    assert_eq!(
        last.last().map(value),
        Some(0.0),
        "a status with no job is published as 0"
    );
    assert!(ms.iter().all(|m| m["unit"] == "Count"));
}
