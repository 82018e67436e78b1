//! `flotilla admin backup`: an online, consistent copy of a SQLite store.
//!
//! `VACUUM INTO` reads the database in one read transaction, so the copy is the store as of one
//! commit, the part still in `flotilla.db-wal` included; in WAL mode it neither blocks nor waits
//! for the running server's writes. (SQLite's page-by-page backup API restarts whenever another
//! connection writes, which a busy server does all the time.) The copy is written beside its
//! destination under a temporary name, checked, synced and renamed, so a file at the
//! destination is always a whole backup. PostgreSQL stores are backed up with `pg_dump`.

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{ConnectOptions, Connection};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a backup was not made.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(
        "the store is PostgreSQL: back it up with pg_dump (e.g. `pg_dump --format=custom \
         --file=flotilla.dump \"$DATABASE_URL\"`) and restore with pg_restore; see \
         docs/operations.md, \"Backup and restore\""
    )]
    Postgres,
    #[error("unsupported database url (expected sqlite:// or postgres://)")]
    UnsupportedUrl,
    #[error("no database at {0}: is --data-dir (or --database-url) the server's?")]
    NoDatabase(PathBuf),
    #[error("{0} exists; a backup never overwrites a file, choose a new path")]
    DestinationExists(PathBuf),
    #[error("the copy failed its integrity check: {0}")]
    Corrupt(String),
    #[error("backup: sqlite: {0}")]
    Sqlite(#[from] sqlx::Error),
    #[error("backup: {0}")]
    Io(#[from] std::io::Error),
}

/// What a backup holds, as counted in the copy itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    pub path: PathBuf,
    pub bytes: u64,
    pub jobs: i64,
    pub resources: i64,
}

/// How long the copy waits for a lock the server holds (a checkpoint truncating the WAL).
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The file of a `sqlite:` URL, or why there is none.
fn sqlite_path(url: &str) -> Result<PathBuf, BackupError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Err(BackupError::Postgres);
    }
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or(BackupError::UnsupportedUrl)?;
    let path = rest.split('?').next().unwrap_or_default();
    Ok(PathBuf::from(path))
}

/// Copies the SQLite store of `url` to `dest`, which must not exist.
pub async fn backup(url: &str, dest: &Path) -> Result<BackupSummary, BackupError> {
    let source = sqlite_path(url)?;
    if !source.is_file() {
        return Err(BackupError::NoDatabase(source));
    }
    if dest.exists() {
        return Err(BackupError::DestinationExists(dest.to_path_buf()));
    }
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "flotilla-backup.db".into());
    let partial = dir.join(format!(".{name}.partial-{}", std::process::id()));
    let _ = std::fs::remove_file(&partial);
    let result = copy_and_check(&source, &partial, dest, &dir).await;
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

async fn copy_and_check(
    source: &Path,
    partial: &Path,
    dest: &Path,
    dir: &Path,
) -> Result<BackupSummary, BackupError> {
    // Not read-only: a reader of a WAL database needs the shared-memory file, which it may
    // have to create if the server is not running. Nothing is written to the source.
    let options = SqliteConnectOptions::new()
        .filename(source)
        .create_if_missing(false)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(BUSY_TIMEOUT);
    let mut conn = options.connect().await?;
    sqlx::query("VACUUM INTO $1")
        .bind(partial.to_string_lossy().into_owned())
        .execute(&mut conn)
        .await?;
    conn.close().await?;

    // The copy is a rollback-journal database; open it without changing that so that the file
    // restored is exactly the file checked.
    let options = SqliteConnectOptions::new()
        .filename(partial)
        .create_if_missing(false)
        .journal_mode(SqliteJournalMode::Delete);
    let mut copy = options.connect().await?;
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut copy)
        .await?;
    if check != "ok" {
        return Err(BackupError::Corrupt(check));
    }
    let jobs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs")
        .fetch_one(&mut copy)
        .await?;
    let resources: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM resources")
        .fetch_one(&mut copy)
        .await?;
    copy.close().await?;

    std::fs::File::open(partial)?.sync_all()?;
    std::fs::rename(partial, dest)?;
    // The rename is durable once the directory is synced.
    std::fs::File::open(dir)?.sync_all()?;
    Ok(BackupSummary {
        path: dest.to_path_buf(),
        bytes: std::fs::metadata(dest)?.len(),
        jobs,
        resources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            sqlite_path("sqlite:///data/flotilla.db?mode=rwc").unwrap(),
            PathBuf::from("/data/flotilla.db")
        );
        assert_eq!(
            sqlite_path("sqlite://rel/f.db").unwrap(),
            PathBuf::from("rel/f.db")
        );
        assert!(matches!(
            sqlite_path("postgres://u@h/db"),
            Err(BackupError::Postgres)
        ));
        assert!(matches!(
            sqlite_path("mysql://x"),
            Err(BackupError::UnsupportedUrl)
        ));
    }
}
