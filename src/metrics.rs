//! Prometheus metrics: API calls, job state transitions, queue depth, capacity, consumable
//! resources.
//!
//! One process-wide registry, because the counters are bumped from deep inside the control plane
//! and threading a handle through every call would buy nothing.

use crate::model::JobStatus;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::OnceLock;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    operation: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    from: String,
    to: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CapacityLabels {
    compute_environment: String,
    resource: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsumableLabels {
    consumable_resource: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AwsLabels {
    service: String,
    operation: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AwsOperationLabels {
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FleetLabels {
    compute_environment: String,
    lifecycle: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CostLabels {
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabels {
    sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

struct Metrics {
    registry: Registry,
    job_cost: Family<CostLabels, Counter<f64, std::sync::atomic::AtomicU64>>,
    events_delivered: Family<SinkLabels, Counter>,
    events_failures: Family<SinkLabels, Counter>,
    events_backlog: Family<SinkLabels, Gauge>,
    events_streams: Gauge,
    events_pruned: Counter,
    events_dropped: Counter,
    aws_calls: Family<AwsLabels, Counter>,
    aws_rate_waits: Family<AwsOperationLabels, Counter>,
    aws_rate_wait_seconds: Family<AwsOperationLabels, Counter<f64, std::sync::atomic::AtomicU64>>,
    fleet: Family<FleetLabels, Gauge>,
    capacity: Family<CapacityLabels, Gauge>,
    consumables: Family<ConsumableLabels, Gauge>,
    api_calls: Family<ApiLabels, Counter>,
    transitions: Family<TransitionLabels, Counter>,
    queue_depth: Family<QueueLabels, Gauge>,
    store_write_failures: Counter,
    store_degraded: Gauge,
    store_quarantined: Gauge,
    job_credentials_served: Counter,
    job_credentials_refused: Counter,
    task_metadata_served: Counter,
    task_metadata_refused: Counter,
    replica_leader: Gauge,
    leader_epoch: Gauge,
    inbox_applied: Counter,
    console_logins: Family<OutcomeLabels, Counter>,
}

fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| {
        let mut registry = Registry::with_prefix("flotilla");
        let api_calls = Family::<ApiLabels, Counter>::default();
        registry.register(
            "api_requests",
            "AWS Batch API requests by operation and HTTP status",
            api_calls.clone(),
        );
        let transitions = Family::<TransitionLabels, Counter>::default();
        registry.register(
            "job_state_transitions",
            "Job state transitions",
            transitions.clone(),
        );
        let queue_depth = Family::<QueueLabels, Gauge>::default();
        registry.register(
            "queue_jobs",
            "Jobs per queue and status, sampled at scrape time",
            queue_depth.clone(),
        );
        let capacity = Family::<CapacityLabels, Gauge>::default();
        registry.register(
            "compute_capacity",
            "Capacity of each compute environment: kind total or used; resource milli_vcpus, memory_mib or gpus",
            capacity.clone(),
        );
        let consumables = Family::<ConsumableLabels, Gauge>::default();
        registry.register(
            "consumable_resource_quantity",
            "Quantity of each consumable resource, by kind (total, in_use, available), as the last scheduling pass saw it",
            consumables.clone(),
        );
        let aws_calls = Family::<AwsLabels, Counter>::default();
        registry.register(
            "aws_calls",
            "Calls Flotilla made to AWS, by service, operation and outcome (ok, throttled, error)",
            aws_calls.clone(),
        );
        let aws_rate_waits = Family::<AwsOperationLabels, Counter>::default();
        registry.register(
            "aws_rate_waits",
            "AWS calls that waited for Flotilla's client-side rate limit (AWS's quota per operation), by operation",
            aws_rate_waits.clone(),
        );
        let aws_rate_wait_seconds =
            Family::<AwsOperationLabels, Counter<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "aws_rate_wait_seconds",
            "Seconds AWS calls spent waiting for the client-side rate limit, by operation",
            aws_rate_wait_seconds.clone(),
        );
        let fleet = Family::<FleetLabels, Gauge>::default();
        registry.register(
            "fleet_instances",
            "EC2 instances of each managed compute environment, by lifecycle (spot, on-demand)",
            fleet.clone(),
        );
        let store_write_failures = Counter::default();
        registry.register(
            "store_write_failures",
            "Store writes that failed in a way a retry may fix (disk full, I/O error, database unreachable); each is retried",
            store_write_failures.clone(),
        );
        let store_degraded = Gauge::default();
        registry.register(
            "store_degraded",
            "1 while the store's writes fail (and /healthz answers 503), else 0",
            store_degraded.clone(),
        );
        let store_quarantined = Gauge::default();
        registry.register(
            "store_quarantined_rows",
            "Rows moved to the quarantine table because they could not be read (see docs/operations.md)",
            store_quarantined.clone(),
        );
        let job_credentials_served = Counter::default();
        registry.register(
            "job_credentials_served",
            "Job-role credentials served to LOCAL jobs (container-credentials protocol)",
            job_credentials_served.clone(),
        );
        let job_credentials_refused = Counter::default();
        registry.register(
            "job_credentials_refused",
            "Requests to the job credentials endpoint refused (unknown attempt or wrong token)",
            job_credentials_refused.clone(),
        );
        let task_metadata_served = Counter::default();
        registry.register(
            "task_metadata_served",
            "Task-metadata endpoint (ECS_CONTAINER_METADATA_URI_V4) answers to LOCAL Docker containers",
            task_metadata_served.clone(),
        );
        let task_metadata_refused = Counter::default();
        registry.register(
            "task_metadata_refused",
            "Task-metadata endpoint requests for no running container",
            task_metadata_refused.clone(),
        );
        let replica_leader = Gauge::default();
        registry.register(
            "replica_leader",
            "1 while this replica holds the leader lease (runs the engine), 0 as a follower",
            replica_leader.clone(),
        );
        let leader_epoch = Gauge::default();
        registry.register(
            "leader_epoch",
            "The leader lease's epoch as this replica last saw it (0: none yet, or SQLite)",
            leader_epoch.clone(),
        );
        let inbox_applied = Counter::default();
        registry.register(
            "inbox_applied",
            "Commands and submissions queued by other replicas that this leader applied",
            inbox_applied.clone(),
        );
        let events_delivered = Family::<SinkLabels, Counter>::default();
        registry.register(
            "job_events_delivered",
            "Job events delivered, by sink (webhook:<url>, eventbridge:<bus>, sse)",
            events_delivered.clone(),
        );
        let events_failures = Family::<SinkLabels, Counter>::default();
        registry.register(
            "job_events_delivery_failures",
            "Failed deliveries of job events, by sink; each is retried with backoff",
            events_failures.clone(),
        );
        let events_backlog = Family::<SinkLabels, Gauge>::default();
        registry.register(
            "job_events_backlog",
            "Job events stored and not yet delivered, by sink",
            events_backlog.clone(),
        );
        let events_streams = Gauge::default();
        registry.register(
            "job_events_streams",
            "Open server-sent-event streams of GET /events",
            events_streams.clone(),
        );
        let events_pruned = Counter::default();
        registry.register(
            "job_events_pruned",
            "Job events deleted from the log after their retention",
            events_pruned.clone(),
        );
        let events_dropped = Counter::default();
        registry.register(
            "job_events_dropped",
            "Job events deleted past --job-events-max-age before every sink had delivered them",
            events_dropped.clone(),
        );
        let job_cost = Family::<CostLabels, Counter<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "job_cost_dollars",
            "Cost of ended attempts on EC2 instances Flotilla launched: price x share x duration",
            job_cost.clone(),
        );
        let console_logins = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "console_logins",
            "Web console sign-ins, by outcome (ok, failed)",
            console_logins.clone(),
        );
        Metrics {
            registry,
            job_cost,
            console_logins,
            events_delivered,
            events_failures,
            events_backlog,
            events_streams,
            events_pruned,
            events_dropped,
            replica_leader,
            leader_epoch,
            inbox_applied,
            job_credentials_served,
            job_credentials_refused,
            task_metadata_served,
            task_metadata_refused,
            store_write_failures,
            store_degraded,
            store_quarantined,
            aws_calls,
            aws_rate_waits,
            aws_rate_wait_seconds,
            fleet,
            capacity,
            consumables,
            api_calls,
            transitions,
            queue_depth,
        }
    })
}

/// An attempt on queue `queue_arn` ended having cost `dollars`.
pub fn job_cost(queue_arn: &str, dollars: f64) {
    metrics()
        .job_cost
        .get_or_create(&CostLabels {
            queue: crate::model::arn::name_of_arn(queue_arn).to_string(),
        })
        .inc_by(dollars);
}

pub fn job_events_delivered(sink: &str, n: u64) {
    metrics()
        .events_delivered
        .get_or_create(&SinkLabels { sink: sink.into() })
        .inc_by(n);
}

pub fn job_events_failed(sink: &str) {
    metrics()
        .events_failures
        .get_or_create(&SinkLabels { sink: sink.into() })
        .inc();
}

pub fn job_events_backlog(sink: &str, n: i64) {
    metrics()
        .events_backlog
        .get_or_create(&SinkLabels { sink: sink.into() })
        .set(n);
}

/// An SSE stream opened (`+1`) or closed (`-1`).
pub fn job_event_streams(delta: i64) {
    metrics().events_streams.inc_by(delta);
}

pub fn job_events_pruned(n: u64, dropped: u64) {
    let m = metrics();
    m.events_pruned.inc_by(n);
    m.events_dropped.inc_by(dropped);
}

pub fn api_call(operation: &str, code: u16) {
    metrics()
        .api_calls
        .get_or_create(&ApiLabels {
            operation: operation.to_string(),
            code: code.to_string(),
        })
        .inc();
}

/// A call that waited `wait` for its operation's token bucket.
pub fn aws_rate_wait(operation: &str, wait: std::time::Duration) {
    let labels = AwsOperationLabels {
        operation: operation.to_string(),
    };
    let m = metrics();
    m.aws_rate_waits.get_or_create(&labels).inc();
    m.aws_rate_wait_seconds
        .get_or_create(&labels)
        .inc_by(wait.as_secs_f64());
}

pub fn aws_call(service: &str, operation: &str, outcome: &str) {
    metrics()
        .aws_calls
        .get_or_create(&AwsLabels {
            service: service.to_string(),
            operation: operation.to_string(),
            outcome: outcome.to_string(),
        })
        .inc();
}

/// An environment's live (pending or running) instances: how many are Spot and on-demand, and
/// how many of each type and purchase option.
pub fn fleet_instances(
    env: &str,
    spot: i64,
    on_demand: i64,
    by_type: std::collections::BTreeMap<(String, bool), i64>,
) {
    if let Ok(mut f) = FIGURES.lock() {
        f.instances.insert(env.to_string(), (spot, on_demand));
        f.instance_types.insert(env.to_string(), by_type);
    }
    let m = metrics();
    for (lifecycle, v) in [("spot", spot), ("on-demand", on_demand)] {
        m.fleet
            .get_or_create(&FleetLabels {
                compute_environment: env.to_string(),
                lifecycle: lifecycle.to_string(),
            })
            .set(v);
    }
}

pub fn replica_role(leader: bool, epoch: i64) {
    let m = metrics();
    m.replica_leader.set(i64::from(leader));
    m.leader_epoch.set(epoch);
}

pub fn inbox_applied(n: u64) {
    metrics().inbox_applied.inc_by(n);
}

pub fn console_login(ok: bool) {
    metrics()
        .console_logins
        .get_or_create(&OutcomeLabels {
            outcome: if ok { "ok" } else { "failed" }.to_string(),
        })
        .inc();
}

pub fn store_write_failed() {
    metrics().store_write_failures.inc();
}

pub fn job_credentials(served: bool) {
    let m = metrics();
    if served {
        m.job_credentials_served.inc();
    } else {
        m.job_credentials_refused.inc();
    }
}

pub fn task_metadata(served: bool) {
    let m = metrics();
    if served {
        m.task_metadata_served.inc();
    } else {
        m.task_metadata_refused.inc();
    }
}

pub fn store_degraded(degraded: bool) {
    metrics().store_degraded.set(i64::from(degraded));
}

pub fn store_quarantined_rows(n: i64) {
    metrics().store_quarantined.set(n);
}

/// What the CloudWatch publisher reads between its periods: the figures below as last set, and
/// jobs finished since it last took them.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// Compute environment → (total, used) thousandths of a vCPU.
    pub vcpus: std::collections::BTreeMap<String, (i64, i64)>,
    /// Compute environment → (spot, on-demand) instances.
    pub instances: std::collections::BTreeMap<String, (i64, i64)>,
    /// Compute environment → (instance type, Spot) → instances.
    pub instance_types:
        std::collections::BTreeMap<String, std::collections::BTreeMap<(String, bool), i64>>,
}

static FIGURES: std::sync::Mutex<Figures> = std::sync::Mutex::new(Figures {
    vcpus: std::collections::BTreeMap::new(),
    instances: std::collections::BTreeMap::new(),
    instance_types: std::collections::BTreeMap::new(),
});
static SUCCEEDED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static FAILED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The current figures.
pub fn figures() -> Figures {
    FIGURES.lock().map(|f| f.clone()).unwrap_or_default()
}

/// Jobs that succeeded and failed since the last call.
pub fn take_finished() -> (u64, u64) {
    use std::sync::atomic::Ordering;
    (
        SUCCEEDED.swap(0, Ordering::Relaxed),
        FAILED.swap(0, Ordering::Relaxed),
    )
}

pub fn job_transition(from: JobStatus, to: JobStatus, n: u64) {
    match to {
        JobStatus::Succeeded => {
            SUCCEEDED.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
        JobStatus::Failed => {
            FAILED.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
        _ => {}
    }
    metrics()
        .transitions
        .get_or_create(&TransitionLabels {
            from: from.as_str().to_string(),
            to: to.as_str().to_string(),
        })
        .inc_by(n);
}

/// Records what a compute environment offers and what is in use, in thousandths of a vCPU,
/// MiB and GPUs.
pub fn capacity(env: &str, total: [i64; 3], used: [i64; 3]) {
    if let Ok(mut f) = FIGURES.lock() {
        f.vcpus.insert(env.to_string(), (total[0], used[0]));
    }
    let m = metrics();
    for (i, resource) in ["milli_vcpus", "memory_mib", "gpus"].iter().enumerate() {
        for (kind, v) in [("total", total[i]), ("used", used[i])] {
            m.capacity
                .get_or_create(&CapacityLabels {
                    compute_environment: env.to_string(),
                    resource: resource.to_string(),
                    kind: kind.to_string(),
                })
                .set(v);
        }
    }
}

/// Records a consumable resource's total, in-use and available quantities.
pub fn consumable(resource: &str, total: i64, in_use: i64, available: i64) {
    let m = metrics();
    for (kind, v) in [
        ("total", total),
        ("in_use", in_use),
        ("available", available),
    ] {
        m.consumables
            .get_or_create(&ConsumableLabels {
                consumable_resource: resource.to_string(),
                kind: kind.to_string(),
            })
            .set(v);
    }
}

/// Renders the registry in the OpenMetrics text format, with queue depth set from `depths`
/// (queue, status, count).
pub fn render(depths: &[(String, String, i64)]) -> String {
    let m = metrics();
    m.queue_depth.clear();
    for (queue, status, n) in depths {
        m.queue_depth
            .get_or_create(&QueueLabels {
                queue: queue.clone(),
                status: status.clone(),
            })
            .set(*n);
    }
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &m.registry).is_err() {
        out.clear();
    }
    out
}
