//! What the runtimes report: an attempt started, ended, never started, or lost its Spot host.

use super::Engine;
use super::retry::{self, AttemptEnd, Outcome};
use crate::compute::RuntimeEvent;
use crate::model::arn::stream_name;
use crate::model::{AttemptContainerDetail, AttemptDetail, JobStatus};
use crate::store::AttemptUsage;

/// AWS's `statusReason` for an attempt whose container exited.
const EXITED: &str = "Essential container in task exited";
const TIMED_OUT: &str = "Job attempt duration exceeded timeout";

/// How one attempt ended, as a runtime reported it.
struct Ending {
    exit_code: Option<i32>,
    reason: Option<String>,
    /// EC2 reclaimed the Spot host: retried without spending the user's attempts.
    interrupted: bool,
}

impl Engine {
    pub(super) fn apply_event(&mut self, ev: RuntimeEvent) {
        let now = self.clock.now_ms();
        match ev {
            RuntimeEvent::Started {
                job_id,
                attempt,
                task_id,
            } => self.started(&job_id, attempt, task_id, now),
            RuntimeEvent::Exited {
                job_id,
                attempt,
                exit_code,
                reason,
            } => {
                let end = Ending {
                    exit_code,
                    reason,
                    interrupted: false,
                };
                self.attempt_ended(&job_id, attempt, end, now);
                // The runtime may forget this end once the engine has written it.
                self.writer.ended(job_id, attempt);
            }
            RuntimeEvent::Interrupted {
                job_id,
                attempt,
                reason,
            } => {
                let end = Ending {
                    exit_code: None,
                    reason: Some(reason),
                    interrupted: true,
                };
                self.attempt_ended(&job_id, attempt, end, now);
            }
            RuntimeEvent::NotStarted {
                job_id,
                attempt,
                reason,
            } => self.not_started(&job_id, attempt, reason, now),
        }
    }

    /// Whether `attempt` is job `id`'s current attempt and holds capacity: events about
    /// anything else are stale (a retried or finished attempt) and change nothing.
    fn is_current(&self, id: &str, attempt: u32) -> bool {
        self.table
            .get(id)
            .is_some_and(|j| j.attempt_no() == attempt && j.d.status.is_active())
    }

    fn started(&mut self, job_id: &str, attempt: u32, task_id: String, now: i64) {
        if !self
            .table
            .get(job_id)
            .is_some_and(|j| j.attempt_no() == attempt && j.d.status == JobStatus::Starting)
        {
            return;
        }
        self.table.transition(job_id, JobStatus::Running, now);
        if let Some(job) = self.table.get_mut(job_id) {
            // ECS reports the task ARN; its last segment is the task ID in the stream name.
            let stream = stream_name(&job.d.job_definition, &task_id);
            if let Some(c) = job.d.container.as_mut() {
                c.log_stream_name = Some(stream);
                c.task_arn = Some(task_id);
            }
        }
        tracing::info!(%job_id, attempt, "job running");
    }

    fn not_started(&mut self, job_id: &str, attempt: u32, reason: String, now: i64) {
        if !self.is_current(job_id, attempt) {
            return;
        }
        let Some(job) = self.table.get(job_id) else {
            return;
        };
        if job.d.is_terminated == Some(true) {
            let why = job.d.status_reason.clone().unwrap_or(reason);
            self.fail(job_id, why, now);
            return;
        }
        tracing::info!(job_id, attempt, %reason, "attempt did not start; runnable again");
        self.table.transition(job_id, JobStatus::Runnable, now);
        if let Some(job) = self.table.get_mut(job_id) {
            job.d.status_reason = Some(reason);
        }
    }

    fn attempt_ended(&mut self, job_id: &str, attempt: u32, end: Ending, now: i64) {
        if !self.is_current(job_id, attempt) {
            return;
        }
        let spot_limit = self.cfg.spot_max_interruptions;
        let Some(job) = self.table.get_mut(job_id) else {
            return;
        };
        let started = job.d.started_at;
        if let (Some(share), Some(s)) = (&job.d.share_identifier, started) {
            let vcpu_seconds =
                job.need.milli_vcpus as f64 / 1000.0 * ((now - s).max(0) as f64 / 1000.0);
            self.pass
                .shares
                .record(&job.d.job_queue, share, vcpu_seconds, now);
        }
        let timed_out = job.d.internal.timed_out.take().unwrap_or(false);
        let stopped_by_user = job.stopped_by_user();
        let Ending {
            exit_code,
            reason,
            interrupted,
        } = end;
        let attempt_reason = match (&reason, exit_code) {
            (Some(r), None) => r.clone(),
            _ if timed_out => TIMED_OUT.to_string(),
            _ => EXITED.to_string(),
        };
        let stream = job
            .d
            .container
            .as_ref()
            .and_then(|c| c.log_stream_name.clone());
        // The runtime's task (an ECS task ARN) once it started; Flotilla's handle otherwise.
        let handle = job.d.internal.task_id.take();
        let task = job
            .d
            .container
            .as_ref()
            .and_then(|c| c.task_arn.clone())
            .filter(|_| started.is_some())
            .or(handle);
        // Cost: the attempt's share of its instance from when it started running (the instance's
        // time before that is the fleet's idle time).
        let cost = match (job.d.internal.host.take(), started) {
            (Some(mut host), Some(s)) => {
                let ms = (now - s).max(0);
                let dollars = host.price_per_hour * host.share * ms as f64 / 3_600_000.0;
                host.cost = Some(dollars);
                crate::metrics::job_cost(&job.d.job_queue, dollars);
                self.writer.usage.push(AttemptUsage {
                    job_id: job_id.to_string(),
                    attempt,
                    job_queue: job.d.job_queue.clone(),
                    share_identifier: job.d.share_identifier.clone(),
                    job_definition: job.d.job_definition.clone(),
                    compute_environment: job
                        .d
                        .internal
                        .compute_environment
                        .clone()
                        .unwrap_or_default(),
                    instance_id: host.instance_id.clone(),
                    instance_type: host.instance_type.clone(),
                    spot: host.purchase_option == "SPOT",
                    price_per_hour: host.price_per_hour,
                    share: host.share,
                    started_at: s,
                    stopped_at: now,
                });
                Some(host)
            }
            _ => None,
        };
        job.d.attempts.push(AttemptDetail {
            container: Some(AttemptContainerDetail {
                container_instance_arn: job.d.internal.container_instance.clone(),
                task_arn: task,
                exit_code,
                reason: reason.clone(),
                log_stream_name: stream,
            }),
            started_at: started,
            stopped_at: Some(now),
            status_reason: Some(attempt_reason.clone()),
            cost,
        });
        if let Some(c) = job.d.container.as_mut() {
            c.exit_code = exit_code;
            c.reason = reason.clone();
        }
        job.kill_at = None;
        if interrupted {
            let n = job.d.internal.interruptions.unwrap_or(0) + 1;
            job.d.internal.interruptions = Some(n);
            if n >= spot_limit {
                job.d.internal.avoid_spot = Some(true);
            }
        }
        // Interrupted attempts are on the record but not on the user's bill.
        let spent = job.d.attempts.len() - job.d.internal.interruptions.unwrap_or(0) as usize;
        let outcome = if stopped_by_user || timed_out {
            Outcome::Failed
        } else if interrupted {
            Outcome::Retry
        } else {
            retry::decide(
                job.d.retry_strategy.as_ref(),
                spent,
                AttemptEnd {
                    exit_code,
                    reason: reason.as_deref(),
                    status_reason: &attempt_reason,
                },
            )
        };
        tracing::info!(job_id, attempt, ?exit_code, ?outcome, "attempt ended");
        match outcome {
            Outcome::Succeeded => {
                job.d.status_reason = Some(attempt_reason);
                self.finish(job_id, JobStatus::Succeeded, now);
            }
            Outcome::Retry => {
                job.d.status_reason = Some(attempt_reason);
                self.table.transition(job_id, JobStatus::Runnable, now);
            }
            Outcome::Failed => {
                let why = if stopped_by_user {
                    job.d.status_reason.clone().unwrap_or(attempt_reason)
                } else {
                    attempt_reason
                };
                self.fail(job_id, why, now);
            }
        }
        self.table.mark_dirty(job_id);
    }
}
