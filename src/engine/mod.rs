//! The engine: the control loop that moves jobs through AWS Batch's lifecycle.
//!
//! One actor owns every unfinished job in memory ([`table::JobTable`]) and is the only writer of
//! their state after submission; the control plane reaches it through [`EngineHandle`], the
//! runtimes through their [`RuntimeEvent`] channel. Each round
//! 1. applies what arrived: new jobs ([`submit`]), commands ([`commands`]), runtime events
//!    ([`events`]), with what a finished job releases or fails ([`cascade`]);
//! 2. fires timers: attempt timeouts and SIGKILL after the grace period ([`timers`]);
//! 3. runs one scheduling pass if anything could have changed a placement ([`pass`]): build the
//!    scheduler's snapshot, plan, turn the plan into decisions, apply them in one place;
//! 4. writes every changed job, then answers commands, launches attempts and sends signals
//!    ([`flush`]).
//!
//! Step 4's order is what makes restarts safe: an ECS attempt is never launched, nor a reply
//! sent, for a state the store does not hold (host-runtime launches overlap their write; see
//! `flush`). Rounds are idempotent over what they observe: a stale or duplicate runtime event
//! (an attempt that is no longer current) is ignored. At start, [`load`] rebuilds the table
//! from the store and hands the runtime the attempts it should still be running.

mod cascade;
mod commands;
mod config;
mod events;
mod flush;
mod handle;
mod job;
pub mod job_events;
mod launch;
pub mod limits;
mod load;
mod pass;
pub mod retry;
mod submit;
mod table;
mod timers;

#[cfg(test)]
mod tests;

pub use crate::batch::dispatch::{StopResult, TagFn, TagsReply};
pub use config::{EngineConfig, host_memory_mib};
pub use handle::{EngineHandle, Inbox, channel};
pub use job::job_need;

use crate::batch::Batch;
use crate::compute::{Runtime, RuntimeEvent};
use crate::error::BatchResult;
use crate::util::time::Clock;
use config::{IDLE_PASS_INTERVAL_MS, MAX_ROUND_INPUTS, PERIODIC_PASS_MS, TICK};
use flush::{Effects, Writer};
use handle::{Heads, Input};
use pass::PassState;
use std::sync::Arc;
use std::time::Duration;
use table::JobTable;
use tokio::sync::{mpsc, watch};

pub struct Engine {
    batch: Arc<Batch>,
    runtime: Arc<dyn Runtime>,
    cfg: EngineConfig,
    clock: Arc<dyn Clock>,
    inputs: mpsc::Receiver<Input>,
    events: mpsc::Receiver<RuntimeEvent>,
    table: JobTable,
    /// What the round decided to do once its writes land.
    effects: Effects,
    writer: Writer,
    pass: PassState,
    heads: Heads,
}

impl Engine {
    /// Loads the unfinished jobs, reconciles attempts that were running with the runtime, and
    /// spawns the loop, which ends when `shutdown` turns true.
    pub async fn start(
        inbox: Inbox,
        batch: Arc<Batch>,
        runtime: Arc<dyn Runtime>,
        events: mpsc::Receiver<RuntimeEvent>,
        cfg: EngineConfig,
        clock: Arc<dyn Clock>,
        mut shutdown: watch::Receiver<bool>,
    ) -> BatchResult<tokio::task::JoinHandle<()>> {
        let mut engine = Engine {
            batch,
            runtime,
            cfg,
            clock,
            inputs: inbox.rx,
            events,
            table: JobTable::default(),
            effects: Effects::default(),
            writer: Writer::default(),
            pass: PassState::default(),
            heads: inbox.heads,
        };
        if engine.cfg.job_events {
            engine.table.record_transitions();
        }
        let expected = engine.load().await?;
        tracing::info!(
            active_jobs = engine.table.len(),
            running = expected.len(),
            "engine loaded"
        );
        // Write what loading decided (e.g. dependents of jobs that failed while we were down).
        engine.flush_all().await;
        // Always, even with nothing expected: the runtime also clears what nobody expects.
        if let Err(e) = engine.runtime.recover(expected).await {
            tracing::error!(error = %e, "runtime recovery failed");
        }
        Ok(tokio::spawn(async move {
            loop {
                let wake = engine.next_wake();
                tokio::select! {
                    biased;
                    _ = shutdown.changed() => break,
                    Some(i) = engine.inputs.recv() => engine.apply_input(i).await,
                    Some(e) = engine.events.recv() => engine.apply_event(e),
                    // A deferred pass is due within IDLE_PASS_INTERVAL_MS even if nothing else
                    // happens.
                    _ = tokio::time::sleep(wake) => {}
                }
                engine.round().await;
            }
            engine.flush_all().await;
            tracing::info!("engine stopped");
        }))
    }

    #[tracing::instrument(name = "reconcile", level = "debug", skip_all)]
    async fn round(&mut self) {
        for _ in 0..MAX_ROUND_INPUTS {
            if let Ok(i) = self.inputs.try_recv() {
                self.apply_input(i).await;
            } else if let Ok(e) = self.events.try_recv() {
                self.apply_event(e);
            } else {
                break;
            }
        }
        let now = self.clock.now_ms();
        self.timers(now);
        if self.table.take_wants_pass() {
            self.pass.replan = true;
        }
        if self.table.runnable().len() != 0 && now - self.pass.last_pass >= PERIODIC_PASS_MS {
            self.pass.replan = true;
        }
        if self.pass.replan {
            let cat = self.batch.catalog().await;
            if self.has_room(&cat) || now - self.pass.last_pass >= IDLE_PASS_INTERVAL_MS {
                self.pass.replan = false;
                self.pass.last_pass = now;
                self.schedule(&cat, now);
                // What the pass itself released (dependents of jobs it failed) is due at once.
                if self.table.take_wants_pass() {
                    self.pass.replan = true;
                }
            }
        }
        self.flush().await;
    }

    async fn apply_input(&mut self, input: Input) {
        let now = self.clock.now_ms();
        match input {
            Input::Submitted(jobs) => {
                // `register` reads the store only for dependencies the engine does not hold.
                if let Err(e) = self.register(jobs, now).await {
                    tracing::error!(error = %e, "registering submitted jobs failed; they load at the next start");
                }
            }
            Input::Stop {
                job_id,
                reason,
                terminate,
                reply,
            } => {
                let r = self.stop(&job_id, &reason, terminate, now);
                self.effects.reply_stop(reply, Ok(r));
            }
            Input::Tags { job_id, f, reply } => {
                let r = self.tags(&job_id, f);
                self.effects.reply_tags(reply, r);
            }
            Input::QueueSnapshot { queue_arn, reply } => {
                let cat = self.batch.catalog().await;
                // Dropped only if the caller gave up waiting.
                let _ = reply.send(self.queue_snapshot(&cat, &queue_arn, now));
            }
            Input::Load { ids, reply } => {
                let r = self.load_by_id(ids, now).await;
                let _ = reply.send(r);
            }
            Input::Wake => self.pass.replan = true,
        }
    }

    /// When the loop must run a round even if nothing arrives: a deferred pass, rows waiting to
    /// be written, or the tick.
    fn next_wake(&self) -> Duration {
        let pass = if self.pass.replan {
            Duration::from_millis(IDLE_PASS_INTERVAL_MS as u64)
        } else {
            TICK
        };
        self.writer.next_write().map_or(pass, |w| pass.min(w))
    }
}
