//! The container settings of a job definition beyond image, command, environment and size:
//! volumes, mount points, Linux parameters, ulimits, secrets, logging. They travel in
//! [`ContainerProperties::other`](super::ContainerProperties) as the client sent them (so
//! Describe returns them unchanged); [`ContainerSettings::of`] reads them typed, for validation
//! at registration and for the runtimes that apply them.

use super::ContainerProperties;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSettings {
    pub volumes: Option<Vec<Volume>>,
    pub mount_points: Option<Vec<MountPoint>>,
    pub readonly_root_filesystem: Option<bool>,
    pub privileged: Option<bool>,
    pub ulimits: Option<Vec<Ulimit>>,
    pub linux_parameters: Option<LinuxParameters>,
    pub log_configuration: Option<LogConfiguration>,
    pub secrets: Option<Vec<Secret>>,
    pub repository_credentials: Option<RepositoryCredentials>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    pub name: Option<String>,
    pub host: Option<Host>,
    pub efs_volume_configuration: Option<EfsVolumeConfiguration>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Host {
    pub source_path: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EfsVolumeConfiguration {
    pub file_system_id: String,
    pub root_directory: Option<String>,
    pub transit_encryption: Option<String>,
    pub transit_encryption_port: Option<i32>,
    pub authorization_config: Option<EfsAuthorizationConfig>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EfsAuthorizationConfig {
    pub access_point_id: Option<String>,
    pub iam: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MountPoint {
    pub container_path: Option<String>,
    pub read_only: Option<bool>,
    pub source_volume: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Ulimit {
    pub name: String,
    pub soft_limit: i64,
    pub hard_limit: i64,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LinuxParameters {
    pub devices: Option<Vec<Device>>,
    pub init_process_enabled: Option<bool>,
    /// MiB.
    pub shared_memory_size: Option<i64>,
    pub tmpfs: Option<Vec<Tmpfs>>,
    /// MiB; 0 turns swap off.
    pub max_swap: Option<i64>,
    pub swappiness: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    pub host_path: String,
    pub container_path: Option<String>,
    pub permissions: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Tmpfs {
    pub container_path: String,
    /// MiB.
    pub size: i64,
    pub mount_options: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LogConfiguration {
    pub log_driver: String,
    pub options: Option<BTreeMap<String, String>>,
    pub secret_options: Option<Vec<Secret>>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Secret {
    pub name: String,
    pub value_from: String,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryCredentials {
    pub credentials_parameter: String,
}

/// The Linux ulimit names ECS (and so AWS Batch) accepts.
pub const ULIMIT_NAMES: [&str; 15] = [
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

impl ContainerSettings {
    /// The settings in `c`, or a message naming the first member that does not fit its shape
    /// (`field` is where `c` is in the request, e.g. `containerProperties`).
    pub fn of(field: &str, c: &ContainerProperties) -> Result<ContainerSettings, String> {
        let obj: serde_json::Map<String, Value> = c
            .other
            .iter()
            .filter(|(k, _)| KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let s: ContainerSettings = serde_path_to_error::deserialize(Value::Object(obj))
            .map_err(|e| format!("{field}.{}: {}", e.path(), e.inner()))?;
        s.check(field)?;
        Ok(s)
    }

    fn check(&self, field: &str) -> Result<(), String> {
        let volumes = self.volumes.as_deref().unwrap_or_default();
        for (i, v) in volumes.iter().enumerate() {
            if v.name.as_deref().is_none_or(str::is_empty) {
                return Err(format!("{field}.volumes[{i}].name: is required"));
            }
            if v.host.is_some() && v.efs_volume_configuration.is_some() {
                return Err(format!(
                    "{field}.volumes[{i}]: give host or efsVolumeConfiguration, not both"
                ));
            }
        }
        for (i, m) in self.mount_points.iter().flatten().enumerate() {
            let f = format!("{field}.mountPoints[{i}]");
            match m.container_path.as_deref() {
                Some(p) if p.starts_with('/') => {}
                _ => return Err(format!("{f}.containerPath: an absolute path is required")),
            }
            let src = m.source_volume.as_deref().unwrap_or_default();
            if !volumes.iter().any(|v| v.name.as_deref() == Some(src)) {
                return Err(format!("{f}.sourceVolume: no volume named {src:?}"));
            }
        }
        for (i, u) in self.ulimits.iter().flatten().enumerate() {
            if !ULIMIT_NAMES.contains(&u.name.as_str()) {
                return Err(format!(
                    "{field}.ulimits[{i}].name: one of {}, got {:?}",
                    ULIMIT_NAMES.join(", "),
                    u.name
                ));
            }
            if u.soft_limit > u.hard_limit {
                return Err(format!(
                    "{field}.ulimits[{i}].softLimit: must not exceed hardLimit"
                ));
            }
        }
        if let Some(lp) = &self.linux_parameters {
            let f = format!("{field}.linuxParameters");
            if lp.shared_memory_size.is_some_and(|s| s < 1) {
                return Err(format!("{f}.sharedMemorySize: at least 1 MiB"));
            }
            if lp.max_swap.is_some_and(|s| s < 0) {
                return Err(format!("{f}.maxSwap: must not be negative"));
            }
            if lp.swappiness.is_some_and(|s| !(0..=100).contains(&s)) {
                return Err(format!("{f}.swappiness: 0 to 100"));
            }
            for (i, t) in lp.tmpfs.iter().flatten().enumerate() {
                if !t.container_path.starts_with('/') || t.size < 1 {
                    return Err(format!(
                        "{f}.tmpfs[{i}]: an absolute containerPath and a size of at least 1 MiB"
                    ));
                }
            }
            for (i, d) in lp.devices.iter().flatten().enumerate() {
                if !d.host_path.starts_with('/') {
                    return Err(format!(
                        "{f}.devices[{i}].hostPath: an absolute path is required"
                    ));
                }
                for p in d.permissions.iter().flatten() {
                    if !["READ", "WRITE", "MKNOD"].contains(&p.as_str()) {
                        return Err(format!(
                            "{f}.devices[{i}].permissions: READ, WRITE or MKNOD, got {p:?}"
                        ));
                    }
                }
            }
        }
        for (i, s) in self.secrets.iter().flatten().enumerate() {
            if s.name.is_empty() || s.value_from.is_empty() {
                return Err(format!(
                    "{field}.secrets[{i}]: name and valueFrom are required"
                ));
            }
        }
        Ok(())
    }
}

/// The members of `ContainerProperties` read here.
const KEYS: [&str; 9] = [
    "volumes",
    "mountPoints",
    "readonlyRootFilesystem",
    "privileged",
    "ulimits",
    "linuxParameters",
    "logConfiguration",
    "secrets",
    "repositoryCredentials",
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn props(v: Value) -> ContainerProperties {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn settings_are_read_and_checked() {
        let c = props(json!({"image": "busybox",
            "volumes": [{"name": "d", "host": {"sourcePath": "/tmp"}}],
            "mountPoints": [{"sourceVolume": "d", "containerPath": "/data", "readOnly": true}],
            "ulimits": [{"name": "nofile", "softLimit": 10, "hardLimit": 20}],
            "linuxParameters": {"sharedMemorySize": 64}}));
        let s = ContainerSettings::of("containerProperties", &c).unwrap();
        assert_eq!(s.mount_points.unwrap()[0].read_only, Some(true));
        let bad = props(json!({"image": "busybox",
            "mountPoints": [{"sourceVolume": "nope", "containerPath": "/data"}]}));
        let e = ContainerSettings::of("containerProperties", &bad).unwrap_err();
        assert!(
            e.starts_with("containerProperties.mountPoints[0].sourceVolume"),
            "{e}"
        );
        let bad = props(
            json!({"image": "busybox", "ulimits": [{"name": "nofile", "softLimit": "x", "hardLimit": 1}]}),
        );
        let e = ContainerSettings::of("containerProperties", &bad).unwrap_err();
        assert!(
            e.starts_with("containerProperties.ulimits[0].softLimit"),
            "{e}"
        );
    }
}
