//! A job of the process runtime cannot reach the server that runs it: not its database, its
//! credentials file, its environment (where its API secret came from), nor the process itself.
//! The suite runs as root, so these servers run as root too and their jobs, by default, as
//! `nobody`, which is the case the isolation is for.

mod common;

use aws_sdk_batch::types::*;
use common::*;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;

const FILE_SECRET: &str = "secret-from-the-credentials-file";

/// A root server on the process runtime whose data directory holds a credentials file and starts
/// out world-readable (as a careless operator might leave it).
fn server(extra: &[&str]) -> Server {
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::write(
        tmp.path().join("credentials"),
        format!("[file]\naws_access_key_id = AKIDFILE\naws_secret_access_key = {FILE_SECRET}\n"),
    )
    .expect("credentials file");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut args: Vec<String> = vec!["--local-runtime".into(), "process".into()];
    args.extend(extra.iter().map(|s| s.to_string()));
    Server::start_in(
        tmp,
        ServerOptions {
            extra_args: args,
            dispatch: true,
            ..Default::default()
        },
    )
}

/// Registers `name` as `sh -c script` with an optional `user`, runs it to its end and returns the
/// job and the lines it printed.
async fn run(s: &Server, name: &str, script: &str, user: Option<&str>) -> (JobDetail, Vec<String>) {
    let c = s.client();
    c.register_job_definition()
        .job_definition_name(name)
        .r#type(JobDefinitionType::Container)
        .container_properties(
            ContainerProperties::builder()
                .image("flotilla-test/busybox:latest")
                .command("sh")
                .command("-c")
                .command(script)
                .set_user(user.map(String::from))
                .resource_requirements(
                    ResourceRequirement::builder()
                        .r#type(ResourceType::Vcpu)
                        .value("1")
                        .build(),
                )
                .resource_requirements(
                    ResourceRequirement::builder()
                        .r#type(ResourceType::Memory)
                        .value("32")
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .expect("register");
    let id = submit(&c, name, "default", name).await;
    let job = wait_final(&c, &id, 60).await;
    let stream = job
        .container
        .as_ref()
        .and_then(|c| c.log_stream_name.clone())
        .unwrap_or_default();
    let lines = if stream.is_empty() {
        Vec::new()
    } else {
        read_log(&logs_client(s), &stream).await
    };
    (job, lines)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_process_job_cannot_read_the_servers_secrets_or_signal_it() {
    let s = server(&[]);
    let pid = s.child.id();
    let data = s.data_dir.display().to_string();
    let script = format!(
        r#"for f in /proc/{pid}/environ {data}/flotilla.db {data}/credentials; do
             if cat "$f" >/dev/null 2>&1; then echo "read $f"; else echo "denied $f"; fi
           done
           if kill -0 {pid} 2>/dev/null; then echo "signal allowed"; else echo "signal denied"; fi
           echo "uid $(id -u) gid $(id -g) groups $(id -G)"
           echo "home $HOME"
           touch "$HOME/written" && echo "home writable"
           env | sed 's/^/env /'"#
    );
    let (job, lines) = run(&s, "probe", &script, None).await;
    assert_eq!(
        job.status,
        Some(JobStatus::Succeeded),
        "{:?} {lines:?}",
        job.status_reason
    );
    for f in [
        format!("/proc/{pid}/environ"),
        format!("{data}/flotilla.db"),
        format!("{data}/credentials"),
    ] {
        assert!(
            lines.contains(&format!("denied {f}")),
            "the job could read {f}: {lines:?}"
        );
    }
    assert!(lines.contains(&"signal denied".to_string()), "{lines:?}");
    assert!(
        lines.contains(&"uid 65534 gid 65534 groups 65534".to_string()),
        "the job does not run as nobody without supplementary groups: {lines:?}"
    );
    let home = lines
        .iter()
        .find_map(|l| l.strip_prefix("home "))
        .expect("home line");
    assert!(
        !std::path::Path::new(home).starts_with(&s.data_dir),
        "the job's HOME {home} is inside the data directory"
    );
    assert!(lines.contains(&"home writable".to_string()), "{lines:?}");
    for l in lines.iter().filter(|l| l.starts_with("env ")) {
        assert!(
            !l.contains(SECRET_KEY) && !l.contains(FILE_SECRET) && !l.contains("FLOTILLA_"),
            "the job's environment has the server's: {l}"
        );
    }

    // The data directory was made the server's alone, and the API secret the server was started
    // with is gone from what the kernel shows of its environment, even to root.
    let mode = std::fs::metadata(&s.data_dir)
        .expect("data dir")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700, "data directory mode {mode:o}");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("read environ as root");
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        !environ.contains(SECRET_KEY),
        "the API secret is still in /proc/{pid}/environ"
    );
    // And the server still authenticates with it.
    s.client()
        .describe_job_queues()
        .send()
        .await
        .expect("signed request after the environment was scrubbed");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_definitions_user_and_the_process_user_are_honoured() {
    let s = server(&["--process-user", "daemon"]);
    let daemon = String::from_utf8(
        std::process::Command::new("id")
            .args(["-u", "daemon"])
            .output()
            .expect("id daemon")
            .stdout,
    )
    .expect("utf8");
    let (job, lines) = run(&s, "default-user", "echo uid $(id -u)", None).await;
    assert_eq!(
        job.status,
        Some(JobStatus::Succeeded),
        "{:?}",
        job.status_reason
    );
    assert_eq!(lines, vec![format!("uid {}", daemon.trim())]);

    let (job, lines) = run(
        &s,
        "own-user",
        "echo $(id -u):$(id -g); touch $HOME/f && echo writable",
        Some("1234:2345"),
    )
    .await;
    assert_eq!(
        job.status,
        Some(JobStatus::Succeeded),
        "{:?}",
        job.status_reason
    );
    assert_eq!(lines, vec!["1234:2345".to_string(), "writable".into()]);

    let (job, _) = run(&s, "no-such-user", "true", Some("no-such-user-here")).await;
    assert_eq!(job.status, Some(JobStatus::Failed));
    let reason = job
        .container
        .and_then(|c| c.reason)
        .or(job.status_reason)
        .unwrap_or_default();
    assert!(
        reason.contains("containerProperties.user") && reason.contains("no-such-user-here"),
        "{reason}"
    );
}

#[test]
fn a_process_user_that_does_not_exist_stops_the_server_with_a_clear_error() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--local-runtime",
            "process",
        ])
        .arg("--data-dir")
        .arg(tmp.path())
        .args(["--process-user", "no-such-user-here"])
        .env("RUST_LOG", "error")
        .output()
        .expect("run server");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--process-user no-such-user-here") && err.contains("no user named"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_run_as_another_user_keeps_its_ulimits_and_a_missing_command_says_so() {
    let s = server(&[]);
    let c = s.client();
    for (name, command) in [
        (
            "limits",
            json!(["sh", "-c", "echo $(id -u) $(ulimit -n) $(ulimit -Hn)"]),
        ),
        ("missing", json!(["no-such-command-here", "x"])),
    ] {
        let r = s
            .raw()
            .post(
                "RegisterJobDefinition",
                &json!({"jobDefinitionName": name, "type": "container", "containerProperties": {
                    "image": "flotilla-test/busybox:latest", "command": command,
                    "ulimits": [{"name": "nofile", "softLimit": 100, "hardLimit": 200}],
                    "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "32"}]
                }}),
            )
            .await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    let id = submit(&c, "limits", "default", "limits").await;
    let job = wait_final(&c, &id, 60).await;
    assert_eq!(
        job.status,
        Some(JobStatus::Succeeded),
        "{:?}",
        job.status_reason
    );
    let stream = job
        .container
        .and_then(|c| c.log_stream_name)
        .expect("stream");
    assert_eq!(
        read_log(&logs_client(&s), &stream).await,
        vec!["65534 100 200".to_string()]
    );

    let id = submit(&c, "missing", "default", "missing").await;
    let job = wait_final(&c, &id, 60).await;
    assert_eq!(job.status, Some(JobStatus::Failed));
    let reason = job.container.and_then(|c| c.reason).unwrap_or_default();
    assert!(
        reason.starts_with("CannotStartContainerError: no-such-command-here"),
        "{reason}"
    );
}
