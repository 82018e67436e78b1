//! SubmitJob, DescribeJobs, ListJobs, CancelJob, TerminateJob, job tags, queue snapshots.

use super::dispatch::{StopResult, TagFn, TagsReply};
use super::*;
use crate::model::validate as v;
use crate::store::{JobListQuery, JobScope};
use serde_json::{Value, json};
use std::collections::HashMap;
use tracing::Instrument;

/// Replaces each `Ref::name` inside each argument with the parameter's value, as AWS Batch does
/// (`"--input=Ref::input"`, `"echo Ref::who"`). At a `Ref::` the longest parameter name that
/// follows wins, so `Ref::input` is not read as `Ref::in` + `put` when both exist; a reference to
/// no parameter stays as written, and substituted values are not scanned again.
pub fn substitute_parameters(command: &[String], params: &BTreeMap<String, String>) -> Vec<String> {
    command
        .iter()
        .map(|arg| substitute_arg(arg, params))
        .collect()
}

fn substitute_arg(arg: &str, params: &BTreeMap<String, String>) -> String {
    const MARK: &str = "Ref::";
    if !arg.contains(MARK) {
        return arg.to_string();
    }
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(at) = rest.find(MARK) {
        out.push_str(&rest[..at]);
        let after = &rest[at + MARK.len()..];
        let hit = params
            .iter()
            .filter(|(name, _)| !name.is_empty() && after.starts_with(name.as_str()))
            .max_by_key(|(name, _)| name.len());
        match hit {
            Some((name, value)) => {
                out.push_str(value);
                rest = &after[name.len()..];
            }
            None => {
                out.push_str(MARK);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The container a job runs: the definition's properties with SubmitJob's overrides applied.
fn effective_container(
    jd: &ContainerProperties,
    ov: Option<&ContainerOverrides>,
    params: &BTreeMap<String, String>,
) -> ContainerDetail {
    let mut props = jd.clone();
    if let Some(ov) = ov {
        if let Some(c) = &ov.command {
            props.command = Some(c.clone());
        }
        if let Some(env) = &ov.environment {
            let mut merged = props.environment.clone().unwrap_or_default();
            for kv in env {
                merged.retain(|e| e.name != kv.name);
                merged.push(kv.clone());
            }
            props.environment = Some(merged);
        }
        if let Some(rr) = &ov.resource_requirements {
            let mut merged = props.resource_requirements.clone().unwrap_or_default();
            for r in rr {
                merged.retain(|e| e.rtype != r.rtype);
                merged.push(r.clone());
            }
            props.resource_requirements = Some(merged);
        }
        if ov.vcpus.is_some() {
            props.vcpus = ov.vcpus;
        }
        if ov.memory.is_some() {
            props.memory = ov.memory;
        }
        if ov.instance_type.is_some() {
            props.instance_type = ov.instance_type.clone();
        }
    }
    if let Some(cmd) = &props.command {
        props.command = Some(substitute_parameters(cmd, params));
    }
    ContainerDetail {
        properties: std::sync::Arc::new(props),
        ..Default::default()
    }
}

/// Whether a job ID, name or ARN can match a stored job. None contains NUL (IDs are UUIDs, names
/// and ARNs are validated), and PostgreSQL refuses NUL in a text parameter, so lookups of such
/// values must answer "not found" without asking the store.
/// CancelJobs and TerminateJobs take at most this many IDs.
const MAX_BULK_STOP: usize = 50;
/// Longer than any job ID Flotilla or AWS Batch hands out (an array child's is a UUID plus
/// `:index`).
const MAX_JOB_ID_LEN: usize = 128;
/// AWS Batch's limit on a cancel or terminate reason.
const MAX_STOP_REASON: usize = 1024;

/// The tags a job's ECS tasks carry when it propagates tags: the definition's, with the job's
/// winning a shared key (as AWS Batch does).
fn propagated_tags(req: &SubmitJobRequest, jd: &JobDefinition) -> Option<Tags> {
    if req.propagate_tags.or(jd.propagate_tags) != Some(true) {
        return None;
    }
    let mut tags = jd.tags.clone().unwrap_or_default();
    tags.extend(req.tags.clone().unwrap_or_default());
    (!tags.is_empty()).then_some(tags)
}

fn check_stop_reason(reason: &str) -> BatchResult<()> {
    if reason.is_empty() {
        return Err(BatchError::client("reason: is required"));
    }
    if reason.chars().count() > MAX_STOP_REASON {
        return Err(BatchError::client(format!(
            "reason: at most {MAX_STOP_REASON} characters, got {}",
            reason.chars().count()
        )));
    }
    Ok(())
}

fn may_exist(s: &str) -> bool {
    !s.contains('\0')
}

fn all_status_summary(counts: &[(String, i64)]) -> BTreeMap<String, i32> {
    let mut m: BTreeMap<String, i32> = JOB_STATUSES.iter().map(|s| (s.to_string(), 0)).collect();
    for (s, n) in counts {
        m.insert(s.clone(), i32::try_from(*n).unwrap_or(i32::MAX));
    }
    m
}

impl Batch {
    #[tracing::instrument(skip_all, fields(job_name = %req.job_name, job_queue = %req.job_queue))]
    pub async fn submit_job(self: &Arc<Self>, req: SubmitJobRequest) -> BatchResult<Value> {
        v::submit_job(&req)?;
        let (queue, jd) = self
            .with_hot_catalog(|cat| {
                let q = self.resolve_queue(cat, &req.job_queue, "jobQueue")?;
                if q.state != ResourceState::Enabled {
                    return Err(BatchError::client(format!(
                        "jobQueue: {:?} is DISABLED and accepts no new jobs",
                        q.job_queue_name
                    )));
                }
                let has_policy = q.scheduling_policy_arn.is_some();
                match (&req.share_identifier, has_policy) {
                    (None, true) => {
                        return Err(BatchError::client(format!(
                            "shareIdentifier: is required: job queue {:?} has a fair-share scheduling policy",
                            q.job_queue_name
                        )));
                    }
                    (Some(_), false) => {
                        return Err(BatchError::client(format!(
                            "shareIdentifier: job queue {:?} has no fair-share scheduling policy",
                            q.job_queue_name
                        )));
                    }
                    _ => {}
                }
                if req.scheduling_priority_override.is_some() && !has_policy {
                    return Err(BatchError::client(format!(
                        "schedulingPriorityOverride: job queue {:?} has no fair-share scheduling policy",
                        q.job_queue_name
                    )));
                }
                let jd = self.resolve_job_definition(cat, &req.job_definition, "jobDefinition")?;
                if jd.status != DefinitionStatus::Active {
                    return Err(BatchError::client(format!(
                        "jobDefinition: {} is INACTIVE",
                        jd.job_definition_arn
                    )));
                }
                // The definition's resources are checked again: one may have been deleted since.
                match (
                    &req.consumable_resource_properties_override,
                    &jd.consumable_resource_properties,
                ) {
                    (Some(p), _) => {
                        self.check_consumables(cat, p, "consumableResourcePropertiesOverride")?
                    }
                    (None, Some(p)) => self.check_consumables(cat, p, "jobDefinition")?,
                    (None, None) => {}
                }
                Ok((q.clone(), jd.clone()))
            })
            .await?;

        let array_size = req.array_properties.as_ref().and_then(|a| a.size);
        let deps = req.depends_on.clone().unwrap_or_default();
        let dep_ids: Vec<String> = deps
            .iter()
            .filter_map(|d| d.job_id.clone())
            .filter(|id| may_exist(id))
            .collect();
        let found: HashMap<String, JobDetail> = if dep_ids.is_empty() {
            HashMap::new()
        } else {
            // An array dependency's children must exist before this job's own are resolved.
            self.children_settled(dep_ids.iter().map(String::as_str))
                .await;
            self.store
                .get_jobs(&dep_ids)
                .await?
                .into_iter()
                .map(|r| from_json::<JobDetail>("job", &r.doc).map(|j| (r.job_id, j)))
                .collect::<BatchResult<_>>()?
        };
        let mut failed_dep: Option<String> = None;
        let mut unmet = false;
        for (i, d) in deps.iter().enumerate() {
            match d.kind() {
                Some(DependencyType::Sequential) => {
                    if array_size.is_none() {
                        return Err(BatchError::client(format!(
                            "dependsOn[{i}].type: SEQUENTIAL applies only to array jobs"
                        )));
                    }
                    continue;
                }
                Some(DependencyType::NToN) if array_size.is_none() => {
                    return Err(BatchError::client(format!(
                        "dependsOn[{i}].type: N_TO_N applies only to array jobs"
                    )));
                }
                _ => {}
            }
            let id = d.job_id.as_deref().unwrap_or_default();
            let dep = found.get(id).ok_or_else(|| {
                BatchError::client(format!("dependsOn[{i}].jobId: no job {id:?}"))
            })?;
            if d.kind() == Some(DependencyType::NToN) {
                let size = dep.array_properties.as_ref().and_then(|a| a.size);
                if size != array_size {
                    return Err(BatchError::client(format!(
                        "dependsOn[{i}].jobId: an N_TO_N dependency must be an array job of the same size ({}), {id:?} is not",
                        array_size.unwrap_or_default()
                    )));
                }
            }
            match dep.status {
                JobStatus::Succeeded => {}
                JobStatus::Failed => {
                    failed_dep.get_or_insert_with(|| id.to_string());
                }
                _ => unmet = true,
            }
        }

        let now = now_ms();
        let job_id = uuid::Uuid::new_v4().to_string();
        let mut params = jd.parameters.clone().unwrap_or_default();
        params.extend(req.parameters.clone().unwrap_or_default());
        let container = jd
            .container_properties
            .as_ref()
            .map(|c| effective_container(c, req.container_overrides.as_ref(), &params))
            .map(|mut c| {
                c.properties = self.share_properties(&jd.job_definition_arn, c.properties);
                c
            });
        let (status, reason) = match (&failed_dep, unmet, array_size) {
            (Some(id), _, _) => (
                JobStatus::Failed,
                Some(format!(
                    "Dependent Job failed: {id} FAILED before this job could run"
                )),
            ),
            (None, true, _) | (None, false, Some(_)) => (JobStatus::Pending, None),
            (None, false, None) => (JobStatus::Runnable, None),
        };
        let base = JobDetail {
            job_arn: self.arn(ArnKind::Job, &job_id),
            job_name: req.job_name.clone(),
            job_id: job_id.clone(),
            job_queue: queue.job_queue_arn.clone(),
            status,
            share_identifier: req.share_identifier.clone(),
            scheduling_priority: req.scheduling_priority_override.or(jd.scheduling_priority),
            attempts: Vec::new(),
            status_reason: reason,
            created_at: now,
            retry_strategy: req.retry_strategy.clone().or(jd.retry_strategy.clone()),
            started_at: None,
            stopped_at: (status == JobStatus::Failed).then_some(now),
            depends_on: req.depends_on.clone(),
            job_definition: jd.job_definition_arn.clone(),
            parameters: (!params.is_empty()).then_some(params),
            container,
            array_properties: array_size.map(|size| ArrayPropertiesDetail {
                size: Some(size),
                ..Default::default()
            }),
            timeout: req.timeout.clone().or(jd.timeout.clone()),
            tags: req.tags.clone(),
            propagate_tags: req.propagate_tags.or(jd.propagate_tags),
            platform_capabilities: jd.platform_capabilities.clone(),
            is_cancelled: None,
            is_terminated: None,
            consumable_resource_properties: req
                .consumable_resource_properties_override
                .clone()
                .or_else(|| jd.consumable_resource_properties.clone())
                .filter(|p| p.needs().next().is_some()),
            internal: JobInternal {
                runnable_since: Some(now),
                propagated_tags: propagated_tags(&req, &jd),
                ..Default::default()
            },
        };

        if array_size.is_some() && status != JobStatus::Failed {
            // Accepted once the parent is durable: its children follow from it alone, so they
            // are written after the reply (and again at the next start if that write is lost).
            // Reads about the family wait for them (`children_settled`), so none sees it half
            // written. A 10,000-child array is accepted in a few ms instead of ~200.
            self.store.upsert_jobs(vec![job_row(&base, None)?]).await?;
            let gate = self.gate_children(&job_id);
            if let Some(engine) = self.engine() {
                engine.submitted(vec![(base.clone(), None)]).await;
            }
            tokio::spawn(self.clone().materialise_children(base.clone(), unmet, gate));
        } else {
            let mut rows = vec![job_row(&base, None)?];
            let mut details = vec![(base.clone(), None)];
            if array_size.is_some() {
                let (r, d) = self.array_children(&base, unmet)?;
                rows.extend(r);
                details.extend(d);
            }
            self.store.upsert_jobs(rows).await?;
            if let Some(engine) = self.engine() {
                engine.submitted(details).await;
            }
        }
        tracing::info!(%job_id, %status, array_size, "job submitted");
        crate::metrics::job_transition(
            JobStatus::Submitted,
            status,
            1 + array_size.unwrap_or(0) as u64,
        );
        Ok(json!({ "jobArn": base.job_arn, "jobName": base.job_name, "jobId": job_id }))
    }

    /// The children of array job `parent`, as rows and as the engine takes them. A child waits
    /// (PENDING) for its N_TO_N and SEQUENTIAL predecessors, and for the parent's own
    /// dependencies while `parent_deps_unmet`.
    #[allow(clippy::type_complexity)]
    pub(crate) fn array_children(
        &self,
        parent: &JobDetail,
        parent_deps_unmet: bool,
    ) -> BatchResult<(Vec<JobRow>, Vec<(JobDetail, Option<(String, i32)>)>)> {
        let Some(size) = parent.array_properties.as_ref().and_then(|a| a.size) else {
            return Ok((Vec::new(), Vec::new()));
        };
        let deps = parent.depends_on.as_deref().unwrap_or_default();
        let n_to_n: Vec<&str> = deps
            .iter()
            .filter(|d| d.kind() == Some(DependencyType::NToN))
            .filter_map(|d| d.job_id.as_deref())
            .collect();
        let sequential = deps
            .iter()
            .any(|d| d.kind() == Some(DependencyType::Sequential));
        let job_id = parent.job_id.as_str();
        let n = size.max(0) as usize;
        let mut rows = Vec::with_capacity(n);
        let mut details = Vec::with_capacity(n);
        let mut child = parent.clone();
        for i in 0..size {
            let child_id = format!("{job_id}:{i}");
            child.job_id = child_id.clone();
            child.job_arn = self.arn(ArnKind::Job, &child_id);
            let mut child_deps: Vec<JobDependency> = n_to_n
                .iter()
                .map(|p| JobDependency {
                    job_id: Some(format!("{p}:{i}")),
                    dep_type: None,
                })
                .collect();
            if sequential && i > 0 {
                child_deps.push(JobDependency {
                    job_id: Some(format!("{job_id}:{}", i - 1)),
                    dep_type: None,
                });
            }
            let waits = parent_deps_unmet || !n_to_n.is_empty() || (sequential && i > 0);
            child.status = match parent.status {
                JobStatus::Failed => JobStatus::Failed,
                _ if waits => JobStatus::Pending,
                _ => JobStatus::Runnable,
            };
            child.depends_on = (!child_deps.is_empty()).then_some(child_deps);
            child.array_properties = Some(ArrayPropertiesDetail {
                index: Some(i),
                ..Default::default()
            });
            rows.push(job_row(&child, Some((job_id, i)))?);
            details.push((child.clone(), Some((job_id.to_string(), i))));
        }
        Ok((rows, details))
    }

    /// Marks `parent`'s children as being written until the returned gate is dropped.
    fn gate_children(self: &Arc<Self>, parent: &str) -> ChildrenGate {
        let (tx, _) = tokio::sync::watch::channel(false);
        if let Ok(mut m) = self.materialising.lock() {
            m.insert(parent.to_string(), tx);
        }
        ChildrenGate {
            batch: self.clone(),
            parent: parent.to_string(),
        }
    }

    /// Waits until no array job named by `ids` (as a parent ID or `parent:index`) is still
    /// having its children written.
    pub(crate) async fn children_settled<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let waits: Vec<tokio::sync::watch::Receiver<bool>> = {
            let Ok(m) = self.materialising.lock() else {
                return;
            };
            if m.is_empty() {
                return;
            }
            ids.into_iter()
                .filter_map(|id| m.get(id.split(':').next().unwrap_or(id)))
                .map(|tx| tx.subscribe())
                .collect()
        };
        for mut rx in waits {
            // An error means the writer is gone without finishing: nothing more to wait for.
            let _ = rx.wait_for(|done| *done).await;
        }
    }

    /// Writes an accepted array job's children and hands them to the engine.
    async fn materialise_children(
        self: Arc<Self>,
        parent: JobDetail,
        parent_deps_unmet: bool,
        gate: ChildrenGate,
    ) {
        let span = tracing::info_span!("array_children", job_id = %parent.job_id);
        async move {
            let _gate = gate;
            let mut delay = std::time::Duration::from_millis(50);
            for attempt in 1.. {
                let this = self.clone();
                let p = parent.clone();
                let built = tokio::task::spawn_blocking(move || {
                    this.array_children(&p, parent_deps_unmet)
                })
                .await;
                let (rows, details) = match built {
                    Ok(Ok(b)) => b,
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "cannot build array children");
                        return;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "building array children panicked");
                        return;
                    }
                };
                let n = rows.len();
                // Without an fsync: a lost write is redone from the parent at the next start.
                match self.store.upsert_jobs_relaxed(rows).await {
                    Ok(()) => {
                        if let Some(engine) = self.engine() {
                            engine.submitted(details).await;
                        }
                        tracing::info!(children = n, "array children written");
                        return;
                    }
                    // Without limit: a full disk may take an operator minutes to clear, and
                    // the family's readers wait for these rows (the next start would rebuild
                    // them, but only if there is one).
                    Err(e) if e.is_retryable() => {
                        if !e.is_storage_fault() {
                            tracing::warn!(error = %e, attempt, "writing array children failed; retrying");
                        }
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(std::time::Duration::from_secs(2));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot write array children; they are written at the next start");
                        return;
                    }
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn load_jobs(&self, ids: &[String]) -> BatchResult<Vec<JobDetail>> {
        let ids: Vec<String> = ids.iter().filter(|id| may_exist(id)).cloned().collect();
        self.store
            .get_jobs(&ids)
            .await?
            .into_iter()
            .map(|r| from_json::<JobDetail>("job", &r.doc))
            .collect()
    }

    async fn load_job(&self, id: &str) -> BatchResult<JobDetail> {
        self.load_jobs(&[id.to_string()])
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| BatchError::client(format!("jobId: no job {id:?}")))
    }

    /// A RUNNABLE job behind the head of its queue has no stored reason (only the head gets
    /// one, as in AWS Batch); tell the caller why the queue is not moving.
    fn explain_wait(&self, job: &mut JobDetail) {
        if job.status != JobStatus::Runnable || job.status_reason.is_some() {
            return;
        }
        let Some(engine) = self.engine() else { return };
        let queue = job.job_queue.rsplit('/').next().unwrap_or(&job.job_queue);
        job.status_reason = Some(match engine.head_reason(&job.job_queue) {
            Some(head) => format!(
                "QUEUED - waiting behind earlier jobs of job queue {queue}, whose head waits: {head}"
            ),
            None => format!("QUEUED - waiting for the next scheduling pass of job queue {queue}"),
        });
    }

    async fn with_summary(&self, mut job: JobDetail) -> BatchResult<JobDetail> {
        if let Some(ap) = job.array_properties.as_mut()
            && ap.size.is_some()
        {
            let counts = self.store.count_children_by_status(&job.job_id).await?;
            ap.status_summary = Some(all_status_summary(&counts));
            ap.status_summary_last_updated_at = Some(now_ms());
        }
        Ok(job)
    }

    pub async fn describe_jobs(&self, ids: &[String]) -> BatchResult<Value> {
        if ids.len() > 100 {
            return Err(BatchError::client(format!(
                "jobs: at most 100 job IDs, got {}",
                ids.len()
            )));
        }
        self.children_settled(ids.iter().map(String::as_str)).await;
        let mut by_id: HashMap<String, JobDetail> = self
            .load_jobs(ids)
            .await?
            .into_iter()
            .map(|j| (j.job_id.clone(), j))
            .collect();
        let mut out = Vec::with_capacity(by_id.len());
        for id in ids {
            if let Some(mut j) = by_id.remove(id) {
                j.internal = JobInternal::default();
                self.explain_wait(&mut j);
                out.push(self.with_summary(j).await?);
            }
        }
        Ok(json!({ "jobs": out }))
    }

    pub async fn list_jobs(&self, req: ListJobsRequest) -> BatchResult<Value> {
        let scopes = [&req.job_queue, &req.array_job_id, &req.multi_node_job_id]
            .iter()
            .filter(|s| s.is_some())
            .count();
        if scopes != 1 {
            return Err(BatchError::client(
                "jobQueue: exactly one of jobQueue, arrayJobId and multiNodeJobId is required",
            ));
        }
        if req.multi_node_job_id.is_some() {
            return Err(BatchError::client(
                "multiNodeJobId: multinode jobs are not supported by Flotilla",
            ));
        }
        let limit = match req.max_results {
            None => 100,
            Some(n) if (1..=1000).contains(&n) => n as u32,
            Some(n) => {
                return Err(BatchError::client(format!(
                    "maxResults: must be between 1 and 1000, got {n}"
                )));
            }
        };
        if let Some(s) = &req.job_status {
            v::one_of("jobStatus", s, &JOB_STATUSES)?;
        }
        let scope = if let Some(q) = &req.job_queue {
            JobScope::Queue(
                self.with_hot_catalog(|cat| {
                    Ok(self
                        .resolve_queue(cat, q, "jobQueue")?
                        .job_queue_arn
                        .clone())
                })
                .await?,
            )
        } else {
            let parent = req.array_job_id.clone().unwrap_or_default();
            self.children_settled([parent.as_str()]).await;
            JobScope::ArrayParent(parent)
        };
        // A queue's tokens are keyset positions by creation time, an array's by index: each
        // is only meaningful in the listing that issued it.
        let token_scope = match &scope {
            JobScope::Queue(arn) => token::TokenScope::new("ListJobs", ["queue", arn]),
            JobScope::ArrayParent(id) => token::TokenScope::new("ListJobs", ["array", id]),
        };
        let mut q = JobListQuery {
            scope,
            statuses: None,
            name: None,
            name_is_prefix: false,
            definition: None,
            definition_is_prefix: false,
            created_before: None,
            created_after: None,
            limit,
            cursor: req
                .next_token
                .as_deref()
                .map(|t| token::decode_cursor(&token_scope, t))
                .transpose()?,
        };
        let filters = req.filters.clone().unwrap_or_default();
        if filters.is_empty() {
            // AWS Batch lists only RUNNING jobs when neither a status nor a filter is given.
            q.statuses = Some(vec![
                req.job_status
                    .clone()
                    .unwrap_or_else(|| JobStatus::Running.as_str().into()),
            ]);
        }
        for (i, f) in filters.iter().enumerate() {
            let field = format!("filters[{i}]");
            let name = f.name.as_deref().unwrap_or_default();
            let value = match f.values.as_deref() {
                Some([v]) => v.clone(),
                _ => {
                    return Err(BatchError::client(format!(
                        "{field}.values: exactly one value is required"
                    )));
                }
            };
            match name {
                "JOB_NAME" => {
                    if let Some(p) = value.strip_suffix('*') {
                        q.name = Some(p.to_string());
                        q.name_is_prefix = true;
                    } else {
                        q.name = Some(value);
                    }
                }
                "JOB_DEFINITION" => {
                    let spec = self
                        .name_of(ArnKind::JobDefinition, &value)
                        .ok_or_else(|| {
                            BatchError::client(format!(
                                "{field}.values: not a job definition of this server"
                            ))
                        })?;
                    if spec.contains(':') {
                        q.definition = Some(self.arn(ArnKind::JobDefinition, spec));
                    } else {
                        q.definition = Some(self.arn(ArnKind::JobDefinition, &format!("{spec}:")));
                        q.definition_is_prefix = true;
                    }
                }
                "BEFORE_CREATED_AT" | "AFTER_CREATED_AT" => {
                    let t: i64 = value.parse().map_err(|_| {
                        BatchError::client(format!(
                            "{field}.values: {name} takes epoch milliseconds, got {value:?}"
                        ))
                    })?;
                    if name == "BEFORE_CREATED_AT" {
                        q.created_before = Some(t);
                    } else {
                        q.created_after = Some(t);
                    }
                }
                _ => {
                    return Err(BatchError::client(format!(
                        "{field}.name: {name:?} is not one of JOB_NAME, JOB_DEFINITION, BEFORE_CREATED_AT, AFTER_CREATED_AT"
                    )));
                }
            }
        }
        let scope_id = match &q.scope {
            JobScope::Queue(s) | JobScope::ArrayParent(s) => s,
        };
        if [Some(scope_id), q.name.as_ref(), q.definition.as_ref()]
            .into_iter()
            .flatten()
            .any(|s| !may_exist(s))
        {
            return Ok(json!({ "jobSummaryList": [] }));
        }
        let page = self.store.list_jobs(&q).await?;
        let mut summaries = Vec::with_capacity(page.jobs.len());
        for row in &page.jobs {
            let mut job: JobDetail = from_json("job", &row.doc)?;
            self.explain_wait(&mut job);
            let job = self.with_summary(job).await?;
            summaries.push(JobSummary::of(&job));
        }
        Ok(json!({
            "jobSummaryList": summaries,
            "nextToken": page.next.as_ref().map(|c| token::encode_cursor(&token_scope, c)),
        }))
    }

    /// CancelJob (`terminate == false`) and TerminateJob.
    #[tracing::instrument(skip(self, reason))]
    pub async fn stop_job(
        &self,
        job_id: &str,
        reason: &str,
        terminate: bool,
    ) -> BatchResult<Value> {
        if job_id.is_empty() {
            return Err(BatchError::client("jobId: is required"));
        }
        check_stop_reason(reason)?;
        let engine = self
            .engine()
            .ok_or_else(|| BatchError::Unavailable("the engine is not running".into()))?;
        self.children_settled([job_id]).await;
        match engine.stop(job_id, reason, terminate).await? {
            StopResult::Applied => Ok(json!({})),
            // Finished jobs are left as they are; unknown ones are an error.
            StopResult::NotActive => self.load_job(job_id).await.map(|_| json!({})),
        }
    }

    /// CancelJobs / TerminateJobs: up to 50 jobs, each reported on its own. As AWS Batch
    /// documents, an ID that names no job counts as successful; only a malformed one is an
    /// error, and the request as a whole fails only when it is malformed itself.
    pub async fn stop_jobs(
        &self,
        job_ids: &[String],
        reason: &str,
        terminate: bool,
    ) -> BatchResult<Value> {
        if job_ids.is_empty() {
            return Err(BatchError::client("jobs: at least one job ID is required"));
        }
        if job_ids.len() > MAX_BULK_STOP {
            return Err(BatchError::client(format!(
                "jobs: at most {MAX_BULK_STOP} job IDs, got {}",
                job_ids.len()
            )));
        }
        check_stop_reason(reason)?;
        let engine = self
            .engine()
            .ok_or_else(|| BatchError::Unavailable("the engine is not running".into()))?;
        self.children_settled(job_ids.iter().map(String::as_str))
            .await;
        let mut successful = Vec::with_capacity(job_ids.len());
        let mut errors = Vec::new();
        for id in job_ids {
            if id.is_empty() || id.len() > MAX_JOB_ID_LEN || id.chars().any(char::is_control) {
                errors.push(json!({
                    "job": id,
                    "code": "ValidationException",
                    "message": format!("jobs: {id:?} is not a valid job ID"),
                }));
                continue;
            }
            match engine.stop(id, reason, terminate).await {
                Ok(_) => successful.push(id.clone()),
                Err(e @ BatchError::Client(_)) => errors.push(json!({
                    "job": id, "code": "ClientException", "message": e.to_string(),
                })),
                Err(e) => return Err(e),
            }
        }
        Ok(json!({ "successful": successful, "errors": errors }))
    }

    pub(crate) async fn with_job_tags(&self, job_id: &str, f: TagFn) -> BatchResult<Tags> {
        self.children_settled([job_id]).await;
        let f = match self.engine() {
            None => f,
            Some(engine) => match engine.tags(job_id, f).await? {
                TagsReply::Applied(r) => return r,
                TagsReply::NotActive(f) => f,
            },
        };
        let rows = if may_exist(job_id) {
            self.store.get_jobs(&[job_id.to_string()]).await?
        } else {
            Vec::new()
        };
        let row = rows
            .into_iter()
            .next()
            .ok_or_else(|| BatchError::client(format!("resourceArn: no job {job_id:?}")))?;
        let mut job: JobDetail = from_json("job", &row.doc)?;
        let mut tags = job.tags.clone().unwrap_or_default();
        let before = tags.clone();
        f.apply(&mut tags)?;
        v::tags("tags", &tags)?;
        if tags != before {
            job.tags = Some(tags.clone());
            let parent = row.array_parent.as_deref().zip(row.array_index);
            self.store.upsert_jobs(vec![job_row(&job, parent)?]).await?;
        }
        Ok(tags)
    }

    /// GetJobQueueSnapshot: the queue's first RUNNABLE jobs in the order the scheduler will
    /// start them, and what its jobs hold now, from the engine (which owns both).
    pub async fn job_queue_snapshot(&self, queue: &str) -> BatchResult<Value> {
        let arn = {
            let cat = self.cat().await;
            self.resolve_queue(&cat, queue, "jobQueue")?
                .job_queue_arn
                .clone()
        };
        let engine = self
            .engine()
            .ok_or_else(|| BatchError::Unavailable("no engine runs the job queues".into()))?;
        let s = engine.queue_snapshot(&arn).await?;
        let jobs: Vec<Value> = s
            .front
            .iter()
            .map(|(id, since)| {
                json!({
                    "jobArn": self.arn(ArnKind::Job, id),
                    "earliestTimeAtPosition": since,
                })
            })
            .collect();
        let unit = |unit: &str, quantity: f64| json!({"capacityUnit": unit, "quantity": quantity});
        let mut utilization = json!({
            "totalCapacityUsage": [
                unit("VCPU", s.used.milli_vcpus as f64 / 1000.0),
                unit("MEMORY", s.used.memory_mib as f64),
                unit("GPU", s.used.gpus as f64),
            ],
            "lastUpdatedAt": s.at,
        });
        if let Some(shares) = &s.shares {
            let top: Vec<Value> = shares
                .iter()
                .take(FAIRSHARE_TOP)
                .map(|(share, v)| {
                    json!({"shareIdentifier": share, "capacityUsage": [unit("VCPU", *v)]})
                })
                .collect();
            utilization["fairshareUtilization"] = json!({
                "activeShareCount": shares.len(),
                "topCapacityUtilization": top,
            });
        }
        Ok(json!({
            "frontOfQueue": { "jobs": jobs, "lastUpdatedAt": s.at },
            "queueUtilization": utilization,
        }))
    }
}

/// `topCapacityUtilization` lists this many shares, as AWS Batch does.
const FAIRSHARE_TOP: usize = 20;

/// Held while an array job's children are written; dropping it releases the reads waiting for
/// them.
pub(crate) struct ChildrenGate {
    batch: Arc<Batch>,
    parent: String,
}

impl Drop for ChildrenGate {
    fn drop(&mut self) {
        if let Ok(mut m) = self.batch.materialising.lock()
            && let Some(tx) = m.remove(&self.parent)
        {
            let _ = tx.send(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_parameters_are_substituted() {
        let params: BTreeMap<String, String> =
            [("input".to_string(), "s3://b/k".to_string())].into();
        let cmd = vec!["run".into(), "Ref::input".into(), "Ref::missing".into()];
        assert_eq!(
            substitute_parameters(&cmd, &params),
            vec!["run", "s3://b/k", "Ref::missing"]
        );
    }

    #[test]
    fn ref_parameters_are_substituted_inside_arguments() {
        let params: BTreeMap<String, String> = [
            ("in".to_string(), "short".to_string()),
            ("input".to_string(), "s3://b/k".to_string()),
            ("who".to_string(), "Ref::in".to_string()),
        ]
        .into();
        let cmd: Vec<String> = [
            "--input=Ref::input",
            "echo Ref::who and Ref::in.",
            "Ref::inputs",
            "a Ref::nope b Ref::",
            "Ref::inRef::input",
        ]
        .map(String::from)
        .into();
        assert_eq!(
            substitute_parameters(&cmd, &params),
            vec![
                "--input=s3://b/k",
                // A value is not scanned again: `Ref::in` inside `who`'s value stays.
                "echo Ref::in and short.",
                // The longest name that follows wins; what is after it is kept.
                "s3://b/ks",
                "a Ref::nope b Ref::",
                "shorts3://b/k",
            ]
        );
    }

    #[test]
    fn overrides_merge_by_name_and_type() {
        let jd = ContainerProperties {
            image: Some("busybox".into()),
            command: Some(vec!["echo".into(), "Ref::x".into()]),
            environment: Some(vec![KeyValuePair {
                name: Some("A".into()),
                value: Some("1".into()),
            }]),
            resource_requirements: Some(vec![
                ResourceRequirement {
                    rtype: "VCPU".into(),
                    value: "1".into(),
                },
                ResourceRequirement {
                    rtype: "MEMORY".into(),
                    value: "128".into(),
                },
            ]),
            ..Default::default()
        };
        let ov = ContainerOverrides {
            environment: Some(vec![KeyValuePair {
                name: Some("A".into()),
                value: Some("2".into()),
            }]),
            resource_requirements: Some(vec![ResourceRequirement {
                rtype: "VCPU".into(),
                value: "4".into(),
            }]),
            ..Default::default()
        };
        let params = [("x".to_string(), "hi".to_string())].into();
        let c = (*effective_container(&jd, Some(&ov), &params).properties).clone();
        assert_eq!(c.command.unwrap(), vec!["echo", "hi"]);
        let env = c.environment.unwrap();
        assert_eq!(env.len(), 1);
        assert_eq!(env[0].value.as_deref(), Some("2"));
        let rr = c.resource_requirements.unwrap();
        assert!(rr.iter().any(|r| r.rtype == "VCPU" && r.value == "4"));
        assert!(rr.iter().any(|r| r.rtype == "MEMORY" && r.value == "128"));
    }
}
