//! aws-scale: N short jobs through the AWS driver on a fleet of hundreds of instances, against
//! the AWS emulator (moto + Flotilla's harness, `localstack/`).
//!
//! Why the emulator and not an in-process fake: the driver's cost at scale is in what it sends
//! (how many calls, at what rate, with what waiting), and only the real SDK against a real
//! HTTP service measures that. The emulator was the bottleneck once (moto found a task by
//! scanning every task of every cluster, seconds per DescribeTasks at 100,000 tasks); the
//! harness now looks tasks up by ARN (P16), and its `/_flotilla/workload` stops each task
//! `taskSeconds` after StartTask and registers an instance `bootSeconds` after it first runs.
//! What is left bounds the run from outside the server: the client-side rate limits at AWS's
//! own quotas (StartTask 20/s unless `--aws-rate-limit` says the account has more).
//!
//! The clock runs from the first SubmitJob until every job is SUCCEEDED; then the fleet must
//! scale in to nothing within the idle timeout, and every instance still running is a leak.

use super::*;

use crate::compute::aws::{RateLimit, default_limit};

/// The only instance type (`launch::managed_queue`'s): 2 vCPUs and 4 GiB, two 1-vCPU jobs
/// at a time.
const INSTANCE_TYPE: &str = "c5.large";
const SLOTS_PER_INSTANCE: f64 = 2.0;
const ENVIRONMENT: &str = "aws-scale";
/// Scale-in after this much idleness (the server's `--aws-idle-seconds`).
const IDLE_SECONDS: u64 = 10;
const RATE_RATIO: Target = Target {
    text: ">= 90%",
    check: |v| v >= 90.0,
    at_size: 100_000,
};
const COST_RATIO: Target = Target {
    text: "<= 1.10x",
    check: |v| v <= 1.10,
    at_size: 100_000,
};

/// AWS calls the server made, from its `/metrics`: (operation, outcome) → count.
fn aws_calls(text: &str) -> Vec<(String, String, f64)> {
    const NAME: &str = "flotilla_aws_calls_total";
    let mut out = Vec::new();
    for line in text.lines().filter(|l| l.starts_with(NAME)) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let label = |k: &str| {
            let key = format!("{k}=\"");
            series
                .split_once(&key)
                .and_then(|(_, rest)| rest.split_once('"'))
                .map(|(v, _)| v.to_string())
                .unwrap_or_default()
        };
        if let Ok(v) = value.parse::<f64>() {
            out.push((label("operation"), label("outcome"), v));
        }
    }
    out
}

fn calls_of(calls: &[(String, String, f64)], op: &str, outcome: Option<&str>) -> f64 {
    calls
        .iter()
        .filter(|(o, out, _)| o == op && outcome.is_none_or(|w| w == out))
        .map(|(_, _, v)| v)
        .sum()
}

/// `POST /_flotilla/<path>` on the emulator's control API.
async fn control(endpoint: &str, path: &str, body: Value) -> anyhow::Result<Value> {
    let client: crate::util::http::Client<http_body_util::Full<Bytes>> =
        crate::util::http::client()?;
    let req = http::Request::builder()
        .method(http::Method::POST)
        .uri(format!(
            "{}/_flotilla/{path}",
            endpoint.trim_end_matches('/')
        ))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(Bytes::from(serde_json::to_vec(
            &body,
        )?)))?;
    let resp = client.request(req).await?;
    let status = resp.status();
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await?
        .to_bytes();
    if !status.is_success() {
        bail!(
            "the emulator's /_flotilla/{path} answered {status} ({}): the aws-scale scenario \
             needs Flotilla's emulator (localstack/run-emulator.sh), not another endpoint",
            String::from_utf8_lossy(&bytes)
        );
    }
    Ok(serde_json::from_slice(&bytes)?)
}

/// Instances of the environment that are pending or running.
async fn live_instances(ec2: &aws_sdk_ec2::Client) -> anyhow::Result<usize> {
    use aws_sdk_ec2::types::Filter;
    let mut n = 0;
    let mut token = None;
    loop {
        let out = ec2
            .describe_instances()
            .filters(
                Filter::builder()
                    .name(format!("tag:{}", crate::compute::aws::TAG_ENV))
                    .values(ENVIRONMENT)
                    .build(),
            )
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .values("pending")
                    .values("running")
                    .build(),
            )
            .set_next_token(token)
            .send()
            .await?;
        n += out
            .reservations()
            .iter()
            .map(|r| r.instances().len())
            .sum::<usize>();
        token = out.next_token().map(str::to_string);
        if token.is_none() {
            return Ok(n);
        }
    }
}

pub async fn aws_scale(args: &BenchArgs, work: &Workdir) -> anyhow::Result<Vec<Figure>> {
    const S: &str = "aws-scale";
    let n = args.jobs as usize;
    let Some(endpoint) = args.aws_endpoint_url.as_deref() else {
        bail!(
            "the aws-scale scenario needs --aws-endpoint-url: Flotilla's AWS emulator, e.g. \
             eval \"$(localstack/run-emulator.sh)\" and --aws-endpoint-url \"$AWS_ENDPOINT_URL\""
        );
    };
    let task_seconds = args.aws_task_seconds;
    let max_vcpus = args.aws_max_vcpus;
    let limits: Vec<RateLimit> = args
        .aws_rate_limit
        .iter()
        .map(|l| l.parse().map_err(|e: String| anyhow::anyhow!(e)))
        .collect::<anyhow::Result<_>>()?;
    let start_limit = limits
        .iter()
        .find(|l| l.operation == "StartTask")
        .map_or_else(|| default_limit("StartTask").0, |l| l.rate);

    let (ec2, subnet) = crate::bench::launch::emulator_ec2(endpoint).await?;
    if live_instances(&ec2).await? > 0 {
        bail!("the emulator already has live instances tagged {ENVIRONMENT}: reset it first");
    }
    control(
        endpoint,
        "workload",
        json!({"taskSeconds": task_seconds, "bootSeconds": args.aws_boot_seconds, "exitCode": 0}),
    )
    .await?;

    let dir = work.fresh(S)?;
    let idle = IDLE_SECONDS.to_string();
    let mut extra = vec!["--aws-idle-seconds", idle.as_str()];
    for l in &args.aws_rate_limit {
        extra.extend(["--aws-rate-limit", l.as_str()]);
    }
    let server = crate::bench::launch::aws_server(&dir, endpoint, &args.aws_ami, &extra).await?;
    let ep = Endpoint {
        addr: server.addr.clone(),
    };
    let mut conn = Conn::open(&ep).await?;
    register_definition(&mut conn, DEFINITION, "true", 1024).await?;
    crate::bench::launch::managed_queue(&mut conn, ENVIRONMENT, QUEUE, "EC2", max_vcpus, &subnet)
        .await?;

    let mut metrics = MetricsConn::new(&ep);
    let calls_before = aws_calls(&metrics.scrape().await?);
    let before = server.stat()?;
    let wall_clock_start = now_ms();
    let t0 = Instant::now();
    progress!(
        "{S}: submitting {n} jobs of {task_seconds} s to {INSTANCE_TYPE} x up to {} \
         (StartTask limit {start_limit}/s)",
        max_vcpus / 2
    );
    let load = submit_load(&ep, n, args.clients as usize, ClientKind::Raw, S).await?;
    if let Some(e) = &load.first_error {
        bail!("{} SubmitJob calls failed; first: {e}", load.errors);
    }
    progress!("{S}: {n} accepted in {:.1} s", load.elapsed.as_secs_f64());

    // (seconds, StartTask calls that started a task, jobs finished), every second.
    let mut samples: Vec<(f64, f64, f64)> = Vec::new();
    let mut last_progress = (Instant::now(), 0.0);
    let mut last_report = Instant::now();
    let (succeeded, failed) = loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let text = metrics.scrape().await?;
        const T: &str = "flotilla_job_state_transitions_total";
        let s = counter_sum(&text, T, &[("to", JobStatus::Succeeded.as_str())]);
        let f = counter_sum(&text, T, &[("to", JobStatus::Failed.as_str())]);
        let starts = calls_of(&aws_calls(&text), "StartTask", Some("ok"))
            - calls_of(&calls_before, "StartTask", Some("ok"));
        let at = t0.elapsed().as_secs_f64();
        samples.push((at, starts, s + f));
        if s + f >= n as f64 {
            break (s, f);
        }
        if last_report.elapsed() > Duration::from_secs(30) {
            last_report = Instant::now();
            progress!(
                "{S}: {at:.0} s: {} StartTask, {} SUCCEEDED, {} FAILED, {} live instances",
                starts as u64,
                s as u64,
                f as u64,
                live_instances(&ec2).await.unwrap_or(0)
            );
        }
        if s + f > last_progress.1 {
            last_progress = (Instant::now(), s + f);
        } else if last_progress.0.elapsed() > Duration::from_secs(120) {
            bail!("no job finished for 120 s ({} of {n} done)", s + f);
        }
    };
    let wall = t0.elapsed().as_secs_f64();
    let after = server.stat()?;
    let calls = aws_calls(&metrics.scrape().await?);
    let delta = |keep: &dyn Fn(&(String, String, f64)) -> bool| {
        let sum =
            |c: &[(String, String, f64)]| c.iter().filter(|c| keep(c)).map(|c| c.2).sum::<f64>();
        sum(&calls) - sum(&calls_before)
    };
    let total_calls = delta(&|_| true);
    let throttled = delta(&|c| c.1 == "throttled");
    let starts = delta(&|c| c.0 == "StartTask" && c.1 == "ok");

    // Sustained launch rate: between 10% and 90% of the tasks started (the burst and the tail
    // left out).
    let at_share = |share: f64| {
        samples
            .iter()
            .find(|s| s.1 >= share * n as f64)
            .map(|s| (s.0, s.1))
    };
    let launch_rate = match (at_share(0.1), at_share(0.9)) {
        (Some(a), Some(b)) if b.0 > a.0 => (b.1 - a.1) / (b.0 - a.0),
        _ => starts / wall,
    };

    progress!(
        "{S}: all {n} finished in {wall:.0} s; waiting for the fleet to scale in (idle {IDLE_SECONDS} s)"
    );
    // Retiring is rate-limited too (drain, deregister, terminate: about a third of a second per
    // instance at the default quotas), so the wait grows with the fleet.
    let live_at_end = live_instances(&ec2).await? as u64;
    let scale_in_deadline = Instant::now() + Duration::from_secs(IDLE_SECONDS + 120 + live_at_end);
    let leaked = loop {
        let live = live_instances(&ec2).await?;
        if live == 0 || Instant::now() > scale_in_deadline {
            break live;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let scaled_in = t0.elapsed().as_secs_f64() - wall;
    // Let the ledger record the last terminations before reading the bill.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cost = conn
        .get(
            "/cost",
            &format!("from={}&to={}", wall_clock_start - 60_000, now_ms()),
        )
        .await
        .context("the server's cost report")?;
    let instances = cost["instances"].as_array().cloned().unwrap_or_default();
    let fleet_cost = cost["fleetCost"].as_f64().unwrap_or(0.0);
    let price = instances
        .iter()
        .filter_map(|i| i["pricePerHour"].as_f64())
        .fold(f64::NAN, f64::min);
    let fleet_seconds: f64 = instances.iter().filter_map(|i| i["seconds"].as_f64()).sum();
    // Every job's seconds on a full instance at the cheapest price: the least a perfect
    // provisioner could pay (it ignores boot time and the StartTask limit).
    let job_seconds = n as f64 * task_seconds;
    let bound = job_seconds / SLOTS_PER_INSTANCE / 3600.0 * price;
    let peak = instances.len();
    server.stop().await?;
    control(
        endpoint,
        "workload",
        json!({"taskSeconds": 0, "bootSeconds": 0}),
    )
    .await?;
    work.discard(&dir);
    if failed > 0.0 || succeeded < n as f64 {
        bail!("{failed} of {n} jobs FAILED, {succeeded} SUCCEEDED");
    }
    if leaked > 0 {
        bail!(
            "{leaked} instances still running {} s after the last job",
            scaled_in.round()
        );
    }
    let floor = n as f64 / start_limit;
    let cpu = after.cpu_s - before.cpu_s;
    Ok(vec![
        Figure::new(S, format!("submit to {n} SUCCEEDED"), wall, "s").bound(format!(
            "StartTask limit: {n} / {start_limit}/s = {floor:.0} s, plus boot {} s and one \
             task {task_seconds} s",
            args.aws_boot_seconds
        )),
        Figure::new(
            S,
            "tasks launched per second (10%-90%)",
            launch_rate,
            "tasks/s",
        )
        .bound(format!(
            "StartTask limit {start_limit}/s, one task per call"
        )),
        Figure::new(
            S,
            "launch rate / StartTask limit",
            100.0 * launch_rate / start_limit,
            "%",
        )
        .target(RATE_RATIO, n),
        Figure::new(S, "AWS calls per job", total_calls / n as f64, "calls").bound(format!(
            "StartTask {:.3}, DescribeTasks {:.3}, throttled {throttled}",
            delta(&|c| c.0 == "StartTask") / n as f64,
            delta(&|c| c.0 == "DescribeTasks") / n as f64
        )),
        Figure::new(S, "server CPU per job", cpu * 1e6 / n as f64, "us").bound(format!(
            "{:.1}% of one core over the run",
            100.0 * cpu / wall
        )),
        Figure::new(
            S,
            "server peak RSS per job",
            after.hwm_kib as f64 / n as f64,
            "KiB",
        )
        .bound(format!("peak {:.0} MiB", after.hwm_kib as f64 / 1024.0)),
        Figure::new(S, "instances launched", peak as f64, "instances").bound(format!(
            "maxvCpus {max_vcpus} = {} {INSTANCE_TYPE}",
            max_vcpus / 2
        )),
        Figure::new(S, "fleet instance-hours", fleet_seconds / 3600.0, "h").bound(format!(
            "jobs need {:.2} instance-hours",
            job_seconds / SLOTS_PER_INSTANCE / 3600.0
        )),
        Figure::new(S, "fleet cost / lower bound", fleet_cost / bound, "x")
            .target(COST_RATIO, n)
            .bound(format!(
                "${fleet_cost:.2} vs ${bound:.2}: every job-second on a full {INSTANCE_TYPE} \
                 at ${price}/h"
            )),
        Figure::new(S, "instances left running", leaked as f64, "instances").bound(format!(
            "fleet empty {scaled_in:.0} s after the last job (idle timeout {IDLE_SECONDS} s)"
        )),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_calls_are_read_by_operation_and_outcome() {
        let text = "# TYPE flotilla_aws_calls counter\n\
            flotilla_aws_calls_total{service=\"ecs\",operation=\"StartTask\",outcome=\"ok\"} 7\n\
            flotilla_aws_calls_total{service=\"ecs\",operation=\"StartTask\",outcome=\"throttled\"} 2\n\
            flotilla_aws_calls_total{service=\"ecs\",operation=\"DescribeTasks\",outcome=\"ok\"} 3\n";
        let calls = aws_calls(text);
        assert_eq!(calls.len(), 3);
        assert_eq!(calls_of(&calls, "StartTask", Some("ok")), 7.0);
        assert_eq!(calls_of(&calls, "StartTask", None), 9.0);
        assert_eq!(calls_of(&calls, "DescribeTasks", None), 3.0);
        assert_eq!(calls_of(&calls, "StopTask", None), 0.0);
    }
}
