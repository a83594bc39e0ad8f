//! The bytes under HTTP: a plain TCP stream, or TLS through rustls'
//! sans-I/O API — ciphertext in with `read_tls`, `process_new_packets`
//! decrypts, plaintext comes out of `reader()`; answers go in through
//! `writer()` and out with `write_tls`. The handshake advances in the same
//! non-blocking steps, on a worker; nothing here ever waits for the peer.
//!
//! What rustls takes in is metered ([`super::intake`]): at most 16 KiB of
//! handshake, and after it a bounded amount of records not complete yet.
//!
//! On a TLS port the first byte decides: a TLS record starts with 0x16, an
//! upper-case letter is a plain-HTTP request line. SECURITY: a TLS port
//! never writes plaintext, except the one answer telling such a client to
//! use HTTPS.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use rustls::{ServerConfig, ServerConnection};

use super::intake::{Intake, Metered};
use super::limits::MAX_UNSENT_BYTES;

/// Bytes read per call while discarding what a client still sends.
pub(crate) const DISCARD_CHUNK_BYTES: usize = 4096;

/// How a non-blocking read ended.
pub(crate) enum Received {
    /// Bytes were added.
    Data,
    /// Nothing there now.
    Nothing,
    /// The peer is gone (end of stream, a reset, a TLS failure).
    Closed,
}

/// What the first byte on a TLS port said.
pub(crate) enum Opening {
    /// A TLS record: the handshake has begun.
    Tls,
    /// A plain-HTTP request on the TLS port; the transport is now plain,
    /// for the one answer that says to use HTTPS.
    Plaintext,
    /// Nothing has arrived yet.
    NotYet,
    /// The peer is gone, or TLS could not start.
    Closed,
}

enum Kind {
    Plain,
    /// A TLS port, before the first byte said whether it is TLS.
    TlsPort(Arc<ServerConfig>),
    Tls(Box<ServerConnection>),
}

/// A connection's stream and what is layered on it.
pub(crate) struct Transport {
    stream: TcpStream,
    kind: Kind,
    /// Plain: answer bytes the socket has not taken yet.
    output: Vec<u8>,
    written: usize,
    /// A write failed: the peer is gone.
    broken: bool,
    /// TLS: what the peer has had rustls take in, for its caps.
    intake: Intake,
    /// The kernel holds [`MAX_UNSENT_BYTES`] or more of our answers unsent:
    /// answer no more until they go.
    backlogged: bool,
}

impl Transport {
    /// A freshly accepted stream (already non-blocking); `tls`: on a TLS
    /// port.
    pub(crate) fn new(stream: TcpStream, tls: Option<&Arc<ServerConfig>>) -> Transport {
        Transport {
            stream,
            kind: match tls {
                None => Kind::Plain,
                Some(config) => Kind::TlsPort(Arc::clone(config)),
            },
            output: Vec::new(),
            written: 0,
            broken: false,
            intake: Intake::default(),
            backlogged: false,
        }
    }

    /// The socket, for registering with the poller.
    pub(crate) fn socket(&self) -> &TcpStream {
        &self.stream
    }

    /// Plain HTTP (from the start, or after plaintext on a TLS port).
    pub(crate) fn is_plain(&self) -> bool {
        matches!(self.kind, Kind::Plain)
    }

    /// A TLS port whose first byte has not arrived yet.
    pub(crate) fn is_undecided(&self) -> bool {
        matches!(self.kind, Kind::TlsPort(_))
    }

    /// TLS whose handshake is over.
    pub(crate) fn handshake_done(&self) -> bool {
        matches!(&self.kind, Kind::Tls(tls) if !tls.is_handshaking())
    }

    /// Whether output waits for room in the socket (or for the kernel to
    /// send what it holds).
    pub(crate) fn wants_write(&self) -> bool {
        self.backlogged
            || match &self.kind {
                Kind::Tls(tls) => tls.wants_write(),
                _ => self.written < self.output.len(),
            }
    }

    /// Whether [`Transport::flush`] has something to do (or to report).
    pub(crate) fn needs_flush(&self) -> bool {
        self.wants_write() || self.broken
    }

    /// Whether the peer has sent bytes not read yet.
    pub(crate) fn has_unread_bytes(&self) -> bool {
        let mut first = [0u8; 1];
        matches!(self.stream.peek(&mut first), Ok(n) if n > 0)
    }

    /// On a TLS port whose first byte has not come yet, looks at it
    /// (without taking it); `None` on any other transport.
    pub(crate) fn open(&mut self) -> Option<Opening> {
        let Kind::TlsPort(config) = &self.kind else {
            return None;
        };
        let mut first = [0u8; 1];
        let opened = loop {
            match self.stream.peek(&mut first) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        Some(match opened {
            Ok(0) => Opening::Closed,
            Ok(_) if first[0].is_ascii_uppercase() => {
                self.kind = Kind::Plain;
                Opening::Plaintext
            }
            Ok(_) => match ServerConnection::new(Arc::clone(config)) {
                Ok(tls) => {
                    self.kind = Kind::Tls(Box::new(tls));
                    Opening::Tls
                }
                Err(_) => Opening::Closed,
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Opening::NotYet,
            Err(_) => Opening::Closed,
        })
    }

    /// Hands `bytes` over for sending: plain bytes are written at once as
    /// far as the socket takes them, the rest kept; TLS encrypts them into
    /// rustls' queue, written by [`Transport::flush`].
    pub(crate) fn queue(&mut self, bytes: &[u8]) {
        match &mut self.kind {
            Kind::Tls(tls) => {
                if tls.writer().write_all(bytes).is_err() {
                    self.broken = true;
                }
            }
            _ if self.written == self.output.len() => {
                self.output.clear();
                self.written = 0;
                let taken = match write_some(&mut self.stream, bytes) {
                    Ok(n) => n,
                    Err(_) => {
                        self.broken = true;
                        return;
                    }
                };
                self.output.extend_from_slice(&bytes[taken..]);
                self.backlogged = unsent_bytes(&self.stream) >= MAX_UNSENT_BYTES;
            }
            _ => self.output.extend_from_slice(bytes),
        }
    }

    /// Writes pending output as far as the socket takes it: `Ok(true)` when
    /// all of it is out, and the kernel holds less than [`MAX_UNSENT_BYTES`]
    /// of it unsent.
    pub(crate) fn flush(&mut self) -> io::Result<bool> {
        if self.broken {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        match &mut self.kind {
            Kind::Tls(tls) => {
                while tls.wants_write() {
                    match tls.write_tls(&mut self.stream) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            _ => {
                while self.written < self.output.len() {
                    match write_some(&mut self.stream, &self.output[self.written..])? {
                        0 => return Ok(false),
                        n => self.written += n,
                    }
                }
                self.output = Vec::new();
                self.written = 0;
            }
        }
        // SECURITY: a peer that does not read our answers gets no more of
        // them made while the kernel holds these (see MAX_UNSENT_BYTES).
        self.backlogged = unsent_bytes(&self.stream) >= MAX_UNSENT_BYTES;
        Ok(!self.backlogged)
    }

    /// Reads what is there into `space`, without waiting. TLS: plaintext
    /// rustls already holds comes first; then ciphertext from the socket
    /// is decrypted (or advances the handshake), as much as the peer's caps
    /// allow with `held` bytes of requests not complete yet kept by the
    /// connection; a peer over them is refused (`Closed`).
    pub(crate) fn receive(&mut self, space: &mut [u8], held: usize) -> (Received, usize) {
        if space.is_empty() {
            // Cannot happen: a head stops at MAX_HEAD_BYTES and a body is
            // taken out of the buffer as it arrives.
            return (Received::Closed, 0);
        }
        let Kind::Tls(tls) = &mut self.kind else {
            return match read_some(&mut self.stream, space) {
                Ok(Some(0)) | Err(_) => (Received::Closed, 0),
                Ok(Some(n)) => (Received::Data, n),
                Ok(None) => (Received::Nothing, 0),
            };
        };
        loop {
            match tls.reader().read(space) {
                // close_notify.
                Ok(0) => return (Received::Closed, 0),
                Ok(n) => return (Received::Data, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return (Received::Closed, 0),
            }
            let handshaking = tls.is_handshaking();
            let allowance = self.intake.allowance(handshaking, held);
            if allowance == 0 {
                // SECURITY: a ClientHello over 16 KiB, or more bytes sent
                // ahead of our answers than a connection may make us hold.
                log::debug!("TLS peer over its cap of buffered bytes: closed");
                return (Received::Closed, 0);
            }
            let mut metered = Metered {
                inner: &mut self.stream,
                intake: &mut self.intake,
                allowance,
                handshaking,
            };
            match tls.read_tls(&mut metered) {
                Ok(0) => return (Received::Closed, 0),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return (Received::Nothing, 0);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return (Received::Closed, 0),
            }
            if tls.process_new_packets().is_err() {
                // Send the alert rustls queued (e.g. no shared cipher).
                let _ = tls.write_tls(&mut self.stream);
                return (Received::Closed, 0);
            }
            if tls.wants_write() && tls.is_handshaking() {
                // A flight of the handshake to send: back to the turn,
                // which writes it before it waits for the peer. What
                // rustls queues as the handshake ends (TLS 1.3 session
                // tickets) waits instead for the answer to a request that
                // came with the client's Finished, read next, to go out
                // with it in one write.
                return (Received::Data, 0);
            }
        }
    }

    /// Closes for writing, after a TLS close_notify; whether that worked
    /// (the output is all out and the FIN sent).
    pub(crate) fn close_for_writing(&mut self) -> bool {
        if let Kind::Tls(tls) = &mut self.kind {
            tls.send_close_notify();
            if !matches!(self.flush(), Ok(true)) {
                return false;
            }
        }
        self.stream.shutdown(Shutdown::Write).is_ok()
    }

    /// Reads and discards what the socket holds, as bytes on the wire
    /// (ciphertext on TLS): `Some(0)` at end of stream, `None` if nothing
    /// is there.
    pub(crate) fn discard(&mut self, sink: &mut [u8]) -> io::Result<Option<usize>> {
        read_some(&mut self.stream, sink)
    }
}

/// Bytes the kernel holds for `stream` that it has not sent yet (0 if it
/// cannot say).
fn unsent_bytes(stream: &TcpStream) -> usize {
    let mut unsent: libc::c_int = 0;
    // SAFETY: SIOCOUTQNSD writes one c_int into `unsent`, which lives for
    // the call, for the descriptor of a socket we own.
    let rc = unsafe { libc::ioctl(stream.as_raw_fd(), libc::SIOCOUTQNSD as _, &raw mut unsent) };
    if rc == 0 {
        usize::try_from(unsent).unwrap_or(0)
    } else {
        0
    }
}

/// One non-blocking write: how much the socket took (0: full).
pub(crate) fn write_some(stream: &mut TcpStream, bytes: &[u8]) -> io::Result<usize> {
    loop {
        match stream.write(bytes) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// One non-blocking read: `Some(0)` at end of stream, `None` if nothing
/// is there.
pub(crate) fn read_some(stream: &mut TcpStream, space: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        match stream.read(space) {
            Ok(n) => return Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}
