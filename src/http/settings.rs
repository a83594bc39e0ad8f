//! The HTTP layer's settings: the values that come from configuration,
//! nothing derived. A new setting of the layer is a field here (and a row
//! of the configuration table that fills it).

use std::time::Duration;

use super::net::IpNet;

/// Settings of the HTTP layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Size of the fixed pool of worker threads.
    pub worker_threads: usize,
    /// Open connections at most, all clients together; `None`: what the
    /// open-files limit leaves room for.
    pub max_connections: Option<usize>,
    /// Open connections at most from one client (trusted proxies are
    /// exempt).
    pub max_connections_per_client: usize,
    /// Leading bits of an IPv6 address that name one client (an IPv4
    /// address is one client).
    pub client_ipv6_prefix: u8,
    /// Peers exempt from the per-client cap, whose `X-Forwarded-For` names
    /// the client: addresses and ranges.
    pub trusted_proxies: Vec<IpNet>,
    /// Longest a request may take once read (the upstream timeout); bounds
    /// the shutdown wait.
    pub request_time_limit: Duration,
}
