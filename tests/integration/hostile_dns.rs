//! Strangers against the DNS front of a real `spdu run`: a TCP connection flood under a small
//! open-file limit, and malformed EDNS COOKIE options. Each test uses its own 127.0.N.0/24
//! block (171, 172).

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::EdnsOption;
use hickory_proto::rr::{Name, RecordType};
use spdu_cluster::{LocalCluster, POOL_NAME, Ports};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

use crate::testing::{dig, spdu, start_cluster};

/// Bound on one DNS exchange in these tests.
const EXCHANGE: Duration = Duration::from_secs(3);

/// A `spdu run` started by the test itself (here: under `prlimit`), killed and reaped on drop.
struct Node {
    child: Child,
}

impl Node {
    /// Starts site 0 of `cluster` as `prlimit --nofile=N:N spdu run --config …`, its output
    /// appended to the site's log, and waits until its control endpoint accepts connections.
    fn start_with_nofile(cluster: &LocalCluster, nofile: u32) -> Self {
        let log = File::options().create(true).append(true).open(cluster.log_path(0)).expect("log file");
        let child = Command::new("prlimit")
            .arg(format!("--nofile={nofile}:{nofile}"))
            .arg("--")
            .arg(spdu())
            .arg("run")
            .arg("--config")
            .arg(cluster.config_path(0))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("prlimit is needed for this test (util-linux): {e}"));
        let mut node = Self { child };
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = node.child.try_wait() {
                panic!("spdu exited during start-up ({status}):\n{}", cluster.log_tail(0, 20));
            }
            if std::net::TcpStream::connect_timeout(&cluster.control_addr(0), Duration::from_millis(200))
                .is_ok()
            {
                return node;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "spdu did not start:\n{}",
                cluster.log_tail(0, 20)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// CPU time (user + system) the process has used so far, in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).expect("/proc stat");
        // Fields after the parenthesised command name: state is field 3; utime, stime are 14, 15.
        let after = &stat[stat.rfind(')').expect("comm") + 2..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `series` (a full line prefix, labels included) on `control`'s `/metrics`.
async fn metric(control: SocketAddr, series: &str) -> u64 {
    let exchange = async {
        let mut stream = TcpStream::connect(control).await?;
        stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: spdu\r\n\r\n").await?;
        let mut text = String::new();
        stream.read_to_string(&mut text).await?;
        std::io::Result::Ok(text)
    };
    let text = tokio::time::timeout(EXCHANGE, exchange).await.expect("metrics in time").expect("metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0, |v| v.trim().parse::<f64>().expect("a number") as u64)
}

/// Polls `series` on `control` until it reaches `target` or 5 s pass; returns the last value.
async fn wait_metric(control: SocketAddr, series: &str, target: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let value = metric(control, series).await;
        if value >= target || Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A TCP connection to `server` from `source`.
async fn connect_from(source: Ipv4Addr, server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    tokio::time::timeout(EXCHANGE, socket.connect(server)).await.map_err(std::io::Error::other)?
}

/// Sends `query` on `stream` (2-byte length prefix) and reads one response.
async fn tcp_exchange(stream: &mut TcpStream, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let exchange = async {
        let mut framed = (query.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(query);
        stream.write_all(&framed).await?;
        let len = stream.read_u16().await?;
        let mut response = vec![0; usize::from(len)];
        stream.read_exact(&mut response).await?;
        Ok(response)
    };
    tokio::time::timeout(EXCHANGE, exchange).await.map_err(std::io::Error::other)?
}

/// Sends `query` over UDP and returns the response, if one comes in time.
async fn udp_exchange(server: SocketAddr, query: &[u8]) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(query, server).await.unwrap();
    let mut buffer = vec![0; 65535];
    let (len, _) = tokio::time::timeout(EXCHANGE, socket.recv_from(&mut buffer)).await.ok()?.ok()?;
    buffer.truncate(len);
    Some(buffer)
}

/// One source holding 400 idle TCP connections to a node limited to 256 open files: before,
/// the node accepted until it ran out of descriptors, then spun on `accept` (EMFILE), answered
/// no new TCP query and failed its own TCP health check. Now the source gets its 16
/// connections, the rest are closed at once and counted, and everyone else is answered over
/// TCP and UDP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_connection_flood_from_one_source_leaves_dns_answering() {
    const FLOOD: usize = 400;
    let cluster = LocalCluster::create(spdu(), 1, Ipv4Addr::new(127, 0, 171, 11), Ports::default(), "")
        .expect("cluster config");
    let node = Node::start_with_nofile(&cluster, 256);
    let server = cluster.dns_addr(0);
    let control = cluster.control_addr(0);
    let attacker = Ipv4Addr::new(127, 0, 171, 99);
    let client = Ipv4Addr::new(127, 0, 171, 98);

    let cpu_before = node.cpu_ticks();
    let mut held = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        // The kernel completes the handshake whatever the server then does with it.
        held.push(connect_from(attacker, server).await.expect("connect"));
    }
    let flood_started = Instant::now();

    // Let the server take them all (the kernel queues them for `accept`).
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Another source is answered over TCP and UDP while the flood's connections are held, by an
    // independent client (dig) and by a raw exchange.
    let client_ip = client.to_string();
    let tcp_answer = dig(server, &["-b", &client_ip, "+tcp", "+short", POOL_NAME, "A"]);
    assert_eq!(tcp_answer.trim(), cluster.ip(0).to_string(), "TCP answer:\n{}", cluster.log_tail(0, 20));
    let udp_answer = dig(server, &["-b", &client_ip, "+notcp", "+short", POOL_NAME, "A"]);
    assert_eq!(udp_answer.trim(), cluster.ip(0).to_string(), "UDP answer");
    let mut stream = connect_from(client, server).await.expect("connect");
    let query = Message::query()
        .add_query(Query::query(Name::from_ascii(POOL_NAME).unwrap(), RecordType::A))
        .to_vec()
        .unwrap();
    let response = Message::from_vec(&tcp_exchange(&mut stream, &query).await.expect("TCP answer")).unwrap();
    assert_eq!(response.metadata.response_code, ResponseCode::NoError);
    assert_eq!(response.answers.len(), 1);
    drop(stream);

    // Everything past the per-source limit is closed at once and counted.
    let refused = r#"spdu_dns_tcp_refused_connections_total{reason="per_source"}"#;
    let counted = wait_metric(control, refused, (FLOOD - 16) as u64).await;
    assert_eq!(counted, (FLOOD - 16) as u64, "refusals counted:\n{}", cluster.log_tail(0, 20));

    // Said once in the log, not once per connection.
    let log = std::fs::read_to_string(cluster.log_path(0)).unwrap();
    assert_eq!(log.matches("DNS TCP connection limit reached").count(), 1, "{log}");

    // For the record (not asserted: no timing assertions): the CPU the node used while the
    // flood's connections were held for two more seconds. Before, it spun a whole core.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let elapsed = flood_started.elapsed();
    let cpu = node.cpu_ticks() - cpu_before;
    eprintln!("{FLOOD} connections from {attacker}: {counted} refused; CPU {cpu} ticks in {elapsed:?}");
    drop(held);
    drop(node);
}

/// RFC 7873 §5.2.2: a COOKIE option that is neither a client cookie (8 bytes) nor a client
/// and a server cookie (16 to 40 bytes) is answered FORMERR, over UDP and TCP alike; a
/// client cookie alone is answered as usual, and so is one with a server cookie this site never
/// issued over TCP; over UDP that one gets BADCOOKIE (§5.2.4). (Before, every length was
/// answered NOERROR.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cookie_option_of_a_bad_length_is_formerr() {
    let cluster = start_cluster(1, 172, "").await;
    let server = cluster.dns_addr(0);
    let with_cookie = |len: usize| {
        let mut query = Message::query();
        query.metadata.id = 0x7873;
        query.add_query(Query::query(Name::from_ascii(POOL_NAME).unwrap(), RecordType::A));
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        edns.options_mut().insert(EdnsOption::Unknown(10, (0..len as u8).collect()));
        query.set_edns(edns);
        query.to_vec().unwrap()
    };
    let mut stream = connect_from(Ipv4Addr::new(127, 0, 172, 98), server).await.expect("connect");
    for len in [0, 1, 7, 8, 9, 15, 16, 24, 40, 41, 64] {
        let query = with_cookie(len);
        let over_udp = udp_exchange(server, &query).await.expect("a UDP response");
        let over_tcp = tcp_exchange(&mut stream, &query).await.expect("a TCP response");
        for (transport, raw) in [("UDP", over_udp), ("TCP", over_tcp)] {
            let expected = match len {
                8 => ResponseCode::NoError,
                16..=40 if transport == "UDP" => ResponseCode::BADCOOKIE,
                16..=40 => ResponseCode::NoError,
                _ => ResponseCode::FormErr,
            };
            let response = Message::from_vec(&raw).expect("response parses");
            assert_eq!(response.metadata.id, 0x7873);
            assert_eq!(response.metadata.response_code, expected, "{len}-byte cookie over {transport}");
            assert!(response.edns.is_some(), "OPT echoed ({len} bytes over {transport})");
            if expected == ResponseCode::NoError {
                assert_eq!(response.answers.len(), 1, "{len}-byte cookie over {transport}");
            }
        }
    }
    let formerr = r#"spdu_dns_queries_total{rcode="formerr",qtype="a",transport="tcp"}"#;
    assert_eq!(wait_metric(cluster.control_addr(0), formerr, 7).await, 7, "TCP FORMERR counted");
}
