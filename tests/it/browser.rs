//! CORS (`CORS_ALLOW_ORIGINS`), as a browser and as raw sockets see it.
//!
//! Browser: headless Chromium loads a page from one loopback origin
//! (`http://127.0.0.1:A`, a tiny static server in this file) whose script
//! `fetch()`es `/swap` on the real server at another origin
//! (`http://127.0.0.1:B` — another port is another origin) and writes the
//! answer, or the error, into the DOM, which `--dump-dom` prints. A form
//! POST is a "simple request": the browser sends it without a preflight and
//! only withholds the answer from the page when the origin is not allowed.
//! A JSON POST is preflighted with `OPTIONS`, and not sent at all when the
//! preflight does not allow it.
//!
//! Chromium is looked up as `STS_CHROMIUM`, `chromium`, `chromium-browser`
//! or `google-chrome`. Without one, the browser tests print a SKIPPED line
//! and pass — unless `CI` or `STS_REQUIRE_BROWSER` is set, where they fail.
//!
//! Several apps (`SPOTIFY_APPS`): the page reads the answers of an app that
//! allows its origin and not those of one that does not, and names its app
//! by `client_id` on the plain path (raw sockets: `apps.rs`).
//!
//! Raw sockets: the preflight's and real responses' headers, a disallowed
//! origin, and CORS off.

use crate::support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use support::mock::MockSpotify;
use support::{
    Resp, ServerProc, TempDir, assert_error, assert_no_cors_headers, heavy, request, start_mock,
    start_server,
};

/// How long one Chromium run may take before it is killed.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(60);
/// Virtual time Chromium gives the page's script before dumping the DOM.
const VIRTUAL_TIME_BUDGET_MS: &str = "5000";
/// How long to wait for the server's request log line.
const LOG_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// The page and its static server
// ---------------------------------------------------------------------------

/// How the page's script posts to `/swap`.
#[derive(Clone, Copy)]
enum Body {
    /// `application/x-www-form-urlencoded`: a CORS "simple request".
    Form,
    /// `application/json`: needs a preflight.
    Json,
}

/// A page that POSTs `code` to `target` and writes `STATUS <n> <body>` or
/// `ERROR <name>: <message>` into `<pre id="out">`.
fn page(target: &str, body: Body, code: &str) -> String {
    page_with(target, body, &[("code", code)])
}

/// A page that POSTs `fields` to `target`, as [`page`] does.
fn page_with(target: &str, body: Body, fields: &[(&str, &str)]) -> String {
    let (content_type, payload) = match body {
        Body::Form => (
            "application/x-www-form-urlencoded",
            support::form_body(fields),
        ),
        Body::Json => {
            let object: serde_json::Map<String, serde_json::Value> = fields
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).into()))
                .collect();
            (
                "application/json",
                serde_json::Value::Object(object).to_string(),
            )
        }
    };
    // serde_json string literals are valid JavaScript string literals.
    let js = |s: &str| serde_json::Value::from(s).to_string();
    format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>cors</title></head>
<body><pre id="out">pending</pre>
<script>
const out = document.getElementById("out");
fetch({target}, {{ method: "POST", headers: {{ "Content-Type": {content_type} }}, body: {payload} }})
  .then(r => r.text().then(t => {{ out.textContent = "STATUS " + r.status + " " + t; }}))
  .catch(e => {{ out.textContent = "ERROR " + e.name + ": " + e.message; }});
</script>
</body></html>
"#,
        target = js(target),
        content_type = js(content_type),
        payload = js(&payload),
    )
}

/// Serves one HTML page at `/` (404 elsewhere) on `127.0.0.1:0`, one thread
/// per connection, until dropped.
struct PageServer {
    addr: SocketAddr,
    page: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl PageServer {
    fn start() -> PageServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the page server");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("page server address");
        let page = Arc::new(Mutex::new(String::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (page, stop) = (Arc::clone(&page), Arc::clone(&stop));
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let html = page.lock().unwrap_or_else(PoisonError::into_inner).clone();
                            thread::spawn(move || serve_page(stream, &html));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        PageServer {
            addr,
            page,
            stop,
            accept: Some(accept),
        }
    }

    /// `http://127.0.0.1:PORT`, the page's origin.
    fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn set_page(&self, html: String) {
        *self.page.lock().unwrap_or_else(PoisonError::into_inner) = html;
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(handle) = self.accept.take() {
            let _ = handle.join();
        }
    }
}

/// Answers one request on `stream` (bounded reads) and closes.
fn serve_page(mut stream: TcpStream, html: &str) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let mut head = Vec::new();
    let mut chunk = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
    }
    let target = String::from_utf8_lossy(&head)
        .split(' ')
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let (status, body) = if target == "/" {
        ("200 OK", html)
    } else {
        ("404 Not Found", "")
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n\
         Content-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
    let _ = stream.flush();
}

// ---------------------------------------------------------------------------
// Chromium
// ---------------------------------------------------------------------------

/// The Chromium to run, if any.
fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("STS_CHROMIUM").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// Chromium, or `None` after printing why the test is skipped. Panics
/// instead under CI, where the browser must be there.
fn chromium_or_skip(test: &str) -> Option<PathBuf> {
    let found = chromium();
    if found.is_none() {
        let required = std::env::var_os("CI").is_some_and(|v| !v.is_empty())
            || std::env::var_os("STS_REQUIRE_BROWSER").is_some_and(|v| !v.is_empty());
        assert!(
            !required,
            "{test}: Chromium is required (CI or STS_REQUIRE_BROWSER is set) but not found; \
             install it (apt-get install chromium) or set STS_CHROMIUM"
        );
        // Straight to stderr: the test harness hides print!/eprint! output of
        // passing tests, and a skip must be seen.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: Chromium not found (install the `chromium` package or set STS_CHROMIUM)"
        );
    }
    found
}

/// Loads `url` in headless Chromium with a fresh profile and returns the
/// text of `<pre id="out">` from the dumped DOM. Chromium loads the machine:
/// one at a time, never beside a timed test ([`heavy`]).
fn run_page(chromium: &PathBuf, url: &str) -> String {
    let _heavy = heavy();
    let profile = TempDir::new("chromium");
    let mut child = Command::new(chromium)
        .args(support::cdp::CHROMIUM_FLAGS)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}"))
        .arg("--dump-dom")
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromium.display()));
    let stdout = read_in_background(child.stdout.take());
    let stderr = read_in_background(child.stderr.take());
    let deadline = Instant::now() + CHROMIUM_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "Chromium still running after {CHROMIUM_TIMEOUT:?} (killed); stderr:\n{}",
                    String::from_utf8_lossy(&stderr.join().unwrap_or_default())
                );
            }
        }
    };
    let dom = String::from_utf8_lossy(&stdout.join().unwrap_or_default()).into_owned();
    let log = String::from_utf8_lossy(&stderr.join().unwrap_or_default()).into_owned();
    assert!(
        status.success(),
        "Chromium failed ({status}):\n{log}\n{dom}"
    );
    let start = dom
        .find("<pre id=\"out\">")
        .map(|i| i + "<pre id=\"out\">".len())
        .unwrap_or_else(|| panic!("no output element in the DOM:\n{dom}\n{log}"));
    let end = dom[start..]
        .find("</pre>")
        .map(|i| start + i)
        .unwrap_or_else(|| panic!("unterminated output element:\n{dom}"));
    // --dump-dom serialises text with &, < and > escaped; JSON has quotes
    // only, which it leaves alone.
    dom[start..end]
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

fn read_in_background(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            // Bounded by the child's lifetime: the pipe closes when it exits
            // or is killed.
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

/// A page server, a mock with `code` registered, and the real server with
/// `cors` (`None`: CORS off); the page posts `body` to the server's `/swap`.
struct Scene {
    pages: PageServer,
    mock: MockSpotify,
    server: ServerProc,
}

impl Scene {
    fn new(cors: Option<&str>, body: Body, code: &str) -> Scene {
        let pages = PageServer::start();
        let mock = start_mock();
        mock.add_code(code);
        let allow = cors.map(|c| c.replace("{page}", &pages.origin()));
        let extra: Vec<(&str, &str)> = allow
            .as_deref()
            .map(|a| vec![("CORS_ALLOW_ORIGINS", a)])
            .unwrap_or_default();
        let server = start_server(&mock, &extra);
        pages.set_page(page(&format!("http://{}/swap", server.addr()), body, code));
        Scene {
            pages,
            mock,
            server,
        }
    }

    fn load(&self, chromium: &PathBuf) -> String {
        run_page(chromium, &format!("{}/", self.pages.origin()))
    }

    /// Waits for a request log line containing `needle`.
    fn logged(&self, needle: &str) -> bool {
        self.server.wait_for_stderr(needle, LOG_TIMEOUT)
    }
}

// ---------------------------------------------------------------------------
// In the browser
// ---------------------------------------------------------------------------

#[test]
fn browser_at_an_allowed_origin_reads_the_swap_answer() {
    let Some(chromium) = chromium_or_skip("browser_at_an_allowed_origin_reads_the_swap_answer")
    else {
        return;
    };
    let scene = Scene::new(Some("{page}"), Body::Form, "browser-code");

    let out = scene.load(&chromium);

    assert!(
        out.starts_with("STATUS 200 "),
        "{out}\n{}",
        scene.server.stderr()
    );
    let json: serde_json::Value =
        serde_json::from_str(&out["STATUS 200 ".len()..]).expect("the page got JSON");
    assert_eq!(json["access_token"], "access-browser-code");
    assert!(scene.logged("POST /swap 200"), "{}", scene.server.stderr());
    // A form POST is a simple request: no preflight.
    assert!(
        !scene.server.stderr().contains("OPTIONS /swap"),
        "{}",
        scene.server.stderr()
    );
}

#[test]
fn browser_at_an_allowed_origin_reads_error_answers_too() {
    let Some(chromium) = chromium_or_skip("browser_at_an_allowed_origin_reads_error_answers_too")
    else {
        return;
    };
    let scene = Scene::new(Some("{page}"), Body::Form, "registered-code");
    scene.pages.set_page(page(
        &format!("http://{}/swap", scene.server.addr()),
        Body::Form,
        "unknown-code",
    ));

    let out = scene.load(&chromium);

    assert!(out.starts_with("STATUS 400 "), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&out["STATUS 400 ".len()..]).expect("the page got JSON");
    assert_eq!(json["error"], "invalid_grant");
}

/// CORS does not stop a simple request from being sent and acted on; it
/// stops the page from reading the answer.
#[test]
fn browser_at_another_origin_sends_the_form_post_but_cannot_read_the_answer() {
    let Some(chromium) = chromium_or_skip(
        "browser_at_another_origin_sends_the_form_post_but_cannot_read_the_answer",
    ) else {
        return;
    };
    let scene = Scene::new(Some("http://127.0.0.1:1"), Body::Form, "blocked-code");

    let out = scene.load(&chromium);

    assert!(out.starts_with("ERROR TypeError"), "{out}");
    assert!(!out.contains("access-blocked-code"), "{out}");
    assert!(scene.logged("POST /swap 200"), "{}", scene.server.stderr());
    assert_eq!(scene.mock.request_count(), 1);
}

#[test]
fn browser_preflights_a_json_post_then_sends_it_from_an_allowed_origin() {
    let Some(chromium) =
        chromium_or_skip("browser_preflights_a_json_post_then_sends_it_from_an_allowed_origin")
    else {
        return;
    };
    let scene = Scene::new(
        Some("https://other.example, {page}"),
        Body::Json,
        "json-code",
    );

    let out = scene.load(&chromium);

    assert!(
        out.starts_with("STATUS 200 "),
        "{out}\n{}",
        scene.server.stderr()
    );
    assert!(
        out.contains(r#""access_token":"access-json-code""#),
        "{out}"
    );
    assert!(scene.logged("POST /swap 200"), "{}", scene.server.stderr());
    let logs = scene.server.stderr();
    let preflight = logs.find("OPTIONS /swap 204");
    let post = logs.find("POST /swap 200");
    assert!(
        preflight.is_some() && preflight < post,
        "no preflight before the POST:\n{logs}"
    );
}

#[test]
fn browser_stops_a_json_post_at_the_preflight_from_another_origin() {
    let Some(chromium) =
        chromium_or_skip("browser_stops_a_json_post_at_the_preflight_from_another_origin")
    else {
        return;
    };
    let scene = Scene::new(Some("http://127.0.0.1:1"), Body::Json, "json-blocked");

    let out = scene.load(&chromium);

    assert!(out.starts_with("ERROR TypeError"), "{out}");
    assert!(
        scene.logged("OPTIONS /swap 204"),
        "{}",
        scene.server.stderr()
    );
    assert!(
        !scene.server.stderr().contains("POST /swap"),
        "{}",
        scene.server.stderr()
    );
    assert_eq!(scene.mock.request_count(), 0, "the POST reached Spotify");
}

#[test]
fn browser_json_post_fails_at_the_preflight_with_cors_off() {
    let Some(chromium) = chromium_or_skip("browser_json_post_fails_at_the_preflight_with_cors_off")
    else {
        return;
    };
    let scene = Scene::new(None, Body::Json, "cors-off");

    let out = scene.load(&chromium);

    assert!(out.starts_with("ERROR TypeError"), "{out}");
    assert!(
        scene.logged("OPTIONS /swap 405"),
        "{}",
        scene.server.stderr()
    );
    assert_eq!(scene.mock.request_count(), 0, "the POST reached Spotify");
}

// ---------------------------------------------------------------------------
// Several apps, in the browser
// ---------------------------------------------------------------------------

/// Two apps: `music` (the first) allows only `https://music.example`, `tv`
/// the page's origin. A page server, a mock knowing both, the server.
fn two_apps() -> (PageServer, MockSpotify, ServerProc) {
    let pages = PageServer::start();
    let mock = MockSpotify::start("music-id", "music-secret", "music://cb");
    mock.add_client("tv-id", "tv-secret", "tv://cb");
    let origin = pages.origin();
    let accounts = mock.base_url();
    let server = ServerProc::start(&[
        ("SPOTIFY_APPS", "music,tv"),
        ("SPOTIFY_APP_MUSIC_CLIENT_ID", "music-id"),
        ("SPOTIFY_APP_MUSIC_CLIENT_SECRET", "music-secret"),
        ("SPOTIFY_APP_MUSIC_REDIRECT_URI", "music://cb"),
        (
            "SPOTIFY_APP_MUSIC_CORS_ALLOW_ORIGINS",
            "https://music.example",
        ),
        ("SPOTIFY_APP_TV_CLIENT_ID", "tv-id"),
        ("SPOTIFY_APP_TV_CLIENT_SECRET", "tv-secret"),
        ("SPOTIFY_APP_TV_REDIRECT_URI", "tv://cb"),
        ("SPOTIFY_APP_TV_CORS_ALLOW_ORIGINS", &origin),
        ("SPOTIFY_ACCOUNTS_URL", &accounts),
        ("WORKER_THREADS", "4"),
    ]);
    (pages, mock, server)
}

#[test]
fn browser_reads_the_answers_of_the_app_that_allows_its_origin_and_not_the_others() {
    let Some(chromium) = chromium_or_skip(
        "browser_reads_the_answers_of_the_app_that_allows_its_origin_and_not_the_others",
    ) else {
        return;
    };
    let (pages, mock, server) = two_apps();
    mock.add_code_for("tv-id", "tv-code");
    mock.add_code_for("music-id", "music-code");
    let url = format!("{}/", pages.origin());

    pages.set_page(page(
        &format!("http://{}/tv/swap", server.addr()),
        Body::Form,
        "tv-code",
    ));
    let tv = run_page(&chromium, &url);
    pages.set_page(page(
        &format!("http://{}/music/swap", server.addr()),
        Body::Form,
        "music-code",
    ));
    let music = run_page(&chromium, &url);

    assert!(tv.starts_with("STATUS 200 "), "{tv}\n{}", server.stderr());
    assert!(tv.contains(r#""access_token":"access-tv-code""#), "{tv}");
    assert!(music.starts_with("ERROR TypeError"), "{music}");
    assert!(!music.contains("access-music-code"), "{music}");
    // The form POST was sent and answered all the same.
    assert!(
        server.wait_for_stderr("POST /music/swap 200", LOG_TIMEOUT),
        "{}",
        server.stderr()
    );
    assert_eq!(mock.request_count(), 2);
}

#[test]
fn browser_names_its_app_by_client_id_in_a_preflighted_json_post_to_the_plain_path() {
    let Some(chromium) = chromium_or_skip(
        "browser_names_its_app_by_client_id_in_a_preflighted_json_post_to_the_plain_path",
    ) else {
        return;
    };
    let (pages, mock, server) = two_apps();
    mock.add_code_for("tv-id", "tv-json");
    pages.set_page(page_with(
        &format!("http://{}/swap", server.addr()),
        Body::Json,
        &[("code", "tv-json"), ("client_id", "tv-id")],
    ));

    let out = run_page(&chromium, &format!("{}/", pages.origin()));

    assert!(out.starts_with("STATUS 200 "), "{out}\n{}", server.stderr());
    assert!(out.contains(r#""access_token":"access-tv-json""#), "{out}");
    let logs = server.stderr();
    let preflight = logs.find("OPTIONS /swap 204");
    let post = logs.find("POST /swap 200");
    assert!(
        preflight.is_some() && preflight < post,
        "no preflight before the POST:\n{logs}"
    );
    let caller = mock.last_request().and_then(|r| r.basic_client_id());
    assert_eq!(caller.as_deref(), Some("tv-id"));
}

// ---------------------------------------------------------------------------
// Raw sockets
// ---------------------------------------------------------------------------

const APP_ORIGIN: &str = "https://app.example";

fn preflight(addr: SocketAddr, path: &str, origin: &str) -> Resp {
    let raw = format!(
        "OPTIONS {path} HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\n\
         Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type\r\n\
         Connection: close\r\n\r\n"
    );
    request(addr, raw.as_bytes())
}

fn post_from(addr: SocketAddr, origin: &str, body: &str) -> Resp {
    let raw = format!(
        "POST /swap HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    request(addr, raw.as_bytes())
}

#[test]
fn preflight_from_an_allowed_origin_gets_204_with_every_cors_header() {
    let mock = start_mock();
    let server = start_server(&mock, &[("CORS_ALLOW_ORIGINS", APP_ORIGIN)]);

    for path in ["/swap", "/refresh"] {
        let resp = preflight(server.addr(), path, APP_ORIGIN);

        assert_eq!(resp.status, 204, "{resp:?}");
        assert_eq!(resp.header("access-control-allow-origin"), Some(APP_ORIGIN));
        assert_eq!(resp.header("access-control-allow-methods"), Some("POST"));
        assert_eq!(
            resp.header("access-control-allow-headers"),
            Some("Content-Type")
        );
        assert_eq!(resp.header("access-control-max-age"), Some("600"));
        assert_eq!(resp.header("vary"), Some("Origin"));
        assert!(resp.body.is_empty(), "{resp:?}");
    }
    assert_eq!(mock.request_count(), 0);
}

#[test]
fn answers_to_an_allowed_origin_carry_it_and_vary_origin() {
    let mock = start_mock();
    mock.add_code("cors-code");
    let server = start_server(
        &mock,
        &[(
            "CORS_ALLOW_ORIGINS",
            &format!("https://x.example,{APP_ORIGIN}"),
        )],
    );

    let ok = post_from(server.addr(), APP_ORIGIN, "code=cors-code");
    let error = post_from(server.addr(), APP_ORIGIN, "nothing=here");

    assert_eq!(ok.status, 200, "{ok:?}");
    assert_error(&error, 400, "invalid_request");
    for resp in [&ok, &error] {
        assert_eq!(
            resp.header("access-control-allow-origin"),
            Some(APP_ORIGIN),
            "{resp:?}"
        );
        assert_eq!(resp.header("vary"), Some("Origin"), "{resp:?}");
        // Preflight-only headers stay off real answers.
        assert_eq!(resp.header("access-control-allow-methods"), None);
    }
}

#[test]
fn star_allows_any_origin_by_echoing_it() {
    let mock = start_mock();
    let server = start_server(&mock, &[("CORS_ALLOW_ORIGINS", "*")]);

    let resp = preflight(server.addr(), "/swap", "https://anyone.example");

    assert_eq!(resp.status, 204);
    assert_eq!(
        resp.header("access-control-allow-origin"),
        Some("https://anyone.example")
    );
    assert_eq!(resp.header("vary"), Some("Origin"));
}

#[test]
fn a_disallowed_origin_gets_no_cors_headers() {
    let mock = start_mock();
    mock.add_code("cors-code");
    let server = start_server(&mock, &[("CORS_ALLOW_ORIGINS", APP_ORIGIN)]);

    let pre = preflight(server.addr(), "/swap", "https://evil.example");
    let post = post_from(server.addr(), "https://evil.example", "code=cors-code");

    assert_eq!(pre.status, 204, "{pre:?}");
    assert_no_cors_headers(&pre, "preflight");
    assert_eq!(post.status, 200, "{post:?}");
    assert_no_cors_headers(&post, "POST");
    assert_eq!(post.header("vary"), None, "{post:?}");
}

#[test]
fn with_cors_off_options_is_405_and_answers_carry_no_cors_headers() {
    let mock = start_mock();
    mock.add_code("cors-code");
    let server = start_server(&mock, &[]);

    let pre = preflight(server.addr(), "/swap", APP_ORIGIN);
    let post = post_from(server.addr(), APP_ORIGIN, "code=cors-code");

    assert_error(&pre, 405, "method_not_allowed");
    assert_eq!(pre.header("allow"), Some("POST"));
    assert_no_cors_headers(&pre, "preflight");
    assert_eq!(post.status, 200, "{post:?}");
    assert_no_cors_headers(&post, "POST");
}

#[test]
fn with_cors_on_the_allow_header_names_options() {
    let mock = start_mock();
    let server = start_server(&mock, &[("CORS_ALLOW_ORIGINS", APP_ORIGIN)]);

    let resp = support::get(server.addr(), "/swap");

    assert_error(&resp, 405, "method_not_allowed");
    assert_eq!(resp.header("allow"), Some("POST, OPTIONS"));
}

// ---------------------------------------------------------------------------
// Device login in the browser
// ---------------------------------------------------------------------------

/// A phone's viewport, in CSS pixels.
const PHONE_WIDTH: u32 = 390;
const PHONE_HEIGHT: u32 = 844;

/// Where the screenshots of the device-login pages go (kept after the
/// test, to be looked at): `target/tmp/device-pages/`.
fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("device-pages");
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    dir
}

/// Asserts no page shows a token, a code or a secret of the flow.
fn assert_shows_none_of(html: &str, secrets: &[&str], page: &str) {
    for secret in secrets {
        assert!(!html.contains(secret), "{page} shows {secret}:\n{html}");
    }
}

#[test]
fn browser_signs_a_device_in_pressing_continue_on_a_phone_sized_page() {
    let Some(chromium) = chromium_or_skip("browser_signs_a_device_in_pressing_continue") else {
        return;
    };
    let _heavy = heavy();
    let scene = crate::device::Scene::start(&[]);
    let code = scene.device_code(&[("scope", "streaming user-read-email")]);
    let device_code = code["device_code"].as_str().expect("device_code");
    let user_code = code["user_code"].as_str().expect("user_code");
    let dir = screenshot_dir();
    let mut browser = support::cdp::Browser::start(&chromium, PHONE_WIDTH, PHONE_HEIGHT);

    browser.navigate(code["verification_uri"].as_str().expect("verification_uri"));
    browser.screenshot(&dir.join("1-enter-code.png"));
    let (_, enter) = browser.page();
    assert!(
        enter.contains("Enter the code your device shows"),
        "{enter}"
    );

    browser.navigate(
        code["verification_uri_complete"]
            .as_str()
            .expect("complete"),
    );
    browser.screenshot(&dir.join("2-continue.png"));
    let (_, confirm) = browser.page();
    assert!(
        confirm.contains(user_code) && confirm.contains("streaming"),
        "{confirm}"
    );
    assert!(confirm.contains("user-read-email"), "{confirm}");

    // Continue: POST /device (Origin: null under no-referrer), 303 to the
    // mock's /authorize, 303 back to /callback.
    browser.click_and_wait("button[type=submit]");
    browser.screenshot(&dir.join("3-signed-in.png"));
    let (url, signed_in) = browser.page();
    assert!(
        url.starts_with(&format!("{}/callback?", scene.public)),
        "{url}"
    );
    assert!(signed_in.contains("Return to your device"), "{signed_in}");

    let tokens = scene.poll(device_code);
    assert_eq!(tokens.status, 200, "{tokens:?}");
    let body = tokens.json();
    let sealed = body["refresh_token"].as_str().expect("refresh_token");
    let exchange = scene.mock.last_request().expect("the exchange");
    let verifier = exchange
        .field("code_verifier")
        .expect("verifier")
        .to_owned();
    let secrets = [
        "access-authorized-1",
        "refresh-authorized-1",
        "authorized-1",
        sealed,
        device_code,
        &verifier,
    ];
    for (html, page) in [
        (&enter, "enter"),
        (&confirm, "continue"),
        (&signed_in, "signed in"),
    ] {
        assert_shows_none_of(html, &secrets, page);
    }
    // A declined sign-in, in the same browser.
    scene.mock.set_authorize_denies(true);
    let code = scene.device_code(&[]);
    browser.navigate(
        code["verification_uri_complete"]
            .as_str()
            .expect("complete"),
    );
    browser.click_and_wait("button[type=submit]");
    browser.screenshot(&dir.join("4-declined.png"));
    let (_, declined) = browser.page();
    assert!(declined.contains("Sign-in declined"), "{declined}");
    let denied = scene.poll(code["device_code"].as_str().expect("device_code"));
    assert_error(&denied, 400, "access_denied");
    eprintln!("device-login screenshots: {}", dir.display());
}
