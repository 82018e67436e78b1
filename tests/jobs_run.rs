//! Jobs really run: the engine, the scheduler and the LOCAL runtime, end to end through the AWS SDK.
//! Each test runs against host processes; `docker_*` tests run the same shapes as containers.

mod common;

use aws_sdk_batch::types::*;
use common::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Starts a server whose LOCAL runtime is `runtime`, with a short kill grace so terminate and
/// timeout tests do not wait AWS's 30 s.
pub fn server(runtime: &str, extra: &[&str]) -> Server {
    let mut args = vec![
        "--local-runtime".to_string(),
        runtime.to_string(),
        "--kill-grace-seconds".into(),
        "2".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    Server::start_with(ServerOptions {
        extra_args: args,
        dispatch: true,
        ..Default::default()
    })
}

pub async fn register(
    client: &aws_sdk_batch::Client,
    name: &str,
    command: &[&str],
    vcpus: &str,
    retry: Option<RetryStrategy>,
) {
    client
        .register_job_definition()
        .job_definition_name(name)
        .r#type(JobDefinitionType::Container)
        .container_properties(
            ContainerProperties::builder()
                .image("flotilla-test/busybox:latest")
                .set_command(Some(command.iter().map(|s| s.to_string()).collect()))
                .resource_requirements(
                    ResourceRequirement::builder()
                        .r#type(ResourceType::Vcpu)
                        .value(vcpus)
                        .build(),
                )
                .resource_requirements(
                    ResourceRequirement::builder()
                        .r#type(ResourceType::Memory)
                        .value("32")
                        .build(),
                )
                .build(),
        )
        .set_retry_strategy(retry)
        .send()
        .await
        .expect("register");
}

pub async fn submit(client: &aws_sdk_batch::Client, queue: &str, def: &str) -> String {
    client
        .submit_job()
        .job_name(def)
        .job_queue(queue)
        .job_definition(def)
        .send()
        .await
        .expect("submit")
        .job_id
        .expect("jobId")
}

fn dep(id: &str) -> JobDependency {
    JobDependency::builder().job_id(id).build()
}

#[tokio::test]
async fn a_dag_runs_in_dependency_order() {
    let s = server("process", &[]);
    let c = s.client();
    register(&c, "ok", &["sh", "-c", "sleep 0.3"], "1", None).await;
    register(&c, "boom", &["sh", "-c", "exit 7"], "1", None).await;
    let a = submit(&c, "default", "ok").await;
    let b = c
        .submit_job()
        .job_name("b")
        .job_queue("default")
        .job_definition("ok")
        .depends_on(dep(&a))
        .send()
        .await
        .expect("b")
        .job_id
        .expect("id");
    let d = c
        .submit_job()
        .job_name("d")
        .job_queue("default")
        .job_definition("ok")
        .depends_on(dep(&a))
        .depends_on(dep(&b))
        .send()
        .await
        .expect("d")
        .job_id
        .expect("id");
    // A failing branch fails what depends on it, transitively, naming the failed job.
    let f = submit(&c, "default", "boom").await;
    let g = c
        .submit_job()
        .job_name("g")
        .job_queue("default")
        .job_definition("ok")
        .depends_on(dep(&f))
        .send()
        .await
        .expect("g")
        .job_id
        .expect("id");
    let h = c
        .submit_job()
        .job_name("h")
        .job_queue("default")
        .job_definition("ok")
        .depends_on(dep(&g))
        .send()
        .await
        .expect("h")
        .job_id
        .expect("id");

    let jd = wait_final(&c, &d, 60).await;
    let ja = describe_job(&c, &a).await;
    let jb = describe_job(&c, &b).await;
    assert_eq!(jd.status, Some(JobStatus::Succeeded));
    assert_eq!(jb.status, Some(JobStatus::Succeeded));
    // A dependent starts only after its dependencies stopped.
    assert!(jb.started_at.unwrap_or(0) >= ja.stopped_at.unwrap_or(i64::MAX));
    assert!(jd.started_at.unwrap_or(0) >= jb.stopped_at.unwrap_or(i64::MAX));

    let jf = wait_final(&c, &f, 60).await;
    assert_eq!(jf.status, Some(JobStatus::Failed));
    assert_eq!(jf.container.as_ref().and_then(|c| c.exit_code), Some(7));
    let jh = wait_final(&c, &h, 60).await;
    let jg = describe_job(&c, &g).await;
    assert_eq!(jg.status, Some(JobStatus::Failed));
    assert!(
        jg.status_reason.as_deref().unwrap_or("").contains(&f),
        "{:?}",
        jg.status_reason
    );
    assert_eq!(jh.status, Some(JobStatus::Failed));
    assert!(
        jh.status_reason.as_deref().unwrap_or("").contains(&g),
        "{:?}",
        jh.status_reason
    );
    assert!(
        jg.attempts.unwrap_or_default().is_empty(),
        "a job whose dependency failed never runs"
    );
}

#[tokio::test]
async fn n_to_n_and_sequential_arrays() {
    let s = server("process", &[]);
    let c = s.client();
    // Each child records when it ran; the N_TO_N child i must run after the first array's child i.
    let dir = job_writable_tempdir();
    let out = dir.path().display().to_string();
    register(
        &c,
        "stamp",
        &[
            "sh",
            "-c",
            &format!("date +%s%N > {out}/$AWS_BATCH_JOB_ID; sleep 0.1"),
        ],
        "1",
        None,
    )
    .await;
    let first = c
        .submit_job()
        .job_name("first")
        .job_queue("default")
        .job_definition("stamp")
        .array_properties(ArrayProperties::builder().size(4).build())
        .send()
        .await
        .expect("first")
        .job_id
        .expect("id");
    let second = c
        .submit_job()
        .job_name("second")
        .job_queue("default")
        .job_definition("stamp")
        .array_properties(ArrayProperties::builder().size(4).build())
        .depends_on(
            JobDependency::builder()
                .job_id(&first)
                .r#type(ArrayJobDependency::NToN)
                .build(),
        )
        .send()
        .await
        .expect("second")
        .job_id
        .expect("id");
    let seq = c
        .submit_job()
        .job_name("seq")
        .job_queue("default")
        .job_definition("stamp")
        .array_properties(ArrayProperties::builder().size(5).build())
        .depends_on(
            JobDependency::builder()
                .r#type(ArrayJobDependency::Sequential)
                .build(),
        )
        .send()
        .await
        .expect("seq")
        .job_id
        .expect("id");
    for id in [&first, &second, &seq] {
        let j = wait_final(&c, id, 90).await;
        assert_eq!(
            j.status,
            Some(JobStatus::Succeeded),
            "{id}: {:?}",
            j.status_reason
        );
        let summary = j
            .array_properties
            .and_then(|a| a.status_summary)
            .unwrap_or_default();
        let size = if id == &seq { 5 } else { 4 };
        assert_eq!(summary.get("SUCCEEDED"), Some(&size), "{summary:?}");
    }
    let stamp = |id: String| -> u128 {
        std::fs::read_to_string(dir.path().join(&id))
            .unwrap_or_else(|e| panic!("{id} did not run: {e}"))
            .trim()
            .parse()
            .expect("nanoseconds")
    };
    for i in 0..4 {
        let a = describe_job(&c, &format!("{first}:{i}")).await;
        let b = describe_job(&c, &format!("{second}:{i}")).await;
        assert!(
            b.started_at.unwrap_or(0) >= a.stopped_at.unwrap_or(i64::MAX),
            "child {i}"
        );
        assert!(stamp(format!("{second}:{i}")) > stamp(format!("{first}:{i}")));
    }
    for i in 1..5 {
        assert!(
            stamp(format!("{seq}:{i}")) > stamp(format!("{seq}:{}", i - 1)),
            "sequential child {i}"
        );
    }
}

fn rule(
    action: RetryAction,
    code: Option<&str>,
    reason: Option<&str>,
    status: Option<&str>,
) -> EvaluateOnExit {
    EvaluateOnExit::builder()
        .action(action)
        .set_on_exit_code(code.map(String::from))
        .set_on_reason(reason.map(String::from))
        .set_on_status_reason(status.map(String::from))
        .build()
}

#[tokio::test]
async fn retries_follow_evaluate_on_exit() {
    let s = server("process", &[]);
    let c = s.client();
    let strategy = |rules: Vec<EvaluateOnExit>| {
        RetryStrategy::builder()
            .attempts(3)
            .set_evaluate_on_exit(Some(rules))
            .build()
    };
    // No rule matches → retried until attempts run out.
    register(
        &c,
        "always3",
        &["sh", "-c", "exit 3"],
        "1",
        Some(strategy(vec![rule(
            RetryAction::Exit,
            Some("4"),
            None,
            None,
        )])),
    )
    .await;
    // onExitCode glob → EXIT at once.
    register(
        &c,
        "exit-on-1x",
        &["sh", "-c", "exit 13"],
        "1",
        Some(strategy(vec![rule(
            RetryAction::Exit,
            Some("1*"),
            None,
            None,
        )])),
    )
    .await;
    // onStatusReason → RETRY; the job succeeds on its second attempt (AWS_BATCH_JOB_ATTEMPT).
    register(
        &c,
        "second-time",
        &["sh", "-c", "test \"$AWS_BATCH_JOB_ATTEMPT\" = 2"],
        "1",
        Some(strategy(vec![rule(
            RetryAction::Retry,
            None,
            None,
            Some("Essential container*"),
        )])),
    )
    .await;
    // onReason (the container reason) for a command that cannot start → EXIT.
    register(
        &c,
        "cannot-start",
        &["/no/such/binary"],
        "1",
        Some(strategy(vec![rule(
            RetryAction::Exit,
            None,
            Some("CannotStart*"),
            None,
        )])),
    )
    .await;

    let j = wait_final(&c, &submit(&c, "default", "always3").await, 60).await;
    assert_eq!(j.status, Some(JobStatus::Failed));
    assert_eq!(j.attempts.as_ref().map(|a| a.len()), Some(3));
    assert!(
        j.attempts.unwrap_or_default().iter().all(|a| a
            .container
            .as_ref()
            .and_then(|c| c.exit_code)
            == Some(3))
    );

    let j = wait_final(&c, &submit(&c, "default", "exit-on-1x").await, 60).await;
    assert_eq!(j.status, Some(JobStatus::Failed));
    assert_eq!(j.attempts.map(|a| a.len()), Some(1));

    let j = wait_final(&c, &submit(&c, "default", "second-time").await, 60).await;
    assert_eq!(
        j.status,
        Some(JobStatus::Succeeded),
        "{:?}",
        j.status_reason
    );
    assert_eq!(j.attempts.map(|a| a.len()), Some(2));

    let j = wait_final(&c, &submit(&c, "default", "cannot-start").await, 60).await;
    assert_eq!(j.status, Some(JobStatus::Failed));
    let attempts = j.attempts.unwrap_or_default();
    assert_eq!(attempts.len(), 1);
    assert!(
        attempts[0]
            .container
            .as_ref()
            .and_then(|c| c.reason.as_deref())
            .unwrap_or("")
            .starts_with("CannotStart")
    );
}

#[tokio::test]
async fn timeout_stops_the_attempt_and_does_not_retry() {
    let s = server("process", &[]);
    let c = s.client();
    register(
        &c,
        "sleeper",
        &["sleep", "600"],
        "1",
        Some(RetryStrategy::builder().attempts(3).build()),
    )
    .await;
    let id = c
        .submit_job()
        .job_name("t")
        .job_queue("default")
        .job_definition("sleeper")
        .timeout(JobTimeout::builder().attempt_duration_seconds(60).build())
        .send()
        .await
        .expect("submit")
        .job_id
        .expect("id");
    let j = wait_final(&c, &id, 120).await;
    assert_eq!(j.status, Some(JobStatus::Failed));
    assert_eq!(
        j.status_reason.as_deref(),
        Some("Job attempt duration exceeded timeout")
    );
    let attempts = j.attempts.unwrap_or_default();
    assert_eq!(attempts.len(), 1, "a timed-out job is not retried");
    let ran = attempts[0].stopped_at.unwrap_or(0) - attempts[0].started_at.unwrap_or(0);
    assert!((59_000..90_000).contains(&ran), "ran {ran} ms");
    // SIGTERM → 143.
    assert_eq!(
        attempts[0].container.as_ref().and_then(|c| c.exit_code),
        Some(143)
    );
}

#[tokio::test]
async fn cancel_and_terminate_in_every_state() {
    let s = server("process", &[]);
    let c = s.client();
    register(
        &c,
        "long",
        &["sleep", "600"],
        "1",
        Some(RetryStrategy::builder().attempts(5).build()),
    )
    .await;
    // A job that holds every vCPU keeps the next ones RUNNABLE.
    register(&c, "hog", &["sleep", "600"], "64", None).await;
    c.update_compute_environment()
        .compute_environment("local")
        .compute_resources(ComputeResourceUpdate::builder().maxv_cpus(64).build())
        .send()
        .await
        .expect("grow local");
    let hog = submit(&c, "default", "hog").await;
    wait_for(&c, &hog, &[JobStatus::Running], 30).await;
    let runnable = submit(&c, "default", "long").await;
    let pending = c
        .submit_job()
        .job_name("p")
        .job_queue("default")
        .job_definition("long")
        .depends_on(dep(&runnable))
        .send()
        .await
        .expect("p")
        .job_id
        .expect("id");
    assert_eq!(
        describe_job(&c, &runnable).await.status,
        Some(JobStatus::Runnable)
    );
    assert_eq!(
        describe_job(&c, &pending).await.status,
        Some(JobStatus::Pending)
    );

    // CancelJob on PENDING and RUNNABLE: FAILED with the reason, never retried.
    c.cancel_job()
        .job_id(&pending)
        .reason("not needed")
        .send()
        .await
        .expect("cancel pending");
    let p = describe_job(&c, &pending).await;
    assert_eq!(p.status, Some(JobStatus::Failed));
    assert_eq!(p.status_reason.as_deref(), Some("not needed"));
    assert_eq!(p.is_cancelled, Some(true));
    c.cancel_job()
        .job_id(&runnable)
        .reason("changed my mind")
        .send()
        .await
        .expect("cancel runnable");
    assert_eq!(
        describe_job(&c, &runnable).await.status,
        Some(JobStatus::Failed)
    );

    // CancelJob on RUNNING does nothing; TerminateJob stops it and it is not retried.
    c.cancel_job()
        .job_id(&hog)
        .reason("no effect")
        .send()
        .await
        .expect("cancel running");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        describe_job(&c, &hog).await.status,
        Some(JobStatus::Running)
    );
    c.terminate_job()
        .job_id(&hog)
        .reason("operator stop")
        .send()
        .await
        .expect("terminate");
    let h = wait_final(&c, &hog, 30).await;
    assert_eq!(h.status, Some(JobStatus::Failed));
    assert_eq!(h.status_reason.as_deref(), Some("operator stop"));
    assert_eq!(h.attempts.map(|a| a.len()), Some(1));

    // Terminating a RUNNABLE job works like cancel; finished jobs are left alone.
    let r2 = submit(&c, "default", "hog").await;
    let r3 = submit(&c, "default", "hog").await;
    wait_for(&c, &r2, &[JobStatus::Running], 30).await;
    c.terminate_job()
        .job_id(&r3)
        .reason("never mind")
        .send()
        .await
        .expect("terminate runnable");
    let j3 = describe_job(&c, &r3).await;
    assert_eq!(
        (j3.status, j3.is_terminated),
        (Some(JobStatus::Failed), Some(true))
    );
    c.terminate_job()
        .job_id(&r2)
        .reason("done")
        .send()
        .await
        .expect("terminate r2");
    wait_final(&c, &r2, 30).await;
    c.cancel_job()
        .job_id(&r2)
        .reason("again")
        .send()
        .await
        .expect("cancel finished job");
    assert_eq!(
        describe_job(&c, &r2).await.status_reason.as_deref(),
        Some("done")
    );
}

#[tokio::test]
async fn parameters_and_environment_reach_the_job() {
    let s = server("process", &[]);
    let c = s.client();
    let dir = job_writable_tempdir();
    let out = dir.path().join("env");
    c.register_job_definition()
        .job_definition_name("env")
        .r#type(JobDefinitionType::Container)
        .parameters("word", "default-word")
        .container_properties(
            ContainerProperties::builder()
                .image("flotilla-test/busybox:latest")
                .command("sh").command("-c").command(format!("env > {}.$AWS_BATCH_JOB_ARRAY_INDEX; echo \"$0\" >> {}.$AWS_BATCH_JOB_ARRAY_INDEX", out.display(), out.display()))
                .command("Ref::word")
                .environment(KeyValuePair::builder().name("FROM_DEF").value("d").build())
                .build(),
        )
        .send().await.expect("register");
    let id = c
        .submit_job()
        .job_name("e")
        .job_queue("default")
        .job_definition("env")
        .parameters("word", "overridden")
        .array_properties(ArrayProperties::builder().size(2).build())
        .container_overrides(
            ContainerOverrides::builder()
                .environment(
                    KeyValuePair::builder()
                        .name("FROM_SUBMIT")
                        .value("s")
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .expect("submit")
        .job_id
        .expect("id");
    let j = wait_final(&c, &id, 60).await;
    assert_eq!(
        j.status,
        Some(JobStatus::Succeeded),
        "{:?}",
        j.status_reason
    );
    for i in 0..2 {
        let text = std::fs::read_to_string(format!("{}.{i}", out.display())).expect("env output");
        let vars: HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
        assert_eq!(
            vars.get("AWS_BATCH_JOB_ID").copied(),
            Some(format!("{id}:{i}").as_str())
        );
        assert_eq!(
            vars.get("AWS_BATCH_JOB_ARRAY_INDEX").copied(),
            Some(i.to_string().as_str())
        );
        assert_eq!(vars.get("AWS_BATCH_JOB_ATTEMPT").copied(), Some("1"));
        assert_eq!(vars.get("AWS_BATCH_JQ_NAME").copied(), Some("default"));
        assert_eq!(vars.get("AWS_BATCH_CE_NAME").copied(), Some("local"));
        assert_eq!(vars.get("FROM_DEF").copied(), Some("d"));
        assert_eq!(vars.get("FROM_SUBMIT").copied(), Some("s"));
        assert_eq!(text.lines().last(), Some("overridden"));
    }
}

/// Creates a LOCAL environment of `vcpus` and two queues on it.
async fn one_slot(c: &aws_sdk_batch::Client, vcpus: i32, policy: Option<String>) {
    c.create_compute_environment()
        .compute_environment_name("slot")
        .r#type(CeType::Managed)
        .compute_resources(
            ComputeResource::builder()
                .r#type(CrType::from("LOCAL"))
                .maxv_cpus(vcpus)
                .set_subnets(Some(vec![]))
                .build(),
        )
        .send()
        .await
        .expect("ce");
    let order = ComputeEnvironmentOrder::builder()
        .order(1)
        .compute_environment("slot")
        .build();
    c.create_job_queue()
        .job_queue_name("high")
        .priority(10)
        .compute_environment_order(order.clone())
        .send()
        .await
        .expect("high");
    c.create_job_queue()
        .job_queue_name("low")
        .priority(1)
        .compute_environment_order(order.clone())
        .send()
        .await
        .expect("low");
    if let Some(arn) = policy {
        c.create_job_queue()
            .job_queue_name("fair")
            .priority(5)
            .scheduling_policy_arn(arn)
            .compute_environment_order(order)
            .send()
            .await
            .expect("fair");
    }
}

#[tokio::test]
async fn higher_priority_queue_goes_first() {
    let s = server("process", &["--no-defaults"]);
    let c = s.client();
    one_slot(&c, 1, None).await;
    register(&c, "blocker", &["sleep", "1"], "1", None).await;
    register(&c, "quick", &["sleep", "0.1"], "1", None).await;
    let b = submit(&c, "low", "blocker").await;
    wait_for(&c, &b, &[JobStatus::Running], 30).await;
    let mut low = Vec::new();
    let mut high = Vec::new();
    for _ in 0..3 {
        low.push(submit(&c, "low", "quick").await);
    }
    for _ in 0..3 {
        high.push(submit(&c, "high", "quick").await);
    }
    let mut last_high = 0;
    for id in &high {
        last_high = last_high.max(wait_final(&c, id, 60).await.started_at.unwrap_or(i64::MAX));
    }
    for id in &low {
        let j = wait_final(&c, id, 60).await;
        assert!(
            j.started_at.unwrap_or(0) >= last_high,
            "a low-priority job started before a high-priority one"
        );
    }
}

#[tokio::test]
async fn fair_share_interleaves_share_identifiers() {
    let s = server("process", &["--no-defaults"]);
    let c = s.client();
    let policy = c
        .create_scheduling_policy()
        .name("even")
        .fairshare_policy(
            FairsharePolicy::builder()
                .share_distribution(
                    ShareAttributes::builder()
                        .share_identifier("a")
                        .weight_factor(1.0)
                        .build(),
                )
                .share_distribution(
                    ShareAttributes::builder()
                        .share_identifier("b")
                        .weight_factor(1.0)
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .expect("policy")
        .arn
        .expect("arn");
    one_slot(&c, 1, Some(policy)).await;
    register(&c, "quick", &["sleep", "0.1"], "1", None).await;
    register(&c, "blocker", &["sleep", "1"], "1", None).await;
    let b = submit(&c, "low", "blocker").await;
    wait_for(&c, &b, &[JobStatus::Running], 30).await;
    // All of share a is submitted before any of share b: FIFO would run every a first.
    let mut ids = Vec::new();
    for share in ["a", "b"] {
        for _ in 0..8 {
            let id = c
                .submit_job()
                .job_name(share)
                .job_queue("fair")
                .job_definition("quick")
                .share_identifier(share)
                .send()
                .await
                .expect("submit")
                .job_id
                .expect("id");
            ids.push((share, id));
        }
    }
    let mut started = Vec::new();
    for (share, id) in &ids {
        started.push((
            wait_final(&c, id, 120).await.started_at.unwrap_or(0),
            *share,
        ));
    }
    started.sort();
    let first_eight: Vec<&str> = started.iter().take(8).map(|(_, s)| *s).collect();
    let b_early = first_eight.iter().filter(|s| **s == "b").count();
    assert!(
        b_early >= 3,
        "share b got {b_early} of the first 8 slots: {first_eight:?}"
    );
}

/// GetJobQueueSnapshot of `queue`: the front's job IDs and the queue's utilisation.
async fn queue_snapshot(
    c: &aws_sdk_batch::Client,
    queue: &str,
) -> (Vec<String>, QueueSnapshotUtilizationDetail) {
    let snap = c
        .get_job_queue_snapshot()
        .job_queue(queue)
        .send()
        .await
        .expect("snapshot");
    let front = snap.front_of_queue.expect("frontOfQueue");
    assert!(front.last_updated_at.is_some());
    let ids = front
        .jobs
        .unwrap_or_default()
        .into_iter()
        .map(|j| {
            assert!(j.earliest_time_at_position.is_some_and(|t| t > 0));
            let arn = j.job_arn.expect("jobArn");
            arn.rsplit_once("job/").expect("a job ARN").1.to_string()
        })
        .collect();
    (ids, snap.queue_utilization.expect("queueUtilization"))
}

fn capacity(u: &QueueSnapshotUtilizationDetail) -> Vec<(String, f64)> {
    u.total_capacity_usage()
        .iter()
        .map(|c| {
            (
                c.capacity_unit().unwrap_or_default().to_string(),
                c.quantity().unwrap_or(-1.0),
            )
        })
        .collect()
}

/// IDs in the order their jobs started (`startedAt`).
async fn start_order(c: &aws_sdk_batch::Client, ids: &[String]) -> Vec<String> {
    let mut started = Vec::new();
    for id in ids {
        let j = wait_final(c, id, 120).await;
        assert_eq!(j.status, Some(JobStatus::Succeeded), "{id}");
        started.push((j.started_at.expect("startedAt"), id.clone()));
    }
    started.sort();
    started.into_iter().map(|(_, id)| id).collect()
}

#[tokio::test]
async fn queue_snapshot_predicts_the_start_order_and_reports_what_runs() {
    let s = server("process", &["--no-defaults"]);
    let c = s.client();
    let share = |id: &str, w: f32| {
        ShareAttributes::builder()
            .share_identifier(id)
            .weight_factor(w)
            .build()
    };
    let policy = c
        .create_scheduling_policy()
        .name("weighted")
        .fairshare_policy(
            FairsharePolicy::builder()
                // A week: decay does not move the turns during the test.
                .share_decay_seconds(604_800)
                .share_distribution(share("a", 1.0))
                .share_distribution(share("b", 2.5))
                .build(),
        )
        .send()
        .await
        .expect("policy")
        .arn
        .expect("arn");
    one_slot(&c, 1, Some(policy)).await;
    register(&c, "quick", &["sleep", "1"], "1", None).await;
    register(&c, "hold", &["sleep", "600"], "1", None).await;

    // Share c holds the only vCPU while a and b queue up.
    let holder = c
        .submit_job()
        .job_name("hold")
        .job_queue("fair")
        .job_definition("hold")
        .share_identifier("c")
        .send()
        .await
        .expect("submit")
        .job_id
        .expect("id");
    wait_for(&c, &holder, &[JobStatus::Running], 30).await;
    let mut share_of = HashMap::new();
    let mut ids = Vec::new();
    for sh in ["a", "b"] {
        for _ in 0..4 {
            let id = c
                .submit_job()
                .job_name(sh)
                .job_queue("fair")
                .job_definition("quick")
                .share_identifier(sh)
                .send()
                .await
                .expect("submit")
                .job_id
                .expect("id");
            share_of.insert(id.clone(), sh);
            ids.push(id);
        }
    }
    let (front, u) = queue_snapshot(&c, "fair").await;
    assert_eq!(front.len(), 8);
    let shares: Vec<&str> = front.iter().map(|id| share_of[id]).collect();
    // b's weight factor 2.5: its turn comes back once a has used 2.5 times as much.
    assert_eq!(shares.join(" "), "a b a a b a b b");
    assert_eq!(
        capacity(&u),
        [
            ("VCPU".to_string(), 1.0),
            ("MEMORY".to_string(), 32.0),
            ("GPU".to_string(), 0.0)
        ]
    );
    let fs = u.fairshare_utilization().expect("fairshareUtilization");
    assert_eq!(fs.active_share_count(), Some(1));
    let top = fs.top_capacity_utilization();
    assert_eq!(top.len(), 1);
    assert_eq!(top[0].share_identifier(), Some("c"));
    let usage = top[0].capacity_usage();
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0].capacity_unit(), Some("VCPU"));
    assert_eq!(usage[0].quantity(), Some(1.0));
    assert!(u.last_updated_at().is_some());

    c.terminate_job()
        .job_id(&holder)
        .reason("make room")
        .send()
        .await
        .expect("terminate");
    assert_eq!(start_order(&c, &ids).await, front);
    let (front, u) = queue_snapshot(&c, "fair").await;
    assert!(front.is_empty());
    assert_eq!(capacity(&u)[0], ("VCPU".to_string(), 0.0));
    assert_eq!(
        u.fairshare_utilization()
            .and_then(|f| f.active_share_count()),
        Some(0)
    );

    // FIFO: submission order, while a job of the higher-priority queue holds the vCPU.
    let holder = submit(&c, "high", "hold").await;
    wait_for(&c, &holder, &[JobStatus::Running], 30).await;
    let mut fifo = Vec::new();
    for _ in 0..3 {
        fifo.push(submit(&c, "low", "quick").await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (front, u) = queue_snapshot(&c, "low").await;
    assert_eq!(front, fifo);
    assert!(u.fairshare_utilization().is_none());
    assert_eq!(capacity(&u)[0], ("VCPU".to_string(), 0.0));
    let (_, high) = queue_snapshot(&c, "high").await;
    assert_eq!(capacity(&high)[0], ("VCPU".to_string(), 1.0));
    c.terminate_job()
        .job_id(&holder)
        .reason("make room")
        .send()
        .await
        .expect("terminate");
    assert_eq!(start_order(&c, &fifo).await, fifo);
}

#[tokio::test]
async fn a_job_that_can_never_fit_says_why() {
    let s = server("process", &[]);
    let c = s.client();
    register(&c, "huge", &["true"], "4096", None).await;
    let id = submit(&c, "default", "huge").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let j = describe_job(&c, &id).await;
        assert_eq!(j.status, Some(JobStatus::Runnable));
        if let Some(r) = j
            .status_reason
            .filter(|r| r.starts_with("MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT"))
        {
            assert!(r.contains("4096"), "{r}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no MISCONFIGURATION reason on a job that cannot fit"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn sigkill_and_restart_mid_run_loses_nothing() {
    let mut s = server("process", &[]);
    let c = s.client();
    register(
        &c,
        "nap",
        &["sleep", "2"],
        "1",
        Some(RetryStrategy::builder().attempts(3).build()),
    )
    .await;
    // Attempts cut short by the restart follow the retry strategy, so every job has one.
    register(
        &c,
        "quick",
        &["true"],
        "1",
        Some(RetryStrategy::builder().attempts(3).build()),
    )
    .await;
    let running = submit(&c, "default", "nap").await;
    wait_for(&c, &running, &[JobStatus::Running], 30).await;
    let mut queued = Vec::new();
    for _ in 0..20 {
        queued.push(submit(&c, "default", "quick").await);
    }
    s.kill();
    s.restart();
    let c = s.client();
    let j = wait_final(&c, &running, 60).await;
    // The attempt that was running when the server died ends with a host-failure reason and is
    // retried; the job still succeeds.
    assert_eq!(
        j.status,
        Some(JobStatus::Succeeded),
        "{:?} {:?}",
        j.status_reason,
        j.attempts
    );
    let attempts = j.attempts.unwrap_or_default();
    assert!(attempts.len() >= 2, "{attempts:?}");
    assert!(
        attempts[0]
            .status_reason
            .as_deref()
            .unwrap_or("")
            .contains("restarted"),
        "{:?}",
        attempts[0]
    );
    for id in &queued {
        let j = wait_final(&c, id, 60).await;
        assert_eq!(
            j.status,
            Some(JobStatus::Succeeded),
            "{:?} {:?}",
            j.status_reason,
            j.attempts
        );
    }
}

#[tokio::test]
async fn logs_come_back_through_the_cli_and_the_cloudwatch_logs_api() {
    let s = server("process", &[]);
    let c = s.client();
    register(
        &c,
        "talk",
        &[
            "sh",
            "-c",
            "echo out-$AWS_BATCH_JOB_ATTEMPT; echo err-line >&2; test $AWS_BATCH_JOB_ATTEMPT = 2",
        ],
        "1",
        Some(RetryStrategy::builder().attempts(2).build()),
    )
    .await;
    let id = submit(&c, "default", "talk").await;
    let j = wait_final(&c, &id, 60).await;
    assert_eq!(
        j.status,
        Some(JobStatus::Succeeded),
        "{:?}",
        j.status_reason
    );
    let attempts = j.attempts.unwrap_or_default();
    assert_eq!(attempts.len(), 2);
    let streams: Vec<String> = attempts
        .iter()
        .map(|a| {
            a.container
                .as_ref()
                .and_then(|c| c.log_stream_name.clone())
                .expect("logStreamName")
        })
        .collect();
    assert!(streams[0].starts_with("talk/default/"), "{}", streams[0]);
    assert_ne!(streams[0], streams[1], "each attempt has its own stream");

    let logs = logs_client(&s);
    let first = read_log(&logs, &streams[0]).await;
    assert!(
        first.contains(&"out-1".to_string()) && first.contains(&"err-line".to_string()),
        "{first:?}"
    );
    let second = read_log(&logs, &streams[1]).await;
    assert!(second.contains(&"out-2".to_string()), "{second:?}");

    // FilterLogEvents finds a line across the job's streams.
    let found = logs
        .filter_log_events()
        .log_group_name("/aws/batch/job")
        .log_stream_name_prefix("talk/")
        .filter_pattern("out-2")
        .send()
        .await
        .expect("FilterLogEvents")
        .events
        .unwrap_or_default();
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].log_stream_name.as_deref(),
        Some(streams[1].as_str())
    );

    // The CLI prints the latest attempt by default, and any attempt on request.
    let (ok, out, err) = cli(&s, &["logs", &id]);
    assert!(ok, "{err}");
    assert!(out.lines().any(|l| l == "out-2"), "{out}");
    let (ok, out, err) = cli(&s, &["logs", &id, "--attempt", "1"]);
    assert!(ok, "{err}");
    assert!(
        out.lines().any(|l| l == "out-1") && out.lines().any(|l| l == "err-line"),
        "{out}"
    );
}

/// A property over random DAGs, against the real engine: a job starts only after every job it
/// depends on SUCCEEDED (and stopped), a job whose dependency failed never starts, and every job
/// whose dependencies all succeeded runs.
#[tokio::test]
async fn random_dags_never_start_a_dependent_early() {
    let s = server("process", &[]);
    let c = s.client();
    register(&c, "pass", &["true"], "1", None).await;
    register(&c, "fail", &["false"], "1", None).await;
    for seed in 1u64..=3 {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut next = |m: u64| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) % m
        };
        let n = 25;
        let mut ids: Vec<String> = Vec::new();
        let mut deps: Vec<Vec<usize>> = Vec::new();
        let mut fails: Vec<bool> = Vec::new();
        for i in 0..n {
            let fail = next(7) == 0;
            let mut d: Vec<usize> = (0..next(4))
                .filter(|_| i > 0)
                .map(|_| next(i as u64) as usize)
                .collect();
            d.sort();
            d.dedup();
            let mut req = c
                .submit_job()
                .job_name(format!("n{i}"))
                .job_queue("default")
                .job_definition(if fail { "fail" } else { "pass" });
            for &j in &d {
                req = req.depends_on(dep(&ids[j]));
            }
            ids.push(req.send().await.expect("submit").job_id.expect("id"));
            deps.push(d);
            fails.push(fail);
        }
        let mut jobs = Vec::new();
        for id in &ids {
            jobs.push(wait_final(&c, id, 120).await);
        }
        for i in 0..n {
            let j = &jobs[i];
            let attempts = j.attempts.clone().unwrap_or_default();
            let failed_dep = deps[i]
                .iter()
                .find(|&&d| jobs[d].status == Some(JobStatus::Failed));
            if let Some(&d) = failed_dep {
                assert_eq!(j.status, Some(JobStatus::Failed), "seed {seed} job {i}");
                assert!(
                    attempts.is_empty(),
                    "seed {seed}: job {i} ran although its dependency {d} failed"
                );
                continue;
            }
            assert_eq!(
                attempts.len(),
                1,
                "seed {seed}: job {i} should have run once"
            );
            let started = attempts[0].started_at.expect("startedAt");
            for &d in &deps[i] {
                assert_eq!(jobs[d].status, Some(JobStatus::Succeeded));
                let stopped = jobs[d].stopped_at.expect("stoppedAt");
                assert!(
                    started >= stopped,
                    "seed {seed}: job {i} started {started} before dependency {d} stopped {stopped}"
                );
            }
            let want = if fails[i] {
                JobStatus::Failed
            } else {
                JobStatus::Succeeded
            };
            assert_eq!(j.status, Some(want), "seed {seed} job {i}");
        }
    }
}

#[tokio::test]
async fn every_waiting_job_says_why() {
    let s = server("process", &[]);
    let c = s.client();
    register(&c, "quick", &["true"], "1", None).await;
    c.update_compute_environment()
        .compute_environment("local")
        .state(CeState::Disabled)
        .send()
        .await
        .expect("disable local");
    let mut ids = Vec::new();
    for _ in 0..150 {
        ids.push(submit(&c, "default", "quick").await);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Only the head of the queue gets a stored reason (as in AWS); the rest say what the head
    // waits for.
    for chunk in ids.chunks(100) {
        let jobs = c
            .describe_jobs()
            .set_jobs(Some(chunk.to_vec()))
            .send()
            .await
            .expect("describe")
            .jobs
            .unwrap_or_default();
        for j in jobs {
            assert_eq!(j.status, Some(JobStatus::Runnable));
            let r = j.status_reason.unwrap_or_default();
            assert!(r.contains("COMPUTE_ENVIRONMENT_NOT_USABLE"), "{r}");
        }
    }
    let last = describe_job(&c, ids.last().expect("ids"))
        .await
        .status_reason
        .unwrap_or_default();
    assert!(last.starts_with("QUEUED - "), "{last}");
    // Enabling the environment lets them all run.
    c.update_compute_environment()
        .compute_environment("local")
        .state(CeState::Enabled)
        .send()
        .await
        .expect("enable local");
    for id in &ids {
        assert_eq!(
            wait_final(&c, id, 120).await.status,
            Some(JobStatus::Succeeded)
        );
    }
}

#[tokio::test]
async fn metrics_report_api_calls_transitions_queue_depth_and_capacity() {
    let s = server("process", &[]);
    let c = s.client();
    register(&c, "quick", &["true"], "1", None).await;
    let id = submit(&c, "default", "quick").await;
    wait_final(&c, &id, 60).await;
    let body = reqwest::get(format!("{}/metrics", s.endpoint))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    let value = |prefix: &str| -> f64 {
        body.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in:\n{body}"))
    };
    assert!(value("flotilla_api_requests_total{operation=\"SubmitJob\",code=\"200\"}") >= 1.0);
    assert!(
        value("flotilla_job_state_transitions_total{from=\"RUNNING\",to=\"SUCCEEDED\"}") >= 1.0
    );
    assert_eq!(
        value(
            "flotilla_queue_jobs{queue=\"arn:aws:batch:us-east-1:000000000000:job-queue/default\",status=\"SUCCEEDED\"}"
        ),
        1.0
    );
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    assert_eq!(
        value(
            "flotilla_compute_capacity{compute_environment=\"local\",resource=\"milli_vcpus\",kind=\"total\"}"
        ),
        cores * 1000.0
    );
}

#[tokio::test]
async fn a_queue_deeper_than_one_pass_window_drains_completely() {
    // A pass looks at the first 2,000 waiting jobs of each share; the rest must follow as those
    // leave, until the whole queue has run.
    let s = server("process", &[]);
    let c = s.client();
    register(&c, "tiny", &["true"], "0.25", None).await;
    let parent = c
        .submit_job()
        .job_name("deep")
        .job_queue("default")
        .job_definition("tiny")
        .array_properties(ArrayProperties::builder().size(2_500).build())
        .send()
        .await
        .expect("submit array")
        .job_id
        .expect("id");
    let last = submit(&c, "default", "tiny").await;
    let p = wait_final(&c, &parent, 300).await;
    assert_eq!(
        p.status,
        Some(JobStatus::Succeeded),
        "{:?}",
        p.status_reason
    );
    let summary = p
        .array_properties
        .and_then(|a| a.status_summary)
        .unwrap_or_default();
    assert_eq!(summary.get("SUCCEEDED"), Some(&2_500), "{summary:?}");
    let j = wait_final(&c, &last, 60).await;
    assert_eq!(j.status, Some(JobStatus::Succeeded));
}

/// Children of the array `parent` with `status`, counted through ListJobs.
async fn count_children(c: &aws_sdk_batch::Client, parent: &str, status: JobStatus) -> usize {
    let mut n = 0;
    let mut token = None;
    loop {
        let page = c
            .list_jobs()
            .array_job_id(parent)
            .job_status(status.clone())
            .max_results(1000)
            .set_next_token(token)
            .send()
            .await
            .expect("list children");
        n += page.job_summary_list().len();
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            return n;
        }
    }
}

/// SubmitJob of an array returns once the parent is durable and writes the children after the
/// reply: a read right after the reply still sees every child, and children lost with a crash
/// before they were written are written at the next start, and run.
#[tokio::test]
async fn array_children_are_there_at_once_and_after_a_crash_before_they_were_written() {
    let mut s = server("process", &[]);
    let c = s.client();
    register(&c, "quick", &["true"], "1", None).await;
    // DISABLED: the children wait RUNNABLE until the environment is enabled.
    let ce = create_local_ce(&c, "held").await;
    create_queue(&c, "held-q", &ce).await;
    let parent = c
        .submit_job()
        .job_name("family")
        .job_queue("held-q")
        .job_definition("quick")
        .array_properties(ArrayProperties::builder().size(500).build())
        .send()
        .await
        .expect("submit array")
        .job_id
        .expect("jobId");
    assert_eq!(count_children(&c, &parent, JobStatus::Runnable).await, 500);

    // The crash this recovers from: the parent committed, its children not yet. A kill, as in
    // that crash: after a clean stop the store marker counts the children, and a start on a
    // database holding fewer jobs than that is refused as lost data.
    s.kill();
    let db = format!("sqlite://{}", s.data_dir.join("flotilla.db").display());
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&db)
        .await
        .expect("open the server's database");
    let deleted = sqlx::query("DELETE FROM jobs WHERE array_parent = ?")
        .bind(&parent)
        .execute(&mut conn)
        .await
        .expect("delete the children")
        .rows_affected();
    assert_eq!(deleted, 500);
    drop(conn);

    s.restart();
    let c = s.client();
    assert_eq!(count_children(&c, &parent, JobStatus::Runnable).await, 500);
    c.update_compute_environment()
        .compute_environment("held")
        .state(CeState::Enabled)
        .send()
        .await
        .expect("enable");
    let p = wait_final(&c, &parent, 120).await;
    assert_eq!(
        p.status,
        Some(JobStatus::Succeeded),
        "{:?}",
        p.status_reason
    );
    assert_eq!(count_children(&c, &parent, JobStatus::Succeeded).await, 500);
}

/// `flotilla jobs watch` draws a bar per array job in progress: its children done out of its
/// size, by status; a finished array has none.
#[tokio::test(flavor = "multi_thread")]
async fn jobs_watch_shows_the_progress_of_each_array() {
    let s = server("process", &[]);
    let c = s.client();
    let dir = job_writable_tempdir();
    let gate = dir.path().join("go").display().to_string();
    register(
        &c,
        "gated",
        &[
            "sh",
            "-c",
            &format!(
                "while [ ! -e {gate} ]; do sleep 0.05; done; test $AWS_BATCH_JOB_ARRAY_INDEX != 2"
            ),
        ],
        "0.25",
        None,
    )
    .await;
    let parent = c
        .submit_job()
        .job_name("fan")
        .job_queue("default")
        .job_definition("gated")
        .array_properties(ArrayProperties::builder().size(4).build())
        .send()
        .await
        .expect("submit the array")
        .job_id
        .expect("id");
    let watch = |output: &'static str| {
        let (ok, out, err) = cli(
            &s,
            &[
                "jobs", "watch", "--queue", "default", "--once", "--output", output,
            ],
        );
        assert!(ok, "{err}");
        out
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let arrays = loop {
        let line: serde_json::Value = serde_json::from_str(watch("json").trim()).expect("JSON");
        let arrays = line["arrays"].as_array().cloned().unwrap_or_default();
        let running = arrays
            .first()
            .and_then(|a| a["statusSummary"]["RUNNING"].as_i64())
            .unwrap_or(0);
        if running == 4 {
            break arrays;
        }
        assert!(
            Instant::now() < deadline,
            "never 4 children running: {line}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(arrays.len(), 1, "{arrays:?}");
    assert_eq!(arrays[0]["jobId"], parent.as_str());
    assert_eq!(arrays[0]["jobName"], "fan");
    assert_eq!(arrays[0]["size"], 4);
    assert_eq!(arrays[0]["done"], 0);
    let table = watch("table");
    assert!(
        table.contains(&format!(
            "array {parent} fan [{}] 0/4 RUNNING 4",
            ".".repeat(30)
        )),
        "{table}"
    );

    std::fs::write(&gate, b"").expect("open the gate");
    let done = wait_final(&c, &parent, 60).await;
    assert_eq!(done.status, Some(JobStatus::Failed), "child 2 fails");
    let line: serde_json::Value = serde_json::from_str(watch("json").trim()).expect("JSON");
    assert_eq!(line["arrays"], serde_json::json!([]), "{line}");
    assert!(!watch("table").contains("array "));
}
