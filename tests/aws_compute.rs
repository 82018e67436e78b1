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

/// An ECS client on the emulator, to read what Flotilla registered and started there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_definition_and_task_carry_every_container_setting_and_the_propagated_tags() {
    use aws_sdk_ecs::types as ecst;
    let emu = Emulator::start();
    let server = start(&emu, 300, &[]);
    let client = server.client();
    // One GPU instance type, so the job's GPU finds a home.
    let ce = create_ce_of_type(&client, &emu, "gpu", CrType::Ec2, "g4dn.xlarge", 8).await;
    common::create_queue(&client, "gpu-q", &ce).await;
    let r = server
        .raw()
        .post(
            "RegisterJobDefinition",
            &serde_json::json!({
                "jobDefinitionName": "every",
                "type": "container",
                "propagateTags": true,
                "tags": {"team": "data", "shared": "from-definition"},
                "containerProperties": {
                    "image": "busybox",
                    "command": ["true"],
                    "jobRoleArn": "arn:aws:iam::000000000000:role/job",
                    "executionRoleArn": "arn:aws:iam::000000000000:role/exec",
                    "user": "nobody",
                    "privileged": true,
                    "readonlyRootFilesystem": true,
                    "resourceRequirements": [
                        {"type": "VCPU", "value": "1"},
                        {"type": "MEMORY", "value": "1024"},
                        {"type": "GPU", "value": "1"}
                    ],
                    "volumes": [
                        {"name": "data", "host": {"sourcePath": "/srv/data"}},
                        {"name": "shared", "efsVolumeConfiguration": {
                            "fileSystemId": "fs-12345678", "rootDirectory": "/exports",
                            "transitEncryption": "ENABLED", "transitEncryptionPort": 2049,
                            "authorizationConfig": {"accessPointId": "fsap-1234", "iam": "ENABLED"}}}
                    ],
                    "mountPoints": [
                        {"sourceVolume": "data", "containerPath": "/data", "readOnly": true},
                        {"sourceVolume": "shared", "containerPath": "/shared"}
                    ],
                    "ulimits": [{"name": "nofile", "softLimit": 1024, "hardLimit": 4096}],
                    "linuxParameters": {
                        "sharedMemorySize": 256,
                        "initProcessEnabled": true,
                        "maxSwap": 1024,
                        "swappiness": 60,
                        "tmpfs": [{"containerPath": "/run", "size": 64, "mountOptions": ["noexec"]}],
                        "devices": [{"hostPath": "/dev/fuse", "containerPath": "/dev/fuse",
                                     "permissions": ["READ", "WRITE"]}]
                    },
                    "secrets": [{"name": "TOKEN",
                                 "valueFrom": "arn:aws:ssm:us-east-1:000000000000:parameter/token"}],
                    "logConfiguration": {
                        "logDriver": "fluentd",
                        "options": {"fluentd-address": "localhost:24224"},
                        "secretOptions": [{"name": "key",
                                           "valueFrom": "arn:aws:ssm:us-east-1:000000000000:parameter/k"}]
                    },
                    "repositoryCredentials": {
                        "credentialsParameter": "arn:aws:secretsmanager:us-east-1:000000000000:secret:reg"}
                }
            }),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let id = client
        .submit_job()
        .job_name("every-1")
        .job_queue("gpu-q")
        .job_definition("every")
        .tags("shared", "from-job")
        .tags("run", "r1")
        .send()
        .await
        .expect("submit job")
        .job_id
        .expect("jobId");
    let job = wait_running(&client, std::slice::from_ref(&id))
        .await
        .pop()
        .expect("job");
    let task_arn = job
        .container
        .as_ref()
        .and_then(|c| c.task_arn.clone())
        .expect("task ARN");
    let state = emu.state().await;
    let task = tasks(&state)
        .into_iter()
        .find(|t| t["taskArn"] == task_arn.as_str())
        .expect("the job's task is in the emulator");
    let ecs = ecs_client(&emu).await;

    // The task carries the definition's tags overlaid with the job's.
    let described = ecs
        .describe_tasks()
        .cluster(task["cluster"].as_str().expect("cluster"))
        .tasks(&task_arn)
        .include(ecst::TaskField::Tags)
        .send()
        .await
        .expect("describe task");
    let tags: HashMap<String, String> = described.tasks()[0]
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
        .collect();
    let want: HashMap<String, String> = [("team", "data"), ("shared", "from-job"), ("run", "r1")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(tags, want);

    let td = ecs
        .describe_task_definition()
        .task_definition(task["taskDefinitionArn"].as_str().expect("task definition"))
        .send()
        .await
        .expect("describe task definition")
        .task_definition
        .expect("task definition");
    assert_eq!(
        td.task_role_arn(),
        Some("arn:aws:iam::000000000000:role/job")
    );
    assert_eq!(
        td.execution_role_arn(),
        Some("arn:aws:iam::000000000000:role/exec")
    );
    let v = td.volumes();
    assert_eq!(v.len(), 2, "{v:?}");
    assert_eq!(v[0].host().and_then(|h| h.source_path()), Some("/srv/data"));
    let efs = v[1].efs_volume_configuration().expect("EFS volume");
    assert_eq!(efs.file_system_id(), "fs-12345678");
    assert_eq!(efs.root_directory(), Some("/exports"));
    assert_eq!(
        efs.transit_encryption(),
        Some(&ecst::EfsTransitEncryption::Enabled)
    );
    assert_eq!(efs.transit_encryption_port(), Some(2049));
    let auth = efs.authorization_config().expect("authorizationConfig");
    assert_eq!(auth.access_point_id(), Some("fsap-1234"));
    assert_eq!(auth.iam(), Some(&ecst::EfsAuthorizationConfigIam::Enabled));

    let c = &td.container_definitions()[0];
    assert_eq!(c.user(), Some("nobody"));
    assert_eq!(c.privileged(), Some(true));
    assert_eq!(c.readonly_root_filesystem(), Some(true));
    let mp: Vec<_> = c
        .mount_points()
        .iter()
        .map(|m| (m.source_volume(), m.container_path(), m.read_only()))
        .collect();
    assert_eq!(
        mp,
        [
            (Some("data"), Some("/data"), Some(true)),
            (Some("shared"), Some("/shared"), None)
        ]
    );
    let u = &c.ulimits()[0];
    assert_eq!(
        (u.name(), u.soft_limit(), u.hard_limit()),
        (&ecst::UlimitName::Nofile, 1024, 4096)
    );
    let lp = c.linux_parameters().expect("linuxParameters");
    assert_eq!(lp.shared_memory_size(), Some(256));
    assert_eq!(lp.init_process_enabled(), Some(true));
    assert_eq!(lp.max_swap(), Some(1024));
    assert_eq!(lp.swappiness(), Some(60));
    let t = &lp.tmpfs()[0];
    assert_eq!((t.container_path(), t.size()), ("/run", 64));
    assert_eq!(t.mount_options(), ["noexec"]);
    let d = &lp.devices()[0];
    assert_eq!(
        (d.host_path(), d.container_path()),
        ("/dev/fuse", Some("/dev/fuse"))
    );
    assert_eq!(
        d.permissions(),
        [
            ecst::DeviceCgroupPermission::Read,
            ecst::DeviceCgroupPermission::Write
        ]
    );
    let s = &c.secrets()[0];
    assert_eq!(
        (s.name(), s.value_from()),
        (
            "TOKEN",
            "arn:aws:ssm:us-east-1:000000000000:parameter/token"
        )
    );
    let log = c.log_configuration().expect("logConfiguration");
    assert_eq!(log.log_driver(), &ecst::LogDriver::Fluentd);
    assert_eq!(
        log.options()
            .and_then(|o| o.get("fluentd-address"))
            .map(String::as_str),
        Some("localhost:24224")
    );
    assert_eq!(log.secret_options()[0].name(), "key");
    let gpu: Vec<_> = c
        .resource_requirements()
        .iter()
        .map(|r| (r.r#type().clone(), r.value().to_string()))
        .collect();
    assert_eq!(gpu, [(ecst::ResourceType::Gpu, "1".to_string())]);
    assert_eq!(
        c.repository_credentials()
            .map(|r| r.credentials_parameter()),
        Some("arn:aws:secretsmanager:us-east-1:000000000000:secret:reg")
    );

    // A job that turns propagation off: its task has no tags, and it shares the task
    // definition (same settings; only tags, command and environment are per job).
    emu.complete(&task_arn, 0).await;
    let id2 = client
        .submit_job()
        .job_name("every-2")
        .job_queue("gpu-q")
        .job_definition("every")
        .propagate_tags(false)
        .tags("run", "r2")
        .send()
        .await
        .expect("submit job")
        .job_id
        .expect("jobId");
    let job2 = wait_running(&client, std::slice::from_ref(&id2))
        .await
        .pop()
        .expect("job");
    let arn2 = job2
        .container
        .as_ref()
        .and_then(|c| c.task_arn.clone())
        .expect("task ARN");
    let described = ecs
        .describe_tasks()
        .cluster(task["cluster"].as_str().expect("cluster"))
        .tasks(&arn2)
        .include(ecst::TaskField::Tags)
        .send()
        .await
        .expect("describe task");
    let t2 = &described.tasks()[0];
    assert!(t2.tags().is_empty(), "{:?}", t2.tags());
    assert_eq!(t2.task_definition_arn(), td.task_definition_arn());
}
