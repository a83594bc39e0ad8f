//! Automatic certificates (`ACME_DOMAINS`): the server gets one certificate
//! for all its names from an ACME CA (RFC 8555), proving each name with
//! `tls-alpn-01` (RFC 8737) on its own TLS listener, and renews it when a
//! third of its lifetime is left, or earlier when the CA's renewal
//! information (RFC 9773) says so, swapping it in [`CertStore`] without a
//! restart.
//!
//! [`start`] opens the state directory and serves the stored certificate
//! if it is still good; [`Manager::run`], on a thread of its own, issues
//! and renews, and retries failures with back-off (doubling from
//! [`FIRST_RETRY`] to [`LAST_RETRY`], or what the CA's `Retry-After`
//! says). Everything is synchronous, over `ureq`.
//!
//! - `wire.rs`: the directory, nonces and signed requests;
//! - `ari.rs`: the CA's renewal information;
//! - `jws.rs`: the account key and JWS;
//! - `order.rs`: one issuance, account to chain;
//! - `certgen.rs`: the CSR and the challenge certificate (rcgen);
//! - `storage.rs`: the state directory;
//! - `x509.rs`: a certificate's dates and names;
//! - `error.rs`: why an attempt failed.

mod ari;
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
use wire::Wire;
use x509::{Facts, now_unix_secs, rfc3339};

/// The first wait after a failed attempt; each further failure doubles it.
const FIRST_RETRY: Duration = Duration::from_secs(10);
/// The longest wait between attempts.
const LAST_RETRY: Duration = Duration::from_secs(3600);
/// The longest sleep while waiting for the renewal time, so a clock that
/// jumped (a Pi without a real-time clock sets it from the network after
/// boot) is noticed within this.
const LONGEST_SLEEP: Duration = Duration::from_secs(600);
/// The wait before asking for renewal information again after the CA
/// could not give it.
const ARI_RETRY_SECS: u64 = 3600;

/// Issues and renews the certificate.
pub(crate) struct Manager {
    settings: AcmeConfig,
    storage: Storage,
    store: Arc<CertStore>,
    metrics: Arc<CertificateMetrics>,
    /// The certificate served now, if any.
    current: Option<Facts>,
    /// The CA's suggested window for it, and the time picked in it.
    suggested: Option<((u64, u64), u64)>,
    /// When to ask for renewal information next (Unix seconds;
    /// `u64::MAX`: not for this certificate).
    next_ari_check: u64,
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
            suggested: None,
            next_ari_check: 0,
        })
    }

    /// When the certificate is to be renewed: now without one; else our
    /// third of its lifetime, or the CA's time if that is earlier.
    fn due(&self) -> u64 {
        let Some(facts) = &self.current else {
            return 0;
        };
        let own = facts.renew_at();
        self.suggested.map_or(own, |(_, at)| at.min(own))
    }

    /// Asks the CA's renewal information about the current certificate
    /// (only if its directory offers it) and keeps a time in the window.
    fn check_renewal_info(&mut self, now: u64) {
        let Some(id) = self.current.as_ref().and_then(|f| f.ari_id.clone()) else {
            self.next_ari_check = u64::MAX;
            return;
        };
        let settings = &self.settings;
        let asked = Wire::open(&settings.directory_url, &settings.roots)
            .and_then(|wire| ari::ask(&wire, &id));
        let suggestion = match asked {
            Ok(Some(suggestion)) => suggestion,
            Ok(None) => {
                self.next_ari_check = u64::MAX;
                return;
            }
            Err(e) => {
                log::info!("ACME: no renewal information from the CA ({e}); asking again later");
                self.next_ari_check = now + ARI_RETRY_SECS;
                return;
            }
        };
        self.next_ari_check = now.saturating_add(suggestion.check_again.as_secs());
        let window = (suggestion.start, suggestion.end);
        if self.suggested.is_some_and(|(known, _)| known == window) {
            return;
        }
        let at = suggestion.pick(random_u64());
        self.suggested = Some((window, at));
        if self.current.as_ref().is_some_and(|f| at < f.renew_at()) {
            let why = suggestion
                .explanation
                .map(|url| format!(" ({url})"))
                .unwrap_or_default();
            log::info!(
                "ACME: the CA suggests renewing between {} and {}{why}; renewing from {}",
                rfc3339(window.0),
                rfc3339(window.1),
                rfc3339(at)
            );
        }
    }

    /// Issues, renews and retries, for as long as the process runs.
    pub(crate) fn run(mut self) {
        let mut failures: u32 = 0;
        loop {
            let now = now_unix_secs();
            if self.current.is_some() && now >= self.next_ari_check {
                self.check_renewal_info(now);
            }
            let due = self.due();
            if now < due {
                let until_check = self.next_ari_check.saturating_sub(now).max(1);
                sleep(Duration::from_secs((due - now).min(until_check)).min(LONGEST_SLEEP));
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

    /// Stores `issued`, then serves it from the next handshake on: once a
    /// client has seen the certificate, a restart finds it on disk.
    fn install(&mut self, issued: Issued) -> Result<(), String> {
        let Issued {
            chain_pem,
            chain,
            key_pkcs8,
            facts,
        } = issued;
        let key = tls::certified_key(chain, key_pkcs8.clone())
            .map_err(|why| format!("the issued certificate: {why}"))?;
        // Served even if it cannot be stored: the next start orders again.
        let stored = self.storage.save_certificate(&chain_pem, &key_pkcs8);
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
        (self.suggested, self.next_ari_check) = (None, 0);
        stored
    }
}

/// 64 random bits (0 if the system's generator fails: the window's start).
fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    match ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => 0,
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
    fn the_cas_window_brings_renewal_forward_never_back() {
        let state_dir = std::env::temp_dir().join(format!("sts-acme-due-{}", std::process::id()));
        let settings = AcmeConfig {
            domains: vec!["a.example".into()],
            directory_url: "https://ca.example/dir".into(),
            email: None,
            ca_file: None,
            roots: Vec::new(),
            state_dir: state_dir.clone(),
        };
        let store = Arc::new(CertStore::empty());
        let mut manager = Manager::new(settings, store, Arc::default()).unwrap();
        assert_eq!(manager.due(), 0, "no certificate: now");
        manager.current = Some(Facts {
            not_before: 0,
            not_after: 90_000,
            dns_names: Vec::new(),
            ari_id: None,
        });
        assert_eq!(manager.due(), 60_000);
        manager.suggested = Some(((10_000, 20_000), 15_000));
        assert_eq!(manager.due(), 15_000);
        manager.suggested = Some(((80_000, 85_000), 82_000));
        assert_eq!(manager.due(), 60_000);
        // A certificate without an authority key identifier is never asked
        // about (nothing is dialled: the CA here does not exist).
        manager.check_renewal_info(1);
        assert_eq!(manager.next_ari_check, u64::MAX);
        std::fs::remove_dir_all(state_dir).unwrap();
    }

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
