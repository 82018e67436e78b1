//! The `launch` scenario: how long new demand takes to become an EC2 launch. A server with the
//! AWS driver against an AWS emulator (`--aws-endpoint-url`, e.g. `localstack/run-emulator.sh`);
//! per trial a fresh SPOT environment with no instance, one SubmitJob, and the clock runs until
//! DescribeInstances shows an instance tagged for that environment (CreateFleet has returned).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

use super::client::{Conn, Endpoint};
use super::report::{Figure, Target};
use super::server::ChildServer;
use super::{BenchArgs, Workdir, progress};
use crate::model::{ResourceState, ResourceStatus};

const TRIALS: usize = 10;
const LAUNCH_LATENCY: Target = Target {
    text: "< 1000 ms",
    check: |v| v < 1000.0,
    at_size: 1,
};

/// A server with the AWS driver against `endpoint`, jobs of the LOCAL kind as processes, no
/// default resources, `ami` in its launch templates; `extra` are further options.
pub(super) async fn aws_server(
    dir: &std::path::Path,
    endpoint: &str,
    ami: &str,
    extra: &[&str],
) -> anyhow::Result<ChildServer> {
    let mut args = vec![
        "--local-runtime",
        "process",
        "--no-defaults",
        "--aws-endpoint-url",
        endpoint,
        "--aws-ami",
        ami,
    ];
    args.extend_from_slice(extra);
    ChildServer::start(dir, &args).await
}

/// An EC2 client of the emulator at `endpoint`, and a subnet of it.
pub(super) async fn emulator_ec2(endpoint: &str) -> anyhow::Result<(aws_sdk_ec2::Client, String)> {
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .load()
        .await;
    let ec2 = aws_sdk_ec2::Client::new(&conf);
    let subnet = ec2
        .describe_subnets()
        .send()
        .await
        .context("DescribeSubnets on the emulator (are AWS credentials set?)")?
        .subnets()
        .iter()
        .find_map(|s| s.subnet_id().map(str::to_string))
        .context("the AWS endpoint has no subnet")?;
    Ok((ec2, subnet))
}

/// A MANAGED environment `env` of c5.large (`cr_type` EC2 or SPOT, up to `max_vcpus`) in
/// `subnet`, once VALID, behind a new job queue `queue`.
pub(super) async fn managed_queue(
    conn: &mut Conn,
    env: &str,
    queue: &str,
    cr_type: &str,
    max_vcpus: u64,
    subnet: &str,
) -> anyhow::Result<()> {
    conn.call(
        "CreateComputeEnvironment",
        &json!({
            "computeEnvironmentName": env,
            "type": "MANAGED",
            "computeResources": {
                "type": cr_type, "minvCpus": 0, "maxvCpus": max_vcpus,
                "instanceTypes": ["c5.large"], "subnets": [subnet],
                "instanceRole": "ecsInstanceRole"
            }
        }),
    )
    .await?;
    wait_valid(conn, env, Duration::from_secs(60)).await?;
    conn.call(
        "CreateJobQueue",
        &json!({
            "jobQueueName": queue, "priority": 1,
            "computeEnvironmentOrder": [{"order": 1, "computeEnvironment": env}]
        }),
    )
    .await?;
    Ok(())
}

/// Waits until compute environment `name` is VALID; INVALID or a timeout is an error.
pub(super) async fn wait_valid(
    conn: &mut Conn,
    name: &str,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let d = conn
            .call(
                "DescribeComputeEnvironments",
                &json!({ "computeEnvironments": [name] }),
            )
            .await?;
        let status = d["computeEnvironments"][0]["status"].as_str();
        match status.and_then(|s| s.parse().ok()) {
            Some(ResourceStatus::Valid) => return Ok(()),
            Some(ResourceStatus::Invalid) => {
                bail!("{name} INVALID: {}", d["computeEnvironments"][0])
            }
            _ if Instant::now() > deadline => {
                bail!("{name} not VALID within {} s", within.as_secs())
            }
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

pub async fn launch(args: &BenchArgs, work: &Workdir) -> anyhow::Result<Vec<Figure>> {
    const S: &str = "launch";
    let Some(endpoint) = args.aws_endpoint_url.as_deref() else {
        bail!(
            "the launch scenario needs --aws-endpoint-url: an AWS emulator, e.g. \
             eval \"$(localstack/run-emulator.sh)\" and --aws-endpoint-url \"$AWS_ENDPOINT_URL\""
        );
    };
    let (ec2, subnet) = emulator_ec2(endpoint).await?;
    let dir = work.fresh(S)?;
    let server = aws_server(&dir, endpoint, &args.aws_ami, &[]).await?;
    let mut conn = Conn::open(&Endpoint {
        addr: server.addr.clone(),
    })
    .await?;
    super::scenarios::register_definition(&mut conn, "launch", "true", 512).await?;
    // Names unique per run: an emulator may be reused between runs.
    let run = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let mut latencies = Vec::new();
    for t in 0..TRIALS {
        let name = format!("launch-{run}-{t}");
        managed_queue(&mut conn, &name, &name, "SPOT", 4, &subnet).await?;
        // Let the engine and the driver settle on the new queue before the clock starts.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = Instant::now();
        conn.call(
            "SubmitJob",
            &json!({ "jobName": "j", "jobQueue": name, "jobDefinition": "launch" }),
        )
        .await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = ec2
                .describe_instances()
                .filters(
                    aws_sdk_ec2::types::Filter::builder()
                        .name("tag:flotilla:compute-environment")
                        .values(&name)
                        .build(),
                )
                .send()
                .await?;
            if out.reservations().iter().any(|r| !r.instances().is_empty()) {
                break;
            }
            if Instant::now() > deadline {
                bail!("no instance launched for {name} within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let ms = started.elapsed().as_secs_f64() * 1e3;
        progress!("launch: trial {t}: {ms:.0} ms");
        latencies.push(ms);
        // Tear the trial down so the driver's passes stay as short as in the first trial.
        for (op, body) in [
            (
                "UpdateJobQueue",
                json!({"jobQueue": name, "state": ResourceState::Disabled}),
            ),
            ("DeleteJobQueue", json!({"jobQueue": name})),
            (
                "UpdateComputeEnvironment",
                json!({"computeEnvironment": name, "state": ResourceState::Disabled}),
            ),
            (
                "DeleteComputeEnvironment",
                json!({"computeEnvironment": name}),
            ),
        ] {
            if let Err(e) = conn.call(op, &body).await {
                progress!("launch: clean-up {op} failed: {e:#}");
            }
        }
    }
    server.stop().await?;
    work.discard(&dir);
    latencies.sort_by(f64::total_cmp);
    let median = latencies[latencies.len() / 2];
    let max = latencies[latencies.len() - 1];
    Ok(vec![
        Figure::new(
            S,
            format!("SubmitJob to instance launched, median of {TRIALS}"),
            median,
            "ms",
        )
        .target(LAUNCH_LATENCY, 1)
        .bound(
            "engine pass (deferred <= 100 ms) + driver wake-up + DescribeInstances + CreateFleet",
        ),
        Figure::new(
            S,
            format!("SubmitJob to instance launched, max of {TRIALS}"),
            max,
            "ms",
        )
        .target(LAUNCH_LATENCY, 1),
    ])
}
