//! e2e: jobs through the LOCAL process runtime against the machine's own spawn rate.

use super::*;

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
