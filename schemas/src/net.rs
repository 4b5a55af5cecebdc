//! Listening sockets for the project's HTTP servers that clients reach in
//! bursts: the bridge (providers) and the schema registry (every producer
//! and consumer of the topics, at once after a deploy).

use std::net::SocketAddr;

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
