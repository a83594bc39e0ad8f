//! The one log line per answered request — method, path, status, time
//! taken, client — and the [`Record`] the handler is told about for its
//! metrics. Both are written for every answer, the layer's own included.

use std::net::IpAddr;
use std::time::Instant;

use super::handler::{Handler, Record};

/// Logs one answered request and tells the handler about it.
pub(crate) fn log_and_record<H: Handler + ?Sized>(
    handler: &H,
    method: &str,
    path: &str,
    status: u16,
    note: Option<u32>,
    started: Instant,
    client: Option<IpAddr>,
) {
    let duration = started.elapsed();
    // SECURITY: the path is logged without its query string (stripped at
    // parse time) and with control characters escaped, so neither a code in
    // a query nor a forged log line can get into the journal.
    log::info!(
        "{} {} {} {}ms {}",
        method,
        Printable(path),
        status,
        duration.as_millis(),
        ClientOrDash(client)
    );
    handler.record(&Record { path, status, note });
}

/// A path as it may appear in a log line: at most 200 characters, escaped.
pub(crate) struct Printable<'a>(pub(crate) &'a str);

impl std::fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const MAX_CHARS: usize = 200;
        let plain = |b: &u8| (b' '..=b'~').contains(b) && !matches!(b, b'\'' | b'"' | b'\\');
        // The usual case, a short path of plain ASCII, is written as is.
        if self.0.len() <= MAX_CHARS && self.0.bytes().all(|b| plain(&b)) {
            return f.write_str(self.0);
        }
        let mut chars = self.0.chars();
        for c in chars.by_ref().take(MAX_CHARS) {
            std::fmt::Display::fmt(&c.escape_default(), f)?;
        }
        if chars.next().is_some() {
            f.write_str("…")?;
        }
        Ok(())
    }
}

/// A client address in a log line, `-` when unknown.
struct ClientOrDash(Option<IpAddr>);

impl std::fmt::Display for ClientOrDash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            // std formats each octet through the padding machinery (about
            // 1.5k instructions per log line); four small numbers need less.
            Some(IpAddr::V4(v4)) => {
                let mut text = [0u8; 15];
                let mut len = 0;
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        text[len] = b'.';
                        len += 1;
                    }
                    let digits = [octet / 100, octet / 10 % 10, octet % 10];
                    let skip = if octet >= 100 {
                        0
                    } else if octet >= 10 {
                        1
                    } else {
                        2
                    };
                    for digit in &digits[skip..] {
                        text[len] = b'0' + digit;
                        len += 1;
                    }
                }
                // Only ASCII digits and dots were written.
                f.write_str(std::str::from_utf8(&text[..len]).map_err(|_| std::fmt::Error)?)
            }
            Some(ip) => std::fmt::Display::fmt(&ip, f),
            None => f.write_str("-"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_addresses_print_as_std_does() {
        for ip in [
            "0.0.0.0",
            "1.2.3.4",
            "10.20.30.40",
            "100.200.255.9",
            "255.255.255.255",
            "127.0.0.10",
            "::1",
            "2001:db8::42",
            "::ffff:1.2.3.4",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ClientOrDash(Some(ip)).to_string(), ip.to_string());
        }
        assert_eq!(ClientOrDash(None).to_string(), "-");
    }

    #[test]
    fn printable_escapes_control_characters() {
        let printable = |path: &str| Printable(path).to_string();
        assert_eq!(printable("/a\nb"), "/a\\nb");
        assert_eq!(printable("/swap"), "/swap");
        assert_eq!(printable("/a\"b'c\\"), "/a\\\"b\\'c\\\\");
        assert_eq!(printable("/caf\u{e9}"), "/caf\\u{e9}");
        assert_eq!(printable(&"x".repeat(200)), "x".repeat(200));
        assert_eq!(printable(&"x".repeat(300)).chars().count(), 201);
    }
}
