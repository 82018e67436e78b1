use std::process::ExitCode;

use clap::Parser;
use flotilla::cli::{self, Cli};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // The process runtime's exec shim: first, before anything else runs in this process.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().take(2).collect();
    if argv
        .get(1)
        .is_some_and(|a| a == flotilla::compute::local::process::EXEC_AS)
    {
        let rest: Vec<std::ffi::OsString> = std::env::args_os().skip(2).collect();
        return flotilla::compute::local::process::exec_as(&rest);
    }
    let args = Cli::parse();
    if let cli::Command::Server(_) = &args.command {
        // While this is the only thread: the environment is not safe to change later.
        flotilla::server::take_env_credentials();
    }

    // The AWS crates log credential loading at `info`, which would print on every client command,
    // and credential failures at `warn`, which the command then reports once more as its error.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,aws_config=error,aws_smithy_runtime=warn"));
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
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(cli::exit_code(&err))
        }
    }
}
