//! The AWS driver beyond one Spot environment: logs from CloudWatch, TerminateJob as StopTask,
//! UNMANAGED environments on the team's own instances, the orphan sweeper, and jobs that Spot
//! keeps interrupting moving on to the queue's on-demand environment. Against the emulator,
//! through the AWS SDK for Rust.

mod common;

use aws_sdk_batch::types::*;
use common::aws::*;
use common::emulator::Emulator;
use std::collections::HashMap;
use std::time::{Duration, Instant};

fn logs_on_emulator(emu: &Emulator) -> aws_sdk_cloudwatchlogs::Client {
    let conf = aws_sdk_cloudwatchlogs::Config::builder()
        .behavior_version(aws_sdk_cloudwatchlogs::config::BehaviorVersion::latest())
        .region(aws_sdk_cloudwatchlogs::config::Region::new("us-east-1"))
        .endpoint_url(&emu.endpoint)
        .credentials_provider(aws_sdk_cloudwatchlogs::config::Credentials::for_tests())
        .build();
    aws_sdk_cloudwatchlogs::Client::from_conf(conf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecs_job_logs_come_from_cloudwatch_and_terminate_stops_the_task() {
    let emu = Emulator::start();
    let server = start(&emu, 300, &[]);
    let client = server.client();
    let queue = spot_setup(&client, &emu, "logs", 0, 8).await;
    let id = submit(&client, &queue, "logs-def", "talker", 1, 1).await;
    let job = wait_running(&client, std::slice::from_ref(&id))
        .await
        .remove(0);
    let container = job.container.clone().expect("container");
    let stream = container.log_stream_name.clone().expect("logStreamName");
    let task = container.task_arn.clone().expect("taskArn");
    // The awslogs driver's stream: <definition>/default/<ECS task id>.
    assert_eq!(
        stream,
        format!(
            "logs-def/default/{}",
            task.rsplit('/').next().unwrap_or_default()
        )
    );
    // What the container's awslogs driver would have written to CloudWatch Logs.
    let cw = logs_on_emulator(&emu);
    let _ = cw
        .create_log_group()
        .log_group_name("/aws/batch/job")
        .send()
        .await;
    cw.create_log_stream()
        .log_group_name("/aws/batch/job")
        .log_stream_name(&stream)
        .send()
        .await
        .expect("create log stream");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let mut put = cw
        .put_log_events()
        .log_group_name("/aws/batch/job")
        .log_stream_name(&stream);
    for (i, line) in ["hello from ecs", "second line"].iter().enumerate() {
        put = put.log_events(
            aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                .timestamp(now + i as i64)
                .message(*line)
                .build()
                .expect("log event"),
        );
    }
    put.send().await.expect("put log events");
    // Read back through Flotilla's own Logs API, as `flotilla logs` and `aws logs` do.
    let lines = common::read_log(&common::logs_client(&server), &stream).await;
    assert_eq!(lines, vec!["hello from ecs", "second line"]);
    // And on the job's page in the web console.
    let session = common::console_session(&server).await;
    let page = common::console_page(&server, &session, &format!("/console/jobs/{id}")).await;
    assert!(
        page.contains("hello from ecs"),
        "the console shows the ECS job's log:\n{page}"
    );

    client
        .terminate_job()
        .job_id(&id)
        .reason("operator says stop")
        .send()
        .await
        .expect("terminate");
    let job = common::wait_final(&client, &id, 30).await;
    assert_eq!(job.status, Some(JobStatus::Failed));
    assert_eq!(job.status_reason.as_deref(), Some("operator says stop"));
    let state = emu.state().await;
    let t = tasks(&state)
        .into_iter()
        .find(|t| t["taskArn"] == task.as_str())
        .expect("the task");
    assert_eq!(t["lastStatus"], "STOPPED");
    assert!(
        t["stoppedReason"]
            .as_str()
            .is_some_and(|r| r.starts_with("Terminated by Flotilla")),
        "{t}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmanaged_environment_runs_on_registered_instances_and_never_terminates_them() {
    let emu = Emulator::start();
    let server = start(&emu, 1, &[]);
    let client = server.client();
    let ce = client
        .create_compute_environment()
        .compute_environment_name("own")
        .r#type(CeType::Unmanaged)
        .send()
        .await
        .expect("create unmanaged environment")
        .compute_environment_arn
        .expect("arn");
    let cluster_arn = wait_valid(&client, "own").await;
    let cluster = cluster_arn
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    common::create_queue(&client, "own-q", &ce).await;
    register_def(&client, "own-def").await;
    // The team's own instance, joining the environment's cluster as their user data says.
    let user_data = format!("#!/bin/bash\necho ECS_CLUSTER={cluster} >> /etc/ecs/ecs.config\n");
    let theirs = run_instance(
        &emu,
        aws_sdk_ec2::types::InstanceType::C5Xlarge,
        Some(&user_data),
        &[],
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(submit(&client, "own-q", "own-def", &format!("job-{i}"), 1, 1).await);
    }
    let jobs = drive(&client, &emu, &ids, 4, 60, |_, _| Some(0)).await;
    let state = emu.state().await;
    let ci_host = instance_of_container_instance(&state);
    for j in &jobs {
        assert_eq!(
            j.status,
            Some(JobStatus::Succeeded),
            "{:?}",
            j.status_reason
        );
        let ci = j.attempts.as_ref().and_then(|a| a.last()).and_then(|a| {
            a.container
                .as_ref()
                .and_then(|c| c.container_instance_arn.clone())
        });
        assert_eq!(
            ci.and_then(|c| ci_host.get(&c).cloned()),
            Some(theirs.clone())
        );
    }
    // Idle well past the 1 s delay: an unmanaged environment never launches nor terminates.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let state = emu.state().await;
    let instances = state["instances"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        instances.len(),
        1,
        "Flotilla launched nothing: {instances:?}"
    );
    assert_eq!(instances[0]["state"], "running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_sweeper_terminates_instances_of_unknown_environments_only() {
    let emu = Emulator::start();
    let _server = start(&emu, 300, &[]);
    let run = |tags: &'static [(&'static str, &'static str)]| {
        run_instance(&emu, aws_sdk_ec2::types::InstanceType::C5Large, None, tags)
    };
    // Left behind by an environment deleted while its server was down.
    let orphan = run(&[
        ("flotilla:managed-by", "flotilla"),
        ("flotilla:compute-environment", "gone"),
        (
            "flotilla:compute-environment-uuid",
            "00000000-dead-beef-0000-000000000000",
        ),
    ])
    .await;
    // The team's own instance, not Flotilla's.
    let theirs = run(&[("team", "research")]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state = emu.state().await;
        let st = |id: &str| {
            state["instances"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|i| i["instanceId"] == id)
                .map(|i| i["state"].as_str().unwrap_or_default().to_string())
        };
        if st(&orphan).as_deref() == Some("terminated") {
            assert_eq!(st(&theirs).as_deref(), Some("running"));
            break;
        }
        assert!(Instant::now() < deadline, "the orphan was not terminated");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_interrupted_too_often_move_to_the_on_demand_environment() {
    let emu = Emulator::start();
    let server = start(&emu, 300, &["--spot-max-interruptions", "1"]);
    let client = server.client();
    let spot = create_managed_ce(&client, &emu, "sp", CrType::Spot, 0, 8).await;
    let od = create_managed_ce(&client, &emu, "od", CrType::Ec2, 0, 8).await;
    client
        .create_job_queue()
        .job_queue_name("mixed")
        .priority(1)
        .compute_environment_order(
            ComputeEnvironmentOrder::builder()
                .order(1)
                .compute_environment(&spot)
                .build(),
        )
        .compute_environment_order(
            ComputeEnvironmentOrder::builder()
                .order(2)
                .compute_environment(&od)
                .build(),
        )
        .send()
        .await
        .expect("create queue");
    register_def(&client, "mixed-def").await;
    let mut ids = Vec::new();
    for i in 0..2 {
        ids.push(submit(&client, "mixed", "mixed-def", &format!("job-{i}"), 1, 1).await);
    }
    wait_running(&client, &ids).await;
    let state = emu.state().await;
    // Demand goes to the first environment of the queue: only Spot capacity so far.
    let live = live_instances(&state);
    assert!(!live.is_empty());
    assert!(live.iter().all(|i| i["lifecycle"] == "spot"), "{live:?}");
    for i in &live {
        emu.interrupt(i["instanceId"].as_str().unwrap_or_default())
            .await;
    }
    let jobs = drive(&client, &emu, &ids, 16, 60, |_, _| Some(0)).await;
    let state = emu.state().await;
    let host_lifecycle: HashMap<String, String> = {
        let by_id: HashMap<&str, &str> = state["instances"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| Some((i["instanceId"].as_str()?, i["lifecycle"].as_str()?)))
            .collect();
        instance_of_container_instance(&state)
            .into_iter()
            .filter_map(|(ci, id)| Some((ci, by_id.get(id.as_str())?.to_string())))
            .collect()
    };
    for j in &jobs {
        assert_eq!(
            j.status,
            Some(JobStatus::Succeeded),
            "{:?}",
            j.status_reason
        );
        let attempts = j.attempts.clone().unwrap_or_default();
        assert_eq!(attempts.len(), 2, "one interrupted attempt, one that ran");
        let last_ci = attempts[1]
            .container
            .as_ref()
            .and_then(|c| c.container_instance_arn.clone())
            .unwrap_or_default();
        assert_eq!(
            host_lifecycle.get(&last_ci).map(String::as_str),
            Some("on-demand"),
            "the retry ran on the on-demand environment"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insufficient_capacity_falls_through_to_other_instance_types() {
    let emu = Emulator::start();
    // Every Spot pool but c5.large is out of capacity.
    for t in ["c5.xlarge", "m5.large", "m5.xlarge"] {
        emu.capacity(t, "spot", 0).await;
    }
    let server = start(&emu, 300, &[]);
    let client = server.client();
    let queue = spot_setup(&client, &emu, "short", 0, 8).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(submit(&client, &queue, "short-def", &format!("job-{i}"), 1, 1).await);
    }
    let jobs = drive(&client, &emu, &ids, 8, 60, |_, _| Some(0)).await;
    for j in &jobs {
        assert_eq!(
            j.status,
            Some(JobStatus::Succeeded),
            "{:?}",
            j.status_reason
        );
    }
    let state = emu.state().await;
    let types: Vec<&str> = state["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["instanceType"].as_str())
        .collect();
    assert!(!types.is_empty());
    assert!(types.iter().all(|t| *t == "c5.large"), "{types:?}");
}

/// A MANAGED environment `name` of `cr_type` over `types` (in that order) with `strategy`, its
/// queue `<name>-q` and job definition `<name>-def`; waits until VALID.
async fn ordered_setup(
    client: &aws_sdk_batch::Client,
    emu: &Emulator,
    name: &str,
    cr_type: CrType,
    strategy: CrAllocationStrategy,
    types: &[&str],
) -> String {
    let ce =
        common::aws::create_ce(client, emu, name, cr_type, types, (0, 16), Some(strategy)).await;
    common::create_queue(client, &format!("{name}-q"), &ce).await;
    register_def(client, &format!("{name}-def")).await;
    format!("{name}-q")
}

/// Runs `n` 1-vCPU jobs on `queue` to success; returns the (type, lifecycle) of each instance
/// the emulator launched meanwhile, in launch order.
async fn launched_for(
    client: &aws_sdk_batch::Client,
    emu: &Emulator,
    queue: &str,
    def: &str,
    n: usize,
) -> Vec<(String, String)> {
    let before = emu.state().await["instances"]
        .as_array()
        .map_or(0, Vec::len);
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(submit(client, queue, def, &format!("job-{i}"), 1, 1).await);
    }
    for j in drive(client, emu, &ids, 16, 90, |_, _| Some(0)).await {
        assert_eq!(
            j.status,
            Some(JobStatus::Succeeded),
            "{:?}",
            j.status_reason
        );
    }
    let state = emu.state().await;
    state["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .skip(before)
        .map(|i| {
            (
                i["instanceType"].as_str().unwrap_or_default().to_string(),
                i["lifecycle"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_allocation_strategies_launch_instance_types_in_the_order_listed() {
    let emu = Emulator::start();
    // One instance of each listed-first pool, then InsufficientInstanceCapacity.
    emu.capacity("m5.xlarge", "on-demand", 1).await;
    emu.capacity("m5.large", "spot", 1).await;
    let server = start(&emu, 300, &[]);
    let client = server.client();

    // m5.xlarge is listed first, although c5 costs less per vCPU (BEST_FIT_PROGRESSIVE's
    // choice); once its capacity is gone, the c5 family.
    let q = ordered_setup(
        &client,
        &emu,
        "ordered",
        CrType::Ec2,
        CrAllocationStrategy::BestFitProgressiveOrdered,
        &["m5.xlarge", "c5"],
    )
    .await;
    let launched = launched_for(&client, &emu, &q, "ordered-def", 8).await;
    assert_eq!(
        launched.first().map(|(t, _)| t.as_str()),
        Some("m5.xlarge"),
        "{launched:?}"
    );
    assert!(launched.len() >= 2, "{launched:?}");
    assert!(
        launched[1..].iter().all(|(t, _)| t.starts_with("c5.")),
        "{launched:?}"
    );
    assert!(launched.iter().all(|(_, l)| l == "on-demand"));

    // Spot: m5.large has the priority, c5.large follows when m5.large runs out.
    let q = ordered_setup(
        &client,
        &emu,
        "prioritized",
        CrType::Spot,
        CrAllocationStrategy::SpotCapacityOptimizedPrioritized,
        &["m5.large", "c5.large"],
    )
    .await;
    let launched = launched_for(&client, &emu, &q, "prioritized-def", 4).await;
    assert_eq!(
        launched.first().map(|(t, _)| t.as_str()),
        Some("m5.large"),
        "{launched:?}"
    );
    assert!(launched.len() >= 2, "{launched:?}");
    assert!(
        launched[1..].iter().all(|(t, _)| t == "c5.large"),
        "{launched:?}"
    );
    assert!(launched.iter().all(|(_, l)| l == "spot"));

    // Updates take CRUpdateAllocationStrategy: everything but BEST_FIT, Spot ones on SPOT only.
    for (strategy, ok) in [
        (CrUpdateAllocationStrategy::from("BEST_FIT"), false),
        (
            CrUpdateAllocationStrategy::SpotCapacityOptimizedPrioritized,
            false,
        ),
        (CrUpdateAllocationStrategy::BestFitProgressive, true),
        (CrUpdateAllocationStrategy::BestFitProgressiveOrdered, true),
    ] {
        let r = client
            .update_compute_environment()
            .compute_environment("ordered")
            .compute_resources(
                ComputeResourceUpdate::builder()
                    .allocation_strategy(strategy.clone())
                    .build(),
            )
            .send()
            .await;
        match r {
            Ok(_) => assert!(ok, "{strategy:?} accepted"),
            Err(e) => {
                let msg = format!("{:?}", e.into_service_error());
                assert!(!ok, "{strategy:?} refused: {msg}");
                assert!(msg.contains("computeResources.allocationStrategy"), "{msg}");
            }
        }
    }
    let cr = describe_ce(&client, "ordered")
        .await
        .compute_resources
        .unwrap();
    assert_eq!(
        cr.allocation_strategy,
        Some(CrAllocationStrategy::BestFitProgressiveOrdered)
    );

    // The strategies' constraints, as AWS documents them.
    for (name, cr_type, strategy) in [
        (
            "bad-ordered",
            CrType::Spot,
            CrAllocationStrategy::BestFitProgressiveOrdered,
        ),
        (
            "bad-prioritized",
            CrType::Ec2,
            CrAllocationStrategy::SpotCapacityOptimizedPrioritized,
        ),
    ] {
        let err = client
            .create_compute_environment()
            .compute_environment_name(name)
            .r#type(CeType::Managed)
            .compute_resources(
                ComputeResource::builder()
                    .r#type(cr_type)
                    .maxv_cpus(4)
                    .subnets(default_subnet(&emu).await)
                    .instance_role("ecsInstanceRole")
                    .allocation_strategy(strategy)
                    .instance_types("m5.large")
                    .build(),
            )
            .send()
            .await
            .expect_err("rejected");
        let msg = format!("{:?}", err.into_service_error());
        assert!(msg.contains("allocationStrategy"), "{msg}");
    }
}
