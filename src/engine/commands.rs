//! CancelJob, TerminateJob and tag changes on jobs the engine holds.

use super::Engine;
use super::job::array_size;
use crate::batch::dispatch::{StopResult, TagFn, TagsReply};
use crate::compute::StopSignal;
use crate::error::BatchError;
use crate::model::validate;

impl Engine {
    /// Cancels (`terminate` false) or terminates a job: one that has not started fails at
    /// once; a started one is signalled when terminated and left alone when cancelled, as in
    /// AWS Batch. An array parent passes the stop to each child.
    pub(super) fn stop(
        &mut self,
        job_id: &str,
        reason: &str,
        terminate: bool,
        now: i64,
    ) -> StopResult {
        let grace = self.cfg.kill_grace.as_millis() as i64;
        let Some(job) = self.table.get_mut(job_id) else {
            return StopResult::NotActive;
        };
        tracing::info!(job_id, terminate, status = %job.d.status, "stop requested");
        if job.is_parent() {
            let size = array_size(&job.d).unwrap_or(0);
            // Marked first, so that the parent finishing through its children carries this reason.
            job.mark_stopped(terminate);
            job.d.status_reason = Some(reason.to_string());
            self.table.mark_dirty(job_id);
            for i in 0..size {
                let child = format!("{job_id}:{i}");
                if self.table.contains(&child) {
                    self.stop(&child, reason, terminate, now);
                }
            }
            self.maybe_finish_parent(job_id, now);
            return StopResult::Applied;
        }
        match job.d.status {
            s if s.is_waiting() => {
                job.mark_stopped(terminate);
                self.fail(job_id, reason.to_string(), now);
            }
            s if s.is_active() && terminate => {
                job.mark_stopped(true);
                job.d.status_reason = Some(reason.to_string());
                job.kill_at = Some(now + grace);
                let attempt = job.attempt_no();
                self.table.mark_dirty(job_id);
                self.effects.signal(job_id, attempt, StopSignal::Term);
            }
            // CancelJob does nothing to a job that has started, as in AWS Batch.
            _ => {}
        }
        StopResult::Applied
    }

    /// Applies `f` to the tags of a job the engine holds (a finished job not yet written
    /// included), or hands `f` back.
    pub(super) fn tags(&mut self, job_id: &str, f: TagFn) -> TagsReply {
        let Some(job) = self.table.held_mut(job_id) else {
            return TagsReply::NotActive(f);
        };
        let mut tags = job.d.tags.clone().unwrap_or_default();
        let applied = f
            .apply(&mut tags)
            .and_then(|()| validate::tags("tags", &tags).map_err(BatchError::from))
            .map(|()| {
                job.d.tags = Some(tags.clone());
                tags
            });
        if applied.is_ok() {
            self.table.mark_dirty(job_id);
        }
        TagsReply::Applied(applied)
    }
}
