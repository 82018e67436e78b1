//! Durability: every SubmitJob that returned 200 survives a SIGKILL of the server, on SQLite and
//! on PostgreSQL.

mod common;

use common::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TOTAL: usize = 2000;
const TASKS: usize = 64;
const KILL_AFTER: usize = 500;

async fn submit_kill_restart(mut server: Server) {
    register_simple(&server.client(), "jd").await;
    let client = server.client_no_retry();
    let accepted: Arc<Mutex<Vec<String>>> = Arc::default();
    let done = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let client = client.clone();
        let accepted = accepted.clone();
        let done = done.clone();
        let failed = failed.clone();
        tasks.spawn(async move {
            for i in (t..TOTAL).step_by(TASKS) {
                match client
                    .submit_job()
                    .job_name(format!("d{i}"))
                    .job_queue("default")
                    .job_definition("jd")
                    .send()
                    .await
                {
                    Ok(out) => {
                        accepted.lock().unwrap().push(out.job_id.expect("jobId"));
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(_) => {
                        // The server is gone; the rest of this task's jobs are never sent.
                        failed.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                }
            }
        });
    }
    // Kill once enough have returned 200, while the rest are in flight.
    while done.load(Ordering::SeqCst) < KILL_AFTER && !tasks.is_empty() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    server.kill();
    while let Some(r) = tasks.join_next().await {
        r.expect("submit task panicked");
    }
    let accepted = accepted.lock().unwrap().clone();
    assert!(
        accepted.len() >= KILL_AFTER,
        "only {} accepted",
        accepted.len()
    );
    assert!(
        failed.load(Ordering::SeqCst) > 0 && accepted.len() < TOTAL,
        "the kill did not interrupt any request ({} accepted)",
        accepted.len()
    );

    eprintln!(
        "{} SubmitJob calls returned 200 before the kill, {} failed",
        accepted.len(),
        failed.load(Ordering::SeqCst)
    );
    server.restart();
    let client = server.client();
    let mut found = 0;
    for chunk in accepted.chunks(100) {
        let jobs = client
            .describe_jobs()
            .set_jobs(Some(chunk.to_vec()))
            .send()
            .await
            .expect("describe after restart")
            .jobs
            .unwrap_or_default();
        let ids: std::collections::HashSet<&str> =
            jobs.iter().filter_map(|j| j.job_id.as_deref()).collect();
        for id in chunk {
            assert!(
                ids.contains(id.as_str()),
                "job {id} returned 200 but is gone after SIGKILL"
            );
        }
        for j in &jobs {
            assert_eq!(j.status, Some(aws_sdk_batch::types::JobStatus::Runnable));
            assert!(j.job_name.as_deref().unwrap_or_default().starts_with('d'));
        }
        found += jobs.len();
    }
    assert_eq!(found, accepted.len());
    // And the restarted server takes new work.
    let id = submit(&client, "after", "default", "jd").await;
    assert_eq!(
        describe_job(&client, &id).await.job_name.as_deref(),
        Some("after")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn accepted_jobs_survive_sigkill_sqlite() {
    submit_kill_restart(Server::start()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn accepted_jobs_survive_sigkill_postgres() {
    let db = PgDatabase::create();
    let server = Server::start_with(ServerOptions {
        database_url: Some(db.url.clone()),
        ..Default::default()
    });
    submit_kill_restart(server).await;
}

#[tokio::test]
async fn sigterm_exits_cleanly_and_keeps_everything() {
    let mut server = Server::start();
    let client = server.client();
    register_simple(&client, "jd").await;
    let id = submit(&client, "kept", "default", "jd").await;
    let status = server.terminate();
    assert!(status.success(), "exit status {status}");
    server.restart();
    let d = describe_job(&server.client(), &id).await;
    assert_eq!(d.job_name.as_deref(), Some("kept"));
}
