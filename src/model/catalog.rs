//! The resource catalog: the few compute environments, queues, job definitions and scheduling
//! policies, as the control plane holds them in memory (see `batch`).

use super::{
    ComputeEnvironmentDetail, ConsumableResourceDetail, JobDefinition, JobQueueDetail,
    SchedulingPolicyDetail,
};
use std::collections::BTreeMap;

#[derive(Debug, Default, Clone)]
pub struct Catalog {
    pub compute_environments: BTreeMap<String, ComputeEnvironmentDetail>,
    pub queues: BTreeMap<String, JobQueueDetail>,
    /// Name → revision → definition.
    pub job_definitions: BTreeMap<String, BTreeMap<i32, JobDefinition>>,
    pub scheduling_policies: BTreeMap<String, SchedulingPolicyDetail>,
    pub consumable_resources: BTreeMap<String, ConsumableResourceDetail>,
}
