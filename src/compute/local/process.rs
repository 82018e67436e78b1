//! Attempts as plain host processes: `spec.command` run directly (no shell; argv[0] looked up in
//! PATH), each in a process group of its own so that stopping an attempt reaches everything it
//! started.
//!
//! What it does, and why:
//! - Environment: exactly `spec.env`, plus the server's `PATH` and a `HOME` that is the working
//!   directory unless `spec.env` sets them: a container starts from its image's environment,
//!   not the server's, and a job must not find the server's `~/.aws` by following `$HOME`.
//! - User: a server running as root runs jobs as `--process-user` (default `nobody`), or as the
//!   definition's `user` (Docker's forms: `name`, `uid`, `name:group`, `uid:gid`), never as
//!   root unless asked: a job must not read the server's database, credentials or environment,
//!   nor signal it. A server not running as root runs jobs as itself and refuses a `user`.
//! - Working directory: an empty directory under the work root, as a container's writable layer
//!   starts empty. The work root is `<data-dir>/work/` for a server not running as root, and
//!   `<data-dir>.work/` beside the data directory for one that is (the data directory is `0700`
//!   and another user could not reach a directory inside it); each attempt's directory belongs
//!   to the user it runs as. A directory the attempt left empty is reused by a later attempt
//!   (creating and removing one per attempt costs an inode each); anything else is removed.
//! - Output: stdout and stderr line by line into the attempt's log stream, each line timestamped
//!   when it arrives.
//! - Exit: the exit code, or 128+N for a process killed by signal N (as a shell reports it).
//!   When the main process exits, whatever it left running in its group is killed, as the end of
//!   a container's main process ends the container.
//! - A command that cannot be started (not found, not executable) ends the attempt with
//!   `exit_code: None` and a `CannotStartContainerError: …` reason rather than an error, so the
//!   job fails with a readable reason.
//! - Recovery: each attempt's process group is recorded in the journal `<data-dir>/run/journal`
//!   (one JSON line per change, appended; rewritten with only the live records when it grows).
//!   One append-only file rather than a file per attempt: at thousands of attempts a second,
//!   creating and deleting files was most of the runtime's cost (ext4 inode allocation).
//!   After a server crash the processes are no longer the server's children, so their exit codes
//!   cannot be collected: [`Runtime::recover`] kills each surviving group (so nothing runs
//!   twice) and reports [`HOST_LOST_REASON`]; the engine retries per the retry strategy. An
//!   attempt that finished before the crash had its exit code written to the record first, and
//!   that code is reported instead.
//!
//! Adoption instead of killing would need a parent that outlives the server: a tiny `flotilla
//! shim` process (double-forked, in the attempt's group) that spawns the command, copies its
//! output into the log file itself and writes the exit code to `run/<task_id>.json` when it
//! ends. A restarted server would then only watch the record (inotify or polling) and tail the
//! log file. Not built: the kill-and-retry contract above is simpler and the Docker runtime
//! already adopts.

use super::{HOST_LOST_REASON, exited, send, send_later};
use crate::compute::{
    AttemptSpec, ExpectedAttempt, Runtime, RuntimeError, RuntimeEvent, StopSignal,
};
use crate::logs::{LogStore, LogWriter};
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;
use tracing::Instrument;

/// After the main process exits, how long output still in the pipes may take to drain (a
/// process that left the group with `setsid` could hold them open for ever).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// A line longer than this is cut into several events rather than buffered without bound.
/// How long an attempt that could not get a working directory waits before it is reported
/// not started (and the job goes back to RUNNABLE to be placed again).
const NOT_STARTED_PAUSE: Duration = Duration::from_secs(1);
const MAX_LINE: usize = crate::logs::MAX_MESSAGE_BYTES;

/// One attempt as the run journal (`<data-dir>/run/journal`) records it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct RunRecord {
    job_id: String,
    attempt: u32,
    task_id: String,
    /// The group leader's pid, which is also the process group id.
    pid: i32,
    /// The kernel's boot id when the process started: after a reboot every recorded group is
    /// gone and its pid may belong to something else.
    #[serde(default)]
    boot_id: Option<String>,
    /// The leader's start time (clock ticks since boot, `/proc/<pid>/stat` field 22): tells our
    /// process from a later one that reused the pid.
    #[serde(default)]
    start_ticks: Option<u64>,
    /// Written when the attempt ends, before the `Exited` event is sent: a crash in between
    /// still reports the real exit code.
    #[serde(default)]
    exit_code: Option<i32>,
}

#[derive(Debug, Clone)]
struct Running {
    pgid: i32,
}

/// One line of the run journal.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Entry {
    Put(RunRecord),
    Del { task_id: String },
}

/// The run records: in memory, and appended to `run/journal` on every change.
struct Journal {
    path: PathBuf,
    file: std::fs::File,
    live: HashMap<String, RunRecord>,
    /// Lines in the file; rewritten once they outnumber the live records by far.
    lines: usize,
}

/// Empty working directories kept for reuse; beyond this many they are removed.
const WORK_POOL: usize = 64;

impl Journal {
    fn open(run_dir: &Path) -> std::io::Result<Journal> {
        let path = run_dir.join("journal");
        let mut live: HashMap<String, RunRecord> = HashMap::new();
        if let Ok(text) = std::fs::read_to_string(&path) {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                // A torn last line (a crash mid-append) is skipped like any unreadable one.
                match serde_json::from_str::<Entry>(line) {
                    Ok(Entry::Put(r)) => {
                        live.insert(r.task_id.clone(), r);
                    }
                    Ok(Entry::Del { task_id }) => {
                        live.remove(&task_id);
                    }
                    Err(e) => tracing::warn!(error = %e, "unreadable run journal line ignored"),
                }
            }
        }
        // Records of earlier versions, one file per attempt.
        if let Ok(dir) = std::fs::read_dir(run_dir) {
            for entry in dir.flatten() {
                let p = entry.path();
                if p.extension().and_then(|e| e.to_str()) == Some("json") {
                    if let Ok(r) = std::fs::read(&p).map_err(|e| e.to_string()).and_then(|b| {
                        serde_json::from_slice::<RunRecord>(&b).map_err(|e| e.to_string())
                    }) {
                        live.insert(r.task_id.clone(), r);
                    }
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
        let mut j = Journal {
            file: std::fs::File::create(run_dir.join("journal.new"))?,
            path,
            live,
            lines: 0,
        };
        j.compact()?;
        Ok(j)
    }

    /// Rewrites the journal with the live records only (write a new file, rename it over).
    fn compact(&mut self) -> std::io::Result<()> {
        use std::io::Write;
        let tmp = self.path.with_extension("new");
        let mut out = Vec::new();
        for r in self.live.values() {
            serde_json::to_writer(&mut out, &Entry::Put(r.clone()))
                .map_err(std::io::Error::other)?;
            out.push(b'\n');
        }
        std::fs::write(&tmp, &out)?;
        std::fs::rename(&tmp, &self.path)?;
        self.file = std::fs::OpenOptions::new().append(true).open(&self.path)?;
        self.lines = self.live.len();
        let _ = self.file.flush();
        Ok(())
    }

    fn append(&mut self, entry: &Entry) -> std::io::Result<()> {
        use std::io::Write;
        let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        // One write(2) of a whole line to an O_APPEND file: lines never interleave.
        self.file.write_all(&line)?;
        self.lines += 1;
        if self.lines > 10_000 && self.lines > 4 * self.live.len() {
            self.compact()?;
        }
        Ok(())
    }

    fn put(&mut self, rec: &RunRecord) -> std::io::Result<()> {
        self.live.insert(rec.task_id.clone(), rec.clone());
        self.append(&Entry::Put(rec.clone()))
    }

    fn del(&mut self, task_id: &str) -> std::io::Result<()> {
        if self.live.remove(task_id).is_none() {
            return Ok(());
        }
        self.append(&Entry::Del {
            task_id: task_id.to_string(),
        })
    }
}

/// Whom the process runtime's jobs run as, and where their working directories are.
#[derive(Debug, Clone, Default)]
pub struct ProcessOptions {
    /// Jobs whose definition names no `user` run as this one; `None`: as the server.
    pub user: Option<JobUser>,
    /// Root of the attempts' working directories; `None`: `<data-dir>/work`.
    pub work_dir: Option<PathBuf>,
    /// Where the run journal is kept; `None`: `<data-dir>/run`. Replicas on one host share
    /// one, so that the replica that takes over finds (and kills) what the last leader left.
    pub journal_dir: Option<PathBuf>,
    /// The exec shim ([`install_exec_shim`]), run to start a job as another user; `None`: std
    /// switches users in a forked copy of the server (much slower).
    pub exec_shim: Option<PathBuf>,
}

/// A user and group to run a job as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobUser {
    pub uid: u32,
    pub gid: u32,
}

impl JobUser {
    /// Whether this is the user and group the server itself runs as (nothing to switch).
    fn is_current(&self) -> bool {
        self.uid == nix::unistd::geteuid().as_raw() && self.gid == nix::unistd::getegid().as_raw()
    }

    /// Docker's forms of `user`: `name`, `uid`, `name:group`, `uid:gid`. A bare uid with no
    /// account runs with gid = uid, as Docker does with a numeric user missing from the image.
    pub fn parse(user: &str) -> Result<JobUser, String> {
        let (name, group) = match user.split_once(':') {
            Some((n, g)) => (n, Some(g)),
            None => (user, None),
        };
        let account = if let Ok(uid) = name.parse::<u32>() {
            nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                .ok()
                .flatten()
                .map(|u| (u.uid.as_raw(), u.gid.as_raw()))
                .unwrap_or((uid, uid))
        } else {
            match nix::unistd::User::from_name(name) {
                Ok(Some(u)) => (u.uid.as_raw(), u.gid.as_raw()),
                Ok(None) => return Err(format!("no user named '{name}' on this host")),
                Err(e) => return Err(format!("cannot look up user '{name}': {e}")),
            }
        };
        let gid = match group {
            None => account.1,
            Some(g) => match g.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => match nix::unistd::Group::from_name(g) {
                    Ok(Some(gr)) => gr.gid.as_raw(),
                    Ok(None) => return Err(format!("no group named '{g}' on this host")),
                    Err(e) => return Err(format!("cannot look up group '{g}': {e}")),
                },
            },
        };
        Ok(JobUser {
            uid: account.0,
            gid,
        })
    }
}

/// Whom `spec` runs as: its definition's `user`, else the runtime's default; `Err` is the
/// attempt's reason when that cannot be.
fn job_user(spec: &AttemptSpec, default: Option<JobUser>) -> Result<Option<JobUser>, String> {
    let Some(user) = spec.container.user.as_deref() else {
        return Ok(default);
    };
    if !can_switch_user() {
        return Err(
            "MISCONFIGURATION: containerProperties.user: the LOCAL process runtime runs jobs as \
             the server's own user unless the server runs as root; run the server as root, with \
             --local-runtime docker, or the job on EC2 capacity"
                .into(),
        );
    }
    JobUser::parse(user)
        .map(Some)
        .map_err(|e| format!("MISCONFIGURATION: containerProperties.user: {e}"))
}

/// The exec shim (src/compute/local/exec_as.rs, compiled by build.rs): a small program that sets
/// a job's ulimits, drops to its user and executes it. See [`install_exec_shim`].
pub const EXEC_SHIM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/flotilla-exec-as"));

/// Writes [`EXEC_SHIM`] to `dir/flotilla-exec-as` (unless it is there already, byte for byte)
/// and returns its path. Written to a temporary name and renamed, so that replicas sharing a
/// directory, or a job starting meanwhile, never run half a file. Only its owner (root, when a
/// shim is needed at all) may write it, since root executes it.
pub fn install_exec_shim(dir: &Path) -> std::io::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("flotilla-exec-as");
    if std::fs::read(&path).is_ok_and(|b| b == EXEC_SHIM) {
        probe_exec_shim(&path)?;
        return Ok(path);
    }
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".flotilla-exec-as.{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o755)
        .open(&tmp)?;
    f.write_all(EXEC_SHIM)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, &path)?;
    probe_exec_shim(&path)?;
    Ok(path)
}

/// Runs the installed shim once with no arguments (it prints its usage and exits 126), so that
/// a directory whose files cannot be executed (`noexec`) is found at start-up rather than by
/// every job failing to start.
fn probe_exec_shim(path: &Path) -> std::io::Result<()> {
    let status = std::process::Command::new(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if status.code() == Some(126) {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "{} ran but answered {status}, not its usage",
            path.display()
        )))
    }
}

/// Where `program` is, looked up in `path` as `execvp` would, so that a missing command ends the
/// attempt with the same `CannotStartContainerError` with or without the exec shim.
fn resolve_program(
    program: &str,
    path: Option<&std::ffi::OsStr>,
    work: &Path,
) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        return if executable(&work.join(program)) {
            Ok(PathBuf::from(program))
        } else {
            Err(std::io::ErrorKind::NotFound.into())
        };
    }
    for dir in std::env::split_paths(path.unwrap_or_default()) {
        let candidate = dir.join(program);
        if executable(&candidate) {
            return Ok(candidate);
        }
    }
    Err(std::io::ErrorKind::NotFound.into())
}

/// The ulimits as the shim's argument: `resource=soft:hard,…` with the platform's `RLIMIT_*`
/// numbers (the shim has no table of names), or `-`.
fn limits_arg(limits: &[(String, i64, i64)]) -> String {
    let items: Vec<String> = limits
        .iter()
        .filter_map(|(n, s, h)| Some(format!("{}={s}:{h}", rlimit_resource(n)?)))
        .collect();
    if items.is_empty() {
        return "-".into();
    }
    items.join(",")
}

/// Whether this process can run jobs as other users.
fn can_switch_user() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The process runtime. Cheap to clone.
#[derive(Clone)]
pub struct ProcessRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    journal: Mutex<Journal>,
    work_dir: PathBuf,
    /// Empty working directories left by finished attempts, ready for the next ones, with the
    /// user each belongs to.
    work_pool: Mutex<Vec<(PathBuf, Option<JobUser>)>>,
    /// Whom jobs without a `user` of their own run as.
    user: Option<JobUser>,
    exec_shim: Option<PathBuf>,
    logs: Arc<LogStore>,
    events: mpsc::Sender<RuntimeEvent>,
    /// (job id, attempt) → its process group, while the attempt runs.
    running: Mutex<HashMap<(String, u32), Running>>,
    /// (job id, attempt) → task id of attempts that ended, whose run record (with the exit code)
    /// stays in the journal until the engine has stored the end (`Runtime::end_stored`): a
    /// server that dies in between reports the real exit code at the next start.
    ended: Mutex<HashMap<(String, u32), String>>,
}

impl ProcessRuntime {
    pub fn new(
        data_dir: &Path,
        opts: ProcessOptions,
        logs: Arc<LogStore>,
        events: mpsc::Sender<RuntimeEvent>,
    ) -> Result<ProcessRuntime, RuntimeError> {
        let run_dir = opts
            .journal_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("run"));
        let work_dir = opts.work_dir.unwrap_or_else(|| data_dir.join("work"));
        // Working directories of a previous server's attempts: those attempts are killed by
        // `recover` (an unlinked cwd does not disturb a process meanwhile).
        let _ = std::fs::remove_dir_all(&work_dir);
        for d in [&run_dir, &work_dir] {
            std::fs::create_dir_all(d).map_err(|e| {
                RuntimeError::Unavailable(format!("cannot create {}: {e}", d.display()))
            })?;
        }
        if can_switch_user() {
            // Others may pass through to their own attempt's directory, but not list the root.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&work_dir, std::fs::Permissions::from_mode(0o711)).map_err(
                |e| RuntimeError::Unavailable(format!("chmod {}: {e}", work_dir.display())),
            )?;
        }
        let journal = Journal::open(&run_dir).map_err(|e| {
            RuntimeError::Unavailable(format!("run journal in {}: {e}", run_dir.display()))
        })?;
        Ok(ProcessRuntime {
            inner: Arc::new(Inner {
                journal: Mutex::new(journal),
                work_dir,
                work_pool: Mutex::new(Vec::new()),
                user: opts.user,
                exec_shim: opts.exec_shim,
                logs,
                events,
                running: Mutex::new(HashMap::new()),
                ended: Mutex::new(HashMap::new()),
            }),
        })
    }
}

impl Inner {
    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u32), Running>> {
        // A poisoned map is still consistent: every update is a single insert or remove.
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn journal(&self) -> std::sync::MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write_record(&self, rec: &RunRecord) -> std::io::Result<()> {
        self.journal().put(rec)
    }

    fn read_record(&self, task_id: &str) -> Option<RunRecord> {
        self.journal().live.get(task_id).cloned()
    }

    fn forget(&self, task_id: &str) {
        if let Err(e) = self.journal().del(task_id) {
            tracing::warn!(error = %e, "cannot append to the run journal");
        }
    }

    /// An empty working directory owned by `user`: a reused one, or a new `work/<task_id>`.
    fn take_work_dir(&self, task_id: &str, user: Option<JobUser>) -> std::io::Result<PathBuf> {
        let reused = self
            .work_pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        let d = match reused {
            Some((d, owner)) if owner == user => return Ok(d),
            Some((d, _)) => d,
            None => {
                let d = self.work_dir.join(safe_file_name(task_id));
                std::fs::create_dir_all(&d)?;
                d
            }
        };
        if let Some(u) = user {
            use std::os::unix::fs::PermissionsExt;
            std::os::unix::fs::chown(&d, Some(u.uid), Some(u.gid))?;
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(d)
    }

    /// Keeps an attempt's directory for reuse if it left it empty, else removes it.
    fn give_back_work_dir(&self, dir: PathBuf, user: Option<JobUser>) {
        let empty = std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_none());
        if empty {
            let mut pool = self.work_pool.lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() < WORK_POOL {
                pool.push((dir, user));
                return;
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[async_trait::async_trait]
impl Runtime for ProcessRuntime {
    fn name(&self) -> &'static str {
        "process"
    }

    fn end_stored(&self, job_id: &str, attempt: u32) {
        let task = self
            .inner
            .ended
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(job_id.to_string(), attempt));
        if let Some(task) = task {
            self.inner.forget(&task);
        }
    }

    async fn start(&self, spec: AttemptSpec) -> Result<(), RuntimeError> {
        let span = tracing::info_span!(
            "attempt",
            job_id = %spec.job_id,
            attempt = spec.attempt,
            task_id = %spec.task_id
        );
        let inner = &self.inner;
        let Some((program, args)) = spec.command.split_first() else {
            if let Err(e) = inner.logs.writer(&spec.log_group, &spec.log_stream) {
                tracing::warn!(error = %e, "cannot create the attempt's log stream");
            }
            let reason = "CannotStartContainerError: the process runtime needs a command \
                          (there is no image to take a default from)";
            send_later(
                &inner.events,
                vec![exited(
                    &spec.job_id,
                    spec.attempt,
                    None,
                    Some(reason.into()),
                )],
            );
            return Ok(());
        };
        let limits = match super::container::process_config(&spec) {
            Ok(l) => l,
            Err(reason) => {
                super::never_started(&inner.logs, &inner.events, &spec, reason);
                return Ok(());
            }
        };
        let user = match job_user(&spec, inner.user) {
            Ok(u) => u,
            Err(reason) => {
                super::never_started(&inner.logs, &inner.events, &spec, reason);
                return Ok(());
            }
        };
        let work = match inner.take_work_dir(&spec.task_id, user) {
            Ok(w) => w,
            Err(e) => {
                // A full or failing disk: the attempt never ran, so it costs the job nothing.
                // Reported after a pause so that a disk that stays full does not turn into a
                // tight loop of launches.
                span.in_scope(|| tracing::warn!(error = %e, "cannot create a working directory"));
                let events = inner.events.clone();
                let ev = RuntimeEvent::NotStarted {
                    job_id: spec.job_id.clone(),
                    attempt: spec.attempt,
                    reason: format!("cannot create a working directory: {e}"),
                };
                tokio::spawn(async move {
                    tokio::time::sleep(NOT_STARTED_PAUSE).await;
                    send(&events, ev).await;
                });
                return Ok(());
            }
        };
        // Another user through the exec shim (one more exec in the child) rather than std's
        // `uid`/`gid`, which make std fork the whole server instead of posix_spawn: measured
        // at 4x the server's CPU per job on the e2e benchmark.
        let switch = user.filter(|u| !u.is_current());
        let shim = switch.and(inner.exec_shim.as_ref());
        let mut cmd = match (switch, shim) {
            (Some(u), Some(shim)) => {
                let path = spec
                    .env
                    .iter()
                    .find(|(k, _)| k == "PATH")
                    .map(|(_, v)| std::ffi::OsString::from(v))
                    .or_else(|| std::env::var_os("PATH"));
                let resolved = match resolve_program(program, path.as_deref(), &work) {
                    Ok(p) => p,
                    Err(e) => {
                        inner.give_back_work_dir(work, user);
                        let reason = cannot_start(program, &e);
                        span.in_scope(|| tracing::info!(%reason, "attempt could not start"));
                        send_later(
                            &inner.events,
                            vec![exited(&spec.job_id, spec.attempt, None, Some(reason))],
                        );
                        return Ok(());
                    }
                };
                let mut c = tokio::process::Command::new(shim);
                c.arg(u.uid.to_string())
                    .arg(u.gid.to_string())
                    .arg(limits_arg(&limits))
                    .arg("--")
                    .arg(resolved)
                    .arg(program)
                    .args(args);
                c
            }
            _ => {
                let mut c = tokio::process::Command::new(program);
                c.args(args);
                if let Some(u) = switch {
                    // std drops the supplementary groups too when it switches from root.
                    c.uid(u.uid).gid(u.gid);
                }
                c
            }
        };
        cmd.env_clear()
            .current_dir(&work)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group: stop() signals the whole tree, and a Ctrl-C meant for the server
            // does not reach the job.
            .process_group(0)
            // A crashed server must not take running attempts down with it; recover() decides.
            .kill_on_drop(false);
        if let Some(v) = std::env::var_os("PATH") {
            cmd.env("PATH", v);
        }
        cmd.env("HOME", &work);
        cmd.envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if !limits.is_empty() && shim.is_none() {
            let limits: Vec<(libc::__rlimit_resource_t, libc::rlimit)> = limits
                .iter()
                .filter_map(|(name, soft, hard)| {
                    Some((
                        rlimit_resource(name)?,
                        libc::rlimit {
                            rlim_cur: *soft as libc::rlim_t,
                            rlim_max: *hard as libc::rlim_t,
                        },
                    ))
                })
                .collect();
            // SAFETY: between fork and exec only async-signal-safe calls are allowed, and
            // setrlimit is one; `limits` was built before the fork and is only read.
            unsafe {
                cmd.pre_exec(move || {
                    for (resource, limit) in &limits {
                        if libc::setrlimit(*resource, limit) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                inner.give_back_work_dir(work, user);
                let reason = cannot_start(program, &e);
                span.in_scope(|| tracing::info!(%reason, "attempt could not start"));
                send_later(
                    &inner.events,
                    vec![exited(&spec.job_id, spec.attempt, None, Some(reason))],
                );
                return Ok(());
            }
        };
        let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) else {
            // tokio only forgets the pid of a child it has reaped, and this one was never
            // polled: unreachable in practice, and without a pid there is nothing to manage.
            let _ = child.start_kill();
            inner.give_back_work_dir(work, user);
            return Err(RuntimeError::Unavailable(
                "spawned process has no pid".into(),
            ));
        };
        let record = RunRecord {
            job_id: spec.job_id.clone(),
            attempt: spec.attempt,
            task_id: spec.task_id.clone(),
            pid,
            boot_id: boot_id(),
            start_ticks: start_ticks(pid),
            exit_code: None,
        };
        if let Err(e) = inner.write_record(&record) {
            // The attempt still runs; only recovery after a crash would miss it.
            span.in_scope(|| tracing::warn!(error = %e, "cannot write run record"));
        }
        inner
            .running()
            .insert((spec.job_id.clone(), spec.attempt), Running { pgid: pid });
        span.in_scope(|| tracing::info!(pid, "attempt started"));
        let inner = self.inner.clone();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        tokio::spawn(
            async move {
                send(
                    &inner.events,
                    RuntimeEvent::Started {
                        job_id: spec.job_id.clone(),
                        attempt: spec.attempt,
                        task_id: spec.task_id.clone(),
                    },
                )
                .await;
                // Created while the process already runs: the pipes hold its first output, and
                // creating a file (~0.5 ms here) no longer delays every launch.
                // A log file that cannot be created (disk full, I/O error) costs the attempt its
                // output, not its run: the job is what the user asked for, its log a by-product.
                let writer = match inner.logs.writer(&spec.log_group, &spec.log_stream) {
                    Ok(w) => Some(Arc::new(w)),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot create the attempt's log stream; its output is discarded");
                        None
                    }
                };
                // Copied in this task rather than two of their own: fewer wake-ups per attempt.
                let mut copy = std::pin::pin!(futures::future::join(
                    copy_lines(stdout, writer.clone()),
                    copy_lines(stderr, writer.clone())
                ));
                let mut copied = false;
                let status = loop {
                    tokio::select! {
                        st = child.wait() => break st,
                        _ = &mut copy, if !copied => copied = true,
                    }
                };
                // Like a container whose main process ended: nothing else of it survives.
                signal_group(pid, Signal::SIGKILL);
                if !copied
                    && tokio::time::timeout(DRAIN_TIMEOUT, &mut copy)
                        .await
                        .is_err()
                {
                    tracing::warn!(
                        "output pipes still open after the attempt ended; stopped copying"
                    );
                }
                let (exit_code, reason) = match status {
                    Ok(st) => (Some(exit_code_of(st)), None),
                    Err(e) => (
                        None,
                        Some(format!("CannotInspectContainerError: wait failed: {e}")),
                    ),
                };
                let done = RunRecord {
                    exit_code,
                    ..record
                };
                if exit_code.is_some()
                    && let Err(e) = inner.write_record(&done)
                {
                    tracing::warn!(error = %e, "cannot record exit code");
                }
                inner.running().remove(&(spec.job_id.clone(), spec.attempt));
                tracing::info!(?exit_code, "attempt exited");
                if exit_code.is_some() {
                    inner
                        .ended
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert((spec.job_id.clone(), spec.attempt), spec.task_id.clone());
                } else {
                    inner.forget(&spec.task_id);
                }
                send(
                    &inner.events,
                    exited(&spec.job_id, spec.attempt, exit_code, reason),
                )
                .await;
                inner.give_back_work_dir(work, user);
            }
            .instrument(span),
        );
        Ok(())
    }

    async fn stop(
        &self,
        job_id: &str,
        attempt: u32,
        signal: StopSignal,
    ) -> Result<(), RuntimeError> {
        let Some(run) = self
            .inner
            .running()
            .get(&(job_id.to_string(), attempt))
            .cloned()
        else {
            return Ok(());
        };
        let sig = match signal {
            StopSignal::Term => Signal::SIGTERM,
            StopSignal::Kill => Signal::SIGKILL,
        };
        tracing::info!(job_id, attempt, pgid = run.pgid, ?sig, "signalling attempt");
        match checked_killpg(run.pgid, sig) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(e) => Err(RuntimeError::Unavailable(format!(
                "cannot signal process group {}: {e}",
                run.pgid
            ))),
        }
    }

    async fn recover(&self, expected: Vec<ExpectedAttempt>) -> Result<(), RuntimeError> {
        let inner = &self.inner;
        let mut events = Vec::new();
        let mut handled: HashSet<String> = HashSet::new();
        for e in &expected {
            handled.insert(e.task_id.clone());
            if inner.running().contains_key(&(e.job_id.clone(), e.attempt)) {
                continue;
            }
            let span = tracing::info_span!(
                "attempt",
                job_id = %e.job_id,
                attempt = e.attempt,
                task_id = %e.task_id
            );
            let _g = span.enter();
            match inner.read_record(&e.task_id) {
                Some(rec) if rec.exit_code.is_some() => {
                    tracing::info!(
                        exit_code = rec.exit_code,
                        "attempt ended while the server was down"
                    );
                    events.push(exited(&e.job_id, e.attempt, rec.exit_code, None));
                }
                Some(rec) => {
                    let killed = kill_orphan(&rec);
                    tracing::warn!(
                        pgid = rec.pid,
                        killed,
                        "orphaned attempt: killed, reported lost"
                    );
                    events.push(exited(
                        &e.job_id,
                        e.attempt,
                        None,
                        Some(HOST_LOST_REASON.into()),
                    ));
                }
                None => {
                    tracing::warn!("no record of the attempt: reported lost");
                    events.push(exited(
                        &e.job_id,
                        e.attempt,
                        None,
                        Some(HOST_LOST_REASON.into()),
                    ));
                }
            }
            inner.forget(&e.task_id);
        }
        // Records nobody expects (the engine already gave up on them): make sure they are dead.
        let ours: HashSet<i32> = inner.running().values().map(|r| r.pgid).collect();
        let records: Vec<RunRecord> = inner.journal().live.values().cloned().collect();
        {
            for rec in records {
                if handled.contains(&rec.task_id) || ours.contains(&rec.pid) {
                    continue;
                }
                if rec.exit_code.is_none() {
                    let killed = kill_orphan(&rec);
                    tracing::warn!(
                        job_id = %rec.job_id,
                        attempt = rec.attempt,
                        task_id = %rec.task_id,
                        killed,
                        "unexpected orphaned attempt killed"
                    );
                }
                inner.forget(&rec.task_id);
            }
        }
        send_later(&inner.events, events);
        Ok(())
    }
}

/// A shell's view of an exit: the code, or 128+N for death by signal N.
fn exit_code_of(st: std::process::ExitStatus) -> i32 {
    match (st.code(), st.signal()) {
        (Some(c), _) => c,
        (None, Some(sig)) => 128 + sig,
        (None, None) => 255,
    }
}

fn cannot_start(program: &str, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => format!(
            "CannotStartContainerError: {program}: no such file or directory (looked up in PATH)"
        ),
        std::io::ErrorKind::PermissionDenied => {
            format!("CannotStartContainerError: {program}: permission denied")
        }
        _ => format!("CannotStartContainerError: {program}: {e}"),
    }
}

/// Signals a process group, refusing ids that would hit the server itself or every process
/// (`killpg(0)` is the caller's own group, `killpg(1)` init's): a corrupt record must never
/// turn into a kill of the wrong tree.
fn checked_killpg(pgid: i32, sig: Signal) -> Result<(), Errno> {
    let own = nix::unistd::getpgrp().as_raw();
    if pgid <= 1 || pgid == own {
        tracing::error!(
            pgid,
            "refusing to signal a process group that is not an attempt's"
        );
        return Err(Errno::EINVAL);
    }
    killpg(Pid::from_raw(pgid), sig)
}

fn signal_group(pgid: i32, sig: Signal) {
    match checked_killpg(pgid, sig) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => tracing::warn!(pgid, error = %e, "cannot signal process group"),
    }
}

/// Kills a recorded process group if it is still the one we started. Returns whether a signal
/// was sent.
fn kill_orphan(rec: &RunRecord) -> bool {
    if let (Some(then), Some(now)) = (&rec.boot_id, boot_id())
        && *then != now
    {
        // Rebooted since: the group died with the old kernel.
        return false;
    }
    if let (Some(then), Some(now)) = (rec.start_ticks, start_ticks(rec.pid))
        && then != now
    {
        // The pid now belongs to a later process, so our group had emptied before it could be
        // reused: nothing of ours is left under that id.
        return false;
    }
    // Either our leader still runs, or it is gone and any group members left are its
    // descendants (a group id cannot be taken anew while its pid is unused).
    match checked_killpg(rec.pid, Signal::SIGKILL) {
        Ok(()) => true,
        Err(Errno::ESRCH) => false,
        Err(e) => {
            tracing::warn!(pgid = rec.pid, error = %e, "cannot kill orphaned process group");
            false
        }
    }
}

fn boot_id() -> Option<String> {
    // Constant until the next boot: read once, not per attempt.
    static BOOT_ID: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    BOOT_ID
        .get_or_init(|| {
            std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .clone()
}

/// `/proc/<pid>/stat` field 22 (starttime). The command name (field 2) may hold spaces and
/// parentheses, so fields are counted from the last `)`.
fn start_ticks(pid: i32) -> Option<u64> {
    use std::io::Read;
    // One read into a buffer: the line is under 1 KiB (the command name is at most 16 bytes),
    // and read_to_string's size probe and extra reads were most of this call's cost.
    let mut buf = [0u8; 4096];
    let mut f = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    let n = f.read(&mut buf).ok()?;
    let stat = std::str::from_utf8(&buf[..n]).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Task ids come from the engine (UUIDs), but a file name must never climb out of its
/// directory whatever they hold.
fn safe_file_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Copies a pipe into the log stream, one event per line (a line longer than [`MAX_LINE`] is
/// cut), each timestamped when it arrives. Invalid UTF-8 is replaced, not dropped. Without a
/// stream (it could not be created) the pipe is still drained, so the job never blocks on it.
pub(crate) async fn copy_lines<R: AsyncRead + Unpin>(
    pipe: Option<R>,
    writer: Option<Arc<LogWriter>>,
) {
    let Some(pipe) = pipe else {
        return;
    };
    let mut sink = LineSink { writer, failed: 0 };
    let mut reader = BufReader::new(pipe);
    let mut line: Vec<u8> = Vec::new();
    loop {
        let (used, newline) = {
            let buf = match reader.fill_buf().await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "reading job output failed");
                    break;
                }
            };
            if buf.is_empty() {
                break;
            }
            // `line` is emitted as soon as it reaches MAX_LINE, so there is always room.
            let room = MAX_LINE - line.len();
            let window = &buf[..buf.len().min(room)];
            match window.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    line.extend_from_slice(&window[..i]);
                    (i + 1, true)
                }
                None => {
                    line.extend_from_slice(window);
                    (window.len(), false)
                }
            }
        };
        reader.consume(used);
        if newline || line.len() >= MAX_LINE {
            sink.emit(&mut line, newline);
        }
    }
    if !line.is_empty() {
        sink.emit(&mut line, false);
    }
    if sink.failed > 1
        && let Some(w) = &sink.writer
    {
        tracing::warn!(
            lines = sink.failed,
            stream = w.stream(),
            "log lines not stored"
        );
    }
}

/// Where a pipe's lines go, and how many could not be stored.
struct LineSink {
    writer: Option<Arc<LogWriter>>,
    failed: u64,
}

impl LineSink {
    /// Stores one line; `ended`: it came with a newline, so a CR before it was a CRLF ending.
    fn emit(&mut self, line: &mut Vec<u8>, ended: bool) {
        if ended && line.last() == Some(&b'\r') {
            line.pop();
        }
        if let Some(writer) = &self.writer {
            let text = String::from_utf8_lossy(line);
            if let Err(e) = writer.append(&text) {
                // The first failure says why; the count of the rest comes at the end, rather
                // than a line of our own log per lost line of a full disk.
                if self.failed == 0 {
                    tracing::warn!(error = %e, stream = writer.stream(), "cannot store a log line");
                }
                self.failed += 1;
            }
        }
        line.clear();
    }
}

/// The `setrlimit` resource of an ECS ulimit name (validated at registration).
fn rlimit_resource(name: &str) -> Option<libc::__rlimit_resource_t> {
    Some(match name {
        "core" => libc::RLIMIT_CORE,
        "cpu" => libc::RLIMIT_CPU,
        "data" => libc::RLIMIT_DATA,
        "fsize" => libc::RLIMIT_FSIZE,
        "locks" => libc::RLIMIT_LOCKS,
        "memlock" => libc::RLIMIT_MEMLOCK,
        "msgqueue" => libc::RLIMIT_MSGQUEUE,
        "nice" => libc::RLIMIT_NICE,
        "nofile" => libc::RLIMIT_NOFILE,
        "nproc" => libc::RLIMIT_NPROC,
        "rss" => libc::RLIMIT_RSS,
        "rtprio" => libc::RLIMIT_RTPRIO,
        "rttime" => libc::RLIMIT_RTTIME,
        "sigpending" => libc::RLIMIT_SIGPENDING,
        "stack" => libc::RLIMIT_STACK,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exec_shim_is_installed_once_and_replaced_when_changed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = install_exec_shim(dir.path()).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), EXEC_SHIM);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o755
        );
        // A damaged or older shim is replaced; no temporary file is left behind.
        std::fs::write(&path, b"#!/bin/sh\nexit 0\n").unwrap();
        assert_eq!(install_exec_shim(dir.path()).unwrap(), path);
        assert_eq!(std::fs::read(&path).unwrap(), EXEC_SHIM);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("flotilla-exec-as")]);
    }

    #[test]
    fn the_exec_shim_sets_limits_and_execs_or_says_why_not() {
        let dir = tempfile::tempdir().unwrap();
        let shim = install_exec_shim(dir.path()).unwrap();
        let uid = nix::unistd::geteuid().as_raw().to_string();
        let gid = nix::unistd::getegid().as_raw().to_string();
        let limits = limits_arg(&[("nofile".into(), 100, 200)]);
        let out = std::process::Command::new(&shim)
            .args([&uid, &gid, &limits, "--", "/bin/sh", "sh", "-c"])
            .arg("echo $(ulimit -n) $(ulimit -Hn) $(id -u)")
            .output()
            .unwrap();
        if nix::unistd::geteuid().is_root() {
            assert!(out.status.success(), "{out:?}");
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                format!("100 200 {uid}")
            );
        } else {
            // Only root may drop its supplementary groups; the server uses the shim only then.
            assert_eq!(out.status.code(), Some(126), "{out:?}");
            assert!(String::from_utf8_lossy(&out.stderr).contains("setgroups"));
        }
        let missing = std::process::Command::new(&shim)
            .args([&uid, &gid, "-", "--", "/no/such/program", "x"])
            .output()
            .unwrap();
        assert_eq!(missing.status.code(), Some(127));
        assert!(
            String::from_utf8_lossy(&missing.stderr).contains("/no/such/program"),
            "{missing:?}"
        );
        let bad = std::process::Command::new(&shim)
            .args(["x", &gid, "-", "--", "/bin/true", "true"])
            .output()
            .unwrap();
        assert_eq!(bad.status.code(), Some(126));
        assert!(String::from_utf8_lossy(&bad.stderr).contains("bad uid or gid"));
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        use std::process::ExitStatus;
        assert_eq!(exit_code_of(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code_of(ExitStatus::from_raw(15)), 143);
        assert_eq!(exit_code_of(ExitStatus::from_raw(9)), 137);
    }

    #[test]
    fn own_start_ticks_are_readable() {
        let me = std::process::id() as i32;
        assert!(start_ticks(me).is_some());
        assert_eq!(start_ticks(me), start_ticks(me));
        assert!(boot_id().is_some());
    }

    #[test]
    fn file_names_stay_in_their_directory() {
        assert_eq!(safe_file_name("../../x"), "______x");
        assert_eq!(safe_file_name("a1-b_2"), "a1-b_2");
    }
}
