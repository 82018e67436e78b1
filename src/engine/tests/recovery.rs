//! The ordering rule (what a caller or the runtime is told is already stored) and restarts over
//! the same store: attempts that were STARTING or RUNNING are handed to the runtime to recover,
//! never launched again as new attempts; waiting jobs go on where they were.

use super::Harness;
use crate::compute::{ExpectedAttempt, RuntimeEvent, Target};
use crate::engine::EngineConfig;
use crate::model::JobStatus;
use serde_json::json;

/// Stops the engine as a shutdown does and starts a new one over the same store and clock.
async fn restart(h: Harness) -> Harness {
    let (dir, clock) = h.shut_down().await;
    Harness::open(dir, EngineConfig::default(), clock).await
}

fn expected(id: &str, attempt: u32, task_id: &str) -> ExpectedAttempt {
    ExpectedAttempt {
        job_id: id.to_string(),
        attempt,
        task_id: task_id.to_string(),
        target: Target::Local,
    }
}

/// Job `a` RUNNING and `b` waiting for it (PENDING) when the engine restarts: (the new
/// harness, a, b).
async fn restarted_with_a_dependent() -> (Harness, String, String) {
    let h = Harness::new().await;
    let a = h.submit("a", json!({})).await;
    let b = h.submit("b", json!({"dependsOn": [{"jobId": a}]})).await;
    h.running(&a, 1).await;
    (restart(h).await, a, b)
}

#[tokio::test]
async fn an_answered_cancel_is_already_stored() {
    let h = Harness::new().await;
    h.fill_local().await;
    let id = h.submit("queued", json!({})).await;
    h.wait_for(&id, JobStatus::Runnable).await;
    h.call("CancelJob", json!({"jobId": id, "reason": "stop"}))
        .await;
    // Read once, right after the answer: no polling.
    assert_eq!(h.describe(&id).await.status, JobStatus::Failed);
}

#[tokio::test]
async fn the_runtime_hears_an_end_is_stored_only_once_it_is() {
    let h = Harness::new().await;
    let id = h.submit("short", json!({})).await;
    h.run(&id, 1, 0).await;
    // The engine does not wait for its own write of the end; it tells the runtime once it has
    // checked that write landed, before its next write (here: the one answering a command).
    let (_, d) = tokio::join!(h.settle(), async {
        h.end_stored(&id, 1).await;
        // Read at once: the runtime may now forget the attempt, so the store must have its end.
        h.describe(&id).await
    });
    assert_eq!(d.status, JobStatus::Succeeded);
    assert_eq!(d.attempts.len(), 1);
}

#[tokio::test]
async fn a_running_attempt_is_handed_to_the_runtime_after_a_restart() {
    let h = Harness::new().await;
    let id = h
        .submit("long", json!({"retryStrategy": {"attempts": 2}}))
        .await;
    h.run(&id, 1, 1).await;
    let spec = h.launch_of(&id, 2).await;
    h.started(&id, 2).await;
    h.settle().await;
    let h = restart(h).await;
    assert_eq!(
        *h.rt.recovered.lock().unwrap(),
        [expected(&id, 2, &spec.task_id)]
    );
    h.settle().await;
    assert!(
        h.launches_of(&id).is_empty(),
        "recovered, not launched again"
    );
    // Its events reach the new engine.
    h.exited(&id, 2, 0).await;
    let d = h.wait_for(&id, JobStatus::Succeeded).await;
    assert_eq!(d.attempts.len(), 2);
}

#[tokio::test]
async fn a_starting_attempt_is_recovered_not_relaunched_as_a_new_attempt() {
    let h = Harness::new().await;
    let id = h.submit("starting", json!({})).await;
    // Launched, and the engine went down before the runtime reported anything.
    let spec = h.launch_of(&id, 1).await;
    let h = restart(h).await;
    assert_eq!(
        *h.rt.recovered.lock().unwrap(),
        [expected(&id, 1, &spec.task_id)]
    );
    // A job submitted now is launched by a pass that would have relaunched the first one.
    let other = h.submit("other", json!({})).await;
    h.launch_of(&other, 1).await;
    h.settle().await;
    assert!(h.launches_of(&id).is_empty());
    // The runtime adopted it: its events go on as usual.
    h.started(&id, 1).await;
    h.wait_for(&id, JobStatus::Running).await;
    h.exited(&id, 1, 0).await;
    let d = h.wait_for(&id, JobStatus::Succeeded).await;
    assert_eq!(d.attempts.len(), 1);
}

#[tokio::test]
async fn a_starting_attempt_whose_launch_was_lost_runs_again_under_the_same_number() {
    let h = Harness::new().await;
    let id = h
        .submit("lost-launch", json!({"retryStrategy": {"attempts": 1}}))
        .await;
    let before = h.launch_of(&id, 1).await;
    let h = restart(h).await;
    // The runtime finds nothing of it: the write landed, the launch did not.
    h.event(RuntimeEvent::NotStarted {
        job_id: id.clone(),
        attempt: 1,
        reason: "not found after a restart".into(),
    })
    .await;
    let again = h.launch_of(&id, 1).await;
    assert_ne!(again.task_id, before.task_id);
    h.run(&id, 1, 0).await;
    let d = h.wait_for(&id, JobStatus::Succeeded).await;
    assert_eq!(
        d.attempts.len(),
        1,
        "its one attempt was not spent by the lost launch"
    );
}

#[tokio::test]
async fn a_runnable_job_is_launched_by_the_new_engine() {
    let h = Harness::new().await;
    let wide = h.fill_local().await;
    let id = h.submit("queued", json!({})).await;
    h.wait_for(&id, JobStatus::Runnable).await;
    let h = restart(h).await;
    h.settle().await;
    assert!(
        h.launches_of(&id).is_empty(),
        "the recovered job still holds every vCPU"
    );
    h.exited(&wide, 1, 0).await;
    h.run(&id, 1, 0).await;
    h.wait_for(&id, JobStatus::Succeeded).await;
}

#[tokio::test]
async fn a_dependent_waiting_at_shutdown_is_released_after_the_restart() {
    let (h, a, b) = restarted_with_a_dependent().await;
    assert_eq!(h.describe(&b).await.status, JobStatus::Pending);
    h.exited(&a, 1, 0).await;
    h.run(&b, 1, 0).await;
    h.wait_for(&b, JobStatus::Succeeded).await;
}

#[tokio::test]
async fn a_dependent_submitted_after_its_dependency_finished_runs_after_a_restart() {
    let h = Harness::new().await;
    let a = h.submit("a", json!({})).await;
    h.run(&a, 1, 0).await;
    h.wait_for(&a, JobStatus::Succeeded).await;
    let wide = h.fill_local().await;
    let b = h.submit("b", json!({"dependsOn": [{"jobId": a}]})).await;
    h.settle().await;
    assert!(h.launches_of(&b).is_empty());
    let h = restart(h).await;
    h.exited(&wide, 1, 0).await;
    h.run(&b, 1, 0).await;
    h.wait_for(&b, JobStatus::Succeeded).await;
}

#[tokio::test]
async fn a_dependent_of_a_job_that_failed_while_down_fails_after_the_restart() {
    let (h, a, b) = restarted_with_a_dependent().await;
    // The runtime's recovery finds the attempt gone.
    h.event(RuntimeEvent::Exited {
        job_id: a.clone(),
        attempt: 1,
        exit_code: None,
        reason: Some(crate::compute::local::HOST_LOST_REASON.into()),
    })
    .await;
    h.wait_for(&a, JobStatus::Failed).await;
    let d = h.wait_for(&b, JobStatus::Failed).await;
    assert_eq!(
        d.status_reason,
        Some(format!("Dependent Job failed: {a} did not succeed"))
    );
}

#[tokio::test]
async fn an_array_survives_a_restart_with_its_children_where_they_were() {
    let h = Harness::new().await;
    let p = h
        .submit("fan", json!({"arrayProperties": {"size": 3}}))
        .await;
    let c = |i: i32| format!("{p}:{i}");
    h.run(&c(0), 1, 0).await;
    h.wait_for(&c(0), JobStatus::Succeeded).await;
    let spec = h.launch_of(&c(1), 1).await;
    h.started(&c(1), 1).await;
    h.launch_of(&c(2), 1).await;
    h.settle().await;
    let h = restart(h).await;
    let mut recovered: Vec<String> =
        h.rt.recovered
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.job_id.clone())
            .collect();
    recovered.sort();
    assert_eq!(recovered, [c(1), c(2)]);
    assert!(
        h.rt.recovered
            .lock()
            .unwrap()
            .contains(&expected(&c(1), 1, &spec.task_id))
    );
    h.exited(&c(1), 1, 0).await;
    h.exited(&c(2), 1, 0).await;
    h.wait_for(&p, JobStatus::Succeeded).await;
}
