//! Environment → validated [`Config`].
//!
//! Everything is parsed once, at start: addresses into `SocketAddr`s, times
//! into `Duration`s, CA files into certificates. Every problem is collected,
//! so an operator sees all of them at once, one line each, naming the
//! variable — never a secret's value. Secrets live in [`Secret`], whose
//! `Debug` and `Display` print `[redacted]`.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use log::LevelFilter;

/// Default listen address when neither `LISTEN_ADDR` nor `PORT` is set.
pub const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:8080";
/// Default size of the connection-worker pool.
pub const DEFAULT_WORKER_THREADS: usize = 32;
/// Upper bound on `WORKER_THREADS`: each worker is a thread with its own stack.
pub const MAX_WORKER_THREADS: usize = 1024;
/// Default whole-call limit for one request to Spotify.
pub const DEFAULT_UPSTREAM_TIMEOUT_SECS: u64 = 10;
/// Largest accepted `UPSTREAM_TIMEOUT_SECS`.
pub const MAX_UPSTREAM_TIMEOUT_SECS: u64 = 300;
/// Default token-endpoint requests per client address per minute (burst:
/// [`crate::ratelimit::burst`]). A user needs about two an hour, so even
/// an address shared by a thousand (carrier-grade NAT) fits.
pub const DEFAULT_RATE_LIMIT_PER_MINUTE: u32 = 60;
/// Default cap on concurrent connections per client address.
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: usize = 256;
/// Shortest accepted encryption secret, in characters.
pub const MIN_ENCRYPTION_SECRET_CHARS: usize = 32;
/// Spotify's accounts service.
pub const DEFAULT_ACCOUNTS_URL: &str = "https://accounts.spotify.com";

/// A secret string. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself; call sites are the few places that need it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Which browser origins may call the token endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cors {
    /// No CORS headers at all (the default).
    Off,
    /// Any origin (`CORS_ALLOW_ORIGINS=*`).
    Any,
    /// Exactly these origins.
    List(Vec<String>),
}

impl Cors {
    /// Whether a request's `Origin` is allowed.
    pub fn allows(&self, origin: &str) -> bool {
        match self {
            Cors::Off => false,
            Cors::Any => true,
            Cors::List(list) => list.iter().any(|o| o == origin),
        }
    }
}

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// Bind this address.
    Addr(SocketAddr),
    /// Take the listener passed by systemd socket activation (fd 3).
    SocketActivation,
}

/// Certificate and key files for serving HTTPS directly. Only the paths:
/// the server loads them when it starts (and again on `SIGHUP`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub client_id: String,
    pub client_secret: Secret,
    pub redirect_uri: String,
    /// Extra redirect URIs a client may name in `/swap`.
    pub allowed_redirect_uris: Vec<String>,
    /// Full URL of the token endpoint, `{base}/api/token`.
    pub token_url: String,
    /// Extra trusted root certificates (DER) from `SPOTIFY_CA_FILE`.
    pub extra_roots: Vec<Vec<u8>>,
    pub ca_file: Option<PathBuf>,
    /// Current encryption secret; `None` leaves refresh tokens in clear.
    pub encryption_secret: Option<Secret>,
    /// Older secrets, accepted for decryption only.
    pub encryption_secrets_previous: Vec<Secret>,
    /// Where `ENCRYPTION_SECRET` came from, for re-reading on SIGHUP.
    pub encryption_secret_file: Option<PathBuf>,
    pub listen: Listen,
    pub worker_threads: usize,
    pub swap_path: String,
    pub refresh_path: String,
    pub cors: Cors,
    pub upstream_timeout: Duration,
    pub log_level: LevelFilter,
    pub rate_limit_per_minute: u32,
    /// `MAX_CONNECTIONS`; `None`: sized from `RLIMIT_NOFILE` at start.
    pub max_connections: Option<usize>,
    pub max_connections_per_client: usize,
    pub trusted_proxies: Vec<IpAddr>,
    pub tls: Option<TlsFiles>,
    pub metrics: bool,
}

/// Every configuration problem found, one line each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, line) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "configuration error: {line}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The variables read, in one place, with empty values treated as unset.
struct Vars {
    map: HashMap<String, String>,
    errors: Vec<String>,
}

impl Vars {
    fn get(&self, name: &str) -> Option<&str> {
        self.map
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// A secret from `NAME` or from the file named by `NAME_FILE`.
    fn secret(&mut self, name: &str) -> Option<(Secret, Option<PathBuf>)> {
        let file_var = format!("{name}_FILE");
        let direct = self.map.get(name).filter(|v| !v.is_empty()).cloned();
        let file = self.get(&file_var).map(PathBuf::from);
        match (direct, file) {
            (Some(_), Some(_)) => {
                self.errors
                    .push(format!("{name} and {file_var} are both set; set only one"));
                None
            }
            (Some(value), None) => Some((Secret::new(value), None)),
            (None, Some(path)) => match read_secret_file(&path) {
                Ok(value) => Some((Secret::new(value), Some(path))),
                Err(why) => {
                    self.errors.push(format!("{file_var}: {why}"));
                    None
                }
            },
            (None, None) => None,
        }
    }

    fn number<T: std::str::FromStr>(&mut self, name: &str, default: T) -> T {
        match self.get(name) {
            None => default,
            Some(text) => match text.parse() {
                Ok(n) => n,
                Err(_) => {
                    self.errors
                        .push(format!("{name}: '{text}' is not a whole number"));
                    default
                }
            },
        }
    }

    fn list(&self, name: &str) -> Vec<String> {
        self.get(name)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Reads a secret file; a single trailing newline (or CRLF) is dropped.
pub fn read_secret_file(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read '{}': {e}", path.display()))?;
    let text = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    if text.is_empty() {
        return Err(format!("'{}' is empty", path.display()));
    }
    Ok(text.to_string())
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Config, ConfigErrors> {
        Config::from_vars(env_vars())
    }

    /// Builds the configuration from `(name, value)` pairs, so tests never
    /// touch the process environment.
    pub fn from_vars<I, K, V>(vars: I) -> Result<Config, ConfigErrors>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut v = Vars {
            map: vars
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            errors: Vec::new(),
        };

        let client_id = v.get("SPOTIFY_CLIENT_ID").map(String::from);
        if client_id.is_none() {
            v.errors.push("SPOTIFY_CLIENT_ID is required".into());
        } else if client_id.as_deref().is_some_and(|id| id.contains(':')) {
            v.errors
                .push("SPOTIFY_CLIENT_ID must not contain ':'".into());
        }

        let client_secret = v.secret("SPOTIFY_CLIENT_SECRET").map(|(s, _)| s);
        if client_secret.is_none() && !v.errors.iter().any(|e| e.contains("SPOTIFY_CLIENT_SECRET"))
        {
            v.errors
                .push("SPOTIFY_CLIENT_SECRET (or SPOTIFY_CLIENT_SECRET_FILE) is required".into());
        }

        let redirect_uri = match (
            v.get("SPOTIFY_REDIRECT_URI").map(String::from),
            v.get("SPOTIFY_CLIENT_CALLBACK_URL").map(String::from),
        ) {
            (Some(a), Some(b)) if a != b => {
                v.errors.push(
                    "SPOTIFY_REDIRECT_URI and SPOTIFY_CLIENT_CALLBACK_URL differ; set only one"
                        .into(),
                );
                None
            }
            (Some(a), _) | (None, Some(a)) => Some(a),
            (None, None) => {
                v.errors.push(
                    "SPOTIFY_REDIRECT_URI (or SPOTIFY_CLIENT_CALLBACK_URL) is required".into(),
                );
                None
            }
        };

        let accounts = v
            .get("SPOTIFY_ACCOUNTS_URL")
            .unwrap_or(DEFAULT_ACCOUNTS_URL)
            .trim_end_matches('/')
            .to_string();
        let token_url = format!("{accounts}/api/token");
        if !(accounts.starts_with("https://") || accounts.starts_with("http://"))
            || accounts.len() <= "https://".len()
            || ureq::http::Uri::try_from(token_url.as_str()).is_err()
        {
            v.errors.push(format!(
                "SPOTIFY_ACCOUNTS_URL: '{accounts}' is not an http:// or https:// URL"
            ));
        }

        let ca_file = v.get("SPOTIFY_CA_FILE").map(PathBuf::from);
        let extra_roots = match &ca_file {
            None => Vec::new(),
            Some(path) => match load_pem_certs(path) {
                Ok(certs) => certs,
                Err(why) => {
                    v.errors.push(format!("SPOTIFY_CA_FILE: {why}"));
                    Vec::new()
                }
            },
        };

        let (encryption_secret, encryption_secret_file) = match v.secret("ENCRYPTION_SECRET") {
            Some((s, file)) => (Some(s), file),
            None => (None, None),
        };
        if let Some(s) = &encryption_secret {
            if s.expose().chars().count() < MIN_ENCRYPTION_SECRET_CHARS {
                v.errors.push(format!(
                    "ENCRYPTION_SECRET must be at least {MIN_ENCRYPTION_SECRET_CHARS} characters \
                     (try: spotify-token-swap generate-secret)"
                ));
            }
        }
        let previous = v.secret("ENCRYPTION_SECRET_PREVIOUS").map(|(s, _)| s);
        let encryption_secrets_previous: Vec<Secret> = previous
            .map(|s| {
                s.expose()
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(Secret::new)
                    .collect()
            })
            .unwrap_or_default();
        if !encryption_secrets_previous.is_empty() && encryption_secret.is_none() {
            v.errors
                .push("ENCRYPTION_SECRET_PREVIOUS is set but ENCRYPTION_SECRET is not".into());
        }
        if encryption_secrets_previous
            .iter()
            .any(|s| s.expose().chars().count() < MIN_ENCRYPTION_SECRET_CHARS)
        {
            v.errors.push(format!(
                "ENCRYPTION_SECRET_PREVIOUS: every secret must be at least \
                 {MIN_ENCRYPTION_SECRET_CHARS} characters"
            ));
        }

        let listen = if v.get("LISTEN_FDS").is_some()
            && v.get("LISTEN_PID") == Some(std::process::id().to_string().as_str())
        {
            Listen::SocketActivation
        } else {
            let text = match (v.get("LISTEN_ADDR"), v.get("PORT")) {
                (Some(addr), _) => addr.to_string(),
                (None, Some(port)) => format!("0.0.0.0:{port}"),
                (None, None) => DEFAULT_LISTEN_ADDR.to_string(),
            };
            let name = if v.get("LISTEN_ADDR").is_none() && v.get("PORT").is_some() {
                "PORT"
            } else {
                "LISTEN_ADDR"
            };
            match parse_listen(&text) {
                Ok(addr) => Listen::Addr(addr),
                Err(()) => {
                    v.errors
                        .push(format!("{name}: '{text}' is not a host:port address"));
                    Listen::Addr(SocketAddr::from(([127, 0, 0, 1], 8080)))
                }
            }
        };

        let worker_threads = v.number("WORKER_THREADS", DEFAULT_WORKER_THREADS);
        if !(1..=MAX_WORKER_THREADS).contains(&worker_threads) {
            v.errors.push(format!(
                "WORKER_THREADS must be between 1 and {MAX_WORKER_THREADS}"
            ));
        }

        let swap_path = v.get("SWAP_PATH").unwrap_or("/swap").to_string();
        let refresh_path = v.get("REFRESH_PATH").unwrap_or("/refresh").to_string();
        for (name, path) in [("SWAP_PATH", &swap_path), ("REFRESH_PATH", &refresh_path)] {
            if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
                v.errors
                    .push(format!("{name}: '{path}' must be a path starting with '/'"));
            } else if matches!(path.as_str(), "/health" | "/metrics") {
                v.errors.push(format!(
                    "{name}: '{path}' is reserved for the server itself"
                ));
            }
        }
        if swap_path == refresh_path {
            v.errors
                .push("SWAP_PATH and REFRESH_PATH must differ".into());
        }

        let allowed_redirect_uris = v.list("ALLOWED_REDIRECT_URIS");

        let origins = v.list("CORS_ALLOW_ORIGINS");
        let cors = if origins.is_empty() {
            Cors::Off
        } else if origins.iter().any(|o| o == "*") {
            Cors::Any
        } else {
            for o in &origins {
                if !(o.starts_with("http://") || o.starts_with("https://")) || o.ends_with('/') {
                    v.errors.push(format!(
                        "CORS_ALLOW_ORIGINS: '{o}' is not an origin like https://app.example.com"
                    ));
                }
            }
            Cors::List(origins)
        };

        let timeout_secs = v.number("UPSTREAM_TIMEOUT_SECS", DEFAULT_UPSTREAM_TIMEOUT_SECS);
        if !(1..=MAX_UPSTREAM_TIMEOUT_SECS).contains(&timeout_secs) {
            v.errors.push(format!(
                "UPSTREAM_TIMEOUT_SECS must be between 1 and {MAX_UPSTREAM_TIMEOUT_SECS}"
            ));
        }

        let log_level = match v.get("LOG_LEVEL").map(str::to_ascii_lowercase).as_deref() {
            None | Some("info") => LevelFilter::Info,
            Some("error") => LevelFilter::Error,
            Some("warn") => LevelFilter::Warn,
            Some("debug") => LevelFilter::Debug,
            Some("trace") => LevelFilter::Trace,
            Some("off") => LevelFilter::Off,
            Some(other) => {
                v.errors.push(format!(
                    "LOG_LEVEL: '{other}' is not one of error, warn, info, debug, trace"
                ));
                LevelFilter::Info
            }
        };

        let rate_limit_per_minute =
            v.number("RATE_LIMIT_PER_MINUTE", DEFAULT_RATE_LIMIT_PER_MINUTE);
        let max_connections_per_client = v.number(
            "MAX_CONNECTIONS_PER_CLIENT",
            DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
        );
        if max_connections_per_client == 0 {
            v.errors
                .push("MAX_CONNECTIONS_PER_CLIENT must be at least 1".into());
        }
        let max_connections = v
            .get("MAX_CONNECTIONS")
            .is_some()
            .then(|| v.number("MAX_CONNECTIONS", 0usize));
        if max_connections == Some(0) {
            v.errors.push("MAX_CONNECTIONS must be at least 1".into());
        }

        let trusted_proxies = match v.map.get("TRUSTED_PROXIES") {
            None => vec![
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
            ],
            Some(_) => {
                let mut ips = Vec::new();
                for item in v.list("TRUSTED_PROXIES") {
                    match item.parse::<IpAddr>() {
                        Ok(ip) => ips.push(ip),
                        Err(_) => v
                            .errors
                            .push(format!("TRUSTED_PROXIES: '{item}' is not an IP address")),
                    }
                }
                ips
            }
        };

        let tls = match (v.get("TLS_CERT_FILE"), v.get("TLS_KEY_FILE")) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: PathBuf::from(cert),
                key: PathBuf::from(key),
            }),
            _ => {
                v.errors
                    .push("TLS_CERT_FILE and TLS_KEY_FILE must be set together".into());
                None
            }
        };

        let metrics = match v.get("METRICS").map(str::to_ascii_lowercase).as_deref() {
            None | Some("on") | Some("true") | Some("1") => true,
            Some("off") | Some("false") | Some("0") => false,
            Some(other) => {
                v.errors
                    .push(format!("METRICS: '{other}' is not 'on' or 'off'"));
                true
            }
        };

        if !v.errors.is_empty() {
            return Err(ConfigErrors(v.errors));
        }
        // Every `None` above pushed an error, so these are all present here.
        let (Some(client_id), Some(client_secret), Some(redirect_uri)) =
            (client_id, client_secret, redirect_uri)
        else {
            return Err(ConfigErrors(vec!["incomplete configuration".into()]));
        };

        Ok(Config {
            client_id,
            client_secret,
            redirect_uri,
            allowed_redirect_uris,
            token_url,
            extra_roots,
            ca_file,
            encryption_secret,
            encryption_secrets_previous,
            encryption_secret_file,
            listen,
            worker_threads,
            swap_path,
            refresh_path,
            cors,
            upstream_timeout: Duration::from_secs(timeout_secs),
            log_level,
            rate_limit_per_minute,
            max_connections,
            max_connections_per_client,
            trusted_proxies,
            tls,
            metrics,
        })
    }

    /// Whether `uri` may be sent as `redirect_uri` in a swap.
    pub fn redirect_uri_allowed(&self, uri: &str) -> bool {
        uri == self.redirect_uri || self.allowed_redirect_uris.iter().any(|u| u == uri)
    }

    /// The effective configuration for `check-config`, secrets redacted.
    pub fn describe(&self) -> String {
        let on_off = |b: bool| if b { "on" } else { "off" };
        let listen = match &self.listen {
            Listen::Addr(a) => a.to_string(),
            Listen::SocketActivation => "systemd socket (LISTEN_FDS)".into(),
        };
        let cors = match &self.cors {
            Cors::Off => "off".to_string(),
            Cors::Any => "*".to_string(),
            Cors::List(l) => l.join(","),
        };
        let proxies: Vec<String> = self.trusted_proxies.iter().map(|p| p.to_string()).collect();
        let mut lines = vec![
            format!("SPOTIFY_CLIENT_ID={}", self.client_id),
            format!("SPOTIFY_CLIENT_SECRET={}", self.client_secret),
            format!("SPOTIFY_REDIRECT_URI={}", self.redirect_uri),
            format!("token endpoint={}", self.token_url),
            format!(
                "SPOTIFY_CA_FILE={}",
                self.ca_file
                    .as_ref()
                    .map(|p| format!("{} ({} certificates)", p.display(), self.extra_roots.len()))
                    .unwrap_or_else(|| "(built-in roots)".into())
            ),
            format!(
                "ENCRYPTION_SECRET={}",
                if self.encryption_secret.is_some() {
                    "[redacted] (encryption on)"
                } else {
                    "(unset: refresh tokens are returned in clear)"
                }
            ),
            format!(
                "ENCRYPTION_SECRET_PREVIOUS={} secret(s)",
                self.encryption_secrets_previous.len()
            ),
            format!("LISTEN_ADDR={listen}"),
            format!("WORKER_THREADS={}", self.worker_threads),
            format!("SWAP_PATH={}", self.swap_path),
            format!("REFRESH_PATH={}", self.refresh_path),
            format!(
                "ALLOWED_REDIRECT_URIS={}",
                self.allowed_redirect_uris.join(",")
            ),
            format!("CORS_ALLOW_ORIGINS={cors}"),
            format!("UPSTREAM_TIMEOUT_SECS={}", self.upstream_timeout.as_secs()),
            format!("LOG_LEVEL={}", self.log_level.as_str().to_ascii_lowercase()),
            match self.rate_limit_per_minute {
                0 => "RATE_LIMIT_PER_MINUTE=0 (off)".to_string(),
                n => format!(
                    "RATE_LIMIT_PER_MINUTE={n} (per client address, burst {})",
                    crate::ratelimit::burst(n)
                ),
            },
            match self.max_connections {
                Some(n) => format!("MAX_CONNECTIONS={n}"),
                None => "MAX_CONNECTIONS=(from RLIMIT_NOFILE at start)".to_string(),
            },
            format!(
                "MAX_CONNECTIONS_PER_CLIENT={}",
                self.max_connections_per_client
            ),
            format!("TRUSTED_PROXIES={}", proxies.join(",")),
            format!("METRICS={}", on_off(self.metrics)),
            match &self.tls {
                Some(tls) => format!(
                    "TLS_CERT_FILE={} TLS_KEY_FILE={} (HTTPS on)",
                    tls.cert.display(),
                    tls.key.display()
                ),
                None => "TLS_CERT_FILE=(unset: plain HTTP)".to_string(),
            },
        ];
        lines.push(String::new());
        lines.join("\n")
    }
}

/// The process environment as UTF-8 pairs (others cannot be ours).
fn env_vars() -> impl Iterator<Item = (String, String)> {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
}

fn parse_listen(text: &str) -> Result<SocketAddr, ()> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    // Host names such as `localhost:8080`: take the first address.
    text.to_socket_addrs().map_err(|_| ())?.next().ok_or(())
}

/// Reads every certificate from a PEM file, as DER.
fn load_pem_certs(path: &std::path::Path) -> Result<Vec<Vec<u8>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read '{}': {e}", path.display()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(cert)) => certs.push(cert.der().to_vec()),
            Ok(_) => {}
            Err(_) => return Err(format!("'{}' is not valid PEM", path.display())),
        }
    }
    if certs.is_empty() {
        return Err(format!("'{}' holds no certificate", path.display()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            ("SPOTIFY_CLIENT_ID", "cid"),
            ("SPOTIFY_CLIENT_SECRET", "csecret-value"),
            ("SPOTIFY_REDIRECT_URI", "myapp://callback"),
        ]
    }

    fn with(extra: &[(&'static str, &'static str)]) -> Result<Config, ConfigErrors> {
        let mut vars = base();
        vars.extend_from_slice(extra);
        Config::from_vars(vars)
    }

    #[test]
    fn defaults_match_the_spec() {
        let c = with(&[]).unwrap();
        assert_eq!(c.listen, Listen::Addr("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(c.worker_threads, 32);
        assert_eq!(c.swap_path, "/swap");
        assert_eq!(c.refresh_path, "/refresh");
        assert_eq!(c.token_url, "https://accounts.spotify.com/api/token");
        assert_eq!(c.upstream_timeout, Duration::from_secs(10));
        assert_eq!(c.log_level, LevelFilter::Info);
        assert_eq!(c.rate_limit_per_minute, 60);
        assert_eq!(c.max_connections_per_client, 256);
        assert_eq!(c.max_connections, None);
        assert_eq!(c.cors, Cors::Off);
        assert!(c.encryption_secret.is_none());
        assert_eq!(
            c.trusted_proxies,
            vec![
                "127.0.0.1".parse::<IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
    }

    #[test]
    fn check_config_shows_the_rate_limit_and_its_burst() {
        let on = with(&[]).unwrap().describe();
        assert!(
            on.contains("RATE_LIMIT_PER_MINUTE=60 (per client address, burst 10)\n"),
            "{on}"
        );
        let off = with(&[("RATE_LIMIT_PER_MINUTE", "0")]).unwrap().describe();
        assert!(off.contains("RATE_LIMIT_PER_MINUTE=0 (off)\n"), "{off}");
    }

    #[test]
    fn port_alone_binds_all_interfaces() {
        let c = with(&[("PORT", "5000")]).unwrap();
        assert_eq!(c.listen, Listen::Addr("0.0.0.0:5000".parse().unwrap()));
        let c = with(&[("PORT", "5000"), ("LISTEN_ADDR", "127.0.0.1:9000")]).unwrap();
        assert_eq!(c.listen, Listen::Addr("127.0.0.1:9000".parse().unwrap()));
    }

    #[test]
    fn callback_url_is_an_alias_for_redirect_uri() {
        let c = Config::from_vars([
            ("SPOTIFY_CLIENT_ID", "cid"),
            ("SPOTIFY_CLIENT_SECRET", "s"),
            ("SPOTIFY_CLIENT_CALLBACK_URL", "myapp://cb"),
        ])
        .unwrap();
        assert_eq!(c.redirect_uri, "myapp://cb");
    }

    #[test]
    fn missing_required_variables_are_all_reported() {
        let errs = Config::from_vars(Vec::<(String, String)>::new()).unwrap_err();
        assert_eq!(errs.0.len(), 3, "{errs}");
        assert!(errs.0[0].contains("SPOTIFY_CLIENT_ID"));
        assert!(errs.0[1].contains("SPOTIFY_CLIENT_SECRET"));
        assert!(errs.0[2].contains("SPOTIFY_REDIRECT_URI"));
    }

    #[test]
    fn short_encryption_secret_is_rejected_without_echoing_it() {
        let errs = with(&[("ENCRYPTION_SECRET", "short-secret-value")]).unwrap_err();
        let text = errs.to_string();
        assert!(text.contains("ENCRYPTION_SECRET"), "{text}");
        assert!(!text.contains("short-secret-value"), "{text}");
    }

    #[test]
    fn bad_numbers_name_the_variable() {
        let errs = with(&[("WORKER_THREADS", "many"), ("UPSTREAM_TIMEOUT_SECS", "0")]).unwrap_err();
        assert_eq!(errs.0.len(), 2, "{errs}");
        assert!(errs.0[0].starts_with("WORKER_THREADS"));
        assert!(errs.0[1].starts_with("UPSTREAM_TIMEOUT_SECS"));
    }

    #[test]
    fn secret_file_drops_one_trailing_newline() {
        let dir = std::env::temp_dir().join(format!("sts-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret");
        std::fs::write(&path, "from-file\n").unwrap();
        let c = Config::from_vars([
            ("SPOTIFY_CLIENT_ID", "cid"),
            ("SPOTIFY_CLIENT_SECRET_FILE", path.to_str().unwrap()),
            ("SPOTIFY_REDIRECT_URI", "x://y"),
        ])
        .unwrap();
        assert_eq!(c.client_secret.expose(), "from-file");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn secret_debug_output_is_redacted() {
        let c = with(&[("ENCRYPTION_SECRET", "0123456789abcdef0123456789abcdef")]).unwrap();
        let debug = format!("{c:?}");
        assert!(!debug.contains("csecret-value"), "{debug}");
        assert!(!debug.contains("0123456789abcdef"), "{debug}");
        assert!(debug.contains("[redacted]"));
        assert!(!c.describe().contains("csecret-value"));
    }

    #[test]
    fn accounts_url_that_is_not_a_url_is_rejected() {
        for bad in [
            "ftp://accounts.example",
            "https://",
            "https://exa mple.com",
            "http://a\"b",
        ] {
            let errs = with(&[("SPOTIFY_ACCOUNTS_URL", bad)]).unwrap_err();
            assert!(
                errs.to_string().contains("SPOTIFY_ACCOUNTS_URL"),
                "{bad}: {errs}"
            );
        }
    }

    #[test]
    fn trailing_slash_on_accounts_url_is_ignored() {
        let c = with(&[("SPOTIFY_ACCOUNTS_URL", "http://127.0.0.1:9/")]).unwrap();
        assert_eq!(c.token_url, "http://127.0.0.1:9/api/token");
    }

    #[test]
    fn cors_star_allows_any_origin() {
        let c = with(&[("CORS_ALLOW_ORIGINS", "*")]).unwrap();
        assert!(c.cors.allows("https://anything.example"));
        let c = with(&[("CORS_ALLOW_ORIGINS", "https://a.example, https://b.example")]).unwrap();
        assert!(c.cors.allows("https://b.example"));
        assert!(!c.cors.allows("https://c.example"));
    }

    #[test]
    fn redirect_uri_allow_list() {
        let c = with(&[("ALLOWED_REDIRECT_URIS", "other://cb,third://cb")]).unwrap();
        assert!(c.redirect_uri_allowed("myapp://callback"));
        assert!(c.redirect_uri_allowed("third://cb"));
        assert!(!c.redirect_uri_allowed("evil://cb"));
    }
}
