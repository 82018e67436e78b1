//! What a peer can make the server hold (issue 14, "bounded resources for unauthenticated
//! peers"): floods of slow request bodies and slow request heads from a thousand and more
//! sockets, against a real server process whose resident memory and open sockets are read from
//! `/proc`. The bounds asserted are the ones `docs/operations.md` ("Resource limits") states: at
//! most `--max-connections` connections open at once, and memory that does not grow with the
//! number or the slowness of the peers.

mod common;

use common::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The connection cap the flooded servers run with: well below the number of peers.
const MAX_CONNECTIONS: usize = 200;
/// Growth of the server's resident memory over its idle baseline that the floods must stay
/// under. Without the limits, 2,000 slow 1 MiB bodies took the server from 21 MB to 2.17 GB.
const RSS_GROWTH_BOUND_KIB: u64 = 100 * 1024;
const BODY: usize = 1024 * 1024;
const PATH: &str = "/v1/describejobqueues";

/// Short timeouts so that the floods drain in seconds; the defaults are 10 s (head), 30 s
/// (body) and 60 s (idle).
fn flooded_server(budget_mib: usize) -> Server {
    raise_fd_limit(8192);
    Server::start_with(ServerOptions {
        extra_args: [
            "--max-connections",
            &MAX_CONNECTIONS.to_string(),
            "--header-timeout-seconds",
            "2",
            "--body-timeout-seconds",
            "3",
            "--idle-timeout-seconds",
            "5",
            "--max-inflight-body-mib",
            &budget_mib.to_string(),
        ]
        .map(String::from)
        .to_vec(),
        ..ServerOptions::default()
    })
}

/// The test holds a few thousand sockets and the server inherits the limit.
fn raise_fd_limit(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
    assert!(
        lim.rlim_cur >= 3000,
        "the open-files limit is {} (hard {}); the floods need 3000",
        lim.rlim_cur,
        lim.rlim_max
    );
}

/// `VmRSS` of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// Sockets among a process's open files: its listener, client connections and anything else.
fn sockets(pid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    dir.flatten()
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:"))
        })
        .count() as u64
}

/// The largest resident size and socket count of the server seen while it runs.
struct Watch {
    peak_rss: Arc<AtomicU64>,
    peak_sockets: Arc<AtomicU64>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Watch {
    fn start(pid: u32) -> Watch {
        let peak_rss = Arc::new(AtomicU64::new(0));
        let peak_sockets = Arc::new(AtomicU64::new(0));
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let (rss, socks) = (peak_rss.clone(), peak_sockets.clone());
        let task = tokio::spawn(async move {
            loop {
                rss.fetch_max(rss_kib(pid), Ordering::Relaxed);
                socks.fetch_max(sockets(pid), Ordering::Relaxed);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    _ = stopped.changed() => return,
                }
            }
        });
        Watch {
            peak_rss,
            peak_sockets,
            stop,
            task,
        }
    }

    /// (peak RSS in KiB, peak socket count).
    async fn finish(self) -> (u64, u64) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        (
            self.peak_rss.load(Ordering::Relaxed),
            self.peak_sockets.load(Ordering::Relaxed),
        )
    }
}

/// How a flood connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Outcome {
    /// The server answered with this status (and then closed, or would have).
    Status(u16),
    /// The server closed (or reset) the connection without an answer the peer could read.
    Closed,
    /// Could not connect at all (the accept queue was full).
    NoConnect,
    /// Still open at the end of the wait.
    StillOpen,
}

/// The status code of the first response in `buf`, if a whole status line is there.
fn status_of(buf: &[u8]) -> Option<u16> {
    let line = buf.split(|&b| b == b'\n').next()?;
    let text = std::str::from_utf8(line).ok()?;
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Reads until the server answers or closes, or `until`.
async fn outcome(stream: &mut TcpStream, until: Instant) -> Outcome {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Err(_) => return status_of(&buf).map_or(Outcome::StillOpen, Outcome::Status),
            Ok(Ok(0)) | Ok(Err(_)) => {
                return status_of(&buf).map_or(Outcome::Closed, Outcome::Status);
            }
            Ok(Ok(n)) => {
                buf.extend_from_slice(&chunk[..n]);
                if let Some(s) = status_of(&buf) {
                    return Outcome::Status(s);
                }
            }
        }
    }
}

async fn connect(addr: &str) -> Option<TcpStream> {
    match tokio::time::timeout(Duration::from_secs(60), TcpStream::connect(addr)).await {
        Ok(Ok(s)) => Some(s),
        _ => None,
    }
}

/// How a slow-body peer signs its request head.
#[derive(Debug, Clone, Copy)]
enum Signer {
    /// No `Authorization` at all.
    Unsigned,
    /// A well-formed signature by an access key the server does not know.
    UnknownKey,
    /// A valid signature, payload hash in `x-amz-content-sha256`: the server reads the body.
    Valid,
}

/// The request head of a DescribeJobQueues with `body`, its payload hash in
/// `x-amz-content-sha256` as the signature covers it.
fn slow_body_head(server: &Server, signer: Signer, body: &[u8]) -> Vec<u8> {
    let raw = server.raw().unsigned();
    let mut headers = raw.headers(
        "POST",
        PATH,
        Some("application/json"),
        body,
        SystemTime::now(),
    );
    let hash = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(body))
    };
    headers.insert("x-amz-content-sha256", hash.parse().expect("header value"));
    let key = match signer {
        Signer::Unsigned => None,
        Signer::UnknownKey => Some(("AKIDNOBODYKNOWS", "guess")),
        Signer::Valid => Some((ACCESS_KEY, SECRET_KEY)),
    };
    if let Some((key, secret)) = key {
        flotilla::api::sigv4::sign(
            &http::Method::POST,
            PATH,
            "",
            &mut headers,
            body,
            key,
            secret,
            "us-east-1",
            "batch",
            SystemTime::now(),
        );
    }
    let mut head = format!("POST {PATH} HTTP/1.1\r\ncontent-length: {}\r\n", body.len());
    for (name, value) in &headers {
        head.push_str(&format!(
            "{name}: {}\r\n",
            value.to_str().expect("ASCII header")
        ));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// One peer: the head, then all of the body but its last byte as fast as the socket takes it,
/// then nothing; returns how the connection ended.
async fn slow_body_peer(
    addr: String,
    head: Arc<Vec<u8>>,
    body: Arc<Vec<u8>>,
    until: Instant,
) -> Outcome {
    let Some(mut stream) = connect(&addr).await else {
        return Outcome::NoConnect;
    };
    let (mut rd, mut wr) = stream.split();
    let write = async {
        if wr.write_all(&head).await.is_ok() {
            let _ = wr.write_all(&body[..body.len() - 1]).await;
        }
        // Hold the last byte back for good.
        std::future::pending::<()>().await
    };
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => return status_of(&buf).map_or(Outcome::Closed, Outcome::Status),
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(s) = status_of(&buf) {
                        return Outcome::Status(s);
                    }
                }
            }
        }
    };
    tokio::select! {
        o = read => o,
        () = write => unreachable!(),
        () = tokio::time::sleep_until(until.into()) => Outcome::StillOpen,
    }
}

/// Starts `n` peers in waves of 100, 100 ms apart, so that the kernel's accept queue (1,024
/// behind the server's `MAX_CONNECTIONS`) does not overflow: a SYN it drops is retried by the
/// kernel after 1, 3, 7, 15 s, which would only make the test slow.
async fn in_waves<T>(n: usize, mut start: impl FnMut() -> T) -> Vec<T> {
    let mut peers = Vec::with_capacity(n);
    while peers.len() < n {
        if !peers.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let wave = (n - peers.len()).min(100);
        peers.extend((0..wave).map(|_| start()));
    }
    peers
}

fn tally(outcomes: &[Outcome]) -> std::collections::BTreeMap<Outcome, usize> {
    let mut t = std::collections::BTreeMap::new();
    for o in outcomes {
        *t.entry(*o).or_default() += 1;
    }
    t
}

/// A signed request through the SDK, as a real client sends it during or after a flood.
async fn answers_signed_request(server: &Server) -> Duration {
    let t = Instant::now();
    server
        .client()
        .describe_job_queues()
        .send()
        .await
        .expect("a signed request is answered");
    t.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_body_flood_costs_bounded_memory_and_connections() {
    // 1,200 peers without credentials (unsigned, or signed by an unknown key) announce 1 MiB
    // bodies and send all of it but the last byte; then 60 signed peers do the same, which the
    // server does read, within its 16 MiB budget of in-flight body bytes.
    const UNAUTHENTICATED: usize = 1200;
    const AUTHENTICATED: usize = 60;
    let server = flooded_server(16);
    let pid = server.child.id();
    let addr = server.endpoint.trim_start_matches("http://").to_string();
    answers_signed_request(&server).await;
    let (base_rss, base_sockets) = (rss_kib(pid), sockets(pid));
    let body: Arc<Vec<u8>> = Arc::new(vec![b' '; BODY]);
    let heads = [Signer::Unsigned, Signer::UnknownKey, Signer::Valid]
        .map(|s| Arc::new(slow_body_head(&server, s, &body)));

    let watch = Watch::start(pid);
    let until = Instant::now() + Duration::from_secs(90);
    let mut i = 0;
    let unauthenticated = in_waves(UNAUTHENTICATED, || {
        i += 1;
        let head = heads[i % 2].clone();
        tokio::spawn(slow_body_peer(addr.clone(), head, body.clone(), until))
    })
    .await;
    // While they are at it, a client with credentials is served.
    let during = answers_signed_request(&server).await;
    let mut outcomes = Vec::new();
    for peer in unauthenticated {
        outcomes.push(peer.await.expect("peer task"));
    }
    let unauthenticated = tally(&outcomes);

    let authenticated: Vec<_> = (0..AUTHENTICATED)
        .map(|_| {
            tokio::spawn(slow_body_peer(
                addr.clone(),
                heads[2].clone(),
                body.clone(),
                until,
            ))
        })
        .collect();
    let mut outcomes = Vec::new();
    for peer in authenticated {
        outcomes.push(peer.await.expect("peer task"));
    }
    let authenticated = tally(&outcomes);
    let after = answers_signed_request(&server).await;
    let (peak_rss, peak_sockets) = watch.finish().await;
    eprintln!(
        "slow bodies: RSS {base_rss} KiB at rest, peak {peak_rss} KiB; sockets {base_sockets} at \
         rest, peak {peak_sockets}; unauthenticated peers {unauthenticated:?}; authenticated \
         peers {authenticated:?}; a signed request took {during:?} during the flood, {after:?} after"
    );

    // Without credentials the body is never read: every peer is refused at its head, and none
    // is left open.
    for (outcome, n) in &unauthenticated {
        assert!(
            matches!(outcome, Outcome::Status(403) | Outcome::Closed),
            "{n} unauthenticated peers ended {outcome:?}: {unauthenticated:?}"
        );
    }
    // With credentials the body is read, within the budget and the body deadline: 408 when
    // the last byte never comes, 429 when the budget is spent.
    for (outcome, n) in &authenticated {
        assert!(
            matches!(outcome, Outcome::Status(408 | 429)),
            "{n} authenticated peers ended {outcome:?}: {authenticated:?}"
        );
    }
    assert!(
        peak_sockets.saturating_sub(base_sockets) <= MAX_CONNECTIONS as u64,
        "the server held {} connections at once; the cap is {MAX_CONNECTIONS}",
        peak_sockets.saturating_sub(base_sockets)
    );
    assert!(
        peak_rss.saturating_sub(base_rss) < RSS_GROWTH_BOUND_KIB,
        "RSS grew from {base_rss} KiB to {peak_rss} KiB"
    );
}

/// One peer: a request head, one byte every `every`, until the server closes the connection.
async fn slow_head_peer(addr: String, every: Duration, until: Instant) -> Outcome {
    let Some(mut stream) = connect(&addr).await else {
        return Outcome::NoConnect;
    };
    let head =
        format!("POST {PATH} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n");
    for &byte in head.as_bytes().iter().cycle() {
        if stream.write_all(&[byte]).await.is_err() {
            return outcome(&mut stream, until).await;
        }
        // Reading tells a close apart from a peer that merely has not answered yet.
        let next = (Instant::now() + every).min(until);
        match outcome(&mut stream, next).await {
            Outcome::StillOpen if Instant::now() >= until => return Outcome::StillOpen,
            Outcome::StillOpen => {}
            ended => return ended,
        }
    }
    unreachable!("the head is sent in a cycle")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_header_flood_is_closed_by_the_header_timeout() {
    // 1,000 peers each send a request head one byte a second, with a 2 s header timeout; the
    // server holds at most its cap at once and closes every one of them. (1,000: the 800 the
    // server has not accepted yet fit the kernel's accept queue with room to spare, so a real
    // client's connect is not dropped there and timed out by its SDK after 3.1 s.)
    const PEERS: usize = 1000;
    let server = flooded_server(64);
    let pid = server.child.id();
    let addr = server.endpoint.trim_start_matches("http://").to_string();
    answers_signed_request(&server).await;
    let (base_rss, base_sockets) = (rss_kib(pid), sockets(pid));

    let watch = Watch::start(pid);
    // Without a header timeout the peers would stay for as long as they like; the wait is far
    // longer than the flood needs (PEERS / MAX_CONNECTIONS rounds of 2 s).
    let until = Instant::now() + Duration::from_secs(90);
    let peers = in_waves(PEERS, || {
        tokio::spawn(slow_head_peer(addr.clone(), Duration::from_secs(1), until))
    })
    .await;
    // A client with credentials waits its turn in the accept queue and is served.
    let during = answers_signed_request(&server).await;
    let mut outcomes = Vec::new();
    for peer in peers {
        outcomes.push(peer.await.expect("peer task"));
    }
    let after = answers_signed_request(&server).await;
    let (peak_rss, peak_sockets) = watch.finish().await;
    let outcomes = tally(&outcomes);
    eprintln!(
        "slow heads: RSS {base_rss} KiB at rest, peak {peak_rss} KiB; sockets {base_sockets} at \
         rest, peak {peak_sockets}; peers {outcomes:?}; a signed request took {during:?} during \
         the flood, {after:?} after"
    );

    // Closed, or answered (hyper answers 408 to a head cut off by the timeout) and closed.
    for (outcome, n) in &outcomes {
        assert!(
            matches!(outcome, Outcome::Closed | Outcome::Status(408)),
            "{n} slow-head peers ended {outcome:?}: {outcomes:?}"
        );
    }
    assert!(
        peak_sockets.saturating_sub(base_sockets) <= MAX_CONNECTIONS as u64,
        "the server held {} connections at once; the cap is {MAX_CONNECTIONS}",
        peak_sockets.saturating_sub(base_sockets)
    );
    assert!(
        peak_rss.saturating_sub(base_rss) < RSS_GROWTH_BOUND_KIB,
        "RSS grew from {base_rss} KiB to {peak_rss} KiB"
    );
}
