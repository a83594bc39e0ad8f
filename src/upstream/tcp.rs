//! The TCP layer under the upstream TLS connections: ureq's own
//! `TcpConnector`, minus the system calls a pooled connection does not need.
//!
//! Profiled per `/swap` on a pooled connection (`strace -c`), ureq's TCP
//! transport makes system calls that do no work (docs/performance.md has
//! the counts). This one differs in three places and is otherwise the same (connect to each resolved address
//! in turn, `TCP_NODELAY`, ureq's buffers, ureq's timeouts):
//!
//! - **Liveness probe.** ureq asks `is_open()` when it puts a connection
//!   back in its pool and again when it takes it out; ureq's probe is
//!   `ioctl(FIONBIO)`, `recv`, `ioctl(FIONBIO)`, and the second one runs
//!   under the pool's mutex, which every worker takes. Here the probe is one
//!   `recv(MSG_PEEK | MSG_DONTWAIT)`, and only the take-out probe touches the
//!   socket: a connection going back to the pool is always probed again
//!   before its next use, so probing it on the way in tells nothing more.
//! - **Socket timeouts.** ureq's deadline shrinks by microseconds between
//!   calls, and ureq sets `SO_SNDTIMEO`/`SO_RCVTIMEO` whenever it changes:
//!   three `setsockopt` per request. Here the socket keeps its timeout while
//!   that is at most the time left and at least half of it; when the shorter
//!   socket timeout fires with time still left, the call is retried with the
//!   exact remainder. A deadline is never extended, only enforced in fewer
//!   system calls.
//! - **One send per request.** ureq hands the request head and the form
//!   body over separately, which made two TLS records in two `sendto` (and
//!   woke the server twice). Here output is held until the transport is
//!   asked to wait for input — which every exchange does next — and then
//!   sent in one `write`.
//! - No shutdown registration (nothing here calls `Agent::shutdown`).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use ureq::Timeout;
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, Transport,
};

/// Connector for plain TCP connections to the accounts service; chained
/// before ureq's `RustlsConnector`, which wraps them in TLS.
#[derive(Debug, Default)]
pub(crate) struct UpstreamTcpConnector;

impl<In: Transport> Connector<In> for UpstreamTcpConnector {
    type Out = Either<In, UpstreamTcp>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        // A CONNECT proxy (ureq's connector before this one) already made
        // the connection.
        if let Some(transport) = chained {
            return Ok(Some(Either::A(transport)));
        }
        let stream = connect_any(&details.addrs, details.timeout)?;
        if details.config.no_delay() {
            stream.set_nodelay(true)?;
        }
        let buffers = LazyBuffers::new(
            details.config.input_buffer_size(),
            details.config.output_buffer_size(),
        );
        Ok(Some(Either::B(UpstreamTcp::new(stream, buffers))))
    }
}

/// Tries each address in turn; each gets an equal share of the time left
/// for the addresses not tried yet (the first of one address: all of it).
fn connect_any(addrs: &[SocketAddr], timeout: NextTimeout) -> Result<TcpStream, ureq::Error> {
    let deadline = timeout.not_zero().map(|t| Instant::now() + *t);
    let mut last_error = None;
    for (i, addr) in addrs.iter().enumerate() {
        let attempt = match deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(ureq::Error::Timeout(Timeout::Connect));
                }
                let share = left / u32::try_from(addrs.len() - i).unwrap_or(u32::MAX);
                TcpStream::connect_timeout(addr, share.max(Duration::from_millis(10)))
            }
            None => TcpStream::connect(addr),
        };
        match attempt {
            Ok(stream) => return Ok(stream),
            Err(e) if is_timeout(&e) => last_error = Some(ureq::Error::Timeout(Timeout::Connect)),
            Err(e) => last_error = Some(e.into()),
        }
    }
    Err(last_error.unwrap_or(ureq::Error::ConnectionFailed))
}

/// One upstream TCP connection.
pub(crate) struct UpstreamTcp {
    stream: TcpStream,
    buffers: LazyBuffers,
    /// What `SO_SNDTIMEO` / `SO_RCVTIMEO` are set to now (`None`: no timeout).
    write_timeout: Option<Duration>,
    read_timeout: Option<Duration>,
    /// Output handed over but not sent yet (see the module docs).
    unsent: Vec<u8>,
    /// Set by I/O, cleared by `is_open`: the first `is_open` after a call is
    /// ureq returning the connection to its pool (see the module docs).
    used_since_probe: bool,
}

/// SECURITY: the buffers hold requests to Spotify — the `Authorization`
/// header, codes, refresh tokens — so `Debug` shows only their sizes.
impl std::fmt::Debug for UpstreamTcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTcp")
            .field("peer", &self.stream.peer_addr().ok())
            .field("unsent_bytes", &self.unsent.len())
            .field("buffered_input_bytes", &self.buffers.input().len())
            .finish_non_exhaustive()
    }
}

impl UpstreamTcp {
    fn new(stream: TcpStream, buffers: LazyBuffers) -> UpstreamTcp {
        UpstreamTcp {
            stream,
            buffers,
            write_timeout: None,
            read_timeout: None,
            unsent: Vec::new(),
            used_since_probe: false,
        }
    }
}

impl UpstreamTcp {
    /// Sends the held output, if any.
    fn send_unsent(&mut self, timeout: NextTimeout) -> Result<(), ureq::Error> {
        if self.unsent.is_empty() {
            return Ok(());
        }
        let deadline = Deadline::new(timeout)?;
        let mut sent = 0;
        while sent < self.unsent.len() {
            let (stream, unsent) = (&self.stream, &self.unsent);
            let n = deadline.run(&mut self.write_timeout, Direction::Write, stream, || {
                (&*stream).write(&unsent[sent..])
            })?;
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::WriteZero).into());
            }
            sent += n;
        }
        self.unsent.clear();
        Ok(())
    }
}

impl Transport for UpstreamTcp {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        Deadline::new(timeout.for_write())?;
        self.used_since_probe = true;
        self.unsent
            .extend_from_slice(&self.buffers.output()[..amount]);
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        // The held output goes out under the same budget the answer is
        // awaited with: the request's remaining time.
        self.send_unsent(timeout.for_write())?;
        let timeout = timeout.for_read();
        let deadline = Deadline::new(timeout)?;
        self.used_since_probe = true;
        let stream = &self.stream;
        let input = self.buffers.input_append_buf();
        let n = deadline.run(&mut self.read_timeout, Direction::Read, stream, || {
            (&*stream).read(input)
        })?;
        self.buffers.input_appended(n);
        Ok(n > 0)
    }

    fn is_open(&mut self) -> bool {
        if std::mem::take(&mut self.used_since_probe) {
            return true;
        }
        peer_is_quiet(&self.stream)
    }
}

/// True when nothing (no byte, no FIN, no error) is waiting on the socket:
/// an idle keep-alive connection the peer has not closed.
fn peer_is_quiet(stream: &TcpStream) -> bool {
    let mut byte = 0u8;
    // SAFETY: `byte` is a valid, writable 1-byte buffer for the whole call,
    // and the descriptor is owned by `stream`, which outlives the call.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            (&raw mut byte).cast::<libc::c_void>(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
}

#[derive(Clone, Copy)]
enum Direction {
    Read,
    Write,
}

/// When the current transport call must be over, and why.
struct Deadline {
    at: Option<Instant>,
    reason: Timeout,
}

impl Deadline {
    fn new(timeout: NextTimeout) -> Result<Deadline, ureq::Error> {
        if timeout.after.is_zero() {
            return Err(ureq::Error::Timeout(timeout.reason));
        }
        let at = (!timeout.after.is_not_happening()).then(|| Instant::now() + *timeout.after);
        Ok(Deadline {
            at,
            reason: timeout.reason,
        })
    }

    fn left(&self) -> Result<Option<Duration>, ureq::Error> {
        match self.at {
            None => Ok(None),
            Some(at) => match at.saturating_duration_since(Instant::now()) {
                left if left.is_zero() => Err(ureq::Error::Timeout(self.reason)),
                left => Ok(Some(left)),
            },
        }
    }

    /// Runs `op` (one blocking read or write) with the socket timeout kept
    /// within the deadline, retrying when a socket timeout shorter than the
    /// deadline fires or a signal interrupts.
    fn run(
        &self,
        current: &mut Option<Duration>,
        direction: Direction,
        stream: &TcpStream,
        mut op: impl FnMut() -> io::Result<usize>,
    ) -> Result<usize, ureq::Error> {
        loop {
            let left = self.left()?;
            if !timeout_fits(*current, left) {
                match direction {
                    Direction::Read => stream.set_read_timeout(left)?,
                    Direction::Write => stream.set_write_timeout(left)?,
                }
                *current = left;
            }
            match op() {
                Ok(n) => return Ok(n),
                Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Whether a socket timeout of `current` may stand for `wanted`: never
/// longer than the time left, and not so much shorter that it fires often.
fn timeout_fits(current: Option<Duration>, wanted: Option<Duration>) -> bool {
    match (current, wanted) {
        (Some(current), Some(wanted)) => current <= wanted && current >= wanted / 2,
        (None, None) => true,
        _ => false,
    }
}

/// A blocking socket call ran out of its `SO_*TIMEO`.
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn pair() -> (UpstreamTcp, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (
            UpstreamTcp::new(client, LazyBuffers::new(1024, 1024)),
            server,
        )
    }

    fn within(after: Duration) -> NextTimeout {
        NextTimeout {
            after: after.into(),
            reason: Timeout::Global,
            per_read: None,
            per_write: None,
        }
    }

    #[test]
    fn an_idle_open_connection_is_open() {
        let (mut conn, _server) = pair();
        assert!(conn.is_open());
        assert!(conn.is_open(), "probing must not consume anything");
    }

    #[test]
    fn a_connection_the_peer_closed_is_not_open() {
        let (mut conn, server) = pair();
        drop(server);
        std::thread::sleep(Duration::from_millis(20));
        assert!(!conn.is_open());
    }

    #[test]
    fn unexpected_bytes_from_the_peer_make_it_not_open() {
        let (mut conn, mut server) = pair();
        server.write_all(b"x").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert!(!conn.is_open());
    }

    #[test]
    fn the_pool_return_probe_is_skipped_and_the_next_one_is_not() {
        let (mut conn, mut server) = pair();
        conn.buffers.output()[..4].copy_from_slice(b"ping");
        conn.transmit_output(4, within(Duration::from_secs(1)))
            .unwrap();
        server.write_all(b"pong").unwrap();
        assert!(conn.await_input(within(Duration::from_secs(1))).unwrap());
        let mut got = [0; 4];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        drop(server);
        std::thread::sleep(Duration::from_millis(20));
        assert!(conn.is_open(), "first probe after I/O: the pool return");
        assert!(!conn.is_open(), "the take-out probe sees the close");
    }

    #[test]
    fn output_handed_over_in_parts_leaves_in_one_send_before_the_wait() {
        let (mut conn, mut server) = pair();
        for part in [&b"head "[..], b"body"] {
            conn.buffers.output()[..part.len()].copy_from_slice(part);
            conn.transmit_output(part.len(), within(Duration::from_secs(1)))
                .unwrap();
        }
        server
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut got = [0; 16];
        let early = server.read(&mut got);
        assert!(early.is_err(), "nothing is sent before the wait: {early:?}");
        let answer = std::thread::spawn(move || {
            let mut got = [0; 9];
            server
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            server.read_exact(&mut got).unwrap();
            server.write_all(b"ok").unwrap();
            (got, server)
        });
        assert!(conn.await_input(within(Duration::from_secs(2))).unwrap());
        assert_eq!(conn.buffers.input(), b"ok");
        let (got, _server) = answer.join().unwrap();
        assert_eq!(&got, b"head body");
    }

    #[test]
    fn debug_shows_no_request_bytes() {
        let (mut conn, _server) = pair();
        let secret = b"Authorization: Basic c2VjcmV0 code=plugh";
        conn.buffers.output()[..secret.len()].copy_from_slice(secret);
        conn.transmit_output(secret.len(), within(Duration::from_secs(1)))
            .unwrap();
        let debug = format!("{conn:?}");
        assert!(
            debug.contains(&format!("unsent_bytes: {}", secret.len())),
            "{debug}"
        );
        for leak in ["c2VjcmV0", "plugh", "99, 50"] {
            assert!(!debug.contains(leak), "{debug}");
        }
    }

    #[test]
    fn a_read_gets_its_whole_deadline_although_the_socket_timeout_is_shorter() {
        let (mut conn, mut server) = pair();
        // Leave a 400 ms socket timeout from an earlier call.
        conn.stream
            .set_read_timeout(Some(Duration::from_millis(400)))
            .unwrap();
        conn.read_timeout = Some(Duration::from_millis(400));
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            server.write_all(b"late").unwrap();
            server
        });
        let started = Instant::now();
        // 400 ms fits a 790 ms deadline (not above it, not below half), so
        // the socket keeps it, fires early, and the read is retried; the
        // deadline leaves the writer 290 ms of slack on a busy machine.
        assert!(
            conn.await_input(within(Duration::from_millis(790)))
                .unwrap()
        );
        assert!(started.elapsed() >= Duration::from_millis(490));
        assert_eq!(conn.buffers.input(), b"late");
        drop(writer.join().unwrap());
    }

    #[test]
    fn a_read_past_its_deadline_is_a_timeout_on_time() {
        let (mut conn, _server) = pair();
        let started = Instant::now();
        let err = conn
            .await_input(within(Duration::from_millis(120)))
            .unwrap_err();
        assert!(
            matches!(err, ureq::Error::Timeout(Timeout::Global)),
            "{err:?}"
        );
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(110), "{took:?}");
        assert!(took < Duration::from_millis(600), "{took:?}");
    }

    #[test]
    fn socket_timeouts_are_kept_within_half_to_all_of_the_time_left() {
        let s = Duration::from_secs;
        assert!(timeout_fits(Some(s(10)), Some(s(10))));
        assert!(timeout_fits(Some(s(6)), Some(s(10))));
        assert!(!timeout_fits(Some(s(11)), Some(s(10))), "never longer");
        assert!(!timeout_fits(Some(s(4)), Some(s(10))), "not far shorter");
        assert!(!timeout_fits(None, Some(s(10))));
        assert!(!timeout_fits(Some(s(10)), None));
        assert!(timeout_fits(None, None));
    }

    #[test]
    fn connect_tries_the_next_address_when_one_refuses() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let refused = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let stream = connect_any(
            &[refused, listener.local_addr().unwrap()],
            within(Duration::from_secs(2)),
        )
        .unwrap();
        assert_eq!(stream.peer_addr().unwrap(), listener.local_addr().unwrap());
        let err = connect_any(&[refused], within(Duration::from_secs(2))).unwrap_err();
        assert!(matches!(err, ureq::Error::Io(_)), "{err:?}");
    }
}
