//! Compiles the process runtime's exec shim (src/compute/local/exec_as.rs) into a small program
//! of its own, which the library embeds (`compute::local::process::EXEC_SHIM`). It is built by
//! rustc directly because it uses std alone; that keeps it a few hundred KB, which is the point
//! (see the file's header).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    const SOURCE: &str = "src/compute/local/exec_as.rs";
    println!("cargo::rerun-if-changed={SOURCE}");
    println!("cargo::rerun-if-changed=build.rs");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let target = std::env::var("TARGET").expect("cargo sets TARGET");
    let mut cmd = Command::new(&rustc);
    cmd.args([
        "--edition",
        "2024",
        "--crate-type",
        "bin",
        "--crate-name",
        "flotilla_exec_as",
    ])
    .args(["--target", &target])
    // Size over speed: it runs for microseconds, once per job start.
    .args([
        "-C",
        "opt-level=s",
        "-C",
        "panic=abort",
        "-C",
        "debuginfo=0",
    ])
    .args(["-C", "strip=symbols", "--cap-lints", "warn"])
    .arg("-o")
    .arg(out.join("flotilla-exec-as"))
    .arg(SOURCE);
    // The linker cargo resolved for the target (config or environment) links the shim too.
    if let Some(linker) = std::env::var_os("RUSTC_LINKER") {
        let mut arg = std::ffi::OsString::from("linker=");
        arg.push(linker);
        cmd.arg("-C").arg(arg);
    }
    match cmd.status() {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("compiling the exec shim {SOURCE} with {rustc:?} failed: {s}"),
        Err(e) => panic!("cannot run {rustc:?} to compile the exec shim {SOURCE}: {e}"),
    }
}
