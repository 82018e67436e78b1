//! One scheduling pass. See [`super::plan`] for the rules; this file is about doing them fast:
//! jobs are bucketed by queue with a counting sort, each queue sorts compact keys rather than
//! jobs, fair-share turns come from a heap, and a queue stops trying placements as soon as none
//! of its environments can take even its smallest job.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};

use super::{Blocked, FairShareView, Plan, Resources, ShareWeight, Snapshot, WaitCause};

/// `Pass::lock` value of an environment no queue holds.
const NO_LOCK: usize = usize::MAX;

/// `reasons`: how many waiting jobs per queue get a [`Blocked`] entry.
pub(super) fn plan(snap: &Snapshot, reasons: usize) -> Plan {
    let nq = snap.queues.len();

    // Counting sort into per-queue buckets: one allocation, no per-job work beyond a copy.
    let mut start = vec![0usize; nq + 1];
    let mut qmin = vec![
        Resources {
            milli_vcpus: u64::MAX,
            memory_mib: u64::MAX,
            gpus: u64::MAX,
        };
        nq
    ];
    for job in &snap.jobs {
        if job.queue < nq {
            start[job.queue + 1] += 1;
            qmin[job.queue] = qmin[job.queue].min(&job.need);
        }
    }
    for q in 0..nq {
        start[q + 1] += start[q];
    }
    let mut bucket = vec![0usize; start[nq]];
    let mut fill = start.clone();
    for (i, job) in snap.jobs.iter().enumerate() {
        if job.queue < nq {
            bucket[fill[job.queue]] = i;
            fill[job.queue] += 1;
        }
    }

    // Shares already active (usage > 0) per queue, for computeReservation's exponent. Counting
    // does not depend on the map's iteration order, so the plan stays deterministic.
    let mut active_from_history = vec![0usize; nq];
    for ((q, _), usage) in &snap.share_usage {
        if *q < nq && usage.is_finite() && *usage > 0.0 {
            active_from_history[*q] += 1;
        }
    }

    let mut order: Vec<usize> = (0..nq).collect();
    order.sort_by(|&a, &b| {
        let (qa, qb) = (&snap.queues[a], &snap.queues[b]);
        qb.priority
            .cmp(&qa.priority)
            .then_with(|| qa.name.cmp(&qb.name))
            .then(a.cmp(&b))
    });

    let mut pass = Pass {
        snap,
        free: snap.envs.iter().map(|e| e.free).collect(),
        left: snap.consumables.iter().map(|c| c.available).collect(),
        lock: vec![NO_LOCK; snap.envs.len()],
        plan: Plan::default(),
    };
    for q in order {
        let jobs = &bucket[start[q]..start[q + 1]];
        if jobs.is_empty() {
            continue;
        }
        let queue = &snap.queues[q];
        if !queue.enabled {
            pass.block_head(jobs, reasons, Blocked::QueueDisabled);
            continue;
        }
        let envs: Vec<usize> = queue
            .envs
            .iter()
            .copied()
            .filter(|&e| e < snap.envs.len() && snap.envs[e].usable)
            .collect();
        if envs.is_empty() {
            pass.block_head(jobs, reasons, Blocked::NoUsableEnvironment);
            continue;
        }
        let mut ctx = QueueCtx {
            q,
            largest: largest_capacity(snap, &envs),
            envs,
            qmin: qmin[q],
            reasons_left: reasons,
        };
        match &queue.fair_share {
            None => pass.run_fifo(&mut ctx, jobs),
            Some(fs) => pass.run_fair_share(&mut ctx, fs, jobs, active_from_history[q]),
        }
    }
    pass.plan
}

/// The capacity that `NeverFits` quotes: the largest by (vCPU, memory, GPU) among the queue's
/// usable environments.
fn largest_capacity(snap: &Snapshot, envs: &[usize]) -> Resources {
    envs.iter()
        .map(|&e| snap.envs[e].capacity)
        .max_by_key(|c| (c.milli_vcpus, c.memory_mib, c.gpus))
        .unwrap_or_default()
}

struct QueueCtx {
    q: usize,
    /// The queue's usable environments, in its order.
    envs: Vec<usize>,
    /// Per-dimension minimum need over all the queue's jobs: an environment whose free does not
    /// cover it can take none of them.
    qmin: Resources,
    largest: Resources,
    reasons_left: usize,
}

enum Outcome {
    Placed,
    Waiting,
    NeverFits,
    /// Fits an environment, but a consumable resource it names is short or missing.
    Consumable(Blocked),
}

struct Pass<'a> {
    snap: &'a Snapshot,
    free: Vec<Resources>,
    /// Per consumable resource: what is still available in this pass.
    left: Vec<u64>,
    /// Per environment: the queue that left a job waiting on it first in this pass, which holds
    /// it against every queue after it.
    lock: Vec<usize>,
    plan: Plan,
}

impl Pass<'_> {
    /// Disabled queues and queues without a usable environment: reasons for the FIFO head only,
    /// found with a selection rather than a full sort.
    fn block_head(&mut self, jobs: &[usize], reasons: usize, why: Blocked) {
        if reasons == 0 {
            return;
        }
        let mut keys: Vec<(i64, usize)> = jobs
            .iter()
            .map(|&j| (self.snap.jobs[j].created_at, j))
            .collect();
        if keys.len() > reasons {
            keys.select_nth_unstable(reasons);
            keys.truncate(reasons);
        }
        keys.sort_unstable();
        self.plan
            .blocked
            .extend(keys.into_iter().map(|(_, j)| (j, why.clone())));
    }

    fn run_fifo(&mut self, ctx: &mut QueueCtx, jobs: &[usize]) {
        let mut keys: Vec<(i64, usize)> = jobs
            .iter()
            .map(|&j| (self.snap.jobs[j].created_at, j))
            .collect();
        keys.sort_unstable();

        let mut pos = 0;
        let mut saturated = self.saturated(ctx);
        while pos < keys.len() && !saturated {
            let j = keys[pos].1;
            pos += 1;
            match self.attempt(ctx, j, None) {
                Outcome::Placed => saturated = self.saturated(ctx),
                outcome => self.left_waiting(ctx, j, outcome),
            }
        }
        for &(_, j) in &keys[pos..] {
            if !self.drain_one(ctx, j) {
                break;
            }
        }
    }

    fn run_fair_share(
        &mut self,
        ctx: &mut QueueCtx,
        fs: &FairShareView,
        jobs: &[usize],
        active_from_history: usize,
    ) {
        let snap = self.snap;
        let mut turns = Turns::new(snap, ctx.q, fs, jobs);

        let mut reserve = (fs.compute_reservation > 0).then(|| {
            let mut r = Reserve {
                base: f64::from(fs.compute_reservation.min(99)) / 100.0,
                active: active_from_history,
                held: vec![0; ctx.envs.len()],
            };
            r.recompute(snap, &ctx.envs);
            r
        });

        let mut saturated = self.saturated(ctx);
        while !saturated {
            let Some(turn) = turns.heap.pop() else { break };
            let sh = &mut turns.shares[turn.share];
            while sh.cursor < sh.end {
                let j = turns.keys[sh.cursor].3;
                sh.cursor += 1;
                let held = match &reserve {
                    Some(r) if sh.active => Some(&r.held[..]),
                    _ => None,
                };
                match self.attempt(ctx, j, held) {
                    Outcome::Placed => {
                        sh.usage += vcpus(&snap.jobs[j].need);
                        if !sh.active {
                            sh.active = true;
                            if let Some(r) = &mut reserve {
                                r.active += 1;
                                r.recompute(snap, &ctx.envs);
                            }
                        }
                        saturated = self.saturated(ctx);
                        break;
                    }
                    outcome => self.left_waiting(ctx, j, outcome),
                }
            }
            if sh.cursor < sh.end {
                turns.heap.push(Turn::of(turn.share, sh));
            }
        }

        // Nothing more can start. The head for reasons keeps the turn order, charging each job
        // as if it had started, so reasons cover the jobs that would start next from every share.
        while ctx.reasons_left > 0 {
            let Some(j) = turns.next_as_started(snap) else {
                break;
            };
            self.drain_one(ctx, j);
        }
        'shares: for sh in &turns.shares {
            for &(_, _, _, j) in &turns.keys[sh.cursor..sh.end] {
                if !self.drain_one(ctx, j) {
                    break 'shares;
                }
            }
        }
    }

    /// First fit over the queue's environments. `held` is the vCPU reserve per environment (aligned
    /// with `ctx.envs`) that this job must leave free.
    fn attempt(&mut self, ctx: &QueueCtx, j: usize, held: Option<&[u64]>) -> Outcome {
        let need = self.snap.jobs[j].need;
        let wants = &self.snap.jobs[j].consumables;
        if !wants.is_empty() {
            if !self.fits_capacity(ctx, &need) {
                return Outcome::NeverFits;
            }
            if let Some(short) = self.consumable_short(j) {
                return Outcome::Consumable(short);
            }
        }
        let mut fits_somewhere = false;
        for (k, &e) in ctx.envs.iter().enumerate() {
            if !need.fits_within(&self.snap.envs[e].capacity) {
                continue;
            }
            fits_somewhere = true;
            let lock = self.lock[e];
            if lock != NO_LOCK && lock != ctx.q {
                continue;
            }
            let free = self.free[e];
            if !need.fits_within(&free) {
                continue;
            }
            if let Some(held) = held
                && free.milli_vcpus - need.milli_vcpus < held[k]
            {
                continue;
            }
            self.free[e] = free.saturating_sub(&need);
            for &(r, q) in wants {
                self.left[r] -= q;
            }
            self.plan.placements.push((j, e));
            return Outcome::Placed;
        }
        if fits_somewhere {
            Outcome::Waiting
        } else {
            Outcome::NeverFits
        }
    }

    fn fits_capacity(&self, ctx: &QueueCtx, need: &Resources) -> bool {
        ctx.envs
            .iter()
            .any(|&e| need.fits_within(&self.snap.envs[e].capacity))
    }

    /// Why job `j` cannot take its consumable resources now, if it cannot: the first one
    /// missing or short, in the job's order.
    fn consumable_short(&self, j: usize) -> Option<Blocked> {
        for &(r, quantity) in &self.snap.jobs[j].consumables {
            match self.snap.consumables.get(r) {
                Some(c) if c.exists => {
                    if quantity > self.left[r] {
                        return Some(Blocked::WaitingForConsumable {
                            resource: r,
                            quantity,
                        });
                    }
                }
                _ => return Some(Blocked::ConsumableMissing { resource: r }),
            }
        }
        None
    }

    /// Bookkeeping for a job that was not placed: hold the environments it waits on, and give a
    /// reason while the queue's head is not yet reported.
    fn left_waiting(&mut self, ctx: &mut QueueCtx, j: usize, outcome: Outcome) {
        let need = self.snap.jobs[j].need;
        let blocked = match outcome {
            Outcome::Placed => return,
            Outcome::Consumable(b) => b,
            Outcome::NeverFits => Blocked::NeverFits {
                need,
                largest: ctx.largest,
            },
            Outcome::Waiting => {
                let cause = if ctx.reasons_left > 0 {
                    self.wait_cause(ctx, &need)
                } else {
                    WaitCause::NoRoom
                };
                self.hold(ctx, &need);
                Blocked::WaitingForCapacity { need, cause }
            }
        };
        if ctx.reasons_left > 0 {
            ctx.reasons_left -= 1;
            self.plan.blocked.push((j, blocked));
        }
    }

    /// A job after the queue is saturated: no placement possible, so only reasons and holds.
    /// Returns false once there is nothing left to learn from the queue's remaining jobs.
    fn drain_one(&mut self, ctx: &mut QueueCtx, j: usize) -> bool {
        if ctx.reasons_left == 0 && !self.any_holdable(ctx) {
            return false;
        }
        let need = self.snap.jobs[j].need;
        let outcome = if !self.fits_capacity(ctx, &need) {
            Outcome::NeverFits
        } else if let Some(short) = self.consumable_short(j) {
            Outcome::Consumable(short)
        } else {
            Outcome::Waiting
        };
        self.left_waiting(ctx, j, outcome);
        true
    }

    fn hold(&mut self, ctx: &QueueCtx, need: &Resources) {
        for &e in &ctx.envs {
            if self.lock[e] == NO_LOCK
                && need.fits_within(&self.snap.envs[e].capacity)
                && !need.fits_within(&self.free[e])
            {
                self.lock[e] = ctx.q;
            }
        }
    }

    /// The first environment (in queue order) that would take the job but for a hold or the
    /// reservation; `NoRoom` when every environment that can hold it is simply too full.
    fn wait_cause(&self, ctx: &QueueCtx, need: &Resources) -> WaitCause {
        for &e in &ctx.envs {
            if !need.fits_within(&self.snap.envs[e].capacity) || !need.fits_within(&self.free[e]) {
                continue;
            }
            let lock = self.lock[e];
            return if lock != NO_LOCK && lock != ctx.q {
                WaitCause::HeldForQueue {
                    queue: lock,
                    env: e,
                }
            } else {
                WaitCause::ComputeReservation { env: e }
            };
        }
        WaitCause::NoRoom
    }

    /// No job of the queue can be placed any more: every environment is held by another queue or
    /// lacks even the queue's smallest need.
    fn saturated(&self, ctx: &QueueCtx) -> bool {
        ctx.envs.iter().all(|&e| {
            let lock = self.lock[e];
            (lock != NO_LOCK && lock != ctx.q) || !ctx.qmin.fits_within(&self.free[e])
        })
    }

    /// Some environment of the queue could still be held by one of its waiting jobs.
    fn any_holdable(&self, ctx: &QueueCtx) -> bool {
        ctx.envs
            .iter()
            .any(|&e| self.lock[e] == NO_LOCK && ctx.qmin.fits_within(&self.snap.envs[e].capacity))
    }
}

/// One fair-share queue's jobs, grouped by share and ordered within each, with the shares'
/// claims to the next turn. The pass places from it; [`dispatch_order`] and the reasons of a
/// saturated queue read it as if every job started when its turn came.
struct Turns {
    /// (share, priority descending, created_at, index): one ascending sort groups the shares
    /// and orders each one.
    keys: Vec<(u32, Reverse<i32>, i64, usize)>,
    shares: Vec<Share>,
    heap: BinaryHeap<Turn>,
}

impl Turns {
    fn new(snap: &Snapshot, q: usize, fs: &FairShareView, jobs: &[usize]) -> Turns {
        // Share ids in first-seen order; only the grouping matters, ties use the name rank.
        let mut ids: HashMap<&str, u32> = HashMap::new();
        let mut names: Vec<&str> = Vec::new();
        let mut keys: Vec<(u32, Reverse<i32>, i64, usize)> = Vec::with_capacity(jobs.len());
        for &j in jobs {
            let job = &snap.jobs[j];
            let name = job.share.as_deref().unwrap_or("");
            let id = *ids.entry(name).or_insert_with(|| {
                names.push(name);
                (names.len() - 1) as u32
            });
            keys.push((id, Reverse(job.priority), job.created_at, j));
        }
        keys.sort_unstable();
        let mut by_name: Vec<u32> = (0..names.len() as u32).collect();
        by_name.sort_unstable_by_key(|&s| names[s as usize]);

        let mut shares: Vec<Share> = names
            .iter()
            .map(|name| {
                let usage = snap
                    .share_usage
                    .get(&(q, (*name).to_owned()))
                    .copied()
                    // Same test as the ActiveShares count in `plan`, so a share is never
                    // counted twice.
                    .filter(|u| u.is_finite() && *u > 0.0)
                    .unwrap_or(0.0);
                Share {
                    weight: weight_for(&fs.weights, name),
                    usage,
                    active: usage > 0.0,
                    rank: 0,
                    cursor: 0,
                    end: 0,
                }
            })
            .collect();
        for (rank, &s) in by_name.iter().enumerate() {
            shares[s as usize].rank = rank as u32;
        }
        let mut i = 0;
        while i < keys.len() {
            let s = keys[i].0 as usize;
            shares[s].cursor = i;
            while i < keys.len() && keys[i].0 as usize == s {
                i += 1;
            }
            shares[s].end = i;
        }
        let heap = shares
            .iter()
            .enumerate()
            .map(|(s, sh)| Turn::of(s, sh))
            .collect();
        Turns { keys, shares, heap }
    }

    /// The job that starts next if every job starts when its turn comes: the next job of the
    /// share with the turn, charged to that share.
    fn next_as_started(&mut self, snap: &Snapshot) -> Option<usize> {
        let turn = self.heap.pop()?;
        let sh = &mut self.shares[turn.share];
        let j = self.keys[sh.cursor].3;
        sh.cursor += 1;
        sh.usage += vcpus(&snap.jobs[j].need);
        if sh.cursor < sh.end {
            self.heap.push(Turn::of(turn.share, sh));
        }
        Some(j)
    }
}

/// See [`super::dispatch_order`].
pub(super) fn dispatch_order(snap: &Snapshot, q: usize, limit: usize) -> Vec<usize> {
    let Some(queue) = snap.queues.get(q) else {
        return Vec::new();
    };
    let jobs: Vec<usize> = (0..snap.jobs.len())
        .filter(|&j| snap.jobs[j].queue == q)
        .collect();
    match &queue.fair_share {
        None => {
            let mut keys: Vec<(i64, usize)> =
                jobs.iter().map(|&j| (snap.jobs[j].created_at, j)).collect();
            keys.sort_unstable();
            keys.into_iter().take(limit).map(|(_, j)| j).collect()
        }
        Some(fs) => {
            let mut turns = Turns::new(snap, q, fs, &jobs);
            std::iter::from_fn(|| turns.next_as_started(snap))
                .take(limit)
                .collect()
        }
    }
}

fn vcpus(need: &Resources) -> f64 {
    need.milli_vcpus as f64 / 1000.0
}

/// The weight of a share: exact match, else the longest matching `prefix*`, else 1.0.
pub(super) fn weight_for(weights: &[ShareWeight], share: &str) -> f64 {
    let exact = weights.iter().find(|w| w.share_identifier == share);
    let chosen = exact.or_else(|| {
        weights
            .iter()
            .filter_map(|w| {
                let prefix = w.share_identifier.strip_suffix('*')?;
                share.starts_with(prefix).then_some((prefix.len(), w))
            })
            // max_by_key keeps the last of equals; reverse so the first listed wins a tie.
            .rev()
            .max_by_key(|(len, _)| *len)
            .map(|(_, w)| w)
    });
    match chosen {
        Some(w) if w.weight_factor.is_finite() && w.weight_factor > 0.0 => {
            w.weight_factor.clamp(0.0001, 999.9999)
        }
        _ => 1.0,
    }
}

struct Share {
    weight: f64,
    /// Decayed history plus the vCPUs placed in this pass.
    usage: f64,
    active: bool,
    /// Position by name, for ties.
    rank: u32,
    /// Next job in `keys`, and the end of this share's run there.
    cursor: usize,
    end: usize,
}

/// A share's claim to the next turn; the heap pops the lowest usage × weight, then name.
struct Turn {
    key: f64,
    rank: u32,
    share: usize,
}

impl Turn {
    fn of(share: usize, sh: &Share) -> Turn {
        Turn {
            key: sh.usage * sh.weight,
            rank: sh.rank,
            share,
        }
    }
}

impl Ord for Turn {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap.
        other
            .key
            .total_cmp(&self.key)
            .then(other.rank.cmp(&self.rank))
    }
}

impl PartialOrd for Turn {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Turn {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Turn {}

/// computeReservation state of one fair-share queue.
struct Reserve {
    /// computeReservation / 100.
    base: f64,
    active: usize,
    /// vCPUs (thousandths) an active share's job must leave free, per environment of the queue.
    held: Vec<u64>,
}

impl Reserve {
    fn recompute(&mut self, snap: &Snapshot, envs: &[usize]) {
        let fraction = self
            .base
            .powi(i32::try_from(self.active).unwrap_or(i32::MAX));
        for (held, &e) in self.held.iter_mut().zip(envs) {
            *held = (snap.envs[e].capacity.milli_vcpus as f64 * fraction).floor() as u64;
        }
    }
}
