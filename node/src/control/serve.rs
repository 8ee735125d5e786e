//! The control endpoint's listener: who may connect, how many, and for how long.
//!
//! Invariants: a connection from outside the allowed networks (`node.control_allow`; loopback
//! only when it is not set) is closed at once, unread. At most [`Limits::max_connections`]
//! connections are open, at most [`Limits::max_per_source`] from one address; one more is closed
//! at once. A client must send a request's headers within [`Limits::header_timeout`], and a
//! connection that moves no byte for [`Limits::idle_timeout`] (a kept-alive connection between
//! requests, a stalled client) is closed. Accept errors (out of file descriptors) back off
//! instead of spinning. Refusals are logged at most once per [`LOG_INTERVAL`] each.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::AddressPin;
use crate::limits::RateLimitedLog;

/// At most one log line per kind of refusal per this long.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The endpoint's limits.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Networks allowed to connect; empty: loopback only.
    pub allow: Vec<AddressPin>,
    /// Connections open at once.
    pub max_connections: usize,
    /// Connections open at once from one address.
    pub max_per_source: usize,
    /// Time to send a request's headers.
    pub header_timeout: Duration,
    /// Time a connection may move no byte.
    pub idle_timeout: Duration,
    /// What the log calls the listener ("control endpoint").
    pub label: &'static str,
    /// The most a request's head may take (hyper's read buffer, at least 8192; `None`: hyper's
    /// default, about 400 KB); a longer one is answered 431 and the connection closed.
    pub max_header_bytes: Option<usize>,
    /// Serve more than one request per connection.
    pub keep_alive: bool,
    /// Connections closed unserved (not allowed, or over a cap): counted here.
    pub refused: Arc<AtomicU64>,
}

impl Limits {
    /// The defaults, with `allow` as the allowed networks.
    pub fn new(allow: Vec<AddressPin>) -> Self {
        Self {
            allow,
            max_connections: 64,
            max_per_source: 16,
            header_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(5),
            label: "control endpoint",
            max_header_bytes: None,
            keep_alive: true,
            refused: Arc::default(),
        }
    }

    fn allows(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if self.allow.is_empty() { ip.is_loopback() } else { self.allow.iter().any(|n| n.contains(ip)) }
    }
}

static NOT_ALLOWED: RateLimitedLog = RateLimitedLog::new(LOG_INTERVAL);
static FULL: RateLimitedLog = RateLimitedLog::new(LOG_INTERVAL);
static ACCEPT_FAILED: RateLimitedLog = RateLimitedLog::new(LOG_INTERVAL);

/// Open connections, in total and per source.
#[derive(Default)]
struct Slots {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
}

/// A slot, given back when the connection ends.
struct Slot {
    slots: Arc<Mutex<Slots>>,
    source: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.total -= 1;
        if let Some(n) = slots.by_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                slots.by_source.remove(&self.source);
            }
        }
    }
}

fn take_slot(slots: &Arc<Mutex<Slots>>, source: IpAddr, limits: &Limits) -> Result<Slot, &'static str> {
    let mut s = slots.lock().unwrap_or_else(|e| e.into_inner());
    if s.total >= limits.max_connections {
        return Err("connection cap reached");
    }
    let from_source = s.by_source.entry(source).or_default();
    if *from_source >= limits.max_per_source {
        return Err("per-source connection cap reached");
    }
    *from_source += 1;
    s.total += 1;
    Ok(Slot { slots: slots.clone(), source })
}

/// Serves `router` on `listener` under `limits` until `shutdown` fires; open connections get
/// a graceful shutdown and are waited for.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: Limits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let slots = Arc::new(Mutex::new(Slots::default()));
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors or the like: retrying at once would spin a core.
                ACCEPT_FAILED.warn(format_args!("{}: accept failed: {e}; backing off", limits.label));
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        if !limits.allows(peer.ip()) {
            limits.refused.fetch_add(1, Ordering::Relaxed);
            NOT_ALLOWED.warn(format_args!("{}: refused {peer}: not in node.control_allow", limits.label));
            continue;
        }
        let slot = match take_slot(&slots, peer.ip(), &limits) {
            Ok(slot) => slot,
            Err(why) => {
                limits.refused.fetch_add(1, Ordering::Relaxed);
                FULL.warn(format_args!("{}: refused {peer}: {why}", limits.label));
                continue;
            }
        };
        connections.spawn(connection(stream, router.clone(), limits.clone(), shutdown.clone(), slot));
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

async fn connection(
    stream: TcpStream,
    router: axum::Router,
    limits: Limits,
    shutdown: CancellationToken,
    _slot: Slot,
) {
    let start = Instant::now();
    let activity = Arc::new(AtomicU64::new(0));
    let io = TokioIo::new(Watched { inner: stream, start, activity: activity.clone() });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).keep_alive(limits.keep_alive);
    if let Some(max) = limits.max_header_bytes {
        builder.max_buf_size(max.max(8192));
    }
    let conn = builder.serve_connection(io, TowerToHyperService::new(router));
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        let idle_since = start + Duration::from_millis(activity.load(Ordering::Relaxed));
        tokio::select! {
            _ = conn.as_mut() => return,
            () = shutdown.cancelled(), if !draining => {
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
            () = tokio::time::sleep_until((idle_since + limits.idle_timeout).into()) => {
                let idle_since = start + Duration::from_millis(activity.load(Ordering::Relaxed));
                if idle_since.elapsed() >= limits.idle_timeout {
                    // Dropping the connection closes the socket.
                    return;
                }
            }
        }
    }
}

/// A stream that records when it last moved a byte (milliseconds since `start`).
struct Watched {
    inner: TcpStream,
    start: Instant,
    activity: Arc<AtomicU64>,
}

impl Watched {
    fn touch(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.activity.store(now, Ordering::Relaxed);
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
