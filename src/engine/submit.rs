//! New jobs into the table: dependencies resolved against the table and the store, array
//! children wired to their parent.

use super::Engine;
use super::job::{Job, plain_dependencies};
use crate::batch::dispatch::NewJob;
use crate::error::BatchResult;
use crate::model::JobStatus;
use std::collections::{HashMap, HashSet};

impl Engine {
    /// Adds jobs to the table and resolves their dependencies: a job whose dependencies all
    /// SUCCEEDED becomes RUNNABLE, one with a failed or unknown dependency FAILS, the others
    /// wait as dependents.
    pub(super) async fn register(&mut self, jobs: Vec<NewJob>, now: i64) -> BatchResult<()> {
        // Plain dependencies of array parents also hold back each child.
        let parent_deps: HashMap<String, Vec<String>> = jobs
            .iter()
            .filter(|(d, parent)| parent.is_none() && super::job::array_size(d).is_some())
            .map(|(d, _)| {
                let deps = plain_dependencies(d).map(str::to_string).collect();
                (d.job_id.clone(), deps)
            })
            .collect();
        let mut ids = Vec::with_capacity(jobs.len());
        for (d, parent) in jobs {
            let id = d.job_id.clone();
            if self.table.insert(Job::new(d, parent)) {
                ids.push(id);
            }
        }
        // Each new job's dependencies, its array parent's included.
        let mut wanted: HashMap<String, Vec<String>> = HashMap::new();
        for id in &ids {
            let Some(job) = self.table.get(id) else {
                continue;
            };
            let mut deps: Vec<String> = plain_dependencies(&job.d).map(str::to_string).collect();
            if let Some((p, _)) = &job.parent {
                if let Some(pd) = parent_deps.get(p) {
                    deps.extend(pd.iter().cloned());
                } else if let Some(pj) = self.table.get(p) {
                    deps.extend(plain_dependencies(&pj.d).map(str::to_string));
                }
            }
            deps.sort();
            deps.dedup();
            wanted.insert(id.clone(), deps);
        }
        // Dependencies the engine does not hold are finished (or unknown): ask the store once.
        let unknown: Vec<String> = wanted
            .values()
            .flatten()
            .filter(|d| self.table.held(d).is_none())
            .cloned()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let mut stored: HashMap<String, JobStatus> = HashMap::new();
        for chunk in unknown.chunks(500) {
            for r in self.batch.store().get_jobs(chunk).await? {
                if let Ok(s) = r.status.parse() {
                    stored.insert(r.job_id, s);
                }
            }
        }
        for (id, deps) in wanted {
            let mut unmet = 0;
            let mut failed: Option<String> = None;
            for dep in deps {
                let status = self
                    .table
                    .held(&dep)
                    .map(|j| j.d.status)
                    .or_else(|| stored.get(&dep).copied());
                match status {
                    Some(JobStatus::Succeeded) => {}
                    Some(JobStatus::Failed) | None => {
                        failed.get_or_insert(dep);
                    }
                    Some(_) => {
                        unmet += 1;
                        self.table.add_dependent(dep, id.clone());
                    }
                }
            }
            if let Some(dep) = failed {
                self.fail(
                    &id,
                    format!("Dependent Job failed: {dep} did not succeed"),
                    now,
                );
                continue;
            }
            let records = self.table.records_transitions();
            if let Some(job) = self.table.get_mut(&id) {
                job.unmet = unmet;
                // The job-event log gets one event for the status SubmitJob stored (RUNNABLE,
                // or PENDING for a job that waits), as AWS Batch reports a job's move out of
                // SUBMITTED. The mark is stored with the event, so a restart announces only
                // what was not.
                let announce = records
                    && matches!(job.d.status, JobStatus::Pending | JobStatus::Runnable)
                    && job.d.internal.announced.is_none();
                if announce {
                    job.d.internal.announced = Some(true);
                }
                if unmet == 0 && job.d.status == JobStatus::Pending && !job.is_parent() {
                    // Its move to RUNNABLE is the event.
                    self.make_runnable(&id, now);
                } else if announce {
                    let status = job.d.status;
                    self.table.mark_dirty(&id);
                    self.table.announce(&id, status);
                }
            }
        }
        // Children written after their parent was stopped, or failed through a dependency,
        // share its fate (they are written after SubmitJob returns, or again at a start).
        for id in &ids {
            let Some((p, _)) = self.table.get(id).and_then(|j| j.parent.clone()) else {
                continue;
            };
            let Some(pj) = self.table.held(&p) else {
                continue;
            };
            if pj.d.status == JobStatus::Failed {
                let reason =
                    pj.d.status_reason
                        .clone()
                        .unwrap_or_else(|| format!("array job {p} failed"));
                self.fail(id, reason, now);
            } else if !pj.d.status.is_final() && pj.stopped_by_user() {
                let reason = pj.d.status_reason.clone().unwrap_or_default();
                let terminate = pj.d.is_terminated == Some(true);
                self.stop(id, &reason, terminate, now);
            }
        }
        Ok(())
    }
}
