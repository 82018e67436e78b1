//! provision: the provisioner's plans and their cost against the lower bound.

use super::*;

/// A provisioner plan for `jobs` RUNNABLE jobs over the built-in catalog: plan time, and the
/// plan's hourly cost against a lower bound (total demanded vCPU and memory at the cheapest
/// per-unit prices of the allowed types, see `provisioner::lower_bound_cost`).
pub fn provision(jobs: usize) -> Vec<Figure> {
    use crate::provisioner::{
        self, AllocationStrategy, CrType, EnvSpec, Snapshot, builtin_catalog, cost_per_hour,
        lower_bound_cost, synthetic_demand,
    };
    const S: &str = "provision";
    let catalog = builtin_catalog();
    let all_types = catalog.types().len();
    let mut figures = Vec::new();
    // `optimal` is what AWS Batch users usually pick; all types shows how loose the bound gets
    // when it may pair one type's price per vCPU with another's price per GiB.
    for (label, types) in [
        ("optimal", vec!["optimal".to_string()]),
        (
            "all types",
            catalog.types().iter().map(|t| t.name.clone()).collect(),
        ),
    ] {
        let env = EnvSpec {
            cr_type: CrType::Ec2,
            min_vcpus: 0,
            max_vcpus: u32::MAX / 2,
            desired_vcpus: 0,
            instance_types: types,
            allocation_strategy: AllocationStrategy::BestFit,
            bid_percentage: 100,
            subnets: Vec::new(),
        };
        let snapshot = Snapshot {
            env: env.clone(),
            catalog: catalog.clone(),
            fleet: Vec::new(),
            demand: synthetic_demand(jobs, 7),
            now_ms: 0,
            idle_timeout_ms: 300_000,
            unavailable_pools: Default::default(),
        };
        let mut times = Vec::new();
        let mut plan = provisioner::plan(&snapshot);
        for _ in 0..5 {
            let t = Instant::now();
            plan = provisioner::plan(&snapshot);
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        let cost = cost_per_hour(&plan, &catalog);
        let bound = lower_bound_cost(&snapshot.demand, &catalog, &env);
        figures.push(
            Figure::new(
                S,
                format!("plan time, {jobs} jobs, {label} ({all_types} in catalog)"),
                times[2],
                "ms",
            )
            .target(PROVISION_PLAN, jobs),
        );
        figures.push(
            Figure::new(S, format!("cost / lower bound, {label}"), cost / bound.max(f64::MIN_POSITIVE), "x")
                .target(PROVISION_COST, jobs)
                .bound(format!(
                    "${cost:.0}/h for {} instances vs ${bound:.0}/h bound; jobs no allowed type fits: {}{}",
                    plan.launch.iter().map(|l| l.count as u64).sum::<u64>(),
                    plan.unplaceable.len(),
                    if label == "optimal" {
                        ""
                    } else {
                        "; the bound pairs one type's price per vCPU (t3) with another's per GiB (r5), which no instance offers"
                    }
                )),
        );
    }
    figures
}
