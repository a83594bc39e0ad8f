//! The integration tests: one test binary, one module per area, all
//! black-box against the real binary (`CARGO_BIN_EXE_spotify-token-swap`,
//! or `STS_BIN` through `STS_RUNNER`) except [`panic_isolation`], which
//! runs the HTTP layer in-process. [`support`] is the harness they share;
//! in one crate it compiles once, and what it holds that no test uses is
//! a warning.
//!
//! A test's name is `area::test`, so libtest's filters select areas:
//!
//! ```text
//! cargo test --test it                        # every area
//! cargo test --test it -- http_layer::        # one area
//! cargo test --test it -- cli:: tokens::      # several (a name matching any filter runs)
//! cargo test --test it -- --list              # every name
//! ```
//!
//! Every area runs in this one process, side by side on libtest's threads.
//! So nothing here changes what the process shares with the other tests
//! (environment variables, working directory, umask, panic hook, logger,
//! signal dispositions); a resource limit is only ever raised, never
//! lowered ([`support::load::raise_open_file_limit`]); a descriptor is
//! passed to a child only in the child, after fork; and what a test reads
//! from `/proc` is about the server it started, never about this process.
//! Tests that load the machine take [`support::heavy`] and run one at a
//! time; tests with tight timing bounds take [`support::timed`]; the two
//! kinds never run at the same time ([`support::load`]).

mod support;

mod acme;
mod adversarial;
mod apps;
mod browser;
mod cli;
mod clients;
mod connections;
mod device;
mod dns;
mod fairness;
mod healthcheck;
mod http_layer;
mod https;
mod journal;
mod memory;
mod metrics;
mod mock_selftest;
mod openapi;
mod panic_isolation;
mod rate_limit;
mod redirect_uris;
mod service;
mod slow_spotify;
mod spotify_rules;
mod tokens;
mod upstream;
mod upstream_proxy;
mod upstream_tls;
