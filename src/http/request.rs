//! A complete request, as the layer hands it to the [`Handler`]: method,
//! path and query, the few headers the app reads, the client's address and
//! the body.
//!
//! [`Handler`]: super::Handler

use std::net::IpAddr;

/// A complete request, as handed to the [`Handler`](super::Handler). Its
/// `Debug` leaves the query, the cookies and the body out.
#[derive(Default)]
pub struct Request {
    pub(crate) method: String,
    /// The path, without query string (absolute-form targets are reduced
    /// to their path).
    pub path: String,
    /// The query string, without its `?` (none: the target had no `?`).
    /// Never logged: it may hold an authorization code.
    pub(crate) query: Option<String>,
    /// HTTP/1.`minor_version`.
    pub(crate) minor_version: u8,
    pub(crate) content_type: Option<String>,
    pub(crate) origin: Option<String>,
    /// The `Cookie` header (several are joined with `; `, RFC 6265 §5.4).
    pub(crate) cookie: Option<String>,
    /// The client address: the peer, or for a trusted proxy the address it
    /// names in `X-Forwarded-For`.
    pub(crate) client: Option<IpAddr>,
    /// Whether the request carried `X-Forwarded-For` (from anyone): without
    /// it, a request from a trusted proxy names no client.
    pub(crate) forwarded_for: bool,
    pub(crate) body: Vec<u8>,
}

impl std::fmt::Debug for Request {
    // SECURITY: the body holds authorization codes and refresh tokens, the
    // query an authorization code, the cookies what binds a sign-in to its
    // browser; only their lengths are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |text: &Option<String>| text.as_ref().map(|t| Redacted(t.len()));
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &redacted(&self.query))
            .field("minor_version", &self.minor_version)
            .field("content_type", &self.content_type)
            .field("origin", &self.origin)
            .field("cookie", &redacted(&self.cookie))
            .field("client", &self.client)
            .field("forwarded_for", &self.forwarded_for)
            .field(
                "body",
                &format_args!("[{} bytes redacted]", self.body.len()),
            )
            .finish()
    }
}

/// A value shown as its length only.
struct Redacted(usize);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{} bytes redacted]", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_debug_hides_the_body_query_and_cookies() {
        let request = Request {
            method: "POST".into(),
            path: "/swap".into(),
            query: Some("code=AQB-query-code&state=st4te".into()),
            cookie: Some("sts-login=b1nding".into()),
            body: b"code=AQB-authorization-code&refresh_token=AQD-token".to_vec(),
            ..Request::default()
        };
        let debug = format!("{request:?}");
        for secret in ["AQB-query-code", "st4te", "b1nding"] {
            assert!(!debug.contains(secret), "{debug}");
        }
        assert!(
            debug.contains("query: Some([31 bytes redacted])"),
            "{debug}"
        );
        assert!(!debug.contains("AQB-authorization-code"), "{debug}");
        assert!(!debug.contains("AQD-token"), "{debug}");
        // Nor as the list of byte values a derived `Debug` would print.
        assert!(!debug.contains("99, 111, 100, 101"), "{debug}");
        assert!(debug.contains("body: [51 bytes redacted]"), "{debug}");
        assert!(debug.contains(r#"path: "/swap""#), "{debug}");
    }
}
