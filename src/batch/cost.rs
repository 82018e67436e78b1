//! The cost report (`GET /cost`, `flotilla cost`): what the jobs of a time range cost and what
//! the fleet cost, from the attempt usage the engine stores as attempts end, the instance ledger
//! the AWS driver keeps, and the attempts running now.
//!
//! Every figure is a price × hours product clipped to the range, so a report over two adjacent
//! ranges sums to the report over both. The fleet's bill is its instances' hours × price; idle is
//! the bill less the jobs' cost: boot time, empty instances and the part of busy instances no
//! job's share covers.

use super::Batch;
use crate::error::BatchResult;
use crate::model::{JobDetail, JobStatus};
use crate::store::CostGroup;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CostReport {
    /// Epoch milliseconds; the range is `[from, to)`.
    pub from: i64,
    pub to: i64,
    /// Dollars, summed over `groups`.
    pub job_cost: f64,
    /// Dollars: every instance's hours in the range × its price.
    pub fleet_cost: f64,
    /// `fleet_cost − job_cost`.
    pub idle_cost: f64,
    /// Per queue, share identifier, job definition and environment.
    pub groups: Vec<CostGroup>,
    pub environments: Vec<EnvironmentCost>,
    pub instances: Vec<InstanceCost>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentCost {
    pub compute_environment: String,
    pub fleet_cost: f64,
    pub job_cost: f64,
    pub idle_cost: f64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceCost {
    pub instance_id: String,
    pub compute_environment: String,
    pub instance_type: String,
    /// `SPOT` or `ON_DEMAND`.
    pub purchase_option: String,
    pub price_per_hour: f64,
    pub launched_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub terminated_at: Option<i64>,
    /// Seconds in the range.
    pub seconds: f64,
    pub cost: f64,
}

fn overlap_ms(start: i64, end: i64, from: i64, to: i64) -> i64 {
    (end.min(to) - start.max(from)).max(0)
}

impl Batch {
    /// The report for `[from, to)` as of `now` (running attempts and instances count up to it).
    pub async fn cost_report(&self, from: i64, to: i64, now: i64) -> BatchResult<CostReport> {
        let store = self.store();
        let mut groups: BTreeMap<(String, Option<String>, String, String), CostGroup> =
            BTreeMap::new();
        for g in store.attempt_cost_between(from, to).await? {
            let key = (
                g.job_queue.clone(),
                g.share_identifier.clone(),
                g.job_definition.clone(),
                g.compute_environment.clone(),
            );
            groups.insert(key, g);
        }
        // Running attempts are in no usage row yet: each counts from its start up to now.
        let end = to.min(now);
        for row in store
            .jobs_with_status(&[JobStatus::Running.as_str()])
            .await?
        {
            let Ok(job) = serde_json::from_str::<JobDetail>(&row.doc) else {
                continue;
            };
            let (Some(host), Some(started)) = (&job.internal.host, job.started_at) else {
                continue;
            };
            let ms = overlap_ms(started, end, from, to);
            if ms == 0 {
                continue;
            }
            let env = job.internal.compute_environment.clone().unwrap_or_default();
            let key = (
                job.job_queue.clone(),
                job.share_identifier.clone(),
                job.job_definition.clone(),
                env.clone(),
            );
            let g = groups.entry(key).or_insert_with(|| CostGroup {
                job_queue: job.job_queue.clone(),
                share_identifier: job.share_identifier.clone(),
                job_definition: job.job_definition.clone(),
                compute_environment: env,
                attempts: 0,
                cost: 0.0,
                seconds: 0.0,
            });
            g.attempts += 1;
            g.seconds += ms as f64 / 1000.0;
            g.cost += host.price_per_hour * host.share * ms as f64 / 3_600_000.0;
        }
        let mut envs: BTreeMap<String, EnvironmentCost> = BTreeMap::new();
        fn env<'a>(
            envs: &'a mut BTreeMap<String, EnvironmentCost>,
            name: &str,
        ) -> &'a mut EnvironmentCost {
            envs.entry(name.to_string())
                .or_insert_with(|| EnvironmentCost {
                    compute_environment: name.to_string(),
                    fleet_cost: 0.0,
                    job_cost: 0.0,
                    idle_cost: 0.0,
                })
        }
        let mut instances = Vec::new();
        for i in store.instances_between(from, to).await? {
            let ms = overlap_ms(i.launched_at, i.terminated_at.unwrap_or(now), from, end);
            let cost = i.price_per_hour * ms as f64 / 3_600_000.0;
            env(&mut envs, &i.compute_environment).fleet_cost += cost;
            instances.push(InstanceCost {
                instance_id: i.instance_id,
                compute_environment: i.compute_environment,
                instance_type: i.instance_type,
                purchase_option: if i.spot { "SPOT" } else { "ON_DEMAND" }.to_string(),
                price_per_hour: i.price_per_hour,
                launched_at: i.launched_at,
                terminated_at: i.terminated_at,
                seconds: ms as f64 / 1000.0,
                cost,
            });
        }
        let groups: Vec<CostGroup> = groups.into_values().collect();
        for g in &groups {
            env(&mut envs, &g.compute_environment).job_cost += g.cost;
        }
        let mut environments: Vec<EnvironmentCost> = envs.into_values().collect();
        for e in &mut environments {
            e.idle_cost = e.fleet_cost - e.job_cost;
        }
        let job_cost = groups.iter().map(|g| g.cost).sum();
        let fleet_cost = instances.iter().map(|i| i.cost).sum();
        Ok(CostReport {
            from,
            to,
            job_cost,
            fleet_cost,
            idle_cost: fleet_cost - job_cost,
            groups,
            environments,
            instances,
        })
    }
}
