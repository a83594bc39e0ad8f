//! Headless Chromium driven over the DevTools protocol on a pipe
//! (`--remote-debugging-pipe`: commands on the child's fd 3, answers and
//! events on its fd 4, each a JSON text ended by a NUL byte), for tests
//! that must press a button and follow redirects as a person would: one
//! tab, a phone-sized viewport, navigate, evaluate, wait for the load
//! event, take a screenshot. No crate: a few JSON messages.

use std::fs::File;
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::fd::{FromRawFd as _, RawFd};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::fs::TempDir;

/// How long one command or one page load may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// The fds Chromium reads commands from and writes answers to.
const CHILD_IN_FD: RawFd = 3;
const CHILD_OUT_FD: RawFd = 4;
/// A descriptor number above 4, where the pipe ends are moved before they
/// are put at 3 and 4 (so one never overwrites the other).
const SPARE_FD_FLOOR: RawFd = 10;

/// A headless Chromium with one tab. Dropping it kills the browser.
pub struct Browser {
    child: Child,
    to_browser: File,
    messages: Receiver<Value>,
    /// Events read while waiting for something else.
    events: Vec<Value>,
    session: String,
    next_id: u64,
    _profile: TempDir,
}

impl Browser {
    /// Starts `chromium` headless with a fresh profile and opens a tab of
    /// `width` × `height` CSS pixels, as a phone.
    pub fn start(chromium: &Path, width: u32, height: u32) -> Browser {
        let profile = TempDir::new("cdp");
        let (child, to_browser, from_browser) = spawn(chromium, &profile);
        let (send, messages) = mpsc::channel();
        thread::spawn(move || {
            let mut reader = BufReader::new(from_browser);
            let mut message = Vec::new();
            // Ends when the browser exits and the pipe closes.
            while reader.read_until(0, &mut message).is_ok_and(|n| n > 0) {
                message.pop();
                if let Ok(value) = serde_json::from_slice(&message) {
                    if send.send(value).is_err() {
                        break;
                    }
                }
                message.clear();
            }
        });
        let mut browser = Browser {
            child,
            to_browser,
            messages,
            events: Vec::new(),
            session: String::new(),
            next_id: 0,
            _profile: profile,
        };
        browser.open_tab(width, height);
        browser
    }

    fn open_tab(&mut self, width: u32, height: u32) {
        let target = self.call_browser("Target.createTarget", json!({ "url": "about:blank" }));
        let target_id = target["targetId"].clone();
        let attached = self.call_browser(
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
        );
        self.session = attached["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": true }),
        );
        self.call("Page.enable", json!({}));
    }

    /// Sends a command to the browser itself.
    fn call_browser(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, None)
    }

    /// Sends a command to the tab and waits for its result.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(method, params, Some(&session))
    }

    fn send(&mut self, method: &str, params: Value, session: Option<&str>) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = Value::from(session);
        }
        let mut bytes = message.to_string().into_bytes();
        bytes.push(0);
        self.to_browser
            .write_all(&bytes)
            .unwrap_or_else(|e| panic!("{method}: the browser is gone: {e}"));
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let message = self.receive(deadline, method);
            if message["id"].as_u64() == Some(id) {
                if let Some(error) = message.get("error") {
                    panic!("{method} failed: {error}");
                }
                return message["result"].clone();
            }
            if message.get("method").is_some() {
                self.events.push(message);
            }
        }
    }

    fn receive(&mut self, deadline: Instant, waiting_for: &str) -> Value {
        let left = deadline.saturating_duration_since(Instant::now());
        self.messages
            .recv_timeout(left)
            .unwrap_or_else(|e| panic!("no answer to {waiting_for} within {STEP_TIMEOUT:?}: {e}"))
    }

    /// Forgets the events read so far (before an action whose events a
    /// test will wait for).
    fn forget_events(&mut self) {
        while let Ok(message) = self.messages.try_recv() {
            drop(message);
        }
        self.events.clear();
    }

    /// Waits for the tab's next `Page.loadEventFired`.
    fn wait_loaded(&mut self, after: &str) {
        let deadline = Instant::now() + STEP_TIMEOUT;
        let loaded = |event: &Value| event["method"] == "Page.loadEventFired";
        if let Some(at) = self.events.iter().position(loaded) {
            self.events.drain(..=at);
            return;
        }
        loop {
            let message = self.receive(deadline, after);
            if loaded(&message) {
                return;
            }
        }
    }

    /// Loads `url` and waits for its load event.
    pub fn navigate(&mut self, url: &str) {
        self.forget_events();
        self.call("Page.navigate", json!({ "url": url }));
        self.wait_loaded(url);
    }

    /// Evaluates `expression` in the page; its value.
    pub fn evaluate(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true }),
        );
        result["result"]["value"].clone()
    }

    /// Clicks the element `selector` names and waits for the page it
    /// leads to (redirects followed) to load.
    pub fn click_and_wait(&mut self, selector: &str) {
        self.forget_events();
        let script = format!("document.querySelector({}).click()", Value::from(selector));
        self.evaluate(&script);
        self.wait_loaded(selector);
    }

    /// The address and the HTML of the page shown.
    pub fn page(&mut self) -> (String, String) {
        let url = self.evaluate("location.href");
        let html = self.evaluate("document.documentElement.outerHTML");
        (
            url.as_str().unwrap_or_default().to_owned(),
            html.as_str().unwrap_or_default().to_owned(),
        )
    }

    /// Writes a PNG of the viewport to `path`.
    pub fn screenshot(&mut self, path: &Path) {
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let png = STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("base64 PNG");
        std::fs::write(path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The flags every headless Chromium of the tests starts with: no sandbox
/// (root in CI), nothing fetched in the background, no QUIC (loopback
/// only).
pub const CHROMIUM_FLAGS: [&str; 9] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
];

/// Starts `chromium` with its DevTools pipe on fds 3 and 4; the child,
/// our end to write commands to, our end to read from.
fn spawn(chromium: &Path, profile: &TempDir) -> (Child, File, File) {
    let (child_in, to_browser) = pipe();
    let (from_browser, child_out) = pipe();
    let mut command = Command::new(chromium);
    command
        .args(CHROMIUM_FLAGS)
        .arg("--remote-debugging-pipe")
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: the closure runs in the forked child before exec and
    // calls only fcntl and dup2, which are async-signal-safe; both fds
    // are open for the whole call.
    unsafe {
        command.pre_exec(move || {
            let spare_in = libc::fcntl(child_in, libc::F_DUPFD_CLOEXEC, SPARE_FD_FLOOR);
            let spare_out = libc::fcntl(child_out, libc::F_DUPFD_CLOEXEC, SPARE_FD_FLOOR);
            if spare_in == -1
                || spare_out == -1
                || libc::dup2(spare_in, CHILD_IN_FD) == -1
                || libc::dup2(spare_out, CHILD_OUT_FD) == -1
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromium.display()));
    // SAFETY: the child's ends, made by `pipe` and owned here alone;
    // the child has its own copies.
    unsafe {
        drop(File::from_raw_fd(child_in));
        drop(File::from_raw_fd(child_out));
    }
    // SAFETY: our ends, owned from here on by these Files.
    let (to_browser, from_browser) = unsafe {
        (
            File::from_raw_fd(to_browser),
            File::from_raw_fd(from_browser),
        )
    };
    (child, to_browser, from_browser)
}

/// A pipe, both ends close-on-exec: (read end, write end).
fn pipe() -> (RawFd, RawFd) {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    let made = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(made, 0, "pipe2: {}", std::io::Error::last_os_error());
    (fds[0], fds[1])
}
