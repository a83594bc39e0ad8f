//! Looking up the accounts host, black-box: the real binary, the system's
//! own resolver (glibc's `getaddrinfo`), and a name server on loopback that
//! the test plays — one that never answers, and one that answers every
//! query "no such name".
//!
//! The binary runs in a private mount namespace (`unshare --mount`) where
//! `/etc/resolv.conf` names that loopback server and `/etc/nsswitch.conf`
//! says `hosts: files dns`; nothing leaves the machine and the host's own
//! files are untouched. A name server listens on port 53 (glibc asks no
//! other), which needs root: without it, or without `unshare`, the tests
//! say so and pass — unless `STS_REQUIRE_DNS_TEST` is set, as CI does.

use crate::support;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use support::metrics::{scrape, value};
use support::mock::MockSpotify;
use support::{
    ServerProc, TempDir, assert_error, assert_still_serving, binary_argv, get, inherited_env,
    post_form, proc_status, server_vars, start_mock, timed,
};

/// The host name of the accounts service in these tests; no name server
/// but the test's knows it.
const HOST: &str = "accounts.dns-test.example";
/// `UPSTREAM_TIMEOUT_SECS` of these servers.
const TIMEOUT_SECS: u64 = 2;
/// Workers of these servers: enough that concurrent requests do not queue.
const WORKERS: usize = 16;

/// A name server on `ip`:53 that counts the queries it gets and either
/// never answers or answers each one NXDOMAIN.
struct NameServer {
    queries: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    dir: TempDir,
}

impl NameServer {
    /// `None` (after saying why) when this machine cannot run the test.
    fn start(ip: &str, answer_nxdomain: bool) -> Option<NameServer> {
        let socket = match UdpSocket::bind((ip, 53)) {
            Ok(socket) => socket,
            Err(e) => return unsupported(&format!("cannot bind {ip}:53 ({e}); needs root")),
        };
        let unshare = Command::new("unshare")
            .args(["--mount", "true"])
            .status()
            .is_ok_and(|s| s.success());
        if !unshare {
            return unsupported("`unshare --mount true` failed; needs util-linux and root");
        }
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        let queries = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (queries, stop) = (Arc::clone(&queries), Arc::clone(&stop));
            thread::spawn(move || {
                let mut buf = [0u8; 1500];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    queries.fetch_add(1, Ordering::SeqCst);
                    if answer_nxdomain && n >= 12 {
                        // The query back, as a response (QR) with recursion
                        // available and RCODE 3, "no such name".
                        let mut reply = buf[..n].to_vec();
                        reply[2] |= 0x80;
                        reply[3] = 0x80 | 3;
                        let _ = socket.send_to(&reply, from);
                    }
                }
            });
        }
        let dir = TempDir::new("dns");
        // One attempt, a long timeout: a lookup that is not answered stays
        // unanswered for the whole test.
        dir.write(
            "resolv.conf",
            format!("nameserver {ip}\noptions timeout:30 attempts:1\n"),
        );
        dir.write("nsswitch.conf", "hosts: files dns\n");
        Some(NameServer { queries, stop, dir })
    }

    fn queries(&self) -> usize {
        // Let queries in flight land.
        thread::sleep(Duration::from_millis(100));
        self.queries.load(Ordering::SeqCst)
    }

    /// Starts the server, in a mount namespace that sees this name server,
    /// with the accounts URL naming [`HOST`] (on the mock's port). HTTPS,
    /// as `http://` is refused for a host that is not a loopback address:
    /// the name never resolves here, so no connection is made either way.
    fn start_server(&self, mock: &MockSpotify) -> ServerProc {
        let accounts = format!("https://{HOST}:{}", mock.addr().port());
        let timeout = TIMEOUT_SECS.to_string();
        let workers = WORKERS.to_string();
        let vars = server_vars(
            mock,
            &[
                ("SPOTIFY_ACCOUNTS_URL", &accounts),
                ("UPSTREAM_TIMEOUT_SECS", &timeout),
                ("WORKER_THREADS", &workers),
                ("RATE_LIMIT_PER_MINUTE", "0"),
                ("LISTEN_ADDR", "127.0.0.1:0"),
            ],
        );
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(
                r#"mount --bind "$1" /etc/resolv.conf || exit 97
                if [ -e /etc/nsswitch.conf ]; then mount --bind "$2" /etc/nsswitch.conf || exit 97; fi
                shift 2; exec "$@""#,
            )
            .arg("sh")
            .arg(self.dir.file("resolv.conf"))
            .arg(self.dir.file("nsswitch.conf"))
            .args(binary_argv())
            .env_clear()
            .envs(inherited_env())
            .envs(vars);
        ServerProc::spawn(cmd).unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Drop for NameServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn unsupported<T>(why: &str) -> Option<T> {
    if std::env::var_os("STS_REQUIRE_DNS_TEST").is_some() {
        panic!("STS_REQUIRE_DNS_TEST is set, but {why}");
    }
    eprintln!("skipped: {why}");
    None
}

fn swap(addr: SocketAddr, code: &str) -> (support::Resp, Duration) {
    let started = Instant::now();
    let resp = post_form(addr, "/swap", &[("code", code)]);
    (resp, started.elapsed())
}

#[test]
fn a_name_server_that_never_answers_costs_one_lookup_and_every_request_a_502() {
    let _timed = timed();
    let Some(ns) = NameServer::start("127.0.0.153", false) else {
        return;
    };
    let mock = start_mock();
    let server = ns.start_server(&mock);
    let addr = server.addr();
    let pid = server.pid();
    // The start line comes before every thread is up: once the server has
    // answered, the most seen over a moment is its resting count.
    assert_eq!(get(addr, "/health").status, 200);
    let threads_before = (0..15)
        .map(|_| {
            thread::sleep(Duration::from_millis(20));
            proc_status(pid, "Threads")
        })
        .max()
        .unwrap_or_default();

    // Requests at once, while the thread count is watched.
    let watching = Arc::new(AtomicBool::new(true));
    let most_threads = {
        let watching = Arc::clone(&watching);
        thread::spawn(move || {
            let mut most = 0;
            while watching.load(Ordering::Relaxed) {
                most = most.max(proc_status(pid, "Threads"));
                thread::sleep(Duration::from_millis(20));
            }
            most
        })
    };
    let at_once: Vec<_> = (0..12)
        .map(|i| thread::spawn(move || swap(addr, &format!("at-once-{i}"))))
        .collect();
    for request in at_once {
        let (resp, took) = request.join().expect("request thread");
        assert_error(&resp, 502, "server_error");
        assert!(
            took < Duration::from_secs(TIMEOUT_SECS + 3),
            "answered after {took:?}"
        );
    }
    // The lookup is now overdue: later requests are answered without
    // waiting for it.
    for i in 0..10 {
        let (resp, took) = swap(addr, &format!("later-{i}"));
        assert_error(&resp, 502, "server_error");
        assert!(took < Duration::from_secs(1), "answered after {took:?}");
    }
    watching.store(false, Ordering::Relaxed);
    let most_threads = most_threads.join().expect("thread watcher");

    let queries = ns.queries();
    assert!(
        (1..=4).contains(&queries),
        "{queries} queries reached the name server for 22 requests; one lookup sends 2 (A, AAAA)"
    );
    assert!(
        most_threads <= threads_before + 2,
        "threads grew from {threads_before} to {most_threads} while DNS hung"
    );
    let overdue = server
        .stderr()
        .lines()
        .filter(|l| l.contains(&format!("looking up {HOST}:")) && l.contains("no answer in time"))
        .count();
    assert_eq!(overdue, 1, "{}", server.stderr());
    assert_eq!(mock.request_count(), 0);
    assert_still_serving(addr);
    assert_eq!(get(addr, "/health").status, 200);
}

#[test]
fn a_failed_lookup_is_remembered_for_a_second_then_tried_again() {
    let _timed = timed();
    let Some(ns) = NameServer::start("127.0.0.154", true) else {
        return;
    };
    let mock = start_mock();
    let server = ns.start_server(&mock);
    let addr = server.addr();

    let started = Instant::now();
    for i in 0..15 {
        let (resp, _) = swap(addr, &format!("burst-{i}"));
        assert_error(&resp, 502, "server_error");
    }
    let burst_took = started.elapsed();
    assert!(
        burst_took < Duration::from_millis(900),
        "15 swaps took {burst_took:?}, not within the second a failure is remembered; inconclusive"
    );
    let after_burst = ns.queries();
    assert!(
        (1..=4).contains(&after_burst),
        "{after_burst} queries for 15 requests within a second; one lookup sends 2 (A, AAAA)"
    );

    thread::sleep(Duration::from_millis(1200));
    let (resp, _) = swap(addr, "after-a-second");
    assert_error(&resp, 502, "server_error");
    assert!(
        ns.queries() > after_burst,
        "no new lookup a second after the failure"
    );
    // Counted as what they are: the name did not resolve.
    let text = scrape(addr);
    let failures = "spotify_token_swap_upstream_failures_total";
    assert_eq!(
        value(&text, &format!("{failures}{{kind=\"dns\"}}")),
        16.0,
        "{text}"
    );
    assert_eq!(
        value(&text, &format!("{failures}{{kind=\"connect\"}}")),
        0.0,
        "{text}"
    );
    assert_eq!(mock.request_count(), 0);
    assert_still_serving(addr);
}
