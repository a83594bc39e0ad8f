//! Who the client is: the peer, or — when the peer is a trusted proxy —
//! the address it names in `X-Forwarded-For`, read from the right. Trusted
//! proxies are addresses and ranges (`TRUSTED_PROXIES`).

use std::net::IpAddr;

use super::net::{IpNet, any_contains};

/// The right-most `X-Forwarded-For` entry that is not a trusted proxy, when
/// the peer is a trusted proxy; otherwise the peer.
pub(crate) fn client_address(
    trusted: &[IpNet],
    peer: IpAddr,
    forwarded_for: Option<&str>,
) -> IpAddr {
    if !any_contains(trusted, peer) {
        return peer;
    }
    let Some(list) = forwarded_for else {
        return peer;
    };
    for entry in list.rsplit(',') {
        match parse_forwarded_ip(entry.trim()) {
            Some(ip) if any_contains(trusted, ip) => continue,
            Some(ip) => return ip,
            // SECURITY: an entry we cannot parse may be forged; stop at it
            // and attribute the request to the last address we trust.
            None => return peer,
        }
    }
    peer
}

fn parse_forwarded_ip(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    // `1.2.3.4:5678` and `[::1]:5678` forms.
    entry
        .parse::<std::net::SocketAddr>()
        .ok()
        .map(|a| a.ip().to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn client_address_walks_forwarded_for_from_the_right() {
        // (trusted proxies, peer, X-Forwarded-For, the client)
        let cases = [
            // An untrusted peer is the client, whatever it forwards.
            ("127.0.0.1", "203.0.113.9", "1.2.3.4", "203.0.113.9"),
            // A trusted proxy names the rightmost untrusted entry.
            (
                "127.0.0.1 10.0.0.2",
                "127.0.0.1",
                "6.6.6.6, 198.51.100.7, 10.0.0.2",
                "198.51.100.7",
            ),
            // An entry that does not parse stops the walk.
            ("127.0.0.1", "127.0.0.1", "6.6.6.6, garbage", "127.0.0.1"),
            // Entries with ports are understood.
            ("127.0.0.1", "127.0.0.1", "[2001:db8::1]:443", "2001:db8::1"),
            ("127.0.0.1", "127.0.0.1", "192.0.2.1:5000", "192.0.2.1"),
            // Ranges: a peer in one is trusted, and so are entries in one.
            (
                "10.0.0.0/8 fd00::/8",
                "10.1.2.3",
                "6.6.6.6, 198.51.100.7, fd00::9, 10.9.9.9",
                "198.51.100.7",
            ),
            ("10.0.0.0/8", "11.0.0.1", "198.51.100.7", "11.0.0.1"),
            ("fd00::/8", "fd12::1", "203.0.113.5", "203.0.113.5"),
        ];
        for (trusted, peer, forwarded, client) in cases {
            let trusted: Vec<IpNet> = trusted.split(' ').map(|t| t.parse().unwrap()).collect();
            assert_eq!(
                client_address(&trusted, ip(peer), Some(forwarded)),
                ip(client),
                "{forwarded:?} from {peer}"
            );
        }
    }
}
