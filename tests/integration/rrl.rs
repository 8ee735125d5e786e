//! Response rate limiting in a real `spdu run`, set by `[dns]` in its config: a flood from one
//! prefix is held to the rate and slipped, dig at that prefix gets its answer over TCP after a
//! TC, another prefix is answered over UDP, and `/metrics` counts it. Block 127.0.175.0/24 (the
//! node, the flooder) and 127.0.176.1 (the other client).

use std::net::{Ipv4Addr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use spdu_cluster::POOL_NAME;

use crate::testing::{dig, start_cluster};

const RATE: u32 = 20;

/// The value of the series `series` in `/metrics` text (0 if absent).
fn counter(text: &str, series: &str) -> u64 {
    text.lines().find_map(|line| line.strip_prefix(series)).map_or(0, |value| value.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_section_limits_a_flooding_prefix_and_slips_to_tcp() {
    let cluster = start_cluster(1, 175, &format!("[dns]\nrrl_rate = {RATE}\nrrl_slip = 1\n")).await;
    let server = cluster.dns_addr(0);

    // 200 queries in windows of 20 from one socket in the node's /24: each window is sent at
    // once, so after the burst (one second's worth) they are over the rate; with slip 1 every
    // limited response comes back truncated, so every query gets exactly one reply.
    let (whole, slipped) = tokio::task::spawn_blocking(move || {
        let socket = UdpSocket::bind((Ipv4Addr::new(127, 0, 175, 99), 0)).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut query = Message::query();
        query.add_query(Query::query(Name::from_ascii(POOL_NAME).unwrap(), RecordType::A));
        let (mut whole, mut slipped) = (0u64, 0u64);
        let mut buf = [0u8; 2048];
        for window in 0..10u16 {
            for i in 0..20 {
                query.metadata.id = window * 20 + i;
                socket.send_to(&query.to_vec().unwrap(), server).unwrap();
            }
            for _ in 0..20 {
                let len = socket.recv(&mut buf).expect("a reply to every query (slip 1)");
                let reply = Message::from_vec(&buf[..len]).unwrap();
                match (reply.metadata.truncation, reply.answers.len()) {
                    (false, 1) => whole += 1,
                    (true, 0) => slipped += 1,
                    other => panic!("unexpected reply {other:?}: {reply:?}"),
                }
            }
        }
        (whole, slipped)
    })
    .await
    .unwrap();
    eprintln!("200 queries at once from one prefix, rate {RATE}: {whole} whole, {slipped} truncated");
    assert_eq!(whole + slipped, 200);
    // The burst, plus what the rate refills while the test runs (a busy machine may take a few
    // seconds for 200 exchanges: generous).
    assert!((u64::from(RATE)..=u64::from(RATE) * 6).contains(&whole), "{whole} whole answers");

    // dig at the flooded prefix while the flood goes on (so the bucket stays empty): truncated
    // over UDP, it retries over TCP and gets its answer. A dig may catch a token as the rate
    // refills the bucket and be answered over UDP: a few tries, each answered.
    let answer = cluster.ip(0).to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let flooding = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let socket = UdpSocket::bind((Ipv4Addr::new(127, 0, 175, 98), 0)).unwrap();
            let mut query = Message::query();
            query.add_query(Query::query(Name::from_ascii(POOL_NAME).unwrap(), RecordType::A));
            let bytes = query.to_vec().unwrap();
            // Bounded: 10 s at most, whatever happens to the test.
            for _ in 0..10_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                socket.send_to(&bytes, server).unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let mut truncated = 0;
    for _ in 0..5 {
        let flooded = dig(server, &["-b", "127.0.175.99", "+tries=1", POOL_NAME, "A"]);
        truncated += usize::from(flooded.contains("Truncated, retrying in TCP mode"));
        assert!(flooded.lines().any(|l| l.starts_with(POOL_NAME) && l.ends_with(&answer)), "{flooded}");
    }
    stop.store(true, Ordering::Relaxed);
    flooding.join().unwrap();
    assert!(truncated > 0, "no dig at the flooded prefix was truncated");
    // Another prefix is answered over UDP.
    let other = dig(server, &["-b", "127.0.176.1", "+notcp", "+short", POOL_NAME, "A"]);
    assert_eq!(other.trim(), answer);

    let metrics = spdu_cluster::http_get(&format!("http://{}/metrics", cluster.control_addr(0))).unwrap();
    let limited =
        counter(&metrics, r#"spdu_dns_rrl_limited_responses_total{kind="answer",action="slipped"} "#);
    assert!(limited > slipped, "the floods' and dig's truncated replies counted (> {slipped}):\n{metrics}");
    assert_eq!(
        counter(&metrics, r#"spdu_dns_rrl_limited_responses_total{kind="answer",action="dropped"} "#),
        0,
        "{metrics}"
    );
}
