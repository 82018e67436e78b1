//! The job-event log: every status change a round makes, with the job's detail as the round
//! left it, appended in the same transaction as the round's rows (`flush`). What delivers the
//! events (the SSE stream, webhooks, EventBridge) reads the log, so an event exists exactly
//! when the state it reports is stored, and a restart loses none.

use super::Engine;
use crate::model::{JobDetail, JobStatus};
use crate::store::NewEvent;

/// EventBridge's `detail-type` of a job's status change.
pub const STATE_CHANGE: &str = "Batch Job State Change";
/// EventBridge's `detail-type` of a RUNNABLE job blocking its queue past its time limit.
pub const QUEUE_BLOCKED: &str = "Batch Job Queue Blocked";

impl Engine {
    /// Turns the round's recorded status changes into events for the next write. A job that
    /// changed twice in one round gets both events, each with the detail the round ended on
    /// and its own status.
    pub(super) fn collect_events(&mut self) {
        let changes = self.table.take_transitions();
        if changes.is_empty() {
            return;
        }
        let at = self.clock.now_ms();
        self.writer.events.reserve(changes.len());
        for (id, status) in changes {
            let Some(job) = self.table.held(&id) else {
                continue;
            };
            if let Some(doc) = detail_as(&job.d, status) {
                self.writer.events.push(NewEvent {
                    at,
                    kind: STATE_CHANGE.into(),
                    job_id: id,
                    doc,
                });
            }
        }
    }

    /// A RUNNABLE job has blocked its queue for longer than the queue's time limit allows.
    pub(super) fn queue_blocked(&mut self, id: &str) {
        if !self.table.records_transitions() {
            return;
        }
        let Some(job) = self.table.get(id) else {
            return;
        };
        if let Some(doc) = detail_as(&job.d, job.d.status) {
            self.writer.events.push(NewEvent {
                at: self.clock.now_ms(),
                kind: QUEUE_BLOCKED.into(),
                job_id: id.to_string(),
                doc,
            });
        }
    }
}

/// The stored document of `d` with `status`.
fn detail_as(d: &JobDetail, status: JobStatus) -> Option<String> {
    let encoded = if d.status == status {
        serde_json::to_string(d)
    } else {
        let mut d = d.clone();
        d.status = status;
        serde_json::to_string(&d)
    };
    encoded
        .inspect_err(|e| tracing::error!(job_id = %d.job_id, error = %e, "cannot encode job event"))
        .ok()
}
