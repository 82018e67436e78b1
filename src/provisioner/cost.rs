//! What a plan costs, and what any plan for a demand must cost at least, for benchmarks.

use std::collections::BTreeSet;

use super::pack::pools;
use super::{Catalog, EnvSpec, Resources, ScalePlan};

/// The hourly price of what `plan` launches: Spot requests at the Spot price (on-demand when the
/// catalog has none), others at on-demand. Types missing from the catalog cost nothing.
pub fn cost_per_hour(plan: &ScalePlan, catalog: &Catalog) -> f64 {
    plan.launch
        .iter()
        .filter_map(|l| {
            let t = catalog.get(&l.instance_type)?;
            Some(f64::from(l.count) * t.price(l.spot))
        })
        .sum()
}

/// A lower bound on the hourly cost of running `demand` in an environment like `env`:
///
/// ```text
/// max( Σ vCPU × min over types (price / vCPUs),
///      Σ MiB  × min over types (price / MiB),
///      Σ GPU  × min over types with GPUs (price / GPUs) )
/// ```
///
/// over the types `env` may buy (its allowed types; for SPOT, at Spot prices and within
/// `bidPercentage`) and the jobs that fit one of them. Each term alone bounds the cost, since
/// every instance bought supplies its vCPUs, memory and GPUs at no less than the cheapest unit
/// price; the bound ignores that one type cannot be cheapest in every dimension and that jobs do
/// not divide, so even a perfect packing usually costs a little more.
pub fn lower_bound_cost(demand: &[Resources], catalog: &Catalog, env: &EnvSpec) -> f64 {
    let pools: Vec<_> = pools(env, catalog, &BTreeSet::new())
        .into_iter()
        .filter(|p| p.eligible)
        .collect();
    let mut total = [0f64; 3];
    for need in demand {
        if pools.iter().any(|p| need.fits_within(&p.cap)) {
            total[0] += need.milli_vcpus as f64 / 1000.0;
            total[1] += need.memory_mib as f64;
            total[2] += need.gpus as f64;
        }
    }
    let unit = |of: fn(&Resources) -> u64| {
        pools
            .iter()
            .filter(|p| of(&p.cap) > 0)
            .map(|p| p.price / of(&p.cap) as f64)
            .fold(f64::INFINITY, f64::min)
    };
    let per_unit = [
        unit(|r| r.milli_vcpus) * 1000.0,
        unit(|r| r.memory_mib),
        unit(|r| r.gpus),
    ];
    (0..3)
        .filter(|&d| total[d] > 0.0 && per_unit[d].is_finite())
        .map(|d| total[d] * per_unit[d])
        .fold(0.0, f64::max)
}
