//! Flotilla: a self-hosted AWS Batch.
//!
//! The data flow, top to bottom:
//!
//! ```text
//!  AWS CLI / boto3 / SDKs / `flotilla` CLI
//!             │  restJson1 + SigV4 (the AWS Batch API)
//!             ▼
//!  api/ ── parse + validate (model/) ──► batch/ ──► store/ (SQLite | PostgreSQL)
//!                                                    durable before the reply
//!                                   │ wake-up
//!                                   ▼
//!  engine/      one actor owning unfinished jobs: apply → plan → launch ∥ write → answer
//!     │  scheduler/    pure: RUNNABLE jobs × free capacity → placements
//!     │  demand ──►  compute/aws/ control loop ── provisioner/ (pure: demand × fleet → plan)
//!     ▼                    │ CreateFleet / TerminateInstances, clusters, launch templates
//!  compute/ Router ─► local/ (Docker | processes)   aws/ (ECS StartTask, DescribeTasks, StopTask)
//!     ▲                                                   │
//!     └──────────── runtime events (started, exited, interrupted) ◄──┘
//! ```
//!
//! Modules:
//! - [`model`]: AWS Batch wire shapes (camelCase serde) and their validation. No I/O.
//! - [`batch`]: the control plane: each AWS Batch operation over the catalog and the store.
//! - [`store`]: the [`store::Store`] trait; one SQL implementation for SQLite and PostgreSQL with
//!   group commit.
//! - [`api`]: HTTP routes, SigV4 verification, error mapping, `/metrics`, `/healthz`.
//! - [`server`]: configuration, start-up (defaults, credentials), graceful shutdown.
//! - [`metrics`]: Prometheus counters and gauges.
//! - [`logs`]: job output as CloudWatch Logs events, file-backed under `<data-dir>/logs/`.
//! - [`engine`]: the control loop (the reconciler): job transitions, retries (`evaluateOnExit`),
//!   timeouts, dependencies, array roll-up, Spot interruptions.
//! - [`scheduler`]: pure placement of RUNNABLE jobs (priority, fair share, environment order).
//! - [`compute`]: where attempts run: `local` (Docker or host processes) and `aws` (EC2 fleets,
//!   ECS tasks, CloudWatch Logs), behind one `Runtime` the engine talks to.
//! - [`provisioner`]: pure planning of what a managed compute environment launches and retires
//!   (demand × fleet × instance catalog → launch / retire), with a built-in us-east-1 catalog.
//! - `cli`: the `flotilla` command line; talks to the server over the signed AWS Batch API.
//! - [`bench`]: `flotilla bench`, the benchmark scenarios of docs/performance.md against a child
//!   server process.

pub mod api;
pub mod batch;
pub mod bench;
pub mod cli;
pub mod compute;
pub mod engine;
pub mod error;
pub mod logs;
pub mod metrics;
pub mod model;
pub mod provisioner;
pub mod scheduler;
pub mod server;
pub mod store;
pub mod util;
