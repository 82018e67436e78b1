//! The server under test: a child process of the bench, so that its memory and CPU can be read
//! from `/proc/<pid>` apart from the load generator's.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The key pair the bench gives its servers: every request is SigV4-signed with it, as a
/// deployment with credentials would be.
pub const ACCESS_KEY: &str = "AKIDFLOTILLABENCH";
pub const SECRET_KEY: &str = "flotilla-bench-secret";

/// Server environment variables that would point the server somewhere else than the fresh data
/// directory (a user's own `FLOTILLA_DATABASE_URL`, say).
const SCRUBBED_ENV: &[&str] = &[
    "FLOTILLA_LISTEN",
    "FLOTILLA_DATA_DIR",
    "FLOTILLA_DATABASE_URL",
    "FLOTILLA_REGION",
    "FLOTILLA_ACCOUNT_ID",
    "FLOTILLA_ACCESS_KEY_ID",
    "FLOTILLA_SECRET_ACCESS_KEY",
];

pub struct ChildServer {
    child: Child,
    pid: u32,
    pub addr: String,
    pub data_dir: PathBuf,
}

/// A snapshot of `/proc/<pid>`: memory in KiB, CPU in seconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStat {
    pub rss_kib: u64,
    pub hwm_kib: u64,
    pub cpu_s: f64,
}

impl ChildServer {
    /// Starts `flotilla server` on a free loopback port over `data_dir` and waits for its
    /// "listening" line. `extra` are further `server` options.
    pub async fn start(data_dir: &Path, extra: &[&str]) -> anyhow::Result<ChildServer> {
        let exe = std::env::current_exe().context("locating the flotilla binary")?;
        let mut cmd = Command::new(exe);
        cmd.arg("server")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra);
        for var in SCRUBBED_ENV {
            cmd.env_remove(var);
        }
        // Per-job `info` lines would be part of what is measured and flood the terminal; the
        // figures are for the server's work, so it logs warnings only (they still show).
        // FLOTILLA_BENCH_SERVER_LOG overrides it for profiling (e.g. `flotilla::store=debug`).
        let log = std::env::var("FLOTILLA_BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into());
        cmd.env("FLOTILLA_ACCESS_KEY_ID", ACCESS_KEY)
            .env("FLOTILLA_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("RUST_LOG", log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd.spawn().context("starting flotilla server")?;
        let pid = child.id().ok_or_else(|| anyhow!("server exited at once"))?;
        let stdout = child.stdout.take().context("server stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = tokio::time::timeout(Duration::from_secs(120), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(url) = line.strip_prefix("flotilla listening on http://") {
                    return Ok(url.trim().to_string());
                }
            }
            bail!("server exited before listening")
        })
        .await
        .context("server did not report its address within 120 s")??;
        // Keep draining stdout so that the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(ChildServer {
            child,
            pid,
            addr,
            data_dir: data_dir.to_path_buf(),
        })
    }

    pub fn stat(&self) -> anyhow::Result<ProcStat> {
        proc_stat(self.pid)
    }

    /// Size of the SQLite database with its write-ahead log and shared-memory index.
    pub fn db_bytes(&self) -> u64 {
        db_bytes(&self.data_dir)
    }

    /// SIGTERM, then waits for a clean exit (SIGKILL after 60 s).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        signal(self.pid, libc::SIGTERM);
        match tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                if !status.success() {
                    bail!("server exited with {status}");
                }
                Ok(())
            }
            Err(_) => {
                self.child.kill().await?;
                bail!("server did not stop within 60 s of SIGTERM")
            }
        }
    }

    /// SIGKILL: no chance to flush anything, as in a power cut of the process.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child's, which we
    // have not reaped yet, so it cannot have been reused.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

pub fn db_bytes(dir: &Path) -> u64 {
    ["flotilla.db", "flotilla.db-wal", "flotilla.db-shm"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

/// Clock ticks per second for `/proc/<pid>/stat` CPU times.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Memory (VmRSS, VmHWM) and CPU (user + system) of a process; `0` is this process.
pub fn proc_stat(pid: u32) -> anyhow::Result<ProcStat> {
    let dir = if pid == 0 {
        "/proc/self".to_string()
    } else {
        format!("/proc/{pid}")
    };
    let status = std::fs::read_to_string(format!("{dir}/status"))
        .with_context(|| format!("reading {dir}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("{dir}/stat"))?;
    // The command name may contain spaces; the fields after it are fixed.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); `rest` starts at field 3.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| f.get(*i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    Ok(ProcStat {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
        cpu_s: ticks as f64 / ticks_per_second(),
    })
}
