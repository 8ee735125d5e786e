//! The demo (`spdu-demo`): a site loss and recovery, live, on one machine, without root.
//!
//! Starts a [`LocalCluster`] (alpha, beta, gamma on 127.0.0.11-13 by default), shows what each
//! site's DNS answers and alpha's signed view, kills the last site with SIGKILL, prints the
//! answers every 250 ms until every survivor has dropped it (the detection time), restarts it
//! and prints until every site answers with all sites again (the recovery time). The children
//! are killed and the temporary directory removed on every exit path, Ctrl-C included.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;

use spdu_node::peers::{fetch_view, render_table};
use spdu_node::run::shutdown_signal;

use crate::{LocalCluster, POOL_NAME, Ports, query_addresses};

/// How often the demo asks every site.
const TICK: Duration = Duration::from_millis(250);
/// How long a phase may take before the demo gives up.
const PHASE_TIMEOUT: Duration = Duration::from_secs(30);

/// Options of `spdu-demo`.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Number of sites (1..=9).
    pub sites: usize,
    /// After the demo, leave the sites running until Ctrl-C.
    pub keep_running: bool,
    /// The first site's address.
    pub base_ip: Ipv4Addr,
    /// Ports of every site.
    pub ports: Ports,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self { sites: 3, keep_running: false, base_ip: Ipv4Addr::new(127, 0, 0, 11), ports: Ports::default() }
    }
}

/// Runs the demo with `binary` as the `spdu` executable for the sites.
pub async fn run_demo(binary: &Path, options: &DemoOptions) -> anyhow::Result<()> {
    if options.sites < 2 {
        bail!("--sites: the demo needs at least 2 sites to lose one");
    }
    let mut cluster = LocalCluster::create(binary, options.sites, options.base_ip, options.ports, "")?;
    println!("spdu-demo: {} sites, files in {}", options.sites, cluster.dir().display());
    let result = tokio::select! {
        result = script(&mut cluster, options) => result,
        signal = shutdown_signal() => {
            println!("\n{}: stopping", signal?);
            Ok(())
        }
    };
    println!("stopping all sites");
    cluster.stop_all();
    result
}

async fn script(cluster: &mut LocalCluster, options: &DemoOptions) -> anyhow::Result<()> {
    let n = cluster.len();
    for i in 0..n {
        cluster.start_site(i)?;
        println!(
            "  started {:<8} dns {}  gossip {}  control {}",
            cluster.name(i),
            cluster.dns_addr(i),
            cluster.gossip_addr(i),
            cluster.control_addr(i)
        );
    }
    cluster.wait_ready(Duration::from_secs(15)).await?;
    let everyone: Vec<IpAddr> = (0..n).map(|i| cluster.ip(i)).collect();
    let all: Vec<usize> = (0..n).collect();

    println!("\nwaiting until every site answers with every site…");
    let started = Instant::now();
    watch_until(cluster, &all, |answer| answer == everyone, false).await?;
    println!("converged after {:.2}s; {POOL_NAME} A at each site:", started.elapsed().as_secs_f64());
    print_answers(cluster, &all).await;

    println!("\n$ spdu peers --config {}", cluster.config_path(0).display());
    print_peers(cluster.control_addr(0)).await;

    let lost = n - 1;
    let survivors: Vec<usize> = (0..lost).collect();
    let lost_ip = cluster.ip(lost);
    println!("\nkilling {} (SIGKILL: the site is gone)…", cluster.name(lost));
    cluster.stop(lost)?;
    let killed = Instant::now();
    watch_until(cluster, &survivors, |answer| !answer.contains(&lost_ip), true).await?;
    println!(
        "detection: every survivor dropped {} after {:.2}s",
        cluster.name(lost),
        killed.elapsed().as_secs_f64()
    );

    println!("\nrestarting {}…", cluster.name(lost));
    cluster.start_site(lost)?;
    let restarted = Instant::now();
    watch_until(cluster, &all, |answer| answer == everyone, true).await?;
    println!(
        "recovery: every site answers with {} again after {:.2}s (process start included)",
        cluster.name(lost),
        restarted.elapsed().as_secs_f64()
    );

    println!("\n$ spdu peers --config {}", cluster.config_path(0).display());
    print_peers(cluster.control_addr(0)).await;

    if options.keep_running {
        println!("\nthe sites keep running; try:");
        println!("  dig @{} -p {} {POOL_NAME} A", cluster.ip(0), options.ports.dns);
        println!("  spdu peers --config {}", cluster.config_path(0).display());
        println!("logs: {}/*.log — Ctrl-C stops everything", cluster.dir().display());
        std::future::pending::<()>().await;
    }
    Ok(())
}

/// Asks `sites` every [`TICK`] until every answer satisfies `done`, printing each round if
/// `verbose`. Fails if a site's process exits or [`PHASE_TIMEOUT`] passes.
async fn watch_until(
    cluster: &mut LocalCluster,
    sites: &[usize],
    done: impl Fn(&[IpAddr]) -> bool,
    verbose: bool,
) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let tick = tokio::time::Instant::now() + TICK;
        let answers = ask(cluster, sites).await;
        if verbose {
            let line: Vec<String> =
                answers.iter().map(|(i, a)| format!("{}: {}", cluster.name(*i), show(a))).collect();
            println!("  +{:5.2}s  {}", start.elapsed().as_secs_f64(), line.join("   "));
        }
        if answers.iter().all(|(_, a)| a.as_ref().is_ok_and(|a| done(a))) {
            return Ok(());
        }
        for &i in sites {
            if !cluster.is_running(i) {
                bail!("{} exited; its log ends with:\n{}", cluster.name(i), cluster.log_tail(i, 15));
            }
        }
        if start.elapsed() > PHASE_TIMEOUT {
            bail!("no agreement after {PHASE_TIMEOUT:?}; logs are in {}", cluster.dir().display());
        }
        tokio::time::sleep_until(tick).await;
    }
}

async fn ask(cluster: &LocalCluster, sites: &[usize]) -> Vec<(usize, anyhow::Result<Vec<IpAddr>>)> {
    let mut queries = tokio::task::JoinSet::new();
    for &i in sites {
        let server: SocketAddr = cluster.dns_addr(i);
        queries.spawn(async move { (i, query_addresses(server, POOL_NAME).await) });
    }
    let mut answers: Vec<_> = queries.join_all().await;
    answers.sort_by_key(|(i, _)| *i);
    answers
}

async fn print_answers(cluster: &LocalCluster, sites: &[usize]) {
    for (i, answer) in ask(cluster, sites).await {
        println!("  {:<8} @{}  →  {}", cluster.name(i), cluster.dns_addr(i), show(&answer));
    }
}

fn show(answer: &anyhow::Result<Vec<IpAddr>>) -> String {
    match answer {
        Ok(addrs) if addrs.is_empty() => "(empty)".to_owned(),
        Ok(addrs) => addrs.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(" "),
        Err(_) => "(no answer)".to_owned(),
    }
}

async fn print_peers(control: SocketAddr) {
    match fetch_view(control).await.and_then(|json| render_table(&json)) {
        Ok(table) => print!("{table}"),
        Err(e) => println!("  (cannot show peers: {e:#})"),
    }
}
