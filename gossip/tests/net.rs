//! The QUIC driver on real loopback sockets: nodes pinned by key find each other, answer sets
//! converge, a stopped node is dropped, a stranger's key gets nothing in, what the node needs is
//! pushed on watch channels, and shutdown ends every task.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use spdu_gossip::net::{Bound, Membership, Reconfiguration, Settings};
use spdu_gossip::proto::{self, AnswerSet};
use spdu_keys::{PublicKey, SecretKey};
use tokio_util::sync::CancellationToken;

fn key(i: u8) -> SecretKey {
    SecretKey::from_bytes(&[i + 1; 32])
}

fn service_addr(i: u8) -> IpAddr {
    IpAddr::from([192, 0, 2, i + 1])
}

/// Node `j`'s roster entry, gossiping at `gossip`, its service address pinned.
fn member(j: u8, gossip: SocketAddr) -> proto::Member {
    let addresses = vec![proto::AddressPin::host(service_addr(j))];
    proto::Member { name: format!("n{j}"), key: key(j).public(), gossip: Some(gossip), addresses }
}

/// Binds nodes `0..n` on 127.0.0.1 port 0, each trusting `roster` (indexes).
fn bind_nodes(n: u8, roster: &[u8]) -> Vec<Bound> {
    bind_nodes_with(n, roster, |_| None)
}

/// [`bind_nodes`], node `i` advertising `check(i)`.
fn bind_nodes_with(n: u8, roster: &[u8], check: impl Fn(u8) -> Option<proto::ServiceCheck>) -> Vec<Bound> {
    // Bind first to learn the ports, then rebuild with the full roster.
    let probe: Vec<SocketAddr> =
        (0..n).map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap()).collect();
    (0..n)
        .map(|i| {
            let peers = roster
                .iter()
                .filter(|j| **j != i && **j < n)
                .map(|j| member(*j, probe[*j as usize]))
                .collect();
            Membership::bind(Settings {
                key: key(i),
                name: format!("n{i}"),
                cluster: "pool.example.test".into(),
                incarnation: 1,
                listen: probe[i as usize],
                addresses: vec![service_addr(i)],
                peers,
                protocol: proto::Config::default(),
                service_check: check(i),
                observed_address: false,
            })
            .unwrap()
        })
        .collect()
}

/// Binds node `i` on 127.0.0.1 port 0, trusting every node of `nodes` (which do not know it).
fn bind_outsider(i: u8, nodes: &[Bound]) -> Bound {
    Membership::bind(Settings {
        key: key(i),
        name: format!("n{i}"),
        cluster: "pool.example.test".into(),
        incarnation: 1,
        listen: "127.0.0.1:0".parse().unwrap(),
        addresses: vec![service_addr(i)],
        peers: nodes.iter().zip(0u8..).map(|(n, j)| member(j, n.local_addr())).collect(),
        protocol: proto::Config::default(),
        service_check: None,
        observed_address: false,
    })
    .unwrap()
}

async fn wait_for(m: &Membership, what: &str, pred: impl Fn(&AnswerSet) -> bool) {
    let mut rx = m.answers();
    let wait = rx.wait_for(|a| pred(a));
    if tokio::time::timeout(Duration::from_secs(10), wait).await.is_err() {
        panic!("timed out waiting for {what}; answer is {:?}", m.answers().borrow());
    }
}

fn has(a: &AnswerSet, members: &[u8]) -> bool {
    let mut want: Vec<IpAddr> = members.iter().map(|i| service_addr(*i)).collect();
    let mut got = a.addresses.clone();
    want.sort();
    got.sort();
    want == got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_converge_and_drop_a_stopped_one() {
    let nodes = bind_nodes(3, &[0, 1, 2]);
    let handles: Vec<Membership> = nodes.iter().map(Bound::membership).collect();
    let tokens: Vec<CancellationToken> = (0..3).map(|_| CancellationToken::new()).collect();
    let mut tasks = Vec::new();
    for (node, token) in nodes.into_iter().zip(&tokens) {
        tasks.push(tokio::spawn(node.run(token.clone())));
    }
    for m in &handles {
        wait_for(m, "all three", |a| has(a, &[0, 1, 2])).await;
    }
    let view = handles[0].snapshot().await.unwrap();
    assert_eq!(view.nodes.len(), 3);
    for node in &view.nodes {
        let obs = node.observation.as_ref().expect("every node's observation is in the view");
        assert!(obs.fresh);
        obs.signed.verify("pool.example.test", |_| true).expect("signature verifies");
    }

    tokens[2].cancel();
    tasks.pop().unwrap().await.unwrap();
    for m in &handles[..2] {
        wait_for(m, "survivors only", |a| has(a, &[0, 1])).await;
    }
    for t in &tokens[..2] {
        t.cancel();
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(handles[0].snapshot().await.is_none(), "a stopped node has no view");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_is_refused_and_never_appears() {
    // Nodes 0 and 1 trust each other. Node 2 trusts both, but nobody trusts node 2.
    let mut nodes = bind_nodes(2, &[0, 1]);
    let stranger = bind_outsider(2, &nodes);
    nodes.push(stranger);
    let handles: Vec<Membership> = nodes.iter().map(Bound::membership).collect();
    let token = CancellationToken::new();
    let tasks: Vec<_> = nodes.into_iter().map(|n| tokio::spawn(n.run(token.clone()))).collect();
    for m in &handles[..2] {
        wait_for(m, "the two roster members", |a| has(a, &[0, 1])).await;
    }
    // Give the stranger time to knock repeatedly.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stranger_key: PublicKey = key(2).public();
    for m in &handles[..2] {
        assert!(m.metrics().handshakes_refused() > 0, "the stranger's handshakes were refused");
        let view = m.snapshot().await.unwrap();
        assert!(view.nodes.iter().all(|n| n.key != stranger_key));
        assert!(has(&view.answer, &[0, 1]));
    }
    let stranger_view = handles[2].snapshot().await.unwrap();
    assert!(
        stranger_view.nodes.iter().filter(|n| !n.is_self).all(|n| n.observation.is_none()),
        "the stranger learned nothing"
    );
    token.cancel();
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_targets_incarnation_and_liveness_are_pushed_and_shutdown_ends_every_task() {
    let nodes = bind_nodes_with(2, &[0, 1], |i| (i == 1).then_some(proto::ServiceCheck::Tcp { port: 9 }));
    let handles: Vec<Membership> = nodes.iter().map(Bound::membership).collect();
    assert!(!handles[0].is_alive(), "not running yet");
    let token = CancellationToken::new();
    let tasks: Vec<_> = nodes.into_iter().map(|n| tokio::spawn(n.run(token.clone()))).collect();

    // Node 1 advertises a check: node 0 is told to probe it at its pinned address, unasked (and
    // answers with it only once a probe passes, which nothing runs here).
    let mut targets = handles[0].probe_targets();
    let wait = targets.wait_for(|t| t.iter().any(|t| t.peer == key(1).public() && t.addr == service_addr(1)));
    tokio::time::timeout(Duration::from_secs(10), wait).await.expect("probe target pushed").unwrap();
    assert!(handles[1].probe_targets().borrow().is_empty(), "node 0 advertises nothing");
    assert_eq!(*handles[0].incarnation().borrow(), 1);
    assert!(handles.iter().all(Membership::is_alive));

    // Shutdown: every task (dialers, acceptor, handshakes, readers, writers) ends promptly.
    token.cancel();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(5), t).await.expect("run ends after shutdown").unwrap();
    }
    assert!(handles.iter().all(|m| !m.is_alive()), "a stopped node is not alive");
}

/// Node `i`'s reload to a roster of `roster` (indexes, `addrs` their gossip addresses).
fn reload_to(i: u8, roster: &[u8], addrs: &[SocketAddr]) -> Reconfiguration {
    Reconfiguration {
        peers: roster.iter().filter(|j| **j != i).map(|j| member(*j, addrs[*j as usize])).collect(),
        protocol: proto::Config::default(),
        addresses: vec![service_addr(i)],
        service_check: None,
        self_check: false,
        observed_address: false,
    }
}

/// Every answer `m` publishes until `stop`, for a check that none lacked what it should hold.
fn record_answers(m: &Membership, stop: CancellationToken) -> tokio::task::JoinHandle<Vec<AnswerSet>> {
    let mut rx = m.answers();
    tokio::spawn(async move {
        let mut seen = vec![rx.borrow_and_update().clone()];
        loop {
            tokio::select! {
                () = stop.cancelled() => return seen,
                changed = rx.changed() => if changed.is_err() { return seen },
            }
            seen.push(rx.borrow_and_update().clone());
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_a_member_without_a_gap_and_removes_one_for_good() {
    // Nodes 0 and 1 know each other; node 2 knows both, but nobody knows node 2 yet.
    let mut nodes = bind_nodes(2, &[0, 1]);
    let third = bind_outsider(2, &nodes);
    nodes.push(third);
    let addrs: Vec<SocketAddr> = nodes.iter().map(Bound::local_addr).collect();
    let handles: Vec<Membership> = nodes.iter().map(Bound::membership).collect();
    let token = CancellationToken::new();
    let tasks: Vec<_> = nodes.into_iter().map(|n| tokio::spawn(n.run(token.clone()))).collect();
    for m in &handles[..2] {
        wait_for(m, "the two roster members", |a| has(a, &[0, 1])).await;
    }
    let refused_before = handles[0].metrics().handshakes_refused();
    assert!(refused_before > 0, "node 2 knocked and was refused");

    // Both reload with node 2 added: it is dialled and accepted, and enters both answers;
    // meanwhile neither answer ever lacks the other (no gap).
    let stop = CancellationToken::new();
    let recorders: Vec<_> = handles[..2].iter().map(|m| record_answers(m, stop.clone())).collect();
    for i in 0..2u8 {
        let summary = handles[i as usize].reconfigure(reload_to(i, &[0, 1, 2], &addrs)).await.unwrap();
        assert_eq!(summary.added, vec![key(2).public()]);
        assert!(summary.removed.is_empty());
    }
    for m in &handles {
        wait_for(m, "all three", |a| has(a, &[0, 1, 2])).await;
    }
    stop.cancel();
    for recorder in recorders {
        for answer in recorder.await.unwrap() {
            assert!(has(&answer, &[0, 1]) || has(&answer, &[0, 1, 2]), "a gap: {answer:?}");
        }
    }
    let view = handles[0].snapshot().await.unwrap();
    assert_eq!(view.nodes.len(), 3);
    assert!(view.nodes.iter().all(|n| n.observation.as_ref().is_some_and(|o| o.fresh)));

    // Node 0 reloads without node 2: node 2's connections to it are closed and its handshakes
    // refused from then on; node 0 answers without it for good.
    let summary = handles[0].reconfigure(reload_to(0, &[0, 1], &addrs)).await.unwrap();
    assert_eq!(summary.removed, vec![key(2).public()]);
    wait_for(&handles[0], "node 0 without node 2", |a| has(a, &[0, 1])).await;
    let refused = handles[0].metrics().handshakes_refused();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while handles[0].metrics().handshakes_refused() == refused {
        assert!(tokio::time::Instant::now() < deadline, "node 2's redials were never refused");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(handles[0].metrics().connections_open(), 2, "only node 1's two connections are left");
    let view = handles[0].snapshot().await.unwrap();
    assert!(view.nodes.iter().all(|n| n.key != key(2).public()), "node 2 is gone from the view");
    // Node 2 can no longer reach node 0 at all.
    let mut rx = handles[2].answers();
    let lost = rx.wait_for(|a| !a.addresses.contains(&service_addr(0)));
    tokio::time::timeout(Duration::from_secs(10), lost).await.expect("node 2 drops node 0").unwrap();

    token.cancel();
    for t in tasks {
        t.await.unwrap();
    }
}
