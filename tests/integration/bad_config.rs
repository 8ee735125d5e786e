//! Config and key mistakes as an operator makes them: each is refused with the file and the
//! field (or line) named, a non-zero exit, and nothing left running or bound.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use crate::testing::{run_spdu, spdu};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A valid config for a node at 127.0.36.`host`, with `peers` and `extra` appended to `[node]`.
fn config(host: u8, key: &str, extra_node: &str, zone_extra: &str, peers: &str) -> String {
    let ip = format!("127.0.36.{host}");
    format!(
        "[node]\nname = \"alpha\"\nkey = \"{key}\"\ngossip = \"{ip}:17946\"\ndns = [\"{ip}:15353\"]\n\
         control = \"{ip}:17947\"\naddresses = [\"{ip}\"]\n{extra_node}\n\
         [zone]\norigin = \"pool.example.test\"\nnames = [\"api\"]\nttl = 5\n\
         nameservers = [\"alpha.example.test\"]\n{zone_extra}\n{peers}"
    )
}

fn peer(name: &str, key: &str, extra: &str) -> String {
    format!(
        "\n[[peers]]\nname = \"{name}\"\nkey = \"{}\"\ngossip = \"127.0.36.200:17946\"\n{extra}",
        key.trim()
    )
}

fn keygen(path: &Path) -> String {
    let out = run_spdu(&["keygen", "--out", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Asserts `spdu <command> --config <file with text>` fails naming every one of `expected`.
fn refused(dir: &Path, case: &str, command: &str, text: &str, expected: &[&str]) {
    let path = dir.join(format!("{case}.toml"));
    std::fs::write(&path, text).unwrap();
    let out = run_spdu(&[command, "--config", path.to_str().unwrap()]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{case}: accepted:\n{text}");
    for e in expected {
        assert!(err.contains(e), "{case}: error does not name {e:?}:\n{err}");
    }
}

#[test]
fn config_and_key_errors_name_the_file_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let own = keygen(&dir.path().join("node.key"));
    let beta = keygen(&dir.path().join("beta.key"));
    let gamma = keygen(&dir.path().join("gamma.key"));
    let ok = config(1, "node.key", "", "", &peer("beta", &beta, ""));
    let path = dir.path().join("ok.toml");
    std::fs::write(&path, &ok).unwrap();
    let out = run_spdu(&["check", "--config", path.to_str().unwrap()]);
    assert!(out.status.success(), "the base config is valid: {}", stderr(&out));

    let d = dir.path();
    // Unknown fields, in every section; wrong types, with the line.
    refused(
        d,
        "unknown-node",
        "check",
        &config(1, "node.key", "colour = 1", "", &peer("beta", &beta, "")),
        &["unknown-node.toml", "colour"],
    );
    refused(
        d,
        "unknown-zone",
        "check",
        &config(1, "node.key", "", "serial = 3", &peer("beta", &beta, "")),
        &["unknown-zone.toml", "serial"],
    );
    refused(
        d,
        "unknown-peer",
        "check",
        &config(1, "node.key", "", "", &peer("beta", &beta, "wieght = 2\n")),
        &["unknown-peer.toml", "wieght"],
    );
    refused(
        d,
        "unknown-section",
        "check",
        &format!("{ok}\n[clusterr]\nid = \"x\"\n"),
        &["unknown-section.toml", "clusterr"],
    );
    refused(
        d,
        "wrong-type",
        "check",
        &ok.replace("ttl = 5", "ttl = \"five\""),
        &["wrong-type.toml:12", "string \"five\""],
    );
    refused(
        d,
        "wrong-type-list",
        "check",
        &ok.replace("dns = [\"127.0.36.1:15353\"]", "dns = \"127.0.36.1:15353\""),
        &["wrong-type-list.toml:5", "expected a sequence"],
    );
    refused(
        d,
        "bad-address",
        "check",
        &ok.replace("addresses = [\"127.0.36.1\"]", "addresses = [\"127.0.36.300\"]"),
        &["bad-address.toml", "addresses"],
    );
    refused(d, "not-toml", "check", "[node\nname = ", &["not-toml.toml:1"]);
    // Duplicates: names, keys; the roster listing this node itself.
    let two = |a: &str, b: &str| {
        config(1, "node.key", "", "", &format!("{}{}", peer(a, &beta, ""), peer(b, &gamma, "")))
    };
    refused(d, "dup-name", "check", &two("beta", "beta"), &["dup-name.toml", "peers[1]", "beta"]);
    refused(d, "self-name", "check", &two("alpha", "gamma"), &["self-name.toml", "peers[0]", "alpha"]);
    let dup_key =
        config(1, "node.key", "", "", &format!("{}{}", peer("beta", &beta, ""), peer("gamma", &beta, "")));
    refused(d, "dup-key", "check", &dup_key, &["dup-key.toml", "peers[1].key"]);
    refused(
        d,
        "own-key",
        "check",
        &config(1, "node.key", "", "", &peer("beta", &own, "")),
        &["own-key.toml", "peers[0].key", "own"],
    );
    // Key files: missing, world-readable, not a key.
    refused(
        d,
        "missing-key",
        "check",
        &config(1, "nope.key", "", "", &peer("beta", &beta, "")),
        &["node.key", "nope.key"],
    );
    let loose = dir.path().join("loose.key");
    keygen(&loose);
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    refused(
        d,
        "loose-key",
        "check",
        &config(1, "loose.key", "", "", &peer("beta", &beta, "")),
        &["loose.key"],
    );
    refused(
        d,
        "loose-key-run",
        "run",
        &config(1, "loose.key", "", "", &peer("beta", &beta, "")),
        &["loose.key"],
    );
    let junk = dir.path().join("junk.key");
    std::fs::write(&junk, "not a key\n").unwrap();
    std::fs::set_permissions(&junk, std::fs::Permissions::from_mode(0o600)).unwrap();
    refused(d, "junk-key", "check", &config(1, "junk.key", "", "", &peer("beta", &beta, "")), &["junk.key"]);
}

/// An address already in use: `spdu run` exits non-zero naming the field and the address, and
/// leaves nothing bound behind (the next start on the same addresses works).
#[test]
fn address_in_use_fails_the_start_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    keygen(&dir.path().join("node.key"));
    let beta = keygen(&dir.path().join("beta.key"));
    let text = config(2, "node.key", "", "", &peer("beta", &beta, ""));
    let path = dir.path().join("node.toml");
    std::fs::write(&path, &text).unwrap();
    let control: SocketAddr = "127.0.36.2:17947".parse().unwrap();
    for (field, addr) in [
        ("node.gossip", "127.0.36.2:17946"),
        ("DNS", "127.0.36.2:15353"),
        ("node.control", "127.0.36.2:17947"),
    ] {
        let addr: SocketAddr = addr.parse().unwrap();
        // Hold the port the way another server would (UDP for gossip; TCP and UDP for DNS).
        let udp = (field != "node.control").then(|| UdpSocket::bind(addr).unwrap());
        let tcp = (field != "node.gossip").then(|| TcpListener::bind(addr).unwrap());
        let mut child = std::process::Command::new(spdu())
            .args(["run", "--config", path.to_str().unwrap()])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let status = wait_exit(&mut child, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{field} in use: still running"));
        let mut err = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
        assert!(!status.success(), "{field} in use: exit 0");
        assert!(err.contains(&addr.to_string()) && err.contains(field), "{field} in use: {err}");
        drop((udp, tcp));
        if field != "node.control" {
            assert!(TcpListener::bind(control).is_ok(), "{field} in use: control endpoint left bound");
        }
    }
}

/// Input hygiene: every mistake an operator (or a copy-paste) makes in addresses, ids and
/// numbers is refused with the field named, before anything starts.
#[test]
fn hostile_and_absurd_values_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    keygen(&dir.path().join("node.key"));
    let beta = keygen(&dir.path().join("beta.key"));
    let gamma = keygen(&dir.path().join("gamma.key"));
    let d = dir.path();
    let ok = config(3, "node.key", "", "", &peer("beta", &beta, ""));
    let two = |a: &str, b: &str| {
        config(
            3,
            "node.key",
            "",
            "",
            &format!(
                "{}{}",
                peer("beta", &beta, "").replace("127.0.36.200:17946", a),
                peer("gamma", &gamma, "").replace("127.0.36.200:17946", b)
            ),
        )
    };
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "peer-is-self",
            ok.replace("127.0.36.200:17946", "127.0.36.3:17946"),
            vec!["peers[0].gossip", "own gossip address"],
        ),
        (
            "two-peers-one-address",
            two("127.0.36.201:17946", "127.0.36.201:17946"),
            vec!["peers[1].gossip", "also peers[0].gossip"],
        ),
        (
            "peer-port-0",
            ok.replace("127.0.36.200:17946", "127.0.36.200:0"),
            vec!["peers[0].gossip", "port 0"],
        ),
        ("dns-port-0", ok.replace("127.0.36.3:15353", "127.0.36.3:0"), vec!["node.dns[0]", "port 0"]),
        (
            "peer-unspecified",
            ok.replace("127.0.36.200:17946", "0.0.0.0:17946"),
            vec!["peers[0].gossip", "0.0.0.0", "special-purpose"],
        ),
        (
            "service-unspecified",
            ok.replace("addresses = [\"127.0.36.3\"]", "addresses = [\"0.0.0.0\"]"),
            vec!["node.addresses[0]", "special-purpose"],
        ),
        (
            "service-broadcast",
            ok.replace("addresses = [\"127.0.36.3\"]", "addresses = [\"255.255.255.255\"]"),
            vec!["node.addresses[0]", "special-purpose"],
        ),
        (
            "service-v6-unspecified",
            ok.replace("addresses = [\"127.0.36.3\"]", "addresses = [\"::\"]"),
            vec!["node.addresses[0]", "special-purpose"],
        ),
        (
            "service-multicast",
            ok.replace("addresses = [\"127.0.36.3\"]", "addresses = [\"224.0.0.251\"]"),
            vec!["node.addresses[0]", "special-purpose"],
        ),
        (
            "peer-pin-multicast",
            config(3, "node.key", "", "", &peer("beta", &beta, "addresses = [\"ff02::1\"]\n")),
            vec!["peers[0].addresses[0]", "special-purpose"],
        ),
        (
            "cluster-id-invisible",
            format!("{ok}\n[cluster]\nid = \"prod\u{200b}\"\n"),
            vec!["cluster.id", "invisible", "U+200B"],
        ),
        (
            "cluster-id-control",
            format!("{ok}\n[cluster]\nid = \"prod\\u001b[2J\"\n"),
            vec!["cluster.id", "U+001B"],
        ),
        (
            "health-interval-1",
            format!("{ok}\n[health]\ninterval_ms = 1\n"),
            vec!["health.interval_ms", "out of bounds", "50 to"],
        ),
        (
            "probe-interval-max",
            format!("{ok}\n[timing]\nprobe_interval_ms = 18446744073709551615\n"),
            vec!["timing.probe_interval_ms", "out of bounds"],
        ),
        (
            "control-everywhere",
            ok.replace("control = \"127.0.36.3:17947\"", "control = \"0.0.0.0:17947\""),
            vec!["node.control", "0.0.0.0:17947", "not a loopback address", "control_allow"],
        ),
        (
            "control-allow-bad",
            ok.replace(
                "control = \"127.0.36.3:17947\"",
                "control = \"0.0.0.0:17947\"\ncontrol_allow = [\"10.0.0.0/40\"]",
            ),
            vec!["node.control_allow[0]", "prefix length must be 0-32"],
        ),
    ];
    for (case, text, expected) in &cases {
        refused(d, case, "check", text, expected);
    }
    // Each message once: the text of the field's error is not repeated by its cause.
    let path = d.join("peer-is-self.toml");
    let err = stderr(&run_spdu(&["check", "--config", path.to_str().unwrap()]));
    assert_eq!(err.matches("own gossip address").count(), 1, "{err}");
    // Not loopback but allowed networks named: accepted.
    let allowed = ok.replace(
        "control = \"127.0.36.3:17947\"",
        "control = \"0.0.0.0:17947\"\ncontrol_allow = [\"127.0.0.0/8\", \"10.0.0.0/8\"]",
    );
    let path = d.join("allowed.toml");
    std::fs::write(&path, allowed).unwrap();
    let out = run_spdu(&["check", "--config", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Failover-policy mistakes (`[[zone.record]]`, `priority`, `weight`): refused by `spdu check`
/// with the file, the line and the field; a config using every policy is accepted.
#[test]
fn policy_mistakes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    keygen(&dir.path().join("node.key"));
    let beta = keygen(&dir.path().join("beta.key"));
    let d = dir.path();
    let beta_peer = peer("beta", &beta, "priority = 2\nweight = 0\n");
    let records = "[[zone.record]]\nname = \"admin\"\npolicy = \"priority\"\nsites = [\"alpha\", \"beta\"]\n\
                   max_answers = 1\nttl = 30\nttl_degraded = 2\nmin_change_interval_ms = 60000\n\n\
                   [[zone.record]]\nname = \"static\"\npolicy = \"weighted\"\nmax_answers = 2\n\n\
                   [[zone.record]]\nname = \"@\"\npolicy = \"fastest\"\nmax_answers = 1\ngood_enough_ms = 20\n";
    let ok = config(6, "node.key", "priority = 1\nweight = 100", records, &beta_peer);
    let path = d.join("policies.toml");
    std::fs::write(&path, &ok).unwrap();
    let out = run_spdu(&["check", "--config", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("names api (all), admin (priority), static (weighted), @ (fastest)"),
        "{printed}"
    );

    let record = |fields: &str| {
        config(6, "node.key", "", &format!("[[zone.record]]\nname = \"admin\"\n{fields}\n"), &beta_peer)
    };
    // The record starts on line 14 (after [node], a blank line and [zone]); its fields from 16.
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "policy-unknown",
            record("policy = \"failover\""),
            vec![
                "policy-unknown.toml:16:10:",
                "zone.record[0].policy",
                "\"failover\" is not a policy",
                "priority",
            ],
        ),
        ("policy-missing", record(""), vec!["policy-missing.toml", "missing field `policy`"]),
        (
            "site-unknown",
            record("policy = \"priority\"\nsites = [\"alpha\", \"gamma\"]"),
            vec![
                "site-unknown.toml:17:19:",
                "zone.record[0].sites[1]",
                "\"gamma\" is not a site",
                "alpha, beta",
            ],
        ),
        (
            "site-twice",
            record("policy = \"all\"\nsites = [\"beta\", \"beta\"]"),
            vec!["site-twice.toml:17:18:", "zone.record[0].sites[1]", "listed twice"],
        ),
        (
            "name-twice",
            config(6, "node.key", "", "[[zone.record]]\nname = \"API\"\npolicy = \"priority\"\n", &beta_peer),
            vec!["name-twice.toml:15:8:", "zone.record[0].name", "same name as zone.names[0]"],
        ),
        (
            "name-invalid",
            config(6, "node.key", "", "[[zone.record]]\nname = \"a b\"\npolicy = \"all\"\n", &beta_peer),
            vec!["name-invalid.toml:15:8:", "zone.record[0].name", "whitespace"],
        ),
        (
            "ttl-too-large",
            record("policy = \"all\"\nttl = 4294967295"),
            vec!["ttl-too-large.toml:17:7:", "zone.record[0].ttl", "out of bounds", "2147483647"],
        ),
        (
            "ttl-degraded-longer",
            record("policy = \"all\"\nttl = 5\nttl_degraded = 300"),
            vec![
                "ttl-degraded-longer.toml:18:16:",
                "zone.record[0].ttl_degraded",
                "longer than the record's ttl",
            ],
        ),
        (
            "max-answers-absurd",
            record("policy = \"all\"\nmax_answers = 100000"),
            vec!["max-answers-absurd.toml:17:15:", "zone.record[0].max_answers", "out of bounds (0 to 128)"],
        ),
        (
            "good-enough-not-fastest",
            record("policy = \"weighted\"\ngood_enough_ms = 20"),
            vec!["zone.record[0].good_enough_ms", "only used by policy \"fastest\""],
        ),
        (
            "record-unknown-field",
            record("policy = \"all\"\nfailover = true"),
            vec!["record-unknown-field.toml:17:1:", "failover"],
        ),
        (
            "node-priority-absurd",
            config(6, "node.key", "priority = 5000", "", &beta_peer),
            vec!["node-priority-absurd.toml:8:12:", "node.priority", "out of bounds (0 to 1000)"],
        ),
        (
            "peer-weight-negative",
            config(6, "node.key", "", "", &peer("beta", &beta, "weight = -5\n")),
            vec!["peer-weight-negative.toml:20:10:"],
        ),
        (
            "no-names",
            config(6, "node.key", "", "", &beta_peer).replace("names = [\"api\"]\n", ""),
            vec!["no-names.toml", "zone.names: no pool name"],
        ),
    ];
    for (case, text, expected) in &cases {
        refused(d, case, "check", text, expected);
    }
}

/// Key files as OpenSSH judges private keys: others' access, another owner, a symlink, a
/// directory others may write; and keygen into a directory.
#[test]
fn unprotected_key_files_are_refused_like_openssh_does() {
    let dir = tempfile::tempdir().unwrap();
    let beta = keygen(&dir.path().join("beta.key"));
    let d = dir.path();
    let text = |key: &str| config(4, key, "", "", &peer("beta", &beta, ""));

    let loose = d.join("loose.key");
    keygen(&loose);
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o640)).unwrap();
    refused(
        d,
        "group-readable",
        "check",
        &text("loose.key"),
        &["loose.key", "UNPROTECTED PRIVATE KEY FILE", "0640", "chmod 600"],
    );

    let real = d.join("real.key");
    keygen(&real);
    std::os::unix::fs::symlink(&real, d.join("link.key")).unwrap();
    refused(d, "symlink", "check", &text("link.key"), &["link.key", "symbolic link"]);
    refused(d, "symlink-run", "run", &text("link.key"), &["link.key", "symbolic link"]);
    let out = run_spdu(&["pubkey", "--key", d.join("link.key").to_str().unwrap()]);
    assert!(!out.status.success() && stderr(&out).contains("symbolic link"), "{}", stderr(&out));

    let open = d.join("open");
    std::fs::create_dir(&open).unwrap();
    keygen(&open.join("node.key"));
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    refused(
        d,
        "open-dir",
        "check",
        &text("open/node.key"),
        &["open/node.key", "writable by others without the sticky bit", "0777"],
    );

    let out = run_spdu(&["keygen", "--out", d.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("is a directory"), "{}", stderr(&out));

    if std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap_or(1) == 0 {
        let theirs = d.join("theirs.key");
        keygen(&theirs);
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        refused(
            d,
            "other-owner",
            "check",
            &text("theirs.key"),
            &["theirs.key", "owned by uid 65534", "uid 0"],
        );
    } else {
        eprintln!("SKIPPED the other-owner case: changing a file's owner needs root");
    }
}

/// An address in use is reported with its error text once.
#[test]
fn an_error_and_its_cause_are_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    keygen(&dir.path().join("node.key"));
    let beta = keygen(&dir.path().join("beta.key"));
    let text = config(5, "node.key", "", "", &peer("beta", &beta, ""));
    let path = dir.path().join("node.toml");
    std::fs::write(&path, &text).unwrap();
    for (field, addr) in [
        ("node.gossip", "127.0.36.5:17946"),
        ("DNS", "127.0.36.5:15353"),
        ("node.control", "127.0.36.5:17947"),
    ] {
        let addr: SocketAddr = addr.parse().unwrap();
        let udp = (field != "node.control").then(|| UdpSocket::bind(addr).unwrap());
        let tcp = (field != "node.gossip").then(|| TcpListener::bind(addr).unwrap());
        let mut child = std::process::Command::new(spdu())
            .args(["run", "--config", path.to_str().unwrap()])
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_exit(&mut child, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{field} in use: still running"));
        let mut err = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
        let last =
            err.lines().rev().find(|l| l.starts_with("error:")).unwrap_or_else(|| panic!("{field}: {err}"));
        assert_eq!(last.matches("Address already in use").count(), 1, "{field}: {last}");
        drop((udp, tcp));
    }
}

fn wait_exit(child: &mut std::process::Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}
