//! `flotilla server`: configuration, start-up and graceful shutdown.

use crate::api::{self, AppState, sigv4::CredentialStore};
use crate::batch::Batch;
use crate::error::BatchError;
use crate::store::{self, StoreError};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

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
    /// Seconds between SIGTERM and SIGKILL when a job is terminated or times out (AWS: 30).
    #[arg(long, default_value_t = 30)]
    pub kill_grace_seconds: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Fix the configuration and start again; retrying as is fails the same way.
    #[error("configuration: {0}")]
    Config(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("start-up: {0}")]
    Batch(#[from] BatchError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Credentials from `FLOTILLA_ACCESS_KEY_ID` / `FLOTILLA_SECRET_ACCESS_KEY` and
/// `<data-dir>/credentials` (AWS INI format).
fn load_credentials(data_dir: &std::path::Path) -> Result<CredentialStore, ServerError> {
    let mut creds = CredentialStore::new();
    let id = std::env::var("FLOTILLA_ACCESS_KEY_ID").unwrap_or_default();
    let secret = std::env::var("FLOTILLA_SECRET_ACCESS_KEY").unwrap_or_default();
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

/// Runs the server until `shutdown` resolves, then drains in-flight requests.
pub async fn run(
    args: ServerArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    std::fs::create_dir_all(&args.data_dir)?;
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
    let batch = Arc::new(Batch::open(store, args.region.clone(), args.account_id.clone()).await?);
    if !args.no_defaults {
        batch.create_defaults().await?;
    }
    let logs = Arc::new(crate::logs::LogStore::open(args.data_dir.join("logs"))?);
    let (events_tx, events_rx) = tokio::sync::mpsc::channel(10_000);
    let runtime =
        crate::compute::local::connect(args.local_runtime, &args.data_dir, logs.clone(), events_tx)
            .await
            .map_err(|e| ServerError::Config(format!("local runtime: {e}")))?;
    let (stop_engine, engine_shutdown) = tokio::sync::watch::channel(false);
    let (_engine, engine_task) = crate::engine::Engine::start(
        batch.clone(),
        runtime,
        events_rx,
        crate::engine::EngineConfig {
            kill_grace: std::time::Duration::from_secs(args.kill_grace_seconds),
            ..Default::default()
        },
        engine_shutdown,
    )
    .await?;
    let state = Arc::new(AppState {
        batch,
        credentials,
        logs: Some(logs),
    });
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening");
    // Tests and scripts read this line to learn the port when listening on port 0.
    println!("flotilla listening on http://{addr}");
    axum::serve(listener, api::router(state))
        .with_graceful_shutdown(shutdown)
        .await?;
    // Requests have drained; the engine finishes its round. Running attempts keep running and
    // are recovered at the next start.
    let _ = stop_engine.send(true);
    let _ = engine_task.await;
    tracing::info!("server stopped");
    Ok(())
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
