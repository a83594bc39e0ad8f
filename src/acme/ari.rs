//! The CA's renewal information (ARI, RFC 9773): the window in which the
//! CA suggests renewing a certificate — earlier than our own third of the
//! lifetime when it is about to revoke it, say. A CA whose directory has no
//! `renewalInfo` is never asked; an answer that cannot be had or read
//! changes nothing (our own renewal time stands).

use std::time::Duration;

use serde::Deserialize;

use super::error::Error;
use super::wire::Wire;
use super::x509::parse_rfc3339;

/// How often the window is asked again when the CA's answer names no
/// `Retry-After` (RFC 9773 §4.3.3 suggests a few times a day).
pub(crate) const CHECK_INTERVAL: Duration = Duration::from_secs(6 * 3600);
/// The shortest and longest wait before asking again, whatever
/// `Retry-After` says.
const MIN_CHECK_INTERVAL: Duration = Duration::from_secs(60);
const MAX_CHECK_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// A renewal-information object (RFC 9773 §4.2).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RenewalInfo {
    suggested_window: Window,
    #[serde(rename = "explanationURL")]
    explanation_url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Window {
    start: String,
    end: String,
}

/// What the CA suggests for one certificate.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Suggestion {
    /// The window, Unix seconds.
    pub(crate) start: u64,
    pub(crate) end: u64,
    /// A page saying why, when the CA gives one (to log).
    pub(crate) explanation: Option<String>,
    /// When to ask again.
    pub(crate) check_again: Duration,
}

impl Suggestion {
    /// A time in the window, uniformly at random (RFC 9773 §4.2), from
    /// `random` (any 64 bits).
    pub(crate) fn pick(&self, random: u64) -> u64 {
        let span = self.end - self.start;
        self.start + random % span.saturating_add(1)
    }
}

/// The CA's suggestion for the certificate `ari_id` names; `None` when the
/// CA offers no renewal information.
pub(crate) fn ask(wire: &Wire, ari_id: &str) -> Result<Option<Suggestion>, Error> {
    let Some(base) = &wire.directory.renewal_info else {
        return Ok(None);
    };
    let url = format!("{}/{ari_id}", base.trim_end_matches('/'));
    let answer = wire.get(&url)?;
    let info: RenewalInfo = answer.json()?;
    let check_again = answer
        .retry_after
        .unwrap_or(CHECK_INTERVAL)
        .clamp(MIN_CHECK_INTERVAL, MAX_CHECK_INTERVAL);
    read(&info, check_again)
        .map(Some)
        .ok_or_else(|| Error::Unexpected {
            url,
            what: "the suggested window is not two RFC 3339 times, start before end".into(),
        })
}

fn read(info: &RenewalInfo, check_again: Duration) -> Option<Suggestion> {
    let start = parse_rfc3339(&info.suggested_window.start)?;
    let end = parse_rfc3339(&info.suggested_window.end)?;
    (start < end).then(|| Suggestion {
        start,
        end,
        explanation: info.explanation_url.clone(),
        check_again,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(json: &str) -> RenewalInfo {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn the_window_of_rfc_9773s_example_is_read() {
        let window = info(
            r#"{"suggestedWindow": {"start": "2025-01-02T04:00:00Z",
                "end": "2025-01-03T04:00:00Z"},
                "explanationURL": "https://acme.example.com/docs/ari"}"#,
        );
        let suggestion = read(&window, CHECK_INTERVAL).unwrap();
        assert_eq!(
            (suggestion.start, suggestion.end),
            (1_735_790_400, 1_735_876_800)
        );
        assert_eq!(
            suggestion.explanation.as_deref(),
            Some("https://acme.example.com/docs/ari")
        );
        assert_eq!(suggestion.pick(0), suggestion.start);
        assert_eq!(suggestion.pick(86_400), suggestion.end);
        assert_eq!(suggestion.pick(86_401), suggestion.start);
        assert!((suggestion.start..=suggestion.end).contains(&suggestion.pick(u64::MAX)));
    }

    #[test]
    fn a_window_that_ends_before_it_starts_or_is_not_dates_is_refused() {
        let backwards = info(
            r#"{"suggestedWindow": {"start": "2025-01-03T04:00:00Z", "end": "2025-01-02T04:00:00Z"}}"#,
        );
        assert_eq!(read(&backwards, CHECK_INTERVAL), None);
        let not_dates = info(r#"{"suggestedWindow": {"start": "soon", "end": "later"}}"#);
        assert_eq!(read(&not_dates, CHECK_INTERVAL), None);
    }
}
