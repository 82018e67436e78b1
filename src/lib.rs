//! Flotilla: a self-hosted AWS Batch.
//!
//! The data flow, top to bottom:
//!
//! ```text
//!  AWS CLI / boto3 / SDKs / `flotilla` CLI
//!             │  restJson1 + SigV4 (the AWS Batch API)
//!             ▼
//!  api/ ── parse + validate (model/) ──► batch/ ──► store/ (SQLite | PostgreSQL)
//!                                          │         durable before the reply
//!                                          │ batch::Dispatch (accepted jobs, commands)
//!                                          ▼
//!  engine/      one actor owning unfinished jobs: apply → timers → pass → write → act
//!     │  scheduler/    pure: RUNNABLE jobs × free capacity → placements
//!     │  demand (compute::fleet) ──►  compute/aws/ control loop ── provisioner/ (pure)
//!     ▼                    │ CreateFleet / TerminateInstances, clusters, launch templates
//!  compute/ Router ─► local/ (Docker | processes)   aws/ (ECS StartTask, DescribeTasks, StopTask)
//!     ▲                                                   │
//!     └──────────── runtime events (started, exited, interrupted) ◄──┘
//! ```
//!
//! **Layers.** A module imports only from its own layer or a lower one (checked by
//! `scripts/layers.sh` in the test command):
//! L0 [`model`], [`util`], [`metrics`] → L1 [`scheduler`], [`provisioner`], [`store`], [`logs`],
//! [`error`] → L2 [`compute`] → L3 [`batch`] → L4 [`engine`] → L5 [`api`], [`console`],
//! [`server`], `cli`, [`bench`]. A lower layer calls up only through a trait or channel it owns:
//! [`batch::dispatch::Dispatch`] (implemented by the engine's handle), `compute::ports::ControlPlane`
//! (implemented by [`batch::Batch`]), the `compute::fleet` mailbox and the runtime-event channel.
//! `server.rs` wires them once.
//!
//! Modules:
//! - [`model`]: AWS Batch wire shapes (camelCase serde), the status vocabularies as enums, ARN
//!   names, and their validation. No I/O.
//! - [`util`]: the clock ([`util::time::Clock`]), injected where time decides behaviour.
//! - [`batch`]: the control plane: each AWS Batch operation over the catalog and the store.
//! - [`store`]: the [`store::Store`] trait; one SQL implementation for SQLite and PostgreSQL with
//!   group commit.
//! - [`api`]: HTTP routes, SigV4 verification, error mapping, `/metrics`, `/healthz`.
//! - [`console`]: the web console at `/console`: server-rendered pages over [`batch`], signed in
//!   with the API's access keys (a stateless session cookie).
//! - [`server`]: configuration, start-up (defaults, credentials), graceful shutdown.
//! - [`metrics`]: Prometheus counters and gauges.
//! - [`logs`]: job output as CloudWatch Logs events, file-backed under `<data-dir>/logs/`.
//! - [`engine`]: the control loop (the reconciler) around one job table: job transitions,
//!   retries (`evaluateOnExit`), timeouts, dependencies, array roll-up, Spot interruptions.
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
pub mod console;
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
