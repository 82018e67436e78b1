//! [`ControlPlane`]: what the AWS compute driver may read and change of the control plane.

use super::Batch;
use crate::compute::ports::ControlPlane;
use crate::error::BatchResult;
use crate::model::{Catalog, ResourceStatus};
use async_trait::async_trait;
use serde_json::Value;
use std::sync::Arc;

#[async_trait]
impl ControlPlane for Batch {
    async fn catalog(&self) -> Arc<Catalog> {
        Batch::catalog(self).await
    }

    async fn set_env_status(
        &self,
        name: &str,
        status: ResourceStatus,
        reason: String,
        ecs_cluster_arn: Option<String>,
    ) -> BatchResult<bool> {
        self.update_ce_runtime(name, |ce| {
            ce.status = status;
            ce.status_reason = Some(reason);
            if ecs_cluster_arn.is_some() {
                ce.ecs_cluster_arn = ecs_cluster_arn;
            }
        })
        .await
    }

    async fn set_env_images(&self, name: &str, ec2_configuration: Value) -> BatchResult<bool> {
        self.update_ce_runtime(name, |ce| {
            ce.resolved_ec2_configuration = Some(ec2_configuration);
        })
        .await
    }

    async fn set_desired_vcpus(&self, name: &str, desired: i32) -> BatchResult<bool> {
        self.update_ce_runtime(name, |ce| {
            if let Some(cr) = ce.compute_resources.as_mut() {
                cr.desiredv_cpus = Some(desired);
            }
        })
        .await
    }

    async fn record_instances(
        &self,
        env: &str,
        live: Vec<crate::store::InstanceUsage>,
        now: i64,
    ) -> BatchResult<()> {
        Ok(self.store().record_instances(env, live, now).await?)
    }

    fn wake(&self) {
        self.wake_engine();
    }
}
