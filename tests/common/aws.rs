//! Helpers for the AWS driver's end-to-end tests: a server with the driver pointed at the
//! emulator, managed environments over a few small instance types, and a loop that plays the
//! containers' side (ends each running task with a chosen exit code).

use super::emulator::{AMI, Emulator};
use super::{Server, ServerOptions};
use aws_sdk_batch::types::*;
use serde_json::Value;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// Instance types of the test environments: the largest has 4 vCPUs, so "maxvCpus plus at most
/// one instance" is maxvCpus + 4.
pub const TYPES: &[&str] = &["c5.large", "c5.xlarge", "m5.large", "m5.xlarge"];
pub const LARGEST_VCPUS: i64 = 4;

pub fn start(emu: &Emulator, idle_seconds: u64, extra: &[&str]) -> Server {
    let mut with_ami = vec!["--aws-ami", AMI];
    with_ami.extend_from_slice(extra);
    start_without_ami(emu, idle_seconds, &with_ami)
}

/// A server whose managed environments boot the AMIs SSM recommends (no `--aws-ami`).
pub fn start_without_ami(emu: &Emulator, idle_seconds: u64, extra: &[&str]) -> Server {
    let mut args: Vec<String> = [
        "--aws-endpoint-url",
        emu.endpoint.as_str(),
        "--aws-poll-ms",
        "200",
        "--local-runtime",
        "process",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push("--aws-idle-seconds".into());
    args.push(idle_seconds.to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    Server::start_with(ServerOptions {
        no_defaults: true,
        dispatch: true,
        extra_args: args,
        ..Default::default()
    })
}

/// A MANAGED environment of `cr_type` (EC2 or SPOT) over [`TYPES`]; waits until it is VALID
/// and returns its ARN.
pub async fn create_managed_ce(
    client: &aws_sdk_batch::Client,
    emu: &Emulator,
    name: &str,
    cr_type: CrType,
    min: i32,
    max: i32,
) -> String {
    create_ce(client, emu, name, cr_type, TYPES, (min, max), None).await
}

/// A MANAGED environment of `cr_type` (EC2 or SPOT) of one instance type up to `max` vCPUs;
/// waits until it is VALID and returns its ARN.
pub async fn create_ce_of_type(
    client: &aws_sdk_batch::Client,
    emu: &Emulator,
    name: &str,
    cr_type: CrType,
    instance_type: &str,
    max: i32,
) -> String {
    create_ce(client, emu, name, cr_type, &[instance_type], (0, max), None).await
}

/// A MANAGED environment of `cr_type` over `types` (in that order), `vcpus` = (min, max), with
/// `strategy` (default: SPOT_PRICE_CAPACITY_OPTIMIZED for Spot at a 100% bid, else
/// BEST_FIT_PROGRESSIVE); waits until it is VALID and returns its ARN.
pub async fn create_ce(
    client: &aws_sdk_batch::Client,
    emu: &Emulator,
    name: &str,
    cr_type: CrType,
    types: &[&str],
    (min, max): (i32, i32),
    strategy: Option<CrAllocationStrategy>,
) -> String {
    let spot = cr_type == CrType::Spot;
    let strategy = strategy.unwrap_or(if spot {
        CrAllocationStrategy::SpotPriceCapacityOptimized
    } else {
        CrAllocationStrategy::BestFitProgressive
    });
    let mut cr = ComputeResource::builder()
        .r#type(cr_type)
        .minv_cpus(min)
        .maxv_cpus(max)
        .subnets(default_subnet(emu).await)
        .instance_role("ecsInstanceRole")
        .allocation_strategy(strategy);
    if spot {
        cr = cr.bid_percentage(100);
    }
    for t in types {
        cr = cr.instance_types(*t);
    }
    let ce = client
        .create_compute_environment()
        .compute_environment_name(name)
        .r#type(CeType::Managed)
        .compute_resources(cr.build())
        .send()
        .await
        .expect("create compute environment")
        .compute_environment_arn
        .expect("arn");
    wait_valid(client, name).await;
    ce
}

/// Waits until the environment is VALID and names its ECS cluster; returns the cluster ARN.
pub async fn wait_valid(client: &aws_sdk_batch::Client, name: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = describe_ce(client, name).await;
        match d.status() {
            Some(CeStatus::Valid) => {
                let arn = d.ecs_cluster_arn().unwrap_or_default().to_string();
                assert!(
                    arn.contains(":cluster/"),
                    "a VALID environment names its ECS cluster: {d:?}"
                );
                return arn;
            }
            Some(CeStatus::Invalid) => panic!("environment INVALID: {:?}", d.status_reason()),
            _ if Instant::now() > deadline => panic!("environment not VALID in 30 s: {d:?}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Registers `<name>` (busybox, 1 vCPU, 1 GiB; jobs override the size).
pub async fn register_def(client: &aws_sdk_batch::Client, name: &str) {
    client
        .register_job_definition()
        .job_definition_name(name)
        .r#type(JobDefinitionType::Container)
        .container_properties(
            ContainerProperties::builder()
                .image("busybox")
                .command("true")
                .resource_requirements(res(ResourceType::Vcpu, "1"))
                .resource_requirements(res(ResourceType::Memory, "1024"))
                .build(),
        )
        .send()
        .await
        .expect("register job definition");
}

/// A MANAGED SPOT environment `name`, its queue `<name>-q` and a job definition `<name>-def`.
/// Returns the queue name.
pub async fn spot_setup(
    client: &aws_sdk_batch::Client,
    emu: &Emulator,
    name: &str,
    min: i32,
    max: i32,
) -> String {
    let ce = create_managed_ce(client, emu, name, CrType::Spot, min, max).await;
    super::create_queue(client, &format!("{name}-q"), &ce).await;
    register_def(client, &format!("{name}-def")).await;
    format!("{name}-q")
}

/// SDK configuration for a client of the emulator (us-east-1, test credentials).
pub async fn emulator_config(emu: &Emulator) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(&emu.endpoint)
        .credentials_provider(aws_credential_types::Credentials::for_tests())
        .load()
        .await
}

/// An ECS client on the emulator, to look at what Flotilla registered and started.
pub async fn ecs_client(emu: &Emulator) -> aws_sdk_ecs::Client {
    let conf = emulator_config(emu).await;
    aws_sdk_ecs::Client::new(&conf)
}

/// An EC2 client on the emulator, for what a user would do in the account themselves.
pub async fn ec2_client(emu: &Emulator) -> aws_sdk_ec2::Client {
    let conf = emulator_config(emu).await;
    aws_sdk_ec2::Client::new(&conf)
}

/// One instance launched the way a team would launch its own (RunInstances), with `user_data`
/// (shell text) and instance tags; returns its ID.
pub async fn run_instance(
    emu: &Emulator,
    instance_type: aws_sdk_ec2::types::InstanceType,
    user_data: Option<&str>,
    tags: &[(&str, &str)],
) -> String {
    use base64::Engine as _;
    let mut call = ec2_client(emu)
        .await
        .run_instances()
        .image_id(AMI)
        .instance_type(instance_type)
        .min_count(1)
        .max_count(1)
        .set_user_data(user_data.map(|u| base64::engine::general_purpose::STANDARD.encode(u)));
    if !tags.is_empty() {
        let mut spec = aws_sdk_ec2::types::TagSpecification::builder()
            .resource_type(aws_sdk_ec2::types::ResourceType::Instance);
        for (k, v) in tags {
            spec = spec.tags(aws_sdk_ec2::types::Tag::builder().key(*k).value(*v).build());
        }
        call = call.tag_specifications(spec.build());
    }
    call.send()
        .await
        .expect("run instances")
        .instances()
        .first()
        .and_then(|i| i.instance_id().map(str::to_string))
        .expect("instance id")
}

/// Waits until every job is RUNNING and returns them.
pub async fn wait_running(client: &aws_sdk_batch::Client, ids: &[String]) -> Vec<JobDetail> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let jobs = describe_all(client, ids).await;
        if jobs.iter().all(|j| j.status == Some(JobStatus::Running)) {
            return jobs;
        }
        assert!(
            Instant::now() < deadline,
            "jobs did not all start: {jobs:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A subnet of the emulator's default VPC.
pub async fn default_subnet(emu: &Emulator) -> String {
    ec2_client(emu)
        .await
        .describe_subnets()
        .send()
        .await
        .expect("describe subnets")
        .subnets()
        .iter()
        .find_map(|s| s.subnet_id().map(str::to_string))
        .expect("the emulator's default VPC has subnets")
}

pub fn res(t: ResourceType, v: &str) -> ResourceRequirement {
    ResourceRequirement::builder().r#type(t).value(v).build()
}

pub async fn describe_ce(client: &aws_sdk_batch::Client, name: &str) -> ComputeEnvironmentDetail {
    client
        .describe_compute_environments()
        .compute_environments(name)
        .send()
        .await
        .expect("describe compute environments")
        .compute_environments
        .unwrap_or_default()
        .pop()
        .expect("environment exists")
}

/// Submits a job of `vcpus` vCPUs with `attempts` attempts.
pub async fn submit(
    client: &aws_sdk_batch::Client,
    queue: &str,
    def: &str,
    name: &str,
    vcpus: u32,
    attempts: i32,
) -> String {
    client
        .submit_job()
        .job_name(name)
        .job_queue(queue)
        .job_definition(def)
        .retry_strategy(RetryStrategy::builder().attempts(attempts).build())
        .container_overrides(
            ContainerOverrides::builder()
                .resource_requirements(res(ResourceType::Vcpu, &vcpus.to_string()))
                .resource_requirements(res(ResourceType::Memory, &(vcpus * 1024).to_string()))
                .build(),
        )
        .send()
        .await
        .expect("submit job")
        .job_id
        .expect("jobId")
}

pub async fn describe_all(client: &aws_sdk_batch::Client, ids: &[String]) -> Vec<JobDetail> {
    let mut out = Vec::new();
    for chunk in ids.chunks(100) {
        out.extend(
            client
                .describe_jobs()
                .set_jobs(Some(chunk.to_vec()))
                .send()
                .await
                .expect("describe jobs")
                .jobs
                .unwrap_or_default(),
        );
    }
    out
}

pub fn is_final(j: &JobDetail) -> bool {
    matches!(j.status, Some(JobStatus::Succeeded | JobStatus::Failed))
}

/// vCPUs of the emulator's instances that are not terminated (pending, running).
pub fn live_vcpus(state: &Value) -> i64 {
    live_instances(state)
        .iter()
        .map(|i| i["resources"]["cpu"].as_i64().unwrap_or(0) / 1024)
        .sum()
}

pub fn live_instances(state: &Value) -> Vec<Value> {
    state["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| matches!(i["state"].as_str(), Some("pending" | "running")))
        .cloned()
        .collect()
}

/// Container instance ARN → EC2 instance ID, from the emulator's state.
pub fn instance_of_container_instance(state: &Value) -> std::collections::HashMap<String, String> {
    state["containerInstances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            Some((
                c["containerInstanceArn"].as_str()?.to_string(),
                c["instanceId"].as_str()?.to_string(),
            ))
        })
        .collect()
}

pub fn tasks(state: &Value) -> Vec<Value> {
    state["tasks"].as_array().cloned().unwrap_or_default()
}

/// Runs the harness side of jobs until every job is final: each RUNNING attempt's task is
/// completed with the exit code `exit(job name, attempt number)` chooses. Also checks, on every
/// round, that the fleet stays within `max_vcpus` plus one instance. Returns the final jobs.
pub async fn drive(
    client: &aws_sdk_batch::Client,
    emu: &Emulator,
    ids: &[String],
    max_vcpus: i64,
    secs: u64,
    mut exit: impl FnMut(&str, usize) -> Option<i32>,
) -> Vec<JobDetail> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut completed: HashSet<String> = HashSet::new();
    loop {
        let jobs = describe_all(client, ids).await;
        if jobs.iter().all(is_final) {
            return jobs;
        }
        let state = emu.state().await;
        let vcpus = live_vcpus(&state);
        assert!(
            vcpus <= max_vcpus + LARGEST_VCPUS,
            "the fleet has {vcpus} vCPUs, more than maxvCpus {max_vcpus} plus one instance"
        );
        let running: HashSet<String> = tasks(&state)
            .iter()
            .filter(|t| t["lastStatus"] == "RUNNING")
            .filter_map(|t| t["taskArn"].as_str().map(str::to_string))
            .collect();
        for j in &jobs {
            if j.status != Some(JobStatus::Running) {
                continue;
            }
            let Some(arn) = j.container.as_ref().and_then(|c| c.task_arn.clone()) else {
                continue;
            };
            if completed.contains(&arn) || !running.contains(&arn) {
                continue;
            }
            let attempt = j.attempts.as_ref().map_or(0, Vec::len) + 1;
            if let Some(code) = exit(j.job_name.as_deref().unwrap_or_default(), attempt) {
                emu.complete(&arn, code).await;
                completed.insert(arn);
            }
        }
        if Instant::now() > deadline {
            let summary: Vec<_> = jobs
                .iter()
                .filter(|j| !is_final(j))
                .map(|j| {
                    (
                        j.job_name.clone(),
                        j.status.clone(),
                        j.status_reason.clone(),
                    )
                })
                .collect();
            panic!("jobs not final within {secs} s: {summary:?}");
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Waits until the emulator has no live instance and the environment reports `desired`
/// vCPUs.
pub async fn wait_drained(client: &aws_sdk_batch::Client, emu: &Emulator, ce: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let state = emu.state().await;
        let live = live_instances(&state);
        let d = describe_ce(client, ce).await;
        let desired = d.compute_resources().and_then(|c| c.desiredv_cpus());
        if live.is_empty() && desired == Some(0) {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "not drained within {secs} s: {} live instances, desiredvCpus {desired:?}",
                live.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The value of an SSM parameter in the emulator (the public ECS-optimized AMI ones).
pub async fn ssm_value(emu: &Emulator, name: &str) -> String {
    let conf = emulator_config(emu).await;
    aws_sdk_ssm::Client::new(&conf)
        .get_parameter()
        .name(name)
        .send()
        .await
        .expect("get parameter")
        .parameter()
        .and_then(|p| p.value())
        .expect("parameter value")
        .to_string()
}
