//! `GET /metrics` against the real binary: a known sequence of requests —
//! successes, Spotify's 4xx, a tampered refresh token, `/health`, a 404,
//! Spotify's 5xx, a timeout, a rate-limited request — and then the exact
//! counters, histogram count and failure kinds it must show; the content
//! type; the gauges; `METRICS=off`; `METRICS_ALLOW`: to a client outside
//! it — through a trusted proxy too — `/metrics` is a path that does not
//! exist.

use crate::support;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::conns::loopback;
use support::metrics::{sample, scrape, value};
use support::mock::Reply;
use support::{
    Resp, assert_error, get, post_form, request, request_from, start_mock, start_server,
};

const ENCRYPTION_SECRET: &str = "metrics-test-encryption-secret-0123456789";
/// How long to wait for counters to catch up with answered requests (a
/// request is counted just after its response is written).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// `requests_total` as (endpoint, status) → count, leaving out the
/// `/metrics` endpoint itself.
fn requests_table(text: &str) -> BTreeMap<(String, u16), u64> {
    let prefix = "spotify_token_swap_requests_total{endpoint=\"";
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(prefix)?;
            let (endpoint, rest) = rest.split_once("\",status=\"")?;
            let (status, count) = rest.split_once("\"} ")?;
            Some((
                (endpoint.to_owned(), status.parse().ok()?),
                count.parse().ok()?,
            ))
        })
        .filter(|((endpoint, _), _)| endpoint != "metrics")
        .collect()
}

/// Scrapes until the requests counted (besides `/metrics`) reach `total`,
/// then returns that scrape.
fn scrape_when_counted(addr: SocketAddr, total: u64) -> String {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let text = scrape(addr);
        let counted: u64 = requests_table(&text).values().sum();
        if counted >= total || Instant::now() >= deadline {
            return text;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A form POST that a trusted proxy (the loopback peer) forwards for
/// `client`: each test client gets its own rate-limit bucket.
fn post_for(addr: SocketAddr, client: &str, path: &str, body: &str) -> Resp {
    let raw = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: {client}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    request(addr, raw.as_bytes())
}

/// `token` with one character in the middle changed.
fn tampered(token: &str) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    let i = chars.len() / 2;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

#[test]
fn a_known_sequence_of_requests_gives_exact_counters() {
    let mock = start_mock();
    let server = start_server(
        &mock,
        &[
            ("ENCRYPTION_SECRET", ENCRYPTION_SECRET),
            ("UPSTREAM_TIMEOUT_SECS", "1"),
            ("RATE_LIMIT_PER_MINUTE", "1"),
        ],
    );
    let addr = server.addr();
    mock.add_code("one");
    mock.add_code("two");

    // 2 swaps that succeed.
    let first = post_for(addr, "198.51.100.1", "/swap", "code=one");
    assert_eq!(first.status, 200, "{first:?}");
    let second = post_for(addr, "198.51.100.2", "/swap", "code=two");
    assert_eq!(second.status, 200, "{second:?}");
    // 1 swap Spotify refuses (unknown code): its 400 passes through.
    let bad_code = post_for(addr, "198.51.100.3", "/swap", "code=unknown");
    assert_error(&bad_code, 400, "invalid_grant");
    // 1 refresh with a tampered token: refused here, Spotify not called.
    let sealed = first.json()["refresh_token"]
        .as_str()
        .expect("a sealed refresh token")
        .to_owned();
    let body = support::form_body(&[("refresh_token", &tampered(&sealed))]);
    let tampered_refresh = post_for(addr, "198.51.100.4", "/refresh", &body);
    assert_error(&tampered_refresh, 400, "invalid_grant");
    // 1 health check and 1 unknown path.
    assert_eq!(get(addr, "/health").status, 200);
    assert_error(&get(addr, "/nope"), 404, "not_found");
    // Spotify answers 503: 502 here.
    mock.push_reply(Reply::server_error(503));
    let upstream_5xx = post_for(addr, "198.51.100.5", "/swap", "code=x");
    assert_error(&upstream_5xx, 502, "server_error");
    // Spotify says nothing for longer than UPSTREAM_TIMEOUT_SECS: 504.
    mock.push_reply(Reply::Hang(Duration::from_secs(5)));
    let timed_out = post_for(addr, "198.51.100.6", "/swap", "code=y");
    assert_error(&timed_out, 504, "gateway_timeout");
    // The same client again within the minute: rate limited, Spotify not
    // called.
    let limited = post_for(addr, "198.51.100.6", "/swap", "code=z");
    assert_error(&limited, 429, "too_many_requests");
    assert_eq!(mock.request_count(), 5, "{:?}", mock.requests());

    let text = scrape_when_counted(addr, 9);

    let expected: BTreeMap<(String, u16), u64> = [
        (("health", 200), 1),
        (("other", 404), 1),
        (("refresh", 400), 1),
        (("swap", 200), 2),
        (("swap", 400), 1),
        (("swap", 429), 1),
        (("swap", 502), 1),
        (("swap", 504), 1),
    ]
    .into_iter()
    .map(|((endpoint, status), n)| ((endpoint.to_owned(), status), n))
    .collect();
    assert_eq!(requests_table(&text), expected, "\n{text}");

    // 5 calls reached Spotify; the tampered and rate-limited ones did not.
    let histogram = "spotify_token_swap_upstream_duration_seconds";
    assert_eq!(value(&text, &format!("{histogram}_count")), 5.0);
    assert_eq!(
        value(&text, &format!("{histogram}_bucket{{le=\"+Inf\"}}")),
        5.0
    );
    assert_eq!(
        value(&text, &format!("{histogram}_bucket{{le=\"10\"}}")),
        5.0
    );
    // The timed-out call took at least the 1 s timeout.
    assert!(value(&text, &format!("{histogram}_bucket{{le=\"0.5\"}}")) <= 4.0);
    assert!(value(&text, &format!("{histogram}_sum")) >= 1.0, "\n{text}");

    let failures = "spotify_token_swap_upstream_failures_total";
    for (kind, n) in [
        ("timeout", 1.0),
        ("dns", 0.0),
        ("connect", 0.0),
        ("5xx", 1.0),
        ("429", 0.0),
        ("bad_response", 0.0),
    ] {
        assert_eq!(
            value(&text, &format!("{failures}{{kind=\"{kind}\"}}")),
            n,
            "{kind}\n{text}"
        );
    }
    assert_eq!(value(&text, "spotify_token_swap_rate_limited_total"), 1.0);
    assert_eq!(
        value(&text, "spotify_token_swap_rejected_overloaded_total"),
        0.0
    );
    assert_eq!(
        value(&text, "spotify_token_swap_rejected_connection_cap_total"),
        0.0
    );
}

#[test]
fn buckets_are_cumulative_and_end_at_the_count() {
    let mock = start_mock();
    let server = start_server(&mock, &[]);
    for code in ["b1", "b2", "b3"] {
        mock.add_code(code);
        assert_eq!(
            post_form(server.addr(), "/swap", &[("code", code)]).status,
            200
        );
    }

    let text = scrape_when_counted(server.addr(), 3);

    let bounds = [
        "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
    ];
    let counts: Vec<f64> = bounds
        .iter()
        .map(|le| {
            value(
                &text,
                &format!("spotify_token_swap_upstream_duration_seconds_bucket{{le=\"{le}\"}}"),
            )
        })
        .collect();
    assert!(
        counts.windows(2).all(|w| w[0] <= w[1]),
        "not cumulative: {counts:?}"
    );
    assert_eq!(counts.last(), Some(&3.0));
}

#[test]
fn upstream_bad_response_and_429_are_counted_by_kind_and_backoff_is_not_a_call() {
    let mock = start_mock();
    let server = start_server(&mock, &[]);
    let addr = server.addr();
    mock.push_reply(Reply::json(200, "this is not JSON"));
    assert_eq!(post_form(addr, "/swap", &[("code", "a")]).status, 502);
    mock.push_reply(Reply::too_many_requests(30));
    assert_eq!(post_form(addr, "/swap", &[("code", "b")]).status, 429);
    // Inside Spotify's back-off window: answered here, Spotify not called.
    let backoff = post_form(addr, "/swap", &[("code", "c")]);
    assert_error(&backoff, 429, "too_many_requests");
    assert_eq!(mock.request_count(), 2);

    let text = scrape_when_counted(addr, 3);

    let failures = "spotify_token_swap_upstream_failures_total";
    assert_eq!(
        value(&text, &format!("{failures}{{kind=\"bad_response\"}}")),
        1.0
    );
    assert_eq!(value(&text, &format!("{failures}{{kind=\"429\"}}")), 1.0);
    assert_eq!(
        value(&text, &format!("{failures}{{kind=\"timeout\"}}")),
        0.0
    );
    assert_eq!(
        value(&text, "spotify_token_swap_upstream_duration_seconds_count"),
        2.0
    );
    assert_eq!(
        sample(
            &text,
            "spotify_token_swap_requests_total{endpoint=\"swap\",status=\"429\"}"
        ),
        Some(2.0)
    );
    // Spotify's 429 is not our rate limiter's.
    assert_eq!(value(&text, "spotify_token_swap_rate_limited_total"), 0.0);
}

#[test]
fn unreachable_upstream_is_counted_as_connect() {
    let mock = start_mock();
    let server = start_server(&mock, &[]);
    mock.stop();

    let resp = post_form(server.addr(), "/swap", &[("code", "a")]);
    assert_eq!(resp.status, 502, "{resp:?}");

    let text = scrape_when_counted(server.addr(), 1);
    assert_eq!(
        value(
            &text,
            "spotify_token_swap_upstream_failures_total{kind=\"connect\"}"
        ),
        1.0
    );
    assert_eq!(
        value(&text, "spotify_token_swap_upstream_duration_seconds_count"),
        1.0
    );
}

#[test]
fn metrics_are_prometheus_text_with_build_info_and_start_time() {
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    let mock = start_mock();
    let server = start_server(&mock, &[]);

    let resp = get(server.addr(), "/metrics");

    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(
        resp.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = resp.text();
    // The first scrape: nothing answered before it, and it is counted only
    // once answered.
    assert_eq!(requests_table(&text), BTreeMap::new(), "\n{text}");
    assert!(!text.contains("endpoint=\"metrics\""), "\n{text}");
    assert!(
        text.contains("# TYPE spotify_token_swap_requests_total counter\n"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE spotify_token_swap_upstream_duration_seconds histogram\n"),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            &format!(
                "spotify_token_swap_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        1.0
    );
    let started = value(&text, "process_start_time_seconds");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    assert!(
        (before - 1.0..=now).contains(&started),
        "start time {started} not in [{before}, {now}]"
    );
    // Every sample line is `name[{labels}] number`.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (_, number) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        assert!(number.parse::<f64>().is_ok(), "bad value in {line:?}");
    }
}

/// Each scrape is counted once, under `endpoint="metrics"`, after it has
/// been answered.
#[test]
fn scrapes_count_themselves_once() {
    let mock = start_mock();
    let server = start_server(&mock, &[]);
    let series = "spotify_token_swap_requests_total{endpoint=\"metrics\",status=\"200\"}";
    for _ in 0..3 {
        scrape(server.addr());
    }

    // A scrape sees every earlier one, once a request's count (made just
    // after its answer) has caught up; never more.
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let mut earlier = 3.0;
    loop {
        let seen = sample(&scrape(server.addr()), series).unwrap_or(0.0);
        assert!(seen <= earlier, "{seen} scrapes counted, {earlier} made");
        if seen == earlier {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{seen} scrapes counted, {earlier} made"
        );
        earlier += 1.0;
        thread::sleep(Duration::from_millis(20));
    }
}

/// With nothing else going on, the scrape sees exactly its own connection
/// and worker: the gauges come back down after every request.
#[test]
fn gauges_come_back_to_the_scrape_itself() {
    let mock = start_mock();
    let server = start_server(&mock, &[]);
    for _ in 0..5 {
        assert_eq!(get(server.addr(), "/health").status, 200);
    }

    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let text = loop {
        let text = scrape(server.addr());
        let settled = sample(&text, "spotify_token_swap_open_connections") == Some(1.0)
            && sample(&text, "spotify_token_swap_busy_workers") == Some(1.0);
        if settled || Instant::now() >= deadline {
            break text;
        }
        thread::sleep(Duration::from_millis(20));
    };

    assert_eq!(
        value(&text, "spotify_token_swap_open_connections"),
        1.0,
        "\n{text}"
    );
    assert_eq!(
        value(&text, "spotify_token_swap_busy_workers"),
        1.0,
        "\n{text}"
    );
}

#[test]
fn metrics_off_removes_the_endpoint() {
    let mock = start_mock();
    let server = start_server(&mock, &[("METRICS", "off")]);

    let resp = get(server.addr(), "/metrics");

    assert_error(&resp, 404, "not_found");
    support::assert_still_serving(server.addr());
}

/// The answer to `method path` from `from`, with `X-Forwarded-For` if given.
fn ask_from(
    addr: SocketAddr,
    from: IpAddr,
    method: &str,
    path: &str,
    forwarded_for: Option<&str>,
) -> Resp {
    let xff = forwarded_for.map_or_else(String::new, |v| format!("X-Forwarded-For: {v}\r\n"));
    let length = if method == "POST" {
        "Content-Length: 0\r\n"
    } else {
        ""
    };
    let raw =
        format!("{method} {path} HTTP/1.1\r\nHost: x\r\n{xff}{length}Connection: close\r\n\r\n");
    request_from(from, addr, raw.as_bytes())
}

#[test]
fn metrics_through_a_proxy_for_an_outside_client_is_a_path_that_does_not_exist() {
    let mock = start_mock();
    // 127.0.0.1 is the reverse proxy on this host (trusted by default).
    let server = start_server(&mock, &[]);
    let addr = server.addr();
    let proxy = loopback(1);
    for method in ["GET", "HEAD", "POST", "OPTIONS"] {
        for outside in ["203.0.113.5", "2001:db8::1", "127.0.0.1, 203.0.113.5"] {
            let metrics = ask_from(addr, proxy, method, "/metrics", Some(outside));
            let nothing = ask_from(addr, proxy, method, "/no-such-path", Some(outside));
            assert_eq!(metrics.status, 404, "{method} for {outside}: {metrics:?}");
            assert_eq!(metrics, nothing, "{method} for {outside}");
        }
    }
    // Loopback clients, directly or through the proxy, are answered.
    assert_eq!(ask_from(addr, proxy, "GET", "/metrics", None).status, 200);
    assert_eq!(
        ask_from(addr, loopback(9), "GET", "/metrics", None).status,
        200
    );
    let through = ask_from(addr, proxy, "GET", "/metrics", Some("127.0.0.5"));
    assert_eq!(through.status, 200, "{through:?}");
    // A refused scrape is counted under its endpoint, so the operator sees it.
    let text = scrape(addr);
    assert_eq!(
        sample(
            &text,
            "spotify_token_swap_requests_total{endpoint=\"metrics\",status=\"404\"}"
        ),
        Some(12.0),
        "{text}"
    );
}

#[test]
fn metrics_allow_names_who_may_scrape() {
    let mock = start_mock();
    let server = start_server(&mock, &[("METRICS_ALLOW", "127.0.0.7, 198.51.100.0/24")]);
    let addr = server.addr();
    let proxy = loopback(1);
    let allowed = ask_from(addr, proxy, "GET", "/metrics", Some("198.51.100.9"));
    assert_eq!(allowed.status, 200, "{allowed:?}");
    assert_eq!(
        ask_from(addr, loopback(7), "GET", "/metrics", None).status,
        200
    );
    // Loopback is no longer in the list.
    assert_error(
        &ask_from(addr, proxy, "GET", "/metrics", None),
        404,
        "not_found",
    );
    assert_error(
        &ask_from(addr, proxy, "GET", "/metrics", Some("198.51.101.1")),
        404,
        "not_found",
    );
}
