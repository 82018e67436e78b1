//! Tags of resources and jobs: TagResource, UntagResource, ListTagsForResource.

use super::*;
use crate::model::validate as v;
use serde_json::{Value, json};

impl Batch {
    /// Applies `f` to the tags of the resource `arn` names, persists, and returns the new tags.
    pub async fn with_tags(&self, arn: &str, op: dispatch::TagOp) -> BatchResult<Tags> {
        let f = |t: &mut Tags| op.apply(t);
        let (kind, name) = self.parse_arn(arn).ok_or_else(|| {
            BatchError::client(format!("resourceArn: {arn:?} is not an ARN of this server"))
        })?;
        let missing = || BatchError::client(format!("resourceArn: no resource {arn:?}"));
        if kind == ArnKind::Job {
            return self.with_job_tags(name, op).await;
        }
        let mut guard = self.cat_mut().await;
        let cat = Arc::make_mut(&mut *guard);
        let (tags, rkind, doc) = match kind {
            ArnKind::ComputeEnvironment => {
                let ce = cat.compute_environments.get_mut(name).ok_or_else(missing)?;
                let mut t = ce.tags.clone().unwrap_or_default();
                f(&mut t)?;
                let mut updated = ce.clone();
                updated.tags = Some(t.clone());
                (t, ResourceKind::ComputeEnvironment, to_json(&updated)?)
            }
            ArnKind::JobQueue => {
                let q = cat.queues.get(name).ok_or_else(missing)?;
                let mut t = q.tags.clone().unwrap_or_default();
                f(&mut t)?;
                let mut updated = q.clone();
                updated.tags = Some(t.clone());
                (t, ResourceKind::JobQueue, to_json(&updated)?)
            }
            ArnKind::SchedulingPolicy => {
                let p = cat.scheduling_policies.get(name).ok_or_else(missing)?;
                let mut t = p.tags.clone().unwrap_or_default();
                f(&mut t)?;
                let mut updated = p.clone();
                updated.tags = Some(t.clone());
                (t, ResourceKind::SchedulingPolicy, to_json(&updated)?)
            }
            ArnKind::ConsumableResource => {
                let r = cat.consumable_resources.get(name).ok_or_else(missing)?;
                let mut t = r.tags.clone().unwrap_or_default();
                f(&mut t)?;
                let mut updated = r.clone();
                updated.tags = Some(t.clone());
                (t, ResourceKind::ConsumableResource, to_json(&updated)?)
            }
            ArnKind::JobDefinition => {
                let jd = self.resolve_job_definition(cat, arn, "resourceArn")?;
                let mut t = jd.tags.clone().unwrap_or_default();
                f(&mut t)?;
                let mut updated = jd.clone();
                updated.tags = Some(t.clone());
                (t, ResourceKind::JobDefinition, to_json(&updated)?)
            }
            ArnKind::Job => unreachable!("handled above"),
        };
        v::tags("tags", &tags)?;
        let row_name = match kind {
            ArnKind::JobDefinition => name.rsplit_once(':').map(|(n, _)| n).unwrap_or(name),
            _ => name,
        };
        self.persist(rkind, arn, row_name, doc.clone()).await?;
        match kind {
            ArnKind::ComputeEnvironment => {
                let ce: ComputeEnvironmentDetail = from_json("compute environment", &doc)?;
                cat.compute_environments.insert(name.to_string(), ce);
            }
            ArnKind::JobQueue => {
                let q: JobQueueDetail = from_json("job queue", &doc)?;
                cat.queues.insert(name.to_string(), q);
            }
            ArnKind::SchedulingPolicy => {
                let p: SchedulingPolicyDetail = from_json("scheduling policy", &doc)?;
                cat.scheduling_policies.insert(name.to_string(), p);
            }
            ArnKind::ConsumableResource => {
                let r: ConsumableResourceDetail = from_json("consumable resource", &doc)?;
                cat.consumable_resources.insert(name.to_string(), r);
            }
            ArnKind::JobDefinition => {
                let jd: JobDefinition = from_json("job definition", &doc)?;
                cat.job_definitions
                    .entry(jd.job_definition_name.clone())
                    .or_default()
                    .insert(jd.revision, jd);
            }
            ArnKind::Job => {}
        }
        Ok(tags)
    }

    pub async fn list_tags(&self, arn: &str) -> BatchResult<Value> {
        let tags = self.with_tags(arn, dispatch::TagOp::Read).await?;
        Ok(json!({ "tags": tags }))
    }

    pub async fn tag_resource(&self, arn: &str, new: Tags) -> BatchResult<Value> {
        if new.is_empty() {
            return Err(BatchError::client("tags: at least one tag is required"));
        }
        v::tags("tags", &new)?;
        self.with_tags(arn, dispatch::TagOp::Tag(new)).await?;
        Ok(json!({}))
    }

    pub async fn untag_resource(&self, arn: &str, keys: Vec<String>) -> BatchResult<Value> {
        if keys.is_empty() {
            return Err(BatchError::client("tagKeys: at least one key is required"));
        }
        self.with_tags(arn, dispatch::TagOp::Untag(keys)).await?;
        Ok(json!({}))
    }

    /// Creates the `local` compute environment and `default` queue once, on first start.
    pub async fn create_defaults(&self) -> BatchResult<()> {
        if self.store.get_meta("defaults_created").await?.is_some() {
            return Ok(());
        }
        let has_ce = self
            .catalog
            .read()
            .await
            .compute_environments
            .contains_key("local");
        if !has_ce {
            self.create_compute_environment(CreateComputeEnvironmentRequest {
                compute_environment_name: "local".into(),
                ce_type: "MANAGED".into(),
                compute_resources: Some(ComputeResource {
                    cr_type: Some(CR_TYPE_LOCAL.into()),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await?;
        }
        let has_q = self.cat().await.queues.contains_key("default");
        if !has_q {
            self.create_job_queue(CreateJobQueueRequest {
                job_queue_name: "default".into(),
                priority: 1,
                compute_environment_order: Some(vec![ComputeEnvironmentOrder {
                    order: 1,
                    compute_environment: "local".into(),
                }]),
                ..Default::default()
            })
            .await?;
        }
        self.store.set_meta("defaults_created", "1").await?;
        Ok(())
    }
}
