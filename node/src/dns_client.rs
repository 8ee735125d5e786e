//! The one DNS client of the node crate: one question over UDP, the matching answer back.
//!
//! Used by the `dns` service check and by the local-cluster harness and demo. It binds an
//! ephemeral port of the server's family, connects the socket to the server (so datagrams from
//! elsewhere are dropped by the kernel) and returns the first response whose id matches; anything
//! that does not decode or does not match is skipped. The caller bounds the time.

use std::net::SocketAddr;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use rand::RngExt;

/// Asks `server` for `name`/`record_type` over UDP and returns its response, whatever its rcode.
/// Errors are the socket's (a caller tells local resource errors from the server's by the
/// `io::Error`); the wait is unbounded, so wrap it in a timeout.
pub async fn ask(server: SocketAddr, name: &Name, record_type: RecordType) -> std::io::Result<Message> {
    let mut query = Message::query();
    query.metadata.id = rand::rng().random();
    query.add_query(Query::query(name.clone(), record_type));
    let bytes = query.to_vec().map_err(std::io::Error::other)?;
    let bind: SocketAddr = if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("literal");
    let socket = tokio::net::UdpSocket::bind(bind).await?;
    socket.connect(server).await?;
    socket.send(&bytes).await?;
    let mut buffer = vec![0; 4096];
    loop {
        let len = socket.recv(&mut buffer).await?;
        let Ok(response) = Message::from_vec(&buffer[..len]) else { continue };
        if response.metadata.id == query.metadata.id {
            return Ok(response);
        }
    }
}
