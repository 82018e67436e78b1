//! The API over TLS (`--tls-cert`/`--tls-key`): the AWS SDK, the AWS CLI and `flotilla` itself
//! talk to it given the CA; plain HTTP gets no answer; a slow handshake is cut at the
//! header-read deadline like a slow request head.

mod common;

use common::{ACCESS_KEY, SECRET_KEY, Server, ServerOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// A CA and a certificate it signed for 127.0.0.1, made with openssl in `dir`.
struct Certs {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

fn make_certs(dir: &Path) -> Certs {
    std::fs::write(
        dir.join("openssl.cnf"),
        "[req]\ndistinguished_name = dn\n[dn]\n\
         [ca]\nbasicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign\n\
         subjectKeyIdentifier = hash\n\
         [server]\nbasicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature\n\
         extendedKeyUsage = serverAuth\nsubjectAltName = IP:127.0.0.1\n",
    )
    .expect("write openssl.cnf");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec![
        "req",
        "-x509",
        "-config",
        "openssl.cnf",
        "-extensions",
        "ca",
    ];
    ca.extend(ec);
    ca.extend([
        "-days",
        "2",
        "-subj",
        "/CN=test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    openssl(dir, &ca);
    let mut csr = vec!["req", "-new", "-config", "openssl.cnf"];
    csr.extend(ec);
    csr.extend([
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    openssl(dir, &csr);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "openssl.cnf",
            "-extensions",
            "server",
            "-out",
            "server.crt",
        ],
    );
    Certs {
        ca: dir.join("ca.crt"),
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
    }
}

fn tls_server(certs: &Certs, extra: &[&str]) -> Server {
    let mut extra_args: Vec<String> = vec![
        "--tls-cert".into(),
        certs.cert.display().to_string(),
        "--tls-key".into(),
        certs.key.display().to_string(),
    ];
    extra_args.extend(extra.iter().map(|s| s.to_string()));
    let server = Server::start_with(ServerOptions {
        // The harness's own client speaks plain HTTP: nothing to hold.
        no_defaults: true,
        extra_args,
        ..ServerOptions::default()
    });
    assert!(
        server.endpoint.starts_with("https://127.0.0.1:"),
        "the server announced {}",
        server.endpoint
    );
    server
}

/// The official SDK, trusting only `ca` (the native roots are the default otherwise).
fn sdk_client(server: &Server, ca: Option<&Path>) -> aws_sdk_batch::Client {
    use aws_sdk_batch::config::{BehaviorVersion, Credentials, Region};
    use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
    let trust = match ca {
        Some(ca) => tls::TrustStore::empty().with_pem_certificate(std::fs::read(ca).unwrap()),
        None => tls::TrustStore::default(),
    };
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
        .tls_context(
            tls::TlsContext::builder()
                .with_trust_store(trust)
                .build()
                .unwrap(),
        )
        .build_https();
    let conf = aws_sdk_batch::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(&server.endpoint)
        .credentials_provider(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "t"))
        .retry_config(aws_sdk_batch::config::retry::RetryConfig::disabled())
        .http_client(http)
        .build();
    aws_sdk_batch::Client::from_conf(conf)
}

#[tokio::test]
async fn the_sdk_calls_the_api_over_tls_with_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let server = tls_server(&certs, &[]);

    let client = sdk_client(&server, Some(&certs.ca));
    let arn = common::register_simple(&client, "over-https").await;
    let described = client
        .describe_job_definitions()
        .job_definitions(&arn)
        .send()
        .await
        .expect("describe over https");
    assert_eq!(described.job_definitions().len(), 1);

    // The same call without the CA: the certificate is not trusted, nothing reaches the API.
    let untrusted = sdk_client(&server, None)
        .describe_job_definitions()
        .send()
        .await
        .expect_err("a client without the CA must not trust the server");
    assert!(
        untrusted.as_service_error().is_none(),
        "expected a TLS failure, got {untrusted:?}"
    );
}

fn flotilla_cli(server: &Server, ca_env: Option<&Path>, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flotilla"));
    cmd.args(["--endpoint-url", &server.endpoint])
        .args(args)
        .env("FLOTILLA_ACCESS_KEY_ID", ACCESS_KEY)
        .env("FLOTILLA_SECRET_ACCESS_KEY", SECRET_KEY)
        .env_remove("AWS_CA_BUNDLE")
        .env_remove("AWS_PROFILE");
    if let Some(ca) = ca_env {
        cmd.env("AWS_CA_BUNDLE", ca);
    }
    cmd.output().expect("run flotilla")
}

#[test]
fn the_cli_and_the_aws_cli_call_the_api_over_tls_with_a_ca_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let server = tls_server(&certs, &[]);
    let ca = certs.ca.display().to_string();

    let by_env = flotilla_cli(&server, Some(&certs.ca), &["queues"]);
    assert!(by_env.status.success(), "AWS_CA_BUNDLE: {by_env:?}");
    let by_flag = flotilla_cli(&server, None, &["queues", "--ca-bundle", &ca]);
    assert!(by_flag.status.success(), "--ca-bundle: {by_flag:?}");
    let without = flotilla_cli(&server, None, &["queues"]);
    assert!(!without.status.success(), "no CA: {without:?}");
    let not_pem = flotilla_cli(&server, None, &["queues", "--ca-bundle", "/dev/null"]);
    let stderr = String::from_utf8_lossy(&not_pem.stderr);
    assert!(
        !not_pem.status.success() && stderr.contains("--ca-bundle /dev/null"),
        "an empty bundle: {not_pem:?}"
    );

    let home = tempfile::tempdir().unwrap();
    let aws = Command::new("aws")
        .args([
            "batch",
            "describe-job-queues",
            "--endpoint-url",
            &server.endpoint,
        ])
        .args([
            "--region",
            "us-east-1",
            "--output",
            "json",
            "--ca-bundle",
            &ca,
        ])
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_CONFIG_FILE", home.path().join("config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            home.path().join("credentials"),
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("HOME", home.path())
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_CA_BUNDLE")
        .output()
        .expect("run aws");
    assert!(aws.status.success(), "aws --ca-bundle: {aws:?}");
    let out: serde_json::Value = serde_json::from_slice(&aws.stdout).expect("json");
    assert!(out["jobQueues"].is_array(), "{out}");
}

/// Reads until the peer closes or `until`; true when it closed.
async fn closed_by(stream: &mut TcpStream, until: Instant) -> (bool, Vec<u8>) {
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Err(_) => return (false, got),
            Ok(Ok(0)) | Ok(Err(_)) => return (true, got),
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
        }
    }
}

#[tokio::test]
async fn plain_http_to_the_tls_port_gets_no_http_answer() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let server = tls_server(&certs, &[]);
    let addr = server.endpoint.trim_start_matches("https://");
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(format!("GET /healthz HTTP/1.1\r\nhost: {addr}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let (closed, got) = closed_by(&mut stream, Instant::now() + Duration::from_secs(30)).await;
    assert!(closed, "the server kept a plain-HTTP connection open");
    assert!(
        !got.starts_with(b"HTTP/"),
        "plain HTTP was answered: {:?}",
        String::from_utf8_lossy(&got)
    );
}

#[tokio::test]
async fn a_slow_handshake_is_cut_at_the_header_deadline() {
    // A 1 s head deadline and a 120 s idle one: a close within the wait below can only come
    // from the head clock, which the handshake's first byte starts.
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let server = tls_server(
        &certs,
        &[
            "--header-timeout-seconds",
            "1",
            "--idle-timeout-seconds",
            "120",
        ],
    );
    let addr = server.endpoint.trim_start_matches("https://");
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // A handshake record announcing a 512-byte ClientHello, then one byte at a time.
    stream
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .expect("write");
    let until = Instant::now() + Duration::from_secs(60);
    let mut closed = false;
    while Instant::now() < until {
        let (c, _) = closed_by(&mut stream, Instant::now() + Duration::from_millis(500)).await;
        if c || stream.write_all(&[0]).await.is_err() {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "a dribbled ClientHello held the connection for 60 s"
    );

    // The server still answers a real client.
    let client = sdk_client(&server, Some(&certs.ca));
    client
        .describe_job_queues()
        .send()
        .await
        .expect("a real client after the slow one");
}

#[test]
fn tls_flags_go_together_and_need_pem() {
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let run = |args: &[&str]| {
        let data = tempfile::tempdir().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data.path())
            .args(args)
            .env_remove("FLOTILLA_TLS_CERT")
            .env_remove("FLOTILLA_TLS_KEY")
            .output()
            .expect("run flotilla server");
        assert!(!out.status.success(), "{args:?} started: {out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let cert = certs.cert.display().to_string();
    let key = certs.key.display().to_string();
    let alone = run(&["--tls-cert", &cert]);
    assert!(alone.contains("--tls-key"), "{alone}");
    let alone = run(&["--tls-key", &key]);
    assert!(alone.contains("--tls-cert"), "{alone}");
    // The key where the certificate should be, and the reverse.
    let swapped = run(&["--tls-cert", &key, "--tls-key", &cert]);
    assert!(swapped.contains("--tls-cert"), "{swapped}");
    let other = dir.path().join("other.key");
    openssl(
        dir.path(),
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "other.key",
        ],
    );
    let mismatched = run(&[
        "--tls-cert",
        &cert,
        "--tls-key",
        &other.display().to_string(),
    ]);
    assert!(mismatched.contains("not the certificate's"), "{mismatched}");
    let missing = run(&["--tls-cert", "/nonexistent.pem", "--tls-key", &key]);
    assert!(missing.contains("/nonexistent.pem"), "{missing}");
}
