//! One Spotify app as the accounts service sees it: its credentials — the
//! `Authorization: Basic …` value, built once and again only when `SIGHUP`
//! brings a new secret — and the back-off window a Spotify 429 opened for
//! its client id. Spotify counts requests, and throttles, per client id, so
//! one app's 429 does not hold back the others; the agent and its
//! connections are shared by every app ([`super::Client`]): one host.

use std::sync::{Arc, RwLock};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::answer::Backoff;
use crate::secret::Secret;

/// One app's credentials and back-off window.
pub(crate) struct Account {
    /// `Basic base64(id:secret)`; replaced when SIGHUP brings a new secret.
    basic_auth: RwLock<Arc<Secret>>,
    /// Open after Spotify answered this app 429, until its `Retry-After`
    /// passes.
    pub(super) backoff: Backoff,
}

impl Account {
    /// Builds the `Authorization` value once.
    pub(crate) fn new(client_id: &str, client_secret: &Secret) -> Account {
        Account {
            basic_auth: RwLock::new(Arc::new(basic_auth(client_id, client_secret))),
            backoff: Backoff::default(),
        }
    }

    /// Uses a new client secret from now on (SIGHUP).
    pub(crate) fn set_client_secret(&self, client_id: &str, secret: &Secret) {
        *self.basic_auth.write().unwrap_or_else(|e| e.into_inner()) =
            Arc::new(basic_auth(client_id, secret));
    }

    /// The `Authorization` value in use.
    pub(super) fn authorization(&self) -> Arc<Secret> {
        Arc::clone(&self.basic_auth.read().unwrap_or_else(|e| e.into_inner()))
    }
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("basic_auth", &"[redacted]")
            .field("backoff", &self.backoff)
            .finish()
    }
}

/// The `Authorization` value for the token endpoint.
fn basic_auth(client_id: &str, secret: &Secret) -> Secret {
    let credentials = format!("{client_id}:{}", secret.expose());
    Secret::new(format!("Basic {}", STANDARD.encode(credentials)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authorization_is_basic_of_id_and_secret_and_follows_a_new_secret() {
        let account = Account::new("cid", &Secret::new("one"));
        assert_eq!(account.authorization().expose(), "Basic Y2lkOm9uZQ==");
        account.set_client_secret("cid", &Secret::new("two"));
        assert_eq!(account.authorization().expose(), "Basic Y2lkOnR3bw==");
        assert!(!format!("{account:?}").contains("Y2lk"));
    }
}
