//! Starting an attempt: the job placed in the table, and the [`AttemptSpec`] a runtime needs,
//! with the `AWS_BATCH_*` environment AWS Batch gives every container.

use super::Engine;
use super::job::Job;
use super::table::Placement;
use crate::compute::{AttemptSpec, Target};
use crate::model::arn::{JOB_LOG_GROUP, stream_name};

/// Where the engine decided to start a job.
pub(super) struct Start {
    pub job_id: String,
    /// Compute environment name.
    pub env: String,
    /// Job queue name.
    pub queue: String,
    pub target: Target,
    /// The instance's price and the attempt's share of it (AWS environments Flotilla manages).
    pub host: Option<crate::model::AttemptCost>,
}

impl Engine {
    /// Moves a RUNNABLE job to STARTING on `start.target` and queues its launch for after the
    /// round's write.
    pub(super) fn start_attempt(&mut self, start: Start, now: i64) {
        let Start {
            job_id,
            env,
            queue,
            target,
            host,
        } = start;
        let task_id = uuid::Uuid::new_v4().simple().to_string();
        let instance = match &target {
            Target::Ecs {
                container_instance_arn,
                ..
            } => Some(container_instance_arn.clone()),
            Target::Local => None,
        };
        let placement = Placement {
            env: env.clone(),
            instance,
            task_id: task_id.clone(),
            host,
        };
        if !self.table.start(&job_id, placement, now) {
            return;
        }
        let Some(job) = self.table.get(&job_id) else {
            return;
        };
        tracing::info!(%job_id, attempt = job.attempt_no(), %env, "job starting");
        // A child's array size is its parent's, which is unfinished (and so in the table)
        // while any child runs.
        let array_size = job
            .parent
            .as_ref()
            .and_then(|(p, _)| self.table.get(p))
            .and_then(|p| p.d.array_properties.as_ref())
            .and_then(|a| a.size);
        let ctx = Context {
            queue: &queue,
            env: &env,
            region: &self.cfg.region,
            array_size,
        };
        let spec = attempt_spec(job, task_id, &ctx, target);
        self.effects.launch(spec);
    }
}

/// Where an attempt runs, for the environment AWS Batch and ECS give the container.
struct Context<'a> {
    queue: &'a str,
    env: &'a str,
    region: &'a str,
    array_size: Option<i32>,
}

/// What ECS sets in a container on an EC2 instance; clients read it (Metaflow's `@batch`
/// fails without it), and Flotilla's LOCAL runtimes stand in for the same thing.
const EXECUTION_ENV: &str = "AWS_ECS_EC2";

/// What a runtime needs to run `job`'s next attempt.
fn attempt_spec(job: &Job, task_id: String, ctx: &Context<'_>, target: Target) -> AttemptSpec {
    let id = job.d.job_id.as_str();
    let attempt = job.attempt_no();
    let props = job
        .d
        .container
        .as_ref()
        .map(|c| c.properties.clone())
        .unwrap_or_default();
    let mut env_vars: Vec<(String, String)> = props
        .environment
        .iter()
        .flatten()
        .filter_map(|kv| Some((kv.name.clone()?, kv.value.clone().unwrap_or_default())))
        .collect();
    // The definition's own AWS_REGION etc. win, as a container's environment does on ECS.
    for (k, v) in [
        ("AWS_EXECUTION_ENV", EXECUTION_ENV),
        ("AWS_REGION", ctx.region),
        ("AWS_DEFAULT_REGION", ctx.region),
    ] {
        if !env_vars.iter().any(|(n, _)| n == k) {
            env_vars.push((k.into(), v.into()));
        }
    }
    env_vars.push(("AWS_BATCH_JOB_ID".into(), id.to_string()));
    env_vars.push(("AWS_BATCH_JOB_ATTEMPT".into(), attempt.to_string()));
    env_vars.push(("AWS_BATCH_JQ_NAME".into(), ctx.queue.to_string()));
    env_vars.push(("AWS_BATCH_CE_NAME".into(), ctx.env.to_string()));
    if let Some((_, i)) = &job.parent {
        env_vars.push(("AWS_BATCH_JOB_ARRAY_INDEX".into(), i.to_string()));
        if let Some(n) = ctx.array_size {
            env_vars.push(("AWS_BATCH_JOB_ARRAY_SIZE".into(), n.to_string()));
        }
    }
    AttemptSpec {
        job_id: id.to_string(),
        attempt,
        log_stream: stream_name(&job.d.job_definition, &task_id),
        task_id,
        image: props.image.clone(),
        command: props.command.clone().unwrap_or_default(),
        env: env_vars,
        milli_vcpus: job.need.milli_vcpus,
        memory_mib: job.need.memory_mib,
        log_group: JOB_LOG_GROUP.to_string(),
        job_definition: job.d.job_definition.clone(),
        target,
        container: props,
        tags: job.d.internal.propagated_tags.clone().unwrap_or_default(),
    }
}
