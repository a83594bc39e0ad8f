//! The one error type of request handling.
//!
//! Every way a request can fail is a variant here, and each variant knows its
//! HTTP status and OAuth error code, so neither the HTTP layer nor the routes
//! ever pick status numbers by hand. `Display` is the human-readable
//! `error_description`; it never contains a secret, code or token.

use std::fmt;

use crate::upstream;

/// A failed request: what went wrong, as the client will be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A required form field is absent.
    MissingField(&'static str),
    /// A form field is present but empty.
    EmptyField(&'static str),
    /// A form field appears more than once.
    RepeatedField(&'static str),
    /// The body is not valid form or JSON data (the reason names no value).
    MalformedBody(&'static str),
    /// `redirect_uri` is neither the configured one nor in the allow-list.
    RedirectUriNotAllowed,
    /// The refresh token failed authentication (tampered, wrong key, wrong app).
    InvalidRefreshToken,
    /// No route for this path.
    NotFound,
    /// The path exists but not for this method; `allow` lists what does.
    MethodNotAllowed {
        /// The `Allow` header's value: the methods this path takes.
        allow: &'static str,
    },
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
    /// The content type is neither form nor JSON.
    UnsupportedMediaType,
    /// The request head is too large or has too many header lines.
    HeadTooLarge,
    /// The request violates HTTP framing or syntax.
    BadRequest(&'static str),
    /// A `Transfer-Encoding` other than `chunked`.
    UnsupportedTransferEncoding,
    /// The client exceeded `RATE_LIMIT_PER_MINUTE`.
    RateLimited {
        /// Seconds until the client may try again (`Retry-After`).
        retry_after_secs: u64,
    },
    /// All workers busy and the queue full.
    Overloaded,
    /// The call to Spotify brought no answer to pass on: back-off window
    /// open, unreachable, timeout, 5xx, unusable answer. It knows its own
    /// status, code, description and `Retry-After`.
    Upstream(upstream::Error),
    /// A bug: a handler panicked.
    Internal,
}

impl Error {
    /// The HTTP status this error is answered with.
    pub(crate) fn status(&self) -> u16 {
        self.answer().0
    }

    /// The OAuth-style `error` code of the JSON body.
    pub(crate) fn code(&self) -> &'static str {
        self.answer().1
    }

    /// Status and `error` code, one row a kind of error.
    fn answer(&self) -> (u16, &'static str) {
        match self {
            Error::MissingField(_)
            | Error::EmptyField(_)
            | Error::RepeatedField(_)
            | Error::MalformedBody(_)
            | Error::RedirectUriNotAllowed
            | Error::BadRequest(_) => (400, "invalid_request"),
            Error::InvalidRefreshToken => (400, "invalid_grant"),
            Error::NotFound => (404, "not_found"),
            Error::MethodNotAllowed { .. } => (405, "method_not_allowed"),
            Error::HeadTimeout | Error::BodyTimeout => (408, "request_timeout"),
            Error::LengthRequired => (411, "length_required"),
            Error::BodyTooLarge { .. } => (413, "payload_too_large"),
            Error::UnsupportedMediaType => (415, "unsupported_media_type"),
            Error::RateLimited { .. } => (429, "too_many_requests"),
            Error::HeadTooLarge => (431, "request_header_fields_too_large"),
            Error::Internal => (500, "server_error"),
            Error::UnsupportedTransferEncoding => (501, "not_implemented"),
            Error::Overloaded => (503, "temporarily_unavailable"),
            Error::Upstream(error) => (error.status(), error.code()),
            Error::VersionNotSupported => (505, "http_version_not_supported"),
        }
    }

    /// Seconds for a `Retry-After` header, for the errors that carry one.
    pub(crate) fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Error::RateLimited { retry_after_secs } => Some(*retry_after_secs),
            Error::Upstream(error) => error.retry_after_secs(),
            Error::Overloaded => Some(1),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::MissingField(name) => write!(f, "the field '{name}' is required"),
            Error::EmptyField(name) => write!(f, "the field '{name}' must not be empty"),
            Error::RepeatedField(name) => write!(f, "the field '{name}' appears more than once"),
            Error::MalformedBody(why) => write!(f, "the request body is malformed: {why}"),
            Error::RedirectUriNotAllowed => {
                f.write_str("redirect_uri is not one this server is configured for")
            }
            Error::InvalidRefreshToken => f.write_str("the refresh token is invalid"),
            Error::NotFound => f.write_str("no such endpoint"),
            Error::MethodNotAllowed { allow } => write!(f, "method not allowed; use {allow}"),
            Error::HeadTimeout => f.write_str("the request head was not received in time"),
            Error::BodyTimeout => f.write_str("the request body was not received in time"),
            Error::LengthRequired => {
                f.write_str("a request body needs Content-Length or chunked encoding")
            }
            Error::BodyTooLarge { limit } => {
                write!(f, "the request body is larger than {limit} bytes")
            }
            Error::VersionNotSupported => f.write_str("only HTTP/1.0 and HTTP/1.1 are supported"),
            Error::UnsupportedMediaType => f.write_str(
                "the content type must be application/x-www-form-urlencoded or application/json",
            ),
            Error::HeadTooLarge => f.write_str("the request head is too large"),
            Error::BadRequest(why) => write!(f, "malformed request: {why}"),
            Error::UnsupportedTransferEncoding => {
                f.write_str("only the chunked transfer encoding is supported")
            }
            Error::RateLimited { retry_after_secs } => {
                write!(f, "too many requests; retry after {retry_after_secs} s")
            }
            Error::Overloaded => f.write_str("the server is overloaded; retry shortly"),
            Error::Upstream(error) => fmt::Display::fmt(error, f),
            Error::Internal => f.write_str("internal error"),
        }
    }
}

impl std::error::Error for Error {}

impl From<upstream::Error> for Error {
    fn from(error: upstream::Error) -> Error {
        Error::Upstream(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_is_a_client_or_server_status() {
        let all = [
            Error::MissingField("code"),
            Error::InvalidRefreshToken,
            Error::NotFound,
            Error::MethodNotAllowed { allow: "POST" },
            Error::HeadTimeout,
            Error::LengthRequired,
            Error::BodyTooLarge { limit: 8192 },
            Error::UnsupportedMediaType,
            Error::HeadTooLarge,
            Error::RateLimited {
                retry_after_secs: 3,
            },
            Error::Overloaded,
            Error::Upstream(upstream::Error::Timeout),
            Error::VersionNotSupported,
        ];
        let statuses: Vec<u16> = all.iter().map(Error::status).collect();
        assert_eq!(
            statuses,
            [
                400, 400, 404, 405, 408, 411, 413, 415, 431, 429, 503, 504, 505
            ]
        );
    }

    #[test]
    fn refresh_token_failure_is_invalid_grant() {
        assert_eq!(Error::InvalidRefreshToken.code(), "invalid_grant");
        assert_eq!(Error::InvalidRefreshToken.status(), 400);
    }

    #[test]
    fn rate_limits_carry_integer_retry_after() {
        assert_eq!(
            Error::RateLimited {
                retry_after_secs: 7
            }
            .retry_after_secs(),
            Some(7)
        );
        assert_eq!(Error::Overloaded.retry_after_secs(), Some(1));
        assert_eq!(Error::NotFound.retry_after_secs(), None);
    }

    #[test]
    fn description_names_the_field() {
        assert_eq!(
            Error::RepeatedField("code").to_string(),
            "the field 'code' appears more than once"
        );
    }
}
