//! `jobRoleArn` on a LOCAL compute environment: Flotilla assumes the role with STS and hands the
//! temporary credentials to that job alone, as ECS does on AWS.
//!
//! - Process runtime: through the container-credentials protocol every AWS SDK and the AWS CLI
//!   already read. The job gets `AWS_CONTAINER_CREDENTIALS_FULL_URI` (a URL on a loopback
//!   listener of the server's own, not the API's) and `AWS_CONTAINER_AUTHORIZATION_TOKEN` (random,
//!   one per attempt); a request for the URL with that token gets the role's credentials, assumed
//!   again when they have less than [`REFRESH_BEFORE`] left, so a long job never holds expired
//!   ones. The grant ends when the engine has stored the attempt's end.
//! - Docker: the same protocol, served at ECS's own address `169.254.170.2` on the task network
//!   ([`super::agent`]), since a container's loopback is its own and the SDKs fetch container
//!   credentials over plain HTTP only from loopback or ECS's link-local addresses. Only when that
//!   network cannot be had does a container get the role's credentials as
//!   `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`, assumed for
//!   [`DOCKER_SESSION`] and not refreshed (the server warns at start-up).
//!
//! Grants are kept in `<data-dir>/role-grants.json` (the data directory is `0700`), so a job
//! that runs through a restart of the server keeps fetching its credentials from it.
//!
//! Roles are assumed only by a server that drives AWS (`--aws` or `--aws-endpoint-url`), with the
//! driver's region and endpoint: a server without AWS access ends an attempt with a role with a
//! `MISCONFIGURATION` reason rather than run it without the access it declared.

use super::never_started;
use crate::compute::{
    AttemptSpec, ExpectedAttempt, Runtime, RuntimeError, RuntimeEvent, StopSignal,
};
use crate::logs::LogStore;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

/// The grants' file in the data directory.
pub const GRANTS_FILE: &str = "role-grants.json";

/// Credentials with less than this left are assumed again before they are served.
pub const REFRESH_BEFORE: Duration = Duration::from_secs(15 * 60);
/// How long a Docker container's (unrefreshed) role credentials last.
pub const DOCKER_SESSION: Duration = Duration::from_secs(3600);
/// How long the credentials served to a process last (STS's minimum is 15 minutes).
const PROCESS_SESSION: Duration = Duration::from_secs(3600);

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Creds {
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
    expiration: SystemTime,
}

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Grant {
    job_id: String,
    attempt: u32,
    role_arn: String,
    session: String,
    token: String,
    creds: Creds,
}

/// Assumes job roles and serves their credentials to the attempts they were granted to.
pub struct RoleBroker {
    sts: aws_sdk_sts::Client,
    /// `http://127.0.0.1:PORT/v1/credentials/`: the credentials listener.
    base_url: String,
    /// The same for containers, at `169.254.170.2`, when they can reach it.
    containers_url: std::sync::OnceLock<String>,
    /// task id → what that attempt may fetch.
    grants: Mutex<HashMap<String, Grant>>,
    /// Where the grants are kept across restarts.
    state: std::path::PathBuf,
}

impl RoleBroker {
    /// A broker calling STS with `sdk`'s region, endpoint and credentials, whose grants point at
    /// `addr`, where the caller serves [`RoleBroker::router`] (loopback).
    /// Grants are kept in `data_dir`.
    pub fn new(
        sdk: &aws_config::SdkConfig,
        addr: std::net::SocketAddr,
        data_dir: &std::path::Path,
    ) -> Arc<RoleBroker> {
        let state = data_dir.join(GRANTS_FILE);
        let grants = match std::fs::read(&state) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %state.display(), error = %e, "unreadable role grants dropped");
                HashMap::new()
            }),
            Err(_) => HashMap::new(),
        };
        Arc::new(RoleBroker {
            sts: aws_sdk_sts::Client::new(sdk),
            base_url: format!("http://{addr}/v1/credentials/"),
            containers_url: std::sync::OnceLock::new(),
            grants: Mutex::new(grants),
            state,
        })
    }

    /// Containers fetch their credentials from `url` (`http://169.254.170.2:PORT/v1/credentials/`).
    pub fn serve_containers_at(&self, url: String) {
        let _ = self.containers_url.set(url);
    }

    /// Writes the grants out; called with the lock held, so writes are in order.
    fn persist(&self, grants: &HashMap<String, Grant>) {
        let write = || -> std::io::Result<()> {
            let tmp = self.state.with_extension("tmp");
            std::fs::write(&tmp, serde_json::to_vec(grants)?)?;
            std::fs::rename(&tmp, &self.state)
        };
        if let Err(e) = write() {
            tracing::warn!(file = %self.state.display(), error = %e, "cannot keep role grants");
        }
    }

    /// After a restart: the grants of attempts that are no longer running go.
    pub fn keep_only(&self, live_tasks: &std::collections::HashSet<String>) {
        let mut grants = self.grants();
        let before = grants.len();
        grants.retain(|task, _| live_tasks.contains(task));
        if grants.len() != before {
            self.persist(&grants);
        }
    }

    /// The credentials endpoint, to be served on the address given to [`RoleBroker::new`].
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/v1/credentials/{task}", get(serve_credentials))
            .with_state(self.clone())
    }

    fn grants(&self) -> std::sync::MutexGuard<'_, HashMap<String, Grant>> {
        self.grants.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn assume(&self, role_arn: &str, session: &str, for_: Duration) -> Result<Creds, String> {
        let out = self
            .sts
            .assume_role()
            .role_arn(role_arn)
            .role_session_name(session)
            .duration_seconds(i32::try_from(for_.as_secs()).unwrap_or(3600))
            .send()
            .await
            .map_err(|e| {
                use aws_sdk_sts::error::ProvideErrorMetadata;
                let e = e.into_service_error();
                format!(
                    "{}: {}",
                    e.code().unwrap_or("AssumeRoleFailed"),
                    e.message().unwrap_or("no message")
                )
            })?;
        let c = out
            .credentials
            .ok_or_else(|| "AssumeRole returned no credentials".to_string())?;
        let expiration = SystemTime::try_from(c.expiration)
            .unwrap_or_else(|_| SystemTime::now() + Duration::from_secs(900));
        Ok(Creds {
            access_key_id: c.access_key_id,
            secret_access_key: c.secret_access_key,
            session_token: c.session_token,
            expiration,
        })
    }

    /// The environment that gives `spec` its role, or the attempt's reason.
    async fn grant(
        &self,
        spec: &AttemptSpec,
        runtime: &str,
    ) -> Result<Vec<(String, String)>, String> {
        let Some(role_arn) = spec.container.job_role_arn.clone() else {
            return Ok(Vec::new());
        };
        let session = session_name(&spec.job_id);
        let base_url = match runtime {
            "docker" => self.containers_url.get(),
            _ => Some(&self.base_url),
        };
        let for_ = if base_url.is_none() {
            DOCKER_SESSION
        } else {
            PROCESS_SESSION
        };
        let creds = self.assume(&role_arn, &session, for_).await.map_err(|e| {
            format!("ResourceInitializationError: unable to assume the job role {role_arn}: {e}")
        })?;
        let Some(base_url) = base_url else {
            return Ok(vec![
                ("AWS_ACCESS_KEY_ID".into(), creds.access_key_id),
                ("AWS_SECRET_ACCESS_KEY".into(), creds.secret_access_key),
                ("AWS_SESSION_TOKEN".into(), creds.session_token),
            ]);
        };
        let token = random_token();
        let mut grants = self.grants();
        grants.insert(
            spec.task_id.clone(),
            Grant {
                job_id: spec.job_id.clone(),
                attempt: spec.attempt,
                role_arn,
                session,
                token: token.clone(),
                creds,
            },
        );
        self.persist(&grants);
        drop(grants);
        Ok(vec![
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI".into(),
                format!("{base_url}{}", spec.task_id),
            ),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN".into(), token),
        ])
    }

    fn revoke(&self, task_id: &str) {
        let mut grants = self.grants();
        if grants.remove(task_id).is_some() {
            self.persist(&grants);
        }
    }
}

/// STS session names allow `[\w+=,.@-]`, up to 64 characters.
fn session_name(job_id: &str) -> String {
    let name: String = format!("flotilla-{job_id}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    name.chars().take(64).collect()
}

/// 244 random bits (two v4 UUIDs) the attempt presents to fetch its credentials.
fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

fn rfc3339(t: SystemTime) -> String {
    aws_sdk_sts::primitives::DateTime::from(t)
        .fmt(aws_sdk_sts::primitives::DateTimeFormat::DateTime)
        .unwrap_or_default()
}

async fn serve_credentials(
    State(broker): State<Arc<RoleBroker>>,
    Path(task): Path<String>,
    headers: HeaderMap,
) -> Response {
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let (role_arn, session, creds) = {
        let grants = broker.grants();
        match grants.get(&task) {
            Some(g) if constant_time_eq(g.token.as_bytes(), given.as_bytes()) => {
                (g.role_arn.clone(), g.session.clone(), g.creds.clone())
            }
            // The same answer for an unknown task and a wrong token: nothing to probe.
            _ => {
                crate::metrics::job_credentials(false);
                return (StatusCode::FORBIDDEN, "no credentials for this request").into_response();
            }
        }
    };
    let creds = if creds
        .expiration
        .duration_since(SystemTime::now())
        .unwrap_or_default()
        < REFRESH_BEFORE
    {
        match broker.assume(&role_arn, &session, PROCESS_SESSION).await {
            Ok(fresh) => {
                let mut grants = broker.grants();
                if let Some(g) = grants.get_mut(&task) {
                    g.creds = fresh.clone();
                    broker.persist(&grants);
                }
                fresh
            }
            Err(e) => {
                tracing::warn!(task, role_arn, error = %e, "cannot refresh job role credentials");
                return (StatusCode::SERVICE_UNAVAILABLE, e).into_response();
            }
        }
    } else {
        creds
    };
    crate::metrics::job_credentials(true);
    axum::Json(serde_json::json!({
        "AccessKeyId": creds.access_key_id,
        "SecretAccessKey": creds.secret_access_key,
        "Token": creds.session_token,
        "Expiration": rfc3339(creds.expiration),
        "RoleArn": role_arn,
    }))
    .into_response()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A LOCAL runtime whose attempts get their job role, or, with `broker` `None` (a server without
/// AWS access), end naming it.
pub struct WithRoles {
    inner: Arc<dyn Runtime>,
    broker: Option<Arc<RoleBroker>>,
    logs: Arc<LogStore>,
    events: mpsc::Sender<RuntimeEvent>,
}

impl WithRoles {
    pub fn new(
        inner: Arc<dyn Runtime>,
        broker: Option<Arc<RoleBroker>>,
        logs: Arc<LogStore>,
        events: mpsc::Sender<RuntimeEvent>,
    ) -> WithRoles {
        WithRoles {
            inner,
            broker,
            logs,
            events,
        }
    }
}

#[async_trait::async_trait]
impl Runtime for WithRoles {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn start(&self, mut spec: AttemptSpec) -> Result<(), RuntimeError> {
        if spec.container.job_role_arn.is_none() {
            return self.inner.start(spec).await;
        }
        let granted = match &self.broker {
            Some(b) => b.grant(&spec, self.inner.name()).await,
            None => Err(
                "MISCONFIGURATION: containerProperties.jobRoleArn: this server has no AWS access \
                 to assume the role with (start it with --aws, or --aws-endpoint-url); a LOCAL \
                 job is not run without the role it declares"
                    .into(),
            ),
        };
        match granted {
            Ok(env) => {
                let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
                spec.env.retain(|(k, _)| !names.contains(&k.as_str()));
                spec.env.extend(env);
                let task = spec.task_id.clone();
                let r = self.inner.start(spec).await;
                if r.is_err()
                    && let Some(b) = &self.broker
                {
                    b.revoke(&task);
                }
                r
            }
            Err(reason) => {
                never_started(&self.logs, &self.events, &spec, reason);
                Ok(())
            }
        }
    }

    async fn stop(
        &self,
        job_id: &str,
        attempt: u32,
        signal: StopSignal,
    ) -> Result<(), RuntimeError> {
        self.inner.stop(job_id, attempt, signal).await
    }

    async fn recover(&self, expected: Vec<ExpectedAttempt>) -> Result<(), RuntimeError> {
        if let Some(b) = &self.broker {
            b.keep_only(&expected.iter().map(|e| e.task_id.clone()).collect());
        }
        self.inner.recover(expected).await
    }

    fn end_stored(&self, job_id: &str, attempt: u32) {
        if let Some(b) = &self.broker {
            let mut grants = b.grants();
            let before = grants.len();
            grants.retain(|_, g| !(g.job_id == job_id && g.attempt == attempt));
            if grants.len() != before {
                b.persist(&grants);
            }
        }
        self.inner.end_stored(job_id, attempt)
    }
}
