//! Counters for `GET /metrics`, in Prometheus text exposition format.
//!
//! Plain atomics and one small mutex-guarded table; recording a request costs
//! a lock of a few nanoseconds, nothing allocates after the first request of
//! each (endpoint, status) pair.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::http::Stats;
use crate::spotify::FailureKind;

/// Upper bounds (seconds) of the upstream latency histogram buckets.
const LATENCY_BUCKETS_SECS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Endpoints as metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Endpoint {
    Swap,
    Refresh,
    Health,
    Metrics,
    Other,
}

impl Endpoint {
    fn label(self) -> &'static str {
        match self {
            Endpoint::Swap => "swap",
            Endpoint::Refresh => "refresh",
            Endpoint::Health => "health",
            Endpoint::Metrics => "metrics",
            Endpoint::Other => "other",
        }
    }
}

/// All counters.
#[derive(Debug)]
pub(crate) struct Metrics {
    requests: Mutex<BTreeMap<(Endpoint, u16), u64>>,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_SECS.len()],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
    upstream_failures: [AtomicU64; 5],
    rate_limited: AtomicU64,
    /// Refresh tokens opened under the current key, and under a previous one.
    tokens_opened: [AtomicU64; 2],
    started_unix_secs: f64,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// Fresh counters; the process start time is now.
    pub(crate) fn new() -> Metrics {
        Metrics {
            requests: Mutex::new(BTreeMap::new()),
            latency_buckets: Default::default(),
            latency_count: AtomicU64::new(0),
            latency_sum_micros: AtomicU64::new(0),
            upstream_failures: Default::default(),
            rate_limited: AtomicU64::new(0),
            tokens_opened: Default::default(),
            started_unix_secs: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        }
    }

    /// Counts one answered request.
    pub(crate) fn request(&self, endpoint: Endpoint, status: u16) {
        let mut table = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *table.entry((endpoint, status)).or_insert(0) += 1;
    }

    /// Records the duration of one upstream call that got an answer or
    /// failed.
    pub(crate) fn upstream_call(&self, duration: Duration) {
        let secs = duration.as_secs_f64();
        for (bound, count) in LATENCY_BUCKETS_SECS.iter().zip(&self.latency_buckets) {
            if secs <= *bound {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros
            .fetch_add(duration.as_micros() as u64, Ordering::Relaxed);
    }

    /// Counts an upstream failure.
    pub(crate) fn upstream_failure(&self, kind: FailureKind) {
        self.upstream_failures[failure_index(kind)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request refused by `RATE_LIMIT_PER_MINUTE`.
    pub(crate) fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a refresh token that opened, by the key it opened with.
    pub(crate) fn token_opened(&self, previous_key: bool) {
        self.tokens_opened[usize::from(previous_key)].fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text.
    pub(crate) fn render(&self, stats: &Stats) -> String {
        let mut out = Exposition(String::with_capacity(4096));
        self.render_requests(&mut out);
        self.render_upstream(&mut out);
        self.render_tokens_opened(&mut out);
        render_single_values(&mut out, self.single_values(stats));
        out.family("process_start_time_seconds", "gauge", PROCESS_START_HELP);
        out.sample(
            "process_start_time_seconds",
            "",
            self.started_unix_secs.floor(),
        );
        out.family(BUILD_INFO, "gauge", "Build information.");
        let version = format!("version=\"{}\"", env!("CARGO_PKG_VERSION"));
        out.sample(BUILD_INFO, &version, 1);
        out.0
    }

    fn render_requests(&self, out: &mut Exposition) {
        const NAME: &str = "spotify_token_swap_requests_total";
        out.family(
            NAME,
            "counter",
            "Requests answered, by endpoint and status.",
        );
        let table = self
            .requests
            .lock()
            .map(|t| t.clone())
            .unwrap_or_else(|e| e.into_inner().clone());
        for ((endpoint, status), n) in &table {
            let labels = format!("endpoint=\"{}\",status=\"{status}\"", endpoint.label());
            out.sample(NAME, &labels, n);
        }
    }

    fn render_upstream(&self, out: &mut Exposition) {
        const NAME: &str = "spotify_token_swap_upstream_duration_seconds";
        out.family(
            NAME,
            "histogram",
            "Duration of calls to Spotify's token endpoint.",
        );
        let bucket = format!("{NAME}_bucket");
        for (bound, count) in LATENCY_BUCKETS_SECS.iter().zip(&self.latency_buckets) {
            out.sample(&bucket, &format!("le=\"{bound}\""), load(count));
        }
        let count = load(&self.latency_count);
        out.sample(&bucket, "le=\"+Inf\"", count);
        let sum_secs = load(&self.latency_sum_micros) as f64 / 1e6;
        out.sample(&format!("{NAME}_sum"), "", sum_secs);
        out.sample(&format!("{NAME}_count"), "", count);

        const FAILURES: &str = "spotify_token_swap_upstream_failures_total";
        out.family(FAILURES, "counter", "Failed calls to Spotify, by kind.");
        for kind in ALL_FAILURES {
            let labels = format!("kind=\"{}\"", kind.label());
            out.sample(
                FAILURES,
                &labels,
                load(&self.upstream_failures[failure_index(kind)]),
            );
        }
    }

    fn render_tokens_opened(&self, out: &mut Exposition) {
        const NAME: &str = "spotify_token_swap_refresh_tokens_opened_total";
        out.family(NAME, "counter", TOKENS_OPENED_HELP);
        for (key, count) in ["current", "previous"].iter().zip(&self.tokens_opened) {
            out.sample(NAME, &format!("key=\"{key}\""), load(count));
        }
    }

    /// The metrics that are one number each: (name, type, help, value).
    fn single_values(&self, stats: &Stats) -> [(&'static str, &'static str, &'static str, u64); 5] {
        [
            (
                "rate_limited_total",
                "counter",
                "Requests refused by RATE_LIMIT_PER_MINUTE.",
                load(&self.rate_limited),
            ),
            (
                "rejected_overloaded_total",
                "counter",
                "Connections turned away by MAX_CONNECTIONS or a full queue (503; closed on a TLS port).",
                load(&stats.rejected_overloaded),
            ),
            (
                "rejected_connection_cap_total",
                "counter",
                "Connections turned away by MAX_CONNECTIONS_PER_CLIENT (503; closed on a TLS port).",
                load(&stats.rejected_per_client_cap),
            ),
            (
                "open_connections",
                "gauge",
                "Connections accepted and not yet closed.",
                stats.open_connections.load(Ordering::Relaxed) as u64,
            ),
            (
                "busy_workers",
                "gauge",
                "Workers taking a turn on a connection.",
                stats.busy_workers.load(Ordering::Relaxed) as u64,
            ),
        ]
    }
}

const BUILD_INFO: &str = "spotify_token_swap_build_info";
const PROCESS_START_HELP: &str = "Start time of the process since the Unix epoch.";
const TOKENS_OPENED_HELP: &str = "Refresh tokens opened, by key: \
    the current ENCRYPTION_SECRET or one of ENCRYPTION_SECRET_PREVIOUS.";

fn render_single_values(out: &mut Exposition, values: [(&str, &str, &str, u64); 5]) {
    for (name, kind, help, value) in values {
        let name = format!("spotify_token_swap_{name}");
        out.family(&name, kind, help);
        out.sample(&name, "", value);
    }
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Text in the exposition format, a line at a time.
struct Exposition(String);

impl Exposition {
    /// The `# HELP` and `# TYPE` lines that open a metric family.
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample; `labels` without braces, empty for none.
    fn sample(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        if labels.is_empty() {
            let _ = writeln!(self.0, "{name} {value}");
        } else {
            let _ = writeln!(self.0, "{name}{{{labels}}} {value}");
        }
    }
}

const ALL_FAILURES: [FailureKind; 5] = [
    FailureKind::Timeout,
    FailureKind::Connect,
    FailureKind::ServerError,
    FailureKind::RateLimited,
    FailureKind::BadResponse,
];

fn failure_index(kind: FailureKind) -> usize {
    match kind {
        FailureKind::Timeout => 0,
        FailureKind::Connect => 1,
        FailureKind::ServerError => 2,
        FailureKind::RateLimited => 3,
        FailureKind::BadResponse => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_requests_by_endpoint_and_status() {
        let m = Metrics::new();
        m.request(Endpoint::Swap, 200);
        m.request(Endpoint::Swap, 200);
        m.request(Endpoint::Refresh, 400);
        let text = m.render(&Stats::default());
        assert!(
            text.contains(
                "spotify_token_swap_requests_total{endpoint=\"swap\",status=\"200\"} 2\n"
            )
        );
        assert!(text.contains(
            "spotify_token_swap_requests_total{endpoint=\"refresh\",status=\"400\"} 1\n"
        ));
    }

    #[test]
    fn refresh_tokens_opened_are_counted_by_key() {
        let m = Metrics::new();
        m.token_opened(false);
        m.token_opened(true);
        m.token_opened(true);
        let text = m.render(&Stats::default());
        assert!(
            text.contains("spotify_token_swap_refresh_tokens_opened_total{key=\"current\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("spotify_token_swap_refresh_tokens_opened_total{key=\"previous\"} 2\n"),
            "{text}"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::new();
        m.upstream_call(Duration::from_millis(7));
        m.upstream_call(Duration::from_millis(300));
        let text = m.render(&Stats::default());
        assert!(text.contains("_bucket{le=\"0.005\"} 0\n"));
        assert!(text.contains("_bucket{le=\"0.01\"} 1\n"));
        assert!(text.contains("_bucket{le=\"0.5\"} 2\n"));
        assert!(text.contains("_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("_count 2\n"));
    }
}
