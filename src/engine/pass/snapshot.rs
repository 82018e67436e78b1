//! The scheduler's view of the world for one pass: environments with their free capacity,
//! queues (with shadow copies for jobs that must avoid Spot) and a window of waiting jobs.
//! Reads the table and the catalog; changes nothing.

use super::super::config::{EngineConfig, PASS_WINDOW, QUICK_WINDOW};
use super::super::job::{WaitKey, add, sub};
use super::super::table::JobTable;
use crate::batch::{ConsumableUse, consumable_quantities};
use crate::compute::fleet::EnvFleet;
use crate::model::{
    CR_TYPE_LOCAL, Catalog, ComputeEnvironmentDetail, ConsumableResourceType, JobQueueDetail,
    ResourceState, ResourceStatus,
};
use crate::scheduler::{
    ConsumableView, EnvView, FairShareView, JobView, QueueView, Resources, ShareWeight,
};
use std::collections::{HashMap, HashSet};

/// An AWS environment's fleet as the pass saw it, with the room left on each instance.
pub(in crate::engine) struct FleetRoom {
    pub fleet: EnvFleet,
    pub room: Vec<Resources>,
}

/// The environments and queues of a pass, indexed as the scheduler indexes them.
pub(in crate::engine) struct Layout<'c> {
    /// Moved into the scheduler's snapshot once the window is taken.
    pub envs: Vec<EnvView>,
    /// Catalog order of `envs`.
    pub ces: Vec<&'c ComputeEnvironmentDetail>,
    pub queues: Vec<QueueView>,
    pub queue_idx: HashMap<&'c str, usize>,
    /// AWS environments by name.
    pub fleets: HashMap<String, FleetRoom>,
    /// Queue index → its copy without SPOT environments, for jobs that must avoid Spot.
    pub shadow: HashMap<usize, usize>,
    /// Moved into the scheduler's snapshot once the window is taken; the window adds the
    /// resources jobs name that no longer exist.
    pub consumables: Vec<ConsumableView>,
    pub consumable_idx: HashMap<String, usize>,
}

/// The window of waiting jobs a pass considers.
pub(in crate::engine) struct Window<'t> {
    pub ids: Vec<&'t str>,
    /// Moved into the scheduler's snapshot, in the order of `ids`.
    pub views: Vec<JobView>,
    /// Per view, its (queue, share) group; per group, whether jobs were left outside.
    pub view_group: Vec<usize>,
    pub group_cut: Vec<bool>,
    /// How many jobs of each group the window holds at most.
    pub size: usize,
    /// RUNNABLE jobs whose queue no longer exists.
    pub orphans: Vec<String>,
}

/// What a compute environment offers and whether it may take new jobs; for an AWS environment
/// also the fleet it was computed from with the room left on each instance.
pub(in crate::engine) fn env_view(
    ce: &ComputeEnvironmentDetail,
    table: &JobTable,
    cfg: &EngineConfig,
) -> (EnvView, Option<FleetRoom>) {
    let usable = ce.state == ResourceState::Enabled && ce.status == ResourceStatus::Valid;
    if ce.aws_kind().is_some()
        && let Some(fleets) = &cfg.fleet
    {
        let fleet = fleets.env(&ce.compute_environment_name).unwrap_or_default();
        // Capacity that could exist (the largest launchable instance) decides whether a job
        // can ever fit; what is registered now decides what is free.
        let total = fleet
            .instances
            .iter()
            .fold(Resources::default(), |a, i| add(a, i.registered));
        let room: Vec<Resources> = fleet
            .instances
            .iter()
            .map(|i| {
                sub(
                    i.registered,
                    table.used_on_instance(&i.container_instance_arn),
                )
            })
            .collect();
        let free = room.iter().copied().fold(Resources::default(), add);
        let view = EnvView {
            name: ce.compute_environment_name.clone(),
            usable,
            capacity: total.max(&fleet.largest),
            free,
        };
        return (view, Some(FleetRoom { fleet, room }));
    }
    let local = ce
        .compute_resources
        .as_ref()
        .and_then(|c| c.cr_type.as_deref())
        == Some(CR_TYPE_LOCAL);
    let capacity = if local {
        let max = ce
            .compute_resources
            .as_ref()
            .and_then(|c| c.maxv_cpus)
            .unwrap_or(0)
            .max(0) as u64;
        Resources {
            milli_vcpus: max * 1000,
            memory_mib: cfg.host_memory_mib,
            gpus: 0,
        }
    } else {
        Resources::default()
    };
    let view = EnvView {
        name: ce.compute_environment_name.clone(),
        usable: local && usable,
        capacity,
        free: sub(capacity, table.used_on_env(&ce.compute_environment_name)),
    };
    (view, None)
}

/// Whether a pass could place anything: some usable environment has a vCPU free.
pub(in crate::engine) fn has_room(cat: &Catalog, table: &JobTable, cfg: &EngineConfig) -> bool {
    cat.compute_environments.values().any(|ce| {
        let (v, _) = env_view(ce, table, cfg);
        v.usable && v.free.milli_vcpus > 0 && v.free.memory_mib > 0
    })
}

/// Publishes each environment's capacity and use (metrics, CloudWatch) as the pass left them:
/// after its placements, so that a pass that filled the fleet is not reported as idle until
/// the next one, which may not come while nothing changes.
pub(in crate::engine) fn publish_capacity(cat: &Catalog, table: &JobTable, cfg: &EngineConfig) {
    for ce in cat.compute_environments.values() {
        let (view, _) = env_view(ce, table, cfg);
        let used = view.capacity.saturating_sub(&view.free);
        crate::metrics::capacity(
            &view.name,
            [
                view.capacity.milli_vcpus,
                view.capacity.memory_mib,
                view.capacity.gpus,
            ]
            .map(|v| v as i64),
            [used.milli_vcpus, used.memory_mib, used.gpus].map(|v| v as i64),
        );
    }
}

/// Environments and queues of the catalog as the scheduler sees them.
pub(in crate::engine) fn layout<'c>(
    cat: &'c Catalog,
    table: &JobTable,
    cfg: &EngineConfig,
) -> Layout<'c> {
    let mut envs = Vec::new();
    let mut ces = Vec::new();
    let mut env_idx: HashMap<&str, usize> = HashMap::new();
    let mut fleets = HashMap::new();
    for ce in cat.compute_environments.values() {
        env_idx.insert(ce.compute_environment_arn.as_str(), envs.len());
        let (view, fleet) = env_view(ce, table, cfg);
        if let Some(f) = fleet {
            fleets.insert(ce.compute_environment_name.clone(), f);
        }
        envs.push(view);
        ces.push(ce);
    }
    let mut queues = Vec::new();
    let mut queue_idx = HashMap::new();
    for q in cat.queues.values() {
        queue_idx.insert(q.job_queue_arn.as_str(), queues.len());
        queues.push(QueueView {
            name: q.job_queue_name.clone(),
            priority: q.priority,
            enabled: q.state == ResourceState::Enabled,
            envs: q
                .compute_environment_order
                .iter()
                .filter_map(|o| env_idx.get(o.compute_environment.as_str()).copied())
                .collect(),
            fair_share: fair_share_view(cat, q),
        });
    }
    let mut consumables = Vec::with_capacity(cat.consumable_resources.len());
    let mut consumable_idx = HashMap::with_capacity(cat.consumable_resources.len());
    for (name, r) in &cat.consumable_resources {
        let released = match r.resource_type {
            ConsumableResourceType::NonReplenishable => table.consumable_released(name),
            ConsumableResourceType::Replenishable => 0,
        };
        let used = ConsumableUse {
            in_use: table.consumable_in_use(name),
            released,
        };
        let (total, in_use, available) = consumable_quantities(r, used);
        crate::metrics::consumable(name, total, in_use, available);
        consumable_idx.insert(name.clone(), consumables.len());
        consumables.push(ConsumableView {
            name: name.clone(),
            available: u64::try_from(available).unwrap_or(0),
            exists: true,
        });
    }
    Layout {
        envs,
        ces,
        queues,
        queue_idx,
        fleets,
        shadow: HashMap::new(),
        consumables,
        consumable_idx,
    }
}

/// The fair-share policy of queue `q` as the scheduler reads it; `None` for a FIFO queue.
pub(in crate::engine) fn fair_share_view(
    cat: &Catalog,
    q: &JobQueueDetail,
) -> Option<FairShareView> {
    let arn = q.scheduling_policy_arn.as_ref()?;
    let p = cat
        .scheduling_policies
        .values()
        .find(|p| &p.arn == arn)
        .and_then(|p| p.fairshare_policy.clone())
        .unwrap_or_default();
    Some(FairShareView {
        compute_reservation: p.compute_reservation.unwrap_or(0).max(0) as u32,
        weights: p
            .share_distribution
            .unwrap_or_default()
            .into_iter()
            .map(|s| ShareWeight {
                share_identifier: s.share_identifier,
                weight_factor: s.weight_factor.unwrap_or(1.0),
            })
            .collect(),
    })
}

/// The scheduler's index of consumable resource `name`; a resource that no longer exists is
/// added as missing, so that its jobs wait with a reason that names it.
fn consumable_index(layout: &mut Layout<'_>, name: &str) -> usize {
    if let Some(&i) = layout.consumable_idx.get(name) {
        return i;
    }
    let i = layout.consumables.len();
    layout.consumables.push(ConsumableView {
        name: name.to_string(),
        available: 0,
        exists: false,
    });
    layout.consumable_idx.insert(name.to_string(), i);
    i
}

/// How deep into each share a pass looks: the full window on a reason pass, otherwise what
/// the free vCPUs could take.
pub(in crate::engine) fn window_size(layout: &Layout<'_>, with_reasons: bool) -> usize {
    if with_reasons {
        return PASS_WINDOW;
    }
    let free_vcpus: u64 = layout
        .envs
        .iter()
        .filter(|e| e.usable)
        .map(|e| e.free.milli_vcpus.div_ceil(1000))
        .sum();
    (QUICK_WINDOW + 4 * free_vcpus as usize).min(PASS_WINDOW)
}

/// Each (queue, share)'s first `size` RUNNABLE jobs, in pass order. Jobs that must avoid Spot
/// are pointed at a shadow copy of their queue without SPOT environments (same name and
/// priority, so the scheduler orders it right after the original), added to `layout`.
pub(in crate::engine) fn window<'t>(
    table: &'t JobTable,
    layout: &mut Layout<'_>,
    size: usize,
) -> Window<'t> {
    let runnable = table.runnable();
    // Borrowed, not cloned: only the few jobs a pass places or gives a reason need an owned
    // ID afterwards. Sized up front: growing these by doubling was a third of a quick pass.
    let expect = runnable
        .len()
        .min(size.saturating_mul(runnable.by_queue.len()));
    let mut w = Window {
        ids: Vec::with_capacity(expect),
        views: Vec::with_capacity(expect),
        view_group: Vec::with_capacity(expect),
        group_cut: Vec::new(),
        size,
        orphans: Vec::new(),
    };
    let mut avoid_spot = Vec::with_capacity(expect);
    for (queue, members) in &runnable.by_queue {
        let Some(&qi) = layout.queue_idx.get(queue.as_str()) else {
            w.orphans.extend(members.keys().map(|k| k.id.clone()));
            continue;
        };
        let mut from: Option<WaitKey> = None;
        loop {
            let range = match &from {
                None => members.range::<WaitKey, _>(..),
                Some(k) => members.range::<WaitKey, _>(k..),
            };
            let group = w.group_cut.len();
            w.group_cut.push(false);
            let mut share: Option<&str> = None;
            let mut next = None;
            for (taken, (k, job)) in range.enumerate() {
                match share {
                    None => share = Some(k.share.as_str()),
                    Some(s) if s != k.share => {
                        next = Some(k.clone());
                        break;
                    }
                    Some(_) => {}
                }
                if taken == size {
                    w.group_cut[group] = true;
                    next = Some(WaitKey::after_share(&k.share));
                    break;
                }
                w.ids.push(k.id.as_str());
                avoid_spot.push(job.avoid_spot);
                w.view_group.push(group);
                let consumables = job
                    .consumables
                    .iter()
                    .map(|(name, q)| (consumable_index(layout, name), *q))
                    .collect();
                w.views.push(JobView {
                    queue: qi,
                    share: (!k.share.is_empty()).then(|| k.share.clone()),
                    priority: k.priority.0,
                    created_at: k.created_at,
                    need: job.need,
                    consumables,
                });
            }
            match next {
                Some(k) => from = Some(k),
                None => break,
            }
        }
    }
    let spot_envs: HashSet<usize> = layout
        .ces
        .iter()
        .enumerate()
        .filter(|(_, ce)| {
            ce.compute_resources
                .as_ref()
                .and_then(|c| c.cr_type.as_deref())
                == Some("SPOT")
        })
        .map(|(i, _)| i)
        .collect();
    for (view, avoid) in w.views.iter_mut().zip(avoid_spot) {
        if avoid {
            let qi = view.queue;
            let queues = &mut layout.queues;
            let si = *layout.shadow.entry(qi).or_insert_with(|| {
                let mut q = queues[qi].clone();
                q.envs.retain(|e| !spot_envs.contains(e));
                queues.push(q);
                queues.len() - 1
            });
            view.queue = si;
        }
    }
    w
}
