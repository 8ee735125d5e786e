//! Notification hooks (`[[notify]]`): every event of the [`EventLog`] a hook asked for is
//! delivered to it, by HTTP POST or by running a command.
//!
//! Invariants: delivery never blocks the node. [`run`] hands each event to each hook's bounded
//! queue with `try_send`; a full queue drops the event and counts it. Each hook has one worker
//! task that delivers its queue in order, one event at a time, each attempt bounded by the
//! hook's timeout, retried with exponential backoff ([`backoff`]); an event given up is logged
//! and counted. Workers hold nothing the node needs (no lock, no membership handle). When a
//! reload changes the `[[notify]]` list, the workers are replaced (events still queued for the
//! old ones are dropped, not counted: the hooks they were for are gone).
//!
//! - `deliver`: one attempt: the HTTP POST (signed) or the command run.

mod deliver;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, HookTarget, NotifyHook};
use crate::events::Event;
#[cfg(doc)]
use crate::events::EventLog;
pub use deliver::{signature, user_agent};

/// The first retry waits this long; each next one twice as long, up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The wait before retry number `retry` (0 for the first retry).
pub fn backoff(retry: u32) -> Duration {
    FIRST_BACKOFF.saturating_mul(1 << retry.min(16)).min(MAX_BACKOFF)
}

/// Per-hook delivery counters, kept across reloads (by hook label). Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct NotifyMetrics {
    hooks: Arc<Mutex<BTreeMap<String, Arc<HookCounters>>>>,
}

/// One hook's counters.
#[derive(Debug, Default)]
pub struct HookCounters {
    /// Events delivered.
    pub delivered: AtomicU64,
    /// Events given up after every retry failed.
    pub failed: AtomicU64,
    /// Events dropped because the hook's queue was full.
    pub dropped: AtomicU64,
}

impl NotifyMetrics {
    /// The counters of the hook labelled `label`.
    pub fn hook(&self, label: &str) -> Arc<HookCounters> {
        let mut hooks = self.hooks.lock().unwrap_or_else(|e| e.into_inner());
        hooks.entry(label.to_owned()).or_default().clone()
    }

    /// Registers `notify_delivered`, `notify_failed` and `notify_dropped` (counters by `hook`).
    pub fn register(&self, registry: &mut Registry) {
        let hooks = self.hooks.lock().unwrap_or_else(|e| e.into_inner());
        let family = |counter: fn(&HookCounters) -> &AtomicU64| {
            let family = Family::<Vec<(String, String)>, Counter>::default();
            for (label, counters) in hooks.iter() {
                let value = counter(counters).load(Ordering::Relaxed);
                family.get_or_create(&vec![("hook".to_owned(), label.clone())]).inc_by(value);
            }
            family
        };
        let notify = registry.sub_registry_with_prefix("notify");
        notify.register("delivered", "Events delivered to a notification hook", family(|c| &c.delivered));
        notify.register(
            "failed",
            "Events a notification hook did not take after every retry",
            family(|c| &c.failed),
        );
        notify.register(
            "dropped",
            "Events dropped because a notification hook's queue was full",
            family(|c| &c.dropped),
        );
    }
}

/// Delivers `events` (from [`EventLog::subscribe`], taken before the producer starts so that
/// none is missed) to the hooks of the newest config until `shutdown`.
pub async fn run(
    mut events: broadcast::Receiver<Event>,
    mut config: watch::Receiver<Arc<Config>>,
    metrics: NotifyMetrics,
    shutdown: CancellationToken,
) {
    let client = deliver::http_client();
    let mut hooks = config.borrow_and_update().notify.clone();
    describe(&hooks);
    let mut workers = start(&hooks, &client, &metrics, &shutdown);
    // Without a sender no reload comes; the current hooks stay.
    let mut reloads = true;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            changed = config.changed(), if reloads => {
                if changed.is_err() {
                    reloads = false;
                    continue;
                }
                let next = config.borrow_and_update().notify.clone();
                if next != hooks {
                    tracing::info!(hooks = next.len(), "notify: hooks replaced");
                    describe(&next);
                    for worker in &workers {
                        worker.stop.cancel();
                    }
                    hooks = next;
                    workers = start(&hooks, &client, &metrics, &shutdown);
                }
            }
            event = events.recv() => match event {
                Ok(event) => {
                    for worker in &workers {
                        worker.offer(&event);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "notify: fell behind the event log; events dropped");
                    for worker in &workers {
                        worker.counters.dropped.fetch_add(missed, Ordering::Relaxed);
                    }
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
        }
    }
    for worker in &workers {
        worker.stop.cancel();
    }
}

/// One log line per hook: its label, where it delivers (a URL's origin only: its path may hold
/// a token) and what.
fn describe(hooks: &[NotifyHook]) {
    for hook in hooks {
        let target = match &hook.target {
            HookTarget::Url(url) => format!("POST {}", url.origin().ascii_serialization()),
            HookTarget::Command(argv) => format!("command {}", argv[0]),
        };
        let events: Vec<&str> = hook.events.iter().map(|k| k.as_str()).collect();
        tracing::info!(
            hook = %hook.label,
            events = %events.join(","),
            signed = hook.secret.is_some(),
            "notify: {target}"
        );
    }
}

/// The sending side of one hook's worker.
struct Worker {
    hook: NotifyHook,
    queue: mpsc::Sender<Arc<Event>>,
    counters: Arc<HookCounters>,
    stop: CancellationToken,
}

impl Worker {
    /// Queues `event` if the hook wants it; never waits.
    fn offer(&self, event: &Event) {
        if !self.hook.events.contains(&event.event) {
            return;
        }
        if let Err(mpsc::error::TrySendError::Full(_)) = self.queue.try_send(Arc::new(event.clone())) {
            let dropped = self.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            // One line per power of two, so that a flood of drops does not flood the log.
            if dropped.is_power_of_two() {
                tracing::warn!(hook = %self.hook.label, dropped, seq = event.seq, "notify: queue full, event dropped");
            }
        }
    }
}

fn start(
    hooks: &[NotifyHook],
    client: &reqwest::Client,
    metrics: &NotifyMetrics,
    shutdown: &CancellationToken,
) -> Vec<Worker> {
    (hooks.iter())
        .map(|hook| {
            let (queue, receiver) = mpsc::channel(hook.queue);
            let counters = metrics.hook(&hook.label);
            let stop = shutdown.child_token();
            tokio::spawn(deliver_all(hook.clone(), receiver, client.clone(), counters.clone(), stop.clone()));
            Worker { hook: hook.clone(), queue, counters, stop }
        })
        .collect()
}

/// One hook's worker: delivers its queue in order until `stop`.
async fn deliver_all(
    hook: NotifyHook,
    mut queue: mpsc::Receiver<Arc<Event>>,
    client: reqwest::Client,
    counters: Arc<HookCounters>,
    stop: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => return,
            event = queue.recv() => match event { Some(e) => e, None => return },
        };
        let body = match serde_json::to_vec(&*event) {
            Ok(body) => body,
            Err(e) => {
                tracing::error!(hook = %hook.label, seq = event.seq, "notify: cannot encode the event: {e}");
                counters.failed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        let mut retry = 0;
        loop {
            let attempt = deliver::attempt(&hook, &client, &event, &body);
            let result = tokio::select! {
                () = stop.cancelled() => return,
                result = tokio::time::timeout(hook.timeout, attempt) => {
                    result.unwrap_or_else(|_| Err(format!("no answer within {} ms", hook.timeout.as_millis())))
                }
            };
            match result {
                Ok(()) => {
                    counters.delivered.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(hook = %hook.label, seq = event.seq, "notify: delivered");
                    break;
                }
                Err(e) if retry < hook.retries => {
                    let wait = backoff(retry);
                    tracing::debug!(hook = %hook.label, seq = event.seq, "notify: {e}; retrying in {wait:?}");
                    retry += 1;
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
                Err(e) => {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        hook = %hook.label,
                        seq = event.seq,
                        kind = %event.event,
                        "notify: not delivered after {} attempts: {e}",
                        retry + 1
                    );
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Instant;

    use serde_json::json;

    use super::*;
    use crate::events::{EventKind, EventLog};

    /// A config (one line of TOML per table) with `notify` appended, read from `dir`.
    fn config(dir: &Path, notify: &str) -> Arc<Config> {
        let text = format!(
            "[node]\nname = \"alpha\"\nkey = \"k\"\ngossip = \"127.0.0.1:1\"\ndns = [\"127.0.0.1:2\"]\n\
             control = \"127.0.0.1:3\"\naddresses = [\"192.0.2.1\"]\n[zone]\norigin = \"pool.example.test\"\n\
             names = [\"api\"]\nttl = 5\nnameservers = [\"ns.example.test\"]\n{notify}"
        );
        Arc::new(Config::parse(&dir.join("spdu.toml"), &text).unwrap())
    }

    /// A command hook running `script` under /bin/sh.
    fn sh(script: &str, extra: &str) -> String {
        format!("[[notify]]\ncommand = [\"/bin/sh\", \"-c\", {script:?}]\n{extra}\n")
    }

    /// Waits (bounded) until `check` holds.
    async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
        let start = Instant::now();
        while !check() {
            assert!(start.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_default()
    }

    fn alive(pid: &str) -> bool {
        Path::new(&format!("/proc/{}", pid.trim())).exists()
    }

    #[tokio::test]
    async fn a_reload_that_changes_the_hooks_replaces_them() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.log"), dir.path().join("b.log"));
        let log = EventLog::new("alpha".into(), "pool.example.test".into());
        let (config_tx, config_rx) =
            watch::channel(config(dir.path(), &sh(&format!("echo $SPDU_EVENT_SEQ >> {}", a.display()), "")));
        let metrics = NotifyMetrics::default();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(log.subscribe(), config_rx, metrics.clone(), shutdown.clone()));

        log.record(EventKind::Peer, "one".into(), json!({}));
        eventually("event 1 at hook a", || read(&a) == "1\n").await;
        // The same hooks again: nothing is replaced.
        config_tx
            .send_replace(config(dir.path(), &sh(&format!("echo $SPDU_EVENT_SEQ >> {}", a.display()), "")));
        log.record(EventKind::Peer, "two".into(), json!({}));
        eventually("event 2 at hook a", || read(&a) == "1\n2\n").await;

        config_tx
            .send_replace(config(dir.path(), &sh(&format!("echo $SPDU_EVENT_SEQ >> {}", b.display()), "")));
        // The dispatcher takes the new config before the next event only once it looked: wait
        // for that by sending events until one reaches b.
        let mut sent = 2;
        let start = Instant::now();
        while read(&b).is_empty() {
            assert!(start.elapsed() < Duration::from_secs(10), "hook b never got an event");
            sent += 1;
            log.record(EventKind::Peer, "more".into(), json!({}));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eventually("hook b to take every later event", || read(&b).lines().last() == Some(&sent.to_string()))
            .await;
        let at_a = read(&a).lines().count();
        log.record(EventKind::Peer, "last".into(), json!({}));
        eventually("the last event at b", || read(&b).lines().last() == Some(&(sent + 1).to_string())).await;
        assert_eq!(read(&a).lines().count(), at_a, "hook a is gone");
        assert_eq!(metrics.hook("notify[0]").failed.load(Ordering::Relaxed), 0);
        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_hanging_hook_drops_what_overflows_and_is_killed_whole_on_timeout_and_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        // The shell leaves a grandchild behind (in its process group) and waits for it.
        let script = format!("sleep 30 & echo $! >> {}; wait", pids.display());
        let log = EventLog::new("alpha".into(), "pool.example.test".into());
        let hooks = sh(&script, "timeout_ms = 300\nretries = 0\nqueue = 1")
            + &sh(&script, "timeout_ms = 60000\nqueue = 1");
        let (_config_tx, config_rx) = watch::channel(config(dir.path(), &hooks));
        let metrics = NotifyMetrics::default();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(log.subscribe(), config_rx, metrics.clone(), shutdown.clone()));

        for i in 0..100 {
            log.record(EventKind::Answer, format!("e{i}"), json!({}));
        }
        let (timing_out, hanging) = (metrics.hook("notify[0]"), metrics.hook("notify[1]"));
        let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
        // One event in delivery and one queued, the rest dropped (99 if the dispatcher filled
        // the queue before the worker took the first): every event is dropped or given up.
        eventually("the overflow to be counted", || count(&hanging.dropped) >= 98).await;
        eventually("the timeouts", || count(&timing_out.failed) + count(&timing_out.dropped) == 100).await;
        assert!((98..=99).contains(&count(&timing_out.dropped)));
        assert_eq!(count(&timing_out.delivered) + count(&hanging.delivered), 0);
        let runs = count(&timing_out.failed) as usize + 1;
        eventually("a grandchild per run", || read(&pids).lines().count() == runs).await;
        let started: Vec<String> = read(&pids).lines().map(str::to_owned).collect();
        // Those of the timed-out runs are gone with their shell; the hanging one's still runs.
        eventually("the timed-out runs' grandchildren killed", || {
            started.iter().filter(|p| alive(p)).count() == 1
        })
        .await;
        shutdown.cancel();
        task.await.unwrap();
        eventually("the hanging run killed at shutdown", || !started.iter().any(|p| alive(p))).await;
    }

    #[test]
    fn backoff_doubles_from_a_quarter_second_up_to_thirty() {
        let waits: Vec<u128> = (0..9).map(|r| backoff(r).as_millis()).collect();
        assert_eq!(waits, [250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
