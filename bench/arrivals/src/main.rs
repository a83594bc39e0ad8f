//! Open-loop keep-alive clients for bench/bench.py. Loopback only.
//!
//! ```text
//! arrivals arrivals --port P --rate R [--secs 10] [--idle 5] [--timeout 10]
//!          [--path /swap] [--body code=...] [--sources N] [--src-base 127.1.0.1]
//! arrivals idle --port P [--conns 10000] [--concurrency 256] [--open-secs 20]
//!          [--bystander 200] [--sources N] [--src-base 127.1.0.1]
//! ```
//!
//! `arrivals`: client i is due at start + i/R seconds, for `secs` seconds,
//! whatever happened to the clients before it (open loop). Each connects
//! (nonblocking), sends one request (POST with `--body`, else GET), reads the
//! whole answer, stays connected and idle `idle` seconds, and closes. Latency
//! is measured from the client's *scheduled* time to the last byte of the
//! answer, so a late generator or a server that makes connects wait is never
//! hidden; the generator's own lateness is reported too (`lag_*`). An answer
//! not complete `timeout` seconds after the scheduled time is a timeout.
//! One JSON line on stdout at the end.
//!
//! `idle`: opens `conns` connections (at most `concurrency` not yet answered
//! at a time), each sending one `GET /health` and then staying idle; prints a
//! `{"event":"holding",...}` line, waits for a line on stdin (the caller
//! samples the server's /proc meanwhile), then runs the bystander: `bystander`
//! sequential `GET /health`, each on a new connection from 127.0.0.1, timed
//! from connect start to the last byte; then counts how many idle connections
//! are still open and prints the final JSON line.
//!
//! Client i's source address is the (i mod `sources`)-th address from
//! `src-base` (last octets 0 and 255 skipped), so a per-address connection
//! cap can be kept out of the way. Everything is bounded: clients (at most
//! 1,000,000), open sockets (the RLIMIT_NOFILE soft limit, raised first, less
//! a margin: a client that finds no free socket is counted as an error,
//! `local`), and time. One thread, epoll, a timerfd for the clock.

use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::process::exit;

const MAX_CLIENTS: u64 = 1_000_000;
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
const TIMER: u64 = u64::MAX;
const FD_MARGIN: usize = 64;

thread_local! {
    static SCHED: std::cell::Cell<&'static str> = const { std::cell::Cell::new("other") };
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn die(msg: &str) -> ! {
    eprintln!("arrivals: {msg}");
    exit(2)
}

struct Opts {
    mode: String,
    port: u16,
    rate: f64,
    secs: f64,
    idle: f64,
    timeout: f64,
    path: String,
    body: Option<String>,
    sources: u32,
    src_base: [u8; 4],
    conns: usize,
    concurrency: usize,
    open_secs: f64,
    bystander: usize,
}

fn parse_args() -> Opts {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(mode) = args.first().cloned() else {
        die("usage: arrivals arrivals|idle --port P [...] (see the source's header)")
    };
    if mode != "arrivals" && mode != "idle" {
        die("mode must be 'arrivals' or 'idle'");
    }
    let mut o = Opts {
        mode,
        port: 0,
        rate: 100.0,
        secs: 10.0,
        idle: 5.0,
        timeout: 10.0,
        path: String::new(),
        body: None,
        sources: 1,
        src_base: [127, 0, 0, 1],
        conns: 10_000,
        concurrency: 256,
        open_secs: 20.0,
        bystander: 200,
    };
    let mut it = args[1..].iter();
    while let Some(k) = it.next() {
        let v = it
            .next()
            .unwrap_or_else(|| die(&format!("{k} needs a value")));
        let num = |v: &str| -> f64 {
            v.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .unwrap_or_else(|| die(&format!("{k}: not a number: {v}")))
        };
        match k.as_str() {
            "--port" => o.port = num(v) as u16,
            "--rate" => o.rate = num(v),
            "--secs" => o.secs = num(v),
            "--idle" => o.idle = num(v),
            "--timeout" => o.timeout = num(v),
            "--path" => o.path = v.clone(),
            "--body" => o.body = Some(v.clone()),
            "--sources" => o.sources = num(v) as u32,
            "--src-base" => {
                let ip: std::net::Ipv4Addr = v
                    .parse()
                    .unwrap_or_else(|_| die("--src-base: not an IPv4 address"));
                o.src_base = ip.octets();
            }
            "--conns" => o.conns = num(v) as usize,
            "--concurrency" => o.concurrency = num(v) as usize,
            "--open-secs" => o.open_secs = num(v),
            "--bystander" => o.bystander = num(v) as usize,
            _ => die(&format!("unknown option {k}")),
        }
    }
    if o.port == 0 {
        die("--port is required");
    }
    if o.src_base[0] != 127 {
        die("--src-base must be in 127.0.0.0/8 (loopback only)");
    }
    if o.sources == 0 || o.concurrency == 0 || o.rate <= 0.0 || o.timeout <= 0.0 {
        die("--sources, --concurrency, --rate and --timeout must be positive");
    }
    if o.path.is_empty() {
        o.path = if o.mode == "idle" {
            "/health".into()
        } else {
            "/swap".into()
        };
    }
    o
}

/// Source addresses (network byte order), last octets 0 and 255 skipped,
/// all inside 127.0.0.0/8.
fn sources(base: [u8; 4], n: u32) -> Vec<u32> {
    let mut out = Vec::with_capacity(n as usize);
    let mut a = u32::from_be_bytes(base);
    while out.len() < n as usize {
        let last = a & 0xff;
        if last != 0 && last != 255 {
            out.push(a.to_be());
        }
        a = a.wrapping_add(1);
        if a >> 24 != 127 {
            die("--sources runs past 127.255.255.254");
        }
    }
    out
}

/// Raises RLIMIT_NOFILE: the hard limit to at least 65,536 where allowed
/// (root), the soft limit to the hard one. Returns the soft limit in force.
fn raise_nofile() -> usize {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: r is a valid rlimit to fill and read.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        let want = r.rlim_max.max(65_536);
        let up = libc::rlimit {
            rlim_cur: want,
            rlim_max: want,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &up) != 0 {
            let soft = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &soft);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
    }
    r.rlim_cur as usize
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum St {
    New,
    Connecting,
    Reading,
    Idle,
    Done,
}

struct Client {
    fd: i32,
    st: St,
    sched: u64,
    buf: Vec<u8>,
}

#[derive(Default)]
struct Errors {
    connect: u64,
    reset: u64,
    eof: u64,
    non200: u64,
    timeout: u64,
    timeout_unconnected: u64,
    local: u64,
    bad_response: u64,
}

impl Errors {
    fn total(&self) -> u64 {
        self.connect
            + self.reset
            + self.eof
            + self.non200
            + self.timeout
            + self.local
            + self.bad_response
    }
    fn json(&self) -> String {
        format!(
            "{{\"connect\":{},\"reset\":{},\"eof\":{},\"non200\":{},\"timeout\":{},\
             \"timeout_unconnected\":{},\"local\":{},\"bad_response\":{}}}",
            self.connect,
            self.reset,
            self.eof,
            self.non200,
            self.timeout,
            self.timeout_unconnected,
            self.local,
            self.bad_response
        )
    }
}

enum Parse {
    More,
    Done { status: u16, close: bool },
    Bad,
}

/// A whole HTTP/1.1 answer in buf? (Content-Length or chunked; without
/// either the answer ends at EOF, handled by the caller.)
fn parse(buf: &[u8], eof: bool) -> Parse {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_RESPONSE_BYTES {
            Parse::Bad
        } else {
            Parse::More
        };
    };
    let head = match std::str::from_utf8(&buf[..head_end]) {
        Ok(h) => h,
        Err(_) => return Parse::Bad,
    };
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = match status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
    {
        Some(s) if status_line.starts_with("HTTP/1.") => s,
        _ => return Parse::Bad,
    };
    let (mut length, mut chunked, mut close) = (None, false, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<usize>().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.to_ascii_lowercase().contains("close");
        }
    }
    let body = buf.len() - head_end - 4;
    let done = if chunked {
        buf.ends_with(b"0\r\n\r\n")
    } else if let Some(n) = length {
        body >= n
    } else {
        eof
    };
    if done {
        Parse::Done { status, close }
    } else if buf.len() > MAX_RESPONSE_BYTES {
        Parse::Bad
    } else {
        Parse::More
    }
}

struct Gen {
    ep: i32,
    tfd: i32,
    request: Vec<u8>,
    port: u16,
    srcs: Vec<u32>,
    clients: Vec<Client>,
    open: usize,
    max_open: usize,
    peak_open: usize,
    /// Clients connecting or waiting for their answer.
    in_flight: usize,
    errors: Errors,
    ok_lat: Vec<u64>,
    lag: Vec<u64>,
    statuses: std::collections::BTreeMap<u16, u64>,
    connection_close: u64,
    closed_while_idle: u64,
    timeouts: VecDeque<(u64, usize)>,
    idle_ends: VecDeque<(u64, usize)>,
    timeout_ns: u64,
    /// None: idle until the end (idle mode).
    idle_ns: Option<u64>,
    /// Open-loop schedule (arrivals mode): client i is due at t0 + i/rate.
    t0: u64,
    rate: f64,
    total: u64,
    next: u64,
}

impl Gen {
    fn new(o: &Opts, request: Vec<u8>, idle_ns: Option<u64>, nofile: usize) -> Gen {
        // SAFETY: plain syscalls creating descriptors we own.
        let (ep, tfd) = unsafe {
            (
                libc::epoll_create1(libc::EPOLL_CLOEXEC),
                libc::timerfd_create(
                    libc::CLOCK_MONOTONIC,
                    libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
                ),
            )
        };
        if ep < 0 || tfd < 0 {
            die("epoll_create1/timerfd_create failed");
        }
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: TIMER,
        };
        // SAFETY: valid descriptors and event.
        unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, tfd, &mut ev) };
        Gen {
            ep,
            tfd,
            request,
            port: o.port,
            srcs: sources(o.src_base, o.sources),
            clients: Vec::new(),
            open: 0,
            max_open: nofile.saturating_sub(FD_MARGIN),
            peak_open: 0,
            in_flight: 0,
            errors: Errors::default(),
            ok_lat: Vec::new(),
            lag: Vec::new(),
            statuses: Default::default(),
            connection_close: 0,
            closed_while_idle: 0,
            timeouts: VecDeque::new(),
            idle_ends: VecDeque::new(),
            timeout_ns: (o.timeout * 1e9) as u64,
            idle_ns,
            t0: 0,
            rate: o.rate,
            total: 0,
            next: 0,
        }
    }

    fn arm_timer(&self, at: u64) {
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (at / 1_000_000_000) as libc::time_t,
                tv_nsec: (at % 1_000_000_000).max(1) as libc::c_long,
            },
        };
        // SAFETY: valid timerfd and itimerspec.
        unsafe {
            libc::timerfd_settime(
                self.tfd,
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
    }

    fn sched(&self, i: u64) -> u64 {
        self.t0 + (i as f64 * 1e9 / self.rate) as u64
    }

    /// Starts every client due by now. Called between any two pieces of
    /// work, so a batch of events never delays an arrival by more than one
    /// event's handling.
    fn arrive(&mut self) {
        if self.next >= self.total {
            return;
        }
        let now = now_ns();
        while self.next < self.total && self.sched(self.next) <= now {
            let id = self.new_client();
            let at = self.sched(self.next);
            self.start(id, at);
            self.next += 1;
        }
    }

    /// Starts client `id` (already pushed, state New), scheduled at `sched`.
    fn start(&mut self, id: usize, sched: u64) {
        self.clients[id].sched = sched;
        self.timeouts.push_back((sched + self.timeout_ns, id));
        if self.open >= self.max_open {
            self.errors.local += 1;
            self.clients[id].st = St::Done;
            return;
        }
        let started = now_ns();
        self.lag.push(started.saturating_sub(sched));
        // SAFETY: socket setup on a descriptor we own; the sockaddr is valid.
        let fd = unsafe {
            let fd = libc::socket(
                libc::AF_INET,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            );
            if fd < 0 {
                self.errors.local += 1;
                self.clients[id].st = St::Done;
                return;
            }
            let one: libc::c_int = 1;
            let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            let p = &one as *const libc::c_int as *const libc::c_void;
            libc::setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, p, len);
            let src = self.srcs[id % self.srcs.len()];
            if src != u32::from_be_bytes([127, 0, 0, 1]).to_be() || self.srcs.len() > 1 {
                libc::setsockopt(fd, libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT, p, len);
                let mut sa: libc::sockaddr_in = std::mem::zeroed();
                sa.sin_family = libc::AF_INET as libc::sa_family_t;
                sa.sin_addr.s_addr = src;
                let salen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
                if libc::bind(fd, &sa as *const _ as *const libc::sockaddr, salen) != 0 {
                    libc::close(fd);
                    self.errors.local += 1;
                    self.clients[id].st = St::Done;
                    return;
                }
            }
            let mut sa: libc::sockaddr_in = std::mem::zeroed();
            sa.sin_family = libc::AF_INET as libc::sa_family_t;
            sa.sin_port = self.port.to_be();
            sa.sin_addr.s_addr = u32::from_be_bytes([127, 0, 0, 1]).to_be();
            let salen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let r = libc::connect(fd, &sa as *const _ as *const libc::sockaddr, salen);
            if r != 0 && errno() != libc::EINPROGRESS {
                libc::close(fd);
                self.errors.connect += 1;
                self.clients[id].st = St::Done;
                return;
            }
            let mut ev = libc::epoll_event {
                events: (libc::EPOLLOUT | libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
                u64: id as u64,
            };
            libc::epoll_ctl(self.ep, libc::EPOLL_CTL_ADD, fd, &mut ev);
            fd
        };
        self.open += 1;
        self.peak_open = self.peak_open.max(self.open);
        self.in_flight += 1;
        let c = &mut self.clients[id];
        c.fd = fd;
        c.st = St::Connecting;
    }

    /// Counts every client still waiting for an answer as timed out and
    /// closes it; with `idle_too`, closes the idle ones as well.
    fn time_out_unanswered(&mut self, idle_too: bool) {
        for id in 0..self.clients.len() {
            if matches!(self.clients[id].st, St::Connecting | St::Reading) {
                self.errors.timeout += 1;
                self.close(id);
            } else if idle_too && self.clients[id].st == St::Idle {
                self.close(id);
            }
        }
    }

    fn close(&mut self, id: usize) {
        let c = &mut self.clients[id];
        if matches!(c.st, St::Connecting | St::Reading) {
            self.in_flight -= 1;
        }
        if c.fd >= 0 {
            // SAFETY: our descriptor, closed once (fd reset below).
            unsafe { libc::close(c.fd) };
            c.fd = -1;
            self.open -= 1;
        }
        c.st = St::Done;
        c.buf = Vec::new();
    }

    fn event(&mut self, id: usize, events: u32) {
        let st = self.clients[id].st;
        let fd = self.clients[id].fd;
        match st {
            St::Connecting => {
                if events & (libc::EPOLLOUT | libc::EPOLLERR | libc::EPOLLHUP) as u32 == 0 {
                    return;
                }
                let mut err: libc::c_int = 0;
                let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
                // SAFETY: valid descriptor and out-parameters.
                unsafe {
                    libc::getsockopt(
                        fd,
                        libc::SOL_SOCKET,
                        libc::SO_ERROR,
                        &mut err as *mut _ as *mut libc::c_void,
                        &mut len,
                    )
                };
                if err != 0 {
                    if err == libc::ECONNRESET || err == libc::EPIPE {
                        self.errors.reset += 1;
                    } else {
                        self.errors.connect += 1;
                    }
                    self.close(id);
                    return;
                }
                // The request is small: one send, or it counts as a reset.
                // SAFETY: valid descriptor and buffer.
                let n = unsafe {
                    libc::send(
                        fd,
                        self.request.as_ptr() as *const libc::c_void,
                        self.request.len(),
                        libc::MSG_NOSIGNAL,
                    )
                };
                if n != self.request.len() as isize {
                    self.errors.reset += 1;
                    self.close(id);
                    return;
                }
                let mut ev = libc::epoll_event {
                    events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
                    u64: id as u64,
                };
                // SAFETY: valid descriptors and event.
                unsafe { libc::epoll_ctl(self.ep, libc::EPOLL_CTL_MOD, fd, &mut ev) };
                self.clients[id].st = St::Reading;
                self.clients[id].buf = Vec::with_capacity(1024);
                // The answer may already be there.
                self.read(id);
            }
            St::Reading => self.read(id),
            St::Idle => {
                // Anything now is the server closing (or resetting) the
                // idle connection: not an error, counted.
                let mut b = [0u8; 512];
                // SAFETY: valid descriptor and buffer.
                let n = unsafe {
                    libc::recv(
                        fd,
                        b.as_mut_ptr() as *mut libc::c_void,
                        b.len(),
                        libc::MSG_DONTWAIT,
                    )
                };
                if n > 0 || (n < 0 && errno() == libc::EAGAIN) {
                    return;
                }
                self.closed_while_idle += 1;
                self.close(id);
            }
            St::New | St::Done => {}
        }
    }

    fn read(&mut self, id: usize) {
        let fd = self.clients[id].fd;
        let mut eof = false;
        loop {
            let mut b = [0u8; 16 * 1024];
            // SAFETY: valid descriptor and buffer.
            let n = unsafe {
                libc::recv(
                    fd,
                    b.as_mut_ptr() as *mut libc::c_void,
                    b.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n > 0 {
                self.clients[id].buf.extend_from_slice(&b[..n as usize]);
                if self.clients[id].buf.len() > MAX_RESPONSE_BYTES {
                    break;
                }
                continue;
            }
            if n == 0 {
                eof = true;
                break;
            }
            let e = errno();
            if e == libc::EAGAIN || e == libc::EWOULDBLOCK {
                break;
            }
            if e == libc::EINTR {
                continue;
            }
            self.errors.reset += 1;
            self.close(id);
            return;
        }
        match parse(&self.clients[id].buf, eof) {
            Parse::More if !eof => {}
            Parse::More => {
                self.errors.eof += 1;
                self.close(id);
            }
            Parse::Bad => {
                self.errors.bad_response += 1;
                self.close(id);
            }
            Parse::Done { status, close } => {
                let now = now_ns();
                let c = &mut self.clients[id];
                *self.statuses.entry(status).or_insert(0) += 1;
                if close {
                    self.connection_close += 1;
                }
                if status == 200 {
                    self.ok_lat.push(now - c.sched);
                } else {
                    self.errors.non200 += 1;
                }
                if status != 200 || eof {
                    self.close(id);
                    return;
                }
                c.st = St::Idle;
                c.buf = Vec::new();
                self.in_flight -= 1;
                if let Some(idle) = self.idle_ns {
                    self.idle_ends.push_back((now + idle, id));
                }
            }
        }
    }

    /// Timeouts and idle ends due by `now`.
    fn expire(&mut self, now: u64) {
        while let Some(&(at, id)) = self.timeouts.front() {
            if at > now {
                break;
            }
            self.timeouts.pop_front();
            self.arrive();
            match self.clients[id].st {
                St::Connecting | St::Reading => {
                    self.errors.timeout += 1;
                    if self.clients[id].st == St::Connecting {
                        self.errors.timeout_unconnected += 1;
                    }
                    self.close(id);
                }
                _ => {}
            }
        }
        while let Some(&(at, id)) = self.idle_ends.front() {
            if at > now {
                break;
            }
            self.idle_ends.pop_front();
            self.arrive();
            if self.clients[id].st == St::Idle {
                self.close(id);
            }
        }
    }

    fn next_deadline(&self) -> Option<u64> {
        let a = self.timeouts.front().map(|x| x.0);
        let b = self.idle_ends.front().map(|x| x.0);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Waits for events until `wake` (absolute, CLOCK_MONOTONIC ns) at most.
    fn poll(&mut self, wake: u64) {
        self.arm_timer(wake);
        let mut evs = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        // SAFETY: valid epoll descriptor and buffer.
        let n = unsafe { libc::epoll_wait(self.ep, evs.as_mut_ptr(), evs.len() as i32, -1) };
        for ev in evs.iter().take(n.max(0) as usize) {
            self.arrive();
            let (id, events) = (ev.u64, ev.events);
            if id == TIMER {
                let mut b = [0u8; 8];
                // SAFETY: valid timerfd, 8-byte buffer.
                unsafe { libc::read(self.tfd, b.as_mut_ptr() as *mut libc::c_void, 8) };
                continue;
            }
            self.event(id as usize, events);
        }
    }

    fn new_client(&mut self) -> usize {
        self.clients.push(Client {
            fd: -1,
            st: St::New,
            sched: 0,
            buf: Vec::new(),
        });
        self.clients.len() - 1
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return -1.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1] as f64 / 1e6
}

fn ms(x: f64) -> String {
    if x < 0.0 {
        "null".into()
    } else {
        format!("{x:.3}")
    }
}

fn build_request(o: &Opts) -> Vec<u8> {
    match &o.body {
        Some(body) => format!(
            "POST {} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUser-Agent: bench-arrivals\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{}",
            o.path,
            o.port,
            body.len(),
            body
        )
        .into_bytes(),
        None => format!(
            "GET {} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUser-Agent: bench-arrivals\r\n\r\n",
            o.path, o.port
        )
        .into_bytes(),
    }
}

fn statuses_json(m: &std::collections::BTreeMap<u16, u64>) -> String {
    let parts: Vec<String> = m.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    format!("{{{}}}", parts.join(","))
}

fn arrivals(o: &Opts, nofile: usize) {
    let total = (o.rate * o.secs).round() as u64;
    if total > MAX_CLIENTS {
        die(&format!(
            "rate × secs = {total} clients, more than {MAX_CLIENTS}"
        ));
    }
    let mut g = Gen::new(o, build_request(o), Some((o.idle * 1e9) as u64), nofile);
    g.clients.reserve(total as usize);
    g.t0 = now_ns() + 20_000_000;
    g.total = total;
    let t0 = g.t0;
    // Hard end: the last arrival, its timeout and its idle time, and slack.
    let hard_end = g.sched(total) + g.timeout_ns + (o.idle * 1e9) as u64 + 5_000_000_000;
    loop {
        g.arrive();
        let now = now_ns();
        g.expire(now);
        if g.next == total && g.open == 0 {
            break;
        }
        if now >= hard_end {
            break;
        }
        let mut wake = hard_end;
        if g.next < total {
            wake = wake.min(g.sched(g.next));
        }
        if let Some(d) = g.next_deadline() {
            wake = wake.min(d);
        }
        g.poll(wake);
    }
    let elapsed = (now_ns() - t0) as f64 / 1e9;
    // Anything still unanswered at the hard end is a timeout.
    g.time_out_unanswered(true);
    g.ok_lat.sort_unstable();
    g.lag.sort_unstable();
    println!(
        "{{\"mode\":\"arrivals\",\"port\":{},\"rate\":{},\"secs\":{},\"idle_secs\":{},\
         \"timeout_secs\":{},\"sources\":{},\"clients\":{},\"ok\":{},\"p50_ms\":{},\
         \"p90_ms\":{},\"p99_ms\":{},\"max_ms\":{},\"errors_total\":{},\"errors\":{},\
         \"statuses\":{},\"connection_close\":{},\"closed_by_server_while_idle\":{},\
         \"lag_p50_ms\":{},\"lag_p99_ms\":{},\"lag_max_ms\":{},\"peak_open\":{},\
         \"nofile\":{},\"sched\":\"{}\",\"elapsed_s\":{:.2}}}",
        o.port,
        o.rate,
        o.secs,
        o.idle,
        o.timeout,
        o.sources,
        total,
        g.ok_lat.len(),
        ms(percentile(&g.ok_lat, 50.0)),
        ms(percentile(&g.ok_lat, 90.0)),
        ms(percentile(&g.ok_lat, 99.0)),
        ms(percentile(&g.ok_lat, 100.0)),
        g.errors.total(),
        g.errors.json(),
        statuses_json(&g.statuses),
        g.connection_close,
        g.closed_while_idle,
        ms(percentile(&g.lag, 50.0)),
        ms(percentile(&g.lag, 99.0)),
        ms(percentile(&g.lag, 100.0)),
        g.peak_open,
        nofile,
        SCHED.with(|s| s.get()),
        elapsed
    );
}

/// One GET on a new blocking-with-deadline connection from 127.0.0.1.
/// Returns the latency in ns, or the kind of error.
fn bystander_once(port: u16, timeout_ns: u64) -> Result<u64, &'static str> {
    let start = now_ns();
    let deadline = start + timeout_ns;
    let req = format!(
        "GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: bench-bystander\r\n\r\n"
    );
    // SAFETY: a descriptor we own, closed on every path below.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err("local");
    }
    let result = (|| {
        let wait = |events: i16| -> Result<(), &'static str> {
            let now = now_ns();
            if now >= deadline {
                return Err("timeout");
            }
            let mut p = libc::pollfd {
                fd,
                events,
                revents: 0,
            };
            let ms = ((deadline - now) / 1_000_000).max(1) as i32;
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut p, 1, ms) };
            if n == 0 {
                Err("timeout")
            } else {
                Ok(())
            }
        };
        // SAFETY: valid descriptor and sockaddr.
        unsafe {
            let one: libc::c_int = 1;
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                &one as *const _ as *const libc::c_void,
                4,
            );
            let mut sa: libc::sockaddr_in = std::mem::zeroed();
            sa.sin_family = libc::AF_INET as libc::sa_family_t;
            sa.sin_port = port.to_be();
            sa.sin_addr.s_addr = u32::from_be_bytes([127, 0, 0, 1]).to_be();
            let salen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            if libc::connect(fd, &sa as *const _ as *const libc::sockaddr, salen) != 0
                && errno() != libc::EINPROGRESS
            {
                return Err("connect");
            }
        }
        wait(libc::POLLOUT)?;
        let mut err: libc::c_int = 0;
        let mut len = 4 as libc::socklen_t;
        // SAFETY: valid descriptor and out-parameters.
        unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                &mut err as *mut _ as *mut _,
                &mut len,
            )
        };
        if err != 0 {
            return Err("connect");
        }
        // SAFETY: valid descriptor and buffer.
        let n = unsafe {
            libc::send(
                fd,
                req.as_ptr() as *const libc::c_void,
                req.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n != req.len() as isize {
            return Err("reset");
        }
        let mut buf = Vec::new();
        loop {
            wait(libc::POLLIN)?;
            let mut b = [0u8; 4096];
            // SAFETY: valid descriptor and buffer.
            let n = unsafe {
                libc::recv(
                    fd,
                    b.as_mut_ptr() as *mut libc::c_void,
                    b.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let e = errno();
                if e == libc::EAGAIN || e == libc::EINTR {
                    continue;
                }
                return Err("reset");
            }
            let eof = n == 0;
            buf.extend_from_slice(&b[..n as usize]);
            match parse(&buf, eof) {
                Parse::Done { status: 200, .. } => return Ok(now_ns() - start),
                Parse::Done { .. } => return Err("non200"),
                Parse::Bad => return Err("bad_response"),
                Parse::More if eof => return Err("eof"),
                Parse::More => {}
            }
        }
    })();
    // SAFETY: our descriptor, closed once.
    unsafe { libc::close(fd) };
    result
}

fn idle(o: &Opts, nofile: usize) {
    if o.conns as u64 > MAX_CLIENTS {
        die("--conns is more than 1,000,000");
    }
    let mut g = Gen::new(o, build_request(o), None, nofile);
    let t0 = now_ns();
    let open_end = t0 + (o.open_secs * 1e9) as u64;
    let mut started = 0usize;
    loop {
        let now = now_ns();
        while started < o.conns && g.in_flight < o.concurrency && g.open < g.max_open {
            let id = g.new_client();
            g.start(id, now_ns());
            started += 1;
        }
        g.expire(now_ns());
        if (started == o.conns || g.open >= g.max_open) && g.in_flight == 0 {
            break;
        }
        if now >= open_end {
            break;
        }
        let mut wake = open_end;
        if let Some(d) = g.next_deadline() {
            wake = wake.min(d);
        }
        g.poll(wake);
    }
    let opened_in = (now_ns() - t0) as f64 / 1e9;
    // Not answered by the end of the opening phase: timeouts.
    g.time_out_unanswered(false);
    let not_started = o.conns - started;
    // Notice closures that happened meanwhile: one pass without waiting.
    g.poll_now();
    let open_at_hold = g.open;
    println!("{{\"event\":\"holding\",\"open\":{open_at_hold},\"opened_in_s\":{opened_in:.2}}}");
    std::io::stdout().flush().ok();
    // Wait for the caller (it samples the server meanwhile), 60 s at most.
    let mut p = libc::pollfd {
        fd: 0,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    if unsafe { libc::poll(&mut p, 1, 60_000) } > 0 {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).ok();
    }
    let mut lat = Vec::new();
    let mut by_err: std::collections::BTreeMap<&str, u64> = Default::default();
    let b0 = now_ns();
    for _ in 0..o.bystander {
        match bystander_once(o.port, g.timeout_ns) {
            Ok(ns) => lat.push(ns),
            Err(e) => *by_err.entry(e).or_insert(0) += 1,
        }
    }
    let bystander_s = (now_ns() - b0) as f64 / 1e9;
    g.poll_now();
    let open_after = g.open;
    lat.sort_unstable();
    g.ok_lat.sort_unstable();
    let errs: Vec<String> = by_err.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    println!(
        "{{\"mode\":\"idle\",\"port\":{},\"conns\":{},\"sources\":{},\"concurrency\":{},\
         \"opened_in_s\":{:.2},\"answered_200\":{},\"errors_total\":{},\"errors\":{},\
         \"not_started\":{},\"statuses\":{},\"connection_close\":{},\
         \"open_at_hold\":{},\"open_after_bystander\":{},\"closed_by_server_while_idle\":{},\
         \"open_p50_ms\":{},\"open_p99_ms\":{},\"bystander\":{},\"bystander_ok\":{},\
         \"bystander_errors\":{{{}}},\"bystander_p50_ms\":{},\"bystander_p99_ms\":{},\
         \"bystander_max_ms\":{},\"bystander_secs\":{:.2},\"peak_open\":{},\"nofile\":{},\"sched\":\"{}\"}}",
        o.port,
        o.conns,
        o.sources,
        o.concurrency,
        opened_in,
        g.ok_lat.len(),
        g.errors.total(),
        g.errors.json(),
        not_started,
        statuses_json(&g.statuses),
        g.connection_close,
        open_at_hold,
        open_after,
        g.closed_while_idle,
        ms(percentile(&g.ok_lat, 50.0)),
        ms(percentile(&g.ok_lat, 99.0)),
        o.bystander,
        lat.len(),
        errs.join(","),
        ms(percentile(&lat, 50.0)),
        ms(percentile(&lat, 99.0)),
        ms(percentile(&lat, 100.0)),
        bystander_s,
        g.peak_open,
        nofile,
        SCHED.with(|s| s.get())
    );
    for id in 0..g.clients.len() {
        g.close(id);
    }
}

impl Gen {
    /// Handles whatever is ready, without waiting.
    fn poll_now(&mut self) {
        let mut evs = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
        for _ in 0..1000 {
            // SAFETY: valid epoll descriptor and buffer.
            let n = unsafe { libc::epoll_wait(self.ep, evs.as_mut_ptr(), evs.len() as i32, 0) };
            if n <= 0 {
                return;
            }
            let mut handled = 0;
            for ev in evs.iter().take(n as usize) {
                if ev.u64 == TIMER {
                    let mut b = [0u8; 8];
                    // SAFETY: valid timerfd, 8-byte buffer.
                    unsafe { libc::read(self.tfd, b.as_mut_ptr() as *mut libc::c_void, 8) };
                    continue;
                }
                handled += 1;
                self.event(ev.u64 as usize, ev.events);
            }
            if handled == 0 {
                return;
            }
        }
    }
}

/// On 2 busy cores a woken thread can wait milliseconds for a CPU, and that
/// wait would be charged to the server as latency. SCHED_FIFO (where allowed,
/// e.g. as root) makes the generator run as soon as an arrival is due; it
/// blocks in epoll_wait between arrivals and uses a fraction of one core.
/// Returns the policy in force ("fifo" or "other").
fn realtime() -> &'static str {
    let p = libc::sched_param { sched_priority: 10 };
    // SAFETY: our own process, a valid sched_param.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &p) } == 0 {
        "fifo"
    } else {
        "other"
    }
}

fn main() {
    let o = parse_args();
    // Timers to the microsecond, not the default 50 µs slack.
    // SAFETY: prctl with an integer argument.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    let nofile = raise_nofile();
    let policy = if std::env::var_os("ARRIVALS_NO_RT").is_some() {
        "other"
    } else {
        realtime()
    };
    SCHED.with(|s| s.set(policy));
    if o.mode == "arrivals" {
        arrivals(&o, nofile);
    } else {
        idle(&o, nofile);
    }
}
