//! Bounded waits: for a condition, for Spotify to be called, for the server
//! to serve again. Each panics with what it waited for once its time is up.

use std::fmt::Debug;
use std::net::IpAddr;
use std::thread;
use std::time::{Duration, Instant};

use super::POLL_INTERVAL;
use super::client::{raw_get_close, try_request_from};
use super::mock::MockSpotify;
use super::process::ServerProc;

/// How long one attempt of [`wait_until_serving`] waits for its answer.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// The pause between attempts of [`wait_until_serving`].
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Calls `attempt` until it returns `Ok`, `pause` apart, and returns what
/// it gave.
///
/// # Panics
/// With `what` and the last `Err`, if `within` passes first.
pub fn retry<T, E: Debug>(
    within: Duration,
    pause: Duration,
    what: &str,
    mut attempt: impl FnMut() -> Result<T, E>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        match attempt() {
            Ok(done) => return done,
            Err(last) => {
                assert!(
                    Instant::now() < deadline,
                    "{what}: not within {within:?}; last: {last:?}"
                );
                thread::sleep(pause);
            }
        }
    }
}

/// Waits until `done` holds, looking again every 10 ms.
///
/// # Panics
/// With `what`, if `within` passes first.
pub fn wait_until(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    retry(within, POLL_INTERVAL, what, || {
        if done() { Ok(()) } else { Err("not yet") }
    });
}

/// Waits until `mock` has received at least `calls` requests.
///
/// # Panics
/// If `within` passes first.
pub fn wait_for_spotify_calls(mock: &MockSpotify, calls: usize, within: Duration) {
    wait_until(
        within,
        &format!("{calls} requests reaching Spotify"),
        || mock.request_count() >= calls,
    );
}

/// Waits until a new connection from `from` is answered 200 to
/// `GET /health`, e.g. once connections that filled the server are gone.
///
/// # Panics
/// With the last outcome and the server's stderr, if `within` passes first.
pub fn wait_until_serving(server: &ServerProc, from: IpAddr, within: Duration) {
    let health = raw_get_close("/health");
    retry(
        within,
        RETRY_PAUSE,
        "serving /health again",
        || match try_request_from(from, server.addr(), &health, ATTEMPT_TIMEOUT) {
            Ok(resp) if resp.status == 200 => Ok(()),
            outcome => Err(format!("{outcome:?}\n{}", server.stderr())),
        },
    );
}
