//! The accounts-service client: one `ureq` [`Agent`] for the whole process,
//! its configuration, the token call and keep-warm.
//!
//! One agent, so consecutive calls reuse kept-alive TLS connections; its
//! idle pool is sized to the worker count (ureq keeps only 3 idle
//! connections per host by default). Every app shares it: they all call
//! the same host, and the workers bound the calls at once whatever the
//! number of apps. Its connector and resolver are ours ([`super::tcp`],
//! [`super::dns`]). A call is made for one app's [`Account`] (its
//! credentials and back-off window): the back-off window
//! ([`super::answer::Backoff`]) → post the form with its `Authorization`
//! ([`super::grant`]) → judge the answer ([`super::answer`]).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use ureq::http::{Response, Uri};
use ureq::tls::{Certificate, RootCerts, TlsConfig};
use ureq::unversioned::transport::{ConnectProxyConnector, Connector as _, RustlsConnector};
use ureq::{Agent, Body, Proxy};

use super::account::Account;
use super::answer::{self, Call};
use super::dns::SingleFlightResolver;
use super::error::Error;
use super::grant::{Grant, encode_form};
use super::tcp::UpstreamTcpConnector;
use crate::secret::Secret;

/// The idle pool keeps at least this many connections, whatever the
/// worker count.
const MIN_POOLED_CONNECTIONS: usize = 4;
/// Idle pooled connections are dropped after this long; Spotify's side
/// closes idle connections too, so there is no point keeping them longer.
const POOL_IDLE_AGE: Duration = Duration::from_secs(50);
/// Quiet time after which a keep-warm request is sent; below the pool's
/// idle age and the idle timeouts servers commonly use (nginx: 75 s).
pub(crate) const KEEP_WARM_INTERVAL: Duration = Duration::from_secs(20);
/// Keep-warm requests stop this long after the last token call, so an idle
/// server does not talk to Spotify forever.
const KEEP_WARM_WINDOW: Duration = Duration::from_secs(15 * 60);
/// The most of a keep-warm answer's body read (a `HEAD` answer has none):
/// reading it lets the connection go back to the pool.
const KEEP_WARM_BODY_BYTES: u64 = 1024;
/// The largest response head taken from Spotify; its heads are about
/// 1 KiB, and a larger one is a 502.
const MAX_UPSTREAM_HEAD_BYTES: usize = 8 * 1024;
/// Size of ureq's per-connection read buffers (one for TCP, one for TLS
/// plaintext). ureq's default is 128 KiB per buffer per pooled connection,
/// zero-filled when allocated, so it all counts in RSS. Not below 10 KiB:
/// ureq grows a smaller one to 10 KiB for every request with a body (and
/// shrinks it back), zero-filling the difference each time. The body is
/// not limited by this (it is read in pieces up to
/// [`MAX_UPSTREAM_BODY_BYTES`](super::answer::MAX_UPSTREAM_BODY_BYTES)).
const UPSTREAM_READ_BUFFER_BYTES: usize = 10 * 1024;
/// Size of ureq's per-connection write buffers. A request head is a few
/// hundred bytes; a longer form body goes out in several pieces.
const UPSTREAM_WRITE_BUFFER_BYTES: usize = 4 * 1024;

/// What the client is built from: the few settings it needs, so this
/// subsystem does not read the whole configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings<'a> {
    /// Full URL of the token endpoint; checked to parse when the settings
    /// were read.
    pub(crate) token_url: &'a str,
    /// Extra trusted root certificates (DER), besides the Mozilla roots.
    pub(crate) extra_roots: &'a [Vec<u8>],
    /// Limit for one whole call, connecting included.
    pub(crate) timeout: Duration,
    /// Most calls running at once (the worker count): the idle pool keeps
    /// as many connections.
    pub(crate) concurrent_calls: usize,
    /// `UPSTREAM_PROXY`: an HTTP proxy's URL (credentials may be in it),
    /// checked to parse when the settings were read; `None`: direct.
    pub(crate) proxy: Option<&'a Secret>,
}

/// The accounts-service client, shared by all workers and all apps.
pub(crate) struct Client {
    agent: Agent,
    /// The token endpoint, parsed once instead of on every call.
    token_uri: Uri,
    /// When the last token call and the last call of any kind were made.
    activity: Mutex<Activity>,
}

#[derive(Debug, Clone, Copy)]
struct Activity {
    last_token_call: Option<Instant>,
    last_call: Option<Instant>,
}

impl Client {
    /// Builds the agent once.
    pub(crate) fn new(settings: &Settings<'_>) -> Client {
        Client {
            agent: agent(settings),
            token_uri: Uri::try_from(settings.token_url)
                .expect("the token URL is checked to parse when the settings are read"),
            activity: Mutex::new(Activity {
                last_token_call: None,
                last_call: None,
            }),
        }
    }

    /// Calls the token endpoint for `account`'s app, unless Spotify's
    /// back-off window for it is open. The [`Call`] carries Spotify's
    /// answer to pass on (200 or 4xx) or the [`Error`], and what there is
    /// to count.
    pub(crate) fn call(&self, account: &Account, grant: &Grant<'_>) -> Call {
        let started = Instant::now();
        if let Some(secs) = account.backoff.remaining() {
            return Call {
                result: Err(Error::Backoff {
                    retry_after_secs: secs.max(1),
                }),
                duration: None,
            };
        }
        self.note_token_call();
        let result = self
            .post(account, grant)
            .and_then(|response| answer::judge(response, &account.backoff));
        Call {
            result,
            duration: Some(started.elapsed()),
        }
    }

    /// Posts the grant's form with the app's credentials; the response
    /// head is in, its body not read yet.
    fn post(&self, account: &Account, grant: &Grant<'_>) -> Result<Response<Body>, Error> {
        let form = encode_form(grant);
        let auth = account.authorization();
        self.agent
            .post(self.token_uri.clone())
            .header("Authorization", auth.expose())
            .content_type("application/x-www-form-urlencoded")
            .send(form.as_bytes())
            .map_err(|e| Error::from_transport(&e))
    }

    fn note_token_call(&self) {
        let now = Instant::now();
        let mut activity = self.activity.lock().unwrap_or_else(|e| e.into_inner());
        activity.last_token_call = Some(now);
        activity.last_call = Some(now);
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
                let _ = response
                    .body_mut()
                    .with_config()
                    .limit(KEEP_WARM_BODY_BYTES)
                    .read_to_vec();
                log::debug!("upstream keep-warm: {}", response.status().as_u16());
            }
            Err(e) => log::debug!("upstream keep-warm failed: {}", Error::from_transport(&e)),
        }
        true
    }
}

/// The one agent: pool, limits, timeouts, TLS roots, and ureq's default
/// connector chain with our TCP layer in place of its own.
fn agent(settings: &Settings<'_>) -> Agent {
    let timeout = settings.timeout;
    let pooled = settings.concurrent_calls.max(MIN_POOLED_CONNECTIONS);
    let agent_config = Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .timeout_connect(Some(timeout))
        .max_idle_connections(pooled)
        .max_idle_connections_per_host(pooled)
        .max_idle_age(POOL_IDLE_AGE)
        .max_redirects(0)
        .max_response_header_size(MAX_UPSTREAM_HEAD_BYTES)
        .input_buffer_size(UPSTREAM_READ_BUFFER_BYTES)
        .output_buffer_size(UPSTREAM_WRITE_BUFFER_BYTES)
        .user_agent(concat!("spotify-token-swap/", env!("CARGO_PKG_VERSION")))
        .accept("application/json")
        .tls_config(tls_config(settings.extra_roots))
        // SECURITY: the proxy is set here, always: ureq's default reads
        // `ALL_PROXY`, `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY` (either
        // case) from the environment, so whoever can set a variable for
        // the process could route the client secret and every user's
        // tokens through a machine of theirs. `UPSTREAM_PROXY` says it.
        .proxy(settings.proxy.map(proxy))
        .build();
    // ureq's default chain, with our TCP layer in place of its own
    // (see `tcp`): a CONNECT proxy if configured, TCP, TLS.
    let connector =
        ().chain(ConnectProxyConnector::default())
            .chain(UpstreamTcpConnector)
            .chain(RustlsConnector::default());
    Agent::with_parts(agent_config, connector, SingleFlightResolver::default())
}

/// ureq's proxy for `UPSTREAM_PROXY`'s URL: an HTTP proxy each connection
/// is tunnelled through with `CONNECT` (ureq 3 uses `CONNECT` for `http://`
/// targets too, never absolute-form requests).
fn proxy(url: &Secret) -> Proxy {
    Proxy::new(url.expose()).expect("UPSTREAM_PROXY is checked to parse when the settings are read")
}

/// ureq's TLS settings (the Mozilla roots), with `extra_roots` as the
/// trusted roots instead when there are any.
pub(crate) fn tls_config(extra_roots: &[Vec<u8>]) -> TlsConfig {
    let mut tls = TlsConfig::builder();
    if !extra_roots.is_empty() {
        let roots: Vec<Certificate<'static>> = extra_roots
            .iter()
            .map(|der| Certificate::from_der(der).to_owned())
            .collect();
        tls = tls.root_certs(RootCerts::new_with_certs(&roots));
    }
    tls.build()
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn client_for(base: &str) -> Client {
        Client::new(&Settings {
            token_url: &format!("{base}/api/token"),
            extra_roots: &[],
            timeout: Duration::from_secs(10),
            concurrent_calls: 32,
            proxy: None,
        })
    }

    #[test]
    fn keep_warm_does_nothing_before_any_token_call() {
        let spotify = client_for("http://127.0.0.1:9");
        assert!(!spotify.keep_warm());
    }

    fn used_at(spotify: &Client, at: Instant) {
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
}
