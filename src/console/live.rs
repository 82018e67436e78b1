//! The overview's figures, gathered from the same operations the API serves, and a ring of
//! samples for the charts: one every [`PERIOD`], [`KEEP`] of them (the last hour).
//!
//! The figures are cached for [`FRESH`]: every open overview polls them, and counting jobs by
//! queue and status is one grouped scan of the jobs table however many browsers ask.

use super::Console;
use super::error::ConsoleResult;
use crate::api::AppState;
use crate::metrics;
use crate::model::{DescribeRequest, JOB_STATUSES};
use crate::util::time::now_ms;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

pub const PERIOD: Duration = Duration::from_secs(10);
const KEEP: usize = 360;
const FRESH: Duration = Duration::from_secs(2);
/// Describe pages followed per resource kind: the console shows at most this many × 100.
const MAX_PAGES: usize = 10;
/// Front-of-queue jobs read to find the oldest RUNNABLE one.
const FRONT: usize = 10;

#[derive(Debug, Clone, Serialize)]
pub struct Oldest {
    pub job_id: String,
    pub job_name: String,
    pub age_ms: i64,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueueView {
    pub name: String,
    pub state: String,
    pub status: String,
    pub priority: i64,
    /// Status → jobs (array children included), every status present.
    pub counts: BTreeMap<String, i64>,
    pub oldest_runnable: Option<Oldest>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EnvView {
    pub name: String,
    pub state: String,
    pub status: String,
    /// MANAGED or UNMANAGED.
    pub kind: String,
    /// EC2, SPOT, FARGATE, LOCAL, ...
    pub resource_type: String,
    pub desired_vcpus: f64,
    pub min_vcpus: f64,
    pub max_vcpus: f64,
    /// What the fleet offers now, as the engine's last pass saw it.
    pub fleet_vcpus: f64,
    pub used_vcpus: f64,
    pub spot: i64,
    pub on_demand: i64,
    /// Live instances by type and purchase option: `(type, "SPOT" | "ON_DEMAND", count)`.
    pub running_types: Vec<(String, &'static str, i64)>,
    /// The types the environment allows (`computeResources.instanceTypes`).
    pub instance_types: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    pub at: i64,
    pub queues: Vec<QueueView>,
    pub envs: Vec<EnvView>,
}

/// One point of the charts.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    pub t: i64,
    /// SUBMITTED + PENDING + RUNNABLE.
    pub queued: i64,
    pub runnable: i64,
    /// STARTING + RUNNING.
    pub running: i64,
    pub fleet_vcpus: f64,
    pub used_vcpus: f64,
    /// The environments' desired vCPUs: what the scaler was asked for.
    pub desired_vcpus: f64,
}

impl Overview {
    pub fn sample(&self) -> Sample {
        let count = |names: &[&str]| -> i64 {
            self.queues
                .iter()
                .flat_map(|q| names.iter().map(|n| q.counts.get(*n).copied().unwrap_or(0)))
                .sum()
        };
        Sample {
            t: self.at,
            queued: count(&["SUBMITTED", "PENDING", "RUNNABLE"]),
            runnable: count(&["RUNNABLE"]),
            running: count(&["STARTING", "RUNNING"]),
            fleet_vcpus: self.envs.iter().map(|e| e.fleet_vcpus).sum(),
            used_vcpus: self.envs.iter().map(|e| e.used_vcpus).sum(),
            desired_vcpus: self.envs.iter().map(|e| e.desired_vcpus).sum(),
        }
    }
}

#[derive(Default)]
pub struct Live {
    ring: Mutex<VecDeque<Sample>>,
    /// The figures and when their gathering *started*: a slow gathering (a loaded store) must
    /// not stamp figures fresher than they are, nor replace ones gathered after it began.
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    figures: Option<(Instant, Arc<Overview>)>,
    /// Bumped by [`Live::invalidate`]: a gathering that began before an action must not put
    /// back figures from before it.
    generation: u64,
}

impl Live {
    pub fn samples(&self) -> Vec<Sample> {
        self.ring
            .lock()
            .map(|r| r.iter().copied().collect())
            .unwrap_or_default()
    }

    fn record(&self, s: Sample) {
        if let Ok(mut r) = self.ring.lock() {
            if r.len() == KEEP {
                r.pop_front();
            }
            r.push_back(s);
        }
    }

    /// Forgets the cached figures: after an action, the page it returns to shows its effect.
    pub fn invalidate(&self) {
        if let Ok(mut c) = self.cache.lock() {
            c.figures = None;
            c.generation += 1;
        }
    }

    /// The figures, at most [`FRESH`] old.
    pub async fn overview(&self, app: &AppState) -> ConsoleResult<Arc<Overview>> {
        let generation = match self.cache.lock() {
            Ok(c) => {
                if let Some((at, o)) = c.figures.as_ref()
                    && at.elapsed() < FRESH
                {
                    return Ok(o.clone());
                }
                c.generation
            }
            Err(_) => 0,
        };
        let started = Instant::now();
        let o = Arc::new(gather(app).await?);
        if let Ok(mut c) = self.cache.lock()
            && c.generation == generation
            && c.figures.as_ref().is_none_or(|(at, _)| *at < started)
        {
            c.figures = Some((started, o.clone()));
        }
        Ok(o)
    }
}

/// Samples every [`PERIOD`] for as long as the console's router lives: the task holds it only
/// weakly, so it ends when the server drops the router at shutdown.
pub fn spawn_sampler(console: &Arc<Console>) {
    if tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    let weak: Weak<Console> = Arc::downgrade(console);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(console) = weak.upgrade() else { break };
            match console.live.overview(&console.app).await {
                Ok(o) => console.live.record(o.sample()),
                Err(e) => tracing::debug!(error = %e, "console sample skipped"),
            }
        }
    });
}

/// Every item of a Describe operation's `key` list, following `nextToken` a few pages.
async fn describe_all<F, Fut>(key: &str, call: F) -> ConsoleResult<Vec<Value>>
where
    F: Fn(DescribeRequest) -> Fut,
    Fut: std::future::Future<Output = crate::error::BatchResult<Value>>,
{
    let mut out = Vec::new();
    let mut token = None;
    for _ in 0..MAX_PAGES {
        let page = call(DescribeRequest {
            next_token: token.take(),
            ..Default::default()
        })
        .await?;
        if let Some(items) = page.get(key).and_then(Value::as_array) {
            out.extend(items.iter().cloned());
        }
        match page.get("nextToken").and_then(Value::as_str) {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => break,
        }
    }
    Ok(out)
}

/// The strings of a JSON array (none when `v` is absent or not an array).
pub fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

pub fn text(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("").to_string()
}

fn num(v: Option<&Value>) -> f64 {
    v.and_then(Value::as_f64).unwrap_or(0.0)
}

async fn gather(app: &AppState) -> ConsoleResult<Overview> {
    let batch = &app.batch;
    let at = now_ms();
    let queues = describe_all("jobQueues", |r| batch.describe_job_queues(r)).await?;
    let envs = describe_all("computeEnvironments", |r| {
        batch.describe_compute_environments(r)
    })
    .await?;
    let mut counts: HashMap<String, BTreeMap<String, i64>> = HashMap::new();
    for (queue, status, n) in batch
        .store()
        .count_jobs_by_queue_status()
        .await
        .map_err(crate::error::BatchError::from)?
    {
        *counts.entry(queue).or_default().entry(status).or_default() += n;
    }
    let mut queue_views = Vec::with_capacity(queues.len());
    for q in &queues {
        let arn = text(q, "jobQueueArn");
        let mut c: BTreeMap<String, i64> =
            JOB_STATUSES.iter().map(|s| (s.to_string(), 0)).collect();
        c.extend(counts.remove(&arn).unwrap_or_default());
        let oldest_runnable = if c.get("RUNNABLE").copied().unwrap_or(0) > 0 {
            oldest_runnable(app, &arn, at).await
        } else {
            None
        };
        queue_views.push(QueueView {
            name: text(q, "jobQueueName"),
            state: text(q, "state"),
            status: text(q, "status"),
            priority: q.get("priority").and_then(Value::as_i64).unwrap_or(0),
            counts: c,
            oldest_runnable,
        });
    }
    let figures = metrics::figures();
    let env_views = envs
        .iter()
        .map(|e| {
            let name = text(e, "computeEnvironmentName");
            let cr = e.get("computeResources");
            let (total, used) = figures.vcpus.get(&name).copied().unwrap_or((0, 0));
            let (spot, on_demand) = figures.instances.get(&name).copied().unwrap_or((0, 0));
            EnvView {
                state: text(e, "state"),
                status: text(e, "status"),
                kind: text(e, "type"),
                resource_type: cr.map(|c| text(c, "type")).unwrap_or_default(),
                desired_vcpus: num(cr.and_then(|c| c.get("desiredvCpus"))),
                min_vcpus: num(cr.and_then(|c| c.get("minvCpus"))),
                max_vcpus: num(cr.and_then(|c| c.get("maxvCpus"))),
                fleet_vcpus: total as f64 / 1000.0,
                used_vcpus: used as f64 / 1000.0,
                spot,
                on_demand,
                running_types: figures
                    .instance_types
                    .get(&name)
                    .into_iter()
                    .flatten()
                    .map(|((t, spot), n)| (t.clone(), if *spot { "SPOT" } else { "ON_DEMAND" }, *n))
                    .collect(),
                instance_types: strings(cr.and_then(|c| c.get("instanceTypes"))),
                name,
            }
        })
        .collect();
    Ok(Overview {
        at,
        queues: queue_views,
        envs: env_views,
    })
}

/// The oldest of the jobs at the front of the queue, as the engine orders them, with the reason
/// it waits. `None` when no engine runs here (a follower replica) or the queue moved meanwhile.
async fn oldest_runnable(app: &AppState, queue_arn: &str, now: i64) -> Option<Oldest> {
    let snap = app.batch.job_queue_snapshot(queue_arn).await.ok()?;
    let ids: Vec<String> = snap
        .pointer("/frontOfQueue/jobs")?
        .as_array()?
        .iter()
        .filter_map(|j| j.get("jobArn")?.as_str()?.rsplit('/').next())
        .take(FRONT)
        .map(str::to_string)
        .collect();
    if ids.is_empty() {
        return None;
    }
    let jobs = app.batch.describe_jobs(&ids).await.ok()?;
    let oldest = jobs
        .get("jobs")?
        .as_array()?
        .iter()
        .filter(|j| j.get("status").and_then(Value::as_str) == Some("RUNNABLE"))
        .min_by_key(|j| {
            j.get("createdAt")
                .and_then(Value::as_i64)
                .unwrap_or(i64::MAX)
        })?;
    Some(Oldest {
        job_id: text(oldest, "jobId"),
        job_name: text(oldest, "jobName"),
        age_ms: now
            - oldest
                .get("createdAt")
                .and_then(Value::as_i64)
                .unwrap_or(now),
        reason: text(oldest, "statusReason"),
    })
}
