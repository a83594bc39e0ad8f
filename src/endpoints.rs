//! The table of endpoints, and the application as the HTTP layer sees it.
//!
//! [`ENDPOINTS`] lists every path the server answers: where its path comes
//! from, the methods it takes, whether its answers carry `no-store` and
//! CORS headers, whether it is rate-limited, whether it calls Spotify, its
//! label in `/metrics`, and the function that answers it. What a row says is applied here, the same
//! way for every row; the handler only does its endpoint's own work. A new
//! endpoint is one row and its handler.
//!
//! [`App`] is the [`Handler`] the HTTP layer calls: it looks the path up
//! once (a map built at start from the table and the configuration),
//! answers, and records the answer under the row's label. It tells the
//! layer which requests are slow — those that may call Spotify — so they
//! never take the workers kept for the others.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{Config, Cors};
use crate::error::Error;
use crate::http::{Handler, Record, Request, Response, Stats};
use crate::state::State;
use crate::{cors, exchange};

/// Every endpoint, in the order `/metrics` lists them.
static ENDPOINTS: [Endpoint; 4] = [
    Endpoint {
        label: "swap",
        path: |config| Some(&config.swap_path),
        methods: Methods::Post,
        no_store: true,
        cors: true,
        rate_limited: true,
        calls_upstream: true,
        handler: exchange::swap,
    },
    Endpoint {
        label: "refresh",
        path: |config| Some(&config.refresh_path),
        methods: Methods::Post,
        no_store: true,
        cors: true,
        rate_limited: true,
        calls_upstream: true,
        handler: exchange::refresh,
    },
    Endpoint {
        label: "health",
        path: |_| Some("/health"),
        methods: Methods::Get,
        no_store: false,
        cors: false,
        rate_limited: false,
        calls_upstream: false,
        handler: health,
    },
    Endpoint {
        label: "metrics",
        path: |config| config.metrics.then_some("/metrics"),
        methods: Methods::Get,
        no_store: false,
        cors: false,
        rate_limited: false,
        calls_upstream: false,
        handler: metrics,
    },
];

/// The `/metrics` label of requests no endpoint took.
const OTHER_LABEL: &str = "other";

/// One row of the table.
struct Endpoint {
    /// Its label in `/metrics` (`endpoint="swap"`).
    label: &'static str,
    /// Its path, from the configuration or fixed; `None`: switched off.
    path: fn(&Config) -> Option<&str>,
    methods: Methods,
    /// Answers carry `Cache-Control: no-store` and `Pragma: no-cache`
    /// (RFC 6749 §5.1: token responses must not be cached).
    no_store: bool,
    /// Takes CORS preflights, and its answers — the HTTP layer's own
    /// errors too — carry CORS headers for an allowed origin.
    cors: bool,
    /// Each request takes one from the client's `RATE_LIMIT_PER_MINUTE`.
    rate_limited: bool,
    /// A request with an allowed method may call Spotify: the HTTP layer
    /// answers it as a slow request (`Handler::is_slow`). Preflights and
    /// 405s never call it.
    calls_upstream: bool,
    /// Answers a request with an allowed method.
    handler: fn(&State, &Request) -> Result<Response, Error>,
}

/// The methods an endpoint takes.
#[derive(Debug, Clone, Copy)]
enum Methods {
    /// `POST`: the token endpoints.
    Post,
    /// `GET` and `HEAD`.
    Get,
}

impl Methods {
    fn allows(self, method: &str) -> bool {
        match self {
            Methods::Post => method == "POST",
            Methods::Get => matches!(method, "GET" | "HEAD"),
        }
    }

    /// The `Allow` header of a 405; `preflight`: CORS preflights are
    /// answered too.
    fn allow(self, preflight: bool) -> &'static str {
        match (self, preflight) {
            (Methods::Post, false) => "POST",
            (Methods::Post, true) => "POST, OPTIONS",
            (Methods::Get, _) => "GET, HEAD",
        }
    }
}

impl Endpoint {
    /// The answer before the row's headers: a preflight, a 405, a 429, or
    /// what the handler says.
    fn answer(&self, state: &State, request: &Request) -> Result<Response, Error> {
        let preflight = self.cors && state.config.cors != Cors::Off;
        match request.method.as_str() {
            "OPTIONS" if preflight => Ok(Response::empty(204)),
            method if self.methods.allows(method) => {
                if self.rate_limited {
                    state.rate_limit(request)?;
                }
                (self.handler)(state, request)
            }
            _ => Err(Error::MethodNotAllowed {
                allow: self.methods.allow(preflight),
            }),
        }
    }

    /// Adds what every answer on this path carries.
    fn decorate(&self, state: &State, request: &Request, response: Response) -> Response {
        let response = if self.no_store {
            response
                .with_header("Cache-Control", "no-store")
                .with_header("Pragma", "no-cache")
        } else {
            response
        };
        if self.cors {
            cors::decorate(&state.config.cors, request, response)
        } else {
            response
        }
    }
}

/// `GET /health`: no upstream call.
fn health(_: &State, _: &Request) -> Result<Response, Error> {
    Ok(Response::json(200, br#"{"status":"ok"}"#.to_vec()))
}

/// `GET /metrics`: Prometheus text.
fn metrics(state: &State, _: &Request) -> Result<Response, Error> {
    let mut response = Response::json(200, state.metrics.render(&state.stats).into_bytes());
    response.content_type = "text/plain; version=0.0.4; charset=utf-8";
    Ok(response)
}

/// A path no endpoint takes: `OPTIONS *` asks what the server supports;
/// anything else is 404.
fn no_endpoint(request: &Request) -> Response {
    if request.method == "OPTIONS" && request.path == "*" {
        return Response::empty(204).with_header("Allow", "GET, HEAD, POST, OPTIONS");
    }
    Error::NotFound.response()
}

/// The application: the shared state and the table's paths.
pub struct App {
    state: State,
    /// Path → index in [`ENDPOINTS`], for the endpoints switched on.
    routes: HashMap<String, usize>,
}

impl App {
    /// Builds the state and the routes.
    pub(crate) fn new(config: Config, stats: Arc<Stats>) -> App {
        let labels = ENDPOINTS
            .iter()
            .map(|endpoint| endpoint.label)
            .chain([OTHER_LABEL])
            .collect();
        let routes = ENDPOINTS
            .iter()
            .enumerate()
            .filter_map(|(index, endpoint)| Some(((endpoint.path)(&config)?.to_string(), index)))
            .collect();
        App {
            state: State::new(config, stats, labels),
            routes,
        }
    }

    fn endpoint(&self, path: &str) -> Option<&'static Endpoint> {
        self.routes.get(path).map(|&index| &ENDPOINTS[index])
    }

    /// Keeps the upstream connection warm (see `upstream::Client::keep_warm`).
    pub(crate) fn keep_warm(&self) -> bool {
        self.state.spotify.keep_warm()
    }

    /// Applies re-read secrets (SIGHUP); what changed, by variable name.
    pub(crate) fn reload_secrets(&self, fresh: &Config) -> Vec<&'static str> {
        self.state.reload_secrets(fresh)
    }
}

impl Handler for App {
    fn handle(&self, request: &Request) -> Response {
        let Some(endpoint) = self.endpoint(&request.path) else {
            return no_endpoint(request);
        };
        let response = endpoint
            .answer(&self.state, request)
            .unwrap_or_else(|error| error.response());
        endpoint.decorate(&self.state, request, response)
    }

    fn is_slow(&self, request: &Request) -> bool {
        self.endpoint(&request.path).is_some_and(|endpoint| {
            endpoint.calls_upstream && endpoint.methods.allows(&request.method)
        })
    }

    fn record(&self, record: &Record<'_>) {
        let index = self.routes.get(record.path).copied();
        self.state
            .metrics
            .request(index.unwrap_or(ENDPOINTS.len()), record.status);
    }

    fn decorate_error(&self, request: &Request, response: Response) -> Response {
        match self.endpoint(&request.path) {
            // A browser app reads the HTTP layer's errors on the token
            // paths only if they carry its CORS headers.
            Some(endpoint) if endpoint.cors => {
                cors::decorate(&self.state.config.cors, request, response)
            }
            _ => response,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, path: &str) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
            ..Request::default()
        }
    }

    #[test]
    fn only_token_requests_that_may_call_spotify_are_slow() {
        let config = Config::from_vars([
            ("SPOTIFY_CLIENT_ID", "cid"),
            ("SPOTIFY_CLIENT_SECRET", "s"),
            ("SPOTIFY_REDIRECT_URI", "x://y"),
            ("CORS_ALLOW_ORIGINS", "*"),
        ])
        .unwrap();
        let app = App::new(config, Arc::default());
        let slow: Vec<(&str, &str)> = [
            ("POST", "/swap"),
            ("POST", "/refresh"),
            ("OPTIONS", "/swap"),
            ("GET", "/swap"),
            ("HEAD", "/refresh"),
            ("GET", "/health"),
            ("POST", "/health"),
            ("GET", "/metrics"),
            ("POST", "/nowhere"),
            ("OPTIONS", "*"),
        ]
        .into_iter()
        .filter(|(method, path)| app.is_slow(&request(method, path)))
        .collect();
        assert_eq!(slow, [("POST", "/swap"), ("POST", "/refresh")]);
    }
}
