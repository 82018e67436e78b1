//! What a LOCAL Docker container reaches at ECS's task-endpoint address, 169.254.170.2, as a
//! container on ECS does: its task metadata (`ECS_CONTAINER_METADATA_URI_V4`) and, with a job
//! role on a server with AWS access (the emulator), the role's credentials through the
//! container-credentials protocol, refreshed on request rather than frozen into the environment.
//! Both keep working for a container that runs through a restart of the server.

mod common;

use aws_sdk_batch::types::*;
use common::emulator::Emulator;
use common::*;
use serde_json::{Value, json};

const ROLE: &str = "arn:aws:iam::123456789012:role/flotilla-test-job";
const AGENT: &str = "http://169.254.170.2:";

fn docker_server(emu: Option<&Emulator>) -> Server {
    ensure_test_image();
    let mut args: Vec<String> = ["--local-runtime", "docker", "--kill-grace-seconds", "2"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if let Some(emu) = emu {
        args.extend(["--aws-endpoint-url".to_string(), emu.endpoint.clone()]);
    }
    Server::start_with(ServerOptions {
        extra_args: args,
        dispatch: true,
        ..Default::default()
    })
}

async fn register(s: &Server, name: &str, props: Value) {
    let mut props = props;
    props["image"] = json!("flotilla-test/busybox:latest");
    props["resourceRequirements"] =
        json!([{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "64"}]);
    let r = s
        .raw()
        .post(
            "RegisterJobDefinition",
            &json!({"jobDefinitionName": name, "type": "container", "containerProperties": props}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
}

async fn output(s: &Server, job: &JobDetail) -> Vec<String> {
    let stream = job
        .attempts
        .as_ref()
        .and_then(|a| a.first())
        .and_then(|a| a.container.as_ref())
        .and_then(|c| c.log_stream_name.clone())
        .expect("the attempt's log stream");
    read_log(&logs_client(s), &stream).await
}

fn task_arn(job: &JobDetail) -> String {
    job.attempts.as_ref().unwrap()[0]
        .container
        .as_ref()
        .and_then(|c| c.task_arn.clone())
        .expect("task arn")
}

fn parse(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_docker_job_reads_its_task_metadata_and_nothing_is_served_once_it_ends() {
    let s = docker_server(None);
    let script = r#"echo "$ECS_CONTAINER_METADATA_URI_V4"
busybox wget -q -O - "$ECS_CONTAINER_METADATA_URI_V4/task"; echo
busybox wget -q -O - "$ECS_CONTAINER_METADATA_URI_V4"; echo
busybox wget -q -O - "${ECS_CONTAINER_METADATA_URI_V4%/*}/not-my-task" 2>/dev/null || echo refused"#;
    register(&s, "meta", json!({"command": ["sh", "-c", script]})).await;
    let c = s.client();
    let id = submit(&c, "m", "default", "meta").await;
    let job = wait_final(&c, &id, 120).await;
    let lines = output(&s, &job).await;
    assert_eq!(job.status, Some(JobStatus::Succeeded), "{lines:?}");
    let uri = &lines[0];
    assert!(uri.starts_with(AGENT), "{uri}");

    let task = parse(&lines[1]);
    assert_eq!(task["TaskARN"], json!(task_arn(&job)), "{task}");
    assert_eq!(task["Family"], "meta");
    assert_eq!(task["Revision"], "1");
    assert_eq!(task["KnownStatus"], "RUNNING");
    assert_eq!(task["Limits"], json!({"CPU": 1.0, "Memory": 64}));
    assert_eq!(
        task["Containers"][0]["Labels"]["flotilla.job-id"],
        json!(id)
    );

    let container = parse(&lines[2]);
    assert_eq!(container["Limits"], json!({"CPU": 1024, "Memory": 64}));
    assert_eq!(container["Image"], "flotilla-test/busybox:latest");
    assert_eq!(
        container["Labels"]["com.amazonaws.ecs.task-arn"],
        json!(task_arn(&job))
    );
    assert_eq!(container["LogOptions"]["awslogs-group"], "/aws/batch/job");
    assert_eq!(
        container["LogOptions"]["awslogs-stream"],
        json!(
            job.attempts.as_ref().unwrap()[0]
                .container
                .as_ref()
                .unwrap()
                .log_stream_name
        )
    );
    // The id in the URL is the container's, and long: no other task's metadata is served.
    let docker_id = container["DockerId"].as_str().unwrap_or_default();
    assert_eq!(docker_id.len(), 64, "{container}");
    assert_eq!(lines[3], "refused");

    // The container is gone, and so is its metadata.
    let gone = reqwest::get(uri).await.expect("GET metadata").status();
    assert_eq!(gone, reqwest::StatusCode::NOT_FOUND);
}

/// What the job prints: the credentials URL, the credentials, a request without the token.
const FETCH_CREDENTIALS: &str = r#"echo "$AWS_CONTAINER_CREDENTIALS_FULL_URI"
busybox wget -q -O - --header "Authorization: $AWS_CONTAINER_AUTHORIZATION_TOKEN" "$AWS_CONTAINER_CREDENTIALS_FULL_URI"; echo
busybox wget -q -O - "$AWS_CONTAINER_CREDENTIALS_FULL_URI" 2>/dev/null || echo refused-without-token
env | grep -c '^AWS_SECRET_ACCESS_KEY=' || true"#;

/// Checks what [`FETCH_CREDENTIALS`] printed from `lines[at..]`: the role's credentials, served
/// at 169.254.170.2, and refused without the token; the credentials are the assumed role's.
async fn assert_role_credentials(emu: &Emulator, lines: &[String], at: usize) {
    assert!(lines[at].starts_with(AGENT), "{lines:?}");
    let creds = parse(&lines[at + 1]);
    assert_eq!(creds["RoleArn"], ROLE);
    assert_eq!(lines[at + 2], "refused-without-token", "{lines:?}");
    assert_eq!(
        lines[at + 3],
        "0",
        "static keys in the environment: {lines:?}"
    );
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(&emu.endpoint)
        .credentials_provider(aws_credential_types::Credentials::new(
            creds["AccessKeyId"].as_str().unwrap(),
            creds["SecretAccessKey"].as_str().unwrap(),
            creds["Token"].as_str().map(str::to_string),
            None,
            "job",
        ))
        .load()
        .await;
    let me = aws_sdk_sts::Client::new(&conf)
        .get_caller_identity()
        .send()
        .await
        .expect("GetCallerIdentity with the job's credentials");
    let arn = me.arn().unwrap_or_default();
    assert!(
        arn.starts_with("arn:aws:sts::123456789012:assumed-role/flotilla-test-job/flotilla-"),
        "{arn}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_docker_job_fetches_its_roles_credentials_from_169_254_170_2() {
    let emu = Emulator::start();
    let s = docker_server(Some(&emu));
    register(
        &s,
        "role",
        json!({"command": ["sh", "-c", FETCH_CREDENTIALS], "jobRoleArn": ROLE}),
    )
    .await;
    let c = s.client();
    let id = submit(&c, "r", "default", "role").await;
    let job = wait_final(&c, &id, 120).await;
    let lines = output(&s, &job).await;
    assert_eq!(job.status, Some(JobStatus::Succeeded), "{lines:?}");
    assert_role_credentials(&emu, &lines, 0).await;

    // A job without a role is told of no credentials at all.
    register(
        &s,
        "no-role",
        json!({"command": ["sh", "-c", "env | grep -c '^AWS_CONTAINER_CREDENTIALS\\|^AWS_SECRET' || true"]}),
    )
    .await;
    let id = submit(&c, "n", "default", "no-role").await;
    let job = wait_final(&c, &id, 120).await;
    assert_eq!(output(&s, &job).await, vec!["0".to_string()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn metadata_and_credentials_outlive_a_restart_of_the_server() {
    let emu = Emulator::start();
    let mut s = docker_server(Some(&emu));
    let shared = job_writable_tempdir();
    let script = format!(
        "echo started > /shared/started; while [ ! -f /shared/go ]; do sleep 0.2; done\n\
         busybox wget -q -O - \"$ECS_CONTAINER_METADATA_URI_V4/task\"; echo\n{FETCH_CREDENTIALS}"
    );
    register(
        &s,
        "long",
        json!({
            "command": ["sh", "-c", script],
            "jobRoleArn": ROLE,
            "volumes": [{"name": "shared", "host": {"sourcePath": shared.path()}}],
            "mountPoints": [{"sourceVolume": "shared", "containerPath": "/shared"}],
        }),
    )
    .await;
    let c = s.client();
    let id = submit(&c, "l", "default", "long").await;
    wait_for(&c, &id, &[JobStatus::Running], 120).await;
    let started = std::time::Instant::now();
    while !shared.path().join("started").exists() {
        assert!(started.elapsed().as_secs() < 60, "the job never started");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // No chance to hand anything over: the next process finds the container and serves it.
    s.kill();
    s.restart_with(false);
    std::fs::write(shared.path().join("go"), "").expect("go");
    let c = s.client();
    let job = wait_final(&c, &id, 120).await;
    let lines = output(&s, &job).await;
    assert_eq!(job.status, Some(JobStatus::Succeeded), "{lines:?}");
    let task = parse(&lines[0]);
    assert_eq!(task["TaskARN"], json!(task_arn(&job)), "{task}");
    assert_eq!(task["Limits"], json!({"CPU": 1.0, "Memory": 64}));
    assert_role_credentials(&emu, &lines, 1).await;
}
