//! The LOCAL runtimes against real processes and a real Docker daemon: the library directly (a
//! LogStore, a runtime, a channel), no server. Docker tests FAIL when the daemon is unreachable:
//! a green run must mean the Docker runtime was exercised.

use bollard::Docker;
use flotilla::compute::local::docker::{DockerRuntime, container_name};
use flotilla::compute::local::process::ProcessRuntime;
use flotilla::compute::local::{HOST_LOST_REASON, PullPolicy};
use flotilla::compute::{AttemptSpec, ExpectedAttempt, Runtime, RuntimeEvent, StopSignal, Target};
use flotilla::logs::{GetLogEvents, JOB_LOG_GROUP, LogStore};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Secrets from a (missing) secrets file: these attempts have none.
fn no_secrets(dir: &Path) -> Arc<flotilla::compute::local::secrets::SecretSource> {
    Arc::new(flotilla::compute::local::secrets::SecretSource::new(
        dir, None,
    ))
}

const IMAGE: &str = "flotilla-test/busybox:latest";
const EVENT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Process,
    Docker,
}

struct Harness {
    _dir: tempfile::TempDir,
    logs: Arc<LogStore>,
    rx: mpsc::Receiver<RuntimeEvent>,
    rt: Arc<dyn Runtime>,
    docker: Option<Docker>,
}

/// Builds the test image once per machine; concurrent test processes serialize on a lock file.
fn ensure_test_image() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/test-image.sh");
    let status = std::process::Command::new("flock")
        .arg(std::env::temp_dir().join("flotilla-test-image.lock"))
        .arg("bash")
        .arg(&script)
        .status()
        .expect("run scripts/test-image.sh (needs flock and bash)");
    assert!(
        status.success(),
        "scripts/test-image.sh failed ({status}): the Docker runtime tests need Docker and the test image"
    );
}

async fn harness(kind: Kind) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    harness_in(kind, dir).await
}

async fn harness_in(kind: Kind, dir: tempfile::TempDir) -> Harness {
    let logs = Arc::new(LogStore::open(dir.path().join("logs")).expect("log store"));
    let (tx, rx) = mpsc::channel(64);
    let (rt, docker): (Arc<dyn Runtime>, _) = match kind {
        Kind::Process => (
            Arc::new(
                ProcessRuntime::new(dir.path(), Default::default(), logs.clone(), tx)
                    .expect("process runtime"),
            ),
            None,
        ),
        Kind::Docker => {
            ensure_test_image();
            let rt = DockerRuntime::connect(
                dir.path(),
                PullPolicy::Never,
                no_secrets(dir.path()),
                logs.clone(),
                tx,
            )
            .await
            .expect("Docker must be reachable for these tests (is the daemon running?)");
            let docker = rt.docker().clone();
            (Arc::new(rt), Some(docker))
        }
    };
    Harness {
        _dir: dir,
        logs,
        rx,
        rt,
        docker,
    }
}

fn spec(kind: Kind, command: &[&str]) -> AttemptSpec {
    let task_id = uuid::Uuid::new_v4().to_string();
    AttemptSpec {
        job_id: uuid::Uuid::new_v4().to_string(),
        attempt: 1,
        log_stream: format!("test-def/default/{task_id}"),
        task_id,
        image: (kind == Kind::Docker).then(|| IMAGE.to_string()),
        command: command.iter().map(|s| s.to_string()).collect(),
        env: vec![
            ("FOO".into(), "bar".into()),
            ("WITH_SPACES".into(), "a b  c".into()),
            ("AWS_BATCH_JOB_ATTEMPT".into(), "1".into()),
        ],
        milli_vcpus: 500,
        memory_mib: 64,
        log_group: JOB_LOG_GROUP.into(),
        job_definition: "arn:aws:batch:us-east-1:000000000000:job-definition/test-def:1".into(),
        target: Target::Local,
        container: Default::default(),
        tags: Default::default(),
    }
}

async fn next_event(rx: &mut mpsc::Receiver<RuntimeEvent>) -> RuntimeEvent {
    tokio::time::timeout(EVENT_TIMEOUT, rx.recv())
        .await
        .expect("no runtime event within the timeout")
        .expect("event channel closed")
}

async fn expect_started(rx: &mut mpsc::Receiver<RuntimeEvent>, s: &AttemptSpec) {
    match next_event(rx).await {
        RuntimeEvent::Started {
            job_id,
            attempt,
            task_id,
        } => {
            assert_eq!(
                (job_id.as_str(), attempt, task_id.as_str()),
                (s.job_id.as_str(), s.attempt, s.task_id.as_str())
            );
        }
        other => panic!("expected Started, got {other:?}"),
    }
}

async fn expect_exited(
    rx: &mut mpsc::Receiver<RuntimeEvent>,
    s: &AttemptSpec,
) -> (Option<i32>, Option<String>) {
    match next_event(rx).await {
        RuntimeEvent::Exited {
            job_id,
            attempt,
            exit_code,
            reason,
        } => {
            assert_eq!((job_id.as_str(), attempt), (s.job_id.as_str(), s.attempt));
            (exit_code, reason)
        }
        other => panic!("expected Exited, got {other:?}"),
    }
}

/// Runs a command to its end and returns its exit code, reason and log lines.
async fn run(h: &mut Harness, s: AttemptSpec) -> (Option<i32>, Option<String>, Vec<String>) {
    h.rt.start(s.clone()).await.expect("start");
    expect_started(&mut h.rx, &s).await;
    let (code, reason) = expect_exited(&mut h.rx, &s).await;
    (code, reason, messages(&h.logs, &s.log_stream))
}

fn messages(logs: &LogStore, stream: &str) -> Vec<String> {
    let page = logs
        .get_log_events(
            JOB_LOG_GROUP,
            stream,
            &GetLogEvents {
                start_from_head: Some(true),
                ..Default::default()
            },
        )
        .expect("log stream exists");
    page.events.into_iter().map(|e| e.message).collect()
}

async fn container_exists(docker: &Docker, name: &str) -> bool {
    match docker.inspect_container(name, None).await {
        Ok(_) => true,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => false,
        Err(e) => panic!("inspect {name}: {e}"),
    }
}

// ---------------------------------------------------------------- shared scenarios

async fn exit_codes(kind: Kind) {
    let mut h = harness(kind).await;
    let (code, reason, _) = run(&mut h, spec(kind, &["true"])).await;
    assert_eq!((code, reason), (Some(0), None));
    let (code, reason, _) = run(&mut h, spec(kind, &["sh", "-c", "exit 3"])).await;
    assert_eq!((code, reason), (Some(3), None));
}

async fn output_lands_in_the_stream(kind: Kind) {
    let mut h = harness(kind).await;
    let before = flotilla::util::time::now_ms();
    let s = spec(
        kind,
        &[
            "sh",
            "-c",
            "echo out one; echo err one >&2; printf 'no newline at end'",
        ],
    );
    let (code, _, lines) = run(&mut h, s.clone()).await;
    assert_eq!(code, Some(0));
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        vec!["err one", "no newline at end", "out one"],
        "{lines:?}"
    );
    let page = h
        .logs
        .get_log_events(JOB_LOG_GROUP, &s.log_stream, &GetLogEvents::default())
        .expect("events");
    for e in &page.events {
        // Timestamped on arrival (Docker's clock for containers): within this test's run.
        assert!(
            e.timestamp >= before - 2_000 && e.timestamp <= flotilla::util::time::now_ms() + 2_000
        );
    }
}

async fn environment_is_the_spec(kind: Kind) {
    let mut h = harness(kind).await;
    let (code, _, lines) = run(&mut h, spec(kind, &["env"])).await;
    assert_eq!(code, Some(0));
    for want in ["FOO=bar", "WITH_SPACES=a b  c", "AWS_BATCH_JOB_ATTEMPT=1"] {
        assert!(
            lines.iter().any(|l| l == want),
            "{want} missing from {lines:?}"
        );
    }
    assert!(lines.iter().any(|l| l.starts_with("PATH=")), "{lines:?}");
    // The server's own environment does not leak in (cargo sets these for the test process).
    for (key, _) in std::env::vars() {
        if key.starts_with("CARGO_") || key.starts_with("RUST") {
            assert!(
                !lines.iter().any(|l| l.starts_with(&format!("{key}="))),
                "{key} leaked into the job: {lines:?}"
            );
        }
    }
}

async fn stop_signals(kind: Kind) {
    let mut h = harness(kind).await;
    for (signal, want) in [(StopSignal::Term, 143), (StopSignal::Kill, 137)] {
        let mut s = spec(kind, &["sleep", "300"]);
        // As on ECS, a container's first process ignores SIGTERM unless an init runs in front
        // of it (initProcessEnabled); ask for one so SIGTERM reaches `sleep`.
        s.container = std::sync::Arc::new(
            serde_json::from_value(
                serde_json::json!({"linuxParameters": {"initProcessEnabled": true}}),
            )
            .unwrap(),
        );
        h.rt.start(s.clone()).await.expect("start");
        expect_started(&mut h.rx, &s).await;
        // Give the command a moment to be exec'd (for Docker: behind its init).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t = Instant::now();
        h.rt.stop(&s.job_id, s.attempt, signal).await.expect("stop");
        let (code, reason) = expect_exited(&mut h.rx, &s).await;
        assert_eq!((code, reason), (Some(want), None), "{signal:?}");
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "{signal:?} took {:?}",
            t.elapsed()
        );
        // Stopping a finished or unknown attempt is not an error.
        h.rt.stop(&s.job_id, s.attempt, signal)
            .await
            .expect("stop again");
        h.rt.stop("no-such-job", 1, signal)
            .await
            .expect("stop unknown");
    }
}

// ---------------------------------------------------------------- process runtime

#[tokio::test]
async fn process_exit_codes() {
    exit_codes(Kind::Process).await;
}

#[tokio::test]
async fn process_output_lands_in_the_stream() {
    output_lands_in_the_stream(Kind::Process).await;
}

#[tokio::test]
async fn process_environment_is_the_spec() {
    environment_is_the_spec(Kind::Process).await;
}

/// A host process gets its working directory as HOME, never the server's.
#[tokio::test]
async fn process_home_is_the_attempt_s_own() {
    let mut h = harness(Kind::Process).await;
    let (code, _, lines) = run(
        &mut h,
        spec(Kind::Process, &["sh", "-c", "echo $HOME; pwd"]),
    )
    .await;
    assert_eq!(code, Some(0));
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0], lines[1], "HOME is the working directory");
    if let Ok(server_home) = std::env::var("HOME") {
        assert_ne!(lines[0], server_home);
    }
}

#[tokio::test]
async fn process_stop_signals_the_group() {
    stop_signals(Kind::Process).await;
}

#[tokio::test]
async fn process_missing_command_fails_readably() {
    let mut h = harness(Kind::Process).await;
    let s = spec(Kind::Process, &["flotilla-no-such-command-xyz", "arg"]);
    h.rt.start(s.clone()).await.expect("start returns Ok");
    let (code, reason) = expect_exited(&mut h.rx, &s).await;
    assert_eq!(code, None);
    let reason = reason.expect("reason");
    assert!(
        reason.starts_with("CannotStartContainerError: flotilla-no-such-command-xyz")
            && reason.contains("no such file"),
        "{reason}"
    );
}

/// The main process exits while a background child it started still holds the output pipe:
/// the attempt ends at once (the leftover is killed, like a container's), not after 300 s.
#[tokio::test]
async fn process_leftovers_die_with_the_main_process() {
    let mut h = harness(Kind::Process).await;
    let t = Instant::now();
    let s = spec(Kind::Process, &["sh", "-c", "sleep 300 & echo $!"]);
    let (code, _, lines) = run(&mut h, s).await;
    assert_eq!(code, Some(0));
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t.elapsed()
    );
    let pid: i32 = lines[0].trim().parse().expect("pid printed");
    assert!(
        wait_dead(pid, Duration::from_secs(10)),
        "background sleep {pid} survived"
    );
}

/// Whether `pid` is gone or a zombie (dead, not yet reaped by its parent).
fn is_dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

fn wait_dead(pid: i32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if is_dead(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The attempt's record as the process runtime's journal (`run/journal`, JSON lines of `put`
/// and `del`) last left it, if it is still live.
fn live_run_record(data: &std::path::Path, task_id: &str) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(data.join("run").join("journal")).ok()?;
    let mut live = None;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        if v["task_id"] == task_id {
            live = (v["op"] == "put").then_some(v);
        }
    }
    live
}

/// A server "crash": the first runtime lives in a tokio runtime that is torn down without any
/// clean-up while its attempt runs. A new runtime on the same data dir must kill the orphaned
/// process group (so nothing runs twice) and report the attempt lost.
#[test]
fn process_recover_kills_and_reports_orphans() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_path_buf();
    let s = spec(Kind::Process, &["sh", "-c", "sleep 300 & sleep 300"]);
    let first = tokio::runtime::Runtime::new().expect("tokio");
    let pid = first.block_on(async {
        let logs = Arc::new(LogStore::open(data.join("logs")).expect("logs"));
        let (tx, mut rx) = mpsc::channel(16);
        let rt = ProcessRuntime::new(&data, Default::default(), logs, tx).expect("runtime");
        rt.start(s.clone()).await.expect("start");
        expect_started(&mut rx, &s).await;
        // The run record is how the next server finds the group.
        let rec = live_run_record(&data, &s.task_id).expect("run record in the journal");
        rec["pid"].as_i64().expect("pid") as i32
    });
    first.shutdown_background();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !is_dead(pid),
        "the attempt should outlive the crashed server"
    );

    let second = tokio::runtime::Runtime::new().expect("tokio");
    second.block_on(async {
        let logs = Arc::new(LogStore::open(data.join("logs")).expect("logs"));
        let (tx, mut rx) = mpsc::channel(16);
        let rt = ProcessRuntime::new(&data, Default::default(), logs, tx).expect("runtime");
        let vanished = ExpectedAttempt {
            job_id: "vanished-job".into(),
            attempt: 2,
            task_id: "vanished-task".into(),
            target: Target::Local,
        };
        rt.recover(vec![
            ExpectedAttempt {
                job_id: s.job_id.clone(),
                attempt: s.attempt,
                task_id: s.task_id.clone(),
                target: Target::Local,
            },
            vanished,
        ])
        .await
        .expect("recover");
        let mut seen = Vec::new();
        for _ in 0..2 {
            match next_event(&mut rx).await {
                RuntimeEvent::Exited {
                    job_id,
                    exit_code,
                    reason,
                    ..
                } => seen.push((job_id, exit_code, reason)),
                other => panic!("expected Exited, got {other:?}"),
            }
        }
        seen.sort();
        assert_eq!(
            seen,
            vec![
                (s.job_id.clone(), None, Some(HOST_LOST_REASON.to_string())),
                (
                    "vanished-job".to_string(),
                    None,
                    Some(HOST_LOST_REASON.to_string())
                ),
            ]
        );
    });
    assert!(
        wait_dead(pid, Duration::from_secs(10)),
        "orphan group leader {pid} still running"
    );
    assert!(
        live_run_record(&data, &s.task_id).is_none(),
        "run record left behind"
    );
    second.shutdown_background();
}

/// An attempt that ended just before the server died, before the engine stored its end: the
/// journal keeps its exit code until `end_stored`, so the next server reports the real end
/// instead of a lost host. Once stored, the record goes.
#[test]
fn process_exit_code_survives_a_crash_until_the_engine_stored_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_path_buf();
    let s = spec(Kind::Process, &["sh", "-c", "exit 3"]);
    let first = tokio::runtime::Runtime::new().expect("tokio");
    first.block_on(async {
        let logs = Arc::new(LogStore::open(data.join("logs")).expect("logs"));
        let (tx, mut rx) = mpsc::channel(16);
        let rt = ProcessRuntime::new(&data, Default::default(), logs, tx).expect("runtime");
        rt.start(s.clone()).await.expect("start");
        expect_started(&mut rx, &s).await;
        let (code, reason) = expect_exited(&mut rx, &s).await;
        assert_eq!((code, reason), (Some(3), None));
        // The engine has not stored the end yet: the record stays.
        assert!(live_run_record(&data, &s.task_id).is_some());
    });
    first.shutdown_background();

    let second = tokio::runtime::Runtime::new().expect("tokio");
    second.block_on(async {
        let logs = Arc::new(LogStore::open(data.join("logs")).expect("logs"));
        let (tx, mut rx) = mpsc::channel(16);
        let rt = ProcessRuntime::new(&data, Default::default(), logs, tx).expect("runtime");
        rt.recover(vec![ExpectedAttempt {
            job_id: s.job_id.clone(),
            attempt: s.attempt,
            task_id: s.task_id.clone(),
            target: Target::Local,
        }])
        .await
        .expect("recover");
        let (code, reason) = expect_exited(&mut rx, &s).await;
        assert_eq!(
            (code, reason),
            (Some(3), None),
            "the real exit code, not a lost host"
        );

        // A normal end: the record goes once the engine says the end is stored.
        let again = AttemptSpec {
            attempt: s.attempt + 1,
            task_id: format!("{}-again", s.task_id),
            ..s.clone()
        };
        rt.start(again.clone()).await.expect("start");
        expect_started(&mut rx, &again).await;
        expect_exited(&mut rx, &again).await;
        assert!(live_run_record(&data, &again.task_id).is_some());
        rt.end_stored(&again.job_id, again.attempt);
        assert!(live_run_record(&data, &again.task_id).is_none());
    });
    second.shutdown_background();
}

// ---------------------------------------------------------------- docker runtime

#[tokio::test]
async fn docker_exit_codes() {
    exit_codes(Kind::Docker).await;
}

#[tokio::test]
async fn docker_output_lands_in_the_stream() {
    output_lands_in_the_stream(Kind::Docker).await;
}

#[tokio::test]
async fn docker_environment_is_the_spec() {
    environment_is_the_spec(Kind::Docker).await;
}

#[tokio::test]
async fn docker_stop_signals_the_container() {
    stop_signals(Kind::Docker).await;
}

#[tokio::test]
async fn docker_missing_image_fails_readably() {
    let mut h = harness(Kind::Docker).await;
    let mut s = spec(Kind::Docker, &["true"]);
    s.image = Some("flotilla-test/no-such-image:latest".into());
    h.rt.start(s.clone()).await.expect("start returns Ok");
    let (code, reason) = expect_exited(&mut h.rx, &s).await;
    assert_eq!(code, None);
    let reason = reason.expect("reason");
    assert!(
        reason.starts_with(
            "CannotPullContainerError: image flotilla-test/no-such-image:latest is not present locally"
        ),
        "{reason}"
    );
}

#[tokio::test]
async fn docker_missing_command_fails_readably() {
    let mut h = harness(Kind::Docker).await;
    let s = spec(Kind::Docker, &["flotilla-no-such-command-xyz"]);
    // Without an init in front of it Docker itself execs the command and fails the start, as
    // ECS reports it: the attempt never starts.
    h.rt.start(s.clone()).await.expect("start returns Ok");
    let (code, reason) = expect_exited(&mut h.rx, &s).await;
    assert_eq!(code, None);
    let reason = reason.expect("reason");
    assert!(
        reason.starts_with("CannotStartContainerError:")
            && reason.contains("flotilla-no-such-command-xyz"),
        "{reason}"
    );
    let docker = h.docker.as_ref().expect("docker");
    assert!(!container_exists(docker, &container_name(&s.task_id)).await);
}

#[tokio::test]
async fn docker_limits_labels_and_removal() {
    let mut h = harness(Kind::Docker).await;
    let docker = h.docker.clone().expect("docker");
    let s = spec(Kind::Docker, &["sleep", "300"]);
    h.rt.start(s.clone()).await.expect("start");
    expect_started(&mut h.rx, &s).await;
    let name = container_name(&s.task_id);
    let info = docker
        .inspect_container(&name, None)
        .await
        .expect("inspect");
    let hc = info.host_config.expect("host config");
    assert_eq!(hc.nano_cpus, Some(500_000_000));
    assert_eq!(hc.memory, Some(64 * 1024 * 1024));
    let labels = info.config.and_then(|c| c.labels).expect("labels");
    assert_eq!(labels.get("flotilla.job-id"), Some(&s.job_id));
    assert_eq!(
        labels.get("flotilla.attempt").map(String::as_str),
        Some("1")
    );
    assert_eq!(labels.get("flotilla.task-id"), Some(&s.task_id));
    h.rt.stop(&s.job_id, s.attempt, StopSignal::Kill)
        .await
        .expect("stop");
    let (code, _) = expect_exited(&mut h.rx, &s).await;
    assert_eq!(code, Some(137));
    assert!(
        !container_exists(&docker, &name).await,
        "container not removed after exit"
    );
}

/// A server "crash" with containers running: the first runtime's tokio runtime is torn down
/// mid-attempt; a new runtime on the same data dir adopts the running container (log copying
/// resumes without duplicates), reports a container that exited meanwhile with its real code,
/// and reports a vanished one lost.
#[test]
fn docker_recover_adopts_running_containers() {
    ensure_test_image();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_path_buf();
    let long = spec(
        Kind::Docker,
        &["sh", "-c", "echo before; sleep 4; echo after; exit 7"],
    );
    let short = spec(Kind::Docker, &["sh", "-c", "echo quick; exit 5"]);
    let first = tokio::runtime::Runtime::new().expect("tokio");
    first.block_on(async {
        let logs = Arc::new(LogStore::open(data.join("logs")).expect("logs"));
        let (tx, mut rx) = mpsc::channel(16);
        let rt = DockerRuntime::connect(
            &data,
            PullPolicy::Never,
            no_secrets(&data),
            logs.clone(),
            tx,
        )
        .await
        .expect("Docker must be reachable");
        for s in [&long, &short] {
            rt.start(s.clone()).await.expect("start");
            expect_started(&mut rx, s).await;
        }
        // Let "before" reach the store through the first runtime.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !messages(&logs, &long.log_stream).contains(&"before".to_string()) {
            assert!(Instant::now() < deadline, "first line never stored");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    first.shutdown_background();
    // The short one finishes while no server watches.
    std::thread::sleep(Duration::from_millis(1500));

    let second = tokio::runtime::Runtime::new().expect("tokio");
    second.block_on(async {
        let logs = Arc::new(LogStore::open(data.join("logs")).expect("logs"));
        let (tx, mut rx) = mpsc::channel(16);
        let rt = DockerRuntime::connect(
            &data,
            PullPolicy::Never,
            no_secrets(&data),
            logs.clone(),
            tx,
        )
        .await
        .expect("Docker must be reachable");
        let docker = rt.docker().clone();
        let expected = |s: &AttemptSpec| ExpectedAttempt {
            job_id: s.job_id.clone(),
            attempt: s.attempt,
            task_id: s.task_id.clone(),
            target: Target::Local,
        };
        rt.recover(vec![
            expected(&long),
            expected(&short),
            ExpectedAttempt {
                job_id: "vanished-job".into(),
                attempt: 1,
                task_id: "vanished-task".into(),
                target: Target::Local,
            },
        ])
        .await
        .expect("recover");
        let mut seen = std::collections::HashMap::new();
        for _ in 0..3 {
            match next_event(&mut rx).await {
                RuntimeEvent::Exited {
                    job_id,
                    exit_code,
                    reason,
                    ..
                } => {
                    seen.insert(job_id, (exit_code, reason));
                }
                other => panic!("recovered attempts only exit, got {other:?}"),
            }
        }
        assert_eq!(seen[&long.job_id], (Some(7), None));
        assert_eq!(seen[&short.job_id], (Some(5), None));
        assert_eq!(
            seen["vanished-job"],
            (None, Some(HOST_LOST_REASON.to_string()))
        );
        assert_eq!(messages(&logs, &long.log_stream), vec!["before", "after"]);
        assert_eq!(messages(&logs, &short.log_stream), vec!["quick"]);
        for s in [&long, &short] {
            assert!(!container_exists(&docker, &container_name(&s.task_id)).await);
        }
    });
    second.shutdown_background();
}
