//! Helpers for the connection-model and HTTPS tests (`connections`,
//! `https`): loopback client addresses, a rustls client that can also hand over its raw TLS
//! bytes (a ClientHello, one encrypted record) for a test to drip on the
//! socket, and watching a socket for the server's close.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

use super::connect_from;
use super::pki::Pki;

/// Read/write limit of the TLS client.
const TLS_IO_TIMEOUT: Duration = Duration::from_secs(10);

/// `127.0.0.<last>`.
pub fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// Whether the peer still holds `stream` open: nothing to read, no end of
/// stream, no reset.
pub fn held_open(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    let mut byte = [0u8; 1];
    let mut reader = stream;
    let open = matches!(reader.read(&mut byte), Err(e) if e.kind() == ErrorKind::WouldBlock);
    let _ = stream.set_nonblocking(false);
    open
}

/// Reads from `sock` until the peer closes it (end of stream or reset) or
/// `timeout` passes. Returns every byte received and whether it closed.
pub fn read_until_close(sock: &mut TcpStream, timeout: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + timeout;
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (received, false);
        }
        if sock
            .set_read_timeout(Some(left.min(Duration::from_millis(200))))
            .is_err()
        {
            return (received, true);
        }
        match sock.read(&mut chunk) {
            Ok(0) => return (received, true),
            Ok(n) => {
                // Bounded: a runaway peer fails the caller's checks anyway.
                if received.len() < 1024 * 1024 {
                    received.extend_from_slice(&chunk[..n]);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => return (received, true),
        }
    }
}

/// A rustls client configuration trusting `ca.pem` of `pki`, without
/// session resumption (every connection does a full handshake).
pub fn tls_client_config(pki: &Pki) -> Arc<rustls::ClientConfig> {
    tls_client_config_trusting(pki, &["ca.pem"])
}

/// A rustls client configuration trusting the CA certificates `cas` of
/// `pki`, without session resumption.
pub fn tls_client_config_trusting(pki: &Pki, cas: &[&str]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        roots
            .add(pki.der(ca))
            .unwrap_or_else(|e| panic!("{ca} is not a usable root: {e:?}"));
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    // Every connection does a full handshake and sees the certificate the
    // server holds now; a resumed session would carry the one it was made
    // with.
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// A client TLS connection over a blocking socket.
pub type TlsClient = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A fresh rustls client for the server at `addr` (certificate for its IP).
pub fn tls_client(
    config: &Arc<rustls::ClientConfig>,
    addr: SocketAddr,
) -> rustls::ClientConnection {
    rustls::ClientConnection::new(Arc::clone(config), ServerName::IpAddress(addr.ip().into()))
        .expect("a rustls client connection")
}

/// The bytes of the ClientHello a new client for `addr` sends first.
pub fn client_hello(config: &Arc<rustls::ClientConfig>, addr: SocketAddr) -> Vec<u8> {
    let mut client = tls_client(config, addr);
    let mut hello = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut hello).expect("ClientHello");
    }
    hello
}

/// Connects to `addr` from `local` and completes a TLS handshake.
pub fn tls_connect_from(
    local: IpAddr,
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
) -> Result<TlsClient, String> {
    let sock = connect_from(local, addr).map_err(|e| format!("connect: {e}"))?;
    sock.set_nodelay(true)
        .map_err(|e| format!("socket options: {e}"))?;
    tls_handshake(sock, addr, config)
}

/// Connects to `addr` (5 s connect timeout) and completes a TLS handshake.
pub fn tls_connect(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
) -> Result<TlsClient, String> {
    let sock = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    tls_handshake(sock, addr, config)
}

/// Completes a TLS handshake with the server at `addr` on `sock`.
fn tls_handshake(
    sock: TcpStream,
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
) -> Result<TlsClient, String> {
    sock.set_read_timeout(Some(TLS_IO_TIMEOUT))
        .and_then(|()| sock.set_write_timeout(Some(TLS_IO_TIMEOUT)))
        .map_err(|e| format!("socket options: {e}"))?;
    let mut tls = rustls::StreamOwned::new(tls_client(config, addr), sock);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .map_err(|e| format!("handshake: {e}"))?;
    }
    Ok(tls)
}

/// `raw` (plaintext) encrypted by `tls` as it would go on the wire, without
/// sending it: for a test to send the records its own way.
pub fn encrypt(tls: &mut TlsClient, raw: &[u8]) -> Vec<u8> {
    tls.conn
        .writer()
        .write_all(raw)
        .expect("plaintext into rustls");
    let mut wire = Vec::new();
    while tls.conn.wants_write() {
        tls.conn.write_tls(&mut wire).expect("TLS records");
    }
    wire
}

/// A response read over TLS: status, lowercased headers, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsResp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl TlsResp {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `raw` on `tls` and reads one response with a `Content-Length`.
pub fn tls_exchange(tls: &mut TlsClient, raw: &[u8]) -> Result<TlsResp, String> {
    tls.write_all(raw)
        .and_then(|()| tls.flush())
        .map_err(|e| format!("write: {e}"))?;
    tls_read_response(tls)
}

/// Reads one response with a `Content-Length` from `tls`.
pub fn tls_read_response(tls: &mut TlsClient) -> Result<TlsResp, String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return Err("response head over 64 KiB".into());
        }
        match tls.read(&mut chunk) {
            Ok(0) => return Err(format!("closed mid-head after {buf:?}")),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("read: {e}")),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            let (name, value) = l.split_once(':')?;
            Some((name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        })
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .ok_or_else(|| format!("no Content-Length in {head:?}"))?;
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        match tls.read(&mut chunk) {
            Ok(0) => return Err("closed mid-body".into()),
            Ok(n) => body.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    body.truncate(length);
    Ok(TlsResp {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// A new HTTPS connection from `local` asking `GET /health` with
/// `Connection: close`: the answer and how long the whole exchange took,
/// handshake included.
pub fn tls_health_from(
    local: IpAddr,
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
) -> (Result<TlsResp, String>, Duration) {
    let started = Instant::now();
    let outcome = tls_connect_from(local, addr, config).and_then(|mut tls| {
        tls_exchange(
            &mut tls,
            b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        )
    });
    (outcome, started.elapsed())
}
