//! The job-event log: every status change, in order, with the job's detail, stored with the
//! rows; PENDING announced once; a queue blocked past its time limit.

use super::Harness;
use crate::engine::EngineConfig;
use crate::model::{JobDetail, JobStatus};
use crate::store::EventRow;
use serde_json::json;

/// The standard harness (`local`, `default`, `step`), with a clock that starts at the wall
/// clock's time: SubmitJob stamps `createdAt` with the wall clock, and the time limit counts
/// from it.
async fn harness(cfg: EngineConfig) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let clock = super::ManualClock::new(crate::util::time::now_ms());
    let h = Harness::open(dir, cfg, clock).await;
    h.call(
        "CreateComputeEnvironment",
        json!({"computeEnvironmentName": "local", "type": "MANAGED",
               "computeResources": {"type": "LOCAL", "maxvCpus": 4}}),
    )
    .await;
    h.call(
        "CreateJobQueue",
        json!({"jobQueueName": "default", "priority": 1,
               "computeEnvironmentOrder": [{"order": 1, "computeEnvironment": "local"}]}),
    )
    .await;
    h.register("step", json!({})).await;
    h
}

async fn log(h: &Harness) -> Vec<EventRow> {
    h.settle().await;
    h.batch.store().events_after(0, 10_000).await.unwrap()
}

/// (kind, status) of each event of `id`, in log order.
fn of(events: &[EventRow], id: &str) -> Vec<(String, JobStatus)> {
    events
        .iter()
        .filter(|e| e.job_id == id)
        .map(|e| {
            let d: JobDetail = serde_json::from_str(&e.doc).unwrap();
            assert_eq!(d.job_id, id);
            (e.kind.clone(), d.status)
        })
        .collect()
}

fn changes(statuses: &[JobStatus]) -> Vec<(String, JobStatus)> {
    statuses
        .iter()
        .map(|s| ("Batch Job State Change".to_string(), *s))
        .collect()
}

#[tokio::test]
async fn every_status_change_is_logged_in_order_with_its_detail() {
    use JobStatus::*;
    let h = Harness::new().await;
    let a = h.submit("a", json!({})).await;
    let b = h.submit("b", json!({"dependsOn": [{"jobId": a}]})).await;
    h.run(&a, 1, 1).await;
    // `a` fails: `b` fails with it, without running.
    h.wait_for(&b, Failed).await;
    let events = log(&h).await;
    assert_eq!(
        of(&events, &a),
        changes(&[Runnable, Starting, Running, Failed])
    );
    assert_eq!(of(&events, &b), changes(&[Pending, Failed]));
    for w in events.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1, "numbered without gaps");
    }
    // The final event carries what DescribeJobs shows of the end.
    let last: JobDetail =
        serde_json::from_str(&events.iter().rev().find(|e| e.job_id == a).unwrap().doc).unwrap();
    assert_eq!(last.attempts.len(), 1);
    assert_eq!(
        last.attempts[0].container.as_ref().unwrap().exit_code,
        Some(1)
    );
    assert!(last.stopped_at.is_some());
}

#[tokio::test]
async fn a_pending_job_is_announced_once_across_restarts() {
    use JobStatus::*;
    let h = Harness::new().await;
    let a = h.submit("a", json!({})).await;
    let b = h.submit("b", json!({"dependsOn": [{"jobId": a}]})).await;
    h.launch_of(&a, 1).await;
    let before = log(&h).await;
    assert_eq!(of(&before, &b), changes(&[Pending]));
    let (dir, clock) = h.shut_down().await;
    let h = Harness::open(dir, EngineConfig::default(), clock).await;
    let after = log(&h).await;
    assert_eq!(of(&after, &b), changes(&[Pending]), "not announced again");
    // The restarted engine still expects attempt 1 of `a`, which the runtime reports.
    h.started(&a, 1).await;
    h.wait_for(&a, Running).await;
    h.exited(&a, 1, 0).await;
    h.run(&b, 1, 0).await;
    h.wait_for(&b, Succeeded).await;
    let events = log(&h).await;
    assert_eq!(
        of(&events, &b),
        changes(&[Pending, Runnable, Starting, Running, Succeeded])
    );
}

#[tokio::test]
async fn a_job_blocking_its_queue_past_the_limit_is_announced_before_it_is_cancelled() {
    let h = harness(EngineConfig::default()).await;
    h.call(
        "UpdateJobQueue",
        json!({
            "jobQueue": "default",
            "jobStateTimeLimitActions": [{
                "reason": "MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT",
                "state": "RUNNABLE",
                "maxTimeSeconds": 600,
                "action": "CANCEL"
            }]
        }),
    )
    .await;
    let big = h
        .submit(
            "big",
            json!({"containerOverrides": {"resourceRequirements": [{"type": "VCPU", "value": "64"}]}}),
        )
        .await;
    h.settle().await;
    h.advance(601_000);
    h.wait_for(&big, JobStatus::Failed).await;
    let events = log(&h).await;
    let kinds: Vec<(String, JobStatus)> = of(&events, &big);
    assert_eq!(
        kinds,
        vec![
            ("Batch Job State Change".into(), JobStatus::Runnable),
            ("Batch Job Queue Blocked".into(), JobStatus::Runnable),
            ("Batch Job State Change".into(), JobStatus::Failed),
        ]
    );
    let blocked: JobDetail = serde_json::from_str(&events[1].doc).unwrap();
    assert!(
        blocked
            .status_reason
            .as_deref()
            .is_some_and(|r| r.starts_with("MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT")),
        "the blocked event says why: {:?}",
        blocked.status_reason
    );
}

#[tokio::test]
async fn no_log_is_kept_when_job_events_are_off() {
    let h = harness(EngineConfig {
        job_events: false,
        ..Default::default()
    })
    .await;
    let a = h.submit("a", json!({})).await;
    h.run(&a, 1, 0).await;
    h.wait_for(&a, JobStatus::Succeeded).await;
    assert!(log(&h).await.is_empty());
}
