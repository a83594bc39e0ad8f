//! The limits every connection is held to: how many bytes of request a peer
//! may send, how long each part may take, and how many new connections the
//! kernel queues for us. Together they bound what one peer can make the
//! server hold, and for how long; the README's Limits table lists them for
//! operators.

use std::time::Duration;

/// Connections the kernel holds until the poller accepts them (the kernel
/// caps it at `net.core.somaxconn`); std listens with 128, too few for a
/// burst of new clients.
pub(crate) const LISTEN_BACKLOG: libc::c_int = 4096;
/// Most bytes of request head (request line + headers) accepted.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Most header lines accepted.
pub(crate) const MAX_HEADERS: usize = 64;
/// Largest request body accepted, with `Content-Length` or chunked.
pub(crate) const MAX_BODY_BYTES: usize = 8 * 1024;
/// Time allowed for a TLS handshake, counted from accept.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for a request head to arrive.
pub(crate) const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for a request body to arrive, once the head is in.
pub(crate) const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// A kept-alive connection with no new request for this long is closed.
pub(crate) const KEEP_ALIVE_IDLE: Duration = Duration::from_secs(5);
