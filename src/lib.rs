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
//!                                   │
//!                                   ▼
//!  scheduler/ · provisioner/  pure planning over snapshots            (later issues)
//!  compute/                   drivers that do I/O: LOCAL, AWS          (later issues)
//!  reconciler/                observations → job transitions, retries  (later issues)
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
