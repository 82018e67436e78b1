//! The fleet of a managed environment: the provisioner's plan for it carried out as CreateFleet
//! (one `clientToken` per launch) and drain → deregister → TerminateInstances, and the sweep of
//! instances whose environment no longer exists.

use super::{
    AwsDriver, AwsError, EnvState, TAG_ENV, TAG_ENV_UUID, TAG_GENERATION, TAG_MANAGED_BY, ec2_tag,
};
use crate::compute::fleet::Demand;
use crate::model::{ComputeEnvironmentDetail, ResourceState};
use crate::provisioner::{self, EnvSpec, Resources};
use crate::util::time::now_ms;
use aws_sdk_ec2::types as ec2t;
use aws_sdk_ecs::types as ecst;
use std::collections::{BTreeSet, HashSet};
use std::time::Instant;

impl AwsDriver {
    pub(super) async fn scale(
        &self,
        ce: &ComputeEnvironmentDetail,
        state: &mut EnvState,
        demand: &Demand,
    ) {
        let name = &ce.compute_environment_name;
        let Some(spec) = ce
            .compute_resources
            .as_ref()
            .and_then(EnvSpec::from_compute_resource)
        else {
            return;
        };
        let now = now_ms();
        let catalog = self.catalog();
        let delay_ms = ce
            .compute_resources
            .as_ref()
            .and_then(|c| c.scaling_policy.as_ref())
            .and_then(|p| {
                crate::model::scaling_policy::scale_down_delay_minutes(p)
                    .ok()
                    .flatten()
            })
            .map(|minutes| i64::from(minutes) * 60_000);
        let mut fleet = Vec::new();
        for o in &state.instances {
            let used = o
                .container_instance_arn
                .as_ref()
                .and_then(|a| demand.used_by_instance.get(a))
                .copied()
                .unwrap_or_default();
            let capacity = o
                .registered
                .or_else(|| catalog.get(&o.instance_type).map(|t| t.capacity()))
                .unwrap_or_default();
            let idle = used == Resources::default();
            let idle_since = if idle {
                Some(*state.idle_since.entry(o.instance_id.clone()).or_insert(now))
            } else {
                state.idle_since.remove(&o.instance_id);
                state.worked.insert(o.instance_id.clone());
                None
            };
            // The provisioner retires only instances whose `free` equals the catalog capacity.
            let free = if idle {
                catalog
                    .get(&o.instance_type)
                    .map(|t| t.capacity())
                    .unwrap_or(capacity)
            } else {
                capacity.saturating_sub(&used)
            };
            fleet.push(provisioner::Instance {
                id: o.instance_id.clone(),
                instance_type: o.instance_type.clone(),
                spot: o.spot,
                free,
                idle_since_ms: idle_since,
                idle_timeout_ms: delay_ms.filter(|_| state.worked.contains(&o.instance_id)),
                // An instance an infrastructure update replaces is no capacity to plan with:
                // demand gets new instances.
                draining: o.ci_status.as_deref() == Some("DRAINING")
                    || state.retiring.contains(&o.instance_id)
                    || o.outdated(&state.generation),
            });
        }
        let seen: HashSet<&str> = state
            .instances
            .iter()
            .map(|o| o.instance_id.as_str())
            .collect();
        state.idle_since.retain(|id, _| seen.contains(id.as_str()));
        state.worked.retain(|id| seen.contains(id.as_str()));
        let clock = Instant::now();
        state.unavailable.retain(|_, until| *until > clock);
        let enabled = ce.state == ResourceState::Enabled;
        // One entry per job, as the provisioner identifies jobs by index, but only as many of
        // each need as this round could place: a backlog of 100,000 plans like a thousand.
        let jobs = match demand.by_env.get(name) {
            Some(counts) if enabled => provisioner::capped_demand(&spec, &catalog, &fleet, counts),
            _ => Vec::new(),
        };
        let snapshot = provisioner::Snapshot {
            env: spec.clone(),
            catalog,
            fleet,
            demand: jobs,
            now_ms: now,
            idle_timeout_ms: self.opts.idle_timeout.as_millis() as i64,
            unavailable_pools: state.unavailable.keys().cloned().collect::<BTreeSet<_>>(),
        };
        let plan = provisioner::plan(&snapshot);
        for req in &plan.launch {
            self.launch(ce, state, req, spec.allocation_strategy).await;
        }
        for id in &plan.retire {
            self.retire(name, state, id, false).await;
        }
        self.replace_outdated(ce, state, demand).await;
        let desired = plan.desired_vcpus.min(i32::MAX as u64) as i32;
        if ce.compute_resources.as_ref().and_then(|c| c.desiredv_cpus) != Some(desired) {
            let _ = self.control.set_desired_vcpus(name, desired).await;
        }
    }

    async fn launch(
        &self,
        ce: &ComputeEnvironmentDetail,
        state: &mut EnvState,
        req: &provisioner::LaunchRequest,
        strategy: provisioner::AllocationStrategy,
    ) {
        // An override of the user's launch template serves the types it targets.
        let index = state
            .user_template
            .as_ref()
            .and_then(|lt| lt.override_for(&req.instance_type))
            .map_or(0, |(i, _)| i + 1);
        let Some(template) = state.templates.get(index).cloned() else {
            return;
        };
        let name = &ce.compute_environment_name;
        let Some(image) = self.image_of(ce, state, &req.instance_type).await else {
            return;
        };
        let itype = ec2t::InstanceType::from(req.instance_type.as_str());
        let mut config = ec2t::FleetLaunchTemplateConfigRequest::builder()
            .launch_template_specification(
                ec2t::FleetLaunchTemplateSpecificationRequest::builder()
                    .launch_template_name(&template)
                    .version("$Latest")
                    .build(),
            );
        if req.subnets.is_empty() {
            config = config.overrides(
                ec2t::FleetLaunchTemplateOverridesRequest::builder()
                    .instance_type(itype.clone())
                    .image_id(&image)
                    .build(),
            );
        }
        for subnet in &req.subnets {
            config = config.overrides(
                ec2t::FleetLaunchTemplateOverridesRequest::builder()
                    .instance_type(itype.clone())
                    .image_id(&image)
                    .subnet_id(subnet)
                    .build(),
            );
        }
        let capacity_type = if req.spot {
            ec2t::DefaultTargetCapacityType::Spot
        } else {
            ec2t::DefaultTargetCapacityType::OnDemand
        };
        let mut tags = ec2t::TagSpecification::builder()
            .resource_type(ec2t::ResourceType::Instance)
            .tags(ec2_tag(TAG_MANAGED_BY, "flotilla"))
            .tags(ec2_tag(TAG_ENV, name))
            .tags(ec2_tag(TAG_ENV_UUID, &state.uuid))
            .tags(ec2_tag(TAG_GENERATION, &state.generation));
        if let Some(user) = ce.compute_resources.as_ref().and_then(|c| c.tags.as_ref()) {
            for (k, v) in user {
                if !k.starts_with("flotilla:") && !k.starts_with("aws:") {
                    tags = tags.tags(ec2_tag(k, v));
                }
            }
        }
        // One token per logical launch: the SDK's retries of this call reuse it, so a retried
        // request that already landed cannot launch a second set.
        let token = uuid::Uuid::new_v4().to_string();
        let mut call = self
            .api
            .ec2
            .create_fleet()
            .r#type(ec2t::FleetType::Instant)
            .client_token(&token)
            .launch_template_configs(config.build())
            .target_capacity_specification(
                ec2t::TargetCapacitySpecificationRequest::builder()
                    .total_target_capacity(req.count as i32)
                    .default_target_capacity_type(capacity_type)
                    .build(),
            )
            .tag_specifications(tags.build());
        if req.spot {
            let alloc = match strategy {
                provisioner::AllocationStrategy::SpotCapacityOptimized => {
                    ec2t::SpotAllocationStrategy::CapacityOptimized
                }
                provisioner::AllocationStrategy::SpotPriceCapacityOptimized => {
                    ec2t::SpotAllocationStrategy::PriceCapacityOptimized
                }
                provisioner::AllocationStrategy::SpotCapacityOptimizedPrioritized => {
                    ec2t::SpotAllocationStrategy::CapacityOptimizedPrioritized
                }
                _ => ec2t::SpotAllocationStrategy::LowestPrice,
            };
            call = call.spot_options(
                ec2t::SpotOptionsRequest::builder()
                    .allocation_strategy(alloc)
                    .build(),
            );
        } else {
            // One type per request: the planner already chose it, in `instanceTypes` order for
            // BEST_FIT_PROGRESSIVE_ORDERED.
            let alloc = if strategy == provisioner::AllocationStrategy::BestFitProgressiveOrdered {
                ec2t::FleetOnDemandAllocationStrategy::Prioritized
            } else {
                ec2t::FleetOnDemandAllocationStrategy::LowestPrice
            };
            call = call.on_demand_options(
                ec2t::OnDemandOptionsRequest::builder()
                    .allocation_strategy(alloc)
                    .build(),
            );
        }
        tracing::info!(env = %name, instance_type = %req.instance_type, count = req.count, spot = req.spot, "launching instances");
        let until = Instant::now() + self.opts.capacity_backoff;
        match self.api.call("ec2", "CreateFleet", call.send()).await {
            Ok(out) => {
                let launched: usize = out.instances().iter().map(|i| i.instance_ids().len()).sum();
                for e in out.errors() {
                    let subnet = e
                        .launch_template_and_overrides()
                        .and_then(|l| l.overrides())
                        .and_then(|o| o.subnet_id())
                        .map(str::to_string);
                    tracing::warn!(env = %name, code = ?e.error_code(), message = ?e.error_message(), ?subnet, "create fleet error");
                    state
                        .unavailable
                        .insert((req.instance_type.clone(), subnet), until);
                }
                if launched < req.count as usize && out.errors().is_empty() {
                    // Partial fulfilment without a reason: treat the pool as short of capacity.
                    state
                        .unavailable
                        .insert((req.instance_type.clone(), None), until);
                }
                tracing::info!(env = %name, launched, wanted = req.count, "instances launched");
            }
            Err(e) if e.code.contains("InsufficientInstanceCapacity") => {
                state
                    .unavailable
                    .insert((req.instance_type.clone(), None), until);
            }
            Err(e) if !e.retryable => {
                tracing::warn!(env = %name, error = %e, "create fleet refused; environment invalid");
                state.invalid = Some(format!(
                    "CLIENT_ERROR - {e} (fix the environment with UpdateComputeEnvironment)"
                ));
            }
            Err(e) => tracing::warn!(env = %name, error = %e, "create fleet failed"),
        }
    }

    /// The AMI `instance_type` launches with: as resolved at setup, or (a type the catalog
    /// refresh added since) resolved now through the cache. `None` (logged) skips the launch
    /// until a later pass.
    async fn image_of(
        &self,
        ce: &ComputeEnvironmentDetail,
        state: &mut EnvState,
        instance_type: &str,
    ) -> Option<String> {
        if let Some(r) = state.images.get(instance_type) {
            return Some(r.image_id.clone());
        }
        let catalog = self.catalog();
        let t = catalog.get(instance_type)?;
        let cr = ce.compute_resources.clone().unwrap_or_default();
        match self
            .resolve_images(&cr, &[t], &state.template_amis, false)
            .await
        {
            Ok(mut m) => {
                let r = m.remove(instance_type)?;
                let id = r.image_id.clone();
                state.images.insert(instance_type.to_string(), r);
                Some(id)
            }
            Err(super::environments::Setup::Invalid(reason)) => {
                tracing::warn!(env = %ce.compute_environment_name, instance_type, %reason, "no AMI for instance type");
                None
            }
            Err(super::environments::Setup::Aws(e)) => {
                tracing::warn!(env = %ce.compute_environment_name, instance_type, error = %e, "cannot resolve AMI");
                None
            }
        }
    }

    /// An infrastructure update replaces the instances launched before it: each is terminated
    /// once it runs no job, or, with the update policy's `terminateJobsOnUpdate`, once
    /// `jobExecutionTimeoutMinutes` have passed since it was first seen outdated (its jobs go
    /// back to RUNNABLE, as after a Spot interruption, and run on the new instances).
    async fn replace_outdated(
        &self,
        ce: &ComputeEnvironmentDetail,
        state: &mut EnvState,
        demand: &Demand,
    ) {
        let name = &ce.compute_environment_name;
        let policy = ce
            .update_policy
            .as_ref()
            .and_then(|p| crate::model::update_policy::parse(p).ok())
            .unwrap_or_default();
        let timeout = std::time::Duration::from_secs(policy.timeout_minutes as u64 * 60);
        let now = Instant::now();
        let outdated: Vec<(String, bool)> = state
            .instances
            .iter()
            .filter(|o| o.outdated(&state.generation))
            .map(|o| {
                let busy = o
                    .container_instance_arn
                    .as_ref()
                    .is_some_and(|a| demand.used_by_instance.contains_key(a));
                (o.instance_id.clone(), busy)
            })
            .collect();
        state
            .outdated_since
            .retain(|id, _| outdated.iter().any(|(o, _)| o == id));
        for (id, busy) in outdated {
            if state.retiring.contains(&id) {
                continue;
            }
            let since = *state.outdated_since.entry(id.clone()).or_insert(now);
            if !busy {
                tracing::info!(env = %name, instance_id = %id, "infrastructure update: replacing an idle instance");
                self.retire(name, state, &id, false).await;
            } else if policy.terminate_jobs_on_update && now.duration_since(since) >= timeout {
                tracing::info!(env = %name, instance_id = %id, timeout_minutes = policy.timeout_minutes,
                    "infrastructure update: terminateJobsOnUpdate, stopping the jobs still running on an old instance");
                self.retire(name, state, &id, true).await;
            }
        }
    }

    /// Drains, deregisters and terminates an instance. Unless `force`, only when the engine
    /// has nothing on it.
    async fn retire(&self, env: &str, state: &mut EnvState, instance_id: &str, force: bool) {
        let ci = state
            .instances
            .iter()
            .find(|o| o.instance_id == instance_id)
            .and_then(|o| o.container_instance_arn.clone());
        // The plan saw the engine's demand as published before this pass; the engine may have
        // placed a job here since. Look again, and take the instance out of the engine's view
        // before draining it, so that nothing new lands on it.
        if !force
            && let Some(arn) = &ci
            && self.fleet.demand().used_by_instance.contains_key(arn)
        {
            return;
        }
        if let Some(mut f) = self.fleet.env(env) {
            f.instances.retain(|i| i.instance_id != instance_id);
            self.fleet.set_env(env, Some(f));
        }
        tracing::info!(instance_id, force, "retiring instance");
        state.retiring.insert(instance_id.to_string());
        if let Ok(mut r) = self.retired.lock() {
            r.insert(instance_id.to_string());
        }
        // Forced, with tasks on it: terminate without deregistering first, so that ECS stops
        // them as on any lost host ("Host EC2 (instance …) terminated.") and the task loop,
        // knowing the host retired, hands their jobs back to the engine rather than failing
        // them. ECS makes the container instance INACTIVE itself.
        if let Some(arn) = ci.filter(|_| !force) {
            let _ = self
                .api
                .call(
                    "ecs",
                    "UpdateContainerInstancesState",
                    self.api
                        .ecs
                        .update_container_instances_state()
                        .cluster(&state.cluster)
                        .container_instances(&arn)
                        .status(ecst::ContainerInstanceStatus::Draining)
                        .send(),
                )
                .await;
            self.deregister(&state.cluster, &arn).await;
        }
        if let Err(e) = self.terminate(&[instance_id.to_string()]).await {
            // Still marked retiring, so not offered to the engine; the next plan retries.
            state.retiring.remove(instance_id);
            tracing::warn!(instance_id, error = %e, "terminate failed");
        }
    }

    /// Deregisters a container instance even with tasks on it (they are stopped or already
    /// gone); best effort: a failure leaves it for the next pass or the orphan sweep.
    pub(super) async fn deregister(&self, cluster: &str, container_instance_arn: &str) {
        let r = self
            .api
            .call(
                "ecs",
                "DeregisterContainerInstance",
                self.api
                    .ecs
                    .deregister_container_instance()
                    .cluster(cluster)
                    .container_instance(container_instance_arn)
                    .force(true)
                    .send(),
            )
            .await;
        if let Err(e) = r {
            tracing::debug!(error = %e, "deregister failed");
        }
    }

    pub(super) async fn terminate(&self, ids: &[String]) -> Result<(), AwsError> {
        if ids.is_empty() {
            return Ok(());
        }
        for chunk in ids.chunks(500) {
            self.api
                .call(
                    "ec2",
                    "TerminateInstances",
                    self.api
                        .ec2
                        .terminate_instances()
                        .set_instance_ids(Some(chunk.to_vec()))
                        .send(),
                )
                .await?;
        }
        Ok(())
    }

    /// Terminates instances tagged as Flotilla's whose environment no longer exists (deleted
    /// while this server was down, or a launch that landed after the deletion).
    pub(super) async fn sweep_orphans(&self, live: &HashSet<String>) -> Result<(), AwsError> {
        let tagged = self
            .describe_instances(vec![
                ec2t::Filter::builder()
                    .name(format!("tag:{TAG_MANAGED_BY}"))
                    .values("flotilla")
                    .build(),
                ec2t::Filter::builder()
                    .name("instance-state-name")
                    .values("pending")
                    .values("running")
                    .values("stopping")
                    .values("stopped")
                    .build(),
            ])
            .await?;
        let orphans: Vec<String> = tagged
            .iter()
            .filter(|i| {
                let uuid = i
                    .tags()
                    .iter()
                    .find(|t| t.key() == Some(TAG_ENV_UUID))
                    .and_then(|t| t.value());
                uuid.is_some_and(|u| !live.contains(u))
            })
            .filter_map(|i| i.instance_id().map(str::to_string))
            .collect();
        if !orphans.is_empty() {
            tracing::warn!(
                count = orphans.len(),
                ?orphans,
                "terminating orphaned instances"
            );
            self.terminate(&orphans).await?;
        }
        Ok(())
    }
}
