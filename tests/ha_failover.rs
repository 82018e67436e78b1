//! Three replicas on one PostgreSQL database, the LOCAL process runtime, 2,000 jobs submitted
//! round-robin through all of them, and the leader lost mid-run: SIGKILLed in one test,
//! SIGSTOPped past its lease and then resumed in another, cut off from PostgreSQL (its
//! connections silenced by a forwarder, see [`Blackhole`]) in the third. What must hold:
//!
//! - a resource created through one replica is usable through another at once;
//! - a follower takes over within 15 s (printed), under a higher epoch;
//! - a resumed or cut-off leader finds itself deposed and exits with status 75;
//! - every acknowledged job ends SUCCEEDED exactly once, and by the jobs' own record (not the
//!   API) no two attempts of a job ever ran at once: each attempt holds a `flock` on a file of
//!   its job's while it runs and writes `OVERLAP <id>` instead if another attempt holds it. An
//!   attempt of the old leader that ended while nobody led is run again (its exit code cannot
//!   be collected by a process that is not its parent: the at-least-once of a lost host), so a
//!   job may have run to its end more than once, one after the other; that count is printed;
//! - nothing changes after the end (no late write from the deposed leader lands).
//!
//! The replicas share `--process-journal-dir` and `--logs-dir`, as replicas on one host must.

mod common;

use aws_sdk_batch::types::{
    CeState, CeType, ComputeEnvironmentOrder, ComputeResource, ContainerProperties, CrType,
    JobStatus, KeyValuePair, ResourceRequirement, ResourceType, RetryStrategy,
};
use common::{PgDatabase, Server, ServerOptions, job_writable_tempdir};
use futures::StreamExt;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const JOBS: usize = 2000;
const LEASE_SECONDS: u64 = 4;

#[derive(Clone, Copy, PartialEq)]
enum Fault {
    Kill,
    Stop,
    /// The leader's connections to PostgreSQL go silent (a blackhole, as a partition looks).
    Cut,
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_survive_leader_sigkill() {
    run(Fault::Kill).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_fence_a_stopped_leader() {
    run(Fault::Stop).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_fence_a_leader_cut_off_from_postgres() {
    run(Fault::Cut).await;
}

/// A TCP forwarder in front of PostgreSQL whose `cut` stops all traffic both ways while keeping
/// every connection open: no reset, no close, nothing answered, as a network partition looks to
/// the replica behind it. (One process and one PostgreSQL on loopback: a forwarder gives the
/// partition without the privileges a network namespace per replica needs.)
struct Blackhole {
    addr: std::net::SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Blackhole {
    async fn start(upstream: String) -> Blackhole {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = cut.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let flag = flag.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let pipe =
                        |flag: std::sync::Arc<std::sync::atomic::AtomicBool>,
                         mut r: tokio::net::tcp::OwnedReadHalf,
                         mut w: tokio::net::tcp::OwnedWriteHalf| async move {
                            let mut buf = vec![0u8; 16 * 1024];
                            loop {
                                let n = match r.read(&mut buf).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => n,
                                };
                                // Swallowed once cut; the halves stay open.
                                if !flag.load(Ordering::SeqCst)
                                    && w.write_all(&buf[..n]).await.is_err()
                                {
                                    return;
                                }
                            }
                        };
                    let up = tokio::spawn(pipe(flag.clone(), cr, sw));
                    let down = tokio::spawn(pipe(flag, sr, cw));
                    let _ = tokio::join!(up, down);
                });
            }
        });
        Blackhole { addr, cut }
    }

    fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// `url` with its `host:port` replaced by `addr`, and that `host:port`.
fn through(url: &str, addr: std::net::SocketAddr) -> (String, String) {
    let at = url
        .find('@')
        .map_or(url.find("://").unwrap() + 3, |i| i + 1);
    let end = url[at..].find('/').map_or(url.len(), |i| at + i);
    let upstream = url[at..end].to_string();
    (format!("{}{addr}{}", &url[..at], &url[end..]), upstream)
}

/// The role `/healthz` reports and the epoch in its body.
async fn role(http: &reqwest::Client, s: &Server) -> Option<(String, i64)> {
    let resp = http
        .get(format!("{}/healthz", s.endpoint))
        .timeout(Duration::from_millis(500))
        .send()
        .await
        .ok()?;
    let role = resp
        .headers()
        .get("x-flotilla-role")?
        .to_str()
        .ok()?
        .to_string();
    let body = resp.text().await.ok()?;
    let epoch = body
        .split_whitespace()
        .find_map(|w| w.strip_prefix("epoch="))
        .and_then(|e| e.parse().ok())
        .unwrap_or(0);
    Some((role, epoch))
}

/// The index of the one replica among `which` that says it leads, with its epoch.
async fn wait_leader(
    http: &reqwest::Client,
    servers: &[Server],
    which: &[usize],
    within: Duration,
) -> (usize, i64) {
    let deadline = Instant::now() + within;
    loop {
        let mut leaders = Vec::new();
        for &i in which {
            if let Some((r, e)) = role(http, &servers[i]).await
                && r == "leader"
            {
                leaders.push((i, e));
            }
        }
        assert!(
            leaders.len() <= 1,
            "two replicas say they lead: {leaders:?}"
        );
        if let Some(&l) = leaders.first() {
            return l;
        }
        assert!(
            Instant::now() < deadline,
            "no replica of {which:?} took the lead within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn signal(s: &Server, sig: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(s.child.id() as i32);
    nix::sys::signal::kill(pid, sig).expect("signal the replica");
}

/// Submits `count` jobs round-robin through `through`; the IDs acknowledged.
async fn submit(
    clients: &[aws_sdk_batch::Client],
    through: &[usize],
    from: usize,
    count: usize,
) -> Vec<String> {
    futures::stream::iter(from..from + count)
        .map(|i| {
            let c = clients[through[i % through.len()]].clone();
            async move {
                c.submit_job()
                    .job_name(format!("ha-{i}"))
                    .job_queue("ha")
                    .job_definition("ha")
                    .send()
                    .await
                    .inspect_err(|e| {
                        eprintln!(
                            "submit {i}: {}",
                            aws_sdk_batch::error::DisplayErrorContext(e)
                        )
                    })
                    .ok()
                    .and_then(|o| o.job_id)
            }
        })
        .buffer_unordered(16)
        .filter_map(|id| async move { id })
        .collect()
        .await
}

async fn statuses(
    client: &aws_sdk_batch::Client,
    ids: &[String],
) -> HashMap<String, (JobStatus, usize, Option<i32>)> {
    let mut out = HashMap::new();
    for chunk in ids.chunks(100) {
        let r = client
            .describe_jobs()
            .set_jobs(Some(chunk.to_vec()))
            .send()
            .await
            .expect("DescribeJobs");
        for j in r.jobs() {
            let attempts = j.attempts();
            let exit = attempts
                .last()
                .and_then(|a| a.container())
                .and_then(|c| c.exit_code());
            out.insert(
                j.job_id().unwrap_or_default().to_string(),
                (j.status().expect("status").clone(), attempts.len(), exit),
            );
        }
    }
    out
}

async fn run(fault: Fault) {
    let started = Instant::now();
    let db = PgDatabase::create();
    let rec = job_writable_tempdir();
    let journal = tempfile::tempdir().expect("journal dir");
    let logs = tempfile::tempdir().expect("logs dir");
    let extra: Vec<String> = [
        "--local-runtime",
        "process",
        "--process-journal-dir",
        &journal.path().display().to_string(),
        "--logs-dir",
        &logs.path().display().to_string(),
        "--lease-seconds",
        &LEASE_SECONDS.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let replica = |url: &str| {
        Server::start_with(ServerOptions {
            auth: true,
            database_url: Some(url.to_string()),
            no_defaults: true,
            extra_args: extra.clone(),
            dispatch: true,
        })
    };
    let http = reqwest::Client::new();
    let mut blackhole = None;
    let mut servers: Vec<Server> = Vec::new();
    if fault == Fault::Cut {
        // The first replica reaches PostgreSQL through the forwarder, and leads.
        let (_, upstream) = through(&db.url, "127.0.0.1:1".parse().unwrap());
        let b = Blackhole::start(upstream).await;
        servers.push(replica(&through(&db.url, b.addr).0));
        wait_leader(&http, &servers, &[0], Duration::from_secs(30)).await;
        blackhole = Some(b);
    }
    while servers.len() < 3 {
        servers.push(replica(&db.url));
    }
    let (leader, epoch) = wait_leader(&http, &servers, &[0, 1, 2], Duration::from_secs(30)).await;
    assert!(
        fault != Fault::Cut || leader == 0,
        "the replica behind the forwarder leads"
    );
    let clients: Vec<_> = servers.iter().map(Server::client).collect();
    let (b, c) = ((leader + 1) % 3, (leader + 2) % 3);

    // Created through one follower, used through the other at once.
    clients[b]
        .create_compute_environment()
        .compute_environment_name("ha")
        .r#type(CeType::Managed)
        .state(CeState::Enabled)
        .compute_resources(
            ComputeResource::builder()
                .r#type(CrType::from("LOCAL"))
                .maxv_cpus(64)
                .build(),
        )
        .send()
        .await
        .expect("create compute environment");
    clients[b]
        .create_job_queue()
        .job_queue_name("ha")
        .priority(1)
        .compute_environment_order(
            ComputeEnvironmentOrder::builder()
                .order(1)
                .compute_environment("ha")
                .build(),
        )
        .send()
        .await
        .expect("create job queue");
    // `flock -E 99` tells a held lock from the job's own exit status; the attempt then fails
    // (and the record says why) rather than running beside the other one.
    let script = "flock -n -E 99 \"$REC/lock-$AWS_BATCH_JOB_ID\" sh -c \
        'echo start $AWS_BATCH_JOB_ID $AWS_BATCH_JOB_ATTEMPT >> \"$REC/log\"; sleep 0.3; \
         echo done $AWS_BATCH_JOB_ID $AWS_BATCH_JOB_ATTEMPT >> \"$REC/log\"'; rc=$?; \
        if [ $rc -eq 99 ]; then echo OVERLAP $AWS_BATCH_JOB_ID >> \"$REC/log\"; fi; exit $rc";
    clients[c]
        .register_job_definition()
        .job_definition_name("ha")
        .r#type(aws_sdk_batch::types::JobDefinitionType::Container)
        .retry_strategy(RetryStrategy::builder().attempts(3).build())
        .container_properties(
            ContainerProperties::builder()
                .image("busybox")
                .command("sh")
                .command("-c")
                .command(script)
                .environment(
                    KeyValuePair::builder()
                        .name("REC")
                        .value(rec.path().display().to_string())
                        .build(),
                )
                .resource_requirements(
                    ResourceRequirement::builder()
                        .r#type(ResourceType::Vcpu)
                        .value("1")
                        .build(),
                )
                .resource_requirements(
                    ResourceRequirement::builder()
                        .r#type(ResourceType::Memory)
                        .value("16")
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .expect("register job definition");

    // A third through every replica, then the fault, then the rest through the survivors.
    let mut acked = submit(&clients, &[0, 1, 2], 0, JOBS / 3).await;
    assert_eq!(acked.len(), JOBS / 3, "every replica accepts submissions");
    // The queues are the leader's: a follower asks it through the store.
    for i in [b, c, leader] {
        clients[i]
            .get_job_queue_snapshot()
            .job_queue("ha")
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "GetJobQueueSnapshot through replica {i}: {}",
                    aws_sdk_batch::error::DisplayErrorContext(e)
                )
            });
    }
    let fault_at = Instant::now();
    match fault {
        Fault::Kill => servers[leader].kill(),
        Fault::Stop => signal(&servers[leader], nix::sys::signal::Signal::SIGSTOP),
        Fault::Cut => blackhole.as_ref().expect("the forwarder").cut(),
    }
    let survivors = [b, c];
    let submitting = {
        let clients = clients.clone();
        tokio::spawn(async move { submit(&clients, &survivors, JOBS / 3, JOBS - JOBS / 3).await })
    };
    let (new_leader, new_epoch) =
        wait_leader(&http, &servers, &survivors, Duration::from_secs(30)).await;
    let takeover = fault_at.elapsed();
    println!(
        "takeover after {} ms ({}; lease {LEASE_SECONDS} s): replica {new_leader} leads at epoch {new_epoch}",
        takeover.as_millis(),
        match fault {
            Fault::Kill => "SIGKILL",
            Fault::Stop => "SIGSTOP",
            Fault::Cut => "cut off from PostgreSQL",
        }
    );
    assert!(
        takeover <= Duration::from_secs(15),
        "takeover took {takeover:?}"
    );
    assert!(
        new_epoch > epoch,
        "the new leader's epoch {new_epoch} is not above {epoch}"
    );

    if fault != Fault::Kill {
        // Resumed well past its lease, or still cut off: it must notice and leave, acting on
        // nothing.
        if fault == Fault::Stop {
            let resume_at = fault_at + Duration::from_secs(LEASE_SECONDS + 4);
            tokio::time::sleep_until(resume_at.into()).await;
            signal(&servers[leader], nix::sys::signal::Signal::SIGCONT);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(st) = servers[leader].child.try_wait().expect("try_wait") {
                break st;
            }
            assert!(
                Instant::now() < deadline,
                "the resumed, deposed leader did not exit"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(
            status.code(),
            Some(75),
            "a deposed leader exits 75: {status:?}"
        );
    }
    acked.extend(submitting.await.expect("submitting task"));
    assert_eq!(acked.len(), JOBS, "the survivors accept every submission");

    // Every acknowledged job ends, read through a follower and the leader.
    let follower = if new_leader == b { c } else { b };
    let deadline = Instant::now() + Duration::from_secs(300);
    let end = loop {
        let s = statuses(&clients[follower], &acked).await;
        let open = s
            .values()
            .filter(|(st, _, _)| !matches!(st, JobStatus::Succeeded | JobStatus::Failed))
            .count();
        if s.len() == acked.len() && open == 0 {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "{open} of {} jobs still unfinished ({} found)",
            acked.len(),
            s.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for (id, (st, attempts, exit)) in &end {
        assert_eq!(*st, JobStatus::Succeeded, "job {id}: {attempts} attempts");
        assert!(*attempts <= 3, "job {id} had {attempts} attempts");
        assert_eq!(*exit, Some(0), "job {id}'s last attempt");
    }

    // The jobs' own record: each ran to its end once, and never beside another attempt.
    let log = std::fs::read_to_string(rec.path().join("log")).expect("the jobs' record");
    let mut done: HashMap<&str, usize> = HashMap::new();
    for line in log.lines() {
        let mut w = line.split_whitespace();
        match w.next() {
            Some("done") => *done.entry(w.next().unwrap_or_default()).or_default() += 1,
            Some("OVERLAP") => panic!("two attempts of one job ran at once: {line}"),
            _ => {}
        }
    }
    for id in &acked {
        assert!(
            done.contains_key(id.as_str()),
            "job {id} never ran to its end"
        );
    }
    let restarted = end.values().filter(|(_, a, _)| *a > 1).count();
    let twice = done.values().filter(|n| **n > 1).count();

    // Nothing lands afterwards, through the leader either.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again = statuses(&clients[new_leader], &acked).await;
    assert_eq!(again, end, "a job changed after the end");
    println!(
        "{} jobs ended once each, none with two attempts at once; {restarted} retried after the failover; {twice} ran to their end twice, one run after the other (an attempt of the old leader that ended or started while nobody led); takeover {} ms; {:.1} s in all",
        acked.len(),
        takeover.as_millis(),
        started.elapsed().as_secs_f64()
    );
}
