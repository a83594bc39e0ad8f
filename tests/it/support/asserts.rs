//! Assertions shared by the test files, each failing with the whole
//! response.

use std::net::SocketAddr;

use super::client::{Resp, get};

/// Asserts the server at `addr` still answers `GET /health` with 200
/// `{"status":"ok"}` — the check after every bad-input test.
pub fn assert_still_serving(addr: SocketAddr) {
    let resp = get(addr, "/health");
    assert_eq!(
        resp.status, 200,
        "server stopped serving /health:\n{resp:?}"
    );
    assert_eq!(
        resp.json(),
        serde_json::json!({ "status": "ok" }),
        "unexpected /health body:\n{resp:?}"
    );
}

/// Asserts `resp` is the answer to `GET /health`: 200 `{"status":"ok"}`.
pub fn assert_health(resp: &Resp) {
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(
        resp.json(),
        serde_json::json!({ "status": "ok" }),
        "{resp:?}"
    );
}

/// Asserts `resp` carries no `Access-Control-*` header; `what` names it in
/// the failure.
pub fn assert_no_cors_headers(resp: &Resp, what: &str) {
    let cors: Vec<&(String, String)> = resp
        .headers
        .iter()
        .filter(|(name, _)| name.starts_with("access-control-"))
        .collect();
    assert_eq!(cors, Vec::<&(String, String)>::new(), "{what}:\n{resp:?}");
}

/// Asserts `resp` is one of our JSON errors: `status`, media type exactly
/// `application/json`, `error` equal to `code` and a string
/// `error_description`.
///
/// # Panics
/// With the whole response, if any of that does not hold.
pub fn assert_error(resp: &Resp, status: u16, code: &str) {
    assert_eq!(resp.status, status, "unexpected status:\n{resp:?}");
    assert_eq!(
        resp.header("content-type"),
        Some("application/json"),
        "errors must be application/json:\n{resp:?}"
    );
    let body = resp.json();
    assert_eq!(body["error"], code, "unexpected error code:\n{resp:?}");
    assert!(
        body["error_description"].is_string(),
        "error_description must be a string:\n{resp:?}"
    );
}

/// Asserts `resp` is our own 429 `too_many_requests` with an integer
/// `Retry-After` from 1 to `max_secs` seconds.
pub fn assert_too_many_requests(resp: &Resp, max_secs: u64) {
    assert_error(resp, 429, "too_many_requests");
    let secs: u64 = resp
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no integer Retry-After:\n{resp:?}"));
    assert!(
        (1..=max_secs).contains(&secs),
        "Retry-After {secs}:\n{resp:?}"
    );
}

/// Asserts `resp` is the mock's JSON token response for `code`.
pub fn assert_swapped(resp: &Resp, code: &str) {
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(
        resp.json()["access_token"],
        serde_json::json!(format!("access-{code}")),
        "{resp:?}"
    );
}
