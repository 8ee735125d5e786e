//! Scale benchmark on the simulator: convergence, detection, recovery and bandwidth per node at
//! 10 and 100 nodes (1000 with `SPDU_BENCH_SIM_1000=1`), with the default protocol timing over
//! the simulator's default links (10 ms ± 5 ms, no loss).
//!
//! `cargo bench -p spdu-gossip --features sim --bench sim` prints one table. Every time in it is
//! simulated (deterministic per seed) except `wall_s`, the real time the size took. Figures are
//! the median over seeds with [min–max]; bytes are encoded frame sizes, as the wire carries them
//! (QUIC and UDP/IP headers not included).
//!
//! Per seed and size: cold start until every answer holds every node (`converge`); 10 s idle
//! (`idle B/s/node`: bytes sent per node per second, median node, and the busiest node); one node
//! crashed until every survivor has dropped it (`detect`); the window from the crash until it is
//! back in every answer after its restart 5 s later (`churn B/s/node`); restart until every
//! answer holds it again (`recover`). Sizes bigger than `SPDU_BENCH_SIM_MAX` (default 1000) and
//! seeds beyond `SPDU_BENCH_SIM_SEEDS` (default 3 at 10 nodes, 1 above) are skipped.

use std::time::{Duration, Instant};

use spdu_gossip::sim::{Link, Sim, SimConfig};

const IDLE: Duration = Duration::from_secs(10);
const RESTART_AFTER: Duration = Duration::from_secs(5);
const DEADLINE: Duration = Duration::from_secs(60);
const LOSSY_IDLE: Duration = Duration::from_secs(60);

struct Figures {
    converge: Option<Duration>,
    idle_median: f64,
    idle_max: f64,
    detect: Option<Duration>,
    recover: Option<Duration>,
    churn_median: f64,
}

fn bytes_sent(sim: &Sim, nodes: &[usize]) -> Vec<u64> {
    nodes.iter().map(|&i| sim.traffic(i).sent.bytes).collect()
}

/// Per-node bytes per second between two snapshots, sorted.
fn rates(before: &[u64], after: &[u64], over: Duration) -> Vec<f64> {
    let mut r: Vec<f64> =
        before.iter().zip(after).map(|(b, a)| (a - b) as f64 / over.as_secs_f64()).collect();
    r.sort_by(f64::total_cmp);
    r
}

fn median(sorted: &[f64]) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let m = sorted.len() / 2;
    if sorted.len() % 2 == 1 { sorted[m] } else { (sorted[m - 1] + sorted[m]) / 2.0 }
}

fn one_run(n: usize, seed: u64) -> Figures {
    let mut sim = Sim::new(n, SimConfig { seed, ..SimConfig::default() });
    let converge = sim.run_until_cond(DEADLINE, Sim::converged);

    let all: Vec<usize> = (0..n).collect();
    let t0 = sim.now();
    let before = bytes_sent(&sim, &all);
    sim.run_for(IDLE);
    let idle = rates(&before, &bytes_sent(&sim, &all), sim.now() - t0);

    let x = n - 1;
    let survivors: Vec<usize> = (0..x).collect();
    let crash_at = sim.now();
    let before = bytes_sent(&sim, &survivors);
    sim.crash(x);
    sim.schedule(crash_at + RESTART_AFTER, spdu_gossip::sim::Action::Restart(x));
    let detect = sim
        .run_until_cond(crash_at + RESTART_AFTER, |s| s.dropped_by_all(x, &survivors, crash_at).is_some())
        .map(|at| at - crash_at);
    sim.run_until(crash_at + RESTART_AFTER);
    let restart_at = sim.now();
    let recover = sim.run_until_cond(restart_at + DEADLINE, Sim::converged).map(|at| at - restart_at);
    let churn = rates(&before, &bytes_sent(&sim, &survivors), sim.now() - crash_at);

    Figures {
        converge,
        idle_median: median(&idle),
        idle_max: idle.last().copied().unwrap_or(f64::NAN),
        detect,
        recover,
        churn_median: median(&churn),
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
        (Some(lo), Some(hi)) => format!("{:.0} [{lo:.0}-{hi:.0}]", median(&ms)),
        _ => "-".to_owned(),
    };
    if missing > 0 {
        s.push_str(&format!(" ({missing} never)"));
    }
    s
}

fn summary_bytes(values: &[f64]) -> String {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let k = |b: f64| format!("{:.1}K", b / 1000.0);
    format!("{} [{}-{}]", k(median(&v)), k(v[0]), k(v[v.len() - 1]))
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

    println!(
        "{:>5} {:>5} {:>16} {:>18} {:>14} {:>18} {:>16} {:>18} {:>7}",
        "nodes",
        "seeds",
        "converge_ms",
        "idle_B/s/node",
        "idle_max_B/s",
        "detect_ms",
        "recover_ms",
        "churn_B/s/node",
        "wall_s"
    );
    let lossy_seeds = if quick { 2 } else { env_usize("SPDU_BENCH_SIM_LOSSY_SEEDS").unwrap_or(20) };
    for n in sizes {
        let seeds =
            if quick { 1 } else { env_usize("SPDU_BENCH_SIM_SEEDS").unwrap_or(if n <= 10 { 3 } else { 1 }) };
        let started = Instant::now();
        let runs: Vec<Figures> = (0..seeds as u64).map(|s| one_run(n, 1000 + s)).collect();
        let wall = started.elapsed().as_secs_f64();
        let pick = |f: fn(&Figures) -> f64| runs.iter().map(f).collect::<Vec<_>>();
        println!(
            "{:>5} {:>5} {:>16} {:>18} {:>14} {:>18} {:>16} {:>18} {:>7.1}",
            n,
            seeds,
            summary_ms(&runs.iter().map(|r| r.converge).collect::<Vec<_>>()),
            summary_bytes(&pick(|r| r.idle_median)),
            summary_bytes(&pick(|r| r.idle_max)).split(' ').next().unwrap_or("-"),
            summary_ms(&runs.iter().map(|r| r.detect).collect::<Vec<_>>()),
            summary_ms(&runs.iter().map(|r| r.recover).collect::<Vec<_>>()),
            summary_bytes(&pick(|r| r.churn_median)),
            wall
        );
    }

    // Detection under loss, with many seeds for a p99.
    let started = Instant::now();
    let runs: Vec<(Option<Duration>, usize)> =
        (0..lossy_seeds as u64).map(|s| lossy_run(10, 2000 + s)).collect();
    let mut detect: Vec<f64> = runs.iter().filter_map(|r| r.0).map(|d| d.as_secs_f64() * 1000.0).collect();
    detect.sort_by(f64::total_cmp);
    let never = runs.len() - detect.len();
    let false_drops: usize = runs.iter().map(|r| r.1).sum();
    println!();
    println!("10 nodes, 10% loss on every link, {lossy_seeds} seeds, {}s idle each:", LOSSY_IDLE.as_secs());
    println!(
        "  detect_ms p50 {:.0} p99 {:.0} max {:.0} (never: {never}); false drops: {false_drops}; wall {:.1}s",
        percentile(&detect, 50.0),
        percentile(&detect, 99.0),
        detect.last().copied().unwrap_or(f64::NAN),
        started.elapsed().as_secs_f64()
    );
}
