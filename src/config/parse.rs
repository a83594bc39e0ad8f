//! The value parsers: the text of one variable → its typed value, or the
//! [`Problem`] with it. Parse, don't validate: what leaves here is a
//! `SocketAddr`, a `Duration`'s seconds, a `LevelFilter`, certificates —
//! never a string to be checked again later.

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::str::FromStr;

use log::LevelFilter;

use super::error::Problem;
use super::redirect::RedirectUri;
use super::{Cors, UpstreamProxy};
use crate::http::IpNet;
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

/// `{base}/api/token`, for an `https://` base URL, or an `http://` one
/// whose host is a loopback address.
pub(super) fn token_url(base: &str) -> Result<String, Problem> {
    let base = base.trim_end_matches('/');
    let url = format!("{base}{TOKEN_PATH}");
    let plain = base.starts_with("http://");
    let http = base.starts_with("https://") || plain;
    let uri = ureq::http::Uri::try_from(url.as_str()).ok();
    let Some(uri) = uri.filter(|_| http && base.len() > "https://".len()) else {
        return Err(Problem::NotHttpUrl(base.to_string()));
    };
    // SECURITY: the client secret and the users' codes and tokens go to
    // this URL. In clear, only to this machine: an IP literal, because a
    // name (`localhost` included) resolves wherever /etc/hosts or DNS say.
    if plain && !uri.host().is_some_and(is_loopback_literal) {
        return Err(Problem::PlainHttpNotLoopback(base.to_string()));
    }
    Ok(url)
}

/// Whether a URL's host is a loopback address written as one
/// (`127.0.0.0/8`, `[::1]`, `[::ffff:127.0.0.1]`).
fn is_loopback_literal(host: &str) -> bool {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse::<IpAddr>()
        .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// `UPSTREAM_PROXY`: `http://host[:port]`, optionally with
/// `user:password@` (percent-encoded) before the host; nothing after it
/// but a `/`. The error never quotes the value: it may hold a password.
pub(super) fn upstream_proxy(text: &str) -> Result<UpstreamProxy, Problem> {
    let trimmed = text.trim_end_matches('/');
    let uri = ureq::http::Uri::try_from(trimmed).map_err(|_| Problem::NotProxyUrl)?;
    let authority = uri.authority().ok_or(Problem::NotProxyUrl)?;
    let only_authority = uri.path() == "/" || uri.path().is_empty();
    if uri.scheme_str() != Some("http")
        || !trimmed.starts_with("http://")
        || !only_authority
        || uri.query().is_some()
        || authority.host().is_empty()
        || ureq::Proxy::new(trimmed).is_err()
    {
        return Err(Problem::NotProxyUrl);
    }
    let shown = match authority.as_str().rsplit_once('@') {
        Some((_, host_port)) => format!("http://[redacted]@{host_port}"),
        None => format!("http://{}", authority.as_str()),
    };
    Ok(UpstreamProxy {
        url: Secret::new(trimmed),
        shown,
    })
}
/// A Spotify client id: it becomes the user part of HTTP Basic
/// authentication, so it cannot hold a `:`.
pub(super) fn client_id(text: &str) -> Result<String, Problem> {
    if text.contains(':') {
        return Err(Problem::ContainsColon);
    }
    Ok(text.to_string())
}

/// One redirect URI Spotify accepts.
pub(super) fn redirect_uri(text: &str) -> Result<RedirectUri, Problem> {
    RedirectUri::parse(text)
        .map_err(|refusal| Problem::RedirectRefused(vec![(text.into(), refusal)]))
}

/// Redirect URIs as `check-config` shows them: comma-separated.
pub(super) fn join_uris(uris: &[RedirectUri]) -> String {
    let texts: Vec<&str> = uris.iter().map(RedirectUri::as_str).collect();
    texts.join(",")
}

/// Comma-separated redirect URIs Spotify accepts; every one it would refuse
/// is named.
pub(super) fn redirect_uris(text: &str) -> Result<Vec<RedirectUri>, Problem> {
    let mut uris = Vec::new();
    let mut refused = Vec::new();
    for item in list(text) {
        match RedirectUri::parse(&item) {
            Ok(uri) => uris.push(uri),
            Err(refusal) => refused.push((item, refusal)),
        }
    }
    if refused.is_empty() {
        Ok(uris)
    } else {
        Err(Problem::RedirectRefused(refused))
    }
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

/// Comma-separated addresses and CIDR ranges (`10.0.0.0/8`, `::1`); every
/// item that is neither is named.
pub(super) fn ip_nets(text: &str) -> Result<Vec<IpNet>, Problem> {
    let (nets, bad): (Vec<_>, Vec<_>) = list(text)
        .into_iter()
        .map(|item| item.parse::<IpNet>().map_err(|_| item))
        .partition(Result::is_ok);
    if !bad.is_empty() {
        return Err(Problem::NotIpRanges(
            bad.into_iter().filter_map(Result::err).collect(),
        ));
    }
    Ok(nets.into_iter().filter_map(Result::ok).collect())
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
/// Longest DNS name (RFC 1035 §2.3.4, without the final dot).
const MAX_DOMAIN_CHARS: usize = 253;
/// Longest label of one.
const MAX_LABEL_CHARS: usize = 63;

/// `ACME_DOMAINS`: DNS names, lower-cased, each once. No wildcards
/// (`tls-alpn-01` cannot prove one) and no IP addresses.
pub(super) fn domains(text: &str) -> Result<Vec<String>, Problem> {
    let mut names: Vec<String> = Vec::new();
    let mut bad = Vec::new();
    for item in list(text) {
        let name = item.to_ascii_lowercase();
        if !is_domain(&name) {
            bad.push(item);
        } else if !names.contains(&name) {
            names.push(name);
        }
    }
    if !bad.is_empty() {
        return Err(Problem::NotDomainNames(bad));
    }
    if names.is_empty() {
        return Err(Problem::NotDomainNames(vec![text.to_string()]));
    }
    Ok(names)
}

/// A host name of at least two labels of letters, digits and inner `-`,
/// the last not all digits (so no IPv4 address).
fn is_domain(name: &str) -> bool {
    let labels: Vec<&str> = name.split('.').collect();
    let label_ok = |label: &&str| {
        (1..=MAX_LABEL_CHARS).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    name.len() <= MAX_DOMAIN_CHARS
        && labels.len() >= 2
        && labels.iter().all(label_ok)
        && labels
            .last()
            .is_some_and(|tld| !tld.bytes().all(|b| b.is_ascii_digit()))
}

/// An `https://` URL (`ACME_DIRECTORY_URL`).
pub(super) fn https_url(text: &str) -> Result<String, Problem> {
    let uri = ureq::http::Uri::try_from(text).ok();
    match uri {
        Some(uri) if uri.scheme_str() == Some("https") && uri.host().is_some() => {
            Ok(text.to_string())
        }
        _ => Err(Problem::NotHttpsUrl(text.to_string())),
    }
}

/// A contact address (`ACME_EMAIL`): `local@domain`, nothing a `mailto:`
/// URI would have to escape.
pub(super) fn email(text: &str) -> Result<String, Problem> {
    let plain = |part: &str| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"@,;:<>()[]\\\"%?#/".contains(&b))
    };
    match text.split_once('@') {
        Some((local, domain)) if plain(local) && is_domain(&domain.to_ascii_lowercase()) => {
            Ok(text.to_string())
        }
        _ => Err(Problem::NotEmail(text.to_string())),
    }
}

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
    fn acme_values_that_are_not_what_they_should_be_are_named() {
        let bad: &[(&str, &str, &str)] = &[
            (
                "ACME_DOMAINS",
                "*.example.org",
                "'*.example.org' is not a DNS name",
            ),
            ("ACME_DOMAINS", "localhost", "'localhost' is not a DNS name"),
            ("ACME_DOMAINS", "192.0.2.1", "not a DNS name"),
            (
                "ACME_DOMAINS",
                "a.example,-b.example",
                "'-b.example' is not a DNS name",
            ),
            ("ACME_DOMAINS", " , ", "is not a DNS name"),
            (
                "ACME_DIRECTORY_URL",
                "http://ca.example/dir",
                "is not an https:// URL",
            ),
            ("ACME_DIRECTORY_URL", "ca.example", "is not an https:// URL"),
            ("ACME_EMAIL", "root", "'root' is not an e-mail address"),
            (
                "ACME_EMAIL",
                "a@b.example,c@d.example",
                "is not an e-mail address",
            ),
            (
                "ACME_CA_FILE",
                "/nonexistent/ca.pem",
                "cannot read '/nonexistent/ca.pem'",
            ),
        ];
        for (var, value, says) in bad {
            let vars = [("ACME_DOMAINS", "pi.example.org"), (var, value)];
            let errs = with(&vars).unwrap_err().to_string();
            assert!(
                errs.contains(var) && errs.contains(says),
                "{var}={value}: {errs}"
            );
        }
        let good = [
            ("ACME_DOMAINS", "xn--bcher-kva.example"),
            ("ACME_EMAIL", "ops+tls@example.org"),
        ];
        assert!(with(&good).is_ok());
    }

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
    fn plain_http_accounts_url_only_to_a_loopback_address() {
        for good in [
            "http://127.0.0.1:9",
            "http://127.8.9.10",
            "http://[::1]:9",
            "http://[::ffff:127.0.0.1]:9",
            "https://accounts.example",
            "https://10.0.0.1",
        ] {
            assert!(with(&[("SPOTIFY_ACCOUNTS_URL", good)]).is_ok(), "{good}");
        }
        for bad in [
            "http://accounts.spotify.com",
            "http://localhost:9",
            "http://10.0.0.1:9",
            "http://[::2]:9",
            "http://127.0.0.1.example",
            "http://127.0.0.1@accounts.example",
            "http://2130706433",
        ] {
            let errs = with(&[("SPOTIFY_ACCOUNTS_URL", bad)]).unwrap_err();
            assert_eq!(
                errs.to_string(),
                format!(
                    "configuration error: SPOTIFY_ACCOUNTS_URL: '{bad}' would send the client \
                     secret in clear; http:// is allowed only to a loopback address \
                     (127.0.0.0/8, [::1]), use https://"
                )
            );
        }
    }

    #[test]
    fn upstream_proxy_is_an_http_url_and_its_credentials_never_show() {
        let plain = upstream_proxy("http://proxy.example:3128").unwrap();
        assert_eq!(plain.shown, "http://proxy.example:3128");
        assert_eq!(plain.url.expose(), "http://proxy.example:3128");
        let with_credentials = upstream_proxy("http://al%40ice:p%3Aw@[fd00::1]:3128/").unwrap();
        assert_eq!(with_credentials.shown, "http://[redacted]@[fd00::1]:3128");
        assert_eq!(
            with_credentials.url.expose(),
            "http://al%40ice:p%3Aw@[fd00::1]:3128"
        );
        assert!(!format!("{with_credentials:?}").contains("p%3Aw"));
        for bad in [
            "proxy.example:3128",
            "https://proxy.example:3128",
            "socks5://proxy.example:1080",
            "http://",
            "http://proxy.example:3128/path",
            "http://proxy.example:3128?q",
            "http://user:pw@",
            "HTTP://proxy.example",
        ] {
            assert_eq!(
                upstream_proxy(bad).map(|p| p.shown),
                Err(Problem::NotProxyUrl),
                "{bad}"
            );
        }
        let errs = with(&[("UPSTREAM_PROXY", "ftp://user:hunter2@proxy")]).unwrap_err();
        assert_eq!(
            errs.to_string(),
            "configuration error: UPSTREAM_PROXY must be http://host:port or \
             http://user:password@host:port (not shown: it may hold a password)"
        );
    }

    #[test]
    fn upstream_proxy_may_come_from_a_file() {
        let dir = std::env::temp_dir().join(format!("sts-proxy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("proxy");
        std::fs::write(&path, "http://u:hunter2@127.0.0.1:3128\n").unwrap();
        let mut vars = crate::config::testing::base();
        vars.push(("UPSTREAM_PROXY_FILE", path.to_str().unwrap()));
        let c = crate::config::Config::from_vars(vars);
        std::fs::remove_dir_all(&dir).unwrap();
        let proxy = c.unwrap().upstream_proxy.unwrap();
        assert_eq!(proxy.url.expose(), "http://u:hunter2@127.0.0.1:3128");
        assert_eq!(proxy.shown, "http://[redacted]@127.0.0.1:3128");
    }

    #[test]
    fn trusted_proxies_and_metrics_allow_take_ranges_and_name_each_bad_one() {
        let c = with(&[
            ("TRUSTED_PROXIES", "10.0.0.0/8,fd00::/8"),
            ("METRICS_ALLOW", "192.0.2.0/24"),
        ])
        .unwrap();
        assert_eq!(c.http.trusted_proxies.len(), 2);
        assert_eq!(c.metrics_allow, vec!["192.0.2.0/24".parse().unwrap()]);
        let errs = with(&[
            ("TRUSTED_PROXIES", "10.0.0.1/8"),
            ("METRICS_ALLOW", "127.0.0.0/8,::1/129,x"),
        ])
        .unwrap_err();
        assert_eq!(
            errs.to_string(),
            "configuration error: TRUSTED_PROXIES: '10.0.0.1/8' is not an IP address or a CIDR \
             range like 10.0.0.0/8 (host bits zero)\n\
             configuration error: METRICS_ALLOW: '::1/129', 'x' are not IP addresses or CIDR \
             ranges like 10.0.0.0/8 (host bits zero)"
        );
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
