//! Redirect URIs as Spotify checks them: refused at start when Spotify
//! would refuse them (`localhost`, `http://` to anything but a loopback IP
//! literal), and a loopback URI registered without a port matching any
//! port, the client's URI going upstream unchanged.

use crate::support;

use std::process::Output;

use support::{
    CLIENT_ID, CLIENT_SECRET, assert_error, post_form, run_binary, start_mock, start_server,
};

/// The single-app variables with `redirect_uri` as the registered one.
fn vars(redirect_uri: &str) -> Vec<(&'static str, String)> {
    vec![
        ("SPOTIFY_CLIENT_ID", CLIENT_ID.into()),
        ("SPOTIFY_CLIENT_SECRET", CLIENT_SECRET.into()),
        ("SPOTIFY_REDIRECT_URI", redirect_uri.into()),
    ]
}

fn check_config(vars: &[(&'static str, String)]) -> Output {
    let borrowed: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    run_binary(&["check-config"], &borrowed)
}

/// The one line of a configuration that exits 2.
fn refused(output: &Output) -> String {
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    lines[0].to_string()
}

#[test]
fn localhost_is_refused_at_start_with_the_address_to_use() {
    let line = refused(&check_config(&vars("http://localhost:8888/callback")));
    assert_eq!(
        line,
        "configuration error: SPOTIFY_REDIRECT_URI: 'http://localhost:8888/callback': \
         Spotify refuses localhost in redirect URIs; use http://127.0.0.1:8888/callback \
         (and register that at Spotify)"
    );
    // Serving stops there too, before binding.
    let borrowed = [
        ("SPOTIFY_CLIENT_ID", CLIENT_ID),
        ("SPOTIFY_CLIENT_SECRET", CLIENT_SECRET),
        ("SPOTIFY_REDIRECT_URI", "http://LOCALHOST/cb"),
    ];
    let served = run_binary(&[], &borrowed);
    assert!(refused(&served).contains("use http://127.0.0.1/cb"));
}

#[test]
fn plain_http_to_a_host_that_is_not_loopback_is_refused_at_start() {
    let line = refused(&check_config(&vars("http://192.168.1.5/cb")));
    assert!(
        line.starts_with(
            "configuration error: SPOTIFY_REDIRECT_URI: 'http://192.168.1.5/cb': Spotify \
             accepts http:// redirect URIs only to 127.0.0.1 or [::1]"
        ),
        "{line}"
    );
    let mut list = vars("myapp://cb");
    list.push((
        "ALLOWED_REDIRECT_URIS",
        "https://ok.example/cb, http://example.com/cb, http://localhost/x".into(),
    ));
    let line = refused(&check_config(&list));
    assert!(line.starts_with("configuration error: ALLOWED_REDIRECT_URIS: "));
    assert!(line.contains("'http://example.com/cb': Spotify accepts http://"));
    assert!(line.contains("'http://localhost/x': Spotify refuses localhost"));
    assert!(!line.contains("ok.example"), "{line}");
}

#[test]
fn each_apps_redirect_uris_are_checked_the_same_way() {
    let apps = [
        ("SPOTIFY_APPS", "tv".to_string()),
        ("SPOTIFY_APP_TV_CLIENT_ID", "tv-id".into()),
        ("SPOTIFY_APP_TV_CLIENT_SECRET", "tv-secret".into()),
        (
            "SPOTIFY_APP_TV_REDIRECT_URI",
            "http://localhost:9000/cb".into(),
        ),
    ];
    let line = refused(&check_config(&apps));
    assert!(
        line.starts_with(
            "configuration error: SPOTIFY_APP_TV_REDIRECT_URI: 'http://localhost:9000/cb'"
        ),
        "{line}"
    );
}

#[test]
fn https_custom_schemes_and_loopback_literals_start() {
    for uri in [
        "https://app.example.com/callback",
        "myapp://callback",
        "http://127.0.0.1/cb",
        "http://[::1]:8080/cb",
    ] {
        let output = check_config(&vars(uri));
        assert!(output.status.success(), "{uri}: {output:?}");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.contains(uri), "{stdout}");
    }
}

#[test]
fn a_loopback_uri_without_a_port_takes_any_port_and_goes_upstream_unchanged() {
    let mock = start_mock();
    let client_uri = "http://127.0.0.1:53682/callback";
    mock.add_code("c");
    mock.allow_redirect_uri(client_uri);
    let server = start_server(
        &mock,
        &[("SPOTIFY_REDIRECT_URI", "http://127.0.0.1/callback")],
    );
    let resp = post_form(
        server.addr(),
        "/swap",
        &[("code", "c"), ("redirect_uri", client_uri)],
    );
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    assert_eq!(mock.last_field("redirect_uri").as_deref(), Some(client_uri));
}

#[test]
fn another_path_host_or_scheme_on_the_loopback_is_refused_locally() {
    let mock = start_mock();
    mock.add_code("c");
    let server = start_server(
        &mock,
        &[("SPOTIFY_REDIRECT_URI", "http://127.0.0.1/callback")],
    );
    for uri in [
        "http://127.0.0.1:53682/other",
        "http://[::1]:53682/callback",
        "http://127.0.0.2:53682/callback",
        "https://127.0.0.1:53682/callback",
        "http://127.0.0.1:99999/callback",
    ] {
        let resp = post_form(
            server.addr(),
            "/swap",
            &[("code", "c"), ("redirect_uri", uri)],
        );
        assert_error(&resp, 400, "invalid_request");
    }
    assert_eq!(mock.request_count(), 0, "Spotify was called");
}
