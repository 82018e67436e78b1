//! AWS-style `statusReason` texts for [`Blocked`]: a code a program can match on, then a sentence
//! that tells a person what to change.

use std::fmt::Write;

use super::{Blocked, Resources, Snapshot, WaitCause};

impl Blocked {
    /// The code before the ` - ` in [`Blocked::reason`], e.g. for metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Blocked::NeverFits { .. } => "MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT",
            Blocked::WaitingForCapacity { .. } => "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY",
            Blocked::QueueDisabled => "MISCONFIGURATION:JOB_QUEUE_DISABLED",
            Blocked::NoUsableEnvironment => "MISCONFIGURATION:COMPUTE_ENVIRONMENT_NOT_USABLE",
            Blocked::WaitingForConsumable { .. } => "RESOURCE:WAITING_FOR_CONSUMABLE_RESOURCE",
            Blocked::ConsumableMissing { .. } => "MISCONFIGURATION:CONSUMABLE_RESOURCE_NOT_FOUND",
        }
    }

    /// The `statusReason` of job `job` (an index into `snapshot.jobs`) blocked for this reason.
    /// The snapshot names the queue and environments; stale or out-of-range indices give
    /// placeholders rather than a panic.
    pub fn reason(&self, snapshot: &Snapshot, job: usize) -> String {
        let queue = snapshot
            .jobs
            .get(job)
            .and_then(|j| snapshot.queues.get(j.queue));
        let queue_name = queue.map_or("(unknown)", |q| q.name.as_str());
        let env_name = |e: usize| {
            snapshot
                .envs
                .get(e)
                .map_or("(unknown)", |e| e.name.as_str())
        };
        let resource_name = |r: usize| {
            snapshot
                .consumables
                .get(r)
                .map_or("(unknown)", |c| c.name.as_str())
        };
        let mut out = format!("{} - ", self.code());
        // Writing to a String cannot fail.
        let _ = match self {
            Blocked::NeverFits { need, largest } => write!(
                out,
                "The job requires {} but the largest compute environment of its queue offers {}.",
                full(need),
                full(largest)
            ),
            Blocked::WaitingForCapacity { need, cause } => {
                let _ = write!(out, "Waiting for {}; ", short(need));
                match cause {
                    WaitCause::NoRoom => {
                        let fitting: Vec<&str> = queue
                            .map(|q| {
                                q.envs
                                    .iter()
                                    .filter_map(|&e| snapshot.envs.get(e))
                                    .filter(|e| e.usable && need.fits_within(&e.capacity))
                                    .map(|e| e.name.as_str())
                                    .collect()
                            })
                            .unwrap_or_default();
                        match fitting.as_slice() {
                            [one] => write!(
                                out,
                                "compute environment {one} of job queue {queue_name} has less \
                                 than that free now."
                            ),
                            many => write!(
                                out,
                                "compute environments {} of job queue {queue_name} have less than \
                                 that free now.",
                                many.join(", ")
                            ),
                        }
                    }
                    WaitCause::HeldForQueue { queue: holder, env } => write!(
                        out,
                        "compute environment {} has that free but holds it for a waiting job of \
                         higher-priority job queue {}.",
                        env_name(*env),
                        snapshot
                            .queues
                            .get(*holder)
                            .map_or("(unknown)", |q| q.name.as_str())
                    ),
                    WaitCause::ComputeReservation { env } => write!(
                        out,
                        "the free capacity of compute environment {} is held back by the \
                         computeReservation of job queue {queue_name} for share identifiers that \
                         are not active yet.",
                        env_name(*env)
                    ),
                }
            }
            Blocked::WaitingForConsumable {
                resource: r,
                quantity,
            } => write!(
                out,
                "Waiting for {quantity} of consumable resource {}; less than that is available \
                 now.",
                resource_name(*r)
            ),
            Blocked::ConsumableMissing { resource: r } => write!(
                out,
                "The job needs consumable resource {}, which does not exist; create it or \
                 cancel the job.",
                resource_name(*r)
            ),
            Blocked::QueueDisabled => write!(
                out,
                "Job queue {queue_name} is DISABLED; enable it to dispatch its jobs."
            ),
            Blocked::NoUsableEnvironment => {
                let names: Vec<&str> = queue
                    .map(|q| q.envs.iter().map(|&e| env_name(e)).collect())
                    .unwrap_or_default();
                if names.is_empty() {
                    write!(
                        out,
                        "Job queue {queue_name} has no compute environment; add one to its \
                         computeEnvironmentOrder."
                    )
                } else {
                    write!(
                        out,
                        "No compute environment of job queue {queue_name} ({}) is ENABLED and \
                         VALID; enable or repair one, or add another to the queue.",
                        names.join(", ")
                    )
                }
            }
        };
        out
    }
}

/// vCPUs from thousandths, without trailing zeros: 2, 0.5, 1.125.
fn vcpus(milli: u64) -> String {
    let (whole, frac) = (milli / 1000, milli % 1000);
    if frac == 0 {
        whole.to_string()
    } else {
        let digits = format!("{frac:03}");
        format!("{whole}.{}", digits.trim_end_matches('0'))
    }
}

fn full(r: &Resources) -> String {
    format!(
        "{} vCPU / {} MiB / {} GPU",
        vcpus(r.milli_vcpus),
        r.memory_mib,
        r.gpus
    )
}

/// GPUs only when asked for, which is the usual case for jobs waiting on a CPU fleet.
fn short(r: &Resources) -> String {
    let mut s = format!("{} vCPU / {} MiB", vcpus(r.milli_vcpus), r.memory_mib);
    if r.gpus > 0 {
        let _ = write!(s, " / {} GPU", r.gpus);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::vcpus;

    #[test]
    fn vcpus_print_without_trailing_zeros() {
        assert_eq!(vcpus(64_000), "64");
        assert_eq!(vcpus(500), "0.5");
        assert_eq!(vcpus(1_125), "1.125");
        assert_eq!(vcpus(250), "0.25");
        assert_eq!(vcpus(0), "0");
    }
}
