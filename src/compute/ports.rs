//! What the compute drivers need of the layers above them, as traits this layer owns and those
//! layers implement. A driver never names `batch` or `engine`; `server.rs` hands it the
//! implementation when it builds it.

use crate::error::BatchResult;
use crate::model::{Catalog, ResourceStatus};
use async_trait::async_trait;
use serde_json::Value;
use std::sync::Arc;

/// The control plane as the AWS driver sees it: it reads the environments, reports what it made
/// of them, and asks for a scheduling pass when the room it offers changed. `batch::Batch`
/// implements it.
#[async_trait]
pub trait ControlPlane: Send + Sync + 'static {
    /// A consistent snapshot of the resource catalog.
    async fn catalog(&self) -> Arc<Catalog>;

    /// Records an environment's `status` and `statusReason` (and its ECS cluster once known).
    /// Returns false when the environment is gone or already said so.
    async fn set_env_status(
        &self,
        name: &str,
        status: ResourceStatus,
        reason: String,
        ecs_cluster_arn: Option<String>,
    ) -> BatchResult<bool>;

    /// Records the AMI each image type resolved to (`[{imageType, imageIdOverride}]`), shown as
    /// the environment's `ec2Configuration`. Returns false when the environment is gone or
    /// already said so.
    async fn set_env_images(&self, name: &str, ec2_configuration: Value) -> BatchResult<bool>;

    /// Records the vCPUs the driver provisions for (`computeResources.desiredvCpus`).
    /// Returns false when the environment is gone or already said so.
    async fn set_desired_vcpus(&self, name: &str, desired: i32) -> BatchResult<bool>;

    /// Records a managed environment's live instances in the instance ledger (the fleet's bill
    /// for cost reports): see `Store::record_instances`.
    async fn record_instances(
        &self,
        env: &str,
        live: Vec<crate::store::InstanceUsage>,
        now: i64,
    ) -> BatchResult<()>;

    /// The instances an environment offers changed: schedule now, not at the periodic pass.
    fn wake(&self);
}
