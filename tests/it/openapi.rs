//! `docs/openapi.yaml`, the interface document, held to the real server:
//! schemathesis generates requests from the document, sends them to the
//! release binary (pointed at the Spotify mock) and checks every answer
//! against it. Schemathesis is installed by pip, so this runs only through
//! `scripts/test-openapi`, which installs it in a virtual environment,
//! validates the document, and names the command in `STS_SCHEMATHESIS`.
//! (That the document lists exactly the server's paths is a unit test in
//! `src/endpoints.rs`.)

use std::env;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use crate::support::{
    CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, ServerProc, TempDir, get, heavy, mock::MockSpotify,
};

/// The encryption secret the document's examples were sealed with, so a
/// sealed refresh token from an example opens here and its refresh is
/// answered 200.
const EXAMPLE_SECRET: &str = "an-example-encryption-secret-of-32-chars-or-more";
/// The authorization codes of the document's examples (each swaps once).
const EXAMPLE_CODES: [&str; 2] = ["AQDexamplecode", "AQDjsoncode"];
/// Spotify's refresh tokens inside the document's sealed examples.
const EXAMPLE_REFRESH_TOKENS: [&str; 2] = ["refresh-AQDexamplecode", "refresh-AQDjsoncode"];
/// Every check that holds an answer to the document.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_headers_conformance,response_schema_conformance";
/// Fixed, so a run can be repeated exactly.
const SEED: &str = "24";
/// Test cases per operation and phase: the whole run stays under a minute.
const MAX_EXAMPLES: &str = "100";
/// Sent with every request: the server sees a client behind a trusted
/// proxy (loopback), as behind nginx, so its rate limit applies (a trusted
/// proxy that names no client is not limited) and `/metrics` still
/// answers (127.0.0.2 is in the default `METRICS_ALLOW`).
const FORWARDED_FOR: &str = "X-Forwarded-For: 127.0.0.2";

/// The document, from this checkout.
fn document() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.yaml")
}

/// A loopback port nothing listens on now, for a server that must know its
/// own address before it starts (`PUBLIC_URL`).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("bound address").port()
}

/// A mock that knows the document's example codes and refresh tokens,
/// for the app [`CLIENT_ID`], and the callback of `public_url`.
fn mock_for_examples(public_url: &str) -> MockSpotify {
    let mock = MockSpotify::start(CLIENT_ID, CLIENT_SECRET, REDIRECT_URI);
    EXAMPLE_CODES.iter().for_each(|code| mock.add_code(code));
    EXAMPLE_REFRESH_TOKENS
        .iter()
        .for_each(|token| mock.add_refresh_token(token));
    mock.allow_redirect_uri(&format!("{public_url}/callback"));
    mock
}

/// Runs schemathesis with every check against `server` and fails the test
/// with the server's log if it finds anything.
fn schemathesis_passes(server: &ServerProc) {
    let schemathesis = env::var("STS_SCHEMATHESIS")
        .expect("STS_SCHEMATHESIS: the schemathesis command (scripts/test-openapi sets it)");
    let scratch = TempDir::new("openapi");
    let mut command = Command::new(&schemathesis);
    command
        .arg("run")
        .arg(document())
        .args(["--url", &server.base_url()])
        .args(["--checks", CHECKS])
        .args(["--seed", SEED, "--max-examples", MAX_EXAMPLES])
        .args(["--header", FORWARDED_FOR])
        .args(["--request-timeout", "10", "--generation-database", "none"])
        .arg("--no-color")
        // Nothing of the run lands in the checkout.
        .current_dir(scratch.path());
    // For local runs only (e.g. --exclude-path-regex while a part of the
    // document is not served yet); scripts/test-openapi passes its
    // arguments here.
    if let Ok(extra) = env::var("STS_SCHEMATHESIS_ARGS") {
        command.args(extra.split_whitespace());
    }
    let started = Instant::now();
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("cannot run {schemathesis}: {e}"));
    println!("schemathesis took {:?}", started.elapsed());
    assert!(
        status.success(),
        "schemathesis found answers outside docs/openapi.yaml ({status}); server log:\n{}",
        server.stderr()
    );
    assert_eq!(get(server.addr(), "/health").status, 200);
}

/// `PUBLIC_URL` and `LISTEN_ADDR` of a server on a free loopback port.
fn public_url_and_listen_addr() -> (String, String) {
    let listen = format!("127.0.0.1:{}", free_port());
    (format!("http://{listen}"), listen)
}

#[test]
#[ignore = "needs schemathesis (installed by pip): run by scripts/test-openapi"]
fn schemathesis_finds_nothing_with_default_settings() {
    let _alone = heavy();
    let (public_url, listen) = public_url_and_listen_addr();
    let mock = mock_for_examples(&public_url);
    // Default settings otherwise: one app, the rate limit on, every
    // worker, /metrics on, CORS off.
    let server = ServerProc::start(&[
        ("SPOTIFY_CLIENT_ID", CLIENT_ID),
        ("SPOTIFY_CLIENT_SECRET", CLIENT_SECRET),
        ("SPOTIFY_REDIRECT_URI", REDIRECT_URI),
        ("SPOTIFY_ACCOUNTS_URL", &mock.base_url()),
        ("ENCRYPTION_SECRET", EXAMPLE_SECRET),
        ("PUBLIC_URL", &public_url),
        ("LISTEN_ADDR", &listen),
    ]);
    schemathesis_passes(&server);
    assert!(
        mock.request_count() > 0,
        "no request reached Spotify's mock"
    );
}

/// The same with what the default run cannot reach: the apps' own paths
/// (`/tv/swap`…), CORS preflights, and the token endpoints' answers behind
/// the rate limit (off here).
#[test]
#[ignore = "needs schemathesis (installed by pip): run by scripts/test-openapi"]
fn schemathesis_finds_nothing_with_several_apps_cors_and_no_rate_limit() {
    let _alone = heavy();
    let (public_url, listen) = public_url_and_listen_addr();
    let mock = mock_for_examples(&public_url);
    mock.add_client("car-client-id", "car-client-secret", "car://cb");
    let server = ServerProc::start(&[
        ("SPOTIFY_APPS", "tv,car"),
        ("SPOTIFY_APP_TV_CLIENT_ID", CLIENT_ID),
        ("SPOTIFY_APP_TV_CLIENT_SECRET", CLIENT_SECRET),
        ("SPOTIFY_APP_TV_REDIRECT_URI", REDIRECT_URI),
        (
            "SPOTIFY_APP_TV_CORS_ALLOW_ORIGINS",
            "https://app.example.com",
        ),
        ("SPOTIFY_APP_CAR_CLIENT_ID", "car-client-id"),
        ("SPOTIFY_APP_CAR_CLIENT_SECRET", "car-client-secret"),
        ("SPOTIFY_APP_CAR_REDIRECT_URI", "car://cb"),
        ("SPOTIFY_ACCOUNTS_URL", &mock.base_url()),
        ("ENCRYPTION_SECRET", EXAMPLE_SECRET),
        ("RATE_LIMIT_PER_MINUTE", "0"),
        ("PUBLIC_URL", &public_url),
        ("LISTEN_ADDR", &listen),
    ]);
    schemathesis_passes(&server);
    let tv_calls = mock
        .requests()
        .iter()
        .filter(|request| request.basic_client_id().as_deref() == Some(CLIENT_ID))
        .count();
    assert!(
        tv_calls > 0,
        "no request for the app tv reached Spotify's mock"
    );
}
