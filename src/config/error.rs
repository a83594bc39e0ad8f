//! What can be wrong with a configuration, and how it is told: one
//! [`ConfigError`] per problem, each shown as one line that names the
//! variable (and, for a setting that is not secret, the offending value),
//! all of them together as [`ConfigErrors`].

use std::fmt;
use std::path::PathBuf;

use super::redirect::Refusal;
use crate::secret::MIN_ENCRYPTION_SECRET_CHARS;

/// One configuration problem. `Display` names the variable and, for a
/// setting that is not secret, the offending value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ConfigError {
    /// A required setting is unset, under every name it may be given.
    Missing {
        name: String,
        alternatives: Vec<String>,
    },
    /// A secret is set both directly and through `{name}_FILE`.
    BothSet { name: String },
    /// A setting and its alias hold different values.
    Differ { name: String, alias: String },
    /// The value of `var` (the variable it came from) is unusable.
    Invalid { var: String, problem: Problem },
    /// `SWAP_PATH` and `REFRESH_PATH` are the same path.
    SamePaths,
    /// Older secrets without a current one to encrypt with.
    PreviousWithoutCurrent,
    /// Only one of `TLS_CERT_FILE` and `TLS_KEY_FILE` is set.
    HalfTls,
    /// `ACME_DOMAINS` together with certificate files.
    AcmeWithTlsFiles,
    /// `var`, one app's setting of the single-app form, is set together
    /// with `SPOTIFY_APPS`, where each app has its own
    /// `SPOTIFY_APP_<NAME>_{field}`.
    ReplacedByApps { var: String, field: &'static str },
    /// `var` looks like an app's setting, but `SPOTIFY_APPS` is unset.
    AppSettingWithoutApps { var: String },
    /// `var` looks like an app's setting, but names no app of
    /// `SPOTIFY_APPS` or no setting of one.
    NotAnAppSetting {
        var: String,
        /// The fields an app has, for the message.
        fields: String,
    },
    /// Two apps have the same client id: `var` repeats `first`'s.
    SameClientId { var: String, first: String },
    /// `var` (`SWAP_PATH`, `REFRESH_PATH`, or an app's own path) makes
    /// `path`, which device login serves (`PUBLIC_URL` is set).
    DevicePathTaken { var: String, path: String },
    /// An app's path `path` is also the plain path of `setting`.
    AppPathTaken {
        app: String,
        path: String,
        setting: &'static str,
    },
}

/// What is wrong with one value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Problem {
    NotWholeNumber(String),
    OutOfRange {
        min: String,
        max: String,
    },
    Zero,
    ContainsColon,
    NotHttpUrl(String),
    PlainHttpNotLoopback(String),
    NotProxyUrl,
    Unreadable {
        path: PathBuf,
        error: String,
    },
    EmptyFile(PathBuf),
    NotPem(PathBuf),
    NoCertificate(PathBuf),
    SecretTooShort,
    PreviousTooShort,
    NotHostPort(String),
    NotPath(String),
    ReservedPath(String),
    NotOrigins(Vec<String>),
    /// Redirect URIs Spotify would refuse, each with why.
    RedirectRefused(Vec<(String, Refusal)>),
    NotIpRanges(Vec<String>),
    /// `PUBLIC_URL` is not an `http(s)://` base URL.
    NotPublicUrl(String),
    /// `{PUBLIC_URL}/callback` is a redirect URI Spotify would refuse.
    PublicUrlRefused {
        callback: String,
        refusal: Refusal,
    },
    NotLogLevel(String),
    NotOnOff(String),
    NoApps,
    NotAppNames {
        names: Vec<String>,
        max_chars: usize,
    },
    AppListedTwice(String),
    TooManyApps {
        count: usize,
        max: usize,
    },
    NotDomainNames(Vec<String>),
    NotHttpsUrl(String),
    NotEmail(String),
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
            // The second is its `_FILE` form (`env::file_var`).
            ConfigError::BothSet { name } => {
                write!(f, "{name} and {name}_FILE are both set; set only one")
            }
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
            ConfigError::AcmeWithTlsFiles => f.write_str(
                "ACME_DOMAINS is set together with TLS_CERT_FILE/TLS_KEY_FILE: the server \
                 gets its own certificates with ACME_DOMAINS; unset one or the other",
            ),
            ConfigError::ReplacedByApps { var, field } => write!(
                f,
                "{var} is set together with SPOTIFY_APPS: give each app its own \
                 SPOTIFY_APP_<NAME>_{field}, and unset {var}"
            ),
            ConfigError::AppSettingWithoutApps { var } => write!(
                f,
                "{var} is an app's setting, but SPOTIFY_APPS is not set: list the apps \
                 there (SPOTIFY_APPS=name,name,…)"
            ),
            ConfigError::NotAnAppSetting { var, fields } => write!(
                f,
                "{var} is no setting of an app in SPOTIFY_APPS (SPOTIFY_APP_<NAME>_{fields}, \
                 with NAME upper-cased and - as _)"
            ),
            ConfigError::SameClientId { var, first } => write!(
                f,
                "{var} is the same client id as {first}; each app has its own"
            ),
            ConfigError::DevicePathTaken { var, path } => write!(
                f,
                "{var} makes {path}, a path of device login (PUBLIC_URL is set); choose \
                 another"
            ),
            ConfigError::AppPathTaken { app, path, setting } => write!(
                f,
                "SPOTIFY_APPS: app '{app}' is served at {path}, which is {setting}; rename \
                 the app or change {setting}"
            ),
        }
    }
}

/// One line naming `var` and what is wrong with its value.
fn write_problem(f: &mut fmt::Formatter<'_>, var: &str, problem: &Problem) -> fmt::Result {
    const ORIGIN: &str = "like https://app.example.com";
    const RANGE: &str = "like 10.0.0.0/8 (host bits zero)";
    match problem {
        Problem::NotWholeNumber(t) => write!(f, "{var}: '{t}' is not a whole number"),
        Problem::OutOfRange { min, max } => write!(f, "{var} must be between {min} and {max}"),
        Problem::Zero => write!(f, "{var} must be at least 1"),
        Problem::ContainsColon => write!(f, "{var} must not contain ':'"),
        Problem::NotHttpUrl(t) => write!(f, "{var}: '{t}' is not an http:// or https:// URL"),
        Problem::PlainHttpNotLoopback(t) => write!(
            f,
            "{var}: '{t}' would send the client secret in clear; http:// is allowed only to \
             a loopback address (127.0.0.0/8, [::1]), use https://"
        ),
        Problem::NotProxyUrl => write!(
            f,
            "{var} must be http://host:port or http://user:password@host:port (not shown: \
             it may hold a password)"
        ),
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
        Problem::RedirectRefused(items) => {
            write!(f, "{var}: ")?;
            for (i, (uri, refusal)) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str("; ")?;
                }
                write_refusal(f, uri, refusal)?;
            }
            Ok(())
        }
        Problem::NotOrigins(items) => match items.as_slice() {
            [one] => write!(f, "{var}: '{one}' is not an origin {ORIGIN}"),
            many => write!(f, "{var}: {} are not origins {ORIGIN}", quoted(many)),
        },
        Problem::NotIpRanges(items) => match items.as_slice() {
            [one] => write!(
                f,
                "{var}: '{one}' is not an IP address or a CIDR range {RANGE}"
            ),
            many => write!(
                f,
                "{var}: {} are not IP addresses or CIDR ranges {RANGE}",
                quoted(many)
            ),
        },
        Problem::NotPublicUrl(t) => write!(
            f,
            "{var}: '{t}' is not a base URL like https://swap.example.org (http:// or \
             https://, a host, perhaps a path; no user name, query or fragment)"
        ),
        Problem::PublicUrlRefused { callback, refusal } => match refusal {
            Refusal::Localhost { instead } => write!(
                f,
                "{var}: Spotify refuses localhost in redirect URIs, and device login's \
                 would be '{callback}'; write 127.0.0.1 for localhost (the redirect URI \
                 is then {instead})"
            ),
            Refusal::PlainHttp | Refusal::NotUri => write!(
                f,
                "{var}: device login's redirect URI would be '{callback}', which Spotify \
                 refuses: http:// only to 127.0.0.1 or [::1]; use https://"
            ),
        },
        Problem::NotLogLevel(t) => write!(
            f,
            "{var}: '{t}' is not one of error, warn, info, debug, trace"
        ),
        Problem::NotOnOff(t) => write!(f, "{var}: '{t}' is not 'on' or 'off'"),
        Problem::NotDomainNames(items) => match items.as_slice() {
            [one] => write!(f, "{var}: '{one}' is not a DNS name like pi.example.org"),
            many => write!(
                f,
                "{var}: {} are not DNS names like pi.example.org",
                quoted(many)
            ),
        },
        Problem::NotHttpsUrl(t) => write!(f, "{var}: '{t}' is not an https:// URL"),
        Problem::NotEmail(t) => write!(f, "{var}: '{t}' is not an e-mail address"),
        Problem::NoApps => write!(f, "{var} names no app"),
        Problem::NotAppNames { names, max_chars } => {
            let names = match names.as_slice() {
                [one] => format!("'{one}' is not an app name"),
                many => format!("{} are not app names", quoted(many)),
            };
            write!(f, "{var}: {names} (1 to {max_chars} of a-z, 0-9 and -)")
        }
        Problem::AppListedTwice(name) => write!(f, "{var}: '{name}' is listed twice"),
        Problem::TooManyApps { count, max } => {
            write!(f, "{var} lists {count} apps; at most {max}")
        }
    }
}

/// Why Spotify would refuse one redirect URI, and what to use instead.
fn write_refusal(f: &mut fmt::Formatter<'_>, uri: &str, refusal: &Refusal) -> fmt::Result {
    match refusal {
        Refusal::Localhost { instead } => write!(
            f,
            "'{uri}': Spotify refuses localhost in redirect URIs; use {instead} \
             (and register that at Spotify)"
        ),
        Refusal::PlainHttp => write!(
            f,
            "'{uri}': Spotify accepts http:// redirect URIs only to 127.0.0.1 or [::1]; \
             use https://, a custom scheme (myapp://callback) or http://127.0.0.1:PORT/…"
        ),
        Refusal::NotUri => write!(f, "'{uri}' is not a URI (scheme:…)"),
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

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::config::testing::with;

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
    fn every_bad_item_of_a_list_is_named_on_one_line() {
        let errs = with(&[("TRUSTED_PROXIES", "10.0.0.1, proxy, ::1, 300.1.1.1")]).unwrap_err();
        assert_eq!(
            errs.to_string(),
            "configuration error: TRUSTED_PROXIES: 'proxy', '300.1.1.1' are not IP addresses \
             or CIDR ranges like 10.0.0.0/8 (host bits zero)"
        );
    }

    #[test]
    fn one_bad_origin_is_named_in_the_singular() {
        let errs = with(&[("CORS_ALLOW_ORIGINS", "https://a.example/")]).unwrap_err();
        assert_eq!(
            errs.to_string(),
            "configuration error: CORS_ALLOW_ORIGINS: 'https://a.example/' is not an origin \
             like https://app.example.com"
        );
    }
}
