//! The zone as an RFC 1035 master file: what DNS serves right now, for a hidden primary,
//! secondaries or a provider's import.
//!
//! Renders one [`Snapshot`] of a [`Zone`]: the SOA (with the snapshot's serial), the NS RRset,
//! and every A and AAAA record of every pool name with the name's TTL. A name whose responses
//! take a selection (rotating window, weighted draw) lists every address any response may
//! carry: the addresses of all the sites its policy chose. Owners are absolute, so the file
//! reads the same whatever `$ORIGIN` an importer assumes. A pool name without addresses right
//! now is written as a comment (a server loading the file answers NXDOMAIN for it instead of
//! NODATA).

use std::fmt::Write as _;

use hickory_proto::rr::{Name, RData, Record};

use crate::{answer::Snapshot, zone::Zone};

/// The master file of `zone` as `snapshot` serves it.
pub(crate) fn render(zone: &Zone, snapshot: &Snapshot) -> String {
    let origin = Name::from(zone.origin.clone()).to_ascii();
    let mut out = String::new();
    let serial = match &snapshot.soa.data {
        RData::SOA(soa) => soa.serial,
        _ => 0,
    };
    let _ = writeln!(out, "; {origin} as served by spdu, serial {serial}");
    let _ = writeln!(out, "$ORIGIN {origin}");
    let _ = writeln!(out, "$TTL {}", zone.ttl);
    line(&mut out, &snapshot.soa);
    for ns in &zone.ns {
        line(&mut out, ns);
    }
    for (name, pool) in zone.pool_names.iter().zip(&snapshot.pools) {
        if pool.v4.records().is_empty() && pool.v6.records().is_empty() {
            let _ = writeln!(out, "; {} has no address now", name.to_ascii());
        }
        for record in pool.v4.records().iter().chain(pool.v6.records()) {
            line(&mut out, record);
        }
    }
    out
}

/// One record, `owner TTL IN TYPE RDATA`.
fn line(out: &mut String, record: &Record) {
    // ASCII (punycode), never the UTF-8 display form: master files are ASCII.
    let owner = record.name.to_ascii();
    let ttl = record.ttl;
    let _ = match &record.data {
        RData::SOA(soa) => writeln!(
            out,
            "{owner} {ttl} IN SOA {} {} {} {} {} {} {}",
            soa.mname.to_ascii(),
            soa.rname.to_ascii(),
            soa.serial,
            soa.refresh,
            soa.retry,
            soa.expire,
            soa.minimum
        ),
        RData::NS(ns) => writeln!(out, "{owner} {ttl} IN NS {}", ns.0.to_ascii()),
        RData::A(a) => writeln!(out, "{owner} {ttl} IN A {}", a.0),
        RData::AAAA(aaaa) => writeln!(out, "{owner} {ttl} IN AAAA {}", aaaa.0),
        // The zone holds no other record types (ANY's HINFO is synthesized, not a record).
        other => writeln!(out, "; {owner} {ttl} IN {} not exported", other.record_type()),
    };
}

#[cfg(test)]
mod tests {
    use spdu_policy::Pick;

    use crate::{AnswerPublisher, DnsMetrics, NameAnswers, PoolAnswers, SiteAddrs, ZoneConfig};

    fn site(addrs: &[&str], weight: u32) -> SiteAddrs {
        SiteAddrs { addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(), weight }
    }

    #[test]
    fn every_address_of_every_chosen_site_with_the_names_ttl() {
        let zone = ZoneConfig {
            origin: "Pool.Example.Test".into(),
            // An IDN nameserver is written as punycode.
            names: vec!["api".into(), "www.deep".into(), "@".into(), "down".into()],
            ttl: 7,
            nameservers: vec!["alpha.example.net".into(), "xn--bcher-kva.example.net.".into()],
        };
        let answers = PoolAnswers {
            serial: 42,
            names: vec![
                NameAnswers {
                    ttl: 5,
                    sites: vec![site(&["192.0.2.1", "2001:db8::1"], 100), site(&["192.0.2.2"], 100)],
                    pick: Pick::All,
                },
                NameAnswers {
                    ttl: 30,
                    sites: vec![site(&["192.0.2.1"], 10), site(&["192.0.2.2", "192.0.2.3"], 90)],
                    pick: Pick::Weighted { max: 1 },
                },
                NameAnswers {
                    ttl: 60,
                    sites: vec![site(&["192.0.2.9"], 100)],
                    pick: Pick::Rotate { max: 1 },
                },
                NameAnswers { ttl: 5, sites: vec![], pick: Pick::All },
            ],
        };
        let publisher = AnswerPublisher::new(&zone, answers, DnsMetrics::default()).unwrap();
        assert_eq!(
            publisher.zone_file(),
            "; pool.example.test. as served by spdu, serial 42\n\
             $ORIGIN pool.example.test.\n\
             $TTL 7\n\
             pool.example.test. 7 IN SOA alpha.example.net. hostmaster.pool.example.test. 42 3600 600 1209600 7\n\
             pool.example.test. 7 IN NS alpha.example.net.\n\
             pool.example.test. 7 IN NS xn--bcher-kva.example.net.\n\
             api.pool.example.test. 5 IN A 192.0.2.1\n\
             api.pool.example.test. 5 IN A 192.0.2.2\n\
             api.pool.example.test. 5 IN AAAA 2001:db8::1\n\
             www.deep.pool.example.test. 30 IN A 192.0.2.1\n\
             www.deep.pool.example.test. 30 IN A 192.0.2.2\n\
             www.deep.pool.example.test. 30 IN A 192.0.2.3\n\
             pool.example.test. 60 IN A 192.0.2.9\n\
             ; down.pool.example.test. has no address now\n"
        );
        publisher.publish(PoolAnswers::same_for_all(43, 4, 9, vec!["198.51.100.7".parse().unwrap()]));
        let text = publisher.zone_file();
        assert!(text.contains(" 43 3600 600 1209600 7\n"), "{text}");
        assert!(text.contains("down.pool.example.test. 9 IN A 198.51.100.7\n"), "{text}");
        assert!(!text.contains("192.0.2."), "{text}");
    }
}
