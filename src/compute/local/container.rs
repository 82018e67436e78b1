//! A job's container settings as the LOCAL runtimes apply them: Docker host configuration for
//! containers; what a host process can take (and a refusal naming the rest) for processes.
//! Everything the definition declares is applied or ends the attempt with a
//! `MISCONFIGURATION:` reason naming the member; nothing is skipped without a word.

use crate::compute::AttemptSpec;
use crate::model::arn::JOB_LOG_GROUP;
use crate::model::container::{ContainerSettings, Volume};
use bollard::models::{DeviceMapping, DeviceRequest, HostConfig, ResourcesUlimits};
use std::collections::HashMap;

const MIB: i64 = 1024 * 1024;

fn misconfigured(msg: impl std::fmt::Display) -> String {
    format!("MISCONFIGURATION: {msg}")
}

/// The settings of `spec`'s container, or why they cannot be read (a definition stored before
/// they were checked at registration).
pub fn settings(spec: &AttemptSpec) -> Result<ContainerSettings, String> {
    ContainerSettings::of("containerProperties", &spec.container).map_err(misconfigured)
}

/// GPUs the job asks for (`resourceRequirements` type GPU).
pub fn gpus(spec: &AttemptSpec) -> i64 {
    spec.container
        .resource_requirements
        .iter()
        .flatten()
        .find(|r| r.rtype == "GPU")
        .and_then(|r| r.value.parse().ok())
        .unwrap_or(0)
}

/// Refuses a log configuration the LOCAL runtimes cannot follow: they keep each attempt's
/// output in Flotilla's own log store, served as CloudWatch Logs group `/aws/batch/job`.
fn local_logging(s: &ContainerSettings) -> Result<(), String> {
    // Secrets are injected by ECS from SSM or Secrets Manager; a LOCAL runtime cannot fetch
    // them yet, and a job run without them would be run with less than it declared.
    if let Some(secret) = s.secrets.iter().flatten().next() {
        return Err(misconfigured(format!(
            "containerProperties.secrets: {} cannot be resolved on a LOCAL compute environment \
             (it is injected on ECS); run the job on EC2 capacity",
            secret.name
        )));
    }
    let Some(lc) = &s.log_configuration else {
        return Ok(());
    };
    if lc.log_driver != "awslogs" {
        return Err(misconfigured(format!(
            "containerProperties.logConfiguration.logDriver: {} is not available on a LOCAL \
             compute environment, whose output goes to Flotilla's CloudWatch Logs (awslogs)",
            lc.log_driver
        )));
    }
    if let Some(g) = lc.options.as_ref().and_then(|o| o.get("awslogs-group"))
        && g != JOB_LOG_GROUP
    {
        return Err(misconfigured(format!(
            "containerProperties.logConfiguration.options.awslogs-group: a LOCAL compute \
             environment logs to {JOB_LOG_GROUP}, not {g}"
        )));
    }
    if lc.secret_options.as_ref().is_some_and(|v| !v.is_empty()) {
        return Err(misconfigured(
            "containerProperties.logConfiguration.secretOptions: not available on a LOCAL compute environment",
        ));
    }
    Ok(())
}

fn volume<'a>(s: &'a ContainerSettings, name: &str) -> Option<&'a Volume> {
    s.volumes
        .iter()
        .flatten()
        .find(|v| v.name.as_deref() == Some(name))
}

/// The Docker host configuration (beyond CPU and memory) and the user for `spec`'s container.
pub fn docker_config(spec: &AttemptSpec) -> Result<(HostConfig, Option<String>), String> {
    let s = settings(spec)?;
    local_logging(&s)?;
    if let Some(v) = s
        .volumes
        .iter()
        .flatten()
        .find(|v| v.efs_volume_configuration.is_some())
    {
        return Err(misconfigured(format!(
            "containerProperties.volumes: {:?} is an EFS volume, which a LOCAL compute \
             environment cannot mount; use a host volume or run the job on EC2 capacity",
            v.name.as_deref().unwrap_or_default()
        )));
    }
    let mut hc = HostConfig::default();
    let mut binds = Vec::new();
    let mut mounts = Vec::new();
    for m in s.mount_points.iter().flatten() {
        let target = m.container_path.clone().unwrap_or_default();
        let ro = m.read_only.unwrap_or(false);
        let source = m.source_volume.as_deref().unwrap_or_default();
        match volume(&s, source).and_then(|v| v.host.as_ref()?.source_path.clone()) {
            Some(path) => binds.push(format!("{path}:{target}{}", if ro { ":ro" } else { "" })),
            // A volume with no host path is scratch space of the task's own, as on ECS: an
            // anonymous Docker volume, removed with the container.
            None => mounts.push(bollard::models::Mount {
                target: Some(target),
                typ: Some(bollard::models::MountType::VOLUME),
                read_only: Some(ro),
                ..Default::default()
            }),
        }
    }
    hc.binds = (!binds.is_empty()).then_some(binds);
    hc.mounts = (!mounts.is_empty()).then_some(mounts);
    hc.readonly_rootfs = s.readonly_root_filesystem;
    hc.privileged = s.privileged;
    hc.ulimits = s.ulimits.as_ref().map(|u| {
        u.iter()
            .map(|u| ResourcesUlimits {
                name: Some(u.name.clone()),
                soft: Some(u.soft_limit),
                hard: Some(u.hard_limit),
            })
            .collect()
    });
    // AWS Batch starts no init process unless asked.
    hc.init = Some(false);
    if let Some(lp) = &s.linux_parameters {
        hc.init = Some(lp.init_process_enabled.unwrap_or(false));
        hc.shm_size = lp.shared_memory_size.map(|m| m * MIB);
        hc.tmpfs = lp.tmpfs.as_ref().map(|t| {
            t.iter()
                .map(|t| {
                    let mut opts = vec![format!("size={}m", t.size)];
                    opts.extend(t.mount_options.iter().flatten().cloned());
                    (t.container_path.clone(), opts.join(","))
                })
                .collect::<HashMap<_, _>>()
        });
        hc.devices = lp.devices.as_ref().map(|d| {
            d.iter()
                .map(|d| DeviceMapping {
                    path_on_host: Some(d.host_path.clone()),
                    path_in_container: Some(
                        d.container_path
                            .clone()
                            .unwrap_or_else(|| d.host_path.clone()),
                    ),
                    cgroup_permissions: Some(device_permissions(d.permissions.as_deref())),
                })
                .collect()
        });
        // maxSwap is swap on top of memory; Docker's memory-swap is the two together.
        if let Some(swap) = lp.max_swap {
            let memory = i64::try_from(spec.memory_mib).unwrap_or(i64::MAX) * MIB;
            hc.memory_swap = Some(memory.saturating_add(swap * MIB));
        }
        hc.memory_swappiness = lp.swappiness;
    }
    let gpus = gpus(spec);
    if gpus > 0 {
        hc.device_requests = Some(vec![DeviceRequest {
            count: Some(gpus),
            capabilities: Some(vec![vec!["gpu".into()]]),
            ..Default::default()
        }]);
    }
    Ok((hc, spec.container.user.clone()))
}

/// ECS's device permissions as cgroup's: READ r, WRITE w, MKNOD m; all three when none given.
fn device_permissions(p: Option<&[String]>) -> String {
    match p {
        None | Some([]) => "rwm".into(),
        Some(p) => p
            .iter()
            .filter_map(|p| match p.as_str() {
                "READ" => Some('r'),
                "WRITE" => Some('w'),
                "MKNOD" => Some('m'),
                _ => None,
            })
            .collect(),
    }
}

/// What of `spec`'s container a host process cannot honour, as the attempt's reason; `Ok` with
/// the ulimits to set when everything else is absent or at its default. `user` is the process
/// runtime's to decide: it can switch users only when the server runs as root.
pub fn process_config(spec: &AttemptSpec) -> Result<Vec<(String, i64, i64)>, String> {
    let s = settings(spec)?;
    local_logging(&s)?;
    let refuse = |member: &str| {
        Err(misconfigured(format!(
            "containerProperties.{member}: the LOCAL process runtime cannot apply it; run the \
             server with --local-runtime docker, or the job on EC2 capacity"
        )))
    };
    if s.volumes.as_ref().is_some_and(|v| !v.is_empty())
        || s.mount_points.as_ref().is_some_and(|v| !v.is_empty())
    {
        return refuse("volumes");
    }
    if s.privileged == Some(true) {
        return refuse("privileged");
    }
    if s.readonly_root_filesystem == Some(true) {
        return refuse("readonlyRootFilesystem");
    }
    if let Some(lp) = &s.linux_parameters {
        if lp.devices.as_ref().is_some_and(|d| !d.is_empty()) {
            return refuse("linuxParameters.devices");
        }
        if lp.shared_memory_size.is_some() {
            return refuse("linuxParameters.sharedMemorySize");
        }
        if lp.tmpfs.as_ref().is_some_and(|t| !t.is_empty()) {
            return refuse("linuxParameters.tmpfs");
        }
        if lp.max_swap.is_some() || lp.swappiness.is_some() {
            return refuse("linuxParameters.maxSwap");
        }
    }
    if gpus(spec) > 0 {
        return refuse("resourceRequirements (GPU)");
    }
    Ok(s.ulimits
        .iter()
        .flatten()
        .map(|u| (u.name.clone(), u.soft_limit, u.hard_limit))
        .collect())
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
            memory_mib: 64,
            log_group: JOB_LOG_GROUP.into(),
            log_stream: "s".into(),
            job_definition: "arn:aws:batch:us-east-1:000000000000:job-definition/d:1".into(),
            target: Target::Local,
            container: std::sync::Arc::new(serde_json::from_value(container).unwrap()),
            tags: Default::default(),
        }
    }

    #[test]
    fn what_a_local_runtime_cannot_apply_is_named_not_skipped() {
        let s = spec(json!({"image": "busybox",
            "secrets": [{"name": "TOKEN", "valueFrom": "arn:aws:ssm:us-east-1:0:parameter/t"}]}));
        for e in [
            docker_config(&s).unwrap_err(),
            process_config(&s).unwrap_err(),
        ] {
            assert!(
                e.starts_with("MISCONFIGURATION: containerProperties.secrets: TOKEN"),
                "{e}"
            );
        }
        let s = spec(json!({"image": "busybox", "user": "65534",
            "ulimits": [{"name": "nofile", "softLimit": 10, "hardLimit": 20}]}));
        assert_eq!(docker_config(&s).unwrap().1.as_deref(), Some("65534"));
        assert_eq!(
            process_config(&s).unwrap(),
            vec![("nofile".to_string(), 10, 20)]
        );
        let s = spec(json!({"image": "busybox",
            "ulimits": [{"name": "nofile", "softLimit": 10, "hardLimit": 20}]}));
        assert_eq!(
            process_config(&s).unwrap(),
            vec![("nofile".to_string(), 10, 20)]
        );
    }
}
