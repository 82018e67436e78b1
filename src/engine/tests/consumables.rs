//! Consumable resources: capacity shared by every queue and environment, held from STARTING to
//! the end of each attempt, and exact counts across retries, terminations, Spot interruptions
//! and restarts.

use super::{Harness, PATIENCE};
use crate::compute::{RuntimeEvent, StopSignal};
use crate::engine::EngineConfig;
use crate::model::JobStatus;
use serde_json::{Value, json};
use std::time::Duration;

async fn restart(h: Harness) -> Harness {
    let (dir, clock) = h.shut_down().await;
    Harness::open(dir, EngineConfig::default(), clock).await
}

/// A resource `name` of `total` and type `kind`, and a definition `def` whose jobs need
/// `quantity` of it.
async fn licence(h: &Harness, name: &str, total: i64, kind: &str, def: &str, quantity: i64) {
    h.call(
        "CreateConsumableResource",
        json!({"consumableResourceName": name, "totalQuantity": total, "resourceType": kind}),
    )
    .await;
    h.register(
        def,
        json!({"consumableResourceProperties": {"consumableResourceList": [
            {"consumableResource": name, "quantity": quantity}
        ]}}),
    )
    .await;
}

/// (total, in use, available) as DescribeConsumableResource answers.
async fn counts(h: &Harness, name: &str) -> (i64, i64, i64) {
    let d: Value = h
        .call(
            "DescribeConsumableResource",
            json!({"consumableResource": name}),
        )
        .await;
    let n = |k: &str| d[k].as_i64().unwrap_or_else(|| panic!("{k} in {d}"));
    (
        n("totalQuantity"),
        n("inUseQuantity"),
        n("availableQuantity"),
    )
}

/// Lets the engine pass with reasons (they are given every 500 ms of the clock).
async fn reasons_pass(h: &Harness) {
    h.advance(600);
    h.settle().await;
}

#[tokio::test]
async fn a_replenishable_resource_limits_running_jobs_and_comes_back_at_each_end() {
    let h = Harness::new().await;
    licence(&h, "licence", 2, "REPLENISHABLE", "lic", 1).await;
    let ids = [
        h.submit("a", json!({"jobDefinition": "lic"})).await,
        h.submit("b", json!({"jobDefinition": "lic"})).await,
        h.submit("c", json!({"jobDefinition": "lic"})).await,
    ];
    h.launches(2).await;
    reasons_pass(&h).await;
    // The local environment has 4 vCPUs: only the licence holds the third job back.
    assert_eq!(h.rt.started.lock().unwrap().len(), 2);
    let c = h.describe(&ids[2]).await;
    assert_eq!(c.status, JobStatus::Runnable);
    let reason = c.status_reason.unwrap_or_default();
    assert!(
        reason.starts_with("RESOURCE:WAITING_FOR_CONSUMABLE_RESOURCE")
            && reason.contains("licence"),
        "{reason}"
    );
    assert_eq!(counts(&h, "licence").await, (2, 2, 0));
    h.started(&ids[0], 1).await;
    h.exited(&ids[0], 1, 0).await;
    h.run(&ids[2], 1, 0).await;
    h.run(&ids[1], 1, 0).await;
    for id in &ids {
        h.wait_for(id, JobStatus::Succeeded).await;
    }
    h.settle().await;
    assert_eq!(counts(&h, "licence").await, (2, 0, 2));
    let d = h.describe(&ids[0]).await;
    assert_eq!(
        d.consumable_resource_properties
            .unwrap()
            .needs()
            .collect::<Vec<_>>(),
        vec![("licence", 1)]
    );
}

#[tokio::test]
async fn retries_terminations_and_spot_interruptions_give_the_quantity_back() {
    let h = Harness::new().await;
    licence(&h, "licence", 3, "REPLENISHABLE", "lic", 1).await;
    let retried = h
        .submit(
            "retried",
            json!({"jobDefinition": "lic", "retryStrategy": {"attempts": 2}}),
        )
        .await;
    let terminated = h
        .submit("terminated", json!({"jobDefinition": "lic"}))
        .await;
    let interrupted = h
        .submit("interrupted", json!({"jobDefinition": "lic"}))
        .await;
    h.running(&retried, 1).await;
    h.running(&terminated, 1).await;
    h.running(&interrupted, 1).await;
    h.settle().await;
    assert_eq!(counts(&h, "licence").await, (3, 3, 0));

    // A failed attempt that is retried gives its licence back, and the retry takes one again.
    h.exited(&retried, 1, 1).await;
    h.running(&retried, 2).await;
    h.settle().await;
    assert_eq!(counts(&h, "licence").await, (3, 3, 0));

    h.call(
        "TerminateJob",
        json!({"jobId": terminated, "reason": "enough"}),
    )
    .await;
    h.exited(&terminated, 1, 137).await;
    h.wait_for(&terminated, JobStatus::Failed).await;
    h.event(RuntimeEvent::Interrupted {
        job_id: interrupted.clone(),
        attempt: 1,
        reason: "Host EC2 (instance i-1) terminated.".into(),
    })
    .await;
    h.settle().await;
    // The interrupted job went back to RUNNABLE and may already run again on its licence.
    let mut held = 0;
    for id in [&retried, &interrupted] {
        held += i64::from(h.describe(id).await.status.is_active());
    }
    let (total, in_use, available) = counts(&h, "licence").await;
    assert_eq!((total, in_use, available), (3, held, 3 - held));
    h.exited(&retried, 2, 0).await;
    h.running(&interrupted, 2).await;
    h.exited(&interrupted, 2, 0).await;
    h.wait_for(&retried, JobStatus::Succeeded).await;
    h.wait_for(&interrupted, JobStatus::Succeeded).await;
    h.settle().await;
    assert_eq!(counts(&h, "licence").await, (3, 0, 3));
}

#[tokio::test]
async fn in_use_is_recomputed_from_the_running_jobs_after_a_restart() {
    let h = Harness::new().await;
    licence(&h, "licence", 3, "REPLENISHABLE", "lic", 2).await;
    let a = h.submit("a", json!({"jobDefinition": "lic"})).await;
    let b = h.submit("b", json!({"jobDefinition": "lic"})).await;
    h.running(&a, 1).await;
    h.settle().await;
    assert_eq!(counts(&h, "licence").await, (3, 2, 1));
    let h = restart(h).await;
    assert_eq!(counts(&h, "licence").await, (3, 2, 1));
    assert_eq!(h.describe(&b).await.status, JobStatus::Runnable);
    h.exited(&a, 1, 0).await;
    h.run(&b, 1, 0).await;
    h.wait_for(&b, JobStatus::Succeeded).await;
    h.settle().await;
    assert_eq!(counts(&h, "licence").await, (3, 0, 3));
}

#[tokio::test]
async fn a_non_replenishable_resource_is_consumed_for_good_and_stays_consumed_after_a_restart() {
    let h = Harness::new().await;
    licence(&h, "tokens", 5, "NON_REPLENISHABLE", "spend", 2).await;
    let a = h.submit("a", json!({"jobDefinition": "spend"})).await;
    h.running(&a, 1).await;
    h.settle().await;
    assert_eq!(counts(&h, "tokens").await, (5, 2, 3));
    h.exited(&a, 1, 0).await;
    h.wait_for(&a, JobStatus::Succeeded).await;
    h.settle().await;
    assert_eq!(counts(&h, "tokens").await, (3, 0, 3));
    let b = h.submit("b", json!({"jobDefinition": "spend"})).await;
    h.run(&b, 1, 0).await;
    h.wait_for(&b, JobStatus::Succeeded).await;
    // One token left: a job that needs two waits, and says for what.
    let c = h.submit("c", json!({"jobDefinition": "spend"})).await;
    reasons_pass(&h).await;
    assert_eq!(counts(&h, "tokens").await, (1, 0, 1));
    let h = restart(h).await;
    assert_eq!(counts(&h, "tokens").await, (1, 0, 1));
    reasons_pass(&h).await;
    let d = h.describe(&c).await;
    assert_eq!(d.status, JobStatus::Runnable);
    assert!(
        d.status_reason
            .as_deref()
            .unwrap_or_default()
            .contains("tokens"),
        "{:?}",
        d.status_reason
    );
    // Topping it up lets the job start.
    h.call(
        "UpdateConsumableResource",
        json!({"consumableResource": "tokens", "operation": "ADD", "quantity": 1}),
    )
    .await;
    h.run(&c, 1, 0).await;
    h.wait_for(&c, JobStatus::Succeeded).await;
    h.settle().await;
    assert_eq!(counts(&h, "tokens").await, (0, 0, 0));
}

#[tokio::test]
async fn submit_overrides_the_definition_and_bad_properties_name_the_field() {
    let h = Harness::new().await;
    licence(&h, "licence", 4, "REPLENISHABLE", "lic", 1).await;
    let id = h
        .submit(
            "big",
            json!({"jobDefinition": "lic", "consumableResourcePropertiesOverride": {
                "consumableResourceList": [{"consumableResource":
                    "arn:aws:batch:us-east-1:000000000000:consumable-resource/licence", "quantity": 3}]
            }}),
        )
        .await;
    h.running(&id, 1).await;
    h.settle().await;
    assert_eq!(counts(&h, "licence").await, (4, 3, 1));
    for (body, field) in [
        (
            json!({"consumableResource": "nope", "quantity": 1}),
            "consumableResourceList[0].consumableResource",
        ),
        (
            json!({"consumableResource": "licence", "quantity": 0}),
            "consumableResourceList[0].quantity",
        ),
        (
            json!({"consumableResource": "licence"}),
            "consumableResourceList[0].quantity",
        ),
    ] {
        let e = h
            .try_call(
                "SubmitJob",
                json!({"jobName": "x", "jobQueue": "default", "jobDefinition": "step",
                       "consumableResourcePropertiesOverride": {"consumableResourceList": [body]}}),
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!("consumableResourcePropertiesOverride.{field}:")),
            "{e}"
        );
    }
    let e = h
        .try_call(
            "DeleteConsumableResource",
            json!({"consumableResource": "licence"}),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("consumableResource:"), "{e}");
}

#[tokio::test]
async fn an_attempt_that_never_started_consumes_nothing() {
    let h = Harness::new().await;
    licence(&h, "tokens", 4, "NON_REPLENISHABLE", "spend", 3).await;
    let a = h.submit("a", json!({"jobDefinition": "spend"})).await;
    h.launch_of(&a, 1).await;
    h.event(RuntimeEvent::NotStarted {
        job_id: a.clone(),
        attempt: 1,
        reason: "no room on the instance after all".into(),
    })
    .await;
    // Placed again (still attempt 1, which never ran), then run for real.
    h.wait_until_launched_twice(&a).await;
    h.settle().await;
    assert_eq!(counts(&h, "tokens").await, (4, 3, 1));
    h.started(&a, 1).await;
    h.exited(&a, 1, 0).await;
    h.wait_for(&a, JobStatus::Succeeded).await;
    h.settle().await;
    assert_eq!(counts(&h, "tokens").await, (1, 0, 1));
}

impl Harness {
    async fn wait_until_launched_twice(&self, id: &str) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.launches_of(id).len() < 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{id} was not launched again"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[tokio::test]
async fn array_children_each_hold_the_quantity_and_a_deleted_resource_is_named_while_jobs_wait() {
    let h = Harness::new().await;
    licence(&h, "licence", 1, "REPLENISHABLE", "lic", 1).await;
    let parent = h
        .submit(
            "arr",
            json!({"jobDefinition": "lic", "arrayProperties": {"size": 3}}),
        )
        .await;
    let first = h.launches(1).await[0].job_id.clone();
    reasons_pass(&h).await;
    assert_eq!(
        h.rt.started.lock().unwrap().len(),
        1,
        "one licence, one child"
    );
    assert_eq!(counts(&h, "licence").await, (1, 1, 0));
    h.run(&first, 1, 0).await;
    let second = h.launches(2).await[1].job_id.clone();
    h.run(&second, 1, 0).await;
    let third = h.launches(3).await[2].job_id.clone();
    h.run(&third, 1, 0).await;
    h.wait_for(&parent, JobStatus::Succeeded).await;
    h.settle().await;
    assert_eq!(counts(&h, "licence").await, (1, 0, 1));

    // Deleted while a job waits for it: the job says so, and runs once it exists again.
    h.call(
        "UpdateConsumableResource",
        json!({"consumableResource": "licence", "operation": "SET", "quantity": 0}),
    )
    .await;
    let waiting = h.submit("w", json!({"jobDefinition": "lic"})).await;
    h.call(
        "DeleteConsumableResource",
        json!({"consumableResource": "licence"}),
    )
    .await;
    // SubmitJob now refuses the definition: its resource is gone.
    let e = h
        .try_call(
            "SubmitJob",
            json!({"jobName": "x", "jobQueue": "default", "jobDefinition": "lic"}),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("jobDefinition.consumableResourceList[0].consumableResource:"),
        "{e}"
    );
    reasons_pass(&h).await;
    let d = h.describe(&waiting).await;
    assert_eq!(d.status, JobStatus::Runnable);
    let reason = d.status_reason.unwrap_or_default();
    assert!(
        reason.starts_with("MISCONFIGURATION:CONSUMABLE_RESOURCE_NOT_FOUND")
            && reason.contains("licence"),
        "{reason}"
    );
    h.call(
        "CreateConsumableResource",
        json!({"consumableResourceName": "licence", "totalQuantity": 1}),
    )
    .await;
    h.run(&waiting, 1, 0).await;
    h.wait_for(&waiting, JobStatus::Succeeded).await;
}

#[tokio::test]
async fn a_timed_out_attempt_gives_its_quantity_back() {
    let h = Harness::new().await;
    licence(&h, "licence", 1, "REPLENISHABLE", "lic", 1).await;
    let slow = h
        .submit(
            "slow",
            json!({"jobDefinition": "lic", "timeout": {"attemptDurationSeconds": 60}}),
        )
        .await;
    let next = h.submit("next", json!({"jobDefinition": "lic"})).await;
    h.running(&slow, 1).await;
    h.advance(60_000);
    h.signalled(&slow, 1, StopSignal::Term).await;
    assert_eq!(counts(&h, "licence").await, (1, 1, 0));
    h.exited(&slow, 1, 143).await;
    h.wait_for(&slow, JobStatus::Failed).await;
    h.run(&next, 1, 0).await;
    h.wait_for(&next, JobStatus::Succeeded).await;
    h.settle().await;
    assert_eq!(counts(&h, "licence").await, (1, 0, 1));
}
