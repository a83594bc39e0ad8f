//! Why an attempt to get a certificate failed: one line for the log, and
//! how long the CA asked us to wait, if it did. Nothing in here is secret:
//! ACME answers, URLs and names are what the CA and the public see.

use std::fmt;
use std::time::Duration;

/// The `type` of an ACME problem document (RFC 8555 §6.7) that means "send
/// it again with the fresh nonce".
pub(crate) const BAD_NONCE: &str = "urn:ietf:params:acme:error:badNonce";
/// The account URL we hold is unknown to the CA (it forgot us, or the
/// directory was reset, as pebble's is when it restarts).
pub(crate) const ACCOUNT_DOES_NOT_EXIST: &str = "urn:ietf:params:acme:error:accountDoesNotExist";

/// One failed attempt.
#[derive(Debug)]
pub(crate) enum Error {
    /// The CA could not be reached, or its answer not read.
    Transport { url: String, why: String },
    /// The CA answered with an error status.
    Refused {
        url: String,
        status: u16,
        /// The problem document's `type`, if it sent one.
        kind: String,
        /// Its `detail`.
        detail: String,
        retry_after: Option<Duration>,
    },
    /// The CA's answer was not what RFC 8555 says it is.
    Unexpected { url: String, what: String },
    /// The CA could not validate a name.
    Invalid { domain: String, why: String },
    /// The CA did not finish in time.
    TimedOut { what: String },
    /// Something on this machine: keys, the state directory, a
    /// certificate that does not fit its key.
    Local(String),
}

impl Error {
    /// How long the CA asked us to wait before trying again.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Refused { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether the CA does not know the account URL we sent.
    pub(crate) fn account_unknown(&self) -> bool {
        matches!(self, Error::Refused { kind, .. } if kind == ACCOUNT_DOES_NOT_EXIST)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Transport { url, why } => write!(f, "cannot reach {url}: {why}"),
            Error::Refused {
                url,
                status,
                kind,
                detail,
                ..
            } => {
                write!(f, "{url} answered {status}")?;
                if !kind.is_empty() {
                    write!(f, " {kind}")?;
                }
                if !detail.is_empty() {
                    write!(f, ": {detail}")?;
                }
                Ok(())
            }
            Error::Unexpected { url, what } => write!(f, "unexpected answer from {url}: {what}"),
            Error::Invalid { domain, why } => {
                write!(f, "the CA could not validate {domain}: {why}")
            }
            Error::TimedOut { what } => write!(f, "gave up waiting for {what}"),
            Error::Local(why) => f.write_str(why),
        }
    }
}
