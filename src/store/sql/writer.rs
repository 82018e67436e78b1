//! The job writer: bulk upsert statements, chunking, and the task that group-commits every
//! queued `upsert_jobs` call in one transaction.

use super::*;

/// How the bulk upsert spells its placeholders. Everything else in the statement is the same text
/// on both backends.
#[derive(Clone, Copy)]
pub(super) enum Placeholders {
    /// `$1, $2, …`
    Numbered,
    /// `?, ?, …` in bind order. SQLite resolves each named parameter (`$N` included) with a linear
    /// scan of the statement's names, and sqlx does that once per bind: quadratic in binds. A
    /// 10,000-row upsert took ~2 s with `$N` against ~90 ms with `?` (release build).
    Positional,
}

/// `head` followed by `rows` tuples of `binds` placeholders, then `tail`.
fn multi_row_sql(
    head: &str,
    binds: usize,
    tail: &str,
    rows: usize,
    placeholders: Placeholders,
) -> String {
    let mut sql = String::from(head);
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..binds {
            if c > 0 {
                sql.push_str(", ");
            }
            match placeholders {
                Placeholders::Numbered => {
                    sql.push('$');
                    sql.push_str(&(r * binds + c + 1).to_string());
                }
                Placeholders::Positional => sql.push('?'),
            }
        }
        sql.push(')');
    }
    sql.push_str(tail);
    sql
}

/// One statement per power of two up to [`MAX_CHUNK_ROWS`], built once, for each of the
/// writer's statements (`which`) and placeholder spellings.
fn cached(
    which: usize,
    placeholders: Placeholders,
    rows: usize,
    build: impl Fn(usize) -> String,
) -> Arc<str> {
    static CACHES: [OnceLock<Vec<Arc<str>>>; 6] = [const { OnceLock::new() }; 6];
    let numbered = usize::from(matches!(placeholders, Placeholders::Numbered));
    let all = CACHES[which * 2 + numbered].get_or_init(|| {
        let mut out = Vec::new();
        let mut n = 1;
        while n <= MAX_CHUNK_ROWS {
            out.push(Arc::from(build(n)));
            n *= 2;
        }
        out
    });
    debug_assert!(rows.is_power_of_two() && rows <= MAX_CHUNK_ROWS);
    all[rows.trailing_zeros() as usize].clone()
}

/// The upsert for `rows` rows (a power of two up to [`MAX_CHUNK_ROWS`]), built once per size.
pub(super) fn upsert_sql(rows: usize, placeholders: Placeholders) -> Arc<str> {
    cached(0, placeholders, rows, |n| {
        multi_row_sql(
            &format!("INSERT INTO jobs ({JOB_COLUMNS}) VALUES "),
            JOB_BINDS,
            " ON CONFLICT (job_id) DO UPDATE SET job_queue = excluded.job_queue, \
             status = excluded.status, job_name = excluded.job_name, \
             job_definition = excluded.job_definition, array_parent = excluded.array_parent, \
             array_index = excluded.array_index, created_at = excluded.created_at, \
             doc = excluded.doc",
            n,
            placeholders,
        )
    })
}

/// `INSERT INTO job_events` of `rows` rows (a power of two up to [`MAX_CHUNK_ROWS`]).
pub(super) fn events_sql(rows: usize, placeholders: Placeholders) -> Arc<str> {
    cached(1, placeholders, rows, |n| {
        multi_row_sql(
            "INSERT INTO job_events (seq, at, kind, job_id, doc) VALUES ",
            5,
            "",
            n,
            placeholders,
        )
    })
}

/// Upsert into `attempt_usage` of `rows` rows (a power of two up to [`MAX_CHUNK_ROWS`]): an
/// attempt ended again after a restart replaces its earlier row.
pub(super) fn usage_sql(rows: usize, placeholders: Placeholders) -> Arc<str> {
    cached(2, placeholders, rows, |n| {
        multi_row_sql(
            "INSERT INTO attempt_usage (job_id, attempt, job_queue, share_identifier, \
             job_definition, compute_environment, instance_id, instance_type, spot, \
             price_per_hour, share, started_at, stopped_at) VALUES ",
            13,
            " ON CONFLICT (job_id, attempt) DO UPDATE SET job_queue = excluded.job_queue, \
             share_identifier = excluded.share_identifier, \
             job_definition = excluded.job_definition, \
             compute_environment = excluded.compute_environment, \
             instance_id = excluded.instance_id, instance_type = excluded.instance_type, \
             spot = excluded.spot, price_per_hour = excluded.price_per_hour, \
             share = excluded.share, started_at = excluded.started_at, \
             stopped_at = excluded.stopped_at",
            n,
            placeholders,
        )
    })
}

/// Splits `n` rows into power-of-two chunks, largest first.
pub(super) fn chunk_sizes(mut n: usize) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if n == 0 {
            return None;
        }
        let size = if n >= MAX_CHUNK_ROWS {
            MAX_CHUNK_ROWS
        } else {
            1 << (usize::BITS - 1 - n.leading_zeros())
        };
        n -= size;
        Some(size)
    })
}

/// Writes of at most this many rows go to SQLite as one statement in autocommit, padded to a
/// power of two by repeating the last row: one round trip to the connection's thread instead of
/// BEGIN, one statement per chunk and COMMIT. Most engine writes are a handful of rows.
pub(super) const SQLITE_ONE_STATEMENT_ROWS: usize = 64;

/// The SQLite connection the writer keeps for relaxed writes, left at `synchronous = NORMAL`
/// (WAL: commit without fsync; the next FULL commit's fsync covers it). `synchronous` is per
/// connection and cannot change inside a transaction; keeping one connection for it saves the
/// two PRAGMA round trips a relaxed write on a shared connection needed.
pub(super) type RelaxedConn = Option<sqlx::pool::PoolConnection<sqlx::Sqlite>>;

/// Upserts `rows` (unique job IDs), appends `events` and upserts `usage` (unique attempts) in
/// one transaction; `durable`: flushed to disk at commit.
pub(super) async fn write_rows(
    pool: &Pool,
    relaxed: &mut RelaxedConn,
    rows: &[&JobRow],
    events: &[&NewEvent],
    usage: &[&AttemptUsage],
    durable: bool,
    fence: i64,
) -> Result<(), sqlx::Error> {
    let placeholders = match pool {
        Pool::Sqlite(_) => Placeholders::Positional,
        Pool::Postgres(_) => Placeholders::Numbered,
    };
    macro_rules! bind_rows {
        ($q:ident, $chunk:expr) => {
            for r in $chunk {
                $q = $q
                    .bind(r.job_id.as_str())
                    .bind(r.job_queue.as_str())
                    .bind(r.status.as_str())
                    .bind(r.job_name.as_str())
                    .bind(r.job_definition.as_str())
                    .bind(r.array_parent.as_deref())
                    .bind(r.array_index)
                    .bind(r.created_at)
                    .bind(r.doc.as_str());
            }
        };
    }
    // PostgreSQL: `synchronous_commit` for this transaction only.
    macro_rules! upsert {
        ($tx:ident) => {{
            let mut tx = $tx;
            let mut rest = rows;
            for size in chunk_sizes(rows.len()) {
                let (chunk, tail) = rest.split_at(size);
                rest = tail;
                let mut q = sqlx::query(AssertSqlSafe(upsert_sql(size, placeholders)));
                bind_rows!(q, chunk);
                q.execute(&mut *tx).await?;
            }
            if !events.is_empty() {
                let last: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM job_events")
                    .fetch_one(&mut *tx)
                    .await?;
                let mut seq = last.unwrap_or(0);
                let mut rest = events;
                for size in chunk_sizes(events.len()) {
                    let (chunk, tail) = rest.split_at(size);
                    rest = tail;
                    let mut q = sqlx::query(AssertSqlSafe(events_sql(size, placeholders)));
                    for e in chunk {
                        seq += 1;
                        q = q
                            .bind(seq)
                            .bind(e.at)
                            .bind(e.kind.as_str())
                            .bind(e.job_id.as_str())
                            .bind(e.doc.as_str());
                    }
                    q.execute(&mut *tx).await?;
                }
            }
            let mut rest = usage;
            for size in chunk_sizes(usage.len()) {
                let (chunk, tail) = rest.split_at(size);
                rest = tail;
                let mut q = sqlx::query(AssertSqlSafe(usage_sql(size, placeholders)));
                for u in chunk {
                    q = q
                        .bind(u.job_id.as_str())
                        .bind(i64::from(u.attempt))
                        .bind(u.job_queue.as_str())
                        .bind(u.share_identifier.as_deref())
                        .bind(u.job_definition.as_str())
                        .bind(u.compute_environment.as_str())
                        .bind(u.instance_id.as_str())
                        .bind(u.instance_type.as_str())
                        .bind(i64::from(u.spot))
                        .bind(u.price_per_hour)
                        .bind(u.share)
                        .bind(u.started_at)
                        .bind(u.stopped_at);
                }
                q.execute(&mut *tx).await?;
            }
            tx.commit().await
        }};
    }
    // SQLite: a small write is one padded statement, atomic on its own. A row repeated in
    // one INSERT … ON CONFLICT is upserted twice with the same values (PostgreSQL refuses this).
    macro_rules! sqlite_write {
        ($conn:expr) => {{
            let conn = $conn;
            match rows.last() {
                None if events.is_empty() && usage.is_empty() => Ok(()),
                Some(last)
                    if rows.len() <= SQLITE_ONE_STATEMENT_ROWS
                        && events.is_empty()
                        && usage.is_empty() =>
                {
                    let size = rows.len().next_power_of_two();
                    let mut q = sqlx::query(AssertSqlSafe(upsert_sql(size, placeholders)));
                    bind_rows!(
                        q,
                        rows.iter()
                            .chain(std::iter::repeat_n(last, size - rows.len()))
                    );
                    q.execute(&mut *conn).await.map(|_| ())
                }
                _ => {
                    let tx = sqlx::Connection::begin(&mut *conn).await?;
                    upsert!(tx)
                }
            }
        }};
    }
    match pool {
        Pool::Sqlite(p) if durable => {
            let mut conn = p.acquire().await?;
            sqlite_write!(&mut *conn)
        }
        Pool::Sqlite(p) => {
            if relaxed.is_none() {
                let mut conn = p.acquire().await?;
                sqlx::query("PRAGMA synchronous = NORMAL")
                    .execute(&mut *conn)
                    .await?;
                *relaxed = Some(conn);
            }
            let Some(conn) = relaxed.as_mut() else {
                return Err(sqlx::Error::PoolClosed);
            };
            let result = sqlite_write!(&mut **conn);
            if result.is_err() {
                // It may be in a state of its own (a failed transaction): never reuse it, and
                // never give it back to the pool at NORMAL.
                if let Some(c) = relaxed.take() {
                    c.detach();
                }
            }
            result
        }
        Pool::Postgres(p) => {
            let mut tx = p.begin().await?;
            super::ha::check_fence(&mut tx, fence).await?;
            if !durable {
                sqlx::query("SET LOCAL synchronous_commit TO OFF")
                    .execute(&mut *tx)
                    .await?;
            }
            upsert!(tx)
        }
    }
}

/// The rows of `requests` in order, a job ID written twice keeping its last version: the same
/// outcome as applying the calls one after another, and PostgreSQL refuses one INSERT … ON
/// CONFLICT touching a row twice.
pub(super) fn dedup<'a>(requests: impl IntoIterator<Item = &'a WriteRequest>) -> Vec<&'a JobRow> {
    let mut rows: Vec<&JobRow> = Vec::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for row in requests.into_iter().flat_map(|r| r.jobs.iter()) {
        match seen.get(row.job_id.as_str()) {
            Some(&i) => rows[i] = row,
            None => {
                seen.insert(&row.job_id, rows.len());
                rows.push(row);
            }
        }
    }
    rows
}

/// The usage rows of `requests` in order, an attempt written twice keeping its last version
/// (as [`dedup`] for jobs).
fn dedup_usage<'a>(requests: impl IntoIterator<Item = &'a WriteRequest>) -> Vec<&'a AttemptUsage> {
    let mut rows: Vec<&AttemptUsage> = Vec::new();
    let mut seen: HashMap<(&str, u32), usize> = HashMap::new();
    for u in requests.into_iter().flat_map(|r| r.appends.usage.iter()) {
        match seen.get(&(u.job_id.as_str(), u.attempt)) {
            Some(&i) => rows[i] = u,
            None => {
                seen.insert((&u.job_id, u.attempt), rows.len());
                rows.push(u);
            }
        }
    }
    rows
}

/// While writes fail and none is queued, the writer tries a one-row write this often, so that
/// the store stops reporting itself degraded once space returns even if nobody writes.
const PROBE_EVERY: Duration = Duration::from_secs(2);

pub(super) async fn run_writer(
    pool: Pool,
    mut rx: mpsc::Receiver<WriteRequest>,
    health: Arc<WriteHealth>,
    fence: Arc<AtomicI64>,
    events: Arc<tokio::sync::Notify>,
) {
    let mut carried: Option<WriteRequest> = None;
    let mut relaxed: RelaxedConn = None;
    loop {
        let first = match carried.take() {
            Some(r) => r,
            None if health.is_degraded() => {
                match tokio::time::timeout(PROBE_EVERY, rx.recv()).await {
                    Ok(Some(r)) => r,
                    Ok(None) => break,
                    Err(_) => {
                        probe(&pool, &health).await;
                        continue;
                    }
                }
            }
            None => match rx.recv().await {
                Some(r) => r,
                None => break,
            },
        };
        let mut rows = first.jobs.len() + first.appends.len();
        let mut group = vec![first];
        while rows < MAX_GROUP_ROWS {
            match rx.try_recv() {
                Ok(r) if rows + r.jobs.len() + r.appends.len() > MAX_GROUP_ROWS => {
                    carried = Some(r);
                    break;
                }
                Ok(r) => {
                    rows += r.jobs.len() + r.appends.len();
                    group.push(r);
                }
                Err(_) => break,
            }
        }
        let appended = group.iter().any(|r| !r.appends.events.is_empty());
        let committed = commit_group(
            &pool,
            &mut relaxed,
            &health,
            group,
            fence.load(Ordering::SeqCst),
        )
        .await;
        if appended && committed {
            events.notify_waiters();
        }
    }
    if let Some(c) = relaxed.take() {
        // Closed rather than handed back to the pool at NORMAL.
        drop(c.detach());
    }
    debug!("store writer stopped");
}

/// A one-row write that tells whether writes land again.
async fn probe(pool: &Pool, health: &WriteHealth) {
    let written = on_pool!(pool, p => {
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ('write_probe', $1) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(now_ms().to_string())
        .execute(p)
        .await
        .map(drop)
    });
    match written.map_err(map_err) {
        Ok(_) => health.succeeded(),
        Err(e) => health.failed(&e),
    }
}

pub(super) async fn commit_group(
    pool: &Pool,
    relaxed: &mut RelaxedConn,
    health: &WriteHealth,
    group: Vec<WriteRequest>,
    fence: i64,
) -> bool {
    let started = Instant::now();
    let rows = dedup(&group);
    let events: Vec<&NewEvent> = group.iter().flat_map(|r| r.appends.events.iter()).collect();
    let usage = dedup_usage(&group);
    let durable = group.iter().any(|r| r.durable);
    let result = write_rows(pool, relaxed, &rows, &events, &usage, durable, fence)
        .await
        .map_err(map_err);
    let row_count = rows.len();
    drop(rows);
    drop(events);
    drop(usage);
    match &result {
        Ok(()) => health.succeeded(),
        Err(e) => health.failed(e),
    }
    match result {
        Ok(()) => {
            debug!(
                rows = row_count,
                waiters = group.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "group committed"
            );
            for r in group {
                // The caller may have given up waiting; the write stands regardless.
                let _ = r.reply.send(Ok(()));
            }
            true
        }
        Err(e) if group.len() > 1 && !e.is_retryable() => {
            // One caller's bad row must not fail everyone sharing the transaction: commit each
            // caller alone so the error reaches only its owner.
            warn!(error = %e, waiters = group.len(), "group commit failed, committing callers one by one");
            let mut any = false;
            for r in group {
                let events: Vec<&NewEvent> = r.appends.events.iter().collect();
                let usage = dedup_usage([&r]);
                let result = write_rows(
                    pool,
                    relaxed,
                    &dedup([&r]),
                    &events,
                    &usage,
                    r.durable,
                    fence,
                )
                .await
                .map_err(map_err);
                any |= result.is_ok();
                match &result {
                    Ok(()) => health.succeeded(),
                    Err(e) => {
                        health.failed(e);
                        warn!(error = %e, rows = r.jobs.len(), "job upsert failed");
                    }
                }
                let _ = r.reply.send(result);
            }
            any
        }
        Err(e) => {
            // Storage faults are logged by `WriteHealth`, at most once a minute.
            if !e.is_storage_fault() {
                warn!(error = %e, rows = row_count, waiters = group.len(), "group commit failed");
            }
            for r in group {
                let _ = r.reply.send(Err(clone_err(&e)));
            }
            false
        }
    }
}

pub(super) fn clone_err(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Storage(m) => StoreError::Storage(m.clone()),
        StoreError::Fatal(m) => StoreError::Fatal(m.clone()),
        StoreError::Closed => StoreError::Closed,
        StoreError::Fenced => StoreError::Fenced,
    }
}
