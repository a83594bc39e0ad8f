//! `spotify-token-swap healthcheck`, a container's health check: exit 0
//! when the configured server answers `/health` with 200 — on its own
//! address, on loopback for `0.0.0.0` and `[::]`, over HTTPS with its own
//! certificate — and exit 1 with the reason otherwise: nothing listening,
//! another status, no answer in time, another certificate, plain HTTP to
//! an HTTPS port, a bad configuration.

use crate::support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Output;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use support::pki::Pki;
use support::{CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, run_binary, start_both, timed};

/// The check's own limit (`healthcheck::TIMEOUT`).
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// What a check that gives up at its limit may take on top (starting the
/// binary, possibly under qemu).
const STARTUP_SLACK: Duration = Duration::from_secs(3);

/// Runs `healthcheck` with the test app's settings, `LISTEN_ADDR=listen`
/// and `extra`.
fn healthcheck(listen: &str, extra: &[(&str, &str)]) -> Output {
    let mut vars = vec![
        ("SPOTIFY_CLIENT_ID", CLIENT_ID),
        ("SPOTIFY_CLIENT_SECRET", CLIENT_SECRET),
        ("SPOTIFY_REDIRECT_URI", REDIRECT_URI),
        ("LISTEN_ADDR", listen),
    ];
    vars.extend_from_slice(extra);
    run_binary(&["healthcheck"], &vars)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts exit 1 (never 2: container runtimes reserve it), nothing on
/// stdout and one `unhealthy:` line on stderr containing `reason`.
fn assert_unhealthy(output: &Output, reason: &str) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(1), "stderr:\n{err}");
    assert!(output.stdout.is_empty(), "stdout: {:?}", output.stdout);
    assert_eq!(err.lines().count(), 1, "stderr:\n{err}");
    assert!(
        err.starts_with("unhealthy: ") && err.contains(reason),
        "stderr does not say '{reason}':\n{err}"
    );
}

fn assert_healthy(output: &Output) {
    assert_eq!(output.status.code(), Some(0), "stderr:\n{}", stderr(output));
    assert!(output.stdout.is_empty() && output.stderr.is_empty());
}

/// A stand-in server on loopback that reads one request head, sends it
/// back through the channel and answers `answer` (nothing at all when
/// `None`, holding the connection open for `hold`).
fn stand_in(answer: Option<&'static str>, hold: Duration) -> (SocketAddr, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let addr = listener.local_addr().expect("its address");
    let (heads, received) = mpsc::channel();
    thread::spawn(move || {
        let Ok((mut conn, _)) = listener.accept() else {
            return;
        };
        let mut head = Vec::new();
        let mut byte = [0; 1];
        while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).is_ok_and(|n| n == 1) {
            head.push(byte[0]);
        }
        let _ = heads.send(String::from_utf8_lossy(&head).into_owned());
        match answer {
            Some(answer) => drop(conn.write_all(answer.as_bytes())),
            None => thread::sleep(hold),
        }
    });
    (addr, received)
}

#[test]
fn healthy_server_exits_0_on_its_address_and_on_every_interface() {
    let (_mock, server) = start_both(&[]);
    let port = server.addr().port();
    assert_healthy(&healthcheck(&server.addr().to_string(), &[]));
    // The server listens on 127.0.0.1 only. (Linux takes a connect to
    // 0.0.0.0 or :: as one to its own loopback of that family, so `[::]`
    // passes only because 127.0.0.1 is tried after ::1, where nothing is.)
    assert_healthy(&healthcheck(&format!("0.0.0.0:{port}"), &[]));
    assert_healthy(&healthcheck(&format!("[::]:{port}"), &[]));
    // `PORT` means `0.0.0.0:$PORT` to the check as to the server.
    let port_text = port.to_string();
    let vars = [
        ("SPOTIFY_CLIENT_ID", CLIENT_ID),
        ("SPOTIFY_CLIENT_SECRET", CLIENT_SECRET),
        ("SPOTIFY_REDIRECT_URI", REDIRECT_URI),
        ("PORT", port_text.as_str()),
    ];
    assert_healthy(&run_binary(&["healthcheck"], &vars));
}

#[test]
fn nothing_listening_exits_1_naming_the_address() {
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        listener.local_addr().expect("its address")
    };
    assert_unhealthy(
        &healthcheck(&addr.to_string(), &[]),
        &format!("cannot connect to {addr}"),
    );
}

#[test]
fn it_asks_for_health_and_only_200_is_healthy() {
    let (addr, heads) = stand_in(
        Some("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        Duration::ZERO,
    );
    assert_healthy(&healthcheck(&addr.to_string(), &[]));
    let head = heads.recv_timeout(CHECK_TIMEOUT).expect("the request head");
    assert!(head.starts_with("GET /health HTTP/1.1\r\n"), "{head:?}");

    let (addr, _) = stand_in(
        Some("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"),
        Duration::ZERO,
    );
    assert_unhealthy(
        &healthcheck(&addr.to_string(), &[]),
        &format!("{addr}: GET /health answered 'HTTP/1.1 503 Service Unavailable'"),
    );

    let (addr, _) = stand_in(Some(""), Duration::ZERO);
    assert_unhealthy(
        &healthcheck(&addr.to_string(), &[]),
        "closed the connection without an answer",
    );
}

#[test]
fn a_server_that_never_answers_is_given_up_on_at_the_limit() {
    let _turn = timed();
    let (addr, _) = stand_in(None, CHECK_TIMEOUT + STARTUP_SLACK + STARTUP_SLACK);
    let started = Instant::now();
    let output = healthcheck(&addr.to_string(), &[]);
    let took = started.elapsed();
    assert_unhealthy(
        &output,
        &format!("{addr}: no answer within {CHECK_TIMEOUT:?}"),
    );
    assert!(took >= CHECK_TIMEOUT, "gave up after {took:?}");
    assert!(took < CHECK_TIMEOUT + STARTUP_SLACK, "took {took:?}");
}

#[test]
fn https_server_is_checked_over_https_against_its_own_certificate() {
    let pki = Pki::new();
    pki.make_server_cert("ca", "other");
    let (cert, key, other) = (
        pki.path("server.pem"),
        pki.path("server.key"),
        pki.path("other.pem"),
    );
    let tls = [
        ("TLS_CERT_FILE", cert.as_str()),
        ("TLS_KEY_FILE", key.as_str()),
    ];
    let (_mock, server) = start_both(&tls);
    assert!(
        server.base_url().starts_with("https://"),
        "{}",
        server.base_url()
    );
    let listen = server.addr().to_string();

    assert_healthy(&healthcheck(&listen, &tls));
    // Another certificate from the same CA, for the same address: refused.
    let other_tls = [
        ("TLS_CERT_FILE", other.as_str()),
        ("TLS_KEY_FILE", key.as_str()),
    ];
    assert_unhealthy(
        &healthcheck(&listen, &other_tls),
        "the server's certificate is not the one in TLS_CERT_FILE",
    );
    // Plain HTTP to the HTTPS port: the server never answers in plaintext.
    assert_unhealthy(&healthcheck(&listen, &[]), &listen);
}

#[test]
fn bad_configuration_exits_1_not_2() {
    let vars = [
        ("SPOTIFY_CLIENT_SECRET", CLIENT_SECRET),
        ("SPOTIFY_REDIRECT_URI", REDIRECT_URI),
        ("LISTEN_ADDR", "127.0.0.1:8080"),
    ];
    let output = run_binary(&["healthcheck"], &vars);
    assert_unhealthy(
        &output,
        "configuration error: SPOTIFY_CLIENT_ID is required",
    );
}
