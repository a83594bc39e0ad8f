//! Built-in HTTPS: certificate loading, hot reload, and the TLS handshake.
//!
//! Uses the rustls that ureq already links (ring provider), so there is no
//! second TLS stack. The certificate and key live behind a [`CertStore`]
//! that `SIGHUP` can swap: new handshakes use the new certificate, and
//! established connections are untouched (certbot/acme.sh renewals). The
//! handshake runs inside the worker under its own deadline, so a stalled
//! handshake cannot pin a worker longer than [`HANDSHAKE_TIMEOUT`].

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, ServerConnection, StreamOwned};

use crate::config::TlsFiles;
use crate::http::Transport;
use crate::http::conn::Context;

/// Time allowed for a TLS handshake, counted from accept.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
// Before the handshake, a silent connection is treated as plain HTTP treats
// one: the same grace under pressure, first look and poll slice.
use crate::http::conn::{FIRST_LOOK, IDLE_UNDER_PRESSURE, POLL_SLICE};

/// The current certificate and key; swapped on reload.
pub struct CertStore {
    current: RwLock<Arc<CertifiedKey>>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // SECURITY: never format the signing key.
        f.write_str("CertStore([certificate and key])")
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

impl CertStore {
    /// Loads the certificate chain and key; any problem is a message naming
    /// the file (never key material).
    pub fn load(files: &TlsFiles) -> Result<CertStore, String> {
        Ok(CertStore {
            current: RwLock::new(Arc::new(load_certified_key(files)?)),
        })
    }

    /// Re-reads the files; on error the old certificate stays in use.
    pub fn reload(&self, files: &TlsFiles) -> Result<(), String> {
        let fresh = Arc::new(load_certified_key(files)?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }
}

fn load_certified_key(files: &TlsFiles) -> Result<CertifiedKey, String> {
    let chain = read_chain(&files.cert)?;
    let key = read_key(&files.key)?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => format!(
            "TLS_KEY_FILE: the key in '{}' does not belong to the certificate in '{}'",
            files.key.display(),
            files.cert.display()
        ),
        _ => format!(
            "TLS_KEY_FILE: '{}' holds no usable private key",
            files.key.display()
        ),
    })
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path)
        .map_err(|e| format!("TLS_CERT_FILE: cannot read '{}': {e}", path.display()))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|_| format!("TLS_CERT_FILE: '{}' is not valid PEM", path.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "TLS_CERT_FILE: '{}' holds no certificate",
            path.display()
        ));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = std::fs::read(path)
        .map_err(|e| format!("TLS_KEY_FILE: cannot read '{}': {e}", path.display()))?;
    // PKCS#8, PKCS#1 (RSA) and SEC1 (EC) keys are all accepted.
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| {
        format!(
            "TLS_KEY_FILE: '{}' holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
            path.display()
        )
    })
}

/// The rustls server configuration around a [`CertStore`]: TLS 1.2 and 1.3,
/// ALPN `http/1.1`.
pub fn server_config(store: Arc<CertStore>) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12]);
    // The ring provider supports both versions; this cannot fail.
    let Ok(builder) = builder else {
        unreachable!("ring supports TLS 1.2 and 1.3");
    };
    let mut config = builder.with_no_client_auth().with_cert_resolver(store);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A TLS connection over a TCP socket.
pub type TlsStream = StreamOwned<ServerConnection, TcpStream>;

impl Transport for TlsStream {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.sock.set_read_timeout(timeout)
    }
    fn set_write_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.sock.set_write_timeout(timeout)
    }
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.conn.send_close_notify();
        // Push the close_notify out; an error here only means the peer left.
        let _ = self.conn.complete_io(&mut self.sock);
        self.sock.shutdown(Shutdown::Write)
    }
}

/// How a handshake attempt ended without a TLS connection.
#[derive(Debug, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The client spoke plain HTTP to the HTTPS port; it was told so.
    PlainHttp,
    /// Timed out, closed, or the TLS protocol failed.
    Failed,
}

/// Runs the handshake with a deadline. A client speaking plain HTTP gets a
/// plain-text 400 JSON answer explaining that this port is HTTPS. A client
/// that sends nothing is given up early when `context` says others are
/// waiting or the server is shutting down.
/// `accepted` is when the connection was accepted: time spent waiting in
/// the queue counts towards both the handshake deadline and the silence.
pub fn accept<C: Context + ?Sized>(
    stream: TcpStream,
    config: &Arc<ServerConfig>,
    context: &C,
    accepted: Instant,
) -> Result<TlsStream, HandshakeFailure> {
    let deadline = accepted + HANDSHAKE_TIMEOUT;
    match first_byte(&stream, deadline, context, accepted) {
        Opening::Silent => return Err(HandshakeFailure::Failed),
        Opening::PlainHttp => {
            tell_plain_http_client(stream);
            return Err(HandshakeFailure::PlainHttp);
        }
        Opening::Tls => {}
    }
    let Ok(conn) = ServerConnection::new(Arc::clone(config)) else {
        return Err(HandshakeFailure::Failed);
    };
    let mut tls = StreamOwned::new(conn, stream);
    while tls.conn.is_handshaking() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero()
            || tls.sock.set_read_timeout(Some(left)).is_err()
            || tls.sock.set_write_timeout(Some(left)).is_err()
        {
            return Err(HandshakeFailure::Failed);
        }
        match tls.conn.complete_io(&mut tls.sock) {
            Ok((0, 0)) if tls.conn.wants_read() => return Err(HandshakeFailure::Failed),
            Ok(_) => {}
            Err(_) => {
                // Send the alert rustls queued (e.g. no shared cipher), if any.
                let _ = tls.conn.write_tls(&mut tls.sock);
                return Err(HandshakeFailure::Failed);
            }
        }
    }
    Ok(tls)
}

/// How a fresh connection opened.
enum Opening {
    /// Something other than an HTTP method: let rustls judge it.
    Tls,
    /// An upper-case letter: the start of a plain-HTTP request line.
    PlainHttp,
    /// Nothing (in time, or before the peer left, or before it had to make
    /// room for others).
    Silent,
}

/// Peeks at the first byte: a TLS record starts with 0x16 (handshake); an
/// HTTP request starts with an upper-case method name.
fn first_byte<C: Context + ?Sized>(
    stream: &TcpStream,
    deadline: Instant,
    context: &C,
    accepted: Instant,
) -> Opening {
    let mut first = [0u8; 1];
    // Never give a connection up as silent before having looked at it once.
    let mut looked = false;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Opening::Silent;
        }
        // SECURITY: a connection that has sent nothing holds a worker. As on
        // plain HTTP (`http::conn`), give it up after a short grace when
        // others are queueing or at shutdown; waiting for the whole
        // handshake deadline let WORKER_THREADS empty connections stall
        // every client for 10 s, and one hold up shutdown as long.
        let grace_over = now.saturating_duration_since(accepted) >= IDLE_UNDER_PRESSURE;
        if looked && grace_over && (context.shutting_down() || context.others_waiting()) {
            return Opening::Silent;
        }
        // Queued past its grace: bytes already sent are seen at once; a
        // silent connection is not worth a whole poll slice.
        let slice = if !looked && grace_over {
            (deadline - now).min(FIRST_LOOK)
        } else {
            (deadline - now).min(POLL_SLICE)
        };
        looked = true;
        if stream.set_read_timeout(Some(slice)).is_err() {
            return Opening::Silent;
        }
        match stream.peek(&mut first) {
            Ok(0) => return Opening::Silent,
            Ok(_) if first[0].is_ascii_uppercase() => return Opening::PlainHttp,
            Ok(_) => return Opening::Tls,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return Opening::Silent,
        }
    }
}

fn tell_plain_http_client(mut stream: TcpStream) {
    let body = br#"{"error":"invalid_request","error_description":"this port speaks HTTPS; use https://"}"#;
    let head = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
    let _ = stream.shutdown(Shutdown::Write);
    // Drain a little of the request so the close is not a reset.
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut sink = [0u8; 4096];
    let _ = stream.read(&mut sink);
}
