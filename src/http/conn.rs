//! One connection's state, and what a worker does with it in one turn:
//! take in the bytes that are there, answer the complete requests (at most
//! one slow one, and only with a slot, see [`super::slots`]), and say what
//! the connection waits for next.
//!
//! Nothing here blocks on the peer. Reads and writes are non-blocking
//! ([`super::transport`], plain or TLS); a connection that needs more bytes,
//! or has output the socket would not take, goes back to the poller with
//! its partial state and the deadline of its phase, and the poller enforces
//! that deadline. Between turns a connection keeps only what is unfinished:
//! the unparsed bytes of a request in progress, a body being decoded,
//! unwritten output — an idle keep-alive connection holds no buffer. The
//! worker's read and write buffers are reused from turn to turn.

use std::net::{IpAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rustls::ServerConfig;

use super::admission::{ClientSlot, overloaded_answer};
use super::answer::{self, Context, Prepared};
use super::body::Pending;
use super::buffers::Buffers;
use super::epoll::{PEER_CLOSED, READABLE, WRITABLE};
use super::error::Error;
use super::handler::Handler;
use super::head::{parse_head, shape_of};
use super::limits::{BODY_TIMEOUT, HANDSHAKE_TIMEOUT, HEAD_TIMEOUT, KEEP_ALIVE_IDLE};
use super::request::Request;
use super::response::{Response, write_response};
use super::slots::Take;
use super::transport::{DISCARD_CHUNK_BYTES, Opening, Received, Transport};

/// After a server-side close, read and discard at most this much of what the
/// client still sends, so the kernel does not reset the connection before
/// the client has read our response.
const LINGER_BYTES: usize = 64 * 1024;
/// … and for at most this long.
const LINGER_TIME: Duration = Duration::from_millis(500);
/// Time allowed for the rest of an answer the socket did not take at once.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests one connection may have answered in one turn before it goes to
/// the back of the queue, so a pipelining client cannot keep a worker. Of
/// these, one at most is slow: a second waits for the next turn.
const REQUESTS_PER_TURN: usize = 32;
/// Reads one connection may make in one turn: a peer that keeps bytes
/// coming without completing a request (empty TLS records, handshake
/// messages) goes back to the poller, which holds it to its deadline.
const READS_PER_TURN: usize = 64;

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
    /// Holds a complete slow request and no slot: to the backlog.
    Backlog,
    /// Nothing more: close it.
    Close,
}

/// One client connection.
pub(crate) struct Conn {
    transport: Transport,
    peer: IpAddr,
    phase: Phase,
    /// When the current phase ends, whatever the peer does.
    pub(crate) deadline: Instant,
    /// Received, not yet parsed: the start of the next request.
    input: Vec<u8>,
    pending: Option<Box<Pending>>,
    /// A complete request not answered yet: slow, and waiting for a slot
    /// or for the connection's next turn.
    held: Option<Box<Prepared>>,
    /// Whether it holds a slot for slow requests.
    slot: Slot,
    /// Close once the output is out.
    closing: bool,
    drained: usize,
    _slot: ClientSlot,
}

/// A connection's hold on a slot for slow requests; the worker gives it
/// back after the turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    None,
    /// Handed over from the backlog, for the request it holds.
    Granted,
    /// A slow request was answered with it in this turn.
    Used,
}

/// How far the buffered bytes took a request.
enum Progress {
    /// A request was answered; this many bytes were its.
    Answered(usize),
    /// The request is not complete; this many bytes were taken into it.
    NeedMore(usize),
    /// The layer refused the request; the connection closes after its
    /// answer.
    Refused,
    /// A complete request is held, not answered (this many bytes were
    /// its); the turn ends with this.
    Held(usize, Next),
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
        let limit = if tls.is_some() {
            HANDSHAKE_TIMEOUT
        } else {
            HEAD_TIMEOUT
        };
        Conn {
            transport: Transport::new(stream, tls),
            peer,
            phase: Phase::Fresh,
            deadline: accepted + limit,
            input: Vec::new(),
            pending: None,
            held: None,
            slot: Slot::None,
            closing: false,
            drained: 0,
            _slot: slot,
        }
    }

    /// The socket, for registering with the poller.
    pub(crate) fn socket(&self) -> &TcpStream {
        self.transport.socket()
    }

    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }

    /// What to wait for: room to write while output is pending, else bytes.
    pub(crate) fn interest(&self) -> u32 {
        if self.transport.wants_write() {
            WRITABLE
        } else {
            READABLE | PEER_CLOSED
        }
    }

    /// Whether no request has begun on it: such a connection is closed at
    /// shutdown.
    pub(crate) fn between_requests(&self) -> bool {
        matches!(self.phase, Phase::Fresh | Phase::Idle)
            && self.input.is_empty()
            && self.held.is_none()
    }

    /// Hands it a slot, freed for the request it holds.
    pub(crate) fn grant(&mut self) {
        self.slot = Slot::Granted;
    }

    /// After a turn: whether it held a slot, which it no longer does.
    pub(crate) fn give_back_slot(&mut self) -> bool {
        std::mem::replace(&mut self.slot, Slot::None) != Slot::None
    }

    /// Whether the peer has sent bytes not read yet (a request on its way
    /// to a worker is answered at shutdown, not dropped).
    pub(crate) fn has_unread_bytes(&self) -> bool {
        self.transport.has_unread_bytes()
    }

    /// One worker's turn: everything the connection can do now without
    /// waiting for its peer.
    pub(crate) fn turn<H: Handler + ?Sized>(
        &mut self,
        buffers: &mut Buffers,
        cx: &Context<'_, H>,
    ) -> Next {
        if let Some(next) = self.open(&mut buffers.write) {
            return next;
        }
        // Last turn's unparsed bytes go first in the worker's buffer.
        let (mut window, out) = buffers.window(&self.input);
        self.input = Vec::new();
        let mut answered = 0;
        let mut reads = 0;
        let next = loop {
            // An answer goes out before the next request is taken: it
            // never waits on a later one. Other output (a handshake
            // flight, session tickets, `100 Continue`) goes when the turn
            // has nothing more to add, before it waits for the peer: the
            // answer to a request that came with the client's Finished
            // then leaves in one write with the tickets.
            if self.phase == Phase::Writing {
                if let Some(next) = self.flush() {
                    break next;
                }
            }
            if let Some(next) = self.move_on(answered) {
                break next;
            }
            if !window.is_empty() || self.pending.is_some() || self.held.is_some() {
                match self.advance(window.unparsed(), out, cx) {
                    Progress::Answered(used) => {
                        window.consume(used);
                        answered += 1;
                        continue;
                    }
                    Progress::Refused => {
                        window.consume_all();
                        continue;
                    }
                    Progress::NeedMore(used) => window.consume(used),
                    Progress::Held(used, next) => {
                        window.consume(used);
                        break next;
                    }
                }
            }
            window.make_room();
            if reads == READS_PER_TURN {
                break self.flush().unwrap_or(Next::Wait);
            }
            reads += 1;
            let held = window.unparsed().len() + self.pending.as_ref().map_or(0, |p| p.held());
            match self.transport.receive(window.space(), held) {
                (Received::Data, n) => window.filled(n),
                (Received::Nothing, _) => break self.flush().unwrap_or(Next::Wait),
                (Received::Closed, _) => break Next::Close,
            }
        };
        if self.phase == Phase::Lingering || matches!(next, Next::Close) {
            return next;
        }
        if !window.is_empty() {
            self.keep_unparsed(window.unparsed());
        }
        next
    }

    /// Writes the pending output as far as the socket takes it; `Some`
    /// ends the turn (the socket is full, or the peer is gone).
    fn flush(&mut self) -> Option<Next> {
        if !self.transport.needs_flush() {
            return None;
        }
        match self.transport.flush() {
            Err(_) => Some(Next::Close),
            Ok(false) => Some(Next::Wait),
            Ok(true) => None,
        }
    }

    /// On a TLS port whose first byte has not come yet: TLS starts its
    /// handshake; a plain-HTTP request line is told to use HTTPS. `None`:
    /// go on with the turn.
    fn open(&mut self, out: &mut Vec<u8>) -> Option<Next> {
        match self.transport.open()? {
            Opening::Tls => {
                self.phase = Phase::Handshake;
                None
            }
            Opening::Plaintext => {
                let body = br#"{"error":"invalid_request","error_description":"this port speaks HTTPS; use https://"}"#;
                write_response(out, &Response::json(400, body.to_vec()), 1, false, true);
                self.transport.queue(out);
                self.closing = true;
                self.phase = Phase::Writing;
                None
            }
            Opening::NotYet => Some(Next::Wait),
            Opening::Closed => Some(Next::Close),
        }
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
                if self.transport.handshake_done() {
                    // Silence after the handshake counts from its end.
                    self.phase = Phase::Fresh;
                    self.deadline = Instant::now() + HEAD_TIMEOUT;
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

    /// Takes `data` (the buffered bytes) as far as it goes towards a
    /// complete request, and answers it if it is complete; a request the
    /// layer refuses is answered with its error, and the rest of `data`
    /// dropped.
    fn advance<H: Handler + ?Sized>(
        &mut self,
        data: &[u8],
        out: &mut Vec<u8>,
        cx: &Context<'_, H>,
    ) -> Progress {
        match self.take_request(data, out, cx) {
            Ok(progress) => progress,
            Err(error) => {
                let shape = match self.pending.take() {
                    Some(pending) => pending.head.request,
                    None => shape_of(data),
                };
                self.fail(&error, &shape, out, cx.handler);
                Progress::Refused
            }
        }
    }

    /// The work of [`Conn::advance`]; an error is the layer's refusal.
    fn take_request<H: Handler + ?Sized>(
        &mut self,
        data: &[u8],
        out: &mut Vec<u8>,
        cx: &Context<'_, H>,
    ) -> Result<Progress, Error> {
        if let Some(held) = self.held.take() {
            return Ok(self.answer(*held, 0, out, cx));
        }
        let mut used = 0;
        if self.pending.is_none() {
            let Some((head, len)) = parse_head(data)? else {
                return Ok(Progress::NeedMore(0));
            };
            let started = Instant::now();
            if !head.expects_body() {
                if head.content_length.is_none()
                    && matches!(head.request.method.as_str(), "POST" | "PUT" | "PATCH")
                {
                    return Err(Error::LengthRequired);
                }
                let prepared = answer::prepare(cx.settings, self.peer, head, Vec::new(), started);
                return Ok(self.answer(prepared, len, out, cx));
            }
            self.pending = Some(Box::new(Pending::new(head, len, started)?));
            self.phase = Phase::Body;
            self.deadline = started + BODY_TIMEOUT;
            used = len;
        }
        let Some(pending) = self.pending.as_mut() else {
            return Ok(Progress::NeedMore(used));
        };
        let rest = &data[used..];
        let (taken, complete) = pending.take(rest)?;
        used += taken;
        if !complete {
            if pending.continue_due(rest.is_empty()) {
                self.transport.queue(b"HTTP/1.1 100 Continue\r\n\r\n");
            }
            return Ok(Progress::NeedMore(used));
        }
        let Some(pending) = self.pending.take() else {
            return Ok(Progress::Answered(used));
        };
        let Pending {
            head,
            body,
            started,
            ..
        } = *pending;
        let prepared = answer::prepare(cx.settings, self.peer, head, body, started);
        Ok(self.answer(prepared, used, out, cx))
    }

    /// Calls the handler and queues its answer; a slow request with no
    /// slot is held instead (or, past a full backlog, answered 503).
    /// `used`: the request's bytes, for the progress made.
    fn answer<H: Handler + ?Sized>(
        &mut self,
        prepared: Prepared,
        used: usize,
        out: &mut Vec<u8>,
        cx: &Context<'_, H>,
    ) -> Progress {
        if cx.handler.is_slow(&prepared.request) {
            let take = match self.slot {
                Slot::Granted => Take::Slot,
                // One slow request a turn: the next one waits for the
                // connection's next turn, behind those queued meanwhile.
                Slot::Used => {
                    self.held = Some(Box::new(prepared));
                    return Progress::Held(used, Next::Ready);
                }
                Slot::None => cx.slots.try_take(),
            };
            match take {
                Take::Slot => self.slot = Slot::Used,
                Take::Wait => {
                    self.held = Some(Box::new(prepared));
                    return Progress::Held(used, Next::Backlog);
                }
                Take::Full => {
                    cx.stats.rejected_overloaded.fetch_add(1, Ordering::Relaxed);
                    log::debug!("slow request turned away: every slot taken and the backlog full");
                    let mut shape = prepared.request;
                    shape.body = Vec::new();
                    self.fail(&Error::Overloaded, &shape, out, cx.handler);
                    return Progress::Refused;
                }
            }
        }
        let keep = answer::respond(cx, &mut self.transport, prepared, out);
        self.write_answer(!keep);
        Progress::Answered(used)
    }

    /// Queues the HTTP layer's own error answer; the connection closes
    /// after it. `shape` is the request as far as it could be read.
    fn fail<H: Handler + ?Sized>(
        &mut self,
        error: &Error,
        shape: &Request,
        out: &mut Vec<u8>,
        handler: &H,
    ) {
        answer::reject(handler, &mut self.transport, self.peer, error, shape, out);
        self.pending = None;
        self.write_answer(true);
    }

    /// An answer is queued: the connection writes it, then `closing` or
    /// waits for the next request.
    fn write_answer(&mut self, closing: bool) {
        self.closing = closing;
        self.phase = Phase::Writing;
        self.deadline = Instant::now() + WRITE_TIMEOUT;
    }

    /// Closes for writing (after a TLS close_notify) and lingers; the
    /// poller drains what the client still sends, until its end or
    /// [`LINGER_TIME`].
    fn linger(&mut self) -> Next {
        if !self.transport.close_for_writing() {
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
        let mut sink = [0u8; DISCARD_CHUNK_BYTES];
        loop {
            match self.transport.discard(&mut sink) {
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
    pub(crate) fn expire<H: Handler + ?Sized>(&mut self, handler: &H) -> bool {
        let error = match self.phase {
            // A TLS port that never saw a byte has no protocol to answer in.
            Phase::Fresh if !self.transport.is_undecided() => Error::HeadTimeout,
            Phase::Head => Error::HeadTimeout,
            Phase::Body => Error::BodyTimeout,
            _ => return false,
        };
        let shape = match self.pending.take() {
            Some(pending) => pending.head.request,
            None => shape_of(&self.input),
        };
        let mut out = Vec::with_capacity(256);
        self.fail(&error, &shape, &mut out, handler);
        self.finish_and_linger()
    }

    /// Turned away by a full queue: plain HTTP is told 503 with
    /// `Retry-After`; a TLS connection is closed without a word (never
    /// plaintext). Returns true while it lingers.
    pub(crate) fn refuse(&mut self) -> bool {
        if self.transport.is_plain() {
            self.transport.queue(&overloaded_answer());
        }
        self.finish_and_linger()
    }

    fn finish_and_linger(&mut self) -> bool {
        if !matches!(self.transport.flush(), Ok(true)) {
            return false;
        }
        matches!(self.linger(), Next::Wait)
    }
}
