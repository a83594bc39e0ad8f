//! Running the binary under test: [`ServerProc`] for the server, [`run_binary`]
//! for one-shot commands, and what they share (the binary's path, the
//! inherited environment, `/proc` readings of the child).

use std::env;
use std::ffi::OsString;
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{POLL_INTERVAL, lock};

/// How long [`ServerProc::start`] waits for the "listening on" line.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`run_binary`] lets a one-shot command run.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// The binary under test: `STS_BIN` if set, else the one Cargo built.
pub fn binary() -> PathBuf {
    match env::var_os("STS_BIN") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_spotify-token-swap")),
    }
}

/// A command for the binary, through `STS_RUNNER` if set, with an
/// environment of only `PATH`, `QEMU_*` (for the runner) and `vars`.
fn command(vars: &[(&str, &str)]) -> Command {
    let mut cmd = match env::var("STS_RUNNER") {
        Ok(runner) if !runner.trim().is_empty() => {
            let mut words = runner.split_whitespace();
            // Non-empty after trim, so there is a first word.
            let mut cmd = Command::new(words.next().unwrap_or_default());
            cmd.args(words).arg(binary());
            cmd
        }
        _ => Command::new(binary()),
    };
    cmd.env_clear();
    cmd.envs(inherited_env());
    cmd.envs(vars.iter().copied());
    cmd.stdin(Stdio::null());
    cmd
}

/// Runs the binary once with `args` and the environment `vars` (plus `PATH`)
/// and returns its output, for `check-config`, `generate-secret`, `--help`
/// and bad-configuration exits.
///
/// # Panics
/// If it cannot be started or is still running after 30 s (it is killed).
pub fn run_binary(args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut child = command(vars)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary().display()));
    // Read both pipes concurrently so a chatty child cannot block on a full one.
    let stdout = read_all_in_background(child.stdout.take());
    let stderr = read_all_in_background(child.stderr.take());
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(POLL_INTERVAL),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "`{} {}` still running after {RUN_TIMEOUT:?}; stderr:\n{}",
                    binary().display(),
                    args.join(" "),
                    String::from_utf8_lossy(&stderr.join().unwrap_or_default())
                );
            }
            Err(e) => panic!("waiting for {}: {e}", binary().display()),
        }
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

fn read_all_in_background(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

/// Appends each line `pipe` produces to `sink` until it closes.
fn capture_lines(pipe: impl Read + Send + 'static, sink: Arc<Mutex<Vec<String>>>) {
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    lock(&sink).push(text.trim_end_matches(['\r', '\n']).to_owned());
                }
            }
        }
    });
}

/// The real server running as a child process. Dropping it kills the child.
pub struct ServerProc {
    child: Child,
    addr: SocketAddr,
    tls: bool,
    stderr: Arc<Mutex<Vec<String>>>,
    stdout: Arc<Mutex<Vec<String>>>,
}

impl ServerProc {
    /// Starts the server with the environment `vars` (plus `PATH`) and waits
    /// up to 10 s for its `listening on http://ADDR` line. Adds
    /// `LISTEN_ADDR=127.0.0.1:0` unless `vars` sets `LISTEN_ADDR` or `PORT`.
    ///
    /// # Panics
    /// With the captured stderr, if the server exits or does not report its
    /// address in time.
    pub fn start(vars: &[(&str, &str)]) -> ServerProc {
        ServerProc::try_start(vars).unwrap_or_else(|message| panic!("{message}"))
    }

    /// Like [`ServerProc::start`], but returns what went wrong instead of
    /// panicking.
    pub fn try_start(vars: &[(&str, &str)]) -> Result<ServerProc, String> {
        let mut all_vars = vars.to_vec();
        if !vars
            .iter()
            .any(|(name, _)| *name == "LISTEN_ADDR" || *name == "PORT")
        {
            all_vars.push(("LISTEN_ADDR", "127.0.0.1:0"));
        }
        ServerProc::spawn(command(&all_vars))
    }

    /// The address the server reported it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR` or `https://ADDR`, as the server reported it.
    pub fn base_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The process id (of the runner, when `STS_RUNNER` is used).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// All stderr lines captured so far, joined with newlines.
    pub fn stderr(&self) -> String {
        lock(&self.stderr).join("\n")
    }

    /// All stdout lines captured so far, joined with newlines.
    pub fn stdout(&self) -> String {
        lock(&self.stdout).join("\n")
    }

    /// Waits until some stderr line contains `needle`; false on timeout.
    pub fn wait_for_stderr(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if lock(&self.stderr).iter().any(|line| line.contains(needle)) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Sends a signal with `kill`: `"TERM"`, `"-TERM"`, `"SIGINT"`, `"9"`…
    ///
    /// # Panics
    /// If `kill` cannot be run or fails (e.g. the process is gone).
    pub fn signal(&self, sig: &str) {
        let name = sig.trim_start_matches('-');
        let name = name.strip_prefix("SIG").unwrap_or(name);
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap_or_else(|e| panic!("cannot run kill: {e}"));
        assert!(
            status.success(),
            "kill -{name} {} failed: {status}",
            self.pid()
        );
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(POLL_INTERVAL),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// Runs `cmd` (built by the test: its program, arguments, environment
    /// and descriptors) as the server, capturing its output, and waits up
    /// to 10 s for the `listening on` line, like [`ServerProc::start`].
    pub fn spawn(mut cmd: Command) -> Result<ServerProc, String> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        if let Some(pipe) = child.stderr.take() {
            capture_lines(pipe, Arc::clone(&stderr));
        }
        if let Some(pipe) = child.stdout.take() {
            capture_lines(pipe, Arc::clone(&stdout));
        }
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let found = lock(&stderr).iter().find_map(|line| parse_listening(line));
            if let Some((addr, tls)) = found {
                return Ok(ServerProc {
                    child,
                    addr,
                    tls,
                    stderr,
                    stdout,
                });
            }
            let exited = child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() >= deadline {
                let what = if let Some(status) = exited {
                    // Let the reader threads drain what is left in the pipes.
                    thread::sleep(Duration::from_millis(100));
                    format!("exited ({status}) before listening")
                } else {
                    let _ = child.kill();
                    let _ = child.wait();
                    format!("did not report a listening address within {START_TIMEOUT:?}")
                };
                return Err(format!(
                    "server {} {what}; stderr:\n{}\nstdout:\n{}",
                    binary().display(),
                    lock(&stderr).join("\n"),
                    lock(&stdout).join("\n"),
                ));
            }
            thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl fmt::Debug for ServerProc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerProc")
            .field("pid", &self.child.id())
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Finds `listening on http://ADDR` (or `https://`) in a log line.
fn parse_listening(line: &str) -> Option<(SocketAddr, bool)> {
    let (_, rest) = line.split_once("listening on ")?;
    let url = rest.split_whitespace().next()?;
    let (host_port, tls) = match url.strip_prefix("https://") {
        Some(host_port) => (host_port, true),
        None => (url.strip_prefix("http://")?, false),
    };
    let addr = host_port.trim_end_matches('/').parse().ok()?;
    Some((addr, tls))
}

/// The command line that runs the binary under test: the `STS_RUNNER`
/// words (if any), then the binary. For tests that launch it their own way
/// (through `sh`, with descriptors passed) and start it with
/// [`ServerProc::spawn`].
pub fn binary_argv() -> Vec<OsString> {
    let mut argv: Vec<OsString> = env::var("STS_RUNNER")
        .map(|runner| runner.split_whitespace().map(OsString::from).collect())
        .unwrap_or_default();
    argv.push(binary().into_os_string());
    argv
}

/// `PATH` and `QEMU_*` of the test process: what [`ServerProc::start`]
/// passes on besides the test's own variables.
pub fn inherited_env() -> Vec<(OsString, OsString)> {
    env::vars_os()
        .filter(|(name, _)| name == "PATH" || name.to_string_lossy().starts_with("QEMU_"))
        .collect()
}

/// A `kB` (or count) field of `/proc/<pid>/status`, e.g. `VmHWM`, `VmRSS`,
/// `Threads`.
///
/// # Panics
/// If the file or the field cannot be read (the process is gone).
pub fn proc_status(pid: u32, field: &str) -> u64 {
    let path = format!("/proc/{pid}/status");
    let status =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    status
        .lines()
        .find_map(|line| {
            let value = line.strip_prefix(field)?.strip_prefix(':')?;
            value.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no {field} in {path}:\n{status}"))
}

/// Number of open file descriptors of process `pid`.
///
/// # Panics
/// If `/proc/<pid>/fd` cannot be read.
pub fn open_fds(pid: u32) -> usize {
    let path = format!("/proc/{pid}/fd");
    std::fs::read_dir(&path)
        .unwrap_or_else(|e| panic!("cannot list {path}: {e}"))
        .count()
}
