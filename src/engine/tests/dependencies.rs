//! `dependsOn`: a job waits for its dependencies to succeed, and fails when one of them fails.

use super::Harness;
use crate::error::BatchError;
use crate::model::JobStatus;
use serde_json::json;

fn after(ids: &[&str]) -> serde_json::Value {
    let deps: Vec<_> = ids.iter().map(|id| json!({"jobId": id})).collect();
    json!({"dependsOn": deps})
}

#[tokio::test]
async fn a_dependent_waits_pending_and_runs_once_its_dependency_succeeded() {
    let h = Harness::new().await;
    let a = h.submit("a", json!({})).await;
    let b = h.submit("b", after(&[&a])).await;
    h.launch_of(&a, 1).await;
    h.settle().await;
    assert_eq!(h.describe(&b).await.status, JobStatus::Pending);
    assert!(h.launches_of(&b).is_empty());
    h.run(&a, 1, 0).await;
    h.run(&b, 1, 0).await;
    h.wait_for(&b, JobStatus::Succeeded).await;
}

#[tokio::test]
async fn a_job_waits_for_every_one_of_its_dependencies() {
    let h = Harness::new().await;
    let a = h.submit("a", json!({})).await;
    let b = h.submit("b", json!({})).await;
    let c = h.submit("c", after(&[&a, &b])).await;
    h.run(&a, 1, 0).await;
    h.wait_for(&a, JobStatus::Succeeded).await;
    h.settle().await;
    assert_eq!(h.describe(&c).await.status, JobStatus::Pending);
    h.run(&b, 1, 0).await;
    h.run(&c, 1, 0).await;
    h.wait_for(&c, JobStatus::Succeeded).await;
}

#[tokio::test]
async fn a_failure_cascades_down_a_chain_of_dependents() {
    let h = Harness::new().await;
    let a = h.submit("a", json!({})).await;
    let b = h.submit("b", after(&[&a])).await;
    let c = h.submit("c", after(&[&b])).await;
    h.run(&a, 1, 1).await;
    let db = h.wait_for(&b, JobStatus::Failed).await;
    assert_eq!(
        db.status_reason,
        Some(format!("Dependent Job failed: {a} did not succeed"))
    );
    let dc = h.wait_for(&c, JobStatus::Failed).await;
    assert_eq!(
        dc.status_reason,
        Some(format!("Dependent Job failed: {b} did not succeed"))
    );
    assert!(db.attempts.is_empty() && dc.attempts.is_empty());
    assert!(h.launches_of(&b).is_empty() && h.launches_of(&c).is_empty());
}

#[tokio::test]
async fn a_dependency_that_succeeded_before_submission_is_already_met() {
    let h = Harness::new().await;
    let a = h.submit("a", json!({})).await;
    h.run(&a, 1, 0).await;
    h.wait_for(&a, JobStatus::Succeeded).await;
    let b = h.submit("b", after(&[&a])).await;
    h.run(&b, 1, 0).await;
    h.wait_for(&b, JobStatus::Succeeded).await;
}

#[tokio::test]
async fn a_dependency_that_failed_before_submission_fails_the_job_at_once() {
    let h = Harness::new().await;
    let a = h.submit("a", json!({})).await;
    h.run(&a, 1, 1).await;
    h.wait_for(&a, JobStatus::Failed).await;
    let b = h.submit("b", after(&[&a])).await;
    let d = h.wait_for(&b, JobStatus::Failed).await;
    assert!(
        d.status_reason
            .as_deref()
            .unwrap()
            .starts_with(&format!("Dependent Job failed: {a}")),
        "{:?}",
        d.status_reason
    );
    h.settle().await;
    assert!(h.launches_of(&b).is_empty());
}

#[tokio::test]
async fn a_dependency_on_an_unknown_job_is_rejected_at_submission() {
    let h = Harness::new().await;
    let req = json!({
        "jobName": "orphan",
        "jobQueue": "default",
        "jobDefinition": "step",
        "dependsOn": [{"jobId": "00000000-0000-0000-0000-000000000000"}]
    });
    match h.try_call("SubmitJob", req).await {
        Err(BatchError::Client(msg)) => {
            assert!(msg.starts_with("dependsOn[0].jobId: no job"), "{msg}")
        }
        other => panic!("expected a ClientException, got {other:?}"),
    }
}
