//! # spotify-token-swap
//!
//! A Spotify token swap and refresh server: it holds a Spotify app's client
//! secret so that apps which cannot keep one (mobile, desktop, CLI) can use
//! the Authorization Code flow with long-lived refresh tokens.
//!
//! How one `/swap` request flows, file by file:
//!
//! 1. the poller (`http/poll.rs`) accepts the connection, counts it against
//!    the caps (`http/admission.rs`) and parks it among the waiting ones
//!    (`http/waiting.rs`); once its bytes arrive, it queues it
//!    (`http/queue.rs`) for a worker of the fixed pool (`http/server.rs`);
//! 2. the worker gives the connection a turn (`http/conn.rs`): it reads
//!    through `http/transport.rs` (plain or TLS), takes in the head
//!    (`http/head.rs`) and body (`http/body.rs`) within their limits (the
//!    poller enforces the deadlines), and hands a [`http::Request`] to the
//!    handler (`http/answer.rs`);
//! 3. `endpoints.rs` finds the path's row in the table of endpoints,
//!    checks the method, picks the Spotify app the request is for (by its
//!    path or `client_id`: `state.rs`) and the client's rate limit, and
//!    calls the row's handler: `exchange.rs`'s `swap` reads the form or
//!    JSON fields (`fields.rs`) and calls
//! 4. `upstream/`, which posts to the accounts service through the one
//!    shared `ureq` agent (`upstream/client.rs`) with the app's
//!    credentials (`upstream/account.rs`) and judges its answer
//!    (`upstream/answer.rs`);
//! 5. [`token`] encrypts the refresh token in the answer for the app (when
//!    enabled);
//! 6. `endpoints.rs` adds what the row says every answer carries
//!    (`no-store`, CORS from `cors.rs`); `http/answer.rs` writes the JSON
//!    response (`http/response.rs`) and its log line
//!    (`http/access_log.rs`); `http/conn.rs` keeps or closes the
//!    connection.
//!
//! [`config`] turns the environment into a validated [`Config`]; [`Error`]
//! (`error.rs`) is the app's error type, mapping each failure to its status
//! and OAuth code (the HTTP layer's own answers are [`http::Error`]).
//!
//! The public items are those the binary (`src/main.rs`), the integration
//! tests, `examples/demo.rs` and the fuzz targets use; everything else is
//! `pub(crate)`.

// Keeps the surface that small, and documented. Set here, not in
// Cargo.toml's [lints], which would apply them to tests/ and examples/ too.
#![warn(unreachable_pub, missing_docs)]

mod acme;
pub mod config;
mod cors;
mod device;
mod endpoints;
mod error;
mod exchange;
pub mod fields;
mod healthcheck;
pub mod http;
pub mod journal;
mod lifetime;
mod logging;
mod login;
mod metrics;
mod pages;
mod ratelimit;
mod secret;
mod service;
mod state;
mod tls;
pub mod token;
mod upstream;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

pub use config::Config;
pub use error::Error;
pub use healthcheck::check_health;
pub use logging::{init_logging, install_panic_hook};
pub use login::login;
pub use tls::CertStore;

use config::{Listen, TlsFiles};
use endpoints::App;
use http::{ProgressProbe, Server, ShutdownHandle, Stats};

/// The version line printed by `--version` and at start.
pub const VERSION: &str = concat!("spotify-token-swap ", env!("CARGO_PKG_VERSION"));

/// Why serving stopped with an error.
#[derive(Debug)]
pub enum RunError {
    /// The listen address could not be bound (in use, no permission).
    Bind(std::io::Error),
    /// Startup failed otherwise.
    Startup(String),
    /// The configuration cannot be served as it is, found only at start:
    /// `LISTEN_FDS` naming sockets that were not passed, a TLS certificate
    /// or key that cannot be used.
    Config(String),
}

impl RunError {
    /// The exit status: 2 for configuration problems, as for every other
    /// bad configuration; 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Config(_) => 2,
            RunError::Bind(_) | RunError::Startup(_) => 1,
        }
    }
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Bind(e) => write!(f, "cannot listen: {e}"),
            RunError::Startup(why) | RunError::Config(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for RunError {}

/// Binds the listener the configuration names.
pub fn bind(config: &Config) -> Result<TcpListener, RunError> {
    match &config.listen {
        Listen::Addr(addr) => TcpListener::bind(addr).map_err(RunError::Bind),
        // A socket-activated start without a usable socket is a broken unit
        // (or `LISTEN_FDS` set by hand), not a runtime failure.
        Listen::SocketActivation => match service::activated_listener() {
            Ok(Some(listener)) => Ok(listener),
            Ok(None) => Err(RunError::Config(
                "LISTEN_FDS: set, but no socket was passed".into(),
            )),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(RunError::Startup(
                "the socket passed by systemd was already taken by an earlier bind".into(),
            )),
            Err(e) => Err(RunError::Config(format!(
                "LISTEN_FDS: descriptor 3 is not a listening socket ({e})"
            ))),
        },
    }
}

/// Loads the certificate and key `TLS_CERT_FILE` and `TLS_KEY_FILE` name
/// (`None`: plain HTTP). A file that cannot be used is a configuration
/// problem, exit status 2, named by its variable and never key material.
/// With `ACME_DOMAINS`: opens the state directory (one that cannot be
/// used is exit status 2 too) and serves the stored certificate, if good.
pub fn load_certificate(config: &Config) -> Result<Option<Arc<CertStore>>, RunError> {
    if let Some(settings) = &config.acme {
        return acme::start(settings).map(Some).map_err(RunError::Config);
    }
    let Some(files) = &config.tls else {
        return Ok(None);
    };
    CertStore::load(&files.cert, &files.key)
        .map(|store| Some(Arc::new(store)))
        .map_err(RunError::Config)
}

/// What `check-config` checks of the certificate: the files of
/// `TLS_CERT_FILE`/`TLS_KEY_FILE` load ([`load_certificate`]). With
/// `ACME_DOMAINS` nothing is read or made: the state directory is opened
/// when the server starts.
pub fn check_certificate(config: &Config) -> Result<(), RunError> {
    if config.acme.is_some() {
        return Ok(());
    }
    load_certificate(config).map(drop)
}

/// Builds the server around a bound listener. `certificate` is what
/// [`load_certificate`] loaded (HTTPS) or `None` (plain HTTP); `limits`
/// size `MAX_CONNECTIONS` when it is not set.
pub fn server(
    config: Config,
    listener: TcpListener,
    limits: http::ProcessLimits,
    certificate: Option<Arc<CertStore>>,
) -> Result<Server<App>, RunError> {
    let stats = Arc::new(Stats::default());
    let settings = config.http.clone();
    let acme = config.acme.is_some();
    let tls = certificate.map(|store| tls::server_config(store, acme));
    let app = Arc::new(App::new(config, Arc::clone(&stats)));
    Server::new(listener, app, settings, tls, limits, stats)
        .map_err(|e| RunError::Startup(format!("cannot set up the poller: {e}")))
}

/// The start line: version, address, paths, encryption on/off, and with
/// `SPOTIFY_APPS` the apps.
pub fn start_line(config: &Config, addr: std::net::SocketAddr) -> String {
    let apps = match config.one_app() {
        Some(_) => String::new(),
        None => {
            let names: Vec<&str> = config
                .apps
                .iter()
                .filter_map(|a| a.name.as_deref())
                .collect();
            format!(" apps={}", names.join(","))
        }
    };
    format!(
        "{VERSION} listening on {}://{addr} swap={} refresh={} encryption={} workers={}{apps}",
        if config.tls.is_some() || config.acme.is_some() {
            "https"
        } else {
            "http"
        },
        config.swap_path,
        config.refresh_path,
        if config.encryption_secret.is_some() {
            "on"
        } else {
            "off"
        },
        config.http.worker_threads
    )
}

/// SIGHUP: re-reads the secrets (from the environment and the `_FILE`s) and
/// the TLS certificate and key. Logs what changed by name, never a value; on
/// any error the old secrets or certificate stay in use. The two are
/// independent: a broken certificate does not block rotating the secrets.
fn reload(app: &App, https: Option<&(TlsFiles, Arc<CertStore>)>) {
    match Config::from_env() {
        // One record per problem: each is one line, written whole.
        Err(errors) => {
            for problem in &errors.0 {
                log::error!("SIGHUP: secrets not reloaded: {problem}");
            }
        }
        Ok(fresh) => {
            let changed = app.reload_secrets(&fresh);
            if changed.is_empty() {
                log::info!("SIGHUP: secrets unchanged");
            } else {
                log::info!("SIGHUP: reloaded {}", changed.join(", "));
            }
        }
    }
    if let Some((files, store)) = https {
        match store.reload(&files.cert, &files.key) {
            Ok(()) => log::info!(
                "SIGHUP: TLS certificate reloaded from {}",
                files.cert.display()
            ),
            Err(why) => log::error!("SIGHUP: {why}; keeping the current certificate"),
        }
    }
}

/// Starts a named helper thread; failing to is a startup error.
fn spawn(name: &str, body: impl FnOnce() + Send + 'static) -> Result<(), RunError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(body)
        .map(drop)
        .map_err(|e| RunError::Startup(format!("cannot start the {name} thread: {e}")))
}

/// Serves until `SIGTERM`/`SIGINT`, then drains and returns.
pub fn run(config: Config) -> Result<(), RunError> {
    service::block_signals()
        .map_err(|e| RunError::Startup(format!("cannot block signals: {e}")))?;
    let certificate = load_certificate(&config)?;
    let listener = bind(&config)?;
    let addr = listener.local_addr().map_err(RunError::Bind)?;
    log::info!("{}", start_line(&config, addr));
    if config.encryption_secret.is_none() {
        log::warn!("ENCRYPTION_SECRET is not set: refresh tokens are handed to clients in clear");
    }
    let limits = service::process_limits();
    let https = config.tls.clone().zip(certificate.clone());
    let acme = config.acme.clone().zip(certificate.clone());
    let server = server(config, listener, limits, certificate)?;
    if let Some((settings, store)) = acme {
        let metrics = server.handler().certificate_metrics().unwrap_or_default();
        let manager = acme::Manager::new(settings, store, metrics).map_err(RunError::Config)?;
        spawn("acme", move || manager.run())?;
    }
    let (shutdown, app) = (server.shutdown_handle(), Arc::clone(server.handler()));
    spawn("signals", move || {
        answer_signals(&shutdown, &app, https.as_ref())
    })?;
    service::notify("READY=1");
    if let Some(interval) = service::watchdog_interval() {
        let (shutdown, probe) = (server.shutdown_handle(), server.progress_probe());
        spawn("watchdog", move || {
            ping_watchdog(&shutdown, probe, interval)
        })?;
    }
    let (shutdown, app) = (server.shutdown_handle(), Arc::clone(server.handler()));
    spawn("keep-warm", move || keep_warm(&shutdown, &app))?;
    let drained = server
        .run()
        .map_err(|e| RunError::Startup(format!("the poller failed: {e}")))?;
    log::info!(
        "stopped{}",
        if drained {
            ""
        } else {
            " (some requests were cut off)"
        }
    );
    Ok(())
}

/// The signal thread: `SIGTERM`/`SIGINT` begin shutdown, `SIGHUP` reloads.
fn answer_signals(
    shutdown: &ShutdownHandle,
    app: &App,
    https: Option<&(TlsFiles, Arc<CertStore>)>,
) {
    loop {
        match service::wait() {
            service::Signal::Terminate => {
                log::info!("shutting down: finishing requests in flight");
                service::notify("STOPPING=1");
                shutdown.shutdown();
                return;
            }
            service::Signal::Reload => reload(app, https),
        }
    }
}

/// The watchdog thread. Each ping vouches that a canary went through the
/// poller and the queue to a worker since the last one: a wedged pool stops
/// pinging and systemd restarts the service.
fn ping_watchdog(shutdown: &ShutdownHandle, mut probe: ProgressProbe, interval: Duration) {
    while !shutdown.is_shutting_down() {
        if probe.check() {
            service::notify("WATCHDOG=1");
        }
        std::thread::sleep(interval);
    }
}

/// The keep-warm thread: keeps a pooled connection to Spotify open while
/// the server is in use (see `upstream::Client::keep_warm`).
fn keep_warm(shutdown: &ShutdownHandle, app: &App) {
    while !shutdown.is_shutting_down() {
        std::thread::sleep(upstream::KEEP_WARM_INTERVAL / 4);
        app.keep_warm();
    }
}
