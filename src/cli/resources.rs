//! Resource commands: queues, compute environments, job definitions.

use aws_sdk_batch::types::{ComputeEnvironmentDetail, JobDefinition, JobQueueDetail};
use serde_json::json;

use super::client::{Ctx, emit, emit_json};
use super::json::{self, Obj};
use super::register::JobDefinitionFile;
use super::table::{Table, arn_name, or_dash};
use super::{JdListArgs, Output};

pub async fn queues(ctx: &Ctx, names: &[String]) -> anyhow::Result<()> {
    let mut req = ctx.client.describe_job_queues();
    if !names.is_empty() {
        req = req.set_job_queues(Some(names.to_vec()));
    }
    let mut pages = req.into_paginator().items().send();
    let mut queues = Vec::new();
    while let Some(item) = pages.next().await {
        queues.push(item.map_err(|e| ctx.api_error(e))?);
    }
    match ctx.output {
        Output::Json => emit_json(&json!({
            "jobQueues": queues.iter().map(json::job_queue).collect::<Vec<_>>()
        })),
        Output::Table => emit(&queue_table(&queues).render()),
    }
}

pub fn queue_table(queues: &[JobQueueDetail]) -> Table {
    let mut t = Table::new([
        "NAME",
        "STATE",
        "STATUS",
        "PRIORITY",
        "COMPUTE ENVIRONMENTS",
    ]);
    for q in queues {
        let mut order: Vec<_> = q.compute_environment_order().iter().collect();
        order.sort_by_key(|o| o.order());
        let envs: Vec<&str> = order
            .iter()
            .filter_map(|o| o.compute_environment().map(arn_name))
            .collect();
        t.push([
            or_dash(q.job_queue_name()),
            or_dash(q.state().map(|s| s.as_str())),
            or_dash(q.status().map(|s| s.as_str())),
            q.priority()
                .map_or_else(|| "-".to_string(), |p| p.to_string()),
            if envs.is_empty() {
                "-".to_string()
            } else {
                envs.join(",")
            },
        ]);
    }
    t
}

pub async fn compute_envs(ctx: &Ctx, names: &[String]) -> anyhow::Result<()> {
    let mut req = ctx.client.describe_compute_environments();
    if !names.is_empty() {
        req = req.set_compute_environments(Some(names.to_vec()));
    }
    let mut pages = req.into_paginator().items().send();
    let mut envs = Vec::new();
    while let Some(item) = pages.next().await {
        envs.push(item.map_err(|e| ctx.api_error(e))?);
    }
    match ctx.output {
        Output::Json => emit_json(&json!({
            "computeEnvironments": envs.iter().map(json::compute_environment).collect::<Vec<_>>()
        })),
        Output::Table => emit(&compute_env_table(&envs).render()),
    }
}

pub fn compute_env_table(envs: &[ComputeEnvironmentDetail]) -> Table {
    let mut t = Table::new([
        "NAME",
        "TYPE",
        "STATE",
        "STATUS",
        "RESOURCE TYPE",
        "MIN/MAX VCPU",
    ]);
    for c in envs {
        let resources = c.compute_resources();
        let vcpus = match resources {
            Some(r) => format!(
                "{}/{}",
                r.minv_cpus()
                    .map_or_else(|| "-".to_string(), |n| n.to_string()),
                r.maxv_cpus()
                    .map_or_else(|| "-".to_string(), |n| n.to_string())
            ),
            None => "-".to_string(),
        };
        t.push([
            or_dash(c.compute_environment_name()),
            or_dash(c.r#type().map(|t| t.as_str())),
            or_dash(c.state().map(|s| s.as_str())),
            or_dash(c.status().map(|s| s.as_str())),
            or_dash(resources.and_then(|r| r.r#type()).map(|t| t.as_str())),
            vcpus,
        ]);
    }
    t
}

pub async fn register_job_definition(ctx: &Ctx, file: JobDefinitionFile) -> anyhow::Result<()> {
    let resp = file
        .apply(ctx.client.register_job_definition())?
        .send()
        .await
        .map_err(|e| ctx.api_error(e))?;
    match ctx.output {
        Output::Json => emit_json(
            &Obj::new()
                .opt("jobDefinitionName", resp.job_definition_name())
                .opt("jobDefinitionArn", resp.job_definition_arn())
                .opt("revision", resp.revision())
                .done(),
        ),
        Output::Table => emit(&format!("{}\n", or_dash(resp.job_definition_arn()))),
    }
}

pub async fn job_definitions(ctx: &Ctx, a: &JdListArgs) -> anyhow::Result<()> {
    let status = a.status.map(|s| match s {
        super::DefinitionStatus::Active => "ACTIVE",
        super::DefinitionStatus::Inactive => "INACTIVE",
    });
    let mut pages = ctx
        .client
        .describe_job_definitions()
        .set_job_definition_name(a.name.clone())
        .set_status(status.map(str::to_string))
        .into_paginator()
        .items()
        .send();
    let mut defs = Vec::new();
    while let Some(item) = pages.next().await {
        defs.push(item.map_err(|e| ctx.api_error(e))?);
    }
    defs.sort_by(|a, b| {
        (a.job_definition_name(), a.revision()).cmp(&(b.job_definition_name(), b.revision()))
    });
    match ctx.output {
        Output::Json => emit_json(&json!({
            "jobDefinitions": defs.iter().map(json::job_definition).collect::<Vec<_>>()
        })),
        Output::Table => emit(&job_definition_table(&defs).render()),
    }
}

pub fn job_definition_table(defs: &[JobDefinition]) -> Table {
    let mut t = Table::new(["NAME", "REVISION", "STATUS", "TYPE", "IMAGE"]);
    for d in defs {
        t.push([
            or_dash(d.job_definition_name()),
            d.revision()
                .map_or_else(|| "-".to_string(), |r| r.to_string()),
            or_dash(d.status()),
            or_dash(d.r#type()),
            or_dash(d.container_properties().and_then(|c| c.image())),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_batch::types::{
        CeState, CeStatus, CeType, ComputeEnvironmentOrder, ComputeResource, ContainerProperties,
        CrType, JqState, JqStatus,
    };

    #[test]
    fn queue_table_lists_environments_in_order() {
        let q = JobQueueDetail::builder()
            .job_queue_name("default")
            .state(JqState::Enabled)
            .status(JqStatus::Valid)
            .priority(1)
            .compute_environment_order(
                ComputeEnvironmentOrder::builder()
                    .order(2)
                    .compute_environment("arn:aws:batch:us-east-1:0:compute-environment/b")
                    .build(),
            )
            .compute_environment_order(
                ComputeEnvironmentOrder::builder()
                    .order(1)
                    .compute_environment("arn:aws:batch:us-east-1:0:compute-environment/a")
                    .build(),
            )
            .build();
        assert_eq!(
            queue_table(&[q]).render(),
            "NAME     STATE    STATUS  PRIORITY  COMPUTE ENVIRONMENTS\n\
             default  ENABLED  VALID   1         a,b\n"
        );
    }

    #[test]
    fn compute_env_table_shows_resources() {
        let managed = ComputeEnvironmentDetail::builder()
            .compute_environment_name("local")
            .r#type(CeType::Managed)
            .state(CeState::Enabled)
            .status(CeStatus::Valid)
            .compute_resources(
                ComputeResource::builder()
                    .r#type(CrType::Ec2)
                    .minv_cpus(0)
                    .maxv_cpus(8)
                    .build(),
            )
            .build();
        let unmanaged = ComputeEnvironmentDetail::builder()
            .compute_environment_name("mine")
            .r#type(CeType::Unmanaged)
            .build();
        assert_eq!(
            compute_env_table(&[managed, unmanaged]).render(),
            "NAME   TYPE       STATE    STATUS  RESOURCE TYPE  MIN/MAX VCPU\n\
             local  MANAGED    ENABLED  VALID   EC2            0/8\n\
             mine   UNMANAGED  -        -       -              -\n"
        );
    }

    #[test]
    fn job_definition_table_shows_image() {
        let d = JobDefinition::builder()
            .job_definition_name("hello")
            .revision(2)
            .status("ACTIVE")
            .r#type("container")
            .container_properties(ContainerProperties::builder().image("busybox").build())
            .build();
        assert_eq!(
            job_definition_table(&[d]).render(),
            "NAME   REVISION  STATUS  TYPE       IMAGE\n\
             hello  2         ACTIVE  container  busybox\n"
        );
    }
}
