//! Compute drivers: where attempts of jobs actually run. Everything that does I/O to run a job
//! lives below this module.
//!
//! - [`local`]: the LOCAL compute environment (Docker containers or host processes).
//! - [`aws`]: MANAGED (EC2 / SPOT) and UNMANAGED environments: EC2 fleets, ECS tasks.
//!
//! [`Router`] puts both behind the one [`Runtime`] the engine talks to.
//!
//! The drivers reach the layers above only through what this module owns: [`ports`] (traits
//! `server.rs` hands them an implementation of) and [`fleet`] (the mailbox between the engine and
//! the AWS driver).

pub mod aws;
pub mod fleet;
pub mod local;
pub mod ports;
mod router;

pub use router::Router;

/// Where an attempt runs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Target {
    /// The server's own host (LOCAL environments).
    #[default]
    Local,
    /// An ECS task on one container instance of the environment's cluster.
    Ecs {
        env: String,
        cluster: String,
        container_instance_arn: String,
    },
}

/// Everything a runtime needs to start one attempt of one job.
#[derive(Debug, Clone)]
pub struct AttemptSpec {
    pub job_id: String,
    /// 1-based, as `AWS_BATCH_JOB_ATTEMPT`.
    pub attempt: u32,
    /// Unique per attempt; the runtime's handle (container name suffix, log stream suffix).
    pub task_id: String,
    pub image: Option<String>,
    pub command: Vec<String>,
    /// Complete environment: the definition's, the overrides and the `AWS_BATCH_*` variables.
    pub env: Vec<(String, String)>,
    pub milli_vcpus: u64,
    pub memory_mib: u64,
    pub log_group: String,
    pub log_stream: String,
    /// Revision ARN of the job definition (ECS task definitions are derived from it).
    pub job_definition: String,
    pub target: Target,
    /// The job's container as merged from its definition and overrides: the settings beyond
    /// image, command, environment and size (volumes, Linux parameters, user, …) each runtime
    /// applies or refuses from here (`crate::model::container::ContainerSettings::of`).
    pub container: std::sync::Arc<crate::model::ContainerProperties>,
    /// Tags the attempt's task carries (ECS `StartTask` `tags`): the definition's and the job's
    /// when the job propagates tags, else none.
    pub tags: crate::model::Tags,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeEvent {
    Started {
        job_id: String,
        attempt: u32,
        task_id: String,
    },
    /// The attempt is over. `exit_code` is `None` when it never ran or was lost.
    Exited {
        job_id: String,
        attempt: u32,
        exit_code: Option<i32>,
        /// The container-level reason (`attempts[].container.reason`), e.g. why it could not start.
        reason: Option<String>,
    },
    /// The attempt never started and nothing of it runs (no room on the chosen instance after
    /// all, or the launch was lost in a restart): the job goes back to RUNNABLE without spending
    /// an attempt.
    NotStarted {
        job_id: String,
        attempt: u32,
        reason: String,
    },
    /// The attempt's host was reclaimed by EC2 Spot. The engine retries it without spending the
    /// user's attempts (up to a limit, then away from Spot).
    Interrupted {
        job_id: String,
        attempt: u32,
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGTERM: ask politely.
    Term,
    /// SIGKILL.
    Kill,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The attempt cannot start as specified (image missing, bad command); retrying the same
    /// spec fails again.
    #[error("{0}")]
    Rejected(String),
    /// The runtime is unreachable or overloaded; a retry may succeed.
    #[error("runtime unavailable: {0}")]
    Unavailable(String),
}

/// One attempt the engine believes is STARTING or RUNNING, handed to [`Runtime::recover`] after a
/// restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedAttempt {
    pub job_id: String,
    pub attempt: u32,
    pub task_id: String,
    pub target: Target,
}

/// A place that runs attempts. Implementations report progress as [`RuntimeEvent`]s on the
/// channel they were built with; every started attempt ends with exactly one `Exited`.
#[async_trait::async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// `"docker"` or `"process"`, for logs and `statusReason`s.
    fn name(&self) -> &'static str;
    /// Launches an attempt and returns once it is underway (not when it ends).
    async fn start(&self, spec: AttemptSpec) -> Result<(), RuntimeError>;
    /// Signals a running attempt. Unknown or finished attempts are not an error.
    async fn stop(
        &self,
        job_id: &str,
        attempt: u32,
        signal: StopSignal,
    ) -> Result<(), RuntimeError>;
    /// After a server restart: adopts each expected attempt that is still running (its events
    /// follow as usual), reports `Exited` with its real exit code for one that finished while the
    /// server was down, and `Exited { exit_code: None, reason: Some(..host failure..) }` for one
    /// that vanished.
    async fn recover(&self, expected: Vec<ExpectedAttempt>) -> Result<(), RuntimeError>;
    /// The engine has stored how `attempt` of `job_id` ended (after an `Exited`, stale or not):
    /// what the runtime kept to report that end again after a crash can go.
    fn end_stored(&self, _job_id: &str, _attempt: u32) {}
}
