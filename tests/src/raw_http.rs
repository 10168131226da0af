//! Raw HTTP/1.1 on a socket of its own, for what reqwest will not send: bodies shorter
//! than their Content-Length, paths a URL parser would normalise (`/../`, `%2e%2e`), and
//! bodies that stall or trickle.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::TestServer;

#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> &str {
        self.headers.iter().find(|(n, _)| n == name).map_or("", |(_, v)| v.as_str())
    }
}

/// Writes `head` and `body` on a fresh connection (then shuts the write half if
/// `half_close`), and reads until the server closes. `None` if it closed without answering.
pub async fn raw_exchange(server: &TestServer, head: &str, body: &[u8], half_close: bool) -> Option<RawResponse> {
    let address = server.base_url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect to the server");
    // The server may refuse and close before reading everything: write errors are fine.
    let mut written = stream.write_all(head.as_bytes()).await;
    if written.is_ok() {
        written = stream.write_all(body).await;
    }
    if written.is_ok() && half_close {
        let _ = stream.shutdown().await;
    }
    let mut received = Vec::new();
    // A reset after (or instead of) an answer is fine: keep what arrived.
    if tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut received)).await.is_err() {
        panic!("the server neither answered nor closed the connection within 30 s (request head: {head:?})");
    }
    parse_raw_response(&received)
}

pub fn parse_raw_response(bytes: &[u8]) -> Option<RawResponse> {
    if bytes.is_empty() {
        return None;
    }
    let split = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| {
        panic!("incomplete HTTP response: {:?}", String::from_utf8_lossy(bytes));
    });
    let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
    let raw_body = &bytes[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> =
        lines.filter_map(|line| line.split_once(':')).map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned())).collect();
    let chunked = headers.iter().any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked { dechunk(raw_body) } else { raw_body.to_vec() };
    Some(RawResponse { status, headers, body: String::from_utf8_lossy(&body).into_owned() })
}

fn dechunk(mut bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = bytes.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&bytes[..eol]).into_owned();
        let Ok(size) = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16) else { break };
        bytes = &bytes[eol + 2..];
        if size == 0 || bytes.len() < size {
            out.extend_from_slice(&bytes[..size.min(bytes.len())]);
            break;
        }
        out.extend_from_slice(&bytes[..size]);
        bytes = bytes.get(size + 2..).unwrap_or_default();
    }
    out
}

/// How a slow request ended.
#[derive(Debug)]
pub struct SlowOutcome {
    /// What the server answered, if anything.
    pub response: Option<RawResponse>,
    /// From the first byte sent to the end of the exchange.
    pub elapsed: Duration,
    /// The server closed the connection (rather than the wait running out).
    pub closed: bool,
}

/// Sends `head` and the first `at_once` bytes of `body`, then one more byte every
/// `trickle` (or nothing more: a stall), and reads until the server closes the connection
/// or `give_up` has passed.
pub async fn slow_exchange(
    server: &TestServer,
    head: &str,
    body: &[u8],
    at_once: usize,
    trickle: Option<Duration>,
    give_up: Duration,
) -> SlowOutcome {
    let started = tokio::time::Instant::now();
    let address = server.base_url.trim_start_matches("http://");
    let stream = tokio::net::TcpStream::connect(address).await.expect("connect to the server");
    let (mut reader, mut writer) = stream.into_split();
    let mut writing = writer.write_all(head.as_bytes()).await.is_ok() && writer.write_all(&body[..at_once]).await.is_ok();
    let mut next = at_once;
    // A stall is a trickle too slow to matter.
    let mut ticks = tokio::time::interval_at(started + trickle.unwrap_or(give_up * 2), trickle.unwrap_or(give_up * 2));
    let (mut received, mut buffer, mut closed) = (Vec::new(), [0u8; 4096], false);
    loop {
        tokio::select! {
            read = reader.read(&mut buffer) => match read {
                Ok(0) | Err(_) => {
                    closed = true;
                    break;
                }
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            },
            _ = ticks.tick(), if writing && next < body.len() => {
                writing = writer.write_all(&body[next..next + 1]).await.is_ok();
                next += 1;
            }
            _ = tokio::time::sleep_until(started + give_up) => break,
        }
    }
    SlowOutcome { response: parse_raw_response(&received), elapsed: started.elapsed(), closed }
}
