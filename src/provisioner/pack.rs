//! One provisioning plan. See [`super::plan`] for the rules; this file is about doing them fast:
//! jobs are grouped by identical need (real demand is a few job definitions times many jobs), an
//! instance is filled group by group rather than job by job, and a fill is repeated for as many
//! instances as its groups last, so the work grows with distinct needs and distinct fills, not
//! with jobs.

use std::collections::{BTreeSet, HashMap};

use super::{
    AllocationStrategy, Catalog, CrType, EnvSpec, JOB_RESOURCE_REQUIREMENT, LaunchRequest,
    Resources, ScalePlan, Slot, Snapshot, WaitCause,
};

/// How much worse, per dollar, a larger instance may be than the best and still be preferred.
const SIZE_TIE: f64 = 0.005;

/// The most distinct needs planned exactly. Each step fills an instance per pool over every
/// group, so the plan costs about steps × pools × groups; past this many groups, needs are
/// rounded up (see [`Packer::coarsen`]) until they are this few again.
pub(super) const MAX_GROUPS: usize = 512;

/// With more live groups than this, a step compares only the pools chosen last time (the best,
/// or the near-best set of a Spot strategy), as long as they stay within [`SIZE_TIE`] of the best
/// score of the last full comparison, and compares every pool again at least every
/// [`STICKY_STEPS`] steps. With few groups comparing every pool is cheap and picks better.
const STICKY_GROUPS: usize = 64;
const STICKY_STEPS: u32 = 32;

/// An allowed type, priced for the environment.
pub(super) struct Pool {
    /// Index into the catalog.
    pub ty: usize,
    pub cap: Resources,
    pub vcpus: u64,
    /// $/h: Spot or on-demand, as the environment buys.
    pub price: f64,
    /// The environment accepts its price (always for EC2; Spot: sold as Spot, within the bid).
    pub eligible: bool,
    /// Not reported as InsufficientInstanceCapacity everywhere the environment may launch.
    pub available: bool,
    /// The environment's subnets where the type is not reported unavailable.
    pub subnets: Vec<String>,
    /// Position in `instanceTypes` of the entry that allows the type: its own name, else its
    /// family, else `optimal`. The priority of the ordered strategies.
    pub rank: usize,
}

/// The environment's allowed types, in catalog order. Types without vCPUs are left out: nothing
/// could run on them.
pub(super) fn pools(
    env: &EnvSpec,
    catalog: &Catalog,
    unavailable: &BTreeSet<(String, Option<String>)>,
) -> Vec<Pool> {
    let spot = env.cr_type == CrType::Spot;
    catalog
        .allowed(&env.instance_types)
        .into_iter()
        .map(|ty| (ty, &catalog.types()[ty]))
        .filter(|(_, t)| t.vcpus > 0)
        .map(|(ty, t)| {
            let eligible = !spot
                || t.spot_price_per_hour.is_some_and(|p| {
                    p * 100.0 <= t.on_demand_price_per_hour * f64::from(env.bid_percentage)
                });
            let everywhere = unavailable.contains(&(t.name.clone(), None));
            let subnets: Vec<String> = env
                .subnets
                .iter()
                .filter(|s| !unavailable.contains(&(t.name.clone(), Some((*s).clone()))))
                .cloned()
                .collect();
            // An explicit size takes its own position and leaves its family's expansion, as
            // AWS documents for BEST_FIT_PROGRESSIVE_ORDERED.
            let entries = &env.instance_types;
            let rank = entries
                .iter()
                .position(|e| *e == t.name)
                .or_else(|| entries.iter().position(|e| *e == t.family))
                .or_else(|| entries.iter().position(|e| e == "optimal"))
                .unwrap_or(entries.len());
            Pool {
                rank,
                ty,
                cap: t.capacity(),
                vcpus: u64::from(t.vcpus),
                price: t.price(spot),
                eligible,
                available: !everywhere && (env.subnets.is_empty() || !subnets.is_empty()),
                subnets,
            }
        })
        .collect()
}

/// Jobs with one identical need.
struct Group {
    need: Resources,
    /// Job indices: ascending, or ascending per exact need once coarsened.
    jobs: Vec<u32>,
    /// How many of `jobs` (from the front) are placed or otherwise settled.
    taken: usize,
    /// What one job is worth at the cheapest unit prices; see [`super::plan`].
    worth: f64,
}

impl Group {
    fn left(&self) -> u64 {
        (self.jobs.len() - self.taken) as u64
    }
}

/// The order jobs are considered in: GPUs first (the scarcest), then the larger of vCPU × 4 GiB
/// and memory, so memory-heavy jobs count as large too. Distinct needs have distinct keys.
fn order_key(n: &Resources) -> (u64, u64, u64, u64) {
    let dominant = (n.milli_vcpus.saturating_mul(4096) / 1000).max(n.memory_mib);
    (n.gpus, dominant, n.milli_vcpus, n.memory_mib)
}

/// How many jobs of need `need` fit in `room`; unbounded for a need of nothing.
fn fits(need: &Resources, room: &Resources) -> u64 {
    let mut k = u64::MAX;
    for (n, r) in [
        (need.milli_vcpus, room.milli_vcpus),
        (need.memory_mib, room.memory_mib),
        (need.gpus, room.gpus),
    ] {
        // A dimension the job does not use does not limit it.
        if let Some(q) = r.checked_div(n) {
            k = k.min(q);
        }
    }
    k
}

/// `x` rounded up to `bits` significant bits after the leading one (exact below 2^(bits+1)).
pub(super) fn round_up(x: u64, bits: u32) -> u64 {
    if x < 1 << (bits + 1) {
        return x;
    }
    let shift = 63 - x.leading_zeros() - bits;
    x.div_ceil(1 << shift).saturating_mul(1 << shift)
}

/// `need × k`, for a `k` that [`fits`] allowed (so it cannot overflow).
fn times(need: &Resources, k: u64) -> Resources {
    Resources {
        milli_vcpus: need.milli_vcpus * k,
        memory_mib: need.memory_mib * k,
        gpus: need.gpus * k,
    }
}

/// The planner's working state.
struct Packer<'a> {
    snap: &'a Snapshot,
    pools: Vec<Pool>,
    groups: Vec<Group>,
    /// Groups with jobs left to cover, in [`order_key`] order, descending.
    live: Vec<usize>,
    /// Per-dimension minimum need over `live`: a room that does not cover it takes nothing.
    live_min: Resources,
    /// Scratch for the proportional fill: jobs taken per group.
    taken: Vec<u64>,
    scratch: Vec<(f64, usize)>,
    plan: ScalePlan,
    /// Per pool: the request in `plan.launch` it launches through, if any yet.
    request_of: Vec<Option<usize>>,
}

pub(super) fn plan(snap: &Snapshot) -> ScalePlan {
    let env = &snap.env;
    let pools = pools(env, &snap.catalog, &snap.unavailable_pools);

    // Group by need: one hash insert per job, then only distinct needs are sorted.
    let mut by_need: HashMap<Resources, Vec<u32>> = HashMap::new();
    for (j, need) in snap.demand.iter().enumerate() {
        by_need.entry(*need).or_default().push(j as u32);
    }
    let mut groups: Vec<Group> = by_need
        .into_iter()
        .map(|(need, jobs)| Group {
            need,
            jobs,
            taken: 0,
            worth: 0.0,
        })
        .collect();
    groups.sort_unstable_by_key(|g| std::cmp::Reverse(order_key(&g.need)));

    let mut p = Packer {
        snap,
        taken: vec![0; groups.len()],
        live: Vec::with_capacity(groups.len()),
        groups,
        live_min: Resources::default(),
        scratch: Vec::new(),
        plan: ScalePlan::default(),
        request_of: vec![None; pools.len()],
        pools,
    };
    p.reject_never_fitting();
    p.coarsen();
    p.refresh_live();

    let used = p.fill_existing();
    let mut total: u64 = snap.fleet.iter().map(|i| p.instance_vcpus(i)).sum();
    p.launch_for_demand(&mut total);
    let kept = p.retire(&used);
    p.launch_for_min(kept, &mut total);

    let Packer { mut plan, .. } = p;
    plan.unplaceable.sort_unstable_by_key(|(j, _)| *j);
    plan.waiting.sort_unstable_by_key(|(j, _)| *j);
    plan
}

impl Packer<'_> {
    /// vCPUs an instance counts for: its type's, or what it has free when the type is unknown.
    fn instance_vcpus(&self, i: &super::Instance) -> u64 {
        match self.snap.catalog.get(&i.instance_type) {
            Some(t) => u64::from(t.vcpus),
            None => i.free.milli_vcpus.div_ceil(1000),
        }
    }

    fn instance_price(&self, i: &super::Instance) -> f64 {
        self.snap
            .catalog
            .get(&i.instance_type)
            .map_or(0.0, |t| t.price(i.spot))
    }

    /// Settles, with AWS's reason, every group no allowed type can hold.
    fn reject_never_fitting(&mut self) {
        let mut most = Resources::default();
        for pool in &self.pools {
            most.milli_vcpus = most.milli_vcpus.max(pool.cap.milli_vcpus);
            most.memory_mib = most.memory_mib.max(pool.cap.memory_mib);
            most.gpus = most.gpus.max(pool.cap.gpus);
        }
        for g in &mut self.groups {
            if self.pools.iter().any(|p| g.need.fits_within(&p.cap)) {
                continue;
            }
            let why = never_fits_reason(&g.need, &most, &self.snap.env, self.pools.is_empty());
            self.plan
                .unplaceable
                .extend(g.jobs.iter().map(|&j| (j as usize, why.clone())));
            g.taken = g.jobs.len();
        }
    }

    /// Past [`MAX_GROUPS`] distinct needs, rounds needs up to fewer significant bits (vCPUs in
    /// quarters, memory in MiB; 5 bits each, then 5 and 4, 4 and 5, 4 each, … down to powers of
    /// two) and merges equal ones, stopping at the first precision that is few enough. Rounding up keeps the plan safe (a job
    /// gets at least what it asked for) at the price of at most 2^-bits over-reservation; a need
    /// that would lose an allowed type by rounding (2.9 GiB rounded past a 3 GiB instance) stays
    /// exact. Jobs already settled as unplaceable stay out.
    fn coarsen(&mut self) {
        let live = self.groups.iter().filter(|g| g.left() > 0).count();
        if live <= MAX_GROUPS {
            return;
        }
        let pools = &self.pools;
        let round = |need: &Resources, (vcpu_bits, memory_bits): (u32, u32)| -> Resources {
            let quarters = round_up(need.milli_vcpus.div_ceil(250), vcpu_bits);
            let rounded = Resources {
                milli_vcpus: quarters.saturating_mul(250),
                memory_mib: round_up(need.memory_mib, memory_bits),
                gpus: need.gpus,
            };
            let loses_a_type = pools
                .iter()
                .any(|p| need.fits_within(&p.cap) && !rounded.fits_within(&p.cap));
            if loses_a_type { *need } else { rounded }
        };
        // From fine to coarse; one dimension a bit coarser than the other before both are.
        let precisions = (0..=5u32)
            .rev()
            .flat_map(|b| [(b + 1, b), (b, b + 1), (b, b)])
            .skip(2);
        let mut merged: HashMap<Resources, Vec<usize>> = HashMap::new();
        for bits in precisions {
            merged.clear();
            for (i, g) in self.groups.iter().enumerate() {
                if g.left() > 0 {
                    merged.entry(round(&g.need, bits)).or_default().push(i);
                }
            }
            if merged.len() <= MAX_GROUPS {
                break;
            }
        }
        let mut old = std::mem::take(&mut self.groups);
        self.groups = merged
            .into_iter()
            .map(|(need, members)| Group {
                need,
                jobs: members
                    .iter()
                    .flat_map(|&i| std::mem::take(&mut old[i].jobs))
                    .collect(),
                taken: 0,
                worth: 0.0,
            })
            .collect();
        self.groups
            .sort_unstable_by_key(|g| std::cmp::Reverse(order_key(&g.need)));
        self.taken = vec![0; self.groups.len()];
    }

    fn refresh_live(&mut self) {
        self.live.clear();
        let mut min = Resources {
            milli_vcpus: u64::MAX,
            memory_mib: u64::MAX,
            gpus: u64::MAX,
        };
        for (i, g) in self.groups.iter().enumerate() {
            if g.left() > 0 {
                self.live.push(i);
                min = min.min(&g.need);
            }
        }
        self.live_min = min;
    }

    /// Fills `room` greedily: each live group in order, as many jobs as still fit. Writes the
    /// fill as (group, jobs) and returns its worth.
    fn fill_greedy(&self, mut room: Resources, fill: &mut Vec<(usize, u64)>) -> f64 {
        fill.clear();
        let mut worth = 0.0;
        if !self.live_min.fits_within(&room) {
            return worth;
        }
        for &g in &self.live {
            let group = &self.groups[g];
            let k = fits(&group.need, &room).min(group.left());
            if k == 0 {
                continue;
            }
            room = room.saturating_sub(&times(&group.need, k));
            fill.push((g, k));
            worth += k as f64 * group.worth;
            if !self.live_min.fits_within(&room) {
                break;
            }
        }
        worth
    }

    /// Fills an empty instance of capacity `cap` with a slice of the remaining demand that it
    /// could hold, in proportion, then tops it up greedily. Largest-first alone packs like jobs
    /// together (three 16 vCPU / 64 GiB jobs fill a c5.24xlarge's memory and waste half its
    /// vCPUs); a proportional slice mixes memory-heavy and CPU-heavy jobs the way the demand
    /// does, so an instance whose shape matches the demand's fills in every dimension.
    fn fill_proportional(&mut self, cap: Resources, fill: &mut Vec<(usize, u64)>) -> f64 {
        let mut demand = [0f64; 3];
        for &g in &self.live {
            let group = &self.groups[g];
            if group.need.fits_within(&cap) {
                let left = group.left() as f64;
                demand[0] += left * group.need.milli_vcpus as f64;
                demand[1] += left * group.need.memory_mib as f64;
                demand[2] += left * group.need.gpus as f64;
            }
        }
        let cap_f = [
            cap.milli_vcpus as f64,
            cap.memory_mib as f64,
            cap.gpus as f64,
        ];
        let lambda = (0..3)
            .filter(|&d| demand[d] > 0.0)
            .map(|d| cap_f[d] / demand[d])
            .fold(f64::INFINITY, f64::min);
        if lambda >= 1.0 {
            // Everything it could hold fits at once: nothing to apportion.
            return self.fill_greedy(cap, fill);
        }

        let mut room = cap;
        self.scratch.clear();
        for &g in &self.live {
            let group = &self.groups[g];
            if !group.need.fits_within(&cap) {
                continue;
            }
            let share = lambda * group.left() as f64;
            // `min(fits)` guards against rounding: the shares add up to at most `cap` exactly.
            let k = (share.floor() as u64).min(fits(&group.need, &room));
            self.taken[g] = k;
            room = room.saturating_sub(&times(&group.need, k));
            self.scratch.push((share - k as f64, g));
        }
        // Largest remainders first (Hamilton's apportionment), then greedy top-up.
        self.scratch
            .sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for &(_, g) in &self.scratch {
            let group = &self.groups[g];
            if self.taken[g] < group.left() && group.need.fits_within(&room) {
                self.taken[g] += 1;
                room = room.saturating_sub(&group.need);
            }
        }
        fill.clear();
        let mut worth = 0.0;
        for &g in &self.live {
            let group = &self.groups[g];
            let share = std::mem::take(&mut self.taken[g]);
            let extra = fits(&group.need, &room).min(group.left() - share);
            room = room.saturating_sub(&times(&group.need, extra));
            if share + extra > 0 {
                fill.push((g, share + extra));
                worth += (share + extra) as f64 * group.worth;
            }
        }
        worth
    }

    /// The better of the two fills of an empty instance of `pool` (ties: greedy).
    fn fill_new(
        &mut self,
        pool: usize,
        fill: &mut Vec<(usize, u64)>,
        alt: &mut Vec<(usize, u64)>,
    ) -> f64 {
        let cap = self.pools[pool].cap;
        let greedy = self.fill_greedy(cap, fill);
        let proportional = self.fill_proportional(cap, alt);
        if proportional > greedy {
            std::mem::swap(fill, alt);
            proportional
        } else {
            greedy
        }
    }

    /// How many times `fill` can be repeated from what is left.
    fn repeats(&self, fill: &[(usize, u64)]) -> u64 {
        fill.iter()
            .map(|&(g, k)| self.groups[g].left() / k)
            .min()
            .unwrap_or(0)
    }

    /// Takes `fill` `reps` times: the jobs of repetition `r` go to `slot(r)`.
    fn take(&mut self, fill: &[(usize, u64)], reps: u64, slot: impl Fn(u64) -> Slot) {
        for r in 0..reps {
            let s = slot(r);
            for &(g, k) in fill {
                let group = &mut self.groups[g];
                let from = group.taken;
                group.taken += k as usize;
                self.plan.placements.extend(
                    group.jobs[from..group.taken]
                        .iter()
                        .map(|&j| (j as usize, s)),
                );
            }
        }
        self.refresh_live();
    }

    /// Settles `fill` × `reps` as waiting.
    fn wait(&mut self, fill: &[(usize, u64)], reps: u64, why: WaitCause) {
        for &(g, k) in fill {
            let group = &mut self.groups[g];
            let from = group.taken;
            group.taken += (k * reps) as usize;
            self.plan.waiting.extend(
                group.jobs[from..group.taken]
                    .iter()
                    .map(|&j| (j as usize, why)),
            );
        }
        self.refresh_live();
    }

    /// Places demand on the free capacity of non-draining instances: busy ones first, then idle
    /// ones from the cheapest. Returns which instances received jobs.
    fn fill_existing(&mut self) -> Vec<bool> {
        let snap = self.snap;
        let fleet = &snap.fleet;
        let mut order: Vec<(bool, f64, usize)> = fleet
            .iter()
            .enumerate()
            .filter(|(_, i)| !i.draining)
            .map(|(n, i)| {
                let idle = i.idle_since_ms.is_some();
                (idle, if idle { self.instance_price(i) } else { 0.0 }, n)
            })
            .collect();
        order.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)).then(a.2.cmp(&b.2)));

        let mut used = vec![false; fleet.len()];
        let mut fill = Vec::new();
        for (_, _, n) in order {
            if self.live.is_empty() {
                break;
            }
            self.fill_greedy(fleet[n].free, &mut fill);
            if !fill.is_empty() {
                used[n] = true;
                self.take(&fill, 1, |_| Slot::Existing(n));
            }
        }
        used
    }

    /// The request `pool` launches through, created on first use.
    fn request(&mut self, pool: usize) -> usize {
        if let Some(r) = self.request_of[pool] {
            return r;
        }
        let p = &self.pools[pool];
        self.plan.launch.push(LaunchRequest {
            instance_type: self.snap.catalog.types()[p.ty].name.clone(),
            count: 0,
            spot: self.snap.env.cr_type == CrType::Spot,
            subnets: p.subnets.clone(),
        });
        let r = self.plan.launch.len() - 1;
        self.request_of[pool] = Some(r);
        r
    }

    /// Launches `reps` instances of `pool`, each holding `fill`.
    fn launch(&mut self, pool: usize, fill: &[(usize, u64)], reps: u64, total: &mut u64) {
        let request = self.request(pool);
        let first = self.plan.launch[request].count;
        self.plan.launch[request].count += reps as u32;
        *total += reps * self.pools[pool].vcpus;
        self.take(fill, reps, |r| Slot::New {
            request,
            instance: first + r as u32,
        });
    }

    /// Packs what existing capacity could not hold into new instances, step by step.
    fn launch_for_demand(&mut self, total: &mut u64) {
        let strategy = self.snap.env.allocation_strategy;
        let (spread, tolerance) = strategy.spread();
        // BEST_FIT waits for its type: unavailable pools stay candidates, and their jobs wait.
        let waits_for_type = strategy == AllocationStrategy::BestFit;
        let candidates: Vec<usize> = (0..self.pools.len())
            .filter(|&p| {
                let pool = &self.pools[p];
                pool.eligible && (pool.available || waits_for_type)
            })
            .collect();
        self.set_worth(&candidates);

        let max = u64::from(self.snap.env.max_vcpus);
        let mut launched = vec![0u64; self.pools.len()];
        let mut remaining_milli: f64 = self
            .live
            .iter()
            .map(|&g| self.groups[g].left() as f64 * self.groups[g].need.milli_vcpus as f64)
            .sum();
        let mut fills: Vec<Vec<(usize, u64)>> = vec![Vec::new(); self.pools.len()];
        let mut alt = Vec::new();
        // (pool, worth per dollar)
        let mut scored: Vec<(usize, f64)> = Vec::with_capacity(candidates.len());

        // (pools, the score they must keep, steps left) while the last choice stands.
        let mut sticky: Option<(Vec<usize>, f64, u32)> = None;

        while !self.live.is_empty() {
            if *total >= max {
                self.wait_all(|_| WaitCause::MaxVcpus);
                return;
            }
            let budget = max - *total;

            // The last choice again, if it still scores as well: a fill per chosen pool instead
            // of one per pool.
            if let Some((mut pools, floor, steps)) = sticky.take()
                && steps > 0
                && self.live.len() > STICKY_GROUPS
                && pools.iter().all(|&p| self.pools[p].vcpus <= budget)
            {
                pools.retain(|&p| {
                    let mut fill = std::mem::take(&mut fills[p]);
                    let worth = self.fill_new(p, &mut fill, &mut alt);
                    let keep = !fill.is_empty() && worth / self.pools[p].price.max(1e-12) >= floor;
                    fills[p] = fill;
                    keep
                });
                if !pools.is_empty() {
                    sticky = Some((pools, floor, steps - 1));
                }
            }
            let (pool, overshoot, near) = if let Some((near, _, _)) = &sticky {
                let pool = *near.iter().min_by_key(|&&p| launched[p]).expect("kept one");
                (pool, false, near.clone())
            } else {
                scored.clear();
                for &p in &candidates {
                    let mut fill = std::mem::take(&mut fills[p]);
                    let worth = self.fill_new(p, &mut fill, &mut alt);
                    if !fill.is_empty() {
                        scored.push((p, worth / self.pools[p].price.max(1e-12)));
                    }
                    fills[p] = fill;
                }
                if scored.is_empty() {
                    let causes: Vec<WaitCause> = self
                        .live
                        .iter()
                        .map(|&g| self.why_no_pool(&self.groups[g].need))
                        .collect();
                    self.wait_all(|n| causes[n]);
                    return;
                }
                // Stay under the cap while some pool that fits under it can take a job;
                // otherwise one instance may go over (AWS's rule).
                let overshoot = !scored.iter().any(|&(p, _)| self.pools[p].vcpus <= budget);
                if !overshoot {
                    scored.retain(|&(p, _)| self.pools[p].vcpus <= budget);
                }
                if strategy.ordered() {
                    // The first entry of `instanceTypes` that can take a waiting job; the rules
                    // below choose within it.
                    let first = scored
                        .iter()
                        .map(|&(p, _)| self.pools[p].rank)
                        .min()
                        .expect("scored is not empty");
                    scored.retain(|&(p, _)| self.pools[p].rank == first);
                }
                // Best worth per dollar first, in tiers of SIZE_TIE below the best; within a
                // tier the largest instance first: equal cost in fewer instances means fewer EC2
                // calls, boots and ECS agents, and less memory lost to each OS. Then catalog
                // order.
                let best = scored.iter().map(|&(_, s)| s).fold(f64::MIN, f64::max);
                let tier = |s: f64| ((best - s) / (best * SIZE_TIE).max(f64::MIN_POSITIVE)) as u64;
                scored.sort_by(|a, b| {
                    tier(a.1)
                        .cmp(&tier(b.1))
                        .then(self.pools[b.0].vcpus.cmp(&self.pools[a.0].vcpus))
                        .then(b.1.total_cmp(&a.1))
                        .then(a.0.cmp(&b.0))
                });
                let near: Vec<usize> = scored
                    .iter()
                    .filter(|&&(_, s)| s >= best * (1.0 - tolerance.max(SIZE_TIE)))
                    .take(spread)
                    .map(|&(p, _)| p)
                    .collect();
                // The least-used of the near-best pools; with one pool, the first.
                let pool = *near
                    .iter()
                    .min_by_key(|&&p| launched[p])
                    .expect("the best pool is near the best");
                if !overshoot {
                    sticky = Some((near.clone(), best * (1.0 - SIZE_TIE), STICKY_STEPS));
                }
                (pool, overshoot, near)
            };
            let fill = std::mem::take(&mut fills[pool]);
            let mut reps = self.repeats(&fill);

            if !self.pools[pool].available {
                self.wait(&fill, reps, WaitCause::CapacityUnavailable);
            } else {
                let vcpus = self.pools[pool].vcpus;
                reps = if overshoot {
                    1
                } else {
                    reps.min(budget / vcpus)
                };
                if near.len() > 1 {
                    // Water-filling: no pool goes past an even share of what the near pools
                    // have launched plus what is left to launch.
                    let so_far: u64 = near.iter().map(|&p| launched[p]).sum();
                    let share = (so_far as f64 + remaining_milli / 1000.0) / near.len() as f64;
                    let room = (share - launched[pool] as f64).max(0.0);
                    reps = reps.min(((room / vcpus as f64).ceil() as u64).max(1));
                }
                let held: f64 = fill
                    .iter()
                    .map(|&(g, k)| k as f64 * self.groups[g].need.milli_vcpus as f64)
                    .sum();
                remaining_milli = (remaining_milli - held * reps as f64).max(0.0);
                launched[pool] += reps * vcpus;
                self.launch(pool, &fill, reps, total);
            }
            fills[pool] = fill;
        }
    }

    /// Sets each group's worth from the cheapest unit prices among `candidates`.
    fn set_worth(&mut self, candidates: &[usize]) {
        let unit = |of: fn(&Resources) -> u64| {
            candidates
                .iter()
                .map(|&p| &self.pools[p])
                .filter(|p| of(&p.cap) > 0)
                .map(|p| p.price / of(&p.cap) as f64)
                .fold(f64::INFINITY, f64::min)
        };
        let per_milli = unit(|r| r.milli_vcpus);
        let per_mib = unit(|r| r.memory_mib);
        let per_gpu = unit(|r| r.gpus);
        for g in &mut self.groups {
            let parts = [
                (g.need.milli_vcpus, per_milli),
                (g.need.memory_mib, per_mib),
                (g.need.gpus, per_gpu),
            ];
            g.worth = parts
                .iter()
                .filter(|(n, price)| *n > 0 && price.is_finite())
                .map(|&(n, price)| n as f64 * price)
                .fold(0.0, f64::max);
        }
    }

    /// Why a job that fits some allowed type has no candidate pool.
    fn why_no_pool(&self, need: &Resources) -> WaitCause {
        if self
            .pools
            .iter()
            .any(|p| p.eligible && need.fits_within(&p.cap))
        {
            WaitCause::CapacityUnavailable
        } else {
            WaitCause::SpotPriceAboveBid
        }
    }

    /// Settles every live job as waiting; `why(n)` is the cause for the `n`-th live group.
    fn wait_all(&mut self, why: impl Fn(usize) -> WaitCause) {
        for (n, &g) in self.live.iter().enumerate() {
            let group = &mut self.groups[g];
            let cause = why(n);
            self.plan.waiting.extend(
                group.jobs[group.taken..]
                    .iter()
                    .map(|&j| (j as usize, cause)),
            );
            group.taken = group.jobs.len();
        }
        self.live.clear();
    }

    /// Retires idle instances past the timeout, most expensive first, down to `min_vcpus`.
    /// Returns the non-draining vCPUs that remain.
    fn retire(&mut self, used: &[bool]) -> u64 {
        let snap = self.snap;
        let mut kept: u64 = snap
            .fleet
            .iter()
            .filter(|i| !i.draining)
            .map(|i| self.instance_vcpus(i))
            .sum();
        let mut idle: Vec<(f64, &str, u64)> = snap
            .fleet
            .iter()
            .zip(used)
            .filter(|(i, used)| !i.draining && !**used)
            .filter_map(|(i, _)| {
                let t = snap.catalog.get(&i.instance_type)?;
                let since = i.idle_since_ms?;
                let timeout = i.idle_timeout_ms.unwrap_or(snap.idle_timeout_ms);
                let idle_long = snap.now_ms.saturating_sub(since) >= timeout;
                (idle_long && i.free == t.capacity())
                    .then(|| (t.price(i.spot), i.id.as_str(), u64::from(t.vcpus)))
            })
            .collect();
        idle.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
        let min = u64::from(snap.env.min_vcpus);
        for (_, id, vcpus) in idle {
            if kept >= min + vcpus {
                kept -= vcpus;
                self.plan.retire.push(id.to_string());
            }
        }
        kept
    }

    /// Tops the fleet up to `min(min_vcpus, max_vcpus)` with the cheapest available pool that
    /// covers the gap (the first in `instanceTypes` for the ordered strategies), within the cap.
    fn launch_for_min(&mut self, kept: u64, total: &mut u64) {
        let env = &self.snap.env;
        let max = u64::from(env.max_vcpus);
        let floor = u64::from(env.min_vcpus.min(env.max_vcpus));
        let have = kept + self.launched_vcpus();
        if have < floor && *total < max {
            let gap = (floor - have).min(max - *total);
            let best = (0..self.pools.len())
                .filter(|&p| self.pools[p].eligible && self.pools[p].available)
                .map(|p| {
                    let n = gap.div_ceil(self.pools[p].vcpus);
                    (p, n, n as f64 * self.pools[p].price)
                })
                .min_by(|a, b| {
                    let rank = |p: usize| {
                        if self.snap.env.allocation_strategy.ordered() {
                            self.pools[p].rank
                        } else {
                            0
                        }
                    };
                    rank(a.0)
                        .cmp(&rank(b.0))
                        .then(a.2.total_cmp(&b.2))
                        .then((a.1 * self.pools[a.0].vcpus).cmp(&(b.1 * self.pools[b.0].vcpus)))
                        .then(a.0.cmp(&b.0))
                });
            if let Some((p, n, _)) = best {
                self.launch(p, &[], n, total);
            }
        }
        self.plan.desired_vcpus = kept + self.launched_vcpus();
    }

    fn launched_vcpus(&self) -> u64 {
        self.plan
            .launch
            .iter()
            .map(|l| {
                let vcpus = self
                    .snap
                    .catalog
                    .get(&l.instance_type)
                    .map_or(0, |t| t.vcpus);
                u64::from(l.count) * u64::from(vcpus)
            })
            .sum()
    }
}

/// AWS's text for a job no allowed type can hold, then what it needs and what the types offer.
fn never_fits_reason(need: &Resources, most: &Resources, env: &EnvSpec, no_types: bool) -> String {
    let head = format!(
        "{JOB_RESOURCE_REQUIREMENT} - The job resource requirement (vCPU/memory/GPU) is higher \
         than that can be met by the CE(s) attached to the job queue."
    );
    let needs = format!(
        "{} vCPU, {} MiB, {} GPU",
        vcpus(need.milli_vcpus),
        need.memory_mib,
        need.gpus
    );
    if no_types {
        format!(
            "{head} It needs {needs}; no instance type in instanceTypes [{}] is known.",
            env.instance_types.join(", ")
        )
    } else {
        format!(
            "{head} It needs {needs}; the allowed instance types offer at most {} vCPU, {} MiB \
             and {} GPU, and none offers all of it.",
            vcpus(most.milli_vcpus),
            most.memory_mib,
            most.gpus
        )
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
