//! Job queues: create, update, delete, describe.

use super::resources::exists;
use super::*;
use crate::model::validate as v;
use serde_json::{Value, json};

impl Batch {
    fn check_ce_order(
        &self,
        cat: &Catalog,
        order: &[ComputeEnvironmentOrder],
    ) -> BatchResult<Vec<ComputeEnvironmentOrder>> {
        if order.is_empty() || order.len() > 3 {
            return Err(BatchError::client(format!(
                "computeEnvironmentOrder: must have 1 to 3 entries, got {}",
                order.len()
            )));
        }
        let mut out: Vec<ComputeEnvironmentOrder> = Vec::new();
        for (i, o) in order.iter().enumerate() {
            let f = format!("computeEnvironmentOrder[{i}]");
            v::range(&format!("{f}.order"), o.order.into(), 0, i32::MAX.into())?;
            let ce = self.resolve_ce(
                cat,
                &o.compute_environment,
                &format!("{f}.computeEnvironment"),
            )?;
            if out.iter().any(|p| p.order == o.order) {
                return Err(BatchError::client(format!(
                    "{f}.order: {} is used twice; orders must be unique",
                    o.order
                )));
            }
            if out
                .iter()
                .any(|p| p.compute_environment == ce.compute_environment_arn)
            {
                return Err(BatchError::client(format!(
                    "{f}.computeEnvironment: {:?} is listed twice",
                    ce.compute_environment_name
                )));
            }
            out.push(ComputeEnvironmentOrder {
                order: o.order,
                compute_environment: ce.compute_environment_arn.clone(),
            });
        }
        out.sort_by_key(|o| o.order);
        Ok(out)
    }

    fn check_policy_arn(&self, cat: &Catalog, arn: &str) -> BatchResult<()> {
        let ok = self
            .parse_arn(arn)
            .filter(|(k, _)| *k == ArnKind::SchedulingPolicy)
            .is_some_and(|(_, n)| cat.scheduling_policies.contains_key(n));
        if ok {
            Ok(())
        } else {
            Err(BatchError::client(format!(
                "schedulingPolicyArn: no scheduling policy {arn:?}"
            )))
        }
    }

    pub async fn create_job_queue(&self, req: CreateJobQueueRequest) -> BatchResult<Value> {
        v::name("jobQueueName", &req.job_queue_name)?;
        v::range("priority", req.priority.into(), 0, 1000)?;
        let state: ResourceState = match &req.state {
            Some(s) => v::wire("state", s)?,
            None => ResourceState::Enabled,
        };
        if let Some(t) = &req.job_queue_type {
            v::one_of("jobQueueType", t, &["ECS"])?;
        }
        if req.service_environment_order.is_some() {
            return Err(BatchError::client(
                "serviceEnvironmentOrder: service environments are not supported by Flotilla",
            ));
        }
        if let Some(t) = &req.tags {
            v::tags("tags", t)?;
        }
        if let Some(a) = &req.job_state_time_limit_actions {
            v::job_state_time_limit_actions("jobStateTimeLimitActions", a)?;
        }
        let mut guard = self.cat_mut().await;
        let cat = Arc::make_mut(&mut *guard);
        let order =
            self.check_ce_order(cat, req.compute_environment_order.as_deref().unwrap_or(&[]))?;
        if let Some(p) = &req.scheduling_policy_arn {
            self.check_policy_arn(cat, p)?;
        }
        if cat.queues.contains_key(&req.job_queue_name) {
            return Err(exists("jobQueueName", &req.job_queue_name));
        }
        let arn = self.arn(ArnKind::JobQueue, &req.job_queue_name);
        let q = JobQueueDetail {
            job_queue_name: req.job_queue_name,
            job_queue_arn: arn.clone(),
            state,
            scheduling_policy_arn: req.scheduling_policy_arn,
            status: ResourceStatus::Valid,
            status_reason: Some("JobQueue Healthy".into()),
            priority: req.priority,
            compute_environment_order: order,
            job_queue_type: Some("ECS".into()),
            tags: req.tags,
            job_state_time_limit_actions: req.job_state_time_limit_actions,
        };
        self.persist(
            ResourceKind::JobQueue,
            &arn,
            &q.job_queue_name,
            to_json(&q)?,
        )
        .await?;
        let out = json!({ "jobQueueName": q.job_queue_name, "jobQueueArn": arn });
        tracing::info!(name = %q.job_queue_name, "job queue created");
        cat.queues.insert(q.job_queue_name.clone(), q);
        Ok(out)
    }

    pub(crate) fn resolve_queue<'a>(
        &self,
        cat: &'a Catalog,
        value: &str,
        field: &str,
    ) -> BatchResult<&'a JobQueueDetail> {
        self.name_of(ArnKind::JobQueue, value)
            .and_then(|n| cat.queues.get(n))
            .ok_or_else(|| BatchError::client(format!("{field}: no job queue named {value:?}")))
    }

    pub async fn update_job_queue(&self, req: UpdateJobQueueRequest) -> BatchResult<Value> {
        let mut guard = self.cat_mut().await;
        let cat = Arc::make_mut(&mut *guard);
        let mut q = self.resolve_queue(cat, &req.job_queue, "jobQueue")?.clone();
        if let Some(s) = &req.state {
            q.state = v::wire("state", s)?;
        }
        if let Some(p) = req.priority {
            v::range("priority", p.into(), 0, 1000)?;
            q.priority = p;
        }
        if let Some(order) = &req.compute_environment_order {
            q.compute_environment_order = self.check_ce_order(cat, order)?;
        }
        if let Some(p) = &req.scheduling_policy_arn {
            if q.scheduling_policy_arn.is_none() {
                return Err(BatchError::client(
                    "schedulingPolicyArn: a FIFO job queue (created without a scheduling policy) cannot be given one; create a new queue",
                ));
            }
            self.check_policy_arn(cat, p)?;
            q.scheduling_policy_arn = Some(p.clone());
        }
        if let Some(a) = &req.job_state_time_limit_actions {
            v::job_state_time_limit_actions("jobStateTimeLimitActions", a)?;
            q.job_state_time_limit_actions = Some(a.clone());
        }
        if req.service_environment_order.is_some() {
            return Err(BatchError::client(
                "serviceEnvironmentOrder: service environments are not supported by Flotilla",
            ));
        }
        self.persist(
            ResourceKind::JobQueue,
            &q.job_queue_arn,
            &q.job_queue_name,
            to_json(&q)?,
        )
        .await?;
        let out = json!({ "jobQueueName": q.job_queue_name, "jobQueueArn": q.job_queue_arn });
        cat.queues.insert(q.job_queue_name.clone(), q);
        Ok(out)
    }

    pub async fn delete_job_queue(&self, value: &str) -> BatchResult<Value> {
        let mut guard = self.cat_mut().await;
        let cat = Arc::make_mut(&mut *guard);
        let q = self.resolve_queue(cat, value, "jobQueue")?.clone();
        if q.state != ResourceState::Disabled {
            return Err(BatchError::client(format!(
                "jobQueue: {:?} must be DISABLED before it can be deleted",
                q.job_queue_name
            )));
        }
        self.store
            .delete_resource(ResourceKind::JobQueue, &q.job_queue_arn)
            .await?;
        cat.queues.remove(&q.job_queue_name);
        tracing::info!(name = %q.job_queue_name, "job queue deleted");
        Ok(json!({}))
    }

    pub async fn describe_job_queues(&self, req: DescribeRequest) -> BatchResult<Value> {
        let cat = self.cat().await;
        if let Some(names) = &req.job_queues {
            if names.len() > 100 {
                return Err(BatchError::client(format!(
                    "jobQueues: at most 100 entries, got {}",
                    names.len()
                )));
            }
            let found: Vec<_> = names
                .iter()
                .filter_map(|n| {
                    self.name_of(ArnKind::JobQueue, n)
                        .and_then(|n| cat.queues.get(n))
                })
                .collect();
            return Ok(json!({ "jobQueues": found }));
        }
        let items = cat.queues.iter().map(|(k, v)| (k.clone(), v)).collect();
        let scope = token::TokenScope::new("DescribeJobQueues", []);
        let (page, token) =
            token::paginate(&scope, items, req.max_results, req.next_token.as_deref())?;
        Ok(json!({ "jobQueues": page, "nextToken": token }))
    }
}
