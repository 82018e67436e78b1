//! Start-up: the unfinished jobs back from the store, array children that were never written,
//! and the attempts the runtime should still be running.

use super::Engine;
use super::job::array_size;
use crate::compute::{ExpectedAttempt, Target};
use crate::error::BatchResult;
use crate::model::arn::name_of_arn;
use crate::model::{JobDetail, JobStatus};
use std::collections::HashMap;

impl Engine {
    /// Jobs another replica committed: registered unless held (or final) already. Read here, in
    /// the engine's round: a job finished but not yet written is still held, so a stale row
    /// cannot bring it back.
    pub(super) async fn load_by_id(&mut self, ids: Vec<String>, now: i64) -> BatchResult<()> {
        // The replica that accepted these jobs checked them against a catalog at least this
        // new: without it a queue created there a moment ago could look deleted here.
        self.batch.refresh_catalog().await?;
        let rows = self.batch.store().get_jobs(&ids).await?;
        let mut jobs = Vec::with_capacity(rows.len());
        for r in rows {
            if self.table.held(&r.job_id).is_some() {
                continue;
            }
            match serde_json::from_str::<JobDetail>(&r.doc) {
                Ok(d) if !d.status.is_final() => {
                    jobs.push((d, r.array_parent.clone().zip(r.array_index)));
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(job_id = %r.job_id, error = %e, "stored job unreadable; left for the next start")
                }
            }
        }
        if jobs.is_empty() {
            return Ok(());
        }
        // Parents before children, as SubmitJob hands them over.
        jobs.sort_by_key(|(_, parent)| parent.is_some());
        self.register(jobs, now).await
    }

    /// Fills the table from the store and returns the attempts that were STARTING or RUNNING.
    pub(super) async fn load(&mut self) -> BatchResult<Vec<ExpectedAttempt>> {
        let store = self.batch.store().clone();
        let now = self.clock.now_ms();
        let rows = store
            .jobs_with_status(&JobStatus::UNFINISHED.map(JobStatus::as_str))
            .await?;
        let mut jobs = Vec::with_capacity(rows.len());
        for r in rows {
            let d: JobDetail = match serde_json::from_str(&r.doc) {
                Ok(d) => d,
                Err(e) => {
                    // One unreadable job must not keep every other from running: moved aside
                    // (whole, for an operator to repair), and the engine starts without it.
                    let reason = format!("stored job {} is unreadable: {e}", r.job_id);
                    store.quarantine_job(&r, &reason).await?;
                    continue;
                }
            };
            let parent = r.array_parent.clone().zip(r.array_index);
            jobs.push((d, parent));
        }
        // An array job whose children were not yet written when the server stopped gets them
        // now (SubmitJob returns once the parent alone is durable).
        let mut born = Vec::new();
        // Per array parent, its children by status, for the roll-up below.
        let mut child_counts: HashMap<String, Vec<(String, i64)>> = HashMap::new();
        for (d, parent) in &jobs {
            if parent.is_some() || array_size(d).unwrap_or(0) <= 0 {
                continue;
            }
            let counts = store.count_children_by_status(&d.job_id).await?;
            if !counts.is_empty() {
                child_counts.insert(d.job_id.clone(), counts);
            } else {
                let deps_unmet = super::job::plain_dependencies(d).next().is_some();
                let (rows, details) = self.batch.array_children(d, deps_unmet)?;
                store.upsert_jobs(rows).await?;
                tracing::info!(job_id = %d.job_id, children = details.len(), "array children written at start");
                born.extend(details);
            }
        }
        jobs.extend(born);
        let cat = self.batch.catalog().await;
        let expected = jobs
            .iter()
            .filter(|(d, _)| d.status.is_active())
            .map(|(d, _)| {
                let target = match (
                    &d.internal.container_instance,
                    &d.internal.compute_environment,
                ) {
                    (Some(ci), Some(env)) => Target::Ecs {
                        env: env.clone(),
                        cluster: cat
                            .compute_environments
                            .get(env)
                            .and_then(|ce| ce.ecs_cluster_arn.as_deref())
                            .map(|a| name_of_arn(a).to_string())
                            .unwrap_or_default(),
                        container_instance_arn: ci.clone(),
                    },
                    _ => Target::Local,
                };
                ExpectedAttempt {
                    job_id: d.job_id.clone(),
                    attempt: d.attempts.len() as u32 + 1,
                    task_id: d.internal.task_id.clone().unwrap_or_default(),
                    target,
                }
            })
            .collect();
        let parents: Vec<String> = jobs
            .iter()
            .filter(|(d, parent)| parent.is_none() && array_size(d).is_some())
            .map(|(d, _)| d.job_id.clone())
            .collect();
        self.register(jobs, now).await?;
        for p in parents {
            let counts = match child_counts.remove(&p) {
                Some(c) => c,
                None => store.count_children_by_status(&p).await?,
            };
            if let Some(job) = self.table.get_mut(&p) {
                let count = |keep: &dyn Fn(JobStatus) -> bool| -> i64 {
                    counts
                        .iter()
                        .filter(|(s, _)| s.parse().is_ok_and(&keep))
                        .map(|(_, n)| n)
                        .sum()
                };
                job.children_left = count(&|s| !s.is_final());
                job.children_failed = count(&|s| s == JobStatus::Failed);
            }
            self.maybe_finish_parent(&p, now);
        }
        Ok(expected)
    }
}
