//! The server's own TLS connections to Spotify's accounts service, against
//! the Spotify mock over HTTPS ([`support::mock::MockSpotify::start_tls`]),
//! which records every handshake it accepts: sequential swaps share one
//! pooled connection; when the upstream closes that connection (announced
//! with `Connection: close`, or not, as an idle timeout or a reload does),
//! the next swap opens a new one that resumes the TLS session instead of a
//! full handshake, with TLS 1.3 and with an upstream capped at TLS 1.2; an
//! upstream whose certificate `SPOTIFY_CA_FILE` does not vouch for is a
//! 502, and serving goes on. The mock checks real codes and grants, as in
//! the plain tests: each swap registers its code first.
//!
//! The real binary runs with `SPOTIFY_ACCOUNTS_URL=https://127.0.0.1:PORT`
//! and `SPOTIFY_CA_FILE` naming the throwaway CA ([`support::pki`]), which
//! replaces the built-in roots. Everything stays on loopback.

use crate::support;

use std::time::Duration;

use rustls::{HandshakeKind, ProtocolVersion};
use support::mock::{Close, Handshake, MockSpotify};
use support::pki::Pki;
use support::{
    CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, Resp, ServerProc, assert_error, assert_still_serving,
    post_form, start_server, start_tls_mock,
};

/// Sequential swaps in the connection-reuse test.
const SEQUENTIAL_SWAPS: usize = 20;
/// Times the upstream closes the connection in the resumption tests: each
/// new connection must resume, not only the first after a full handshake.
const CLOSE_ROUNDS: u64 = 3;
/// Longest wait for the upstream to see a close or a handshake.
const WAIT: Duration = Duration::from_secs(5);

/// The server pointed at `upstream`, trusting only `ca.pem` of `pki`.
fn start_trusting_pki(upstream: &MockSpotify, pki: &Pki) -> ServerProc {
    start_server_trusting(upstream, &pki.path("ca.pem"))
}

/// The server pointed at `upstream`, trusting only the CA file `ca`.
fn start_server_trusting(upstream: &MockSpotify, ca: &str) -> ServerProc {
    start_server(
        upstream,
        &[("SPOTIFY_CA_FILE", ca), ("UPSTREAM_TIMEOUT_SECS", "5")],
    )
}

fn swap(server: &ServerProc, code: &str) -> Resp {
    post_form(server.addr(), "/swap", &[("code", code)])
}

/// Registers `code` with the upstream and swaps it, which must succeed with
/// the upstream's tokens for it.
fn swap_ok(server: &ServerProc, upstream: &MockSpotify, code: &str) {
    upstream.add_code(code);
    let resp = swap(server, code);
    assert_eq!(
        resp.status,
        200,
        "swap {code}: {resp:?}\nupstream connections: {:?}\nserver stderr:\n{}",
        upstream.connections(),
        server.stderr()
    );
    let body = resp.json();
    assert_eq!(body["access_token"], format!("access-{code}"), "{resp:?}");
    assert_eq!(body["refresh_token"], format!("refresh-{code}"), "{resp:?}");
}

/// Asserts connection `id` completed a handshake of `kind` with `version`.
fn assert_handshake(
    upstream: &MockSpotify,
    id: u64,
    kind: HandshakeKind,
    version: ProtocolVersion,
) {
    let conn = upstream.wait_handshake(id, WAIT).unwrap_or_else(|| {
        panic!(
            "no handshake on connection {id}: {:?}",
            upstream.connections()
        )
    });
    assert_eq!(
        conn.handshake,
        Some(Ok(Handshake { kind, version })),
        "connection {id}; all: {:?}",
        upstream.connections()
    );
}

/// One swap on a fresh upstream connection (a full handshake), then
/// [`CLOSE_ROUNDS`] times: the upstream closes the connection after the next
/// answer (`how`), and the swap after that must open exactly one new
/// connection, whose handshake resumes the session.
fn assert_each_new_connection_resumes(
    upstream: &MockSpotify,
    pki: &Pki,
    how: Close,
    version: ProtocolVersion,
) {
    let server = start_trusting_pki(upstream, pki);
    swap_ok(&server, upstream, "first");
    assert_handshake(upstream, 1, HandshakeKind::Full, version);

    for round in 1..=CLOSE_ROUNDS {
        // Connection ids count from 1: round r closes connection r and
        // opens connection r + 1.
        let (old, new) = (round, round + 1);
        upstream.close_after_next_answer(how);
        let closing = format!("closing-{round}");
        swap_ok(&server, upstream, &closing);
        assert!(
            upstream.wait_closed(old, WAIT),
            "the upstream did not close connection {old}: {:?}",
            upstream.connections()
        );

        let after = format!("after-{round}");
        swap_ok(&server, upstream, &after);

        let connections = upstream.connections();
        assert_eq!(
            connections.len() as u64,
            new,
            "round {round}: one new connection expected: {connections:?}"
        );
        assert_handshake(upstream, new, HandshakeKind::Resumed, version);
        let requests = upstream.requests();
        let on = |code: &str| {
            requests
                .iter()
                .find(|r| r.field("code") == Some(code))
                .map(|r| r.connection)
        };
        assert_eq!(on(&closing), Some(old), "{requests:?}");
        assert_eq!(on(&after), Some(new), "{requests:?}");
    }
    assert_still_serving(server.addr());
}

#[test]
fn sequential_swaps_reuse_one_upstream_tls_connection() {
    let pki = Pki::new();
    let upstream = start_tls_mock(&pki, "server", rustls::ALL_VERSIONS);
    let server = start_trusting_pki(&upstream, &pki);

    for i in 0..SEQUENTIAL_SWAPS {
        swap_ok(&server, &upstream, &format!("seq-{i}"));
    }

    let connections = upstream.connections();
    assert_eq!(connections.len(), 1, "{connections:?}");
    assert_handshake(&upstream, 1, HandshakeKind::Full, ProtocolVersion::TLSv1_3);
    let requests = upstream.requests();
    assert_eq!(requests.len(), SEQUENTIAL_SWAPS, "{requests:?}");
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{CLIENT_ID}:{CLIENT_SECRET}")
        )
    );
    for (i, request) in requests.iter().enumerate() {
        assert_eq!(request.connection, 1, "{request:?}");
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("POST", "/api/token")
        );
        assert_eq!(request.header("authorization"), Some(basic.as_str()));
        assert_eq!(request.field("grant_type"), Some("authorization_code"));
        assert_eq!(request.field("code"), Some(format!("seq-{i}").as_str()));
        assert_eq!(request.field("redirect_uri"), Some(REDIRECT_URI));
        assert_eq!(request.status, Some(200));
    }
}

#[test]
fn a_new_upstream_connection_after_a_close_resumes_the_tls_session() {
    let pki = Pki::new();
    let upstream = start_tls_mock(&pki, "server", rustls::ALL_VERSIONS);

    assert_each_new_connection_resumes(&upstream, &pki, Close::Announced, ProtocolVersion::TLSv1_3);
}

#[test]
fn a_new_upstream_connection_after_a_close_resumes_the_tls_1_2_session() {
    let pki = Pki::new();
    let upstream = start_tls_mock(&pki, "server", &[&rustls::version::TLS12]);

    assert_each_new_connection_resumes(&upstream, &pki, Close::Announced, ProtocolVersion::TLSv1_2);
}

/// The upstream closes the pooled connection without saying so first (an
/// idle timeout, a reload): the server must notice the dead connection in
/// its pool instead of sending the next request on it (a 502), and the new
/// connection resumes the session.
#[test]
fn an_unannounced_close_of_the_pooled_connection_costs_no_request_and_the_next_connection_resumes()
{
    let pki = Pki::new();
    let upstream = start_tls_mock(&pki, "server", rustls::ALL_VERSIONS);

    assert_each_new_connection_resumes(
        &upstream,
        &pki,
        Close::Unannounced,
        ProtocolVersion::TLSv1_3,
    );
}

/// rustls refuses the certificate and the server answers 502 without
/// sending anything. (ureq does not get its fatal `unknown_ca` alert out:
/// its last-gasp write after a failed handshake writes only the first
/// queued record, TLS 1.3's compatibility ChangeCipherSpec, so the upstream
/// sees the connection end. A server trusting the other CA is the control.)
#[test]
fn an_upstream_certificate_not_signed_by_the_spotify_ca_file_is_a_502_and_serving_goes_on() {
    let pki = Pki::new();
    pki.make_ca("other-ca");
    pki.make_server_cert("other-ca", "other");
    let upstream = start_tls_mock(&pki, "other", rustls::ALL_VERSIONS);
    let server = start_trusting_pki(&upstream, &pki);

    for attempt in 1..=2 {
        let code = format!("refused-{attempt}");
        upstream.add_code(&code);
        let resp = swap(&server, &code);

        assert_error(&resp, 502, "server_error");
        let conn = upstream
            .wait_handshake(attempt, WAIT)
            .unwrap_or_else(|| panic!("no handshake {attempt}: {:?}", upstream.connections()));
        assert!(
            matches!(conn.handshake, Some(Err(_))),
            "handshake {attempt} did not fail: {conn:?}"
        );
    }
    assert!(upstream.requests().is_empty(), "{:?}", upstream.requests());
    assert_still_serving(server.addr());

    let trusting = start_server_trusting(&upstream, &pki.path("other-ca.pem"));
    swap_ok(&trusting, &upstream, "trusted");
    assert_handshake(&upstream, 3, HandshakeKind::Full, ProtocolVersion::TLSv1_3);
}
