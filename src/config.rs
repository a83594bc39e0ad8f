//! Environment → validated [`Config`], through one table of settings.
//!
//! `SETTINGS` lists every variable once: its name, aliases, `_FILE` form,
//! default, whether it is secret, one line of description, a parser into its
//! typed field of [`Config`] and how `check-config` shows it. Parsing
//! ([`Config::from_vars`]), `check-config` ([`Config::describe`]) and the
//! README's configuration table (a test compares them) all come from it;
//! adding a setting is one entry here and one field in [`Config`].
//!
//! Everything is parsed once, at start: addresses into `SocketAddr`s, times
//! into `Duration`s, CA files into certificates. Every problem is collected
//! as a `ConfigError`, so an operator sees all of them at once, one line
//! each, naming the variable — never a secret's value. Secrets live in
//! [`Secret`], whose `Debug` and `Display` print `[redacted]`.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use log::LevelFilter;

/// Listen address when neither `LISTEN_ADDR` nor `PORT` is set.
pub(crate) const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:8080";
/// Upper bound on `WORKER_THREADS`: each worker is a thread with its own stack.
pub(crate) const MAX_WORKER_THREADS: usize = 1024;
/// Largest accepted `UPSTREAM_TIMEOUT_SECS`.
pub(crate) const MAX_UPSTREAM_TIMEOUT_SECS: u64 = 300;
/// Shortest accepted encryption secret, in characters.
pub(crate) const MIN_ENCRYPTION_SECRET_CHARS: usize = 32;
/// The token endpoint, under `SPOTIFY_ACCOUNTS_URL`.
const TOKEN_PATH: &str = "/api/token";

/// Every setting, in the order `check-config` and the README list them.
pub(crate) static SETTINGS: &[Setting] = &[
    Setting {
        name: "SPOTIFY_CLIENT_ID",
        form: Form::PLAIN,
        when_unset: WhenUnset::Required,
        about: "the Spotify app's client id",
        parse: |c, v| {
            // It becomes the user part of HTTP Basic authentication.
            if v.contains(':') {
                return Err(Problem::ContainsColon);
            }
            c.client_id = v.to_string();
            Ok(())
        },
        show: |c| c.client_id.clone(),
    },
    Setting {
        name: "SPOTIFY_CLIENT_SECRET",
        form: Form::SECRET,
        when_unset: WhenUnset::Required,
        about: "the app's client secret",
        parse: |c, v| set(&mut c.client_secret, Secret::new(v)),
        show: |c| c.client_secret.to_string(),
    },
    Setting {
        name: "SPOTIFY_REDIRECT_URI",
        // The name the Ruby service used.
        form: Form {
            aliases: &["SPOTIFY_CLIENT_CALLBACK_URL"],
            ..Form::PLAIN
        },
        when_unset: WhenUnset::Required,
        about: "the redirect URI registered for the app",
        parse: |c, v| set(&mut c.redirect_uri, v.to_string()),
        show: |c| c.redirect_uri.clone(),
    },
    Setting {
        name: "SPOTIFY_ACCOUNTS_URL",
        form: Form::PLAIN,
        when_unset: WhenUnset::Default("https://accounts.spotify.com"),
        about: "base URL; the token endpoint is `{base}/api/token`",
        parse: |c, v| set(&mut c.token_url, token_url(v)?),
        show: |c| c.token_url.trim_end_matches(TOKEN_PATH).to_string(),
    },
    Setting {
        name: "SPOTIFY_CA_FILE",
        form: Form::PLAIN,
        when_unset: WhenUnset::Off(""),
        about: "PEM file of root certificates to trust for the accounts connection instead \
                of the built-in (Mozilla) roots — for TLS-inspecting proxies and tests",
        parse: |c, v| {
            c.extra_roots = load_pem_certs(Path::new(v))?;
            c.ca_file = Some(PathBuf::from(v));
            Ok(())
        },
        show: |c| match &c.ca_file {
            Some(path) => format!("{} ({} certificates)", path.display(), c.extra_roots.len()),
            None => "(built-in roots)".into(),
        },
    },
    Setting {
        name: "ENCRYPTION_SECRET",
        form: Form::SECRET,
        when_unset: WhenUnset::Off("(off)"),
        about: "enables refresh-token encryption; at least 32 characters \
                (`generate-secret` makes one)",
        parse: |c, v| {
            let secret = Secret::new(v);
            let short = too_short(&secret);
            // Kept even when too short: the problem is reported once, here.
            c.encryption_secret = Some(secret);
            if short {
                return Err(Problem::SecretTooShort);
            }
            Ok(())
        },
        show: |c| match &c.encryption_secret {
            Some(secret) => format!("{secret} (encryption on)"),
            None => "(unset: refresh tokens are returned in clear)".into(),
        },
    },
    Setting {
        name: "ENCRYPTION_SECRET_PREVIOUS",
        form: Form::SECRET,
        when_unset: WhenUnset::Off(""),
        about: "comma-separated older secrets, accepted for decryption only",
        parse: |c, v| {
            c.encryption_secrets_previous = list(v).into_iter().map(Secret::new).collect();
            if c.encryption_secrets_previous.iter().any(too_short) {
                return Err(Problem::PreviousTooShort);
            }
            Ok(())
        },
        show: |c| format!("{} secret(s)", c.encryption_secrets_previous.len()),
    },
    Setting {
        name: "LISTEN_ADDR",
        // Platforms that assign the port set `PORT` and expect every interface.
        form: Form {
            fallback: Some(Fallback {
                name: "PORT",
                to_value: |port| format!("0.0.0.0:{port}"),
            }),
            ..Form::PLAIN
        },
        when_unset: WhenUnset::Default(DEFAULT_LISTEN_ADDR),
        about: "`host:port` to bind; if unset and `PORT` is set, `0.0.0.0:$PORT`",
        parse: |c, v| set(&mut c.listen, Listen::Addr(parse_listen(v)?)),
        show: |c| match &c.listen {
            Listen::Addr(addr) => addr.to_string(),
            Listen::SocketActivation => "systemd socket (LISTEN_FDS)".into(),
        },
    },
    Setting {
        name: "WORKER_THREADS",
        form: Form::PLAIN,
        when_unset: WhenUnset::Default("32"),
        about: "size of the fixed pool of request workers (1–1024); a connection waiting for \
                bytes holds none",
        parse: |c, v| {
            set(
                &mut c.worker_threads,
                whole_number_between(v, 1, MAX_WORKER_THREADS)?,
            )
        },
        show: |c| c.worker_threads.to_string(),
    },
    Setting {
        name: "MAX_CONNECTIONS",
        form: Form::PLAIN,
        when_unset: WhenUnset::Off("from `RLIMIT_NOFILE`"),
        about: "open connections at most. At start the server raises its soft open-files \
                limit to the hard one, and by default keeps one descriptor per worker and 64 \
                more for itself (4,000 under the shipped unit's `LimitNOFILE=4096`); past it, \
                a new connection gets `503` with `Retry-After` (closed without a word on an \
                HTTPS port)",
        parse: |c, v| set(&mut c.max_connections, Some(at_least_one(v)?)),
        show: |c| match c.max_connections {
            Some(n) => n.to_string(),
            None => "(from RLIMIT_NOFILE at start)".into(),
        },
    },
    Setting {
        name: "SWAP_PATH",
        form: Form::PLAIN,
        when_unset: WhenUnset::Default("/swap"),
        about: "path of the endpoint that swaps a code for tokens",
        parse: |c, v| set(&mut c.swap_path, endpoint_path(v)?),
        show: |c| c.swap_path.clone(),
    },
    Setting {
        name: "REFRESH_PATH",
        form: Form::PLAIN,
        when_unset: WhenUnset::Default("/refresh"),
        about: "path of the endpoint that refreshes an access token",
        parse: |c, v| set(&mut c.refresh_path, endpoint_path(v)?),
        show: |c| c.refresh_path.clone(),
    },
    Setting {
        name: "ALLOWED_REDIRECT_URIS",
        form: Form::PLAIN,
        when_unset: WhenUnset::Off(""),
        about: "extra redirect URIs a client may name in `/swap` (comma-separated)",
        parse: |c, v| set(&mut c.allowed_redirect_uris, list(v)),
        show: |c| c.allowed_redirect_uris.join(","),
    },
    Setting {
        name: "CORS_ALLOW_ORIGINS",
        form: Form::PLAIN,
        when_unset: WhenUnset::Off("(CORS off)"),
        about: "comma-separated origins, or `*`",
        parse: |c, v| set(&mut c.cors, cors(v)?),
        show: |c| match &c.cors {
            Cors::Off => "off".into(),
            Cors::Any => "*".into(),
            Cors::List(origins) => origins.join(","),
        },
    },
    Setting {
        name: "UPSTREAM_TIMEOUT_SECS",
        form: Form::PLAIN,
        when_unset: WhenUnset::Default("10"),
        about: "whole-call limit for one request to Spotify (1–300)",
        parse: |c, v| {
            let secs = whole_number_between(v, 1, MAX_UPSTREAM_TIMEOUT_SECS)?;
            set(&mut c.upstream_timeout, Duration::from_secs(secs))
        },
        show: |c| c.upstream_timeout.as_secs().to_string(),
    },
    Setting {
        name: "LOG_LEVEL",
        form: Form::PLAIN,
        when_unset: WhenUnset::Default("info"),
        about: "`error`, `warn`, `info`, `debug`, `trace`",
        parse: |c, v| set(&mut c.log_level, log_level(v)?),
        show: |c| c.log_level.as_str().to_ascii_lowercase(),
    },
    Setting {
        name: "RATE_LIMIT_PER_MINUTE",
        form: Form::PLAIN,
        // A user needs about two an hour, so even an address shared by a
        // thousand (carrier-grade NAT) fits.
        when_unset: WhenUnset::Default("60"),
        about: "token requests per client address per minute, with a burst of 10 s worth (at \
                least 10, or the rate if lower: 60 a minute allows 10 at once, then one a \
                second); excess gets 429, and one warning per client per minute is logged (its \
                address only); raise it for addresses shared by many users, `0` turns it off \
                (see [Rate limit](#rate-limit))",
        parse: |c, v| set(&mut c.rate_limit_per_minute, whole_number(v)?),
        show: |c| match c.rate_limit_per_minute {
            0 => "0 (off)".into(),
            n => format!(
                "{n} (per client address, burst {})",
                crate::ratelimit::burst(n)
            ),
        },
    },
    Setting {
        name: "MAX_CONNECTIONS_PER_CLIENT",
        form: Form::PLAIN,
        when_unset: WhenUnset::Default("256"),
        about: "concurrent connections one client address may hold; further ones get `503` \
                with `Retry-After` (closed without a word on an HTTPS port); trusted proxies \
                are exempt (see [Limits](#limits))",
        parse: |c, v| set(&mut c.max_connections_per_client, at_least_one(v)?),
        show: |c| c.max_connections_per_client.to_string(),
    },
    Setting {
        name: "TRUSTED_PROXIES",
        // Set but empty: no proxy is trusted.
        form: Form {
            empty_is_a_value: true,
            ..Form::PLAIN
        },
        when_unset: WhenUnset::Default("127.0.0.1,::1"),
        about: "peers exempt from the connection cap, whose `X-Forwarded-For` names the client \
                (its right-most entry that is not itself a trusted proxy)",
        parse: |c, v| set(&mut c.trusted_proxies, ip_addresses(v)?),
        show: |c| {
            let proxies: Vec<String> = c.trusted_proxies.iter().map(IpAddr::to_string).collect();
            proxies.join(",")
        },
    },
    Setting {
        name: "METRICS",
        form: Form::PLAIN,
        when_unset: WhenUnset::Default("on"),
        about: "`off` removes `/metrics` (see [Monitoring](#monitoring))",
        parse: |c, v| set(&mut c.metrics, on_off(v)?),
        show: |c| if c.metrics { "on" } else { "off" }.into(),
    },
    Setting {
        name: "TLS_CERT_FILE",
        form: Form::PLAIN,
        when_unset: WhenUnset::Off(""),
        about: "serve HTTPS directly: PEM certificate chain, set together with \
                `TLS_KEY_FILE`; both are re-read on `SIGHUP` \
                (see [Serving HTTPS directly](#serving-https-directly))",
        parse: |c, v| {
            c.tls.get_or_insert_with(TlsFiles::default).cert = PathBuf::from(v);
            Ok(())
        },
        show: |c| match &c.tls {
            Some(files) => format!("{} (HTTPS on)", files.cert.display()),
            None => "(unset: plain HTTP)".into(),
        },
    },
    Setting {
        name: "TLS_KEY_FILE",
        form: Form::PLAIN,
        when_unset: WhenUnset::Off(""),
        about: "the certificate's private key (PEM), set together with `TLS_CERT_FILE`",
        parse: |c, v| {
            c.tls.get_or_insert_with(TlsFiles::default).key = PathBuf::from(v);
            Ok(())
        },
        show: |c| match &c.tls {
            Some(files) => files.key.display().to_string(),
            None => "(unset)".into(),
        },
    },
];

/// One environment variable: everything parsing, `check-config` and the
/// README need to know about it.
pub(crate) struct Setting {
    /// The variable.
    name: &'static str,
    /// Other ways to give it.
    form: Form,
    /// What applies when it is unset.
    when_unset: WhenUnset,
    /// Its row in the README's table.
    about: &'static str,
    /// Parses a value into its field of the configuration.
    parse: fn(&mut Config, &str) -> Result<(), Problem>,
    /// The effective value, for `check-config`.
    show: fn(&Config) -> String,
}

/// How a setting may be given, besides under its own name.
struct Form {
    /// Other names for it; set together, they must agree.
    aliases: &'static [&'static str],
    /// `{name}_FILE` may name a file holding the value instead.
    file_form: bool,
    /// Taken verbatim (not trimmed) and kept in a [`Secret`], so
    /// `check-config` shows `[redacted]`; its parser reports problems
    /// without quoting it (a test checks both).
    secret: bool,
    /// Read when the setting is unset.
    fallback: Option<Fallback>,
    /// Set but empty is a value (an empty list), not "unset".
    empty_is_a_value: bool,
}

impl Form {
    /// Only the variable itself.
    const PLAIN: Form = Form {
        aliases: &[],
        file_form: false,
        secret: false,
        fallback: None,
        empty_is_a_value: false,
    };
    /// A secret, also readable from `{name}_FILE` (systemd `LoadCredential=`).
    const SECRET: Form = Form {
        file_form: true,
        secret: true,
        ..Form::PLAIN
    };
}

/// Another variable that gives a setting when it is unset.
struct Fallback {
    name: &'static str,
    /// Its value, turned into one of the setting's.
    to_value: fn(&str) -> String,
}

/// What a setting is when its variable is unset.
enum WhenUnset {
    /// Nothing: a problem.
    Required,
    /// This value, parsed as if it had been set.
    Default(&'static str),
    /// Its field stays empty or off; the README says what that means.
    Off(&'static str),
}

impl Setting {
    /// Reads this setting from `env` into `config`.
    fn apply(&self, env: &Env, config: &mut Config) -> Result<(), ConfigError> {
        let (var, text) = match env.value_of(self)? {
            Some(value) => value,
            None => match self.when_unset {
                WhenUnset::Required => {
                    return Err(ConfigError::Missing {
                        name: self.name,
                        alternatives: self.alternatives(),
                    });
                }
                WhenUnset::Default(text) => (self.name.to_string(), text.to_string()),
                WhenUnset::Off(_) => return Ok(()),
            },
        };
        (self.parse)(config, &text).map_err(|problem| ConfigError::Invalid { var, problem })
    }

    /// The other variables that can give this setting.
    fn alternatives(&self) -> Vec<String> {
        let mut names: Vec<String> = self.form.aliases.iter().map(|a| a.to_string()).collect();
        if self.form.file_form {
            names.push(file_var(self.name));
        }
        names
    }
}

fn file_var(name: &str) -> String {
    format!("{name}_FILE")
}

/// The variables as given.
struct Env(HashMap<String, String>);

impl Env {
    /// `name`'s value, trimmed; empty counts as unset.
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    /// `name`'s value under `setting`'s rules.
    fn get_for(&self, setting: &Setting, name: &str) -> Option<String> {
        let form = &setting.form;
        if form.secret {
            // Verbatim: a secret may begin or end with a space.
            return self.0.get(name).filter(|v| !v.is_empty()).cloned();
        }
        if form.empty_is_a_value {
            return self.0.get(name).map(|v| v.trim().to_string());
        }
        self.get(name).map(String::from)
    }

    /// `setting`'s value and the variable it came from: its name, an alias,
    /// its `_FILE` form or its fallback. `None`: unset.
    fn value_of(&self, setting: &Setting) -> Result<Option<(String, String)>, ConfigError> {
        let names = std::iter::once(&setting.name).chain(setting.form.aliases);
        let given: Vec<(&'static str, String)> = names
            .filter_map(|&name| Some((name, self.get_for(setting, name)?)))
            .collect();
        if let [(name, text), rest @ ..] = given.as_slice() {
            if let Some((alias, _)) = rest.iter().find(|(_, other)| other != text) {
                return Err(ConfigError::Differ { name, alias });
            }
        }
        let file = if setting.form.file_form {
            self.get(&file_var(setting.name)).map(PathBuf::from)
        } else {
            None
        };
        match (given.into_iter().next(), file) {
            (Some(_), Some(_)) => Err(ConfigError::BothSet { name: setting.name }),
            (Some((name, text)), None) => Ok(Some((name.to_string(), text))),
            (None, Some(path)) => match read_secret_file(&path) {
                Ok(text) => Ok(Some((setting.name.to_string(), text))),
                Err(problem) => Err(ConfigError::Invalid {
                    var: file_var(setting.name),
                    problem,
                }),
            },
            (None, None) => Ok(setting.form.fallback.as_ref().and_then(|fallback| {
                let text = self.get(fallback.name)?;
                Some((fallback.name.to_string(), (fallback.to_value)(text)))
            })),
        }
    }
}

/// A secret string. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself; call sites are the few places that need it.
    pub(crate) fn expose(&self) -> &str {
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
pub(crate) enum Cors {
    /// No CORS headers at all (the default).
    Off,
    /// Any origin (`CORS_ALLOW_ORIGINS=*`).
    Any,
    /// Exactly these origins.
    List(Vec<String>),
}

impl Cors {
    /// Whether a request's `Origin` is allowed.
    pub(crate) fn allows(&self, origin: &str) -> bool {
        match self {
            Cors::Off => false,
            Cors::Any => true,
            Cors::List(list) => list.iter().any(|o| o == origin),
        }
    }
}

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Listen {
    /// Bind this address.
    Addr(SocketAddr),
    /// Take the listener passed by systemd socket activation (fd 3).
    SocketActivation,
}

/// Certificate and key files for serving HTTPS directly. Only the paths:
/// the server loads them when it starts (and again on `SIGHUP`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TlsFiles {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) client_id: String,
    pub(crate) client_secret: Secret,
    pub(crate) redirect_uri: String,
    /// Extra redirect URIs a client may name in `/swap`.
    pub(crate) allowed_redirect_uris: Vec<String>,
    /// Full URL of the token endpoint, `{base}/api/token`.
    pub(crate) token_url: String,
    /// Extra trusted root certificates (DER) from `SPOTIFY_CA_FILE`.
    pub(crate) extra_roots: Vec<Vec<u8>>,
    pub(crate) ca_file: Option<PathBuf>,
    /// Current encryption secret; `None` leaves refresh tokens in clear.
    pub(crate) encryption_secret: Option<Secret>,
    /// Older secrets, accepted for decryption only.
    pub(crate) encryption_secrets_previous: Vec<Secret>,
    pub(crate) listen: Listen,
    pub(crate) worker_threads: usize,
    pub(crate) swap_path: String,
    pub(crate) refresh_path: String,
    pub(crate) cors: Cors,
    pub(crate) upstream_timeout: Duration,
    /// `LOG_LEVEL`: the most verbose records logged.
    pub log_level: LevelFilter,
    pub(crate) rate_limit_per_minute: u32,
    /// `MAX_CONNECTIONS`; `None`: sized from `RLIMIT_NOFILE` at start.
    pub(crate) max_connections: Option<usize>,
    pub(crate) max_connections_per_client: usize,
    pub(crate) trusted_proxies: Vec<IpAddr>,
    pub(crate) tls: Option<TlsFiles>,
    pub(crate) metrics: bool,
}

/// One configuration problem. `Display` names the variable and, for a
/// setting that is not secret, the offending value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ConfigError {
    /// A required setting is unset, under every name it may be given.
    Missing {
        name: &'static str,
        alternatives: Vec<String>,
    },
    /// A secret is set both directly and through `{name}_FILE`.
    BothSet { name: &'static str },
    /// A setting and its alias hold different values.
    Differ {
        name: &'static str,
        alias: &'static str,
    },
    /// The value of `var` (the variable it came from) is unusable.
    Invalid { var: String, problem: Problem },
    /// `SWAP_PATH` and `REFRESH_PATH` are the same path.
    SamePaths,
    /// Older secrets without a current one to encrypt with.
    PreviousWithoutCurrent,
    /// Only one of `TLS_CERT_FILE` and `TLS_KEY_FILE` is set.
    HalfTls,
}

/// What is wrong with one value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Problem {
    NotWholeNumber(String),
    OutOfRange { min: String, max: String },
    Zero,
    ContainsColon,
    NotHttpUrl(String),
    Unreadable { path: PathBuf, error: String },
    EmptyFile(PathBuf),
    NotPem(PathBuf),
    NoCertificate(PathBuf),
    SecretTooShort,
    PreviousTooShort,
    NotHostPort(String),
    NotPath(String),
    ReservedPath(String),
    NotOrigins(Vec<String>),
    NotIpAddresses(Vec<String>),
    NotLogLevel(String),
    NotOnOff(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Missing { name, alternatives } if alternatives.is_empty() => {
                write!(f, "{name} is required")
            }
            ConfigError::Missing { name, alternatives } => {
                write!(f, "{name} (or {}) is required", alternatives.join(" or "))
            }
            ConfigError::BothSet { name } => write!(
                f,
                "{name} and {} are both set; set only one",
                file_var(name)
            ),
            ConfigError::Differ { name, alias } => {
                write!(f, "{name} and {alias} differ; set only one")
            }
            ConfigError::Invalid { var, problem } => write_problem(f, var, problem),
            ConfigError::SamePaths => f.write_str("SWAP_PATH and REFRESH_PATH must differ"),
            ConfigError::PreviousWithoutCurrent => {
                f.write_str("ENCRYPTION_SECRET_PREVIOUS is set but ENCRYPTION_SECRET is not")
            }
            ConfigError::HalfTls => {
                f.write_str("TLS_CERT_FILE and TLS_KEY_FILE must be set together")
            }
        }
    }
}

/// One line naming `var` and what is wrong with its value.
fn write_problem(f: &mut fmt::Formatter<'_>, var: &str, problem: &Problem) -> fmt::Result {
    const ORIGIN: &str = "like https://app.example.com";
    match problem {
        Problem::NotWholeNumber(t) => write!(f, "{var}: '{t}' is not a whole number"),
        Problem::OutOfRange { min, max } => write!(f, "{var} must be between {min} and {max}"),
        Problem::Zero => write!(f, "{var} must be at least 1"),
        Problem::ContainsColon => write!(f, "{var} must not contain ':'"),
        Problem::NotHttpUrl(t) => write!(f, "{var}: '{t}' is not an http:// or https:// URL"),
        Problem::Unreadable { path, error } => {
            write!(f, "{var}: cannot read '{}': {error}", path.display())
        }
        Problem::EmptyFile(path) => write!(f, "{var}: '{}' is empty", path.display()),
        Problem::NotPem(path) => write!(f, "{var}: '{}' is not valid PEM", path.display()),
        Problem::NoCertificate(path) => {
            write!(f, "{var}: '{}' holds no certificate", path.display())
        }
        Problem::SecretTooShort => write!(
            f,
            "{var} must be at least {MIN_ENCRYPTION_SECRET_CHARS} characters \
             (try: spotify-token-swap generate-secret)"
        ),
        Problem::PreviousTooShort => write!(
            f,
            "{var}: every secret must be at least {MIN_ENCRYPTION_SECRET_CHARS} characters"
        ),
        Problem::NotHostPort(t) => write!(f, "{var}: '{t}' is not a host:port address"),
        Problem::NotPath(t) => write!(f, "{var}: '{t}' must be a path starting with '/'"),
        Problem::ReservedPath(t) => write!(f, "{var}: '{t}' is reserved for the server itself"),
        Problem::NotOrigins(items) => match items.as_slice() {
            [one] => write!(f, "{var}: '{one}' is not an origin {ORIGIN}"),
            many => write!(f, "{var}: {} are not origins {ORIGIN}", quoted(many)),
        },
        Problem::NotIpAddresses(items) => match items.as_slice() {
            [one] => write!(f, "{var}: '{one}' is not an IP address"),
            many => write!(f, "{var}: {} are not IP addresses", quoted(many)),
        },
        Problem::NotLogLevel(t) => write!(
            f,
            "{var}: '{t}' is not one of error, warn, info, debug, trace"
        ),
        Problem::NotOnOff(t) => write!(f, "{var}: '{t}' is not 'on' or 'off'"),
    }
}

fn quoted(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("'{i}'")).collect();
    quoted.join(", ")
}

impl std::error::Error for ConfigError {}

/// Every configuration problem found, one line each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub(crate) Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "configuration error: {error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Config, ConfigErrors> {
        Config::from_vars(env_vars())
    }

    /// Builds the configuration from `(name, value)` pairs, so tests never
    /// touch the process environment: each of `SETTINGS` in turn, then the
    /// rules that involve more than one.
    pub fn from_vars<I, K, V>(vars: I) -> Result<Config, ConfigErrors>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let env = Env(vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect());
        let mut config = Config::blank();
        let mut errors: Vec<ConfigError> = SETTINGS
            .iter()
            .filter_map(|setting| setting.apply(&env, &mut config).err())
            .collect();
        errors.extend(config.settle(&env));
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// The configuration before any setting is applied. Every field here
    /// is overwritten by its setting's value or default, or stays as it is
    /// because unset means empty or off (`WhenUnset::Off`); a required one
    /// left blank is a [`ConfigError::Missing`], and no `Config` is returned.
    fn blank() -> Config {
        Config {
            client_id: String::new(),
            client_secret: Secret::new(""),
            redirect_uri: String::new(),
            allowed_redirect_uris: Vec::new(),
            token_url: String::new(),
            extra_roots: Vec::new(),
            ca_file: None,
            encryption_secret: None,
            encryption_secrets_previous: Vec::new(),
            listen: Listen::Addr(SocketAddr::from(([0, 0, 0, 0], 0))),
            worker_threads: 0,
            swap_path: String::new(),
            refresh_path: String::new(),
            cors: Cors::Off,
            upstream_timeout: Duration::ZERO,
            log_level: LevelFilter::Off,
            rate_limit_per_minute: 0,
            max_connections: None,
            max_connections_per_client: 0,
            trusted_proxies: Vec::new(),
            tls: None,
            metrics: false,
        }
    }

    /// The rules that involve more than one setting.
    fn settle(&mut self, env: &Env) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        // systemd socket activation, for this process, wins over LISTEN_ADDR.
        let pid = std::process::id().to_string();
        if env.get("LISTEN_FDS").is_some() && env.get("LISTEN_PID") == Some(pid.as_str()) {
            self.listen = Listen::SocketActivation;
        }
        // Empty: the path itself was reported.
        if !self.swap_path.is_empty() && self.swap_path == self.refresh_path {
            errors.push(ConfigError::SamePaths);
        }
        if !self.encryption_secrets_previous.is_empty() && self.encryption_secret.is_none() {
            errors.push(ConfigError::PreviousWithoutCurrent);
        }
        let half = |files: &TlsFiles| {
            files.cert.as_os_str().is_empty() || files.key.as_os_str().is_empty()
        };
        if self.tls.as_ref().is_some_and(half) {
            self.tls = None;
            errors.push(ConfigError::HalfTls);
        }
        errors
    }

    /// Whether `uri` may be sent as `redirect_uri` in a swap.
    pub(crate) fn redirect_uri_allowed(&self, uri: &str) -> bool {
        uri == self.redirect_uri || self.allowed_redirect_uris.iter().any(|u| u == uri)
    }

    /// The effective configuration for `check-config`, one `NAME=value`
    /// line per setting, secrets redacted.
    pub fn describe(&self) -> String {
        let mut text = String::new();
        for setting in SETTINGS {
            let _ = writeln!(text, "{}={}", setting.name, (setting.show)(self));
        }
        let _ = writeln!(text, "token endpoint={}", self.token_url);
        text
    }
}

/// The README's configuration table, in Markdown: one row per setting
/// (a test checks that README.md holds exactly this).
#[cfg_attr(not(test), expect(dead_code, reason = "only the README test calls it"))]
pub(crate) fn settings_table() -> String {
    let mut table = String::from("| variable | default | meaning |\n|---|---|---|\n");
    for setting in SETTINGS {
        let name = setting.name;
        let mut names = format!("`{name}`");
        if setting.form.file_form {
            let _ = write!(names, " or `{}`", file_var(name));
        }
        let default = match setting.when_unset {
            WhenUnset::Required => "(required)".to_string(),
            WhenUnset::Default(value) => format!("`{value}`"),
            WhenUnset::Off(meaning) => meaning.to_string(),
        };
        let mut about = setting.about.to_string();
        for alias in setting.form.aliases {
            let _ = write!(about, "; `{alias}` is accepted as an alias");
        }
        let row = format!("| {names} | {default} | {about} |");
        // An empty cell is one space, as people write it.
        table.push_str(&row.replace("|  |", "| |"));
        table.push('\n');
    }
    table
}

/// Stores a parsed value in its field (the end of most parsers).
fn set<T>(field: &mut T, value: T) -> Result<(), Problem> {
    *field = value;
    Ok(())
}

/// The process environment as UTF-8 pairs (others cannot be ours).
fn env_vars() -> impl Iterator<Item = (String, String)> {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
}

// Parsers: text → typed value, or the problem with it.

fn whole_number<T: FromStr>(text: &str) -> Result<T, Problem> {
    text.parse()
        .map_err(|_| Problem::NotWholeNumber(text.to_string()))
}

fn whole_number_between<T>(text: &str, min: T, max: T) -> Result<T, Problem>
where
    T: FromStr + PartialOrd + fmt::Display,
{
    let n = whole_number(text)?;
    if n < min || n > max {
        return Err(Problem::OutOfRange {
            min: min.to_string(),
            max: max.to_string(),
        });
    }
    Ok(n)
}

fn at_least_one(text: &str) -> Result<usize, Problem> {
    match whole_number(text)? {
        0 => Err(Problem::Zero),
        n => Ok(n),
    }
}

/// Comma-separated items, trimmed, empty ones dropped.
fn list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn too_short(secret: &Secret) -> bool {
    secret.expose().chars().count() < MIN_ENCRYPTION_SECRET_CHARS
}

/// `{base}/api/token`, for an `http://` or `https://` base URL.
fn token_url(base: &str) -> Result<String, Problem> {
    let base = base.trim_end_matches('/');
    let url = format!("{base}{TOKEN_PATH}");
    let http = base.starts_with("https://") || base.starts_with("http://");
    if !http || base.len() <= "https://".len() || ureq::http::Uri::try_from(url.as_str()).is_err() {
        return Err(Problem::NotHttpUrl(base.to_string()));
    }
    Ok(url)
}

fn parse_listen(text: &str) -> Result<SocketAddr, Problem> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    // Host names such as `localhost:8080`: take the first address.
    text.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| Problem::NotHostPort(text.to_string()))
}

fn endpoint_path(text: &str) -> Result<String, Problem> {
    if !text.starts_with('/') || text.contains(['?', '#', ' ']) {
        return Err(Problem::NotPath(text.to_string()));
    }
    if matches!(text, "/health" | "/metrics") {
        return Err(Problem::ReservedPath(text.to_string()));
    }
    Ok(text.to_string())
}

fn cors(text: &str) -> Result<Cors, Problem> {
    let origins = list(text);
    if origins.is_empty() {
        return Ok(Cors::Off);
    }
    if origins.iter().any(|o| o == "*") {
        return Ok(Cors::Any);
    }
    let bad: Vec<String> = origins
        .iter()
        .filter(|o| !(o.starts_with("http://") || o.starts_with("https://")) || o.ends_with('/'))
        .cloned()
        .collect();
    if !bad.is_empty() {
        return Err(Problem::NotOrigins(bad));
    }
    Ok(Cors::List(origins))
}

fn ip_addresses(text: &str) -> Result<Vec<IpAddr>, Problem> {
    let (ips, bad): (Vec<_>, Vec<_>) = list(text)
        .into_iter()
        .map(|item| item.parse::<IpAddr>().map_err(|_| item))
        .partition(Result::is_ok);
    if !bad.is_empty() {
        return Err(Problem::NotIpAddresses(
            bad.into_iter().filter_map(Result::err).collect(),
        ));
    }
    Ok(ips.into_iter().filter_map(Result::ok).collect())
}

fn log_level(text: &str) -> Result<LevelFilter, Problem> {
    match text.to_ascii_lowercase().as_str() {
        "error" => Ok(LevelFilter::Error),
        "warn" => Ok(LevelFilter::Warn),
        "info" => Ok(LevelFilter::Info),
        "debug" => Ok(LevelFilter::Debug),
        "trace" => Ok(LevelFilter::Trace),
        "off" => Ok(LevelFilter::Off),
        _ => Err(Problem::NotLogLevel(text.to_string())),
    }
}

fn on_off(text: &str) -> Result<bool, Problem> {
    match text.to_ascii_lowercase().as_str() {
        "on" | "true" | "1" => Ok(true),
        "off" | "false" | "0" => Ok(false),
        _ => Err(Problem::NotOnOff(text.to_string())),
    }
}

/// Reads a secret file; a single trailing newline (or CRLF) is dropped.
fn read_secret_file(path: &Path) -> Result<String, Problem> {
    let text = std::fs::read_to_string(path).map_err(|e| Problem::Unreadable {
        path: path.to_path_buf(),
        error: e.to_string(),
    })?;
    let text = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    if text.is_empty() {
        return Err(Problem::EmptyFile(path.to_path_buf()));
    }
    Ok(text.to_string())
}

/// Reads every certificate from a PEM file, as DER.
fn load_pem_certs(path: &Path) -> Result<Vec<Vec<u8>>, Problem> {
    let pem = std::fs::read(path).map_err(|e| Problem::Unreadable {
        path: path.to_path_buf(),
        error: e.to_string(),
    })?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(cert)) => certs.push(cert.der().to_vec()),
            Ok(_) => {}
            Err(_) => return Err(Problem::NotPem(path.to_path_buf())),
        }
    }
    if certs.is_empty() {
        return Err(Problem::NoCertificate(path.to_path_buf()));
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
        assert_eq!(
            errs.to_string(),
            "configuration error: SPOTIFY_CLIENT_ID is required\n\
             configuration error: SPOTIFY_CLIENT_SECRET (or SPOTIFY_CLIENT_SECRET_FILE) is required\n\
             configuration error: SPOTIFY_REDIRECT_URI (or SPOTIFY_CLIENT_CALLBACK_URL) is required"
        );
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
        assert_eq!(
            errs.0[0].to_string(),
            "WORKER_THREADS: 'many' is not a whole number"
        );
        assert_eq!(
            errs.0[1].to_string(),
            "UPSTREAM_TIMEOUT_SECS must be between 1 and 300"
        );
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

    /// README.md's configuration table, between its two marker comments.
    fn readme_table() -> String {
        const BEGIN: &str = "<!-- settings table: begin -->\n";
        const END: &str = "<!-- settings table: end -->";
        let readme = include_str!("../README.md");
        let start = readme
            .find(BEGIN)
            .expect("README.md lacks the begin marker")
            + BEGIN.len();
        let len = readme[start..]
            .find(END)
            .expect("README.md lacks the end marker");
        readme[start..start + len].to_string()
    }

    #[test]
    fn readme_table_matches_the_settings() {
        let expected = settings_table();
        assert!(
            readme_table() == expected,
            "README.md's configuration table differs from SETTINGS in src/config.rs; \
             between its markers it should read:\n{expected}"
        );
    }

    #[test]
    fn check_config_shows_every_setting_once() {
        let text = with(&[]).unwrap().describe();
        for setting in SETTINGS {
            let prefix = format!("{}=", setting.name);
            assert_eq!(
                text.lines().filter(|l| l.starts_with(&prefix)).count(),
                1,
                "{}:\n{text}",
                setting.name
            );
        }
    }

    #[test]
    fn secrets_never_show_in_check_config_nor_in_problems() {
        let secrets: Vec<&str> = SETTINGS
            .iter()
            .filter(|s| s.form.secret)
            .map(|s| s.name)
            .collect();
        assert_eq!(secrets.len(), 3);
        let mut vars: Vec<(String, String)> = base()
            .into_iter()
            .filter(|(name, _)| !secrets.contains(name))
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        for (i, name) in secrets.iter().enumerate() {
            vars.push((
                name.to_string(),
                format!("s{i}-plugh-0123456789abcdefghijklmnop"),
            ));
        }
        let text = Config::from_vars(vars.clone()).unwrap().describe();
        let long = vars.clone();
        // Cut to 20 characters, both encryption secrets are too short.
        vars.iter_mut().for_each(|(_, v)| v.truncate(20));
        let problems = Config::from_vars(vars.clone()).unwrap_err().to_string();
        assert_eq!(problems.lines().count(), 2, "{problems}");
        for (name, value) in long.iter().chain(&vars) {
            if secrets.contains(&name.as_str()) {
                assert!(!text.contains(value.as_str()), "{name}:\n{text}");
                assert!(!problems.contains(value.as_str()), "{name}:\n{problems}");
            }
        }
        assert!(
            text.contains("SPOTIFY_CLIENT_SECRET=[redacted]\n"),
            "{text}"
        );
    }

    #[test]
    fn a_secret_is_taken_verbatim_and_other_values_trimmed() {
        let c = Config::from_vars([
            ("SPOTIFY_CLIENT_ID", " cid "),
            ("SPOTIFY_CLIENT_SECRET", " spaced "),
            ("SPOTIFY_REDIRECT_URI", "x://y"),
        ])
        .unwrap();
        assert_eq!(c.client_id, "cid");
        assert_eq!(c.client_secret.expose(), " spaced ");
    }

    #[test]
    fn a_problem_names_the_variable_the_value_came_from() {
        let errs = with(&[("PORT", "nope")]).unwrap_err();
        assert_eq!(
            errs.0,
            vec![ConfigError::Invalid {
                var: "PORT".into(),
                problem: Problem::NotHostPort("0.0.0.0:nope".into()),
            }]
        );
        let errs = with(&[("ENCRYPTION_SECRET_FILE", "/nonexistent/secret")]).unwrap_err();
        assert!(
            errs.to_string().starts_with(
                "configuration error: ENCRYPTION_SECRET_FILE: cannot read '/nonexistent/secret'"
            ),
            "{errs}"
        );
    }

    #[test]
    fn alias_that_disagrees_is_a_problem_and_one_that_agrees_is_not() {
        let errs = with(&[("SPOTIFY_CLIENT_CALLBACK_URL", "other://cb")]).unwrap_err();
        assert_eq!(
            errs.to_string(),
            "configuration error: SPOTIFY_REDIRECT_URI and SPOTIFY_CLIENT_CALLBACK_URL differ; \
             set only one"
        );
        assert!(with(&[("SPOTIFY_CLIENT_CALLBACK_URL", "myapp://callback")]).is_ok());
    }

    #[test]
    fn every_bad_item_of_a_list_is_named_on_one_line() {
        let errs = with(&[("TRUSTED_PROXIES", "10.0.0.1, proxy, ::1, 300.1.1.1")]).unwrap_err();
        assert_eq!(
            errs.to_string(),
            "configuration error: TRUSTED_PROXIES: 'proxy', '300.1.1.1' are not IP addresses"
        );
    }

    #[test]
    fn empty_trusted_proxies_trusts_no_one() {
        let c = with(&[("TRUSTED_PROXIES", "")]).unwrap();
        assert!(c.trusted_proxies.is_empty());
    }

    #[test]
    fn tls_files_are_recorded_and_must_come_in_pairs() {
        // Loaded where the server starts, not here.
        let c = with(&[
            ("TLS_CERT_FILE", "/no/cert.pem"),
            ("TLS_KEY_FILE", "/no/key.pem"),
        ])
        .unwrap();
        assert_eq!(
            c.tls,
            Some(TlsFiles {
                cert: "/no/cert.pem".into(),
                key: "/no/key.pem".into()
            })
        );
        let errs = with(&[("TLS_KEY_FILE", "/no/key.pem")]).unwrap_err();
        assert_eq!(errs.0, vec![ConfigError::HalfTls]);
    }

    #[test]
    fn previous_secrets_need_a_current_one() {
        let errs = with(&[(
            "ENCRYPTION_SECRET_PREVIOUS",
            "0123456789abcdef0123456789abcdef",
        )])
        .unwrap_err();
        assert_eq!(errs.0, vec![ConfigError::PreviousWithoutCurrent]);
    }

    #[test]
    fn swap_and_refresh_paths_must_differ() {
        let errs = with(&[("SWAP_PATH", "/token"), ("REFRESH_PATH", "/token")]).unwrap_err();
        assert_eq!(errs.0, vec![ConfigError::SamePaths]);
    }
}
