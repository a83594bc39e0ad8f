//! Several Spotify apps on one server (`SPOTIFY_APPS`), over real sockets
//! against a mock that knows each app's credentials, codes, refresh tokens
//! and redirect URIs apart: which app a request is for (by path, by
//! `client_id`, the first without either), `invalid_client`, tokens that do
//! not move between apps, per-app redirect URIs, CORS origins and 429
//! back-off, the `app` label in `/metrics`, `check-config`, `SIGHUP`, and
//! every configuration problem as one exit-2 line. The browser's view of
//! per-app CORS is in `browser.rs`.

use crate::support;

use std::process::Output;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::metrics::{sample, scrape, value};
use support::mock::{MockSpotify, Reply};
use support::{
    Resp, ServerProc, TempDir, assert_error, assert_no_cors_headers, assert_still_serving,
    borrowed, get, post_form, post_json, request, run_binary,
};

/// How long a request may take to be counted: it is recorded after its
/// answer is written, so a scrape right after the answer can come first.
const COUNTED_WITHIN: Duration = Duration::from_secs(5);
/// Pause between scrapes while waiting for the counts.
const SCRAPE_PAUSE: Duration = Duration::from_millis(20);

/// Scrapes `/metrics` until every series in `expected` shows its value,
/// or [`COUNTED_WITHIN`] has passed, and returns the last scrape.
fn scrape_when_counted(server: &ServerProc, expected: &[(String, f64)]) -> String {
    let deadline = Instant::now() + COUNTED_WITHIN;
    loop {
        let text = scrape(server.addr());
        let counted = expected
            .iter()
            .all(|(series, value)| sample(&text, series) == Some(*value));
        if counted || Instant::now() >= deadline {
            return text;
        }
        thread::sleep(SCRAPE_PAUSE);
    }
}

/// An encryption secret, so refresh tokens are sealed for their app.
const ENCRYPTION_SECRET: &str = "apps-test-encryption-secret-0123456789";

/// One app of the tests: its name, client id, secret and redirect URI.
struct TestApp {
    name: &'static str,
    id: &'static str,
    secret: &'static str,
    redirect: &'static str,
}

/// Three apps; `music` is the first, which serves requests that name none.
const APPS: [TestApp; 3] = [
    TestApp {
        name: "music",
        id: "music-client-id",
        secret: "music-secret-plugh",
        redirect: "music://callback",
    },
    TestApp {
        name: "tv",
        id: "tv-client-id",
        secret: "tv-secret-plugh",
        redirect: "tv://callback",
    },
    TestApp {
        name: "car-2",
        id: "car-client-id",
        secret: "car-secret-plugh",
        redirect: "car://callback",
    },
];
const MUSIC: &TestApp = &APPS[0];
const TV: &TestApp = &APPS[1];
const CAR: &TestApp = &APPS[2];

impl TestApp {
    /// The start of its variables' names: `SPOTIFY_APP_CAR_2_`.
    fn var(&self, field: &str) -> String {
        let upper = self.name.to_ascii_uppercase().replace('-', "_");
        format!("SPOTIFY_APP_{upper}_{field}")
    }

    fn path(&self, endpoint: &str) -> String {
        format!("/{}{endpoint}", self.name)
    }
}

/// A mock that knows the three apps.
fn mock() -> MockSpotify {
    let mock = MockSpotify::start(MUSIC.id, MUSIC.secret, MUSIC.redirect);
    for app in &APPS[1..] {
        mock.add_client(app.id, app.secret, app.redirect);
    }
    mock
}

/// The variables of a server for the three apps, pointed at `mock`, with
/// encryption on; `extra` last (an empty value drops the variable).
fn vars(mock: &MockSpotify, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = vec![
        ("SPOTIFY_APPS".into(), "music,tv,car-2".into()),
        ("SPOTIFY_ACCOUNTS_URL".into(), mock.base_url()),
        ("ENCRYPTION_SECRET".into(), ENCRYPTION_SECRET.into()),
        ("WORKER_THREADS".into(), "4".into()),
    ];
    for app in &APPS {
        vars.push((app.var("CLIENT_ID"), app.id.into()));
        vars.push((app.var("CLIENT_SECRET"), app.secret.into()));
        vars.push((app.var("REDIRECT_URI"), app.redirect.into()));
    }
    for (name, value) in extra {
        vars.retain(|(n, _)| n != name);
        if !value.is_empty() {
            vars.push(((*name).into(), (*value).into()));
        }
    }
    vars
}

fn start(mock: &MockSpotify, extra: &[(&str, &str)]) -> ServerProc {
    ServerProc::start(&borrowed(&vars(mock, extra)))
}

/// The refresh token of a 200 answer.
fn refresh_token(resp: &Resp) -> String {
    assert_eq!(resp.status, 200, "{resp:?}");
    let body: Value = resp.json();
    body["refresh_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no refresh_token: {resp:?}"))
        .to_owned()
}

/// The client id the last call to Spotify authenticated as.
fn last_caller(mock: &MockSpotify) -> String {
    mock.last_request()
        .and_then(|r| r.basic_client_id())
        .expect("a call to Spotify with Basic credentials")
}

#[test]
fn swap_and_refresh_through_each_app_by_its_path() {
    let mock = mock();
    let server = start(&mock, &[]);
    assert!(
        server.stderr().contains(" apps=music,tv,car-2"),
        "{}",
        server.stderr()
    );

    for app in &APPS {
        let code = format!("code-of-{}", app.name);
        mock.add_code_for(app.id, &code);
        let swapped = post_form(server.addr(), &app.path("/swap"), &[("code", &code)]);
        let sealed = refresh_token(&swapped);
        assert_eq!(swapped.json()["access_token"], format!("access-{code}"));
        assert_eq!(last_caller(&mock), app.id, "{}", app.name);
        assert_eq!(
            mock.last_field("redirect_uri").as_deref(),
            Some(app.redirect)
        );
        assert_ne!(sealed, format!("refresh-{code}"), "sealed, not Spotify's");

        let refreshed = post_form(
            server.addr(),
            &app.path("/refresh"),
            &[("refresh_token", &sealed)],
        );
        assert_eq!(refreshed.status, 200, "{}: {refreshed:?}", app.name);
        assert_eq!(last_caller(&mock), app.id);
        assert_eq!(
            mock.last_field("refresh_token"),
            Some(format!("refresh-{code}"))
        );
    }
    assert_eq!(mock.request_count(), 6);
}

#[test]
fn on_the_plain_paths_client_id_picks_the_app_and_without_it_the_first_serves() {
    let mock = mock();
    let server = start(&mock, &[]);
    mock.add_code_for(TV.id, "tv-form");
    mock.add_code_for(CAR.id, "car-json");
    mock.add_code_for(MUSIC.id, "no-client-id");

    let by_form = post_form(
        server.addr(),
        "/swap",
        &[("code", "tv-form"), ("client_id", TV.id)],
    );
    let tv_token = refresh_token(&by_form);
    assert_eq!(last_caller(&mock), TV.id);

    let json = format!(r#"{{"client_id":"{}","code":"car-json"}}"#, CAR.id);
    let by_json = post_json(server.addr(), "/swap", &json);
    assert_eq!(by_json.status, 200, "{by_json:?}");
    assert_eq!(last_caller(&mock), CAR.id);

    let first = post_form(server.addr(), "/swap", &[("code", "no-client-id")]);
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(last_caller(&mock), MUSIC.id);

    let refreshed = post_form(
        server.addr(),
        "/refresh",
        &[("refresh_token", &tv_token), ("client_id", TV.id)],
    );
    assert_eq!(refreshed.status, 200, "{refreshed:?}");
    assert_eq!(last_caller(&mock), TV.id);
    // The path's own app, named again: they agree.
    mock.add_code_for(TV.id, "tv-agreeing");
    let agreeing = post_form(
        server.addr(),
        &TV.path("/swap"),
        &[("code", "tv-agreeing"), ("client_id", TV.id)],
    );
    assert_eq!(agreeing.status, 200, "{agreeing:?}");
}

#[test]
fn a_client_id_of_no_app_or_of_another_app_than_the_paths_is_invalid_client_without_a_call() {
    let mock = mock();
    let server = start(&mock, &[]);
    mock.add_code_for(TV.id, "tv-code");

    let unknown = post_form(
        server.addr(),
        "/swap",
        &[("code", "tv-code"), ("client_id", "no-such-client")],
    );
    let other = post_form(
        server.addr(),
        &TV.path("/swap"),
        &[("code", "tv-code"), ("client_id", MUSIC.id)],
    );
    let json = format!(r#"{{"refresh_token":"x","client_id":"{}"}}"#, CAR.id);
    let refresh_other = post_json(server.addr(), &TV.path("/refresh"), &json);
    let repeated = post_form(
        server.addr(),
        "/swap",
        &[
            ("code", "tv-code"),
            ("client_id", TV.id),
            ("client_id", TV.id),
        ],
    );

    for resp in [&unknown, &other, &refresh_other] {
        assert_error(resp, 400, "invalid_client");
        assert_eq!(resp.header("cache-control"), Some("no-store"), "{resp:?}");
    }
    assert_eq!(
        unknown.json()["error_description"],
        "client_id names no app this server serves"
    );
    assert_eq!(
        other.json()["error_description"],
        "client_id is not the client id of the app this path serves"
    );
    assert_error(&repeated, 400, "invalid_request");
    assert_eq!(mock.request_count(), 0, "Spotify was called");
    assert_still_serving(server.addr());
    // The code is still good for its own app.
    let ok = post_form(server.addr(), &TV.path("/swap"), &[("code", "tv-code")]);
    assert_eq!(ok.status, 200, "{ok:?}");
}

#[test]
fn a_refresh_token_sealed_for_one_app_is_invalid_grant_at_another_without_a_call() {
    let mock = mock();
    let server = start(&mock, &[]);
    mock.add_code_for(TV.id, "tv-code");
    let tv_token = refresh_token(&post_form(
        server.addr(),
        &TV.path("/swap"),
        &[("code", "tv-code")],
    ));
    let calls = mock.request_count();

    let at_music = post_form(
        server.addr(),
        &MUSIC.path("/refresh"),
        &[("refresh_token", &tv_token)],
    );
    let at_first = post_form(server.addr(), "/refresh", &[("refresh_token", &tv_token)]);
    let by_car_id = post_form(
        server.addr(),
        "/refresh",
        &[("refresh_token", &tv_token), ("client_id", CAR.id)],
    );

    for resp in [&at_music, &at_first, &by_car_id] {
        assert_error(resp, 400, "invalid_grant");
    }
    assert_eq!(mock.request_count(), calls, "Spotify was called");
    let at_tv = post_form(
        server.addr(),
        &TV.path("/refresh"),
        &[("refresh_token", &tv_token)],
    );
    assert_eq!(at_tv.status, 200, "{at_tv:?}");
}

#[test]
fn each_app_takes_only_its_own_redirect_uris() {
    let mock = mock();
    mock.allow_redirect_uri_for(TV.id, "tv://second");
    let server = start(
        &mock,
        &[(&TV.var("ALLOWED_REDIRECT_URIS"), "tv://second, tv://third")],
    );
    mock.add_code_for(TV.id, "tv-code");
    mock.add_code_for(MUSIC.id, "music-code");

    let tv_listed = post_form(
        server.addr(),
        &TV.path("/swap"),
        &[("code", "tv-code"), ("redirect_uri", "tv://second")],
    );
    assert_eq!(tv_listed.status, 200, "{tv_listed:?}");
    assert_eq!(
        mock.last_field("redirect_uri").as_deref(),
        Some("tv://second")
    );
    let calls = mock.request_count();

    for (path, uri) in [
        (MUSIC.path("/swap"), "tv://second"),
        (MUSIC.path("/swap"), TV.redirect),
        ("/swap".to_owned(), "tv://third"),
        (CAR.path("/swap"), MUSIC.redirect),
    ] {
        let resp = post_form(
            server.addr(),
            &path,
            &[("code", "music-code"), ("redirect_uri", uri)],
        );
        assert_error(&resp, 400, "invalid_request");
    }
    assert_eq!(mock.request_count(), calls, "Spotify was called");
    let own = post_form(
        server.addr(),
        "/swap",
        &[("code", "music-code"), ("redirect_uri", MUSIC.redirect)],
    );
    assert_eq!(own.status, 200, "{own:?}");
}

#[test]
fn spotifys_429_backs_off_only_the_app_it_was_for() {
    let mock = mock();
    let server = start(&mock, &[]);
    mock.push_reply(Reply::too_many_requests(30));
    mock.add_code_for(MUSIC.id, "music-code");

    let throttled = post_form(server.addr(), &TV.path("/swap"), &[("code", "x")]);
    assert_eq!(throttled.status, 429, "{throttled:?}");
    let calls = mock.request_count();
    let again = post_form(server.addr(), &TV.path("/swap"), &[("code", "x")]);
    assert_eq!(again.status, 429, "{again:?}");
    assert!(again.header("retry-after").is_some(), "{again:?}");
    assert_eq!(
        mock.request_count(),
        calls,
        "the tv app called Spotify again"
    );

    let music = post_form(
        server.addr(),
        &MUSIC.path("/swap"),
        &[("code", "music-code")],
    );
    assert_eq!(music.status, 200, "{music:?}");
    assert_eq!(mock.request_count(), calls + 1);
    assert_eq!(last_caller(&mock), MUSIC.id);
}

#[test]
fn metrics_count_requests_upstream_calls_and_refusals_by_app() {
    let mock = mock();
    // Every client limited to one token request a minute; the loopback
    // client is no trusted proxy, so it is limited too.
    let server = start(
        &mock,
        &[
            ("RATE_LIMIT_PER_MINUTE", "1"),
            ("TRUSTED_PROXIES", "192.0.2.1"),
        ],
    );
    mock.add_code_for(TV.id, "tv-code");

    let swapped = post_form(
        server.addr(),
        "/swap",
        &[("code", "tv-code"), ("client_id", TV.id)],
    );
    assert_eq!(swapped.status, 200, "{swapped:?}");
    let limited = post_form(server.addr(), &CAR.path("/swap"), &[("code", "x")]);
    assert_eq!(limited.status, 429, "{limited:?}");
    let unknown = post_form(server.addr(), "/swap", &[("client_id", "nobody")]);
    assert_error(&unknown, 400, "invalid_client");
    assert_eq!(get(server.addr(), "/nowhere").status, 404);
    assert_eq!(get(server.addr(), &TV.path("/swap")).status, 405);

    let requests = "spotify_token_swap_requests_total";
    let expected = [
        (
            format!(r#"{requests}{{app="tv",endpoint="swap",status="200"}}"#),
            1.0,
        ),
        (
            format!(r#"{requests}{{app="tv",endpoint="swap",status="405"}}"#),
            1.0,
        ),
        (
            format!(r#"{requests}{{app="car-2",endpoint="swap",status="429"}}"#),
            1.0,
        ),
        (
            format!(r#"{requests}{{endpoint="swap",status="400"}}"#),
            1.0,
        ),
        (
            format!(r#"{requests}{{endpoint="other",status="404"}}"#),
            1.0,
        ),
        (
            r#"spotify_token_swap_upstream_duration_seconds_count{app="tv"}"#.into(),
            1.0,
        ),
        (
            r#"spotify_token_swap_upstream_duration_seconds_count{app="music"}"#.into(),
            0.0,
        ),
        (
            r#"spotify_token_swap_upstream_failures_total{app="car-2",kind="timeout"}"#.into(),
            0.0,
        ),
        (
            r#"spotify_token_swap_rate_limited_total{app="car-2"}"#.into(),
            1.0,
        ),
        (
            r#"spotify_token_swap_rate_limited_total{app="tv"}"#.into(),
            0.0,
        ),
    ];
    let text = scrape_when_counted(&server, &expected);
    for (series, expected) in expected {
        assert_eq!(value(&text, &series), expected, "{series}\n{text}");
    }
    assert!(
        !text.contains("\nspotify_token_swap_rate_limited_total "),
        "{text}"
    );
}

#[test]
fn with_one_app_metrics_carry_no_app_label() {
    let (mock, server) = support::start_with_code("one-app", &[]);
    let resp = post_form(server.addr(), "/swap", &[("code", "one-app")]);
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(mock.request_count(), 1);

    let swapped = r#"spotify_token_swap_requests_total{endpoint="swap",status="200"}"#;
    let text = scrape_when_counted(&server, &[(swapped.into(), 1.0)]);
    assert!(!text.contains("app="), "{text}");
    assert_eq!(value(&text, swapped), 1.0);
    assert_eq!(
        value(&text, "spotify_token_swap_upstream_duration_seconds_count"),
        1.0
    );
}

const MUSIC_ORIGIN: &str = "https://music.example";
const TV_ORIGIN: &str = "https://tv.example";

fn preflight(server: &ServerProc, path: &str, origin: &str) -> Resp {
    let raw = format!(
        "OPTIONS {path} HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\n\
         Access-Control-Request-Method: POST\r\nConnection: close\r\n\r\n"
    );
    request(server.addr(), raw.as_bytes())
}

fn post_from(server: &ServerProc, path: &str, origin: &str, body: &str) -> Resp {
    let raw = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    request(server.addr(), raw.as_bytes())
}

#[test]
fn each_app_answers_only_its_own_origins() {
    let mock = mock();
    let server = start(
        &mock,
        &[
            (&MUSIC.var("CORS_ALLOW_ORIGINS"), MUSIC_ORIGIN),
            (&TV.var("CORS_ALLOW_ORIGINS"), TV_ORIGIN),
        ],
    );
    let allowed = |resp: &Resp| resp.header("access-control-allow-origin").map(String::from);

    // An app's own path: its origins only.
    let tv_from_tv = preflight(&server, &TV.path("/swap"), TV_ORIGIN);
    assert_eq!(tv_from_tv.status, 204, "{tv_from_tv:?}");
    assert_eq!(allowed(&tv_from_tv).as_deref(), Some(TV_ORIGIN));
    let tv_from_music = preflight(&server, &TV.path("/refresh"), MUSIC_ORIGIN);
    assert_eq!(tv_from_music.status, 204, "{tv_from_music:?}");
    assert_no_cors_headers(&tv_from_music, "tv's preflight from music's origin");
    // An app without origins takes no preflight.
    let car = preflight(&server, &CAR.path("/swap"), TV_ORIGIN);
    assert_error(&car, 405, "method_not_allowed");
    assert_eq!(car.header("allow"), Some("POST"));
    // The plain path, before the body names an app: any app's origin.
    for origin in [MUSIC_ORIGIN, TV_ORIGIN] {
        let plain = preflight(&server, "/swap", origin);
        assert_eq!(allowed(&plain).as_deref(), Some(origin), "{plain:?}");
    }
    assert_no_cors_headers(
        &preflight(&server, "/swap", "https://other.example"),
        "a preflight from no app's origin",
    );

    // The answers: the app's own origins.
    mock.add_code_for(TV.id, "tv-code");
    let tv_by_id = post_from(
        &server,
        "/swap",
        TV_ORIGIN,
        &format!("code=tv-code&client_id={}", TV.id),
    );
    assert_eq!(tv_by_id.status, 200, "{tv_by_id:?}");
    assert_eq!(allowed(&tv_by_id).as_deref(), Some(TV_ORIGIN));
    let first_from_tv = post_from(&server, "/swap", TV_ORIGIN, "code=nothing");
    assert_error(&first_from_tv, 400, "invalid_grant");
    assert_no_cors_headers(&first_from_tv, "music's answer to tv's origin");
    let music_from_tv = post_from(&server, &MUSIC.path("/swap"), TV_ORIGIN, "code=x");
    assert_no_cors_headers(&music_from_tv, "music's path from tv's origin");
    // Refused before any app is known: any app's origin may read why.
    let unknown = post_from(&server, "/swap", MUSIC_ORIGIN, "code=x&client_id=nobody");
    assert_error(&unknown, 400, "invalid_client");
    assert_eq!(allowed(&unknown).as_deref(), Some(MUSIC_ORIGIN));
}

/// Runs the binary with the three apps' variables and `extra`, without a
/// mock (nothing is served).
fn run(args: &[&str], extra: &[(&str, &str)]) -> Output {
    let mock = mock();
    run_binary(args, &borrowed(&vars(&mock, extra)))
}

/// The stderr lines of a bad-configuration exit, which must be status 2
/// with nothing on stdout.
fn config_errors(output: &Output) -> Vec<String> {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(output.stdout.is_empty(), "{output:?}");
    assert!(!stderr.contains("plugh"), "a secret in:\n{stderr}");
    stderr.lines().map(String::from).collect()
}

/// Variables on top of the three apps', and the stderr lines they bring.
type Case = (
    &'static [(&'static str, &'static str)],
    &'static [&'static str],
);

#[test]
fn every_app_configuration_problem_exits_2_with_one_line_naming_its_variable() {
    let cases: [Case; 7] = [
        (
            &[("SPOTIFY_CLIENT_ID", "single-id")],
            &[
                "configuration error: SPOTIFY_CLIENT_ID is set together with SPOTIFY_APPS: \
               give each app its own SPOTIFY_APP_<NAME>_CLIENT_ID, and unset SPOTIFY_CLIENT_ID",
            ],
        ),
        (
            &[("SPOTIFY_APP_TV_CLIENT_ID", "")],
            &["configuration error: SPOTIFY_APP_TV_CLIENT_ID is required"],
        ),
        (
            &[("SPOTIFY_APP_CAR_2_CLIENT_ID", "tv-client-id")],
            &[
                "configuration error: SPOTIFY_APP_CAR_2_CLIENT_ID is the same client id as \
               SPOTIFY_APP_TV_CLIENT_ID; each app has its own",
            ],
        ),
        (
            &[("SPOTIFY_APP_MUSIC_CLIENT_SECRET", "")],
            &["configuration error: SPOTIFY_APP_MUSIC_CLIENT_SECRET (or \
               SPOTIFY_APP_MUSIC_CLIENT_SECRET_FILE) is required"],
        ),
        (
            &[("SPOTIFY_APPS", "music,TV,car-2")],
            &[
                "configuration error: SPOTIFY_APPS: 'TV' is not an app name (1 to 32 of a-z, \
               0-9 and -)",
            ],
        ),
        (
            &[("SPOTIFY_APP_RADIO_REDIRECT_URI", "radio://cb")],
            &[
                "configuration error: SPOTIFY_APP_RADIO_REDIRECT_URI is no setting of an app in \
               SPOTIFY_APPS (SPOTIFY_APP_<NAME>_CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, \
               ALLOWED_REDIRECT_URIS, CORS_ALLOW_ORIGINS, with NAME upper-cased and - as _)",
            ],
        ),
        (
            &[
                ("SPOTIFY_APP_TV_REDIRECT_URI", ""),
                (
                    "SPOTIFY_APP_MUSIC_CORS_ALLOW_ORIGINS",
                    "https://music.example/",
                ),
                ("SWAP_PATH", "/token"),
                ("REFRESH_PATH", "/music/token"),
            ],
            &[
                "configuration error: SPOTIFY_APP_MUSIC_CORS_ALLOW_ORIGINS: \
                 'https://music.example/' is not an origin like https://app.example.com",
                "configuration error: SPOTIFY_APP_TV_REDIRECT_URI is required",
                "configuration error: SPOTIFY_APPS: app 'music' is served at /music/token, \
                 which is REFRESH_PATH; rename the app or change REFRESH_PATH",
            ],
        ),
    ];
    for (extra, expected) in cases {
        for args in [&[][..], &["check-config"][..]] {
            let lines = config_errors(&run(args, extra));
            assert_eq!(lines, expected, "{extra:?} {args:?}");
        }
    }
}

#[test]
fn the_single_app_secret_file_the_unit_always_sets_is_not_read_beside_spotify_apps() {
    let dir = TempDir::new("apps-unit");
    // What the shipped unit hands over for the single-app case: here an
    // empty file (the package creates one), which would be refused if read.
    let empty = dir.write("client-secret", "");
    let tv_secret = dir.write("tv-client-secret", format!("{}\n", TV.secret));
    let mock = mock();
    let server = start(
        &mock,
        &[
            ("SPOTIFY_CLIENT_SECRET_FILE", &empty),
            (&TV.var("CLIENT_SECRET"), ""),
            (&TV.var("CLIENT_SECRET_FILE"), &tv_secret),
        ],
    );
    mock.add_code_for(TV.id, "tv-code");

    let resp = post_form(server.addr(), &TV.path("/swap"), &[("code", "tv-code")]);

    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(last_caller(&mock), TV.id);
}

#[test]
fn check_config_lists_every_app_with_its_client_id_and_redirect_uris_and_no_secret() {
    let output = run(
        &["check-config"],
        &[(&TV.var("ALLOWED_REDIRECT_URIS"), "tv://second")],
    );
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(0), "{output:?}");

    for line in [
        "SPOTIFY_APPS=music,tv,car-2 (3 apps; a request that names none is served by music)",
        "SPOTIFY_APP_MUSIC_CLIENT_ID=music-client-id",
        "SPOTIFY_APP_TV_CLIENT_SECRET=[redacted]",
        "SPOTIFY_APP_TV_REDIRECT_URI=tv://callback",
        "SPOTIFY_APP_TV_ALLOWED_REDIRECT_URIS=tv://second",
        "SPOTIFY_APP_CAR_2_CLIENT_ID=car-client-id",
        "app car-2: /car-2/swap, /car-2/refresh; or client_id=car-client-id on /swap, /refresh",
        "SPOTIFY_CLIENT_ID=(per app: SPOTIFY_APP_<NAME>_CLIENT_ID)",
        "configuration ok",
    ] {
        assert!(stdout.lines().any(|l| l == line), "{line}\n{stdout}");
    }
    assert!(!stdout.contains("plugh"), "{stdout}");
}

#[test]
fn sighup_rereads_each_apps_secret() {
    let dir = TempDir::new("apps-hup");
    let tv_file = dir.write("tv-client-secret", "tv-old-secret\n");
    let mock = mock();
    let server = start(
        &mock,
        &[
            (&TV.var("CLIENT_SECRET"), ""),
            (&TV.var("CLIENT_SECRET_FILE"), &tv_file),
        ],
    );
    mock.add_code_for(TV.id, "tv-code");
    let stale = post_form(server.addr(), &TV.path("/swap"), &[("code", "tv-code")]);
    assert_error(&stale, 400, "invalid_client");

    dir.write("tv-client-secret", format!("{}\n", TV.secret));
    server.signal("HUP");

    assert!(
        server.wait_for_stderr(
            "SIGHUP: reloaded SPOTIFY_APP_TV_CLIENT_SECRET",
            Duration::from_secs(5)
        ),
        "{}",
        server.stderr()
    );
    let line = server
        .stderr()
        .lines()
        .find(|l| l.contains("SIGHUP: reloaded"))
        .map(String::from)
        .unwrap_or_default();
    assert!(!line.contains("MUSIC") && !line.contains("CAR"), "{line}");
    let fresh = post_form(server.addr(), &TV.path("/swap"), &[("code", "tv-code")]);
    assert_eq!(fresh.status, 200, "{fresh:?}");
    assert!(!server.stderr().contains(TV.secret), "{}", server.stderr());
}
