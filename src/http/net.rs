//! Networks and client keys. [`IpNet`] is an address or a CIDR range
//! (`TRUSTED_PROXIES`, `METRICS_ALLOW`). [`ClientKey`] is what the
//! per-client caps count by: an IPv4 address, or the IPv6 network of
//! `CLIENT_IPV6_PREFIX` bits an address is in — an IPv6 customer is
//! handed a /64 (or more), so counting by address would make one
//! customer 2^64 clients.
//!
//! An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a dual-stack
//! listener sees for an IPv4 peer) is its IPv4 address everywhere here.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Bits in an IPv4 address.
const IPV4_BITS: u8 = 32;
/// Bits in an IPv6 address.
const IPV6_BITS: u8 = 128;
/// Bits before the IPv4 address in an IPv4-mapped IPv6 address.
const IPV4_MAPPED_PREFIX_BITS: u8 = 96;

/// An address, or a CIDR range of addresses (`10.0.0.0/8`, `fd00::/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    /// The first address of the range (no bit set past `prefix`).
    network: IpAddr,
    /// Leading bits every address of the range shares.
    prefix: u8,
}

/// Text that is not an address or a CIDR range with its host bits clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotIpNet;

impl IpNet {
    /// The one address `ip`.
    fn host(ip: IpAddr) -> IpNet {
        let ip = ip.to_canonical();
        IpNet {
            network: ip,
            prefix: bits_of(ip),
        }
    }

    /// Whether `ip` is in this range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                u32::from(ip) & v4_mask(self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                u128::from(ip) & v6_mask(self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

/// Whether any of `nets` holds `ip`.
pub fn any_contains(nets: &[IpNet], ip: IpAddr) -> bool {
    nets.iter().any(|net| net.contains(ip))
}

impl FromStr for IpNet {
    type Err = NotIpNet;

    /// `a.b.c.d`, `a.b.c.d/n` (n ≤ 32), an IPv6 address, `x::/n` (n ≤ 128).
    /// SECURITY: a range with bits set past its prefix (`10.0.0.1/8`) is
    /// refused, not widened: it may mean one host written with its
    /// network's length, and trusting the whole network instead would
    /// trust far more than meant.
    fn from_str(text: &str) -> Result<IpNet, NotIpNet> {
        let Some((address, prefix)) = text.split_once('/') else {
            return text.parse().map(IpNet::host).map_err(|_| NotIpNet);
        };
        let address: IpAddr = address.parse().map_err(|_| NotIpNet)?;
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(NotIpNet);
        }
        let mut prefix: u8 = prefix.parse().map_err(|_| NotIpNet)?;
        if prefix > bits_of(address) {
            return Err(NotIpNet);
        }
        let mut network = address;
        // `::ffff:10.0.0.0/104` is `10.0.0.0/8`: peers are compared as IPv4.
        if let (IpAddr::V6(v6), true) = (address, prefix >= IPV4_MAPPED_PREFIX_BITS) {
            if let Some(v4) = v6.to_ipv4_mapped() {
                network = IpAddr::V4(v4);
                prefix -= IPV4_MAPPED_PREFIX_BITS;
            }
        }
        let net = IpNet { network, prefix };
        if masked(network, prefix) != network {
            return Err(NotIpNet);
        }
        Ok(net)
    }
}

impl fmt::Display for IpNet {
    /// An address alone when the range is one address, else `network/bits`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix == bits_of(self.network) {
            write!(f, "{}", self.network)
        } else {
            write!(f, "{}/{}", self.network, self.prefix)
        }
    }
}

/// Who a per-client cap counts a peer as: its IPv4 address, or its IPv6
/// address cut to the configured prefix (`CLIENT_IPV6_PREFIX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ClientKey(IpAddr);

impl ClientKey {
    /// The key of `ip`: IPv4 (IPv4-mapped included) by address, IPv6 by
    /// its first `ipv6_prefix` bits (at most 128).
    pub(crate) fn new(ip: IpAddr, ipv6_prefix: u8) -> ClientKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) => ClientKey(IpAddr::V4(v4)),
            v6 => ClientKey(masked(v6, ipv6_prefix.min(IPV6_BITS))),
        }
    }
}

fn bits_of(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => IPV4_BITS,
        IpAddr::V6(_) => IPV6_BITS,
    }
}

/// `ip` with every bit past the first `prefix` cleared.
fn masked(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4) & v4_mask(prefix))),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & v6_mask(prefix))),
    }
}

fn v4_mask(prefix: u8) -> u32 {
    u32::MAX
        .checked_shl(u32::from(IPV4_BITS.saturating_sub(prefix)))
        .unwrap_or(0)
}

fn v6_mask(prefix: u8) -> u128 {
    u128::MAX
        .checked_shl(u32::from(IPV6_BITS.saturating_sub(prefix)))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn net(text: &str) -> IpNet {
        text.parse()
            .unwrap_or_else(|_| panic!("{text} should parse"))
    }

    #[test]
    fn ranges_hold_their_addresses_and_no_others() {
        // (range, inside, outside)
        let cases = [
            ("10.0.0.0/8", "10.255.3.4", "11.0.0.0"),
            ("127.0.0.0/8", "127.0.0.2", "128.0.0.1"),
            ("192.0.2.7", "192.0.2.7", "192.0.2.8"),
            ("192.0.2.7/32", "192.0.2.7", "192.0.2.6"),
            ("0.0.0.0/0", "203.0.113.9", "::1"),
            ("fd00::/8", "fd12:3456::1", "fe80::1"),
            ("::1", "::1", "::2"),
            ("2001:db8::/32", "2001:db8:ffff::1", "2001:db9::"),
            ("::/0", "2001:db8::1", "127.0.0.1"),
        ];
        for (range, inside, outside) in cases {
            assert!(net(range).contains(ip(inside)), "{inside} in {range}");
            assert!(
                !net(range).contains(ip(outside)),
                "{outside} not in {range}"
            );
        }
    }

    #[test]
    fn ipv4_mapped_addresses_are_ipv4_on_both_sides() {
        assert!(net("127.0.0.0/8").contains(ip("::ffff:127.0.0.9")));
        assert!(net("::ffff:10.0.0.0/104").contains(ip("10.1.2.3")));
        assert_eq!(net("::ffff:10.0.0.0/104"), net("10.0.0.0/8"));
        assert_eq!(net("::ffff:192.0.2.1"), net("192.0.2.1"));
        assert_eq!(net("::ffff:192.0.2.1").to_string(), "192.0.2.1");
    }

    #[test]
    fn what_is_not_a_range_is_refused() {
        for bad in [
            "",
            "proxy",
            "10.0.0.0/",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/+8",
            "10.0.0.0/-1",
            "10.0.0.0/8/8",
            "10.0.0.1/8",
            "fd00::1/8",
            "300.1.1.1",
            "10.0.0.0 /8",
        ] {
            assert_eq!(bad.parse::<IpNet>(), Err(NotIpNet), "{bad:?}");
        }
    }

    #[test]
    fn a_range_shows_as_written_and_an_address_alone() {
        for text in ["10.0.0.0/8", "fd00::/8", "::1", "127.0.0.1", "0.0.0.0/0"] {
            assert_eq!(net(text).to_string(), text);
        }
        assert_eq!(net("10.0.0.5/32").to_string(), "10.0.0.5");
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_prefix_and_ipv4_by_address() {
        let key = |text: &str, prefix| ClientKey::new(ip(text), prefix);
        // One /64: one client.
        assert_eq!(key("2001:db8:1:2::1", 64), key("2001:db8:1:2:ffff::9", 64));
        assert_ne!(key("2001:db8:1:2::1", 64), key("2001:db8:1:3::1", 64));
        // A /56 takes in what a /64 keeps apart; 128 is the exact address.
        assert_eq!(key("2001:db8:1:2::1", 56), key("2001:db8:1:3::1", 56));
        assert_ne!(key("2001:db8:1:2::1", 128), key("2001:db8:1:2::2", 128));
        // IPv4 is by address whatever the IPv6 prefix.
        assert_ne!(key("192.0.2.1", 32), key("192.0.2.2", 32));
    }

    #[test]
    fn an_ipv4_mapped_peer_is_keyed_as_its_ipv4_address() {
        let mapped = ClientKey::new(ip("::ffff:192.0.2.1"), 64);
        assert_eq!(mapped, ClientKey::new(ip("192.0.2.1"), 64));
        // Not as the /64 of ::ffff:0:0, which every IPv4 peer shares.
        assert_ne!(mapped, ClientKey::new(ip("::ffff:192.0.2.2"), 64));
    }
}
