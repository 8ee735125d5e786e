//! Service checks: runs this site's own check and probes every peer's advertised service, and
//! feeds each result to membership, whose core turns results into verdicts (hysteresis, damping)
//! and verdicts into signed observations and answers.
//!
//! - [`Check`]: one runnable check — TCP connect, HTTP(S) GET (Host header and SNI for the
//!   service name, expected status and body substring, fetch time recorded), a DNS question over
//!   UDP, or a command (exit 0 is healthy, killed on timeout). Every run is bounded by the timeout;
//!   a timeout is a failure.
//! - [`run`]: every interval, runs the own check and one probe of each peer's service. Peer
//!   probes start at a random offset within the interval (no thundering herd) and at most
//!   `max_concurrent_probes` run at once; a probe that cannot start within one interval is skipped
//!   (no result: overload here says nothing about the peer).
//!
//! Peers' checks come from their signed observations and only ever connect to the peer's own
//! first service address; a command is never run for a peer.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use rand::RngExt;
use spdu_gossip::net::Membership;
use spdu_gossip::proto::{CheckResult, ServiceCheck};
use spdu_keys::PublicKey;
use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{HealthConfig, SelfCheck};

/// Most body bytes read from an HTTP answer (the expected substring must be within them).
const MAX_BODY: usize = 64 * 1024;
/// Most characters of a command's output kept in an error message.
const MAX_ERROR_OUTPUT: usize = 200;

/// One runnable check.
#[derive(Clone, Debug)]
pub enum Check {
    /// Connect to this address.
    Tcp(SocketAddr),
    /// GET `url` (its host resolved to a fixed address) and compare the answer.
    Http {
        /// Resolves the URL's host to the service address; holds the connection pool.
        client: reqwest::Client,
        /// `http(s)://host:port/path`.
        url: String,
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

impl Check {
    /// The check `check` against `address`, each run bounded by `timeout`.
    pub fn service(check: &ServiceCheck, address: SocketAddr, timeout: Duration) -> Result<Self, String> {
        check.validate()?;
        Ok(match check {
            ServiceCheck::Tcp { .. } => Check::Tcp(address),
            ServiceCheck::Http { tls, host, path, expect_status, expect_body, .. } => {
                let scheme = if *tls { "https" } else { "http" };
                let url_host = match host.parse::<IpAddr>() {
                    Ok(IpAddr::V6(ip)) => format!("[{ip}]"),
                    _ => host.clone(),
                };
                let url = format!("{scheme}://{url_host}:{}{path}", address.port());
                let mut builder = reqwest::Client::builder()
                    .timeout(timeout)
                    .connect_timeout(timeout)
                    .redirect(reqwest::redirect::Policy::none())
                    .no_proxy()
                    .user_agent(concat!("spdu-health/", env!("CARGO_PKG_VERSION")))
                    .pool_max_idle_per_host(1);
                if host.parse::<IpAddr>().is_err() {
                    builder = builder.resolve(host, address);
                }
                let client = builder.build().map_err(|e| format!("building the HTTP client: {e}"))?;
                Check::Http { client, url, expect_status: *expect_status, expect_body: expect_body.clone() }
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

    /// Runs the check once, for at most `timeout`.
    pub async fn run(&self, timeout: Duration) -> CheckResult {
        let start = Instant::now();
        match tokio::time::timeout(timeout, self.attempt()).await {
            Ok(Ok(())) => CheckResult::pass(start.elapsed()),
            Ok(Err(e)) => CheckResult { latency: Some(start.elapsed()), ..CheckResult::fail(e) },
            Err(_) => CheckResult::fail(format!("timed out after {} ms", timeout.as_millis())),
        }
    }

    async fn attempt(&self) -> Result<(), String> {
        match self {
            Check::Tcp(addr) => {
                tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
                Ok(())
            }
            Check::Http { client, url, expect_status, expect_body } => {
                let mut response = client.get(url).send().await.map_err(|e| http_error(url, &e))?;
                let status = response.status().as_u16();
                if status != *expect_status {
                    return Err(format!("{url}: HTTP {status}, expected {expect_status}"));
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
                    Err(format!("{url}: body does not contain {expected:?}"))
                }
            }
            Check::Dns { server, name, record_type } => dns_check(*server, name, *record_type).await,
            Check::Command(argv) => {
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
                let output = String::from_utf8_lossy(&stderr);
                let last = output.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
                let last: String = last.chars().take(MAX_ERROR_OUTPUT).collect();
                Err(format!("{}: {status}{}{last}", argv[0], if last.is_empty() { "" } else { ": " }))
            }
        }
    }
}

fn http_error(url: &str, e: &reqwest::Error) -> String {
    // reqwest's Display only repeats the URL; the cause (refused, reset, TLS) is in the chain.
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    if causes.is_empty() { format!("{url}: {e}") } else { format!("{url}: {}", causes.join(": ")) }
}

async fn dns_check(server: SocketAddr, name: &Name, record_type: RecordType) -> Result<(), String> {
    let mut query = Message::query();
    query.metadata.id = rand::rng().random();
    query.add_query(Query::query(name.clone(), record_type));
    let bytes = query.to_vec().map_err(|e| format!("encoding the query: {e}"))?;
    let bind: SocketAddr = if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("literal");
    let socket = tokio::net::UdpSocket::bind(bind).await.map_err(|e| format!("UDP socket: {e}"))?;
    socket.connect(server).await.map_err(|e| format!("{server}: {e}"))?;
    socket.send(&bytes).await.map_err(|e| format!("{server}: {e}"))?;
    let mut buffer = vec![0; 4096];
    loop {
        let len = socket.recv(&mut buffer).await.map_err(|e| format!("{server}: {e}"))?;
        let Ok(response) = Message::from_vec(&buffer[..len]) else { continue };
        if response.metadata.id != query.metadata.id {
            continue;
        }
        if response.metadata.response_code != ResponseCode::NoError {
            return Err(format!("{server}: {name} {record_type}: {}", response.metadata.response_code));
        }
        return match response.answers.iter().any(|r| r.record_type() == record_type) {
            true => Ok(()),
            false => Err(format!("{server}: {name} {record_type}: no answer")),
        };
    }
}

/// Runs this node's own check and the probes of its peers' services until `shutdown`.
pub async fn run(membership: Membership, config: HealthConfig, shutdown: CancellationToken) {
    let own = match config.check.as_ref().map(|c| Check::own(c, config.timeout)) {
        Some(Ok(check)) => Some(Arc::new(check)),
        Some(Err(e)) => {
            // The config was validated; this is a client that cannot be built at all.
            tracing::error!("health check disabled: {e}");
            None
        }
        None => None,
    };
    let permits = Arc::new(Semaphore::new(config.max_concurrent_probes));
    let tasks = TaskTracker::new();
    let mut remote: BTreeMap<PublicKey, (IpAddr, ServiceCheck, Arc<Check>)> = BTreeMap::new();
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        if let Some(check) = &own {
            let (check, membership, timeout) = (check.clone(), membership.clone(), config.timeout);
            tasks.spawn(until(shutdown.clone(), async move {
                membership.report_self_check(check.run(timeout).await);
            }));
        }
        let targets = membership.service_targets().await;
        remote.retain(|k, _| targets.iter().any(|(t, _, _)| t == k));
        for (peer, ip, service) in targets {
            let current = remote.get(&peer).filter(|(i, s, _)| *i == ip && *s == service);
            let check = match current {
                Some((_, _, check)) => check.clone(),
                None => match Check::service(&service, SocketAddr::new(ip, service.port()), config.timeout) {
                    Ok(check) => {
                        let check = Arc::new(check);
                        remote.insert(peer, (ip, service, check.clone()));
                        check
                    }
                    Err(e) => {
                        membership.report_service_probe(
                            peer,
                            CheckResult::fail(format!("advertised check refused: {e}")),
                        );
                        continue;
                    }
                },
            };
            let offset = config.interval.mul_f64(rand::rng().random_range(0.0..1.0));
            let (membership, permits, interval, timeout) =
                (membership.clone(), permits.clone(), config.interval, config.timeout);
            tasks.spawn(until(shutdown.clone(), async move {
                tokio::time::sleep(offset).await;
                let Ok(Ok(_permit)) = tokio::time::timeout(interval, permits.acquire_owned()).await else {
                    tracing::debug!(peer = %peer.fingerprint(), "too many service probes running; skipping one");
                    return;
                };
                membership.report_service_probe(peer, check.run(timeout).await);
            }));
        }
    }
    tasks.close();
    tasks.wait().await;
}

async fn until(shutdown: CancellationToken, task: impl Future<Output = ()>) {
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = task => {}
    }
}

#[cfg(test)]
mod tests {
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
}
