//! One connection, start to finish: read a head, read its body, call the
//! handler, write the response, and decide whether to keep the connection.
//!
//! Generic over [`Transport`], so built-in TLS can wrap the socket without
//! anything here changing. Time limits are deadlines per phase (head, body),
//! not per read: each read's timeout is the time left, so a client trickling
//! one byte at a time cannot hold a worker past the deadline. Buffers are the
//! worker's, reused from connection to connection.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use super::chunked::ChunkedDecoder;
use super::{
    BODY_TIMEOUT, HEAD_TIMEOUT, Handler, KEEP_ALIVE_IDLE, MAX_BODY_BYTES, MAX_HEAD_BYTES,
    MAX_HEADERS, Record, Request, Response, reason,
};
use crate::error::Error;

/// Size of a worker's read buffer: one full head plus room for what a
/// pipelining client sends behind it.
pub const READ_BUFFER_BYTES: usize = 16 * 1024;
/// While waiting for a request, wake this often to notice shutdown and
/// waiting connections.
pub(crate) const POLL_SLICE: Duration = Duration::from_millis(200);
/// A connection that has sent nothing for this long is given up when other
/// connections are waiting for a worker.
pub(crate) const IDLE_UNDER_PRESSURE: Duration = Duration::from_secs(1);
/// Time allowed for a request head while other connections wait for a
/// worker (else [`HEAD_TIMEOUT`]).
const HEAD_TIMEOUT_UNDER_PRESSURE: Duration = Duration::from_secs(2);
/// How long a worker looks for the first bytes of a connection that has
/// already spent its [`IDLE_UNDER_PRESSURE`] grace waiting in the queue.
pub(crate) const FIRST_LOOK: Duration = Duration::from_millis(10);
/// After a server-side close, read and discard at most this much of what the
/// client still sends, so the kernel does not reset the connection before
/// the client has read our response.
const LINGER_BYTES: usize = 64 * 1024;
/// … and for at most this long.
const LINGER_TIME: Duration = Duration::from_millis(500);
/// A read that timed out this close to its limit counts as at the limit
/// (socket timeouts are coarse).
const TIMER_SLACK: Duration = Duration::from_millis(5);
/// Time allowed for writing one response.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// A byte stream the connection loop can run on: a `TcpStream`, or later a
/// TLS stream over one.
pub trait Transport: Read + Write {
    /// Sets the timeout of the next reads (`None`: block).
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()>;
    /// Sets the timeout of the next writes.
    fn set_write_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()>;
    /// Tells the peer we are done writing.
    fn shutdown_write(&mut self) -> io::Result<()>;
}

impl Transport for TcpStream {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }
    fn set_write_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_write_timeout(self, timeout)
    }
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

/// What the connection loop needs to know about the rest of the server.
pub trait Context {
    /// Whether the server is shutting down.
    fn shutting_down(&self) -> bool;
    /// Whether other connections are waiting for a worker.
    fn others_waiting(&self) -> bool;
    /// The client address for a request from `peer` with this
    /// `X-Forwarded-For` value.
    fn client_address(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr;
}

/// A worker's reusable buffers, allocated when it serves its first
/// connection: zero-filled, the read buffer would cost every idle worker
/// 16 KiB of RSS.
#[derive(Default)]
pub struct Buffers {
    read: Box<[u8]>,
    write: Vec<u8>,
}

/// The parts of a request head the server uses, copied out of the buffer.
#[derive(Default)]
struct Head {
    request: Request,
    forwarded_for: Option<String>,
    content_length: Option<u64>,
    chunked: bool,
    keep_alive: bool,
    expect_continue: bool,
}

impl std::fmt::Debug for Head {
    // SECURITY: field by field, so nothing added later is shown unseen; the
    // request's own `Debug` leaves its body out.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Head")
            .field("request", &self.request)
            .field("forwarded_for", &self.forwarded_for)
            .field("content_length", &self.content_length)
            .field("chunked", &self.chunked)
            .field("keep_alive", &self.keep_alive)
            .field("expect_continue", &self.expect_continue)
            .finish()
    }
}

/// How waiting for a head ended without a request.
enum NoRequest {
    /// The peer closed, or an idle keep-alive connection timed out: close
    /// without a word.
    Quiet,
    /// Answer this error, then close.
    Fail(Error),
}

/// Runs one connection until it closes. `accepted` is when it was accepted:
/// the time it waited in the queue counts towards its silence.
pub fn serve<S: Transport, H: Handler + ?Sized, C: Context + ?Sized>(
    mut stream: S,
    peer: IpAddr,
    handler: &H,
    context: &C,
    buffers: &mut Buffers,
    accepted: Instant,
) {
    if buffers.read.is_empty() {
        buffers.read = vec![0; READ_BUFFER_BYTES].into_boxed_slice();
        buffers.write.reserve(1024);
    }
    let mut conn = Conn {
        stream: &mut stream,
        buf: &mut buffers.read,
        start: 0,
        end: 0,
        read_timeout: None,
    };
    let out = &mut buffers.write;
    let _ = conn.stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let mut first = true;
    loop {
        let head = match conn.read_head(first, accepted, context) {
            Ok(head) => head,
            Err(NoRequest::Quiet) => return,
            Err(NoRequest::Fail(error)) => {
                let started = Instant::now();
                let response = Response::error(&error);
                let client = context.client_address(peer, None);
                write_response(out, &response, 1, false, true);
                let _ = conn.stream.write_all(out);
                log_and_record(handler, "-", "-", response.status, started, Some(client));
                // A client that never sent a byte left no unread input for
                // the close to turn into a reset; lingering would only let a
                // silent connection hold the worker LINGER_TIME longer.
                if !(first && conn.start == conn.end) {
                    conn.linger();
                }
                return;
            }
        };
        first = false;
        let started = Instant::now();

        let Head {
            mut request,
            forwarded_for,
            content_length,
            chunked,
            keep_alive,
            expect_continue,
        } = head;
        let client = context.client_address(peer, forwarded_for.as_deref());
        request.client = Some(client);
        request.forwarded_for = forwarded_for.is_some();

        let body = conn.read_body(&request, content_length, chunked, expect_continue);
        let (response, failed) = match body {
            Ok(body) => {
                request.body = body;
                let answered = catch_unwind(AssertUnwindSafe(|| handler.handle(&request)));
                match answered {
                    Ok(response) => (response, None),
                    Err(_) => {
                        log::error!(
                            "request handler panicked: {} {}; answered 500",
                            request.method,
                            Printable(&request.path)
                        );
                        (Response::error(&Error::Internal), None)
                    }
                }
            }
            Err(error) => (Response::error(&error), Some(error)),
        };

        let keep = keep_alive
            && failed.as_ref().is_none_or(|e| !e.closes_connection())
            && !context.shutting_down()
            && !context.others_waiting();
        // RFC 9110 §9.3.2: a HEAD response has the GET response's headers
        // (Content-Length included) but no body; sending one would be read
        // as the start of the next response on a kept-alive connection.
        let send_body = request.method != "HEAD";
        write_response(out, &response, request.minor_version, keep, send_body);
        let wrote = conn
            .stream
            .write_all(out)
            .and_then(|()| conn.stream.flush());
        log_and_record(
            handler,
            &request.method,
            &request.path,
            response.status,
            started,
            Some(client),
        );
        if wrote.is_err() {
            return;
        }
        if !keep {
            conn.linger();
            return;
        }
    }
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
    handler.record(&Record {
        method,
        path,
        status,
        duration,
        client,
    });
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

struct Conn<'a, S: Transport> {
    stream: &'a mut S,
    buf: &'a mut [u8],
    /// Unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    /// The socket's read timeout as last set, to skip a setsockopt(2) per
    /// read when a shorter one is already in place.
    read_timeout: Option<Duration>,
}

/// Outcome of one read with a deadline.
enum Read_ {
    Data,
    Closed,
    TimedOut,
}

impl<S: Transport> Conn<'_, S> {
    fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Reads more bytes into the buffer, waiting at most `timeout`.
    fn fill(&mut self, timeout: Duration) -> Read_ {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() || timeout.is_zero() {
            return Read_::TimedOut;
        }
        // A read timeout no longer than `timeout` already set will do: a read
        // that wakes early just reads again until `timeout` has passed. (One
        // far shorter than needed is replaced, so it does not spin.)
        let floor = timeout.min(POLL_SLICE) / 2;
        if self
            .read_timeout
            .is_none_or(|set| set > timeout || set < floor)
        {
            if self.stream.set_read_timeout(Some(timeout)).is_err() {
                return Read_::Closed;
            }
            self.read_timeout = Some(timeout);
        }
        let started = Instant::now();
        loop {
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(0) => return Read_::Closed,
                Ok(n) => {
                    self.end += n;
                    return Read_::Data;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if started.elapsed() + TIMER_SLACK >= timeout {
                        return Read_::TimedOut;
                    }
                }
                Err(_) => return Read_::Closed,
            }
        }
    }

    /// Waits for and parses one request head.
    fn read_head<C: Context + ?Sized>(
        &mut self,
        first: bool,
        accepted: Instant,
        context: &C,
    ) -> Result<Head, NoRequest> {
        let waiting_since = Instant::now();
        // SECURITY: a fresh connection's silence counts from accept. Measured
        // from when a worker took it, every silent connection in a queue
        // full of them (a few hundred from a few dozen addresses) cost a
        // worker the whole grace, and other clients waited in line behind
        // them for many seconds. Time in the queue is no excuse: a client's
        // request follows its handshake at once.
        let silent_since = if first {
            accepted.min(waiting_since)
        } else {
            waiting_since
        };
        // Never give a connection up as silent before having looked at it.
        let mut looked = false;
        // The first request must arrive within HEAD_TIMEOUT of accept; later
        // ones get KEEP_ALIVE_IDLE for their first byte, then HEAD_TIMEOUT.
        let mut deadline: Option<Instant> = first.then(|| waiting_since + HEAD_TIMEOUT);
        loop {
            if self.start < self.end {
                if deadline.is_none() {
                    deadline = Some(Instant::now() + HEAD_TIMEOUT);
                }
                if let Some(head) = self.try_parse_head()? {
                    return Ok(head);
                }
            }
            let now = Instant::now();
            let nothing_yet = self.start == self.end;
            let limit = match deadline {
                Some(d) => d,
                None => waiting_since + KEEP_ALIVE_IDLE,
            };
            if now >= limit {
                return Err(if nothing_yet && !first {
                    NoRequest::Quiet
                } else {
                    NoRequest::Fail(Error::HeadTimeout)
                });
            }
            if nothing_yet {
                // SECURITY: an idle connection holds a worker; give it up at
                // shutdown, or when others are queueing and it has been
                // silent a while (slowloris with empty connections).
                // A fresh connection that has said nothing gets a short grace
                // (its request may be on the way), then goes too, so a
                // silent preconnect cannot hold shutdown for HEAD_TIMEOUT.
                let grace_over = looked && now - silent_since >= IDLE_UNDER_PRESSURE;
                if context.shutting_down() && (!first || grace_over) {
                    return Err(NoRequest::Quiet);
                }
                if context.others_waiting() && grace_over {
                    return Err(if first {
                        NoRequest::Fail(Error::HeadTimeout)
                    } else {
                        NoRequest::Quiet
                    });
                }
            } else if context.others_waiting() {
                // SECURITY: a head trickling in holds a worker too. While
                // others queue, it gets HEAD_TIMEOUT_UNDER_PRESSURE instead
                // of HEAD_TIMEOUT (a real client's head arrives in one
                // round trip), so slowloris from many addresses costs each
                // worker seconds per connection, not ten.
                let head_started = if first {
                    silent_since
                } else {
                    limit - HEAD_TIMEOUT
                };
                if now.saturating_duration_since(head_started) >= HEAD_TIMEOUT_UNDER_PRESSURE {
                    return Err(NoRequest::Fail(Error::HeadTimeout));
                }
            }
            let slice = if !nothing_yet {
                // Wake now and then to notice connections queueing.
                (limit - now).min(POLL_SLICE)
            } else if !looked && now - silent_since >= IDLE_UNDER_PRESSURE {
                // Queued past its grace: bytes already sent are read at
                // once; a silent connection is not worth a poll slice.
                (limit - now).min(FIRST_LOOK)
            } else {
                (limit - now).min(POLL_SLICE)
            };
            let read = self.fill(slice);
            looked = true;
            match read {
                Read_::Data | Read_::TimedOut => {}
                Read_::Closed => {
                    return Err(NoRequest::Quiet);
                }
            }
        }
    }

    /// Parses the buffered bytes as a head, if complete.
    fn try_parse_head(&mut self) -> Result<Option<Head>, NoRequest> {
        match parse_head(&self.buf[self.start..self.end]).map_err(NoRequest::Fail)? {
            Some((head, len)) => {
                self.start += len;
                Ok(Some(head))
            }
            None => Ok(None),
        }
    }

    /// Reads the body the head announced.
    fn read_body(
        &mut self,
        request: &Request,
        content_length: Option<u64>,
        chunked: bool,
        expect_continue: bool,
    ) -> Result<Vec<u8>, Error> {
        let expects_body = chunked || content_length.is_some_and(|n| n > 0);
        if !expects_body {
            if content_length.is_none()
                && matches!(request.method.as_str(), "POST" | "PUT" | "PATCH")
            {
                return Err(Error::LengthRequired);
            }
            return Ok(Vec::new());
        }
        if let Some(length) = content_length {
            // SECURITY: refuse by number; never allocate what was announced.
            if length > MAX_BODY_BYTES as u64 {
                return Err(Error::BodyTooLarge {
                    limit: MAX_BODY_BYTES,
                });
            }
        }
        if expect_continue && request.minor_version >= 1 && self.start == self.end {
            let interim = b"HTTP/1.1 100 Continue\r\n\r\n";
            self.stream
                .write_all(interim)
                .map_err(|_| Error::BodyTimeout)?;
        }
        let deadline = Instant::now() + BODY_TIMEOUT;
        let mut body = Vec::with_capacity(
            content_length
                .map_or(512, |n| n as usize)
                .min(MAX_BODY_BYTES),
        );
        if let Some(length) = content_length {
            // `length` ≤ MAX_BODY_BYTES, checked above.
            let length = length as usize;
            loop {
                let take = (length - body.len()).min(self.end - self.start);
                body.extend_from_slice(&self.buf[self.start..self.start + take]);
                self.start += take;
                if body.len() == length {
                    return Ok(body);
                }
                self.fill_before(deadline)?;
            }
        }
        let mut decoder = ChunkedDecoder::new(MAX_BODY_BYTES);
        loop {
            let used = decoder.feed(self.buffered(), &mut body)?;
            self.start += used;
            if decoder.is_done() {
                return Ok(body);
            }
            self.fill_before(deadline)?;
        }
    }

    fn fill_before(&mut self, deadline: Instant) -> Result<(), Error> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.fill(left) {
            Read_::Data => Ok(()),
            Read_::TimedOut => Err(Error::BodyTimeout),
            Read_::Closed => Err(Error::BadRequest("the connection closed mid-body")),
        }
    }

    /// Closes our side and drains what the client still sends, bounded.
    fn linger(&mut self) {
        if self.stream.shutdown_write().is_err() {
            return;
        }
        let deadline = Instant::now() + LINGER_TIME;
        let mut drained = 0;
        while drained < LINGER_BYTES {
            self.start = 0;
            self.end = 0;
            let left = deadline.saturating_duration_since(Instant::now());
            match self.fill(left) {
                Read_::Data => drained += self.end,
                Read_::Closed | Read_::TimedOut => return,
            }
        }
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
    pub method: String,
    pub path: String,
    pub content_length: Option<u64>,
    pub chunked: bool,
    pub keep_alive: bool,
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

    /// A socket stand-in: reads what `input` holds, then times out after
    /// the read timeout like a real socket; collects what is written.
    #[derive(Default)]
    struct FakeSocket {
        input: Vec<u8>,
        output: Vec<u8>,
        read_timeout: Option<Duration>,
    }

    impl Read for FakeSocket {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.input.is_empty() {
                std::thread::sleep(self.read_timeout.unwrap_or(POLL_SLICE));
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.input.len());
            buf[..n].copy_from_slice(&self.input[..n]);
            self.input.drain(..n);
            Ok(n)
        }
    }

    impl Write for FakeSocket {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Transport for &mut FakeSocket {
        fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
            self.read_timeout = timeout;
            Ok(())
        }
        fn set_write_timeout(&mut self, _: Option<Duration>) -> io::Result<()> {
            Ok(())
        }
        fn shutdown_write(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A server whose queue always has connections waiting.
    struct UnderPressure;

    impl Context for UnderPressure {
        fn shutting_down(&self) -> bool {
            false
        }
        fn others_waiting(&self) -> bool {
            true
        }
        fn client_address(&self, peer: IpAddr, _: Option<&str>) -> IpAddr {
            peer
        }
    }

    struct Ok200;

    impl Handler for Ok200 {
        fn handle(&self, _: &Request) -> Response {
            Response::json(200, b"{}".to_vec())
        }
    }

    /// Runs `socket` as a connection accepted `queued` ago; returns how
    /// long serving it took.
    fn serve_after_queueing(socket: &mut FakeSocket, queued: Duration) -> Duration {
        let accepted = Instant::now() - queued;
        let started = Instant::now();
        serve(
            socket,
            IpAddr::from([192, 0, 2, 1]),
            &Ok200,
            &UnderPressure,
            &mut Buffers::default(),
            accepted,
        );
        started.elapsed()
    }

    #[test]
    fn silent_connection_queued_past_its_grace_is_given_up_at_once_under_pressure() {
        let mut socket = FakeSocket::default();

        let took = serve_after_queueing(&mut socket, Duration::from_secs(2));

        assert!(
            socket.output.starts_with(b"HTTP/1.1 408 "),
            "{}",
            String::from_utf8_lossy(&socket.output)
        );
        // One brief look, no grace, no linger.
        assert!(took < IDLE_UNDER_PRESSURE / 2, "took {took:?}");
    }

    #[test]
    fn fresh_silent_connection_keeps_its_grace_under_pressure() {
        let mut socket = FakeSocket::default();

        let took = serve_after_queueing(&mut socket, Duration::ZERO);

        assert!(socket.output.starts_with(b"HTTP/1.1 408 "));
        assert!(took >= IDLE_UNDER_PRESSURE, "gave up after {took:?}");
    }

    #[test]
    fn request_that_waited_in_the_queue_is_served_however_long_it_waited() {
        let mut socket = FakeSocket {
            input: b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            ..FakeSocket::default()
        };

        serve_after_queueing(&mut socket, Duration::from_secs(5));

        assert!(
            socket.output.starts_with(b"HTTP/1.1 200 OK\r\n"),
            "{}",
            String::from_utf8_lossy(&socket.output)
        );
    }
}
