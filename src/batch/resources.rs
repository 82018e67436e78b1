//! Compute environments, job queues, job definitions and scheduling policies.

use super::*;
use crate::model::validate as v;
use serde_json::{Value, json};

const ALLOCATION_STRATEGIES: [&str; 4] = [
    "BEST_FIT",
    "BEST_FIT_PROGRESSIVE",
    "SPOT_CAPACITY_OPTIMIZED",
    "SPOT_PRICE_CAPACITY_OPTIMIZED",
];

fn exists(what: &str, name: &str) -> BatchError {
    BatchError::client(format!("{what}: {name:?} already exists"))
}

/// Checks the vCPU bounds of a compute resource once defaults are applied.
fn check_vcpus(cr: &ComputeResource) -> BatchResult<()> {
    let min = cr.minv_cpus.unwrap_or(0);
    let max = cr.maxv_cpus.unwrap_or(0);
    v::range("computeResources.minvCpus", min.into(), 0, i32::MAX.into())?;
    v::range("computeResources.maxvCpus", max.into(), 1, i32::MAX.into())?;
    if min > max {
        return Err(BatchError::client(format!(
            "computeResources.minvCpus: {min} is greater than maxvCpus {max}"
        )));
    }
    if let Some(d) = cr.desiredv_cpus
        && (d < min || d > max)
    {
        return Err(BatchError::client(format!(
            "computeResources.desiredvCpus: {d} must be between minvCpus {min} and maxvCpus {max}"
        )));
    }
    Ok(())
}

impl Batch {
    fn ce_status(
        &self,
        ce_type: &str,
        cr: Option<&ComputeResource>,
    ) -> (ResourceStatus, Option<String>) {
        let local = cr.and_then(|c| c.cr_type.as_deref()) == Some(CR_TYPE_LOCAL);
        if ce_type == "MANAGED" && local {
            (
                ResourceStatus::Valid,
                Some("ComputeEnvironment Healthy".into()),
            )
        } else if self.aws_driver {
            (
                ResourceStatus::Creating,
                Some("creating the ECS cluster and launch template".into()),
            )
        } else {
            (
                ResourceStatus::Invalid,
                Some(
                    "this Flotilla server runs without the AWS compute driver (start it with --aws); \
                     jobs routed here stay RUNNABLE. Use a LOCAL compute environment or restart with --aws."
                        .into(),
                ),
            )
        }
    }

    pub async fn create_compute_environment(
        &self,
        req: CreateComputeEnvironmentRequest,
    ) -> BatchResult<Value> {
        v::name("computeEnvironmentName", &req.compute_environment_name)?;
        v::one_of("type", &req.ce_type, &["MANAGED", "UNMANAGED"])?;
        let state: ResourceState = match &req.state {
            Some(s) => v::wire("state", s)?,
            None => ResourceState::Enabled,
        };
        if let Some(t) = &req.tags {
            v::tags("tags", t)?;
        }
        if req.eks_configuration.is_some() {
            return Err(BatchError::client(
                "eksConfiguration: EKS compute environments are not supported by Flotilla",
            ));
        }
        let mut cr = req.compute_resources.clone();
        match (req.ce_type.as_str(), cr.as_mut()) {
            ("MANAGED", None) => {
                return Err(BatchError::client(
                    "computeResources: is required for a MANAGED compute environment",
                ));
            }
            ("MANAGED", Some(cr)) => self.check_new_compute_resource(cr)?,
            (_, Some(_)) => {
                return Err(BatchError::client(
                    "computeResources: must not be given for an UNMANAGED compute environment",
                ));
            }
            (_, None) => {}
        }
        if let Some(u) = req.unmanagedv_cpus {
            if req.ce_type != "UNMANAGED" {
                return Err(BatchError::client(
                    "unmanagedvCpus: only applies to UNMANAGED compute environments",
                ));
            }
            v::range("unmanagedvCpus", u.into(), 0, i32::MAX.into())?;
        }

        let mut guard = self.catalog.write().await;
        let cat = Arc::make_mut(&mut *guard);
        if cat
            .compute_environments
            .contains_key(&req.compute_environment_name)
        {
            return Err(exists(
                "computeEnvironmentName",
                &req.compute_environment_name,
            ));
        }
        let arn = self.arn(ArnKind::ComputeEnvironment, &req.compute_environment_name);
        let (status, status_reason) = self.ce_status(&req.ce_type, cr.as_ref());
        let ce = ComputeEnvironmentDetail {
            compute_environment_name: req.compute_environment_name.clone(),
            compute_environment_arn: arn.clone(),
            unmanagedv_cpus: req.unmanagedv_cpus,
            ecs_cluster_arn: None,
            tags: req.tags,
            ce_type: req.ce_type,
            state,
            status,
            status_reason,
            compute_resources: cr,
            service_role: req.service_role,
            update_policy: None,
            eks_configuration: None,
            container_orchestration_type: Some("ECS".into()),
            uuid: Some(uuid::Uuid::new_v4().to_string()),
            context: req.context,
        };
        self.persist(
            ResourceKind::ComputeEnvironment,
            &arn,
            &ce.compute_environment_name,
            to_json(&ce)?,
        )
        .await?;
        cat.compute_environments
            .insert(ce.compute_environment_name.clone(), ce.clone());
        tracing::info!(name = %ce.compute_environment_name, "compute environment created");
        Ok(json!({
            "computeEnvironmentName": ce.compute_environment_name,
            "computeEnvironmentArn": arn,
        }))
    }

    fn check_new_compute_resource(&self, cr: &mut ComputeResource) -> BatchResult<()> {
        let t = cr
            .cr_type
            .clone()
            .ok_or_else(|| BatchError::client("computeResources.type: is required"))?;
        v::one_of(
            "computeResources.type",
            &t,
            &["EC2", "SPOT", "FARGATE", "FARGATE_SPOT", CR_TYPE_LOCAL],
        )?;
        if t.starts_with("FARGATE") {
            return Err(BatchError::client(
                "computeResources.type: FARGATE capacity is not supported by Flotilla; use EC2, SPOT or LOCAL",
            ));
        }
        if let Some(a) = &cr.allocation_strategy {
            v::one_of(
                "computeResources.allocationStrategy",
                a,
                &ALLOCATION_STRATEGIES,
            )?;
            if a.starts_with("SPOT_") && t != "SPOT" {
                return Err(BatchError::client(format!(
                    "computeResources.allocationStrategy: {a} applies only to SPOT compute resources"
                )));
            }
        }
        if let Some(b) = cr.bid_percentage {
            if t != "SPOT" {
                return Err(BatchError::client(
                    "computeResources.bidPercentage: applies only to SPOT compute resources",
                ));
            }
            v::range("computeResources.bidPercentage", b.into(), 0, 100)?;
        }
        if t == CR_TYPE_LOCAL {
            cr.maxv_cpus.get_or_insert(self.host_cpus);
        } else {
            if cr.maxv_cpus.is_none() {
                return Err(BatchError::client("computeResources.maxvCpus: is required"));
            }
            if cr.subnets.as_ref().is_none_or(|s| s.is_empty()) {
                return Err(BatchError::client(
                    "computeResources.subnets: at least one subnet is required for EC2 and SPOT",
                ));
            }
            if cr.instance_types.as_ref().is_none_or(|s| s.is_empty()) {
                return Err(BatchError::client(
                    "computeResources.instanceTypes: at least one instance type (or \"optimal\") is required for EC2 and SPOT",
                ));
            }
        }
        cr.minv_cpus.get_or_insert(0);
        if cr.desiredv_cpus.is_none() {
            cr.desiredv_cpus = cr.minv_cpus;
        }
        if let Some(tags) = &cr.tags {
            v::tags("computeResources.tags", tags)?;
        }
        check_vcpus(cr)
    }

    fn resolve_ce<'a>(
        &self,
        cat: &'a Catalog,
        value: &str,
        field: &str,
    ) -> BatchResult<&'a ComputeEnvironmentDetail> {
        self.name_of(ArnKind::ComputeEnvironment, value)
            .and_then(|n| cat.compute_environments.get(n))
            .ok_or_else(|| {
                BatchError::client(format!("{field}: no compute environment named {value:?}"))
            })
    }

    pub async fn update_compute_environment(
        &self,
        req: UpdateComputeEnvironmentRequest,
    ) -> BatchResult<Value> {
        let mut guard = self.catalog.write().await;
        let cat = Arc::make_mut(&mut *guard);
        let mut ce = self
            .resolve_ce(cat, &req.compute_environment, "computeEnvironment")?
            .clone();
        if let Some(s) = &req.state {
            ce.state = v::wire("state", s)?;
        }
        if let Some(u) = req.unmanagedv_cpus {
            if ce.ce_type != "UNMANAGED" {
                return Err(BatchError::client(
                    "unmanagedvCpus: only applies to UNMANAGED compute environments",
                ));
            }
            v::range("unmanagedvCpus", u.into(), 0, i32::MAX.into())?;
            ce.unmanagedv_cpus = Some(u);
        }
        if let Some(upd) = req.compute_resources {
            let cur = ce.compute_resources.as_mut().ok_or_else(|| {
                BatchError::client(
                    "computeResources: an UNMANAGED compute environment has no compute resources to update",
                )
            })?;
            if let Some(t) = &upd.cr_type
                && Some(t) != cur.cr_type.as_ref()
            {
                return Err(BatchError::client(format!(
                    "computeResources.type: cannot change from {} to {t}",
                    cur.cr_type.as_deref().unwrap_or("?")
                )));
            }
            if let Some(a) = &upd.allocation_strategy {
                v::one_of(
                    "computeResources.allocationStrategy",
                    a,
                    &ALLOCATION_STRATEGIES,
                )?;
            }
            if let Some(b) = upd.bid_percentage {
                v::range("computeResources.bidPercentage", b.into(), 0, 100)?;
            }
            if let Some(tags) = &upd.tags {
                v::tags("computeResources.tags", tags)?;
            }
            macro_rules! take {
                ($($f:ident),*) => { $( if upd.$f.is_some() { cur.$f = upd.$f.clone(); } )* };
            }
            take!(
                minv_cpus,
                maxv_cpus,
                desiredv_cpus,
                subnets,
                security_group_ids,
                allocation_strategy,
                instance_types,
                ec2_key_pair,
                instance_role,
                tags,
                placement_group,
                bid_percentage,
                launch_template,
                ec2_configuration,
                image_id,
                scaling_policy
            );
            if upd.desiredv_cpus.is_none()
                && let Some(d) = cur.desiredv_cpus
            {
                // Keep the old desired count inside the new bounds rather than reject the update.
                let (lo, hi) = (
                    cur.minv_cpus.unwrap_or(0),
                    cur.maxv_cpus.unwrap_or(i32::MAX),
                );
                cur.desiredv_cpus = Some(d.clamp(lo, hi.max(lo)));
            }
            check_vcpus(cur)?;
        }
        if req.service_role.is_some() {
            ce.service_role = req.service_role;
        }
        if req.update_policy.is_some() {
            ce.update_policy = req.update_policy;
        }
        if req.context.is_some() {
            ce.context = req.context;
        }
        self.persist(
            ResourceKind::ComputeEnvironment,
            &ce.compute_environment_arn,
            &ce.compute_environment_name,
            to_json(&ce)?,
        )
        .await?;
        let out = json!({
            "computeEnvironmentName": ce.compute_environment_name,
            "computeEnvironmentArn": ce.compute_environment_arn,
        });
        cat.compute_environments
            .insert(ce.compute_environment_name.clone(), ce);
        Ok(out)
    }

    pub async fn delete_compute_environment(&self, value: &str) -> BatchResult<Value> {
        let mut guard = self.catalog.write().await;
        let cat = Arc::make_mut(&mut *guard);
        let ce = self.resolve_ce(cat, value, "computeEnvironment")?.clone();
        if ce.state != ResourceState::Disabled {
            return Err(BatchError::client(format!(
                "computeEnvironment: {:?} must be DISABLED before it can be deleted",
                ce.compute_environment_name
            )));
        }
        if let Some(q) = cat.queues.values().find(|q| {
            q.compute_environment_order
                .iter()
                .any(|o| o.compute_environment == ce.compute_environment_arn)
        }) {
            return Err(BatchError::client(format!(
                "computeEnvironment: {:?} is still used by job queue {:?}; remove it from the queue first",
                ce.compute_environment_name, q.job_queue_name
            )));
        }
        self.store
            .delete_resource(
                ResourceKind::ComputeEnvironment,
                &ce.compute_environment_arn,
            )
            .await?;
        cat.compute_environments
            .remove(&ce.compute_environment_name);
        tracing::info!(name = %ce.compute_environment_name, "compute environment deleted");
        Ok(json!({}))
    }

    pub async fn describe_compute_environments(&self, req: DescribeRequest) -> BatchResult<Value> {
        let cat = self.catalog.read().await;
        if let Some(names) = &req.compute_environments {
            if names.len() > 100 {
                return Err(BatchError::client(format!(
                    "computeEnvironments: at most 100 entries, got {}",
                    names.len()
                )));
            }
            let found: Vec<_> = names
                .iter()
                .filter_map(|n| {
                    self.name_of(ArnKind::ComputeEnvironment, n)
                        .and_then(|n| cat.compute_environments.get(n))
                })
                .collect();
            return Ok(json!({ "computeEnvironments": found }));
        }
        let items = cat
            .compute_environments
            .iter()
            .map(|(k, v)| (k.clone(), v))
            .collect();
        let (page, token) = paginate(items, req.max_results, req.next_token.as_deref())?;
        Ok(json!({ "computeEnvironments": page, "nextToken": token }))
    }

    // ------------------------------------------------------------ job queues

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
        let mut guard = self.catalog.write().await;
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
        let mut guard = self.catalog.write().await;
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
        let mut guard = self.catalog.write().await;
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
        let cat = self.catalog.read().await;
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
        let (page, token) = paginate(items, req.max_results, req.next_token.as_deref())?;
        Ok(json!({ "jobQueues": page, "nextToken": token }))
    }

    // ------------------------------------------------------------ job definitions

    pub async fn register_job_definition(
        &self,
        req: RegisterJobDefinitionRequest,
    ) -> BatchResult<Value> {
        v::register_job_definition(&req)?;
        let mut guard = self.catalog.write().await;
        let cat = Arc::make_mut(&mut *guard);
        let revision = cat
            .job_definitions
            .get(&req.job_definition_name)
            .and_then(|revs| revs.keys().next_back().copied())
            .unwrap_or(0)
            + 1;
        let name = req.job_definition_name.clone();
        let arn = self.arn(ArnKind::JobDefinition, &format!("{name}:{revision}"));
        let jd = JobDefinition {
            job_definition_name: name.clone(),
            job_definition_arn: arn.clone(),
            revision,
            status: DefinitionStatus::Active,
            jd_type: req.jd_type,
            scheduling_priority: req.scheduling_priority,
            parameters: req.parameters,
            retry_strategy: req.retry_strategy,
            container_properties: req.container_properties,
            timeout: req.timeout,
            tags: req.tags,
            propagate_tags: req.propagate_tags,
            platform_capabilities: req.platform_capabilities,
            container_orchestration_type: Some("ECS".into()),
        };
        self.persist(ResourceKind::JobDefinition, &arn, &name, to_json(&jd)?)
            .await?;
        cat.job_definitions
            .entry(name.clone())
            .or_default()
            .insert(revision, jd);
        tracing::info!(%name, revision, "job definition registered");
        Ok(json!({ "jobDefinitionName": name, "jobDefinitionArn": arn, "revision": revision }))
    }

    /// A job definition by ARN, `name:revision`, or `name` (the latest ACTIVE revision).
    pub(crate) fn resolve_job_definition<'a>(
        &self,
        cat: &'a Catalog,
        value: &str,
        field: &str,
    ) -> BatchResult<&'a JobDefinition> {
        let not_found = || BatchError::client(format!("{field}: no job definition {value:?}"));
        let spec = self
            .name_of(ArnKind::JobDefinition, value)
            .ok_or_else(not_found)?;
        match spec.rsplit_once(':') {
            Some((name, rev)) => {
                let rev: i32 = rev.parse().map_err(|_| {
                    BatchError::client(format!(
                        "{field}: {value:?} is not NAME, NAME:REVISION or an ARN"
                    ))
                })?;
                cat.job_definitions
                    .get(name)
                    .and_then(|revs| revs.get(&rev))
                    .ok_or_else(not_found)
            }
            None => cat
                .job_definitions
                .get(spec)
                .and_then(|revs| {
                    revs.values()
                        .rev()
                        .find(|jd| jd.status == DefinitionStatus::Active)
                })
                .ok_or_else(|| {
                    BatchError::client(format!(
                        "{field}: no ACTIVE revision of job definition {value:?}"
                    ))
                }),
        }
    }

    pub async fn deregister_job_definition(&self, value: &str) -> BatchResult<Value> {
        let mut guard = self.catalog.write().await;
        let cat = Arc::make_mut(&mut *guard);
        if !self
            .name_of(ArnKind::JobDefinition, value)
            .is_some_and(|s| s.contains(':'))
        {
            return Err(BatchError::client(format!(
                "jobDefinition: {value:?} must be NAME:REVISION or a job definition ARN"
            )));
        }
        let mut jd = self
            .resolve_job_definition(cat, value, "jobDefinition")?
            .clone();
        jd.status = DefinitionStatus::Inactive;
        self.persist(
            ResourceKind::JobDefinition,
            &jd.job_definition_arn,
            &jd.job_definition_name,
            to_json(&jd)?,
        )
        .await?;
        if let Some(revs) = cat.job_definitions.get_mut(&jd.job_definition_name) {
            revs.insert(jd.revision, jd);
        }
        Ok(json!({}))
    }

    pub async fn describe_job_definitions(&self, req: DescribeRequest) -> BatchResult<Value> {
        let status: Option<DefinitionStatus> = req
            .status
            .as_deref()
            .map(|s| v::wire("status", s))
            .transpose()?;
        let cat = self.catalog.read().await;
        let mut picked: Vec<&JobDefinition> = Vec::new();
        if let Some(list) = &req.job_definitions {
            if list.len() > 100 {
                return Err(BatchError::client(format!(
                    "jobDefinitions: at most 100 entries, got {}",
                    list.len()
                )));
            }
            for value in list {
                match self.name_of(ArnKind::JobDefinition, value) {
                    Some(spec) if !spec.contains(':') => {
                        if let Some(revs) = cat.job_definitions.get(spec) {
                            picked.extend(revs.values());
                        }
                    }
                    Some(_) => {
                        if let Ok(jd) = self.resolve_job_definition(&cat, value, "jobDefinitions") {
                            picked.push(jd);
                        }
                    }
                    None => {}
                }
            }
        } else if let Some(name) = &req.job_definition_name {
            if let Some(revs) = cat.job_definitions.get(name) {
                picked.extend(revs.values());
            }
        } else {
            picked.extend(cat.job_definitions.values().flat_map(|r| r.values()));
        }
        let items = picked
            .into_iter()
            .filter(|jd| status.is_none_or(|s| jd.status == s))
            // Zero-padded revision keeps the key order equal to (name, revision) order.
            .map(|jd| {
                (
                    format!("{}:{:010}", jd.job_definition_name, jd.revision),
                    jd,
                )
            })
            .collect();
        let (page, token) = paginate(items, req.max_results, req.next_token.as_deref())?;
        Ok(json!({ "jobDefinitions": page, "nextToken": token }))
    }

    // ------------------------------------------------------------ scheduling policies

    pub async fn create_scheduling_policy(
        &self,
        req: CreateSchedulingPolicyRequest,
    ) -> BatchResult<Value> {
        v::name("name", &req.name)?;
        if let Some(p) = &req.fairshare_policy {
            v::fairshare_policy("fairsharePolicy", p)?;
        }
        if req.quota_share_policy.is_some() {
            return Err(BatchError::client(
                "quotaSharePolicy: quota-share policies are not supported by Flotilla",
            ));
        }
        if let Some(t) = &req.tags {
            v::tags("tags", t)?;
        }
        let mut guard = self.catalog.write().await;
        let cat = Arc::make_mut(&mut *guard);
        if cat.scheduling_policies.contains_key(&req.name) {
            return Err(exists("name", &req.name));
        }
        let arn = self.arn(ArnKind::SchedulingPolicy, &req.name);
        let p = SchedulingPolicyDetail {
            name: req.name.clone(),
            arn: arn.clone(),
            fairshare_policy: Some(req.fairshare_policy.unwrap_or_default()),
            quota_share_policy: None,
            tags: req.tags,
        };
        self.persist(ResourceKind::SchedulingPolicy, &arn, &p.name, to_json(&p)?)
            .await?;
        cat.scheduling_policies.insert(p.name.clone(), p);
        Ok(json!({ "name": req.name, "arn": arn }))
    }

    fn resolve_policy<'a>(
        &self,
        cat: &'a Catalog,
        arn: &str,
    ) -> BatchResult<&'a SchedulingPolicyDetail> {
        self.parse_arn(arn)
            .filter(|(k, _)| *k == ArnKind::SchedulingPolicy)
            .and_then(|(_, n)| cat.scheduling_policies.get(n))
            .ok_or_else(|| BatchError::client(format!("arn: no scheduling policy {arn:?}")))
    }

    pub async fn update_scheduling_policy(
        &self,
        req: UpdateSchedulingPolicyRequest,
    ) -> BatchResult<Value> {
        if let Some(p) = &req.fairshare_policy {
            v::fairshare_policy("fairsharePolicy", p)?;
        }
        if req.quota_share_policy.is_some() {
            return Err(BatchError::client(
                "quotaSharePolicy: quota-share policies are not supported by Flotilla",
            ));
        }
        let mut guard = self.catalog.write().await;
        let cat = Arc::make_mut(&mut *guard);
        let mut p = self.resolve_policy(cat, &req.arn)?.clone();
        if let Some(f) = req.fairshare_policy {
            p.fairshare_policy = Some(f);
        }
        self.persist(
            ResourceKind::SchedulingPolicy,
            &p.arn,
            &p.name,
            to_json(&p)?,
        )
        .await?;
        cat.scheduling_policies.insert(p.name.clone(), p);
        Ok(json!({}))
    }

    pub async fn delete_scheduling_policy(&self, arn: &str) -> BatchResult<Value> {
        let mut guard = self.catalog.write().await;
        let cat = Arc::make_mut(&mut *guard);
        let p = self.resolve_policy(cat, arn)?.clone();
        if let Some(q) = cat
            .queues
            .values()
            .find(|q| q.scheduling_policy_arn.as_deref() == Some(p.arn.as_str()))
        {
            return Err(BatchError::client(format!(
                "arn: scheduling policy {:?} is used by job queue {:?}",
                p.name, q.job_queue_name
            )));
        }
        self.store
            .delete_resource(ResourceKind::SchedulingPolicy, &p.arn)
            .await?;
        cat.scheduling_policies.remove(&p.name);
        Ok(json!({}))
    }

    pub async fn describe_scheduling_policies(&self, arns: &[String]) -> BatchResult<Value> {
        if arns.len() > 100 {
            return Err(BatchError::client(format!(
                "arns: at most 100 entries, got {}",
                arns.len()
            )));
        }
        let cat = self.catalog.read().await;
        let found: Vec<_> = arns
            .iter()
            .filter_map(|a| self.resolve_policy(&cat, a).ok())
            .collect();
        Ok(json!({ "schedulingPolicies": found }))
    }

    pub async fn list_scheduling_policies(
        &self,
        max_results: Option<i32>,
        next_token: Option<&str>,
    ) -> BatchResult<Value> {
        let cat = self.catalog.read().await;
        let items = cat
            .scheduling_policies
            .iter()
            .map(|(k, p)| (k.clone(), json!({ "arn": p.arn })))
            .collect();
        let (page, token) = paginate(items, max_results, next_token)?;
        Ok(json!({ "schedulingPolicies": page, "nextToken": token }))
    }

    // ------------------------------------------------------------ tags

    /// Applies `f` to the tags of the resource `arn` names, persists, and returns the new tags.
    pub async fn with_tags(
        &self,
        arn: &str,
        f: impl FnOnce(&mut Tags) -> BatchResult<()> + Send + 'static,
    ) -> BatchResult<Tags> {
        let (kind, name) = self.parse_arn(arn).ok_or_else(|| {
            BatchError::client(format!("resourceArn: {arn:?} is not an ARN of this server"))
        })?;
        let missing = || BatchError::client(format!("resourceArn: no resource {arn:?}"));
        if kind == ArnKind::Job {
            return self.with_job_tags(name, f).await;
        }
        let mut guard = self.catalog.write().await;
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
        let tags = self.with_tags(arn, |_| Ok(())).await?;
        Ok(json!({ "tags": tags }))
    }

    pub async fn tag_resource(&self, arn: &str, new: Tags) -> BatchResult<Value> {
        if new.is_empty() {
            return Err(BatchError::client("tags: at least one tag is required"));
        }
        v::tags("tags", &new)?;
        self.with_tags(arn, |t| {
            t.extend(new);
            Ok(())
        })
        .await?;
        Ok(json!({}))
    }

    pub async fn untag_resource(&self, arn: &str, keys: Vec<String>) -> BatchResult<Value> {
        if keys.is_empty() {
            return Err(BatchError::client("tagKeys: at least one key is required"));
        }
        self.with_tags(arn, move |t| {
            for k in &keys {
                t.remove(k);
            }
            Ok(())
        })
        .await?;
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
        let has_q = self.catalog.read().await.queues.contains_key("default");
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
