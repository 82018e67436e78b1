//! `containerProperties.secrets` on a LOCAL compute environment: resolved from the secrets file in
//! the data directory into the job's environment, on Docker and on the process runtime, or from
//! SSM Parameter Store and Secrets Manager (the emulator) on a server with AWS access, which also
//! pulls a private image with `repositoryCredentials` read from Secrets Manager; a secret that
//! cannot be resolved ends the attempt before the job runs, naming it.

mod common;
#[path = "common/registry.rs"]
#[allow(dead_code)]
mod registry;

use aws_sdk_batch::types::*;
use common::*;
use serde_json::json;

const SSM: &str = "arn:aws:ssm:us-east-1:000000000000:parameter/db/password";
const SM: &str = "arn:aws:secretsmanager:us-east-1:000000000000:secret:db-AbCdEf";

fn server(runtime: &str) -> Server {
    server_with(runtime, &[])
}

fn server_with(runtime: &str, extra: &[&str]) -> Server {
    if runtime == "docker" {
        ensure_test_image();
    }
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::write(
        tmp.path().join("secrets.json"),
        json!({
            SSM: "hunter2",
            SM: r#"{"token":"t0k3n"}"#,
        })
        .to_string(),
    )
    .expect("secrets file");
    Server::start_in(
        tmp,
        ServerOptions {
            extra_args: ["--local-runtime", runtime]
                .iter()
                .chain(extra)
                .map(|s| s.to_string())
                .collect(),
            dispatch: true,
            ..Default::default()
        },
    )
}

/// Registers `name` printing `$DB_PASSWORD $TOKEN`, with `secrets`, runs it and returns the job
/// and what it printed.
async fn run(s: &Server, name: &str, secrets: serde_json::Value) -> (JobDetail, Vec<String>) {
    let r = s
        .raw()
        .post(
            "RegisterJobDefinition",
            &json!({
                "jobDefinitionName": name,
                "type": "container",
                "containerProperties": {
                    "image": "flotilla-test/busybox:latest",
                    "command": ["sh", "-c", "echo \"$DB_PASSWORD $TOKEN\""],
                    "environment": [{"name": "TOKEN", "value": "plain-variable"}],
                    "resourceRequirements": [
                        {"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "64"}],
                    "secrets": secrets
                }
            }),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let c = s.client();
    let id = submit(&c, name, "default", name).await;
    let job = wait_final(&c, &id, 120).await;
    let stream = job
        .attempts
        .as_ref()
        .and_then(|a| a.first())
        .and_then(|a| a.container.as_ref().and_then(|c| c.log_stream_name.clone()));
    let lines = match stream {
        Some(st) => read_log(&logs_client(s), &st).await,
        None => Vec::new(),
    };
    (job, lines)
}

async fn secrets_reach_the_job(runtime: &str) {
    let s = server(runtime);
    let (job, lines) = run(
        &s,
        "with-secrets",
        json!([
            {"name": "DB_PASSWORD", "valueFrom": SSM},
            {"name": "TOKEN", "valueFrom": format!("{SM}:token::")}
        ]),
    )
    .await;
    assert_eq!(
        job.status,
        Some(JobStatus::Succeeded),
        "{:?}",
        job.status_reason
    );
    // The secret wins over the plain variable of the same name, as ECS injects it.
    assert_eq!(lines, vec!["hunter2 t0k3n".to_string()]);

    let (job, lines) = run(
        &s,
        "missing-secret",
        json!([
            {"name": "DB_PASSWORD", "valueFrom": SSM},
            {"name": "API_KEY", "valueFrom": "/not/in/the/file"}
        ]),
    )
    .await;
    assert_eq!(job.status, Some(JobStatus::Failed));
    let reason = job.attempts.unwrap_or_default()[0]
        .container
        .as_ref()
        .and_then(|c| c.reason.clone())
        .unwrap_or_default();
    assert!(
        reason.starts_with("ResourceInitializationError: unable to pull secrets")
            && reason.contains("API_KEY")
            && reason.contains("/not/in/the/file"),
        "{reason}"
    );
    assert!(
        lines.is_empty(),
        "the job ran without its secret: {lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_reach_a_docker_job_from_the_secrets_file() {
    secrets_reach_the_job("docker").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_reach_a_process_job_from_the_secrets_file() {
    secrets_reach_the_job("process").await;
}

async fn emulator_config(emu: &common::emulator::Emulator) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(&emu.endpoint)
        .credentials_provider(aws_credential_types::Credentials::for_tests())
        .load()
        .await
}

/// With AWS access the server reads secrets from AWS, not from its secrets file (which holds
/// other values for the same names here), and logs in to a private registry with a secret from
/// Secrets Manager.
#[tokio::test(flavor = "multi_thread")]
async fn secrets_and_registry_logins_come_from_aws_on_a_server_with_aws_access() {
    let emu = common::emulator::Emulator::start();
    let conf = emulator_config(&emu).await;
    let ssm = aws_sdk_ssm::Client::new(&conf);
    ssm.put_parameter()
        .name("/db/password")
        .value("from-ssm")
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .expect("put parameter");
    let sm = aws_sdk_secretsmanager::Client::new(&conf);
    let token = sm
        .create_secret()
        .name("db")
        .secret_string(r#"{"token":"from-secrets-manager"}"#)
        .send()
        .await
        .expect("create secret")
        .arn
        .expect("secret arn");
    let login = sm
        .create_secret()
        .name("registry")
        .secret_string(r#"{"username":"puller","password":"open-sesame"}"#)
        .send()
        .await
        .expect("create secret")
        .arn
        .expect("secret arn");

    let s = server_with(
        "docker",
        &["--aws-endpoint-url", &emu.endpoint, "--pull", "missing"],
    );
    let (job, lines) = run(
        &s,
        "from-aws",
        json!([
            {"name": "DB_PASSWORD", "valueFrom": "arn:aws:ssm:us-east-1:123456789012:parameter/db/password"},
            {"name": "TOKEN", "valueFrom": format!("{token}:token::")}
        ]),
    )
    .await;
    assert_eq!(
        job.status,
        Some(JobStatus::Succeeded),
        "{:?}",
        job.status_reason
    );
    assert_eq!(lines, vec!["from-ssm from-secrets-manager".to_string()]);

    // A parameter AWS does not have: SSM's own error, naming it.
    let (job, lines) = run(
        &s,
        "missing-in-aws",
        json!([{"name": "DB_PASSWORD", "valueFrom": "/not/there"}]),
    )
    .await;
    assert_eq!(job.status, Some(JobStatus::Failed));
    let reason = job.attempts.unwrap_or_default()[0]
        .container
        .as_ref()
        .and_then(|c| c.reason.clone())
        .unwrap_or_default();
    assert!(
        reason.starts_with("ResourceInitializationError: unable to pull secrets")
            && reason.contains("/not/there")
            && reason.contains("ParameterNotFound"),
        "{reason}"
    );
    assert!(lines.is_empty(), "{lines:?}");

    // A private image, pulled with the login from Secrets Manager.
    let reg =
        registry::Registry::serve_private("flotilla-test/busybox:latest", "puller", "open-sesame");
    let image = reg.image(&format!("aws-login-{}", uuid::Uuid::new_v4().simple()));
    let r = s
        .raw()
        .post(
            "RegisterJobDefinition",
            &json!({"jobDefinitionName": "private", "type": "container", "containerProperties": {
                "image": image,
                "command": ["cat", "/etc/flotilla-registry"],
                "repositoryCredentials": {"credentialsParameter": login},
                "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "64"}]
            }}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let c = s.client();
    let id = submit(&c, "private", "default", "private").await;
    let job = wait_final(&c, &id, 120).await;
    let _ = std::process::Command::new("docker")
        .args(["image", "rm", &image])
        .output();
    assert_eq!(job.status, Some(JobStatus::Succeeded), "{:?}", job.attempts);
    let stream = job.attempts.unwrap_or_default()[0]
        .container
        .as_ref()
        .and_then(|c| c.log_stream_name.clone())
        .expect("stream");
    assert_eq!(
        read_log(&logs_client(&s), &stream).await,
        vec![reg.marker.clone()]
    );
    assert!(
        reg.manifest_requests() >= 1,
        "pulled from the private registry"
    );
}
