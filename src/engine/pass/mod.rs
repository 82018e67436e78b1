//! One scheduling pass, as pure steps applied in one place:
//! 1. [`snapshot`]: the catalog and the table as the scheduler sees them (environments with
//!    free capacity, queues, a window of each share's waiting jobs, Spot shadow queues);
//! 2. [`fair_share`]: each share's decayed usage;
//! 3. `scheduler::plan`: placements and reasons (pure, in `crate::scheduler`);
//! 4. [`decide`]: the plan turned into starts, reasons and AWS demand;
//! 5. [`Engine::schedule`] applies them, then fails jobs past their queue's
//!    `jobStateTimeLimitActions`.
//!
//! [`front`] answers GetJobQueueSnapshot from the same pieces: the share usage of step 2 and
//! the scheduler's own turn order.

mod decide;
mod fair_share;
mod front;
mod snapshot;

use super::Engine;
use super::config::REASONS_EVERY_MS;
use super::limits;
use super::table::JobTable;
use crate::compute::fleet::Demand;
use crate::model::Catalog;
use crate::scheduler;
use decide::{PassOutcome, Seen};
pub(super) use fair_share::ShareHistory;

/// What the engine remembers between passes.
#[derive(Default)]
pub(super) struct PassState {
    /// Something changed that a pass could act on.
    pub replan: bool,
    /// When the last scheduling pass ran (epoch ms).
    pub last_pass: i64,
    /// When the last pass that gave reasons ran (epoch ms).
    pub last_reasons: i64,
    pub shares: ShareHistory,
}

impl Engine {
    pub(super) fn has_room(&self, cat: &Catalog) -> bool {
        snapshot::has_room(cat, &self.table, &self.cfg)
    }

    pub(super) fn schedule(&mut self, cat: &Catalog, now: i64) {
        let with_reasons = now - self.pass.last_reasons >= REASONS_EVERY_MS;
        if with_reasons {
            self.pass.last_reasons = now;
        }
        let outcome = {
            let mut layout = snapshot::layout(cat, &self.table, &self.cfg);
            let size = snapshot::window_size(&layout, with_reasons);
            let mut window = snapshot::window(&self.table, &mut layout, size);
            let share_usage = self
                .pass
                .shares
                .usage(cat, &layout.queue_idx, &self.table, now);
            // Moved, not copied: `decide` reads them back from the snapshot.
            let snapshot = scheduler::Snapshot {
                consumables: std::mem::take(&mut layout.consumables),
                envs: std::mem::take(&mut layout.envs),
                queues: std::mem::take(&mut layout.queues),
                jobs: std::mem::take(&mut window.views),
                share_usage,
            };
            let plan = if with_reasons {
                scheduler::plan(&snapshot)
            } else {
                scheduler::plan_placements(&snapshot)
            };
            decide::decide(Seen {
                plan: &plan,
                snapshot: &snapshot,
                window: &window,
                layout: &mut layout,
                table: &self.table,
                with_reasons,
                aws: self.cfg.fleet.is_some(),
            })
        };
        self.apply_pass(outcome, now);
        // The limits match on the reasons, which are refreshed only on these passes, and are at
        // least 600 s long: checking every REASONS_EVERY_MS instead of every pass costs a job at
        // most half a second of its limit, and spares a walk of the whole RUNNABLE backlog of
        // such queues at every pass.
        let due = if with_reasons {
            expired(cat, &self.table, now)
        } else {
            Vec::new()
        };
        for (id, reason) in due {
            tracing::info!(job_id = %id, %reason, "job state time limit reached");
            self.queue_blocked(&id);
            if let Some(j) = self.table.get_mut(&id) {
                j.d.is_cancelled = Some(true);
            }
            self.fail(&id, reason, now);
        }
        snapshot::publish_capacity(cat, &self.table, &self.cfg);
    }

    fn apply_pass(&mut self, outcome: PassOutcome, now: i64) {
        let PassOutcome {
            starts,
            reasons,
            heads,
            demand,
            orphans,
            again,
        } = outcome;
        for (id, text) in reasons {
            if let Some(job) = self.table.get_mut(&id) {
                job.d.status_reason = Some(text);
                self.table.mark_dirty(&id);
            }
        }
        if let Some(h) = heads
            && let Ok(mut shared) = self.heads.write()
        {
            *shared = h;
        }
        self.pass.replan |= again;
        for start in starts {
            self.start_attempt(start, now);
        }
        if let (Some(fleet), Some(by_env)) = (&self.cfg.fleet, demand) {
            fleet.publish(Demand {
                by_env,
                used_by_instance: self.table.on_instance().clone(),
            });
        }
        for id in orphans {
            self.fail(
                &id,
                "MISCONFIGURATION:JOB_QUEUE_DELETED - the job queue of this job was deleted".into(),
                now,
            );
        }
    }
}

/// RUNNABLE jobs waiting longer than their queue's `jobStateTimeLimitActions` allow for their
/// reason: (job ID, the reason they fail with).
fn expired(cat: &Catalog, table: &JobTable, now: i64) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (queue, members) in &table.runnable().by_queue {
        let Some(actions) = cat
            .queues
            .values()
            .find(|q| &q.job_queue_arn == queue)
            .and_then(|q| q.job_state_time_limit_actions.as_deref())
        else {
            continue;
        };
        for id in members.keys().map(|k| &k.id) {
            let Some(job) = table.get(id) else {
                continue;
            };
            let since = job.d.internal.runnable_since.unwrap_or(job.d.created_at);
            if let Some(a) = limits::due(actions, job.d.status_reason.as_deref(), since, now) {
                out.push((
                    id.clone(),
                    format!(
                        "{}: RUNNABLE for more than {} s (jobStateTimeLimitActions)",
                        a.reason, a.max_time_seconds
                    ),
                ));
            }
        }
    }
    out
}
