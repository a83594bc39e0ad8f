//! One issuance, start to end (RFC 8555 §7.3–7.4): the account (stored, or
//! registered agreeing to the CA's terms), a new order for every name, each
//! authorization proven with `tls-alpn-01` on our own listener, the CSR,
//! and the certificate chain. Polls honour `Retry-After` and give up after
//! [`ORDER_TIMEOUT`]; every step is logged at info.

use std::thread::sleep;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::certgen;
use super::error::Error;
use super::jws::{AccountKey, Signer};
use super::storage::Storage;
use super::wire::{Answer, PEM_CHAIN, Wire};
use super::x509::{self, Facts};
use crate::config::AcmeConfig;
use crate::tls::CertStore;

/// How long one order may take, from `newOrder` to the certificate.
const ORDER_TIMEOUT: Duration = Duration::from_secs(300);
/// Between two polls of an authorization or order when the CA names no
/// `Retry-After`.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// The challenge type answered (RFC 8737).
const TLS_ALPN_01: &str = "tls-alpn-01";

/// A certificate just issued.
pub(crate) struct Issued {
    /// The chain as the CA sent it (PEM), for storage.
    pub(crate) chain_pem: String,
    pub(crate) chain: Vec<CertificateDer<'static>>,
    /// SECURITY: the key; never logged.
    pub(crate) key_pkcs8: Vec<u8>,
    pub(crate) facts: Facts,
}

/// An order object (§7.1.3): only the fields used.
#[derive(Debug, Deserialize)]
struct Order {
    status: String,
    #[serde(default)]
    authorizations: Vec<String>,
    finalize: String,
    certificate: Option<String>,
    error: Option<Value>,
}

/// An authorization object (§7.1.4).
#[derive(Debug, Deserialize)]
struct Authorization {
    status: String,
    identifier: Identifier,
    #[serde(default)]
    challenges: Vec<Challenge>,
}

#[derive(Debug, Deserialize)]
struct Identifier {
    value: String,
}

/// A challenge object (§7.1.5, §8).
#[derive(Debug, Deserialize)]
struct Challenge {
    #[serde(rename = "type")]
    kind: String,
    url: String,
    #[serde(default)]
    token: String,
    error: Option<Value>,
}

/// A session with the CA under our account.
struct Session<'a> {
    wire: Wire,
    key: AccountKey,
    /// The account's URL (`kid`).
    account: String,
    store: &'a CertStore,
}

/// Gets a certificate for `settings.domains`, answering the challenges
/// through `store`. The account key and URL are kept in `storage`.
pub(crate) fn issue(
    settings: &AcmeConfig,
    storage: &Storage,
    store: &CertStore,
) -> Result<Issued, Error> {
    let mut wire = Wire::open(&settings.directory_url, &settings.roots)?;
    let key = account_key(storage)?;
    let account = match storage.account_url().map_err(Error::Local)? {
        Some(url) => url,
        None => register(&mut wire, &key, settings, storage)?,
    };
    let mut session = Session {
        wire,
        key,
        account,
        store,
    };
    match session.order(&settings.domains) {
        Err(e) if e.account_unknown() => {
            // The CA no longer knows the stored account (a test CA
            // restarted, or it was deactivated): register the key again.
            log::warn!(
                "ACME: the CA does not know account {}; registering again",
                session.account
            );
            storage.forget_account_url().map_err(Error::Local)?;
            session.account = register(&mut session.wire, &session.key, settings, storage)?;
            session.order(&settings.domains)
        }
        other => other,
    }
}

/// The stored account key, or a new one (stored before first use).
fn account_key(storage: &Storage) -> Result<AccountKey, Error> {
    if let Some(pkcs8) = storage.account_key().map_err(Error::Local)? {
        return AccountKey::from_pkcs8(&pkcs8).map_err(Error::Local);
    }
    let key = AccountKey::generate().map_err(Error::Local)?;
    storage
        .save_account_key(key.pkcs8())
        .map_err(Error::Local)?;
    log::info!("ACME: made a new account key ({})", key.thumbprint());
    Ok(key)
}

/// `newAccount` (§7.3), agreeing to the terms: the account's URL, stored.
fn register(
    wire: &mut Wire,
    key: &AccountKey,
    settings: &AcmeConfig,
    storage: &Storage,
) -> Result<String, Error> {
    let mut payload = json!({ "termsOfServiceAgreed": true });
    if let Some(email) = &settings.email {
        payload["contact"] = json!([format!("mailto:{email}")]);
    }
    let url = wire.directory.new_account.clone();
    let answer = wire.post(key, &Signer::Key, &url, Some(&payload))?;
    let account = answer.location()?;
    storage.save_account_url(&account).map_err(Error::Local)?;
    let terms = wire
        .directory
        .meta
        .terms_of_service
        .as_deref()
        .unwrap_or("(none named)");
    log::info!(
        "ACME: registered account {account} at {}, agreeing to its terms of service {terms}",
        settings.directory_url
    );
    Ok(account)
}

impl Session<'_> {
    /// `newOrder`, authorizations, finalization, download.
    fn order(&mut self, domains: &[String]) -> Result<Issued, Error> {
        let deadline = Instant::now() + ORDER_TIMEOUT;
        let identifiers: Vec<Value> = domains
            .iter()
            .map(|d| json!({ "type": "dns", "value": d }))
            .collect();
        let url = self.wire.directory.new_order.clone();
        let payload = json!({ "identifiers": identifiers });
        let answer = self.post(&url, Some(&payload))?;
        let order_url = answer.location()?;
        let order: Order = answer.json()?;
        log::info!(
            "ACME: ordered a certificate for {} ({order_url})",
            domains.join(",")
        );
        for authorization in &order.authorizations {
            self.authorize(authorization, deadline)?;
        }
        let order = self.poll_order(&order_url, deadline, &["ready", "valid"])?;
        let request = certgen::request(domains).map_err(Error::Local)?;
        let order = if order.status == "ready" {
            let csr = json!({ "csr": URL_SAFE_NO_PAD.encode(&request.csr) });
            self.post(&order.finalize, Some(&csr))?;
            self.poll_order(&order_url, deadline, &["valid"])?
        } else {
            // Valid already, finalized with a CSR of another key: unusable.
            return Err(unexpected(&order_url, "the new order is already valid"));
        };
        let certificate = order
            .certificate
            .ok_or_else(|| unexpected(&order_url, "a valid order without a certificate URL"))?;
        self.download(&certificate, domains, request.key_pkcs8)
    }

    /// Proves control of one authorization's name with `tls-alpn-01`.
    fn authorize(&mut self, url: &str, deadline: Instant) -> Result<(), Error> {
        let authorization: Authorization = self.post(url, None)?.json()?;
        let domain = authorization.identifier.value.to_ascii_lowercase();
        match authorization.status.as_str() {
            "valid" => {
                log::info!("ACME: {domain} is already validated");
                return Ok(());
            }
            "pending" => {}
            other => {
                return Err(Error::Invalid {
                    domain,
                    why: format!("the authorization is {other}"),
                });
            }
        }
        let challenge = authorization
            .challenges
            .iter()
            .find(|c| c.kind == TLS_ALPN_01)
            .ok_or_else(|| unexpected(url, &format!("no {TLS_ALPN_01} challenge for {domain}")))?;
        let key_authorization = format!("{}.{}", challenge.token, self.key.thumbprint());
        let certificate =
            certgen::challenge_certificate(&domain, &key_authorization).map_err(Error::Local)?;
        self.store.set_challenge(&domain, Some(certificate));
        let proven = self.prove(url, &challenge.url, &domain, deadline);
        self.store.set_challenge(&domain, None);
        proven
    }

    /// Tells the CA to validate, then waits for the authorization's end.
    fn prove(
        &mut self,
        url: &str,
        challenge_url: &str,
        domain: &str,
        deadline: Instant,
    ) -> Result<(), Error> {
        log::info!("ACME: asking the CA to validate {domain} ({TLS_ALPN_01} on this listener)");
        self.post(challenge_url, Some(&json!({})))?;
        loop {
            let answer = self.post(url, None)?;
            let authorization: Authorization = answer.json()?;
            match authorization.status.as_str() {
                "valid" => {
                    log::info!("ACME: {domain} validated");
                    return Ok(());
                }
                "pending" => wait(&answer, deadline, &format!("the validation of {domain}"))?,
                other => {
                    let why = authorization
                        .challenges
                        .iter()
                        .find(|c| c.kind == TLS_ALPN_01)
                        .and_then(|c| c.error.as_ref())
                        .map_or_else(|| format!("the authorization is {other}"), problem);
                    return Err(Error::Invalid {
                        domain: domain.to_string(),
                        why,
                    });
                }
            }
        }
    }

    /// Polls the order until its status is one of `wanted`.
    fn poll_order(
        &mut self,
        url: &str,
        deadline: Instant,
        wanted: &[&str],
    ) -> Result<Order, Error> {
        loop {
            let answer = self.post(url, None)?;
            let order: Order = answer.json()?;
            if wanted.contains(&order.status.as_str()) {
                return Ok(order);
            }
            if order.status != "pending" && order.status != "processing" {
                let why = order
                    .error
                    .as_ref()
                    .map_or_else(String::new, |e| format!(": {}", problem(e)));
                return Err(unexpected(
                    url,
                    &format!("the order is {}{why}", order.status),
                ));
            }
            wait(&answer, deadline, "the order")?;
        }
    }

    /// The chain (§7.4.2), checked against the key and the names.
    fn download(
        &mut self,
        url: &str,
        domains: &[String],
        key_pkcs8: Vec<u8>,
    ) -> Result<Issued, Error> {
        let (key, account) = (&self.key, Signer::Account(&self.account));
        let answer = self
            .wire
            .post_accepting(key, &account, url, None, PEM_CHAIN)?;
        let chain_pem = String::from_utf8(answer.body)
            .map_err(|_| unexpected(url, "the certificate chain is not text"))?;
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(chain_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|_| unexpected(url, "the certificate chain is not PEM"))?;
        let facts = chain
            .first()
            .and_then(|leaf| x509::facts(leaf))
            .ok_or_else(|| unexpected(url, "no certificate this server can read"))?;
        if !facts.covers(domains) {
            return Err(unexpected(
                url,
                "the certificate does not name every domain",
            ));
        }
        Ok(Issued {
            chain_pem,
            chain,
            key_pkcs8,
            facts,
        })
    }

    /// A signed request under the account.
    fn post(&mut self, url: &str, payload: Option<&Value>) -> Result<Answer, Error> {
        let signer = Signer::Account(&self.account);
        self.wire.post(&self.key, &signer, url, payload)
    }
}

/// Sleeps what the CA's `Retry-After` says (else [`POLL_INTERVAL`]), or
/// gives up on `what` at `deadline`.
fn wait(answer: &Answer, deadline: Instant, what: &str) -> Result<(), Error> {
    let pause = answer
        .retry_after
        .unwrap_or(POLL_INTERVAL)
        .max(POLL_INTERVAL);
    if Instant::now() + pause > deadline {
        return Err(Error::TimedOut {
            what: what.to_string(),
        });
    }
    sleep(pause);
    Ok(())
}

/// A problem document (§6.7) as one line: its `detail`, else its `type`.
fn problem(document: &Value) -> String {
    let field = |name| document.get(name).and_then(Value::as_str);
    field("detail")
        .or_else(|| field("type"))
        .unwrap_or("no detail given")
        .to_string()
}

fn unexpected(url: &str, what: &str) -> Error {
    Error::Unexpected {
        url: url.to_string(),
        what: what.to_string(),
    }
}
