//! The durable store: the single source of truth.
//!
//! The store deals in rows, not in wire types: a job is a handful of indexed columns plus its full
//! `JobDetail` document as JSON text. That keeps the SQL identical on SQLite and PostgreSQL and lets
//! the API evolve the document without migrations. Resources (compute environments, queues, job
//! definitions, scheduling policies, consumable resources) are few; the server loads them all at start and writes through.
//!
//! Writes of jobs go through a group-commit writer: concurrent callers share one transaction (and one
//! fsync), and each caller's future resolves only after that transaction committed.

pub mod backup;
mod health;
mod lock;
mod sql;

pub use health::{Degraded, WriteHealth};
pub use lock::{DataDirLock, LockError};
pub use sql::SqlStore;
pub use sql::ha::{INBOX_CHANNEL, LeaseRow, Replication};

use async_trait::async_trait;

/// What kind of resource a [`ResourceRow`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    ComputeEnvironment,
    JobQueue,
    JobDefinition,
    SchedulingPolicy,
    ConsumableResource,
}

impl ResourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::ComputeEnvironment => "compute-environment",
            ResourceKind::JobQueue => "job-queue",
            ResourceKind::JobDefinition => "job-definition",
            ResourceKind::SchedulingPolicy => "scheduling-policy",
            ResourceKind::ConsumableResource => "consumable-resource",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "compute-environment" => ResourceKind::ComputeEnvironment,
            "job-queue" => ResourceKind::JobQueue,
            "job-definition" => ResourceKind::JobDefinition,
            "scheduling-policy" => ResourceKind::SchedulingPolicy,
            "consumable-resource" => ResourceKind::ConsumableResource,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRow {
    pub kind: ResourceKind,
    /// Primary key within the kind.
    pub arn: String,
    pub name: String,
    /// The resource's wire document (JSON).
    pub doc: String,
}

/// One job (or array child) as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRow {
    pub job_id: String,
    /// ARN of the job queue.
    pub job_queue: String,
    /// One of AWS Batch's job statuses, upper case.
    pub status: String,
    pub job_name: String,
    /// ARN of the job definition revision (`...:job-definition/NAME:REV`).
    pub job_definition: String,
    /// For array children: the parent's job ID.
    pub array_parent: Option<String>,
    /// For array children: the index.
    pub array_index: Option<i32>,
    /// Epoch milliseconds.
    pub created_at: i64,
    /// The `JobDetail` document (JSON).
    pub doc: String,
}

/// An event to append to the job-event log with the rows of the same write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Epoch milliseconds.
    pub at: i64,
    /// EventBridge's `detail-type`: `Batch Job State Change` or `Batch Job Queue Blocked`.
    pub kind: String,
    pub job_id: String,
    /// The job's stored `JobDetail` document (JSON) at the moment of the event.
    pub doc: String,
}

/// What the engine appends with the job rows of one write, in the same transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Appends {
    /// To the job-event log.
    pub events: Vec<NewEvent>,
    /// Ended attempts' use of an instance, for cost (replacing any earlier row of the same
    /// attempt: a restart may end an attempt again).
    pub usage: Vec<AttemptUsage>,
}

impl Appends {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.usage.is_empty()
    }

    pub fn len(&self) -> usize {
        self.events.len() + self.usage.len()
    }
}

/// One ended attempt that ran on an EC2 instance Flotilla launched: its share of the instance
/// for how long. Cost = `price_per_hour` × `share` × (`stopped_at` − `started_at`) in hours.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptUsage {
    pub job_id: String,
    /// 1-based.
    pub attempt: u32,
    /// Queue ARN.
    pub job_queue: String,
    pub share_identifier: Option<String>,
    /// Job definition ARN (with revision).
    pub job_definition: String,
    /// Compute environment name.
    pub compute_environment: String,
    pub instance_id: String,
    pub instance_type: String,
    pub spot: bool,
    pub price_per_hour: f64,
    /// The larger of the attempt's vCPUs and memory over the instance's registered ones.
    pub share: f64,
    /// Epoch milliseconds.
    pub started_at: i64,
    pub stopped_at: i64,
}

/// An instance Flotilla launched, as its ledger keeps it: the fleet's bill is
/// `price_per_hour` × its hours from `launched_at` to `terminated_at` (or now).
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceUsage {
    pub instance_id: String,
    /// Compute environment name.
    pub compute_environment: String,
    pub instance_type: String,
    pub spot: bool,
    pub price_per_hour: f64,
    /// Epoch milliseconds.
    pub launched_at: i64,
    /// `None` while it runs.
    pub terminated_at: Option<i64>,
}

/// Attempt cost within a time range, summed per queue, share identifier, job definition and
/// environment (one row per combination that had any). Serialised as the cost report shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CostGroup {
    pub job_queue: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub share_identifier: Option<String>,
    pub job_definition: String,
    pub compute_environment: String,
    /// Attempts that ran in the range (in the report, those still running included).
    pub attempts: i64,
    /// Dollars: price × share × hours within the range.
    pub cost: f64,
    /// Seconds within the range.
    pub seconds: f64,
}

/// An event as stored: [`NewEvent`] and its place in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    /// Gap-free and increasing in commit order: the events of one write get consecutive
    /// numbers after every event committed before.
    pub seq: i64,
    pub at: i64,
    pub kind: String,
    pub job_id: String,
    pub doc: String,
}

/// Which jobs [`Store::list_jobs`] scans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobScope {
    /// Top-level jobs and array parents of a queue (array children are listed through their parent).
    Queue(String),
    /// The children of an array job, by index.
    ArrayParent(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobListQuery {
    pub scope: JobScope,
    /// `None`: every status.
    pub statuses: Option<Vec<String>>,
    /// Exact job name, or a prefix when `name_is_prefix`.
    pub name: Option<String>,
    pub name_is_prefix: bool,
    /// Job definition ARN exactly, or an ARN prefix when `definition_is_prefix`
    /// (a name without revision matches every revision).
    pub definition: Option<String>,
    pub definition_is_prefix: bool,
    /// Epoch ms, exclusive bounds on `created_at`.
    pub created_before: Option<i64>,
    pub created_after: Option<i64>,
    /// Page size, at least 1.
    pub limit: u32,
    /// Keyset cursor returned by the previous page.
    pub cursor: Option<JobCursor>,
}

/// Position after the last row of a page. Queue scopes page newest first by
/// (`created_at`, `job_id`); array scopes by `array_index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobCursor {
    Created { created_at: i64, job_id: String },
    Index(i32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobPage {
    pub jobs: Vec<JobRow>,
    /// Present when more rows may follow.
    pub next: Option<JobCursor>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or the transaction failed in a way a retry may fix
    /// (connection lost, pool timeout, serialization failure, SQLite busy).
    #[error("store unavailable, retry: {0}")]
    Unavailable(String),
    /// The disk is full or failing (SQLite FULL/IOERR/CANTOPEN, PostgreSQL disk_full/io_error).
    /// Nothing was applied, and a retry lands once the operator frees space: writers retry
    /// these without limit rather than drop a state change.
    #[error("storage fault, retry: {0}")]
    Storage(String),
    /// A bug or corrupted data; retrying will not help.
    #[error("store error: {0}")]
    Fatal(String),
    /// The store is shutting down; the write was not applied.
    #[error("store is closed")]
    Closed,
    /// This replica led under an epoch another replica has since replaced: nothing was written,
    /// and nothing this process writes as the leader will be. Not retryable.
    #[error("this replica is no longer the leader (its lease epoch was superseded): write refused")]
    Fenced,
}

impl StoreError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Storage(_))
    }

    /// The disk rather than the database or the row: reported as the store being degraded.
    pub fn is_storage_fault(&self) -> bool {
        matches!(self, StoreError::Storage(_))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `"sqlite"` or `"postgres"`.
    fn backend(&self) -> &'static str;

    /// Whether writes land; `/healthz` answers 503 while they fail.
    fn write_health(&self) -> &WriteHealth;

    /// At a clean stop, once nothing writes any more: waits for queued writes, and on SQLite
    /// checkpoints the WAL into the database file and records the clean stop in the marker.
    async fn shutdown(&self) -> StoreResult<()> {
        Ok(())
    }

    async fn get_meta(&self, key: &str) -> StoreResult<Option<String>>;
    async fn set_meta(&self, key: &str, value: &str) -> StoreResult<()>;

    /// Every resource. A row of a kind this server does not know is moved to the quarantine
    /// table and left out.
    async fn load_resources(&self) -> StoreResult<Vec<ResourceRow>>;
    /// Moves a job whose row cannot be read into the quarantine table (one transaction), so
    /// that the server runs on without it; `reason` says what was wrong.
    async fn quarantine_job(&self, row: &JobRow, reason: &str) -> StoreResult<()>;
    /// The same for a resource.
    async fn quarantine_resource(&self, row: &ResourceRow, reason: &str) -> StoreResult<()>;
    /// Insert or replace by (kind, arn).
    async fn put_resource(&self, row: &ResourceRow) -> StoreResult<()>;
    async fn delete_resource(&self, kind: ResourceKind, arn: &str) -> StoreResult<()>;

    /// Insert or replace jobs by `job_id`, atomically, committed before returning.
    /// Concurrent calls are group-committed.
    async fn upsert_jobs(&self, jobs: Vec<JobRow>) -> StoreResult<()>;
    /// Like [`Store::upsert_jobs`], committed before returning (other readers see it, and it
    /// survives a crash of this process), but not necessarily flushed to disk yet: a power loss
    /// may undo it, and the next durable commit flushes it along. For the engine's own
    /// transitions, which a restart re-derives (at worst an attempt runs again, as AWS Batch's
    /// at-least-once allows); never for what a caller was told is stored.
    async fn upsert_jobs_relaxed(&self, jobs: Vec<JobRow>) -> StoreResult<()> {
        self.upsert_jobs(jobs).await
    }
    /// [`Store::upsert_jobs`] (`durable`) or [`Store::upsert_jobs_relaxed`], with `appends`
    /// stored in the same transaction: an event is stored exactly when the state it reports
    /// is, and an attempt's usage exactly when its end is. Only the engine writes events, one
    /// write at a time, so their numbers follow commit order.
    async fn write_jobs_with(
        &self,
        jobs: Vec<JobRow>,
        appends: Appends,
        durable: bool,
    ) -> StoreResult<()>;
    /// [`Store::write_jobs_with`] with events alone.
    async fn write_jobs_with_events(
        &self,
        jobs: Vec<JobRow>,
        events: Vec<NewEvent>,
        durable: bool,
    ) -> StoreResult<()> {
        let appends = Appends {
            events,
            usage: Vec::new(),
        };
        self.write_jobs_with(jobs, appends, durable).await
    }
    /// Records an environment's live instances: those not yet in the ledger are added (an
    /// instance already there keeps its launch time and price), and the environment's
    /// instances the ledger has as running that are not in `live` are marked terminated at
    /// `now`.
    async fn record_instances(
        &self,
        compute_environment: &str,
        live: Vec<InstanceUsage>,
        now: i64,
    ) -> StoreResult<()>;
    /// The ledger's instances that ran at some time in `[from, to)` (epoch ms).
    async fn instances_between(&self, from: i64, to: i64) -> StoreResult<Vec<InstanceUsage>>;
    /// Ended attempts' cost within `[from, to)`, each clipped to the range, grouped.
    async fn attempt_cost_between(&self, from: i64, to: i64) -> StoreResult<Vec<CostGroup>>;
    /// Up to `limit` events numbered after `after`, oldest first.
    async fn events_after(&self, after: i64, limit: u32) -> StoreResult<Vec<EventRow>>;
    /// The newest event's number (0 when the log is empty).
    async fn last_event_seq(&self) -> StoreResult<i64>;
    /// Deletes events numbered at most `upto` and older than `before` (epoch ms), never the
    /// newest (whose number the next event continues from). Returns how many went.
    async fn prune_events(&self, upto: i64, before: i64) -> StoreResult<u64>;
    /// Woken after each commit of this process that appended events.
    fn event_signal(&self) -> std::sync::Arc<tokio::sync::Notify>;
    /// The jobs with these IDs that exist, in no particular order.
    async fn get_jobs(&self, ids: &[String]) -> StoreResult<Vec<JobRow>>;
    async fn list_jobs(&self, query: &JobListQuery) -> StoreResult<JobPage>;
    /// Children of an array job counted by status.
    async fn count_children_by_status(&self, parent: &str) -> StoreResult<Vec<(String, i64)>>;
    /// Every job (including children) whose status is one of `statuses`, for rebuilding in-memory
    /// state at start.
    async fn jobs_with_status(&self, statuses: &[&str]) -> StoreResult<Vec<JobRow>>;
    /// Number of jobs per (queue ARN, status), for queue-depth metrics.
    async fn count_jobs_by_queue_status(&self) -> StoreResult<Vec<(String, String, i64)>>;

    /// The lease, inbox and catalog version replicas share (PostgreSQL); `None` for a store
    /// only one server may use (SQLite).
    fn replication(&self) -> Option<std::sync::Arc<Replication>> {
        None
    }
}

/// Opens the store named by a `sqlite://…` or `postgres://…` URL and runs migrations.
pub async fn open(url: &str) -> StoreResult<std::sync::Arc<dyn Store>> {
    Ok(std::sync::Arc::new(SqlStore::open(url).await?))
}
