//! Serves a fixed pool zone for manual checks and benchmarks (dig, kdig, dnsperf):
//! `cargo run -p spdu-dnsfront --example serve -- 127.0.0.1:5353 192.0.2.1 2001:db8::1`.
//! Zone `pool.example.test`, pool names `api` and `www.api`, every address for both (all of
//! them per response, order rotated), TTL 5; stops on Ctrl-C.

use std::net::IpAddr;

use spdu_dnsfront::{AnswerPublisher, DnsMetrics, DnsServer, PoolAnswers, ZoneConfig};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:5353".into()).parse()?;
    let addrs = args.map(|a| a.parse()).collect::<Result<Vec<IpAddr>, _>>()?;
    let zone = ZoneConfig {
        origin: "pool.example.test".into(),
        names: vec!["api".into(), "www.api".into()],
        ttl: 5,
        nameservers: vec!["alpha.example.test".into(), "beta.example.test".into()],
    };
    let initial = PoolAnswers::same_for_all(1, zone.names.len(), zone.ttl, addrs);
    let answers = AnswerPublisher::new(&zone, initial, DnsMetrics::default())?;
    let server = DnsServer::bind(&answers, &[listen]).await?;
    println!("serving on {:?}", server.local_addrs());
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    server.run(shutdown).await?;
    Ok(())
}
