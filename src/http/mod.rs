//! Our HTTP/1.1 server layer, on `std::net` and `httparse`.
//!
//! This layer knows nothing of Spotify, and names nothing outside
//! `crate::http`: it hands a complete [`Request`] to a [`Handler`] and
//! writes the [`Response`] it gets back. One file per step, each using only
//! those listed after it:
//!
//! - `server` — [`Server`]: the worker pool, shutdown, the watchdog's probe;
//! - `poll` — the poller thread: accept, dispatch, sweep deadlines;
//! - `waiting` — the table of waiting connections and their epoll set;
//! - `queue` — the bounded queue between the poller and the workers;
//! - `conn` — one connection's phases and deadlines, a worker's turn on it;
//! - `buffers` — a worker's read and write buffers;
//! - `answer` — one request answered: handler, bytes, log line;
//! - `slots` — how many slow requests are answered at once, and the
//!   backlog of those waiting for a slot;
//! - `admission` — the connection caps, and turning away those over them;
//! - `transport` — bytes in and out, plain or TLS;
//! - `intake` — how much a TLS peer may have rustls hold;
//! - `body`, `head`, `chunked` — reading a request;
//! - `forwarded` — the client's address behind a trusted proxy;
//! - `access_log` — the one log line per answered request;
//! - `error` — the answers the layer gives by itself (400, 408, 503 …);
//! - `handler`, `request`, `response` — what the app sees, and the wire
//!   format of an answer;
//! - `settings`, `stats`, `limits` — what configures it, what it counts,
//!   what it allows;
//! - `net` — addresses and ranges, and the key a client is counted by;
//! - `epoll` — the system calls.
//!
//! Why not an existing crate: tiny_http 0.12 allocates whatever
//! `Content-Length` a client announces when it drains an unread body (one
//! request aborts the process), spawns a thread per connection and has no
//! timeouts or header limits; an async stack is out of scope by design.

mod access_log;
mod admission;
mod answer;
mod body;
mod buffers;
mod chunked;
mod conn;
mod epoll;
mod error;
mod forwarded;
mod handler;
mod head;
mod intake;
mod limits;
mod net;
mod poll;
mod queue;
mod request;
mod response;
mod server;
mod settings;
mod slots;
mod stats;
mod transport;
mod waiting;

pub use admission::ProcessLimits;
pub use chunked::ChunkedDecoder;
pub use error::Error;
pub use handler::{Handler, Record};
pub use head::{HeadSummary, inspect_head};
// The default MAX_CONNECTIONS, for check-config and for the checks of the
// units and the README against the server's own numbers
// (config/consistency).
pub(crate) use admission::default_max_connections;
#[cfg(test)]
pub(crate) use limits::LISTEN_BACKLOG;
pub use limits::MAX_HEAD_BYTES;
pub(crate) use net::ClientKey;
pub use net::{IpNet, NotIpNet, any_contains};
pub use request::Request;
pub use response::Response;
pub(crate) use server::ProgressProbe;
pub use server::{Server, ShutdownHandle};
pub use settings::Settings;
pub use stats::Stats;
