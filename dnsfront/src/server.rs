//! Sockets and lifetime: binding UDP and TCP on every listen address and serving until shutdown.
//!
//! Owns [`DnsServer`] and [`DnsError`]. UDP is served by one loop per socket (`udp`), TCP by our
//! accept loop per listener (`tcp`) under one [`ConnectionTable`] for all listeners; the same
//! handler is behind both. Invariants: `bind` either binds every address (UDP and TCP on the
//! same port) or returns an error naming the address and binds nothing lasting; nothing is
//! answered before `run`; `run` returns only after every listener and connection has stopped.

use std::{io, net::SocketAddr, sync::Arc};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::{
    net::{TcpListener, TcpSocket, UdpSocket},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    handler::PoolHandler,
    limits::{ConnectionTable, TcpLimits, open_file_limit},
    publish::AnswerPublisher,
    rrl::RrlConfig,
    tcp,
    transport::Transport,
    udp,
};

/// Most UDP sockets opened per listen address. Each socket has one receive-and-answer task;
/// several SO_REUSEPORT sockets let the kernel spread queries over cores.
const MAX_UDP_SOCKETS_PER_ADDRESS: usize = 4;
/// Attempts to find a port free for both UDP and TCP when the listen port is 0.
const EPHEMERAL_PORT_ATTEMPTS: usize = 16;
/// Pending TCP connections the kernel queues for `accept`.
const TCP_BACKLOG: u32 = 1024;

/// Errors of [`DnsServer::bind`] and [`DnsServer::run`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// No listen address was given.
    #[error("no DNS listen address configured")]
    NoListenAddress,
    /// A socket could not be bound; nothing stays bound.
    #[error("cannot bind DNS {transport} socket on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// UDP or TCP.
        transport: Transport,
        /// The OS error.
        source: io::Error,
    },
    /// A listener stopped on its own (socket closed or failed) while serving.
    #[error("DNS listener failed: {0}")]
    Listener(String),
}

/// An authoritative DNS server for the pool zone, bound but not yet serving.
pub struct DnsServer {
    handler: PoolHandler,
    udp: Vec<UdpSocket>,
    tcp: Vec<TcpListener>,
    addrs: Vec<SocketAddr>,
    tcp_limits: TcpLimits,
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer")
            .field("addrs", &self.addrs)
            .field("tcp_limits", &self.tcp_limits)
            .field("rrl", &self.handler.rrl_config())
            .field("cookies", &self.handler.cookies_on())
            .finish_non_exhaustive()
    }
}

impl DnsServer {
    /// Binds UDP and TCP on every listen address (port 0 allowed: UDP and TCP then share one
    /// ephemeral port) to serve what `answers` publishes, counting into its metrics, with the
    /// default [`TcpLimits`]. Errors (e.g. address in use) name the address. Nothing is served
    /// until [`run`](Self::run).
    pub async fn bind(answers: &AnswerPublisher, listen: &[SocketAddr]) -> Result<DnsServer, DnsError> {
        if listen.is_empty() {
            return Err(DnsError::NoListenAddress);
        }
        let per_address =
            std::thread::available_parallelism().map_or(1, usize::from).clamp(1, MAX_UDP_SOCKETS_PER_ADDRESS);
        let mut udp = Vec::with_capacity(listen.len() * per_address);
        let mut tcp = Vec::with_capacity(listen.len());
        let mut addrs = Vec::with_capacity(listen.len());
        for &addr in listen {
            let (sockets, listener, bound) = bind_address(addr, per_address)?;
            udp.extend(sockets);
            tcp.push(listener);
            addrs.push(bound);
        }
        Ok(DnsServer {
            handler: PoolHandler::new(answers.clone()),
            udp,
            tcp,
            addrs,
            tcp_limits: TcpLimits::default().within(open_file_limit()),
        })
    }

    /// Replaces the TCP connection limits (`max_connections` is still held to half the
    /// process's open-file limit).
    pub fn with_tcp_limits(mut self, limits: TcpLimits) -> Self {
        self.tcp_limits = limits.within(open_file_limit());
        self
    }

    /// Turns DNS cookies (RFC 7873, RFC 9018 server cookies) on or off; on by default, with
    /// a random secret made at bind time and rotated every six hours.
    pub fn with_cookies(mut self, on: bool) -> Self {
        if on != self.handler.cookies_on() {
            self.handler.set_cookies(on.then(crate::cookie::Secrets::random));
        }
        self
    }

    /// Whether DNS cookies are on.
    pub fn cookies(&self) -> bool {
        self.handler.cookies_on()
    }

    /// The TCP connection limits in force.
    pub fn tcp_limits(&self) -> TcpLimits {
        self.tcp_limits
    }

    /// Turns response rate limiting on over UDP as `config` says (off when its `rate` is 0,
    /// as without this call).
    pub fn with_rrl(mut self, config: RrlConfig) -> Self {
        self.handler = self.handler.with_rrl(config);
        self
    }

    /// The response rate limiting in force ([`RrlConfig::OFF`] when off).
    pub fn rrl(&self) -> RrlConfig {
        self.handler.rrl_config()
    }

    /// The addresses actually bound (UDP and TCP share each one).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.addrs.clone()
    }

    /// Serves until `shutdown` is cancelled, then stops the listeners and returns.
    ///
    /// Returns an error if a listener stops on its own before that; the others are then
    /// stopped too.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), DnsError> {
        let rrl = self.handler.rrl_config();
        let handler = Arc::new(self.handler);
        let table = ConnectionTable::new(self.tcp_limits);
        // Not a child of `shutdown`: a listener that returns before `stop` is cancelled failed.
        let stop = CancellationToken::new();
        let mut listeners = JoinSet::new();
        for socket in self.udp {
            let serving = udp::serve(socket, handler.clone(), stop.clone());
            listeners.spawn(async move { (Transport::Udp, serving.await) });
        }
        for listener in self.tcp {
            let serving = tcp::serve(listener, handler.clone(), table.clone(), stop.clone());
            listeners.spawn(async move { (Transport::Tcp, serving.await) });
        }
        info!(
            addrs = ?self.addrs,
            tcp_limits = ?self.tcp_limits,
            ?rrl,
            cookies = handler.cookies_on(),
            "serving DNS"
        );

        // Every listener loops until shutdown; one returning first has failed.
        let failed = tokio::select! {
            Some(joined) = listeners.join_next() => Some(match joined {
                Ok((transport, Ok(()))) => format!("{transport} listener stopped unexpectedly"),
                Ok((transport, Err(error))) => format!("{transport}: {error}"),
                Err(error) => format!("listener task: {error}"),
            }),
            () = shutdown.cancelled() => None,
        };
        stop.cancel();
        while listeners.join_next().await.is_some() {}
        info!(addrs = ?self.addrs, "DNS stopped");
        match failed {
            Some(reason) => {
                warn!(%reason, "DNS listener failed");
                Err(DnsError::Listener(reason))
            }
            None => Ok(()),
        }
    }
}

/// Binds `count` UDP sockets (SO_REUSEPORT) and one TCP listener on the same address. For port
/// 0, retries until the ephemeral port the OS gave the first UDP socket is also free for TCP.
///
/// The TCP listener is bound without SO_REUSEPORT, so another process already serving this
/// address (even one that set SO_REUSEPORT on its UDP sockets) makes `bind` fail rather than
/// silently share the traffic.
fn bind_address(
    addr: SocketAddr,
    count: usize,
) -> Result<(Vec<UdpSocket>, TcpListener, SocketAddr), DnsError> {
    let attempts = if addr.port() == 0 { EPHEMERAL_PORT_ATTEMPTS } else { 1 };
    let udp_error = |source| DnsError::Bind { addr, transport: Transport::Udp, source };
    let mut last_error = None;
    for _ in 0..attempts {
        let first = bind_udp(addr).map_err(udp_error)?;
        let bound = first.local_addr().map_err(udp_error)?;
        let tcp = match bind_tcp(bound) {
            Ok(tcp) => tcp,
            Err(source) => {
                last_error = Some(source);
                continue;
            }
        };
        let mut sockets = Vec::with_capacity(count);
        sockets.push(first);
        for _ in 1..count {
            sockets.push(bind_udp(bound).map_err(udp_error)?);
        }
        return Ok((sockets, tcp, bound));
    }
    Err(DnsError::Bind {
        addr,
        transport: Transport::Tcp,
        source: last_error.unwrap_or_else(|| io::Error::other("no attempt made")),
    })
}

/// One non-blocking UDP socket with SO_REUSEPORT, registered with tokio.
fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// A TCP listener with SO_REUSEADDR (quick restarts) but not SO_REUSEPORT.
fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(TCP_BACKLOG)
}
