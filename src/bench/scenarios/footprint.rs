//! footprint: memory per queued job and read latencies with many kept jobs.

use super::*;

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
