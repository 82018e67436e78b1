//! A deterministic synthetic workload, so benchmarks and tests can plan over 100,000 jobs without
//! a database or a random-number crate.

use std::collections::HashMap;

use super::{EnvView, FairShareView, JobView, QueueView, Resources, ShareWeight, Snapshot};

/// Knuth's MMIX LCG; the high bits are the good ones. Shared with the provisioner's generator.
pub(crate) struct Lcg(pub(crate) u64);

impl Lcg {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// `jobs` RUNNABLE jobs over `queues` queues and `envs` environments, the same for the same
/// arguments. Environments are all usable and partly busy; every third queue uses fair share
/// (with a 10% computeReservation and a wildcard weight); about one job in a thousand asks for more
/// than any environment offers; needs range from 0.25 to 16 vCPUs.
pub fn synthetic_snapshot(jobs: usize, queues: usize, envs: usize, seed: u64) -> Snapshot {
    let mut rng = Lcg(seed ^ 0x9E37_79B9_7F4A_7C15);
    let envs_v: Vec<EnvView> = (0..envs)
        .map(|i| {
            let capacity = Resources {
                milli_vcpus: (128 << (i % 3)) * 1000,
                memory_mib: (512 << (i % 3)) * 1024,
                gpus: if i % 3 == 2 { 8 } else { 0 },
            };
            // 40–100% of the capacity is free.
            let pct = 40 + rng.below(61);
            let free = Resources {
                milli_vcpus: capacity.milli_vcpus * pct / 100,
                memory_mib: capacity.memory_mib * pct / 100,
                gpus: capacity.gpus * pct / 100,
            };
            EnvView {
                name: format!("ce-{i}"),
                usable: true,
                capacity,
                free,
            }
        })
        .collect();

    let mut share_usage = HashMap::new();
    let queues_v: Vec<QueueView> = (0..queues)
        .map(|q| {
            let count = if envs == 0 { 0 } else { 1 + q % envs.min(3) };
            let first = if envs == 0 { 0 } else { q % envs };
            let fair_share = (q % 3 == 2).then(|| {
                for s in 0..8 {
                    if rng.below(2) == 0 {
                        share_usage.insert((q, format!("team-{s}")), rng.below(5_000) as f64);
                    }
                }
                FairShareView {
                    compute_reservation: 10,
                    weights: vec![
                        ShareWeight {
                            share_identifier: "team-0".into(),
                            weight_factor: 0.5,
                        },
                        ShareWeight {
                            share_identifier: "team-1*".into(),
                            weight_factor: 0.25,
                        },
                    ],
                }
            });
            QueueView {
                name: format!("queue-{q}"),
                priority: (rng.below(5) * 10) as i32,
                enabled: true,
                envs: (0..count).map(|k| (first + k) % envs).collect(),
                fair_share,
            }
        })
        .collect();

    const VCPUS: [u64; 7] = [250, 500, 1_000, 2_000, 4_000, 8_000, 16_000];
    let jobs_v: Vec<JobView> = (0..jobs)
        .map(|i| {
            let queue = rng.below(queues as u64) as usize;
            let milli_vcpus = if rng.below(1000) == 0 {
                4_096_000
            } else {
                VCPUS[rng.below(VCPUS.len() as u64) as usize]
            };
            JobView {
                queue,
                share: (queue % 3 == 2).then(|| format!("team-{}", rng.below(8))),
                priority: rng.below(4) as i32,
                // Mostly in submission order, with ties.
                created_at: 1_700_000_000_000 + (i as i64 / 4) * 10 + rng.below(3) as i64,
                need: Resources {
                    milli_vcpus,
                    memory_mib: 512 << rng.below(6),
                    gpus: u64::from(rng.below(50) == 0),
                },
                consumables: Vec::new(),
            }
        })
        .collect();

    Snapshot {
        consumables: Vec::new(),
        envs: envs_v,
        queues: queues_v,
        jobs: jobs_v,
        share_usage,
    }
}
