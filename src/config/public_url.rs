//! `PUBLIC_URL`: the server's address as a browser reaches it, which turns
//! device login on, and the paths device login serves.
//!
//! Spotify sends the browser back to `{PUBLIC_URL}/callback`, so that URI
//! is a redirect URI like any other: Spotify refuses `http://` to anything
//! but `127.0.0.1` or `[::1]` (the tests' case) and `localhost`, and a
//! server configured with one it would refuse stops at start.

use std::fmt;

use super::error::Problem;
use super::redirect::{RedirectUri, Refusal};

/// `POST`: a device asks for a code.
pub(crate) const DEVICE_CODE_PATH: &str = "/device/code";
/// `GET` and `POST`: the pages where the user enters the code and continues
/// to Spotify.
pub(crate) const DEVICE_PAGE_PATH: &str = "/device";
/// `POST`: the device polls for its tokens.
pub(crate) const DEVICE_TOKEN_PATH: &str = "/device/token";
/// `GET`: Spotify sends the browser back here.
pub(crate) const CALLBACK_PATH: &str = "/callback";
/// Every path device login serves (none without `PUBLIC_URL`).
pub(crate) const DEVICE_PATHS: [&str; 4] = [
    DEVICE_CODE_PATH,
    DEVICE_PAGE_PATH,
    DEVICE_TOKEN_PATH,
    CALLBACK_PATH,
];

/// `PUBLIC_URL`, checked: `http(s)://host[:port][/path]`, no trailing `/`,
/// whose callback Spotify accepts as a redirect URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PublicUrl {
    /// Without a trailing `/`.
    base: String,
    /// `{base}/callback`.
    callback: RedirectUri,
    https: bool,
}

impl PublicUrl {
    /// Parses `PUBLIC_URL`, or says why it cannot be one.
    pub(crate) fn parse(text: &str) -> Result<PublicUrl, Problem> {
        let base = text.trim_end_matches('/');
        let not_url = || Problem::NotPublicUrl(text.to_string());
        let https = starts_with_ignoring_case(base, "https://");
        if !https && !starts_with_ignoring_case(base, "http://") {
            return Err(not_url());
        }
        let uri = ureq::http::Uri::try_from(base).map_err(|_| not_url())?;
        let authority = uri.authority().ok_or_else(not_url)?;
        // A user name or a query has no place in a base URL, and a
        // fragment never reaches the server.
        if authority.as_str().contains('@')
            || authority.host().is_empty()
            || uri.query().is_some()
            || base.contains('#')
        {
            return Err(not_url());
        }
        let callback_text = format!("{base}{CALLBACK_PATH}");
        let callback = match RedirectUri::parse(&callback_text) {
            Ok(callback) => callback,
            Err(Refusal::NotUri) => return Err(not_url()),
            Err(refusal) => {
                return Err(Problem::PublicUrlRefused {
                    callback: callback_text,
                    refusal,
                });
            }
        };
        Ok(PublicUrl {
            base: base.to_string(),
            callback,
            https,
        })
    }

    /// The URL of one of the server's paths.
    pub(crate) fn at(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `{PUBLIC_URL}/callback`, the redirect URI of device login.
    pub(crate) fn callback(&self) -> &str {
        self.callback.as_str()
    }

    /// Whether browsers reach the server over HTTPS (cookies are then
    /// `Secure`).
    pub(crate) fn is_https(&self) -> bool {
        self.https
    }
}

impl fmt::Display for PublicUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base)
    }
}

fn starts_with_ignoring_case(text: &str, prefix: &str) -> bool {
    text.get(..prefix.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_urls_and_loopback_http_pass_with_the_trailing_slash_dropped() {
        for (text, base) in [
            ("https://swap.example.org", "https://swap.example.org"),
            ("https://swap.example.org/", "https://swap.example.org"),
            (
                "https://example.org:8443/spotify/",
                "https://example.org:8443/spotify",
            ),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("http://[::1]:8080/", "http://[::1]:8080"),
        ] {
            let url = PublicUrl::parse(text).unwrap();
            assert_eq!(url.to_string(), base);
            assert_eq!(url.callback(), format!("{base}/callback"));
            assert_eq!(url.at("/device"), format!("{base}/device"));
        }
        assert!(PublicUrl::parse("https://a.example").unwrap().is_https());
        assert!(!PublicUrl::parse("http://127.0.0.1:1").unwrap().is_https());
    }

    #[test]
    fn callbacks_spotify_would_refuse_are_named() {
        assert_eq!(
            PublicUrl::parse("http://swap.example.org"),
            Err(Problem::PublicUrlRefused {
                callback: "http://swap.example.org/callback".into(),
                refusal: Refusal::PlainHttp
            })
        );
        assert_eq!(
            PublicUrl::parse("http://localhost:8080/"),
            Err(Problem::PublicUrlRefused {
                callback: "http://localhost:8080/callback".into(),
                refusal: Refusal::Localhost {
                    instead: "http://127.0.0.1:8080/callback".into()
                }
            })
        );
    }

    #[test]
    fn anything_but_an_http_base_url_is_refused() {
        for text in [
            "swap.example.org",
            "myapp://cb",
            "ftp://swap.example.org",
            "https://",
            "https://user@swap.example.org",
            "https://swap.example.org/?a=b",
            "https://swap.example.org/#top",
            "https://exa mple.org",
        ] {
            assert_eq!(
                PublicUrl::parse(text),
                Err(Problem::NotPublicUrl(text.into())),
                "{text}"
            );
        }
    }
}
