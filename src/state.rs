//! What every request shares, built once at start: the configuration, the
//! client for Spotify's accounts service, each app's own state (its
//! credentials and back-off window, its refresh-token cipher — swapped on
//! `SIGHUP`), the rate limiter, the metrics and the HTTP layer's live
//! counters. It picks the app a token request is for and applies the rate
//! limit. Endpoints read it; only a reload changes it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::config::{AppConfig, Config, Cors};
use crate::error::Error;
use crate::fields::Fields;
use crate::http::{Request, Stats};
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::secret::Secret;
use crate::token::TokenCipher;
use crate::upstream;

/// The state requests share.
pub(crate) struct State {
    pub(crate) config: Config,
    /// The one client for Spotify, every app's calls through it.
    pub(crate) spotify: upstream::Client,
    /// Each app, in the configuration's order.
    apps: Vec<AppState>,
    /// Client id → index in `apps`, for the `client_id` field (with
    /// `SPOTIFY_APPS` only).
    by_client_id: HashMap<String, usize>,
    /// The origins answers carry CORS headers for before the app is known:
    /// a preflight, or an error on a plain token path. Every app's
    /// origins: the answer to the request itself follows its app's.
    any_app_cors: Cors,
    /// The secrets in use, to tell what a reload changed.
    secrets: Mutex<Secrets>,
    limiter: Option<RateLimiter>,
    /// For each of `TRUSTED_PROXIES` (an address or a range), whether it has
    /// been reported for sending no `X-Forwarded-For`.
    proxies_warned: Vec<AtomicBool>,
    pub(crate) metrics: Metrics,
    pub(crate) stats: Arc<Stats>,
}

/// One app's own state.
pub(crate) struct AppState {
    /// Its place in the configuration (and in `/metrics`).
    pub(crate) index: usize,
    pub(crate) config: AppConfig,
    /// Its credentials and back-off window at Spotify.
    pub(crate) account: upstream::Account,
    /// Refresh-token cipher, its client id the associated data; `None`
    /// with encryption off. Swapped on SIGHUP.
    cipher: RwLock<Option<Arc<TokenCipher>>>,
}

impl AppState {
    /// The refresh-token cipher in use; `None` with encryption off.
    pub(crate) fn cipher(&self) -> Option<Arc<TokenCipher>> {
        self.cipher
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl State {
    /// Builds the agent, each app's account and keys, and the limiter.
    /// `labels`: the metric label of each endpoint, in the order `/metrics`
    /// lists them.
    pub(crate) fn new(config: Config, stats: Arc<Stats>, labels: Vec<&'static str>) -> State {
        let secrets = Secrets::of(&config);
        let apps: Vec<AppState> = config
            .apps
            .iter()
            .enumerate()
            .map(|(index, app)| AppState {
                index,
                account: upstream::Account::new(&app.client_id, &app.client_secret),
                cipher: RwLock::new(secrets.cipher(&app.client_id)),
                config: app.clone(),
            })
            .collect();
        let limiter = (config.rate_limit_per_minute > 0).then(|| {
            RateLimiter::new(config.rate_limit_per_minute, config.http.client_ipv6_prefix)
        });
        // With one app, no label: `/metrics` as it has always been.
        let app_names = match config.one_app() {
            Some(_) => Vec::new(),
            None => config.apps.iter().filter_map(|a| a.name.clone()).collect(),
        };
        State {
            spotify: upstream::Client::new(&upstream::Settings {
                token_url: &config.token_url,
                extra_roots: &config.extra_roots,
                timeout: config.upstream_timeout,
                concurrent_calls: config.http.worker_threads,
                proxy: config.upstream_proxy.as_ref().map(|proxy| &proxy.url),
            }),
            by_client_id: config
                .apps
                .iter()
                .enumerate()
                .map(|(index, app)| (app.client_id.clone(), index))
                .collect(),
            any_app_cors: any_app_cors(&config.apps),
            apps,
            secrets: Mutex::new(secrets),
            limiter,
            proxies_warned: config
                .http
                .trusted_proxies
                .iter()
                .map(|_| AtomicBool::new(false))
                .collect(),
            metrics: Metrics::new(labels, app_names).with_certificate(config.acme.is_some()),
            stats,
            config,
        }
    }

    /// The app a token request is for. `by_path`: the app its path names
    /// (`/{name}{SWAP_PATH}`), or with a single app, that app. With
    /// `SPOTIFY_APPS`, a `client_id` field of the body names the app on the
    /// plain paths (none: the first app) and must agree with the path's.
    /// Without it, the body is not read here, as before there were apps.
    /// A lookup in a map, whatever the number of apps.
    pub(crate) fn pick_app(
        &self,
        by_path: Option<usize>,
        request: &Request,
    ) -> Result<&AppState, Error> {
        if self.config.one_app().is_some() {
            return Ok(&self.apps[0]);
        }
        let fields = Fields::parse(request, &["client_id"])?;
        let named = match fields.optional("client_id") {
            None => None,
            Some(id) => Some(
                *self
                    .by_client_id
                    .get(id)
                    .ok_or(Error::InvalidClient { path_app: false })?,
            ),
        };
        let index = match (by_path, named) {
            (Some(path), Some(named)) if path != named => {
                return Err(Error::InvalidClient { path_app: true });
            }
            (Some(index), _) | (None, Some(index)) => index,
            (None, None) => 0,
        };
        Ok(&self.apps[index])
    }

    /// The app at `index` in the configuration.
    pub(crate) fn app(&self, index: usize) -> &AppState {
        &self.apps[index]
    }

    /// The origins an answer carries CORS headers for: its app's, or
    /// before the app is known, any app's.
    pub(crate) fn cors(&self, app: Option<usize>) -> &Cors {
        match app {
            Some(index) => &self.apps[index].config.cors,
            None => &self.any_app_cors,
        }
    }

    /// Takes one token request from the client's allowance
    /// (`RATE_LIMIT_PER_MINUTE`), or refuses it 429 (counted for `app`).
    pub(crate) fn rate_limit(&self, request: &Request, app: Option<usize>) -> Result<(), Error> {
        let (Some(limiter), Some(client)) = (&self.limiter, request.client) else {
            return Ok(());
        };
        // SECURITY: a trusted proxy that sends no X-Forwarded-For names no
        // client: its requests are every user's, and one bucket for all of
        // them would let one user lock every other out. Unlimited is the
        // lesser harm; the operator is told once per entry of
        // TRUSTED_PROXIES (a range: once for all of its proxies), to fix it.
        let unnamed = (!request.forwarded_for)
            .then(|| {
                self.config
                    .http
                    .trusted_proxies
                    .iter()
                    .position(|proxy| proxy.contains(client))
            })
            .flatten();
        if let Some(proxy) = unnamed {
            if !self.proxies_warned[proxy].swap(true, Ordering::Relaxed) {
                let entry = self.config.http.trusted_proxies[proxy];
                log::warn!(
                    "trusted proxy {client} sends no X-Forwarded-For: its token requests \
                     are not rate-limited (make the proxy send X-Forwarded-For, or remove \
                     {entry} from TRUSTED_PROXIES)"
                );
            }
            return Ok(());
        }
        limiter.check(client).map_err(|limited| {
            self.metrics.rate_limited(app);
            // SECURITY: the address only — never the body, code or token.
            if limited.warn {
                log::warn!(
                    "rate limit: client {client} exceeded RATE_LIMIT_PER_MINUTE={}; \
                     its further refusals in the next {} s are not logged",
                    self.config.rate_limit_per_minute,
                    crate::ratelimit::WARN_WINDOW.as_secs()
                );
            }
            Error::RateLimited {
                retry_after_secs: limited.retry_after_secs,
            }
        })
    }

    /// Applies re-read secrets (SIGHUP): each app's client secret and the
    /// encryption secrets. Returns what changed, by variable name only.
    pub(crate) fn reload_secrets(&self, fresh: &Config) -> Vec<String> {
        let new = Secrets::of(fresh);
        let mut current = self.secrets.lock().unwrap_or_else(|e| e.into_inner());
        let mut changed = Vec::new();
        // The same environment names the same apps, in the same order;
        // only what the `_FILE`s hold can differ.
        let secrets = new.client_secrets.iter().zip(&current.client_secrets);
        for (app, (new, old)) in self.apps.iter().zip(secrets) {
            if new != old {
                app.account.set_client_secret(&app.config.client_id, new);
                changed.push(app.config.secret_var());
            }
        }
        if new.encryption != current.encryption || new.previous != current.previous {
            for app in &self.apps {
                *app.cipher.write().unwrap_or_else(|e| e.into_inner()) =
                    new.cipher(&app.config.client_id);
            }
            if new.encryption != current.encryption {
                changed.push("ENCRYPTION_SECRET".into());
            }
            if new.previous != current.previous {
                changed.push("ENCRYPTION_SECRET_PREVIOUS".into());
            }
        }
        *current = new;
        changed
    }
}

/// Every app's origins together: any origin if one app takes any.
fn any_app_cors(apps: &[AppConfig]) -> Cors {
    let mut origins: Vec<String> = Vec::new();
    for app in apps {
        match &app.cors {
            Cors::Off => {}
            Cors::Any => return Cors::Any,
            Cors::List(list) => {
                for origin in list {
                    if !origins.contains(origin) {
                        origins.push(origin.clone());
                    }
                }
            }
        }
    }
    if origins.is_empty() {
        Cors::Off
    } else {
        Cors::List(origins)
    }
}

/// The secrets the apps run with, as read from the environment and files.
#[derive(Debug, PartialEq, Eq)]
struct Secrets {
    /// Each app's, in order.
    client_secrets: Vec<Secret>,
    encryption: Option<Secret>,
    previous: Vec<Secret>,
}

impl Secrets {
    fn of(config: &Config) -> Secrets {
        Secrets {
            client_secrets: config
                .apps
                .iter()
                .map(|app| app.client_secret.clone())
                .collect(),
            encryption: config.encryption_secret.clone(),
            previous: config.encryption_secrets_previous.clone(),
        }
    }

    fn cipher(&self, client_id: &str) -> Option<Arc<TokenCipher>> {
        self.encryption
            .as_ref()
            .map(|current| Arc::new(TokenCipher::new(current, &self.previous, client_id)))
    }
}
