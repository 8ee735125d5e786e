//! Running one check: TCP connect, HTTP(S) GET (Host header and SNI for the service name,
//! expected status and body substring, fetch time recorded), a DNS question over UDP, or a
//! command (exit 0 is healthy, killed on timeout). Every run is bounded by the timeout; a timeout
//! is a failure.
//!
//! Invariants: a check built for a peer ([`Check::service`]) connects to the address it is given
//! and nowhere else: an HTTP check's `host` is only the Host header and the TLS name, never
//! resolved or parsed as a destination (a peer's advertised check must not make this node fetch
//! from any other host). An error of this machine (out of file descriptors, memory or buffers,
//! no local address) is no verdict on the service: [`Check::run`] returns
//! [`CheckResult::unknown`] for it, which counts neither as a pass nor as a failure.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RecordType};
use reqwest::header::{HOST, HeaderValue};
use spdu_gossip::proto::{CheckResult, ServiceCheck};
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use crate::config::SelfCheck;

/// Most body bytes read from an HTTP answer (the expected substring must be within them).
const MAX_BODY: usize = 64 * 1024;
/// Most characters of a command's output kept in an error message.
const MAX_ERROR_OUTPUT: usize = 200;

/// One runnable check.
#[derive(Clone, Debug)]
pub enum Check {
    /// Connect to this address.
    Tcp(SocketAddr),
    /// GET `url` from a fixed address and compare the answer.
    Http {
        /// Connects only to the service address (the URL's name is pinned to it); holds the
        /// connection pool.
        client: reqwest::Client,
        /// `http(s)://name:port/path`, or `http(s)://address/path` when the advertised host is an
        /// IP address (the Host header then carries it).
        url: String,
        /// The Host header, when the URL does not carry the advertised host.
        host_header: Option<HeaderValue>,
        /// The expected status.
        expect_status: u16,
        /// A substring the body must contain.
        expect_body: Option<String>,
    },
    /// Ask `server` for `name`/`record_type`.
    Dns {
        /// The DNS server.
        server: SocketAddr,
        /// The question's name.
        name: Name,
        /// The question's type.
        record_type: RecordType,
    },
    /// Run this program with these arguments.
    Command(Vec<String>),
}

/// Why one attempt did not pass.
#[derive(Debug)]
enum Failure {
    /// The service failed the check.
    Service(String),
    /// This machine could not run the check (see [`is_local_resource_error`]).
    Local(String),
}

impl From<String> for Failure {
    fn from(e: String) -> Self {
        Failure::Service(e)
    }
}

/// Whether `e` is a shortage of this machine (file descriptors, memory, buffers, a local
/// address), which says nothing about the service checked.
pub fn is_local_resource_error(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    let Some(code) = e.raw_os_error() else { return false };
    [Errno::MFILE, Errno::NFILE, Errno::NOMEM, Errno::NOBUFS, Errno::ADDRNOTAVAIL]
        .iter()
        .any(|local| local.raw_os_error() == code)
}

/// Classifies an I/O error of an attempt: local shortage or the service's failure.
fn io_failure(e: &std::io::Error, what: impl std::fmt::Display) -> Failure {
    let text = format!("{what}: {e}");
    if is_local_resource_error(e) { Failure::Local(text) } else { Failure::Service(text) }
}

/// The host part of a URL for `host` (IPv6 literals in brackets).
fn url_host(host: &IpAddr) -> String {
    match host {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

impl Check {
    /// The check `check` against `address` (and only `address`), each run bounded by `timeout`.
    pub fn service(check: &ServiceCheck, address: SocketAddr, timeout: Duration) -> Result<Self, String> {
        check.validate()?;
        Ok(match check {
            ServiceCheck::Tcp { .. } => Check::Tcp(address),
            ServiceCheck::Http { tls, host, path, expect_status, expect_body, .. } => {
                let scheme = if *tls { "https" } else { "http" };
                let builder = reqwest::Client::builder()
                    .timeout(timeout)
                    .connect_timeout(timeout)
                    .redirect(reqwest::redirect::Policy::none())
                    .no_proxy()
                    .user_agent(concat!("spdu-health/", env!("CARGO_PKG_VERSION")))
                    .pool_max_idle_per_host(1);
                let literal = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>();
                let (builder, url, host_header) = match literal {
                    // An address as host: the URL names the service address itself, so the
                    // connection goes there; the advertised address only travels as Host.
                    Ok(ip) => {
                        let value = match address.port() {
                            80 if !tls => url_host(&ip),
                            443 if *tls => url_host(&ip),
                            port => format!("{}:{port}", url_host(&ip)),
                        };
                        let header =
                            HeaderValue::from_str(&value).map_err(|e| format!("host {host:?}: {e}"))?;
                        (builder, format!("{scheme}://{}{path}", url_host_port(address)), Some(header))
                    }
                    Err(_) if host.contains(':') => {
                        return Err(format!("host {host:?}: a name or an address, without a port"));
                    }
                    // A name: pinned to the service address, never looked up.
                    Err(_) => (
                        builder.resolve(host, address),
                        format!("{scheme}://{host}:{}{path}", address.port()),
                        None,
                    ),
                };
                let client = builder.build().map_err(|e| format!("building the HTTP client: {e}"))?;
                Check::Http {
                    client,
                    url,
                    host_header,
                    expect_status: *expect_status,
                    expect_body: expect_body.clone(),
                }
            }
            ServiceCheck::Dns { name, record_type, .. } => Check::Dns {
                server: address,
                name: Name::from_ascii(name).map_err(|e| format!("DNS name {name:?}: {e}"))?,
                record_type: record_type.parse().map_err(|_| format!("record type {record_type:?}"))?,
            },
        })
    }

    /// The check configured as this node's own.
    pub fn own(check: &SelfCheck, timeout: Duration) -> Result<Self, String> {
        match check {
            SelfCheck::Service { check, address } => Check::service(check, *address, timeout),
            SelfCheck::Command(argv) => Ok(Check::Command(argv.clone())),
        }
    }

    /// Runs the check once, for at most `timeout`. [`CheckResult::unknown`] when this machine
    /// could not run it (out of file descriptors, memory, buffers or local addresses).
    pub async fn run(&self, timeout: Duration) -> CheckResult {
        let start = Instant::now();
        match tokio::time::timeout(timeout, self.attempt()).await {
            Ok(Ok(())) => CheckResult::pass(start.elapsed()),
            Ok(Err(Failure::Service(e))) => {
                CheckResult { latency: Some(start.elapsed()), ..CheckResult::fail(e) }
            }
            Ok(Err(Failure::Local(e))) => CheckResult::unknown(format!("not run here: {e}")),
            Err(_) => CheckResult::fail(format!("timed out after {} ms", timeout.as_millis())),
        }
    }

    async fn attempt(&self) -> Result<(), Failure> {
        match self {
            Check::Tcp(addr) => {
                tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|e| io_failure(&e, format!("connect {addr}")))?;
                Ok(())
            }
            Check::Http { client, url, host_header, expect_status, expect_body } => {
                let mut request = client.get(url);
                if let Some(host) = host_header {
                    request = request.header(HOST, host.clone());
                }
                let mut response = request.send().await.map_err(|e| http_error(url, &e))?;
                let status = response.status().as_u16();
                if status != *expect_status {
                    return Err(format!("{url}: HTTP {status}, expected {expect_status}").into());
                }
                let Some(expected) = expect_body else { return Ok(()) };
                let mut body = Vec::new();
                while body.len() < MAX_BODY
                    && let Some(chunk) = response.chunk().await.map_err(|e| http_error(url, &e))?
                {
                    body.extend_from_slice(&chunk);
                }
                if String::from_utf8_lossy(&body).contains(expected.as_str()) {
                    Ok(())
                } else {
                    Err(format!("{url}: body does not contain {expected:?}").into())
                }
            }
            Check::Dns { server, name, record_type } => dns_check(*server, name, *record_type).await,
            Check::Command(argv) => run_command(argv).await.map_err(Failure::Service),
        }
    }
}

/// `address` as a URL's host and port.
fn url_host_port(address: SocketAddr) -> String {
    format!("{}:{}", url_host(&address.ip()), address.port())
}

async fn run_command(argv: &[String]) -> Result<(), String> {
    let mut child = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        // Dropped on timeout: the command is killed, and tokio reaps it.
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{}: {e}", argv[0]))?;
    let mut stderr = Vec::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = (&mut pipe).take(4096).read_to_end(&mut stderr).await;
    }
    let status = child.wait().await.map_err(|e| format!("{}: {e}", argv[0]))?;
    if status.success() {
        return Ok(());
    }
    Err(command_failure(&argv[0], status, &stderr))
}

/// `program: <status>: <last non-empty line of stderr, shortened>`: a failed command, for logs.
pub(crate) fn command_failure(program: &str, status: std::process::ExitStatus, stderr: &[u8]) -> String {
    let output = String::from_utf8_lossy(stderr);
    let last = output.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
    let last: String = last.chars().take(MAX_ERROR_OUTPUT).collect();
    format!("{program}: {status}{}{last}", if last.is_empty() { "" } else { ": " })
}

fn http_error(url: &str, e: &reqwest::Error) -> Failure {
    // reqwest's Display only repeats the URL; the cause (refused, reset, TLS) is in the chain.
    let mut causes = Vec::new();
    let mut local = false;
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        causes.push(cause.to_string());
        local |= cause.downcast_ref::<std::io::Error>().is_some_and(is_local_resource_error);
        source = cause.source();
    }
    let text =
        if causes.is_empty() { format!("{url}: {e}") } else { format!("{url}: {}", causes.join(": ")) };
    if local { Failure::Local(text) } else { Failure::Service(text) }
}

async fn dns_check(server: SocketAddr, name: &Name, record_type: RecordType) -> Result<(), Failure> {
    let response =
        crate::dns_client::ask(server, name, record_type).await.map_err(|e| io_failure(&e, server))?;
    if response.metadata.response_code != ResponseCode::NoError {
        return Err(format!("{server}: {name} {record_type}: {}", response.metadata.response_code).into());
    }
    match response.answers.iter().any(|r| r.record_type() == record_type) {
        true => Ok(()),
        false => Err(format!("{server}: {name} {record_type}: no answer").into()),
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::Message;
    use tokio_util::sync::CancellationToken;

    use super::*;

    const TIMEOUT: Duration = Duration::from_millis(500);

    fn http(port: u16, path: &str, expect_body: Option<&str>) -> ServiceCheck {
        ServiceCheck::Http {
            tls: false,
            port,
            host: "api.pool.example.test".into(),
            path: path.into(),
            expect_status: 200,
            expect_body: expect_body.map(String::from),
        }
    }

    /// An HTTP server on loopback: `/ok` answers "all good" (and echoes the Host header at
    /// `/host`), `/fail` 503, `/slow` after two seconds.
    async fn http_server() -> (SocketAddr, CancellationToken) {
        use axum::routing::get;
        let app = axum::Router::new()
            .route("/ok", get(|| async { "all good" }))
            .route(
                "/host",
                get(|headers: axum::http::HeaderMap| async move { format!("{:?}", headers.get("host")) }),
            )
            .route("/fail", get(|| async { (axum::http::StatusCode::SERVICE_UNAVAILABLE, "down") }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    "late"
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let server = axum::serve(listener, app).with_graceful_shutdown(stop.clone().cancelled_owned());
        tokio::spawn(async move { server.await.unwrap() });
        (addr, stop)
    }

    async fn run(check: &ServiceCheck, addr: SocketAddr) -> CheckResult {
        Check::service(check, addr, TIMEOUT).unwrap().run(TIMEOUT).await
    }

    #[tokio::test]
    async fn tcp_follows_the_listener_down_and_back() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let check = ServiceCheck::Tcp { port: addr.port() };
        let up = run(&check, addr).await;
        assert!(up.ok && up.latency.is_some(), "{up:?}");
        drop(listener);
        let down = run(&check, addr).await;
        assert!(!down.ok && down.error.as_deref().unwrap().contains("refused"), "{down:?}");
        let _listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        assert!(run(&check, addr).await.ok);
    }

    #[tokio::test]
    async fn http_checks_status_body_host_and_time() {
        let (addr, stop) = http_server().await;
        let ok = run(&http(addr.port(), "/ok", Some("good")), addr).await;
        assert!(ok.ok && ok.latency.is_some(), "{ok:?}");
        // The service name is the Host header, although the connection goes to the address.
        assert!(run(&http(addr.port(), "/host", Some("api.pool.example.test")), addr).await.ok);
        let body = run(&http(addr.port(), "/ok", Some("bad")), addr).await;
        assert!(body.error.as_deref().unwrap().contains("body does not contain \"bad\""), "{body:?}");
        let status = run(&http(addr.port(), "/fail", None), addr).await;
        assert!(status.error.as_deref().unwrap().contains("HTTP 503, expected 200"), "{status:?}");
        let missing = run(&http(addr.port(), "/nope", None), addr).await;
        assert!(missing.error.as_deref().unwrap().contains("HTTP 404"), "{missing:?}");
        stop.cancel();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let gone = run(&http(addr.port(), "/ok", None), addr).await;
        assert!(!gone.ok, "{gone:?}");
        // And back on the same port.
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        tokio::spawn(async move {
            axum::serve(listener, axum::Router::new().route("/ok", axum::routing::get(|| async { "ok" })))
                .await
                .unwrap()
        });
        assert!(run(&http(addr.port(), "/ok", None), addr).await.ok);
    }

    #[tokio::test]
    async fn slow_http_times_out() {
        let (addr, _stop) = http_server().await;
        let start = std::time::Instant::now();
        let slow = run(&http(addr.port(), "/slow", None), addr).await;
        assert!(!slow.ok, "{slow:?}");
        assert!(
            start.elapsed() < Duration::from_millis(1500),
            "bounded by the timeout: {:?}",
            start.elapsed()
        );
    }

    #[tokio::test]
    async fn https_to_a_plain_server_fails_cleanly() {
        let (addr, _stop) = http_server().await;
        let mut check = http(addr.port(), "/ok", None);
        if let ServiceCheck::Http { tls, .. } = &mut check {
            *tls = true;
        }
        let r = run(&check, addr).await;
        assert!(!r.ok && r.error.as_deref().unwrap().starts_with("https://api.pool.example.test:"), "{r:?}");
    }

    #[tokio::test]
    async fn command_exit_status_output_and_timeout() {
        let sh = |script: &str| Check::Command(vec!["sh".into(), "-c".into(), script.into()]);
        assert!(sh("exit 0").run(TIMEOUT).await.ok);
        let r = sh("echo 'backend gone' >&2; exit 3").run(TIMEOUT).await;
        assert!(!r.ok && r.error.as_deref().unwrap().contains("exit status: 3: backend gone"), "{r:?}");
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("survived");
        let start = std::time::Instant::now();
        let r = sh(&format!("sleep 2; touch {}", marker.display())).run(TIMEOUT).await;
        assert!(r.error.as_deref().unwrap().contains("timed out"), "{r:?}");
        assert!(start.elapsed() < Duration::from_millis(1500));
        tokio::time::sleep(Duration::from_millis(2000)).await;
        assert!(!marker.exists(), "the timed-out command was killed");
        let r = Check::Command(vec!["/nonexistent/check".into()]).run(TIMEOUT).await;
        assert!(!r.ok, "{r:?}");
    }

    #[tokio::test]
    async fn dns_needs_an_answer() {
        use hickory_proto::rr::{RData, Record, rdata::A};
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        // Answers A queries for api.pool.example.test, NXDOMAIN for anything else.
        tokio::spawn(async move {
            let mut buffer = vec![0; 4096];
            loop {
                let (len, from) = socket.recv_from(&mut buffer).await.unwrap();
                let query = Message::from_vec(&buffer[..len]).unwrap();
                let mut response = Message::response(query.metadata.id, query.metadata.op_code);
                let question = query.queries[0].clone();
                if question.name().to_ascii() == "api.pool.example.test." {
                    if question.query_type() == RecordType::A {
                        let a = RData::A(A::new(192, 0, 2, 1));
                        response.add_answer(Record::from_rdata(question.name().clone(), 5, a));
                    }
                } else {
                    response.metadata.response_code = ResponseCode::NXDomain;
                }
                response.add_query(question);
                socket.send_to(&response.to_vec().unwrap(), from).await.unwrap();
            }
        });
        let dns = |name: &str, record_type: &str| ServiceCheck::Dns {
            port: addr.port(),
            name: name.into(),
            record_type: record_type.into(),
        };
        assert!(run(&dns("api.pool.example.test", "A"), addr).await.ok);
        let r = run(&dns("api.pool.example.test", "AAAA"), addr).await;
        assert!(r.error.as_deref().unwrap().contains("no answer"), "{r:?}");
        let r = run(&dns("other.example.test", "A"), addr).await;
        assert!(r.error.as_deref().unwrap().contains("Non-Existent Domain"), "{r:?}");
    }

    /// An HTTP server on `ip` that counts the requests it gets.
    async fn counting_server(ip: &str) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let hits = std::sync::Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move { format!("secret; host {:?}", headers.get("host")) }
        });
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (addr, hits)
    }

    #[tokio::test]
    async fn an_address_as_host_is_only_the_host_header() {
        use std::sync::atomic::Ordering;
        // The "internal" server a peer would like us to fetch from, and the peer's service.
        let (internal, internal_hits) = counting_server("127.0.0.1").await;
        let (service, service_hits) = counting_server("127.0.0.2").await;
        for host in ["127.0.0.1", "[::1]", "::1", "localhost"] {
            let mut check = http(internal.port(), "/", Some("secret"));
            if let ServiceCheck::Http { host: h, .. } = &mut check {
                *h = host.into();
            }
            let target = SocketAddr::new(service.ip(), internal.port());
            let r = run(&check, target).await;
            assert!(!r.ok, "{host}: the check went elsewhere: {r:?}");
        }
        assert_eq!(internal_hits.load(Ordering::SeqCst), 0, "the check connected to the host named");
        // Pointed at the service itself, an address as host works, and travels as Host.
        let mut check = http(service.port(), "/", Some("host Some(\"127.0.0.1:"));
        if let ServiceCheck::Http { host, .. } = &mut check {
            *host = "127.0.0.1".into();
        }
        let r = run(&check, service).await;
        assert!(r.ok, "{r:?}");
        assert_eq!(service_hits.load(Ordering::SeqCst), 1);
        // A host with a port is refused before anything runs.
        let mut check = http(internal.port(), "/", None);
        if let ServiceCheck::Http { host, .. } = &mut check {
            *host = format!("127.0.0.1:{}", internal.port());
        }
        assert!(Check::service(&check, service, TIMEOUT).unwrap_err().contains("without a port"));
        assert_eq!(internal_hits.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn shortages_of_this_machine_are_no_verdict() {
        use rustix::io::Errno;
        for errno in [Errno::MFILE, Errno::NFILE, Errno::NOMEM, Errno::NOBUFS, Errno::ADDRNOTAVAIL] {
            let e = std::io::Error::from_raw_os_error(errno.raw_os_error());
            assert!(is_local_resource_error(&e), "{e}");
            assert!(matches!(io_failure(&e, "x"), Failure::Local(_)));
        }
        for errno in [Errno::CONNREFUSED, Errno::HOSTUNREACH, Errno::CONNRESET, Errno::TIMEDOUT] {
            let e = std::io::Error::from_raw_os_error(errno.raw_os_error());
            assert!(!is_local_resource_error(&e), "{e}");
        }
    }
}
