//! Instance types and their prices: what `DescribeInstanceTypes` and `DescribeSpotPriceHistory`
//! answer, cached by the compute driver, plus a built-in us-east-1 catalog for tests and
//! benchmarks.

use std::collections::HashMap;

use super::Resources;

#[derive(Debug, Clone, PartialEq)]
pub struct InstanceType {
    /// `c5.large`.
    pub name: String,
    /// `c5`.
    pub family: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub gpus: u32,
    /// An AWS Graviton (arm64) type: it boots the arm64 image of its image type.
    pub arm64: bool,
    pub on_demand_price_per_hour: f64,
    /// The current Spot price of the pool, if the type is sold as Spot.
    pub spot_price_per_hour: Option<f64>,
}

impl InstanceType {
    /// What an empty instance offers a job.
    pub fn capacity(&self) -> Resources {
        Resources {
            milli_vcpus: u64::from(self.vcpus) * 1000,
            memory_mib: self.memory_mib,
            gpus: u64::from(self.gpus),
        }
    }

    /// The hourly price as on-demand or as Spot; Spot without a Spot price falls back to
    /// on-demand (the most a Spot request may be charged).
    pub fn price(&self, spot: bool) -> f64 {
        match (spot, self.spot_price_per_hour) {
            (true, Some(p)) => p,
            _ => self.on_demand_price_per_hour,
        }
    }

    /// The c, m and r families (`c5`, `m6i`, `r6i`, not `g4dn` or `t3`): what `optimal` means.
    /// The catalog is built from DescribeInstanceTypes with `current-generation=true`, so these
    /// are current generation.
    fn is_optimal(&self) -> bool {
        // AWS Batch's `optimal` is x86: Graviton families (m6g, c7g) need an arm64 image.
        if self.arm64 {
            return false;
        }
        let mut chars = self.family.chars();
        matches!(chars.next(), Some('c' | 'm' | 'r'))
            && chars.next().is_some_and(|c| c.is_ascii_digit())
    }
}

/// The instance types known in a region, looked up by name.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    types: Vec<InstanceType>,
    by_name: HashMap<String, usize>,
}

impl Catalog {
    /// A later duplicate name is ignored: the first entry wins.
    pub fn new(types: Vec<InstanceType>) -> Catalog {
        let mut by_name = HashMap::with_capacity(types.len());
        let mut kept = Vec::with_capacity(types.len());
        for t in types {
            if !by_name.contains_key(&t.name) {
                by_name.insert(t.name.clone(), kept.len());
                kept.push(t);
            }
        }
        Catalog {
            types: kept,
            by_name,
        }
    }

    pub fn types(&self) -> &[InstanceType] {
        &self.types
    }

    pub fn len(&self) -> usize {
        self.types.len()
    }

    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&InstanceType> {
        self.index_of(name).map(|i| &self.types[i])
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// Indices, ascending, of the types an `instanceTypes` list allows: an exact name, every size
    /// of a named family, or `optimal`. Names the catalog does not know allow nothing.
    pub fn allowed(&self, instance_types: &[String]) -> Vec<usize> {
        let optimal = instance_types.iter().any(|e| e == "optimal");
        self.types
            .iter()
            .enumerate()
            .filter(|(_, t)| {
                (optimal && t.is_optimal())
                    || instance_types
                        .iter()
                        .any(|e| *e == t.name || *e == t.family)
            })
            .map(|(i, _)| i)
            .collect()
    }
}

/// 54 common us-east-1 types with their real vCPU, memory and GPU counts. Prices are approximate
/// list prices for us-east-1 Linux on-demand, and Spot is set at 30–40% of on-demand (varying by
/// family and size, as real pools do); they are for tests and benchmarks only. Production builds
/// its catalog from DescribeInstanceTypes and DescribeSpotPriceHistory.
pub fn builtin_catalog() -> Catalog {
    // (name, vCPUs, memory GiB, GPUs, on-demand $/h)
    const TYPES: &[(&str, u32, f64, u32, f64)] = &[
        ("c5.large", 2, 4.0, 0, 0.085),
        ("c5.xlarge", 4, 8.0, 0, 0.17),
        ("c5.2xlarge", 8, 16.0, 0, 0.34),
        ("c5.4xlarge", 16, 32.0, 0, 0.68),
        ("c5.9xlarge", 36, 72.0, 0, 1.53),
        ("c5.12xlarge", 48, 96.0, 0, 2.04),
        ("c5.24xlarge", 96, 192.0, 0, 4.08),
        ("c6i.large", 2, 4.0, 0, 0.085),
        ("c6i.xlarge", 4, 8.0, 0, 0.17),
        ("c6i.2xlarge", 8, 16.0, 0, 0.34),
        ("c6i.4xlarge", 16, 32.0, 0, 0.68),
        ("c6i.12xlarge", 48, 96.0, 0, 2.04),
        ("c6i.24xlarge", 96, 192.0, 0, 4.08),
        ("m5.large", 2, 8.0, 0, 0.096),
        ("m5.xlarge", 4, 16.0, 0, 0.192),
        ("m5.2xlarge", 8, 32.0, 0, 0.384),
        ("m5.4xlarge", 16, 64.0, 0, 0.768),
        ("m5.12xlarge", 48, 192.0, 0, 2.304),
        ("m5.24xlarge", 96, 384.0, 0, 4.608),
        ("m6i.large", 2, 8.0, 0, 0.096),
        ("m6i.xlarge", 4, 16.0, 0, 0.192),
        ("m6i.2xlarge", 8, 32.0, 0, 0.384),
        ("m6i.4xlarge", 16, 64.0, 0, 0.768),
        ("m6i.12xlarge", 48, 192.0, 0, 2.304),
        ("m6i.24xlarge", 96, 384.0, 0, 4.608),
        ("r5.large", 2, 16.0, 0, 0.126),
        ("r5.xlarge", 4, 32.0, 0, 0.252),
        ("r5.2xlarge", 8, 64.0, 0, 0.504),
        ("r5.4xlarge", 16, 128.0, 0, 1.008),
        ("r5.12xlarge", 48, 384.0, 0, 3.024),
        ("r5.24xlarge", 96, 768.0, 0, 6.048),
        ("r6i.large", 2, 16.0, 0, 0.126),
        ("r6i.xlarge", 4, 32.0, 0, 0.252),
        ("r6i.2xlarge", 8, 64.0, 0, 0.504),
        ("r6i.4xlarge", 16, 128.0, 0, 1.008),
        ("r6i.12xlarge", 48, 384.0, 0, 3.024),
        ("r6i.24xlarge", 96, 768.0, 0, 6.048),
        ("g4dn.xlarge", 4, 16.0, 1, 0.526),
        ("g4dn.2xlarge", 8, 32.0, 1, 0.752),
        ("g4dn.4xlarge", 16, 64.0, 1, 1.204),
        ("g4dn.12xlarge", 48, 192.0, 4, 3.912),
        ("p3.2xlarge", 8, 61.0, 1, 3.06),
        ("p3.8xlarge", 32, 244.0, 4, 12.24),
        ("p3.16xlarge", 64, 488.0, 8, 24.48),
        ("t3.micro", 2, 1.0, 0, 0.0104),
        ("t3.small", 2, 2.0, 0, 0.0208),
        ("t3.medium", 2, 4.0, 0, 0.0416),
        ("t3.large", 2, 8.0, 0, 0.0832),
        ("t3.xlarge", 4, 16.0, 0, 0.1664),
        ("t3.2xlarge", 8, 32.0, 0, 0.3328),
        ("m6g.large", 2, 8.0, 0, 0.077),
        ("m6g.xlarge", 4, 16.0, 0, 0.154),
        ("c7g.large", 2, 4.0, 0, 0.0725),
        ("c7g.xlarge", 4, 8.0, 0, 0.145),
    ];
    // Spot discount by family, nudged by size so that pools of one family differ a little.
    const SPOT_BASE: &[(&str, f64)] = &[
        ("c5", 0.36),
        ("c6i", 0.34),
        ("m5", 0.33),
        ("m6i", 0.35),
        ("r5", 0.31),
        ("r6i", 0.32),
        ("g4dn", 0.30),
        ("p3", 0.30),
        ("t3", 0.33),
        ("m6g", 0.33),
        ("c7g", 0.34),
    ];
    Catalog::new(
        TYPES
            .iter()
            .enumerate()
            .map(|(i, &(name, vcpus, gib, gpus, price))| {
                let family = name.split('.').next().unwrap_or(name);
                let base = SPOT_BASE
                    .iter()
                    .find(|(f, _)| *f == family)
                    .map_or(0.35, |(_, b)| *b);
                let spot = base + 0.01 * (i % 4) as f64;
                InstanceType {
                    name: name.into(),
                    family: family.into(),
                    vcpus,
                    memory_mib: (gib * 1024.0) as u64,
                    gpus,
                    arm64: graviton_family(family),
                    on_demand_price_per_hour: price,
                    // Whole hundredths of a cent, as the Spot price history quotes them.
                    spot_price_per_hour: Some((price * spot * 10_000.0).round() / 10_000.0),
                }
            })
            .collect(),
    )
}

/// Whether an instance family is AWS Graviton (arm64), by its name: the generation digit is
/// followed by a `g` among the attribute letters (`m6g`, `c7gn`, `r6gd`, `t4g`, `x2gd`, `g5g`),
/// which no x86 family has (`g4dn`'s `g` is its series). The catalog refresh replaces this with
/// DescribeInstanceTypes' processor architectures.
pub fn graviton_family(family: &str) -> bool {
    let Some(digit) = family.find(|c: char| c.is_ascii_digit()) else {
        return false;
    };
    family[digit..]
        .trim_start_matches(|c: char| c.is_ascii_digit())
        .contains('g')
}
