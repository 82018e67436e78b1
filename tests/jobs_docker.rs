//! The same job semantics with the LOCAL runtime running Docker containers (a busybox image built
//! by `scripts/test-image.sh`), and images pulled from a registry the tests serve on loopback.

mod common;
#[path = "common/registry.rs"]
mod registry;

use aws_sdk_batch::types::*;
use common::*;

const IMAGE: &str = "flotilla-test/busybox:latest";

fn server() -> Server {
    server_pulling("never")
}

/// A Docker-runtime server with `--pull <pull>`.
fn server_pulling(pull: &str) -> Server {
    ensure_test_image();
    Server::start_with(ServerOptions {
        extra_args: vec![
            "--local-runtime".into(),
            "docker".into(),
            "--kill-grace-seconds".into(),
            "2".into(),
            "--pull".into(),
            pull.into(),
        ],
        dispatch: true,
        ..Default::default()
    })
}

async fn register(c: &aws_sdk_batch::Client, name: &str, image: &str, script: &str, attempts: i32) {
    c.register_job_definition()
        .job_definition_name(name)
        .r#type(JobDefinitionType::Container)
        .container_properties(
            ContainerProperties::builder()
                .image(image)
                .command("sh")
                .command("-c")
                .command(script)
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
        .retry_strategy(RetryStrategy::builder().attempts(attempts).build())
        .send()
        .await
        .expect("register");
}

fn stream(j: &JobDetail, attempt: usize) -> String {
    j.attempts.as_ref().expect("attempts")[attempt]
        .container
        .as_ref()
        .and_then(|c| c.log_stream_name.clone())
        .expect("logStreamName")
}

#[tokio::test]
async fn containers_run_with_environment_retries_and_logs() {
    let s = server();
    let c = s.client();
    register(&c, "greet", IMAGE, "echo hello $AWS_BATCH_JOB_ID attempt $AWS_BATCH_JOB_ATTEMPT index ${AWS_BATCH_JOB_ARRAY_INDEX:-none}; echo oops >&2; exit 3", 2).await;
    let id = c
        .submit_job()
        .job_name("g")
        .job_queue("default")
        .job_definition("greet")
        .send()
        .await
        .expect("submit")
        .job_id
        .expect("id");
    let j = wait_final(&c, &id, 120).await;
    assert_eq!(j.status, Some(JobStatus::Failed));
    let attempts = j.attempts.clone().unwrap_or_default();
    assert_eq!(
        attempts.len(),
        2,
        "exit 3 is retried once, then the job fails"
    );
    assert!(
        attempts
            .iter()
            .all(|a| a.container.as_ref().and_then(|c| c.exit_code) == Some(3))
    );
    let logs = logs_client(&s);
    let lines = read_log(&logs, &stream(&j, 1)).await;
    assert!(
        lines.contains(&format!("hello {id} attempt 2 index none")),
        "{lines:?}"
    );
    assert!(lines.contains(&"oops".to_string()), "{lines:?}");
    let (ok, out, err) = cli(&s, &["logs", &id]);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("hello {id} attempt 2")), "{out}");

    // An array whose children see their index, after a job they depend on.
    register(&c, "ok", IMAGE, "echo child $AWS_BATCH_JOB_ARRAY_INDEX", 1).await;
    let first = c
        .submit_job()
        .job_name("first")
        .job_queue("default")
        .job_definition("ok")
        .send()
        .await
        .expect("first")
        .job_id
        .expect("id");
    let arr = c
        .submit_job()
        .job_name("arr")
        .job_queue("default")
        .job_definition("ok")
        .array_properties(ArrayProperties::builder().size(3).build())
        .depends_on(JobDependency::builder().job_id(&first).build())
        .send()
        .await
        .expect("arr")
        .job_id
        .expect("id");
    let p = wait_final(&c, &arr, 120).await;
    assert_eq!(
        p.status,
        Some(JobStatus::Succeeded),
        "{:?}",
        p.status_reason
    );
    for i in 0..3 {
        let child = wait_final(&c, &format!("{arr}:{i}"), 120).await;
        assert_eq!(
            read_log(&logs, &stream(&child, 0)).await,
            vec![format!("child {i}")]
        );
    }
}

/// Removes the tags a test pulled, so that the next run pulls again.
struct PulledImages(Vec<String>);

impl Drop for PulledImages {
    fn drop(&mut self) {
        for image in &self.0 {
            // Untags only: the image's layers are the test image's own.
            let _ = std::process::Command::new("docker")
                .args(["image", "rm", image])
                .output();
        }
    }
}

fn present(image: &str) -> bool {
    std::process::Command::new("docker")
        .args(["image", "inspect", image])
        .output()
        .expect("docker image inspect")
        .status
        .success()
}

async fn submit(c: &aws_sdk_batch::Client, definition: &str) -> String {
    c.submit_job()
        .job_name("p")
        .job_queue("default")
        .job_definition(definition)
        .send()
        .await
        .expect("submit")
        .job_id
        .expect("id")
}

fn reasons(j: &JobDetail) -> Vec<String> {
    j.attempts
        .iter()
        .flatten()
        .map(|a| {
            a.container
                .as_ref()
                .and_then(|c| c.reason.clone())
                .unwrap_or_default()
        })
        .collect()
}

#[tokio::test]
async fn an_absent_image_is_pulled_from_the_registry() {
    let reg = registry::Registry::serve(IMAGE);
    let image = reg.image(&format!("pulled-{}", uuid::Uuid::new_v4().simple()));
    let _cleanup = PulledImages(vec![image.clone()]);
    assert!(!present(&image));
    let s = server_pulling("missing");
    let c = s.client();
    register(
        &c,
        "pulled",
        &image,
        "echo pulled and ran $AWS_BATCH_JOB_ATTEMPT; cat /etc/flotilla-registry",
        1,
    )
    .await;
    let id = submit(&c, "pulled").await;
    let j = wait_final(&c, &id, 120).await;
    assert_eq!(j.status, Some(JobStatus::Succeeded), "{:?}", reasons(&j));
    let lines = read_log(&logs_client(&s), &stream(&j, 0)).await;
    // The file only the registry's copy of the image has.
    assert_eq!(
        lines,
        vec!["pulled and ran 1".to_string(), reg.marker.clone()]
    );
    assert!(present(&image), "the pulled image stays in the engine");
    let pulls = reg.manifest_requests();
    assert!(pulls >= 1, "docker asked the registry for the manifest");

    // Present now: `missing` does not pull again.
    let again = submit(&c, "pulled").await;
    let j = wait_final(&c, &again, 120).await;
    assert_eq!(j.status, Some(JobStatus::Succeeded), "{:?}", reasons(&j));
    assert_eq!(reg.manifest_requests(), pulls);
}

#[tokio::test]
async fn pull_always_pulls_a_present_image() {
    let reg = registry::Registry::serve(IMAGE);
    let image = reg.image(&format!("always-{}", uuid::Uuid::new_v4().simple()));
    let _cleanup = PulledImages(vec![image.clone()]);
    let tagged = std::process::Command::new("docker")
        .args(["tag", IMAGE, &image])
        .status()
        .expect("docker tag");
    assert!(tagged.success());
    let s = server_pulling("always");
    let c = s.client();
    register(&c, "always", &image, "cat /etc/flotilla-registry", 1).await;
    let id = submit(&c, "always").await;
    let j = wait_final(&c, &id, 120).await;
    assert_eq!(j.status, Some(JobStatus::Succeeded), "{:?}", reasons(&j));
    assert!(
        reg.manifest_requests() >= 1,
        "--pull always asks the registry even when the image is present"
    );
    // The tag named the local test image; the job ran the registry's.
    let lines = read_log(&logs_client(&s), &stream(&j, 0)).await;
    assert_eq!(lines, vec![reg.marker.clone()]);
}

#[tokio::test]
async fn a_job_terminated_while_its_image_is_pulled_never_runs() {
    let reg = registry::Registry::serve_held(IMAGE);
    let image = reg.image(&format!("held-{}", uuid::Uuid::new_v4().simple()));
    let _cleanup = PulledImages(vec![image.clone()]);
    let s = server_pulling("missing");
    let c = s.client();
    register(&c, "held", &image, "echo ran", 1).await;
    let id = submit(&c, "held").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while reg.blob_requests() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the pull never reached the blobs"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    c.terminate_job()
        .job_id(&id)
        .reason("stopped during the pull")
        .send()
        .await
        .expect("terminate");
    reg.release();
    let j = wait_final(&c, &id, 120).await;
    assert_eq!(j.status, Some(JobStatus::Failed), "{:?}", reasons(&j));
    assert_eq!(j.status_reason.as_deref(), Some("stopped during the pull"));
    let why = reasons(&j);
    assert_eq!(why.len(), 1, "{why:?}");
    assert!(why[0].contains("stopped while image"), "{why:?}");
}

#[tokio::test]
async fn a_failed_pull_fails_the_attempt_as_on_aws() {
    // A port nobody listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let reg = registry::Registry::serve(IMAGE);
    let nowhere = format!("127.0.0.1:{port}/flotilla-test/busybox:gone");
    let unknown = format!("{}/flotilla-test/nothing-here:x", reg.addr);
    let _cleanup = PulledImages(vec![nowhere.clone(), unknown.clone()]);
    let s = server_pulling("missing");
    let c = s.client();
    register(&c, "nowhere", &nowhere, "true", 2).await;
    register(&c, "unknown", &unknown, "true", 1).await;
    let a = submit(&c, "nowhere").await;
    let b = submit(&c, "unknown").await;
    for (id, attempts) in [(a, 2), (b, 1)] {
        let j = wait_final(&c, &id, 120).await;
        assert_eq!(j.status, Some(JobStatus::Failed));
        let why = reasons(&j);
        assert_eq!(why.len(), attempts, "the retry strategy applies: {why:?}");
        for r in &why {
            assert!(r.starts_with("CannotPullContainerError: "), "{r}");
            // Docker's own words follow the code, not a placeholder.
            assert!(r.len() > "CannotPullContainerError: ".len() + 10, "{r}");
        }
        let status = j.status_reason.clone().unwrap_or_default();
        assert!(status.starts_with("CannotPullContainerError: "), "{status}");
    }
    assert!(
        reg.manifest_requests() >= 1,
        "the unknown image was asked for"
    );
}

#[tokio::test]
async fn pull_never_leaves_an_absent_image_absent() {
    let reg = registry::Registry::serve(IMAGE);
    let image = reg.image(&format!("never-{}", uuid::Uuid::new_v4().simple()));
    let _cleanup = PulledImages(vec![image.clone()]);
    let s = server_pulling("never");
    let c = s.client();
    register(&c, "ghost", &image, "true", 1).await;
    let id = submit(&c, "ghost").await;
    let j = wait_final(&c, &id, 120).await;
    assert_eq!(j.status, Some(JobStatus::Failed));
    let reason = reasons(&j).remove(0);
    assert!(
        reason.starts_with(&format!(
            "CannotPullContainerError: image {image} is not present locally and the server runs with --pull never"
        )),
        "{reason}"
    );
    assert_eq!(reg.manifest_requests(), 0);
    assert!(!present(&image));
}

/// Registers `name` running `image` with `repositoryCredentials` naming `secret`.
async fn register_private(c: &aws_sdk_batch::Client, name: &str, image: &str, secret: &str) {
    c.register_job_definition()
        .job_definition_name(name)
        .r#type(JobDefinitionType::Container)
        .container_properties(
            ContainerProperties::builder()
                .image(image)
                .command("cat")
                .command("/etc/flotilla-registry")
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
                .repository_credentials(
                    RepositoryCredentials::builder()
                        .credentials_parameter(secret)
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .expect("register");
}

#[tokio::test]
async fn a_private_image_is_pulled_with_its_repository_credentials() {
    const GOOD: &str = "arn:aws:secretsmanager:us-east-1:000000000000:secret:registry-AbCdEf";
    const WRONG: &str = "arn:aws:secretsmanager:us-east-1:000000000000:secret:wrong-AbCdEf";
    const MISSING: &str = "arn:aws:secretsmanager:us-east-1:000000000000:secret:absent-AbCdEf";
    let reg = registry::Registry::serve_private(IMAGE, "puller", "open-sesame");
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let image = reg.image(&format!("private-{tag}"));
    let _cleanup = PulledImages(vec![image.clone()]);
    ensure_test_image();
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::write(
        tmp.path().join("secrets.json"),
        serde_json::json!({
            GOOD: r#"{"username":"puller","password":"open-sesame"}"#,
            WRONG: r#"{"username":"puller","password":"guess"}"#,
        })
        .to_string(),
    )
    .expect("secrets file");
    let s = Server::start_in(
        tmp,
        ServerOptions {
            extra_args: vec![
                "--local-runtime".into(),
                "docker".into(),
                "--pull".into(),
                "missing".into(),
            ],
            dispatch: true,
            ..Default::default()
        },
    );
    let c = s.client();

    // A wrong password: Docker's refusal, as ECS reports a failed pull.
    register_private(&c, "wrong", &image, WRONG).await;
    let id = submit(&c, "wrong").await;
    let j = wait_final(&c, &id, 120).await;
    assert_eq!(j.status, Some(JobStatus::Failed));
    let reason = reasons(&j).remove(0);
    assert!(reason.starts_with("CannotPullContainerError:"), "{reason}");
    assert!(reg.refused() >= 1, "the registry saw the wrong login");
    assert!(!present(&image));

    // A secret that cannot be resolved: the job never pulls, and the reason names it.
    register_private(&c, "missing", &image, MISSING).await;
    let id = submit(&c, "missing").await;
    let j = wait_final(&c, &id, 120).await;
    assert_eq!(j.status, Some(JobStatus::Failed));
    let reason = reasons(&j).remove(0);
    assert!(
        reason.starts_with("CannotPullContainerError: unable to pull secrets or registry auth")
            && reason.contains("repositoryCredentials")
            && reason.contains(MISSING),
        "{reason}"
    );

    // The right one: pulled with it, and the job runs the registry's image.
    register_private(&c, "good", &image, GOOD).await;
    let id = submit(&c, "good").await;
    let j = wait_final(&c, &id, 120).await;
    assert_eq!(j.status, Some(JobStatus::Succeeded), "{:?}", reasons(&j));
    let lines = read_log(&logs_client(&s), &stream(&j, 0)).await;
    assert_eq!(lines, vec![reg.marker.clone()]);
    assert!(reg.manifest_requests() >= 1);
}

#[tokio::test]
async fn terminate_stops_a_running_container() {
    let s = server();
    let c = s.client();
    register(&c, "nap", IMAGE, "sleep 300", 3).await;
    let id = c
        .submit_job()
        .job_name("n")
        .job_queue("default")
        .job_definition("nap")
        .send()
        .await
        .expect("submit")
        .job_id
        .expect("id");
    wait_for(&c, &id, &[JobStatus::Running], 60).await;
    c.terminate_job()
        .job_id(&id)
        .reason("stop it")
        .send()
        .await
        .expect("terminate");
    let j = wait_final(&c, &id, 120).await;
    assert_eq!(j.status, Some(JobStatus::Failed));
    assert_eq!(j.status_reason.as_deref(), Some("stop it"));
    let attempts = j.attempts.unwrap_or_default();
    assert_eq!(attempts.len(), 1, "a terminated job is not retried");
    let code = attempts[0].container.as_ref().and_then(|c| c.exit_code);
    assert!(matches!(code, Some(143) | Some(137)), "{code:?}");
}

#[tokio::test]
async fn a_running_container_is_adopted_after_a_server_sigkill() {
    let mut s = server();
    let c = s.client();
    register(&c, "slow", IMAGE, "echo before; sleep 4; echo after", 1).await;
    let id = c
        .submit_job()
        .job_name("s")
        .job_queue("default")
        .job_definition("slow")
        .send()
        .await
        .expect("submit")
        .job_id
        .expect("id");
    wait_for(&c, &id, &[JobStatus::Running], 60).await;
    s.kill();
    s.restart();
    let c = s.client();
    let j = wait_final(&c, &id, 120).await;
    // Adopted, not restarted: one attempt, and its log has both lines.
    assert_eq!(
        j.status,
        Some(JobStatus::Succeeded),
        "{:?} {:?}",
        j.status_reason,
        j.attempts
    );
    assert_eq!(j.attempts.as_ref().map(|a| a.len()), Some(1));
    let lines = read_log(&logs_client(&s), &stream(&j, 0)).await;
    assert_eq!(lines, vec!["before".to_string(), "after".to_string()]);
}

/// Every container setting reaches the container: the job itself reports what it sees, and the
/// test reads that back from its log.
#[tokio::test]
async fn container_settings_reach_the_container() {
    let s = server();
    let c = s.client();
    let raw = s.raw();
    let shared = tempfile::tempdir().expect("tempdir");
    std::fs::write(shared.path().join("hello"), "from the host\n").unwrap();
    // Readable by the unprivileged user the job runs as.
    std::fs::set_permissions(
        shared.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let script = "echo uid=$(id -u); \
        echo shm=$(df -k /dev/shm | tail -1 | awk '{print $2}'); \
        echo scratch=$(df -k /scratch | tail -1 | awk '{print $2}'); \
        echo nofile=$(ulimit -n); \
        echo data=$(cat /data/hello); \
        if touch /rootfs-probe 2>/dev/null; then echo rootfs=writable; else echo rootfs=read-only; fi; \
        if touch /data/probe 2>/dev/null; then echo data=writable; else echo data=read-only; fi; \
        echo exec=$AWS_EXECUTION_ENV region=$AWS_REGION default=$AWS_DEFAULT_REGION; \
        echo array=${AWS_BATCH_JOB_ARRAY_INDEX:-none}/${AWS_BATCH_JOB_ARRAY_SIZE:-none}";
    let r = raw
        .post(
            "RegisterJobDefinition",
            &serde_json::json!({
                "jobDefinitionName": "settings",
                "type": "container",
                "containerProperties": {
                    "image": IMAGE,
                    "command": ["sh", "-c", script],
                    "resourceRequirements": [
                        {"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "64"}],
                    "user": "65534",
                    "readonlyRootFilesystem": true,
                    "volumes": [{"name": "shared", "host": {"sourcePath": shared.path()}}],
                    "mountPoints": [{"sourceVolume": "shared", "containerPath": "/data", "readOnly": true}],
                    "ulimits": [{"name": "nofile", "softLimit": 1234, "hardLimit": 2048}],
                    "linuxParameters": {
                        "sharedMemorySize": 96,
                        "tmpfs": [{"containerPath": "/scratch", "size": 8}]
                    }
                }
            }),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let id = c
        .submit_job()
        .job_name("settings")
        .job_queue("default")
        .job_definition("settings")
        .array_properties(ArrayProperties::builder().size(2).build())
        .send()
        .await
        .expect("submit")
        .job_id
        .expect("id");
    let logs = logs_client(&s);
    for i in 0..2 {
        let j = wait_final(&c, &format!("{id}:{i}"), 120).await;
        assert_eq!(
            j.status,
            Some(JobStatus::Succeeded),
            "{:?}",
            j.status_reason
        );
        let lines = read_log(&logs, &stream(&j, 0)).await;
        let want = [
            "uid=65534".to_string(),
            format!("shm={}", 96 * 1024),
            format!("scratch={}", 8 * 1024),
            "nofile=1234".into(),
            "data=from the host".into(),
            "rootfs=read-only".into(),
            "data=read-only".into(),
            "exec=AWS_ECS_EC2 region=us-east-1 default=us-east-1".into(),
            format!("array={i}/2"),
        ];
        assert_eq!(lines, want);
    }
}

/// What a LOCAL environment cannot do ends the attempt with a reason naming the member.
#[tokio::test]
async fn settings_a_local_environment_cannot_apply_are_named() {
    let s = server();
    let c = s.client();
    let raw = s.raw();
    let r = raw
        .post(
            "RegisterJobDefinition",
            &serde_json::json!({
                "jobDefinitionName": "efs",
                "type": "container",
                "containerProperties": {
                    "image": IMAGE,
                    "command": ["true"],
                    "resourceRequirements": [
                        {"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "64"}],
                    "volumes": [{"name": "e", "efsVolumeConfiguration": {"fileSystemId": "fs-1"}}],
                    "mountPoints": [{"sourceVolume": "e", "containerPath": "/efs"}]
                }
            }),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let id = c
        .submit_job()
        .job_name("efs")
        .job_queue("default")
        .job_definition("efs")
        .send()
        .await
        .expect("submit")
        .job_id
        .expect("id");
    let j = wait_final(&c, &id, 120).await;
    assert_eq!(j.status, Some(JobStatus::Failed));
    let reason = j.attempts.unwrap_or_default()[0]
        .container
        .as_ref()
        .and_then(|c| c.reason.clone())
        .unwrap_or_default();
    assert!(
        reason.starts_with("MISCONFIGURATION: containerProperties.volumes")
            && reason.contains("EFS"),
        "{reason}"
    );
}

/// The README's pipeline, its job definition read from the README, on an engine without the
/// image: it is pulled from a reachable registry (here one on loopback, named in the image).
#[test]
fn the_readme_pipeline_pulls_its_image() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let (_, rest) = readme
        .split_once("cat > step.json <<'EOF'\n")
        .expect("the README writes step.json");
    let (definition, _) = rest.split_once("\nEOF\n").expect("end of step.json");
    assert!(definition.contains("\"image\": \"busybox:latest\""));
    let reg = registry::Registry::serve(IMAGE);
    let image = reg.image(&format!("readme-{}", uuid::Uuid::new_v4().simple()));
    let _cleanup = PulledImages(vec![image.clone()]);
    assert!(!present(&image));
    let definition = definition.replace("busybox:latest", &image);
    let s = server_pulling("missing");
    let dir = tempfile::tempdir().expect("tempdir");
    let step = dir.path().join("step.json");
    std::fs::write(&step, definition).expect("write step.json");
    let step = step.to_str().expect("utf-8 path");
    let run = |args: &[&str]| {
        let (ok, out, err) = cli(&s, args);
        assert!(ok, "{args:?}: {err}");
        out.trim().to_string()
    };
    run(&["job-definitions", "register", step]);
    let base = ["submit", "--queue", "default", "--definition", "step"];
    let prep = run(&[
        &base[..],
        &["--name", "prepare", "--parameters", "what=prepare"],
    ]
    .concat());
    let fan = run(&[
        &base[..],
        &[
            "--name",
            "fan-out",
            "--array-size",
            "4",
            "--depends-on",
            &prep,
            "--parameters",
            "what=chunk",
        ],
    ]
    .concat());
    run(&[
        &base[..],
        &[
            "--name",
            "combine",
            "--depends-on",
            &fan,
            "--parameters",
            "what=combine",
            "--wait",
        ],
    ]
    .concat());
    assert_eq!(run(&["logs", &format!("{fan}:2")]), "chunk 2 on local");
    // The image the jobs ran is the registry's: it has the registry's file.
    let out = std::process::Command::new("docker")
        .args(["run", "--rm", &image, "cat", "/etc/flotilla-registry"])
        .output()
        .expect("docker run");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), reg.marker);
    assert!(present(&image));
}
