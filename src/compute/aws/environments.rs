//! The control loop's per-environment work: give each AWS environment its ECS cluster (and, when
//! managed, a launch template), move it CREATING → VALID or INVALID, publish its registered
//! instances to the engine, let `scale` act on it, and tear down what Flotilla made for an
//! environment that is gone.

use super::{
    AwsDriver, AwsError, EnvState, TAG_ENV, TAG_ENV_UUID, TAG_MANAGED_BY, TAG_USE_CLUSTER, ec2_tag,
    ecs_tag, sanitize, short,
};
use crate::compute::fleet::{Demand, EnvFleet, FleetInstance};
use crate::model::{AwsKind, ComputeEnvironmentDetail, ResourceStatus};
use crate::provisioner::Resources;
use aws_sdk_ec2::types as ec2t;
use std::collections::{BTreeMap, HashSet};

/// The orphan sweep looks at the whole account's tagged instances; every this many passes.
const SWEEP_EVERY: u32 = 20;
/// Spot prices move slowly; the catalog is refreshed every this many passes (an hour at the
/// default 1 s poll).
const CATALOG_EVERY: u32 = 3600;

/// What setting up an environment made: (cluster name, cluster ARN, created by us, launch
/// template name, AMI per instance type).
type SetupDone = (
    String,
    String,
    bool,
    Option<String>,
    BTreeMap<String, super::ami::Resolved>,
);

pub(super) enum Setup {
    /// A configuration a person must fix: the environment becomes INVALID with this reason.
    Invalid(String),
    Aws(AwsError),
}

impl AwsDriver {
    pub(super) async fn control_pass(&self, pass: u32) {
        if pass.is_multiple_of(CATALOG_EVERY) {
            self.refresh_catalog().await;
        }
        let cat = self.control.catalog().await;
        let demand = self.fleet.demand();
        let mut live = HashSet::new();
        for ce in cat.compute_environments.values() {
            let Some(kind) = ce.aws_kind() else {
                continue;
            };
            let managed = kind == AwsKind::Managed;
            live.insert(ce.compute_environment_name.clone());
            if let Err(e) = self.reconcile_env(ce, managed, &demand).await {
                tracing::warn!(env = %ce.compute_environment_name, error = %e, "environment reconcile failed");
            }
        }
        let gone: Vec<(String, EnvState)> = {
            let mut envs = self.envs.lock().await;
            let names: Vec<String> = envs
                .keys()
                .filter(|n| !live.contains(*n))
                .cloned()
                .collect();
            names
                .into_iter()
                .filter_map(|n| envs.remove(&n).map(|s| (n, s)))
                .collect()
        };
        for (name, state) in gone {
            self.fleet.set_env(&name, None);
            self.teardown(&name, state).await;
        }
        if pass.is_multiple_of(SWEEP_EVERY) {
            let uuids: HashSet<String> = cat
                .compute_environments
                .values()
                .filter_map(|ce| ce.uuid.clone())
                .collect();
            if let Err(e) = self.sweep_orphans(&uuids).await {
                tracing::warn!(error = %e, "orphan sweep failed");
            }
        }
    }

    async fn set_status(
        &self,
        name: &str,
        status: ResourceStatus,
        reason: String,
        cluster: Option<String>,
    ) {
        let r = self
            .control
            .set_env_status(name, status, reason, cluster)
            .await;
        match r {
            Ok(true) => tracing::info!(env = name, %status, "compute environment status"),
            Ok(false) => {}
            Err(e) => tracing::warn!(env = name, error = %e, "cannot record environment status"),
        }
    }

    async fn reconcile_env(
        &self,
        ce: &ComputeEnvironmentDetail,
        managed: bool,
        demand: &Demand,
    ) -> Result<(), AwsError> {
        let name = ce.compute_environment_name.clone();
        let uuid = ce.uuid.clone().unwrap_or_else(|| name.clone());
        let fingerprint = ce
            .compute_resources
            .as_ref()
            .map(|cr| {
                let mut cr = cr.clone();
                cr.desiredv_cpus = None;
                serde_json::to_string(&cr).unwrap_or_default()
            })
            .unwrap_or_default();
        let mut envs = self.envs.lock().await;
        let state = envs.entry(name.clone()).or_insert_with(|| EnvState {
            uuid: uuid.clone(),
            managed,
            fingerprint: fingerprint.clone(),
            ..Default::default()
        });
        if state.fingerprint != fingerprint {
            state.fingerprint = fingerprint;
            state.ready = false;
            state.invalid = None;
        }
        if !state.ready {
            drop(envs);
            let setup = self.setup_env(ce, managed, &uuid).await;
            envs = self.envs.lock().await;
            let Some(state) = envs.get_mut(&name) else {
                return Ok(());
            };
            match setup {
                Ok((cluster, arn, own, template, images)) => {
                    let shown = super::ami::as_ec2_configuration(&images);
                    state.images = images;
                    state.cluster = cluster;
                    state.cluster_arn = Some(arn.clone());
                    state.own_cluster = own;
                    state.template = template;
                    state.ready = true;
                    drop(envs);
                    if managed && let Err(e) = self.control.set_env_images(&name, shown).await {
                        tracing::warn!(env = %name, error = %e, "cannot record resolved AMIs");
                    }
                    self.set_status(
                        &name,
                        ResourceStatus::Valid,
                        "ComputeEnvironment Healthy".into(),
                        Some(arn),
                    )
                    .await;
                    envs = self.envs.lock().await;
                }
                Err(Setup::Invalid(reason)) => {
                    drop(envs);
                    self.set_status(&name, ResourceStatus::Invalid, reason, None)
                        .await;
                    return Ok(());
                }
                Err(Setup::Aws(e)) => {
                    drop(envs);
                    if e.retryable {
                        self.set_status(
                            &name,
                            ResourceStatus::Creating,
                            format!("waiting for AWS: {e}"),
                            None,
                        )
                        .await;
                    } else {
                        self.set_status(
                            &name,
                            ResourceStatus::Invalid,
                            format!("CLIENT_ERROR - {e}"),
                            None,
                        )
                        .await;
                    }
                    return Ok(());
                }
            }
        }
        let Some(state) = envs.get_mut(&name) else {
            return Ok(());
        };
        // The fleet is refreshed without the lock held across calls: the state is copied out
        // and written back.
        let cluster = state.cluster.clone();
        let uuid = state.uuid.clone();
        drop(envs);
        let observed = self
            .observe(&cluster, managed.then_some(uuid.as_str()))
            .await?;
        let mut largest = Resources::default();
        if managed && let Some(cr) = &ce.compute_resources {
            let types = cr.instance_types.clone().unwrap_or_default();
            let catalog = self.catalog();
            for i in catalog.allowed(&types) {
                largest = largest.max(&catalog.types()[i].capacity());
            }
        }
        let mut instances = Vec::new();
        let (mut spot, mut on_demand) = (0, 0);
        for o in &observed {
            if o.spot {
                spot += 1;
            } else {
                on_demand += 1;
            }
            if let (Some(arn), Some(reg), Some("ACTIVE")) = (
                &o.container_instance_arn,
                o.registered,
                o.ci_status.as_deref(),
            ) {
                if !managed {
                    largest = largest.max(&reg);
                }
                instances.push(FleetInstance {
                    container_instance_arn: arn.clone(),
                    instance_id: o.instance_id.clone(),
                    registered: reg,
                });
            }
        }
        crate::metrics::fleet_instances(&name, spot, on_demand);
        let mut envs = self.envs.lock().await;
        let Some(state) = envs.get_mut(&name) else {
            return Ok(());
        };
        let retiring = state.retiring.clone();
        instances.retain(|i| !retiring.contains(&i.instance_id));
        let next = EnvFleet {
            cluster: cluster.clone(),
            instances,
            largest,
        };
        if self.fleet.env(&name).as_ref() != Some(&next) {
            self.fleet.set_env(&name, Some(next));
            // New room (or less of it): the engine's next pass should see it now, not at its
            // periodic pass.
            self.control.wake();
        }
        state.instances = observed;
        if managed && state.invalid.is_none() {
            self.scale(ce, state, demand).await;
            if let Some(reason) = state.invalid.clone() {
                drop(envs);
                self.set_status(&name, ResourceStatus::Invalid, reason, None)
                    .await;
            }
        }
        Ok(())
    }

    /// Creates (or finds) the cluster and, for managed environments, the launch template.
    /// Returns (cluster name, cluster ARN, created by us, launch template name, AMI per
    /// instance type).
    async fn setup_env(
        &self,
        ce: &ComputeEnvironmentDetail,
        managed: bool,
        uuid: &str,
    ) -> Result<SetupDone, Setup> {
        let name = &ce.compute_environment_name;
        let mut images = BTreeMap::new();
        if managed {
            let cr = ce.compute_resources.clone().unwrap_or_default();
            let types = cr.instance_types.clone().unwrap_or_default();
            let catalog = self.catalog();
            let allowed: Vec<_> = catalog
                .allowed(&types)
                .into_iter()
                .map(|i| &catalog.types()[i])
                .collect();
            if allowed.is_empty() {
                return Err(Setup::Invalid(format!(
                    "CLIENT_ERROR - computeResources.instanceTypes: none of {types:?} is an instance type or family Flotilla knows \
                     (for example c5.large, m5, or optimal)"
                )));
            }
            images = self.resolve_images(&cr, &allowed).await?;
        }
        let named = ce
            .tags
            .as_ref()
            .and_then(|t| t.get(TAG_USE_CLUSTER))
            .filter(|_| !managed)
            .cloned();
        let (cluster, own) = match named {
            Some(c) => (c, false),
            None => (format!("flotilla-{}-{}", sanitize(name), short(uuid)), true),
        };
        let arn = if own {
            let out = self
                .api
                .call(
                    "ecs",
                    "CreateCluster",
                    self.api
                        .ecs
                        .create_cluster()
                        .cluster_name(&cluster)
                        .tags(ecs_tag(TAG_MANAGED_BY, "flotilla"))
                        .tags(ecs_tag(TAG_ENV, name))
                        .tags(ecs_tag(TAG_ENV_UUID, uuid))
                        .send(),
                )
                .await
                .map_err(Setup::Aws)?;
            out.cluster()
                .and_then(|c| c.cluster_arn())
                .map(str::to_string)
                .unwrap_or_else(|| cluster.clone())
        } else {
            let out = self
                .api
                .call(
                    "ecs",
                    "DescribeClusters",
                    self.api.ecs.describe_clusters().clusters(&cluster).send(),
                )
                .await
                .map_err(Setup::Aws)?;
            match out.clusters().iter().find(|c| c.status() == Some("ACTIVE")) {
                Some(c) => c.cluster_arn().unwrap_or(&cluster).to_string(),
                None => {
                    return Err(Setup::Invalid(format!(
                        "CLIENT_ERROR - tag {TAG_USE_CLUSTER}: ECS cluster {cluster:?} does not exist or is not ACTIVE"
                    )));
                }
            }
        };
        let template = if managed {
            let t = format!("flotilla-{}-{}", sanitize(name), short(uuid));
            self.ensure_template(ce, &t, &cluster, uuid)
                .await
                .map_err(Setup::Aws)?;
            Some(t)
        } else {
            None
        };
        Ok((cluster, arn, own, template, images))
    }

    async fn ensure_template(
        &self,
        ce: &ComputeEnvironmentDetail,
        template: &str,
        cluster: &str,
        uuid: &str,
    ) -> Result<(), AwsError> {
        use base64::Engine as _;
        let cr = ce.compute_resources.clone().unwrap_or_default();
        let user_data = format!(
            "#!/bin/bash\necho ECS_CLUSTER={cluster} >> /etc/ecs/ecs.config\n\
             echo ECS_ENABLE_SPOT_INSTANCE_DRAINING=true >> /etc/ecs/ecs.config\n\
             echo ECS_CONTAINER_STOP_TIMEOUT=30s >> /etc/ecs/ecs.config\n"
        );
        let mut data = ec2t::RequestLaunchTemplateData::builder()
            .set_image_id(cr.image_id.clone().or_else(|| self.opts.image_id.clone()))
            .user_data(base64::engine::general_purpose::STANDARD.encode(user_data))
            .set_security_group_ids(cr.security_group_ids.clone())
            .set_key_name(cr.ec2_key_pair.clone());
        if let Some(group) = &cr.placement_group {
            data = data.placement(
                ec2t::LaunchTemplatePlacementRequest::builder()
                    .group_name(group)
                    .build(),
            );
        }
        if let Some(role) = &cr.instance_role {
            let profile = ec2t::LaunchTemplateIamInstanceProfileSpecificationRequest::builder();
            data = data.iam_instance_profile(if role.starts_with("arn:") {
                profile.arn(role).build()
            } else {
                profile.name(role).build()
            });
        }
        let r = self
            .api
            .call(
                "ec2",
                "CreateLaunchTemplate",
                self.api
                    .ec2
                    .create_launch_template()
                    .launch_template_name(template)
                    .launch_template_data(data.clone().build())
                    .tag_specifications(
                        ec2t::TagSpecification::builder()
                            .resource_type(ec2t::ResourceType::LaunchTemplate)
                            .tags(ec2_tag(TAG_MANAGED_BY, "flotilla"))
                            .tags(ec2_tag(TAG_ENV, &ce.compute_environment_name))
                            .tags(ec2_tag(TAG_ENV_UUID, uuid))
                            .build(),
                    )
                    .send(),
            )
            .await;
        match r {
            Ok(_) => Ok(()),
            // Set up again after a restart or an UpdateComputeEnvironment: a new version with
            // today's settings, which CreateFleet's `$Latest` picks up.
            Err(e) if e.code.contains("AlreadyExists") => self
                .api
                .call(
                    "ec2",
                    "CreateLaunchTemplateVersion",
                    self.api
                        .ec2
                        .create_launch_template_version()
                        .launch_template_name(template)
                        .launch_template_data(data.build())
                        .send(),
                )
                .await
                .map(|_| ()),
            Err(e) => Err(e),
        }
    }

    /// An environment is gone from the catalog: terminate its instances, then delete what
    /// Flotilla created for it.
    async fn teardown(&self, name: &str, state: EnvState) {
        tracing::info!(env = name, "tearing down deleted compute environment");
        if state.managed {
            let ids: Vec<String> = state
                .instances
                .iter()
                .map(|o| o.instance_id.clone())
                .collect();
            if let Err(e) = self.terminate(&ids).await {
                tracing::warn!(env = name, error = %e, "terminate failed; the orphan sweep retries");
            }
        }
        if let Some(t) = &state.template {
            let _ = self
                .api
                .call(
                    "ec2",
                    "DeleteLaunchTemplate",
                    self.api
                        .ec2
                        .delete_launch_template()
                        .launch_template_name(t)
                        .send(),
                )
                .await;
        }
        if state.own_cluster && !state.cluster.is_empty() {
            for o in &state.instances {
                if let Some(arn) = &o.container_instance_arn {
                    self.deregister(&state.cluster, arn).await;
                }
            }
            let _ = self
                .api
                .call(
                    "ecs",
                    "DeleteCluster",
                    self.api.ecs.delete_cluster().cluster(&state.cluster).send(),
                )
                .await;
        }
    }
}
