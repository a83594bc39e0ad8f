//! Shared support for the integration tests, one file per concern:
//! - [`process`]: the harness that runs the real binary ([`ServerProc`],
//!   [`run_binary`]) and reads `/proc` about it;
//! - [`client`]: a tiny raw HTTP/1.1 client ([`request`], [`Conn`], [`Resp`])
//!   that sends exactly the bytes a test writes, so malformed input reaches
//!   the server unaltered; [`connect`] dials from a chosen loopback address;
//! - [`setup`]: the test app's credentials and the usual arrangement of a
//!   mock plus a server ([`start_mock`], [`start_server`]);
//! - [`asserts`]: the checks many tests share ([`assert_error`]…);
//! - [`fs`]: throwaway directories ([`TempDir`]); [`metrics`]: reading
//!   `GET /metrics`;
//! - [`load`]: which tests may run side by side ([`heavy`], [`timed`]);
//! - [`mock`]: the Spotify mock, over plain HTTP or TLS (recording its
//!   handshakes); [`pki`]: throwaway certificates; [`conns`]: many
//!   connections at once;
//! - [`cdp`]: headless Chromium driven over the DevTools protocol (press a
//!   button, follow redirects, take screenshots);
//! - [`wait`]: bounded waits ([`wait_until`], [`wait_until_serving`]…).
//!
//! Environment knobs, for testing a cross-built binary:
//! - `STS_BIN`: path of the binary to run instead of the one Cargo built.
//! - `STS_RUNNER`: command (whitespace-separated words) to run it through,
//!   e.g. `qemu-aarch64-static`.
//!
//! The client side panics with a descriptive message on anything unexpected;
//! `try_*` variants return the error for tests that expect a failure.

pub mod asserts;
pub mod cdp;
pub mod client;
pub mod connect;
pub mod conns;
pub mod fs;
pub mod load;
pub mod metrics;
pub mod mock;
pub mod pki;
pub mod process;
pub mod setup;
pub mod wait;

// Flat re-exports, so test files say `support::request`, not
// `support::client::request`.
pub use asserts::*;
pub use client::*;
pub use connect::*;
pub use fs::*;
pub use load::*;
pub use process::*;
pub use setup::*;
pub use wait::*;

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// How often waiting loops look again.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
