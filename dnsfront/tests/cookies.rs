//! DNS cookies (RFC 7873, RFC 9018 server cookies) on a real `DnsServer` on loopback, checked
//! with `dig +cookie` and `kdig +cookie` and with hickory-proto messages from chosen source
//! addresses: a server cookie is issued for every client cookie, a valid one is accepted, a bad
//! one gets BADCOOKIE with a fresh cookie over UDP and a normal answer over TCP, and with
//! cookies off no COOKIE is sent back and none is checked.

mod testing;

use std::{
    net::{IpAddr, SocketAddr},
    process::Command,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use hickory_proto::{
    op::{Edns, Message, ResponseCode},
    rr::RecordType,
};
use testing::{TestServer, addrs, answer_ips, cookie_of, query, query_with_cookie, tcp, zone};
use tokio::{net::UdpSocket, time::timeout};

const API: &str = "api.pool.example.test.";

/// Runs `tool @server -p PORT ARGS…` (dig or kdig) on a blocking thread and returns its
/// standard output.
async fn run(tool: &'static str, server: SocketAddr, args: &[&str]) -> String {
    let mut command = Command::new(tool);
    let tries = if tool == "kdig" { "+retry=0" } else { "+tries=1" };
    command.arg(format!("@{}", server.ip())).args(["-p", &server.port().to_string(), "+time=2", tries]);
    command.args(args);
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{tool} is needed for this test (dnsutils, knot-dnsutils): {e}"));
    // Standard error too: the tools' warnings explain a failed assertion.
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The COOKIE option dig or kdig printed (hex, client and server cookie), if any.
fn printed_cookie(output: &str) -> Option<String> {
    let line = output.lines().find(|l| l.contains("COOKIE:"))?;
    let after = &line[line.find("COOKIE:")? + "COOKIE:".len()..];
    let hex: String =
        after.split_whitespace().take_while(|word| word.chars().all(|c| c.is_ascii_hexdigit())).collect();
    Some(hex.to_ascii_lowercase())
}

/// The status of the last response the tool printed (kdig prints the BADCOOKIE it retried
/// after, too).
fn status(output: &str) -> &str {
    status_of(output).unwrap_or_else(|| panic!("no response: {output}"))
}

fn status_of(output: &str) -> Option<&str> {
    let start = output.rfind("status: ")? + "status: ".len();
    output[start..].split([',', ';']).next()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn now() -> u32 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as u32
}

/// Checks a server cookie we issued: RFC 9018 form, stamped now.
fn assert_rfc9018(server_cookie: &[u8]) {
    assert_eq!(server_cookie.len(), 16, "{server_cookie:02x?}");
    assert_eq!(server_cookie[..4], [1, 0, 0, 0], "version 1, reserved 0");
    let stamp = u32::from_be_bytes(server_cookie[4..8].try_into().unwrap());
    assert!(now().abs_diff(stamp) <= 5, "timestamp {stamp}, now {}", now());
}

/// An A query for `API` with EDNS and a COOKIE option holding `cookie`.
fn with_cookie(cookie: &[u8]) -> Message {
    query_with_cookie(API, RecordType::A, cookie)
}

/// Sends `message` over UDP from `from` (any port) and returns the reply.
async fn udp_from(from: IpAddr, server: SocketAddr, message: &Message) -> Message {
    let socket = UdpSocket::bind((from, 0)).await.unwrap();
    socket.send_to(&message.to_vec().unwrap(), server).await.unwrap();
    let mut buf = vec![0; 65535];
    let (len, _) =
        timeout(Duration::from_secs(3), socket.recv_from(&mut buf)).await.expect("a reply").unwrap();
    Message::from_vec(&buf[..len]).unwrap()
}

/// dig and kdig each get a server cookie for their client cookie; sent back from the same
/// address it is accepted (a normal answer, a fresh cookie), from another address it is not.
#[tokio::test]
async fn dig_and_kdig_get_server_cookies_that_validate() {
    let server = TestServer::start(zone(&["api"]), 1, addrs(&["192.0.2.1"])).await;
    let loopback: IpAddr = "127.0.0.1".parse().unwrap();
    let other: IpAddr = "127.0.0.2".parse().unwrap();
    for tool in ["dig", "kdig"] {
        let out = run(tool, server.addr, &["+cookie", API, "A"]).await;
        assert_eq!(status(&out), "NOERROR", "{tool}: {out}");
        assert!(out.contains("192.0.2.1"), "{tool}: {out}");
        let cookie = printed_cookie(&out).unwrap_or_else(|| panic!("{tool} shows no COOKIE: {out}"));
        assert_eq!(cookie.len(), 48, "{tool}: 8-byte client and 16-byte server cookie: {out}");
        let bytes = unhex(&cookie);
        assert_rfc9018(&bytes[8..]);
        if tool == "dig" {
            assert!(out.contains("(good)"), "dig checks the client cookie came back: {out}");
        }

        // The tool sends the full cookie back: accepted, answered, a fresh cookie returned.
        let again = run(tool, server.addr, &[&format!("+cookie={cookie}"), API, "A"]).await;
        assert_eq!(status(&again), "NOERROR", "{tool}: {again}");
        assert!(again.contains("192.0.2.1"), "{tool}: {again}");
        let renewed = printed_cookie(&again).unwrap_or_else(|| panic!("{again}"));
        assert_eq!(renewed[..16], cookie[..16], "{tool}: the client cookie is echoed");
        assert_rfc9018(&unhex(&renewed)[8..]);

        // The same cookie from this address is valid, from another it is bad (the hash
        // covers the client's address).
        let here = udp_from(loopback, server.addr, &with_cookie(&bytes)).await;
        assert_eq!(here.metadata.response_code, ResponseCode::NoError);
        assert_eq!(answer_ips(&here), addrs(&["192.0.2.1"]));
        let there = udp_from(other, server.addr, &with_cookie(&bytes)).await;
        assert_eq!(there.metadata.response_code, ResponseCode::BADCOOKIE, "{tool}'s cookie from {other}");
        assert!(there.answers.is_empty());
        let fresh = cookie_of(&there).expect("BADCOOKIE carries a fresh cookie");
        assert_eq!(fresh[..8], bytes[..8]);
        assert_rfc9018(&fresh[8..]);
        // ... and that fresh cookie is good from there.
        let retried = udp_from(other, server.addr, &with_cookie(&fresh)).await;
        assert_eq!(retried.metadata.response_code, ResponseCode::NoError);
    }
    let metrics = server.metrics_text();
    assert!(
        metrics.contains(r#"dns_queries_total{rcode="badcookie",qtype="a",transport="udp"} 2"#),
        "{metrics}"
    );
    server.stop().await;
}

/// A bad server cookie (RFC 7873 §5.2.4): over UDP BADCOOKIE with the client cookie and a fresh
/// server cookie (dig and kdig both say BADCOOKIE when not told to retry, and retry to an answer
/// when told to); over TCP a normal answer with a fresh cookie.
#[tokio::test]
async fn bad_server_cookies_get_badcookie_over_udp_and_answers_over_tcp() {
    let server = TestServer::start(zone(&["api"]), 1, addrs(&["192.0.2.1"])).await;
    let client = "0123456789abcdef";
    let bad = format!("{client}01000000{:08x}0011223344556677", now());
    for (tool, no_retry, retry) in
        [("dig", "+nobadcookie", "+badcookie"), ("kdig", "+nobadcookie", "+badcookie")]
    {
        let out = run(tool, server.addr, &[&format!("+cookie={bad}"), no_retry, API, "A"]).await;
        assert_eq!(status(&out), "BADCOOKIE", "{tool}: {out}");
        assert!(!out.contains("192.0.2.1"), "{tool}: no answer with BADCOOKIE: {out}");
        let fresh = printed_cookie(&out).unwrap_or_else(|| panic!("{tool}: {out}"));
        assert_eq!(fresh[..16], *client, "{tool}: {out}");
        assert_ne!(fresh, bad);
        assert_rfc9018(&unhex(&fresh)[8..]);

        let out = run(tool, server.addr, &[&format!("+cookie={bad}"), retry, API, "A"]).await;
        assert_eq!(status(&out), "NOERROR", "{tool} retries with the fresh cookie: {out}");
        assert!(out.contains("192.0.2.1"), "{tool}: {out}");

        let out = run(tool, server.addr, &["+tcp", &format!("+cookie={bad}"), no_retry, API, "A"]).await;
        assert_eq!(status(&out), "NOERROR", "{tool} over TCP: {out}");
        assert!(out.contains("192.0.2.1"), "{tool} over TCP: {out}");
        assert_eq!(printed_cookie(&out).unwrap()[..16], *client, "{tool} over TCP: {out}");
    }
    // Over TCP with hickory: the answer and a fresh, valid cookie.
    let reply = tcp(server.addr, &with_cookie(&unhex(&bad))).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(answer_ips(&reply), addrs(&["192.0.2.1"]));
    assert_rfc9018(&cookie_of(&reply).unwrap()[8..]);
    // A query without a cookie gets none back.
    let plain = udp_from("127.0.0.1".parse().unwrap(), server.addr, &{
        let mut m = query(API, RecordType::A);
        m.set_edns(Edns::new());
        m
    })
    .await;
    assert_eq!(cookie_of(&plain), None);
    server.stop().await;
}

/// With cookies off, no COOKIE comes back and a bad server cookie is answered normally.
#[tokio::test]
async fn cookies_can_be_turned_off() {
    let server = TestServer::start_with(zone(&["api"]), 1, addrs(&["192.0.2.1"]), |s| {
        assert!(s.cookies(), "on by default");
        s.with_cookies(false)
    })
    .await;
    let bad = format!("0123456789abcdef01000000{:08x}0011223344556677", now());
    for tool in ["dig", "kdig"] {
        for cookie in ["+cookie".to_string(), format!("+cookie={bad}")] {
            let out = run(tool, server.addr, &[&cookie, "+nobadcookie", API, "A"]).await;
            assert_eq!(status(&out), "NOERROR", "{tool} {cookie}: {out}");
            assert!(out.contains("192.0.2.1"), "{tool} {cookie}: {out}");
            let shown = printed_cookie(&out).filter(|c| !c.is_empty());
            assert_eq!(shown, None, "{tool} {cookie}: no COOKIE in the response: {out}");
        }
    }
    let reply = udp_from("127.0.0.1".parse().unwrap(), server.addr, &with_cookie(&unhex(&bad))).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(cookie_of(&reply), None);
    server.stop().await;
}

/// A knotd (`mod-cookies`) started by the test, killed and reaped on drop.
struct Knotd {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Drop for Knotd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// RFC 9018 interoperability, both ways, with knotd's `mod-cookies` under the same secret: the
/// server cookie knotd issues to 127.0.0.1 is valid here, and the one we issue to 127.0.0.1 is
/// valid for knotd (which answers a bad one with BADCOOKIE).
#[tokio::test]
async fn server_cookies_interoperate_with_knotd() {
    const SECRET: &str = "e5e973e5a6b2a43f48e7dc849e37bfcf";
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let path = dir.path().display().to_string();
    std::fs::write(
        dir.path().join("pool.zone"),
        "$ORIGIN pool.example.test.\n@ 5 IN SOA alpha.example.test. hostmaster.pool.example.test. 1 3600 600 1209600 5\n\
         @ 5 IN NS alpha.example.test.\napi 5 IN A 192.0.2.1\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("knot.conf"),
        format!(
            "server:\n  listen: 127.0.0.1@{port}\n  rundir: {path}\n  udp-workers: 1\n  tcp-workers: 1\n  \
             background-workers: 1\nlog:\n  - target: stderr\n    any: error\ndatabase:\n  storage: {path}\n\
             mod-cookies:\n  - id: shared\n    secret: 0x{SECRET}\ntemplate:\n  - id: default\n    storage: {path}\n    \
             zonefile-sync: -1\n    journal-content: none\n    global-module: mod-cookies/shared\n\
             zone:\n  - domain: pool.example.test\n    file: {path}/pool.zone\n"
        ),
    )
    .unwrap();
    let child = Command::new("knotd")
        .arg("-c")
        .arg(dir.path().join("knot.conf"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("knotd is needed for this test (apt-get install knot): {e}"));
    let knotd = Knotd { child, _dir: dir };
    let server: SocketAddr = (IpAddr::from([127, 0, 0, 1]), port).into();
    let mut knot_cookie = None;
    for _ in 0..50 {
        // knotd answers a client cookie alone with BADCOOKIE; kdig retries with the cookie.
        let out = run("kdig", server, &["+cookie=0123456789abcdef", API, "A"]).await;
        if status_of(&out) == Some("NOERROR") {
            knot_cookie = printed_cookie(&out);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let knot_cookie = knot_cookie.expect("knotd answered with a cookie within 5 s");
    assert_eq!(knot_cookie.len(), 48);
    assert_rfc9018(&unhex(&knot_cookie)[8..]);

    let mut responder = spdu_dnsfront::offline::Responder::new(
        &zone(&["api"]),
        spdu_dnsfront::PoolAnswers::same_for_all(1, 1, 5, addrs(&["192.0.2.1"])),
    )
    .unwrap();
    responder.set_cookies(Some((unhex(SECRET).try_into().unwrap(), now())));
    // The responder's queries come from 127.0.0.1, as kdig's to knotd did.
    let reply = responder.answer(&with_cookie(&unhex(&knot_cookie)).to_vec().unwrap(), true).unwrap();
    let reply = Message::from_vec(&reply).unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError, "knotd's cookie is valid here");
    let mut forged = unhex(&knot_cookie);
    forged[23] ^= 1;
    let reply =
        Message::from_vec(&responder.answer(&with_cookie(&forged).to_vec().unwrap(), true).unwrap()).unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::BADCOOKIE, "a forged one is not");

    let ours = responder.issue_cookie([0xab; 8], "127.0.0.1:5353".parse().unwrap()).unwrap();
    let ours: String = ours.iter().map(|b| format!("{b:02x}")).collect();
    let out = run("kdig", server, &[&format!("+cookie={ours}"), "+nobadcookie", API, "A"]).await;
    assert_eq!(status(&out), "NOERROR", "knotd accepts our server cookie: {out}");
    let forged = format!("{}{}", &ours[..47], if ours.ends_with('0') { "1" } else { "0" });
    let out = run("kdig", server, &[&format!("+cookie={forged}"), "+nobadcookie", API, "A"]).await;
    assert_eq!(status(&out), "BADCOOKIE", "knotd checks cookies at all: {out}");
    drop(knotd);
}
