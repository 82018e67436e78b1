//! The process runtime's exec shim, a program of its own: `build.rs` compiles this file with
//! rustc alone (std, no crates) and the server embeds the result (`process::EXEC_SHIM`). It is
//! not a module of the library.
//!
//! A server running as root starts a job as another user through it: the server spawns it with
//! `posix_spawn` (std's fast path, which switching users in the child would turn into a fork of
//! the whole server), and it sets the job's ulimits, drops to the job's user and executes the
//! job in its place. It is a few hundred KB so that this extra exec costs next to nothing; the
//! server's own 80 MB binary in its place made every job start pay for that binary's dynamic
//! relocations (docs/performance.md, "Cold release build").
//!
//! Usage: `flotilla-exec-as UID GID LIMITS -- PATH ARGV0 [ARGS...]`, where LIMITS is `-` or
//! `resource=soft:hard,...` with the resource as the platform's `RLIMIT_*` number (the server
//! resolves the names) and -1 for unlimited. PATH is already resolved; the environment, working
//! directory, process group and standard streams are the job's, set by the server.
//! Exit status when the job cannot start: 127 if PATH does not exist, else 126, as a shell's.

use std::ffi::{OsString, c_int, c_ulong};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

#[repr(C)]
struct Rlimit {
    cur: c_ulong,
    max: c_ulong,
}

// The C library std already links; declared here because this program uses no crates.
unsafe extern "C" {
    fn setrlimit(resource: c_int, rlim: *const Rlimit) -> c_int;
    fn setgroups(size: usize, list: *const u32) -> c_int;
    fn setgid(gid: u32) -> c_int;
    fn setuid(uid: u32) -> c_int;
}

fn fail(code: u8, msg: &str) -> ExitCode {
    eprintln!("flotilla: cannot start the job: {msg}");
    ExitCode::from(code)
}

fn check(rc: c_int, what: &str) -> Result<(), String> {
    if rc == 0 {
        Ok(())
    } else {
        Err(format!("{what}: {}", std::io::Error::last_os_error()))
    }
}

/// One `resource=soft:hard` item.
fn limit(item: &str) -> Option<(c_int, Rlimit)> {
    let (resource, v) = item.split_once('=')?;
    let (soft, hard) = v.split_once(':')?;
    Some((
        resource.parse().ok()?,
        Rlimit {
            // -1 is RLIM_INFINITY (all ones), as the server's own cast would make it.
            cur: soft.parse::<i64>().ok()? as c_ulong,
            max: hard.parse::<i64>().ok()? as c_ulong,
        },
    ))
}

fn switch(uid: &OsString, gid: &OsString, limits: &OsString) -> Result<(), String> {
    let (Some(uid), Some(gid)) = (
        uid.to_str().and_then(|u| u.parse::<u32>().ok()),
        gid.to_str().and_then(|g| g.parse::<u32>().ok()),
    ) else {
        return Err("bad uid or gid".into());
    };
    let limits = limits.to_string_lossy();
    for item in limits.split(',').filter(|l| *l != "-" && !l.is_empty()) {
        let Some((resource, value)) = limit(item) else {
            return Err(format!("bad ulimit {item}"));
        };
        // SAFETY: plain system calls on values that live across them.
        check(unsafe { setrlimit(resource, &value) }, &format!("ulimit {item}"))?;
    }
    // The supplementary groups first, while still root; then the group, then the user.
    check(unsafe { setgroups(0, std::ptr::null()) }, "setgroups")?;
    check(unsafe { setgid(gid) }, &format!("setgid {gid}"))?;
    check(unsafe { setuid(uid) }, &format!("setuid {uid}"))
}

fn main() -> ExitCode {
    const USAGE: &str = "usage: UID GID LIMITS -- PATH ARGV0 [ARGS...]";
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let [uid, gid, limits, sep, path, argv0, rest @ ..] = args.as_slice() else {
        return fail(126, USAGE);
    };
    if sep != "--" {
        return fail(126, USAGE);
    }
    if let Err(msg) = switch(uid, gid, limits) {
        return fail(126, &msg);
    }
    // std's exec also puts SIGPIPE back to its default, which std's runtime set to ignored in
    // this process; a job must not inherit that.
    let e = Command::new(path).arg0(argv0).args(rest).exec();
    let code = if e.kind() == std::io::ErrorKind::NotFound { 127 } else { 126 };
    fail(code, &format!("{}: {e}", path.to_string_lossy()))
}
