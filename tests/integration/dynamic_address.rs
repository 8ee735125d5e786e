//! A site on a dynamic address, with real nodes on loopback (block 127.0.204–205.x): gamma
//! takes its service address from what its peers see (`addresses = "observed"`), and alpha and
//! beta list it with `gossip = "dynamic"`: nobody configures where gamma is. Gamma gossips from
//! 127.0.205.x while its DNS stays on 127.0.204.13, so the answered address can only have come
//! from the peers' reports.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use spdu_cluster::{LocalCluster, Ports};
use spdu_gossip::proto::Message;
use spdu_keys::{SecretKey, tls};

use crate::testing::{dig_pool, spdu, wait_until};

const CONVERGE: Duration = Duration::from_secs(20);
const GAMMA: usize = 2;

fn ip(third: u8, last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, third, last))
}

/// Alpha and beta (static, 127.0.204.`first` and the next) and gamma, gossiping from
/// `gamma_gossip`.
fn cluster(first: u8, gamma_gossip: IpAddr) -> LocalCluster {
    let ports = Ports::default();
    let cluster = LocalCluster::create(spdu(), 3, Ipv4Addr::new(127, 0, 204, first), ports, "").unwrap();
    let listed = format!("gossip = \"{}:{}\"", cluster.ip(GAMMA), ports.gossip);
    for i in 0..GAMMA {
        cluster
            .edit_config(i, |text| {
                assert!(text.contains(&listed), "{text}");
                text.replace(&listed, "gossip = \"dynamic\"\naddresses = [\"127.0.205.0/24\"]")
            })
            .unwrap();
    }
    move_gamma(&cluster, gamma_gossip);
    cluster
}

/// Gamma's config: its gossip socket at `to`, its service address observed.
fn move_gamma(cluster: &LocalCluster, to: IpAddr) {
    let port = Ports::default().gossip;
    cluster
        .edit_config(GAMMA, |text| {
            let node_end = text.find("[zone]").unwrap();
            let (node, rest) = text.split_at(node_end);
            let node: String = node
                .lines()
                .map(|l| match l {
                    l if l.starts_with("gossip = ") => format!("gossip = \"{to}:{port}\""),
                    l if l.starts_with("addresses = ") => "addresses = \"observed\"".to_owned(),
                    l => l.to_owned(),
                })
                .map(|l| l + "\n")
                .collect();
            node + rest
        })
        .unwrap();
}

fn expected(cluster: &LocalCluster, gamma: IpAddr) -> Vec<IpAddr> {
    let mut all = vec![cluster.ip(0), cluster.ip(1), gamma];
    all.sort();
    all
}

fn all_answer(cluster: &LocalCluster, want: &[IpAddr]) -> bool {
    (0..3).all(|i| dig_pool(cluster.dns_addr(i)) == want)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_is_answered_at_the_address_its_peers_see_and_follows_it_when_it_moves() {
    let first = ip(205, 13);
    let mut cluster = cluster(11, first);
    for i in 0..3 {
        cluster.start_site(i).unwrap();
    }
    cluster.wait_ready(CONVERGE).await.unwrap();

    // Nobody configured 127.0.205.13: alpha and beta accepted gamma's connections from it,
    // reported it, and gamma signed it once both agreed.
    let want = expected(&cluster, first);
    let took = wait_until(CONVERGE, "every site to answer gamma at its observed address", || {
        all_answer(&cluster, &want)
    });
    eprintln!("observed address in every answer after {took:?}");
    let view = spdu_cluster::fetch_view(cluster.control_addr(0)).unwrap();
    let signed = format!("\"observed\":\"{first}:{}\"", Ports::default().gossip);
    assert!(view.replace([' ', '\n'], "").contains(&signed), "alpha holds gamma's signed address: {view}");
    // Alpha dialled gamma there once gamma signed it (its connection is not only gamma's).
    let log = std::fs::read_to_string(cluster.log_path(0)).unwrap();
    assert!(log.contains("dynamic peer signed a new address: dialling it there"), "{log}");

    // The home server restarts on another address: the new one replaces the old everywhere.
    cluster.stop(GAMMA).unwrap();
    let moved = ip(205, 14);
    move_gamma(&cluster, moved);
    cluster.start_site(GAMMA).unwrap();
    cluster.wait_site_ready(GAMMA, CONVERGE).await.unwrap();
    let want = expected(&cluster, moved);
    let took =
        wait_until(CONVERGE, "every site to answer gamma at its new address", || all_answer(&cluster, &want));
    eprintln!("new address in every answer {took:?} after gamma was ready");
    for i in 0..3 {
        assert!(!dig_pool(cluster.dns_addr(i)).contains(&first), "the old address left site {i}'s answer");
    }
    // Nothing but the observed address ever carried it: gamma's DNS is still where it was.
    assert_eq!(cluster.dns_addr(GAMMA), SocketAddr::new(ip(204, 13), Ports::default().dns));
}

fn key_of(cluster: &LocalCluster, i: usize) -> SecretKey {
    SecretKey::load_file(&cluster.dir().join(format!("{}.key", cluster.name(i)))).expect("site key")
}

/// Gamma's view as `spdu peers --json` prints it, from site `i`.
fn view(cluster: &LocalCluster, i: usize) -> serde_json::Value {
    serde_json::from_str(&spdu_cluster::fetch_view(cluster.control_addr(i)).unwrap()).unwrap()
}

fn node_in<'a>(view: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    view["nodes"].as_array().unwrap().iter().find(|n| n["name"] == name).unwrap()
}

/// The test process plays beta (with beta's key; the real beta never starts) against gamma:
/// alive every 100 ms, so gamma counts it, and saying it sees gamma at a fake address. Alpha
/// reports the truth. One peer against one: gamma adopts nothing, and the fake address is in no
/// answer. When the liar reports the truth too, gamma adopts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_lying_peer_cannot_change_another_sites_address() {
    let real = SocketAddr::new(ip(205, 23), Ports::default().gossip);
    let fake = SocketAddr::new(ip(205, 99), Ports::default().gossip);
    let (alpha, beta) = (0, 1);
    let mut cluster = cluster(21, real.ip());
    cluster.start_site(alpha).unwrap();
    cluster.start_site(GAMMA).unwrap();
    cluster.wait_ready(CONVERGE).await.unwrap();

    let pinned = tls::PinnedKeys::new([key_of(&cluster, GAMMA).public()]);
    let config = tls::client_config(&key_of(&cluster, beta), pinned).unwrap();
    let mut endpoint = quinn::Endpoint::client(SocketAddr::new(ip(204, 99), 0)).unwrap();
    endpoint.set_default_client_config(config);
    let conn = endpoint.connect(real, "spdu").unwrap().await.expect("gamma accepts beta's key");
    let says = std::sync::Arc::new(std::sync::Mutex::new(fake));
    let liar = {
        let (conn, says) = (conn.clone(), says.clone());
        tokio::spawn(async move {
            for n in 0u32.. {
                let _ = conn.send_datagram(Message::Alive(0).encode().into());
                if n % 2 == 0 {
                    let at = *says.lock().unwrap();
                    let _ = conn.send_datagram(Message::Observed(at).encode().into());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    // The liar counts (gamma sees it reachable), for a few seconds of lying.
    wait_until(CONVERGE, "gamma to see the liar reachable", || {
        node_in(&view(&cluster, GAMMA), "beta")["probe"]["reachable"] == true
    });
    let lying = std::time::Instant::now();
    while lying.elapsed() < Duration::from_secs(3) {
        let gamma = view(&cluster, GAMMA);
        let observed = &node_in(&gamma, "gamma")["observation"]["observation"]["observed"];
        assert!(observed.is_null(), "gamma adopted {observed} on one report of two");
        for i in [alpha, GAMMA] {
            assert!(!dig_pool(cluster.dns_addr(i)).contains(&fake.ip()), "site {i} answers the fake address");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Two honest reports of two: adopted, and answered by alpha.
    *says.lock().unwrap() = real;
    wait_until(CONVERGE, "alpha to answer gamma at its real address", || {
        dig_pool(cluster.dns_addr(alpha)).contains(&real.ip())
    });
    let gamma = view(&cluster, GAMMA);
    let observed = &node_in(&gamma, "gamma")["observation"]["observation"]["observed"];
    assert_eq!(observed.as_str(), Some(real.to_string().as_str()));
    liar.abort();
}

/// Whether site `i`'s `/metrics` counted `n` successful reloads.
fn reloaded(cluster: &LocalCluster, i: usize, n: u64) -> bool {
    let text = spdu_cluster::http_get(&format!("http://{}/metrics", cluster.control_addr(i))).unwrap();
    text.lines().any(|l| l == format!("spdu_reloads_total{{result=\"ok\"}} {n}"))
}

fn sighup(cluster: &LocalCluster, i: usize) {
    let pid = cluster.pid(i).unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
}

/// Reloads switch a running site to `addresses = "observed"` and a running peer to
/// `gossip = "dynamic"`: the answers follow, nobody leaves them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_switches_to_observed_and_dynamic() {
    let ports = Ports::default();
    let mut cluster = LocalCluster::create(spdu(), 3, Ipv4Addr::new(127, 0, 204, 31), ports, "").unwrap();
    let gamma_gossip = format!("gossip = \"{}:{}\"", cluster.ip(GAMMA), ports.gossip);
    // Gamma is answered at a configured 127.0.204.34 at first, inside the peers' pins.
    for i in 0..GAMMA {
        let pinned = format!("{gamma_gossip}\naddresses = [\"127.0.204.0/24\"]");
        cluster.edit_config(i, |text| text.replace(&gamma_gossip, &pinned)).unwrap();
    }
    let listed = format!("addresses = [\"{}\"]", cluster.ip(GAMMA));
    cluster.edit_config(GAMMA, |text| text.replace(&listed, "addresses = [\"127.0.204.34\"]")).unwrap();
    for i in 0..3 {
        cluster.start_site(i).unwrap();
    }
    cluster.wait_ready(CONVERGE).await.unwrap();
    let configured = expected(&cluster, ip(204, 34));
    wait_until(CONVERGE, "gamma answered at its configured address", || all_answer(&cluster, &configured));

    // Gamma switches to the address its peers see (its gossip source, 127.0.204.33).
    cluster
        .edit_config(GAMMA, |text| text.replace("addresses = [\"127.0.204.34\"]", "addresses = \"observed\""))
        .unwrap();
    sighup(&cluster, GAMMA);
    wait_until(CONVERGE, "gamma's reload", || reloaded(&cluster, GAMMA, 1));
    let seen = expected(&cluster, cluster.ip(GAMMA));
    wait_until(CONVERGE, "gamma answered at its observed address", || all_answer(&cluster, &seen));

    // Alpha stops listing where gamma is: it keeps it, dialled at the address gamma signed.
    cluster.edit_config(0, |text| text.replace(&gamma_gossip, "gossip = \"dynamic\"")).unwrap();
    sighup(&cluster, 0);
    wait_until(CONVERGE, "alpha's reload", || reloaded(&cluster, 0, 1));
    let steady = std::time::Instant::now();
    while steady.elapsed() < Duration::from_secs(2) {
        assert!(all_answer(&cluster, &seen), "a site left an answer after alpha's reload");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let alpha = view(&cluster, 0);
    assert_eq!(node_in(&alpha, "gamma")["probe"]["reachable"], true);
}
