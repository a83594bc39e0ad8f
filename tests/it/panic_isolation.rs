//! A panic while answering one request costs that request, never a worker
//! or another client: the HTTP layer runs in-process here (the public
//! `http::Server` API, as `lib.rs` builds it) with a handler that panics on
//! chosen paths, and a single worker, so a worker lost to a panic would
//! leave nobody to answer the next request.

use crate::support;

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle, ThreadId};
use std::time::Duration;

use spotify_token_swap::http::{
    Handler, ProcessLimits, Record, Request, Response, Server, Settings, ShutdownHandle, Stats,
};
use support::{Conn, assert_error, raw_get, raw_get_close, request, wait_until};

/// Answers `/ok`; panics on `/panic` (a string message), `/panic-any` (a
/// non-string payload) and, after answering, in `record` for
/// `/panic-in-record`. Notes the thread of every call to `handle`.
#[derive(Default)]
struct Panicky {
    threads: Mutex<Vec<ThreadId>>,
}

impl Handler for Panicky {
    fn handle(&self, request: &Request) -> Response {
        self.threads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(thread::current().id());
        match request.path.as_str() {
            "/panic" => panic!("handler panicked on purpose"),
            "/panic-any" => std::panic::panic_any(42_u32),
            _ => Response::json(200, br#"{"ok":true}"#.to_vec()),
        }
    }

    fn record(&self, record: &Record<'_>) {
        if record.path == "/panic-in-record" {
            panic!("record panicked on purpose");
        }
    }
}

impl Panicky {
    /// The distinct threads `handle` ran on.
    fn distinct_threads(&self) -> Vec<ThreadId> {
        let mut seen: Vec<ThreadId> = Vec::new();
        for id in self
            .threads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            if !seen.contains(id) {
                seen.push(*id);
            }
        }
        seen
    }
}

/// An in-process server with one worker around a [`Panicky`] handler.
struct Running {
    addr: SocketAddr,
    handler: Arc<Panicky>,
    stats: Arc<Stats>,
    shutdown: ShutdownHandle,
    run: Option<JoinHandle<bool>>,
}

impl Running {
    fn start() -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let handler = Arc::new(Panicky::default());
        let stats = Arc::new(Stats::default());
        let settings = Settings {
            worker_threads: 1,
            max_connections: Some(1024),
            max_connections_per_client: 8,
            client_ipv6_prefix: 64,
            trusted_proxies: Vec::new(),
            request_time_limit: Duration::from_secs(5),
        };
        let server = Server::new(
            listener,
            Arc::clone(&handler),
            settings,
            None,
            ProcessLimits::default(),
            Arc::clone(&stats),
        )
        .expect("set up the poller");
        let addr = server.local_addr().expect("local address");
        let shutdown = server.shutdown_handle();
        let run = thread::spawn(move || server.run().expect("the poller must not fail"));
        Running {
            addr,
            handler,
            stats,
            shutdown,
            run: Some(run),
        }
    }

    /// Shuts the server down and asserts every worker finished.
    fn stop(mut self) {
        self.shutdown.shutdown();
        let drained = self
            .run
            .take()
            .expect("running")
            .join()
            .expect("the server thread itself must not panic");
        assert!(drained, "a worker did not finish at shutdown");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A failed test still stops its server.
        self.shutdown.shutdown();
    }
}

fn assert_ok(resp: &support::Resp) {
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.json(), serde_json::json!({ "ok": true }), "{resp:?}");
}

#[test]
fn handler_panic_is_answered_500_and_the_next_connection_is_served() {
    let server = Running::start();

    let resp = request(server.addr, &raw_get_close("/panic"));

    assert_error(&resp, 500, "server_error");
    assert_ok(&request(server.addr, &raw_get_close("/ok")));
    server.stop();
}

#[test]
fn keep_alive_connection_is_served_after_a_handler_panic() {
    let server = Running::start();
    let mut conn = Conn::open(server.addr);

    conn.send(&raw_get("/panic"));
    let failed = conn.read_response();
    conn.send(&raw_get("/ok"));
    let next = conn.read_response();

    assert_error(&failed, 500, "server_error");
    assert_ne!(failed.header("connection"), Some("close"), "{failed:?}");
    assert_ok(&next);
    server.stop();
}

#[test]
fn pipelined_request_behind_a_panicking_one_is_answered() {
    let server = Running::start();
    let mut conn = Conn::open(server.addr);

    let mut pipelined = raw_get("/panic-any");
    pipelined.extend_from_slice(&raw_get("/ok"));
    conn.send(&pipelined);

    assert_error(&conn.read_response(), 500, "server_error");
    assert_ok(&conn.read_response());
    server.stop();
}

#[test]
fn one_worker_survives_many_panics_in_a_row() {
    const PANICS: usize = 20;
    let server = Running::start();

    for i in 0..PANICS {
        let path = if i % 2 == 0 { "/panic" } else { "/panic-any" };
        let resp = request(server.addr, &raw_get_close(path));
        assert_error(&resp, 500, "server_error");
    }
    assert_ok(&request(server.addr, &raw_get_close("/ok")));

    // Every request, panicking or not, was handled by the one worker there
    // is: the same thread, never a replacement.
    let threads = server.handler.distinct_threads();
    assert_eq!(threads.len(), 1, "handled on {threads:?}");
    // … which goes back to idle once the last connection is done.
    wait_until(Duration::from_secs(5), "the worker back to idle", || {
        server.stats.busy_workers.load(Ordering::SeqCst) == 0
    });
    server.stop();
}

#[test]
fn panic_after_answering_drops_only_that_connection() {
    let server = Running::start();
    let mut conn = Conn::open(server.addr);

    // `record` runs after the answer is written: the client has its answer,
    // the connection is dropped, the worker carries on.
    conn.send(&raw_get("/panic-in-record"));
    assert_ok(&conn.read_response());
    assert!(
        conn.is_closed_by_peer(Duration::from_secs(5)),
        "connection kept after a panic in the HTTP layer"
    );
    assert_ok(&request(server.addr, &raw_get_close("/ok")));

    assert_eq!(server.handler.distinct_threads().len(), 1);
    server.stop();
}
