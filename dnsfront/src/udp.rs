//! The UDP loop: one task per socket reads datagrams, answers each in place and sends the reply.
//!
//! Owns [`serve`]. Replaces hickory-server's UDP loop, which spawns a task per query and hands
//! every response to a separate send loop over a channel. Here a datagram is answered inline
//! (fast path, or the slow path when needed: nothing on that path waits on IO) and sent before the
//! next is read, so no query waits in a queue of ours; the socket is drained with non-blocking
//! reads before waiting for readiness again. Invariants: one receive and one reply buffer per
//! socket, reused; a reply that cannot be sent right away is awaited (no drop, no queue); the
//! loop yields to the runtime every [`BATCH`] datagrams; it ends on shutdown, or with an error
//! only on an error hickory-server also treats as fatal.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::{handler::PoolHandler, response::MAX_UDP_PAYLOAD, transport::Transport};

/// Receive buffer: the size hickory-server reads UDP messages into (larger ones are truncated
/// to it by the kernel, as they were with hickory's loop).
const RECEIVE_BUFFER: usize = 4096;
/// Datagrams handled before the loop yields to other tasks on its worker.
const BATCH: usize = 64;

/// Answers the datagrams arriving on `socket` until `shutdown` is cancelled.
pub(crate) async fn serve(
    socket: UdpSocket,
    handler: Arc<PoolHandler>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let mut buffer = vec![0u8; RECEIVE_BUFFER];
    let mut reply = Vec::with_capacity(usize::from(MAX_UDP_PAYLOAD));
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return Ok(()),
            ready = socket.readable() => ready?,
        }
        let mut drained = false;
        for _ in 0..BATCH {
            let (len, src) = match socket.try_recv_from(&mut buffer) {
                Ok(received) => received,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    drained = true;
                    break;
                }
                Err(error) if is_unrecoverable(&error) => return Err(error),
                Err(error) => {
                    // E.g. ICMP port unreachable for an earlier reply, reported on this socket.
                    debug!(%error, "error receiving on DNS UDP socket");
                    continue;
                }
            };
            if !can_answer(src) {
                debug!(%src, "not answering a datagram from an address that cannot be replied to");
                continue;
            }
            if !handler.respond(&buffer[..len], src, Transport::Udp, &mut reply) {
                continue;
            }
            let sent = match socket.try_send_to(&reply, src) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => socket.send_to(&reply, src).await,
                other => other,
            };
            if let Err(error) = sent {
                debug!(%error, %src, "failed to send DNS response");
                handler.send_failed();
            }
        }
        if !drained {
            // A full batch: let the worker's other tasks (TCP, gossip) run before the next one.
            tokio::task::yield_now().await;
        }
    }
}

/// Whether a reply to `src` can be sent: not port 0, not an unspecified or broadcast address
/// (hickory-server's `sanitize_src_address`).
fn can_answer(src: SocketAddr) -> bool {
    src.port() != 0
        && match src.ip() {
            IpAddr::V4(v4) => !v4.is_unspecified() && !v4.is_broadcast(),
            IpAddr::V6(v6) => !v6.is_unspecified(),
        }
}

/// Errors after which the socket is unusable (hickory-server's `is_unrecoverable_socket_error`).
fn is_unrecoverable(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::NotConnected | io::ErrorKind::ConnectionAborted)
}
