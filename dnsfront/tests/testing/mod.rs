//! Test fixtures: a server on 127.0.0.1:0 with its watch sender, and a small wire client that
//! sends hickory-proto messages over real UDP and TCP sockets.
//!
//! Every network wait is bounded by [`TIMEOUT`] so a broken server fails a test instead of
//! hanging it.

// Shared by several test binaries, each using a part of it.
#![allow(dead_code)]

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use hickory_proto::{
    op::{Edns, Message, Query},
    rr::{
        Name, RData, RecordType,
        rdata::SOA,
        rdata::opt::{EdnsCode, EdnsOption},
    },
};
use prometheus_client::registry::Registry;
use spdu_dnsfront::{AnswerPublisher, DnsError, DnsMetrics, DnsServer, PoolAnswers, ZoneConfig, ZoneError};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
    task::JoinHandle,
    time::timeout,
};
use tokio_util::sync::CancellationToken;

/// Upper bound on any single network wait.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// The test zone `pool.example.test` with the given pool names, TTL 5.
pub fn zone(names: &[&str]) -> ZoneConfig {
    ZoneConfig {
        origin: "pool.example.test".into(),
        names: names.iter().map(|n| n.to_string()).collect(),
        ttl: 5,
        nameservers: vec!["alpha.example.test".into(), "beta.example.test.".into()],
    }
}

/// Parses a list of addresses.
pub fn addrs(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

/// A running server and the handles a test needs.
pub struct TestServer {
    pub addr: SocketAddr,
    answers: AnswerPublisher,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), DnsError>>,
    registry: Registry,
    /// How many pool names the zone has.
    names: usize,
    /// The zone's TTL.
    ttl: u32,
}

impl TestServer {
    /// Binds on 127.0.0.1:0 and serves `zone` with the given pool for every name (TTL: the
    /// zone's).
    pub async fn start(zone: ZoneConfig, serial: u32, addrs: Vec<IpAddr>) -> Self {
        Self::start_with(zone, serial, addrs, |server| server).await
    }

    /// [`start`](Self::start), with `configure` applied to the bound server before it runs.
    pub async fn start_with(
        zone: ZoneConfig,
        serial: u32,
        addrs: Vec<IpAddr>,
        configure: impl FnOnce(DnsServer) -> DnsServer,
    ) -> Self {
        let initial = PoolAnswers::same_for_all(serial, zone.names.len(), zone.ttl, addrs);
        Self::start_answers_with(zone, initial, configure).await
    }

    /// Binds on 127.0.0.1:0 and serves `zone` with `answers`.
    pub async fn start_answers(zone: ZoneConfig, answers: PoolAnswers) -> Self {
        Self::start_answers_with(zone, answers, |server| server).await
    }

    /// [`start_answers`](Self::start_answers), with `configure` applied to the bound server
    /// before it runs.
    pub async fn start_answers_with(
        zone: ZoneConfig,
        initial: PoolAnswers,
        configure: impl FnOnce(DnsServer) -> DnsServer,
    ) -> Self {
        let metrics = DnsMetrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let answers = AnswerPublisher::new(&zone, initial, metrics).expect("zone");
        let server = DnsServer::bind(&answers, &["127.0.0.1:0".parse().unwrap()]).await.expect("bind");
        let server = configure(server);
        let addr = server.local_addrs()[0];
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(shutdown.clone()));
        Self { addr, answers, shutdown, task, registry, names: zone.names.len(), ttl: zone.ttl }
    }

    /// Publishes `addrs` for every name, as the node does.
    pub fn publish(&self, serial: u32, addrs: Vec<IpAddr>) {
        self.answers.publish(PoolAnswers::same_for_all(serial, self.names, self.ttl, addrs));
    }

    /// Publishes new answers, as the node does.
    pub fn publish_answers(&self, answers: PoolAnswers) {
        self.answers.publish(answers);
    }

    /// Turns DNSSEC signing on (`Some`) or off for every version from now on.
    pub fn set_signer(&self, signer: Option<spdu_dnsfront::dnssec::Signer>) {
        self.answers.set_signer(signer);
    }

    /// Serves a new zone (a reload), with `answers` for its names.
    pub fn replace_zone(&self, zone: &ZoneConfig, answers: PoolAnswers) -> Result<(), ZoneError> {
        self.answers.replace_zone(zone, answers)
    }

    /// The metrics in Prometheus text format.
    pub fn metrics_text(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        text
    }

    /// Cancels and waits for `run` to return Ok.
    pub async fn stop(self) {
        self.shutdown.cancel();
        timeout(TIMEOUT, self.task)
            .await
            .expect("run returns after shutdown")
            .expect("run task")
            .expect("run result");
    }
}

/// A query for `name`/`qtype`, without EDNS, RD clear.
pub fn query(name: &str, qtype: RecordType) -> Message {
    let mut message = Message::query();
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    message
}

/// A query for `name`/`qtype` with EDNS (payload 1232) and a COOKIE option holding `cookie`.
pub fn query_with_cookie(name: &str, qtype: RecordType, cookie: &[u8]) -> Message {
    let mut message = query(name, qtype);
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    edns.options_mut().insert(EdnsOption::Unknown(10, cookie.to_vec()));
    message.set_edns(edns);
    message
}

/// The COOKIE option content of a response, if any.
pub fn cookie_of(message: &Message) -> Option<Vec<u8>> {
    match message.edns.as_ref()?.options().get(EdnsCode::Cookie)? {
        EdnsOption::Unknown(_, data) => Some(data.clone()),
        _ => None,
    }
}

/// Sends raw bytes over UDP and returns the reply, or `None` if none came within a second.
pub async fn udp_raw(server: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let socket = client_socket(server).await;
    socket.send_to(bytes, server).await.unwrap();
    let mut buf = vec![0u8; 65535];
    match timeout(Duration::from_secs(1), socket.recv_from(&mut buf)).await {
        Ok(Ok((len, from))) => {
            assert_eq!(from, server);
            buf.truncate(len);
            Some(buf)
        }
        Ok(Err(e)) => panic!("recv: {e}"),
        Err(_) => None,
    }
}

/// A UDP socket on loopback of the server's address family.
async fn client_socket(server: SocketAddr) -> UdpSocket {
    let local: SocketAddr =
        if server.is_ipv4() { "127.0.0.1:0".parse().unwrap() } else { "[::1]:0".parse().unwrap() };
    UdpSocket::bind(local).await.unwrap()
}

/// Sends raw bytes over UDP without waiting for anything.
pub async fn udp_send(server: SocketAddr, bytes: &[u8]) {
    let socket = client_socket(server).await;
    socket.send_to(bytes, server).await.unwrap();
}

/// Sends `message` over UDP and parses the reply; its id must match.
pub async fn udp(server: SocketAddr, message: &Message) -> Message {
    let raw = udp_raw(server, &message.to_vec().unwrap()).await.expect("no UDP response");
    let response = Message::from_vec(&raw).expect("response parses");
    assert_eq!(response.metadata.id, message.metadata.id);
    response
}

/// Sends `message` over a fresh TCP connection (2-byte length prefix) and parses the reply.
pub async fn tcp(server: SocketAddr, message: &Message) -> Message {
    let exchange = async {
        let mut stream = TcpStream::connect(server).await.unwrap();
        let bytes = message.to_vec().unwrap();
        let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        stream.write_all(&framed).await.unwrap();
        let len = stream.read_u16().await.unwrap();
        let mut buf = vec![0u8; usize::from(len)];
        stream.read_exact(&mut buf).await.unwrap();
        buf
    };
    let raw = timeout(TIMEOUT, exchange).await.expect("TCP response in time");
    let response = Message::from_vec(&raw).expect("response parses");
    assert_eq!(response.metadata.id, message.metadata.id);
    response
}

/// Writes garbage on a TCP connection and waits (bounded) for the server to close or answer it.
pub async fn tcp_garbage(server: SocketAddr, bytes: &[u8]) {
    let mut stream = TcpStream::connect(server).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut sink = Vec::new();
    let _ = timeout(Duration::from_secs(1), stream.read_to_end(&mut sink)).await;
}

/// The addresses in the answer section, in order.
pub fn answer_ips(message: &Message) -> Vec<IpAddr> {
    message
        .answers
        .iter()
        .map(|r| match &r.data {
            RData::A(a) => IpAddr::V4(a.0),
            RData::AAAA(a) => IpAddr::V6(a.0),
            other => panic!("not an address: {other:?}"),
        })
        .collect()
}

/// The SOA in the answer section, or else in the authority section.
pub fn soa_of(message: &Message) -> SOA {
    message
        .answers
        .iter()
        .chain(&message.authorities)
        .find_map(|r| match &r.data {
            RData::SOA(soa) => Some(soa.clone()),
            _ => None,
        })
        .expect("an SOA record")
}

/// Runs `dig @server -p PORT +time=2 +tries=1 ARGS…` on a blocking thread (the server runs on
/// the test's runtime) and returns its standard output.
pub async fn dig(server: SocketAddr, args: &[&str]) -> String {
    let mut command = std::process::Command::new("dig");
    command.arg(format!("@{}", server.ip())).args(["-p", &server.port().to_string(), "+time=2", "+tries=1"]);
    command.args(args);
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("dig is needed for this test (apt-get install dnsutils): {e}"));
    assert!(out.status.success(), "dig failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One UDP socket sending many queries in turn (a fresh socket per query costs more than the
/// query).
pub struct UdpClient {
    socket: UdpSocket,
    server: SocketAddr,
    next_id: u16,
    buf: Vec<u8>,
}

impl UdpClient {
    /// A client of `server`.
    pub async fn new(server: SocketAddr) -> Self {
        Self { socket: client_socket(server).await, server, next_id: 1, buf: vec![0; 65535] }
    }

    /// Sends `message` with a fresh id and returns the reply with that id.
    pub async fn ask(&mut self, message: &Message) -> Message {
        let mut message = message.clone();
        message.metadata.id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.socket.send_to(&message.to_vec().unwrap(), self.server).await.unwrap();
        loop {
            let (len, _) = timeout(TIMEOUT, self.socket.recv_from(&mut self.buf))
                .await
                .expect("a UDP response in time")
                .unwrap();
            let response = Message::from_vec(&self.buf[..len]).expect("response parses");
            // A late reply to an earlier query is skipped.
            if response.metadata.id == message.metadata.id {
                return response;
            }
        }
    }
}

/// A DNSSEC signer with a fresh ECDSA key and one other site's.
pub fn signer() -> spdu_dnsfront::dnssec::Signer {
    use spdu_dnsfront::dnssec::{KeyAlgorithm, Signer, ZoneKey};
    let key =
        |_| ZoneKey::from_pkcs8(&ZoneKey::generate_pkcs8(KeyAlgorithm::EcdsaP256Sha256).unwrap()).unwrap();
    let other: ZoneKey = key(());
    Signer::new(key(()), vec![other.public().clone()], 3600, std::time::Duration::from_secs(172_800))
}
