//! [`Selector`]: one name's choice among the sites that qualify, over time.
//!
//! Each call of [`Selector::select`] gets every roster site as a [`Candidate`] (this node's view:
//! qualifies or not, attributes, measured latency) and gives the name's [`Choice`]:
//! 1. the rule's `sites` filter the candidates; those that qualify are **eligible**;
//! 2. none eligible: the name fails open, to this node if it is one of the name's sites, else to
//!    the sites the policy would choose if every site were up;
//! 3. the policy chooses a **target** among the eligible (for `fastest`, starting from the
//!    current members: stickiness);
//! 4. the change-rate limit: sites that stopped being eligible leave at once, and sites that take
//!    their places (the answer not growing, every still-eligible site kept) come in at once; any
//!    other change (an addition or a reshuffle) waits until `min_change_interval` has passed
//!    since the last such change, unless nothing eligible would be left, and except for the
//!    first choice;
//! 5. the choice is **degraded** (short TTL) while it lacks a site the policy would choose if
//!    every site were up (for `fastest`: starting from the current members, so a sticky set is
//!    not degraded for differing from a plain ranking).
//!
//! Invariants: a removal is never delayed; a held change is applied by the first call at or
//! after [`Selector::due`]; the same inputs give the same choice (no clock, no randomness).

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::{Pick, Policy, Rule, SiteAttrs};

/// One site as a selection sees it.
#[derive(Clone, Debug)]
pub struct Candidate<'a> {
    /// Its roster name.
    pub name: &'a str,
    /// Its priority and weight.
    pub attrs: SiteAttrs,
    /// Whether the quorum rule admits it (for this node: healthy).
    pub qualifies: bool,
    /// Its service-check latency as this node measures it, once settled.
    pub latency: Option<Duration>,
    /// Its latency is being measured but has not settled yet (`fastest` is not sticky until
    /// every eligible site that is measured has settled).
    pub settling: bool,
    /// Whether it is this node.
    pub is_self: bool,
}

/// What a name answers with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    /// Positions in the candidates, in answer order.
    pub sites: Vec<usize>,
    /// What each response takes from them.
    pub pick: Pick,
    /// The TTL of the records (the rule's `ttl`, or `ttl_degraded`).
    pub ttl: u32,
    /// Lacks a site it would hold if every site were up (or waits for a held change).
    pub degraded: bool,
    /// No site of the name qualifies: the choice is the fail-open one.
    pub fail_open: bool,
}

/// Why a site is or is not in a name's answer (for `spdu explain`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SiteVerdict {
    /// In the answer.
    pub in_answer: bool,
    /// The policy step that kept or dropped it.
    pub why: String,
}

/// One name's selection state: its rule, its current sites and the change-rate limit.
#[derive(Clone, Debug)]
pub struct Selector {
    rule: Rule,
    /// The sites of the last choice, by name, in answer order (none before the first).
    current: Option<Vec<String>>,
    /// When the last addition or reshuffle was applied.
    last_change: Option<Instant>,
    /// When a held change comes due.
    due: Option<Instant>,
}

/// A selection worked out but not yet applied.
struct Plan {
    choice: Choice,
    /// What the policy wants from the eligible sites now.
    target: Vec<usize>,
    /// The change is an addition or reshuffle that was applied (restarts the interval).
    applied_change: bool,
    /// A change is held back until then.
    held_until: Option<Instant>,
}

impl Selector {
    /// A selector with no choice made yet.
    pub fn new(rule: Rule) -> Self {
        Self { rule, current: None, last_change: None, due: None }
    }

    /// Its rule.
    pub fn rule(&self) -> &Rule {
        &self.rule
    }

    /// When a change held back by `min_change_interval` comes due (call [`Self::select`] then).
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// Chooses the name's sites among `candidates` at `now`, and remembers the choice.
    pub fn select(&mut self, now: Instant, candidates: &[Candidate<'_>]) -> Choice {
        let plan = self.plan(now, candidates);
        if plan.applied_change && self.current.is_some() {
            self.last_change = Some(now);
        }
        self.due = plan.held_until;
        self.current = Some(plan.choice.sites.iter().map(|i| candidates[*i].name.to_string()).collect());
        plan.choice
    }

    /// Why each candidate is or is not in the choice [`Self::select`] would make now (changes
    /// nothing). Indexed like `candidates`.
    pub fn explain(&self, now: Instant, candidates: &[Candidate<'_>]) -> Vec<SiteVerdict> {
        let plan = self.plan(now, candidates);
        let rule = &self.rule;
        let chosen = &plan.choice.sites;
        let total: u64 = chosen.iter().map(|i| u64::from(candidates[*i].attrs.weight)).sum();
        let best =
            candidates.iter().filter(|c| c.qualifies && rule.allows(c.name)).map(|c| c.attrs.priority).min();
        let wait = plan.held_until.map(|t| t.saturating_duration_since(now).as_millis());
        candidates
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let (in_answer, why) = if !rule.allows(c.name) {
                    (false, "not among this name's sites".to_string())
                } else if chosen.contains(&i) {
                    let why = if plan.choice.fail_open {
                        "fail open: no site of this name qualifies".to_string()
                    } else if !plan.target.contains(&i) {
                        format!("kept until a held change is due in {} ms", wait.unwrap_or(0))
                    } else {
                        match rule.policy {
                            Policy::All => "qualifies".to_string(),
                            Policy::Priority => {
                                format!("priority {}: the best level that qualifies", c.attrs.priority)
                            }
                            Policy::Weighted if c.attrs.weight == 0 => {
                                "standby (weight 0): no positive-weight site qualifies".to_string()
                            }
                            Policy::Weighted => format!(
                                "weight {} of {total}: {:.1} % of responses with one site",
                                c.attrs.weight,
                                100.0 * c.attrs.weight as f64 / total.max(1) as f64
                            ),
                            Policy::Fastest => {
                                format!("{}: among the {} fastest", latency_text(c.latency), chosen.len())
                            }
                        }
                    };
                    (true, why)
                } else if !c.qualifies {
                    (false, "does not qualify".to_string())
                } else if plan.target.contains(&i) {
                    (false, format!("held back by min_change_interval_ms: due in {} ms", wait.unwrap_or(0)))
                } else {
                    let why = match rule.policy {
                        Policy::Priority => format!(
                            "priority {}: a better level ({}) qualifies",
                            c.attrs.priority,
                            best.unwrap_or(c.attrs.priority)
                        ),
                        Policy::Weighted => "standby (weight 0) while positive-weight sites qualify".to_string(),
                        Policy::Fastest => format!(
                            "{}: the chosen sites are not beaten by a clear margin (twice as fast and by more than {} ms)",
                            latency_text(c.latency),
                            rule.good_enough.as_millis()
                        ),
                        Policy::All => "not chosen".to_string(),
                    };
                    (false, why)
                };
                SiteVerdict { in_answer, why }
            })
            .collect()
    }

    fn plan(&self, now: Instant, candidates: &[Candidate<'_>]) -> Plan {
        let rule = &self.rule;
        let in_rule: Vec<usize> =
            (0..candidates.len()).filter(|i| rule.allows(candidates[*i].name)).collect();
        let eligible: Vec<usize> = in_rule.iter().copied().filter(|i| candidates[*i].qualifies).collect();
        let current: Vec<usize> = self
            .current
            .iter()
            .flatten()
            .filter_map(|name| candidates.iter().position(|c| c.name == name))
            .collect();
        // What it would choose if every site of the name were up. For `fastest`, from the current
        // members (sticky): a sticky set that is not the plain ranking is not degraded.
        let ideal = self.target(candidates, &in_rule, &current);
        let finish = |sites: Vec<usize>, fail_open: bool| {
            let degraded = fail_open || !ideal.iter().all(|i| sites.contains(i));
            let pick = match (rule.policy, rule.max_answers) {
                (Policy::Weighted, max) => Pick::Weighted { max },
                (_, 0) => Pick::All,
                (_, max) => Pick::Rotate { max },
            };
            let ttl = if degraded { rule.ttl_degraded } else { rule.ttl };
            Choice { sites, pick, ttl, degraded, fail_open }
        };

        if eligible.is_empty() {
            let sites = match in_rule.iter().find(|i| candidates[**i].is_self) {
                Some(me) => vec![*me],
                None => ideal.clone(),
            };
            let target = sites.clone();
            return Plan { choice: finish(sites, true), target, applied_change: false, held_until: None };
        }

        let kept: Vec<usize> = current.iter().copied().filter(|i| eligible.contains(i)).collect();
        let target = self.target(candidates, &eligible, &kept);
        let unchanged = target.len() == kept.len() && target.iter().all(|i| kept.contains(i));
        let held_until = self.last_change.map(|t| t + rule.min_change_interval).filter(|due| now < *due);
        // Sites taking the places of lost ones, the others kept: the answer does not grow and
        // nothing that still qualifies leaves, so there is nothing to space out.
        let replaces_lost = target.len() <= current.len() && kept.iter().all(|i| target.contains(i));
        if unchanged || self.current.is_none() || kept.is_empty() || replaces_lost || held_until.is_none() {
            return Plan {
                choice: finish(target.clone(), false),
                target,
                applied_change: !unchanged,
                held_until: None,
            };
        }
        Plan { choice: finish(kept, false), target, applied_change: false, held_until }
    }

    /// What the policy chooses among `eligible` (positions in `candidates`), starting from the
    /// current members `members` (only `fastest` is sticky). In candidate order, except
    /// `fastest`: fastest first.
    fn target(&self, candidates: &[Candidate<'_>], eligible: &[usize], members: &[usize]) -> Vec<usize> {
        let rule = &self.rule;
        match rule.policy {
            Policy::All => eligible.to_vec(),
            Policy::Priority => {
                let best = eligible.iter().map(|i| candidates[*i].attrs.priority).min();
                eligible.iter().copied().filter(|i| Some(candidates[*i].attrs.priority) == best).collect()
            }
            Policy::Weighted => {
                let positive: Vec<usize> =
                    eligible.iter().copied().filter(|i| candidates[*i].attrs.weight > 0).collect();
                if positive.is_empty() { eligible.to_vec() } else { positive }
            }
            Policy::Fastest => fastest(candidates, eligible, members, rule.max_answers, rule.good_enough),
        }
    }
}

/// `fastest`: keeps the current members that are still eligible (once every eligible site's
/// latency settled), fills up to `n` (0: all) with the fastest others, then swaps a member for a non-member only when the non-member is clearly
/// faster: twice as fast and by more than `good_enough` (or the member has no latency measured
/// and the non-member has). Latencies up to `good_enough` count as zero: ties.
fn fastest(
    candidates: &[Candidate<'_>],
    eligible: &[usize],
    members: &[usize],
    n: usize,
    good_enough: Duration,
) -> Vec<usize> {
    let n = if n == 0 { eligible.len() } else { n.min(eligible.len()) };
    // Stickiness keeps choices made on settled latencies only: while a site is still being
    // measured, the choice is a plain ranking.
    let members = if eligible.iter().any(|i| candidates[*i].settling) { &[][..] } else { members };
    let rank = |i: usize| match candidates[i].latency {
        Some(l) if l <= good_enough => Some(Duration::ZERO),
        other => other,
    };
    // Unmeasured sorts last; ties by candidate position.
    let order = |i: &usize| (rank(*i).is_none(), rank(*i), *i);
    let mut chosen: Vec<usize> = members.iter().copied().filter(|i| eligible.contains(i)).collect();
    chosen.sort_by_key(order);
    chosen.truncate(n);
    let mut others: Vec<usize> = eligible.iter().copied().filter(|i| !chosen.contains(i)).collect();
    others.sort_by_key(order);
    let mut others = std::collections::VecDeque::from(others);
    while chosen.len() < n {
        chosen.push(others.pop_front().expect("n <= eligible"));
    }
    let clearly_faster = |b: usize, w: usize| match (rank(b), rank(w)) {
        (Some(_), None) => true,
        (Some(b), Some(w)) => b * 2 <= w && w.saturating_sub(b) > good_enough,
        (None, _) => false,
    };
    for _ in 0..n {
        chosen.sort_by_key(order);
        let (Some(&worst), Some(&best)) = (chosen.last(), others.front()) else { break };
        if !clearly_faster(best, worst) {
            break;
        }
        others.pop_front();
        chosen.pop();
        chosen.push(best);
        others.push_back(worst);
        others.make_contiguous().sort_by_key(order);
    }
    chosen.sort_by_key(order);
    chosen
}

fn latency_text(latency: Option<Duration>) -> String {
    match latency {
        Some(l) => format!("latency {:.1} ms", l.as_secs_f64() * 1000.0),
        None => "no settled latency".to_string(),
    }
}

#[cfg(test)]
mod tests;
