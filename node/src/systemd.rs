//! systemd integration through the `sd_notify` protocol: readiness (`READY=1`), reloads
//! (`RELOADING=1`), shutdown (`STOPPING=1`), a one-line `STATUS=` and the watchdog.
//!
//! Everything is a no-op when `NOTIFY_SOCKET` is unset (not started by systemd, or a unit whose
//! `Type=` is not `notify`); a notification that cannot be sent is logged, never fatal.
//!
//! The watchdog proves more than "the process exists": `WATCHDOG=1` goes out (every half
//! `WATCHDOG_USEC`) only while the membership actor runs its loop ([`Membership::is_alive`]),
//! so an actor that stalls stops the pings and systemd restarts the node after `WatchdogSec=`.
//! The status line (what each pool name answers with, how many peers are reachable) is read
//! from the membership snapshot, on every answer change and every [`STATUS_EVERY`].
//!
//! Messages are formatted by the `sd-notify` crate ([`NotifyState`]) and sent here to the socket
//! named by the environment, so that the same code can be pointed at any socket.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::time::Duration;

use sd_notify::NotifyState;
use spdu_gossip::net::Membership;
use spdu_gossip::snapshot::ViewSnapshot;
use tokio_util::sync::CancellationToken;

use crate::limits::RateLimitedLog;

/// How often the status line is refreshed without an answer change (peer reachability changes
/// do not change the answer watch).
pub const STATUS_EVERY: Duration = Duration::from_secs(5);
/// How long the status task waits for a membership snapshot before reporting the actor stuck.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(1);
/// Pool names shown in the status line; more are counted.
const STATUS_NAMES: usize = 4;

/// Failures to notify, logged at most once a minute (the watchdog would repeat them).
static SEND_FAILED: RateLimitedLog = RateLimitedLog::new(Duration::from_secs(60));

/// Tells systemd that the node runs and serves (every socket bound), with a status line.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(&one_line(status))]);
}

/// Tells systemd that the config is being reloaded; [`ready`] follows once it is applied.
pub fn reloading() {
    let mut states = vec![NotifyState::Reloading];
    // systemd ≥ 253 wants the monotonic time of the reload with RELOADING=1.
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    send(&states);
}

/// Replaces the status line systemd shows (`systemctl status spdu`).
pub fn status(status: &str) {
    send(&[NotifyState::Status(&one_line(status))]);
}

/// Tells systemd that the node is shutting down.
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(&one_line(status))]);
}

/// Runs until `shutdown`: sends `WATCHDOG=1` every half `WATCHDOG_USEC` while the membership
/// actor's loop runs (none while it stalls), and keeps the status line current. Returns at once
/// when `NOTIFY_SOCKET` is unset.
pub async fn watchdog(membership: Membership, shutdown: CancellationToken) {
    let Some(socket) = Notifier::from_env() else { return };
    let pings = async {
        if let Some(interval) = sd_notify::watchdog_enabled() {
            ping_while_alive(&socket, interval / 2, || membership.is_alive(), &shutdown).await;
        }
    };
    tokio::join!(pings, report_status(&socket, &membership, &shutdown));
}

/// Sends `WATCHDOG=1` every `period` while `alive()` holds, until `shutdown`.
async fn ping_while_alive(
    socket: &Notifier,
    period: Duration,
    alive: impl Fn() -> bool,
    shutdown: &CancellationToken,
) {
    static STALLED: RateLimitedLog = RateLimitedLog::new(Duration::from_secs(60));
    let mut ticks = tokio::time::interval(period.max(Duration::from_millis(10)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = shutdown.cancelled() => return,
        }
        if alive() {
            socket.send_logged(&[NotifyState::Watchdog]);
        } else {
            STALLED.warn(format_args!(
                "the membership loop has stalled: watchdog pings withheld, systemd will restart the node"
            ));
        }
    }
}

/// Sends the status line whenever it changes, checked on every answer change and every
/// [`STATUS_EVERY`], until `shutdown`.
async fn report_status(socket: &Notifier, membership: &Membership, shutdown: &CancellationToken) {
    let mut answers = membership.answers();
    let mut last = String::new();
    loop {
        let line = match tokio::time::timeout(SNAPSHOT_TIMEOUT, membership.snapshot()).await {
            Ok(Some(snapshot)) => summary(&snapshot),
            Ok(None) => return,
            Err(_) => "membership not responding".to_owned(),
        };
        if line != last {
            socket.send_logged(&[NotifyState::Status(&line)]);
            last = line;
        }
        tokio::select! {
            changed = answers.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(STATUS_EVERY) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// The status line: per pool name how many sites it answers with, peers reachable from here,
/// and this site's own service check when it fails, e.g.
/// `answering api: 3 sites, admin: 1 site; peers reachable 2/2`.
fn summary(snapshot: &ViewSnapshot) -> String {
    let names = &snapshot.answer.names;
    let mut shown: Vec<String> = (names.iter().take(STATUS_NAMES))
        .map(|name| {
            let n = name.sites.len();
            format!("{}: {n} site{}", name.name, if n == 1 { "" } else { "s" })
        })
        .collect();
    if names.len() > STATUS_NAMES {
        shown.push(format!("{} more names", names.len() - STATUS_NAMES));
    }
    let answering = if names.is_empty() {
        "answering with this site only (no answer chosen yet)".to_owned()
    } else {
        format!("answering {}", shown.join(", "))
    };
    let peers: Vec<_> = snapshot.nodes.iter().filter(|n| !n.is_self).collect();
    let reachable = peers.iter().filter(|n| n.probe.as_ref().is_some_and(|p| p.reachable)).count();
    let own_failing =
        (snapshot.nodes.iter()).find(|n| n.is_self).and_then(|n| n.health.as_ref()).is_some_and(|h| !h.ok);
    let health = if own_failing { "; own service check failing" } else { "" };
    one_line(&format!("{answering}; peers reachable {reachable}/{}{health}", peers.len()))
}

/// `text` with control characters (a line break would end the `STATUS=` assignment) replaced
/// by spaces.
fn one_line(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

fn send(states: &[NotifyState]) {
    if let Some(socket) = Notifier::from_env() {
        socket.send_logged(states);
    }
}

/// The service manager's notification socket.
struct Notifier {
    address: SocketAddr,
}

impl Notifier {
    /// The socket named by `NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace).
    fn from_env() -> Option<Self> {
        let name = std::env::var_os("NOTIFY_SOCKET")?;
        match Self::at(Path::new(&name)) {
            Ok(notifier) => Some(notifier),
            Err(e) => {
                SEND_FAILED.warn(format_args!("NOTIFY_SOCKET={}: {e}", name.to_string_lossy()));
                None
            }
        }
    }

    fn at(name: &Path) -> io::Result<Self> {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::ffi::OsStrExt;
        let address = match name.as_os_str().as_bytes() {
            [b'@', abstract_name @ ..] => SocketAddr::from_abstract_name(abstract_name)?,
            _ => SocketAddr::from_pathname(name)?,
        };
        Ok(Self { address })
    }

    /// Sends one datagram holding `states`, one `KEY=VALUE` per line.
    fn send(&self, states: &[NotifyState]) -> io::Result<()> {
        let message: String = states.iter().map(|s| format!("{s}\n")).collect();
        let socket = UnixDatagram::unbound()?;
        socket.send_to_addr(message.as_bytes(), &self.address)?;
        Ok(())
    }

    fn send_logged(&self, states: &[NotifyState]) {
        if let Err(e) = self.send(states) {
            SEND_FAILED.warn(format_args!("cannot notify systemd: {e}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use spdu_gossip::net::{ALIVE_WITHIN, Settings};
    use spdu_gossip::proto;
    use spdu_keys::SecretKey;

    use super::*;

    /// The datagrams that arrive at `socket` within `within`.
    fn received(socket: &UnixDatagram, within: Duration) -> Vec<(Instant, String)> {
        let deadline = Instant::now() + within;
        let mut out = Vec::new();
        let mut buffer = [0; 4096];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            socket.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
            match socket.recv(&mut buffer) {
                Ok(n) => out.push((Instant::now(), String::from_utf8_lossy(&buffer[..n]).into_owned())),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) => panic!("{e}"),
            }
        }
        out
    }

    /// A real membership actor (one node, no peers) on its own runtime thread, so that the test
    /// can stall that thread as a deadlock or a busy loop in the actor would.
    fn membership_on_own_thread() -> (Membership, tokio::runtime::Handle, CancellationToken) {
        let settings = Settings {
            key: SecretKey::generate(),
            name: "alpha".into(),
            cluster: "pool.example.test".into(),
            incarnation: 1,
            listen: "127.0.0.1:0".parse().unwrap(),
            addresses: vec!["127.0.0.1".parse().unwrap()],
            peers: vec![],
            protocol: proto::Config::default(),
            service_check: None,
            observed_address: false,
        };
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let bound = runtime.block_on(async { Membership::bind(settings) }).unwrap();
            started_tx.send((bound.membership(), runtime.handle().clone())).unwrap();
            runtime.block_on(bound.run(stop));
        });
        let (membership, handle) = started_rx.recv().unwrap();
        (membership, handle, shutdown)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watchdog_pings_stop_while_the_membership_loop_stalls_and_resume_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::at(&path).unwrap();
        let (membership, actor_runtime, stop_actor) = membership_on_own_thread();
        let shutdown = CancellationToken::new();
        let period = Duration::from_millis(200);
        let alive = membership.clone();
        let pings = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { ping_while_alive(&notifier, period, || alive.is_alive(), &shutdown).await }
        });

        let running = tokio::task::spawn_blocking({
            let listener = listener.try_clone().unwrap();
            move || received(&listener, Duration::from_secs(2))
        });
        let running = running.await.unwrap();
        assert!(running.len() >= 5, "pings while running: {running:?}");
        assert!(running.iter().all(|(_, m)| m == "WATCHDOG=1\n"), "{running:?}");

        // Block the actor's only thread, as a deadlock would; the pings stop once the loop has
        // not run for ALIVE_WITHIN, and come back when it runs again.
        let stall = ALIVE_WITHIN + Duration::from_secs(3);
        let stalled_at = Instant::now();
        actor_runtime.spawn(async move { std::thread::sleep(stall) });
        let during = tokio::task::spawn_blocking({
            let listener = listener.try_clone().unwrap();
            move || received(&listener, stall + Duration::from_secs(2))
        })
        .await
        .unwrap();
        // The loop last ran at most PULSE (1 s) before the stall began.
        let still_pinging = stalled_at + ALIVE_WITHIN - Duration::from_secs(2);
        let silent_from = stalled_at + ALIVE_WITHIN + period;
        let silent_until = stalled_at + stall;
        assert!(
            !during.iter().any(|(t, _)| *t > silent_from && *t < silent_until),
            "a ping while stalled: {:?}",
            during.iter().map(|(t, _)| t.duration_since(stalled_at)).collect::<Vec<_>>()
        );
        assert!(
            during.iter().any(|(t, _)| *t > still_pinging && *t < silent_from),
            "pings stopped too early"
        );
        assert!(during.iter().any(|(t, _)| *t > silent_until), "pings did not resume: {during:?}");

        shutdown.cancel();
        pings.await.unwrap();
        stop_actor.cancel();
    }

    #[test]
    fn the_status_line_stays_one_line() {
        assert_eq!(one_line("a\nb\tc"), "a b c");
    }
}
