//! Scheduling policies (fair share): create, update, delete, describe, list.

use super::resources::exists;
use super::*;
use crate::model::validate as v;
use serde_json::{Value, json};

impl Batch {
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
        let mut guard = self.cat_mut().await;
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
        let mut guard = self.cat_mut().await;
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
        let mut guard = self.cat_mut().await;
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
        let cat = self.cat().await;
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
        let cat = self.cat().await;
        let items = cat
            .scheduling_policies
            .iter()
            .map(|(k, p)| (k.clone(), json!({ "arn": p.arn })))
            .collect();
        let scope = token::TokenScope::new("ListSchedulingPolicies", []);
        let (page, token) = token::paginate(&scope, items, max_results, next_token)?;
        Ok(json!({ "schedulingPolicies": page, "nextToken": token }))
    }
}
