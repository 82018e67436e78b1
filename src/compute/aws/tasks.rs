//! Attempts as ECS tasks: [`Runtime`] (StartTask with `startedBy` naming the attempt, StopTask,
//! recovery by `startedBy` after a restart) and the task loop (DescribeTasks in batches of 100,
//! `Started` / `Exited` / `Interrupted` events, telling a Spot reclaim from a lost host).

use super::{AwsDriver, AwsError, CONTAINER, Tracked, started_by};
use crate::compute::{
    AttemptSpec, ExpectedAttempt, Runtime, RuntimeError, RuntimeEvent, StopSignal, Target,
};
use crate::model::arn::name_of_arn;
use aws_sdk_ec2::types as ec2t;
use aws_sdk_ecs::types as ecst;
use std::collections::HashMap;
use std::time::Duration;

const SPOT_TERMINATION: &str = "Server.SpotInstanceTermination";

/// The instance ID in ECS's "Host EC2 (instance i-…) terminated." reason.
fn host_of(stopped_reason: &str) -> Option<&str> {
    stopped_reason
        .strip_prefix("Host EC2 (instance ")
        .and_then(|r| r.split(')').next())
}

impl AwsDriver {
    fn untrack(&self, job_id: &str, attempt: u32) -> bool {
        let Ok(mut t) = self.tasks.lock() else {
            return false;
        };
        if t.get(job_id).is_some_and(|x| x.attempt == attempt) {
            t.remove(job_id);
            return true;
        }
        false
    }

    fn not_started(&self, job_id: &str, attempt: u32, reason: String) {
        if self.untrack(job_id, attempt) {
            tracing::info!(job_id, attempt, %reason, "attempt not started");
            self.emit(RuntimeEvent::NotStarted {
                job_id: job_id.to_string(),
                attempt,
                reason,
            });
        }
    }

    fn failed_to_start(&self, job_id: &str, attempt: u32, reason: String) {
        if self.untrack(job_id, attempt) {
            tracing::warn!(job_id, attempt, %reason, "attempt failed to start");
            self.emit(RuntimeEvent::Exited {
                job_id: job_id.to_string(),
                attempt,
                exit_code: None,
                reason: Some(reason),
            });
        }
    }

    async fn find_task(&self, cluster: &str, key: &str) -> Result<Option<String>, AwsError> {
        for status in [ecst::DesiredStatus::Running, ecst::DesiredStatus::Stopped] {
            let out = self
                .api
                .call(
                    "ecs",
                    "ListTasks",
                    self.api
                        .ecs
                        .list_tasks()
                        .cluster(cluster)
                        .started_by(key)
                        .desired_status(status)
                        .send(),
                )
                .await?;
            if let Some(arn) = out.task_arns().first() {
                return Ok(Some(arn.clone()));
            }
        }
        Ok(None)
    }

    /// Records the task of an attempt; reports `Started` when ECS already says RUNNING.
    fn adopt(&self, job_id: &str, attempt: u32, arn: String, running: bool) -> bool {
        {
            let Ok(mut t) = self.tasks.lock() else {
                return false;
            };
            let Some(x) = t.get_mut(job_id).filter(|x| x.attempt == attempt) else {
                return false;
            };
            x.task_arn = Some(arn.clone());
            x.adopting = false;
            if running && !x.started {
                x.started = true;
                self.emit(RuntimeEvent::Started {
                    job_id: job_id.to_string(),
                    attempt,
                    task_id: arn,
                });
            }
            x.stop_pending
        }
    }

    async fn stop_task(&self, cluster: &str, arn: &str) -> Result<(), RuntimeError> {
        self.api
            .call(
                "ecs",
                "StopTask",
                self.api
                    .ecs
                    .stop_task()
                    .cluster(cluster)
                    .task(arn)
                    .reason("Terminated by Flotilla: the job was terminated or timed out")
                    .send(),
            )
            .await
            .map(|_| ())
            .map_err(|e| RuntimeError::Unavailable(e.to_string()))
    }

    pub(super) async fn poll_tasks(&self) {
        let mut by_cluster: HashMap<String, Vec<(String, u32, String)>> = HashMap::new();
        let mut adopting = Vec::new();
        if let Ok(t) = self.tasks.lock() {
            for (job, x) in t.iter() {
                match &x.task_arn {
                    Some(arn) => by_cluster.entry(x.cluster.clone()).or_default().push((
                        job.clone(),
                        x.attempt,
                        arn.clone(),
                    )),
                    None if x.adopting => {
                        adopting.push((job.clone(), x.attempt, x.cluster.clone()))
                    }
                    None => {}
                }
            }
        }
        for (job, attempt, cluster) in adopting {
            match self.find_task(&cluster, &started_by(&job, attempt)).await {
                Ok(Some(arn)) => {
                    tracing::info!(job_id = %job, attempt, task = %arn, "adopted running task");
                    self.adopt(&job, attempt, arn, false);
                }
                Ok(None) => self.not_started(
                    &job,
                    attempt,
                    "the server restarted before ECS started this attempt; it was never run".into(),
                ),
                Err(e) => tracing::warn!(job_id = %job, error = %e, "task lookup failed; retrying"),
            }
        }
        for (cluster, list) in by_cluster {
            for chunk in list.chunks(100) {
                let arns: Vec<String> = chunk.iter().map(|(_, _, a)| a.clone()).collect();
                let out = match self
                    .api
                    .call(
                        "ecs",
                        "DescribeTasks",
                        self.api
                            .ecs
                            .describe_tasks()
                            .cluster(&cluster)
                            .set_tasks(Some(arns))
                            .send(),
                    )
                    .await
                {
                    Ok(o) => o,
                    Err(e) => {
                        tracing::warn!(%cluster, error = %e, "describe tasks failed; retrying next round");
                        continue;
                    }
                };
                let by_arn: HashMap<&str, (&str, u32)> = chunk
                    .iter()
                    .map(|(j, a, arn)| (arn.as_str(), (j.as_str(), *a)))
                    .collect();
                for task in out.tasks() {
                    let Some(&(job, attempt)) = task.task_arn().and_then(|a| by_arn.get(a)) else {
                        continue;
                    };
                    self.observe_task(job, attempt, task).await;
                }
                for f in out.failures() {
                    if let Some(&(job, attempt)) = f.arn().and_then(|a| by_arn.get(a)) {
                        self.failed_to_start(
                            job,
                            attempt,
                            format!(
                                "ECS has no record of the task: {}",
                                f.reason().unwrap_or("MISSING")
                            ),
                        );
                    }
                }
            }
        }
    }

    async fn observe_task(&self, job: &str, attempt: u32, task: &ecst::Task) {
        let arn = task.task_arn().unwrap_or_default().to_string();
        match task.last_status() {
            Some("STOPPED") => {
                let container = task
                    .containers()
                    .iter()
                    .find(|c| c.name() == Some(CONTAINER))
                    .or_else(|| task.containers().first());
                let exit_code = container.and_then(|c| c.exit_code());
                let stopped = task.stopped_reason().unwrap_or_default().to_string();
                if exit_code.is_none()
                    && stopped.starts_with("Host EC2 (instance")
                    && (self.retired_host(&stopped) || self.spot_reclaimed(&stopped).await)
                {
                    if self.untrack(job, attempt) {
                        tracing::warn!(job_id = job, attempt, reason = %stopped, "host reclaimed (spot interruption or a scale-in race)");
                        self.emit(RuntimeEvent::Interrupted {
                            job_id: job.to_string(),
                            attempt,
                            reason: stopped,
                        });
                    }
                    return;
                }
                let started = self
                    .tasks
                    .lock()
                    .ok()
                    .and_then(|t| t.get(job).map(|x| x.started))
                    .unwrap_or(false);
                if !self.untrack(job, attempt) {
                    return;
                }
                if !started && task.started_at().is_some() {
                    self.emit(RuntimeEvent::Started {
                        job_id: job.to_string(),
                        attempt,
                        task_id: arn,
                    });
                }
                let reason = container
                    .and_then(|c| c.reason())
                    .map(str::to_string)
                    .or_else(|| exit_code.is_none().then(|| stopped.clone()))
                    .filter(|r| !r.is_empty());
                self.emit(RuntimeEvent::Exited {
                    job_id: job.to_string(),
                    attempt,
                    exit_code,
                    reason,
                });
            }
            Some("RUNNING") => {
                self.adopt(job, attempt, arn, true);
            }
            _ => {}
        }
    }

    fn retired_host(&self, stopped_reason: &str) -> bool {
        host_of(stopped_reason).is_some_and(|id| self.retired.lock().is_ok_and(|r| r.contains(id)))
    }

    /// Whether the host named in a "Host EC2 (instance i-…) terminated." reason was a Spot
    /// instance that EC2 reclaimed (not one Flotilla retired, not an on-demand host lost).
    async fn spot_reclaimed(&self, stopped_reason: &str) -> bool {
        let Some(id) = host_of(stopped_reason) else {
            return false;
        };
        if let Some(code) = self.gone.lock().ok().and_then(|g| g.get(id).cloned()) {
            return code == SPOT_TERMINATION;
        }
        let out = self
            .api
            .call(
                "ec2",
                "DescribeInstances",
                self.api.ec2.describe_instances().instance_ids(id).send(),
            )
            .await;
        let Ok(out) = out else {
            // Unknown: a Spot environment's host most likely went the Spot way; the attempt is
            // retried either way, this only decides whether it counts.
            return false;
        };
        let inst = out.reservations().iter().flat_map(|r| r.instances()).next();
        let code = inst
            .and_then(|i| i.state_reason())
            .and_then(|s| s.code())
            .unwrap_or_default()
            .to_string();
        let spot = inst
            .is_some_and(|i| i.instance_lifecycle() == Some(&ec2t::InstanceLifecycleType::Spot));
        let reclaimed = code == SPOT_TERMINATION || (spot && code.starts_with("Server."));
        if let Ok(mut g) = self.gone.lock() {
            g.insert(
                id.to_string(),
                if reclaimed {
                    SPOT_TERMINATION.to_string()
                } else {
                    code
                },
            );
        }
        reclaimed
    }
}

#[async_trait::async_trait]
impl Runtime for AwsDriver {
    fn name(&self) -> &'static str {
        "ecs"
    }

    async fn start(&self, spec: AttemptSpec) -> Result<(), RuntimeError> {
        let Target::Ecs {
            cluster,
            container_instance_arn,
            ..
        } = spec.target.clone()
        else {
            return Err(RuntimeError::Rejected("not an ECS attempt".into()));
        };
        let (job_id, attempt) = (spec.job_id.clone(), spec.attempt);
        if let Ok(mut t) = self.tasks.lock() {
            t.insert(
                job_id.clone(),
                Tracked {
                    attempt,
                    cluster: cluster.clone(),
                    task_arn: None,
                    started: false,
                    stop_pending: false,
                    adopting: false,
                },
            );
        }
        let td = match self.task_definition(&spec).await {
            Ok(td) => td,
            Err(e) if e.retryable => {
                self.not_started(&job_id, attempt, format!("waiting for AWS: {e}"));
                return Ok(());
            }
            Err(e) => {
                self.failed_to_start(&job_id, attempt, format!("CannotCreateTaskDefinition: {e}"));
                return Ok(());
            }
        };
        let key = started_by(&job_id, attempt);
        let overrides = ecst::TaskOverride::builder()
            .container_overrides(
                ecst::ContainerOverride::builder()
                    .name(CONTAINER)
                    .set_command((!spec.command.is_empty()).then(|| spec.command.clone()))
                    .set_environment(Some(
                        spec.env
                            .iter()
                            .map(|(k, v)| ecst::KeyValuePair::builder().name(k).value(v).build())
                            .collect(),
                    ))
                    .build(),
            )
            .build();
        // Tags go on the task itself; the task definition carries none, so there is nothing
        // for ECS to propagate from it.
        let tags: Vec<ecst::Tag> = spec
            .tags
            .iter()
            .map(|(k, v)| ecst::Tag::builder().key(k).value(v).build())
            .collect();
        let mut tries = 0;
        loop {
            let r = self
                .api
                .call(
                    "ecs",
                    "StartTask",
                    self.api
                        .ecs
                        .start_task()
                        .cluster(&cluster)
                        .task_definition(&td)
                        .container_instances(&container_instance_arn)
                        .started_by(&key)
                        .overrides(overrides.clone())
                        .set_tags((!tags.is_empty()).then(|| tags.clone()))
                        .send(),
                )
                .await;
            match r {
                Ok(out) => {
                    if let Some(task) = out.tasks().first() {
                        let arn = task.task_arn().unwrap_or_default().to_string();
                        let running = task.last_status() == Some("RUNNING");
                        tracing::info!(%job_id, attempt, task = %arn, "ecs task started");
                        if self.adopt(&job_id, attempt, arn.clone(), running) {
                            self.stop_task(&cluster, &arn).await?;
                        }
                        return Ok(());
                    }
                    let reason = out
                        .failures()
                        .first()
                        .map(|f| {
                            format!(
                                "StartTask on {}: {}{}",
                                name_of_arn(&container_instance_arn),
                                f.reason().unwrap_or("failed"),
                                f.detail().map(|d| format!(" ({d})")).unwrap_or_default()
                            )
                        })
                        .unwrap_or_else(|| "StartTask returned no task".into());
                    self.not_started(&job_id, attempt, reason);
                    return Ok(());
                }
                Err(e) if e.retryable && tries < 3 => {
                    tries += 1;
                    // The call may have landed: look for the attempt's task before trying again.
                    if let Ok(Some(arn)) = self.find_task(&cluster, &key).await {
                        if self.adopt(&job_id, attempt, arn.clone(), false) {
                            self.stop_task(&cluster, &arn).await?;
                        }
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(200 * (1 << tries))).await;
                }
                Err(e) if e.retryable => {
                    self.not_started(&job_id, attempt, format!("waiting for AWS: {e}"));
                    return Ok(());
                }
                Err(e) => {
                    self.failed_to_start(&job_id, attempt, format!("CannotStartTask: {e}"));
                    return Ok(());
                }
            }
        }
    }

    async fn stop(
        &self,
        job_id: &str,
        attempt: u32,
        _signal: StopSignal,
    ) -> Result<(), RuntimeError> {
        // ECS sends SIGTERM, then SIGKILL after the agent's stop timeout: one StopTask does both,
        // and a second (for the engine's SIGKILL) is harmless.
        let target = {
            let Ok(mut t) = self.tasks.lock() else {
                return Ok(());
            };
            let Some(x) = t.get_mut(job_id).filter(|x| x.attempt == attempt) else {
                return Ok(());
            };
            match &x.task_arn {
                Some(arn) => Some((x.cluster.clone(), arn.clone())),
                None => {
                    x.stop_pending = true;
                    None
                }
            }
        };
        match target {
            Some((cluster, arn)) => self.stop_task(&cluster, &arn).await,
            None => Ok(()),
        }
    }

    async fn recover(&self, expected: Vec<ExpectedAttempt>) -> Result<(), RuntimeError> {
        let Ok(mut t) = self.tasks.lock() else {
            return Ok(());
        };
        for e in expected {
            let Target::Ecs { cluster, .. } = e.target else {
                continue;
            };
            // The task loop finds each by `startedBy`, then follows it as usual.
            t.insert(
                e.job_id,
                Tracked {
                    attempt: e.attempt,
                    cluster,
                    task_arn: None,
                    started: false,
                    stop_pending: false,
                    adopting: true,
                },
            );
        }
        Ok(())
    }
}
