//! `flotilla admin`: commands that work on a server's data directory rather than its API.

use super::BackupArgs;
use crate::store::backup;

pub async fn backup(args: &BackupArgs) -> anyhow::Result<()> {
    // The same default as `flotilla server`: the SQLite file in the data directory.
    let url = match &args.database_url {
        Some(u) => u.clone(),
        None => format!("sqlite://{}", args.data_dir.join("flotilla.db").display()),
    };
    let summary = backup::backup(&url, &args.dest).await?;
    println!(
        "backed up {} jobs and {} resources to {} ({} bytes)",
        summary.jobs,
        summary.resources,
        summary.path.display(),
        summary.bytes
    );
    Ok(())
}
