//! The HTTP listener: at most `max_connections` connections at once, and each one closed when
//! its peer is too slow to send a request head, stays idle too long between requests, or stops
//! reading a response. Bodies have their own deadline and byte budget ([`super::BodyLimits`]).
//!
//! hyper's own `header_read_timeout` starts when the server begins to wait for a head, which
//! includes the keep-alive wait, so it cannot tell a slow head from an idle connection. The
//! clocks live in [`WatchedIo`] instead, which sees every read and write and knows from the
//! service whether a request is being handled.
//!
//! With TLS the handshake runs on top of [`WatchedIo`]: its first byte starts the head clock,
//! which runs on until the first request head is complete, so a peer that dribbles a
//! ClientHello or never finishes the handshake is cut at the same deadline as a slow head.

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;

/// Bounds on connections, the part of request handling that happens before the handler runs.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Connections served at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// From the first byte of a request head to its end.
    pub header_timeout: Duration,
    /// With no request in progress and nothing received; also how long a response may wait for
    /// the peer to read it.
    pub idle_timeout: Duration,
}

/// The largest request head hyper buffers (its default is about 400 KiB per connection).
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Serves `router` on `listener` (over TLS when `tls` is given) until `shutdown` resolves, then
/// lets the requests in progress finish and returns once every connection is closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(max));
    let (stop, stopped) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and friends: give closing connections a moment rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let stopped = stopped.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            serve_connection(stream, router, limits, tls, stopped).await;
            drop(slot);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection holds a slot until it is closed.
    let _ = slots.acquire_many(max as u32).await;
    Ok(())
}

async fn serve_connection(
    stream: TcpStream,
    router: Router,
    limits: ConnLimits,
    tls: Option<TlsAcceptor>,
    mut stopped: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::default());
    let io = WatchedIo::new(stream, activity.clone(), limits);
    let Some(tls) = tls else {
        return serve_http(io, router, activity, stopped).await;
    };
    // WatchedIo's head clock bounds the handshake; a stop must not wait for it either.
    let accepted = tokio::select! {
        accepted = tls.accept(io) => accepted,
        () = async { drop(stopped.wait_for(|stop| *stop).await) } => return,
    };
    match accepted {
        Ok(io) => serve_http(io, router, activity, stopped).await,
        Err(e) => tracing::debug!(error = %e, "tls handshake failed"),
    }
}

async fn serve_http<I>(
    io: I,
    router: Router,
    activity: Arc<Activity>,
    mut stopped: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let router = TowerToHyperService::new(router);
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        use hyper::service::Service;
        let busy = activity.begin();
        let response = router.call(request.map(Body::new));
        async move {
            let response = response.await;
            drop(busy);
            response
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().max_buf_size(MAX_HEAD_BYTES);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection closed");
            }
        }
        // The guard `wait_for` returns is not Send: drop it inside.
        () = async { drop(stopped.wait_for(|stop| *stop).await) } => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// What the service tells the connection's clocks: requests begun and ended.
#[derive(Default)]
struct Activity {
    /// Requests begun (high 32 bits) and ended (low 32 bits), so one load reads both.
    counts: AtomicU64,
}

impl Activity {
    fn begin(self: &Arc<Self>) -> Busy {
        self.counts.fetch_add(1 << 32, Ordering::AcqRel);
        Busy(self.clone())
    }

    /// (requests in progress, requests ended so far).
    fn load(&self) -> (u32, u32) {
        let c = self.counts.load(Ordering::Acquire);
        let (begun, ended) = ((c >> 32) as u32, c as u32);
        (begun.wrapping_sub(ended), ended)
    }
}

/// A request in progress; dropped when its response is ready (or its handler is cancelled).
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.counts.fetch_add(1, Ordering::AcqRel);
    }
}

/// Which clock runs on the read side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the first byte of a request head, after `ended` requests.
    Idle { ended: u32 },
    /// A head has started and not reached the handler yet.
    Head { ended: u32 },
    /// A request is being handled; its body has its own deadline.
    Busy,
}

/// A TCP stream whose reads fail with `TimedOut` when the peer is too slow for the [`Phase`]
/// the connection is in, and whose writes fail when the peer stops reading.
struct WatchedIo {
    stream: TcpStream,
    activity: Arc<Activity>,
    limits: ConnLimits,
    phase: Phase,
    read_deadline: Pin<Box<Sleep>>,
    write_deadline: Pin<Box<Sleep>>,
    write_waiting: bool,
}

impl WatchedIo {
    fn new(stream: TcpStream, activity: Arc<Activity>, limits: ConnLimits) -> Self {
        let now = Instant::now();
        WatchedIo {
            stream,
            activity,
            limits,
            phase: Phase::Idle { ended: 0 },
            read_deadline: Box::pin(tokio::time::sleep_until(now + limits.idle_timeout)),
            write_deadline: Box::pin(tokio::time::sleep_until(now + limits.idle_timeout)),
            write_waiting: false,
        }
    }

    /// Moves to the phase the service's counters say the connection is in, starting that
    /// phase's clock when it changes.
    fn update_phase(&mut self) {
        let (in_progress, ended) = self.activity.load();
        let phase = match self.phase {
            _ if in_progress > 0 => Phase::Busy,
            Phase::Head { ended: e } if e == ended => self.phase,
            _ => Phase::Idle { ended },
        };
        if phase != self.phase {
            self.phase = phase;
            if let Phase::Idle { .. } = phase {
                let deadline = Instant::now() + self.limits.idle_timeout;
                self.read_deadline.as_mut().reset(deadline);
            }
        }
    }

    fn timed_out(what: &str) -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, format!("{what} timed out"))
    }
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.update_phase();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if let Phase::Idle { ended } = this.phase
                    && buf.filled().len() > before
                {
                    this.phase = Phase::Head { ended };
                    let deadline = Instant::now() + this.limits.header_timeout;
                    this.read_deadline.as_mut().reset(deadline);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.phase {
                Phase::Busy => Poll::Pending,
                Phase::Idle { .. } | Phase::Head { .. } => {
                    ready!(this.read_deadline.as_mut().poll(cx));
                    let what = match this.phase {
                        Phase::Head { .. } => "request head",
                        _ => "idle connection",
                    };
                    tracing::debug!(phase = ?this.phase, "closing a slow connection");
                    Poll::Ready(Err(Self::timed_out(what)))
                }
            },
        }
    }
}

impl WatchedIo {
    /// Fails a write the peer has left pending for longer than the idle timeout.
    fn watch_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if result.is_ready() {
            self.write_waiting = false;
            return result;
        }
        if !self.write_waiting {
            self.write_waiting = true;
            let deadline = Instant::now() + self.limits.idle_timeout;
            self.write_deadline.as_mut().reset(deadline);
        }
        ready!(self.write_deadline.as_mut().poll(cx));
        Poll::Ready(Err(Self::timed_out("response write")))
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.stream).poll_write(cx, data);
        this.watch_write(cx, result)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.watch_write(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
