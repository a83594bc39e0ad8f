//! The client for Spotify's accounts service: everything between "post
//! this grant to the token endpoint" and "here is the answer to pass on, or
//! the one typed [`Error`] saying why there is none".
//!
//! It owns the one `ureq` agent and its connection pool, shared by every
//! app, keep-warm requests, the host-name resolver and the TCP layer under
//! TLS; each app's [`Account`] holds its `Authorization` header and the
//! local back-off window a Spotify 429 opens for its client id. It names
//! nothing of the rest of the crate but [`Secret`](crate::secret::Secret):
//! the routes build it from a small [`Settings`] and an account per app,
//! call it with an account and a [`Grant`], and turn the
//! [`Call`](answer::Call) it returns into a response.
//!
//! One file per step, arrows only downward:
//!
//! - `client.rs`: the agent, its configuration, the call, keep-warm;
//! - `account.rs`: one app's Basic auth and back-off window;
//! - `grant.rs`: what is asked for, as the form body;
//! - `answer.rs`: reading and judging the response; the 429 rule and the
//!   back-off window;
//! - `date.rs`: `Retry-After` as seconds, HTTP-dates included;
//! - `error.rs`: the typed error (status, OAuth code, description,
//!   `Retry-After`, failure kind) and the list of failure kinds;
//! - `dns.rs`: the single-flight resolver;
//! - `tcp.rs`: the TCP connector under ureq's TLS.
//!
//! # Why ureq is pinned exactly
//!
//! `dns.rs` and `tcp.rs` plug into ureq through `ureq::unversioned` (its
//! resolver and transport traits), and `client.rs` wires them into the
//! agent with it. ureq keeps that API outside its semver promise: any
//! release may change it. So `Cargo.toml` asks for exactly the version
//! `Cargo.lock` holds, and an upgrade is a deliberate change made here
//! (docs/design.md, "Why ureq is pinned").

mod account;
mod answer;
mod client;
pub(crate) mod date;
mod dns;
mod error;
mod grant;
mod tcp;

pub(crate) use account::Account;
pub(crate) use answer::{Answer, RateLimitReason};
pub(crate) use client::{Client, KEEP_WARM_INTERVAL, Settings, tls_config};
pub(crate) use error::{Error, FailureKind};
pub(crate) use grant::Grant;
