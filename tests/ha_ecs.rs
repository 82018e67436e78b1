//! Replicas with the AWS driver (ECS on the emulator): three replicas on one PostgreSQL
//! database, 2,000 jobs submitted through all of them, the leader SIGKILLed while ECS tasks run. The
//! next leader adopts the running tasks rather than starting others: sampled from the
//! emulator's own task list every 150 ms, no job ever has two tasks RUNNING at once, and every
//! job ends SUCCEEDED.

mod common;

use aws_sdk_batch::types::{CrType, JobStatus};
use common::emulator::{AMI, Emulator};
use common::{PgDatabase, Server, ServerOptions};
use sha2::Digest;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const JOBS: usize = 2000;

/// The driver's `startedBy` of attempt `attempt` of `job` (see `compute::aws::started_by`).
fn started_by(job: &str, attempt: u32) -> String {
    let digest = sha2::Sha256::digest(format!("{job}#{attempt}").as_bytes());
    format!("fl-{}", &hex::encode(digest)[..32])
}

async fn role(http: &reqwest::Client, s: &Server) -> Option<String> {
    let r = http
        .get(format!("{}/healthz", s.endpoint))
        .timeout(Duration::from_millis(500))
        .send()
        .await
        .ok()?;
    Some(
        r.headers()
            .get("x-flotilla-role")?
            .to_str()
            .ok()?
            .to_string(),
    )
}

async fn wait_leader(http: &reqwest::Client, servers: &[Server], which: &[usize]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for &i in which {
            if role(http, &servers[i]).await.as_deref() == Some("leader") {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no leader among {which:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_next_leader_adopts_running_ecs_tasks() {
    let emu = Arc::new(Emulator::start());
    let db = PgDatabase::create();
    let args: Vec<String> = [
        "--aws-endpoint-url",
        emu.endpoint.as_str(),
        "--aws-poll-ms",
        "200",
        "--aws-idle-seconds",
        "600",
        "--aws-ami",
        AMI,
        "--local-runtime",
        "process",
        "--lease-seconds",
        "4",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut servers: Vec<Server> = (0..3)
        .map(|_| {
            Server::start_with(ServerOptions {
                database_url: Some(db.url.clone()),
                no_defaults: true,
                dispatch: true,
                extra_args: args.clone(),
                ..Default::default()
            })
        })
        .collect();
    let http = reqwest::Client::new();
    let leader = wait_leader(&http, &servers, &[0, 1, 2]).await;
    let clients: Vec<_> = servers.iter().map(Server::client).collect();
    let (b, c) = ((leader + 1) % 3, (leader + 2) % 3);

    // The leader's driver makes the environment VALID; the followers see it.
    let ce = common::aws::create_managed_ce(&clients[b], &emu, "ecs", CrType::Ec2, 0, 64).await;
    common::create_queue(&clients[c], "ecs-q", &ce).await;
    common::aws::register_def(&clients[leader], "ecs-def").await;
    let mut ids = Vec::new();
    for i in 0..JOBS {
        ids.push(
            common::aws::submit(&clients[i % 3], "ecs-q", "ecs-def", &format!("e{i}"), 1, 3).await,
        );
    }
    let owner: HashMap<String, String> = ids
        .iter()
        .flat_map(|id| (1..=3).map(move |a| (started_by(id, a), id.clone())))
        .collect();

    // The containers' side: a task RUNNING for about a second ends with 0. Meanwhile every
    // sample of the task list is checked for a job with two tasks RUNNING.
    let violations = Arc::new(Mutex::new(Vec::<String>::new()));
    let running_seen = Arc::new(Mutex::new(HashSet::<String>::new()));
    let sampler = {
        let (emu, violations, running_seen) =
            (emu.clone(), violations.clone(), running_seen.clone());
        tokio::spawn(async move {
            let mut age: HashMap<String, u32> = HashMap::new();
            loop {
                let state = emu.state().await;
                let mut per_job: HashMap<String, usize> = HashMap::new();
                for t in common::aws::tasks(&state) {
                    if t["lastStatus"] != "RUNNING" {
                        continue;
                    }
                    let arn = t["taskArn"].as_str().unwrap_or_default().to_string();
                    if let Some(job) = t["startedBy"].as_str().and_then(|s| owner.get(s)) {
                        running_seen.lock().unwrap().insert(job.clone());
                        *per_job.entry(job.clone()).or_default() += 1;
                    }
                    let n = age.entry(arn.clone()).or_default();
                    *n += 1;
                    if *n == 7 {
                        emu.complete(&arn, 0).await;
                    }
                }
                for (job, n) in per_job {
                    if n > 1 {
                        violations
                            .lock()
                            .unwrap()
                            .push(format!("job {job} has {n} tasks RUNNING"));
                    }
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        })
    };

    // Once a third of the jobs have had a task running, the leader dies. The bound only keeps a
    // broken run from hanging: on a loaded machine this takes minutes (once 189 s at 120 s).
    let deadline = Instant::now() + Duration::from_secs(600);
    while running_seen.lock().unwrap().len() < JOBS / 3 {
        assert!(Instant::now() < deadline, "tasks never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let killed_at = Instant::now();
    servers[leader].kill();
    let next = wait_leader(&http, &servers, &[b, c]).await;
    let takeover = killed_at.elapsed();
    println!("takeover after {} ms (SIGKILL, ECS)", takeover.as_millis());
    assert!(
        takeover <= Duration::from_secs(15),
        "takeover took {takeover:?}"
    );

    let follower = if next == b { c } else { b };
    let deadline = Instant::now() + Duration::from_secs(240);
    let jobs = loop {
        let jobs = common::aws::describe_all(&clients[follower], &ids).await;
        if jobs.len() == ids.len() && jobs.iter().all(common::aws::is_final) {
            break jobs;
        }
        assert!(Instant::now() < deadline, "jobs not final in time");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    sampler.abort();
    let violations = violations.lock().unwrap().clone();
    assert!(
        violations.is_empty(),
        "two tasks of one job at once: {violations:?}"
    );
    let mut retried = 0;
    for j in &jobs {
        assert_eq!(
            j.status,
            Some(JobStatus::Succeeded),
            "{:?}: {:?}",
            j.job_name,
            j.status_reason
        );
        if j.attempts.as_ref().map_or(0, Vec::len) > 1 {
            retried += 1;
        }
    }
    println!(
        "{JOBS} ECS jobs SUCCEEDED, no job with two tasks at once; {retried} needed another attempt; takeover {} ms",
        takeover.as_millis()
    );
}
