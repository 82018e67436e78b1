//! `timeout.attemptDurationSeconds`: SIGTERM when an attempt runs too long, SIGKILL after the
//! grace period, and the job fails without a retry. The clock is moved by hand.

use super::Harness;
use crate::compute::StopSignal;
use crate::engine::EngineConfig;
use crate::model::JobStatus;
use serde_json::json;

/// A job with `attempts` attempts and a 60 s attempt timeout, RUNNING now.
async fn running_with_timeout(h: &Harness, attempts: u32) -> String {
    let id = h
        .submit(
            "slow",
            json!({
                "timeout": {"attemptDurationSeconds": 60},
                "retryStrategy": {"attempts": attempts}
            }),
        )
        .await;
    h.running(&id, 1).await;
    id
}

#[tokio::test]
async fn an_attempt_past_its_timeout_gets_sigterm_then_sigkill_after_the_grace() {
    let h = Harness::new().await;
    let grace = EngineConfig::default().kill_grace.as_millis() as i64;
    let id = running_with_timeout(&h, 1).await;
    h.advance(59_999);
    h.settle().await;
    assert!(h.signals_of(&id).is_empty(), "signalled before its timeout");
    h.advance(1);
    h.signalled(&id, 1, StopSignal::Term).await;
    h.advance(grace - 1);
    h.settle().await;
    assert_eq!(h.signals_of(&id), [(1, StopSignal::Term)]);
    h.advance(1);
    h.signalled(&id, 1, StopSignal::Kill).await;
    h.exited(&id, 1, 137).await;
    let d = h.wait_for(&id, JobStatus::Failed).await;
    assert_eq!(
        d.status_reason.as_deref(),
        Some("Job attempt duration exceeded timeout")
    );
}

#[tokio::test]
async fn a_timed_out_job_is_not_retried_even_with_attempts_left() {
    let h = Harness::new().await;
    let id = running_with_timeout(&h, 3).await;
    h.advance(60_000);
    h.signalled(&id, 1, StopSignal::Term).await;
    // It stops on SIGTERM: no SIGKILL follows.
    h.exited(&id, 1, 143).await;
    let d = h.wait_for(&id, JobStatus::Failed).await;
    assert_eq!(d.attempts.len(), 1);
    assert_eq!(
        d.attempts[0].status_reason.as_deref(),
        Some("Job attempt duration exceeded timeout")
    );
    h.advance(60_000);
    h.settle().await;
    assert_eq!(h.launches_of(&id).len(), 1);
    assert_eq!(h.signals_of(&id), [(1, StopSignal::Term)]);
}

#[tokio::test]
async fn the_timeout_counts_from_the_start_of_each_attempt() {
    let h = Harness::new().await;
    let id = running_with_timeout(&h, 2).await;
    h.advance(50_000);
    h.exited(&id, 1, 1).await;
    h.launch_of(&id, 2).await;
    h.started(&id, 2).await;
    // Applied before the clock moves on.
    h.settle().await;
    // 80 s since the job first started, 30 s into this attempt.
    h.advance(30_000);
    h.settle().await;
    assert!(h.signals_of(&id).is_empty());
    h.advance(30_000);
    h.signalled(&id, 2, StopSignal::Term).await;
}

#[tokio::test]
async fn a_job_without_a_timeout_is_never_signalled() {
    let h = Harness::new().await;
    let id = h.submit("long", json!({})).await;
    h.running(&id, 1).await;
    h.advance(7 * 24 * 3_600_000);
    h.settle().await;
    assert!(h.signals_of(&id).is_empty());
    assert_eq!(h.describe(&id).await.status, JobStatus::Running);
}
