//! Array jobs: children run, the parent rolls up their outcome; SEQUENTIAL and N_TO_N order them.

use super::{Harness, env_var};
use crate::model::JobStatus;
use serde_json::json;

async fn submit_array(h: &Harness, name: &str, size: i32, extra: serde_json::Value) -> String {
    let mut req = json!({"arrayProperties": {"size": size}});
    for (k, v) in extra.as_object().unwrap() {
        req[k] = v.clone();
    }
    h.submit(name, req).await
}

/// Arrays `a` and `b` of two children, `b` N_TO_N after `a`.
async fn n_to_n_pair(h: &Harness) -> (String, String) {
    let a = submit_array(h, "a", 2, json!({})).await;
    let n_to_n = json!({"dependsOn": [{"jobId": a, "type": "N_TO_N"}]});
    (a.clone(), submit_array(h, "b", 2, n_to_n).await)
}

fn sequential() -> serde_json::Value {
    json!({"dependsOn": [{"type": "SEQUENTIAL"}]})
}

fn child(parent: &str, i: i32) -> String {
    format!("{parent}:{i}")
}

#[tokio::test]
async fn every_child_runs_with_its_index_and_the_parent_succeeds_with_them() {
    let h = Harness::new().await;
    let p = submit_array(&h, "fan", 3, json!({})).await;
    for i in 0..3 {
        let spec = h.launch_of(&child(&p, i), 1).await;
        assert_eq!(
            env_var(&spec, "AWS_BATCH_JOB_ARRAY_INDEX"),
            Some(i.to_string())
        );
    }
    assert!(h.launches_of(&p).is_empty(), "a parent never runs itself");
    for i in 0..3 {
        h.run(&child(&p, i), 1, 0).await;
    }
    h.wait_for(&p, JobStatus::Succeeded).await;
    for i in 0..3 {
        assert_eq!(h.describe(&child(&p, i)).await.status, JobStatus::Succeeded);
    }
}

#[tokio::test]
async fn the_parent_fails_with_the_count_of_failed_children() {
    let h = Harness::new().await;
    let p = submit_array(&h, "fan", 3, json!({})).await;
    h.run(&child(&p, 0), 1, 0).await;
    h.run(&child(&p, 1), 1, 1).await;
    h.wait_for(&child(&p, 1), JobStatus::Failed).await;
    // Not before its last child ends.
    assert!(!h.describe(&p).await.status.is_final());
    h.run(&child(&p, 2), 1, 0).await;
    let d = h.wait_for(&p, JobStatus::Failed).await;
    assert_eq!(d.status_reason.as_deref(), Some("1 of 3 child jobs failed"));
}

#[tokio::test]
async fn a_sequential_child_starts_only_after_the_one_before_it_succeeded() {
    let h = Harness::new().await;
    let p = submit_array(&h, "chain", 3, sequential()).await;
    for i in 0..3 {
        h.launch_of(&child(&p, i), 1).await;
        h.settle().await;
        // Room for all three, yet only child i has been launched.
        for later in i + 1..3 {
            assert!(
                h.launches_of(&child(&p, later)).is_empty(),
                "child {later} ran early"
            );
            assert_eq!(
                h.describe(&child(&p, later)).await.status,
                JobStatus::Pending
            );
        }
        h.run(&child(&p, i), 1, 0).await;
    }
    h.wait_for(&p, JobStatus::Succeeded).await;
}

#[tokio::test]
async fn a_failed_sequential_child_fails_the_ones_after_it() {
    let h = Harness::new().await;
    let p = submit_array(&h, "chain", 3, sequential()).await;
    h.run(&child(&p, 0), 1, 1).await;
    for i in 1..3 {
        let d = h.wait_for(&child(&p, i), JobStatus::Failed).await;
        assert!(
            d.status_reason
                .as_deref()
                .unwrap()
                .starts_with("Dependent Job failed"),
            "{:?}",
            d.status_reason
        );
        assert!(h.launches_of(&child(&p, i)).is_empty());
    }
    let d = h.wait_for(&p, JobStatus::Failed).await;
    assert_eq!(d.status_reason.as_deref(), Some("3 of 3 child jobs failed"));
}

#[tokio::test]
async fn an_n_to_n_child_waits_for_the_same_index_only() {
    let h = Harness::new().await;
    let (a, b) = n_to_n_pair(&h).await;
    h.launch_of(&child(&a, 0), 1).await;
    // A's child 1 finishes first: B's child 1 goes, B's child 0 keeps waiting for A's child 0.
    h.run(&child(&a, 1), 1, 0).await;
    let spec = h.launch_of(&child(&b, 1), 1).await;
    assert_eq!(
        env_var(&spec, "AWS_BATCH_JOB_ARRAY_INDEX").as_deref(),
        Some("1")
    );
    h.settle().await;
    assert!(h.launches_of(&child(&b, 0)).is_empty());
    assert_eq!(h.describe(&child(&b, 0)).await.status, JobStatus::Pending);
    h.run(&child(&a, 0), 1, 0).await;
    h.run(&child(&b, 0), 1, 0).await;
    h.run(&child(&b, 1), 1, 0).await;
    h.wait_for(&a, JobStatus::Succeeded).await;
    h.wait_for(&b, JobStatus::Succeeded).await;
}

#[tokio::test]
async fn an_n_to_n_child_fails_when_its_counterpart_fails() {
    let h = Harness::new().await;
    let (a, b) = n_to_n_pair(&h).await;
    h.run(&child(&a, 0), 1, 1).await;
    let d = h.wait_for(&child(&b, 0), JobStatus::Failed).await;
    assert_eq!(
        d.status_reason,
        Some(format!(
            "Dependent Job failed: {} did not succeed",
            child(&a, 0)
        ))
    );
    // The other pair is unaffected.
    h.run(&child(&a, 1), 1, 0).await;
    h.run(&child(&b, 1), 1, 0).await;
    let d = h.wait_for(&b, JobStatus::Failed).await;
    assert_eq!(d.status_reason.as_deref(), Some("1 of 2 child jobs failed"));
}
