//! AWS Batch wire shapes (botocore `batch/2016-08-10/service-2.json`), camelCase as on the wire.
//!
//! Only the fields Flotilla acts on are typed; nested shapes it merely stores and returns
//! (volumes, linuxParameters, eksProperties, …) travel as JSON values so nothing a client sends is
//! lost. No I/O here.

pub mod arn;
mod catalog;
pub mod container;
pub mod ec2_configuration;
pub mod launch_template;
pub mod scaling_policy;
pub mod status;
pub mod update_policy;
pub mod validate;

pub use catalog::Catalog;

pub use status::{
    ConsumableResourceType, DefinitionStatus, DependencyType, JobStatus, QuantityOperation,
    ResourceState, ResourceStatus, RetryAction, UnknownValue,
};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use serde_with::skip_serializing_none;
use std::collections::BTreeMap;

pub type Tags = BTreeMap<String, String>;

/// AWS Batch job states, in lifecycle order.
pub const JOB_STATUSES: [&str; 7] = [
    "SUBMITTED",
    "PENDING",
    "RUNNABLE",
    "STARTING",
    "RUNNING",
    "SUCCEEDED",
    "FAILED",
];

/// Flotilla's extension to `computeResources.type`: jobs run on the server's own host.
pub const CR_TYPE_LOCAL: &str = "LOCAL";

// ---------------------------------------------------------------- compute environments

/// `ComputeResource` and `ComputeResourceUpdate` in one shape: every field optional; validation
/// decides what a create or an update requires.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ComputeResource {
    #[serde(rename = "type")]
    pub cr_type: Option<String>,
    pub allocation_strategy: Option<String>,
    pub minv_cpus: Option<i32>,
    pub maxv_cpus: Option<i32>,
    pub desiredv_cpus: Option<i32>,
    pub instance_types: Option<Vec<String>>,
    pub image_id: Option<String>,
    pub subnets: Option<Vec<String>>,
    pub security_group_ids: Option<Vec<String>>,
    pub ec2_key_pair: Option<String>,
    pub instance_role: Option<String>,
    pub tags: Option<Tags>,
    pub placement_group: Option<String>,
    pub bid_percentage: Option<i32>,
    pub spot_iam_fleet_role: Option<String>,
    pub launch_template: Option<Value>,
    pub ec2_configuration: Option<Value>,
    pub scaling_policy: Option<Value>,
    /// Only in `ComputeResourceUpdate`.
    pub update_to_latest_image_version: Option<bool>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateComputeEnvironmentRequest {
    pub compute_environment_name: String,
    #[serde(rename = "type")]
    pub ce_type: String,
    pub state: Option<String>,
    pub unmanagedv_cpus: Option<i32>,
    pub compute_resources: Option<ComputeResource>,
    pub service_role: Option<String>,
    pub tags: Option<Tags>,
    pub eks_configuration: Option<Value>,
    pub context: Option<String>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateComputeEnvironmentRequest {
    pub compute_environment: String,
    pub state: Option<String>,
    pub unmanagedv_cpus: Option<i32>,
    pub compute_resources: Option<ComputeResource>,
    pub service_role: Option<String>,
    pub update_policy: Option<Value>,
    pub context: Option<String>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ComputeEnvironmentDetail {
    pub compute_environment_name: String,
    pub compute_environment_arn: String,
    pub unmanagedv_cpus: Option<i32>,
    pub ecs_cluster_arn: Option<String>,
    pub tags: Option<Tags>,
    #[serde(rename = "type")]
    pub ce_type: String,
    pub state: ResourceState,
    pub status: ResourceStatus,
    pub status_reason: Option<String>,
    pub compute_resources: Option<ComputeResource>,
    pub service_role: Option<String>,
    pub update_policy: Option<Value>,
    pub eks_configuration: Option<Value>,
    pub container_orchestration_type: Option<String>,
    pub uuid: Option<String>,
    pub context: Option<String>,
    /// The AMI of each image type as the AWS driver resolved it at setup: what
    /// DescribeComputeEnvironments shows as `computeResources.ec2Configuration`. Never stored
    /// (the driver resolves again after a restart) and never read back as the user's setting.
    #[serde(skip)]
    pub resolved_ec2_configuration: Option<Value>,
    /// Counts the UpdateComputeEnvironment calls with `updateToLatestImageVersion`: part of the
    /// environment's infrastructure generation (so its instances are replaced) and the driver's
    /// cue to resolve the AMIs again past its cache. Stored, never on the wire.
    #[serde(default, rename = "_flotillaImageEpoch")]
    pub image_epoch: Option<u64>,
}

impl ComputeEnvironmentDetail {
    /// The environment as DescribeComputeEnvironments answers it.
    pub fn described(&self) -> ComputeEnvironmentDetail {
        let mut out = self.clone();
        out.image_epoch = None;
        if let (Some(r), Some(cr)) = (&self.resolved_ec2_configuration, &mut out.compute_resources)
        {
            cr.ec2_configuration = Some(r.clone());
        }
        out
    }
}

/// The two kinds of compute environment the AWS driver runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AwsKind {
    /// MANAGED EC2 or SPOT: Flotilla launches and retires the instances.
    Managed,
    /// UNMANAGED: someone else registers container instances in the ECS cluster.
    Unmanaged,
}

impl ComputeEnvironmentDetail {
    /// What kind of AWS environment this is; `None` for LOCAL (and kinds Flotilla does not run).
    pub fn aws_kind(&self) -> Option<AwsKind> {
        match self.ce_type.as_str() {
            "UNMANAGED" => Some(AwsKind::Unmanaged),
            "MANAGED" => match self.compute_resources.as_ref()?.cr_type.as_deref()? {
                "EC2" | "SPOT" => Some(AwsKind::Managed),
                _ => None,
            },
            _ => None,
        }
    }
}

// ---------------------------------------------------------------- job queues

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ComputeEnvironmentOrder {
    pub order: i32,
    pub compute_environment: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JobStateTimeLimitAction {
    pub reason: String,
    pub state: String,
    pub max_time_seconds: i32,
    pub action: String,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateJobQueueRequest {
    pub job_queue_name: String,
    pub state: Option<String>,
    pub scheduling_policy_arn: Option<String>,
    pub priority: i32,
    pub compute_environment_order: Option<Vec<ComputeEnvironmentOrder>>,
    pub service_environment_order: Option<Value>,
    pub job_queue_type: Option<String>,
    pub tags: Option<Tags>,
    pub job_state_time_limit_actions: Option<Vec<JobStateTimeLimitAction>>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateJobQueueRequest {
    pub job_queue: String,
    pub state: Option<String>,
    pub scheduling_policy_arn: Option<String>,
    pub priority: Option<i32>,
    pub compute_environment_order: Option<Vec<ComputeEnvironmentOrder>>,
    pub service_environment_order: Option<Value>,
    pub job_state_time_limit_actions: Option<Vec<JobStateTimeLimitAction>>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JobQueueDetail {
    pub job_queue_name: String,
    pub job_queue_arn: String,
    pub state: ResourceState,
    pub scheduling_policy_arn: Option<String>,
    pub status: ResourceStatus,
    pub status_reason: Option<String>,
    pub priority: i32,
    /// Always holds ARNs, whatever the request named.
    pub compute_environment_order: Vec<ComputeEnvironmentOrder>,
    pub job_queue_type: Option<String>,
    pub tags: Option<Tags>,
    pub job_state_time_limit_actions: Option<Vec<JobStateTimeLimitAction>>,
}

// ---------------------------------------------------------------- job definitions

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyValuePair {
    pub name: Option<String>,
    pub value: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ResourceRequirement {
    pub value: String,
    #[serde(rename = "type")]
    pub rtype: String,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerProperties {
    pub image: Option<String>,
    pub vcpus: Option<i32>,
    pub memory: Option<i32>,
    pub command: Option<Vec<String>>,
    pub job_role_arn: Option<String>,
    pub execution_role_arn: Option<String>,
    pub environment: Option<Vec<KeyValuePair>>,
    pub resource_requirements: Option<Vec<ResourceRequirement>>,
    pub user: Option<String>,
    pub instance_type: Option<String>,
    /// Everything else the shape allows (volumes, mountPoints, linuxParameters, …), kept verbatim.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EvaluateOnExit {
    pub on_status_reason: Option<String>,
    pub on_reason: Option<String>,
    pub on_exit_code: Option<String>,
    pub action: String,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RetryStrategy {
    pub attempts: Option<i32>,
    pub evaluate_on_exit: Option<Vec<EvaluateOnExit>>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct JobTimeout {
    pub attempt_duration_seconds: Option<i32>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterJobDefinitionRequest {
    pub job_definition_name: String,
    #[serde(rename = "type")]
    pub jd_type: String,
    pub parameters: Option<BTreeMap<String, String>>,
    pub scheduling_priority: Option<i32>,
    pub container_properties: Option<ContainerProperties>,
    pub node_properties: Option<Value>,
    pub retry_strategy: Option<RetryStrategy>,
    pub propagate_tags: Option<bool>,
    pub timeout: Option<JobTimeout>,
    pub tags: Option<Tags>,
    pub platform_capabilities: Option<Vec<String>>,
    pub eks_properties: Option<Value>,
    pub ecs_properties: Option<Value>,
    pub consumable_resource_properties: Option<ConsumableResourceProperties>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JobDefinition {
    pub job_definition_name: String,
    pub job_definition_arn: String,
    pub revision: i32,
    pub status: DefinitionStatus,
    #[serde(rename = "type")]
    pub jd_type: String,
    pub scheduling_priority: Option<i32>,
    pub parameters: Option<BTreeMap<String, String>>,
    pub retry_strategy: Option<RetryStrategy>,
    pub container_properties: Option<ContainerProperties>,
    pub timeout: Option<JobTimeout>,
    pub tags: Option<Tags>,
    pub propagate_tags: Option<bool>,
    pub platform_capabilities: Option<Vec<String>>,
    pub container_orchestration_type: Option<String>,
    pub consumable_resource_properties: Option<ConsumableResourceProperties>,
}

// ---------------------------------------------------------------- scheduling policies

#[skip_serializing_none]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ShareAttributes {
    pub share_identifier: String,
    /// `Float` on the wire, held as `f64`: a 32-bit value widened for JSON reads back as
    /// 0.10000000149011612 where the client sent 0.1.
    pub weight_factor: Option<f64>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FairsharePolicy {
    pub share_decay_seconds: Option<i32>,
    pub compute_reservation: Option<i32>,
    pub share_distribution: Option<Vec<ShareAttributes>>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateSchedulingPolicyRequest {
    pub name: String,
    pub fairshare_policy: Option<FairsharePolicy>,
    pub quota_share_policy: Option<Value>,
    pub tags: Option<Tags>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateSchedulingPolicyRequest {
    pub arn: String,
    pub fairshare_policy: Option<FairsharePolicy>,
    pub quota_share_policy: Option<Value>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SchedulingPolicyDetail {
    pub name: String,
    pub arn: String,
    pub fairshare_policy: Option<FairsharePolicy>,
    pub quota_share_policy: Option<Value>,
    pub tags: Option<Tags>,
}

// ---------------------------------------------------------------- consumable resources

/// `ConsumableResourceRequirement`: how much of one resource a job holds while it runs.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ConsumableResourceRequirement {
    /// Name or ARN of the resource.
    pub consumable_resource: Option<String>,
    pub quantity: Option<i64>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ConsumableResourceProperties {
    pub consumable_resource_list: Option<Vec<ConsumableResourceRequirement>>,
}

impl ConsumableResourceProperties {
    /// (resource name, quantity) per entry; an ARN gives its name. Entries without a resource or
    /// with a quantity below 1 are skipped (validation rejects them at the API).
    pub fn needs(&self) -> impl Iterator<Item = (&str, u64)> {
        self.consumable_resource_list
            .iter()
            .flatten()
            .filter_map(|r| {
                let name = arn::name_of_arn(r.consumable_resource.as_deref()?);
                let q = u64::try_from(r.quantity?).ok().filter(|q| *q > 0)?;
                Some((name, q))
            })
    }
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateConsumableResourceRequest {
    pub consumable_resource_name: String,
    pub total_quantity: Option<i64>,
    pub resource_type: Option<String>,
    pub tags: Option<Tags>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateConsumableResourceRequest {
    pub consumable_resource: String,
    pub operation: Option<String>,
    pub quantity: Option<i64>,
    pub client_token: Option<String>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListConsumableResourcesRequest {
    pub filters: Option<Vec<KeyValuesPair>>,
    pub max_results: Option<i32>,
    pub next_token: Option<String>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListJobsByConsumableResourceRequest {
    pub consumable_resource: String,
    pub filters: Option<Vec<KeyValuesPair>>,
    pub max_results: Option<i32>,
    pub next_token: Option<String>,
}

/// A consumable resource as stored. `totalQuantity` is what the user set, less what
/// NON_REPLENISHABLE attempts have consumed; what is in use is the engine's to know.
#[skip_serializing_none]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ConsumableResourceDetail {
    pub consumable_resource_name: String,
    pub consumable_resource_arn: String,
    pub total_quantity: i64,
    pub resource_type: ConsumableResourceType,
    pub created_at: i64,
    pub tags: Option<Tags>,
    /// `clientToken`s of recent UpdateConsumableResource calls: (token, request digest,
    /// epoch ms), so that a repeated request is answered without applying it twice.
    #[serde(
        default,
        rename = "_flotillaTokens",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub client_tokens: Vec<(String, String, i64)>,
}

// ---------------------------------------------------------------- jobs

#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct JobDependency {
    pub job_id: Option<String>,
    #[serde(rename = "type")]
    pub dep_type: Option<String>,
}

impl JobDependency {
    /// The dependency's `type`, if it names one AWS Batch knows (validation rejects others).
    pub fn kind(&self) -> Option<DependencyType> {
        self.dep_type.as_deref().and_then(|t| t.parse().ok())
    }
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerOverrides {
    pub vcpus: Option<i32>,
    pub memory: Option<i32>,
    pub command: Option<Vec<String>>,
    pub instance_type: Option<String>,
    pub environment: Option<Vec<KeyValuePair>>,
    pub resource_requirements: Option<Vec<ResourceRequirement>>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArrayProperties {
    pub size: Option<i32>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubmitJobRequest {
    pub job_name: String,
    pub job_queue: String,
    pub share_identifier: Option<String>,
    pub scheduling_priority_override: Option<i32>,
    pub array_properties: Option<ArrayProperties>,
    pub depends_on: Option<Vec<JobDependency>>,
    pub job_definition: String,
    pub parameters: Option<BTreeMap<String, String>>,
    pub container_overrides: Option<ContainerOverrides>,
    pub node_overrides: Option<Value>,
    pub retry_strategy: Option<RetryStrategy>,
    pub propagate_tags: Option<bool>,
    pub timeout: Option<JobTimeout>,
    pub tags: Option<Tags>,
    pub eks_properties_override: Option<Value>,
    pub ecs_properties_override: Option<Value>,
    pub consumable_resource_properties_override: Option<ConsumableResourceProperties>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerDetail {
    /// Shared (`Arc`) between the jobs that run a definition's properties unchanged: the
    /// engine holds every unfinished job in memory, and 100,000 copies of one definition's
    /// image, command and requirements were a fifth of its footprint.
    #[serde(flatten)]
    pub properties: std::sync::Arc<ContainerProperties>,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub container_instance_arn: Option<String>,
    pub task_arn: Option<String>,
    pub log_stream_name: Option<String>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AttemptContainerDetail {
    pub container_instance_arn: Option<String>,
    pub task_arn: Option<String>,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub log_stream_name: Option<String>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AttemptDetail {
    pub container: Option<AttemptContainerDetail>,
    pub started_at: Option<i64>,
    pub stopped_at: Option<i64>,
    pub status_reason: Option<String>,
    /// Flotilla's: where the attempt ran and what it cost (attempts on EC2 instances Flotilla
    /// launched). Not in AWS's shape; SDKs skip members they do not know.
    #[serde(rename = "flotillaCost")]
    pub cost: Option<AttemptCost>,
}

/// The instance an attempt ran on and its share of it: cost = `pricePerHour` × `share` ×
/// hours from `startedAt` to `stoppedAt`.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AttemptCost {
    pub instance_id: String,
    pub instance_type: String,
    /// `SPOT` or `ON_DEMAND`.
    pub purchase_option: String,
    /// Dollars per hour of the whole instance, from the instance catalog when it was first seen.
    pub price_per_hour: f64,
    /// The larger of the attempt's vCPUs, memory and GPUs over the instance's registered ones.
    pub share: f64,
    /// Dollars; set when the attempt ends.
    pub cost: Option<f64>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ArrayPropertiesDetail {
    pub status_summary: Option<BTreeMap<String, i32>>,
    pub status_summary_last_updated_at: Option<i64>,
    pub size: Option<i32>,
    pub index: Option<i32>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JobDetail {
    pub job_arn: String,
    pub job_name: String,
    pub job_id: String,
    /// ARN of the queue.
    pub job_queue: String,
    pub status: JobStatus,
    pub share_identifier: Option<String>,
    pub scheduling_priority: Option<i32>,
    #[serde(default)]
    pub attempts: Vec<AttemptDetail>,
    pub status_reason: Option<String>,
    pub created_at: i64,
    pub retry_strategy: Option<RetryStrategy>,
    pub started_at: Option<i64>,
    pub stopped_at: Option<i64>,
    pub depends_on: Option<Vec<JobDependency>>,
    /// ARN of the job definition revision.
    pub job_definition: String,
    pub parameters: Option<BTreeMap<String, String>>,
    pub container: Option<ContainerDetail>,
    pub array_properties: Option<ArrayPropertiesDetail>,
    pub timeout: Option<JobTimeout>,
    pub tags: Option<Tags>,
    pub propagate_tags: Option<bool>,
    pub platform_capabilities: Option<Vec<String>>,
    pub is_cancelled: Option<bool>,
    pub is_terminated: Option<bool>,
    /// As the definition or SubmitJob's override named them (names or ARNs).
    pub consumable_resource_properties: Option<ConsumableResourceProperties>,
    /// Flotilla's bookkeeping, stored with the job and stripped before it goes on the wire.
    #[serde(
        default,
        rename = "_flotilla",
        skip_serializing_if = "JobInternal::is_empty"
    )]
    pub internal: JobInternal,
}

/// What the engine must remember about a job across restarts that AWS's shape has no field for.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JobInternal {
    /// The compute environment the current attempt was placed on.
    pub compute_environment: Option<String>,
    /// The runtime handle of the current attempt.
    pub task_id: Option<String>,
    /// When the job last became RUNNABLE (epoch ms), for `jobStateTimeLimitActions`.
    pub runnable_since: Option<i64>,
    /// The current attempt was stopped for exceeding its timeout.
    pub timed_out: Option<bool>,
    /// ECS container instance ARN the current attempt was placed on (AWS environments).
    pub container_instance: Option<String>,
    /// Attempts ended by a Spot interruption. They stay in `attempts` for the record but do not
    /// count against the retry strategy.
    pub interruptions: Option<u32>,
    /// Set once `interruptions` reaches the server's limit: the job skips SPOT environments.
    pub avoid_spot: Option<bool>,
    /// With `propagateTags`: the job definition's tags overlaid with the job's, which each of the
    /// job's ECS tasks carries. Kept here because the engine never sees the definition.
    pub propagated_tags: Option<Tags>,
    /// The job-event log has the event of this job entering PENDING (a job that stays there
    /// after submission; the others announce themselves by leaving it).
    pub announced: Option<bool>,
    /// The instance the current attempt was placed on and its share of it (cost).
    pub host: Option<AttemptCost>,
}

impl JobInternal {
    pub fn is_empty(&self) -> bool {
        *self == JobInternal::default()
    }
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSummary {
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JobSummary {
    pub job_arn: String,
    pub job_id: String,
    pub job_name: String,
    pub created_at: i64,
    pub share_identifier: Option<String>,
    pub status: JobStatus,
    pub status_reason: Option<String>,
    pub started_at: Option<i64>,
    pub stopped_at: Option<i64>,
    pub container: Option<ContainerSummary>,
    pub array_properties: Option<ArrayPropertiesDetail>,
    pub job_definition: String,
}

impl JobSummary {
    pub fn of(job: &JobDetail) -> Self {
        JobSummary {
            job_arn: job.job_arn.clone(),
            job_id: job.job_id.clone(),
            job_name: job.job_name.clone(),
            created_at: job.created_at,
            share_identifier: job.share_identifier.clone(),
            status: job.status,
            status_reason: job.status_reason.clone(),
            started_at: job.started_at,
            stopped_at: job.stopped_at,
            container: job.container.as_ref().and_then(|c| {
                (c.exit_code.is_some() || c.reason.is_some()).then(|| ContainerSummary {
                    exit_code: c.exit_code,
                    reason: c.reason.clone(),
                })
            }),
            array_properties: job.array_properties.clone(),
            job_definition: job.job_definition.clone(),
        }
    }
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KeyValuesPair {
    pub name: Option<String>,
    pub values: Option<Vec<String>>,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListJobsRequest {
    pub job_queue: Option<String>,
    pub array_job_id: Option<String>,
    pub multi_node_job_id: Option<String>,
    pub job_status: Option<String>,
    pub max_results: Option<i32>,
    pub next_token: Option<String>,
    pub filters: Option<Vec<KeyValuesPair>>,
}

/// Requests whose only content is a list of names with optional paging.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeRequest {
    pub compute_environments: Option<Vec<String>>,
    pub job_queues: Option<Vec<String>>,
    pub job_definitions: Option<Vec<String>>,
    pub job_definition_name: Option<String>,
    pub status: Option<String>,
    pub max_results: Option<i32>,
    pub next_token: Option<String>,
}
