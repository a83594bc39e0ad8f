//! The answers the HTTP layer gives by itself, before or instead of the
//! handler: a request it cannot read (400, 411, 413, 431, 501, 505), one
//! that came too slowly (408), no room for it (503), a handler that
//! panicked (500).
//!
//! Each variant knows its status, its OAuth-style `error` code and its
//! description (`Display`), so these answers have the shape of the app's
//! own errors: `{"error": …, "error_description": …}`. A description never
//! holds a byte of the request.

use std::fmt;

use super::response::Response;

/// Why the HTTP layer answered a request itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The request head did not arrive within the head deadline.
    HeadTimeout,
    /// The request body did not arrive within the body deadline.
    BodyTimeout,
    /// A POST without `Content-Length` or chunked encoding.
    LengthRequired,
    /// The body is larger than the limit.
    BodyTooLarge {
        /// The largest body accepted, in bytes.
        limit: usize,
    },
    /// The request is not HTTP/1.0 or HTTP/1.1.
    VersionNotSupported,
    /// The request head is too large or has too many header lines.
    HeadTooLarge,
    /// The request violates HTTP framing or syntax.
    BadRequest(&'static str),
    /// A `Transfer-Encoding` other than `chunked`.
    UnsupportedTransferEncoding,
    /// All workers busy and the queue full, or a connection cap reached.
    Overloaded,
    /// A bug: a handler panicked.
    Internal,
}

impl Error {
    /// The HTTP status it is answered with and the OAuth-style `error`
    /// code of the JSON body, one row a kind of error.
    pub(crate) fn status_and_code(&self) -> (u16, &'static str) {
        match self {
            Error::BadRequest(_) => (400, "invalid_request"),
            Error::HeadTimeout | Error::BodyTimeout => (408, "request_timeout"),
            Error::LengthRequired => (411, "length_required"),
            Error::BodyTooLarge { .. } => (413, "payload_too_large"),
            Error::HeadTooLarge => (431, "request_header_fields_too_large"),
            Error::Internal => (500, "server_error"),
            Error::UnsupportedTransferEncoding => (501, "not_implemented"),
            Error::Overloaded => (503, "temporarily_unavailable"),
            Error::VersionNotSupported => (505, "http_version_not_supported"),
        }
    }

    /// Seconds for a `Retry-After` header, for the errors that carry one.
    pub(crate) fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Error::Overloaded => Some(1),
            _ => None,
        }
    }

    /// The answer: status, JSON body, and `Retry-After` when it has one.
    pub(crate) fn response(&self) -> Response {
        let (status, code) = self.status_and_code();
        let response = Response::error(status, code, &self.to_string());
        match self.retry_after_secs() {
            Some(secs) => response.with_header("Retry-After", secs.to_string()),
            None => response,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::HeadTimeout => f.write_str("the request head was not received in time"),
            Error::BodyTimeout => f.write_str("the request body was not received in time"),
            Error::LengthRequired => {
                f.write_str("a request body needs Content-Length or chunked encoding")
            }
            Error::BodyTooLarge { limit } => {
                write!(f, "the request body is larger than {limit} bytes")
            }
            Error::VersionNotSupported => f.write_str("only HTTP/1.0 and HTTP/1.1 are supported"),
            Error::HeadTooLarge => f.write_str("the request head is too large"),
            Error::BadRequest(why) => write!(f, "malformed request: {why}"),
            Error::UnsupportedTransferEncoding => {
                f.write_str("only the chunked transfer encoding is supported")
            }
            Error::Overloaded => f.write_str("the server is overloaded; retry shortly"),
            Error::Internal => f.write_str("internal error"),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rejection_has_its_status() {
        let all = [
            Error::BadRequest("conflicting Content-Length headers"),
            Error::HeadTimeout,
            Error::BodyTimeout,
            Error::LengthRequired,
            Error::BodyTooLarge { limit: 8192 },
            Error::HeadTooLarge,
            Error::Internal,
            Error::UnsupportedTransferEncoding,
            Error::Overloaded,
            Error::VersionNotSupported,
        ];
        let statuses: Vec<u16> = all.iter().map(|e| e.status_and_code().0).collect();
        assert_eq!(statuses, [400, 408, 408, 411, 413, 431, 500, 501, 503, 505]);
    }

    #[test]
    fn overload_carries_integer_retry_after() {
        assert_eq!(Error::Overloaded.retry_after_secs(), Some(1));
        let r = Error::Overloaded.response();
        assert_eq!(r.status, 503);
        assert_eq!(r.header("Retry-After"), Some("1"));
    }

    #[test]
    fn answer_is_json_with_code_and_description() {
        let r = Error::BodyTooLarge { limit: 8192 }.response();
        assert_eq!(r.status, 413);
        assert_eq!(r.content_type, "application/json");
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["error"], "payload_too_large");
        assert_eq!(
            v["error_description"],
            "the request body is larger than 8192 bytes"
        );
        assert!(r.headers.is_empty(), "{r:?}");
    }
}
