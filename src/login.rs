//! `spotify-token-swap login --server URL [--client-id ID] [--scope S]
//! [--output FILE]`: the device side of device login, for a Pi, a TV box
//! or a terminal. It asks the server for a code, tells the person where to
//! enter it (stderr: the address and the user code, nothing secret), polls
//! as RFC 8628 says — at the interval, 5 s slower after each `slow_down` —
//! and writes the token JSON to stdout, or to FILE created `0600`.
//!
//! Exit 0 with the tokens; 1 when the person declined, the code expired,
//! or the server refused or could not be reached; 2 for bad arguments.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The device grant type (RFC 8628 §3.4).
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// Limit for one request to the server.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer read from the server.
const MAX_ANSWER_BYTES: u64 = 64 * 1024;
/// What RFC 8628 §3.5 says to add after `slow_down`.
const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);
/// The interval when the server names none (RFC 8628 §3.2).
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// File mode of `--output`: the refresh token is a credential.
const OUTPUT_MODE: u32 = 0o600;
/// Exit status for bad arguments.
const EXIT_USAGE: u8 = 2;

/// The usage line of `login`.
const LOGIN_USAGE: &str =
    "spotify-token-swap login --server URL [--client-id ID] [--scope S] [--output FILE]";

/// What `login` was asked to do.
#[derive(Debug, Default, PartialEq, Eq)]
struct Options {
    server: String,
    client_id: Option<String>,
    scope: Option<String>,
    output: Option<String>,
}

/// Runs `login` with the arguments after `login`.
pub fn login(args: &[String]) -> ExitCode {
    let options = match parse_args(args) {
        Ok(options) => options,
        Err(why) => {
            eprintln!("error: {why}\nusage: {LOGIN_USAGE}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("login failed: {why}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut options = Options::default();
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let slot = match flag.as_str() {
            "--server" => None,
            "--client-id" => Some(&mut options.client_id),
            "--scope" => Some(&mut options.scope),
            "--output" => Some(&mut options.output),
            other => return Err(format!("unknown argument '{other}'")),
        };
        let value = args
            .next()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("{flag} needs a value"))?
            .clone();
        match slot {
            Some(slot) => *slot = Some(value),
            None => options.server = value,
        }
    }
    if options.server.is_empty() {
        return Err("--server URL is required".into());
    }
    let lower = options.server.to_ascii_lowercase();
    if !lower.starts_with("https://") && !lower.starts_with("http://") {
        return Err(format!(
            "--server '{}' is not an http(s):// URL",
            options.server
        ));
    }
    options.server = options.server.trim_end_matches('/').to_string();
    Ok(options)
}

/// The login, start to end.
fn run(options: &Options) -> Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(REQUEST_TIMEOUT))
        .user_agent(concat!(
            "spotify-token-swap-login/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
        .into();
    let mut fields = Vec::new();
    if let Some(id) = &options.client_id {
        fields.push(("client_id", id.as_str()));
    }
    if let Some(scope) = &options.scope {
        fields.push(("scope", scope.as_str()));
    }
    let code_url = format!("{}/device/code", options.server);
    let (status, code) = post(&agent, &code_url, &fields)?;
    if status != 200 {
        return Err(format!("{code_url} answered {status}: {}", describe(&code)));
    }
    let text = |name: &str| code[name].as_str().map(str::to_string);
    let (Some(device_code), Some(user_code), Some(uri)) = (
        text("device_code"),
        text("user_code"),
        text("verification_uri"),
    ) else {
        return Err(format!("{code_url} answered without a device code"));
    };
    let mut prompt = format!("To sign in, open {uri} and enter the code {user_code}\n");
    if let Some(complete) = text("verification_uri_complete") {
        prompt.push_str(&format!("(or open {complete})\n"));
    }
    eprint!("{prompt}");
    let expires_in = code["expires_in"].as_u64().unwrap_or(600);
    let mut polling = Polling::new(
        code["interval"]
            .as_u64()
            .map_or(DEFAULT_INTERVAL, Duration::from_secs),
        Instant::now() + Duration::from_secs(expires_in),
    );
    let token_url = format!("{}/device/token", options.server);
    let form = [
        ("grant_type", DEVICE_GRANT),
        ("device_code", device_code.as_str()),
    ];
    loop {
        let answer = post(&agent, &token_url, &form);
        match polling.next(answer, Instant::now()) {
            Step::Wait(pause) => std::thread::sleep(pause),
            Step::Done(tokens) => return write_tokens(&tokens, options.output.as_deref()),
            Step::Fail(why) => return Err(why),
        }
    }
}

/// POSTs `fields` as a form; the status and the JSON answer.
fn post(agent: &ureq::Agent, url: &str, fields: &[(&str, &str)]) -> Result<(u16, Value), String> {
    let mut response = agent
        .post(url)
        .send_form(fields.iter().copied())
        .map_err(|e| format!("{url}: {e}"))?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER_BYTES)
        .read_to_string()
        .map_err(|e| format!("{url}: {e}"))?;
    let json =
        serde_json::from_str(&body).map_err(|_| format!("{url} answered {status}, not JSON"))?;
    Ok((status, json))
}

/// An error answer in a line: its `error` and `error_description`.
fn describe(answer: &Value) -> String {
    let field = |name: &str| answer[name].as_str().unwrap_or_default().to_string();
    match (field("error"), field("error_description")) {
        (error, description) if description.is_empty() => error,
        (error, description) => format!("{error} ({description})"),
    }
}

/// The device's side of RFC 8628 §3.5: when to poll again, and when to
/// stop.
#[derive(Debug)]
struct Polling {
    interval: Duration,
    deadline: Instant,
}

/// What to do after a poll.
#[derive(Debug, PartialEq)]
enum Step {
    Wait(Duration),
    Done(Value),
    Fail(String),
}

impl Polling {
    fn new(interval: Duration, deadline: Instant) -> Polling {
        Polling { interval, deadline }
    }

    /// Judges a poll's answer, received at `now`.
    fn next(&mut self, answer: Result<(u16, Value), String>, now: Instant) -> Step {
        if now >= self.deadline {
            return Step::Fail("the code expired before the sign-in was finished".into());
        }
        match answer {
            Ok((200, tokens)) => return Step::Done(tokens),
            Ok((_, error)) => match error["error"].as_str() {
                Some("authorization_pending") => {}
                Some("slow_down") => self.interval += SLOW_DOWN_STEP,
                Some("access_denied") => return Step::Fail("the sign-in was declined".into()),
                Some("expired_token") => {
                    return Step::Fail("the code expired before the sign-in was finished".into());
                }
                _ => return Step::Fail(format!("the server refused: {}", describe(&error))),
            },
            // The network may come back before the code expires.
            Err(why) => eprintln!("{why}; trying again"),
        }
        Step::Wait(self.interval)
    }
}

/// Writes the token JSON to `output` (created `0600`), or to stdout.
fn write_tokens(tokens: &Value, output: Option<&str>) -> Result<(), String> {
    let text = format!("{tokens}\n");
    match output {
        None => std::io::stdout()
            .write_all(text.as_bytes())
            .map_err(|e| format!("stdout: {e}")),
        Some(path) => {
            use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(OUTPUT_MODE)
                .open(path)
                .map_err(|e| format!("{path}: {e}"))?;
            // SECURITY: an existing file keeps its mode on open; a refresh
            // token is a credential, so it is made 0600 before it is written.
            file.set_permissions(std::fs::Permissions::from_mode(OUTPUT_MODE))
                .and_then(|()| file.write_all(text.as_bytes()))
                .map_err(|e| format!("{path}: {e}"))?;
            eprintln!("signed in; tokens written to {path}");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|a| (*a).to_string()).collect()
    }

    #[test]
    fn arguments_name_the_server_and_the_optional_rest() {
        let options = parse_args(&args(&[
            "--server",
            "https://swap.example.org/",
            "--scope",
            "streaming",
            "--output",
            "t.json",
        ]))
        .unwrap();
        assert_eq!(options.server, "https://swap.example.org");
        assert_eq!(options.scope.as_deref(), Some("streaming"));
        assert_eq!(options.output.as_deref(), Some("t.json"));
        assert_eq!(options.client_id, None);
        for bad in [
            &[][..],
            &["--server"],
            &["--server", "swap.example.org"],
            &["--server", "https://x", "--bogus", "1"],
            &["--client-id", "x"],
        ] {
            assert!(parse_args(&args(bad)).is_err(), "{bad:?}");
        }
    }

    fn error(code: &str) -> Result<(u16, Value), String> {
        Ok((400, serde_json::json!({ "error": code })))
    }

    #[test]
    fn polling_waits_the_interval_and_5_s_more_after_each_slow_down() {
        let now = Instant::now();
        let mut polling = Polling::new(Duration::from_secs(5), now + Duration::from_secs(600));
        let secs = |s| Step::Wait(Duration::from_secs(s));
        assert_eq!(polling.next(error("authorization_pending"), now), secs(5));
        assert_eq!(polling.next(error("slow_down"), now), secs(10));
        assert_eq!(polling.next(error("slow_down"), now), secs(15));
        assert_eq!(polling.next(error("authorization_pending"), now), secs(15));
        assert_eq!(polling.next(Err("down".into()), now), secs(15));
        let tokens = serde_json::json!({ "access_token": "a" });
        assert_eq!(
            polling.next(Ok((200, tokens.clone())), now),
            Step::Done(tokens)
        );
    }

    #[test]
    fn polling_stops_on_denial_expiry_and_other_errors() {
        let now = Instant::now();
        let mut polling = Polling::new(Duration::from_secs(5), now + Duration::from_secs(600));
        for code in ["access_denied", "expired_token", "invalid_grant"] {
            assert!(
                matches!(polling.next(error(code), now), Step::Fail(_)),
                "{code}"
            );
        }
        let late = now + Duration::from_secs(600);
        assert!(matches!(
            polling.next(error("authorization_pending"), late),
            Step::Fail(_)
        ));
    }
}
