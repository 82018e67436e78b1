use std::collections::HashMap;

use proptest::prelude::*;

use super::*;

// ---------- builders ----------

fn res(vcpus: u64, memory_mib: u64, gpus: u64) -> Resources {
    Resources {
        milli_vcpus: vcpus * 1000,
        memory_mib,
        gpus,
    }
}

fn env(name: &str, capacity: Resources, free: Resources) -> EnvView {
    EnvView {
        name: name.into(),
        usable: true,
        capacity,
        free,
    }
}

fn queue(name: &str, priority: i32, envs: Vec<usize>) -> QueueView {
    QueueView {
        name: name.into(),
        priority,
        enabled: true,
        envs,
        fair_share: None,
    }
}

fn fs_queue(name: &str, reservation: u32, weights: &[(&str, f64)], envs: Vec<usize>) -> QueueView {
    QueueView {
        fair_share: Some(FairShareView {
            compute_reservation: reservation,
            weights: weights
                .iter()
                .map(|(s, w)| ShareWeight {
                    share_identifier: (*s).into(),
                    weight_factor: *w,
                })
                .collect(),
        }),
        ..queue(name, 1, envs)
    }
}

fn job(queue: usize, created_at: i64, need: Resources) -> JobView {
    JobView {
        queue,
        share: None,
        priority: 0,
        created_at,
        need,
        consumables: Vec::new(),
    }
}

fn share_job(queue: usize, share: &str, priority: i32, created_at: i64, vcpus: u64) -> JobView {
    JobView {
        share: Some(share.into()),
        priority,
        ..job(queue, created_at, res(vcpus, 1, 0))
    }
}

fn placed_per_share(snap: &Snapshot, plan: &Plan) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for &(j, _) in &plan.placements {
        *out.entry(snap.jobs[j].share.clone().unwrap_or_default())
            .or_insert(0) += 1;
    }
    out
}

fn blocked_of(plan: &Plan, j: usize) -> Option<&Blocked> {
    plan.blocked
        .iter()
        .find(|(b, _)| *b == j)
        .map(|(_, why)| why)
}

// ---------- invariants, shared by the properties and the synthetic smoke test ----------

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

fn usable_envs_of(snap: &Snapshot, q: usize) -> Vec<usize> {
    snap.queues[q]
        .envs
        .iter()
        .copied()
        .filter(|&e| e < snap.envs.len() && snap.envs[e].usable)
        .collect()
}

fn add(a: Resources, b: Resources) -> Resources {
    Resources {
        milli_vcpus: a.milli_vcpus + b.milli_vcpus,
        memory_mib: a.memory_mib + b.memory_mib,
        gpus: a.gpus + b.gpus,
    }
}

fn check_no_overcommit(snap: &Snapshot, plan: &Plan) -> Result<(), String> {
    let mut used = vec![Resources::default(); snap.envs.len()];
    for &(j, e) in &plan.placements {
        let job = &snap.jobs[j];
        let q = &snap.queues[job.queue];
        ensure!(snap.envs[e].usable, "job {j} placed on unusable env {e}");
        ensure!(q.enabled, "job {j} placed from disabled queue {}", q.name);
        ensure!(
            q.envs.contains(&e),
            "job {j} placed on env {e} outside its queue"
        );
        used[e] = add(used[e], job.need);
    }
    for (e, used) in used.iter().enumerate() {
        ensure!(
            used.fits_within(&snap.envs[e].free),
            "env {e} over-committed: {used:?} > {:?}",
            snap.envs[e].free
        );
    }
    Ok(())
}

/// No queue after A (strictly lower priority) takes an environment that a waiting job of A could
/// use. Fair-share queues with a reservation are exempt: a job held back only by the reservation
/// deliberately leaves the environment to others.
fn check_priority(snap: &Snapshot, plan: &Plan) -> Result<(), String> {
    let placed: Vec<Option<usize>> = {
        let mut p = vec![None; snap.jobs.len()];
        for &(j, e) in &plan.placements {
            p[j] = Some(e);
        }
        p
    };
    for (j, job) in snap.jobs.iter().enumerate() {
        let a = &snap.queues[job.queue];
        let reserves = a
            .fair_share
            .as_ref()
            .is_some_and(|f| f.compute_reservation > 0);
        if placed[j].is_some() || !a.enabled || reserves {
            continue;
        }
        for e in usable_envs_of(snap, job.queue) {
            if !job.need.fits_within(&snap.envs[e].capacity) {
                continue;
            }
            for &(k, ke) in &plan.placements {
                let b = &snap.queues[snap.jobs[k].queue];
                ensure!(
                    !(ke == e && b.priority < a.priority),
                    "job {k} of {} (priority {}) took env {e} while job {j} of {} (priority {}) \
                     waits for it",
                    b.name,
                    b.priority,
                    a.name,
                    a.priority
                );
            }
        }
    }
    Ok(())
}

/// In a FIFO queue, an earlier job left unplaced while a later one went to E did not fit what E
/// had free at its turn.
fn check_fifo(snap: &Snapshot, plan: &Plan) -> Result<(), String> {
    let mut placed_at = vec![None; snap.jobs.len()];
    for (pos, &(j, e)) in plan.placements.iter().enumerate() {
        placed_at[j] = Some((pos, e));
    }
    let key = |j: usize| (snap.jobs[j].created_at, j);
    for (q, queue) in snap.queues.iter().enumerate() {
        if queue.fair_share.is_some() || !queue.enabled {
            continue;
        }
        let mine: Vec<usize> = (0..snap.jobs.len())
            .filter(|&j| snap.jobs[j].queue == q)
            .collect();
        for &k in &mine {
            let Some((_, e)) = placed_at[k] else { continue };
            for &j in &mine {
                let need = snap.jobs[j].need;
                if placed_at[j].is_some()
                    || key(j) >= key(k)
                    || !need.fits_within(&snap.envs[e].free)
                {
                    continue;
                }
                // j's turn came right before the first placement of a later job of this queue.
                let turn = plan
                    .placements
                    .iter()
                    .position(|&(p, _)| snap.jobs[p].queue == q && key(p) > key(j))
                    .expect("k is such a placement");
                let mut free = snap.envs[e].free;
                for &(p, pe) in &plan.placements[..turn] {
                    if pe == e {
                        free = free.saturating_sub(&snap.jobs[p].need);
                    }
                }
                ensure!(
                    !need.fits_within(&free),
                    "job {j} of {} was skipped though it fit env {e} ({free:?} free) before \
                     later job {k}",
                    queue.name
                );
            }
        }
    }
    Ok(())
}

fn check_fits(snap: &Snapshot, plan: &Plan) -> Result<(), String> {
    for &(j, e) in &plan.placements {
        let need = snap.jobs[j].need;
        ensure!(
            need.fits_within(&snap.envs[e].capacity),
            "job {j} exceeds env {e}'s capacity"
        );
    }
    for (j, why) in &plan.blocked {
        let job = &snap.jobs[*j];
        let envs = usable_envs_of(snap, job.queue);
        match why {
            Blocked::NeverFits { need, largest } => {
                ensure!(*need == job.need, "job {j}: NeverFits quotes another need");
                for &e in &envs {
                    ensure!(
                        !need.fits_within(&snap.envs[e].capacity),
                        "job {j} is NeverFits but fits env {e}"
                    );
                }
                ensure!(
                    envs.iter().any(|&e| snap.envs[e].capacity == *largest),
                    "job {j}: largest {largest:?} is no usable env of its queue"
                );
            }
            Blocked::WaitingForCapacity { need, .. } => {
                ensure!(
                    envs.iter()
                        .any(|&e| need.fits_within(&snap.envs[e].capacity)),
                    "job {j} waits for capacity no env of its queue has"
                );
            }
            Blocked::QueueDisabled => {
                ensure!(!snap.queues[job.queue].enabled, "job {j}: queue is enabled");
            }
            Blocked::NoUsableEnvironment => ensure!(envs.is_empty(), "job {j}: env usable"),
            Blocked::WaitingForConsumable { resource, quantity } => {
                ensure!(
                    job.consumables.contains(&(*resource, *quantity)),
                    "job {j} waits for a resource it does not name"
                );
                ensure!(
                    snap.consumables[*resource].exists,
                    "job {j} waits for a missing resource as if it existed"
                );
            }
            Blocked::ConsumableMissing { resource } => {
                ensure!(
                    job.consumables.iter().any(|(r, _)| r == resource)
                        && !snap.consumables[*resource].exists,
                    "job {j}: ConsumableMissing for a resource that exists or it does not name"
                );
            }
        }
        let text = why.reason(snap, *j);
        ensure!(
            text.starts_with(why.code()) && !text.contains("(unknown)"),
            "job {j}: bad reason {text:?}"
        );
    }
    Ok(())
}

/// With fewer than HEAD_REASONS_PER_QUEUE jobs per queue, every job is placed or explained, once.
fn check_accounting(snap: &Snapshot, plan: &Plan) -> Result<(), String> {
    let mut seen = vec![0; snap.jobs.len()];
    for &(j, _) in &plan.placements {
        seen[j] += 1;
    }
    for &(j, _) in &plan.blocked {
        seen[j] += 1;
    }
    for (j, n) in seen.iter().enumerate() {
        ensure!(*n == 1, "job {j} appears {n} times in the plan");
    }
    Ok(())
}

/// Consumable resources: what the placements take of each never exceeds what was available, and
/// no job naming a missing resource starts.
fn check_consumables(snap: &Snapshot, plan: &Plan) -> Result<(), String> {
    let mut taken = vec![0u64; snap.consumables.len()];
    for &(j, _) in &plan.placements {
        for &(r, q) in &snap.jobs[j].consumables {
            ensure!(
                snap.consumables[r].exists,
                "job {j} placed though resource {r} does not exist"
            );
            taken[r] += q;
        }
    }
    for (r, c) in snap.consumables.iter().enumerate() {
        ensure!(
            taken[r] <= c.available,
            "resource {r} over-committed: {} taken, {} available",
            taken[r],
            c.available
        );
    }
    Ok(())
}

fn check_all(snap: &Snapshot, plan: &Plan) -> Result<(), String> {
    check_no_overcommit(snap, plan)?;
    check_priority(snap, plan)?;
    check_fifo(snap, plan)?;
    check_fits(snap, plan)
}

// ---------- properties ----------

fn arb_env() -> impl Strategy<Value = EnvView> {
    (
        prop::bool::weighted(0.85),
        1u64..=16,
        1u64..=16,
        prop_oneof![3 => Just(0u64), 1 => 1u64..=4],
        0u64..=100,
        0u64..=100,
    )
        .prop_map(|(usable, vcpus, gib, gpus, pct_cpu, pct_mem)| {
            let capacity = res(vcpus, gib * 1024, gpus);
            EnvView {
                name: String::new(),
                usable,
                capacity,
                free: Resources {
                    milli_vcpus: capacity.milli_vcpus * pct_cpu / 100,
                    memory_mib: capacity.memory_mib * pct_mem / 100,
                    gpus: capacity.gpus * pct_cpu / 100,
                },
            }
        })
}

fn arb_queue(envs: usize) -> impl Strategy<Value = QueueView> {
    let order = Just((0..envs).collect::<Vec<_>>()).prop_shuffle();
    let weights = prop::collection::vec(
        (
            prop::sample::select(vec!["s0", "s1", "s2", "s*", "s1*"]),
            prop::sample::select(vec![0.25, 0.5, 1.0, 2.0]),
        ),
        0..3,
    );
    let fair_share =
        prop::option::weighted(0.4, (prop::sample::select(vec![0u32, 0, 50]), weights));
    (
        0i32..4,
        prop::bool::weighted(0.85),
        order,
        0..=envs,
        fair_share,
    )
        .prop_map(|(priority, enabled, mut order, n, fair_share)| {
            order.truncate(n.max(1));
            QueueView {
                name: String::new(),
                priority,
                enabled,
                envs: order,
                fair_share: fair_share.map(|(r, w)| FairShareView {
                    compute_reservation: r,
                    weights: w
                        .into_iter()
                        .map(|(s, f)| ShareWeight {
                            share_identifier: s.into(),
                            weight_factor: f,
                        })
                        .collect(),
                }),
            }
        })
}

fn arb_job(queues: usize) -> impl Strategy<Value = JobView> {
    (
        0..queues,
        0usize..5,
        0i32..3,
        0i64..10,
        1u64..=64,
        1u64..=40,
        prop_oneof![8 => Just(0u64), 1 => Just(1u64), 1 => Just(3u64)],
    )
        .prop_map(
            |(queue, share, priority, created_at, quarters, halves, gpus)| JobView {
                queue,
                share: (share < 4).then(|| format!("s{share}")),
                priority,
                created_at,
                need: Resources {
                    milli_vcpus: quarters * 250,
                    memory_mib: halves * 512,
                    gpus,
                },
                consumables: Vec::new(),
            },
        )
}

fn arb_snapshot() -> impl Strategy<Value = Snapshot> {
    (1usize..=3, 1usize..=4)
        .prop_flat_map(|(ne, nq)| {
            (
                prop::collection::vec(arb_env(), ne),
                prop::collection::vec(arb_queue(ne), nq),
                prop::collection::vec(arb_job(nq), 0..60),
                prop::collection::vec((0..nq, 0usize..4, prop_oneof![Just(0.0), 0.0..40.0]), 0..6),
            )
        })
        .prop_map(|(mut envs, mut queues, jobs, usage)| {
            for (i, e) in envs.iter_mut().enumerate() {
                e.name = format!("ce-{i}");
            }
            for (i, q) in queues.iter_mut().enumerate() {
                q.name = format!("q-{i}");
            }
            Snapshot {
                consumables: Vec::new(),
                envs,
                queues,
                jobs,
                share_usage: usage
                    .into_iter()
                    .map(|(q, s, u)| ((q, format!("s{s}")), u))
                    .collect(),
            }
        })
}

/// [`arb_snapshot`] plus 1–3 consumable resources (a few missing) that jobs name with small
/// quantities, so that resources run short within one pass.
fn arb_consumable_snapshot() -> impl Strategy<Value = Snapshot> {
    (
        arb_snapshot(),
        prop::collection::vec((0u64..8, prop::bool::weighted(0.9)), 1..4),
        prop::collection::vec(prop::collection::vec((0usize..3, 1u64..4), 0..3), 60),
    )
        .prop_map(|(mut snap, resources, needs)| {
            let n = resources.len();
            snap.consumables = resources
                .into_iter()
                .enumerate()
                .map(|(i, (available, exists))| ConsumableView {
                    name: format!("r{i}"),
                    available,
                    exists,
                })
                .collect();
            for (job, need) in snap.jobs.iter_mut().zip(needs) {
                for (r, q) in need {
                    let r = r % n;
                    if !job.consumables.iter().any(|&(seen, _)| seen == r) {
                        job.consumables.push((r, q));
                    }
                }
            }
            snap
        })
}

fn prop_ok(r: Result<(), String>) -> Result<(), TestCaseError> {
    r.map_err(TestCaseError::fail)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn never_overcommits(snap in arb_snapshot()) {
        prop_ok(check_no_overcommit(&snap, &plan(&snap)))?;
    }

    #[test]
    fn higher_priority_queues_first(snap in arb_snapshot()) {
        prop_ok(check_priority(&snap, &plan(&snap)))?;
    }

    #[test]
    fn fifo_never_skips_a_job_that_fit(snap in arb_snapshot()) {
        prop_ok(check_fifo(&snap, &plan(&snap)))?;
    }

    #[test]
    fn placed_jobs_fit_and_never_fits_fit_nowhere(snap in arb_snapshot()) {
        prop_ok(check_fits(&snap, &plan(&snap)))?;
    }

    #[test]
    fn every_job_is_placed_or_explained_once(snap in arb_snapshot()) {
        prop_ok(check_accounting(&snap, &plan(&snap)))?;
    }

    #[test]
    fn consumable_resources_are_never_overcommitted(snap in arb_consumable_snapshot()) {
        let plan = plan(&snap);
        prop_ok(check_consumables(&snap, &plan))?;
        prop_ok(check_no_overcommit(&snap, &plan))?;
        prop_ok(check_fits(&snap, &plan))?;
        prop_ok(check_accounting(&snap, &plan))?;
        // The quick pass (no reasons) places exactly the same jobs.
        prop_assert_eq!(plan_placements(&snap).placements, plan.placements);
    }

    #[test]
    fn deterministic(snap in arb_snapshot()) {
        let first = plan(&snap);
        // A fresh map (new hasher, reversed insertion) iterates in another order.
        let mut entries: Vec<_> = snap.share_usage.clone().into_iter().collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries.reverse();
        let again = Snapshot { share_usage: entries.into_iter().collect(), ..snap.clone() };
        let second = plan(&again);
        prop_assert_eq!(first.placements, second.placements);
        prop_assert_eq!(first.blocked, second.blocked);
    }
}

// ---------- fair share ----------

#[test]
fn fair_share_turns_follow_weights() {
    let snap = Snapshot {
        consumables: Vec::new(),
        envs: vec![env("ce", res(30, 1 << 20, 0), res(30, 1 << 20, 0))],
        queues: vec![fs_queue("fs", 0, &[("a", 1.0), ("b", 0.5)], vec![0])],
        jobs: (0..200)
            .map(|i| share_job(0, if i % 2 == 0 { "a" } else { "b" }, 0, i, 1))
            .collect(),
        share_usage: HashMap::new(),
    };
    let plan = plan(&snap);
    let per = placed_per_share(&snap, &plan);
    assert_eq!(plan.placements.len(), 30);
    let b = per["b"];
    assert!((19..=21).contains(&b), "weight 0.5 got {b} of 30");
    // Head reasons cover both shares in turn order.
    assert_eq!(plan.blocked.len(), HEAD_REASONS_PER_QUEUE);
    let blocked_b = plan
        .blocked
        .iter()
        .filter(|(j, _)| snap.jobs[*j].share.as_deref() == Some("b"))
        .count();
    assert!(
        (60..=72).contains(&blocked_b),
        "{blocked_b} of the head from b"
    );
}

#[test]
fn share_usage_history_shifts_turns_to_the_less_used_share() {
    let snap = Snapshot {
        consumables: Vec::new(),
        envs: vec![env("ce", res(20, 1 << 20, 0), res(20, 1 << 20, 0))],
        queues: vec![fs_queue("fs", 0, &[], vec![0])],
        jobs: (0..100)
            .map(|i| share_job(0, if i % 2 == 0 { "a" } else { "b" }, 0, i, 1))
            .collect(),
        share_usage: [((0, "a".to_string()), 10.0)].into_iter().collect(),
    };
    let per = placed_per_share(&snap, &plan(&snap));
    // b catches up to a's 10 vCPU-seconds first, then they alternate.
    assert_eq!(per["b"], 15);
    assert_eq!(per["a"], 5);
}

#[test]
fn scheduling_priority_orders_jobs_within_a_share() {
    let snap = Snapshot {
        consumables: Vec::new(),
        envs: vec![env("ce", res(3, 1 << 20, 0), res(3, 1 << 20, 0))],
        queues: vec![fs_queue("fs", 0, &[], vec![0])],
        jobs: vec![
            share_job(0, "a", 0, 1, 1),
            share_job(0, "a", 5, 2, 1),
            share_job(0, "a", 5, 3, 1),
            share_job(0, "a", 9, 4, 1),
        ],
        share_usage: HashMap::new(),
    };
    let plan = plan(&snap);
    let order: Vec<usize> = plan.placements.iter().map(|&(j, _)| j).collect();
    assert_eq!(order, vec![3, 1, 2]);
    assert!(matches!(
        blocked_of(&plan, 0),
        Some(Blocked::WaitingForCapacity { .. })
    ));
}

#[test]
fn wildcard_share_weights_match_the_longest_prefix() {
    let weights = |list: &[(&str, f64)]| -> Vec<ShareWeight> {
        list.iter()
            .map(|(s, w)| ShareWeight {
                share_identifier: (*s).into(),
                weight_factor: *w,
            })
            .collect()
    };
    let w = weights(&[("team-*", 1.0), ("team-a*", 0.25), ("team-a1", 2.0)]);
    assert_eq!(pass::weight_for(&w, "team-a1"), 2.0);
    assert_eq!(pass::weight_for(&w, "team-a2"), 0.25);
    assert_eq!(pass::weight_for(&w, "team-b"), 1.0);
    assert_eq!(pass::weight_for(&w, "other"), 1.0);
    assert_eq!(pass::weight_for(&weights(&[("x*", -3.0)]), "x"), 1.0);
    assert_eq!(pass::weight_for(&weights(&[("*", 0.5)]), "anything"), 0.5);

    let snap = Snapshot {
        consumables: Vec::new(),
        envs: vec![env("ce", res(25, 1 << 20, 0), res(25, 1 << 20, 0))],
        queues: vec![fs_queue(
            "fs",
            0,
            &[("team-*", 1.0), ("team-a*", 0.25)],
            vec![0],
        )],
        jobs: (0..100)
            .map(|i| share_job(0, if i % 2 == 0 { "team-a1" } else { "team-b" }, 0, i, 1))
            .collect(),
        share_usage: HashMap::new(),
    };
    let per = placed_per_share(&snap, &plan(&snap));
    let a1 = per["team-a1"];
    assert!((19..=21).contains(&a1), "weight 0.25 got {a1} of 25");
    assert_eq!(per["team-b"], 25 - a1);
}

#[test]
fn compute_reservation_holds_back_for_inactive_shares_only() {
    // ce: 10 vCPU. Share a is active from history; b is new. r = 50.
    let snap = Snapshot {
        consumables: Vec::new(),
        envs: vec![env("ce", res(10, 1 << 20, 0), res(10, 1 << 20, 0))],
        queues: vec![
            QueueView {
                priority: 10,
                ..fs_queue("fs", 50, &[], vec![0])
            },
            queue("low", 1, vec![0]),
        ],
        jobs: (0..20)
            .map(|i| share_job(0, "a", 0, i, 1))
            .chain([share_job(0, "b", 0, 100, 1)])
            .chain((0..5).map(|i| job(1, i, res(1, 1, 0))))
            .collect(),
        share_usage: [((0, "a".to_string()), 5.0)].into_iter().collect(),
    };
    let plan = plan(&snap);
    let per = placed_per_share(&snap, &plan);
    // b goes first (usage 0) and may use anything; then ActiveShares = 2 holds back
    // 10 × 0.5² = 2.5 vCPU, so a stops at 3 free after 6 jobs.
    assert_eq!(per["b"], 1);
    assert_eq!(per["a"], 6);
    let held = Blocked::WaitingForCapacity {
        need: res(1, 1, 0),
        cause: WaitCause::ComputeReservation { env: 0 },
    };
    assert_eq!(blocked_of(&plan, 7), Some(&held));
    assert_eq!(
        held.reason(&snap, 7),
        "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY - Waiting for 1 vCPU / 1 MiB; the free capacity \
         of compute environment ce is held back by the computeReservation of job queue fs for \
         share identifiers that are not active yet."
    );
    // The reserve is not held against other queues: the low queue takes the 3 left.
    assert_eq!(per[""], 3);
}

// ---------- placement, anti-starvation, reasons ----------

#[test]
fn never_fits_gets_the_exact_reason() {
    let snap = Snapshot {
        consumables: Vec::new(),
        envs: vec![env("small", res(8, 32768, 0), res(8, 32768, 0))],
        queues: vec![queue("q", 1, vec![0])],
        jobs: vec![job(0, 1, res(64, 1024, 0))],
        share_usage: HashMap::new(),
    };
    let plan = plan(&snap);
    assert!(plan.placements.is_empty());
    let why = blocked_of(&plan, 0).unwrap();
    assert_eq!(
        why,
        &Blocked::NeverFits {
            need: res(64, 1024, 0),
            largest: res(8, 32768, 0)
        }
    );
    assert_eq!(
        why.reason(&snap, 0),
        "MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT - The job requires 64 vCPU / 1024 MiB / 0 GPU \
         but the largest compute environment of its queue offers 8 vCPU / 32768 MiB / 0 GPU."
    );
}

#[test]
fn disabled_queue_dispatches_nothing_and_says_so() {
    let snap = Snapshot {
        consumables: Vec::new(),
        envs: vec![env("ce", res(8, 4096, 0), res(8, 4096, 0))],
        queues: vec![QueueView {
            enabled: false,
            ..queue("paused", 1, vec![0])
        }],
        jobs: vec![job(0, 1, res(1, 512, 0))],
        share_usage: HashMap::new(),
    };
    let plan = plan(&snap);
    assert!(plan.placements.is_empty());
    assert_eq!(plan.blocked, vec![(0, Blocked::QueueDisabled)]);
    assert_eq!(
        Blocked::QueueDisabled.reason(&snap, 0),
        "MISCONFIGURATION:JOB_QUEUE_DISABLED - Job queue paused is DISABLED; enable it to \
         dispatch its jobs."
    );
}

#[test]
fn unusable_environments_get_nothing() {
    let mut down = env("down", res(8, 4096, 0), res(8, 4096, 0));
    down.usable = false;
    let snap = Snapshot {
        consumables: Vec::new(),
        envs: vec![
            down.clone(),
            env("up", res(8, 4096, 0), res(8, 4096, 0)),
            down,
        ],
        queues: vec![queue("mixed", 2, vec![0, 1]), queue("dead", 1, vec![2])],
        jobs: vec![job(0, 1, res(1, 512, 0)), job(1, 1, res(1, 512, 0))],
        share_usage: HashMap::new(),
    };
    let plan = plan(&snap);
    assert_eq!(plan.placements, vec![(0, 1)]);
    assert_eq!(plan.blocked, vec![(1, Blocked::NoUsableEnvironment)]);
    assert_eq!(
        Blocked::NoUsableEnvironment.reason(&snap, 1),
        "MISCONFIGURATION:COMPUTE_ENVIRONMENT_NOT_USABLE - No compute environment of job queue \
         dead (down) is ENABLED and VALID; enable or repair one, or add another to the queue."
    );
}

#[test]
fn small_job_backfills_behind_a_blocked_large_one() {
    let snap = Snapshot {
        consumables: Vec::new(),
        envs: vec![env("ce", res(16, 65536, 0), res(4, 65536, 0))],
        queues: vec![queue("q", 1, vec![0])],
        jobs: vec![job(0, 1, res(8, 1024, 0)), job(0, 2, res(2, 512, 0))],
        share_usage: HashMap::new(),
    };
    let plan = plan(&snap);
    assert_eq!(plan.placements, vec![(1, 0)]);
    let why = blocked_of(&plan, 0).unwrap();
    assert_eq!(
        why,
        &Blocked::WaitingForCapacity {
            need: res(8, 1024, 0),
            cause: WaitCause::NoRoom
        }
    );
    assert_eq!(
        why.reason(&snap, 0),
        "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY - Waiting for 8 vCPU / 1024 MiB; compute \
         environment ce of job queue q has less than that free now."
    );
}

#[test]
fn lower_priority_queue_cannot_take_capacity_a_higher_one_waits_for() {
    let snap = Snapshot {
        consumables: Vec::new(),
        envs: vec![
            env("shared", res(16, 65536, 0), res(4, 65536, 0)),
            env("spare", res(4, 65536, 0), res(4, 65536, 0)),
        ],
        queues: vec![
            queue("low", 1, vec![0]),
            queue("high", 9, vec![0]),
            queue("low-with-spare", 1, vec![0, 1]),
        ],
        jobs: vec![
            job(0, 1, res(1, 512, 0)),
            job(1, 2, res(8, 1024, 0)),
            job(2, 3, res(1, 512, 0)),
        ],
        share_usage: HashMap::new(),
    };
    let plan = plan(&snap);
    // The big job waits on `shared`; the small job of a lower queue goes to `spare` instead,
    // and the one without a spare waits.
    assert_eq!(plan.placements, vec![(2, 1)]);
    let why = blocked_of(&plan, 0).unwrap();
    assert_eq!(
        why,
        &Blocked::WaitingForCapacity {
            need: res(1, 512, 0),
            cause: WaitCause::HeldForQueue { queue: 1, env: 0 }
        }
    );
    assert_eq!(
        why.reason(&snap, 0),
        "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY - Waiting for 1 vCPU / 512 MiB; compute \
         environment shared has that free but holds it for a waiting job of higher-priority job \
         queue high."
    );
}

#[test]
fn gpu_wait_holds_only_environments_that_can_run_it() {
    let snap = Snapshot {
        consumables: Vec::new(),
        envs: vec![
            env("gpu", res(8, 65536, 2), res(8, 65536, 0)),
            env("cpu", res(8, 65536, 0), res(8, 65536, 0)),
        ],
        // batch would try `gpu` first; only the GPU job's hold sends it to `cpu`.
        queues: vec![queue("ml", 9, vec![0, 1]), queue("batch", 1, vec![0, 1])],
        jobs: vec![job(0, 1, res(1, 512, 1)), job(1, 2, res(1, 512, 0))],
        share_usage: HashMap::new(),
    };
    let plan = plan(&snap);
    assert_eq!(plan.placements, vec![(1, 1)]);
    assert_eq!(
        blocked_of(&plan, 0).unwrap().reason(&snap, 0),
        "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY - Waiting for 1 vCPU / 512 MiB / 1 GPU; compute \
         environment gpu of job queue ml has less than that free now."
    );
}

#[test]
fn reasons_cover_only_the_head_of_each_queue() {
    let snap = Snapshot {
        consumables: Vec::new(),
        envs: vec![env("ce", res(4, 65536, 0), res(2, 65536, 0))],
        queues: vec![
            queue("open", 1, vec![0]),
            QueueView {
                enabled: false,
                ..queue("closed", 1, vec![0])
            },
        ],
        // Created in reverse so the head is not simply the first indices.
        jobs: (0..2000)
            .map(|i| job(i % 2, 5000 - i as i64, res(1, 512, 0)))
            .collect(),
        share_usage: HashMap::new(),
    };
    let plan = plan(&snap);
    assert_eq!(plan.placements.len(), 2);
    assert_eq!(plan.blocked.len(), 2 * HEAD_REASONS_PER_QUEUE);
    let closed: Vec<usize> = plan
        .blocked
        .iter()
        .filter(|(_, b)| *b == Blocked::QueueDisabled)
        .map(|&(j, _)| j)
        .collect();
    let expected: Vec<usize> = (0..2000)
        .rev()
        .filter(|j| j % 2 == 1)
        .take(HEAD_REASONS_PER_QUEUE)
        .collect();
    assert_eq!(closed, expected);
    // The open queue's reasons start right after its two placed jobs.
    assert_eq!(plan.placements, vec![(1998, 0), (1996, 0)]);
    let open = plan
        .blocked
        .iter()
        .find(|(_, b)| *b != Blocked::QueueDisabled)
        .unwrap();
    assert_eq!(open.0, 1994);
}

#[test]
fn queues_of_equal_priority_go_by_name() {
    let snap = Snapshot {
        consumables: Vec::new(),
        envs: vec![env("ce", res(1, 512, 0), res(1, 512, 0))],
        queues: vec![queue("b", 5, vec![0]), queue("a", 5, vec![0])],
        jobs: vec![job(0, 1, res(1, 512, 0)), job(1, 2, res(1, 512, 0))],
        share_usage: HashMap::new(),
    };
    assert_eq!(plan(&snap).placements, vec![(1, 0)]);
}

// ---------- the synthetic workload ----------

#[test]
fn synthetic_snapshot_is_deterministic_and_plans_soundly() {
    let a = synthetic_snapshot(2_000, 10, 3, 7);
    let b = synthetic_snapshot(2_000, 10, 3, 7);
    assert_eq!(a.jobs.len(), 2_000);
    let (pa, pb) = (plan(&a), plan(&b));
    assert_eq!(pa.placements, pb.placements);
    assert_eq!(pa.blocked, pb.blocked);
    assert!(!pa.placements.is_empty());
    assert!(pa.blocked.len() <= 10 * HEAD_REASONS_PER_QUEUE);
    check_all(&a, &pa).unwrap();
}

// ---------- dispatch order (GetJobQueueSnapshot) ----------

fn fair_share_case() -> impl Strategy<Value = Snapshot> {
    let jobs = prop::collection::vec((0usize..3, 0i32..3, 0i64..20, 1u64..4), 1..40);
    let weights = prop::collection::vec(0.2f64..3.0, 3);
    let usage = prop::collection::vec(prop::option::of(0.0f64..5.0), 3);
    (jobs, weights, usage).prop_map(|(jobs, weights, usage)| {
        let names = ["a", "b", "c"];
        let w: Vec<(&str, f64)> = names.iter().copied().zip(weights).collect();
        Snapshot {
            envs: vec![env("ce", res(1000, 1 << 30, 0), res(1000, 1 << 30, 0))],
            queues: vec![fs_queue("fs", 0, &w, vec![0])],
            consumables: vec![],
            jobs: jobs
                .into_iter()
                .map(|(s, p, t, v)| share_job(0, names[s], p, t, v))
                .collect(),
            share_usage: names
                .iter()
                .zip(usage)
                .filter_map(|(n, u)| Some(((0, n.to_string()), u?)))
                .collect(),
        }
    })
}

proptest! {
    /// With room for everything, one pass places the queue exactly in dispatch order.
    #[test]
    fn dispatch_order_is_the_order_one_pass_places_in(snap in fair_share_case()) {
        let placed: Vec<usize> = plan(&snap).placements.iter().map(|&(j, _)| j).collect();
        prop_assert_eq!(placed, dispatch_order(&snap, 0, usize::MAX));
    }

    /// With room for one job at a time, passes that each start one job (charged to its share,
    /// as running jobs are) start them in dispatch order.
    #[test]
    fn dispatch_order_is_the_order_one_slot_passes_start_in(mut snap in fair_share_case()) {
        let predicted: Vec<(Option<String>, i32, i64)> = dispatch_order(&snap, 0, 10)
            .into_iter()
            .map(|j| (snap.jobs[j].share.clone(), snap.jobs[j].priority, snap.jobs[j].created_at))
            .collect();
        snap.envs = vec![env("ce", res(4, 1 << 30, 0), res(4, 1 << 30, 0))];
        let mut started = Vec::new();
        while started.len() < predicted.len() {
            snap.envs[0].free = res(4, 1 << 30, 0);
            let plan = plan(&snap);
            let &(j, _) = plan.placements.first().expect("a job fits the empty slot");
            let job = snap.jobs.remove(j);
            started.push((job.share.clone(), job.priority, job.created_at));
            *snap.share_usage.entry((0, job.share.unwrap_or_default())).or_insert(0.0) +=
                job.need.milli_vcpus as f64 / 1000.0;
        }
        prop_assert_eq!(started, predicted);
    }
}

#[test]
fn dispatch_order_of_a_fifo_queue_is_submission_order() {
    let snap = Snapshot {
        envs: vec![],
        queues: vec![queue("q", 1, vec![]), queue("other", 1, vec![])],
        consumables: vec![],
        jobs: vec![
            job(0, 30, res(1, 1, 0)),
            job(1, 5, res(1, 1, 0)),
            job(0, 10, res(8, 1, 0)),
            job(0, 20, res(1, 1, 0)),
        ],
        share_usage: HashMap::new(),
    };
    assert_eq!(dispatch_order(&snap, 0, 10), vec![2, 3, 0]);
    assert_eq!(dispatch_order(&snap, 0, 2), vec![2, 3]);
    assert_eq!(dispatch_order(&snap, 5, 2), Vec::<usize>::new());
}

// ---------- consumable resources ----------

#[test]
fn a_consumable_resource_is_shared_across_queues_and_environments() {
    // Two queues on two environments with room for everything; 3 licences in all.
    let mut snap = Snapshot {
        envs: vec![
            env("a", res(8, 1 << 20, 0), res(8, 1 << 20, 0)),
            env("b", res(8, 1 << 20, 0), res(8, 1 << 20, 0)),
        ],
        queues: vec![queue("high", 2, vec![0]), queue("low", 1, vec![1])],
        consumables: vec![ConsumableView {
            name: "licence".into(),
            available: 3,
            exists: true,
        }],
        jobs: (0..4)
            .flat_map(|i| [job(0, i, res(1, 1, 0)), job(1, i, res(1, 1, 0))])
            .collect(),
        share_usage: HashMap::new(),
    };
    for j in &mut snap.jobs {
        j.consumables.push((0, 1));
    }
    // A job needing no licence still backfills.
    snap.jobs.push(job(1, 99, res(1, 1, 0)));
    let plan = plan(&snap);
    let placed: Vec<usize> = plan.placements.iter().map(|&(j, _)| j).collect();
    // The high-priority queue's first three jobs take the licences; then the licence-free job.
    assert_eq!(placed, vec![0, 2, 4, 8]);
    let (j, why) = &plan.blocked[0];
    assert_eq!(
        *why,
        Blocked::WaitingForConsumable {
            resource: 0,
            quantity: 1
        }
    );
    assert_eq!(
        why.reason(&snap, *j),
        "RESOURCE:WAITING_FOR_CONSUMABLE_RESOURCE - Waiting for 1 of consumable resource \
         licence; less than that is available now."
    );
}
