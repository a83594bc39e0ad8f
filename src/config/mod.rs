//! Environment → validated [`Config`], through one table of settings.
//!
//! `settings.rs` lists every variable once (`SETTINGS`): its name, aliases,
//! `_FILE` form, default, whether it is secret, one line of description, a
//! parser into its typed value and how `check-config` shows it. Parsing
//! ([`Config::from_vars`]), `check-config` ([`Config::describe`]) and the
//! README's configuration table all come from it.
//!
//! Everything is parsed once, at start, in one pass: each row parses its
//! variable into its field of a draft (`draft.rs`), where a value not given
//! yet is `None`; the rules that involve more than one setting are checked
//! there; the `Config` is built at the end, from values that are all
//! present. A required setting that is missing is a problem, and then no
//! `Config` is made. Every problem is collected ([`ConfigErrors`]), so an
//! operator sees all of them at once, one line each, naming the variable —
//! never a secret's value. Secrets live in [`Secret`], whose `Debug` and
//! `Display` print `[redacted]`.
//!
//! Several apps (`SPOTIFY_APPS`): each app's own settings have names made
//! from the app's, `SPOTIFY_APP_<NAME>_CLIENT_ID`; `apps.rs` has their
//! table, one row per field of an app, and reads them after the table of
//! `settings.rs`. The configuration holds one [`AppConfig`] per app — one
//! made of the single-app settings when `SPOTIFY_APPS` is unset.
//!
//! The files, top down: `settings.rs` (the table) over `setting.rs` (what a
//! row is and how it is read) and `parse.rs` (text → typed value); `apps.rs`
//! (the apps' table and what involves several apps);
//! `draft.rs` (values not given yet → the `Config`); `env.rs` (which
//! variable gives a value, and its text); `error.rs` (what can be wrong,
//! one line each); `secret.rs`. The tests in `consistency/` hold the README
//! and `systemd/` to the table.

mod apps;
mod draft;
mod env;
mod error;
mod parse;
mod public_url;
mod redirect;
mod setting;
mod settings;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use log::LevelFilter;

pub use crate::secret::Secret;
pub(crate) use error::ConfigError;
pub use error::ConfigErrors;

use draft::Draft;
use env::Env;
pub(crate) use public_url::{
    CALLBACK_PATH, DEVICE_CODE_PATH, DEVICE_PAGE_PATH, DEVICE_TOKEN_PATH, PublicUrl,
};
use redirect::RedirectUri;
use settings::SETTINGS;

use crate::http::{self, IpNet};

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

/// `UPSTREAM_PROXY`: the proxy's URL, which may hold credentials, and the
/// form `check-config` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UpstreamProxy {
    /// The whole URL, credentials included.
    pub(crate) url: Secret,
    /// The URL with any credentials shown as `[redacted]`.
    pub(crate) shown: String,
}

/// Certificate and key files for serving HTTPS directly. Only the paths:
/// the server loads them when it starts (and again on `SIGHUP`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsFiles {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

/// `ACME_DOMAINS` and the settings that go with it: the server gets and
/// renews its own certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AcmeConfig {
    /// The names on the certificate, lower-case, each once, at least one.
    pub(crate) domains: Vec<String>,
    pub(crate) directory_url: String,
    pub(crate) email: Option<String>,
    pub(crate) ca_file: Option<PathBuf>,
    /// Roots (DER) from `ACME_CA_FILE`; empty: the built-in ones.
    pub(crate) roots: Vec<Vec<u8>>,
    pub(crate) state_dir: PathBuf,
}

/// One Spotify app the server serves: its credentials, redirect URIs and
/// the browser origins it allows.
#[derive(Debug, Clone)]
pub(crate) struct AppConfig {
    /// Its name in `SPOTIFY_APPS`, which it is served under
    /// (`/{name}{SWAP_PATH}`); `None`: the one app of the single-app
    /// settings.
    pub(crate) name: Option<String>,
    pub(crate) client_id: String,
    pub(crate) client_secret: Secret,
    pub(crate) redirect_uri: RedirectUri,
    /// Extra redirect URIs a client may name in a swap.
    pub(crate) allowed_redirect_uris: Vec<RedirectUri>,
    pub(crate) cors: Cors,
}

impl AppConfig {
    /// Whether `uri` may be sent as `redirect_uri` in a swap for this app:
    /// the one place that decides it.
    pub(crate) fn redirect_uri_allowed(&self, uri: &str) -> bool {
        self.redirect_uri.matches(uri) || self.allowed_redirect_uris.iter().any(|u| u.matches(uri))
    }

    /// The variable its client secret comes from (or its `_FILE` form).
    pub(crate) fn secret_var(&self) -> String {
        match &self.name {
            Some(name) => env::app_var(name, "CLIENT_SECRET"),
            None => "SPOTIFY_CLIENT_SECRET".into(),
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Every app, at least one: those of `SPOTIFY_APPS` in its order (the
    /// first serves requests that name none), or the one of the single-app
    /// settings.
    pub(crate) apps: Vec<AppConfig>,
    /// Full URL of the token endpoint, `{base}/api/token`.
    pub(crate) token_url: String,
    /// Extra trusted root certificates (DER) from `SPOTIFY_CA_FILE`.
    pub(crate) extra_roots: Vec<Vec<u8>>,
    pub(crate) ca_file: Option<PathBuf>,
    /// The proxy for calls to Spotify; `None`: direct (proxy variables in
    /// the environment are ignored).
    pub(crate) upstream_proxy: Option<UpstreamProxy>,
    /// Current encryption secret; `None` leaves refresh tokens in clear.
    pub(crate) encryption_secret: Option<Secret>,
    /// Older secrets, accepted for decryption only.
    pub(crate) encryption_secrets_previous: Vec<Secret>,
    /// `REFRESH_TOKEN_LIFETIME_SECS`: how long after sign-in Spotify ends a
    /// refresh token; `None` (`0`): never stated.
    pub(crate) refresh_token_lifetime: Option<Duration>,
    pub(crate) listen: Listen,
    /// The HTTP layer's settings, as it takes them.
    pub(crate) http: http::Settings,
    pub(crate) swap_path: String,
    pub(crate) refresh_path: String,
    /// `PUBLIC_URL`; `None`: device login off (its paths do not exist).
    pub(crate) public_url: Option<PublicUrl>,
    /// `DEVICE_MAX_PENDING`: device logins held at once.
    pub(crate) device_max_pending: usize,
    pub(crate) upstream_timeout: Duration,
    /// `LOG_LEVEL`: the most verbose records logged.
    pub log_level: LevelFilter,
    pub(crate) rate_limit_per_minute: u32,
    pub(crate) tls: Option<TlsFiles>,
    /// `ACME_DOMAINS`: HTTPS with certificates from a CA (never with `tls`).
    pub(crate) acme: Option<AcmeConfig>,
    pub(crate) metrics: bool,
    /// Clients `/metrics` answers (judged after `X-Forwarded-For`).
    pub(crate) metrics_allow: Vec<IpNet>,
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Config, ConfigErrors> {
        Config::from_vars(env::process_vars())
    }

    /// Builds the configuration from `(name, value)` pairs, so tests never
    /// touch the process environment: each of the settings in turn into a
    /// draft, then the rules that involve more than one, then the `Config`.
    pub fn from_vars<I, K, V>(vars: I) -> Result<Config, ConfigErrors>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let env = Env::new(vars);
        let mut draft = Draft::default();
        let mut errors: Vec<ConfigError> = SETTINGS
            .iter()
            .filter_map(|setting| setting.apply(&env, &mut draft).err())
            .collect();
        errors.extend(apps::read(&env, &mut draft));
        errors.extend(draft.settle(&env));
        errors.extend(apps::settle(&draft));
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        // A row that is required or has a default either filled its field
        // or reported a problem, so with no problem every field is there
        // (`defaults_match_the_spec` builds one from the fewest variables).
        Ok(draft
            .into_config()
            .expect("every required or defaulted setting is filled or reported"))
    }

    /// `SPOTIFY_ACCOUNTS_URL`, without a trailing `/`: Spotify's authorize
    /// page is `{base}/authorize`.
    pub(crate) fn accounts_url(&self) -> &str {
        self.token_url
            .strip_suffix(parse::TOKEN_PATH)
            .unwrap_or(&self.token_url)
    }

    /// The one app, when the single-app settings made it; `None` with
    /// `SPOTIFY_APPS`.
    pub(crate) fn one_app(&self) -> Option<&AppConfig> {
        match self.apps.as_slice() {
            [app] if app.name.is_none() => Some(app),
            _ => None,
        }
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

#[cfg(test)]
mod consistency;

/// The fewest variables that make a configuration, for tests.
#[cfg(test)]
mod testing {
    use super::{Config, ConfigErrors};

    /// The three required settings.
    pub(super) fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            ("SPOTIFY_CLIENT_ID", "cid"),
            ("SPOTIFY_CLIENT_SECRET", "csecret-value"),
            ("SPOTIFY_REDIRECT_URI", "myapp://callback"),
        ]
    }

    /// The required settings and `extra`.
    pub(super) fn with(extra: &[(&'static str, &'static str)]) -> Result<Config, ConfigErrors> {
        let mut vars = base();
        vars.extend_from_slice(extra);
        Config::from_vars(vars)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::with;
    use super::*;

    #[test]
    fn defaults_match_the_spec() {
        let c = with(&[]).unwrap();
        assert_eq!(c.listen, Listen::Addr("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(c.http.worker_threads, 32);
        assert_eq!(c.swap_path, "/swap");
        assert_eq!(c.refresh_path, "/refresh");
        assert_eq!(c.token_url, "https://accounts.spotify.com/api/token");
        assert_eq!(c.upstream_timeout, Duration::from_secs(10));
        assert_eq!(c.log_level, LevelFilter::Info);
        assert_eq!(c.rate_limit_per_minute, 60);
        assert_eq!(c.http.max_connections_per_client, 256);
        assert_eq!(c.http.max_connections, None);
        assert_eq!(c.apps[0].cors, Cors::Off);
        assert!(c.encryption_secret.is_none());
        let nets =
            |list: &[&str]| -> Vec<IpNet> { list.iter().map(|n| n.parse().unwrap()).collect() };
        assert_eq!(c.http.trusted_proxies, nets(&["127.0.0.1", "::1"]));
        assert_eq!(c.http.client_ipv6_prefix, 64);
        assert_eq!(c.metrics_allow, nets(&["127.0.0.0/8", "::1"]));
        assert_eq!(c.upstream_proxy, None);
        assert_eq!(c.public_url, None);
        assert_eq!(c.device_max_pending, 1000);
        assert_eq!(c.accounts_url(), "https://accounts.spotify.com");
    }

    #[test]
    fn check_config_shows_ranges_the_ipv6_prefix_and_no_proxy_password() {
        let text = with(&[
            ("TRUSTED_PROXIES", "10.0.0.0/8, fd00::/8,192.0.2.1"),
            ("CLIENT_IPV6_PREFIX", "56"),
            (
                "UPSTREAM_PROXY",
                "http://alice:pw-plugh-42@proxy.example:3128/",
            ),
        ])
        .unwrap()
        .describe();
        for line in [
            "TRUSTED_PROXIES=10.0.0.0/8,fd00::/8,192.0.2.1\n",
            "CLIENT_IPV6_PREFIX=56 (an IPv6 /56 is one client)\n",
            "METRICS_ALLOW=127.0.0.0/8,::1\n",
            "UPSTREAM_PROXY=http://[redacted]@proxy.example:3128\n",
        ] {
            assert!(text.contains(line), "{line}{text}");
        }
        assert!(!text.contains("pw-plugh-42"), "{text}");
        assert!(!text.contains("alice"), "{text}");
        let direct = with(&[]).unwrap().describe();
        assert!(
            direct.contains(
                "UPSTREAM_PROXY=(direct; proxy variables in the environment are ignored)\n"
            ),
            "{direct}"
        );
    }

    #[test]
    fn client_ipv6_prefix_is_between_32_and_128() {
        for good in ["32", "48", "128"] {
            assert!(with(&[("CLIENT_IPV6_PREFIX", good)]).is_ok(), "{good}");
        }
        for bad in ["31", "129", "0", "/64"] {
            let errs = with(&[("CLIENT_IPV6_PREFIX", bad)]).unwrap_err();
            assert_eq!(errs.0.len(), 1, "{errs}");
            assert!(
                errs.to_string().contains("CLIENT_IPV6_PREFIX"),
                "{bad}: {errs}"
            );
        }
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
    fn secret_debug_output_is_redacted() {
        let c = with(&[("ENCRYPTION_SECRET", "0123456789abcdef0123456789abcdef")]).unwrap();
        let debug = format!("{c:?}");
        assert!(!debug.contains("csecret-value"), "{debug}");
        assert!(!debug.contains("0123456789abcdef"), "{debug}");
        assert!(debug.contains("[redacted]"));
        assert!(!c.describe().contains("csecret-value"));
    }

    #[test]
    fn cors_star_allows_any_origin() {
        let c = with(&[("CORS_ALLOW_ORIGINS", "*")]).unwrap();
        assert!(c.apps[0].cors.allows("https://anything.example"));
        let c = with(&[("CORS_ALLOW_ORIGINS", "https://a.example, https://b.example")]).unwrap();
        assert!(c.apps[0].cors.allows("https://b.example"));
        assert!(!c.apps[0].cors.allows("https://c.example"));
    }

    #[test]
    fn redirect_uri_allow_list() {
        let c = with(&[("ALLOWED_REDIRECT_URIS", "other://cb,third://cb")]).unwrap();
        let app = c.one_app().unwrap();
        assert!(app.redirect_uri_allowed("myapp://callback"));
        assert!(app.redirect_uri_allowed("third://cb"));
        assert!(!app.redirect_uri_allowed("evil://cb"));
    }
}
