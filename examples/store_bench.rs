//! Ad-hoc store timings: `cargo run --example store_bench -- URL [URL…]`.
//!
//! Use a scratch database: it writes jobs into whatever the URL names. For PostgreSQL point
//! `search_path` at a scratch schema, e.g. `postgres://…/flotilla?options=-c%20search_path%3Dbench`.

use std::sync::Arc;
use std::time::Instant;

use flotilla::store::{JobListQuery, JobRow, JobScope, SqlStore, Store};

fn row(id: String, status: &str, parent: Option<(&str, i32)>, created_at: i64) -> JobRow {
    JobRow {
        doc: format!(
            r#"{{"jobId":"{id}","jobName":"bench","status":"{status}","container":{{"image":"busybox","command":["echo","hello"],"vcpus":1,"memory":128}}}}"#
        ),
        job_id: id,
        job_queue: "arn:aws:batch:us-east-1:000000000000:job-queue/bench".into(),
        status: status.into(),
        job_name: "bench".into(),
        job_definition: "arn:aws:batch:us-east-1:000000000000:job-definition/bench:1".into(),
        array_parent: parent.map(|(p, _)| p.to_owned()),
        array_index: parent.map(|(_, i)| i),
        created_at,
    }
}

#[tokio::main]
async fn main() {
    let urls: Vec<String> = std::env::args().skip(1).collect();
    assert!(!urls.is_empty(), "usage: store_bench URL [URL…]");
    for url in urls {
        let store = Arc::new(SqlStore::open(&url).await.expect("open"));
        let backend = store.backend();
        let run = uuid::Uuid::new_v4().simple().to_string();

        for round in 0..3 {
            let parent = format!("{run}-arr{round}");
            let rows: Vec<JobRow> = (0..10_000)
                .map(|i| row(format!("{parent}:{i}"), "PENDING", Some((&parent, i)), 1))
                .collect();
            let t = Instant::now();
            store.upsert_jobs(rows).await.expect("insert 10k");
            let insert = t.elapsed();
            let rows: Vec<JobRow> = (0..10_000)
                .map(|i| row(format!("{parent}:{i}"), "RUNNABLE", Some((&parent, i)), 1))
                .collect();
            let t = Instant::now();
            store.upsert_jobs(rows).await.expect("update 10k");
            println!(
                "{backend}: 10,000-row upsert: insert {:.1} ms, update {:.1} ms",
                insert.as_secs_f64() * 1e3,
                t.elapsed().as_secs_f64() * 1e3
            );
        }

        for round in 0..3 {
            let t = Instant::now();
            let tasks: Vec<_> = (0..200)
                .map(|i| {
                    let store = store.clone();
                    let id = format!("{run}-single{round}-{i}");
                    tokio::spawn(async move {
                        store
                            .upsert_jobs(vec![row(id, "SUBMITTED", None, i64::from(i))])
                            .await
                    })
                })
                .collect();
            for task in tasks {
                task.await.expect("task").expect("upsert");
            }
            println!(
                "{backend}: 200 concurrent single-row upserts: {:.1} ms",
                t.elapsed().as_secs_f64() * 1e3
            );
        }

        let t = Instant::now();
        let page = store
            .list_jobs(&JobListQuery {
                scope: JobScope::Queue(
                    "arn:aws:batch:us-east-1:000000000000:job-queue/bench".into(),
                ),
                statuses: Some(vec!["SUBMITTED".into()]),
                name: None,
                name_is_prefix: false,
                definition: None,
                definition_is_prefix: false,
                created_before: None,
                created_after: None,
                limit: 100,
                cursor: None,
            })
            .await
            .expect("list");
        println!(
            "{backend}: list_jobs page of {}: {:.1} ms",
            page.jobs.len(),
            t.elapsed().as_secs_f64() * 1e3
        );
    }
}
