//! Fair-share scheduling: on a queue with a scheduling policy, shares take turns by their
//! weighted usage; on a FIFO queue, jobs run in submission order.

use super::Harness;
use crate::model::JobStatus;
use serde_json::{Value, json};
use std::collections::HashMap;

/// A LOCAL environment `solo` of one vCPU (one `step` job at a time) and a queue `q` on it,
/// with a scheduling policy of `fairshare` (a `fairsharePolicy`) if given.
async fn one_vcpu_queue(h: &Harness, q: &str, fairshare: Option<Value>) {
    h.call(
        "CreateComputeEnvironment",
        json!({
            "computeEnvironmentName": "solo",
            "type": "MANAGED",
            "computeResources": {"type": "LOCAL", "maxvCpus": 1}
        }),
    )
    .await;
    let mut queue = json!({
        "jobQueueName": q,
        "priority": 1,
        "computeEnvironmentOrder": [{"order": 1, "computeEnvironment": "solo"}]
    });
    if let Some(fs) = fairshare {
        let created = h
            .call(
                "CreateSchedulingPolicy",
                json!({"name": format!("{q}-policy"), "fairsharePolicy": fs}),
            )
            .await;
        queue["schedulingPolicyArn"] = created["arn"].clone();
    }
    h.call("CreateJobQueue", queue).await;
}

/// A `fairsharePolicy` of `weights` (share identifier, weight factor).
fn policy(decay_seconds: i32, weights: &[(&str, f64)]) -> Value {
    let dist: Vec<Value> = weights
        .iter()
        .map(|(s, w)| json!({"shareIdentifier": s, "weightFactor": w}))
        .collect();
    json!({"shareDecaySeconds": decay_seconds, "shareDistribution": dist})
}

/// Submits `n` jobs of share `share` to queue `q`; maps each ID to its share.
async fn submit_share(
    h: &Harness,
    q: &str,
    share: &str,
    n: usize,
    into: &mut HashMap<String, String>,
) {
    for _ in 0..n {
        let id = h
            .submit(share, json!({"jobQueue": q, "shareIdentifier": share}))
            .await;
        into.insert(id, share.to_string());
    }
}

/// Runs the next `n` jobs the engine launches, each for `run_ms` of the clock; their IDs in
/// launch order.
async fn run_in_turn(h: &Harness, n: usize, run_ms: i64) -> Vec<String> {
    let mut order = Vec::new();
    for k in 0..n {
        let id = h.launches(k + 1).await[k].job_id.clone();
        h.started(&id, 1).await;
        // Started at this clock reading, not the next one.
        h.settle().await;
        h.advance(run_ms);
        h.exited(&id, 1, 0).await;
        h.wait_for(&id, JobStatus::Succeeded).await;
        order.push(id);
    }
    order
}

/// Submits one job of `share` and runs it alone for `ms`. The clock moves without waking the
/// engine, as real time does: no pass runs while nothing waits.
async fn run_alone(h: &Harness, share: &str, ms: i64) {
    let n = h.launches(0).await.len();
    h.submit(share, json!({"jobQueue": "fair", "shareIdentifier": share}))
        .await;
    let id = h.launches(n + 1).await[n].job_id.clone();
    h.started(&id, 1).await;
    h.settle().await;
    h.clock.advance(ms);
    h.exited(&id, 1, 0).await;
    h.wait_for(&id, JobStatus::Succeeded).await;
}

fn shares_of(order: &[String], share: &HashMap<String, String>) -> Vec<String> {
    order.iter().map(|id| share[id].clone()).collect()
}

#[tokio::test]
async fn equal_shares_take_turns_instead_of_first_come_first_served() {
    let h = Harness::new().await;
    one_vcpu_queue(&h, "fair", Some(policy(600, &[("a", 1.0), ("b", 1.0)]))).await;
    let mut share = HashMap::new();
    submit_share(&h, "fair", "a", 3, &mut share).await;
    submit_share(&h, "fair", "b", 3, &mut share).await;
    let order = run_in_turn(&h, 6, 10_000).await;
    assert_eq!(shares_of(&order, &share), ["a", "b", "a", "b", "a", "b"]);
}

#[tokio::test]
async fn a_share_with_a_larger_weight_factor_gets_fewer_turns() {
    let h = Harness::new().await;
    // Usage × weight decides the next turn; decay slow enough not to matter here.
    one_vcpu_queue(&h, "fair", Some(policy(604_800, &[("a", 1.0), ("b", 2.7)]))).await;
    let mut share = HashMap::new();
    submit_share(&h, "fair", "a", 6, &mut share).await;
    submit_share(&h, "fair", "b", 6, &mut share).await;
    let order = run_in_turn(&h, 12, 10_000).await;
    // b's turn comes once a's usage passes 2.7 × b's: after 1, 3 and 6 jobs of a.
    let expect = "a b a a b a a a b b b b";
    assert_eq!(shares_of(&order, &share).join(" "), expect);
}

#[tokio::test]
async fn a_fifo_queue_runs_jobs_in_submission_order() {
    let h = Harness::new().await;
    one_vcpu_queue(&h, "fifo", None).await;
    let mut submitted = Vec::new();
    for name in ["a", "a", "a", "b", "b", "b"] {
        submitted.push(h.submit(name, json!({"jobQueue": "fifo"})).await);
        // Distinct submission times: same-millisecond jobs are ordered by ID.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let order = run_in_turn(&h, 6, 10_000).await;
    assert_eq!(order, submitted);
}

/// Guards a bug the rewrite inherited: an attempt's vCPU-seconds were added to a total last
/// decayed at the previous pass, and the next pass decayed the fresh amount for the whole time
/// since, so a job that ran while nothing waited (no pass) was charged e^(-duration/decay) of
/// its usage.
#[tokio::test]
async fn a_share_is_charged_in_full_for_a_long_job_that_ran_while_nothing_waited() {
    let h = Harness::new().await;
    one_vcpu_queue(
        &h,
        "fair",
        Some(policy(600, &[("a", 1.0), ("b", 1.0), ("c", 1.0)])),
    )
    .await;
    run_alone(&h, "a", 10_000).await;
    run_alone(&h, "b", 1_000_000).await;
    // a's 600 vCPU-seconds end now; b's 1,000 ended 600 s ago (e^-1 of them left: 368).
    run_alone(&h, "a", 600_000).await;
    // Both shares wait behind a job of a third share; b used less and must go first.
    let mut next = HashMap::new();
    let blocker = h
        .submit("c", json!({"jobQueue": "fair", "shareIdentifier": "c"}))
        .await;
    h.launch_of(&blocker, 1).await;
    submit_share(&h, "fair", "a", 1, &mut next).await;
    submit_share(&h, "fair", "b", 1, &mut next).await;
    h.settle().await;
    h.started(&blocker, 1).await;
    h.exited(&blocker, 1, 0).await;
    let n = h.launches(0).await.len();
    let first = h.launches(n + 1).await[n].job_id.clone();
    assert_eq!(
        next[&first], "b",
        "a's long job was decayed as if it had ended long ago"
    );
}

/// GetJobQueueSnapshot's front as job IDs, and its body.
async fn front_of_queue(h: &Harness, q: &str) -> (Vec<String>, Value) {
    let snap = h.call("GetJobQueueSnapshot", json!({"jobQueue": q})).await;
    let ids = snap["frontOfQueue"]["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            let arn = j["jobArn"].as_str().unwrap();
            arn.rsplit_once("job/").unwrap().1.to_string()
        })
        .collect();
    (ids, snap)
}

#[tokio::test]
async fn the_queue_snapshot_lists_fair_share_jobs_in_the_order_they_start() {
    let h = Harness::new().await;
    one_vcpu_queue(&h, "fair", Some(policy(604_800, &[("a", 1.0), ("b", 2.7)]))).await;
    let mut share = HashMap::new();
    submit_share(&h, "fair", "a", 6, &mut share).await;
    submit_share(&h, "fair", "b", 6, &mut share).await;
    // The first job of a took the only vCPU as it was submitted; the rest wait.
    let first = h.launches(1).await[0].job_id.clone();
    h.settle().await;
    let (front, snap) = front_of_queue(&h, "fair").await;
    assert_eq!(front.len(), 11);
    assert!(!front.contains(&first));
    let u = &snap["queueUtilization"];
    assert_eq!(
        u["totalCapacityUsage"],
        json!([
            {"capacityUnit": "VCPU", "quantity": 1.0},
            {"capacityUnit": "MEMORY", "quantity": 64.0},
            {"capacityUnit": "GPU", "quantity": 0.0},
        ])
    );
    assert_eq!(
        u["fairshareUtilization"],
        json!({
            "activeShareCount": 1,
            "topCapacityUtilization": [
                {"shareIdentifier": "a", "capacityUsage": [{"capacityUnit": "VCPU", "quantity": 1.0}]}
            ]
        })
    );
    for j in snap["frontOfQueue"]["jobs"].as_array().unwrap() {
        assert!(j["earliestTimeAtPosition"].as_i64().unwrap() > 0);
    }

    let order = run_in_turn(&h, 12, 10_000).await;
    assert_eq!(order[0], first);
    assert_eq!(order[1..], front[..]);
    // Interleaved by weight, not by submission: the same order as the pass test above.
    assert_eq!(
        shares_of(&order, &share).join(" "),
        "a b a a b a a a b b b b"
    );
    let (front, snap) = front_of_queue(&h, "fair").await;
    assert!(front.is_empty());
    assert_eq!(
        snap["queueUtilization"]["fairshareUtilization"]["activeShareCount"],
        0
    );
}

#[tokio::test]
async fn the_queue_snapshot_of_a_fifo_queue_is_submission_order() {
    let h = Harness::new().await;
    one_vcpu_queue(&h, "fifo", None).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(
            h.submit(&format!("j{i}"), json!({"jobQueue": "fifo"}))
                .await,
        );
    }
    h.launches(1).await;
    h.settle().await;
    let (front, snap) = front_of_queue(&h, "fifo").await;
    assert!(
        snap["queueUtilization"]
            .get("fairshareUtilization")
            .is_none()
    );
    let order = run_in_turn(&h, 4, 1_000).await;
    assert_eq!(front, order[1..]);
    // Submission order, as far as the clock tells submissions apart (then by ID).
    let created: Vec<i64> = {
        let mut v = Vec::new();
        for id in &order {
            v.push(h.describe(id).await.created_at);
        }
        v
    };
    assert!(created.windows(2).all(|w| w[0] <= w[1]), "{created:?}");
    assert_eq!(
        order.iter().collect::<std::collections::BTreeSet<_>>(),
        ids.iter().collect()
    );
}
