//! A complete request, as the layer hands it to the [`Handler`]: method,
//! path, the few headers the app reads, the client's address and the body.
//!
//! [`Handler`]: super::Handler

use std::net::IpAddr;

/// A complete request, as handed to the [`Handler`](super::Handler). Its
/// `Debug` leaves the body out.
#[derive(Default)]
pub struct Request {
    pub(crate) method: String,
    /// The path, without query string (absolute-form targets are reduced
    /// to their path).
    pub path: String,
    /// HTTP/1.`minor_version`.
    pub(crate) minor_version: u8,
    pub(crate) content_type: Option<String>,
    pub(crate) origin: Option<String>,
    /// The client address: the peer, or for a trusted proxy the address it
    /// names in `X-Forwarded-For`.
    pub(crate) client: Option<IpAddr>,
    /// Whether the request carried `X-Forwarded-For` (from anyone): without
    /// it, a request from a trusted proxy names no client.
    pub(crate) forwarded_for: bool,
    pub(crate) body: Vec<u8>,
}

impl std::fmt::Debug for Request {
    // SECURITY: the body holds authorization codes and refresh tokens; only
    // its length is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("minor_version", &self.minor_version)
            .field("content_type", &self.content_type)
            .field("origin", &self.origin)
            .field("client", &self.client)
            .field("forwarded_for", &self.forwarded_for)
            .field(
                "body",
                &format_args!("[{} bytes redacted]", self.body.len()),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_debug_hides_the_body() {
        let request = Request {
            method: "POST".into(),
            path: "/swap".into(),
            body: b"code=AQB-authorization-code&refresh_token=AQD-token".to_vec(),
            ..Request::default()
        };
        let debug = format!("{request:?}");
        assert!(!debug.contains("AQB-authorization-code"), "{debug}");
        assert!(!debug.contains("AQD-token"), "{debug}");
        // Nor as the list of byte values a derived `Debug` would print.
        assert!(!debug.contains("99, 111, 100, 101"), "{debug}");
        assert!(debug.contains("body: [51 bytes redacted]"), "{debug}");
        assert!(debug.contains(r#"path: "/swap""#), "{debug}");
    }
}
