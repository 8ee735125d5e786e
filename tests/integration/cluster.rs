//! Three real nodes on loopback: failover by DNS end to end, the signed view, and strangers kept
//! out.

use std::time::Duration;

use spdu_cluster::{POOL_NAME, ZONE_ORIGIN};
use spdu_gossip::proto::SignedObservation;
use spdu_keys::PublicKey;

use crate::testing::{dig, dig_pool, ips, run_spdu, spdu, start_cluster, wait_until};

const CONVERGE: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sites_fail_over_and_come_back() {
    let mut cluster = start_cluster(3, 1, "").await;
    let all = ips(&cluster, &[0, 1, 2]);
    for i in 0..3 {
        wait_until(CONVERGE, "every site to answer with all three", || dig_pool(cluster.dns_addr(i)) == all);
    }

    // Site loss: the survivors drop gamma; each keeps answering for itself and the other.
    cluster.stop(2).unwrap();
    let survivors = ips(&cluster, &[0, 1]);
    let detect = wait_until(CONVERGE, "survivors to drop the stopped site", || {
        (0..2).all(|i| dig_pool(cluster.dns_addr(i)) == survivors)
    });
    eprintln!("stopped site dropped by every survivor after {detect:?}");

    // It stays dropped (no flapping back while it is down).
    std::thread::sleep(Duration::from_secs(1));
    for i in 0..2 {
        assert_eq!(dig_pool(cluster.dns_addr(i)), survivors);
    }

    // Restart with the same key: it comes back everywhere, with a newer incarnation.
    cluster.restart(2).unwrap();
    cluster.wait_site_ready(2, Duration::from_secs(20)).await.unwrap();
    let back = wait_until(CONVERGE, "the restarted site to return everywhere", || {
        (0..3).all(|i| dig_pool(cluster.dns_addr(i)) == all)
    });
    eprintln!("restarted site back everywhere after {back:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_answers_are_right_for_a_real_client() {
    let cluster = start_cluster(2, 2, "").await;
    let server = cluster.dns_addr(0);
    let all = ips(&cluster, &[0, 1]);
    wait_until(CONVERGE, "both sites in the answer", || dig_pool(server) == all);

    let a = dig(server, &["+norec", POOL_NAME, "A"]);
    assert!(a.contains("status: NOERROR") && a.contains(" aa"), "{a}");
    assert!(a.contains(&format!("{POOL_NAME}.\t5\tIN\tA\t{}", cluster.ip(1))), "TTL 5 from config: {a}");

    let soa = dig(server, &["+norec", ZONE_ORIGIN, "SOA"]);
    assert!(soa.contains("status: NOERROR") && soa.contains(" aa"), "{soa}");
    assert!(soa.contains(&format!("hostmaster.{ZONE_ORIGIN}.")), "{soa}");

    let ns = dig(server, &["+short", ZONE_ORIGIN, "NS"]);
    let mut ns: Vec<&str> = ns.lines().collect();
    ns.sort();
    assert_eq!(ns, ["alpha.example.test.", "beta.example.test."]);

    let missing = dig(server, &["+norec", &format!("nope.{ZONE_ORIGIN}"), "A"]);
    assert!(missing.contains("status: NXDOMAIN") && missing.contains(" aa"), "{missing}");
    assert!(
        missing.contains("AUTHORITY: 1") && missing.contains("SOA"),
        "negative answers carry the SOA: {missing}"
    );

    let nodata = dig(server, &["+norec", POOL_NAME, "TXT"]);
    assert!(nodata.contains("status: NOERROR") && nodata.contains("ANSWER: 0"), "{nodata}");

    let outside = dig(server, &["+norec", "www.example.org", "A"]);
    assert!(outside.contains("status: REFUSED"), "{outside}");

    let upper = dig(server, &["+short", &POOL_NAME.to_uppercase(), "A"]);
    assert_eq!(upper.lines().count(), 2, "names are case-insensitive: {upper}");

    let tcp = dig(server, &["+tcp", "+short", POOL_NAME, "A"]);
    assert_eq!(tcp.lines().count(), 2, "TCP answers too: {tcp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_shows_the_signed_view() {
    let cluster = start_cluster(3, 3, "").await;
    let all = ips(&cluster, &[0, 1, 2]);
    wait_until(CONVERGE, "full answer", || dig_pool(cluster.dns_addr(0)) == all);
    let config = cluster.config_path(0).to_str().unwrap().to_owned();

    let table = run_spdu(&["peers", "--config", &config]);
    assert!(table.status.success(), "{}", String::from_utf8_lossy(&table.stderr));
    let table = String::from_utf8(table.stdout).unwrap();
    for name in ["alpha", "beta", "gamma"] {
        assert!(table.contains(name), "{name} missing from:\n{table}");
    }
    assert!(table.contains("2/2"), "each peer is seen by both live observers other than itself:\n{table}");

    let json = run_spdu(&["peers", "--config", &config, "--json"]);
    assert!(json.status.success());
    let view: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let nodes = view["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    for node in nodes {
        assert_eq!(node["in_answer"], true, "{node}");
        // The signed observation verifies independently with the node's public key.
        let key: PublicKey = node["key"].as_str().unwrap().parse().unwrap();
        let signed: SignedObservation =
            serde_json::from_value(node["observation"]["signed"].clone()).unwrap();
        let obs = signed.verify(ZONE_ORIGIN, |k| *k == key).expect("signature verifies");
        assert_eq!(obs.observer, key);
        assert!(obs.incarnation > 0 && obs.seq > 0);
        // A forged copy does not.
        let mut forged = signed.clone();
        let last = forged.body.len() - 1;
        forged.body[last] ^= 1;
        assert!(forged.verify(ZONE_ORIGIN, |k| *k == key).is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_outside_the_roster_gets_nothing_in() {
    let mut cluster = start_cluster(2, 4, "").await;
    let all = ips(&cluster, &[0, 1]);
    wait_until(CONVERGE, "both sites in the answer", || dig_pool(cluster.dns_addr(0)) == all);

    // A stranger with its own key that lists the cluster's real members as its peers.
    let dir = cluster.dir().to_owned();
    let stranger_key = dir.join("stranger.key");
    let out = run_spdu(&["keygen", "--out", stranger_key.to_str().unwrap()]);
    assert!(out.status.success());
    let stranger_pub = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let mut peers = String::new();
    for i in 0..2 {
        let key =
            run_spdu(&["pubkey", "--key", dir.join(format!("{}.key", cluster.name(i))).to_str().unwrap()]);
        let key = String::from_utf8(key.stdout).unwrap();
        peers.push_str(&format!(
            "\n[[peers]]\nname = \"{}\"\nkey = \"{}\"\ngossip = \"{}\"\n",
            cluster.name(i),
            key.trim(),
            cluster.gossip_addr(i)
        ));
    }
    let config = dir.join("stranger.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nname = \"stranger\"\nkey = \"stranger.key\"\ngossip = \"127.0.4.99:17946\"\n\
             dns = [\"127.0.4.99:15353\"]\ncontrol = \"127.0.4.99:17947\"\naddresses = [\"127.0.4.99\"]\n\n\
             [zone]\norigin = \"{ZONE_ORIGIN}\"\nnames = [\"api\"]\nttl = 5\nnameservers = [\"alpha.example.test\"]\n{peers}"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("stranger.log")).unwrap();
    let mut stranger = std::process::Command::new(spdu())
        .args(["run", "--config", config.to_str().unwrap()])
        .stderr(log)
        .spawn()
        .unwrap();

    // Let it knock for a while, then look at what the members say.
    std::thread::sleep(Duration::from_secs(3));
    let metrics = spdu_cluster::http_get(&format!("http://{}/metrics", cluster.control_addr(0))).unwrap();
    let _ = stranger.kill();
    let _ = stranger.wait();
    let refused: f64 = metrics
        .lines()
        .find(|l| l.starts_with("spdu_gossip_handshakes_refused_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no refused-handshake counter in:\n{metrics}"));
    assert!(refused >= 1.0, "the stranger's handshakes were refused and counted:\n{metrics}");

    for i in 0..2 {
        let json = run_spdu(&["peers", "--config", cluster.config_path(i).to_str().unwrap(), "--json"]);
        let text = String::from_utf8(json.stdout).unwrap();
        assert!(!text.contains(&stranger_pub), "the stranger's key appears in {}'s view", cluster.name(i));
        assert_eq!(dig_pool(cluster.dns_addr(i)), all, "answers unchanged");
    }
    cluster.stop_all();
}
