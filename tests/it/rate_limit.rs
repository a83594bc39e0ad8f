//! `RATE_LIMIT_PER_MINUTE`, `TRUSTED_PROXIES` (addresses and CIDR ranges),
//! `CLIENT_IPV6_PREFIX` and `X-Forwarded-For`, over real sockets against
//! the real binary. Clients are told apart by loopback address
//! (`127.0.0.2`, `127.0.0.3`) or, behind the trusted proxy, by the address
//! it forwards (an IPv6 /64 is one client); `127.0.0.1` is the trusted
//! proxy (set explicitly, or by default). Most servers here limit to
//! [`RATE`] a minute, so that a token comes back only every 12 s; the
//! default (60 a minute, 10 at once) has tests of its own.

use crate::support;

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
    start_trusting("127.0.0.1")
}

/// [`start`], with `trusted` as `TRUSTED_PROXIES`.
fn start_trusting(trusted: &str) -> (MockSpotify, ServerProc) {
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
            ("TRUSTED_PROXIES", trusted),
        ],
    );
    (mock, server)
}

/// Raw bytes of a one-shot `POST` of `field=value` to `path`, with an
/// `X-Forwarded-For` header if given.
fn token_request(path: &str, field: &str, forwarded_for: Option<&str>) -> Vec<u8> {
    token_request_with(path, &format!("{field}=value"), forwarded_for)
}

/// Raw bytes of a one-shot form `POST` of `body` to `path`.
fn token_request_with(path: &str, body: &str, forwarded_for: Option<&str>) -> Vec<u8> {
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

#[test]
fn an_ipv6_slash_64_is_one_client_and_the_next_64_another() {
    let (_mock, server) = start();
    let addr = server.addr();
    exhaust(addr, PROXY, Some("2001:db8:1:2::1"));
    // Another address of the same /64 (CLIENT_IPV6_PREFIX=64) is the same
    // client, however many it has.
    assert_rate_limited(&swap_from(addr, PROXY, Some("2001:db8:1:2:ffff::9")));
    assert_rate_limited(&swap_from(addr, PROXY, Some("[2001:db8:1:2::7]:443")));
    assert_eq!(swap_from(addr, PROXY, Some("2001:db8:1:3::1")).status, 200);
}

#[test]
fn trusted_proxies_may_be_a_cidr_range() {
    let (_mock, server) = start_trusting("127.0.0.0/30, fd00::/8");
    let addr = server.addr();
    // 127.0.0.2 and .3 are both in the range: each one's X-Forwarded-For
    // names the client, so they share its allowance.
    exhaust(addr, GREEDY, Some("198.51.100.7"));
    assert_rate_limited(&swap_from(addr, OTHER, Some("198.51.100.7")));
    assert_eq!(swap_from(addr, OTHER, Some("198.51.100.8")).status, 200);
    // 127.0.0.4 is outside: it is the client, whatever it forwards.
    let outside = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4));
    assert_eq!(swap_from(addr, outside, Some("198.51.100.7")).status, 200);
}

// ---------------------------------------------------------------------------
// The default: 60 a minute, 10 at once
// ---------------------------------------------------------------------------

/// A mock answering every token request 200, and a server with the
/// default rate limit and `TRUSTED_PROXIES` (neither variable set).
fn start_with_defaults() -> (MockSpotify, ServerProc) {
    let mock = start_mock();
    mock.set_default_reply(Some(Reply::json(
        200,
        r#"{"access_token":"at","token_type":"Bearer","expires_in":3600,"scope":"s"}"#,
    )));
    let server = start_server(&mock, &[]);
    (mock, server)
}

/// How long a log line may take to reach the test after its response.
const LOG_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A code that must never appear in the logs.
const LOGGED_NEVER: &str = "code-that-must-not-be-logged-7f3a";

fn swap_with_code_from(addr: SocketAddr, from: IpAddr, forwarded_for: Option<&str>) -> Resp {
    let body = format!("code={LOGGED_NEVER}");
    request_from(
        from,
        addr,
        &token_request_with("/swap", &body, forwarded_for),
    )
}

/// Swaps from `from` until the first 429 (at most 40 tries); returns how
/// many were served, the 429, and how long it took. At 60 a minute a
/// token comes back every second, so a slow run may see one more served
/// per second it took.
fn swap_until_limited(
    addr: SocketAddr,
    from: IpAddr,
    forwarded_for: Option<&str>,
) -> (u64, Resp, std::time::Duration) {
    let started = std::time::Instant::now();
    for served in 0..40 {
        let resp = swap_with_code_from(addr, from, forwarded_for);
        if resp.status != 200 {
            return (served, resp, started.elapsed());
        }
    }
    panic!("40 swaps from {from} ({forwarded_for:?}) in a row were served");
}

/// Asserts the default burst: 10 served, or one more per second taken.
fn assert_default_burst(served: u64, took: std::time::Duration, limited: &Resp) {
    assert!(
        (10..=10 + took.as_secs() + 1).contains(&served),
        "{served} served in {took:?} before the 429"
    );
    support::assert_too_many_requests(limited, 1);
}

/// The stderr lines of `server` that contain `needle`.
fn log_lines(server: &ServerProc, needle: &str) -> Vec<String> {
    server
        .stderr()
        .lines()
        .filter(|line| line.contains(needle))
        .map(String::from)
        .collect()
}

#[test]
fn by_default_a_client_gets_ten_at_once_then_one_a_second() {
    let (mock, server) = start_with_defaults();
    let addr = server.addr();

    let (served, limited, took) = swap_until_limited(addr, GREEDY, None);

    assert_default_burst(served, took, &limited);
    assert_eq!(mock.request_count() as u64, served);
    // Another address is not affected.
    assert_eq!(swap_from(addr, OTHER, None).status, 200);
    // One second later, one more.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(swap_from(addr, GREEDY, None).status, 200);
}

#[test]
fn a_limited_client_is_logged_once_per_minute_by_address_only() {
    let (_mock, server) = start_with_defaults();
    let addr = server.addr();
    let (_, limited, _) = swap_until_limited(addr, GREEDY, None);
    assert_eq!(limited.status, 429);
    for _ in 0..20 {
        assert_eq!(swap_with_code_from(addr, GREEDY, None).status, 429);
    }
    // The other client's first refusal is its own line.
    swap_until_limited(addr, OTHER, None);
    assert!(server.wait_for_stderr("rate limit: client 127.0.0.3 ", LOG_WAIT));

    let warned = log_lines(&server, "rate limit: client 127.0.0.2 ");
    assert_eq!(warned.len(), 1, "{}", server.stderr());
    assert!(warned[0].starts_with("[WARN]"), "{warned:?}");
    assert!(warned[0].contains("RATE_LIMIT_PER_MINUTE=60"), "{warned:?}");
    assert_eq!(
        log_lines(&server, "rate limit: client 127.0.0.3 ").len(),
        1,
        "{}",
        server.stderr()
    );
    assert!(
        !server.stderr().contains(LOGGED_NEVER),
        "{}",
        server.stderr()
    );
}

#[test]
fn trusted_proxy_without_forwarded_for_is_not_limited_and_reported_once() {
    let (mock, server) = start_with_defaults();
    let addr = server.addr();

    // 127.0.0.1 is a trusted proxy by default. Without X-Forwarded-For its
    // requests name no client: three times the burst all reach Spotify.
    for i in 0..30 {
        let resp = swap_with_code_from(addr, PROXY, None);
        assert_eq!(resp.status, 200, "request {i}:\n{resp:?}");
    }
    assert_eq!(mock.request_count(), 30);
    assert!(server.wait_for_stderr("sends no X-Forwarded-For", LOG_WAIT));
    let warned = log_lines(&server, "sends no X-Forwarded-For");
    assert_eq!(warned.len(), 1, "{}", server.stderr());
    assert!(
        warned[0].starts_with("[WARN] trusted proxy 127.0.0.1 sends no X-Forwarded-For"),
        "{warned:?}"
    );
    assert!(!server.stderr().contains(LOGGED_NEVER));

    // With the header, the client it names is limited as usual.
    let (served, limited, took) = swap_until_limited(addr, PROXY, Some("203.0.113.5"));
    assert_default_burst(served, took, &limited);
    assert!(server.wait_for_stderr("rate limit: client 203.0.113.5 ", LOG_WAIT));
    assert_eq!(
        log_lines(&server, "rate limit: client 203.0.113.5 ").len(),
        1
    );
}

#[test]
fn rate_limit_0_turns_it_off() {
    let mock = start_mock();
    mock.set_default_reply(Some(Reply::json(
        200,
        r#"{"access_token":"at","token_type":"Bearer","expires_in":3600,"scope":"s"}"#,
    )));
    let server = start_server(&mock, &[("RATE_LIMIT_PER_MINUTE", "0")]);

    for i in 0..30 {
        let resp = swap_from(server.addr(), GREEDY, None);
        assert_eq!(resp.status, 200, "request {i}:\n{resp:?}");
    }
}
