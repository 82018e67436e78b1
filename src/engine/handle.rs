//! How the rest of the server talks to the engine: [`EngineHandle`], a cheap clone over the
//! engine's bounded input channel, implementing the control plane's [`Dispatch`] port.

use crate::batch::dispatch::{Dispatch, NewJob, QueueSnapshot, StopResult, TagFn, TagsReply};
use crate::error::{BatchError, BatchResult};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use tokio::sync::{mpsc, oneshot};

/// Inputs waiting for the engine, bounded so that a burst of API calls waits instead of
/// growing memory.
const INBOX_CAPACITY: usize = 4096;

pub(super) enum Input {
    /// Jobs the API has just committed, with their array parent (id, index) for children.
    Submitted(Vec<NewJob>),
    Stop {
        job_id: String,
        reason: String,
        terminate: bool,
        reply: oneshot::Sender<BatchResult<StopResult>>,
    },
    Tags {
        job_id: String,
        f: TagFn,
        reply: oneshot::Sender<TagsReply>,
    },
    /// GetJobQueueSnapshot: read-only, answered as soon as the engine takes it.
    QueueSnapshot {
        queue_arn: String,
        reply: oneshot::Sender<QueueSnapshot>,
    },
    /// Jobs another replica committed and queued for this one: read from the store and
    /// registered unless already held. Answered once registered.
    Load {
        ids: Vec<String>,
        reply: oneshot::Sender<BatchResult<()>>,
    },
    /// Queues or compute environments changed (or a test moved its clock): replan.
    Wake,
}

/// Why each queue's head waits, per queue ARN, as the last reason pass found it.
pub(super) type Heads = Arc<RwLock<HashMap<String, String>>>;

#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Input>,
    heads: Heads,
}

/// The engine's end of [`channel`]: what [`super::Engine::start`] consumes.
pub struct Inbox {
    pub(super) rx: mpsc::Receiver<Input>,
    pub(super) heads: Heads,
}

/// The handle and the inbox of an engine not started yet: the handle goes to the control plane
/// when it is built, the inbox to [`super::Engine::start`].
pub fn channel() -> (EngineHandle, Inbox) {
    let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
    let heads = Heads::default();
    (
        EngineHandle {
            tx,
            heads: heads.clone(),
        },
        Inbox { rx, heads },
    )
}

fn gone() -> BatchError {
    BatchError::Unavailable("the engine is shutting down".into())
}

impl EngineHandle {
    /// Registers jobs another replica committed, by ID (see `Input::Load`). Reading them in
    /// the engine's own round, rather than before handing them over, means a job the engine
    /// has already finished is never taken for a new one from a stale read.
    pub async fn load_submitted(&self, ids: Vec<String>) -> BatchResult<()> {
        self.ask(|reply| Input::Load { ids, reply }).await?
    }

    async fn ask<T>(&self, input: impl FnOnce(oneshot::Sender<T>) -> Input) -> BatchResult<T> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(input(reply)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }
}

#[async_trait::async_trait]
impl Dispatch for EngineHandle {
    async fn submitted(&self, jobs: Vec<NewJob>) {
        // Dropped only at shutdown; the jobs are durable and are reloaded at the next start.
        let _ = self.tx.send(Input::Submitted(jobs)).await;
    }

    async fn stop(&self, job_id: &str, reason: &str, terminate: bool) -> BatchResult<StopResult> {
        self.ask(|reply| Input::Stop {
            job_id: job_id.to_string(),
            reason: reason.to_string(),
            terminate,
            reply,
        })
        .await?
    }

    async fn tags(&self, job_id: &str, f: TagFn) -> BatchResult<TagsReply> {
        self.ask(|reply| Input::Tags {
            job_id: job_id.to_string(),
            f,
            reply,
        })
        .await
    }

    async fn queue_snapshot(&self, queue_arn: &str) -> BatchResult<QueueSnapshot> {
        self.ask(|reply| Input::QueueSnapshot {
            queue_arn: queue_arn.to_string(),
            reply,
        })
        .await
    }

    fn head_reason(&self, queue_arn: &str) -> Option<String> {
        self.heads.read().ok()?.get(queue_arn).cloned()
    }

    fn wake(&self) {
        let _ = self.tx.try_send(Input::Wake);
    }
}
