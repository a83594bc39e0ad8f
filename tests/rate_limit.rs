//! `RATE_LIMIT_PER_MINUTE`, `TRUSTED_PROXIES` and `X-Forwarded-For`, over
//! real sockets against the real binary. Clients are told apart by
//! loopback address (`127.0.0.2`, `127.0.0.3`); `127.0.0.1` is the trusted
//! proxy, set explicitly.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use support::mock::{MockSpotify, Reply};
use support::{Resp, ServerProc, request_from, start_mock, start_server};

/// A client that exhausts its allowance.
const GREEDY: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// Another client, who must not pay for the first.
const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
/// The trusted reverse proxy.
const PROXY: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
/// `RATE_LIMIT_PER_MINUTE` of these servers: the burst allowed at once.
const RATE: usize = 5;
/// Seconds until one more request is allowed, at most (60 / RATE).
const REFILL_SECS: u64 = 60 / RATE as u64;

/// A mock answering every token request 200, and a server limiting each
/// client to [`RATE`] token requests a minute with only `127.0.0.1`
/// trusted.
fn start() -> (MockSpotify, ServerProc) {
    let mock = start_mock();
    mock.set_default_reply(Some(Reply::json(
        200,
        r#"{"access_token":"at","token_type":"Bearer","expires_in":3600,"scope":"s"}"#,
    )));
    let rate = RATE.to_string();
    let server = start_server(
        &mock,
        &[
            ("RATE_LIMIT_PER_MINUTE", rate.as_str()),
            ("TRUSTED_PROXIES", "127.0.0.1"),
        ],
    );
    (mock, server)
}

/// Raw bytes of a one-shot `POST` of `field=value` to `path`, with an
/// `X-Forwarded-For` header if given.
fn token_request(path: &str, field: &str, forwarded_for: Option<&str>) -> Vec<u8> {
    let body = format!("{field}=value");
    let xff = forwarded_for.map_or_else(String::new, |v| format!("X-Forwarded-For: {v}\r\n"));
    format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\n{xff}\
         Content-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn swap_from(addr: SocketAddr, from: IpAddr, forwarded_for: Option<&str>) -> Resp {
    request_from(from, addr, &token_request("/swap", "code", forwarded_for))
}

fn get_from(addr: SocketAddr, from: IpAddr, path: &str) -> Resp {
    let raw = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    request_from(from, addr, raw.as_bytes())
}

/// Uses up the allowance of the client that `from` (and `forwarded_for`)
/// name, asserting each of those requests was served.
fn exhaust(addr: SocketAddr, from: IpAddr, forwarded_for: Option<&str>) {
    for i in 0..RATE {
        let resp = swap_from(addr, from, forwarded_for);
        assert_eq!(resp.status, 200, "request {i} of the burst:\n{resp:?}");
    }
}

/// Asserts `resp` is our 429 with an integer `Retry-After` of 1 to 12 s.
fn assert_rate_limited(resp: &Resp) {
    support::assert_too_many_requests(resp, REFILL_SECS);
}

#[test]
fn burst_of_the_rate_is_allowed_then_429_with_integer_retry_after() {
    let (mock, server) = start();
    let addr = server.addr();

    exhaust(addr, GREEDY, None);
    let swap = swap_from(addr, GREEDY, None);
    // Both token endpoints draw on the same allowance.
    let refresh = request_from(
        GREEDY,
        addr,
        &token_request("/refresh", "refresh_token", None),
    );

    assert_rate_limited(&swap);
    assert_rate_limited(&refresh);
    assert_eq!(
        mock.request_count(),
        RATE,
        "a rate-limited request reached Spotify"
    );
}

#[test]
fn limit_is_per_client_address() {
    let (_mock, server) = start();
    let addr = server.addr();
    exhaust(addr, GREEDY, None);
    assert_rate_limited(&swap_from(addr, GREEDY, None));

    // The other address has its whole allowance.
    exhaust(addr, OTHER, None);
    assert_rate_limited(&swap_from(addr, OTHER, None));
}

#[test]
fn health_and_metrics_are_never_rate_limited() {
    let (_mock, server) = start();
    let addr = server.addr();
    exhaust(addr, GREEDY, None);
    assert_rate_limited(&swap_from(addr, GREEDY, None));

    for _ in 0..4 * RATE {
        let resp = get_from(addr, GREEDY, "/health");
        assert_eq!(resp.status, 200, "{resp:?}");
    }
    for _ in 0..2 * RATE {
        let resp = get_from(addr, GREEDY, "/metrics");
        assert_eq!(resp.status, 200, "{resp:?}");
        assert!(
            resp.text()
                .contains("spotify_token_swap_rate_limited_total 1"),
            "{}",
            resp.text()
        );
    }
}

#[test]
fn behind_a_trusted_proxy_the_forwarded_client_is_limited() {
    let (_mock, server) = start();
    let addr = server.addr();

    exhaust(addr, PROXY, Some("203.0.113.5"));
    assert_rate_limited(&swap_from(addr, PROXY, Some("203.0.113.5")));
    // A client cannot escape by putting addresses of its own in front: the
    // right-most entry the proxy appended is the one that counts.
    assert_rate_limited(&swap_from(addr, PROXY, Some("198.51.100.1, 203.0.113.5")));

    // Other clients behind the same proxy, and the proxy itself, are not
    // affected.
    assert_eq!(swap_from(addr, PROXY, Some("203.0.113.6")).status, 200);
    assert_eq!(swap_from(addr, PROXY, None).status, 200);
}

#[test]
fn forged_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let (_mock, server) = start();
    let addr = server.addr();

    // Every request names another client; the peer is what counts.
    for i in 0..RATE {
        let forged = format!("198.51.100.{i}");
        let resp = swap_from(addr, GREEDY, Some(&forged));
        assert_eq!(resp.status, 200, "{resp:?}");
    }
    assert_rate_limited(&swap_from(addr, GREEDY, Some("198.51.100.200")));
    // Nor can a forged header spend someone else's allowance.
    assert_eq!(swap_from(addr, OTHER, None).status, 200);
}
