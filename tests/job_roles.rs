//! `jobRoleArn` on a LOCAL compute environment: the server (with AWS access, here the emulator)
//! assumes the role and serves its credentials to that job alone through the container-credentials
//! protocol; the AWS CLI in the job reads S3 with them. A job without a role gets no credentials.

mod common;

use aws_sdk_batch::types::*;
use common::emulator::Emulator;
use common::*;
use serde_json::json;

const ROLE: &str = "arn:aws:iam::123456789012:role/flotilla-test-job";

/// A server driving the emulator whose LOCAL process runtime runs jobs as root: the AWS CLI
/// lives under /root here, where `nobody` cannot run it (isolation is job_isolation.rs's).
fn server(emu: &Emulator) -> Server {
    common::aws::start(emu, 60, &["--process-user", "root"])
}

async fn run(
    s: &Server,
    emu: &Emulator,
    name: &str,
    role: Option<&str>,
    script: &str,
) -> (JobDetail, Vec<String>) {
    let mut props = json!({
        "image": "flotilla-test/busybox:latest",
        "command": ["sh", "-c", script],
        "environment": [{"name": "AWS_ENDPOINT_URL", "value": emu.endpoint}],
        "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "64"}]
    });
    if let Some(r) = role {
        props["jobRoleArn"] = json!(r);
    }
    let r = s
        .raw()
        .post(
            "RegisterJobDefinition",
            &json!({"jobDefinitionName": name, "type": "container", "containerProperties": props}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let c = s.client();
    let id = submit(&c, name, "local-q", name).await;
    let job = wait_final(&c, &id, 120).await;
    let stream = job
        .attempts
        .as_ref()
        .and_then(|a| a.first())
        .and_then(|a| a.container.as_ref())
        .and_then(|c| c.log_stream_name.clone());
    let lines = match stream {
        Some(st) => read_log(&logs_client(s), &st).await,
        None => Vec::new(),
    };
    (job, lines)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_job_reads_s3_with_its_roles_credentials_and_a_job_without_one_has_none() {
    let emu = Emulator::start();
    let s = server(&emu);
    let c = s.client();
    let ce = create_local_ce_in_state(&c, "local", None).await;
    create_queue(&c, "local-q", &ce).await;
    // An object to read; moto takes unsigned path-style S3 requests.
    let http = reqwest::Client::new();
    for (url, body) in [
        (format!("{}/role-bucket", emu.endpoint), String::new()),
        (
            format!("{}/role-bucket/greeting.txt", emu.endpoint),
            "hello from s3\n".to_string(),
        ),
    ] {
        let r = http.put(&url).body(body).send().await.expect("put to s3");
        assert!(r.status().is_success(), "{url}: {}", r.status());
    }

    let script = "aws sts get-caller-identity --query Arn --output text; \
                  aws s3 cp s3://role-bucket/greeting.txt -; \
                  env | grep -c '^AWS_SECRET_ACCESS_KEY=' || true";
    let (job, lines) = run(&s, &emu, "with-role", Some(ROLE), script).await;
    assert_eq!(
        job.status,
        Some(JobStatus::Succeeded),
        "{:?} {lines:?}",
        job.status_reason
    );
    assert!(
        lines[0].starts_with("arn:aws:sts::123456789012:assumed-role/flotilla-test-job/flotilla-"),
        "the job's identity is not the assumed role: {lines:?}"
    );
    assert_eq!(lines[1], "hello from s3", "{lines:?}");
    // Served through the credentials endpoint, not as static keys in the environment.
    assert_eq!(lines[2], "0", "{lines:?}");

    let (job, lines) = run(
        &s,
        &emu,
        "without-role",
        None,
        "aws sts get-caller-identity 2>&1; env | grep '^AWS_CONTAINER' || true",
    )
    .await;
    assert_eq!(job.status, Some(JobStatus::Succeeded), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("Unable to locate credentials")),
        "a job without a role found credentials: {lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.starts_with("AWS_CONTAINER")),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_role_on_a_server_without_aws_access_fails_the_job_naming_it() {
    let s = Server::start_with(ServerOptions {
        extra_args: vec!["--local-runtime".into(), "process".into()],
        dispatch: true,
        ..Default::default()
    });
    let r = s
        .raw()
        .post(
            "RegisterJobDefinition",
            &json!({"jobDefinitionName": "role", "type": "container", "containerProperties": {
                "image": "flotilla-test/busybox:latest", "command": ["echo", "ran"],
                "jobRoleArn": ROLE,
                "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "64"}]
            }}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let c = s.client();
    let id = submit(&c, "role", "default", "role").await;
    let job = wait_final(&c, &id, 60).await;
    assert_eq!(job.status, Some(JobStatus::Failed));
    let reason = job.attempts.unwrap_or_default()[0]
        .container
        .as_ref()
        .and_then(|c| c.reason.clone())
        .unwrap_or_default();
    assert!(
        reason.starts_with("MISCONFIGURATION: containerProperties.jobRoleArn"),
        "{reason}"
    );
}
