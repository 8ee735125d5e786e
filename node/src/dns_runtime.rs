//! The DNS server on a tokio runtime of its own, so that DNS load never delays the membership.
//!
//! Owns [`DnsRuntime`]. The node's main runtime runs the gossip actor, its QUIC endpoint, the
//! health checks and the control endpoint; the DNS sockets are registered with, and served by,
//! a second multi-threaded runtime (threads `spdu-dns`, one worker per UDP socket the server
//! opens per address). Under a flood the DNS workers stay busy, but they are OS threads of their
//! own: the kernel's scheduler, not the DNS loops' cooperative yields, decides when the
//! membership's threads run, and a membership thread woken by a gossip packet gets the CPU
//! within the scheduler's wake-up latency. Measured with `scenarios/dns-flood.sh`.
//!
//! Invariants: the server is bound and served on this runtime only (tokio sockets belong to the
//! runtime they were registered on); the runtime is shut down without blocking when dropped,
//! which may happen inside the main runtime.

use std::net::SocketAddr;

use anyhow::Context;
use spdu_dnsfront::{AnswerPublisher, DnsServer};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

/// Most worker threads of the DNS runtime (the DNS server opens at most 4 UDP sockets per
/// address, one loop each).
const MAX_WORKERS: usize = 4;

/// A runtime that binds and serves the DNS server.
#[derive(Debug)]
pub struct DnsRuntime {
    /// `Some` until dropped.
    runtime: Option<Runtime>,
}

impl DnsRuntime {
    /// Starts the runtime's worker threads (as many as the machine has cores, at most
    /// [`MAX_WORKERS`]).
    pub fn new() -> anyhow::Result<DnsRuntime> {
        let workers = std::thread::available_parallelism().map_or(1, usize::from).clamp(1, MAX_WORKERS);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("spdu-dns")
            .enable_all()
            .build()
            .context("starting the DNS runtime")?;
        Ok(DnsRuntime { runtime: Some(runtime) })
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime.as_ref().expect("the runtime lives until drop").handle()
    }

    /// Binds the DNS server on this runtime ([`DnsServer::bind`]).
    pub async fn bind(&self, answers: &AnswerPublisher, listen: &[SocketAddr]) -> anyhow::Result<DnsServer> {
        let (answers, listen) = (answers.clone(), listen.to_vec());
        let bound = self.handle().spawn(async move { DnsServer::bind(&answers, &listen).await });
        Ok(bound.await.context("binding DNS")??)
    }

    /// Serves `server` on this runtime until `shutdown` ([`DnsServer::run`]); the future may
    /// be awaited on any runtime.
    pub fn run(
        &self,
        server: DnsServer,
        shutdown: CancellationToken,
    ) -> impl Future<Output = anyhow::Result<()>> + Send + 'static {
        let serving = self.handle().spawn(server.run(shutdown));
        async move { Ok(serving.await.context("DNS task panicked")??) }
    }
}

impl Drop for DnsRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
