//! The usual arrangement: a mock Spotify for the test app and the server
//! pointed at it.

use rustls::SupportedProtocolVersion;

use super::mock::MockSpotify;
use super::pki::Pki;
use super::process::ServerProc;

/// Client id the tests configure (any value works with the mock).
pub const CLIENT_ID: &str = "test-client-id";
/// Client secret the tests configure.
pub const CLIENT_SECRET: &str = "test-client-secret-do-not-log";
/// Redirect URI the tests configure.
pub const REDIRECT_URI: &str = "myapp://callback";

/// A mock accounts service for [`CLIENT_ID`], [`CLIENT_SECRET`] and
/// [`REDIRECT_URI`].
pub fn start_mock() -> MockSpotify {
    MockSpotify::start(CLIENT_ID, CLIENT_SECRET, REDIRECT_URI)
}

/// [`start_mock`] over HTTPS, serving `<cert>.pem` of `pki` and offering
/// only `versions` (`rustls::ALL_VERSIONS`: TLS 1.2 and 1.3).
pub fn start_tls_mock(
    pki: &Pki,
    cert: &str,
    versions: &[&'static SupportedProtocolVersion],
) -> MockSpotify {
    let tls = pki.server_config(cert, versions);
    MockSpotify::start_tls(CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, tls)
}

/// The environment of a server pointed at `mock`: the test app's id, secret
/// and redirect URI, `SPOTIFY_ACCOUNTS_URL` of the mock, 4 workers. `extra`
/// comes last, so it overrides any of these (the child's environment keeps
/// the last value of a name).
pub fn server_vars(mock: &MockSpotify, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    [
        ("SPOTIFY_CLIENT_ID", CLIENT_ID),
        ("SPOTIFY_CLIENT_SECRET", CLIENT_SECRET),
        ("SPOTIFY_REDIRECT_URI", REDIRECT_URI),
        ("SPOTIFY_ACCOUNTS_URL", &mock.base_url()),
        ("WORKER_THREADS", "4"),
    ]
    .iter()
    .chain(extra)
    .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
    .collect()
}

/// Starts the server with [`server_vars`].
pub fn start_server(mock: &MockSpotify, extra: &[(&str, &str)]) -> ServerProc {
    ServerProc::start(&borrowed(&server_vars(mock, extra)))
}

/// `vars` as the borrowed pairs [`ServerProc::start`] takes.
pub fn borrowed(vars: &[(String, String)]) -> Vec<(&str, &str)> {
    vars.iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect()
}

/// A mock ([`start_mock`]) and a server pointed at it ([`start_server`]
/// with `extra`).
pub fn start_both(extra: &[(&str, &str)]) -> (MockSpotify, ServerProc) {
    let mock = start_mock();
    let server = start_server(&mock, extra);
    (mock, server)
}

/// [`start_both`], the mock holding the authorization code `code`.
pub fn start_with_code(code: &str, extra: &[(&str, &str)]) -> (MockSpotify, ServerProc) {
    let mock = start_mock();
    mock.add_code(code);
    let server = start_server(&mock, extra);
    (mock, server)
}

/// [`start_both`], the mock holding the refresh token `token`.
pub fn start_with_refresh_token(token: &str, extra: &[(&str, &str)]) -> (MockSpotify, ServerProc) {
    let mock = start_mock();
    mock.add_refresh_token(token);
    let server = start_server(&mock, extra);
    (mock, server)
}
