//! Several servers on one PostgreSQL database: one leader runs the engine and the compute
//! drivers, every replica serves the whole API.
//!
//! - **Leadership** is the lease row of `store::Replication` (why a row and not an advisory
//!   lock: see there). A follower tries to take it every second; the leader renews it every
//!   quarter of its length. The leader's [`Fence`] is granted up to the start of its last
//!   successful renewal plus the lease length, less a margin for clock-rate drift, so it stops
//!   acting before the database lets anyone else take over. A leader that finds its lease gone,
//!   or that cannot renew before its fence runs out, exits at once (status 75): it holds the
//!   engine's state in memory, and starting over as a follower is the one way to drop it all.
//! - **Writes** of the leader are fenced in the database by its epoch (`store::ha`), so a
//!   deposed leader that wakes from a pause writes nothing, even before it notices.
//! - **Submissions and commands that reach a follower** are written to the store as they would
//!   be on the leader (the job rows), and queued in the store's inbox for the leader, which
//!   applies them in order and deletes them once applied: nothing is lost when either side
//!   dies in between (a job not yet handed over is loaded from the store by the next leader).

use crate::batch::dispatch::{Dispatch, NewJob, QueueSnapshot, StopResult, TagFn, TagsReply};
use crate::engine::EngineHandle;
use crate::error::{BatchError, BatchResult};
use crate::model::{JobDetail, JobStatus};
use crate::store::{Replication, Store};
use crate::util::fence::Fence;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// What a follower asks of the leader, as the inbox stores it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
enum Item {
    /// Jobs committed by another replica (array parents before their children).
    Submitted {
        ids: Vec<String>,
    },
    Stop {
        job_id: String,
        reason: String,
        terminate: bool,
    },
    Tags {
        job_id: String,
        op: TagFn,
    },
    /// GetJobQueueSnapshot through a follower: the leader answers in `flotilla_reply`.
    Snapshot {
        queue_arn: String,
        reply: String,
    },
}

/// How long a follower waits for the leader's answer to a question.
const REPLY_WAIT: Duration = Duration::from_secs(10);

/// This replica's role, for `/healthz` and `/metrics`.
#[derive(Debug, Default)]
pub struct Role {
    leader: AtomicBool,
    /// The lease epoch as last seen (this replica's own while it leads).
    epoch: AtomicI64,
}

impl Role {
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
    }

    pub fn epoch(&self) -> i64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// A single server (SQLite): it always leads, under no epoch.
    pub fn set_single(&self) {
        self.set(true, 0);
    }

    fn set(&self, leader: bool, epoch: i64) {
        self.leader.store(leader, Ordering::SeqCst);
        self.epoch.store(epoch, Ordering::SeqCst);
        crate::metrics::replica_role(leader, epoch);
    }
}

/// The control plane's [`Dispatch`] on a replica: the engine's handle once this replica leads,
/// the store's inbox until then.
pub struct ReplicaDispatch {
    repl: Arc<Replication>,
    store: Arc<dyn Store>,
    engine: EngineHandle,
    leading: OnceLock<()>,
    /// The control plane, for a queued tag change whose job finished meanwhile. Set once the
    /// control plane exists (it is built with this dispatch in it).
    pub batch: OnceLock<Arc<crate::batch::Batch>>,
}

impl ReplicaDispatch {
    pub fn new(repl: Arc<Replication>, store: Arc<dyn Store>, engine: EngineHandle) -> Self {
        ReplicaDispatch {
            repl,
            store,
            engine,
            leading: OnceLock::new(),
            batch: OnceLock::new(),
        }
    }

    /// The engine runs here from now on.
    pub fn lead(&self) {
        let _ = self.leading.set(());
    }

    fn leads(&self) -> bool {
        self.leading.get().is_some()
    }

    async fn push(&self, item: &Item) -> BatchResult<()> {
        let text = serde_json::to_string(item)
            .map_err(|e| BatchError::Internal(format!("encoding inbox item: {e}")))?;
        self.repl.push(&text).await?;
        Ok(())
    }

    /// The stored job, if it exists and is not finished.
    async fn active(&self, job_id: &str) -> BatchResult<Option<JobDetail>> {
        // No stored ID holds a NUL, and PostgreSQL refuses one in a query.
        if job_id.contains('\0') {
            return Ok(None);
        }
        let rows = self.store.get_jobs(&[job_id.to_string()]).await?;
        let Some(row) = rows.into_iter().next() else {
            return Ok(None);
        };
        if row
            .status
            .parse::<JobStatus>()
            .is_ok_and(JobStatus::is_final)
        {
            return Ok(None);
        }
        let d: JobDetail = serde_json::from_str(&row.doc)
            .map_err(|e| BatchError::Internal(format!("stored job is unreadable: {e}")))?;
        Ok(Some(d))
    }

    /// Queues a tag change for the leader and answers with the tags it will give.
    async fn queue_tags(&self, job: JobDetail, op: TagFn) -> BatchResult<TagsReply> {
        let mut tags = job.tags.clone().unwrap_or_default();
        op.apply(&mut tags)?;
        crate::model::validate::tags("tags", &tags)?;
        self.push(&Item::Tags {
            job_id: job.job_id,
            op,
        })
        .await?;
        Ok(TagsReply::Applied(Ok(tags)))
    }
}

#[async_trait::async_trait]
impl Dispatch for ReplicaDispatch {
    async fn submitted(&self, jobs: Vec<NewJob>) {
        if self.leads() {
            return self.engine.submitted(jobs).await;
        }
        let ids: Vec<String> = jobs.into_iter().map(|(d, _)| d.job_id).collect();
        let item = Item::Submitted { ids };
        let mut pause = Duration::from_millis(50);
        for attempt in 1..=5 {
            match self.push(&item).await {
                Ok(()) => return,
                Err(e) if attempt == 5 => {
                    // The jobs are durable: the next leader to start loads them.
                    tracing::error!(error = %e, "cannot queue submitted jobs for the leader; they run after the next leader change");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "queueing submitted jobs for the leader failed; retrying")
                }
            }
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
    }

    async fn stop(&self, job_id: &str, reason: &str, terminate: bool) -> BatchResult<StopResult> {
        if self.leads() && self.engine.stop(job_id, reason, terminate).await? == StopResult::Applied
        {
            return Ok(StopResult::Applied);
        }
        // A follower, or the leader for a job another replica has committed but not yet
        // handed over: the inbox keeps the order (the hand-over is ahead of this stop).
        if self.active(job_id).await?.is_none() {
            return Ok(StopResult::NotActive);
        }
        self.push(&Item::Stop {
            job_id: job_id.to_string(),
            reason: reason.to_string(),
            terminate,
        })
        .await?;
        Ok(StopResult::Applied)
    }

    async fn tags(&self, job_id: &str, f: TagFn) -> BatchResult<TagsReply> {
        let f = if self.leads() {
            match self.engine.tags(job_id, f).await? {
                TagsReply::NotActive(f) => f,
                applied => return Ok(applied),
            }
        } else {
            f
        };
        match self.active(job_id).await? {
            Some(job) => self.queue_tags(job, f).await,
            None => Ok(TagsReply::NotActive(f)),
        }
    }

    async fn queue_snapshot(&self, queue_arn: &str) -> BatchResult<QueueSnapshot> {
        if self.leads() {
            return self.engine.queue_snapshot(queue_arn).await;
        }
        // The leader holds the queues: ask it through the store and wait for its answer.
        let reply = uuid::Uuid::new_v4().to_string();
        self.push(&Item::Snapshot {
            queue_arn: queue_arn.to_string(),
            reply: reply.clone(),
        })
        .await?;
        let deadline = Instant::now() + REPLY_WAIT;
        let mut pause = Duration::from_millis(5);
        loop {
            if let Some(body) = self.repl.take_reply(&reply).await? {
                return serde_json::from_str(&body)
                    .map_err(|e| BatchError::Internal(format!("the leader's snapshot: {e}")));
            }
            if Instant::now() > deadline {
                return Err(BatchError::Unavailable(format!(
                    "the leader did not answer GetJobQueueSnapshot within {} s (no leader, or \
                     one busy with a backlog of handed-over work); try again",
                    REPLY_WAIT.as_secs()
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    fn head_reason(&self, queue_arn: &str) -> Option<String> {
        if self.leads() {
            self.engine.head_reason(queue_arn)
        } else {
            None
        }
    }

    fn wake(&self) {
        // A follower's catalog change reaches the leader through the catalog version.
        if self.leads() {
            self.engine.wake();
        }
    }
}

/// How the lease is held.
#[derive(Debug, Clone, Copy)]
pub struct LeaseTiming {
    pub ttl: Duration,
}

impl LeaseTiming {
    fn renew_every(self) -> Duration {
        self.ttl / 4
    }
    /// How long before the database's expiry the leader stops acting: covers the two clocks
    /// running at slightly different rates.
    fn margin(self) -> Duration {
        (self.ttl / 10).max(Duration::from_millis(200))
    }
    const POLL: Duration = Duration::from_secs(1);
}

/// Waits until this replica holds the lease; returns its epoch. Meanwhile keeps `role` up to
/// date with the current leader's epoch.
pub async fn acquire(
    repl: &Replication,
    holder: &str,
    timing: LeaseTiming,
    fence: &Fence,
    role: &Role,
) -> i64 {
    loop {
        let t0 = Instant::now();
        match repl.try_acquire(holder, timing.ttl).await {
            Ok(Some(epoch)) => {
                repl.set_fence(epoch);
                fence.grant_until(t0 + timing.ttl - timing.margin());
                role.set(true, epoch);
                tracing::info!(epoch, holder, "leader lease acquired");
                return epoch;
            }
            Ok(None) => {
                if let Ok(Some(lease)) = repl.current().await {
                    role.set(false, lease.epoch);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot reach the lease; still a follower"),
        }
        tokio::time::sleep(LeaseTiming::POLL).await;
    }
}

/// Renews the lease until it is lost; returns why. The caller must stop acting at once.
pub async fn hold(
    repl: &Replication,
    holder: &str,
    epoch: i64,
    timing: LeaseTiming,
    fence: &Fence,
) -> String {
    loop {
        tokio::time::sleep(timing.renew_every()).await;
        let t0 = Instant::now();
        // A renewal that hangs (the database unreachable, its packets dropped) must not keep
        // this process leading past its fence: give up on it when the fence runs out.
        let left = fence.remaining().unwrap_or_default();
        match tokio::time::timeout(left, repl.renew(holder, epoch, timing.ttl)).await {
            Ok(Ok(true)) => fence.grant_until(t0 + timing.ttl - timing.margin()),
            Ok(Ok(false)) => {
                fence.revoke();
                return format!("lease epoch {epoch} was taken over by another replica");
            }
            Ok(Err(e)) => tracing::warn!(error = %e, epoch, "cannot renew the leader lease"),
            Err(_) => tracing::warn!(epoch, "renewing the leader lease timed out"),
        }
        if fence.check().is_err() {
            fence.revoke();
            return format!(
                "lease epoch {epoch} could not be renewed in time (paused or cut off from the database)"
            );
        }
    }
}

/// The leader's half of the inbox: applies what followers queued, in order, and deletes each
/// item once applied. Woken by `NOTIFY`, and polls besides (a notification can be missed while
/// the listening connection is re-established).
pub async fn apply_inbox(
    repl: Arc<Replication>,
    engine: EngineHandle,
    dispatch: Arc<ReplicaDispatch>,
) {
    let mut listener = match sqlx::postgres::PgListener::connect_with(repl.pool()).await {
        Ok(mut l) => match l.listen(crate::store::INBOX_CHANNEL).await {
            Ok(()) => Some(l),
            Err(e) => {
                tracing::warn!(error = %e, "inbox LISTEN failed; polling only");
                None
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "inbox listener connection failed; polling only");
            None
        }
    };
    // Without a notification, the inbox is read this often: an item kept for later (a stop for
    // a job not handed over yet) is tried again no faster than this.
    const IDLE: Duration = Duration::from_millis(200);
    loop {
        let applied = match drain(&repl, &engine, &dispatch).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "applying the inbox failed; retrying");
                0
            }
        };
        if applied > 0 {
            continue;
        }
        match &mut listener {
            Some(l) => {
                let _ = tokio::time::timeout(IDLE, l.try_recv()).await;
            }
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// One pass over the inbox; how many items were applied.
async fn drain(
    repl: &Replication,
    engine: &EngineHandle,
    dispatch: &ReplicaDispatch,
) -> BatchResult<usize> {
    let items = repl.peek(1000).await?;
    if items.is_empty() {
        return Ok(0);
    }
    let mut done = Vec::with_capacity(items.len());
    let mut ids: Vec<String> = Vec::new();
    let mut ids_seq: Vec<i64> = Vec::new();
    for (seq, text) in items {
        let item: Item = match serde_json::from_str(&text) {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(seq, error = %e, "unreadable inbox item dropped");
                done.push(seq);
                continue;
            }
        };
        match item {
            Item::Submitted { ids: more } => {
                ids.extend(more);
                ids_seq.push(seq);
                continue;
            }
            other => {
                // Hand-overs queued before this command go first.
                if !ids.is_empty() {
                    engine.load_submitted(std::mem::take(&mut ids)).await?;
                    done.append(&mut ids_seq);
                }
                if apply(engine, dispatch, other).await? {
                    done.push(seq);
                }
            }
        }
    }
    if !ids.is_empty() {
        engine.load_submitted(ids).await?;
        done.append(&mut ids_seq);
    }
    let n = done.len();
    repl.remove(&done).await?;
    crate::metrics::inbox_applied(n as u64);
    Ok(n)
}

/// Applies one command; false when it must wait (its job is committed but not handed over yet:
/// a later pass applies it).
async fn apply(engine: &EngineHandle, dispatch: &ReplicaDispatch, item: Item) -> BatchResult<bool> {
    match item {
        Item::Submitted { .. } => Ok(true),
        Item::Stop {
            job_id,
            reason,
            terminate,
        } => match engine.stop(&job_id, &reason, terminate).await? {
            StopResult::Applied => Ok(true),
            StopResult::NotActive => Ok(dispatch.active(&job_id).await?.is_none()),
        },
        Item::Snapshot { queue_arn, reply } => {
            let snapshot = engine.queue_snapshot(&queue_arn).await?;
            let body = serde_json::to_string(&snapshot)
                .map_err(|e| BatchError::Internal(format!("encoding a snapshot: {e}")))?;
            dispatch.repl.put_reply(&reply, &body).await?;
            Ok(true)
        }
        Item::Tags { job_id, op } => match engine.tags(&job_id, op).await? {
            TagsReply::Applied(r) => {
                if let Err(e) = r {
                    tracing::warn!(%job_id, error = %e, "queued tag change refused");
                }
                Ok(true)
            }
            TagsReply::NotActive(op) => match dispatch.active(&job_id).await? {
                Some(_) => Ok(false),
                None => {
                    // Finished meanwhile: applied to the stored job, as the API does for a
                    // finished job (the engine never writes it again).
                    if let Some(batch) = dispatch.batch.get()
                        && let Err(e) = batch.with_job_tags(&job_id, op).await
                    {
                        tracing::warn!(%job_id, error = %e, "queued tag change on a finished job failed");
                    }
                    Ok(true)
                }
            },
        },
    }
}
