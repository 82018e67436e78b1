//! Prometheus metrics: API calls, job state transitions, queue depth.
//!
//! One process-wide registry, because the counters are bumped from deep inside the control plane
//! and threading a handle through every call would buy nothing.

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

struct Metrics {
    registry: Registry,
    capacity: Family<CapacityLabels, Gauge>,
    api_calls: Family<ApiLabels, Counter>,
    transitions: Family<TransitionLabels, Counter>,
    queue_depth: Family<QueueLabels, Gauge>,
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
        Metrics {
            registry,
            capacity,
            api_calls,
            transitions,
            queue_depth,
        }
    })
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

pub fn job_transition(from: &str, to: &str, n: u64) {
    metrics()
        .transitions
        .get_or_create(&TransitionLabels {
            from: from.to_string(),
            to: to.to_string(),
        })
        .inc_by(n);
}

/// Records what a compute environment offers and what is in use, in thousandths of a vCPU,
/// MiB and GPUs.
pub fn capacity(env: &str, total: [i64; 3], used: [i64; 3]) {
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
