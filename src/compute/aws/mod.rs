//! The AWS compute driver: MANAGED (EC2 / SPOT) and UNMANAGED compute environments.
//!
//! Two loops run beside the engine:
//! - the **control loop** gives each environment its ECS cluster (and, when managed, a launch
//!   template whose user data joins the cluster with Spot draining on), moves it CREATING →
//!   VALID or INVALID, refreshes its fleet (DescribeInstances by tag, the cluster's container
//!   instances), publishes the registered instances to the engine through [`FleetView`], and
//!   turns the provisioner's [`ScalePlan`](crate::provisioner::ScalePlan) into CreateFleet and
//!   drain → deregister → TerminateInstances calls. Every launch carries a fresh `clientToken`,
//!   which the SDK's retries reuse, and the fleet is re-read before each plan, so a call that
//!   timed out but landed is seen and not repeated. An orphan sweeper terminates instances tagged
//!   for an environment that no longer exists.
//! - the **task loop** follows every attempt the engine started as an ECS task: DescribeTasks in
//!   batches of 100, `Started` on RUNNING, `Exited` with the container's exit code and reason on
//!   STOPPED, `Interrupted` when EC2 reclaimed a Spot host.
//!
//! Attempts start through [`Runtime::start`]: a task definition derived from the job definition
//! (cached by content), then StartTask on the container instance the engine chose, with
//! `startedBy` naming the attempt, so that after a restart [`Runtime::recover`] finds and adopts
//! the very task and never starts a second one.
//!
//! Nothing here runs inside the engine's loop, and nothing waits on the engine.

mod api;

pub use api::{Api, ApiOptions, AwsError};

use crate::compute::fleet::{Demand, EnvFleet, FleetInstance, FleetView};
use crate::compute::ports::ControlPlane;
use crate::compute::{
    AttemptSpec, ExpectedAttempt, Runtime, RuntimeError, RuntimeEvent, StopSignal, Target,
};
use crate::model::arn::{JOB_LOG_GROUP, definition_name, name_of_arn};
use crate::model::{AwsKind, ComputeEnvironmentDetail, ResourceStatus};
use crate::provisioner::{self, EnvSpec, Resources};
use crate::util::time::now_ms;
use aws_sdk_ec2::types as ec2t;
use aws_sdk_ecs::types as ecst;
use sha2::Digest;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Tags on everything Flotilla creates in the account, so that it tears down only its own.
pub const TAG_MANAGED_BY: &str = "flotilla:managed-by";
pub const TAG_ENV: &str = "flotilla:compute-environment";
pub const TAG_ENV_UUID: &str = "flotilla:compute-environment-uuid";
/// A tag on an UNMANAGED compute environment naming an existing ECS cluster to schedule onto
/// (otherwise Flotilla creates one).
pub const TAG_USE_CLUSTER: &str = "flotilla:ecs-cluster";
/// The container name in every task definition; the awslogs stream is
/// `<job definition name>/default/<task id>`, as AWS Batch names it.
const CONTAINER: &str = "default";
const SPOT_TERMINATION: &str = "Server.SpotInstanceTermination";
/// The orphan sweep looks at the whole account's tagged instances; every this many passes.
const SWEEP_EVERY: u32 = 20;
/// Spot prices move slowly; the catalog is refreshed every this many passes (an hour at the
/// default 1 s poll).
const CATALOG_EVERY: u32 = 3600;

#[derive(Debug, Clone)]
pub struct AwsOptions {
    pub api: ApiOptions,
    /// Between fleet refreshes and between DescribeTasks rounds.
    pub poll_interval: Duration,
    /// How long an instance stays idle before it is drained and terminated.
    pub idle_timeout: Duration,
    /// Spot interruptions of one job retried without spending its attempts; past this, the job
    /// skips SPOT environments.
    pub spot_max_interruptions: u32,
    /// AMI of the launch templates (an ECS-optimized image), unless the environment names one.
    pub image_id: Option<String>,
    /// How long an (instance type, subnet) pool that reported InsufficientInstanceCapacity is
    /// left out of plans.
    pub capacity_backoff: Duration,
}

/// An attempt the task loop follows.
#[derive(Debug, Clone)]
struct Tracked {
    attempt: u32,
    cluster: String,
    task_arn: Option<String>,
    started: bool,
    /// StopTask asked while StartTask was still in flight.
    stop_pending: bool,
    /// Recovered after a restart and not yet found by `startedBy`.
    adopting: bool,
}

#[derive(Debug, Clone)]
struct Observed {
    instance_id: String,
    instance_type: String,
    spot: bool,
    container_instance_arn: Option<String>,
    registered: Option<Resources>,
    /// ECS status of the container instance (ACTIVE, DRAINING…), if registered.
    ci_status: Option<String>,
}

#[derive(Debug, Default)]
struct EnvState {
    uuid: String,
    cluster: String,
    cluster_arn: Option<String>,
    /// The cluster was created by Flotilla (and is deleted with the environment).
    own_cluster: bool,
    template: Option<String>,
    ready: bool,
    managed: bool,
    /// `computeResources` as last set up; a change (UpdateComputeEnvironment) sets up again.
    fingerprint: String,
    /// AWS refused a launch for a reason a person must fix: no launches until the environment
    /// is updated.
    invalid: Option<String>,
    instances: Vec<Observed>,
    idle_since: HashMap<String, i64>,
    unavailable: HashMap<(String, Option<String>), Instant>,
    /// Instances Flotilla itself is terminating: their tasks' host loss is no Spot interruption.
    retiring: HashSet<String>,
}

pub struct AwsDriver {
    control: Arc<dyn ControlPlane>,
    api: Api,
    opts: AwsOptions,
    fleet: Arc<FleetView>,
    events: mpsc::Sender<RuntimeEvent>,
    tasks: Mutex<HashMap<String, Tracked>>,
    taskdefs: tokio::sync::Mutex<HashMap<String, String>>,
    envs: tokio::sync::Mutex<HashMap<String, EnvState>>,
    /// Instance types with their capacity and prices: built in, then refreshed from
    /// DescribeInstanceTypes and DescribeSpotPriceHistory.
    catalog: std::sync::RwLock<provisioner::Catalog>,
    /// Instance id → EC2 state reason code, for instances seen going away.
    gone: Mutex<HashMap<String, String>>,
    /// Instances Flotilla scaled in. A task that still ended up on one (a placement racing the
    /// retirement) lost its host through no fault of the job.
    retired: Mutex<HashSet<String>>,
}

/// `startedBy` of an attempt: at most 36 characters of `[A-Za-z0-9_-]` (job IDs of array
/// children have a colon), derived so that a restarted server finds the same task again.
pub fn started_by(job_id: &str, attempt: u32) -> String {
    let digest = sha2::Sha256::digest(format!("{job_id}#{attempt}").as_bytes());
    format!("fl-{}", &hex::encode(digest)[..32])
}

fn short(uuid: &str) -> &str {
    &uuid[..uuid.len().min(8)]
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(200)
        .collect()
}

fn resources(cpu_units: i64, memory_mib: i64, gpus: i64) -> Resources {
    Resources {
        milli_vcpus: (cpu_units.max(0) as u64) * 1000 / 1024,
        memory_mib: memory_mib.max(0) as u64,
        gpus: gpus.max(0) as u64,
    }
}

fn ec2_tag(k: &str, v: &str) -> ec2t::Tag {
    ec2t::Tag::builder().key(k).value(v).build()
}

fn ecs_tag(k: &str, v: &str) -> ecst::Tag {
    ecst::Tag::builder().key(k).value(v).build()
}

/// The instance ID in ECS's "Host EC2 (instance i-…) terminated." reason.
fn host_of(stopped_reason: &str) -> Option<&str> {
    stopped_reason
        .strip_prefix("Host EC2 (instance ")
        .and_then(|r| r.split(')').next())
}

impl AwsDriver {
    pub async fn connect(
        control: Arc<dyn ControlPlane>,
        opts: AwsOptions,
        events: mpsc::Sender<RuntimeEvent>,
    ) -> Arc<AwsDriver> {
        let api = Api::connect(&opts.api).await;
        Arc::new(AwsDriver {
            control,
            api,
            opts,
            fleet: Arc::default(),
            events,
            tasks: Mutex::default(),
            taskdefs: tokio::sync::Mutex::default(),
            envs: tokio::sync::Mutex::default(),
            catalog: std::sync::RwLock::new(provisioner::builtin_catalog()),
            gone: Mutex::default(),
            retired: Mutex::default(),
        })
    }

    pub fn catalog(&self) -> provisioner::Catalog {
        self.catalog.read().map(|c| c.clone()).unwrap_or_default()
    }

    /// Replaces the built-in capacities and Spot prices with what the region reports. Types the
    /// region does not know keep their built-in figures; on-demand prices stay built in (the
    /// EC2 API has none).
    async fn refresh_catalog(&self) {
        let mut types = self.catalog().types().to_vec();
        let names: Vec<String> = types.iter().map(|t| t.name.clone()).collect();
        let mut shape: HashMap<String, (u32, u64, u32)> = HashMap::new();
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
                        if vcpus > 0 && mem > 0 {
                            shape.insert(name, (vcpus as u32, mem as u64, gpus.max(0) as u32));
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
            if let Some(&(v, m, g)) = shape.get(&t.name) {
                t.vcpus = v;
                t.memory_mib = m;
                t.gpus = g;
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

    pub fn fleet(&self) -> Arc<FleetView> {
        self.fleet.clone()
    }

    pub fn api(&self) -> &Api {
        &self.api
    }

    /// Whether an attempt of `job_id` runs (or starts) on ECS.
    pub fn owns(&self, job_id: &str) -> bool {
        self.tasks.lock().is_ok_and(|t| t.contains_key(job_id))
    }

    /// Starts the control and task loops; they end when `shutdown` flips.
    pub fn spawn(self: &Arc<Self>, shutdown: watch::Receiver<bool>) {
        let me = self.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let mut pass: u32 = 0;
            loop {
                let span = tracing::debug_span!("aws_control_pass", pass);
                let _ = tracing::Instrument::instrument(me.control_pass(pass), span).await;
                pass = pass.wrapping_add(1);
                tokio::select! {
                    _ = stop.changed() => break,
                    _ = me.fleet.changed.notified() => {}
                    _ = tokio::time::sleep(me.opts.poll_interval) => {}
                }
            }
        });
        let me = self.clone();
        let mut stop = shutdown;
        tokio::spawn(async move {
            loop {
                me.poll_tasks().await;
                tokio::select! {
                    _ = stop.changed() => break,
                    _ = tokio::time::sleep(me.opts.poll_interval) => {}
                }
            }
        });
    }

    fn emit(&self, ev: RuntimeEvent) {
        if let Err(mpsc::error::TrySendError::Full(ev)) = self.events.try_send(ev) {
            let tx = self.events.clone();
            tokio::spawn(async move {
                let _ = tx.send(ev).await;
            });
        }
    }

    // ------------------------------------------------------------ environments

    async fn control_pass(&self, pass: u32) {
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
                Ok((cluster, arn, own, template)) => {
                    state.cluster = cluster;
                    state.cluster_arn = Some(arn.clone());
                    state.own_cluster = own;
                    state.template = template;
                    state.ready = true;
                    drop(envs);
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
    /// Returns (cluster name, cluster ARN, created by us, launch template name).
    async fn setup_env(
        &self,
        ce: &ComputeEnvironmentDetail,
        managed: bool,
        uuid: &str,
    ) -> Result<(String, String, bool, Option<String>), Setup> {
        let name = &ce.compute_environment_name;
        if managed {
            let types = ce
                .compute_resources
                .as_ref()
                .and_then(|c| c.instance_types.clone())
                .unwrap_or_default();
            let image = ce
                .compute_resources
                .as_ref()
                .and_then(|c| c.image_id.clone())
                .or_else(|| self.opts.image_id.clone());
            if image.is_none() {
                return Err(Setup::Invalid(
                    "CLIENT_ERROR - computeResources.imageId: no AMI; set it, or start the server with --aws-ami \
                     (an ECS-optimized AMI of the region)"
                        .into(),
                ));
            }
            if self.catalog().allowed(&types).is_empty() {
                return Err(Setup::Invalid(format!(
                    "CLIENT_ERROR - computeResources.instanceTypes: none of {types:?} is an instance type or family Flotilla knows \
                     (for example c5.large, m5, or optimal)"
                )));
            }
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
        Ok((cluster, arn, own, template))
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

    /// The environment's instances (managed: by tag, pending or running) joined with the
    /// cluster's container instances. Unmanaged: the container instances alone.
    async fn observe(&self, cluster: &str, uuid: Option<&str>) -> Result<Vec<Observed>, AwsError> {
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
                }
            })
            .collect())
    }

    async fn describe_instances(
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

    async fn scale(&self, ce: &ComputeEnvironmentDetail, state: &mut EnvState, demand: &Demand) {
        let name = &ce.compute_environment_name;
        let Some(spec) = ce
            .compute_resources
            .as_ref()
            .and_then(EnvSpec::from_compute_resource)
        else {
            return;
        };
        let now = now_ms();
        let catalog = self.catalog();
        let mut fleet = Vec::new();
        for o in &state.instances {
            let used = o
                .container_instance_arn
                .as_ref()
                .and_then(|a| demand.used_by_instance.get(a))
                .copied()
                .unwrap_or_default();
            let capacity = o
                .registered
                .or_else(|| catalog.get(&o.instance_type).map(|t| t.capacity()))
                .unwrap_or_default();
            let idle = used == Resources::default();
            let idle_since = if idle {
                Some(*state.idle_since.entry(o.instance_id.clone()).or_insert(now))
            } else {
                state.idle_since.remove(&o.instance_id);
                None
            };
            // The provisioner retires only instances whose `free` equals the catalog capacity.
            let free = if idle {
                catalog
                    .get(&o.instance_type)
                    .map(|t| t.capacity())
                    .unwrap_or(capacity)
            } else {
                capacity.saturating_sub(&used)
            };
            fleet.push(provisioner::Instance {
                id: o.instance_id.clone(),
                instance_type: o.instance_type.clone(),
                spot: o.spot,
                free,
                idle_since_ms: idle_since,
                draining: o.ci_status.as_deref() == Some("DRAINING")
                    || state.retiring.contains(&o.instance_id),
            });
        }
        let seen: HashSet<&str> = state
            .instances
            .iter()
            .map(|o| o.instance_id.as_str())
            .collect();
        state.idle_since.retain(|id, _| seen.contains(id.as_str()));
        let clock = Instant::now();
        state.unavailable.retain(|_, until| *until > clock);
        let enabled = ce.state == "ENABLED";
        let snapshot = provisioner::Snapshot {
            env: spec.clone(),
            catalog,
            fleet,
            demand: if enabled {
                demand.by_env.get(name).cloned().unwrap_or_default()
            } else {
                Vec::new()
            },
            now_ms: now,
            idle_timeout_ms: self.opts.idle_timeout.as_millis() as i64,
            unavailable_pools: state.unavailable.keys().cloned().collect::<BTreeSet<_>>(),
        };
        let plan = provisioner::plan(&snapshot);
        for req in &plan.launch {
            self.launch(ce, state, req, spec.allocation_strategy).await;
        }
        for id in &plan.retire {
            self.retire(name, state, id).await;
        }
        let desired = plan.desired_vcpus.min(i32::MAX as u64) as i32;
        if ce.compute_resources.as_ref().and_then(|c| c.desiredv_cpus) != Some(desired) {
            let _ = self.control.set_desired_vcpus(name, desired).await;
        }
    }

    async fn launch(
        &self,
        ce: &ComputeEnvironmentDetail,
        state: &mut EnvState,
        req: &provisioner::LaunchRequest,
        strategy: provisioner::AllocationStrategy,
    ) {
        let Some(template) = state.template.clone() else {
            return;
        };
        let name = &ce.compute_environment_name;
        let itype = ec2t::InstanceType::from(req.instance_type.as_str());
        let mut config = ec2t::FleetLaunchTemplateConfigRequest::builder()
            .launch_template_specification(
                ec2t::FleetLaunchTemplateSpecificationRequest::builder()
                    .launch_template_name(&template)
                    .version("$Latest")
                    .build(),
            );
        if req.subnets.is_empty() {
            config = config.overrides(
                ec2t::FleetLaunchTemplateOverridesRequest::builder()
                    .instance_type(itype.clone())
                    .build(),
            );
        }
        for subnet in &req.subnets {
            config = config.overrides(
                ec2t::FleetLaunchTemplateOverridesRequest::builder()
                    .instance_type(itype.clone())
                    .subnet_id(subnet)
                    .build(),
            );
        }
        let capacity_type = if req.spot {
            ec2t::DefaultTargetCapacityType::Spot
        } else {
            ec2t::DefaultTargetCapacityType::OnDemand
        };
        let mut tags = ec2t::TagSpecification::builder()
            .resource_type(ec2t::ResourceType::Instance)
            .tags(ec2_tag(TAG_MANAGED_BY, "flotilla"))
            .tags(ec2_tag(TAG_ENV, name))
            .tags(ec2_tag(TAG_ENV_UUID, &state.uuid));
        if let Some(user) = ce.compute_resources.as_ref().and_then(|c| c.tags.as_ref()) {
            for (k, v) in user {
                if !k.starts_with("flotilla:") && !k.starts_with("aws:") {
                    tags = tags.tags(ec2_tag(k, v));
                }
            }
        }
        // One token per logical launch: the SDK's retries of this call reuse it, so a retried
        // request that already landed cannot launch a second set.
        let token = uuid::Uuid::new_v4().to_string();
        let mut call = self
            .api
            .ec2
            .create_fleet()
            .r#type(ec2t::FleetType::Instant)
            .client_token(&token)
            .launch_template_configs(config.build())
            .target_capacity_specification(
                ec2t::TargetCapacitySpecificationRequest::builder()
                    .total_target_capacity(req.count as i32)
                    .default_target_capacity_type(capacity_type)
                    .build(),
            )
            .tag_specifications(tags.build());
        if req.spot {
            let alloc = match strategy {
                provisioner::AllocationStrategy::SpotCapacityOptimized => {
                    ec2t::SpotAllocationStrategy::CapacityOptimized
                }
                provisioner::AllocationStrategy::SpotPriceCapacityOptimized => {
                    ec2t::SpotAllocationStrategy::PriceCapacityOptimized
                }
                _ => ec2t::SpotAllocationStrategy::LowestPrice,
            };
            call = call.spot_options(
                ec2t::SpotOptionsRequest::builder()
                    .allocation_strategy(alloc)
                    .build(),
            );
        } else {
            call = call.on_demand_options(
                ec2t::OnDemandOptionsRequest::builder()
                    .allocation_strategy(ec2t::FleetOnDemandAllocationStrategy::LowestPrice)
                    .build(),
            );
        }
        tracing::info!(env = %name, instance_type = %req.instance_type, count = req.count, spot = req.spot, "launching instances");
        let until = Instant::now() + self.opts.capacity_backoff;
        match self.api.call("ec2", "CreateFleet", call.send()).await {
            Ok(out) => {
                let launched: usize = out.instances().iter().map(|i| i.instance_ids().len()).sum();
                for e in out.errors() {
                    let subnet = e
                        .launch_template_and_overrides()
                        .and_then(|l| l.overrides())
                        .and_then(|o| o.subnet_id())
                        .map(str::to_string);
                    tracing::warn!(env = %name, code = ?e.error_code(), message = ?e.error_message(), ?subnet, "create fleet error");
                    state
                        .unavailable
                        .insert((req.instance_type.clone(), subnet), until);
                }
                if launched < req.count as usize && out.errors().is_empty() {
                    // Partial fulfilment without a reason: treat the pool as short of capacity.
                    state
                        .unavailable
                        .insert((req.instance_type.clone(), None), until);
                }
                tracing::info!(env = %name, launched, wanted = req.count, "instances launched");
            }
            Err(e) if e.code.contains("InsufficientInstanceCapacity") => {
                state
                    .unavailable
                    .insert((req.instance_type.clone(), None), until);
            }
            Err(e) if !e.retryable => {
                tracing::warn!(env = %name, error = %e, "create fleet refused; environment invalid");
                state.invalid = Some(format!(
                    "CLIENT_ERROR - {e} (fix the environment with UpdateComputeEnvironment)"
                ));
            }
            Err(e) => tracing::warn!(env = %name, error = %e, "create fleet failed"),
        }
    }

    async fn retire(&self, env: &str, state: &mut EnvState, instance_id: &str) {
        let ci = state
            .instances
            .iter()
            .find(|o| o.instance_id == instance_id)
            .and_then(|o| o.container_instance_arn.clone());
        // The plan saw the engine's demand as published before this pass; the engine may have
        // placed a job here since. Look again, and take the instance out of the engine's view
        // before draining it, so that nothing new lands on it.
        if let Some(arn) = &ci
            && self.fleet.demand().used_by_instance.contains_key(arn)
        {
            return;
        }
        if let Some(mut f) = self.fleet.env(env) {
            f.instances.retain(|i| i.instance_id != instance_id);
            self.fleet.set_env(env, Some(f));
        }
        tracing::info!(instance_id, "retiring idle instance");
        state.retiring.insert(instance_id.to_string());
        if let Ok(mut r) = self.retired.lock() {
            r.insert(instance_id.to_string());
        }
        if let Some(arn) = ci {
            let _ = self
                .api
                .call(
                    "ecs",
                    "UpdateContainerInstancesState",
                    self.api
                        .ecs
                        .update_container_instances_state()
                        .cluster(&state.cluster)
                        .container_instances(&arn)
                        .status(ecst::ContainerInstanceStatus::Draining)
                        .send(),
                )
                .await;
            self.deregister(&state.cluster, &arn).await;
        }
        if let Err(e) = self.terminate(&[instance_id.to_string()]).await {
            // Still marked retiring, so not offered to the engine; the next plan retries.
            state.retiring.remove(instance_id);
            tracing::warn!(instance_id, error = %e, "terminate failed");
        }
    }

    /// Deregisters a container instance even with tasks on it (they are stopped or already
    /// gone); best effort: a failure leaves it for the next pass or the orphan sweep.
    async fn deregister(&self, cluster: &str, container_instance_arn: &str) {
        let r = self
            .api
            .call(
                "ecs",
                "DeregisterContainerInstance",
                self.api
                    .ecs
                    .deregister_container_instance()
                    .cluster(cluster)
                    .container_instance(container_instance_arn)
                    .force(true)
                    .send(),
            )
            .await;
        if let Err(e) = r {
            tracing::debug!(error = %e, "deregister failed");
        }
    }

    async fn terminate(&self, ids: &[String]) -> Result<(), AwsError> {
        if ids.is_empty() {
            return Ok(());
        }
        for chunk in ids.chunks(500) {
            self.api
                .call(
                    "ec2",
                    "TerminateInstances",
                    self.api
                        .ec2
                        .terminate_instances()
                        .set_instance_ids(Some(chunk.to_vec()))
                        .send(),
                )
                .await?;
        }
        Ok(())
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

    /// Terminates instances tagged as Flotilla's whose environment no longer exists (deleted
    /// while this server was down, or a launch that landed after the deletion).
    async fn sweep_orphans(&self, live: &HashSet<String>) -> Result<(), AwsError> {
        let tagged = self
            .describe_instances(vec![
                ec2t::Filter::builder()
                    .name(format!("tag:{TAG_MANAGED_BY}"))
                    .values("flotilla")
                    .build(),
                ec2t::Filter::builder()
                    .name("instance-state-name")
                    .values("pending")
                    .values("running")
                    .values("stopping")
                    .values("stopped")
                    .build(),
            ])
            .await?;
        let orphans: Vec<String> = tagged
            .iter()
            .filter(|i| {
                let uuid = i
                    .tags()
                    .iter()
                    .find(|t| t.key() == Some(TAG_ENV_UUID))
                    .and_then(|t| t.value());
                uuid.is_some_and(|u| !live.contains(u))
            })
            .filter_map(|i| i.instance_id().map(str::to_string))
            .collect();
        if !orphans.is_empty() {
            tracing::warn!(
                count = orphans.len(),
                ?orphans,
                "terminating orphaned instances"
            );
            self.terminate(&orphans).await?;
        }
        Ok(())
    }

    // ------------------------------------------------------------ tasks

    async fn task_definition(&self, spec: &AttemptSpec) -> Result<String, AwsError> {
        let def_name = definition_name(&spec.job_definition).to_string();
        let family = format!("flotilla-{}", sanitize(&def_name));
        let image = spec
            .image
            .clone()
            .unwrap_or_else(|| "public.ecr.aws/amazonlinux/amazonlinux:latest".into());
        let cpu = (spec.milli_vcpus * 1024).div_ceil(1000).max(128) as i32;
        let memory = spec.memory_mib.max(128) as i32;
        let key = format!("{family}\n{image}\n{cpu}\n{memory}\n{def_name}");
        let mut cache = self.taskdefs.lock().await;
        if let Some(arn) = cache.get(&key) {
            return Ok(arn.clone());
        }
        let log = ecst::LogConfiguration::builder()
            .log_driver(ecst::LogDriver::Awslogs)
            .options("awslogs-group", JOB_LOG_GROUP)
            .options("awslogs-region", self.opts.api.region.clone())
            .options("awslogs-stream-prefix", def_name.clone())
            .build()
            .map_err(|e| AwsError {
                service: "ecs",
                operation: "RegisterTaskDefinition",
                code: "Build".into(),
                message: e.to_string(),
                retryable: false,
            })?;
        let out = self
            .api
            .call(
                "ecs",
                "RegisterTaskDefinition",
                self.api
                    .ecs
                    .register_task_definition()
                    .family(&family)
                    .requires_compatibilities(ecst::Compatibility::Ec2)
                    .container_definitions(
                        ecst::ContainerDefinition::builder()
                            .name(CONTAINER)
                            .image(&image)
                            .essential(true)
                            .cpu(cpu)
                            .memory(memory)
                            .log_configuration(log)
                            .build(),
                    )
                    .send(),
            )
            .await?;
        let arn = out
            .task_definition()
            .and_then(|t| t.task_definition_arn())
            .unwrap_or(&family)
            .to_string();
        cache.insert(key, arn.clone());
        Ok(arn)
    }

    fn untrack(&self, job_id: &str, attempt: u32) -> bool {
        let Ok(mut t) = self.tasks.lock() else {
            return false;
        };
        if t.get(job_id).is_some_and(|x| x.attempt == attempt) {
            t.remove(job_id);
            return true;
        }
        false
    }

    fn not_started(&self, job_id: &str, attempt: u32, reason: String) {
        if self.untrack(job_id, attempt) {
            tracing::info!(job_id, attempt, %reason, "attempt not started");
            self.emit(RuntimeEvent::NotStarted {
                job_id: job_id.to_string(),
                attempt,
                reason,
            });
        }
    }

    fn failed_to_start(&self, job_id: &str, attempt: u32, reason: String) {
        if self.untrack(job_id, attempt) {
            tracing::warn!(job_id, attempt, %reason, "attempt failed to start");
            self.emit(RuntimeEvent::Exited {
                job_id: job_id.to_string(),
                attempt,
                exit_code: None,
                reason: Some(reason),
            });
        }
    }

    async fn find_task(&self, cluster: &str, key: &str) -> Result<Option<String>, AwsError> {
        for status in [ecst::DesiredStatus::Running, ecst::DesiredStatus::Stopped] {
            let out = self
                .api
                .call(
                    "ecs",
                    "ListTasks",
                    self.api
                        .ecs
                        .list_tasks()
                        .cluster(cluster)
                        .started_by(key)
                        .desired_status(status)
                        .send(),
                )
                .await?;
            if let Some(arn) = out.task_arns().first() {
                return Ok(Some(arn.clone()));
            }
        }
        Ok(None)
    }

    /// Records the task of an attempt; reports `Started` when ECS already says RUNNING.
    fn adopt(&self, job_id: &str, attempt: u32, arn: String, running: bool) -> bool {
        {
            let Ok(mut t) = self.tasks.lock() else {
                return false;
            };
            let Some(x) = t.get_mut(job_id).filter(|x| x.attempt == attempt) else {
                return false;
            };
            x.task_arn = Some(arn.clone());
            x.adopting = false;
            if running && !x.started {
                x.started = true;
                self.emit(RuntimeEvent::Started {
                    job_id: job_id.to_string(),
                    attempt,
                    task_id: arn,
                });
            }
            x.stop_pending
        }
    }

    async fn stop_task(&self, cluster: &str, arn: &str) -> Result<(), RuntimeError> {
        self.api
            .call(
                "ecs",
                "StopTask",
                self.api
                    .ecs
                    .stop_task()
                    .cluster(cluster)
                    .task(arn)
                    .reason("Terminated by Flotilla: the job was terminated or timed out")
                    .send(),
            )
            .await
            .map(|_| ())
            .map_err(|e| RuntimeError::Unavailable(e.to_string()))
    }

    async fn poll_tasks(&self) {
        let mut by_cluster: HashMap<String, Vec<(String, u32, String)>> = HashMap::new();
        let mut adopting = Vec::new();
        if let Ok(t) = self.tasks.lock() {
            for (job, x) in t.iter() {
                match &x.task_arn {
                    Some(arn) => by_cluster.entry(x.cluster.clone()).or_default().push((
                        job.clone(),
                        x.attempt,
                        arn.clone(),
                    )),
                    None if x.adopting => {
                        adopting.push((job.clone(), x.attempt, x.cluster.clone()))
                    }
                    None => {}
                }
            }
        }
        for (job, attempt, cluster) in adopting {
            match self.find_task(&cluster, &started_by(&job, attempt)).await {
                Ok(Some(arn)) => {
                    tracing::info!(job_id = %job, attempt, task = %arn, "adopted running task");
                    self.adopt(&job, attempt, arn, false);
                }
                Ok(None) => self.not_started(
                    &job,
                    attempt,
                    "the server restarted before ECS started this attempt; it was never run".into(),
                ),
                Err(e) => tracing::warn!(job_id = %job, error = %e, "task lookup failed; retrying"),
            }
        }
        for (cluster, list) in by_cluster {
            for chunk in list.chunks(100) {
                let arns: Vec<String> = chunk.iter().map(|(_, _, a)| a.clone()).collect();
                let out = match self
                    .api
                    .call(
                        "ecs",
                        "DescribeTasks",
                        self.api
                            .ecs
                            .describe_tasks()
                            .cluster(&cluster)
                            .set_tasks(Some(arns))
                            .send(),
                    )
                    .await
                {
                    Ok(o) => o,
                    Err(e) => {
                        tracing::warn!(%cluster, error = %e, "describe tasks failed; retrying next round");
                        continue;
                    }
                };
                let by_arn: HashMap<&str, (&str, u32)> = chunk
                    .iter()
                    .map(|(j, a, arn)| (arn.as_str(), (j.as_str(), *a)))
                    .collect();
                for task in out.tasks() {
                    let Some(&(job, attempt)) = task.task_arn().and_then(|a| by_arn.get(a)) else {
                        continue;
                    };
                    self.observe_task(job, attempt, task).await;
                }
                for f in out.failures() {
                    if let Some(&(job, attempt)) = f.arn().and_then(|a| by_arn.get(a)) {
                        self.failed_to_start(
                            job,
                            attempt,
                            format!(
                                "ECS has no record of the task: {}",
                                f.reason().unwrap_or("MISSING")
                            ),
                        );
                    }
                }
            }
        }
    }

    async fn observe_task(&self, job: &str, attempt: u32, task: &ecst::Task) {
        let arn = task.task_arn().unwrap_or_default().to_string();
        match task.last_status() {
            Some("STOPPED") => {
                let container = task
                    .containers()
                    .iter()
                    .find(|c| c.name() == Some(CONTAINER))
                    .or_else(|| task.containers().first());
                let exit_code = container.and_then(|c| c.exit_code());
                let stopped = task.stopped_reason().unwrap_or_default().to_string();
                if exit_code.is_none()
                    && stopped.starts_with("Host EC2 (instance")
                    && (self.retired_host(&stopped) || self.spot_reclaimed(&stopped).await)
                {
                    if self.untrack(job, attempt) {
                        tracing::warn!(job_id = job, attempt, reason = %stopped, "host reclaimed (spot interruption or a scale-in race)");
                        self.emit(RuntimeEvent::Interrupted {
                            job_id: job.to_string(),
                            attempt,
                            reason: stopped,
                        });
                    }
                    return;
                }
                let started = self
                    .tasks
                    .lock()
                    .ok()
                    .and_then(|t| t.get(job).map(|x| x.started))
                    .unwrap_or(false);
                if !self.untrack(job, attempt) {
                    return;
                }
                if !started && task.started_at().is_some() {
                    self.emit(RuntimeEvent::Started {
                        job_id: job.to_string(),
                        attempt,
                        task_id: arn,
                    });
                }
                let reason = container
                    .and_then(|c| c.reason())
                    .map(str::to_string)
                    .or_else(|| exit_code.is_none().then(|| stopped.clone()))
                    .filter(|r| !r.is_empty());
                self.emit(RuntimeEvent::Exited {
                    job_id: job.to_string(),
                    attempt,
                    exit_code,
                    reason,
                });
            }
            Some("RUNNING") => {
                self.adopt(job, attempt, arn, true);
            }
            _ => {}
        }
    }

    fn retired_host(&self, stopped_reason: &str) -> bool {
        host_of(stopped_reason).is_some_and(|id| self.retired.lock().is_ok_and(|r| r.contains(id)))
    }

    /// Whether the host named in a "Host EC2 (instance i-…) terminated." reason was a Spot
    /// instance that EC2 reclaimed (not one Flotilla retired, not an on-demand host lost).
    async fn spot_reclaimed(&self, stopped_reason: &str) -> bool {
        let Some(id) = host_of(stopped_reason) else {
            return false;
        };
        if let Some(code) = self.gone.lock().ok().and_then(|g| g.get(id).cloned()) {
            return code == SPOT_TERMINATION;
        }
        let out = self
            .api
            .call(
                "ec2",
                "DescribeInstances",
                self.api.ec2.describe_instances().instance_ids(id).send(),
            )
            .await;
        let Ok(out) = out else {
            // Unknown: a Spot environment's host most likely went the Spot way; the attempt is
            // retried either way, this only decides whether it counts.
            return false;
        };
        let inst = out.reservations().iter().flat_map(|r| r.instances()).next();
        let code = inst
            .and_then(|i| i.state_reason())
            .and_then(|s| s.code())
            .unwrap_or_default()
            .to_string();
        let spot = inst
            .is_some_and(|i| i.instance_lifecycle() == Some(&ec2t::InstanceLifecycleType::Spot));
        let reclaimed = code == SPOT_TERMINATION || (spot && code.starts_with("Server."));
        if let Ok(mut g) = self.gone.lock() {
            g.insert(
                id.to_string(),
                if reclaimed {
                    SPOT_TERMINATION.to_string()
                } else {
                    code
                },
            );
        }
        reclaimed
    }
}

enum Setup {
    /// A configuration a person must fix: the environment becomes INVALID with this reason.
    Invalid(String),
    Aws(AwsError),
}

#[async_trait::async_trait]
impl Runtime for AwsDriver {
    fn name(&self) -> &'static str {
        "ecs"
    }

    async fn start(&self, spec: AttemptSpec) -> Result<(), RuntimeError> {
        let Target::Ecs {
            cluster,
            container_instance_arn,
            ..
        } = spec.target.clone()
        else {
            return Err(RuntimeError::Rejected("not an ECS attempt".into()));
        };
        let (job_id, attempt) = (spec.job_id.clone(), spec.attempt);
        if let Ok(mut t) = self.tasks.lock() {
            t.insert(
                job_id.clone(),
                Tracked {
                    attempt,
                    cluster: cluster.clone(),
                    task_arn: None,
                    started: false,
                    stop_pending: false,
                    adopting: false,
                },
            );
        }
        let td = match self.task_definition(&spec).await {
            Ok(td) => td,
            Err(e) if e.retryable => {
                self.not_started(&job_id, attempt, format!("waiting for AWS: {e}"));
                return Ok(());
            }
            Err(e) => {
                self.failed_to_start(&job_id, attempt, format!("CannotCreateTaskDefinition: {e}"));
                return Ok(());
            }
        };
        let key = started_by(&job_id, attempt);
        let overrides = ecst::TaskOverride::builder()
            .container_overrides(
                ecst::ContainerOverride::builder()
                    .name(CONTAINER)
                    .set_command((!spec.command.is_empty()).then(|| spec.command.clone()))
                    .set_environment(Some(
                        spec.env
                            .iter()
                            .map(|(k, v)| ecst::KeyValuePair::builder().name(k).value(v).build())
                            .collect(),
                    ))
                    .build(),
            )
            .build();
        let mut tries = 0;
        loop {
            let r = self
                .api
                .call(
                    "ecs",
                    "StartTask",
                    self.api
                        .ecs
                        .start_task()
                        .cluster(&cluster)
                        .task_definition(&td)
                        .container_instances(&container_instance_arn)
                        .started_by(&key)
                        .overrides(overrides.clone())
                        .send(),
                )
                .await;
            match r {
                Ok(out) => {
                    if let Some(task) = out.tasks().first() {
                        let arn = task.task_arn().unwrap_or_default().to_string();
                        let running = task.last_status() == Some("RUNNING");
                        tracing::info!(%job_id, attempt, task = %arn, "ecs task started");
                        if self.adopt(&job_id, attempt, arn.clone(), running) {
                            self.stop_task(&cluster, &arn).await?;
                        }
                        return Ok(());
                    }
                    let reason = out
                        .failures()
                        .first()
                        .map(|f| {
                            format!(
                                "StartTask on {}: {}{}",
                                name_of_arn(&container_instance_arn),
                                f.reason().unwrap_or("failed"),
                                f.detail().map(|d| format!(" ({d})")).unwrap_or_default()
                            )
                        })
                        .unwrap_or_else(|| "StartTask returned no task".into());
                    self.not_started(&job_id, attempt, reason);
                    return Ok(());
                }
                Err(e) if e.retryable && tries < 3 => {
                    tries += 1;
                    // The call may have landed: look for the attempt's task before trying again.
                    if let Ok(Some(arn)) = self.find_task(&cluster, &key).await {
                        if self.adopt(&job_id, attempt, arn.clone(), false) {
                            self.stop_task(&cluster, &arn).await?;
                        }
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(200 * (1 << tries))).await;
                }
                Err(e) if e.retryable => {
                    self.not_started(&job_id, attempt, format!("waiting for AWS: {e}"));
                    return Ok(());
                }
                Err(e) => {
                    self.failed_to_start(&job_id, attempt, format!("CannotStartTask: {e}"));
                    return Ok(());
                }
            }
        }
    }

    async fn stop(
        &self,
        job_id: &str,
        attempt: u32,
        _signal: StopSignal,
    ) -> Result<(), RuntimeError> {
        // ECS sends SIGTERM, then SIGKILL after the agent's stop timeout: one StopTask does both,
        // and a second (for the engine's SIGKILL) is harmless.
        let target = {
            let Ok(mut t) = self.tasks.lock() else {
                return Ok(());
            };
            let Some(x) = t.get_mut(job_id).filter(|x| x.attempt == attempt) else {
                return Ok(());
            };
            match &x.task_arn {
                Some(arn) => Some((x.cluster.clone(), arn.clone())),
                None => {
                    x.stop_pending = true;
                    None
                }
            }
        };
        match target {
            Some((cluster, arn)) => self.stop_task(&cluster, &arn).await,
            None => Ok(()),
        }
    }

    async fn recover(&self, expected: Vec<ExpectedAttempt>) -> Result<(), RuntimeError> {
        let Ok(mut t) = self.tasks.lock() else {
            return Ok(());
        };
        for e in expected {
            let Target::Ecs { cluster, .. } = e.target else {
                continue;
            };
            // The task loop finds each by `startedBy`, then follows it as usual.
            t.insert(
                e.job_id,
                Tracked {
                    attempt: e.attempt,
                    cluster,
                    task_arn: None,
                    started: false,
                    stop_pending: false,
                    adopting: true,
                },
            );
        }
        Ok(())
    }
}
