//! Built-in HTTPS (`TLS_CERT_FILE`, `TLS_KEY_FILE`) over real sockets:
//! curl, ureq and a raw rustls client against the real binary, with
//! throwaway certificates made by the `openssl` command line in a temporary
//! directory ([`support::pki`]) — a CA, a server certificate for IP
//! 127.0.0.1, an expired one, a key that belongs to nothing, and a second CA
//! for renewals.
//!
//! Covered: HTTPS on the start line, `/health` and `/swap`, TLS 1.2 and 1.3,
//! ALPN `http/1.1`, the first answer to a new client (no wait for a
//! delayed ACK), bad certificate or key files (exit 2, no key material), an
//! expired certificate, plain HTTP on the HTTPS port, stalled handshakes,
//! and `SIGHUP` certificate reloads (new connections get the new
//! certificate, established ones keep working, a broken file keeps the old
//! one, no request fails during the swap).

use crate::support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;
use support::conns::{
    TlsClient, client_hello, read_until_close, tls_client, tls_client_config,
    tls_client_config_trusting, tls_connect, tls_exchange, tls_read_response,
};
use support::mock::MockSpotify;
use support::pki::Pki;
use support::{
    CLIENT_ID, CLIENT_SECRET, Conn, REDIRECT_URI, ServerProc, assert_error, get, heavy, request,
    run_binary, start_mock, start_server, timed,
};

/// Longest a single curl run may take before it is killed (`--max-time`).
const CURL_MAX_SECS: &str = "20";
/// What a client stalled in the handshake may hold a worker for
/// (`tls::HANDSHAKE_TIMEOUT`).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Server environment for HTTPS with `cert` and `key` (paths).
fn tls_vars<'a>(cert: &'a str, key: &'a str) -> [(&'a str, &'a str); 2] {
    [("TLS_CERT_FILE", cert), ("TLS_KEY_FILE", key)]
}

/// The server with [`support::server_vars`] plus HTTPS and `extra`.
fn start_https(mock: &MockSpotify, cert: &str, key: &str, extra: &[(&str, &str)]) -> ServerProc {
    let mut vars = tls_vars(cert, key).to_vec();
    vars.extend_from_slice(extra);
    let server = start_server(mock, &vars);
    assert!(
        server.base_url().starts_with("https://"),
        "start line does not say https://:\n{}",
        server.stderr()
    );
    server
}

/// A fresh [`Pki`], a mock and the server serving HTTPS with its
/// `server.pem` and `extra`.
fn serving_https(extra: &[(&str, &str)]) -> (Pki, MockSpotify, ServerProc) {
    let pki = Pki::new();
    let mock = start_mock();
    let server = start_https(
        &mock,
        &pki.path("server.pem"),
        &pki.path("server.key"),
        extra,
    );
    (pki, mock, server)
}

/// The minimal valid environment plus `extra`, for one-shot runs.
fn base_vars<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut vars = vec![
        ("SPOTIFY_CLIENT_ID", CLIENT_ID),
        ("SPOTIFY_CLIENT_SECRET", CLIENT_SECRET),
        ("SPOTIFY_REDIRECT_URI", REDIRECT_URI),
        ("LISTEN_ADDR", "127.0.0.1:0"),
    ];
    vars.extend_from_slice(extra);
    vars
}

/// Runs the binary once with `args` and [`base_vars`] plus HTTPS with
/// `cert` and `key`.
fn run_with_tls(args: &[&str], cert: &str, key: &str) -> Output {
    run_binary(args, &base_vars(&tls_vars(cert, key)))
}

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

/// Runs curl (no config file, no proxy, bounded) with `args`.
fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["-q", "-sS", "--noproxy", "*", "--max-time", CURL_MAX_SECS])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run curl (is it installed?): {e}"))
}

/// What a curl run that must succeed printed, with `-w` appending
/// `\n<status> <http version>`.
struct CurlResult {
    body: String,
    status: u16,
    http_version: String,
    verbose: String,
}

/// curl `-v` with `args` against `url`, which must succeed.
fn curl_ok(args: &[&str], url: &str) -> CurlResult {
    let mut all = vec!["-v", "-w", "\n%{http_code} %{http_version}"];
    all.extend_from_slice(args);
    all.push(url);
    let out = curl(&all);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let verbose = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "curl {all:?} failed ({}):\n{verbose}\n{stdout}",
        out.status
    );
    let (body, trailer) = stdout
        .rsplit_once('\n')
        .unwrap_or_else(|| panic!("no -w trailer in {stdout:?}"));
    let (status, http_version) = trailer
        .split_once(' ')
        .unwrap_or_else(|| panic!("bad -w trailer {trailer:?}"));
    CurlResult {
        body: body.to_owned(),
        status: status.parse().unwrap_or(0),
        http_version: http_version.to_owned(),
        verbose,
    }
}

/// `curl --cacert <ca> <args> https://ADDR/health`, which must succeed.
fn curl_health(server: &ServerProc, ca: &str, args: &[&str]) -> CurlResult {
    let mut all = vec!["--cacert", ca];
    all.extend_from_slice(args);
    curl_ok(&all, &format!("{}/health", server.base_url()))
}

/// `curl --cacert <ca> https://ADDR/health` must answer 200 `{"status":"ok"}`.
fn assert_health_with_ca(server: &ServerProc, ca: &str) {
    let result = curl_health(server, ca, &[]);
    assert_eq!(result.status, 200, "{}", result.verbose);
    assert_eq!(result.body, r#"{"status":"ok"}"#);
}

/// curl's exit code for `GET /health` trusting only `ca`.
fn curl_health_exit_code(server: &ServerProc, ca: &str) -> (Option<i32>, String) {
    let out = curl(&["--cacert", ca, &format!("{}/health", server.base_url())]);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// curl exit code 60: the peer's certificate could not be verified.
const CURL_PEER_FAILED_VERIFICATION: i32 = 60;

/// Sends `GET path` on `tls` and reads the response: (status, body).
fn tls_get(tls: &mut TlsClient, path: &str, keep_alive: bool) -> Result<(u16, String), String> {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let raw = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: {connection}\r\n\r\n");
    tls_exchange(tls, raw.as_bytes()).map(|resp| (resp.status, resp.body))
}

/// The certificate the server presented on `tls`.
fn served_cert(tls: &TlsClient) -> CertificateDer<'static> {
    tls.conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .expect("the server presented a certificate")
        .clone()
        .into_owned()
}

/// Asserts `text` holds no line of the PEM body of `key_pem`, nor a PEM
/// key header.
fn assert_no_key_material(text: &str, key_pem: &[u8]) {
    assert!(!text.contains("PRIVATE KEY"), "key PEM header in:\n{text}");
    for line in String::from_utf8_lossy(key_pem).lines() {
        if line.len() >= 16 && !line.starts_with("-----") {
            assert!(!text.contains(line), "key material {line:?} in:\n{text}");
        }
    }
}

/// Asserts a bad-configuration exit: status 2, no listening line, and a
/// `configuration error: <variable>` line mentioning `path`.
fn assert_exit_2_naming(output: &Output, variable: &str, path: &str) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(2), "{}\n{stderr}", output.status);
    assert!(!stderr.contains("listening"), "{stderr}");
    assert!(
        stderr.lines().any(|l| {
            l.starts_with(&format!("configuration error: {variable}")) && l.contains(path)
        }),
        "no line naming {variable} and {path}:\n{stderr}"
    );
    stderr
}

// ---------------------------------------------------------------------------
// Serving
// ---------------------------------------------------------------------------

#[test]
fn curl_trusting_the_ca_gets_health_over_https() {
    let (pki, _mock, server) = serving_https(&[]);

    assert_health_with_ca(&server, &pki.path("ca.pem"));
    assert!(
        server
            .stderr()
            .contains(&format!("listening on https://{}", server.addr())),
        "{}",
        server.stderr()
    );
}

#[test]
fn swap_over_https_reaches_spotify_and_returns_the_tokens() {
    let (pki, mock, server) = serving_https(&[]);
    mock.add_code("https-code");

    let result = curl_ok(
        &["--cacert", &pki.path("ca.pem"), "-d", "code=https-code"],
        &format!("{}/swap", server.base_url()),
    );

    assert_eq!(result.status, 200, "{}\n{}", result.verbose, result.body);
    let body: serde_json::Value = serde_json::from_str(&result.body).expect("JSON body");
    assert_eq!(body["access_token"], "access-https-code");
    assert_eq!(body["refresh_token"], "refresh-https-code");
    let upstream = mock.last_request().expect("the mock was called");
    assert_eq!(upstream.field("code"), Some("https-code"));
}

#[test]
fn tls_1_2_is_served_to_a_client_capped_at_1_2() {
    let (pki, _mock, server) = serving_https(&[]);

    let result = curl_health(
        &server,
        &pki.path("ca.pem"),
        &["--tlsv1.2", "--tls-max", "1.2"],
    );

    assert_eq!(result.status, 200);
    assert!(
        result.verbose.contains("SSL connection using TLSv1.2"),
        "{}",
        result.verbose
    );
}

#[test]
fn tls_1_3_is_served_to_a_client_requiring_1_3() {
    let (pki, _mock, server) = serving_https(&[]);

    let result = curl_health(&server, &pki.path("ca.pem"), &["--tlsv1.3"]);

    assert_eq!(result.status, 200);
    assert!(
        result.verbose.contains("SSL connection using TLSv1.3"),
        "{}",
        result.verbose
    );
}

#[test]
fn alpn_settles_on_http_1_1_when_the_client_offers_h2() {
    let (pki, _mock, server) = serving_https(&[]);

    let result = curl_health(&server, &pki.path("ca.pem"), &["--http2"]);

    assert_eq!(result.status, 200);
    assert_eq!(result.http_version, "1.1", "{}", result.verbose);
    assert_eq!(result.body, r#"{"status":"ok"}"#);
}

/// `Expect: 100-continue` over HTTPS: the 100 comes before the body is
/// sent, Spotify is not called until the body comes, then the answer.
#[test]
fn expect_continue_over_https_gets_100_before_the_body() {
    let (pki, mock, server) = serving_https(&[]);
    mock.add_code("continue-code");
    let body = "code=continue-code";
    let head = format!(
        "POST /swap HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Content-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    let mut tls = tls_connect(server.addr(), &tls_client_config(&pki)).expect("handshake");
    tls.write_all(head.as_bytes())
        .and_then(|()| tls.flush())
        .expect("send the head");

    let mut interim = Vec::new();
    let mut byte = [0u8; 1];
    while !interim.ends_with(b"\r\n\r\n") && interim.len() < 1024 {
        let n = tls
            .read(&mut byte)
            .expect("an interim answer before the body");
        assert_eq!(n, 1, "closed after {:?}", String::from_utf8_lossy(&interim));
        interim.push(byte[0]);
    }
    assert_eq!(
        String::from_utf8_lossy(&interim),
        "HTTP/1.1 100 Continue\r\n\r\n"
    );
    assert_eq!(mock.request_count(), 0, "Spotify called before the body");
    let resp = tls_exchange(&mut tls, body.as_bytes()).expect("the answer");
    assert_eq!(resp.status, 200, "{resp:?}");
    let json: serde_json::Value = serde_json::from_str(&resp.body).expect("JSON body");
    assert_eq!(json["access_token"], "access-continue-code");
}

#[test]
fn ureq_client_trusting_the_ca_can_swap() {
    let (pki, mock, server) = serving_https(&[]);
    mock.add_code("ureq-code");
    let ca = ureq::tls::Certificate::from_pem(&pki.read("ca.pem")).expect("CA PEM");
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::new_with_certs(&[ca]))
        .build();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(tls)
        .proxy(None)
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();

    let mut resp = agent
        .post(format!("{}/swap", server.base_url()))
        .content_type("application/x-www-form-urlencoded")
        .send("code=ureq-code")
        .expect("the HTTPS request succeeds");

    assert_eq!(resp.status().as_u16(), 200);
    let text = resp.body_mut().read_to_string().expect("a body");
    let body: serde_json::Value = serde_json::from_str(&text).expect("JSON body");
    assert_eq!(body["access_token"], "access-ureq-code");
    assert_eq!(body["token_type"], "Bearer");
}

// ---------------------------------------------------------------------------
// First answer on a new connection
// ---------------------------------------------------------------------------

/// New connections opened one after another by
/// [`new_clients_get_their_first_answer_without_a_delayed_ack`].
const NEW_CLIENTS: usize = 20;
/// How many of them must have their answer within [`FIRST_ANSWER_BOUND`]:
/// most, so a slow one on a busy machine is not a failure.
const NEW_CLIENTS_IN_BOUND: usize = 16;
/// Well under the 40 ms a client's delayed ACK costs an answer held back
/// by Nagle's algorithm behind the session tickets; a handshake and one
/// `GET /health` take a few milliseconds here, even in a debug build.
const FIRST_ANSWER_BOUND: Duration = Duration::from_millis(20);

/// One new HTTPS connection asking `GET /health` with its request right
/// behind its Finished, as asyncio's client sends it (two sends,
/// microseconds apart): `TCP_NODELAY`, and the request handed to rustls
/// before the handshake is over, so it leaves in the same write as the
/// Finished. The answer's status, and the time from connect to its last
/// byte.
fn health_behind_the_finished(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
) -> (Result<u16, String>, Duration) {
    let started = Instant::now();
    let outcome = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .and_then(|sock| {
            sock.set_nodelay(true)?;
            sock.set_read_timeout(Some(Duration::from_secs(5)))?;
            Ok(sock)
        })
        .map_err(|e| format!("connect: {e}"))
        .and_then(|sock| {
            let mut conn = tls_client(config, addr);
            // Buffered by rustls until the handshake is done, then sent
            // with the Finished.
            conn.writer()
                .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                .map_err(|e| format!("request into rustls: {e}"))?;
            let mut tls = rustls::StreamOwned::new(conn, sock);
            tls_read_response(&mut tls)
        })
        .map(|resp| resp.status);
    (outcome, started.elapsed())
}

/// A new client whose request rides with its Finished gets its answer at
/// once, not ~40 ms later: the answer leaves with the session tickets in
/// one write, on a socket with `TCP_NODELAY`, so it never waits for the
/// client to ACK the tickets.
#[test]
fn new_clients_get_their_first_answer_without_a_delayed_ack() {
    let _timed = timed();
    let (pki, _mock, server) = serving_https(&[]);
    let config = tls_client_config(&pki);
    // The first handshake warms the server (certificate, key, workers).
    let (warm, _) = health_behind_the_finished(server.addr(), &config);
    assert_eq!(warm, Ok(200));

    let mut took = Vec::with_capacity(NEW_CLIENTS);
    for _ in 0..NEW_CLIENTS {
        let (status, elapsed) = health_behind_the_finished(server.addr(), &config);
        assert_eq!(status, Ok(200));
        took.push(elapsed);
    }

    let in_bound = took.iter().filter(|t| **t < FIRST_ANSWER_BOUND).count();
    assert!(
        in_bound >= NEW_CLIENTS_IN_BOUND,
        "{in_bound} of {NEW_CLIENTS} new clients had their answer within \
         {FIRST_ANSWER_BOUND:?} (wanted {NEW_CLIENTS_IN_BOUND}): {took:?}"
    );
}

// ---------------------------------------------------------------------------
// Bad files: exit 2 before binding, naming the variable, never the key
// ---------------------------------------------------------------------------

#[test]
fn key_that_does_not_match_the_certificate_exits_2_without_key_material() {
    let pki = Pki::new();
    pki.make_key_and_request("stranger", "stranger");
    let (cert, key) = (pki.path("server.pem"), pki.path("stranger.key"));

    let out = run_with_tls(&[], &cert, &key);

    let stderr = assert_exit_2_naming(&out, "TLS_KEY_FILE", &key);
    assert!(stderr.contains("does not belong"), "{stderr}");
    assert_no_key_material(&stderr, &pki.read("stranger.key"));
    assert_no_key_material(&stderr, &pki.read("server.key"));
}

#[test]
fn missing_certificate_file_exits_2_naming_tls_cert_file() {
    let pki = Pki::new();
    let (cert, key) = (pki.path("nonexistent.pem"), pki.path("server.key"));

    let out = run_with_tls(&[], &cert, &key);

    assert_exit_2_naming(&out, "TLS_CERT_FILE", &cert);
}

#[test]
fn garbage_certificate_file_exits_2_naming_tls_cert_file() {
    let pki = Pki::new();
    let cert = pki.dir.write("garbage.pem", "this is not a certificate\n");
    let key = pki.path("server.key");

    let out = run_with_tls(&[], &cert, &key);

    assert_exit_2_naming(&out, "TLS_CERT_FILE", &cert);
}

/// `check-config` loads the certificate as the server would at start.
#[test]
fn check_config_with_a_mismatched_key_exits_2_naming_tls_key_file() {
    let pki = Pki::new();
    pki.make_key_and_request("stranger", "stranger");
    let (cert, key) = (pki.path("server.pem"), pki.path("stranger.key"));

    let out = run_with_tls(&["check-config"], &cert, &key);

    let stderr = assert_exit_2_naming(&out, "TLS_KEY_FILE", &key);
    assert!(stderr.contains("does not belong"), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "", "{stderr}");
    assert_no_key_material(&stderr, &pki.read("stranger.key"));
}

#[test]
fn missing_key_file_exits_2_naming_tls_key_file() {
    let pki = Pki::new();
    let (cert, key) = (pki.path("server.pem"), pki.path("nonexistent.key"));

    let out = run_with_tls(&[], &cert, &key);

    assert_exit_2_naming(&out, "TLS_KEY_FILE", &key);
}

#[test]
fn key_file_holding_a_certificate_exits_2_naming_tls_key_file() {
    let pki = Pki::new();
    // A classic mix-up: the certificate given as the key.
    let (cert, key) = (pki.path("server.pem"), pki.path("server.pem"));

    let out = run_with_tls(&[], &cert, &key);

    let stderr = assert_exit_2_naming(&out, "TLS_KEY_FILE", &key);
    assert_no_key_material(&stderr, &pki.read("server.key"));
}

#[test]
fn certificate_without_key_exits_2() {
    let pki = Pki::new();
    let cert = pki.path("server.pem");

    let out = run_binary(&[], &base_vars(&[("TLS_CERT_FILE", &cert)]));

    assert_eq!(out.status.code(), Some(2), "{}", out.status);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("configuration error: TLS_CERT_FILE and TLS_KEY_FILE must be set together"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------
// Clients that get it wrong
// ---------------------------------------------------------------------------

/// The server does not refuse an expired certificate: it starts and serves
/// it (as nginx and Caddy do), so a failed renewal degrades to clients'
/// verification errors rather than a service that will not start, and a
/// later renewal plus `SIGHUP` fixes it without a restart. Verifying
/// clients refuse it; the server carries on.
#[test]
fn expired_certificate_is_served_and_refused_by_verifying_clients() {
    let pki = Pki::new();
    pki.make_expired_cert("ca", "expired");
    let mock = start_mock();
    let server = start_https(
        &mock,
        &pki.path("expired.pem"),
        &pki.path("expired.key"),
        &[],
    );

    let (code, stderr) = curl_health_exit_code(&server, &pki.path("ca.pem"));

    assert_eq!(code, Some(CURL_PEER_FAILED_VERIFICATION), "{stderr}");
    assert!(stderr.contains("expired"), "{stderr}");
    // The failed handshake did not hurt the server: a client that does not
    // check dates is still served.
    let result = curl_ok(&["--insecure"], &format!("{}/health", server.base_url()));
    assert_eq!(result.status, 200);
    assert_eq!(result.body, r#"{"status":"ok"}"#);
}

#[test]
fn plain_http_on_the_https_port_gets_a_json_400_and_serving_goes_on() {
    let (pki, _mock, server) = serving_https(&[]);

    let resp = get(server.addr(), "/health");

    assert_error(&resp, 400, "invalid_request");
    assert!(
        resp.json()["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("https://")),
        "{resp:?}"
    );
    assert_eq!(resp.header("connection"), Some("close"), "{resp:?}");
    assert_health_with_ca(&server, &pki.path("ca.pem"));
}

#[test]
fn plain_http_post_on_the_https_port_gets_a_json_400() {
    let (_pki, mock, server) = serving_https(&[]);

    let resp = request(
        server.addr(),
        b"POST /swap HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
          Content-Length: 6\r\n\r\ncode=x",
    );

    assert_error(&resp, 400, "invalid_request");
    assert_eq!(
        mock.request_count(),
        0,
        "a plain-HTTP request reached Spotify"
    );
}

// ---------------------------------------------------------------------------
// Stalled handshakes
// ---------------------------------------------------------------------------

/// With every worker held by a connection that has sent nothing, a real
/// client is still served promptly: silent connections are given up when
/// others wait (as on plain HTTP), not held for the whole handshake
/// deadline.
#[test]
fn silent_connections_do_not_block_other_clients() {
    let _timed = timed();
    let (pki, _mock, server) = serving_https(&[("WORKER_THREADS", "2")]);
    // More silent connections than workers.
    let mut silent: Vec<Conn> = (0..4).map(|_| Conn::open(server.addr())).collect();
    thread::sleep(Duration::from_millis(300));

    let started = Instant::now();
    assert_health_with_ca(&server, &pki.path("ca.pem"));
    let took = started.elapsed();

    assert!(
        took < Duration::from_secs(5),
        "a client waited {took:?} behind silent connections (handshake deadline {HANDSHAKE_TIMEOUT:?})"
    );
    // They held no worker, so none had to be given up to make room: each
    // waits for its handshake deadline.
    for conn in &mut silent {
        assert!(
            !conn.is_closed_by_peer(Duration::from_millis(500)),
            "a silent connection was closed before its handshake deadline"
        );
    }
}

/// A client that sends half a ClientHello and stops holds one worker until
/// the handshake deadline, then is dropped; the other worker serves
/// everyone else meanwhile.
#[test]
fn half_a_client_hello_is_dropped_at_the_handshake_deadline() {
    let _timed = timed();
    let (pki, _mock, server) = serving_https(&[("WORKER_THREADS", "2")]);
    let hello = client_hello(&tls_client_config(&pki), server.addr());
    assert!(hello.len() > 100, "ClientHello of {} bytes", hello.len());
    let mut stalled = TcpStream::connect(server.addr()).expect("connect");
    let connected = Instant::now();
    stalled
        .write_all(&hello[..hello.len() / 2])
        .expect("send half a ClientHello");
    thread::sleep(Duration::from_millis(300));

    for _ in 0..3 {
        let started = Instant::now();
        assert_health_with_ca(&server, &pki.path("ca.pem"));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a client waited {:?} behind one stalled handshake",
            started.elapsed()
        );
    }
    let (_, was_closed) =
        read_until_close(&mut stalled, HANDSHAKE_TIMEOUT + Duration::from_secs(5));
    let closed = connected.elapsed();

    assert!(
        was_closed,
        "the stalled handshake was still open {closed:?} after connecting"
    );
    assert!(
        closed >= HANDSHAKE_TIMEOUT - Duration::from_secs(1),
        "dropped after {closed:?}, before the handshake deadline"
    );
    assert_health_with_ca(&server, &pki.path("ca.pem"));
}

#[test]
fn silent_connection_does_not_hold_up_shutdown() {
    let _timed = timed();
    let (_pki, _mock, mut server) = serving_https(&[]);
    let _silent = Conn::open(server.addr());
    thread::sleep(Duration::from_millis(300));

    let started = Instant::now();
    server.signal("TERM");
    let status = server.wait_exit(Duration::from_secs(12));

    assert_eq!(status.and_then(|s| s.code()), Some(0), "{status:?}");
    // A fresh connection that has said nothing gets 1 s of grace at
    // shutdown, as on plain HTTP; not the 10 s handshake deadline.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "exit took {:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------
// SIGHUP: certificate renewal
// ---------------------------------------------------------------------------

/// A PKI with a second CA and a certificate from it (`ca2`, `server2`),
/// and the live pair `live.pem`/`live.key` holding the first one.
fn renewal_pki() -> Pki {
    let pki = Pki::new();
    pki.make_ca("ca2");
    pki.make_server_cert("ca2", "server2");
    pki.dir.write("live.pem", pki.read("server.pem"));
    pki.dir.write("live.key", pki.read("server.key"));
    pki
}

/// A [`renewal_pki`], a mock and the server serving HTTPS with the live
/// pair.
fn serving_renewable() -> (Pki, MockSpotify, ServerProc) {
    let pki = renewal_pki();
    let mock = start_mock();
    let server = start_https(&mock, &pki.path("live.pem"), &pki.path("live.key"), &[]);
    (pki, mock, server)
}

/// Installs `<name>.pem`/`<name>.key` as the live pair (certificate first,
/// as a renewal does) and sends `SIGHUP`.
fn renew_to(pki: &Pki, server: &ServerProc, name: &str) {
    pki.dir.write("live.pem", pki.read(&format!("{name}.pem")));
    pki.dir.write("live.key", pki.read(&format!("{name}.key")));
    server.signal("HUP");
}

/// Waits for the reload's log line.
fn assert_reloaded(server: &ServerProc) {
    assert_logs(server, "SIGHUP: TLS certificate reloaded");
}

/// Waits up to 5 s for a stderr line of `server` containing `needle`.
fn assert_logs(server: &ServerProc, needle: &str) {
    assert!(
        server.wait_for_stderr(needle, Duration::from_secs(5)),
        "{}",
        server.stderr()
    );
}

#[test]
fn sighup_serves_the_new_certificate_to_new_connections() {
    let (pki, _mock, server) = serving_renewable();
    assert_health_with_ca(&server, &pki.path("ca.pem"));
    let (before, _) = curl_health_exit_code(&server, &pki.path("ca2.pem"));
    assert_eq!(before, Some(CURL_PEER_FAILED_VERIFICATION));

    renew_to(&pki, &server, "server2");
    assert_reloaded(&server);

    assert_health_with_ca(&server, &pki.path("ca2.pem"));
    let (old_ca, stderr) = curl_health_exit_code(&server, &pki.path("ca.pem"));
    assert_eq!(old_ca, Some(CURL_PEER_FAILED_VERIFICATION), "{stderr}");
}

#[test]
fn sighup_leaves_established_keep_alive_connections_working() {
    let (pki, _mock, server) = serving_renewable();
    let mut established = tls_connect(
        server.addr(),
        &tls_client_config_trusting(&pki, &["ca.pem"]),
    )
    .expect("TLS connection");
    assert_eq!(
        tls_get(&mut established, "/health", true),
        Ok((200, r#"{"status":"ok"}"#.to_owned()))
    );

    renew_to(&pki, &server, "server2");
    assert_reloaded(&server);

    assert_eq!(
        tls_get(&mut established, "/health", true),
        Ok((200, r#"{"status":"ok"}"#.to_owned())),
        "the established connection broke on reload"
    );
    assert_eq!(served_cert(&established), pki.der("server.pem"));
    let fresh = tls_connect(
        server.addr(),
        &tls_client_config_trusting(&pki, &["ca2.pem"]),
    )
    .expect("a new connection trusts the new CA");
    assert_eq!(served_cert(&fresh), pki.der("server2.pem"));
}

#[test]
fn sighup_with_a_broken_certificate_file_keeps_the_current_certificate() {
    let (pki, _mock, server) = serving_renewable();

    pki.dir
        .write("live.pem", "-----BEGIN CERTIFICATE-----\nbroken\n");
    server.signal("HUP");

    assert_logs(&server, "keeping the current certificate");
    let line = server
        .stderr()
        .lines()
        .find(|l| l.contains("keeping the current certificate"))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(line.starts_with("[ERROR]"), "{line}");
    assert!(line.contains("TLS_CERT_FILE"), "{line}");
    assert_health_with_ca(&server, &pki.path("ca.pem"));
    assert_no_key_material(&server.stderr(), &pki.read("server.key"));
}

/// A broken certificate must not block rotating the secrets on the same
/// SIGHUP, and is reported once.
#[test]
fn sighup_with_a_broken_certificate_still_reloads_the_secrets() {
    let pki = renewal_pki();
    let mock = start_mock();
    pki.dir
        .write("enc", "first-encryption-secret-0123456789abcdef\n");
    let enc = pki.path("enc");
    let server = start_https(
        &mock,
        &pki.path("live.pem"),
        &pki.path("live.key"),
        &[("ENCRYPTION_SECRET_FILE", enc.as_str())],
    );

    pki.dir
        .write("live.pem", "-----BEGIN CERTIFICATE-----\nbroken\n");
    pki.dir
        .write("enc", "second-encryption-secret-0123456789abcdef\n");
    server.signal("HUP");

    assert_logs(&server, "SIGHUP: reloaded ENCRYPTION_SECRET");
    assert_logs(&server, "keeping the current certificate");
    let stderr = server.stderr();
    assert_eq!(
        stderr.matches("TLS_CERT_FILE").count(),
        1,
        "the certificate problem is reported once:\n{stderr}"
    );
    assert!(!stderr.contains("secrets not reloaded"), "{stderr}");
    assert!(!stderr.contains("encryption-secret-0123"), "{stderr}");
    assert_health_with_ca(&server, &pki.path("ca.pem"));
}

/// A renewal caught half-way (new certificate, old key) must not take the
/// server down or serve a certificate it cannot sign for.
#[test]
fn sighup_with_a_mismatched_pair_keeps_the_current_certificate() {
    let (pki, _mock, server) = serving_renewable();

    pki.dir.write("live.pem", pki.read("server2.pem"));
    server.signal("HUP");

    assert_logs(&server, "keeping the current certificate");
    assert!(
        server.stderr().contains("does not belong"),
        "{}",
        server.stderr()
    );
    assert_health_with_ca(&server, &pki.path("ca.pem"));
    assert_no_key_material(&server.stderr(), &pki.read("server.key"));
}

/// New connections made continuously while the certificate is swapped all
/// succeed (the client trusts both CAs), and the swap is seen mid-stream.
#[test]
fn reload_under_load_fails_no_request() {
    let _heavy = heavy();
    let (pki, _mock, server) = serving_renewable();
    let config = tls_client_config_trusting(&pki, &["ca.pem", "ca2.pem"]);
    let new_cert = pki.der("server2.pem");
    let stop = Arc::new(AtomicBool::new(false));
    // (certificate seen, or the error) per request, in order.
    let log: Arc<Mutex<Vec<Result<bool, String>>>> = Arc::new(Mutex::new(Vec::new()));
    let addr = server.addr();
    let load = {
        let (stop, log, new_cert) = (Arc::clone(&stop), Arc::clone(&log), new_cert.clone());
        thread::spawn(move || {
            // Bounded: the test stops it within seconds; 5000 is far beyond.
            for _ in 0..5000 {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let outcome = tls_connect(addr, &config).and_then(|mut tls| {
                    let got = tls_get(&mut tls, "/health", false)?;
                    if got != (200, r#"{"status":"ok"}"#.to_owned()) {
                        return Err(format!("unexpected answer {got:?}"));
                    }
                    Ok(served_cert(&tls) == new_cert)
                });
                log.lock().expect("log").push(outcome);
            }
        })
    };
    let count = |new: bool| {
        log.lock()
            .expect("log")
            .iter()
            .filter(|o| o.as_ref().is_ok_and(|n| *n == new))
            .count()
    };
    let last_outcomes = || {
        let log = log.lock().expect("log");
        log.iter().rev().take(5).cloned().collect::<Vec<_>>()
    };
    let wait_for = |new: bool, n: usize| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while count(new) < n && Instant::now() < deadline && !load.is_finished() {
            thread::sleep(Duration::from_millis(20));
        }
        count(new) >= n
    };

    assert!(
        wait_for(false, 10),
        "no load before the reload: {:?}",
        last_outcomes()
    );
    renew_to(&pki, &server, "server2");
    assert_reloaded(&server);
    assert!(
        wait_for(true, 10),
        "the new certificate never showed; last outcomes: {:?}",
        last_outcomes()
    );
    stop.store(true, Ordering::SeqCst);
    load.join().expect("load thread");

    let log = log.lock().expect("log");
    let failures: Vec<&String> = log.iter().filter_map(|o| o.as_ref().err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} failed: {failures:?}",
        failures.len(),
        log.len()
    );
    // Once the new certificate was served, the old one never came back.
    let first_new = log
        .iter()
        .position(|o| o == &Ok(true))
        .expect("new certificate seen");
    assert!(
        log[first_new..].iter().all(|o| o == &Ok(true)),
        "the old certificate was served after the new one"
    );
}
