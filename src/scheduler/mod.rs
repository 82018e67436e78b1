//! The scheduler: pure planning over a snapshot (no I/O, no clocks), so it can be property-tested
//! and benchmarked at 100,000 jobs.
//!
//! Given the RUNNABLE jobs, the queues and the free capacity of each compute environment, [`plan`]
//! decides which jobs start where, and why each job left waiting waits.

use std::collections::HashMap;

mod pass;
mod reason;
pub(crate) mod synthetic;
#[cfg(test)]
mod tests;

pub use synthetic::synthetic_snapshot;

/// How many waiting jobs at the head of each queue get a [`Blocked`] reason per pass. AWS reports
/// the front of a queue the same way; reasons for the whole backlog would cost more than the plan.
pub const HEAD_REASONS_PER_QUEUE: usize = 100;

/// An amount of compute. vCPUs in thousandths so fractional requests add up exactly.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Resources {
    pub milli_vcpus: u64,
    pub memory_mib: u64,
    pub gpus: u64,
}

impl Resources {
    /// Whether `self` fits in `room` in every dimension.
    pub fn fits_within(&self, room: &Resources) -> bool {
        self.milli_vcpus <= room.milli_vcpus
            && self.memory_mib <= room.memory_mib
            && self.gpus <= room.gpus
    }

    /// `self - other` per dimension, clamped at zero.
    pub fn saturating_sub(&self, other: &Resources) -> Resources {
        Resources {
            milli_vcpus: self.milli_vcpus.saturating_sub(other.milli_vcpus),
            memory_mib: self.memory_mib.saturating_sub(other.memory_mib),
            gpus: self.gpus.saturating_sub(other.gpus),
        }
    }

    /// The per-dimension maximum.
    pub fn max(&self, other: &Resources) -> Resources {
        Resources {
            milli_vcpus: self.milli_vcpus.max(other.milli_vcpus),
            memory_mib: self.memory_mib.max(other.memory_mib),
            gpus: self.gpus.max(other.gpus),
        }
    }

    /// The per-dimension minimum.
    pub fn min(&self, other: &Resources) -> Resources {
        Resources {
            milli_vcpus: self.milli_vcpus.min(other.milli_vcpus),
            memory_mib: self.memory_mib.min(other.memory_mib),
            gpus: self.gpus.min(other.gpus),
        }
    }
}

#[derive(Debug, Clone)]
pub struct EnvView {
    pub name: String,
    /// ENABLED and VALID: may receive new jobs.
    pub usable: bool,
    /// The most this environment can ever offer one job and all jobs together.
    pub capacity: Resources,
    /// What is free now.
    pub free: Resources,
}

#[derive(Debug, Clone)]
pub struct ShareWeight {
    /// A share identifier, or a prefix ending in `*`.
    pub share_identifier: String,
    /// Lower means a larger share; default 1.0.
    pub weight_factor: f64,
}

#[derive(Debug, Clone)]
pub struct FairShareView {
    pub compute_reservation: u32,
    pub weights: Vec<ShareWeight>,
}

#[derive(Debug, Clone)]
pub struct QueueView {
    pub name: String,
    pub priority: i32,
    /// ENABLED.
    pub enabled: bool,
    /// Indices into [`Snapshot::envs`], in the queue's `computeEnvironmentOrder`.
    pub envs: Vec<usize>,
    pub fair_share: Option<FairShareView>,
}

/// A consumable resource as one pass sees it: capacity shared by every queue and environment.
#[derive(Debug, Clone)]
pub struct ConsumableView {
    pub name: String,
    /// What is free now: total less what running attempts hold (and, for NON_REPLENISHABLE
    /// resources, less what ended attempts consumed).
    pub available: u64,
    /// False when jobs name a resource that no longer exists; they wait for it.
    pub exists: bool,
}

#[derive(Debug, Clone)]
pub struct JobView {
    /// Index into [`Snapshot::queues`].
    pub queue: usize,
    pub share: Option<String>,
    /// `schedulingPriority` (fair-share queues): higher first within a share.
    pub priority: i32,
    pub created_at: i64,
    pub need: Resources,
    /// (index into [`Snapshot::consumables`], quantity) per consumable resource the job holds
    /// while it runs; empty for most jobs.
    pub consumables: Vec<(usize, u64)>,
}

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub envs: Vec<EnvView>,
    pub queues: Vec<QueueView>,
    pub consumables: Vec<ConsumableView>,
    /// RUNNABLE jobs, in any order.
    pub jobs: Vec<JobView>,
    /// Decayed vCPU-seconds used per (queue index, share identifier), for fair share.
    pub share_usage: HashMap<(usize, String), f64>,
}

/// Why a job was not placed in this pass. [`Blocked::reason`] gives AWS Batch's `statusReason`
/// text, [`Blocked::code`] its leading code.
#[derive(Debug, Clone, PartialEq)]
pub enum Blocked {
    /// The job needs more than any usable environment of its queue can ever offer.
    NeverFits {
        need: Resources,
        largest: Resources,
    },
    /// It fits, but not in what is free now (or what is free is held for someone else).
    WaitingForCapacity {
        need: Resources,
        cause: WaitCause,
    },
    QueueDisabled,
    /// The queue has no ENABLED and VALID compute environment.
    NoUsableEnvironment,
    /// Consumable resource `resource` (an index into [`Snapshot::consumables`]) has less than
    /// `quantity` available.
    WaitingForConsumable {
        resource: usize,
        quantity: u64,
    },
    /// The job names consumable resource `resource`, which does not exist.
    ConsumableMissing {
        resource: usize,
    },
}

#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// (index into `Snapshot::jobs`, index into `Snapshot::envs`), in dispatch order.
    pub placements: Vec<(usize, usize)>,
    /// Jobs left waiting, with why. May cover only the first jobs of each queue.
    pub blocked: Vec<(usize, Blocked)>,
}

/// Why a job that fits its queue's environments still waits: what a person would change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitCause {
    /// No environment of the queue that can hold the job has that much free now.
    NoRoom,
    /// `env` has room, but a job of `queue`, earlier in the pass (higher priority), waits for it.
    HeldForQueue { queue: usize, env: usize },
    /// `env` has room, but the queue's fair-share `computeReservation` keeps it for share
    /// identifiers that are not active yet.
    ComputeReservation { env: usize },
}

/// Decides which RUNNABLE jobs start where in this pass. Pure and deterministic: the same
/// snapshot gives the same plan. Jobs whose `queue` index is out of range are ignored, and so are
/// out-of-range environment indices in a queue's order.
///
/// The rules, exactly:
/// - Queues go by descending `priority`, then `name`, then index. A disabled queue places
///   nothing; a queue with no usable environment places nothing.
/// - FIFO queues take jobs by (`created_at`, index). Fair-share queues: see below.
/// - A job goes to the first usable environment in its queue's order whose capacity and free both
///   cover its need in all three dimensions (and, for fair share, that respects the reservation),
///   and is subtracted from that environment's free. A job that does not fit is skipped and later
///   jobs of the same queue may still be placed (backfill).
/// - Anti-starvation between queues: when a job is left waiting on an environment E (E is usable,
///   in its queue's order, its capacity covers the job but its free does not), E is held for that
///   queue for the rest of the pass: no queue later in the pass (lower priority, or equal
///   priority and later name) places anything on E. A job held back only by its own queue's
///   `computeReservation` does not hold E, so other queues may use the reserve.
/// - Consumable resources: a job that fits some environment's capacity is placed only if every
///   consumable resource it names exists and has its quantity available (what earlier
///   placements of the pass took counts as gone); placing it takes the quantity. Resources are
///   shared by all queues and environments. A job waiting for a resource holds no environment
///   and no resource: later jobs that need less (or other resources) may go first.
/// - Fair share: each share identifier has a running usage, starting at
///   `share_usage[(queue, share)]` (0 if absent) and growing by the vCPUs of each job placed for
///   it in this pass. The next turn goes to the share with the lowest usage × weight factor (ties:
///   share name). Within a share: higher `priority` first, then (`created_at`, index). A share
///   keeps its turn until it places a job or runs out of jobs. Jobs without a share identifier
///   form the share `""`. Weights: an exact match, else the longest `*`-prefix match, else 1.0;
///   non-finite or non-positive weights count as 1.0, others are clamped to [0.0001, 999.9999].
/// - `computeReservation` r (1–99): ActiveShares = the queue's `share_usage` entries with usage > 0
///   plus the shares that placed their first job in this pass. A job of an active share may only
///   be placed on E if afterwards E still has floor(capacity vCPU × (r/100)^ActiveShares) vCPUs
///   free; jobs of inactive shares may use everything. Only vCPUs are reserved, as in AWS.
/// - Reasons: the first [`HEAD_REASONS_PER_QUEUE`] waiting jobs of each queue, in the order the
///   queue considered them, get a [`Blocked`] entry. Once no job of a queue can be placed any
///   more, its remaining jobs are ordered for reasons as if each were placed (fair-share turns
///   keep rotating), which is the order in which they would start. Disabled queues and queues
///   without a usable environment report their first jobs by (`created_at`, index).
pub fn plan(snapshot: &Snapshot) -> Plan {
    pass::plan(snapshot, HEAD_REASONS_PER_QUEUE)
}

/// [`plan`] without reasons: the same placements, no [`Plan::blocked`] entries. Giving reasons
/// costs a formatted text per waiting head job; a caller that passes once per freed slot wants
/// them only now and then.
pub fn plan_placements(snapshot: &Snapshot) -> Plan {
    pass::plan(snapshot, 0)
}

/// The first `limit` jobs of queue `queue` in the order passes would start them if each one
/// started when its turn came (indices into [`Snapshot::jobs`]): FIFO queues by (`created_at`,
/// index); fair-share queues by the turns of [`plan`], each job charged to its share as if it
/// had started. This is GetJobQueueSnapshot's `frontOfQueue`. Capacity, holds between queues
/// and `computeReservation` decide *when* the next job starts, not which one is next, so they
/// are not consulted; neither are [`Snapshot::envs`].
pub fn dispatch_order(snapshot: &Snapshot, queue: usize, limit: usize) -> Vec<usize> {
    pass::dispatch_order(snapshot, queue, limit)
}
