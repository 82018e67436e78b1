//! The instance types a managed environment may launch, with their capacity and prices: built
//! in, then refreshed from DescribeInstanceTypes and DescribeSpotPriceHistory.

use super::AwsDriver;
use crate::provisioner;
use aws_sdk_ec2::types as ec2t;
use std::collections::HashMap;

impl AwsDriver {
    pub fn catalog(&self) -> provisioner::Catalog {
        self.catalog.read().map(|c| c.clone()).unwrap_or_default()
    }

    /// Replaces the built-in capacities and Spot prices with what the region reports. Types the
    /// region does not know keep their built-in figures; on-demand prices stay built in (the
    /// EC2 API has none).
    pub(super) async fn refresh_catalog(&self) {
        let mut types = self.catalog().types().to_vec();
        let names: Vec<String> = types.iter().map(|t| t.name.clone()).collect();
        let mut shape: HashMap<String, (u32, u64, u32, bool)> = HashMap::new();
        let mut spot: HashMap<String, f64> = HashMap::new();
        for chunk in names.chunks(100) {
            let r = self
                .api
                .call(
                    "ec2",
                    "DescribeInstanceTypes",
                    self.api
                        .ec2
                        .describe_instance_types()
                        .set_instance_types(Some(
                            chunk
                                .iter()
                                .map(|n| ec2t::InstanceType::from(n.as_str()))
                                .collect(),
                        ))
                        .send(),
                )
                .await;
            match r {
                Ok(out) => {
                    for it in out.instance_types() {
                        let Some(name) = it.instance_type().map(|t| t.as_str().to_string()) else {
                            continue;
                        };
                        let vcpus = it
                            .v_cpu_info()
                            .and_then(|v| v.default_v_cpus())
                            .unwrap_or(0);
                        let mem = it.memory_info().and_then(|m| m.size_in_mib()).unwrap_or(0);
                        let gpus: i32 = it
                            .gpu_info()
                            .map(|g| g.gpus().iter().filter_map(|d| d.count()).sum())
                            .unwrap_or(0);
                        let arm64 = it.processor_info().is_some_and(|p| {
                            p.supported_architectures()
                                .contains(&ec2t::ArchitectureType::Arm64)
                        });
                        if vcpus > 0 && mem > 0 {
                            shape.insert(
                                name,
                                (vcpus as u32, mem as u64, gpus.max(0) as u32, arm64),
                            );
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "describe instance types failed; keeping built-in shapes")
                }
            }
            let r = self
                .api
                .call(
                    "ec2",
                    "DescribeSpotPriceHistory",
                    self.api
                        .ec2
                        .describe_spot_price_history()
                        .set_instance_types(Some(
                            chunk
                                .iter()
                                .map(|n| ec2t::InstanceType::from(n.as_str()))
                                .collect(),
                        ))
                        .product_descriptions("Linux/UNIX")
                        .start_time(aws_sdk_ec2::primitives::DateTime::from(
                            std::time::SystemTime::now(),
                        ))
                        .send(),
                )
                .await;
            match r {
                Ok(out) => {
                    for p in out.spot_price_history() {
                        let (Some(t), Some(price)) = (
                            p.instance_type().map(|t| t.as_str().to_string()),
                            p.spot_price().and_then(|v| v.parse::<f64>().ok()),
                        ) else {
                            continue;
                        };
                        // The cheapest Availability Zone's price: CreateFleet may use any.
                        let e = spot.entry(t).or_insert(price);
                        *e = e.min(price);
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "spot price history failed; keeping built-in prices")
                }
            }
        }
        for t in &mut types {
            if let Some(&(v, m, g, arm64)) = shape.get(&t.name) {
                t.vcpus = v;
                t.memory_mib = m;
                t.gpus = g;
                t.arm64 = arm64;
            }
            if let Some(&p) = spot.get(&t.name) {
                t.spot_price_per_hour = Some(p);
            }
        }
        tracing::info!(
            shapes = shape.len(),
            spot_prices = spot.len(),
            "instance catalog refreshed"
        );
        if let Ok(mut c) = self.catalog.write() {
            *c = provisioner::Catalog::new(types);
        }
    }
}
