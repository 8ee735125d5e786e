//! ACME http-01 answers on real nodes (loopback, 127.0.202.x and 127.0.203.x): the right token
//! gets `200 text/plain` `TOKEN.THUMBPRINT`, everything else 404/405/400/431 or a closed
//! connection (bad tokens, other paths and methods, oversize heads, a slowloris, too many
//! connections), the node unaffected; the thumbprint follows SIGHUP, the address needs a
//! restart; `spdu acme-thumbprint` against RFC 7638's vector and keys made by openssl; and the
//! README's nginx and HAProxy lines, run by nginx and HAProxy, answer as spdu does.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use spdu_cluster::{LocalCluster, Ports, http_get};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::reload::{counter, log, sighup};
use crate::testing::{dig_pool, ips, run_spdu, spdu, wait_until};

const THUMBPRINT: &str = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";
const OTHER_THUMBPRINT: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const TOKEN: &str = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA";
const ACME_PORT: u16 = 18480;

fn acme_toml(ip: Ipv4Addr, thumbprint: &str) -> String {
    format!("[acme]\nthumbprint = \"{thumbprint}\"\nlisten = [\"{ip}:{ACME_PORT}\"]\n")
}

/// One site at `ip` answering challenges on `ip`:[`ACME_PORT`] with `thumbprint`.
async fn start_acme_site(ip: Ipv4Addr, thumbprint: &str) -> LocalCluster {
    let mut cluster =
        LocalCluster::create(spdu(), 1, ip, Ports::default(), &acme_toml(ip, thumbprint)).unwrap();
    cluster.start_site(0).expect("site starts");
    cluster.wait_ready(Duration::from_secs(20)).await.expect("site ready");
    cluster
}

fn acme_addr(cluster: &LocalCluster) -> SocketAddr {
    SocketAddr::new(cluster.ip(0), ACME_PORT)
}

/// Connects from `source` (an address on loopback) to `addr`.
async fn connect_from(source: IpAddr, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    tokio::time::timeout(Duration::from_secs(5), socket.connect(addr))
        .await
        .expect("connect in time")
        .unwrap()
}

/// Reads until the server closes (at most 10 s): everything it sent.
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the server did not close the connection within 10 s");
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends `request` (raw bytes) from 127.0.202.100 and returns the whole reply.
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = connect_from("127.0.202.100".parse().unwrap(), addr).await;
    // The server may close before reading everything (e.g. an oversize head): ignore that.
    let _ = stream.write_all(request).await;
    read_to_close(&mut stream).await
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: api.pool.example.test\r\nUser-Agent: test\r\n\r\n").into_bytes()
}

fn status(reply: &str) -> &str {
    reply.split(' ').nth(1).unwrap_or("(nothing)")
}

fn body(reply: &str) -> &str {
    reply.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

fn has_header(reply: &str, header: &str) -> bool {
    let head = reply.split_once("\r\n\r\n").map_or(reply, |(h, _)| h);
    head.lines().any(|l| l.eq_ignore_ascii_case(header))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_answers_exactly_the_challenge_and_survives_abuse() {
    let cluster = start_acme_site(Ipv4Addr::new(127, 0, 202, 11), THUMBPRINT).await;
    let addr = acme_addr(&cluster);

    let reply = exchange(addr, &get(&format!("/.well-known/acme-challenge/{TOKEN}"))).await;
    assert_eq!(status(&reply), "200", "{reply}");
    assert!(has_header(&reply, "content-type: text/plain"), "{reply}");
    assert_eq!(body(&reply), format!("{TOKEN}.{THUMBPRINT}"));
    let head = format!("HEAD /.well-known/acme-challenge/{TOKEN} HTTP/1.1\r\nHost: x\r\n\r\n");
    let reply = exchange(addr, head.as_bytes()).await;
    assert_eq!((status(&reply), body(&reply)), ("200", ""), "{reply}");
    assert!(
        has_header(&reply, &format!("content-length: {}", TOKEN.len() + 1 + THUMBPRINT.len())),
        "{reply}"
    );
    let answered = 2;

    // Bad tokens, other paths: 404 (or 400 where hyper refuses the request line itself).
    let long = "a".repeat(129);
    let mut not_found = 0;
    for path in [
        "/.well-known/acme-challenge/",
        "/.well-known/acme-challenge/..",
        "/.well-known/acme-challenge/../../etc/passwd",
        "/.well-known/acme-challenge/a%2Fb",
        "/.well-known/acme-challenge/%2F",
        "/.well-known/acme-challenge/a.b",
        "/.well-known/acme-challenge/a/b",
        &format!("/.well-known/acme-challenge/{long}"),
        &format!("/.well-known/acme-challenge/{TOKEN}?x=1"),
        "/.well-known/acme-challenge",
        "/.well-known/ACME-challenge/abc",
        "/",
        "/metrics",
        "/v1/peers",
    ] {
        let reply = exchange(addr, &get(path)).await;
        assert_eq!(status(&reply), "404", "{path}: {reply}");
        assert!(!reply.contains(THUMBPRINT), "{path}: {reply}");
        not_found += 1;
    }
    // Non-ASCII in the path: refused by the parser (400) or not found; never answered.
    let reply =
        exchange(addr, "GET /.well-known/acme-challenge/t\u{e9}st HTTP/1.1\r\nHost: x\r\n\r\n".as_bytes())
            .await;
    assert!(matches!(status(&reply), "400" | "404"), "{reply}");
    not_found += u64::from(status(&reply) == "404");

    // Other methods on a challenge path: 405 with Allow; elsewhere 404.
    for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
        let request = format!(
            "{method} /.well-known/acme-challenge/{TOKEN} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        );
        let reply = exchange(addr, request.as_bytes()).await;
        assert_eq!(status(&reply), "405", "{method}: {reply}");
        assert!(has_header(&reply, "allow: GET, HEAD"), "{reply}");
        not_found += 1;
    }
    let reply = exchange(addr, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc").await;
    assert_eq!(status(&reply), "404", "{reply}");
    not_found += 1;

    // One request per connection: a second request on the same connection is not answered.
    let two =
        [get(&format!("/.well-known/acme-challenge/{TOKEN}")), get("/.well-known/acme-challenge/second")]
            .concat();
    let reply = exchange(addr, &two).await;
    assert_eq!(reply.matches("HTTP/1.1 ").count(), 1, "{reply}");
    assert!(!reply.contains("second."), "{reply}");
    let answered = answered + 1;

    // An oversize head: 431 or closed, never answered.
    let big = format!(
        "GET /.well-known/acme-challenge/{TOKEN} HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(20_000)
    );
    let reply = exchange(addr, big.as_bytes()).await;
    assert!(matches!(status(&reply), "431" | "(nothing)"), "{reply}");
    assert!(!reply.contains(THUMBPRINT));

    // Slowloris: a head that never ends is cut off after the header timeout (3 s).
    let start = Instant::now();
    let mut slow = connect_from("127.0.202.101".parse().unwrap(), addr).await;
    slow.write_all(b"GET /.well-known/acme-challenge/abc HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let _ = slow.write_all(b"X-Slow: 1\r\n").await;
    }
    let reply = read_to_close(&mut slow).await;
    assert!(!reply.contains("200 OK"), "{reply}");
    assert!(start.elapsed() < Duration::from_secs(9), "closed after {:?}", start.elapsed());

    // Too many connections from one source: the cap (16) holds, the next is closed unserved;
    // another source is still answered, and so is this one once its connections are gone.
    let flood: IpAddr = "127.0.202.102".parse().unwrap();
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(connect_from(flood, addr).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut over = connect_from(flood, addr).await;
    let _ = over.write_all(&get(&format!("/.well-known/acme-challenge/{TOKEN}"))).await;
    let reply = read_to_close(&mut over).await;
    assert_eq!(reply, "", "the 17th connection is closed unserved");
    let reply = exchange(addr, &get(&format!("/.well-known/acme-challenge/{TOKEN}"))).await;
    assert_eq!(body(&reply), format!("{TOKEN}.{THUMBPRINT}"), "another source is served: {reply}");
    drop(held);
    // The server sees the held connections close within moments; retried for at most 5 s.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut again = connect_from(flood, addr).await;
        let _ = again.write_all(&get(&format!("/.well-known/acme-challenge/{TOKEN}"))).await;
        let reply = read_to_close(&mut again).await;
        if status(&reply) == "200" {
            break;
        }
        assert!(Instant::now() < deadline, "the source is still refused 5 s after closing: {reply}");
    }
    let answered = answered + 2;

    // Counted; the node is unaffected (DNS, control endpoint).
    assert_eq!(counter(&cluster, 0, "acme_requests_total{result=\"answered\"}"), answered);
    assert_eq!(counter(&cluster, 0, "acme_requests_total{result=\"not_found\"}"), not_found);
    assert!(counter(&cluster, 0, "acme_requests_total{result=\"refused\"}") >= 1);
    assert_eq!(dig_pool(cluster.dns_addr(0)), ips(&cluster, &[0]));
    assert_eq!(http_get(&format!("http://{}/healthz", cluster.control_addr(0))).unwrap(), "ok\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_thumbprint_follows_reload_and_listen_needs_a_restart() {
    let ip = Ipv4Addr::new(127, 0, 203, 11);
    let cluster = start_acme_site(ip, THUMBPRINT).await;
    let addr = acme_addr(&cluster);
    let path = format!("/.well-known/acme-challenge/{TOKEN}");
    assert_eq!(body(&exchange(addr, &get(&path)).await), format!("{TOKEN}.{THUMBPRINT}"));

    cluster.edit_config(0, |text| text.replace(THUMBPRINT, OTHER_THUMBPRINT)).unwrap();
    sighup(&cluster, 0);
    wait_until(Duration::from_secs(10), "the reload", || {
        counter(&cluster, 0, "reloads_total{result=\"ok\"}") == 1
    });
    assert_eq!(body(&exchange(addr, &get(&path)).await), format!("{TOKEN}.{OTHER_THUMBPRINT}"));

    // A new address, a bad thumbprint, or no [acme] at all: refused, still answering as before.
    let original = std::fs::read_to_string(cluster.config_path(0)).unwrap();
    let edits = [
        ("acme.listen", original.replace(&format!(":{ACME_PORT}\""), ":18481\"")),
        ("acme.thumbprint", original.replace(OTHER_THUMBPRINT, "short")),
        ("acme.listen", original.replace(&acme_toml(ip, OTHER_THUMBPRINT), "")),
    ];
    for (n, (field, edited)) in edits.iter().enumerate() {
        assert_ne!(edited, &original);
        std::fs::write(cluster.config_path(0), edited).unwrap();
        sighup(&cluster, 0);
        wait_until(Duration::from_secs(10), "the refusal", || {
            counter(&cluster, 0, "reloads_total{result=\"refused\"}") == n as u64 + 1
        });
        let logged = log(&cluster, 0);
        let line = logged.lines().filter(|l| l.contains("reload refused")).nth(n).unwrap();
        assert!(line.contains(&format!("{field}: ")), "{line}");
        assert_eq!(body(&exchange(addr, &get(&path)).await), format!("{TOKEN}.{OTHER_THUMBPRINT}"));
    }
}

/// `spdu check` and `spdu run` name the field of a bad `[acme]`; a taken address fails the start.
#[test]
fn acme_config_mistakes_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::create(
        spdu(),
        1,
        "127.0.203.21".parse().unwrap(),
        Ports::default(),
        "[acme]\nthumbprint = \"not-a-thumbprint\"\nlisten = [\"127.0.203.21:18480\"]\n",
    )
    .unwrap();
    let out = run_spdu(&["check", "--config", cluster.config_path(0).to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(".toml:") && stderr.contains("acme.thumbprint: \"not-a-thumbprint\""),
        "{stderr}"
    );

    let _taken = std::net::TcpListener::bind("127.0.203.22:18480").unwrap();
    let config = dir.path().join("taken.toml");
    let text = std::fs::read_to_string(cluster.config_path(0))
        .unwrap()
        .replace("not-a-thumbprint", THUMBPRINT)
        .replace("127.0.203.21:18480", "127.0.203.22:18480")
        .replace("key = \"", &format!("key = \"{}/", cluster.dir().display()));
    std::fs::write(&config, text).unwrap();
    let out = run_spdu(&["check", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run_spdu(&["run", "--config", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("acme.listen[0]: cannot bind 127.0.203.22:18480"), "{stderr}");
}

fn openssl(args: &[&str]) -> Option<String> {
    let out = Command::new("openssl").args(args).output().ok()?;
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn thumbprint_cli(path: &std::path::Path) -> Result<String, String> {
    let out = run_spdu(&["acme-thumbprint", "--account-key", path.to_str().unwrap()]);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unhex(text: &str) -> Vec<u8> {
    let text = text.trim();
    let text = if text.len() % 2 == 1 { format!("0{text}") } else { text.to_owned() };
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
}

/// RFC 7638's vector as a JWK file; RSA and EC keys made by openssl in every PEM form, compared
/// with the JWK openssl's own numbers make; private keys readable by others refused.
#[test]
fn acme_thumbprint_of_jwk_and_pem_keys() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str, mode: u32| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    };
    let rfc = r#"{"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB","alg":"RS256","kid":"2011-04-29"}"#;
    assert_eq!(thumbprint_cli(&write("rfc.json", rfc, 0o644)).unwrap(), THUMBPRINT);
    let private = rfc.replace("\"kty\"", "\"d\":\"AQAB\",\"kty\"");
    let e = thumbprint_cli(&write("private.json", &private, 0o644)).unwrap_err();
    assert!(e.contains("UNPROTECTED PRIVATE KEY FILE"), "{e}");
    assert_eq!(thumbprint_cli(&write("private.json", &private, 0o600)).unwrap(), THUMBPRINT);
    for garbage in ["", "{\"kty\":\"RSA\"}", "-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n"]
    {
        let e = thumbprint_cli(&write("bad", garbage, 0o600)).unwrap_err();
        assert!(e.starts_with("error: "), "{e}");
    }

    let key = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    if openssl(&["version"]).is_none() {
        eprintln!("SKIPPED (PEM against openssl): openssl is not installed");
        return;
    }
    // RSA: PKCS#8, PKCS#1, SPKI, PKCS#1 public.
    openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", &key("rsa8.pem")]);
    openssl(&["rsa", "-in", &key("rsa8.pem"), "-traditional", "-out", &key("rsa1.pem")]);
    openssl(&["pkey", "-in", &key("rsa8.pem"), "-pubout", "-out", &key("rsapub.pem")]);
    openssl(&["rsa", "-in", &key("rsa8.pem"), "-RSAPublicKey_out", "-out", &key("rsapub1.pem")]);
    let modulus = openssl(&["rsa", "-in", &key("rsa8.pem"), "-noout", "-modulus"]).unwrap();
    let n = b64url(&unhex(modulus.trim().trim_start_matches("Modulus=")));
    let jwk = format!(r#"{{"kty":"RSA","n":"{n}","e":"AQAB"}}"#);
    let expected = thumbprint_cli(&write("rsa.jwk", &jwk, 0o600)).unwrap();
    for file in ["rsa8.pem", "rsa1.pem", "rsapub.pem", "rsapub1.pem"] {
        std::fs::set_permissions(key(file), std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(thumbprint_cli(&dir.path().join(file)).unwrap(), expected, "{file}");
    }
    // EC P-256 and P-384: PKCS#8, SEC1, SPKI.
    for (curve, len) in [("P-256", 32), ("P-384", 48)] {
        let name = |kind: &str| key(&format!("{curve}-{kind}.pem"));
        openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            &format!("ec_paramgen_curve:{curve}"),
            "-out",
            &name("8"),
        ]);
        openssl(&["ec", "-in", &name("8"), "-out", &name("sec1")]);
        openssl(&["pkey", "-in", &name("8"), "-pubout", "-out", &name("pub")]);
        let der = Command::new("openssl")
            .args(["pkey", "-in", &name("8"), "-pubout", "-outform", "DER"])
            .output()
            .unwrap();
        let point = &der.stdout[der.stdout.len() - 2 * len..];
        let jwk = format!(
            r#"{{"kty":"EC","crv":"{curve}","x":"{}","y":"{}"}}"#,
            b64url(&point[..len]),
            b64url(&point[len..])
        );
        let expected = thumbprint_cli(&write(&format!("{curve}.jwk"), &jwk, 0o600)).unwrap();
        for kind in ["8", "sec1", "pub"] {
            std::fs::set_permissions(name(kind), std::fs::Permissions::from_mode(0o600)).unwrap();
            assert_eq!(
                thumbprint_cli(std::path::Path::new(&name(kind))).unwrap(),
                expected,
                "{curve} {kind}"
            );
        }
    }
}

/// The one-line configuration in the README's fenced block tagged `lang`, with `thumbprint`.
fn readme_line(lang: &str, thumbprint: &str) -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let block = readme.split(&format!("```{lang}\n")).nth(1).unwrap_or_else(|| panic!("no {lang} block"));
    let line = block.split("```").next().unwrap().trim();
    assert_eq!(line.lines().count(), 1, "{lang}: one line: {line}");
    assert!(line.contains("THUMBPRINT"), "{line}");
    line.replace("THUMBPRINT", thumbprint)
}

/// Whether `tool` runs (`None`: skip; a failure under SPDU_REQUIRE_TOOLS).
fn have(tool: &str, package: &str) -> bool {
    let found = Command::new(tool).arg("-v").output().is_ok();
    if !found {
        assert!(
            std::env::var_os("SPDU_REQUIRE_TOOLS").is_none(),
            "{tool} is required (SPDU_REQUIRE_TOOLS is set): apt-get install {package}"
        );
        eprintln!("SKIPPED: {tool} is not installed (apt-get install {package})");
    }
    found
}

/// A child process killed and reaped on drop.
struct Child(std::process::Child);

impl Drop for Child {
    /// SIGTERM first (nginx's master then stops its workers), SIGKILL after 3 s.
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        for _ in 0..30 {
            if self.0.try_wait().is_ok_and(|s| s.is_some()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A GET of `path` that asks the server to close the connection after the reply.
fn get_and_close(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: api.pool.example.test\r\nConnection: close\r\n\r\n").into_bytes()
}

/// Waits (at most 10 s) until `addr` accepts connections.
async fn wait_listening(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "{what} does not listen on {addr}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The README's nginx and HAProxy one-liners, run by real nginx and HAProxy, answer a challenge
/// exactly as spdu does (status, content type, body) and answer no malformed token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_readme_nginx_and_haproxy_lines_answer_like_spdu() {
    if !have("nginx", "nginx-light") || !have("haproxy", "haproxy") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let nginx_addr: SocketAddr = "127.0.203.31:18490".parse().unwrap();
    let haproxy_addr: SocketAddr = "127.0.203.32:18490".parse().unwrap();

    let nginx_conf = format!(
        "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/nginx.err;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/b;\n  proxy_temp_path {d}/p;\n  \
         fastcgi_temp_path {d}/f;\n  uwsgi_temp_path {d}/u;\n  scgi_temp_path {d}/s;\n  \
         server {{\n    listen {nginx_addr};\n    {}\n  }}\n}}\n",
        readme_line("nginx", THUMBPRINT)
    );
    std::fs::write(dir.path().join("nginx.conf"), nginx_conf).unwrap();
    let haproxy_conf = format!(
        "defaults\n  mode http\n  timeout connect 1s\n  timeout client 5s\n  timeout server 5s\n\
         frontend acme\n  bind {haproxy_addr}\n  {}\n",
        readme_line("haproxy", THUMBPRINT)
    );
    std::fs::write(dir.path().join("haproxy.cfg"), haproxy_conf).unwrap();
    let check = Command::new("haproxy")
        .args(["-c", "-q", "-f"])
        .arg(dir.path().join("haproxy.cfg"))
        .output()
        .unwrap();
    assert!(check.status.success(), "haproxy -c: {}", String::from_utf8_lossy(&check.stderr));

    let _nginx = Child(
        Command::new("nginx")
            .args(["-p", &d.to_string(), "-e", &format!("{d}/nginx.err"), "-c"])
            .arg(dir.path().join("nginx.conf"))
            .spawn()
            .unwrap(),
    );
    let _haproxy = Child(
        Command::new("haproxy").args(["-db", "-f"]).arg(dir.path().join("haproxy.cfg")).spawn().unwrap(),
    );
    let cluster = start_acme_site(Ipv4Addr::new(127, 0, 203, 41), THUMBPRINT).await;
    wait_listening(nginx_addr, "nginx").await;
    wait_listening(haproxy_addr, "haproxy").await;

    for (name, addr) in [("spdu", acme_addr(&cluster)), ("nginx", nginx_addr), ("haproxy", haproxy_addr)] {
        for token in [TOKEN, "a", "A-_z9"] {
            let reply = exchange(addr, &get_and_close(&format!("/.well-known/acme-challenge/{token}"))).await;
            assert_eq!(status(&reply), "200", "{name} {token}: {reply}");
            assert!(has_header(&reply, "content-type: text/plain"), "{name}: {reply}");
            assert_eq!(body(&reply), format!("{token}.{THUMBPRINT}"), "{name}: {reply}");
        }
        for path in [
            "/.well-known/acme-challenge/",
            "/.well-known/acme-challenge/a.b",
            "/.well-known/acme-challenge/a%2Fb",
            "/.well-known/acme-challenge/a/b",
            "/.well-known/acme-challenge/t%C3%A9st",
            "/Xwell-known/acme-challenge/abc",
            "/.well-known/acme-challengeX/abc",
            "/",
        ] {
            let reply = exchange(addr, &get_and_close(path)).await;
            assert_ne!(status(&reply), "200", "{name} {path}: {reply}");
            assert!(!reply.contains(THUMBPRINT), "{name} {path}: {reply}");
        }
    }
}
