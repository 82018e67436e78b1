//! The control loop's per-environment work: give each AWS environment its ECS cluster (and, when
//! managed, a launch template), move it CREATING → VALID or INVALID, publish its registered
//! instances to the engine, let `scale` act on it, and tear down what Flotilla made for an
//! environment that is gone.

use super::{
    AwsDriver, AwsError, EnvState, Observed, TAG_ENV, TAG_ENV_UUID, TAG_MANAGED_BY,
    TAG_USE_CLUSTER, ec2_tag, ecs_tag, sanitize, short,
};
use crate::compute::fleet::{Demand, EnvFleet, FleetInstance, InstancePrice};
use crate::model::{AwsKind, ComputeEnvironmentDetail, ResourceStatus};
use crate::provisioner::Resources;
use crate::store::InstanceUsage;
use aws_sdk_ec2::types as ec2t;
use std::collections::{BTreeMap, HashMap, HashSet};

/// The orphan sweep looks at the whole account's tagged instances; every this many passes.
const SWEEP_EVERY: u32 = 20;
/// Spot prices move slowly; the catalog is refreshed every this many passes (an hour at the
/// default 1 s poll).
const CATALOG_EVERY: u32 = 3600;

/// What setting up an environment made.
pub(super) struct SetupDone {
    cluster: String,
    arn: String,
    /// The cluster was created by Flotilla.
    own: bool,
    /// Flotilla's launch templates: the environment's, then one per user override template.
    templates: Vec<String>,
    user_template: Option<crate::model::launch_template::LaunchTemplate>,
    template_amis: super::ami::TemplateAmis,
    images: BTreeMap<String, super::ami::Resolved>,
}

/// The infrastructure generation of an environment: a hash of the `computeResources` settings
/// whose change AWS Batch treats as an infrastructure update (all but the vCPU counts, the
/// scaling policy and `updateToLatestImageVersion`), and the count of updates asking for the
/// latest AMIs.
pub(super) fn generation(ce: &ComputeEnvironmentDetail) -> String {
    use sha2::Digest;
    let Some(cr) = ce.compute_resources.as_ref() else {
        return String::new();
    };
    let mut c = cr.clone();
    c.minv_cpus = None;
    c.maxv_cpus = None;
    c.desiredv_cpus = None;
    c.scaling_policy = None;
    c.update_to_latest_image_version = None;
    let mut bytes = serde_json::to_vec(&c).unwrap_or_default();
    // Each updateToLatestImageVersion is an infrastructure update of its own.
    if let Some(epoch) = ce.image_epoch {
        bytes.extend_from_slice(format!("/image-epoch={epoch}").as_bytes());
    }
    let digest = sha2::Sha256::digest(bytes);
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

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
            .unwrap_or_default()
            + &format!("/image-epoch={:?}", ce.image_epoch);
        let mut envs = self.envs.lock().await;
        let state = envs.entry(name.clone()).or_insert_with(|| EnvState {
            uuid: uuid.clone(),
            managed,
            fingerprint: fingerprint.clone(),
            generation: generation(ce),
            ..Default::default()
        });
        if state.fingerprint != fingerprint {
            state.fingerprint = fingerprint;
            state.ready = false;
            state.invalid = None;
            let next = generation(ce);
            if next != state.generation {
                tracing::info!(env = %name, generation = %next, "infrastructure update: instances launched before it will be replaced");
                state.generation = next;
            }
        }
        if !state.ready {
            // After an updateToLatestImageVersion, past the AMI cache.
            let fresh = state.resolved_epoch != ce.image_epoch;
            drop(envs);
            let setup = self.setup_env(ce, managed, &uuid, fresh).await;
            envs = self.envs.lock().await;
            let Some(state) = envs.get_mut(&name) else {
                return Ok(());
            };
            match setup {
                Ok(done) => {
                    let arn = done.arn;
                    let shown = super::ami::as_ec2_configuration(&done.images);
                    state.images = done.images;
                    state.cluster = done.cluster;
                    state.cluster_arn = Some(arn.clone());
                    state.own_cluster = done.own;
                    state.templates = done.templates;
                    state.user_template = done.user_template;
                    state.template_amis = done.template_amis;
                    state.resolved_epoch = ce.image_epoch;
                    // The status below says Healthy: a replacement still under way is said again.
                    state.replacing_shown = 0;
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
        let prices = if managed {
            self.priced(&name, &observed).await
        } else {
            HashMap::new()
        };
        let mut instances = Vec::new();
        let (mut spot, mut on_demand) = (0, 0);
        let mut by_type: BTreeMap<(String, bool), i64> = BTreeMap::new();
        for o in &observed {
            if !o.instance_type.is_empty() {
                *by_type
                    .entry((o.instance_type.clone(), o.spot))
                    .or_default() += 1;
            }
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
                    price: prices.get(&o.instance_id).cloned(),
                });
            }
        }
        crate::metrics::fleet_instances(&name, spot, on_demand, by_type);
        let mut envs = self.envs.lock().await;
        let Some(state) = envs.get_mut(&name) else {
            return Ok(());
        };
        // Neither instances being retired nor those an infrastructure update replaces take new
        // work.
        let retiring = state.retiring.clone();
        let outdated: HashSet<&str> = observed
            .iter()
            .filter(|o| managed && o.outdated(&state.generation))
            .map(|o| o.instance_id.as_str())
            .collect();
        instances.retain(|i| {
            !retiring.contains(&i.instance_id) && !outdated.contains(i.instance_id.as_str())
        });
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
                return Ok(());
            }
            // Say so while an infrastructure update is replacing instances. The environment
            // stays VALID: it takes work (on new instances) meanwhile, as on AWS Batch.
            let replacing = state
                .instances
                .iter()
                .filter(|o| {
                    o.outdated(&state.generation) && !state.retiring.contains(&o.instance_id)
                })
                .count();
            if replacing != state.replacing_shown {
                state.replacing_shown = replacing;
                drop(envs);
                let reason = if replacing == 0 {
                    "ComputeEnvironment Healthy".to_string()
                } else {
                    format!(
                        "ComputeEnvironment Healthy; infrastructure update: {replacing} instance(s) launched before it \
                         take no new jobs and are terminated once idle"
                    )
                };
                self.set_status(&name, ResourceStatus::Valid, reason, None)
                    .await;
            }
        }
        Ok(())
    }

    /// Creates (or finds) the cluster and, for managed environments, the launch templates (the
    /// user's merged in) and the AMI of each instance type.
    async fn setup_env(
        &self,
        ce: &ComputeEnvironmentDetail,
        managed: bool,
        uuid: &str,
        fresh: bool,
    ) -> Result<SetupDone, Setup> {
        let name = &ce.compute_environment_name;
        let mut images = BTreeMap::new();
        let mut user_template = None;
        let mut user_data = Vec::new();
        let mut template_amis = super::ami::TemplateAmis::default();
        if managed {
            let cr = ce.compute_resources.clone().unwrap_or_default();
            if let Some(v) = &cr.launch_template {
                const F: &str = "computeResources.launchTemplate";
                let lt = crate::model::launch_template::parse(
                    v,
                    cr.instance_types.as_deref().unwrap_or_default(),
                )
                .map_err(|e| Setup::Invalid(format!("CLIENT_ERROR - {e}")))?;
                let base = self.read_user_template(&lt.base, F).await?;
                template_amis.base = base.image_id().map(str::to_string);
                user_data.push((lt.base.describe(), base));
                for (i, o) in lt.overrides.iter().enumerate() {
                    let d = self
                        .read_user_template(&o.template, &format!("{F}.overrides[{i}]"))
                        .await?;
                    if let Some(ami) = d.image_id() {
                        template_amis
                            .overrides
                            .push((o.targets.clone(), ami.to_string()));
                    }
                    user_data.push((o.template.describe(), d));
                }
                user_template = Some(lt);
            }
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
            images = self
                .resolve_images(&cr, &allowed, &template_amis, fresh)
                .await?;
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
        let mut templates = Vec::new();
        if managed {
            let t = format!("flotilla-{}-{}", sanitize(name), short(uuid));
            if user_data.is_empty() {
                self.ensure_template(ce, &t, &cluster, uuid, None, false)
                    .await?;
                templates.push(t);
            } else {
                for (i, (what, data)) in user_data.iter().enumerate() {
                    let t = if i == 0 {
                        t.clone()
                    } else {
                        format!("{t}-o{i}")
                    };
                    self.ensure_template(
                        ce,
                        &t,
                        &cluster,
                        uuid,
                        Some((what.as_str(), data)),
                        i > 0,
                    )
                    .await?;
                    templates.push(t);
                }
            }
        }
        Ok(SetupDone {
            cluster,
            arn,
            own,
            templates,
            user_template,
            template_amis,
            images,
        })
    }

    async fn ensure_template(
        &self,
        ce: &ComputeEnvironmentDetail,
        template: &str,
        cluster: &str,
        uuid: &str,
        user: Option<(&str, &ec2t::ResponseLaunchTemplateData)>,
        is_override: bool,
    ) -> Result<(), Setup> {
        let cr = ce.compute_resources.clone().unwrap_or_default();
        let user_data = format!(
            "#!/bin/bash\necho ECS_CLUSTER={cluster} >> /etc/ecs/ecs.config\n\
             echo ECS_ENABLE_SPOT_INSTANCE_DRAINING=true >> /etc/ecs/ecs.config\n\
             echo ECS_CONTAINER_STOP_TIMEOUT=30s >> /etc/ecs/ecs.config\n"
        );
        let tags: Vec<(String, String)> = cr
            .tags
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        // CreateFleet names each type's AMI; the template's own is what a launch without one
        // would take.
        // (AWS Batch's order: an override template's AMI first, the environment's template's
        // after `imageId`.)
        let theirs = user.and_then(|(_, u)| u.image_id()).map(str::to_string);
        let image = if is_override {
            theirs.or_else(|| cr.image_id.clone())
        } else {
            cr.image_id.clone().or(theirs)
        }
        .or_else(|| self.opts.image_id.clone());
        let ours = super::templates::Ours {
            image_id: image.as_deref(),
            user_data: &user_data,
            key_name: cr.ec2_key_pair.as_deref(),
            security_group_ids: cr.security_group_ids.as_deref(),
            instance_role: cr.instance_role.as_deref(),
            placement_group: cr.placement_group.as_deref(),
            tags: &tags,
        };
        let (what, user) = match user {
            Some((w, d)) => (format!("launch template {w}"), Some(d)),
            None => (String::new(), None),
        };
        let data = super::templates::merge(user, &ours, &what).map_err(|e| {
            Setup::Invalid(format!(
                "CLIENT_ERROR - computeResources.launchTemplate: {e}"
            ))
        })?;
        let r = self
            .api
            .call(
                "ec2",
                "CreateLaunchTemplate",
                self.api
                    .ec2
                    .create_launch_template()
                    .launch_template_name(template)
                    .launch_template_data(data.clone())
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
                        .launch_template_data(data)
                        .send(),
                )
                .await
                .map(|_| ())
                .map_err(Setup::Aws),
            Err(e) => Err(Setup::Aws(e)),
        }
    }

    /// An environment is gone from the catalog: terminate its instances, then delete what
    /// Flotilla created for it.
    /// The price each of a managed environment's `observed` instances is charged at, and the
    /// instance ledger brought up to date when the set of instances changed (the cost report's
    /// fleet bill; `flotilla cost`).
    async fn priced(&self, env: &str, observed: &[Observed]) -> HashMap<String, InstancePrice> {
        // The catalog is copied out only when an instance is new to the ledger.
        let mut catalog = None;
        let now = crate::util::time::now_ms();
        let (prices, record) = {
            let Ok(mut ledgers) = self.ledger.lock() else {
                return HashMap::new();
            };
            let ledger = ledgers.entry(env.to_string()).or_default();
            let live: HashSet<String> = observed.iter().map(|o| o.instance_id.clone()).collect();
            ledger.prices.retain(|id, _| live.contains(id));
            ledger.unpriced.retain(|id| live.contains(id));
            for o in observed {
                if ledger.prices.contains_key(&o.instance_id)
                    || ledger.unpriced.contains(&o.instance_id)
                {
                    continue;
                }
                match catalog
                    .get_or_insert_with(|| self.catalog())
                    .get(&o.instance_type)
                {
                    Some(t) => {
                        ledger.prices.insert(
                            o.instance_id.clone(),
                            InstancePrice {
                                instance_type: o.instance_type.clone(),
                                spot: o.spot,
                                per_hour: t.price(o.spot),
                            },
                        );
                    }
                    None => {
                        tracing::warn!(
                            env,
                            instance = %o.instance_id,
                            instance_type = %o.instance_type,
                            "instance type not in the catalog: its jobs are shown without cost"
                        );
                        ledger.unpriced.insert(o.instance_id.clone());
                    }
                }
            }
            let record = (ledger.recorded.as_ref() != Some(&live)).then(|| {
                ledger.recorded = Some(live);
                observed
                    .iter()
                    .filter_map(|o| {
                        let p = ledger.prices.get(&o.instance_id)?;
                        Some(InstanceUsage {
                            instance_id: o.instance_id.clone(),
                            compute_environment: env.to_string(),
                            instance_type: p.instance_type.clone(),
                            spot: p.spot,
                            price_per_hour: p.per_hour,
                            launched_at: o.launched_at.unwrap_or(now).min(now),
                            terminated_at: None,
                        })
                    })
                    .collect::<Vec<_>>()
            });
            (ledger.prices.clone(), record)
        };
        if let Some(live) = record {
            self.record_ledger(env, live, now).await;
        }
        prices
    }

    async fn record_ledger(&self, env: &str, live: Vec<InstanceUsage>, now: i64) {
        if let Err(e) = self.control.record_instances(env, live, now).await {
            tracing::warn!(env, error = %e, "instance ledger not updated; retrying at the next observation");
            if let Ok(mut ledgers) = self.ledger.lock()
                && let Some(l) = ledgers.get_mut(env)
            {
                l.recorded = None;
            }
        }
    }

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
            let ledger = self.ledger.lock().ok().and_then(|mut l| l.remove(name));
            if ledger.is_some() {
                self.record_ledger(name, Vec::new(), crate::util::time::now_ms())
                    .await;
            }
        }
        for t in &state.templates {
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
