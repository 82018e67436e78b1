//! What replicas on one PostgreSQL database share besides jobs and resources: the leader lease,
//! the inbox of commands for the leader, and the catalog's version.
//!
//! **The lease is a row, not an advisory lock.** A session-held `pg_advisory_lock` is released
//! only when the session ends: a leader that is paused (SIGSTOP) or cut off with its TCP
//! connection still open keeps it for as long as the kernel keeps the connection, which is
//! unbounded. A row with an expiry read from the database's own clock has a bounded life
//! whatever the holder does, and its epoch, bumped by every takeover, fences the old holder:
//! each write the leader makes checks, in the same transaction and under a share lock on the
//! row, that the epoch is still its own (so a takeover waits for writes in flight and every
//! write after it fails).

use super::{PgPool, StoreResult, map_err};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Run once per database, under the migration lock. PostgreSQL only: SQLite is one server.
pub(super) const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS flotilla_lease (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        holder TEXT NOT NULL,
        epoch BIGINT NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS flotilla_inbox (
        seq BIGSERIAL PRIMARY KEY,
        item TEXT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS flotilla_catalog (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        version BIGINT NOT NULL
    )",
    "INSERT INTO flotilla_catalog (id, version) VALUES (1, 0) ON CONFLICT (id) DO NOTHING",
    // Answers of the leader to questions a follower queued (GetJobQueueSnapshot).
    "CREATE TABLE IF NOT EXISTS flotilla_reply (
        id TEXT PRIMARY KEY,
        body TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
    )",
];

/// The channel `NOTIFY`ed on each inbox push, so that the leader need not poll fast.
pub const INBOX_CHANNEL: &str = "flotilla_inbox";

/// The channel `NOTIFY`ed by every catalog change.
pub const CATALOG_CHANNEL: &str = "flotilla_catalog";

/// The marker of a fenced write in a driver error (see [`map_err`]).
pub(super) const FENCED: &str = "flotilla: leader epoch superseded";

/// The lease as the database holds it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    pub holder: String,
    pub epoch: i64,
    /// False once the lease has run out and nobody renewed it.
    pub live: bool,
}

/// The replication side of the PostgreSQL store.
pub struct Replication {
    pool: PgPool,
    /// The epoch this process leads under, 0 when it does not lead: every write checks it.
    fence: Arc<AtomicI64>,
}

impl Replication {
    pub(super) fn new(pool: PgPool, fence: Arc<AtomicI64>) -> Replication {
        Replication { pool, fence }
    }

    /// A connection string's pool, for LISTEN.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Takes the lease for `holder` if nobody holds a live one; its new epoch, or `None`.
    pub async fn try_acquire(&self, holder: &str, ttl: Duration) -> StoreResult<Option<i64>> {
        // Bounded: a leader's write in flight holds a share lock on the row; the caller tries
        // again at its next poll rather than hanging here.
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        sqlx::query("SET LOCAL lock_timeout = '1s'")
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        let epoch = sqlx::query_scalar(
            "INSERT INTO flotilla_lease (id, holder, epoch, expires_at) \
             VALUES (1, $1, 1, clock_timestamp() + make_interval(secs => $2)) \
             ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, \
             epoch = flotilla_lease.epoch + 1, expires_at = excluded.expires_at \
             WHERE flotilla_lease.expires_at < clock_timestamp() \
             RETURNING epoch",
        )
        .bind(holder)
        .bind(ttl.as_secs_f64())
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(epoch)
    }

    /// Extends the lease of `epoch`; false when it is no longer this holder's.
    pub async fn renew(&self, holder: &str, epoch: i64, ttl: Duration) -> StoreResult<bool> {
        let renewed: Option<i64> = sqlx::query_scalar(
            "UPDATE flotilla_lease SET expires_at = clock_timestamp() + make_interval(secs => $3) \
             WHERE id = 1 AND holder = $1 AND epoch = $2 RETURNING epoch",
        )
        .bind(holder)
        .bind(epoch)
        .bind(ttl.as_secs_f64())
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(renewed.is_some())
    }

    /// Gives the lease up at a clean stop, so a follower need not wait for it to run out.
    pub async fn release(&self, holder: &str, epoch: i64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE flotilla_lease SET expires_at = clock_timestamp() \
             WHERE id = 1 AND holder = $1 AND epoch = $2",
        )
        .bind(holder)
        .bind(epoch)
        .execute(&self.pool)
        .await
        .map(drop)
        .map_err(map_err)
    }

    pub async fn current(&self) -> StoreResult<Option<LeaseRow>> {
        let row: Option<(String, i64, bool)> = sqlx::query_as(
            "SELECT holder, epoch, expires_at > clock_timestamp() FROM flotilla_lease WHERE id = 1",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(row.map(|(holder, epoch, live)| LeaseRow {
            holder,
            epoch,
            live,
        }))
    }

    /// The id every replica of this database shares (made by the first to ask): what the
    /// Docker runtime labels its containers with, so that the replica that takes over
    /// recognises and adopts the containers the last leader started on the same daemon.
    pub async fn group_id(&self) -> StoreResult<String> {
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ('replica_group', $1) ON CONFLICT (key) DO NOTHING",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        sqlx::query_scalar("SELECT value FROM meta WHERE key = 'replica_group'")
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)
    }

    /// From now on every write of this process must find `epoch` in the lease row (0: none).
    pub fn set_fence(&self, epoch: i64) {
        self.fence.store(epoch, Ordering::SeqCst);
    }

    /// Queues `item` for the leader (durably) and wakes it.
    pub async fn push(&self, item: &str) -> StoreResult<()> {
        sqlx::query(
            "WITH i AS (INSERT INTO flotilla_inbox (item) VALUES ($1) RETURNING seq) \
             SELECT pg_notify($2, '') FROM i",
        )
        .bind(item)
        .bind(INBOX_CHANNEL)
        .execute(&self.pool)
        .await
        .map(drop)
        .map_err(map_err)
    }

    /// The oldest `limit` queued items. Sequence numbers are taken at insert but committed in
    /// any order, so the reader never keeps a cursor: it takes what is there and deletes what it
    /// has applied by number, and an item that commits late is found by a later read.
    pub async fn peek(&self, limit: i64) -> StoreResult<Vec<(i64, String)>> {
        sqlx::query_as("SELECT seq, item FROM flotilla_inbox ORDER BY seq LIMIT $1")
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)
    }

    /// Deletes applied items; fenced like every write of the leader, so a deposed leader cannot
    /// drop commands its successor has not applied.
    pub async fn remove(&self, seqs: &[i64]) -> StoreResult<()> {
        if seqs.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        check_fence(&mut tx, self.fence.load(Ordering::SeqCst))
            .await
            .map_err(map_err)?;
        sqlx::query("DELETE FROM flotilla_inbox WHERE seq = ANY($1)")
            .bind(seqs)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)
    }

    /// The leader's answer to a question queued under `id`.
    pub async fn put_reply(&self, id: &str, body: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO flotilla_reply (id, body) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(body)
        .execute(&self.pool)
        .await
        .map(drop)
        .map_err(map_err)
    }

    /// Takes the answer to `id` if it has come (and old answers nobody took).
    pub async fn take_reply(&self, id: &str) -> StoreResult<Option<String>> {
        let body: Option<String> =
            sqlx::query_scalar("DELETE FROM flotilla_reply WHERE id = $1 RETURNING body")
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(map_err)?;
        if body.is_some() {
            sqlx::query(
                "DELETE FROM flotilla_reply WHERE created_at < clock_timestamp() - interval '5 minutes'",
            )
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        }
        Ok(body)
    }

    /// Bumped in the transaction of every resource write: a replica whose catalog is older
    /// reloads it.
    pub async fn catalog_version(&self) -> StoreResult<i64> {
        sqlx::query_scalar("SELECT version FROM flotilla_catalog WHERE id = 1")
            .fetch_optional(&self.pool)
            .await
            .map(|v| v.unwrap_or(0))
            .map_err(map_err)
    }
}

impl Replication {
    /// Calls `changed` whenever another replica (or this one) may have changed the catalog: on
    /// each notification, and after the listening connection was lost and re-established (what
    /// was sent meanwhile is gone). Runs until the process ends.
    pub fn watch_catalog(self: &Arc<Self>, changed: impl Fn() + Send + Sync + 'static) {
        let pool = self.pool.clone();
        tokio::spawn(async move {
            loop {
                let mut l = match sqlx::postgres::PgListener::connect_with(&pool).await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(error = %e, "catalog listener cannot connect; retrying");
                        changed();
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                if let Err(e) = l.listen(CATALOG_CHANNEL).await {
                    tracing::warn!(error = %e, "catalog LISTEN failed; retrying");
                    changed();
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                // Changes made before LISTEN took effect.
                changed();
                loop {
                    match l.try_recv().await {
                        Ok(Some(_)) => changed(),
                        // The connection was lost (and is re-established by the next call).
                        Ok(None) => changed(),
                        Err(e) => {
                            tracing::warn!(error = %e, "catalog listener failed; reconnecting");
                            changed();
                            break;
                        }
                    }
                }
            }
        });
    }
}

/// Fails the transaction unless the lease is still at `epoch` (no-op for 0: not a replica
/// leader). `FOR SHARE` makes a takeover's UPDATE wait for this transaction, so no write of the
/// old epoch commits after the new one is in place.
pub(super) async fn check_fence(
    tx: &mut sqlx::PgConnection,
    epoch: i64,
) -> Result<(), sqlx::Error> {
    if epoch == 0 {
        return Ok(());
    }
    let now: Option<i64> =
        sqlx::query_scalar("SELECT epoch FROM flotilla_lease WHERE id = 1 FOR SHARE")
            .fetch_optional(&mut *tx)
            .await?;
    if now == Some(epoch) {
        Ok(())
    } else {
        Err(sqlx::Error::Protocol(FENCED.into()))
    }
}
