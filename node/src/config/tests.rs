//! Config parsing and validation, as an operator writes configs.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use spdu_gossip::proto::{self, Quorum};
use spdu_keys::SecretKey;
use spdu_policy::{Policy, SiteAttrs};

use super::*;

const PEER_KEY: &str = "beta";

fn key_token(seed: u8) -> String {
    SecretKey::from_bytes(&[seed; 32]).public().to_string()
}

pub(super) fn valid() -> String {
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
    let mut protocol = config.protocol.clone();
    protocol.policy = proto::PolicyConfig::default();
    assert_eq!(protocol, proto::Config::default());
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

/// `valid()` with `node` appended to `[node]`, `zone` replacing `names = ["api"]`, and `records`
/// appended after `[zone]`.
fn with_policies(node: &str, zone: &str, records: &str) -> String {
    valid()
        .replace("addresses = [\"192.0.2.10\"]\n", &format!("addresses = [\"192.0.2.10\"]\n{node}\n"))
        .replace("names = [\"api\"]\n", &format!("{zone}\n"))
        .replace(
            "nameservers = [\"alpha.example.com\"]\n",
            &format!("nameservers = [\"alpha.example.com\"]\n{records}\n"),
        )
}

#[test]
fn zone_names_are_rules_of_policy_all() {
    let config = parse(&valid()).unwrap();
    assert_eq!(config.zone.names, vec!["api"]);
    assert_eq!(config.protocol.policy.rules, vec![spdu_policy::Rule::all("api", 5)]);
    let sites: Vec<(&str, SiteAttrs)> =
        config.protocol.policy.sites.iter().map(|(name, attrs)| (name.as_str(), *attrs)).collect();
    assert_eq!(
        sites,
        vec![
            ("alpha", SiteAttrs::default()),
            ("beta", SiteAttrs::default()),
            ("gamma", SiteAttrs::default())
        ]
    );
    assert_eq!(config.node.attrs, SiteAttrs { priority: 1, weight: 100 });
}

#[test]
fn records_become_rules_in_zone_order() {
    let text = with_policies(
        "priority = 1\nweight = 200",
        "names = [\"api\", \"www.api\"]",
        r#"
[[zone.record]]
name = "admin"
policy = "priority"
sites = ["alpha", "beta"]
max_answers = 1
ttl = 30
ttl_degraded = 2
min_change_interval_ms = 60000

[[zone.record]]
name = "@"
policy = "fastest"
max_answers = 2
good_enough_ms = 20

[[zone.record]]
name = "static"
policy = "weighted"
"#,
    )
    .replace("gossip = \"203.0.113.30:7946\"", "gossip = \"203.0.113.30:7946\"\npriority = 2\nweight = 0");
    let config = parse(&text).unwrap();
    assert_eq!(config.zone.names, vec!["api", "www.api", "admin", "@", "static"]);
    let rules = &config.protocol.policy.rules;
    let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, config.zone.names);
    assert_eq!(rules[1], spdu_policy::Rule::all("www.api", 5));
    let admin = &rules[2];
    assert_eq!(admin.policy, Policy::Priority);
    assert_eq!(admin.sites, Some(vec!["alpha".to_string(), "beta".to_string()]));
    assert_eq!((admin.max_answers, admin.ttl, admin.ttl_degraded), (1, 30, 2));
    assert_eq!(admin.min_change_interval, Duration::from_secs(60));
    assert_eq!(admin.good_enough, spdu_policy::DEFAULT_GOOD_ENOUGH);
    let apex = &rules[3];
    assert_eq!((apex.policy, apex.sites.clone(), apex.max_answers), (Policy::Fastest, None, 2));
    assert_eq!(apex.good_enough, Duration::from_millis(20));
    // Defaults: the zone TTL, ttl_degraded = ttl, no limit, no change-rate limit.
    let weighted = &rules[4];
    assert_eq!(weighted.policy, Policy::Weighted);
    assert_eq!((weighted.max_answers, weighted.ttl, weighted.ttl_degraded), (0, 5, 5));
    assert_eq!(weighted.min_change_interval, Duration::ZERO);
    assert_eq!(config.protocol.policy.attrs("alpha"), SiteAttrs { priority: 1, weight: 200 });
    assert_eq!(config.protocol.policy.attrs("beta"), SiteAttrs::default());
    assert_eq!(config.protocol.policy.attrs("gamma"), SiteAttrs { priority: 2, weight: 0 });
    // A record's ttl is its ttl_degraded's default.
    let text = with_policies("", "", "[[zone.record]]\nname = \"api\"\npolicy = \"all\"\nttl = 60\n");
    let rule = &parse(&text).unwrap().protocol.policy.rules[0];
    assert_eq!((rule.ttl, rule.ttl_degraded), (60, 60));
}

#[test]
fn names_may_be_left_out_but_one_name_is_needed() {
    let text = with_policies("", "", "[[zone.record]]\nname = \"api\"\npolicy = \"priority\"\n");
    let config = parse(&text).unwrap();
    assert_eq!(config.zone.names, vec!["api"]);
    assert_eq!(config.protocol.policy.rules[0].policy, Policy::Priority);
    let e = error(&with_policies("", "", ""));
    assert!(e.starts_with("/etc/spdu/spdu.toml: zone.names: no pool name"), "{e}");
    let e = error(&with_policies("", "names = []", ""));
    assert!(e.starts_with("/etc/spdu/spdu.toml:13:9: zone.names: no pool name"), "{e}");
}

#[test]
fn policy_mistakes_name_the_line_and_the_field() {
    let record =
        |fields: &str| with_policies("", "", &format!("[[zone.record]]\nname = \"admin\"\n{fields}\n"));
    for (fields, expected) in [
        (
            "policy = \"prio\"",
            "spdu.toml:18:10: zone.record[0].policy: \"prio\" is not a policy (all, priority, weighted, fastest)",
        ),
        (
            "policy = \"priority\"\nsites = [\"alpha\", \"delta\"]",
            "spdu.toml:19:19: zone.record[0].sites[1]: \"delta\" is not a site of the roster \
             (node.name or a peers[].name: alpha, beta, gamma)",
        ),
        (
            "policy = \"all\"\nsites = [\"beta\", \"beta\"]",
            "zone.record[0].sites[1]: \"beta\" is listed twice",
        ),
        ("policy = \"all\"\nsites = [\"Beta\"]", "zone.record[0].sites[0]: \"Beta\" is not a site"),
        ("policy = \"all\"\nsites = []", "zone.record[0].sites: needs at least one site"),
        (
            "policy = \"all\"\nmax_answers = 129",
            "zone.record[0].max_answers: 129 is out of bounds (0 to 128)",
        ),
        ("policy = \"all\"\nmax_answers = -1", "spdu.toml:19:15:"),
        (
            "policy = \"all\"\nttl = 2147483648",
            "spdu.toml:19:7: zone.record[0].ttl: 2147483648 is out of bounds (0 to 2147483647 s)",
        ),
        (
            "policy = \"all\"\nttl = 10\nttl_degraded = 30",
            "spdu.toml:20:16: zone.record[0].ttl_degraded: 30 is longer than the record's ttl (10)",
        ),
        (
            "policy = \"all\"\nttl_degraded = 6",
            "zone.record[0].ttl_degraded: 6 is longer than the record's ttl (5)",
        ),
        (
            "policy = \"all\"\nmin_change_interval_ms = 86400001",
            "zone.record[0].min_change_interval_ms: 86400001 is out of bounds (0 to 86400000 ms)",
        ),
        (
            "policy = \"priority\"\ngood_enough_ms = 10",
            "zone.record[0].good_enough_ms: only used by policy \"fastest\", not by \"priority\"",
        ),
        (
            "policy = \"fastest\"\ngood_enough_ms = 60001",
            "zone.record[0].good_enough_ms: 60001 is out of bounds (0 to 60000 ms)",
        ),
        ("policy = \"all\"\ncolour = \"blue\"", "spdu.toml:19:1: unknown field `colour`"),
        ("", "missing field `policy`"),
    ] {
        let e = error(&record(fields));
        assert!(e.contains(expected), "{fields}: {e}");
        assert!(!e.contains('\n'), "{e}");
    }
    let e = error(&with_policies("", "", "[[zone.record]]\npolicy = \"all\"\n"));
    assert!(e.contains("missing field `name`"), "{e}");
}

#[test]
fn a_name_has_one_rule() {
    let record = |name: &str| format!("[[zone.record]]\nname = \"{name}\"\npolicy = \"priority\"\n");
    for (zone, records, expected) in [
        (
            "names = [\"api\"]",
            record("API"),
            "spdu.toml:17:8: zone.record[0].name: \"API\" is the same name as zone.names[0]",
        ),
        (
            "names = [\"api\", \"www\"]",
            record("www.pool.example.com."),
            "zone.record[0].name: \"www.pool.example.com.\" is the same name as zone.names[1]",
        ),
        (
            "names = [\"api\", \"Api\"]",
            String::new(),
            "spdu.toml:13:17: zone.names[1]: \"Api\" is the same name as zone.names[0]",
        ),
        (
            "",
            format!("{}\n{}", record("@"), record("pool.example.com.")),
            "zone.record[1].name: \"pool.example.com.\" is the same name as zone.record[0].name",
        ),
    ] {
        let e = error(&with_policies("", zone, &records));
        assert!(e.contains(expected), "{zone} {records}: {e}");
    }
    // The DNS front's checks of a name are placed at the entry.
    let e = error(&with_policies("", "names = [\"api\"]", &record("bad..name")));
    assert!(
        e.contains("spdu.toml:17:8: zone.record[0].name: \"bad..name\" is not a valid name: empty label"),
        "{e}"
    );
    let e = error(&with_policies("", "names = [\"api\", \"api.other.example.\"]", ""));
    assert!(e.contains("spdu.toml:13:17: zone.names[1]: \"api.other.example.\" is outside the zone"), "{e}");
    let e = error(&with_policies("", "names = [\"api\", \" www\"]", ""));
    assert!(e.contains("zone.names[1]: \" www\" contains whitespace"), "{e}");
    let e = error(&valid().replace("origin = \"pool.example.com\"", "origin = \"pool..example\""));
    assert!(e.contains("spdu.toml:11:10: zone.origin \"pool..example\" is not a valid domain name"), "{e}");
    let e = error(&valid().replace("ttl = 5", "ttl = 2147483648"));
    assert!(e.contains("spdu.toml:13:7: zone.ttl: 2147483648 is out of bounds"), "{e}");
    let e = error(&valid().replace("[\"alpha.example.com\"]", "[\"ns.pool.example.com\"]"));
    assert!(
        e.contains("spdu.toml:14:16: zone.nameservers entry \"ns.pool.example.com\" is inside the zone"),
        "{e}"
    );
}

#[test]
fn site_attributes_are_bounded() {
    let e = error(&with_policies("priority = 1001", "names = [\"api\"]", ""));
    assert!(e.contains("spdu.toml:9:12: node.priority: 1001 is out of bounds (0 to 1000)"), "{e}");
    let e = error(&with_policies("weight = 1000001", "names = [\"api\"]", ""));
    assert!(e.contains("node.weight: 1000001 is out of bounds (0 to 1000000)"), "{e}");
    let e = error(&with_policies("weight = -1", "names = [\"api\"]", ""));
    assert!(e.contains("spdu.toml:9:10:"), "{e}");
    let e = error(
        &valid()
            .replace("gossip = \"203.0.113.30:7946\"", "gossip = \"203.0.113.30:7946\"\nweight = 2000000"),
    );
    assert!(e.contains("peers[1].weight: 2000000 is out of bounds"), "{e}");
    let e = error(
        &valid()
            .replace("gossip = \"203.0.113.30:7946\"", "gossip = \"203.0.113.30:7946\"\npriority = \"high\""),
    );
    assert!(e.contains("spdu.toml:25:12:") && e.contains("expected u32"), "{e}");
    let config = parse(&with_policies("priority = 0\nweight = 0", "names = [\"api\"]", "")).unwrap();
    assert_eq!(config.node.attrs, SiteAttrs { priority: 0, weight: 0 });
}

#[test]
fn dns_cookies_default_on_and_turn_off() {
    assert!(parse(&valid()).unwrap().dns.cookies, "on by default");
    let with_dns = |dns: &str| {
        valid().replace("[[peers]]\nname = \"beta\"", &format!("[dns]\n{dns}\n\n[[peers]]\nname = \"beta\""))
    };
    assert!(!parse(&with_dns("cookies = false")).unwrap().dns.cookies);
    assert!(parse(&with_dns("cookies = true")).unwrap().dns.cookies);
    let e = error(&with_dns("cookies = \"no\""));
    assert!(e.starts_with("/etc/spdu/spdu.toml:") && e.contains("expected a boolean"), "{e}");
    let e = error(&with_dns("cookie = false"));
    assert!(e.starts_with("/etc/spdu/spdu.toml:") && e.contains("cookie"), "{e}");
}
