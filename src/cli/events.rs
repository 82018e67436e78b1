//! `flotilla events`: follows the server's job-event stream (`GET /events`), signed like every
//! other request, resuming where it left off when the connection drops.

use super::client::Ctx;
use super::{EventsArgs, Output};
use anyhow::anyhow;
use http_body_util::BodyExt;
use std::io::Write;
use std::time::Duration;

pub async fn follow(ctx: &Ctx, a: &EventsArgs) -> anyhow::Result<()> {
    let client: crate::util::http::Client<http_body_util::Empty<bytes::Bytes>> =
        crate::util::http::client()?;
    let mut after = a.after;
    let mut printed = 0usize;
    let mut failures = 0u32;
    loop {
        let path = match after {
            Some(n) => format!("/events?after={n}"),
            None => "/events".to_string(),
        };
        let headers = super::signed::headers(ctx, &http::Method::GET, &path, b"").await?;
        let mut req = hyper::Request::get(format!("{}{path}", ctx.endpoint.trim_end_matches('/')));
        for (k, v) in &headers {
            req = req.header(k, v);
        }
        let resp = match client
            .request(req.body(http_body_util::Empty::new())?)
            .await
        {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => {
                let status = r.status();
                let body = r.into_body().collect().await.map(|b| b.to_bytes());
                let text = body.map(|b| String::from_utf8_lossy(&b).into_owned());
                return Err(anyhow!(
                    "GET /events: {status}: {}",
                    text.unwrap_or_default()
                ));
            }
            Err(e) => {
                failures += 1;
                if failures > 30 {
                    return Err(anyhow!("cannot reach {}: {e}", ctx.endpoint));
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        failures = 0;
        let mut body = resp.into_body();
        let mut buf = String::new();
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            let Some(data) = frame.data_ref() else {
                continue;
            };
            buf.push_str(&String::from_utf8_lossy(data));
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                let mut id = None;
                let mut data = None;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = v.parse::<i64>().ok();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = serde_json::from_str::<serde_json::Value>(v).ok();
                    }
                }
                let (Some(id), Some(ev)) = (id, data) else {
                    continue;
                };
                after = Some(id);
                if let Some(q) = &a.queue {
                    let queue = ev["detail"]["jobQueue"].as_str().unwrap_or_default();
                    if queue != q && !queue.ends_with(&format!("/{q}")) {
                        continue;
                    }
                }
                print_event(ctx.output, id, &ev)?;
                printed += 1;
                if a.count.is_some_and(|n| printed >= n) {
                    return Ok(());
                }
            }
        }
        // The server went away (a restart): resume after the last event printed.
    }
}

fn print_event(output: Output, id: i64, ev: &serde_json::Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => writeln!(out, "{ev}")?,
        Output::Table => {
            let d = &ev["detail"];
            let s = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
            let blocked = if ev["detail-type"] == "Batch Job Queue Blocked" {
                " (queue blocked)"
            } else {
                ""
            };
            writeln!(
                out,
                "{id:>8}  {}  {:<9}{blocked}  {} {}  {}",
                s(&ev["time"]),
                s(&d["status"]),
                s(&d["jobName"]),
                s(&d["jobId"]),
                d["statusReason"].as_str().unwrap_or(""),
            )?
        }
    }
    out.flush()?;
    Ok(())
}
