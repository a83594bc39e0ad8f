//! The command line and the process as an operator meets it: `--version`,
//! `--help`, `generate-secret`, `check-config`, bad configuration, secret
//! files, logs that never leak a secret or token, and a graceful `SIGTERM`.

use crate::support;

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Output;
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use support::mock::Reply;
use support::{
    CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, Resp, assert_error, post_form, post_json, request,
    run_binary, start_mock, start_server, timed, wait_for_spotify_calls, wait_until,
};

const ENCRYPTION_SECRET: &str = "encryption-secret-that-must-never-be-logged";
const PREVIOUS_SECRET: &str = "previous-encryption-secret-never-logged-x";

/// The minimal valid environment (no mock needed: nothing is called).
fn valid_vars() -> Vec<(&'static str, &'static str)> {
    vec![
        ("SPOTIFY_CLIENT_ID", CLIENT_ID),
        ("SPOTIFY_CLIENT_SECRET", CLIENT_SECRET),
        ("SPOTIFY_REDIRECT_URI", REDIRECT_URI),
    ]
}

fn with<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut vars = valid_vars();
    vars.extend_from_slice(extra);
    vars
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A file in the temporary directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> TempFile {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path =
            std::env::temp_dir().join(format!("sts-test-{}-{nanos}-{name}", std::process::id()));
        std::fs::write(&path, contents).expect("write a temporary file");
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("temporary paths are UTF-8")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Asserts a bad-configuration exit: status 2, nothing on stdout, no
/// listening line, and every stderr line a `configuration error:` line.
/// Returns those lines.
fn assert_config_failure(output: &Output) -> Vec<String> {
    assert_eq!(
        output.status.code(),
        Some(2),
        "status {}; stderr:\n{}",
        output.status,
        stderr(output)
    );
    assert_eq!(stdout(output), "", "nothing on stdout");
    let lines: Vec<String> = stderr(output).lines().map(String::from).collect();
    assert!(!lines.is_empty(), "no explanation on stderr");
    for line in &lines {
        assert!(
            line.starts_with("configuration error: "),
            "unexpected stderr line {line:?}"
        );
        assert!(!line.contains("listening"), "{line}");
    }
    lines
}

/// Like [`assert_config_failure`], with exactly one error line, naming
/// `variable`.
fn assert_one_config_error(output: &Output, variable: &str) {
    let lines = assert_config_failure(output);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains(variable), "{lines:?}");
}

#[test]
fn version_prints_the_name_and_version() {
    let output = run_binary(&["--version"], &[]);

    assert!(output.status.success(), "{}", output.status);
    assert_eq!(
        stdout(&output),
        format!("spotify-token-swap {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn help_lists_the_commands_and_required_variables() {
    let output = run_binary(&["--help"], &[]);

    assert!(output.status.success(), "{}", output.status);
    let text = stdout(&output);
    for needle in [
        "check-config",
        "generate-secret",
        "--version",
        "SPOTIFY_CLIENT_ID",
        "SPOTIFY_CLIENT_SECRET",
        "SPOTIFY_REDIRECT_URI",
    ] {
        assert!(text.contains(needle), "--help lacks {needle}:\n{text}");
    }
}

#[test]
fn unknown_argument_exits_2_with_usage() {
    let output = run_binary(&["--frobnicate"], &valid_vars());

    assert_eq!(output.status.code(), Some(2), "{}", output.status);
    assert!(stderr(&output).contains("Usage:"), "{}", stderr(&output));
}

#[test]
fn generate_secret_prints_32_random_bytes_as_base64url() {
    let first = run_binary(&["generate-secret"], &[]);
    let second = run_binary(&["generate-secret"], &[]);

    for output in [&first, &second] {
        assert!(output.status.success(), "{}", output.status);
        let text = stdout(output);
        let secret = text
            .strip_suffix('\n')
            .unwrap_or_else(|| panic!("{text:?}"));
        assert_eq!(secret.len(), 43, "{secret:?}");
        assert!(
            secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{secret:?}"
        );
        assert_eq!(URL_SAFE_NO_PAD.decode(secret).map(|b| b.len()), Ok(32));
    }
    assert_ne!(stdout(&first), stdout(&second), "the same secret twice");
}

#[test]
fn generated_secret_is_a_valid_encryption_secret() {
    let generated = stdout(&run_binary(&["generate-secret"], &[]));
    let secret = generated.trim_end();
    let mut vars = valid_vars();
    vars.push(("ENCRYPTION_SECRET", secret));

    let output = run_binary(&["check-config"], &vars);

    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn check_config_prints_the_effective_configuration() {
    let output = run_binary(
        &["check-config"],
        &with(&[
            ("SWAP_PATH", "/api/token"),
            ("REFRESH_PATH", "/api/refresh_token"),
            ("WORKER_THREADS", "4"),
            ("ENCRYPTION_SECRET", ENCRYPTION_SECRET),
        ]),
    );

    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    for line in [
        "SPOTIFY_CLIENT_ID=test-client-id",
        "SPOTIFY_REDIRECT_URI=myapp://callback",
        "token endpoint=https://accounts.spotify.com/api/token",
        "LISTEN_ADDR=127.0.0.1:8080",
        "WORKER_THREADS=4",
        "SWAP_PATH=/api/token",
        "REFRESH_PATH=/api/refresh_token",
        "UPSTREAM_TIMEOUT_SECS=10",
        "RATE_LIMIT_PER_MINUTE=60 (per client address, burst 10)",
        "configuration ok",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "no line {line:?} in:\n{text}"
        );
    }
    assert!(text.contains("encryption on"), "{text}");
}

#[test]
fn check_config_redacts_every_secret() {
    let output = run_binary(
        &["check-config"],
        &with(&[
            ("ENCRYPTION_SECRET", ENCRYPTION_SECRET),
            ("ENCRYPTION_SECRET_PREVIOUS", PREVIOUS_SECRET),
        ]),
    );

    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let all = format!("{}{}", stdout(&output), stderr(&output));
    let basic = STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
    for secret in [CLIENT_SECRET, ENCRYPTION_SECRET, PREVIOUS_SECRET, &basic] {
        assert!(!all.contains(secret), "{secret} printed:\n{all}");
    }
    assert!(
        stdout(&output)
            .lines()
            .any(|l| l == "SPOTIFY_CLIENT_SECRET=[redacted]"),
        "{all}"
    );
}

#[test]
fn check_config_with_bad_configuration_exits_2() {
    let output = run_binary(
        &["check-config"],
        &[("SPOTIFY_CLIENT_SECRET", CLIENT_SECRET)],
    );

    let lines = assert_config_failure(&output);
    assert!(
        lines.iter().any(|l| l.contains("SPOTIFY_CLIENT_ID")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("SPOTIFY_REDIRECT_URI")),
        "{lines:?}"
    );
}

#[test]
fn short_encryption_secret_exits_2_naming_the_variable_not_the_value() {
    let output = run_binary(
        &[],
        &with(&[
            ("ENCRYPTION_SECRET", "short-secret-xyzzy"),
            ("LISTEN_ADDR", "127.0.0.1:0"),
        ]),
    );

    assert_one_config_error(&output, "ENCRYPTION_SECRET");
    assert!(!stderr(&output).contains("xyzzy"), "{}", stderr(&output));
}

#[test]
fn missing_client_id_exits_2() {
    let output = run_binary(
        &[],
        &[
            ("SPOTIFY_CLIENT_SECRET", CLIENT_SECRET),
            ("SPOTIFY_REDIRECT_URI", REDIRECT_URI),
            ("LISTEN_ADDR", "127.0.0.1:0"),
        ],
    );

    assert_one_config_error(&output, "SPOTIFY_CLIENT_ID");
}

#[test]
fn bad_listen_addr_exits_2() {
    let output = run_binary(&[], &with(&[("LISTEN_ADDR", "not-an-address")]));

    assert_one_config_error(&output, "LISTEN_ADDR");
}

#[test]
fn accounts_url_that_does_not_parse_exits_2() {
    let output = run_binary(
        &[],
        &with(&[("SPOTIFY_ACCOUNTS_URL", "https://exa mple.com")]),
    );

    assert_one_config_error(&output, "SPOTIFY_ACCOUNTS_URL");
}

#[test]
fn plain_http_accounts_url_to_a_host_that_is_not_loopback_exits_2() {
    for url in [
        "http://accounts.spotify.com",
        "http://localhost:8080",
        "http://192.0.2.1:8080",
    ] {
        let output = run_binary(&[], &with(&[("SPOTIFY_ACCOUNTS_URL", url)]));
        assert_one_config_error(&output, "SPOTIFY_ACCOUNTS_URL");
    }
}

#[test]
fn bad_ranges_ipv6_prefix_and_proxy_url_exit_2_one_line_each() {
    for (variable, value) in [
        ("TRUSTED_PROXIES", "127.0.0.1,10.0.0.0/33"),
        ("TRUSTED_PROXIES", "10.0.0.1/8"),
        ("METRICS_ALLOW", "127.0.0.0/8,localhost"),
        ("CLIENT_IPV6_PREFIX", "16"),
        ("CLIENT_IPV6_PREFIX", "sixty-four"),
        ("UPSTREAM_PROXY", "socks5://proxy.example:1080"),
        (
            "UPSTREAM_PROXY",
            "http://user:hunter2@proxy.example:3128/path",
        ),
    ] {
        let output = run_binary(&[], &with(&[(variable, value)]));
        assert_one_config_error(&output, variable);
        // A proxy URL may hold a password: never echoed.
        assert!(!stderr(&output).contains("hunter2"), "{}", stderr(&output));
    }
}

#[test]
fn every_problem_is_reported_one_line_each_before_binding() {
    // Held, so a server that bound before validating would fail with "address
    // in use" (exit 1) instead of the configuration errors.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let output = run_binary(
        &[],
        &[
            ("SPOTIFY_CLIENT_SECRET", CLIENT_SECRET),
            ("SPOTIFY_REDIRECT_URI", REDIRECT_URI),
            ("ENCRYPTION_SECRET", "too-short-plugh"),
            ("WORKER_THREADS", "many"),
            ("UPSTREAM_TIMEOUT_SECS", "0"),
            ("LISTEN_ADDR", &listen),
        ],
    );

    let lines = assert_config_failure(&output);
    assert_eq!(lines.len(), 4, "{lines:?}");
    for variable in [
        "SPOTIFY_CLIENT_ID",
        "ENCRYPTION_SECRET",
        "WORKER_THREADS",
        "UPSTREAM_TIMEOUT_SECS",
    ] {
        assert_eq!(
            lines.iter().filter(|l| l.contains(variable)).count(),
            1,
            "{variable}: {lines:?}"
        );
    }
    let text = stderr(&output);
    assert!(
        !text.contains("plugh") && !text.contains(CLIENT_SECRET),
        "{text}"
    );
}

#[test]
fn secret_and_secret_file_both_set_exits_2() {
    let file = TempFile::new("both", "from-the-file\n");
    let output = run_binary(
        &["check-config"],
        &with(&[("SPOTIFY_CLIENT_SECRET_FILE", file.path())]),
    );

    assert_one_config_error(&output, "SPOTIFY_CLIENT_SECRET_FILE");
    assert!(
        !stderr(&output).contains("from-the-file"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn client_secret_file_with_trailing_newline_authenticates() {
    let mock = start_mock();
    mock.add_code("c1");
    let file = TempFile::new("client-secret", &format!("{CLIENT_SECRET}\n"));
    let server = start_server(
        &mock,
        &[
            // Empty counts as unset, so only the file supplies the secret.
            ("SPOTIFY_CLIENT_SECRET", ""),
            ("SPOTIFY_CLIENT_SECRET_FILE", file.path()),
        ],
    );

    let resp = post_form(server.addr(), "/swap", &[("code", "c1")]);

    assert_eq!(resp.status, 200, "{resp:?}");
    let expected = format!(
        "Basic {}",
        STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    assert_eq!(
        mock.last_request()
            .and_then(|r| r.header("authorization").map(String::from)),
        Some(expected)
    );
}

#[test]
fn encryption_secret_file_with_trailing_newline_is_the_same_key() {
    let mock = start_mock();
    mock.add_code("c1");
    let file = TempFile::new("encryption-secret", &format!("{ENCRYPTION_SECRET}\n"));
    let from_file = start_server(&mock, &[("ENCRYPTION_SECRET_FILE", file.path())]);
    let from_var = start_server(&mock, &[("ENCRYPTION_SECRET", ENCRYPTION_SECRET)]);
    let swapped = post_form(from_file.addr(), "/swap", &[("code", "c1")]);
    assert_eq!(swapped.status, 200, "{swapped:?}");
    let token = swapped.json()["refresh_token"].as_str().unwrap().to_owned();

    let resp = post_form(from_var.addr(), "/refresh", &[("refresh_token", &token)]);

    assert_eq!(resp.status, 200, "{resp:?}");
}

#[test]
fn start_line_names_version_address_paths_and_encryption() {
    let mock = start_mock();
    let off = start_server(&mock, &[]);
    let on = start_server(
        &mock,
        &[
            ("ENCRYPTION_SECRET", ENCRYPTION_SECRET),
            ("SWAP_PATH", "/api/token"),
        ],
    );

    let line = on
        .stderr()
        .lines()
        .find(|l| l.contains("listening on"))
        .map(String::from)
        .expect("a start line");
    assert!(
        line.contains(&format!("spotify-token-swap {}", env!("CARGO_PKG_VERSION"))),
        "{line}"
    );
    assert!(line.contains(&format!("http://{}", on.addr())), "{line}");
    assert!(
        line.contains("/api/token") && line.contains("/refresh"),
        "{line}"
    );
    assert!(line.contains("encryption=on"), "{line}");
    assert!(!line.contains(ENCRYPTION_SECRET), "{line}");
    assert!(off.stderr().contains("encryption=off"), "{}", off.stderr());
}

#[test]
fn trace_logs_never_contain_secrets_codes_or_tokens() {
    let mock = start_mock();
    mock.set_rotate_refresh_tokens(true);
    mock.add_code("code-leakcheck-swap");
    mock.add_code("code-leakcheck-json");
    let mut server = start_server(
        &mock,
        &[
            ("LOG_LEVEL", "trace"),
            ("ENCRYPTION_SECRET", ENCRYPTION_SECRET),
            ("ENCRYPTION_SECRET_PREVIOUS", PREVIOUS_SECRET),
        ],
    );
    let addr = server.addr();
    let mut seen_by_client: Vec<String> = Vec::new();
    let mut keep = |resp: &Resp| {
        for field in ["access_token", "refresh_token"] {
            if let Some(value) = resp.json()[field].as_str() {
                seen_by_client.push(value.to_owned());
            }
        }
    };

    let swapped = post_form(addr, "/swap", &[("code", "code-leakcheck-swap")]);
    assert_eq!(swapped.status, 200, "{swapped:?}");
    keep(&swapped);
    let sealed = swapped.json()["refresh_token"].as_str().unwrap().to_owned();
    let refreshed = post_form(addr, "/refresh", &[("refresh_token", &sealed)]);
    assert_eq!(refreshed.status, 200, "{refreshed:?}");
    keep(&refreshed);
    let json = post_json(addr, "/swap", r#"{"code":"code-leakcheck-json"}"#);
    assert_eq!(json.status, 200, "{json:?}");
    keep(&json);
    let bad_code = post_form(addr, "/swap", &[("code", "code-leakcheck-bad")]);
    assert_error(&bad_code, 400, "invalid_grant");
    let mut tampered = sealed.clone().into_bytes();
    let middle = tampered.len() / 2;
    tampered[middle] = if tampered[middle] == b'x' { b'y' } else { b'x' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert_error(
        &post_form(addr, "/refresh", &[("refresh_token", &tampered)]),
        400,
        "invalid_grant",
    );
    // A code in the query string is not read, and must not be logged either.
    let query = request(
        addr,
        b"POST /swap?code=code-leakcheck-query HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_error(&query, 400, "invalid_request");
    mock.push_reply(Reply::server_error(500));
    assert_error(
        &post_form(addr, "/swap", &[("code", "code-leakcheck-5xx")]),
        502,
        "server_error",
    );
    // Stop the server so every log line has been written.
    server.signal("TERM");
    assert!(
        server.wait_exit(Duration::from_secs(10)).is_some(),
        "no exit"
    );

    let logs = format!("{}\n{}", server.stderr(), server.stdout());
    let basic = STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
    let mut forbidden: Vec<String> = vec![
        CLIENT_SECRET.into(),
        ENCRYPTION_SECRET.into(),
        PREVIOUS_SECRET.into(),
        basic,
        "leakcheck".into(),
        "refresh-code".into(),
        "access-code".into(),
        "access-refreshed".into(),
        "refresh-rotated".into(),
        sealed,
        tampered,
    ];
    forbidden.extend(seen_by_client);
    for needle in &forbidden {
        assert!(
            !logs.contains(needle.as_str()),
            "the logs contain {needle:?}:\n{logs}"
        );
    }
    // The logs are not simply empty: the start line and request lines exist.
    let start = logs
        .lines()
        .find(|l| l.contains("listening on"))
        .unwrap_or_else(|| panic!("no start line:\n{logs}"));
    assert!(start.contains("encryption=on"), "{start}");
    assert!(logs.contains("POST /swap 200"), "{logs}");
    assert!(logs.contains("POST /refresh 400"), "{logs}");
}

#[test]
fn sigterm_finishes_requests_in_flight_refuses_new_ones_and_exits_0() {
    let _timed = timed();
    const BODY: &str =
        r#"{"access_token":"at","token_type":"Bearer","expires_in":3600,"scope":"s"}"#;
    let mock = start_mock();
    mock.set_default_reply(Some(Reply::delayed(
        Duration::from_millis(1500),
        Reply::json(200, BODY),
    )));
    let mut server = start_server(&mock, &[]);
    let addr = server.addr();
    let in_flight: Vec<_> = (0..3)
        .map(|i| thread::spawn(move || post_form(addr, "/swap", &[("code", &format!("c{i}"))])))
        .collect();
    wait_for_spotify_calls(&mock, 3, Duration::from_secs(5));

    server.signal("TERM");
    let signalled = Instant::now();
    assert!(
        in_flight.iter().all(|h| !h.is_finished()),
        "the requests were not in flight at SIGTERM"
    );
    assert!(
        server.wait_for_stderr("shutting down", Duration::from_secs(2)),
        "{}",
        server.stderr()
    );
    // New connections are refused soon after (a probe that still gets in
    // is closed at once, so it cannot hold up the drain).
    wait_until(Duration::from_secs(1), "refusing after SIGTERM", || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err()
    });

    for handle in in_flight {
        let resp = handle.join().expect("client thread");
        assert_eq!(resp.status, 200, "{resp:?}");
        assert_eq!(
            resp.json(),
            serde_json::from_str::<serde_json::Value>(BODY).unwrap()
        );
    }
    let status = server
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("still running 5 s after the last response"));
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "{:?}",
        signalled.elapsed()
    );
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err(),
        "accepting after exit"
    );
}

#[test]
fn sigint_exits_0() {
    let mock = start_mock();
    let mut server = start_server(&mock, &[]);

    server.signal("INT");

    let status = server.wait_exit(Duration::from_secs(5));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{status:?}");
}

#[test]
fn silent_fresh_connection_does_not_hold_up_shutdown() {
    let _timed = timed();
    let mock = start_mock();
    let mut server = start_server(&mock, &[]);
    // A preconnect that never sends a byte holds a worker.
    let _silent = std::net::TcpStream::connect(server.addr()).unwrap();
    std::thread::sleep(Duration::from_millis(200));

    let started = std::time::Instant::now();
    server.signal("TERM");
    let status = server.wait_exit(Duration::from_secs(5));

    assert_eq!(status.and_then(|s| s.code()), Some(0), "{status:?}");
    // The grace for a silent fresh connection is 1 s (plus one poll slice);
    // without it the process would wait out the 10 s head deadline.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "exit took {:?}",
        started.elapsed()
    );
}

#[test]
fn sighup_keeps_serving() {
    let _timed = timed();
    let mock = start_mock();
    let server = start_server(&mock, &[]);

    server.signal("HUP");

    assert!(
        server.wait_for_stderr("SIGHUP", Duration::from_secs(2)),
        "{}",
        server.stderr()
    );
    support::assert_still_serving(server.addr());
}
