//! `[health]`: this site's service check, the check it advertises to peers, and how checks run.
//!
//! The section is optional. Without it a node runs no check of its own, advertises nothing, and
//! still probes the services its peers advertise (`probe_peers` defaults to true), so one site
//! can turn checks on without the others changing their configs.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use spdu_dnsfront::ZoneConfig;
use spdu_gossip::proto::{HealthPolicy, ServiceCheck};
use toml::Spanned;

use super::{COUNT, Checked, FieldError, NodeConfig, bounded_count, bounded_ms, socket_addr};

/// Default time between two runs of a check.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(500);
/// Default time a check may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(1000);
/// Default bound on peer probes running at once.
pub const DEFAULT_MAX_CONCURRENT_PROBES: usize = 16;
/// `health.interval_ms`: 50 ms to 1 h.
pub const INTERVAL_MS: std::ops::RangeInclusive<u64> = 50..=3_600_000;
/// `health.timeout_ms`: 10 ms to 1 min.
pub const TIMEOUT_MS: std::ops::RangeInclusive<u64> = 10..=60_000;
/// `health.min_change_interval_ms`: up to a day.
pub const MIN_CHANGE_INTERVAL_MS: std::ops::RangeInclusive<u64> = 0..=86_400_000;
/// `health.max_concurrent_probes`: 1 to 1024.
pub const MAX_CONCURRENT_PROBES: std::ops::RangeInclusive<u32> = 1..=1024;

/// `[health]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthConfig {
    /// `health.check` and its parameters: what this node runs against its own service.
    pub check: Option<SelfCheck>,
    /// What peers run against this site's service (`[health.remote]`, or the check itself).
    pub advertise: Option<ServiceCheck>,
    /// `health.interval_ms`: time between two runs of every check.
    pub interval: Duration,
    /// `health.timeout_ms`: how long one run may take (a timeout is a failure).
    pub timeout: Duration,
    /// `health.max_concurrent_probes`: peer probes running at once.
    pub max_concurrent_probes: usize,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            check: None,
            advertise: None,
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            max_concurrent_probes: DEFAULT_MAX_CONCURRENT_PROBES,
        }
    }
}

/// This node's check of its own service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SelfCheck {
    /// A TCP, HTTP(S) or DNS check, run against `address`.
    Service {
        /// What to check.
        check: ServiceCheck,
        /// Where: `health.address`, or this site's first service address and `health.port`.
        address: SocketAddr,
    },
    /// `health.command`: exit status 0 is healthy; killed when it takes longer than the timeout.
    Command(Vec<String>),
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    // The fields of `RawSpec`, inline: toml's spans do not survive `#[serde(flatten)]`.
    check: Option<Spanned<String>>,
    port: Option<Spanned<u16>>,
    host: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    expect_status: Option<Spanned<u16>>,
    expect_body: Option<String>,
    query: Option<Spanned<String>>,
    query_type: Option<Spanned<String>>,
    address: Option<Spanned<String>>,
    command: Option<Spanned<Vec<String>>>,
    advertise: Option<bool>,
    probe_peers: Option<bool>,
    interval_ms: Option<Spanned<u64>>,
    timeout_ms: Option<Spanned<u64>>,
    down_after: Option<Spanned<u32>>,
    up_after: Option<Spanned<u32>>,
    min_change_interval_ms: Option<Spanned<u64>>,
    max_concurrent_probes: Option<Spanned<u32>>,
    remote: Option<RawSpec>,
}

/// The fields that describe a check a peer can run too.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    check: Option<Spanned<String>>,
    port: Option<Spanned<u16>>,
    host: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    expect_status: Option<Spanned<u16>>,
    expect_body: Option<String>,
    query: Option<Spanned<String>>,
    query_type: Option<Spanned<String>>,
}

/// The name clients ask for: the first pool name, absolute, without the trailing dot.
fn service_name(zone: &ZoneConfig) -> String {
    let origin = zone.origin.trim_end_matches('.');
    match zone.names.first().map(String::as_str) {
        None | Some("@") => origin.to_owned(),
        Some(name) if name.ends_with('.') => name.trim_end_matches('.').to_owned(),
        Some(name) => format!("{name}.{origin}"),
    }
}

impl RawSpec {
    /// The check described, for `kind` (not `command`); `field` prefixes error messages.
    fn service_check(&self, field: &str, kind: &Spanned<String>, zone: &ZoneConfig) -> Checked<ServiceCheck> {
        let port = |default: Option<u16>| match (&self.port, default) {
            (Some(p), _) if *p.get_ref() == 0 => {
                Err(FieldError::at(p, format!("{field}.port: must not be 0")))
            }
            (Some(p), _) => Ok(*p.get_ref()),
            (None, Some(d)) => Ok(d),
            (None, None) => Err(FieldError::at(kind, format!("{field}.port: needed by a tcp check"))),
        };
        let unused = |what: &str, set: bool| {
            if set {
                Err(FieldError::at(kind, format!("{field}.{what}: not used by a {:?} check", kind.get_ref())))
            } else {
                Ok(())
            }
        };
        let is_http = matches!(kind.get_ref().as_str(), "http" | "https");
        if !is_http {
            unused("host", self.host.is_some())?;
            unused("path", self.path.is_some())?;
            unused("expect_status", self.expect_status.is_some())?;
            unused("expect_body", self.expect_body.is_some())?;
        }
        if kind.get_ref() != "dns" {
            unused("query", self.query.is_some())?;
            unused("query_type", self.query_type.is_some())?;
        }
        let check = match kind.get_ref().as_str() {
            "tcp" => ServiceCheck::Tcp { port: port(None)? },
            "http" | "https" => {
                let tls = kind.get_ref() == "https";
                let status = self.expect_status.as_ref().map_or(200, |s| *s.get_ref());
                if !(100..=599).contains(&status) {
                    let at = self.expect_status.as_ref().expect("only a given status is out of range");
                    return Err(FieldError::at(
                        at,
                        format!("{field}.expect_status: {status} is not an HTTP status"),
                    ));
                }
                ServiceCheck::Http {
                    tls,
                    port: port(Some(if tls { 443 } else { 80 }))?,
                    host: self.host.as_ref().map_or_else(|| service_name(zone), |h| h.get_ref().clone()),
                    path: self.path.as_ref().map_or_else(|| "/".to_owned(), |p| p.get_ref().clone()),
                    expect_status: status,
                    expect_body: self.expect_body.clone(),
                }
            }
            "dns" => {
                let record_type =
                    self.query_type.as_ref().map_or_else(|| "A".to_owned(), |t| t.get_ref().clone());
                if record_type.parse::<hickory_proto::rr::RecordType>().is_err() {
                    let at = self.query_type.as_ref().expect("the default parses");
                    return Err(FieldError::at(
                        at,
                        format!("{field}.query_type: unknown record type {record_type:?}"),
                    ));
                }
                ServiceCheck::Dns {
                    port: port(Some(53))?,
                    name: self.query.as_ref().map_or_else(|| service_name(zone), |q| q.get_ref().clone()),
                    record_type,
                }
            }
            other => {
                return Err(FieldError::at(
                    kind,
                    format!(
                        "{field}.check: {other:?} is not one of \"tcp\", \"http\", \"https\", \"dns\", \"command\""
                    ),
                ));
            }
        };
        check.validate().map_err(|e| FieldError::at(kind, format!("{field}: {e}")))?;
        Ok(check)
    }
}

impl RawHealth {
    pub(super) fn validate(
        self,
        node: &NodeConfig,
        zone: &ZoneConfig,
    ) -> Checked<(HealthConfig, HealthPolicy)> {
        let spec = RawSpec {
            check: self.check,
            port: self.port,
            host: self.host,
            path: self.path,
            expect_status: self.expect_status,
            expect_body: self.expect_body,
            query: self.query,
            query_type: self.query_type,
        };
        let default = HealthPolicy::default();
        let interval = bounded_ms("health.interval_ms", &self.interval_ms, DEFAULT_INTERVAL, INTERVAL_MS)?;
        let timeout = bounded_ms("health.timeout_ms", &self.timeout_ms, DEFAULT_TIMEOUT, TIMEOUT_MS)?;
        let policy = HealthPolicy {
            down_after: bounded_count("health.down_after", &self.down_after, default.down_after, COUNT)?,
            up_after: bounded_count("health.up_after", &self.up_after, default.up_after, COUNT)?,
            min_change_interval: bounded_ms(
                "health.min_change_interval_ms",
                &self.min_change_interval_ms,
                Duration::ZERO,
                MIN_CHANGE_INTERVAL_MS,
            )?,
            probe_peers: self.probe_peers.unwrap_or(true),
        };
        let max_concurrent_probes = bounded_count(
            "health.max_concurrent_probes",
            &self.max_concurrent_probes,
            DEFAULT_MAX_CONCURRENT_PROBES as u32,
            MAX_CONCURRENT_PROBES,
        )? as usize;

        let check = match &spec.check {
            None => {
                let stray = spec.port.is_some() || self.command.is_some() || self.address.is_some();
                if stray {
                    return Err(FieldError::field(
                        "health.check: needed when health.port, address or command is set",
                    ));
                }
                None
            }
            Some(kind) if kind.get_ref() == "command" => {
                let argv = self.command.as_ref().filter(|c| !c.get_ref().is_empty()).ok_or_else(|| {
                    FieldError::at(
                        kind,
                        "health.command: a command check needs command = [\"program\", \"arg\", …]",
                    )
                })?;
                if spec.port.is_some() || self.address.is_some() {
                    return Err(FieldError::at(kind, "health.port/address: not used by a command check"));
                }
                Some(SelfCheck::Command(argv.get_ref().clone()))
            }
            Some(kind) => {
                if let Some(c) = &self.command {
                    return Err(FieldError::at(c, "health.command: only used by check = \"command\""));
                }
                let check = spec.service_check("health", kind, zone)?;
                let port = check.port();
                let address = match &self.address {
                    Some(a) => socket_addr("health.address", a)?,
                    None => match node.addresses.first() {
                        Some(ip) => SocketAddr::new(*ip, port),
                        None => {
                            return Err(FieldError::at(
                                kind,
                                "health.address: needed with node.addresses = \"observed\" (no \
                                 configured address to check the service at)",
                            ));
                        }
                    },
                };
                Some(SelfCheck::Service { check, address })
            }
        };

        let advertise = match (&self.remote, self.advertise) {
            (_, Some(false)) => None,
            (Some(remote), _) => {
                let kind = remote.check.as_ref().ok_or_else(|| {
                    FieldError::field("health.remote.check: needed (tcp, http, https or dns)")
                })?;
                Some(remote.service_check("health.remote", kind, zone)?)
            }
            (None, _) => match &check {
                Some(SelfCheck::Service { check, .. }) => Some(check.clone()),
                _ => None,
            },
        };

        let config = HealthConfig { check, advertise, interval, timeout, max_concurrent_probes };
        Ok((config, policy))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn parse(health: &str) -> anyhow::Result<Config> {
        let text = format!(
            "[node]\nname = \"alpha\"\nkey = \"node.key\"\ngossip = \"127.0.0.1:7946\"\n\
             dns = [\"127.0.0.1:5353\"]\ncontrol = \"127.0.0.1:7947\"\naddresses = [\"192.0.2.10\"]\n\n\
             [zone]\norigin = \"pool.example.com\"\nnames = [\"api\"]\nttl = 5\n\
             nameservers = [\"alpha.example.com\"]\n\n{health}\n"
        );
        Config::parse(Path::new("/etc/spdu/spdu.toml"), &text)
    }

    fn error(health: &str) -> String {
        format!("{:#}", parse(health).expect_err("accepted"))
    }

    #[test]
    fn without_a_section_nothing_is_checked_but_peers_are_probed() {
        let config = parse("").unwrap();
        assert_eq!(config.health, HealthConfig::default());
        assert!(config.protocol.health.probe_peers);
        assert_eq!(config.protocol.health, HealthPolicy { probe_peers: true, ..HealthPolicy::default() });
    }

    #[test]
    fn http_check_gets_defaults_and_is_advertised() {
        let config = parse("[health]\ncheck = \"https\"\npath = \"/healthz\"").unwrap();
        let check = ServiceCheck::Http {
            tls: true,
            port: 443,
            host: "api.pool.example.com".into(),
            path: "/healthz".into(),
            expect_status: 200,
            expect_body: None,
        };
        let address = "192.0.2.10:443".parse().unwrap();
        assert_eq!(config.health.check, Some(SelfCheck::Service { check: check.clone(), address }));
        assert_eq!(config.health.advertise, Some(check));
        assert_eq!((config.health.interval, config.health.timeout), (DEFAULT_INTERVAL, DEFAULT_TIMEOUT));
    }

    #[test]
    fn overrides() {
        let config = parse(
            "[health]\ncheck = \"tcp\"\nport = 8443\naddress = \"127.0.0.1:9000\"\ninterval_ms = 250\n\
             timeout_ms = 400\ndown_after = 3\nup_after = 5\nmin_change_interval_ms = 30000\n\
             probe_peers = false\nmax_concurrent_probes = 4",
        )
        .unwrap();
        let address = "127.0.0.1:9000".parse().unwrap();
        assert_eq!(
            config.health.check,
            Some(SelfCheck::Service { check: ServiceCheck::Tcp { port: 8443 }, address })
        );
        assert_eq!(config.health.advertise, Some(ServiceCheck::Tcp { port: 8443 }));
        assert_eq!(config.health.max_concurrent_probes, 4);
        let policy = &config.protocol.health;
        assert_eq!((policy.down_after, policy.up_after, policy.probe_peers), (3, 5, false));
        assert_eq!(policy.min_change_interval, Duration::from_secs(30));
    }

    #[test]
    fn command_checks_are_never_advertised_unless_a_remote_check_is_given() {
        let config = parse("[health]\ncheck = \"command\"\ncommand = [\"/bin/check\", \"-q\"]").unwrap();
        assert_eq!(config.health.check, Some(SelfCheck::Command(vec!["/bin/check".into(), "-q".into()])));
        assert_eq!(config.health.advertise, None);
        let config = parse(
            "[health]\ncheck = \"command\"\ncommand = [\"/bin/check\"]\n\n[health.remote]\ncheck = \"dns\"\nquery_type = \"SOA\"",
        )
        .unwrap();
        let dns =
            ServiceCheck::Dns { port: 53, name: "api.pool.example.com".into(), record_type: "SOA".into() };
        assert_eq!(config.health.advertise, Some(dns));
        let config = parse("[health]\ncheck = \"tcp\"\nport = 80\nadvertise = false").unwrap();
        assert_eq!(config.health.advertise, None);
    }

    #[test]
    fn mistakes_name_the_field() {
        let e = error("[health]\ncheck = \"ping\"");
        assert!(e.contains("health.check: \"ping\" is not one of"), "{e}");
        let e = error("[health]\ncheck = \"tcp\"");
        assert!(e.contains("health.port: needed by a tcp check"), "{e}");
        let e = error("[health]\ncheck = \"command\"");
        assert!(e.contains("health.command: a command check needs"), "{e}");
        let e = error("[health]\ncheck = \"tcp\"\nport = 1\npath = \"/\"");
        assert!(e.contains("health.path: not used by a \"tcp\" check"), "{e}");
        let e = error("[health]\ncheck = \"http\"\npath = \"healthz\"");
        assert!(e.contains("does not start with /"), "{e}");
        let e = error("[health]\ncheck = \"http\"\nexpect_status = 42");
        assert!(e.contains("health.expect_status: 42 is not an HTTP status"), "{e}");
        let e = error("[health]\ncheck = \"dns\"\nquery_type = \"BOGUS\"");
        assert!(e.contains("health.query_type: unknown record type"), "{e}");
        let e = error("[health]\ncheck = \"tcp\"\nport = 1\ntimeout_ms = 0");
        assert!(e.contains("health.timeout_ms: 0 is out of bounds (10 to 60000 ms)"), "{e}");
        let e = error("[health]\ninterval_ms = 1");
        assert!(e.contains("health.interval_ms: 1 is out of bounds (50 to 3600000 ms)"), "{e}");
        let e = error("[health]\nmax_concurrent_probes = 0");
        assert!(e.contains("health.max_concurrent_probes: 0 is out of bounds"), "{e}");
        let e = error("[health]\nport = 1");
        assert!(e.contains("health.check: needed"), "{e}");
        let e = error("[health]\ncheck = \"tcp\"\nport = 1\n\n[health.remote]\ncheck = \"command\"");
        assert!(e.contains("health.remote.check: \"command\" is not one of"), "{e}");
        let e = error("[health]\ncolour = 1");
        assert!(e.contains("colour"), "{e}");
    }
}
