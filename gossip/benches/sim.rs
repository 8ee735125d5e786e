//! Scale benchmark on the simulator: convergence, detection, recovery and traffic per node at
//! 10 and 100 nodes (1000 with `SPDU_BENCH_SIM_1000=1`), with the default protocol timing, over
//! two kinds of links: the simulator's default (10 ms + 0–5 ms jitter, no loss) and 20–100 ms
//! (20 ms + 0–80 ms jitter, no loss: the latency range the targets are stated at).
//!
//! `cargo bench -p spdu-gossip --features sim --bench sim` prints, per kind of link, a table of
//! times and a table of traffic (one row per size), then detection under loss. Every time in
//! them is simulated (deterministic per seed) except `wall_s`, the real time the size took, and
//! `kev/s`, simulated events (deliveries, timers, checks) per real second over it; `rss_MB` is
//! the process's peak resident memory so far. Figures are the median over seeds with
//! [min–max]. Sizes bigger than `SPDU_BENCH_SIM_MAX` (default 1000) and seeds beyond
//! `SPDU_BENCH_SIM_SEEDS` (default 3 at 10 nodes, 1 above) are skipped.
//!
//! Per seed and size:
//! - cold start: every node's convergence time, when its answer came to hold every node for
//!   good ([`Sim::converged_at`]), as the p50 and p99 over nodes (nearest rank) and the last
//!   node's (`converge_*`);
//! - 10 s idle: what each node sends per second (`idle_*`, median node; `idle_max_B/s` the
//!   busiest node);
//! - one node crashed until every survivor has dropped it (`detect`), restarted 5 s after the
//!   crash until every answer holds it again (`recover`); what each survivor sent per second
//!   from the crash until then (`churn_*`, median node).
//!
//! 1000 nodes run in the 20–100 ms table only, with 2 s of idle and a restart 2 s after the
//! crash (a simulated second is ten million messages there).
//!
//! Traffic is given three ways: `B/s`, encoded frame bytes, as [`Message::encode`] makes them;
//! `msg/s`, messages; and `wire`, an estimate of what the network carries: the frame bytes plus
//! [`WIRE_OVERHEAD`] = 60 bytes per message, in bytes and in kbit/s (1 kbit = 1000 bits). The
//! 60 bytes are one QUIC datagram per message over IPv4: IPv4 header 20, UDP header 8, QUIC short
//! header 11 (flags 1, destination connection ID 8 as quinn issues them, packet number 2),
//! DATAGRAM frame header 3 (type 1, length varint 2) and AEAD tag 16: 58, rounded up to 60.
//! Not counted: IPv6 (20 more), ACK-only packets, frames too big for a datagram (sent on a
//! stream, a few bytes more) and connection handshakes.
//!
//! [`Message::encode`]: spdu_gossip::proto::Message::encode

use std::time::{Duration, Instant};

use spdu_gossip::sim::{Action, Link, Sim, SimConfig};

const IDLE: Duration = Duration::from_secs(10);
const RESTART_AFTER: Duration = Duration::from_secs(5);
const DEADLINE: Duration = Duration::from_secs(60);
const LOSSY_IDLE: Duration = Duration::from_secs(60);

/// Estimated bytes on the wire per message beyond its encoded frame (see the module docs).
const WIRE_OVERHEAD: f64 = 60.0;

/// What one node sends per second (encoded bytes, messages).
#[derive(Clone, Copy)]
struct Rate {
    bytes: f64,
    messages: f64,
}

impl Rate {
    /// Estimated bytes per second on the wire.
    fn wire(self) -> f64 {
        self.bytes + WIRE_OVERHEAD * self.messages
    }
}

/// Per-node sending rates over a window: each figure is the median node's (taken separately).
#[derive(Clone, Copy)]
struct Rates {
    median: Rate,
    median_wire: f64,
    max_bytes: f64,
}

struct Figures {
    converge_p50: Option<Duration>,
    converge_p99: Option<Duration>,
    converge_last: Option<Duration>,
    idle: Rates,
    detect: Option<Duration>,
    recover: Option<Duration>,
    churn: Rates,
    events: u64,
}

/// (bytes, messages) sent so far by each of `nodes`.
fn sent(sim: &Sim, nodes: &[usize]) -> Vec<(u64, u64)> {
    nodes.iter().map(|&i| sim.traffic(i).sent).map(|c| (c.bytes, c.messages)).collect()
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// Per-node rates between two snapshots.
fn rates(before: &[(u64, u64)], after: &[(u64, u64)], over: Duration) -> Rates {
    let per_node: Vec<Rate> = before
        .iter()
        .zip(after)
        .map(|(b, a)| Rate {
            bytes: (a.0 - b.0) as f64 / over.as_secs_f64(),
            messages: (a.1 - b.1) as f64 / over.as_secs_f64(),
        })
        .collect();
    let bytes = sorted(per_node.iter().map(|r| r.bytes).collect());
    Rates {
        median: Rate {
            bytes: median(&bytes),
            messages: median(&sorted(per_node.iter().map(|r| r.messages).collect())),
        },
        median_wire: median(&sorted(per_node.iter().map(|r| r.wire()).collect())),
        max_bytes: bytes.last().copied().unwrap_or(f64::NAN),
    }
}

fn median(sorted: &[f64]) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let m = sorted.len() / 2;
    if sorted.len() % 2 == 1 { sorted[m] } else { (sorted[m - 1] + sorted[m]) / 2.0 }
}

/// Nearest-rank percentile of per-node times; a node that never got there ranks last, and
/// `None` means the percentile falls on such a node.
fn node_percentile(times: &[Option<Duration>], p: f64) -> Option<Duration> {
    let mut v: Vec<Duration> = times.iter().map(|t| t.unwrap_or(Duration::MAX)).collect();
    v.sort();
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    let at = *v.get(rank.min(v.len()).checked_sub(1)?)?;
    (at != Duration::MAX).then_some(at)
}

/// At 1000 nodes a simulated second is ten million messages: shorter idle and restart windows
/// and an earlier give-up keep the run to minutes.
fn windows(n: usize) -> (Duration, Duration, Duration) {
    if n >= 1000 {
        (Duration::from_secs(2), Duration::from_secs(2), Duration::from_secs(10))
    } else {
        (IDLE, RESTART_AFTER, DEADLINE)
    }
}

fn one_run(n: usize, seed: u64, link: Link) -> Figures {
    let (idle_for, restart_after, deadline) = windows(n);
    let mut sim = Sim::new(n, SimConfig { seed, link, ..SimConfig::default() });
    sim.run_until_cond(deadline, Sim::converged);
    let per_node = sim.converged_at(Duration::ZERO);

    let all: Vec<usize> = (0..n).collect();
    let t0 = sim.now();
    let before = sent(&sim, &all);
    sim.run_for(idle_for);
    let idle = rates(&before, &sent(&sim, &all), sim.now() - t0);

    let x = n - 1;
    let survivors: Vec<usize> = (0..x).collect();
    let crash_at = sim.now();
    let before = sent(&sim, &survivors);
    sim.crash(x);
    sim.schedule(crash_at + restart_after, Action::Restart(x));
    let detect = sim
        .run_until_cond(crash_at + restart_after, |s| s.dropped_by_all(x, &survivors, crash_at).is_some())
        .map(|at| at - crash_at);
    sim.run_until(crash_at + restart_after);
    let restart_at = sim.now();
    let recover = sim.run_until_cond(restart_at + deadline, Sim::converged).map(|at| at - restart_at);
    let churn = rates(&before, &sent(&sim, &survivors), sim.now() - crash_at);

    Figures {
        converge_p50: node_percentile(&per_node, 50.0),
        converge_p99: node_percentile(&per_node, 99.0),
        converge_last: node_percentile(&per_node, 100.0),
        idle,
        detect,
        recover,
        churn,
        events: sim.events(),
    }
}

/// 10 % loss on every link of `n` nodes: false drops over `LOSSY_IDLE`, then the detection time
/// of a crash (and false drops of anyone else meanwhile).
fn lossy_run(n: usize, seed: u64) -> (Option<Duration>, usize) {
    let link = Link { loss: 0.10, ..Link::default() };
    let mut sim = Sim::new(n, SimConfig { seed, link, ..SimConfig::default() });
    sim.run_until_cond(DEADLINE, Sim::converged);
    let since = sim.now();
    sim.run_for(LOSSY_IDLE);
    let x = n - 1;
    let survivors: Vec<usize> = (0..x).collect();
    let crash_at = sim.now();
    sim.crash(x);
    let detect = sim
        .run_until_cond(crash_at + DEADLINE, |s| s.dropped_by_all(x, &survivors, crash_at).is_some())
        .map(|at| at - crash_at);
    let false_drops = sim.removals_since(since).filter(|r| r.dropped != x).count();
    (detect, false_drops)
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// "median [min–max]" of durations in ms; "never" counts runs that did not get there.
fn summary_ms(values: &[Option<Duration>]) -> String {
    let mut ms: Vec<f64> = values.iter().flatten().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let missing = values.len() - ms.len();
    let mut s = match (ms.first(), ms.last()) {
        (Some(one), _) if ms.len() == 1 => format!("{one:.0}"),
        (Some(lo), Some(hi)) => format!("{:.0} [{lo:.0}-{hi:.0}]", median(&ms)),
        _ => "-".to_owned(),
    };
    if missing > 0 {
        s.push_str(&format!(" ({missing} never)"));
    }
    s
}

/// "median [min–max]" of values, each formatted by `f`; the median alone for one value.
fn summary(values: &[f64], f: impl Fn(f64) -> String) -> String {
    let v = sorted(values.to_vec());
    match v.len() {
        0 => "-".to_owned(),
        1 => f(v[0]),
        _ => format!("{} [{}-{}]", f(median(&v)), f(v[0]), f(v[v.len() - 1])),
    }
}

fn kilo(x: f64) -> String {
    format!("{:.1}K", x / 1000.0)
}

fn whole(x: f64) -> String {
    format!("{x:.0}")
}

/// Bytes per second as kbit/s.
fn kbit(bytes_per_s: f64) -> String {
    format!("{:.1}", bytes_per_s * 8.0 / 1000.0)
}

/// The process's peak resident memory in MB (Linux; "-" elsewhere).
fn peak_rss_mb() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or_else(|| "-".to_owned(), |kb| format!("{:.0}", kb / 1000.0))
}

/// Runs every size over `link` and prints its times table, then its traffic table.
fn table(title: &str, link: Link, sizes: &[usize], seeds_for: impl Fn(usize) -> usize) {
    println!("{title}:");
    println!(
        "{:>5} {:>5} {:>17} {:>17} {:>17} {:>17} {:>17} {:>7} {:>6} {:>6}",
        "nodes",
        "seeds",
        "converge_p50_ms",
        "converge_p99_ms",
        "converge_last_ms",
        "detect_ms",
        "recover_ms",
        "wall_s",
        "kev/s",
        "rss_MB"
    );
    let mut all = Vec::new();
    for &n in sizes {
        let seeds = seeds_for(n);
        let started = Instant::now();
        let runs: Vec<Figures> = (0..seeds as u64).map(|s| one_run(n, 1000 + s, link)).collect();
        let wall = started.elapsed().as_secs_f64();
        let events: u64 = runs.iter().map(|r| r.events).sum();
        let ms = |f: fn(&Figures) -> Option<Duration>| summary_ms(&runs.iter().map(f).collect::<Vec<_>>());
        println!(
            "{:>5} {:>5} {:>17} {:>17} {:>17} {:>17} {:>17} {:>7.1} {:>6.0} {:>6}",
            n,
            seeds,
            ms(|r| r.converge_p50),
            ms(|r| r.converge_p99),
            ms(|r| r.converge_last),
            ms(|r| r.detect),
            ms(|r| r.recover),
            wall,
            events as f64 / wall / 1000.0,
            peak_rss_mb()
        );
        all.push((n, runs));
    }
    println!(
        "{:>5} {:>19} {:>16} {:>19} {:>19} {:>12} {:>19} {:>16} {:>19} {:>19}",
        "nodes",
        "idle_B/s/node",
        "idle_msg/s/node",
        "idle_wire_B/s/node",
        "idle_wire_kbit/s",
        "idle_max_B/s",
        "churn_B/s/node",
        "churn_msg/s/node",
        "churn_wire_B/s/node",
        "churn_wire_kbit/s"
    );
    for (n, runs) in &all {
        let pick = |f: fn(&Figures) -> f64| runs.iter().map(f).collect::<Vec<_>>();
        println!(
            "{:>5} {:>19} {:>16} {:>19} {:>19} {:>12} {:>19} {:>16} {:>19} {:>19}",
            n,
            summary(&pick(|r| r.idle.median.bytes), kilo),
            summary(&pick(|r| r.idle.median.messages), whole),
            summary(&pick(|r| r.idle.median_wire), kilo),
            summary(&pick(|r| r.idle.median_wire), kbit),
            kilo(median(&sorted(pick(|r| r.idle.max_bytes)))),
            summary(&pick(|r| r.churn.median.bytes), kilo),
            summary(&pick(|r| r.churn.median.messages), whole),
            summary(&pick(|r| r.churn.median_wire), kilo),
            summary(&pick(|r| r.churn.median_wire), kbit),
        );
    }
    println!();
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it as a quick check (10 nodes).
    let quick = !std::env::args().any(|a| a == "--bench");
    let max = env_usize("SPDU_BENCH_SIM_MAX").unwrap_or(1000);
    let mut sizes = vec![10, 100];
    if std::env::var_os("SPDU_BENCH_SIM_1000").is_some_and(|v| v == "1") {
        sizes.push(1000);
    }
    if quick {
        sizes = vec![10];
    }
    sizes.retain(|&n| n <= max);
    let seeds_for = |n: usize| {
        if quick { 1 } else { env_usize("SPDU_BENCH_SIM_SEEDS").unwrap_or(if n <= 10 { 3 } else { 1 }) }
    };

    // 1000 nodes only where the target is stated: 20-100 ms links.
    let small: Vec<usize> = sizes.iter().copied().filter(|&n| n < 1000).collect();
    table("Default links (10 ms + 0-5 ms jitter, no loss)", Link::default(), &small, seeds_for);
    let wide =
        Link { latency: Duration::from_millis(20), jitter: Duration::from_millis(80), ..Link::default() };
    table("20-100 ms links (20 ms + 0-80 ms jitter, no loss)", wide, &sizes, seeds_for);

    // Detection under loss, with many seeds for a p99.
    let lossy_seeds = if quick { 2 } else { env_usize("SPDU_BENCH_SIM_LOSSY_SEEDS").unwrap_or(20) };
    let started = Instant::now();
    let runs: Vec<(Option<Duration>, usize)> =
        (0..lossy_seeds as u64).map(|s| lossy_run(10, 2000 + s)).collect();
    let mut detect: Vec<f64> = runs.iter().filter_map(|r| r.0).map(|d| d.as_secs_f64() * 1000.0).collect();
    detect.sort_by(f64::total_cmp);
    let never = runs.len() - detect.len();
    let false_drops: usize = runs.iter().map(|r| r.1).sum();
    println!("10 nodes, 10% loss on every link, {lossy_seeds} seeds, {}s idle each:", LOSSY_IDLE.as_secs());
    println!(
        "  detect_ms p50 {:.0} p99 {:.0} max {:.0} (never: {never}); false drops: {false_drops}; wall {:.1}s",
        percentile(&detect, 50.0),
        percentile(&detect, 99.0),
        detect.last().copied().unwrap_or(f64::NAN),
        started.elapsed().as_secs_f64()
    );
}
