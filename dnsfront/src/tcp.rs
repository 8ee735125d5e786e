//! DNS over TCP (RFC 7766): our accept loop and one task per connection.
//!
//! Owns [`serve`] (accepting, refusing over the limits of the [`ConnectionTable`], pausing on
//! accept errors) and [`serve_stream`] (one connection: 2-byte length-prefixed messages, any
//! number per connection, pipelined queries answered in order). Replaces hickory-server's TCP
//! listener, which had no connection limit and retried a failing `accept` (EMFILE) at once, in
//! a loop.
//!
//! Invariants: a connection is served only while it holds a slot of the table (so their number
//! never exceeds the limits; an accepted connection over a limit is closed at once, counted and
//! warned about at most every [`WARN_INTERVAL`]); after an accept error the loop sleeps before
//! the next `accept` (never spins); a connection is closed when it sends no complete message
//! within the idle timeout (shorter when the table is busy), when its peer does not take a
//! response within the idle timeout, on a message that cannot be answered, and on shutdown;
//! every connection task has ended when [`serve`] returns.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader},
    net::TcpListener,
    time::{Instant, sleep, sleep_until, timeout},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, warn};

use crate::{
    handler::PoolHandler,
    limits::{ConnectionTable, LogLimiter},
    transport::Transport,
};

/// Pause after an accept error before accepting again. Out of file descriptors, `accept` fails
/// at once for as long as the condition lasts: retrying without a pause spins a core.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Least time between two warnings of one kind (limit reached, accept failing).
pub(crate) const WARN_INTERVAL: Duration = Duration::from_secs(10);
/// Read buffer of a connection: several pipelined queries per read.
const READ_BUFFER: usize = 2048;

/// Linux errno values of `accept` failing for lack of a local resource (EMFILE, ENFILE,
/// ENOBUFS, ENOMEM): warned about, and the listener keeps going after a pause.
const RESOURCE_ERRORS: [i32; 4] = [24, 23, 105, 12];

/// Accepts connections on `listener` and serves each in its own task until `shutdown` fires;
/// then waits for every connection task to end.
pub(crate) async fn serve(
    listener: TcpListener,
    handler: Arc<PoolHandler>,
    table: Arc<ConnectionTable>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let connections = TaskTracker::new();
    // Cancelled when the accept loop ends, for whatever reason: connections end with it.
    let closing = shutdown.child_token();
    let refusals = LogLimiter::new(WARN_INTERVAL);
    let accept_errors = LogLimiter::new(WARN_INTERVAL);
    let metrics = handler.metrics().clone();
    let result = loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break Ok(()),
            accepted = listener.accept() => accepted,
        };
        let (stream, src) = match accepted {
            Ok(accepted) => accepted,
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::Interrupted
                ) =>
            {
                // That one connection went away before we took it.
                debug!(%error, "TCP connection lost before accept");
                continue;
            }
            Err(error)
                if matches!(error.kind(), io::ErrorKind::InvalidInput | io::ErrorKind::NotConnected) =>
            {
                // The listening socket itself is unusable.
                break Err(error);
            }
            Err(error) => {
                metrics.tcp_accept_errors.inc();
                if let Some(held_back) = accept_errors.allow(std::time::Instant::now()) {
                    let resource = error.raw_os_error().is_some_and(|e| RESOURCE_ERRORS.contains(&e));
                    warn!(
                        %error,
                        resource,
                        held_back,
                        pause_ms = ACCEPT_PAUSE.as_millis() as u64,
                        "cannot accept DNS TCP connections; pausing"
                    );
                }
                tokio::select! {
                    () = shutdown.cancelled() => break Ok(()),
                    () = sleep(ACCEPT_PAUSE) => continue,
                }
            }
        };
        let slot = match table.open(src.ip()) {
            Ok(slot) => slot,
            Err(reason) => {
                metrics.tcp_refused(reason).inc();
                if let Some(held_back) = refusals.allow(std::time::Instant::now()) {
                    let (total, from_source) = table.open_count(src.ip());
                    let limits = table.limits();
                    warn!(
                        %src,
                        ?reason,
                        total,
                        from_source,
                        max_connections = limits.max_connections,
                        max_per_source = limits.max_per_source,
                        held_back,
                        "DNS TCP connection limit reached: closing new connections"
                    );
                }
                // Dropping closes it: the descriptor is free again at once.
                drop(stream);
                continue;
            }
        };
        let handler = handler.clone();
        let table = table.clone();
        let closing = closing.clone();
        let metrics = metrics.clone();
        connections.spawn(async move {
            metrics.tcp_connections.inc();
            let _ = stream.set_nodelay(true);
            let (reader, writer) = stream.into_split();
            serve_stream(reader, writer, src, &handler, &table, &closing).await;
            metrics.tcp_connections.dec();
            drop(slot);
        });
    };
    connections.close();
    closing.cancel();
    connections.wait().await;
    result
}

/// Serves one connection from `src`: reads length-prefixed queries from `reader` and writes
/// each response, length-prefixed, to `writer`, in order, until the peer closes, a timeout or
/// an unanswerable message ends it, or `shutdown` fires.
pub(crate) async fn serve_stream(
    reader: impl AsyncRead + Unpin,
    mut writer: impl AsyncWrite + Unpin,
    src: SocketAddr,
    handler: &PoolHandler,
    table: &ConnectionTable,
    shutdown: &CancellationToken,
) {
    let limits = table.limits();
    let mut busy = table.busy();
    let mut reader = BufReader::with_capacity(READ_BUFFER, reader);
    let mut message = Vec::new();
    let mut frame = Vec::with_capacity(512);
    let mut reply = Vec::with_capacity(512);
    loop {
        let started = Instant::now();
        let mut is_busy = *busy.borrow_and_update();
        let outcome = {
            let read = read_message(&mut reader, &mut message);
            tokio::pin!(read);
            loop {
                let idle = if is_busy { limits.busy_idle_timeout } else { limits.idle_timeout };
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return,
                    outcome = &mut read => break outcome,
                    () = sleep_until(started + idle) => {
                        debug!(%src, "closing an idle DNS TCP connection");
                        return;
                    }
                    changed = busy.changed(), if !is_busy => {
                        is_busy = changed.is_err() || *busy.borrow_and_update();
                    }
                }
            }
        };
        if let Err(error) = outcome {
            if error.kind() != io::ErrorKind::UnexpectedEof {
                debug!(%error, %src, "DNS TCP read failed");
            }
            return;
        }
        if !handler.respond(&message, src, Transport::Tcp, &mut reply) {
            debug!(%src, "unanswerable message on a DNS TCP connection: closing it");
            return;
        }
        let Ok(len) = u16::try_from(reply.len()) else {
            // `respond` never encodes more than 65,535 bytes over TCP.
            return;
        };
        frame.clear();
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(&reply);
        let written = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            written = timeout(limits.idle_timeout, writer.write_all(&frame)) => written,
        };
        match written {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                debug!(%error, %src, "DNS TCP write failed");
                handler.send_failed();
                return;
            }
            Err(_) => {
                debug!(%src, "DNS TCP peer does not read its responses: closing");
                handler.send_failed();
                return;
            }
        }
    }
}

/// Reads one length-prefixed message into `message`.
async fn read_message(reader: &mut (impl AsyncRead + Unpin), message: &mut Vec<u8>) -> io::Result<()> {
    let len = reader.read_u16().await?;
    message.resize(usize::from(len), 0);
    reader.read_exact(message).await?;
    Ok(())
}
