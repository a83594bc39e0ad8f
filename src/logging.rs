//! Logging: one line per record to stderr, with the syslog priority
//! prefix when stderr is the journal; other crates' records below `warn`
//! dropped; panics reported by location only.

use crate::journal;

/// Sets up logging to stderr at `level`. ureq, rustls and their relatives
/// are capped at `warn` whatever the level. When stderr is the journal,
/// each line starts with its syslog priority ([`journal`]).
pub fn init_logging(level: log::LevelFilter) {
    use simplelog::{ConfigBuilder, LevelPadding, WriteLogger};
    let mut builder = ConfigBuilder::new();
    // journald adds timestamps; a bare level tag keeps lines short.
    builder
        .set_time_level(log::LevelFilter::Off)
        .set_thread_level(log::LevelFilter::Off)
        .set_target_level(log::LevelFilter::Off)
        .set_location_level(log::LevelFilter::Off)
        .set_level_padding(LevelPadding::Off);
    // SECURITY: at debug/trace, HTTP client and TLS libraries log request
    // and response details that can include the Authorization header,
    // codes and tokens. Only our own crate logs below warn.
    builder.add_filter_allow_str("spotify_token_swap");
    let config = builder.build();
    if journal::stderr_is_journal() {
        // Each line starts with its syslog priority (see journal.rs).
        let logger = journal::PriorityLogger::new(*WriteLogger::new(
            level,
            config,
            journal::PrefixingStderr::default(),
        ));
        if log::set_boxed_logger(Box::new(logger)).is_ok() {
            log::set_max_level(level);
        }
        return;
    }
    // One write(2) per line, so lines from different workers never interleave.
    let stderr = std::io::LineWriter::new(std::io::stderr());
    let _ = WriteLogger::init(level, config, stderr);
}

/// Replaces the default panic message (which would print the panic payload,
/// possibly request data) with a log line naming only the location.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info.location().map_or_else(
            || "unknown location".to_string(),
            |l| format!("{}:{}", l.file(), l.line()),
        );
        let thread = std::thread::current();
        log::error!(
            "panic in thread '{}' at {location}",
            thread.name().unwrap_or("unnamed")
        );
    }));
}
