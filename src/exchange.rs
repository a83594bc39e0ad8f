//! The two token endpoints: `/swap` trades an authorization code for
//! tokens, `/refresh` a refresh token for a new access token, each for one
//! app (`endpoints.rs` picked it). Each reads its fields, (refresh) opens
//! the sealed token with the app's cipher, asks Spotify through the one
//! shared client with the app's credentials, and answers with Spotify's
//! JSON, its refresh token sealed for the app with the user's sign-in time
//! (`/swap`: now; `/refresh`: the one the client's token carries) and what
//! that time says about it (`lifetime.rs`).

use serde_json::{Map, Value};

use crate::error::Error;
use crate::fields::Fields;
use crate::http::{Request, Response};
use crate::lifetime;
use crate::state::{AppState, State};
use crate::upstream::{Answer, Grant};

/// `POST {SWAP_PATH}`: `code`, optional `redirect_uri` and `code_verifier`.
pub(crate) fn swap(state: &State, app: &AppState, request: &Request) -> Result<Response, Error> {
    let fields = Fields::parse(request, &["code", "redirect_uri", "code_verifier"])?;
    let code = fields.required("code")?;
    let redirect_uri = match fields.optional("redirect_uri") {
        None => app.config.redirect_uri.as_str(),
        Some(uri) if app.config.redirect_uri_allowed(uri) => uri,
        Some(_) => return Err(Error::RedirectUriNotAllowed),
    };
    let grant = Grant::AuthorizationCode {
        code,
        redirect_uri,
        code_verifier: fields.optional("code_verifier"),
    };
    // The user signs in now; taken before the call, so the lifetime stated
    // never outlasts Spotify's.
    call_spotify(state, app, &grant, None, Some(lifetime::unix_now()))
}

/// Device login's swap (`/callback`): the code Spotify sent the browser
/// back with, the callback URI, and PKCE's verifier. The answer is the one
/// `/swap` gives, kept for the device.
pub(crate) fn device_swap(
    state: &State,
    app: &AppState,
    code: &str,
    redirect_uri: &str,
    verifier: &str,
) -> Result<Response, Error> {
    let grant = Grant::AuthorizationCode {
        code,
        redirect_uri,
        code_verifier: Some(verifier),
    };
    call_spotify(state, app, &grant, None, Some(lifetime::unix_now()))
}

/// `POST {REFRESH_PATH}`: `refresh_token`, sealed when encryption is on.
pub(crate) fn refresh(state: &State, app: &AppState, request: &Request) -> Result<Response, Error> {
    let fields = Fields::parse(request, &["refresh_token"])?;
    let token = fields.required("refresh_token")?;
    let opened;
    let cipher = app.cipher();
    let (refresh_token, reseal, signed_in_at) = match &cipher {
        // SECURITY: a token that fails authentication never reaches
        // Spotify, so this server cannot be used as an oracle or a relay
        // for guessed tokens. The app's client id is the associated data:
        // a token sealed for another app fails here too.
        Some(cipher) => {
            opened = cipher.open(token).map_err(|_| Error::InvalidRefreshToken)?;
            state.metrics.token_opened(opened.used_previous_key);
            note_token_age(state, opened.signed_in_at);
            // A token under a previous key is handed back under the
            // current one, so that key can be retired (see the README,
            // "Rotating the encryption secret").
            let reseal = opened
                .used_previous_key
                .then_some(opened.refresh_token.as_str());
            (opened.refresh_token.as_str(), reseal, opened.signed_in_at)
        }
        None => (token, None, None),
    };
    let grant = Grant::RefreshToken { refresh_token };
    call_spotify(state, app, &grant, reseal, signed_in_at)
}

/// Records the age of a refresh token that carries its sign-in time.
fn note_token_age(state: &State, signed_in_at: Option<u64>) {
    if let Some(signed_in_at) = signed_in_at {
        let age = lifetime::age(signed_in_at, lifetime::unix_now());
        state.metrics.refresh_token_age(age);
    }
}

/// Calls Spotify and builds the answer. `reseal`: a refresh token (in
/// clear) to return sealed under the current key when Spotify's 200
/// carries no new one. `signed_in_at`: when the user signed in (Unix
/// seconds), sealed into the answer's refresh token; `None` for a token
/// that carries no time (version 1, or encryption off).
fn call_spotify(
    state: &State,
    app: &AppState,
    grant: &Grant<'_>,
    reseal: Option<&str>,
    signed_in_at: Option<u64>,
) -> Result<Response, Error> {
    let call = state.spotify.call(&app.account, grant);
    if let Some(duration) = call.duration {
        state.metrics.upstream_call(app.index, duration);
    }
    if let Some(kind) = call.failure() {
        state.metrics.upstream_failure(app.index, kind);
    }
    if let Some(reason) = call.rate_limit_reason() {
        state.metrics.upstream_rate_limited(reason);
    }
    let Answer {
        status,
        mut body,
        retry_after_secs,
        ..
    } = call.result?;
    if status == 200 {
        seal_refresh_token(state, app, &mut body, reseal, signed_in_at);
    } else if let Grant::RefreshToken { .. } = grant {
        // A swap's refusal is about its code, never the refresh token.
        let token_lifetime = state.config.refresh_token_lifetime;
        lifetime::explain_expiry(
            &mut body,
            token_lifetime,
            signed_in_at,
            lifetime::unix_now(),
        );
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

/// Replaces Spotify's refresh token by its encrypted form, when encryption
/// is on; without one from Spotify, adds `reseal` (the client's token,
/// opened under a previous key) sealed under the current key. RFC 6749 §6:
/// a client replaces its refresh token when a refresh answer carries one.
/// Either keeps the sign-in time `signed_in_at`, which the answer states
/// as `refresh_token_expires_in`.
fn seal_refresh_token(
    state: &State,
    app: &AppState,
    body: &mut Map<String, Value>,
    reseal: Option<&str>,
    signed_in_at: Option<u64>,
) {
    let Some(cipher) = app.cipher() else { return };
    match body.get_mut("refresh_token") {
        Some(Value::String(token)) => *token = cipher.seal(token, signed_in_at),
        Some(_) => {}
        None => {
            if let Some(clear) = reseal {
                let sealed = cipher.seal(clear, signed_in_at);
                body.insert("refresh_token".into(), Value::String(sealed));
            }
        }
    }
    let token_lifetime = state.config.refresh_token_lifetime;
    lifetime::state_expiry(body, token_lifetime, signed_in_at, lifetime::unix_now());
}
