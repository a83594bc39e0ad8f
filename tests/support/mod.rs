//! Shared support for the integration tests: the Spotify mock ([`mock`]),
//! throwaway certificates ([`pki`]), an HTTPS stand-in for Spotify that
//! records its TLS handshakes ([`tls_upstream`]), a harness that runs the
//! real binary ([`ServerProc`], [`run_binary`]) and a tiny raw HTTP/1.1
//! client ([`request`], [`Conn`], [`Resp`]) that sends exactly the bytes a
//! test writes, so malformed input reaches the server unaltered.
//!
//! Environment knobs, for testing a cross-built binary:
//! - `STS_BIN`: path of the binary to run instead of the one Cargo built.
//! - `STS_RUNNER`: command (whitespace-separated words) to run it through,
//!   e.g. `qemu-aarch64-static`.
//!
//! The client side panics with a descriptive message on anything unexpected;
//! `try_*` variants return the error for tests that expect a failure.

#![allow(
    dead_code,
    reason = "every test crate includes this module and uses a different subset of it"
)]

pub mod conns;
pub mod mock;
pub mod pki;
pub mod tls_upstream;

use std::env;
use std::ffi::OsString;
use std::fmt;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Client id the tests configure (any value works with the mock).
pub const CLIENT_ID: &str = "test-client-id";
/// Client secret the tests configure.
pub const CLIENT_SECRET: &str = "test-client-secret-do-not-log";
/// Redirect URI the tests configure.
pub const REDIRECT_URI: &str = "myapp://callback";

/// How long [`ServerProc::start`] waits for the "listening on" line.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`run_binary`] lets a one-shot command run.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`connect_from`] and [`Conn::try_open`] wait for the handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default limit for receiving one whole response.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response head the client accepts.
const MAX_RESPONSE_HEAD_BYTES: usize = 64 * 1024;
/// Largest response body the client accepts, so a runaway server fails the
/// test instead of eating memory.
const MAX_RESPONSE_BODY_BYTES: usize = 16 * 1024 * 1024;
/// How often waiting loops look again.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------

/// The binary under test: `STS_BIN` if set, else the one Cargo built.
pub fn binary() -> PathBuf {
    match env::var_os("STS_BIN") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_spotify-token-swap")),
    }
}

/// A command for the binary, through `STS_RUNNER` if set, with an
/// environment of only `PATH`, `QEMU_*` (for the runner) and `vars`.
fn command(vars: &[(&str, &str)]) -> Command {
    let mut cmd = match env::var("STS_RUNNER") {
        Ok(runner) if !runner.trim().is_empty() => {
            let mut words = runner.split_whitespace();
            // Non-empty after trim, so there is a first word.
            let mut cmd = Command::new(words.next().unwrap_or_default());
            cmd.args(words).arg(binary());
            cmd
        }
        _ => Command::new(binary()),
    };
    cmd.env_clear();
    let inherited: Vec<(OsString, OsString)> = env::vars_os()
        .filter(|(name, _)| name == "PATH" || name.to_string_lossy().starts_with("QEMU_"))
        .collect();
    cmd.envs(inherited);
    cmd.envs(vars.iter().copied());
    cmd.stdin(Stdio::null());
    cmd
}

/// Runs the binary once with `args` and the environment `vars` (plus `PATH`)
/// and returns its output, for `check-config`, `generate-secret`, `--help`
/// and bad-configuration exits.
///
/// # Panics
/// If it cannot be started or is still running after 30 s (it is killed).
pub fn run_binary(args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut child = command(vars)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary().display()));
    // Read both pipes concurrently so a chatty child cannot block on a full one.
    let stdout = read_all_in_background(child.stdout.take());
    let stderr = read_all_in_background(child.stderr.take());
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(POLL_INTERVAL),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "`{} {}` still running after {RUN_TIMEOUT:?}; stderr:\n{}",
                    binary().display(),
                    args.join(" "),
                    String::from_utf8_lossy(&stderr.join().unwrap_or_default())
                );
            }
            Err(e) => panic!("waiting for {}: {e}", binary().display()),
        }
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

fn read_all_in_background(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

/// Appends each line `pipe` produces to `sink` until it closes.
fn capture_lines(pipe: impl Read + Send + 'static, sink: Arc<Mutex<Vec<String>>>) {
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    lock(&sink).push(text.trim_end_matches(['\r', '\n']).to_owned());
                }
            }
        }
    });
}

/// The real server running as a child process. Dropping it kills the child.
pub struct ServerProc {
    child: Child,
    addr: SocketAddr,
    tls: bool,
    stderr: Arc<Mutex<Vec<String>>>,
    stdout: Arc<Mutex<Vec<String>>>,
}

impl ServerProc {
    /// Starts the server with the environment `vars` (plus `PATH`) and waits
    /// up to 10 s for its `listening on http://ADDR` line. Adds
    /// `LISTEN_ADDR=127.0.0.1:0` unless `vars` sets `LISTEN_ADDR` or `PORT`.
    ///
    /// # Panics
    /// With the captured stderr, if the server exits or does not report its
    /// address in time.
    pub fn start(vars: &[(&str, &str)]) -> ServerProc {
        ServerProc::try_start(vars).unwrap_or_else(|message| panic!("{message}"))
    }

    /// Like [`ServerProc::start`], but returns what went wrong instead of
    /// panicking.
    pub fn try_start(vars: &[(&str, &str)]) -> Result<ServerProc, String> {
        let mut all_vars = vars.to_vec();
        if !vars
            .iter()
            .any(|(name, _)| *name == "LISTEN_ADDR" || *name == "PORT")
        {
            all_vars.push(("LISTEN_ADDR", "127.0.0.1:0"));
        }
        ServerProc::spawn(command(&all_vars))
    }

    /// The address the server reported it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR` or `https://ADDR`, as the server reported it.
    pub fn base_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The process id (of the runner, when `STS_RUNNER` is used).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// All stderr lines captured so far, joined with newlines.
    pub fn stderr(&self) -> String {
        lock(&self.stderr).join("\n")
    }

    /// All stdout lines captured so far, joined with newlines.
    pub fn stdout(&self) -> String {
        lock(&self.stdout).join("\n")
    }

    /// Waits until some stderr line contains `needle`; false on timeout.
    pub fn wait_for_stderr(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if lock(&self.stderr).iter().any(|line| line.contains(needle)) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Sends a signal with `kill`: `"TERM"`, `"-TERM"`, `"SIGINT"`, `"9"`…
    ///
    /// # Panics
    /// If `kill` cannot be run or fails (e.g. the process is gone).
    pub fn signal(&self, sig: &str) {
        let name = sig.trim_start_matches('-');
        let name = name.strip_prefix("SIG").unwrap_or(name);
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap_or_else(|e| panic!("cannot run kill: {e}"));
        assert!(
            status.success(),
            "kill -{name} {} failed: {status}",
            self.pid()
        );
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(POLL_INTERVAL),
                Ok(None) | Err(_) => return None,
            }
        }
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl fmt::Debug for ServerProc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerProc")
            .field("pid", &self.child.id())
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Finds `listening on http://ADDR` (or `https://`) in a log line.
fn parse_listening(line: &str) -> Option<(SocketAddr, bool)> {
    let (_, rest) = line.split_once("listening on ")?;
    let url = rest.split_whitespace().next()?;
    let (host_port, tls) = match url.strip_prefix("https://") {
        Some(host_port) => (host_port, true),
        None => (url.strip_prefix("http://")?, false),
    };
    let addr = host_port.trim_end_matches('/').parse().ok()?;
    Some((addr, tls))
}

// ---------------------------------------------------------------------------
// Raw HTTP client
// ---------------------------------------------------------------------------

/// One HTTP response as received.
#[derive(Clone, PartialEq, Eq)]
pub struct Resp {
    pub status: u16,
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    pub reason: String,
    /// In arrival order; names lowercased, values trimmed.
    pub headers: Vec<(String, String)>,
    /// The body with any chunked framing removed.
    pub body: Vec<u8>,
}

impl Resp {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name`, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body parsed as JSON.
    ///
    /// # Panics
    /// With the whole response, if the body is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}):\n{self:?}"))
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl fmt::Debug for Resp {
    /// Shows the response as it looked on the wire, which is what a failing
    /// assertion needs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} {} {}", self.version, self.status, self.reason)?;
        for (name, value) in &self.headers {
            writeln!(f, "{name}: {value}")?;
        }
        writeln!(f)?;
        write!(f, "{}", self.text())
    }
}

/// A persistent client connection for keep-alive and pipelining tests.
/// Bytes read past one response stay buffered for the next.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    timeout: Duration,
}

impl Conn {
    /// Connects to `addr`.
    ///
    /// # Panics
    /// If the connection fails.
    pub fn open(addr: SocketAddr) -> Conn {
        Conn::try_open(addr).unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"))
    }

    /// Connects to `addr` (5 s connect timeout).
    pub fn try_open(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
        Conn::from_stream(stream)
    }

    /// Connects to `addr` from the local address `local_ip` (e.g.
    /// `127.0.0.2`, to play a second client on loopback).
    ///
    /// # Panics
    /// If the connection fails.
    pub fn open_from(local_ip: IpAddr, addr: SocketAddr) -> Conn {
        Conn::try_open_from(local_ip, addr)
            .unwrap_or_else(|e| panic!("cannot connect to {addr} from {local_ip}: {e}"))
    }

    /// Like [`Conn::open_from`], returning the error.
    pub fn try_open_from(local_ip: IpAddr, addr: SocketAddr) -> io::Result<Conn> {
        Conn::from_stream(connect_from(local_ip, addr)?)
    }

    fn from_stream(stream: TcpStream) -> io::Result<Conn> {
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
            timeout: RESPONSE_TIMEOUT,
        })
    }

    /// Sets how long one `read_response` may take in all (default 10 s).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The underlying socket (e.g. for `local_addr`).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Writes `bytes`.
    ///
    /// # Panics
    /// If the write fails.
    pub fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes)
            .unwrap_or_else(|e| panic!("sending {} bytes failed: {e}", bytes.len()));
    }

    /// Writes `bytes`, returning any error (e.g. the server closed).
    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Half-closes: the server sees end of input, and can still answer.
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Reads the next response, interim (1xx) responses included.
    ///
    /// # Panics
    /// If no complete response arrives in time.
    pub fn read_response(&mut self) -> Resp {
        self.try_read_response()
            .unwrap_or_else(|e| panic!("reading a response failed: {e}"))
    }

    /// Reads the next response to a `HEAD` request (no body is read).
    ///
    /// # Panics
    /// If no complete head arrives in time.
    pub fn read_head_response(&mut self) -> Resp {
        self.read_one(false)
            .unwrap_or_else(|e| panic!("reading a HEAD response failed: {e}"))
    }

    /// Like [`Conn::read_response`], returning the error.
    pub fn try_read_response(&mut self) -> io::Result<Resp> {
        self.read_one(true)
    }

    /// True if the server closes (or resets) the connection within
    /// `timeout` without sending anything more.
    pub fn is_closed_by_peer(&mut self, timeout: Duration) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let deadline = Instant::now() + timeout;
        match self.fill(deadline) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => matches!(
                e.kind(),
                ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
            ),
        }
    }

    /// Reads once into `buf`; `Ok(0)` at end of stream, `TimedOut` after
    /// `deadline`.
    fn fill(&mut self, deadline: Instant) -> io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(ErrorKind::TimedOut, "timed out"));
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// An error that carries what had been received, for the test log.
    fn failure(&self, kind: ErrorKind, what: &str) -> io::Error {
        io::Error::new(
            kind,
            format!(
                "{what}; {} unconsumed bytes received: {:?}",
                self.buf.len(),
                String::from_utf8_lossy(&self.buf[..self.buf.len().min(2048)])
            ),
        )
    }

    /// Fills until `buf` holds `n` bytes.
    fn need(&mut self, n: usize, deadline: Instant) -> io::Result<()> {
        while self.buf.len() < n {
            match self.fill(deadline) {
                Ok(0) => {
                    return Err(
                        self.failure(ErrorKind::UnexpectedEof, "connection closed mid-response")
                    );
                }
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::TimedOut => {
                    return Err(self.failure(ErrorKind::TimedOut, "timed out mid-response"));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Takes one line (without its ending) from the stream.
    fn take_line(&mut self, deadline: Instant) -> io::Result<String> {
        let mut scanned = 0;
        loop {
            if let Some(pos) = self.buf[scanned..].iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=scanned + pos).collect();
                let text = String::from_utf8_lossy(&line);
                return Ok(text.trim_end_matches(['\r', '\n']).to_owned());
            }
            scanned = self.buf.len();
            let want = self.buf.len() + 1;
            self.need(want, deadline)?;
        }
    }

    fn read_one(&mut self, expect_body: bool) -> io::Result<Resp> {
        let deadline = Instant::now() + self.timeout;
        let head_end = loop {
            if let Some(end) = find_head_end(&self.buf) {
                break end;
            }
            if self.buf.len() > MAX_RESPONSE_HEAD_BYTES {
                return Err(self.failure(ErrorKind::InvalidData, "response head over 64 KiB"));
            }
            match self.fill(deadline) {
                Ok(0) if self.buf.is_empty() => {
                    return Err(io::Error::new(
                        ErrorKind::UnexpectedEof,
                        "connection closed before any response byte",
                    ));
                }
                Ok(0) => {
                    return Err(
                        self.failure(ErrorKind::UnexpectedEof, "connection closed mid-head")
                    );
                }
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::TimedOut => {
                    let limit = self.timeout;
                    return Err(self.failure(
                        ErrorKind::TimedOut,
                        &format!("no complete response head within {limit:?}"),
                    ));
                }
                Err(e) => return Err(e),
            }
        };
        let head: Vec<u8> = self.buf.drain(..head_end).collect();
        let mut resp = parse_response_head(&head).ok_or_else(|| {
            io::Error::new(
                ErrorKind::InvalidData,
                format!(
                    "malformed response head: {:?}",
                    String::from_utf8_lossy(&head)
                ),
            )
        })?;
        let no_body = !expect_body
            || (100..200).contains(&resp.status)
            || resp.status == 204
            || resp.status == 304;
        if no_body {
            return Ok(resp);
        }
        let chunked = resp
            .header_all("transfer-encoding")
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("chunked"));
        resp.body = if chunked {
            self.read_chunked(deadline)?
        } else if let Some(length) = resp.header("content-length") {
            let length: usize = length
                .parse()
                .ok()
                .filter(|&n| n <= MAX_RESPONSE_BODY_BYTES)
                .ok_or_else(|| {
                    io::Error::new(
                        ErrorKind::InvalidData,
                        format!("bad Content-Length {length:?}"),
                    )
                })?;
            self.need(length, deadline)?;
            self.buf.drain(..length).collect()
        } else {
            self.read_to_close(deadline)?
        };
        Ok(resp)
    }

    fn read_chunked(&mut self, deadline: Instant) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.take_line(deadline)?;
            let size_text = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16)
                .ok()
                .filter(|&n| n <= MAX_RESPONSE_BODY_BYTES - body.len())
                .ok_or_else(|| {
                    io::Error::new(
                        ErrorKind::InvalidData,
                        format!("bad chunk size line {line:?}"),
                    )
                })?;
            if size == 0 {
                // Trailers, up to the blank line.
                while !self.take_line(deadline)?.is_empty() {}
                return Ok(body);
            }
            self.need(size, deadline)?;
            body.extend(self.buf.drain(..size));
            let end = self.take_line(deadline)?;
            if !end.is_empty() {
                return Err(io::Error::new(
                    ErrorKind::InvalidData,
                    format!("chunk followed by {end:?}, not CRLF"),
                ));
            }
        }
    }

    fn read_to_close(&mut self, deadline: Instant) -> io::Result<Vec<u8>> {
        loop {
            if self.buf.len() > MAX_RESPONSE_BODY_BYTES {
                return Err(io::Error::new(
                    ErrorKind::InvalidData,
                    "read-to-close body over 16 MiB",
                ));
            }
            match self.fill(deadline) {
                Ok(0) => return Ok(std::mem::take(&mut self.buf)),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::TimedOut => {
                    return Err(
                        self.failure(ErrorKind::TimedOut, "body without length never ended")
                    );
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Index just past the blank line ending a head (CRLF or bare LF endings).
fn find_head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(off) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + off;
        let rest = &buf[nl + 1..];
        if rest.starts_with(b"\n") {
            return Some(nl + 2);
        }
        if rest.starts_with(b"\r\n") {
            return Some(nl + 3);
        }
        i = nl + 1;
    }
    None
}

fn parse_response_head(head: &[u8]) -> Option<Resp> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.lines().filter(|l| !l.is_empty());
    let status_line = lines.next()?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next()?.to_owned();
    let status = parts.next()?.parse().ok()?;
    let reason = parts.next().unwrap_or_default().to_owned();
    if !version.starts_with("HTTP/") {
        return None;
    }
    let headers = lines
        .map(|line| {
            let (name, value) = line.split_once(':')?;
            Some((name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Resp {
        status,
        version,
        reason,
        headers,
        body: Vec::new(),
    })
}

/// Connects to `addr`, writes `raw` and returns the final response (1xx
/// interim responses are skipped). A request starting `HEAD ` gets no body.
///
/// # Panics
/// If nothing complete arrives within 10 s.
pub fn request(addr: SocketAddr, raw: &[u8]) -> Resp {
    try_request(addr, raw, RESPONSE_TIMEOUT).unwrap_or_else(|e| {
        panic!(
            "request to {addr} failed: {e}\nrequest: {:?}",
            String::from_utf8_lossy(raw)
        )
    })
}

/// Like [`request`], with a custom timeout and the error returned.
pub fn try_request(addr: SocketAddr, raw: &[u8], timeout: Duration) -> io::Result<Resp> {
    exchange(Conn::try_open(addr)?, raw, timeout)
}

/// Sends `raw` on `conn` and reads its final response (skipping 1xx).
fn exchange(mut conn: Conn, raw: &[u8], timeout: Duration) -> io::Result<Resp> {
    conn.set_timeout(timeout);
    // The server may answer and close before reading everything (413, 431):
    // a failed write is fine as long as a response can be read.
    let write_error = conn.try_send(raw).err();
    let expect_body = !raw.starts_with(b"HEAD ");
    loop {
        match conn.read_one(expect_body) {
            Ok(resp) if (100..200).contains(&resp.status) => {}
            Ok(resp) => return Ok(resp),
            Err(e) => {
                return Err(match write_error {
                    Some(w) => {
                        io::Error::new(e.kind(), format!("{e} (the write had failed too: {w})"))
                    }
                    None => e,
                });
            }
        }
    }
}

/// Like [`try_request`], from the local address `local_ip`.
pub fn try_request_from(
    local_ip: IpAddr,
    addr: SocketAddr,
    raw: &[u8],
    timeout: Duration,
) -> io::Result<Resp> {
    exchange(Conn::try_open_from(local_ip, addr)?, raw, timeout)
}

/// Like [`request`], from the local address `local_ip`.
///
/// # Panics
/// If nothing complete arrives within 10 s.
pub fn request_from(local_ip: IpAddr, addr: SocketAddr, raw: &[u8]) -> Resp {
    try_request_from(local_ip, addr, raw, RESPONSE_TIMEOUT).unwrap_or_else(|e| {
        panic!(
            "request from {local_ip} to {addr} failed: {e}\nrequest: {:?}",
            String::from_utf8_lossy(raw)
        )
    })
}

// ---------------------------------------------------------------------------
// Connecting from a chosen loopback address
// ---------------------------------------------------------------------------

/// Connects to `addr` from `local_ip` (any port), within 5 s.
///
/// All of `127.0.0.0/8` is local on Linux, so tests can play several
/// clients — an attacker at `127.0.0.2`, a legitimate user at `127.0.0.3` —
/// that the server tells apart by address. std cannot bind a socket before
/// connecting it, hence `libc`.
pub fn connect_from(local_ip: IpAddr, addr: SocketAddr) -> io::Result<TcpStream> {
    connect_from_timeout(local_ip, addr, CONNECT_TIMEOUT)
}

/// Like [`connect_from`], waiting at most `timeout` for the handshake (a
/// server whose accept queue is full never completes it).
pub fn connect_from_timeout(
    local_ip: IpAddr,
    addr: SocketAddr,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let family = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: socket(2) takes no pointers; it returns a new descriptor or -1.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created, is valid and owned by nobody else; the
    // `OwnedFd` closes it on every path below.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    if family == libc::AF_INET {
        // Pick the port at connect time, per destination, instead of at
        // bind time: without this, a bound address runs out of ports after
        // one ephemeral range's worth of sockets whatever they connect to.
        // Best effort (Linux 4.2+); failing only costs port space.
        let on: libc::c_int = 1;
        // SAFETY: `on` is a live c_int and the length passed is its size.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                std::ptr::from_ref(&on).cast(),
                socklen_of::<libc::c_int>(),
            );
        }
    }
    let (local, local_len) = sockaddr(SocketAddr::new(local_ip, 0));
    // SAFETY: `local` is a sockaddr_storage initialised for `local_len`
    // bytes, which is what bind(2) reads.
    if unsafe {
        libc::bind(
            socket.as_raw_fd(),
            std::ptr::from_ref(&local).cast(),
            local_len,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    let (remote, remote_len) = sockaddr(addr);
    // SAFETY: as for bind(2) above.
    let connected = unsafe {
        libc::connect(
            socket.as_raw_fd(),
            std::ptr::from_ref(&remote).cast(),
            remote_len,
        )
    };
    if connected != 0 {
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(error);
        }
        wait_writable(&socket, timeout)?;
        let mut so_error: libc::c_int = 0;
        let mut len = socklen_of::<libc::c_int>();
        // SAFETY: `so_error` and `len` are live and `len` holds the size of
        // `so_error`, as getsockopt(2) requires.
        let got = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                std::ptr::from_mut(&mut so_error).cast(),
                &mut len,
            )
        };
        if got != 0 {
            return Err(io::Error::last_os_error());
        }
        if so_error != 0 {
            return Err(io::Error::from_raw_os_error(so_error));
        }
    }
    let stream = TcpStream::from(socket);
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// Waits until `socket` is writable (its non-blocking connect finished).
fn wait_writable(socket: &OwnedFd, timeout: Duration) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(ErrorKind::TimedOut, "connect timed out"));
        }
        let mut poll = libc::pollfd {
            fd: socket.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        let millis = libc::c_int::try_from(left.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: `poll` is one live pollfd and we pass a count of 1.
        match unsafe { libc::poll(&mut poll, 1, millis) } {
            0 => {}
            n if n > 0 => return Ok(()),
            _ => {
                let error = io::Error::last_os_error();
                if error.kind() != ErrorKind::Interrupted {
                    return Err(error);
                }
            }
        }
    }
}

fn socklen_of<T>() -> libc::socklen_t {
    // Socket address and option types are a few dozen bytes.
    libc::socklen_t::try_from(std::mem::size_of::<T>()).unwrap_or(libc::socklen_t::MAX)
}

/// `addr` as a C socket address and its length.
fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all-zero bytes are a
    // valid (unspecified-family) value of it.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for every
            // socket address type, sockaddr_in included.
            unsafe {
                std::ptr::from_mut(&mut storage)
                    .cast::<libc::sockaddr_in>()
                    .write(sin);
            }
            (storage, socklen_of::<libc::sockaddr_in>())
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe {
                std::ptr::from_mut(&mut storage)
                    .cast::<libc::sockaddr_in6>()
                    .write(sin6);
            }
            (storage, socklen_of::<libc::sockaddr_in6>())
        }
    }
}

// ---------------------------------------------------------------------------
// Watching the server process
// ---------------------------------------------------------------------------

/// A `kB` (or count) field of `/proc/<pid>/status`, e.g. `VmHWM`, `VmRSS`,
/// `Threads`.
///
/// # Panics
/// If the file or the field cannot be read (the process is gone).
pub fn proc_status(pid: u32, field: &str) -> u64 {
    let path = format!("/proc/{pid}/status");
    let status =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    status
        .lines()
        .find_map(|line| {
            let value = line.strip_prefix(field)?.strip_prefix(':')?;
            value.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no {field} in {path}:\n{status}"))
}

/// Number of open file descriptors of process `pid`.
///
/// # Panics
/// If `/proc/<pid>/fd` cannot be read.
pub fn open_fds(pid: u32) -> usize {
    let path = format!("/proc/{pid}/fd");
    std::fs::read_dir(&path)
        .unwrap_or_else(|e| panic!("cannot list {path}: {e}"))
        .count()
}

/// `application/x-www-form-urlencoded` encoding of `fields`.
pub fn form_body(fields: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish()
}

/// Raw bytes of a keep-alive `POST` with `body` and `content_type`.
pub fn raw_post(path: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Raw bytes of a keep-alive `GET`.
pub fn raw_get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").into_bytes()
}

/// POSTs `fields` form-encoded, on a fresh connection (`Connection: close`).
pub fn post_form(addr: SocketAddr, path: &str, fields: &[(&str, &str)]) -> Resp {
    post_body(
        addr,
        path,
        "application/x-www-form-urlencoded",
        &form_body(fields),
    )
}

/// POSTs `json` as `application/json`, on a fresh connection.
pub fn post_json(addr: SocketAddr, path: &str, json: &str) -> Resp {
    post_body(addr, path, "application/json", json)
}

/// POSTs `body` with `content_type`, on a fresh connection.
pub fn post_body(addr: SocketAddr, path: &str, content_type: &str, body: &str) -> Resp {
    let raw = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    request(addr, raw.as_bytes())
}

/// GETs `path`, on a fresh connection.
pub fn get(addr: SocketAddr, path: &str) -> Resp {
    let raw = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    request(addr, raw.as_bytes())
}

/// Asserts the server at `addr` still answers `GET /health` with 200
/// `{"status":"ok"}` — the check after every bad-input test.
pub fn assert_still_serving(addr: SocketAddr) {
    let resp = get(addr, "/health");
    assert_eq!(
        resp.status, 200,
        "server stopped serving /health:\n{resp:?}"
    );
    assert_eq!(
        resp.json(),
        serde_json::json!({ "status": "ok" }),
        "unexpected /health body:\n{resp:?}"
    );
}

// ---------------------------------------------------------------------------
// Server + mock together
// ---------------------------------------------------------------------------

/// A mock accounts service for [`CLIENT_ID`], [`CLIENT_SECRET`] and
/// [`REDIRECT_URI`].
pub fn start_mock() -> mock::MockSpotify {
    mock::MockSpotify::start(CLIENT_ID, CLIENT_SECRET, REDIRECT_URI)
}

/// The environment of a server pointed at `mock`: the test app's id, secret
/// and redirect URI, `SPOTIFY_ACCOUNTS_URL` of the mock, 4 workers. `extra`
/// comes last, so it overrides any of these (the child's environment keeps
/// the last value of a name).
pub fn server_vars(mock: &mock::MockSpotify, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    [
        ("SPOTIFY_CLIENT_ID", CLIENT_ID),
        ("SPOTIFY_CLIENT_SECRET", CLIENT_SECRET),
        ("SPOTIFY_REDIRECT_URI", REDIRECT_URI),
        ("SPOTIFY_ACCOUNTS_URL", &mock.base_url()),
        ("WORKER_THREADS", "4"),
    ]
    .iter()
    .chain(extra)
    .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
    .collect()
}

/// Starts the server with [`server_vars`].
pub fn start_server(mock: &mock::MockSpotify, extra: &[(&str, &str)]) -> ServerProc {
    let vars = server_vars(mock, extra);
    let borrowed: Vec<(&str, &str)> = vars.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    ServerProc::start(&borrowed)
}

/// Asserts `resp` is one of our JSON errors: `status`, media type exactly
/// `application/json`, `error` equal to `code` and a string
/// `error_description`.
///
/// # Panics
/// With the whole response, if any of that does not hold.
pub fn assert_error(resp: &Resp, status: u16, code: &str) {
    assert_eq!(resp.status, status, "unexpected status:\n{resp:?}");
    assert_eq!(
        resp.header("content-type"),
        Some("application/json"),
        "errors must be application/json:\n{resp:?}"
    );
    let body = resp.json();
    assert_eq!(body["error"], code, "unexpected error code:\n{resp:?}");
    assert!(
        body["error_description"].is_string(),
        "error_description must be a string:\n{resp:?}"
    );
}

/// Asserts `resp` is our own 429 `too_many_requests` with an integer
/// `Retry-After` from 1 to `max_secs` seconds.
pub fn assert_too_many_requests(resp: &Resp, max_secs: u64) {
    assert_error(resp, 429, "too_many_requests");
    let secs: u64 = resp
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no integer Retry-After:\n{resp:?}"));
    assert!(
        (1..=max_secs).contains(&secs),
        "Retry-After {secs}:\n{resp:?}"
    );
}

// ---------------------------------------------------------------------------
// Temporary directories and custom launches
// ---------------------------------------------------------------------------

/// A fresh directory in the system temporary directory, removed with its
/// contents on drop. Names never repeat within a process, so tests running
/// in parallel never share one.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `sts-<label>-<pid>-<n>`.
    ///
    /// # Panics
    /// If the directory cannot be created.
    pub fn new(label: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = env::temp_dir().join(format!("sts-{label}-{}-{n}", std::process::id()));
        // A leftover from a crashed run with a recycled pid: start clean.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        TempDir(path)
    }

    /// The directory.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    /// `<dir>/<name>` as text, for environment variables.
    pub fn file(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }

    /// Replaces `<dir>/<name>` with `contents` atomically (a sibling file
    /// renamed over it, as certbot and editors do), so a server reading it
    /// concurrently sees the old or the new contents, never half of one.
    /// Returns the path as text.
    ///
    /// # Panics
    /// If the file cannot be written.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> String {
        let target = self.0.join(name);
        let staging = self.0.join(format!(".{name}.new"));
        std::fs::write(&staging, contents)
            .and_then(|()| std::fs::rename(&staging, &target))
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", target.display()));
        target.to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The command line that runs the binary under test: the `STS_RUNNER`
/// words (if any), then the binary. For tests that launch it their own way
/// (through `sh`, with descriptors passed) and start it with
/// [`ServerProc::spawn`].
pub fn binary_argv() -> Vec<OsString> {
    let mut argv: Vec<OsString> = env::var("STS_RUNNER")
        .map(|runner| runner.split_whitespace().map(OsString::from).collect())
        .unwrap_or_default();
    argv.push(binary().into_os_string());
    argv
}

/// `PATH` and `QEMU_*` of the test process: what [`ServerProc::start`]
/// passes on besides the test's own variables.
pub fn inherited_env() -> Vec<(OsString, OsString)> {
    env::vars_os()
        .filter(|(name, _)| name == "PATH" || name.to_string_lossy().starts_with("QEMU_"))
        .collect()
}

impl ServerProc {
    /// Runs `cmd` (built by the test: its program, arguments, environment
    /// and descriptors) as the server, capturing its output, and waits up
    /// to 10 s for the `listening on` line, like [`ServerProc::start`].
    pub fn spawn(mut cmd: Command) -> Result<ServerProc, String> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        if let Some(pipe) = child.stderr.take() {
            capture_lines(pipe, Arc::clone(&stderr));
        }
        if let Some(pipe) = child.stdout.take() {
            capture_lines(pipe, Arc::clone(&stdout));
        }
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let found = lock(&stderr).iter().find_map(|line| parse_listening(line));
            if let Some((addr, tls)) = found {
                return Ok(ServerProc {
                    child,
                    addr,
                    tls,
                    stderr,
                    stdout,
                });
            }
            let exited = child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() >= deadline {
                let what = if let Some(status) = exited {
                    // Let the reader threads drain what is left in the pipes.
                    thread::sleep(Duration::from_millis(100));
                    format!("exited ({status}) before listening")
                } else {
                    let _ = child.kill();
                    let _ = child.wait();
                    format!("did not report a listening address within {START_TIMEOUT:?}")
                };
                return Err(format!(
                    "server {} {what}; stderr:\n{}\nstdout:\n{}",
                    binary().display(),
                    lock(&stderr).join("\n"),
                    lock(&stdout).join("\n"),
                ));
            }
            thread::sleep(POLL_INTERVAL);
        }
    }
}
