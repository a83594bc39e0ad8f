//! Fair shares, black-box: an IPv6 /64 is one client for the per-client
//! connection cap (`CLIENT_IPV6_PREFIX`). 300 connections from 300
//! addresses of one /64 meet one cap; a bystander in the next /64 is
//! served; with `CLIENT_IPV6_PREFIX=128` the same 300 are 300 clients.
//!
//! A test needs a /64 of its own on loopback, so it runs again, as a child
//! of itself, inside a private network namespace (`unshare --net`): there
//! `lo` comes up, [`NETWORK`] is routed to it as local, and binding to any
//! address of it is allowed (`net.ipv6.ip_nonlocal_bind`). Nothing leaves
//! the namespace, and the host's network is untouched. That needs root and
//! `unshare`: without them the test says so and passes — unless
//! `STS_REQUIRE_NETNS_TEST` is set, as CI does.

use crate::support;

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv6Addr, TcpStream};
use std::process::Command;
use std::time::Duration;

use support::conns::read_until_close;
use support::metrics::{scrape, value};
use support::{ServerProc, connect_from, raw_get_close, request_from, start_both, wait_until};

/// Set in the child that runs a test inside the namespace.
const INSIDE: &str = "STS_NETNS_INSIDE";
/// The /48 routed to `lo` inside the namespace.
const NETWORK: &str = "fd00:5ea:1::/48";
/// The /64 the attacker's addresses are in: `fd00:5ea:1:1::/64`.
const ATTACKER: [u16; 4] = [0xfd00, 0x5ea, 1, 1];
/// The next /64, a bystander's.
const BYSTANDER: [u16; 4] = [0xfd00, 0x5ea, 1, 2];
/// Addresses of the attacker's /64 that each open one connection.
const ADDRESSES: usize = 300;
/// `MAX_CONNECTIONS_PER_CLIENT` of these servers.
const CAP: usize = 100;
/// How long a turned-away connection may take to get its 503.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Address `host` of the /64 `net`.
fn address(net: [u16; 4], host: usize) -> IpAddr {
    let [a, b, c, d] = net;
    let host = u16::try_from(host).expect("a small host number");
    IpAddr::V6(Ipv6Addr::new(a, b, c, d, 0, 0, 0, host))
}

/// Whether this process is the child inside the namespace; if not, runs
/// the test `name` there (or says why it cannot) and returns false.
fn inside_private_network(name: &str) -> bool {
    if std::env::var_os(INSIDE).is_some() {
        set_up_network();
        return true;
    }
    let _heavy = support::heavy();
    let probe = Command::new("unshare")
        .args(["--net", "ip", "link", "set", "lo", "up"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        unsupported(
            "`unshare --net ip link set lo up` failed; needs util-linux, iproute2 and root",
        );
        return false;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let output = Command::new("unshare")
        .arg("--net")
        .arg(exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1")
        .output()
        .expect("run the test inside a network namespace");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{name} inside the namespace: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    false
}

/// Inside the namespace: `lo` up, [`NETWORK`] local on it, and its
/// addresses bindable although none is assigned.
fn set_up_network() {
    for args in [
        &["link", "set", "lo", "up"][..],
        &["-6", "route", "add", "local", NETWORK, "dev", "lo"][..],
    ] {
        let status = Command::new("ip").args(args).status().expect("run ip");
        assert!(status.success(), "ip {args:?}: {status}");
    }
    std::fs::write("/proc/sys/net/ipv6/ip_nonlocal_bind", "1")
        .expect("allow binding addresses of the routed network");
}

/// Whether nothing has arrived on `stream`, nor its end (it is peeked
/// at, not read).
fn silent(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).expect("non-blocking");
    let mut byte = [0u8; 1];
    let silent = matches!(stream.peek(&mut byte), Err(e) if e.kind() == ErrorKind::WouldBlock);
    stream.set_nonblocking(false).expect("blocking");
    silent
}

fn unsupported(why: &str) {
    if std::env::var_os("STS_REQUIRE_NETNS_TEST").is_some() {
        panic!("STS_REQUIRE_NETNS_TEST is set, but {why}");
    }
    eprintln!("skipped: {why}");
}

/// A server on `[::1]` with a per-client cap of [`CAP`] and `extra`.
fn start(extra: &[(&str, &str)]) -> (support::mock::MockSpotify, ServerProc) {
    let cap = CAP.to_string();
    let mut vars = vec![
        ("LISTEN_ADDR", "[::1]:0"),
        ("MAX_CONNECTIONS_PER_CLIENT", cap.as_str()),
    ];
    vars.extend_from_slice(extra);
    start_both(&vars)
}

/// One connection from each of [`ADDRESSES`] addresses of the attacker's
/// /64, once the server has either admitted or turned away every one;
/// each with whether it was admitted (held open with nothing said) — a
/// connection turned away has its 503 and is closed.
fn connect_each(server: &ServerProc) -> Vec<(TcpStream, bool)> {
    let streams: Vec<TcpStream> = (1..=ADDRESSES)
        .map(|host| {
            let from = address(ATTACKER, host);
            connect_from(from, server.addr()).unwrap_or_else(|e| panic!("connect from {from}: {e}"))
        })
        .collect();
    // Admitted ones are open connections (the scrape is one more); the
    // others are counted as turned away.
    wait_until(
        ANSWER_TIMEOUT,
        "every connection admitted or turned away",
        || {
            let metrics = scrape(server.addr());
            let open = value(&metrics, "spotify_token_swap_open_connections") - 1.0;
            let refused = value(&metrics, "spotify_token_swap_rejected_connection_cap_total");
            open + refused == ADDRESSES as f64
        },
    );
    streams
        .into_iter()
        .map(|stream| {
            let held = silent(&stream);
            (stream, held)
        })
        .collect()
}

#[test]
fn three_hundred_addresses_of_one_ipv6_slash_64_share_one_cap() {
    if !inside_private_network(
        "fairness::three_hundred_addresses_of_one_ipv6_slash_64_share_one_cap",
    ) {
        return;
    }
    let (_mock, server) = start(&[]);
    let addr = server.addr();
    let mut conns = connect_each(&server);
    let admitted = conns.iter().filter(|(_, held)| *held).count();
    assert_eq!(admitted, CAP, "{}", server.stderr());
    // Every one turned away was told 503 and closed.
    for (i, (stream, held)) in conns.iter_mut().enumerate() {
        if !*held {
            let (bytes, closed) = read_until_close(stream, ANSWER_TIMEOUT);
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                text.starts_with("HTTP/1.1 503 ") && closed,
                "connection {i}: {text:?}"
            );
        }
    }
    // The next /64 is another client, served at once.
    let bystander = request_from(address(BYSTANDER, 1), addr, &raw_get_close("/health"));
    assert_eq!(bystander.status, 200, "{bystander:?}");
    let metrics = scrape(addr);
    let refused = (ADDRESSES - CAP) as f64;
    assert_eq!(
        value(&metrics, "spotify_token_swap_rejected_connection_cap_total"),
        refused
    );
}

#[test]
fn with_a_prefix_of_128_each_ipv6_address_is_a_client() {
    if !inside_private_network("fairness::with_a_prefix_of_128_each_ipv6_address_is_a_client") {
        return;
    }
    let (_mock, server) = start(&[("CLIENT_IPV6_PREFIX", "128")]);
    let conns = connect_each(&server);
    let admitted = conns.iter().filter(|(_, held)| *held).count();
    assert_eq!(admitted, ADDRESSES, "{}", server.stderr());
    let metrics = scrape(server.addr());
    assert_eq!(
        value(&metrics, "spotify_token_swap_rejected_connection_cap_total"),
        0.0
    );
}
