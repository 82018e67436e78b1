//! GetJobQueueSnapshot: the front of one queue in the order the scheduler will start it, and
//! what the queue's jobs hold now. Read-only; the order comes from `scheduler::dispatch_order`,
//! the pass's own turn code, over the share usage the next pass would see.

use super::super::Engine;
use super::super::job::{WaitKey, add};
use super::snapshot::fair_share_view;
use crate::batch::dispatch::QueueSnapshot;
use crate::model::{Catalog, ResourceState};
use crate::scheduler::{self, JobView, QueueView, Resources};
use std::collections::{BTreeMap, HashMap};

/// How many jobs `frontOfQueue` lists, as AWS Batch does.
pub(in crate::engine) const FRONT_OF_QUEUE: usize = 100;

impl Engine {
    pub(in crate::engine) fn queue_snapshot(
        &mut self,
        cat: &Catalog,
        queue_arn: &str,
        now: i64,
    ) -> QueueSnapshot {
        let mut out = QueueSnapshot {
            at: now,
            ..QueueSnapshot::default()
        };
        // Deleted since the API resolved it: nothing waits in it any more.
        let Some(q) = cat.queues.values().find(|q| q.job_queue_arn == queue_arn) else {
            return out;
        };
        let fair_share = fair_share_view(cat, q);
        let is_fair_share = fair_share.is_some();
        let queue_idx: HashMap<&str, usize> = [(queue_arn, 0)].into_iter().collect();
        let share_usage = self.pass.shares.usage(cat, &queue_idx, &self.table, now);

        // Within a share the order is fixed, so each share's first FRONT_OF_QUEUE jobs are all
        // the front can come from, however deep the backlog.
        let mut ids: Vec<&str> = Vec::new();
        let mut jobs: Vec<JobView> = Vec::new();
        if let Some(members) = self.table.runnable().by_queue.get(queue_arn) {
            let mut from: Option<WaitKey> = None;
            loop {
                let mut range = match &from {
                    None => members.range::<WaitKey, _>(..),
                    Some(k) => members.range::<WaitKey, _>(k..),
                }
                .peekable();
                let Some((first, _)) = range.peek() else {
                    break;
                };
                let share = first.share.clone();
                for (k, w) in range
                    .take_while(|(k, _)| k.share == share)
                    .take(FRONT_OF_QUEUE)
                {
                    ids.push(k.id.as_str());
                    jobs.push(JobView {
                        queue: 0,
                        share: (!k.share.is_empty()).then(|| k.share.clone()),
                        priority: k.priority.0,
                        created_at: k.created_at,
                        need: w.need,
                        // The order a queue's jobs are taken in does not depend on what they
                        // hold; whether one can start now does, and that is the pass's.
                        consumables: Vec::new(),
                    });
                }
                from = Some(WaitKey::after_share(&share));
            }
        }
        let snap = scheduler::Snapshot {
            envs: Vec::new(),
            queues: vec![QueueView {
                name: q.job_queue_name.clone(),
                priority: q.priority,
                enabled: q.state == ResourceState::Enabled,
                envs: Vec::new(),
                fair_share,
            }],
            consumables: Vec::new(),
            jobs,
            share_usage,
        };
        out.front = scheduler::dispatch_order(&snap, 0, FRONT_OF_QUEUE)
            .into_iter()
            .map(|j| {
                let id = ids[j];
                let since = self
                    .table
                    .get(id)
                    .map(|job| job.d.internal.runnable_since.unwrap_or(job.d.created_at))
                    .unwrap_or(snap.jobs[j].created_at);
                (id.to_string(), since)
            })
            .collect();

        let mut by_share: BTreeMap<&str, f64> = BTreeMap::new();
        for (_, job) in self.table.running() {
            if job.d.job_queue != queue_arn {
                continue;
            }
            out.used = add(out.used, job.need);
            if let Some(share) = job.d.share_identifier.as_deref().filter(|s| !s.is_empty()) {
                *by_share.entry(share).or_default() += vcpus(job.need);
            }
        }
        if is_fair_share {
            let mut shares: Vec<(String, f64)> = by_share
                .into_iter()
                .map(|(s, v)| (s.to_string(), v))
                .collect();
            // Stable: equal usage keeps the BTreeMap's name order.
            shares.sort_by(|a, b| b.1.total_cmp(&a.1));
            out.shares = Some(shares);
        }
        out
    }
}

fn vcpus(r: Resources) -> f64 {
    r.milli_vcpus as f64 / 1000.0
}
