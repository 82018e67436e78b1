//! JSON renderings of SDK types, in the AWS Batch wire shape (camelCase, epoch-millisecond
//! timestamps, absent fields omitted), so `--output json` reads like `aws batch … --output json`.
//!
//! The SDK's types are not `Serialize`; each mapping lists the fields a container-based Flotilla
//! job can carry. EKS, ECS and multi-node properties are not rendered.

use std::collections::HashMap;

use aws_sdk_batch::types::{
    ArrayPropertiesDetail, ArrayPropertiesSummary, AttemptDetail, ComputeEnvironmentDetail,
    ComputeResource, ContainerDetail, ContainerProperties, JobDefinition, JobDependency, JobDetail,
    JobQueueDetail, JobSummary, JobTimeout, KeyValuePair, ResourceRequirement, RetryStrategy,
};
use serde_json::{Map, Value};

/// Builds an object, skipping absent fields.
#[derive(Default)]
pub struct Obj(Map<String, Value>);

impl Obj {
    pub fn new() -> Self {
        Obj::default()
    }

    pub fn put(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.0.insert(key.to_string(), value.into());
        self
    }

    pub fn opt(self, key: &str, value: Option<impl Into<Value>>) -> Self {
        match value {
            Some(v) => self.put(key, v),
            None => self,
        }
    }

    pub fn done(self) -> Value {
        Value::Object(self.0)
    }
}

fn list<T>(items: Option<&Vec<T>>, f: impl Fn(&T) -> Value) -> Option<Value> {
    items.map(|v| Value::Array(v.iter().map(f).collect()))
}

fn strings(items: Option<&Vec<String>>) -> Option<Value> {
    list(items, |s| Value::String(s.clone()))
}

fn string_map(map: Option<&HashMap<String, String>>) -> Option<Value> {
    map.map(|m| {
        Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        )
    })
}

fn count_map(map: Option<&HashMap<String, i32>>) -> Option<Value> {
    map.map(|m| {
        Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), Value::from(*v)))
                .collect(),
        )
    })
}

fn key_values(items: Option<&Vec<KeyValuePair>>) -> Option<Value> {
    list(items, |kv| {
        Obj::new()
            .opt("name", kv.name())
            .opt("value", kv.value())
            .done()
    })
}

fn resource_requirements(items: Option<&Vec<ResourceRequirement>>) -> Option<Value> {
    list(items, |r| {
        Obj::new()
            .opt("value", r.value())
            .opt("type", r.r#type().map(|t| t.as_str()))
            .done()
    })
}

pub fn retry_strategy(r: &RetryStrategy) -> Value {
    Obj::new()
        .opt("attempts", r.attempts())
        .opt(
            "evaluateOnExit",
            list(r.evaluate_on_exit.as_ref(), |e| {
                Obj::new()
                    .opt("onStatusReason", e.on_status_reason())
                    .opt("onReason", e.on_reason())
                    .opt("onExitCode", e.on_exit_code())
                    .opt("action", e.action().map(|a| a.as_str()))
                    .done()
            }),
        )
        .done()
}

fn timeout(t: &JobTimeout) -> Value {
    Obj::new()
        .opt("attemptDurationSeconds", t.attempt_duration_seconds())
        .done()
}

fn dependency(d: &JobDependency) -> Value {
    Obj::new()
        .opt("jobId", d.job_id())
        .opt("type", d.r#type().map(|t| t.as_str()))
        .done()
}

fn container_detail(c: &ContainerDetail) -> Value {
    Obj::new()
        .opt("image", c.image())
        .opt("vcpus", c.vcpus())
        .opt("memory", c.memory())
        .opt("command", strings(c.command.as_ref()))
        .opt("jobRoleArn", c.job_role_arn())
        .opt("executionRoleArn", c.execution_role_arn())
        .opt("environment", key_values(c.environment.as_ref()))
        .opt("readonlyRootFilesystem", c.readonly_root_filesystem())
        .opt("privileged", c.privileged())
        .opt("user", c.user())
        .opt("exitCode", c.exit_code())
        .opt("reason", c.reason())
        .opt("containerInstanceArn", c.container_instance_arn())
        .opt("taskArn", c.task_arn())
        .opt("logStreamName", c.log_stream_name())
        .opt("instanceType", c.instance_type())
        .opt(
            "resourceRequirements",
            resource_requirements(c.resource_requirements.as_ref()),
        )
        .done()
}

fn attempt(a: &AttemptDetail) -> Value {
    Obj::new()
        .opt(
            "container",
            a.container().map(|c| {
                Obj::new()
                    .opt("containerInstanceArn", c.container_instance_arn())
                    .opt("taskArn", c.task_arn())
                    .opt("exitCode", c.exit_code())
                    .opt("reason", c.reason())
                    .opt("logStreamName", c.log_stream_name())
                    .done()
            }),
        )
        .opt("startedAt", a.started_at())
        .opt("stoppedAt", a.stopped_at())
        .opt("statusReason", a.status_reason())
        .done()
}

fn array_detail(a: &ArrayPropertiesDetail) -> Value {
    Obj::new()
        .opt("statusSummary", count_map(a.status_summary.as_ref()))
        .opt(
            "statusSummaryLastUpdatedAt",
            a.status_summary_last_updated_at(),
        )
        .opt("size", a.size())
        .opt("index", a.index())
        .done()
}

fn array_summary(a: &ArrayPropertiesSummary) -> Value {
    Obj::new()
        .opt("size", a.size())
        .opt("index", a.index())
        .opt("statusSummary", count_map(a.status_summary.as_ref()))
        .opt(
            "statusSummaryLastUpdatedAt",
            a.status_summary_last_updated_at(),
        )
        .done()
}

pub fn job_detail(j: &JobDetail) -> Value {
    Obj::new()
        .opt("jobArn", j.job_arn())
        .opt("jobName", j.job_name())
        .opt("jobId", j.job_id())
        .opt("jobQueue", j.job_queue())
        .opt("status", j.status().map(|s| s.as_str()))
        .opt("shareIdentifier", j.share_identifier())
        .opt("schedulingPriority", j.scheduling_priority())
        .opt("attempts", list(j.attempts.as_ref(), attempt))
        .opt("statusReason", j.status_reason())
        .opt("createdAt", j.created_at())
        .opt("retryStrategy", j.retry_strategy().map(retry_strategy))
        // startedAt is required in the model, so the SDK reads a missing one as 0.
        .opt("startedAt", j.started_at().filter(|t| *t > 0))
        .opt("stoppedAt", j.stopped_at())
        .opt("dependsOn", list(j.depends_on.as_ref(), dependency))
        .opt("jobDefinition", j.job_definition())
        .opt("parameters", string_map(j.parameters.as_ref()))
        .opt("container", j.container().map(container_detail))
        .opt("arrayProperties", j.array_properties().map(array_detail))
        .opt("timeout", j.timeout().map(timeout))
        .opt("tags", string_map(j.tags.as_ref()))
        .opt("propagateTags", j.propagate_tags())
        .opt(
            "platformCapabilities",
            list(j.platform_capabilities.as_ref(), |p| p.as_str().into()),
        )
        .opt("isCancelled", j.is_cancelled())
        .opt("isTerminated", j.is_terminated())
        .done()
}

pub fn job_summary(j: &JobSummary) -> Value {
    Obj::new()
        .opt("jobArn", j.job_arn())
        .opt("jobId", j.job_id())
        .opt("jobName", j.job_name())
        .opt("createdAt", j.created_at())
        .opt("scheduledAt", j.scheduled_at())
        .opt("shareIdentifier", j.share_identifier())
        .opt("status", j.status().map(|s| s.as_str()))
        .opt("statusReason", j.status_reason())
        .opt("startedAt", j.started_at())
        .opt("stoppedAt", j.stopped_at())
        .opt(
            "container",
            j.container().map(|c| {
                Obj::new()
                    .opt("exitCode", c.exit_code())
                    .opt("reason", c.reason())
                    .done()
            }),
        )
        .opt("arrayProperties", j.array_properties().map(array_summary))
        .opt("jobDefinition", j.job_definition())
        .opt("isCancelled", j.is_cancelled())
        .opt("isTerminated", j.is_terminated())
        .done()
}

pub fn job_queue(q: &JobQueueDetail) -> Value {
    Obj::new()
        .opt("jobQueueName", q.job_queue_name())
        .opt("jobQueueArn", q.job_queue_arn())
        .opt("state", q.state().map(|s| s.as_str()))
        .opt("schedulingPolicyArn", q.scheduling_policy_arn())
        .opt("status", q.status().map(|s| s.as_str()))
        .opt("statusReason", q.status_reason())
        .opt("priority", q.priority())
        .opt(
            "computeEnvironmentOrder",
            list(q.compute_environment_order.as_ref(), |o| {
                Obj::new()
                    .opt("order", o.order())
                    .opt("computeEnvironment", o.compute_environment())
                    .done()
            }),
        )
        .opt("jobQueueType", q.job_queue_type().map(|t| t.as_str()))
        .opt("tags", string_map(q.tags.as_ref()))
        .done()
}

fn compute_resource(r: &ComputeResource) -> Value {
    Obj::new()
        .opt("type", r.r#type().map(|t| t.as_str()))
        .opt(
            "allocationStrategy",
            r.allocation_strategy().map(|a| a.as_str()),
        )
        .opt("minvCpus", r.minv_cpus())
        .opt("maxvCpus", r.maxv_cpus())
        .opt("desiredvCpus", r.desiredv_cpus())
        .opt("instanceTypes", strings(r.instance_types.as_ref()))
        .opt("subnets", strings(r.subnets.as_ref()))
        .opt("securityGroupIds", strings(r.security_group_ids.as_ref()))
        .opt("instanceRole", r.instance_role())
        .opt("tags", string_map(r.tags.as_ref()))
        .done()
}

pub fn compute_environment(c: &ComputeEnvironmentDetail) -> Value {
    Obj::new()
        .opt("computeEnvironmentName", c.compute_environment_name())
        .opt("computeEnvironmentArn", c.compute_environment_arn())
        .opt("unmanagedvCpus", c.unmanagedv_cpus())
        .opt("tags", string_map(c.tags.as_ref()))
        .opt("type", c.r#type().map(|t| t.as_str()))
        .opt("state", c.state().map(|s| s.as_str()))
        .opt("status", c.status().map(|s| s.as_str()))
        .opt("statusReason", c.status_reason())
        .opt(
            "computeResources",
            c.compute_resources().map(compute_resource),
        )
        .opt("serviceRole", c.service_role())
        .opt(
            "containerOrchestrationType",
            c.container_orchestration_type().map(|t| t.as_str()),
        )
        .opt("uuid", c.uuid())
        .done()
}

// Deprecated in favour of resourceRequirements, yet still returned for definitions using them.
#[allow(deprecated)]
fn container_properties(c: &ContainerProperties) -> Value {
    Obj::new()
        .opt("image", c.image())
        .opt("vcpus", c.vcpus())
        .opt("memory", c.memory())
        .opt("command", strings(c.command.as_ref()))
        .opt("jobRoleArn", c.job_role_arn())
        .opt("executionRoleArn", c.execution_role_arn())
        .opt("environment", key_values(c.environment.as_ref()))
        .opt("readonlyRootFilesystem", c.readonly_root_filesystem())
        .opt("privileged", c.privileged())
        .opt("user", c.user())
        .opt("instanceType", c.instance_type())
        .opt(
            "resourceRequirements",
            resource_requirements(c.resource_requirements.as_ref()),
        )
        .done()
}

pub fn job_definition(d: &JobDefinition) -> Value {
    Obj::new()
        .opt("jobDefinitionName", d.job_definition_name())
        .opt("jobDefinitionArn", d.job_definition_arn())
        .opt("revision", d.revision())
        .opt("status", d.status())
        .opt("type", d.r#type())
        .opt("schedulingPriority", d.scheduling_priority())
        .opt("parameters", string_map(d.parameters.as_ref()))
        .opt("retryStrategy", d.retry_strategy().map(retry_strategy))
        .opt(
            "containerProperties",
            d.container_properties().map(container_properties),
        )
        .opt("timeout", d.timeout().map(timeout))
        .opt("tags", string_map(d.tags.as_ref()))
        .opt("propagateTags", d.propagate_tags())
        .opt(
            "platformCapabilities",
            list(d.platform_capabilities.as_ref(), |p| p.as_str().into()),
        )
        .opt(
            "containerOrchestrationType",
            d.container_orchestration_type().map(|t| t.as_str()),
        )
        .done()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_batch::types::{ArrayJobDependency, JobStatus};
    use serde_json::json;

    #[test]
    fn job_detail_uses_wire_names_and_omits_absent_fields() {
        let job = JobDetail::builder()
            .job_id("j1")
            .job_name("hello")
            .job_queue("arn:aws:batch:us-east-1:000000000000:job-queue/default")
            .status(JobStatus::Failed)
            .status_reason("Essential container in task exited")
            .created_at(1_700_000_000_000)
            .depends_on(
                JobDependency::builder()
                    .job_id("j0")
                    .r#type(ArrayJobDependency::NToN)
                    .build(),
            )
            .parameters("k", "v")
            .container(ContainerDetail::builder().exit_code(2).build())
            .build();
        assert_eq!(
            job_detail(&job),
            json!({
                "jobId": "j1",
                "jobName": "hello",
                "jobQueue": "arn:aws:batch:us-east-1:000000000000:job-queue/default",
                "status": "FAILED",
                "statusReason": "Essential container in task exited",
                "createdAt": 1_700_000_000_000i64,
                "dependsOn": [{"jobId": "j0", "type": "N_TO_N"}],
                "parameters": {"k": "v"},
                "container": {"exitCode": 2},
            })
        );
    }
}
