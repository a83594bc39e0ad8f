//! Device login (SPEC "Device login"), over real sockets against the real
//! binary and the mock's `/authorize` and token endpoint: `/device/code`,
//! the pages as a browser without JavaScript uses them (cookies, the form,
//! the redirects), `/callback`, the device's polls and RFC 8628's errors,
//! the bounded table, wrong-code limits, several apps, and the paths
//! without `PUBLIC_URL`; and the `login` command against them, the person
//! on the phone played by plain HTTP requests following the pages. The
//! real browser: `browser.rs`.

use crate::support;

use std::io::{BufRead as _, BufReader, Read as _};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt as _;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::mock::{MockSpotify, s256};
use support::{
    CLIENT_ID, Resp, ServerProc, TempDir, assert_error, borrowed, get, post_form, request,
    run_binary, server_vars, start_both, start_mock,
};

/// The device grant type (RFC 8628 §3.4).
pub const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// An encryption secret, so tokens come sealed.
const SECRET: &str = "device-login-test-secret-0123456789abcdef";
/// Attempts at starting the server on a port picked beforehand.
const START_ATTEMPTS: usize = 5;

/// A mock and a server with device login on, `PUBLIC_URL` its own address.
pub struct Scene {
    pub mock: MockSpotify,
    pub server: ServerProc,
    pub public: String,
}

impl Scene {
    pub fn start(extra: &[(&str, &str)]) -> Scene {
        Scene::start_with(start_mock(), true, extra)
    }

    /// With `mock` (its apps set up by the caller); `{PUBLIC_URL}/callback`
    /// is allowed for the app the mock started with. `one_app`: the test
    /// app's settings come first (else `extra` names the apps).
    pub fn start_with(mock: MockSpotify, one_app: bool, extra: &[(&str, &str)]) -> Scene {
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            // PUBLIC_URL must name the port before the server binds it.
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let public = format!("http://127.0.0.1:{port}");
            mock.allow_redirect_uri(&format!("{public}/callback"));
            let listen = format!("127.0.0.1:{port}");
            let mut vars: Vec<(&str, &str)> = vec![
                ("LISTEN_ADDR", &listen),
                ("PUBLIC_URL", &public),
                ("ENCRYPTION_SECRET", SECRET),
            ];
            vars.extend_from_slice(extra);
            let accounts = mock.base_url();
            let all = if one_app {
                server_vars(&mock, &vars)
            } else {
                vars.push(("SPOTIFY_ACCOUNTS_URL", &accounts));
                borrowed_owned(&vars)
            };
            match ServerProc::try_start(&borrowed(&all)) {
                Ok(server) => {
                    return Scene {
                        mock,
                        server,
                        public,
                    };
                }
                Err(error) => last_error = error,
            }
        }
        panic!("the server did not start: {last_error}");
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `POST /device/code` with `fields`; must answer 200.
    pub fn device_code(&self, fields: &[(&str, &str)]) -> Value {
        let resp = post_form(self.addr(), "/device/code", fields);
        assert_eq!(resp.status, 200, "{resp:?}");
        resp.json()
    }

    /// One poll of `device_code`.
    pub fn poll(&self, device_code: &str) -> Resp {
        post_form(
            self.addr(),
            "/device/token",
            &[("grant_type", DEVICE_GRANT), ("device_code", device_code)],
        )
    }
}

fn borrowed_owned(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

/// A request with extra header lines, on a fresh connection.
pub fn send(addr: SocketAddr, method: &str, path: &str, headers: &[&str], body: &str) -> Resp {
    let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for header in headers {
        raw.push_str(header);
        raw.push_str("\r\n");
    }
    if method == "POST" {
        raw.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
        raw.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    raw.push_str("\r\n");
    raw.push_str(body);
    request(addr, raw.as_bytes())
}

/// The `name=value` of a `Set-Cookie` header of `resp`.
pub fn cookie(resp: &Resp, name: &str) -> String {
    resp.header_all("set-cookie")
        .into_iter()
        .find(|c| c.starts_with(&format!("{name}=")))
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("no cookie {name}:\n{resp:?}"))
        .to_owned()
}

/// The value of the hidden `form_token` in a Continue page.
fn form_token(page: &Resp) -> String {
    let text = page.text();
    let start = text
        .find("name=\"form_token\" value=\"")
        .map(|i| i + "name=\"form_token\" value=\"".len())
        .unwrap_or_else(|| panic!("no form token:\n{page:?}"));
    text[start..][..text[start..].find('"').expect("closing quote")].to_owned()
}

/// Splits an absolute `http://host:port/path?query` into address and
/// target.
fn split_url(url: &str) -> (SocketAddr, String) {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let slash = rest.find('/').expect("a path");
    (
        rest[..slash].parse().expect("host:port"),
        rest[slash..].to_owned(),
    )
}

/// What a person's browser sees, each page kept.
pub struct Visit {
    pub continue_page: Resp,
    pub redirect: Resp,
    pub authorize: Resp,
    pub callback: Resp,
}

/// A person enters `user_code` (as typed), presses Continue (the form
/// POST carries `Origin: null`, as Chromium's does under no-referrer), is
/// sent to the mock's `/authorize` and back to `/callback`.
pub fn sign_in(scene: &Scene, typed: &str) -> Visit {
    let addr = scene.addr();
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("user_code", typed)
        .finish();
    let continue_page = get(addr, &format!("/device?{query}"));
    assert_eq!(continue_page.status, 200, "{continue_page:?}");
    let form_cookie = cookie(&continue_page, "sts_form");
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("user_code", typed)
        .append_pair("form_token", &form_token(&continue_page))
        .finish();
    let headers = [&format!("Cookie: {form_cookie}") as &str, "Origin: null"];
    let redirect = send(addr, "POST", "/device", &headers, &body);
    assert_eq!(redirect.status, 303, "{redirect:?}");
    let login_cookie = cookie(&redirect, "sts_login");
    let (mock_addr, target) = split_url(redirect.header("location").expect("Location"));
    assert_eq!(mock_addr, scene.mock.addr());
    let authorize = get(mock_addr, &target);
    assert_eq!(authorize.status, 303, "{authorize:?}");
    let back = authorize.header("location").expect("Location back");
    let (back_addr, back_target) = split_url(back);
    assert_eq!(back_addr, addr);
    let headers = [&format!("Cookie: {login_cookie}") as &str];
    let callback = send(addr, "GET", &back_target, &headers, "");
    Visit {
        continue_page,
        redirect,
        authorize,
        callback,
    }
}

/// The query parameters of a URL.
fn params(url: &str) -> Vec<(String, String)> {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
    form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

fn param(url: &str, name: &str) -> String {
    params(url)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no {name} in {url}"))
}

#[test]
fn without_public_url_every_device_path_is_404() {
    let (_mock, server) = start_both(&[]);
    for path in ["/device/code", "/device", "/device/token", "/callback"] {
        assert_error(&get(server.addr(), path), 404, "not_found");
        assert_error(
            &post_form(server.addr(), path, &[("a", "b")]),
            404,
            "not_found",
        );
    }
}

#[test]
fn a_public_url_spotify_would_refuse_stops_the_server_with_exit_2() {
    let mock = start_mock();
    for (url, says) in [
        (
            "http://swap.example.org",
            "http:// only to 127.0.0.1 or [::1]",
        ),
        ("http://localhost:8080", "write 127.0.0.1 for localhost"),
        ("swap.example.org", "is not a base URL"),
    ] {
        let vars = server_vars(&mock, &[("PUBLIC_URL", url)]);
        let out = run_binary(&[], &borrowed(&vars));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{url}: {stderr}");
        assert!(
            stderr.contains("PUBLIC_URL") && stderr.contains(says),
            "{url}: {stderr}"
        );
    }
    for max in ["0", "10001"] {
        let vars = server_vars(
            &mock,
            &[
                ("PUBLIC_URL", "https://x.example"),
                ("DEVICE_MAX_PENDING", max),
            ],
        );
        let out = run_binary(&[], &borrowed(&vars));
        assert_eq!(out.status.code(), Some(2), "{max}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("DEVICE_MAX_PENDING"));
    }
}

#[test]
fn device_code_answers_with_codes_and_the_verification_uris() {
    let scene = Scene::start(&[]);
    let resp = post_form(scene.addr(), "/device/code", &[("scope", "streaming")]);
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header("cache-control"), Some("no-store"));
    let body = resp.json();
    let user_code = body["user_code"].as_str().expect("user_code");
    assert_eq!(user_code.len(), 9, "{body}");
    assert_eq!(&user_code[4..5], "-");
    assert!(
        user_code
            .bytes()
            .filter(|b| *b != b'-')
            .all(|b| b"BCDFGHJKLMNPQRSTVWXZ".contains(&b)),
        "{user_code}"
    );
    assert_eq!(
        body["device_code"].as_str().map(str::len),
        Some(43),
        "{body}"
    );
    assert_eq!(body["verification_uri"], format!("{}/device", scene.public));
    assert_eq!(
        body["verification_uri_complete"],
        format!("{}/device?user_code={user_code}", scene.public)
    );
    assert_eq!(body["expires_in"], 600);
    assert_eq!(body["interval"], 5);
    let other = scene.device_code(&[]);
    assert_ne!(other["device_code"], body["device_code"]);
    assert_ne!(other["user_code"], body["user_code"]);
    let json = support::post_json(scene.addr(), "/device/code", r#"{"scope":"streaming"}"#);
    assert_eq!(json.status, 200, "{json:?}");
    let bad = post_form(scene.addr(), "/device/code", &[("scope", "a<b")]);
    assert_error(&bad, 400, "invalid_scope");
}

#[test]
fn a_device_signs_in_gets_its_tokens_once_and_refreshes_through_refresh() {
    let scene = Scene::start(&[]);
    let code = scene.device_code(&[("scope", "streaming user-read-email")]);
    let device_code = code["device_code"].as_str().expect("device_code");
    let user_code = code["user_code"].as_str().expect("user_code");
    assert_error(&scene.poll(device_code), 400, "authorization_pending");
    // Typed as a person might: lower case, no dash.
    let typed = user_code.replace('-', "").to_lowercase();
    let visit = sign_in(&scene, &typed);
    let location = visit
        .redirect
        .header("location")
        .expect("Location")
        .to_owned();
    assert!(location.starts_with(&format!("{}/authorize?", scene.mock.base_url())));
    let names: Vec<String> = params(&location).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "client_id",
            "response_type",
            "redirect_uri",
            "scope",
            "state",
            "code_challenge",
            "code_challenge_method"
        ]
    );
    assert_eq!(param(&location, "client_id"), CLIENT_ID);
    assert_eq!(
        param(&location, "redirect_uri"),
        format!("{}/callback", scene.public)
    );
    assert_eq!(param(&location, "scope"), "streaming user-read-email");
    assert_eq!(param(&location, "code_challenge_method"), "S256");
    assert_eq!(visit.callback.status, 200, "{:?}", visit.callback);
    assert!(visit.callback.text().contains("Return to your device"));
    // Upstream: the verifier of the challenge, and the callback URI.
    let exchange = scene.mock.last_request().expect("the exchange");
    assert_eq!(exchange.field("grant_type"), Some("authorization_code"));
    assert_eq!(exchange.field("code"), Some("authorized-1"));
    let redirect_uri = format!("{}/callback", scene.public);
    assert_eq!(exchange.field("redirect_uri"), Some(redirect_uri.as_str()));
    let verifier = exchange.field("code_verifier").expect("code_verifier");
    assert_eq!(s256(verifier), param(&location, "code_challenge"));
    // The tokens, once: sealed like /swap's, then invalid_grant.
    let tokens = scene.poll(device_code);
    assert_eq!(tokens.status, 200, "{tokens:?}");
    assert_eq!(tokens.header("cache-control"), Some("no-store"));
    let body = tokens.json();
    assert_eq!(body["access_token"], "access-authorized-1");
    assert_eq!(body["scope"], "streaming user-read-email");
    let sealed = body["refresh_token"].as_str().expect("refresh_token");
    assert_ne!(sealed, "refresh-authorized-1");
    assert!(
        body["refresh_token_expires_in"].as_u64().is_some(),
        "{body}"
    );
    assert_error(&scene.poll(device_code), 400, "invalid_grant");
    let refreshed = post_form(scene.addr(), "/refresh", &[("refresh_token", sealed)]);
    assert_eq!(refreshed.status, 200, "{refreshed:?}");
    assert_eq!(
        scene
            .mock
            .last_request()
            .and_then(|r| r.field("refresh_token").map(String::from)),
        Some("refresh-authorized-1".to_owned())
    );
    let state = param(&location, "state");
    let secrets = [
        "access-authorized-1",
        "refresh-authorized-1",
        "authorized-1",
        sealed,
        verifier,
    ];
    assert_nothing_shown(&scene, &visit, &secrets, &state);
}

/// No token or code on any page of `visit`, nor (`state` neither) in the
/// server's log.
fn assert_nothing_shown(scene: &Scene, visit: &Visit, secrets: &[&str], state: &str) {
    let pages = [&visit.continue_page, &visit.redirect, &visit.callback];
    for secret in secrets {
        for page in pages {
            assert!(!page.text().contains(secret), "{secret} in {page:?}");
        }
        assert!(!scene.server.stderr().contains(secret), "{secret} logged");
    }
    assert!(!scene.server.stderr().contains(state), "state logged");
}

#[test]
fn polling_sooner_than_the_interval_slows_down_and_the_first_poll_never_does() {
    let scene = Scene::start(&[]);
    let code = scene.device_code(&[]);
    let device_code = code["device_code"].as_str().expect("device_code");
    // At once after the code was issued: pending, not slow_down.
    assert_error(&scene.poll(device_code), 400, "authorization_pending");
    assert_error(&scene.poll(device_code), 400, "slow_down");
    assert_error(&scene.poll(device_code), 400, "slow_down");
    // Another code's interval is its own.
    let other = scene.device_code(&[]);
    let other = other["device_code"].as_str().expect("device_code");
    assert_error(&scene.poll(other), 400, "authorization_pending");
    assert_error(&scene.poll("no-such-code"), 400, "invalid_grant");
    let wrong_grant = post_form(
        scene.addr(),
        "/device/token",
        &[
            ("grant_type", "authorization_code"),
            ("device_code", device_code),
        ],
    );
    assert_error(&wrong_grant, 400, "unsupported_grant_type");
    let missing = post_form(
        scene.addr(),
        "/device/token",
        &[("grant_type", DEVICE_GRANT)],
    );
    assert_error(&missing, 400, "invalid_request");
}

#[test]
fn a_declined_sign_in_is_access_denied_for_the_device() {
    let scene = Scene::start(&[]);
    scene.mock.set_authorize_denies(true);
    let code = scene.device_code(&[]);
    let device_code = code["device_code"].as_str().expect("device_code");
    let visit = sign_in(&scene, code["user_code"].as_str().expect("user_code"));
    assert_eq!(visit.callback.status, 200, "{:?}", visit.callback);
    assert!(
        visit.callback.text().contains("declined"),
        "{:?}",
        visit.callback
    );
    assert_error(&scene.poll(device_code), 400, "access_denied");
    assert_error(&scene.poll(device_code), 400, "invalid_grant");
    assert_eq!(
        scene.mock.request_count(),
        1,
        "only /authorize: no exchange"
    );
}

#[test]
fn the_pages_carry_the_security_headers_a_language_and_a_viewport() {
    let scene = Scene::start(&[]);
    let code = scene.device_code(&[("scope", "streaming")]);
    let user_code = code["user_code"].as_str().expect("user_code");
    let csp = format!(
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' {}",
        scene.mock.base_url()
    );
    let form = get(scene.addr(), "/device");
    let unknown = get(scene.addr(), "/device?user_code=BBBB-BBBB");
    let confirm = get(scene.addr(), &format!("/device?user_code={user_code}"));
    let callback = get(scene.addr(), "/callback?code=c&state=nothing");
    for (page, status) in [
        (&form, 200),
        (&unknown, 400),
        (&confirm, 200),
        (&callback, 400),
    ] {
        assert_eq!(page.status, status, "{page:?}");
        assert_eq!(
            page.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        assert_eq!(page.header("content-security-policy"), Some(csp.as_str()));
        assert_eq!(page.header("x-frame-options"), Some("DENY"));
        assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
        assert_eq!(page.header_all("cache-control"), ["no-store"]);
        let text = page.text();
        assert!(text.contains("<html lang=\"en\">"), "{page:?}");
        assert!(text.contains("<meta name=\"viewport\""), "{page:?}");
    }
    assert!(confirm.text().contains(user_code));
    assert!(confirm.text().contains("<code>streaming</code>"));
    assert!(confirm.text().contains("Continue to Spotify"));
    assert!(unknown.text().contains("unknown or has expired"));
}

#[test]
fn continue_needs_the_form_of_this_servers_page() {
    let scene = Scene::start(&[]);
    let code = scene.device_code(&[]);
    let user_code = code["user_code"].as_str().expect("user_code");
    let page = get(scene.addr(), &format!("/device?user_code={user_code}"));
    let token = form_token(&page);
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("user_code", user_code)
        .append_pair("form_token", &token)
        .finish();
    // A page elsewhere posts the same form: the Strict cookie is not sent.
    let forged = send(
        scene.addr(),
        "POST",
        "/device",
        &["Origin: https://evil.example"],
        &body,
    );
    assert_eq!(forged.status, 400, "{forged:?}");
    assert!(forged.header("location").is_none());
    let wrong = send(
        scene.addr(),
        "POST",
        "/device",
        &["Cookie: sts_form=other"],
        &body,
    );
    assert_eq!(wrong.status, 400, "{wrong:?}");
    let cookie = cookie(&page, "sts_form");
    let right = send(
        scene.addr(),
        "POST",
        "/device",
        &[&format!("Cookie: {cookie}")],
        &body,
    );
    assert_eq!(right.status, 303, "{right:?}");
}

#[test]
fn the_callback_needs_the_browser_that_continued_and_state_is_single_use() {
    let scene = Scene::start(&[]);
    let code = scene.device_code(&[]);
    let device_code = code["device_code"].as_str().expect("device_code");
    let visit = sign_in(&scene, code["user_code"].as_str().expect("user_code"));
    let back = visit
        .authorize
        .header("location")
        .expect("Location")
        .to_owned();
    let (_, target) = split_url(&back);
    // Used once already: a second callback finds nothing.
    let again = send(scene.addr(), "GET", &target, &[], "");
    assert_eq!(again.status, 400, "{again:?}");
    assert!(
        again
            .text()
            .contains("unknown, already finished or expired")
    );
    assert_eq!(scene.poll(device_code).status, 200);

    // Another browser (no cookie) cannot finish a login.
    let code = scene.device_code(&[]);
    let device_code = code["device_code"].as_str().expect("device_code");
    let user_code = code["user_code"].as_str().expect("user_code");
    let page = get(scene.addr(), &format!("/device?user_code={user_code}"));
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("user_code", user_code)
        .append_pair("form_token", &form_token(&page))
        .finish();
    let form_cookie = format!("Cookie: {}", cookie(&page, "sts_form"));
    let redirect = send(scene.addr(), "POST", "/device", &[&form_cookie], &body);
    let (mock_addr, authorize) = split_url(redirect.header("location").expect("Location"));
    let back = get(mock_addr, &authorize);
    let (_, target) = split_url(back.header("location").expect("Location back"));
    let elsewhere = send(
        scene.addr(),
        "GET",
        &target,
        &["Cookie: sts_login=guess"],
        "",
    );
    assert_eq!(elsewhere.status, 400, "{elsewhere:?}");
    assert!(elsewhere.text().contains("same browser"));
    assert_error(&scene.poll(device_code), 400, "authorization_pending");
    let login_cookie = format!("Cookie: {}", cookie(&redirect, "sts_login"));
    // A HEAD from that browser (a prefetch, a link preview) uses nothing up.
    let head = send(scene.addr(), "HEAD", &target, &[&login_cookie], "");
    assert_eq!(head.status, 405, "{head:?}");
    assert_eq!(head.header("allow"), Some("GET"));
    let finished = send(scene.addr(), "GET", &target, &[&login_cookie], "");
    assert_eq!(finished.status, 200, "{finished:?}");
}

#[test]
fn a_full_table_answers_503_and_keeps_the_logins_in_progress() {
    let scene = Scene::start(&[("DEVICE_MAX_PENDING", "2")]);
    let first = scene.device_code(&[]);
    let _second = scene.device_code(&[]);
    let full = post_form(scene.addr(), "/device/code", &[]);
    assert_error(&full, 503, "temporarily_unavailable");
    let retry: u64 = full
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After:\n{full:?}"));
    assert!((590..=600).contains(&retry), "{full:?}");
    // The first login is still there to finish.
    let visit = sign_in(&scene, first["user_code"].as_str().expect("user_code"));
    assert_eq!(visit.callback.status, 200);
    let tokens = scene.poll(first["device_code"].as_str().expect("device_code"));
    assert_eq!(tokens.status, 200, "{tokens:?}");
    // Handed out: its place is free again.
    scene.device_code(&[]);
}

#[test]
fn wrong_codes_are_limited_per_client_even_when_the_next_one_is_right() {
    let scene = Scene::start(&[]);
    let code = scene.device_code(&[]);
    let user_code = code["user_code"].as_str().expect("user_code");
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(get(scene.addr(), "/device?user_code=BBBB-BBBB").status);
    }
    assert_eq!(statuses[..10], [400; 10]);
    assert_eq!(statuses[10..], [429, 429]);
    // Limited: a right code tells nothing either.
    let right = get(scene.addr(), &format!("/device?user_code={user_code}"));
    assert_eq!(right.status, 429, "{right:?}");
    let secs: u64 = right
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=6).contains(&secs), "{right:?}");
    assert_eq!(right.header("x-frame-options"), Some("DENY"));
}

#[test]
fn client_id_picks_the_app_and_every_app_uses_the_same_callback() {
    let mock = start_mock();
    mock.add_client("tv-client", "tv-secret", "tv://cb");
    let apps = [
        ("SPOTIFY_APPS", "music,tv"),
        ("SPOTIFY_APP_MUSIC_CLIENT_ID", CLIENT_ID),
        ("SPOTIFY_APP_MUSIC_CLIENT_SECRET", support::CLIENT_SECRET),
        ("SPOTIFY_APP_MUSIC_REDIRECT_URI", support::REDIRECT_URI),
        ("SPOTIFY_APP_TV_CLIENT_ID", "tv-client"),
        ("SPOTIFY_APP_TV_CLIENT_SECRET", "tv-secret"),
        ("SPOTIFY_APP_TV_REDIRECT_URI", "tv://cb"),
    ];
    let scene = Scene::start_with(mock, false, &apps);
    scene
        .mock
        .allow_redirect_uri_for("tv-client", &format!("{}/callback", scene.public));
    let code = scene.device_code(&[("client_id", "tv-client")]);
    let page = get(
        scene.addr(),
        &format!("/device?user_code={}", code["user_code"].as_str().unwrap()),
    );
    assert!(page.text().contains("<strong>tv</strong>"), "{page:?}");
    let visit = sign_in(&scene, code["user_code"].as_str().expect("user_code"));
    let location = visit.redirect.header("location").expect("Location");
    assert_eq!(param(location, "client_id"), "tv-client");
    assert_eq!(
        param(location, "redirect_uri"),
        format!("{}/callback", scene.public)
    );
    let tokens = scene.poll(code["device_code"].as_str().expect("device_code"));
    assert_eq!(tokens.status, 200, "{tokens:?}");
    assert_eq!(
        scene.mock.last_request().and_then(|r| r.basic_client_id()),
        Some("tv-client".into())
    );
    // Sealed for the tv app: its own path refreshes it, the other app's refuses.
    let sealed = tokens.json()["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_owned();
    let tv = post_form(scene.addr(), "/tv/refresh", &[("refresh_token", &sealed)]);
    assert_eq!(tv.status, 200, "{tv:?}");
    let music = post_form(
        scene.addr(),
        "/music/refresh",
        &[("refresh_token", &sealed)],
    );
    assert_error(&music, 400, "invalid_grant");
    let unknown = post_form(scene.addr(), "/device/code", &[("client_id", "nope")]);
    assert_error(&unknown, 400, "invalid_client");
}

// ---------------------------------------------------------------------------
// The `login` command, end to end
// ---------------------------------------------------------------------------

/// How long `login` may take: a poll at once, one after the 5 s interval.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `spotify-token-swap login`, its stderr read line by line.
struct LoginProc {
    child: Child,
    lines: Receiver<String>,
    stderr: Vec<String>,
    stdout: Option<JoinHandle<Vec<u8>>>,
}

impl LoginProc {
    fn start(args: &[&str]) -> LoginProc {
        let argv = support::binary_argv();
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .arg("login")
            .args(args)
            .env_clear()
            .envs(support::inherited_env())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start login");
        let (send, lines) = mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stdout = child.stdout.take().expect("stdout");
        let stdout = thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = stdout.read_to_end(&mut bytes);
            bytes
        });
        LoginProc {
            child,
            lines,
            stderr: Vec::new(),
            stdout: Some(stdout),
        }
    }

    /// The user code from the "enter the code" line.
    fn user_code(&mut self) -> String {
        let deadline = Instant::now() + LOGIN_TIMEOUT;
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.stderr.push(line.clone());
            if let Some((_, code)) = line.split_once("enter the code ") {
                return code.trim().to_owned();
            }
        }
        panic!("no code on stderr: {:?}", self.stderr);
    }

    /// Waits for the exit: its status, stdout and the whole of stderr.
    fn finish(mut self) -> (Option<i32>, String, String) {
        let deadline = Instant::now() + LOGIN_TIMEOUT;
        let status = loop {
            match self.child.try_wait().expect("try_wait") {
                Some(status) => break status,
                None if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
                None => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!(
                        "login still running after {LOGIN_TIMEOUT:?}: {:?}",
                        self.stderr
                    );
                }
            }
        };
        let stdout = self
            .stdout
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(1)) {
            self.stderr.push(line);
        }
        (
            status.code(),
            String::from_utf8_lossy(&stdout).into_owned(),
            self.stderr.join("\n"),
        )
    }
}

#[test]
fn login_prints_the_code_to_stderr_and_writes_the_tokens_to_a_0600_file() {
    let scene = Scene::start(&[]);
    let dir = TempDir::new("login");
    let output = dir.file("tokens.json");
    let mut login = LoginProc::start(&[
        "--server",
        &scene.public,
        "--scope",
        "streaming",
        "--output",
        &output,
    ]);
    let user_code = login.user_code();
    // The person, on a phone: the address and code the device showed.
    let visit = sign_in(&scene, &user_code);
    assert_eq!(visit.callback.status, 200, "{:?}", visit.callback);
    let (status, stdout, stderr) = login.finish();
    assert_eq!(status, Some(0), "{stderr}");
    assert_eq!(stdout, "", "tokens go to the file only");
    assert!(
        stderr.contains(&format!(
            "open {}/device and enter the code {user_code}",
            scene.public
        )),
        "{stderr}"
    );
    let mode = std::fs::metadata(&output)
        .expect("tokens file")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let tokens: Value =
        serde_json::from_str(&std::fs::read_to_string(&output).expect("read")).expect("JSON");
    assert_eq!(tokens["access_token"], "access-authorized-1");
    assert_eq!(tokens["scope"], "streaming");
    let sealed = tokens["refresh_token"].as_str().expect("refresh_token");
    for secret in ["access-authorized-1", "refresh-authorized-1", sealed] {
        assert!(!stderr.contains(secret), "{secret} on stderr: {stderr}");
    }
}

#[test]
fn login_writes_to_stdout_and_exits_1_when_the_person_declines() {
    let scene = Scene::start(&[]);
    let mut login = LoginProc::start(&["--server", &scene.public]);
    let user_code = login.user_code();
    sign_in(&scene, &user_code);
    let (status, stdout, _) = login.finish();
    assert_eq!(status, Some(0));
    let tokens: Value = serde_json::from_str(&stdout).expect("token JSON on stdout");
    assert_eq!(tokens["access_token"], "access-authorized-1");

    scene.mock.set_authorize_denies(true);
    let mut login = LoginProc::start(&["--server", &scene.public]);
    let user_code = login.user_code();
    sign_in(&scene, &user_code);
    let (status, stdout, stderr) = login.finish();
    assert_eq!(status, Some(1), "{stderr}");
    assert_eq!(stdout, "");
    assert!(stderr.contains("declined"), "{stderr}");
}

#[test]
fn login_refuses_bad_arguments_with_2_and_an_unreachable_server_with_1() {
    let out = run_binary(&["login"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--server URL is required"));
    let out = run_binary(&["login", "--server", "http://127.0.0.1:1"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("login failed"));
}
