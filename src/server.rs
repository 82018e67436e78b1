//! `flotilla server`: configuration, start-up and graceful shutdown.

use crate::api::listener::{self, ConnLimits};
use crate::api::{self, AppState, BodyLimits, sigv4::CredentialStore};
use crate::batch::{Batch, BatchOptions};
use crate::error::BatchError;
use crate::store::{self, DataDirLock, LockError, StoreError};
use crate::util::fence::Fence;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub mod cloudwatch;
pub mod outbox;
pub mod replica;

#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Address to listen on. Without credentials only a loopback address is allowed.
    #[arg(long, default_value = "127.0.0.1:8080", env = "FLOTILLA_LISTEN")]
    pub listen: SocketAddr,
    /// Directory for the embedded database, credentials file and job logs.
    #[arg(long, default_value = ".flotilla", env = "FLOTILLA_DATA_DIR")]
    pub data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://…`; default: SQLite in the data directory.
    #[arg(long, env = "FLOTILLA_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Region used in ARNs.
    #[arg(long, default_value = "us-east-1", env = "FLOTILLA_REGION")]
    pub region: String,
    /// Account ID used in ARNs.
    #[arg(long, default_value = "000000000000", env = "FLOTILLA_ACCOUNT_ID")]
    pub account_id: String,
    /// Do not create the `local` compute environment and `default` queue on first start.
    #[arg(long)]
    pub no_defaults: bool,
    /// How LOCAL compute environments run jobs: Docker containers, host processes, or `auto`
    /// (Docker when the engine answers, else processes).
    #[arg(
        long,
        value_enum,
        default_value = "auto",
        env = "FLOTILLA_LOCAL_RUNTIME"
    )]
    pub local_runtime: crate::compute::local::LocalRuntimeMode,
    /// Whom the process runtime runs jobs as when their definition names no `user`
    /// (`name`, `uid`, `name:group` or `uid:gid`). Default: `nobody` when the server runs as
    /// root, else the server's own user (the only one it can run them as).
    #[arg(long, env = "FLOTILLA_PROCESS_USER")]
    pub process_user: Option<String>,
    /// Root of the process runtime's per-attempt working directories. Default: `<data-dir>/work`,
    /// or `<data-dir>.work` beside the data directory when the server runs as root (jobs then
    /// run as other users, who cannot enter the data directory).
    #[arg(long, env = "FLOTILLA_WORK_DIR")]
    pub work_dir: Option<PathBuf>,
    /// When LOCAL Docker pulls a job's image: only when it is absent (`missing`), before every
    /// container (`always`), or never (an absent image fails the attempt).
    #[arg(long, value_enum, default_value = "missing", env = "FLOTILLA_PULL")]
    pub pull: crate::compute::local::PullPolicy,
    /// Where the process runtime keeps its run journal (default `<data-dir>/run`). Replicas on
    /// one host give the same directory, so that the one that takes over finds and kills the
    /// attempts the last leader left running.
    #[arg(long, env = "FLOTILLA_PROCESS_JOURNAL_DIR")]
    pub process_journal_dir: Option<PathBuf>,
    /// Where job logs of LOCAL attempts are written and read (default `<data-dir>/logs`).
    /// Replicas that share one (same host or a shared file system) serve every job's logs.
    #[arg(long, env = "FLOTILLA_LOGS_DIR")]
    pub logs_dir: Option<PathBuf>,
    /// PostgreSQL: seconds the leader's lease lasts without renewal. A follower takes over
    /// within about this long (plus a second) after the leader dies or is cut off.
    #[arg(long, default_value_t = 10, env = "FLOTILLA_LEASE_SECONDS")]
    pub lease_seconds: u64,
    /// Seconds between SIGTERM and SIGKILL when a job is terminated or times out (AWS: 30).
    #[arg(long, default_value_t = 30)]
    pub kill_grace_seconds: u64,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Serve `/metrics` on this address instead of the API listener (which then answers 404 for
    /// it), so that scrapes need no credentials and the API port exposes nothing unsigned but
    /// `/healthz`. Loopback unless the address says otherwise, e.g. `127.0.0.1:9090`.
    #[arg(long, env = "FLOTILLA_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Serve the API over TLS with this PEM certificate chain (leaf first); needs --tls-key.
    /// The metrics listener stays plain HTTP.
    #[arg(long, env = "FLOTILLA_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, env = "FLOTILLA_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    #[command(flatten)]
    pub aws: AwsArgs,
    #[command(flatten)]
    pub events: EventArgs,
}

/// Job-state events (the log in the store, and where it is delivered; docs/events.md) and
/// CloudWatch metrics.
#[derive(Debug, Clone, clap::Args)]
pub struct EventArgs {
    /// Keep no job-event log: `GET /events`, webhooks and EventBridge then have nothing to
    /// send (refused together with --webhook or --events-bus).
    #[arg(long, env = "FLOTILLA_NO_JOB_EVENTS")]
    pub no_job_events: bool,
    /// POST every job event to this URL (repeatable, or comma-separated in the variable),
    /// signed with HMAC-SHA256 of FLOTILLA_WEBHOOK_SECRET, retried from the store until it
    /// answers 2xx.
    #[arg(
        long = "webhook",
        value_name = "URL",
        env = "FLOTILLA_WEBHOOKS",
        value_delimiter = ','
    )]
    pub webhooks: Vec<String>,
    /// A file holding the webhook signing secret (instead of FLOTILLA_WEBHOOK_SECRET).
    #[arg(
        long,
        value_name = "PATH",
        env = "FLOTILLA_WEBHOOK_SECRET_FILE",
        requires = "webhooks"
    )]
    pub webhook_secret_file: Option<PathBuf>,
    /// Put every job event on this EventBridge bus (name or ARN; source `flotilla.batch`).
    /// Needs the AWS driver.
    #[arg(long, value_name = "BUS", env = "FLOTILLA_EVENTS_BUS")]
    pub events_bus: Option<String>,
    /// How long delivered events stay in the log for `GET /events` clients to resume from.
    #[arg(
        long,
        default_value_t = 3600,
        env = "FLOTILLA_JOB_EVENTS_RETENTION_SECONDS",
        conflicts_with = "no_job_events"
    )]
    pub job_events_retention_seconds: u64,
    /// Events a sink has not delivered are dropped past this age (a receiver gone for good
    /// must not fill the disk); each drop is logged and counted.
    #[arg(
        long,
        default_value_t = 86_400,
        env = "FLOTILLA_JOB_EVENTS_MAX_AGE_SECONDS",
        conflicts_with = "no_job_events"
    )]
    pub job_events_max_age_seconds: u64,
    /// Publish Flotilla's figures to CloudWatch in this namespace with PutMetricData (jobs per
    /// queue and status, vCPUs and instances per compute environment, jobs finished). Needs
    /// the AWS driver.
    #[arg(long, value_name = "NAMESPACE", env = "FLOTILLA_CLOUDWATCH_NAMESPACE")]
    pub cloudwatch_namespace: Option<String>,
    /// How often the CloudWatch figures are published.
    #[arg(
        long,
        default_value_t = 60,
        env = "FLOTILLA_CLOUDWATCH_PERIOD_SECONDS",
        requires = "cloudwatch_namespace"
    )]
    pub cloudwatch_period_seconds: u64,
}

impl EventArgs {
    fn cloudwatch(&self) -> Option<cloudwatch::CloudWatchConfig> {
        self.cloudwatch_namespace
            .as_ref()
            .map(|ns| cloudwatch::CloudWatchConfig {
                namespace: ns.clone(),
                period: Duration::from_secs(self.cloudwatch_period_seconds),
            })
    }

    fn outbox(&self) -> Result<outbox::OutboxConfig, ServerError> {
        let secret = match &self.webhook_secret_file {
            Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                ServerError::Config(format!("--webhook-secret-file {}: {e}", path.display()))
            })?),
            None => ENV_WEBHOOK_SECRET
                .get()
                .cloned()
                .flatten()
                .or_else(|| std::env::var("FLOTILLA_WEBHOOK_SECRET").ok()),
        };
        let cfg = outbox::OutboxConfig {
            webhooks: self
                .webhooks
                .iter()
                .filter(|u| !u.trim().is_empty())
                .cloned()
                .collect(),
            webhook_secret: secret,
            bus: self.events_bus.clone(),
            retention: Duration::from_secs(self.job_events_retention_seconds),
            max_age: Duration::from_secs(self.job_events_max_age_seconds),
        };
        if self.no_job_events && (!cfg.webhooks.is_empty() || cfg.bus.is_some()) {
            return Err(ServerError::Config(
                "--no-job-events keeps no event log to deliver: drop it or drop --webhook/--events-bus"
                    .into(),
            ));
        }
        Ok(cfg)
    }
}

/// Bounds on what a peer, authenticated or not, can make the server hold. See
/// `docs/operations.md`, "Resource limits".
#[derive(Debug, Clone, clap::Args)]
pub struct LimitArgs {
    /// Connections served at once; further ones wait in the kernel's accept queue.
    #[arg(long, default_value_t = 1024, env = "FLOTILLA_MAX_CONNECTIONS")]
    pub max_connections: usize,
    /// Seconds from the first byte of a request head to its end.
    #[arg(long, default_value_t = 10, env = "FLOTILLA_HEADER_TIMEOUT_SECONDS")]
    pub header_timeout_seconds: u64,
    /// Seconds from the end of a request head to the last byte of its body.
    #[arg(long, default_value_t = 30, env = "FLOTILLA_BODY_TIMEOUT_SECONDS")]
    pub body_timeout_seconds: u64,
    /// Seconds a connection may stay open with no request (keep-alive), and a response may wait
    /// for the peer to read it.
    #[arg(long, default_value_t = 60, env = "FLOTILLA_IDLE_TIMEOUT_SECONDS")]
    pub idle_timeout_seconds: u64,
    /// MiB of request bodies being read at once, over all connections; a request over the
    /// budget is answered 429 TooManyRequestsException.
    #[arg(long, default_value_t = 64, env = "FLOTILLA_MAX_INFLIGHT_BODY_MIB")]
    pub max_inflight_body_mib: usize,
}

impl LimitArgs {
    fn check(&self) -> Result<(), ServerError> {
        for (flag, value) in [
            ("--max-connections", self.max_connections as u64),
            ("--header-timeout-seconds", self.header_timeout_seconds),
            ("--body-timeout-seconds", self.body_timeout_seconds),
            ("--idle-timeout-seconds", self.idle_timeout_seconds),
            ("--max-inflight-body-mib", self.max_inflight_body_mib as u64),
        ] {
            if value == 0 {
                return Err(ServerError::Config(format!("{flag} must be at least 1")));
            }
        }
        Ok(())
    }

    fn conn_limits(&self) -> ConnLimits {
        ConnLimits {
            max_connections: self.max_connections,
            header_timeout: Duration::from_secs(self.header_timeout_seconds),
            idle_timeout: Duration::from_secs(self.idle_timeout_seconds),
        }
    }

    fn body_limits(&self) -> BodyLimits {
        BodyLimits::new(
            Duration::from_secs(self.body_timeout_seconds),
            self.max_inflight_body_mib.saturating_mul(1024 * 1024),
        )
    }
}

/// The AWS compute driver (MANAGED EC2/SPOT and UNMANAGED compute environments).
#[derive(Debug, Clone, clap::Args)]
pub struct AwsArgs {
    /// Drive EC2 and ECS in the AWS account of the standard credential chain (environment,
    /// profile, instance role). Implied by --aws-endpoint-url.
    #[arg(long, env = "FLOTILLA_AWS")]
    pub aws: bool,
    /// An AWS endpoint for EC2, ECS and CloudWatch Logs, e.g. the emulator's
    /// `http://127.0.0.1:4566`.
    #[arg(long, env = "FLOTILLA_AWS_ENDPOINT_URL")]
    pub aws_endpoint_url: Option<String>,
    /// Region of the EC2 and ECS calls (default: --region).
    #[arg(long, env = "FLOTILLA_AWS_REGION")]
    pub aws_region: Option<String>,
    /// Milliseconds between fleet refreshes and DescribeTasks rounds.
    #[arg(long, default_value_t = 1000, env = "FLOTILLA_AWS_POLL_MS")]
    pub aws_poll_ms: u64,
    /// Seconds an instance stays idle before it is drained and terminated.
    #[arg(long, default_value_t = 300, env = "FLOTILLA_AWS_IDLE_SECONDS")]
    pub aws_idle_seconds: u64,
    /// Spot interruptions of one job retried without spending its attempts; then it moves to
    /// the queue's non-Spot environments.
    #[arg(long, default_value_t = 3)]
    pub spot_max_interruptions: u32,
    /// AMI of every instance type whose environment names none (no ec2Configuration
    /// imageIdOverride, no `computeResources.imageId`). Without it, each type boots the
    /// ECS-optimized AMI SSM recommends for it (AL2023; GPU and arm64 variants).
    #[arg(long, env = "FLOTILLA_AWS_AMI")]
    pub aws_ami: Option<String>,
    /// Seconds a pool (instance type, subnet) that ran out of capacity is left out of plans.
    #[arg(long, default_value_t = 120)]
    pub aws_capacity_backoff_seconds: u64,
    /// Attempts per AWS call, the first included (throttling and 5xx are retried with jittered
    /// exponential backoff).
    #[arg(long, default_value_t = 5)]
    pub aws_max_attempts: u32,
    /// A client-side rate limit, `OPERATION=RATE[:BURST]` (requests per second), for an account
    /// whose quota AWS raised; repeatable. Without it every operation keeps AWS's default
    /// quota (StartTask 20/s, burst 100; see docs/performance.md).
    #[arg(long, value_name = "OP=RATE[:BURST]")]
    pub aws_rate_limit: Vec<crate::compute::aws::RateLimit>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Fix the configuration and start again; retrying as is fails the same way.
    #[error("configuration: {0}")]
    Config(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Lock(#[from] LockError),
    #[error("start-up: {0}")]
    Batch(#[from] BatchError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// The API key pair the environment held when [`take_env_credentials`] ran.
static ENV_CREDENTIALS: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
/// `FLOTILLA_WEBHOOK_SECRET` as [`take_env_credentials`] found it.
static ENV_WEBHOOK_SECRET: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

/// Reads `FLOTILLA_ACCESS_KEY_ID` / `FLOTILLA_SECRET_ACCESS_KEY` and removes the secret from the
/// process's environment, including the copy the kernel shows in `/proc/<pid>/environ` (which
/// `unsetenv` leaves in place): nothing that can read the server's memory map or environment
/// later finds it there. The binary calls this first thing, before any other thread exists.
pub fn take_env_credentials() {
    let id = std::env::var("FLOTILLA_ACCESS_KEY_ID").unwrap_or_default();
    let secret = std::env::var("FLOTILLA_SECRET_ACCESS_KEY").unwrap_or_default();
    let _ = ENV_CREDENTIALS.set((id, secret));
    let _ = ENV_WEBHOOK_SECRET.set(std::env::var("FLOTILLA_WEBHOOK_SECRET").ok());
    // SAFETY: called from `main` before the async runtime or any other thread is started, so
    // nothing reads the environment concurrently.
    unsafe {
        for name in ["FLOTILLA_SECRET_ACCESS_KEY", "FLOTILLA_WEBHOOK_SECRET"] {
            scrub_env_value(name);
            std::env::remove_var(name);
        }
    }
}

/// Overwrites the value of `name` in the C environment block in place with zero bytes.
///
/// # Safety
/// No other thread may read or write the environment meanwhile.
unsafe fn scrub_env_value(name: &str) {
    unsafe extern "C" {
        static mut environ: *mut *mut libc::c_char;
    }
    let prefix = format!("{name}=");
    // SAFETY: `environ` is a NULL-terminated array of NUL-terminated strings owned by libc;
    // the caller guarantees no concurrent access, and only bytes before each NUL are written.
    unsafe {
        let mut entry = std::ptr::addr_of!(environ).read();
        if entry.is_null() {
            return;
        }
        while !(*entry).is_null() {
            let s = *entry;
            let len = libc::strlen(s);
            let bytes = std::slice::from_raw_parts_mut(s.cast::<u8>(), len);
            if bytes.starts_with(prefix.as_bytes()) {
                for b in &mut bytes[prefix.len()..] {
                    std::ptr::write_volatile(b, 0);
                }
            }
            entry = entry.add(1);
        }
    }
}

/// The API's TLS configuration from `--tls-cert`/`--tls-key` (both or neither).
fn tls_acceptor(
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
) -> Result<Option<tokio_rustls::TlsAcceptor>, ServerError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let (cert, key) = match (cert, key) {
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (c, k),
        _ => {
            return Err(ServerError::Config(
                "--tls-cert and --tls-key go together: give both or neither".into(),
            ));
        }
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ServerError::Config(format!("--tls-cert {}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(ServerError::Config(format!(
            "--tls-cert {}: no PEM CERTIFICATE in the file",
            cert.display()
        )));
    }
    let private_key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| ServerError::Config(format!("--tls-key {}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Config(format!("tls: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, private_key)
        .map_err(|e| {
            let what = match e {
                rustls::Error::InconsistentKeys(_) => "the key is not the certificate's".into(),
                e => e.to_string(),
            };
            ServerError::Config(format!(
                "--tls-cert {} / --tls-key {}: {what}",
                cert.display(),
                key.display()
            ))
        })?;
    // HTTP/1.1 only: the listener's clocks are written for one request at a time.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tracing::info!(cert = %cert.display(), "api tls on");
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
}

/// Credentials from `FLOTILLA_ACCESS_KEY_ID` / `FLOTILLA_SECRET_ACCESS_KEY` and
/// `<data-dir>/credentials` (AWS INI format).
fn load_credentials(data_dir: &std::path::Path) -> Result<CredentialStore, ServerError> {
    let mut creds = CredentialStore::new();
    let (id, secret) = ENV_CREDENTIALS.get().cloned().unwrap_or_else(|| {
        (
            std::env::var("FLOTILLA_ACCESS_KEY_ID").unwrap_or_default(),
            std::env::var("FLOTILLA_SECRET_ACCESS_KEY").unwrap_or_default(),
        )
    });
    match (id.trim().is_empty(), secret.trim().is_empty()) {
        (false, false) => creds.insert(id.trim(), secret.trim()),
        (true, true) => {}
        _ => {
            return Err(ServerError::Config(
                "set both FLOTILLA_ACCESS_KEY_ID and FLOTILLA_SECRET_ACCESS_KEY, or neither".into(),
            ));
        }
    }
    let file = data_dir.join("credentials");
    match std::fs::read_to_string(&file) {
        Ok(text) => creds.extend(CredentialStore::parse_credentials_file(&text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(ServerError::Config(format!(
                "cannot read {}: {e}",
                file.display()
            )));
        }
    }
    Ok(creds)
}

/// `--process-user` and `--work-dir`, resolved.
fn process_options(
    args: &ServerArgs,
) -> Result<crate::compute::local::process::ProcessOptions, ServerError> {
    use crate::compute::local::process::{JobUser, ProcessOptions};
    let root = nix::unistd::geteuid().is_root();
    let user = match (&args.process_user, root) {
        (Some(u), _) => {
            let ju = JobUser::parse(u)
                .map_err(|e| ServerError::Config(format!("--process-user {u}: {e}")))?;
            if !root && ju.uid != nix::unistd::geteuid().as_raw() {
                return Err(ServerError::Config(format!(
                    "--process-user {u}: only a server running as root can run jobs as another user"
                )));
            }
            Some(ju)
        }
        (None, true) => Some(JobUser::parse("nobody").map_err(|e| {
            ServerError::Config(format!(
                "the server runs as root and jobs default to user nobody, but: {e}; \
                 pass --process-user"
            ))
        })?),
        (None, false) => None,
    };
    let work_dir = match &args.work_dir {
        Some(d) => Some(d.clone()),
        None if root => {
            let dir = std::fs::canonicalize(&args.data_dir)?;
            let name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
            Some(dir.with_file_name(format!("{}.work", name.unwrap_or_default())))
        }
        None => None,
    };
    Ok(ProcessOptions {
        user,
        work_dir,
        journal_dir: args.process_journal_dir.clone(),
        // Only a server that can switch users needs it. A data directory it cannot write or
        // execute from (noexec) costs speed, not correctness: std forks to switch instead.
        exec_shim: if root {
            match crate::compute::local::process::install_exec_shim(&args.data_dir) {
                Ok(path) => Some(path),
                Err(e) => {
                    tracing::warn!(dir = %args.data_dir.display(), error = %e,
                        "cannot install the exec shim; jobs as other users start slower");
                    None
                }
            }
        } else {
            None
        },
    })
}

/// Runs the server until `shutdown` resolves, then drains in-flight requests.
pub async fn run(
    args: ServerArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    args.limits.check()?;
    let aws_driver = args.aws.aws || args.aws.aws_endpoint_url.is_some();
    let outbox_cfg = args.events.outbox()?;
    outbox::check(&outbox_cfg, aws_driver).map_err(ServerError::Config)?;
    cloudwatch::check(args.events.cloudwatch().as_ref(), aws_driver)
        .map_err(ServerError::Config)?;
    // Before anything starts: a certificate that cannot be used is a configuration error.
    let tls = tls_acceptor(args.tls_cert.as_deref(), args.tls_key.as_deref())?;
    std::fs::create_dir_all(&args.data_dir)?;
    {
        // The database, the credentials file and the logs are the server's alone: a job of the
        // process runtime, or any other local user, must not read them.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&args.data_dir)?.permissions().mode() & 0o777;
        if mode != 0o700 {
            std::fs::set_permissions(&args.data_dir, std::fs::Permissions::from_mode(0o700))?;
            tracing::info!(dir = %args.data_dir.display(), was = format!("{mode:o}"), "data directory made 0700");
        }
    }
    // Before anything in the directory is read or written; held until the process ends.
    let _lock = DataDirLock::acquire(&args.data_dir)?;
    let creds = load_credentials(&args.data_dir)?;
    let credentials = if creds.is_empty() {
        if !args.listen.ip().is_loopback() {
            return Err(ServerError::Config(format!(
                "refusing to listen on {} without credentials: set FLOTILLA_ACCESS_KEY_ID and \
                 FLOTILLA_SECRET_ACCESS_KEY or write {}",
                args.listen,
                args.data_dir.join("credentials").display()
            )));
        }
        tracing::warn!(
            listen = %args.listen,
            "no credentials configured: accepting unauthenticated requests on loopback only"
        );
        None
    } else {
        tracing::info!(keys = creds.len(), "sigv4 verification on");
        Some(creds)
    };
    let url = match &args.database_url {
        Some(u) => u.clone(),
        None => format!("sqlite://{}", args.data_dir.join("flotilla.db").display()),
    };
    let store = store::open(&url).await?;
    tracing::info!(backend = store.backend(), "store open");
    if args.lease_seconds < 2 {
        return Err(ServerError::Config(
            "--lease-seconds must be at least 2".into(),
        ));
    }
    let store_handle = store.clone();
    let replication = store.replication();
    // One server per SQLite store: it always leads. On PostgreSQL every server is a replica and
    // acts only while it holds the lease.
    let fence = Arc::new(match replication {
        Some(_) => Fence::closed(),
        None => Fence::open(),
    });
    let role = Arc::new(replica::Role::default());
    // The engine's handle goes into the control plane when it is built; the engine itself
    // starts once the runtimes exist (at once, or when this replica wins the lease).
    let (engine, inbox) = crate::engine::channel();
    let replica_dispatch = replication.as_ref().map(|r| {
        Arc::new(replica::ReplicaDispatch::new(
            r.clone(),
            store.clone(),
            engine.clone(),
        ))
    });
    let dispatch: Arc<dyn crate::batch::dispatch::Dispatch> = match &replica_dispatch {
        Some(d) => d.clone(),
        None => Arc::new(engine.clone()),
    };
    let batch = Arc::new(
        Batch::open(
            store,
            args.region.clone(),
            args.account_id.clone(),
            BatchOptions { aws_driver },
            Some(dispatch),
        )
        .await?,
    );
    if let Some(d) = &replica_dispatch {
        let _ = d.batch.set(batch.clone());
    }
    if !args.no_defaults {
        batch.create_defaults().await?;
    }
    let logs_dir = args
        .logs_dir
        .clone()
        .unwrap_or_else(|| args.data_dir.join("logs"));
    let logs = Arc::new(crate::logs::LogStore::open(logs_dir)?);
    let (events_tx, events_rx) = tokio::sync::mpsc::channel(10_000);
    let (stop_engine, engine_shutdown) = tokio::sync::watch::channel(false);
    let aws = if aws_driver {
        let a = &args.aws;
        let driver = crate::compute::aws::AwsDriver::connect(
            batch.clone(),
            crate::compute::aws::AwsOptions {
                api: crate::compute::aws::ApiOptions {
                    endpoint_url: a.aws_endpoint_url.clone(),
                    region: a.aws_region.clone().unwrap_or_else(|| args.region.clone()),
                    call_timeout: std::time::Duration::from_secs(30),
                    max_attempts: a.aws_max_attempts,
                    fence: fence.clone(),
                    limits: a.aws_rate_limit.clone(),
                },
                poll_interval: std::time::Duration::from_millis(a.aws_poll_ms.max(50)),
                idle_timeout: std::time::Duration::from_secs(a.aws_idle_seconds),
                image_id: a.aws_ami.clone(),
                capacity_backoff: std::time::Duration::from_secs(a.aws_capacity_backoff_seconds),
            },
            events_tx.clone(),
        )
        .await;
        tracing::info!(endpoint = ?a.aws_endpoint_url, "aws compute driver on");
        Some(driver)
    } else {
        None
    };
    let parts = EngineParts {
        outbox: outbox_cfg,
        args: args.clone(),
        batch: batch.clone(),
        logs: logs.clone(),
        aws: aws.clone(),
        fence: fence.clone(),
        inbox,
        handle: engine.clone(),
        events_tx,
        events_rx,
        engine_shutdown: engine_shutdown.clone(),
    };
    let engine_task = match (&replication, &replica_dispatch) {
        (Some(repl), Some(dispatch)) => {
            let holder = format!(
                "{}/{}/{}",
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_string())
                    .unwrap_or_default(),
                std::process::id(),
                uuid::Uuid::new_v4().simple()
            );
            let timing = replica::LeaseTiming {
                ttl: Duration::from_secs(args.lease_seconds),
            };
            tracing::info!(%holder, lease_seconds = args.lease_seconds, "replica: following until the leader lease is free");
            let (repl, dispatch, fence, role) =
                (repl.clone(), dispatch.clone(), fence.clone(), role.clone());
            tokio::spawn(async move {
                let epoch = replica::acquire(&repl, &holder, timing, &fence, &role).await;
                let guard = {
                    let (repl, holder, fence) = (repl.clone(), holder.clone(), fence.clone());
                    tokio::spawn(async move {
                        let why = replica::hold(&repl, &holder, epoch, timing, &fence).await;
                        // Nothing more may be written or launched by this process; what it holds
                        // in memory is stale. Exit so that a supervisor starts it again as a
                        // follower.
                        tracing::error!(epoch, reason = %why, "deposed: this replica lost the leader lease; exiting");
                        eprintln!("flotilla: deposed leader (epoch {epoch}): {why}; exiting");
                        std::process::exit(DEPOSED_EXIT);
                    })
                };
                let started = match parts.start().await {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::error!(error = %e, "leader could not start the engine; giving the lease up");
                        let _ = repl.release(&holder, epoch).await;
                        eprintln!("flotilla: leader could not start the engine: {e}");
                        std::process::exit(1);
                    }
                };
                dispatch.lead();
                let inbox = tokio::spawn(replica::apply_inbox(
                    repl.clone(),
                    started.handle.clone(),
                    dispatch,
                ));
                let _ = started.task.await;
                inbox.abort();
                guard.abort();
                let _ = repl.release(&holder, epoch).await;
            })
        }
        _ => {
            let started = parts.start().await?;
            role.set_single();
            started.task
        }
    };
    let state = Arc::new(AppState {
        batch,
        credentials,
        logs: Some(logs),
        aws: aws.clone(),
        role: replication.is_some().then(|| role.clone()),
        body_limits: args.limits.body_limits(),
        metrics_on_api: args.metrics_listen.is_none(),
    });
    let conn_limits = args.limits.conn_limits();
    let (stop_metrics, metrics_stopped) = tokio::sync::watch::channel(false);
    let metrics_task = match args.metrics_listen {
        None => None,
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            let addr = listener.local_addr()?;
            tracing::info!(%addr, "metrics listening");
            // Tests and scripts read this line to learn the port when listening on port 0.
            println!("flotilla metrics on http://{addr}/metrics");
            let mut stopped = metrics_stopped;
            let shutdown = async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            };
            let router = api::metrics_router(state.clone());
            // Plain HTTP: the metrics address is loopback unless an operator says otherwise.
            Some(tokio::spawn(listener::serve(
                listener,
                router,
                conn_limits,
                None,
                shutdown,
            )))
        }
    };
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%addr, scheme, "listening");
    // Tests and scripts read this line to learn the port when listening on port 0.
    println!("flotilla listening on {scheme}://{addr}");
    listener::serve(listener, api::router(state), conn_limits, tls, shutdown).await?;
    let _ = stop_metrics.send(true);
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    // Requests have drained; the engine finishes its round. Running attempts keep running and
    // are recovered at the next start. A follower's task is still waiting for the lease.
    let _ = stop_engine.send(true);
    if role.is_leader() || replication.is_none() {
        let _ = engine_task.await;
    } else {
        engine_task.abort();
    }
    // The engine has written its last round: leave the database whole in its main file.
    if let Err(e) = store_handle.shutdown().await {
        tracing::warn!(error = %e, "store shutdown incomplete; the next start replays the WAL");
    }
    tracing::info!("server stopped");
    Ok(())
}

/// The exit status of a leader that lost its lease (EX_TEMPFAIL: start it again).
pub const DEPOSED_EXIT: i32 = 75;

/// What it takes to start the engine and its runtimes: at once on a single server, when the
/// lease is won on a replica.
struct EngineParts {
    outbox: outbox::OutboxConfig,
    args: ServerArgs,
    batch: Arc<Batch>,
    logs: Arc<crate::logs::LogStore>,
    aws: Option<Arc<crate::compute::aws::AwsDriver>>,
    fence: Arc<Fence>,
    inbox: crate::engine::Inbox,
    handle: crate::engine::EngineHandle,
    events_tx: tokio::sync::mpsc::Sender<crate::compute::RuntimeEvent>,
    events_rx: tokio::sync::mpsc::Receiver<crate::compute::RuntimeEvent>,
    engine_shutdown: tokio::sync::watch::Receiver<bool>,
}

struct Started {
    task: tokio::task::JoinHandle<()>,
    handle: crate::engine::EngineHandle,
}

impl EngineParts {
    async fn start(self) -> Result<Started, ServerError> {
        let EngineParts {
            outbox,
            args,
            batch,
            logs,
            aws,
            fence,
            inbox,
            handle,
            events_tx,
            events_rx,
            engine_shutdown,
        } = self;
        // What other replicas changed while this one followed.
        batch.refresh_catalog().await?;
        if let Some(repl) = batch.store().replication() {
            // The Docker runtime labels containers with `<data-dir>/instance-id`; replicas share
            // one, so that this replica adopts what the last leader started on the same daemon
            // instead of taking it for a stranger's.
            let id = repl.group_id().await?;
            std::fs::write(args.data_dir.join("instance-id"), id)?;
        }
        let sdk = if aws.is_some() {
            let region = args
                .aws
                .aws_region
                .clone()
                .unwrap_or_else(|| args.region.clone());
            let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .region(aws_config::Region::new(region));
            if let Some(url) = &args.aws.aws_endpoint_url {
                loader = loader.endpoint_url(url);
            }
            Some(loader.load().await)
        } else {
            None
        };
        let roles = if let Some(sdk) = &sdk {
            let listener = crate::compute::local::agent::bind_remembered(
                std::net::Ipv4Addr::LOCALHOST,
                &args.data_dir.join("credentials-port"),
            )
            .await?;
            let addr = listener.local_addr()?;
            let broker = crate::compute::local::roles::RoleBroker::new(sdk, addr, &args.data_dir);
            serve_task_endpoints(listener, broker.router(), &engine_shutdown);
            tracing::info!(%addr, "job role credentials served on loopback");
            Some(broker)
        } else {
            None
        };
        let local = crate::compute::local::connect(
            args.local_runtime,
            args.pull,
            &args.data_dir,
            process_options(&args)?,
            sdk.as_ref()
                .zip(roles)
                .map(|(sdk, roles)| crate::compute::local::AwsAccess { sdk, roles }),
            logs,
            events_tx,
        )
        .await
        .map_err(|e| ServerError::Config(format!("local runtime: {e}")))?;
        if let Some((listener, router)) = local.task_endpoints {
            serve_task_endpoints(listener, router, &engine_shutdown);
        }
        let runtime = Arc::new(crate::compute::Router {
            local: local.runtime,
            aws: aws.clone(),
            fence,
        });
        let batch_store = batch.store().clone();
        let task = crate::engine::Engine::start(
            inbox,
            batch.clone(),
            runtime,
            events_rx,
            crate::engine::EngineConfig {
                kill_grace: std::time::Duration::from_secs(args.kill_grace_seconds),
                fleet: aws.as_ref().map(|d| d.fleet()),
                spot_max_interruptions: args.aws.spot_max_interruptions,
                region: args.region.clone(),
                job_events: !args.events.no_job_events,
                ..Default::default()
            },
            Arc::new(crate::util::time::SystemClock),
            engine_shutdown.clone(),
        )
        .await?;
        if let (Some(cfg), Some(sdk)) = (args.events.cloudwatch(), &sdk) {
            cloudwatch::spawn(cfg, batch.clone(), sdk, engine_shutdown.clone());
        }
        if !args.events.no_job_events {
            outbox::spawn(
                &outbox,
                batch_store,
                args.region.clone(),
                args.account_id.clone(),
                sdk.as_ref(),
                engine_shutdown.clone(),
            )
            .map_err(ServerError::Config)?;
        }
        if let Some(driver) = &aws {
            driver.spawn(engine_shutdown);
        }
        Ok(Started { task, handle })
    }
}

/// Serves what jobs reach beside the API (role credentials, task metadata) until the engine
/// stops.
fn serve_task_endpoints(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    engine_shutdown: &tokio::sync::watch::Receiver<bool>,
) {
    let mut stopped = engine_shutdown.clone();
    let shutdown = async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let limits = ConnLimits {
        max_connections: 256,
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(30),
    };
    let addr = listener.local_addr().ok();
    tokio::spawn(async move {
        if let Err(e) = listener::serve(listener, router, limits, None, shutdown).await {
            tracing::error!(error = %e, ?addr, "task endpoints listener failed");
        }
    });
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested");
}
