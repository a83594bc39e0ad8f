//! A tiny raw HTTP/1.1 client that sends exactly the bytes a test writes, so
//! malformed input reaches the server unaltered: [`request`] for one
//! exchange on a fresh connection, [`Conn`] for keep-alive and pipelining,
//! [`Resp`] for what came back, and builders for the usual requests.

use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use super::connect::{CONNECT_TIMEOUT, connect_from};

/// Default limit for receiving one whole response.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response head the client accepts.
const MAX_RESPONSE_HEAD_BYTES: usize = 64 * 1024;
/// Largest response body the client accepts, so a runaway server fails the
/// test instead of eating memory.
const MAX_RESPONSE_BODY_BYTES: usize = 16 * 1024 * 1024;

/// One HTTP response as received.
#[derive(Clone, PartialEq, Eq)]
pub struct Resp {
    pub status: u16,
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    pub reason: String,
    /// In arrival order; names lowercased, values trimmed.
    pub headers: Vec<(String, String)>,
    /// The body with any chunked framing removed.
    pub body: Vec<u8>,
}

impl Resp {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name`, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body parsed as JSON.
    ///
    /// # Panics
    /// With the whole response, if the body is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}):\n{self:?}"))
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl fmt::Debug for Resp {
    /// Shows the response as it looked on the wire, which is what a failing
    /// assertion needs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} {} {}", self.version, self.status, self.reason)?;
        for (name, value) in &self.headers {
            writeln!(f, "{name}: {value}")?;
        }
        writeln!(f)?;
        write!(f, "{}", self.text())
    }
}

/// A persistent client connection for keep-alive and pipelining tests.
/// Bytes read past one response stay buffered for the next.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    timeout: Duration,
}

impl Conn {
    /// Connects to `addr`.
    ///
    /// # Panics
    /// If the connection fails.
    pub fn open(addr: SocketAddr) -> Conn {
        Conn::try_open(addr).unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"))
    }

    /// Connects to `addr` (5 s connect timeout).
    pub fn try_open(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
        Conn::from_stream(stream)
    }

    /// Connects to `addr` from the local address `local_ip` (e.g.
    /// `127.0.0.2`, to play a second client on loopback).
    ///
    /// # Panics
    /// If the connection fails.
    pub fn open_from(local_ip: IpAddr, addr: SocketAddr) -> Conn {
        Conn::try_open_from(local_ip, addr)
            .unwrap_or_else(|e| panic!("cannot connect to {addr} from {local_ip}: {e}"))
    }

    /// Like [`Conn::open_from`], returning the error.
    pub fn try_open_from(local_ip: IpAddr, addr: SocketAddr) -> io::Result<Conn> {
        Conn::from_stream(connect_from(local_ip, addr)?)
    }

    fn from_stream(stream: TcpStream) -> io::Result<Conn> {
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
            timeout: RESPONSE_TIMEOUT,
        })
    }

    /// Sets how long one `read_response` may take in all (default 10 s).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The underlying socket (e.g. for `local_addr`).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Writes `bytes`.
    ///
    /// # Panics
    /// If the write fails.
    pub fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes)
            .unwrap_or_else(|e| panic!("sending {} bytes failed: {e}", bytes.len()));
    }

    /// Writes `bytes`, returning any error (e.g. the server closed).
    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Reads the next response, interim (1xx) responses included.
    ///
    /// # Panics
    /// If no complete response arrives in time.
    pub fn read_response(&mut self) -> Resp {
        self.try_read_response()
            .unwrap_or_else(|e| panic!("reading a response failed: {e}"))
    }

    /// Reads the next response to a `HEAD` request (no body is read).
    ///
    /// # Panics
    /// If no complete head arrives in time.
    pub fn read_head_response(&mut self) -> Resp {
        self.read_one(false)
            .unwrap_or_else(|e| panic!("reading a HEAD response failed: {e}"))
    }

    /// Like [`Conn::read_response`], returning the error.
    pub fn try_read_response(&mut self) -> io::Result<Resp> {
        self.read_one(true)
    }

    /// True if the server closes (or resets) the connection within
    /// `timeout` without sending anything more.
    pub fn is_closed_by_peer(&mut self, timeout: Duration) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let deadline = Instant::now() + timeout;
        match self.fill(deadline) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => matches!(
                e.kind(),
                ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
            ),
        }
    }

    /// Reads once into `buf`; `Ok(0)` at end of stream, `TimedOut` after
    /// `deadline`.
    fn fill(&mut self, deadline: Instant) -> io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(ErrorKind::TimedOut, "timed out"));
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// An error that carries what had been received, for the test log.
    fn failure(&self, kind: ErrorKind, what: &str) -> io::Error {
        io::Error::new(
            kind,
            format!(
                "{what}; {} unconsumed bytes received: {:?}",
                self.buf.len(),
                String::from_utf8_lossy(&self.buf[..self.buf.len().min(2048)])
            ),
        )
    }

    /// Fills until `buf` holds `n` bytes.
    fn need(&mut self, n: usize, deadline: Instant) -> io::Result<()> {
        while self.buf.len() < n {
            match self.fill(deadline) {
                Ok(0) => {
                    return Err(
                        self.failure(ErrorKind::UnexpectedEof, "connection closed mid-response")
                    );
                }
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::TimedOut => {
                    return Err(self.failure(ErrorKind::TimedOut, "timed out mid-response"));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Takes one line (without its ending) from the stream.
    fn take_line(&mut self, deadline: Instant) -> io::Result<String> {
        let mut scanned = 0;
        loop {
            if let Some(pos) = self.buf[scanned..].iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=scanned + pos).collect();
                let text = String::from_utf8_lossy(&line);
                return Ok(text.trim_end_matches(['\r', '\n']).to_owned());
            }
            scanned = self.buf.len();
            let want = self.buf.len() + 1;
            self.need(want, deadline)?;
        }
    }

    fn read_one(&mut self, expect_body: bool) -> io::Result<Resp> {
        let deadline = Instant::now() + self.timeout;
        let head_end = loop {
            if let Some(end) = find_head_end(&self.buf, 0) {
                break end;
            }
            if self.buf.len() > MAX_RESPONSE_HEAD_BYTES {
                return Err(self.failure(ErrorKind::InvalidData, "response head over 64 KiB"));
            }
            match self.fill(deadline) {
                Ok(0) if self.buf.is_empty() => {
                    return Err(io::Error::new(
                        ErrorKind::UnexpectedEof,
                        "connection closed before any response byte",
                    ));
                }
                Ok(0) => {
                    return Err(
                        self.failure(ErrorKind::UnexpectedEof, "connection closed mid-head")
                    );
                }
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::TimedOut => {
                    let limit = self.timeout;
                    return Err(self.failure(
                        ErrorKind::TimedOut,
                        &format!("no complete response head within {limit:?}"),
                    ));
                }
                Err(e) => return Err(e),
            }
        };
        let head: Vec<u8> = self.buf.drain(..head_end).collect();
        let mut resp = parse_response_head(&head).ok_or_else(|| {
            io::Error::new(
                ErrorKind::InvalidData,
                format!(
                    "malformed response head: {:?}",
                    String::from_utf8_lossy(&head)
                ),
            )
        })?;
        let no_body = !expect_body
            || (100..200).contains(&resp.status)
            || resp.status == 204
            || resp.status == 304;
        if no_body {
            return Ok(resp);
        }
        let chunked = resp
            .header_all("transfer-encoding")
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("chunked"));
        resp.body = if chunked {
            self.read_chunked(deadline)?
        } else if let Some(length) = resp.header("content-length") {
            let length: usize = length
                .parse()
                .ok()
                .filter(|&n| n <= MAX_RESPONSE_BODY_BYTES)
                .ok_or_else(|| {
                    io::Error::new(
                        ErrorKind::InvalidData,
                        format!("bad Content-Length {length:?}"),
                    )
                })?;
            self.need(length, deadline)?;
            self.buf.drain(..length).collect()
        } else {
            self.read_to_close(deadline)?
        };
        Ok(resp)
    }

    fn read_chunked(&mut self, deadline: Instant) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.take_line(deadline)?;
            let size_text = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16)
                .ok()
                .filter(|&n| n <= MAX_RESPONSE_BODY_BYTES - body.len())
                .ok_or_else(|| {
                    io::Error::new(
                        ErrorKind::InvalidData,
                        format!("bad chunk size line {line:?}"),
                    )
                })?;
            if size == 0 {
                // Trailers, up to the blank line.
                while !self.take_line(deadline)?.is_empty() {}
                return Ok(body);
            }
            self.need(size, deadline)?;
            body.extend(self.buf.drain(..size));
            let end = self.take_line(deadline)?;
            if !end.is_empty() {
                return Err(io::Error::new(
                    ErrorKind::InvalidData,
                    format!("chunk followed by {end:?}, not CRLF"),
                ));
            }
        }
    }

    fn read_to_close(&mut self, deadline: Instant) -> io::Result<Vec<u8>> {
        loop {
            if self.buf.len() > MAX_RESPONSE_BODY_BYTES {
                return Err(io::Error::new(
                    ErrorKind::InvalidData,
                    "read-to-close body over 16 MiB",
                ));
            }
            match self.fill(deadline) {
                Ok(0) => return Ok(std::mem::take(&mut self.buf)),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::TimedOut => {
                    return Err(
                        self.failure(ErrorKind::TimedOut, "body without length never ended")
                    );
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Index just past the blank line ending a head (CRLF or bare LF line
/// endings), searching from `from`.
pub(super) fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(off) = buf.get(i..)?.iter().position(|&b| b == b'\n') {
        let nl = i + off;
        let rest = &buf[nl + 1..];
        if rest.starts_with(b"\n") {
            return Some(nl + 2);
        }
        if rest.starts_with(b"\r\n") {
            return Some(nl + 3);
        }
        i = nl + 1;
    }
    None
}

fn parse_response_head(head: &[u8]) -> Option<Resp> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.lines().filter(|l| !l.is_empty());
    let status_line = lines.next()?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next()?.to_owned();
    let status = parts.next()?.parse().ok()?;
    let reason = parts.next().unwrap_or_default().to_owned();
    if !version.starts_with("HTTP/") {
        return None;
    }
    let headers = lines
        .map(|line| {
            let (name, value) = line.split_once(':')?;
            Some((name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Resp {
        status,
        version,
        reason,
        headers,
        body: Vec::new(),
    })
}

/// Connects to `addr`, writes `raw` and returns the final response (1xx
/// interim responses are skipped). A request starting `HEAD ` gets no body.
///
/// # Panics
/// If nothing complete arrives within 10 s.
pub fn request(addr: SocketAddr, raw: &[u8]) -> Resp {
    try_request(addr, raw, RESPONSE_TIMEOUT).unwrap_or_else(|e| {
        panic!(
            "request to {addr} failed: {e}\nrequest: {:?}",
            String::from_utf8_lossy(raw)
        )
    })
}

/// Like [`request`], with a custom timeout and the error returned.
pub fn try_request(addr: SocketAddr, raw: &[u8], timeout: Duration) -> io::Result<Resp> {
    exchange(Conn::try_open(addr)?, raw, timeout)
}

/// Sends `raw` on `conn` and reads its final response (skipping 1xx).
fn exchange(mut conn: Conn, raw: &[u8], timeout: Duration) -> io::Result<Resp> {
    conn.set_timeout(timeout);
    // The server may answer and close before reading everything (413, 431):
    // a failed write is fine as long as a response can be read.
    let write_error = conn.try_send(raw).err();
    let expect_body = !raw.starts_with(b"HEAD ");
    loop {
        match conn.read_one(expect_body) {
            Ok(resp) if (100..200).contains(&resp.status) => {}
            Ok(resp) => return Ok(resp),
            Err(e) => {
                return Err(match write_error {
                    Some(w) => {
                        io::Error::new(e.kind(), format!("{e} (the write had failed too: {w})"))
                    }
                    None => e,
                });
            }
        }
    }
}

/// Sends `raw` from a second thread while reading the response, for
/// requests the server answers before reading them whole (413, 431): the
/// response is read as it arrives, so neither a blocked write nor the
/// reset that follows the server's close can hide it.
pub fn request_while_sending(addr: SocketAddr, raw: Vec<u8>) -> Resp {
    let mut conn = Conn::open(addr);
    let mut writer = conn.stream().try_clone().expect("clone the socket");
    writer
        .set_write_timeout(Some(Duration::from_secs(10)))
        .expect("write timeout");
    let sender = thread::spawn(move || {
        // The server may close before it has read everything: a failed
        // write is expected here.
        let _ = writer.write_all(&raw);
    });
    let resp = conn.read_response();
    drop(conn);
    let _ = sender.join();
    resp
}

/// Like [`try_request`], from the local address `local_ip`.
pub fn try_request_from(
    local_ip: IpAddr,
    addr: SocketAddr,
    raw: &[u8],
    timeout: Duration,
) -> io::Result<Resp> {
    exchange(Conn::try_open_from(local_ip, addr)?, raw, timeout)
}

/// Like [`request`], from the local address `local_ip`.
///
/// # Panics
/// If nothing complete arrives within 10 s.
pub fn request_from(local_ip: IpAddr, addr: SocketAddr, raw: &[u8]) -> Resp {
    try_request_from(local_ip, addr, raw, RESPONSE_TIMEOUT).unwrap_or_else(|e| {
        panic!(
            "request from {local_ip} to {addr} failed: {e}\nrequest: {:?}",
            String::from_utf8_lossy(raw)
        )
    })
}

/// `application/x-www-form-urlencoded` encoding of `fields`.
pub fn form_body(fields: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish()
}

/// Raw bytes of a keep-alive `POST` with `body` and `content_type`.
pub fn raw_post(path: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Raw bytes of a keep-alive form `POST /swap` of `code`.
pub fn raw_swap(code: &str) -> Vec<u8> {
    raw_post(
        "/swap",
        "application/x-www-form-urlencoded",
        &form_body(&[("code", code)]),
    )
}

/// Raw bytes of a keep-alive `GET`.
pub fn raw_get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").into_bytes()
}

/// Raw bytes of a `GET` that asks for the connection to be closed after
/// the answer.
pub fn raw_get_close(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").into_bytes()
}

/// POSTs `fields` form-encoded, on a fresh connection (`Connection: close`).
pub fn post_form(addr: SocketAddr, path: &str, fields: &[(&str, &str)]) -> Resp {
    post_body(
        addr,
        path,
        "application/x-www-form-urlencoded",
        &form_body(fields),
    )
}

/// POSTs `json` as `application/json`, on a fresh connection.
pub fn post_json(addr: SocketAddr, path: &str, json: &str) -> Resp {
    post_body(addr, path, "application/json", json)
}

/// POSTs `body` with `content_type`, on a fresh connection.
pub fn post_body(addr: SocketAddr, path: &str, content_type: &str, body: &str) -> Resp {
    let raw = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    request(addr, raw.as_bytes())
}

/// GETs `path`, on a fresh connection.
pub fn get(addr: SocketAddr, path: &str) -> Resp {
    let raw = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    request(addr, raw.as_bytes())
}
