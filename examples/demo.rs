//! Try spotify-token-swap without a Spotify app: one command runs the real
//! server against a local mock of Spotify's accounts service (the same mock
//! the integration tests use), in this one process, and prints curl lines.
//!
//! ```sh
//! cargo run --example demo
//! ```
//!
//! Listens on 127.0.0.1:8080 (or `LISTEN_ADDR`). Stop with Ctrl-C.

#[path = "../tests/support/mock.rs"]
mod mock;

use spotify_token_swap::{Config, bind, init_logging, server, start_line, token};

const CLIENT_ID: &str = "demo-client-id";
const CLIENT_SECRET: &str = "demo-client-secret";
const REDIRECT_URI: &str = "demo-app://callback";

fn main() {
    let mock = mock::MockSpotify::start(CLIENT_ID, CLIENT_SECRET, REDIRECT_URI);
    // Authorization codes are single-use, as at Spotify; a few to play with.
    mock.add_code("demo-code");
    for n in 2..=9 {
        mock.add_code(&format!("demo-code-{n}"));
    }
    let encryption_secret = token::generate_secret().expect("system random number generator");
    // LISTEN_ADDR from the environment if set, else the server's default.
    let listen = std::env::var("LISTEN_ADDR").ok();
    let config = Config::from_vars(
        [
            ("SPOTIFY_CLIENT_ID", CLIENT_ID.to_string()),
            ("SPOTIFY_CLIENT_SECRET", CLIENT_SECRET.to_string()),
            ("SPOTIFY_REDIRECT_URI", REDIRECT_URI.to_string()),
            ("SPOTIFY_ACCOUNTS_URL", mock.base_url()),
            ("ENCRYPTION_SECRET", encryption_secret),
            ("WORKER_THREADS", "4".to_string()),
        ]
        .into_iter()
        .chain(listen.map(|addr| ("LISTEN_ADDR", addr))),
    )
    .unwrap_or_else(|errors| {
        eprintln!("{errors}");
        std::process::exit(2);
    });
    init_logging(config.log_level);
    let listener = bind(&config).unwrap_or_else(|e| {
        eprintln!("{e} (set LISTEN_ADDR=127.0.0.1:PORT to use another port)");
        std::process::exit(1);
    });
    let addr = listener
        .local_addr()
        .expect("bound listener has an address");
    // This crate logs as `demo`, which the server's log filter drops.
    eprintln!("[INFO] {}", start_line(&config, addr));
    let base = format!("http://{addr}");
    println!(
        "\nDemo: the real server on {base}, a mock Spotify accounts service on {}.\n\
         Codes demo-code, demo-code-2 … demo-code-9 are valid once each. Try:\n\n\
         \x20 curl -s {base}/swap -d code=demo-code\n\
         \x20 REFRESH_TOKEN=…  # the refresh_token from that answer (encrypted)\n\
         \x20 curl -s {base}/refresh --data-urlencode \"refresh_token=$REFRESH_TOKEN\"\n\
         \x20 curl -s {base}/health\n\
         \x20 curl -s {base}/swap -d code=not-a-valid-code   # Spotify's error, passed through\n\n\
         Ctrl-C stops it.\n",
        mock.base_url()
    );
    let server = server(config, listener, None, None).unwrap_or_else(|e| panic!("{e}"));
    if let Err(e) = server.run() {
        eprintln!("demo: {e}");
    }
}
