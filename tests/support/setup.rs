//! The usual arrangement: a mock Spotify for the test app and the server
//! pointed at it.

use super::mock::MockSpotify;
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
    let vars = server_vars(mock, extra);
    let borrowed: Vec<(&str, &str)> = vars.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    ServerProc::start(&borrowed)
}
