//! The pending device logins, in memory: at most `DEVICE_MAX_PENDING`,
//! each for [`LOGIN_LIFETIME`], found by device code (the device's polls),
//! by user code (the pages) and by `state` (the callback).
//!
//! SECURITY: a full table refuses new logins (the caller answers 503 with
//! `Retry-After`) rather than push one out: a flood of `/device/code`
//! cannot end a login a person is finishing, and cannot grow memory. Only
//! logins past their expiry give way, so the table never holds more than
//! its size.
//!
//! Every operation takes `now`, so the rules (RFC 8628 §3.5: the first poll
//! is never too early, `slow_down` adds [`SLOW_DOWN_STEP`] to the interval,
//! which runs from the previous poll of the same code) are tested without
//! waiting.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::codes::{UserCode, same_secret};
use crate::http::Response;

/// How long a login may take, from `/device/code` (`expires_in`).
pub(crate) const LOGIN_LIFETIME: Duration = Duration::from_secs(600);
/// The polling interval a device is first given (`interval`).
pub(crate) const POLL_INTERVAL: Duration = Duration::from_secs(5);
/// What each `slow_down` adds to the device's interval (RFC 8628 §3.5).
pub(crate) const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);
/// How long an expired login is kept to answer `expired_token` (unless its
/// place is needed sooner); after that its code is simply unknown.
const EXPIRED_KEPT: Duration = Duration::from_secs(600);
/// How often, at most, the table looks for logins to drop; it looks when
/// a code is issued or polled, so no thread is needed.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// One pending login.
#[derive(Debug)]
pub(crate) struct Login {
    /// Index of the app it is for.
    pub(crate) app: usize,
    /// The scopes asked for, as Spotify takes them (space-separated).
    pub(crate) scope: Option<String>,
    pub(crate) user_code: UserCode,
    expires: Instant,
    interval: Duration,
    last_poll: Option<Instant>,
    stage: Stage,
}

impl Login {
    /// A login for `app` that starts at `now`.
    pub(crate) fn new(
        app: usize,
        scope: Option<String>,
        user_code: UserCode,
        now: Instant,
    ) -> Login {
        Login {
            app,
            scope,
            user_code,
            expires: now + LOGIN_LIFETIME,
            interval: POLL_INTERVAL,
            last_poll: None,
            stage: Stage::Waiting,
        }
    }

    fn expired(&self, now: Instant) -> bool {
        now >= self.expires
    }

    /// Whether a person may still continue it on the pages.
    fn open(&self, now: Instant) -> bool {
        !self.expired(now) && matches!(self.stage, Stage::Waiting | Stage::Authorizing(_))
    }
}

/// Where a login is.
#[derive(Debug)]
enum Stage {
    /// Waiting for a person to enter the code and continue.
    Waiting,
    /// Sent to Spotify; the callback will bring its `state`.
    Authorizing(Authorizing),
    /// The callback is swapping the code.
    Exchanging,
    /// The answer for the device's next poll (tokens, or Spotify's refusal).
    Answered(Response),
    /// The person declined at Spotify.
    Denied,
}

/// What a login sent to Spotify waits for.
#[derive(Debug)]
pub(crate) struct Authorizing {
    /// `state`: opaque, single-use.
    pub(crate) state: String,
    /// PKCE's verifier, sent with the code.
    pub(crate) verifier: String,
    /// The cookie that binds the callback to the browser that continued.
    pub(crate) binding: String,
}

/// The table is full of logins in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full {
    /// Seconds until the soonest of them expires (at least 1).
    pub(crate) retry_after_secs: u64,
}

/// Why a callback's `state` leads nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallbackRefused {
    /// No login waits for it (never issued, used, superseded or expired).
    Unknown,
    /// The browser does not carry the login's binding cookie.
    OtherBrowser,
}

/// A callback that found its login, now exchanging.
#[derive(Debug)]
pub(crate) struct Callback {
    pub(crate) device_code: String,
    pub(crate) app: usize,
    pub(crate) verifier: String,
}

/// What a device's poll is answered.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Poll {
    /// No such device code (never issued, or its answer was handed out).
    Unknown,
    Expired,
    Pending,
    /// Too soon after the previous poll; the interval grew.
    SlowDown,
    Denied,
    /// The answer, handed out once.
    Answered(Response),
}

/// The pending logins.
#[derive(Debug)]
pub(crate) struct Table {
    max: usize,
    by_device: HashMap<String, Login>,
    /// User code → device code.
    by_user: HashMap<UserCode, String>,
    /// `state` → device code.
    by_state: HashMap<String, String>,
    /// When the table next looks for logins past [`EXPIRED_KEPT`].
    next_sweep: Option<Instant>,
}

impl Table {
    /// An empty table for at most `max` logins.
    pub(crate) fn new(max: usize) -> Table {
        Table {
            max,
            by_device: HashMap::new(),
            by_user: HashMap::new(),
            by_state: HashMap::new(),
            next_sweep: None,
        }
    }

    /// Logins held (expired ones not yet given way included).
    pub(crate) fn len(&self) -> usize {
        self.by_device.len()
    }

    /// Whether `code` belongs to a login held now (then a new login must
    /// draw another).
    pub(crate) fn user_code_taken(&self, code: UserCode) -> bool {
        self.by_user.contains_key(&code)
    }

    /// Adds a login under `device_code`, making room from expired ones
    /// if needed; refuses when every place holds a login in progress.
    pub(crate) fn insert(
        &mut self,
        device_code: String,
        login: Login,
        now: Instant,
    ) -> Result<(), Full> {
        self.sweep(now);
        if self.len() >= self.max {
            self.remove_expired(now, Duration::ZERO);
        }
        if self.len() >= self.max {
            let soonest = self.by_device.values().map(|l| l.expires).min();
            let wait = soonest.map_or(LOGIN_LIFETIME, |at| at.saturating_duration_since(now));
            return Err(Full {
                retry_after_secs: wait.as_secs().max(1),
            });
        }
        self.by_user.insert(login.user_code, device_code.clone());
        self.by_device.insert(device_code, login);
        Ok(())
    }

    /// The login a person may continue with `code`.
    pub(crate) fn by_user_code(&self, code: UserCode, now: Instant) -> Option<&Login> {
        let device_code = self.by_user.get(&code)?;
        self.by_device.get(device_code).filter(|l| l.open(now))
    }

    /// Sends the login of `code` to Spotify with `authorizing`'s `state`;
    /// an earlier `state` of it stops counting. Its app and scopes, or
    /// `None` when no open login has that code.
    pub(crate) fn authorize(
        &mut self,
        code: UserCode,
        authorizing: Authorizing,
        now: Instant,
    ) -> Option<(usize, Option<String>)> {
        let device_code = self.by_user.get(&code)?;
        let login = self
            .by_device
            .get_mut(device_code)
            .filter(|l| l.open(now))?;
        if let Stage::Authorizing(earlier) = &login.stage {
            self.by_state.remove(&earlier.state);
        }
        self.by_state
            .insert(authorizing.state.clone(), device_code.clone());
        login.stage = Stage::Authorizing(authorizing);
        Some((login.app, login.scope.clone()))
    }

    /// Takes the login `state` leads to, for the browser carrying
    /// `binding`: `state` is used up, the login is exchanging.
    pub(crate) fn callback(
        &mut self,
        state: &str,
        binding: Option<&str>,
        now: Instant,
    ) -> Result<Callback, CallbackRefused> {
        let device_code = self
            .by_state
            .get(state)
            .ok_or(CallbackRefused::Unknown)?
            .clone();
        let login = self
            .by_device
            .get_mut(&device_code)
            .filter(|l| !l.expired(now))
            .ok_or(CallbackRefused::Unknown)?;
        let Stage::Authorizing(authorizing) = &login.stage else {
            return Err(CallbackRefused::Unknown);
        };
        // SECURITY: only the browser that pressed Continue may finish the
        // login: a `state` seen elsewhere (a shared screen, a log) is not
        // enough. It stays usable for that browser.
        if !binding.is_some_and(|b| same_secret(b, &authorizing.binding)) {
            return Err(CallbackRefused::OtherBrowser);
        }
        let Stage::Authorizing(authorizing) =
            std::mem::replace(&mut login.stage, Stage::Exchanging)
        else {
            unreachable!("matched just above");
        };
        self.by_state.remove(state);
        Ok(Callback {
            device_code,
            app: login.app,
            verifier: authorizing.verifier,
        })
    }

    /// Keeps Spotify's answer for the device; `None`: the person declined.
    pub(crate) fn finish(&mut self, device_code: &str, answer: Option<Response>) {
        if let Some(login) = self.by_device.get_mut(device_code) {
            login.stage = answer.map_or(Stage::Denied, Stage::Answered);
        }
    }

    /// Answers a device's poll at `now` (RFC 8628 §3.5).
    pub(crate) fn poll(&mut self, device_code: &str, now: Instant) -> Poll {
        self.sweep(now);
        let Some(login) = self.by_device.get_mut(device_code) else {
            return Poll::Unknown;
        };
        let previous = login.last_poll.replace(now);
        match login.stage {
            Stage::Answered(_) | Stage::Denied => {}
            _ if login.expired(now) => return Poll::Expired,
            _ => {
                let too_soon =
                    previous.is_some_and(|at| now.saturating_duration_since(at) < login.interval);
                if too_soon {
                    login.interval += SLOW_DOWN_STEP;
                    return Poll::SlowDown;
                }
                return Poll::Pending;
            }
        }
        // Handed out once: the login ends here.
        let login = self.remove(device_code);
        match login.map(|l| l.stage) {
            Some(Stage::Answered(response)) => Poll::Answered(response),
            _ => Poll::Denied,
        }
    }

    fn remove(&mut self, device_code: &str) -> Option<Login> {
        let login = self.by_device.remove(device_code)?;
        self.by_user.remove(&login.user_code);
        if let Stage::Authorizing(authorizing) = &login.stage {
            self.by_state.remove(&authorizing.state);
        }
        Some(login)
    }

    /// Drops the logins kept past [`EXPIRED_KEPT`], at most once per
    /// [`SWEEP_INTERVAL`]: nothing — a verifier, an answer nobody polled —
    /// stays in memory long after its login ended, full table or not.
    fn sweep(&mut self, now: Instant) {
        if self.next_sweep.is_some_and(|at| now < at) {
            return;
        }
        self.next_sweep = Some(now + SWEEP_INTERVAL);
        self.remove_expired(now, EXPIRED_KEPT);
    }

    /// Drops every login expired for at least `kept`.
    fn remove_expired(&mut self, now: Instant, kept: Duration) {
        let expired: Vec<String> = self
            .by_device
            .iter()
            .filter(|(_, login)| now >= login.expires + kept)
            .map(|(code, _)| code.clone())
            .collect();
        for code in expired {
            self.remove(&code);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> UserCode {
        UserCode::parse(text).unwrap()
    }

    fn table_with(max: usize, logins: &[(&str, &str)], now: Instant) -> Table {
        let mut table = Table::new(max);
        for (device, user) in logins {
            let login = Login::new(0, None, code(user), now);
            table.insert((*device).into(), login, now).unwrap();
        }
        table
    }

    fn authorizing(state: &str) -> Authorizing {
        Authorizing {
            state: state.into(),
            verifier: format!("verifier-{state}"),
            binding: format!("binding-{state}"),
        }
    }

    #[test]
    fn the_first_poll_is_pending_and_a_poll_within_the_interval_slows_down_by_5_s() {
        let t0 = Instant::now();
        let mut table = table_with(10, &[("dev", "BBBB-BBBB")], t0);
        // Right after the code was issued: never too early.
        assert_eq!(table.poll("dev", t0), Poll::Pending);
        assert_eq!(
            table.poll("dev", t0 + Duration::from_secs(4)),
            Poll::SlowDown
        );
        // The interval is now 10 s, from the previous poll (at 4 s).
        assert_eq!(
            table.poll("dev", t0 + Duration::from_secs(13)),
            Poll::SlowDown
        );
        // Now 15 s from 13 s.
        assert_eq!(
            table.poll("dev", t0 + Duration::from_secs(27)),
            Poll::SlowDown
        );
        assert_eq!(
            table.poll("dev", t0 + Duration::from_secs(47)),
            Poll::Pending
        );
        assert_eq!(
            table.poll("dev", t0 + Duration::from_secs(67)),
            Poll::Pending
        );
    }

    #[test]
    fn polls_past_the_lifetime_are_expired_and_unknown_codes_unknown() {
        let t0 = Instant::now();
        let mut table = table_with(10, &[("dev", "BBBB-BBBB")], t0);
        assert_eq!(table.poll("dev", t0 + LOGIN_LIFETIME), Poll::Expired);
        assert_eq!(table.poll("nope", t0), Poll::Unknown);
        assert!(
            table
                .by_user_code(code("BBBBBBBB"), t0 + LOGIN_LIFETIME)
                .is_none()
        );
    }

    #[test]
    fn an_answer_is_handed_out_once_then_the_code_is_unknown() {
        let t0 = Instant::now();
        let mut table = table_with(10, &[("dev", "BBBB-BBBB")], t0);
        table
            .authorize(code("BBBB-BBBB"), authorizing("s1"), t0)
            .unwrap();
        let callback = table.callback("s1", Some("binding-s1"), t0).unwrap();
        assert_eq!(callback.verifier, "verifier-s1");
        assert_eq!(table.poll("dev", t0), Poll::Pending);
        let answer = Response::json(200, b"{}".to_vec());
        table.finish("dev", Some(answer.clone()));
        // Even polled too soon: the answer is ready, no slow_down.
        assert_eq!(table.poll("dev", t0), Poll::Answered(answer));
        assert_eq!(
            table.poll("dev", t0 + Duration::from_secs(10)),
            Poll::Unknown
        );
        assert_eq!(table.len(), 0);
        assert!(!table.user_code_taken(code("BBBB-BBBB")));
    }

    #[test]
    fn a_declined_login_is_denied_once() {
        let t0 = Instant::now();
        let mut table = table_with(10, &[("dev", "BBBB-BBBB")], t0);
        table
            .authorize(code("BBBB-BBBB"), authorizing("s1"), t0)
            .unwrap();
        table.callback("s1", Some("binding-s1"), t0).unwrap();
        table.finish("dev", None);
        assert_eq!(table.poll("dev", t0), Poll::Denied);
        assert_eq!(table.poll("dev", t0), Poll::Unknown);
    }

    #[test]
    fn state_is_single_use_superseded_by_a_new_one_and_bound_to_its_browser() {
        let t0 = Instant::now();
        let mut table = table_with(10, &[("dev", "BBBB-BBBB")], t0);
        table
            .authorize(code("BBBB-BBBB"), authorizing("s1"), t0)
            .unwrap();
        table
            .authorize(code("BBBB-BBBB"), authorizing("s2"), t0)
            .unwrap();
        let refused = |t: &mut Table, state, binding| t.callback(state, binding, t0).unwrap_err();
        assert_eq!(
            refused(&mut table, "s1", Some("binding-s1")),
            CallbackRefused::Unknown
        );
        assert_eq!(
            refused(&mut table, "s2", None),
            CallbackRefused::OtherBrowser
        );
        assert_eq!(
            refused(&mut table, "s2", Some("binding-s1")),
            CallbackRefused::OtherBrowser
        );
        table.callback("s2", Some("binding-s2"), t0).unwrap();
        assert_eq!(
            refused(&mut table, "s2", Some("binding-s2")),
            CallbackRefused::Unknown
        );
        // Exchanging: the pages no longer offer it.
        assert!(table.by_user_code(code("BBBB-BBBB"), t0).is_none());
        assert!(
            table
                .authorize(code("BBBB-BBBB"), authorizing("s3"), t0)
                .is_none()
        );
    }

    #[test]
    fn expired_logins_answer_expired_token_for_a_while_then_are_dropped() {
        let t0 = Instant::now();
        let mut table = table_with(10, &[("dev", "BBBB-BBBB")], t0);
        table
            .authorize(code("BBBB-BBBB"), authorizing("s1"), t0)
            .unwrap();
        let expired = t0 + LOGIN_LIFETIME;
        assert_eq!(table.poll("dev", expired), Poll::Expired);
        assert_eq!(table.len(), 1);
        // Nobody issues a code: a poll of another sweeps it all the same.
        assert_eq!(table.poll("other", expired + EXPIRED_KEPT), Poll::Unknown);
        assert_eq!(table.len(), 0);
        assert!(table.by_state.is_empty() && table.by_user.is_empty());
        assert_eq!(table.poll("dev", expired + EXPIRED_KEPT), Poll::Unknown);
    }

    #[test]
    fn a_full_table_refuses_rather_than_push_out_a_login_in_progress() {
        let t0 = Instant::now();
        let mut table = table_with(2, &[("a", "BBBB-BBBB"), ("b", "CCCC-CCCC")], t0);
        let later = t0 + Duration::from_secs(100);
        let login = || Login::new(0, None, code("DDDD-DDDD"), later);
        assert_eq!(
            table.insert("c".into(), login(), later),
            Err(Full {
                retry_after_secs: 500
            })
        );
        assert!(table.by_user_code(code("BBBB-BBBB"), later).is_some());
        // Once they expired, they give way.
        let expired = t0 + LOGIN_LIFETIME;
        table.insert("c".into(), login(), expired).unwrap();
        assert_eq!(table.len(), 1);
        assert!(!table.user_code_taken(code("BBBB-BBBB")));
    }
}
