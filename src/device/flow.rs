//! The four paths of device login, as handlers of the endpoint table:
//!
//! - `POST /device/code`: a new pending login for the app `client_id`
//!   names (or the first), with the scopes asked for;
//! - `GET /device` (the code form, or with `?user_code=` the app and
//!   scopes and a Continue button) and `POST /device` (Continue: `303` to
//!   Spotify's authorize page with a fresh `state` and S256 challenge);
//! - `GET /callback`: Spotify sends the browser back; the code is swapped
//!   with the verifier, the answer kept for the device;
//! - `POST /device/token`: the device's polls, answered by RFC 8628's
//!   rules (`table.rs`).
//!
//! Two cookies, both `HttpOnly`, both only as long as a login lives:
//! `sts_form` (`SameSite=Strict`, set with the Continue page and sent back
//! in the form) makes sure Continue was pressed on this server's page, so a
//! page elsewhere cannot send a person's browser to Spotify for a device it
//! controls; `sts_login` (`SameSite=Lax`, set by Continue) binds the
//! callback to the browser that pressed it.

use std::time::Instant;

use super::Device;
use super::codes::{self, RandomFailed, UserCode};
use super::table::{Authorizing, CallbackRefused, LOGIN_LIFETIME, Login, POLL_INTERVAL, Poll};
use crate::config::{CALLBACK_PATH, DEVICE_PAGE_PATH};
use crate::error::Error;
use crate::exchange;
use crate::fields::Fields;
use crate::http::{Request, Response};
use crate::pages;
use crate::state::State;

/// The grant type of a device's poll (RFC 8628 §3.4).
pub(crate) const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// Longest `scope` taken: Spotify has about twenty scopes, all of them fit.
const MAX_SCOPE_BYTES: usize = 1024;
/// Fresh user codes drawn before giving up on one not in use: with at most
/// 10,000 pending of 20^8, a second draw is already rare.
const USER_CODE_DRAWS: usize = 16;
/// The cookie that proves Continue was pressed on this server's page.
const FORM_COOKIE: &str = "sts_form";
/// The cookie that binds the callback to the browser that continued.
const BINDING_COOKIE: &str = "sts_login";
/// How long the cookies are kept: as long as a login lives.
const LIFETIME_SECS: u64 = LOGIN_LIFETIME.as_secs();

impl From<RandomFailed> for Error {
    fn from(_: RandomFailed) -> Error {
        Error::RandomFailed
    }
}

/// `POST /device/code`: `client_id` (optional, picks the app), `scope`
/// (optional).
pub(crate) fn code(state: &State, device: &Device, request: &Request) -> Result<Response, Error> {
    let app = state.pick_app(None, request)?;
    let fields = Fields::parse(request, &["client_id", "scope"])?;
    let scope = fields.optional("scope").map(scope_list).transpose()?;
    let device_code = codes::secret(&device.rng)?;
    let now = Instant::now();
    let mut logins = device.logins();
    let mut user_code = None;
    for _ in 0..USER_CODE_DRAWS {
        let drawn = UserCode::random(&device.rng)?;
        if !logins.user_code_taken(drawn) {
            user_code = Some(drawn);
            break;
        }
    }
    let user_code = user_code.ok_or(Error::RandomFailed)?;
    let login = Login::new(app.index, scope, user_code, now);
    logins
        .insert(device_code.clone(), login, now)
        .map_err(|full| Error::DeviceLoginsFull {
            retry_after_secs: full.retry_after_secs,
        })?;
    drop(logins);
    let page = device.public_url.at(DEVICE_PAGE_PATH);
    let body = serde_json::json!({
        "device_code": device_code,
        "user_code": user_code.to_string(),
        "verification_uri": page,
        "verification_uri_complete": format!("{page}?user_code={user_code}"),
        "expires_in": LOGIN_LIFETIME.as_secs(),
        "interval": POLL_INTERVAL.as_secs(),
    });
    Ok(Response::json(200, body.to_string().into_bytes()))
}

/// `scope` as Spotify takes it: names of letters, digits, `-`, `_`, `.`
/// and `:`, separated by single spaces.
fn scope_list(text: &str) -> Result<String, Error> {
    let name_ok = |name: &str| {
        name.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    };
    let names: Vec<&str> = text.split_ascii_whitespace().collect();
    if text.len() > MAX_SCOPE_BYTES || !names.iter().all(|name| name_ok(name)) {
        return Err(Error::InvalidScope);
    }
    Ok(names.join(" "))
}

/// `POST /device/token`: `grant_type` (the device grant), `device_code`.
pub(crate) fn token(_: &State, device: &Device, request: &Request) -> Result<Response, Error> {
    let fields = Fields::parse(request, &["grant_type", "device_code", "client_id"])?;
    if fields.required("grant_type")? != DEVICE_GRANT {
        return Err(Error::UnsupportedGrantType);
    }
    let device_code = fields.required("device_code")?;
    match device.logins().poll(device_code, Instant::now()) {
        Poll::Answered(response) => Ok(response),
        Poll::Pending => Err(Error::AuthorizationPending),
        Poll::SlowDown => Err(Error::SlowDown),
        Poll::Expired => Err(Error::ExpiredToken),
        Poll::Denied => Err(Error::AccessDenied),
        Poll::Unknown => Err(Error::InvalidDeviceCode),
    }
}

/// `GET /device` and `POST /device`.
pub(crate) fn page(state: &State, device: &Device, request: &Request) -> Result<Response, Error> {
    if request.method == "POST" {
        return continue_to_spotify(state, device, request);
    }
    let Some(typed) = query_value(request, "user_code") else {
        return Ok(device.page(200, pages::enter_code(None)));
    };
    let found = match device.find_code(request, &typed) {
        Ok(found) => found,
        Err(refused) => return Ok(refused),
    };
    let login = found.and_then(|code| {
        let logins = device.logins();
        let login = logins.by_user_code(code, Instant::now())?;
        Some((code, login.app, login.scope.clone()))
    });
    let Some((code, app, scope)) = login else {
        return Ok(device.wrong_code(request));
    };
    let app = state.app(app);
    let scopes: Vec<&str> = scope
        .as_deref()
        .map(|s| s.split(' ').collect())
        .unwrap_or_default();
    let form_token = codes::secret(&device.rng)?;
    let html = pages::confirm(
        app.config.name.as_deref(),
        &app.config.client_id,
        &scopes,
        &code.to_string(),
        &form_token,
    );
    let cookie = device.cookie(
        FORM_COOKIE,
        &form_token,
        DEVICE_PAGE_PATH,
        "Strict",
        LIFETIME_SECS,
    );
    Ok(device.page(200, html).with_header("Set-Cookie", cookie))
}

/// `POST /device`: Continue. `303` to Spotify's authorize page.
fn continue_to_spotify(
    state: &State,
    device: &Device,
    request: &Request,
) -> Result<Response, Error> {
    let fields = Fields::parse(request, &["user_code", "form_token"])?;
    // SECURITY: the form's token must match the SameSite=Strict cookie set
    // with the page, which a browser never sends on a POST from another
    // site: only a person who saw this server's page continues. (Origin is
    // no help: under the page's no-referrer policy Chromium sends
    // `Origin: null` for this server's own form too.)
    let cookie = cookie_value(request, FORM_COOKIE);
    let form_ok = match (cookie, fields.optional("form_token")) {
        (Some(cookie), Some(field)) => codes::same_secret(cookie, field),
        _ => false,
    };
    if !form_ok {
        let html = pages::message(
            "Start again",
            "This page has expired or was not opened here. Open the address your device \
             shows and enter the code again.",
        );
        return Ok(device.page(400, html));
    }
    let typed = fields.required("user_code")?;
    let code = match device.find_code(request, typed) {
        Ok(Some(code)) => code,
        Ok(None) => return Ok(device.wrong_code(request)),
        Err(refused) => return Ok(refused),
    };
    let authorizing = Authorizing {
        state: codes::secret(&device.rng)?,
        verifier: codes::secret(&device.rng)?,
        binding: codes::secret(&device.rng)?,
    };
    let challenge = codes::challenge(&authorizing.verifier);
    let (oauth_state, binding) = (authorizing.state.clone(), authorizing.binding.clone());
    let Some((app, scope)) = device.logins().authorize(code, authorizing, Instant::now()) else {
        return Ok(device.wrong_code(request));
    };
    let client_id = &state.app(app).config.client_id;
    let location = device.authorize_url(client_id, scope.as_deref(), &oauth_state, &challenge);
    let cookie = device.cookie(
        BINDING_COOKIE,
        &binding,
        CALLBACK_PATH,
        "Lax",
        LIFETIME_SECS,
    );
    Ok(device
        .page(
            303,
            pages::message("Continue to Spotify", "Continuing to Spotify…"),
        )
        .with_header("Location", location)
        .with_header("Set-Cookie", cookie))
}

/// `GET /callback?code=…&state=…` or `?error=…&state=…`.
pub(crate) fn callback(
    state: &State,
    device: &Device,
    request: &Request,
) -> Result<Response, Error> {
    let Some(oauth_state) = query_value(request, "state") else {
        let html = pages::message(
            "Start again",
            "This address is incomplete. Start again on your device.",
        );
        return Ok(device.page(400, html));
    };
    let binding = cookie_value(request, BINDING_COOKIE);
    let found = device
        .logins()
        .callback(&oauth_state, binding, Instant::now());
    let callback = match found {
        Ok(callback) => callback,
        Err(CallbackRefused::Unknown) => {
            let html = pages::message(
                "Start again",
                "This sign-in is unknown, already finished or expired. Start again on your device.",
            );
            return Ok(device.page(400, html));
        }
        Err(CallbackRefused::OtherBrowser) => {
            let html = pages::message(
                "Use the same browser",
                "Finish the sign-in in the browser where you pressed Continue.",
            );
            return Ok(device.page(400, html));
        }
    };
    let forget = device.cookie(BINDING_COOKIE, "", CALLBACK_PATH, "Lax", 0);
    let code = query_value(request, "code").filter(|_| query_value(request, "error").is_none());
    let Some(code) = code else {
        device.logins().finish(&callback.device_code, None);
        let html = pages::message(
            "Sign-in declined",
            "Nothing was shared. Your device will say so.",
        );
        return Ok(device.page(200, html).with_header("Set-Cookie", forget));
    };
    let app = state.app(callback.app);
    let redirect_uri = device.public_url.callback();
    let answer = exchange::device_swap(state, app, &code, redirect_uri, &callback.verifier)
        .unwrap_or_else(|error| error.response());
    let signed_in = answer.status == 200;
    device.logins().finish(&callback.device_code, Some(answer));
    let html = if signed_in {
        pages::message("Signed in", "You are signed in. Return to your device.")
    } else {
        pages::message(
            "Sign-in failed",
            "Spotify did not complete the sign-in. Your device will say so; start again there.",
        )
    };
    let status = if signed_in { 200 } else { 502 };
    Ok(device.page(status, html).with_header("Set-Cookie", forget))
}

impl Device {
    /// Spotify's authorize page for one login: the app, the callback, the
    /// scopes (none: Spotify's default), `state` and the S256 challenge.
    fn authorize_url(
        &self,
        client_id: &str,
        scope: Option<&str>,
        state: &str,
        challenge: &str,
    ) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query
            .append_pair("client_id", client_id)
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", self.public_url.callback());
        if let Some(scope) = scope {
            query.append_pair("scope", scope);
        }
        query
            .append_pair("state", state)
            .append_pair("code_challenge", challenge)
            .append_pair("code_challenge_method", "S256");
        format!("{}/authorize?{}", self.accounts, query.finish())
    }

    /// A page with its headers.
    fn page(&self, status: u16, html: String) -> Response {
        pages::response(status, html, &self.accounts)
    }

    /// A cookie for `path`, kept `max_age_secs` (0: forget it).
    fn cookie(
        &self,
        name: &str,
        value: &str,
        path: &str,
        same_site: &str,
        max_age_secs: u64,
    ) -> String {
        let secure = if self.public_url.is_https() {
            "; Secure"
        } else {
            ""
        };
        format!(
            "{name}={value}; Path={path}; Max-Age={max_age_secs}; HttpOnly; SameSite={same_site}{secure}"
        )
    }

    /// The code `typed` names, if it can be one; `Err`: the page that
    /// refuses it 429, the client having entered too many wrong ones.
    fn find_code(&self, request: &Request, typed: &str) -> Result<Option<UserCode>, Response> {
        // SECURITY: asked before the code is judged, so a limited client
        // learns nothing about its guesses, right or wrong.
        if let Some(client) = request.client {
            if let Err(limited) = self.wrong_codes.allows(client) {
                let secs = limited.retry_after_secs;
                let html = pages::message(
                    "Too many wrong codes",
                    &format!("Too many wrong codes from this network. Try again in {secs} s."),
                );
                return Err(self
                    .page(429, html)
                    .with_header("Retry-After", secs.to_string()));
            }
        }
        Ok(UserCode::parse(typed))
    }

    /// The answer to a wrong code: the form again, saying so; the client's
    /// allowance of wrong codes shrinks.
    fn wrong_code(&self, request: &Request) -> Response {
        if let Some(client) = request.client {
            // The refusal, if any, comes with the next attempt.
            let _ = self.wrong_codes.check(client);
        }
        let html = pages::enter_code(Some(
            "That code is unknown or has expired. Check it on your device and try again.",
        ));
        self.page(400, html)
    }
}

/// The first value of `name` in the request's query.
fn query_value(request: &Request, name: &str) -> Option<String> {
    let query = request.query.as_deref()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// The value of cookie `name`.
fn cookie_value<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
    request
        .cookie
        .as_deref()?
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_names_separated_by_spaces() {
        assert_eq!(
            scope_list(" streaming  user-read-email ").unwrap(),
            "streaming user-read-email"
        );
        assert_eq!(scope_list(""), Ok(String::new()));
        for bad in ["a&b", "a\"b", "<x>", "a/b"] {
            assert_eq!(scope_list(bad), Err(Error::InvalidScope), "{bad}");
        }
        assert_eq!(scope_list(&"a".repeat(2000)), Err(Error::InvalidScope));
    }

    #[test]
    fn cookies_are_found_by_name() {
        let request = Request {
            cookie: Some("a=1; sts_login=xyz;b=2".into()),
            ..Request::default()
        };
        assert_eq!(cookie_value(&request, "sts_login"), Some("xyz"));
        assert_eq!(cookie_value(&request, "b"), Some("2"));
        assert_eq!(cookie_value(&request, "sts"), None);
    }
}
