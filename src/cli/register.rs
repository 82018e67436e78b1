//! `flotilla job-definitions register FILE.json`: the file is a RegisterJobDefinition request in
//! the shape `aws batch register-job-definition --cli-input-json` takes.
//!
//! Every object keeps the keys it does not know in `other`, so that all unsupported fields are
//! reported at once with their paths, instead of serde stopping at the first one.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context, bail};
use aws_sdk_batch::operation::register_job_definition::builders::RegisterJobDefinitionFluentBuilder;
use aws_sdk_batch::types::{
    ContainerProperties, EvaluateOnExit, JobDefinitionType, JobTimeout, KeyValuePair,
    PlatformCapability, ResourceRequirement, ResourceType, RetryAction, RetryStrategy,
};
use serde::Deserialize;
use serde_json::Value;

type Other = BTreeMap<String, Value>;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobDefinitionFile {
    pub job_definition_name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub parameters: Option<HashMap<String, String>>,
    pub scheduling_priority: Option<i32>,
    pub container_properties: Option<ContainerPropertiesFile>,
    pub retry_strategy: Option<RetryStrategyFile>,
    pub timeout: Option<TimeoutFile>,
    pub tags: Option<HashMap<String, String>>,
    pub propagate_tags: Option<bool>,
    pub platform_capabilities: Option<Vec<String>>,
    #[serde(flatten)]
    other: Other,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPropertiesFile {
    pub image: Option<String>,
    pub command: Option<Vec<String>>,
    pub environment: Option<Vec<NameValueFile>>,
    pub resource_requirements: Option<Vec<ResourceRequirementFile>>,
    pub vcpus: Option<i32>,
    pub memory: Option<i32>,
    pub job_role_arn: Option<String>,
    pub execution_role_arn: Option<String>,
    pub user: Option<String>,
    pub instance_type: Option<String>,
    pub privileged: Option<bool>,
    pub readonly_root_filesystem: Option<bool>,
    #[serde(flatten)]
    other: Other,
}

#[derive(Debug, Deserialize)]
pub struct NameValueFile {
    pub name: Option<String>,
    pub value: Option<String>,
    #[serde(flatten)]
    other: Other,
}

#[derive(Debug, Deserialize)]
pub struct ResourceRequirementFile {
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
    #[serde(flatten)]
    other: Other,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryStrategyFile {
    pub attempts: Option<i32>,
    pub evaluate_on_exit: Option<Vec<EvaluateOnExitFile>>,
    #[serde(flatten)]
    other: Other,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvaluateOnExitFile {
    pub on_status_reason: Option<String>,
    pub on_reason: Option<String>,
    pub on_exit_code: Option<String>,
    pub action: String,
    #[serde(flatten)]
    other: Other,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimeoutFile {
    pub attempt_duration_seconds: Option<i32>,
    #[serde(flatten)]
    other: Other,
}

pub fn load(path: &Path) -> anyhow::Result<JobDefinitionFile> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text).with_context(|| format!("{}", path.display()))
}

pub fn parse(text: &str) -> anyhow::Result<JobDefinitionFile> {
    let mut de = serde_json::Deserializer::from_str(text);
    let file: JobDefinitionFile = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        // serde_path_to_error says "." for the root and "?" when the position is unknown.
        if path == "." || path == "?" {
            anyhow::anyhow!("{}", e.inner())
        } else {
            anyhow::anyhow!("{path}: {}", e.inner())
        }
    })?;
    de.end()?;
    let unsupported = file.unsupported_fields();
    if !unsupported.is_empty() {
        bail!(
            "unsupported field(s): {} (the flotilla CLI maps jobDefinitionName, type, parameters, \
             schedulingPriority, containerProperties, retryStrategy, timeout, tags, \
             propagateTags, platformCapabilities)",
            unsupported.join(", ")
        );
    }
    Ok(file)
}

fn collect(prefix: &str, other: &Other, out: &mut Vec<String>) {
    out.extend(other.keys().map(|k| format!("{prefix}{k}")));
}

impl JobDefinitionFile {
    fn unsupported_fields(&self) -> Vec<String> {
        let mut out = Vec::new();
        collect("", &self.other, &mut out);
        if let Some(c) = &self.container_properties {
            collect("containerProperties.", &c.other, &mut out);
            for (i, e) in c.environment.iter().flatten().enumerate() {
                collect(
                    &format!("containerProperties.environment[{i}]."),
                    &e.other,
                    &mut out,
                );
            }
            for (i, r) in c.resource_requirements.iter().flatten().enumerate() {
                collect(
                    &format!("containerProperties.resourceRequirements[{i}]."),
                    &r.other,
                    &mut out,
                );
            }
        }
        if let Some(r) = &self.retry_strategy {
            collect("retryStrategy.", &r.other, &mut out);
            for (i, e) in r.evaluate_on_exit.iter().flatten().enumerate() {
                collect(
                    &format!("retryStrategy.evaluateOnExit[{i}]."),
                    &e.other,
                    &mut out,
                );
            }
        }
        if let Some(t) = &self.timeout {
            collect("timeout.", &t.other, &mut out);
        }
        out
    }

    /// Maps the file onto the request. Enum values are checked here rather than left to the
    /// server, because the SDK would otherwise send any string as an "unknown variant".
    pub fn apply(
        self,
        mut req: RegisterJobDefinitionFluentBuilder,
    ) -> anyhow::Result<RegisterJobDefinitionFluentBuilder> {
        let kind = match JobDefinitionType::try_parse(&self.kind) {
            Ok(JobDefinitionType::Container) => JobDefinitionType::Container,
            _ => bail!(
                "type: `{}` is not supported (the flotilla CLI registers `container` definitions)",
                self.kind
            ),
        };
        req = req
            .job_definition_name(self.job_definition_name)
            .r#type(kind)
            .set_parameters(self.parameters)
            .set_scheduling_priority(self.scheduling_priority)
            .set_tags(self.tags)
            .set_propagate_tags(self.propagate_tags);
        if let Some(c) = self.container_properties {
            req = req.container_properties(c.into_sdk()?);
        }
        if let Some(r) = self.retry_strategy {
            req = req.retry_strategy(r.into_sdk()?);
        }
        if let Some(t) = self.timeout {
            req = req.timeout(
                JobTimeout::builder()
                    .set_attempt_duration_seconds(t.attempt_duration_seconds)
                    .build(),
            );
        }
        if let Some(caps) = self.platform_capabilities {
            let caps = caps
                .iter()
                .map(|c| {
                    PlatformCapability::try_parse(c).map_err(|_| {
                        anyhow::anyhow!("platformCapabilities: `{c}` is not one of EC2, FARGATE")
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            req = req.set_platform_capabilities(Some(caps));
        }
        Ok(req)
    }
}

impl ContainerPropertiesFile {
    // vcpus/memory are deprecated in favour of resourceRequirements, but AWS still accepts them
    // and many existing definition files use them.
    #[allow(deprecated)]
    fn into_sdk(self) -> anyhow::Result<ContainerProperties> {
        let environment = self.environment.map(|env| {
            env.into_iter()
                .map(|e| {
                    KeyValuePair::builder()
                        .set_name(e.name)
                        .set_value(e.value)
                        .build()
                })
                .collect()
        });
        let requirements = self
            .resource_requirements
            .map(|reqs| {
                reqs.into_iter()
                    .enumerate()
                    .map(|(i, r)| {
                        let kind = ResourceType::try_parse(&r.kind).map_err(|_| {
                            anyhow::anyhow!(
                                "containerProperties.resourceRequirements[{i}].type: `{}` is not \
                                 one of GPU, MEMORY, VCPU",
                                r.kind
                            )
                        })?;
                        Ok(ResourceRequirement::builder()
                            .r#type(kind)
                            .value(r.value)
                            .build())
                    })
                    .collect::<anyhow::Result<Vec<_>>>()
            })
            .transpose()?;
        Ok(ContainerProperties::builder()
            .set_image(self.image)
            .set_command(self.command)
            .set_environment(environment)
            .set_resource_requirements(requirements)
            .set_vcpus(self.vcpus)
            .set_memory(self.memory)
            .set_job_role_arn(self.job_role_arn)
            .set_execution_role_arn(self.execution_role_arn)
            .set_user(self.user)
            .set_instance_type(self.instance_type)
            .set_privileged(self.privileged)
            .set_readonly_root_filesystem(self.readonly_root_filesystem)
            .build())
    }
}

impl RetryStrategyFile {
    fn into_sdk(self) -> anyhow::Result<RetryStrategy> {
        let rules = self
            .evaluate_on_exit
            .map(|rules| {
                rules
                    .into_iter()
                    .enumerate()
                    .map(|(i, e)| {
                        // AWS documents the action as case-insensitive.
                        let action = RetryAction::try_parse(&e.action.to_ascii_uppercase())
                            .map_err(|_| {
                                anyhow::anyhow!(
                                    "retryStrategy.evaluateOnExit[{i}].action: `{}` is not one \
                                     of RETRY, EXIT",
                                    e.action
                                )
                            })?;
                        Ok(EvaluateOnExit::builder()
                            .set_on_status_reason(e.on_status_reason)
                            .set_on_reason(e.on_reason)
                            .set_on_exit_code(e.on_exit_code)
                            .action(action)
                            .build())
                    })
                    .collect::<anyhow::Result<Vec<_>>>()
            })
            .transpose()?;
        Ok(RetryStrategy::builder()
            .set_attempts(self.attempts)
            .set_evaluate_on_exit(rules)
            .build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::tests::offline_client;

    const FULL: &str = r#"{
        "jobDefinitionName": "render",
        "type": "container",
        "parameters": {"input": "s3://bucket/in", "size": "10"},
        "schedulingPriority": 5,
        "containerProperties": {
            "image": "busybox:1.36",
            "command": ["sh", "-c", "echo Ref::input"],
            "environment": [{"name": "MODE", "value": "fast"}],
            "resourceRequirements": [
                {"type": "VCPU", "value": "2"},
                {"type": "MEMORY", "value": "2048"}
            ],
            "vcpus": 1,
            "memory": 512,
            "jobRoleArn": "arn:aws:iam::000000000000:role/job",
            "executionRoleArn": "arn:aws:iam::000000000000:role/exec",
            "user": "nobody",
            "instanceType": "m5.large",
            "privileged": false,
            "readonlyRootFilesystem": true
        },
        "retryStrategy": {
            "attempts": 3,
            "evaluateOnExit": [
                {"onExitCode": "137", "action": "retry"},
                {"onStatusReason": "Host EC2*", "onReason": "*", "action": "EXIT"}
            ]
        },
        "timeout": {"attemptDurationSeconds": 600},
        "tags": {"team": "render"},
        "propagateTags": true,
        "platformCapabilities": ["EC2"]
    }"#;

    #[test]
    #[allow(deprecated)]
    fn every_supported_field_is_mapped() {
        let file = parse(FULL).unwrap();
        let req = file
            .apply(offline_client().register_job_definition())
            .unwrap();
        let input = req.as_input();
        assert_eq!(input.get_job_definition_name().as_deref(), Some("render"));
        assert_eq!(input.get_type(), &Some(JobDefinitionType::Container));
        let params = input.get_parameters().as_ref().unwrap();
        assert_eq!(params["input"], "s3://bucket/in");
        assert_eq!(params["size"], "10");
        assert_eq!(input.get_scheduling_priority(), &Some(5));
        assert_eq!(input.get_tags().as_ref().unwrap()["team"], "render");
        assert_eq!(input.get_propagate_tags(), &Some(true));
        assert_eq!(
            input.get_platform_capabilities().as_deref(),
            Some(&[PlatformCapability::Ec2][..])
        );
        assert_eq!(
            input
                .get_timeout()
                .as_ref()
                .unwrap()
                .attempt_duration_seconds(),
            Some(600)
        );

        let c = input.get_container_properties().as_ref().unwrap();
        assert_eq!(c.image(), Some("busybox:1.36"));
        assert_eq!(c.command(), ["sh", "-c", "echo Ref::input"]);
        assert_eq!(c.environment().len(), 1);
        assert_eq!(c.environment()[0].name(), Some("MODE"));
        assert_eq!(c.environment()[0].value(), Some("fast"));
        let rr: Vec<_> = c
            .resource_requirements()
            .iter()
            .map(|r| (r.r#type().cloned(), r.value()))
            .collect();
        assert_eq!(
            rr,
            [
                (Some(ResourceType::Vcpu), Some("2")),
                (Some(ResourceType::Memory), Some("2048"))
            ]
        );
        assert_eq!(c.vcpus(), Some(1));
        assert_eq!(c.memory(), Some(512));
        assert_eq!(c.job_role_arn(), Some("arn:aws:iam::000000000000:role/job"));
        assert_eq!(
            c.execution_role_arn(),
            Some("arn:aws:iam::000000000000:role/exec")
        );
        assert_eq!(c.user(), Some("nobody"));
        assert_eq!(c.instance_type(), Some("m5.large"));
        assert_eq!(c.privileged(), Some(false));
        assert_eq!(c.readonly_root_filesystem(), Some(true));

        let r = input.get_retry_strategy().as_ref().unwrap();
        assert_eq!(r.attempts(), Some(3));
        let rules = r.evaluate_on_exit();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].on_exit_code(), Some("137"));
        assert_eq!(rules[0].action(), Some(&RetryAction::Retry));
        assert_eq!(rules[1].on_status_reason(), Some("Host EC2*"));
        assert_eq!(rules[1].on_reason(), Some("*"));
        assert_eq!(rules[1].action(), Some(&RetryAction::Exit));
    }

    #[test]
    fn file_is_read_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("def.json");
        std::fs::write(&path, FULL).unwrap();
        assert_eq!(load(&path).unwrap().job_definition_name, "render");
        let missing = dir.path().join("missing.json");
        let err = format!("{:#}", load(&missing).unwrap_err());
        assert!(err.contains("missing.json"), "{err}");
    }

    #[test]
    fn unknown_fields_are_all_named_with_their_paths() {
        let text = r#"{
            "jobDefinitionName": "x",
            "type": "container",
            "nodeProperties": {},
            "containerProperties": {
                "image": "busybox",
                "volumes": [],
                "environment": [{"name": "A", "value": "1", "secret": true}],
                "resourceRequirements": [{"type": "GPU", "value": "1", "extra": 1}]
            },
            "retryStrategy": {"attempts": 2, "evaluateOnExit": [{"action": "EXIT", "onCode": "1"}]},
            "timeout": {"seconds": 5}
        }"#;
        let err = parse(text).unwrap_err().to_string();
        for field in [
            "nodeProperties",
            "containerProperties.volumes",
            "containerProperties.environment[0].secret",
            "containerProperties.resourceRequirements[0].extra",
            "retryStrategy.evaluateOnExit[0].onCode",
            "timeout.seconds",
        ] {
            assert!(err.contains(field), "{field} missing from: {err}");
        }
    }

    #[test]
    fn type_errors_name_the_path() {
        let text = r#"{"jobDefinitionName": "x", "type": "container",
                       "containerProperties": {"vcpus": "two"}}"#;
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains("containerProperties.vcpus"), "{err}");
        let err = parse(r#"{"type": "container"}"#).unwrap_err().to_string();
        assert!(err.contains("jobDefinitionName"), "{err}");
        assert!(parse("[]").is_err());
        let trailing = r#"{"jobDefinitionName": "x", "type": "container"} {}"#;
        assert!(parse(trailing).is_err());
    }

    #[test]
    fn bad_enum_values_are_rejected() {
        let client = offline_client();
        let cases = [
            (
                r#"{"jobDefinitionName": "x", "type": "multinode"}"#,
                "multinode",
            ),
            (
                r#"{"jobDefinitionName": "x", "type": "container",
                    "containerProperties": {"resourceRequirements": [{"type": "CPU", "value": "1"}]}}"#,
                "resourceRequirements[0].type",
            ),
            (
                r#"{"jobDefinitionName": "x", "type": "container",
                    "retryStrategy": {"evaluateOnExit": [{"action": "AGAIN"}]}}"#,
                "evaluateOnExit[0].action",
            ),
            (
                r#"{"jobDefinitionName": "x", "type": "container", "platformCapabilities": ["MARS"]}"#,
                "MARS",
            ),
        ];
        for (text, needle) in cases {
            let err = parse(text)
                .unwrap()
                .apply(client.register_job_definition())
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{needle} missing from: {err}");
        }
    }
}
