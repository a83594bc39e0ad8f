//! Talking to the CA: its directory, nonces, and signed requests (RFC 8555
//! §6–7.2), over a `ureq` agent of its own that trusts `ACME_CA_FILE`'s
//! roots when set, else the built-in (Mozilla) ones.
//!
//! Every request but the directory and the nonce is a JWS `POST` carrying
//! a fresh nonce; the nonce comes from the previous answer's
//! `Replay-Nonce` or, with none in hand, from `newNonce`. A `badNonce`
//! refusal is sent again at once with the nonce it carried (§6.5): CAs
//! reject nonces at will, pebble 5 % of them on purpose.

use std::time::{Duration, SystemTime};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use ureq::Agent;
use ureq::http::Response;

use super::error::{BAD_NONCE, Error};
use super::jws::{AccountKey, Signer};
use crate::upstream::date::parse_retry_after;
use crate::upstream::tls_config;

/// Whole-request limit for one call to the CA.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer read from the CA: JSON objects of a few hundred
/// bytes, a certificate chain of a few KiB.
const MAX_ANSWER_BYTES: u64 = 64 * 1024;
/// Sends of one request with a fresh nonce after `badNonce`. Pebble
/// rejects 5 % of nonces: eight in a row is a chance of 4·10⁻¹¹.
const MAX_NONCE_TRIES: usize = 8;
/// The longest `Retry-After` honoured (an hour); a longer one is cut to it.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// The media type of every signed request (RFC 8555 §6.2).
const JOSE_JSON: &str = "application/jose+json";
/// What a certificate is asked for as (RFC 8555 §7.4.2).
pub(crate) const PEM_CHAIN: &str = "application/pem-certificate-chain";

/// The directory's URLs (RFC 8555 §7.1.1).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Directory {
    pub(crate) new_nonce: String,
    pub(crate) new_account: String,
    pub(crate) new_order: String,
    /// Where renewal information is asked (RFC 9773), if the CA offers it.
    #[serde(default)]
    pub(crate) renewal_info: Option<String>,
    #[serde(default)]
    pub(crate) meta: Meta,
}

/// The directory's `meta` object: only what is logged.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Meta {
    pub(crate) terms_of_service: Option<String>,
}

/// An answer: status, the headers ACME uses, the body.
pub(crate) struct Answer {
    pub(crate) url: String,
    pub(crate) status: u16,
    pub(crate) location: Option<String>,
    pub(crate) retry_after: Option<Duration>,
    pub(crate) body: Vec<u8>,
}

impl Answer {
    /// The body as `T`, or what is wrong with it.
    pub(crate) fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|e| Error::Unexpected {
            url: self.url.clone(),
            what: format!("not the JSON expected ({e})"),
        })
    }

    /// The `Location` header, which names what was made.
    pub(crate) fn location(&self) -> Result<String, Error> {
        self.location.clone().ok_or_else(|| Error::Unexpected {
            url: self.url.clone(),
            what: "no Location header".into(),
        })
    }

    /// An error status as [`Error::Refused`], with the problem document's
    /// `type` and `detail` when the body is one.
    fn refusal(&self) -> Error {
        let problem: Value = serde_json::from_slice(&self.body).unwrap_or(Value::Null);
        let field = |name: &str| {
            problem
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Error::Refused {
            url: self.url.clone(),
            status: self.status,
            kind: field("type"),
            detail: field("detail"),
            retry_after: self.retry_after,
        }
    }
}

/// A session with one CA: its agent, its directory and the nonce in hand.
pub(crate) struct Wire {
    agent: Agent,
    pub(crate) directory: Directory,
    nonce: Option<String>,
}

impl Wire {
    /// Fetches the directory at `url` through an agent trusting `roots`
    /// (DER; none: the built-in roots).
    pub(crate) fn open(url: &str, roots: &[Vec<u8>]) -> Result<Wire, Error> {
        let agent = agent(roots);
        let answer = read(url, agent.get(url).call())?;
        if answer.status != 200 {
            return Err(answer.refusal());
        }
        Ok(Wire {
            directory: answer.json()?,
            agent,
            nonce: None,
        })
    }

    /// `payload` (`None`: POST-as-GET) signed for `url`; a 2xx answer, or
    /// the refusal. `badNonce` is sent again with the nonce it carried.
    pub(crate) fn post(
        &mut self,
        key: &AccountKey,
        signer: &Signer<'_>,
        url: &str,
        payload: Option<&Value>,
    ) -> Result<Answer, Error> {
        self.post_accepting(key, signer, url, payload, "application/json")
    }

    /// [`Wire::post`] asking for the media type `accept`.
    pub(crate) fn post_accepting(
        &mut self,
        key: &AccountKey,
        signer: &Signer<'_>,
        url: &str,
        payload: Option<&Value>,
        accept: &str,
    ) -> Result<Answer, Error> {
        let mut tries = 0;
        loop {
            tries += 1;
            let nonce = match self.nonce.take() {
                Some(nonce) => nonce,
                None => self.fresh_nonce()?,
            };
            let body = key
                .sign(signer, &nonce, url, payload)
                .map_err(Error::Local)?;
            let sent = self
                .agent
                .post(url)
                .content_type(JOSE_JSON)
                .header("Accept", accept)
                .send(&body[..]);
            let (answer, nonce) = read_with_nonce(url, sent)?;
            self.nonce = nonce;
            if (200..300).contains(&answer.status) {
                return Ok(answer);
            }
            let refusal = answer.refusal();
            let bad_nonce = matches!(&refusal, Error::Refused { kind, .. } if kind == BAD_NONCE);
            if !bad_nonce || tries >= MAX_NONCE_TRIES {
                return Err(refusal);
            }
            log::debug!("ACME: {url} refused the nonce (badNonce); sending again with a new one");
        }
    }

    /// An unauthenticated `GET` (renewal information): a `200` answer, or
    /// the refusal.
    pub(crate) fn get(&self, url: &str) -> Result<Answer, Error> {
        let answer = read(url, self.agent.get(url).call())?;
        if answer.status != 200 {
            return Err(answer.refusal());
        }
        Ok(answer)
    }

    /// A nonce from `newNonce` (RFC 8555 §7.2).
    fn fresh_nonce(&mut self) -> Result<String, Error> {
        let url = self.directory.new_nonce.clone();
        let (answer, nonce) = read_with_nonce(&url, self.agent.head(&url).call())?;
        if !(200..300).contains(&answer.status) {
            return Err(answer.refusal());
        }
        nonce.ok_or_else(|| Error::Unexpected {
            url,
            what: "no Replay-Nonce header".into(),
        })
    }
}

/// The agent: its own, so the CA's roots and timeouts are its own; no
/// redirects; no proxy from the environment.
fn agent(roots: &[Vec<u8>]) -> Agent {
    let config = Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(REQUEST_TIMEOUT))
        .max_redirects(0)
        .user_agent(concat!("spotify-token-swap/", env!("CARGO_PKG_VERSION")))
        .tls_config(tls_config(roots))
        // SECURITY: as for the calls to Spotify, proxy variables in the
        // environment must not reroute the account's requests.
        .proxy(None)
        .build();
    Agent::new_with_config(config)
}

/// Reads an answer whole (up to [`MAX_ANSWER_BYTES`]), and its nonce.
fn read_with_nonce(
    url: &str,
    sent: Result<Response<ureq::Body>, ureq::Error>,
) -> Result<(Answer, Option<String>), Error> {
    let mut response = sent.map_err(|e| Error::Transport {
        url: url.to_string(),
        why: e.to_string(),
    })?;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let nonce = header("Replay-Nonce");
    let location = header("Location");
    let retry_after = header("Retry-After")
        .and_then(|v| parse_retry_after(&v, SystemTime::now()))
        .map(|secs| Duration::from_secs(secs).min(MAX_RETRY_AFTER));
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER_BYTES)
        .read_to_vec()
        .map_err(|e| Error::Transport {
            url: url.to_string(),
            why: format!("reading the answer: {e}"),
        })?;
    let answer = Answer {
        url: url.to_string(),
        status,
        location,
        retry_after,
        body,
    };
    Ok((answer, nonce))
}

/// [`read_with_nonce`] without the nonce.
fn read(url: &str, sent: Result<Response<ureq::Body>, ureq::Error>) -> Result<Answer, Error> {
    read_with_nonce(url, sent).map(|(answer, _)| answer)
}
