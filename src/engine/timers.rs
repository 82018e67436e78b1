//! Time-driven signals: an attempt past its `timeout.attemptDurationSeconds` gets SIGTERM, and
//! SIGKILL follows once the grace period is over.

use super::Engine;
use crate::compute::StopSignal;
use crate::model::JobStatus;

impl Engine {
    pub(super) fn timers(&mut self, now: i64) {
        let mut kill = Vec::new();
        let mut term = Vec::new();
        for (id, job) in self.table.running() {
            if let Some(k) = job.kill_at {
                if k <= now {
                    kill.push(id.clone());
                }
                continue;
            }
            if job.d.status == JobStatus::Running
                && job.d.internal.timed_out.is_none()
                && let (Some(secs), Some(start)) = (
                    job.d
                        .timeout
                        .as_ref()
                        .and_then(|t| t.attempt_duration_seconds),
                    job.d.started_at,
                )
                && start + i64::from(secs) * 1000 <= now
            {
                term.push(id.clone());
            }
        }
        for id in kill {
            if let Some(job) = self.table.get_mut(&id) {
                job.kill_at = None;
                let attempt = job.attempt_no();
                self.effects.signal(&id, attempt, StopSignal::Kill);
            }
        }
        let grace = self.cfg.kill_grace.as_millis() as i64;
        for id in term {
            if let Some(job) = self.table.get_mut(&id) {
                tracing::info!(job_id = %id, "attempt timed out");
                job.d.internal.timed_out = Some(true);
                job.kill_at = Some(now + grace);
                let attempt = job.attempt_no();
                self.effects.signal(&id, attempt, StopSignal::Term);
                self.table.mark_dirty(&id);
            }
        }
    }
}
