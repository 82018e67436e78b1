//! One server per data directory.
//!
//! Two servers on one SQLite file would both run the engine (each launching every job), and both
//! would append to the process runtime's journal and the same log files. SQLite's own locks do
//! not stop that: they serialise transactions, not servers. An advisory lock (`flock`) on
//! `<data-dir>/flotilla.lock` does: the kernel drops it when the process ends however it ends,
//! so a SIGKILLed server never blocks the next start, and nothing has to clean up a stale file.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Why the data directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it. Permanent until that server stops.
    #[error(
        "data directory {dir} is in use by another flotilla server{holder}: one server per data \
         directory (stop it, or give this one another --data-dir)"
    )]
    Held { dir: PathBuf, holder: String },
    #[error("cannot lock {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Held for the life of the server; dropping it (or the process ending) releases the directory.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    pub fn acquire(dir: &Path) -> Result<DataDirLock, LockError> {
        let path = dir.join("flotilla.lock");
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        // Not truncated on open: the holder's pid in it is what the refusal reports.
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(LockError::Held {
                    dir: dir.to_owned(),
                    holder: if pid.is_empty() {
                        String::new()
                    } else {
                        format!(" (pid {pid})")
                    },
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(DataDirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_directory_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = DataDirLock::acquire(dir.path()).expect("first lock");
        let err = DataDirLock::acquire(dir.path()).expect_err("second lock");
        let msg = err.to_string();
        assert!(msg.contains("in use by another flotilla server"), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        drop(first);
        DataDirLock::acquire(dir.path()).expect("lock after release");
    }
}
