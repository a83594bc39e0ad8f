//! Request → response: `/swap`, `/refresh`, `/health`, `/metrics`, CORS.
//!
//! A plain function of (state, request), testable without sockets. A token
//! request is: rate limit → parse form/JSON fields → (refresh: decrypt) →
//! Spotify → (encrypt the refresh token) → JSON with `no-store`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use serde_json::{Map, Value};

use crate::config::{Config, Cors, Secret};
use crate::error::Error;
use crate::http::{Handler, Record, Request, Response, Stats};
use crate::metrics::{Endpoint, Metrics};
use crate::ratelimit::RateLimiter;
use crate::spotify::{Answer, Grant, Spotify};
use crate::token::TokenCipher;

/// `Access-Control-Max-Age` for preflight answers, in seconds.
const CORS_MAX_AGE_SECS: u32 = 600;

/// Everything a request needs, built once at start.
pub struct App {
    config: Config,
    spotify: Spotify,
    /// Refresh-token cipher; `None` with encryption off. Swapped on SIGHUP.
    cipher: RwLock<Option<Arc<TokenCipher>>>,
    /// The secrets in use, to tell what a reload changed.
    secrets: Mutex<Secrets>,
    limiter: Option<RateLimiter>,
    /// For each of `TRUSTED_PROXIES`, whether it has been reported for
    /// sending no `X-Forwarded-For`.
    proxies_warned: Vec<AtomicBool>,
    metrics: Metrics,
    stats: Arc<Stats>,
}

impl App {
    /// Builds the agent, keys and limiter.
    pub(crate) fn new(config: Config, stats: Arc<Stats>) -> App {
        let secrets = Secrets::of(&config);
        let cipher = RwLock::new(secrets.cipher(&config.client_id));
        let limiter = (config.rate_limit_per_minute > 0)
            .then(|| RateLimiter::new(config.rate_limit_per_minute));
        App {
            spotify: Spotify::new(&config),
            cipher,
            secrets: Mutex::new(secrets),
            limiter,
            proxies_warned: config
                .trusted_proxies
                .iter()
                .map(|_| AtomicBool::new(false))
                .collect(),
            metrics: Metrics::new(),
            stats,
            config,
        }
    }

    fn endpoint(&self, path: &str) -> Endpoint {
        if path == self.config.swap_path {
            Endpoint::Swap
        } else if path == self.config.refresh_path {
            Endpoint::Refresh
        } else if path == "/health" {
            Endpoint::Health
        } else if path == "/metrics" && self.config.metrics {
            Endpoint::Metrics
        } else {
            Endpoint::Other
        }
    }

    fn route(&self, request: &Request) -> Result<Response, Error> {
        let method = request.method.as_str();
        match self.endpoint(&request.path) {
            Endpoint::Swap | Endpoint::Refresh if method == "OPTIONS" => {
                if self.config.cors == Cors::Off {
                    return Err(Error::MethodNotAllowed { allow: "POST" });
                }
                Ok(Response::empty(204))
            }
            endpoint @ (Endpoint::Swap | Endpoint::Refresh) => {
                if method != "POST" {
                    let allow = if self.config.cors == Cors::Off {
                        "POST"
                    } else {
                        "POST, OPTIONS"
                    };
                    return Err(Error::MethodNotAllowed { allow });
                }
                self.rate_limit(request)?;
                if endpoint == Endpoint::Swap {
                    self.swap(request)
                } else {
                    self.refresh(request)
                }
            }
            Endpoint::Health => match method {
                "GET" | "HEAD" => Ok(Response::json(200, br#"{"status":"ok"}"#.to_vec())),
                _ => Err(Error::MethodNotAllowed { allow: "GET, HEAD" }),
            },
            Endpoint::Metrics => match method {
                "GET" | "HEAD" => {
                    let mut response =
                        Response::json(200, self.metrics.render(&self.stats).into_bytes());
                    response.content_type = "text/plain; version=0.0.4; charset=utf-8";
                    Ok(response)
                }
                _ => Err(Error::MethodNotAllowed { allow: "GET, HEAD" }),
            },
            Endpoint::Other if method == "OPTIONS" && request.path == "*" => {
                Ok(Response::empty(204).with_header("Allow", "GET, HEAD, POST, OPTIONS"))
            }
            Endpoint::Other => Err(Error::NotFound),
        }
    }

    /// Takes one token request from the client's allowance
    /// (`RATE_LIMIT_PER_MINUTE`), or refuses it 429.
    fn rate_limit(&self, request: &Request) -> Result<(), Error> {
        let (Some(limiter), Some(client)) = (&self.limiter, request.client) else {
            return Ok(());
        };
        // SECURITY: a trusted proxy that sends no X-Forwarded-For names no
        // client: its requests are every user's, and one bucket for all of
        // them would let one user lock every other out. Unlimited is the
        // lesser harm; the operator is told once per proxy, to fix it.
        let unnamed = (!request.forwarded_for)
            .then(|| {
                self.config
                    .trusted_proxies
                    .iter()
                    .position(|p| *p == client)
            })
            .flatten();
        if let Some(proxy) = unnamed {
            if !self.proxies_warned[proxy].swap(true, Ordering::Relaxed) {
                log::warn!(
                    "trusted proxy {client} sends no X-Forwarded-For: its token requests \
                     are not rate-limited (make the proxy send X-Forwarded-For, or remove \
                     {client} from TRUSTED_PROXIES)"
                );
            }
            return Ok(());
        }
        match limiter.check(client) {
            Ok(()) => Ok(()),
            Err(limited) => {
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
                Err(Error::RateLimited {
                    retry_after_secs: limited.retry_after_secs,
                })
            }
        }
    }

    fn swap(&self, request: &Request) -> Result<Response, Error> {
        let fields = Fields::parse(request, &["code", "redirect_uri", "code_verifier"])?;
        let code = fields.required("code")?;
        let redirect_uri = match fields.optional("redirect_uri") {
            None => self.config.redirect_uri.as_str(),
            Some(uri) if self.config.redirect_uri_allowed(uri) => uri,
            Some(_) => return Err(Error::RedirectUriNotAllowed),
        };
        self.call_spotify(
            &Grant::AuthorizationCode {
                code,
                redirect_uri,
                code_verifier: fields.optional("code_verifier"),
            },
            None,
        )
    }

    fn refresh(&self, request: &Request) -> Result<Response, Error> {
        let fields = Fields::parse(request, &["refresh_token"])?;
        let token = fields.required("refresh_token")?;
        let opened;
        let cipher = self.cipher();
        let (refresh_token, reseal) = match &cipher {
            // SECURITY: a token that fails authentication never reaches
            // Spotify, so this server cannot be used as an oracle or a relay
            // for guessed tokens.
            Some(cipher) => {
                opened = cipher.open(token).map_err(|_| Error::InvalidRefreshToken)?;
                self.metrics.token_opened(opened.used_previous_key);
                // A token under a previous key is handed back under the
                // current one, so that key can be retired (see the README,
                // "Rotating the encryption secret").
                let reseal = opened
                    .used_previous_key
                    .then_some(opened.refresh_token.as_str());
                (opened.refresh_token.as_str(), reseal)
            }
            None => (token, None),
        };
        self.call_spotify(&Grant::RefreshToken { refresh_token }, reseal)
    }

    /// Calls Spotify and builds the answer. `reseal`: a refresh token (in
    /// clear) to return sealed under the current key when Spotify's 200
    /// carries no new one.
    fn call_spotify(&self, grant: &Grant<'_>, reseal: Option<&str>) -> Result<Response, Error> {
        let started = Instant::now();
        let result = self.spotify.call(grant);
        let upstream_answered = !matches!(&result, Err((Error::UpstreamBackoff { .. }, _)));
        if upstream_answered {
            self.metrics.upstream_call(started.elapsed());
        }
        let Answer {
            status,
            mut body,
            retry_after_secs,
        } = match result {
            Ok(answer) => answer,
            Err((error, kind)) => {
                if let Some(kind) = kind {
                    self.metrics.upstream_failure(kind);
                }
                return Err(error);
            }
        };
        if status == 429 {
            self.metrics
                .upstream_failure(crate::spotify::FailureKind::RateLimited);
        }
        if status == 200 {
            self.seal_refresh_token(&mut body, reseal);
        }
        // `to_vec` writes straight into bytes; `to_string` would go through
        // `fmt::Display`, several times slower. Serialising a map of JSON
        // values cannot fail.
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = Response::json(status, bytes);
        if let Some(secs) = retry_after_secs {
            response.headers.push(("Retry-After", secs.to_string()));
        }
        Ok(response)
    }

    /// Replaces Spotify's refresh token by its encrypted form, when
    /// encryption is on; without one from Spotify, adds `reseal` (the
    /// client's token, opened under a previous key) sealed under the
    /// current key. RFC 6749 §6: a client replaces its refresh token when a
    /// refresh answer carries one.
    fn seal_refresh_token(&self, body: &mut Map<String, Value>, reseal: Option<&str>) {
        let Some(cipher) = self.cipher() else { return };
        match body.get_mut("refresh_token") {
            Some(Value::String(token)) => *token = cipher.seal(token),
            Some(_) => {}
            None => {
                if let Some(clear) = reseal {
                    body.insert("refresh_token".into(), Value::String(cipher.seal(clear)));
                }
            }
        }
    }

    /// Keeps the upstream connection warm (see [`Spotify::keep_warm`]).
    pub(crate) fn keep_warm(&self) -> bool {
        self.spotify.keep_warm()
    }

    fn cipher(&self) -> Option<Arc<TokenCipher>> {
        self.cipher
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
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

    /// Adds the CORS headers a token-endpoint response carries.
    fn cors(&self, request: &Request, mut response: Response) -> Response {
        let Some(origin) = request.origin.as_deref() else {
            return response;
        };
        if !self.config.cors.allows(origin) {
            return response;
        }
        response
            .headers
            .push(("Access-Control-Allow-Origin", origin.to_string()));
        response.headers.push(("Vary", "Origin".to_string()));
        if request.method == "OPTIONS" {
            response
                .headers
                .push(("Access-Control-Allow-Methods", "POST".to_string()));
            response
                .headers
                .push(("Access-Control-Allow-Headers", "Content-Type".to_string()));
            response
                .headers
                .push(("Access-Control-Max-Age", CORS_MAX_AGE_SECS.to_string()));
        }
        response
    }
}

impl Handler for App {
    fn handle(&self, request: &Request) -> Response {
        let response = self.route(request).unwrap_or_else(|error| error.response());
        match self.endpoint(&request.path) {
            Endpoint::Swap | Endpoint::Refresh => {
                // RFC 6749 §5.1: token responses must not be cached.
                let response = response
                    .with_header("Cache-Control", "no-store")
                    .with_header("Pragma", "no-cache");
                self.cors(request, response)
            }
            _ => response,
        }
    }

    fn record(&self, record: &Record<'_>) {
        self.metrics
            .request(self.endpoint(record.path), record.status);
    }

    fn decorate_error(&self, request: &Request, response: Response) -> Response {
        match self.endpoint(&request.path) {
            // A browser app reads the HTTP layer's errors on the token
            // paths only if they carry its CORS headers.
            Endpoint::Swap | Endpoint::Refresh => self.cors(request, response),
            _ => response,
        }
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

/// The known fields of a form or JSON body.
struct Fields {
    pairs: Vec<(&'static str, String)>,
}

impl Fields {
    /// Parses the body by its content type, keeping only `known` fields.
    fn parse(request: &Request, known: &[&'static str]) -> Result<Fields, Error> {
        parse_fields(request.content_type.as_deref(), &request.body, known)
            .map(|pairs| Fields { pairs })
    }

    fn optional(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    fn required(&self, name: &'static str) -> Result<&str, Error> {
        match self.pairs.iter().find(|(n, _)| *n == name) {
            None => Err(Error::MissingField(name)),
            Some((_, v)) if v.is_empty() => Err(Error::EmptyField(name)),
            Some((_, v)) => Ok(v),
        }
    }
}

/// The `known` fields of a form or JSON body, as (name, value), refusing
/// repeated and non-string fields and unknown content types. Entry point for
/// the fuzz target.
pub fn parse_fields(
    content_type: Option<&str>,
    body: &[u8],
    known: &[&'static str],
) -> Result<Vec<(&'static str, String)>, Error> {
    let media_type = content_type.map(|ct| {
        ct.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    let raw: Vec<(String, Option<String>)> = match media_type.as_deref() {
        // Clients that send no type at all get the form reading; every
        // known client sends one.
        None | Some("application/x-www-form-urlencoded") => form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), Some(v.into_owned())))
            .collect(),
        Some("application/json") => parse_json_object(body)?,
        Some(_) => return Err(Error::UnsupportedMediaType),
    };
    let mut pairs: Vec<(&'static str, String)> = Vec::with_capacity(known.len());
    for (key, value) in raw {
        let Some(name) = known.iter().find(|k| **k == key) else {
            continue;
        };
        if pairs.iter().any(|(n, _)| n == name) {
            return Err(Error::RepeatedField(name));
        }
        let Some(text) = value else {
            return Err(Error::MalformedBody("fields must be strings"));
        };
        pairs.push((name, text));
    }
    Ok(pairs)
}

/// A flat JSON object as its list of members, duplicates kept (serde_json's
/// `Map` would silently keep the last one); a member that is not a string
/// is `None`.
///
/// SECURITY: only a flat object can be valid, so an array or object as a
/// member's value is refused where it starts, never descended into. A
/// parser that builds whole values recurses once per level, and the 8 KiB
/// body holds 4,000 levels of `[`: that overflows a worker's stack and
/// aborts the whole process (127 levels of objects did in a debug build).
fn parse_json_object(body: &[u8]) -> Result<Vec<(String, Option<String>)>, Error> {
    struct Members(Vec<(String, Option<String>)>);
    /// A member's value: a string, or another scalar (ignored unless it is
    /// a known field, which must be a string).
    struct Scalar(Option<String>);
    impl<'de> Deserialize<'de> for Scalar {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = Scalar;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a string, number, boolean or null")
                }
                fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Scalar, E> {
                    Ok(Scalar(Some(v.to_owned())))
                }
                fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Scalar, E> {
                    Ok(Scalar(Some(v)))
                }
                fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Scalar, E> {
                    Ok(Scalar(None))
                }
                fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Scalar, E> {
                    Ok(Scalar(None))
                }
                fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Scalar, E> {
                    Ok(Scalar(None))
                }
                fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Scalar, E> {
                    Ok(Scalar(None))
                }
                fn visit_unit<E: serde::de::Error>(self) -> Result<Scalar, E> {
                    Ok(Scalar(None))
                }
                // `visit_seq` and `visit_map` keep serde's default: an
                // error at once, without reading the array or object.
            }
            d.deserialize_any(V)
        }
    }
    impl<'de> Deserialize<'de> for Members {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Members;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a flat JSON object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                    let mut members = Vec::new();
                    while let Some((key, Scalar(value))) = map.next_entry::<String, Scalar>()? {
                        members.push((key, value));
                    }
                    Ok(Members(members))
                }
            }
            d.deserialize_map(V)
        }
    }
    serde_json::from_slice::<Members>(body)
        .map(|m| m.0)
        .map_err(|_| Error::MalformedBody("expected a flat JSON object"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(body: &str) -> Request {
        Request {
            method: "POST".into(),
            path: "/swap".into(),
            minor_version: 1,
            content_type: Some("application/x-www-form-urlencoded".into()),
            body: body.as_bytes().to_vec(),
            ..Request::default()
        }
    }

    fn json(body: &str) -> Request {
        Request {
            content_type: Some("application/json; charset=utf-8".into()),
            ..form(body)
        }
    }

    #[test]
    fn form_fields_are_decoded() {
        let f = Fields::parse(&form("code=a%2Bb+c&other=x"), &["code"]).unwrap();
        assert_eq!(f.required("code"), Ok("a+b c"));
    }

    #[test]
    fn repeated_form_field_is_refused() {
        let err = Fields::parse(&form("code=a&code=b"), &["code"])
            .err()
            .unwrap();
        assert_eq!(err, Error::RepeatedField("code"));
    }

    #[test]
    fn empty_and_missing_fields_are_distinguished() {
        let f = Fields::parse(&form("code="), &["code", "redirect_uri"]).unwrap();
        assert_eq!(f.required("code"), Err(Error::EmptyField("code")));
        assert_eq!(
            f.required("redirect_uri"),
            Err(Error::MissingField("redirect_uri"))
        );
    }

    #[test]
    fn json_body_is_accepted_with_charset() {
        let f = Fields::parse(&json(r#"{"code":"abc","extra":1}"#), &["code"]).unwrap();
        assert_eq!(f.required("code"), Ok("abc"));
    }

    #[test]
    fn repeated_json_member_is_refused() {
        let err = Fields::parse(&json(r#"{"code":"a","code":"b"}"#), &["code"])
            .err()
            .unwrap();
        assert_eq!(err, Error::RepeatedField("code"));
    }

    #[test]
    fn non_object_or_non_string_json_is_malformed() {
        for body in [r#"["code"]"#, r#"{"code":1}"#, "{", "", "null"] {
            assert!(
                matches!(
                    Fields::parse(&json(body), &["code"]),
                    Err(Error::MalformedBody(_))
                ),
                "{body}"
            );
        }
    }

    #[test]
    fn json_arrays_and_objects_are_refused_without_descending() {
        // 100,000 levels: far past any stack a recursive parser could use.
        let deep = format!(r#"{{"code":{}"#, "[".repeat(100_000));
        let deep_objects = format!(r#"{{"other":{}"#, r#"{"a":"#.repeat(100_000));
        for body in [
            deep.as_str(),
            deep_objects.as_str(),
            r#"{"code":"a","other":[]}"#,
            r#"{"other":{},"code":"a"}"#,
            r#"{"code":["a"]}"#,
        ] {
            assert_eq!(
                Fields::parse(&json(body), &["code"]).err(),
                Some(Error::MalformedBody("expected a flat JSON object")),
                "{}",
                &body[..body.len().min(40)]
            );
        }
    }

    #[test]
    fn json_scalars_in_other_members_are_ignored() {
        let f = Fields::parse(
            &json(r#"{"a":1,"b":-2.5e3,"c":true,"d":null,"code":"x","e":"y"}"#),
            &["code"],
        )
        .unwrap();
        assert_eq!(f.required("code"), Ok("x"));
    }

    #[test]
    fn other_content_types_are_unsupported() {
        let request = Request {
            content_type: Some("text/plain".into()),
            ..form("code=a")
        };
        assert_eq!(
            Fields::parse(&request, &["code"]).err(),
            Some(Error::UnsupportedMediaType)
        );
    }
}
