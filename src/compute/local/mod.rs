//! The LOCAL compute environment: attempts run on the server's own host, as Docker containers
//! ([`docker::DockerRuntime`]) or as plain process groups ([`process::ProcessRuntime`]).
//!
//! Both write each attempt's stdout and stderr, line by line as it arrives, into the
//! [`LogStore`] stream named by the [`AttemptSpec`], and report [`RuntimeEvent`]s on the
//! engine's channel. Neither ever waits on that channel inside [`Runtime::start`],
//! [`Runtime::stop`] or [`Runtime::recover`]: events are sent from the attempt's own task, so the
//! engine may call the runtime from the same loop that drains the channel without deadlocking.
//!
//! [`AttemptSpec`]: crate::compute::AttemptSpec
//! [`Runtime::start`]: crate::compute::Runtime::start
//! [`Runtime::stop`]: crate::compute::Runtime::stop
//! [`Runtime::recover`]: crate::compute::Runtime::recover

pub mod agent;
pub mod container;
pub mod docker;
pub mod process;
pub mod roles;
pub mod secrets;

use crate::compute::{Runtime, RuntimeError, RuntimeEvent};
use crate::logs::LogStore;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// `attempts[].container.reason` for an attempt whose host process or container vanished while
/// the server was down (so its exit code is unknowable). The counterpart of AWS Batch's
/// "Host EC2 (instance i-…) terminated."; the engine retries it per the retry strategy.
pub const HOST_LOST_REASON: &str = "Host EC2 (instance local) terminated: Flotilla server restarted while the attempt ran; \
     the host process was lost";

/// How long `auto` waits for Docker to answer before settling for processes.
const DOCKER_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// `--local-runtime`: where the LOCAL compute environment runs attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LocalRuntimeMode {
    /// Docker when its daemon answers, otherwise processes.
    #[default]
    Auto,
    /// Docker containers; fail at start-up when the daemon is unreachable.
    Docker,
    /// Plain host processes (the job definition's image is ignored).
    Process,
}

/// `--pull`: when the Docker runtime pulls a job's image (the process runtime uses none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PullPolicy {
    /// Pull only when the image is not present (ECS agent's `prefer-cached`).
    #[default]
    Missing,
    /// Pull before every container is created (ECS agent's `always`).
    Always,
    /// Never pull: an absent image ends the attempt.
    Never,
}

/// The LOCAL runtime, and what its containers reach at ECS's task-endpoint address (to be
/// served by the caller on the listener given).
pub struct Local {
    pub runtime: Arc<dyn Runtime>,
    pub task_endpoints: Option<(tokio::net::TcpListener, axum::Router)>,
}

/// The server's AWS access, as the LOCAL runtime uses it.
pub struct AwsAccess<'a> {
    /// Reads secrets and registry logins ([`secrets`]).
    pub sdk: &'a aws_config::SdkConfig,
    /// Assumes job roles ([`roles`]).
    pub roles: Arc<roles::RoleBroker>,
}

/// Builds the LOCAL runtime. `data_dir` holds its state (`run/`, `work/`, `instance-id`) and the
/// secrets file its jobs' secrets are resolved from without AWS access ([`secrets`]); `aws` is
/// the server's AWS access (`None` on a server without it).
pub async fn connect(
    mode: LocalRuntimeMode,
    pull: PullPolicy,
    data_dir: &Path,
    process: process::ProcessOptions,
    aws: Option<AwsAccess<'_>>,
    logs: Arc<LogStore>,
    events: mpsc::Sender<RuntimeEvent>,
) -> Result<Local, RuntimeError> {
    let secrets = Arc::new(secrets::SecretSource::new(
        data_dir,
        aws.as_ref().map(|a| a.sdk),
    ));
    let roles = aws.map(|a| a.roles);
    let (rt, agent) = connect_runtime(
        mode,
        pull,
        data_dir,
        process,
        secrets.clone(),
        logs.clone(),
        events.clone(),
    )
    .await?;
    let task_endpoints = agent.map(|(listener, meta)| {
        let mut router = meta.router();
        if let Some(broker) = &roles {
            let url = listener
                .local_addr()
                .map(|a| format!("http://{a}/v1/credentials/"))
                .unwrap_or_default();
            broker.serve_containers_at(url);
            router = router.merge(broker.router());
        }
        (listener, router)
    });
    let rt = Arc::new(roles::WithRoles::new(
        rt,
        roles,
        logs.clone(),
        events.clone(),
    ));
    Ok(Local {
        runtime: Arc::new(secrets::WithSecrets::new(rt, secrets, logs, events)),
        task_endpoints,
    })
}

type Agent = Option<(tokio::net::TcpListener, Arc<agent::TaskMetadata>)>;

fn with_agent(rt: docker::DockerRuntime) -> (Arc<dyn Runtime>, Agent) {
    let agent = rt.take_agent();
    (Arc::new(rt), agent)
}

async fn connect_runtime(
    mode: LocalRuntimeMode,
    pull: PullPolicy,
    data_dir: &Path,
    process: process::ProcessOptions,
    secrets: Arc<secrets::SecretSource>,
    logs: Arc<LogStore>,
    events: mpsc::Sender<RuntimeEvent>,
) -> Result<(Arc<dyn Runtime>, Agent), RuntimeError> {
    match mode {
        LocalRuntimeMode::Process => {
            tracing::info!("local runtime: process (as configured)");
            Ok((
                Arc::new(process::ProcessRuntime::new(
                    data_dir, process, logs, events,
                )?),
                None,
            ))
        }
        LocalRuntimeMode::Docker => {
            let rt = docker::DockerRuntime::connect(data_dir, pull, secrets, logs, events).await?;
            tracing::info!("local runtime: docker (as configured)");
            Ok(with_agent(rt))
        }
        LocalRuntimeMode::Auto => {
            let probe = tokio::time::timeout(
                DOCKER_PROBE_TIMEOUT,
                docker::DockerRuntime::connect(
                    data_dir,
                    pull,
                    secrets,
                    logs.clone(),
                    events.clone(),
                ),
            )
            .await;
            match probe {
                Ok(Ok(rt)) => {
                    tracing::info!("local runtime: docker (daemon answered)");
                    Ok(with_agent(rt))
                }
                Ok(Err(e)) => {
                    tracing::info!(error = %e, "local runtime: process (docker not usable)");
                    Ok((
                        Arc::new(process::ProcessRuntime::new(
                            data_dir, process, logs, events,
                        )?),
                        None,
                    ))
                }
                Err(_) => {
                    tracing::info!(
                        timeout_s = DOCKER_PROBE_TIMEOUT.as_secs(),
                        "local runtime: process (docker did not answer in time)"
                    );
                    Ok((
                        Arc::new(process::ProcessRuntime::new(
                            data_dir, process, logs, events,
                        )?),
                        None,
                    ))
                }
            }
        }
    }
}

/// Ends an attempt that never started with `reason`: its log stream exists (empty, as ECS
/// creates it), and the `Exited` follows from a task of its own.
fn never_started(
    logs: &LogStore,
    events: &mpsc::Sender<RuntimeEvent>,
    spec: &crate::compute::AttemptSpec,
    reason: String,
) {
    if let Err(e) = logs.writer(&spec.log_group, &spec.log_stream) {
        tracing::warn!(error = %e, "cannot create the attempt's log stream");
    }
    tracing::info!(job_id = %spec.job_id, attempt = spec.attempt, %reason, "attempt could not start");
    send_later(
        events,
        vec![exited(&spec.job_id, spec.attempt, None, Some(reason))],
    );
}

/// Sends events in order from a task of their own, so the caller never waits on the channel.
fn send_later(events: &mpsc::Sender<RuntimeEvent>, batch: Vec<RuntimeEvent>) {
    if batch.is_empty() {
        return;
    }
    let events = events.clone();
    tokio::spawn(async move {
        for ev in batch {
            send(&events, ev).await;
        }
    });
}

/// A closed channel means the engine is shutting down; the event has nobody to go to.
async fn send(events: &mpsc::Sender<RuntimeEvent>, ev: RuntimeEvent) {
    if events.send(ev).await.is_err() {
        tracing::debug!("runtime event dropped: engine channel closed");
    }
}

fn exited(
    job_id: &str,
    attempt: u32,
    exit_code: Option<i32>,
    reason: Option<String>,
) -> RuntimeEvent {
    RuntimeEvent::Exited {
        job_id: job_id.to_string(),
        attempt,
        exit_code,
        reason,
    }
}
