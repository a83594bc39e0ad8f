//! Refresh-token encryption: `open` on arbitrary text, and `seal` → `open`
//! round trips.
//!
//! Input: any bytes, taken as text (invalid UTF-8 replaced). Each input is
//! both opened as a token and sealed as a refresh token.
//!
//! Invariants checked besides "never panics":
//! - the only strings that open are the two tokens sealed for this target
//!   (in the seed corpus), exactly: a forgery, a tampered or re-encoded
//!   (non-canonical base64) token, or one for another client id never opens;
//! - `open(seal(x)) == x` under the current key, for any text `x` whose
//!   sealed form fits `MAX_TOKEN_CHARS` (longer ones are refused by design);
//! - a sealed token is URL-safe text and does not open for another app.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use spotify_token_swap::config::Secret;
use spotify_token_swap::token::{MAX_TOKEN_CHARS, Opened, TokenCipher};

const CURRENT: &str = "fuzz-current-secret-of-32-characters-x";
const PREVIOUS: &str = "fuzz-previous-secret-of-32-characters";
const CLIENT_ID: &str = "fuzz-client";

/// Sealed with `CURRENT` for `CLIENT_ID` (fuzz/corpus/token/sealed-current).
const SEALED_CURRENT: &str =
    "AdFVDsuOlUj_uwruYvXYISVR43RIystaYIZAJVgTD-2aRUl9Mre4s1YFS520peybmAorJoXss8Lx1hFL19s";
/// Sealed with `PREVIOUS` for `CLIENT_ID` (fuzz/corpus/token/sealed-previous).
const SEALED_PREVIOUS: &str =
    "Ac0Ek37B5EXMXE7ncTH30JKQc5aZ5IvAAZzgvYQtz2cLNQQSCFVSh54wsJuzD7Lz_2paiQ";

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

    match CIPHER.open(&text) {
        Ok(opened) => {
            let expected = match &*text {
                SEALED_CURRENT => ("AQD-example-spotify-refresh-token", false),
                SEALED_PREVIOUS => ("AQC-older-refresh-token", true),
                _ => panic!("opened a token that was never sealed: {text:?} → {opened:?}"),
            };
            assert_eq!(
                opened,
                Opened {
                    refresh_token: expected.0.to_string(),
                    used_previous_key: expected.1,
                }
            );
        }
        Err(_) => assert!(
            text != SEALED_CURRENT && text != SEALED_PREVIOUS,
            "a sealed token no longer opens"
        ),
    }
    assert!(
        OTHER_APP.open(&text).is_err(),
        "another app's cipher opened {text:?}"
    );

    let sealed = CIPHER.seal(&text);
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
                refresh_token: text.into_owned(),
                used_previous_key: false,
            })
        );
    } else {
        assert!(opened.is_err(), "a token over MAX_TOKEN_CHARS opened");
    }
    assert!(
        OTHER_APP.open(&sealed).is_err(),
        "another app opened our token"
    );
});
