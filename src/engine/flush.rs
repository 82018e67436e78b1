//! The end of a round: write what changed, then act on it.
//!
//! **The ordering rule.** A command's answer and an ECS launch wait until the rows they depend
//! on are durable, so a crash never leaves a caller told "done", or an ECS task running, for a
//! state the store does not hold. Host-runtime launches (Docker, processes) start while their
//! STARTING row is being written: after a crash in that window the runtime's `recover` kills
//! the run nobody expects and the job runs again (at-least-once, the same as a lost relaxed
//! write). The engine's own transitions are written relaxed and coalesced for
//! `WRITE_COALESCE`; the engine does not wait for that write, but waits for it before the
//! next one, so writes land in order.

use super::Engine;
use super::config::{WRITE_COALESCE, WRITE_RETRY_MAX_BACKOFF};
use crate::batch::dispatch::{StopResult, TagsReply};
use crate::batch::job_row;
use crate::compute::{AttemptSpec, StopSignal, Target};
use crate::error::{BatchError, BatchResult};
use crate::store::{Appends, AttemptUsage, JobRow, NewEvent, Store, StoreResult};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// A command answered after the round's write.
enum Reply {
    Stop(
        oneshot::Sender<BatchResult<StopResult>>,
        BatchResult<StopResult>,
    ),
    Tags(oneshot::Sender<TagsReply>, TagsReply),
}

/// What a round decided to do once its writes land.
#[derive(Default)]
pub(super) struct Effects {
    replies: Vec<Reply>,
    launches: Vec<AttemptSpec>,
    signals: Vec<(String, u32, StopSignal)>,
}

impl Effects {
    pub fn reply_stop(
        &mut self,
        tx: oneshot::Sender<BatchResult<StopResult>>,
        v: BatchResult<StopResult>,
    ) {
        self.replies.push(Reply::Stop(tx, v));
    }

    pub fn reply_tags(&mut self, tx: oneshot::Sender<TagsReply>, v: TagsReply) {
        self.replies.push(Reply::Tags(tx, v));
    }

    pub fn launch(&mut self, spec: AttemptSpec) {
        self.launches.push(spec);
    }

    pub fn signal(&mut self, job_id: &str, attempt: u32, signal: StopSignal) {
        self.signals.push((job_id.to_string(), attempt, signal));
    }
}

/// A relaxed write in flight: its rows, for a retry, and the jobs that finished before it, kept
/// in the table's finished set until it lands (a dependent registered meanwhile must not read
/// their old status from the store).
struct PendingWrite {
    rows: Vec<JobRow>,
    appends: Appends,
    finished: Vec<String>,
    /// Attempts whose end this write stores (`Runtime::end_stored` once it lands).
    ended: Vec<(String, u32)>,
    task: tokio::task::JoinHandle<StoreResult<()>>,
}

/// The state of the engine's writes between rounds.
#[derive(Default)]
pub(super) struct Writer {
    /// The relaxed write the engine did not wait for (at most one in flight).
    pending: Option<PendingWrite>,
    /// Since when the table has rows waiting to be written.
    dirty_since: Option<Instant>,
    /// Attempts reported ended since the last write.
    ended: Vec<(String, u32)>,
    /// Job events to append with the next write.
    pub events: Vec<NewEvent>,
    /// Ended attempts' instance usage (cost) to store with the next write.
    pub usage: Vec<AttemptUsage>,
}

impl Writer {
    pub fn ended(&mut self, job_id: String, attempt: u32) {
        self.ended.push((job_id, attempt));
    }

    /// How long until rows waiting to be written are due, if any wait.
    pub fn next_write(&self) -> Option<Duration> {
        self.dirty_since
            .map(|t| (t + WRITE_COALESCE).saturating_duration_since(Instant::now()))
    }
}

impl Engine {
    /// Waits for the write in flight, retrying it until it lands.
    async fn settle(&mut self) {
        let Some(p) = self.writer.pending.take() else {
            return;
        };
        match p.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) if !e.is_retryable() => {
                tracing::error!(error = %e, rows = p.rows.len(), "job write failed permanently");
            }
            outcome => {
                if let Ok(Err(e)) = &outcome
                    && !e.is_storage_fault()
                {
                    tracing::warn!(error = %e, rows = p.rows.len(), "job write failed; retrying");
                }
                write_until_done(self.batch.store().clone(), p.rows, p.appends, false).await;
            }
        }
        for (job, attempt) in &p.ended {
            self.runtime.end_stored(job, *attempt);
        }
        for id in p.finished {
            // Changed again since (tags): it goes with the next write, from the finished set.
            if !self.table.is_dirty(&id) {
                self.table.forget_finished(&id);
            }
        }
    }

    /// Writes everything now and waits for it (start and shutdown).
    pub(super) async fn flush_all(&mut self) {
        self.flush_with(true).await;
        self.settle().await;
    }

    pub(super) async fn flush(&mut self) {
        self.flush_with(false).await;
    }

    /// Writes the round's changes (now if `urgent`, a command waits or an ECS attempt is to
    /// start; else once they are `WRITE_COALESCE` old), then answers, launches and signals.
    async fn flush_with(&mut self, urgent: bool) {
        self.collect_events();
        // Before any job row: a NON_REPLENISHABLE consumption is durable before the end of the
        // attempt that consumed it, so a crash can count it twice but never lose it.
        self.settle_consumables().await;
        let (early, late): (Vec<AttemptSpec>, Vec<AttemptSpec>) = self
            .effects
            .launches
            .drain(..)
            .partition(|spec| matches!(spec.target, Target::Local));
        self.launch(early);
        let durable = !self.effects.replies.is_empty();
        let urgent = urgent || durable || !late.is_empty();
        let due = self.has_unwritten()
            && (urgent
                || self
                    .writer
                    .dirty_since
                    .get_or_insert_with(Instant::now)
                    .elapsed()
                    >= WRITE_COALESCE);
        if urgent || due {
            // Writes land in order, and answers follow them: the one in flight first.
            self.settle().await;
        }
        if !self.has_unwritten() {
            self.writer.dirty_since = None;
            // Ends that changed nothing (stale attempts) need no write.
            for (job, attempt) in std::mem::take(&mut self.writer.ended) {
                self.runtime.end_stored(&job, attempt);
            }
        } else if due {
            let ended = std::mem::take(&mut self.writer.ended);
            self.writer.dirty_since = None;
            let rows = self.dirty_rows();
            let appends = Appends {
                events: std::mem::take(&mut self.writer.events),
                usage: std::mem::take(&mut self.writer.usage),
            };
            // Transitions the engine made on its own are committed without waiting for the disk:
            // a process crash keeps them (and a restart re-derives what a power loss takes).
            // What answers a caller (CancelJob, TerminateJob, tags) waits for the flush, and so
            // does an ECS launch; otherwise the engine goes on with the next round while the
            // write lands, and waits for it before the next one.
            if urgent {
                write_until_done(self.batch.store().clone(), rows, appends, durable).await;
                self.table.forget_all_finished();
                for (job, attempt) in ended {
                    self.runtime.end_stored(&job, attempt);
                }
            } else {
                let store = self.batch.store().clone();
                let (to_write, to_append) = (rows.clone(), appends.clone());
                self.writer.pending = Some(PendingWrite {
                    rows,
                    appends,
                    ended,
                    finished: self.table.finished_ids(),
                    task: tokio::spawn(async move {
                        store.write_jobs_with(to_write, to_append, false).await
                    }),
                });
            }
        }
        for r in self.effects.replies.drain(..) {
            match r {
                Reply::Stop(tx, v) => {
                    let _ = tx.send(v);
                }
                Reply::Tags(tx, v) => {
                    let _ = tx.send(v);
                }
            }
        }
        self.launch(late);
        for (id, attempt, sig) in self.effects.signals.drain(..) {
            let rt = self.runtime.clone();
            tokio::spawn(async move {
                if let Err(e) = rt.stop(&id, attempt, sig).await {
                    tracing::warn!(job_id = %id, error = %e, "signal failed");
                }
            });
        }
    }

    /// Publishes what attempts hold of each consumable resource, then takes what ended
    /// attempts gave back off the NON_REPLENISHABLE resources' totals, retrying while the store
    /// says the error is passing.
    async fn settle_consumables(&mut self) {
        if let Some(usage) = self.table.take_consumable_use() {
            self.batch.publish_consumable_use(usage);
        }
        let mut released = self.table.take_released();
        let mut backoff = Duration::from_millis(50);
        while !released.is_empty() {
            match self.batch.consume(&mut released).await {
                Ok(()) => {}
                Err(BatchError::Unavailable(e)) => {
                    tracing::warn!(error = %e, "consumable resource write failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(e) => {
                    tracing::error!(error = %e, "consumable resource write failed permanently");
                    self.table.restore_released(released);
                    return;
                }
            }
        }
    }

    /// Rows or events wait to be written.
    fn has_unwritten(&self) -> bool {
        self.table.has_dirty() || !self.writer.events.is_empty()
    }

    /// The rows of every job changed since the last write.
    fn dirty_rows(&mut self) -> Vec<JobRow> {
        let ids = self.table.take_dirty();
        let mut rows = Vec::with_capacity(ids.len());
        for id in &ids {
            let Some(job) = self.table.held(id) else {
                continue;
            };
            match job_row(&job.d, job.parent.as_ref().map(|(p, i)| (p.as_str(), *i))) {
                Ok(r) => rows.push(r),
                Err(e) => tracing::error!(job_id = %id, error = %e, "cannot encode job"),
            }
        }
        rows
    }

    fn launch(&self, specs: Vec<AttemptSpec>) {
        for spec in specs {
            let rt = self.runtime.clone();
            tokio::spawn(async move {
                let (job_id, attempt) = (spec.job_id.clone(), spec.attempt);
                // A runtime reports a start that failed as `Exited` on its own channel.
                if let Err(e) = rt.start(spec).await {
                    tracing::warn!(%job_id, attempt, error = %e, "attempt did not start");
                }
            });
        }
    }
}

/// Writes `rows`, retrying with backoff while the store says the error is passing. A full or
/// failing disk is passing too: the engine waits here (its later rounds with it, so writes keep
/// their order) for as long as it takes the operator to free space, rather than drop a state
/// change and strand the job. Reads do not go through the engine and keep answering.
async fn write_until_done(
    store: Arc<dyn Store>,
    rows: Vec<JobRow>,
    appends: Appends,
    durable: bool,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let written = store
            .write_jobs_with(rows.clone(), appends.clone(), durable)
            .await;
        match written {
            Ok(()) => return,
            Err(e) if e.is_retryable() => {
                // Storage faults are logged by the store's `WriteHealth`, once a minute.
                if !e.is_storage_fault() {
                    tracing::warn!(error = %e, rows = rows.len(), "job write failed; retrying");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(WRITE_RETRY_MAX_BACKOFF);
            }
            Err(e) => {
                tracing::error!(error = %e, rows = rows.len(), "job write failed permanently");
                return;
            }
        }
    }
}
