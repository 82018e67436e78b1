//! The leader lease of replicas on PostgreSQL, at the store: one holder at a time, a takeover
//! only once the lease has run out, and every write of a deposed leader refused by the database
//! (job writes, relaxed or durable, resource writes, inbox deletes), while a follower's writes
//! keep landing. The replica-level behaviour (failover with jobs running) is in `tests/ha.rs`.

mod common;

use common::PgDatabase;
use flotilla::store::{JobRow, ResourceKind, ResourceRow, SqlStore, Store, StoreError};
use std::time::Duration;

fn job(id: &str, status: &str) -> JobRow {
    JobRow {
        job_id: id.to_owned(),
        job_queue: "arn:aws:batch:us-east-1:000000000000:job-queue/q".to_owned(),
        status: status.to_owned(),
        job_name: "j".to_owned(),
        job_definition: "arn:aws:batch:us-east-1:000000000000:job-definition/d:1".to_owned(),
        array_parent: None,
        array_index: None,
        created_at: 1,
        doc: format!(r#"{{"jobId":"{id}","status":"{status}"}}"#),
    }
}

fn resource(name: &str) -> ResourceRow {
    ResourceRow {
        kind: ResourceKind::JobQueue,
        arn: format!("arn:aws:batch:us-east-1:000000000000:job-queue/{name}"),
        name: name.to_owned(),
        doc: "{}".to_owned(),
    }
}

#[tokio::test]
async fn a_deposed_leader_writes_nothing_and_a_follower_keeps_writing() {
    let db = PgDatabase::create();
    let a = SqlStore::open(&db.url).await.expect("open a");
    let b = SqlStore::open(&db.url).await.expect("open b");
    let (ra, rb) = (a.replication().expect("pg"), b.replication().expect("pg"));
    let ttl = Duration::from_secs(1);

    let ea = ra.try_acquire("a", ttl).await.unwrap().expect("a leads");
    assert_eq!(
        rb.try_acquire("b", ttl).await.unwrap(),
        None,
        "a live lease is not taken over"
    );
    assert!(ra.renew("a", ea, ttl).await.unwrap());
    ra.set_fence(ea);
    a.upsert_jobs(vec![job("j1", "RUNNABLE")])
        .await
        .expect("the leader writes");
    a.put_resource(&resource("q1"))
        .await
        .expect("the leader writes resources");

    // `a` stops renewing (paused); once the lease has run out `b` takes over.
    let eb = loop {
        if let Some(e) = rb.try_acquire("b", ttl).await.unwrap() {
            break e;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(eb > ea, "a takeover bumps the epoch");
    rb.set_fence(eb);
    let lease = rb.current().await.unwrap().expect("a lease row");
    assert_eq!((lease.holder.as_str(), lease.epoch), ("b", eb));

    // `a` wakes up and goes on as if it still led: nothing lands.
    assert!(!ra.renew("a", ea, ttl).await.unwrap(), "a cannot renew");
    for write in [
        a.upsert_jobs(vec![job("j1", "SUCCEEDED")]).await,
        a.upsert_jobs_relaxed(vec![job("j1", "FAILED")]).await,
        a.upsert_jobs(vec![job("j2", "RUNNABLE")]).await,
        a.put_resource(&resource("q2")).await,
        a.delete_resource(ResourceKind::JobQueue, &resource("q1").arn)
            .await,
    ] {
        assert!(
            matches!(write, Err(StoreError::Fenced)),
            "a deposed leader's write must be refused as fenced, got {write:?}"
        );
    }
    rb.push(r#"{"submitted":{"ids":["x"]}}"#).await.unwrap();
    let items = rb.peek(10).await.unwrap();
    assert_eq!(items.len(), 1);
    assert!(
        matches!(ra.remove(&[items[0].0]).await, Err(StoreError::Fenced)),
        "a deposed leader cannot drop its successor's inbox"
    );
    assert_eq!(rb.peek(10).await.unwrap().len(), 1);

    // What the store holds is the old leader's last accepted state plus the new leader's.
    let rows = b.get_jobs(&["j1".into(), "j2".into()]).await.unwrap();
    assert_eq!(rows.len(), 1, "j2 was never written");
    assert_eq!(rows[0].status, "RUNNABLE");
    let names: Vec<String> = b
        .load_resources()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, vec!["q1".to_string()]);

    // The new leader writes; so does a replica that does not lead (fence 0).
    b.upsert_jobs(vec![job("j1", "SUCCEEDED")])
        .await
        .expect("new leader writes");
    let c = SqlStore::open(&db.url).await.expect("open c");
    c.upsert_jobs(vec![job("j3", "SUBMITTED")])
        .await
        .expect("a follower's submission lands");
    let before = c.replication().unwrap().catalog_version().await.unwrap();
    c.put_resource(&resource("q3"))
        .await
        .expect("a follower's catalog change lands");
    assert!(
        c.replication().unwrap().catalog_version().await.unwrap() > before,
        "each resource write moves the catalog version other replicas watch"
    );
    rb.remove(&[items[0].0])
        .await
        .expect("the leader deletes what it applied");
    assert!(rb.peek(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_released_lease_is_taken_at_once() {
    let db = PgDatabase::create();
    let a = SqlStore::open(&db.url).await.expect("open a");
    let b = SqlStore::open(&db.url).await.expect("open b");
    let (ra, rb) = (a.replication().unwrap(), b.replication().unwrap());
    let ttl = Duration::from_secs(60);
    let ea = ra.try_acquire("a", ttl).await.unwrap().expect("a leads");
    assert_eq!(rb.try_acquire("b", ttl).await.unwrap(), None);
    ra.release("a", ea).await.unwrap();
    let eb = rb
        .try_acquire("b", ttl)
        .await
        .unwrap()
        .expect("b leads after a clean stop");
    assert_eq!(eb, ea + 1);
}
