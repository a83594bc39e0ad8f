//! Reading `GET /metrics`.

use std::net::SocketAddr;

use super::client::get;

/// GETs `/metrics`, which must answer 200.
pub fn scrape(addr: SocketAddr) -> String {
    let resp = get(addr, "/metrics");
    assert_eq!(resp.status, 200, "{resp:?}");
    resp.text()
}

/// The value of the sample `series` (name with labels, exactly as
/// exposed), if present.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// Like [`sample`], for a series that must be present.
pub fn value(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}
