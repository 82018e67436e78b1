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

/// Builds the LOCAL runtime. `data_dir` holds its state (`run/`, `work/`, `instance-id`) and the
/// secrets file its jobs' secrets are resolved from ([`secrets`]); `roles` assumes their job roles
/// ([`roles`]; `None` on a server without AWS access).
pub async fn connect(
    mode: LocalRuntimeMode,
    pull: PullPolicy,
    data_dir: &Path,
    process: process::ProcessOptions,
    roles: Option<Arc<roles::RoleBroker>>,
    logs: Arc<LogStore>,
    events: mpsc::Sender<RuntimeEvent>,
) -> Result<Arc<dyn Runtime>, RuntimeError> {
    let rt = connect_runtime(mode, pull, data_dir, process, logs.clone(), events.clone()).await?;
    let rt = Arc::new(roles::WithRoles::new(
        rt,
        roles,
        logs.clone(),
        events.clone(),
    ));
    Ok(Arc::new(secrets::WithSecrets::new(
        rt, data_dir, logs, events,
    )))
}

async fn connect_runtime(
    mode: LocalRuntimeMode,
    pull: PullPolicy,
    data_dir: &Path,
    process: process::ProcessOptions,
    logs: Arc<LogStore>,
    events: mpsc::Sender<RuntimeEvent>,
) -> Result<Arc<dyn Runtime>, RuntimeError> {
    match mode {
        LocalRuntimeMode::Process => {
            tracing::info!("local runtime: process (as configured)");
            Ok(Arc::new(process::ProcessRuntime::new(
                data_dir, process, logs, events,
            )?))
        }
        LocalRuntimeMode::Docker => {
            let rt = docker::DockerRuntime::connect(data_dir, pull, logs, events).await?;
            tracing::info!("local runtime: docker (as configured)");
            Ok(Arc::new(rt))
        }
        LocalRuntimeMode::Auto => {
            let probe = tokio::time::timeout(
                DOCKER_PROBE_TIMEOUT,
                docker::DockerRuntime::connect(data_dir, pull, logs.clone(), events.clone()),
            )
            .await;
            match probe {
                Ok(Ok(rt)) => {
                    tracing::info!("local runtime: docker (daemon answered)");
                    Ok(Arc::new(rt))
                }
                Ok(Err(e)) => {
                    tracing::info!(error = %e, "local runtime: process (docker not usable)");
                    Ok(Arc::new(process::ProcessRuntime::new(
                        data_dir, process, logs, events,
                    )?))
                }
                Err(_) => {
                    tracing::info!(
                        timeout_s = DOCKER_PROBE_TIMEOUT.as_secs(),
                        "local runtime: process (docker did not answer in time)"
                    );
                    Ok(Arc::new(process::ProcessRuntime::new(
                        data_dir, process, logs, events,
                    )?))
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
