//! Infrastructure updates against the AWS emulator, as AWS Batch does them: an
//! UpdateComputeEnvironment that changes the AMI (or the launch template, instance types, …)
//! replaces the instances launched before it. Jobs already running on an old instance finish
//! there; new jobs start only on new instances; an old instance is terminated once idle. With
//! `updatePolicy.terminateJobsOnUpdate`, jobs still running after `jobExecutionTimeoutMinutes`
//! are stopped and run again on the new instances.

mod common;

use aws_sdk_batch::types::*;
use common::aws::*;
use common::create_queue;
use common::emulator::{AMI, Emulator};
use serde_json::json;
use std::time::{Duration, Instant};

/// Another AMI the emulator has (the GPU ECS image), to update to.
async fn other_ami(emu: &Emulator) -> String {
    ssm_value(
        emu,
        "/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id",
    )
    .await
}

/// A c5.large environment (2 vCPUs an instance) of at most two instances, its queue and a
/// definition; returns the environment's ARN.
async fn setup(c: &aws_sdk_batch::Client, emu: &Emulator, name: &str) -> String {
    let cr = ComputeResource::builder()
        .r#type(CrType::Ec2)
        .minv_cpus(0)
        .maxv_cpus(4)
        .subnets(default_subnet(emu).await)
        .instance_role("ecsInstanceRole")
        .instance_types("c5.large")
        .allocation_strategy(CrAllocationStrategy::BestFitProgressive)
        .build();
    let arn = c
        .create_compute_environment()
        .compute_environment_name(name)
        .r#type(CeType::Managed)
        .compute_resources(cr)
        .send()
        .await
        .expect("create")
        .compute_environment_arn
        .expect("arn");
    wait_valid(c, name).await;
    create_queue(c, &format!("{name}-q"), &arn).await;
    register_def(c, "d").await;
    arn
}

/// The EC2 instance and its AMI that a RUNNING job's task runs on.
async fn host_of(c: &aws_sdk_batch::Client, emu: &Emulator, job: &str) -> (String, String) {
    let j = wait_running(c, &[job.to_string()]).await.remove(0);
    let task = task_of(&j);
    let ci = tasks(&emu.state().await)
        .iter()
        .find(|t| t["taskArn"] == task.as_str())
        .and_then(|t| t["containerInstanceArn"].as_str().map(str::to_string))
        .expect("the job's task names its container instance");
    let instance = instance_of_container_instance(&emu.state().await)
        .get(&ci)
        .cloned()
        .expect("the container instance's EC2 instance");
    let image = image_of(emu, &instance).await;
    (instance, image)
}

/// The AMI an EC2 instance was launched from.
async fn image_of(emu: &Emulator, instance: &str) -> String {
    ec2_client(emu)
        .await
        .describe_instances()
        .instance_ids(instance)
        .send()
        .await
        .expect("describe instances")
        .reservations()[0]
        .instances()[0]
        .image_id()
        .unwrap_or_default()
        .to_string()
}

fn task_of(j: &JobDetail) -> String {
    j.container
        .as_ref()
        .and_then(|c| c.task_arn.clone())
        .expect("a running job has a task")
}

async fn wait_gone(emu: &Emulator, instance: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while live_instances(&emu.state().await)
        .iter()
        .any(|i| i["instanceId"] == instance)
    {
        assert!(
            Instant::now() < deadline,
            "{instance} still live after {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_final(c: &aws_sdk_batch::Client, id: &str) -> JobDetail {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let j = describe_all(c, &[id.to_string()]).await.remove(0);
        if is_final(&j) {
            return j;
        }
        assert!(Instant::now() < deadline, "{j:?} not final in 60 s");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

async fn reason(c: &aws_sdk_batch::Client, name: &str) -> String {
    describe_ce(c, name)
        .await
        .status_reason()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_that_changes_the_ami_replaces_the_fleet_without_failing_running_jobs() {
    let emu = Emulator::start();
    let server = start(&emu, 300, &[]);
    let c = server.client();
    let arn = setup(&c, &emu, "roll").await;
    let old_job = submit(&c, "roll-q", "d", "old", 1, 1).await;
    let (old_host, image) = host_of(&c, &emu, &old_job).await;
    assert_eq!(image, AMI);

    let new_ami = other_ami(&emu).await;
    c.update_compute_environment()
        .compute_environment(&arn)
        .compute_resources(ComputeResourceUpdate::builder().image_id(&new_ami).build())
        .send()
        .await
        .expect("update the AMI");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !reason(&c, "roll")
        .await
        .contains("infrastructure update: 1 instance(s)")
    {
        assert!(
            Instant::now() < deadline,
            "no update in the status: {}",
            reason(&c, "roll").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The old instance has room for this job, but it goes to a new one, with the new AMI.
    let new_job = submit(&c, "roll-q", "d", "new", 1, 1).await;
    let (new_host, image) = host_of(&c, &emu, &new_job).await;
    assert_ne!(new_host, old_host);
    assert_eq!(image, new_ami);

    // The old job was left to run; it finishes, then its instance goes.
    let old = describe_all(&c, std::slice::from_ref(&old_job))
        .await
        .remove(0);
    assert_eq!(old.status, Some(JobStatus::Running));
    emu.complete(&task_of(&old), 0).await;
    assert_eq!(
        wait_final(&c, &old_job).await.status,
        Some(JobStatus::Succeeded)
    );
    wait_gone(&emu, &old_host, 30).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while reason(&c, "roll").await != "ComputeEnvironment Healthy" {
        assert!(Instant::now() < deadline, "{}", reason(&c, "roll").await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let new = describe_all(&c, std::slice::from_ref(&new_job))
        .await
        .remove(0);
    emu.complete(&task_of(&new), 0).await;
    assert_eq!(
        wait_final(&c, &new_job).await.status,
        Some(JobStatus::Succeeded)
    );
    assert!(
        live_instances(&emu.state().await)
            .iter()
            .any(|i| i["instanceId"] == new_host.as_str()),
        "the new instance stays (idle timeout 300 s)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_jobs_on_update_moves_what_still_runs_after_the_timeout_to_new_instances() {
    let emu = Emulator::start();
    let server = start(&emu, 300, &[]);
    let c = server.client();
    let raw = server.raw();
    let arn = setup(&c, &emu, "cut").await;
    let job = submit(&c, "cut-q", "d", "long", 1, 1).await;
    let (old_host, _) = host_of(&c, &emu, &job).await;
    let old_task = task_of(&describe_all(&c, std::slice::from_ref(&job)).await[0]);

    let new_ami = other_ami(&emu).await;
    let r = raw
        .post(
            "UpdateComputeEnvironment",
            &json!({"computeEnvironment": arn, "computeResources": {"imageId": new_ami},
                    "updatePolicy": {"terminateJobsOnUpdate": true, "jobExecutionTimeoutMinutes": 1}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let shown = describe_ce(&c, "cut").await;
    assert_eq!(
        shown
            .update_policy()
            .and_then(|p| p.job_execution_timeout_minutes()),
        Some(1)
    );

    // A minute after the update the job is still running on the old instance: it is stopped
    // there and runs again on a new one, without spending its single attempt.
    wait_gone(&emu, &old_host, 120).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let j = describe_all(&c, std::slice::from_ref(&job)).await.remove(0);
        assert!(!is_final(&j), "{j:?}");
        if j.status == Some(JobStatus::Running) && task_of(&j) != old_task {
            break;
        }
        assert!(Instant::now() < deadline, "not running again: {j:?}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let (new_host, image) = host_of(&c, &emu, &job).await;
    assert_ne!(new_host, old_host);
    assert_eq!(image, new_ami);
    let j = describe_all(&c, std::slice::from_ref(&job)).await.remove(0);
    emu.complete(&task_of(&j), 0).await;
    let done = wait_final(&c, &job).await;
    assert_eq!(done.status, Some(JobStatus::Succeeded), "{done:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_policies_are_checked_and_refused_where_nothing_is_replaced() {
    let emu = Emulator::start();
    let server = start(&emu, 300, &[]);
    let c = server.client();
    let raw = server.raw();
    let arn = setup(&c, &emu, "pol").await;
    for (policy, field) in [
        (
            json!({"jobExecutionTimeoutMinutes": 0}),
            "updatePolicy.jobExecutionTimeoutMinutes",
        ),
        (
            json!({"jobExecutionTimeoutMinutes": 361}),
            "updatePolicy.jobExecutionTimeoutMinutes",
        ),
    ] {
        raw.post(
            "UpdateComputeEnvironment",
            &json!({"computeEnvironment": arn, "updatePolicy": policy}),
        )
        .await
        .assert_client_error(field);
    }
    raw.post(
        "CreateComputeEnvironment",
        &json!({"computeEnvironmentName": "here", "type": "MANAGED",
                "computeResources": {"type": "LOCAL"}}),
    )
    .await;
    raw.post(
        "UpdateComputeEnvironment",
        &json!({"computeEnvironment": "here", "updatePolicy": {"terminateJobsOnUpdate": true}}),
    )
    .await
    .assert_client_error("updatePolicy");
    raw.post(
        "UpdateComputeEnvironment",
        &json!({"computeEnvironment": "here", "computeResources": {"updateToLatestImageVersion": true}}),
    )
    .await
    .assert_client_error("computeResources.updateToLatestImageVersion");
    // A launch template given by update is checked as at creation.
    raw.post(
        "UpdateComputeEnvironment",
        &json!({"computeEnvironment": arn, "computeResources": {
            "launchTemplate": {"launchTemplateName": "t", "overrides": [
                {"launchTemplateName": "u", "targetInstanceTypes": ["m5.large"]}]}}}),
    )
    .await
    .assert_client_error("computeResources.launchTemplate.overrides[0].targetInstanceTypes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_to_latest_image_version_replaces_every_instance_on_the_ami_resolved_again() {
    let emu = Emulator::start();
    // No --aws-ami: the environment boots the AMI SSM recommends.
    let server = start_without_ami(&emu, 300, &[]);
    let c = server.client();
    let raw = server.raw();
    let arn = setup(&c, &emu, "latest").await;
    c.update_compute_environment()
        .compute_environment(&arn)
        .compute_resources(ComputeResourceUpdate::builder().minv_cpus(2).build())
        .send()
        .await
        .expect("keep one instance");
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        if let Some(i) = live_instances(&emu.state().await).first() {
            break i["instanceId"].as_str().unwrap_or_default().to_string();
        }
        assert!(Instant::now() < deadline, "no instance for minvCpus");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // minvCpus alone is a scaling update: the instance stays.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        live_instances(&emu.state().await)
            .iter()
            .any(|i| i["instanceId"] == first.as_str())
    );

    let r = raw
        .post(
            "UpdateComputeEnvironment",
            &json!({"computeEnvironment": arn, "computeResources": {"updateToLatestImageVersion": true}}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let shown = raw
        .post(
            "DescribeComputeEnvironments",
            &json!({"computeEnvironments": ["latest"]}),
        )
        .await
        .json();
    assert!(
        !shown.to_string().contains("Epoch") && !shown.to_string().contains("updateToLatest"),
        "{shown}"
    );
    wait_gone(&emu, &first, 30).await;
    let recommended = ssm_value(
        &emu,
        "/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id",
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let live = live_instances(&emu.state().await);
        if let Some(i) = live.first() {
            assert_ne!(i["instanceId"], first.as_str());
            let id = i["instanceId"].as_str().unwrap_or_default();
            assert_eq!(image_of(&emu, id).await, recommended);
            break;
        }
        assert!(Instant::now() < deadline, "no replacement for minvCpus");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
