//! `retryStrategy`: which endings retry, and which attempts count against `attempts`.

use super::{Harness, env_var};
use crate::compute::RuntimeEvent;
use crate::compute::local::HOST_LOST_REASON;
use crate::model::JobStatus;
use serde_json::json;

/// The runtime reports that attempt `attempt` of `id` ended without an exit code, for `reason`.
async fn ended_for(h: &Harness, id: &str, attempt: u32, reason: &str) {
    h.event(RuntimeEvent::Exited {
        job_id: id.to_string(),
        attempt,
        exit_code: None,
        reason: Some(reason.to_string()),
    })
    .await;
}

async fn interrupted(h: &Harness, id: &str, attempt: u32) {
    h.event(RuntimeEvent::Interrupted {
        job_id: id.to_string(),
        attempt,
        reason: "Host EC2 (instance i-0spot) terminated.".to_string(),
    })
    .await;
}

/// The engine's bookkeeping of job `id` as stored (DescribeJobs strips it).
async fn stored_internal(h: &Harness, id: &str) -> serde_json::Value {
    let rows = h.batch.store().get_jobs(&[id.to_string()]).await.unwrap();
    let doc: serde_json::Value = serde_json::from_str(&rows[0].doc).unwrap();
    doc["_flotilla"].clone()
}

#[tokio::test]
async fn without_a_retry_strategy_a_failed_attempt_fails_the_job() {
    let h = Harness::new().await;
    let id = h.submit("once", json!({})).await;
    h.run(&id, 1, 3).await;
    let d = h.wait_for(&id, JobStatus::Failed).await;
    assert_eq!(d.attempts.len(), 1);
    assert_eq!(d.container.unwrap().exit_code, Some(3));
    assert_eq!(
        d.status_reason.as_deref(),
        Some("Essential container in task exited")
    );
}

#[tokio::test]
async fn a_failed_attempt_is_retried_until_one_succeeds() {
    let h = Harness::new().await;
    let id = h
        .submit("flaky", json!({"retryStrategy": {"attempts": 3}}))
        .await;
    h.run(&id, 1, 1).await;
    let second = h.launch_of(&id, 2).await;
    assert_eq!(
        env_var(&second, "AWS_BATCH_JOB_ATTEMPT").as_deref(),
        Some("2")
    );
    h.run(&id, 2, 0).await;
    let d = h.wait_for(&id, JobStatus::Succeeded).await;
    let codes: Vec<_> = d
        .attempts
        .iter()
        .map(|a| a.container.as_ref().unwrap().exit_code)
        .collect();
    assert_eq!(codes, [Some(1), Some(0)]);
}

#[tokio::test]
async fn the_job_fails_once_its_attempts_are_spent() {
    let h = Harness::new().await;
    let id = h
        .submit("doomed", json!({"retryStrategy": {"attempts": 2}}))
        .await;
    h.run(&id, 1, 1).await;
    h.run(&id, 2, 2).await;
    let d = h.wait_for(&id, JobStatus::Failed).await;
    assert_eq!(d.attempts.len(), 2);
    assert_eq!(d.container.unwrap().exit_code, Some(2));
    h.settle().await;
    assert!(h.launches_of(&id).iter().all(|s| s.attempt <= 2));
}

#[tokio::test]
async fn evaluate_on_exit_retries_one_exit_code_and_exits_on_another() {
    let h = Harness::new().await;
    let rules = json!({"attempts": 5, "evaluateOnExit": [
        {"onExitCode": "42", "action": "RETRY"},
        {"onExitCode": "1*", "action": "EXIT"}
    ]});
    let id = h.submit("rules", json!({"retryStrategy": rules})).await;
    h.run(&id, 1, 42).await;
    h.run(&id, 2, 17).await;
    // 17 matches `1*`: EXIT with three attempts left.
    let d = h.wait_for(&id, JobStatus::Failed).await;
    assert_eq!(d.attempts.len(), 2);
    h.settle().await;
    assert_eq!(h.launches_of(&id).len(), 2);
}

#[tokio::test]
async fn evaluate_on_exit_matches_the_container_reason_by_glob() {
    let h = Harness::new().await;
    let rules = json!({"attempts": 3, "evaluateOnExit": [
        {"onReason": "CannotPull*", "action": "EXIT"}
    ]});
    let id = h.submit("pull", json!({"retryStrategy": rules})).await;
    // A reason the rule does not match retries (no rule matched: AWS retries).
    h.launch_of(&id, 1).await;
    ended_for(&h, &id, 1, "ResourceInitializationError: no network").await;
    h.launch_of(&id, 2).await;
    ended_for(&h, &id, 2, "CannotPullContainerError: no such image").await;
    let d = h.wait_for(&id, JobStatus::Failed).await;
    assert_eq!(d.attempts.len(), 2);
    assert_eq!(
        d.status_reason.as_deref(),
        Some("CannotPullContainerError: no such image")
    );
    let last = d.attempts[1].container.as_ref().unwrap();
    assert_eq!(
        (last.exit_code, last.reason.as_deref()),
        (None, d.status_reason.as_deref())
    );
}

#[tokio::test]
async fn evaluate_on_exit_matches_the_status_reason_of_a_lost_host() {
    let h = Harness::new().await;
    // The CLI's recipe: retry host failures, exit on anything else.
    let rules = json!({"attempts": 3, "evaluateOnExit": [
        {"onStatusReason": "Host EC2*", "action": "RETRY"},
        {"onReason": "*", "action": "EXIT"}
    ]});
    let id = h.submit("host", json!({"retryStrategy": rules})).await;
    h.launch_of(&id, 1).await;
    h.started(&id, 1).await;
    ended_for(&h, &id, 1, HOST_LOST_REASON).await;
    h.run(&id, 2, 1).await;
    let d = h.wait_for(&id, JobStatus::Failed).await;
    assert_eq!(d.attempts.len(), 2, "exit code 1 matched the EXIT rule");
    assert_eq!(
        d.attempts[0].status_reason.as_deref(),
        Some(HOST_LOST_REASON)
    );
}

#[tokio::test]
async fn a_lost_host_spends_an_attempt() {
    let h = Harness::new().await;
    let id = h
        .submit("lost", json!({"retryStrategy": {"attempts": 2}}))
        .await;
    for attempt in 1..=2 {
        h.running(&id, attempt).await;
        ended_for(&h, &id, attempt, HOST_LOST_REASON).await;
    }
    let d = h.wait_for(&id, JobStatus::Failed).await;
    assert_eq!(d.attempts.len(), 2);
    assert_eq!(d.status_reason.as_deref(), Some(HOST_LOST_REASON));
}

#[tokio::test]
async fn a_spot_interruption_retries_without_spending_an_attempt() {
    let h = Harness::new().await;
    // One attempt only: were the interruption counted, the job would fail with it.
    let id = h
        .submit("spot", json!({"retryStrategy": {"attempts": 1}}))
        .await;
    h.running(&id, 1).await;
    interrupted(&h, &id, 1).await;
    h.run(&id, 2, 0).await;
    let d = h.wait_for(&id, JobStatus::Succeeded).await;
    assert_eq!(
        d.attempts.len(),
        2,
        "the interrupted attempt stays on the record"
    );
    let first = d.attempts[0].container.as_ref().unwrap();
    assert_eq!(first.exit_code, None);
    assert_eq!(
        first.reason.as_deref(),
        Some("Host EC2 (instance i-0spot) terminated.")
    );
}

#[tokio::test]
async fn past_the_interruption_limit_the_job_avoids_spot_and_still_spends_nothing() {
    let h = Harness::new().await;
    let limit = crate::engine::EngineConfig::default().spot_max_interruptions;
    let id = h
        .submit("spot", json!({"retryStrategy": {"attempts": 1}}))
        .await;
    for attempt in 1..=limit {
        h.launch_of(&id, attempt).await;
        interrupted(&h, &id, attempt).await;
    }
    // Retried once more, now kept off SPOT environments.
    h.launch_of(&id, limit + 1).await;
    h.settle().await;
    let internal = stored_internal(&h, &id).await;
    assert_eq!(internal["interruptions"], json!(limit));
    assert_eq!(internal["avoidSpot"], json!(true));
    // Its one real attempt is still unspent until now: this failure is the one that counts.
    h.run(&id, limit + 1, 1).await;
    let d = h.wait_for(&id, JobStatus::Failed).await;
    assert_eq!(d.attempts.len() as u32, limit + 1);
}

#[tokio::test]
async fn an_attempt_that_never_started_is_relaunched_with_the_same_number() {
    let h = Harness::new().await;
    let id = h
        .submit("bounce", json!({"retryStrategy": {"attempts": 1}}))
        .await;
    let first = h.launch_of(&id, 1).await;
    h.event(RuntimeEvent::NotStarted {
        job_id: id.clone(),
        attempt: 1,
        reason: "no room on the instance after all".into(),
    })
    .await;
    let again = &h.launches(2).await[1];
    assert_eq!(again.attempt, 1);
    assert_ne!(
        again.task_id, first.task_id,
        "a new run of the same attempt"
    );
    h.run(&id, 1, 0).await;
    let d = h.wait_for(&id, JobStatus::Succeeded).await;
    assert_eq!(
        d.attempts.len(),
        1,
        "the launch that never started is not an attempt"
    );
}
