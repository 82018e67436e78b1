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
//! Attempts start through [`Runtime::start`]: a task definition derived from the job
//! definition (cached by content), then StartTask on the container instance the engine chose,
//! with `startedBy` naming the attempt, so that after a restart [`Runtime::recover`] finds and
//! adopts the very task and never starts a second one.
//!
//! Nothing here runs inside the engine's loop, and nothing waits on the engine: the driver reads
//! and reports through [`ControlPlane`] and [`FleetView`] only.
//!
//! Where things are:
//! - `mod.rs`: the driver, its state, [`AwsDriver::connect`] and [`AwsDriver::spawn`] (both loops);
//! - `environments.rs`: one control pass; clusters, launch templates, status, teardown;
//! - `observe.rs`: an environment's EC2 instances joined with its container instances;
//! - `scale.rs`: the provisioner's plan as CreateFleet and retire/terminate; the orphan sweep;
//! - `ami.rs`: the AMI of each instance type (ec2Configuration, SSM's ECS-optimized AMIs);
//! - `templates.rs`: the user's launch templates merged into the ones Flotilla launches from;
//! - `instance_types.rs`: capacities and Spot prices the plans are made with;
//! - `tasks.rs`: the [`Runtime`] impl (StartTask, StopTask, recover) and the task loop;
//! - `taskdef.rs`: task definitions, registered once per content;
//! - `api.rs`: the EC2/ECS clients and the rate limit, retries and timeout of every call.
//!
//! [`Runtime`]: crate::compute::Runtime
//! [`Runtime::start`]: crate::compute::Runtime::start
//! [`Runtime::recover`]: crate::compute::Runtime::recover

mod ami;
mod api;
mod environments;
mod instance_types;
mod observe;
mod scale;
mod taskdef;
mod tasks;
mod templates;

pub use api::{Api, ApiOptions, AwsError, RateLimit, default_limit};

use crate::compute::RuntimeEvent;
use crate::compute::fleet::FleetView;
use crate::compute::ports::ControlPlane;
use crate::provisioner::{self, Resources};
use aws_sdk_ec2::types as ec2t;
use aws_sdk_ecs::types as ecst;
use sha2::Digest;
use std::collections::{HashMap, HashSet};
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
/// On every instance: the infrastructure generation of its environment when it was launched (a
/// hash of the settings an infrastructure update changes). An instance of an older one is
/// replaced.
pub const TAG_GENERATION: &str = "flotilla:infrastructure";
/// The container name in every task definition; the awslogs stream is
/// `<job definition name>/default/<task id>`, as AWS Batch names it.
const CONTAINER: &str = "default";

#[derive(Debug, Clone)]
pub struct AwsOptions {
    pub api: ApiOptions,
    /// Between fleet refreshes and between DescribeTasks rounds.
    pub poll_interval: Duration,
    /// How long an instance stays idle before it is drained and terminated.
    pub idle_timeout: Duration,
    /// `--aws-ami`: the AMI of every instance type whose environment names none (no
    /// imageIdOverride, no imageId), instead of the ECS-optimized one SSM recommends.
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
    /// The `flotilla:infrastructure` tag it was launched with (none: launched before there was
    /// one, never replaced for it).
    generation: Option<String>,
    /// EC2's launch time (epoch ms); `None` for UNMANAGED environments' instances.
    launched_at: Option<i64>,
}

/// What the driver last told the instance ledger of one environment, and the price each live
/// instance is charged at (fixed when first seen, so that a Spot price refreshed later does not
/// re-price an instance bought earlier).
#[derive(Debug, Default)]
struct Ledger {
    /// The instance IDs last recorded as live; `None`: record at the next observation.
    recorded: Option<HashSet<String>>,
    prices: HashMap<String, crate::compute::fleet::InstancePrice>,
    /// Live instances of a type the catalog does not price (said once each).
    unpriced: HashSet<String>,
}

impl Observed {
    /// Launched for an older infrastructure generation than `current`: an infrastructure update
    /// replaces it.
    fn outdated(&self, current: &str) -> bool {
        self.generation.as_deref().is_some_and(|g| g != current)
    }
}

#[derive(Debug, Default)]
struct EnvState {
    uuid: String,
    cluster: String,
    cluster_arn: Option<String>,
    /// The cluster was created by Flotilla (and is deleted with the environment).
    own_cluster: bool,
    /// The launch templates Flotilla created: the environment's, then one per override of the
    /// user's `launchTemplate` (in its order).
    templates: Vec<String>,
    /// The user's `launchTemplate`, parsed at setup: which override serves an instance type.
    user_template: Option<crate::model::launch_template::LaunchTemplate>,
    /// AMIs named by the user's templates, for types resolved after setup.
    template_amis: ami::TemplateAmis,
    /// The AMI each allowed instance type launches with, resolved at setup.
    images: std::collections::BTreeMap<String, ami::Resolved>,
    ready: bool,
    managed: bool,
    /// `computeResources` as last set up; a change (UpdateComputeEnvironment) sets up again.
    fingerprint: String,
    /// AWS refused a launch for a reason a person must fix: no launches until the environment
    /// is updated.
    invalid: Option<String>,
    instances: Vec<Observed>,
    idle_since: HashMap<String, i64>,
    /// Instances seen running a job: the environment's scale-down delay applies to them
    /// (AWS Batch's does not to an instance that has run none).
    worked: HashSet<String>,
    /// The environment's infrastructure generation ([`TAG_GENERATION`]).
    generation: String,
    /// Instances of an older generation, and when each was first seen so (the update policy's
    /// timeout runs from then).
    outdated_since: HashMap<String, Instant>,
    /// The `image_epoch` the AMIs were last resolved for (a newer one resolves past the cache).
    resolved_epoch: Option<u64>,
    /// How many replaced instances the status reason last said.
    replacing_shown: usize,
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
    /// SSM parameter → (AMI ID, when resolved).
    amis: Mutex<HashMap<String, (String, Instant)>>,
    /// Environment name → its instance ledger's state (cost, see `environments::priced`).
    ledger: Mutex<HashMap<String, Ledger>>,
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

fn ec2_tag(k: &str, v: &str) -> ec2t::Tag {
    ec2t::Tag::builder().key(k).value(v).build()
}

fn ecs_tag(k: &str, v: &str) -> ecst::Tag {
    ecst::Tag::builder().key(k).value(v).build()
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
            amis: Mutex::default(),
            ledger: Mutex::default(),
        })
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
}
