//! What an environment has: its EC2 instances (by tag) joined with its cluster's container
//! instances.

use super::{AwsDriver, AwsError, Observed, TAG_ENV_UUID, TAG_GENERATION};
use crate::provisioner::Resources;
use aws_sdk_ec2::types as ec2t;
use aws_sdk_ecs::types as ecst;
use std::collections::HashMap;

fn resources(cpu_units: i64, memory_mib: i64, gpus: i64) -> Resources {
    Resources {
        milli_vcpus: (cpu_units.max(0) as u64) * 1000 / 1024,
        memory_mib: memory_mib.max(0) as u64,
        gpus: gpus.max(0) as u64,
    }
}

impl AwsDriver {
    /// The environment's instances (managed: by tag, pending or running) joined with the
    /// cluster's container instances. Unmanaged: the container instances alone.
    pub(super) async fn observe(
        &self,
        cluster: &str,
        uuid: Option<&str>,
    ) -> Result<Vec<Observed>, AwsError> {
        let mut cis = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .api
                .call(
                    "ecs",
                    "ListContainerInstances",
                    self.api
                        .ecs
                        .list_container_instances()
                        .cluster(cluster)
                        .set_next_token(token.take())
                        .send(),
                )
                .await?;
            let arns = out.container_instance_arns().to_vec();
            for chunk in arns.chunks(100) {
                let d = self
                    .api
                    .call(
                        "ecs",
                        "DescribeContainerInstances",
                        self.api
                            .ecs
                            .describe_container_instances()
                            .cluster(cluster)
                            .set_container_instances(Some(chunk.to_vec()))
                            .send(),
                    )
                    .await?;
                cis.extend(d.container_instances().iter().cloned());
            }
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        let registered = |ci: &ecst::ContainerInstance| {
            let (mut cpu, mut mem, mut gpu) = (0, 0, 0);
            for r in ci.registered_resources() {
                match r.name() {
                    Some("CPU") => cpu = i64::from(r.integer_value()),
                    Some("MEMORY") => mem = i64::from(r.integer_value()),
                    Some("GPU") => gpu = r.string_set_value().len() as i64,
                    _ => {}
                }
            }
            resources(cpu, mem, gpu)
        };
        let Some(uuid) = uuid else {
            return Ok(cis
                .iter()
                .filter(|ci| ci.status() != Some("INACTIVE"))
                .map(|ci| Observed {
                    instance_id: ci.ec2_instance_id().unwrap_or_default().to_string(),
                    instance_type: String::new(),
                    spot: false,
                    container_instance_arn: ci.container_instance_arn().map(str::to_string),
                    registered: Some(registered(ci)),
                    ci_status: ci.status().map(str::to_string),
                    generation: None,
                    launched_at: None,
                })
                .collect());
        };
        let instances = self
            .describe_instances(vec![
                ec2t::Filter::builder()
                    .name(format!("tag:{TAG_ENV_UUID}"))
                    .values(uuid)
                    .build(),
                ec2t::Filter::builder()
                    .name("instance-state-name")
                    .values("pending")
                    .values("running")
                    .build(),
            ])
            .await?;
        let by_instance: HashMap<&str, &ecst::ContainerInstance> = cis
            .iter()
            .filter(|ci| ci.status() != Some("INACTIVE"))
            .filter_map(|ci| ci.ec2_instance_id().map(|id| (id, ci)))
            .collect();
        Ok(instances
            .iter()
            .map(|i| {
                let id = i.instance_id().unwrap_or_default();
                let ci = by_instance.get(id);
                Observed {
                    instance_id: id.to_string(),
                    instance_type: i
                        .instance_type()
                        .map(|t| t.as_str().to_string())
                        .unwrap_or_default(),
                    spot: i.instance_lifecycle() == Some(&ec2t::InstanceLifecycleType::Spot),
                    container_instance_arn: ci
                        .and_then(|c| c.container_instance_arn())
                        .map(str::to_string),
                    registered: ci.map(|c| registered(c)),
                    ci_status: ci.and_then(|c| c.status()).map(str::to_string),
                    generation: i
                        .tags()
                        .iter()
                        .find(|t| t.key() == Some(TAG_GENERATION))
                        .and_then(|t| t.value())
                        .map(str::to_string),
                    launched_at: i.launch_time().and_then(|t| t.to_millis().ok()),
                }
            })
            .collect())
    }

    pub(super) async fn describe_instances(
        &self,
        filters: Vec<ec2t::Filter>,
    ) -> Result<Vec<ec2t::Instance>, AwsError> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .api
                .call(
                    "ec2",
                    "DescribeInstances",
                    self.api
                        .ec2
                        .describe_instances()
                        .set_filters(Some(filters.clone()))
                        .set_next_token(token.take())
                        .send(),
                )
                .await?;
            for r in page.reservations() {
                out.extend(r.instances().iter().cloned());
            }
            token = page.next_token().map(str::to_string);
            if token.is_none() {
                return Ok(out);
            }
        }
    }
}
