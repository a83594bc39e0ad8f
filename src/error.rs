//! The app's error type: every way the app refuses or fails a request.
//!
//! Each variant knows its HTTP status and OAuth error code, and
//! [`Error::response`] turns it into its answer, so the routes never pick
//! status numbers by hand. `Display` is the human-readable
//! `error_description`; it never contains a secret, code or token. The
//! answers the HTTP layer gives by itself (a request it cannot read, a
//! timeout, no room, a handler panic) are its own `http::Error`.

use std::fmt;

use crate::http::Response;
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
    /// The `client_id` field names no app of this server, or not the app
    /// the path serves (`path_app`); with `SPOTIFY_APPS` only.
    InvalidClient {
        /// It names another app than the path's.
        path_app: bool,
    },
    /// No route for this path.
    NotFound,
    /// The path exists but not for this method; `allow` lists what does.
    MethodNotAllowed {
        /// The `Allow` header's value: the methods this path takes.
        allow: &'static str,
    },
    /// The content type is neither form nor JSON.
    UnsupportedMediaType,
    /// The client exceeded `RATE_LIMIT_PER_MINUTE`.
    RateLimited {
        /// Seconds until the client may try again (`Retry-After`).
        retry_after_secs: u64,
    },
    /// Device login (RFC 8628 §3.5): the person has not finished yet.
    AuthorizationPending,
    /// Device login: polled sooner than the interval after the previous
    /// poll; the interval grew by 5 s.
    SlowDown,
    /// Device login: the device code's 10 minutes have passed.
    ExpiredToken,
    /// Device login: the person declined at Spotify.
    AccessDenied,
    /// Device login: no such device code, or its tokens were handed out.
    InvalidDeviceCode,
    /// A `grant_type` the endpoint does not take.
    UnsupportedGrantType,
    /// A `scope` that is not a space-separated list of scope names.
    InvalidScope,
    /// Device login: every place for a pending login is taken.
    DeviceLoginsFull {
        /// Seconds until one frees (`Retry-After`).
        retry_after_secs: u64,
    },
    /// The system random number generator failed: no secret can be made.
    RandomFailed,
    /// The call to Spotify brought no answer to pass on: back-off window
    /// open, unreachable, timeout, 5xx, unusable answer. It knows its own
    /// status, code, description and `Retry-After`.
    Upstream(upstream::Error),
}

impl Error {
    /// The HTTP status it is answered with and the OAuth-style `error`
    /// code of the JSON body, one row a kind of error.
    pub(crate) fn status_and_code(&self) -> (u16, &'static str) {
        match self {
            Error::MissingField(_)
            | Error::EmptyField(_)
            | Error::RepeatedField(_)
            | Error::MalformedBody(_)
            | Error::RedirectUriNotAllowed => (400, "invalid_request"),
            Error::InvalidRefreshToken => (400, "invalid_grant"),
            Error::InvalidClient { .. } => (400, "invalid_client"),
            Error::NotFound => (404, "not_found"),
            Error::MethodNotAllowed { .. } => (405, "method_not_allowed"),
            Error::UnsupportedMediaType => (415, "unsupported_media_type"),
            Error::RateLimited { .. } => (429, "too_many_requests"),
            Error::AuthorizationPending => (400, "authorization_pending"),
            Error::SlowDown => (400, "slow_down"),
            Error::ExpiredToken => (400, "expired_token"),
            Error::AccessDenied => (400, "access_denied"),
            Error::InvalidDeviceCode => (400, "invalid_grant"),
            Error::UnsupportedGrantType => (400, "unsupported_grant_type"),
            Error::InvalidScope => (400, "invalid_scope"),
            Error::DeviceLoginsFull { .. } => (503, "temporarily_unavailable"),
            Error::RandomFailed => (500, "server_error"),
            Error::Upstream(error) => error.status_and_code(),
        }
    }

    /// Seconds for a `Retry-After` header, for the errors that carry one.
    pub(crate) fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Error::RateLimited { retry_after_secs }
            | Error::DeviceLoginsFull { retry_after_secs } => Some(*retry_after_secs),
            Error::Upstream(error) => error.retry_after_secs(),
            _ => None,
        }
    }
}

impl Error {
    /// The answer: `{"error": code, "error_description": text}` with the
    /// error's status, and its `Retry-After` / `Allow` headers.
    pub(crate) fn response(&self) -> Response {
        let (status, code) = self.status_and_code();
        let mut response = Response::error(status, code, &self.to_string());
        if let Some(secs) = self.retry_after_secs() {
            response = response.with_header("Retry-After", secs.to_string());
        }
        if let Error::MethodNotAllowed { allow } = self {
            response = response.with_header("Allow", *allow);
        }
        response
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
            Error::InvalidClient { path_app: false } => {
                f.write_str("client_id names no app this server serves")
            }
            Error::InvalidClient { path_app: true } => {
                f.write_str("client_id is not the client id of the app this path serves")
            }
            Error::NotFound => f.write_str("no such endpoint"),
            Error::MethodNotAllowed { allow } => write!(f, "method not allowed; use {allow}"),
            Error::UnsupportedMediaType => f.write_str(
                "the content type must be application/x-www-form-urlencoded or application/json",
            ),
            Error::RateLimited { retry_after_secs } => {
                write!(f, "too many requests; retry after {retry_after_secs} s")
            }
            Error::AuthorizationPending => {
                f.write_str("the sign-in is not finished yet; poll again after the interval")
            }
            Error::SlowDown => f.write_str("polled too soon; the interval is now 5 s longer"),
            Error::ExpiredToken => {
                f.write_str("the device code has expired; ask for a new one at /device/code")
            }
            Error::AccessDenied => f.write_str("the user declined the sign-in"),
            Error::InvalidDeviceCode => f.write_str(
                "the device code is unknown, or its tokens have already been handed out",
            ),
            Error::UnsupportedGrantType => {
                f.write_str("grant_type must be urn:ietf:params:oauth:grant-type:device_code")
            }
            Error::InvalidScope => f.write_str(
                "scope must be scope names (letters, digits, '-', '_', '.', ':') separated by spaces",
            ),
            Error::DeviceLoginsFull { retry_after_secs } => write!(
                f,
                "too many device logins in progress; retry after {retry_after_secs} s"
            ),
            Error::RandomFailed => f.write_str("the server could not make a random code"),
            Error::Upstream(error) => fmt::Display::fmt(error, f),
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
            Error::InvalidClient { path_app: false },
            Error::NotFound,
            Error::MethodNotAllowed { allow: "POST" },
            Error::UnsupportedMediaType,
            Error::RateLimited {
                retry_after_secs: 3,
            },
            Error::Upstream(upstream::Error::Timeout),
        ];
        let statuses: Vec<u16> = all.iter().map(|e| e.status_and_code().0).collect();
        // The HTTP layer's own (408, 411, 413, 431, 503, 505): http/error.rs.
        assert_eq!(statuses, [400, 400, 400, 404, 405, 415, 429, 504]);
    }

    #[test]
    fn refresh_token_failure_is_invalid_grant() {
        assert_eq!(
            Error::InvalidRefreshToken.status_and_code(),
            (400, "invalid_grant")
        );
    }

    #[test]
    fn a_client_id_of_no_app_is_invalid_client_and_names_no_id() {
        for path_app in [false, true] {
            let r = Error::InvalidClient { path_app }.response();
            assert_eq!(r.status, 400);
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(v["error"], "invalid_client");
            assert!(
                v["error_description"]
                    .as_str()
                    .unwrap()
                    .contains("client_id")
            );
        }
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
        assert_eq!(Error::NotFound.retry_after_secs(), None);
    }

    #[test]
    fn description_names_the_field() {
        assert_eq!(
            Error::RepeatedField("code").to_string(),
            "the field 'code' appears more than once"
        );
    }

    #[test]
    fn error_response_is_json_with_code_and_description() {
        let r = Error::MissingField("code").response();
        assert_eq!(r.status, 400);
        assert_eq!(r.content_type, "application/json");
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["error"], "invalid_request");
        assert_eq!(v["error_description"], "the field 'code' is required");
    }

    #[test]
    fn method_not_allowed_carries_allow() {
        let r = Error::MethodNotAllowed { allow: "POST" }.response();
        assert_eq!(r.header("allow"), Some("POST"));
    }

    #[test]
    fn rate_limited_answer_carries_retry_after() {
        let r = Error::RateLimited {
            retry_after_secs: 7,
        }
        .response();
        assert_eq!(r.status, 429);
        assert_eq!(r.header("Retry-After"), Some("7"));
    }
}
