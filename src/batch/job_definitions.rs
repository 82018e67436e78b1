//! Job definitions: register, deregister, describe.

use super::*;
use crate::model::validate as v;
use serde_json::{Value, json};

impl Batch {
    pub async fn register_job_definition(
        &self,
        req: RegisterJobDefinitionRequest,
    ) -> BatchResult<Value> {
        v::register_job_definition(&req)?;
        let mut guard = self.cat_mut().await;
        if let Some(p) = &req.consumable_resource_properties {
            self.check_consumables(&guard, p, "consumableResourceProperties")?;
        }
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
            consumable_resource_properties: req.consumable_resource_properties,
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
        let mut guard = self.cat_mut().await;
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
        let cat = self.cat().await;
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
        // What the request selects: the listed definitions, else the name, else all; then the status.
        let selection: Vec<&str> = match (&req.job_definitions, &req.job_definition_name) {
            (Some(list), _) => std::iter::once("list")
                .chain(list.iter().map(String::as_str))
                .collect(),
            (None, Some(name)) => vec!["name", name],
            (None, None) => vec!["all"],
        };
        let status_part = status.map_or("", |s| s.as_str());
        let scope = token::TokenScope::new(
            "DescribeJobDefinitions",
            std::iter::once(status_part).chain(selection),
        );
        let (page, token) =
            token::paginate(&scope, items, req.max_results, req.next_token.as_deref())?;
        Ok(json!({ "jobDefinitions": page, "nextToken": token }))
    }
}
