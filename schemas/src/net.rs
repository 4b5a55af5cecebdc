//! Listening sockets for the project's HTTP servers that clients reach in
//! bursts: the bridge (providers) and the schema registry (every producer
//! and consumer of the topics, at once after a deploy), and their
//! connections.

use axum::serve::{ListenerExt, TapIo};
use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpStream};

/// The accept queue asked of the kernel: as long as it allows
/// (`net.core.somaxconn`, 4096 on current Linux), as Go's net package does.
/// tokio's `TcpListener::bind` leaves std's 128, and the kernel does not
/// refuse the connections beyond a full queue: it drops their SYNs, so each
/// of a burst of new connections (a provider's retry storm after an outage,
/// a fleet of consumers starting) waits a second for its retransmission.
const LISTEN_BACKLOG: u32 = i32::MAX as u32;

/// Binds `address` (`SO_REUSEADDR`, as tokio's `bind`) with the kernel's
/// full accept queue ([`LISTEN_BACKLOG`]).
pub fn listen(address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if address.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The connections of `listener`, each with `TCP_NODELAY`: an answer goes
/// out as soon as it is written, not held back by Nagle's algorithm until
/// the client acknowledges the previous one (Go's net/http and nginx set it
/// too). In the bench's bridge-only runs, 64 connections answered about a
/// fifth more per second for less CPU per webhook (BENCHMARKS.md). Every
/// HTTP server of the project serves through this, and so does the bench's
/// HTTP limit, so that it measures the same server.
pub fn no_delay(listener: TcpListener) -> TapIo<TcpListener, fn(&mut TcpStream)> {
    listener.tap_io(set_no_delay as fn(&mut TcpStream))
}

fn set_no_delay(connection: &mut TcpStream) {
    if let Err(error) = connection.set_nodelay(true) {
        tracing::debug!(%error, "could not set TCP_NODELAY on a connection");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    /// More connections at once than std's backlog of 128, none accepted
    /// yet: every handshake completes, none waits on a dropped SYN.
    #[tokio::test]
    async fn a_burst_of_new_connections_beyond_128_is_queued_not_dropped() {
        let listener = super::listen(([127, 0, 0, 1], 0).into()).expect("listen");
        let address = listener.local_addr().expect("address");
        let connects =
            (0..300).map(|_| tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(address)));
        let connected =
            futures::future::join_all(connects).await.into_iter().filter(|c| matches!(c, Ok(Ok(_)))).count();
        assert_eq!(
            connected, 300,
            "connections completed before the first accept (a dropped SYN is retried after 1 s)"
        );
    }
}
