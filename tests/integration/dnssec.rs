//! DNSSEC: zone keys, `spdu ds` and `spdu check`, checked against knot's `keymgr` (which reads
//! the same PKCS#8 key file and computes the DNSKEY and DS itself); signed answers from real
//! sites, checked with `kdig`, validated by `delv` and by a validating `unbound`; the signature
//! window under libfaketime.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::testing::run_spdu;

const ZONE: &str = "pool.example.test";

fn stdout(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// `spdu dnssec-keygen`; returns the printed DNSKEY RDATA (`257 3 13 …`).
fn keygen(path: &Path, algorithm: &str) -> String {
    let line =
        stdout(&run_spdu(&["dnssec-keygen", "--out", path.to_str().unwrap(), "--algorithm", algorithm]));
    let rdata = line.trim().strip_prefix("@ 3600 IN DNSKEY ").unwrap_or_else(|| panic!("{line}"));
    assert!(rdata.starts_with(&format!("257 3 {algorithm} ")), "{line}");
    rdata.to_owned()
}

/// A node config at 127.0.206.x with `[dnssec]` (unless `dnssec` is empty) and one peer per
/// `(name, dnssec_key line)`.
fn config(dir: &Path, dnssec: &str, peers: &[(&str, &str)]) -> std::path::PathBuf {
    let node_key = dir.join("node.key");
    if !node_key.exists() {
        stdout(&run_spdu(&["keygen", "--out", node_key.to_str().unwrap()]));
    }
    let mut text = format!(
        "[node]\nname = \"alpha\"\nkey = \"node.key\"\ngossip = \"127.0.206.1:17946\"\n\
         dns = [\"127.0.206.1:15353\"]\ncontrol = \"127.0.206.1:17947\"\naddresses = [\"127.0.206.1\"]\n\
         [zone]\norigin = \"{ZONE}\"\nnames = [\"api\"]\nttl = 5\nnameservers = [\"ns1.example.test\"]\n{dnssec}\n"
    );
    for (i, (name, key_line)) in peers.iter().enumerate() {
        let peer_dir = tempfile::tempdir().unwrap();
        let peer_key = peer_dir.path().join("k");
        let public = stdout(&run_spdu(&["keygen", "--out", peer_key.to_str().unwrap()]));
        text.push_str(&format!(
            "[[peers]]\nname = \"{name}\"\nkey = \"{}\"\ngossip = \"127.0.206.{}:17946\"\n{key_line}\n",
            public.trim(),
            i + 2
        ));
    }
    let path = dir.join("spdu.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Imports `key_file` into a scratch knot KASP database; returns keymgr's DNSKEY and SHA-256 DS.
fn keymgr_truth(key_file: &Path, algorithm: &str) -> (String, String) {
    let kasp = tempfile::tempdir().unwrap();
    let keymgr = |args: &[&str]| {
        let out = Command::new("keymgr")
            .arg("-D")
            .arg(kasp.path())
            .arg(format!("{ZONE}."))
            .args(args)
            .output()
            .expect("keymgr (Debian package knot-dnssecutils) is installed");
        assert!(out.status.success(), "keymgr {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let id = keymgr(&[
        "import-pem",
        key_file.to_str().unwrap(),
        &format!("algorithm={algorithm}"),
        "ksk=yes",
        "zsk=yes",
    ]);
    let id = id.lines().next().unwrap().trim().to_owned();
    let dnskey = keymgr(&["dnskey", &id]);
    let ds = keymgr(&["ds", &id]);
    let ds = ds.lines().find(|l| l.split_whitespace().nth(4) == Some("2")).unwrap().to_owned();
    (dnskey.trim().to_owned(), ds)
}

#[test]
fn keygen_writes_a_private_csk_and_keymgr_agrees_on_its_dnskey() {
    let dir = tempfile::tempdir().unwrap();
    for algorithm in ["13", "15"] {
        let path = dir.path().join(format!("zone{algorithm}.key"));
        let rdata = keygen(&path, algorithm);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let (dnskey, _) = keymgr_truth(&path, algorithm);
        assert_eq!(dnskey, format!("{ZONE}. DNSKEY {rdata}"));

        let again = run_spdu(&["dnssec-keygen", "--out", path.to_str().unwrap()]);
        assert!(!again.status.success());
        assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    }
    let with_zone = dir.path().join("zoned.key");
    let line = stdout(&run_spdu(&["dnssec-keygen", "--out", with_zone.to_str().unwrap(), "--zone", ZONE]));
    assert!(line.starts_with(&format!("{ZONE}. 3600 IN DNSKEY 257 3 13 ")), "{line}");
    let bad =
        run_spdu(&["dnssec-keygen", "--out", dir.path().join("x").to_str().unwrap(), "--algorithm", "14"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("only 13"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[test]
fn ds_prints_every_sites_ds_as_keymgr_computes_it() {
    for algorithm in ["13", "15"] {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("zone.key");
        keygen(&own, algorithm);
        let peer_dir = tempfile::tempdir().unwrap();
        let (beta, gamma) = (peer_dir.path().join("beta.key"), peer_dir.path().join("gamma.key"));
        let beta_key = keygen(&beta, algorithm);
        let gamma_key = keygen(&gamma, algorithm);
        let path = config(
            dir.path(),
            "[dnssec]\nkey = \"zone.key\"\n",
            &[
                ("beta", &format!("dnssec_key = \"{beta_key}\"")),
                ("gamma", &format!("dnssec_key = \"{gamma_key}\"")),
            ],
        );
        let printed = stdout(&run_spdu(&["ds", "--config", path.to_str().unwrap()]));
        let expected: Vec<String> =
            [&own, &beta, &gamma].iter().map(|k| keymgr_truth(k, algorithm).1).collect();
        let lines: Vec<&str> = printed.lines().collect();
        assert_eq!(lines.len(), 3, "{printed}");
        for (line, truth) in lines.iter().zip(&expected) {
            // keymgr: `zone. DS tag alg 2 hex`; ours adds the class, ready for a zone file.
            assert_eq!(line.to_ascii_lowercase(), truth.replacen(" DS ", " IN DS ", 1).to_ascii_lowercase());
        }
        let check = stdout(&run_spdu(&["check", "--config", path.to_str().unwrap()]));
        assert!(check.contains("dnssec: key tag") && check.contains("2 peer keys"), "{check}");
    }
}

#[test]
fn check_refuses_mixed_algorithms_and_missing_keys() {
    let dir = tempfile::tempdir().unwrap();
    let own = dir.path().join("zone.key");
    let own_key = keygen(&own, "13");
    let peer_dir = tempfile::tempdir().unwrap();
    let ecdsa = keygen(&peer_dir.path().join("e.key"), "13");
    let ed25519 = keygen(&peer_dir.path().join("d.key"), "15");
    let dnssec = "[dnssec]\nkey = \"zone.key\"\n";
    let line = |k: &str| format!("dnssec_key = \"{k}\"");
    // (the [dnssec] section, the peers with their dnssec_key line, the expected error)
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            dnssec,
            vec![("beta", line(&ecdsa)), ("gamma", line(&ed25519))],
            "peers[1].dnssec_key: algorithm 15",
        ),
        (dnssec, vec![("beta", line(&ed25519))], "this node's dnssec.key is algorithm 13"),
        (dnssec, vec![("beta", line(&ecdsa)), ("gamma", String::new())], "peers[1].dnssec_key: missing"),
        ("", vec![("beta", line(&ecdsa))], "no [dnssec] section"),
        (dnssec, vec![("beta", line(&own_key))], "this node's own DNSKEY"),
        (dnssec, vec![("beta", line(&ecdsa)), ("gamma", line(&ecdsa))], "the same key as peers[0]"),
        (dnssec, vec![("beta", line("257 3 8 AwEAAQ=="))], "algorithm 8 is not supported"),
        (
            "[dnssec]\nkey = \"zone.key\"\nttl = 5\n",
            vec![("beta", line(&ecdsa))],
            "dnssec.ttl: 5 is out of bounds",
        ),
        ("[dnssec]\nkey = \"missing.key\"\n", vec![("beta", line(&ecdsa))], "dnssec.key"),
    ];
    for (i, (section, peers, expected)) in cases.iter().enumerate() {
        let peers: Vec<(&str, &str)> = peers.iter().map(|(n, l)| (*n, l.as_str())).collect();
        let path = config(dir.path(), section, &peers);
        let out = run_spdu(&["check", "--config", path.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "case {i} was accepted");
        assert!(err.contains(expected) && err.contains("spdu.toml"), "case {i}: {err}");
        if !expected.contains("this node's") && !expected.starts_with("dnssec.key") {
            // Config errors name file:line:column.
            assert!(
                err.contains("spdu.toml:")
                    && err.split("spdu.toml:").nth(1).unwrap().starts_with(char::is_numeric),
                "case {i}: {err}"
            );
        }
    }
    std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o640)).unwrap();
    let path = config(dir.path(), dnssec, &[("beta", &line(&ecdsa))]);
    let err = String::from_utf8(run_spdu(&["ds", "--config", path.to_str().unwrap()]).stderr).unwrap();
    assert!(err.contains("UNPROTECTED PRIVATE KEY FILE"), "{err}");
}

/// One running `spdu run` of a signed world; killed (by its own pid) when dropped.
struct Site {
    dir: tempfile::TempDir,
    child: std::process::Child,
    dns: std::net::SocketAddr,
    /// This site's DNSKEY RDATA.
    dnskey: String,
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Site {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("spdu.log")).unwrap_or_default()
    }
}

/// Keys and configs for `n` sites at 127.0.`block`.1..n (DNS port 15353), each with
/// `addresses` service addresses at 127.0.`block`.(100 + 20·i + j); `extra` goes into each
/// `[dnssec]` section. Returns the directories and DNSKEYs; [`start`] runs them.
fn signed_world(
    block: u8,
    n: usize,
    algorithm: &str,
    addresses: usize,
    extra: &str,
) -> Vec<(tempfile::TempDir, String)> {
    let sites: Vec<(tempfile::TempDir, String, String)> = (0..n)
        .map(|_| {
            let dir = tempfile::tempdir().unwrap();
            let node = stdout(&run_spdu(&["keygen", "--out", dir.path().join("node.key").to_str().unwrap()]));
            let dnskey = keygen(&dir.path().join("zone.key"), algorithm);
            (dir, node.trim().to_owned(), dnskey)
        })
        .collect();
    let ip = |i: usize| format!("127.0.{block}.{}", i + 1);
    let addrs = |i: usize| -> Vec<String> {
        (0..addresses).map(|j| format!("\"127.0.{block}.{}\"", 100 + 20 * i + j)).collect()
    };
    for (i, (dir, _, _)) in sites.iter().enumerate() {
        let mut text = format!(
            "[node]\nname = \"site{i}\"\nkey = \"node.key\"\ngossip = \"{ip}:17946\"\ndns = [\"{ip}:15353\"]\n\
             control = \"{ip}:17947\"\naddresses = [{addrs}]\n\
             [timing]\nprobe_interval_ms = 100\nprobe_timeout_ms = 100\nheartbeat_ms = 100\n\
             [zone]\norigin = \"{ZONE}\"\nnames = [\"api\"]\nttl = 5\nnameservers = [\"ns1.example.test\"]\n\
             [[zone.record]]\nname = \"one\"\npolicy = \"weighted\"\nmax_answers = 1\n\
             [dnssec]\nkey = \"zone.key\"\n{extra}\n",
            ip = ip(i),
            addrs = addrs(i).join(", ")
        );
        for (j, (_, node, dnskey)) in sites.iter().enumerate().filter(|(j, _)| *j != i) {
            text.push_str(&format!(
                "[[peers]]\nname = \"site{j}\"\nkey = \"{node}\"\ngossip = \"{}:17946\"\naddresses = [{}]\n\
                 dnssec_key = \"{dnskey}\"\n",
                ip(j),
                addrs(j).join(", ")
            ));
        }
        std::fs::write(dir.path().join("spdu.toml"), text).unwrap();
    }
    sites.into_iter().map(|(dir, _, dnskey)| (dir, dnskey)).collect()
}

/// Starts a site of [`signed_world`] and waits until it answers the SOA. With `faketime`
/// (libfaketime's `FAKETIME` setting, e.g. `-3d`), libfaketime is preloaded into spdu itself
/// with only the wall clock faked: the `faketime` program forks, so its pid would not be the
/// node's, which the Drop guard kills.
fn start(block: u8, i: usize, dir: tempfile::TempDir, dnskey: String, faketime: Option<&str>) -> Site {
    let log = std::fs::File::create(dir.path().join("spdu.log")).unwrap();
    let mut command = Command::new(crate::testing::spdu());
    command.arg("run").arg("--config").arg(dir.path().join("spdu.toml"));
    if let Some(setting) = faketime {
        let libfaketime = crate::testing::libfaketime();
        command
            .env("LD_PRELOAD", libfaketime)
            .env("FAKETIME", setting)
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    }
    let child = command.stdout(std::process::Stdio::null()).stderr(log).spawn().expect("spdu starts");
    let dns: std::net::SocketAddr = format!("127.0.{block}.{}:15353", i + 1).parse().unwrap();
    let site = Site { dir, child, dns, dnskey };
    crate::testing::wait_until(Duration::from_secs(20), "the signed site to answer", || {
        kdig(site.dns, &["+dnssec", ZONE, "SOA"]).contains("status: NOERROR")
    });
    site
}

/// `kdig` (knot-dnsutils), a real DNS client independent of hickory.
fn kdig(server: std::net::SocketAddr, args: &[&str]) -> String {
    let out = Command::new("kdig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), "+time=2", "+retry=0"])
        .args(args)
        .output()
        .expect("kdig (Debian package knot-dnsutils) is installed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `delv` (bind9-dnsutils) validating against `anchors` (the pool zone's DNSKEYs) from the pool
/// zone down; returns its output.
fn delv(server: std::net::SocketAddr, anchors: &Path, args: &[&str]) -> String {
    let out = Command::new("delv")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), "-a", anchors.to_str().unwrap(), &format!("+root={ZONE}")])
        .args(args)
        .output()
        .expect("delv (Debian package bind9-dnsutils) is installed");
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A delv trust-anchor file holding `dnskeys` as static keys of the pool zone.
fn anchors(dir: &Path, dnskeys: &[&str]) -> std::path::PathBuf {
    let mut text = String::from("trust-anchors {\n");
    for key in dnskeys {
        let mut parts = key.splitn(4, ' ');
        let (flags, protocol, algorithm, public) =
            (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
        text.push_str(&format!("  {ZONE}. static-key {flags} {protocol} {algorithm} \"{public}\";\n"));
    }
    text.push_str("};\n");
    let path = dir.join("anchors.conf");
    std::fs::write(&path, text).unwrap();
    path
}

/// The RRSIG lines of a kdig answer: (type covered, key tag, inception, expiration) in Unix time.
fn rrsigs(output: &str) -> Vec<(String, u16, i64, i64)> {
    output
        .lines()
        .filter(|l| !l.starts_with(';'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.get(3) == Some(&"RRSIG"))
                .then(|| (f[4].to_owned(), f[10].parse().unwrap(), unix_time(f[9]), unix_time(f[8])))
        })
        .collect()
}

/// `YYYYMMDDHHmmSS` (RRSIG presentation form, UTC) to Unix time.
fn unix_time(text: &str) -> i64 {
    let n = |r: std::ops::Range<usize>| text[r].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(4..6), n(6..8));
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + n(8..10) * 3_600 + n(10..12) * 60 + n(12..14)
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Every answer kind: (query name, type, whether it has records): A of an `all` name and of a
/// weighted one-address pick, SOA, NS, DNSKEY, a name that does not exist, a type a name lacks.
fn answer_kinds() -> Vec<(String, &'static str, bool)> {
    vec![
        (format!("api.{ZONE}"), "A", true),
        (format!("one.{ZONE}"), "A", true),
        (ZONE.to_owned(), "SOA", true),
        (ZONE.to_owned(), "NS", true),
        (ZONE.to_owned(), "DNSKEY", true),
        (format!("nope.{ZONE}"), "A", false),
        (format!("api.{ZONE}"), "AAAA", false),
        (ZONE.to_owned(), "A", false),
    ]
}

/// Two sites signing with their own keys: every answer kind from each validates with delv
/// against the DNSKEY RRset (both keys), each site's RRSIGs carry its own key tag, and the
/// answers kdig sees hold what the design says (DO echoed, compact denial, no RRSIG without DO).
fn every_answer_kind_validates(block: u8, algorithm: &str) {
    let world = signed_world(block, 2, algorithm, 13, "");
    let keys: Vec<String> = world.iter().map(|(_, k)| k.clone()).collect();
    let sites: Vec<Site> =
        world.into_iter().enumerate().map(|(i, (dir, key))| start(block, i, dir, key, None)).collect();
    let scratch = tempfile::tempdir().unwrap();
    let anchor_file = anchors(scratch.path(), &keys.iter().map(String::as_str).collect::<Vec<_>>());
    // Both sites up in each other's view: `api` answers with all 26 addresses.
    for site in &sites {
        crate::testing::wait_until(Duration::from_secs(20), "both sites in the answer", || {
            kdig(site.dns, &["+short", &format!("api.{ZONE}"), "A"]).lines().count() == 26
        });
    }
    let positive = "; fully validated";
    let negative = "; negative response, fully validated";
    for site in &sites {
        let tag = site.dnskey.parse::<spdu_dnsfront::dnssec::SiteKey>().unwrap().key_tag();
        for (qname, qtype, exists) in answer_kinds() {
            let verdict = if exists { positive } else { negative };
            let out = delv(site.dns, &anchor_file, &[&qname, qtype]);
            assert!(out.contains(verdict), "{} {qname} {qtype}: {out}\n{}", site.dns, site.log());
            let answer = kdig(site.dns, &["+dnssec", "+tcp", &qname, qtype]);
            assert!(answer.contains("status: NOERROR") && answer.contains("flags: do;"), "{answer}");
            let sigs = rrsigs(&answer);
            assert!(!sigs.is_empty(), "{answer}");
            assert!(
                sigs.iter().all(|(_, t, _, _)| *t == tag),
                "site {} signs with its own key {tag}: {answer}",
                site.dns
            );
            let plain = kdig(site.dns, &[&qname, qtype]);
            assert!(!plain.contains("RRSIG") && !plain.contains("NSEC"), "no DO, no DNSSEC records: {plain}");
        }
        // Compact denial: the NSEC at the name itself, NXNAME for a name that does not exist.
        let nx = kdig(site.dns, &["+dnssec", &format!("nope.{ZONE}"), "A"]);
        assert!(
            nx.contains(&format!("nope.{ZONE}."))
                && nx.contains("NSEC\t\\000.nope.")
                && nx.contains("RRSIG NSEC TYPE128"),
            "{nx}"
        );
        let nodata = kdig(site.dns, &["+dnssec", &format!("api.{ZONE}"), "TXT"]);
        assert!(nodata.contains("NSEC\t\\000.api.") && nodata.contains(" A RRSIG NSEC"), "{nodata}");
        // The weighted pick serves one address per response: each subset is signed as served.
        for _ in 0..10 {
            let out = delv(site.dns, &anchor_file, &[&format!("one.{ZONE}"), "A"]);
            assert!(out.contains(positive), "{out}");
        }
        // The signed answer no longer fits 512 bytes: TC over UDP, then whole over TCP.
        let udp = kdig(site.dns, &["+dnssec", "+bufsize=512", "+ignore", &format!("api.{ZONE}"), "A"]);
        assert!(udp.contains(" tc") && !udp.contains("RRSIG"), "{udp}");
        let unsigned = kdig(site.dns, &["+bufsize=512", "+ignore", &format!("api.{ZONE}"), "A"]);
        assert!(!unsigned.contains(" tc"), "the unsigned answer fits: {unsigned}");
        let tcp = kdig(site.dns, &["+dnssec", "+bufsize=512", &format!("api.{ZONE}"), "A"]);
        assert!(tcp.contains("(TCP)") && rrsigs(&tcp).len() == 1, "kdig retries over TCP: {tcp}");
    }
    // A validating unbound with the DNSKEY RRset as trust anchor, both sites as the zone's
    // servers: every answer kind comes back authenticated (AD), whichever site it asked.
    let resolver = Unbound::start(scratch.path(), block, &keys, &sites);
    for (qname, qtype, rows) in answer_kinds() {
        let out = kdig(resolver.addr, &["+dnssec", &qname, qtype]);
        let answered = !out.contains("ANSWER: 0;");
        assert!(
            out.contains("status: NOERROR") && out.contains(" ad;") && answered == rows,
            "unbound {qname} {qtype}: {out}\n{}",
            resolver.log()
        );
    }
    drop(resolver);
    // A key outside the DNSKEY RRset validates nothing: delv with only a stranger's key fails.
    let stranger = keygen(&scratch.path().join("stranger.key"), algorithm);
    let wrong = anchors(scratch.path(), &[&stranger]);
    let out = delv(sites[0].dns, &wrong, &[&format!("api.{ZONE}"), "A"]);
    assert!(!out.contains("fully validated"), "{out}");
}

/// A validating unbound (Debian package unbound) on 127.0.`block`.50:15354, trusting the
/// pool zone's DNSKEYs and asking `sites` for it; killed (by its pid) when dropped.
struct Unbound {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    log: std::path::PathBuf,
}

impl Unbound {
    fn start(dir: &Path, block: u8, dnskeys: &[String], sites: &[Site]) -> Self {
        let anchors: String = dnskeys.iter().map(|k| format!("{ZONE}. IN DNSKEY {k}\n")).collect();
        std::fs::write(dir.join("anchors.txt"), anchors).unwrap();
        let addr: std::net::SocketAddr = format!("127.0.{block}.50:15354").parse().unwrap();
        let stubs: String =
            sites.iter().map(|s| format!("  stub-addr: {}@{}\n", s.dns.ip(), s.dns.port())).collect();
        let log = dir.join("unbound.log");
        let d = dir.display();
        let config = format!(
            "server:\n  interface: {ip}\n  port: {port}\n  do-daemonize: no\n  use-syslog: no\n               username: \"\"\n  chroot: \"\"\n  directory: \"{d}\"\n  pidfile: \"{d}/unbound.pid\"\n               logfile: \"{log}\"\n  do-not-query-localhost: no\n  local-zone: \"test.\" nodefault\n               trust-anchor-file: \"{d}/anchors.txt\"\n  module-config: \"validator iterator\"\n               val-log-level: 2\n\
             stub-zone:\n  name: \"{ZONE}\"\n{stubs}remote-control:\n  control-enable: no\n",
            ip = addr.ip(),
            port = addr.port(),
            log = log.display(),
        );
        std::fs::write(dir.join("unbound.conf"), config).unwrap();
        let child = Command::new("unbound")
            .arg("-c")
            .arg(dir.join("unbound.conf"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("unbound (Debian package unbound) is installed");
        let resolver = Self { child, addr, log };
        crate::testing::wait_until(Duration::from_secs(10), "unbound to answer", || {
            kdig(resolver.addr, &[ZONE, "SOA"]).contains("status: NOERROR")
        });
        resolver
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Unbound {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn every_answer_kind_validates_ecdsa() {
    every_answer_kind_validates(206, "13");
}

#[test]
fn every_answer_kind_validates_ed25519() {
    every_answer_kind_validates(207, "15");
}

/// The real binary under faketime: a node whose wall clock is 3 days behind signs with a window
/// that starts an hour before its "now" and ends `signature_validity` after it, so a validator
/// with the right time refuses its (expired) signatures.
#[test]
fn signature_window_follows_the_wall_clock() {
    let block = 208;
    let (dir, key) = signed_world(block, 1, "13", 1, "").pop().unwrap();
    let behind = 3 * 86_400;
    let site = start(block, 0, dir, key.clone(), Some("-3d"));
    let answer = kdig(site.dns, &["+dnssec", &format!("api.{ZONE}"), "A"]);
    let sigs = rrsigs(&answer);
    assert_eq!(sigs.len(), 1, "{answer}");
    let (_, _, inception, expiration) = sigs[0];
    let fake_now = now() - behind;
    assert!((inception - (fake_now - 3_600)).abs() < 120, "inception {inception}, fake now {fake_now}");
    assert!((expiration - (fake_now + 172_800)).abs() < 120, "expiration {expiration}, fake now {fake_now}");
    let scratch = tempfile::tempdir().unwrap();
    let anchor_file = anchors(scratch.path(), &[&key]);
    let out = delv(site.dns, &anchor_file, &[&format!("api.{ZONE}"), "A"]);
    assert!(!out.contains("fully validated"), "expired signatures must not validate: {out}");
}

/// Signatures are refreshed when half of their validity is left: under faketime at 720 times
/// real speed, a one-hour validity is re-signed every 30 fake minutes (2.5 s), each new window
/// again an hour back and an hour ahead.
#[test]
fn signatures_are_refreshed_before_they_expire() {
    let block = 209;
    let (dir, key) = signed_world(block, 1, "15", 1, "signature_validity = 3600").pop().unwrap();
    let site = start(block, 0, dir, key, Some("+0 x720"));
    let window = || {
        let answer = kdig(site.dns, &["+dnssec", ZONE, "SOA"]);
        rrsigs(&answer).first().map(|(_, _, i, e)| (*i, *e))
    };
    let (first, _) = window().expect("a signed SOA");
    let mut seen = vec![first];
    crate::testing::wait_until(Duration::from_secs(30), "two refreshes", || {
        if let Some((inception, expiration)) = window() {
            assert_eq!(expiration - inception, 7_200, "an hour back, an hour ahead");
            if *seen.last().unwrap() != inception {
                seen.push(inception);
            }
        }
        seen.len() >= 3
    });
    for pair in seen.windows(2) {
        // Half the validity (1800 s) between two signings, give or take the 1 s timer (720 s).
        let step = pair[1] - pair[0];
        assert!((1_700..=2_700).contains(&step), "refreshed after {step} fake seconds: {seen:?}");
    }
    assert!(site.log().contains("DNSSEC signatures refreshed"), "{}", site.log());
}
