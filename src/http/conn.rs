//! One connection's state, and what a worker does with it in one turn:
//! take in the bytes that are there, answer every complete request, and
//! say what the connection waits for next.
//!
//! Nothing here blocks on the peer. Reads and writes are non-blocking; a
//! connection that needs more bytes, or has output the socket would not
//! take, goes back to the poller with its partial state and the deadline
//! of its phase, and the poller enforces that deadline. Between turns a
//! connection keeps only what is unfinished: the unparsed bytes of a
//! request in progress, a body being decoded, unwritten output — an idle
//! keep-alive connection holds no buffer. The worker's read and write
//! buffers are reused from turn to turn.
//!
//! TLS is a transport of this same loop, through rustls' sans-I/O API:
//! ciphertext in with `read_tls`, `process_new_packets` decrypts, plaintext
//! comes out of `reader()`; answers go in through `writer()` and out with
//! `write_tls`. The handshake advances in the same steps, on a worker.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::{ServerConfig, ServerConnection};

use super::chunked::ChunkedDecoder;
use super::epoll::{PEER_CLOSED, READABLE, WRITABLE};
use super::server::ClientSlot;
use super::{
    BODY_TIMEOUT, HEAD_TIMEOUT, Handler, KEEP_ALIVE_IDLE, MAX_BODY_BYTES, MAX_HEAD_BYTES,
    MAX_HEADERS, Record, Request, Response, reason,
};
use crate::error::Error;
use crate::tls::HANDSHAKE_TIMEOUT;

/// Size of a worker's read buffer: one full head plus room for what a
/// pipelining client sends behind it.
pub(crate) const READ_BUFFER_BYTES: usize = 16 * 1024;
/// After a server-side close, read and discard at most this much of what the
/// client still sends, so the kernel does not reset the connection before
/// the client has read our response.
const LINGER_BYTES: usize = 64 * 1024;
/// … and for at most this long.
pub(crate) const LINGER_TIME: Duration = Duration::from_millis(500);
/// Time allowed for the rest of an answer the socket did not take at once.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests one connection may have answered in one turn before it goes to
/// the back of the queue, so a pipelining client cannot keep a worker.
const REQUESTS_PER_TURN: usize = 32;
/// Reads one connection may make in one turn: a peer that keeps bytes
/// coming without completing a request (empty TLS records, handshake
/// messages) goes back to the poller, which holds it to its deadline.
const READS_PER_TURN: usize = 64;

/// A worker's reusable buffers, allocated when it serves its first
/// connection.
#[derive(Default)]
pub(crate) struct Buffers {
    read: Box<[u8]>,
    write: Vec<u8>,
}

/// What the rest of the server tells a connection about itself.
pub(crate) struct Env<'a, H: ?Sized> {
    pub(crate) handler: &'a H,
    pub(crate) shutting_down: bool,
    pub(crate) trusted_proxies: &'a [IpAddr],
}

/// Where a connection stands between turns; each phase has its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Accepted (or just past its TLS handshake), no request byte yet.
    Fresh,
    /// TLS handshake under way.
    Handshake,
    /// Between keep-alive requests.
    Idle,
    /// Part of a request head is in.
    Head,
    /// The head is in, part of the body.
    Body,
    /// An answer is partly written.
    Writing,
    /// Closed for writing; draining what the client still sends.
    Lingering,
}

/// What a connection needs after a worker's turn.
pub(crate) enum Next {
    /// Bytes from the peer, or room to write: back to the poller.
    Wait,
    /// Already holds input to work on: back to the queue.
    Ready,
    /// Nothing more: close it.
    Close,
}

/// The transport under the HTTP bytes.
enum Transport {
    Plain,
    /// A TLS port, before the first byte said whether it is TLS.
    TlsPort(Arc<ServerConfig>),
    Tls(Box<ServerConnection>),
}

/// A request whose head is in and whose body is not complete yet.
struct Pending {
    head: Head,
    body: Vec<u8>,
    /// For a chunked body; else the body is `Content-Length` bytes.
    chunked: Option<ChunkedDecoder>,
    started: Instant,
}

/// One client connection.
pub(crate) struct Conn {
    stream: TcpStream,
    peer: IpAddr,
    transport: Transport,
    phase: Phase,
    /// When the current phase ends, whatever the peer does.
    pub(crate) deadline: Instant,
    /// Received, not yet parsed: the start of the next request.
    input: Vec<u8>,
    pending: Option<Box<Pending>>,
    /// Plain transport: answer bytes the socket has not taken yet.
    output: Vec<u8>,
    written: usize,
    /// A write failed: the peer is gone.
    broken: bool,
    /// Close once the output is out.
    closing: bool,
    continue_sent: bool,
    drained: usize,
    _slot: ClientSlot,
}

/// How a non-blocking read ended.
enum Received {
    /// Bytes were added.
    Data,
    /// Nothing there now.
    Nothing,
    /// The peer is gone (end of stream, a reset, a TLS failure).
    Closed,
}

/// The parts of a request head the server uses, copied out of the buffer.
/// SECURITY: its derived `Debug` is safe because `Request`'s leaves the body
/// out; a field that can hold a code or token needs a type that redacts.
#[derive(Debug, Default)]
struct Head {
    request: Request,
    forwarded_for: Option<String>,
    content_length: Option<u64>,
    chunked: bool,
    keep_alive: bool,
    expect_continue: bool,
}

/// How far the buffered bytes took a request.
enum Progress {
    /// A request was answered; this many bytes were its.
    Answered(usize),
    /// The request is not complete; this many bytes were taken into it.
    NeedMore(usize),
}

impl Conn {
    /// A freshly accepted connection (already non-blocking).
    pub(crate) fn new(
        stream: TcpStream,
        peer: IpAddr,
        tls: Option<&Arc<ServerConfig>>,
        slot: ClientSlot,
        accepted: Instant,
    ) -> Conn {
        let (transport, limit) = match tls {
            None => (Transport::Plain, HEAD_TIMEOUT),
            Some(config) => (Transport::TlsPort(Arc::clone(config)), HANDSHAKE_TIMEOUT),
        };
        Conn {
            stream,
            peer,
            transport,
            phase: Phase::Fresh,
            deadline: accepted + limit,
            input: Vec::new(),
            pending: None,
            output: Vec::new(),
            written: 0,
            broken: false,
            closing: false,
            continue_sent: false,
            drained: 0,
            _slot: slot,
        }
    }

    /// The socket, for registering with the poller.
    pub(crate) fn socket(&self) -> &TcpStream {
        &self.stream
    }

    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }

    /// What to wait for: room to write while output is pending, else bytes.
    pub(crate) fn interest(&self) -> u32 {
        if self.wants_write() {
            WRITABLE
        } else {
            READABLE | PEER_CLOSED
        }
    }

    fn wants_write(&self) -> bool {
        match &self.transport {
            Transport::Tls(tls) => tls.wants_write(),
            _ => self.written < self.output.len(),
        }
    }

    /// Whether no request has begun on it: such a connection is closed at
    /// shutdown.
    pub(crate) fn between_requests(&self) -> bool {
        matches!(self.phase, Phase::Fresh | Phase::Idle) && self.input.is_empty()
    }

    /// Whether the peer has sent bytes not read yet (a request on its way
    /// to a worker is answered at shutdown, not dropped).
    pub(crate) fn has_unread_bytes(&self) -> bool {
        let mut first = [0u8; 1];
        matches!(self.stream.peek(&mut first), Ok(n) if n > 0)
    }

    /// One worker's turn: everything the connection can do now without
    /// waiting for its peer.
    pub(crate) fn turn<H: Handler + ?Sized>(
        &mut self,
        buffers: &mut Buffers,
        env: &Env<'_, H>,
    ) -> Next {
        if buffers.read.is_empty() {
            buffers.read = vec![0; READ_BUFFER_BYTES].into_boxed_slice();
            buffers.write.reserve(1024);
        }
        if let Transport::TlsPort(_) = self.transport {
            if let Some(next) = self.sniff(&mut buffers.write) {
                return next;
            }
        }
        // Last turn's unparsed bytes go first in the worker's buffer.
        let buf = &mut buffers.read;
        let mut end = self.input.len();
        buf[..end].copy_from_slice(&self.input);
        self.input = Vec::new();
        let mut start = 0;
        let mut answered = 0;
        let mut reads = 0;
        let next = loop {
            if self.wants_write() || self.broken {
                match self.flush() {
                    Err(_) => break Next::Close,
                    Ok(false) => break Next::Wait,
                    Ok(true) => {}
                }
            }
            if let Some(next) = self.move_on(answered) {
                break next;
            }
            if start < end || self.pending.is_some() {
                match self.advance(&buf[start..end], &mut buffers.write, env) {
                    Ok(Progress::Answered(used)) => {
                        start += used;
                        answered += 1;
                        continue;
                    }
                    Ok(Progress::NeedMore(used)) => start += used,
                    Err(error) => {
                        let shape = match self.pending.take() {
                            Some(pending) => pending.head.request,
                            None => shape_of(&buf[start..end]),
                        };
                        start = end;
                        self.fail(&error, &shape, &mut buffers.write, env);
                        continue;
                    }
                }
            }
            if start == end {
                start = 0;
                end = 0;
            } else if end == buf.len() {
                // What is left is the start of one request: move it to the
                // front to make room.
                buf.copy_within(start..end, 0);
                end -= start;
                start = 0;
            }
            if reads == READS_PER_TURN {
                break Next::Wait;
            }
            reads += 1;
            match self.receive(&mut buf[end..]) {
                (Received::Data, n) => end += n,
                (Received::Nothing, _) => break Next::Wait,
                (Received::Closed, _) => break Next::Close,
            }
        };
        if self.phase == Phase::Lingering || matches!(next, Next::Close) {
            return next;
        }
        if start < end {
            self.keep_unparsed(&buf[start..end]);
        }
        next
    }

    /// Moves the phase on once nothing is left to write; `Some` ends the
    /// turn.
    fn move_on(&mut self, answered: usize) -> Option<Next> {
        match self.phase {
            Phase::Writing if self.closing => Some(self.linger()),
            Phase::Writing => {
                self.phase = Phase::Idle;
                self.deadline = Instant::now() + KEEP_ALIVE_IDLE;
                (answered >= REQUESTS_PER_TURN).then_some(Next::Ready)
            }
            Phase::Lingering => Some(Next::Wait),
            Phase::Handshake => {
                if let Transport::Tls(tls) = &self.transport {
                    if !tls.is_handshaking() {
                        // Silence after the handshake counts from its end.
                        self.phase = Phase::Fresh;
                        self.deadline = Instant::now() + HEAD_TIMEOUT;
                    }
                }
                None
            }
            _ => None,
        }
    }

    /// Keeps the start of a request for the next turn.
    fn keep_unparsed(&mut self, bytes: &[u8]) {
        self.input = bytes.to_vec();
        if matches!(self.phase, Phase::Fresh | Phase::Idle) {
            // A head has begun: its deadline runs from its first byte.
            self.phase = Phase::Head;
            self.deadline = Instant::now() + HEAD_TIMEOUT;
        }
    }

    /// On a TLS port, looks at the first byte: a TLS record starts with
    /// 0x16; an upper-case letter is a plain-HTTP request line, which is
    /// told to use HTTPS. `None`: go on with the turn.
    fn sniff(&mut self, out: &mut Vec<u8>) -> Option<Next> {
        let Transport::TlsPort(config) = &self.transport else {
            return None;
        };
        let mut first = [0u8; 1];
        let opened = loop {
            match self.stream.peek(&mut first) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        match opened {
            Ok(0) => Some(Next::Close),
            Ok(_) if first[0].is_ascii_uppercase() => {
                self.transport = Transport::Plain;
                let body = br#"{"error":"invalid_request","error_description":"this port speaks HTTPS; use https://"}"#;
                write_response(out, &Response::json(400, body.to_vec()), 1, false, true);
                self.queue_output(out);
                self.closing = true;
                self.phase = Phase::Writing;
                None
            }
            Ok(_) => match ServerConnection::new(Arc::clone(config)) {
                Ok(tls) => {
                    self.transport = Transport::Tls(Box::new(tls));
                    self.phase = Phase::Handshake;
                    None
                }
                Err(_) => Some(Next::Close),
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Some(Next::Wait),
            Err(_) => Some(Next::Close),
        }
    }

    /// Takes `data` (the buffered bytes) as far as it goes towards a
    /// complete request, and answers it if it is complete.
    fn advance<H: Handler + ?Sized>(
        &mut self,
        data: &[u8],
        out: &mut Vec<u8>,
        env: &Env<'_, H>,
    ) -> Result<Progress, Error> {
        let mut used = 0;
        if self.pending.is_none() {
            let Some((head, len)) = parse_head(data)? else {
                return Ok(Progress::NeedMore(0));
            };
            let started = Instant::now();
            let expects_body = head.chunked || head.content_length.is_some_and(|n| n > 0);
            if !expects_body {
                if head.content_length.is_none()
                    && matches!(head.request.method.as_str(), "POST" | "PUT" | "PATCH")
                {
                    return Err(Error::LengthRequired);
                }
                self.answer(head, Vec::new(), started, out, env);
                return Ok(Progress::Answered(len));
            }
            if let Some(length) = head.content_length {
                // SECURITY: refuse by number; never allocate what was announced.
                if length > MAX_BODY_BYTES as u64 {
                    return Err(Error::BodyTooLarge {
                        limit: MAX_BODY_BYTES,
                    });
                }
            }
            used = len;
            let capacity = head
                .content_length
                .map_or(512, |n| n as usize)
                .min(MAX_BODY_BYTES);
            let chunked = head.chunked.then(|| ChunkedDecoder::new(MAX_BODY_BYTES));
            self.pending = Some(Box::new(Pending {
                head,
                body: Vec::with_capacity(capacity),
                chunked,
                started,
            }));
            self.phase = Phase::Body;
            self.deadline = started + BODY_TIMEOUT;
            self.continue_sent = false;
        }
        let Some(pending) = self.pending.as_mut() else {
            return Ok(Progress::NeedMore(used));
        };
        let rest = &data[used..];
        let complete = match &mut pending.chunked {
            Some(decoder) => {
                used += decoder.feed(rest, &mut pending.body)?;
                decoder.is_done()
            }
            None => {
                // Checked against MAX_BODY_BYTES when the head came in.
                let length = pending.head.content_length.unwrap_or(0) as usize;
                let take = (length - pending.body.len()).min(rest.len());
                pending.body.extend_from_slice(&rest[..take]);
                used += take;
                pending.body.len() == length
            }
        };
        if !complete {
            let nothing_sent = rest.is_empty() && pending.body.is_empty();
            if pending.head.expect_continue
                && pending.head.request.minor_version >= 1
                && nothing_sent
                && !self.continue_sent
            {
                self.continue_sent = true;
                self.queue_output(b"HTTP/1.1 100 Continue\r\n\r\n");
            }
            return Ok(Progress::NeedMore(used));
        }
        if let Some(pending) = self.pending.take() {
            let Pending {
                head,
                body,
                started,
                ..
            } = *pending;
            self.answer(head, body, started, out, env);
        }
        Ok(Progress::Answered(used))
    }

    /// Calls the handler and queues its answer.
    fn answer<H: Handler + ?Sized>(
        &mut self,
        head: Head,
        body: Vec<u8>,
        started: Instant,
        out: &mut Vec<u8>,
        env: &Env<'_, H>,
    ) {
        let Head {
            mut request,
            forwarded_for,
            keep_alive,
            ..
        } = head;
        let client = client_address(env.trusted_proxies, self.peer, forwarded_for.as_deref());
        request.client = Some(client);
        request.forwarded_for = forwarded_for.is_some();
        request.body = body;
        let answered = catch_unwind(AssertUnwindSafe(|| env.handler.handle(&request)));
        let response = answered.unwrap_or_else(|_| {
            log::error!(
                "request handler panicked: {} {}; answered 500",
                request.method,
                Printable(&request.path)
            );
            Response::error(&Error::Internal)
        });
        let keep = keep_alive && !env.shutting_down;
        // RFC 9110 §9.3.2: a HEAD response has the GET response's headers
        // (Content-Length included) but no body; sending one would be read
        // as the start of the next response on a kept-alive connection.
        let send_body = request.method != "HEAD";
        write_response(out, &response, request.minor_version, keep, send_body);
        self.queue_output(out);
        log_and_record(
            env.handler,
            &request.method,
            &request.path,
            response.status,
            started,
            Some(client),
        );
        self.closing = !keep;
        self.phase = Phase::Writing;
        self.deadline = Instant::now() + WRITE_TIMEOUT;
    }

    /// Queues the HTTP layer's own error answer; the connection closes
    /// after it. `shape` is the request as far as it could be read, for
    /// the handler to decorate the answer (CORS).
    fn fail<H: Handler + ?Sized>(
        &mut self,
        error: &Error,
        shape: &Request,
        out: &mut Vec<u8>,
        env: &Env<'_, H>,
    ) {
        let started = Instant::now();
        let response = env.handler.decorate_error(shape, Response::error(error));
        let client = client_address(env.trusted_proxies, self.peer, None);
        write_response(out, &response, 1, false, true);
        self.queue_output(out);
        log_and_record(
            env.handler,
            "-",
            "-",
            response.status,
            started,
            Some(client),
        );
        self.pending = None;
        self.closing = true;
        self.phase = Phase::Writing;
        self.deadline = Instant::now() + WRITE_TIMEOUT;
    }

    /// Hands `bytes` to the transport: plain bytes are written at once as
    /// far as the socket takes them, the rest kept; TLS encrypts them into
    /// rustls' queue, written by [`Conn::flush`].
    fn queue_output(&mut self, bytes: &[u8]) {
        match &mut self.transport {
            Transport::Tls(tls) => {
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
            }
            _ => self.output.extend_from_slice(bytes),
        }
    }

    /// Writes pending output as far as the socket takes it: `Ok(true)` when
    /// all of it is out.
    fn flush(&mut self) -> io::Result<bool> {
        if self.broken {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        match &mut self.transport {
            Transport::Tls(tls) => {
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
        Ok(true)
    }

    /// Reads what is there into `space`, without waiting. TLS: plaintext
    /// rustls already holds comes first; then ciphertext from the socket
    /// is decrypted (or advances the handshake).
    fn receive(&mut self, space: &mut [u8]) -> (Received, usize) {
        if space.is_empty() {
            // Cannot happen: a head stops at MAX_HEAD_BYTES and a body is
            // taken out of the buffer as it arrives.
            return (Received::Closed, 0);
        }
        let Transport::Tls(tls) = &mut self.transport else {
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
            match tls.read_tls(&mut self.stream) {
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
            if tls.wants_write() {
                // A handshake flight to send: the turn writes it first.
                return (Received::Data, 0);
            }
        }
    }

    /// Closes for writing (after a TLS close_notify) and lingers; the
    /// poller drains what the client still sends, until its end or
    /// [`LINGER_TIME`].
    fn linger(&mut self) -> Next {
        if let Transport::Tls(tls) = &mut self.transport {
            tls.send_close_notify();
            if !matches!(self.flush(), Ok(true)) {
                return Next::Close;
            }
        }
        if self.stream.shutdown(Shutdown::Write).is_err() {
            return Next::Close;
        }
        self.phase = Phase::Lingering;
        self.deadline = Instant::now() + LINGER_TIME;
        self.input = Vec::new();
        self.pending = None;
        self.drained = 0;
        Next::Wait
    }

    /// Lingering: reads and discards what has arrived. Whether to go on.
    pub(crate) fn drain(&mut self) -> bool {
        let mut sink = [0u8; 4096];
        loop {
            match read_some(&mut self.stream, &mut sink) {
                Ok(Some(0)) | Err(_) => return false,
                Ok(Some(n)) => {
                    self.drained += n;
                    if self.drained >= LINGER_BYTES {
                        return false;
                    }
                }
                Ok(None) => return true,
            }
        }
    }

    /// At its deadline: a request that was late is answered 408 and the
    /// connection lingers (returns true); anything else just closes.
    pub(crate) fn expire<H: Handler + ?Sized>(&mut self, env: &Env<'_, H>) -> bool {
        let error = match (self.phase, &self.transport) {
            (Phase::Fresh, Transport::Plain | Transport::Tls(_)) | (Phase::Head, _) => {
                Error::HeadTimeout
            }
            (Phase::Body, _) => Error::BodyTimeout,
            _ => return false,
        };
        let shape = match self.pending.take() {
            Some(pending) => pending.head.request,
            None => shape_of(&self.input),
        };
        let mut out = Vec::with_capacity(256);
        self.fail(&error, &shape, &mut out, env);
        self.finish_and_linger()
    }

    /// Turned away by a full queue: plain HTTP is told 503 with
    /// `Retry-After`; a TLS connection is closed without a word (never
    /// plaintext). Returns true while it lingers.
    pub(crate) fn refuse(&mut self) -> bool {
        if let Transport::Plain = self.transport {
            self.queue_output(&overloaded_answer());
        }
        self.finish_and_linger()
    }

    fn finish_and_linger(&mut self) -> bool {
        if !matches!(self.flush(), Ok(true)) {
            return false;
        }
        matches!(self.linger(), Next::Wait)
    }
}

/// Turns away a connection over a cap before it becomes a [`Conn`]: plain
/// HTTP gets 503 with `Retry-After`, a TLS port a close with no word.
pub(crate) fn refuse(mut stream: TcpStream, tls: bool) {
    if !tls {
        let _ = write_some(&mut stream, &overloaded_answer());
    }
    let _ = stream.shutdown(Shutdown::Write);
    // Take in what already arrived, so the close is not a reset.
    let mut sink = [0u8; 4096];
    let _ = read_some(&mut stream, &mut sink);
}

/// The 503 written past a cap.
fn overloaded_answer() -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_response(
        &mut out,
        &Response::error(&Error::Overloaded),
        1,
        false,
        true,
    );
    out
}

/// One non-blocking write: how much the socket took (0: full).
fn write_some(stream: &mut TcpStream, bytes: &[u8]) -> io::Result<usize> {
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
fn read_some(stream: &mut TcpStream, space: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        match stream.read(space) {
            Ok(n) => return Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The method, path and `Origin` of a request that could not be parsed
/// whole (too large, malformed, late), read leniently, so its error answer
/// can carry what the path's answers carry (CORS). Never routed.
fn shape_of(data: &[u8]) -> Request {
    let data = &data[..data.len().min(MAX_HEAD_BYTES * 2)];
    let mut lines = data.split(|&b| b == b'\n');
    let mut request = Request::default();
    if let Some(line) = lines.next() {
        let mut words = line.split(|&b| b == b' ');
        request.method = text(words.next().unwrap_or_default());
        request.path = path_of(&text(words.next().unwrap_or_default())).to_string();
    }
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if line[..colon].trim_ascii().eq_ignore_ascii_case(b"origin") {
            request.origin = Some(text(&line[colon + 1..]));
        }
    }
    request
}

/// The right-most `X-Forwarded-For` entry that is not a trusted proxy, when
/// the peer is a trusted proxy; otherwise the peer.
pub(crate) fn client_address(
    trusted: &[IpAddr],
    peer: IpAddr,
    forwarded_for: Option<&str>,
) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let Some(list) = forwarded_for else {
        return peer;
    };
    for entry in list.rsplit(',') {
        match parse_forwarded_ip(entry.trim()) {
            Some(ip) if trusted.contains(&ip) => continue,
            Some(ip) => return ip,
            // SECURITY: an entry we cannot parse may be forged; stop at it
            // and attribute the request to the last address we trust.
            None => return peer,
        }
    }
    peer
}

fn parse_forwarded_ip(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    // `1.2.3.4:5678` and `[::1]:5678` forms.
    entry
        .parse::<std::net::SocketAddr>()
        .ok()
        .map(|a| a.ip().to_canonical())
}

fn log_and_record<H: Handler + ?Sized>(
    handler: &H,
    method: &str,
    path: &str,
    status: u16,
    started: Instant,
    client: Option<IpAddr>,
) {
    let duration = started.elapsed();
    // SECURITY: the path is logged without its query string (stripped at
    // parse time) and with control characters escaped, so neither a code in
    // a query nor a forged log line can get into the journal.
    log::info!(
        "{} {} {} {}ms {}",
        method,
        Printable(path),
        status,
        duration.as_millis(),
        ClientOrDash(client)
    );
    handler.record(&Record { path, status });
}

/// A path as it may appear in a log line: at most 200 characters, escaped.
struct Printable<'a>(&'a str);

impl std::fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const MAX_CHARS: usize = 200;
        let plain = |b: &u8| (b' '..=b'~').contains(b) && !matches!(b, b'\'' | b'"' | b'\\');
        // The usual case, a short path of plain ASCII, is written as is.
        if self.0.len() <= MAX_CHARS && self.0.bytes().all(|b| plain(&b)) {
            return f.write_str(self.0);
        }
        let mut chars = self.0.chars();
        for c in chars.by_ref().take(MAX_CHARS) {
            std::fmt::Display::fmt(&c.escape_default(), f)?;
        }
        if chars.next().is_some() {
            f.write_str("…")?;
        }
        Ok(())
    }
}

/// A client address in a log line, `-` when unknown.
struct ClientOrDash(Option<IpAddr>);

impl std::fmt::Display for ClientOrDash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            // std formats each octet through the padding machinery (about
            // 1.5k instructions per log line); four small numbers need less.
            Some(IpAddr::V4(v4)) => {
                let mut text = [0u8; 15];
                let mut len = 0;
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        text[len] = b'.';
                        len += 1;
                    }
                    let digits = [octet / 100, octet / 10 % 10, octet % 10];
                    let skip = if octet >= 100 {
                        0
                    } else if octet >= 10 {
                        1
                    } else {
                        2
                    };
                    for digit in &digits[skip..] {
                        text[len] = b'0' + digit;
                        len += 1;
                    }
                }
                // Only ASCII digits and dots were written.
                f.write_str(std::str::from_utf8(&text[..len]).map_err(|_| std::fmt::Error)?)
            }
            Some(ip) => std::fmt::Display::fmt(&ip, f),
            None => f.write_str("-"),
        }
    }
}

/// Serialises a response into `out`; without its body if `send_body` is
/// false (an answer to HEAD).
fn write_response(
    out: &mut Vec<u8>,
    response: &Response,
    minor_version: u8,
    keep_alive: bool,
    send_body: bool,
) {
    use std::fmt::Write as _;
    out.clear();
    let mut head = String::with_capacity(256);
    let _ = write!(
        head,
        "HTTP/1.1 {} {}\r\n",
        response.status,
        reason(response.status)
    );
    if response.status != 204 {
        let _ = write!(
            head,
            "Content-Type: {}\r\nContent-Length: {}\r\n",
            response.content_type,
            response.body.len()
        );
    }
    for (name, value) in &response.headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    if !keep_alive {
        head.push_str("Connection: close\r\n");
    } else if minor_version == 0 {
        head.push_str("Connection: keep-alive\r\n");
    }
    head.push_str("\r\n");
    out.extend_from_slice(head.as_bytes());
    if send_body {
        out.extend_from_slice(&response.body);
    }
}

/// Parses a request head from the start of `data`: `None` while it is
/// incomplete, else the head and its length in bytes.
fn parse_head(data: &[u8]) -> Result<Option<(Head, usize)>, Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let status = parsed.parse(data).map_err(|e| match e {
        httparse::Error::TooManyHeaders => Error::HeadTooLarge,
        httparse::Error::Version if looks_like_other_http_version(data) => {
            Error::VersionNotSupported
        }
        _ => Error::BadRequest("the request head is not valid HTTP/1.1"),
    })?;
    let len = match status {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial if data.len() >= MAX_HEAD_BYTES => {
            return Err(Error::HeadTooLarge);
        }
        httparse::Status::Partial => return Ok(None),
    };
    if len > MAX_HEAD_BYTES {
        return Err(Error::HeadTooLarge);
    }
    Ok(Some((head_from(&parsed)?, len)))
}

/// What a head parses to, for fuzzing and tests: the method, path, declared
/// body framing and head length — or the error the client would get.
#[derive(Debug, PartialEq, Eq)]
pub struct HeadSummary {
    /// The request method, as sent.
    pub method: String,
    /// The path, without query string or fragment.
    pub path: String,
    /// The declared `Content-Length`, if any.
    pub content_length: Option<u64>,
    /// Whether the body is sent with chunked transfer encoding.
    pub chunked: bool,
    pub(crate) keep_alive: bool,
    /// Length of the head in bytes, up to and including its blank line.
    pub head_bytes: usize,
}

/// Parses a request head as the connection loop does (`Ok(None)`: not
/// complete yet). Entry point for the fuzz target.
pub fn inspect_head(data: &[u8]) -> Result<Option<HeadSummary>, Error> {
    Ok(parse_head(data)?.map(|(head, head_bytes)| HeadSummary {
        method: head.request.method,
        path: head.request.path,
        content_length: head.content_length,
        chunked: head.chunked,
        keep_alive: head.keep_alive,
        head_bytes,
    }))
}

/// Whether the request line ends in an `HTTP/x.y` version other than 1.x.
fn looks_like_other_http_version(data: &[u8]) -> bool {
    let line_end = data
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(data.len());
    let line = &data[..line_end];
    let version = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
    version.len() == 8
        && version.starts_with(b"HTTP/")
        && version[5].is_ascii_digit()
        && version[6] == b'.'
        && version[7].is_ascii_digit()
}

/// Copies what the server needs out of a parsed head and checks framing.
fn head_from(parsed: &httparse::Request<'_, '_>) -> Result<Head, Error> {
    let method = parsed.method.unwrap_or_default();
    let target = parsed.path.unwrap_or_default();
    let minor_version = parsed.version.unwrap_or(1);
    let mut head = Head {
        request: Request {
            method: method.to_string(),
            path: path_of(target).to_string(),
            minor_version,
            ..Request::default()
        },
        keep_alive: minor_version >= 1,
        ..Head::default()
    };
    let mut transfer_encoding: Option<&[u8]> = None;
    let mut hosts = 0;
    for header in parsed.headers.iter() {
        let name = header.name;
        let value = header.value;
        if name.eq_ignore_ascii_case("content-length") {
            let length = parse_content_length(value)?;
            if head
                .content_length
                .is_some_and(|previous| previous != length)
            {
                return Err(Error::BadRequest("conflicting Content-Length headers"));
            }
            head.content_length = Some(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if transfer_encoding.is_some() {
                return Err(Error::UnsupportedTransferEncoding);
            }
            transfer_encoding = Some(value);
        } else if name.eq_ignore_ascii_case("connection") {
            for token in String::from_utf8_lossy(value).split(',') {
                let token = token.trim();
                if token.eq_ignore_ascii_case("close") {
                    head.keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") && minor_version == 0 {
                    head.keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case("expect") {
            head.expect_continue = value.eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case("content-type") {
            head.request.content_type = Some(text(value));
        } else if name.eq_ignore_ascii_case("origin") {
            head.request.origin = Some(text(value));
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            let value = text(value);
            head.forwarded_for = Some(match head.forwarded_for.take() {
                Some(earlier) => format!("{earlier},{value}"),
                None => value,
            });
        }
    }
    // RFC 9112 §3.2: an HTTP/1.1 request carries exactly one Host
    // (HTTP/1.0 may omit it).
    if hosts > 1 || (hosts == 0 && minor_version >= 1) {
        return Err(Error::BadRequest(
            "an HTTP/1.1 request must carry exactly one Host header",
        ));
    }
    if let Some(te) = transfer_encoding {
        // SECURITY: Content-Length together with Transfer-Encoding is the
        // classic request-smuggling setup; refuse it rather than pick one.
        if head.content_length.is_some() {
            return Err(Error::BadRequest(
                "Content-Length and Transfer-Encoding together",
            ));
        }
        if minor_version == 0 {
            return Err(Error::BadRequest(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        if !te.trim_ascii().eq_ignore_ascii_case(b"chunked") {
            return Err(Error::UnsupportedTransferEncoding);
        }
        head.chunked = true;
    }
    Ok(head)
}

/// Parses a Content-Length value. Any number of digits is a number: one too
/// large for `u64` is simply too large, never an allocation.
fn parse_content_length(value: &[u8]) -> Result<u64, Error> {
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(Error::BadRequest("Content-Length is not a number"));
    }
    let mut n: u64 = 0;
    for &d in digits {
        n = match n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
        {
            Some(n) => n,
            None => return Ok(u64::MAX),
        };
    }
    Ok(n)
}

/// The path of a request target: the query is dropped, and an absolute-form
/// target (`http://host/path`) is reduced to its path.
fn path_of(target: &str) -> &str {
    let mut path = target;
    if let Some(rest) = path
        .strip_prefix("http://")
        .or_else(|| path.strip_prefix("https://"))
    {
        path = rest.find('/').map_or("/", |i| &rest[i..]);
    }
    let end = path.find(['?', '#']).unwrap_or(path.len());
    &path[..end]
}

fn text(value: &[u8]) -> String {
    String::from_utf8_lossy(value).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_of_any_size_is_a_number() {
        assert_eq!(parse_content_length(b"42"), Ok(42));
        assert_eq!(
            parse_content_length(b"1000000000000"),
            Ok(1_000_000_000_000)
        );
        assert_eq!(parse_content_length(b"18446744073709551615"), Ok(u64::MAX));
        assert_eq!(
            parse_content_length(b"123456789012345678901234567890"),
            Ok(u64::MAX)
        );
        assert!(parse_content_length(b"-1").is_err());
        assert!(parse_content_length(b"1,1").is_err());
        assert!(parse_content_length(b"").is_err());
        assert!(parse_content_length(b"0x10").is_err());
    }

    #[test]
    fn head_debug_hides_the_body() {
        let head = Head {
            request: Request {
                body: b"code=AQB-authorization-code".to_vec(),
                ..Request::default()
            },
            ..Head::default()
        };
        let debug = format!("{head:?}");
        assert!(!debug.contains("AQB-authorization-code"), "{debug}");
        assert!(!debug.contains("99, 111, 100, 101"), "{debug}");
        assert!(debug.contains("[27 bytes redacted]"), "{debug}");
    }

    #[test]
    fn query_string_is_not_part_of_the_path() {
        assert_eq!(path_of("/swap?code=secret"), "/swap");
        assert_eq!(path_of("http://example.com/health?x"), "/health");
        assert_eq!(path_of("http://example.com"), "/");
        assert_eq!(path_of("*"), "*");
    }

    #[test]
    fn other_http_versions_are_recognised() {
        assert!(looks_like_other_http_version(b"GET / HTTP/2.0\r\n"));
        assert!(looks_like_other_http_version(b"PRI * HTTP/2.0\r\n\r\nSM"));
        assert!(!looks_like_other_http_version(b"GET / FOO/1.1\r\n"));
        assert!(!looks_like_other_http_version(b"garbage"));
    }

    #[test]
    fn client_addresses_print_as_std_does() {
        for ip in [
            "0.0.0.0",
            "1.2.3.4",
            "10.20.30.40",
            "100.200.255.9",
            "255.255.255.255",
            "127.0.0.10",
            "::1",
            "2001:db8::42",
            "::ffff:1.2.3.4",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ClientOrDash(Some(ip)).to_string(), ip.to_string());
        }
        assert_eq!(ClientOrDash(None).to_string(), "-");
    }

    #[test]
    fn printable_escapes_control_characters() {
        let printable = |path: &str| Printable(path).to_string();
        assert_eq!(printable("/a\nb"), "/a\\nb");
        assert_eq!(printable("/swap"), "/swap");
        assert_eq!(printable("/a\"b'c\\"), "/a\\\"b\\'c\\\\");
        assert_eq!(printable("/caf\u{e9}"), "/caf\\u{e9}");
        assert_eq!(printable(&"x".repeat(200)), "x".repeat(200));
        assert_eq!(printable(&"x".repeat(300)).chars().count(), 201);
    }

    #[test]
    fn response_head_says_close_when_closing() {
        let mut out = Vec::new();
        let r = Response::json(200, b"{}".to_vec()).with_header("Cache-Control", "no-store");
        write_response(&mut out, &r, 1, false, true);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\
             Cache-Control: no-store\r\nConnection: close\r\n\r\n{}"
        );
    }

    #[test]
    fn response_to_head_has_length_but_no_body() {
        let mut out = Vec::new();
        let r = Response::json(200, br#"{"status":"ok"}"#.to_vec());
        write_response(&mut out, &r, 1, true, false);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n"
        );
    }
}
