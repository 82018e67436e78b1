//! The engine's settings and tunables.

use crate::compute::fleet::FleetView;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Between SIGTERM and SIGKILL when a job is terminated or times out (AWS: 30 s).
    pub kill_grace: Duration,
    /// Memory a LOCAL compute environment offers.
    pub host_memory_mib: u64,
    /// The AWS driver's fleets, when the server runs one: MANAGED EC2/SPOT and UNMANAGED
    /// environments schedule onto their registered container instances.
    pub fleet: Option<Arc<FleetView>>,
    /// Spot interruptions of one job retried without spending its attempts; past this, the job
    /// skips SPOT environments.
    pub spot_max_interruptions: u32,
    /// The server's region: `AWS_REGION`/`AWS_DEFAULT_REGION` in every job, as on AWS.
    pub region: String,
    /// Append every job-state change to the store's event log (`--job-events`).
    pub job_events: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            kill_grace: Duration::from_secs(30),
            host_memory_mib: host_memory_mib(),
            fleet: None,
            spot_max_interruptions: 3,
            region: "us-east-1".into(),
            job_events: true,
        }
    }
}

/// MemTotal from /proc/meminfo; 4 GiB where it cannot be read.
pub fn host_memory_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb / 1024)
        .unwrap_or(4096)
}

/// Most inputs applied in one round before writing, so one round's transaction stays bounded.
pub(super) const MAX_ROUND_INPUTS: usize = 20_000;
/// A round runs at least this often, for timers (timeouts, SIGKILL after the grace period).
pub(super) const TICK: Duration = Duration::from_secs(1);
/// Time-based rules (jobStateTimeLimitActions, fair-share decay, reasons) need a pass now and
/// then even when nothing happens.
pub(super) const PERIODIC_PASS_MS: i64 = 10_000;
/// A pass that cannot place anything (no usable environment has a free vCPU) only refreshes the
/// waiting jobs' reasons and the demand the AWS driver provisions for; it is put off for up to
/// this long, so that a stream of submissions into a full or DISABLED environment does not pay
/// for one pass each. Short enough that new demand reaches a CreateFleet well within a second.
pub(super) const IDLE_PASS_INTERVAL_MS: i64 = 100;
/// Waiting jobs' reasons are recomputed at most this often. A reason is a formatted text per
/// waiting head job (100 per queue), and passes run once per freed slot: at 2,000 jobs/s they
/// cost more than the placements.
pub(super) const REASONS_EVERY_MS: i64 = 500;
/// The engine's own transitions wait up to this long to be written together. A short job's
/// STARTING, RUNNING and SUCCEEDED then cost one row write instead of three, and a dozen jobs
/// share a commit. Anything a caller waits for (a command's answer, an ECS launch) is written at
/// once.
pub(super) const WRITE_COALESCE: Duration = Duration::from_millis(10);
/// The longest wait between retries of a failed write. Short enough that jobs move within
/// seconds of space returning on a full disk; long enough that a failing disk is not hammered.
pub(super) const WRITE_RETRY_MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How many waiting jobs of each (queue, share) one pass considers. A pass over every RUNNABLE
/// job cost O(RUNNABLE log RUNNABLE) for each freed slot (4 ms at 100,000 jobs, paid per
/// dispatch); over a window it costs O(window) however long the queue. The price: a job deeper
/// than this in its share is not backfilled past the ones ahead of it until they move.
pub(super) const PASS_WINDOW: usize = 2_000;
/// The window of a pass between two reason passes (every `REASONS_EVERY_MS`), plus four jobs
/// per free vCPU: such a pass runs once per freed slot and can place only what is free, so
/// looking 2,000 jobs deep each time cost more than everything else the engine does per job.
/// A job deeper than this behind a head that does not fit is backfilled by the next full pass.
pub(super) const QUICK_WINDOW: usize = 64;
