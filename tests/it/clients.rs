//! The requests real clients send, byte for byte where it matters, and what
//! they need back: SpotifyAPI-NET, Spotify's iOS SDK, apps written for the
//! Ruby token-swap service, JSON-speaking web clients, and curl following
//! the README. The mock checks what reached "Spotify".

use crate::support;

use std::net::SocketAddr;
use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use support::mock::{DEFAULT_SCOPE, MockSpotify, Reply};
use support::{
    CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, Resp, ServerProc, assert_error, assert_still_serving,
    borrowed, form_body, post_body, post_form, post_json, request, server_vars, start_both,
    start_mock, start_server, start_with_code, start_with_refresh_token,
};

const ENCRYPTION_SECRET: &str = "client-tests-encryption-secret-32-chars-min";

/// A POST exactly as .NET's `HttpClient` sends SpotifyAPI-NET's
/// `TokenSwapTokenRequest` / `TokenSwapRefreshRequest`: one form field,
/// `FormUrlEncodedContent`'s content type, no `Authorization`, keep-alive.
fn dotnet_post(addr: SocketAddr, path: &str, field: &str, value: &str) -> Resp {
    let body = form_body(&[(field, value)]);
    let raw = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    request(addr, raw.as_bytes())
}

/// A POST as the iOS SDK's `SPTSessionManager` sends to `tokenSwapURL` /
/// `tokenRefreshURL` (NSURLSession).
fn ios_post(addr: SocketAddr, path: &str, field: &str, value: &str) -> Resp {
    let body = form_body(&[(field, value)]);
    let raw = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Accept: */*\r\nAccept-Language: en-GB,en;q=0.9\r\nAccept-Encoding: gzip, deflate, br\r\n\
         User-Agent: MyApp/1 CFNetwork/1494.0.7 Darwin/23.4.0\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    request(addr, raw.as_bytes())
}

/// The members SpotifyAPI-NET's token responses
/// (`AuthorizationCodeTokenResponse`, `AuthorizationCodeRefreshResponse`)
/// map, snake-cased by its `NewtonsoftJSONSerializer`. Newtonsoft skips any
/// other member (`MissingMemberHandling.Ignore`, its default); one of
/// these in an answer would be read into the client's object
/// (`created_at` would replace the client's own clock reading).
const DOTNET_MODEL_MEMBERS: &[&str] = &[
    "access_token",
    "token_type",
    "expires_in",
    "scope",
    "refresh_token",
    "created_at",
    "is_expired",
];
/// What our answers add to Spotify's: a member no client model above maps,
/// an integer that fits the `int` .NET, Java and Swift clients read
/// `expires_in` into.
const ADDED_MEMBER: &str = "refresh_token_expires_in";

/// Asserts a 200 token response as SpotifyAPI-NET parses it: media type
/// exactly `application/json`, `access_token`, `token_type`, integer
/// `expires_in`, `scope`, a string `refresh_token` if any, nothing that
/// would land in another member of its model, and what we add an integer
/// that fits 32 bits; returns the body.
fn assert_token_response(resp: &Resp) -> Value {
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(
        resp.header("content-type"),
        Some("application/json"),
        "SpotifyAPI-NET parses only exactly application/json:\n{resp:?}"
    );
    let body = resp.json();
    assert!(body["access_token"].is_string(), "{resp:?}");
    assert_eq!(body["token_type"], "Bearer", "{resp:?}");
    assert!(
        body["expires_in"].is_u64(),
        "expires_in must be an integer:\n{resp:?}"
    );
    assert!(body["scope"].is_string(), "{resp:?}");
    let members = body.as_object().expect("a JSON object");
    for name in members.keys() {
        assert!(
            (DOTNET_MODEL_MEMBERS.contains(&name.as_str()) && name != "created_at")
                || name == ADDED_MEMBER,
            "{name} is not a member the clients read as it is meant:\n{resp:?}"
        );
    }
    if let Some(token) = members.get("refresh_token") {
        assert!(token.is_string(), "{resp:?}");
    }
    if let Some(left) = members.get(ADDED_MEMBER) {
        let fits = left.as_u64().is_some_and(|n| n <= i32::MAX as u64);
        assert!(fits, "{ADDED_MEMBER} must be a 32-bit integer:\n{resp:?}");
    }
    body
}

/// Asserts `body` (a 200 with encryption on, for a token sealed now)
/// states the refresh token's lifetime: the default 180 days, less the
/// seconds a test takes.
fn assert_lifetime_stated(body: &Value) {
    let left = body[ADDED_MEMBER].as_u64();
    assert!(
        left.is_some_and(|secs| (15_551_990..=15_552_000).contains(&secs)),
        "{body}"
    );
}

/// Asserts `resp` is 400 `invalid_request` and Spotify was not called.
fn assert_invalid_request_locally(resp: &Resp, mock: &MockSpotify) {
    assert_error(resp, 400, "invalid_request");
    assert_eq!(
        mock.request_count(),
        0,
        "Spotify was called: {:?}",
        mock.last_request()
    );
}

// ---------------------------------------------------------------------------
// SpotifyAPI-NET
// ---------------------------------------------------------------------------

#[test]
fn spotifyapi_net_swap_gets_every_token_field() {
    let (_mock, server) = start_with_code("net-code", &[]);

    let resp = dotnet_post(server.addr(), "/swap", "code", "net-code");

    let body = assert_token_response(&resp);
    assert_eq!(
        body,
        json!({
            "access_token": "access-net-code",
            "token_type": "Bearer",
            "expires_in": 3600,
            "scope": DEFAULT_SCOPE,
            "refresh_token": "refresh-net-code",
        })
    );
}

#[test]
fn spotifyapi_net_refresh_gets_a_new_access_token() {
    let (_mock, server) = start_with_refresh_token("net-refresh", &[]);

    let resp = dotnet_post(server.addr(), "/refresh", "refresh_token", "net-refresh");

    let body = assert_token_response(&resp);
    assert_eq!(body["access_token"], "access-refreshed-1");
    assert_eq!(body["expires_in"], 3600);
}

#[test]
fn spotifyapi_net_swap_then_refresh_with_encryption() {
    let (_mock, server) = start_with_code("net-code", &[("ENCRYPTION_SECRET", ENCRYPTION_SECRET)]);
    let swapped = assert_token_response(&dotnet_post(server.addr(), "/swap", "code", "net-code"));
    let token = swapped["refresh_token"].as_str().expect("a refresh token");

    let resp = dotnet_post(server.addr(), "/refresh", "refresh_token", token);

    assert_lifetime_stated(&swapped);
    assert_lifetime_stated(&assert_token_response(&resp));
}

#[test]
fn spotifyapi_net_error_body_has_a_string_error() {
    let (_mock, server) = start_both(&[]);

    let resp = dotnet_post(server.addr(), "/swap", "code", "expired-code");

    assert_error(&resp, 400, "invalid_grant");
}

#[test]
fn spotifyapi_net_429_has_an_integer_retry_after() {
    let (mock, server) = start_both(&[]);
    mock.push_reply(Reply::too_many_requests(7));

    let resp = dotnet_post(server.addr(), "/swap", "code", "any");

    assert_eq!(resp.status, 429, "{resp:?}");
    assert!(resp.json()["error"].is_string(), "{resp:?}");
    assert_eq!(
        resp.header("retry-after").map(str::parse::<i32>),
        Some(Ok(7)),
        "{resp:?}"
    );
}

#[test]
fn spotifyapi_net_quota_429_has_a_string_error_and_an_integer_retry_after() {
    let (mock, server) = start_both(&[]);
    mock.push_reply(Reply::json_with_headers(
        429,
        r#"{"error":{"status":429,"message":"Quota exceeded","reason":"QUOTA_EXCEEDED"}}"#,
        &[("Retry-After", "7200")],
    ));

    let resp = dotnet_post(server.addr(), "/swap", "code", "any");

    assert_error(&resp, 429, "too_many_requests");
    assert_eq!(resp.json()["reason"], "QUOTA_EXCEEDED", "{resp:?}");
    assert_eq!(
        resp.header("retry-after").map(str::parse::<i32>),
        Some(Ok(7200)),
        "{resp:?}"
    );
}

// ---------------------------------------------------------------------------
// Spotify iOS SDK
// ---------------------------------------------------------------------------

#[test]
fn ios_sdk_token_swap_url_gets_json_tokens() {
    let (_mock, server) = start_with_code("ios-code", &[("ENCRYPTION_SECRET", ENCRYPTION_SECRET)]);

    let resp = ios_post(server.addr(), "/swap", "code", "ios-code");

    let body = assert_token_response(&resp);
    assert_eq!(body["access_token"], "access-ios-code");
    assert!(body["refresh_token"].is_string(), "{resp:?}");
    assert_lifetime_stated(&body);
}

#[test]
fn ios_sdk_token_refresh_url_gets_json_tokens() {
    let (_mock, server) = start_with_code("ios-code", &[("ENCRYPTION_SECRET", ENCRYPTION_SECRET)]);
    let swapped = assert_token_response(&ios_post(server.addr(), "/swap", "code", "ios-code"));
    let token = swapped["refresh_token"].as_str().expect("a refresh token");

    let resp = ios_post(server.addr(), "/refresh", "refresh_token", token);

    let body = assert_token_response(&resp);
    assert_eq!(body["access_token"], "access-refreshed-1");
    assert_lifetime_stated(&body);
}

// ---------------------------------------------------------------------------
// Migrating from the Ruby service
// ---------------------------------------------------------------------------

/// A server configured as the Ruby service was: its paths, and the redirect
/// URI in `SPOTIFY_CLIENT_CALLBACK_URL` (no `SPOTIFY_REDIRECT_URI`).
fn start_ruby_compatible(mock: &MockSpotify) -> ServerProc {
    let vars: Vec<(String, String)> = server_vars(
        mock,
        &[
            ("SWAP_PATH", "/api/token"),
            ("REFRESH_PATH", "/api/refresh_token"),
            ("SPOTIFY_CLIENT_CALLBACK_URL", REDIRECT_URI),
        ],
    )
    .into_iter()
    .filter(|(name, _)| name != "SPOTIFY_REDIRECT_URI")
    .collect();
    ServerProc::start(&borrowed(&vars))
}

#[test]
fn ruby_service_swap_path_and_callback_url_work() {
    let mock = start_mock();
    mock.add_code("ruby-code");
    let server = start_ruby_compatible(&mock);

    let resp = post_form(server.addr(), "/api/token", &[("code", "ruby-code")]);

    assert_token_response(&resp);
    let upstream = mock.last_request().expect("Spotify was called");
    assert_eq!(upstream.field("redirect_uri"), Some(REDIRECT_URI));
}

#[test]
fn ruby_service_refresh_path_works() {
    let mock = start_mock();
    mock.add_refresh_token("ruby-refresh");
    let server = start_ruby_compatible(&mock);

    let resp = post_form(
        server.addr(),
        "/api/refresh_token",
        &[("refresh_token", "ruby-refresh")],
    );

    assert_token_response(&resp);
}

#[test]
fn default_paths_are_gone_when_ruby_paths_are_configured() {
    let mock = start_mock();
    let server = start_ruby_compatible(&mock);

    let resp = post_form(server.addr(), "/swap", &[("code", "c")]);

    assert_error(&resp, 404, "not_found");
    assert_eq!(mock.request_count(), 0);
}

// ---------------------------------------------------------------------------
// JSON bodies, redirect URIs, PKCE
// ---------------------------------------------------------------------------

#[test]
fn json_swap_body_with_charset_is_accepted() {
    let (mock, server) = start_with_code("json-code", &[]);

    let resp = post_body(
        server.addr(),
        "/swap",
        "application/json; charset=utf-8",
        r#"{"code":"json-code"}"#,
    );

    assert_token_response(&resp);
    assert_eq!(mock.last_field("code"), Some("json-code".to_owned()));
}

#[test]
fn form_body_with_charset_is_accepted() {
    let (_mock, server) = start_with_code("form-code", &[]);

    // Alamofire's and many browsers' form content type.
    let resp = post_body(
        server.addr(),
        "/swap",
        "application/x-www-form-urlencoded; charset=utf-8",
        "code=form-code",
    );

    assert_token_response(&resp);
}

#[test]
fn json_refresh_body_is_accepted() {
    let (_mock, server) = start_with_refresh_token("json-refresh", &[]);

    let resp = post_json(
        server.addr(),
        "/refresh",
        r#"{"refresh_token":"json-refresh"}"#,
    );

    assert_token_response(&resp);
}

#[test]
fn listed_redirect_uri_is_forwarded() {
    let mock = start_mock();
    mock.add_code("c");
    mock.allow_redirect_uri("https://app.example.com/callback");
    let server = start_server(
        &mock,
        &[(
            "ALLOWED_REDIRECT_URIS",
            "myapp://other, https://app.example.com/callback",
        )],
    );

    let resp = post_form(
        server.addr(),
        "/swap",
        &[
            ("code", "c"),
            ("redirect_uri", "https://app.example.com/callback"),
        ],
    );

    assert_token_response(&resp);
    assert_eq!(
        mock.last_field("redirect_uri"),
        Some("https://app.example.com/callback".to_owned())
    );
}

#[test]
fn configured_redirect_uri_named_by_the_client_is_accepted() {
    let (_mock, server) = start_with_code("c", &[]);

    let resp = post_form(
        server.addr(),
        "/swap",
        &[("code", "c"), ("redirect_uri", REDIRECT_URI)],
    );

    assert_token_response(&resp);
}

#[test]
fn unlisted_redirect_uri_is_invalid_request_without_calling_spotify() {
    let (mock, server) = start_with_code("c", &[("ALLOWED_REDIRECT_URIS", "myapp://other")]);

    let resp = post_form(
        server.addr(),
        "/swap",
        &[
            ("code", "c"),
            ("redirect_uri", "https://evil.example/steal"),
        ],
    );

    assert_invalid_request_locally(&resp, &mock);
}

#[test]
fn code_verifier_is_forwarded() {
    let mock = start_mock();
    mock.add_pkce_code("pkce-code", "a-verifier-of-forty-three-characters-xxxxxx");
    let server = start_server(&mock, &[]);

    let resp = post_form(
        server.addr(),
        "/swap",
        &[
            ("code", "pkce-code"),
            (
                "code_verifier",
                "a-verifier-of-forty-three-characters-xxxxxx",
            ),
        ],
    );

    assert_token_response(&resp);
    assert_eq!(
        mock.last_field("code_verifier"),
        Some("a-verifier-of-forty-three-characters-xxxxxx".to_owned())
    );
}

// ---------------------------------------------------------------------------
// What Spotify receives
// ---------------------------------------------------------------------------

#[test]
fn swap_upstream_request_has_basic_auth_and_the_code_grant_form() {
    let (mock, server) = start_with_code("a b+c/d", &[]);

    let resp = post_form(server.addr(), "/swap", &[("code", "a b+c/d")]);

    assert_eq!(resp.status, 200, "{resp:?}");
    let upstream = mock.requests();
    assert_eq!(upstream.len(), 1);
    let sent = &upstream[0];
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.path, "/api/token");
    assert_eq!(
        sent.header("authorization"),
        Some(
            format!(
                "Basic {}",
                STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
            )
            .as_str()
        )
    );
    assert_eq!(
        sent.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        sent.form_pairs(),
        [
            ("grant_type", "authorization_code"),
            ("code", "a b+c/d"),
            ("redirect_uri", REDIRECT_URI),
        ]
    );
}

#[test]
fn refresh_upstream_request_has_basic_auth_and_the_refresh_grant_form() {
    let (mock, server) = start_with_refresh_token("rt+/=", &[]);

    let resp = post_form(server.addr(), "/refresh", &[("refresh_token", "rt+/=")]);

    assert_eq!(resp.status, 200, "{resp:?}");
    let sent = mock.last_request().expect("Spotify was called");
    assert_eq!(
        sent.header("authorization"),
        Some(mock.basic_auth().as_str())
    );
    assert_eq!(
        sent.form_pairs(),
        [("grant_type", "refresh_token"), ("refresh_token", "rt+/=")]
    );
}

#[test]
fn client_fields_other_than_the_known_ones_are_not_forwarded() {
    let (mock, server) = start_with_code("c", &[]);

    let resp = post_form(
        server.addr(),
        "/swap",
        &[
            ("code", "c"),
            ("client_id", "attacker"),
            ("grant_type", "client_credentials"),
        ],
    );

    assert_eq!(resp.status, 200, "{resp:?}");
    let sent = mock.last_request().expect("Spotify was called");
    assert_eq!(sent.field("grant_type"), Some("authorization_code"));
    assert_eq!(sent.field("client_id"), None);
    assert_eq!(sent.form.len(), 3, "{:?}", sent.form);
}

// ---------------------------------------------------------------------------
// Caching
// ---------------------------------------------------------------------------

#[test]
fn token_responses_are_not_cacheable() {
    let mock = start_mock();
    mock.add_code("c");
    mock.add_refresh_token("rt");
    let server = start_server(&mock, &[]);
    let addr = server.addr();

    let responses = [
        post_form(addr, "/swap", &[("code", "c")]),
        post_form(addr, "/refresh", &[("refresh_token", "rt")]),
        post_form(addr, "/swap", &[("code", "used-up")]),
        post_form(addr, "/refresh", &[]),
    ];

    let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 400, 400]);
    for resp in &responses {
        assert_eq!(resp.header("cache-control"), Some("no-store"), "{resp:?}");
        assert_eq!(resp.header("pragma"), Some("no-cache"), "{resp:?}");
    }
}

// ---------------------------------------------------------------------------
// Missing, empty and repeated fields
// ---------------------------------------------------------------------------

#[test]
fn missing_code_is_invalid_request() {
    let (mock, server) = start_both(&[]);

    let resp = post_form(server.addr(), "/swap", &[("redirect_uri", REDIRECT_URI)]);

    assert_invalid_request_locally(&resp, &mock);
    assert_still_serving(server.addr());
}

#[test]
fn empty_code_is_invalid_request() {
    let (mock, server) = start_both(&[]);

    let resp = post_form(server.addr(), "/swap", &[("code", "")]);

    assert_invalid_request_locally(&resp, &mock);
}

#[test]
fn repeated_code_is_invalid_request() {
    let (mock, server) = start_with_code("a", &[]);

    let resp = post_form(server.addr(), "/swap", &[("code", "a"), ("code", "a")]);

    assert_invalid_request_locally(&resp, &mock);
}

#[test]
fn repeated_code_in_json_is_invalid_request() {
    let (mock, server) = start_with_code("a", &[]);

    let resp = post_json(server.addr(), "/swap", r#"{"code":"a","code":"b"}"#);

    assert_invalid_request_locally(&resp, &mock);
}

#[test]
fn non_string_code_in_json_is_invalid_request() {
    let (mock, server) = start_both(&[]);

    let resp = post_json(server.addr(), "/swap", r#"{"code":12345}"#);

    assert_invalid_request_locally(&resp, &mock);
}

#[test]
fn malformed_json_is_invalid_request() {
    let (mock, server) = start_both(&[]);

    let resp = post_json(server.addr(), "/swap", r#"{"code":"a""#);

    assert_invalid_request_locally(&resp, &mock);
    assert_still_serving(server.addr());
}

/// JSON bodies nested as deep as the 8 KiB body allows, each on both token
/// endpoints: objects (`{"a":` per level, 6 bytes with its `}`: 1,363
/// levels), arrays (2 bytes a level: 4,091) and arrays never closed
/// (8,184). Every one is a 400 and the server keeps serving — a parser that
/// recurses into them runs a worker out of stack and aborts the process.
/// CI also runs this against the release binaries (ARM, under qemu).
#[test]
fn json_nested_as_deep_as_the_body_allows_is_invalid_request() {
    const MAX_BODY: usize = 8 * 1024;
    let objects = {
        let levels = (MAX_BODY - r#"{"code":"x"}"#.len()) / r#"{"a":}"#.len();
        format!(
            r#"{{"code":{}"x"{}}}"#,
            r#"{"a":"#.repeat(levels),
            "}".repeat(levels)
        )
    };
    let arrays = {
        let levels = (MAX_BODY - r#"{"code":}"#.len()) / 2;
        format!(r#"{{"code":{}{}}}"#, "[".repeat(levels), "]".repeat(levels))
    };
    let unclosed = format!(r#"{{"code":{}"#, "[".repeat(MAX_BODY - r#"{"code":"#.len()));
    let in_another_field = {
        let levels = (MAX_BODY - r#"{"other":,"code":"c"}"#.len()) / 2;
        format!(
            r#"{{"other":{}{},"code":"c"}}"#,
            "[".repeat(levels),
            "]".repeat(levels)
        )
    };
    let (mock, server) = start_with_code("c", &[]);

    for (name, body) in [
        ("objects", &objects),
        ("arrays", &arrays),
        ("unclosed arrays", &unclosed),
        ("arrays in another field", &in_another_field),
    ] {
        assert!(
            body.len() <= MAX_BODY && body.len() > MAX_BODY - 8,
            "{name}: {} bytes",
            body.len()
        );
        for path in ["/swap", "/refresh"] {
            let resp = post_json(server.addr(), path, body);
            assert_invalid_request_locally(&resp, &mock);
            assert_still_serving(server.addr());
        }
    }
}

#[test]
fn json_with_only_flat_members_is_accepted() {
    let (_mock, server) = start_with_code("c", &[]);

    // Other members may be any scalar; they are ignored.
    let resp = post_json(
        server.addr(),
        "/swap",
        r#"{"other":1.5e3,"flag":true,"none":null,"code":"c"}"#,
    );

    assert_eq!(resp.status, 200, "{resp:?}");
}

#[test]
fn repeated_redirect_uri_is_invalid_request() {
    let (mock, server) = start_with_code("a", &[]);

    let resp = post_form(
        server.addr(),
        "/swap",
        &[
            ("code", "a"),
            ("redirect_uri", REDIRECT_URI),
            ("redirect_uri", REDIRECT_URI),
        ],
    );

    assert_invalid_request_locally(&resp, &mock);
}

#[test]
fn missing_refresh_token_is_invalid_request() {
    let (mock, server) = start_both(&[]);

    let resp = post_form(
        server.addr(),
        "/refresh",
        &[("code", "not-a-refresh-token")],
    );

    assert_invalid_request_locally(&resp, &mock);
}

#[test]
fn empty_refresh_token_is_invalid_request() {
    let (mock, server) = start_both(&[("ENCRYPTION_SECRET", ENCRYPTION_SECRET)]);

    let resp = post_form(server.addr(), "/refresh", &[("refresh_token", "")]);

    assert_invalid_request_locally(&resp, &mock);
}

#[test]
fn repeated_refresh_token_is_invalid_request() {
    let (mock, server) = start_with_refresh_token("rt", &[]);

    let resp = post_form(
        server.addr(),
        "/refresh",
        &[("refresh_token", "rt"), ("refresh_token", "rt")],
    );

    assert_invalid_request_locally(&resp, &mock);
}

// ---------------------------------------------------------------------------
// curl, following the README
// ---------------------------------------------------------------------------

/// The address the README's examples use.
const README_ADDR: &str = "127.0.0.1:8080";

/// Every command in README.md that starts with `curl ` and talks to
/// [`README_ADDR`], with `\` line continuations joined.
fn readme_curl_commands() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let mut commands = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let line = line.trim();
        if !line.starts_with("curl ") {
            continue;
        }
        let mut command = String::new();
        let mut current = line;
        while let Some(head) = current.strip_suffix('\\') {
            command.push_str(head);
            command.push(' ');
            current = lines.next().unwrap_or_default().trim();
        }
        command.push_str(current);
        if command.contains(README_ADDR) {
            commands.push(command);
        }
    }
    commands
}

/// What a README command is for, by what it sends.
#[derive(Debug, PartialEq, Eq)]
enum Example {
    Swap,
    Refresh,
    Health,
    Other,
}

fn classify(command: &str) -> Example {
    if command.contains("/health") {
        Example::Health
    } else if command.contains("REFRESH_TOKEN") || command.contains("refresh_token") {
        Example::Refresh
    } else if command.contains("code=") || command.contains("\"code\"") {
        Example::Swap
    } else {
        Example::Other
    }
}

/// The value after `{key}=` (form) or `"{key}":"` (JSON) in `command`.
fn value_after(command: &str, key: &str) -> Option<String> {
    let form = format!("{key}=");
    let json = format!("\"{key}\":");
    let start = if let Some(i) = command.find(&form) {
        i + form.len()
    } else {
        let i = command.find(&json)? + json.len();
        i + command[i..].find('"')? + 1
    };
    let value: String = command[start..]
        .chars()
        .take_while(|c| !matches!(c, '\'' | '"' | '&' | '\\') && !c.is_whitespace())
        .collect();
    (!value.is_empty()).then_some(value)
}

/// Runs `command` with `sh -c`, `REFRESH_TOKEN` in its environment, and
/// returns its standard output.
fn run_shell(command: &str, refresh_token: &str) -> String {
    let output = Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("REFRESH_TOKEN", refresh_token)
        .output()
        .unwrap_or_else(|e| panic!("cannot run sh: {e}"));
    assert!(
        output.status.success(),
        "`{command}` failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    // With -i, the body follows the head.
    match stdout.strip_prefix("HTTP/") {
        Some(_) => stdout
            .split_once("\r\n\r\n")
            .map_or(stdout.clone(), |(_, body)| body.to_owned()),
        None => stdout,
    }
}

fn parse_output(command: &str, stdout: &str) -> Value {
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("`{command}` printed no JSON ({e}):\n{stdout}"))
}

#[test]
fn readme_curl_examples_work() {
    let commands = readme_curl_commands();
    let kinds: Vec<Example> = commands.iter().map(|c| classify(c)).collect();
    for wanted in [Example::Swap, Example::Refresh, Example::Health] {
        assert!(
            kinds.contains(&wanted),
            "README.md has no curl example for {wanted:?} on {README_ADDR}: {commands:#?}"
        );
    }
    let mock = start_mock();
    // The README may name its own redirect URI; let both sides accept it.
    let redirect_uris: Vec<String> = commands
        .iter()
        .filter_map(|c| value_after(c, "redirect_uri"))
        .collect();
    for uri in &redirect_uris {
        mock.allow_redirect_uri(uri);
    }
    let allowed = redirect_uris.join(",");
    let server = start_server(
        &mock,
        &[
            ("ENCRYPTION_SECRET", ENCRYPTION_SECRET),
            ("ALLOWED_REDIRECT_URIS", &allowed),
        ],
    );
    let here = server.addr().to_string();
    let runnable = |command: &str| {
        let command = command.replace(README_ADDR, &here);
        // Output filters are for people; the test reads the JSON itself.
        match command.find(" | jq") {
            Some(pipe) => command[..pipe].to_owned(),
            None => command,
        }
    };

    // The swap examples first: the first one provides $REFRESH_TOKEN.
    let mut refresh_token = String::new();
    for command in commands.iter().filter(|c| classify(c) == Example::Swap) {
        let code = value_after(command, "code")
            .unwrap_or_else(|| panic!("no code in the README's swap example: {command}"));
        // Codes are single-use; an example repeated in the README gets a
        // fresh registration.
        mock.add_code(&code);
        let body = parse_output(command, &run_shell(&runnable(command), &refresh_token));
        assert_eq!(
            body["access_token"],
            format!("access-{code}"),
            "`{command}`: {body}"
        );
        if refresh_token.is_empty() {
            refresh_token = body["refresh_token"]
                .as_str()
                .unwrap_or_else(|| panic!("`{command}` returned no refresh_token: {body}"))
                .to_owned();
        }
    }
    for command in commands.iter().filter(|c| classify(c) != Example::Swap) {
        let stdout = run_shell(&runnable(command), &refresh_token);
        match classify(command) {
            Example::Refresh => {
                let body = parse_output(command, &stdout);
                assert!(body["access_token"].is_string(), "`{command}`: {body}");
            }
            Example::Health => {
                assert_eq!(parse_output(command, &stdout), json!({ "status": "ok" }));
            }
            Example::Swap | Example::Other => {}
        }
    }
    let upstream = mock.requests();
    assert!(
        upstream
            .iter()
            .any(|r| r.field("grant_type") == Some("refresh_token")),
        "no refresh example reached Spotify"
    );
    assert!(
        upstream
            .iter()
            .filter_map(|r| r.field("refresh_token"))
            .all(|t| t.starts_with("refresh-")),
        "Spotify received a refresh token that was not its own: {upstream:?}"
    );
}
