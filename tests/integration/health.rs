//! Service health end to end: real `spdu` processes check real HTTP services on loopback; a
//! site whose service stops leaves every site's DNS answers and comes back with it.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use spdu_cluster::{LocalCluster, Ports};
use tokio::task::JoinHandle;

use crate::testing::{dig_pool, http_service, ips, run_spdu, spdu, wait_until};

const CONVERGE: Duration = Duration::from_secs(15);
/// The services' port on every site's address.
const SERVICE_PORT: u16 = 18080;

/// `n` sites at 127.0.`block`.11…, each with `[health]` from `health(i)`, all started and ready.
async fn cluster_with_health(n: usize, block: u8, health: impl Fn(usize) -> String) -> LocalCluster {
    let base = Ipv4Addr::new(127, 0, block, 11);
    let mut cluster = LocalCluster::create(spdu(), n, base, Ports::default(), "").expect("cluster config");
    for i in 0..n {
        let path = cluster.config_path(i).to_owned();
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(&health(i));
        std::fs::write(&path, text).unwrap();
        let check = run_spdu(&["check", "--config", path.to_str().unwrap()]);
        assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
        cluster.start_site(i).expect("site starts");
    }
    cluster.wait_ready(Duration::from_secs(20)).await.expect("all sites ready");
    cluster
}

fn service_addr(cluster: &LocalCluster, i: usize, port: u16) -> SocketAddr {
    SocketAddr::new(cluster.ip(i), port)
}

const HTTP_CHECK: &str =
    "\n[health]\ncheck = \"http\"\nport = 18080\npath = \"/healthz\"\nexpect_body = \"ok\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_service_leaves_every_answer_and_returns() {
    let cluster = cluster_with_health(3, 21, |_| HTTP_CHECK.to_owned()).await;
    let mut services: Vec<JoinHandle<()>> =
        (0..3).map(|i| http_service(service_addr(&cluster, i, SERVICE_PORT), Duration::ZERO)).collect();
    let all = ips(&cluster, &[0, 1, 2]);
    wait_until(CONVERGE, "every site to answer with all three", || {
        (0..3).all(|i| dig_pool(cluster.dns_addr(i)) == all)
    });

    // gamma's service stops; gamma itself keeps running.
    services[2].abort();
    let survivors = ips(&cluster, &[0, 1]);
    let withdraw = wait_until(CONVERGE, "every site to drop the dead service", || {
        (0..3).all(|i| dig_pool(cluster.dns_addr(i)) == survivors)
    });
    eprintln!("dead service dropped by every site (itself included) after {withdraw:?}");

    // It stays out while the service is down.
    std::thread::sleep(Duration::from_secs(1));
    for i in 0..3 {
        assert_eq!(dig_pool(cluster.dns_addr(i)), survivors, "site {i}");
    }
    let peers = run_spdu(&["peers", "--config", cluster.config_path(0).to_str().unwrap()]);
    let table = String::from_utf8_lossy(&peers.stdout);
    eprintln!("{table}");
    let gamma =
        table.lines().find(|l| l.trim_start().starts_with("gamma") && l.contains("self")).unwrap_or("");
    assert!(gamma.contains("unhealthy"), "gamma's own verdict shown: {table}");

    services[2] = http_service(service_addr(&cluster, 2, SERVICE_PORT), Duration::ZERO);
    let back = wait_until(CONVERGE, "the service to return everywhere", || {
        (0..3).all(|i| dig_pool(cluster.dns_addr(i)) == all)
    });
    eprintln!("recovered service back everywhere after {back:?}");
    services.iter().for_each(JoinHandle::abort);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_probes_catch_what_a_site_misses_about_itself() {
    // gamma's own check looks at a side port that stays up; its peers probe the advertised
    // service on the real port.
    const SIDE_PORT: u16 = 18081;
    let cluster = cluster_with_health(3, 22, |i| {
        let mut text = HTTP_CHECK.to_owned();
        if i == 2 {
            text.push_str(&format!("address = \"127.0.22.13:{SIDE_PORT}\"\n"));
        }
        text
    })
    .await;
    let mut services: Vec<JoinHandle<()>> =
        (0..3).map(|i| http_service(service_addr(&cluster, i, SERVICE_PORT), Duration::ZERO)).collect();
    services.push(http_service(service_addr(&cluster, 2, SIDE_PORT), Duration::ZERO));
    let all = ips(&cluster, &[0, 1, 2]);
    wait_until(CONVERGE, "every site to answer with all three", || {
        (0..3).all(|i| dig_pool(cluster.dns_addr(i)) == all)
    });

    services[2].abort();
    let survivors = ips(&cluster, &[0, 1]);
    let withdraw = wait_until(CONVERGE, "alpha and beta to drop gamma", || {
        (0..2).all(|i| dig_pool(cluster.dns_addr(i)) == survivors)
    });
    eprintln!("service dead behind a passing self-check dropped by its peers after {withdraw:?}");
    // gamma believes its own check (rule 1 of the answer rule).
    assert!(dig_pool(cluster.dns_addr(2)).contains(&cluster.ip(2)));

    services[2] = http_service(service_addr(&cluster, 2, SERVICE_PORT), Duration::ZERO);
    let back =
        wait_until(CONVERGE, "gamma to return", || (0..3).all(|i| dig_pool(cluster.dns_addr(i)) == all));
    eprintln!("service back at its peers after {back:?}");
    services.iter().for_each(JoinHandle::abort);
}
