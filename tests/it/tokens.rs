//! Encrypted refresh tokens over real sockets: what the client holds is
//! never Spotify's token, only this server's secret opens it, a token that
//! does not open never reaches Spotify, and key rotation keeps old tokens
//! working while new ones are sealed under the new key.

use crate::support;

use serde_json::Value;
use support::metrics::{scrape, value};
use support::mock::MockSpotify;
use support::{
    Resp, ServerProc, assert_error, assert_still_serving, post_form, start_both, start_mock,
    start_server, start_with_code, start_with_refresh_token,
};

const SECRET_A: &str = "secret-A-for-tests-at-least-32-characters";
const SECRET_B: &str = "secret-B-for-tests-at-least-32-characters";
/// A server sealing refresh tokens under [`SECRET_A`].
const SEALING_A: &[(&str, &str)] = &[("ENCRYPTION_SECRET", SECRET_A)];
/// A server sealing refresh tokens under [`SECRET_B`].
const SEALING_B: &[(&str, &str)] = &[("ENCRYPTION_SECRET", SECRET_B)];
/// A server after a key rotation: sealing under [`SECRET_B`], still opening
/// what [`SECRET_A`] sealed.
const ROTATED: &[(&str, &str)] = &[
    ("ENCRYPTION_SECRET", SECRET_B),
    ("ENCRYPTION_SECRET_PREVIOUS", SECRET_A),
];

fn swap(server: &ServerProc, code: &str) -> Resp {
    post_form(server.addr(), "/swap", &[("code", code)])
}

fn refresh(server: &ServerProc, token: &str) -> Resp {
    post_form(server.addr(), "/refresh", &[("refresh_token", token)])
}

/// Swaps `code` (registered first) and returns the refresh token the client
/// received.
fn swapped_refresh_token(mock: &MockSpotify, server: &ServerProc, code: &str) -> String {
    mock.add_code(code);
    let resp = swap(server, code);
    assert_eq!(resp.status, 200, "{resp:?}");
    returned_refresh_token(&resp, "no refresh_token")
}

/// Swaps code `c1` on a server started with `sealing` and refreshes the
/// token it returned on another started with `opening`, both pointed at one
/// mock: the mock and the refresh's answer.
fn refresh_elsewhere(sealing: &[(&str, &str)], opening: &[(&str, &str)]) -> (MockSpotify, Resp) {
    let mock = start_mock();
    let sealer = start_server(&mock, sealing);
    let opener = start_server(&mock, opening);
    let token = swapped_refresh_token(&mock, &sealer, "c1");
    let resp = refresh(&opener, &token);
    (mock, resp)
}

/// The `refresh_token` of `resp`, which must have one; else panics with
/// `missing` and the whole response.
fn returned_refresh_token(resp: &Resp, missing: &str) -> String {
    resp.json()["refresh_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{missing}:\n{resp:?}"))
        .to_owned()
}

/// Asserts `resp` is a 200 and the refresh token Spotify last received is
/// `plain`.
fn assert_refreshed_upstream_with(resp: &Resp, mock: &MockSpotify, plain: &str) {
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(mock.last_field("refresh_token"), Some(plain.to_owned()));
}

fn is_url_safe(token: &str) -> bool {
    !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Asserts `resp` is 400 `invalid_grant` and Spotify saw no more than
/// `upstream_before` requests.
fn assert_refused_locally(resp: &Resp, mock: &MockSpotify, upstream_before: usize) {
    assert_error(resp, 400, "invalid_grant");
    assert_eq!(
        mock.request_count(),
        upstream_before,
        "a token that does not open reached Spotify: {:?}",
        mock.last_request()
    );
}

#[test]
fn swap_returns_an_encrypted_url_safe_refresh_token() {
    let (mock, server) = start_both(SEALING_A);

    let token = swapped_refresh_token(&mock, &server, "c1");

    assert_ne!(token, "refresh-c1");
    assert!(!token.contains("refresh-c1"), "{token}");
    assert!(is_url_safe(&token), "not URL-safe: {token}");
    // version byte + 96-bit nonce + at least the plaintext + 128-bit tag.
    assert!(
        token.len() >= (1 + 12 + "refresh-c1".len() + 16) * 4 / 3,
        "{token}"
    );
}

#[test]
fn swap_with_encryption_leaves_the_other_fields_alone() {
    let (_mock, server) = start_with_code("c1", SEALING_A);

    let resp = swap(&server, "c1");

    assert_eq!(resp.status, 200, "{resp:?}");
    let body = resp.json();
    assert_eq!(body["access_token"], "access-c1");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["scope"], support::mock::DEFAULT_SCOPE);
}

#[test]
fn encrypted_refresh_token_refreshes_with_the_plain_token_upstream() {
    let (mock, server) = start_both(SEALING_A);
    let token = swapped_refresh_token(&mock, &server, "c1");

    let resp = refresh(&server, &token);

    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.json()["access_token"], "access-refreshed-1");
    let upstream = mock.last_request().expect("Spotify was called");
    assert_eq!(upstream.field("grant_type"), Some("refresh_token"));
    assert_eq!(upstream.field("refresh_token"), Some("refresh-c1"));
}

#[test]
fn encrypted_refresh_token_works_on_another_instance_with_the_same_secret() {
    let (mock, resp) = refresh_elsewhere(SEALING_A, SEALING_A);

    assert_refreshed_upstream_with(&resp, &mock, "refresh-c1");
}

#[test]
fn tampered_refresh_token_is_invalid_grant_without_calling_spotify() {
    let (mock, server) = start_both(SEALING_A);
    let token = swapped_refresh_token(&mock, &server, "c1");
    let mut bytes = token.into_bytes();
    let middle = bytes.len() / 2;
    bytes[middle] = if bytes[middle] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).unwrap();

    let resp = refresh(&server, &tampered);

    assert_refused_locally(&resp, &mock, 1);
    assert_still_serving(server.addr());
}

#[test]
fn truncated_refresh_token_is_invalid_grant_without_calling_spotify() {
    let (mock, server) = start_both(SEALING_A);
    let token = swapped_refresh_token(&mock, &server, "c1");

    for cut in [1, 4, token.len() / 2, token.len() - 1] {
        let resp = refresh(&server, &token[..token.len() - cut]);

        assert_refused_locally(&resp, &mock, 1);
    }
}

#[test]
fn refresh_token_sealed_with_another_secret_is_invalid_grant_without_calling_spotify() {
    let (mock, resp) = refresh_elsewhere(SEALING_A, SEALING_B);

    assert_refused_locally(&resp, &mock, 1);
}

#[test]
fn refresh_token_sealed_for_another_client_id_is_invalid_grant_without_calling_spotify() {
    let (mock, resp) = refresh_elsewhere(
        SEALING_A,
        &[
            ("ENCRYPTION_SECRET", SECRET_A),
            ("SPOTIFY_CLIENT_ID", "another-client-id"),
        ],
    );

    assert_refused_locally(&resp, &mock, 1);
}

#[test]
fn plain_spotify_refresh_token_is_invalid_grant_when_encryption_is_on() {
    let (mock, server) = start_with_refresh_token("AQD-a-plain-spotify-refresh-token", SEALING_A);

    let resp = refresh(&server, "AQD-a-plain-spotify-refresh-token");

    assert_refused_locally(&resp, &mock, 0);
}

#[test]
fn oversized_refresh_token_is_invalid_grant_without_calling_spotify() {
    let (mock, server) = start_both(SEALING_A);

    let resp = refresh(&server, &"A".repeat(6000));

    assert_refused_locally(&resp, &mock, 0);
}

#[test]
fn refresh_token_from_the_previous_secret_is_accepted_after_rotation() {
    let (mock, resp) = refresh_elsewhere(SEALING_A, ROTATED);

    assert_refreshed_upstream_with(&resp, &mock, "refresh-c1");
}

#[test]
fn new_refresh_token_after_rotation_opens_only_under_the_new_secret() {
    let mock = start_mock();
    mock.set_rotate_refresh_tokens(true);
    let (old, rotated, only_b) = mid_rotation(&mock);
    let token = swapped_refresh_token(&mock, &old, "c1");
    let resp = refresh(&rotated, &token);
    assert_eq!(resp.status, 200, "{resp:?}");
    let new_token = returned_refresh_token(&resp, "a rotated refresh token must be returned");
    assert!(is_url_safe(&new_token), "{new_token}");
    assert!(!new_token.contains("refresh-rotated"), "{new_token}");
    assert_eq!(mock.request_count(), 2);

    let under_a = refresh(&old, &new_token);
    assert_refused_locally(&under_a, &mock, 2);

    let under_b = refresh(&only_b, &new_token);
    assert_refreshed_upstream_with(&under_b, &mock, "refresh-rotated-1");
}

/// The `spotify_token_swap_refresh_tokens_opened_total` samples of
/// `server`'s `/metrics`: (current, previous).
fn tokens_opened(server: &ServerProc) -> (u64, u64) {
    let text = scrape(server.addr());
    let opened = |key: &str| {
        let series = format!("spotify_token_swap_refresh_tokens_opened_total{{key=\"{key}\"}}");
        value(&text, &series) as u64
    };
    (opened("current"), opened("previous"))
}

/// Three instances mid-rotation: sealing under A; under B with A as the
/// previous secret; under B alone.
fn mid_rotation(mock: &MockSpotify) -> (ServerProc, ServerProc, ServerProc) {
    (
        start_server(mock, SEALING_A),
        start_server(mock, ROTATED),
        start_server(mock, SEALING_B),
    )
}

#[test]
fn token_from_the_previous_secret_comes_back_sealed_under_the_current_one() {
    let mock = start_mock();
    // Spotify sends no new refresh token (its usual answer to a refresh).
    let (old, rotated, only_b) = mid_rotation(&mock);
    let token = swapped_refresh_token(&mock, &old, "c1");

    let resp = refresh(&rotated, &token);

    assert_eq!(resp.status, 200, "{resp:?}");
    let resealed = returned_refresh_token(&resp, "the token must come back under the new key");
    assert!(is_url_safe(&resealed), "{resealed}");
    assert!(!resealed.contains("refresh-c1"), "{resealed}");
    assert_ne!(resealed, token);
    // It opens without the previous secret, to Spotify's same token.
    assert_refused_locally(&refresh(&old, &resealed), &mock, 2);
    let under_b = refresh(&only_b, &resealed);
    assert_refreshed_upstream_with(&under_b, &mock, "refresh-c1");
    assert_eq!(under_b.json().get("refresh_token"), None, "{under_b:?}");
}

#[test]
fn metrics_count_refresh_tokens_opened_by_key() {
    let mock = start_mock();
    let old = start_server(&mock, SEALING_A);
    let rotated = start_server(&mock, ROTATED);
    let old_token = swapped_refresh_token(&mock, &old, "c1");
    let new_token = swapped_refresh_token(&mock, &rotated, "c2");
    assert_eq!(tokens_opened(&rotated), (0, 0));

    assert_eq!(refresh(&rotated, &old_token).status, 200);
    assert_eq!(refresh(&rotated, &old_token).status, 200);
    assert_eq!(refresh(&rotated, &new_token).status, 200);
    // A token that opens under no key is counted under neither.
    assert_error(
        &refresh(&rotated, "not-a-sealed-token"),
        400,
        "invalid_grant",
    );

    assert_eq!(tokens_opened(&rotated), (1, 2));
    let text = support::get(rotated.addr(), "/metrics").text();
    assert!(
        !text.contains(SECRET_A) && !text.contains(SECRET_B),
        "{text}"
    );
}

#[test]
fn refresh_without_a_new_spotify_token_returns_none() {
    let (mock, server) = start_both(SEALING_A);
    let token = swapped_refresh_token(&mock, &server, "c1");

    let resp = refresh(&server, &token);

    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.json().get("refresh_token"), None, "{resp:?}");
}

#[test]
fn refresh_token_passes_through_unchanged_with_encryption_off() {
    let (mock, server) = start_both(&[]);
    let token = swapped_refresh_token(&mock, &server, "c1");
    assert_eq!(token, "refresh-c1");

    let resp = refresh(&server, &token);

    assert_refreshed_upstream_with(&resp, &mock, "refresh-c1");
}

#[test]
fn rotated_refresh_token_passes_through_unchanged_with_encryption_off() {
    let mock = start_mock();
    mock.set_rotate_refresh_tokens(true);
    mock.add_refresh_token("rt-plain");
    let server = start_server(&mock, &[]);

    let resp = refresh(&server, "rt-plain");

    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(
        resp.json()["refresh_token"],
        Value::from("refresh-rotated-1")
    );
}
