//! Compute environments, and the validation shared by the resources of the control plane.

use super::*;
use crate::model::validate as v;
use serde_json::{Value, json};

/// `CRAllocationStrategy`.
const ALLOCATION_STRATEGIES: [&str; 6] = [
    "BEST_FIT",
    "BEST_FIT_PROGRESSIVE",
    "BEST_FIT_PROGRESSIVE_ORDERED",
    "SPOT_CAPACITY_OPTIMIZED",
    "SPOT_PRICE_CAPACITY_OPTIMIZED",
    "SPOT_CAPACITY_OPTIMIZED_PRIORITIZED",
];

/// `CRUpdateAllocationStrategy`: an update cannot choose BEST_FIT, as in AWS Batch.
const UPDATE_ALLOCATION_STRATEGIES: [&str; 5] = [
    "BEST_FIT_PROGRESSIVE",
    "BEST_FIT_PROGRESSIVE_ORDERED",
    "SPOT_CAPACITY_OPTIMIZED",
    "SPOT_PRICE_CAPACITY_OPTIMIZED",
    "SPOT_CAPACITY_OPTIMIZED_PRIORITIZED",
];

/// `computeResources.allocationStrategy` `a` on compute resources of type `cr_type`: one of
/// `allowed`, the Spot strategies on SPOT only, BEST_FIT_PROGRESSIVE_ORDERED not on SPOT (AWS
/// documents both as such).
fn check_allocation_strategy(a: &str, cr_type: &str, allowed: &[&str]) -> BatchResult<()> {
    v::one_of("computeResources.allocationStrategy", a, allowed)?;
    if a.starts_with("SPOT_") && cr_type != "SPOT" {
        return Err(BatchError::client(format!(
            "computeResources.allocationStrategy: {a} applies only to SPOT compute resources"
        )));
    }
    if a == "BEST_FIT_PROGRESSIVE_ORDERED" && cr_type == "SPOT" {
        return Err(BatchError::client(format!(
            "computeResources.allocationStrategy: {a} applies only to EC2 (on-demand) compute resources"
        )));
    }
    Ok(())
}

pub(super) fn exists(what: &str, name: &str) -> BatchError {
    BatchError::client(format!("{what}: {name:?} already exists"))
}

/// Checks the vCPU bounds of a compute resource once defaults are applied.
/// `scalingPolicy` (checked) and `placementGroup` shape an EC2 fleet: a LOCAL environment,
/// which has none, refuses them rather than store them unused.
fn check_fleet_only(
    cr_type: &str,
    scaling_policy: Option<&serde_json::Value>,
    placement_group: Option<&str>,
    launch_template: Option<(&serde_json::Value, &[String])>,
) -> BatchResult<()> {
    if let Some(p) = scaling_policy {
        crate::model::scaling_policy::scale_down_delay_minutes(p).map_err(BatchError::client)?;
    }
    if cr_type == CR_TYPE_LOCAL {
        let member = if scaling_policy.is_some() {
            Some("scalingPolicy")
        } else if placement_group.is_some() {
            Some("placementGroup")
        } else if launch_template.is_some() {
            Some("launchTemplate")
        } else {
            None
        };
        if let Some(m) = member {
            return Err(BatchError::client(format!(
                "computeResources.{m}: a LOCAL compute environment runs on the server's own host \
                 and has no EC2 instances for it to apply to"
            )));
        }
    }
    if let Some((t, types)) = launch_template {
        crate::model::launch_template::parse(t, types).map_err(BatchError::client)?;
    }
    if let Some(g) = placement_group
        && (g.is_empty() || g.len() > 255)
    {
        return Err(BatchError::client(
            "computeResources.placementGroup: must be 1 to 255 characters",
        ));
    }
    Ok(())
}

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

        let mut guard = self.cat_mut().await;
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
            resolved_ec2_configuration: None,
            image_epoch: None,
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
            check_allocation_strategy(a, &t, &ALLOCATION_STRATEGIES)?;
        }
        // AWS Batch accepts a bid percentage on an EC2 environment and ignores it there; so does
        // Flotilla (docs/api-compatibility.md lists it), rather than refusing a template that
        // works against AWS.
        if let Some(b) = cr.bid_percentage {
            v::range("computeResources.bidPercentage", b.into(), 0, 100)?;
        }
        if let Some(c) = &cr.ec2_configuration {
            crate::model::ec2_configuration::parse(c).map_err(BatchError::client)?;
        }
        check_fleet_only(
            &t,
            cr.scaling_policy.as_ref(),
            cr.placement_group.as_deref(),
            cr.launch_template
                .as_ref()
                .map(|lt| (lt, cr.instance_types.as_deref().unwrap_or_default())),
        )?;
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

    pub(super) fn resolve_ce<'a>(
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
        let mut guard = self.cat_mut().await;
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
            // The driver resolves the AMIs of the updated resources again.
            ce.resolved_ec2_configuration = None;
            if upd.update_to_latest_image_version == Some(true) {
                if ce
                    .compute_resources
                    .as_ref()
                    .and_then(|c| c.cr_type.as_deref())
                    == Some(CR_TYPE_LOCAL)
                {
                    return Err(BatchError::client(
                        "computeResources.updateToLatestImageVersion: a LOCAL compute environment runs on the server's own host and has no AMI",
                    ));
                }
                // An infrastructure update of its own (the driver replaces the instances) with
                // the AMIs resolved afresh.
                ce.image_epoch = Some(ce.image_epoch.unwrap_or(0) + 1);
            }
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
                let t = cur.cr_type.as_deref().unwrap_or_default();
                check_allocation_strategy(a, t, &UPDATE_ALLOCATION_STRATEGIES)?;
            }
            if let Some(b) = upd.bid_percentage {
                v::range("computeResources.bidPercentage", b.into(), 0, 100)?;
            }
            if let Some(tags) = &upd.tags {
                v::tags("computeResources.tags", tags)?;
            }
            if let Some(c) = &upd.ec2_configuration {
                crate::model::ec2_configuration::parse(c).map_err(BatchError::client)?;
            }
            check_fleet_only(
                cur.cr_type.as_deref().unwrap_or_default(),
                upd.scaling_policy.as_ref(),
                upd.placement_group.as_deref(),
                upd.launch_template.as_ref().map(|lt| {
                    let types = upd
                        .instance_types
                        .as_deref()
                        .or(cur.instance_types.as_deref())
                        .unwrap_or_default();
                    (lt, types)
                }),
            )?;
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
        if let Some(p) = &req.update_policy {
            crate::model::update_policy::parse(p).map_err(BatchError::client)?;
            let fleet = ce
                .compute_resources
                .as_ref()
                .and_then(|c| c.cr_type.as_deref())
                .is_some_and(|t| t != CR_TYPE_LOCAL);
            if ce.ce_type != "MANAGED" || !fleet {
                return Err(BatchError::client(
                    "updatePolicy: applies to the instances of a MANAGED EC2 or SPOT compute environment; this one has none to replace",
                ));
            }
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
        let mut guard = self.cat_mut().await;
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
        let cat = self.cat().await;
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
                        .map(ComputeEnvironmentDetail::described)
                })
                .collect();
            return Ok(json!({ "computeEnvironments": found }));
        }
        let items = cat
            .compute_environments
            .iter()
            .map(|(k, v)| (k.clone(), v.described()))
            .collect();
        let scope = token::TokenScope::new("DescribeComputeEnvironments", []);
        let (page, token) =
            token::paginate(&scope, items, req.max_results, req.next_token.as_deref())?;
        Ok(json!({ "computeEnvironments": page, "nextToken": token }))
    }
}
