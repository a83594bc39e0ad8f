//! The HTTP layer over real sockets against the real binary: every
//! HTTP-layer row of SPEC's "Errors of our own" table, the limits of
//! "Limits and behaviour under stress", and the protocol features the
//! server promises (keep-alive, pipelining, HTTP/1.0, `Expect:
//! 100-continue`, chunked bodies, the per-client connection cap, overload).
//!
//! Each bad-input test checks the exact status, the JSON `error` code and
//! `Content-Type: application/json`, and then that the server still answers.

use crate::support;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use support::mock::{MockSpotify, Reply};
use support::{
    Conn, Resp, ServerProc, assert_error, assert_health, assert_still_serving, assert_swapped,
    form_body, heavy, raw_get, raw_post, raw_swap, request, request_while_sending, retry,
    start_mock, start_server, timed, wait_for_spotify_calls,
};

/// The server's limits, as SPEC states them.
const MAX_BODY_BYTES: usize = 8 * 1024;
const MAX_HEAD_BYTES: usize = 8 * 1024;
const MAX_HEADER_LINES: usize = 64;
/// SPEC: the head and the body must each arrive within 10 s.
const PHASE_DEADLINE: Duration = Duration::from_secs(10);
/// Client-side limit for a response that only comes at a 10 s deadline.
const PAST_DEADLINE: Duration = Duration::from_secs(15);
/// `QUEUE_CAPACITY` in src/http/queue.rs.
const QUEUE_CAPACITY: usize = 4096;
/// How long a test waits to see the server close a connection it should
/// close at once.
const PROMPT_CLOSE: Duration = Duration::from_secs(2);

/// A mock and a server pointed at it (4 workers), plus `extra` variables.
fn start(extra: &[(&str, &str)]) -> (MockSpotify, ServerProc) {
    let mock = start_mock();
    let server = start_server(&mock, extra);
    (mock, server)
}

/// Like [`assert_error`], for errors after which the server closes the
/// connection: the response must say so.
fn assert_closing_error(resp: &Resp, status: u16, code: &str) {
    assert_error(resp, status, code);
    assert_eq!(
        resp.header("connection"),
        Some("close"),
        "a connection closed after an error must be announced:\n{resp:?}"
    );
}

/// A POST to `/swap` whose head announces `Content-Length: length`.
fn post_with_length(length: &str) -> Vec<u8> {
    format!(
        "POST /swap HTTP/1.1\r\nHost: localhost\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {length}\r\n\r\n"
    )
    .into_bytes()
}

/// A GET of /health with `extra` header lines (each without CRLF).
fn get_with_headers(extra: &[String]) -> Vec<u8> {
    let mut raw = String::from("GET /health HTTP/1.1\r\nHost: localhost\r\n");
    for line in extra {
        raw.push_str(line);
        raw.push_str("\r\n");
    }
    raw.push_str("\r\n");
    raw.into_bytes()
}

/// `n` distinct header lines of `value_len`-byte values.
fn header_lines(n: usize, value_len: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("X-Filler-{i}: {}", "v".repeat(value_len)))
        .collect()
}

// ---------------------------------------------------------------------------
// 404, 405
// ---------------------------------------------------------------------------

#[test]
fn unknown_path_is_not_found() {
    let (_mock, server) = start(&[]);
    let resp = request(server.addr(), &raw_get("/no-such-endpoint"));
    assert_error(&resp, 404, "not_found");
    assert_still_serving(server.addr());
}

#[test]
fn get_on_swap_is_method_not_allowed_with_allow() {
    let (mock, server) = start(&[]);
    let resp = request(server.addr(), &raw_get("/swap"));
    assert_error(&resp, 405, "method_not_allowed");
    assert_eq!(resp.header("allow"), Some("POST"), "{resp:?}");
    assert_eq!(mock.request_count(), 0);
    assert_still_serving(server.addr());
}

#[test]
fn post_on_health_is_method_not_allowed_with_allow() {
    let (_mock, server) = start(&[]);
    let raw = b"POST /health HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n";
    let resp = request(server.addr(), raw);
    assert_error(&resp, 405, "method_not_allowed");
    let allow = resp.header("allow").expect("405 without Allow");
    let methods: Vec<&str> = allow.split(',').map(str::trim).collect();
    assert!(
        methods.contains(&"GET") && !methods.contains(&"POST"),
        "{resp:?}"
    );
    assert_still_serving(server.addr());
}

// ---------------------------------------------------------------------------
// 408: deadlines, not per-read timeouts
// ---------------------------------------------------------------------------

/// Opens a connection, runs `send` on a clone of its socket in the
/// background (until it returns or `stop` is set), and reads the response
/// the server sends at its deadline, with the time it took.
fn response_at_deadline(
    addr: SocketAddr,
    send: impl FnOnce(TcpStream, &AtomicBool) + Send + 'static,
) -> (Resp, Duration) {
    let mut conn = Conn::open(addr);
    conn.set_timeout(PAST_DEADLINE);
    let writer = conn.stream().try_clone().expect("clone the socket");
    let stop = Arc::new(AtomicBool::new(false));
    let stop_sender = Arc::clone(&stop);
    let started = Instant::now();
    let sender = thread::spawn(move || send(writer, &stop_sender));
    let resp = conn.read_response();
    let took = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let _ = sender.join();
    (resp, took)
}

fn assert_at_deadline(what: &str, resp: &Resp, took: Duration) {
    assert_closing_error(resp, 408, "request_timeout");
    assert!(
        took >= PHASE_DEADLINE - Duration::from_millis(500)
            && took < PHASE_DEADLINE + Duration::from_secs(3),
        "{what}: 408 after {took:?}, expected at the 10 s deadline"
    );
}

/// The three slow-client cases run concurrently, so the test takes one
/// deadline (~10 s), not three.
#[test]
fn head_or_body_not_received_in_time_is_answered_408() {
    let _timed = timed();
    let (_mock, server) = start(&[]);
    let addr = server.addr();

    // A head that stops short of its blank line.
    let partial_head = thread::spawn(move || {
        response_at_deadline(addr, |mut stream, _| {
            let _ = stream.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n");
        })
    });
    // A head trickled one byte a second: each read is quick, so only a
    // deadline for the whole head stops it.
    let trickled_head = thread::spawn(move || {
        response_at_deadline(addr, |mut stream, stop| {
            let head = b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ";
            let mut bytes = head.iter().chain(std::iter::repeat(&b'a'));
            let give_up = Instant::now() + PAST_DEADLINE;
            while !stop.load(Ordering::SeqCst) && Instant::now() < give_up {
                let byte = *bytes.next().unwrap_or(&b'a');
                if stream.write_all(&[byte]).is_err() {
                    return;
                }
                thread::sleep(Duration::from_secs(1));
            }
        })
    });
    // A complete head whose body never completes.
    let partial_body = thread::spawn(move || {
        response_at_deadline(addr, |mut stream, _| {
            let mut raw = post_with_length("100");
            raw.extend_from_slice(b"code=abc");
            let _ = stream.write_all(&raw);
        })
    });

    for (what, case) in [
        ("partial head", partial_head),
        ("trickled head", trickled_head),
        ("partial body", partial_body),
    ] {
        let (resp, took) = case.join().expect("client thread panicked");
        assert_at_deadline(what, &resp, took);
    }
    assert_still_serving(addr);
}

// ---------------------------------------------------------------------------
// 411, 413
// ---------------------------------------------------------------------------

#[test]
fn post_without_length_or_chunked_is_length_required() {
    let (mock, server) = start(&[]);
    let raw = b"POST /swap HTTP/1.1\r\nHost: localhost\r\n\
                Content-Type: application/x-www-form-urlencoded\r\n\r\ncode=abc";
    let resp = request(server.addr(), raw);
    assert_closing_error(&resp, 411, "length_required");
    assert_eq!(mock.request_count(), 0);
    assert_still_serving(server.addr());
}

#[test]
fn body_one_byte_over_the_limit_is_too_large() {
    let (mock, server) = start(&[]);
    let mut raw = post_with_length(&(MAX_BODY_BYTES + 1).to_string());
    raw.extend(std::iter::repeat_n(b'a', MAX_BODY_BYTES + 1));
    let resp = request_while_sending(server.addr(), raw);
    assert_closing_error(&resp, 413, "payload_too_large");
    assert_eq!(mock.request_count(), 0);
    assert_still_serving(server.addr());
}

#[test]
fn body_at_the_limit_is_accepted() {
    let (mock, server) = start(&[]);
    mock.add_code("abc");
    // `code_verifier` is forwarded and ignored by the mock for a plain code;
    // it pads the form to exactly the limit.
    let prefix = "code=abc&code_verifier=";
    let body = format!("{prefix}{}", "v".repeat(MAX_BODY_BYTES - prefix.len()));
    assert_eq!(body.len(), MAX_BODY_BYTES);
    let raw = raw_post("/swap", "application/x-www-form-urlencoded", &body);
    let resp = request(server.addr(), &raw);
    assert_swapped(&resp, "abc");
}

#[test]
fn oversized_content_length_is_refused_by_number() {
    let (mock, server) = start(&[]);
    for length in [
        "1000000000000",
        &u64::MAX.to_string(),
        "123456789012345678901234567890",
    ] {
        // The head alone: a server that tried to allocate or read the
        // announced body would crash or hang instead of answering.
        let resp = request(server.addr(), &post_with_length(length));
        assert_closing_error(&resp, 413, "payload_too_large");
        assert_still_serving(server.addr());
    }
    assert_eq!(mock.request_count(), 0);
}

#[test]
fn chunked_body_over_the_limit_is_too_large() {
    let (mock, server) = start(&[]);
    let mut raw = b"POST /swap HTTP/1.1\r\nHost: localhost\r\n\
                    Content-Type: application/x-www-form-urlencoded\r\n\
                    Transfer-Encoding: chunked\r\n\r\n"
        .to_vec();
    // Chunks of 1 KiB each, 9 of them: only their sum is over the limit.
    for _ in 0..9 {
        raw.extend_from_slice(b"400\r\n");
        raw.extend(std::iter::repeat_n(b'a', 1024));
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let resp = request_while_sending(server.addr(), raw);
    assert_closing_error(&resp, 413, "payload_too_large");
    assert_eq!(mock.request_count(), 0);
    assert_still_serving(server.addr());
}

#[test]
fn oversized_chunk_is_refused_by_its_announced_size() {
    let (mock, server) = start(&[]);
    let raw = b"POST /swap HTTP/1.1\r\nHost: localhost\r\n\
                Content-Type: application/x-www-form-urlencoded\r\n\
                Transfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n";
    let resp = request(server.addr(), raw);
    assert_closing_error(&resp, 413, "payload_too_large");
    assert_eq!(mock.request_count(), 0);
    assert_still_serving(server.addr());
}

// ---------------------------------------------------------------------------
// 505
// ---------------------------------------------------------------------------

#[test]
fn http2_request_line_is_version_not_supported() {
    let (_mock, server) = start(&[]);
    let resp = request(server.addr(), b"GET / HTTP/2.0\r\nHost: localhost\r\n\r\n");
    assert_closing_error(&resp, 505, "http_version_not_supported");
    assert_still_serving(server.addr());
}

#[test]
fn http2_preface_is_version_not_supported() {
    let (_mock, server) = start(&[]);
    let resp = request(server.addr(), b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    assert_closing_error(&resp, 505, "http_version_not_supported");
    assert_still_serving(server.addr());
}

#[test]
fn unknown_http1_minor_version_is_version_not_supported() {
    let (_mock, server) = start(&[]);
    let resp = request(
        server.addr(),
        b"GET /health HTTP/1.2\r\nHost: localhost\r\n\r\n",
    );
    assert_closing_error(&resp, 505, "http_version_not_supported");
    assert_still_serving(server.addr());
}

// ---------------------------------------------------------------------------
// 415
// ---------------------------------------------------------------------------

#[test]
fn text_plain_body_on_swap_is_unsupported_media_type() {
    let (mock, server) = start(&[]);
    mock.add_code("abc");
    let resp = request(server.addr(), &raw_post("/swap", "text/plain", "code=abc"));
    assert_error(&resp, 415, "unsupported_media_type");
    assert_eq!(mock.request_count(), 0);
    assert_still_serving(server.addr());
}

// ---------------------------------------------------------------------------
// 431
// ---------------------------------------------------------------------------

#[test]
fn head_over_8_kib_is_too_large() {
    let (_mock, server) = start(&[]);
    // 10 lines of ~900 bytes: no single line is remarkable, the sum is.
    let raw = get_with_headers(&header_lines(10, 900));
    assert!(raw.len() > MAX_HEAD_BYTES);
    let resp = request_while_sending(server.addr(), raw);
    assert_closing_error(&resp, 431, "request_header_fields_too_large");
    assert_still_serving(server.addr());
}

#[test]
fn head_of_exactly_8_kib_is_accepted() {
    let (_mock, server) = start(&[]);
    let pad = MAX_HEAD_BYTES - get_with_headers(&[]).len() - "X-Pad: \r\n".len();
    let raw = get_with_headers(&[format!("X-Pad: {}", "p".repeat(pad))]);
    assert_eq!(raw.len(), MAX_HEAD_BYTES);
    let resp = request(server.addr(), &raw);
    assert_eq!(resp.status, 200, "{resp:?}");
}

#[test]
fn sixty_five_header_lines_are_too_many() {
    let (_mock, server) = start(&[]);
    // Host plus 64 more.
    let raw = get_with_headers(&header_lines(MAX_HEADER_LINES, 4));
    let resp = request(server.addr(), &raw);
    assert_closing_error(&resp, 431, "request_header_fields_too_large");
    assert_still_serving(server.addr());
}

#[test]
fn sixty_four_header_lines_are_accepted() {
    let (_mock, server) = start(&[]);
    // Host plus 63 more.
    let raw = get_with_headers(&header_lines(MAX_HEADER_LINES - 1, 4));
    let resp = request(server.addr(), &raw);
    assert_eq!(resp.status, 200, "{resp:?}");
}

#[test]
fn single_100_kib_header_is_too_large() {
    let (_mock, server) = start(&[]);
    let raw = get_with_headers(&[format!("X-Huge: {}", "h".repeat(100 * 1024))]);
    let resp = request_while_sending(server.addr(), raw);
    assert_closing_error(&resp, 431, "request_header_fields_too_large");
    assert_still_serving(server.addr());
}

// ---------------------------------------------------------------------------
// 400, 501: framing and syntax
// ---------------------------------------------------------------------------

#[test]
fn conflicting_content_lengths_are_a_bad_request() {
    let (mock, server) = start(&[]);
    mock.add_code("abc");
    let raw = b"POST /swap HTTP/1.1\r\nHost: localhost\r\n\
                Content-Type: application/x-www-form-urlencoded\r\n\
                Content-Length: 8\r\nContent-Length: 9\r\n\r\ncode=abc&";
    let resp = request(server.addr(), raw);
    assert_closing_error(&resp, 400, "invalid_request");
    assert_eq!(mock.request_count(), 0);
    assert_still_serving(server.addr());
}

#[test]
fn content_length_with_transfer_encoding_is_a_bad_request() {
    let (mock, server) = start(&[]);
    mock.add_code("abc");
    let raw = b"POST /swap HTTP/1.1\r\nHost: localhost\r\n\
                Content-Type: application/x-www-form-urlencoded\r\n\
                Content-Length: 8\r\nTransfer-Encoding: chunked\r\n\r\n\
                8\r\ncode=abc\r\n0\r\n\r\n";
    let resp = request(server.addr(), raw);
    assert_closing_error(&resp, 400, "invalid_request");
    assert_eq!(mock.request_count(), 0);
    assert_still_serving(server.addr());
}

#[test]
fn malformed_chunked_framing_is_a_bad_request() {
    let (mock, server) = start(&[]);
    mock.add_code("abc");
    // A chunk that is longer than its size line says.
    let raw = b"POST /swap HTTP/1.1\r\nHost: localhost\r\n\
                Content-Type: application/x-www-form-urlencoded\r\n\
                Transfer-Encoding: chunked\r\n\r\n\
                4\r\ncode=abc\r\n0\r\n\r\n";
    let resp = request(server.addr(), raw);
    assert_closing_error(&resp, 400, "invalid_request");
    assert_eq!(mock.request_count(), 0);
    assert_still_serving(server.addr());
}

#[test]
fn nul_byte_in_a_header_is_a_bad_request() {
    let (_mock, server) = start(&[]);
    let raw = b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Evil: a\0b\r\n\r\n";
    let resp = request(server.addr(), raw);
    assert_closing_error(&resp, 400, "invalid_request");
    assert_still_serving(server.addr());
}

#[test]
fn raw_garbage_is_a_bad_request() {
    let (_mock, server) = start(&[]);
    // The start of a TLS ClientHello, then binary noise, then a blank line.
    let mut raw = vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03];
    raw.extend((0u8..=255).rev());
    raw.extend_from_slice(b"\r\n\r\n");
    let resp = request(server.addr(), &raw);
    assert_closing_error(&resp, 400, "invalid_request");
    assert_still_serving(server.addr());
}

#[test]
fn gzip_transfer_encoding_is_not_implemented() {
    let (mock, server) = start(&[]);
    let raw = b"POST /swap HTTP/1.1\r\nHost: localhost\r\n\
                Content-Type: application/x-www-form-urlencoded\r\n\
                Transfer-Encoding: gzip\r\n\r\n\x1f\x8b\x08\x00";
    let resp = request(server.addr(), raw);
    assert_closing_error(&resp, 501, "not_implemented");
    assert_eq!(mock.request_count(), 0);
    assert_still_serving(server.addr());
}

// ---------------------------------------------------------------------------
// Protocol features
// ---------------------------------------------------------------------------

#[test]
fn keep_alive_serves_two_requests_on_one_connection() {
    let (mock, server) = start(&[]);
    mock.add_code("abc");
    let mut conn = Conn::open(server.addr());
    conn.send(&raw_get("/health"));
    let first = conn.read_response();
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.header("connection"), None, "{first:?}");
    conn.send(&raw_swap("abc"));
    let second = conn.read_response();
    assert_swapped(&second, "abc");
}

/// Ten requests in one write — GET, HEAD, a swap, a 404 among them — are
/// answered in order; then a batch whose last request is split across two
/// writes 200 ms apart (the partial request waits with the poller) is
/// answered in order too.
#[test]
fn pipelined_requests_are_answered_in_order() {
    let (mock, server) = start(&[]);
    mock.add_code("piped");
    let mut conn = Conn::open(server.addr());

    let mut batch = Vec::new();
    for i in 0..10 {
        batch.extend(match i {
            3 => b"HEAD /health HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
            5 => raw_swap("piped"),
            7 => raw_get("/no-such-endpoint"),
            _ => raw_get("/health"),
        });
    }
    conn.send(&batch);
    for i in 0..10 {
        match i {
            3 => {
                let head = conn.read_head_response();
                assert_eq!(head.status, 200, "{head:?}");
                assert_eq!(head.header("content-length"), Some("15"), "{head:?}");
            }
            5 => assert_swapped(&conn.read_response(), "piped"),
            7 => assert_error(&conn.read_response(), 404, "not_found"),
            _ => assert_health(&conn.read_response()),
        }
    }

    let mut second = raw_get("/health");
    second.extend(raw_get("/no-such-endpoint"));
    let split = raw_get("/health");
    second.extend_from_slice(&split[..10]);
    conn.send(&second);
    thread::sleep(Duration::from_millis(200));
    conn.send(&split[10..]);
    assert_health(&conn.read_response());
    assert_error(&conn.read_response(), 404, "not_found");
    assert_health(&conn.read_response());
}

#[test]
fn http10_request_is_answered_and_closed() {
    let _timed = timed();
    let (_mock, server) = start(&[]);
    let mut conn = Conn::open(server.addr());
    conn.send(b"GET /health HTTP/1.0\r\n\r\n");
    let resp = conn.read_response();
    assert_health(&resp);
    assert_eq!(resp.header("connection"), Some("close"), "{resp:?}");
    assert!(conn.is_closed_by_peer(PROMPT_CLOSE));
}

#[test]
fn http10_keep_alive_is_honoured() {
    let (_mock, server) = start(&[]);
    let mut conn = Conn::open(server.addr());
    let raw = b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
    conn.send(raw);
    let first = conn.read_response();
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.header("connection"), Some("keep-alive"), "{first:?}");
    conn.send(raw);
    let second = conn.read_response();
    assert_eq!(second.status, 200, "{second:?}");
}

/// `Expect: 100-continue`: 100 first, Spotify not called until the body
/// comes, then the answer; the connection stays usable for the next
/// request.
#[test]
fn expect_continue_gets_100_then_the_answer_and_the_connection_stays_usable() {
    let (mock, server) = start(&[]);
    mock.add_code("abc");
    let body = form_body(&[("code", "abc")]);
    let head = format!(
        "POST /swap HTTP/1.1\r\nHost: localhost\r\n\
         Content-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    let mut conn = Conn::open(server.addr());
    conn.send(head.as_bytes());
    let interim = conn.read_response();
    assert_eq!(interim.status, 100, "{interim:?}");
    assert_eq!(
        mock.request_count(),
        0,
        "Spotify called before the body came"
    );
    conn.send(body.as_bytes());
    assert_swapped(&conn.read_response(), "abc");
    assert_eq!(
        mock.last_request().expect("upstream call").field("code"),
        Some("abc")
    );
    conn.send(&raw_get("/health"));
    assert_health(&conn.read_response());
}

#[test]
fn expect_continue_with_oversized_length_gets_413_without_100() {
    let (mock, server) = start(&[]);
    let raw = b"POST /swap HTTP/1.1\r\nHost: localhost\r\n\
                Content-Type: application/x-www-form-urlencoded\r\n\
                Content-Length: 1000000\r\nExpect: 100-continue\r\n\r\n";
    let mut conn = Conn::open(server.addr());
    conn.send(raw);
    assert_closing_error(&conn.read_response(), 413, "payload_too_large");
    assert_eq!(mock.request_count(), 0);
    assert_still_serving(server.addr());
}

#[test]
fn chunked_body_on_swap_reaches_spotify() {
    let (mock, server) = start(&[]);
    mock.add_code("chunky");
    let raw = b"POST /swap HTTP/1.1\r\nHost: localhost\r\n\
                Content-Type: application/x-www-form-urlencoded\r\n\
                Transfer-Encoding: chunked\r\n\r\n\
                5\r\ncode=\r\n6;ext=1\r\nchunky\r\n0\r\n\r\n";
    let resp = request(server.addr(), raw);
    assert_swapped(&resp, "chunky");
    let upstream = mock.last_request().expect("upstream call");
    assert_eq!(upstream.field("code"), Some("chunky"));
}

#[test]
fn absolute_form_target_is_routed_by_its_path() {
    let (_mock, server) = start(&[]);
    let resp = request(
        server.addr(),
        b"GET http://x/health HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_health(&resp);
}

#[test]
fn options_asterisk_is_no_content() {
    let (_mock, server) = start(&[]);
    let resp = request(
        server.addr(),
        b"OPTIONS * HTTP/1.1\r\nHost: localhost\r\n\r\n",
    );
    assert_eq!(resp.status, 204, "{resp:?}");
    assert!(resp.body.is_empty(), "{resp:?}");
    assert!(resp.header("allow").is_some(), "{resp:?}");
}

#[test]
fn query_string_on_swap_is_ignored_for_routing() {
    let (mock, server) = start(&[]);
    mock.add_code("abc");
    let raw = raw_post(
        "/swap?code=from-query&x=1",
        "application/x-www-form-urlencoded",
        &form_body(&[("code", "abc")]),
    );
    let resp = request(server.addr(), &raw);
    assert_swapped(&resp, "abc");
    assert_eq!(
        mock.last_request().expect("upstream call").field("code"),
        Some("abc")
    );
}

#[test]
fn query_string_is_not_logged() {
    let (mock, server) = start(&[]);
    mock.add_code("abc");
    let raw = raw_post(
        "/swap?code=secret-in-query",
        "application/x-www-form-urlencoded",
        &form_body(&[("code", "abc")]),
    );
    assert_swapped(&request(server.addr(), &raw), "abc");
    assert!(
        server.wait_for_stderr("POST /swap 200 ", Duration::from_secs(5)),
        "no log line for the request:\n{}",
        server.stderr()
    );
    assert!(
        !server.stderr().contains("secret-in-query"),
        "{}",
        server.stderr()
    );
}

#[test]
fn connection_close_is_honoured() {
    let _timed = timed();
    let (_mock, server) = start(&[]);
    let mut conn = Conn::open(server.addr());
    conn.send(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let resp = conn.read_response();
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header("connection"), Some("close"), "{resp:?}");
    assert!(conn.is_closed_by_peer(PROMPT_CLOSE));
}

#[test]
fn idle_keep_alive_connection_is_closed_after_about_5_s() {
    let _timed = timed();
    let (_mock, server) = start(&[]);
    let mut conn = Conn::open(server.addr());
    conn.send(&raw_get("/health"));
    let resp = conn.read_response();
    assert_eq!(resp.status, 200, "{resp:?}");
    let idle_since = Instant::now();
    assert!(
        conn.is_closed_by_peer(Duration::from_secs(7)),
        "an idle keep-alive connection was still open after 7 s"
    );
    let idle = idle_since.elapsed();
    assert!(idle >= Duration::from_secs(4), "closed after only {idle:?}");
}

#[test]
fn head_on_health_has_headers_but_no_body() {
    let (_mock, server) = start(&[]);
    let mut conn = Conn::open(server.addr());
    // HEAD then GET on one connection: a body after the HEAD response would
    // be misread as the start of the GET response.
    conn.send(b"HEAD /health HTTP/1.1\r\nHost: localhost\r\n\r\n");
    conn.send(&raw_get("/health"));
    let head = conn.read_head_response();
    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(head.header("content-type"), Some("application/json"));
    assert_eq!(head.header("content-length"), Some("15"), "{head:?}");
    assert_health(&conn.read_response());
}

#[test]
fn keep_alive_survives_a_client_connecting_alongside() {
    let _timed = timed();
    // With workers to spare, a connection queued for the moment it takes an
    // idle worker to pick it up is not "waiting": the connection being
    // answered at that moment must stay open. Repeated, because the window
    // is short. Workers to spare indeed: a loaded machine can be slow to
    // retire the previous rounds' connections, and with every worker
    // really busy, closing is right.
    let (_mock, server) = start(&[("WORKER_THREADS", "16")]);
    let addr = server.addr();
    for round in 0..30 {
        let mut first = Conn::open(addr);
        first.send(&raw_get("/health"));
        let mut second = Conn::open(addr);
        second.send(&raw_get("/health"));
        for conn in [&mut first, &mut second] {
            let resp = conn.read_response();
            assert_eq!(
                resp.status, 200,
                "round {round}:
{resp:?}"
            );
            assert_eq!(
                resp.header("connection"),
                None,
                "round {round}:
{resp:?}"
            );
        }
    }
}

#[test]
fn a_late_body_holds_no_worker() {
    let _timed = timed();
    let (mock, server) = start(&[("WORKER_THREADS", "1")]);
    mock.add_code("abc");
    let addr = server.addr();
    // The only worker would be held by a request whose body is late, if a
    // connection waiting for bytes held one …
    let body = form_body(&[("code", "abc")]);
    let mut late = Conn::open(addr);
    late.send(&post_with_length(&body.len().to_string()));
    thread::sleep(Duration::from_millis(100));
    // … so another client is answered meanwhile, at once.
    let started = Instant::now();
    let mut other = Conn::open(addr);
    other.send(&raw_get("/health"));
    assert_eq!(other.read_response().status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "answered only after {:?}",
        started.elapsed()
    );
    // The late body still completes its request, and the connection stays.
    late.send(body.as_bytes());
    let resp = late.read_response();
    assert_swapped(&resp, "abc");
    assert_eq!(resp.header("connection"), None, "{resp:?}");
    late.send(&raw_get("/health"));
    assert_eq!(late.read_response().status, 200);
}

#[test]
fn idle_keep_alive_connection_holds_no_worker() {
    let _timed = timed();
    let (_mock, server) = start(&[("WORKER_THREADS", "1")]);
    let addr = server.addr();
    let mut idle = Conn::open(addr);
    idle.send(&raw_get("/health"));
    assert_eq!(idle.read_response().status, 200);

    let started = Instant::now();
    let mut other = Conn::open(addr);
    other.send(&raw_get("/health"));
    let resp = other.read_response();
    let took = started.elapsed();
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header("connection"), None, "{resp:?}");
    // Well before the 5 s idle timeout would have freed a worker.
    assert!(took < Duration::from_secs(1), "served only after {took:?}");
    // The idle connection was not given up for it.
    idle.send(&raw_get("/health"));
    assert_eq!(idle.read_response().status, 200);
}

// ---------------------------------------------------------------------------
// Per-client connection cap
// ---------------------------------------------------------------------------

#[test]
fn connection_over_the_per_client_cap_is_answered_503_and_closed() {
    let _timed = timed();
    // 127.0.0.1 is not a trusted proxy here, so it is counted.
    let (_mock, server) = start(&[
        ("MAX_CONNECTIONS_PER_CLIENT", "2"),
        ("TRUSTED_PROXIES", "192.0.2.1"),
    ]);
    let addr = server.addr();
    let mut first = Conn::open(addr);
    let mut second = Conn::open(addr);
    // Both are admitted once the server answers on them.
    for conn in [&mut first, &mut second] {
        conn.send(&raw_get("/health"));
        assert_eq!(conn.read_response().status, 200);
    }

    let mut third = Conn::open(addr);
    third.set_timeout(PROMPT_CLOSE);
    let resp = third.read_response();
    assert_closing_error(&resp, 503, "temporarily_unavailable");
    assert_eq!(resp.header("retry-after"), Some("1"), "{resp:?}");
    assert!(third.is_closed_by_peer(PROMPT_CLOSE));

    // The first two are still served.
    for conn in [&mut first, &mut second] {
        conn.send(&raw_get("/health"));
        assert_eq!(conn.read_response().status, 200);
    }
}

#[test]
fn closing_a_connection_frees_a_per_client_slot() {
    let _timed = timed();
    let (_mock, server) = start(&[
        ("MAX_CONNECTIONS_PER_CLIENT", "2"),
        ("TRUSTED_PROXIES", "192.0.2.1"),
    ]);
    let addr = server.addr();
    let mut kept = Conn::open(addr);
    kept.send(&raw_get("/health"));
    assert_eq!(kept.read_response().status, 200);
    let mut closed = Conn::open(addr);
    closed.send(&raw_get("/health"));
    assert_eq!(closed.read_response().status, 200);

    let mut refused = Conn::open(addr);
    refused.set_timeout(PROMPT_CLOSE);
    assert_eq!(refused.read_response().status, 503, "cap not applied");
    drop(closed);

    // The server notices the close asynchronously; try a bounded number of
    // times for the freed slot.
    let health_past_the_cap = || {
        let mut conn = Conn::open(addr);
        conn.set_timeout(Duration::from_secs(2));
        match conn
            .try_send(&raw_get("/health"))
            .and_then(|()| conn.try_read_response())
        {
            // Until the server has seen the close, the cap answers 503.
            Ok(resp) if resp.status == 503 => Err(format!("{resp:?}")),
            Ok(resp) => Ok(resp),
            Err(e) => Err(e.to_string()),
        }
    };
    let resp = retry(
        Duration::from_secs(3),
        Duration::from_millis(50),
        "a slot freed after closing a connection",
        health_past_the_cap,
    );
    assert_eq!(resp.status, 200, "{resp:?}");
}

#[test]
fn trusted_proxy_is_exempt_from_the_per_client_cap() {
    // Default TRUSTED_PROXIES: 127.0.0.1 is a trusted proxy.
    let (_mock, server) = start(&[("MAX_CONNECTIONS_PER_CLIENT", "2")]);
    let addr = server.addr();
    let mut conns: Vec<Conn> = (0..4).map(|_| Conn::open(addr)).collect();
    for conn in &mut conns {
        conn.send(&raw_get("/health"));
    }
    for conn in &mut conns {
        let resp = conn.read_response();
        assert_eq!(resp.status, 200, "{resp:?}");
    }
}

// ---------------------------------------------------------------------------
// Overload
// ---------------------------------------------------------------------------

#[test]
fn full_queue_is_answered_503_with_retry_after() {
    let _heavy = heavy();
    // One worker, held by a request Spotify answers only after a while.
    let (mock, server) = start(&[("WORKER_THREADS", "1"), ("UPSTREAM_TIMEOUT_SECS", "30")]);
    let addr = server.addr();
    let hold = Duration::from_secs(5);
    mock.set_default_reply(Some(Reply::Hang(hold)));
    let mut busy = Conn::open(addr);
    busy.set_timeout(hold + Duration::from_secs(10));
    busy.send(&raw_swap("abc"));
    wait_for_spotify_calls(&mock, 1, Duration::from_secs(3));
    let held_since = Instant::now();

    // Fill the queue with ready requests; the worker cannot take any.
    let queued: Vec<Conn> = (0..QUEUE_CAPACITY)
        .map(|_| {
            let mut conn = Conn::open(addr);
            conn.send(&raw_get("/health"));
            conn
        })
        .collect();
    let mut extra = Conn::open(addr);
    extra.send(&raw_get("/health"));
    extra.set_timeout(Duration::from_secs(3));
    let resp = extra.read_response();
    assert!(
        held_since.elapsed() < hold,
        "the queue was filled too slowly to be sure the worker was still busy"
    );
    assert_closing_error(&resp, 503, "temporarily_unavailable");
    assert_eq!(resp.header("retry-after"), Some("1"), "{resp:?}");

    // The held request is still answered (Spotify hung up: 502) …
    drop(queued);
    let held = busy.read_response();
    assert_error(&held, 502, "server_error");
    drop(busy);
    // … and once the worker has worked through the abandoned queue, the
    // server serves again.
    retry(
        Duration::from_secs(5),
        Duration::from_millis(100),
        "no longer overloaded after the queue was abandoned",
        || {
            let resp = request(addr, &raw_get("/health"));
            if resp.status == 503 {
                Err(resp)
            } else {
                Ok(())
            }
        },
    );
    assert_still_serving(addr);
}

// ---------------------------------------------------------------------------
// X-Forwarded-For
// ---------------------------------------------------------------------------

/// Waits for the log line of `GET /health` answered 200 and returns the
/// client address it names.
fn logged_client_of_health(server: &ServerProc) -> String {
    assert!(
        server.wait_for_stderr("GET /health 200 ", Duration::from_secs(5)),
        "no log line for GET /health:\n{}",
        server.stderr()
    );
    let log = server.stderr();
    let line = log
        .lines()
        .find(|line| line.contains("GET /health 200 "))
        .expect("log line seen above");
    line.rsplit(' ').next().unwrap_or_default().to_owned()
}

#[test]
fn forwarded_for_from_trusted_proxy_names_the_client_in_the_log() {
    let (_mock, server) = start(&[]);
    let raw = b"GET /health HTTP/1.1\r\nHost: localhost\r\n\
                X-Forwarded-For: 203.0.113.7\r\nConnection: close\r\n\r\n";
    assert_eq!(request(server.addr(), raw).status, 200);
    assert_eq!(logged_client_of_health(&server), "203.0.113.7");
}

#[test]
fn forwarded_for_from_untrusted_peer_is_ignored_in_the_log() {
    let (_mock, server) = start(&[("TRUSTED_PROXIES", "192.0.2.1")]);
    let raw = b"GET /health HTTP/1.1\r\nHost: localhost\r\n\
                X-Forwarded-For: 203.0.113.7\r\nConnection: close\r\n\r\n";
    assert_eq!(request(server.addr(), raw).status, 200);
    assert_eq!(logged_client_of_health(&server), "127.0.0.1");
}
