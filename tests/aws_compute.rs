//! MANAGED SPOT compute environments end to end: a real `flotilla server` with its AWS driver
//! against the AWS emulator (moto plus Flotilla's ECS agent, `localstack/harness`), through the
//! AWS SDK for Rust. Each test asserts on Flotilla's jobs and on the emulator's EC2 and ECS state.

mod common;

use aws_sdk_batch::types::*;
use common::aws::*;
use common::emulator::Emulator;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_environment_runs_mixed_jobs_then_drains_to_min() {
    let emu = Emulator::start();
    let server = start(&emu, 2, &[]);
    let client = server.client();
    let max = 24;
    let queue = spot_setup(&client, &emu, "spot", 0, max as i32).await;
    // Nothing runs yet: minvCpus 0 launches nothing.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        live_instances(&emu.state().await).is_empty(),
        "no demand, no instances"
    );

    let mut ids = Vec::new();
    for i in 0..50u32 {
        let vcpus = [1, 2, 4][(i % 3) as usize];
        // Every 5th job fails its first attempt and succeeds on the retry; every 7th fails
        // for good (one attempt).
        let attempts = if i.is_multiple_of(7) { 1 } else { 2 };
        ids.push(
            submit(
                &client,
                &queue,
                "spot-def",
                &format!("job-{i}"),
                vcpus,
                attempts,
            )
            .await,
        );
    }
    let jobs = drive(&client, &emu, &ids, max, 120, |name, attempt| {
        let i: u32 = name.trim_start_matches("job-").parse().unwrap_or(0);
        Some(if i.is_multiple_of(7) {
            3
        } else if i.is_multiple_of(5) && attempt == 1 {
            1
        } else {
            0
        })
    })
    .await;

    let mut expected_tasks = 0;
    for j in &jobs {
        let name = j.job_name.clone().unwrap_or_default();
        let i: u32 = name.trim_start_matches("job-").parse().unwrap_or(0);
        let attempts = j.attempts.clone().unwrap_or_default();
        expected_tasks += attempts.len();
        if i.is_multiple_of(7) {
            assert_eq!(j.status, Some(JobStatus::Failed), "{name}");
            assert_eq!(attempts.len(), 1, "{name}");
            assert_eq!(
                j.status_reason.as_deref(),
                Some("Essential container in task exited"),
                "{name}"
            );
            assert_eq!(
                attempts[0].container.as_ref().and_then(|c| c.exit_code),
                Some(3)
            );
        } else {
            assert_eq!(
                j.status,
                Some(JobStatus::Succeeded),
                "{name}: {:?}",
                j.status_reason
            );
            let want = if i.is_multiple_of(5) { 2 } else { 1 };
            assert_eq!(attempts.len(), want, "{name}");
            let codes: Vec<_> = attempts
                .iter()
                .map(|a| a.container.as_ref().and_then(|c| c.exit_code))
                .collect();
            let last = codes.last().copied().flatten();
            assert_eq!(last, Some(0), "{name}: {codes:?}");
        }
        // Each attempt is an ECS task in the environment's cluster, with the awslogs stream
        // AWS Batch would name.
        for a in &attempts {
            let c = a.container.as_ref().expect("attempt container");
            assert!(
                c.task_arn.as_deref().is_some_and(|t| t.contains(":task/")),
                "{c:?}"
            );
            let stream = c.log_stream_name.clone().unwrap_or_default();
            assert!(stream.starts_with("spot-def/default/"), "{stream}");
        }
    }
    let state = emu.state().await;
    // One task per attempt: nothing started twice.
    assert_eq!(tasks(&state).len(), expected_tasks);
    // Spot capacity only, every instance registered with the environment's cluster.
    let instances = state["instances"].as_array().cloned().unwrap_or_default();
    assert!(!instances.is_empty());
    for i in &instances {
        assert_eq!(i["lifecycle"], "spot", "{i}");
        assert!(
            TYPES.contains(&i["instanceType"].as_str().unwrap_or("")),
            "{i}"
        );
        assert!(
            i["ecsCluster"]
                .as_str()
                .is_some_and(|c| c.starts_with("flotilla-spot-")),
            "{i}"
        );
    }
    // The queue is empty: after the 2 s idle delay every instance is drained and terminated,
    // and the environment is back at minvCpus 0.
    wait_drained(&client, &emu, "spot", 60).await;
    let state = emu.state().await;
    for ci in state["containerInstances"].as_array().into_iter().flatten() {
        assert_eq!(ci["status"], "INACTIVE", "{ci}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_interruptions_retry_without_spending_attempts() {
    let emu = Emulator::start();
    let server = start(&emu, 300, &[]);
    let client = server.client();
    let max = 16;
    let queue = spot_setup(&client, &emu, "intr", 0, max).await;
    let mut ids = Vec::new();
    for i in 0..16 {
        // One attempt only: an interruption that counted would fail the job.
        ids.push(submit(&client, &queue, "intr-def", &format!("job-{i}"), 1, 1).await);
    }
    // Wait until all 16 run, then interrupt 30% of the instances that host them.
    wait_running(&client, &ids).await;
    let state = emu.state().await;
    let hosts: Vec<String> = live_instances(&state)
        .iter()
        .filter_map(|i| i["instanceId"].as_str().map(str::to_string))
        .collect();
    let ci_host = instance_of_container_instance(&state);
    let n = ((hosts.len() as f64) * 0.3).ceil() as usize;
    let victims: Vec<String> = hosts.iter().take(n.max(1)).cloned().collect();
    let hit_tasks: HashSet<String> = tasks(&state)
        .iter()
        .filter(|t| {
            t["containerInstanceArn"]
                .as_str()
                .and_then(|a| ci_host.get(a))
                .is_some_and(|h| victims.contains(h))
        })
        .filter_map(|t| t["taskArn"].as_str().map(str::to_string))
        .collect();
    assert!(!hit_tasks.is_empty(), "the victims host running tasks");
    for v in &victims {
        emu.interrupt(v).await;
    }
    let jobs = drive(&client, &emu, &ids, i64::from(max), 120, |_, _| Some(0)).await;
    let mut interrupted_jobs = 0;
    for j in &jobs {
        let name = j.job_name.clone().unwrap_or_default();
        assert_eq!(
            j.status,
            Some(JobStatus::Succeeded),
            "{name}: {:?}",
            j.status_reason
        );
        let attempts = j.attempts.clone().unwrap_or_default();
        let first_task = attempts[0]
            .container
            .as_ref()
            .and_then(|c| c.task_arn.clone());
        if first_task.is_some_and(|t| hit_tasks.contains(&t)) {
            interrupted_jobs += 1;
            assert_eq!(
                attempts.len(),
                2,
                "{name}: the interrupted attempt is on record"
            );
            let reason = attempts[0].status_reason.clone().unwrap_or_default();
            assert!(
                reason.starts_with("Host EC2 (instance i-"),
                "{name}: {reason}"
            );
            assert!(reason.ends_with(") terminated."), "{name}: {reason}");
            assert_eq!(
                attempts[0].container.as_ref().and_then(|c| c.exit_code),
                None
            );
            assert_eq!(
                attempts[1].container.as_ref().and_then(|c| c.exit_code),
                Some(0)
            );
        } else {
            assert_eq!(attempts.len(), 1, "{name}");
        }
    }
    assert_eq!(interrupted_jobs, hit_tasks.len());
    // The retries ran on new capacity, not on the reclaimed hosts.
    let state = emu.state().await;
    for i in state["instances"].as_array().into_iter().flatten() {
        if victims.iter().any(|v| i["instanceId"] == v.as_str()) {
            assert_eq!(i["state"], "terminated");
            assert_eq!(i["stateReason"]["code"], "Server.SpotInstanceTermination");
        }
    }
    for j in &jobs {
        let attempts = j.attempts.clone().unwrap_or_default();
        let last = attempts.last().and_then(|a| a.container.clone());
        let host = last
            .and_then(|c| c.container_instance_arn)
            .and_then(|a| ci_host.get(&a).cloned());
        if let Some(h) = host {
            assert!(!victims.contains(&h), "a retry ran on a reclaimed host");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_finish_through_throttling_and_errors_without_duplicate_launches_or_leaks() {
    let emu = Emulator::start();
    let server = start(&emu, 300, &[]);
    let client = server.client();
    let max = 12;
    let queue = spot_setup(&client, &emu, "flaky", 0, max).await;
    for service in ["ec2", "ecs"] {
        emu.fault(serde_json::json!({
            "service": service, "throttle": 0.05, "error": 0.05, "seed": 7
        }))
        .await;
    }
    let mut ids = Vec::new();
    for i in 0..20u32 {
        ids.push(
            submit(
                &client,
                &queue,
                "flaky-def",
                &format!("job-{i}"),
                1 + i % 2,
                1,
            )
            .await,
        );
    }
    let jobs = drive(&client, &emu, &ids, i64::from(max), 180, |_, _| Some(0)).await;
    for j in &jobs {
        assert_eq!(
            j.status,
            Some(JobStatus::Succeeded),
            "{:?}: {:?}",
            j.job_name,
            j.status_reason
        );
    }
    let state = emu.state().await;
    // No duplicate launch: everything ever launched fits within maxvCpus plus one instance
    // (instances stay for 300 s idle, so none was retired and replaced).
    let launched: i64 = state["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| i["resources"]["cpu"].as_i64().unwrap_or(0) / 1024)
        .sum();
    assert!(
        launched <= i64::from(max) + LARGEST_VCPUS,
        "launched {launched} vCPUs"
    );
    // And every job ran as exactly one task.
    let mut per_job: HashMap<String, usize> = HashMap::new();
    for j in &jobs {
        for a in j.attempts.clone().unwrap_or_default() {
            if let Some(t) = a.container.and_then(|c| c.task_arn) {
                *per_job.entry(t).or_default() += 1;
            }
        }
    }
    assert_eq!(tasks(&state).len(), per_job.len());
    // No leaked instance: deleting the environment terminates its fleet.
    emu.clear_faults().await;
    client
        .update_job_queue()
        .job_queue(&queue)
        .state(JqState::Disabled)
        .send()
        .await
        .expect("disable queue");
    client
        .delete_job_queue()
        .job_queue(&queue)
        .send()
        .await
        .expect("delete queue");
    client
        .update_compute_environment()
        .compute_environment("flaky")
        .state(CeState::Disabled)
        .send()
        .await
        .expect("disable environment");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client
            .delete_compute_environment()
            .compute_environment("flaky")
            .send()
            .await
        {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                // The queue deletion may still be settling.
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("delete environment: {e:?}"),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !live_instances(&emu.state().await).is_empty() {
        assert!(
            Instant::now() < deadline,
            "instances leaked after the environment was deleted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_adopts_running_tasks_after_restart() {
    let emu = Emulator::start();
    let mut server = start(&emu, 300, &[]);
    let client = server.client();
    let queue = spot_setup(&client, &emu, "adopt", 0, 16).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(submit(&client, &queue, "adopt-def", &format!("job-{i}"), 1, 1).await);
    }
    wait_running(&client, &ids).await;
    let before = tasks(&emu.state().await).len();
    assert_eq!(before, 10);
    server.kill();
    server.restart();
    let client = server.client();
    // While the server was down and after it is back, the tasks keep running; it adopts them.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let jobs = drive(&client, &emu, &ids, 16, 60, |_, _| Some(0)).await;
    for j in &jobs {
        assert_eq!(
            j.status,
            Some(JobStatus::Succeeded),
            "{:?}",
            j.status_reason
        );
        assert_eq!(j.attempts.as_ref().map_or(0, Vec::len), 1);
    }
    // Nothing was started twice.
    assert_eq!(tasks(&emu.state().await).len(), 10);
}
