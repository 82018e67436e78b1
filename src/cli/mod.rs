//! The `flotilla` command line.
//!
//! Arguments parse into a typed [`Cli`]; [`run`] executes it. Every client command goes through
//! `aws_sdk_batch::Client`, so the CLI exercises the same wire protocol as the AWS CLI and SDKs.
//!
//! Global options are accepted both before the subcommand and after it. They are not clap
//! `global` arguments, because those would leak into `flotilla server`, whose own `--region`
//! would then clash; instead each client subcommand flattens [`GlobalOverrides`].

mod admin;
mod client;
mod cost;
mod events;
mod jobs;
mod json;
mod logs;
mod register;
mod resources;
mod signed;
mod table;

use crate::model::JobStatus;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use crate::server::ServerArgs;
pub use client::ServiceError;
pub use jobs::{JobFailed, WaitInterrupted};
pub use table::Table;

use client::Ctx;

pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:8080";

/// Exit status when `submit --wait` saw the job fail (1 is any other error, 2 a usage error).
pub const EXIT_JOB_FAILED: u8 = 3;
/// Exit status when `submit --wait` was interrupted with Ctrl-C (the job keeps running).
pub const EXIT_INTERRUPTED: u8 = 130;

#[derive(Debug, Parser)]
#[command(
    name = "flotilla",
    version,
    about = "Flotilla: a self-hosted AWS Batch",
    long_about = "Flotilla: a self-hosted AWS Batch.\n\nClient commands speak the AWS Batch API \
                  (restJson1, SigV4) to a Flotilla server; `flotilla server` runs one.",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// AWS Batch wire-shaped JSON for scripts.
    Json,
}

/// Client options given before the subcommand.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// URL of the Flotilla server.
    #[arg(
        long,
        env = "FLOTILLA_ENDPOINT_URL",
        default_value = DEFAULT_ENDPOINT,
        value_name = "URL",
        value_parser = parse_endpoint
    )]
    pub endpoint_url: String,

    /// Region to sign requests for; must match the server's.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub region: String,

    /// Named profile from ~/.aws/config and ~/.aws/credentials.
    #[arg(long, env = "AWS_PROFILE")]
    pub profile: Option<String>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Table)]
    pub output: Output,

    /// PEM bundle of the certificate authorities to trust for an https:// endpoint, instead of
    /// the system's (as the AWS CLI's `--ca-bundle`).
    #[arg(long, env = "AWS_CA_BUNDLE", value_name = "PATH")]
    pub ca_bundle: Option<std::path::PathBuf>,
}

/// The same options given after the subcommand; these win over [`GlobalArgs`].
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalOverrides {
    /// URL of the Flotilla server [env: FLOTILLA_ENDPOINT_URL] [default: http://127.0.0.1:8080]
    #[arg(long, value_name = "URL", value_parser = parse_endpoint)]
    pub endpoint_url: Option<String>,

    /// Region to sign requests for [env: AWS_REGION] [default: us-east-1]
    #[arg(long)]
    pub region: Option<String>,

    /// Named profile from ~/.aws/config and ~/.aws/credentials [env: AWS_PROFILE]
    #[arg(long)]
    pub profile: Option<String>,

    /// Output format [default: table]
    #[arg(long, value_enum)]
    pub output: Option<Output>,

    /// PEM bundle of the certificate authorities to trust for https:// [env: AWS_CA_BUNDLE]
    #[arg(long, value_name = "PATH")]
    pub ca_bundle: Option<std::path::PathBuf>,
}

/// Global options after merging [`GlobalArgs`] and [`GlobalOverrides`].
#[derive(Debug, Clone)]
pub struct ResolvedGlobals {
    pub endpoint_url: String,
    pub region: String,
    pub profile: Option<String>,
    pub output: Output,
    pub ca_bundle: Option<std::path::PathBuf>,
}

impl GlobalArgs {
    pub fn resolve(&self, overrides: &GlobalOverrides) -> ResolvedGlobals {
        ResolvedGlobals {
            endpoint_url: overrides
                .endpoint_url
                .clone()
                .unwrap_or_else(|| self.endpoint_url.clone()),
            region: overrides
                .region
                .clone()
                .unwrap_or_else(|| self.region.clone()),
            profile: overrides.profile.clone().or_else(|| self.profile.clone()),
            output: overrides.output.unwrap_or(self.output),
            ca_bundle: overrides
                .ca_bundle
                .clone()
                .or_else(|| self.ca_bundle.clone()),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the Flotilla server.
    Server(Box<ServerArgs>),

    /// Submit a job (SubmitJob).
    Submit(SubmitArgs),

    /// List, describe and watch jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),

    /// Cancel a job that has not started yet (CancelJob).
    Cancel(CancelArgs),

    /// Terminate a job, running or not (TerminateJob).
    Terminate(TerminateArgs),

    /// List job queues (DescribeJobQueues).
    Queues(QueuesArgs),

    /// List compute environments (DescribeComputeEnvironments).
    ComputeEnvs(ComputeEnvsArgs),

    /// Register and list job definitions.
    #[command(subcommand)]
    JobDefinitions(JobDefinitionsCommand),

    /// Print a job's log (CloudWatch Logs GetLogEvents on the server).
    Logs(LogsArgs),

    /// Follow job-state events as they happen (GET /events; see docs/events.md).
    Events(EventsArgs),

    /// What jobs and the fleet cost over a time range (GET /cost; see docs/cost.md).
    Cost(CostArgs),

    /// Operate on a server's data directory (backups).
    #[command(subcommand)]
    Admin(AdminCommand),

    /// Benchmark a fresh local server (submit, array, schedule, e2e, footprint) and print the
    /// figures; see docs/performance.md.
    Bench(crate::bench::BenchArgs),
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Copy the SQLite store to DEST while the server runs: a consistent snapshot, the WAL
    /// included (see docs/operations.md, "Backup and restore"). PostgreSQL: use pg_dump.
    Backup(BackupArgs),
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// File to write; must not exist.
    #[arg(value_name = "DEST")]
    pub dest: PathBuf,

    /// The server's data directory.
    #[arg(long, default_value = ".flotilla", env = "FLOTILLA_DATA_DIR")]
    pub data_dir: PathBuf,

    /// The server's `--database-url`, when it sets one.
    #[arg(long, env = "FLOTILLA_DATABASE_URL")]
    pub database_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Start after this event number (0: every event the server keeps) [default: from now].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(0..))]
    pub after: Option<i64>,

    /// Only the events of jobs in this queue (name or ARN).
    #[arg(long, value_name = "QUEUE")]
    pub queue: Option<String>,

    /// Stop after printing this many events.
    #[arg(long, value_name = "N")]
    pub count: Option<usize>,

    #[command(flatten)]
    pub global: GlobalOverrides,
}

#[derive(Debug, Args)]
pub struct CostArgs {
    /// Start of the range: RFC 3339 (2026-12-01T00:00:00Z) or epoch milliseconds
    /// [default: --since before --to].
    #[arg(long, value_name = "TIME", conflicts_with = "since")]
    pub from: Option<String>,

    /// End of the range: RFC 3339 or epoch milliseconds [default: now].
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,

    /// The range's length when --from is not given: a number with s, m, h or d.
    #[arg(long, value_name = "DURATION", default_value = "24h")]
    pub since: String,

    /// What to sum job costs by.
    #[arg(long, value_enum, default_value = "queue")]
    pub by: CostBy,

    #[command(flatten)]
    pub global: GlobalOverrides,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CostBy {
    Queue,
    Share,
    Definition,
    Environment,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Job ID; for an array job, a child `<id>:<index>`.
    pub id: String,

    /// Which attempt (1 is the first) [default: the latest].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub attempt: Option<u32>,

    /// Keep printing new lines until the job finishes.
    #[arg(long, short = 'f')]
    pub follow: bool,

    #[command(flatten)]
    pub global: GlobalOverrides,
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// Job queue name or ARN.
    #[arg(long, value_name = "QUEUE")]
    pub queue: String,

    /// Job definition: NAME, NAME:REVISION or ARN.
    #[arg(long, value_name = "DEFINITION")]
    pub definition: String,

    /// Job name [default: the job definition's name].
    #[arg(long)]
    pub name: Option<String>,

    /// Submit an array job of N children.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..))]
    pub array_size: Option<i32>,

    /// Job to wait for; `:N_TO_N` or `:SEQUENTIAL` for array dependencies. Repeatable.
    #[arg(long, value_name = "ID[:N_TO_N|:SEQUENTIAL]", value_parser = parse_dependency)]
    pub depends_on: Vec<Dependency>,

    /// Parameter substituted for Ref::KEY in the definition's command. Repeatable.
    #[arg(long = "parameters", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub parameters: Vec<(String, String)>,

    /// Environment variable for the container. Repeatable.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub env: Vec<(String, String)>,

    /// vCPUs for the container (overrides the definition).
    #[arg(long, value_name = "N", value_parser = parse_vcpus)]
    pub vcpus: Option<String>,

    /// Memory for the container in MiB (overrides the definition).
    #[arg(long, value_name = "MiB", value_parser = clap::value_parser!(u32).range(1..))]
    pub memory: Option<u32>,

    /// Attempts, retries included (overrides the definition's retry strategy).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..))]
    pub attempts: Option<i32>,

    /// Time limit of each attempt in seconds.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(i32).range(1..))]
    pub timeout: Option<i32>,

    /// Fair-share identifier, for queues with a scheduling policy.
    #[arg(long, value_name = "S")]
    pub share_identifier: Option<String>,

    /// Wait until the job SUCCEEDED (exit 0) or FAILED (exit 3) while showing progress.
    #[arg(long)]
    pub wait: bool,

    /// Command override, given after `--`: `flotilla submit … -- echo hello`.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,

    #[command(flatten)]
    pub global: GlobalOverrides,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    pub job_id: String,
    pub kind: Option<aws_sdk_batch::types::ArrayJobDependency>,
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List jobs of a queue or children of an array job (ListJobs, all pages).
    List(JobsListArgs),
    /// Show jobs in detail (DescribeJobs).
    Describe(JobsDescribeArgs),
    /// Show job counts per status of a queue, refreshed every 2 s until Ctrl-C.
    Watch(JobsWatchArgs),
}

/// `--status`: one of the model's job statuses, in any case.
fn status_arg() -> impl clap::builder::TypedValueParser<Value = JobStatus> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(JobStatus::ALL.iter().map(|s| s.as_str()))
        .try_map(|s: String| s.to_ascii_uppercase().parse::<JobStatus>())
}

/// The SDK's spelling of a job status.
pub fn sdk_status(s: JobStatus) -> aws_sdk_batch::types::JobStatus {
    aws_sdk_batch::types::JobStatus::from(s.as_str())
}

#[derive(Debug, Args)]
pub struct JobsListArgs {
    /// Job queue name or ARN.
    #[arg(long, value_name = "QUEUE", required_unless_present = "array_job_id")]
    pub queue: Option<String>,

    /// Only jobs in this status [default: RUNNING, as in AWS; with --name: every status].
    #[arg(long, value_name = "S", ignore_case = true, conflicts_with = "all", value_parser = status_arg())]
    pub status: Option<JobStatus>,

    /// List the children of this array job instead of a queue.
    #[arg(long, value_name = "ID", conflicts_with = "queue")]
    pub array_job_id: Option<String>,

    /// Only jobs whose name matches; a trailing `*` matches any suffix.
    #[arg(long, value_name = "PATTERN")]
    pub name: Option<String>,

    /// Jobs in every status.
    #[arg(long)]
    pub all: bool,

    #[command(flatten)]
    pub global: GlobalOverrides,
}

#[derive(Debug, Args)]
pub struct JobsDescribeArgs {
    /// Job IDs.
    #[arg(required = true, value_name = "ID")]
    pub ids: Vec<String>,

    #[command(flatten)]
    pub global: GlobalOverrides,
}

#[derive(Debug, Args)]
pub struct JobsWatchArgs {
    /// Job queue name or ARN.
    #[arg(long, value_name = "QUEUE")]
    pub queue: String,

    /// Print the counts once and exit.
    #[arg(long)]
    pub once: bool,

    #[command(flatten)]
    pub global: GlobalOverrides,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// Job ID.
    #[arg(value_name = "ID")]
    pub id: String,

    /// Reason recorded on the job.
    #[arg(long, default_value = "cancelled by flotilla cli")]
    pub reason: String,

    #[command(flatten)]
    pub global: GlobalOverrides,
}

#[derive(Debug, Args)]
pub struct TerminateArgs {
    /// Job ID.
    #[arg(value_name = "ID")]
    pub id: String,

    /// Reason recorded on the job.
    #[arg(long, default_value = "terminated by flotilla cli")]
    pub reason: String,

    #[command(flatten)]
    pub global: GlobalOverrides,
}

#[derive(Debug, Args)]
pub struct QueuesArgs {
    /// Only these queues (names or ARNs).
    #[arg(value_name = "QUEUE")]
    pub names: Vec<String>,

    #[command(flatten)]
    pub global: GlobalOverrides,
}

#[derive(Debug, Args)]
pub struct ComputeEnvsArgs {
    /// Only these compute environments (names or ARNs).
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,

    #[command(flatten)]
    pub global: GlobalOverrides,
}

#[derive(Debug, Subcommand)]
pub enum JobDefinitionsCommand {
    /// Register a job definition from a RegisterJobDefinition request in JSON, the shape
    /// `aws batch register-job-definition --cli-input-json` takes.
    Register(JdRegisterArgs),
    /// List job definitions (DescribeJobDefinitions, all pages).
    List(JdListArgs),
}

#[derive(Debug, Args)]
pub struct JdRegisterArgs {
    /// JSON file.
    #[arg(value_name = "FILE.json")]
    pub file: PathBuf,

    #[command(flatten)]
    pub global: GlobalOverrides,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DefinitionStatus {
    Active,
    Inactive,
}

#[derive(Debug, Args)]
pub struct JdListArgs {
    /// Only revisions of this job definition.
    #[arg(long)]
    pub name: Option<String>,

    /// Only ACTIVE or INACTIVE revisions [default: both].
    #[arg(long, ignore_case = true)]
    pub status: Option<DefinitionStatus>,

    #[command(flatten)]
    pub global: GlobalOverrides,
}

fn parse_endpoint(s: &str) -> Result<String, String> {
    if s.starts_with("http://") || s.starts_with("https://") {
        Ok(s.trim_end_matches('/').to_string())
    } else {
        Err(format!(
            "expected an http:// or https:// URL, e.g. {DEFAULT_ENDPOINT}"
        ))
    }
}

/// `KEY=VALUE`; the value may itself contain `=` and may be empty.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some(("", _)) => Err("expected KEY=VALUE, the key is empty".into()),
        Some((key, value)) => Ok((key.to_string(), value.to_string())),
        None => Err("expected KEY=VALUE, found no `=`".into()),
    }
}

/// `ID`, `ID:N_TO_N` or `ID:SEQUENTIAL` (job IDs are UUIDs, so they contain no `:`).
pub fn parse_dependency(s: &str) -> Result<Dependency, String> {
    use aws_sdk_batch::types::ArrayJobDependency;
    let (id, kind) = match s.split_once(':') {
        None => (s, None),
        Some((id, kind)) => {
            let kind = match kind.to_ascii_uppercase().as_str() {
                "N_TO_N" => ArrayJobDependency::NToN,
                "SEQUENTIAL" => ArrayJobDependency::Sequential,
                _ => {
                    return Err(format!(
                        "unknown dependency type `{kind}`; expected N_TO_N or SEQUENTIAL"
                    ));
                }
            };
            (id, Some(kind))
        }
    };
    if id.is_empty() {
        return Err("the job ID is empty".into());
    }
    Ok(Dependency {
        job_id: id.to_string(),
        kind,
    })
}

/// vCPUs may be fractional (Fargate takes 0.25); the value is sent as a string.
fn parse_vcpus(s: &str) -> Result<String, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(s.to_string()),
        _ => Err("expected a positive number of vCPUs".into()),
    }
}

/// Runs a parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let Cli { global, command } = cli;
    let connect = |o: &GlobalOverrides| Ctx::connect(global.resolve(o));
    match command {
        Command::Server(a) => Ok(crate::server::run(*a, crate::server::shutdown_signal()).await?),
        Command::Bench(a) => crate::bench::run(a).await,
        Command::Admin(AdminCommand::Backup(a)) => admin::backup(&a).await,
        Command::Submit(a) => jobs::submit(&connect(&a.global).await?, &a).await,
        Command::Logs(a) => logs::print(&connect(&a.global).await?, &a).await,
        Command::Events(a) => events::follow(&connect(&a.global).await?, &a).await,
        Command::Cost(a) => cost::report(&connect(&a.global).await?, &a).await,
        Command::Jobs(JobsCommand::List(a)) => jobs::list(&connect(&a.global).await?, &a).await,
        Command::Jobs(JobsCommand::Describe(a)) => {
            jobs::describe(&connect(&a.global).await?, &a.ids).await
        }
        Command::Jobs(JobsCommand::Watch(a)) => jobs::watch(&connect(&a.global).await?, &a).await,
        Command::Cancel(a) => jobs::cancel(&connect(&a.global).await?, &a.id, &a.reason).await,
        Command::Terminate(a) => {
            jobs::terminate(&connect(&a.global).await?, &a.id, &a.reason).await
        }
        Command::Queues(a) => resources::queues(&connect(&a.global).await?, &a.names).await,
        Command::ComputeEnvs(a) => {
            resources::compute_envs(&connect(&a.global).await?, &a.names).await
        }
        Command::JobDefinitions(JobDefinitionsCommand::Register(a)) => {
            // Read and check the file before connecting: a bad file is the likelier mistake.
            let file = register::load(&a.file)?;
            resources::register_job_definition(&connect(&a.global).await?, file).await
        }
        Command::JobDefinitions(JobDefinitionsCommand::List(a)) => {
            resources::job_definitions(&connect(&a.global).await?, &a).await
        }
    }
}

/// The process exit status for an error returned by [`run`].
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err.is::<JobFailed>() {
        EXIT_JOB_FAILED
    } else if err.is::<WaitInterrupted>() {
        EXIT_INTERRUPTED
    } else {
        1
    }
}

/// The `flotilla` binary: the whole of it (src/main.rs only calls this). Here rather than in
/// the binary's crate so that the generic code it instantiates (the tracing subscriber, the
/// runtime) is compiled once, with the library, not again for the binary in a release build.
pub fn main() -> std::process::ExitCode {
    let args = Cli::parse();
    if let Command::Server(_) = &args.command {
        // While this is the only thread: the environment is not safe to change later.
        crate::server::take_env_credentials();
    }

    // The AWS crates log credential loading at `info`, which would print on every client command,
    // and credential failures at `warn`, which the command then reports once more as its error.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,aws_config=error,aws_smithy_runtime=warn")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::from(exit_code(&err))
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use aws_sdk_batch::types::ArrayJobDependency;
    use clap::CommandFactory;
    use clap::error::ErrorKind;

    /// A client that is never sent anything: tests inspect the requests it would build.
    pub(crate) fn offline_client() -> aws_sdk_batch::Client {
        let config = aws_sdk_batch::Config::builder()
            .behavior_version(aws_sdk_batch::config::BehaviorVersion::latest())
            .region(aws_sdk_batch::config::Region::new("us-east-1"))
            .build();
        aws_sdk_batch::Client::from_conf(config)
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("flotilla").chain(args.iter().copied()))
    }

    fn submit(args: &[&str]) -> SubmitArgs {
        let mut all = vec!["submit", "--queue", "q", "--definition", "d"];
        all.extend_from_slice(args);
        match parse(&all).unwrap().command {
            Command::Submit(a) => a,
            other => panic!("expected submit, got {other:?}"),
        }
    }

    #[test]
    fn command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn depends_on_parses_types() {
        let a = submit(&[
            "--depends-on",
            "abc:N_TO_N",
            "--depends-on",
            "def",
            "--depends-on",
            "ghi:sequential",
        ]);
        assert_eq!(
            a.depends_on,
            [
                Dependency {
                    job_id: "abc".into(),
                    kind: Some(ArrayJobDependency::NToN)
                },
                Dependency {
                    job_id: "def".into(),
                    kind: None
                },
                Dependency {
                    job_id: "ghi".into(),
                    kind: Some(ArrayJobDependency::Sequential)
                },
            ]
        );
    }

    #[test]
    fn bad_dependencies_are_rejected() {
        for bad in ["abc:ALL", ":N_TO_N", "abc:"] {
            let err = parse(&[
                "submit",
                "--queue",
                "q",
                "--definition",
                "d",
                "--depends-on",
                bad,
            ])
            .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::ValueValidation, "{bad}");
        }
    }

    #[test]
    fn parameters_and_env_parse_key_value() {
        let a = submit(&[
            "--parameters",
            "k=v",
            "--parameters",
            "expr=a=b",
            "--parameters",
            "empty=",
            "--env",
            "MODE=fast",
        ]);
        assert_eq!(
            a.parameters,
            [
                ("k".to_string(), "v".to_string()),
                ("expr".to_string(), "a=b".to_string()),
                ("empty".to_string(), String::new()),
            ]
        );
        assert_eq!(a.env, [("MODE".to_string(), "fast".to_string())]);
    }

    #[test]
    fn parameters_without_value_give_a_clear_error() {
        let err = parse(&[
            "submit",
            "--queue",
            "q",
            "--definition",
            "d",
            "--parameters",
            "novalue",
        ])
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ValueValidation);
        let text = err.to_string();
        assert!(text.contains("novalue"), "{text}");
        assert!(text.contains("--parameters"), "{text}");
        assert!(text.contains("expected KEY=VALUE"), "{text}");
        let err =
            parse(&["submit", "--queue", "q", "--definition", "d", "--env", "=x"]).unwrap_err();
        assert!(err.to_string().contains("key is empty"), "{err}");
    }

    #[test]
    fn submit_takes_every_option_and_a_trailing_command() {
        let a = submit(&[
            "--name",
            "n",
            "--array-size",
            "10",
            "--vcpus",
            "0.5",
            "--memory",
            "2048",
            "--attempts",
            "3",
            "--timeout",
            "600",
            "--share-identifier",
            "blue",
            "--wait",
            "--",
            "sh",
            "-c",
            "echo --not-a-flag",
        ]);
        assert_eq!(a.name.as_deref(), Some("n"));
        assert_eq!(a.array_size, Some(10));
        assert_eq!(a.vcpus.as_deref(), Some("0.5"));
        assert_eq!(a.memory, Some(2048));
        assert_eq!(a.attempts, Some(3));
        assert_eq!(a.timeout, Some(600));
        assert_eq!(a.share_identifier.as_deref(), Some("blue"));
        assert!(a.wait);
        assert_eq!(a.command, ["sh", "-c", "echo --not-a-flag"]);
    }

    #[test]
    fn submit_rejects_bad_numbers_and_missing_required() {
        for args in [
            &["--vcpus", "0"][..],
            &["--vcpus", "lots"],
            &["--memory", "0"],
            &["--array-size", "-1"],
        ] {
            let mut all = vec!["submit", "--queue", "q", "--definition", "d"];
            all.extend_from_slice(args);
            assert!(parse(&all).is_err(), "{args:?}");
        }
        let err = parse(&["submit", "--queue", "q"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn global_options_work_before_and_after_the_subcommand() {
        let cli = parse(&[
            "--endpoint-url",
            "http://localhost:9000/",
            "--output",
            "json",
            "queues",
            "--region",
            "eu-west-1",
        ])
        .unwrap();
        let Command::Queues(q) = &cli.command else {
            panic!("expected queues");
        };
        let g = cli.global.resolve(&q.global);
        assert_eq!(g.endpoint_url, "http://localhost:9000");
        assert_eq!(g.region, "eu-west-1");
        assert_eq!(g.output, Output::Json);

        let cli = parse(&["--output", "json", "queues", "--output", "table"]).unwrap();
        let Command::Queues(q) = &cli.command else {
            panic!("expected queues");
        };
        assert_eq!(cli.global.resolve(&q.global).output, Output::Table);

        assert!(parse(&["--endpoint-url", "localhost:8080", "queues"]).is_err());
    }

    #[test]
    fn server_keeps_its_own_region() {
        let cli = parse(&["server", "--region", "eu-west-1", "--no-defaults"]).unwrap();
        let Command::Server(s) = cli.command else {
            panic!("expected server");
        };
        assert_eq!(s.region, "eu-west-1");
        assert!(s.no_defaults);
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.data_dir, PathBuf::from(".flotilla"));
        assert_eq!(s.account_id, "000000000000");
        assert!(parse(&["server", "--output", "json"]).is_err());
    }

    #[test]
    fn jobs_list_options() {
        let cli = parse(&["jobs", "list", "--queue", "q", "--status", "failed"]).unwrap();
        let Command::Jobs(JobsCommand::List(l)) = cli.command else {
            panic!("expected jobs list");
        };
        assert_eq!(l.status, Some(JobStatus::Failed));

        assert!(parse(&["jobs", "list", "--array-job-id", "a"]).is_ok());
        let err = parse(&["jobs", "list"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::MissingRequiredArgument);
        assert!(
            parse(&[
                "jobs", "list", "--queue", "q", "--all", "--status", "RUNNING"
            ])
            .is_err()
        );
        assert!(parse(&["jobs", "list", "--queue", "q", "--array-job-id", "a"]).is_err());
        assert!(parse(&["jobs", "list", "--queue", "q", "--status", "DONE"]).is_err());
    }

    #[test]
    fn stop_commands_have_a_default_reason() {
        let cli = parse(&["cancel", "j1"]).unwrap();
        let Command::Cancel(c) = cli.command else {
            panic!("expected cancel");
        };
        assert_eq!(c.reason, "cancelled by flotilla cli");
        let cli = parse(&["terminate", "j1", "--reason", "stop"]).unwrap();
        let Command::Terminate(t) = cli.command else {
            panic!("expected terminate");
        };
        assert_eq!((t.id.as_str(), t.reason.as_str()), ("j1", "stop"));
    }
}
