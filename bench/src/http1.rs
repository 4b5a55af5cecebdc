//! The load generator's HTTP/1.1 client, built the way wrk is: keep-alive
//! connections, each request written as one buffer, each answer read by its
//! `content-length`. It shares the two cores with what it measures, so its
//! own cost is taken from what the servers get: a general-purpose client
//! (reqwest: a URL parsed, a header map and a copy of the body per request,
//! a pool and a connection task behind channels) spent 24.5 µs of CPU per
//! request here, half as much as the bridge itself (BENCHMARKS.md).

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one exchange may take before it counts as failed.
const TIMEOUT: Duration = Duration::from_secs(30);

/// POSTs signed webhooks to one URL over a pool of keep-alive connections.
#[derive(Debug)]
pub(crate) struct Client {
    address: SocketAddr,
    /// The request line and the headers every request shares.
    head: String,
    /// Connections between requests; a request takes one or opens one.
    idle: Mutex<Vec<Connection>>,
}

#[derive(Debug)]
struct Connection {
    stream: TcpStream,
    request: Vec<u8>,
    answer: Vec<u8>,
}

impl Client {
    /// A client for `url` (`http://host:port/path`, the host an IP address).
    pub(crate) fn new(url: &str) -> anyhow::Result<Self> {
        let rest = url.strip_prefix("http://").ok_or_else(|| anyhow::anyhow!("{url}: only http:// is supported"))?;
        let (authority, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
        let address = authority.parse().map_err(|e| anyhow::anyhow!("{url}: the host must be ip:port ({e})"))?;
        let head = format!("POST {path} HTTP/1.1\r\nhost: {authority}\r\ncontent-type: application/json\r\n");
        Ok(Self { address, head, idle: Mutex::new(Vec::new()) })
    }

    /// Opens `count` connections into the pool, as wrk2 does before its
    /// schedule starts: an open loop measures the server at a steady rate,
    /// not the handshakes of its first milliseconds.
    pub(crate) async fn connect(&self, count: usize) -> std::io::Result<()> {
        let opened = futures::future::try_join_all((0..count).map(|_| Connection::open(self.address))).await?;
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).extend(opened);
        Ok(())
    }

    /// POSTs `body` with its signed header lines (`name: value\r\n` each);
    /// the answer's status, 0 when there was none.
    pub(crate) async fn post(&self, body: &[u8], signed: &str) -> u16 {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut connection = match idle {
            Some(connection) => connection,
            None => match Connection::open(self.address).await {
                Ok(connection) => connection,
                Err(_) => return 0,
            },
        };
        match tokio::time::timeout(TIMEOUT, connection.exchange(&self.head, body, signed)).await {
            Ok(Ok((status, keep_alive))) => {
                if keep_alive {
                    self.idle.lock().unwrap_or_else(|e| e.into_inner()).push(connection);
                }
                status
            }
            // The connection is dropped: a half-read answer cannot be resumed.
            _ => 0,
        }
    }
}

impl Connection {
    async fn open(address: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        Ok(Self { stream, request: Vec::with_capacity(4096), answer: Vec::with_capacity(1024) })
    }

    /// Writes one request and reads its answer: the status, and whether the
    /// connection may carry the next request.
    async fn exchange(&mut self, head: &str, body: &[u8], signed: &str) -> std::io::Result<(u16, bool)> {
        self.request.clear();
        write!(self.request, "{head}{signed}content-length: {}\r\n\r\n", body.len())?;
        self.request.extend_from_slice(body);
        self.stream.write_all(&self.request).await?;

        self.answer.clear();
        loop {
            self.read_more().await?;
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            let head_length = match response.parse(&self.answer) {
                Ok(httparse::Status::Complete(length)) => length,
                Ok(httparse::Status::Partial) => continue,
                Err(e) => return Err(invalid(format!("unparseable answer: {e}"))),
            };
            let status = response.code.unwrap_or(0);
            let mut content_length = None;
            let mut keep_alive = true;
            for header in response.headers.iter() {
                if header.name.eq_ignore_ascii_case("content-length") {
                    let value = std::str::from_utf8(header.value).ok().and_then(|v| v.trim().parse::<usize>().ok());
                    content_length = Some(value.ok_or_else(|| invalid("bad content-length".into()))?);
                } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
                    return Err(invalid("chunked answers are not supported".into()));
                } else if header.name.eq_ignore_ascii_case("connection") {
                    keep_alive &= !header.value.eq_ignore_ascii_case(b"close");
                }
            }
            let end = head_length + content_length.ok_or_else(|| invalid("an answer without content-length".into()))?;
            while self.answer.len() < end {
                self.read_more().await?;
            }
            return Ok((status, keep_alive && self.answer.len() == end));
        }
    }

    /// Appends what the socket has to `answer`; the end of the stream is an error.
    async fn read_more(&mut self) -> std::io::Result<()> {
        self.answer.reserve(4096);
        if self.stream.read_buf(&mut self.answer).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }
}

fn invalid(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against a real axum server: the status, keep-alive across requests,
    /// connections opened ahead and used, and a refused connection counted
    /// as no answer.
    #[tokio::test]
    async fn posts_over_one_kept_connection_and_reads_each_status() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let app = axum::Router::new().route(
            "/webhooks/stripe",
            axum::routing::post(|headers: axum::http::HeaderMap, body: String| async move {
                let signed = headers.get("stripe-signature").is_some_and(|v| v == "t=1,v1=ab");
                if signed && body == "{\"id\":1}" {
                    (axum::http::StatusCode::OK, "ok")
                } else {
                    (axum::http::StatusCode::BAD_REQUEST, "bad signature or body")
                }
            }),
        );
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let client = Client::new(&format!("http://{address}/webhooks/stripe")).expect("client");

        assert_eq!(client.post(b"{\"id\":1}", "stripe-signature: t=1,v1=ab\r\n").await, 200);
        assert_eq!(client.post(b"{\"id\":1}", "stripe-signature: t=1,v1=00\r\n").await, 400);
        assert_eq!(client.post(b"{\"id\":2}", "stripe-signature: t=1,v1=ab\r\n").await, 400);
        assert_eq!(client.idle.lock().expect("pool").len(), 1, "one connection, kept between requests");

        let warmed = Client::new(&format!("http://{address}/webhooks/stripe")).expect("client");
        warmed.connect(3).await.expect("connections opened before the first request");
        assert_eq!(warmed.post(b"{\"id\":1}", "stripe-signature: t=1,v1=ab\r\n").await, 200);
        assert_eq!(warmed.idle.lock().expect("pool").len(), 3, "the request took an opened connection, not a fourth");

        server.abort();
        let _ = server.await;
        let closed = Client::new(&format!("http://{address}/webhooks/stripe")).expect("client");
        assert_eq!(closed.post(b"{}", "stripe-signature: t=1,v1=ab\r\n").await, 0, "nothing listens any more");
        assert!(closed.connect(1).await.is_err(), "nothing to connect to");
    }
}
