//! What moving a job to RUNNABLE or to a final state sets off: dependents released or failed,
//! an array parent's children failed with it, the parent rolled up when its last child ends.

use super::Engine;
use super::job::array_size;
use crate::model::JobStatus;

impl Engine {
    pub(super) fn make_runnable(&mut self, id: &str, now: i64) {
        if self.table.transition(id, JobStatus::Runnable, now)
            && let Some(job) = self.table.get_mut(id)
        {
            job.d.status_reason = None;
        }
    }

    pub(super) fn fail(&mut self, id: &str, reason: String, now: i64) {
        if let Some(job) = self.table.get_mut(id) {
            job.d.status_reason = Some(reason);
        }
        self.finish(id, JobStatus::Failed, now);
    }

    /// Moves a job to a final state and releases or fails what waits on it.
    pub(super) fn finish(&mut self, id: &str, status: JobStatus, now: i64) {
        let mut work = vec![(id.to_string(), status)];
        while let Some((id, status)) = work.pop() {
            if !self.table.transition(&id, status, now) {
                continue;
            }
            let Some(job) = self.table.held(&id) else {
                continue;
            };
            let failed = status == JobStatus::Failed;
            let reason = job.d.status_reason.clone();
            let cancelled = job.d.is_cancelled == Some(true);
            let parent = job.parent.clone();
            // An array parent that fails first fails its children (their dependency reason).
            if job.is_parent() && failed {
                for i in 0..array_size(&job.d).unwrap_or(0) {
                    let child = format!("{id}:{i}");
                    if let Some(c) = self.table.get_mut(&child)
                        && c.d.status.is_waiting()
                    {
                        c.d.status_reason = reason.clone();
                        if cancelled {
                            c.d.is_cancelled = Some(true);
                        }
                        work.push((child, JobStatus::Failed));
                    }
                }
            }
            for dep in self.table.take_dependents(&id) {
                let Some(d) = self.table.get_mut(&dep) else {
                    continue;
                };
                if failed {
                    d.d.status_reason = Some(format!("Dependent Job failed: {id} did not succeed"));
                    work.push((dep, JobStatus::Failed));
                } else {
                    d.unmet = d.unmet.saturating_sub(1);
                    if d.unmet == 0 && d.d.status == JobStatus::Pending && !d.is_parent() {
                        self.make_runnable(&dep, now);
                    }
                }
            }
            if let Some((p, _)) = parent
                && let Some(pj) = self.table.get_mut(&p)
            {
                pj.children_left -= 1;
                if failed {
                    pj.children_failed += 1;
                }
                if pj.children_left <= 0 {
                    let st = if pj.children_failed > 0 {
                        JobStatus::Failed
                    } else {
                        JobStatus::Succeeded
                    };
                    if st == JobStatus::Failed && pj.d.status_reason.is_none() {
                        pj.d.status_reason = Some(format!(
                            "{} of {} child jobs failed",
                            pj.children_failed,
                            array_size(&pj.d).unwrap_or(0)
                        ));
                    }
                    work.push((p, st));
                }
            }
        }
    }

    /// Finishes array parent `id` if none of its children is left.
    pub(super) fn maybe_finish_parent(&mut self, id: &str, now: i64) {
        let Some(p) = self.table.get(id) else {
            return;
        };
        if p.children_left > 0 {
            return;
        }
        let st = if p.children_failed > 0 || p.stopped_by_user() {
            JobStatus::Failed
        } else {
            JobStatus::Succeeded
        };
        self.finish(id, st, now);
    }
}
