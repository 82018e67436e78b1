//! A deterministic synthetic demand, so benchmarks and tests can plan for 100,000 jobs without a
//! database or a random-number crate.

use super::Resources;
use crate::scheduler::synthetic::Lcg;

/// `jobs` RUNNABLE jobs' needs, the same for the same arguments. The mix: 95% small jobs
/// (1–4 vCPU, 1, 2, 4 or 8 GiB, independently), 4% large ones (16 vCPU, 64 GiB) and 1% GPU jobs
/// (1 GPU with 4 vCPU / 16 GiB, or with 8 vCPU / 32 GiB).
pub fn synthetic_demand(jobs: usize, seed: u64) -> Vec<Resources> {
    let mut rng = Lcg(seed ^ 0x9E37_79B9_7F4A_7C15);
    (0..jobs)
        .map(|_| match rng.below(100) {
            0 => {
                let size = 1 + rng.below(2);
                Resources {
                    milli_vcpus: size * 4_000,
                    memory_mib: size * 16_384,
                    gpus: 1,
                }
            }
            1..=4 => Resources {
                milli_vcpus: 16_000,
                memory_mib: 65_536,
                gpus: 0,
            },
            _ => Resources {
                milli_vcpus: (1 + rng.below(4)) * 1000,
                memory_mib: 1024 << rng.below(4),
                gpus: 0,
            },
        })
        .collect()
}
