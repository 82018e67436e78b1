//! Storage faults, restarts and the data directory: a full disk drops no write, a damaged or
//! incomplete database is refused rather than started empty, and one server holds a data
//! directory at a time.
//!
//! The disk-full test mounts a small tmpfs and so needs root (`mount -t tmpfs`); it is skipped,
//! saying so, without it. It mounts in the mount namespace the test runs in (no `unshare`: the
//! test itself fills and frees the disk, so it must see the mount the server writes to), on a
//! fresh temporary directory, and unmounts it (lazily) when it ends, panic or not.

mod common;

use aws_sdk_batch::types::*;
use common::*;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(200);

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` when not root.
    fn mount(size: &str) -> Option<Tmpfs> {
        // SAFETY: geteuid has no preconditions and touches no memory.
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        let dir = tempfile::tempdir().expect("mount point");
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(st.success(), "mount -t tmpfs failed: {st}");
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Writes `path` until the filesystem is full.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).expect("filler");
    let chunk = vec![0xa5u8; 64 * 1024];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
    // Smaller writes take the last partial chunk.
    let byte = [0u8; 512];
    while f.write(&byte).is_ok_and(|n| n > 0) {}
}

async fn get(url: String) -> (u16, String) {
    let r = reqwest::get(url).await.expect("GET");
    let status = r.status().as_u16();
    (status, r.text().await.expect("body"))
}

async fn register(client: &aws_sdk_batch::Client, name: &str, command: &[&str]) {
    client
        .register_job_definition()
        .job_definition_name(name)
        .r#type(JobDefinitionType::Container)
        .container_properties(
            ContainerProperties::builder()
                .image("flotilla-test/busybox:latest")
                .set_command(Some(command.iter().map(|s| s.to_string()).collect()))
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
}

async fn describe(client: &aws_sdk_batch::Client, ids: &[String]) -> Vec<JobDetail> {
    let mut out = Vec::new();
    for chunk in ids.chunks(100) {
        let r = client
            .describe_jobs()
            .set_jobs(Some(chunk.to_vec()))
            .send()
            .await
            .expect("DescribeJobs");
        out.extend(r.jobs.unwrap_or_default());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_delays_jobs_but_loses_or_repeats_none() {
    let Some(disk) = Tmpfs::mount("24m") else {
        eprintln!("SKIPPED: the disk-full test needs root to mount a tmpfs");
        return;
    };
    // Where the jobs record their runs: off the full disk, so the record itself is complete.
    let record = job_writable_tempdir();
    let runs = record.path().join("runs");
    let data = tempfile::tempdir_in(disk.path()).expect("data dir");
    let s = Server::start_in(
        data,
        ServerOptions {
            extra_args: vec!["--local-runtime".into(), "process".into()],
            dispatch: true,
            ..Default::default()
        },
    );
    let client = s.client();
    let script = format!("sleep 2; echo \"$AWS_BATCH_JOB_ID\" >> {}", runs.display());
    register(&client, "faults", &["sh", "-c", &script]).await;
    let mut acked = Vec::new();
    for i in 0..24 {
        let r = client
            .submit_job()
            .job_name(format!("before-{i}"))
            .job_queue("default")
            .job_definition("faults")
            .send()
            .await
            .expect("submit before the disk fills");
        acked.push(r.job_id.expect("jobId"));
    }

    // Fill the disk while attempts run, so that their ends (and what the engine does next)
    // fail to write: the case that stranded jobs RUNNING for good.
    let deadline = Instant::now() + Duration::from_secs(60);
    let running = loop {
        let r = client
            .list_jobs()
            .job_queue("default")
            .job_status(JobStatus::Running)
            .send()
            .await
            .expect("ListJobs");
        let ids: Vec<String> = r
            .job_summary_list()
            .iter()
            .filter_map(|j| j.job_id.clone())
            .collect();
        if !ids.is_empty() {
            break ids;
        }
        assert!(Instant::now() < deadline, "no job started");
        tokio::time::sleep(POLL).await;
    };
    let filler = disk.path().join("filler");
    fill(&filler);
    // Those attempts end while the disk is full.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&runs).unwrap_or_default();
        if running.iter().all(|id| text.contains(id.as_str())) {
            break;
        }
        assert!(Instant::now() < deadline, "running jobs never ended");
        tokio::time::sleep(POLL).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let degraded = loop {
        let (status, body) = get(format!("{}/healthz", s.endpoint)).await;
        if status == 503 {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz never reported the full disk: {status} {body}"
        );
        tokio::time::sleep(POLL).await;
    };
    assert!(degraded.starts_with("degraded"), "{degraded}");

    // Reads keep answering while writes fail.
    let seen = describe(&client, &acked).await;
    assert_eq!(seen.len(), acked.len());
    client
        .list_jobs()
        .job_queue("default")
        .job_status(JobStatus::Runnable)
        .send()
        .await
        .expect("ListJobs while the disk is full");
    let (status, metrics) = get(format!("{}/metrics", s.endpoint)).await;
    assert_eq!(status, 200, "{metrics}");
    assert!(metrics.contains("flotilla_store_degraded 1"), "{metrics}");

    // A submission either is stored (and then must run) or is refused as retryable.
    let no_retry = s.client_no_retry();
    let mut refused = 0;
    for i in 0..4 {
        match no_retry
            .submit_job()
            .job_name(format!("during-{i}"))
            .job_queue("default")
            .job_definition("faults")
            .send()
            .await
        {
            Ok(r) => acked.push(r.job_id.expect("jobId")),
            Err(e) => {
                let raw = e.raw_response().map(|r| r.status().as_u16());
                assert_eq!(raw, Some(500), "refused with a retryable error: {e:?}");
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "no submission failed while the disk was full");

    std::fs::remove_file(&filler).expect("free the disk");
    let deadline = Instant::now() + Duration::from_secs(180);
    let jobs = loop {
        let jobs = describe(&client, &acked).await;
        if jobs.iter().all(|j| {
            matches!(
                j.status,
                Some(JobStatus::Succeeded) | Some(JobStatus::Failed)
            )
        }) {
            break jobs;
        }
        assert!(
            Instant::now() < deadline,
            "jobs stranded after space returned: {:?}",
            jobs.iter()
                .filter(|j| !matches!(
                    j.status,
                    Some(JobStatus::Succeeded) | Some(JobStatus::Failed)
                ))
                .map(|j| (j.job_id.clone(), j.status.clone()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(POLL).await;
    };
    let text = std::fs::read_to_string(&runs).unwrap_or_default();
    let mut ran: HashMap<&str, usize> = HashMap::new();
    for line in text.lines() {
        *ran.entry(line.trim()).or_default() += 1;
    }
    for j in &jobs {
        let id = j.job_id.as_deref().unwrap_or_default();
        assert_eq!(
            j.status,
            Some(JobStatus::Succeeded),
            "job {id}: {:?}",
            j.status_reason
        );
        assert_eq!(j.attempts().len(), 1, "job {id} ran more than once");
        assert_eq!(ran.get(id), Some(&1), "job {id} runs recorded: {ran:?}");
    }
    assert_eq!(ran.len(), jobs.len(), "runs of unknown jobs: {ran:?}");

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = get(format!("{}/healthz", s.endpoint)).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "still degraded: {body}");
        tokio::time::sleep(POLL).await;
    }
    let (_, metrics) = get(format!("{}/metrics", s.endpoint)).await;
    assert!(metrics.contains("flotilla_store_degraded 0"), "{metrics}");
    let failures: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("flotilla_store_write_failures_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("flotilla_store_write_failures_total");
    assert!(failures >= 1.0, "{metrics}");
    drop(s);
    drop(disk);
}

/// Runs `flotilla server` on `dir` expecting it to refuse to start; returns what it printed.
fn refused_start(dir: &Path) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flotilla"));
    cmd.args([
        "server",
        "--listen",
        "127.0.0.1:0",
        "--no-defaults",
        "--data-dir",
    ])
    .arg(dir)
    .env_remove("FLOTILLA_ACCESS_KEY_ID")
    .env_remove("FLOTILLA_SECRET_ACCESS_KEY")
    .env("RUST_LOG", "warn")
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn flotilla server");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "the server started on {} instead of refusing",
                dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    use std::io::Read;
    let _ = child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err);
    assert!(!status.success(), "exit {status}: {err}");
    err
}

/// A server with `n` jobs waiting in a queue (nothing dispatches), and their IDs.
async fn server_with_jobs(n: usize) -> (Server, Vec<String>) {
    let s = Server::start();
    let client = s.client();
    register_simple(&client, "kept").await;
    let mut ids = Vec::new();
    for i in 0..n {
        let r = client
            .submit_job()
            .job_name(format!("kept-{i}"))
            .job_queue("default")
            .job_definition("kept")
            .send()
            .await
            .expect("submit");
        ids.push(r.job_id.expect("jobId"));
    }
    (s, ids)
}

/// A valid SQLite database without a single table.
async fn blank_database(path: &Path) {
    use sqlx::Connection;
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let mut conn = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("create a blank database");
    sqlx::raw_sql("CREATE TABLE scratch (a INTEGER); DROP TABLE scratch;")
        .execute(&mut conn)
        .await
        .expect("write its first page");
    conn.close().await.expect("close");
    assert!(std::fs::metadata(path).is_ok_and(|m| m.len() > 0));
}

fn db(dir: &Path) -> PathBuf {
    dir.join("flotilla.db")
}

fn sidecar(dir: &Path, suffix: &str) -> PathBuf {
    dir.join(format!("flotilla.db{suffix}"))
}

async fn assert_jobs_kept(s: &Server, ids: &[String]) {
    let jobs = describe(&s.client(), ids).await;
    assert_eq!(jobs.len(), ids.len(), "jobs lost over the restart");
}

#[tokio::test]
async fn a_database_copied_without_its_wal_after_a_kill_is_refused() {
    let (mut s, ids) = server_with_jobs(5).await;
    s.kill();
    let dir = s.data_dir.clone();
    assert!(
        std::fs::metadata(sidecar(&dir, "-wal")).is_ok_and(|m| m.len() > 0),
        "the killed server's writes are in its WAL"
    );
    // What a backup of flotilla.db alone, restored, looks like.
    let saved = tempfile::tempdir().expect("saved");
    for suffix in ["-wal", "-shm"] {
        let from = sidecar(&dir, suffix);
        let _ = std::fs::rename(&from, saved.path().join(suffix));
    }
    let err = refused_start(&dir);
    assert!(err.contains("refusing to start"), "{err}");
    assert!(err.contains("WAL"), "names the missing WAL: {err}");
    // With its WAL back, the same files start with every job.
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::rename(saved.path().join(suffix), sidecar(&dir, suffix));
    }
    s.restart();
    assert_jobs_kept(&s, &ids).await;
}

#[tokio::test]
async fn a_missing_or_empty_database_is_refused() {
    let (mut s, ids) = server_with_jobs(3).await;
    let st = s.terminate();
    assert!(st.success(), "clean stop: {st}");
    let dir = s.data_dir.clone();
    let saved = tempfile::tempdir().expect("saved");
    let copy = saved.path().join("flotilla.db");
    std::fs::copy(db(&dir), &copy).expect("copy");

    std::fs::remove_file(db(&dir)).expect("delete the database");
    let err = refused_start(&dir);
    assert!(err.contains("the database file is missing"), "{err}");

    std::fs::File::create(db(&dir)).expect("0-byte database");
    let err = refused_start(&dir);
    assert!(err.contains("empty (0 bytes)"), "{err}");

    // A database with no schema (a fresh file where the store was).
    std::fs::remove_file(db(&dir)).expect("remove");
    blank_database(&db(&dir)).await;
    let err = refused_start(&dir);
    assert!(err.contains("no schema"), "{err}");

    // The copy taken after the clean stop is the whole store: the WAL was checkpointed into it.
    std::fs::copy(&copy, db(&dir)).expect("restore");
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(sidecar(&dir, suffix));
    }
    s.restart();
    assert_jobs_kept(&s, &ids).await;
}

#[tokio::test]
async fn restarts_after_a_kill_or_a_clean_stop_keep_every_job() {
    let (mut s, ids) = server_with_jobs(4).await;
    s.restart();
    assert_jobs_kept(&s, &ids).await;
    let st = s.terminate();
    assert!(st.success(), "clean stop: {st}");
    let wal = std::fs::metadata(sidecar(&s.data_dir, "-wal")).map_or(0, |m| m.len());
    assert_eq!(wal, 0, "a clean stop leaves no data in the WAL");
    s.restart();
    assert_jobs_kept(&s, &ids).await;
}

#[tokio::test]
async fn a_second_server_on_the_same_data_directory_is_refused() {
    let mut s = Server::start();
    let err = refused_start(&s.data_dir);
    assert!(err.contains("in use by another flotilla server"), "{err}");
    assert!(
        err.contains(&format!("pid {}", s.child.id())),
        "names the holder: {err}"
    );
    // A SIGKILLed holder leaves the lock file behind but not the lock.
    s.kill();
    assert!(s.data_dir.join("flotilla.lock").exists());
    s.restart();
    let (status, _) = get(format!("{}/healthz", s.endpoint)).await;
    assert_eq!(status, 200);
}

async fn sqlite(path: &Path) -> sqlx::SqliteConnection {
    use sqlx::Connection;
    sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("open the database")
}

#[tokio::test]
async fn an_unreadable_row_is_quarantined_and_the_server_starts_with_the_rest() {
    use sqlx::Connection;
    let (mut s, ids) = server_with_jobs(3).await;
    register_simple(&s.client(), "broken").await;
    assert!(s.terminate().success());
    {
        let mut conn = sqlite(&db(&s.data_dir)).await;
        sqlx::query("UPDATE jobs SET doc = '{\"jobId\": 1' WHERE job_id = $1")
            .bind(&ids[0])
            .execute(&mut conn)
            .await
            .expect("corrupt a job");
        sqlx::query(
            "UPDATE resources SET doc = 'not json' WHERE kind = 'job-definition' AND name = 'broken'",
        )
        .execute(&mut conn)
        .await
        .expect("corrupt a job definition");
        conn.close().await.expect("close");
    }
    s.restart();
    let client = s.client();
    let jobs = describe(&client, &ids).await;
    let found: Vec<&str> = jobs.iter().filter_map(|j| j.job_id.as_deref()).collect();
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(!found.contains(&ids[0].as_str()));
    let defs = client
        .describe_job_definitions()
        .job_definition_name("kept")
        .send()
        .await
        .expect("DescribeJobDefinitions");
    assert_eq!(defs.job_definitions().len(), 1);
    let (_, metrics) = get(format!("{}/metrics", s.endpoint)).await;
    assert!(
        metrics.contains("flotilla_store_quarantined_rows 2"),
        "{metrics}"
    );
    {
        let mut conn = sqlite(&db(&s.data_dir)).await;
        let rows: Vec<(String, String, String)> =
            sqlx::query_as("SELECT source, row_key, doc FROM quarantine ORDER BY source")
                .fetch_all(&mut conn)
                .await
                .expect("read the quarantine table");
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(rows[0].0, "job");
        assert_eq!(rows[0].1, ids[0]);
        assert_eq!(rows[0].2, "{\"jobId\": 1", "kept whole");
        assert_eq!(rows[1].0, "resource:job-definition");
        conn.close().await.expect("close");
    }
    // Set aside is not lost: the next start does not take it for a shrunken store.
    s.restart();
    let (_, metrics) = get(format!("{}/metrics", s.endpoint)).await;
    assert!(
        metrics.contains("flotilla_store_quarantined_rows 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_job_whose_log_cannot_be_written_still_runs_once() {
    let s = Server::start_with(ServerOptions {
        extra_args: vec!["--local-runtime".into(), "process".into()],
        dispatch: true,
        ..Default::default()
    });
    let client = s.client();
    register(&client, "no-log", &["sh", "-c", "echo lost; exit 0"]).await;
    // The job log group's directory becomes a file: no stream can be created in it, as on a
    // full or failing disk.
    let logs = s.data_dir.join("logs");
    let groups: Vec<PathBuf> = std::fs::read_dir(&logs)
        .expect("logs dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(groups.len(), 1, "{groups:?}");
    std::fs::remove_dir_all(&groups[0]).expect("remove the group");
    std::fs::write(&groups[0], b"in the way").expect("a file in its place");
    let id = client
        .submit_job()
        .job_name("no-log")
        .job_queue("default")
        .job_definition("no-log")
        .send()
        .await
        .expect("submit")
        .job_id
        .expect("jobId");
    let deadline = Instant::now() + Duration::from_secs(60);
    let job = loop {
        let j = describe(&client, std::slice::from_ref(&id)).await.remove(0);
        if matches!(
            j.status,
            Some(JobStatus::Succeeded) | Some(JobStatus::Failed)
        ) {
            break j;
        }
        assert!(Instant::now() < deadline, "job never ended: {:?}", j.status);
        tokio::time::sleep(POLL).await;
    };
    assert_eq!(
        job.status,
        Some(JobStatus::Succeeded),
        "{:?}",
        job.status_reason
    );
    assert_eq!(job.attempts().len(), 1);
}
