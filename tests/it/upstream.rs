//! How the server copes with what Spotify's accounts service does: errors
//! passed through, rate limits honoured, failures and misbehaviour turned
//! into 502/504 in bounded time, connections reused. The real binary talks
//! to the mock over loopback; the mock records what reached it.

use crate::support;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use serde_json::json;
use support::mock::{AuthGrant, Reply};
use support::{assert_error, assert_still_serving, post_form, start_mock, start_server, timed};

/// A body Spotify's token endpoint could send, with extra fields.
const TOKEN_BODY: &str = r#"{"access_token":"at-1","token_type":"Bearer","expires_in":3600,"scope":"user-read-private","refresh_token":"rt-1"}"#;

fn swap(server: &support::ServerProc, code: &str) -> support::Resp {
    post_form(server.addr(), "/swap", &[("code", code)])
}

#[test]
fn spotify_400_is_passed_through_with_its_body() {
    let mock = start_mock();
    let server = start_server(&mock, &[]);

    let resp = swap(&server, "never-issued");

    assert_eq!(resp.status, 400, "{resp:?}");
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(
        resp.json(),
        json!({ "error": "invalid_grant", "error_description": "Invalid authorization code" })
    );
    assert_eq!(mock.request_count(), 1);
}

#[test]
fn spotify_401_is_passed_through_with_its_status_and_body() {
    let mock = start_mock();
    let server = start_server(&mock, &[]);
    let body = r#"{"error":"invalid_client","error_description":"Invalid client secret"}"#;
    mock.push_reply(Reply::json(401, body));

    let resp = swap(&server, "c");

    assert_eq!(resp.status, 401, "{resp:?}");
    assert_eq!(
        resp.json(),
        serde_json::from_str::<serde_json::Value>(body).unwrap()
    );
}

#[test]
fn wrong_client_secret_gets_spotifys_invalid_client() {
    let mock = start_mock();
    mock.add_code("c");
    let server = start_server(&mock, &[("SPOTIFY_CLIENT_SECRET", "not-the-right-secret")]);

    let resp = swap(&server, "c");

    assert_error(&resp, 400, "invalid_client");
}

#[test]
fn spotify_4xx_without_json_gets_our_own_error() {
    let mock = start_mock();
    let server = start_server(&mock, &[]);
    mock.push_reply(Reply::json_with_headers(
        400,
        "<html><body>Bad Request</body></html>",
        &[("Content-Type", "text/html")],
    ));

    let resp = swap(&server, "c");

    assert_error(&resp, 400, "invalid_grant");
    assert!(!resp.text().contains("<html>"), "{resp:?}");
    assert_still_serving(server.addr());
}

#[test]
fn spotify_4xx_json_without_error_field_gets_our_own_error() {
    let mock = start_mock();
    let server = start_server(&mock, &[]);
    mock.push_reply(Reply::json(403, r#"{"message":"forbidden"}"#));

    let resp = swap(&server, "c");

    assert_eq!(resp.status, 403, "{resp:?}");
    assert!(resp.json()["error"].is_string(), "{resp:?}");
    assert!(resp.json().get("message").is_none(), "{resp:?}");
}

#[test]
fn spotify_4xx_with_a_non_string_error_gets_our_own_error() {
    let mock = start_mock();
    let server = start_server(&mock, &[]);
    // The Web API's error shape, which SpotifyAPI-NET cannot read as `error`.
    mock.push_reply(Reply::json(
        400,
        r#"{"error":{"status":400,"message":"Bad request"}}"#,
    ));

    let resp = swap(&server, "c");

    assert_error(&resp, 400, "invalid_grant");
}

#[test]
fn spotify_429_is_passed_through_with_retry_after() {
    let mock = start_mock();
    let server = start_server(&mock, &[]);
    mock.push_reply(Reply::too_many_requests(3));

    let resp = swap(&server, "c");

    assert_error(&resp, 429, "rate_limit_exceeded");
    assert_eq!(resp.header("retry-after"), Some("3"), "{resp:?}");
}

#[test]
fn spotify_429_without_retry_after_still_gets_integer_retry_after() {
    let mock = start_mock();
    let server = start_server(&mock, &[]);
    mock.push_reply(Reply::json(429, r#"{"error":"rate_limit_exceeded"}"#));

    let resp = swap(&server, "c");

    assert_eq!(resp.status, 429, "{resp:?}");
    let secs: u32 = resp
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no integer Retry-After:\n{resp:?}"));
    assert!(secs >= 1, "{resp:?}");
}

/// `secs` since the Unix epoch as an IMF-fixdate HTTP-date
/// (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn http_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    // Civil date from a day count (H. Hinnant's algorithm).
    let z = days + 719_468;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + z / 146_097 * 400 + u64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[test]
fn spotify_429_with_an_http_date_retry_after_becomes_the_seconds_until_then() {
    let mock = start_mock();
    mock.add_code("c");
    let server = start_server(&mock, &[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let date = http_date(now + 120);
    mock.push_reply(Reply::json_with_headers(
        429,
        r#"{"error":"rate_limit_exceeded","error_description":"slow down"}"#,
        &[("Retry-After", &date)],
    ));

    let first = swap(&server, "first");
    // The window is open for the date's 120 s, not the 5 s fallback.
    let later = swap(&server, "c");

    assert_error(&first, 429, "rate_limit_exceeded");
    let secs: u64 = first
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no integer Retry-After for {date}:\n{first:?}"));
    assert!((115..=121).contains(&secs), "{date} → {secs}:\n{first:?}");
    support::assert_too_many_requests(&later, 121);
    let left: u64 = later
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(left >= 110, "{later:?}");
    assert_eq!(
        mock.request_count(),
        1,
        "Spotify was called during back-off"
    );
}

#[test]
fn spotify_429_retry_after_is_clamped_to_1_to_86400_seconds() {
    let mock = start_mock();
    for (retry_after, expected) in [
        ("Thu, 01 Jan 1970 00:00:00 GMT", "1"),
        ("0", "1"),
        // A quota's wait of hours is passed on whole.
        ("18000", "18000"),
        ("99999999999999999999999", "86400"),
    ] {
        // A fresh server per case: each 429 opens the back-off window.
        let server = start_server(&mock, &[]);
        mock.push_reply(Reply::json_with_headers(
            429,
            r#"{"error":"rate_limit_exceeded"}"#,
            &[("Retry-After", retry_after)],
        ));
        let resp = swap(&server, "c");
        assert_eq!(
            resp.header("retry-after"),
            Some(expected),
            "Retry-After: {retry_after}\n{resp:?}"
        );
    }
}

#[test]
fn after_spotify_429_requests_are_answered_locally_until_retry_after() {
    let _timed = timed();
    let mock = start_mock();
    mock.add_code("c");
    mock.add_refresh_token("rt");
    let server = start_server(&mock, &[]);
    mock.push_reply(Reply::too_many_requests(3));
    assert_eq!(swap(&server, "first").status, 429);
    assert_eq!(mock.request_count(), 1);

    let swapped = swap(&server, "c");
    let refreshed = post_form(server.addr(), "/refresh", &[("refresh_token", "rt")]);

    for resp in [&swapped, &refreshed] {
        support::assert_too_many_requests(resp, 3);
    }
    assert_eq!(
        mock.request_count(),
        1,
        "Spotify was called during back-off"
    );
}

#[test]
fn spotify_is_called_again_once_retry_after_has_passed() {
    let mock = start_mock();
    mock.add_code("c");
    let server = start_server(&mock, &[]);
    mock.push_reply(Reply::too_many_requests(1));
    assert_eq!(swap(&server, "first").status, 429);

    std::thread::sleep(Duration::from_millis(1100));
    let resp = swap(&server, "c");

    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(mock.request_count(), 2);
}

#[test]
fn spotify_5xx_is_502_server_error() {
    let mock = start_mock();
    let server = start_server(&mock, &[]);
    for status in [500, 502, 503] {
        mock.push_reply(Reply::server_error(status));

        let resp = swap(&server, "c");

        assert_error(&resp, 502, "server_error");
    }
    assert_still_serving(server.addr());
}

#[test]
fn spotify_3xx_is_502_and_not_followed() {
    let mock = start_mock();
    let server = start_server(&mock, &[]);
    mock.push_reply(Reply::json_with_headers(
        302,
        "{}",
        &[("Location", &format!("{}/elsewhere", mock.base_url()))],
    ));

    let resp = swap(&server, "c");

    assert_error(&resp, 502, "server_error");
    assert_eq!(mock.request_count(), 1, "the redirect was followed");
}

#[test]
fn stopped_spotify_is_502() {
    let mock = start_mock();
    let server = start_server(&mock, &[]);
    mock.stop();

    let resp = swap(&server, "c");

    assert_error(&resp, 502, "server_error");
    assert_still_serving(server.addr());
}

#[test]
fn closed_port_is_502() {
    let _timed = timed();
    let mock = start_mock();
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let url = format!("http://{closed}");
    let server = start_server(&mock, &[("SPOTIFY_ACCOUNTS_URL", &url)]);

    let started = Instant::now();
    let resp = swap(&server, "c");

    assert_error(&resp, 502, "server_error");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn never_answering_spotify_is_504_within_the_timeout() {
    let _timed = timed();
    let mock = start_mock();
    let server = start_server(&mock, &[("UPSTREAM_TIMEOUT_SECS", "1")]);
    mock.set_default_reply(Some(Reply::Hang(Duration::from_secs(30))));

    let started = Instant::now();
    let resp = swap(&server, "c");
    let took = started.elapsed();

    assert_error(&resp, 504, "gateway_timeout");
    assert!(
        took >= Duration::from_millis(900),
        "gave up early: {took:?}"
    );
    assert!(took < Duration::from_millis(2500), "took {took:?}");
}

#[test]
fn spotify_closing_mid_response_is_502() {
    let mock = start_mock();
    let server = start_server(&mock, &[]);
    mock.push_reply(Reply::CloseMidResponse);

    let resp = swap(&server, "c");

    assert_error(&resp, 502, "server_error");
    assert_still_serving(server.addr());
}

#[test]
fn spotify_body_of_one_megabyte_is_502() {
    let mock = start_mock();
    let server = start_server(&mock, &[]);
    mock.push_reply(Reply::Large(1024 * 1024));

    let resp = swap(&server, "c");

    assert_error(&resp, 502, "server_error");
    assert!(
        resp.body.len() < 1024,
        "body streamed through: {} bytes",
        resp.body.len()
    );
}

#[test]
fn spotify_body_just_under_the_limit_is_accepted() {
    let mock = start_mock();
    let server = start_server(&mock, &[]);
    mock.push_reply(Reply::Large(60 * 1024));

    let resp = swap(&server, "c");

    assert_eq!(resp.status, 200, "{}", resp.status);
    assert_eq!(
        resp.json()["access_token"].as_str().map(str::len),
        Some(60 * 1024 - 59)
    );
}

#[test]
fn spotify_endless_body_is_502_in_bounded_time() {
    let _timed = timed();
    let mock = start_mock();
    let server = start_server(&mock, &[("UPSTREAM_TIMEOUT_SECS", "10")]);
    mock.push_reply(Reply::Endless);

    let started = Instant::now();
    let resp = swap(&server, "c");

    assert_error(&resp, 502, "server_error");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn spotify_200_with_invalid_json_is_502() {
    let mock = start_mock();
    let server = start_server(&mock, &[]);
    mock.push_reply(Reply::json(200, r#"{"access_token":"at"#));

    let resp = swap(&server, "c");

    assert_error(&resp, 502, "server_error");
}

#[test]
fn spotify_200_with_json_that_is_not_an_object_is_502() {
    let mock = start_mock();
    let server = start_server(&mock, &[]);
    mock.push_reply(Reply::json(200, r#"["access_token","at"]"#));

    let resp = swap(&server, "c");

    assert_error(&resp, 502, "server_error");
}

#[test]
fn spotify_connections_are_reused() {
    let mock = start_mock();
    let server = start_server(&mock, &[]);
    for i in 0..20 {
        let code = format!("code-{i}");
        mock.add_code(&code);

        let resp = swap(&server, &code);

        assert_eq!(resp.status, 200, "swap {i}: {resp:?}");
    }
    assert_eq!(mock.request_count(), 20);
    assert!(
        mock.connections_accepted() <= 2,
        "20 sequential swaps opened {} connections",
        mock.connections_accepted()
    );
}

#[test]
fn expires_in_stays_a_number() {
    let mock = start_mock();
    let mut grant = AuthGrant::for_code("c");
    grant.expires_in = 1234;
    mock.add_grant("c", grant);
    let server = start_server(&mock, &[]);

    let resp = swap(&server, "c");

    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.json()["expires_in"], json!(1234));
    assert!(resp.text().contains(r#""expires_in":1234"#), "{resp:?}");
}

#[test]
fn extra_spotify_fields_pass_through_unchanged() {
    let mock = start_mock();
    let server = start_server(&mock, &[]);
    let mut body: serde_json::Value = serde_json::from_str(TOKEN_BODY).unwrap();
    body["id_token"] = json!("header.payload.signature");
    body["extra"] = json!({ "nested": [1, 2.5, null, true] });
    mock.push_reply(Reply::json(200, &body.to_string()));

    let resp = swap(&server, "c");

    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.json(), body);
}

#[test]
fn connection_spotify_closed_while_idle_is_not_reused() {
    let mock = start_mock();
    mock.add_code("second");
    let server = start_server(&mock, &[]);
    // A complete keep-alive response, after which the mock closes the
    // connection anyway, as Spotify does with idle connections.
    mock.push_reply(Reply::Raw(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: keep-alive\r\n\r\n{TOKEN_BODY}",
            TOKEN_BODY.len()
        )
        .into_bytes(),
    ));
    assert_eq!(swap(&server, "first").status, 200);
    std::thread::sleep(Duration::from_millis(300));

    let resp = swap(&server, "second");

    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(mock.request_count(), 2);
    assert_eq!(mock.connections_accepted(), 2);
}

/// A one-connection upstream that sends a 200 head promising 1000 bytes,
/// then one byte every 100 ms for up to 10 s: never too large, never done.
fn start_dripping_upstream() -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    use std::io::{Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("the bound address");
    let handle = std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
        let mut request = [0u8; 4096];
        let _ = stream.read(&mut request);
        let head =
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{";
        if stream.write_all(head.as_bytes()).is_err() {
            return;
        }
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until && stream.write_all(b" ").is_ok() {
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    (addr, handle)
}

#[test]
fn slowly_dripping_spotify_body_is_504_within_the_timeout() {
    let _timed = timed();
    let mock = start_mock();
    let (upstream, _dripping) = start_dripping_upstream();
    let url = format!("http://{upstream}");
    let server = start_server(
        &mock,
        &[
            ("SPOTIFY_ACCOUNTS_URL", &url),
            ("UPSTREAM_TIMEOUT_SECS", "1"),
        ],
    );

    let started = Instant::now();
    let resp = swap(&server, "c");
    let took = started.elapsed();

    assert_error(&resp, 504, "gateway_timeout");
    assert!(took < Duration::from_millis(2500), "took {took:?}");
}

#[test]
fn a_code_longer_than_the_upstream_write_buffer_reaches_spotify_whole() {
    // The form goes to Spotify in several 4 KiB pieces (and one send).
    let mock = start_mock();
    let code = "c".repeat(6000);
    mock.add_code(&code);
    let server = start_server(&mock, &[]);

    let resp = swap(&server, &code);

    assert_eq!(resp.status, 200, "{resp:?}");
    let seen = mock.last_request().expect("Spotify was called");
    assert_eq!(seen.field("code"), Some(code.as_str()));
    assert_eq!(seen.field("grant_type"), Some("authorization_code"));
}

#[test]
fn a_spotify_response_head_up_to_8_kib_is_read_and_a_larger_one_is_502() {
    let mock = start_mock();
    let server = start_server(&mock, &[]);
    let pad = |len: usize| "p".repeat(len);

    mock.push_reply(Reply::json_with_headers(
        200,
        TOKEN_BODY,
        &[("X-Pad", &pad(6 * 1024))],
    ));
    let resp = swap(&server, "c");
    assert_eq!(resp.status, 200, "{resp:?}");

    mock.push_reply(Reply::json_with_headers(
        200,
        TOKEN_BODY,
        &[("X-Pad", &pad(9 * 1024))],
    ));
    let resp = swap(&server, "c");
    assert_error(&resp, 502, "server_error");
    assert_still_serving(server.addr());
}
