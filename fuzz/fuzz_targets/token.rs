//! Refresh-token encryption: `open` on arbitrary text, and `seal` → `open`
//! round trips, for both format versions.
//!
//! Input: any bytes, taken as text (invalid UTF-8 replaced). Each input is
//! both opened as a token and sealed as a refresh token, as version 1 (no
//! sign-in time) and as version 2 (a sign-in time made of its first 8
//! bytes).
//!
//! Invariants checked besides "never panics":
//! - the only strings that open are the four tokens sealed for this target
//!   (in the seed corpus: versions 1 and 2, under the current and the
//!   previous key), exactly, with their refresh token and sign-in time: a
//!   forgery, a tampered, relabelled (the other version byte) or re-encoded
//!   (non-canonical base64) token, or one for another client id never
//!   opens;
//! - `open(seal(x, t)) == (x, t)` under the current key, for any text `x`
//!   whose sealed form fits `MAX_TOKEN_CHARS` (longer ones are refused by
//!   design) and `t` none or any time;
//! - a sealed token is URL-safe text and does not open for another app.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use spotify_token_swap::config::Secret;
use spotify_token_swap::token::{MAX_TOKEN_CHARS, Opened, TokenCipher};

const CURRENT: &str = "fuzz-current-secret-of-32-characters-x";
const PREVIOUS: &str = "fuzz-previous-secret-of-32-characters";
const CLIENT_ID: &str = "fuzz-client";

/// Version 1, sealed with `CURRENT` for `CLIENT_ID`
/// (fuzz/corpus/token/sealed-current).
const SEALED_CURRENT: &str =
    "AdFVDsuOlUj_uwruYvXYISVR43RIystaYIZAJVgTD-2aRUl9Mre4s1YFS520peybmAorJoXss8Lx1hFL19s";
/// Version 1, sealed with `PREVIOUS` for `CLIENT_ID`
/// (fuzz/corpus/token/sealed-previous).
const SEALED_PREVIOUS: &str =
    "Ac0Ek37B5EXMXE7ncTH30JKQc5aZ5IvAAZzgvYQtz2cLNQQSCFVSh54wsJuzD7Lz_2paiQ";
/// Version 2, signed in at 1767225600, sealed with `CURRENT` for
/// `CLIENT_ID` (fuzz/corpus/token/sealed-v2-current).
const SEALED_V2_CURRENT: &str =
    "AuG2sznA7cbOXW7b60DzVsPw8Do6tHByQksrDE_OBb4NXtoETKnPVcRBRP95mq0fjLR7p3UVvI2O-1qeEAD78jk";
/// Version 2, signed in at 1751328000, sealed with `PREVIOUS` for
/// `CLIENT_ID` (fuzz/corpus/token/sealed-v2-previous).
const SEALED_V2_PREVIOUS: &str =
    "Ai7cmS-mmLoWqZkCDcLspneHsanw1cVOPQEXI8LL0IHteECSxDw06hVxG3d_ODlGDu6k7ZAVBBslYhEEjv_4";

/// What each sealed token opens to: refresh token, previous key, sign-in
/// time.
const SEALED: [(&str, (&str, bool, Option<u64>)); 4] = [
    (SEALED_CURRENT, ("AQD-example-spotify-refresh-token", false, None)),
    (SEALED_PREVIOUS, ("AQC-older-refresh-token", true, None)),
    (
        SEALED_V2_CURRENT,
        ("AQD-v2-spotify-refresh-token", false, Some(1_767_225_600)),
    ),
    (
        SEALED_V2_PREVIOUS,
        ("AQC-v2-older-refresh-token", true, Some(1_751_328_000)),
    ),
];

static CIPHER: LazyLock<TokenCipher> =
    LazyLock::new(|| TokenCipher::new(&Secret::new(CURRENT), &[Secret::new(PREVIOUS)], CLIENT_ID));
/// Same keys, another app.
static OTHER_APP: LazyLock<TokenCipher> = LazyLock::new(|| {
    TokenCipher::new(
        &Secret::new(CURRENT),
        &[Secret::new(PREVIOUS)],
        "another-client",
    )
});

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);

    let expected = SEALED.iter().find(|(sealed, _)| *sealed == text);
    match (CIPHER.open(&text), expected) {
        (Ok(opened), Some((_, (token, previous, signed_in_at)))) => assert_eq!(
            opened,
            Opened {
                refresh_token: token.to_string(),
                used_previous_key: *previous,
                signed_in_at: *signed_in_at,
            }
        ),
        (Ok(opened), None) => {
            panic!("opened a token that was never sealed: {text:?} → {opened:?}")
        }
        (Err(_), Some(_)) => panic!("a sealed token no longer opens: {text:?}"),
        (Err(_), None) => {}
    }
    assert!(
        OTHER_APP.open(&text).is_err(),
        "another app's cipher opened {text:?}"
    );

    let time = data
        .first_chunk::<8>()
        .map(|bytes| u64::from_be_bytes(*bytes));
    for signed_in_at in [None, time.or(Some(0))] {
        round_trip(&text, signed_in_at);
    }
});

/// Seals `text` with `signed_in_at` and checks what opens.
fn round_trip(text: &str, signed_in_at: Option<u64>) {
    let sealed = CIPHER.seal(text, signed_in_at);
    assert!(
        sealed
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "not URL-safe: {sealed}"
    );
    let opened = CIPHER.open(&sealed);
    if sealed.len() <= MAX_TOKEN_CHARS {
        assert_eq!(
            opened,
            Ok(Opened {
                refresh_token: text.to_owned(),
                used_previous_key: false,
                signed_in_at,
            })
        );
    } else {
        assert!(opened.is_err(), "a token over MAX_TOKEN_CHARS opened");
    }
    assert!(
        OTHER_APP.open(&sealed).is_err(),
        "another app opened our token"
    );
}
