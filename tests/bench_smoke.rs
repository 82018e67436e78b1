//! `flotilla bench` at a small size, so that the benchmark cannot rot. No timing is asserted:
//! only that every scenario ran and reported numbers.

mod common;

use std::process::Command;

/// Runs `flotilla bench … --output json`, asserts it succeeded, and returns the parsed report
/// with the raw output (for messages).
fn run_bench(cmd: &mut Command) -> (serde_json::Value, String) {
    let out = cmd
        .args(["--output", "json"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run flotilla bench");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "flotilla bench failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let report = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("bench output is not JSON ({e}):\n{stdout}"));
    (report, stdout)
}

#[test]
fn bench_runs_every_scenario_at_a_small_size() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plot = dir.path().join("e2e.svg");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flotilla"));
    cmd.args([
        "bench",
        "--jobs",
        "2000",
        "--array-size",
        "2000",
        "--kept",
        "20000",
        "--clients",
        "16",
        "--data-dir",
    ])
    .arg(dir.path().join("data"))
    .arg("--plot")
    .arg(&plot);
    let (report, stdout) = run_bench(&mut cmd);

    let scenarios = report["scenarios"].as_array().expect("scenarios");
    let figures = report["figures"].as_array().expect("figures");
    for name in [
        "submit",
        "array",
        "schedule",
        "e2e",
        "footprint",
        "provision",
    ] {
        let s = scenarios
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("scenario {name} missing from {stdout}"));
        let mine: Vec<&serde_json::Value> =
            figures.iter().filter(|f| f["scenario"] == name).collect();
        assert!(!mine.is_empty(), "scenario {name} has no figures");
        assert_eq!(s["status"], "ok", "{s}");
        for f in &mine {
            let v = f["value"]
                .as_f64()
                .unwrap_or_else(|| panic!("{name}: figure without a number: {f}"));
            assert!(v.is_finite() && v >= 0.0, "{name}: {f}");
            assert!(
                ["yes", "no", "n.a."].contains(&f["met"].as_str().unwrap_or("")),
                "{f}"
            );
        }
    }
    // Every acknowledged SubmitJob was in the store after SIGKILL.
    let durable = figures
        .iter()
        .find(|f| {
            f["scenario"] == "submit"
                && f["metric"]
                    .as_str()
                    .is_some_and(|m| m.contains("after SIGKILL"))
        })
        .expect("durability figure");
    assert_eq!(durable["value"].as_f64(), Some(2000.0), "{durable}");

    let svg = std::fs::read_to_string(&plot).expect("plot written");
    assert!(svg.starts_with("<svg"), "not an SVG");
    assert!(
        svg.contains("jobs completed per second (2000 jobs)"),
        "the chart's caption is missing"
    );
}

/// `flotilla bench <args>` against a fresh emulator, with its report and raw output.
fn run_bench_on_emulator(args: &[&str]) -> (serde_json::Value, String) {
    let emu = common::emulator::Emulator::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flotilla"));
    cmd.arg("bench")
        .args(args)
        .arg("--aws-endpoint-url")
        .arg(&emu.endpoint)
        .arg("--data-dir")
        .arg(dir.path());
    common::emulator::with_test_credentials(&mut cmd);
    run_bench(&mut cmd)
}

#[test]
fn bench_launch_scenario_runs_against_the_emulator() {
    let (report, stdout) = run_bench_on_emulator(&["--scenarios", "launch"]);
    let figures: Vec<&serde_json::Value> = report["figures"]
        .as_array()
        .expect("figures")
        .iter()
        .filter(|f| f["scenario"] == "launch")
        .collect();
    assert_eq!(figures.len(), 2, "{stdout}");
    for f in figures {
        let v = f["value"].as_f64().expect("a number");
        assert!(v.is_finite() && v > 0.0, "{f}");
    }
}

/// aws-scale at a small size: every job SUCCEEDED through the AWS driver (the scenario fails
/// otherwise), at least one StartTask per job, and nothing left running at the end.
#[test]
fn bench_aws_scale_scenario_runs_small_against_the_emulator() {
    let (report, stdout) = run_bench_on_emulator(&[
        "--scenarios",
        "aws-scale",
        "--jobs",
        "300",
        "--clients",
        "8",
        "--aws-task-seconds",
        "1",
        "--aws-boot-seconds",
        "1",
        "--aws-max-vcpus",
        "20",
    ]);
    let figure = |prefix: &str| -> f64 {
        report["figures"]
            .as_array()
            .expect("figures")
            .iter()
            .find(|f| {
                f["scenario"] == "aws-scale"
                    && f["metric"].as_str().is_some_and(|m| m.starts_with(prefix))
            })
            .and_then(|f| f["value"].as_f64())
            .unwrap_or_else(|| panic!("no aws-scale figure {prefix:?} in {stdout}"))
    };
    assert!(figure("submit to 300 SUCCEEDED") > 0.0, "{stdout}");
    assert!(figure("AWS calls per job") >= 1.0, "{stdout}");
    assert!(figure("instances launched") >= 1.0, "{stdout}");
    assert_eq!(figure("instances left running"), 0.0, "{stdout}");
    assert!(figure("fleet cost / lower bound") >= 1.0, "{stdout}");
    assert!(figure("tasks launched per second") > 0.0, "{stdout}");
}
