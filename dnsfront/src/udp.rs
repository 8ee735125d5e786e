//! The UDP loop: one task per socket receives a batch of datagrams with one `recvmmsg`, answers
//! each in place and sends the replies with one `sendmmsg`.
//!
//! Owns [`serve`] and [`Batch`]. Replaces hickory-server's UDP loop, which spawns a task per
//! query and hands every response to a separate send loop over a channel. Here each datagram of
//! a batch is answered inline through the same `PoolHandler::respond` (fast path, or the slow
//! path when needed: nothing on that path waits on IO) and the batch's replies are sent before
//! the next batch is read, so no query waits in a queue of ours. A batch is what the kernel has
//! ready (one non-blocking `recvmmsg` of up to [`BATCH`] datagrams: one datagram when the load
//! is light, more under load), so batching adds no latency.
//!
//! Invariants: one set of receive and reply buffers per socket ([`Batch`]), reused; every
//! datagram gets its reply sent or counted as a send error (a reply that cannot be sent right
//! away is awaited: no drop, no queue; one the kernel refuses is tried once more); a reply goes to the source of its query, in the order
//! received; the loop yields to the runtime every [`YIELD_EVERY`] datagrams and checks for
//! shutdown then; it ends on shutdown, or with an error only on an error hickory-server also
//! treats as fatal. The system calls go through safe wrappers (the workspace forbids `unsafe`):
//! `nix` for `recvmmsg` (its message headers hold raw pointers, so they are not `Send`: they live
//! in a per-thread pair borrowed only between two awaits), `rustix` for `sendmmsg` (nix's reports
//! how many were sent only by reading back addresses it never initialised for a send).

use std::{
    cell::RefCell,
    io::{self, IoSlice, IoSliceMut},
    net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6},
    os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd},
    sync::Arc,
};

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg};
use rustix::net::{MMsgHdr, SendAncillaryBuffer, SendFlags, SocketAddrAny, sendmmsg};
use tokio::{io::Interest, net::UdpSocket};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::{handler::PoolHandler, response::MAX_UDP_PAYLOAD, transport::Transport};

/// Receive buffer per datagram: the size hickory-server reads UDP messages into (larger ones
/// are truncated to it by the kernel, as they were with hickory's loop).
pub(crate) const RECEIVE_BUFFER: usize = 4096;
/// Most datagrams received (and replies sent) by one system call.
pub(crate) const BATCH: usize = 32;
/// Datagrams handled before the loop yields to other tasks on its worker.
const YIELD_EVERY: usize = 64;

/// One socket's buffers: [`BATCH`] receive buffers with the length and source of what each
/// holds, and [`BATCH`] reply buffers with their destinations.
pub(crate) struct Batch {
    /// `BATCH` buffers of `RECEIVE_BUFFER` bytes, back to back.
    received: Vec<u8>,
    /// Length and source of the datagrams received, in order (`received_count` of them).
    datagrams: [(usize, Option<SocketAddr>); BATCH],
    received_count: usize,
    /// Replies to send, in order (`reply_count` of them), and where each goes.
    replies: Vec<Vec<u8>>,
    destinations: Vec<Option<SocketAddr>>,
    reply_count: usize,
}

impl Batch {
    pub(crate) fn new() -> Self {
        Self {
            received: vec![0; RECEIVE_BUFFER * BATCH],
            datagrams: [(0, None); BATCH],
            received_count: 0,
            replies: (0..BATCH).map(|_| Vec::with_capacity(usize::from(MAX_UDP_PAYLOAD))).collect(),
            destinations: vec![None; BATCH],
            reply_count: 0,
        }
    }

    /// Receives what `fd` has ready, up to [`BATCH`] datagrams, with one non-blocking
    /// `recvmmsg`; returns how many. `ipv6` is the socket's family. Replaces what the batch held.
    fn receive(&mut self, fd: RawFd, ipv6: bool) -> io::Result<usize> {
        self.received_count = 0;
        HEADERS.with_borrow_mut(|headers| {
            let mut buffers = self.received.chunks_exact_mut(RECEIVE_BUFFER);
            let mut slices: [[IoSliceMut<'_>; 1]; BATCH] =
                std::array::from_fn(|_| [IoSliceMut::new(buffers.next().expect("BATCH receive buffers"))]);
            // One header set per family: the kernel leaves each source's length in its header,
            // and a socket's sources all have its family's length.
            let headers = if ipv6 { &mut headers.receive_v6 } else { &mut headers.receive_v4 };
            let results = recvmmsg(fd, headers, slices.iter_mut(), MsgFlags::MSG_DONTWAIT, None)
                .map_err(io::Error::from)?;
            for (slot, message) in self.datagrams.iter_mut().zip(results) {
                *slot = (message.bytes.min(RECEIVE_BUFFER), message.address.as_ref().and_then(socket_addr));
                self.received_count += 1;
            }
            Ok(self.received_count)
        })
    }

    /// Adds a datagram from `src` as if received (truncated to [`RECEIVE_BUFFER`] bytes, its
    /// source through the same address conversions); false if the batch is full.
    pub(crate) fn push(&mut self, datagram: &[u8], src: SocketAddr) -> bool {
        if self.received_count == BATCH {
            return false;
        }
        let len = datagram.len().min(RECEIVE_BUFFER);
        let start = self.received_count * RECEIVE_BUFFER;
        self.received[start..start + len].copy_from_slice(&datagram[..len]);
        self.datagrams[self.received_count] = (len, socket_addr(&SockaddrStorage::from(src)));
        self.received_count += 1;
        true
    }

    /// Answers every datagram received, in order, through `handler`: each reply is queued for
    /// the datagram's source; a datagram that gets no reply (dropped by the handler, or from a
    /// source that cannot be replied to) queues nothing. Empties the received datagrams.
    pub(crate) fn answer(&mut self, handler: &PoolHandler) {
        for (index, &(len, src)) in self.datagrams[..self.received_count].iter().enumerate() {
            let Some(src) = src.filter(|&src| can_answer(src)) else {
                debug!(?src, "not answering a datagram from an address that cannot be replied to");
                continue;
            };
            let start = index * RECEIVE_BUFFER;
            let packet = &self.received[start..start + len];
            if handler.respond(packet, src, Transport::Udp, &mut self.replies[self.reply_count]) {
                self.destinations[self.reply_count] = Some(src);
                self.reply_count += 1;
            }
        }
        self.received_count = 0;
    }

    /// Sends the queued replies from the `first`th on with one `sendmmsg`; returns how many
    /// were sent (at least one), or the error of the `first`th.
    fn send(&self, fd: BorrowedFd<'_>, first: usize) -> io::Result<usize> {
        let queued = first..self.reply_count;
        let to: [SocketAddrAny; BATCH] = std::array::from_fn(|i| {
            let destination = self.destinations.get(first + i).copied().flatten();
            SocketAddrAny::from(destination.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))))
        });
        let slices: [[IoSlice<'_>; 1]; BATCH] = std::array::from_fn(|i| {
            [IoSlice::new(self.replies.get(first + i).map_or(&[][..], Vec::as_slice))]
        });
        let mut control: [SendAncillaryBuffer<'_, '_, '_>; BATCH] =
            std::array::from_fn(|_| Default::default());
        let mut control = control.iter_mut();
        let mut messages: [MMsgHdr<'_>; BATCH] = std::array::from_fn(|i| {
            MMsgHdr::new_with_addr(&to[i], &slices[i], control.next().expect("BATCH control buffers"))
        });
        let sent = sendmmsg(fd, &mut messages[..queued.len()], SendFlags::DONTWAIT)?;
        if sent == 0 {
            // sendmmsg of at least one message reports an error or sends some.
            return Err(io::Error::other("sendmmsg sent nothing"));
        }
        Ok(sent)
    }

    /// Takes the queued replies with their destinations, in order.
    pub(crate) fn take_replies(&mut self) -> Vec<(SocketAddr, Vec<u8>)> {
        let count = std::mem::take(&mut self.reply_count);
        self.replies[..count]
            .iter()
            .zip(&self.destinations)
            .map(|(reply, to)| (to.expect("a reply has a destination"), reply.clone()))
            .collect()
    }
}

/// Message headers for `recvmmsg`, one set per worker thread (see the module
/// docs): they point into a [`Batch`] only during one call.
struct Headers {
    receive_v4: MultiHeaders<SockaddrStorage>,
    receive_v6: MultiHeaders<SockaddrStorage>,
}

thread_local! {
    static HEADERS: RefCell<Headers> = RefCell::new(Headers {
        receive_v4: MultiHeaders::preallocate(BATCH, None),
        receive_v6: MultiHeaders::preallocate(BATCH, None),
    });
}

/// An IPv4 or IPv6 socket address (`None` for any other family).
fn socket_addr(storage: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = storage.as_sockaddr_in() {
        Some(SocketAddr::V4(SocketAddrV4::from(*v4)))
    } else {
        storage.as_sockaddr_in6().map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
    }
}

/// Answers the datagrams arriving on `socket` until `shutdown` is cancelled.
pub(crate) async fn serve(
    socket: UdpSocket,
    handler: Arc<PoolHandler>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let fd = socket.as_raw_fd();
    let ipv6 = socket.local_addr()?.is_ipv6();
    let mut batch = Batch::new();
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return Ok(()),
            ready = socket.readable() => ready?,
        }
        let mut handled = 0;
        let mut drained = false;
        while handled < YIELD_EVERY {
            match socket.try_io(Interest::READABLE, || batch.receive(fd, ipv6)) {
                Ok(received) => handled += received.max(1),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    drained = true;
                    break;
                }
                Err(error) if is_unrecoverable(&error) => return Err(error),
                Err(error) => {
                    // E.g. ICMP port unreachable for an earlier reply, reported on this socket.
                    debug!(%error, "error receiving on DNS UDP socket");
                    handled += 1;
                    continue;
                }
            }
            batch.answer(&handler);
            send_replies(&socket, &mut batch, &handler).await;
        }
        if !drained {
            // A full round: let the worker's other tasks (TCP, gossip) run before the next one.
            tokio::task::yield_now().await;
        }
    }
}

/// Sends every reply queued in `batch`, awaiting the socket's writability when its buffer is
/// full. An error is retried once (it may be a pending error of the socket's, not this
/// reply's); a reply that fails twice is counted as a send error and the rest are still sent.
async fn send_replies(socket: &UdpSocket, batch: &mut Batch, handler: &PoolHandler) {
    let mut sent = 0;
    let mut failed_once = false;
    while sent < batch.reply_count {
        match socket.try_io(Interest::WRITABLE, || batch.send(socket.as_fd(), sent)) {
            Ok(count) => {
                sent += count;
                failed_once = false;
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                if let Err(error) = socket.writable().await {
                    debug!(%error, "DNS UDP socket not writable: replies not sent");
                    for _ in sent..batch.reply_count {
                        handler.send_failed();
                    }
                    break;
                }
            }
            // A signal before anything went: nothing was sent, try again.
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(_) if !failed_once => failed_once = true,
            Err(error) => {
                let to = batch.destinations[sent];
                debug!(%error, ?to, "failed to send DNS response");
                handler.send_failed();
                sent += 1;
                failed_once = false;
            }
        }
    }
    batch.reply_count = 0;
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
