//! Shared harness: a real `flotilla server` process on a free loopback port, and the official AWS
//! SDK for Rust Batch client pointed at it.
#![allow(dead_code)]

pub mod aws;
pub mod emulator;

use aws_sdk_batch::config::{BehaviorVersion, Credentials, Region};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "AKIDFLOTILLATEST";
pub const SECRET_KEY: &str = "flotilla-test-secret";

/// The PostgreSQL URL the test command provides. Tests that need PostgreSQL fail without it.
pub fn postgres_url() -> String {
    std::env::var("FLOTILLA_TEST_POSTGRES_URL").expect(
        "FLOTILLA_TEST_POSTGRES_URL is not set: run the test suite with scripts/test.sh, which starts PostgreSQL",
    )
}

pub struct ServerOptions {
    /// Require SigV4 with [`ACCESS_KEY`]/[`SECRET_KEY`].
    pub auth: bool,
    pub database_url: Option<String>,
    pub no_defaults: bool,
    pub extra_args: Vec<String>,
    /// Let the engine run jobs. Off by default: control-plane tests look at jobs while they
    /// wait, so the harness DISABLEs the default `local` compute environment (a DISABLED
    /// environment dispatches nothing, as in AWS Batch) and `create_local_ce` creates DISABLED
    /// ones.
    pub dispatch: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            auth: true,
            database_url: None,
            no_defaults: false,
            extra_args: Vec::new(),
            dispatch: false,
        }
    }
}

pub struct Server {
    pub child: Child,
    pub endpoint: String,
    pub data_dir: PathBuf,
    /// Kept so the directory outlives restarts of the same server.
    _tmp: Option<tempfile::TempDir>,
    opts_auth: bool,
    database_url: Option<String>,
    extra_args: Vec<String>,
}

impl Server {
    pub fn start() -> Server {
        Self::start_with(ServerOptions::default())
    }

    pub fn start_with(opts: ServerOptions) -> Server {
        Self::start_in(tempfile::tempdir().expect("temp dir"), opts)
    }

    /// Starts a server on a data dir the caller prepared (e.g. with a `credentials` file in it).
    pub fn start_in(tmp: tempfile::TempDir, opts: ServerOptions) -> Server {
        let dir = tmp.path().to_path_buf();
        let mut s = Self::spawn(&dir, &opts, "127.0.0.1:0");
        s._tmp = Some(tmp);
        if !opts.dispatch && !opts.no_defaults && opts.auth {
            s.hold_default_environment();
        }
        s
    }

    /// DISABLEs the `local` compute environment so that jobs wait in their queues.
    fn hold_default_environment(&self) {
        use aws_sdk_batch::types::CeState;
        let client = self.client();
        // Tests call this from inside their own async runtime; the SDK call gets its own.
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime");
                    rt.block_on(
                        client
                            .update_compute_environment()
                            .compute_environment("local")
                            .state(CeState::Disabled)
                            .send(),
                    )
                    .expect("disable the local compute environment");
                })
                .join()
                .expect("disable thread");
        });
    }

    fn spawn(dir: &Path, opts: &ServerOptions, listen: &str) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_flotilla"));
        cmd.arg("server")
            .arg("--listen")
            .arg(listen)
            .arg("--data-dir")
            .arg(dir);
        if let Some(url) = &opts.database_url {
            cmd.arg("--database-url").arg(url);
        }
        if opts.no_defaults {
            cmd.arg("--no-defaults");
        }
        cmd.args(&opts.extra_args);
        cmd.env_remove("FLOTILLA_ACCESS_KEY_ID")
            .env_remove("FLOTILLA_SECRET_ACCESS_KEY")
            // Tests name images such as busybox:latest that are not present: pulling them would
            // send the Docker engine to Docker Hub. A test that pulls says `--pull` itself.
            .env("FLOTILLA_PULL", "never")
            .env("RUST_LOG", "warn");
        // The AWS driver, when a test turns it on, talks to the emulator.
        emulator::with_test_credentials(&mut cmd);
        if opts.auth {
            cmd.env("FLOTILLA_ACCESS_KEY_ID", ACCESS_KEY)
                .env("FLOTILLA_SECRET_ACCESS_KEY", SECRET_KEY);
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn flotilla server");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut sent = false;
            while let Some(Ok(line)) = lines.next() {
                if !sent && let Some(url) = line.strip_prefix("flotilla listening on ") {
                    let _ = tx.send(url.to_string());
                    sent = true;
                }
            }
        });
        let endpoint = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(e) => e,
            Err(_) => {
                let _ = child.kill();
                panic!("flotilla server did not report its address within 60 s");
            }
        };
        Server {
            child,
            endpoint,
            data_dir: dir.to_path_buf(),
            _tmp: None,
            opts_auth: opts.auth,
            database_url: opts.database_url.clone(),
            extra_args: opts.extra_args.clone(),
        }
    }

    /// SIGKILL: no chance to flush or shut down.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st;
            }
            if Instant::now() > deadline {
                self.kill();
                panic!("server did not exit within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts a new server process on the same data dir (and database), on the same port.
    pub fn restart(&mut self) {
        self.restart_with(true);
    }

    /// Like [`Server::restart`], choosing whether `--no-defaults` is passed: `false` starts the new
    /// process exactly as a first start would (defaults requested).
    pub fn restart_with(&mut self, no_defaults: bool) {
        self.kill();
        let listen = self.endpoint.split_once("://").map_or("", |(_, a)| a);
        let listen = listen.to_string();
        let opts = ServerOptions {
            auth: self.opts_auth,
            database_url: self.database_url.clone(),
            no_defaults,
            extra_args: self.extra_args.clone(),
            dispatch: true,
        };
        let tmp = self._tmp.take();
        let mut fresh = Self::spawn(&self.data_dir, &opts, &listen);
        fresh._tmp = tmp;
        *self = fresh;
    }

    /// A raw HTTP client, signing with the harness credentials when the server requires them.
    pub fn raw(&self) -> Raw {
        Raw {
            // No connection reuse: some tests send requests the server refuses without reading
            // the body, after which it closes the connection under a pooled client.
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .expect("http client"),
            endpoint: self.endpoint.clone(),
            credentials: self
                .opts_auth
                .then(|| (ACCESS_KEY.to_string(), SECRET_KEY.to_string())),
        }
    }

    /// An SDK client that does not retry, for tests that kill the server under it.
    pub fn client_no_retry(&self) -> aws_sdk_batch::Client {
        let conf = aws_sdk_batch::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .credentials_provider(Credentials::new(
                ACCESS_KEY,
                SECRET_KEY,
                None,
                None,
                "flotilla-test",
            ))
            .retry_config(aws_sdk_batch::config::retry::RetryConfig::disabled())
            .build();
        aws_sdk_batch::Client::from_conf(conf)
    }

    pub fn client(&self) -> aws_sdk_batch::Client {
        self.client_with(ACCESS_KEY, SECRET_KEY)
    }

    pub fn client_with(&self, key: &str, secret: &str) -> aws_sdk_batch::Client {
        let conf = aws_sdk_batch::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .credentials_provider(Credentials::new(key, secret, None, None, "flotilla-test"))
            .build();
        aws_sdk_batch::Client::from_conf(conf)
    }
}

/// A temporary directory jobs may write to: a root server's process-runtime jobs run as
/// `nobody`, who cannot enter a `tempfile::tempdir()` (mode 0700, owned by root).
pub fn job_writable_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777))
        .expect("chmod temp dir");
    dir
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self._tmp.is_some() {
            // A server running as root keeps its jobs' working directories beside the data
            // directory (`<data-dir>.work`), outside the temporary directory.
            let mut work = self.data_dir.clone().into_os_string();
            work.push(".work");
            let _ = std::fs::remove_dir_all(work);
        }
    }
}

/// The service error's code and message, or a panic naming what came back instead.
pub fn service_error<E, R>(
    r: Result<impl std::fmt::Debug, aws_sdk_batch::error::SdkError<E, R>>,
) -> (String, String)
where
    E: aws_sdk_batch::error::ProvideErrorMetadata + std::fmt::Debug,
    R: std::fmt::Debug,
{
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => match e.as_service_error() {
            Some(se) => (
                se.code().unwrap_or_default().to_string(),
                se.message().unwrap_or_default().to_string(),
            ),
            None => panic!("expected a service error, got {e:?}"),
        },
    }
}

/// Registers a minimal container job definition and returns its ARN.
pub async fn register_simple(client: &aws_sdk_batch::Client, name: &str) -> String {
    register_simple_retried(client, name, None).await
}

/// [`register_simple`] with a retry strategy.
pub async fn register_simple_retried(
    client: &aws_sdk_batch::Client,
    name: &str,
    retry: Option<aws_sdk_batch::types::RetryStrategy>,
) -> String {
    use aws_sdk_batch::types::*;
    client
        .register_job_definition()
        .job_definition_name(name)
        .r#type(JobDefinitionType::Container)
        .container_properties(
            ContainerProperties::builder()
                .image("busybox")
                .command("true")
                .resource_requirements(
                    ResourceRequirement::builder()
                        .r#type(ResourceType::Vcpu)
                        .value("1")
                        .build(),
                )
                .resource_requirements(
                    ResourceRequirement::builder()
                        .r#type(ResourceType::Memory)
                        .value("64")
                        .build(),
                )
                .build(),
        )
        .set_retry_strategy(retry)
        .send()
        .await
        .expect("register job definition")
        .job_definition_arn
        .expect("jobDefinitionArn")
}

/// A response as it came off the wire.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// The `x-amzn-errortype` header.
    pub error_type: Option<String>,
    pub text: String,
}

impl RawResponse {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.text).unwrap_or(serde_json::Value::Null)
    }

    /// The `message` of an error body.
    pub fn message(&self) -> String {
        self.json()["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Asserts a 400 `ClientException` whose message names `field`.
    #[track_caller]
    pub fn assert_client_error(&self, field: &str) {
        assert_eq!(
            self.status, 400,
            "expected 400 naming {field:?}, got {self:?}"
        );
        assert_eq!(
            self.error_type.as_deref(),
            Some("ClientException"),
            "x-amzn-errortype of {self:?}"
        );
        assert_eq!(self.json()["__type"], "ClientException", "{self:?}");
        assert!(
            self.message().contains(field),
            "message {:?} does not name {field:?}",
            self.message()
        );
    }
}

/// HTTP straight to the server, for requests the SDK refuses to build and for checking headers.
#[derive(Clone)]
pub struct Raw {
    pub http: reqwest::Client,
    pub endpoint: String,
    /// `None`: send unsigned.
    pub credentials: Option<(String, String)>,
}

impl Raw {
    pub fn unsigned(&self) -> Raw {
        Raw {
            credentials: None,
            ..self.clone()
        }
    }

    /// POSTs a JSON document to `/v1/<op in lower case>`, signed now.
    pub async fn post(&self, op: &str, body: &serde_json::Value) -> RawResponse {
        let bytes = serde_json::to_vec(body).expect("encode body");
        self.post_bytes(op, bytes).await
    }

    /// POSTs raw bytes as `application/json` to `/v1/<op in lower case>`, signed now.
    pub async fn post_bytes(&self, op: &str, body: Vec<u8>) -> RawResponse {
        let path = format!("/v1/{}", op.to_ascii_lowercase());
        self.send("POST", &path, Some("application/json"), body)
            .await
    }

    /// Sends a request signed now (when this client has credentials).
    pub async fn send(
        &self,
        method: &str,
        path_and_query: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> RawResponse {
        let headers = self.headers(
            method,
            path_and_query,
            content_type,
            &body,
            std::time::SystemTime::now(),
        );
        self.send_with_headers(method, path_and_query, headers, body)
            .await
    }

    /// The headers of a request: `host`, `content-type` and, with credentials, the SigV4
    /// signature made at `at`.
    pub fn headers(
        &self,
        method: &str,
        path_and_query: &str,
        content_type: Option<&str>,
        body: &[u8],
        at: std::time::SystemTime,
    ) -> http::HeaderMap {
        let method = http::Method::from_bytes(method.as_bytes()).expect("method");
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let host = self.endpoint.trim_start_matches("http://").to_string();
        let mut headers = http::HeaderMap::new();
        headers.insert("host", host.parse().expect("host header"));
        if let Some(ct) = content_type {
            headers.insert("content-type", ct.parse().expect("content-type header"));
        }
        if let Some((key, secret)) = &self.credentials {
            flotilla::api::sigv4::sign(
                &method,
                path,
                query,
                &mut headers,
                body,
                key,
                secret,
                "us-east-1",
                "batch",
                at,
            );
        }
        headers
    }

    /// Sends a request with exactly these headers.
    pub async fn send_with_headers(
        &self,
        method: &str,
        path_and_query: &str,
        headers: http::HeaderMap,
        body: Vec<u8>,
    ) -> RawResponse {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let resp = self
            .http
            .request(method, format!("{}{path_and_query}", self.endpoint))
            .headers(headers)
            .body(body)
            .send()
            .await
            .expect("HTTP request to the server");
        let status = resp.status().as_u16();
        let error_type = resp
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = resp.text().await.expect("response body");
        RawResponse {
            status,
            error_type,
            text,
        }
    }

    /// `GET /healthz`'s status.
    pub async fn health(&self) -> u16 {
        self.http
            .get(format!("{}/healthz", self.endpoint))
            .send()
            .await
            .expect("GET /healthz")
            .status()
            .as_u16()
    }
}

/// A PostgreSQL database of its own for one test, dropped (with its connections) at the end.
pub struct PgDatabase {
    pub name: String,
    /// The URL of this database.
    pub url: String,
    admin_url: String,
}

impl PgDatabase {
    /// Creates `t_<uuid>` on the server of [`postgres_url`] with `psql`.
    pub fn create() -> PgDatabase {
        let admin_url = postgres_url();
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        psql(&admin_url, &format!("CREATE DATABASE {name}"));
        let url = with_database(&admin_url, &name);
        PgDatabase {
            name,
            url,
            admin_url,
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .arg(&self.admin_url)
            .args(["-X", "-q", "-c"])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn psql(url: &str, sql: &str) {
    let out = Command::new("psql")
        .arg(url)
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("run psql (is the PostgreSQL client installed?)");
    assert!(
        out.status.success(),
        "psql {sql:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `url` with its database (the path) replaced by `db`, keeping any query string.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let authority_end = base[scheme_end..]
        .find('/')
        .map(|i| scheme_end + i)
        .unwrap_or(base.len());
    let mut out = format!("{}/{db}", &base[..authority_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Creates a MANAGED compute environment of type LOCAL and returns its ARN.
pub async fn create_local_ce(client: &aws_sdk_batch::Client, name: &str) -> String {
    // DISABLED: control-plane tests keep their jobs waiting (see `ServerOptions::dispatch`).
    create_local_ce_in_state(client, name, Some(aws_sdk_batch::types::CeState::Disabled)).await
}

/// Creates a LOCAL compute environment (4 vCPUs); `state: None` leaves the server's default.
pub async fn create_local_ce_in_state(
    client: &aws_sdk_batch::Client,
    name: &str,
    state: Option<aws_sdk_batch::types::CeState>,
) -> String {
    use aws_sdk_batch::types::*;
    client
        .create_compute_environment()
        .compute_environment_name(name)
        .r#type(CeType::Managed)
        .set_state(state)
        .compute_resources(
            ComputeResource::builder()
                .r#type(CrType::from("LOCAL"))
                .maxv_cpus(4)
                .build(),
        )
        .send()
        .await
        .expect("create compute environment")
        .compute_environment_arn
        .expect("computeEnvironmentArn")
}

/// Creates an ENABLED FIFO queue over `ce` and returns its ARN.
pub async fn create_queue(client: &aws_sdk_batch::Client, name: &str, ce: &str) -> String {
    use aws_sdk_batch::types::*;
    client
        .create_job_queue()
        .job_queue_name(name)
        .priority(1)
        .compute_environment_order(
            ComputeEnvironmentOrder::builder()
                .order(1)
                .compute_environment(ce)
                .build(),
        )
        .send()
        .await
        .expect("create job queue")
        .job_queue_arn
        .expect("jobQueueArn")
}

/// Submits a plain job to `queue` with definition `jd` and returns its ID.
pub async fn submit(client: &aws_sdk_batch::Client, name: &str, queue: &str, jd: &str) -> String {
    client
        .submit_job()
        .job_name(name)
        .job_queue(queue)
        .job_definition(jd)
        .send()
        .await
        .expect("submit job")
        .job_id
        .expect("jobId")
}

/// DescribeJobs for one job.
pub async fn describe_job(
    client: &aws_sdk_batch::Client,
    id: &str,
) -> aws_sdk_batch::types::JobDetail {
    let mut jobs = client
        .describe_jobs()
        .jobs(id)
        .send()
        .await
        .expect("describe jobs")
        .jobs
        .unwrap_or_default();
    assert_eq!(jobs.len(), 1, "job {id} not found");
    jobs.remove(0)
}

/// Builds the `flotilla-test/busybox:latest` image (a `docker import` of Debian's busybox-static)
/// unless it exists. Fails, never skips, when Docker is unreachable.
pub fn ensure_test_image() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/test-image.sh");
        let st = Command::new("bash")
            .arg(script)
            .status()
            .expect("run scripts/test-image.sh");
        assert!(
            st.success(),
            "scripts/test-image.sh failed: is Docker running?"
        );
    });
}

/// A CloudWatch Logs client for the server's endpoint.
pub fn logs_client(server: &Server) -> aws_sdk_cloudwatchlogs::Client {
    let conf = aws_sdk_cloudwatchlogs::Config::builder()
        .behavior_version(aws_sdk_cloudwatchlogs::config::BehaviorVersion::latest())
        .region(aws_sdk_cloudwatchlogs::config::Region::new("us-east-1"))
        .endpoint_url(&server.endpoint)
        .credentials_provider(aws_sdk_cloudwatchlogs::config::Credentials::new(
            ACCESS_KEY,
            SECRET_KEY,
            None,
            None,
            "flotilla-test",
        ))
        .build();
    aws_sdk_cloudwatchlogs::Client::from_conf(conf)
}

/// Every message of a log stream, read forward with tokens to the end.
pub async fn read_log(logs: &aws_sdk_cloudwatchlogs::Client, stream: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = logs
            .get_log_events()
            .log_group_name("/aws/batch/job")
            .log_stream_name(stream)
            .start_from_head(true)
            .set_next_token(token.clone())
            .send()
            .await
            .expect("GetLogEvents");
        out.extend(
            page.events
                .unwrap_or_default()
                .into_iter()
                .filter_map(|e| e.message),
        );
        if page.next_forward_token.is_none() || page.next_forward_token == token {
            return out;
        }
        token = page.next_forward_token;
    }
}

/// Runs the `flotilla` CLI against `server` and returns (exit success, stdout, stderr).
pub fn cli(server: &Server, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(args)
        .env("FLOTILLA_ENDPOINT_URL", &server.endpoint)
        .env("FLOTILLA_ACCESS_KEY_ID", ACCESS_KEY)
        .env("FLOTILLA_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .expect("run flotilla cli");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls DescribeJobs until the job reaches one of `want`; panics with its status and reason
/// after `secs`.
pub async fn wait_for(
    client: &aws_sdk_batch::Client,
    id: &str,
    want: &[aws_sdk_batch::types::JobStatus],
    secs: u64,
) -> aws_sdk_batch::types::JobDetail {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let j = describe_job(client, id).await;
        if j.status.as_ref().is_some_and(|s| want.contains(s)) {
            return j;
        }
        if Instant::now() > deadline {
            panic!(
                "job {id} did not reach {want:?} within {secs} s; it is {:?}: {:?}",
                j.status, j.status_reason
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the job is SUCCEEDED or FAILED.
pub async fn wait_final(
    client: &aws_sdk_batch::Client,
    id: &str,
    secs: u64,
) -> aws_sdk_batch::types::JobDetail {
    use aws_sdk_batch::types::JobStatus;
    wait_for(client, id, &[JobStatus::Succeeded, JobStatus::Failed], secs).await
}

/// Signs in to the server's web console over plain HTTP: a client that follows no redirect and
/// the session cookie to send with it.
pub async fn console_session(server: &Server) -> (reqwest::Client, String) {
    let http = console_http();
    let r = http
        .post(format!("{}/console/login", server.endpoint))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", &server.endpoint)
        .body(format!(
            "access_key_id={ACCESS_KEY}&secret_access_key={SECRET_KEY}"
        ))
        .send()
        .await
        .expect("console sign-in");
    assert_eq!(r.status(), 303, "console sign-in");
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_string();
    (http, cookie)
}

/// A console page's HTML, with the session of [`console_session`].
pub async fn console_page(
    server: &Server,
    session: &(reqwest::Client, String),
    path: &str,
) -> String {
    session
        .0
        .get(format!("{}{path}", server.endpoint))
        .header("cookie", &session.1)
        .send()
        .await
        .expect("console page")
        .text()
        .await
        .unwrap()
}

/// An HTTP client for the console's pages and forms: redirects are answers to check, not to
/// follow.
pub fn console_http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap()
}
