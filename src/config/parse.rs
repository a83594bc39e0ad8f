//! The value parsers: the text of one variable → its typed value, or the
//! [`Problem`] with it. Parse, don't validate: what leaves here is a
//! `SocketAddr`, a `Duration`'s seconds, a `LevelFilter`, certificates —
//! never a string to be checked again later.

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::str::FromStr;

use log::LevelFilter;

use super::Cors;
use super::error::Problem;
use crate::secret::{MIN_ENCRYPTION_SECRET_CHARS, Secret};

/// The token endpoint, under `SPOTIFY_ACCOUNTS_URL`.
pub(super) const TOKEN_PATH: &str = "/api/token";

pub(super) fn whole_number<T: FromStr>(text: &str) -> Result<T, Problem> {
    text.parse()
        .map_err(|_| Problem::NotWholeNumber(text.to_string()))
}

pub(super) fn whole_number_between<T>(text: &str, min: T, max: T) -> Result<T, Problem>
where
    T: FromStr + PartialOrd + fmt::Display,
{
    let n = whole_number(text)?;
    if n < min || n > max {
        return Err(Problem::OutOfRange {
            min: min.to_string(),
            max: max.to_string(),
        });
    }
    Ok(n)
}

pub(super) fn at_least_one(text: &str) -> Result<usize, Problem> {
    match whole_number(text)? {
        0 => Err(Problem::Zero),
        n => Ok(n),
    }
}

/// Comma-separated items, trimmed, empty ones dropped.
pub(super) fn list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

pub(super) fn too_short(secret: &Secret) -> bool {
    secret.expose().chars().count() < MIN_ENCRYPTION_SECRET_CHARS
}

/// `{base}/api/token`, for an `http://` or `https://` base URL.
pub(super) fn token_url(base: &str) -> Result<String, Problem> {
    let base = base.trim_end_matches('/');
    let url = format!("{base}{TOKEN_PATH}");
    let http = base.starts_with("https://") || base.starts_with("http://");
    if !http || base.len() <= "https://".len() || ureq::http::Uri::try_from(url.as_str()).is_err() {
        return Err(Problem::NotHttpUrl(base.to_string()));
    }
    Ok(url)
}

pub(super) fn listen_addr(text: &str) -> Result<SocketAddr, Problem> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    // Host names such as `localhost:8080`: take the first address.
    text.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| Problem::NotHostPort(text.to_string()))
}

pub(super) fn endpoint_path(text: &str) -> Result<String, Problem> {
    if !text.starts_with('/') || text.contains(['?', '#', ' ']) {
        return Err(Problem::NotPath(text.to_string()));
    }
    if matches!(text, "/health" | "/metrics") {
        return Err(Problem::ReservedPath(text.to_string()));
    }
    Ok(text.to_string())
}

pub(super) fn cors(text: &str) -> Result<Cors, Problem> {
    let origins = list(text);
    if origins.is_empty() {
        return Ok(Cors::Off);
    }
    if origins.iter().any(|o| o == "*") {
        return Ok(Cors::Any);
    }
    let bad: Vec<String> = origins
        .iter()
        .filter(|o| !(o.starts_with("http://") || o.starts_with("https://")) || o.ends_with('/'))
        .cloned()
        .collect();
    if !bad.is_empty() {
        return Err(Problem::NotOrigins(bad));
    }
    Ok(Cors::List(origins))
}

pub(super) fn ip_addresses(text: &str) -> Result<Vec<IpAddr>, Problem> {
    let (ips, bad): (Vec<_>, Vec<_>) = list(text)
        .into_iter()
        .map(|item| item.parse::<IpAddr>().map_err(|_| item))
        .partition(Result::is_ok);
    if !bad.is_empty() {
        return Err(Problem::NotIpAddresses(
            bad.into_iter().filter_map(Result::err).collect(),
        ));
    }
    Ok(ips.into_iter().filter_map(Result::ok).collect())
}

pub(super) fn log_level(text: &str) -> Result<LevelFilter, Problem> {
    match text.to_ascii_lowercase().as_str() {
        "error" => Ok(LevelFilter::Error),
        "warn" => Ok(LevelFilter::Warn),
        "info" => Ok(LevelFilter::Info),
        "debug" => Ok(LevelFilter::Debug),
        "trace" => Ok(LevelFilter::Trace),
        "off" => Ok(LevelFilter::Off),
        _ => Err(Problem::NotLogLevel(text.to_string())),
    }
}

pub(super) fn on_off(text: &str) -> Result<bool, Problem> {
    match text.to_ascii_lowercase().as_str() {
        "on" | "true" | "1" => Ok(true),
        "off" | "false" | "0" => Ok(false),
        _ => Err(Problem::NotOnOff(text.to_string())),
    }
}

/// Reads every certificate from a PEM file, as DER.
pub(super) fn pem_certs(path: &Path) -> Result<Vec<Vec<u8>>, Problem> {
    let pem = std::fs::read(path).map_err(|e| Problem::Unreadable {
        path: path.to_path_buf(),
        error: e.to_string(),
    })?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(cert)) => certs.push(cert.der().to_vec()),
            Ok(_) => {}
            Err(_) => return Err(Problem::NotPem(path.to_path_buf())),
        }
    }
    if certs.is_empty() {
        return Err(Problem::NoCertificate(path.to_path_buf()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::with;

    #[test]
    fn accounts_url_that_is_not_a_url_is_rejected() {
        for bad in [
            "ftp://accounts.example",
            "https://",
            "https://exa mple.com",
            "http://a\"b",
        ] {
            let errs = with(&[("SPOTIFY_ACCOUNTS_URL", bad)]).unwrap_err();
            assert!(
                errs.to_string().contains("SPOTIFY_ACCOUNTS_URL"),
                "{bad}: {errs}"
            );
        }
    }

    #[test]
    fn trailing_slash_on_accounts_url_is_ignored() {
        let c = with(&[("SPOTIFY_ACCOUNTS_URL", "http://127.0.0.1:9/")]).unwrap();
        assert_eq!(c.token_url, "http://127.0.0.1:9/api/token");
    }

    #[test]
    fn short_encryption_secret_is_rejected_without_echoing_it() {
        let errs = with(&[("ENCRYPTION_SECRET", "short-secret-value")]).unwrap_err();
        let text = errs.to_string();
        assert!(text.contains("ENCRYPTION_SECRET"), "{text}");
        assert!(!text.contains("short-secret-value"), "{text}");
    }

    #[test]
    fn a_list_drops_empty_items_and_trims_the_others() {
        assert_eq!(list(" a, ,b ,,"), vec!["a", "b"]);
        assert!(list(" , ").is_empty());
    }

    #[test]
    fn a_number_outside_its_range_names_the_range() {
        assert_eq!(
            whole_number_between("5", 1, 4),
            Err(Problem::OutOfRange {
                min: "1".into(),
                max: "4".into()
            })
        );
        assert_eq!(at_least_one("0"), Err(Problem::Zero));
        assert_eq!(
            at_least_one("-1"),
            Err(Problem::NotWholeNumber("-1".into()))
        );
    }

    #[test]
    fn server_paths_are_reserved() {
        assert_eq!(
            endpoint_path("/metrics"),
            Err(Problem::ReservedPath("/metrics".into()))
        );
        assert_eq!(endpoint_path("/a?b"), Err(Problem::NotPath("/a?b".into())));
        assert_eq!(endpoint_path("/api/token"), Ok("/api/token".into()));
    }
}
