//! What the control plane needs of whatever runs jobs (the engine), as a port the control plane
//! owns: `batch` hands over accepted jobs and commands without knowing the engine's type, and
//! `server.rs` plugs the engine's handle in when it builds [`super::Batch`].

use crate::error::BatchResult;
use crate::model::{JobDetail, Tags};
use crate::scheduler::Resources;

/// A job just made durable, with its array parent (id, index) if it is a child.
pub type NewJob = (JobDetail, Option<(String, i32)>);

/// A change to a job's tags, as data (not a closure) so that a replica that does not run the
/// engine can queue it for the one that does.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum TagOp {
    /// ListTagsForResource: no change.
    Read,
    /// TagResource: add or replace these.
    Tag(Tags),
    /// UntagResource: remove these keys.
    Untag(Vec<String>),
}

impl TagOp {
    pub fn apply(&self, tags: &mut Tags) -> BatchResult<()> {
        match self {
            TagOp::Read => {}
            TagOp::Tag(new) => tags.extend(new.iter().map(|(k, v)| (k.clone(), v.clone()))),
            TagOp::Untag(keys) => {
                for k in keys {
                    tags.remove(k);
                }
            }
        }
        Ok(())
    }
}

/// What the runner applies to a job's tags.
pub type TagFn = TagOp;

pub enum TagsReply {
    Applied(BatchResult<Tags>),
    /// The job is not active: the closure comes back and the caller updates the stored job
    /// itself, which is safe because the engine never writes a finished job again.
    NotActive(TagFn),
}

/// What a stop command found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopResult {
    /// The job is active and the stop was applied.
    Applied,
    /// The engine does not hold the job: it is finished, or does not exist.
    NotActive,
}

/// A queue as the engine holds it now: GetJobQueueSnapshot.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QueueSnapshot {
    /// The first RUNNABLE jobs in the order they would start: (job ID, when it became
    /// RUNNABLE, in epoch ms).
    pub front: Vec<(String, i64)>,
    /// What the queue's STARTING and RUNNING jobs hold.
    pub used: Resources,
    /// Fair-share queues: vCPUs held by each share identifier's STARTING and RUNNING jobs,
    /// largest first (ties: by name); shares holding nothing are left out.
    pub shares: Option<Vec<(String, f64)>>,
    /// When the engine took it (epoch ms).
    pub at: i64,
}

#[async_trait::async_trait]
pub trait Dispatch: Send + Sync + 'static {
    /// Jobs the control plane has just committed. Never fails: a job that does not reach the
    /// engine now is loaded from the store at its next start.
    async fn submitted(&self, jobs: Vec<NewJob>);
    /// CancelJob (`terminate` false) or TerminateJob, answered once the result is durable.
    async fn stop(&self, job_id: &str, reason: &str, terminate: bool) -> BatchResult<StopResult>;
    /// Changes the tags of a job the engine holds, or hands `f` back.
    async fn tags(&self, job_id: &str, f: TagFn) -> BatchResult<TagsReply>;
    /// The front of `queue_arn` in dispatch order and what its jobs use now.
    async fn queue_snapshot(&self, queue_arn: &str) -> BatchResult<QueueSnapshot>;
    /// Why the head of `queue_arn` waits (from the last scheduling pass).
    fn head_reason(&self, queue_arn: &str) -> Option<String>;
    /// Queues, environments or policies changed: plan again.
    fn wake(&self);
}
