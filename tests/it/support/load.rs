//! Which tests may run side by side. Every area runs in this one process,
//! several tests at a time on libtest's threads (one per core). A test that
//! loads the machine — thousands of sockets, a full queue, every worker of
//! a server kept busy, Chromium, a stream of TLS handshakes — would make a
//! test with a tight timing bound measure it instead of the server.
//!
//! - [`heavy`]: for a test that loads the machine. It runs alone among
//!   the tests that take a turn: no other heavy one, no timed one.
//! - [`timed`]: for a test with a bound a loaded machine could break (a
//!   deadline window, an answer or a close within a second or two, a count
//!   of events in a window). Timed tests run side by side with each other.
//!
//! A test that takes neither has no such bound and runs beside anything.
//! Take a turn first thing in the test, once, and never both: a thread
//! that asks for a second one while holding the first waits for itself.

use std::io;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

static TURNS: RwLock<()> = RwLock::new(());

/// Waits until no other heavy or timed test runs, and holds them off until
/// the guard is dropped. Raises the open-file limit first (see
/// [`raise_open_file_limit`]): the sockets a heavy test opens are this
/// process's, beside those of whatever untimed tests run meanwhile.
pub fn heavy() -> RwLockWriteGuard<'static, ()> {
    // A failed test poisons the lock; the next one still runs.
    let turn = TURNS.write().unwrap_or_else(PoisonError::into_inner);
    raise_open_file_limit();
    turn
}

/// Waits while a heavy test runs, and holds heavy tests off until the
/// guard is dropped; other timed tests run meanwhile.
pub fn timed() -> RwLockReadGuard<'static, ()> {
    TURNS.read().unwrap_or_else(PoisonError::into_inner)
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit (a test
/// that opens thousands of sockets needs them) and returns the soft limit
/// now in force.
///
/// The limit is the whole process's, and it stays raised for every later
/// test and every child they start. No child sees a difference that
/// matters: the server raises its own soft limit to the hard one at start
/// anyway, and only raising is ever done here.
///
/// # Panics
/// If the limit cannot be read or set.
pub fn raise_open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes one rlimit into the live `limit`.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(got, 0, "getrlimit: {}", io::Error::last_os_error());
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit(2) reads one live rlimit.
        let set = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
        assert_eq!(set, 0, "setrlimit: {}", io::Error::last_os_error());
    }
    limit.rlim_cur
}
