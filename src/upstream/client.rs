//! The client for Spotify's accounts service.
//!
//! One `ureq` [`Agent`] for the whole process, so consecutive calls reuse
//! kept-alive TLS connections; its idle pool is sized to the worker count
//! (ureq keeps only 3 idle connections per host by default). The
//! `Authorization: Basic …` value is built once. Answers are read up to
//! [`MAX_UPSTREAM_BODY_BYTES`] and parsed as a JSON object; nothing is
//! streamed through.
//!
//! When Spotify answers 429, its `Retry-After` opens a local back-off window:
//! until it passes, token requests are answered 429 here without calling
//! Spotify, so a burst of clients cannot get the app throttled for longer.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};
use ureq::Agent;
use ureq::http::Uri;
use ureq::tls::{Certificate, RootCerts, TlsConfig};
use ureq::unversioned::transport::{ConnectProxyConnector, Connector as _, RustlsConnector};

use crate::config::{Config, Secret};
use super::dns::SingleFlightResolver;
use crate::error::Error;
use super::tcp::UpstreamTcpConnector;

/// Largest answer from Spotify we read; a larger one is a 502.
pub(crate) const MAX_UPSTREAM_BODY_BYTES: u64 = 64 * 1024;
/// Room reserved for Spotify's answer before reading it.
const UPSTREAM_BODY_CAPACITY: usize = 1024;
/// Back-off used when Spotify answers 429 without a usable `Retry-After`.
pub(crate) const DEFAULT_BACKOFF_SECS: u64 = 5;
/// Longest back-off window honoured, whatever Spotify says.
pub(crate) const MAX_BACKOFF_SECS: u64 = 3600;
/// Idle pooled connections are dropped after this long; Spotify's side
/// closes idle connections too, so there is no point keeping them longer.
const POOL_IDLE_AGE: Duration = Duration::from_secs(50);
/// Quiet time after which a keep-warm request is sent; below the pool's
/// idle age and the idle timeouts servers commonly use (nginx: 75 s).
pub(crate) const KEEP_WARM_INTERVAL: Duration = Duration::from_secs(20);
/// Keep-warm requests stop this long after the last token call, so an idle
/// server does not talk to Spotify forever.
pub(crate) const KEEP_WARM_WINDOW: Duration = Duration::from_secs(15 * 60);
/// The largest response head taken from Spotify; its heads are about
/// 1 KiB, and a larger one is a 502.
const MAX_UPSTREAM_HEAD_BYTES: usize = 8 * 1024;
/// Size of ureq's per-connection read buffers (one for TCP, one for TLS
/// plaintext). ureq's default is 128 KiB per buffer per pooled connection,
/// zero-filled when allocated, so it all counts in RSS. Not below 10 KiB:
/// ureq grows a smaller one to 10 KiB for every request with a body (and
/// shrinks it back), zero-filling the difference each time. The body is
/// not limited by this (it is read in pieces up to
/// [`MAX_UPSTREAM_BODY_BYTES`]).
const UPSTREAM_READ_BUFFER_BYTES: usize = 10 * 1024;
/// Size of ureq's per-connection write buffers. A request head is a few
/// hundred bytes; a longer form body goes out in several pieces.
const UPSTREAM_WRITE_BUFFER_BYTES: usize = 4 * 1024;

/// What the client asks Spotify for.
pub(crate) enum Grant<'a> {
    /// Exchange an authorization code (`/swap`).
    AuthorizationCode {
        code: &'a str,
        redirect_uri: &'a str,
        code_verifier: Option<&'a str>,
    },
    /// Exchange a refresh token (`/refresh`).
    RefreshToken { refresh_token: &'a str },
}

/// Spotify's answer, when it is one to pass on to the client. Its `Debug`
/// shows the body's field names, not their values.
pub(crate) struct Answer {
    /// 200, or the 4xx status Spotify chose.
    pub(crate) status: u16,
    /// The JSON object Spotify sent (or our own error object for a 4xx
    /// without one).
    pub(crate) body: Map<String, Value>,
    /// For 429: seconds to wait.
    pub(crate) retry_after_secs: Option<u64>,
}

impl std::fmt::Debug for Answer {
    // SECURITY: the body holds the access and refresh tokens.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer")
            .field("status", &self.status)
            .field("body_fields", &self.body.keys().collect::<Vec<_>>())
            .field("retry_after_secs", &self.retry_after_secs)
            .finish()
    }
}

/// Why an upstream call failed, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    Timeout,
    /// The host name did not resolve (in time).
    Dns,
    Connect,
    ServerError,
    RateLimited,
    BadResponse,
}

impl FailureKind {
    /// Label for metrics.
    pub(crate) fn label(self) -> &'static str {
        match self {
            FailureKind::Timeout => "timeout",
            FailureKind::Dns => "dns",
            FailureKind::Connect => "connect",
            FailureKind::ServerError => "5xx",
            FailureKind::RateLimited => "429",
            FailureKind::BadResponse => "bad_response",
        }
    }
}

/// The accounts-service client, shared by all workers.
pub(crate) struct Spotify {
    agent: Agent,
    /// The token endpoint, parsed once instead of on every call.
    token_uri: Uri,
    /// `Basic base64(id:secret)`; replaced when SIGHUP brings a new secret.
    basic_auth: std::sync::RwLock<std::sync::Arc<Secret>>,
    backoff_until: Mutex<Option<Instant>>,
    /// When the last token call and the last call of any kind were made.
    activity: Mutex<Activity>,
}

#[derive(Debug, Clone, Copy)]
struct Activity {
    last_token_call: Option<Instant>,
    last_call: Option<Instant>,
}

impl Spotify {
    /// Builds the agent and the `Authorization` value once.
    pub(crate) fn new(config: &Config) -> Spotify {
        let mut tls = TlsConfig::builder();
        if !config.extra_roots.is_empty() {
            let roots: Vec<Certificate<'static>> = config
                .extra_roots
                .iter()
                .map(|der| Certificate::from_der(der).to_owned())
                .collect();
            tls = tls.root_certs(RootCerts::new_with_certs(&roots));
        }
        let timeout = config.upstream_timeout;
        let agent_config = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .timeout_connect(Some(timeout))
            .max_idle_connections(config.worker_threads.max(4))
            .max_idle_connections_per_host(config.worker_threads.max(4))
            .max_idle_age(POOL_IDLE_AGE)
            .max_redirects(0)
            .max_response_header_size(MAX_UPSTREAM_HEAD_BYTES)
            .input_buffer_size(UPSTREAM_READ_BUFFER_BYTES)
            .output_buffer_size(UPSTREAM_WRITE_BUFFER_BYTES)
            .user_agent(concat!("spotify-token-swap/", env!("CARGO_PKG_VERSION")))
            .accept("application/json")
            .tls_config(tls.build())
            .build();
        // ureq's default chain, with our TCP layer in place of its own
        // (see `tcp`): a CONNECT proxy if configured, TCP, TLS.
        let connector =
            ().chain(ConnectProxyConnector::default())
                .chain(UpstreamTcpConnector)
                .chain(RustlsConnector::default());
        let agent = Agent::with_parts(agent_config, connector, SingleFlightResolver::default());
        Spotify {
            agent,
            token_uri: Uri::try_from(config.token_url.as_str())
                .expect("Config checked that the token URL parses"),
            basic_auth: std::sync::RwLock::new(std::sync::Arc::new(basic_auth(
                &config.client_id,
                &config.client_secret,
            ))),
            backoff_until: Mutex::new(None),
            activity: Mutex::new(Activity {
                last_token_call: None,
                last_call: None,
            }),
        }
    }

    /// Uses a new client secret from now on (SIGHUP).
    pub(crate) fn set_client_secret(&self, client_id: &str, secret: &Secret) {
        *self.basic_auth.write().unwrap_or_else(|e| e.into_inner()) =
            std::sync::Arc::new(basic_auth(client_id, secret));
    }

    /// Seconds left in the local back-off window, if one is open.
    pub(crate) fn backoff_remaining(&self) -> Option<u64> {
        let guard = self.backoff_until.lock().unwrap_or_else(|e| e.into_inner());
        let until = (*guard)?;
        let left = until.checked_duration_since(Instant::now())?;
        // Round up, so a client never retries a moment too early.
        Some(left.as_secs() + u64::from(left.subsec_nanos() > 0))
    }

    fn open_backoff(&self, secs: u64) {
        let until = Instant::now() + Duration::from_secs(secs.min(MAX_BACKOFF_SECS));
        let mut guard = self.backoff_until.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none_or(|current| current < until) {
            *guard = Some(until);
        }
    }

    /// Keeps a pooled connection to the accounts service open while the
    /// server is in use: when no call has been made for
    /// [`KEEP_WARM_INTERVAL`] but a token call was made within
    /// [`KEEP_WARM_WINDOW`], sends `HEAD` on the token URL (no credentials,
    /// no body). Without it, the first swap after a quiet spell pays a fresh
    /// TCP and TLS handshake to Spotify (three round trips instead of one).
    /// Returns whether a keep-warm request was sent.
    pub(crate) fn keep_warm(&self) -> bool {
        self.keep_warm_at(Instant::now())
    }

    fn keep_warm_at(&self, now: Instant) -> bool {
        {
            let mut activity = self.activity.lock().unwrap_or_else(|e| e.into_inner());
            let recently_used = activity
                .last_token_call
                .is_some_and(|t| now.saturating_duration_since(t) < KEEP_WARM_WINDOW);
            let quiet = activity
                .last_call
                .is_none_or(|t| now.saturating_duration_since(t) >= KEEP_WARM_INTERVAL);
            if !(recently_used && quiet) {
                return false;
            }
            activity.last_call = Some(now);
        }
        match self.agent.head(self.token_uri.clone()).call() {
            Ok(mut response) => {
                // Read the (empty) body so the connection returns to the pool.
                let _ = response.body_mut().with_config().limit(1024).read_to_vec();
                log::debug!("upstream keep-warm: {}", response.status().as_u16());
            }
            Err(e) => log::debug!("upstream keep-warm failed: {}", classify(&e).0),
        }
        true
    }

    fn note_token_call(&self) {
        let now = Instant::now();
        let mut activity = self.activity.lock().unwrap_or_else(|e| e.into_inner());
        activity.last_token_call = Some(now);
        activity.last_call = Some(now);
    }

    /// Calls the token endpoint. `Ok` carries an answer to pass on (200 or
    /// 4xx); `Err` one of our own errors (`kind` says which failure for
    /// metrics).
    pub(crate) fn call(&self, grant: &Grant<'_>) -> Result<Answer, (Error, Option<FailureKind>)> {
        if let Some(secs) = self.backoff_remaining() {
            return Err((
                Error::UpstreamBackoff {
                    retry_after_secs: secs.max(1),
                },
                None,
            ));
        }
        self.note_token_call();
        let form = encode_form(grant);
        let auth =
            std::sync::Arc::clone(&self.basic_auth.read().unwrap_or_else(|e| e.into_inner()));
        let sent = self
            .agent
            .post(self.token_uri.clone())
            .header("Authorization", auth.expose())
            .content_type("application/x-www-form-urlencoded")
            .send(form.as_bytes());
        let mut response = sent.map_err(|e| classify(&e))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        // ureq's `read_to_vec` starts from an empty Vec, so std's
        // `read_to_end` probes and regrows it through several reads; a token
        // answer is a few hundred bytes and fits this in one.
        let mut bytes = Vec::with_capacity(UPSTREAM_BODY_CAPACITY);
        let read = std::io::Read::read_to_end(
            &mut response
                .body_mut()
                .with_config()
                .limit(MAX_UPSTREAM_BODY_BYTES)
                .reader(),
            &mut bytes,
        )
        .map_err(ureq::Error::from);
        if status >= 500 {
            return Err((
                Error::UpstreamServerError(status),
                Some(FailureKind::ServerError),
            ));
        }
        match read {
            Ok(_) => {}
            Err(ureq::Error::BodyExceedsLimit(_)) => {
                return Err(bad_response("the answer is larger than 64 KiB"));
            }
            Err(e) => return Err(classify(&e)),
        }
        let parsed = match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => Some(map),
            _ => None,
        };
        match (status, parsed) {
            (200, Some(body)) => Ok(Answer {
                status,
                body,
                retry_after_secs: None,
            }),
            (200, None) => Err(bad_response("the answer is not a JSON object")),
            (400..=499, body) => {
                let retry_after_secs = (status == 429).then(|| {
                    let secs = retry_after
                        .unwrap_or(DEFAULT_BACKOFF_SECS)
                        .clamp(1, MAX_BACKOFF_SECS);
                    self.open_backoff(secs);
                    secs
                });
                // Pass Spotify's body on only when its `error` is a string:
                // clients (SpotifyAPI-NET) read `error` as a string and fail
                // on the Web API's `{"error":{"status":..,"message":..}}`.
                let body = body
                    .filter(|m| m.get("error").is_some_and(Value::is_string))
                    .unwrap_or_else(|| own_error_body(status));
                Ok(Answer {
                    status,
                    body,
                    retry_after_secs,
                })
            }
            _ => Err(bad_response("unexpected status")),
        }
    }
}

/// Seconds to wait from a `Retry-After` value in either form of RFC 9110
/// §10.2.3: delta-seconds (`120`; an overlong number saturates), or an
/// HTTP-date, counted from `now` and rounded up (one already past is 0).
/// `None` for anything else. The caller clamps the result.
fn parse_retry_after(value: &str, now: SystemTime) -> Option<u64> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(value.parse().unwrap_or(u64::MAX));
    }
    let now_secs = now.duration_since(UNIX_EPOCH).ok()?;
    let date = parse_http_date(value, now_secs.as_secs())?;
    let wait = Duration::from_secs(date).saturating_sub(now_secs);
    Some(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const DAY_NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const LONG_DAY_NAMES: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// An HTTP-date (RFC 9110 §5.6.7) as seconds since the Unix epoch, in any
/// of the three forms a recipient must accept:
/// `Sun, 06 Nov 1994 08:49:37 GMT` (IMF-fixdate),
/// `Sunday, 06-Nov-94 08:49:37 GMT` (RFC 850) and
/// `Sun Nov  6 08:49:37 1994` (asctime). A two-digit year is the one
/// nearest below 50 years after `now_secs`'s year.
fn parse_http_date(text: &str, now_secs: u64) -> Option<u64> {
    let words: Vec<&str> = text.split_ascii_whitespace().collect();
    let (day, month, year, time) = match words.as_slice() {
        [name, day, month, year, time, "GMT"] if DAY_NAMES.contains(&name.strip_suffix(',')?) => {
            (*day, *month, year.parse::<u64>().ok()?, *time)
        }
        [name, date, time, "GMT"] if LONG_DAY_NAMES.contains(&name.strip_suffix(',')?) => {
            let mut parts = date.split('-');
            let (day, month, yy) = (parts.next()?, parts.next()?, parts.next()?);
            if parts.next().is_some() || yy.len() != 2 {
                return None;
            }
            let now_year = civil_from_days(now_secs / 86_400).0;
            let mut year = now_year / 100 * 100 + yy.parse::<u64>().ok()?;
            if year > now_year + 50 {
                year -= 100;
            }
            (day, month, year, *time)
        }
        [name, month, day, time, year] if DAY_NAMES.contains(name) => {
            (*day, *month, year.parse::<u64>().ok()?, *time)
        }
        _ => return None,
    };
    let all_digits = |s: &str, len: std::ops::RangeInclusive<usize>| {
        len.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
    };
    if !all_digits(day, 1..=2) || !(1970..=9999).contains(&year) {
        return None;
    }
    let day: u64 = day.parse().ok()?;
    let month = MONTHS.iter().position(|m| *m == month)? as u64 + 1;
    let mut hms = time.split(':');
    let (h, m, sec) = (hms.next()?, hms.next()?, hms.next()?);
    if hms.next().is_some() || ![h, m, sec].iter().all(|p| all_digits(p, 2..=2)) {
        return None;
    }
    let (h, m, sec): (u64, u64, u64) = (h.parse().ok()?, m.parse().ok()?, sec.parse().ok()?);
    if !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + sec)
}

/// Days since 1970-01-01 of a date from 1970 on (H. Hinnant's algorithm).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month, day) of a day count since 1970-01-01.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// The `Authorization` value for the token endpoint.
fn basic_auth(client_id: &str, secret: &Secret) -> Secret {
    let credentials = format!("{client_id}:{}", secret.expose());
    Secret::new(format!("Basic {}", STANDARD.encode(credentials)))
}

fn bad_response(why: &'static str) -> (Error, Option<FailureKind>) {
    (
        Error::UpstreamBadResponse(why),
        Some(FailureKind::BadResponse),
    )
}

/// The form body for Spotify's token endpoint.
fn encode_form(grant: &Grant<'_>) -> String {
    let mut form = form_urlencoded::Serializer::new(String::with_capacity(256));
    match grant {
        Grant::AuthorizationCode {
            code,
            redirect_uri,
            code_verifier,
        } => {
            form.append_pair("grant_type", "authorization_code")
                .append_pair("code", code)
                .append_pair("redirect_uri", redirect_uri);
            if let Some(verifier) = code_verifier {
                form.append_pair("code_verifier", verifier);
            }
        }
        Grant::RefreshToken { refresh_token } => {
            form.append_pair("grant_type", "refresh_token")
                .append_pair("refresh_token", refresh_token);
        }
    }
    form.finish()
}

/// An error object of our own for a 4xx whose body is not Spotify's JSON.
fn own_error_body(status: u16) -> Map<String, Value> {
    let code = match status {
        400 => "invalid_grant",
        401 => "invalid_client",
        403 => "access_denied",
        429 => "too_many_requests",
        _ => "invalid_request",
    };
    let mut map = Map::new();
    map.insert("error".into(), Value::from(code));
    map.insert(
        "error_description".into(),
        Value::from(format!("Spotify's accounts service answered {status}")),
    );
    map
}

/// Maps a transport failure to our error: timeouts are 504, the rest 502.
fn classify(error: &ureq::Error) -> (Error, Option<FailureKind>) {
    match error {
        ureq::Error::Timeout(_) => (Error::UpstreamTimeout, Some(FailureKind::Timeout)),
        ureq::Error::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ) =>
        {
            (Error::UpstreamTimeout, Some(FailureKind::Timeout))
        }
        ureq::Error::BodyExceedsLimit(_) | ureq::Error::LargeResponseHeader(..) => {
            bad_response("the answer is too large")
        }
        ureq::Error::Protocol(_) => bad_response("the answer is not valid HTTP"),
        // What the resolver gives for every failure, its deadline included.
        ureq::Error::HostNotFound => (Error::UpstreamUnreachable, Some(FailureKind::Dns)),
        _ => (Error::UpstreamUnreachable, Some(FailureKind::Connect)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_form_has_grant_code_and_redirect() {
        let form = encode_form(&Grant::AuthorizationCode {
            code: "a b&c",
            redirect_uri: "myapp://cb",
            code_verifier: None,
        });
        assert_eq!(
            form,
            "grant_type=authorization_code&code=a+b%26c&redirect_uri=myapp%3A%2F%2Fcb"
        );
    }

    #[test]
    fn swap_form_forwards_code_verifier() {
        let form = encode_form(&Grant::AuthorizationCode {
            code: "c",
            redirect_uri: "r",
            code_verifier: Some("v"),
        });
        assert!(form.ends_with("&code_verifier=v"), "{form}");
    }

    #[test]
    fn refresh_form_has_grant_and_token() {
        let form = encode_form(&Grant::RefreshToken {
            refresh_token: "t+/=",
        });
        assert_eq!(form, "grant_type=refresh_token&refresh_token=t%2B%2F%3D");
    }

    /// 1994-11-06 08:49:37 UTC, RFC 9110's example date.
    const EXAMPLE_DATE_SECS: u64 = 784_111_777;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn retry_after_in_delta_seconds() {
        let now = SystemTime::now();
        assert_eq!(parse_retry_after("120", now), Some(120));
        assert_eq!(parse_retry_after(" 0 ", now), Some(0));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(u64::MAX)
        );
        for bad in ["", "-1", "1.5", "12s", "+3"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn retry_after_as_an_http_date_in_each_of_the_three_forms() {
        let now = at(EXAMPLE_DATE_SECS - 90);
        for date in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(parse_retry_after(date, now), Some(90), "{date}");
        }
    }

    #[test]
    fn retry_after_date_is_rounded_up_and_a_past_one_is_zero() {
        let now = at(EXAMPLE_DATE_SECS) - Duration::from_millis(1500);
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(2)
        );
        let later = at(EXAMPLE_DATE_SECS + 3600);
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", later),
            Some(0)
        );
    }

    #[test]
    fn http_dates_across_months_leap_years_and_centuries() {
        let now = EXAMPLE_DATE_SECS;
        for (date, secs) in [
            ("Thu, 01 Jan 1970 00:00:00 GMT", 0),
            ("Tue, 29 Feb 2000 12:00:00 GMT", 951_825_600),
            ("Fri, 31 Dec 2100 23:59:59 GMT", 4_133_980_799),
            ("Mon, 30 Nov 2026 15:00:00 GMT", 1_796_050_800),
        ] {
            assert_eq!(parse_http_date(date, now), Some(secs), "{date}");
            let (y, m, d) = civil_from_days(secs / 86_400);
            assert_eq!(days_from_civil(y, m, d), secs / 86_400, "{date}");
        }
        // RFC 850's two-digit year: the nearest one not over 50 years ahead.
        let in_2026 = 1_796_050_800;
        assert_eq!(
            parse_http_date("Monday, 30-Nov-26 15:00:00 GMT", in_2026),
            Some(in_2026)
        );
        assert_eq!(
            parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT", in_2026),
            Some(EXAMPLE_DATE_SECS)
        );
    }

    #[test]
    fn malformed_http_dates_are_refused() {
        for bad in [
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 8:49:37 GMT",
            "Sun, 06 Nov 1969 08:49:37 GMT",
            "Sun 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-1994 08:49:37 GMT",
            "Sun Nov  6 08:49:37",
            "tomorrow",
        ] {
            assert_eq!(parse_http_date(bad, EXAMPLE_DATE_SECS), None, "{bad}");
        }
    }

    #[test]
    fn own_error_body_for_non_json_400_is_invalid_grant() {
        let body = own_error_body(400);
        assert_eq!(body["error"], "invalid_grant");
    }

    /// A one-shot upstream on loopback that records the request line of
    /// the first request it gets and answers 405.
    fn one_shot_upstream() -> (String, std::thread::JoinHandle<String>) {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            (&stream)
                .write_all(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
            head
        });
        (base, handle)
    }

    fn client_for(base: &str) -> Spotify {
        let config = crate::config::Config::from_vars([
            ("SPOTIFY_CLIENT_ID", "cid"),
            ("SPOTIFY_CLIENT_SECRET", "topsecret"),
            ("SPOTIFY_REDIRECT_URI", "x://y"),
            ("SPOTIFY_ACCOUNTS_URL", base),
        ])
        .unwrap();
        Spotify::new(&config)
    }

    #[test]
    fn keep_warm_does_nothing_before_any_token_call() {
        let spotify = client_for("http://127.0.0.1:9");
        assert!(!spotify.keep_warm());
    }

    fn used_at(spotify: &Spotify, at: Instant) {
        *spotify.activity.lock().unwrap() = Activity {
            last_token_call: Some(at),
            last_call: Some(at),
        };
    }

    #[test]
    fn keep_warm_waits_for_a_quiet_spell() {
        let spotify = client_for("http://127.0.0.1:9");
        let t = Instant::now();
        used_at(&spotify, t);
        assert!(!spotify.keep_warm_at(t + KEEP_WARM_INTERVAL / 2));
    }

    #[test]
    fn keep_warm_sends_a_credential_free_head_after_a_quiet_spell() {
        let (base, upstream) = one_shot_upstream();
        let spotify = client_for(&base);
        let t = Instant::now();
        used_at(&spotify, t);
        let later = t + KEEP_WARM_INTERVAL * 2;
        assert!(spotify.keep_warm_at(later));
        let head = upstream.join().unwrap();
        assert!(head.starts_with("HEAD /api/token HTTP/1.1\r\n"), "{head}");
        assert!(
            !head.to_ascii_lowercase().contains("authorization"),
            "{head}"
        );
        // Just warmed: not again until the next quiet spell.
        assert!(!spotify.keep_warm_at(later + Duration::from_secs(1)));
    }

    #[test]
    fn keep_warm_stops_after_the_window() {
        let spotify = client_for("http://127.0.0.1:9");
        let t = Instant::now();
        used_at(&spotify, t);
        assert!(!spotify.keep_warm_at(t + KEEP_WARM_WINDOW + KEEP_WARM_INTERVAL));
    }

    #[test]
    fn answer_debug_names_fields_but_hides_tokens() {
        let body = serde_json::json!({
            "access_token": "BQC-access-token",
            "refresh_token": "AQD-refresh-token",
            "expires_in": 3600,
        });
        let Value::Object(body) = body else {
            unreachable!("a JSON object literal")
        };
        let answer = Answer {
            status: 200,
            body,
            retry_after_secs: None,
        };
        let debug = format!("{answer:?}");
        assert!(!debug.contains("BQC-access-token"), "{debug}");
        assert!(!debug.contains("AQD-refresh-token"), "{debug}");
        assert!(debug.contains(r#""refresh_token""#), "{debug}");
        assert!(debug.contains("status: 200"), "{debug}");
    }
}
