//! [`Store`] over SQLite or PostgreSQL with one body of SQL.
//!
//! Every statement is written once, in the dialect both engines share (`$N` placeholders, `ON
//! CONFLICT … DO UPDATE`, row-value comparisons, `substr`), and [`on_pool!`] runs it against
//! whichever pool is open. Only connection set-up, the migration lock and the placeholder spelling
//! of the bulk upsert (see [`Placeholders`]) differ per backend.
//!
//! Job writes go through one writer task ([`run_writer`]): it drains the queue of `upsert_jobs`
//! calls, writes them in one transaction (one fsync), and answers every caller after the commit.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgDatabaseError, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteError, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Connection};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::util::time::now_ms;

use super::{
    Appends, AttemptUsage, CostGroup, EventRow, InstanceUsage, JobCursor, JobListQuery, JobPage,
    JobRow, JobScope, NewEvent, ResourceKind, ResourceRow, Store, StoreError, StoreResult,
    WriteHealth,
};

/// A group commit takes whatever is queued up to this many rows; more waits for the next one, so a
/// burst cannot grow one transaction (and its latency) without bound.
const MAX_GROUP_ROWS: usize = 20_000;
/// Pending `upsert_jobs` calls; senders wait beyond it, which is the back-pressure on the API.
const WRITE_QUEUE_DEPTH: usize = 1024;
/// Columns bound per job row in the upsert.
const JOB_BINDS: usize = 9;
/// Rows per multi-row INSERT: 2048 × 9 = 18,432 binds, under SQLite's 32,766 and PostgreSQL's
/// 65,535. Chunks are powers of two so at most 12 distinct statements reach the statement caches.
const MAX_CHUNK_ROWS: usize = 2048;
const _: () = assert!(MAX_CHUNK_ROWS * JOB_BINDS <= 32_766);
/// IN lists are padded to a power of two (repeating the last value) for the same reason.
const MAX_IN_LIST: usize = 128;
const SQLITE_POOL_SIZE: u32 = 8;
const PG_POOL_SIZE: u32 = 16;
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// `pg_advisory_lock` key serialising migrations across servers sharing a database ("flotilla").
const MIGRATION_LOCK_KEY: i64 = 0x666c_6f74_696c_6c61;

const JOB_COLUMNS: &str = "job_id, job_queue, status, job_name, job_definition, array_parent, array_index, created_at, doc";

/// Decoded shape of [`JOB_COLUMNS`]; tuples decode on both backends without derive macros.
type JobTuple = (
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<i32>,
    i64,
    String,
);

fn job_from_tuple(t: JobTuple) -> JobRow {
    let (
        job_id,
        job_queue,
        status,
        job_name,
        job_definition,
        array_parent,
        array_index,
        created_at,
        doc,
    ) = t;
    JobRow {
        job_id,
        job_queue,
        status,
        job_name,
        job_definition,
        array_parent,
        array_index,
        created_at,
        doc,
    }
}

struct Migration {
    version: i64,
    description: &'static str,
    statements: &'static [&'static str],
}

const MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at BIGINT NOT NULL
)";

/// Append-only: a released migration is never edited, a change is a new version.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "meta, resources, jobs",
        statements: &[
            "CREATE TABLE meta (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        )",
            "CREATE TABLE resources (
            kind TEXT NOT NULL,
            arn TEXT NOT NULL,
            name TEXT NOT NULL,
            doc TEXT NOT NULL,
            PRIMARY KEY (kind, arn)
        )",
            "CREATE TABLE jobs (
            job_id TEXT PRIMARY KEY,
            job_queue TEXT NOT NULL,
            status TEXT NOT NULL,
            job_name TEXT NOT NULL,
            job_definition TEXT NOT NULL,
            array_parent TEXT NULL,
            array_index INTEGER NULL,
            created_at BIGINT NOT NULL,
            doc TEXT NOT NULL
        )",
            // ListJobs for one status, newest first; the keyset cursor is a range on the last two
            // columns. Partial: array children (the bulk of rows for big arrays) are never listed by
            // queue, so they stay out of both queue indexes.
            "CREATE INDEX jobs_queue_status_created ON jobs
            (job_queue, status, created_at DESC, job_id DESC) WHERE array_parent IS NULL",
            // ListJobs across all statuses (AWS ignores jobStatus when filters are given).
            "CREATE INDEX jobs_queue_created ON jobs
            (job_queue, created_at DESC, job_id DESC) WHERE array_parent IS NULL",
            "CREATE INDEX jobs_parent_index ON jobs
            (array_parent, array_index) WHERE array_parent IS NOT NULL",
            // Covers count_children_by_status without touching the table.
            "CREATE INDEX jobs_parent_status ON jobs
            (array_parent, status) WHERE array_parent IS NOT NULL",
            // jobs_with_status by prefix; count_jobs_by_queue_status as an index-only scan.
            "CREATE INDEX jobs_status_queue ON jobs (status, job_queue)",
        ],
    },
    Migration {
        version: 2,
        description: "quarantine",
        statements: &[
            // Rows that could not be read, moved aside so the server starts with the rest.
            // `source` is `job` or `resource:<kind>`; `columns` the row's other columns as JSON,
            // so an operator can repair and move it back.
            "CREATE TABLE quarantine (
                source TEXT NOT NULL,
                row_key TEXT NOT NULL,
                columns TEXT NOT NULL,
                doc TEXT NOT NULL,
                reason TEXT NOT NULL,
                quarantined_at BIGINT NOT NULL,
                PRIMARY KEY (source, row_key)
            )",
        ],
    },
    Migration {
        version: 3,
        description: "job events",
        statements: &[
            // The outbox of job-state events: SSE readers, webhooks and EventBridge read it by
            // `seq`, which the writer assigns (MAX + 1 in the transaction) rather than a
            // sequence or AUTOINCREMENT: one spelling on both backends, and numbers in commit
            // order because only the engine's writes (one at a time) append.
            "CREATE TABLE job_events (
                seq BIGINT PRIMARY KEY,
                at BIGINT NOT NULL,
                kind TEXT NOT NULL,
                job_id TEXT NOT NULL,
                doc TEXT NOT NULL
            )",
        ],
    },
    Migration {
        version: 4,
        description: "cost: attempt usage, instance ledger",
        statements: &[
            // One row per ended attempt that ran on an instance Flotilla launched, written with
            // the job row that records the end.
            "CREATE TABLE attempt_usage (
                job_id TEXT NOT NULL,
                attempt BIGINT NOT NULL,
                job_queue TEXT NOT NULL,
                share_identifier TEXT NULL,
                job_definition TEXT NOT NULL,
                compute_environment TEXT NOT NULL,
                instance_id TEXT NOT NULL,
                instance_type TEXT NOT NULL,
                spot BIGINT NOT NULL,
                price_per_hour DOUBLE PRECISION NOT NULL,
                share DOUBLE PRECISION NOT NULL,
                started_at BIGINT NOT NULL,
                stopped_at BIGINT NOT NULL,
                PRIMARY KEY (job_id, attempt)
            )",
            // A range's attempts: those that stopped after its start (and started before its end).
            "CREATE INDEX attempt_usage_stopped ON attempt_usage (stopped_at)",
            // Every instance Flotilla launched, from the driver's observations: the fleet's bill.
            "CREATE TABLE instance_usage (
                instance_id TEXT PRIMARY KEY,
                compute_environment TEXT NOT NULL,
                instance_type TEXT NOT NULL,
                spot BIGINT NOT NULL,
                price_per_hour DOUBLE PRECISION NOT NULL,
                launched_at BIGINT NOT NULL,
                terminated_at BIGINT NULL
            )",
            "CREATE INDEX instance_usage_env_open ON instance_usage
            (compute_environment) WHERE terminated_at IS NULL",
        ],
    },
];

#[derive(Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Expands `$body` once per backend with `$p` bound to that backend's pool, so one piece of SQL
/// code type-checks against both drivers.
macro_rules! on_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            Pool::Sqlite($p) => $body,
            Pool::Postgres($p) => $body,
        }
    };
}

/// A bind value of a dynamically built statement.
enum Bind {
    Text(String),
    I64(i64),
    I32(i32),
}

/// Binds `$binds` in order onto `$query` (a `Query` or `QueryAs` of either backend).
macro_rules! bind_all {
    ($query:expr, $binds:expr) => {{
        let mut q = $query;
        for b in $binds {
            q = match b {
                Bind::Text(s) => q.bind(s.as_str()),
                Bind::I64(v) => q.bind(*v),
                Bind::I32(v) => q.bind(*v),
            };
        }
        q
    }};
}

/// SQL text under construction whose placeholders are numbered as they are bound.
#[derive(Default)]
struct SqlBuilder {
    text: String,
    binds: Vec<Bind>,
}

impl SqlBuilder {
    fn new(text: &str) -> Self {
        SqlBuilder {
            text: text.to_owned(),
            binds: Vec::new(),
        }
    }

    fn push(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }

    /// Appends a placeholder for `b`.
    fn bind(&mut self, b: Bind) -> &mut Self {
        self.binds.push(b);
        let n = self.binds.len();
        self.text.push('$');
        self.text.push_str(&n.to_string());
        self
    }

    /// Appends `(v1, v2, …)` padded to a power of two.
    fn in_list(&mut self, values: &[&str]) -> &mut Self {
        if values.is_empty() {
            // Matches nothing, like the empty set it stands for.
            return self.push("(NULL)");
        }
        let padded = values.len().next_power_of_two();
        self.push("(");
        for i in 0..padded {
            if i > 0 {
                self.push(", ");
            }
            let v = values[i.min(values.len() - 1)];
            self.bind(Bind::Text(v.to_owned()));
        }
        self.push(")")
    }
}

struct WriteRequest {
    jobs: Vec<JobRow>,
    /// Stored in the same transaction.
    appends: Appends,
    /// Flushed to disk before the reply (else committed only; see `upsert_jobs_relaxed`).
    durable: bool,
    reply: oneshot::Sender<StoreResult<()>>,
}

/// The SQLite or PostgreSQL store. Dropping it closes the write queue: the writer commits what is
/// already queued and stops.
pub struct SqlStore {
    pool: Pool,
    writer: mpsc::Sender<WriteRequest>,
    writer_task: JoinHandle<()>,
    health: Arc<WriteHealth>,
    /// The SQLite database's files and marker (`None` on PostgreSQL and in memory).
    files: Option<Arc<SqliteFiles>>,
    /// The leader epoch every write must find in the lease row (0: none); see [`ha`].
    fence: Arc<AtomicI64>,
    /// PostgreSQL: what replicas share.
    replication: Option<Arc<ha::Replication>>,
    /// Woken after a commit that appended job events.
    events: Arc<tokio::sync::Notify>,
}

impl SqlStore {
    async fn write(&self, jobs: Vec<JobRow>, appends: Appends, durable: bool) -> StoreResult<()> {
        if jobs.is_empty() && appends.is_empty() {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(WriteRequest {
                jobs,
                appends,
                durable,
                reply,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Opens `sqlite://PATH` (created if missing) or `postgres://…`, and migrates the schema.
    pub async fn open(url: &str) -> StoreResult<SqlStore> {
        let started = Instant::now();
        let (pool, applied, files) = if url.starts_with("sqlite:") {
            // Switching a new file to WAL, or writing from a read snapshot another opener has
            // just moved past, answers BUSY at once rather than through the busy timeout:
            // several processes opening one new file at once retry here for as long.
            let mut pause = Duration::from_millis(10);
            loop {
                match open_sqlite(url).await {
                    Err(StoreError::Unavailable(e)) if started.elapsed() < SQLITE_BUSY_TIMEOUT => {
                        tracing::debug!(error = %e, "sqlite busy while opening; retrying");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_millis(200));
                    }
                    r => break r?,
                }
            }
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let (pool, applied) = open_postgres(url).await?;
            (pool, applied, None)
        } else {
            // The URL may carry a password: name only the scheme.
            let scheme = url.split(':').next().unwrap_or_default();
            return Err(StoreError::Fatal(format!(
                "unsupported store url scheme {scheme:?}: expected sqlite:// or postgres://"
            )));
        };
        let (writer, rx) = mpsc::channel(WRITE_QUEUE_DEPTH);
        let health = Arc::new(WriteHealth::default());
        let fence = Arc::new(AtomicI64::new(0));
        let events = Arc::new(tokio::sync::Notify::new());
        let writer_task = tokio::spawn(run_writer(
            pool.clone(),
            rx,
            health.clone(),
            fence.clone(),
            events.clone(),
        ));
        let replication = match &pool {
            Pool::Postgres(p) => Some(Arc::new(ha::Replication::new(p.clone(), fence.clone()))),
            Pool::Sqlite(_) => None,
        };
        let store = SqlStore {
            pool,
            writer,
            writer_task,
            health,
            files,
            fence,
            replication,
            events,
        };
        store.announce_quarantine().await?;
        info!(
            backend = store.backend(),
            migrations_applied = applied,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "store opened"
        );
        Ok(store)
    }

    /// A resource write's transaction on PostgreSQL: fenced; the caller bumps the catalog
    /// version other replicas watch ([`bump_catalog`]) before it commits.
    async fn pg_resource_tx(
        &self,
        pool: &PgPool,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        let mut tx = pool.begin().await?;
        ha::check_fence(&mut tx, self.fence.load(Ordering::SeqCst)).await?;
        Ok(tx)
    }

    /// Waits until every queued write has been committed (or failed), then closes the pool. Plain
    /// drop does the same in the background.
    pub async fn close(self) {
        let SqlStore {
            pool,
            writer,
            writer_task,
            health: _,
            files: _,
            fence: _,
            replication: _,
            events: _,
        } = self;
        drop(writer);
        if let Err(e) = writer_task.await {
            warn!(error = %e, "store writer task failed");
        }
        on_pool!(&pool, p => p.close().await);
    }
}

/// Applies pending [`MIGRATIONS`] on `$conn` (a `&mut` connection), each in its own transaction
/// opened with `$begin`; evaluates to `StoreResult<usize>`, the number applied.
macro_rules! migrate {
    ($conn:ident, $begin:expr) => {
        async {
            sqlx::raw_sql(MIGRATIONS_TABLE).execute(&mut *$conn).await?;
            let newest: Option<i64> =
                sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations")
                    .fetch_one(&mut *$conn)
                    .await?;
            let known = MIGRATIONS.last().map_or(0, |m| m.version);
            if let Some(newest) = newest.filter(|v| *v > known) {
                return Ok(Err(StoreError::Fatal(format!(
                    "database schema version {newest} is newer than this server knows ({known})"
                ))));
            }
            let mut applied = 0;
            for m in MIGRATIONS {
                let mut tx = $conn.begin_with($begin).await?;
                // Checked inside the transaction: another process may have applied it meanwhile.
                let done: Option<i64> =
                    sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                        .bind(m.version)
                        .fetch_optional(&mut *tx)
                        .await?;
                if done.is_some() {
                    tx.rollback().await?;
                    continue;
                }
                for statement in m.statements {
                    sqlx::raw_sql(*statement).execute(&mut *tx).await?;
                }
                sqlx::query(
                    "INSERT INTO schema_migrations (version, description, applied_at) \
                     VALUES ($1, $2, $3)",
                )
                .bind(m.version)
                .bind(m.description)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                info!(
                    version = m.version,
                    description = m.description,
                    "migration applied"
                );
                applied += 1;
            }
            Ok::<_, sqlx::Error>(Ok(applied))
        }
        .await
        .map_err(map_err)
        .and_then(|r| r)
    };
}

async fn open_sqlite(url: &str) -> StoreResult<(Pool, usize, Option<Arc<SqliteFiles>>)> {
    let options = SqliteConnectOptions::from_str(url).map_err(map_err)?;
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    let files = (!in_memory).then(|| Arc::new(SqliteFiles::new(options.get_filename())));
    let marker = match &files {
        Some(f) => f.check_files()?,
        None => None,
    };
    let options = options
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // FULL fsyncs the WAL at every commit: an acknowledged SubmitJob survives power loss.
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(SQLITE_BUSY_TIMEOUT);
    let pool = SqlitePoolOptions::new()
        .max_connections(SQLITE_POOL_SIZE)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(map_err)?;
    let mut conn = pool.acquire().await.map_err(map_err)?;
    let conn: &mut sqlx::SqliteConnection = &mut conn;
    if let (Some(f), Some(m)) = (&files, &marker) {
        f.check_contents(conn, m).await?;
    }
    // IMMEDIATE takes the write lock up front: two processes migrating one file queue on the busy
    // timeout instead of failing to upgrade a read lock.
    let applied = migrate!(conn, "BEGIN IMMEDIATE")?;
    if let Some(f) = &files {
        f.mark_start(conn, marker).await?;
    }
    Ok((Pool::Sqlite(pool), applied, files))
}

async fn open_postgres(url: &str) -> StoreResult<(Pool, usize)> {
    // A session that stops in the middle of a transaction (its process paused, or cut off)
    // would hold its locks for ever; the leader's writes hold a share lock on the lease row, so
    // a paused leader would keep every follower from taking over. The server ends such a
    // session instead. Every transaction here sends its statements back to back.
    let options = PgConnectOptions::from_str(url)
        .map_err(map_err)?
        .options([("idle_in_transaction_session_timeout", "3s")]);
    // A connection of its own rather than a pooled one: if migration fails half-way the session
    // ends and the advisory lock goes with it, instead of returning to the pool still held.
    let mut conn =
        PgConnection::connect_with(&options)
            .await
            .map_err(|e| match certificate_refused(&e) {
                Some(reason) => StoreError::Fatal(format!(
                    "PostgreSQL TLS: the server's certificate was refused ({reason}); check \
                 sslrootcert= (the CA bundle that signed it) and sslmode= in the database URL"
                )),
                None => map_err(e),
            })?;
    let applied = {
        let conn: &mut PgConnection = &mut conn;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(MIGRATION_LOCK_KEY)
            .execute(&mut *conn)
            .await
            .map_err(map_err)?;
        let mut applied = migrate!(conn, "BEGIN");
        if applied.is_ok() {
            for stmt in ha::SCHEMA {
                if let Err(e) = sqlx::raw_sql(AssertSqlSafe(*stmt))
                    .execute(&mut *conn)
                    .await
                {
                    applied = Err(map_err(e));
                    break;
                }
            }
        }
        if applied.is_ok() {
            sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(MIGRATION_LOCK_KEY)
                .execute(&mut *conn)
                .await
                .map_err(map_err)?;
        }
        applied?
    };
    if let Err(e) = conn.close().await {
        debug!(error = %e, "closing migration connection failed");
    }
    let pool = PgPoolOptions::new()
        .max_connections(PG_POOL_SIZE)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(map_err)?;
    Ok((Pool::Postgres(pool), applied))
}

/// The reason rustls refused the server's certificate, if that is what `e` is: a configuration to
/// fix, not an outage to wait out.
fn certificate_refused(e: &sqlx::Error) -> Option<String> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = match e {
        sqlx::Error::Io(io) => io.get_ref().map(|inner| inner as _),
        sqlx::Error::Tls(tls) => Some(&**tls as _),
        _ => None,
    };
    while let Some(err) = current {
        if let Some(rustls::Error::InvalidCertificate(reason)) = err.downcast_ref::<rustls::Error>()
        {
            return Some(format!("{reason:?}"));
        }
        current = err.source();
    }
    None
}

/// Tells the other replicas that the catalog changed (in the transaction of the change).
async fn bump_catalog(tx: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH v AS (UPDATE flotilla_catalog SET version = version + 1 WHERE id = 1 \
         RETURNING version) SELECT pg_notify($1, version::text) FROM v",
    )
    .bind(ha::CATALOG_CHANNEL)
    .execute(&mut *tx)
    .await
    .map(drop)
}

/// Classifies a driver error: only what a retry can plausibly fix is [`StoreError::Unavailable`].
fn map_err(e: sqlx::Error) -> StoreError {
    let retryable = match &e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::PoolClosed => return StoreError::Closed,
        sqlx::Error::Protocol(m) if m == ha::FENCED => return StoreError::Fenced,
        sqlx::Error::Database(db) => {
            if let Some(pg) = db.try_downcast_ref::<PgDatabaseError>() {
                // 53100 disk_full, 58030 io_error: the server's disk, as SQLite's FULL/IOERR.
                if matches!(pg.code(), "53100" | "58030") {
                    return StoreError::Storage(e.to_string());
                }
                pg_code_retryable(pg.code())
            } else if db.try_downcast_ref::<SqliteError>().is_some() {
                // Extended result codes keep the primary code in the low byte.
                let code: i32 = db.code().and_then(|c| c.parse().ok()).unwrap_or(0);
                match code & 0xff {
                    SQLITE_FULL | SQLITE_IOERR | SQLITE_CANTOPEN => {
                        return StoreError::Storage(e.to_string());
                    }
                    c => matches!(c, SQLITE_BUSY | SQLITE_LOCKED),
                }
            } else {
                false
            }
        }
        _ => false,
    };
    if retryable {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Fatal(e.to_string())
    }
}

const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;
const SQLITE_IOERR: i32 = 10;
const SQLITE_FULL: i32 = 13;
const SQLITE_CANTOPEN: i32 = 14;

fn pg_code_retryable(code: &str) -> bool {
    // 08: connection exception; 40001/40P01: serialization failure, deadlock; 53300: too many
    // connections; 57P01-03: server shutting down or starting up.
    code.starts_with("08")
        || matches!(
            code,
            "40001" | "40P01" | "53300" | "57P01" | "57P02" | "57P03"
        )
}

pub mod ha;
mod quarantine;
mod sqlite_files;
mod writer;
use sqlite_files::SqliteFiles;
use writer::*;

fn list_sql(query: &JobListQuery) -> StoreResult<SqlBuilder> {
    let mut sql = SqlBuilder::new(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE "));
    match &query.scope {
        JobScope::Queue(queue) => {
            sql.push("job_queue = ")
                .bind(Bind::Text(queue.clone()))
                .push(" AND array_parent IS NULL");
        }
        JobScope::ArrayParent(parent) => {
            sql.push("array_parent = ").bind(Bind::Text(parent.clone()));
        }
    }
    if let Some(statuses) = &query.statuses {
        let values: Vec<&str> = statuses.iter().map(String::as_str).collect();
        sql.push(" AND status IN ").in_list(&values);
    }
    // substr rather than LIKE: LIKE is case-insensitive on SQLite, case-sensitive on PostgreSQL,
    // and would need `%`/`_` escaped.
    let text_filter = |sql: &mut SqlBuilder, column: &str, value: &str, prefix: bool| {
        if prefix {
            let len = i32::try_from(value.chars().count()).unwrap_or(i32::MAX);
            sql.push(" AND substr(")
                .push(column)
                .push(", 1, ")
                .bind(Bind::I32(len))
                .push(") = ")
                .bind(Bind::Text(value.to_owned()));
        } else {
            sql.push(" AND ")
                .push(column)
                .push(" = ")
                .bind(Bind::Text(value.to_owned()));
        }
    };
    if let Some(name) = &query.name {
        text_filter(&mut sql, "job_name", name, query.name_is_prefix);
    }
    if let Some(definition) = &query.definition {
        text_filter(
            &mut sql,
            "job_definition",
            definition,
            query.definition_is_prefix,
        );
    }
    if let Some(before) = query.created_before {
        // A cursor below the bound already implies it, and SQLite, given both, ranges the index
        // on created_at alone and filters its way from the bound down to the cursor on every page.
        let implied = matches!(
            (&query.scope, &query.cursor),
            (JobScope::Queue(_), Some(JobCursor::Created { created_at, .. })) if *created_at < before
        );
        if !implied {
            sql.push(" AND created_at < ").bind(Bind::I64(before));
        }
    }
    if let Some(after) = query.created_after {
        sql.push(" AND created_at > ").bind(Bind::I64(after));
    }
    match (&query.scope, &query.cursor) {
        (_, None) => {}
        (JobScope::Queue(_), Some(JobCursor::Created { created_at, job_id })) => {
            // A row-value comparison is an index range on both engines; the equivalent OR form
            // makes PostgreSQL filter from the start of the queue on every page.
            sql.push(" AND (created_at, job_id) < (")
                .bind(Bind::I64(*created_at))
                .push(", ")
                .bind(Bind::Text(job_id.clone()))
                .push(")");
        }
        (JobScope::ArrayParent(_), Some(JobCursor::Index(index))) => {
            sql.push(" AND array_index > ").bind(Bind::I32(*index));
        }
        (scope, Some(cursor)) => {
            return Err(StoreError::Fatal(format!(
                "cursor {cursor:?} does not fit scope {scope:?}"
            )));
        }
    }
    match &query.scope {
        JobScope::Queue(_) => sql.push(" ORDER BY created_at DESC, job_id DESC"),
        JobScope::ArrayParent(_) => sql.push(" ORDER BY array_index ASC"),
    };
    // One row past the page tells whether another page exists.
    let fetch = i64::from(query.limit.max(1)) + 1;
    sql.push(" LIMIT ").bind(Bind::I64(fetch));
    Ok(sql)
}

impl SqlStore {
    async fn fetch_jobs(&self, sql: SqlBuilder) -> StoreResult<Vec<JobRow>> {
        let SqlBuilder { text, binds } = sql;
        let rows: Vec<JobTuple> = on_pool!(&self.pool, p => {
            bind_all!(sqlx::query_as::<_, JobTuple>(AssertSqlSafe(text)), &binds)
                .fetch_all(p)
                .await
        })
        .map_err(map_err)?;
        Ok(rows.into_iter().map(job_from_tuple).collect())
    }
}

#[async_trait]
impl Store for SqlStore {
    fn backend(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    fn write_health(&self) -> &WriteHealth {
        &self.health
    }

    async fn shutdown(&self) -> StoreResult<()> {
        // A barrier: an empty request is answered once everything queued before it committed.
        let (reply, answer) = oneshot::channel();
        let queued = self.writer.send(WriteRequest {
            jobs: Vec::new(),
            appends: Appends::default(),
            durable: true,
            reply,
        });
        if queued.await.is_ok() {
            answer.await.map_err(|_| StoreError::Closed)??;
        }
        let (Some(files), Pool::Sqlite(p)) = (&self.files, &self.pool) else {
            return Ok(());
        };
        let mut conn = p.acquire().await.map_err(map_err)?;
        files.mark_clean(&mut conn).await
    }

    async fn get_meta(&self, key: &str) -> StoreResult<Option<String>> {
        on_pool!(&self.pool, p => {
            sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
                .bind(key)
                .fetch_optional(p)
                .await
        })
        .map_err(map_err)
    }

    async fn set_meta(&self, key: &str, value: &str) -> StoreResult<()> {
        on_pool!(&self.pool, p => {
            sqlx::query(
                "INSERT INTO meta (key, value) VALUES ($1, $2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .bind(key)
            .bind(value)
            .execute(p)
            .await
            .map(drop)
        })
        .map_err(map_err)
        .inspect(|()| self.health.succeeded())
        .inspect_err(|e| self.health.failed(e))
    }

    async fn load_resources(&self) -> StoreResult<Vec<ResourceRow>> {
        let rows: Vec<(String, String, String, String)> = on_pool!(&self.pool, p => {
            sqlx::query_as("SELECT kind, arn, name, doc FROM resources ORDER BY kind, arn")
                .fetch_all(p)
                .await
        })
        .map_err(map_err)?;
        let mut out = Vec::with_capacity(rows.len());
        for (kind_text, arn, name, doc) in rows {
            match ResourceKind::parse(&kind_text) {
                Some(kind) => out.push(ResourceRow {
                    kind,
                    arn,
                    name,
                    doc,
                }),
                None => {
                    let origin = quarantine::Origin::Resource {
                        kind: &kind_text,
                        arn: &arn,
                    };
                    let columns =
                        serde_json::json!({ "kind": kind_text, "arn": arn, "name": name });
                    let reason = format!("unknown resource kind {kind_text:?}");
                    self.quarantine(origin, columns, &doc, &reason).await?;
                }
            }
        }
        Ok(out)
    }

    async fn quarantine_job(&self, row: &JobRow, reason: &str) -> StoreResult<()> {
        let columns = quarantine::job_columns(row);
        self.quarantine(
            quarantine::Origin::Job(&row.job_id),
            columns,
            &row.doc,
            reason,
        )
        .await
    }

    async fn quarantine_resource(&self, row: &ResourceRow, reason: &str) -> StoreResult<()> {
        let origin = quarantine::Origin::Resource {
            kind: row.kind.as_str(),
            arn: &row.arn,
        };
        let columns =
            serde_json::json!({ "kind": row.kind.as_str(), "arn": row.arn, "name": row.name });
        self.quarantine(origin, columns, &row.doc, reason).await
    }

    async fn put_resource(&self, row: &ResourceRow) -> StoreResult<()> {
        const SQL: &str = "INSERT INTO resources (kind, arn, name, doc) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (kind, arn) DO UPDATE SET name = excluded.name, doc = excluded.doc";
        let result = match &self.pool {
            Pool::Sqlite(p) => sqlx::query(SQL)
                .bind(row.kind.as_str())
                .bind(row.arn.as_str())
                .bind(row.name.as_str())
                .bind(row.doc.as_str())
                .execute(p)
                .await
                .map(drop),
            Pool::Postgres(p) => {
                async {
                    let mut tx = self.pg_resource_tx(p).await?;
                    sqlx::query(SQL)
                        .bind(row.kind.as_str())
                        .bind(row.arn.as_str())
                        .bind(row.name.as_str())
                        .bind(row.doc.as_str())
                        .execute(&mut *tx)
                        .await?;
                    bump_catalog(&mut tx).await?;
                    tx.commit().await
                }
                .await
            }
        };
        result
            .map_err(map_err)
            .inspect(|()| self.health.succeeded())
            .inspect_err(|e| self.health.failed(e))
    }

    async fn delete_resource(&self, kind: ResourceKind, arn: &str) -> StoreResult<()> {
        const SQL: &str = "DELETE FROM resources WHERE kind = $1 AND arn = $2";
        let result = match &self.pool {
            Pool::Sqlite(p) => sqlx::query(SQL)
                .bind(kind.as_str())
                .bind(arn)
                .execute(p)
                .await
                .map(drop),
            Pool::Postgres(p) => {
                async {
                    let mut tx = self.pg_resource_tx(p).await?;
                    sqlx::query(SQL)
                        .bind(kind.as_str())
                        .bind(arn)
                        .execute(&mut *tx)
                        .await?;
                    bump_catalog(&mut tx).await?;
                    tx.commit().await
                }
                .await
            }
        };
        result
            .map_err(map_err)
            .inspect(|()| self.health.succeeded())
            .inspect_err(|e| self.health.failed(e))
    }

    async fn upsert_jobs(&self, jobs: Vec<JobRow>) -> StoreResult<()> {
        self.write(jobs, Appends::default(), true).await
    }

    async fn upsert_jobs_relaxed(&self, jobs: Vec<JobRow>) -> StoreResult<()> {
        self.write(jobs, Appends::default(), false).await
    }

    async fn write_jobs_with(
        &self,
        jobs: Vec<JobRow>,
        appends: Appends,
        durable: bool,
    ) -> StoreResult<()> {
        self.write(jobs, appends, durable).await
    }

    async fn events_after(&self, after: i64, limit: u32) -> StoreResult<Vec<EventRow>> {
        const SQL: &str = "SELECT seq, at, kind, job_id, doc FROM job_events \
                           WHERE seq > $1 ORDER BY seq LIMIT $2";
        let rows: Vec<(i64, i64, String, String, String)> = on_pool!(&self.pool, p => {
            sqlx::query_as(SQL)
                .bind(after)
                .bind(i64::from(limit.max(1)))
                .fetch_all(p)
                .await
        })
        .map_err(map_err)?;
        Ok(rows
            .into_iter()
            .map(|(seq, at, kind, job_id, doc)| EventRow {
                seq,
                at,
                kind,
                job_id,
                doc,
            })
            .collect())
    }

    async fn last_event_seq(&self) -> StoreResult<i64> {
        let seq: Option<i64> = on_pool!(&self.pool, p => {
            sqlx::query_scalar("SELECT MAX(seq) FROM job_events")
                .fetch_one(p)
                .await
        })
        .map_err(map_err)?;
        Ok(seq.unwrap_or(0))
    }

    async fn prune_events(&self, upto: i64, before: i64) -> StoreResult<u64> {
        const SQL: &str = "DELETE FROM job_events WHERE seq <= $1 AND at < $2 \
                           AND seq < (SELECT MAX(seq) FROM job_events)";
        let done = on_pool!(&self.pool, p => {
            sqlx::query(SQL)
                .bind(upto)
                .bind(before)
                .execute(p)
                .await
                .map(|r| r.rows_affected())
        });
        done.map_err(map_err)
    }

    fn event_signal(&self) -> Arc<tokio::sync::Notify> {
        self.events.clone()
    }

    async fn get_jobs(&self, ids: &[String]) -> StoreResult<Vec<JobRow>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_IN_LIST) {
            let values: Vec<&str> = chunk.iter().map(String::as_str).collect();
            let mut sql =
                SqlBuilder::new(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE job_id IN "));
            sql.in_list(&values);
            out.extend(self.fetch_jobs(sql).await?);
        }
        Ok(out)
    }

    async fn list_jobs(&self, query: &JobListQuery) -> StoreResult<JobPage> {
        let limit = query.limit.max(1) as usize;
        let mut jobs = self.fetch_jobs(list_sql(query)?).await?;
        let next = if jobs.len() > limit {
            jobs.truncate(limit);
            jobs.last().map(|last| match &query.scope {
                JobScope::Queue(_) => Ok(JobCursor::Created {
                    created_at: last.created_at,
                    job_id: last.job_id.clone(),
                }),
                JobScope::ArrayParent(_) => {
                    last.array_index.map(JobCursor::Index).ok_or_else(|| {
                        StoreError::Fatal(format!("array child {} has no index", last.job_id))
                    })
                }
            })
        } else {
            None
        };
        Ok(JobPage {
            jobs,
            next: next.transpose()?,
        })
    }

    fn replication(&self) -> Option<Arc<ha::Replication>> {
        self.replication.clone()
    }

    async fn count_children_by_status(&self, parent: &str) -> StoreResult<Vec<(String, i64)>> {
        on_pool!(&self.pool, p => {
            sqlx::query_as(
                "SELECT status, COUNT(*) FROM jobs WHERE array_parent = $1 \
                 GROUP BY status ORDER BY status",
            )
            .bind(parent)
            .fetch_all(p)
            .await
        })
        .map_err(map_err)
    }

    async fn jobs_with_status(&self, statuses: &[&str]) -> StoreResult<Vec<JobRow>> {
        if statuses.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for chunk in statuses.chunks(MAX_IN_LIST) {
            let mut sql =
                SqlBuilder::new(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE status IN "));
            sql.in_list(chunk);
            out.extend(self.fetch_jobs(sql).await?);
        }
        Ok(out)
    }

    async fn record_instances(
        &self,
        compute_environment: &str,
        live: Vec<InstanceUsage>,
        now: i64,
    ) -> StoreResult<()> {
        // Launch time and price stay as first recorded: a restart re-observes every instance,
        // and a Spot price read later is not what the instance was bought at.
        const INSERT: &str = "INSERT INTO instance_usage (instance_id, compute_environment, \
             instance_type, spot, price_per_hour, launched_at, terminated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, NULL) ON CONFLICT (instance_id) DO NOTHING";
        let done: Result<(), sqlx::Error> = on_pool!(&self.pool, p => async {
            let mut tx = p.begin().await?;
            for i in &live {
                sqlx::query(INSERT)
                    .bind(i.instance_id.as_str())
                    .bind(i.compute_environment.as_str())
                    .bind(i.instance_type.as_str())
                    .bind(i64::from(i.spot))
                    .bind(i.price_per_hour)
                    .bind(i.launched_at)
                    .execute(&mut *tx)
                    .await?;
            }
            let open: Vec<String> = sqlx::query_scalar(
                "SELECT instance_id FROM instance_usage \
                 WHERE compute_environment = $1 AND terminated_at IS NULL",
            )
            .bind(compute_environment)
            .fetch_all(&mut *tx)
            .await?;
            let live_ids: std::collections::HashSet<&str> =
                live.iter().map(|i| i.instance_id.as_str()).collect();
            for id in open.iter().filter(|id| !live_ids.contains(id.as_str())) {
                sqlx::query("UPDATE instance_usage SET terminated_at = $1 WHERE instance_id = $2")
                    .bind(now)
                    .bind(id.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        }
        .await);
        done.map_err(map_err)
    }

    async fn instances_between(&self, from: i64, to: i64) -> StoreResult<Vec<InstanceUsage>> {
        const SQL: &str = "SELECT instance_id, compute_environment, instance_type, spot, \
             price_per_hour, launched_at, terminated_at FROM instance_usage \
             WHERE launched_at < $2 AND (terminated_at IS NULL OR terminated_at > $1) \
             ORDER BY launched_at, instance_id";
        type Row = (String, String, String, i64, f64, i64, Option<i64>);
        let rows: Vec<Row> = on_pool!(&self.pool, p => {
            sqlx::query_as(SQL).bind(from).bind(to).fetch_all(p).await
        })
        .map_err(map_err)?;
        Ok(rows
            .into_iter()
            .map(
                |(
                    instance_id,
                    compute_environment,
                    instance_type,
                    spot,
                    price,
                    launched,
                    ended,
                )| {
                    InstanceUsage {
                        instance_id,
                        compute_environment,
                        instance_type,
                        spot: spot != 0,
                        price_per_hour: price,
                        launched_at: launched,
                        terminated_at: ended,
                    }
                },
            )
            .collect())
    }

    async fn attempt_cost_between(&self, from: i64, to: i64) -> StoreResult<Vec<CostGroup>> {
        // Each attempt clipped to the range; SQLite's two-argument MIN/MAX are PostgreSQL's
        // LEAST/GREATEST.
        fn sql(least: &str, greatest: &str) -> String {
            let ms = format!(
                "CAST({least}(stopped_at, $2) - {greatest}(started_at, $1) AS DOUBLE PRECISION)"
            );
            format!(
                "SELECT job_queue, share_identifier, job_definition, compute_environment, \
                 COUNT(*), SUM(price_per_hour * share * {ms}) / 3600000.0, SUM({ms}) / 1000.0 \
                 FROM attempt_usage WHERE stopped_at > $1 AND started_at < $2 \
                 GROUP BY job_queue, share_identifier, job_definition, compute_environment \
                 ORDER BY job_queue, share_identifier, job_definition, compute_environment"
            )
        }
        type Row = (String, Option<String>, String, String, i64, f64, f64);
        let rows: Vec<Row> = match &self.pool {
            Pool::Sqlite(p) => {
                sqlx::query_as(AssertSqlSafe(sql("MIN", "MAX")))
                    .bind(from)
                    .bind(to)
                    .fetch_all(p)
                    .await
            }
            Pool::Postgres(p) => {
                sqlx::query_as(AssertSqlSafe(sql("LEAST", "GREATEST")))
                    .bind(from)
                    .bind(to)
                    .fetch_all(p)
                    .await
            }
        }
        .map_err(map_err)?;
        Ok(rows
            .into_iter()
            .map(
                |(job_queue, share_identifier, job_definition, env, attempts, cost, seconds)| {
                    CostGroup {
                        job_queue,
                        share_identifier,
                        job_definition,
                        compute_environment: env,
                        attempts,
                        cost,
                        seconds,
                    }
                },
            )
            .collect())
    }

    async fn count_jobs_by_queue_status(&self) -> StoreResult<Vec<(String, String, i64)>> {
        on_pool!(&self.pool, p => {
            sqlx::query_as(
                "SELECT job_queue, status, COUNT(*) FROM jobs \
                 GROUP BY job_queue, status ORDER BY job_queue, status",
            )
            .fetch_all(p)
            .await
        })
        .map_err(map_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_powers_of_two_covering_all_rows() {
        for n in [1, 2, 3, 7, 2047, 2048, 2049, 10_000, 20_000] {
            let sizes: Vec<usize> = chunk_sizes(n).collect();
            assert_eq!(sizes.iter().sum::<usize>(), n);
            assert!(
                sizes
                    .iter()
                    .all(|s| s.is_power_of_two() && *s <= MAX_CHUNK_ROWS)
            );
        }
    }

    #[test]
    fn upsert_sql_has_one_placeholder_per_bind() {
        let sql = upsert_sql(4, Placeholders::Numbered);
        assert!(sql.contains("$36)"));
        assert!(!sql.contains("$37"));
        let positional = upsert_sql(4, Placeholders::Positional);
        assert_eq!(positional.matches('?').count(), 36);
        assert!(!positional.contains('$'));
        // The same statement but for the placeholder spelling.
        let mut n = 0;
        let renumbered = positional
            .split('?')
            .enumerate()
            .map(|(i, part)| {
                if i == 0 {
                    part.to_owned()
                } else {
                    n += 1;
                    format!("${n}{part}")
                }
            })
            .collect::<String>();
        assert_eq!(renumbered, *sql);
    }
}
