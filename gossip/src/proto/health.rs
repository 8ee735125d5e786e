//! Service health: what a node's service check is, how check results become verdicts, and the
//! hysteresis and damping that keep a flapping service from flapping the answers.
//!
//! The checks themselves run outside the core (the node runs them and feeds each result in as
//! [`super::InEvent::SelfCheck`] or [`super::InEvent::ServiceProbe`]); here are only the pure
//! parts:
//! - [`ServiceCheck`]: the check a node advertises in its signed observation, so that its peers
//!   can probe its service at the addresses their own configuration pins for it. Never a
//!   command, never an address: peers only connect where they chose to.
//! - [`Verdict`]: consecutive-failure / consecutive-success thresholds plus a minimum time between
//!   two flips, from [`HealthPolicy`].
//!
//! Invariants: a verdict flips only after `down_after` consecutive failures (or `up_after`
//! consecutive successes) *and* at least `min_change_interval` after its previous flip; results
//! are counted in arrival order; an unknown result (the check could not run here) is neither a
//! pass nor a failure and changes no streak; nothing here reads a clock.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Longest host, path, body substring or DNS name a [`ServiceCheck`] may carry.
pub const MAX_CHECK_FIELD: usize = 512;

/// A check of a site's service, as advertised to peers in the site's signed observation. Peers
/// run it against the address they pin for the site (see [`super::ProbeTarget`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceCheck {
    /// A TCP connection to `port` is accepted.
    Tcp {
        /// The service's port.
        port: u16,
    },
    /// An HTTP(S) GET answers with the expected status (and body substring).
    Http {
        /// HTTPS (certificate checked against `host`) rather than plain HTTP.
        tls: bool,
        /// The service's port.
        port: u16,
        /// Host header and TLS server name.
        host: String,
        /// Path and query, starting with `/`.
        path: String,
        /// The status expected.
        expect_status: u16,
        /// A substring the body must contain.
        expect_body: Option<String>,
    },
    /// A DNS server on `port` answers `name`/`record_type` with at least one record.
    Dns {
        /// The server's port.
        port: u16,
        /// The name asked for.
        name: String,
        /// The record type asked for (`A`, `AAAA`, `SOA`, …).
        record_type: String,
    },
}

impl ServiceCheck {
    /// Why a peer's advertised check must not be run, if it must not: every field is bounded and
    /// paths are absolute. Checks come from signed observations, but a roster peer may still be
    /// misconfigured or compromised.
    pub fn validate(&self) -> Result<(), String> {
        let bounded = |what: &str, s: &str| {
            if s.len() > MAX_CHECK_FIELD || s.chars().any(char::is_control) {
                Err(format!("{what} longer than {MAX_CHECK_FIELD} bytes or with control characters"))
            } else {
                Ok(())
            }
        };
        match self {
            ServiceCheck::Tcp { port } | ServiceCheck::Dns { port, .. } | ServiceCheck::Http { port, .. }
                if *port == 0 =>
            {
                Err("port 0".into())
            }
            ServiceCheck::Tcp { .. } => Ok(()),
            ServiceCheck::Http { host, path, expect_body, .. } => {
                bounded("host", host)?;
                bounded("path", path)?;
                if !path.starts_with('/') {
                    return Err(format!("path {path:?} does not start with /"));
                }
                if host.is_empty() || host.contains(['/', '@', ' ']) {
                    return Err(format!("invalid host {host:?}"));
                }
                expect_body.as_deref().map_or(Ok(()), |b| bounded("expect_body", b))
            }
            ServiceCheck::Dns { name, record_type, .. } => {
                bounded("name", name)?;
                bounded("record_type", record_type)
            }
        }
    }

    /// The service's port.
    pub fn port(&self) -> u16 {
        match self {
            ServiceCheck::Tcp { port } | ServiceCheck::Http { port, .. } | ServiceCheck::Dns { port, .. } => {
                *port
            }
        }
    }

    /// A short description for logs and `spdu peers` (`tcp:443`, `https:443/healthz`, …).
    pub fn describe(&self) -> String {
        match self {
            ServiceCheck::Tcp { port } => format!("tcp:{port}"),
            ServiceCheck::Http { tls, port, path, .. } => {
                format!("{}:{port}{path}", if *tls { "https" } else { "http" })
            }
            ServiceCheck::Dns { port, name, record_type } => format!("dns:{port} {name} {record_type}"),
        }
    }
}

/// The outcome of one run of a check.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    /// Whether the service passed.
    pub ok: bool,
    /// How long the check took (for HTTP, the whole fetch), if it got that far.
    pub latency: Option<Duration>,
    /// Why it failed.
    pub error: Option<String>,
    /// The check could not be run for a local reason (out of file descriptors, memory or
    /// buffers on the checking side): neither a pass nor a failure, so it leaves the verdict and
    /// its streaks alone. `ok` is false.
    pub unknown: bool,
}

impl CheckResult {
    /// A pass that took `latency`.
    pub fn pass(latency: Duration) -> Self {
        Self { ok: true, latency: Some(latency), error: None, unknown: false }
    }

    /// A failure, with why.
    pub fn fail(error: impl Into<String>) -> Self {
        Self { ok: false, latency: None, error: Some(error.into()), unknown: false }
    }

    /// No verdict: the check could not run here, for `error`.
    pub fn unknown(error: impl Into<String>) -> Self {
        Self { ok: false, latency: None, error: Some(error.into()), unknown: true }
    }
}

/// Thresholds and damping of health verdicts (this node's own and its peers' services).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthPolicy {
    /// Consecutive failed checks before a healthy service is declared down.
    pub down_after: u32,
    /// Consecutive passed checks before a down service is declared healthy again.
    pub up_after: u32,
    /// Least time between two flips of one verdict (zero: no damping).
    pub min_change_interval: Duration,
    /// Whether this node probes its peers' advertised services. When it does, a peer that
    /// advertises a check counts as reachable only once its service passed `up_after` probes.
    pub probe_peers: bool,
}

impl Default for HealthPolicy {
    /// With checks every 500 ms: a dead service is declared down after two failures (about 1 s;
    /// one lost SYN or a GC pause is not enough), back after three passes (1.5 s), no damping;
    /// peers' advertised services are probed (peers that advertise nothing are not affected).
    fn default() -> Self {
        Self { down_after: 2, up_after: 3, min_change_interval: Duration::ZERO, probe_peers: true }
    }
}

/// One health verdict with its hysteresis state and the latest result.
#[derive(Clone, Debug)]
pub struct Verdict {
    ok: bool,
    changed_at: Option<Instant>,
    ok_streak: u32,
    fail_streak: u32,
    last: Option<(Instant, CheckResult)>,
    /// Smoothed latency of the passing results (the `fastest` policy ranks sites by it).
    latency: Option<Duration>,
    /// Passing results with a latency so far (counted up to [`LATENCY_SETTLED`]).
    latency_samples: u32,
}

/// Weight of a new passing result in the smoothed latency (as TCP's SRTT, RFC 6298: 1/8).
const LATENCY_GAIN: u32 = 8;
/// Passing results before the smoothed latency is given out: until then it is their plain mean,
/// so one unlucky first sample does not decide a `fastest` choice.
pub const LATENCY_SETTLED: u32 = 8;

impl Verdict {
    /// A verdict that starts `ok` (this node's own service) or down (a peer's, until proven).
    pub fn new(ok: bool) -> Self {
        Self {
            ok,
            changed_at: None,
            ok_streak: 0,
            fail_streak: 0,
            last: None,
            latency: None,
            latency_samples: 0,
        }
    }

    /// The current verdict.
    pub fn ok(&self) -> bool {
        self.ok
    }

    /// The latest result and when it arrived.
    pub fn last(&self) -> Option<&(Instant, CheckResult)> {
        self.last.as_ref()
    }

    /// The smoothed latency of the passing results, once [`LATENCY_SETTLED`] of them came in.
    pub fn latency(&self) -> Option<Duration> {
        self.latency.filter(|_| self.latency_samples >= LATENCY_SETTLED)
    }

    /// When the verdict last flipped.
    pub fn changed_at(&self) -> Option<Instant> {
        self.changed_at
    }

    /// Consecutive failures (or passes, when positive) so far.
    pub fn streak(&self) -> i64 {
        if self.fail_streak > 0 { -i64::from(self.fail_streak) } else { i64::from(self.ok_streak) }
    }

    /// Counts one result; returns whether the verdict flipped. A flip that the thresholds allow
    /// but `min_change_interval` does not is held until a later result finds the interval passed
    /// (the streak keeps counting meanwhile). An unknown result is kept as the latest and
    /// changes nothing else.
    pub fn record(&mut self, now: Instant, result: CheckResult, policy: &HealthPolicy) -> bool {
        let (ok, unknown) = (result.ok, result.unknown);
        if let (true, Some(sample)) = (ok, result.latency) {
            let n = self.latency_samples;
            self.latency = Some(match self.latency {
                // The running mean of the first samples, then an exponential average.
                Some(mean) if n < LATENCY_SETTLED => (mean * n + sample) / (n + 1),
                Some(smooth) => smooth - smooth / LATENCY_GAIN + sample / LATENCY_GAIN,
                None => sample,
            });
            self.latency_samples = (n + 1).min(LATENCY_SETTLED);
        }
        self.last = Some((now, result));
        if unknown {
            return false;
        }
        let wants_flip = if ok {
            self.ok_streak = self.ok_streak.saturating_add(1);
            self.fail_streak = 0;
            !self.ok && self.ok_streak >= policy.up_after
        } else {
            self.fail_streak = self.fail_streak.saturating_add(1);
            self.ok_streak = 0;
            self.ok && self.fail_streak >= policy.down_after
        };
        let damped =
            self.changed_at.is_some_and(|t| now.saturating_duration_since(t) < policy.min_change_interval);
        if wants_flip && !damped {
            self.ok = ok;
            self.changed_at = Some(now);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass() -> CheckResult {
        CheckResult::pass(Duration::from_millis(1))
    }

    fn fail() -> CheckResult {
        CheckResult::fail("refused")
    }

    #[test]
    fn latency_is_the_mean_until_settled_then_smoothed() {
        let policy = HealthPolicy::default();
        let t0 = Instant::now();
        let mut v = Verdict::new(false);
        let ms = Duration::from_millis;
        for k in 0..LATENCY_SETTLED {
            assert_eq!(v.latency(), None);
            v.record(t0, CheckResult::pass(ms(if k % 2 == 0 { 10 } else { 30 })), &policy);
        }
        let near = |got: Option<Duration>, want: Duration| {
            got.is_some_and(|got| got.abs_diff(want) < Duration::from_micros(1))
        };
        assert!(near(v.latency(), ms(20)), "{:?}", v.latency());
        v.record(t0, fail(), &policy);
        assert!(near(v.latency(), ms(20)), "failures carry no latency");
        v.record(t0, CheckResult::pass(ms(100)), &policy);
        assert!(near(v.latency(), ms(30)), "1/8 of the way to the new sample: {:?}", v.latency());
    }

    #[test]
    fn thresholds_need_consecutive_results() {
        let policy = HealthPolicy::default();
        let t0 = Instant::now();
        let mut v = Verdict::new(true);
        // Alternating failures never reach two in a row.
        for k in 0..10 {
            let r = if k % 2 == 0 { fail() } else { pass() };
            assert!(!v.record(t0, r, &policy));
            assert!(v.ok());
        }
        assert!(!v.record(t0, fail(), &policy));
        assert!(v.record(t0, fail(), &policy), "second failure in a row flips");
        assert!(!v.ok());
        assert_eq!(v.streak(), -2);
        assert_eq!(v.last().unwrap().1.error.as_deref(), Some("refused"));
        // Back only after up_after passes in a row.
        assert!(!v.record(t0, pass(), &policy));
        assert!(!v.record(t0, pass(), &policy));
        assert!(!v.record(t0, fail(), &policy));
        assert!(!v.record(t0, pass(), &policy));
        assert!(!v.record(t0, pass(), &policy));
        assert!(v.record(t0, pass(), &policy));
        assert!(v.ok());
    }

    #[test]
    fn unknown_results_neither_pass_nor_fail() {
        let policy = HealthPolicy::default();
        let t0 = Instant::now();
        let unknown = || CheckResult::unknown("too many open files");
        let mut v = Verdict::new(true);
        assert!(!v.record(t0, fail(), &policy));
        for _ in 0..10 {
            assert!(!v.record(t0, unknown(), &policy));
        }
        assert!(v.ok() && v.streak() == -1, "the failure streak is kept, not extended");
        assert!(v.record(t0, fail(), &policy), "the next real failure is the second in a row");
        for _ in 0..10 {
            assert!(!v.record(t0, unknown(), &policy));
        }
        assert!(!v.ok());
        assert!(v.last().unwrap().1.unknown && !v.last().unwrap().1.ok);
    }

    #[test]
    fn peers_start_down_until_proven() {
        let policy = HealthPolicy::default();
        let t0 = Instant::now();
        let mut v = Verdict::new(false);
        assert!(!v.record(t0, pass(), &policy));
        assert!(!v.record(t0, pass(), &policy));
        assert!(v.record(t0, pass(), &policy));
    }

    #[test]
    fn damping_holds_flips_until_the_interval_passed() {
        let policy = HealthPolicy { min_change_interval: Duration::from_secs(10), ..HealthPolicy::default() };
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut v = Verdict::new(true);
        // The first flip is never held: there was no earlier one.
        v.record(at(0), fail(), &policy);
        assert!(v.record(at(500), fail(), &policy));
        // Recovered at once, but held for 10 s after the flip.
        for ms in (1000..10_500).step_by(500) {
            assert!(!v.record(at(ms), pass(), &policy), "{ms} ms");
            assert!(!v.ok());
        }
        assert!(v.record(at(10_500), pass(), &policy));
        assert!(v.ok());
        // A held flip needs the thresholds still met when the interval passes.
        v.record(at(11_000), fail(), &policy);
        v.record(at(11_500), fail(), &policy);
        assert!(v.ok());
        v.record(at(12_000), pass(), &policy);
        v.record(at(20_600), fail(), &policy);
        assert!(v.ok(), "one failure after the interval is not two");
        assert!(v.record(at(21_000), fail(), &policy));
    }

    mod with_state {
        use super::*;
        use crate::proto::{Config, InEvent, Message, OutEvent, ProbeTarget, State, Timer};
        use crate::sim::fixtures::{address, node_info, observation, public_key, roster, secret_key};
        use crate::snapshot::ViewSnapshot;

        const STEP: Duration = Duration::from_millis(200);

        struct Node {
            state: State,
            now: Instant,
        }

        impl Node {
            /// Node 0 of 2; node 1 advertises `check`, is QUIC-reachable and healthy.
            fn new(probe_peers: bool, check: Option<ServiceCheck>) -> Self {
                let mut config = Config::default();
                config.health.probe_peers = probe_peers;
                let now = Instant::now();
                let mut state = State::new(node_info(0, 1), roster(2), config, 0, now);
                state.drain();
                let mut node = Node { state, now };
                let mut peer = observation(1, 2, true, &[(0, true)]);
                peer.service_check = check;
                node.handle(InEvent::Message {
                    from: public_key(1),
                    message: Message::Push(vec![peer.sign(&secret_key(1))]),
                });
                for _ in 0..3 {
                    node.alive();
                }
                node
            }

            fn handle(&mut self, event: InEvent) -> Vec<OutEvent> {
                self.now += STEP;
                // Coalesced publications fire first, as the driver would fire a due timer.
                self.state.fire(self.now, Timer::Publish);
                self.state.step(self.now, event)
            }

            /// Node 1's periodic liveness message arrives.
            fn alive(&mut self) {
                let tag = crate::proto::version_tag(1, 1);
                self.handle(InEvent::Message { from: public_key(1), message: Message::Alive(tag) });
            }

            fn service(&mut self, ok: bool) {
                let result = if ok { pass() } else { fail() };
                self.handle(InEvent::ServiceProbe { peer: public_key(1), result });
            }

            fn self_check(&mut self, ok: bool) {
                self.handle(InEvent::SelfCheck(if ok { pass() } else { fail() }));
            }

            /// Node indices in the answer, after any pending publication.
            fn answer(&mut self) -> Vec<usize> {
                self.now += STEP;
                self.state.fire(self.now, Timer::Publish);
                let members = &self.state.answer().members;
                (0..2).filter(|i| members.contains(&public_key(*i))).collect()
            }

            fn report(&self) -> crate::proto::PeerReport {
                let mine = self.state.observation(&public_key(0)).expect("own observation");
                mine.report(self.state.roster(), &public_key(1)).expect("a report on 1")
            }
        }

        #[test]
        fn own_check_withdraws_and_returns_with_hysteresis() {
            let mut node = Node::new(false, None);
            assert_eq!(node.answer(), [0, 1]);
            node.self_check(false);
            assert_eq!(node.answer(), [0, 1], "one failure is not enough");
            node.self_check(false);
            assert_eq!(node.answer(), [1]);
            assert!(!node.state.observation(&public_key(0)).unwrap().healthy, "signed as unhealthy");
            let view = ViewSnapshot::of(&node.state, node.now);
            let health = view.nodes[0].health.as_ref().expect("own verdict shown");
            assert_eq!((health.ok, health.streak, health.error.as_deref()), (false, -2, Some("refused")));
            node.self_check(true);
            node.self_check(true);
            assert_eq!(node.answer(), [1]);
            node.self_check(true);
            assert_eq!(node.answer(), [0, 1]);
        }

        #[test]
        fn advertised_service_gates_reachability() {
            let check = ServiceCheck::Tcp { port: 8080 };
            let mut node = Node::new(true, Some(check.clone()));
            let target = ProbeTarget { peer: public_key(1), name: "n1".into(), addr: address(1), check };
            assert_eq!(node.state.probe_targets(), [target]);
            // QUIC-reachable, but its service is not proven yet.
            assert!(node.state.sees_reachable(&public_key(1)));
            node.service(true);
            assert_eq!(node.answer(), [0]);
            assert_eq!((node.report().reachable, node.report().service_ok), (false, Some(false)));
            node.service(true);
            node.service(true);
            assert_eq!(node.answer(), [0, 1]);
            let report = node.report();
            assert_eq!((report.reachable, report.service_ok), (true, Some(true)));
            let latency =
                ViewSnapshot::of(&node.state, node.now).nodes[1].health.as_ref().and_then(|h| h.latency_us);
            assert_eq!(latency, Some(1000));
            node.service(false);
            assert_eq!(node.answer(), [0, 1]);
            node.service(false);
            assert_eq!(node.answer(), [0]);
            assert_eq!((node.report().reachable, node.report().service_ok), (false, Some(false)));
            let view = ViewSnapshot::of(&node.state, node.now);
            let health = view.nodes[1].health.as_ref().expect("peer verdict shown");
            assert_eq!(health.check.as_deref(), Some("tcp:8080"));
            assert!(!health.ok);
        }

        #[test]
        fn peers_without_a_check_or_nodes_not_probing_are_unaffected() {
            let mut node = Node::new(true, None);
            assert!(node.state.probe_targets().is_empty());
            assert_eq!(node.answer(), [0, 1]);
            assert_eq!(node.report().service_ok, None);
            let mut node = Node::new(false, Some(ServiceCheck::Tcp { port: 8080 }));
            assert!(node.state.probe_targets().is_empty());
            assert_eq!(node.answer(), [0, 1]);
        }
    }

    #[test]
    fn advertised_checks_are_bounded() {
        let http = |host: &str, path: &str| ServiceCheck::Http {
            tls: true,
            port: 443,
            host: host.into(),
            path: path.into(),
            expect_status: 200,
            expect_body: None,
        };
        assert!(http("api.example.com", "/healthz").validate().is_ok());
        assert!(http("api.example.com", "healthz").validate().is_err());
        assert!(http("a@b", "/").validate().is_err());
        assert!(http("api.example.com", &format!("/{}", "x".repeat(MAX_CHECK_FIELD))).validate().is_err());
        assert!(http("api.example.com", "/\r\nX: y").validate().is_err());
        assert!(ServiceCheck::Tcp { port: 0 }.validate().is_err());
        assert_eq!(http("h", "/healthz").describe(), "https:443/healthz");
    }
}
