//! SigV4 on the wire: every authentication failure is a 403 with AWS's error name in
//! `x-amzn-errortype`, and the server refuses to run unauthenticated off loopback.

mod common;

use common::*;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

const BODY: &[u8] = b"{}";
const PATH: &str = "/v1/describejobqueues";

#[track_caller]
fn assert_auth_error(r: &RawResponse, error_type: &str) {
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.error_type.as_deref(), Some(error_type), "{r:?}");
    assert_eq!(r.json()["__type"], error_type, "{r:?}");
}

#[tokio::test]
async fn missing_and_malformed_authorization() {
    let server = Server::start();
    let raw = server.raw();

    // Signed: fine.
    assert_eq!(
        raw.send("POST", PATH, Some("application/json"), BODY.to_vec())
            .await
            .status,
        200
    );

    // No Authorization header at all.
    let r = raw
        .unsigned()
        .send("POST", PATH, Some("application/json"), BODY.to_vec())
        .await;
    assert_auth_error(&r, "MissingAuthenticationTokenException");
    // Also for the tag routes and GETs.
    let r = raw
        .unsigned()
        .send(
            "GET",
            "/v1/tags/arn%3Aaws%3Abatch%3Aus-east-1%3A000000000000%3Ajob-queue%2Fdefault",
            None,
            vec![],
        )
        .await;
    assert_auth_error(&r, "MissingAuthenticationTokenException");

    // Malformed Authorization headers.
    for auth in [
        "AWS4-HMAC-SHA256 garbage",
        "AWS4-HMAC-SHA256 Credential=AKIDFLOTILLATEST/20240101/us-east-1/batch/aws4_request",
        "AWS4-HMAC-SHA256 Credential=AKIDFLOTILLATEST, SignedHeaders=host, Signature=00",
        "Basic dXNlcjpwYXNz",
    ] {
        let mut headers = raw.headers(
            "POST",
            PATH,
            Some("application/json"),
            BODY,
            SystemTime::now(),
        );
        headers.insert("authorization", auth.parse().unwrap());
        let r = raw
            .send_with_headers("POST", PATH, headers, BODY.to_vec())
            .await;
        assert_auth_error(&r, "IncompleteSignatureException");
    }
}

#[tokio::test]
async fn unknown_key_and_wrong_secret_through_the_sdk() {
    let server = Server::start();

    let (code, _) = service_error(
        server
            .client_with("AKIDSOMEONEELSE", SECRET_KEY)
            .describe_job_queues()
            .send()
            .await,
    );
    assert_eq!(code, "UnrecognizedClientException");
    let (code, msg) = service_error(
        server
            .client_with(ACCESS_KEY, "not-the-secret")
            .describe_job_queues()
            .send()
            .await,
    );
    assert_eq!(code, "InvalidSignatureException");
    assert!(msg.contains("signature"), "{msg}");

    // Both are 403 on the wire, and a write through them changes nothing.
    let err = server
        .client_with(ACCESS_KEY, "not-the-secret")
        .register_job_definition()
        .job_definition_name("sneaky")
        .r#type(aws_sdk_batch::types::JobDefinitionType::Container)
        .container_properties(
            aws_sdk_batch::types::ContainerProperties::builder()
                .image("x")
                .build(),
        )
        .send()
        .await
        .expect_err("refused");
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(403));
    let defs = server
        .client()
        .describe_job_definitions()
        .send()
        .await
        .expect("describe")
        .job_definitions
        .unwrap_or_default();
    assert!(defs.is_empty(), "{defs:?}");

    // The right pair works.
    server
        .client()
        .describe_job_queues()
        .send()
        .await
        .expect("signed by the SDK");

    // Raw: another key, and a body changed after signing.
    let mut other = server.raw();
    other.credentials = Some(("AKIDSOMEONEELSE".into(), SECRET_KEY.into()));
    assert_auth_error(
        &other
            .send("POST", PATH, Some("application/json"), BODY.to_vec())
            .await,
        "UnrecognizedClientException",
    );
    let raw = server.raw();
    let headers = raw.headers(
        "POST",
        PATH,
        Some("application/json"),
        b"{}",
        SystemTime::now(),
    );
    let r = raw
        .send_with_headers(
            "POST",
            PATH,
            headers,
            br#"{"jobQueues":["default"]}"#.to_vec(),
        )
        .await;
    assert_auth_error(&r, "InvalidSignatureException");
}

#[tokio::test]
async fn signing_time_must_be_within_fifteen_minutes() {
    let server = Server::start();
    let raw = server.raw();
    let min = |m: u64| Duration::from_secs(m * 60);
    let signed_at = |at: SystemTime| {
        let raw = raw.clone();
        async move {
            let headers = raw.headers("POST", PATH, Some("application/json"), BODY, at);
            raw.send_with_headers("POST", PATH, headers, BODY.to_vec())
                .await
        }
    };

    let r = signed_at(SystemTime::now() - min(16)).await;
    assert_auth_error(&r, "InvalidSignatureException");
    assert!(r.message().contains("Signature expired"), "{r:?}");

    let r = signed_at(SystemTime::now() + min(16)).await;
    assert_auth_error(&r, "InvalidSignatureException");
    assert!(r.message().contains("not yet current"), "{r:?}");

    for at in [SystemTime::now() - min(14), SystemTime::now() + min(14)] {
        let r = signed_at(at).await;
        assert_eq!(r.status, 200, "{r:?}");
    }
}

/// Environment variables that would configure the server behind the test's back.
const FLOTILLA_ENV: &[&str] = &[
    "FLOTILLA_ACCESS_KEY_ID",
    "FLOTILLA_SECRET_ACCESS_KEY",
    "FLOTILLA_LISTEN",
    "FLOTILLA_DATA_DIR",
    "FLOTILLA_DATABASE_URL",
];

#[test]
fn refuses_to_listen_off_loopback_without_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flotilla"));
    cmd.args(["server", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for v in FLOTILLA_ENV {
        cmd.env_remove(v);
    }
    let mut child = cmd.spawn().expect("spawn flotilla");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("flotilla kept running on 0.0.0.0 without credentials");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success(), "exit status {status}");
    assert!(!stdout.contains("listening"), "it listened: {stdout}");
    assert!(
        stderr.contains("credentials") && stderr.contains("0.0.0.0"),
        "the error should say why: {stderr}"
    );
}

#[tokio::test]
async fn runs_unauthenticated_on_loopback() {
    let server = Server::start_with(ServerOptions {
        auth: false,
        ..Default::default()
    });
    let raw = server.raw();
    assert!(raw.credentials.is_none());
    let r = raw
        .send("POST", PATH, Some("application/json"), BODY.to_vec())
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["jobQueues"][0]["jobQueueName"], "default");
    // The SDK (which always signs) works too, with any credentials.
    server
        .client_with("anything", "at-all")
        .describe_job_queues()
        .send()
        .await
        .expect("unauthenticated server accepts SDK requests");
}

#[tokio::test]
async fn credentials_file_in_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("credentials"),
        "# flotilla users\n[default]\naws_access_key_id = AKIDFROMFILE\naws_secret_access_key = file-secret\n\n\
         [ci]\nAWS_ACCESS_KEY_ID=AKIDCI\nAWS_SECRET_ACCESS_KEY=ci-secret\naws_session_token=ignored\n",
    )
    .unwrap();
    // No FLOTILLA_* credentials in the environment: only the file.
    let server = Server::start_in(
        dir,
        ServerOptions {
            auth: false,
            ..Default::default()
        },
    );
    for (key, secret) in [("AKIDFROMFILE", "file-secret"), ("AKIDCI", "ci-secret")] {
        server
            .client_with(key, secret)
            .describe_job_queues()
            .send()
            .await
            .unwrap_or_else(|e| panic!("{key} from the credentials file: {e:?}"));
    }
    let (code, _) = service_error(server.client().describe_job_queues().send().await);
    assert_eq!(code, "UnrecognizedClientException");
    let (code, _) = service_error(
        server
            .client_with("AKIDFROMFILE", "wrong")
            .describe_job_queues()
            .send()
            .await,
    );
    assert_eq!(code, "InvalidSignatureException");
    let r = server
        .raw()
        .send("POST", PATH, Some("application/json"), BODY.to_vec())
        .await;
    assert_auth_error(&r, "MissingAuthenticationTokenException");

    // With the environment's pair as well, both are accepted.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("credentials"),
        "[default]\naws_access_key_id = AKIDFROMFILE\naws_secret_access_key = file-secret\n",
    )
    .unwrap();
    let server = Server::start_in(dir, ServerOptions::default());
    server
        .client()
        .describe_job_queues()
        .send()
        .await
        .expect("env pair");
    server
        .client_with("AKIDFROMFILE", "file-secret")
        .describe_job_queues()
        .send()
        .await
        .expect("file pair");
}

/// A valid signature by a known key, scoped to the wrong region or the wrong service, is
/// refused, and a write through it changes nothing.
#[tokio::test]
async fn signatures_scoped_to_another_region_or_service_are_refused() {
    let server = Server::start();

    // The SDK, configured for eu-west-1, signs for eu-west-1.
    let conf = aws_sdk_batch::Config::builder()
        .behavior_version(aws_sdk_batch::config::BehaviorVersion::latest())
        .region(aws_sdk_batch::config::Region::new("eu-west-1"))
        .endpoint_url(&server.endpoint)
        .credentials_provider(aws_sdk_batch::config::Credentials::new(
            ACCESS_KEY, SECRET_KEY, None, None, "test",
        ))
        .build();
    let elsewhere = aws_sdk_batch::Client::from_conf(conf);
    let err = elsewhere
        .create_job_queue()
        .job_queue_name("from-eu-west-1")
        .priority(1)
        .compute_environment_order(
            aws_sdk_batch::types::ComputeEnvironmentOrder::builder()
                .order(1)
                .compute_environment("local")
                .build(),
        )
        .send()
        .await
        .expect_err("refused");
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(403));
    let (code, msg) = service_error::<_, _>(Err::<(), _>(err));
    assert_eq!(code, "InvalidSignatureException");
    assert!(
        msg.contains("us-east-1") && msg.contains("eu-west-1"),
        "{msg}"
    );
    let queues = server
        .client()
        .describe_job_queues()
        .job_queues("from-eu-west-1")
        .send()
        .await
        .expect("describe")
        .job_queues
        .unwrap_or_default();
    assert!(queues.is_empty(), "{queues:?}");

    // Signed for CloudWatch Logs (`logs`), sent to a Batch route.
    let raw = server.raw();
    let sign_for = |service: &str, path: &str, target: Option<&str>| {
        let mut headers = raw.unsigned().headers(
            "POST",
            path,
            Some("application/json"),
            BODY,
            SystemTime::now(),
        );
        if let Some(t) = target {
            headers.insert("x-amz-target", t.parse().unwrap());
        }
        flotilla::api::sigv4::sign(
            &http::Method::POST,
            path,
            "",
            &mut headers,
            BODY,
            ACCESS_KEY,
            SECRET_KEY,
            "us-east-1",
            service,
            SystemTime::now(),
        );
        headers
    };
    let r = raw
        .send_with_headers("POST", PATH, sign_for("logs", PATH, None), BODY.to_vec())
        .await;
    assert_auth_error(&r, "InvalidSignatureException");
    assert!(r.message().contains("'batch'"), "{r:?}");
    // And the reverse: signed for `batch`, sent to the Logs API.
    let target = Some("Logs_20140328.DescribeLogGroups");
    let r = raw
        .send_with_headers("POST", "/", sign_for("batch", "/", target), BODY.to_vec())
        .await;
    assert_auth_error(&r, "InvalidSignatureException");
    assert!(r.message().contains("'logs'"), "{r:?}");
    // The same requests scoped rightly are served.
    let r = raw
        .send_with_headers("POST", PATH, sign_for("batch", PATH, None), BODY.to_vec())
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = raw
        .send_with_headers("POST", "/", sign_for("logs", "/", target), BODY.to_vec())
        .await;
    assert_eq!(r.status, 200, "{r:?}");
}
