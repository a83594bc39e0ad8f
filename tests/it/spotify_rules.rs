//! Spotify's rules since 2025, over real sockets: sealed tokens carry the
//! user's sign-in time (format version 2), answers state the seconds left
//! of Spotify's refresh-token lifetime as `refresh_token_expires_in`, a
//! re-sealed token keeps its time, version-1 tokens still work and state
//! nothing, Spotify's `invalid_grant` past the lifetime says the token
//! expired; quota 429s carry Spotify's `reason` and are counted by reason;
//! `/metrics` has the refresh-token age at refresh.

use crate::support;

use std::thread::sleep;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use support::metrics::{sample, scrape, value};
use support::mock::{MockSpotify, Reply};
use support::{
    Resp, ServerProc, assert_error, post_form, start_both, start_mock, start_server, timed,
};

const SECRET_A: &str = "secret-A-for-tests-at-least-32-characters";
const SECRET_B: &str = "secret-B-for-tests-at-least-32-characters";
/// `refresh-v1`, sealed under [`SECRET_A`] for `support::CLIENT_ID` by the
/// server before sign-in times were kept (format version 1).
const SEALED_V1: &str = "AacsZoguHZW9FXyvNeUHxaGz3MjLOKtlc-BQZ_NFJ4jKZ6LyH4SJ";
/// Spotify's refresh token inside [`SEALED_V1`].
const V1_PLAIN: &str = "refresh-v1";
/// The default `REFRESH_TOKEN_LIFETIME_SECS`: 180 days.
const DEFAULT_LIFETIME_SECS: u64 = 15_552_000;
/// A lifetime for the tests that let time pass: long enough that nothing
/// ends by accident.
const LIFETIME_SECS: u64 = 1000;
/// The field stating the seconds left.
const EXPIRES_IN: &str = "refresh_token_expires_in";
/// Longer than a second, so a sign-in time kept shows as a second less.
const A_SECOND_AND_MORE: Duration = Duration::from_millis(1100);

fn swap(server: &ServerProc, code: &str) -> Resp {
    post_form(server.addr(), "/swap", &[("code", code)])
}

fn refresh(server: &ServerProc, token: &str) -> Resp {
    post_form(server.addr(), "/refresh", &[("refresh_token", token)])
}

/// Swaps `code` (registered first): the answer, a 200.
fn swapped(mock: &MockSpotify, server: &ServerProc, code: &str) -> Value {
    mock.add_code(code);
    let resp = swap(server, code);
    assert_eq!(resp.status, 200, "{resp:?}");
    resp.json()
}

/// `resp`'s body, which must be a 200's.
fn ok(resp: &Resp) -> Value {
    assert_eq!(resp.status, 200, "{resp:?}");
    resp.json()
}

/// The `refresh_token` of `body`, which must have one.
fn refresh_token(body: &Value) -> String {
    body["refresh_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no refresh_token: {body}"))
        .to_owned()
}

/// The `refresh_token_expires_in` of `body`, which must be a whole number.
fn expires_in(body: &Value) -> u64 {
    body[EXPIRES_IN]
        .as_u64()
        .unwrap_or_else(|| panic!("no integer {EXPIRES_IN}: {body}"))
}

/// The format version of a sealed token: its first byte.
fn version(sealed: &str) -> u8 {
    URL_SAFE_NO_PAD
        .decode(sealed)
        .unwrap_or_else(|e| panic!("not base64url ({e}): {sealed}"))[0]
}

/// A server sealing under [`SECRET_A`], with a lifetime of `lifetime_secs`.
fn sealing_a(mock: &MockSpotify, lifetime_secs: &str) -> ServerProc {
    start_server(
        mock,
        &[
            ("ENCRYPTION_SECRET", SECRET_A),
            ("REFRESH_TOKEN_LIFETIME_SECS", lifetime_secs),
        ],
    )
}

/// After a key rotation: sealing under [`SECRET_B`], opening what
/// [`SECRET_A`] sealed; with `only_b`, [`SECRET_B`] alone.
fn sealing_b(mock: &MockSpotify, only_b: bool) -> ServerProc {
    let lifetime = LIFETIME_SECS.to_string();
    let mut vars = vec![
        ("ENCRYPTION_SECRET", SECRET_B),
        ("REFRESH_TOKEN_LIFETIME_SECS", lifetime.as_str()),
    ];
    if !only_b {
        vars.push(("ENCRYPTION_SECRET_PREVIOUS", SECRET_A));
    }
    start_server(mock, &vars)
}

#[test]
fn swap_seals_a_version_2_token_and_states_the_whole_lifetime() {
    let (mock, server) = start_both(&[("ENCRYPTION_SECRET", SECRET_A)]);

    let body = swapped(&mock, &server, "c1");

    assert_eq!(version(&refresh_token(&body)), 2, "{body}");
    let left = expires_in(&body);
    assert!(
        (DEFAULT_LIFETIME_SECS - 2..=DEFAULT_LIFETIME_SECS).contains(&left),
        "{body}"
    );
    // Spotify's fields pass as they were.
    assert_eq!(body["access_token"], "access-c1");
    assert_eq!(body["expires_in"], 3600);
}

#[test]
fn refresh_states_what_is_left_since_sign_in() {
    let mock = start_mock();
    let server = sealing_a(&mock, &LIFETIME_SECS.to_string());
    let token = refresh_token(&swapped(&mock, &server, "c1"));
    sleep(A_SECOND_AND_MORE);

    let body = ok(&refresh(&server, &token));

    let left = expires_in(&body);
    assert!(
        (LIFETIME_SECS - 4..LIFETIME_SECS).contains(&left),
        "counted from sign-in, a second and more ago: {body}"
    );
    assert_eq!(mock.last_field("refresh_token"), Some("refresh-c1".into()));
}

#[test]
fn a_new_refresh_token_from_spotify_keeps_the_sign_in_time() {
    let mock = start_mock();
    mock.set_rotate_refresh_tokens(true);
    let server = sealing_a(&mock, &LIFETIME_SECS.to_string());
    let token = refresh_token(&swapped(&mock, &server, "c1"));
    sleep(A_SECOND_AND_MORE);
    let rotated = refresh_token(&ok(&refresh(&server, &token)));
    assert_eq!(version(&rotated), 2);

    let body = ok(&refresh(&server, &rotated));

    assert_eq!(
        mock.last_field("refresh_token"),
        Some("refresh-rotated-1".into())
    );
    let left = expires_in(&body);
    assert!((LIFETIME_SECS - 4..LIFETIME_SECS).contains(&left), "{body}");
}

#[test]
fn a_token_resealed_under_the_new_secret_keeps_the_sign_in_time() {
    let mock = start_mock();
    let old = sealing_a(&mock, &LIFETIME_SECS.to_string());
    let (rotated, only_b) = (sealing_b(&mock, false), sealing_b(&mock, true));
    let token = refresh_token(&swapped(&mock, &old, "c1"));
    sleep(A_SECOND_AND_MORE);

    let resealed = refresh_token(&ok(&refresh(&rotated, &token)));
    let body = ok(&refresh(&only_b, &resealed));

    assert_eq!(version(&resealed), 2);
    assert_eq!(mock.last_field("refresh_token"), Some("refresh-c1".into()));
    let left = expires_in(&body);
    assert!((LIFETIME_SECS - 4..LIFETIME_SECS).contains(&left), "{body}");
}

#[test]
fn a_version_1_token_still_refreshes_and_states_no_expiry() {
    let mock = start_mock();
    mock.add_refresh_token(V1_PLAIN);
    let server = sealing_a(&mock, &LIFETIME_SECS.to_string());

    let body = ok(&refresh(&server, SEALED_V1));

    assert_eq!(version(SEALED_V1), 1);
    assert_eq!(mock.last_field("refresh_token"), Some(V1_PLAIN.into()));
    assert_eq!(body.get(EXPIRES_IN), None, "{body}");
    assert_eq!(body.get("refresh_token"), None, "{body}");
}

#[test]
fn a_version_1_token_resealed_under_the_new_secret_stays_version_1() {
    let mock = start_mock();
    mock.add_refresh_token(V1_PLAIN);
    let (rotated, only_b) = (sealing_b(&mock, false), sealing_b(&mock, true));

    let answer = ok(&refresh(&rotated, SEALED_V1));
    let resealed = refresh_token(&answer);
    let body = ok(&refresh(&only_b, &resealed));

    // No time is made up for a token that carried none.
    assert_eq!(version(&resealed), 1);
    assert_eq!((answer.get(EXPIRES_IN), body.get(EXPIRES_IN)), (None, None));
    assert_eq!(mock.last_field("refresh_token"), Some(V1_PLAIN.into()));
}

#[test]
fn with_encryption_off_or_a_lifetime_of_0_nothing_is_stated() {
    let mock = start_mock();
    for server in [start_server(&mock, &[]), sealing_a(&mock, "0")] {
        let swapped = swapped(&mock, &server, "c1");
        let refreshed = ok(&refresh(&server, &refresh_token(&swapped)));

        assert_eq!(swapped.get(EXPIRES_IN), None, "{swapped}");
        assert_eq!(refreshed.get(EXPIRES_IN), None, "{refreshed}");
    }
}

#[test]
fn invalid_grant_past_the_lifetime_says_the_token_expired() {
    let _timed = timed();
    const LIFETIME: u64 = 3;
    let revoked = || {
        Reply::json(
            400,
            r#"{"error":"invalid_grant","error_description":"Refresh token revoked"}"#,
        )
    };
    let mock = start_mock();
    let server = sealing_a(&mock, &LIFETIME.to_string());
    let token = refresh_token(&swapped(&mock, &server, "c1"));
    mock.push_reply(revoked());
    let within = refresh(&server, &token);
    sleep(Duration::from_secs(LIFETIME + 1));

    let past = ok(&refresh(&server, &token));
    mock.push_reply(revoked());
    let refused = refresh(&server, &token);

    assert_error(&within, 400, "invalid_grant");
    assert_eq!(within.json()["error_description"], "Refresh token revoked");
    assert_eq!(expires_in(&past), 0, "{past}");
    assert_error(&refused, 400, "invalid_grant");
    assert_eq!(
        refused.json(),
        json!({
            "error": "invalid_grant",
            "error_description": "refresh token expired: Spotify ends refresh tokens \
                                  0 days after sign-in; sign in again",
        })
    );
}

#[test]
fn refresh_token_age_is_observed_for_tokens_that_carry_a_sign_in_time() {
    let mock = start_mock();
    mock.add_refresh_token(V1_PLAIN);
    let server = sealing_a(&mock, &LIFETIME_SECS.to_string());
    let token = refresh_token(&swapped(&mock, &server, "c1"));
    let name = "spotify_token_swap_refresh_token_age_days";
    assert_eq!(value(&scrape(server.addr()), &format!("{name}_count")), 0.0);

    ok(&refresh(&server, &token));
    ok(&refresh(&server, &token));
    ok(&refresh(&server, SEALED_V1));

    let text = scrape(server.addr());
    assert!(
        text.contains(&format!("# TYPE {name} histogram\n")),
        "{text}"
    );
    for (series, count) in [
        (format!("{name}_bucket{{le=\"1\"}}"), 2.0),
        (format!("{name}_bucket{{le=\"180\"}}"), 2.0),
        (format!("{name}_bucket{{le=\"+Inf\"}}"), 2.0),
        (format!("{name}_count"), 2.0),
    ] {
        assert_eq!(sample(&text, &series), Some(count), "{series}\n{text}");
    }
    assert!(value(&text, &format!("{name}_sum")) < 0.001, "{text}");
}

/// `spotify_token_swap_upstream_rate_limited_total` of `server`: (quota,
/// rate_limit).
fn upstream_rate_limited(server: &ServerProc) -> (f64, f64) {
    let text = scrape(server.addr());
    let count = |reason: &str| {
        let series =
            format!("spotify_token_swap_upstream_rate_limited_total{{reason=\"{reason}\"}}");
        value(&text, &series)
    };
    (count("quota"), count("rate_limit"))
}

#[test]
fn a_quota_429_answers_with_its_reason_and_is_counted_by_reason() {
    let mock = start_mock();
    let (quota, rate) = (start_server(&mock, &[]), start_server(&mock, &[]));
    mock.push_reply(Reply::json_with_headers(
        429,
        r#"{"error":{"status":429,"message":"Quota exceeded","reason":"QUOTA_EXCEEDED"}}"#,
        &[("Retry-After", "18000")],
    ));
    let over_quota = swap(&quota, "c1");
    mock.push_reply(Reply::too_many_requests(7));
    let rate_limited = swap(&rate, "c2");

    // OAuth-shaped: `error` a string, as SpotifyAPI-NET reads it.
    assert_error(&over_quota, 429, "too_many_requests");
    assert_eq!(
        over_quota.json()["reason"],
        "QUOTA_EXCEEDED",
        "{over_quota:?}"
    );
    assert_eq!(over_quota.header("retry-after"), Some("18000"));
    assert_error(&rate_limited, 429, "rate_limit_exceeded");
    assert_eq!(rate_limited.json().get("reason"), None, "{rate_limited:?}");
    assert_eq!(upstream_rate_limited(&quota), (1.0, 0.0));
    assert_eq!(upstream_rate_limited(&rate), (0.0, 1.0));
    // The window stays open for Spotify's hours, without calling it.
    let later = swap(&quota, "c3");
    support::assert_too_many_requests(&later, 18000);
    let left: u64 = later.header("retry-after").unwrap().parse().unwrap();
    assert!(left > 17_000, "{later:?}");
    assert_eq!(mock.request_count(), 2);
}
