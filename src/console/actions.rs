//! Actions, each in two POSTs: `/console/confirm` shows what will happen and asks; `/console/act`
//! does it. Both check the CSRF token and the origin (see `auth`).

use super::Console;
use super::auth::{Session, read_form, redirect};
use super::error::{ConsoleError, ConsoleResult};
use super::form::Form;
use super::html::{self, esc};
use crate::error::BatchError;
use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};
use std::fmt::Write;
use std::sync::Arc;

/// TerminateJobs/CancelJobs take at most this many IDs per call.
const BULK: usize = 50;
/// Jobs one action may name: a page of the listing.
const MAX_JOBS: usize = 1000;

enum Action<'a> {
    Stop {
        terminate: bool,
        jobs: Vec<&'a str>,
    },
    State {
        queue: bool,
        enable: bool,
        target: &'a str,
    },
}

impl<'a> Action<'a> {
    fn parse(form: &'a Form) -> ConsoleResult<Action<'a>> {
        let action = form
            .get("action")
            .ok_or_else(|| ConsoleError::field("action", "is required"))?;
        match action {
            "cancel" | "terminate" => {
                let jobs = form.all("job");
                if jobs.is_empty() {
                    return Err(ConsoleError::field("job", "select at least one job"));
                }
                if jobs.len() > MAX_JOBS {
                    return Err(ConsoleError::field(
                        "job",
                        format!("at most {MAX_JOBS} jobs at once, got {}", jobs.len()),
                    ));
                }
                Ok(Action::Stop {
                    terminate: action == "terminate",
                    jobs,
                })
            }
            "enable-queue" | "disable-queue" | "enable-ce" | "disable-ce" => Ok(Action::State {
                queue: action.ends_with("queue"),
                enable: action.starts_with("enable"),
                target: form
                    .get("target")
                    .ok_or_else(|| ConsoleError::field("target", "is required"))?,
            }),
            other => Err(ConsoleError::field(
                "action",
                format!(
                    "{other:?} is not cancel, terminate, enable-queue, disable-queue, enable-ce or disable-ce"
                ),
            )),
        }
    }

    fn question(&self) -> String {
        match self {
            Action::Stop { terminate, jobs } => format!(
                "{} {} job{}?",
                if *terminate { "Terminate" } else { "Cancel" },
                jobs.len(),
                if jobs.len() == 1 { "" } else { "s" }
            ),
            Action::State {
                queue,
                enable,
                target,
            } => format!(
                "{} {} {target}?",
                if *enable { "Enable" } else { "Disable" },
                if *queue {
                    "job queue"
                } else {
                    "compute environment"
                }
            ),
        }
    }
}

/// Where to return: a console page, never elsewhere.
fn back(form: &Form) -> String {
    match form.get("back") {
        Some(b) if b.starts_with("/console") && !b.contains("//") && !b.contains('\\') => {
            b.to_string()
        }
        _ => "/console".to_string(),
    }
}

pub async fn confirm(
    State(_console): State<Arc<Console>>,
    Extension(session): Extension<Session>,
    body: Body,
) -> ConsoleResult<Response> {
    let form = read_form(&session, body).await?;
    let action = Action::parse(&form)?;
    let back = back(&form);
    let mut hidden = session.csrf_field();
    let _ = write!(
        hidden,
        r#"<input type="hidden" name="action" value="{}"><input type="hidden" name="back" value="{}">"#,
        esc(form.get("action").unwrap_or("")),
        esc(&back)
    );
    let mut body = format!(r#"<h1 id="question">{}</h1>"#, esc(&action.question()));
    match &action {
        Action::Stop { terminate, jobs } => {
            body.push_str(r#"<ul class="targets">"#);
            for (i, j) in jobs.iter().enumerate() {
                let _ = write!(
                    hidden,
                    r#"<input type="hidden" name="job" value="{}">"#,
                    esc(j)
                );
                if i < 20 {
                    let _ = write!(body, "<li><code>{}</code></li>", esc(j));
                }
            }
            if jobs.len() > 20 {
                let _ = write!(body, "<li>… and {} more</li>", jobs.len() - 20);
            }
            body.push_str("</ul>");
            let what = if *terminate {
                "Running jobs are stopped (SIGTERM, then SIGKILL) and marked FAILED; waiting ones are FAILED without running."
            } else {
                "Jobs that have not started are FAILED; running ones continue."
            };
            let who = session.key_id.as_deref().unwrap_or("the loopback console");
            let _ = write!(
                body,
                r#"<p>{}</p><form method="post" action="/console/act" class="confirm">{hidden}
<label>Reason <input name="reason" id="reason" size="60" maxlength="1024" value="{} from the web console by {}"></label>
<button type="submit" id="confirm" class="danger">{}</button> <a href="{}" id="back">Back</a></form>"#,
                esc(what),
                if *terminate {
                    "Terminated"
                } else {
                    "Cancelled"
                },
                esc(who),
                if *terminate {
                    "Terminate"
                } else {
                    "Cancel jobs"
                },
                esc(&back)
            );
        }
        Action::State { target, .. } => {
            let _ = write!(
                hidden,
                r#"<input type="hidden" name="target" value="{}">"#,
                esc(target)
            );
            let _ = write!(
                body,
                r#"<form method="post" action="/console/act" class="confirm">{hidden}
<button type="submit" id="confirm" class="danger">Yes</button> <a href="{}" id="back">Back</a></form>"#,
                esc(&back)
            );
        }
    }
    Ok(html::page("Confirm", &session, &body))
}

pub async fn act(
    State(console): State<Arc<Console>>,
    Extension(session): Extension<Session>,
    body: Body,
) -> ConsoleResult<Response> {
    let form = read_form(&session, body).await?;
    let done = perform(&console, &session, &form).await;
    // The page it returns to shows the action's effect, not figures cached before it.
    console.live.invalidate();
    done
}

async fn perform(console: &Console, session: &Session, form: &Form) -> ConsoleResult<Response> {
    let action = Action::parse(form)?;
    let back = back(form);
    let batch = &console.app.batch;
    match action {
        Action::Stop { terminate, jobs } => {
            let reason = form
                .get("reason")
                .ok_or_else(|| ConsoleError::field("reason", "is required"))?;
            if let [job] = jobs.as_slice() {
                batch.stop_job(job, reason, terminate).await?;
                return Ok(redirect(&back));
            }
            let mut errors = Vec::new();
            for chunk in jobs.chunks(BULK) {
                let ids: Vec<String> = chunk.iter().map(|s| s.to_string()).collect();
                let answer = batch.stop_jobs(&ids, reason, terminate).await?;
                if let Some(e) = answer.get("errors").and_then(Value::as_array) {
                    errors.extend(e.iter().cloned());
                }
            }
            if errors.is_empty() {
                return Ok(redirect(&back));
            }
            let rows: Vec<Vec<String>> = errors
                .iter()
                .map(|e| {
                    vec![
                        esc(e.get("job").and_then(Value::as_str).unwrap_or("")),
                        esc(e.get("message").and_then(Value::as_str).unwrap_or("")),
                    ]
                })
                .collect();
            let body = format!(
                r#"<h1>{} of {} jobs refused</h1>{}<p><a href="{}">Back</a></p>"#,
                errors.len(),
                jobs.len(),
                html::table("errors", &["Job", "Error"], &rows),
                esc(&back)
            );
            let mut resp = html::page("Some jobs refused", session, &body);
            *resp.status_mut() = StatusCode::BAD_REQUEST;
            Ok(resp)
        }
        Action::State {
            queue,
            enable,
            target,
        } => {
            let state = if enable { "ENABLED" } else { "DISABLED" };
            let bad = |e: serde_json::Error| BatchError::Internal(e.to_string());
            if queue {
                let req = serde_json::from_value(json!({"jobQueue": target, "state": state}))
                    .map_err(bad)?;
                batch.update_job_queue(req).await?;
            } else {
                let req =
                    serde_json::from_value(json!({"computeEnvironment": target, "state": state}))
                        .map_err(bad)?;
                batch.update_compute_environment(req).await?;
            }
            Ok(redirect(&back))
        }
    }
}
