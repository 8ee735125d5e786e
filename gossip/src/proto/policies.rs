//! Each name's failover policy in the core: one [`Selector`] per rule of [`super::Config::policy`],
//! fed this node's view of every site (qualifies or not, its priority and weight, its smoothed
//! service-check latency). Selections run when the qualifying sites or their addresses change,
//! when a latency changes and some rule is `fastest`, and when a held change comes due
//! ([`Policies::due`], a timer of the state).
//!
//! Invariants: sites are given in answer order (this node first, then peers in key order), the
//! same order the qualifying members have; `names` holds the last selection, one entry per rule in
//! config order; with no rules nothing runs (the simulator's large clusters pay nothing).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use spdu_keys::PublicKey;
use spdu_policy::{Candidate, Policy, PolicyConfig, Selector, SiteVerdict};

use super::{AnswerSite, NameAnswer};

/// One site as this node sees it, for the selectors.
#[derive(Clone, Debug)]
pub(crate) struct SiteView<'a> {
    /// Its roster position.
    pub(crate) position: usize,
    /// Its roster name.
    pub(crate) name: &'a str,
    /// Its key.
    pub(crate) key: PublicKey,
    /// The answer rule admits it (for this node: its own service is healthy).
    pub(crate) qualifies: bool,
    /// Its smoothed service-check latency as this node measures it, once settled.
    pub(crate) latency: Option<Duration>,
    /// Its latency is measured but not settled yet.
    pub(crate) settling: bool,
    /// Whether it is this node.
    pub(crate) is_self: bool,
}

/// The selectors and their last answers.
#[derive(Debug, Default)]
pub(crate) struct Policies {
    selectors: Vec<Selector>,
    names: Vec<NameAnswer>,
    uses_latency: bool,
}

impl Policies {
    /// One selector per rule; no answer yet.
    pub(crate) fn new(config: &PolicyConfig) -> Self {
        Self {
            selectors: config.rules.iter().cloned().map(Selector::new).collect(),
            names: Vec::new(),
            uses_latency: config.rules.iter().any(|r| r.policy == Policy::Fastest),
        }
    }

    /// The rules changed: a rule equal to one held keeps its selector (its current sites and
    /// held changes), the others start afresh. The last selection is forgotten, so the next
    /// [`Policies::update`] reports a change.
    pub(crate) fn reconfigure(&mut self, config: &PolicyConfig) {
        let mut old = std::mem::take(&mut self.selectors);
        self.selectors = (config.rules.iter())
            .map(|rule| match old.iter().position(|s| s.rule() == rule) {
                Some(k) => old.swap_remove(k),
                None => Selector::new(rule.clone()),
            })
            .collect();
        self.names.clear();
        self.uses_latency = config.rules.iter().any(|r| r.policy == Policy::Fastest);
    }

    /// Whether some rule ranks sites by latency (so latency changes call for a new selection).
    pub(crate) fn uses_latency(&self) -> bool {
        self.uses_latency
    }

    /// When the earliest held change comes due.
    pub(crate) fn due(&self) -> Option<Instant> {
        self.selectors.iter().filter_map(Selector::due).min()
    }

    /// What every name answers with (after the first [`Policies::update`]).
    pub(crate) fn names(&self) -> &[NameAnswer] {
        &self.names
    }

    /// The position of the rule called `name` (case-insensitive; `@` is the apex).
    pub(crate) fn find(&self, name: &str) -> Option<usize> {
        self.selectors.iter().position(|s| s.rule().name.eq_ignore_ascii_case(name))
    }

    /// The selector of rule `i`.
    pub(crate) fn selector(&self, i: usize) -> &Selector {
        &self.selectors[i]
    }

    /// Runs every selector over `sites`; `addresses(position)` gives the addresses served for a
    /// site. Returns whether any name's answer changed.
    pub(crate) fn update<I: IntoIterator<Item = IpAddr>>(
        &mut self,
        now: Instant,
        config: &PolicyConfig,
        sites: &[SiteView<'_>],
        addresses: impl Fn(usize) -> I,
    ) -> bool {
        if self.selectors.is_empty() {
            return false;
        }
        let candidates = candidates(config, sites);
        let names: Vec<NameAnswer> = self
            .selectors
            .iter_mut()
            .map(|selector| {
                let choice = selector.select(now, &candidates);
                NameAnswer {
                    name: selector.rule().name.clone(),
                    sites: choice
                        .sites
                        .iter()
                        .map(|&c| AnswerSite {
                            key: sites[c].key,
                            name: sites[c].name.to_owned(),
                            addresses: addresses(sites[c].position).into_iter().collect(),
                            weight: candidates[c].attrs.weight,
                        })
                        .collect(),
                    pick: choice.pick,
                    ttl: choice.ttl,
                    degraded: choice.degraded,
                    fail_open: choice.fail_open,
                }
            })
            .collect();
        if names == self.names {
            return false;
        }
        self.names = names;
        true
    }

    /// Why each of `sites` is or is not in rule `i`'s answer now (changes nothing).
    pub(crate) fn explain(
        &self,
        now: Instant,
        config: &PolicyConfig,
        i: usize,
        sites: &[SiteView<'_>],
    ) -> Vec<SiteVerdict> {
        self.selectors[i].explain(now, &candidates(config, sites))
    }
}

fn candidates<'a>(config: &PolicyConfig, sites: &[SiteView<'a>]) -> Vec<Candidate<'a>> {
    sites
        .iter()
        .map(|s| Candidate {
            name: s.name,
            attrs: config.attrs(s.name),
            qualifies: s.qualifies,
            latency: s.latency,
            settling: s.settling,
            is_self: s.is_self,
        })
        .collect()
}
