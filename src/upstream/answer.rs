//! What Spotify's response to a token request comes to. It is read within
//! its limit, then judged by status: a 200 with a JSON object is the
//! token answer; a 4xx is passed on to the client (with an error object of
//! our own when Spotify's is not one a client can read); a 5xx, a redirect
//! or anything unreadable is an [`Error`].
//!
//! Spotify's 429 is decided here and only here: it opens the local
//! [`Backoff`] window, is passed on with a `Retry-After` (Spotify's,
//! clamped; ours when it sent none) and Spotify's `reason` (a quota, or a
//! rate limit: [`RateLimitReason`]), and counts as a failed call.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Map, Value};
use ureq::Body;
use ureq::http::Response;

use super::date::parse_retry_after;
use super::error::{Error, FailureKind, Unusable};

/// Largest answer from Spotify we read; a larger one is a 502.
pub(super) const MAX_UPSTREAM_BODY_BYTES: u64 = 64 * 1024;
/// Room reserved for Spotify's answer before reading it.
const UPSTREAM_BODY_CAPACITY: usize = 1024;
/// Back-off used when Spotify answers 429 without a usable `Retry-After`.
const DEFAULT_BACKOFF_SECS: u64 = 5;
/// Longest back-off window honoured, whatever Spotify says: a day. Quota
/// 429s come with a `Retry-After` of hours, and clients are told the wait
/// Spotify stated, not a shorter one that only brings them back to another
/// 429; the bound stops a bogus value from shutting the app out for good.
/// A long window costs nothing while it lasts: it is an instant behind a
/// lock, and a request in it is answered at once, holding no connection.
const MAX_BACKOFF_SECS: u64 = 24 * 60 * 60;
/// Spotify's `reason` for a 429 that means the app's quota is used up.
const QUOTA_EXCEEDED: &str = "QUOTA_EXCEEDED";

/// Spotify's answer, when it is one to pass on to the client. Its `Debug`
/// shows the body's field names, not their values.
pub(crate) struct Answer {
    /// 200, or the 4xx status Spotify chose.
    pub(crate) status: u16,
    /// The JSON object Spotify sent (or our own error object for a 4xx
    /// without one).
    pub(crate) body: Map<String, Value>,
    /// For 429: seconds to wait.
    pub(crate) retry_after_secs: Option<u64>,
    /// For 429: the answer counts as a failed call.
    failure: Option<FailureKind>,
    /// For 429: why, as `/metrics` counts it.
    rate_limited: Option<RateLimitReason>,
}

impl std::fmt::Debug for Answer {
    // SECURITY: the body holds the access and refresh tokens.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer")
            .field("status", &self.status)
            .field("body_fields", &self.body.keys().collect::<Vec<_>>())
            .field("retry_after_secs", &self.retry_after_secs)
            .finish()
    }
}

/// What one token call came to, with what there is to count about it.
#[derive(Debug)]
pub(crate) struct Call {
    /// Spotify's answer to pass on (200 or 4xx), or why there is none.
    pub(crate) result: Result<Answer, Error>,
    /// How long the call took; `None` when none was made (the back-off
    /// window was open).
    pub(crate) duration: Option<Duration>,
}

impl Call {
    /// The kind of failed call to count, if it failed: every error but the
    /// back-off refusal, and Spotify's 429.
    pub(crate) fn failure(&self) -> Option<FailureKind> {
        match &self.result {
            Ok(answer) => answer.failure,
            Err(error) => error.failure_kind(),
        }
    }

    /// Why Spotify answered 429, if it did.
    pub(crate) fn rate_limit_reason(&self) -> Option<RateLimitReason> {
        self.result
            .as_ref()
            .ok()
            .and_then(|answer| answer.rate_limited)
    }
}

/// Why Spotify answered 429, for
/// `spotify_token_swap_upstream_rate_limited_total{reason}`: its `reason`
/// `QUOTA_EXCEEDED` is the app's quota; any other reason, or none, is a
/// rate limit (Spotify's answer to too many requests in a short time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RateLimitReason {
    /// The app's quota is used up (`QUOTA_EXCEEDED`); the wait is hours.
    Quota,
    /// Any other 429.
    RateLimit,
}

impl RateLimitReason {
    /// Every reason, in the order `/metrics` lists them:
    /// `ALL[reason.index()] == reason`.
    pub(crate) const ALL: [RateLimitReason; 2] =
        [RateLimitReason::Quota, RateLimitReason::RateLimit];

    /// The `reason` label in metrics.
    pub(crate) fn label(self) -> &'static str {
        match self {
            RateLimitReason::Quota => "quota",
            RateLimitReason::RateLimit => "rate_limit",
        }
    }

    /// Its place in [`RateLimitReason::ALL`], for a table of counters.
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The kind of Spotify's `reason`.
    fn of(reason: Option<&str>) -> RateLimitReason {
        match reason {
            Some(QUOTA_EXCEEDED) => RateLimitReason::Quota,
            _ => RateLimitReason::RateLimit,
        }
    }
}

/// The local back-off window: while it is open, token requests are
/// answered 429 here without calling Spotify, so a burst of clients cannot
/// get the app throttled for longer.
#[derive(Debug, Default)]
pub(super) struct Backoff {
    until: Mutex<Option<Instant>>,
}

impl Backoff {
    /// Seconds left in the window, if one is open.
    pub(super) fn remaining(&self) -> Option<u64> {
        let guard = self.until.lock().unwrap_or_else(|e| e.into_inner());
        let until = (*guard)?;
        let left = until.checked_duration_since(Instant::now())?;
        // Round up, so a client never retries a moment too early.
        Some(left.as_secs() + u64::from(left.subsec_nanos() > 0))
    }

    /// Keeps the window open for `secs` from now, unless it already
    /// reaches further.
    fn open(&self, secs: u64) {
        let until = Instant::now() + Duration::from_secs(secs.min(MAX_BACKOFF_SECS));
        let mut guard = self.until.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none_or(|current| current < until) {
            *guard = Some(until);
        }
    }
}

/// Reads Spotify's response to a token request and judges it by status;
/// a 429 opens `backoff`.
pub(super) fn judge(mut response: Response<Body>, backoff: &Backoff) -> Result<Answer, Error> {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    let read = read_body(&mut response);
    if status >= 500 {
        return Err(Error::ServerFailed(status));
    }
    let parsed = match serde_json::from_slice::<Value>(&read?) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    };
    match (status, parsed) {
        (200, Some(body)) => Ok(Answer {
            status,
            body,
            retry_after_secs: None,
            failure: None,
            rate_limited: None,
        }),
        (200, None) => Err(Error::BadResponse(Unusable::NotJsonObject)),
        (400..=499, body) => Ok(refusal(status, body, retry_after, backoff)),
        _ => Err(Error::BadResponse(Unusable::UnexpectedStatus)),
    }
}

/// The body, up to [`MAX_UPSTREAM_BODY_BYTES`]. Read whatever the status,
/// so the connection can go back to the pool.
fn read_body(response: &mut Response<Body>) -> Result<Vec<u8>, Error> {
    // ureq's `read_to_vec` starts from an empty Vec, so std's
    // `read_to_end` probes and regrows it through several reads; a token
    // answer is a few hundred bytes and fits this in one.
    let mut bytes = Vec::with_capacity(UPSTREAM_BODY_CAPACITY);
    let read = std::io::Read::read_to_end(
        &mut response
            .body_mut()
            .with_config()
            .limit(MAX_UPSTREAM_BODY_BYTES)
            .reader(),
        &mut bytes,
    )
    .map_err(ureq::Error::from);
    match read {
        Ok(_) => Ok(bytes),
        Err(ureq::Error::BodyExceedsLimit(_)) => Err(Error::BadResponse(Unusable::BodyTooLarge)),
        Err(e) => Err(Error::from_transport(&e)),
    }
}

/// Spotify's 4xx, as passed on to the client. For a 429 this is the one
/// place that decides what follows: the back-off window opens for the
/// clamped `Retry-After`, the client gets the same `Retry-After` and
/// Spotify's `reason`, and the answer counts as a failed call.
fn refusal(
    status: u16,
    body: Option<Map<String, Value>>,
    retry_after: Option<u64>,
    backoff: &Backoff,
) -> Answer {
    let rate_limited = status == 429;
    let retry_after_secs = rate_limited.then(|| {
        let secs = retry_after
            .unwrap_or(DEFAULT_BACKOFF_SECS)
            .clamp(1, MAX_BACKOFF_SECS);
        backoff.open(secs);
        secs
    });
    let reason = rate_limited
        .then(|| spotify_reason(body.as_ref()).map(str::to_owned))
        .flatten();
    // Pass Spotify's body on only when its `error` is a string: clients
    // (SpotifyAPI-NET) read `error` as a string and fail on the Web API's
    // `{"error":{"status":..,"message":..}}`.
    let mut body = body
        .filter(|m| m.get("error").is_some_and(Value::is_string))
        .unwrap_or_else(|| own_error_body(status));
    if let Some(reason) = &reason {
        body.insert("reason".into(), Value::from(reason.as_str()));
    }
    Answer {
        status,
        body,
        retry_after_secs,
        failure: rate_limited.then_some(FailureKind::RateLimited),
        rate_limited: rate_limited.then(|| RateLimitReason::of(reason.as_deref())),
    }
}

/// Spotify's `reason` for a 429, when it gave one as a string: inside the
/// Web API's error object (`{"error":{"status":429,"message":…,"reason":…}}`),
/// or beside an OAuth `error` string.
fn spotify_reason(body: Option<&Map<String, Value>>) -> Option<&str> {
    let body = body?;
    let reason = match body.get("error") {
        Some(Value::Object(error)) => error.get("reason"),
        _ => body.get("reason"),
    };
    reason.and_then(Value::as_str)
}

/// An error object of our own for a 4xx whose body is not Spotify's JSON.
fn own_error_body(status: u16) -> Map<String, Value> {
    let code = match status {
        400 => "invalid_grant",
        401 => "invalid_client",
        403 => "access_denied",
        429 => "too_many_requests",
        _ => "invalid_request",
    };
    let mut map = Map::new();
    map.insert("error".into(), Value::from(code));
    map.insert(
        "error_description".into(),
        Value::from(format!("Spotify's accounts service answered {status}")),
    );
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_large_a_body_is_described_by_its_limit() {
        let limit_kib = MAX_UPSTREAM_BODY_BYTES / 1024;
        assert_eq!(
            Error::BadResponse(Unusable::BodyTooLarge).to_string(),
            format!(
                "Spotify's accounts service sent an unusable answer: \
                 the answer is larger than {limit_kib} KiB"
            )
        );
    }

    #[test]
    fn own_error_body_for_non_json_400_is_invalid_grant() {
        let body = own_error_body(400);
        assert_eq!(body["error"], "invalid_grant");
    }

    fn object(value: Value) -> Map<String, Value> {
        let Value::Object(map) = value else {
            unreachable!("a JSON object literal")
        };
        map
    }

    #[test]
    fn spotify_429_opens_the_window_is_passed_on_and_counts_as_a_failure() {
        let backoff = Backoff::default();
        let body = object(serde_json::json!({"error": "rate_limit_exceeded"}));
        let answer = refusal(429, Some(body), Some(2 * MAX_BACKOFF_SECS), &backoff);
        assert_eq!(answer.status, 429);
        assert_eq!(answer.body["error"], "rate_limit_exceeded");
        assert_eq!(answer.retry_after_secs, Some(MAX_BACKOFF_SECS));
        assert_eq!(answer.failure, Some(FailureKind::RateLimited));
        assert_eq!(answer.rate_limited, Some(RateLimitReason::RateLimit));
        let left = backoff.remaining().unwrap();
        assert!(
            left > MAX_BACKOFF_SECS - 5 && left <= MAX_BACKOFF_SECS,
            "{left}"
        );
    }

    #[test]
    fn a_quota_429_waits_the_hours_spotify_states() {
        let backoff = Backoff::default();
        let five_hours = 5 * 3600;
        let answer = refusal(429, None, Some(five_hours), &backoff);
        assert_eq!(answer.retry_after_secs, Some(five_hours));
        let left = backoff.remaining().unwrap();
        assert!(left > five_hours - 5 && left <= five_hours, "{left}");
    }

    #[test]
    fn a_quota_429_is_oauth_shaped_with_spotifys_reason() {
        let backoff = Backoff::default();
        let body = object(serde_json::json!({"error": {
            "status": 429,
            "message": "Quota exceeded",
            "reason": "QUOTA_EXCEEDED",
        }}));
        let answer = refusal(429, Some(body), Some(60), &backoff);
        assert_eq!(
            serde_json::to_string(&answer.body).unwrap(),
            r#"{"error":"too_many_requests","error_description":"Spotify's accounts service answered 429","reason":"QUOTA_EXCEEDED"}"#
        );
        assert_eq!(answer.rate_limited, Some(RateLimitReason::Quota));
    }

    #[test]
    fn a_429_reason_is_counted_as_quota_only_when_it_is_quota_exceeded() {
        let reason_of =
            |body: Value| refusal(429, Some(object(body)), None, &Backoff::default()).rate_limited;
        let beside_a_string_error = serde_json::json!({
            "error": "rate_limit_exceeded",
            "reason": "QUOTA_EXCEEDED",
        });
        assert_eq!(
            reason_of(beside_a_string_error),
            Some(RateLimitReason::Quota)
        );
        for other in [
            serde_json::json!({"error": {"status": 429, "reason": "RATE_LIMITED"}}),
            serde_json::json!({"error": {"status": 429, "reason": 7}}),
            serde_json::json!({"error": {"status": 429, "message": "slow down"}}),
            serde_json::json!({"error": "rate_limit_exceeded"}),
        ] {
            assert_eq!(reason_of(other), Some(RateLimitReason::RateLimit));
        }
        let labels: Vec<_> = RateLimitReason::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels, ["quota", "rate_limit"]);
        for (i, reason) in RateLimitReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i);
        }
    }

    #[test]
    fn a_429_without_a_reason_gets_none_and_other_4xx_are_left_alone() {
        let answer = refusal(429, None, None, &Backoff::default());
        assert_eq!(answer.body.get("reason"), None);
        let body =
            object(serde_json::json!({"error": {"status": 400, "reason": "QUOTA_EXCEEDED"}}));
        let answer = refusal(400, Some(body), None, &Backoff::default());
        assert_eq!(answer.body.get("reason"), None);
        assert_eq!(answer.rate_limited, None);
    }

    #[test]
    fn spotify_429_without_retry_after_waits_the_default() {
        let backoff = Backoff::default();
        let answer = refusal(429, None, None, &backoff);
        assert_eq!(answer.retry_after_secs, Some(DEFAULT_BACKOFF_SECS));
        assert_eq!(answer.body["error"], "too_many_requests");
        assert!(backoff.remaining().is_some());
    }

    #[test]
    fn other_4xx_are_passed_on_without_window_or_failure() {
        let backoff = Backoff::default();
        let body = object(serde_json::json!({"error": {"status": 400}}));
        let answer = refusal(400, Some(body), Some(30), &backoff);
        assert_eq!(answer.body["error"], "invalid_grant");
        assert_eq!((answer.retry_after_secs, answer.failure), (None, None));
        assert_eq!(backoff.remaining(), None);
    }

    #[test]
    fn a_shorter_429_does_not_shorten_an_open_window() {
        let backoff = Backoff::default();
        backoff.open(60);
        backoff.open(1);
        assert!(backoff.remaining().unwrap() > 50);
    }

    #[test]
    fn answer_debug_names_fields_but_hides_tokens() {
        let body = object(serde_json::json!({
            "access_token": "BQC-access-token",
            "refresh_token": "AQD-refresh-token",
            "expires_in": 3600,
        }));
        let answer = Answer {
            status: 200,
            body,
            retry_after_secs: None,
            failure: None,
            rate_limited: None,
        };
        let debug = format!("{answer:?}");
        assert!(!debug.contains("BQC-access-token"), "{debug}");
        assert!(!debug.contains("AQD-refresh-token"), "{debug}");
        assert!(debug.contains(r#""refresh_token""#), "{debug}");
        assert!(debug.contains("status: 200"), "{debug}");
    }
}
