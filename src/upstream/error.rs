//! How a token call can fail, as one typed [`Error`] that knows everything
//! that follows from it: the HTTP status and OAuth `error` code our client
//! is answered with, the `error_description` (its `Display`), the
//! `Retry-After`, and the [`FailureKind`] it is counted under in
//! `/metrics`. Also the one list of failure kinds and their labels.

use std::fmt;

/// Why a token call brought no answer of Spotify's to pass on. (Spotify's
/// own 4xx answers, 429 included, are passed on: they are
/// [`Answer`](super::Answer)s, not errors.)
///
/// `pub`, as is [`Unusable`]: the crate's public [`crate::Error`] carries
/// it. Outside the crate it is reachable that way, never nameable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Spotify answered 429 earlier and its `Retry-After` has not passed
    /// yet: refused here, without calling Spotify.
    Backoff {
        /// Seconds left in the back-off window (`Retry-After`), at least 1.
        retry_after_secs: u64,
    },
    /// The accounts host did not resolve (in time).
    HostNotFound,
    /// Spotify could not be reached: connect, TLS, reset.
    Unreachable,
    /// Spotify did not answer within `UPSTREAM_TIMEOUT_SECS`.
    Timeout,
    /// Spotify answered with this 5xx status.
    ServerFailed(u16),
    /// Spotify's answer cannot be used.
    BadResponse(Unusable),
}

/// What made Spotify's answer unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    /// The head is over its limit (or a body over a limit ureq enforced).
    TooLarge,
    /// The body is over its limit (`answer::MAX_UPSTREAM_BODY_BYTES`,
    /// which the description names).
    BodyTooLarge,
    /// The bytes are not an HTTP response.
    NotHttp,
    /// A 200 whose body is not a JSON object.
    NotJsonObject,
    /// A status that is none of 200, 4xx and 5xx (a redirect: not followed).
    UnexpectedStatus,
}

impl Error {
    /// The HTTP status it is answered with and the OAuth-style `error`
    /// code of the JSON body, one row a kind of error.
    pub(crate) fn status_and_code(&self) -> (u16, &'static str) {
        match self {
            Error::Backoff { .. } => (429, "too_many_requests"),
            Error::HostNotFound
            | Error::Unreachable
            | Error::ServerFailed(_)
            | Error::BadResponse(_) => (502, "server_error"),
            Error::Timeout => (504, "gateway_timeout"),
        }
    }

    /// Seconds for a `Retry-After` header, for the errors that carry one.
    pub(crate) fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Error::Backoff { retry_after_secs } => Some(*retry_after_secs),
            _ => None,
        }
    }

    /// The kind of failed call this is counted as; `None` for the back-off
    /// refusal, which made no call.
    pub(crate) fn failure_kind(&self) -> Option<FailureKind> {
        match self {
            Error::Backoff { .. } => None,
            Error::HostNotFound => Some(FailureKind::Dns),
            Error::Unreachable => Some(FailureKind::Connect),
            Error::Timeout => Some(FailureKind::Timeout),
            Error::ServerFailed(_) => Some(FailureKind::ServerError),
            Error::BadResponse(_) => Some(FailureKind::BadResponse),
        }
    }

    /// ureq's error from sending the request or reading the answer:
    /// timeouts are 504, the rest 502.
    pub(super) fn from_transport(error: &ureq::Error) -> Error {
        match error {
            ureq::Error::Timeout(_) => Error::Timeout,
            ureq::Error::Io(io)
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                ) =>
            {
                Error::Timeout
            }
            ureq::Error::BodyExceedsLimit(_) | ureq::Error::LargeResponseHeader(..) => {
                Error::BadResponse(Unusable::TooLarge)
            }
            ureq::Error::Protocol(_) => Error::BadResponse(Unusable::NotHttp),
            // What the resolver gives for every failure, its deadline included.
            ureq::Error::HostNotFound => Error::HostNotFound,
            _ => Error::Unreachable,
        }
    }
}

/// The `error_description`: never a secret, code or token.
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Backoff { retry_after_secs } => write!(
                f,
                "Spotify is rate limiting this app; retry after {retry_after_secs} s"
            ),
            Error::HostNotFound | Error::Unreachable => {
                f.write_str("Spotify's accounts service is unreachable")
            }
            Error::Timeout => f.write_str("Spotify's accounts service did not answer in time"),
            Error::ServerFailed(status) => {
                write!(f, "Spotify's accounts service failed with status {status}")
            }
            Error::BadResponse(why) => {
                write!(
                    f,
                    "Spotify's accounts service sent an unusable answer: {why}"
                )
            }
        }
    }
}

impl std::error::Error for Error {}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unusable::TooLarge => f.write_str("the answer is too large"),
            Unusable::BodyTooLarge => f.write_str("the answer is larger than 64 KiB"),
            Unusable::NotHttp => f.write_str("the answer is not valid HTTP"),
            Unusable::NotJsonObject => f.write_str("the answer is not a JSON object"),
            Unusable::UnexpectedStatus => f.write_str("unexpected status"),
        }
    }
}

/// Why an upstream call failed, for metrics: one series of
/// `spotify_token_swap_upstream_failures_total` a kind. A new kind is a
/// variant, its label and its place in [`FailureKind::ALL`], all here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// No answer within `UPSTREAM_TIMEOUT_SECS`.
    Timeout,
    /// The host name did not resolve (in time).
    Dns,
    /// No connection: refused, reset, TLS.
    Connect,
    /// Spotify answered 5xx.
    ServerError,
    /// Spotify answered 429 (passed on to the client, and counted).
    RateLimited,
    /// Spotify's answer could not be used.
    BadResponse,
}

impl FailureKind {
    /// Every kind, in the order they are declared and listed in
    /// `/metrics`: `ALL[kind.index()] == kind`.
    pub(crate) const ALL: [FailureKind; 6] = [
        FailureKind::Timeout,
        FailureKind::Dns,
        FailureKind::Connect,
        FailureKind::ServerError,
        FailureKind::RateLimited,
        FailureKind::BadResponse,
    ];

    /// The `kind` label in metrics.
    pub(crate) fn label(self) -> &'static str {
        match self {
            FailureKind::Timeout => "timeout",
            FailureKind::Dns => "dns",
            FailureKind::Connect => "connect",
            FailureKind::ServerError => "5xx",
            FailureKind::RateLimited => "429",
            FailureKind::BadResponse => "bad_response",
        }
    }

    /// The kind's place in [`FailureKind::ALL`], for a table of counters.
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One of each variant.
    fn every_error() -> [Error; 6] {
        [
            Error::Backoff {
                retry_after_secs: 7,
            },
            Error::HostNotFound,
            Error::Unreachable,
            Error::Timeout,
            Error::ServerFailed(503),
            Error::BadResponse(Unusable::NotJsonObject),
        ]
    }

    #[test]
    fn each_error_has_its_status_code_and_retry_after() {
        let answers: Vec<_> = every_error()
            .iter()
            .map(|e| (e.status_and_code(), e.retry_after_secs()))
            .collect();
        assert_eq!(
            answers,
            [
                ((429, "too_many_requests"), Some(7)),
                ((502, "server_error"), None),
                ((502, "server_error"), None),
                ((504, "gateway_timeout"), None),
                ((502, "server_error"), None),
                ((502, "server_error"), None),
            ]
        );
    }

    #[test]
    fn each_call_that_was_made_counts_as_a_failure_and_a_back_off_does_not() {
        let kinds: Vec<_> = every_error().iter().map(Error::failure_kind).collect();
        assert_eq!(
            kinds,
            [
                None,
                Some(FailureKind::Dns),
                Some(FailureKind::Connect),
                Some(FailureKind::Timeout),
                Some(FailureKind::ServerError),
                Some(FailureKind::BadResponse),
            ]
        );
    }

    #[test]
    fn descriptions_are_the_documented_texts() {
        let texts: Vec<String> = every_error().iter().map(Error::to_string).collect();
        assert_eq!(
            texts,
            [
                "Spotify is rate limiting this app; retry after 7 s",
                "Spotify's accounts service is unreachable",
                "Spotify's accounts service is unreachable",
                "Spotify's accounts service did not answer in time",
                "Spotify's accounts service failed with status 503",
                "Spotify's accounts service sent an unusable answer: the answer is not a JSON object",
            ]
        );
    }

    #[test]
    fn failure_kinds_are_listed_in_index_order() {
        for (i, kind) in FailureKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i, "{kind:?}");
        }
        let labels: Vec<_> = FailureKind::ALL.iter().map(|k| k.label()).collect();
        assert_eq!(
            labels,
            ["timeout", "dns", "connect", "5xx", "429", "bad_response"]
        );
    }
}
