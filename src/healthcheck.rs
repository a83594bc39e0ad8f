//! `spotify-token-swap healthcheck`: GET the server's own `/health` and
//! say whether it answered `200`, for a container's health check (a
//! `FROM scratch` image has no curl).
//!
//! It reads the same configuration as the server (so `LISTEN_ADDR`, the
//! `PORT` fallback and `TLS_CERT_FILE` mean the same thing), dials the
//! listen address — loopback when the server listens on every interface —
//! and speaks HTTPS when the server does. One request, one status line
//! read, everything within [`TIMEOUT`].

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};

use crate::config::{Config, Listen};
use crate::tls;

/// The whole check: connecting, the TLS handshake, the request and the
/// status line. Well under the 3 s the shipped `compose.yaml` allows, so
/// the runtime never has to kill it.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(2);
/// The longest status line read (`HTTP/1.1 200 OK` and a reason phrase).
const MAX_STATUS_LINE_BYTES: usize = 256;
/// What is asked for; no `Host` check applies to it.
const REQUEST: &[u8] = b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

/// Checks the server `config` describes: `Ok` when its `/health` answered
/// `200` within [`TIMEOUT`], else what went wrong (one line).
pub fn check_health(config: &Config) -> Result<(), String> {
    let Listen::Addr(listen) = config.listen else {
        return Err("LISTEN_FDS is set: the socket systemd passed has no address to dial".into());
    };
    let deadline = Instant::now() + TIMEOUT;
    let mut last_error = String::new();
    for addr in dial_addrs(listen) {
        match connect(addr, deadline) {
            Ok(stream) => {
                let status = match (&config.tls, &config.acme) {
                    (Some(files), _) => tls_exchange(stream, &files.cert, deadline),
                    (None, Some(acme)) => acme_exchange(stream, acme, deadline),
                    (None, None) => exchange(stream, deadline),
                }
                .map_err(|e| match e.kind() {
                    // SO_RCVTIMEO and SO_SNDTIMEO run out as EAGAIN.
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                        format!("{addr}: no answer within {TIMEOUT:?}")
                    }
                    _ => format!("{addr}: {e}"),
                })?;
                return if status.starts_with("HTTP/1.1 200 ") {
                    Ok(())
                } else {
                    Err(format!("{addr}: GET /health answered '{status}'"))
                };
            }
            Err(e) => last_error = format!("cannot connect to {addr}: {e}"),
        }
    }
    Err(last_error)
}

/// Where to reach a server listening on `listen`. An unspecified address
/// (`0.0.0.0`, `[::]`) is every interface, loopback included; `[::]` also
/// takes IPv4 unless `net.ipv6.bindv6only` is set, and `::1` may be missing
/// where IPv6 is disabled, so both loopbacks are tried, `::1` first.
fn dial_addrs(listen: SocketAddr) -> Vec<SocketAddr> {
    let port = listen.port();
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            vec![SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port)]
        }
        IpAddr::V6(ip) if ip.is_unspecified() => vec![
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port),
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port),
        ],
        _ => vec![listen],
    }
}

/// What is left until `deadline`, or a timeout error once it has passed.
fn remaining(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer within {TIMEOUT:?}"),
        ))
    } else {
        Ok(left)
    }
}

fn connect(addr: SocketAddr, deadline: Instant) -> io::Result<TcpStream> {
    TcpStream::connect_timeout(&addr, remaining(deadline)?)
}

/// Sends [`REQUEST`] on `stream` and returns the answer's status line.
/// Each read and write may take only what is left until `deadline` (set on
/// `socket`, the descriptor under `stream`), so a server that stops
/// answering is given up on soon after it.
fn request<S: Read + Write>(
    mut stream: S,
    socket: &TcpStream,
    deadline: Instant,
) -> io::Result<String> {
    // Over TLS the first write runs the handshake, which reads too.
    socket.set_read_timeout(Some(remaining(deadline)?))?;
    socket.set_write_timeout(Some(remaining(deadline)?))?;
    stream.write_all(REQUEST)?;
    stream.flush()?;
    let mut answer = Vec::with_capacity(MAX_STATUS_LINE_BYTES);
    let mut chunk = [0; MAX_STATUS_LINE_BYTES];
    while !answer.contains(&b'\n') && answer.len() < MAX_STATUS_LINE_BYTES {
        socket.set_read_timeout(Some(remaining(deadline)?))?;
        match stream.read(&mut chunk)? {
            0 => break,
            n => answer.extend_from_slice(&chunk[..n]),
        }
    }
    let line = answer.split(|&b| b == b'\n').next().unwrap_or_default();
    if line.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection without an answer",
        ));
    }
    // Shown in the error: printable ASCII only, whatever answered.
    Ok(line
        .iter()
        .take(MAX_STATUS_LINE_BYTES)
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '?'
            }
        })
        .collect::<String>()
        .trim_end_matches('?')
        .to_owned())
}

fn exchange(stream: TcpStream, deadline: Instant) -> io::Result<String> {
    let socket = stream.try_clone()?;
    request(stream, &socket, deadline)
}

/// [`exchange`] over TLS, accepting only the certificate `TLS_CERT_FILE`
/// holds.
fn tls_exchange(
    stream: TcpStream,
    cert_file: &std::path::Path,
    deadline: Instant,
) -> io::Result<String> {
    let expected = tls::read_chain(cert_file)
        .map_err(io::Error::other)?
        .swap_remove(0);
    let provider = rustls::crypto::ring::default_provider();
    let verifier = OwnCertificate {
        expected,
        algorithms: provider.signature_verification_algorithms,
    };
    let config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    // An IP address: no SNI is sent, and the name is not what is checked.
    let name = ServerName::IpAddress(stream.peer_addr()?.ip().into());
    let connection = ClientConnection::new(Arc::new(config), name).map_err(io::Error::other)?;
    let socket = stream.try_clone()?;
    request(StreamOwned::new(connection, stream), &socket, deadline)
}

/// [`tls_exchange`] pinned to the certificate ACME stored.
fn acme_exchange(
    stream: TcpStream,
    acme: &crate::config::AcmeConfig,
    deadline: Instant,
) -> io::Result<String> {
    let file = crate::acme::certificate_file(&acme.state_dir, &acme.directory_url);
    if !file.exists() {
        return Err(io::Error::other(format!(
            "no certificate from ACME yet (none in '{}')",
            file.display()
        )));
    }
    tls_exchange(stream, &file, deadline)
}

/// Accepts exactly the server's own certificate.
///
/// SECURITY: the dialled address is loopback and the server's name is not
/// known here, so a name check cannot apply; pinning the end-entity
/// certificate of `TLS_CERT_FILE` (with the handshake's signature checked
/// against it) still proves the answer came from whoever holds its key.
/// Nothing secret is sent either way. A certificate replaced on disk
/// without a `SIGHUP` reads as unhealthy until the server reloads it.
#[derive(Debug)]
struct OwnCertificate {
    expected: CertificateDer<'static>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for OwnCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.expected.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the server's certificate is not the one in TLS_CERT_FILE".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("a socket address")
    }

    #[test]
    fn every_interface_is_dialled_on_loopback() {
        assert_eq!(dial_addrs(addr("0.0.0.0:8080")), [addr("127.0.0.1:8080")]);
        assert_eq!(
            dial_addrs(addr("[::]:8080")),
            [addr("[::1]:8080"), addr("127.0.0.1:8080")]
        );
    }

    #[test]
    fn a_named_address_is_dialled_as_it_is() {
        for listen in [
            "127.0.0.1:8080",
            "192.0.2.7:443",
            "[::1]:8080",
            "[2001:db8::1]:80",
        ] {
            assert_eq!(dial_addrs(addr(listen)), [addr(listen)]);
        }
    }
}
