//! Our HTTP/1.1 server layer, on `std::net` and `httparse`.
//!
//! `poll` holds every connection that waits for bytes and every deadline;
//! `server` runs the bounded queue and the fixed worker pool; [`conn`] is
//! one connection's state and a worker's turn on it (head, body,
//! keep-alive, pipelining, plain or TLS); [`chunked`] decodes chunked
//! request bodies; `epoll` wraps the system calls. This layer knows
//! nothing of Spotify: it hands a complete [`Request`] to a [`Handler`] and
//! writes the [`Response`] it gets back.
//!
//! Why not an existing crate: tiny_http 0.12 allocates whatever
//! `Content-Length` a client announces when it drains an unread body (one
//! request aborts the process), spawns a thread per connection and has no
//! timeouts or header limits; an async stack is out of scope by design.

pub mod chunked;
pub mod conn;
pub(crate) mod epoll;
pub(crate) mod poll;
pub(crate) mod server;

use std::net::IpAddr;
use std::time::Duration;

use crate::error::Error;

pub use server::{Server, ServerSettings, ShutdownHandle, Stats};

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
/// Time allowed for a request head to arrive.
pub(crate) const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for a request body to arrive, once the head is in.
pub(crate) const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// A kept-alive connection with no new request for this long is closed.
pub(crate) const KEEP_ALIVE_IDLE: Duration = Duration::from_secs(5);

/// A complete request, as handed to the [`Handler`]. Its `Debug` leaves
/// the body out.
#[derive(Default)]
pub struct Request {
    pub(crate) method: String,
    /// The path, without query string (absolute-form targets are reduced
    /// to their path).
    pub path: String,
    /// HTTP/1.`minor_version`.
    pub(crate) minor_version: u8,
    pub(crate) content_type: Option<String>,
    pub(crate) origin: Option<String>,
    /// The client address: the peer, or for a trusted proxy the address it
    /// names in `X-Forwarded-For`.
    pub(crate) client: Option<IpAddr>,
    /// Whether the request carried `X-Forwarded-For` (from anyone): without
    /// it, a request from a trusted proxy names no client.
    pub(crate) forwarded_for: bool,
    pub(crate) body: Vec<u8>,
}

impl std::fmt::Debug for Request {
    // SECURITY: the body holds authorization codes and refresh tokens; only
    // its length is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("minor_version", &self.minor_version)
            .field("content_type", &self.content_type)
            .field("origin", &self.origin)
            .field("client", &self.client)
            .field("forwarded_for", &self.forwarded_for)
            .field(
                "body",
                &format_args!("[{} bytes redacted]", self.body.len()),
            )
            .finish()
    }
}

/// A response to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(&'static str, String)>,
    /// JSON unless `content_type` says otherwise; empty for 204.
    pub(crate) body: Vec<u8>,
    pub(crate) content_type: &'static str,
}

/// Media type of every body the server writes, except `/metrics`.
pub(crate) const JSON: &str = "application/json";

impl Response {
    /// A JSON response.
    pub fn json(status: u16, body: Vec<u8>) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body,
            content_type: JSON,
        }
    }

    /// A response without a body (204).
    pub(crate) fn empty(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            content_type: JSON,
        }
    }

    /// `{"error": code, "error_description": text}` with the error's status
    /// and its `Retry-After` / `Allow` headers.
    pub(crate) fn error(error: &Error) -> Response {
        let body = serde_json::json!({
            "error": error.code(),
            "error_description": error.to_string(),
        });
        let mut response = Response::json(error.status(), body.to_string().into_bytes());
        if let Some(secs) = error.retry_after_secs() {
            response.headers.push(("Retry-After", secs.to_string()));
        }
        if let Error::MethodNotAllowed { allow } = error {
            response.headers.push(("Allow", (*allow).to_string()));
        }
        response
    }

    /// Adds a header.
    pub(crate) fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// The value of a header this response carries.
    #[cfg(test)]
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One answered request, for metrics (the HTTP layer logs it itself).
#[derive(Debug)]
pub struct Record<'a> {
    /// The request's path (`-` when the HTTP layer could not read one).
    pub path: &'a str,
    pub(crate) status: u16,
}

/// What the HTTP layer calls for each request.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request. Must not block longer than the upstream timeout.
    fn handle(&self, request: &Request) -> Response;

    /// Called once for every answered request, including those the HTTP
    /// layer rejected itself (then `path` may be `-`).
    fn record(&self, _record: &Record<'_>) {}

    /// Adds to an answer the HTTP layer made itself (a 400, 408, 411, 413,
    /// 431 …) what answers on this path carry, e.g. CORS headers.
    /// `request` holds the method, path and `Origin` as far as they could
    /// be read, and no body.
    fn decorate_error(&self, _request: &Request, response: Response) -> Response {
        response
    }
}

/// Reason phrase for the statuses this server writes.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_response_is_json_with_code_and_description() {
        let r = Response::error(&Error::MissingField("code"));
        assert_eq!(r.status, 400);
        assert_eq!(r.content_type, "application/json");
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["error"], "invalid_request");
        assert_eq!(v["error_description"], "the field 'code' is required");
    }

    #[test]
    fn method_not_allowed_carries_allow() {
        let r = Response::error(&Error::MethodNotAllowed { allow: "POST" });
        assert_eq!(r.header("allow"), Some("POST"));
    }

    #[test]
    fn request_debug_hides_the_body() {
        let request = Request {
            method: "POST".into(),
            path: "/swap".into(),
            body: b"code=AQB-authorization-code&refresh_token=AQD-token".to_vec(),
            ..Request::default()
        };
        let debug = format!("{request:?}");
        assert!(!debug.contains("AQB-authorization-code"), "{debug}");
        assert!(!debug.contains("AQD-token"), "{debug}");
        // Nor as the list of byte values a derived `Debug` would print.
        assert!(!debug.contains("99, 111, 100, 101"), "{debug}");
        assert!(debug.contains("body: [51 bytes redacted]"), "{debug}");
        assert!(debug.contains(r#"path: "/swap""#), "{debug}");
    }

    #[test]
    fn overload_carries_integer_retry_after() {
        let r = Response::error(&Error::Overloaded);
        assert_eq!(r.status, 503);
        assert_eq!(r.header("Retry-After"), Some("1"));
    }
}
