//! A stand-in for Spotify's accounts service, for the integration tests.
//!
//! [`MockSpotify::start`] binds `127.0.0.1:0` and speaks plain HTTP/1.1 with
//! keep-alive (the server under test reuses connections through its `ureq`
//! agent), one thread per connection; [`MockSpotify::start_tls`] does the
//! same over TLS (rustls, a certificate from [`Pki`](super::pki::Pki)), for
//! the tests of the server's own TLS connections upstream. By default it
//! emulates
//! `POST /api/token` the way Spotify answers it: client authentication by
//! `Authorization: Basic`, single-use authorization codes, PKCE verifiers,
//! redirect-URI checks, refresh tokens (optionally rotated), and Spotify's
//! OAuth error bodies. `GET /authorize` stands in for Spotify's consent
//! page (device login): it checks the client id, redirect URI, `state` and
//! S256 challenge, then sends the browser back with a fresh code — whose
//! exchange must carry the verifier of that challenge — or, when told to
//! ([`MockSpotify::set_authorize_denies`]), with `error=access_denied`. It knows one app (client id) from the start and may
//! learn more ([`MockSpotify::add_client`]): each authenticates with its own
//! secret, and codes, refresh tokens and redirect URIs belong to one app —
//! what one app's credentials present of another's is refused, as Spotify
//! does. Tests can script misbehaviour — odd statuses, raw
//! bytes, hangs, truncated, huge or endless bodies — with [`Reply`], either
//! for the next requests ([`MockSpotify::push_reply`]) or for all of them
//! ([`MockSpotify::set_default_reply`]).
//!
//! Every request is recorded ([`Recorded`]) with the id of the TCP connection
//! it arrived on, so tests can assert what the server sent upstream and that
//! it reused connections. Every connection is recorded too ([`Connection`]):
//! over TLS, whether its handshake was full or resumed, with which version,
//! or why it failed; and whether it has ended.
//! [`MockSpotify::close_after_next_answer`] makes the mock close a connection
//! after answering, the way a server at its keep-alive limit, a reload or an
//! idle timeout does.
//!
//! Nothing on the serving path panics on what a peer sends: every
//! read is bounded, malformed input gets a 4xx and the connection is closed.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustls::{HandshakeKind, ProtocolVersion, ServerConfig, ServerConnection, StreamOwned};
use serde_json::{Value, json};

use super::client::find_head_end;

/// Scope the mock grants unless a test registers another.
pub const DEFAULT_SCOPE: &str = "user-read-private user-read-email";
/// `expires_in` of every access token the mock issues.
pub const EXPIRES_IN_SECS: u64 = 3600;

/// Largest request head the mock reads before answering 431.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Largest request body (either framing) the mock reads before answering 413.
const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Longest chunk-size or trailer line in a chunked request body.
const MAX_CHUNK_LINE_BYTES: usize = 4096;
/// Socket read/write timeout; every blocking call wakes this often to notice
/// that the mock is stopping or a deadline has passed.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// A connection that sends nothing for this long is dropped.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest time spent writing one response to a peer that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Reply::Endless`] keeps sending before it gives up.
const ENDLESS_DURATION: Duration = Duration::from_secs(5);
/// Size of each chunk [`Reply::Endless`] writes.
const ENDLESS_CHUNK_BYTES: usize = 4096;
/// Pause between [`Reply::Endless`] chunks, so a server that wrongly buffers
/// everything receives megabytes, not gigabytes, before the mock gives up.
const ENDLESS_CHUNK_PAUSE: Duration = Duration::from_millis(1);
/// How long a closing connection waits for the peer's FIN, so unread input
/// does not turn our close into a reset that destroys the response in flight.
const LINGER_ON_CLOSE: Duration = Duration::from_millis(200);
/// Content-Length that [`Reply::CloseMidResponse`] promises.
const CLOSE_MID_PROMISED_BYTES: usize = 1000;
/// What [`Reply::CloseMidResponse`] actually sends of that body (10 bytes).
const CLOSE_MID_SENT: &[u8] = b"{\"access_t";
/// Start and end of the body [`Reply::Large`] generates.
const LARGE_PREFIX: &[u8] = b"{\"access_token\":\"";
const LARGE_SUFFIX: &[u8] = b"\",\"token_type\":\"Bearer\",\"expires_in\":3600}";

/// A TLS handshake that takes longer than this fails.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often [`MockSpotify::wait_closed`] and
/// [`MockSpotify::wait_handshake`] look again.
const WAIT_INTERVAL: Duration = Duration::from_millis(5);

/// A scripted answer that replaces the Spotify emulation for one request
/// (see [`MockSpotify::push_reply`]) or for every request
/// ([`MockSpotify::set_default_reply`]). The request is read and recorded
/// first in every case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// A complete response. `Content-Type: application/json`,
    /// `Content-Length` and `Connection` are added unless `headers` names
    /// them; the connection stays open if the request allowed it.
    Json {
        status: u16,
        body: String,
        headers: Vec<(String, String)>,
    },
    /// Written verbatim, then the connection is closed.
    Raw(Vec<u8>),
    /// Say nothing for this long (or until the mock stops), then close.
    Hang(Duration),
    /// A 200 head promising `Content-Length: 1000`, 10 bytes of body, close.
    CloseMidResponse,
    /// A 200 `application/json` response with a body of exactly this many
    /// bytes and a correct `Content-Length`. When the size allows, the body
    /// is a valid token response with a huge `access_token`, so only its size
    /// is wrong; a smaller size sends a truncated JSON prefix.
    Large(usize),
    /// A 200 chunked `application/json` response whose body never ends: the
    /// mock sends chunks until the peer goes away or about 5 s pass, then
    /// closes without the terminating chunk.
    Endless,
    /// Say nothing for this long (or until the mock stops), then send the
    /// inner reply: a slow but well-behaved upstream, for requests that must
    /// still be in flight when something else happens (e.g. `SIGTERM`).
    Delayed(Duration, Box<Reply>),
}

impl Reply {
    /// A JSON response with no extra headers.
    pub fn json(status: u16, body: &str) -> Reply {
        Reply::Json {
            status,
            body: body.to_owned(),
            headers: Vec::new(),
        }
    }

    /// A JSON response with extra headers.
    pub fn json_with_headers(status: u16, body: &str, headers: &[(&str, &str)]) -> Reply {
        Reply::Json {
            status,
            body: body.to_owned(),
            headers: headers
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
        }
    }

    /// Spotify's rate-limit answer: 429 with `Retry-After: secs`.
    pub fn too_many_requests(retry_after_secs: u64) -> Reply {
        Reply::json_with_headers(
            429,
            r#"{"error":"rate_limit_exceeded","error_description":"API rate limit exceeded"}"#,
            &[("Retry-After", &retry_after_secs.to_string())],
        )
    }

    /// `reply`, sent after `delay`.
    pub fn delayed(delay: Duration, reply: Reply) -> Reply {
        Reply::Delayed(delay, Box::new(reply))
    }

    /// An upstream failure: the given 5xx status with a JSON error body.
    pub fn server_error(status: u16) -> Reply {
        Reply::json(
            status,
            r#"{"error":"server_error","error_description":"Something went wrong"}"#,
        )
    }

    /// The status this reply sends, if it sends a status line of its own.
    pub fn status(&self) -> Option<u16> {
        match self {
            Reply::Json { status, .. } => Some(*status),
            Reply::CloseMidResponse | Reply::Large(_) | Reply::Endless => Some(200),
            Reply::Delayed(_, inner) => inner.status(),
            Reply::Raw(_) | Reply::Hang(_) => None,
        }
    }
}

/// What an authorization code is worth when exchanged. Build with
/// [`AuthGrant::for_code`] and adjust with the `with_*` methods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthGrant {
    pub access_token: String,
    /// `None`: the token response carries no `refresh_token`.
    pub refresh_token: Option<String>,
    pub scope: String,
    pub expires_in: u64,
    /// When set, the exchange must carry this `code_verifier` (PKCE).
    pub code_verifier: Option<String>,
    /// When set, the exchange must carry a `code_verifier` whose S256
    /// challenge this is (codes issued by `/authorize`).
    pub code_challenge: Option<String>,
}

impl AuthGrant {
    /// The default grant for `code`: access token `access-<code>`, refresh
    /// token `refresh-<code>`, [`DEFAULT_SCOPE`], no PKCE.
    pub fn for_code(code: &str) -> AuthGrant {
        AuthGrant {
            access_token: format!("access-{code}"),
            refresh_token: Some(format!("refresh-{code}")),
            scope: DEFAULT_SCOPE.to_owned(),
            expires_in: EXPIRES_IN_SECS,
            code_verifier: None,
            code_challenge: None,
        }
    }

    /// Requires `code_verifier` to equal `verifier`.
    pub fn with_verifier(mut self, verifier: &str) -> AuthGrant {
        self.code_verifier = Some(verifier.to_owned());
        self
    }

    /// Grants `scope` instead of [`DEFAULT_SCOPE`].
    pub fn with_scope(mut self, scope: &str) -> AuthGrant {
        scope.clone_into(&mut self.scope);
        self
    }
}

/// How [`MockSpotify::close_after_next_answer`] closes the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Close {
    /// Answer with `Connection: close`, then close: a server at its
    /// keep-alive request limit.
    Announced,
    /// Answer as if the connection stayed open, then close it at once
    /// (`close_notify` over TLS, FIN): what an idle timeout or a reload does
    /// to a connection the client keeps in its pool.
    Unannounced,
}

/// A completed TLS handshake.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Handshake {
    /// Full or resumed.
    pub kind: HandshakeKind,
    /// The negotiated TLS version.
    pub version: ProtocolVersion,
}

/// One accepted TCP connection.
#[derive(Clone, Debug, PartialEq)]
pub struct Connection {
    /// 1 for the first connection the mock accepted, 2 for the next, … (the
    /// [`Recorded::connection`] of the requests that came on it).
    pub id: u64,
    /// Over TLS: `None` while the handshake runs, then the handshake or its
    /// error. Always `None` on a plain mock.
    pub handshake: Option<Result<Handshake, String>>,
    /// The mock closed it (after a request that did not keep it alive, after
    /// [`MockSpotify::close_after_next_answer`], or on bad input); the FIN
    /// has been sent.
    pub closed_by_mock: bool,
    /// Its thread has finished: closed by either side.
    pub ended: bool,
}

/// One request as the mock received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub method: String,
    /// The request target exactly as sent (path plus any query).
    pub path: String,
    /// `HTTP/1.1` or `HTTP/1.0` as sent.
    pub version: String,
    /// In arrival order; names lowercased, values trimmed.
    pub headers: Vec<(String, String)>,
    /// The decoded body (chunked framing removed).
    pub body: Vec<u8>,
    /// The body's fields when `Content-Type` is
    /// `application/x-www-form-urlencoded`; empty otherwise.
    pub form: Vec<(String, String)>,
    /// Id of the TCP connection it came on: 1 for the first connection the
    /// mock accepted, 2 for the next, … ([`Connection::id`]).
    pub connection: u64,
    /// The status the mock answered with (its reply's, [`Reply::status`]);
    /// `None` for a reply without one (raw bytes, a hang).
    pub status: Option<u16>,
}

impl Recorded {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The client id of its `Authorization: Basic` header, whatever the
    /// secret.
    pub fn basic_client_id(&self) -> Option<String> {
        let (scheme, encoded) = self.header("authorization")?.split_once(' ')?;
        let decoded = STANDARD.decode(encoded.trim()).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (id, _) = text.split_once(':')?;
        scheme.eq_ignore_ascii_case("basic").then(|| id.to_owned())
    }

    /// The first value of form field `name`.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The form fields in order, as pairs to compare with a literal.
    pub fn form_pairs(&self) -> Vec<(&str, &str)> {
        self.form
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect()
    }
}

/// A running mock accounts service. Dropping it stops it (see
/// [`MockSpotify::stop`]).
pub struct MockSpotify {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_thread: Mutex<Option<JoinHandle<()>>>,
}

/// State shared by the handle, the accept thread and connection threads.
struct Shared {
    stopping: AtomicBool,
    /// `Some` for a mock that speaks TLS.
    tls: Option<Arc<ServerConfig>>,
    state: Mutex<State>,
}

/// Everything the emulation knows; guarded by one mutex that is never held
/// across I/O.
struct State {
    /// Every app the mock knows; the first is the one it started with.
    clients: Vec<Client>,
    /// Authorization code → the client id it was issued to, and its grant.
    codes: HashMap<String, (String, AuthGrant)>,
    /// Live refresh token → the client id it was issued to, and its scope.
    refresh_tokens: HashMap<String, (String, String)>,
    rotate_refresh_tokens: bool,
    /// `/authorize` sends the browser back with `error=access_denied`.
    authorize_denies: bool,
    /// Counts codes issued by `/authorize`.
    authorized: u64,
    /// Counts refreshes, to give each one distinct tokens.
    refreshes: u64,
    replies: VecDeque<Reply>,
    default_reply: Option<Reply>,
    /// How to close after each of the next answers.
    closes: VecDeque<Close>,
    requests: Vec<Recorded>,
    /// Every connection accepted, in order: `connections[id - 1]`.
    connections: Vec<Connection>,
}

/// One app as the mock knows it.
struct Client {
    id: String,
    secret: String,
    redirect_uris: Vec<String>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not take the mock down with it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Applies `change` to the record of connection `id`.
    fn update(&self, id: u64, change: impl FnOnce(&mut Connection)) {
        let mut state = self.state();
        if let Some(conn) = connection_mut(&mut state.connections, id) {
            change(conn);
        }
    }
}

/// The record of connection `id` (ids count from 1).
fn connection_mut(connections: &mut [Connection], id: u64) -> Option<&mut Connection> {
    let index = usize::try_from(id).ok()?.checked_sub(1)?;
    connections.get_mut(index)
}

impl MockSpotify {
    /// Starts a mock that accepts `client_id:client_secret` and, by default,
    /// the single redirect URI `redirect_uri`.
    ///
    /// # Panics
    /// If it cannot bind a loopback port or spawn its accept thread.
    pub fn start(client_id: &str, client_secret: &str, redirect_uri: &str) -> MockSpotify {
        MockSpotify::bind(client_id, client_secret, redirect_uri, None)
    }

    /// Like [`MockSpotify::start`], speaking HTTPS with `tls` (made by
    /// [`Pki::server_config`](super::pki::Pki::server_config)): the same
    /// emulation, scripts and records, with each connection's handshake
    /// recorded in [`MockSpotify::connections`].
    ///
    /// # Panics
    /// As [`MockSpotify::start`].
    pub fn start_tls(
        client_id: &str,
        client_secret: &str,
        redirect_uri: &str,
        tls: Arc<ServerConfig>,
    ) -> MockSpotify {
        MockSpotify::bind(client_id, client_secret, redirect_uri, Some(tls))
    }

    fn bind(
        client_id: &str,
        client_secret: &str,
        redirect_uri: &str,
        tls: Option<Arc<ServerConfig>>,
    ) -> MockSpotify {
        let listener = TcpListener::bind("127.0.0.1:0").expect("mock Spotify: bind 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("mock Spotify: read the bound address");
        let shared = Arc::new(Shared {
            stopping: AtomicBool::new(false),
            tls,
            state: Mutex::new(State {
                clients: vec![Client {
                    id: client_id.to_owned(),
                    secret: client_secret.to_owned(),
                    redirect_uris: vec![redirect_uri.to_owned()],
                }],
                codes: HashMap::new(),
                refresh_tokens: HashMap::new(),
                rotate_refresh_tokens: false,
                authorize_denies: false,
                authorized: 0,
                refreshes: 0,
                replies: VecDeque::new(),
                default_reply: None,
                closes: VecDeque::new(),
                requests: Vec::new(),
                connections: Vec::new(),
            }),
        });
        let accept_shared = Arc::clone(&shared);
        let handle = thread::Builder::new()
            .name("mock-spotify-accept".to_owned())
            .spawn(move || accept_loop(&listener, &accept_shared))
            .expect("mock Spotify: spawn the accept thread");
        MockSpotify {
            addr,
            shared,
            accept_thread: Mutex::new(Some(handle)),
        }
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (`https://` over TLS), the value for
    /// `SPOTIFY_ACCOUNTS_URL`.
    pub fn base_url(&self) -> String {
        let scheme = if self.shared.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// The `Authorization` header value the mock accepts for the app it
    /// started with.
    pub fn basic_auth(&self) -> String {
        let id = self.shared.state().clients[0].id.clone();
        self.basic_auth_for(&id)
    }

    /// The `Authorization` header value the mock accepts for `client_id`.
    ///
    /// # Panics
    /// If the mock does not know `client_id`.
    pub fn basic_auth_for(&self, client_id: &str) -> String {
        let state = self.shared.state();
        let client = state.client(client_id);
        let credentials = format!("{}:{}", client.id, client.secret);
        format!("Basic {}", STANDARD.encode(credentials))
    }

    /// Knows another app: `client_id:client_secret` authenticate it, and
    /// `redirect_uri` is its redirect URI.
    pub fn add_client(&self, client_id: &str, client_secret: &str, redirect_uri: &str) {
        self.shared.state().clients.push(Client {
            id: client_id.to_owned(),
            secret: client_secret.to_owned(),
            redirect_uris: vec![redirect_uri.to_owned()],
        });
    }

    /// Makes `/authorize` answer as a user who declines (`true`) or
    /// accepts (`false`, the default).
    pub fn set_authorize_denies(&self, denies: bool) {
        self.shared.state().authorize_denies = denies;
    }

    /// Registers `code` with the default grant of [`AuthGrant::for_code`].
    pub fn add_code(&self, code: &str) {
        self.add_grant(code, AuthGrant::for_code(code));
    }

    /// Registers `code`, issued to the app `client_id`, with the default
    /// grant.
    pub fn add_code_for(&self, client_id: &str, code: &str) {
        self.shared.state().codes.insert(
            code.to_owned(),
            (client_id.to_owned(), AuthGrant::for_code(code)),
        );
    }

    /// Registers `code` with the default grant plus a PKCE `verifier`.
    pub fn add_pkce_code(&self, code: &str, verifier: &str) {
        self.add_grant(code, AuthGrant::for_code(code).with_verifier(verifier));
    }

    /// Registers `code` as exchangeable (once) for `grant`, by the app the
    /// mock started with.
    pub fn add_grant(&self, code: &str, grant: AuthGrant) {
        let mut state = self.shared.state();
        let id = state.clients[0].id.clone();
        state.codes.insert(code.to_owned(), (id, grant));
    }

    /// Accepts `uri` as a `redirect_uri` too, for the app the mock started
    /// with.
    pub fn allow_redirect_uri(&self, uri: &str) {
        self.shared.state().clients[0]
            .redirect_uris
            .push(uri.to_owned());
    }

    /// Accepts `uri` as a `redirect_uri` too, for the app `client_id`.
    ///
    /// # Panics
    /// If the mock does not know `client_id`.
    pub fn allow_redirect_uri_for(&self, client_id: &str, uri: &str) {
        let mut state = self.shared.state();
        let client = state
            .clients
            .iter_mut()
            .find(|c| c.id == client_id)
            .unwrap_or_else(|| panic!("mock Spotify: no client {client_id}"));
        client.redirect_uris.push(uri.to_owned());
    }

    /// Makes `token` a live refresh token with [`DEFAULT_SCOPE`], of the
    /// app the mock started with.
    pub fn add_refresh_token(&self, token: &str) {
        let id = self.shared.state().clients[0].id.clone();
        self.add_refresh_token_for(&id, token);
    }

    /// Makes `token` a live refresh token with [`DEFAULT_SCOPE`], of the
    /// app `client_id`.
    pub fn add_refresh_token_for(&self, client_id: &str, token: &str) {
        self.shared.state().refresh_tokens.insert(
            token.to_owned(),
            (client_id.to_owned(), DEFAULT_SCOPE.to_owned()),
        );
    }

    /// When on, every refresh issues a new refresh token
    /// (`refresh-rotated-<n>`, n counting refreshes from 1) and revokes the
    /// one presented, as Spotify does for PKCE clients.
    pub fn set_rotate_refresh_tokens(&self, rotate: bool) {
        self.shared.state().rotate_refresh_tokens = rotate;
    }

    /// Queues `reply` for the next request that has no earlier queued reply.
    pub fn push_reply(&self, reply: Reply) {
        self.shared.state().replies.push_back(reply);
    }

    /// Answers every request without a queued reply with `reply` (`None`:
    /// back to the emulation).
    pub fn set_default_reply(&self, reply: Option<Reply>) {
        self.shared.state().default_reply = reply;
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.state().requests.clone()
    }

    /// The most recent request, if any.
    pub fn last_request(&self) -> Option<Recorded> {
        self.shared.state().requests.last().cloned()
    }

    /// Form field `name` of the last request, if there was one and it had
    /// the field.
    pub fn last_field(&self, name: &str) -> Option<String> {
        self.last_request()
            .and_then(|request| request.field(name).map(String::from))
    }

    /// Number of requests received so far.
    pub fn request_count(&self) -> usize {
        self.shared.state().requests.len()
    }

    /// The next request answered (on any connection) closes its connection
    /// after the answer, the way `how` says. Calls queue up.
    pub fn close_after_next_answer(&self, how: Close) {
        self.shared.state().closes.push_back(how);
    }

    /// Number of TCP connections accepted so far.
    pub fn connections_accepted(&self) -> u64 {
        self.connections().len() as u64
    }

    /// Every connection accepted so far, in order.
    pub fn connections(&self) -> Vec<Connection> {
        self.shared.state().connections.clone()
    }

    /// Waits up to `timeout` until connection `id` has been closed by the
    /// mock or has ended; false on timeout.
    pub fn wait_closed(&self, id: u64, timeout: Duration) -> bool {
        self.wait_connection(id, timeout, |c| c.closed_by_mock || c.ended)
            .is_some()
    }

    /// Waits up to `timeout` until connection `id` has a handshake outcome
    /// (TLS only); the connection, or `None` on timeout.
    pub fn wait_handshake(&self, id: u64, timeout: Duration) -> Option<Connection> {
        self.wait_connection(id, timeout, |c| c.handshake.is_some())
    }

    /// Waits up to `timeout` until connection `id` is `ready`.
    fn wait_connection(
        &self,
        id: u64,
        timeout: Duration,
        ready: impl Fn(&Connection) -> bool,
    ) -> Option<Connection> {
        let deadline = Instant::now() + timeout;
        loop {
            let conn = connection_mut(&mut self.shared.state().connections, id).cloned();
            if let Some(conn) = conn.filter(&ready) {
                return Some(conn);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(WAIT_INTERVAL);
        }
    }

    /// Stops accepting, closes the listener and, within [`POLL_INTERVAL`],
    /// every open connection, so the address looks like a dead upstream.
    /// Idempotent; also done on drop.
    pub fn stop(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let handle = self
            .accept_thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            // Wake the blocking accept() so the loop sees the flag. If even
            // that connection fails, the thread is left detached rather than
            // joined forever.
            if TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_ok() {
                let _ = handle.join();
            }
        }
    }
}

impl Drop for MockSpotify {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for MockSpotify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockSpotify")
            .field("addr", &self.addr)
            .field("tls", &self.shared.tls.is_some())
            .finish_non_exhaustive()
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    loop {
        let accepted = listener.accept();
        if shared.is_stopping() {
            return;
        }
        match accepted {
            Ok((stream, _peer)) => {
                let id = {
                    let connections = &mut shared.state().connections;
                    let id = connections.len() as u64 + 1;
                    connections.push(Connection {
                        id,
                        handshake: None,
                        closed_by_mock: false,
                        ended: false,
                    });
                    id
                };
                let conn_shared = Arc::clone(shared);
                // If no thread can be had, the stream is dropped and the
                // client sees a closed connection: acceptable for a test
                // double, and better than panicking the accept loop.
                let spawned = thread::Builder::new()
                    .name(format!("mock-spotify-conn-{id}"))
                    .spawn(move || {
                        serve_connection(stream, id, &conn_shared);
                        conn_shared.update(id, |c| c.ended = true);
                    });
                if spawned.is_err() {
                    shared.update(id, |c| c.ended = true);
                }
            }
            // E.g. out of file descriptors: back off instead of spinning.
            Err(_) => thread::sleep(POLL_INTERVAL),
        }
    }
}

/// Why a request could not be read.
#[derive(Clone, Copy)]
enum ReadError {
    /// Peer closed, idle too long, socket error or mock stopping: drop the
    /// connection without a word.
    Gone,
    /// Answer with this status and reason, then close.
    Refuse(u16, &'static str),
}

/// A parsed request head.
struct Head {
    method: String,
    target: String,
    version: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    fn keep_alive(&self) -> bool {
        if self.version == "HTTP/1.0" {
            self.has_token("connection", "keep-alive")
        } else {
            !self.has_token("connection", "close")
        }
    }
}

/// What a connection's bytes travel over.
enum Transport {
    Plain(TcpStream),
    /// Boxed: a rustls connection is large next to a socket.
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
}

impl Transport {
    /// The TCP socket underneath.
    fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Plain(stream) => stream,
            Transport::Tls(tls) => &tls.sock,
        }
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Transport::Plain(stream) => stream.read(buf),
            Transport::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Transport::Plain(stream) => stream.write(buf),
            Transport::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Transport::Plain(stream) => stream.flush(),
            Transport::Tls(tls) => tls.flush(),
        }
    }
}

/// One connection's transport plus the bytes read but not yet consumed
/// (which may hold the start of a pipelined request).
struct Wire<'a> {
    transport: Transport,
    /// [`Connection::id`].
    id: u64,
    buf: Vec<u8>,
    shared: &'a Shared,
}

fn is_transient(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

impl Wire<'_> {
    /// Reads at least one more byte into `buf`.
    fn fill(&mut self) -> Result<(), ReadError> {
        let deadline = Instant::now() + IDLE_TIMEOUT;
        let mut chunk = [0u8; 8192];
        loop {
            if self.shared.is_stopping() {
                return Err(ReadError::Gone);
            }
            match self.transport.read(&mut chunk) {
                Ok(0) => return Err(ReadError::Gone),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(());
                }
                Err(e) if is_transient(e.kind()) => {
                    if Instant::now() >= deadline {
                        return Err(ReadError::Gone);
                    }
                }
                Err(_) => return Err(ReadError::Gone),
            }
        }
    }

    /// Reads one request head (request line through the blank line).
    fn read_head(&mut self) -> Result<Vec<u8>, ReadError> {
        let mut scanned = 0;
        loop {
            // RFC 9112 §2.2: ignore empty lines before a request line (some
            // clients send a CRLF after a body).
            let blank = self
                .buf
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            if blank > 0 {
                self.buf.drain(..blank);
                scanned = 0;
            }
            if let Some(end) = find_head_end(&self.buf, scanned) {
                if end > MAX_HEAD_BYTES {
                    return Err(ReadError::Refuse(431, "request head too large"));
                }
                return Ok(self.buf.drain(..end).collect());
            }
            if self.buf.len() > MAX_HEAD_BYTES {
                return Err(ReadError::Refuse(431, "request head too large"));
            }
            // A terminator may straddle the old end; rescan its last 3 bytes.
            scanned = self.buf.len().saturating_sub(3);
            self.fill()?;
        }
    }

    /// Takes exactly `n` bytes.
    fn take(&mut self, n: usize) -> Result<Vec<u8>, ReadError> {
        while self.buf.len() < n {
            self.fill()?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Takes one line, without its line ending.
    fn take_line(&mut self) -> Result<Vec<u8>, ReadError> {
        let mut scanned = 0;
        loop {
            if let Some(pos) = self.buf[scanned..].iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=scanned + pos).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(line);
            }
            if self.buf.len() > MAX_CHUNK_LINE_BYTES {
                return Err(ReadError::Refuse(400, "chunk line too long"));
            }
            scanned = self.buf.len();
            self.fill()?;
        }
    }

    fn read_body(&mut self, head: &Head) -> Result<Vec<u8>, ReadError> {
        if head.has_token("transfer-encoding", "chunked") {
            return self.read_chunked();
        }
        match head.header("content-length") {
            None => Ok(Vec::new()),
            Some(value) => {
                let len: u64 = value
                    .parse()
                    .map_err(|_| ReadError::Refuse(400, "invalid Content-Length"))?;
                match usize::try_from(len) {
                    Ok(len) if len <= MAX_BODY_BYTES => self.take(len),
                    _ => Err(ReadError::Refuse(413, "request body too large")),
                }
            }
        }
    }

    fn read_chunked(&mut self) -> Result<Vec<u8>, ReadError> {
        let mut body = Vec::new();
        loop {
            let line = self.take_line()?;
            let size = std::str::from_utf8(&line)
                .ok()
                .and_then(|text| text.split(';').next())
                .map(str::trim)
                .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|text| usize::from_str_radix(text, 16).ok())
                .ok_or(ReadError::Refuse(400, "invalid chunk size"))?;
            if size == 0 {
                // Trailer fields, up to the blank line; ignored.
                while !self.take_line()?.is_empty() {}
                return Ok(body);
            }
            if size > MAX_BODY_BYTES.saturating_sub(body.len()) {
                return Err(ReadError::Refuse(413, "request body too large"));
            }
            body.extend(self.take(size)?);
            if !self.take_line()?.is_empty() {
                return Err(ReadError::Refuse(400, "chunk not followed by CRLF"));
            }
        }
    }

    /// Writes all of `data` (over TLS: and the records it makes) before
    /// `deadline`; false if the peer went away, the deadline passed or the
    /// mock is stopping.
    fn send(&mut self, mut data: &[u8], deadline: Instant) -> bool {
        let gave_up = || self.shared.is_stopping() || Instant::now() >= deadline;
        while !data.is_empty() {
            if gave_up() {
                return false;
            }
            match self.transport.write(data) {
                Ok(0) => return false,
                Ok(n) => data = &data[n..],
                Err(e) if is_transient(e.kind()) => {}
                Err(_) => return false,
            }
        }
        loop {
            match self.transport.flush() {
                Ok(()) => return true,
                Err(e) if is_transient(e.kind()) && !gave_up() => {}
                Err(_) => return false,
            }
        }
    }

    /// Sends a complete response with a `Content-Length`.
    fn respond(
        &mut self,
        status: u16,
        headers: &[(String, String)],
        body: &[u8],
        keep_alive: bool,
    ) -> bool {
        let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
        let mut out = format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status));
        if !has("content-type") {
            out.push_str("Content-Type: application/json\r\n");
        }
        // Writing to a String cannot fail.
        for (name, value) in headers {
            let _ = write!(out, "{name}: {value}\r\n");
        }
        if !has("content-length") {
            let _ = write!(out, "Content-Length: {}\r\n", body.len());
        }
        if !has("connection") {
            out.push_str(if keep_alive {
                "Connection: keep-alive\r\n"
            } else {
                "Connection: close\r\n"
            });
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(body);
        self.send(&bytes, Instant::now() + WRITE_TIMEOUT)
    }

    /// Closes (over TLS with `close_notify` first) after the peer has had a
    /// chance to read what we sent: closing with unread input in the socket
    /// makes the kernel send a reset, which can destroy a response the peer
    /// has not read yet.
    fn close(mut self) {
        if let Transport::Tls(tls) = &mut self.transport {
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
        let mut tcp = self.transport.tcp();
        let _ = tcp.shutdown(Shutdown::Write);
        self.shared.update(self.id, |c| c.closed_by_mock = true);
        let deadline = Instant::now() + LINGER_ON_CLOSE;
        let mut sink = [0u8; 4096];
        while Instant::now() < deadline {
            match tcp.read(&mut sink) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if is_transient(e.kind()) => {}
                Err(_) => break,
            }
        }
    }

    /// Sleeps up to `duration`, waking early if the mock stops.
    fn hang(&self, duration: Duration) {
        let deadline = Instant::now() + duration;
        while !self.shared.is_stopping() {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            thread::sleep(POLL_INTERVAL.min(deadline - now));
        }
    }

    fn send_large(&mut self, size: usize, keep_alive: bool) -> bool {
        let connection = if keep_alive { "keep-alive" } else { "close" };
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {size}\r\nConnection: {connection}\r\n\r\n"
        );
        let deadline = Instant::now() + WRITE_TIMEOUT;
        if !self.send(head.as_bytes(), deadline) {
            return false;
        }
        let frame = LARGE_PREFIX.len() + LARGE_SUFFIX.len();
        if size < frame {
            return self.send(&LARGE_PREFIX[..size.min(LARGE_PREFIX.len())], deadline)
                && self.send(
                    &LARGE_SUFFIX[..size.saturating_sub(LARGE_PREFIX.len())],
                    deadline,
                );
        }
        if !self.send(LARGE_PREFIX, deadline) {
            return false;
        }
        let filler = [b'a'; 16 * 1024];
        let mut left = size - frame;
        while left > 0 {
            let n = left.min(filler.len());
            if !self.send(&filler[..n], deadline) {
                return false;
            }
            left -= n;
        }
        self.send(LARGE_SUFFIX, deadline)
    }

    fn send_endless(&mut self) {
        let deadline = Instant::now() + ENDLESS_DURATION;
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut first = head.as_bytes().to_vec();
        first.extend_from_slice(format!("{:x}\r\n", LARGE_PREFIX.len()).as_bytes());
        first.extend_from_slice(LARGE_PREFIX);
        first.extend_from_slice(b"\r\n");
        if !self.send(&first, deadline) {
            return;
        }
        let mut chunk = format!("{ENDLESS_CHUNK_BYTES:x}\r\n").into_bytes();
        chunk.extend(std::iter::repeat_n(b'a', ENDLESS_CHUNK_BYTES));
        chunk.extend_from_slice(b"\r\n");
        while self.send(&chunk, deadline) {
            thread::sleep(ENDLESS_CHUNK_PAUSE);
        }
    }
}

/// Parses a request head; `None` for anything malformed.
fn parse_head(head: &[u8]) -> Option<Head> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let mut parts = lines.next()?.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    let method_ok =
        !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase() || b == b'-');
    let target_ok = !target.is_empty() && target.bytes().all(|b| b.is_ascii_graphic());
    if parts.next().is_some() || !method_ok || !target_ok || !version.starts_with("HTTP/1.") {
        return None;
    }
    let mut headers = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        if name.is_empty() || name.bytes().any(|b| !b.is_ascii_graphic()) {
            return None;
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    Some(Head {
        method: method.to_owned(),
        target: target.to_owned(),
        version: version.to_owned(),
        headers,
    })
}

fn serve_connection(stream: TcpStream, id: u64, shared: &Shared) {
    // Without the poll timeout the thread could not notice stop(); give up.
    let setup = stream
        .set_read_timeout(Some(POLL_INTERVAL))
        .and_then(|()| stream.set_write_timeout(Some(POLL_INTERVAL)));
    let transport = match (&shared.tls, setup) {
        (None, Ok(())) => Transport::Plain(stream),
        (None, Err(_)) => return,
        (Some(config), setup) => {
            let tls = setup
                .map_err(|e| e.to_string())
                .and_then(|()| accept_tls(stream, config, shared));
            match tls {
                Ok((tls, handshake)) => {
                    shared.update(id, |c| c.handshake = Some(Ok(handshake)));
                    Transport::Tls(tls)
                }
                Err(error) => {
                    shared.update(id, |c| c.handshake = Some(Err(error)));
                    return;
                }
            }
        }
    };
    let _ = transport.tcp().set_nodelay(true);
    let mut wire = Wire {
        transport,
        id,
        buf: Vec::new(),
        shared,
    };
    loop {
        let (mut recorded, keep_alive) = match read_request(&mut wire) {
            Ok(request) => request,
            Err(error) => return refuse(wire, error),
        };
        let (reply, close) = {
            let mut state = shared.state();
            let reply = state
                .replies
                .pop_front()
                .or_else(|| state.default_reply.clone())
                .unwrap_or_else(|| state.emulate(&recorded));
            recorded.status = reply.status();
            state.requests.push(recorded);
            (reply, state.closes.pop_front())
        };
        let keep_alive = keep_alive && close != Some(Close::Announced);
        if !answer(&mut wire, reply, keep_alive) {
            return;
        }
        if !keep_alive || close.is_some() {
            return wire.close();
        }
    }
}

/// Runs the server side of a TLS handshake on `stream`, within
/// [`HANDSHAKE_TIMEOUT`]; the connection and what was negotiated, or why
/// it failed.
fn accept_tls(
    stream: TcpStream,
    config: &Arc<ServerConfig>,
    shared: &Shared,
) -> Result<(Box<StreamOwned<ServerConnection, TcpStream>>, Handshake), String> {
    let conn = ServerConnection::new(Arc::clone(config)).map_err(|e| e.to_string())?;
    let mut tls = Box::new(StreamOwned::new(conn, stream));
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    while tls.conn.is_handshaking() {
        match tls.conn.complete_io(&mut tls.sock) {
            Ok((0, 0)) => return Err("no progress: the peer went away".into()),
            Ok(_) => {}
            Err(e) if is_transient(e.kind()) => {
                if shared.is_stopping() || Instant::now() >= deadline {
                    return Err(format!("handshake timed out: {e}"));
                }
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    let handshake = Handshake {
        kind: tls.conn.handshake_kind().ok_or("no handshake kind")?,
        version: tls.conn.protocol_version().ok_or("no TLS version")?,
    };
    Ok((tls, handshake))
}

/// Reads and decodes one request; also says whether the connection may be
/// kept open after the answer.
fn read_request(wire: &mut Wire<'_>) -> Result<(Recorded, bool), ReadError> {
    let head = wire.read_head()?;
    let head = parse_head(&head).ok_or(ReadError::Refuse(400, "malformed request head"))?;
    if head.has_token("expect", "100-continue")
        && !wire.send(
            b"HTTP/1.1 100 Continue\r\n\r\n",
            Instant::now() + WRITE_TIMEOUT,
        )
    {
        return Err(ReadError::Gone);
    }
    let body = wire.read_body(&head)?;
    let keep_alive = head.keep_alive();
    let is_form = head
        .header("content-type")
        .is_some_and(is_form_content_type);
    let recorded = Recorded {
        form: if is_form {
            form_urlencoded::parse(&body).into_owned().collect()
        } else {
            Vec::new()
        },
        method: head.method,
        path: head.target,
        version: head.version,
        headers: head.headers,
        body,
        connection: wire.id,
        status: None,
    };
    Ok((recorded, keep_alive))
}

/// Sends `reply`; true if the connection can serve another request.
fn answer(wire: &mut Wire<'_>, reply: Reply, keep_alive: bool) -> bool {
    match reply {
        Reply::Json {
            status,
            body,
            headers,
        } => wire.respond(status, &headers, body.as_bytes(), keep_alive),
        Reply::Large(size) => wire.send_large(size, keep_alive),
        Reply::Raw(bytes) => {
            wire.send(&bytes, Instant::now() + WRITE_TIMEOUT);
            false
        }
        Reply::Hang(duration) => {
            wire.hang(duration);
            false
        }
        Reply::CloseMidResponse => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {CLOSE_MID_PROMISED_BYTES}\r\n\r\n"
            );
            let mut bytes = head.into_bytes();
            bytes.extend_from_slice(CLOSE_MID_SENT);
            wire.send(&bytes, Instant::now() + WRITE_TIMEOUT);
            false
        }
        Reply::Endless => {
            wire.send_endless();
            false
        }
        Reply::Delayed(delay, inner) => {
            wire.hang(delay);
            !wire.shared.is_stopping() && answer(wire, *inner, keep_alive)
        }
    }
}

/// Ends a connection whose request could not be read.
fn refuse(mut wire: Wire<'_>, error: ReadError) {
    if let ReadError::Refuse(status, description) = error {
        let body = error_body("invalid_request", description);
        wire.respond(status, &[], body.as_bytes(), false);
        wire.close();
    }
}

fn is_form_content_type(value: &str) -> bool {
    value.split(';').next().is_some_and(|media| {
        media
            .trim()
            .eq_ignore_ascii_case("application/x-www-form-urlencoded")
    })
}

fn error_body(error: &str, description: &str) -> String {
    json!({ "error": error, "error_description": description }).to_string()
}

/// Spotify's OAuth error answer: 400 with `error` and `error_description`.
fn oauth_error(error: &str, description: &str) -> Reply {
    Reply::json(400, &error_body(error, description))
}

impl State {
    /// Answers a request the way Spotify's accounts service would.
    fn emulate(&mut self, req: &Recorded) -> Reply {
        let route = req.path.split('?').next().unwrap_or_default();
        if route == "/authorize" && req.method == "GET" {
            return self.authorize(req);
        }
        if route != "/api/token" {
            return Reply::json(404, &error_body("not_found", "Service not found"));
        }
        if req.method != "POST" {
            return Reply::json_with_headers(
                405,
                &error_body("method_not_allowed", "Method not allowed"),
                &[("Allow", "POST")],
            );
        }
        let Some(client) = self.client_authenticated(req.header("authorization")) else {
            return oauth_error("invalid_client", "Invalid client");
        };
        if !req.header("content-type").is_some_and(is_form_content_type) {
            return oauth_error(
                "invalid_request",
                "Content-Type must be application/x-www-form-urlencoded",
            );
        }
        match req.field("grant_type") {
            Some("authorization_code") => self.exchange_code(req, &client),
            Some("refresh_token") => self.refresh(req, &client),
            Some(_) => oauth_error(
                "unsupported_grant_type",
                "grant_type must be client_credentials, authorization_code or refresh_token",
            ),
            None => oauth_error("unsupported_grant_type", "grant_type parameter is missing"),
        }
    }

    /// The app `client`.
    ///
    /// # Panics
    /// If the mock does not know it (a test's mistake).
    fn client(&self, client_id: &str) -> &Client {
        self.clients
            .iter()
            .find(|c| c.id == client_id)
            .unwrap_or_else(|| panic!("mock Spotify: no client {client_id}"))
    }

    /// The client id the `Authorization: Basic` header authenticates: a
    /// known app's id with that app's secret.
    fn client_authenticated(&self, header: Option<&str>) -> Option<String> {
        let (scheme, encoded) = header.and_then(|h| h.split_once(' '))?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = STANDARD.decode(encoded.trim()).ok()?;
        self.clients
            .iter()
            .find(|c| decoded == format!("{}:{}", c.id, c.secret).as_bytes())
            .map(|c| c.id.clone())
    }

    fn exchange_code(&mut self, req: &Recorded, client: &str) -> Reply {
        let invalid_code = || oauth_error("invalid_grant", "Invalid authorization code");
        let Some(code) = req.field("code") else {
            return invalid_code();
        };
        // A code issued to another app is no code of this one.
        let Some((_, grant)) = self.codes.get(code).filter(|(owner, _)| owner == client) else {
            return invalid_code();
        };
        let redirect_uris = &self.client(client).redirect_uris;
        let redirect_ok = req
            .field("redirect_uri")
            .is_some_and(|uri| redirect_uris.iter().any(|allowed| allowed == uri));
        if !redirect_ok {
            return oauth_error("invalid_grant", "Invalid redirect URI");
        }
        if let Some(verifier) = &grant.code_verifier {
            if req.field("code_verifier") != Some(verifier.as_str()) {
                return oauth_error("invalid_grant", "code_verifier was incorrect");
            }
        }
        if let Some(challenge) = &grant.code_challenge {
            if req.field("code_verifier").map(s256) != Some(challenge.clone()) {
                return oauth_error("invalid_grant", "code_verifier was incorrect");
            }
        }
        // Codes are single-use; a failed attempt above leaves the code live
        // so a test can retry with corrected parameters.
        let Some((_, grant)) = self.codes.remove(code) else {
            return invalid_code();
        };
        let mut body = json!({
            "access_token": grant.access_token,
            "token_type": "Bearer",
            "expires_in": grant.expires_in,
            "scope": grant.scope,
        });
        if let Some(refresh_token) = grant.refresh_token {
            self.refresh_tokens.insert(
                refresh_token.clone(),
                (client.to_owned(), grant.scope.clone()),
            );
            body["refresh_token"] = Value::String(refresh_token);
        }
        Reply::json(200, &body.to_string())
    }

    /// Spotify's consent page, as a user who accepts at once (or declines):
    /// `303` to the redirect URI with `code` (or `error`) and `state`.
    /// Anything Spotify would refuse is a 400 that sends nobody back.
    fn authorize(&mut self, req: &Recorded) -> Reply {
        let query = req.path.split_once('?').map(|(_, q)| q).unwrap_or_default();
        let params: HashMap<String, String> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let param = |name: &str| params.get(name).map(String::as_str).unwrap_or_default();
        let refuse = |why: &str| Reply::json(400, &error_body("invalid_request", why));
        let Some(client) = self.clients.iter().find(|c| c.id == param("client_id")) else {
            return refuse("INVALID_CLIENT: Invalid client");
        };
        let redirect_uri = param("redirect_uri");
        if !client.redirect_uris.iter().any(|uri| uri == redirect_uri) {
            return refuse("INVALID_CLIENT: Invalid redirect URI");
        }
        let challenge = param("code_challenge");
        let challenge_ok = challenge.len() == 43
            && challenge
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if param("response_type") != "code"
            || param("state").is_empty()
            || param("code_challenge_method") != "S256"
            || !challenge_ok
        {
            return refuse("response_type, state or the S256 code_challenge is wrong");
        }
        let mut back = form_urlencoded::Serializer::new(String::new());
        if self.authorize_denies {
            back.append_pair("error", "access_denied");
        } else {
            self.authorized += 1;
            let code = format!("authorized-{}", self.authorized);
            let mut grant = AuthGrant::for_code(&code);
            grant.code_challenge = Some(challenge.to_owned());
            if !param("scope").is_empty() {
                grant.scope = param("scope").to_owned();
            }
            let client_id = client.id.clone();
            self.codes.insert(code.clone(), (client_id, grant));
            back.append_pair("code", &code);
        }
        back.append_pair("state", param("state"));
        let location = format!("{redirect_uri}?{}", back.finish());
        Reply::json_with_headers(303, "", &[("Location", &location)])
    }

    fn refresh(&mut self, req: &Recorded, client: &str) -> Reply {
        let Some((token, scope)) = req
            .field("refresh_token")
            .and_then(|token| self.refresh_tokens.get_key_value(token))
            .filter(|(_, (owner, _))| owner == client)
            .map(|(token, (_, scope))| (token.clone(), scope.clone()))
        else {
            return oauth_error("invalid_grant", "Invalid refresh token");
        };
        self.refreshes += 1;
        let n = self.refreshes;
        let mut body = json!({
            "access_token": format!("access-refreshed-{n}"),
            "token_type": "Bearer",
            "expires_in": EXPIRES_IN_SECS,
            "scope": scope,
        });
        if self.rotate_refresh_tokens {
            let rotated = format!("refresh-rotated-{n}");
            self.refresh_tokens.remove(&token);
            self.refresh_tokens
                .insert(rotated.clone(), (client.to_owned(), scope));
            body["refresh_token"] = Value::String(rotated);
        }
        Reply::json(200, &body.to_string())
    }
}

/// PKCE's S256 challenge of `verifier` (RFC 7636 §4.2).
pub fn s256(verifier: &str) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let digest = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// The reason phrase for `status`: the one table the mock answers with.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}
