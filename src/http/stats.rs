//! Live counters of the HTTP layer, read by the app for `/metrics`.

use std::sync::atomic::{AtomicU64, AtomicUsize};

/// Live counters of the HTTP layer, for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    pub(crate) open_connections: AtomicUsize,
    /// Workers serving a connection right now.
    pub busy_workers: AtomicUsize,
    pub(crate) rejected_overloaded: AtomicU64,
    pub(crate) rejected_per_client_cap: AtomicU64,
}
