//! The settings table: every environment variable the server reads, one
//! row each — its name, aliases, `_FILE` form, default, whether it is
//! secret, its line in the README, the parser that fills its field and how
//! `check-config` shows it. Parsing, `check-config` and the README's
//! configuration table all come from here, so this is the one list of
//! variables (tests hold `systemd/` and the README to it).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::apps;
use super::env::{APPS_VAR, Fallback, Form, WithApps, app_pattern};
use super::error::Problem;
use super::parse::{
    TOKEN_PATH, at_least_one, client_id, cors, domains, email, endpoint_path, https_url, ip_nets,
    join_uris, list, listen_addr, log_level, on_off, pem_certs, redirect_uri, redirect_uris,
    token_url, too_short, upstream_proxy, whole_number, whole_number_between,
};
use super::setting::{Setting, WhenUnset, set};
use super::{AcmeConfig, AppConfig, Config, Listen, PublicUrl};
use crate::http::IpNet;
use crate::secret::Secret;

/// Listen address when neither `LISTEN_ADDR` nor `PORT` is set.
pub(crate) const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:8080";
/// Upper bound on `WORKER_THREADS`: each worker is a thread with its own stack.
pub(crate) const MAX_WORKER_THREADS: usize = 1024;
/// Largest accepted `UPSTREAM_TIMEOUT_SECS`.
pub(crate) const MAX_UPSTREAM_TIMEOUT_SECS: u64 = 300;
/// Longest accepted `REFRESH_TOKEN_LIFETIME_SECS`: ten years of 365 days.
/// So `refresh_token_expires_in` always fits a signed 32-bit integer, what
/// clients written in C#, Java or Swift (`Int32`) may read it into, as they
/// read `expires_in`.
pub(crate) const MAX_REFRESH_TOKEN_LIFETIME_SECS: u64 = 10 * 365 * SECS_PER_DAY;
/// Seconds in a day, for lifetimes shown in days.
const SECS_PER_DAY: u64 = 86_400;
/// Shortest accepted `CLIENT_IPV6_PREFIX`: a /32 is a whole provider's
/// allocation, so anything shorter lumps unrelated customers together.
const MIN_CLIENT_IPV6_PREFIX: u8 = 32;
/// Most device logins `DEVICE_MAX_PENDING` may allow at once: a pending
/// login costs 500 to 650 bytes (docs/performance.md, "Pending device
/// logins"), so 10,000 stay near 6.5 MB, well inside the shipped unit's
/// `MemoryMax=64M` beside its connections.
const MAX_DEVICE_MAX_PENDING: usize = 10_000;
/// Longest `CLIENT_IPV6_PREFIX`: one address.
const MAX_CLIENT_IPV6_PREFIX: u8 = 128;

/// `MAX_CONNECTIONS` unset, as `check-config` shows it: the server sizes it
/// at start from its own limits; this process can only say what its own
/// limits (open files, memory limit of its cgroup) would give.
fn default_max_connections_shown(c: &super::Config) -> String {
    let cap = crate::http::default_max_connections(
        crate::service::process_limits(),
        c.http.worker_threads,
        c.tls.is_some() || c.acme.is_some(),
    );
    format!("(from the limits at start; under check-config's own: {cap})")
}

/// `ACME_DIRECTORY_URL` when unset: Let's Encrypt's production directory.
pub(crate) const LETS_ENCRYPT_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// `ACME_STATE_DIR` when neither it nor `STATE_DIRECTORY` is set.
const DEFAULT_STATE_DIR: &str = "/var/lib/spotify-token-swap";

/// An ACME setting as `check-config` shows it: only with `ACME_DOMAINS`.
fn acme_shown(c: &Config, value: fn(&AcmeConfig) -> String) -> String {
    match &c.acme {
        Some(acme) => value(acme),
        None => "(unused: ACME_DOMAINS is unset)".into(),
    }
}

/// Every setting, in the order `check-config` and the README list them.
pub(crate) static SETTINGS: &[Setting] = &[
    Setting {
        name: "SPOTIFY_CLIENT_ID",
        form: Form {
            with_apps: WithApps::Replaced("CLIENT_ID"),
            ..Form::PLAIN
        },
        when_unset: WhenUnset::Required,
        about: "the Spotify app's client id",
        parse: |d, v| set(&mut d.client_id, client_id(v)?),
        show: |c| one_app(c, "CLIENT_ID", |app| app.client_id.clone()),
    },
    Setting {
        name: "SPOTIFY_CLIENT_SECRET",
        form: Form {
            with_apps: WithApps::Unread,
            ..Form::SECRET
        },
        when_unset: WhenUnset::Required,
        about: "the app's client secret",
        parse: |d, v| set(&mut d.client_secret, Secret::new(v)),
        show: |c| match c.one_app() {
            Some(app) => app.client_secret.to_string(),
            None => format!("(not read: {APPS_VAR} is set)"),
        },
    },
    Setting {
        name: "SPOTIFY_REDIRECT_URI",
        // The name the Ruby service used.
        form: Form {
            aliases: &["SPOTIFY_CLIENT_CALLBACK_URL"],
            with_apps: WithApps::Replaced("REDIRECT_URI"),
            ..Form::PLAIN
        },
        when_unset: WhenUnset::Required,
        about: "the redirect URI registered for the app",
        parse: |d, v| set(&mut d.redirect_uri, redirect_uri(v)?),
        show: |c| one_app(c, "REDIRECT_URI", |app| app.redirect_uri.to_string()),
    },
    Setting {
        name: APPS_VAR,
        form: Form::PLAIN,
        when_unset: WhenUnset::Off("(one app)"),
        about: "several Spotify apps on one server: their names, comma-separated (1–32 of `a-z`, \
                `0-9` and `-`; at most 64). Each app is served at `/NAME{SWAP_PATH}` and \
                `/NAME{REFRESH_PATH}`, or on the plain paths for a `client_id` field naming it; \
                the first serves requests that name none. Its own settings follow, NAME \
                upper-cased with `-` as `_` (see [Several apps](#several-apps))",
        parse: |d, v| set(&mut d.app_names, apps::app_names(v)?),
        show: apps::shown,
    },
    Setting {
        name: "SPOTIFY_ACCOUNTS_URL",
        form: Form::PLAIN,
        when_unset: WhenUnset::Default("https://accounts.spotify.com"),
        about: "base URL; the token endpoint is `{base}/api/token`. `http://` only to a loopback \
                address written as one (`127.0.0.0/8`, `[::1]`; not `localhost`), for tests",
        parse: |d, v| set(&mut d.token_url, token_url(v)?),
        show: |c| c.token_url.trim_end_matches(TOKEN_PATH).to_string(),
    },
    Setting {
        name: "SPOTIFY_CA_FILE",
        form: Form::PLAIN,
        when_unset: WhenUnset::Off(""),
        about: "PEM file of root certificates to trust for the accounts connection instead \
                of the built-in (Mozilla) roots — for TLS-inspecting proxies and tests",
        parse: |d, v| set(&mut d.ca_file, (PathBuf::from(v), pem_certs(Path::new(v))?)),
        show: |c| match &c.ca_file {
            Some(path) => format!("{} ({} certificates)", path.display(), c.extra_roots.len()),
            None => "(built-in roots)".into(),
        },
    },
    Setting {
        name: "UPSTREAM_PROXY",
        form: Form {
            file_form: true,
            ..Form::PLAIN
        },
        when_unset: WhenUnset::Off("(direct)"),
        about: "HTTP proxy for the calls to Spotify, `http://host:port` or \
                `http://user:password@host:port` (percent-encoded; `check-config` shows \
                `[redacted]` for them); each connection is tunnelled with `CONNECT`. \
                `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY` and `NO_PROXY` are ignored, in any case \
                (see [Proxy to Spotify](#proxy-to-spotify))",
        parse: |d, v| set(&mut d.upstream_proxy, upstream_proxy(v)?),
        show: |c| match &c.upstream_proxy {
            Some(proxy) => proxy.shown.clone(),
            None => "(direct; proxy variables in the environment are ignored)".into(),
        },
    },
    Setting {
        name: "ENCRYPTION_SECRET",
        form: Form::SECRET,
        when_unset: WhenUnset::Off("(off)"),
        about: "enables refresh-token encryption; at least 32 characters \
                (`generate-secret` makes one)",
        parse: |d, v| {
            let secret = Secret::new(v);
            let short = too_short(&secret);
            // Kept even when too short: the problem is reported once, here.
            d.encryption_secret = Some(secret);
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
        parse: |d, v| {
            let secrets: Vec<Secret> = list(v).into_iter().map(Secret::new).collect();
            let short = secrets.iter().any(too_short);
            // Kept even when one is too short, so that previous secrets
            // without a current one are still reported.
            d.encryption_secrets_previous = Some(secrets);
            if short {
                return Err(Problem::PreviousTooShort);
            }
            Ok(())
        },
        show: |c| format!("{} secret(s)", c.encryption_secrets_previous.len()),
    },
    Setting {
        name: "REFRESH_TOKEN_LIFETIME_SECS",
        form: Form::PLAIN,
        // Spotify's: 180 days after sign-in, whatever the refreshes.
        when_unset: WhenUnset::Default("15552000"),
        about: "how long after the user signs in Spotify ends a refresh token (180 days; \
                refreshing does not extend it), 0–315360000. With encryption on, `200` answers \
                state the seconds left as `refresh_token_expires_in`, and Spotify's \
                `invalid_grant` past it says the token expired; `0`: never stated \
                (see [Spotify's rules](#spotifys-rules))",
        parse: |d, v| {
            let secs = whole_number_between(v, 0, MAX_REFRESH_TOKEN_LIFETIME_SECS)?;
            set(
                &mut d.refresh_token_lifetime,
                (secs > 0).then(|| Duration::from_secs(secs)),
            )
        },
        show: |c| match c.refresh_token_lifetime {
            Some(lifetime) => {
                let secs = lifetime.as_secs();
                format!("{secs} ({} days)", secs / SECS_PER_DAY)
            }
            None => "0 (never stated)".into(),
        },
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
        parse: |d, v| set(&mut d.listen, Listen::Addr(listen_addr(v)?)),
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
        parse: |d, v| {
            set(
                &mut d.worker_threads,
                whole_number_between(v, 1, MAX_WORKER_THREADS)?,
            )
        },
        show: |c| c.http.worker_threads.to_string(),
    },
    Setting {
        name: "MAX_CONNECTIONS",
        form: Form::PLAIN,
        when_unset: WhenUnset::Off("from `RLIMIT_NOFILE` and the memory limit"),
        about: "open connections at most. By default the smaller of what the open files leave \
                (at start the server raises its soft open-files limit to the hard one, and keeps \
                one descriptor per worker and 64 more for itself) and what fits in the memory \
                limit of its cgroup (systemd's `MemoryMax=`) beside the workers, each connection \
                counted at the most a peer can make it cost: 1,363 under the shipped unit \
                (`MemoryMax=64M`, `LimitNOFILE=4096`). Past it, a new connection gets `503` with \
                `Retry-After` (closed without a word on an HTTPS port); a value that does not fit \
                in the memory limit is warned about at start",
        parse: |d, v| set(&mut d.max_connections, at_least_one(v)?),
        show: |c| match c.http.max_connections {
            Some(n) => n.to_string(),
            None => default_max_connections_shown(c),
        },
    },
    Setting {
        name: "SWAP_PATH",
        form: Form::PLAIN,
        when_unset: WhenUnset::Default("/swap"),
        about: "path of the endpoint that swaps a code for tokens",
        parse: |d, v| set(&mut d.swap_path, endpoint_path(v)?),
        show: |c| c.swap_path.clone(),
    },
    Setting {
        name: "REFRESH_PATH",
        form: Form::PLAIN,
        when_unset: WhenUnset::Default("/refresh"),
        about: "path of the endpoint that refreshes an access token",
        parse: |d, v| set(&mut d.refresh_path, endpoint_path(v)?),
        show: |c| c.refresh_path.clone(),
    },
    Setting {
        name: "ALLOWED_REDIRECT_URIS",
        form: Form {
            with_apps: WithApps::Replaced("ALLOWED_REDIRECT_URIS"),
            ..Form::PLAIN
        },
        when_unset: WhenUnset::Off(""),
        about: "extra redirect URIs a client may name in `/swap` (comma-separated)",
        parse: |d, v| set(&mut d.allowed_redirect_uris, redirect_uris(v)?),
        show: |c| {
            one_app(c, "ALLOWED_REDIRECT_URIS", |app| {
                join_uris(&app.allowed_redirect_uris)
            })
        },
    },
    Setting {
        name: "CORS_ALLOW_ORIGINS",
        form: Form {
            with_apps: WithApps::Replaced("CORS_ALLOW_ORIGINS"),
            ..Form::PLAIN
        },
        when_unset: WhenUnset::Off("(CORS off)"),
        about: "comma-separated origins, or `*`",
        parse: |d, v| set(&mut d.cors, cors(v)?),
        show: |c| one_app(c, "CORS_ALLOW_ORIGINS", |app| apps::shown_cors(&app.cors)),
    },
    Setting {
        name: "PUBLIC_URL",
        form: Form::PLAIN,
        when_unset: WhenUnset::Off("(device login off)"),
        about: "the server's address as browsers reach it (`https://swap.example.org`), which \
                turns on device login: `/device/code`, `/device`, `/callback`, `/device/token`. \
                Register `{PUBLIC_URL}/callback` at Spotify for each app; Spotify's redirect \
                rules apply to it (`https://`; `http://` only to `127.0.0.1` or `[::1]`). Unset, \
                those paths do not exist (see \
                [Sign in a headless device](#sign-in-a-headless-device))",
        parse: |d, v| set(&mut d.public_url, PublicUrl::parse(v)?),
        show: |c| match &c.public_url {
            Some(url) => format!(
                "{url} (device login on; register {} at Spotify)",
                url.callback()
            ),
            None => "(unset: device login off)".into(),
        },
    },
    Setting {
        name: "DEVICE_MAX_PENDING",
        form: Form::PLAIN,
        when_unset: WhenUnset::Default("1000"),
        about: "device logins held at once, in memory (1–10000, about 650 bytes each), each for \
                at most 10 minutes; when full, `/device/code` answers `503` with `Retry-After`",
        parse: |d, v| {
            set(
                &mut d.device_max_pending,
                whole_number_between(v, 1, MAX_DEVICE_MAX_PENDING)?,
            )
        },
        show: |c| c.device_max_pending.to_string(),
    },
    Setting {
        name: "UPSTREAM_TIMEOUT_SECS",
        form: Form::PLAIN,
        when_unset: WhenUnset::Default("10"),
        about: "whole-call limit for one request to Spotify (1–300)",
        parse: |d, v| {
            let secs = whole_number_between(v, 1, MAX_UPSTREAM_TIMEOUT_SECS)?;
            set(&mut d.upstream_timeout, Duration::from_secs(secs))
        },
        show: |c| c.upstream_timeout.as_secs().to_string(),
    },
    Setting {
        name: "LOG_LEVEL",
        form: Form::PLAIN,
        when_unset: WhenUnset::Default("info"),
        about: "`error`, `warn`, `info`, `debug`, `trace`",
        parse: |d, v| set(&mut d.log_level, log_level(v)?),
        show: |c| c.log_level.as_str().to_ascii_lowercase(),
    },
    Setting {
        name: "RATE_LIMIT_PER_MINUTE",
        form: Form::PLAIN,
        // A user needs about two an hour, so even an address shared by a
        // thousand (carrier-grade NAT) fits.
        when_unset: WhenUnset::Default("60"),
        about: "token and `/device/code` requests per client (an IPv4 address, an IPv6 network: \
                `CLIENT_IPV6_PREFIX`) per minute, with a burst of 10 s worth (at \
                least 10, or the rate if lower: 60 a minute allows 10 at once, then one a \
                second); excess gets 429, and one warning per client per minute is logged (its \
                address only); raise it for addresses shared by many users, `0` turns it off \
                (see [Rate limit](#rate-limit))",
        parse: |d, v| set(&mut d.rate_limit_per_minute, whole_number(v)?),
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
        about: "concurrent connections one client (an IPv4 address, an IPv6 network: \
                `CLIENT_IPV6_PREFIX`) may hold; further ones get `503` with `Retry-After` (closed \
                without a word on an HTTPS port); trusted proxies are exempt \
                (see [Limits](#limits))",
        parse: |d, v| set(&mut d.max_connections_per_client, at_least_one(v)?),
        show: |c| c.http.max_connections_per_client.to_string(),
    },
    Setting {
        name: "CLIENT_IPV6_PREFIX",
        form: Form::PLAIN,
        // What a home or VPS customer is handed at least.
        when_unset: WhenUnset::Default("64"),
        about: "leading bits of an IPv6 address that make one client for \
                `MAX_CONNECTIONS_PER_CLIENT` and `RATE_LIMIT_PER_MINUTE` (32–128; `56` or `48` \
                for providers that hand out more, `128`: each address). An IPv4 address is one \
                client, and so is an IPv4-mapped one (`::ffff:a.b.c.d`)",
        parse: |d, v| {
            set(
                &mut d.client_ipv6_prefix,
                whole_number_between(v, MIN_CLIENT_IPV6_PREFIX, MAX_CLIENT_IPV6_PREFIX)?,
            )
        },
        show: |c| {
            format!(
                "{} (an IPv6 /{} is one client)",
                c.http.client_ipv6_prefix, c.http.client_ipv6_prefix
            )
        },
    },
    Setting {
        name: "TRUSTED_PROXIES",
        // Set but empty: no proxy is trusted.
        form: Form {
            empty_is_a_value: true,
            ..Form::PLAIN
        },
        when_unset: WhenUnset::Default("127.0.0.1,::1"),
        about: "peers — addresses or CIDR ranges (`10.0.0.0/8`, `fd00::/8`) — exempt from the \
                connection cap, whose `X-Forwarded-For` names the client (its right-most entry \
                that is not itself a trusted proxy)",
        parse: |d, v| set(&mut d.trusted_proxies, ip_nets(v)?),
        show: |c| joined(&c.http.trusted_proxies),
    },
    Setting {
        name: "METRICS",
        form: Form::PLAIN,
        when_unset: WhenUnset::Default("on"),
        about: "`off` removes `/metrics` (see [Monitoring](#monitoring))",
        parse: |d, v| set(&mut d.metrics, on_off(v)?),
        show: |c| if c.metrics { "on" } else { "off" }.into(),
    },
    Setting {
        name: "METRICS_ALLOW",
        form: Form::PLAIN,
        when_unset: WhenUnset::Default("127.0.0.0/8,::1"),
        about: "clients `/metrics` answers, addresses or CIDR ranges, judged by the client \
                address after `X-Forwarded-For`; to anyone else it is `404`, as a path that \
                does not exist (see [Monitoring](#monitoring))",
        parse: |d, v| set(&mut d.metrics_allow, ip_nets(v)?),
        show: |c| joined(&c.metrics_allow),
    },
    Setting {
        name: "TLS_CERT_FILE",
        form: Form::PLAIN,
        when_unset: WhenUnset::Off(""),
        about: "serve HTTPS directly: PEM certificate chain, set together with \
                `TLS_KEY_FILE`; both are re-read on `SIGHUP` \
                (see [Serving HTTPS directly](#serving-https-directly))",
        parse: |d, v| set(&mut d.tls_cert, PathBuf::from(v)),
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
        parse: |d, v| set(&mut d.tls_key, PathBuf::from(v)),
        show: |c| match &c.tls {
            Some(files) => files.key.display().to_string(),
            None => "(unset)".into(),
        },
    },
    Setting {
        name: "ACME_DOMAINS",
        form: Form::PLAIN,
        when_unset: WhenUnset::Off("(no ACME)"),
        about: "serve HTTPS with certificates the server gets and renews itself (ACME, \
                `tls-alpn-01` on this listener, so no port 80): the DNS names, comma-separated, \
                all on one certificate. Not with `TLS_CERT_FILE`. Setting it agrees to the CA's \
                terms of service (see [HTTPS with automatic certificates](#https-with-automatic-certificates))",
        parse: |d, v| set(&mut d.acme_domains, domains(v)?),
        show: |c| match &c.acme {
            Some(acme) => format!("{} (HTTPS on)", acme.domains.join(",")),
            None => "(unset: no ACME)".into(),
        },
    },
    Setting {
        name: "ACME_DIRECTORY_URL",
        form: Form::PLAIN,
        when_unset: WhenUnset::Default(LETS_ENCRYPT_DIRECTORY),
        about: "the CA's ACME directory (`https://`); Let's Encrypt's staging directory is \
                `https://acme-staging-v02.api.letsencrypt.org/directory`",
        parse: |d, v| set(&mut d.acme_directory_url, https_url(v)?),
        show: |c| acme_shown(c, |acme| acme.directory_url.clone()),
    },
    Setting {
        name: "ACME_EMAIL",
        form: Form::PLAIN,
        when_unset: WhenUnset::Off(""),
        about: "contact address given to the CA with the account (expiry warnings); optional",
        parse: |d, v| set(&mut d.acme_email, email(v)?),
        show: |c| {
            acme_shown(c, |acme| {
                acme.email.clone().unwrap_or_else(|| "(none)".into())
            })
        },
    },
    Setting {
        name: "ACME_CA_FILE",
        form: Form::PLAIN,
        when_unset: WhenUnset::Off(""),
        about: "PEM file of root certificates to trust for the ACME directory's HTTPS instead \
                of the built-in (Mozilla) roots — for a private CA and tests",
        parse: |d, v| {
            set(
                &mut d.acme_ca_file,
                (PathBuf::from(v), pem_certs(Path::new(v))?),
            )
        },
        show: |c| {
            acme_shown(c, |acme| match &acme.ca_file {
                Some(path) => format!("{} ({} certificates)", path.display(), acme.roots.len()),
                None => "(built-in roots)".into(),
            })
        },
    },
    Setting {
        name: "ACME_STATE_DIR",
        // systemd's `StateDirectory=` sets `STATE_DIRECTORY` (paths
        // separated by `:`; the first is ours).
        form: Form {
            fallback: Some(Fallback {
                name: "STATE_DIRECTORY",
                to_value: |dirs| dirs.split(':').next().unwrap_or_default().to_string(),
            }),
            ..Form::PLAIN
        },
        when_unset: WhenUnset::Default(DEFAULT_STATE_DIR),
        about: "where the ACME account key and the certificates are kept (made `0700`, files \
                `0600`); if unset and `STATE_DIRECTORY` is set (systemd's `StateDirectory=`), \
                that",
        parse: |d, v| set(&mut d.acme_state_dir, PathBuf::from(v)),
        show: |c| acme_shown(c, |acme| acme.state_dir.display().to_string()),
    },
];

/// A single-app setting as `check-config` shows it: the one app's value,
/// or with `SPOTIFY_APPS` where each app's is.
fn one_app(c: &Config, field: &str, value: fn(&AppConfig) -> String) -> String {
    match c.one_app() {
        Some(app) => value(app),
        None => format!("(per app: {})", app_pattern(field)),
    }
}

/// Addresses and ranges as a setting lists them.
fn joined(nets: &[IpNet]) -> String {
    let shown: Vec<String> = nets.iter().map(IpNet::to_string).collect();
    shown.join(",")
}

/// The README's configuration table, in Markdown: one row per setting
/// (a test checks that README.md holds exactly this).
#[cfg_attr(not(test), expect(dead_code, reason = "only the README test calls it"))]
pub(crate) fn settings_table() -> String {
    let mut table = String::from("| variable | default | meaning |\n|---|---|---|\n");
    for setting in SETTINGS {
        table.push_str(&setting.readme_row());
        table.push('\n');
        // Each app's own settings, one row per field, under the list of
        // apps.
        if setting.name == APPS_VAR {
            table.push_str(&apps::readme_rows());
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::config::testing::base;

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
    fn refresh_token_lifetime_is_180_days_by_default_0_never_and_at_most_ten_years() {
        use crate::config::testing::with;
        let lifetime = |value: &'static str| {
            with(&[("REFRESH_TOKEN_LIFETIME_SECS", value)]).map(|c| c.refresh_token_lifetime)
        };
        let default = with(&[]).unwrap();
        assert_eq!(
            default.refresh_token_lifetime,
            Some(Duration::from_secs(180 * SECS_PER_DAY))
        );
        assert!(
            default
                .describe()
                .contains("REFRESH_TOKEN_LIFETIME_SECS=15552000 (180 days)\n"),
            "{}",
            default.describe()
        );
        assert_eq!(lifetime("0").unwrap(), None);
        assert!(
            with(&[("REFRESH_TOKEN_LIFETIME_SECS", "0")])
                .unwrap()
                .describe()
                .contains("REFRESH_TOKEN_LIFETIME_SECS=0 (never stated)\n")
        );
        assert_eq!(lifetime("5").unwrap(), Some(Duration::from_secs(5)));
        assert_eq!(
            lifetime("315360000").unwrap(),
            Some(Duration::from_secs(MAX_REFRESH_TOKEN_LIFETIME_SECS))
        );
        assert!(MAX_REFRESH_TOKEN_LIFETIME_SECS <= i32::MAX as u64);
        for bad in ["315360001", "-1", "180d"] {
            let errs = lifetime(bad).unwrap_err().to_string();
            assert!(
                errs.contains("REFRESH_TOKEN_LIFETIME_SECS"),
                "{bad}: {errs}"
            );
        }
    }

    #[test]
    fn every_name_is_listed_once() {
        let mut names: Vec<String> = SETTINGS
            .iter()
            .flat_map(|s| std::iter::once(s.name.to_string()).chain(s.alternatives()))
            .collect();
        let count = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), count, "{names:?}");
    }
}
