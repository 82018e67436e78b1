//! `flotilla bench`: starts servers on fresh data directories, drives them over the signed AWS
//! Batch API, and prints one table of figures (or JSON). Nothing here is a pass/fail timing test:
//! each scenario reports what it measured, next to the target and what bounds it.
//!
//! - [`server`]: the server under test, a child process (its RSS and CPU are read from `/proc`).
//! - [`client`]: the load generator's signed HTTP/1.1 client.
//! - [`scenarios`]: submit, array, schedule, e2e, footprint, provision.
//! - [`launch`]: SubmitJob to EC2 launch through the AWS driver, against an AWS emulator.
//! - `scenarios::aws_scale`: 100,000 jobs through the AWS driver and the emulator.
//! - [`report`]: figures, the table and the JSON.
//! - [`plot`]: the completed-jobs-per-second chart (SVG) of the e2e run.

mod client;
mod launch;
mod plot;
mod report;
mod scenarios;
mod server;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde_json::json;

pub use report::{Figure, Met, Report};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// N individual SubmitJob calls from concurrent clients.
    Submit,
    /// One array job: SubmitJob latency and time until every child is RUNNABLE.
    Array,
    /// One scheduler planning pass over N RUNNABLE jobs.
    Schedule,
    /// N `/bin/true` jobs through the LOCAL process runtime, against the machine's own spawn rate.
    E2e,
    /// Server RSS and database size with N jobs queued and with many jobs kept.
    Footprint,
    /// A provisioner plan over the built-in instance catalog: plan time and cost against a bound.
    Provision,
    /// SubmitJob to EC2 instance launched through the AWS driver (needs --aws-endpoint-url: an
    /// AWS emulator). Not in the default set.
    Launch,
    /// N short jobs through the AWS driver on a fleet of hundreds of instances (needs
    /// --aws-endpoint-url: Flotilla's AWS emulator). Not in the default set.
    AwsScale,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Submit => "submit",
            Scenario::Array => "array",
            Scenario::Schedule => "schedule",
            Scenario::E2e => "e2e",
            Scenario::Footprint => "footprint",
            Scenario::Provision => "provision",
            Scenario::Launch => "launch",
            Scenario::AwsScale => "aws-scale",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClientKind {
    /// A lean HTTP/1.1 client signing with Flotilla's own SigV4 code (one connection per client).
    Raw,
    /// The official AWS SDK for Rust (`aws-sdk-batch`), one client shared by all tasks.
    Sdk,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchOutput {
    Table,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Jobs for the submit, schedule and e2e scenarios, and jobs queued for footprint.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub jobs: u64,

    /// Children of the array job.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(2..=10_000))]
    pub array_size: u64,

    /// Concurrent clients of the submit scenario (and of the footprint scenario's queueing).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub clients: u64,

    /// Finished jobs kept in the store for the footprint scenario's second half.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub kept: u64,

    /// Which scenarios to run, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "submit,array,schedule,e2e,footprint,provision"
    )]
    pub scenarios: Vec<Scenario>,

    /// Load generator client for the submit scenario.
    #[arg(long, value_enum, default_value_t = ClientKind::Raw)]
    pub client: ClientKind,

    /// `table` for people, `json` for scripts (progress goes to stderr either way).
    #[arg(long, value_enum, default_value_t = BenchOutput::Table)]
    pub output: BenchOutput,

    /// Draw completed jobs per second over the e2e run into this SVG file (named `.svg`).
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,

    /// The AWS emulator the launch scenario runs against (`localstack/run-emulator.sh` prints
    /// it); AWS credentials come from the environment as usual.
    #[arg(long, value_name = "URL")]
    pub aws_endpoint_url: Option<String>,

    /// The AMI the launch scenario's server puts in its launch templates (moto's ECS-optimized
    /// image by default).
    #[arg(long, default_value = "ami-05fb4f257abd42992")]
    pub aws_ami: String,

    /// aws-scale: seconds each job's task runs (the emulator stops it then, exit code 0).
    #[arg(long, default_value_t = 30.0, value_parser = parse_seconds)]
    pub aws_task_seconds: f64,

    /// aws-scale: seconds from an instance running to its ECS agent registering.
    #[arg(long, default_value_t = 30.0, value_parser = parse_seconds)]
    pub aws_boot_seconds: f64,

    /// aws-scale: the environment's maxvCpus (c5.large instances of 2 vCPUs, 1-vCPU jobs).
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(2..=100_000))]
    pub aws_max_vcpus: u64,

    /// aws-scale: `OPERATION=RATE[:BURST]` passed to the server's --aws-rate-limit (an account
    /// with raised quotas); AWS's default quotas otherwise.
    #[arg(long, value_name = "OP=RATE[:BURST]")]
    pub aws_rate_limit: Vec<String>,

    /// Where the servers keep their data (one fresh subdirectory per scenario), kept afterwards.
    /// Default: a fresh temporary directory, removed at the end.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && (0.0..=86_400.0).contains(v))
        .ok_or_else(|| format!("{s:?}: expected seconds between 0 and 86400"))
}

/// CPUs this process may run on.
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Progress for people, on stderr so that `--output json` stays clean.
macro_rules! progress {
    ($($arg:tt)*) => { eprintln!("bench: {}", format!($($arg)*)) };
}
pub(crate) use progress;

/// The bench's working directory: subdirectories per scenario, removed at the end when the
/// bench made it.
pub struct Workdir {
    root: PathBuf,
    owned: bool,
}

impl Workdir {
    fn new(requested: Option<&PathBuf>) -> anyhow::Result<Workdir> {
        match requested {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                Ok(Workdir {
                    root: dir.clone(),
                    owned: false,
                })
            }
            None => {
                let root = std::env::temp_dir()
                    .join(format!("flotilla-bench-{}", uuid::Uuid::new_v4().simple()));
                std::fs::create_dir_all(&root)
                    .with_context(|| format!("creating {}", root.display()))?;
                Ok(Workdir { root, owned: true })
            }
        }
    }

    /// A new, empty directory for one server.
    pub fn fresh(&self, name: &str) -> anyhow::Result<PathBuf> {
        let dir = self.root.join(name);
        if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
            bail!(
                "{} is not empty: every server of the bench starts on a fresh data directory",
                dir.display()
            );
        }
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Frees the disk space of one server's directory as soon as its scenario is done.
    pub fn discard(&self, dir: &std::path::Path) {
        if self.owned {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if self.owned {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    // Before minutes of benchmark, not after.
    if let Some(path) = &args.plot {
        plot::check_path(path)?;
    }
    let work = Workdir::new(args.data_dir.as_ref())?;
    progress!(
        "data under {}{}",
        work.root.display(),
        if work.owned {
            " (removed at the end)"
        } else {
            ""
        }
    );
    let mut figures = Vec::new();
    let mut outcomes = Vec::new();
    let mut scenarios = args.scenarios.clone();
    scenarios.dedup();
    let mut e2e_trace = None;
    for scenario in scenarios {
        let started = Instant::now();
        progress!("{} …", scenario.name());
        let result = match scenario {
            Scenario::Submit => scenarios::submit(&args, &work).await,
            Scenario::Array => scenarios::array(&args, &work).await,
            Scenario::Schedule => scenarios::schedule(&args).await,
            Scenario::E2e => scenarios::e2e(&args, &work).await.map(|(f, trace)| {
                e2e_trace = Some(trace);
                f
            }),
            Scenario::Footprint => scenarios::footprint(&args, &work).await,
            Scenario::Provision => Ok(scenarios::provision(args.jobs as usize)),
            Scenario::Launch => launch::launch(&args, &work).await,
            Scenario::AwsScale => scenarios::aws_scale(&args, &work).await,
        };
        let seconds = started.elapsed().as_secs_f64();
        match result {
            Ok(f) => {
                outcomes.push(report::ScenarioOutcome {
                    name: scenario.name(),
                    status: "ok",
                    error: None,
                    seconds,
                });
                figures.extend(f);
            }
            Err(e) => {
                progress!("{} failed: {e:#}", scenario.name());
                outcomes.push(report::ScenarioOutcome {
                    name: scenario.name(),
                    status: "failed",
                    error: Some(format!("{e:#}")),
                    seconds,
                });
            }
        }
        progress!("{} done in {seconds:.1} s", scenario.name());
    }

    if let Some(path) = &args.plot {
        match &e2e_trace {
            Some(t) => {
                plot::draw(path, &t.samples, Some(t.baseline))?;
                progress!("plot written to {}", path.display());
            }
            None => progress!("no plot: the e2e scenario did not run"),
        }
    }

    let report = Report {
        flotilla_version: env!("CARGO_PKG_VERSION"),
        machine: report::Machine::probe(),
        config: json!({
            "jobs": args.jobs,
            "array_size": args.array_size,
            "clients": args.clients,
            "kept": args.kept,
            "client": format!("{:?}", args.client).to_lowercase(),
            "database": "sqlite (embedded, synchronous=FULL)",
        }),
        scenarios: outcomes,
        figures,
    };
    match args.output {
        BenchOutput::Table => print!("{}", report.table()),
        BenchOutput::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    let failed: Vec<&str> = report
        .scenarios
        .iter()
        .filter(|s| s.status == "failed")
        .map(|s| s.name)
        .collect();
    if !failed.is_empty() {
        bail!("scenarios failed: {}", failed.join(", "));
    }
    Ok(())
}
