//! A TCP proxy that holds every chunk of bytes for a fixed time in each
//! direction: the broker with a round trip like a production cluster's
//! ([`crate::Broker::start_delayed`], `bench --broker-delay-ms`). tansu on
//! the loopback acknowledges within a millisecond or two; a cluster
//! replicating `acks=all` across zones takes several, and librdkafka's
//! producer behaves differently then (BENCHMARKS.md). It runs in the
//! process that starts it (in the bench, its CPU is counted with the load
//! generator's). tokio's timer rounds each hold up to the next millisecond.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// Accepts connections on `listener` and relays each to `upstream`, every
/// chunk held for `delay` each way, in order.
pub async fn serve(listener: TcpListener, upstream: SocketAddr, delay: Duration) {
    while let Ok((client, _)) = listener.accept().await {
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else { return };
            let _ = (client.set_nodelay(true), server.set_nodelay(true));
            let ((client_read, client_write), (server_read, server_write)) = (client.into_split(), server.into_split());
            tokio::join!(relay(client_read, server_write, delay), relay(server_read, client_write, delay));
        });
    }
}

/// Copies `from` to `to`, each chunk written `delay` after it was read.
async fn relay(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) {
    let (held, mut due) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reading = async move {
        let mut buffer = vec![0; 64 * 1024];
        while let Ok(read @ 1..) = from.read(&mut buffer).await {
            if held.send((Instant::now() + delay, buffer[..read].to_vec())).is_err() {
                break;
            }
        }
    };
    let writing = async move {
        while let Some((at, bytes)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reading, writing);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes cross both ways, in order, and a round trip takes at least twice the delay.
    #[tokio::test]
    async fn relays_both_ways_in_order_after_the_delay() {
        let upstream = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let upstream_address = upstream.local_addr().expect("address");
        tokio::spawn(async move {
            let (mut socket, _) = upstream.accept().await.expect("accept");
            let mut buffer = [0; 1024];
            while let Ok(read @ 1..) = socket.read(&mut buffer).await {
                socket.write_all(&buffer[..read]).await.expect("echo");
            }
        });
        let proxy = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let proxy_address = proxy.local_addr().expect("address");
        tokio::spawn(serve(proxy, upstream_address, Duration::from_millis(20)));

        let mut client = TcpStream::connect(proxy_address).await.expect("connect");
        let started = std::time::Instant::now();
        client.write_all(b"first,").await.expect("write");
        client.write_all(b"second").await.expect("write");
        let mut echoed = vec![0; 12];
        client.read_exact(&mut echoed).await.expect("read");
        assert_eq!(echoed, b"first,second");
        assert!(started.elapsed() >= Duration::from_millis(40), "round trip {:?}", started.elapsed());
    }
}
