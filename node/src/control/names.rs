//! The pool names `/v1/explain/{name}` knows, and how an asked name finds its rule.
//!
//! Invariant: a name is found only if it is one of the configured pool names, spelled as in
//! the config or any other way that is the same name: any letter case, absolute with or without
//! the trailing dot (`api.pool.example.com`), or the origin itself for `"@"`. Anything else is
//! refused here, before the membership actor is asked. The names follow the config watch
//! ([`PoolNames::following`]): a reload that adds or removes a name applies here at once.

use std::sync::Arc;

use spdu_dnsfront::ZoneConfig;
use tokio::sync::watch;

use crate::config::{Config, name_key};

/// Longest name the endpoint looks up (a domain name has at most 253 characters).
const MAX_ASKED_LEN: usize = 255;

/// The configured pool names, as the rules name them: fixed, or those of the current config.
#[derive(Clone, Debug)]
pub struct PoolNames(Source);

#[derive(Clone, Debug)]
enum Source {
    Fixed(Names),
    Config(watch::Receiver<Arc<Config>>),
}

impl PoolNames {
    /// The names of `zone` (the rule names, in the same order).
    pub fn new(zone: &ZoneConfig) -> Self {
        Self(Source::Fixed(Names::new(zone)))
    }

    /// The names of the zone of whatever config `config` holds at the time of asking.
    pub fn following(config: watch::Receiver<Arc<Config>>) -> Self {
        Self(Source::Config(config))
    }

    fn names(&self) -> Names {
        match &self.0 {
            Source::Fixed(names) => names.clone(),
            Source::Config(config) => Names::new(&config.borrow().zone),
        }
    }

    /// The configured spelling of the pool name `asked` stands for, if any.
    pub fn find(&self, asked: &str) -> Option<String> {
        self.names().find(asked).map(str::to_owned)
    }

    /// Every configured name, in zone order.
    pub fn list(&self) -> Vec<String> {
        self.names().names.into_iter().map(|(name, _)| name).collect()
    }
}

/// One zone's names.
#[derive(Clone, Debug)]
struct Names {
    origin: String,
    /// `(configured name, key)`, in zone order.
    names: Vec<(String, String)>,
}

impl Names {
    fn new(zone: &ZoneConfig) -> Self {
        let names = zone.names.iter().map(|n| (n.clone(), name_key(n, &zone.origin))).collect();
        Self { origin: zone.origin.clone(), names }
    }

    fn find(&self, asked: &str) -> Option<&str> {
        if asked.is_empty() || asked.len() > MAX_ASKED_LEN {
            return None;
        }
        // As given (relative unless it ends with a dot) first, then as an absolute name.
        let as_given = name_key(asked, &self.origin);
        let absolute = (!asked.ends_with('.')).then(|| name_key(&format!("{asked}."), &self.origin));
        let found = |key: &String| self.names.iter().find(|(_, k)| k == key).map(|(name, _)| name.as_str());
        found(&as_given).or_else(|| absolute.as_ref().and_then(found))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_configured_name_finds_it() {
        let zone = ZoneConfig {
            origin: "pool.example.com".into(),
            names: vec!["api".into(), "@".into(), "Www.Deep".into()],
            ttl: 5,
            nameservers: vec!["ns.example.net".into()],
        };
        let names = PoolNames::new(&zone);
        for (asked, found) in [
            ("api", Some("api")),
            ("API", Some("api")),
            ("api.pool.example.com", Some("api")),
            ("api.POOL.example.com.", Some("api")),
            ("@", Some("@")),
            ("pool.example.com", Some("@")),
            ("pool.example.com.", Some("@")),
            ("www.deep", Some("Www.Deep")),
            ("www.deep.pool.example.com", Some("Www.Deep")),
            ("deep", None),
            ("admin", None),
            ("api.other.example", None),
            ("", None),
        ] {
            assert_eq!(names.find(asked).as_deref(), found, "{asked}");
        }
        assert_eq!(names.find(&"a".repeat(300)), None);
        // A relative name that looks absolute is found as given first.
        let odd = ZoneConfig { names: vec!["api".into(), "api.pool.example.com".into()], ..zone.clone() };
        assert_eq!(
            PoolNames::new(&odd).find("api.pool.example.com").as_deref(),
            Some("api.pool.example.com")
        );
        assert_eq!(PoolNames::new(&odd).find("api.pool.example.com.").as_deref(), Some("api"));
        assert_eq!(names.list(), vec!["api", "@", "Www.Deep"]);
    }
}
