//! The SQLite database's files, and the marker that says they hold a store.
//!
//! SQLite in WAL mode keeps recent commits in `flotilla.db-wal` until a checkpoint copies them into
//! `flotilla.db`. A copy of the main file alone, a lost WAL, a truncated or missing database all
//! open without complaint as an older or empty store, and a server that starts on one silently
//! forgets jobs it acknowledged. The marker (`<db>-marker.json`, beside the database) records that
//! the directory holds a store: its id, the epoch of the last start (also written into the
//! database at that start) and how many jobs it held. A start refuses when the database
//! contradicts it. Jobs are never deleted, so fewer jobs than the marker counted is a loss too.
//!
//! A clean shutdown checkpoints the WAL into the main file (`wal_checkpoint(TRUNCATE)`), so that
//! after it `flotilla.db` alone is the whole store.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sqlx::SqliteConnection;
use tracing::{info, warn};

use crate::util::time::now_ms;

use super::super::{StoreError, StoreResult};

/// What the marker file holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(super) struct Marker {
    /// The store's id, also in the database's `meta` table (`store_id`).
    pub store_id: String,
    /// Bumped at every start, in the database first and then here: a database whose epoch is
    /// older than the marker's lost what was written since (its WAL, or it is an old copy).
    pub epoch: i64,
    /// Jobs the store held when the marker was written (at start and at clean shutdown).
    pub jobs: i64,
    /// Whether the last server stopped cleanly (the WAL checkpointed into the main file).
    pub clean: bool,
    pub written_at: i64,
}

/// Jobs the database holds, in their table or moved to the quarantine table (which an older
/// schema does not have yet): a quarantined job is set aside, not lost.
async fn stored_jobs(conn: &mut SqliteConnection) -> StoreResult<i64> {
    let map = super::map_err;
    let has_quarantine: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'quarantine'",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(map)?;
    let sql = if has_quarantine > 0 {
        "SELECT (SELECT COUNT(*) FROM jobs) \
         + (SELECT COUNT(*) FROM quarantine WHERE source = 'job')"
    } else {
        "SELECT COUNT(*) FROM jobs"
    };
    sqlx::query_scalar(sql)
        .fetch_one(&mut *conn)
        .await
        .map_err(map)
}

/// The paths of one SQLite database and its identity once opened.
#[derive(Debug)]
pub(super) struct SqliteFiles {
    db: PathBuf,
    marker: PathBuf,
    /// Set by [`SqliteFiles::mark_start`].
    current: std::sync::Mutex<Option<Marker>>,
}

/// The message of a refused start names the files and the way out.
fn refuse(files: &SqliteFiles, what: String) -> StoreError {
    StoreError::Fatal(format!(
        "refusing to start on {}: {what}. The marker {} says this directory holds a store. \
         Restore the database (with its -wal file if it had one) and start again; to start on \
         this database anyway (an intended restore of an older backup, or a new empty store), \
         delete the marker file first. See docs/operations.md, \"Storage faults, restarts and \
         the data directory\".",
        files.db.display(),
        files.marker.display()
    ))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn file_len(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.len())
}

impl SqliteFiles {
    pub fn new(db: &Path) -> SqliteFiles {
        SqliteFiles {
            db: db.to_owned(),
            marker: with_suffix(db, "-marker.json"),
            current: std::sync::Mutex::new(None),
        }
    }

    fn read_marker(&self) -> StoreResult<Option<Marker>> {
        match std::fs::read(&self.marker) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                StoreError::Fatal(format!(
                    "the store marker {} is unreadable ({e}); delete it to start anyway",
                    self.marker.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::Fatal(format!(
                "cannot read the store marker {}: {e}",
                self.marker.display()
            ))),
        }
    }

    /// Before the database is opened (which would create a missing one): the marker, and a
    /// refusal if the files it vouches for are missing or empty.
    pub fn check_files(&self) -> StoreResult<Option<Marker>> {
        let Some(marker) = self.read_marker()? else {
            return Ok(None);
        };
        let wal = file_len(&with_suffix(&self.db, "-wal")).unwrap_or(0);
        match file_len(&self.db) {
            None => Err(refuse(self, "the database file is missing".into())),
            // A WAL with content may still hold the whole store (a first start that was killed
            // before any checkpoint); the schema and epoch checks decide then.
            Some(0) if wal == 0 => Err(refuse(
                self,
                if marker.clean {
                    "the database file is empty (0 bytes)".into()
                } else {
                    "the database file is empty (0 bytes) and there is no WAL, where the \
                     running server kept its data"
                        .into()
                },
            )),
            Some(_) => Ok(Some(marker)),
        }
    }

    /// Once open, before any migration: the database must be the store the marker describes,
    /// and no older.
    pub async fn check_contents(
        &self,
        conn: &mut SqliteConnection,
        marker: &Marker,
    ) -> StoreResult<()> {
        let map = super::map_err;
        let has_schema: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name IN ('meta', 'jobs')",
        )
        .fetch_one(&mut *conn)
        .await
        .map_err(map)?;
        if has_schema < 2 {
            let wal = with_suffix(&self.db, "-wal");
            let why = if file_len(&wal).unwrap_or(0) == 0 && !marker.clean {
                "the database has no schema and there is no WAL: it is a copy of the main file \
                 taken while the server ran, or its WAL (-wal file) was lost"
            } else {
                "the database has no schema (it is empty)"
            };
            return Err(refuse(self, why.into()));
        }
        let meta = |key: &'static str| {
            sqlx::query_scalar::<_, String>("SELECT value FROM meta WHERE key = $1").bind(key)
        };
        let id: Option<String> = meta("store_id")
            .fetch_optional(&mut *conn)
            .await
            .map_err(map)?;
        if id.as_deref() != Some(marker.store_id.as_str()) {
            return Err(refuse(
                self,
                format!(
                    "the database holds store {:?}, the marker names {:?}",
                    id.unwrap_or_default(),
                    marker.store_id
                ),
            ));
        }
        let epoch: i64 = meta("epoch")
            .fetch_optional(&mut *conn)
            .await
            .map_err(map)?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if epoch < marker.epoch {
            return Err(refuse(
                self,
                format!(
                    "the database is from start {epoch} but the store was last started as \
                     {}: what was written since is missing (its WAL, the -wal file, was lost, \
                     or this is an older copy)",
                    marker.epoch
                ),
            ));
        }
        let jobs = stored_jobs(conn).await?;
        if jobs < marker.jobs {
            return Err(refuse(
                self,
                format!(
                    "the database holds {jobs} jobs but held {} (jobs are never deleted)",
                    marker.jobs
                ),
            ));
        }
        Ok(())
    }

    /// After migrations: a new epoch in the database (durably), then in the marker.
    pub async fn mark_start(
        &self,
        conn: &mut SqliteConnection,
        marker: Option<Marker>,
    ) -> StoreResult<()> {
        let map = super::map_err;
        let upsert = "INSERT INTO meta (key, value) VALUES ($1, $2) \
                      ON CONFLICT (key) DO UPDATE SET value = excluded.value";
        let read = |key: &'static str| {
            sqlx::query_scalar::<_, String>("SELECT value FROM meta WHERE key = $1").bind(key)
        };
        let store_id = match read("store_id")
            .fetch_optional(&mut *conn)
            .await
            .map_err(map)?
        {
            Some(id) => id,
            None => {
                let id = uuid::Uuid::new_v4().to_string();
                sqlx::query(upsert)
                    .bind("store_id")
                    .bind(&id)
                    .execute(&mut *conn)
                    .await
                    .map_err(map)?;
                id
            }
        };
        let db_epoch: i64 = read("epoch")
            .fetch_optional(&mut *conn)
            .await
            .map_err(map)?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let epoch = db_epoch.max(marker.as_ref().map_or(0, |m| m.epoch)) + 1;
        // The database first: a crash between the two leaves it ahead of the marker, which the
        // next start accepts.
        sqlx::query(upsert)
            .bind("epoch")
            .bind(epoch.to_string())
            .execute(&mut *conn)
            .await
            .map_err(map)?;
        let jobs = stored_jobs(conn).await?;
        let m = Marker {
            store_id,
            epoch,
            jobs,
            clean: false,
            written_at: now_ms(),
        };
        self.write_marker(&m)?;
        info!(store_id = %m.store_id, epoch, jobs, "store marker written");
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(m);
        Ok(())
    }

    /// At a clean shutdown: the WAL checkpointed into the main file, the marker updated.
    pub async fn mark_clean(&self, conn: &mut SqliteConnection) -> StoreResult<()> {
        let map = super::map_err;
        // (busy, frames in the WAL, frames checkpointed); busy means a reader held it back.
        let (busy, log, done): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&mut *conn)
            .await
            .map_err(map)?;
        let jobs = stored_jobs(conn).await?;
        let clean = busy == 0 && log == done;
        if !clean {
            warn!(busy, log, done, "WAL checkpoint incomplete at shutdown");
        }
        let current = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(mut m) = current {
            m.jobs = m.jobs.max(jobs);
            m.clean = clean;
            m.written_at = now_ms();
            self.write_marker(&m)?;
        }
        info!(jobs, clean, "store checkpointed");
        Ok(())
    }

    /// Replaces the marker atomically and durably (temporary file, fsync, rename, fsync of the
    /// directory).
    fn write_marker(&self, m: &Marker) -> StoreResult<()> {
        let io = |e: std::io::Error| {
            StoreError::Storage(format!(
                "cannot write the store marker {}: {e}",
                self.marker.display()
            ))
        };
        let tmp = with_suffix(&self.marker, ".tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        let text = serde_json::to_vec_pretty(m)
            .map_err(|e| StoreError::Fatal(format!("encoding the store marker: {e}")))?;
        f.write_all(&text).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        std::fs::rename(&tmp, &self.marker).map_err(io)?;
        if let Some(dir) = self.marker.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        Ok(())
    }
}
