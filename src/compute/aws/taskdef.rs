//! ECS task definitions derived from job definitions, registered once per content and cached.

use super::{AwsDriver, AwsError, CONTAINER, sanitize};
use crate::compute::AttemptSpec;
use crate::model::arn::{JOB_LOG_GROUP, definition_name};
use aws_sdk_ecs::types as ecst;

impl AwsDriver {
    pub(super) async fn task_definition(&self, spec: &AttemptSpec) -> Result<String, AwsError> {
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
}
