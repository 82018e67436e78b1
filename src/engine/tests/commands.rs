//! CancelJob and TerminateJob in each state of a job, and on an array job's parent.

use super::Harness;
use crate::compute::{RuntimeEvent, StopSignal};
use crate::model::JobStatus;
use serde_json::json;

async fn cancel(h: &Harness, id: &str, reason: &str) {
    h.call("CancelJob", json!({"jobId": id, "reason": reason}))
        .await;
}

async fn terminate(h: &Harness, id: &str, reason: &str) {
    h.call("TerminateJob", json!({"jobId": id, "reason": reason}))
        .await;
}

/// A job RUNNING now.
async fn running(h: &Harness, extra: serde_json::Value) -> String {
    let id = h.submit("busy", extra).await;
    h.running(&id, 1).await;
    id
}

#[tokio::test]
async fn cancelling_a_pending_job_fails_it_with_the_reason() {
    let h = Harness::new().await;
    let a = running(&h, json!({})).await;
    let b = h
        .submit("later", json!({"dependsOn": [{"jobId": a}]}))
        .await;
    cancel(&h, &b, "not needed").await;
    // Answered once stored: no waiting.
    let d = h.describe(&b).await;
    assert_eq!(d.status, JobStatus::Failed);
    assert_eq!(d.status_reason.as_deref(), Some("not needed"));
    assert_eq!(d.is_cancelled, Some(true));
    h.exited(&a, 1, 0).await;
    h.wait_for(&a, JobStatus::Succeeded).await;
    h.settle().await;
    assert!(h.launches_of(&b).is_empty());
}

#[tokio::test]
async fn cancelling_a_runnable_job_fails_it_and_it_never_runs() {
    let h = Harness::new().await;
    let wide = h.fill_local().await;
    let id = h.submit("queued", json!({})).await;
    h.wait_for(&id, JobStatus::Runnable).await;
    cancel(&h, &id, "changed my mind").await;
    let d = h.describe(&id).await;
    assert_eq!(d.status, JobStatus::Failed);
    assert_eq!(d.status_reason.as_deref(), Some("changed my mind"));
    assert_eq!(d.is_cancelled, Some(true));
    h.exited(&wide, 1, 0).await;
    h.wait_for(&wide, JobStatus::Succeeded).await;
    h.settle().await;
    assert!(h.launches_of(&id).is_empty());
}

#[tokio::test]
async fn cancelling_a_running_job_does_nothing() {
    let h = Harness::new().await;
    let id = running(&h, json!({})).await;
    cancel(&h, &id, "too late").await;
    let d = h.describe(&id).await;
    assert_eq!((d.status, d.is_cancelled), (JobStatus::Running, None));
    h.settle().await;
    assert!(h.signals_of(&id).is_empty());
    h.exited(&id, 1, 0).await;
    let d = h.wait_for(&id, JobStatus::Succeeded).await;
    assert_ne!(d.status_reason.as_deref(), Some("too late"));
}

#[tokio::test]
async fn terminating_a_running_job_sends_sigterm_and_fails_it_when_it_exits() {
    let h = Harness::new().await;
    // Attempts left: a terminated job is still not retried.
    let id = running(&h, json!({"retryStrategy": {"attempts": 3}})).await;
    terminate(&h, &id, "operator stop").await;
    h.signalled(&id, 1, StopSignal::Term).await;
    let d = h.describe(&id).await;
    assert_eq!(
        (d.status, d.is_terminated),
        (JobStatus::Running, Some(true))
    );
    h.exited(&id, 1, 143).await;
    let d = h.wait_for(&id, JobStatus::Failed).await;
    assert_eq!(d.status_reason.as_deref(), Some("operator stop"));
    assert_eq!(d.attempts.len(), 1);
    h.settle().await;
    assert_eq!(h.launches_of(&id).len(), 1);
}

#[tokio::test]
async fn a_terminated_job_that_ignores_sigterm_gets_sigkill_after_the_grace() {
    let h = Harness::new().await;
    let id = running(&h, json!({})).await;
    terminate(&h, &id, "operator stop").await;
    h.signalled(&id, 1, StopSignal::Term).await;
    h.advance(
        crate::engine::EngineConfig::default()
            .kill_grace
            .as_millis() as i64,
    );
    h.signalled(&id, 1, StopSignal::Kill).await;
    h.exited(&id, 1, 137).await;
    let d = h.wait_for(&id, JobStatus::Failed).await;
    assert_eq!(d.status_reason.as_deref(), Some("operator stop"));
}

#[tokio::test]
async fn terminating_a_starting_job_fails_it_once_the_runtime_gives_it_up() {
    let h = Harness::new().await;
    let id = h
        .submit("starting", json!({"retryStrategy": {"attempts": 2}}))
        .await;
    h.launch_of(&id, 1).await;
    terminate(&h, &id, "stop before it runs").await;
    h.signalled(&id, 1, StopSignal::Term).await;
    h.event(RuntimeEvent::NotStarted {
        job_id: id.clone(),
        attempt: 1,
        reason: "stopped before it started".into(),
    })
    .await;
    let d = h.wait_for(&id, JobStatus::Failed).await;
    assert_eq!(d.status_reason.as_deref(), Some("stop before it runs"));
    assert_eq!(d.is_terminated, Some(true));
    h.settle().await;
    assert_eq!(h.launches_of(&id).len(), 1, "not launched again");
}

#[tokio::test]
async fn terminating_a_runnable_job_fails_it_at_once() {
    let h = Harness::new().await;
    h.fill_local().await;
    let id = h.submit("queued", json!({})).await;
    h.wait_for(&id, JobStatus::Runnable).await;
    terminate(&h, &id, "never mind").await;
    let d = h.describe(&id).await;
    assert_eq!(d.status, JobStatus::Failed);
    assert_eq!(
        (d.is_terminated, d.status_reason.as_deref()),
        (Some(true), Some("never mind"))
    );
}

#[tokio::test]
async fn stopping_a_finished_job_leaves_it_as_it_was() {
    let h = Harness::new().await;
    let ok = h.submit("ok", json!({})).await;
    let bad = h.submit("bad", json!({})).await;
    h.run(&ok, 1, 0).await;
    h.run(&bad, 1, 2).await;
    let ok_before = h.wait_for(&ok, JobStatus::Succeeded).await;
    let bad_before = h.wait_for(&bad, JobStatus::Failed).await;
    cancel(&h, &ok, "late").await;
    terminate(&h, &bad, "later").await;
    let ok_after = h.describe(&ok).await;
    let bad_after = h.describe(&bad).await;
    assert_eq!(ok_after.status, JobStatus::Succeeded);
    assert_eq!(ok_after.is_cancelled, None);
    assert_eq!(bad_after.status_reason, bad_before.status_reason);
    assert_eq!(bad_after.is_terminated, None);
    assert_eq!(ok_after.stopped_at, ok_before.stopped_at);
    assert!(h.signals_of(&ok).is_empty() && h.signals_of(&bad).is_empty());
}

#[tokio::test]
async fn stopping_an_unknown_job_is_a_client_error() {
    let h = Harness::new().await;
    let r = h
        .try_call("CancelJob", json!({"jobId": "no-such-job", "reason": "x"}))
        .await;
    assert!(
        matches!(r, Err(crate::error::BatchError::Client(_))),
        "{r:?}"
    );
}

#[tokio::test]
async fn terminating_an_array_parent_stops_every_child() {
    let h = Harness::new().await;
    // Six children on four vCPUs: four start, two wait.
    let p = h
        .submit("fan", json!({"arrayProperties": {"size": 6}}))
        .await;
    let started: Vec<String> = h.launches(4).await.into_iter().map(|s| s.job_id).collect();
    terminate(&h, &p, "abort the array").await;
    let waiting: Vec<String> = (0..6)
        .map(|i| format!("{p}:{i}"))
        .filter(|c| !started.contains(c))
        .collect();
    assert_eq!(waiting.len(), 2);
    for c in &waiting {
        let d = h.wait_for(c, JobStatus::Failed).await;
        assert_eq!(d.status_reason.as_deref(), Some("abort the array"));
    }
    for c in &started {
        h.signalled(c, 1, StopSignal::Term).await;
        h.exited(c, 1, 143).await;
    }
    let d = h.wait_for(&p, JobStatus::Failed).await;
    assert_eq!(d.status_reason.as_deref(), Some("abort the array"));
    for c in &started {
        let d = h.wait_for(c, JobStatus::Failed).await;
        assert_eq!(d.status_reason.as_deref(), Some("abort the array"));
    }
}

#[tokio::test]
async fn cancelling_an_array_parent_fails_waiting_children_and_lets_running_ones_finish() {
    let h = Harness::new().await;
    let p = h
        .submit("fan", json!({"arrayProperties": {"size": 6}}))
        .await;
    let started: Vec<String> = h.launches(4).await.into_iter().map(|s| s.job_id).collect();
    cancel(&h, &p, "enough").await;
    for i in 0..6 {
        let c = format!("{p}:{i}");
        if !started.contains(&c) {
            let d = h.wait_for(&c, JobStatus::Failed).await;
            assert_eq!(
                (d.status_reason.as_deref(), d.is_cancelled),
                (Some("enough"), Some(true))
            );
        }
    }
    h.settle().await;
    assert!(
        !h.describe(&p).await.status.is_final(),
        "children still run"
    );
    for c in &started {
        assert!(h.signals_of(c).is_empty());
        h.run(c, 1, 0).await;
        h.wait_for(c, JobStatus::Succeeded).await;
    }
    let d = h.wait_for(&p, JobStatus::Failed).await;
    assert_eq!(d.status_reason.as_deref(), Some("enough"));
    assert_eq!(
        h.launches(0).await.len(),
        4,
        "the cancelled children never ran"
    );
}
