//! Config parsing and validation, as an operator writes configs.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use spdu_gossip::proto::{self, Quorum};
use spdu_keys::SecretKey;

use super::*;

const PEER_KEY: &str = "beta";

fn key_token(seed: u8) -> String {
    SecretKey::from_bytes(&[seed; 32]).public().to_string()
}

fn valid() -> String {
    format!(
        r#"
[node]
name = "alpha"
key = "node.key"
gossip = "127.0.0.1:7946"
dns = ["127.0.0.1:5353"]
control = "127.0.0.1:7947"
addresses = ["192.0.2.10"]

[zone]
origin = "pool.example.com"
names = ["api"]
ttl = 5
nameservers = ["alpha.example.com"]

[[peers]]
name = "{PEER_KEY}"
key = "{}"
gossip = "198.51.100.20:7946"

[[peers]]
name = "gamma"
key = "{}"
gossip = "203.0.113.30:7946"
"#,
        key_token(2),
        key_token(3)
    )
}

fn parse(text: &str) -> anyhow::Result<Config> {
    Config::parse(Path::new("/etc/spdu/spdu.toml"), text)
}

fn error(text: &str) -> String {
    format!("{:#}", parse(text).expect_err("config accepted"))
}

#[test]
fn valid_config_gets_defaults() {
    let config = parse(&valid()).unwrap();
    assert_eq!(config.node.name, "alpha");
    assert_eq!(config.node.key, Path::new("/etc/spdu/node.key"));
    assert_eq!(config.cluster, "pool.example.com");
    assert_eq!(config.protocol, proto::Config::default());
    assert_eq!(config.peers.len(), 2);
    assert_eq!(config.peers[1].key.to_string(), key_token(3));
}

#[test]
fn timing_and_cluster_overrides() {
    let text = valid().replace(
        "[[peers]]\nname = \"beta\"",
        "[cluster]\nid = \"prod\"\n\n[timing]\nheartbeat_ms = 200\nstale_after_ms = 900\nquorum = 2\n\n[[peers]]\nname = \"beta\"",
    );
    let config = parse(&text).unwrap();
    assert_eq!(config.cluster, "prod");
    assert_eq!(config.protocol.heartbeat, Duration::from_millis(200));
    assert_eq!(config.protocol.stale_after, Duration::from_millis(900));
    assert_eq!(config.protocol.quorum, Quorum::AtLeast(2));
    let half = valid()
        .replace("[[peers]]\nname = \"beta\"", "[timing]\nquorum = \"half\"\n\n[[peers]]\nname = \"beta\"");
    assert_eq!(parse(&half).unwrap().protocol.quorum, Quorum::Half);
}

fn with_timing(timing: &str) -> String {
    valid()
        .replace("[[peers]]\nname = \"beta\"", &format!("[timing]\n{timing}\n\n[[peers]]\nname = \"beta\""))
}

#[test]
fn toml_mistakes_name_file_line_and_field() {
    let e = error(&valid().replace("ttl = 5", "ttl = 5\ncolour = \"blue\""));
    assert!(e.starts_with("/etc/spdu/spdu.toml:14:1:") && e.contains("colour"), "{e}");
    let e = error(&valid().replace("ttl = 5", "ttl = \"five\""));
    assert!(e.contains("/etc/spdu/spdu.toml:13:7:") && e.contains("expected u32"), "{e}");
    let e = error(&with_timing("quorum = \"most\""));
    assert!(e.contains("half"), "{e}");
    assert!(!e.contains('\n'), "{e}");
}

#[test]
fn bad_addresses_name_the_field() {
    let e = error(&valid().replace("gossip = \"127.0.0.1:7946\"", "gossip = \"x\""));
    assert!(e.contains("spdu.toml:5:10: node.gossip: invalid socket address \"x\""), "{e}");
    let e = error(&valid().replace("[\"127.0.0.1:5353\"]", "[\"127.0.0.1:5353\", \"::1\"]"));
    assert!(e.contains("node.dns[1]: invalid socket address"), "{e}");
    let e = error(&valid().replace("[\"192.0.2.10\"]", "[\"192.0.2.300\"]"));
    assert!(e.contains("node.addresses[0]: invalid IP address"), "{e}");
    let e = error(&valid().replace("\"198.51.100.20:7946\"", "\"198.51.100.20\""));
    assert!(e.contains("peers[0].gossip: invalid socket address"), "{e}");
    let e = error(&valid().replace("dns = [\"127.0.0.1:5353\"]", "dns = []"));
    assert!(e.contains("node.dns: needs at least one"), "{e}");
}

#[test]
fn names_and_keys_must_be_unique() {
    let e = error(&valid().replace("name = \"gamma\"", "name = \"beta\""));
    assert!(e.contains("peers[1].name: \"beta\" is a duplicate of peers[0].name"), "{e}");
    let e = error(&valid().replace("name = \"gamma\"", "name = \"alpha\""));
    assert!(e.contains("peers[1].name: \"alpha\" is this node's own name"), "{e}");
    let e = error(&valid().replace("name = \"gamma\"", "name = \"\""));
    assert!(e.contains("peers[1].name: must not be empty"), "{e}");
    let e = error(&valid().replace("name = \"alpha\"", "name = \" \""));
    assert!(e.contains("node.name: must not be empty"), "{e}");
    let e = error(&valid().replace(&key_token(3), &key_token(2)));
    assert!(e.contains("peers[1].key: the same key as peers[0].key"), "{e}");
    let e = error(&valid().replace(&key_token(3), "ed25519:nope"));
    assert!(e.contains("peers[1].key: invalid public key"), "{e}");
}

#[test]
fn timing_is_checked() {
    let e = error(&with_timing("heartbeat_ms = 1000\nstale_after_ms = 1000"));
    assert!(e.contains("timing.stale_after_ms: 1000 must be larger than timing.heartbeat_ms"), "{e}");
    let e = error(&with_timing("heartbeat_ms = 5000"));
    assert!(e.contains("timing.stale_after_ms"), "{e}");
    let e = error(&with_timing("quorum = 0"));
    assert!(e.contains("timing.quorum: must be at least 1"), "{e}");
    let e = error(&with_timing("quorum = 4"));
    assert!(e.contains("timing.quorum: 4 is more than the 3 nodes"), "{e}");
    assert!(parse(&with_timing("quorum = 3")).is_ok());
    let e = error(&with_timing("probe_interval_ms = 0"));
    assert!(e.contains("timing.probe_interval_ms: 0 is out of bounds (10 to 60000 ms)"), "{e}");
    let e = error(&with_timing("probe_interval_ms = 18446744073709551615"));
    assert!(e.contains("timing.probe_interval_ms: 18446744073709551615 is out of bounds"), "{e}");
    let e = error(&with_timing("down_after = 4000000000"));
    assert!(e.contains("timing.down_after: 4000000000 is out of bounds (1 to 1000)"), "{e}");
}

#[test]
fn zone_is_checked_by_dnsfront() {
    let e = error(&valid().replace("names = [\"api\"]", "names = []"));
    assert!(e.contains("zone.names"), "{e}");
}

#[test]
fn key_file_is_checked_and_own_key_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spdu.toml");
    let missing = Config::parse(&path, &valid()).unwrap();
    let e = format!("{:#}", missing.load_key().unwrap_err());
    assert!(e.starts_with("node.key:") && e.contains("node.key"), "{e}");

    let key = SecretKey::generate_file(&dir.path().join("node.key")).unwrap();
    let config = Config::parse(&path, &valid()).unwrap();
    assert_eq!(config.load_key().unwrap().public(), key.public());

    let own = valid().replace(&key_token(3), &key.public().to_string());
    let config = Config::parse(&path, &own).unwrap();
    let e = format!("{:#}", config.load_key().unwrap_err());
    assert!(e.contains("peers[1].key: is this node's own public key"), "{e}");

    std::fs::set_permissions(dir.path().join("node.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = format!("{:#}", config.load_key().unwrap_err());
    assert!(e.contains("readable by group or others"), "{e}");
}

#[test]
fn control_address_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spdu.toml");
    std::fs::write(&path, valid().replace("ttl = 5", "ttl = \"broken\"")).unwrap();
    assert_eq!(load_control_address(&path).unwrap(), "127.0.0.1:7947".parse().unwrap());
}

#[test]
fn control_off_loopback_needs_control_allow() {
    let open = valid().replace("control = \"127.0.0.1:7947\"", "control = \"0.0.0.0:7947\"");
    let e = error(&open);
    assert!(e.contains("spdu.toml:7:11: node.control: 0.0.0.0:7947 is not a loopback address"), "{e}");
    assert!(e.contains("node.control_allow"), "{e}");
    let allowed = open
        .replace("[zone]", "control_allow = [\"10.0.0.0/8\", \"2001:db8::/32\", \"192.0.2.7\"]\n\n[zone]");
    let config = parse(&allowed).unwrap();
    assert_eq!(config.node.control_allow.len(), 3);
    assert!(config.node.control_allow[0].contains("10.9.8.7".parse().unwrap()));
    assert!(parse(&valid()).unwrap().node.control_allow.is_empty());
    let e = error(&open.replace("[zone]", "control_allow = []\n\n[zone]"));
    assert!(e.contains("node.control_allow: needs at least one network"), "{e}");
    let e = error(&open.replace("[zone]", "control_allow = [\"10.1.0.0/8\"]\n\n[zone]"));
    assert!(e.contains("node.control_allow[0]: \"10.1.0.0/8\" has bits set past the prefix"), "{e}");
}

#[test]
fn peer_addresses_are_pinned_capped_and_never_special() {
    let config = parse(&valid()).unwrap();
    assert_eq!(config.peers[0].addresses, vec!["198.51.100.20".parse::<AddressPin>().unwrap()]);
    let pinned = valid().replace(
        "gossip = \"198.51.100.20:7946\"",
        "gossip = \"198.51.100.20:7946\"\naddresses = [\"192.0.2.20\", \"2001:db8:20::/48\"]",
    );
    let config = parse(&pinned).unwrap();
    assert_eq!(config.peers[0].addresses.len(), 2);
    assert!(config.peers[0].addresses[1].contains("2001:db8:20::1".parse().unwrap()));
    let with = |list: &str| {
        valid().replace(
            "gossip = \"198.51.100.20:7946\"",
            &format!("gossip = \"198.51.100.20:7946\"\naddresses = {list}"),
        )
    };
    for (list, expected) in [
        ("[\"0.0.0.0\"]", "peers[0].addresses[0]: 0.0.0.0 is special-purpose"),
        ("[\"224.0.0.1\"]", "peers[0].addresses[0]: 224.0.0.1 is special-purpose"),
        ("[\"::\"]", "peers[0].addresses[0]: :: is special-purpose"),
        ("[\"192.0.2.1\", \"255.255.255.255\"]", "peers[0].addresses[1]: 255.255.255.255 is special-purpose"),
        ("[]", "peers[0].addresses: needs at least one address"),
        ("[\"192.0.2.1\", \"192.0.2.1\"]", "peers[0].addresses[1]: 192.0.2.1 is listed twice"),
        ("[\"nope\"]", "peers[0].addresses[0]: \"nope\" is not an IP address or prefix"),
    ] {
        let e = error(&with(list));
        assert!(e.contains(expected), "{list}: {e}");
    }
    let many: Vec<String> = (0..17).map(|i| format!("\"192.0.2.{i}\"")).collect();
    let e = error(&with(&format!("[{}]", many.join(", "))));
    assert!(e.contains("peers[0].addresses: 17 entries, at most 16"), "{e}");
    let sixteen: Vec<String> = (0..16).map(|i| format!("\"192.0.2.{i}\"")).collect();
    assert!(parse(&with(&format!("[{}]", sixteen.join(", ")))).is_ok());
}

#[test]
fn service_and_peer_addresses_are_checked() {
    for (ip, what) in [
        ("0.0.0.0", "special-purpose"),
        ("255.255.255.255", "special-purpose"),
        ("::", "special-purpose"),
        ("239.1.2.3", "special-purpose"),
        ("ff02::1", "special-purpose"),
    ] {
        let e = error(&valid().replace("[\"192.0.2.10\"]", &format!("[\"{ip}\"]")));
        assert!(e.contains(&format!("node.addresses[0]: {ip} is a {what}")), "{ip}: {e}");
    }
    let many: Vec<String> = (0..17).map(|i| format!("\"192.0.2.{i}\"")).collect();
    let e = error(&valid().replace("[\"192.0.2.10\"]", &format!("[{}]", many.join(", "))));
    assert!(e.contains("node.addresses: 17 addresses, at most 16"), "{e}");

    let e = error(&valid().replace("198.51.100.20:7946", "127.0.0.1:7946"));
    assert!(e.contains("peers[0].gossip: 127.0.0.1:7946 is this node's own gossip address"), "{e}");
    let e = error(&valid().replace("203.0.113.30:7946", "198.51.100.20:7946"));
    assert!(e.contains("peers[1].gossip: 198.51.100.20:7946 is also peers[0].gossip"), "{e}");
    let e = error(&valid().replace("198.51.100.20:7946", "0.0.0.0:7946"));
    assert!(e.contains("peers[0].gossip: 0.0.0.0 is a special-purpose address"), "{e}");
    let e = error(&valid().replace("198.51.100.20:7946", "198.51.100.20:0"));
    assert!(e.contains("peers[0].gossip: port 0"), "{e}");
    let e = error(&valid().replace("127.0.0.1:5353", "127.0.0.1:0"));
    assert!(e.contains("node.dns[0]: port 0"), "{e}");
    // Listening on every address is fine; a peer on loopback at our port is then ourselves.
    let wildcard = valid().replace("gossip = \"127.0.0.1:7946\"", "gossip = \"0.0.0.0:7946\"");
    assert!(parse(&wildcard).is_ok());
    let e = error(&wildcard.replace("198.51.100.20:7946", "127.0.0.1:7946"));
    assert!(e.contains("is this node's own gossip address"), "{e}");
}

#[test]
fn ids_and_names_with_invisible_characters_are_refused() {
    let text = valid().replace(
        "[[peers]]\nname = \"beta\"",
        "[cluster]\nid = \"prod\u{200b}\"\n\n[[peers]]\nname = \"beta\"",
    );
    let e = error(&text);
    assert!(
        e.contains("cluster.id: \"prod\\u{200b}\" contains whitespace or an invisible character (U+200B)"),
        "{e}"
    );
    let e = error(&valid().replace("name = \"gamma\"", "name = \"gam\u{202e}ma\""));
    assert!(e.contains("peers[1].name") && e.contains("U+202E"), "{e}");
    let e = error(&valid().replace("name = \"gamma\"", "name = \"gam\\u0007ma\""));
    assert!(e.contains("peers[1].name") && e.contains("U+0007"), "{e}");
}
