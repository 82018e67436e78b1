//! The provisioner: pure planning over a snapshot (no I/O, no clock), so it can be property-tested
//! and benchmarked at 100,000 jobs.
//!
//! Given one managed compute environment ([`EnvSpec`]), its current fleet, the RUNNABLE demand of
//! the queues that use it and an instance catalog, [`plan`] decides which EC2 or Spot instances to
//! launch and which idle ones to retire. A compute driver turns the [`ScalePlan`] into
//! `CreateFleet` / `TerminateInstances` calls and reports InsufficientInstanceCapacity back through
//! [`Snapshot::unavailable_pools`] for the next round.

use std::collections::BTreeSet;

use crate::model::ComputeResource;
pub use crate::scheduler::Resources;

mod catalog;
mod cost;
mod pack;
mod synthetic;
#[cfg(test)]
mod tests;

pub use catalog::{Catalog, InstanceType, builtin_catalog, graviton_family};
pub use cost::{cost_per_hour, lower_bound_cost};
pub use synthetic::synthetic_demand;

/// The leading code of every [`ScalePlan::unplaceable`] reason, as AWS Batch writes it.
pub const JOB_RESOURCE_REQUIREMENT: &str = "MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT";

/// `computeResources.type`. Fargate environments have no instances to plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrType {
    Ec2,
    Spot,
}

/// `computeResources.allocationStrategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocationStrategy {
    /// The cheapest fitting type; when it is unavailable, its jobs wait for it.
    BestFit,
    /// The cheapest fitting type, falling through to the next when a pool is unavailable.
    BestFitProgressive,
    /// `instanceTypes` in the order listed: the first entry with an available type that holds
    /// a waiting job wins, and within a family entry (or `optimal`) BEST_FIT_PROGRESSIVE
    /// chooses the size. On-demand (EC2) only.
    BestFitProgressiveOrdered,
    /// Spread over up to [`SPOT_CAPACITY_OPTIMIZED_POOLS`] pools within
    /// [`SPOT_CAPACITY_OPTIMIZED_TOLERANCE`] of the cheapest.
    SpotCapacityOptimized,
    /// Spread over up to [`SPOT_PRICE_CAPACITY_OPTIMIZED_POOLS`] pools within
    /// [`SPOT_PRICE_CAPACITY_OPTIMIZED_TOLERANCE`] of the cheapest.
    SpotPriceCapacityOptimized,
    /// `instanceTypes` in the order listed as priority, like [`Self::BestFitProgressiveOrdered`],
    /// with [`Self::SpotCapacityOptimized`]'s spread within an entry. SPOT only.
    SpotCapacityOptimizedPrioritized,
}

/// We cannot see EC2's spare capacity per pool, so "capacity optimized" becomes "spread wide":
/// an interruption then takes out a quarter of the fleet, not all of it, for at most 25% more per
/// unit of work than the cheapest pool.
pub const SPOT_CAPACITY_OPTIMIZED_POOLS: usize = 4;
pub const SPOT_CAPACITY_OPTIMIZED_TOLERANCE: f64 = 0.25;
/// "Price capacity optimized" weighs price first: fewer pools, and only near-cheapest ones.
pub const SPOT_PRICE_CAPACITY_OPTIMIZED_POOLS: usize = 3;
pub const SPOT_PRICE_CAPACITY_OPTIMIZED_TOLERANCE: f64 = 0.10;

impl AllocationStrategy {
    pub fn parse(s: &str) -> Option<AllocationStrategy> {
        Some(match s {
            "BEST_FIT" => AllocationStrategy::BestFit,
            "BEST_FIT_PROGRESSIVE" => AllocationStrategy::BestFitProgressive,
            "BEST_FIT_PROGRESSIVE_ORDERED" => AllocationStrategy::BestFitProgressiveOrdered,
            "SPOT_CAPACITY_OPTIMIZED" => AllocationStrategy::SpotCapacityOptimized,
            "SPOT_PRICE_CAPACITY_OPTIMIZED" => AllocationStrategy::SpotPriceCapacityOptimized,
            "SPOT_CAPACITY_OPTIMIZED_PRIORITIZED" => {
                AllocationStrategy::SpotCapacityOptimizedPrioritized
            }
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AllocationStrategy::BestFit => "BEST_FIT",
            AllocationStrategy::BestFitProgressive => "BEST_FIT_PROGRESSIVE",
            AllocationStrategy::BestFitProgressiveOrdered => "BEST_FIT_PROGRESSIVE_ORDERED",
            AllocationStrategy::SpotCapacityOptimized => "SPOT_CAPACITY_OPTIMIZED",
            AllocationStrategy::SpotPriceCapacityOptimized => "SPOT_PRICE_CAPACITY_OPTIMIZED",
            AllocationStrategy::SpotCapacityOptimizedPrioritized => {
                "SPOT_CAPACITY_OPTIMIZED_PRIORITIZED"
            }
        }
    }

    /// Whether `instanceTypes` is a priority list rather than a set.
    pub fn ordered(self) -> bool {
        matches!(
            self,
            AllocationStrategy::BestFitProgressiveOrdered
                | AllocationStrategy::SpotCapacityOptimizedPrioritized
        )
    }

    /// (pools to spread over, tolerated extra cost per unit of work over the cheapest pool).
    fn spread(self) -> (usize, f64) {
        match self {
            AllocationStrategy::BestFit
            | AllocationStrategy::BestFitProgressive
            | AllocationStrategy::BestFitProgressiveOrdered => (1, 0.0),
            AllocationStrategy::SpotCapacityOptimized
            | AllocationStrategy::SpotCapacityOptimizedPrioritized => (
                SPOT_CAPACITY_OPTIMIZED_POOLS,
                SPOT_CAPACITY_OPTIMIZED_TOLERANCE,
            ),
            AllocationStrategy::SpotPriceCapacityOptimized => (
                SPOT_PRICE_CAPACITY_OPTIMIZED_POOLS,
                SPOT_PRICE_CAPACITY_OPTIMIZED_TOLERANCE,
            ),
        }
    }
}

/// The planning-relevant part of a managed environment's `computeResources`.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvSpec {
    pub cr_type: CrType,
    pub min_vcpus: u32,
    pub max_vcpus: u32,
    /// Reported, not planned on: AWS moves `desiredvCpus` between min and max with demand, and
    /// [`ScalePlan::desired_vcpus`] is that answer. Treating the input as a floor would undo every
    /// scale-down (a caller that wants a one-off pre-warm passes it as `min_vcpus` for a round).
    pub desired_vcpus: u32,
    /// Sizes (`c5.large`), families (`c5`) or `optimal`.
    pub instance_types: Vec<String>,
    pub allocation_strategy: AllocationStrategy,
    /// Spot only: the highest Spot price accepted, as a percentage of the on-demand price.
    pub bid_percentage: u32,
    /// Where instances may go. Empty: the driver's default; only type-wide unavailability counts.
    pub subnets: Vec<String>,
}

impl EnvSpec {
    /// From the API shape, with AWS's defaults (BEST_FIT, bid 100%, min 0, desired = min). `None`
    /// for Fargate or a missing type: there is nothing to provision.
    pub fn from_compute_resource(cr: &ComputeResource) -> Option<EnvSpec> {
        let cr_type = match cr.cr_type.as_deref()? {
            "EC2" => CrType::Ec2,
            "SPOT" => CrType::Spot,
            _ => return None,
        };
        let nonneg = |v: Option<i32>| v.map_or(0, |v| v.max(0) as u32);
        let min_vcpus = nonneg(cr.minv_cpus);
        Some(EnvSpec {
            cr_type,
            min_vcpus,
            max_vcpus: nonneg(cr.maxv_cpus),
            desired_vcpus: cr.desiredv_cpus.map_or(min_vcpus, |v| v.max(0) as u32),
            instance_types: cr.instance_types.clone().unwrap_or_default(),
            allocation_strategy: cr
                .allocation_strategy
                .as_deref()
                .and_then(AllocationStrategy::parse)
                .unwrap_or(AllocationStrategy::BestFit),
            bid_percentage: cr.bid_percentage.map_or(100, |v| v.clamp(0, 100) as u32),
            subnets: cr.subnets.clone().unwrap_or_default(),
        })
    }
}

/// One instance of the environment's fleet, as the compute driver last saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub id: String,
    /// A catalog name. An instance of a type missing from the catalog still offers its `free`
    /// and counts (rounded up) toward the vCPU totals, but is never retired: without its capacity
    /// the planner cannot tell that it is idle.
    pub instance_type: String,
    pub spot: bool,
    /// What running jobs leave free.
    pub free: Resources,
    /// When its last job ended, if none runs now.
    pub idle_since_ms: Option<i64>,
    /// How long it may stay idle before it is retired, when not the snapshot's
    /// `idle_timeout_ms`: the environment's `scalingPolicy.minScaleDownDelayMinutes`, which
    /// applies to an instance once it has run a job.
    pub idle_timeout_ms: Option<i64>,
    /// Being drained (scale-in or a Spot interruption notice): takes no new work, and does not
    /// count toward `minvCpus` since it is about to go.
    pub draining: bool,
}

/// Everything [`plan`] looks at.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub env: EnvSpec,
    pub catalog: Catalog,
    pub fleet: Vec<Instance>,
    /// What each RUNNABLE job of the queues that use the environment needs; each must fit on one
    /// instance. Indices into this vector identify jobs in the plan.
    pub demand: Vec<Resources>,
    pub now_ms: i64,
    pub idle_timeout_ms: i64,
    /// (instance type, subnet) pools that recently returned InsufficientInstanceCapacity. A `None`
    /// subnet means every subnet.
    pub unavailable_pools: BTreeSet<(String, Option<String>)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LaunchRequest {
    pub instance_type: String,
    pub count: u32,
    pub spot: bool,
    /// The environment's subnets minus those where this type is unavailable; empty when the
    /// environment names none.
    pub subnets: Vec<String>,
}

/// Where the plan expects a job to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// An index into [`Snapshot::fleet`].
    Existing(usize),
    /// The `instance`-th (from 0) instance of [`ScalePlan::launch`]`[request]`.
    New { request: usize, instance: u32 },
}

/// Why a job that fits an allowed type is not covered this round. It stays RUNNABLE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitCause {
    /// The fleet has reached `maxvCpus`.
    MaxVcpus,
    /// Every allowed type that could hold it is unavailable (or, with BEST_FIT, the one chosen
    /// for it is).
    CapacityUnavailable,
    /// Spot: no allowed type that could hold it has a Spot price within `bidPercentage`.
    SpotPriceAboveBid,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScalePlan {
    /// One request per (type, spot), in the order the plan first chose each type.
    pub launch: Vec<LaunchRequest>,
    /// Instance ids to drain, deregister and terminate.
    pub retire: Vec<String>,
    /// Jobs that fit no allowed type, ever, with AWS's `MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT`
    /// reason. Ascending job index.
    pub unplaceable: Vec<(usize, String)>,
    /// Jobs that fit but wait for a later round. Ascending job index.
    pub waiting: Vec<(usize, WaitCause)>,
    /// The packing that justifies the launches: every job neither unplaceable nor waiting, once.
    /// A forecast; the scheduler places the jobs for real once instances register.
    pub placements: Vec<(usize, Slot)>,
    /// Non-draining vCPUs after the plan (what `desiredvCpus` reports).
    pub desired_vcpus: u64,
}

/// Decides what to launch and retire. Pure and deterministic: the same snapshot gives the same
/// plan.
///
/// The rules, exactly:
/// - Allowed types: the catalog types named by `instance_types` (a size by name, a family by its
///   prefix before the `.`, `optimal` = every c, m and r family of the catalog). Price: on-demand
///   for EC2; for SPOT the Spot price, and types without one or priced above `bid_percentage`% of
///   on-demand are skipped. Pools: a type is unavailable when `(type, None)` is listed, or when the
///   environment has subnets and `(type, Some(subnet))` is listed for each.
/// - A job that fits no allowed type (known to the catalog) in every dimension is unplaceable,
///   with a `MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT - …` reason. Jobs are grouped by identical
///   need, largest first: GPUs, then the larger of vCPU × 4 GiB and memory (the m-family ratio),
///   then vCPU, then memory.
/// - Existing capacity first: busy non-draining instances in fleet order, then idle ones from the
///   cheapest up (so expensive idle ones stay free to retire). Each is filled greedily: every job
///   group in order, as many of its jobs as still fit.
/// - Then new instances, one step at a time: every candidate pool is filled as an empty instance
///   would be (greedily as above, or with a proportional slice of the remaining demand topped up
///   greedily, whichever is worth more), and scored by the worth of what it holds per dollar. A
///   job's worth is the largest of vCPU × the cheapest candidate price per vCPU, memory × the
///   cheapest per MiB, and GPUs × the cheapest per GPU. Pools rank by score in tiers 0.5% wide,
///   and by most vCPUs within a tier (equal cost in fewer instances). BEST_FIT and
///   BEST_FIT_PROGRESSIVE launch the first pool; the Spot strategies take the first pools within
///   their tolerance of the best (up to their pool count) and launch the one with the fewest
///   vCPUs launched so far, for at most an even share of what they have launched plus what is
///   left. The chosen fill repeats as long as its jobs last. Candidates: available pools; with
///   BEST_FIT also unavailable ones, whose jobs then wait (BEST_FIT waits for its type).
/// - Ordered strategies (BEST_FIT_PROGRESSIVE_ORDERED, SPOT_CAPACITY_OPTIMIZED_PRIORITIZED): each
///   allowed type gets the position in `instance_types` of the entry that names it (its own name
///   first, else its family, else `optimal`). Each step keeps only the candidate pools of the
///   lowest position among those whose fill is not empty (after the `maxvCpus` preference
///   below), then chooses among them by the rules above; `minvCpus` top-ups take the lowest
///   position first, then the cheapest.
/// - Scale: past 512 distinct needs, needs are rounded up to fewer significant bits (vCPUs in
///   quarters, memory in MiB) until at most 512 remain; a need that would lose an allowed type
///   stays exact. Placements stay valid (each job gets at least its need); instances may be
///   over-bought by up to the rounding. With more than 64 needs, a step may keep the last step's
///   pools while they score within 0.5% of the last full comparison (at most 32 steps).
/// - `maxvCpus`: every fleet instance counts, draining or not. An instance is launched only while
///   the total is below `max_vcpus`, so the plan overshoots by less than one instance. Pools whose
///   instance fits in what is left below the cap are preferred; only when none of them can take
///   a waiting job does one larger instance go over.
/// - Retirement: non-draining instances of a known type, with no running job (`free` = capacity),
///   idle for at least `idle_timeout_ms`, that received no job in this plan, most expensive first
///   (then id), each as long as the non-draining vCPUs stay at or above `min_vcpus`.
/// - `minvCpus`: when non-draining vCPUs after the plan are below `min(min_vcpus, max_vcpus)`, the
///   cheapest available pool covering the gap (fewest vCPUs on ties) is launched, within the cap.
pub fn plan(snapshot: &Snapshot) -> ScalePlan {
    pack::plan(snapshot)
}

/// Expands counted demand (need, jobs) into [`Snapshot::demand`]. A backlog of one need (one
/// job definition's shape: the 100,000-job case) keeps only as many jobs as could matter to one
/// round: what the fleet's free vCPUs plus `max_vcpus` and one instance of overshoot can hold,
/// times twice the strategy's spread plus one (so that the Spot strategies' even shares across
/// their near-best pools, which look at what is left, still see more than the budget). The jobs left out would wait on
/// `MaxVcpus` either way, so the plan is the same (the tests check it against the whole
/// backlog). Several needs are expanded whole: the packer fills instances with the mix of
/// needs in proportion, and a cut per need would change that mix.
pub fn capped_demand(
    env: &EnvSpec,
    catalog: &Catalog,
    fleet: &[Instance],
    counts: &[(Resources, u64)],
) -> Vec<Resources> {
    let expand = |need: Resources, n: u64| std::iter::repeat_n(need, n as usize);
    let [(need, n)] = counts else {
        return counts
            .iter()
            .flat_map(|&(need, n)| expand(need, n))
            .collect();
    };
    let free_milli: u64 = fleet
        .iter()
        .filter(|i| !i.draining)
        .map(|i| i.free.milli_vcpus)
        .sum();
    let largest_milli = catalog
        .types()
        .iter()
        .map(|t| u64::from(t.vcpus) * 1000)
        .max()
        .unwrap_or(0);
    let spread = env.allocation_strategy.spread().0 as u64;
    let room = free_milli
        .saturating_add(u64::from(env.max_vcpus).saturating_mul(1000))
        .saturating_add(largest_milli)
        .saturating_mul(2 * (spread + 1));
    let cap = match room.checked_div(need.milli_vcpus) {
        Some(c) => c.saturating_add(1),
        None => *n,
    };
    expand(*need, (*n).min(cap)).collect()
}
