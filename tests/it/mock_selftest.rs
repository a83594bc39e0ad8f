//! Tests of the test support itself: the Spotify mock, driven over real
//! sockets by the raw client. If these fail, failures elsewhere in `tests/`
//! say nothing about the server.

use crate::support;

use std::time::{Duration, Instant};

use rustls::{HandshakeKind, ProtocolVersion};
use serde_json::{Value, json};
use support::conns::{tls_client_config, tls_connect, tls_exchange};
use support::mock::{AuthGrant, Close, Handshake, MockSpotify, Reply};
use support::pki::Pki;
use support::{
    CLIENT_ID, CLIENT_SECRET, Conn, REDIRECT_URI, form_body, raw_post, request, start_tls_mock,
    timed,
};

fn start_mock() -> MockSpotify {
    MockSpotify::start(CLIENT_ID, CLIENT_SECRET, REDIRECT_URI)
}

/// Raw bytes of a token request as the server under test would send it.
fn token_request(auth: &str, fields: &[(&str, &str)], close: bool) -> Vec<u8> {
    let body = form_body(fields);
    let connection = if close { "Connection: close\r\n" } else { "" };
    format!(
        "POST /api/token HTTP/1.1\r\nHost: accounts\r\nAuthorization: {auth}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n{connection}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn swap_fields(code: &str) -> Vec<(&str, &str)> {
    vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT_URI),
    ]
}

#[test]
fn mock_swaps_a_registered_code_once() {
    let mock = start_mock();
    mock.add_code("abc");

    let resp = request(
        mock.addr(),
        &token_request(&mock.basic_auth(), &swap_fields("abc"), true),
    );
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(
        resp.json(),
        json!({
            "access_token": "access-abc",
            "token_type": "Bearer",
            "expires_in": 3600,
            "refresh_token": "refresh-abc",
            "scope": "user-read-private user-read-email",
        })
    );

    let again = request(
        mock.addr(),
        &token_request(&mock.basic_auth(), &swap_fields("abc"), true),
    );
    assert_eq!(again.status, 400);
    assert_eq!(
        again.json(),
        json!({ "error": "invalid_grant", "error_description": "Invalid authorization code" })
    );

    let recorded = mock.requests();
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[0].method, "POST");
    assert_eq!(recorded[0].path, "/api/token");
    assert_eq!(recorded[0].field("code"), Some("abc"));
    assert_eq!(recorded[0].field("redirect_uri"), Some(REDIRECT_URI));
    assert_eq!(
        recorded[0].header("Authorization"),
        Some(mock.basic_auth().as_str())
    );
}

#[test]
fn mock_rejects_bad_client_redirect_verifier_and_grant_type() {
    let mock = start_mock();
    mock.add_pkce_code("pkce", "verifier-1");
    let auth = mock.basic_auth();
    let post = |auth: &str, fields: &[(&str, &str)]| {
        request(mock.addr(), &token_request(auth, fields, true))
    };

    let wrong_secret = post("Basic d3Jvbmc6d3Jvbmc=", &swap_fields("pkce"));
    assert_eq!(wrong_secret.status, 400);
    assert_eq!(wrong_secret.json()["error"], "invalid_client");

    let wrong_redirect = post(
        &auth,
        &[
            ("grant_type", "authorization_code"),
            ("code", "pkce"),
            ("redirect_uri", "other://x"),
            ("code_verifier", "verifier-1"),
        ],
    );
    assert_eq!(wrong_redirect.status, 400);
    assert_eq!(wrong_redirect.json()["error"], "invalid_grant");

    let mut fields = swap_fields("pkce");
    fields.push(("code_verifier", "wrong"));
    let wrong_verifier = post(&auth, &fields);
    assert_eq!(wrong_verifier.status, 400);
    assert_eq!(wrong_verifier.json()["error"], "invalid_grant");

    fields.pop();
    fields.push(("code_verifier", "verifier-1"));
    let ok = post(&auth, &fields);
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.json()["access_token"], "access-pkce");

    let unsupported = post(&auth, &[("grant_type", "password")]);
    assert_eq!(unsupported.status, 400);
    assert_eq!(unsupported.json()["error"], "unsupported_grant_type");

    let not_found = support::get(mock.addr(), "/nope");
    assert_eq!(not_found.status, 404);
    let wrong_method = support::get(mock.addr(), "/api/token");
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.header("allow"), Some("POST"));
}

#[test]
fn mock_refreshes_with_and_without_rotation() {
    let mock = start_mock();
    mock.add_grant("c1", AuthGrant::for_code("c1").with_scope("streaming"));
    let auth = mock.basic_auth();
    let post = |fields: &[(&str, &str)]| request(mock.addr(), &token_request(&auth, fields, true));

    assert_eq!(post(&swap_fields("c1")).status, 200);
    let refreshed = post(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", "refresh-c1"),
    ]);
    assert_eq!(refreshed.status, 200, "{refreshed:?}");
    let body = refreshed.json();
    assert_eq!(body["scope"], "streaming");
    assert_eq!(body["expires_in"], 3600);
    assert!(
        body.get("refresh_token").is_none(),
        "no rotation asked for: {body}"
    );

    mock.set_rotate_refresh_tokens(true);
    let rotated = post(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", "refresh-c1"),
    ]);
    assert_eq!(rotated.status, 200);
    let new_token = rotated.json()["refresh_token"]
        .as_str()
        .expect("rotated token")
        .to_owned();
    let old = post(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", "refresh-c1"),
    ]);
    assert_eq!(old.status, 400);
    assert_eq!(
        old.json(),
        json!({ "error": "invalid_grant", "error_description": "Invalid refresh token" })
    );
    assert_eq!(
        post(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &new_token)
        ])
        .status,
        200
    );
}

/// Several apps: each authenticates with its own secret, and a code or a
/// refresh token issued to one is no use with another's credentials.
#[test]
fn mock_authenticates_each_app_by_its_own_secret_and_keeps_their_grants_apart() {
    let mock = start_mock();
    mock.add_client("tv-id", "tv-secret", "tv://cb");
    mock.add_code_for("tv-id", "tv-code");
    mock.add_refresh_token_for("tv-id", "tv-refresh");
    mock.add_code("first-code");
    let tv = mock.basic_auth_for("tv-id");
    let first = mock.basic_auth();
    let post = |auth: &str, fields: &[(&str, &str)]| {
        request(mock.addr(), &token_request(auth, fields, true))
    };
    let tv_swap = [
        ("grant_type", "authorization_code"),
        ("code", "tv-code"),
        ("redirect_uri", "tv://cb"),
    ];
    let refresh = [
        ("grant_type", "refresh_token"),
        ("refresh_token", "tv-refresh"),
    ];

    // Another app's secret with this app's id is no client at all.
    let wrong = format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "tv-id:x")
    );
    assert_eq!(post(&wrong, &tv_swap).json()["error"], "invalid_client");
    // The first app's credentials with the tv app's code and token.
    assert_eq!(post(&first, &tv_swap).json()["error"], "invalid_grant");
    assert_eq!(post(&first, &refresh).json()["error"], "invalid_grant");
    // The tv app's redirect URI is not the first app's.
    let first_swap_with_tv_uri = [
        ("grant_type", "authorization_code"),
        ("code", "first-code"),
        ("redirect_uri", "tv://cb"),
    ];
    assert_eq!(
        post(&first, &first_swap_with_tv_uri).json()["error_description"],
        "Invalid redirect URI"
    );
    // Each with its own: 200.
    assert_eq!(post(&tv, &tv_swap).status, 200);
    assert_eq!(post(&tv, &refresh).status, 200);
    assert_eq!(post(&first, &swap_fields("first-code")).status, 200);
    let ids: Vec<Option<String>> = mock
        .requests()
        .iter()
        .map(|r| r.basic_client_id())
        .collect();
    assert_eq!(ids[0].as_deref(), Some("tv-id"));
    assert_eq!(ids[1].as_deref(), Some(CLIENT_ID));
    assert_eq!(ids.last().cloned().flatten().as_deref(), Some(CLIENT_ID));
}

#[test]
fn mock_keeps_connections_alive_and_records_their_ids() {
    let _timed = timed();
    let mock = start_mock();
    mock.add_refresh_token("r1");
    let auth = mock.basic_auth();
    let fields = [("grant_type", "refresh_token"), ("refresh_token", "r1")];

    let mut conn = Conn::open(mock.addr());
    conn.send(&token_request(&auth, &fields, false));
    assert_eq!(conn.read_response().status, 200);
    conn.send(&token_request(&auth, &fields, false));
    assert_eq!(conn.read_response().status, 200);
    // Two pipelined requests in one write.
    let mut both = token_request(&auth, &fields, false);
    both.extend(token_request(&auth, &fields, true));
    conn.send(&both);
    assert_eq!(conn.read_response().status, 200);
    assert_eq!(conn.read_response().status, 200);
    assert!(
        conn.is_closed_by_peer(Duration::from_secs(2)),
        "Connection: close was ignored"
    );

    let other = request(mock.addr(), &token_request(&auth, &fields, true));
    assert_eq!(other.status, 200);

    let ids: Vec<u64> = mock.requests().iter().map(|r| r.connection).collect();
    assert_eq!(ids, [1, 1, 1, 1, 2]);
    assert_eq!(mock.connections_accepted(), 2);
}

#[test]
fn mock_plays_scripted_replies_in_order() {
    let mock = start_mock();
    mock.add_refresh_token("r1");
    let auth = mock.basic_auth();
    let fields = [("grant_type", "refresh_token"), ("refresh_token", "r1")];
    let send = || request(mock.addr(), &token_request(&auth, &fields, true));

    mock.push_reply(Reply::too_many_requests(7));
    mock.push_reply(Reply::Large(100_000));
    let limited = send();
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("retry-after"), Some("7"));
    let large = send();
    assert_eq!(large.status, 200);
    assert_eq!(large.body.len(), 100_000);
    assert_eq!(large.json()["expires_in"], 3600, "Large is valid JSON");
    assert_eq!(
        send().status,
        200,
        "back to emulation once the queue is empty"
    );

    mock.push_reply(Reply::CloseMidResponse);
    let mut conn = Conn::open(mock.addr());
    conn.send(&token_request(&auth, &fields, true));
    let truncated = conn
        .try_read_response()
        .expect_err("a truncated body is an error");
    assert_eq!(truncated.kind(), std::io::ErrorKind::UnexpectedEof);

    mock.push_reply(Reply::Raw(b"HTTP/1.1 502 Bad Gateway\r\n\r\n".to_vec()));
    assert_eq!(send().status, 502);

    mock.set_default_reply(Some(Reply::Hang(Duration::from_millis(300))));
    let started = Instant::now();
    let mut hung = Conn::open(mock.addr());
    hung.send(&token_request(&auth, &fields, false));
    assert!(hung.is_closed_by_peer(Duration::from_secs(5)));
    assert!(started.elapsed() >= Duration::from_millis(300));
    mock.set_default_reply(None);
    assert_eq!(send().status, 200);
}

#[test]
fn mock_sends_an_endless_body_until_the_reader_leaves() {
    let mock = start_mock();
    mock.push_reply(Reply::Endless);
    let mut conn = Conn::open(mock.addr());
    conn.set_timeout(Duration::from_millis(500));
    conn.send(&raw_post(
        "/api/token",
        "application/x-www-form-urlencoded",
        "x=1",
    ));
    let error = conn
        .try_read_response()
        .expect_err("an endless body never completes");
    assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
}

#[test]
fn mock_survives_garbage_and_stops_on_drop() {
    let _timed = timed();
    let mock = start_mock();
    let garbage = request(mock.addr(), b"\x00\xff garbage\r\n\r\n");
    assert_eq!(garbage.status, 400);
    let huge_length = request(
        mock.addr(),
        b"POST /api/token HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
    );
    assert_eq!(huge_length.status, 400, "a length over u64 is malformed");
    let too_large = request(
        mock.addr(),
        b"POST /api/token HTTP/1.1\r\nContent-Length: 10000000000\r\n\r\n",
    );
    assert_eq!(too_large.status, 413);
    // A chunked request body is decoded before the form is parsed.
    mock.add_refresh_token("r1");
    let body = form_body(&[("grant_type", "refresh_token"), ("refresh_token", "r1")]);
    let chunked = format!(
        "POST /api/token HTTP/1.1\r\nAuthorization: {}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\n{}\r\n{:x}\r\n{}\r\n0\r\n\r\n",
        mock.basic_auth(),
        &body[..5],
        body.len() - 5,
        &body[5..]
    );
    let resp = request(mock.addr(), chunked.as_bytes());
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(
        mock.last_request()
            .expect("recorded")
            .field("refresh_token"),
        Some("r1")
    );

    let addr = mock.addr();
    let mut idle = Conn::open(addr);
    drop(mock);
    assert!(
        idle.is_closed_by_peer(Duration::from_secs(2)),
        "open connections close on stop"
    );
    assert!(
        Conn::try_open(addr).is_err(),
        "the listener is gone after drop"
    );
}

#[test]
fn mock_sends_a_delayed_reply_after_the_delay() {
    let mock = start_mock();
    mock.push_reply(Reply::delayed(
        Duration::from_millis(300),
        Reply::json(200, r#"{"late":true}"#),
    ));
    let started = Instant::now();
    let resp = request(
        mock.addr(),
        &raw_post("/api/token", "application/x-www-form-urlencoded", "x=1"),
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.json(), json!({ "late": true }));
    assert_eq!(mock.request_count(), 1, "recorded before the delay ends");
}

/// Over TLS the mock is the same mock: the emulation (a code is good once),
/// scripted replies and the records, plus the handshake of each connection
/// and a close after the answer on request.
#[test]
fn mock_over_tls_emulates_scripts_records_and_closes_on_request() {
    let pki = Pki::new();
    let mock = start_tls_mock(&pki, "server", rustls::ALL_VERSIONS);
    assert_eq!(mock.base_url(), format!("https://{}", mock.addr()));
    mock.add_code("abc");
    let swap = token_request(&mock.basic_auth(), &swap_fields("abc"), false);
    let mut tls =
        tls_connect(mock.addr(), &tls_client_config(&pki)).expect("TLS handshake with the mock");

    let swapped = tls_exchange(&mut tls, &swap).expect("first swap");
    assert_eq!(swapped.status, 200, "{swapped:?}");
    let tokens: Value = serde_json::from_str(&swapped.body).expect("JSON body");
    assert_eq!(tokens["access_token"], "access-abc", "{swapped:?}");
    assert_eq!(tokens["refresh_token"], "refresh-abc", "{swapped:?}");
    let again = tls_exchange(&mut tls, &swap).expect("second swap");
    assert_eq!(again.status, 400, "{again:?}");
    assert_eq!(
        serde_json::from_str::<Value>(&again.body).expect("JSON body"),
        json!({ "error": "invalid_grant", "error_description": "Invalid authorization code" })
    );
    mock.push_reply(Reply::server_error(503));
    mock.close_after_next_answer(Close::Announced);
    let scripted = tls_exchange(&mut tls, &swap).expect("scripted reply");
    assert_eq!(scripted.status, 503, "{scripted:?}");
    assert_eq!(scripted.header("connection"), Some("close"));

    assert!(
        mock.wait_closed(1, Duration::from_secs(5)),
        "{:?}",
        mock.connections()
    );
    let answered: Vec<(u64, Option<u16>)> = mock
        .requests()
        .iter()
        .map(|r| (r.connection, r.status))
        .collect();
    assert_eq!(answered, [(1, Some(200)), (1, Some(400)), (1, Some(503))]);
    let connections = mock.connections();
    assert_eq!(connections.len(), 1, "{connections:?}");
    assert_eq!(
        connections[0].handshake,
        Some(Ok(Handshake {
            kind: HandshakeKind::Full,
            version: ProtocolVersion::TLSv1_3,
        }))
    );
    assert!(connections[0].closed_by_mock, "{connections:?}");
}
