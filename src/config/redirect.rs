//! Redirect URIs, checked the way Spotify checks them (enforced for every
//! app since 2025-11-27): `https://`, a custom scheme (`myapp://cb`), or
//! `http://` to a loopback IP literal, `127.0.0.1` or `[::1]`; `localhost`
//! is refused. A loopback URI registered without a port matches the same
//! host and path with any port (RFC 8252 §7.3: a desktop or command-line
//! app listens on whatever port is free). Everything else is compared
//! exactly. A configuration Spotify would refuse stops the server at start,
//! rather than failing every sign-in later with "INVALID_CLIENT: Insecure
//! redirect URI".

use std::fmt;

/// A configured redirect URI that Spotify accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RedirectUri {
    text: String,
    /// `http://127.0.0.1/…` or `http://[::1]/…` without a port: the length
    /// of its `http://HOST` part; a client may put any port behind it.
    any_port_after: Option<usize>,
}

/// Why Spotify would refuse a redirect URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `http://localhost…`, any case, any port: this URI with
    /// `127.0.0.1` in its place is what to register.
    Localhost { instead: String },
    /// `http://` to a host that is not a loopback IP literal.
    PlainHttp,
    /// No `scheme:` at its start.
    NotUri,
}

/// The loopback hosts Spotify allows over `http://`, as written in a URI.
const LOOPBACK_HOSTS: [&str; 2] = ["127.0.0.1", "[::1]"];

impl RedirectUri {
    /// Parses a configured redirect URI, or says why Spotify would refuse it.
    pub(crate) fn parse(text: &str) -> Result<RedirectUri, Refusal> {
        let Some(colon) = text.find(':') else {
            return Err(Refusal::NotUri);
        };
        let scheme = &text[..colon];
        let scheme_chars = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.');
        if !scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            || !scheme.chars().all(scheme_chars)
        {
            return Err(Refusal::NotUri);
        }
        if !scheme.eq_ignore_ascii_case("http") {
            return Ok(RedirectUri::exact(text));
        }
        let Some((authority, _)) = http_parts(text) else {
            return Err(Refusal::PlainHttp);
        };
        let (host, port) = split_port(authority);
        if host.eq_ignore_ascii_case("localhost") {
            let prefix_len = "http://".len();
            let instead = format!("http://127.0.0.1{}", &text[prefix_len + host.len()..]);
            return Err(Refusal::Localhost { instead });
        }
        if !LOOPBACK_HOSTS.contains(&host) {
            return Err(Refusal::PlainHttp);
        }
        let any_port_after = port.is_none().then_some("http://".len() + host.len());
        Ok(RedirectUri {
            text: text.to_string(),
            any_port_after,
        })
    }

    fn exact(text: &str) -> RedirectUri {
        RedirectUri {
            text: text.to_string(),
            any_port_after: None,
        }
    }

    /// The URI as configured (what is sent upstream when a client names
    /// none).
    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether a client's `redirect_uri` is this one, as Spotify matches
    /// it: exactly, or for a loopback URI registered without a port, with
    /// any port.
    pub(crate) fn matches(&self, client: &str) -> bool {
        if client == self.text {
            return true;
        }
        let Some(host_end) = self.any_port_after else {
            return false;
        };
        let (host_part, rest) = self.text.split_at(host_end);
        let Some(after_host) = client.strip_prefix(host_part) else {
            return false;
        };
        let Some(after_colon) = after_host.strip_prefix(':') else {
            return false;
        };
        let digits = after_colon.bytes().take_while(u8::is_ascii_digit).count();
        let port_ok = (1..=5).contains(&digits)
            && after_colon[..digits]
                .parse::<u16>()
                .is_ok_and(|port| port > 0);
        port_ok && &after_colon[digits..] == rest
    }
}

impl fmt::Display for RedirectUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The authority and the rest of an `http://` URI (any case of the scheme).
fn http_parts(text: &str) -> Option<(&str, &str)> {
    let after = text.get("http://".len()..)?;
    if !text[.."http://".len()].eq_ignore_ascii_case("http://") {
        return None;
    }
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    Some(after.split_at(end))
}

/// `host` and `port` of an authority; a bracketed IPv6 host keeps its
/// brackets. A user part (`user@host`) stays in the host, so it is never
/// taken for a loopback address.
fn split_port(authority: &str) -> (&str, Option<&str>) {
    let host_end = if authority.starts_with('[') {
        authority.find(']').map_or(authority.len(), |i| i + 1)
    } else {
        authority.find(':').unwrap_or(authority.len())
    };
    let (host, port) = authority.split_at(host_end);
    (host, port.strip_prefix(':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_custom_schemes_and_loopback_literals_pass() {
        for uri in [
            "https://app.example.com/callback",
            "myapp://callback",
            "com.example.app:/oauth2redirect",
            "http://127.0.0.1/cb",
            "http://127.0.0.1:8888/callback",
            "http://[::1]:8080/cb",
            "HTTP://127.0.0.1/cb",
        ] {
            assert_eq!(
                RedirectUri::parse(uri).map(|u| u.to_string()),
                Ok(uri.into())
            );
        }
    }

    #[test]
    fn localhost_is_refused_with_the_loopback_literal_to_use() {
        for (uri, instead) in [
            (
                "http://localhost:8888/callback",
                "http://127.0.0.1:8888/callback",
            ),
            ("http://LocalHost/cb", "http://127.0.0.1/cb"),
            ("HTTP://localhost", "http://127.0.0.1"),
        ] {
            let instead = instead.to_string();
            assert_eq!(
                RedirectUri::parse(uri),
                Err(Refusal::Localhost { instead }),
                "{uri}"
            );
        }
    }

    #[test]
    fn plain_http_elsewhere_and_non_uris_are_refused() {
        for uri in [
            "http://192.168.1.5/cb",
            "http://127.0.0.2/cb",
            "http://example.com/cb",
            "http://user@127.0.0.1/cb",
            "http://[::2]/cb",
            "http://",
        ] {
            assert_eq!(RedirectUri::parse(uri), Err(Refusal::PlainHttp), "{uri}");
        }
        for text in ["callback", "", "1app://cb", "my app://cb"] {
            assert_eq!(RedirectUri::parse(text), Err(Refusal::NotUri), "{text}");
        }
    }

    #[test]
    fn loopback_without_a_port_matches_any_port_with_the_same_host_and_path() {
        let uri = RedirectUri::parse("http://127.0.0.1/cb?x=1").unwrap();
        assert!(uri.matches("http://127.0.0.1/cb?x=1"));
        assert!(uri.matches("http://127.0.0.1:53682/cb?x=1"));
        assert!(uri.matches("http://127.0.0.1:1/cb?x=1"));
        for other in [
            "http://127.0.0.1:53682/cb",
            "http://127.0.0.1:53682/cb?x=2",
            "http://127.0.0.1:53682/other?x=1",
            "http://[::1]:53682/cb?x=1",
            "http://127.0.0.1:0/cb?x=1",
            "http://127.0.0.1:65536/cb?x=1",
            "http://127.0.0.1:/cb?x=1",
            "http://127.0.0.1:5x/cb?x=1",
            "https://127.0.0.1:53682/cb?x=1",
        ] {
            assert!(!uri.matches(other), "{other}");
        }
        let v6 = RedirectUri::parse("http://[::1]/cb").unwrap();
        assert!(v6.matches("http://[::1]:8080/cb"));
        assert!(!v6.matches("http://127.0.0.1:8080/cb"));
    }

    #[test]
    fn everything_else_is_compared_exactly() {
        let with_port = RedirectUri::parse("http://127.0.0.1:8888/cb").unwrap();
        assert!(with_port.matches("http://127.0.0.1:8888/cb"));
        assert!(!with_port.matches("http://127.0.0.1:8889/cb"));
        let custom = RedirectUri::parse("myapp://cb").unwrap();
        assert!(custom.matches("myapp://cb"));
        assert!(!custom.matches("myapp://cb/"));
        assert!(!custom.matches("MYAPP://cb"));
    }
}
