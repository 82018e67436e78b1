//! The engine's jobs and every index over them, with one writer.
//!
//! [`JobTable::transition`] (and [`JobTable::start`], which places a job and then transitions
//! it) is the only code that changes a job's status, the indexes that follow from it (RUNNABLE
//! per queue, the running set, capacity used per environment and per instance, finished jobs
//! awaiting their write) and the transition metric. Callers change a job's other fields
//! (reasons, attempts, tags) through [`JobTable::get_mut`] and mark it dirty.

use super::job::{Job, WaitKey, Waiting, add, sub};
use crate::batch::ConsumableUse;
use crate::metrics;
use crate::model::JobStatus;
use crate::scheduler::Resources;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Where a job's attempt is placed when it starts.
#[derive(Debug, Clone)]
pub(super) struct Placement {
    /// Compute environment name.
    pub env: String,
    /// ECS container instance ARN (AWS environments).
    pub instance: Option<String>,
    /// The runtime's handle of the attempt.
    pub task_id: String,
    /// The instance's price and the attempt's share of it, for the attempt's cost.
    pub host: Option<crate::model::AttemptCost>,
}

/// The RUNNABLE jobs, by queue ARN, in pass order.
#[derive(Default)]
pub(super) struct Runnable {
    pub by_queue: HashMap<String, BTreeMap<WaitKey, Waiting>>,
    /// Queue ARN → (need, avoid Spot) → how many of its RUNNABLE jobs have it: the AWS demand
    /// without a walk of the backlog (real backlogs are a few job definitions times many jobs).
    pub needs: HashMap<String, HashMap<(Resources, bool), u64>>,
    len: usize,
}

impl Runnable {
    fn insert(&mut self, job: &Job) {
        let w = Waiting {
            avoid_spot: job.d.internal.avoid_spot == Some(true),
            need: job.need,
            consumables: job.consumables.clone(),
        };
        let kind = (w.need, w.avoid_spot);
        let queue = job.d.job_queue.as_str();
        let m = match self.by_queue.get_mut(queue) {
            Some(m) => m,
            None => self.by_queue.entry(queue.to_string()).or_default(),
        };
        match m.insert(WaitKey::of(job), w) {
            None => self.len += 1,
            Some(old) => self.uncount(queue, (old.need, old.avoid_spot)),
        }
        let counts = match self.needs.get_mut(queue) {
            Some(c) => c,
            None => self.needs.entry(queue.to_string()).or_default(),
        };
        *counts.entry(kind).or_default() += 1;
    }

    fn remove(&mut self, job: &Job) {
        let queue = job.d.job_queue.as_str();
        if let Some(m) = self.by_queue.get_mut(queue)
            && let Some(old) = m.remove(&WaitKey::of(job))
        {
            self.len -= 1;
            self.uncount(queue, (old.need, old.avoid_spot));
        }
    }

    fn uncount(&mut self, queue: &str, kind: (Resources, bool)) {
        if let Some(counts) = self.needs.get_mut(queue)
            && let Some(n) = counts.get_mut(&kind)
        {
            *n -= 1;
            if *n == 0 {
                counts.remove(&kind);
                if counts.is_empty() {
                    self.needs.remove(queue);
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }
}

#[derive(Default)]
pub(super) struct JobTable {
    /// Every unfinished job (and unfinished array parent).
    /// Boxed: a job is ~1 KiB, and a hash table keeps up to half its slots empty; empty slots
    /// of pointers cost 8 bytes, empty slots of jobs a kilobyte (0.3 KiB per job at 100,000).
    jobs: HashMap<String, Box<Job>>,
    /// Jobs that finished and are not yet written (dependents registered meanwhile must see
    /// their final status, which the store does not have yet).
    done: HashMap<String, Box<Job>>,
    /// Dependency → jobs waiting on it.
    dependents: HashMap<String, Vec<String>>,
    runnable: Runnable,
    /// STARTING or RUNNING.
    running: HashSet<String>,
    /// Resources in use per compute environment name.
    used: HashMap<String, Resources>,
    /// Resources in use per ECS container instance ARN (AWS environments).
    on_instance: HashMap<String, Resources>,
    /// Consumable resources held by attempts, and given back by ended ones.
    consumables: Consumables,
    /// Jobs changed since the last write.
    dirty: HashSet<String>,
    /// Status changes since the last [`JobTable::take_transitions`], in order, when recorded
    /// for the job-event log.
    transitions: Option<Vec<(String, JobStatus)>>,
    /// Something a pass could act on changed: a job became RUNNABLE or capacity was freed.
    wants_pass: bool,
}

impl JobTable {
    /// Adds a job as it was stored or submitted, indexing it by its current status. A job
    /// already held (finished but not yet written included), or already final, is left out;
    /// returns whether it was added.
    pub fn insert(&mut self, job: Job) -> bool {
        if job.d.status.is_final()
            || self.jobs.contains_key(&job.d.job_id)
            || self.done.contains_key(&job.d.job_id)
        {
            return false;
        }
        let id = job.d.job_id.clone();
        match job.d.status {
            JobStatus::Runnable => {
                self.runnable.insert(&job);
                self.wants_pass = true;
            }
            JobStatus::Starting | JobStatus::Running => {
                self.hold(&job);
                self.consumables.hold(&job);
                self.running.insert(id.clone());
            }
            _ => {}
        }
        self.jobs.insert(id, Box::new(job));
        true
    }

    /// Moves job `id` to `to`, keeping every index and the metric in step. Returns false (and
    /// changes nothing) when the engine does not hold the job or it is already final.
    ///
    /// Entering RUNNABLE clears the attempt's start; entering RUNNING stamps it; leaving
    /// STARTING/RUNNING gives back the capacity held; a final status moves the job to the
    /// finished-but-unwritten set. STARTING goes through [`JobTable::start`].
    pub fn transition(&mut self, id: &str, to: JobStatus, now: i64) -> bool {
        debug_assert!(to != JobStatus::Starting, "STARTING goes through start()");
        self.change(id, to, now, None)
    }

    /// Places RUNNABLE job `id` and moves it to STARTING.
    pub fn start(&mut self, id: &str, placement: Placement, now: i64) -> bool {
        self.change(id, JobStatus::Starting, now, Some(placement))
    }

    fn change(&mut self, id: &str, to: JobStatus, now: i64, placement: Option<Placement>) -> bool {
        let Some(job) = self.jobs.get_mut(id) else {
            return false;
        };
        let from = job.d.status;
        if from.is_final() {
            return false;
        }
        if from == JobStatus::Runnable {
            self.runnable.remove(job);
        }
        if from.is_active() && !to.is_active() {
            self.running.remove(id);
            let job = &mut **job;
            release(&mut self.used, &mut self.on_instance, job);
            self.consumables.release(job);
            self.wants_pass = true;
        }
        job.d.status = to;
        match to {
            JobStatus::Runnable => {
                job.d.internal.runnable_since = Some(now);
                job.d.internal.task_id = None;
                job.d.internal.host = None;
                job.d.started_at = None;
                self.runnable.insert(job);
                self.wants_pass = true;
            }
            JobStatus::Starting => {
                let p = placement.expect("start() passes a placement");
                job.d.status_reason = None;
                job.d.internal.runnable_since = None;
                job.d.internal.compute_environment = Some(p.env);
                job.d.internal.container_instance = p.instance;
                job.d.internal.host = p.host;
                job.d.internal.task_id = Some(p.task_id);
                job.attempts_at_hold = job.d.attempts.len();
                let job = &**job;
                hold_in(&mut self.used, &mut self.on_instance, job);
                self.consumables.hold(job);
                self.running.insert(id.to_string());
            }
            JobStatus::Running => job.d.started_at = Some(now),
            JobStatus::Succeeded | JobStatus::Failed => {
                job.d.stopped_at = Some(now);
                job.kill_at = None;
            }
            JobStatus::Submitted | JobStatus::Pending => {}
        }
        metrics::job_transition(from, to, 1);
        self.dirty.insert(id.to_string());
        if let Some(t) = &mut self.transitions
            && from != to
        {
            t.push((id.to_string(), to));
        }
        if to.is_final()
            && let Some(job) = self.jobs.remove(id)
        {
            self.done.insert(id.to_string(), job);
        }
        true
    }

    fn hold(&mut self, job: &Job) {
        hold_in(&mut self.used, &mut self.on_instance, job);
    }

    /// An unfinished job.
    pub fn get(&self, id: &str) -> Option<&Job> {
        self.jobs.get(id).map(|j| &**j)
    }

    /// An unfinished job, to change anything but its status and placement. Mark it dirty.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut Job> {
        self.jobs.get_mut(id).map(|j| &mut **j)
    }

    /// A job the engine holds, unfinished or finished and not yet written.
    pub fn held(&self, id: &str) -> Option<&Job> {
        self.jobs
            .get(id)
            .or_else(|| self.done.get(id))
            .map(|j| &**j)
    }

    /// [`JobTable::held`], to change anything but its status and placement. Mark it dirty.
    pub fn held_mut(&mut self, id: &str) -> Option<&mut Job> {
        match self.jobs.get_mut(id) {
            Some(j) => Some(&mut **j),
            None => self.done.get_mut(id).map(|j| &mut **j),
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.jobs.contains_key(id)
    }

    /// How many unfinished jobs the engine holds.
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn runnable(&self) -> &Runnable {
        &self.runnable
    }

    pub fn running(&self) -> impl Iterator<Item = (&String, &Job)> {
        self.running
            .iter()
            .filter_map(|id| self.jobs.get(id).map(|j| (id, &**j)))
    }

    /// Capacity held by STARTING and RUNNING attempts on compute environment `env`.
    pub fn used_on_env(&self, env: &str) -> Resources {
        self.used.get(env).copied().unwrap_or_default()
    }

    /// Capacity held by attempts on ECS container instance `arn`.
    pub fn used_on_instance(&self, arn: &str) -> Resources {
        self.on_instance.get(arn).copied().unwrap_or_default()
    }

    pub fn on_instance(&self) -> &HashMap<String, Resources> {
        &self.on_instance
    }

    /// How much of consumable resource `name` STARTING and RUNNING attempts hold.
    pub fn consumable_in_use(&self, name: &str) -> u64 {
        self.consumables.held.get(name).copied().unwrap_or(0)
    }

    /// How much of consumable resource `name` ended attempts gave back since
    /// [`JobTable::take_released`].
    pub fn consumable_released(&self, name: &str) -> u64 {
        self.consumables.released.get(name).copied().unwrap_or(0)
    }

    /// What ended attempts gave back, to be settled (NON_REPLENISHABLE resources lose it).
    pub fn take_released(&mut self) -> Vec<(String, u64)> {
        if !self.consumables.released.is_empty() {
            self.consumables.changed = true;
        }
        self.consumables.released.drain().collect()
    }

    /// Puts back what [`JobTable::take_released`] gave and could not be settled.
    pub fn restore_released(&mut self, back: Vec<(String, u64)>) {
        for (name, q) in back {
            *self.consumables.released.entry(name).or_default() += q;
        }
    }

    /// Every resource's use, when it changed since the last call.
    pub fn take_consumable_use(&mut self) -> Option<HashMap<String, ConsumableUse>> {
        if !std::mem::take(&mut self.consumables.changed) {
            return None;
        }
        let c = &self.consumables;
        let mut out: HashMap<String, ConsumableUse> = HashMap::new();
        for (name, q) in &c.held {
            out.entry(name.clone()).or_default().in_use = *q;
        }
        for (name, q) in &c.released {
            out.entry(name.clone()).or_default().released = *q;
        }
        Some(out)
    }

    /// Records that job `id` waits for `dependency` to finish.
    pub fn add_dependent(&mut self, dependency: String, id: String) {
        self.dependents.entry(dependency).or_default().push(id);
    }

    /// The jobs that waited for `id`, which just finished.
    pub fn take_dependents(&mut self, id: &str) -> Vec<String> {
        self.dependents.remove(id).unwrap_or_default()
    }

    /// Starts recording status changes for the job-event log.
    pub fn record_transitions(&mut self) {
        self.transitions.get_or_insert_with(Vec::new);
    }

    /// Records a status a job is announced in without a change (a new job left PENDING).
    pub fn announce(&mut self, id: &str, status: JobStatus) {
        if let Some(t) = &mut self.transitions {
            t.push((id.to_string(), status));
        }
    }

    /// The status changes recorded since the last call, in order.
    pub fn take_transitions(&mut self) -> Vec<(String, JobStatus)> {
        self.transitions
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    pub fn records_transitions(&self) -> bool {
        self.transitions.is_some()
    }

    pub fn mark_dirty(&mut self, id: &str) {
        self.dirty.insert(id.to_string());
    }

    pub fn is_dirty(&self, id: &str) -> bool {
        self.dirty.contains(id)
    }

    pub fn has_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// The jobs changed since the last call, to be written.
    pub fn take_dirty(&mut self) -> Vec<String> {
        self.dirty.drain().collect()
    }

    /// IDs of the finished jobs awaiting their write.
    pub fn finished_ids(&self) -> Vec<String> {
        self.done.keys().cloned().collect()
    }

    /// Forgets finished job `id` once its final state is written.
    pub fn forget_finished(&mut self, id: &str) {
        self.done.remove(id);
    }

    pub fn forget_all_finished(&mut self) {
        self.done.clear();
    }

    /// Whether a job became RUNNABLE or capacity was freed since the last call.
    pub fn take_wants_pass(&mut self) -> bool {
        std::mem::take(&mut self.wants_pass)
    }

    /// Checks that every index agrees with the jobs' statuses (tests and debug builds).
    #[cfg(test)]
    pub fn assert_consistent(&self) {
        let mut runnable = 0;
        let mut used: HashMap<String, Resources> = HashMap::new();
        for (id, job) in &self.jobs {
            assert!(!job.d.status.is_final(), "{id} is final but unfinished");
            let queued = self
                .runnable
                .by_queue
                .get(&job.d.job_queue)
                .is_some_and(|m| m.contains_key(&WaitKey::of(job)));
            assert_eq!(
                queued,
                job.d.status == JobStatus::Runnable,
                "{id} runnable index"
            );
            runnable += usize::from(queued);
            assert_eq!(
                self.running.contains(id),
                job.d.status.is_active(),
                "{id} running index"
            );
            if job.d.status.is_active()
                && let Some(env) = &job.d.internal.compute_environment
            {
                let u = used.entry(env.clone()).or_default();
                *u = add(*u, job.need);
            }
        }
        assert_eq!(runnable, self.runnable.len(), "runnable count");
        let mut needs: HashMap<String, HashMap<(Resources, bool), u64>> = HashMap::new();
        for (queue, members) in &self.runnable.by_queue {
            for w in members.values() {
                *needs
                    .entry(queue.clone())
                    .or_default()
                    .entry((w.need, w.avoid_spot))
                    .or_default() += 1;
            }
        }
        assert_eq!(needs, self.runnable.needs, "runnable counts by need");
        for (env, u) in &self.used {
            assert_eq!(
                used.get(env).copied().unwrap_or_default(),
                *u,
                "capacity used on {env}"
            );
        }
        for job in self.done.values() {
            assert!(job.d.status.is_final());
        }
        let mut held: HashMap<String, u64> = HashMap::new();
        for job in self.jobs.values().filter(|j| j.d.status.is_active()) {
            for (name, q) in &job.consumables {
                *held.entry(name.clone()).or_default() += q;
            }
        }
        held.retain(|_, q| *q > 0);
        assert_eq!(held, self.consumables.held, "consumable resources held");
    }
}

/// Consumable resources held by STARTING and RUNNING attempts (never an entry at 0), and given
/// back by ended ones until the engine settles them.
#[derive(Default)]
struct Consumables {
    held: HashMap<String, u64>,
    released: HashMap<String, u64>,
    /// Changed since the engine last published the use.
    changed: bool,
}

impl Consumables {
    fn hold(&mut self, job: &Job) {
        for (name, q) in &job.consumables {
            *self.held.entry(name.clone()).or_default() += q;
            self.changed = true;
        }
    }

    /// Gives back what the attempt held. An attempt that ran (it left a record in `attempts`)
    /// also counts as released, which NON_REPLENISHABLE resources lose; one that never started
    /// consumed nothing.
    fn release(&mut self, job: &Job) {
        let ran = job.d.attempts.len() > job.attempts_at_hold;
        for (name, q) in &job.consumables {
            if let Some(h) = self.held.get_mut(name) {
                *h = h.saturating_sub(*q);
                if *h == 0 {
                    self.held.remove(name);
                }
            }
            if ran {
                *self.released.entry(name.clone()).or_default() += q;
            }
            self.changed = true;
        }
    }
}

fn hold_in(
    used: &mut HashMap<String, Resources>,
    on_instance: &mut HashMap<String, Resources>,
    job: &Job,
) {
    if let Some(env) = &job.d.internal.compute_environment {
        let u = used.entry(env.clone()).or_default();
        *u = add(*u, job.need);
    }
    if let Some(ci) = &job.d.internal.container_instance {
        let u = on_instance.entry(ci.clone()).or_default();
        *u = add(*u, job.need);
    }
}

/// Gives back what a job's attempt held on its environment and instance.
fn release(
    used: &mut HashMap<String, Resources>,
    on_instance: &mut HashMap<String, Resources>,
    job: &mut Job,
) {
    if let Some(env) = job.d.internal.compute_environment.take()
        && let Some(u) = used.get_mut(&env)
    {
        *u = sub(*u, job.need);
    }
    if let Some(ci) = job.d.internal.container_instance.take()
        && let Some(u) = on_instance.get_mut(&ci)
    {
        *u = sub(*u, job.need);
        if *u == Resources::default() {
            on_instance.remove(&ci);
        }
    }
}
