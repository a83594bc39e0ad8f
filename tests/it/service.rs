//! Life under systemd, black-box: the `sd_notify` datagrams (`READY=1`,
//! `STOPPING=1`, `WATCHDOG=1`) on a socket the test binds, socket
//! activation with a listener the test passes as fd 3, and `SIGHUP`
//! rotation of the secrets read from `_FILE`s (what changed is logged by
//! name, never by value; Spotify sees the new client secret; old refresh
//! tokens open only if their secret is listed as previous).

use crate::support;

use std::io::ErrorKind;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt as _;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use support::mock::{MockSpotify, Reply};
use support::{
    CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, Resp, ServerProc, TempDir, assert_error,
    assert_still_serving, binary_argv, get, inherited_env, post_form, start_mock, start_server,
    timed, wait_for_spotify_calls,
};

/// How long to wait for a notification that must come.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for a log line after a signal.
const LOG_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// sd_notify
// ---------------------------------------------------------------------------

/// A datagram socket standing in for systemd's notification socket.
struct NotifySocket {
    socket: UnixDatagram,
    /// `NOTIFY_SOCKET` for the server.
    address: String,
    _dir: Option<TempDir>,
}

impl NotifySocket {
    /// A socket file in a fresh temporary directory.
    fn bind() -> NotifySocket {
        let dir = TempDir::new("notify");
        let address = dir.file("notify.sock");
        let socket = UnixDatagram::bind(&address).expect("bind the notify socket");
        NotifySocket {
            socket,
            address,
            _dir: Some(dir),
        }
    }

    /// A Linux abstract-namespace socket (`NOTIFY_SOCKET=@name`), as systemd
    /// itself uses.
    fn bind_abstract() -> NotifySocket {
        use std::os::linux::net::SocketAddrExt as _;
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("sts-test-notify-{}-{n}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .expect("abstract address");
        let socket = UnixDatagram::bind_addr(&addr).expect("bind the abstract notify socket");
        NotifySocket {
            socket,
            address: format!("@{name}"),
            _dir: None,
        }
    }

    /// The next datagram within `timeout`, as text.
    fn next(&self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.socket
                .set_read_timeout(Some(left))
                .expect("set a read timeout");
            match self.socket.recv(&mut buf) {
                Ok(n) => return Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("notify socket: {e}"),
            }
        }
    }

    /// Every datagram that arrives within `window`.
    fn collect(&self, window: Duration) -> Vec<String> {
        let deadline = Instant::now() + window;
        let mut got = Vec::new();
        // Bounded by the deadline: `next` never waits past it.
        while let Some(message) = self.next(deadline.saturating_duration_since(Instant::now())) {
            got.push(message);
        }
        got
    }
}

#[test]
fn ready_is_the_first_notification_and_the_server_answers_by_then() {
    let notify = NotifySocket::bind();
    let mock = start_mock();
    let server = start_server(&mock, &[("NOTIFY_SOCKET", &notify.address)]);

    let first = notify.next(NOTIFY_TIMEOUT);

    assert_eq!(first.as_deref(), Some("READY=1"), "{}", server.stderr());
    assert_still_serving(server.addr());
    assert_eq!(
        notify.collect(Duration::from_millis(300)),
        Vec::<String>::new()
    );
}

#[test]
fn ready_reaches_an_abstract_notify_socket() {
    let notify = NotifySocket::bind_abstract();
    let mock = start_mock();
    let server = start_server(&mock, &[("NOTIFY_SOCKET", &notify.address)]);

    assert_eq!(
        notify.next(NOTIFY_TIMEOUT).as_deref(),
        Some("READY=1"),
        "{}",
        server.stderr()
    );
}

#[test]
fn stopping_is_sent_on_sigterm_before_exit() {
    let notify = NotifySocket::bind();
    let mock = start_mock();
    let mut server = start_server(&mock, &[("NOTIFY_SOCKET", &notify.address)]);
    assert_eq!(notify.next(NOTIFY_TIMEOUT).as_deref(), Some("READY=1"));

    server.signal("TERM");

    assert_eq!(
        notify.next(NOTIFY_TIMEOUT).as_deref(),
        Some("STOPPING=1"),
        "{}",
        server.stderr()
    );
    let status = server.wait_exit(Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{status:?}");
    assert_eq!(
        notify.collect(Duration::from_millis(200)),
        Vec::<String>::new()
    );
}

/// A server under a 200 ms systemd watchdog (`extra` added), once it has
/// said `READY=1`.
fn start_with_watchdog(extra: &[(&str, &str)]) -> (NotifySocket, MockSpotify, ServerProc) {
    let notify = NotifySocket::bind();
    let mock = start_mock();
    let mut vars = vec![
        ("NOTIFY_SOCKET", notify.address.as_str()),
        ("WATCHDOG_USEC", "200000"),
    ];
    vars.extend_from_slice(extra);
    let server = start_server(&mock, &vars);
    assert_eq!(notify.next(NOTIFY_TIMEOUT).as_deref(), Some("READY=1"));
    (notify, mock, server)
}

#[test]
fn watchdog_is_pinged_at_half_the_requested_interval() {
    let _timed = timed();
    let (notify, _mock, server) = start_with_watchdog(&[]);

    let window = notify.collect(Duration::from_secs(1));

    assert!(
        window.iter().all(|m| m == "WATCHDOG=1"),
        "{window:?}\n{}",
        server.stderr()
    );
    // Every 100 ms: about 10 in the second. At least 3 even on a loaded
    // machine; far fewer than a busy loop would send.
    assert!(
        (3..=20).contains(&window.len()),
        "{} pings in 1 s: {window:?}",
        window.len()
    );
}

#[test]
fn watchdog_is_not_pinged_while_every_worker_is_stuck() {
    let _timed = timed();
    let (notify, mock, server) =
        start_with_watchdog(&[("WORKER_THREADS", "1"), ("UPSTREAM_TIMEOUT_SECS", "30")]);
    let hold = Duration::from_secs(3);
    mock.set_default_reply(Some(Reply::Hang(hold)));
    let addr = server.addr();
    let held = std::thread::spawn(move || post_form(addr, "/swap", &[("code", "held")]));
    wait_for_spotify_calls(&mock, 1, Duration::from_secs(5));
    // A probe sent just before the worker got stuck may still count once.
    let _ = notify.collect(Duration::from_millis(250));

    // The only worker waits for Spotify: no probe gets through, no ping.
    let stuck = notify.collect(Duration::from_millis(1500));
    assert_eq!(stuck, Vec::<String>::new(), "{}", server.stderr());

    // Once it is free again, the pings resume.
    assert_eq!(held.join().expect("held client").status, 502);
    mock.set_default_reply(None);
    let resumed = notify.collect(Duration::from_secs(1));
    assert!(
        resumed.len() >= 3 && resumed.iter().all(|m| m == "WATCHDOG=1"),
        "{resumed:?}"
    );
}

#[test]
fn watchdog_meant_for_another_process_is_not_pinged() {
    // systemd sets WATCHDOG_PID to the main process; a child that inherits
    // the variables must not ping for it.
    let (notify, _mock, _server) = start_with_watchdog(&[("WATCHDOG_PID", "1")]);

    assert_eq!(
        notify.collect(Duration::from_millis(600)),
        Vec::<String>::new()
    );
}

// ---------------------------------------------------------------------------
// Socket activation
// ---------------------------------------------------------------------------

/// Starts the binary with `listener` as fd 3, `LISTEN_FDS=1` and
/// `LISTEN_PID` set to its own pid — `sh` exports its `$$` and `exec`s the
/// binary, which keeps the pid — plus `vars` (no `LISTEN_ADDR` is added).
fn start_activated(listener: &TcpListener, vars: &[(&str, &str)]) -> ServerProc {
    let fd = listener.as_raw_fd();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"LISTEN_PID=$$; export LISTEN_PID; exec "$@""#)
        .arg("sh")
        .args(binary_argv())
        .env_clear()
        .envs(inherited_env())
        .envs(vars.iter().copied())
        .env("LISTEN_FDS", "1");
    // SAFETY: the closure runs in the forked child before exec and calls
    // only dup2 and fcntl, which are async-signal-safe; `fd` is the test's
    // listener, open for the whole call.
    unsafe {
        cmd.pre_exec(move || {
            if fd == 3 {
                // Already in place: only the close-on-exec flag must go.
                if libc::fcntl(3, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, 3) == -1 {
                // dup2 leaves the copy without close-on-exec.
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    ServerProc::spawn(cmd).unwrap_or_else(|e| panic!("{e}"))
}

fn activation_vars(mock: &MockSpotify) -> Vec<(String, String)> {
    support::server_vars(mock, &[])
}

fn borrowed(vars: &[(String, String)]) -> Vec<(&str, &str)> {
    vars.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect()
}

#[test]
fn socket_activation_serves_on_the_passed_listener() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local address");
    let mock = start_mock();
    mock.add_code("activated-code");
    let vars = activation_vars(&mock);

    let server = start_activated(&listener, &borrowed(&vars));

    assert_eq!(server.addr(), addr, "{}", server.stderr());
    assert_still_serving(addr);
    let resp = post_form(addr, "/swap", &[("code", "activated-code")]);
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.json()["access_token"], "access-activated-code");
}

#[test]
fn socket_activation_for_another_pid_is_ignored() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local address");
    let mock = start_mock();

    // LISTEN_PID names some other process: the variables were inherited,
    // not meant for us, so LISTEN_ADDR applies.
    let server = start_server(
        &mock,
        &[
            ("LISTEN_FDS", "1"),
            ("LISTEN_PID", "1"),
            ("LISTEN_ADDR", "127.0.0.1:0"),
        ],
    );

    assert_ne!(server.addr(), addr);
    assert_still_serving(server.addr());
}

/// Runs the binary the way systemd would with `LISTEN_FDS=listen_fds` and
/// `LISTEN_PID` naming it, but passes no socket: descriptor 3 is `fd3` (a
/// file that is no socket) or not open at all. Returns its exit code and
/// stderr; it must exit on its own within 10 s.
fn run_activated_without_socket(
    mock: &MockSpotify,
    listen_fds: &str,
    fd3: Option<&std::fs::File>,
) -> (Option<i32>, String) {
    let vars = activation_vars(mock);
    let mut cmd = Command::new("sh");
    if let Some(file) = fd3 {
        let fd = file.as_raw_fd();
        // SAFETY: the closure runs in the forked child before exec and
        // calls only dup2, which is async-signal-safe; `fd` is open for
        // the whole call. dup2 leaves the copy without close-on-exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(fd, 3) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = cmd
        .arg("-c")
        .arg(r#"LISTEN_PID=$$; export LISTEN_PID; exec "$@""#)
        .arg("sh")
        .args(binary_argv())
        .env_clear()
        .envs(inherited_env())
        .envs(borrowed(&vars))
        .env("LISTEN_FDS", listen_fds)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the binary through sh");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("LISTEN_FDS={listen_fds} without a socket: still running after 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
    }
    (status.code(), stderr)
}

#[test]
fn socket_activation_without_a_socket_exits_2_naming_listen_fds() {
    let mock = start_mock();
    let dir = TempDir::new("listen-fds");
    let not_a_socket =
        std::fs::File::open(dir.write("not-a-socket", "x")).expect("open a plain file");
    // `1` with nothing at descriptor 3, `1` with a plain file there, and
    // `0`: none of them passes a socket.
    for (listen_fds, fd3) in [("1", None), ("1", Some(&not_a_socket)), ("0", None)] {
        let what = format!("LISTEN_FDS={listen_fds}, fd 3 a file: {}", fd3.is_some());
        let (code, stderr) = run_activated_without_socket(&mock, listen_fds, fd3);
        assert_eq!(code, Some(2), "{what}; stderr:\n{stderr}");
        assert!(stderr.contains("LISTEN_FDS"), "{what}; stderr:\n{stderr}");
        assert!(!stderr.contains(CLIENT_SECRET), "{stderr}");
    }
}

// ---------------------------------------------------------------------------
// SIGHUP: secret rotation
// ---------------------------------------------------------------------------

const NEW_CLIENT_SECRET: &str = "rotated-client-secret-never-to-be-logged";
const SECRET_A: &str = "encryption-secret-A-never-to-be-logged-0123";
const SECRET_B: &str = "encryption-secret-B-never-to-be-logged-4567";
/// An old secret listed as previous from the start (the `_FILE` must hold
/// something to be valid).
const SECRET_Z: &str = "encryption-secret-Z-long-retired-never-logged";

/// Secret files and a server reading them.
struct Rotation {
    dir: TempDir,
    server: ServerProc,
}

impl Rotation {
    /// The server with the client secret [`CLIENT_SECRET`], encryption
    /// secret [`SECRET_A`] and previous [`SECRET_Z`], all from files.
    fn start(mock: &MockSpotify) -> Rotation {
        let dir = TempDir::new("rotation");
        let client = dir.write("client_secret", format!("{CLIENT_SECRET}\n"));
        let current = dir.write("encryption_secret", format!("{SECRET_A}\n"));
        let previous = dir.write("encryption_previous", format!("{SECRET_Z}\n"));
        let vars = [
            ("SPOTIFY_CLIENT_ID", CLIENT_ID),
            ("SPOTIFY_CLIENT_SECRET_FILE", client.as_str()),
            ("SPOTIFY_REDIRECT_URI", REDIRECT_URI),
            ("SPOTIFY_ACCOUNTS_URL", &mock.base_url()),
            ("WORKER_THREADS", "4"),
            ("ENCRYPTION_SECRET_FILE", current.as_str()),
            ("ENCRYPTION_SECRET_PREVIOUS_FILE", previous.as_str()),
        ];
        let server = ServerProc::start(&vars);
        Rotation { dir, server }
    }

    fn write(&self, file: &str, value: &str) {
        self.dir.write(file, format!("{value}\n"));
    }

    /// Sends `SIGHUP` and waits for the log line containing `expect`.
    fn hup(&self, expect: &str) {
        self.server.signal("HUP");
        assert!(
            self.server.wait_for_stderr(expect, LOG_TIMEOUT),
            "no {expect:?} in:\n{}",
            self.server.stderr()
        );
    }

    fn swap(&self, code: &str) -> Resp {
        post_form(self.server.addr(), "/swap", &[("code", code)])
    }

    fn refresh(&self, token: &str) -> Resp {
        post_form(self.server.addr(), "/refresh", &[("refresh_token", token)])
    }

    /// Swaps `code` (registered first) and returns the sealed refresh token.
    fn sealed_token(&self, mock: &MockSpotify, code: &str) -> String {
        mock.add_code(code);
        let resp = self.swap(code);
        assert_eq!(resp.status, 200, "{resp:?}");
        resp.json()["refresh_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no refresh_token:\n{resp:?}"))
            .to_owned()
    }
}

fn basic(secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{CLIENT_ID}:{secret}")))
}

/// Asserts no secret value appears in `logs`.
fn assert_no_secret_values(logs: &str) {
    for secret in [
        CLIENT_SECRET,
        NEW_CLIENT_SECRET,
        SECRET_A,
        SECRET_B,
        SECRET_Z,
    ] {
        assert!(
            !logs.contains(secret),
            "a secret value is in the logs:\n{logs}"
        );
    }
}

#[test]
fn sighup_names_the_rotated_secrets_and_never_their_values() {
    let mock = start_mock();
    let rotation = Rotation::start(&mock);

    rotation.write("client_secret", NEW_CLIENT_SECRET);
    rotation.write("encryption_secret", SECRET_B);
    rotation.hup("SIGHUP: reloaded");

    let logs = rotation.server.stderr();
    assert!(
        logs.lines()
            .any(|l| l == "[INFO] SIGHUP: reloaded SPOTIFY_CLIENT_SECRET, ENCRYPTION_SECRET"),
        "{logs}"
    );
    assert_no_secret_values(&logs);
    assert_still_serving(rotation.server.addr());
}

#[test]
fn sighup_with_unchanged_files_reloads_nothing() {
    let mock = start_mock();
    let rotation = Rotation::start(&mock);

    rotation.hup("SIGHUP: secrets unchanged");

    assert!(!rotation.server.stderr().contains("SIGHUP: reloaded"));
}

#[test]
fn after_sighup_spotify_gets_the_new_client_secret() {
    // Spotify already knows only the new secret (rotated in the dashboard).
    let mock = MockSpotify::start(CLIENT_ID, NEW_CLIENT_SECRET, REDIRECT_URI);
    let rotation = Rotation::start(&mock);
    mock.add_code("before");
    let before = rotation.swap("before");
    assert_eq!(before.status, 400, "{before:?}");
    assert_eq!(before.json()["error"], "invalid_client");
    let sent = mock.last_request().expect("the mock was called");
    assert_eq!(
        sent.header("authorization"),
        Some(basic(CLIENT_SECRET).as_str())
    );

    rotation.write("client_secret", NEW_CLIENT_SECRET);
    rotation.hup("SIGHUP: reloaded SPOTIFY_CLIENT_SECRET");

    let after = rotation.swap("before");
    assert_eq!(after.status, 200, "{after:?}");
    assert_eq!(after.json()["access_token"], "access-before");
    let sent = mock.last_request().expect("the mock was called");
    assert_eq!(
        sent.header("authorization"),
        Some(basic(NEW_CLIENT_SECRET).as_str())
    );
}

#[test]
fn token_sealed_before_rotation_opens_when_its_secret_is_listed_as_previous() {
    let mock = start_mock();
    let rotation = Rotation::start(&mock);
    let old_token = rotation.sealed_token(&mock, "old");

    rotation.write("encryption_secret", SECRET_B);
    rotation.write("encryption_previous", &format!("{SECRET_A},{SECRET_Z}"));
    rotation.hup("SIGHUP: reloaded ENCRYPTION_SECRET, ENCRYPTION_SECRET_PREVIOUS");

    let resp = rotation.refresh(&old_token);
    assert_eq!(resp.status, 200, "{resp:?}");
    let sent = mock.last_request().expect("the mock was called");
    assert_eq!(sent.field("refresh_token"), Some("refresh-old"));
    assert_no_secret_values(&rotation.server.stderr());
}

#[test]
fn token_sealed_before_rotation_fails_when_its_secret_is_not_listed() {
    let mock = start_mock();
    let rotation = Rotation::start(&mock);
    let old_token = rotation.sealed_token(&mock, "old");

    rotation.write("encryption_secret", SECRET_B);
    rotation.hup("SIGHUP: reloaded ENCRYPTION_SECRET");
    let upstream_before = mock.request_count();

    let resp = rotation.refresh(&old_token);
    assert_error(&resp, 400, "invalid_grant");
    assert_eq!(mock.request_count(), upstream_before, "Spotify was called");
}

#[test]
fn tokens_sealed_after_rotation_use_the_new_secret() {
    let mock = start_mock();
    let rotation = Rotation::start(&mock);
    rotation.write("encryption_secret", SECRET_B);
    rotation.write("encryption_previous", SECRET_A);
    rotation.hup("SIGHUP: reloaded ENCRYPTION_SECRET, ENCRYPTION_SECRET_PREVIOUS");

    let new_token = rotation.sealed_token(&mock, "new");

    // A server that knows only the new secret opens it.
    let only_b = start_server(&mock, &[("ENCRYPTION_SECRET", SECRET_B)]);
    let resp = post_form(only_b.addr(), "/refresh", &[("refresh_token", &new_token)]);
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(
        mock.last_request().expect("called").field("refresh_token"),
        Some("refresh-new")
    );
}

#[test]
fn sighup_with_an_invalid_secret_file_keeps_the_current_secrets() {
    let mock = start_mock();
    let rotation = Rotation::start(&mock);
    let token = rotation.sealed_token(&mock, "kept");

    rotation.write("encryption_secret", "too-short-never-logged");
    rotation.hup("SIGHUP: secrets not reloaded");

    let logs = rotation.server.stderr();
    assert!(
        logs.contains("ENCRYPTION_SECRET must be at least 32 characters"),
        "{logs}"
    );
    assert!(!logs.contains("too-short-never-logged"), "{logs}");
    let resp = rotation.refresh(&token);
    assert_eq!(resp.status, 200, "the current key was dropped:\n{resp:?}");
    assert_eq!(get(rotation.server.addr(), "/health").status, 200);
}
