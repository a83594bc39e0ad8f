//! Log priorities for journald, over a real pipe: the binary's stderr is a
//! pipe this test reads, and `JOURNAL_STREAM` names that pipe (as systemd
//! names its journal stream) or some other file. `sh` looks up the pipe's
//! device and inode with `stat` and `exec`s the binary, which keeps the
//! descriptors.

use crate::support;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::{
    CLIENT_ID, CLIENT_SECRET, Conn, REDIRECT_URI, ServerProc, binary_argv, inherited_env,
    server_vars, start_mock,
};

/// How long to wait for a log line the test provoked.
const LOG_TIMEOUT: Duration = Duration::from_secs(10);

/// Which file `JOURNAL_STREAM` names.
#[derive(Clone, Copy)]
enum Stream {
    /// The pipe that is the binary's stderr: the journal case.
    Stderr,
    /// The pipe that is its stdout: same device (pipefs), another inode.
    Stdout,
}

/// `sh -c` that sets `JOURNAL_STREAM` to `DEVICE:INODE` of `stream`, then
/// `exec`s the binary (through `STS_RUNNER`, if set) with `vars` only.
fn command(stream: Stream, vars: &[(&str, &str)]) -> Command {
    let fd = match stream {
        Stream::Stderr => 2,
        Stream::Stdout => 1,
    };
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            r#"JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/{fd}) || exit 99; export JOURNAL_STREAM; exec "$@""#
        ))
        .arg("sh")
        .args(binary_argv())
        .env_clear()
        .envs(inherited_env())
        .envs(vars.iter().copied())
        .stdin(Stdio::null());
    cmd
}

fn run(stream: Stream, vars: &[(&str, &str)]) -> Output {
    command(stream, vars)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run the binary through sh")
}

fn start(stream: Stream, vars: &[(&str, &str)]) -> ServerProc {
    ServerProc::spawn(command(stream, vars)).unwrap_or_else(|e| panic!("{e}"))
}

fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Settings with no client id: a configuration error, exit 2.
fn bad_config() -> Vec<(&'static str, &'static str)> {
    vec![
        ("SPOTIFY_CLIENT_SECRET", CLIENT_SECRET),
        ("SPOTIFY_REDIRECT_URI", REDIRECT_URI),
    ]
}

/// Runs with [`bad_config`] and `JOURNAL_STREAM` naming `stream`: asserts
/// exit 2 and stderr lines, each starting with `prefix`. Returns them.
fn config_errors_starting_with(stream: Stream, prefix: &str) -> Vec<String> {
    let output = run(stream, &bad_config());
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let lines = lines(&output.stderr);
    assert!(!lines.is_empty(), "no error printed");
    for line in &lines {
        assert!(
            line.starts_with(prefix),
            "{line:?} does not start with {prefix:?}"
        );
    }
    lines
}

/// Runs with a valid configuration listening on `taken`, an address in
/// use, and `JOURNAL_STREAM` naming `stream`: asserts exit 1 and returns
/// the stderr lines.
fn bind_failure_lines(stream: Stream, taken: &str) -> Vec<String> {
    let output = run(
        stream,
        &[
            ("SPOTIFY_CLIENT_ID", CLIENT_ID),
            ("SPOTIFY_CLIENT_SECRET", CLIENT_SECRET),
            ("SPOTIFY_REDIRECT_URI", REDIRECT_URI),
            ("LISTEN_ADDR", taken),
        ],
    );
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    lines(&output.stderr)
}

#[test]
fn configuration_errors_go_to_the_journal_at_error_priority() {
    let lines = config_errors_starting_with(Stream::Stderr, "<3>configuration error: ");
    assert!(
        lines.iter().any(|l| l.contains("SPOTIFY_CLIENT_ID")),
        "{lines:?}"
    );
}

#[test]
fn configuration_errors_are_unchanged_when_stderr_is_not_the_journal() {
    config_errors_starting_with(Stream::Stdout, "configuration error: ");
}

#[test]
fn unknown_arguments_go_to_the_journal_at_error_priority() {
    let output = command(Stream::Stderr, &[])
        .arg("--no-such-option")
        .output()
        .expect("run the binary through sh");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let lines = lines(&output.stderr);
    assert_eq!(
        lines.first().map(String::as_str),
        Some("<3>error: unknown arguments")
    );
    assert!(lines.iter().all(|l| l.starts_with("<3>")), "{lines:?}");
}

#[test]
fn every_log_line_starts_with_its_priority_when_stderr_is_the_journal() {
    let mock = start_mock();
    // No ENCRYPTION_SECRET: a warning at start. 127.0.0.1 is not a trusted
    // proxy, so the per-client cap of 1 turns a second connection away, logged
    // at debug.
    let vars = server_vars(
        &mock,
        &[
            ("LISTEN_ADDR", "127.0.0.1:0"),
            ("LOG_LEVEL", "debug"),
            ("MAX_CONNECTIONS_PER_CLIENT", "1"),
            ("TRUSTED_PROXIES", "192.0.2.1"),
        ],
    );
    let vars: Vec<(&str, &str)> = vars.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let server = start(Stream::Stderr, &vars);
    let mut first = Conn::open(server.addr());
    first.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(first.read_response().status, 200);
    let mut second = Conn::open(server.addr());
    let _ = second.try_send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        server.wait_for_stderr("<7>[DEBUG]", LOG_TIMEOUT),
        "no debug line:\n{}",
        server.stderr()
    );

    let log = server.stderr();
    assert!(log.contains("<4>[WARN] ENCRYPTION_SECRET"), "{log}");
    assert!(
        log.lines()
            .any(|l| l.starts_with("<6>[INFO] ") && l.contains(" listening on ")),
        "{log}"
    );
    for line in log.lines() {
        let tagged = [
            ("<3>", "[ERROR]"),
            ("<4>", "[WARN]"),
            ("<6>", "[INFO]"),
            ("<7>", "[DEBUG]"),
        ]
        .iter()
        .any(|(priority, level)| {
            line.strip_prefix(priority)
                .is_some_and(|rest| rest.starts_with(level))
        });
        assert!(tagged, "a line without its priority: {line:?}\n{log}");
    }

    // The address is taken: the error after logging started is `<3>`.
    let taken = server.addr().to_string();
    let lines = bind_failure_lines(Stream::Stderr, &taken);
    assert!(
        lines.iter().any(|l| l.starts_with("<3>[ERROR] ")),
        "{lines:?}"
    );
    assert!(lines.iter().all(|l| l.starts_with('<')), "{lines:?}");
}

#[test]
fn log_lines_are_unchanged_when_journal_stream_names_another_file() {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let taken: SocketAddr = listener.local_addr().expect("local address");
    let taken = taken.to_string();
    let lines = bind_failure_lines(Stream::Stdout, &taken);
    assert!(lines.iter().any(|l| l.starts_with("[ERROR] ")), "{lines:?}");
    assert!(lines.iter().all(|l| !l.starts_with('<')), "{lines:?}");
}
