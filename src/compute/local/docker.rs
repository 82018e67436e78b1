//! Attempts as Docker containers, through the daemon's API (`bollard`).
//!
//! - Images are pulled as `--pull` says ([`PullPolicy`]): by default only when absent, as the
//!   ECS agent's `prefer-cached`. The pull runs inside [`Runtime::start`], which the engine
//!   calls from a task of the attempt's own, so a slow registry holds up that attempt alone. A
//!   failed pull ends the attempt with AWS's `CannotPullContainerError: <Docker's message>`
//!   (retried per the retry strategy, as on AWS). A pull logs in with `repositoryCredentials`
//!   (the secret resolved as [`super::secrets`] resolves secrets) or, for an ECR image on a
//!   server with AWS access, with an ECR login.
//! - The container is `flotilla-<task_id>`, labelled with the job id, attempt, task id, log
//!   stream and this server's instance id (so several servers can share a daemon, and a restarted
//!   server finds only its own containers). `milli_vcpus` becomes `NanoCpus`, `memory_mib`
//!   becomes `Memory`.
//! - Containers run with Docker's init (`--init`) as PID 1, so `SIGTERM` reaches the command even
//!   when it installs no handler; AWS Batch's default (`initProcessEnabled: false`) would leave
//!   such a command running until the `SIGKILL` 30 s later. The init's "exec failed" exit is
//!   turned back into the `CannotStartContainerError` Docker would have given without it.
//! - Output: stdout and stderr are followed from the start and copied into the attempt's log
//!   stream, each line with the timestamp Docker gave it. After the exit the code is read, the
//!   logs drained, and only then the container removed.
//! - Recovery: running containers are adopted (log copying resumes after the newest line
//!   already stored), exited ones report their real exit code, vanished ones report
//!   [`HOST_LOST_REASON`]. Containers of this instance that nobody expects are removed.

use super::agent::{
    AGENT_IP, LABEL_JOB_DEFINITION, LABEL_MEMORY_MIB, LABEL_METADATA_ID, LABEL_MILLI_VCPUS,
    LABEL_REGION, TASK_NETWORK, TaskMetadata,
};
use super::{HOST_LOST_REASON, PullPolicy, exited, send, send_later};
use crate::compute::{
    AttemptSpec, ExpectedAttempt, Runtime, RuntimeError, RuntimeEvent, StopSignal,
};
use crate::logs::{LogStore, LogWriter};
use crate::util::time::now_ms;
use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, ContainerSummaryStateEnum, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, KillContainerOptions, ListContainersOptions,
    LogsOptions, RemoveContainerOptions, WaitContainerOptions,
};
use futures::StreamExt;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::Instrument;

pub const LABEL_JOB_ID: &str = "flotilla.job-id";
pub const LABEL_ATTEMPT: &str = "flotilla.attempt";
pub const LABEL_TASK_ID: &str = "flotilla.task-id";
pub const LABEL_INSTANCE: &str = "flotilla.instance";
pub const LABEL_LOG_GROUP: &str = "flotilla.log-group";
pub const LABEL_LOG_STREAM: &str = "flotilla.log-stream";

/// AWS Batch's reason for a container the kernel's OOM killer ended.
pub const OOM_REASON: &str = "OutOfMemoryError: Container killed due to memory usage";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// After the exit, how long the log stream may take to deliver its last lines.
const LOG_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the daemon may stay unreachable before an attempt is given up as lost.
const MAX_OUTAGE: Duration = Duration::from_secs(600);
/// The longest one pull may take (bollard's default of 2 min is too short for large images).
const PULL_TIMEOUT: Duration = Duration::from_secs(3600);
/// Under `--pull always`, a pull this recent counts for the next container of the same image:
/// the children of an array job start within moments of each other, and a pull each would send
/// the registry thousands of identical requests (and meet its rate limits) for the same result.
const ALWAYS_REUSE: Duration = Duration::from_secs(30);

/// The Docker runtime. Cheap to clone.
#[derive(Clone)]
pub struct DockerRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    docker: Docker,
    logs: Arc<LogStore>,
    events: mpsc::Sender<RuntimeEvent>,
    instance: String,
    pull: PullPolicy,
    /// One lock per image reference, held while it is checked and pulled, so that concurrent
    /// attempts of one image pull it once; under `--pull always` it keeps when it was pulled.
    pulls: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Instant>>>>>,
    /// Attempts whose image is being made ready (no container yet), and whether a stop came
    /// for them meanwhile: that stop is honoured once the pull is over.
    preparing: Mutex<HashMap<(String, u32), bool>>,
    /// (job id, attempt) → container name, while the attempt runs.
    running: Mutex<HashMap<(String, u32), String>>,
    /// Logins for pulls (`repositoryCredentials`, ECR).
    secrets: Arc<super::secrets::SecretSource>,
    /// The task-metadata endpoint, when containers can reach it ([`super::agent`]).
    agent: Option<Arc<TaskMetadata>>,
    /// Its listener, until the caller takes it to serve.
    agent_listener: Mutex<Option<tokio::net::TcpListener>>,
}

/// One attempt's container, as the monitor task knows it.
#[derive(Debug, Clone)]
struct Tracked {
    job_id: String,
    attempt: u32,
    task_id: String,
    container: String,
    /// Its record in the task-metadata endpoint.
    metadata_id: Option<String>,
}

impl DockerRuntime {
    /// Connects to the local daemon (`DOCKER_HOST` or the default socket), agrees on an API
    /// version with it and pings it.
    pub async fn connect(
        data_dir: &Path,
        pull: PullPolicy,
        secrets: Arc<super::secrets::SecretSource>,
        logs: Arc<LogStore>,
        events: mpsc::Sender<RuntimeEvent>,
    ) -> Result<DockerRuntime, RuntimeError> {
        let unavailable = |e: String| RuntimeError::Unavailable(format!("docker: {e}"));
        let docker =
            Docker::connect_with_local_defaults().map_err(|e| unavailable(e.to_string()))?;
        // bollard speaks a newer API than many daemons; without this they refuse every call.
        let docker = tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version())
            .await
            .map_err(|_| unavailable("no answer to /version".into()))?
            .map_err(|e| unavailable(e.to_string()))?;
        tokio::time::timeout(CONNECT_TIMEOUT, docker.ping())
            .await
            .map_err(|_| unavailable("no answer to ping".into()))?
            .map_err(|e| unavailable(e.to_string()))?;
        let instance = instance_id(data_dir)
            .map_err(|e| RuntimeError::Unavailable(format!("instance id: {e}")))?;
        let (agent, agent_listener) = match agent_endpoint(&docker, data_dir).await {
            Ok((meta, listener)) => (Some(meta), Some(listener)),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "containers run on Docker's default bridge without the task-metadata \
                     endpoint, and job roles get unrefreshed credentials"
                );
                (None, None)
            }
        };
        Ok(DockerRuntime {
            inner: Arc::new(Inner {
                docker,
                logs,
                events,
                instance,
                pull,
                pulls: Mutex::new(HashMap::new()),
                preparing: Mutex::new(HashMap::new()),
                running: Mutex::new(HashMap::new()),
                secrets,
                agent,
                agent_listener: Mutex::new(agent_listener),
            }),
        })
    }

    /// The task endpoints' listener on [`AGENT_IP`] and the metadata they serve, once: the
    /// caller serves them (with the job roles' credentials beside them).
    pub fn take_agent(&self) -> Option<(tokio::net::TcpListener, Arc<TaskMetadata>)> {
        let listener = self
            .inner
            .agent_listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()?;
        Some((listener, self.inner.agent.clone()?))
    }

    /// The client, for callers that want to look at containers themselves (tests, diagnostics).
    pub fn docker(&self) -> &Docker {
        &self.inner.docker
    }

    /// This server's instance id, as found in the `flotilla.instance` label.
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }
}

/// The task network and a listener on its gateway.
async fn agent_endpoint(
    docker: &Docker,
    data_dir: &Path,
) -> Result<(Arc<TaskMetadata>, tokio::net::TcpListener), String> {
    super::agent::ensure_network(docker)
        .await
        .map_err(|e| e.to_string())?;
    let listener = super::agent::bind_remembered(AGENT_IP, &data_dir.join("agent-port"))
        .await
        .map_err(|e| format!("cannot listen on {AGENT_IP}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%addr, network = TASK_NETWORK, "task endpoints served to containers");
    Ok((TaskMetadata::new(format!("http://{addr}")), listener))
}

/// A random id kept in `<data-dir>/instance-id`: the same server across restarts, a different
/// one for every other data directory.
fn instance_id(data_dir: &Path) -> std::io::Result<String> {
    std::fs::create_dir_all(data_dir)?;
    let path = data_dir.join("instance-id");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let id = uuid::Uuid::new_v4().to_string();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &id)?;
    std::fs::rename(&tmp, &path)?;
    Ok(id)
}

impl Inner {
    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u32), String>> {
        // A poisoned map is still consistent: every update is a single insert or remove.
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn preparing(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u32), bool>> {
        self.preparing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `image` present as `--pull` says. `Ok(Some(reason))` ends the attempt with it.
    async fn ready_image(
        &self,
        image: &str,
        spec: &AttemptSpec,
    ) -> Result<Option<String>, RuntimeError> {
        if self.pull == PullPolicy::Never {
            return match self.docker.inspect_image(image).await {
                Ok(_) => Ok(None),
                Err(e) if status_of(&e) == Some(404) => Ok(Some(format!(
                    "CannotPullContainerError: image {image} is not present locally and the \
                     server runs with --pull never (load it with docker load, import or build, \
                     or run the server with --pull missing)"
                ))),
                Err(e) => Err(unavailable(e)),
            };
        }
        let lock = self
            .pulls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(image.to_string())
            .or_default()
            .clone();
        let mut pulled = lock.lock().await;
        match self.pull {
            PullPolicy::Always => {
                if pulled.is_some_and(|at| at.elapsed() < ALWAYS_REUSE) {
                    return Ok(None);
                }
            }
            _ => match self.docker.inspect_image(image).await {
                Ok(_) => return Ok(None),
                Err(e) if status_of(&e) == Some(404) => {}
                Err(e) => return Err(unavailable(e)),
            },
        }
        let repository_credentials = super::container::settings(spec)
            .ok()
            .and_then(|s| s.repository_credentials)
            .map(|r| r.credentials_parameter);
        let login = match self
            .secrets
            .registry_login(image, repository_credentials.as_deref())
            .await
        {
            Ok(login) => login,
            // ECS's words for a registry login it could not get.
            Err(why) => {
                return Ok(Some(format!(
                    "CannotPullContainerError: unable to pull secrets or registry auth for \
                     {image}: {why}"
                )));
            }
        };
        let credentials = login.map(|l| bollard::auth::DockerCredentials {
            username: Some(l.username),
            password: Some(l.password),
            serveraddress: image.split('/').next().map(str::to_string),
            ..Default::default()
        });
        let reference = with_tag(image);
        tracing::info!(image = %reference, policy = ?self.pull, "pulling image");
        let began = Instant::now();
        let opts = CreateImageOptions {
            from_image: Some(reference.clone()),
            ..Default::default()
        };
        let docker = self.docker.clone().with_timeout(PULL_TIMEOUT);
        let mut progress = docker.create_image(Some(opts), None, credentials);
        while let Some(item) = progress.next().await {
            if let Err(e) = item {
                let why = match &e {
                    DockerError::DockerStreamError { error } => error.trim().to_string(),
                    other => message_of(other),
                };
                tracing::info!(image = %reference, error = %why, "pull failed");
                // Docker's message names the image only for some failures ("manifest unknown"
                // does not); the reason must say which pull failed.
                return Ok(Some(if why.contains(&reference) {
                    format!("CannotPullContainerError: {why}")
                } else {
                    format!("CannotPullContainerError: {reference}: {why}")
                }));
            }
        }
        tracing::info!(image = %reference, ms = began.elapsed().as_millis() as u64, "image pulled");
        *pulled = Some(Instant::now());
        Ok(None)
    }

    async fn remove(&self, container: &str) {
        let opts = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        match self.docker.remove_container(container, Some(opts)).await {
            Ok(()) => {}
            Err(e) if status_of(&e) == Some(404) => {}
            Err(e) => tracing::warn!(container, error = %e, "cannot remove container"),
        }
    }

    /// Follows one attempt to its end: logs, exit code, removal, `Exited`.
    async fn monitor(
        self: Arc<Self>,
        t: Tracked,
        writer: Arc<LogWriter>,
        resume: Option<(i64, Vec<String>)>,
        announce: bool,
    ) {
        if announce {
            send(
                &self.events,
                RuntimeEvent::Started {
                    job_id: t.job_id.clone(),
                    attempt: t.attempt,
                    task_id: t.task_id.clone(),
                },
            )
            .await;
        }
        let (done_tx, done_rx) = tokio::sync::watch::channel(false);
        let mut copier = tokio::spawn(
            copy_logs(
                self.docker.clone(),
                t.container.clone(),
                writer,
                resume,
                done_rx,
            )
            .in_current_span(),
        );
        let outcome = self.wait_for_exit(&t.container).await;
        let _ = done_tx.send(true);
        let last_stderr = match tokio::time::timeout(LOG_DRAIN_TIMEOUT, &mut copier).await {
            Ok(Ok(line)) => line,
            Ok(Err(_)) => None,
            Err(_) => {
                tracing::warn!(
                    "log stream did not end after the container exited; stopped copying"
                );
                copier.abort();
                None
            }
        };
        let (exit_code, reason) = match outcome {
            Exit::Code { code, oom } => match init_exec_failure(code, &last_stderr) {
                Some(why) => (None, Some(format!("CannotStartContainerError: {why}"))),
                None => (Some(code), oom.then(|| OOM_REASON.to_string())),
            },
            Exit::Gone => (
                None,
                Some(format!(
                    "CannotInspectContainerError: container {} was removed outside Flotilla",
                    t.container
                )),
            ),
            Exit::Unreachable(e) => (
                None,
                Some(format!(
                    "CannotInspectContainerError: Docker daemon unreachable for {} s: {e}",
                    MAX_OUTAGE.as_secs()
                )),
            ),
        };
        self.remove(&t.container).await;
        if let (Some(agent), Some(id)) = (&self.agent, &t.metadata_id) {
            agent.forget(id);
        }
        self.running().remove(&(t.job_id.clone(), t.attempt));
        tracing::info!(?exit_code, reason = reason.as_deref(), "attempt exited");
        send(
            &self.events,
            exited(&t.job_id, t.attempt, exit_code, reason),
        )
        .await;
    }

    /// Blocks until the container is no longer running, riding out daemon restarts.
    async fn wait_for_exit(&self, container: &str) -> Exit {
        let mut outage_since: Option<Instant> = None;
        let mut backoff = Duration::from_millis(250);
        loop {
            let called = Instant::now();
            let opts = WaitContainerOptions {
                condition: "not-running".into(),
            };
            let waited = self
                .docker
                .wait_container(container, Some(opts))
                .next()
                .await;
            let failure = match waited {
                // bollard reports a non-zero exit as an error; either way it has exited.
                Some(Ok(_)) | Some(Err(DockerError::DockerContainerWaitError { .. })) => None,
                Some(Err(e)) if status_of(&e) == Some(404) => return Exit::Gone,
                Some(Err(e)) => Some(e.to_string()),
                None => Some("wait ended without a status".to_string()),
            };
            if failure.is_none() {
                match self.docker.inspect_container(container, None).await {
                    Ok(info) => {
                        let state = info.state.unwrap_or_default();
                        if state.running != Some(true) {
                            let code = state.exit_code.unwrap_or(-1);
                            return Exit::Code {
                                code: i32::try_from(code).unwrap_or(-1),
                                oom: state.oom_killed == Some(true),
                            };
                        }
                        // Restarting, or a spurious wake-up: wait again.
                        continue;
                    }
                    Err(e) if status_of(&e) == Some(404) => return Exit::Gone,
                    Err(e) => {
                        tracing::warn!(error = %e, "inspect after wait failed");
                    }
                }
            }
            // A call that held for a while was a working connection that broke: a new outage.
            if called.elapsed() > Duration::from_secs(5) {
                outage_since = None;
                backoff = Duration::from_millis(250);
            }
            let since = *outage_since.get_or_insert_with(Instant::now);
            let why = failure.unwrap_or_else(|| "inspect failed".into());
            if since.elapsed() > MAX_OUTAGE {
                return Exit::Unreachable(why);
            }
            tracing::warn!(error = %why, "waiting for the container failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }

    /// The container name of a running attempt, from memory or, failing that, from its labels.
    async fn find(&self, job_id: &str, attempt: u32) -> Result<Option<String>, RuntimeError> {
        if let Some(name) = self.running().get(&(job_id.to_string(), attempt)) {
            return Ok(Some(name.clone()));
        }
        let filters = HashMap::from([(
            "label".to_string(),
            vec![
                format!("{LABEL_INSTANCE}={}", self.instance),
                format!("{LABEL_JOB_ID}={job_id}"),
                format!("{LABEL_ATTEMPT}={attempt}"),
            ],
        )]);
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(unavailable)?;
        Ok(list
            .into_iter()
            .find_map(|c| c.names?.into_iter().next())
            .map(|n| n.trim_start_matches('/').to_string()))
    }
}

enum Exit {
    Code { code: i32, oom: bool },
    Gone,
    Unreachable(String),
}

#[async_trait::async_trait]
impl Runtime for DockerRuntime {
    fn name(&self) -> &'static str {
        "docker"
    }

    async fn start(&self, spec: AttemptSpec) -> Result<(), RuntimeError> {
        let span = tracing::info_span!(
            "attempt",
            job_id = %spec.job_id,
            attempt = spec.attempt,
            task_id = %spec.task_id
        );
        let inner = &self.inner;
        let fail = |reason: String| {
            span.in_scope(|| tracing::info!(%reason, "attempt could not start"));
            send_later(
                &inner.events,
                vec![exited(&spec.job_id, spec.attempt, None, Some(reason))],
            );
            Ok(())
        };
        let Some(image) = spec.image.clone().filter(|i| !i.trim().is_empty()) else {
            return fail("CannotStartContainerError: the job definition names no image".into());
        };
        let key = (spec.job_id.clone(), spec.attempt);
        inner.preparing().insert(key.clone(), false);
        let ready = inner
            .ready_image(&image, &spec)
            .instrument(span.clone())
            .await;
        let stopped = inner.preparing().remove(&key).unwrap_or(false);
        match ready {
            Ok(None) if stopped => {
                return fail(format!(
                    "CannotStartContainerError: the attempt was stopped while image {image} was \
                     being pulled"
                ));
            }
            Ok(None) => {}
            Ok(Some(reason)) => return fail(reason),
            Err(e) => return Err(e),
        }
        let (host, user) = match super::container::docker_config(&spec) {
            Ok(c) => c,
            Err(reason) => return fail(reason),
        };
        let writer = inner
            .logs
            .writer(&spec.log_group, &spec.log_stream)
            .map_err(|e| RuntimeError::Unavailable(format!("log stream: {e}")))?;
        let container = container_name(&spec.task_id);
        let mut labels = HashMap::from([
            (LABEL_JOB_ID.to_string(), spec.job_id.clone()),
            (LABEL_ATTEMPT.to_string(), spec.attempt.to_string()),
            (LABEL_TASK_ID.to_string(), spec.task_id.clone()),
            (LABEL_INSTANCE.to_string(), inner.instance.clone()),
            (LABEL_LOG_GROUP.to_string(), spec.log_group.clone()),
            (LABEL_LOG_STREAM.to_string(), spec.log_stream.clone()),
        ]);
        let mut env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut network_mode = None;
        let metadata_id = inner.agent.as_ref().map(|agent| {
            let (id, vars) = agent.register(&spec, &image, &container, &labels);
            env.extend(vars.into_iter().map(|(k, v)| format!("{k}={v}")));
            let region = spec.env.iter().find(|(k, _)| k == "AWS_REGION");
            labels.extend([
                (LABEL_METADATA_ID.to_string(), id.clone()),
                (
                    LABEL_JOB_DEFINITION.to_string(),
                    spec.job_definition.clone(),
                ),
                (LABEL_MILLI_VCPUS.to_string(), spec.milli_vcpus.to_string()),
                (LABEL_MEMORY_MIB.to_string(), spec.memory_mib.to_string()),
                (
                    LABEL_REGION.to_string(),
                    region.map(|(_, v)| v.clone()).unwrap_or_default(),
                ),
            ]);
            network_mode = Some(TASK_NETWORK.to_string());
            id
        });
        let forget = || {
            if let (Some(agent), Some(id)) = (&inner.agent, &metadata_id) {
                agent.forget(id);
            }
        };
        let body = ContainerCreateBody {
            image: Some(image.clone()),
            // Empty: the image's own CMD, as ECS does when the definition gives none.
            cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
            env: Some(env),
            labels: Some(labels),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            user,
            host_config: Some(HostConfig {
                nano_cpus: nonzero(spec.milli_vcpus.saturating_mul(1_000_000)),
                memory: nonzero(spec.memory_mib.saturating_mul(1024 * 1024)),
                network_mode,
                ..host
            }),
            ..Default::default()
        };
        let create = CreateContainerOptions {
            name: Some(container.clone()),
            ..Default::default()
        };
        let created = inner.docker.create_container(Some(create), body).await;
        if created.is_err() {
            forget();
        }
        let docker_id = match created {
            Ok(c) => Some(c.id),
            Err(e) => match status_of(&e) {
                Some(404) => {
                    return fail(format!(
                        "CannotPullContainerError: image {image} is not present locally"
                    ));
                }
                Some(409) => {
                    return Err(RuntimeError::Rejected(format!(
                        "container {container} already exists: was this attempt started twice?"
                    )));
                }
                Some(_) => return fail(format!("CannotCreateContainerError: {}", message_of(&e))),
                None => return Err(unavailable(e)),
            },
        };
        // Running from the container's first instruction on, as its metadata says.
        if let (Some(agent), Some(id)) = (&inner.agent, &metadata_id) {
            agent.started(id, docker_id);
        }
        if let Err(e) = inner.docker.start_container(&container, None).await {
            forget();
            inner.remove(&container).await;
            return match status_of(&e) {
                Some(_) => fail(format!("CannotStartContainerError: {}", message_of(&e))),
                None => Err(unavailable(e)),
            };
        }
        span.in_scope(|| tracing::info!(%container, "container started"));
        inner
            .running()
            .insert((spec.job_id.clone(), spec.attempt), container.clone());
        let tracked = Tracked {
            job_id: spec.job_id.clone(),
            attempt: spec.attempt,
            task_id: spec.task_id.clone(),
            container,
            metadata_id,
        };
        tokio::spawn(
            self.inner
                .clone()
                .monitor(tracked, Arc::new(writer), None, true)
                .instrument(span.clone()),
        );
        Ok(())
    }

    async fn stop(
        &self,
        job_id: &str,
        attempt: u32,
        signal: StopSignal,
    ) -> Result<(), RuntimeError> {
        if let Some(stop) = self
            .inner
            .preparing()
            .get_mut(&(job_id.to_string(), attempt))
        {
            // No container yet: the start ends the attempt once its pull is over.
            *stop = true;
            return Ok(());
        }
        let Some(container) = self.inner.find(job_id, attempt).await? else {
            return Ok(());
        };
        let signal = match signal {
            StopSignal::Term => "SIGTERM",
            StopSignal::Kill => "SIGKILL",
        };
        tracing::info!(job_id, attempt, %container, signal, "signalling container");
        let opts = KillContainerOptions {
            signal: signal.into(),
        };
        match self
            .inner
            .docker
            .kill_container(&container, Some(opts))
            .await
        {
            Ok(()) => Ok(()),
            // Gone already, or not running any more: the monitor reports the exit.
            Err(e) if matches!(status_of(&e), Some(404 | 409)) => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn recover(&self, expected: Vec<ExpectedAttempt>) -> Result<(), RuntimeError> {
        let inner = &self.inner;
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{LABEL_INSTANCE}={}", inner.instance)],
        )]);
        let list = inner
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(unavailable)?;
        let mut by_task: HashMap<String, bollard::models::ContainerSummary> = HashMap::new();
        for c in list {
            if let Some(task) = c
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_TASK_ID))
                .cloned()
            {
                by_task.insert(task, c);
            }
        }
        let mut events = Vec::new();
        let mut expected_tasks = HashSet::new();
        let ours: HashSet<String> = inner.running().values().cloned().collect();
        for e in &expected {
            expected_tasks.insert(e.task_id.clone());
            if inner.running().contains_key(&(e.job_id.clone(), e.attempt)) {
                continue;
            }
            let span = tracing::info_span!(
                "attempt",
                job_id = %e.job_id,
                attempt = e.attempt,
                task_id = %e.task_id
            );
            let Some(c) = by_task.get(&e.task_id) else {
                span.in_scope(|| tracing::warn!("container vanished: reported lost"));
                events.push(exited(
                    &e.job_id,
                    e.attempt,
                    None,
                    Some(HOST_LOST_REASON.into()),
                ));
                continue;
            };
            let container = c
                .names
                .as_ref()
                .and_then(|n| n.first())
                .map(|n| n.trim_start_matches('/').to_string())
                .unwrap_or_else(|| container_name(&e.task_id));
            let state = c.state.unwrap_or(ContainerSummaryStateEnum::EMPTY);
            if state == ContainerSummaryStateEnum::CREATED {
                // Created but never started when the server died: it never ran.
                inner.remove(&container).await;
                span.in_scope(|| tracing::warn!("container was never started: reported lost"));
                events.push(exited(
                    &e.job_id,
                    e.attempt,
                    None,
                    Some(HOST_LOST_REASON.into()),
                ));
                continue;
            }
            let labels = c.labels.clone().unwrap_or_default();
            let (Some(group), Some(stream)) =
                (labels.get(LABEL_LOG_GROUP), labels.get(LABEL_LOG_STREAM))
            else {
                inner.remove(&container).await;
                events.push(exited(
                    &e.job_id,
                    e.attempt,
                    None,
                    Some(HOST_LOST_REASON.into()),
                ));
                continue;
            };
            let writer = inner
                .logs
                .writer(group, stream)
                .map_err(|e| RuntimeError::Unavailable(format!("log stream: {e}")))?;
            let resume = inner
                .logs
                .tail(group, stream)
                .map_err(|e| RuntimeError::Unavailable(format!("log stream: {e}")))?;
            span.in_scope(|| tracing::info!(%container, ?state, "adopting container"));
            let metadata_id = labels.get(LABEL_METADATA_ID).cloned();
            if let (Some(agent), Some(id)) = (&inner.agent, &metadata_id) {
                agent.adopt(
                    id,
                    &e.task_id,
                    c.image.as_deref().unwrap_or_default(),
                    &container,
                    c.id.clone(),
                    &labels,
                );
            }
            inner
                .running()
                .insert((e.job_id.clone(), e.attempt), container.clone());
            let tracked = Tracked {
                job_id: e.job_id.clone(),
                attempt: e.attempt,
                task_id: e.task_id.clone(),
                container,
                metadata_id,
            };
            // Running ones are followed to their end; exited ones finish at once with their
            // real exit code and any output not stored yet.
            tokio::spawn(
                inner
                    .clone()
                    .monitor(tracked, Arc::new(writer), resume, false)
                    .instrument(span),
            );
        }
        // This instance's containers that nobody expects: the engine gave up on them, so they
        // must not keep running (or a retry would run alongside).
        for (task, c) in &by_task {
            if expected_tasks.contains(task) {
                continue;
            }
            let Some(name) = c
                .names
                .as_ref()
                .and_then(|n| n.first())
                .map(|n| n.trim_start_matches('/').to_string())
            else {
                continue;
            };
            if ours.contains(&name) {
                continue;
            }
            tracing::warn!(container = %name, task_id = %task, "removing unexpected container");
            inner.remove(&name).await;
        }
        send_later(&inner.events, events);
        Ok(())
    }
}

/// Copies the container's output into the log stream until the container has stopped and its
/// output is drained. Reconnects (after daemon restarts, client timeouts) resume after the
/// newest stored line: Docker's `since` has one-second granularity, so lines from that second
/// are skipped when already stored. Returns the last line seen on stderr.
async fn copy_logs(
    docker: Docker,
    container: String,
    writer: Arc<LogWriter>,
    resume: Option<(i64, Vec<String>)>,
    mut exited: tokio::sync::watch::Receiver<bool>,
) -> Option<String> {
    let mut copy = LogCopy {
        docker: &docker,
        container: &container,
        writer: &writer,
        seen: Seen::new(resume),
        last_stderr: None,
    };
    let mut failures = 0u32;
    loop {
        match copy.pass(true).await {
            // The follow ends when the container stops.
            Ok(()) => break,
            Err(e) if status_of(&e) == Some(404) => return copy.last_stderr,
            Err(e) => {
                failures += 1;
                // Once the container is known to be gone, a few quick retries are all it needs.
                if *exited.borrow() && failures > 3 {
                    tracing::warn!(error = %e, "giving up on the container's remaining logs");
                    return copy.last_stderr;
                }
                tracing::debug!(error = %e, "log stream broke; resuming");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    // The follow can end a moment before the daemon has written the last (partial) line to the
    // log. Once the container is known to have exited, the log is complete: one more read
    // without follow picks up whatever the follow missed (already-stored lines are skipped).
    // (The watch guard is dropped at once: it must not live across the read below.)
    let settled = tokio::time::timeout(LOG_DRAIN_TIMEOUT / 2, exited.wait_for(|done| *done))
        .await
        .is_ok_and(|r| r.is_ok());
    if settled
        && let Err(e) = copy.pass(false).await
        && status_of(&e) != Some(404)
    {
        tracing::warn!(error = %e, "final read of the container's logs failed");
    }
    copy.last_stderr
}

/// One attempt's log copying state.
struct LogCopy<'a> {
    docker: &'a Docker,
    container: &'a str,
    writer: &'a LogWriter,
    seen: Seen,
    last_stderr: Option<String>,
}

impl LogCopy<'_> {
    /// Reads the container's log from just before the newest stored line: to its current end,
    /// or with `follow` until the container stops.
    async fn pass(&mut self, follow: bool) -> Result<(), DockerError> {
        let opts = LogsOptions {
            follow,
            stdout: true,
            stderr: true,
            timestamps: true,
            since: self.seen.reconnect(),
            ..Default::default()
        };
        let mut stream = self.docker.logs(self.container, Some(opts));
        while let Some(item) = stream.next().await {
            let out = item?;
            let (ts, message) = split_timestamp(out.as_ref());
            if !self.seen.admit(ts, &message) {
                continue;
            }
            if let Err(e) = self.writer.append_at(ts, &message) {
                tracing::warn!(error = %e, "cannot store a log line");
            }
            if matches!(out, bollard::container::LogOutput::StdErr { .. }) {
                self.last_stderr = Some(message);
            }
        }
        Ok(())
    }
}

/// What has been stored already: the newest timestamp and the messages stored at exactly that
/// millisecond (a multiset, as lines may repeat), so a reconnect "since second S" stores nothing
/// twice.
struct Seen {
    last: i64,
    at_last: Vec<String>,
    /// Lines at `last` that a reconnect may replay and that have not come back yet.
    replay: Vec<String>,
}

impl Seen {
    fn new(resume: Option<(i64, Vec<String>)>) -> Self {
        match resume {
            Some((last, at_last)) => Seen {
                last,
                replay: at_last.clone(),
                at_last,
            },
            None => Seen {
                last: i64::MIN,
                at_last: Vec::new(),
                replay: Vec::new(),
            },
        }
    }

    /// Called before each (re)connection, which replays the whole second of `last`.
    fn reconnect(&mut self) -> i32 {
        self.replay = self.at_last.clone();
        if self.last <= 0 {
            0
        } else {
            i32::try_from(self.last / 1000).unwrap_or(i32::MAX)
        }
    }

    /// Whether a line is new; records it if so.
    fn admit(&mut self, ts: i64, message: &str) -> bool {
        if ts < self.last {
            return false;
        }
        if ts == self.last {
            if let Some(i) = self.replay.iter().position(|m| m == message) {
                self.replay.swap_remove(i);
                return false;
            }
            self.at_last.push(message.to_string());
            return true;
        }
        self.last = ts;
        self.at_last = vec![message.to_string()];
        self.replay.clear();
        true
    }
}

/// The container's init (tini, from `--init`) could not exec the command: Docker itself would
/// have refused to start such a container, so it is reported the same way, as a start failure
/// rather than as the job's exit code. tini prints `[FATAL tini (N)] exec CMD failed: WHY` and
/// exits 126 or 127.
fn init_exec_failure(code: i32, last_stderr: &Option<String>) -> Option<String> {
    if !matches!(code, 126 | 127) {
        return None;
    }
    let line = last_stderr.as_deref()?;
    let rest = line.strip_prefix("[FATAL tini (")?;
    let (_, what) = rest.split_once(")] ")?;
    (what.starts_with("exec ") && what.contains(" failed: ")).then(|| what.to_string())
}

/// Splits Docker's `<RFC 3339 nano UTC timestamp> <message>` frame. A frame without a
/// readable timestamp is kept, stamped now.
fn split_timestamp(frame: &[u8]) -> (i64, String) {
    let text = String::from_utf8_lossy(frame);
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    if let Some((ts, msg)) = text.split_once(' ')
        && let Some(ms) = parse_rfc3339_ms(ts)
    {
        return (ms, msg.to_string());
    }
    (now_ms(), text.to_string())
}

/// `2024-05-01T12:34:56.123456789Z` → milliseconds since the epoch. Docker always writes UTC.
fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-');
    let year: i32 = d.next()?.parse().ok()?;
    let month: u8 = d.next()?.parse().ok()?;
    let day: u8 = d.next()?.parse().ok()?;
    let (hms, frac) = match time.split_once('.') {
        Some((h, f)) => (h, f),
        None => (time, ""),
    };
    let mut t = hms.splitn(3, ':');
    let hour: u8 = t.next()?.parse().ok()?;
    let minute: u8 = t.next()?.parse().ok()?;
    let second: u8 = t.next()?.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let millis: i64 = format!("{frac:0<3}")[..3].parse().ok()?;
    let date =
        time::Date::from_calendar_date(year, time::Month::try_from(month).ok()?, day).ok()?;
    let tod = time::Time::from_hms(hour, minute, second).ok()?;
    let secs = time::PrimitiveDateTime::new(date, tod)
        .assume_utc()
        .unix_timestamp();
    Some(secs * 1000 + millis)
}

/// `image` with `:latest` when it names neither tag nor digest, as `docker pull` does (the API
/// would otherwise pull every tag of the repository).
fn with_tag(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') || last.contains(':') {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

/// `flotilla-<task_id>`, with anything Docker does not allow in a name replaced.
pub fn container_name(task_id: &str) -> String {
    let safe: String = task_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("flotilla-{safe}")
}

fn nonzero(v: u64) -> Option<i64> {
    (v > 0).then(|| i64::try_from(v).unwrap_or(i64::MAX))
}

/// The daemon's HTTP status for an error it answered; `None` when it was not reached.
fn status_of(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn message_of(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.trim().to_string(),
        other => other.to_string(),
    }
}

fn unavailable(e: DockerError) -> RuntimeError {
    RuntimeError::Unavailable(format!("docker: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_timestamps() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:01.5Z"), Some(1_500));
        assert_eq!(
            parse_rfc3339_ms("2024-05-01T12:34:56.123456789Z"),
            Some(1_714_566_896_123)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-05-01T12:34:56Z"),
            Some(1_714_566_896_000)
        );
        assert_eq!(parse_rfc3339_ms("2024-05-01 12:34:56Z"), None);
        assert_eq!(parse_rfc3339_ms("garbage"), None);
        let (ts, msg) = split_timestamp(b"2024-05-01T12:34:56.001Z hello world\n");
        assert_eq!((ts, msg.as_str()), (1_714_566_896_001, "hello world"));
    }

    #[test]
    fn resume_skips_what_is_stored() {
        let mut seen = Seen::new(Some((5_500, vec!["a".into(), "a".into()])));
        assert_eq!(seen.reconnect(), 5);
        assert!(!seen.admit(5_100, "old"));
        assert!(!seen.admit(5_500, "a"));
        assert!(!seen.admit(5_500, "a"));
        // A third identical line in the same millisecond is new.
        assert!(seen.admit(5_500, "a"));
        assert!(seen.admit(5_500, "b"));
        // A reconnect replays the whole second: all four stored lines are skipped.
        assert_eq!(seen.reconnect(), 5);
        for m in ["a", "a", "b", "a"] {
            assert!(!seen.admit(5_500, m), "{m}");
        }
        assert!(seen.admit(5_600, "c"));
        assert!(seen.admit(5_600, "c"));
        assert_eq!(seen.reconnect(), 5);
        assert!(!seen.admit(5_600, "c"));
        assert!(!seen.admit(5_600, "c"));
        assert!(seen.admit(5_601, "d"));
        let mut fresh = Seen::new(None);
        assert_eq!(fresh.reconnect(), 0);
        assert!(fresh.admit(1, "x"));
    }

    #[test]
    fn init_exec_failures_are_start_failures() {
        let line = Some("[FATAL tini (8)] exec nope failed: No such file or directory".to_string());
        assert_eq!(
            init_exec_failure(127, &line).as_deref(),
            Some("exec nope failed: No such file or directory")
        );
        assert_eq!(init_exec_failure(1, &line), None);
        assert_eq!(
            init_exec_failure(127, &Some("sh: nope: not found".into())),
            None
        );
        assert_eq!(init_exec_failure(127, &None), None);
    }

    #[test]
    fn pulls_name_a_tag() {
        assert_eq!(with_tag("busybox"), "busybox:latest");
        assert_eq!(with_tag("busybox:1.36"), "busybox:1.36");
        assert_eq!(with_tag("127.0.0.1:5000/a/b"), "127.0.0.1:5000/a/b:latest");
        assert_eq!(with_tag("127.0.0.1:5000/a/b:t"), "127.0.0.1:5000/a/b:t");
        assert_eq!(with_tag("a/b@sha256:00"), "a/b@sha256:00");
    }

    #[test]
    fn names_are_docker_safe() {
        assert_eq!(container_name("abc-1"), "flotilla-abc-1");
        assert_eq!(container_name("a/b:c"), "flotilla-a_b_c");
    }
}
