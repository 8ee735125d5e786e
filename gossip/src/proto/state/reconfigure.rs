//! A reload: new roster, timing, policies and own settings applied to a running core.
//!
//! Invariants:
//! - this node's identity (key, name, cluster) and version never change here: a different
//!   identity is a different node (a restart);
//! - a member in both rosters keeps everything known about it (its link: reachability, loss, RTT,
//!   service verdict; its newest observation; what it spent of its limits), moved to its new
//!   position; a removed member's state is dropped at once, so its observation and its votes stop
//!   counting; an added member starts as at start-up: unreachable, never heard;
//! - the roster id changes with the key set: observations over the old roster stay in the view
//!   but have no vote until their observers publish over the new one (they reload too); this
//!   node publishes over the new roster at once, so its own report (and its answer, which only
//!   needs its own probing and the votes of observers over the same roster) carries on without
//!   a gap for the members it kept.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Instant;

use spdu_keys::PublicKey;

use super::super::{Config, Member, Roster, ServiceCheck};
use super::State;

/// What a [`State::reconfigure`] changed in the roster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reconfigured {
    /// Members that were not in the roster before, in key order.
    pub added: Vec<PublicKey>,
    /// Members no longer in the roster, in key order.
    pub removed: Vec<PublicKey>,
    /// Members in both whose entry (name, gossip address or pins) changed, in key order.
    pub changed: Vec<PublicKey>,
}

impl State {
    /// Applies a reload at `now`: `roster` (this node's own entry, if listed, is ignored),
    /// `config` (timing, quorum, health thresholds, failover policies), this site's service
    /// `addresses` and advertised `service_check`, and whether it still runs a check of its own
    /// (`self_check`: without one, the verdict of the old check is dropped and this node is
    /// healthy). See the module docs for what is kept. The observation is re-signed over the
    /// new roster at once, and the answer recomputed (an
    /// [`super::super::OutEvent::AnswerChanged`] follows if it changed).
    pub fn reconfigure(
        &mut self,
        now: Instant,
        roster: Vec<Member>,
        config: Config,
        addresses: Vec<IpAddr>,
        service_check: Option<ServiceCheck>,
        self_check: bool,
    ) -> Reconfigured {
        let me_key = self.key();
        let peers: BTreeMap<PublicKey, Member> =
            roster.into_iter().filter(|m| m.key != me_key).map(|m| (m.key, m)).collect();
        let full = Roster::new(peers.keys().copied().chain([me_key]));
        let me = full.index(&me_key).expect("self is in its roster");

        let old: BTreeMap<PublicKey, &Member> = self.members().map(|m| (m.key, m)).collect();
        let summary = Reconfigured {
            added: peers.keys().filter(|k| !old.contains_key(*k)).copied().collect(),
            removed: old.keys().filter(|k| !peers.contains_key(*k)).copied().collect(),
            changed: (peers.iter())
                .filter(|(k, m)| old.get(*k).is_some_and(|o| *o != *m))
                .map(|(k, _)| *k)
                .collect(),
        };
        // The old position of each new position's member (this node's included).
        let from: Vec<Option<usize>> = full.keys().iter().map(|k| self.roster.index(k)).collect();

        let policy =
            config.policy.digest(peers.values().map(|m| m.name.as_str()).chain([self.publisher.name()]));
        self.publisher.reconfigure(addresses, service_check, policy, self_check);
        self.liveness.remap(&from, me, now);
        self.view.remap(&from, &full, now, config.stale_after);
        self.limits.remap(&from);
        self.sightings.remap(&from);
        self.policies.reconfigure(&config.policy);
        self.answer.addresses_changed();

        let mut members: Vec<Option<Member>> = peers.into_values().map(Some).collect();
        members.insert(me, None);
        self.members = members;
        self.me = me;
        self.roster = full;
        self.tick_at = self.tick_at.min(now + config.probe_interval);
        self.heartbeat_at = self.heartbeat_at.min(now + config.heartbeat);
        self.config = config;

        self.policy_dirty = true;
        self.dirty = true;
        self.targets_dirty = true;
        self.publish(now);
        self.finish(now);
        summary
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::tests::{bring_up, node, push, pushed};
    use super::*;
    use crate::proto::{InEvent, Message, OutEvent};
    use crate::sim::fixtures::{address, observation, public_key, roster, roster_of, secret_key};

    /// Node 0 of `0..n`, every peer reachable by its probing and every peer's observation (over
    /// `0..n`, seeing everyone) in its view: its answer holds all `n`.
    fn full_mesh(n: usize, config: &Config, now: &mut Instant) -> State {
        let (mut a, _) = node(0, n, 1, config.clone(), *now);
        for peer in 1..n {
            bring_up(&mut a, peer, now, config);
        }
        for peer in 1..n {
            let reports: Vec<(usize, bool)> = (0..n).filter(|j| *j != peer).map(|j| (j, true)).collect();
            push(&mut a, *now, peer, vec![observation(peer, n, true, &reports).sign(&secret_key(peer))]);
        }
        *now += config.probe_interval;
        a.handle_timeout(*now);
        a.drain();
        a
    }

    fn keys(nodes: &[usize]) -> Vec<PublicKey> {
        let mut keys: Vec<PublicKey> = nodes.iter().map(|i| public_key(*i)).collect();
        keys[1..].sort();
        keys
    }

    #[test]
    fn an_added_member_is_dialled_as_new_and_the_others_keep_their_state() {
        let config = Config::default();
        let mut now = Instant::now();
        let mut a = full_mesh(3, &config, &mut now);
        assert_eq!(a.answer().members, keys(&[0, 1, 2]));
        let version = a.answer().version;
        let (incarnation, held) = (a.incarnation(), a.signed_observation(&public_key(1)).cloned());

        let summary = a.reconfigure(now, roster(4), config.clone(), vec![address(0)], None, false);
        assert_eq!(summary, Reconfigured { added: vec![public_key(3)], ..Reconfigured::default() });
        let out = a.drain();
        assert_eq!(a.roster().id(), roster_of(4).id());
        assert_eq!(a.incarnation(), incarnation, "the same node, the same incarnation");
        // Its own observation is re-signed over the new roster and pushed to every member, the
        // new one included.
        for peer in 1..4 {
            let mine = pushed(&out, peer);
            assert_eq!(mine.len(), 1, "pushed to {peer}");
            let obs = mine[0].verify("spdu-sim", |_| true).unwrap();
            assert!(obs.is_over(&roster_of(4)) && obs.seq >= 2);
        }
        // The members it kept: still reachable, their observations still held, still answered.
        assert!(a.sees_reachable(&public_key(1)) && a.sees_reachable(&public_key(2)));
        assert_eq!(a.signed_observation(&public_key(1)), held.as_ref());
        assert_eq!(a.answer().members, keys(&[0, 1, 2]), "no gap for the others");
        assert!(
            out.iter().all(|e| !matches!(e, OutEvent::AnswerChanged(s) if s.members != keys(&[0, 1, 2]))),
            "no answer without them: {out:?}"
        );
        assert_eq!(a.answer().version, version, "nothing served changed");
        // The new member: never heard, not answered.
        assert!(!a.sees_reachable(&public_key(3)));
        assert!(a.members().any(|m| m.key == public_key(3)));

        // Once heard and with its observation, it enters the answer.
        bring_up(&mut a, 3, &mut now, &config);
        let reports = [(0, true), (1, true), (2, true)];
        push(&mut a, now, 3, vec![observation(3, 4, true, &reports).sign(&secret_key(3))]);
        now += config.probe_interval;
        a.handle_timeout(now);
        assert_eq!(a.answer().members, keys(&[0, 1, 2, 3]));
    }

    #[test]
    fn a_removed_member_stops_counting_at_once() {
        let config = Config { quorum: crate::proto::Quorum::AtLeast(2), ..Config::default() };
        let mut now = Instant::now();
        let mut a = full_mesh(3, &config, &mut now);
        assert_eq!(a.answer().members, keys(&[0, 1, 2]));

        let summary = a.reconfigure(now, roster(2), config.clone(), vec![address(0)], None, false);
        assert_eq!(summary, Reconfigured { removed: vec![public_key(2)], ..Reconfigured::default() });
        let out = a.drain();
        assert!(pushed(&out, 2).is_empty(), "nothing more goes to the removed member");
        assert_eq!(a.observation(&public_key(2)), None, "its observation is dropped");
        assert!(a.sees_reachable(&public_key(1)));
        // Its vote for 1 is gone: with quorum 2 only this node's own vote is left until 1's
        // observation is over the new roster.
        assert_eq!(a.answer().members, keys(&[0]));
        assert!(out.iter().any(|e| matches!(e, OutEvent::AnswerChanged(_))));
        // Its messages are now from a stranger.
        let before = a.stats().unknown_sender;
        a.handle(now, InEvent::Message { from: public_key(2), message: Message::Alive(0) });
        assert_eq!(a.stats().unknown_sender, before + 1);
    }

    #[test]
    fn observations_over_the_new_roster_vote_again() {
        let config = Config { quorum: crate::proto::Quorum::AtLeast(2), ..Config::default() };
        let mut now = Instant::now();
        let mut a = full_mesh(3, &config, &mut now);
        a.reconfigure(now, roster(4), config.clone(), vec![address(0)], None, false);
        // 1 and 2 still publish over the old roster: no votes, so 0 alone cannot admit them.
        assert_eq!(a.answer().members, keys(&[0]));
        // They reload too and publish over the new one (seq 2): their votes count again.
        for peer in [1, 2] {
            let reports: Vec<(usize, bool)> = [0, 1, 2].into_iter().map(|j| (j, j != peer)).collect();
            let mut obs = observation(peer, 4, true, &reports);
            obs.seq = 2;
            push(&mut a, now, peer, vec![obs.sign(&secret_key(peer))]);
        }
        assert_eq!(a.answer().members, keys(&[0, 1, 2]));
    }

    #[test]
    fn the_verdict_of_a_check_removed_by_a_reload_is_dropped() {
        let config = Config::default();
        let mut now = Instant::now();
        let mut a = full_mesh(2, &config, &mut now);
        a.force_own_health(now, false);
        assert!(!a.observation(&public_key(0)).unwrap().healthy);
        // Still checked: the verdict stands.
        a.reconfigure(now, roster(2), config.clone(), vec![address(0)], None, true);
        assert!(!a.observation(&public_key(0)).unwrap().healthy);
        // No check any more: healthy, as a node without one.
        a.reconfigure(now, roster(2), config, vec![address(0)], None, false);
        assert!(a.own_health().is_none());
        assert!(a.observation(&public_key(0)).unwrap().healthy);
        assert!(a.answer().members.contains(&public_key(0)));
    }

    #[test]
    fn new_settings_apply_to_what_this_node_publishes() {
        let config = Config::default();
        let mut now = Instant::now();
        let mut a = full_mesh(2, &config, &mut now);
        let faster = Config { probe_interval: Duration::from_millis(20), ..config };
        let addresses = vec![address(0), address(200)];
        a.reconfigure(now, roster(2), faster, addresses.clone(), None, false);
        assert_eq!(a.observation(&public_key(0)).unwrap().addresses, addresses);
        assert!(a.poll_timeout().unwrap() <= now + Duration::from_millis(20), "the next tick comes sooner");
        assert!(a.sees_reachable(&public_key(1)));
    }
}
