//! A job as the engine holds it, and what a scheduling pass needs of a waiting one.

use crate::model::JobDetail;
use crate::scheduler::Resources;
use std::cmp::Reverse;

/// An unfinished job (or a finished one not yet written) in the engine's memory.
pub(super) struct Job {
    pub d: JobDetail,
    /// (parent id, index) for array children.
    pub parent: Option<(String, i32)>,
    /// Dependencies not yet SUCCEEDED.
    pub unmet: usize,
    /// For array parents: children not yet finished, and how many failed.
    pub children_left: i64,
    pub children_failed: i64,
    /// What one attempt holds while STARTING or RUNNING.
    pub need: Resources,
    /// (consumable resource name, quantity) an attempt holds while STARTING or RUNNING.
    pub consumables: Vec<(String, u64)>,
    /// `attempts.len()` when the current attempt took its consumable resources: an attempt
    /// that leaves no record (it never started) consumes nothing.
    pub attempts_at_hold: usize,
    /// When SIGKILL is due after a SIGTERM (epoch ms).
    pub kill_at: Option<i64>,
}

impl Job {
    pub fn new(d: JobDetail, parent: Option<(String, i32)>) -> Job {
        let children_left = if parent.is_none() {
            array_size(&d).map_or(0, i64::from)
        } else {
            0
        };
        Job {
            need: job_need(&d),
            consumables: consumables_of(&d),
            attempts_at_hold: d.attempts.len(),
            children_left,
            children_failed: 0,
            unmet: 0,
            kill_at: None,
            parent,
            d,
        }
    }

    /// An array job's parent: it never runs, its children do.
    pub fn is_parent(&self) -> bool {
        self.parent.is_none() && array_size(&self.d).is_some()
    }

    /// The number of the attempt that runs next, or runs now (1-based).
    pub fn attempt_no(&self) -> u32 {
        self.d.attempts.len() as u32 + 1
    }

    pub fn stopped_by_user(&self) -> bool {
        self.d.is_terminated == Some(true) || self.d.is_cancelled == Some(true)
    }

    /// Marks the job cancelled (CancelJob, a time limit) or terminated (TerminateJob).
    pub fn mark_stopped(&mut self, terminate: bool) {
        if terminate {
            self.d.is_terminated = Some(true);
        } else {
            self.d.is_cancelled = Some(true);
        }
    }
}

/// What `consumableResourceProperties` asks for, by resource name.
pub(super) fn consumables_of(d: &JobDetail) -> Vec<(String, u64)> {
    d.consumable_resource_properties
        .iter()
        .flat_map(|p| p.needs())
        .map(|(n, q)| (n.to_string(), q))
        .collect()
}

/// `arrayProperties.size` of an array job's parent (children carry an index instead).
pub(super) fn array_size(d: &JobDetail) -> Option<i32> {
    d.array_properties.as_ref().and_then(|a| a.size)
}

/// The jobs `d` waits for by itself: its dependencies without a type. An array's `N_TO_N` and
/// `SEQUENTIAL` dependencies are already wired into its children's own `dependsOn`.
pub(super) fn plain_dependencies(d: &JobDetail) -> impl Iterator<Item = &str> {
    d.depends_on
        .iter()
        .flatten()
        .filter(|dep| dep.kind().is_none())
        .filter_map(|dep| dep.job_id.as_deref())
}

/// What a job asks for: `resourceRequirements`, else the legacy `vcpus`/`memory`; 1 vCPU by default.
pub fn job_need(d: &JobDetail) -> Resources {
    let mut r = Resources {
        milli_vcpus: 1000,
        memory_mib: 0,
        gpus: 0,
    };
    if let Some(c) = &d.container {
        let p = &c.properties;
        if let Some(v) = p.vcpus {
            r.milli_vcpus = (v.max(0) as u64) * 1000;
        }
        if let Some(m) = p.memory {
            r.memory_mib = m.max(0) as u64;
        }
        for req in p.resource_requirements.iter().flatten() {
            match req.rtype.as_str() {
                "VCPU" => {
                    if let Ok(v) = req.value.parse::<f64>() {
                        r.milli_vcpus = (v * 1000.0).round().max(0.0) as u64;
                    }
                }
                "MEMORY" => {
                    if let Ok(m) = req.value.parse::<u64>() {
                        r.memory_mib = m;
                    }
                }
                "GPU" => {
                    if let Ok(g) = req.value.parse::<u64>() {
                        r.gpus = g;
                    }
                }
                _ => {}
            }
        }
    }
    r
}

pub(super) fn add(a: Resources, b: Resources) -> Resources {
    Resources {
        milli_vcpus: a.milli_vcpus + b.milli_vcpus,
        memory_mib: a.memory_mib + b.memory_mib,
        gpus: a.gpus + b.gpus,
    }
}

pub(super) fn sub(a: Resources, b: Resources) -> Resources {
    a.saturating_sub(&b)
}

/// Where a RUNNABLE job stands in its queue: by share identifier, then (fair-share jobs)
/// higher `schedulingPriority` first, then submission time and ID. This is the order in which a
/// pass considers a share's jobs, so a pass can take each share's first jobs without looking at
/// the rest. None of it changes while the job waits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct WaitKey {
    pub share: String,
    pub priority: Reverse<i32>,
    pub created_at: i64,
    pub id: String,
}

impl WaitKey {
    pub fn of(job: &Job) -> WaitKey {
        let share = job.d.share_identifier.clone();
        WaitKey {
            // A FIFO queue's jobs carry no share and are taken in submission order alone.
            priority: Reverse(if share.is_some() {
                job.d.scheduling_priority.unwrap_or(0)
            } else {
                0
            }),
            share: share.unwrap_or_default(),
            created_at: job.d.created_at,
            id: job.d.job_id.clone(),
        }
    }

    /// The first key of the share after `share`.
    pub fn after_share(share: &str) -> WaitKey {
        WaitKey {
            share: format!("{share}\0"),
            priority: Reverse(i32::MAX),
            created_at: i64::MIN,
            id: String::new(),
        }
    }
}

/// What a scheduling pass needs of a RUNNABLE job besides its [`WaitKey`], copied once when it
/// becomes RUNNABLE so a pass never looks up full documents.
pub(super) struct Waiting {
    /// Interrupted too often on Spot: only non-SPOT environments of the queue.
    pub avoid_spot: bool,
    pub need: Resources,
    pub consumables: Vec<(String, u64)>,
}
