//! Request-head parsing: httparse plus our framing rules, as the connection
//! loop runs them on whatever bytes have arrived.
//!
//! Input: raw bytes, as a client would send them (seeds are real heads).
//!
//! Invariants checked besides "never panics":
//! - a complete head is no longer than the input nor than `MAX_HEAD_BYTES`;
//! - a head never declares both a Content-Length and chunked framing
//!   (request smuggling);
//! - the path never keeps a query string or fragment (it is logged);
//! - the head alone parses to the same result, and no shorter prefix of it is
//!   complete or an error: the connection loop re-parses as bytes trickle in,
//!   so an answer must not depend on how the head was split into reads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spotify_token_swap::http::{MAX_HEAD_BYTES, inspect_head};

fuzz_target!(|data: &[u8]| {
    let Ok(Some(head)) = inspect_head(data) else {
        return;
    };
    let n = head.head_bytes;
    assert!(n <= data.len(), "head of {n} bytes in {} bytes", data.len());
    assert!(n <= MAX_HEAD_BYTES, "head of {n} bytes accepted");
    assert!(
        !(head.chunked && head.content_length.is_some()),
        "both Content-Length and chunked: {head:?}"
    );
    assert!(
        !head.path.contains(['?', '#']),
        "query or fragment kept in the path: {head:?}"
    );
    assert!(!head.method.is_empty(), "empty method: {head:?}");

    assert_eq!(
        inspect_head(&data[..n]),
        Ok(Some(head)),
        "the head alone parses differently"
    );
    // Prefixes, as the connection loop would see them: the last few bytes
    // one by one (where the final CRLF arrives), and a spread of others.
    let step = (n / 16).max(1);
    let prefixes = (0..n).step_by(step).chain(n.saturating_sub(4)..n);
    for k in prefixes {
        assert_eq!(
            inspect_head(&data[..k]),
            Ok(None),
            "prefix of {k} of a {n}-byte head is not just incomplete"
        );
    }
});
