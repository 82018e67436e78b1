//! `flotilla logs`: a job attempt's log, read through the CloudWatch Logs API like any AWS tool.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use aws_sdk_batch::types::JobStatus;

use super::LogsArgs;
use super::client::Ctx;
use crate::model::arn::JOB_LOG_GROUP;

/// The log stream of the chosen attempt, and whether the job has finished.
async fn stream_of(ctx: &Ctx, args: &LogsArgs) -> anyhow::Result<(Option<String>, bool)> {
    let job = ctx
        .client
        .describe_jobs()
        .jobs(&args.id)
        .send()
        .await
        .map_err(|e| ctx.api_error(e))?
        .jobs
        .unwrap_or_default()
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("no job {}", args.id))?;
    if job.array_properties.as_ref().and_then(|a| a.size).is_some() {
        bail!(
            "{} is an array job; its children have the logs: flotilla logs {}:0",
            args.id,
            args.id
        );
    }
    let done = matches!(job.status, Some(JobStatus::Succeeded | JobStatus::Failed));
    let attempts = job.attempts.unwrap_or_default();
    let stream = match args.attempt {
        Some(n) => {
            let n = n as usize;
            if n <= attempts.len() {
                attempts[n - 1]
                    .container
                    .as_ref()
                    .and_then(|c| c.log_stream_name.clone())
            } else if n == attempts.len() + 1 {
                job.container.and_then(|c| c.log_stream_name)
            } else {
                bail!(
                    "job {} has no attempt {n} (it has {})",
                    args.id,
                    attempts.len()
                );
            }
        }
        // The running attempt, else the last finished one.
        None if !done => job.container.and_then(|c| c.log_stream_name),
        None => attempts
            .last()
            .and_then(|a| a.container.as_ref())
            .and_then(|c| c.log_stream_name.clone()),
    };
    Ok((stream, done))
}

pub async fn print(ctx: &Ctx, args: &LogsArgs) -> anyhow::Result<()> {
    let mut token: Option<String> = None;
    let mut stream: Option<String> = None;
    loop {
        let (current, done) = stream_of(ctx, args).await?;
        if current != stream && current.is_some() {
            // A new attempt started: read its stream from the beginning.
            stream = current;
            token = None;
        }
        if let Some(s) = &stream {
            loop {
                let out = ctx
                    .logs
                    .get_log_events()
                    .log_group_name(JOB_LOG_GROUP)
                    .log_stream_name(s)
                    .start_from_head(true)
                    .set_next_token(token.clone())
                    .send()
                    .await
                    .map_err(|e| ctx.api_error(e))
                    .with_context(|| format!("reading log stream {s}"))?;
                for e in out.events.unwrap_or_default() {
                    println!("{}", e.message.unwrap_or_default());
                }
                let next = out.next_forward_token;
                // CloudWatch returns the same forward token at the end of a stream.
                let at_end = next.is_none() || next == token;
                token = next;
                if at_end {
                    break;
                }
            }
        } else if !args.follow || done {
            bail!("job {} has no log yet: it has not started", args.id);
        }
        if !args.follow || done {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
