//! ECS task definitions derived from job definitions, registered once per content and cached.
//!
//! Every container setting of the job goes into the task definition, as AWS Batch's own do:
//! roles, volumes and mount points, Linux parameters, ulimits, privileged, user, read-only root,
//! secrets, logging, GPUs and registry credentials. Command and environment differ per job and
//! travel in StartTask's overrides instead, so jobs of one definition share a task definition.

use super::{AwsDriver, AwsError, CONTAINER, sanitize};
use crate::compute::AttemptSpec;
use crate::compute::local::container::{gpus, settings};
use crate::model::arn::{JOB_LOG_GROUP, definition_name};
use crate::model::container::{ContainerSettings, LogConfiguration, Secret};
use aws_sdk_ecs::types as ecst;

/// What an attempt's task definition registers, besides its family.
#[derive(Debug, Clone)]
pub(crate) struct TaskDefinitionParts {
    pub family: String,
    pub container: ecst::ContainerDefinition,
    pub volumes: Vec<ecst::Volume>,
    pub task_role_arn: Option<String>,
    pub execution_role_arn: Option<String>,
    /// Covers everything above: two attempts share a task definition only when their keys are
    /// equal, so definitions that differ in any one setting never do.
    pub key: String,
}

fn num(field: &str, v: i64) -> Result<i32, String> {
    i32::try_from(v).map_err(|_| format!("containerProperties.{field}: {v} is out of range"))
}

fn built<T>(field: &str, r: Result<T, impl std::fmt::Display>) -> Result<T, String> {
    r.map_err(|e| format!("containerProperties.{field}: {e}"))
}

fn secrets(field: &str, s: &[Secret]) -> Result<Vec<ecst::Secret>, String> {
    s.iter()
        .map(|s| {
            built(
                field,
                ecst::Secret::builder()
                    .name(&s.name)
                    .value_from(&s.value_from)
                    .build(),
            )
        })
        .collect()
}

/// The job's log configuration; without one, awslogs to the group AWS Batch uses
/// (`/aws/batch/job`) with its stream prefix (the definition name), which Flotilla's own log
/// reads follow. An awslogs configuration that leaves out group, region or prefix gets those.
fn log_configuration(
    lc: Option<&LogConfiguration>,
    region: &str,
    def_name: &str,
) -> Result<ecst::LogConfiguration, String> {
    let driver = lc.map_or("awslogs", |l| l.log_driver.as_str());
    let mut b = ecst::LogConfiguration::builder().log_driver(ecst::LogDriver::from(driver));
    let options = lc.and_then(|l| l.options.clone()).unwrap_or_default();
    if driver == "awslogs" {
        for (k, v) in [
            ("awslogs-group", JOB_LOG_GROUP),
            ("awslogs-region", region),
            ("awslogs-stream-prefix", def_name),
        ] {
            if !options.contains_key(k) {
                b = b.options(k, v);
            }
        }
    }
    for (k, v) in options {
        b = b.options(k, v);
    }
    let so = lc.and_then(|l| l.secret_options.as_deref());
    if let Some(so) = so {
        b = b.set_secret_options(Some(secrets("logConfiguration.secretOptions", so)?));
    }
    built("logConfiguration", b.build())
}

fn volumes(s: &ContainerSettings) -> Result<Vec<ecst::Volume>, String> {
    let mut out = Vec::new();
    for v in s.volumes.iter().flatten() {
        let mut b = ecst::Volume::builder().set_name(v.name.clone());
        if let Some(h) = &v.host {
            b = b.host(
                ecst::HostVolumeProperties::builder()
                    .set_source_path(h.source_path.clone())
                    .build(),
            );
        }
        // Neither host nor EFS: scratch space of the task's own, which ECS gives a volume
        // with only a name (the LOCAL Docker runtime's anonymous volume).
        if let Some(e) = &v.efs_volume_configuration {
            let auth = e.authorization_config.as_ref().map(|a| {
                ecst::EfsAuthorizationConfig::builder()
                    .set_access_point_id(a.access_point_id.clone())
                    .set_iam(a.iam.as_deref().map(ecst::EfsAuthorizationConfigIam::from))
                    .build()
            });
            let efs = ecst::EfsVolumeConfiguration::builder()
                .file_system_id(&e.file_system_id)
                .set_root_directory(e.root_directory.clone())
                .set_transit_encryption(
                    e.transit_encryption
                        .as_deref()
                        .map(ecst::EfsTransitEncryption::from),
                )
                .set_transit_encryption_port(e.transit_encryption_port)
                .set_authorization_config(auth)
                .build();
            b = b.efs_volume_configuration(built("volumes.efsVolumeConfiguration", efs)?);
        }
        out.push(b.build());
    }
    Ok(out)
}

fn linux_parameters(
    lp: &crate::model::container::LinuxParameters,
) -> Result<ecst::LinuxParameters, String> {
    let f = "linuxParameters";
    let mut b = ecst::LinuxParameters::builder()
        .set_init_process_enabled(lp.init_process_enabled)
        .set_shared_memory_size(
            lp.shared_memory_size
                .map(|v| num(&format!("{f}.sharedMemorySize"), v))
                .transpose()?,
        )
        .set_max_swap(
            lp.max_swap
                .map(|v| num(&format!("{f}.maxSwap"), v))
                .transpose()?,
        )
        .set_swappiness(
            lp.swappiness
                .map(|v| num(&format!("{f}.swappiness"), v))
                .transpose()?,
        );
    for d in lp.devices.iter().flatten() {
        let mut db = ecst::Device::builder()
            .host_path(&d.host_path)
            .set_container_path(d.container_path.clone());
        // AWS Batch spells the permissions READ / WRITE / MKNOD, ECS read / write / mknod.
        for p in d.permissions.iter().flatten() {
            db = db.permissions(ecst::DeviceCgroupPermission::from(
                p.to_ascii_lowercase().as_str(),
            ));
        }
        b = b.devices(built(&format!("{f}.devices"), db.build())?);
    }
    for t in lp.tmpfs.iter().flatten() {
        let tb = ecst::Tmpfs::builder()
            .container_path(&t.container_path)
            .size(num(&format!("{f}.tmpfs.size"), t.size)?)
            .set_mount_options(t.mount_options.clone());
        b = b.tmpfs(built(&format!("{f}.tmpfs"), tb.build())?);
    }
    Ok(b.build())
}

/// The task definition of `spec`'s attempt: pure, so every mapping is testable without ECS.
pub(crate) fn task_definition_parts(
    spec: &AttemptSpec,
    region: &str,
) -> Result<TaskDefinitionParts, String> {
    let s = settings(spec)?;
    let def_name = definition_name(&spec.job_definition).to_string();
    let family = format!("flotilla-{}", sanitize(&def_name));
    let image = spec
        .image
        .clone()
        .unwrap_or_else(|| "public.ecr.aws/amazonlinux/amazonlinux:latest".into());
    let cpu = (spec.milli_vcpus * 1024).div_ceil(1000).max(128) as i32;
    let memory = spec.memory_mib.max(128) as i32;
    let gpus = gpus(spec);
    let c = &spec.container;
    let mut b = ecst::ContainerDefinition::builder()
        .name(CONTAINER)
        .image(&image)
        .essential(true)
        .cpu(cpu)
        .memory(memory)
        .log_configuration(log_configuration(
            s.log_configuration.as_ref(),
            region,
            &def_name,
        )?)
        .set_user(c.user.clone())
        .set_privileged(s.privileged)
        .set_readonly_root_filesystem(s.readonly_root_filesystem);
    for m in s.mount_points.iter().flatten() {
        b = b.mount_points(
            ecst::MountPoint::builder()
                .set_source_volume(m.source_volume.clone())
                .set_container_path(m.container_path.clone())
                .set_read_only(m.read_only)
                .build(),
        );
    }
    for u in s.ulimits.iter().flatten() {
        let ub = ecst::Ulimit::builder()
            .name(ecst::UlimitName::from(u.name.as_str()))
            .soft_limit(num("ulimits.softLimit", u.soft_limit)?)
            .hard_limit(num("ulimits.hardLimit", u.hard_limit)?);
        b = b.ulimits(built("ulimits", ub.build())?);
    }
    if let Some(lp) = &s.linux_parameters {
        b = b.linux_parameters(linux_parameters(lp)?);
    }
    if let Some(sec) = &s.secrets {
        b = b.set_secrets(Some(secrets("secrets", sec)?));
    }
    if let Some(rc) = &s.repository_credentials {
        b = b.repository_credentials(built(
            "repositoryCredentials",
            ecst::RepositoryCredentials::builder()
                .credentials_parameter(&rc.credentials_parameter)
                .build(),
        )?);
    }
    // ECS reserves the GPUs on the instance and hands their devices to the container.
    if gpus > 0 {
        b = b.resource_requirements(built(
            "resourceRequirements",
            ecst::ResourceRequirement::builder()
                .r#type(ecst::ResourceType::Gpu)
                .value(gpus.to_string())
                .build(),
        )?);
    }
    let volumes = volumes(&s)?;
    // The typed settings' Debug form is deterministic (ordered maps, lists in order) and
    // covers every member read above, as do the typed fields beside it.
    let key = format!(
        "{family}\n{image}\n{cpu}\n{memory}\n{def_name}\n{region}\n{gpus}\n{:?}\n{:?}\n{:?}\n{:?}",
        c.user, c.job_role_arn, c.execution_role_arn, s
    );
    Ok(TaskDefinitionParts {
        family,
        container: b.build(),
        volumes,
        task_role_arn: c.job_role_arn.clone(),
        execution_role_arn: c.execution_role_arn.clone(),
        key,
    })
}

impl AwsDriver {
    pub(super) async fn task_definition(&self, spec: &AttemptSpec) -> Result<String, AwsError> {
        let parts =
            task_definition_parts(spec, &self.opts.api.region).map_err(|message| AwsError {
                service: "ecs",
                operation: "RegisterTaskDefinition",
                code: "ClientException".into(),
                message,
                retryable: false,
            })?;
        let mut cache = self.taskdefs.lock().await;
        if let Some(arn) = cache.get(&parts.key) {
            return Ok(arn.clone());
        }
        let out = self
            .api
            .call(
                "ecs",
                "RegisterTaskDefinition",
                self.api
                    .ecs
                    .register_task_definition()
                    .family(&parts.family)
                    .requires_compatibilities(ecst::Compatibility::Ec2)
                    .set_task_role_arn(parts.task_role_arn.clone())
                    .set_execution_role_arn(parts.execution_role_arn.clone())
                    .set_volumes((!parts.volumes.is_empty()).then(|| parts.volumes.clone()))
                    .container_definitions(parts.container.clone())
                    .send(),
            )
            .await?;
        let arn = out
            .task_definition()
            .and_then(|t| t.task_definition_arn())
            .unwrap_or(&parts.family)
            .to_string();
        cache.insert(parts.key, arn.clone());
        Ok(arn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::Target;
    use serde_json::json;

    fn spec(container: serde_json::Value) -> AttemptSpec {
        AttemptSpec {
            job_id: "j".into(),
            attempt: 1,
            task_id: "t".into(),
            image: Some("busybox".into()),
            command: vec!["true".into()],
            env: Vec::new(),
            milli_vcpus: 1000,
            memory_mib: 512,
            log_group: JOB_LOG_GROUP.into(),
            log_stream: "s".into(),
            job_definition: "arn:aws:batch:us-east-1:000000000000:job-definition/every:1".into(),
            target: Target::Local,
            container: std::sync::Arc::new(serde_json::from_value(container).unwrap()),
            tags: Default::default(),
        }
    }

    /// Every container setting of the job, as a job definition's `containerProperties`.
    pub(crate) fn every_setting() -> serde_json::Value {
        json!({
            "image": "busybox",
            "jobRoleArn": "arn:aws:iam::000000000000:role/job",
            "executionRoleArn": "arn:aws:iam::000000000000:role/exec",
            "user": "nobody",
            "privileged": true,
            "readonlyRootFilesystem": true,
            "resourceRequirements": [{"type": "GPU", "value": "2"}],
            "volumes": [
                {"name": "data", "host": {"sourcePath": "/srv/data"}},
                {"name": "scratch"},
                {"name": "shared", "efsVolumeConfiguration": {
                    "fileSystemId": "fs-12345678", "rootDirectory": "/exports",
                    "transitEncryption": "ENABLED", "transitEncryptionPort": 2049,
                    "authorizationConfig": {"accessPointId": "fsap-1234", "iam": "ENABLED"}}}
            ],
            "mountPoints": [
                {"sourceVolume": "data", "containerPath": "/data", "readOnly": true},
                {"sourceVolume": "shared", "containerPath": "/shared", "readOnly": false}
            ],
            "ulimits": [{"name": "nofile", "softLimit": 1024, "hardLimit": 4096}],
            "linuxParameters": {
                "sharedMemorySize": 256,
                "initProcessEnabled": true,
                "maxSwap": 1024,
                "swappiness": 60,
                "tmpfs": [{"containerPath": "/run", "size": 64, "mountOptions": ["noexec"]}],
                "devices": [{"hostPath": "/dev/fuse", "containerPath": "/dev/fuse",
                             "permissions": ["READ", "WRITE"]}]
            },
            "secrets": [{"name": "TOKEN", "valueFrom": "arn:aws:ssm:us-east-1:000000000000:parameter/token"}],
            "logConfiguration": {
                "logDriver": "fluentd",
                "options": {"fluentd-address": "localhost:24224"},
                "secretOptions": [{"name": "key", "valueFrom": "arn:aws:ssm:us-east-1:000000000000:parameter/k"}]
            },
            "repositoryCredentials": {"credentialsParameter": "arn:aws:secretsmanager:us-east-1:000000000000:secret:reg"}
        })
    }

    #[test]
    fn every_container_setting_reaches_the_task_definition() {
        let p = task_definition_parts(&spec(every_setting()), "us-east-1").unwrap();
        assert_eq!(p.family, "flotilla-every");
        assert_eq!(
            p.task_role_arn.as_deref(),
            Some("arn:aws:iam::000000000000:role/job")
        );
        assert_eq!(
            p.execution_role_arn.as_deref(),
            Some("arn:aws:iam::000000000000:role/exec")
        );
        let v = &p.volumes;
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].name(), Some("data"));
        assert_eq!(v[0].host().and_then(|h| h.source_path()), Some("/srv/data"));
        assert!(v[1].host().is_none() && v[1].efs_volume_configuration().is_none());
        let efs = v[2].efs_volume_configuration().unwrap();
        assert_eq!(efs.file_system_id(), "fs-12345678");
        assert_eq!(efs.root_directory(), Some("/exports"));
        assert_eq!(
            efs.transit_encryption(),
            Some(&ecst::EfsTransitEncryption::Enabled)
        );
        assert_eq!(efs.transit_encryption_port(), Some(2049));
        let auth = efs.authorization_config().unwrap();
        assert_eq!(auth.access_point_id(), Some("fsap-1234"));
        assert_eq!(auth.iam(), Some(&ecst::EfsAuthorizationConfigIam::Enabled));

        let c = &p.container;
        assert_eq!(c.name(), Some(CONTAINER));
        assert_eq!(c.image(), Some("busybox"));
        assert_eq!(c.cpu(), 1024);
        assert_eq!(c.memory(), Some(512));
        assert_eq!(c.user(), Some("nobody"));
        assert_eq!(c.privileged(), Some(true));
        assert_eq!(c.readonly_root_filesystem(), Some(true));
        let mp = c.mount_points();
        assert_eq!(mp.len(), 2);
        assert_eq!(
            (
                mp[0].source_volume(),
                mp[0].container_path(),
                mp[0].read_only()
            ),
            (Some("data"), Some("/data"), Some(true))
        );
        assert_eq!(
            (
                mp[1].source_volume(),
                mp[1].container_path(),
                mp[1].read_only()
            ),
            (Some("shared"), Some("/shared"), Some(false))
        );
        let u = &c.ulimits()[0];
        assert_eq!(
            (u.name(), u.soft_limit(), u.hard_limit()),
            (&ecst::UlimitName::Nofile, 1024, 4096)
        );
        let lp = c.linux_parameters().unwrap();
        assert_eq!(lp.shared_memory_size(), Some(256));
        assert_eq!(lp.init_process_enabled(), Some(true));
        assert_eq!(lp.max_swap(), Some(1024));
        assert_eq!(lp.swappiness(), Some(60));
        let t = &lp.tmpfs()[0];
        assert_eq!(
            (t.container_path(), t.size(), t.mount_options()),
            ("/run", 64, &["noexec".to_string()][..])
        );
        let d = &lp.devices()[0];
        assert_eq!(d.host_path(), "/dev/fuse");
        assert_eq!(d.container_path(), Some("/dev/fuse"));
        assert_eq!(
            d.permissions(),
            &[
                ecst::DeviceCgroupPermission::Read,
                ecst::DeviceCgroupPermission::Write
            ]
        );
        let s = &c.secrets()[0];
        assert_eq!(
            (s.name(), s.value_from()),
            (
                "TOKEN",
                "arn:aws:ssm:us-east-1:000000000000:parameter/token"
            )
        );
        let log = c.log_configuration().unwrap();
        assert_eq!(log.log_driver(), &ecst::LogDriver::Fluentd);
        assert_eq!(
            log.options().and_then(|o| o.get("fluentd-address")),
            Some(&"localhost:24224".to_string())
        );
        assert_eq!(
            log.options().map(|o| o.len()),
            Some(1),
            "no awslogs options"
        );
        assert_eq!(log.secret_options()[0].name(), "key");
        let gpu = &c.resource_requirements()[0];
        assert_eq!((gpu.r#type(), gpu.value()), (&ecst::ResourceType::Gpu, "2"));
        assert_eq!(
            c.repository_credentials()
                .map(|r| r.credentials_parameter()),
            Some("arn:aws:secretsmanager:us-east-1:000000000000:secret:reg")
        );
    }

    #[test]
    fn without_a_log_configuration_the_task_logs_to_the_batch_group() {
        let p = task_definition_parts(&spec(json!({"image": "busybox"})), "eu-west-1").unwrap();
        let log = p.container.log_configuration().unwrap();
        assert_eq!(log.log_driver(), &ecst::LogDriver::Awslogs);
        let o = log.options().unwrap();
        assert_eq!(o["awslogs-group"], JOB_LOG_GROUP);
        assert_eq!(o["awslogs-region"], "eu-west-1");
        assert_eq!(o["awslogs-stream-prefix"], "every");
        assert!(p.volumes.is_empty() && p.task_role_arn.is_none());
        assert!(p.container.linux_parameters().is_none());
        // awslogs with a group of the job's own keeps it and gets the rest.
        let p = task_definition_parts(
            &spec(
                json!({"image": "busybox", "logConfiguration": {"logDriver": "awslogs",
                "options": {"awslogs-group": "/mine"}}}),
            ),
            "eu-west-1",
        )
        .unwrap();
        let o = p.container.log_configuration().unwrap().options().unwrap();
        assert_eq!(o["awslogs-group"], "/mine");
        assert_eq!(o["awslogs-stream-prefix"], "every");
    }

    #[test]
    fn definitions_differing_in_one_setting_never_share_a_task_definition() {
        let base = task_definition_parts(&spec(every_setting()), "us-east-1").unwrap();
        let changes: [(&str, serde_json::Value); 8] = [
            ("user", json!("root")),
            ("jobRoleArn", json!("arn:aws:iam::000000000000:role/other")),
            (
                "executionRoleArn",
                json!("arn:aws:iam::000000000000:role/other"),
            ),
            ("privileged", json!(false)),
            (
                "ulimits",
                json!([{"name": "nofile", "softLimit": 1024, "hardLimit": 8192}]),
            ),
            ("linuxParameters", json!({"sharedMemorySize": 128})),
            (
                "resourceRequirements",
                json!([{"type": "GPU", "value": "1"}]),
            ),
            ("secrets", json!([])),
        ];
        for (k, v) in changes {
            let mut c = every_setting();
            c[k] = v;
            let other = task_definition_parts(&spec(c), "us-east-1").unwrap();
            assert_ne!(base.key, other.key, "{k}");
        }
        // Command and environment travel in StartTask's overrides: the same task definition.
        let mut c = every_setting();
        c["command"] = json!(["echo", "other"]);
        c["environment"] = json!([{"name": "A", "value": "b"}]);
        assert_eq!(
            base.key,
            task_definition_parts(&spec(c), "us-east-1").unwrap().key
        );
    }
}
