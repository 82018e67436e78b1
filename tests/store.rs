//! One test suite for the store, instantiated for SQLite and PostgreSQL.
//!
//! PostgreSQL comes from `FLOTILLA_TEST_POSTGRES_URL`; without it the postgres tests fail rather
//! than pass vacuously. Each test gets its own schema (PostgreSQL) or file (SQLite), so tests may
//! run in parallel against one server.

use std::collections::BTreeSet;
use std::sync::Arc;

use flotilla::store::{
    Appends, AttemptUsage, InstanceUsage, JobCursor, JobListQuery, JobRow, JobScope, NewEvent,
    ResourceKind, ResourceRow, SqlStore, Store,
};
use sqlx::Connection;

const POSTGRES_URL_VAR: &str = "FLOTILLA_TEST_POSTGRES_URL";
const QUEUE: &str = "arn:aws:batch:us-east-1:000000000000:job-queue/q1";
const OTHER_QUEUE: &str = "arn:aws:batch:us-east-1:000000000000:job-queue/q2";
const DEF: &str = "arn:aws:batch:us-east-1:000000000000:job-definition/";

#[derive(Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A private database for one test: a temp file, or a fresh schema dropped when the test ends
/// (even by panic).
struct TestDb {
    url: String,
    _dir: Option<tempfile::TempDir>,
    pg_schema: Option<(String, String)>,
}

impl TestDb {
    async fn new(backend: Backend) -> TestDb {
        // `RUST_LOG=flotilla=debug cargo test --test store -- --nocapture` shows the store's logs.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("flotilla.db").display());
                TestDb {
                    url,
                    _dir: Some(dir),
                    pg_schema: None,
                }
            }
            Backend::Postgres => {
                let admin_url = std::env::var(POSTGRES_URL_VAR).unwrap_or_else(|_| {
                    panic!(
                        "{POSTGRES_URL_VAR} is not set: the postgres store tests need a server. \
                         Run `bash scripts/pg.sh start` and \
                         `export {POSTGRES_URL_VAR}=$(bash scripts/pg.sh url)`"
                    )
                });
                let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
                let mut conn = sqlx::PgConnection::connect(&admin_url)
                    .await
                    .unwrap_or_else(|e| panic!("cannot connect to {POSTGRES_URL_VAR}: {e}"));
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                    .execute(&mut conn)
                    .await
                    .expect("create schema");
                conn.close().await.ok();
                let sep = if admin_url.contains('?') { '&' } else { '?' };
                let url = format!("{admin_url}{sep}options=-c%20search_path%3D{schema}");
                TestDb {
                    url,
                    _dir: None,
                    pg_schema: Some((admin_url, schema)),
                }
            }
        }
    }

    async fn open(&self) -> SqlStore {
        SqlStore::open(&self.url).await.expect("open store")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin_url, schema)) = self.pg_schema.take() else {
            return;
        };
        // Drop runs inside the test's runtime, which cannot be blocked on: use a thread of its own.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin_url).await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS {schema} CASCADE"
                )))
                .execute(&mut conn)
                .await?;
                conn.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("warning: could not drop test schema: {dropped:?}");
        }
    }
}

fn job(id: &str, status: &str, name: &str, def: &str, created_at: i64) -> JobRow {
    JobRow {
        job_id: id.to_owned(),
        job_queue: QUEUE.to_owned(),
        status: status.to_owned(),
        job_name: name.to_owned(),
        job_definition: format!("{DEF}{def}"),
        array_parent: None,
        array_index: None,
        created_at,
        doc: format!(r#"{{"jobId":"{id}","status":"{status}"}}"#),
    }
}

fn child(parent: &str, index: i32, status: &str) -> JobRow {
    JobRow {
        array_parent: Some(parent.to_owned()),
        array_index: Some(index),
        ..job(&format!("{parent}:{index}"), status, "arr", "d:1", 500)
    }
}

fn query(scope: JobScope) -> JobListQuery {
    JobListQuery {
        scope,
        statuses: None,
        name: None,
        name_is_prefix: false,
        definition: None,
        definition_is_prefix: false,
        created_before: None,
        created_after: None,
        limit: 100,
        cursor: None,
    }
}

fn queue() -> JobListQuery {
    query(JobScope::Queue(QUEUE.to_owned()))
}

fn statuses(s: &[&str]) -> Option<Vec<String>> {
    Some(s.iter().map(|s| s.to_string()).collect())
}

/// Every row the query yields, page by page, checking page sizes and cursors on the way.
async fn list_all(store: &SqlStore, mut q: JobListQuery) -> (Vec<JobRow>, usize) {
    let mut rows = Vec::new();
    let mut pages = 0;
    loop {
        let page = store.list_jobs(&q).await.expect("list_jobs");
        pages += 1;
        assert!(page.jobs.len() <= q.limit as usize, "page over limit");
        rows.extend(page.jobs.iter().cloned());
        match page.next {
            Some(next) => {
                assert_eq!(
                    page.jobs.len(),
                    q.limit as usize,
                    "short page with a cursor"
                );
                q.cursor = Some(next);
            }
            None => return (rows, pages),
        }
        assert!(pages < 10_000, "pagination does not end");
    }
}

async fn ids(store: &SqlStore, q: JobListQuery) -> Vec<String> {
    list_all(store, q)
        .await
        .0
        .into_iter()
        .map(|j| j.job_id)
        .collect()
}

fn sorted(mut rows: Vec<JobRow>) -> Vec<JobRow> {
    rows.sort_by(|a, b| a.job_id.cmp(&b.job_id));
    rows
}

async fn resources_put_replace_delete_load(db: &TestDb) {
    let store = db.open().await;
    assert!(store.load_resources().await.unwrap().is_empty());
    let ce = ResourceRow {
        kind: ResourceKind::ComputeEnvironment,
        arn: "arn:ce/a".into(),
        name: "a".into(),
        doc: "{}".into(),
    };
    // Same ARN under another kind is another resource.
    let q = ResourceRow {
        kind: ResourceKind::JobQueue,
        arn: "arn:ce/a".into(),
        name: "qa".into(),
        doc: r#"{"q":1}"#.into(),
    };
    store.put_resource(&ce).await.unwrap();
    store.put_resource(&q).await.unwrap();
    let loaded = store.load_resources().await.unwrap();
    assert_eq!(loaded.len(), 2);
    assert!(loaded.contains(&ce) && loaded.contains(&q));

    let ce2 = ResourceRow {
        name: "a2".into(),
        doc: r#"{"v":2}"#.into(),
        ..ce.clone()
    };
    store.put_resource(&ce2).await.unwrap();
    let loaded = store.load_resources().await.unwrap();
    assert_eq!(loaded.len(), 2);
    assert!(loaded.contains(&ce2) && loaded.contains(&q));

    store
        .delete_resource(ResourceKind::ComputeEnvironment, "arn:ce/a")
        .await
        .unwrap();
    // Deleting what is not there is not an error.
    store
        .delete_resource(ResourceKind::SchedulingPolicy, "arn:none")
        .await
        .unwrap();
    assert_eq!(store.load_resources().await.unwrap(), vec![q.clone()]);

    for kind in [ResourceKind::JobDefinition, ResourceKind::SchedulingPolicy] {
        let row = ResourceRow {
            kind,
            arn: format!("arn:{}", kind.as_str()),
            name: "x".into(),
            doc: "{}".into(),
        };
        store.put_resource(&row).await.unwrap();
    }
    drop(store);
    let store = db.open().await;
    assert_eq!(store.load_resources().await.unwrap().len(), 3);
}

async fn meta_roundtrip(db: &TestDb) {
    let store = db.open().await;
    assert_eq!(store.get_meta("k").await.unwrap(), None);
    store.set_meta("k", "v1").await.unwrap();
    assert_eq!(store.get_meta("k").await.unwrap().as_deref(), Some("v1"));
    store.set_meta("k", "v2").await.unwrap();
    store.set_meta("other", "").await.unwrap();
    assert_eq!(store.get_meta("k").await.unwrap().as_deref(), Some("v2"));
    assert_eq!(store.get_meta("other").await.unwrap().as_deref(), Some(""));
}

async fn upsert_then_get(db: &TestDb) {
    let store = db.open().await;
    let a = job("a", "SUBMITTED", "alpha", "d:1", 10);
    let p = job("p", "PENDING", "arr", "d:1", 11);
    let c = child("p", 0, "PENDING");
    store
        .upsert_jobs(vec![a.clone(), p.clone(), c.clone()])
        .await
        .unwrap();
    let got = store
        .get_jobs(&["a".into(), "missing".into(), "p:0".into()])
        .await
        .unwrap();
    assert_eq!(sorted(got), vec![a.clone(), c.clone()]);
    assert!(store.get_jobs(&[]).await.unwrap().is_empty());
    assert!(store.upsert_jobs(vec![]).await.is_ok());

    // Unicode and quotes survive the round trip.
    let odd = JobRow {
        doc: r#"{"name":"ünïcödé ' \" 🚀"}"#.into(),
        ..job("odd'id", "RUNNABLE", "ñame", "d:1", 12)
    };
    store.upsert_jobs(vec![odd.clone()]).await.unwrap();
    assert_eq!(store.get_jobs(&["odd'id".into()]).await.unwrap(), vec![odd]);

    // 100 IDs in one call, as the API sends them.
    let many: Vec<JobRow> = (0..100)
        .map(|i| job(&format!("m{i:03}"), "RUNNING", "m", "d:1", i))
        .collect();
    store.upsert_jobs(many.clone()).await.unwrap();
    let ids: Vec<String> = many.iter().map(|j| j.job_id.clone()).collect();
    assert_eq!(sorted(store.get_jobs(&ids).await.unwrap()), many);
}

async fn upsert_replaces(db: &TestDb) {
    let store = db.open().await;
    store
        .upsert_jobs(vec![job("a", "SUBMITTED", "alpha", "d:1", 10)])
        .await
        .unwrap();
    let submitted = JobListQuery {
        statuses: statuses(&["SUBMITTED"]),
        ..queue()
    };
    let running = JobListQuery {
        statuses: statuses(&["RUNNING"]),
        ..queue()
    };
    assert_eq!(ids(&store, submitted.clone()).await, ["a"]);
    assert!(ids(&store, running.clone()).await.is_empty());

    let mut a2 = job("a", "RUNNING", "alpha", "d:1", 10);
    a2.doc = r#"{"v":2}"#.into();
    store.upsert_jobs(vec![a2.clone()]).await.unwrap();
    assert!(ids(&store, submitted.clone()).await.is_empty());
    assert_eq!(ids(&store, running.clone()).await, ["a"]);
    assert_eq!(store.get_jobs(&["a".into()]).await.unwrap(), vec![a2]);

    // The same job twice in one call: the later version wins.
    let b1 = job("b", "SUBMITTED", "b", "d:1", 20);
    let b2 = job("b", "SUCCEEDED", "b", "d:1", 20);
    store.upsert_jobs(vec![b1, b2.clone()]).await.unwrap();
    assert_eq!(store.get_jobs(&["b".into()]).await.unwrap(), vec![b2]);
}

async fn list_queue_filters(db: &TestDb) {
    let store = db.open().await;
    let mut other = job("o1", "RUNNING", "alpha", "def-a:1", 35);
    other.job_queue = OTHER_QUEUE.into();
    store
        .upsert_jobs(vec![
            job("j1", "SUBMITTED", "alpha", "def-a:1", 10),
            job("j2", "RUNNING", "alphabet", "def-a:2", 20),
            job("j3", "RUNNING", "Alpha", "def-ab:1", 30),
            job("j4", "FAILED", "beta", "def-b:1", 40),
            job("j5", "SUCCEEDED", "al%", "def-a:1", 50),
            job("p", "PENDING", "arr", "def-a:1", 60),
            child("p", 0, "RUNNING"),
            child("p", 1, "RUNNING"),
            other,
        ])
        .await
        .unwrap();

    // Children and other queues never appear in a queue listing.
    assert_eq!(
        ids(&store, queue()).await,
        ["p", "j5", "j4", "j3", "j2", "j1"]
    );
    let by_status = |s: &[&str]| JobListQuery {
        statuses: statuses(s),
        ..queue()
    };
    for (status, expect) in [
        ("SUBMITTED", vec!["j1"]),
        ("PENDING", vec!["p"]),
        ("RUNNABLE", vec![]),
        ("STARTING", vec![]),
        ("RUNNING", vec!["j3", "j2"]),
        ("SUCCEEDED", vec!["j5"]),
        ("FAILED", vec!["j4"]),
    ] {
        assert_eq!(ids(&store, by_status(&[status])).await, expect, "{status}");
    }
    assert_eq!(
        ids(&store, by_status(&["FAILED", "SUBMITTED", "SUCCEEDED"])).await,
        ["j5", "j4", "j1"]
    );
    assert!(ids(&store, by_status(&[])).await.is_empty());

    let name = |n: &str, prefix: bool| JobListQuery {
        name: Some(n.into()),
        name_is_prefix: prefix,
        ..queue()
    };
    assert_eq!(ids(&store, name("alpha", false)).await, ["j1"]);
    // Prefixes are case-sensitive on both backends and `%` is not a wildcard.
    assert_eq!(ids(&store, name("alpha", true)).await, ["j2", "j1"]);
    assert_eq!(ids(&store, name("Al", true)).await, ["j3"]);
    assert_eq!(ids(&store, name("al%", true)).await, ["j5"]);
    assert_eq!(ids(&store, name("a", true)).await, ["p", "j5", "j2", "j1"]);
    assert!(ids(&store, name("alphabets", true)).await.is_empty());

    let def = |d: &str, prefix: bool| JobListQuery {
        definition: Some(format!("{DEF}{d}")),
        definition_is_prefix: prefix,
        ..queue()
    };
    assert_eq!(ids(&store, def("def-a:1", false)).await, ["p", "j5", "j1"]);
    assert_eq!(
        ids(&store, def("def-a:", true)).await,
        ["p", "j5", "j2", "j1"]
    );
    assert_eq!(
        ids(&store, def("def-a", true)).await,
        ["p", "j5", "j3", "j2", "j1"]
    );
    assert!(ids(&store, def("def-a", false)).await.is_empty());

    let window = |before: Option<i64>, after: Option<i64>| JobListQuery {
        created_before: before,
        created_after: after,
        ..queue()
    };
    // Both bounds are exclusive.
    assert_eq!(ids(&store, window(Some(30), None)).await, ["j2", "j1"]);
    assert_eq!(ids(&store, window(None, Some(40))).await, ["p", "j5"]);
    assert_eq!(
        ids(&store, window(Some(50), Some(10))).await,
        ["j4", "j3", "j2"]
    );

    // Filters combine.
    let combined = JobListQuery {
        statuses: statuses(&["RUNNING", "SUBMITTED"]),
        name: Some("alpha".into()),
        name_is_prefix: true,
        definition: Some(format!("{DEF}def-a:")),
        definition_is_prefix: true,
        created_after: Some(10),
        ..queue()
    };
    assert_eq!(ids(&store, combined).await, ["j2"]);

    let other_queue = query(JobScope::Queue(OTHER_QUEUE.into()));
    assert_eq!(ids(&store, other_queue).await, ["o1"]);
    let missing = query(JobScope::Queue("arn:none".into()));
    let page = store.list_jobs(&missing).await.unwrap();
    assert!(page.jobs.is_empty() && page.next.is_none());
}

async fn list_queue_pagination(db: &TestDb) {
    let store = db.open().await;
    // Four jobs share each created_at, and IDs are not in creation order, so the job_id
    // tie-break decides order within a millisecond and the cursor must respect it.
    let statuses_cycle = ["RUNNING", "SUBMITTED", "RUNNABLE"];
    let rows: Vec<JobRow> = (0..57)
        .map(|i| {
            let id = format!("{:02x}-{i}", (i * 37) % 256);
            job(
                &id,
                statuses_cycle[i % 3],
                "n",
                "d:1",
                1_000 + (i / 4) as i64,
            )
        })
        .collect();
    store.upsert_jobs(rows.clone()).await.unwrap();
    let mut expected = rows.clone();
    expected.sort_by(|a, b| (b.created_at, &b.job_id).cmp(&(a.created_at, &a.job_id)));

    for limit in [1, 4, 5, 10, 57, 100] {
        let (got, pages) = list_all(&store, JobListQuery { limit, ..queue() }).await;
        assert_eq!(got, expected, "limit {limit}");
        assert_eq!(
            pages,
            57usize.div_ceil(limit as usize).max(1),
            "limit {limit}"
        );
    }

    // Exactly one full page: no cursor, since nothing follows.
    let page = store
        .list_jobs(&JobListQuery {
            limit: 57,
            ..queue()
        })
        .await
        .unwrap();
    assert_eq!(page.jobs.len(), 57);
    assert!(page.next.is_none());

    let (got, _) = list_all(
        &store,
        JobListQuery {
            limit: 3,
            statuses: statuses(&["RUNNING", "RUNNABLE"]),
            ..queue()
        },
    )
    .await;
    let want: Vec<JobRow> = expected
        .iter()
        .filter(|j| j.status != "SUBMITTED")
        .cloned()
        .collect();
    assert_eq!(got, want);

    // A time window paged through: both bounds hold on every page.
    let (got, _) = list_all(
        &store,
        JobListQuery {
            limit: 4,
            created_before: Some(1_010),
            created_after: Some(1_002),
            ..queue()
        },
    )
    .await;
    let want: Vec<JobRow> = expected
        .iter()
        .filter(|j| j.created_at > 1_002 && j.created_at < 1_010)
        .cloned()
        .collect();
    assert_eq!(want.len(), 28);
    assert_eq!(got, want);

    let first = store
        .list_jobs(&JobListQuery {
            limit: 2,
            ..queue()
        })
        .await
        .unwrap();
    assert_eq!(
        first.next,
        Some(JobCursor::Created {
            created_at: expected[1].created_at,
            job_id: expected[1].job_id.clone(),
        })
    );
    // A cursor of the wrong kind is a caller bug, and not retryable.
    let err = store
        .list_jobs(&JobListQuery {
            cursor: Some(JobCursor::Index(3)),
            ..queue()
        })
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err}");
}

async fn array_children_paging(db: &TestDb) {
    let store = db.open().await;
    let mut rows = vec![job("p", "PENDING", "arr", "d:1", 500)];
    // Inserted out of order; listed by index.
    for i in (0..25).rev() {
        let status = if i % 5 == 0 { "FAILED" } else { "SUCCEEDED" };
        rows.push(child("p", i, status));
    }
    rows.push(child("other", 0, "SUCCEEDED"));
    store.upsert_jobs(rows).await.unwrap();

    let scope = query(JobScope::ArrayParent("p".into()));
    let (got, pages) = list_all(
        &store,
        JobListQuery {
            limit: 7,
            ..scope.clone()
        },
    )
    .await;
    assert_eq!(pages, 4);
    let indexes: Vec<i32> = got.iter().map(|j| j.array_index.unwrap()).collect();
    assert_eq!(indexes, (0..25).collect::<Vec<_>>());
    assert!(got.iter().all(|j| j.array_parent.as_deref() == Some("p")));

    let first = store
        .list_jobs(&JobListQuery {
            limit: 7,
            ..scope.clone()
        })
        .await
        .unwrap();
    assert_eq!(first.next, Some(JobCursor::Index(6)));

    let (failed, _) = list_all(
        &store,
        JobListQuery {
            limit: 2,
            statuses: statuses(&["FAILED"]),
            ..scope.clone()
        },
    )
    .await;
    let indexes: Vec<i32> = failed.iter().map(|j| j.array_index.unwrap()).collect();
    assert_eq!(indexes, [0, 5, 10, 15, 20]);

    // Children are never top-level jobs of the queue.
    assert_eq!(ids(&store, queue()).await, ["p"]);
    assert!(
        ids(&store, query(JobScope::ArrayParent("nobody".into())))
            .await
            .is_empty()
    );
}

async fn count_children_by_status(db: &TestDb) {
    let store = db.open().await;
    let mut rows = vec![job("p", "RUNNING", "arr", "d:1", 1)];
    rows.extend((0..10).map(|i| child("p", i, "SUCCEEDED")));
    rows.extend((10..13).map(|i| child("p", i, "FAILED")));
    rows.push(child("p", 13, "RUNNING"));
    rows.push(child("q", 0, "RUNNING"));
    store.upsert_jobs(rows).await.unwrap();
    let mut counts = store.count_children_by_status("p").await.unwrap();
    counts.sort();
    assert_eq!(
        counts,
        [
            ("FAILED".to_string(), 3),
            ("RUNNING".to_string(), 1),
            ("SUCCEEDED".to_string(), 10)
        ]
    );
    assert!(
        store
            .count_children_by_status("none")
            .await
            .unwrap()
            .is_empty()
    );

    store
        .upsert_jobs(vec![child("p", 13, "SUCCEEDED")])
        .await
        .unwrap();
    let mut counts = store.count_children_by_status("p").await.unwrap();
    counts.sort();
    assert_eq!(
        counts,
        [("FAILED".to_string(), 3), ("SUCCEEDED".to_string(), 11)]
    );
}

async fn jobs_with_status(db: &TestDb) {
    let store = db.open().await;
    let rows = vec![
        job("a", "SUBMITTED", "a", "d:1", 1),
        job("b", "RUNNING", "b", "d:1", 2),
        job("c", "SUCCEEDED", "c", "d:1", 3),
        job("p", "PENDING", "p", "d:1", 4),
        child("p", 0, "RUNNING"),
        child("p", 1, "FAILED"),
    ];
    store.upsert_jobs(rows.clone()).await.unwrap();
    let active = store
        .jobs_with_status(&["SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING"])
        .await
        .unwrap();
    let want: Vec<JobRow> = rows
        .iter()
        .filter(|j| !matches!(j.status.as_str(), "SUCCEEDED" | "FAILED"))
        .cloned()
        .collect();
    assert_eq!(sorted(active), sorted(want));
    let done = store
        .jobs_with_status(&["FAILED", "SUCCEEDED"])
        .await
        .unwrap();
    let done: BTreeSet<String> = done.into_iter().map(|j| j.job_id).collect();
    assert_eq!(done, BTreeSet::from(["c".to_string(), "p:1".to_string()]));
    assert!(store.jobs_with_status(&[]).await.unwrap().is_empty());
    assert!(
        store
            .jobs_with_status(&["STARTING"])
            .await
            .unwrap()
            .is_empty()
    );
}

async fn count_jobs_by_queue_status(db: &TestDb) {
    let store = db.open().await;
    assert!(store.count_jobs_by_queue_status().await.unwrap().is_empty());
    let mut o = job("o", "RUNNING", "o", "d:1", 1);
    o.job_queue = OTHER_QUEUE.into();
    store
        .upsert_jobs(vec![
            job("a", "RUNNING", "a", "d:1", 1),
            job("b", "RUNNING", "b", "d:1", 1),
            job("c", "SUBMITTED", "c", "d:1", 1),
            child("b", 0, "RUNNING"),
            o,
        ])
        .await
        .unwrap();
    let mut counts = store.count_jobs_by_queue_status().await.unwrap();
    counts.sort();
    let row = |q: &str, s: &str, n: i64| (q.to_string(), s.to_string(), n);
    assert_eq!(
        counts,
        [
            row(QUEUE, "RUNNING", 3),
            row(QUEUE, "SUBMITTED", 1),
            row(OTHER_QUEUE, "RUNNING", 1),
        ]
    );
}

async fn concurrent_upserts_durable_across_reopen(db: &TestDb) {
    let store = Arc::new(db.open().await);
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .upsert_jobs(vec![job(&format!("c{i:03}"), "SUBMITTED", "c", "d:1", i)])
                    .await
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task").expect("upsert acknowledged");
    }
    // No close(): durability must not depend on an orderly shutdown.
    drop(store);

    let store = db.open().await;
    let ids: Vec<String> = (0..200).map(|i| format!("c{i:03}")).collect();
    let mut got = Vec::new();
    for chunk in ids.chunks(100) {
        got.extend(store.get_jobs(chunk).await.unwrap());
    }
    assert_eq!(got.len(), 200);
    let (listed, _) = list_all(
        &store,
        JobListQuery {
            limit: 64,
            ..queue()
        },
    )
    .await;
    assert_eq!(listed.len(), 200);
}

/// Relaxed and durable writes interleaved, in one group or not: each is visible once it
/// returns, the later version of a row wins, and a process that drops the store without closing
/// it (as a crash would) leaves every acknowledged row for the next open.
async fn relaxed_upserts_commit_and_survive_reopen(db: &TestDb) {
    let store = Arc::new(db.open().await);
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let row = job(&format!("r{i:03}"), "RUNNABLE", "r", "d:1", i);
                if i % 2 == 0 {
                    store.upsert_jobs_relaxed(vec![row]).await
                } else {
                    store.upsert_jobs(vec![row]).await
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task").expect("upsert acknowledged");
    }
    store
        .upsert_jobs_relaxed(vec![job("r000", "SUCCEEDED", "r", "d:1", 0)])
        .await
        .expect("relaxed upsert");
    let got = store.get_jobs(&["r000".to_string()]).await.unwrap();
    assert_eq!(got[0].status, "SUCCEEDED", "visible as soon as it returns");
    drop(store);

    let store = db.open().await;
    let ids: Vec<String> = (0..100).map(|i| format!("r{i:03}")).collect();
    let got = store.get_jobs(&ids).await.unwrap();
    assert_eq!(got.len(), 100);
    let first = got.iter().find(|r| r.job_id == "r000").expect("r000");
    assert_eq!(first.status, "SUCCEEDED");
}

async fn large_array_upsert(db: &TestDb) {
    let store = db.open().await;
    let mut rows = vec![job("big", "PENDING", "big", "d:1", 1)];
    rows.extend((0..10_000).map(|i| JobRow {
        doc: format!(r#"{{"jobId":"big:{i}","arrayProperties":{{"index":{i}}},"status":"PENDING","container":{{"command":["echo","hello"]}}}}"#),
        ..child("big", i, "PENDING")
    }));
    store.upsert_jobs(rows).await.unwrap();
    assert_eq!(
        store.count_children_by_status("big").await.unwrap(),
        [("PENDING".to_string(), 10_000)]
    );
    let page = store
        .list_jobs(&JobListQuery {
            limit: 100,
            cursor: Some(JobCursor::Index(9_949)),
            ..query(JobScope::ArrayParent("big".into()))
        })
        .await
        .unwrap();
    assert_eq!(page.jobs.len(), 50);
    assert_eq!(page.jobs[0].array_index, Some(9_950));
    assert!(page.next.is_none());

    // The whole array changes status in one call, as the scheduler does.
    let rows: Vec<JobRow> = (0..10_000).map(|i| child("big", i, "RUNNABLE")).collect();
    store.upsert_jobs(rows).await.unwrap();
    assert_eq!(
        store.count_children_by_status("big").await.unwrap(),
        [("RUNNABLE".to_string(), 10_000)]
    );
}

async fn migrations_rerun_harmlessly(db: &TestDb) {
    let store = db.open().await;
    store.set_meta("k", "v").await.unwrap();
    store
        .upsert_jobs(vec![job("a", "RUNNING", "a", "d:1", 1)])
        .await
        .unwrap();
    store.close().await;
    for _ in 0..2 {
        let store = db.open().await;
        assert_eq!(store.get_meta("k").await.unwrap().as_deref(), Some("v"));
        assert_eq!(store.get_jobs(&["a".into()]).await.unwrap().len(), 1);
    }
}

async fn concurrent_opens(db: &TestDb) {
    // Four servers starting at once against an empty database.
    let opened = futures::future::join_all((0..4).map(|_| SqlStore::open(&db.url))).await;
    let stores: Vec<SqlStore> = opened
        .into_iter()
        .map(|r| r.expect("concurrent open"))
        .collect();
    for (i, store) in stores.iter().enumerate() {
        store
            .upsert_jobs(vec![job(&format!("s{i}"), "RUNNING", "s", "d:1", 1)])
            .await
            .unwrap();
    }
    assert_eq!(ids(&stores[0], queue()).await.len(), 4);
}

/// Expands each named test body into a `#[tokio::test]` against `$backend`.
fn event(job_id: &str, at: i64, status: &str) -> NewEvent {
    NewEvent {
        at,
        kind: "Batch Job State Change".into(),
        job_id: job_id.into(),
        doc: format!(r#"{{"status":"{status}"}}"#),
    }
}

/// Events are stored with the rows of their write, numbered 1, 2, … in commit order across
/// writes and reopens, read in order from any point, and pruned without ever losing the newest
/// (whose number the next event continues from).
async fn job_events_log(db: &TestDb) {
    let store = Arc::new(db.open().await);
    assert_eq!(store.last_event_seq().await.unwrap(), 0);
    let signal = store.event_signal();
    let woken = signal.notified();
    store
        .write_jobs_with_events(
            vec![job("e1", "RUNNABLE", "e", "d:1", 1)],
            vec![event("e1", 10, "RUNNABLE")],
            false,
        )
        .await
        .unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), woken)
        .await
        .expect("a commit with events wakes readers");
    // Many writes with several events each, one after the other as the engine makes them.
    for w in 0..50 {
        let rows = vec![job("e1", "RUNNING", "e", "d:1", 1)];
        let events = (0..3)
            .map(|i| event("e1", 100 + w * 3 + i, "RUNNING"))
            .collect();
        store
            .write_jobs_with_events(rows, events, w % 2 == 0)
            .await
            .unwrap();
    }
    // A write of events alone (a job announced without a row change is still a row write in
    // the engine, but the store takes either).
    store
        .write_jobs_with_events(Vec::new(), vec![event("e2", 999, "PENDING")], true)
        .await
        .unwrap();
    assert_eq!(store.last_event_seq().await.unwrap(), 152);
    let all = store.events_after(0, 1000).await.unwrap();
    assert_eq!(all.len(), 152);
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.seq, i as i64 + 1, "gap-free, in commit order");
    }
    assert_eq!(all[0].at, 10);
    assert_eq!(all[151].job_id, "e2");
    let page = store.events_after(100, 10).await.unwrap();
    assert_eq!(
        page.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (101..=110).collect::<Vec<_>>()
    );
    let got = store.get_jobs(&["e1".to_string()]).await.unwrap();
    assert_eq!(got[0].status, "RUNNING", "the rows went with the events");
    drop(store);

    let store = db.open().await;
    assert_eq!(
        store.last_event_seq().await.unwrap(),
        152,
        "durable across reopen"
    );
    // Only events at or below the bound and older than the time go; never the newest.
    // seq 1 (at 10) and seqs 2..=21 (at 100..=119).
    assert_eq!(store.prune_events(50, 120).await.unwrap(), 21);
    assert_eq!(store.events_after(0, 1).await.unwrap()[0].seq, 22);
    assert_eq!(store.prune_events(i64::MAX, i64::MAX).await.unwrap(), 130);
    let left = store.events_after(0, 10).await.unwrap();
    assert_eq!(left.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![152]);
    store
        .write_jobs_with_events(Vec::new(), vec![event("e3", 1000, "RUNNABLE")], true)
        .await
        .unwrap();
    assert_eq!(
        store.last_event_seq().await.unwrap(),
        153,
        "numbers never go back"
    );
}

fn usage(job: &str, attempt: u32, share: Option<&str>, started: i64, stopped: i64) -> AttemptUsage {
    AttemptUsage {
        job_id: job.to_owned(),
        attempt,
        job_queue: QUEUE.to_owned(),
        share_identifier: share.map(str::to_owned),
        job_definition: "d:1".to_owned(),
        compute_environment: "ce".to_owned(),
        instance_id: "i-1".to_owned(),
        instance_type: "m5.large".to_owned(),
        spot: false,
        price_per_hour: 0.096,
        share: 0.5,
        started_at: started,
        stopped_at: stopped,
    }
}

fn instance(id: &str, launched: i64) -> InstanceUsage {
    InstanceUsage {
        instance_id: id.to_owned(),
        compute_environment: "ce".to_owned(),
        instance_type: "m5.large".to_owned(),
        spot: id.ends_with('s'),
        price_per_hour: 0.096,
        launched_at: launched,
        terminated_at: None,
    }
}

/// Attempt usage is stored with the job rows of its write, an attempt ended again replacing its
/// row; a range's cost clips each attempt to it and sums per queue, share, definition and
/// environment. The instance ledger keeps an instance's first launch time and price, and closes
/// an environment's instances at the first record without them.
async fn cost_ledger(db: &TestDb) {
    let store = Arc::new(db.open().await);
    let hour = 3_600_000;
    let appends = Appends {
        events: Vec::new(),
        usage: vec![
            usage("u1", 1, Some("a"), 0, hour),
            usage("u2", 1, None, 0, 2 * hour),
        ],
    };
    store
        .write_jobs_with(vec![job("u1", "SUCCEEDED", "u", "d:1", 1)], appends, false)
        .await
        .unwrap();
    // A restart ends u2's attempt again, later: its row is replaced, not added.
    let again = Appends {
        events: Vec::new(),
        usage: vec![usage("u2", 1, None, 0, 3 * hour)],
    };
    store
        .write_jobs_with(vec![job("u2", "FAILED", "u", "d:1", 1)], again, true)
        .await
        .unwrap();
    let all = store.attempt_cost_between(0, 10 * hour).await.unwrap();
    assert_eq!(all.len(), 2, "{all:?}");
    let by_share = |s: Option<&str>| {
        all.iter()
            .find(|g| g.share_identifier.as_deref() == s)
            .unwrap()
    };
    assert_eq!(by_share(Some("a")).attempts, 1);
    assert!((by_share(Some("a")).cost - 0.048).abs() < 1e-12);
    assert!((by_share(None).cost - 0.144).abs() < 1e-12, "{all:?}");
    assert!((by_share(None).seconds - 10_800.0).abs() < 1e-9);
    // Clipped: the second half hour of u1 and of u2.
    let part = store.attempt_cost_between(hour / 2, hour).await.unwrap();
    let total: f64 = part.iter().map(|g| g.cost).sum();
    assert!((total - 2.0 * 0.096 * 0.5 * 0.5).abs() < 1e-12, "{part:?}");
    assert!(
        store
            .attempt_cost_between(5 * hour, 6 * hour)
            .await
            .unwrap()
            .is_empty()
    );

    store
        .record_instances("ce", vec![instance("i-1", 100), instance("i-2s", 200)], 300)
        .await
        .unwrap();
    // Seen again after a restart with a later launch guess: the first record stands.
    store
        .record_instances("ce", vec![instance("i-1", 250), instance("i-2s", 200)], 400)
        .await
        .unwrap();
    // i-2s is gone; another environment's record leaves this one's instances alone.
    store
        .record_instances("other", Vec::new(), 450)
        .await
        .unwrap();
    store
        .record_instances("ce", vec![instance("i-1", 100)], 500)
        .await
        .unwrap();
    let mut seen = store.instances_between(0, 1_000).await.unwrap();
    seen.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
    assert_eq!(seen.len(), 2);
    assert_eq!((seen[0].launched_at, seen[0].terminated_at), (100, None));
    assert_eq!(
        (seen[1].launched_at, seen[1].terminated_at),
        (200, Some(500))
    );
    assert!(seen[1].spot && !seen[0].spot);
    // Ranges: i-2s ran [200, 500).
    let ids = |v: Vec<InstanceUsage>| v.into_iter().map(|i| i.instance_id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.instances_between(500, 600).await.unwrap()),
        vec!["i-1"]
    );
    assert_eq!(
        ids(store.instances_between(0, 150).await.unwrap()),
        vec!["i-1"]
    );
    assert_eq!(
        ids(store.instances_between(0, 100).await.unwrap()),
        Vec::<String>::new()
    );
    // All closed when the environment has none left.
    store.record_instances("ce", Vec::new(), 900).await.unwrap();
    let closed = store.instances_between(0, 1_000).await.unwrap();
    assert!(
        closed.iter().all(|i| i.terminated_at.is_some()),
        "{closed:?}"
    );
}

macro_rules! store_suite {
    ($backend:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let db = crate::TestDb::new($backend).await;
                crate::$name(&db).await;
            }
        )*
    };
}

macro_rules! all_store_tests {
    ($backend:expr) => {
        store_suite!(
            $backend;
            resources_put_replace_delete_load,
            meta_roundtrip,
            upsert_then_get,
            upsert_replaces,
            list_queue_filters,
            list_queue_pagination,
            array_children_paging,
            count_children_by_status,
            jobs_with_status,
            count_jobs_by_queue_status,
            concurrent_upserts_durable_across_reopen,
            relaxed_upserts_commit_and_survive_reopen,
            large_array_upsert,
            migrations_rerun_harmlessly,
            concurrent_opens,
            job_events_log,
            cost_ledger,
        );
    };
}

mod sqlite {
    all_store_tests!(crate::Backend::Sqlite);
}

mod postgres {
    use flotilla::store::Store;

    all_store_tests!(crate::Backend::Postgres);

    /// PostgreSQL rejects NUL in TEXT (SQLite stores it), which makes one caller's batch fail for
    /// reasons of its own: that caller alone must see the error, and not as retryable.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_row_fails_only_its_caller() {
        let db = crate::TestDb::new(crate::Backend::Postgres).await;
        let store = std::sync::Arc::new(db.open().await);
        // A large write keeps the writer busy so the callers below queue up and share a group.
        let busy = {
            let store = store.clone();
            let rows: Vec<_> = (0..10_000)
                .map(|i| crate::child("big", i, "PENDING"))
                .collect();
            tokio::spawn(async move { store.upsert_jobs(rows).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let name = if i == 25 { "bad\0name" } else { "good" };
                    let row = crate::job(&format!("b{i}"), "SUBMITTED", name, "d:1", i);
                    store.upsert_jobs(vec![row]).await
                })
            })
            .collect();
        let mut failures = Vec::new();
        for (i, t) in tasks.into_iter().enumerate() {
            if let Err(e) = t.await.expect("task") {
                assert!(!e.is_retryable(), "{e}");
                failures.push(i);
            }
        }
        assert_eq!(failures, [25]);
        busy.await.expect("task").expect("large upsert");
        let ids: Vec<String> = (0..50).map(|i| format!("b{i}")).collect();
        assert_eq!(store.get_jobs(&ids).await.unwrap().len(), 49);
    }
}
