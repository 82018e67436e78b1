//! Fair-share usage: decayed vCPU-seconds per (queue, share identifier), plus what runs now.

use super::super::table::JobTable;
use crate::model::Catalog;
use crate::scheduler::Resources;
use std::collections::HashMap;

/// AWS Batch: a `shareDecaySeconds` of zero means its minimum window, 600 seconds.
const DEFAULT_DECAY_SECONDS: f64 = 600.0;

/// Decayed vCPU-seconds per (queue ARN, share), and when each was last decayed.
#[derive(Default)]
pub(in crate::engine) struct ShareHistory {
    used: HashMap<(String, String), (f64, i64)>,
    /// Attempts ended since the last pass: (queue ARN, share, vCPU-seconds, when). Each decays
    /// from its own end, not from the last pass: a long job that ended while no pass ran (nothing
    /// waited) would otherwise be charged only e^(-duration/decay) of what it used.
    ended: Vec<(String, String, f64, i64)>,
}

impl ShareHistory {
    /// Adds an ended attempt's vCPU-seconds to its share's history.
    pub fn record(&mut self, queue_arn: &str, share: &str, vcpu_seconds: f64, now: i64) {
        self.ended
            .push((queue_arn.to_string(), share.to_string(), vcpu_seconds, now));
    }

    /// Each share's usage for the scheduler, keyed by (queue index, share): the history
    /// decayed to `now` and averaged over the decay window, plus the vCPUs its jobs hold now.
    pub fn usage(
        &mut self,
        cat: &Catalog,
        queue_idx: &HashMap<&str, usize>,
        table: &JobTable,
        now: i64,
    ) -> HashMap<(usize, String), f64> {
        let decayed = |v: f64, since: i64, decay: f64| {
            let dt = ((now - since).max(0) as f64) / 1000.0;
            v * (-dt / decay).exp()
        };
        for ((q, _), (v, at)) in self.used.iter_mut() {
            *v = decayed(*v, *at, decay_seconds(cat, q));
            *at = now;
        }
        for (q, share, v, at) in self.ended.drain(..) {
            let add = decayed(v, at, decay_seconds(cat, &q));
            self.used.entry((q, share)).or_insert((0.0, now)).0 += add;
        }
        let mut usage = HashMap::new();
        for ((q, share), (v, _)) in &self.used {
            let Some(&qi) = queue_idx.get(q.as_str()) else {
                continue;
            };
            let decay = decay_seconds(cat, q);
            // Average vCPUs over the decay window, comparable with the vCPUs running now.
            usage.insert((qi, share.clone()), *v / decay);
        }
        for (_, job) in table.running() {
            if let (Some(share), Some(&qi)) = (
                &job.d.share_identifier,
                queue_idx.get(job.d.job_queue.as_str()),
            ) {
                *usage.entry((qi, share.clone())).or_insert(0.0) += vcpus(job.need);
            }
        }
        usage
    }
}

fn vcpus(r: Resources) -> f64 {
    r.milli_vcpus as f64 / 1000.0
}

/// `shareDecaySeconds` of the scheduling policy of queue `queue_arn`.
fn decay_seconds(cat: &Catalog, queue_arn: &str) -> f64 {
    cat.queues
        .values()
        .find(|x| x.job_queue_arn == queue_arn)
        .and_then(|x| x.scheduling_policy_arn.as_ref())
        .and_then(|arn| cat.scheduling_policies.values().find(|p| &p.arn == arn))
        .and_then(|p| p.fairshare_policy.as_ref())
        .and_then(|f| f.share_decay_seconds)
        .filter(|d| *d > 0)
        .map_or(DEFAULT_DECAY_SECONDS, f64::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_decays_exponentially_over_the_window() {
        let mut h = ShareHistory::default();
        let cat = Catalog::default();
        let q = "arn:q".to_string();
        let idx: HashMap<&str, usize> = [(q.as_str(), 0)].into_iter().collect();
        h.record(&q, "a", 600.0, 0);
        let table = JobTable::default();
        let now = h.usage(&cat, &idx, &table, 0)[&(0, "a".to_string())];
        assert!((now - 1.0).abs() < 1e-9, "{now}");
        // One decay window later, e^-1 of it is left.
        let later = h.usage(&cat, &idx, &table, 600_000)[&(0, "a".to_string())];
        assert!((later - (-1.0f64).exp()).abs() < 1e-9, "{later}");
    }
}
