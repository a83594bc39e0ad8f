//! Counters for `GET /metrics`, in Prometheus text exposition format.
//!
//! Plain atomics and one small mutex-guarded table; recording a request costs
//! a lock of a few nanoseconds, nothing allocates after the first request of
//! each (endpoint, app, status).
//!
//! With several apps (`SPOTIFY_APPS`), the request, upstream and rate-limit
//! families carry an `app` label: the app a request was answered for, and
//! upstream calls and refusals by app. A request that names no app (`/health`,
//! `/metrics`, an unknown path, a token request refused before its app was
//! known, the HTTP layer's own refusals) has no `app` label, which
//! Prometheus reads as `app=""`. With one app there is no `app` label at
//! all: the same series as ever.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::http::Stats;
use crate::upstream::{FailureKind, RateLimitReason};

/// Upper bounds (seconds) of the upstream latency histogram buckets.
const LATENCY_BUCKETS_SECS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Upper bounds (days) of the histogram of refresh-token age at refresh:
/// fine near Spotify's 180 days, where users are about to be asked to
/// sign in again.
const TOKEN_AGE_BUCKETS_DAYS: [u64; 7] = [1, 7, 30, 90, 150, 170, 180];
/// Seconds in a day.
const SECS_PER_DAY: u64 = 86_400;

/// All counters.
#[derive(Debug)]
pub(crate) struct Metrics {
    /// Each endpoint's label, by its index in the table of endpoints.
    endpoint_labels: Vec<&'static str>,
    /// Each app's `app` label, by its index; empty with one app (no label).
    app_names: Vec<String>,
    /// Answered requests by (endpoint index, app index, status).
    requests: Mutex<BTreeMap<RequestKey, u64>>,
    /// Calls to Spotify, by app (one with one app).
    upstream: Vec<Upstream>,
    /// Requests refused by `RATE_LIMIT_PER_MINUTE`, by app; the last: of no
    /// app.
    rate_limited: Vec<AtomicU64>,
    /// Refresh tokens opened under the current key, and under a previous one.
    tokens_opened: [AtomicU64; 2],
    started_unix_secs: f64,
    /// Spotify's 429s by reason, in [`RateLimitReason::ALL`]'s order.
    upstream_rate_limited: [AtomicU64; RateLimitReason::ALL.len()],
    /// Age of the refresh tokens that carry a sign-in time, at refresh.
    token_age: TokenAge,
    /// With `ACME_DOMAINS`: the certificate's expiry and ACME's failures.
    certificate: Option<Arc<CertificateMetrics>>,
}

/// What `acme/` reports: the served certificate's `notAfter` (Unix
/// seconds; 0 until there is one) and the failed attempts to get one.
#[derive(Debug, Default)]
pub(crate) struct CertificateMetrics {
    pub(crate) expiry_unix_secs: AtomicU64,
    pub(crate) acme_failures: AtomicU64,
}

/// The refresh-token age histogram: cumulative counts per bucket of
/// [`TOKEN_AGE_BUCKETS_DAYS`], the count, and the sum in seconds.
#[derive(Debug, Default)]
struct TokenAge {
    buckets: [AtomicU64; TOKEN_AGE_BUCKETS_DAYS.len()],
    count: AtomicU64,
    sum_secs: AtomicU64,
}

/// What answered requests are counted by: endpoint index, app index (none
/// for a request of no app), status.
type RequestKey = (usize, Option<usize>, u16);

/// One app's calls to Spotify.
#[derive(Debug, Default)]
struct Upstream {
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_SECS.len()],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
    failures: [AtomicU64; FailureKind::ALL.len()],
}

impl Metrics {
    /// Fresh counters; the process start time is now. `endpoint_labels`:
    /// the label of each endpoint, in the order `/metrics` lists them;
    /// `app_names`: each app's `app` label, none with one app.
    pub(crate) fn new(endpoint_labels: Vec<&'static str>, app_names: Vec<String>) -> Metrics {
        let apps = app_names.len().max(1);
        Metrics {
            endpoint_labels,
            requests: Mutex::new(BTreeMap::new()),
            upstream: (0..apps).map(|_| Upstream::default()).collect(),
            rate_limited: (0..=apps).map(|_| AtomicU64::new(0)).collect(),
            app_names,
            tokens_opened: Default::default(),
            upstream_rate_limited: Default::default(),
            token_age: TokenAge::default(),
            certificate: None,
            started_unix_secs: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        }
    }

    /// With `acme`, also exports [`CertificateMetrics`] (and keeps them).
    pub(crate) fn with_certificate(mut self, acme: bool) -> Metrics {
        self.certificate = acme.then(Arc::default);
        self
    }

    /// The certificate's metrics, when exported.
    pub(crate) fn certificate(&self) -> Option<Arc<CertificateMetrics>> {
        self.certificate.clone()
    }

    /// Counts one answered request; `endpoint` indexes the labels given
    /// to [`Metrics::new`], `app` the apps (`None`: no app).
    pub(crate) fn request(&self, endpoint: usize, app: Option<usize>, status: u16) {
        let mut table = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *table.entry((endpoint, app, status)).or_insert(0) += 1;
    }

    /// Records the duration of one upstream call for `app` that got an
    /// answer or failed.
    pub(crate) fn upstream_call(&self, app: usize, duration: Duration) {
        let Some(upstream) = self.upstream.get(app) else {
            return;
        };
        let secs = duration.as_secs_f64();
        for (bound, count) in LATENCY_BUCKETS_SECS.iter().zip(&upstream.latency_buckets) {
            if secs <= *bound {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        upstream.latency_count.fetch_add(1, Ordering::Relaxed);
        upstream
            .latency_sum_micros
            .fetch_add(duration.as_micros() as u64, Ordering::Relaxed);
    }

    /// Counts an upstream failure of a call for `app`.
    pub(crate) fn upstream_failure(&self, app: usize, kind: FailureKind) {
        if let Some(upstream) = self.upstream.get(app) {
            upstream.failures[kind.index()].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a request refused by `RATE_LIMIT_PER_MINUTE`, for `app`.
    pub(crate) fn rate_limited(&self, app: Option<usize>) {
        let last = self.rate_limited.len() - 1;
        let slot = app.filter(|&index| index < last).unwrap_or(last);
        self.rate_limited[slot].fetch_add(1, Ordering::Relaxed);
    }

    /// The `app` label of the app at `index`, if labels are shown.
    fn app_label(&self, index: Option<usize>) -> Option<&str> {
        index
            .and_then(|i| self.app_names.get(i))
            .map(String::as_str)
    }

    /// Counts a refresh token that opened, by the key it opened with.
    pub(crate) fn token_opened(&self, previous_key: bool) {
        self.tokens_opened[usize::from(previous_key)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one of Spotify's 429s, by its reason.
    pub(crate) fn upstream_rate_limited(&self, reason: RateLimitReason) {
        self.upstream_rate_limited[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Records the age of a refresh token at refresh (one that carries its
    /// sign-in time).
    pub(crate) fn refresh_token_age(&self, age: Duration) {
        let secs = age.as_secs();
        let histogram = &self.token_age;
        for (days, count) in TOKEN_AGE_BUCKETS_DAYS.iter().zip(&histogram.buckets) {
            if secs <= days * SECS_PER_DAY {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        histogram.count.fetch_add(1, Ordering::Relaxed);
        histogram.sum_secs.fetch_add(secs, Ordering::Relaxed);
    }

    /// The exposition text.
    pub(crate) fn render(&self, stats: &Stats) -> String {
        let mut out = Exposition(String::with_capacity(4096));
        self.render_requests(&mut out);
        self.render_upstream(&mut out);
        self.render_upstream_rate_limited(&mut out);
        out.family(&TOKENS_OPENED);
        for (key, count) in ["current", "previous"].iter().zip(&self.tokens_opened) {
            out.sample(TOKENS_OPENED.name, &format!("key=\"{key}\""), load(count));
        }
        self.render_token_age(&mut out);
        self.render_rate_limited(&mut out);
        for (family, value) in self.single_values(stats) {
            out.family(&family);
            out.sample(family.name, "", value);
        }
        if let Some(certificate) = &self.certificate {
            out.family(&CERTIFICATE_EXPIRY);
            out.sample(
                CERTIFICATE_EXPIRY.name,
                "",
                load(&certificate.expiry_unix_secs),
            );
            out.family(&ACME_FAILURES);
            out.sample(ACME_FAILURES.name, "", load(&certificate.acme_failures));
        }
        out.family(&PROCESS_START);
        out.sample(PROCESS_START.name, "", self.started_unix_secs.floor());
        out.family(&BUILD_INFO);
        let version = format!("version=\"{}\"", env!("CARGO_PKG_VERSION"));
        out.sample(BUILD_INFO.name, &version, 1);
        out.0
    }

    fn render_requests(&self, out: &mut Exposition) {
        out.family(&REQUESTS);
        let table = self
            .requests
            .lock()
            .map(|t| t.clone())
            .unwrap_or_else(|e| e.into_inner().clone());
        for ((endpoint, app, status), n) in &table {
            let label = self
                .endpoint_labels
                .get(*endpoint)
                .copied()
                .unwrap_or("other");
            let labels = format!(
                "{}endpoint=\"{label}\",status=\"{status}\"",
                app_prefix(self.app_label(*app))
            );
            out.sample(REQUESTS.name, &labels, n);
        }
    }

    fn render_upstream(&self, out: &mut Exposition) {
        out.family(&UPSTREAM_DURATION);
        let name = UPSTREAM_DURATION.name;
        let bucket = format!("{name}_bucket");
        for (index, upstream) in self.upstream.iter().enumerate() {
            let app = app_prefix(self.app_label(Some(index)));
            for (bound, count) in LATENCY_BUCKETS_SECS.iter().zip(&upstream.latency_buckets) {
                out.sample(&bucket, &format!("{app}le=\"{bound}\""), load(count));
            }
            let count = load(&upstream.latency_count);
            out.sample(&bucket, &format!("{app}le=\"+Inf\""), count);
            let sum_secs = load(&upstream.latency_sum_micros) as f64 / 1e6;
            let app = app.trim_end_matches(',');
            out.sample(&format!("{name}_sum"), app, sum_secs);
            out.sample(&format!("{name}_count"), app, count);
        }

        out.family(&UPSTREAM_FAILURES);
        for (index, upstream) in self.upstream.iter().enumerate() {
            let app = app_prefix(self.app_label(Some(index)));
            for kind in FailureKind::ALL {
                let failures = load(&upstream.failures[kind.index()]);
                let labels = format!("{app}kind=\"{}\"", kind.label());
                out.sample(UPSTREAM_FAILURES.name, &labels, failures);
            }
        }
    }

    /// One sample with one app (all of them together), one per app with
    /// several, and one without a label for refusals of no app if any.
    fn render_rate_limited(&self, out: &mut Exposition) {
        out.family(&RATE_LIMITED);
        let Some((no_app, apps)) = self.rate_limited.split_last() else {
            return;
        };
        if self.app_names.is_empty() {
            let all: u64 = self.rate_limited.iter().map(load).sum();
            out.sample(RATE_LIMITED.name, "", all);
            return;
        }
        for (index, count) in apps.iter().enumerate() {
            let app = app_prefix(self.app_label(Some(index)));
            out.sample(RATE_LIMITED.name, app.trim_end_matches(','), load(count));
        }
        if load(no_app) > 0 {
            out.sample(RATE_LIMITED.name, "", load(no_app));
        }
    }

    fn render_upstream_rate_limited(&self, out: &mut Exposition) {
        out.family(&UPSTREAM_RATE_LIMITED);
        for reason in RateLimitReason::ALL {
            let labels = format!("reason=\"{}\"", reason.label());
            let count = load(&self.upstream_rate_limited[reason.index()]);
            out.sample(UPSTREAM_RATE_LIMITED.name, &labels, count);
        }
    }

    fn render_token_age(&self, out: &mut Exposition) {
        out.family(&TOKEN_AGE);
        let name = TOKEN_AGE.name;
        let bucket = format!("{name}_bucket");
        let histogram = &self.token_age;
        for (days, count) in TOKEN_AGE_BUCKETS_DAYS.iter().zip(&histogram.buckets) {
            out.sample(&bucket, &format!("le=\"{days}\""), load(count));
        }
        let count = load(&histogram.count);
        out.sample(&bucket, "le=\"+Inf\"", count);
        let sum_days = load(&histogram.sum_secs) as f64 / SECS_PER_DAY as f64;
        out.sample(&format!("{name}_sum"), "", sum_days);
        out.sample(&format!("{name}_count"), "", count);
    }

    /// The metrics that are one number each.
    fn single_values(&self, stats: &Stats) -> [(Family, u64); 4] {
        let gauge = |n: &std::sync::atomic::AtomicUsize| n.load(Ordering::Relaxed) as u64;
        [
            (REJECTED_OVERLOADED, load(&stats.rejected_overloaded)),
            (REJECTED_CAP, load(&stats.rejected_per_client_cap)),
            (OPEN_CONNECTIONS, gauge(&stats.open_connections)),
            (BUSY_WORKERS, gauge(&stats.busy_workers)),
        ]
    }
}

/// A metric's name, type and help text.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
}

const fn counter(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        kind: "counter",
        help,
    }
}

const fn gauge(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        kind: "gauge",
        help,
    }
}

const fn histogram(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        kind: "histogram",
        help,
    }
}

const REQUESTS: Family = counter(
    "spotify_token_swap_requests_total",
    "Requests answered, by endpoint and status.",
);
const UPSTREAM_DURATION: Family = histogram(
    "spotify_token_swap_upstream_duration_seconds",
    "Duration of calls to Spotify's token endpoint.",
);
const UPSTREAM_FAILURES: Family = counter(
    "spotify_token_swap_upstream_failures_total",
    "Failed calls to Spotify, by kind.",
);
const UPSTREAM_RATE_LIMITED: Family = counter(
    "spotify_token_swap_upstream_rate_limited_total",
    "Spotify's 429 answers, by reason: quota (its reason QUOTA_EXCEEDED) or rate_limit (any other, or none).",
);
const TOKEN_AGE: Family = histogram(
    "spotify_token_swap_refresh_token_age_days",
    "Days since the user signed in, of the refresh tokens refreshed that carry their sign-in time; Spotify ends them at REFRESH_TOKEN_LIFETIME_SECS.",
);
const TOKENS_OPENED: Family = counter(
    "spotify_token_swap_refresh_tokens_opened_total",
    "Refresh tokens opened, by key: the current ENCRYPTION_SECRET or one of ENCRYPTION_SECRET_PREVIOUS.",
);
const RATE_LIMITED: Family = counter(
    "spotify_token_swap_rate_limited_total",
    "Requests refused by RATE_LIMIT_PER_MINUTE.",
);
const REJECTED_OVERLOADED: Family = counter(
    "spotify_token_swap_rejected_overloaded_total",
    "Connections turned away by MAX_CONNECTIONS or a full queue (503; closed on a TLS port), and token requests past a full backlog of those waiting for Spotify (503).",
);
const REJECTED_CAP: Family = counter(
    "spotify_token_swap_rejected_connection_cap_total",
    "Connections turned away by MAX_CONNECTIONS_PER_CLIENT (503; closed on a TLS port).",
);
const OPEN_CONNECTIONS: Family = gauge(
    "spotify_token_swap_open_connections",
    "Connections accepted and not yet closed.",
);
const BUSY_WORKERS: Family = gauge(
    "spotify_token_swap_busy_workers",
    "Workers taking a turn on a connection.",
);
const PROCESS_START: Family = gauge(
    "process_start_time_seconds",
    "Start time of the process since the Unix epoch.",
);
const CERTIFICATE_EXPIRY: Family = gauge(
    "spotify_token_swap_certificate_expiry_timestamp_seconds",
    "When the certificate served (ACME) expires, Unix time; 0 until one is issued.",
);
const ACME_FAILURES: Family = counter(
    "spotify_token_swap_acme_failures_total",
    "Failed attempts to get or renew the certificate from the ACME CA.",
);
const BUILD_INFO: Family = gauge("spotify_token_swap_build_info", "Build information.");

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// `app="name",` before a sample's other labels, or nothing.
fn app_prefix(app: Option<&str>) -> String {
    app.map(|name| format!("app=\"{name}\","))
        .unwrap_or_default()
}

/// Text in the exposition format, a line at a time.
struct Exposition(String);

impl Exposition {
    /// The `# HELP` and `# TYPE` lines that open a metric family.
    fn family(&mut self, family: &Family) {
        let Family { name, kind, help } = family;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_requests_by_endpoint_and_status() {
        let m = Metrics::new(vec!["swap", "refresh"], Vec::new());
        m.request(0, Some(0), 200);
        m.request(0, Some(0), 200);
        m.request(1, Some(0), 400);
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
        let m = Metrics::new(Vec::new(), Vec::new());
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
    fn upstream_429s_are_counted_by_reason() {
        let m = Metrics::new(Vec::new(), Vec::new());
        m.upstream_rate_limited(RateLimitReason::Quota);
        m.upstream_rate_limited(RateLimitReason::Quota);
        let text = m.render(&Stats::default());
        for line in [
            "# TYPE spotify_token_swap_upstream_rate_limited_total counter\n",
            "spotify_token_swap_upstream_rate_limited_total{reason=\"quota\"} 2\n",
            "spotify_token_swap_upstream_rate_limited_total{reason=\"rate_limit\"} 0\n",
        ] {
            assert!(text.contains(line), "{line}{text}");
        }
    }

    #[test]
    fn refresh_token_ages_fill_day_buckets() {
        let m = Metrics::new(Vec::new(), Vec::new());
        let days = |n: u64| Duration::from_secs(n * SECS_PER_DAY);
        m.refresh_token_age(Duration::from_secs(3600));
        m.refresh_token_age(days(100));
        m.refresh_token_age(days(175));
        m.refresh_token_age(days(180) + Duration::from_secs(1));
        let text = m.render(&Stats::default());
        let name = "spotify_token_swap_refresh_token_age_days";
        for line in [
            format!("# TYPE {name} histogram\n"),
            format!("{name}_bucket{{le=\"1\"}} 1\n"),
            format!("{name}_bucket{{le=\"90\"}} 1\n"),
            format!("{name}_bucket{{le=\"150\"}} 2\n"),
            format!("{name}_bucket{{le=\"170\"}} 2\n"),
            format!("{name}_bucket{{le=\"180\"}} 3\n"),
            format!("{name}_bucket{{le=\"+Inf\"}} 4\n"),
            format!("{name}_count 4\n"),
        ] {
            assert!(text.contains(&line), "{line}{text}");
        }
        let sum: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}_sum ")))
            .unwrap()
            .parse()
            .unwrap();
        let expected = (3600.0 + (455.0 * 86_400.0) + 1.0) / 86_400.0;
        assert!((sum - expected).abs() < 1e-9, "{sum} {expected}");
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::new(Vec::new(), Vec::new());
        m.upstream_call(0, Duration::from_millis(7));
        m.upstream_call(0, Duration::from_millis(300));
        let text = m.render(&Stats::default());
        assert!(text.contains("_bucket{le=\"0.005\"} 0\n"));
        assert!(text.contains("_bucket{le=\"0.01\"} 1\n"));
        assert!(text.contains("_bucket{le=\"0.5\"} 2\n"));
        assert!(text.contains("_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("_count 2\n"));
    }

    #[test]
    fn with_several_apps_requests_upstream_calls_and_refusals_carry_the_app() {
        let m = Metrics::new(vec!["swap", "health"], vec!["music".into(), "tv".into()]);
        m.request(0, Some(1), 200);
        m.request(1, None, 200);
        m.upstream_call(1, Duration::from_millis(7));
        m.upstream_failure(0, FailureKind::Timeout);
        m.rate_limited(Some(1));
        m.rate_limited(Some(1));
        let text = m.render(&Stats::default());
        for line in [
            "spotify_token_swap_requests_total{app=\"tv\",endpoint=\"swap\",status=\"200\"} 1\n",
            "spotify_token_swap_requests_total{endpoint=\"health\",status=\"200\"} 1\n",
            "spotify_token_swap_upstream_duration_seconds_bucket{app=\"tv\",le=\"0.01\"} 1\n",
            "spotify_token_swap_upstream_duration_seconds_bucket{app=\"music\",le=\"+Inf\"} 0\n",
            "spotify_token_swap_upstream_duration_seconds_count{app=\"tv\"} 1\n",
            "spotify_token_swap_upstream_failures_total{app=\"music\",kind=\"timeout\"} 1\n",
            "spotify_token_swap_upstream_failures_total{app=\"tv\",kind=\"timeout\"} 0\n",
            "spotify_token_swap_rate_limited_total{app=\"tv\"} 2\n",
            "spotify_token_swap_rate_limited_total{app=\"music\"} 0\n",
        ] {
            assert!(text.contains(line), "{line}{text}");
        }
        assert!(
            !text.contains("spotify_token_swap_rate_limited_total 0"),
            "{text}"
        );
        assert_eq!(
            text.matches("# TYPE spotify_token_swap_upstream_duration_seconds ")
                .count(),
            1
        );
    }

    #[test]
    fn with_one_app_no_sample_has_an_app_label() {
        let m = Metrics::new(vec!["swap"], Vec::new());
        m.request(0, Some(0), 200);
        m.upstream_call(0, Duration::from_millis(7));
        m.rate_limited(Some(0));
        m.rate_limited(None);
        let text = m.render(&Stats::default());
        assert!(!text.contains("app="), "{text}");
        assert!(
            text.contains("\nspotify_token_swap_rate_limited_total 2\n"),
            "{text}"
        );
        assert!(text.contains("\nspotify_token_swap_upstream_duration_seconds_count 1\n"));
    }
}
