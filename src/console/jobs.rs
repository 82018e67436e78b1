//! `/console/jobs`: the ListJobs listing with its filters, paged by ListJobs' own keyset token;
//! `/console/jobs/{id}`: one job with its attempts, container, dependency graph and log.

use super::Console;
use super::auth::Session;
use super::error::{ConsoleError, ConsoleResult};
use super::form::{Form, encode};
use super::graph;
use super::html::{self, esc};
use super::live::text;
use crate::logs::{GetLogEvents, LogError};
use crate::model::arn::JOB_LOG_GROUP;
use crate::model::{JOB_STATUSES, KeyValuesPair, ListJobsRequest};
use axum::extract::{Path, Request, State};
use axum::response::Response;
use axum::{Extension, Json};
use serde_json::{Value, json};
use std::fmt::Write;
use std::sync::Arc;

const PAGE_SIZE: i32 = 100;
/// Log events the job page shows at first, and the most one poll returns.
const LOG_TAIL: i64 = 200;

fn filter(name: &str, value: String) -> KeyValuesPair {
    KeyValuesPair {
        name: Some(name.to_string()),
        values: Some(vec![value]),
    }
}

pub async fn list(
    State(console): State<Arc<Console>>,
    Extension(session): Extension<Session>,
    request: Request,
) -> ConsoleResult<Response> {
    let q = Form::parse(request.uri().query().unwrap_or(""));
    let overview = console.live.overview(&console.app).await?;
    let array = q.get("array");
    let queue = match (array, q.get("queue")) {
        (Some(_), _) => None,
        (None, Some(queue)) => Some(queue.to_string()),
        (None, None) => overview.queues.first().map(|q| q.name.clone()),
    };
    let status = q.get("status").unwrap_or("ALL");
    if status != "ALL" && !JOB_STATUSES.contains(&status) {
        return Err(ConsoleError::field(
            "status",
            format!("{status:?} is not ALL or a job status"),
        ));
    }
    let size: i32 = match q.get("size") {
        None => PAGE_SIZE,
        Some(s) => match s.parse() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => {
                return Err(ConsoleError::field(
                    "size",
                    format!("{s:?}: a page holds 1 to 1000 jobs"),
                ));
            }
        },
    };
    let mut filters = Vec::new();
    if let Some(name) = q.get("name") {
        filters.push(filter("JOB_NAME", name.to_string()));
    }
    if let Some(def) = q.get("definition") {
        filters.push(filter("JOB_DEFINITION", def.to_string()));
    }
    for (field, name) in [
        ("after", "AFTER_CREATED_AT"),
        ("before", "BEFORE_CREATED_AT"),
    ] {
        if let Some(v) = q.get(field) {
            let ms = html::parse_time(v).ok_or_else(|| {
                ConsoleError::field(
                    if field == "after" { "after" } else { "before" },
                    format!("{v:?} is not a time such as 2026-12-05T17:30 (UTC)"),
                )
            })?;
            filters.push(filter(name, ms.to_string()));
        }
    }
    let filtered = !filters.is_empty();
    if status == "ALL" && !filtered {
        // ListJobs lists every status only when a filter is given; this one excludes nothing.
        filters.push(filter("AFTER_CREATED_AT", "0".into()));
    }
    let page = match &queue {
        None if array.is_none() => json!({"jobSummaryList": []}),
        _ => {
            console
                .app
                .batch
                .list_jobs(ListJobsRequest {
                    job_queue: queue.clone(),
                    array_job_id: array.map(str::to_string),
                    job_status: (status != "ALL").then(|| status.to_string()),
                    max_results: Some(size),
                    next_token: q.get("next").map(str::to_string),
                    filters: (!filters.is_empty()).then_some(filters),
                    ..Default::default()
                })
                .await?
        }
    };
    let mut body = String::from("<h1>Jobs</h1>");
    body.push_str(&filter_form(
        &overview.queues,
        queue.as_deref(),
        array,
        status,
        &q,
    ));
    if filtered && status != "ALL" {
        body.push_str(r#"<p class="note">As in ListJobs, a name, definition or time filter lists jobs of every status.</p>"#);
    }
    let jobs = page
        .get("jobSummaryList")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let back = request
        .uri()
        .path_and_query()
        .map_or("/console/jobs".to_string(), |p| p.as_str().to_string());
    let rows: Vec<Vec<String>> = jobs.iter().map(summary_row).collect();
    let _ = write!(
        body,
        r#"<form method="post" action="/console/confirm" id="bulk">{}<input type="hidden" name="back" value="{}">
<div class="bulk"><label><input type="checkbox" id="select-all"> all on this page</label>
<button type="submit" name="action" value="cancel" id="bulk-cancel">Cancel selected</button>
<button type="submit" name="action" value="terminate" id="bulk-terminate">Terminate selected</button></div>
{}</form>"#,
        session.csrf_field(),
        esc(&back),
        html::table(
            "jobs-table",
            &[
                "", "Name", "Job ID", "Status", "Reason", "Created", "Started", "Stopped", "Exit",
                "Array",
            ],
            &rows
        )
    );
    // Keyset paging: the token marks where this page ended, so page 10,000 costs what page 1
    // does. There is no "previous": ListJobs pages forward only.
    let mut nav = String::new();
    if q.get("next").is_some() {
        let _ = write!(
            nav,
            r#"<a href="{}" id="first-page">First page</a> "#,
            esc(&link(&q, None))
        );
    }
    if let Some(t) = page.get("nextToken").and_then(Value::as_str) {
        let _ = write!(
            nav,
            r#"<a href="{}" id="next-page">Next page</a>"#,
            esc(&link(&q, Some(t)))
        );
    }
    let _ = write!(body, r#"<p class="pager">{nav}</p>"#);
    Ok(html::page("Jobs", &session, &body))
}

/// The listing's URL with the same filters and page token `next`.
fn link(q: &Form, next: Option<&str>) -> String {
    let mut out = String::from("/console/jobs?");
    for field in [
        "queue",
        "array",
        "status",
        "name",
        "definition",
        "after",
        "before",
        "size",
    ] {
        if let Some(v) = q.get(field) {
            let _ = write!(out, "{field}={}&", encode(v));
        }
    }
    if let Some(t) = next {
        let _ = write!(out, "next={}", encode(t));
    }
    out.trim_end_matches('&').to_string()
}

fn filter_form(
    queues: &[super::live::QueueView],
    queue: Option<&str>,
    array: Option<&str>,
    status: &str,
    q: &Form,
) -> String {
    let mut queue_opts = String::new();
    // The queue asked for is an option even when the cached overview predates it: otherwise
    // the browser would select the first queue and the next search would silently list another.
    let listed = queue.filter(|want| !queues.iter().any(|q| q.name == *want));
    for name in listed
        .into_iter()
        .chain(queues.iter().map(|q| q.name.as_str()))
    {
        let _ = write!(
            queue_opts,
            r#"<option value="{0}"{1}>{0}</option>"#,
            esc(name),
            if Some(name) == queue { " selected" } else { "" }
        );
    }
    let mut status_opts = String::new();
    for s in std::iter::once("ALL").chain(JOB_STATUSES) {
        let _ = write!(
            status_opts,
            r#"<option{}>{s}</option>"#,
            if s == status { " selected" } else { "" }
        );
    }
    let scope = match array {
        Some(a) => format!(
            r#"<label>Array job <input name="array" value="{}" size="40"></label>"#,
            esc(a)
        ),
        None => format!(
            r#"<label>Queue <select name="queue" id="f-queue">{queue_opts}</select></label>"#
        ),
    };
    let val = |k: &str| esc(q.get(k).unwrap_or(""));
    format!(
        r#"<form method="get" action="/console/jobs" class="filters" id="filters">{scope}
<label>Status <select name="status" id="f-status">{status_opts}</select></label>
<label>Name <input name="name" id="f-name" value="{}" placeholder="exact, or prefix*"></label>
<label>Definition <input name="definition" value="{}" placeholder="name or name:revision"></label>
<label>Created after <input type="datetime-local" name="after" value="{}"></label>
<label>before <input type="datetime-local" name="before" value="{}"></label>
<label>Per page <input name="size" value="{}" size="4"></label>
<button type="submit" id="f-apply">List</button></form>"#,
        val("name"),
        val("definition"),
        val("after"),
        val("before"),
        q.get("size").map_or(PAGE_SIZE.to_string(), esc),
    )
}

fn opt_time(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_i64)
        .map_or(String::new(), html::time)
}

fn summary_row(j: &Value) -> Vec<String> {
    let id = text(j, "jobId");
    let array = match j.get("arrayProperties") {
        Some(a) => match (a.get("size"), a.get("index")) {
            (Some(s), _) => format!(
                r#"<a href="/console/jobs?array={}">{} children</a>"#,
                esc(&encode(&id)),
                esc(&s.to_string())
            ),
            (None, Some(i)) => format!("index {}", esc(&i.to_string())),
            _ => String::new(),
        },
        None => String::new(),
    };
    vec![
        format!(
            r#"<input type="checkbox" name="job" value="{}" class="pick">"#,
            esc(&id)
        ),
        format!(
            r#"<a href="/console/jobs/{}">{}</a>"#,
            esc(&encode(&id)),
            esc(&text(j, "jobName"))
        ),
        format!(r#"<code>{}</code>"#, esc(&id)),
        html::status(&text(j, "status")),
        format!(
            r#"<span class="reason">{}</span>"#,
            esc(&text(j, "statusReason"))
        ),
        opt_time(j, "createdAt"),
        opt_time(j, "startedAt"),
        opt_time(j, "stoppedAt"),
        j.pointer("/container/exitCode")
            .map_or(String::new(), |c| esc(&c.to_string())),
        array,
    ]
}

pub async fn describe(console: &Console, id: &str) -> ConsoleResult<Value> {
    let answer = console.app.batch.describe_jobs(&[id.to_string()]).await?;
    answer
        .get("jobs")
        .and_then(|j| j.get(0))
        .cloned()
        .ok_or_else(|| ConsoleError::NotFound(format!("no job {id:?}")))
}

/// The log stream of the job's latest attempt.
fn log_stream(job: &Value) -> Option<String> {
    job.pointer("/container/logStreamName")
        .and_then(Value::as_str)
        .or_else(|| {
            job.get("attempts")?
                .as_array()?
                .iter()
                .rev()
                .find_map(|a| a.pointer("/container/logStreamName")?.as_str())
        })
        .map(str::to_string)
}

const FINAL: [&str; 2] = ["SUCCEEDED", "FAILED"];

pub async fn detail(
    State(console): State<Arc<Console>>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> ConsoleResult<Response> {
    let job = describe(&console, &id).await?;
    let status = text(&job, "status");
    let mut body = String::new();
    let _ = write!(
        body,
        r#"<h1 id="job-name">{}</h1>
<div class="job" id="job" data-job="{}" data-final="{}">
<dl class="facts">
<dt>Status</dt><dd><span id="job-status" class="st st-{}">{}</span></dd>
<dt>Reason</dt><dd id="job-reason">{}</dd>
<dt>Job ID</dt><dd><code>{}</code></dd>
<dt>Queue</dt><dd>{}</dd>
<dt>Definition</dt><dd>{}</dd>
<dt>Created</dt><dd>{}</dd><dt>Started</dt><dd id="job-started">{}</dd><dt>Stopped</dt><dd id="job-stopped">{}</dd>
</dl>"#,
        esc(&text(&job, "jobName")),
        esc(&id),
        FINAL.contains(&status.as_str()),
        esc(&status),
        esc(&status),
        esc(&text(&job, "statusReason")),
        esc(&id),
        esc(&text(&job, "jobQueue")),
        esc(&text(&job, "jobDefinition")),
        opt_time(&job, "createdAt"),
        opt_time(&job, "startedAt"),
        opt_time(&job, "stoppedAt"),
    );
    if !FINAL.contains(&status.as_str()) {
        let back = format!("/console/jobs/{}", encode(&id));
        let _ = write!(
            body,
            r#"<form method="post" action="/console/confirm" class="actions">{}<input type="hidden" name="job" value="{}"><input type="hidden" name="back" value="{}">
<button type="submit" name="action" value="cancel" id="cancel">Cancel</button>
<button type="submit" name="action" value="terminate" id="terminate">Terminate</button></form>"#,
            session.csrf_field(),
            esc(&id),
            esc(&back)
        );
    }
    if let Some(ap) = job.get("arrayProperties") {
        body.push_str(&array_section(&id, ap));
    }
    let _ = write!(
        body,
        r#"<div id="attempts-wrap">{}</div>"#,
        attempts_section(&job)
    );
    body.push_str(&log_section(&console, &job).await);
    let _ = write!(
        body,
        r#"<h2>Dependencies</h2><div class="graph" id="graph">{}</div>"#,
        graph::svg(&console.app, &job).await
    );
    body.push_str(&container_section(&job));
    body.push_str("</div>");
    Ok(html::page(&text(&job, "jobName"), &session, &body))
}

fn array_section(id: &str, ap: &Value) -> String {
    let mut out = String::from("<h2>Array</h2>");
    if let Some(size) = ap.get("size") {
        let _ = write!(
            out,
            r#"<p>{} children · <a href="/console/jobs?array={}" id="children">list them</a></p><table id="array-summary"><tr>"#,
            esc(&size.to_string()),
            esc(&encode(id))
        );
        let summary = ap.get("statusSummary").and_then(Value::as_object);
        for s in JOB_STATUSES {
            let _ = write!(out, "<th>{s}</th>");
        }
        out.push_str("</tr><tr>");
        for s in JOB_STATUSES {
            let n = summary
                .and_then(|m| m.get(s))
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let _ = write!(out, r#"<td data-status="{s}">{n}</td>"#);
        }
        out.push_str("</tr></table>");
    } else if let Some(i) = ap.get("index") {
        let parent = id.split(':').next().unwrap_or(id);
        let _ = write!(
            out,
            r#"<p>Child {i} of <a href="/console/jobs/{}">{}</a></p>"#,
            esc(&encode(parent)),
            esc(parent)
        );
    }
    out
}

fn attempts_section(job: &Value) -> String {
    let attempts = job
        .get("attempts")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = attempts
        .iter()
        .enumerate()
        .map(|(i, a)| {
            vec![
                (i + 1).to_string(),
                opt_time(a, "startedAt"),
                opt_time(a, "stoppedAt"),
                a.pointer("/container/exitCode")
                    .map_or(String::new(), |c| esc(&c.to_string())),
                esc(&[
                    text(a, "statusReason"),
                    a.pointer("/container/reason")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                ]
                .iter()
                .filter(|s| !s.is_empty())
                .cloned()
                .collect::<Vec<_>>()
                .join(" — ")),
                esc(a
                    .pointer("/container/logStreamName")
                    .and_then(Value::as_str)
                    .unwrap_or("")),
                attempt_cost(a),
            ]
        })
        .collect();
    let priced: Vec<f64> = attempts
        .iter()
        .filter_map(|a| a.pointer("/flotillaCost/cost").and_then(Value::as_f64))
        .collect();
    let total = if priced.is_empty() {
        String::new()
    } else {
        format!(
            r#"<p id="job-cost">Cost of its attempts: <b>${:.4}</b> (docs/cost.md)</p>"#,
            priced.iter().sum::<f64>()
        )
    };
    format!(
        "<h2>Attempts</h2>{}{total}",
        html::table(
            "attempts",
            &[
                "#",
                "Started",
                "Stopped",
                "Exit code",
                "Reason",
                "Log stream",
                "Cost"
            ],
            &rows
        )
    )
}

/// An attempt's `flotillaCost`: what it cost and where it ran (empty for LOCAL attempts).
fn attempt_cost(a: &Value) -> String {
    let Some(c) = a.get("flotillaCost") else {
        return String::new();
    };
    let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("");
    let f = |k: &str| c.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    esc(&format!(
        "${:.4} on {} ({} {}, ${}/h, share {:.3})",
        f("cost"),
        s("instanceId"),
        s("instanceType"),
        s("purchaseOption"),
        f("pricePerHour"),
        f("share")
    ))
}

fn container_section(job: &Value) -> String {
    let Some(c) = job.get("container") else {
        return String::new();
    };
    let mut out = String::from(r#"<h2>Container</h2><dl class="facts" id="container">"#);
    let _ = write!(out, "<dt>Image</dt><dd>{}</dd>", esc(&text(c, "image")));
    let command = super::live::strings(c.get("command"));
    let _ = write!(
        out,
        "<dt>Command</dt><dd><code>{}</code></dd>",
        esc(&serde_json::to_string(&command).unwrap_or_default())
    );
    if let Some(rr) = c.get("resourceRequirements").and_then(Value::as_array) {
        let r: Vec<String> = rr
            .iter()
            .map(|r| format!("{} {}", text(r, "type"), text(r, "value")))
            .collect();
        let _ = write!(out, "<dt>Resources</dt><dd>{}</dd>", esc(&r.join(", ")));
    }
    if let Some(code) = c.get("exitCode") {
        let _ = write!(out, "<dt>Exit code</dt><dd>{}</dd>", esc(&code.to_string()));
    }
    if let Some(reason) = c.get("reason").and_then(Value::as_str) {
        let _ = write!(out, "<dt>Reason</dt><dd>{}</dd>", esc(reason));
    }
    out.push_str("</dl>");
    if let Some(env) = c.get("environment").and_then(Value::as_array)
        && !env.is_empty()
    {
        let rows: Vec<Vec<String>> = env
            .iter()
            .map(|e| vec![esc(&text(e, "name")), esc(&text(e, "value"))])
            .collect();
        out.push_str(&html::table("environment", &["Variable", "Value"], &rows));
    }
    let _ = write!(
        out,
        r#"<details><summary>Full container spec (JSON)</summary><pre class="json">{}</pre></details>"#,
        esc(&serde_json::to_string_pretty(c).unwrap_or_default())
    );
    out
}

/// A page of the job's log: the last [`LOG_TAIL`] events, or those after `token`.
async fn read_log(
    console: &Console,
    job: &Value,
    token: Option<String>,
) -> ConsoleResult<(Vec<(i64, String)>, Option<String>)> {
    let Some(store) = console.app.logs.clone() else {
        return Ok((Vec::new(), None));
    };
    let Some(stream) = log_stream(job) else {
        return Ok((Vec::new(), None));
    };
    let (q_from_head, q_token) = (token.is_some(), token.clone());
    let q = GetLogEvents {
        start_time: None,
        end_time: None,
        start_from_head: Some(token.is_some()),
        next_token: token,
        limit: Some(LOG_TAIL),
    };
    // The log store reads files: off the async workers, as the Logs API does.
    let page =
        tokio::task::spawn_blocking(move || store.get_log_events(JOB_LOG_GROUP, &stream, &q))
            .await
            .map_err(|e| LogError::Io(std::io::Error::other(e.to_string())))?;
    match page {
        Ok(p) => Ok((
            p.events
                .into_iter()
                .map(|e| (e.timestamp, e.message))
                .collect(),
            Some(p.next_forward_token),
        )),
        // Ran on ECS: its awslogs driver wrote to CloudWatch Logs, read as the Logs API does.
        Err(LogError::ResourceNotFound(_)) if console.app.aws.is_some() => {
            let Some(aws) = console.app.aws.as_deref() else {
                return Ok((Vec::new(), None));
            };
            let request = serde_json::json!({
                "logGroupName": JOB_LOG_GROUP,
                "logStreamName": log_stream(job),
                "startFromHead": q_from_head,
                "nextToken": q_token,
                "limit": LOG_TAIL,
            });
            match crate::api::logs::cloudwatch_get_log_events(aws, request.to_string().as_bytes())
                .await
            {
                Ok(v) => Ok((
                    v["events"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|e| {
                            (
                                e["timestamp"].as_i64().unwrap_or(0),
                                e["message"].as_str().unwrap_or("").to_string(),
                            )
                        })
                        .collect(),
                    v["nextForwardToken"].as_str().map(str::to_string),
                )),
                // Not there yet (the task has not logged, or its stream is gone).
                Err(_) => Ok((Vec::new(), None)),
            }
        }
        // Not written yet (the job has not started, or ran elsewhere): nothing to show yet.
        Err(LogError::ResourceNotFound(_)) => Ok((Vec::new(), None)),
        Err(e) => Err(e.into()),
    }
}

fn log_lines(events: &[(i64, String)]) -> String {
    let mut out = String::new();
    for (t, m) in events {
        let _ = writeln!(
            out,
            r#"<span class="line"><span class="ts">{}</span> {}</span>"#,
            esc(&html::time(*t)),
            esc(m)
        );
    }
    out
}

async fn log_section(console: &Console, job: &Value) -> String {
    if job.pointer("/arrayProperties/size").is_some() {
        return r#"<h2>Log</h2><p class="muted">An array job's output is in its children's logs.</p>"#.into();
    }
    let (events, token) = match read_log(console, job, None).await {
        Ok(x) => x,
        Err(e) => {
            return format!(
                r#"<h2>Log</h2><p class="error">{}</p>"#,
                esc(&e.to_string())
            );
        }
    };
    format!(
        r#"<h2>Log <label class="follow"><input type="checkbox" id="follow" checked> follow</label></h2>
<pre class="log" id="log" data-token="{}">{}</pre>"#,
        esc(token.as_deref().unwrap_or("")),
        log_lines(&events)
    )
}

/// What the job page refreshes: status, reason, array progress.
pub async fn status_api(
    State(console): State<Arc<Console>>,
    Path(id): Path<String>,
) -> ConsoleResult<Json<Value>> {
    let job = describe(&console, &id).await?;
    Ok(Json(json!({
        "status": text(&job, "status"),
        "statusReason": text(&job, "statusReason"),
        "startedAt": job.get("startedAt").and_then(Value::as_i64).map(html::time),
        "stoppedAt": job.get("stoppedAt").and_then(Value::as_i64).map(html::time),
        "attemptsHtml": attempts_section(&job),
        "summary": job.pointer("/arrayProperties/statusSummary"),
    })))
}

/// Log events after `token` (or the tail without one), as escaped HTML lines.
pub async fn log_api(
    State(console): State<Arc<Console>>,
    Path(id): Path<String>,
    request: Request,
) -> ConsoleResult<Json<Value>> {
    let q = Form::parse(request.uri().query().unwrap_or(""));
    let job = describe(&console, &id).await?;
    let token = q.get("token").map(str::to_string);
    let fresh = token.is_none();
    let (events, next) = read_log(&console, &job, token).await?;
    Ok(Json(json!({
        "html": log_lines(&events),
        "count": events.len(),
        "replace": fresh,
        "token": next,
        "final": FINAL.contains(&text(&job, "status").as_str()),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::live::QueueView;

    fn view(name: &str) -> QueueView {
        QueueView {
            name: name.into(),
            state: "ENABLED".into(),
            status: "VALID".into(),
            priority: 1,
            counts: Default::default(),
            oldest_runnable: None,
        }
    }

    #[test]
    fn the_queue_asked_for_stays_selected_when_the_overview_predates_it() {
        let q = Form::parse("queue=bulk");
        let form = filter_form(&[view("default")], Some("bulk"), None, "ALL", &q);
        assert!(
            form.contains(r#"<option value="bulk" selected>bulk</option>"#),
            "{form}"
        );
        assert!(form.contains(r#"<option value="default">default</option>"#));
        // Known to the overview: listed once.
        let form = filter_form(
            &[view("default"), view("bulk")],
            Some("bulk"),
            None,
            "ALL",
            &q,
        );
        assert_eq!(form.matches(r#"value="bulk""#).count(), 1, "{form}");
    }
}
