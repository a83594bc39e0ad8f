//! Command line: parse arguments, read the configuration, run.

use std::process::ExitCode;

use spotify_token_swap::journal::eprint_error;
use spotify_token_swap::{
    Config, RunError, VERSION, check_certificate, check_health, init_logging, install_panic_hook,
    login, run, token,
};

const USAGE: &str = "\
spotify-token-swap — a Spotify token swap and refresh server

Usage:
  spotify-token-swap                  serve (configuration from the environment)
  spotify-token-swap check-config     validate the environment, print the effective configuration
  spotify-token-swap generate-secret  print a new random ENCRYPTION_SECRET
  spotify-token-swap healthcheck      GET the server's own /health (exit 0: healthy, 1: not)
  spotify-token-swap login --server URL [--client-id ID] [--scope S] [--output FILE]
                                      sign this device in by code (device login); tokens to
                                      stdout or FILE (0600)
  spotify-token-swap --help | --version

Required environment: SPOTIFY_CLIENT_ID, SPOTIFY_CLIENT_SECRET (or _FILE),
SPOTIFY_REDIRECT_URI. See the README for every variable.
";

/// Exit status for bad configuration or usage.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => serve(),
        ["check-config"] => check_config(),
        ["healthcheck"] => healthcheck(),
        ["login", ..] => login(&args[1..]),
        ["generate-secret"] => match token::generate_secret() {
            Ok(secret) => {
                println!("{secret}");
                ExitCode::SUCCESS
            }
            Err(_) => {
                eprint_error("error: the system random number generator failed");
                ExitCode::FAILURE
            }
        },
        ["--help" | "-h" | "help"] => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        ["--version" | "-V"] => {
            println!("{VERSION}");
            ExitCode::SUCCESS
        }
        _ => {
            eprint_error(&format!("error: unknown arguments\n\n{USAGE}"));
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn serve() -> ExitCode {
    limit_malloc_arenas();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(errors) => {
            // Logging is not set up yet; under systemd these still go to
            // the journal at error priority.
            eprint_error(&errors.to_string());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_logging(config.log_level);
    install_panic_hook();
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        // Reported like every other configuration problem.
        Err(RunError::Config(why)) => {
            eprint_error(&format!("configuration error: {why}"));
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            log::error!("{e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// glibc gives each thread that allocates concurrently its own heap arena
/// (up to 8 per core), and each arena keeps freed memory for reuse: with a
/// pool of worker threads that multiplies resident memory for no speed-up
/// on a small machine. Two arenas keep contention low and RSS small.
fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator tuning; called before any other
    // thread exists, so no allocation is in flight in another arena.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn check_config() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(errors) => {
            // Logging is not set up yet; under systemd these still go to
            // the journal at error priority.
            eprint_error(&errors.to_string());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // The server loads the certificate only when it starts; a broken one is
    // a configuration problem here too.
    if let Err(e) = check_certificate(&config) {
        eprint_error(&format!("configuration error: {e}"));
        return ExitCode::from(EXIT_CONFIG);
    }
    print!("{}", config.describe());
    println!("configuration ok");
    ExitCode::SUCCESS
}

/// A container's health check: exit 0 when the server this environment
/// configures answers `/health` with 200, else 1 with the reason. A
/// configuration problem is 1 as well: container runtimes reserve 2.
fn healthcheck() -> ExitCode {
    let outcome = Config::from_env()
        .map_err(|errors| errors.to_string())
        .and_then(|config| check_health(&config));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprint_error(&format!("unhealthy: {why}"));
            ExitCode::FAILURE
        }
    }
}
