//! What the manager needs to know of a certificate: when it starts and
//! ends, which DNS names it is for, and its ARI identifier (RFC 9773 §4.1:
//! its authority key identifier and serial number, to ask the CA's renewal
//! information about). A small DER reader over the fields
//! of RFC 5280 §4.1 it takes them from, so that no X.509 parser is linked
//! for three fields; anything it does not understand is `None`, and the
//! certificate is then treated as missing (a new one is ordered).
//!
//! Also Unix time as text for the log lines (UTC, RFC 3339), with the
//! calendar functions `upstream/date.rs` reads HTTP dates with.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::upstream::date::{civil_from_days, days_from_civil};

/// DER tags used here.
const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const OCTET_STRING: u8 = 0x04;
const OBJECT_ID: u8 = 0x06;
const BOOLEAN: u8 = 0x01;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
/// `[0] EXPLICIT Version` of a TBSCertificate.
const VERSION_TAG: u8 = 0xa0;
/// `[3] EXPLICIT Extensions` of a TBSCertificate.
const EXTENSIONS_TAG: u8 = 0xa3;
/// `[2] IMPLICIT IA5String`: a dNSName of a GeneralName.
const DNS_NAME_TAG: u8 = 0x82;
/// id-ce-subjectAltName, 2.5.29.17, as DER content.
const SUBJECT_ALT_NAME_OID: &[u8] = &[0x55, 0x1d, 0x11];
/// id-ce-authorityKeyIdentifier, 2.5.29.35, as DER content.
const AUTHORITY_KEY_ID_OID: &[u8] = &[0x55, 0x1d, 0x23];
/// `[0] IMPLICIT KeyIdentifier` of an AuthorityKeyIdentifier.
const KEY_ID_TAG: u8 = 0x80;
/// Seconds in a day.
const SECS_PER_DAY: u64 = 86_400;
/// The first year the calendar functions take.
const UNIX_EPOCH_YEAR: u64 = 1970;

/// A certificate's validity and names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Facts {
    /// `notBefore`, Unix seconds.
    pub(crate) not_before: u64,
    /// `notAfter`, Unix seconds.
    pub(crate) not_after: u64,
    /// The dNSNames of its subjectAltName, lower-cased.
    pub(crate) dns_names: Vec<String>,
    /// `base64url(keyIdentifier).base64url(serial)` (RFC 9773 §4.1), when
    /// it has an authority key identifier.
    pub(crate) ari_id: Option<String>,
}

impl Facts {
    /// When a third of its lifetime is left: when it is renewed.
    pub(crate) fn renew_at(&self) -> u64 {
        let lifetime = self.not_after.saturating_sub(self.not_before);
        self.not_after - lifetime / 3
    }

    /// Whether it names every one of `domains` (lower-case).
    pub(crate) fn covers(&self, domains: &[String]) -> bool {
        domains.iter().all(|d| self.dns_names.contains(d))
    }
}

/// Reads [`Facts`] from a certificate's DER; `None` if it is not one this
/// reader understands.
pub(crate) fn facts(der: &[u8]) -> Option<Facts> {
    let (certificate, _) = take(der, SEQUENCE)?;
    let (mut tbs, _) = take(certificate, SEQUENCE)?;
    if tbs.first() == Some(&VERSION_TAG) {
        tbs = take(tbs, VERSION_TAG)?.1;
    }
    let (serial, rest) = take(tbs, INTEGER)?;
    let (_signature, rest) = take(rest, SEQUENCE)?;
    let (_issuer, rest) = take(rest, SEQUENCE)?;
    let (validity, rest) = take(rest, SEQUENCE)?;
    let (not_before, after) = time(validity)?;
    let (not_after, _) = time(after)?;
    let (_subject, rest) = take(rest, SEQUENCE)?;
    let (_key, mut rest) = take(rest, SEQUENCE)?;
    let (mut dns_names, mut key_id) = (Vec::new(), None);
    // issuerUniqueID [1], subjectUniqueID [2], then extensions [3].
    while let Some(&tag) = rest.first() {
        let (content, after) = take(rest, tag)?;
        if tag == EXTENSIONS_TAG {
            dns_names = alt_names(content)?;
            key_id = authority_key_id(content);
        }
        rest = after;
    }
    let ari_id = key_id.map(|id| {
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(id),
            URL_SAFE_NO_PAD.encode(serial)
        )
    });
    Some(Facts {
        not_before,
        not_after,
        dns_names,
        ari_id,
    })
}

/// The value of the extension `oid` among `[3] { Extensions }`: the
/// content of its OCTET STRING.
fn extension<'a>(explicit: &'a [u8], oid: &[u8]) -> Option<&'a [u8]> {
    let (mut extensions, _) = take(explicit, SEQUENCE)?;
    while !extensions.is_empty() {
        let (extension, rest) = take(extensions, SEQUENCE)?;
        extensions = rest;
        let (id, mut fields) = take(extension, OBJECT_ID)?;
        if id != oid {
            continue;
        }
        if fields.first() == Some(&BOOLEAN) {
            fields = take(fields, BOOLEAN)?.1;
        }
        return Some(take(fields, OCTET_STRING)?.0);
    }
    None
}

/// The keyIdentifier of the authorityKeyIdentifier extension.
fn authority_key_id(explicit: &[u8]) -> Option<&[u8]> {
    let value = extension(explicit, AUTHORITY_KEY_ID_OID)?;
    let (identifier, _) = take(value, SEQUENCE)?;
    Some(take(identifier, KEY_ID_TAG)?.0)
}

/// The dNSNames of the subjectAltName among `[3] { Extensions }` (none
/// without one; `None`: not DER this reader understands).
fn alt_names(explicit: &[u8]) -> Option<Vec<String>> {
    let Some(value) = extension(explicit, SUBJECT_ALT_NAME_OID) else {
        return Some(Vec::new());
    };
    let (mut general_names, _) = take(value, SEQUENCE)?;
    let mut names = Vec::new();
    while let Some(&tag) = general_names.first() {
        let (name, rest) = take(general_names, tag)?;
        if tag == DNS_NAME_TAG {
            names.push(std::str::from_utf8(name).ok()?.to_ascii_lowercase());
        }
        general_names = rest;
    }
    Some(names)
}

/// One DER element with tag `tag` at the start of `input`: its content and
/// what follows it.
fn take(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&first, rest) = input.split_first()?;
    if first != tag {
        return None;
    }
    let (&len_byte, rest) = rest.split_first()?;
    let (len, rest) = if len_byte < 0x80 {
        (usize::from(len_byte), rest)
    } else {
        // Long form: 1 to 4 length bytes (a certificate is far smaller).
        let count = usize::from(len_byte & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, rest) = rest.split_at(count);
        let len = bytes.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b));
        (len, rest)
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// A UTCTime or GeneralizedTime (`Z` only, as RFC 5280 requires) at the
/// start of `input`, as Unix seconds.
fn time(input: &[u8]) -> Option<(u64, &[u8])> {
    let tag = *input.first()?;
    let (text, rest) = take(input, tag)?;
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    let (year, rest_of_text) = match tag {
        UTC_TIME if text.len() == 12 => {
            // RFC 5280 §4.1.2.5.1: YY ≥ 50 is 19YY, else 20YY.
            let yy = digits(&text[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        GENERALIZED_TIME if text.len() == 14 => (digits(&text[..4])?, &text[4..]),
        _ => return None,
    };
    let field = |i: usize| digits(&rest_of_text[i..i + 2]);
    let (month, day) = (field(0)?, field(2)?);
    let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
    Some((
        civil_secs([year, month, day], [hour, minute, second])?,
        rest,
    ))
}

/// A UTC date and time of day as Unix seconds; `None` if a field is out of
/// range or the date is before 1970.
fn civil_secs([year, month, day]: [u64; 3], [hour, minute, second]: [u64; 3]) -> Option<u64> {
    let valid = year >= UNIX_EPOCH_YEAR
        && (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && hour < 24
        && minute < 60
        && second < 61;
    valid.then(|| {
        days_from_civil(year, month, day) * SECS_PER_DAY + hour * 3600 + minute * 60 + second
    })
}

fn digits(text: &str) -> Option<u64> {
    text.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| text.parse().ok())
        .flatten()
}

/// Unix seconds as RFC 3339 UTC, `2026-03-01T12:00:00Z`, for log lines.
pub(crate) fn rfc3339(unix_secs: u64) -> String {
    let (year, month, day) = civil_from_days(unix_secs / SECS_PER_DAY);
    let of_day = unix_secs % SECS_PER_DAY;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// An RFC 3339 date-time (`2026-03-01T12:00:00Z`, with or without a
/// fraction, `Z` or an offset) as Unix seconds, the fraction dropped;
/// `None` for anything else or a time before 1970.
pub(crate) fn parse_rfc3339(text: &str) -> Option<u64> {
    let text = text.trim();
    let field = |from: usize, len: usize| digits(text.get(from..from + len)?);
    let separators = text.as_bytes();
    let shape = separators.get(4) == Some(&b'-')
        && separators.get(7) == Some(&b'-')
        && matches!(separators.get(10), Some(b'T' | b't' | b' '))
        && separators.get(13) == Some(&b':')
        && separators.get(16) == Some(&b':');
    if !shape {
        return None;
    }
    let (year, month, day) = (field(0, 4)?, field(5, 2)?, field(8, 2)?);
    let (hour, minute, second) = (field(11, 2)?, field(14, 2)?, field(17, 2)?);
    let mut rest = text.get(19..)?;
    if let Some(fraction) = rest.strip_prefix('.') {
        let end = fraction
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(fraction.len());
        rest = &fraction[end..];
    }
    let offset_secs: i64 = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && rest.as_bytes()[3] == b':' => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (h, m) = (digits(&rest[1..3])?, digits(&rest[4..6])?);
            sign * i64::try_from(h * 3600 + m * 60).ok()?
        }
        _ => return None,
    };
    let local = civil_secs([year, month, day], [hour, minute, second])?;
    u64::try_from(i64::try_from(local).ok()? - offset_secs).ok()
}

/// Now, in Unix seconds.
pub(crate) fn now_unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};

    fn certificate(names: &[&str], from: (i32, u8, u8), to: (i32, u8, u8)) -> Vec<u8> {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
        params.not_after = rcgen::date_time_ymd(to.0, to.1, to.2);
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_the_dates_and_names_of_a_certificate() {
        // 2049: UTCTime; 2050 and later: GeneralizedTime (RFC 5280).
        let der = certificate(&["a.example", "B.example"], (2026, 3, 1), (2051, 1, 2));
        let facts = facts(&der).unwrap();
        assert_eq!(rfc3339(facts.not_before), "2026-03-01T00:00:00Z");
        assert_eq!(rfc3339(facts.not_after), "2051-01-02T00:00:00Z");
        assert_eq!(facts.dns_names, ["a.example", "b.example"]);
        assert!(facts.covers(&["b.example".into()]));
        assert!(!facts.covers(&["c.example".into()]));
    }

    #[test]
    fn renewal_is_due_when_a_third_of_the_lifetime_is_left() {
        let facts = Facts {
            not_before: 900,
            not_after: 900 + 90 * 86_400,
            dns_names: Vec::new(),
            ari_id: None,
        };
        assert_eq!(facts.renew_at(), 900 + 60 * 86_400);
    }

    #[test]
    fn anything_else_is_not_a_certificate() {
        let der = certificate(&["a.example"], (2026, 1, 1), (2026, 4, 1));
        assert!(facts(&der[..der.len() - 1]).is_none());
        assert!(facts(b"").is_none());
        assert!(facts(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_none());
        let mut wrong = der.clone();
        wrong[0] = 0x31;
        assert!(facts(&wrong).is_none());
    }

    #[test]
    fn the_ari_identifier_is_the_authority_key_id_and_the_serial() {
        // RFC 9773 §4.1's example: keyIdentifier 69:88:5B:6B:87:46:40:41:
        // E1:B3:7B:84:7B:A0:AE:2C:DE:01:C8:D4, serial 00:87:65:43:21.
        let issuer_key = KeyPair::generate().unwrap();
        let mut issuer = CertificateParams::new(Vec::<String>::new()).unwrap();
        issuer.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        issuer.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(vec![
            0x69, 0x88, 0x5b, 0x6b, 0x87, 0x46, 0x40, 0x41, 0xe1, 0xb3, 0x7b, 0x84, 0x7b, 0xa0,
            0xae, 0x2c, 0xde, 0x01, 0xc8, 0xd4,
        ]);
        let issuer_cert = issuer.self_signed(&issuer_key).unwrap();
        let issuer = rcgen::Issuer::new(issuer, &issuer_key);
        let mut leaf = CertificateParams::new(vec!["a.example".to_string()]).unwrap();
        leaf.serial_number = Some(rcgen::SerialNumber::from_slice(&[
            0x00, 0x87, 0x65, 0x43, 0x21,
        ]));
        leaf.use_authority_key_identifier_extension = true;
        let leaf = leaf
            .signed_by(&KeyPair::generate().unwrap(), &issuer)
            .unwrap();
        let facts = facts(leaf.der()).unwrap();
        assert_eq!(
            facts.ari_id.as_deref(),
            Some("aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE")
        );
        assert_eq!(facts.dns_names, ["a.example"]);
        // A self-signed certificate without the extension has none.
        assert_eq!(super::facts(issuer_cert.der()).unwrap().ari_id, None);
    }

    #[test]
    fn rfc_3339_times_are_read_as_the_cas_write_them() {
        assert_eq!(parse_rfc3339("2026-03-01T12:00:00Z"), Some(1_772_366_400));
        assert_eq!(
            parse_rfc3339("2026-03-01T12:00:00.123456Z"),
            Some(1_772_366_400)
        );
        assert_eq!(
            parse_rfc3339("2026-03-01T13:30:00+01:30"),
            Some(1_772_366_400)
        );
        assert_eq!(
            parse_rfc3339("2026-03-01T10:00:00-02:00"),
            Some(1_772_366_400)
        );
        assert_eq!(rfc3339(1_772_366_400), "2026-03-01T12:00:00Z");
        for bad in [
            "",
            "2026-03-01",
            "2026-03-01T12:00:00",
            "2026-13-01T12:00:00Z",
            "1969-12-31T23:59:59Z",
            "2026-03-01T12:00:00+0100",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn log_dates_are_rfc_3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_868_799), "2000-02-29T23:59:59Z");
    }

    #[test]
    fn dates_before_1970_are_not_understood() {
        // rcgen's default notBefore is 1975; 1960 is refused, not wrapped.
        let der = certificate(&["a.example"], (1960, 1, 1), (2030, 1, 1));
        assert!(facts(&der).is_none());
    }
}
