//! Try spotify-token-swap without a Spotify app: one command runs the real
//! server against a local stand-in for Spotify's token endpoint (the
//! [`mock`] module below), in this one process, and prints curl lines.
//!
//! ```sh
//! cargo run --example demo
//! ```
//!
//! Listens on 127.0.0.1:8080 (or `LISTEN_ADDR`). Stop with Ctrl-C.

use spotify_token_swap::{Config, bind, init_logging, server, start_line, token};

const CLIENT_ID: &str = "demo-client-id";
const CLIENT_SECRET: &str = "demo-client-secret";
const REDIRECT_URI: &str = "demo-app://callback";

fn main() {
    // Authorization codes are single-use, as at Spotify; a few to play with.
    let codes =
        std::iter::once("demo-code".to_string()).chain((2..=9).map(|n| format!("demo-code-{n}")));
    let mock = mock::Mock::start(CLIENT_ID, CLIENT_SECRET, codes);
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
    let server =
        server(config, listener, Default::default(), None).unwrap_or_else(|e| panic!("{e}"));
    if let Err(e) = server.run() {
        eprintln!("demo: {e}");
    }
}

/// A minimal stand-in for Spotify's `POST /api/token`: client authentication
/// by `Authorization: Basic`, single-use authorization codes, refresh tokens,
/// Spotify's OAuth error bodies; HTTP/1.1 with keep-alive, one thread per
/// connection. Enough to play with; the integration tests' mock
/// (`tests/it/support/mock.rs`) is the thorough one.
mod mock {
    use std::collections::HashSet;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::sync::{Arc, Mutex, PoisonError};
    use std::thread;

    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    /// The running stand-in; it serves until the process exits.
    pub struct Mock {
        addr: SocketAddr,
    }

    struct State {
        authorization: String,
        codes: HashSet<String>,
        refresh_tokens: HashSet<String>,
        issued: u64,
    }

    impl Mock {
        /// Binds `127.0.0.1:0` and serves in the background, accepting
        /// each of `codes` once for the client `id` and `secret`.
        pub fn start(id: &str, secret: &str, codes: impl IntoIterator<Item = String>) -> Mock {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind the mock");
            let addr = listener
                .local_addr()
                .expect("bound listener has an address");
            let state = Arc::new(Mutex::new(State {
                authorization: format!("Basic {}", STANDARD.encode(format!("{id}:{secret}"))),
                codes: codes.into_iter().collect(),
                refresh_tokens: HashSet::new(),
                issued: 0,
            }));
            thread::spawn(move || {
                for stream in listener.incoming().flatten() {
                    let state = Arc::clone(&state);
                    thread::spawn(move || serve(stream, &state));
                }
            });
            Mock { addr }
        }

        /// `http://ADDR`, for `SPOTIFY_ACCOUNTS_URL`.
        pub fn base_url(&self) -> String {
            format!("http://{}", self.addr)
        }
    }

    /// Answers requests on one connection until the peer closes it or sends
    /// something this stand-in does not read.
    fn serve(stream: TcpStream, state: &Mutex<State>) {
        let Ok(mut writer) = stream.try_clone() else {
            return;
        };
        let mut reader = BufReader::new(stream);
        loop {
            let (mut authorization, mut length, mut line) = (String::new(), 0, String::new());
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let post_token = line.starts_with("POST /api/token ");
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let Some((name, value)) = line.trim_end().split_once(':') else {
                    break; // the blank line ending the head
                };
                match name.to_ascii_lowercase().as_str() {
                    "authorization" => authorization = value.trim().to_string(),
                    "content-length" => length = value.trim().parse().unwrap_or(usize::MAX),
                    _ => {}
                }
            }
            let mut body = vec![0; length.min(64 * 1024)];
            if length > body.len() || reader.read_exact(&mut body).is_err() {
                return;
            }
            let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
            let (status, json) = if !post_token {
                (404, error("not_found", "Service not found"))
            } else if authorization != state.authorization {
                bad_request("invalid_client", "Invalid client")
            } else {
                state.answer(&body)
            };
            drop(state);
            let head = format!(
                "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                if status == 200 { "OK" } else { "Bad Request" },
                json.len()
            );
            if writer
                .write_all(format!("{head}{json}").as_bytes())
                .is_err()
            {
                return;
            }
        }
    }

    impl State {
        /// Spotify's answer to a token request with form `body`.
        fn answer(&mut self, body: &[u8]) -> (u16, String) {
            let field = |name: &str| {
                form_urlencoded::parse(body)
                    .find(|(key, _)| key == name)
                    .map(|(_, value)| value.into_owned())
            };
            let is_code = match field("grant_type").as_deref() {
                Some("authorization_code") => true,
                Some("refresh_token") => false,
                _ => {
                    return bad_request(
                        "unsupported_grant_type",
                        "grant_type must be authorization_code or refresh_token",
                    );
                }
            };
            if is_code && !field("code").is_some_and(|code| self.codes.remove(&code)) {
                return bad_request("invalid_grant", "Invalid authorization code");
            }
            if !is_code && !field("refresh_token").is_some_and(|t| self.refresh_tokens.contains(&t))
            {
                return bad_request("invalid_grant", "Invalid refresh token");
            }
            self.issued += 1;
            let n = self.issued;
            let mut token = serde_json::json!({
                "access_token": format!("demo-access-{n}"),
                "token_type": "Bearer",
                "expires_in": 3600,
                "scope": "user-read-private user-read-email",
            });
            if is_code {
                let refresh = format!("demo-refresh-{n}");
                self.refresh_tokens.insert(refresh.clone());
                token["refresh_token"] = refresh.into();
            }
            (200, token.to_string())
        }
    }

    fn bad_request(code: &str, description: &str) -> (u16, String) {
        (400, error(code, description))
    }

    /// Spotify's OAuth error body.
    fn error(code: &str, description: &str) -> String {
        serde_json::json!({ "error": code, "error_description": description }).to_string()
    }
}
