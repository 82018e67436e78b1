//! `containerProperties.secrets` on a LOCAL compute environment: resolved from the secrets file in
//! the data directory into the job's environment, on Docker and on the process runtime; a secret
//! that cannot be resolved ends the attempt before the job runs, naming it.

mod common;

use aws_sdk_batch::types::*;
use common::*;
use serde_json::json;

const SSM: &str = "arn:aws:ssm:us-east-1:000000000000:parameter/db/password";
const SM: &str = "arn:aws:secretsmanager:us-east-1:000000000000:secret:db-AbCdEf";

fn server(runtime: &str) -> Server {
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
            extra_args: vec!["--local-runtime".into(), runtime.into()],
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
