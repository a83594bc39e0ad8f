//! Reading a request head: httparse, then the framing rules this server
//! holds every request to (one `Host`, one `Content-Length` or chunked,
//! never both), then the few headers it keeps, copied out of the buffer.
//! The query string is kept apart from the path, so the path can be routed
//! and logged without it.
//!
//! A head is parsed again from its start each time more of it arrives, so
//! the answer never depends on how the peer split it into reads (the fuzz
//! target `head` checks that through [`inspect_head`]).

use super::error::Error;
use super::limits::{MAX_HEAD_BYTES, MAX_HEADERS};
use super::request::Request;

/// The parts of a request head the server uses, copied out of the buffer.
/// SECURITY: its derived `Debug` is safe because `Request`'s leaves the body
/// out; a field that can hold a code or token needs a type that redacts.
#[derive(Debug, Default)]
pub(crate) struct Head {
    pub(crate) request: Request,
    pub(crate) forwarded_for: Option<String>,
    pub(crate) content_length: Option<u64>,
    pub(crate) chunked: bool,
    pub(crate) keep_alive: bool,
    pub(crate) expect_continue: bool,
}

impl Head {
    /// Whether a body follows the head.
    pub(crate) fn expects_body(&self) -> bool {
        self.chunked || self.content_length.is_some_and(|n| n > 0)
    }
}

/// Headers that decide the framing, as seen so far.
#[derive(Default)]
struct Framing<'h> {
    transfer_encoding: Option<&'h [u8]>,
    hosts: usize,
}

/// Parses a request head from the start of `data`: `None` while it is
/// incomplete, else the head and its length in bytes.
pub(crate) fn parse_head(data: &[u8]) -> Result<Option<(Head, usize)>, Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let status = parsed.parse(data).map_err(|e| match e {
        httparse::Error::TooManyHeaders => Error::HeadTooLarge,
        httparse::Error::Version if looks_like_other_http_version(data) => {
            Error::VersionNotSupported
        }
        _ => Error::BadRequest("the request head is not valid HTTP/1.1"),
    })?;
    let len = match status {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial if data.len() >= MAX_HEAD_BYTES => {
            return Err(Error::HeadTooLarge);
        }
        httparse::Status::Partial => return Ok(None),
    };
    if len > MAX_HEAD_BYTES {
        return Err(Error::HeadTooLarge);
    }
    Ok(Some((head_from(&parsed)?, len)))
}

/// What a head parses to, for fuzzing and tests: the method, path, declared
/// body framing and head length — or the error the client would get.
#[derive(Debug, PartialEq, Eq)]
pub struct HeadSummary {
    /// The request method, as sent.
    pub method: String,
    /// The path, without query string or fragment.
    pub path: String,
    /// The declared `Content-Length`, if any.
    pub content_length: Option<u64>,
    /// Whether the body is sent with chunked transfer encoding.
    pub chunked: bool,
    pub(crate) keep_alive: bool,
    /// Length of the head in bytes, up to and including its blank line.
    pub head_bytes: usize,
}

/// Parses a request head as the connection loop does (`Ok(None)`: not
/// complete yet). Entry point for the fuzz target.
pub fn inspect_head(data: &[u8]) -> Result<Option<HeadSummary>, Error> {
    Ok(parse_head(data)?.map(|(head, head_bytes)| HeadSummary {
        method: head.request.method,
        path: head.request.path,
        content_length: head.content_length,
        chunked: head.chunked,
        keep_alive: head.keep_alive,
        head_bytes,
    }))
}

/// Whether the request line ends in an `HTTP/x.y` version other than 1.x.
fn looks_like_other_http_version(data: &[u8]) -> bool {
    let line_end = data
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(data.len());
    let line = &data[..line_end];
    let version = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
    version.len() == 8
        && version.starts_with(b"HTTP/")
        && version[5].is_ascii_digit()
        && version[6] == b'.'
        && version[7].is_ascii_digit()
}

/// Copies what the server needs out of a parsed head and checks framing.
fn head_from(parsed: &httparse::Request<'_, '_>) -> Result<Head, Error> {
    let minor_version = parsed.version.unwrap_or(1);
    let mut head = Head {
        request: Request {
            method: parsed.method.unwrap_or_default().to_string(),
            path: path_of(parsed.path.unwrap_or_default()).to_string(),
            query: query_of(parsed.path.unwrap_or_default()).map(String::from),
            minor_version,
            ..Request::default()
        },
        keep_alive: minor_version >= 1,
        ..Head::default()
    };
    let mut framing = Framing::default();
    for header in parsed.headers.iter() {
        head.take_header(header.name, header.value, &mut framing)?;
    }
    head.check_framing(&framing)?;
    Ok(head)
}

impl Head {
    /// Takes in one header line.
    fn take_header<'h>(
        &mut self,
        name: &str,
        value: &'h [u8],
        framing: &mut Framing<'h>,
    ) -> Result<(), Error> {
        let minor_version = self.request.minor_version;
        if name.eq_ignore_ascii_case("content-length") {
            let length = parse_content_length(value)?;
            if self
                .content_length
                .is_some_and(|previous| previous != length)
            {
                return Err(Error::BadRequest("conflicting Content-Length headers"));
            }
            self.content_length = Some(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if framing.transfer_encoding.is_some() {
                return Err(Error::UnsupportedTransferEncoding);
            }
            framing.transfer_encoding = Some(value);
        } else if name.eq_ignore_ascii_case("connection") {
            for token in String::from_utf8_lossy(value).split(',') {
                let token = token.trim();
                if token.eq_ignore_ascii_case("close") {
                    self.keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") && minor_version == 0 {
                    self.keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("host") {
            framing.hosts += 1;
        } else if name.eq_ignore_ascii_case("expect") {
            self.expect_continue = value.eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case("content-type") {
            self.request.content_type = Some(text(value));
        } else if name.eq_ignore_ascii_case("origin") {
            self.request.origin = Some(text(value));
        } else if name.eq_ignore_ascii_case("cookie") {
            let value = text(value);
            self.request.cookie = Some(match self.request.cookie.take() {
                Some(earlier) => format!("{earlier}; {value}"),
                None => value,
            });
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            let value = text(value);
            self.forwarded_for = Some(match self.forwarded_for.take() {
                Some(earlier) => format!("{earlier},{value}"),
                None => value,
            });
        }
        Ok(())
    }

    /// Checks `Host` and the body's framing once every header is in.
    fn check_framing(&mut self, framing: &Framing<'_>) -> Result<(), Error> {
        let minor_version = self.request.minor_version;
        // RFC 9112 §3.2: an HTTP/1.1 request carries exactly one Host
        // (HTTP/1.0 may omit it).
        if framing.hosts > 1 || (framing.hosts == 0 && minor_version >= 1) {
            return Err(Error::BadRequest(
                "an HTTP/1.1 request must carry exactly one Host header",
            ));
        }
        let Some(te) = framing.transfer_encoding else {
            return Ok(());
        };
        // SECURITY: Content-Length together with Transfer-Encoding is the
        // classic request-smuggling setup; refuse it rather than pick one.
        if self.content_length.is_some() {
            return Err(Error::BadRequest(
                "Content-Length and Transfer-Encoding together",
            ));
        }
        if minor_version == 0 {
            return Err(Error::BadRequest(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        if !te.trim_ascii().eq_ignore_ascii_case(b"chunked") {
            return Err(Error::UnsupportedTransferEncoding);
        }
        self.chunked = true;
        Ok(())
    }
}

/// Parses a Content-Length value. Any number of digits is a number: one too
/// large for `u64` is simply too large, never an allocation.
fn parse_content_length(value: &[u8]) -> Result<u64, Error> {
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(Error::BadRequest("Content-Length is not a number"));
    }
    let mut n: u64 = 0;
    for &d in digits {
        n = match n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
        {
            Some(n) => n,
            None => return Ok(u64::MAX),
        };
    }
    Ok(n)
}

/// The path of a request target: the query is dropped, and an absolute-form
/// target (`http://host/path`) is reduced to its path.
fn path_of(target: &str) -> &str {
    let mut path = target;
    if let Some(rest) = path
        .strip_prefix("http://")
        .or_else(|| path.strip_prefix("https://"))
    {
        path = rest.find('/').map_or("/", |i| &rest[i..]);
    }
    let end = path.find(['?', '#']).unwrap_or(path.len());
    &path[..end]
}

/// The query of a request target: what follows its first `?`, up to any
/// `#`; `None` without a `?`.
fn query_of(target: &str) -> Option<&str> {
    let before_fragment = target.split('#').next().unwrap_or_default();
    before_fragment.split_once('?').map(|(_, query)| query)
}

fn text(value: &[u8]) -> String {
    String::from_utf8_lossy(value).trim().to_string()
}

/// The method, path and `Origin` of a request that could not be parsed
/// whole (too large, malformed, late), read leniently, so its error answer
/// can carry what the path's answers carry (CORS). Never routed.
pub(crate) fn shape_of(data: &[u8]) -> Request {
    let data = &data[..data.len().min(MAX_HEAD_BYTES * 2)];
    let mut lines = data.split(|&b| b == b'\n');
    let mut request = Request::default();
    if let Some(line) = lines.next() {
        let mut words = line.split(|&b| b == b' ');
        request.method = text(words.next().unwrap_or_default());
        request.path = path_of(&text(words.next().unwrap_or_default())).to_string();
    }
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if line[..colon].trim_ascii().eq_ignore_ascii_case(b"origin") {
            request.origin = Some(text(&line[colon + 1..]));
        }
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_of_any_size_is_a_number() {
        assert_eq!(parse_content_length(b"42"), Ok(42));
        assert_eq!(
            parse_content_length(b"1000000000000"),
            Ok(1_000_000_000_000)
        );
        assert_eq!(parse_content_length(b"18446744073709551615"), Ok(u64::MAX));
        assert_eq!(
            parse_content_length(b"123456789012345678901234567890"),
            Ok(u64::MAX)
        );
        assert!(parse_content_length(b"-1").is_err());
        assert!(parse_content_length(b"1,1").is_err());
        assert!(parse_content_length(b"").is_err());
        assert!(parse_content_length(b"0x10").is_err());
    }

    #[test]
    fn head_debug_hides_the_body() {
        let head = Head {
            request: Request {
                body: b"code=AQB-authorization-code".to_vec(),
                ..Request::default()
            },
            ..Head::default()
        };
        let debug = format!("{head:?}");
        assert!(!debug.contains("AQB-authorization-code"), "{debug}");
        assert!(!debug.contains("99, 111, 100, 101"), "{debug}");
        assert!(debug.contains("[27 bytes redacted]"), "{debug}");
    }

    #[test]
    fn query_string_is_not_part_of_the_path() {
        assert_eq!(path_of("/swap?code=secret"), "/swap");
        assert_eq!(path_of("http://example.com/health?x"), "/health");
        assert_eq!(path_of("http://example.com"), "/");
        assert_eq!(path_of("*"), "*");
        assert_eq!(
            query_of("/callback?code=c&state=s#f"),
            Some("code=c&state=s")
        );
        assert_eq!(query_of("http://h/device?user_code=X"), Some("user_code=X"));
        assert_eq!(query_of("/device?"), Some(""));
        assert_eq!(query_of("/device#a?b"), None);
        assert_eq!(query_of("/device"), None);
    }

    #[test]
    fn other_http_versions_are_recognised() {
        assert!(looks_like_other_http_version(b"GET / HTTP/2.0\r\n"));
        assert!(looks_like_other_http_version(b"PRI * HTTP/2.0\r\n\r\nSM"));
        assert!(!looks_like_other_http_version(b"GET / FOO/1.1\r\n"));
        assert!(!looks_like_other_http_version(b"garbage"));
    }

    fn parsed(head: &str) -> Result<Head, Error> {
        parse_head(head.as_bytes()).map(|parsed| parsed.expect("a complete head").0)
    }

    #[test]
    fn framing_rules_hold_whatever_the_header_order() {
        let bad = Error::BadRequest;
        for (head, expected) in [
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                bad("Content-Length and Transfer-Encoding together"),
            ),
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nHost: a\r\nContent-Length: 1\r\n\r\n",
                bad("Content-Length and Transfer-Encoding together"),
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                Error::UnsupportedTransferEncoding,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
                Error::UnsupportedTransferEncoding,
            ),
            (
                "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                bad("Transfer-Encoding in an HTTP/1.0 request"),
            ),
            (
                "GET / HTTP/1.1\r\n\r\n",
                bad("an HTTP/1.1 request must carry exactly one Host header"),
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                bad("an HTTP/1.1 request must carry exactly one Host header"),
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 1\r\nHost: a\r\nContent-Length: 2\r\n\r\n",
                bad("conflicting Content-Length headers"),
            ),
        ] {
            assert_eq!(parsed(head).err(), Some(expected), "{head:?}");
        }
    }

    #[test]
    fn headers_the_server_uses_are_kept() {
        let head = parsed(
            "POST /swap?x HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\
             Content-Length: 3\r\nOrigin: https://app\r\nX-Forwarded-For: 1.2.3.4\r\n\
             X-Forwarded-For: 5.6.7.8\r\nExpect: 100-continue\r\nCookie: a=1\r\n\
             Cookie: b=2\r\n\r\n",
        )
        .unwrap();
        assert_eq!(head.request.path, "/swap");
        assert_eq!(head.request.query.as_deref(), Some("x"));
        assert_eq!(head.request.cookie.as_deref(), Some("a=1; b=2"));
        assert_eq!(head.request.origin.as_deref(), Some("https://app"));
        assert_eq!(head.content_length, Some(3));
        assert_eq!(head.forwarded_for.as_deref(), Some("1.2.3.4,5.6.7.8"));
        assert!(head.keep_alive && head.expect_continue && !head.chunked);
        assert!(head.expects_body());
    }
}
