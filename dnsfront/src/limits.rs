//! TCP connection limits: how many connections the server holds, in total and per source.
//!
//! Owns [`TcpLimits`] (the settings), [`ConnectionTable`] (the open connections, counted in
//! total and per source) with its [`ConnectionSlot`] guard, and [`LogLimiter`] for rate-limited
//! warnings. A source is an IPv4 address or an IPv6 /64 (one host usually holds a whole /64, so
//! counting addresses there would not limit anyone). Invariants: a connection is served only
//! while it holds a slot; a slot is released exactly once (on drop), so the counts always equal
//! the slots alive; neither count ever exceeds its limit; the table is "busy" (idle
//! connections are closed sooner) while at least three quarters of the total is in use.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use tokio::sync::watch;

use crate::metrics::Refusal;

/// Limits on the TCP connections a [`DnsServer`](crate::DnsServer) holds (RFC 7766 §6.2.3:
/// servers protect their resources by limiting connections and closing idle ones).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpLimits {
    /// Most TCP connections open at once, over all listen addresses. Default 256, and never
    /// more than half the process's open-file limit (so DNS alone cannot use up the file
    /// descriptors the node needs for gossip, health checks and the control endpoint).
    pub max_connections: usize,
    /// Most TCP connections open at once from one source (an IPv4 address or an IPv6 /64).
    /// Default 16.
    pub max_per_source: usize,
    /// A connection that sends no complete query for this long is closed. Default 10 s.
    pub idle_timeout: Duration,
    /// The idle timeout while three quarters of `max_connections` are in use. Default 1 s.
    pub busy_idle_timeout: Duration,
}

impl Default for TcpLimits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            max_per_source: 16,
            idle_timeout: Duration::from_secs(10),
            busy_idle_timeout: Duration::from_secs(1),
        }
    }
}

impl TcpLimits {
    /// These limits with `max_connections` no more than half of `open_files` (the process's
    /// soft limit on open files, if known), and every limit at least 1.
    pub(crate) fn within(self, open_files: Option<u64>) -> Self {
        let budget = open_files.map_or(usize::MAX, |n| usize::try_from(n / 2).unwrap_or(usize::MAX));
        let max_connections = self.max_connections.min(budget).max(1);
        Self { max_connections, max_per_source: self.max_per_source.clamp(1, max_connections), ..self }
    }
}

/// The soft limit on open files of this process (Linux: from `/proc/self/limits`), if known.
pub(crate) fn open_file_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|line| line.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

/// The source a connection is counted under.
fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
        },
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_source: HashMap<IpAddr, usize>,
}

/// The open TCP connections, counted in total and per source.
#[derive(Debug)]
pub(crate) struct ConnectionTable {
    limits: TcpLimits,
    counts: Mutex<Counts>,
    busy: watch::Sender<bool>,
}

impl ConnectionTable {
    pub(crate) fn new(limits: TcpLimits) -> Arc<Self> {
        Arc::new(Self { limits, counts: Mutex::default(), busy: watch::channel(false).0 })
    }

    /// The limits in force.
    pub(crate) fn limits(&self) -> TcpLimits {
        self.limits
    }

    /// Takes a slot for a connection from `ip`, or says which limit is reached.
    pub(crate) fn open(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionSlot, Refusal> {
        let source = source_of(ip);
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.total >= self.limits.max_connections {
            return Err(Refusal::total);
        }
        let held = counts.per_source.entry(source).or_insert(0);
        if *held >= self.limits.max_per_source {
            return Err(Refusal::per_source);
        }
        *held += 1;
        counts.total += 1;
        self.update_busy(counts.total);
        Ok(ConnectionSlot { table: self.clone(), source })
    }

    /// Connections open now: in total, and from `ip`'s source.
    pub(crate) fn open_count(&self, ip: IpAddr) -> (usize, usize) {
        let counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        (counts.total, counts.per_source.get(&source_of(ip)).copied().unwrap_or(0))
    }

    /// A receiver of the busy state (see the module doc).
    pub(crate) fn busy(&self) -> watch::Receiver<bool> {
        self.busy.subscribe()
    }

    fn release(&self, source: IpAddr) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = counts.per_source.get_mut(&source) {
            *held -= 1;
            if *held == 0 {
                counts.per_source.remove(&source);
            }
        }
        counts.total = counts.total.saturating_sub(1);
        self.update_busy(counts.total);
    }

    fn update_busy(&self, total: usize) {
        let busy = total.saturating_mul(4) >= self.limits.max_connections.saturating_mul(3);
        self.busy.send_if_modified(|state| std::mem::replace(state, busy) != busy);
    }
}

/// One connection's place in the [`ConnectionTable`], given back on drop.
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    table: Arc<ConnectionTable>,
    source: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.table.release(self.source);
    }
}

/// Lets a warning through at most once per interval and counts the ones held back.
#[derive(Debug)]
pub(crate) struct LogLimiter {
    interval: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogLimiter {
    pub(crate) fn new(interval: Duration) -> Self {
        Self { interval, state: Mutex::new((None, 0)) }
    }

    /// `Some(n)` if a warning may be logged now, `n` being how many were held back since the
    /// last one; `None` (and one more held back) otherwise.
    pub(crate) fn allow(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (last, held) = &mut *state;
        if last.is_some_and(|last| now.saturating_duration_since(last) < self.interval) {
            *held += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_source: usize) -> TcpLimits {
        TcpLimits { max_connections: total, max_per_source: per_source, ..TcpLimits::default() }
    }

    #[test]
    fn per_source_and_total_limits() {
        let table = ConnectionTable::new(limits(4, 2));
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let c: IpAddr = "127.0.0.3".parse().unwrap();
        let a1 = table.open(a).unwrap();
        let _a2 = table.open(a).unwrap();
        assert_eq!(table.open(a).unwrap_err(), Refusal::per_source);
        assert!(!*table.busy().borrow(), "2 of 4 in use");
        let _b1 = table.open(b).unwrap();
        assert!(*table.busy().borrow(), "3 of 4 in use");
        let _b2 = table.open(b).unwrap();
        assert_eq!(table.open(c).unwrap_err(), Refusal::total);
        drop(a1);
        assert_eq!(table.open_count(a), (3, 1));
        let _c1 = table.open(c).unwrap();
        assert_eq!(table.open_count(c), (4, 1));
    }

    #[test]
    fn ipv6_sources_are_counted_by_64() {
        let table = ConnectionTable::new(limits(10, 1));
        let _one = table.open("2001:db8::1".parse().unwrap()).unwrap();
        assert_eq!(table.open("2001:db8::ffff:1".parse().unwrap()).unwrap_err(), Refusal::per_source);
        table.open("2001:db8:0:1::1".parse().unwrap()).unwrap();
        let _v4 = table.open("192.0.2.1".parse().unwrap()).unwrap();
        assert_eq!(table.open("::ffff:192.0.2.1".parse().unwrap()).unwrap_err(), Refusal::per_source);
    }

    #[test]
    fn limits_fit_the_open_file_limit() {
        let fitted = TcpLimits::default().within(Some(256));
        assert_eq!((fitted.max_connections, fitted.max_per_source), (128, 16));
        assert_eq!(TcpLimits::default().within(None).max_connections, 256);
        let tiny = TcpLimits::default().within(Some(1));
        assert_eq!((tiny.max_connections, tiny.max_per_source), (1, 1));
        assert!(open_file_limit().is_some_and(|n| n > 0), "readable on Linux");
    }

    #[test]
    fn log_limiter_counts_what_it_holds_back() {
        let limiter = LogLimiter::new(Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(limiter.allow(start), Some(0));
        assert_eq!(limiter.allow(start + Duration::from_secs(1)), None);
        assert_eq!(limiter.allow(start + Duration::from_secs(2)), None);
        assert_eq!(limiter.allow(start + Duration::from_secs(11)), Some(2));
    }
}
