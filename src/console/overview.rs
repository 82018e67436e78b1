//! `/console`: queues, compute environments and the last hour's charts; the tables and the
//! chart data are refreshed by `console.js` from `/console/api/overview`.

use super::Console;
use super::auth::Session;
use super::error::ConsoleResult;
use super::form::encode;
use super::html::{self, esc};
use super::live::{EnvView, Overview, QueueView};
use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::response::Response;
use serde_json::{Value, json};
use std::sync::Arc;

use crate::model::JOB_STATUSES;

pub async fn page(
    State(console): State<Arc<Console>>,
    Extension(session): Extension<Session>,
) -> ConsoleResult<Response> {
    let o = console.live.overview(&console.app).await?;
    let body = format!(
        r#"<h1>Overview</h1>
<section class="charts" id="charts" data-period="{}">
<figure><figcaption>Queue depth (jobs waiting)</figcaption><div class="chart" id="chart-depth"></div></figure>
<figure><figcaption>Running jobs</figcaption><div class="chart" id="chart-running"></div></figure>
<figure><figcaption>Fleet vCPUs against demand</figcaption><div class="chart" id="chart-vcpus"></div></figure>
</section>
<h2>Job queues</h2><div id="queues">{}</div>
<h2>Compute environments</h2><div id="envs">{}</div>
<p class="muted" id="updated">Updated {}</p>"#,
        super::live::PERIOD.as_secs(),
        queues_table(&o, &session),
        envs_table(&o, &session),
        html::time(o.at),
    );
    Ok(html::page("Overview", &session, &body))
}

/// The tables as HTML (rendered here, escaped once) and the chart samples.
pub async fn api(
    State(console): State<Arc<Console>>,
    Extension(session): Extension<Session>,
) -> ConsoleResult<Json<Value>> {
    let o = console.live.overview(&console.app).await?;
    let mut samples = console.live.samples();
    samples.push(o.sample());
    Ok(Json(json!({
        "at": o.at,
        "updated": html::time(o.at),
        "queuesHtml": queues_table(&o, &session),
        "envsHtml": envs_table(&o, &session),
        "samples": samples,
    })))
}

/// A button that asks for confirmation of `action` on `target`.
fn state_button(session: &Session, action: &str, target: &str, label: &str) -> String {
    format!(
        r#"<form method="post" action="/console/confirm" class="inline">{}<input type="hidden" name="action" value="{}"><input type="hidden" name="target" value="{}"><input type="hidden" name="back" value="/console"><button type="submit" class="small" data-action="{}" data-target="{}">{}</button></form>"#,
        session.csrf_field(),
        esc(action),
        esc(target),
        esc(action),
        esc(target),
        esc(label)
    )
}

fn queue_row(q: &QueueView, session: &Session) -> Vec<String> {
    let list = |status: &str| {
        format!(
            "/console/jobs?queue={}&status={}",
            encode(&q.name),
            encode(status)
        )
    };
    let toggle = if q.state == "ENABLED" {
        state_button(session, "disable-queue", &q.name, "Disable")
    } else {
        state_button(session, "enable-queue", &q.name, "Enable")
    };
    let mut row = vec![
        format!(
            r#"<a href="{}">{}</a>"#,
            esc(&list("RUNNING")),
            esc(&q.name)
        ),
        format!("{} {toggle}", html::status(&q.state)),
        q.priority.to_string(),
    ];
    for s in JOB_STATUSES {
        let n = q.counts.get(s).copied().unwrap_or(0);
        row.push(format!(
            r#"<a class="count" data-status="{s}" href="{}">{n}</a>"#,
            esc(&list(s))
        ));
    }
    row.push(match &q.oldest_runnable {
        None => r#"<span class="muted">—</span>"#.to_string(),
        Some(o) => format!(
            r#"<a href="/console/jobs/{}">{}</a> {}<div class="reason">{}</div>"#,
            esc(&encode(&o.job_id)),
            esc(&o.job_name),
            esc(&html::age(o.age_ms)),
            esc(&o.reason)
        ),
    });
    row
}

fn queues_table(o: &Overview, session: &Session) -> String {
    let mut head = vec!["Queue", "State", "Priority"];
    head.extend(JOB_STATUSES);
    head.push("Oldest RUNNABLE");
    let rows: Vec<Vec<String>> = o.queues.iter().map(|q| queue_row(q, session)).collect();
    html::table("queues-table", &head, &rows)
}

fn env_row(e: &EnvView, session: &Session) -> Vec<String> {
    let toggle = if e.state == "ENABLED" {
        state_button(session, "disable-ce", &e.name, "Disable")
    } else {
        state_button(session, "enable-ce", &e.name, "Enable")
    };
    let types = if e.instance_types.is_empty() {
        r#"<span class="muted">—</span>"#.to_string()
    } else {
        esc(&e.instance_types.join(", "))
    };
    vec![
        esc(&e.name),
        format!("{} {}", esc(&e.kind), esc(&e.resource_type)),
        format!("{} {toggle}", html::status(&e.state)),
        format!("{}", e.desired_vcpus),
        format!("{}", e.used_vcpus),
        format!(
            "{} <span class=\"muted\">(max {})</span>",
            e.fleet_vcpus, e.max_vcpus
        ),
        {
            let kinds: Vec<String> = e
                .running_types
                .iter()
                .map(|(t, option, n)| {
                    let option = if *option == "SPOT" {
                        "Spot"
                    } else {
                        "on-demand"
                    };
                    format!("{n} × {} {option}", esc(t))
                })
                .collect();
            let detail = if kinds.is_empty() {
                String::new()
            } else {
                format!("<br><span class=\"types\">{}</span>", kinds.join(", "))
            };
            format!("{} Spot · {} on-demand{detail}", e.spot, e.on_demand)
        },
        types,
    ]
}

fn envs_table(o: &Overview, session: &Session) -> String {
    let head = [
        "Environment",
        "Type",
        "State",
        "Desired vCPUs",
        "Running vCPUs",
        "Fleet vCPUs",
        "Instances",
        "Allowed types",
    ];
    let rows: Vec<Vec<String>> = o.envs.iter().map(|e| env_row(e, session)).collect();
    html::table("envs-table", &head, &rows)
}
