//! `flotilla admin backup`: an online copy of the SQLite store, taken while the server runs and
//! accepts jobs, that a second server started on it serves in full.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// Runs `flotilla admin backup` and returns (exit success, stdout, stderr).
fn admin_backup(dest: &Path, extra: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["admin", "backup"])
        .arg(dest)
        .args(extra)
        .env_remove("FLOTILLA_DATA_DIR")
        .env_remove("FLOTILLA_DATABASE_URL")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run flotilla admin backup");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_backup_restores_into_a_fresh_data_dir() {
    let server = Server::start();
    let client = server.client();
    register_simple(&client, "jd").await;
    let ce = create_local_ce(&client, "backup-ce").await;
    create_queue(&client, "backup-q", &ce).await;
    let mut before = BTreeSet::new();
    for i in 0..40 {
        before.insert(submit(&client, &format!("b{i}"), "backup-q", "jd").await);
    }

    // Submissions keep coming while the backup runs.
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let submitter = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut during = 0;
            while !*stopped.borrow_and_update() {
                submit(&client, &format!("d{during}"), "backup-q", "jd").await;
                during += 1;
            }
            during
        })
    };
    let out_dir = tempfile::tempdir().unwrap();
    let dest = out_dir.path().join("flotilla-backup.db");
    let data_dir = server.data_dir.to_string_lossy().into_owned();
    let (ok, stdout, stderr) = tokio::task::spawn_blocking({
        let dest = dest.clone();
        let data_dir = data_dir.clone();
        move || admin_backup(&dest, &["--data-dir", &data_dir])
    })
    .await
    .unwrap();
    let _ = stop.send(true);
    let during = submitter.await.unwrap();
    assert!(ok, "backup failed: {stdout}\n{stderr}");
    assert!(stdout.contains("backed up"), "{stdout}");
    eprintln!("{stdout}({during} jobs submitted while it ran)");

    // The running server is unharmed.
    assert_eq!(
        describe_job(&client, before.iter().next().unwrap())
            .await
            .status,
        Some(aws_sdk_batch::types::JobStatus::Runnable)
    );

    // A backup never overwrites; a data dir without a store and PostgreSQL are refused.
    let (ok, _, stderr) = admin_backup(&dest, &["--data-dir", &data_dir]);
    assert!(!ok && stderr.contains("exists"), "{stderr}");
    let empty = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = admin_backup(
        &out_dir.path().join("other.db"),
        &["--data-dir", &empty.path().to_string_lossy()],
    );
    assert!(!ok && stderr.contains("no database"), "{stderr}");
    let (ok, _, stderr) = admin_backup(
        &out_dir.path().join("pg.db"),
        &["--database-url", "postgres://flotilla@127.0.0.1:1/flotilla"],
    );
    assert!(!ok && stderr.contains("pg_dump"), "{stderr}");
    assert!(!out_dir.path().join("other.db").exists());

    // Restore: the backup becomes flotilla.db of a fresh data dir.
    let fresh = tempfile::tempdir().unwrap();
    std::fs::copy(&dest, fresh.path().join("flotilla.db")).unwrap();
    let restored = Server::start_in(fresh, ServerOptions::default());
    let rclient = restored.client();
    let summaries = rclient
        .list_jobs()
        .job_queue("backup-q")
        .job_status(aws_sdk_batch::types::JobStatus::Runnable)
        .max_results(1000)
        .send()
        .await
        .expect("list jobs on the restored server")
        .job_summary_list
        .unwrap_or_default();
    let listed: BTreeSet<String> = summaries.iter().filter_map(|s| s.job_id.clone()).collect();
    // Every job acknowledged before the backup started is in it.
    assert!(
        before.is_subset(&listed),
        "missing after restore: {:?}",
        before.difference(&listed).collect::<Vec<_>>()
    );
    // Of those submitted one after another while it ran, a prefix: the copy is the store as of
    // one commit.
    let mut copied: Vec<usize> = summaries
        .iter()
        .filter_map(|s| s.job_name.as_deref()?.strip_prefix('d')?.parse().ok())
        .collect();
    copied.sort_unstable();
    assert_eq!(
        copied,
        (0..copied.len()).collect::<Vec<_>>(),
        "not a prefix"
    );
    assert!(copied.len() <= during);
    let defs = rclient
        .describe_job_definitions()
        .job_definition_name("jd")
        .send()
        .await
        .expect("definitions")
        .job_definitions
        .unwrap_or_default();
    assert_eq!(defs.len(), 1);
    // The restored server is a working one: it takes new jobs.
    let id = submit(&rclient, "after-restore", "backup-q", "jd").await;
    assert_eq!(
        describe_job(&rclient, &id).await.job_name.as_deref(),
        Some("after-restore")
    );
}
