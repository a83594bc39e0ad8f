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

use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The current certificate and key; swapped on reload.
pub struct CertStore {
    current: RwLock<Arc<CertifiedKey>>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // SECURITY: never format the signing key.
        f.write_str("CertStore([certificate and key])")
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

impl CertStore {
    /// Loads the certificate chain and key; any problem is a message naming
    /// the variable (`TLS_CERT_FILE`, `TLS_KEY_FILE`) and the file, never key
    /// material.
    pub(crate) fn load(cert: &Path, key: &Path) -> Result<CertStore, String> {
        Ok(CertStore {
            current: RwLock::new(Arc::new(load_certified_key(cert, key)?)),
        })
    }

    /// Re-reads the files; on error the old certificate stays in use.
    pub(crate) fn reload(&self, cert: &Path, key: &Path) -> Result<(), String> {
        let fresh = Arc::new(load_certified_key(cert, key)?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }
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
/// ALPN `http/1.1`.
pub(crate) fn server_config(store: Arc<CertStore>) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12]);
    // The ring provider supports both versions; this cannot fail.
    let Ok(builder) = builder else {
        unreachable!("ring supports TLS 1.2 and 1.3");
    };
    let mut config = builder.with_no_client_auth().with_cert_resolver(store);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}
