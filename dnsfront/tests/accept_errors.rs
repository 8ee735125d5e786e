//! The TCP accept loop out of file descriptors (EMFILE): it pauses instead of spinning, UDP
//! keeps answering, and TCP recovers when descriptors are free again.
//!
//! In a test binary of its own: it lowers this process's soft open-file limit (with `prlimit
//! --pid`, util-linux) below the descriptors already open, which would break any test running
//! beside it.

mod testing;

use std::{
    io::Write,
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::Duration,
};

use hickory_proto::{op::Message, rr::RecordType};
use prometheus_client::registry::Registry;
use spdu_dnsfront::{AnswerPublisher, DnsMetrics, DnsServer, PoolAnswers, TcpLimits};
use testing::{TIMEOUT, addrs, query, zone};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
    time::timeout,
};
use tokio_util::sync::CancellationToken;

const API: &str = "api.pool.example.test.";

/// Sets this process's soft limit on open files (the hard limit stays).
fn set_soft_nofile(soft: u64) {
    let status = Command::new("prlimit")
        .args(["--pid", &std::process::id().to_string(), &format!("--nofile={soft}:")])
        .status()
        .unwrap_or_else(|e| panic!("prlimit is needed for this test (util-linux): {e}"));
    assert!(status.success(), "prlimit failed");
}

/// A shell, started while descriptors are plenty, that sets the soft limit back to `soft` when
/// told to: out of descriptors, this process could not start one.
fn restorer(soft: u64) -> Child {
    Command::new("sh")
        .args(["-c", &format!("read line && prlimit --pid {} --nofile={soft}:", std::process::id())])
        .stdin(Stdio::piped())
        .spawn()
        .expect("sh")
}

fn restore(mut restorer: Child) {
    restorer.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(restorer.wait().unwrap().success(), "prlimit failed");
}

fn soft_nofile() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    line["Max open files".len()..].split_whitespace().next().unwrap().parse().unwrap()
}

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").unwrap().count() as u64
}

fn metric(registry: &Registry, series: &str) -> u64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0, |v| v.trim().parse().unwrap())
}

async fn ask_tcp(stream: &mut TcpStream, message: &Message) -> Message {
    let exchange = async {
        let bytes = message.to_vec().unwrap();
        let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        stream.write_all(&framed).await.unwrap();
        let len = stream.read_u16().await.unwrap();
        let mut buf = vec![0; usize::from(len)];
        stream.read_exact(&mut buf).await.unwrap();
        Message::from_vec(&buf).unwrap()
    };
    timeout(Duration::from_secs(5), exchange).await.expect("a TCP answer in time")
}

async fn ask_udp(socket: &UdpSocket, server: SocketAddr) -> Message {
    let bytes = query(API, RecordType::A).to_vec().unwrap();
    socket.send_to(&bytes, server).await.unwrap();
    let mut buf = vec![0; 4096];
    let (len, _) = timeout(TIMEOUT, socket.recv_from(&mut buf)).await.expect("a UDP answer in time").unwrap();
    Message::from_vec(&buf[..len]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_the_accept_loop_pauses_and_recovers() {
    let original = soft_nofile();
    let metrics = DnsMetrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let answers = AnswerPublisher::new(
        &zone(&["api"]),
        PoolAnswers::same_for_all(1, 1, 5, addrs(&["192.0.2.1"])),
        metrics,
    )
    .unwrap();
    // All from one address: the per-source limit must not be what refuses them.
    let limits = TcpLimits { max_per_source: 256, ..TcpLimits::default() };
    let server =
        DnsServer::bind(&answers, &["127.0.0.1:0".parse().unwrap()]).await.unwrap().with_tcp_limits(limits);
    let addr = server.local_addrs()[0];
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();

    // Connections wait in the listen queue while the server does not run yet.
    let mut waiting = Vec::new();
    for _ in 0..20 {
        waiting.push(TcpStream::connect(addr).await.unwrap());
    }
    // Room for a few more descriptors, not for 20 accepted connections.
    let restorer = restorer(original);
    set_soft_nofile(open_fds() + 8);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.run(shutdown.clone()));

    // UDP is answered while TCP `accept` keeps failing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ask_udp(&udp, addr).await.answers.len(), 1);
    let errors_before = metric(&registry, "dns_tcp_accept_errors_total");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let errors = metric(&registry, "dns_tcp_accept_errors_total") - errors_before;
    restore(restorer);
    assert_eq!(soft_nofile(), original);
    assert!(errors_before > 0, "accept failed with EMFILE");
    // One attempt per 100 ms pause; a loop without a pause fails thousands of times a second.
    assert!(errors <= 20, "{errors} accept errors in one second: the loop does not pause");
    eprintln!("accept errors: {errors_before} before, {errors} in the next second");

    // With descriptors free again, every waiting connection is served.
    for stream in &mut waiting {
        let response = ask_tcp(stream, &query(API, RecordType::A)).await;
        assert_eq!(response.answers.len(), 1);
    }
    shutdown.cancel();
    timeout(TIMEOUT, task).await.unwrap().unwrap().unwrap();
}
