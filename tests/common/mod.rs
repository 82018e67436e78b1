//! Shared harness: a real `flotilla server` process on a free loopback port, and the official AWS
//! SDK for Rust Batch client pointed at it.
#![allow(dead_code)]

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
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            auth: true,
            database_url: None,
            no_defaults: false,
            extra_args: Vec::new(),
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
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let mut s = Self::spawn(&dir, &opts, "127.0.0.1:0");
        s._tmp = Some(tmp);
        s
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
            .env("RUST_LOG", "warn");
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
        self.kill();
        let listen = self.endpoint.trim_start_matches("http://").to_string();
        let opts = ServerOptions {
            auth: self.opts_auth,
            database_url: self.database_url.clone(),
            no_defaults: true,
            extra_args: self.extra_args.clone(),
        };
        let tmp = self._tmp.take();
        let mut fresh = Self::spawn(&self.data_dir, &opts, &listen);
        fresh._tmp = tmp;
        *self = fresh;
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

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The service error's code and message, or a panic naming what came back instead.
pub fn service_error<E, R>(r: Result<impl std::fmt::Debug, aws_sdk_batch::error::SdkError<E, R>>) -> (String, String)
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
        .send()
        .await
        .expect("register job definition")
        .job_definition_arn
        .expect("jobDefinitionArn")
}
