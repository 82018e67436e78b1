//! The engine: the control loop that moves jobs through AWS Batch's lifecycle.
//!
//! One actor owns every unfinished job in memory and is the only writer of their state after
//! submission; the API reaches it through [`EngineHandle`]. Each round it
//! 1. applies what arrived (new jobs, cancel/terminate/tag commands, runtime events, timers),
//! 2. runs one scheduling pass if anything could have changed a placement,
//! 3. writes every changed job in one group commit,
//! 4. and only then answers commands, launches attempts and sends signals.
//!
//! Step 4 after step 3 is what makes restarts safe: an attempt is never launched, nor a reply
//! sent, for a state the store does not hold. Rounds are idempotent over what they observe: a
//! stale or duplicate runtime event (an attempt that is no longer current) is ignored.

pub mod limits;
pub mod retry;

use crate::batch::{Batch, job_row};
use crate::compute::fleet::{Demand, EnvFleet, FleetView};
use crate::compute::{AttemptSpec, ExpectedAttempt, Runtime, RuntimeEvent, StopSignal, Target};
use crate::error::{BatchError, BatchResult};
use crate::model::arn::{JOB_LOG_GROUP, name_of_arn, stream_name};
use crate::model::*;
use crate::scheduler::{self, EnvView, FairShareView, JobView, QueueView, Resources, ShareWeight};
use crate::store::JobRow;
use crate::util::time::now_ms;
use retry::{AttemptEnd, Outcome};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// AWS's `statusReason` for an attempt whose container exited.
const EXITED: &str = "Essential container in task exited";
const TIMED_OUT: &str = "Job attempt duration exceeded timeout";
/// Most inputs applied in one round before writing, so one round's transaction stays bounded.
const MAX_ROUND_INPUTS: usize = 20_000;
const TICK: Duration = Duration::from_secs(1);
const PERIODIC_PASS_MS: i64 = 10_000;
/// A pass that cannot place anything (no usable environment has a free vCPU) only refreshes the
/// waiting jobs' reasons and the demand the AWS driver provisions for; it is put off for up to
/// this long, so that a stream of submissions into a full or DISABLED environment does not pay
/// for one pass each. Short enough that new demand reaches a CreateFleet well within a second.
const IDLE_PASS_INTERVAL_MS: i64 = 100;
/// Waiting jobs' reasons are recomputed at most this often. A reason is a formatted text per
/// waiting head job (100 per queue), and passes run once per freed slot: at 2,000 jobs/s they
/// cost more than the placements.
const REASONS_EVERY_MS: i64 = 500;
/// The engine's own transitions wait up to this long to be written together. A short job's
/// STARTING, RUNNING and SUCCEEDED then cost one row write instead of three, and a dozen jobs
/// share a commit. Anything a caller waits for (a command's answer, an ECS launch) is written at
/// once.
const WRITE_COALESCE: Duration = Duration::from_millis(10);

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Between SIGTERM and SIGKILL when a job is terminated or times out (AWS: 30 s).
    pub kill_grace: Duration,
    /// Memory a LOCAL compute environment offers.
    pub host_memory_mib: u64,
    /// The AWS driver's fleets, when the server runs one: MANAGED EC2/SPOT and UNMANAGED
    /// environments schedule onto their registered container instances.
    pub fleet: Option<Arc<FleetView>>,
    /// Spot interruptions of one job retried without spending its attempts; past this, the job
    /// skips SPOT environments.
    pub spot_max_interruptions: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            kill_grace: Duration::from_secs(30),
            host_memory_mib: host_memory_mib(),
            fleet: None,
            spot_max_interruptions: 3,
        }
    }
}

/// MemTotal from /proc/meminfo; 4 GiB where it cannot be read.
pub fn host_memory_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb / 1024)
        .unwrap_or(4096)
}

pub type TagFn = Box<dyn FnOnce(&mut Tags) -> BatchResult<()> + Send>;

pub enum TagsReply {
    Applied(BatchResult<Tags>),
    NotActive(TagFn),
}

enum Input {
    /// Jobs the API has just committed, with their array parent (id, index) for children.
    Submitted(Vec<(JobDetail, Option<(String, i32)>)>),
    Stop {
        job_id: String,
        reason: String,
        terminate: bool,
        reply: oneshot::Sender<BatchResult<StopResult>>,
    },
    /// Hands the closure back when the job is not active: the caller then updates the stored job
    /// itself, which is safe because the engine never writes a finished job again.
    Tags {
        job_id: String,
        f: TagFn,
        reply: oneshot::Sender<TagsReply>,
    },
    /// Queues or compute environments changed: replan.
    Wake,
}

/// What a stop command found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopResult {
    /// The job is active and the stop was applied.
    Applied,
    /// The engine does not hold the job: it is finished, or does not exist.
    NotActive,
}

#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Input>,
    /// Per queue ARN, why its head of queue waits (from the last scheduling pass).
    heads: Arc<std::sync::RwLock<HashMap<String, String>>>,
}

fn gone() -> BatchError {
    BatchError::Unavailable("the engine is shutting down".into())
}

impl EngineHandle {
    pub async fn submitted(&self, jobs: Vec<(JobDetail, Option<(String, i32)>)>) {
        // Dropped only at shutdown; the jobs are durable and are reloaded at the next start.
        let _ = self.tx.send(Input::Submitted(jobs)).await;
    }

    pub async fn stop(
        &self,
        job_id: &str,
        reason: &str,
        terminate: bool,
    ) -> BatchResult<StopResult> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Input::Stop {
                job_id: job_id.to_string(),
                reason: reason.to_string(),
                terminate,
                reply,
            })
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    pub async fn tags(&self, job_id: &str, f: TagFn) -> BatchResult<TagsReply> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Input::Tags {
                job_id: job_id.to_string(),
                f,
                reply,
            })
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }

    /// Why the head of `queue_arn` waits, for RUNNABLE jobs further back that have no reason of
    /// their own (only the head of each queue gets a stored one).
    pub fn head_reason(&self, queue_arn: &str) -> Option<String> {
        self.heads.read().ok()?.get(queue_arn).cloned()
    }

    pub fn wake(&self) {
        let _ = self.tx.try_send(Input::Wake);
    }
}

struct Job {
    d: JobDetail,
    /// (parent id, index) for array children.
    parent: Option<(String, i32)>,
    /// Dependencies not yet SUCCEEDED.
    unmet: usize,
    /// For array parents: children not yet finished, and how many failed.
    children_left: i64,
    children_failed: i64,
    need: Resources,
    /// When SIGKILL is due after a SIGTERM (epoch ms).
    kill_at: Option<i64>,
}

impl Job {
    fn is_parent(&self) -> bool {
        self.d
            .array_properties
            .as_ref()
            .is_some_and(|a| a.size.is_some())
    }

    fn attempt_no(&self) -> u32 {
        self.d.attempts.len() as u32 + 1
    }
}

fn is_final(status: &str) -> bool {
    status == "SUCCEEDED" || status == "FAILED"
}

/// What a job asks for: `resourceRequirements`, else the legacy `vcpus`/`memory`; 1 vCPU by default.
pub fn job_need(d: &JobDetail) -> Resources {
    let mut r = Resources {
        milli_vcpus: 1000,
        memory_mib: 0,
        gpus: 0,
    };
    if let Some(c) = &d.container {
        let p = &c.properties;
        if let Some(v) = p.vcpus {
            r.milli_vcpus = (v.max(0) as u64) * 1000;
        }
        if let Some(m) = p.memory {
            r.memory_mib = m.max(0) as u64;
        }
        for req in p.resource_requirements.iter().flatten() {
            match req.rtype.as_str() {
                "VCPU" => {
                    if let Ok(v) = req.value.parse::<f64>() {
                        r.milli_vcpus = (v * 1000.0).round().max(0.0) as u64;
                    }
                }
                "MEMORY" => {
                    if let Ok(m) = req.value.parse::<u64>() {
                        r.memory_mib = m;
                    }
                }
                "GPU" => {
                    if let Ok(g) = req.value.parse::<u64>() {
                        r.gpus = g;
                    }
                }
                _ => {}
            }
        }
    }
    r
}

fn sub(a: Resources, b: Resources) -> Resources {
    Resources {
        milli_vcpus: a.milli_vcpus.saturating_sub(b.milli_vcpus),
        memory_mib: a.memory_mib.saturating_sub(b.memory_mib),
        gpus: a.gpus.saturating_sub(b.gpus),
    }
}

fn add(a: Resources, b: Resources) -> Resources {
    Resources {
        milli_vcpus: a.milli_vcpus + b.milli_vcpus,
        memory_mib: a.memory_mib + b.memory_mib,
        gpus: a.gpus + b.gpus,
    }
}

/// A command answered after the round's write.
enum Reply {
    Stop(
        oneshot::Sender<BatchResult<StopResult>>,
        BatchResult<StopResult>,
    ),
    Tags(oneshot::Sender<TagsReply>, TagsReply),
}

/// Where a RUNNABLE job stands in its queue: by share identifier, then (fair-share jobs)
/// higher `schedulingPriority` first, then submission time and ID. This is the order in which a
/// pass considers a share's jobs, so a pass can take each share's first jobs without looking at
/// the rest. None of it changes while the job waits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct WaitKey {
    share: String,
    priority: std::cmp::Reverse<i32>,
    created_at: i64,
    id: String,
}

impl WaitKey {
    fn of(job: &Job) -> WaitKey {
        let share = job.d.share_identifier.clone();
        WaitKey {
            // A FIFO queue's jobs carry no share and are taken in submission order alone.
            priority: std::cmp::Reverse(if share.is_some() {
                job.d.scheduling_priority.unwrap_or(0)
            } else {
                0
            }),
            share: share.unwrap_or_default(),
            created_at: job.d.created_at,
            id: job.d.job_id.clone(),
        }
    }

    /// The first key of the share after `share`.
    fn after_share(share: &str) -> WaitKey {
        WaitKey {
            share: format!("{share}\0"),
            priority: std::cmp::Reverse(i32::MAX),
            created_at: i64::MIN,
            id: String::new(),
        }
    }
}

/// What a scheduling pass needs of a RUNNABLE job besides its [`WaitKey`], copied once when it
/// becomes RUNNABLE so a pass never looks up full documents.
struct Waiting {
    /// Interrupted too often on Spot: only non-SPOT environments of the queue.
    avoid_spot: bool,
    need: Resources,
}

/// How many waiting jobs of each (queue, share) one pass considers. A pass over every RUNNABLE
/// job cost O(RUNNABLE log RUNNABLE) for each freed slot (4 ms at 100,000 jobs, paid per
/// dispatch); over a window it costs O(window) however long the queue. The price: a job deeper
/// than this in its share is not backfilled past the ones ahead of it until they move.
const PASS_WINDOW: usize = 2_000;

/// The window of a pass between two reason passes (every `REASONS_EVERY_MS`), plus four jobs
/// per free vCPU: such a pass runs once per freed slot and can place only what is free, so
/// looking 2,000 jobs deep each time cost more than everything else the engine does per job.
/// A job deeper than this behind a head that does not fit is backfilled by the next full pass.
const QUICK_WINDOW: usize = 64;

/// The RUNNABLE jobs, by queue ARN, in pass order.
#[derive(Default)]
struct Runnable {
    by_queue: HashMap<String, std::collections::BTreeMap<WaitKey, Waiting>>,
    len: usize,
}

impl Runnable {
    fn insert(&mut self, job: &Job) {
        let w = Waiting {
            avoid_spot: job.d.internal.avoid_spot == Some(true),
            need: job.need,
        };
        let queue = job.d.job_queue.as_str();
        let m = match self.by_queue.get_mut(queue) {
            Some(m) => m,
            None => self.by_queue.entry(queue.to_string()).or_default(),
        };
        if m.insert(WaitKey::of(job), w).is_none() {
            self.len += 1;
        }
    }

    fn remove(&mut self, job: &Job) {
        if let Some(m) = self.by_queue.get_mut(job.d.job_queue.as_str())
            && m.remove(&WaitKey::of(job)).is_some()
        {
            self.len -= 1;
        }
    }

    fn len(&self) -> usize {
        self.len
    }
}

/// A relaxed write in flight: its rows, for a retry, and the jobs that finished before it, kept
/// in `done` until it lands (a dependent registered meanwhile must not read their old status
/// from the store).
struct PendingWrite {
    rows: Vec<JobRow>,
    finished: Vec<String>,
    /// Attempts whose end this write stores (`Runtime::end_stored` once it lands).
    ended: Vec<(String, u32)>,
    task: tokio::task::JoinHandle<crate::store::StoreResult<()>>,
}

pub struct Engine {
    batch: Arc<Batch>,
    runtime: Arc<dyn Runtime>,
    cfg: EngineConfig,
    inputs: mpsc::Receiver<Input>,
    events: mpsc::Receiver<RuntimeEvent>,
    /// Every unfinished job (and unfinished array parent).
    /// Boxed: a job is ~1 KiB, and a hash table keeps up to half its slots empty; empty slots
    /// of pointers cost 8 bytes, empty slots of jobs a kilobyte (0.3 KiB per job at 100,000).
    jobs: HashMap<String, Box<Job>>,
    /// Dependency → jobs waiting on it.
    dependents: HashMap<String, Vec<String>>,
    runnable: Runnable,
    /// STARTING or RUNNING.
    running: HashSet<String>,
    /// Resources in use per compute environment name.
    used: HashMap<String, Resources>,
    /// Resources in use per ECS container instance ARN (AWS environments).
    on_instance: HashMap<String, Resources>,
    /// Jobs that finished this round, kept until written (dependents registered in the same round
    /// must see their final status, which the store does not have yet).
    done: HashMap<String, Box<Job>>,
    dirty: HashSet<String>,
    replies: Vec<Reply>,
    launches: Vec<AttemptSpec>,
    signals: Vec<(String, u32, StopSignal)>,
    replan: bool,
    /// When the last scheduling pass ran (epoch ms).
    last_pass: i64,
    /// When the last pass that gave reasons ran (epoch ms).
    last_reasons: i64,
    /// The relaxed write the engine did not wait for (at most one in flight).
    pending: Option<PendingWrite>,
    /// Since when `dirty` has rows waiting to be written.
    dirty_since: Option<std::time::Instant>,
    /// Attempts reported ended since the last write.
    ended: Vec<(String, u32)>,
    /// Decayed vCPU-seconds per (queue ARN, share), and when it was last decayed.
    share_history: HashMap<(String, String), (f64, i64)>,
    heads: Arc<std::sync::RwLock<HashMap<String, String>>>,
}

impl Engine {
    /// Loads the unfinished jobs, reconciles attempts that were running with the runtime, and
    /// spawns the loop. The returned handle is what the API talks to.
    pub async fn start(
        batch: Arc<Batch>,
        runtime: Arc<dyn Runtime>,
        events: mpsc::Receiver<RuntimeEvent>,
        cfg: EngineConfig,
        mut shutdown: watch::Receiver<bool>,
    ) -> BatchResult<(EngineHandle, tokio::task::JoinHandle<()>)> {
        let (tx, inputs) = mpsc::channel(4096);
        let mut engine = Engine {
            batch: batch.clone(),
            runtime,
            cfg,
            inputs,
            events,
            jobs: HashMap::new(),
            dependents: HashMap::new(),
            runnable: Runnable::default(),
            running: HashSet::new(),
            used: HashMap::new(),
            on_instance: HashMap::new(),
            done: HashMap::new(),
            dirty: HashSet::new(),
            replies: Vec::new(),
            launches: Vec::new(),
            signals: Vec::new(),
            replan: true,
            share_history: HashMap::new(),
            last_pass: 0,
            last_reasons: 0,
            pending: None,
            dirty_since: None,
            ended: Vec::new(),
            heads: Arc::default(),
        };
        let expected = engine.load().await?;
        let n = engine.jobs.len();
        tracing::info!(active_jobs = n, running = expected.len(), "engine loaded");
        // Write what loading decided (e.g. dependents of jobs that failed while we were down).
        engine.flush_all().await;
        // Always, even with nothing expected: the runtime also clears what nobody expects.
        if let Err(e) = engine.runtime.recover(expected).await {
            tracing::error!(error = %e, "runtime recovery failed");
        }
        let handle = EngineHandle {
            tx,
            heads: engine.heads.clone(),
        };
        batch.attach_engine(handle.clone());
        let task = tokio::spawn(async move {
            loop {
                let wake = engine.next_wake();
                tokio::select! {
                    biased;
                    _ = shutdown.changed() => break,
                    Some(i) = engine.inputs.recv() => engine.apply_input(i).await,
                    Some(e) = engine.events.recv() => engine.apply_event(e),
                    // A deferred pass is due within IDLE_PASS_INTERVAL_MS even if nothing else
                    // happens.
                    _ = tokio::time::sleep(wake) => {}
                }
                engine.round().await;
            }
            engine.flush_all().await;
            tracing::info!("engine stopped");
        });
        Ok((handle, task))
    }

    #[tracing::instrument(name = "reconcile", level = "debug", skip_all)]
    async fn round(&mut self) {
        for _ in 0..MAX_ROUND_INPUTS {
            if let Ok(i) = self.inputs.try_recv() {
                self.apply_input(i).await;
            } else if let Ok(e) = self.events.try_recv() {
                self.apply_event(e);
            } else {
                break;
            }
        }
        let now = now_ms();
        self.timers(now);
        // Time-based rules (jobStateTimeLimitActions, fair-share decay, reasons) need a pass
        // now and then even when nothing happens.
        if self.runnable.len() != 0 && now - self.last_pass >= PERIODIC_PASS_MS {
            self.replan = true;
        }
        if self.replan {
            let cat = self.batch.catalog().await;
            if self.has_room(&cat) || now - self.last_pass >= IDLE_PASS_INTERVAL_MS {
                self.replan = false;
                self.last_pass = now;
                self.schedule(&cat, now);
            }
        }
        self.flush().await;
    }

    // ------------------------------------------------------------ loading

    async fn load(&mut self) -> BatchResult<Vec<ExpectedAttempt>> {
        let store = self.batch.store().clone();
        let rows = store
            .jobs_with_status(&["SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING"])
            .await?;
        let mut jobs = Vec::with_capacity(rows.len());
        for r in rows {
            let d: JobDetail = serde_json::from_str(&r.doc).map_err(|e| {
                BatchError::Internal(format!("stored job {} is unreadable: {e}", r.job_id))
            })?;
            let parent = r.array_parent.clone().zip(r.array_index);
            jobs.push((d, parent));
        }
        // An array job whose children were not yet written when the server stopped gets them
        // now (SubmitJob returns once the parent alone is durable).
        let mut born = Vec::new();
        // Per array parent, its children by status, for the roll-up below.
        let mut child_counts: HashMap<String, Vec<(String, i64)>> = HashMap::new();
        for (d, parent) in &jobs {
            let size = d.array_properties.as_ref().and_then(|a| a.size);
            if parent.is_some() || size.unwrap_or(0) <= 0 {
                continue;
            }
            let counts = store.count_children_by_status(&d.job_id).await?;
            if !counts.is_empty() {
                child_counts.insert(d.job_id.clone(), counts);
            } else {
                let deps_unmet = d.depends_on.iter().flatten().any(|x| x.dep_type.is_none());
                let (rows, details) = self.batch.array_children(d, deps_unmet)?;
                store.upsert_jobs(rows).await?;
                tracing::info!(job_id = %d.job_id, children = details.len(), "array children written at start");
                born.extend(details);
            }
        }
        jobs.extend(born);
        let mut expected = Vec::new();
        let cat = self.batch.catalog().await;
        for (d, _) in &jobs {
            if matches!(d.status.as_str(), "STARTING" | "RUNNING") {
                let target = match (
                    &d.internal.container_instance,
                    &d.internal.compute_environment,
                ) {
                    (Some(ci), Some(env)) => Target::Ecs {
                        env: env.clone(),
                        cluster: cat
                            .compute_environments
                            .get(env)
                            .and_then(|ce| ce.ecs_cluster_arn.as_deref())
                            .map(|a| name_of_arn(a).to_string())
                            .unwrap_or_default(),
                        container_instance_arn: ci.clone(),
                    },
                    _ => Target::Local,
                };
                expected.push(ExpectedAttempt {
                    job_id: d.job_id.clone(),
                    attempt: d.attempts.len() as u32 + 1,
                    task_id: d.internal.task_id.clone().unwrap_or_default(),
                    target,
                });
            }
        }
        let parents: Vec<String> = jobs
            .iter()
            .filter(|(d, _)| {
                d.array_properties
                    .as_ref()
                    .is_some_and(|a| a.size.is_some())
            })
            .map(|(d, _)| d.job_id.clone())
            .collect();
        self.register(jobs).await?;
        for p in parents {
            let counts = match child_counts.remove(&p) {
                Some(c) => c,
                None => store.count_children_by_status(&p).await?,
            };
            if let Some(job) = self.jobs.get_mut(&p) {
                job.children_left = counts
                    .iter()
                    .filter(|(s, _)| !is_final(s))
                    .map(|(_, n)| n)
                    .sum();
                job.children_failed = counts
                    .iter()
                    .filter(|(s, _)| s == "FAILED")
                    .map(|(_, n)| n)
                    .sum();
            }
            self.maybe_finish_parent(&p, now_ms());
        }
        Ok(expected)
    }

    /// Adds jobs to the engine and resolves their dependencies.
    async fn register(&mut self, jobs: Vec<(JobDetail, Option<(String, i32)>)>) -> BatchResult<()> {
        let now = now_ms();
        // Plain dependencies of array parents also hold back each child.
        let mut parent_deps: HashMap<String, Vec<String>> = HashMap::new();
        for (d, parent) in &jobs {
            if parent.is_none()
                && d.array_properties
                    .as_ref()
                    .is_some_and(|a| a.size.is_some())
            {
                let deps = d
                    .depends_on
                    .iter()
                    .flatten()
                    .filter(|dep| dep.dep_type.is_none())
                    .filter_map(|dep| dep.job_id.clone())
                    .collect();
                parent_deps.insert(d.job_id.clone(), deps);
            }
        }
        let mut ids = Vec::with_capacity(jobs.len());
        for (d, parent) in jobs {
            if is_final(&d.status) || self.jobs.contains_key(&d.job_id) {
                continue;
            }
            let id = d.job_id.clone();
            let is_parent = d
                .array_properties
                .as_ref()
                .is_some_and(|a| a.size.is_some());
            let job = Job {
                need: job_need(&d),
                children_left: if is_parent {
                    d.array_properties
                        .as_ref()
                        .and_then(|a| a.size)
                        .unwrap_or(0) as i64
                } else {
                    0
                },
                children_failed: 0,
                unmet: 0,
                kill_at: None,
                parent,
                d,
            };
            match job.d.status.as_str() {
                "RUNNABLE" => {
                    self.runnable.insert(&job);
                    self.replan = true;
                }
                "STARTING" | "RUNNING" => {
                    if let Some(env) = &job.d.internal.compute_environment {
                        let u = self.used.entry(env.clone()).or_default();
                        *u = add(*u, job.need);
                    }
                    if let Some(ci) = &job.d.internal.container_instance {
                        let u = self.on_instance.entry(ci.clone()).or_default();
                        *u = add(*u, job.need);
                    }
                    self.running.insert(id.clone());
                }
                _ => {}
            }
            self.jobs.insert(id.clone(), Box::new(job));
            ids.push(id);
        }
        // Dependencies the engine does not hold are finished (or unknown): ask the store once.
        let mut wanted: HashMap<String, Vec<String>> = HashMap::new();
        for id in &ids {
            let Some(job) = self.jobs.get(id) else {
                continue;
            };
            let mut deps: Vec<String> = job
                .d
                .depends_on
                .iter()
                .flatten()
                .filter(|dep| job.parent.is_some() || job.is_parent() || dep.dep_type.is_none())
                .filter(|dep| {
                    dep.dep_type.as_deref() != Some("N_TO_N")
                        && dep.dep_type.as_deref() != Some("SEQUENTIAL")
                })
                .filter_map(|dep| dep.job_id.clone())
                .collect();
            if let Some((p, _)) = &job.parent {
                if let Some(pd) = parent_deps.get(p) {
                    deps.extend(pd.iter().cloned());
                } else if let Some(pj) = self.jobs.get(p) {
                    deps.extend(
                        pj.d.depends_on
                            .iter()
                            .flatten()
                            .filter(|dep| dep.dep_type.is_none())
                            .filter_map(|dep| dep.job_id.clone()),
                    );
                }
            }
            deps.sort();
            deps.dedup();
            wanted.insert(id.clone(), deps);
        }
        let unknown: Vec<String> = wanted
            .values()
            .flatten()
            .filter(|d| !self.jobs.contains_key(*d) && !self.done.contains_key(*d))
            .cloned()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let mut stored: HashMap<String, String> = HashMap::new();
        for chunk in unknown.chunks(500) {
            for r in self.batch.store().get_jobs(chunk).await? {
                stored.insert(r.job_id, r.status);
            }
        }
        for (id, deps) in wanted {
            let mut unmet = 0;
            let mut failed: Option<String> = None;
            for dep in deps {
                let status = self
                    .jobs
                    .get(&dep)
                    .map(|j| j.d.status.clone())
                    .or_else(|| self.done.get(&dep).map(|j| j.d.status.clone()))
                    .or_else(|| stored.get(&dep).cloned());
                match status.as_deref() {
                    Some("SUCCEEDED") => {}
                    Some("FAILED") | None => {
                        failed.get_or_insert(dep);
                    }
                    Some(_) => {
                        unmet += 1;
                        self.dependents.entry(dep).or_default().push(id.clone());
                    }
                }
            }
            if let Some(dep) = failed {
                self.fail(
                    &id,
                    format!("Dependent Job failed: {dep} did not succeed"),
                    now,
                );
                continue;
            }
            if let Some(job) = self.jobs.get_mut(&id) {
                job.unmet = unmet;
                if unmet == 0 && job.d.status == "PENDING" && !job.is_parent() {
                    self.make_runnable(&id, now);
                }
            }
        }
        // Children written after their parent was stopped, or failed through a dependency,
        // share its fate (they are written after SubmitJob returns, or again at a start).
        for id in &ids {
            let Some((p, _)) = self.jobs.get(id).and_then(|j| j.parent.clone()) else {
                continue;
            };
            if let Some(pj) = self.jobs.get(&p)
                && (pj.d.is_cancelled == Some(true) || pj.d.is_terminated == Some(true))
            {
                let reason = pj.d.status_reason.clone().unwrap_or_default();
                let terminate = pj.d.is_terminated == Some(true);
                self.stop(id, &reason, terminate, now);
            } else if let Some(pj) = self.done.get(&p)
                && pj.d.status == "FAILED"
            {
                let reason =
                    pj.d.status_reason
                        .clone()
                        .unwrap_or_else(|| format!("array job {p} failed"));
                self.fail(id, reason, now);
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------ inputs

    async fn apply_input(&mut self, input: Input) {
        match input {
            Input::Submitted(jobs) => {
                // `register` reads the store only for dependencies the engine does not hold.
                if let Err(e) = self.register(jobs).await {
                    tracing::error!(error = %e, "registering submitted jobs failed; they load at the next start");
                }
            }
            Input::Stop {
                job_id,
                reason,
                terminate,
                reply,
            } => {
                let r = self.stop(&job_id, &reason, terminate, now_ms());
                self.replies.push(Reply::Stop(reply, Ok(r)));
            }
            Input::Tags { job_id, f, reply } => {
                // A job finished but not yet written is still the engine's to write.
                let held = match self.jobs.get_mut(&job_id) {
                    Some(j) => Some(j),
                    None => self.done.get_mut(&job_id),
                };
                let r = match held {
                    None => TagsReply::NotActive(f),
                    Some(job) => {
                        let mut tags = job.d.tags.clone().unwrap_or_default();
                        TagsReply::Applied(
                            f(&mut tags)
                                .and_then(|_| {
                                    crate::model::validate::tags("tags", &tags)
                                        .map_err(BatchError::from)
                                })
                                .map(|()| {
                                    job.d.tags = Some(tags.clone());
                                    self.dirty.insert(job_id);
                                    tags
                                }),
                        )
                    }
                };
                self.replies.push(Reply::Tags(reply, r));
            }
            Input::Wake => self.replan = true,
        }
    }

    fn stop(&mut self, job_id: &str, reason: &str, terminate: bool, now: i64) -> StopResult {
        let Some(job) = self.jobs.get(job_id) else {
            return StopResult::NotActive;
        };
        tracing::info!(job_id, terminate, status = %job.d.status, "stop requested");
        if job.is_parent() {
            let size = job
                .d
                .array_properties
                .as_ref()
                .and_then(|a| a.size)
                .unwrap_or(0);
            // Marked first, so that the parent finishing through its children carries this reason.
            if let Some(p) = self.jobs.get_mut(job_id) {
                if terminate {
                    p.d.is_terminated = Some(true);
                } else {
                    p.d.is_cancelled = Some(true);
                }
                p.d.status_reason = Some(reason.to_string());
                self.dirty.insert(job_id.to_string());
            }
            for i in 0..size {
                let child = format!("{job_id}:{i}");
                if self.jobs.contains_key(&child) {
                    self.stop(&child, reason, terminate, now);
                }
            }
            self.maybe_finish_parent(job_id, now);
            return StopResult::Applied;
        }
        match job.d.status.as_str() {
            "SUBMITTED" | "PENDING" | "RUNNABLE" => {
                if let Some(j) = self.jobs.get_mut(job_id) {
                    if terminate {
                        j.d.is_terminated = Some(true);
                    } else {
                        j.d.is_cancelled = Some(true);
                    }
                }
                self.fail(job_id, reason.to_string(), now);
            }
            "STARTING" | "RUNNING" if terminate => {
                let grace = self.cfg.kill_grace.as_millis() as i64;
                if let Some(j) = self.jobs.get_mut(job_id) {
                    j.d.is_terminated = Some(true);
                    j.d.status_reason = Some(reason.to_string());
                    j.kill_at = Some(now + grace);
                    self.signals
                        .push((job_id.to_string(), j.attempt_no(), StopSignal::Term));
                    self.dirty.insert(job_id.to_string());
                }
            }
            // CancelJob does nothing to a job that has started, as in AWS Batch.
            _ => {}
        }
        StopResult::Applied
    }

    fn apply_event(&mut self, ev: RuntimeEvent) {
        let now = now_ms();
        match ev {
            RuntimeEvent::Started {
                job_id,
                attempt,
                task_id,
            } => {
                let Some(job) = self.jobs.get_mut(&job_id) else {
                    return;
                };
                if job.attempt_no() != attempt || job.d.status != "STARTING" {
                    return;
                }
                job.d.status = "RUNNING".into();
                job.d.started_at = Some(now);
                // ECS reports the task ARN; its last segment is the task ID in the stream name.
                let stream = stream_name(&job.d.job_definition, &task_id);
                if let Some(c) = job.d.container.as_mut() {
                    c.log_stream_name = Some(stream);
                    c.task_arn = Some(task_id);
                }
                self.dirty.insert(job_id.clone());
                crate::metrics::job_transition("STARTING", "RUNNING", 1);
                tracing::info!(%job_id, attempt, "job running");
            }
            RuntimeEvent::Exited {
                job_id,
                attempt,
                exit_code,
                reason,
            } => {
                self.attempt_ended(&job_id, attempt, exit_code, reason, false, now);
                self.ended.push((job_id, attempt));
            }
            RuntimeEvent::Interrupted {
                job_id,
                attempt,
                reason,
            } => self.attempt_ended(&job_id, attempt, None, Some(reason), true, now),
            RuntimeEvent::NotStarted {
                job_id,
                attempt,
                reason,
            } => self.not_started(&job_id, attempt, reason, now),
        }
    }

    /// Gives back what a job's current attempt held on its environment and instance.
    fn release(&mut self, id: &str) {
        let Some(job) = self.jobs.get_mut(id) else {
            return;
        };
        if let Some(env) = job.d.internal.compute_environment.take()
            && let Some(u) = self.used.get_mut(&env)
        {
            *u = sub(*u, job.need);
        }
        if let Some(ci) = job.d.internal.container_instance.take()
            && let Some(u) = self.on_instance.get_mut(&ci)
        {
            *u = sub(*u, job.need);
            if *u == Resources::default() {
                self.on_instance.remove(&ci);
            }
        }
    }

    fn not_started(&mut self, job_id: &str, attempt: u32, reason: String, now: i64) {
        let Some(job) = self.jobs.get(job_id) else {
            return;
        };
        if job.attempt_no() != attempt || !matches!(job.d.status.as_str(), "STARTING" | "RUNNING") {
            return;
        }
        let terminated = job.d.is_terminated == Some(true);
        let why = job.d.status_reason.clone();
        self.running.remove(job_id);
        self.release(job_id);
        self.replan = true;
        if terminated {
            let why = why.unwrap_or(reason);
            self.fail(job_id, why, now);
            return;
        }
        let Some(job) = self.jobs.get_mut(job_id) else {
            return;
        };
        tracing::info!(job_id, attempt, %reason, "attempt did not start; runnable again");
        crate::metrics::job_transition(&job.d.status, "RUNNABLE", 1);
        job.d.status = "RUNNABLE".into();
        job.d.status_reason = Some(reason);
        job.d.internal.task_id = None;
        job.d.internal.runnable_since = Some(now);
        job.d.started_at = None;
        self.runnable.insert(job);
        self.dirty.insert(job_id.to_string());
    }

    fn attempt_ended(
        &mut self,
        job_id: &str,
        attempt: u32,
        exit_code: Option<i32>,
        reason: Option<String>,
        interrupted: bool,
        now: i64,
    ) {
        let Some(job) = self.jobs.get(job_id) else {
            return;
        };
        if job.attempt_no() != attempt || !matches!(job.d.status.as_str(), "STARTING" | "RUNNING") {
            return;
        }
        let instance = job.d.internal.container_instance.clone();
        self.running.remove(job_id);
        self.release(job_id);
        let Some(job) = self.jobs.get_mut(job_id) else {
            return;
        };
        self.replan = true;
        let started = job.d.started_at;
        if let (Some(share), Some(s)) = (&job.d.share_identifier, started) {
            let key = (job.d.job_queue.clone(), share.clone());
            let e = self.share_history.entry(key).or_insert((0.0, now));
            e.0 += job.need.milli_vcpus as f64 / 1000.0 * ((now - s).max(0) as f64 / 1000.0);
        }
        let timed_out = job.d.internal.timed_out.take().unwrap_or(false);
        let stopped_by_user = job.d.is_terminated == Some(true) || job.d.is_cancelled == Some(true);
        let attempt_reason = match (&reason, exit_code) {
            (Some(r), None) => r.clone(),
            _ if timed_out => TIMED_OUT.to_string(),
            _ => EXITED.to_string(),
        };
        let stream = job
            .d
            .container
            .as_ref()
            .and_then(|c| c.log_stream_name.clone());
        // The runtime's task (an ECS task ARN) once it started; Flotilla's handle otherwise.
        let handle = job.d.internal.task_id.take();
        let task = job
            .d
            .container
            .as_ref()
            .and_then(|c| c.task_arn.clone())
            .filter(|_| started.is_some())
            .or(handle);
        job.d.attempts.push(AttemptDetail {
            container: Some(AttemptContainerDetail {
                container_instance_arn: instance,
                task_arn: task,
                exit_code,
                reason: reason.clone(),
                log_stream_name: stream,
            }),
            started_at: started,
            stopped_at: Some(now),
            status_reason: Some(attempt_reason.clone()),
        });
        if let Some(c) = job.d.container.as_mut() {
            c.exit_code = exit_code;
            c.reason = reason.clone();
        }
        job.kill_at = None;
        self.dirty.insert(job_id.to_string());
        if interrupted {
            let n = job.d.internal.interruptions.unwrap_or(0) + 1;
            job.d.internal.interruptions = Some(n);
            if n >= self.cfg.spot_max_interruptions {
                job.d.internal.avoid_spot = Some(true);
            }
        }
        // Interrupted attempts are on the record but not on the user's bill.
        let spent = job.d.attempts.len() - job.d.internal.interruptions.unwrap_or(0) as usize;
        let outcome = if stopped_by_user || timed_out {
            Outcome::Failed
        } else if interrupted {
            Outcome::Retry
        } else {
            retry::decide(
                job.d.retry_strategy.as_ref(),
                spent,
                AttemptEnd {
                    exit_code,
                    reason: reason.as_deref(),
                    status_reason: &attempt_reason,
                },
            )
        };
        tracing::info!(job_id, attempt, ?exit_code, ?outcome, "attempt ended");
        match outcome {
            Outcome::Succeeded => {
                job.d.status_reason = Some(attempt_reason);
                self.finish(job_id, "SUCCEEDED", now);
            }
            Outcome::Retry => {
                let from = job.d.status.clone();
                job.d.status_reason = Some(attempt_reason);
                crate::metrics::job_transition(&from, "RUNNABLE", 1);
                job.d.status = "RUNNABLE".into();
                job.d.internal.runnable_since = Some(now);
                job.d.started_at = None;
                self.runnable.insert(job);
            }
            Outcome::Failed => {
                let why = if stopped_by_user {
                    job.d.status_reason.clone().unwrap_or(attempt_reason)
                } else {
                    attempt_reason
                };
                self.fail(job_id, why, now);
            }
        }
    }

    // ------------------------------------------------------------ transitions

    fn make_runnable(&mut self, id: &str, now: i64) {
        if let Some(job) = self.jobs.get_mut(id) {
            crate::metrics::job_transition(&job.d.status, "RUNNABLE", 1);
            job.d.status = "RUNNABLE".into();
            job.d.status_reason = None;
            job.d.internal.runnable_since = Some(now);
            self.runnable.insert(job);
            self.dirty.insert(id.to_string());
            self.replan = true;
        }
    }

    fn fail(&mut self, id: &str, reason: String, now: i64) {
        if let Some(job) = self.jobs.get_mut(id) {
            job.d.status_reason = Some(reason);
        }
        self.finish(id, "FAILED", now);
    }

    /// Moves a job to a final state and releases or fails what waits on it.
    fn finish(&mut self, id: &str, status: &str, now: i64) {
        let mut work = vec![(id.to_string(), status.to_string())];
        while let Some((id, status)) = work.pop() {
            let Some(mut job) = self.jobs.remove(&id) else {
                continue;
            };
            if is_final(&job.d.status) {
                continue;
            }
            crate::metrics::job_transition(&job.d.status, &status, 1);
            job.d.status = status.clone();
            job.d.stopped_at = Some(now);
            job.kill_at = None;
            self.runnable.remove(&job);
            if self.running.remove(&id) {
                if let Some(env) = job.d.internal.compute_environment.take()
                    && let Some(u) = self.used.get_mut(&env)
                {
                    *u = sub(*u, job.need);
                    self.replan = true;
                }
                if let Some(ci) = job.d.internal.container_instance.take()
                    && let Some(u) = self.on_instance.get_mut(&ci)
                {
                    *u = sub(*u, job.need);
                    if *u == Resources::default() {
                        self.on_instance.remove(&ci);
                    }
                }
            }
            // An array parent that fails first fails its children (their dependency reason).
            if job.is_parent() && status == "FAILED" {
                let size = job
                    .d
                    .array_properties
                    .as_ref()
                    .and_then(|a| a.size)
                    .unwrap_or(0);
                for i in 0..size {
                    let child = format!("{id}:{i}");
                    if let Some(c) = self.jobs.get_mut(&child)
                        && matches!(c.d.status.as_str(), "SUBMITTED" | "PENDING" | "RUNNABLE")
                    {
                        c.d.status_reason = job.d.status_reason.clone();
                        if job.d.is_cancelled == Some(true) {
                            c.d.is_cancelled = Some(true);
                        }
                        work.push((child, "FAILED".into()));
                    }
                }
            }
            let parent = job.parent.clone();
            self.dirty.insert(id.clone());
            let failed = status == "FAILED";
            self.done.insert(id.clone(), job);
            for dep in self.dependents.remove(&id).unwrap_or_default() {
                if failed {
                    if let Some(d) = self.jobs.get_mut(&dep) {
                        d.d.status_reason =
                            Some(format!("Dependent Job failed: {id} did not succeed"));
                        work.push((dep, "FAILED".into()));
                    }
                } else if let Some(d) = self.jobs.get_mut(&dep) {
                    d.unmet = d.unmet.saturating_sub(1);
                    if d.unmet == 0 && d.d.status == "PENDING" && !d.is_parent() {
                        let dep = dep.clone();
                        self.make_runnable(&dep, now);
                    }
                }
            }
            if let Some((p, _)) = parent
                && let Some(pj) = self.jobs.get_mut(&p)
            {
                pj.children_left -= 1;
                if failed {
                    pj.children_failed += 1;
                }
                if pj.children_left <= 0 {
                    let st = if pj.children_failed > 0 {
                        "FAILED"
                    } else {
                        "SUCCEEDED"
                    };
                    if st == "FAILED" && pj.d.status_reason.is_none() {
                        pj.d.status_reason = Some(format!(
                            "{} of {} child jobs failed",
                            pj.children_failed,
                            pj.d.array_properties
                                .as_ref()
                                .and_then(|a| a.size)
                                .unwrap_or(0)
                        ));
                    }
                    work.push((p, st.into()));
                }
            }
        }
    }

    fn maybe_finish_parent(&mut self, id: &str, now: i64) {
        let Some(p) = self.jobs.get_mut(id) else {
            return;
        };
        if p.children_left > 0 {
            return;
        }
        let st = if p.children_failed > 0
            || p.d.is_cancelled == Some(true)
            || p.d.is_terminated == Some(true)
        {
            "FAILED"
        } else {
            "SUCCEEDED"
        };
        self.finish(id, st, now);
    }

    fn timers(&mut self, now: i64) {
        let mut term = Vec::new();
        for id in &self.running {
            let Some(job) = self.jobs.get_mut(id) else {
                continue;
            };
            if let Some(k) = job.kill_at
                && k <= now
            {
                job.kill_at = None;
                self.signals
                    .push((id.clone(), job.attempt_no(), StopSignal::Kill));
                continue;
            }
            if job.d.status == "RUNNING"
                && job.kill_at.is_none()
                && job.d.internal.timed_out.is_none()
                && let (Some(secs), Some(start)) = (
                    job.d
                        .timeout
                        .as_ref()
                        .and_then(|t| t.attempt_duration_seconds),
                    job.d.started_at,
                )
                && start + i64::from(secs) * 1000 <= now
            {
                term.push(id.clone());
            }
        }
        let grace = self.cfg.kill_grace.as_millis() as i64;
        for id in term {
            if let Some(job) = self.jobs.get_mut(&id) {
                tracing::info!(job_id = %id, "attempt timed out");
                job.d.internal.timed_out = Some(true);
                job.kill_at = Some(now + grace);
                self.signals
                    .push((id.clone(), job.attempt_no(), StopSignal::Term));
                self.dirty.insert(id);
            }
        }
    }

    // ------------------------------------------------------------ scheduling

    /// The fleet of an AWS environment, if `ce` is one and the server drives AWS.
    fn aws_fleet(&self, ce: &ComputeEnvironmentDetail) -> Option<EnvFleet> {
        ce.aws_kind()?;
        let fleet = self.cfg.fleet.as_ref()?;
        Some(fleet.env(&ce.compute_environment_name).unwrap_or_default())
    }

    /// Free room on each ACTIVE container instance of an AWS environment.
    fn instance_room(&self, fleet: &EnvFleet) -> Vec<Resources> {
        fleet
            .instances
            .iter()
            .map(|i| {
                let used = self
                    .on_instance
                    .get(&i.container_instance_arn)
                    .copied()
                    .unwrap_or_default();
                sub(i.registered, used)
            })
            .collect()
    }

    /// What a compute environment offers and whether it may take new jobs.
    fn env_view(&self, ce: &ComputeEnvironmentDetail) -> EnvView {
        self.env_view_and_fleet(ce).0
    }

    /// [`Engine::env_view`], and for an AWS environment the fleet it was computed from with the
    /// room left on each instance.
    fn env_view_and_fleet(
        &self,
        ce: &ComputeEnvironmentDetail,
    ) -> (EnvView, Option<(EnvFleet, Vec<Resources>)>) {
        if let Some(fleet) = self.aws_fleet(ce) {
            // Capacity that could exist (the largest launchable instance) decides whether a job
            // can ever fit; what is registered now decides what is free.
            let total = fleet
                .instances
                .iter()
                .fold(Resources::default(), |a, i| add(a, i.registered));
            let room = self.instance_room(&fleet);
            let free = room.iter().copied().fold(Resources::default(), add);
            let view = EnvView {
                name: ce.compute_environment_name.clone(),
                usable: ce.state == "ENABLED" && ce.status == "VALID",
                capacity: total.max(&fleet.largest),
                free,
            };
            return (view, Some((fleet, room)));
        }
        let local = ce
            .compute_resources
            .as_ref()
            .and_then(|c| c.cr_type.as_deref())
            == Some(CR_TYPE_LOCAL);
        let max = ce
            .compute_resources
            .as_ref()
            .and_then(|c| c.maxv_cpus)
            .unwrap_or(0)
            .max(0) as u64;
        let capacity = if local {
            Resources {
                milli_vcpus: max * 1000,
                memory_mib: self.cfg.host_memory_mib,
                gpus: 0,
            }
        } else {
            Resources::default()
        };
        let used = self
            .used
            .get(&ce.compute_environment_name)
            .copied()
            .unwrap_or_default();
        let view = EnvView {
            name: ce.compute_environment_name.clone(),
            usable: local && ce.state == "ENABLED" && ce.status == "VALID",
            capacity,
            free: sub(capacity, used),
        };
        (view, None)
    }

    /// Whether a pass could place anything: some usable environment has a vCPU free.
    fn has_room(&self, cat: &crate::batch::Catalog) -> bool {
        cat.compute_environments.values().any(|ce| {
            let v = self.env_view(ce);
            v.usable && v.free.milli_vcpus > 0 && v.free.memory_mib > 0
        })
    }

    fn schedule(&mut self, cat: &crate::batch::Catalog, now: i64) {
        let mut envs = Vec::new();
        let mut env_idx: HashMap<&str, usize> = HashMap::new();
        // AWS environments: the fleet each view was computed from, with each instance's room,
        // for placing jobs on instances after the plan.
        let mut fleets: HashMap<String, (EnvFleet, Vec<Resources>)> = HashMap::new();
        for ce in cat.compute_environments.values() {
            env_idx.insert(ce.compute_environment_arn.as_str(), envs.len());
            let (view, fleet) = self.env_view_and_fleet(ce);
            if let Some(f) = fleet {
                fleets.insert(ce.compute_environment_name.clone(), f);
            }
            let used = view.capacity.saturating_sub(&view.free);
            crate::metrics::capacity(
                &view.name,
                [
                    view.capacity.milli_vcpus,
                    view.capacity.memory_mib,
                    view.capacity.gpus,
                ]
                .map(|v| v as i64),
                [used.milli_vcpus, used.memory_mib, used.gpus].map(|v| v as i64),
            );
            envs.push(view);
        }
        let spot_envs: HashSet<usize> = cat
            .compute_environments
            .values()
            .enumerate()
            .filter(|(_, ce)| {
                ce.compute_resources
                    .as_ref()
                    .and_then(|c| c.cr_type.as_deref())
                    == Some("SPOT")
            })
            .map(|(i, _)| i)
            .collect();
        let mut queues = Vec::new();
        let mut queue_idx: HashMap<&str, usize> = HashMap::new();
        for q in cat.queues.values() {
            let fair_share = q.scheduling_policy_arn.as_ref().map(|arn| {
                let p = cat
                    .scheduling_policies
                    .values()
                    .find(|p| &p.arn == arn)
                    .and_then(|p| p.fairshare_policy.clone())
                    .unwrap_or_default();
                FairShareView {
                    compute_reservation: p.compute_reservation.unwrap_or(0).max(0) as u32,
                    weights: p
                        .share_distribution
                        .unwrap_or_default()
                        .into_iter()
                        .map(|s| ShareWeight {
                            share_identifier: s.share_identifier,
                            weight_factor: f64::from(s.weight_factor.unwrap_or(1.0)),
                        })
                        .collect(),
                }
            });
            queue_idx.insert(q.job_queue_arn.as_str(), queues.len());
            queues.push(QueueView {
                name: q.job_queue_name.clone(),
                priority: q.priority,
                enabled: q.state == "ENABLED",
                envs: q
                    .compute_environment_order
                    .iter()
                    .filter_map(|o| env_idx.get(o.compute_environment.as_str()).copied())
                    .collect(),
                fair_share,
            });
        }
        let with_reasons = now - self.last_reasons >= REASONS_EVERY_MS;
        let window = if with_reasons {
            PASS_WINDOW
        } else {
            let free_vcpus: u64 = envs
                .iter()
                .filter(|e| e.usable)
                .map(|e| e.free.milli_vcpus.div_ceil(1000))
                .sum();
            (QUICK_WINDOW + 4 * free_vcpus as usize).min(PASS_WINDOW)
        };
        // Borrowed, not cloned: only the few jobs a pass places or gives a reason need an owned
        // ID afterwards. Each share contributes its first `window` jobs.
        // Sized up front: growing these by doubling was a third of a quick pass.
        let expect = self
            .runnable
            .len()
            .min(window.saturating_mul(self.runnable.by_queue.len()));
        let mut ids: Vec<&str> = Vec::with_capacity(expect);
        let mut views = Vec::with_capacity(expect);
        let mut orphans = Vec::new();
        let mut avoid_spot = Vec::with_capacity(expect);
        // Per view, its (queue, share) group; per group, whether jobs were left outside.
        let mut view_group: Vec<usize> = Vec::with_capacity(expect);
        let mut group_cut: Vec<bool> = Vec::new();
        for (queue, members) in &self.runnable.by_queue {
            let Some(&qi) = queue_idx.get(queue.as_str()) else {
                orphans.extend(members.keys().map(|k| k.id.clone()));
                continue;
            };
            let mut from: Option<WaitKey> = None;
            loop {
                let range = match &from {
                    None => members.range::<WaitKey, _>(..),
                    Some(k) => members.range::<WaitKey, _>(k..),
                };
                let group = group_cut.len();
                group_cut.push(false);
                let mut share: Option<&str> = None;
                let mut next = None;
                for (taken, (k, w)) in range.enumerate() {
                    match share {
                        None => share = Some(k.share.as_str()),
                        Some(s) if s != k.share => {
                            next = Some(k.clone());
                            break;
                        }
                        Some(_) => {}
                    }
                    if taken == window {
                        group_cut[group] = true;
                        next = Some(WaitKey::after_share(&k.share));
                        break;
                    }
                    ids.push(k.id.as_str());
                    avoid_spot.push(w.avoid_spot);
                    view_group.push(group);
                    views.push(JobView {
                        queue: qi,
                        share: (!k.share.is_empty()).then(|| k.share.clone()),
                        priority: k.priority.0,
                        created_at: k.created_at,
                        need: w.need,
                    });
                }
                match next {
                    Some(k) => from = Some(k),
                    None => break,
                }
            }
        }
        // Jobs that must avoid Spot go through a copy of their queue without its SPOT
        // environments; same name and priority, so the pass orders it right after the original.
        let mut shadow: HashMap<usize, usize> = HashMap::new();
        for (ji, view) in views.iter_mut().enumerate() {
            if avoid_spot[ji] {
                let qi = view.queue;
                let si = *shadow.entry(qi).or_insert_with(|| {
                    let mut q = queues[qi].clone();
                    q.envs.retain(|e| !spot_envs.contains(e));
                    queues.push(q);
                    queues.len() - 1
                });
                view.queue = si;
            }
        }
        let mut share_usage = HashMap::new();
        for ((q, share), (v, at)) in self.share_history.iter_mut() {
            let Some(&qi) = queue_idx.get(q.as_str()) else {
                continue;
            };
            let decay = cat
                .queues
                .values()
                .find(|x| &x.job_queue_arn == q)
                .and_then(|x| x.scheduling_policy_arn.as_ref())
                .and_then(|arn| cat.scheduling_policies.values().find(|p| &p.arn == arn))
                .and_then(|p| p.fairshare_policy.as_ref())
                .and_then(|f| f.share_decay_seconds)
                .filter(|d| *d > 0)
                // AWS Batch: zero means its minimum window, 600 seconds.
                .unwrap_or(600) as f64;
            let dt = ((now - *at).max(0) as f64) / 1000.0;
            *v *= (-dt / decay).exp();
            *at = now;
            // Average vCPUs over the decay window, comparable with the vCPUs running now.
            share_usage.insert((qi, share.clone()), *v / decay);
        }
        for id in &self.running {
            if let Some(job) = self.jobs.get(id)
                && let (Some(share), Some(&qi)) = (
                    &job.d.share_identifier,
                    queue_idx.get(job.d.job_queue.as_str()),
                )
            {
                *share_usage.entry((qi, share.clone())).or_insert(0.0) +=
                    job.need.milli_vcpus as f64 / 1000.0;
            }
        }
        let snapshot = scheduler::Snapshot {
            envs,
            queues,
            jobs: views,
            share_usage,
        };
        let plan = if with_reasons {
            self.last_reasons = now;
            scheduler::plan(&snapshot)
        } else {
            scheduler::plan_placements(&snapshot)
        };
        // A share whose whole window was placed may have more jobs that fit: pass again at once
        // rather than at the next event.
        let mut placed_per_group = vec![0usize; group_cut.len()];
        for &(ji, _) in &plan.placements {
            placed_per_group[view_group[ji]] += 1;
        }
        if placed_per_group
            .iter()
            .zip(&group_cut)
            .any(|(&n, &cut)| cut && n >= window)
        {
            self.replan = true;
        }
        let mut heads: HashMap<String, String> = HashMap::new();
        for (ji, reason) in &plan.blocked {
            let text = reason.reason(&snapshot, *ji);
            if let Some(job) = self.jobs.get(ids[*ji]) {
                heads
                    .entry(job.d.job_queue.clone())
                    .or_insert_with(|| text.clone());
            }
            if let Some(job) = self.jobs.get_mut(ids[*ji])
                && job.d.status_reason.as_deref() != Some(text.as_str())
            {
                job.d.status_reason = Some(text);
                self.dirty.insert(ids[*ji].to_string());
            }
        }
        let placed: Vec<(String, String, String)> = plan
            .placements
            .iter()
            .map(|&(ji, ei)| {
                (
                    ids[ji].to_string(),
                    snapshot.envs[ei].name.clone(),
                    snapshot.queues[snapshot.jobs[ji].queue].name.clone(),
                )
            })
            .collect();
        // AWS environments: demand for the provisioner. Each job that stays RUNNABLE counts
        // once, for the first ENABLED and VALID AWS environment of its queue, so that two
        // environments of one queue never scale for the same job.
        let cat_envs: Vec<&ComputeEnvironmentDetail> = cat.compute_environments.values().collect();
        let mut demand: HashMap<String, Vec<Resources>> = HashMap::new();
        if self.cfg.fleet.is_some() {
            // Every waiting job, not only the pass's window: the provisioner sizes the fleet for
            // the whole backlog.
            let placed_set: HashSet<&str> =
                plan.placements.iter().map(|&(ji, _)| ids[ji]).collect();
            let target = |qi: usize| {
                let q = &snapshot.queues[qi];
                if !q.enabled {
                    return None;
                }
                q.envs
                    .iter()
                    .find(|&&e| {
                        snapshot.envs[e].usable && cat_envs[e].aws_kind() == Some(AwsKind::Managed)
                    })
                    .copied()
            };
            for (queue, members) in &self.runnable.by_queue {
                let Some(&qi) = queue_idx.get(queue.as_str()) else {
                    continue;
                };
                let shadow_qi = shadow.get(&qi).copied();
                let (plain, avoiding) = (target(qi), shadow_qi.and_then(target));
                for (k, w) in members {
                    let env = if w.avoid_spot { avoiding } else { plain };
                    if let Some(e) = env
                        && !placed_set.contains(k.id.as_str())
                    {
                        demand
                            .entry(snapshot.envs[e].name.clone())
                            .or_default()
                            .push(w.need);
                    }
                }
            }
        }
        drop(ids);
        if with_reasons {
            if let Ok(mut h) = self.heads.write() {
                *h = heads;
            }
        } else if plan.placements.len() < snapshot.jobs.len() {
            // Jobs still wait: their reasons are due within REASONS_EVERY_MS.
            self.replan = true;
        }
        for (id, env, queue) in placed {
            let target = match fleets.get_mut(&env) {
                None => Target::Local,
                Some((fleet, room)) => {
                    let need = self.jobs.get(&id).map(|j| j.need).unwrap_or_default();
                    // Best fit: the instance the job leaves least room on, so that whole
                    // instances stay free to be retired.
                    let best = room
                        .iter()
                        .enumerate()
                        .filter(|(_, r)| need.fits_within(r))
                        .min_by_key(|(i, r)| (r.milli_vcpus - need.milli_vcpus, *i))
                        .map(|(i, _)| i);
                    match best {
                        Some(i) => {
                            room[i] = sub(room[i], need);
                            Target::Ecs {
                                env: env.clone(),
                                cluster: fleet.cluster.clone(),
                                container_instance_arn: fleet.instances[i]
                                    .container_instance_arn
                                    .clone(),
                            }
                        }
                        None => {
                            // The environment has the room in total but no one instance has it.
                            demand.entry(env.clone()).or_default().push(need);
                            if let Some(j) = self.jobs.get_mut(&id) {
                                let text = format!(
                                    "RESOURCE:WAITING_FOR_INSTANCE - no instance of {env} has {} vCPU and {} MiB free on its own",
                                    need.milli_vcpus as f64 / 1000.0,
                                    need.memory_mib
                                );
                                if j.d.status_reason.as_deref() != Some(text.as_str()) {
                                    j.d.status_reason = Some(text);
                                    self.dirty.insert(id.clone());
                                }
                            }
                            continue;
                        }
                    }
                }
            };
            self.start_attempt(&id, &env, &queue, target);
        }
        if let Some(fleet) = &self.cfg.fleet {
            fleet.publish(Demand {
                by_env: demand,
                used_by_instance: self.on_instance.clone(),
            });
        }
        for id in orphans {
            self.fail(
                &id,
                "MISCONFIGURATION:JOB_QUEUE_DELETED - the job queue of this job was deleted".into(),
                now,
            );
        }
        // jobStateTimeLimitActions: jobs RUNNABLE too long for a reason their queue names.
        let mut expired = Vec::new();
        for (queue, members) in &self.runnable.by_queue {
            let Some(actions) = cat
                .queues
                .values()
                .find(|q| &q.job_queue_arn == queue)
                .and_then(|q| q.job_state_time_limit_actions.as_deref())
            else {
                continue;
            };
            for id in members.keys().map(|k| &k.id) {
                let Some(job) = self.jobs.get(id) else {
                    continue;
                };
                let since = job.d.internal.runnable_since.unwrap_or(job.d.created_at);
                if let Some(a) = limits::due(actions, job.d.status_reason.as_deref(), since, now) {
                    expired.push((id.clone(), a.reason.clone(), a.max_time_seconds));
                }
            }
        }
        for (id, reason, secs) in expired {
            tracing::info!(job_id = %id, %reason, secs, "job state time limit reached");
            if let Some(j) = self.jobs.get_mut(&id) {
                j.d.is_cancelled = Some(true);
            }
            self.fail(
                &id,
                format!("{reason}: RUNNABLE for more than {secs} s (jobStateTimeLimitActions)"),
                now,
            );
        }
    }

    fn start_attempt(&mut self, id: &str, env: &str, queue: &str, target: Target) {
        let Some(job) = self.jobs.get_mut(id) else {
            return;
        };
        let task_id = uuid::Uuid::new_v4().simple().to_string();
        let attempt = job.attempt_no();
        crate::metrics::job_transition("RUNNABLE", "STARTING", 1);
        job.d.status = "STARTING".into();
        job.d.status_reason = None;
        job.d.internal.compute_environment = Some(env.to_string());
        job.d.internal.task_id = Some(task_id.clone());
        job.d.internal.runnable_since = None;
        let u = self.used.entry(env.to_string()).or_default();
        *u = add(*u, job.need);
        if let Target::Ecs {
            container_instance_arn,
            ..
        } = &target
        {
            job.d.internal.container_instance = Some(container_instance_arn.clone());
            let u = self
                .on_instance
                .entry(container_instance_arn.clone())
                .or_default();
            *u = add(*u, job.need);
        }
        self.runnable.remove(job);
        self.running.insert(id.to_string());
        self.dirty.insert(id.to_string());
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
        env_vars.push(("AWS_BATCH_JOB_ID".into(), id.to_string()));
        env_vars.push(("AWS_BATCH_JOB_ATTEMPT".into(), attempt.to_string()));
        env_vars.push(("AWS_BATCH_JQ_NAME".into(), queue.to_string()));
        env_vars.push(("AWS_BATCH_CE_NAME".into(), env.to_string()));
        if let Some((_, i)) = &job.parent {
            env_vars.push(("AWS_BATCH_JOB_ARRAY_INDEX".into(), i.to_string()));
        }
        let stream = stream_name(&job.d.job_definition, &task_id);
        tracing::info!(job_id = id, attempt, env, "job starting");
        self.launches.push(AttemptSpec {
            job_id: id.to_string(),
            attempt,
            task_id,
            image: props.image.clone(),
            command: props.command.clone().unwrap_or_default(),
            env: env_vars,
            milli_vcpus: job.need.milli_vcpus,
            memory_mib: job.need.memory_mib,
            log_group: JOB_LOG_GROUP.to_string(),
            log_stream: stream,
            job_definition: job.d.job_definition.clone(),
            target,
        });
    }

    // ------------------------------------------------------------ effects

    fn row(&self, id: &str) -> Option<BatchResult<JobRow>> {
        let job = self.jobs.get(id).or_else(|| self.done.get(id))?;
        Some(job_row(
            &job.d,
            job.parent.as_ref().map(|(p, i)| (p.as_str(), *i)),
        ))
    }

    /// Waits for the write in flight, retrying it until it lands.
    async fn settle(&mut self) {
        let Some(p) = self.pending.take() else {
            return;
        };
        match p.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) if !e.is_retryable() => {
                tracing::error!(error = %e, rows = p.rows.len(), "job write failed permanently");
            }
            outcome => {
                if let Ok(Err(e)) = outcome {
                    tracing::warn!(error = %e, rows = p.rows.len(), "job write failed; retrying");
                }
                write_until_done(self.batch.store().clone(), p.rows, false).await;
            }
        }
        for (job, attempt) in &p.ended {
            self.runtime.end_stored(job, *attempt);
        }
        for id in p.finished {
            // Changed again since (tags): it goes with the next write, from `done`.
            if !self.dirty.contains(&id) {
                self.done.remove(&id);
            }
        }
    }

    /// When the loop must run a round even if nothing arrives: a deferred pass, rows waiting to
    /// be written, or the tick.
    fn next_wake(&self) -> Duration {
        let pass = if self.replan {
            Duration::from_millis(IDLE_PASS_INTERVAL_MS as u64)
        } else {
            TICK
        };
        match self.dirty_since {
            Some(t) => {
                pass.min((t + WRITE_COALESCE).saturating_duration_since(std::time::Instant::now()))
            }
            None => pass,
        }
    }

    /// Writes everything now and waits for it (start and shutdown).
    async fn flush_all(&mut self) {
        self.flush_with(true).await;
        self.settle().await;
    }

    async fn flush(&mut self) {
        self.flush_with(false).await;
    }

    /// Writes the round's changes (now if `urgent`, a command waits or an ECS attempt is to
    /// start; else once they are `WRITE_COALESCE` old), then answers, launches and signals.
    async fn flush_with(&mut self, urgent: bool) {
        // Host-runtime attempts start while their STARTING row is being written (see
        // docs/design.md, "Ordering rule"); ECS attempts only after it.
        let (early, late): (Vec<AttemptSpec>, Vec<AttemptSpec>) = self
            .launches
            .drain(..)
            .partition(|spec| matches!(spec.target, Target::Local));
        self.launch(early);
        let durable = !self.replies.is_empty();
        let urgent = urgent || durable || !late.is_empty();
        let due = !self.dirty.is_empty()
            && (urgent
                || self
                    .dirty_since
                    .get_or_insert_with(std::time::Instant::now)
                    .elapsed()
                    >= WRITE_COALESCE);
        if urgent || due {
            // Writes land in order, and answers follow them: the one in flight first.
            self.settle().await;
        }
        if self.dirty.is_empty() {
            self.dirty_since = None;
            // Ends that changed nothing (stale attempts) need no write.
            for (job, attempt) in std::mem::take(&mut self.ended) {
                self.runtime.end_stored(&job, attempt);
            }
        } else if due {
            let ended = std::mem::take(&mut self.ended);
            self.dirty_since = None;
            let ids: Vec<String> = self.dirty.drain().collect();
            let mut rows = Vec::with_capacity(ids.len());
            for id in &ids {
                match self.row(id) {
                    Some(Ok(r)) => rows.push(r),
                    Some(Err(e)) => tracing::error!(job_id = %id, error = %e, "cannot encode job"),
                    None => {}
                }
            }
            // Transitions the engine made on its own are committed without waiting for the disk:
            // a process crash keeps them (and a restart re-derives what a power loss takes).
            // What answers a caller (CancelJob, TerminateJob, tags) waits for the flush, and so
            // does an ECS launch; otherwise the engine goes on with the next round while the
            // write lands, and waits for it before the next one.
            if urgent {
                write_until_done(self.batch.store().clone(), rows, durable).await;
                self.done.clear();
                for (job, attempt) in ended {
                    self.runtime.end_stored(&job, attempt);
                }
            } else {
                let store = self.batch.store().clone();
                let to_write = rows.clone();
                self.pending = Some(PendingWrite {
                    rows,
                    ended,
                    finished: self.done.keys().cloned().collect(),
                    task: tokio::spawn(async move { store.upsert_jobs_relaxed(to_write).await }),
                });
            }
        }
        for r in self.replies.drain(..) {
            match r {
                Reply::Stop(tx, v) => {
                    let _ = tx.send(v);
                }
                Reply::Tags(tx, v) => {
                    let _ = tx.send(v);
                }
            }
        }
        self.launch(late);
        for (id, attempt, sig) in self.signals.drain(..) {
            let rt = self.runtime.clone();
            tokio::spawn(async move {
                if let Err(e) = rt.stop(&id, attempt, sig).await {
                    tracing::warn!(job_id = %id, error = %e, "signal failed");
                }
            });
        }
    }

    fn launch(&self, specs: Vec<AttemptSpec>) {
        for spec in specs {
            let rt = self.runtime.clone();
            tokio::spawn(async move {
                let (job_id, attempt) = (spec.job_id.clone(), spec.attempt);
                if let Err(e) = rt.start(spec).await {
                    tracing::warn!(%job_id, attempt, error = %e, "attempt did not start");
                    // Reported as an ended attempt through the runtime's own channel would need a
                    // sender here; the runtime reports start failures as `Exited` itself.
                }
            });
        }
    }
}

/// Writes `rows`, retrying with backoff while the store says the error is passing.
async fn write_until_done(store: Arc<dyn crate::store::Store>, rows: Vec<JobRow>, durable: bool) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let written = if durable {
            store.upsert_jobs(rows.clone()).await
        } else {
            store.upsert_jobs_relaxed(rows.clone()).await
        };
        match written {
            Ok(()) => return,
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, rows = rows.len(), "job write failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::error!(error = %e, rows = rows.len(), "job write failed permanently");
                return;
            }
        }
    }
}
