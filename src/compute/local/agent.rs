//! What the ECS agent serves a task on AWS, for LOCAL Docker containers: the task-metadata
//! endpoint (`ECS_CONTAINER_METADATA_URI_V4`) and, through [`super::roles::RoleBroker`], the
//! job role's credentials (`AWS_CONTAINER_CREDENTIALS_FULL_URI`), refreshed before they expire.
//!
//! A container's loopback is its own, and the SDKs fetch container credentials over plain HTTP
//! only from a loopback address or ECS's link-local `169.254.170.2`. The ECS agent makes that
//! address reach itself with iptables rules on the host; Flotilla needs no root for it: its
//! containers join a Docker bridge network of its own, [`TASK_NETWORK`], whose gateway (the
//! host's side of the bridge) *is* `169.254.170.2`, and the server listens on that address.
//! Every Flotilla server on the host shares the network and listens on a port of its own.
//!
//! When the network cannot be had (the subnet is taken, or the daemon is not on this host, so the
//! address is not this host's), containers run on Docker's default bridge without these
//! endpoints, job roles fall back to unrefreshed credentials in the environment, and the server
//! says so at start-up.

use crate::compute::AttemptSpec;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bollard::Docker;
use bollard::models::{Ipam, IpamConfig, NetworkCreateRequest};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// The Docker network LOCAL containers join.
pub const TASK_NETWORK: &str = "flotilla";
/// ECS's task-endpoint address: the gateway of [`TASK_NETWORK`].
pub const AGENT_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 170, 2);
const SUBNET: &str = "169.254.170.0/24";

/// Why the task network is not usable, for the start-up warning.
#[derive(Debug, thiserror::Error)]
#[error("task network {TASK_NETWORK}: {0}")]
pub struct NetworkError(String);

/// Creates [`TASK_NETWORK`] unless it exists, and checks that its gateway is [`AGENT_IP`].
pub async fn ensure_network(docker: &Docker) -> Result<(), NetworkError> {
    let check = |n: bollard::models::NetworkInspect| {
        let gateways: Vec<String> = n
            .ipam
            .and_then(|i| i.config)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| c.gateway)
            .collect();
        if gateways.iter().any(|g| g == &AGENT_IP.to_string()) {
            Ok(())
        } else {
            Err(NetworkError(format!(
                "exists with gateway {gateways:?}, not {AGENT_IP}; remove it (docker network rm \
                 {TASK_NETWORK}) and Flotilla creates it anew"
            )))
        }
    };
    match docker.inspect_network(TASK_NETWORK, None).await {
        Ok(n) => return check(n),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {}
        Err(e) => return Err(NetworkError(e.to_string())),
    }
    let req = NetworkCreateRequest {
        name: TASK_NETWORK.into(),
        driver: Some("bridge".into()),
        ipam: Some(Ipam {
            config: Some(vec![IpamConfig {
                subnet: Some(SUBNET.into()),
                gateway: Some(AGENT_IP.to_string()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        labels: Some(HashMap::from([(
            "flotilla.purpose".to_string(),
            "task endpoints at 169.254.170.2 (metadata, job role credentials)".to_string(),
        )])),
        ..Default::default()
    };
    match docker.create_network(req).await {
        Ok(_) => {
            tracing::info!(
                network = TASK_NETWORK,
                subnet = SUBNET,
                "created task network"
            );
            Ok(())
        }
        // Another server created it meanwhile (the subnet makes a second one fail): use that.
        Err(create) => match docker.inspect_network(TASK_NETWORK, None).await {
            Ok(n) => check(n),
            Err(_) => Err(NetworkError(create.to_string())),
        },
    }
}

/// A listener on `ip` at the port the file `remember` names, so that what runs through a restart
/// of the server (its URLs hold the port) still reaches it; any free port when that one is taken
/// or none is remembered, which is then remembered.
pub async fn bind_remembered(
    ip: Ipv4Addr,
    remember: &std::path::Path,
) -> std::io::Result<tokio::net::TcpListener> {
    let port: u16 = std::fs::read_to_string(remember)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let listener = match tokio::net::TcpListener::bind((ip, port)).await {
        Ok(l) => l,
        Err(e) if port != 0 => {
            tracing::warn!(%ip, port, error = %e, "remembered port taken; jobs that outlived the last run cannot reach this server's task endpoints");
            tokio::net::TcpListener::bind((ip, 0)).await?
        }
        Err(e) => return Err(e),
    };
    let bound = listener.local_addr()?.port();
    if bound != port {
        let tmp = remember.with_extension("tmp");
        std::fs::write(&tmp, bound.to_string())?;
        std::fs::rename(&tmp, remember)?;
    }
    Ok(listener)
}

/// One container's task as its metadata endpoint describes it.
#[derive(Debug, Clone)]
struct Record {
    task_id: String,
    job_definition: String,
    image: String,
    docker_name: String,
    docker_id: Option<String>,
    labels: HashMap<String, String>,
    milli_vcpus: u64,
    memory_mib: u64,
    region: String,
    log_group: String,
    log_stream: String,
    created_at: SystemTime,
    started_at: Option<SystemTime>,
}

/// The task-metadata endpoint's records, one per running container, each under an unguessable
/// id that only its container is told.
pub struct TaskMetadata {
    /// `http://169.254.170.2:PORT`
    base_url: String,
    records: Mutex<HashMap<String, Record>>,
}

impl TaskMetadata {
    pub fn new(base_url: String) -> Arc<TaskMetadata> {
        Arc::new(TaskMetadata {
            base_url,
            records: Mutex::new(HashMap::new()),
        })
    }

    fn records(&self) -> std::sync::MutexGuard<'_, HashMap<String, Record>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `spec`'s container; returns the id to label it with and the environment that
    /// points it at its metadata.
    pub fn register(
        &self,
        spec: &AttemptSpec,
        image: &str,
        docker_name: &str,
        labels: &HashMap<String, String>,
    ) -> (String, Vec<(String, String)>) {
        let id = format!(
            "{}-{}",
            spec.task_id,
            uuid::Uuid::new_v4()
                .simple()
                .to_string()
                .get(..16)
                .unwrap_or("0")
        );
        let region = spec
            .env
            .iter()
            .find(|(k, _)| k == "AWS_REGION")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        self.records().insert(
            id.clone(),
            Record {
                task_id: spec.task_id.clone(),
                job_definition: spec.job_definition.clone(),
                image: image.to_string(),
                docker_name: docker_name.to_string(),
                docker_id: None,
                labels: labels.clone(),
                milli_vcpus: spec.milli_vcpus,
                memory_mib: spec.memory_mib,
                region,
                log_group: spec.log_group.clone(),
                log_stream: spec.log_stream.clone(),
                created_at: SystemTime::now(),
                started_at: None,
            },
        );
        let uri = format!("{}/v4/{id}", self.base_url);
        let env = vec![
            ("ECS_CONTAINER_METADATA_URI_V4".to_string(), uri),
            (
                "ECS_CONTAINER_METADATA_URI".to_string(),
                format!("{}/v3/{id}", self.base_url),
            ),
        ];
        (id, env)
    }

    /// The container was created as `docker_id` and is being started.
    pub fn started(&self, id: &str, docker_id: Option<String>) {
        if let Some(r) = self.records().get_mut(id) {
            r.docker_id = docker_id;
            r.started_at = Some(SystemTime::now());
        }
    }

    /// A container adopted after a restart: described from what its labels kept.
    pub fn adopt(
        &self,
        id: &str,
        task_id: &str,
        image: &str,
        docker_name: &str,
        docker_id: Option<String>,
        labels: &HashMap<String, String>,
    ) {
        let num = |k: &str| labels.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
        let text = |k: &str| labels.get(k).cloned().unwrap_or_default();
        self.records().insert(
            id.to_string(),
            Record {
                task_id: task_id.to_string(),
                job_definition: text(LABEL_JOB_DEFINITION),
                image: image.to_string(),
                docker_name: docker_name.to_string(),
                docker_id,
                labels: labels.clone(),
                milli_vcpus: num(LABEL_MILLI_VCPUS),
                memory_mib: num(LABEL_MEMORY_MIB),
                region: text(LABEL_REGION),
                log_group: text(super::docker::LABEL_LOG_GROUP),
                log_stream: text(super::docker::LABEL_LOG_STREAM),
                created_at: SystemTime::now(),
                started_at: Some(SystemTime::now()),
            },
        );
    }

    pub fn forget(&self, id: &str) {
        self.records().remove(id);
    }

    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/v4/{id}", get(container))
            .route("/v4/{id}/task", get(task))
            .route("/v3/{id}", get(container))
            .route("/v3/{id}/task", get(task))
            .with_state(self.clone())
    }
}

/// Labels the Docker runtime adds so that an adopted container can be described again.
pub const LABEL_METADATA_ID: &str = "flotilla.metadata-id";
pub const LABEL_JOB_DEFINITION: &str = "flotilla.job-definition";
pub const LABEL_MILLI_VCPUS: &str = "flotilla.milli-vcpus";
pub const LABEL_MEMORY_MIB: &str = "flotilla.memory-mib";
pub const LABEL_REGION: &str = "flotilla.region";

fn rfc3339(t: SystemTime) -> String {
    aws_sdk_sts::primitives::DateTime::from(t)
        .fmt(aws_sdk_sts::primitives::DateTimeFormat::DateTime)
        .unwrap_or_default()
}

/// `arn:aws:batch:REGION:ACCOUNT:job-definition/NAME:REVISION` → (NAME, REVISION).
fn family(job_definition: &str) -> (String, String) {
    let tail = job_definition
        .rsplit_once("job-definition/")
        .map(|(_, t)| t)
        .unwrap_or(job_definition);
    match tail.rsplit_once(':') {
        Some((name, rev)) => (name.to_string(), rev.to_string()),
        None => (tail.to_string(), String::new()),
    }
}

fn container_json(r: &Record) -> Value {
    let (family, revision) = family(&r.job_definition);
    let mut labels: serde_json::Map<String, Value> = r
        .labels
        .iter()
        .filter(|(k, _)| *k != LABEL_METADATA_ID)
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    for (k, v) in [
        ("com.amazonaws.ecs.cluster", "local"),
        ("com.amazonaws.ecs.container-name", "default"),
        ("com.amazonaws.ecs.task-arn", r.task_id.as_str()),
        ("com.amazonaws.ecs.task-definition-family", family.as_str()),
        (
            "com.amazonaws.ecs.task-definition-version",
            revision.as_str(),
        ),
    ] {
        labels.insert(k.into(), Value::String(v.into()));
    }
    let mut c = json!({
        "DockerId": r.docker_id.clone().unwrap_or_default(),
        "Name": "default",
        "DockerName": r.docker_name,
        "Image": r.image,
        "Labels": labels,
        "DesiredStatus": "RUNNING",
        "KnownStatus": if r.started_at.is_some() { "RUNNING" } else { "CREATED" },
        // ECS gives a container's CPU in CPU units, 1,024 to a vCPU.
        "Limits": {"CPU": r.milli_vcpus * 1024 / 1000, "Memory": r.memory_mib},
        "CreatedAt": rfc3339(r.created_at),
        "Type": "NORMAL",
        "LogDriver": "awslogs",
        "LogOptions": {
            "awslogs-group": r.log_group,
            "awslogs-region": r.region,
            "awslogs-stream": r.log_stream,
        },
        "Networks": [{"NetworkMode": TASK_NETWORK}],
    });
    if let Some(t) = r.started_at {
        c["StartedAt"] = Value::String(rfc3339(t));
    }
    c
}

fn lookup(meta: &TaskMetadata, id: &str) -> Option<Record> {
    let found = meta.records().get(id).cloned();
    crate::metrics::task_metadata(found.is_some());
    found
}

async fn container(State(meta): State<Arc<TaskMetadata>>, Path(id): Path<String>) -> Response {
    match lookup(&meta, &id) {
        Some(r) => axum::Json(container_json(&r)).into_response(),
        None => (StatusCode::NOT_FOUND, "no such task").into_response(),
    }
}

async fn task(State(meta): State<Arc<TaskMetadata>>, Path(id): Path<String>) -> Response {
    let Some(r) = lookup(&meta, &id) else {
        return (StatusCode::NOT_FOUND, "no such task").into_response();
    };
    let (family, revision) = family(&r.job_definition);
    let mut t = json!({
        "Cluster": "local",
        "TaskARN": r.task_id,
        "Family": family,
        "Revision": revision,
        "DesiredStatus": "RUNNING",
        "KnownStatus": if r.started_at.is_some() { "RUNNING" } else { "PENDING" },
        // A task's limits are in vCPUs, its containers' in CPU units.
        "Limits": {"CPU": r.milli_vcpus as f64 / 1000.0, "Memory": r.memory_mib},
        "Containers": [container_json(&r)],
        "LaunchType": "EC2",
        "AvailabilityZone": format!("{}-local", r.region),
    });
    if let Some(at) = r.started_at {
        t["PullStoppedAt"] = Value::String(rfc3339(at));
    }
    axum::Json(t).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_come_from_the_definition_arn() {
        assert_eq!(
            family("arn:aws:batch:us-east-1:123456789012:job-definition/etl:7"),
            ("etl".to_string(), "7".to_string())
        );
        assert_eq!(family("plain"), ("plain".to_string(), String::new()));
    }
}
