use super::{AttemptSpec, ExpectedAttempt, Runtime, RuntimeError, StopSignal, Target, aws};
use std::sync::Arc;

/// Sends each attempt to the runtime its [`Target`] names: LOCAL attempts to the host runtime,
/// ECS attempts to the AWS driver.
pub struct Router {
    pub local: Arc<dyn Runtime>,
    pub aws: Option<Arc<aws::AwsDriver>>,
    /// Checked before anything reaches a runtime: a replica that is not (or no longer) the
    /// leader starts, stops and recovers nothing.
    pub fence: Arc<crate::util::fence::Fence>,
}

impl Router {
    fn fenced(&self) -> Result<(), RuntimeError> {
        self.fence
            .check()
            .map_err(|e| RuntimeError::Unavailable(e.to_string()))
    }

    fn aws(&self) -> Result<&Arc<aws::AwsDriver>, RuntimeError> {
        self.aws.as_ref().ok_or_else(|| {
            RuntimeError::Rejected(
                "this server has no AWS compute driver (start it with --aws)".into(),
            )
        })
    }
}

#[async_trait::async_trait]
impl Runtime for Router {
    fn name(&self) -> &'static str {
        self.local.name()
    }

    async fn start(&self, spec: AttemptSpec) -> Result<(), RuntimeError> {
        self.fenced()?;
        match spec.target {
            Target::Local => self.local.start(spec).await,
            Target::Ecs { .. } => self.aws()?.start(spec).await,
        }
    }

    async fn stop(
        &self,
        job_id: &str,
        attempt: u32,
        signal: StopSignal,
    ) -> Result<(), RuntimeError> {
        self.fenced()?;
        if let Some(aws) = &self.aws
            && aws.owns(job_id)
        {
            return aws.stop(job_id, attempt, signal).await;
        }
        self.local.stop(job_id, attempt, signal).await
    }

    fn end_stored(&self, job_id: &str, attempt: u32) {
        self.local.end_stored(job_id, attempt);
    }

    async fn recover(&self, expected: Vec<ExpectedAttempt>) -> Result<(), RuntimeError> {
        self.fenced()?;
        let (ecs, local): (Vec<_>, Vec<_>) = expected
            .into_iter()
            .partition(|e| matches!(e.target, Target::Ecs { .. }));
        if let Some(aws) = &self.aws {
            aws.recover(ecs).await?;
        } else if !ecs.is_empty() {
            tracing::warn!(
                attempts = ecs.len(),
                "attempts ran on ecs but this server has no aws driver; they stay as they are"
            );
        }
        self.local.recover(local).await
    }
}
