//! A plan turned into decisions: which job starts where (best fit on an AWS instance), which
//! waiting job gets which reason, what the AWS driver should provision for. Reads the table;
//! changes nothing: [`super::super::Engine::schedule`] applies the outcome.

use super::super::job::{WaitKey, sub};
use super::super::launch::Start;
use super::super::table::JobTable;
use super::snapshot::{Layout, Window};
use crate::compute::Target;
use crate::compute::fleet::NeedCounts;
use crate::model::AwsKind;
use crate::scheduler::{Plan, Resources, Snapshot};
use std::collections::HashMap;

/// What one pass decided.
#[must_use]
pub(in crate::engine) struct PassOutcome {
    pub starts: Vec<Start>,
    /// Waiting jobs whose `statusReason` changes: (job ID, reason).
    pub reasons: Vec<(String, String)>,
    /// Per queue ARN, why its head waits; only from a pass that gave reasons.
    pub heads: Option<HashMap<String, String>>,
    /// Per AWS environment, the needs of the jobs that wait for it, counted; `None` without a
    /// driver.
    pub demand: Option<HashMap<String, NeedCounts>>,
    /// RUNNABLE jobs whose queue was deleted.
    pub orphans: Vec<String>,
    /// Pass again soon: jobs may be left that fit, or reasons are due.
    pub again: bool,
}

/// Everything a pass looked at, for [`decide`].
pub(in crate::engine) struct Seen<'a, 't, 'c> {
    pub plan: &'a Plan,
    pub snapshot: &'a Snapshot,
    pub window: &'a Window<'t>,
    pub layout: &'a mut Layout<'c>,
    pub table: &'t JobTable,
    pub with_reasons: bool,
    pub aws: bool,
}

pub(in crate::engine) fn decide(seen: Seen<'_, '_, '_>) -> PassOutcome {
    let Seen {
        plan,
        snapshot,
        window,
        layout,
        table,
        with_reasons,
        aws,
    } = seen;
    let ids = &window.ids;
    // A share whose whole window was placed may have more jobs that fit: pass again at once
    // rather than at the next event.
    let mut placed_per_group = vec![0usize; window.group_cut.len()];
    for &(ji, _) in &plan.placements {
        placed_per_group[window.view_group[ji]] += 1;
    }
    let mut again = placed_per_group
        .iter()
        .zip(&window.group_cut)
        .any(|(&n, &cut)| cut && n >= window.size);
    let mut heads: HashMap<String, String> = HashMap::new();
    let mut reasons = Vec::new();
    for (ji, reason) in &plan.blocked {
        let text = reason.reason(snapshot, *ji);
        let Some(job) = table.get(ids[*ji]) else {
            continue;
        };
        heads
            .entry(job.d.job_queue.clone())
            .or_insert_with(|| text.clone());
        if job.d.status_reason.as_deref() != Some(text.as_str()) {
            reasons.push((ids[*ji].to_string(), text));
        }
    }
    let mut demand = aws.then(|| backlog_demand(plan, snapshot, window, layout, table));
    let mut starts = Vec::with_capacity(plan.placements.len());
    for &(ji, ei) in &plan.placements {
        let id = ids[ji];
        let env = snapshot.envs[ei].name.clone();
        let queue = snapshot.queues[snapshot.jobs[ji].queue].name.clone();
        let mut host = None;
        let target = match layout.fleets.get_mut(&env) {
            None => Target::Local,
            Some(f) => {
                let need = snapshot.jobs[ji].need;
                // Best fit: the instance the job leaves least room on, so that whole
                // instances stay free to be retired.
                let best = f
                    .room
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| need.fits_within(r))
                    .min_by_key(|(i, r)| (r.milli_vcpus - need.milli_vcpus, *i))
                    .map(|(i, _)| i);
                let Some(i) = best else {
                    // The environment has the room in total but no one instance has it:
                    // the job is demand again.
                    if let Some(d) = demand.as_mut() {
                        *d.entry(env.clone()).or_default().entry(need).or_default() += 1;
                    }
                    let text = format!(
                        "RESOURCE:WAITING_FOR_INSTANCE - no instance of {env} has {} vCPU and {} MiB free on its own",
                        need.milli_vcpus as f64 / 1000.0,
                        need.memory_mib
                    );
                    if table
                        .get(id)
                        .is_some_and(|j| j.d.status_reason.as_deref() != Some(text.as_str()))
                    {
                        reasons.push((id.to_string(), text));
                    }
                    continue;
                };
                f.room[i] = sub(f.room[i], need);
                host = attempt_host(&f.fleet.instances[i], need);
                Target::Ecs {
                    env: env.clone(),
                    cluster: f.fleet.cluster.clone(),
                    container_instance_arn: f.fleet.instances[i].container_instance_arn.clone(),
                }
            }
        };
        starts.push(Start {
            job_id: id.to_string(),
            env,
            queue,
            target,
            host,
        });
    }
    if !with_reasons && plan.placements.len() < snapshot.jobs.len() {
        // Jobs still wait: their reasons are due within REASONS_EVERY_MS.
        again = true;
    }
    PassOutcome {
        starts,
        reasons,
        heads: with_reasons.then_some(heads),
        demand: demand.map(sorted),
        orphans: window.orphans.clone(),
        again,
    }
}

/// Demand for the provisioner: every waiting job the plan did not place, not only the pass's
/// window, since the provisioner sizes the fleet for the whole backlog. Each counts once, for
/// the first ENABLED and VALID managed AWS environment of its queue, so that two environments
/// of one queue never scale for the same job. Read from the table's counts by need, minus the
/// pass's placements: the work grows with distinct needs and placements, not with the backlog.
fn backlog_demand(
    plan: &Plan,
    snapshot: &Snapshot,
    window: &Window<'_>,
    layout: &Layout<'_>,
    table: &JobTable,
) -> HashMap<String, HashMap<Resources, u64>> {
    let runnable = table.runnable();
    let mut placed: HashMap<(&str, Resources, bool), u64> = HashMap::new();
    for &(ji, _) in &plan.placements {
        let Some(job) = table.get(window.ids[ji]) else {
            continue;
        };
        let queue = job.d.job_queue.as_str();
        if let Some(w) = runnable
            .by_queue
            .get(queue)
            .and_then(|m| m.get(&WaitKey::of(job)))
        {
            *placed.entry((queue, w.need, w.avoid_spot)).or_default() += 1;
        }
    }
    let target = |qi: usize| {
        let q = &snapshot.queues[qi];
        if !q.enabled {
            return None;
        }
        q.envs
            .iter()
            .find(|&&e| {
                snapshot.envs[e].usable && layout.ces[e].aws_kind() == Some(AwsKind::Managed)
            })
            .copied()
    };
    let mut by_env: HashMap<String, HashMap<Resources, u64>> = HashMap::new();
    for (queue, counts) in &runnable.needs {
        let Some(&qi) = layout.queue_idx.get(queue.as_str()) else {
            continue;
        };
        let shadow = layout.shadow.get(&qi).copied();
        let (plain, avoiding) = (target(qi), shadow.and_then(target));
        for (&(need, avoid_spot), &n) in counts {
            let env = if avoid_spot { avoiding } else { plain };
            let left = n.saturating_sub(
                placed
                    .get(&(queue.as_str(), need, avoid_spot))
                    .copied()
                    .unwrap_or(0),
            );
            if let Some(e) = env
                && left > 0
            {
                *by_env
                    .entry(snapshot.envs[e].name.clone())
                    .or_default()
                    .entry(need)
                    .or_default() += left;
            }
        }
    }
    by_env
}

/// The demand as published: each environment's needs in a fixed order (vCPUs, memory, GPUs), so
/// that equal demand compares equal whatever the hash order.
fn sorted(by_env: HashMap<String, HashMap<Resources, u64>>) -> HashMap<String, NeedCounts> {
    by_env
        .into_iter()
        .map(|(env, needs)| {
            let mut counts: NeedCounts = needs.into_iter().collect();
            counts.sort_unstable_by_key(|(n, _)| (n.milli_vcpus, n.memory_mib, n.gpus));
            (env, counts)
        })
        .collect()
}

/// The instance an attempt needing `need` is placed on, priced, and the attempt's share of it:
/// the largest of its vCPU, memory and GPU fractions of what the instance registered, at most
/// the whole instance. `None` for an instance without a price (UNMANAGED).
fn attempt_host(
    instance: &crate::compute::fleet::FleetInstance,
    need: Resources,
) -> Option<crate::model::AttemptCost> {
    let price = instance.price.as_ref()?;
    let reg = instance.registered;
    let frac = |n: u64, of: u64| if of == 0 { 0.0 } else { n as f64 / of as f64 };
    let share = frac(need.milli_vcpus, reg.milli_vcpus)
        .max(frac(need.memory_mib, reg.memory_mib))
        .max(frac(need.gpus, reg.gpus))
        .min(1.0);
    Some(crate::model::AttemptCost {
        instance_id: instance.instance_id.clone(),
        instance_type: price.instance_type.clone(),
        purchase_option: if price.spot { "SPOT" } else { "ON_DEMAND" }.to_string(),
        price_per_hour: price.per_hour,
        share,
        cost: None,
    })
}
