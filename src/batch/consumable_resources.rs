//! Consumable resources: create, update, delete, describe, list, the jobs that need one, the
//! checks of `consumableResourceProperties` on definitions and SubmitJob, and what the engine
//! reports of their use.
//!
//! The catalog holds each resource's `totalQuantity`; what is in use is known only to the
//! engine, which derives it from its STARTING and RUNNING attempts (so a restart recomputes it
//! from the jobs it loads) and publishes it here after every round. A NON_REPLENISHABLE
//! resource loses what an attempt held when the attempt ends: the engine takes it off the
//! stored `totalQuantity` ([`Batch::consume`]) before it writes the attempt's end, so a crash
//! in between can only count a consumption twice, never lose one.

use super::resources::exists;
use super::*;
use crate::model::validate as v;
use serde_json::{Value, json};
use std::collections::HashMap;

/// The `meta` key of the leader's published use (replicas).
const CONSUMABLE_USE_KEY: &str = "consumable_use";

/// What the engine's attempts hold of one consumable resource.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConsumableUse {
    /// Held by STARTING and RUNNING attempts.
    pub in_use: u64,
    /// Given back by ended attempts and not yet settled: for a NON_REPLENISHABLE resource, what
    /// is still to be taken off its stored `totalQuantity` (so it counts as gone already).
    pub released: u64,
}

/// How long a `clientToken` of UpdateConsumableResource is remembered (AWS: 8 hours).
const CLIENT_TOKEN_TTL_MS: i64 = 8 * 3600 * 1000;
/// Tokens remembered per resource at most, the oldest forgotten first: they live in the
/// resource's document, which is rewritten on every change.
const MAX_CLIENT_TOKENS: usize = 1000;

/// The quantities DescribeConsumableResource shows: (total, in use, available).
pub fn consumable_quantities(r: &ConsumableResourceDetail, u: ConsumableUse) -> (i64, i64, i64) {
    let in_use = i64::try_from(u.in_use).unwrap_or(i64::MAX);
    let total = match r.resource_type {
        ConsumableResourceType::Replenishable => r.total_quantity,
        ConsumableResourceType::NonReplenishable => r
            .total_quantity
            .saturating_sub(i64::try_from(u.released).unwrap_or(i64::MAX))
            .max(0),
    };
    // A total lowered below what running jobs hold leaves nothing available, not a debt.
    (total, in_use, total.saturating_sub(in_use).max(0))
}

/// Whether `name` matches a filter value: case-insensitive, a trailing `*` matches a prefix.
fn matches_filter(value: &str, name: &str) -> bool {
    let (value, name) = (value.to_ascii_lowercase(), name.to_ascii_lowercase());
    match value.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == value,
    }
}

impl Batch {
    /// What the engine last published of resource `name`'s use.
    pub fn consumable_use(&self, name: &str) -> ConsumableUse {
        self.consumable_use
            .lock()
            .map(|m| m.get(name).copied().unwrap_or_default())
            .unwrap_or_default()
    }

    /// The engine's view of every resource's use, replacing the last one. On replicas it is
    /// also written to the store (the latest value, by one writer task), for followers'
    /// Describe/List/DeleteConsumableResource.
    pub fn publish_consumable_use(&self, usage: HashMap<String, ConsumableUse>) {
        if self.store.replication().is_some() {
            let tx = self.consumable_publisher.get_or_init(|| {
                let (tx, mut rx) = tokio::sync::watch::channel(String::new());
                let store = self.store.clone();
                tokio::spawn(async move {
                    while rx.changed().await.is_ok() {
                        let doc = rx.borrow_and_update().clone();
                        if let Err(e) = store.set_meta(CONSUMABLE_USE_KEY, &doc).await {
                            tracing::warn!(error = %e, "cannot store consumable resource use for the other replicas");
                        }
                    }
                });
                tx
            });
            if let Ok(doc) = serde_json::to_string(&usage) {
                tx.send_if_modified(|v| {
                    let changed = *v != doc;
                    *v = doc;
                    changed
                });
            }
        }
        if let Ok(mut m) = self.consumable_use.lock() {
            *m = usage;
        }
    }

    /// A follower's view of the leader's last published use (see `publish_consumable_use`).
    async fn refresh_consumable_use(&self) -> BatchResult<()> {
        if self.store.replication().is_none() || self.consumable_publisher.get().is_some() {
            return Ok(());
        }
        let usage: HashMap<String, ConsumableUse> =
            match self.store.get_meta(CONSUMABLE_USE_KEY).await? {
                Some(doc) => serde_json::from_str(&doc).unwrap_or_default(),
                None => HashMap::new(),
            };
        if let Ok(mut m) = self.consumable_use.lock() {
            *m = usage;
        }
        Ok(())
    }

    /// Takes what ended attempts held of NON_REPLENISHABLE resources off their stored
    /// `totalQuantity` (never below 0), durably, removing each entry from `released` once done
    /// (on an error, what is left is still to do). Entries of replenishable or deleted
    /// resources are dropped. The published `released` of each is lowered at the same time,
    /// under the catalog's lock, so a reader never sees a consumption both settled and pending.
    pub async fn consume(&self, released: &mut Vec<(String, u64)>) -> BatchResult<()> {
        let mut guard = self.cat_mut().await;
        let cat = Arc::make_mut(&mut *guard);
        while let Some((name, q)) = released.last() {
            let (name, q) = (name.clone(), *q);
            let Some(r) = cat
                .consumable_resources
                .get(&name)
                .filter(|r| r.resource_type == ConsumableResourceType::NonReplenishable)
            else {
                if let Ok(mut m) = self.consumable_use.lock()
                    && let Some(u) = m.get_mut(&name)
                {
                    u.released = u.released.saturating_sub(q);
                }
                released.pop();
                continue;
            };
            let mut next = r.clone();
            let q_i64 = i64::try_from(q).unwrap_or(i64::MAX);
            next.total_quantity = next.total_quantity.saturating_sub(q_i64).max(0);
            self.store
                .put_resource(&ResourceRow {
                    kind: ResourceKind::ConsumableResource,
                    arn: next.consumable_resource_arn.clone(),
                    name: next.consumable_resource_name.clone(),
                    doc: to_json(&next)?,
                })
                .await?;
            tracing::info!(resource = %name, quantity = q, total = next.total_quantity, "non-replenishable resource consumed");
            cat.consumable_resources.insert(name.clone(), next);
            if let Ok(mut m) = self.consumable_use.lock()
                && let Some(u) = m.get_mut(&name)
            {
                u.released = u.released.saturating_sub(q);
            }
            released.pop();
        }
        Ok(())
    }

    fn resolve_consumable<'a>(
        &self,
        cat: &'a Catalog,
        value: &str,
        field: &str,
    ) -> BatchResult<&'a ConsumableResourceDetail> {
        self.name_of(ArnKind::ConsumableResource, value)
            .and_then(|n| cat.consumable_resources.get(n))
            .ok_or_else(|| BatchError::client(format!("{field}: no consumable resource {value:?}")))
    }

    /// Checks `consumableResourceProperties` (or SubmitJob's override, `field`): every entry
    /// names an existing resource once, with a quantity of at least 1.
    pub(crate) fn check_consumables(
        &self,
        cat: &Catalog,
        props: &ConsumableResourceProperties,
        field: &str,
    ) -> BatchResult<()> {
        let mut seen: Vec<&str> = Vec::new();
        for (i, r) in props.consumable_resource_list.iter().flatten().enumerate() {
            let at = format!("{field}.consumableResourceList[{i}]");
            let value = match r.consumable_resource.as_deref() {
                None | Some("") => {
                    return Err(BatchError::client(format!(
                        "{at}.consumableResource: is required"
                    )));
                }
                Some(v) => v,
            };
            let found = self.resolve_consumable(cat, value, &format!("{at}.consumableResource"))?;
            match r.quantity {
                None => {
                    return Err(BatchError::client(format!("{at}.quantity: is required")));
                }
                Some(q) if q < 1 => {
                    return Err(BatchError::client(format!(
                        "{at}.quantity: must be at least 1, got {q}"
                    )));
                }
                Some(_) => {}
            }
            let name = found.consumable_resource_name.as_str();
            if seen.contains(&name) {
                return Err(BatchError::client(format!(
                    "{at}.consumableResource: {name:?} is listed more than once"
                )));
            }
            seen.push(name);
        }
        Ok(())
    }

    pub async fn create_consumable_resource(
        &self,
        req: CreateConsumableResourceRequest,
    ) -> BatchResult<Value> {
        let name = req.consumable_resource_name.clone();
        v::name("consumableResourceName", &name)?;
        let total = req.total_quantity.unwrap_or(0);
        if total < 0 {
            return Err(BatchError::client(format!(
                "totalQuantity: must not be negative, got {total}"
            )));
        }
        let resource_type: ConsumableResourceType = req
            .resource_type
            .as_deref()
            .map(|t| v::wire("resourceType", t))
            .transpose()?
            .unwrap_or_default();
        if let Some(t) = &req.tags {
            v::tags("tags", t)?;
        }
        let mut guard = self.cat_mut().await;
        let cat = Arc::make_mut(&mut *guard);
        if cat.consumable_resources.contains_key(&name) {
            return Err(exists("consumableResourceName", &name));
        }
        let arn = self.arn(ArnKind::ConsumableResource, &name);
        let r = ConsumableResourceDetail {
            consumable_resource_name: name.clone(),
            consumable_resource_arn: arn.clone(),
            total_quantity: total,
            resource_type,
            created_at: now_ms(),
            tags: req.tags,
            client_tokens: Vec::new(),
        };
        self.persist(ResourceKind::ConsumableResource, &arn, &name, to_json(&r)?)
            .await?;
        cat.consumable_resources.insert(name.clone(), r);
        tracing::info!(%name, total, %resource_type, "consumable resource created");
        Ok(json!({ "consumableResourceName": name, "consumableResourceArn": arn }))
    }

    pub async fn update_consumable_resource(
        &self,
        req: UpdateConsumableResourceRequest,
    ) -> BatchResult<Value> {
        let op: QuantityOperation = req
            .operation
            .as_deref()
            .map(|o| v::wire("operation", o))
            .transpose()?
            .unwrap_or(QuantityOperation::Set);
        let quantity = req
            .quantity
            .ok_or_else(|| BatchError::client("quantity: is required"))?;
        if quantity < 0 {
            return Err(BatchError::client(format!(
                "quantity: must not be negative, got {quantity}"
            )));
        }
        if let Some(t) = &req.client_token
            && (t.is_empty() || t.len() > 64)
        {
            return Err(BatchError::client(format!(
                "clientToken: must be 1 to 64 characters long, got {}",
                t.len()
            )));
        }
        let mut guard = self.cat_mut().await;
        let cat = Arc::make_mut(&mut *guard);
        let mut r = self
            .resolve_consumable(cat, &req.consumable_resource, "consumableResource")?
            .clone();
        let now = now_ms();
        r.client_tokens
            .retain(|(_, _, at)| now - at < CLIENT_TOKEN_TTL_MS);
        let digest = format!("{op}:{quantity}");
        let answer = |r: &ConsumableResourceDetail| {
            json!({
                "consumableResourceName": r.consumable_resource_name,
                "consumableResourceArn": r.consumable_resource_arn,
                "totalQuantity": r.total_quantity,
            })
        };
        if let Some(token) = &req.client_token
            && let Some((_, seen, _)) = r.client_tokens.iter().find(|(t, _, _)| t == token)
        {
            if *seen == digest {
                return Ok(answer(&r));
            }
            return Err(BatchError::client(format!(
                "clientToken: {token:?} was used within 8 hours for a different update"
            )));
        }
        r.total_quantity = match op {
            QuantityOperation::Set => quantity,
            QuantityOperation::Add => r.total_quantity.checked_add(quantity).ok_or_else(|| {
                BatchError::client(format!(
                    "quantity: adding {quantity} to {} overflows totalQuantity",
                    r.total_quantity
                ))
            })?,
            QuantityOperation::Remove => {
                if quantity > r.total_quantity {
                    return Err(BatchError::client(format!(
                        "quantity: cannot REMOVE {quantity}, totalQuantity is {}",
                        r.total_quantity
                    )));
                }
                r.total_quantity - quantity
            }
        };
        if let Some(token) = req.client_token {
            r.client_tokens.push((token, digest, now));
            let excess = r.client_tokens.len().saturating_sub(MAX_CLIENT_TOKENS);
            r.client_tokens.drain(..excess);
        }
        self.persist(
            ResourceKind::ConsumableResource,
            &r.consumable_resource_arn,
            &r.consumable_resource_name,
            to_json(&r)?,
        )
        .await?;
        let out = answer(&r);
        cat.consumable_resources
            .insert(r.consumable_resource_name.clone(), r);
        Ok(out)
    }

    pub async fn delete_consumable_resource(&self, value: &str) -> BatchResult<Value> {
        self.refresh_consumable_use().await?;
        let mut guard = self.cat_mut().await;
        let cat = Arc::make_mut(&mut *guard);
        let r = self
            .resolve_consumable(cat, value, "consumableResource")?
            .clone();
        let name = r.consumable_resource_name.clone();
        let used = self.consumable_use(&name);
        if used.in_use > 0 {
            return Err(BatchError::client(format!(
                "consumableResource: {name:?} is held by running jobs ({} in use)",
                used.in_use
            )));
        }
        self.store
            .delete_resource(ResourceKind::ConsumableResource, &r.consumable_resource_arn)
            .await?;
        cat.consumable_resources.remove(&name);
        self.wake_engine();
        Ok(json!({}))
    }

    pub async fn describe_consumable_resource(&self, value: &str) -> BatchResult<Value> {
        self.refresh_consumable_use().await?;
        let cat = self.cat().await;
        let r = self.resolve_consumable(&cat, value, "consumableResource")?;
        let (total, in_use, available) =
            consumable_quantities(r, self.consumable_use(&r.consumable_resource_name));
        Ok(json!({
            "consumableResourceName": r.consumable_resource_name,
            "consumableResourceArn": r.consumable_resource_arn,
            "totalQuantity": total,
            "inUseQuantity": in_use,
            "availableQuantity": available,
            "resourceType": r.resource_type,
            "createdAt": r.created_at,
            "tags": r.tags.clone().unwrap_or_default(),
        }))
    }

    pub async fn list_consumable_resources(
        &self,
        req: ListConsumableResourcesRequest,
    ) -> BatchResult<Value> {
        let mut names: Vec<String> = Vec::new();
        for (i, f) in req.filters.iter().flatten().enumerate() {
            match f.name.as_deref() {
                Some("CONSUMABLE_RESOURCE_NAME") => {
                    names.extend(f.values.iter().flatten().cloned());
                }
                other => {
                    return Err(BatchError::client(format!(
                        "filters[{i}].name: {:?} is not CONSUMABLE_RESOURCE_NAME",
                        other.unwrap_or_default()
                    )));
                }
            }
        }
        let filtered = req.filters.as_ref().is_some_and(|f| !f.is_empty());
        self.refresh_consumable_use().await?;
        let cat = self.cat().await;
        let items = cat
            .consumable_resources
            .iter()
            .filter(|(n, _)| !filtered || names.iter().any(|v| matches_filter(v, n)))
            .map(|(n, r)| {
                let (total, in_use, _) = consumable_quantities(r, self.consumable_use(n));
                (
                    n.clone(),
                    json!({
                        "consumableResourceArn": r.consumable_resource_arn,
                        "consumableResourceName": r.consumable_resource_name,
                        "totalQuantity": total,
                        "inUseQuantity": in_use,
                        "resourceType": r.resource_type,
                    }),
                )
            })
            .collect();
        let scope = super::token::TokenScope::new("ListConsumableResources", []);
        let (page, token) =
            super::token::paginate(&scope, items, req.max_results, req.next_token.as_deref())?;
        Ok(json!({ "consumableResources": page, "nextToken": token }))
    }

    /// Every job (array children, not their parents, which never run) whose properties name the
    /// resource, oldest first. A scan of the jobs in the statuses asked for: the store keeps no
    /// index by resource.
    pub async fn list_jobs_by_consumable_resource(
        &self,
        req: ListJobsByConsumableResourceRequest,
    ) -> BatchResult<Value> {
        let name = {
            let cat = self.cat().await;
            self.resolve_consumable(&cat, &req.consumable_resource, "consumableResource")?
                .consumable_resource_name
                .clone()
        };
        let mut statuses: Vec<JobStatus> = Vec::new();
        let mut job_names: Vec<String> = Vec::new();
        for (i, f) in req.filters.iter().flatten().enumerate() {
            let values = f.values.iter().flatten();
            match f.name.as_deref() {
                Some("JOB_STATUS") => {
                    for (k, s) in values.enumerate() {
                        statuses.push(v::wire(&format!("filters[{i}].values[{k}]"), s)?);
                    }
                }
                Some("JOB_NAME") => job_names.extend(values.cloned()),
                other => {
                    return Err(BatchError::client(format!(
                        "filters[{i}].name: {:?} is not one of JOB_STATUS, JOB_NAME",
                        other.unwrap_or_default()
                    )));
                }
            }
        }
        if statuses.is_empty() {
            statuses = JobStatus::ALL.to_vec();
        }
        let wanted: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        let rows = self.store.jobs_with_status(&wanted).await?;
        let mut items = Vec::new();
        for row in rows {
            // Most jobs need no resource: skip them before parsing their document.
            if !row.doc.contains("consumableResourceProperties") {
                continue;
            }
            let job: JobDetail = from_json("job", &row.doc)?;
            let is_parent = row.array_parent.is_none()
                && job.array_properties.as_ref().and_then(|a| a.size).is_some();
            if is_parent {
                continue;
            }
            let Some(props) = &job.consumable_resource_properties else {
                continue;
            };
            let quantity: u64 = props
                .needs()
                .filter(|(n, _)| *n == name)
                .map(|(_, q)| q)
                .sum();
            if quantity == 0 {
                continue;
            }
            if !job_names.is_empty() && !job_names.iter().any(|v| matches_filter(v, &job.job_name))
            {
                continue;
            }
            items.push((
                format!("{:020}:{}", job.created_at.max(0), job.job_id),
                json!({
                    "jobArn": job.job_arn,
                    "jobQueueArn": job.job_queue,
                    "jobName": job.job_name,
                    "jobDefinitionArn": job.job_definition,
                    "shareIdentifier": job.share_identifier,
                    "jobStatus": job.status,
                    "quantity": quantity,
                    "statusReason": job.status_reason,
                    "startedAt": job.started_at,
                    "createdAt": job.created_at,
                    "consumableResourceProperties": props,
                }),
            ));
        }
        items.sort_by(|a, b| a.0.cmp(&b.0));
        let scope = super::token::TokenScope::new("ListJobsByConsumableResource", [name.as_str()]);
        let (page, token) =
            super::token::paginate(&scope, items, req.max_results, req.next_token.as_deref())?;
        let page: Vec<Value> = page
            .into_iter()
            .map(|mut j| {
                if let Value::Object(m) = &mut j {
                    m.retain(|_, v| !v.is_null());
                }
                j
            })
            .collect();
        Ok(json!({ "jobs": page, "nextToken": token }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(kind: ConsumableResourceType, total: i64) -> ConsumableResourceDetail {
        ConsumableResourceDetail {
            consumable_resource_name: "licence".into(),
            consumable_resource_arn: "arn".into(),
            total_quantity: total,
            resource_type: kind,
            created_at: 0,
            tags: None,
            client_tokens: Vec::new(),
        }
    }

    #[test]
    fn released_non_replenishable_quantity_is_gone_before_it_is_settled() {
        let u = ConsumableUse {
            in_use: 2,
            released: 3,
        };
        let r = resource(ConsumableResourceType::NonReplenishable, 10);
        assert_eq!(consumable_quantities(&r, u), (7, 2, 5));
        let r = resource(ConsumableResourceType::Replenishable, 10);
        assert_eq!(consumable_quantities(&r, u), (10, 2, 8));
        // Lowered below what is held: nothing available, never negative.
        let r = resource(ConsumableResourceType::Replenishable, 1);
        assert_eq!(consumable_quantities(&r, u), (1, 2, 0));
    }

    #[test]
    fn name_filters_ignore_case_and_take_a_trailing_star() {
        assert!(matches_filter("LIC*", "licence"));
        assert!(matches_filter("Licence", "licence"));
        assert!(!matches_filter("lic", "licence"));
        assert!(matches_filter("*", "anything"));
    }
}
