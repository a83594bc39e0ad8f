//! Automatic certificates (`ACME_DOMAINS`): the server gets one certificate
//! for all its names from an ACME CA (RFC 8555), proving each name with
//! `tls-alpn-01` (RFC 8737) on its own TLS listener, and renews it when a
//! third of its lifetime is left, swapping it in [`CertStore`] without a
//! restart.
//!
//! [`start`] opens the state directory and serves the stored certificate
//! if it is still good; [`Manager::run`], on a thread of its own, issues
//! and renews, and retries failures with back-off (doubling from
//! [`FIRST_RETRY`] to [`LAST_RETRY`], or what the CA's `Retry-After`
//! says). Everything is synchronous, over `ureq`.
//!
//! - `wire.rs`: the directory, nonces and signed requests;
//! - `jws.rs`: the account key and JWS;
//! - `order.rs`: one issuance, account to chain;
//! - `certgen.rs`: the CSR and the challenge certificate (rcgen);
//! - `storage.rs`: the state directory;
//! - `x509.rs`: a certificate's dates and names;
//! - `error.rs`: why an attempt failed.

mod certgen;
mod error;
mod jws;
mod order;
mod storage;
mod wire;
mod x509;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::sleep;
use std::time::Duration;

pub(crate) use storage::certificate_file;

use crate::config::AcmeConfig;
use crate::metrics::CertificateMetrics;
use crate::tls::{self, CertStore};
use order::Issued;
use storage::Storage;
use x509::{Facts, now_unix_secs, rfc3339};

/// The first wait after a failed attempt; each further failure doubles it.
const FIRST_RETRY: Duration = Duration::from_secs(10);
/// The longest wait between attempts.
const LAST_RETRY: Duration = Duration::from_secs(3600);
/// The longest sleep while waiting for the renewal time, so a clock that
/// jumped (a Pi without a real-time clock sets it from the network after
/// boot) is noticed within this.
const LONGEST_SLEEP: Duration = Duration::from_secs(600);

/// Issues and renews the certificate.
pub(crate) struct Manager {
    settings: AcmeConfig,
    storage: Storage,
    store: Arc<CertStore>,
    metrics: Arc<CertificateMetrics>,
    /// The certificate served now, if any.
    current: Option<Facts>,
}

/// Opens the state directory (`Err`: a configuration problem, named by
/// `ACME_STATE_DIR`) and puts the stored certificate in a new store when it
/// is still good for every name.
pub(crate) fn start(settings: &AcmeConfig) -> Result<Arc<CertStore>, String> {
    let storage = Storage::open(&settings.state_dir, &settings.directory_url)?;
    let store = Arc::new(CertStore::empty());
    match storage.certificate() {
        Ok(Some((chain, key))) => stored(settings, chain, key, &store),
        Ok(None) => {}
        Err(why) => log::warn!("ACME: {why}; ordering a new certificate"),
    }
    Ok(store)
}

/// A stored chain and key, installed if good: readable, for every name,
/// not expired, the key its own.
fn stored(
    settings: &AcmeConfig,
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: Vec<u8>,
    store: &CertStore,
) {
    let Some(facts) = chain.first().and_then(|leaf| x509::facts(leaf)) else {
        log::warn!("ACME: the stored certificate cannot be read; ordering one");
        return;
    };
    let names = settings.domains.join(",");
    if !facts.covers(&settings.domains) {
        log::info!("ACME: the stored certificate does not name every one of {names}; ordering one");
        return;
    }
    if facts.not_after <= now_unix_secs() {
        log::info!("ACME: the stored certificate for {names} has expired; ordering one");
        return;
    }
    match tls::certified_key(chain, key) {
        Ok(key) => store.install(key),
        Err(why) => {
            log::warn!("ACME: the stored certificate: {why}; ordering one");
            return;
        }
    }
    log::info!(
        "ACME: serving the stored certificate for {names}, valid until {}, renewal from {}",
        rfc3339(facts.not_after),
        rfc3339(facts.renew_at())
    );
}

impl Manager {
    /// The manager of `store`, which [`start`] made.
    pub(crate) fn new(
        settings: AcmeConfig,
        store: Arc<CertStore>,
        metrics: Arc<CertificateMetrics>,
    ) -> Result<Manager, String> {
        let storage = Storage::open(&settings.state_dir, &settings.directory_url)?;
        let current = store
            .current_certificate()
            .and_then(|leaf| x509::facts(&leaf));
        if let Some(facts) = &current {
            metrics
                .expiry_unix_secs
                .store(facts.not_after, Ordering::Relaxed);
        }
        Ok(Manager {
            settings,
            storage,
            store,
            metrics,
            current,
        })
    }

    /// Issues, renews and retries, for as long as the process runs.
    pub(crate) fn run(mut self) {
        let mut failures: u32 = 0;
        loop {
            let due = self.current.as_ref().map_or(0, Facts::renew_at);
            let now = now_unix_secs();
            if now < due {
                sleep(Duration::from_secs(due - now).min(LONGEST_SLEEP));
                continue;
            }
            match self.attempt() {
                Ok(()) => failures = 0,
                Err(retry) => {
                    failures = failures.saturating_add(1);
                    sleep(retry.unwrap_or_else(|| back_off(failures)));
                }
            }
        }
    }

    /// One issuance, installed and stored; `Err`: the CA's `Retry-After`,
    /// if any. Failures are logged and counted here.
    fn attempt(&mut self) -> Result<(), Option<Duration>> {
        let names = self.settings.domains.join(",");
        let renewing = self.current.is_some();
        log::info!(
            "ACME: {} the certificate for {names} from {}",
            if renewing { "renewing" } else { "getting" },
            self.settings.directory_url
        );
        let metrics = Arc::clone(&self.metrics);
        let failed = |e: &dyn std::fmt::Display| {
            metrics.acme_failures.fetch_add(1, Ordering::Relaxed);
            log::warn!("ACME: no certificate for {names}: {e}; trying again with back-off");
        };
        let issued = match order::issue(&self.settings, &self.storage, &self.store) {
            Ok(issued) => issued,
            Err(e) => {
                failed(&e);
                return Err(e.retry_after());
            }
        };
        if let Err(why) = self.install(issued) {
            failed(&why);
            return Err(None);
        }
        Ok(())
    }

    /// Serves `issued` from the next handshake on, and stores it.
    fn install(&mut self, issued: Issued) -> Result<(), String> {
        let Issued {
            chain_pem,
            chain,
            key_pkcs8,
            facts,
        } = issued;
        let key = tls::certified_key(chain, key_pkcs8.clone())
            .map_err(|why| format!("the issued certificate: {why}"))?;
        self.store.install(key);
        self.metrics
            .expiry_unix_secs
            .store(facts.not_after, Ordering::Relaxed);
        log::info!(
            "ACME: now serving a certificate for {}, valid until {}, renewal from {}",
            self.settings.domains.join(","),
            rfc3339(facts.not_after),
            rfc3339(facts.renew_at())
        );
        self.current = Some(facts);
        // Served even if it cannot be stored: the next start orders again.
        self.storage.save_certificate(&chain_pem, &key_pkcs8)
    }
}

/// The wait after `failures` failed attempts in a row.
fn back_off(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (FIRST_RETRY * 2u32.pow(doublings)).min(LAST_RETRY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_from_ten_seconds_to_an_hour() {
        let waits: Vec<u64> = (1..=11).map(|n| back_off(n).as_secs()).collect();
        assert_eq!(
            waits,
            [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]
        );
        assert_eq!(back_off(u32::MAX), LAST_RETRY);
    }
}
