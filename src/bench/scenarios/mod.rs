//! The scenarios of issue 5. Each returns its own figures; none asserts a timing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use serde_json::{Value, json};

use super::client::{Conn, Endpoint, MetricsConn, counter_sum, sdk_client};
use super::report::{Figure, Target};
use super::server::{ChildServer, proc_stat};
use super::{BenchArgs, ClientKind, Workdir, cores, progress};
use crate::model::{JobDetail, JobStatus, ResourceState};
use crate::store::{SqlStore, Store};
use crate::util::time::now_ms;

mod aws_scale;
mod e2e;
mod footprint;
mod provision;

pub use aws_scale::aws_scale;
pub use e2e::{Samples, e2e};
pub use footprint::footprint;
pub use provision::provision;

/// Every server of the bench runs jobs as host processes: the e2e scenario measures that
/// runtime, and the others hold their jobs with a DISABLED compute environment.
const SERVER_ARGS: &[&str] = &["--local-runtime", "process"];
const QUEUE: &str = "default";
const DEFINITION: &str = "bench";

const SUBMIT_RATE: Target = Target {
    text: ">= 10,000 jobs/s",
    check: |v| v >= 10_000.0,
    at_size: 100_000,
};
const ARRAY_ACCEPT: Target = Target {
    text: "< 100 ms",
    check: |v| v < 100.0,
    at_size: 10_000,
};
const PLAN_PASS: Target = Target {
    text: "< 100 ms",
    check: |v| v < 100.0,
    at_size: 100_000,
};
const E2E_RATIO: Target = Target {
    text: ">= 66%",
    check: |v| v >= 66.0,
    at_size: 100_000,
};
const RSS_PER_JOB: Target = Target {
    text: "<= 2 KiB",
    check: |v| v <= 2.0,
    at_size: 100_000,
};
const PROVISION_PLAN: Target = Target {
    text: "< 50 ms",
    check: |v| v < 50.0,
    at_size: 100_000,
};
const PROVISION_COST: Target = Target {
    text: "<= 1.05x",
    check: |v| v <= 1.05,
    at_size: 100_000,
};
const PAGE_LATENCY: Target = Target {
    text: "< 10 ms",
    check: |v| v < 10.0,
    at_size: 1_000_000,
};

/// Latencies in microseconds, summarised.
struct Latency {
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Latency {
    fn of(mut us: Vec<u32>) -> Latency {
        us.sort_unstable();
        let at = |q: f64| -> f64 {
            if us.is_empty() {
                return 0.0;
            }
            // Nearest rank: the smallest value with at least q of the samples at or below it.
            let rank = ((q * us.len() as f64).ceil() as usize).clamp(1, us.len());
            f64::from(us[rank - 1]) / 1000.0
        };
        Latency {
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: us.last().map_or(0.0, |v| f64::from(*v) / 1000.0),
        }
    }
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// Registers the bench's job definition (`/bin/true`, 1 vCPU, 16 MiB) and, with `hold`, disables
/// the `local` compute environment so that submitted jobs wait in their queue.
async fn setup(conn: &mut Conn, hold: bool) -> anyhow::Result<()> {
    register_definition(conn, DEFINITION, "/bin/true", 16).await?;
    set_environment(conn, !hold).await
}

/// Registers a 1-vCPU container job definition running `command` with `memory_mib`.
pub(super) async fn register_definition(
    conn: &mut Conn,
    name: &str,
    command: &str,
    memory_mib: u32,
) -> anyhow::Result<()> {
    conn.call(
        "RegisterJobDefinition",
        &json!({
            "jobDefinitionName": name,
            "type": "container",
            "containerProperties": {
                "image": "busybox",
                "command": [command],
                "resourceRequirements": [
                    {"type": "VCPU", "value": "1"},
                    {"type": "MEMORY", "value": memory_mib.to_string()}
                ]
            }
        }),
    )
    .await?;
    Ok(())
}

async fn set_environment(conn: &mut Conn, enabled: bool) -> anyhow::Result<()> {
    conn.call(
        "UpdateComputeEnvironment",
        &json!({
            "computeEnvironment": "local",
            "state": if enabled { ResourceState::Enabled } else { ResourceState::Disabled }
        }),
    )
    .await
    .map(drop)
}

fn submit_body(name: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"jobName":"{name}","jobQueue":"{QUEUE}","jobDefinition":"{DEFINITION}"}}"#
    ))
}

struct LoadResult {
    /// Per acknowledged request.
    latencies_us: Vec<u32>,
    elapsed: Duration,
    errors: usize,
    first_error: Option<String>,
}

/// `n` SubmitJob calls from `clients` concurrent clients, each waiting for its reply before
/// sending the next (closed loop). Connections are opened before the clock starts.
async fn submit_load(
    ep: &Endpoint,
    n: usize,
    clients: usize,
    kind: ClientKind,
    prefix: &str,
) -> anyhow::Result<LoadResult> {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let sdk = (kind == ClientKind::Sdk).then(|| sdk_client(ep));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let next = next.clone();
        let start = start.clone();
        let ep = ep.clone();
        let sdk = sdk.clone();
        let prefix = prefix.to_string();
        tasks.spawn(async move {
            let mut conn = match sdk {
                None => Some(Conn::open(&ep).await),
                Some(_) => None,
            };
            start.wait().await;
            let mut conn = conn.take().transpose()?;
            let mut lat = Vec::with_capacity(n / clients + 1);
            let mut errors = 0usize;
            let mut first_error = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let name = format!("{prefix}-{i}");
                let t = Instant::now();
                let outcome: Result<(), String> = match (&mut conn, &sdk) {
                    (Some(c), _) => match c.post("SubmitJob", submit_body(&name)).await {
                        Ok((200, _)) => Ok(()),
                        Ok((status, body)) => {
                            Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)))
                        }
                        Err(e) => Err(format!("{e:#}")),
                    },
                    (None, Some(client)) => client
                        .submit_job()
                        .job_name(name)
                        .job_queue(QUEUE)
                        .job_definition(DEFINITION)
                        .send()
                        .await
                        .map(drop)
                        .map_err(|e| format!("{}", aws_sdk_batch::error::DisplayErrorContext(e))),
                    (None, None) => Err("no client".into()),
                };
                match outcome {
                    Ok(()) => lat.push(micros(t.elapsed())),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            anyhow::Ok((lat, errors, first_error))
        });
    }
    start.wait().await;
    let t0 = Instant::now();
    let mut result = LoadResult {
        latencies_us: Vec::with_capacity(n),
        elapsed: Duration::ZERO,
        errors: 0,
        first_error: None,
    };
    while let Some(joined) = tasks.join_next().await {
        let (lat, errors, first_error) = joined.context("load task panicked")??;
        result.latencies_us.extend(lat);
        result.errors += errors;
        if result.first_error.is_none() {
            result.first_error = first_error;
        }
    }
    result.elapsed = t0.elapsed();
    Ok(result)
}

/// Counts every job row of a stopped (or killed) server's store.
async fn stored_jobs(dir: &std::path::Path) -> anyhow::Result<i64> {
    let store = SqlStore::open(&format!("sqlite://{}", dir.join("flotilla.db").display())).await?;
    let n = store
        .count_jobs_by_queue_status()
        .await?
        .iter()
        .map(|(_, _, n)| n)
        .sum();
    store.close().await;
    Ok(n)
}

// ---------------------------------------------------------------- submit

pub async fn submit(args: &BenchArgs, work: &Workdir) -> anyhow::Result<Vec<Figure>> {
    const S: &str = "submit";
    let n = args.jobs as usize;
    let clients = args.clients as usize;
    let dir = work.fresh(S)?;
    let server = ChildServer::start(&dir, SERVER_ARGS).await?;
    let ep = Endpoint {
        addr: server.addr.clone(),
    };
    setup(&mut Conn::open(&ep).await?, true).await?;
    progress!(
        "submit: {n} SubmitJob calls from {clients} clients ({:?} client)",
        args.client
    );
    let server_before = server.stat()?;
    let self_before = proc_stat(0)?;
    let load = submit_load(&ep, n, clients, args.client, "submit").await?;
    let server_after = server.stat()?;
    let self_after = proc_stat(0)?;
    if let Some(e) = &load.first_error {
        bail!("{} of {n} SubmitJob calls failed; first: {e}", load.errors);
    }
    let acked = load.latencies_us.len();
    // SIGKILL, then count what the store holds: every acknowledged job must be there.
    server.kill().await?;
    let stored = stored_jobs(&dir).await?;
    work.discard(&dir);

    let secs = load.elapsed.as_secs_f64();
    let rate = acked as f64 / secs;
    let lat = Latency::of(load.latencies_us);
    let server_cpu = server_after.cpu_s - server_before.cpu_s;
    let client_cpu = self_after.cpu_s - self_before.cpu_s;
    let cpu_bound = format!(
        "CPU: server {:.2} + load generator {:.2} of {} cores",
        server_cpu / secs,
        client_cpu / secs,
        cores()
    );
    Ok(vec![
        Figure::new(S, "durable SubmitJob rate", rate, "jobs/s")
            .target(SUBMIT_RATE, n)
            .bound(cpu_bound),
        Figure::new(S, "latency p50", lat.p50_ms, "ms"),
        Figure::new(S, "latency p99", lat.p99_ms, "ms"),
        Figure::new(S, "latency max", lat.max_ms, "ms"),
        Figure::new(
            S,
            "server CPU per SubmitJob",
            server_cpu * 1e6 / acked as f64,
            "us",
        ),
        Figure::new(
            S,
            "load generator CPU per SubmitJob",
            client_cpu * 1e6 / acked as f64,
            "us",
        ),
        Figure::new(
            S,
            "acknowledged jobs in the store after SIGKILL",
            stored as f64,
            "",
        )
        .bound(format!(
            "{acked} acknowledged; SQLite WAL, synchronous=FULL: fsync per group commit"
        )),
    ])
}

// ---------------------------------------------------------------- array

/// Children of an array parent per status, from DescribeJobs' `statusSummary`.
async fn child_summary(conn: &mut Conn, parent: &str) -> anyhow::Result<Value> {
    let v = conn
        .call("DescribeJobs", &json!({ "jobs": [parent] }))
        .await?;
    Ok(v["jobs"][0]["arrayProperties"]["statusSummary"].clone())
}

pub async fn array(args: &BenchArgs, work: &Workdir) -> anyhow::Result<Vec<Figure>> {
    const S: &str = "array";
    const ROUNDS: usize = 3;
    let size = args.array_size as usize;
    let dir = work.fresh(S)?;
    let server = ChildServer::start(&dir, SERVER_ARGS).await?;
    let ep = Endpoint {
        addr: server.addr.clone(),
    };
    let mut conn = Conn::open(&ep).await?;
    // Held, so that "RUNNABLE" is where the children stay and can be counted.
    setup(&mut conn, true).await?;
    let mut accept = Vec::new();
    let mut runnable = Vec::new();
    for round in 0..ROUNDS {
        let body = json!({
            "jobName": format!("array-{round}"),
            "jobQueue": QUEUE,
            "jobDefinition": DEFINITION,
            "arrayProperties": { "size": size },
        });
        let t = Instant::now();
        let reply = conn.call("SubmitJob", &body).await?;
        accept.push(t.elapsed().as_secs_f64() * 1e3);
        let parent = reply["jobId"].as_str().context("SubmitJob: no jobId")?;
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let summary = child_summary(&mut conn, parent).await?;
            if summary[JobStatus::Runnable.as_str()].as_u64().unwrap_or(0) >= size as u64 {
                runnable.push(t.elapsed().as_secs_f64() * 1e3);
                break;
            }
            if Instant::now() > deadline {
                bail!("array children not all RUNNABLE after 300 s: {summary}");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    server.stop().await?;
    work.discard(&dir);
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let accept_ms = median(&mut accept);
    let runnable_ms = median(&mut runnable);
    Ok(vec![
        Figure::new(
            S,
            format!("SubmitJob of {size} children, median of {ROUNDS}"),
            accept_ms,
            "ms",
        )
        .target(ARRAY_ACCEPT, size)
        .bound("one fsynced row, the parent; the children are written after the reply"),
        Figure::new(
            S,
            "until all children RUNNABLE, median of 3",
            runnable_ms,
            "ms",
        )
        .bound(
            "building and writing size rows with their JSON documents (one relaxed transaction)",
        ),
    ])
}

// ---------------------------------------------------------------- schedule

pub async fn schedule(args: &BenchArgs) -> anyhow::Result<Vec<Figure>> {
    const S: &str = "schedule";
    const PASSES: usize = 5;
    let n = args.jobs as usize;
    let (pass_ms, placed, blocked) = tokio::task::spawn_blocking(move || {
        let snapshot = crate::scheduler::synthetic_snapshot(n, 10, 3, 42);
        // The first pass warms caches and the allocator; the figure is the median of the rest.
        let plan = crate::scheduler::plan(&snapshot);
        let mut times: Vec<f64> = (0..PASSES)
            .map(|_| {
                let t = Instant::now();
                let p = crate::scheduler::plan(&snapshot);
                let ms = t.elapsed().as_secs_f64() * 1e3;
                drop(p);
                ms
            })
            .collect();
        times.sort_by(f64::total_cmp);
        (times[PASSES / 2], plan.placements.len(), plan.blocked.len())
    })
    .await?;
    Ok(vec![
        Figure::new(
            S,
            format!("one planning pass over {n} RUNNABLE jobs, median of {PASSES}"),
            pass_ms,
            "ms",
        )
        .target(PLAN_PASS, n)
        .bound("10 queues (every third fair-share), 3 environments; single-threaded, pure"),
        Figure::new(
            S,
            "jobs decided per second (placed or left waiting)",
            n as f64 / (pass_ms / 1e3),
            "jobs/s",
        ),
        Figure::new(S, "placements in the pass", placed as f64, "jobs")
            .bound("the free capacity of the 3 environments"),
        Figure::new(S, "waiting jobs given a reason", blocked as f64, "jobs")
            .bound("first 100 waiting jobs per queue"),
    ])
}
