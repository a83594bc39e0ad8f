//! Spotify's refresh-token lifetime: Spotify ends a refresh token a fixed
//! time after the user signed in (`REFRESH_TOKEN_LIFETIME_SECS`, 180 days),
//! and refreshing does not extend it. A sealed token of format version 2
//! carries its sign-in time (`token.rs`); from that time this says what an
//! answer tells the app: the seconds left, as `refresh_token_expires_in` on
//! a `200`, and, when Spotify refuses a token past its lifetime with
//! `invalid_grant`, a description that says so — and how old a token is,
//! for `/metrics`.
//!
//! Times are whole Unix seconds from the system clock. A sign-in time ahead
//! of this clock (sealed by an instance whose clock runs ahead) counts as
//! now: a token never has more than the whole lifetime left.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

/// The field of a `200` answer that says how many seconds the refresh
/// token has left (the name GitHub and Microsoft use for the same thing).
const EXPIRES_IN_FIELD: &str = "refresh_token_expires_in";
/// Seconds in a day: the description and the age histogram count days.
const SECS_PER_DAY: u64 = 86_400;

/// Now, in Unix seconds; 0 for a clock set before 1970.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// Seconds until Spotify ends a token signed in at `signed_in_at`, at
/// `now`: at least 0, at most the whole `lifetime`.
fn seconds_left(lifetime: Duration, signed_in_at: u64, now: u64) -> u64 {
    lifetime
        .as_secs()
        .saturating_sub(now.saturating_sub(signed_in_at))
}

/// How long ago a token was signed in, at `now` (none for a sign-in time
/// ahead of the clock).
pub(crate) fn age(signed_in_at: u64, now: u64) -> Duration {
    Duration::from_secs(now.saturating_sub(signed_in_at))
}

/// Adds `refresh_token_expires_in` to a `200` answer whose refresh token
/// was signed in at `signed_in_at`. Nothing without a sign-in time (a
/// version-1 token, encryption off) or with the lifetime never stated.
pub(crate) fn state_expiry(
    body: &mut Map<String, Value>,
    lifetime: Option<Duration>,
    signed_in_at: Option<u64>,
    now: u64,
) {
    if let (Some(lifetime), Some(signed_in_at)) = (lifetime, signed_in_at) {
        let left = seconds_left(lifetime, signed_in_at, now);
        body.insert(EXPIRES_IN_FIELD.into(), Value::from(left));
    }
}

/// When Spotify refused a token signed in at `signed_in_at` with
/// `invalid_grant` and its lifetime is over, replaces the
/// `error_description` by one that tells the app why and what to do; the
/// status and `error` stay Spotify's. Anything else is left as it is.
pub(crate) fn explain_expiry(
    body: &mut Map<String, Value>,
    lifetime: Option<Duration>,
    signed_in_at: Option<u64>,
    now: u64,
) {
    let (Some(lifetime), Some(signed_in_at)) = (lifetime, signed_in_at) else {
        return;
    };
    let invalid_grant = body.get("error").and_then(Value::as_str) == Some("invalid_grant");
    if invalid_grant && seconds_left(lifetime, signed_in_at, now) == 0 {
        body.insert(
            "error_description".into(),
            Value::from(expired_description(lifetime)),
        );
    }
}

/// The description of a token past its lifetime; the lifetime in whole
/// days (rounded down).
fn expired_description(lifetime: Duration) -> String {
    let days = lifetime.as_secs() / SECS_PER_DAY;
    format!(
        "refresh token expired: Spotify ends refresh tokens {days} days after sign-in; \
         sign in again"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIFETIME: Option<Duration> = Some(Duration::from_secs(180 * SECS_PER_DAY));
    const SIGNED_IN_AT: u64 = 1_767_225_600;

    fn object(value: Value) -> Map<String, Value> {
        let Value::Object(map) = value else {
            unreachable!("a JSON object literal")
        };
        map
    }

    fn expiry(lifetime: Option<Duration>, signed_in_at: Option<u64>, now: u64) -> Option<Value> {
        let mut body = object(serde_json::json!({"access_token": "a"}));
        state_expiry(&mut body, lifetime, signed_in_at, now);
        body.get(EXPIRES_IN_FIELD).cloned()
    }

    #[test]
    fn a_fresh_sign_in_has_the_whole_lifetime_left() {
        assert_eq!(
            expiry(LIFETIME, Some(SIGNED_IN_AT), SIGNED_IN_AT),
            Some(Value::from(15_552_000))
        );
    }

    #[test]
    fn seconds_left_count_down_and_stop_at_zero() {
        let day = SECS_PER_DAY;
        let at = |now| expiry(LIFETIME, Some(SIGNED_IN_AT), now);
        assert_eq!(at(SIGNED_IN_AT + 30 * day), Some(Value::from(150 * day)));
        assert_eq!(at(SIGNED_IN_AT + 180 * day - 1), Some(Value::from(1)));
        assert_eq!(at(SIGNED_IN_AT + 180 * day), Some(Value::from(0)));
        assert_eq!(at(SIGNED_IN_AT + 400 * day), Some(Value::from(0)));
    }

    #[test]
    fn a_sign_in_time_ahead_of_the_clock_counts_as_now() {
        assert_eq!(
            expiry(LIFETIME, Some(SIGNED_IN_AT + 60), SIGNED_IN_AT),
            Some(Value::from(15_552_000))
        );
        assert_eq!(age(SIGNED_IN_AT + 60, SIGNED_IN_AT), Duration::ZERO);
    }

    #[test]
    fn no_field_without_a_sign_in_time_or_a_lifetime() {
        assert_eq!(expiry(LIFETIME, None, SIGNED_IN_AT), None);
        assert_eq!(expiry(None, Some(SIGNED_IN_AT), SIGNED_IN_AT), None);
    }

    fn explained(body: Value, lifetime: Option<Duration>, now: u64) -> Map<String, Value> {
        let mut body = object(body);
        explain_expiry(&mut body, lifetime, Some(SIGNED_IN_AT), now);
        body
    }

    #[test]
    fn invalid_grant_past_the_lifetime_says_the_token_expired() {
        let refused = serde_json::json!({
            "error": "invalid_grant",
            "error_description": "Invalid refresh token",
        });
        let past = SIGNED_IN_AT + 180 * SECS_PER_DAY;
        let body = explained(refused.clone(), LIFETIME, past);
        assert_eq!(body["error"], "invalid_grant");
        assert_eq!(
            body["error_description"],
            "refresh token expired: Spotify ends refresh tokens 180 days after sign-in; \
             sign in again"
        );
        assert_eq!(body.len(), 2);
        // Within the lifetime, or never stated: Spotify's own words.
        assert_eq!(
            explained(refused.clone(), LIFETIME, past - 1),
            object(refused.clone())
        );
        assert_eq!(explained(refused.clone(), None, past), object(refused));
    }

    #[test]
    fn other_refusals_past_the_lifetime_are_left_alone() {
        let past = SIGNED_IN_AT + 200 * SECS_PER_DAY;
        for refused in [
            serde_json::json!({"error": "invalid_client", "error_description": "x"}),
            serde_json::json!({"error": {"status": 400, "message": "x"}}),
        ] {
            assert_eq!(explained(refused.clone(), LIFETIME, past), object(refused));
        }
    }

    #[test]
    fn the_description_counts_whole_days() {
        let days = |secs| expired_description(Duration::from_secs(secs));
        assert!(days(5).contains(" 0 days "), "{}", days(5));
        assert!(days(2 * SECS_PER_DAY - 1).contains(" 1 days "));
    }
}
