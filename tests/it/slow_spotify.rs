//! While Spotify is slow, over real sockets against the real binary:
//! requests that need no call to Spotify — `/health`, `/metrics`, CORS
//! preflights, a 404 — are answered at once even when every slot for
//! token requests waits on Spotify (the workers kept in reserve serve
//! them); the swaps still waiting are all answered once Spotify answers;
//! a flood of health checks does not hold the swaps up; and a pipelining
//! client gets one swap a turn, so others are served between its swaps.
//!
//! Spotify is stalled with the mock's `Reply::Delayed`: it takes each
//! request in at once (so the test can count them) and answers later.
//! Servers run with `WORKER_THREADS=4`: three swaps at a time, one worker
//! kept for the rest (`src/http/slots.rs`).

use crate::support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use support::mock::{MockSpotify, Reply};
use support::{
    Conn, Resp, ServerProc, assert_health, heavy, raw_get, raw_swap, start_mock, start_server,
    timed, try_request, wait_for_spotify_calls,
};

/// Workers of these servers.
const WORKERS: &str = "4";
/// Swaps answered at once with [`WORKERS`]: one worker is kept for the
/// requests that do not call Spotify.
const SLOTS: usize = 3;
/// The longest a request that needs no call to Spotify may take while
/// every slot waits on Spotify.
const PROMPT: Duration = Duration::from_millis(100);
/// The browser app's origin, allowed by these servers.
const APP_ORIGIN: &str = "https://app.example";
/// What the stalled Spotify answers in the end.
const TOKEN_BODY: &str =
    r#"{"access_token":"at","token_type":"Bearer","expires_in":3600,"scope":"s"}"#;

/// A server with [`WORKERS`] workers, CORS for [`APP_ORIGIN`] and no rate
/// limit (every swap comes from one address).
fn start(mock: &MockSpotify) -> ServerProc {
    start_server(
        mock,
        &[
            ("WORKER_THREADS", WORKERS),
            ("CORS_ALLOW_ORIGINS", APP_ORIGIN),
            ("RATE_LIMIT_PER_MINUTE", "0"),
        ],
    )
}

/// Every request to Spotify waits `hold`, then gets a token.
fn stall_spotify(mock: &MockSpotify, hold: Duration) {
    mock.set_default_reply(Some(Reply::delayed(hold, Reply::json(200, TOKEN_BODY))));
}

/// `n` one-shot swaps at once, each on its own thread and connection; each
/// outcome with how long it took.
fn swaps_at_once(
    addr: SocketAddr,
    n: usize,
    timeout: Duration,
) -> Vec<thread::JoinHandle<(std::io::Result<Resp>, Duration)>> {
    (0..n)
        .map(|i| {
            thread::spawn(move || {
                let raw = swap_closing(&format!("code-{i}"));
                let started = Instant::now();
                let resp = try_request(addr, &raw, timeout);
                (resp, started.elapsed())
            })
        })
        .collect()
}

/// Raw bytes of a `POST /swap` of `code` that closes the connection after
/// its answer.
fn swap_closing(code: &str) -> Vec<u8> {
    let raw = String::from_utf8(raw_swap(code)).expect("ASCII request");
    raw.replacen("\r\n\r\n", "\r\nConnection: close\r\n\r\n", 1)
        .into_bytes()
}

/// Asserts every swap was answered 200 with the token; returns the longest.
fn assert_all_swapped(
    swaps: Vec<thread::JoinHandle<(std::io::Result<Resp>, Duration)>>,
) -> Duration {
    let mut slowest = Duration::ZERO;
    for (n, swap) in swaps.into_iter().enumerate() {
        let (resp, took) = swap.join().expect("swap thread");
        let resp = resp.unwrap_or_else(|e| panic!("swap {n} got no answer: {e}"));
        assert_eq!(resp.status, 200, "swap {n}:\n{resp:?}");
        assert_eq!(resp.json()["access_token"], "at", "swap {n}:\n{resp:?}");
        slowest = slowest.max(took);
    }
    slowest
}

/// Sends `raw` on a new connection; the answer and how long it took.
fn timed_request(addr: SocketAddr, raw: &[u8]) -> (Resp, Duration) {
    let started = Instant::now();
    let resp = try_request(addr, raw, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{:?} got no answer: {e}", String::from_utf8_lossy(raw)));
    (resp, started.elapsed())
}

#[test]
fn health_metrics_preflights_and_404s_answer_at_once_while_every_slot_waits_on_spotify() {
    let _timed = timed();
    const HOLD: Duration = Duration::from_secs(2);
    // More swaps than workers: every slot taken, the rest waiting.
    const SWAPS: usize = 6;
    let mock = start_mock();
    let server = start(&mock);
    let addr = server.addr();
    stall_spotify(&mock, HOLD);

    let swaps = swaps_at_once(addr, SWAPS, Duration::from_secs(20));
    wait_for_spotify_calls(&mock, SLOTS, Duration::from_secs(5));
    let stalled = Instant::now();

    let preflight = format!(
        "OPTIONS /swap HTTP/1.1\r\nHost: localhost\r\nOrigin: {APP_ORIGIN}\r\n\
         Access-Control-Request-Method: POST\r\nConnection: close\r\n\r\n"
    );
    let cheap: [(&str, Vec<u8>, u16); 4] = [
        ("GET /health", raw_get("/health"), 200),
        ("GET /metrics", raw_get("/metrics"), 200),
        ("a CORS preflight", preflight.into_bytes(), 204),
        ("GET /nowhere", raw_get("/nowhere"), 404),
    ];
    let answers: Vec<Resp> = cheap
        .iter()
        .map(|(what, raw, status)| {
            let (resp, took) = timed_request(addr, raw);
            assert_eq!(resp.status, *status, "{what}:\n{resp:?}");
            assert!(
                took < PROMPT,
                "{what} took {took:?} while every slot waited on Spotify"
            );
            resp
        })
        .collect();
    assert!(
        stalled.elapsed() < HOLD,
        "the checks took longer than Spotify's stall; inconclusive"
    );
    // The server's own answer to the preflight, with the path's CORS headers.
    assert_eq!(
        answers[2].header("access-control-allow-origin"),
        Some(APP_ORIGIN),
        "{:?}",
        answers[2]
    );

    // Once Spotify answers, every swap is answered: two rounds of the
    // stall through three slots, plus slack.
    let slowest = assert_all_swapped(swaps);
    assert!(
        slowest < 2 * HOLD + Duration::from_secs(3),
        "a swap took {slowest:?}"
    );
    assert_eq!(mock.request_count(), SWAPS);
}

#[test]
fn a_flood_of_health_checks_does_not_hold_swaps_up() {
    let _heavy = heavy();
    const HOLD: Duration = Duration::from_secs(1);
    // Three rounds of the stall through three slots.
    const SWAPS: usize = 3 * SLOTS;
    const FLOODERS: usize = 4;
    // Bounded: this many health checks per flooder at most.
    const MOST_CHECKS: usize = 50_000;
    let mock = start_mock();
    let server = start(&mock);
    let addr = server.addr();
    stall_spotify(&mock, HOLD);

    let stop = Arc::new(AtomicBool::new(false));
    let flood: Vec<_> = (0..FLOODERS)
        .map(|_| {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let mut conn = Conn::open(addr);
                let (mut checks, mut slowest) = (0, Duration::ZERO);
                while !stop.load(Ordering::SeqCst) && checks < MOST_CHECKS {
                    let started = Instant::now();
                    conn.send(&raw_get("/health"));
                    assert_health(&conn.read_response());
                    slowest = slowest.max(started.elapsed());
                    checks += 1;
                }
                (checks, slowest)
            })
        })
        .collect();
    // The flood is on before the swaps come.
    thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let swaps = swaps_at_once(addr, SWAPS, Duration::from_secs(20));
    let slowest_swap = assert_all_swapped(swaps);
    let all_swapped = started.elapsed();
    stop.store(true, Ordering::SeqCst);

    let mut checks = 0;
    let mut slowest_check = Duration::ZERO;
    for flooder in flood {
        let (n, slowest) = flooder.join().expect("flooder thread");
        checks += n;
        slowest_check = slowest_check.max(slowest);
    }
    eprintln!(
        "measured: {SWAPS} swaps beside {checks} health checks: all answered in \
         {all_swapped:?}; slowest health check {slowest_check:?}"
    );
    // The swaps went through at the pace of the slots…
    assert!(
        all_swapped < 3 * HOLD + Duration::from_secs(3),
        "the swaps took {all_swapped:?} (slowest {slowest_swap:?}) beside the flood"
    );
    assert_eq!(mock.request_count(), SWAPS);
    // … while the flood was served throughout, never behind them.
    assert!(checks >= 100, "only {checks} health checks answered");
    assert!(
        slowest_check < HOLD / 2,
        "a health check took {slowest_check:?} while the swaps waited on Spotify"
    );
}

#[test]
fn a_pipelining_client_gets_one_swap_a_turn() {
    let _timed = timed();
    const HOLD: Duration = Duration::from_secs(1);
    let mock = start_mock();
    // One worker: whatever it answers in one turn, nobody else is served
    // meanwhile.
    let server = start_server(
        &mock,
        &[("WORKER_THREADS", "1"), ("RATE_LIMIT_PER_MINUTE", "0")],
    );
    let addr = server.addr();
    stall_spotify(&mock, HOLD);

    let mut pipelining = Conn::open(addr);
    pipelining.set_timeout(Duration::from_secs(10));
    pipelining.send(&[raw_swap("first"), raw_swap("second")].concat());
    wait_for_spotify_calls(&mock, 1, Duration::from_secs(5));
    // While the first swap waits on Spotify, another client asks.
    let other = swaps_at_once(addr, 1, Duration::from_secs(10));

    for n in 0..2 {
        let resp = pipelining.read_response();
        assert_eq!(resp.status, 200, "pipelined swap {n}:\n{resp:?}");
    }
    assert_all_swapped(other);
    let order: Vec<String> = mock
        .requests()
        .iter()
        .map(|r| r.field("code").unwrap_or("-").to_owned())
        .collect();
    // The other client's swap went between the two pipelined ones: the
    // second waited for the connection's next turn.
    assert_eq!(order, ["first", "code-0", "second"]);
}
