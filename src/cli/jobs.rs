//! Job commands: submit (and wait), list, describe, watch, cancel, terminate.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::IsTerminal;
use std::pin::pin;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail};
use aws_sdk_batch::Client;
use aws_sdk_batch::operation::submit_job::builders::SubmitJobFluentBuilder;
use aws_sdk_batch::types::{
    ArrayProperties, ContainerOverrides, JobDependency, JobDetail, JobStatus, JobSummary,
    JobTimeout, KeyValuePair, KeyValuesPair, ResourceRequirement, ResourceType, RetryStrategy,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use super::client::{Ctx, emit, emit_json};
use super::json::{self, Obj};
use super::table::{Table, arn_name, iso8601_millis, or_dash};
use super::{JobsListArgs, JobsWatchArgs, Output, SubmitArgs};

/// Lifecycle order, used for `--all`, `watch` and array summaries.
pub const STATUSES: [JobStatus; 7] = [
    JobStatus::Submitted,
    JobStatus::Pending,
    JobStatus::Runnable,
    JobStatus::Starting,
    JobStatus::Running,
    JobStatus::Succeeded,
    JobStatus::Failed,
];

const POLL_MIN: Duration = Duration::from_millis(500);
const POLL_MAX: Duration = Duration::from_secs(2);
const WATCH_INTERVAL: Duration = Duration::from_secs(2);
/// DescribeJobs takes at most 100 IDs per call.
const DESCRIBE_CHUNK: usize = 100;

#[derive(Debug, thiserror::Error)]
#[error("job {job_id} FAILED: {reason}")]
pub struct JobFailed {
    pub job_id: String,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
#[error("stopped waiting; job {job_id} goes on (see `flotilla jobs describe {job_id}`)")]
pub struct WaitInterrupted {
    pub job_id: String,
}

/// A job definition reference (`NAME`, `NAME:REV` or its ARN) reduced to the name.
pub fn default_job_name(definition: &str) -> String {
    let tail = definition.rsplit('/').next().unwrap_or(definition);
    tail.split(':').next().unwrap_or(tail).to_string()
}

/// Later `KEY=VALUE` pairs replace earlier ones with the same key, keeping first positions.
fn last_wins(pairs: &[(String, String)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in pairs {
        match out.iter_mut().find(|(ok, _)| ok == k) {
            Some(slot) => slot.1 = v.clone(),
            None => out.push((k.clone(), v.clone())),
        }
    }
    out
}

pub fn submit_request(client: &Client, a: &SubmitArgs) -> SubmitJobFluentBuilder {
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| default_job_name(&a.definition));
    let mut req = client
        .submit_job()
        .job_name(name)
        .job_queue(&a.queue)
        .job_definition(&a.definition)
        .set_share_identifier(a.share_identifier.clone());
    if let Some(size) = a.array_size {
        req = req.array_properties(ArrayProperties::builder().size(size).build());
    }
    for d in &a.depends_on {
        req = req.depends_on(
            JobDependency::builder()
                .job_id(&d.job_id)
                .set_type(d.kind.clone())
                .build(),
        );
    }
    if !a.parameters.is_empty() {
        req = req.set_parameters(Some(last_wins(&a.parameters).into_iter().collect()));
    }

    let env = last_wins(&a.env);
    let mut requirements = Vec::new();
    if let Some(vcpus) = &a.vcpus {
        requirements.push(
            ResourceRequirement::builder()
                .r#type(ResourceType::Vcpu)
                .value(vcpus)
                .build(),
        );
    }
    if let Some(memory) = a.memory {
        requirements.push(
            ResourceRequirement::builder()
                .r#type(ResourceType::Memory)
                .value(memory.to_string())
                .build(),
        );
    }
    if !env.is_empty() || !a.command.is_empty() || !requirements.is_empty() {
        let mut overrides = ContainerOverrides::builder();
        for (k, v) in env {
            overrides = overrides.environment(KeyValuePair::builder().name(k).value(v).build());
        }
        if !a.command.is_empty() {
            overrides = overrides.set_command(Some(a.command.clone()));
        }
        // resourceRequirements rather than the deprecated vcpus/memory override fields.
        if !requirements.is_empty() {
            overrides = overrides.set_resource_requirements(Some(requirements));
        }
        req = req.container_overrides(overrides.build());
    }
    if let Some(attempts) = a.attempts {
        req = req.retry_strategy(RetryStrategy::builder().attempts(attempts).build());
    }
    if let Some(secs) = a.timeout {
        req = req.timeout(JobTimeout::builder().attempt_duration_seconds(secs).build());
    }
    req
}

pub async fn submit(ctx: &Ctx, a: &SubmitArgs) -> anyhow::Result<()> {
    let resp = submit_request(&ctx.client, a)
        .send()
        .await
        .map_err(|e| ctx.api_error(e))?;
    let job_id = resp
        .job_id()
        .filter(|id| !id.is_empty())
        .ok_or_else(|| anyhow!("the server accepted the job but returned no job ID"))?
        .to_string();
    // The ID goes out before waiting, so that a script keeps it even if the wait is interrupted.
    match ctx.output {
        Output::Table => emit(&format!("{job_id}\n"))?,
        Output::Json => emit_json(
            &Obj::new()
                .opt("jobArn", resp.job_arn())
                .opt("jobName", resp.job_name())
                .put("jobId", job_id.as_str())
                .done(),
        )?,
    }
    if a.wait {
        wait_for(ctx, &job_id).await?;
    }
    Ok(())
}

async fn describe_one(ctx: &Ctx, job_id: &str) -> anyhow::Result<JobDetail> {
    let resp = ctx
        .client
        .describe_jobs()
        .jobs(job_id)
        .send()
        .await
        .map_err(|e| ctx.api_error(e))?;
    resp.jobs()
        .iter()
        .find(|j| j.job_id() == Some(job_id))
        .cloned()
        .ok_or_else(|| anyhow!("job {job_id} not found"))
}

fn count(summary: Option<&HashMap<String, i32>>, status: &JobStatus) -> i64 {
    summary
        .and_then(|s| s.get(status.as_str()))
        .map_or(0, |n| i64::from(*n))
}

/// `RUNNING 2, SUCCEEDED 5`: the non-zero counts in lifecycle order.
fn summary_text(summary: Option<&HashMap<String, i32>>) -> String {
    STATUSES
        .iter()
        .filter_map(|s| {
            let n = count(summary, s);
            (n > 0).then(|| format!("{} {n}", s.as_str()))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_spinner())
}

/// A spinner with the status; for array jobs a bar of finished children.
struct WaitProgress {
    bar: ProgressBar,
    array: bool,
}

impl WaitProgress {
    fn new(job_id: &str) -> Self {
        let bar = ProgressBar::new_spinner();
        bar.set_style(style("{spinner} {prefix} {msg} ({elapsed})"));
        bar.set_prefix(job_id.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        WaitProgress { bar, array: false }
    }

    fn update(&mut self, job: &JobDetail, status: &str) {
        let array = job
            .array_properties()
            .and_then(|a| a.size().map(|size| (size, a.status_summary.as_ref())))
            .filter(|(size, _)| *size > 0);
        match array {
            Some((size, summary)) => {
                if !self.array {
                    self.array = true;
                    self.bar.set_style(style(
                        "{spinner} {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed})",
                    ));
                    self.bar.set_length(u64::try_from(size).unwrap_or(0));
                }
                let done =
                    count(summary, &JobStatus::Succeeded) + count(summary, &JobStatus::Failed);
                self.bar.set_position(u64::try_from(done).unwrap_or(0));
                let counts = summary_text(summary);
                self.bar.set_message(if counts.is_empty() {
                    status.to_string()
                } else {
                    format!("{status} ({counts})")
                });
            }
            None => self.bar.set_message(status.to_string()),
        }
    }
}

fn failure_reason(job: &JobDetail) -> String {
    let mut reason = job
        .status_reason()
        .filter(|r| !r.is_empty())
        .unwrap_or("no reason given")
        .to_string();
    if let Some(code) = job.container().and_then(|c| c.exit_code()) {
        reason.push_str(&format!(" (exit code {code})"));
    }
    if let Some(a) = job.array_properties()
        && let Some(size) = a.size()
    {
        let failed = count(a.status_summary.as_ref(), &JobStatus::Failed);
        reason.push_str(&format!(" ({failed} of {size} children failed)"));
    }
    reason
}

/// Polls DescribeJobs until the job ends: every 500 ms after a change, slowing to every 2 s while
/// nothing changes.
pub async fn wait_for(ctx: &Ctx, job_id: &str) -> anyhow::Result<()> {
    let mut progress = WaitProgress::new(job_id);
    let mut interval = POLL_MIN;
    let mut last: Option<String> = None;
    let mut ctrl_c = pin!(tokio::signal::ctrl_c());
    loop {
        let job = match describe_one(ctx, job_id).await {
            Ok(job) => job,
            Err(e) => {
                progress.bar.abandon();
                return Err(e);
            }
        };
        let status = job
            .status()
            .map_or_else(|| "UNKNOWN".to_string(), |s| s.as_str().to_string());
        progress.update(&job, &status);
        let changed = last.as_deref() != Some(status.as_str());
        // Without a terminal the bar is hidden; transitions still belong in a CI log.
        if changed && progress.bar.is_hidden() {
            eprintln!("{job_id}: {status}");
        }
        match job.status() {
            Some(JobStatus::Succeeded) => {
                progress.bar.finish_and_clear();
                eprintln!("job {job_id} SUCCEEDED");
                return Ok(());
            }
            Some(JobStatus::Failed) => {
                progress.bar.finish_and_clear();
                return Err(JobFailed {
                    job_id: job_id.to_string(),
                    reason: failure_reason(&job),
                }
                .into());
            }
            _ => {}
        }
        interval = if changed {
            POLL_MIN
        } else {
            interval.mul_f64(1.5).min(POLL_MAX)
        };
        last = Some(status);
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = &mut ctrl_c => {
                progress.bar.finish_and_clear();
                return Err(WaitInterrupted { job_id: job_id.to_string() }.into());
            }
        }
    }
}

/// One ListJobs query, all pages.
async fn list_pages(
    ctx: &Ctx,
    queue: Option<&str>,
    array_job_id: Option<&str>,
    status: Option<JobStatus>,
    name: Option<&str>,
) -> anyhow::Result<Vec<JobSummary>> {
    let mut req = ctx
        .client
        .list_jobs()
        .set_job_queue(queue.map(str::to_string))
        .set_array_job_id(array_job_id.map(str::to_string))
        .set_job_status(status);
    if let Some(pattern) = name {
        req = req.filters(
            KeyValuesPair::builder()
                .name("JOB_NAME")
                .values(pattern)
                .build(),
        );
    }
    let mut pages = req.into_paginator().items().send();
    let mut out = Vec::new();
    while let Some(item) = pages.next().await {
        out.push(item.map_err(|e| ctx.api_error(e))?);
    }
    Ok(out)
}

pub async fn list(ctx: &Ctx, a: &JobsListArgs) -> anyhow::Result<()> {
    let queue = a.queue.as_deref();
    let array = a.array_job_id.as_deref();
    let jobs = if let Some(pattern) = a.name.as_deref() {
        // With a filter, ListJobs ignores jobStatus and returns every status.
        let mut jobs = list_pages(ctx, queue, array, None, Some(pattern)).await?;
        if let Some(s) = a.status {
            let wanted = super::sdk_status(s);
            jobs.retain(|j| j.status() == Some(&wanted));
        }
        jobs
    } else if a.all {
        let mut jobs = Vec::new();
        let mut seen = HashSet::new();
        for status in STATUSES {
            // A job can move on between two queries and show up twice.
            for job in list_pages(ctx, queue, array, Some(status), None).await? {
                if seen.insert(job.job_id().unwrap_or_default().to_string()) {
                    jobs.push(job);
                }
            }
        }
        jobs
    } else {
        list_pages(ctx, queue, array, a.status.map(super::sdk_status), None).await?
    };

    match ctx.output {
        Output::Json => emit_json(&json!({
            "jobSummaryList": jobs.iter().map(json::job_summary).collect::<Vec<_>>()
        })),
        Output::Table => emit(&summary_table(&jobs).render()),
    }
}

pub fn summary_table(jobs: &[JobSummary]) -> Table {
    let mut t = Table::new(["JOB ID", "NAME", "STATUS", "CREATED", "STATUS REASON"]);
    for j in jobs {
        t.push([
            or_dash(j.job_id()),
            or_dash(j.job_name()),
            or_dash(j.status().map(|s| s.as_str())),
            iso8601_millis(j.created_at()),
            j.status_reason().unwrap_or_default().to_string(),
        ]);
    }
    t
}

pub async fn describe(ctx: &Ctx, ids: &[String]) -> anyhow::Result<()> {
    let mut unique = Vec::new();
    let mut seen = HashSet::new();
    for id in ids {
        if seen.insert(id.as_str()) {
            unique.push(id.clone());
        }
    }
    let mut jobs = Vec::new();
    for chunk in unique.chunks(DESCRIBE_CHUNK) {
        let resp = ctx
            .client
            .describe_jobs()
            .set_jobs(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(|e| ctx.api_error(e))?;
        jobs.extend(resp.jobs().iter().cloned());
    }
    let costs = attempt_costs(ctx, &unique).await?;
    let no_costs = Vec::new();
    let costs_of = |j: &JobDetail| j.job_id().and_then(|id| costs.get(id)).unwrap_or(&no_costs);
    match ctx.output {
        Output::Json => emit_json(&json!({
            "jobs": jobs.iter().map(|j| {
                let mut v = json::job_detail(j);
                // The SDK drops Flotilla's own member; put it back where the server had it.
                if let Some(attempts) = v["attempts"].as_array_mut() {
                    for (a, c) in attempts.iter_mut().zip(costs_of(j)) {
                        if !c.is_null() {
                            a["flotillaCost"] = c.clone();
                        }
                    }
                }
                v
            }).collect::<Vec<_>>()
        }))?,
        Output::Table => {
            let blocks: Vec<String> = jobs
                .iter()
                .map(|j| {
                    let mut t = detail_table(j);
                    cost_rows(&mut t, costs_of(j));
                    t.render()
                })
                .collect();
            emit(&blocks.join("\n"))?;
        }
    }
    let missing: Vec<&str> = unique
        .iter()
        .map(String::as_str)
        .filter(|id| !jobs.iter().any(|j| j.job_id() == Some(*id)))
        .collect();
    if !missing.is_empty() {
        bail!("job(s) not found: {}", missing.join(", "));
    }
    Ok(())
}

/// Quotes arguments that would not survive being pasted into a shell as they are shown.
fn command_line(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Each job's attempts' `flotillaCost` (null where an attempt has none), which the SDK's
/// DescribeJobs drops: read from the server's raw answer.
async fn attempt_costs(
    ctx: &Ctx,
    ids: &[String],
) -> anyhow::Result<HashMap<String, Vec<serde_json::Value>>> {
    let mut out = HashMap::new();
    for chunk in ids.chunks(DESCRIBE_CHUNK) {
        let body = serde_json::to_vec(&json!({ "jobs": chunk }))?;
        let raw = super::signed::request(ctx, http::Method::POST, "/v1/describejobs", body).await?;
        let v: serde_json::Value = serde_json::from_slice(&raw)?;
        for j in v["jobs"].as_array().into_iter().flatten() {
            let Some(id) = j["jobId"].as_str() else {
                continue;
            };
            let costs = j["attempts"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| a["flotillaCost"].clone())
                .collect();
            out.insert(id.to_string(), costs);
        }
    }
    Ok(out)
}

/// `COST` (the attempts' sum) and a line per priced attempt: where it ran and its share.
fn cost_rows(t: &mut Table, costs: &[serde_json::Value]) {
    let priced: Vec<(usize, &serde_json::Value)> = costs
        .iter()
        .enumerate()
        .filter(|(_, c)| c.is_object())
        .collect();
    if priced.is_empty() {
        return;
    }
    let total: f64 = priced.iter().filter_map(|(_, c)| c["cost"].as_f64()).sum();
    t.push(["COST".to_string(), super::cost::dollars(total)]);
    for (i, c) in priced {
        t.push([
            format!("ATTEMPT {}", i + 1),
            format!(
                "{} on {} {} {} at ${}/h, share {:.3}",
                super::cost::dollars(c["cost"].as_f64().unwrap_or(0.0)),
                c["instanceId"].as_str().unwrap_or("-"),
                c["instanceType"].as_str().unwrap_or("-"),
                c["purchaseOption"].as_str().unwrap_or("-"),
                c["pricePerHour"].as_f64().unwrap_or(0.0),
                c["share"].as_f64().unwrap_or(0.0),
            ),
        ]);
    }
}

pub fn detail_table(j: &JobDetail) -> Table {
    let mut t = Table::headerless();
    let mut row = |k: &str, v: String| t.push([k.to_string(), v]);
    row("JOB ID", or_dash(j.job_id()));
    row("NAME", or_dash(j.job_name()));
    row("STATUS", or_dash(j.status().map(|s| s.as_str())));
    if let Some(reason) = j.status_reason().filter(|r| !r.is_empty()) {
        row("STATUS REASON", reason.to_string());
    }
    row("QUEUE", or_dash(j.job_queue().map(arn_name)));
    row("DEFINITION", or_dash(j.job_definition().map(arn_name)));
    row("CREATED", iso8601_millis(j.created_at()));
    // startedAt is required in the model, so the SDK reads a missing one as 0.
    if let Some(t) = j.started_at().filter(|t| *t > 0) {
        row("STARTED", iso8601_millis(Some(t)));
    }
    if j.stopped_at().is_some() {
        row("STOPPED", iso8601_millis(j.stopped_at()));
    }
    if let Some(a) = j.array_properties() {
        if let Some(size) = a.size() {
            let counts = summary_text(a.status_summary.as_ref());
            row(
                "ARRAY",
                if counts.is_empty() {
                    format!("size {size}")
                } else {
                    format!("size {size}: {counts}")
                },
            );
        }
        if let Some(index) = a.index() {
            row("ARRAY INDEX", index.to_string());
        }
    }
    if !j.depends_on().is_empty() {
        let deps: Vec<String> = j
            .depends_on()
            .iter()
            .map(|d| match d.r#type() {
                Some(kind) => format!("{} ({})", or_dash(d.job_id()), kind.as_str()),
                None => or_dash(d.job_id()),
            })
            .collect();
        row("DEPENDS ON", deps.join(", "));
    }
    if !j.attempts().is_empty() {
        row("ATTEMPTS", j.attempts().len().to_string());
    }
    if let Some(c) = j.container() {
        if let Some(image) = c.image() {
            row("IMAGE", image.to_string());
        }
        if !c.command().is_empty() {
            row("COMMAND", command_line(c.command()));
        }
        if let Some(code) = c.exit_code() {
            row("EXIT CODE", code.to_string());
        }
        if let Some(reason) = c.reason().filter(|r| !r.is_empty()) {
            row("CONTAINER REASON", reason.to_string());
        }
        if let Some(stream) = c.log_stream_name() {
            row("LOG STREAM", stream.to_string());
        }
    }
    if !j.parameters.as_ref().is_none_or(HashMap::is_empty) {
        let sorted: BTreeMap<_, _> = j.parameters.iter().flatten().collect();
        let text: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}={v}")).collect();
        row("PARAMETERS", text.join(" "));
    }
    row("ARN", or_dash(j.job_arn()));
    t
}

pub async fn watch(ctx: &Ctx, a: &JobsWatchArgs) -> anyhow::Result<()> {
    let redraw = ctx.output == Output::Table && std::io::stdout().is_terminal() && !a.once;
    let mut drawn = 0usize;
    let mut ctrl_c = pin!(tokio::signal::ctrl_c());
    loop {
        let mut counts = Vec::with_capacity(STATUSES.len());
        let mut active_arrays = Vec::new();
        for status in STATUSES {
            let jobs = list_pages(ctx, Some(&a.queue), None, Some(status.clone()), None).await?;
            if !matches!(status, JobStatus::Succeeded | JobStatus::Failed) {
                active_arrays.extend(jobs.iter().filter(|j| is_array_parent(j)).cloned());
            }
            counts.push((status, jobs.len()));
        }
        let arrays = array_progress(ctx, active_arrays).await?;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()
            .and_then(|d| i64::try_from(d.as_millis()).ok());
        match ctx.output {
            Output::Json => {
                // One line per refresh (JSON Lines), so that a consumer can read it as a stream.
                let counts: serde_json::Map<String, Value> = counts
                    .iter()
                    .map(|(s, n)| (s.as_str().to_string(), Value::from(*n)))
                    .collect();
                let arrays: Vec<Value> = arrays
                    .iter()
                    .map(|p| {
                        json!({"jobId": p.job_id, "jobName": p.name, "size": p.size,
                               "done": p.done(), "statusSummary": p.summary})
                    })
                    .collect();
                let line = json!({"jobQueue": a.queue, "timestamp": now, "counts": counts,
                                  "arrays": arrays});
                emit(&format!("{line}\n"))?;
            }
            Output::Table => {
                let mut text = watch_text(&a.queue, &iso8601_millis(now), &counts);
                text.push_str(&arrays_text(&arrays));
                if redraw && drawn > 0 {
                    // Cursor up over the previous frame, then clear to the end of the screen.
                    emit(&format!("\x1b[{drawn}A\x1b[J"))?;
                }
                drawn = text.lines().count();
                emit(&text)?;
                if !redraw && !a.once {
                    emit("\n")?;
                }
            }
        }
        if a.once {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(WATCH_INTERVAL) => {}
            _ = &mut ctrl_c => return Ok(()),
        }
    }
}

/// At most this many array jobs get a progress bar in `jobs watch` (the oldest first).
const WATCH_ARRAYS: usize = 10;
const BAR_WIDTH: usize = 30;

/// The parent of an array job (its summary has a size and no index).
fn is_array_parent(j: &JobSummary) -> bool {
    j.array_properties()
        .is_some_and(|a| a.size().is_some_and(|n| n > 0) && a.index().is_none())
}

/// An array job still in progress: its children by status.
#[derive(Debug, Clone, PartialEq)]
struct ArrayProgress {
    job_id: String,
    name: String,
    size: i64,
    summary: BTreeMap<String, i64>,
}

impl ArrayProgress {
    fn done(&self) -> i64 {
        self.summary.get("SUCCEEDED").copied().unwrap_or(0)
            + self.summary.get("FAILED").copied().unwrap_or(0)
    }
}

/// The children's status summary of the oldest [`WATCH_ARRAYS`] active array jobs.
async fn array_progress(
    ctx: &Ctx,
    mut parents: Vec<JobSummary>,
) -> anyhow::Result<Vec<ArrayProgress>> {
    if parents.is_empty() {
        return Ok(Vec::new());
    }
    parents.sort_by_key(|j| (j.created_at().unwrap_or(0), j.job_id().map(str::to_string)));
    parents.truncate(WATCH_ARRAYS);
    let ids: Vec<String> = parents
        .iter()
        .filter_map(|j| j.job_id().map(str::to_string))
        .collect();
    let resp = ctx
        .client
        .describe_jobs()
        .set_jobs(Some(ids.clone()))
        .send()
        .await
        .map_err(|e| ctx.api_error(e))?;
    let by_id: HashMap<&str, &JobDetail> = resp
        .jobs()
        .iter()
        .filter_map(|j| j.job_id().map(|id| (id, j)))
        .collect();
    Ok(ids
        .iter()
        .filter_map(|id| {
            let j = by_id.get(id.as_str())?;
            let a = j.array_properties()?;
            Some(ArrayProgress {
                job_id: id.clone(),
                name: j.job_name().unwrap_or_default().to_string(),
                size: i64::from(a.size()?),
                summary: STATUSES
                    .iter()
                    .map(|s| (s.as_str().to_string(), count(a.status_summary.as_ref(), s)))
                    .filter(|(_, n)| *n > 0)
                    .collect(),
            })
        })
        .collect())
}

/// One line per array: `ID NAME [#####.....] 340/1000 RUNNING 20, SUCCEEDED 300, FAILED 40`.
fn arrays_text(arrays: &[ArrayProgress]) -> String {
    let mut out = String::new();
    for p in arrays {
        let filled = if p.size > 0 {
            (p.done().clamp(0, p.size) as usize * BAR_WIDTH) / p.size as usize
        } else {
            0
        };
        let counts: Vec<String> = STATUSES
            .iter()
            .filter_map(|s| {
                p.summary
                    .get(s.as_str())
                    .map(|n| format!("{} {n}", s.as_str()))
            })
            .collect();
        out.push_str(&format!(
            "array {} {} [{}{}] {}/{} {}\n",
            p.job_id,
            p.name,
            "#".repeat(filled),
            ".".repeat(BAR_WIDTH - filled),
            p.done(),
            p.size,
            counts.join(", ")
        ));
    }
    out
}

fn watch_text(queue: &str, now: &str, counts: &[(JobStatus, usize)]) -> String {
    let mut t = Table::new(["STATUS", "JOBS"]);
    for (status, n) in counts {
        t.push([status.as_str().to_string(), n.to_string()]);
    }
    let total: usize = counts.iter().map(|(_, n)| n).sum();
    t.push(["TOTAL".to_string(), total.to_string()]);
    format!("queue {queue} at {now}\n{}", t.render())
}

pub async fn cancel(ctx: &Ctx, job_id: &str, reason: &str) -> anyhow::Result<()> {
    ctx.client
        .cancel_job()
        .job_id(job_id)
        .reason(reason)
        .send()
        .await
        .map_err(|e| ctx.api_error(e))?;
    stopped(ctx, "cancel", job_id)
}

pub async fn terminate(ctx: &Ctx, job_id: &str, reason: &str) -> anyhow::Result<()> {
    ctx.client
        .terminate_job()
        .job_id(job_id)
        .reason(reason)
        .send()
        .await
        .map_err(|e| ctx.api_error(e))?;
    stopped(ctx, "terminate", job_id)
}

/// CancelJob and TerminateJob answer with an empty object; the effect comes later.
fn stopped(ctx: &Ctx, what: &str, job_id: &str) -> anyhow::Result<()> {
    match ctx.output {
        Output::Json => emit_json(&json!({})),
        Output::Table => emit(&format!("{what} requested for job {job_id}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::tests::offline_client;
    use crate::cli::{Cli, Command};
    use aws_sdk_batch::types::{ArrayJobDependency, ArrayPropertiesDetail, ContainerDetail};
    use clap::Parser;

    fn submit_args(extra: &[&str]) -> SubmitArgs {
        let args = ["flotilla", "submit", "--queue", "q", "--definition"]
            .into_iter()
            .chain(extra.iter().copied());
        match Cli::try_parse_from(args).unwrap().command {
            Command::Submit(a) => a,
            other => panic!("expected submit, got {other:?}"),
        }
    }

    #[test]
    fn job_name_defaults_to_the_definition_name() {
        assert_eq!(default_job_name("render"), "render");
        assert_eq!(default_job_name("render:3"), "render");
        assert_eq!(
            default_job_name("arn:aws:batch:us-east-1:000000000000:job-definition/render:3"),
            "render"
        );
        let a = submit_args(&["render:2"]);
        let req = submit_request(&offline_client(), &a);
        assert_eq!(req.as_input().get_job_name().as_deref(), Some("render"));
    }

    #[test]
    fn minimal_submit_sends_no_overrides() {
        let a = submit_args(&["d"]);
        let req = submit_request(&offline_client(), &a);
        let input = req.as_input();
        assert_eq!(input.get_job_queue().as_deref(), Some("q"));
        assert_eq!(input.get_job_definition().as_deref(), Some("d"));
        assert!(input.get_container_overrides().is_none());
        assert!(input.get_parameters().is_none());
        assert!(input.get_array_properties().is_none());
        assert!(input.get_retry_strategy().is_none());
        assert!(input.get_timeout().is_none());
    }

    #[test]
    #[allow(deprecated)]
    fn submit_maps_every_option() {
        let a = submit_args(&[
            "d",
            "--name",
            "job1",
            "--array-size",
            "4",
            "--depends-on",
            "p1:N_TO_N",
            "--depends-on",
            "p2",
            "--parameters",
            "k=v",
            "--parameters",
            "k=w",
            "--env",
            "A=1",
            "--env",
            "B=2",
            "--env",
            "A=3",
            "--vcpus",
            "2",
            "--memory",
            "512",
            "--attempts",
            "2",
            "--timeout",
            "120",
            "--share-identifier",
            "blue",
            "--",
            "echo",
            "hi",
        ]);
        let req = submit_request(&offline_client(), &a);
        let input = req.as_input();
        assert_eq!(input.get_job_name().as_deref(), Some("job1"));
        assert_eq!(input.get_share_identifier().as_deref(), Some("blue"));
        assert_eq!(
            input.get_array_properties().as_ref().unwrap().size(),
            Some(4)
        );
        let deps: Vec<_> = input
            .get_depends_on()
            .iter()
            .flatten()
            .map(|d| (d.job_id(), d.r#type().cloned()))
            .collect();
        assert_eq!(
            deps,
            [
                (Some("p1"), Some(ArrayJobDependency::NToN)),
                (Some("p2"), None)
            ]
        );
        assert_eq!(input.get_parameters().as_ref().unwrap()["k"], "w");
        let o = input.get_container_overrides().as_ref().unwrap();
        let env: Vec<_> = o
            .environment()
            .iter()
            .map(|e| (e.name(), e.value()))
            .collect();
        assert_eq!(env, [(Some("A"), Some("3")), (Some("B"), Some("2"))]);
        assert_eq!(o.command(), ["echo", "hi"]);
        let rr: Vec<_> = o
            .resource_requirements()
            .iter()
            .map(|r| (r.r#type().cloned(), r.value()))
            .collect();
        assert_eq!(
            rr,
            [
                (Some(ResourceType::Vcpu), Some("2")),
                (Some(ResourceType::Memory), Some("512"))
            ]
        );
        assert_eq!(o.vcpus(), None, "deprecated field stays unset");
        assert_eq!(
            input.get_retry_strategy().as_ref().unwrap().attempts(),
            Some(2)
        );
        assert_eq!(
            input
                .get_timeout()
                .as_ref()
                .unwrap()
                .attempt_duration_seconds(),
            Some(120)
        );
    }

    #[test]
    fn list_table_has_the_documented_columns() {
        let jobs = [JobSummary::builder()
            .job_id("j1")
            .job_name("hello")
            .status(JobStatus::Failed)
            .created_at(0)
            .status_reason("boom")
            .build()];
        assert_eq!(
            summary_table(&jobs).render(),
            "JOB ID  NAME   STATUS  CREATED               STATUS REASON\n\
             j1      hello  FAILED  1970-01-01T00:00:00Z  boom\n"
        );
    }

    #[test]
    fn detail_table_shows_key_fields() {
        let job = JobDetail::builder()
            .job_id("j1")
            .job_name("hello")
            .job_queue("arn:aws:batch:us-east-1:000000000000:job-queue/default")
            .job_definition("arn:aws:batch:us-east-1:000000000000:job-definition/hello:1")
            .status(JobStatus::Running)
            .created_at(0)
            .array_properties(
                ArrayPropertiesDetail::builder()
                    .size(3)
                    .status_summary("RUNNING", 1)
                    .status_summary("SUCCEEDED", 2)
                    .build(),
            )
            .container(
                ContainerDetail::builder()
                    .image("busybox")
                    .command("sh")
                    .command("-c")
                    .command("echo 'hi'")
                    .build(),
            )
            .build();
        let text = detail_table(&job).render();
        for line in [
            "QUEUE       default\n",
            "DEFINITION  hello:1\n",
            "ARRAY       size 3: RUNNING 1, SUCCEEDED 2\n",
            "COMMAND     sh -c 'echo '\\''hi'\\'''\n",
            "ARN         -\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
    }

    #[test]
    fn failure_reason_mentions_exit_code_and_children() {
        let job = JobDetail::builder()
            .status(JobStatus::Failed)
            .status_reason("Essential container in task exited")
            .container(ContainerDetail::builder().exit_code(2).build())
            .build();
        assert_eq!(
            failure_reason(&job),
            "Essential container in task exited (exit code 2)"
        );
        let array = JobDetail::builder()
            .status(JobStatus::Failed)
            .array_properties(
                ArrayPropertiesDetail::builder()
                    .size(4)
                    .status_summary("FAILED", 1)
                    .build(),
            )
            .build();
        assert_eq!(
            failure_reason(&array),
            "no reason given (1 of 4 children failed)"
        );
    }

    #[test]
    fn watch_draws_a_bar_per_array_by_children_done() {
        let p = ArrayProgress {
            job_id: "a1".into(),
            name: "render".into(),
            size: 1000,
            summary: [("RUNNING", 20), ("SUCCEEDED", 300), ("FAILED", 40)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        };
        assert_eq!(p.done(), 340);
        assert_eq!(
            arrays_text(&[p]),
            format!(
                "array a1 render [{}{}] 340/1000 RUNNING 20, SUCCEEDED 300, FAILED 40\n",
                "#".repeat(10),
                ".".repeat(20)
            )
        );
    }

    #[test]
    fn watch_counts_render_with_a_total() {
        let text = watch_text(
            "default",
            "1970-01-01T00:00:00Z",
            &[(JobStatus::Running, 2), (JobStatus::Failed, 1)],
        );
        assert_eq!(
            text,
            "queue default at 1970-01-01T00:00:00Z\n\
             STATUS   JOBS\n\
             RUNNING  2\n\
             FAILED   1\n\
             TOTAL    3\n"
        );
    }
}
