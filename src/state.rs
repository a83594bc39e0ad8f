//! What every request shares, built once at start: the configuration, the
//! client for Spotify's accounts service, the refresh-token cipher (swapped
//! on `SIGHUP`), the rate limiter, the metrics and the HTTP layer's live
//! counters. Endpoints read it; only a reload changes it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::config::Config;
use crate::error::Error;
use crate::http::{Request, Stats};
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::secret::Secret;
use crate::token::TokenCipher;
use crate::upstream;

/// The state requests share.
pub(crate) struct State {
    pub(crate) config: Config,
    pub(crate) spotify: upstream::Client,
    /// Refresh-token cipher; `None` with encryption off. Swapped on SIGHUP.
    cipher: RwLock<Option<Arc<TokenCipher>>>,
    /// The secrets in use, to tell what a reload changed.
    secrets: Mutex<Secrets>,
    limiter: Option<RateLimiter>,
    /// For each of `TRUSTED_PROXIES` (an address or a range), whether it has
    /// been reported for sending no `X-Forwarded-For`.
    proxies_warned: Vec<AtomicBool>,
    pub(crate) metrics: Metrics,
    pub(crate) stats: Arc<Stats>,
}

impl State {
    /// Builds the agent, keys and limiter. `labels`: the metric label of
    /// each endpoint, in the order `/metrics` lists them.
    pub(crate) fn new(config: Config, stats: Arc<Stats>, labels: Vec<&'static str>) -> State {
        let secrets = Secrets::of(&config);
        let cipher = RwLock::new(secrets.cipher(&config.client_id));
        let limiter = (config.rate_limit_per_minute > 0).then(|| {
            RateLimiter::new(config.rate_limit_per_minute, config.http.client_ipv6_prefix)
        });
        State {
            spotify: upstream::Client::new(&upstream::Settings {
                token_url: &config.token_url,
                extra_roots: &config.extra_roots,
                timeout: config.upstream_timeout,
                concurrent_calls: config.http.worker_threads,
                client_id: &config.client_id,
                client_secret: &config.client_secret,
                proxy: config.upstream_proxy.as_ref().map(|proxy| &proxy.url),
            }),
            cipher,
            secrets: Mutex::new(secrets),
            limiter,
            proxies_warned: config
                .http
                .trusted_proxies
                .iter()
                .map(|_| AtomicBool::new(false))
                .collect(),
            metrics: Metrics::new(labels),
            stats,
            config,
        }
    }

    /// The refresh-token cipher in use; `None` with encryption off.
    pub(crate) fn cipher(&self) -> Option<Arc<TokenCipher>> {
        self.cipher
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Takes one token request from the client's allowance
    /// (`RATE_LIMIT_PER_MINUTE`), or refuses it 429.
    pub(crate) fn rate_limit(&self, request: &Request) -> Result<(), Error> {
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
            self.metrics.rate_limited();
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

    /// Applies re-read secrets (SIGHUP): the client secret and the
    /// encryption secrets. Returns what changed, by variable name only.
    pub(crate) fn reload_secrets(&self, fresh: &Config) -> Vec<&'static str> {
        let new = Secrets::of(fresh);
        let mut current = self.secrets.lock().unwrap_or_else(|e| e.into_inner());
        let mut changed = Vec::new();
        if new.client_secret != current.client_secret {
            self.spotify
                .set_client_secret(&self.config.client_id, &new.client_secret);
            changed.push("SPOTIFY_CLIENT_SECRET");
        }
        if new.encryption != current.encryption || new.previous != current.previous {
            *self.cipher.write().unwrap_or_else(|e| e.into_inner()) =
                new.cipher(&self.config.client_id);
            if new.encryption != current.encryption {
                changed.push("ENCRYPTION_SECRET");
            }
            if new.previous != current.previous {
                changed.push("ENCRYPTION_SECRET_PREVIOUS");
            }
        }
        *current = new;
        changed
    }
}

/// The secrets an app runs with, as read from the environment and files.
#[derive(Debug, PartialEq, Eq)]
struct Secrets {
    client_secret: Secret,
    encryption: Option<Secret>,
    previous: Vec<Secret>,
}

impl Secrets {
    fn of(config: &Config) -> Secrets {
        Secrets {
            client_secret: config.client_secret.clone(),
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
