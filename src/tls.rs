//! Built-in HTTPS: certificate loading, hot reload, and the rustls server
//! configuration the HTTP layer runs its TLS connections with.
//!
//! Uses the rustls that ureq already links (ring provider), so there is no
//! second TLS stack. The certificate and key live behind a [`CertStore`]
//! that `SIGHUP` can swap: new handshakes use the new certificate, and
//! established connections are untouched (certbot/acme.sh renewals). The
//! handshake itself runs on workers in short non-blocking steps
//! (`http/transport.rs`), under a deadline the poller enforces
//! (`HANDSHAKE_TIMEOUT` in `http/limits.rs`).
//!
//! With `ACME_DOMAINS` the store starts empty (handshakes fail until the
//! first certificate is issued: rustls answers with an alert), `acme/`
//! installs each certificate it gets, and while the CA validates a name it
//! holds that name's `tls-alpn-01` certificate (RFC 8737), served only to a
//! client that offers the `acme-tls/1` protocol and nothing else.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The ALPN protocol of `tls-alpn-01` validation (RFC 8737 §6.2).
pub(crate) const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The current certificate and key; swapped on reload.
pub struct CertStore {
    /// `None` until ACME has issued the first certificate.
    current: RwLock<Option<Arc<CertifiedKey>>>,
    /// `tls-alpn-01` certificates by DNS name (lower-case), while the CA
    /// validates that name.
    challenges: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // SECURITY: never format the signing key.
        f.write_str("CertStore([certificate and key])")
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // RFC 8737 §3: the validation offers exactly `acme-tls/1`; a
        // client that offers it gets the challenge certificate or nothing.
        let mut alpn = hello.alpn().into_iter().flatten();
        if alpn.any(|protocol| protocol == ACME_TLS_ALPN) {
            let name = hello.server_name()?.to_ascii_lowercase();
            let challenges = self.challenges.read().unwrap_or_else(|e| e.into_inner());
            return challenges.get(&name).cloned();
        }
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl CertStore {
    /// Loads the certificate chain and key; any problem is a message naming
    /// the variable (`TLS_CERT_FILE`, `TLS_KEY_FILE`) and the file, never key
    /// material.
    pub(crate) fn load(cert: &Path, key: &Path) -> Result<CertStore, String> {
        let store = CertStore::empty();
        store.install(load_certified_key(cert, key)?);
        Ok(store)
    }

    /// A store with no certificate yet: every handshake fails until one is
    /// installed.
    pub(crate) fn empty() -> CertStore {
        CertStore {
            current: RwLock::new(None),
            challenges: RwLock::new(HashMap::new()),
        }
    }

    /// Serves `key` from the next handshake on; established connections
    /// keep theirs.
    pub(crate) fn install(&self, key: CertifiedKey) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(key));
    }

    /// The certificate served now (end entity), if any.
    pub(crate) fn current_certificate(&self) -> Option<CertificateDer<'static>> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        current.as_ref().and_then(|key| key.cert.first().cloned())
    }

    /// Answers `tls-alpn-01` for `domain` with `key` (`None`: stops).
    pub(crate) fn set_challenge(&self, domain: &str, key: Option<CertifiedKey>) {
        let mut challenges = self.challenges.write().unwrap_or_else(|e| e.into_inner());
        match key {
            Some(key) => challenges.insert(domain.to_ascii_lowercase(), Arc::new(key)),
            None => challenges.remove(&domain.to_ascii_lowercase()),
        };
    }

    /// Re-reads the files; on error the old certificate stays in use.
    pub(crate) fn reload(&self, cert: &Path, key: &Path) -> Result<(), String> {
        self.install(load_certified_key(cert, key)?);
        Ok(())
    }
}

/// A chain and its PKCS#8 key (DER) as rustls serves them; `Err` when the
/// key is unusable or does not belong to the chain's first certificate.
pub(crate) fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key_pkcs8: Vec<u8>,
) -> Result<CertifiedKey, String> {
    let key = PrivateKeyDer::Pkcs8(key_pkcs8.into());
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => "the key does not belong to the certificate".into(),
        other => format!("the key is not usable ({other})"),
    })
}

fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let chain = read_chain(cert)?;
    let key_der = read_key(key)?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key_der, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => format!(
            "TLS_KEY_FILE: the key in '{}' does not belong to the certificate in '{}'",
            key.display(),
            cert.display()
        ),
        _ => format!(
            "TLS_KEY_FILE: '{}' holds no usable private key",
            key.display()
        ),
    })
}

/// The certificate chain in the PEM file `path` (`TLS_CERT_FILE`), end
/// entity first.
pub(crate) fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path)
        .map_err(|e| format!("TLS_CERT_FILE: cannot read '{}': {e}", path.display()))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|_| format!("TLS_CERT_FILE: '{}' is not valid PEM", path.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "TLS_CERT_FILE: '{}' holds no certificate",
            path.display()
        ));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = std::fs::read(path)
        .map_err(|e| format!("TLS_KEY_FILE: cannot read '{}': {e}", path.display()))?;
    // PKCS#8, PKCS#1 (RSA) and SEC1 (EC) keys are all accepted.
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| {
        format!(
            "TLS_KEY_FILE: '{}' holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
            path.display()
        )
    })
}

/// The rustls server configuration around a [`CertStore`]: TLS 1.2 and 1.3,
/// ALPN `http/1.1`, and with `acme` also `acme-tls/1`.
pub(crate) fn server_config(store: Arc<CertStore>, acme: bool) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12]);
    // The ring provider supports both versions; this cannot fail.
    let Ok(builder) = builder else {
        unreachable!("ring supports TLS 1.2 and 1.3");
    };
    let mut config = builder.with_no_client_auth().with_cert_resolver(store);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    if acme {
        config.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
    }
    Arc::new(config)
}
