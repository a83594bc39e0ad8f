//! Device login (RFC 8628 on top of Spotify's Authorization Code flow with
//! PKCE): a Pi, a TV or a terminal asks for a code (`POST /device/code`),
//! a person enters it on a phone (`/device`), continues to Spotify, comes
//! back to `/callback`, where the server swaps the code; the device's polls
//! (`POST /device/token`) then get the tokens, once. On only with
//! `PUBLIC_URL`.
//!
//! `codes.rs` makes the codes and secrets, `table.rs` holds the pending
//! logins and their rules, `flow.rs` answers the four paths, and
//! `src/pages/` writes the HTML.
//!
//! The pending logins live in this process's memory: the one place an
//! instance is not interchangeable (docs/design.md, "Device login").

mod codes;
pub(crate) mod flow;
mod table;

use std::sync::{Mutex, MutexGuard};

use ring::rand::SystemRandom;

use crate::config::{Config, PublicUrl};
use crate::ratelimit::RateLimiter;

/// Wrong user codes a client may enter per minute (with a burst of 10):
/// 20^8 codes, so guessing one of 1,000 pending logins takes about
/// 2.5 · 10^7 minutes from one client.
pub(crate) const WRONG_CODES_PER_MINUTE: u32 = 10;

/// Device login's state: the pending logins, the random number generator,
/// and the wrong-code limit.
pub(crate) struct Device {
    public_url: PublicUrl,
    /// Spotify's accounts service (the authorize page is `{accounts}/authorize`).
    accounts: String,
    rng: SystemRandom,
    logins: Mutex<table::Table>,
    wrong_codes: RateLimiter,
}

impl Device {
    /// Device login as `config` sets it up; `None` without `PUBLIC_URL`.
    pub(crate) fn new(config: &Config) -> Option<Device> {
        let public_url = config.public_url.clone()?;
        Some(Device {
            public_url,
            accounts: config.accounts_url().to_string(),
            rng: SystemRandom::new(),
            logins: Mutex::new(table::Table::new(config.device_max_pending)),
            wrong_codes: RateLimiter::new(WRONG_CODES_PER_MINUTE, config.http.client_ipv6_prefix),
        })
    }

    fn logins(&self) -> MutexGuard<'_, table::Table> {
        // A panic while holding it leaves the table consistent: every
        // operation changes it in one step at its end.
        self.logins.lock().unwrap_or_else(|e| e.into_inner())
    }
}
