//! The proxy for calls to Spotify, black-box: proxy variables in the
//! environment (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`, in
//! either case) are ignored — a swap goes straight to the mock while a
//! proxy they name records nothing — and `UPSTREAM_PROXY` is used: each
//! connection is tunnelled through it with `CONNECT` (ureq 3 does so for an
//! `http://` accounts URL too, never with absolute-form requests), with its
//! credentials as `Proxy-Authorization`.
//!
//! The proxy is a small stand-in on loopback ([`StandIn`]): it records the
//! head of every request it gets and, for `CONNECT`, opens the tunnel to
//! the mock and relays bytes both ways.

use crate::support;

use std::io::{self, BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use support::mock::MockSpotify;
use support::{ServerProc, assert_error, assert_swapped, post_form, start_mock, start_server};

/// How long the stand-in waits on a silent peer.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest request head the stand-in reads.
const MAX_HEAD_BYTES: usize = 8 * 1024;

/// A proxy on loopback that records each request head it gets and serves
/// `CONNECT` by relaying to the target.
struct StandIn {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

impl StandIn {
    fn start() -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the stand-in proxy");
        let addr = listener.local_addr().expect("its address");
        let heads = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&heads);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let recorded = Arc::clone(&recorded);
                thread::spawn(move || {
                    let _ = serve(stream, &recorded);
                });
            }
        });
        StandIn { addr, heads }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request head received so far.
    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// One connection to the stand-in: record its head; for `CONNECT`, dial
/// the target, say 200 and relay until either side closes; else 502.
fn serve(stream: TcpStream, heads: &Mutex<Vec<String>>) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut head = String::new();
    while head.len() < MAX_HEAD_BYTES {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    heads
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(head.clone());
    let mut client = stream;
    let target = head
        .strip_prefix("CONNECT ")
        .and_then(|rest| rest.split_whitespace().next());
    let Some(upstream) = target.and_then(|t| TcpStream::connect(t).ok()) else {
        client.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")?;
        return Ok(());
    };
    client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
    // Whatever the reader took in past the head goes first.
    let early = reader.buffer().to_vec();
    let (mut to_upstream, mut from_upstream) = (upstream.try_clone()?, upstream);
    to_upstream.write_all(&early)?;
    let mut client_reader = reader.into_inner();
    let mut client_writer = client;
    let up = thread::spawn(move || {
        let _ = io::copy(&mut client_reader, &mut to_upstream);
        let _ = to_upstream.shutdown(Shutdown::Write);
    });
    let _ = io::copy(&mut from_upstream, &mut client_writer);
    let _ = client_writer.shutdown(Shutdown::Write);
    let _ = up.join();
    Ok(())
}

/// The proxy variables ureq would read, every one naming `url`.
fn proxy_variables(url: &str) -> Vec<(&'static str, String)> {
    [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ]
    .into_iter()
    .map(|name| (name, url.to_owned()))
    .collect()
}

fn start_with(mock: &MockSpotify, vars: &[(&str, String)]) -> ServerProc {
    let borrowed: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    start_server(mock, &borrowed)
}

#[test]
fn proxy_variables_in_the_environment_are_ignored() {
    let mock = start_mock();
    mock.add_code("direct");
    let env_proxy = StandIn::start();
    let server = start_with(&mock, &proxy_variables(&env_proxy.url()));

    let resp = post_form(server.addr(), "/swap", &[("code", "direct")]);

    assert_swapped(&resp, "direct");
    assert_eq!(mock.request_count(), 1);
    assert_eq!(env_proxy.heads(), Vec::<String>::new());
}

#[test]
fn upstream_proxy_tunnels_each_call_with_connect_and_its_credentials() {
    let mock = start_mock();
    mock.add_code("proxied");
    let proxy = StandIn::start();
    let env_proxy = StandIn::start();
    // The environment's proxy and NO_PROXY are ignored here too.
    let mut vars = proxy_variables(&env_proxy.url());
    vars.push(("NO_PROXY", "*".to_owned()));
    vars.push((
        "UPSTREAM_PROXY",
        format!("http://user:p%40ss@{}", proxy.addr),
    ));
    let server = start_with(&mock, &vars);

    let resp = post_form(server.addr(), "/swap", &[("code", "proxied")]);

    assert_swapped(&resp, "proxied");
    assert_eq!(mock.request_count(), 1);
    let heads = proxy.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    let target = mock.addr();
    assert!(
        heads[0].starts_with(&format!("CONNECT {target} HTTP/1.1\r\n")),
        "{heads:?}"
    );
    // base64("user:p@ss")
    assert!(
        heads[0].contains("\r\nProxy-Authorization: Basic dXNlcjpwQHNz\r\n"),
        "{heads:?}"
    );
    assert_eq!(env_proxy.heads(), Vec::<String>::new());
    // Nor does the password show in the log.
    assert!(!server.stderr().contains("p%40ss"), "{}", server.stderr());
}

#[test]
fn an_upstream_proxy_that_refuses_the_tunnel_is_a_502() {
    let mock = start_mock();
    mock.add_code("refused");
    // The stand-in answers 502 to anything but CONNECT, and to a CONNECT
    // whose target it cannot reach: port 9 on loopback is closed.
    let proxy = StandIn::start();
    let server = start_server(
        &mock,
        &[
            ("UPSTREAM_PROXY", proxy.url().as_str()),
            ("SPOTIFY_ACCOUNTS_URL", "http://127.0.0.1:9"),
        ],
    );

    let resp = post_form(server.addr(), "/swap", &[("code", "refused")]);

    assert_error(&resp, 502, "server_error");
    assert_eq!(mock.request_count(), 0);
    let heads = proxy.heads();
    assert!(
        heads.len() == 1 && heads[0].starts_with("CONNECT 127.0.0.1:9 HTTP/1.1\r\n"),
        "{heads:?}"
    );
}
