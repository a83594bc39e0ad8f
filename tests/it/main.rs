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

mod support;

mod adversarial;
mod browser;
mod cli;
mod clients;
mod connections;
mod dns;
mod http_layer;
mod https;
mod journal;
mod metrics;
mod mock_selftest;
mod panic_isolation;
mod rate_limit;
mod service;
mod tokens;
mod upstream;
mod upstream_tls;
