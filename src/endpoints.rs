//! The table of endpoints, and the application as the HTTP layer sees it.
//!
//! [`ENDPOINTS`] lists every path the server answers: where its path comes
//! from, the methods it takes, whether its answers carry `no-store` and
//! CORS headers, whether it is rate-limited, whether it calls Spotify,
//! whether only `METRICS_ALLOW` clients may see it, its label in
//! `/metrics`, and the function that answers it. What a row says is
//! applied here, the same way for every row; the handler only does its
//! endpoint's own work. A new endpoint is one row and its handler.
//!
//! The token endpoints answer for one Spotify app ([`Respond::ForApp`]):
//! with `SPOTIFY_APPS`, each app is also served under its own name,
//! `/{name}{SWAP_PATH}`, and on the plain paths a `client_id` field may name
//! it (`State::pick_app`). A row's CORS origins are then its app's.
//!
//! [`App`] is the [`Handler`] the HTTP layer calls: it looks the path up
//! once (a map built at start from the table and the configuration: path →
//! row and, for an app's own path, the app), answers, and records the
//! answer under the row's label and the app it was for. It tells the layer
//! which requests are slow — those that may call Spotify — so they never
//! take the workers kept for the others.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{
    CALLBACK_PATH, Config, Cors, DEVICE_CODE_PATH, DEVICE_PAGE_PATH, DEVICE_TOKEN_PATH,
};
use crate::device::{Device, flow};
use crate::error::Error;
use crate::http::{Handler, Record, Request, Response, Stats, any_contains};
use crate::state::{AppState, State};
use crate::{cors, exchange};

/// Every endpoint, in the order `/metrics` lists them.
static ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        label: "swap",
        path: |config| Some(&config.swap_path),
        methods: Methods::Post,
        no_store: true,
        cors: true,
        rate_limited: true,
        private: false,
        calls_upstream: true,
        respond: Respond::ForApp(exchange::swap),
    },
    Endpoint {
        label: "refresh",
        path: |config| Some(&config.refresh_path),
        methods: Methods::Post,
        no_store: true,
        cors: true,
        rate_limited: true,
        private: false,
        calls_upstream: true,
        respond: Respond::ForApp(exchange::refresh),
    },
    Endpoint {
        label: "health",
        path: |_| Some("/health"),
        methods: Methods::Get,
        no_store: false,
        cors: false,
        rate_limited: false,
        private: false,
        calls_upstream: false,
        respond: Respond::Server(health),
    },
    Endpoint {
        label: "metrics",
        path: |config| config.metrics.then_some("/metrics"),
        methods: Methods::Get,
        no_store: false,
        cors: false,
        rate_limited: false,
        private: true,
        calls_upstream: false,
        respond: Respond::Server(metrics),
    },
    Endpoint {
        label: "device_code",
        path: |config| device_path(config, DEVICE_CODE_PATH),
        methods: Methods::Post,
        no_store: true,
        cors: false,
        rate_limited: true,
        private: false,
        calls_upstream: false,
        respond: Respond::Device(flow::code),
    },
    Endpoint {
        label: "device_token",
        path: |config| device_path(config, DEVICE_TOKEN_PATH),
        methods: Methods::Post,
        no_store: true,
        cors: false,
        // Polls are cheap and paced by `slow_down`; a household behind one
        // address may have several devices signing in.
        rate_limited: false,
        private: false,
        calls_upstream: false,
        respond: Respond::Device(flow::token),
    },
    Endpoint {
        label: "device_page",
        path: |config| device_path(config, DEVICE_PAGE_PATH),
        methods: Methods::GetPost,
        // The pages carry their own `Cache-Control: no-store`
        // (`pages::response`), and wrong codes have their own limit.
        no_store: false,
        cors: false,
        rate_limited: false,
        private: false,
        calls_upstream: false,
        respond: Respond::Device(flow::page),
    },
    Endpoint {
        label: "callback",
        path: |config| device_path(config, CALLBACK_PATH),
        methods: Methods::GetOnly,
        no_store: false,
        cors: false,
        rate_limited: false,
        private: false,
        calls_upstream: true,
        respond: Respond::Device(flow::callback),
    },
];

/// A device-login path: only with `PUBLIC_URL`.
fn device_path(config: &Config, path: &'static str) -> Option<&'static str> {
    config.public_url.is_some().then_some(path)
}

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
    /// errors too — carry CORS headers for an allowed origin (its app's,
    /// or before the app is known any app's).
    cors: bool,
    /// Each request takes one from the client's `RATE_LIMIT_PER_MINUTE`.
    rate_limited: bool,
    /// Answers only clients in `METRICS_ALLOW`; to any other it is a path
    /// that does not exist.
    private: bool,
    /// A request with an allowed method may call Spotify: the HTTP layer
    /// answers it as a slow request (`Handler::is_slow`). Preflights and
    /// 405s never call it.
    calls_upstream: bool,
    /// Answers a request with an allowed method.
    respond: Respond,
}

/// What answers a request with an allowed method.
enum Respond {
    /// An app's endpoint: answers for the app the request is for. With
    /// `SPOTIFY_APPS`, also served at `/{name}{path}` for each app.
    ForApp(fn(&State, &AppState, &Request) -> Result<Response, Error>),
    /// The server's own.
    Server(fn(&State, &Request) -> Result<Response, Error>),
    /// Device login's (its rows exist only with `PUBLIC_URL`).
    Device(fn(&State, &Device, &Request) -> Result<Response, Error>),
}

/// Where a path leads: a row of the table and, for an app's own path (or
/// the one app of the single-app settings), that app.
#[derive(Debug, Clone, Copy)]
struct Route {
    /// Index in [`ENDPOINTS`].
    endpoint: usize,
    /// Index of the app the path serves.
    app: Option<usize>,
}

/// The methods an endpoint takes.
#[derive(Debug, Clone, Copy)]
enum Methods {
    /// `POST`: the token endpoints.
    Post,
    /// `GET` and `HEAD`.
    Get,
    /// `GET`, `HEAD` and `POST`: device login's page and its form.
    GetPost,
    /// `GET` alone: device login's callback swaps a code, and a `HEAD`
    /// (a link preview, a prefetch) must not use up the sign-in.
    GetOnly,
}

impl Methods {
    fn allows(self, method: &str) -> bool {
        match self {
            Methods::Post => method == "POST",
            Methods::Get => matches!(method, "GET" | "HEAD"),
            Methods::GetPost => matches!(method, "GET" | "HEAD" | "POST"),
            Methods::GetOnly => method == "GET",
        }
    }

    /// The `Allow` header of a 405; `preflight`: CORS preflights are
    /// answered too.
    fn allow(self, preflight: bool) -> &'static str {
        match (self, preflight) {
            (Methods::Post, false) => "POST",
            (Methods::Post, true) => "POST, OPTIONS",
            (Methods::Get, _) => "GET, HEAD",
            (Methods::GetPost, _) => "GET, HEAD, POST",
            (Methods::GetOnly, _) => "GET",
        }
    }
}

impl Endpoint {
    /// The answer before the row's headers — a preflight, a 405, a 429, or
    /// what the handler says — and the app it is for, if known. For an
    /// app's endpoint: the app is picked first (path, `client_id`), then
    /// the rate limit applies (counted for that app), then the handler.
    fn answer(
        &self,
        state: &State,
        device: Option<&Device>,
        route: Route,
        request: &Request,
    ) -> (Result<Response, Error>, Option<usize>) {
        let preflight = self.cors && *state.cors(route.app) != Cors::Off;
        match request.method.as_str() {
            "OPTIONS" if preflight => (Ok(Response::empty(204)), route.app),
            method if self.methods.allows(method) => match self.respond {
                Respond::Server(handler) => {
                    let answer = self
                        .limit(state, request, None)
                        .and_then(|()| handler(state, request));
                    (answer, None)
                }
                Respond::Device(handler) => {
                    let answer = match device {
                        Some(device) => self
                            .limit(state, request, None)
                            .and_then(|()| handler(state, device, request)),
                        None => Err(Error::NotFound),
                    };
                    (answer, None)
                }
                Respond::ForApp(handler) => {
                    let app = match state.pick_app(route.app, request) {
                        Ok(app) => app,
                        Err(error) => return (Err(error), route.app),
                    };
                    let answer = self
                        .limit(state, request, Some(app.index))
                        .and_then(|()| handler(state, app, request));
                    (answer, Some(app.index))
                }
            },
            _ => (
                Err(Error::MethodNotAllowed {
                    allow: self.methods.allow(preflight),
                }),
                route.app,
            ),
        }
    }

    /// Takes the request from the client's allowance, if the row is
    /// rate-limited; a refusal is counted for `app`.
    fn limit(&self, state: &State, request: &Request, app: Option<usize>) -> Result<(), Error> {
        if self.rate_limited {
            state.rate_limit(request, app)
        } else {
            Ok(())
        }
    }

    /// Whether the client may know this endpoint is there.
    fn visible_to(&self, state: &State, request: &Request) -> bool {
        // SECURITY: judged on the client after X-Forwarded-For, not on the
        // peer: a reverse proxy on this host is a loopback peer, and
        // judging it would publish the endpoint to everyone behind it.
        !self.private
            || request
                .client
                .is_some_and(|client| any_contains(&state.config.metrics_allow, client))
    }

    /// Adds what every answer on this path carries; CORS for `app`'s
    /// origins (`None`: any app's).
    fn decorate(
        &self,
        state: &State,
        request: &Request,
        app: Option<usize>,
        response: Response,
    ) -> Response {
        let response = if self.no_store {
            response
                .with_header("Cache-Control", "no-store")
                .with_header("Pragma", "no-cache")
        } else {
            response
        };
        if self.cors {
            cors::decorate(state.cors(app), request, response)
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
    /// Device login; `None` without `PUBLIC_URL`.
    device: Option<Device>,
    /// Path → route, for the endpoints switched on: one lookup per
    /// request, whatever the number of apps.
    routes: HashMap<String, Route>,
}

impl App {
    /// Builds the state and the routes.
    pub(crate) fn new(config: Config, stats: Arc<Stats>) -> App {
        let labels = ENDPOINTS
            .iter()
            .map(|endpoint| endpoint.label)
            .chain([OTHER_LABEL])
            .collect();
        let routes = routes(&config);
        App {
            device: Device::new(&config),
            state: State::new(config, stats, labels),
            routes,
        }
    }

    fn route(&self, path: &str) -> Option<(Route, &'static Endpoint)> {
        let route = *self.routes.get(path)?;
        Some((route, &ENDPOINTS[route.endpoint]))
    }

    /// The certificate's metrics (with `ACME_DOMAINS`).
    pub(crate) fn certificate_metrics(&self) -> Option<Arc<crate::metrics::CertificateMetrics>> {
        self.state.metrics.certificate()
    }

    /// Keeps the upstream connection warm (see `upstream::Client::keep_warm`).
    pub(crate) fn keep_warm(&self) -> bool {
        self.state.spotify.keep_warm()
    }

    /// Applies re-read secrets (SIGHUP); what changed, by variable name.
    pub(crate) fn reload_secrets(&self, fresh: &Config) -> Vec<String> {
        self.state.reload_secrets(fresh)
    }
}

/// Every path the configuration switches on, and where it leads. With one
/// app, an app's endpoint serves it on its path; with `SPOTIFY_APPS`, the
/// plain path serves whichever app the request names, and each app has
/// its own path `/{name}{path}` besides.
fn routes(config: &Config) -> HashMap<String, Route> {
    let mut routes = HashMap::new();
    for (endpoint, row) in ENDPOINTS.iter().enumerate() {
        let Some(path) = (row.path)(config) else {
            continue;
        };
        let for_app = matches!(row.respond, Respond::ForApp(_));
        let one_app = (for_app && config.one_app().is_some()).then_some(0);
        routes.insert(
            path.to_string(),
            Route {
                endpoint,
                app: one_app,
            },
        );
        if !for_app || one_app.is_some() {
            continue;
        }
        for (index, app) in config.apps.iter().enumerate() {
            let name = app.name.as_deref().unwrap_or_default();
            let route = Route {
                endpoint,
                app: Some(index),
            };
            routes.insert(format!("/{name}{path}"), route);
        }
    }
    routes
}

impl Handler for App {
    fn handle(&self, request: &Request) -> Response {
        // A client that may not see an endpoint gets exactly the answer to
        // a path that does not exist, whatever the method (it is still
        // counted under the endpoint's label, so an operator sees refused
        // scrapes).
        let visible = self
            .route(&request.path)
            .filter(|(_, endpoint)| endpoint.visible_to(&self.state, request));
        let Some((route, endpoint)) = visible else {
            return no_endpoint(request);
        };
        let (answer, app) = endpoint.answer(&self.state, self.device.as_ref(), route, request);
        let response = answer.unwrap_or_else(|error| error.response());
        let mut response = endpoint.decorate(&self.state, request, app, response);
        // For `record`: the app the answer was for.
        response.note = app.and_then(|index| u32::try_from(index).ok());
        response
    }

    fn is_slow(&self, request: &Request) -> bool {
        self.route(&request.path).is_some_and(|(_, endpoint)| {
            endpoint.calls_upstream && endpoint.methods.allows(&request.method)
        })
    }

    fn record(&self, record: &Record<'_>) {
        let endpoint = self.routes.get(record.path).map(|route| route.endpoint);
        let app = record.note.and_then(|note| usize::try_from(note).ok());
        self.state
            .metrics
            .request(endpoint.unwrap_or(ENDPOINTS.len()), app, record.status);
    }

    fn decorate_error(&self, request: &Request, response: Response) -> Response {
        match self.route(&request.path) {
            // A browser app reads the HTTP layer's errors on the token
            // paths only if they carry its CORS headers.
            Some((route, endpoint)) if endpoint.cors => {
                cors::decorate(self.state.cors(route.app), request, response)
            }
            _ => response,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(extra: &[(&str, &str)]) -> App {
        let vars = [
            ("SPOTIFY_CLIENT_ID", "cid"),
            ("SPOTIFY_CLIENT_SECRET", "csecret"),
            ("SPOTIFY_REDIRECT_URI", "myapp://cb"),
        ];
        let config = Config::from_vars(vars.iter().chain(extra).copied()).unwrap();
        App::new(config, Arc::new(Stats::default()))
    }

    fn request(method: &str, path: &str, origin: Option<&str>) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
            minor_version: 1,
            origin: origin.map(String::from),
            ..Request::default()
        }
    }

    fn header<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
        response
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn token_answers_carry_no_store_and_others_do_not() {
        let app = app(&[]);
        let swap = app.handle(&request("GET", "/swap", None));
        assert_eq!(swap.status, 405);
        assert_eq!(header(&swap, "Cache-Control"), Some("no-store"));
        assert_eq!(header(&swap, "Pragma"), Some("no-cache"));
        let health = app.handle(&request("GET", "/health", None));
        assert_eq!(health.status, 200);
        assert_eq!(header(&health, "Cache-Control"), None);
    }

    #[test]
    fn a_preflight_is_answered_only_with_cors_on() {
        let origin = Some("https://app.example.com");
        let off = app(&[]).handle(&request("OPTIONS", "/refresh", origin));
        assert_eq!((off.status, header(&off, "Allow")), (405, Some("POST")));
        assert_eq!(header(&off, "Access-Control-Allow-Origin"), None);
        let on = app(&[("CORS_ALLOW_ORIGINS", "https://app.example.com")]);
        let preflight = on.handle(&request("OPTIONS", "/refresh", origin));
        assert_eq!(preflight.status, 204);
        assert_eq!(
            header(&preflight, "Access-Control-Allow-Origin"),
            Some("https://app.example.com")
        );
        let get = on.handle(&request("GET", "/refresh", origin));
        assert_eq!(header(&get, "Allow"), Some("POST, OPTIONS"));
    }

    #[test]
    fn paths_follow_the_settings_and_metrics_off_is_no_endpoint() {
        let app = app(&[("SWAP_PATH", "/api/token"), ("METRICS", "off")]);
        assert_eq!(app.handle(&request("GET", "/api/token", None)).status, 405);
        assert_eq!(app.handle(&request("GET", "/swap", None)).status, 404);
        assert_eq!(app.handle(&request("GET", "/metrics", None)).status, 404);
        assert_eq!(app.handle(&request("HEAD", "/health", None)).status, 200);
    }

    /// Paths and the methods each takes, in order.
    type Paths = std::collections::BTreeMap<String, std::collections::BTreeSet<String>>;

    /// The paths of docs/openapi.yaml with the methods documented for
    /// each, read crudely: under `paths:`, a path is a line of two spaces,
    /// `/…` and a colon; its operations are the lines of four spaces, a
    /// method and a colon.
    fn documented_paths() -> Paths {
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.yaml");
        let document = std::fs::read_to_string(&file).unwrap();
        let (_, paths) = document.split_once("\npaths:\n").unwrap();
        let (paths, _) = paths.split_once("\ncomponents:\n").unwrap();
        let mut documented = Paths::new();
        let mut current = None;
        for line in paths.lines() {
            let indented = |spaces| {
                let rest = line.strip_prefix(spaces)?.strip_suffix(':')?;
                (!rest.starts_with(' ')).then_some(rest)
            };
            if let Some(path) = indented("  ").filter(|path| path.starts_with('/')) {
                current = Some(path.to_string());
                documented.insert(path.to_string(), std::collections::BTreeSet::new());
            } else if let (Some(path), Some(method)) = (&current, indented("    ")) {
                if ["get", "head", "post", "put", "delete", "patch", "options"].contains(&method) {
                    documented
                        .get_mut(path)
                        .unwrap()
                        .insert(method.to_uppercase());
                }
            }
        }
        documented
    }

    #[test]
    fn the_openapi_document_lists_exactly_the_paths_and_methods_served() {
        // Everything on: several apps (their own paths are `/{app}/…` in the
        // document), device login (PUBLIC_URL), CORS (preflights).
        let vars = [
            ("SPOTIFY_APPS", "tv"),
            ("SPOTIFY_APP_TV_CLIENT_ID", "id-tv"),
            ("SPOTIFY_APP_TV_CLIENT_SECRET", "s"),
            ("SPOTIFY_APP_TV_REDIRECT_URI", "tv://cb"),
            ("SPOTIFY_APP_TV_CORS_ALLOW_ORIGINS", "*"),
            ("PUBLIC_URL", "http://127.0.0.1:8080"),
        ];
        let config = Config::from_vars(vars).unwrap();
        let served: Paths = routes(&config)
            .into_iter()
            .map(|(path, route)| {
                let endpoint = &ENDPOINTS[route.endpoint];
                let methods = ["GET", "HEAD", "POST"]
                    .into_iter()
                    .filter(|method| endpoint.methods.allows(method))
                    .chain(endpoint.cors.then_some("OPTIONS"))
                    .map(String::from)
                    .collect();
                let path = match path.strip_prefix("/tv/") {
                    Some(rest) => format!("/{{app}}/{rest}"),
                    None => path,
                };
                (path, methods)
            })
            .collect();
        assert_eq!(documented_paths(), served);
    }

    #[test]
    fn requests_are_counted_under_their_rows_label() {
        let app = app(&[]);
        for path in ["/health", "/health", "/nowhere"] {
            app.record(&Record {
                path,
                status: 200,
                note: None,
            });
        }
        let text = app.state.metrics.render(&app.state.stats);
        assert!(
            text.contains("endpoint=\"health\",status=\"200\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("endpoint=\"other\",status=\"200\"} 1\n"),
            "{text}"
        );
    }

    fn ask(app: &App, method: &str, path: &str, client: &str) -> Response {
        app.handle(&Request {
            method: method.into(),
            path: path.into(),
            minor_version: 1,
            client: Some(client.parse().unwrap()),
            ..Request::default()
        })
    }

    #[test]
    fn metrics_is_a_path_that_does_not_exist_to_clients_outside_metrics_allow() {
        let app = app(&[]);
        for method in ["GET", "HEAD", "POST", "OPTIONS"] {
            for outside in ["203.0.113.5", "2001:db8::1", "::ffff:192.0.2.1"] {
                assert_eq!(
                    ask(&app, method, "/metrics", outside),
                    ask(&app, method, "/no-such-path", outside),
                    "{method} from {outside}"
                );
            }
        }
        for inside in ["127.0.0.1", "127.3.2.1", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(ask(&app, "GET", "/metrics", inside).status, 200, "{inside}");
        }
    }

    #[test]
    fn metrics_allow_takes_ranges_and_replaces_the_default() {
        let app = app(&[("METRICS_ALLOW", "10.0.0.0/8,fd00::/8")]);
        assert_eq!(ask(&app, "GET", "/metrics", "10.9.8.7").status, 200);
        assert_eq!(ask(&app, "GET", "/metrics", "fd00::5").status, 200);
        assert_eq!(ask(&app, "GET", "/metrics", "127.0.0.1").status, 404);
        assert_eq!(ask(&app, "GET", "/metrics", "11.0.0.1").status, 404);
    }
    #[test]
    fn only_token_requests_that_may_call_spotify_are_slow() {
        let app = app(&[("CORS_ALLOW_ORIGINS", "*")]);
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
        .filter(|(method, path)| app.is_slow(&request(method, path, None)))
        .collect();
        assert_eq!(slow, [("POST", "/swap"), ("POST", "/refresh")]);
    }

    #[test]
    fn each_app_is_served_under_its_name_before_the_configured_paths() {
        let vars = [
            ("SPOTIFY_APPS", "music,tv"),
            ("SPOTIFY_APP_MUSIC_CLIENT_ID", "id-music"),
            ("SPOTIFY_APP_MUSIC_CLIENT_SECRET", "s"),
            ("SPOTIFY_APP_MUSIC_REDIRECT_URI", "music://cb"),
            ("SPOTIFY_APP_TV_CLIENT_ID", "id-tv"),
            ("SPOTIFY_APP_TV_CLIENT_SECRET", "s"),
            ("SPOTIFY_APP_TV_REDIRECT_URI", "tv://cb"),
            ("SWAP_PATH", "/api/token"),
        ];
        let app = App::new(Config::from_vars(vars).unwrap(), Arc::new(Stats::default()));
        let route = |path: &str| app.route(path).map(|(route, e)| (e.label, route.app));
        assert_eq!(route("/tv/api/token"), Some(("swap", Some(1))));
        assert_eq!(route("/music/refresh"), Some(("refresh", Some(0))));
        assert_eq!(route("/api/token"), Some(("swap", None)));
        assert_eq!(route("/tv/swap"), None);
        assert_eq!(route("/tv/health"), None);
        assert!(app.is_slow(&request("POST", "/tv/api/token", None)));
        assert!(!app.is_slow(&request("GET", "/tv/api/token", None)));
    }
}
