//! The client for Spotify's accounts service.

mod client;
mod dns;
mod tcp;

pub(crate) use client::{Answer, FailureKind, Grant, KEEP_WARM_INTERVAL, Spotify};
