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
/// Most bytes a TLS client may send before its handshake is over: real
/// ClientHellos are under 2 KiB, post-quantum key shares included, and
/// rustls alone would join fragments of one up to 64 KiB.
pub(crate) const MAX_HANDSHAKE_BYTES: usize = 16 * 1024;
/// Most bytes a TLS connection may make the server hold for requests not
/// complete yet: its unparsed bytes or the request in progress (head and
/// body so far), plus what rustls holds of a record it cannot decrypt yet.
/// A request of the largest size (16 KiB) fits, in records of any size,
/// with 4 KiB to spare; a client that sends more than this ahead of our
/// answers is closed.
pub(crate) const MAX_TLS_HELD_BYTES: usize = 20 * 1024;
/// Receive and send buffer asked of the kernel for each client socket (it
/// doubles the figure): a request or an answer that does not fit takes
/// more round trips, and a peer that sends without reading our answers
/// makes the kernel hold kilobytes for it, not megabytes. cgroup v2 counts
/// socket buffers in the process's memory limit.
pub(crate) const SOCKET_BUFFER_BYTES: usize = 4096;
/// Bytes of answers the kernel may hold unsent for a connection (its peer
/// not reading them) before the connection answers no more until they
/// have gone: the kernel appends small answers to one unsent packet of up
/// to 64 KiB whatever the send buffer. Also the socket's
/// `TCP_NOTSENT_LOWAT`, so that it reports room to write only below it.
pub(crate) const MAX_UNSENT_BYTES: usize = 4096;
/// Time allowed for a TLS handshake, counted from accept.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for a request head to arrive.
pub(crate) const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for a request body to arrive, once the head is in.
pub(crate) const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// A kept-alive connection with no new request for this long is closed.
pub(crate) const KEEP_ALIVE_IDLE: Duration = Duration::from_secs(5);
