//! One authenticated peer connection's tasks: a datagram reader, a stream reader and a writer.
//!
//! - Datagrams (the liveness messages) have a reader of their own that never waits on a stream,
//!   so a slow or stalled stream cannot hide a peer's liveness.
//! - Uni streams are accepted by a second task and read by at most [`STREAM_READERS`] tasks at
//!   once per connection, each bounded in size ([`MAX_FRAME_BYTES`]) and time
//!   ([`STREAM_READ_TIMEOUT`]); they are owned by the accepting task and end with it.
//! - Every decoded message reaches the actor stamped with the `Instant` it arrived (a datagram
//!   when read, a stream when its last byte was read), so time spent queued behind other work
//!   never counts as the sender's silence. Datagrams and connection events go on the actor's
//!   urgent channel, stream frames (bulk: pushes, digests) on another, which the actor serves
//!   last: however much bulk a peer sends, the liveness of the others is not queued behind it.
//! - Frames too big for a datagram wait in the connection's [`FrameQueue`] (bounded, coalescing)
//!   and one writer task sends them one stream at a time, giving up on a frame the peer does not
//!   take within [`STREAM_WRITE_TIMEOUT`] (to grant a stream, then again to take the
//!   frame). No task is spawned per frame.
//! - All three tasks end when the connection closes or the node shuts down; the datagram reader
//!   then reports [`Event::Closed`].

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use spdu_keys::PublicKey;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use super::metrics::NetMetrics;
use super::queue::{FrameQueue, Pushed};
use crate::proto::{MAX_FRAME_BYTES, Message};

/// How long a peer gets to deliver one stream frame.
pub const STREAM_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a peer gets to grant us a stream, and then to take one frame on it.
pub const STREAM_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Most streams of one connection read at once.
pub const STREAM_READERS: usize = 4;

/// What connections tell the actor.
#[derive(Debug)]
pub(super) enum Event {
    /// A handshake with a roster peer finished; `true`: the peer opened it (we accepted it).
    Connected(PublicKey, quinn::Connection, bool),
    /// The connection with this stable id closed.
    Closed(PublicKey, usize),
    /// A message from an authenticated peer, and when it arrived.
    Message(PublicKey, Message, std::time::Instant),
}

/// The actor's two input channels (see the module docs).
#[derive(Clone, Debug)]
pub(super) struct Inbox {
    /// Datagrams, connections opened and closed.
    pub(super) urgent: mpsc::Sender<Event>,
    /// Stream frames.
    pub(super) bulk: mpsc::Sender<Event>,
}

/// The sending side of one connection, held by the actor.
#[derive(Debug)]
pub(super) struct Outbox {
    pub(super) conn: quinn::Connection,
    /// The peer opened it: its remote address is where the peer's packets come from.
    pub(super) incoming: bool,
    /// UDP datagrams QUIC had received on it when last looked at, and when that count last grew
    /// (or the connection opened): a path that stopped working stops growing it.
    rx_seen: u64,
    pub(super) heard_at: Instant,
    queue: Arc<SendQueue>,
    metrics: Arc<NetMetrics>,
}

#[derive(Debug, Default)]
struct SendQueue {
    frames: Mutex<FrameQueue>,
    ready: Notify,
}

impl Outbox {
    /// Notes whether anything arrived on the connection since the last look (at `now`).
    pub(super) fn look(&mut self, now: Instant) {
        let rx = self.conn.stats().udp_rx.datagrams;
        if rx != self.rx_seen {
            self.rx_seen = rx;
            self.heard_at = now;
        }
    }

    /// Sends `frame` as a datagram if it fits, else queues it for the writer. `supersedes`: it
    /// replaces a frame of its kind still waiting (see [`FrameQueue::push`]).
    pub(super) fn send(&self, frame: Bytes, supersedes: bool) {
        if self.conn.max_datagram_size().is_some_and(|max| frame.len() <= max) {
            match self.conn.send_datagram(frame.clone()) {
                Ok(()) => return,
                Err(e) => debug!(error = %e, "datagram refused, sending as stream"),
            }
        }
        let pushed = self.queue.frames.lock().unwrap_or_else(PoisonError::into_inner).push(frame, supersedes);
        match pushed {
            Pushed::Queued { dropped, replaced } => {
                NetMetrics::add(&self.metrics.send_queue_dropped, dropped as u64);
                NetMetrics::add(&self.metrics.send_coalesced, u64::from(replaced));
                self.queue.ready.notify_one();
            }
            Pushed::Coalesced => NetMetrics::add(&self.metrics.send_coalesced, 1),
            Pushed::TooLarge => NetMetrics::add(&self.metrics.send_queue_dropped, 1),
        }
    }
}

/// Starts the reader and writer tasks of `conn`, an authenticated connection to `peer`.
pub(super) fn start(
    tasks: &TaskTracker,
    peer: PublicKey,
    conn: quinn::Connection,
    incoming: bool,
    events: Inbox,
    metrics: Arc<NetMetrics>,
    shutdown: CancellationToken,
) -> Outbox {
    let queue = Arc::new(SendQueue::default());
    let reader = Reader { peer, conn: conn.clone(), events, metrics: metrics.clone() };
    tasks.spawn(reader.clone().datagrams(shutdown.clone()));
    tasks.spawn(reader.streams(shutdown.clone()));
    tasks.spawn(write(conn.clone(), queue.clone(), metrics.clone(), shutdown));
    Outbox { conn, incoming, rx_seen: 0, heard_at: Instant::now(), queue, metrics }
}

#[derive(Clone)]
struct Reader {
    peer: PublicKey,
    conn: quinn::Connection,
    events: Inbox,
    metrics: Arc<NetMetrics>,
}

impl Reader {
    fn decode(&self, frame: &[u8], arrived: Instant) -> Option<Event> {
        match Message::decode(frame) {
            Ok(message) => {
                NetMetrics::add(&self.metrics.frames_received, 1);
                Some(Event::Message(self.peer, message, arrived.into_std()))
            }
            Err(e) => {
                NetMetrics::add(&self.metrics.malformed_frames, 1);
                debug!(peer = %self.peer.fingerprint(), error = %e, "dropping frame");
                None
            }
        }
    }

    /// Reads datagrams until the connection closes, then reports it closed.
    async fn datagrams(self, shutdown: CancellationToken) {
        loop {
            let frame = tokio::select! {
                _ = shutdown.cancelled() => return,
                datagram = self.conn.read_datagram() => match datagram {
                    Ok(frame) => frame,
                    Err(_) => break,
                },
            };
            let arrived = Instant::now();
            if let Some(event) = self.decode(&frame, arrived)
                && self.events.urgent.send(event).await.is_err()
            {
                return;
            }
        }
        let _ = self.events.urgent.send(Event::Closed(self.peer, self.conn.stable_id())).await;
    }

    /// Accepts uni streams until the connection closes, reading up to [`STREAM_READERS`] at once.
    async fn streams(self, shutdown: CancellationToken) {
        let permits = Arc::new(Semaphore::new(STREAM_READERS));
        // Owned here: dropping the set when this task ends aborts reads still running.
        let mut reads = JoinSet::new();
        loop {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => return,
                Some(_) = reads.join_next(), if !reads.is_empty() => continue,
                p = permits.clone().acquire_owned() => p.expect("never closed"),
            };
            let stream = tokio::select! {
                _ = shutdown.cancelled() => return,
                s = self.conn.accept_uni() => match s {
                    Ok(s) => s,
                    Err(_) => return,
                },
            };
            reads.spawn(self.clone().read_stream(stream, permit));
        }
    }

    async fn read_stream(self, mut stream: quinn::RecvStream, _permit: tokio::sync::OwnedSemaphorePermit) {
        let frame = match tokio::time::timeout(STREAM_READ_TIMEOUT, stream.read_to_end(MAX_FRAME_BYTES)).await
        {
            Ok(Ok(frame)) => frame,
            Ok(Err(e)) => {
                NetMetrics::add(&self.metrics.malformed_frames, 1);
                debug!(peer = %self.peer.fingerprint(), error = %e, "dropping stream");
                return;
            }
            Err(_) => {
                NetMetrics::add(&self.metrics.streams_timed_out, 1);
                let _ = stream.stop(1u32.into());
                return;
            }
        };
        if let Some(event) = self.decode(&frame, Instant::now()) {
            let _ = self.events.bulk.send(event).await;
        }
    }
}

/// Sends the queued frames of `conn`, one stream each, until the connection closes.
async fn write(
    conn: quinn::Connection,
    queue: Arc<SendQueue>,
    metrics: Arc<NetMetrics>,
    shutdown: CancellationToken,
) {
    loop {
        let next = queue.frames.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let Some(frame) = next else {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = conn.closed() => return,
                () = queue.ready.notified() => continue,
            }
        };
        let send = async {
            type Failure = Box<dyn std::error::Error + Send + Sync>;
            let mut stream = match tokio::time::timeout(STREAM_WRITE_TIMEOUT, conn.open_uni()).await {
                Ok(stream) => stream?,
                Err(_) => return Err::<(), Failure>("the peer granted no stream in time".into()),
            };
            let written = tokio::time::timeout(STREAM_WRITE_TIMEOUT, async {
                stream.write_all(&frame).await?;
                stream.finish()?;
                Ok::<_, Failure>(())
            })
            .await;
            match written {
                Ok(result) => result,
                Err(_) => {
                    // Free what QUIC still buffers for a peer that does not take it.
                    let _ = stream.reset(1u32.into());
                    Err("the peer did not take the frame in time".into())
                }
            }
        };
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = conn.closed() => return,
            r = send => r,
        };
        if let Err(e) = result {
            NetMetrics::add(&metrics.send_queue_dropped, 1);
            debug!(error = %e, "stream frame dropped");
        }
    }
}
