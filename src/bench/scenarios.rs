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

// ---------------------------------------------------------------- e2e

/// (seconds since the compute environment was enabled, jobs finished), every 500 ms.
pub type Samples = Vec<(f64, f64)>;

/// What the e2e plot is drawn from.
pub struct Trace {
    pub samples: Samples,
    /// The machine's own rate, jobs per second.
    pub baseline: f64,
}

/// Jobs finished (SUCCEEDED or FAILED) according to the server's transition counters.
fn finished(text: &str) -> (f64, f64) {
    const NAME: &str = "flotilla_job_state_transitions_total";
    (
        counter_sum(text, NAME, &[("to", JobStatus::Succeeded.as_str())]),
        counter_sum(text, NAME, &[("to", JobStatus::Failed.as_str())]),
    )
}

/// `n` spawns of `/bin/true` with `parallel` children at a time, spawned the way the process
/// runtime spawns an attempt (tokio::process, its own process group, a clean environment, stdout
/// and stderr piped and read to the end, then waited on), without anything else Flotilla does
/// per attempt. Jobs per second.
async fn spawn_baseline(n: usize, parallel: usize) -> anyhow::Result<f64> {
    use tokio::io::AsyncReadExt;
    let next = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..parallel {
        let next = next.clone();
        tasks.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let mut cmd = tokio::process::Command::new("/bin/true");
                cmd.env_clear()
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .process_group(0);
                if let Some(path) = std::env::var_os("PATH") {
                    cmd.env("PATH", path);
                }
                let mut child = cmd.spawn()?;
                let (mut out, mut err) = (Vec::new(), Vec::new());
                if let Some(mut o) = child.stdout.take() {
                    o.read_to_end(&mut out).await?;
                }
                if let Some(mut e) = child.stderr.take() {
                    e.read_to_end(&mut err).await?;
                }
                let status = child.wait().await?;
                if !status.success() {
                    anyhow::bail!("/bin/true exited with {status}");
                }
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

pub async fn e2e(args: &BenchArgs, work: &Workdir) -> anyhow::Result<(Vec<Figure>, Trace)> {
    const S: &str = "e2e";
    let n = args.jobs as usize;
    let cpus = cores();
    let dir = work.fresh(S)?;
    let server = ChildServer::start(&dir, SERVER_ARGS).await?;
    let ep = Endpoint {
        addr: server.addr.clone(),
    };
    let mut conn = Conn::open(&ep).await?;
    setup(&mut conn, true).await?;
    conn.call(
        "UpdateComputeEnvironment",
        &json!({"computeEnvironment": "local", "computeResources": {"maxvCpus": cpus}}),
    )
    .await?;
    progress!("e2e: queueing {n} /bin/true jobs (environment held)");
    let load = submit_load(&ep, n, args.clients as usize, ClientKind::Raw, "e2e").await?;
    if let Some(e) = &load.first_error {
        bail!("{} SubmitJob calls failed; first: {e}", load.errors);
    }
    let mut metrics = MetricsConn::new(&ep);
    let (s0, f0) = finished(&metrics.scrape().await?);
    progress!("e2e: running them at maxvCpus = {cpus}");
    let server_before = server.stat()?;
    set_environment(&mut conn, true).await?;
    let t0 = Instant::now();
    let mut samples: Samples = vec![(0.0, 0.0)];
    let mut scrape_ms = Vec::new();
    let mut last_progress = (Instant::now(), 0.0);
    let (succeeded, failed) = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let ts = Instant::now();
        let text = metrics.scrape().await?;
        scrape_ms.push(micros(ts.elapsed()));
        let (s, f) = finished(&text);
        let (s, f) = (s - s0, f - f0);
        let at = t0.elapsed().as_secs_f64();
        samples.push((at, s + f));
        if s + f >= n as f64 {
            break (s, f);
        }
        if s + f > last_progress.1 {
            last_progress = (Instant::now(), s + f);
        } else if last_progress.0.elapsed() > Duration::from_secs(60) {
            bail!("no job finished for 60 s ({} of {n} done)", s + f);
        }
    };
    let wall = samples.last().map_or(0.0, |s| s.0);
    let server_cpu = server.stat()?.cpu_s - server_before.cpu_s;
    server.stop().await?;
    work.discard(&dir);
    if failed > 0.0 {
        bail!("{failed} of {n} /bin/true jobs FAILED");
    }
    let rate = succeeded / wall;

    progress!("e2e: the machine's own limit: {n} spawns of /bin/true, {cpus} at a time");
    let baseline = spawn_baseline(n, cpus).await?;
    let ratio = 100.0 * rate / baseline;
    let scrape = Latency::of(scrape_ms);
    Ok((
        vec![
            Figure::new(S, format!("wall time to {n} SUCCEEDED"), wall, "s")
                .bound("sampled every 500 ms from /metrics transition counters"),
            Figure::new(S, "Flotilla: jobs per second", rate, "jobs/s"),
            Figure::new(
                S,
                format!("machine: /bin/true spawns per second, {cpus} at a time"),
                baseline,
                "jobs/s",
            ),
            Figure::new(S, "Flotilla / machine", ratio, "%")
                .target(E2E_RATIO, n)
                .bound(format!(
                    "server CPU {:.0}% of {cpus} cores during the run",
                    100.0 * server_cpu / wall / cpus as f64
                )),
            Figure::new(S, "server CPU per job", server_cpu * 1e6 / n as f64, "us"),
            Figure::new(S, "/metrics scrape p50", scrape.p50_ms, "ms")
                .bound("the sampler's own cost on the server"),
        ],
        Trace { samples, baseline },
    ))
}

// ---------------------------------------------------------------- footprint

/// Runs one real job to SUCCEEDED and returns its ID; its stored document is what the kept jobs
/// are cloned from.
async fn finished_template(conn: &mut Conn) -> anyhow::Result<String> {
    let reply = conn
        .call(
            "SubmitJob",
            &json!({"jobName": "template", "jobQueue": QUEUE, "jobDefinition": DEFINITION}),
        )
        .await?;
    let id = reply["jobId"].as_str().context("no jobId")?.to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = conn.call("DescribeJobs", &json!({ "jobs": [id] })).await?;
        let status = v["jobs"][0]["status"].as_str().unwrap_or_default();
        if status.parse() == Ok(JobStatus::Succeeded) {
            return Ok(id);
        }
        if Instant::now() > deadline {
            bail!("template job is still {status} after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes `kept` finished jobs (nine in ten SUCCEEDED, the rest FAILED) straight into the store,
/// cloned from `template` with new IDs, names and times spread over the last 30 days.
async fn preload(dir: &std::path::Path, template_id: &str, kept: usize) -> anyhow::Result<()> {
    const BATCH: usize = 20_000;
    const SPAN_MS: i64 = 30 * 24 * 3600 * 1000;
    let store = SqlStore::open(&format!("sqlite://{}", dir.join("flotilla.db").display())).await?;
    let row = store
        .get_jobs(&[template_id.to_string()])
        .await?
        .pop()
        .context("the template job is not in the store")?;
    let template: JobDetail = serde_json::from_str(&row.doc)?;
    let template = &template;
    let arn_prefix = template
        .job_arn
        .strip_suffix(template.job_id.as_str())
        .context("job ARN does not end in its ID")?
        .to_string();
    let now = now_ms();
    let step = (SPAN_MS / kept as i64).max(1);
    let mut written = 0;
    while written < kept {
        let count = BATCH.min(kept - written);
        let template = template.clone();
        let arn_prefix = arn_prefix.clone();
        let rows = tokio::task::spawn_blocking(move || {
            let mut rows = Vec::with_capacity(count);
            let mut job = template;
            let run_ms = job.stopped_at.unwrap_or(0) - job.started_at.unwrap_or(0);
            for i in written..written + count {
                let id = uuid::Uuid::new_v4().to_string();
                let created = now - SPAN_MS + i as i64 * step;
                job.job_arn = format!("{arn_prefix}{id}");
                job.job_id = id;
                job.job_name = format!("kept-{i}");
                job.created_at = created;
                job.started_at = Some(created + 1000);
                job.stopped_at = Some(created + 1000 + run_ms);
                if i % 10 == 9 {
                    job.status = JobStatus::Failed;
                    job.status_reason = Some("Essential container in task exited".into());
                    for a in &mut job.attempts {
                        if let Some(c) = a.container.as_mut() {
                            c.exit_code = Some(1);
                        }
                    }
                } else {
                    job.status = JobStatus::Succeeded;
                    job.status_reason = Some("Essential container in task exited".into());
                    for a in &mut job.attempts {
                        if let Some(c) = a.container.as_mut() {
                            c.exit_code = Some(0);
                        }
                    }
                }
                rows.push(crate::batch::job_row(&job, None)?);
            }
            crate::error::BatchResult::Ok(rows)
        })
        .await??;
        store.upsert_jobs(rows).await?;
        written += count;
    }
    store.close().await;
    Ok(())
}

pub async fn footprint(args: &BenchArgs, work: &Workdir) -> anyhow::Result<Vec<Figure>> {
    const S: &str = "footprint";
    const CALLS: usize = 200;
    let n = args.jobs as usize;
    let kept = args.kept as usize;
    let mut figures = Vec::new();

    // Queued: n RUNNABLE jobs held in a DISABLED environment.
    let dir = work.fresh("footprint-queued")?;
    let server = ChildServer::start(&dir, SERVER_ARGS).await?;
    let ep = Endpoint {
        addr: server.addr.clone(),
    };
    setup(&mut Conn::open(&ep).await?, true).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = server.stat()?;
    progress!("footprint: queueing {n} jobs");
    let load = submit_load(&ep, n, args.clients as usize, ClientKind::Raw, "queued").await?;
    if let Some(e) = &load.first_error {
        bail!("{} SubmitJob calls failed; first: {e}", load.errors);
    }
    // Let the engine take in the last submissions before reading memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let queued = server.stat()?;
    let db = server.db_bytes();
    server.stop().await?;
    work.discard(&dir);
    let per_job = (queued.rss_kib.saturating_sub(idle.rss_kib)) as f64 / n as f64;
    figures.extend([
        Figure::new(S, "server RSS, idle", idle.rss_kib as f64 / 1024.0, "MiB"),
        Figure::new(
            S,
            format!("server RSS with {n} jobs queued"),
            queued.rss_kib as f64 / 1024.0,
            "MiB",
        )
        .bound(format!(
            "peak (VmHWM) {:.0} MiB",
            queued.hwm_kib as f64 / 1024.0
        )),
        Figure::new(S, "server RSS per queued job", per_job, "KiB")
            .target(RSS_PER_JOB, n)
            .bound("the engine keeps every unfinished job's document in memory"),
        Figure::new(
            S,
            format!("database with {n} jobs queued"),
            db as f64 / 1048576.0,
            "MiB",
        )
        .bound(format!("{:.0} bytes per job", db as f64 / n as f64)),
    ]);

    // Kept: many finished jobs, written straight into the store, then a server on top.
    let dir = work.fresh("footprint-kept")?;
    let server = ChildServer::start(&dir, SERVER_ARGS).await?;
    let ep = Endpoint {
        addr: server.addr.clone(),
    };
    let mut conn = Conn::open(&ep).await?;
    setup(&mut conn, false).await?;
    let template = finished_template(&mut conn).await?;
    server.stop().await?;
    progress!("footprint: writing {kept} finished jobs into the store");
    let t = Instant::now();
    preload(&dir, &template, kept).await?;
    progress!(
        "footprint: {kept} jobs written in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let server = ChildServer::start(&dir, SERVER_ARGS).await?;
    let ep = Endpoint {
        addr: server.addr.clone(),
    };
    let mut conn = Conn::open(&ep).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let kept_idle = server.stat()?;

    let list = |status: JobStatus, token: Option<String>| {
        let mut body = json!({ "jobQueue": QUEUE, "jobStatus": status, "maxResults": 100 });
        if let Some(t) = token {
            body["nextToken"] = json!(t);
        }
        body
    };
    // The newest page of SUCCEEDED jobs, again and again.
    let mut first_us = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let t = Instant::now();
        let v = conn
            .call("ListJobs", &list(JobStatus::Succeeded, None))
            .await?;
        first_us.push(micros(t.elapsed()));
        let got = v["jobSummaryList"].as_array().map_or(0, Vec::len);
        if got != 100 {
            bail!("ListJobs returned {got} jobs, expected 100");
        }
    }
    let first = Latency::of(first_us);
    // Paging on through the queue with nextToken, collecting IDs for DescribeJobs.
    let mut token: Option<String> = None;
    let mut ids: Vec<String> = Vec::new();
    let mut page_us = Vec::new();
    for _ in 0..CALLS {
        let t = Instant::now();
        let v = conn
            .call("ListJobs", &list(JobStatus::Succeeded, token.take()))
            .await?;
        page_us.push(micros(t.elapsed()));
        for j in v["jobSummaryList"].as_array().into_iter().flatten() {
            if let Some(id) = j["jobId"].as_str() {
                ids.push(id.to_string());
            }
        }
        token = v["nextToken"].as_str().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    let paging = Latency::of(page_us);
    // DescribeJobs of 100 IDs spread over what was paged through.
    let stride = (ids.len() / 100).max(1);
    let mut describe_us = Vec::with_capacity(CALLS);
    for i in 0..CALLS {
        let batch: Vec<&String> = ids
            .iter()
            .skip(i % stride)
            .step_by(stride)
            .take(100)
            .collect();
        let asked = batch.len();
        let body = json!({ "jobs": batch });
        let t = Instant::now();
        let v = conn.call("DescribeJobs", &body).await?;
        describe_us.push(micros(t.elapsed()));
        let got = v["jobs"].as_array().map_or(0, Vec::len);
        if got != asked {
            bail!("DescribeJobs returned {got} of {asked} jobs");
        }
    }
    let describe = Latency::of(describe_us);
    let after = server.stat()?;
    let db = server.db_bytes();
    server.stop().await?;
    work.discard(&dir);
    figures.extend([
        Figure::new(
            S,
            format!("server RSS with {kept} jobs kept"),
            after.rss_kib as f64 / 1024.0,
            "MiB",
        )
        .bound(format!(
            "{:.0} MiB before the reads; SQLite page cache grows with them",
            kept_idle.rss_kib as f64 / 1024.0
        )),
        Figure::new(
            S,
            format!("database with {kept} jobs kept"),
            db as f64 / 1048576.0,
            "MiB",
        )
        .bound(format!("{:.0} bytes per job", db as f64 / kept as f64)),
        Figure::new(S, "ListJobs newest page of 100, p50", first.p50_ms, "ms"),
        Figure::new(S, "ListJobs newest page of 100, p99", first.p99_ms, "ms")
            .target(PAGE_LATENCY, kept),
        Figure::new(S, "ListJobs next pages of 100, p50", paging.p50_ms, "ms"),
        Figure::new(S, "ListJobs next pages of 100, p99", paging.p99_ms, "ms")
            .target(PAGE_LATENCY, kept),
        Figure::new(S, "DescribeJobs of 100, p50", describe.p50_ms, "ms"),
        Figure::new(S, "DescribeJobs of 100, p99", describe.p99_ms, "ms")
            .target(PAGE_LATENCY, kept),
    ]);
    Ok(figures)
}

// ---------------------------------------------------------------- provision

/// A provisioner plan for `jobs` RUNNABLE jobs over the built-in catalog: plan time, and the
/// plan's hourly cost against a lower bound (total demanded vCPU and memory at the cheapest
/// per-unit prices of the allowed types, see `provisioner::lower_bound_cost`).
pub fn provision(jobs: usize) -> Vec<Figure> {
    use crate::provisioner::{
        self, AllocationStrategy, CrType, EnvSpec, Snapshot, builtin_catalog, cost_per_hour,
        lower_bound_cost, synthetic_demand,
    };
    const S: &str = "provision";
    let catalog = builtin_catalog();
    let all_types = catalog.types().len();
    let mut figures = Vec::new();
    // `optimal` is what AWS Batch users usually pick; all types shows how loose the bound gets
    // when it may pair one type's price per vCPU with another's price per GiB.
    for (label, types) in [
        ("optimal", vec!["optimal".to_string()]),
        (
            "all types",
            catalog.types().iter().map(|t| t.name.clone()).collect(),
        ),
    ] {
        let env = EnvSpec {
            cr_type: CrType::Ec2,
            min_vcpus: 0,
            max_vcpus: u32::MAX / 2,
            desired_vcpus: 0,
            instance_types: types,
            allocation_strategy: AllocationStrategy::BestFit,
            bid_percentage: 100,
            subnets: Vec::new(),
        };
        let snapshot = Snapshot {
            env: env.clone(),
            catalog: catalog.clone(),
            fleet: Vec::new(),
            demand: synthetic_demand(jobs, 7),
            now_ms: 0,
            idle_timeout_ms: 300_000,
            unavailable_pools: Default::default(),
        };
        let mut times = Vec::new();
        let mut plan = provisioner::plan(&snapshot);
        for _ in 0..5 {
            let t = Instant::now();
            plan = provisioner::plan(&snapshot);
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        let cost = cost_per_hour(&plan, &catalog);
        let bound = lower_bound_cost(&snapshot.demand, &catalog, &env);
        figures.push(
            Figure::new(
                S,
                format!("plan time, {jobs} jobs, {label} ({all_types} in catalog)"),
                times[2],
                "ms",
            )
            .target(PROVISION_PLAN, jobs),
        );
        figures.push(
            Figure::new(S, format!("cost / lower bound, {label}"), cost / bound.max(f64::MIN_POSITIVE), "x")
                .target(PROVISION_COST, jobs)
                .bound(format!(
                    "${cost:.0}/h for {} instances vs ${bound:.0}/h bound; jobs no allowed type fits: {}{}",
                    plan.launch.iter().map(|l| l.count as u64).sum::<u64>(),
                    plan.unplaceable.len(),
                    if label == "optimal" {
                        ""
                    } else {
                        "; the bound pairs one type's price per vCPU (t3) with another's per GiB (r5), which no instance offers"
                    }
                )),
        );
    }
    figures
}
