//! Arguments of `flotilla server`.
//!
//! A placeholder owned by the server module: it lives in its own file so that it can move to
//! `server/` unchanged. The client's global options are deliberately not visible here (see
//! [`super::GlobalOverrides`]), so the server may use any flag names, `--region` included.

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: SocketAddr,

    /// Directory for the SQLite database and job data.
    #[arg(long, default_value = ".flotilla", value_name = "DIR")]
    pub data_dir: PathBuf,

    /// PostgreSQL or SQLite URL; defaults to SQLite under --data-dir.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,

    /// Region the server claims in ARNs and accepts in signatures.
    #[arg(long, default_value = "us-east-1")]
    pub region: String,

    /// Account ID used in ARNs.
    #[arg(long, default_value = "000000000000", value_name = "ID")]
    pub account_id: String,

    /// Do not create the default compute environment, queue and job definition at start.
    #[arg(long)]
    pub no_defaults: bool,
}
