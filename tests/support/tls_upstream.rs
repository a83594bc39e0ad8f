//! An HTTPS stand-in for Spotify's accounts service, for the tests of the
//! server's upstream TLS connections (`tests/upstream_tls.rs`).
//!
//! [`TlsUpstream::start`] binds `127.0.0.1:0` and terminates TLS with rustls
//! (ring), serving a certificate from [`Pki`], with rustls's server defaults:
//! TLS 1.2 and 1.3, an in-memory session cache of 256 sessions (TLS 1.2
//! session ids, TLS 1.3 stateful tickets) and two TLS 1.3 tickets per
//! connection. Every accepted connection is recorded ([`TlsConnection`]):
//! whether its handshake was full or resumed, with which TLS version, or why
//! it failed, and whether it has ended.
//!
//! It answers `POST /api/token` itself with a fixed token JSON (keep-alive,
//! one thread per connection), after checking what the server sends:
//! `Authorization: Basic` of [`CLIENT_ID`]:[`CLIENT_SECRET`] (else 401
//! `invalid_client`), a form body, `grant_type=authorization_code` with a
//! `code` and [`REDIRECT_URI`], or `grant_type=refresh_token` (else 400).
//! The tokens name the code (`access-<code>`, `refresh-<code>`), so a test
//! can tell which answer it got. [`TlsUpstream::close_after_next_answer`]
//! makes it close a connection after answering, the way a server at its
//! keep-alive limit, a reload or an idle timeout does.
//!
//! Every read and handshake is bounded, and every wait polls a stop flag;
//! dropping the upstream stops it.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustls::{
    HandshakeKind, ProtocolVersion, ServerConfig, ServerConnection, StreamOwned,
    SupportedProtocolVersion,
};
use serde_json::json;

use super::mock::reason_phrase;
use super::pki::Pki;
use super::{CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, lock};

/// Socket read timeout: blocking reads wake this often to notice a stop.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// A TLS handshake that takes longer than this fails.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that sends nothing for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest time spent writing to a peer that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a closing connection waits for the peer's FIN, so unread input
/// does not turn the close into a reset.
const LINGER_ON_CLOSE: Duration = Duration::from_millis(200);
/// Largest request head read.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest request body read.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// How often waiting loops look again.
const WAIT_INTERVAL: Duration = Duration::from_millis(5);

/// How [`TlsUpstream::close_after_next_answer`] closes the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Close {
    /// Answer with `Connection: close`, then close: a server at its
    /// keep-alive request limit.
    Announced,
    /// Answer as if the connection stayed open, then close it at once
    /// (`close_notify`, FIN): what an idle timeout or a reload does to a
    /// connection the client keeps in its pool.
    Unannounced,
}

/// A completed handshake.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Handshake {
    /// Full or resumed.
    pub kind: HandshakeKind,
    /// The negotiated TLS version.
    pub version: ProtocolVersion,
}

/// One accepted TCP connection.
#[derive(Clone, Debug)]
pub struct TlsConnection {
    /// 0, 1, 2… in order of acceptance.
    pub id: usize,
    /// `None` while the handshake runs; then the handshake or its error.
    pub handshake: Option<Result<Handshake, String>>,
    /// The upstream closed it (after [`TlsUpstream::close_after_next_answer`]
    /// or on bad input); the FIN has been sent.
    pub closed_by_upstream: bool,
    /// Its thread has finished: closed by either side.
    pub ended: bool,
}

/// One request read on a connection, and the status it was answered with.
#[derive(Clone, Debug)]
pub struct UpstreamRequest {
    /// [`TlsConnection::id`] of the connection it arrived on.
    pub connection: usize,
    pub method: String,
    pub path: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The form fields of the body.
    pub fields: Vec<(String, String)>,
    /// The status of the answer.
    pub status: u16,
}

impl UpstreamRequest {
    /// The first value of form field `name`.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

struct Shared {
    stop: AtomicBool,
    config: Arc<ServerConfig>,
    basic_auth: String,
    connections: Mutex<Vec<TlsConnection>>,
    requests: Mutex<Vec<UpstreamRequest>>,
    closes: Mutex<VecDeque<Close>>,
    handlers: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn update(&self, id: usize, change: impl FnOnce(&mut TlsConnection)) {
        if let Some(conn) = lock(&self.connections).get_mut(id) {
            change(conn);
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// The HTTPS upstream. Dropping it stops it.
pub struct TlsUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl TlsUpstream {
    /// Serves `<cert>.pem` / `<cert>.key` of `pki` with TLS 1.2 and 1.3.
    ///
    /// # Panics
    /// If the certificate or key is unusable or the port cannot be bound.
    pub fn start(pki: &Pki, cert: &str) -> TlsUpstream {
        TlsUpstream::start_with_versions(pki, cert, rustls::ALL_VERSIONS)
    }

    /// Like [`TlsUpstream::start`], offering only `versions`.
    pub fn start_with_versions(
        pki: &Pki,
        cert: &str,
        versions: &[&'static SupportedProtocolVersion],
    ) -> TlsUpstream {
        let config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(versions)
                .expect("ring supports TLS 1.2 and 1.3")
                .with_no_client_auth()
                .with_single_cert(
                    pki.chain(&format!("{cert}.pem")),
                    pki.key(&format!("{cert}.key")),
                )
                .unwrap_or_else(|e| panic!("{cert}.pem and {cert}.key are not a usable pair: {e}"));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            config: Arc::new(config),
            basic_auth: format!(
                "Basic {}",
                STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
            ),
            connections: Mutex::new(Vec::new()),
            requests: Mutex::new(Vec::new()),
            closes: Mutex::new(VecDeque::new()),
            handlers: Mutex::new(Vec::new()),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::spawn(move || accept_loop(&listener, &shared))
        };
        TlsUpstream {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// `https://127.0.0.1:PORT`, for `SPOTIFY_ACCOUNTS_URL`.
    pub fn base_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Every connection accepted so far, in order.
    pub fn connections(&self) -> Vec<TlsConnection> {
        lock(&self.shared.connections).clone()
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<UpstreamRequest> {
        lock(&self.shared.requests).clone()
    }

    /// The next request answered (on any connection) closes its connection
    /// after the answer, the way `how` says. Calls queue up.
    pub fn close_after_next_answer(&self, how: Close) {
        lock(&self.shared.closes).push_back(how);
    }

    /// Waits up to `timeout` until connection `id` has been closed by the
    /// upstream or has ended; false on timeout.
    pub fn wait_closed(&self, id: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let closed = lock(&self.shared.connections)
                .get(id)
                .is_some_and(|c| c.closed_by_upstream || c.ended);
            if closed {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(WAIT_INTERVAL);
        }
    }

    /// Waits up to `timeout` until connection `id` has a handshake outcome;
    /// the connection, or `None` on timeout.
    pub fn wait_handshake(&self, id: usize, timeout: Duration) -> Option<TlsConnection> {
        let deadline = Instant::now() + timeout;
        loop {
            let conn = lock(&self.shared.connections).get(id).cloned();
            if let Some(conn) = conn.filter(|c| c.handshake.is_some()) {
                return Some(conn);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(WAIT_INTERVAL);
        }
    }
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let handlers = std::mem::take(&mut *lock(&self.shared.handlers));
        for handler in handlers {
            let _ = handler.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    while !shared.stopping() {
        match listener.accept() {
            Ok((sock, _)) => {
                let id = {
                    let mut connections = lock(&shared.connections);
                    let id = connections.len();
                    connections.push(TlsConnection {
                        id,
                        handshake: None,
                        closed_by_upstream: false,
                        ended: false,
                    });
                    id
                };
                let handler = {
                    let shared = Arc::clone(shared);
                    thread::spawn(move || {
                        serve(&shared, sock, id);
                        shared.update(id, |c| c.ended = true);
                    })
                };
                lock(&shared.handlers).push(handler);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(WAIT_INTERVAL),
            Err(_) => thread::sleep(WAIT_INTERVAL),
        }
    }
}

type Tls = StreamOwned<ServerConnection, TcpStream>;

fn serve(shared: &Shared, sock: TcpStream, id: usize) {
    let setup = sock
        .set_nonblocking(false)
        .and_then(|()| sock.set_read_timeout(Some(POLL_INTERVAL)))
        .and_then(|()| sock.set_write_timeout(Some(WRITE_TIMEOUT)))
        .and_then(|()| sock.set_nodelay(true));
    let conn = match setup
        .map_err(|e| e.to_string())
        .and_then(|()| ServerConnection::new(Arc::clone(&shared.config)).map_err(|e| e.to_string()))
    {
        Ok(conn) => conn,
        Err(e) => {
            shared.update(id, |c| c.handshake = Some(Err(e)));
            return;
        }
    };
    let mut tls = StreamOwned::new(conn, sock);
    let handshake = handshake(shared, &mut tls);
    let ok = handshake.is_ok();
    shared.update(id, |c| c.handshake = Some(handshake));
    if !ok {
        return;
    }
    let mut buf = Vec::new();
    loop {
        let Some(request) = read_request(shared, &mut tls, &mut buf) else {
            return;
        };
        let request = match request {
            Ok(request) => request,
            Err(status) => {
                let body = json!({ "error": "invalid_request" }).to_string();
                let _ = write_response(&mut tls, status, &body, true);
                close(shared, &mut tls, id);
                return;
            }
        };
        let (status, body) = answer(shared, &request);
        let how = lock(&shared.closes).pop_front();
        let wants_close = request
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let announce_close = wants_close || how == Some(Close::Announced);
        lock(&shared.requests).push(UpstreamRequest {
            connection: id,
            method: request.method.clone(),
            path: request.path.clone(),
            authorization: request.header("authorization").map(str::to_owned),
            fields: request.fields(),
            status,
        });
        let body = if request.method == "HEAD" {
            String::new()
        } else {
            body
        };
        if write_response(&mut tls, status, &body, announce_close).is_err() {
            return;
        }
        if how.is_some() || wants_close {
            close(shared, &mut tls, id);
            return;
        }
    }
}

/// Runs the handshake to its end, within [`HANDSHAKE_TIMEOUT`].
fn handshake(shared: &Shared, tls: &mut Tls) -> Result<Handshake, String> {
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    while tls.conn.is_handshaking() {
        match tls.conn.complete_io(&mut tls.sock) {
            Ok((0, 0)) => return Err("no progress: the peer went away".into()),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                if shared.stopping() || Instant::now() >= deadline {
                    return Err(format!("handshake timed out: {e}"));
                }
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(Handshake {
        kind: tls.conn.handshake_kind().ok_or("no handshake kind")?,
        version: tls.conn.protocol_version().ok_or("no TLS version")?,
    })
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn fields(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(&self.body).into_owned().collect()
    }
}

/// Reads one request from `tls` (bytes left over stay in `buf`). `None`
/// when the peer has gone, the connection was idle too long or the upstream
/// is stopping; `Some(Err(status))` for a request to refuse.
fn read_request(shared: &Shared, tls: &mut Tls, buf: &mut Vec<u8>) -> Option<Result<Request, u16>> {
    let idle_deadline = Instant::now() + IDLE_TIMEOUT;
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let method = parsed.method.unwrap_or_default().to_owned();
                let path = parsed.path.unwrap_or_default().to_owned();
                let headers: Vec<(String, String)> = parsed
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_owned(),
                            String::from_utf8_lossy(h.value).trim().to_owned(),
                        )
                    })
                    .collect();
                let mut request = Request {
                    method,
                    path,
                    headers,
                    body: Vec::new(),
                };
                if request.header("transfer-encoding").is_some() {
                    // The server sends Content-Length; nothing else is expected.
                    return Some(Err(501));
                }
                let Some(length) = request
                    .header("content-length")
                    .map_or(Some(0), |v| v.parse::<usize>().ok())
                    .filter(|&n| n <= MAX_BODY_BYTES)
                else {
                    return Some(Err(400));
                };
                buf.drain(..head_len);
                while buf.len() < length {
                    if !read_more(shared, tls, buf, &mut chunk, idle_deadline) {
                        return None;
                    }
                }
                request.body = buf.drain(..length).collect();
                return Some(Ok(request));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD_BYTES => {
                if !read_more(shared, tls, buf, &mut chunk, idle_deadline) {
                    return None;
                }
            }
            Ok(httparse::Status::Partial) => return Some(Err(431)),
            Err(_) => return Some(Err(400)),
        }
    }
}

/// Appends what `tls` has to `buf`; false once the peer has closed, an
/// error happened, `deadline` passed or the upstream is stopping.
fn read_more(
    shared: &Shared,
    tls: &mut Tls,
    buf: &mut Vec<u8>,
    chunk: &mut [u8],
    deadline: Instant,
) -> bool {
    loop {
        match tls.read(chunk) {
            Ok(0) => return false,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return true;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                if shared.stopping() || Instant::now() >= deadline {
                    return false;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// The status and JSON body for `request`.
fn answer(shared: &Shared, request: &Request) -> (u16, String) {
    let error = |status: u16, error: &str, description: &str| {
        let body = json!({ "error": error, "error_description": description });
        (status, body.to_string())
    };
    if request.path != "/api/token" {
        return error(404, "not_found", "no such endpoint");
    }
    if request.method == "HEAD" {
        return (405, String::new());
    }
    if request.method != "POST" {
        return error(405, "invalid_request", "POST only");
    }
    if request.header("authorization") != Some(shared.basic_auth.as_str()) {
        return error(401, "invalid_client", "Invalid client");
    }
    if request.header("content-type") != Some("application/x-www-form-urlencoded") {
        return error(400, "invalid_request", "not a form body");
    }
    let fields = request.fields();
    let field = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let subject = match field("grant_type") {
        Some("authorization_code") => {
            if field("redirect_uri") != Some(REDIRECT_URI) {
                return error(400, "invalid_grant", "Invalid redirect URI");
            }
            match field("code") {
                Some(code) if !code.is_empty() => code,
                _ => return error(400, "invalid_request", "code must be supplied"),
            }
        }
        Some("refresh_token") => match field("refresh_token") {
            Some(token) if !token.is_empty() => token,
            _ => return error(400, "invalid_request", "refresh_token must be supplied"),
        },
        _ => return error(400, "unsupported_grant_type", "grant_type"),
    };
    let body = json!({
        "access_token": format!("access-{subject}"),
        "token_type": "Bearer",
        "expires_in": 3600,
        "scope": "user-read-private",
        "refresh_token": format!("refresh-{subject}"),
    });
    (200, body.to_string())
}

fn write_response(tls: &mut Tls, status: u16, body: &str, close: bool) -> io::Result<()> {
    let reason = reason_phrase(status);
    let connection = if close { "close" } else { "keep-alive" };
    let allow = if status == 405 { "Allow: POST\r\n" } else { "" };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: {connection}\r\n{allow}\r\n{body}",
        body.len()
    );
    tls.write_all(response.as_bytes())?;
    tls.flush()
}

/// Sends `close_notify` and a FIN, records the close, then waits a moment
/// for the peer's FIN.
fn close(shared: &Shared, tls: &mut Tls, id: usize) {
    tls.conn.send_close_notify();
    let _ = tls.conn.complete_io(&mut tls.sock);
    let _ = tls.sock.shutdown(Shutdown::Write);
    shared.update(id, |c| c.closed_by_upstream = true);
    let deadline = Instant::now() + LINGER_ON_CLOSE;
    let mut sink = [0u8; 1024];
    while Instant::now() < deadline {
        match tls.sock.read(&mut sink) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {}
            Err(_) => return,
        }
    }
}
