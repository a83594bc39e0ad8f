//! The secrets and codes of device login, all from `ring`'s system random
//! number generator: the user code a person types, the device code and
//! `state` nobody may guess, the browser binding, and PKCE's verifier and
//! S256 challenge (RFC 7636 §4.1–4.2).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};

/// The letters of a user code: consonants only, no vowels (no words), no
/// letters that read as digits (RFC 8628 §6.1).
pub(crate) const USER_CODE_ALPHABET: &[u8; 20] = b"BCDFGHJKLMNPQRSTVWXZ";
/// Letters in a user code: 20^8 ≈ 2^34.6.
pub(crate) const USER_CODE_LETTERS: usize = 8;
/// Random bytes behind a device code, `state`, binding or verifier: 256
/// bits, 43 characters of base64url.
const SECRET_BYTES: usize = 32;
/// Random bytes drawn at once for a user code; rejection sampling keeps
/// the letters uniform and rarely needs a second draw.
const USER_CODE_DRAW_BYTES: usize = 16;
/// The largest multiple of the alphabet's size a byte can hold: bytes at
/// or above it are drawn again, so every letter is equally likely.
const UNBIASED_BYTE_LIMIT: u8 = 240;

/// The system random number generator failed: nothing secret can be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RandomFailed;

/// A user code: 8 letters of [`USER_CODE_ALPHABET`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct UserCode([u8; USER_CODE_LETTERS]);

impl UserCode {
    /// A fresh random code.
    pub(crate) fn random(rng: &SystemRandom) -> Result<UserCode, RandomFailed> {
        let mut letters = [0u8; USER_CODE_LETTERS];
        let mut filled = 0;
        while filled < USER_CODE_LETTERS {
            let mut bytes = [0u8; USER_CODE_DRAW_BYTES];
            rng.fill(&mut bytes).map_err(|_| RandomFailed)?;
            for byte in bytes.into_iter().filter(|b| *b < UNBIASED_BYTE_LIMIT) {
                if filled == USER_CODE_LETTERS {
                    break;
                }
                letters[filled] = USER_CODE_ALPHABET[usize::from(byte) % USER_CODE_ALPHABET.len()];
                filled += 1;
            }
        }
        Ok(UserCode(letters))
    }

    /// Reads what a person typed: any case, with or without the dash (and
    /// spaces around or inside, as phones insert them); `None` for anything
    /// that cannot be a code.
    pub(crate) fn parse(text: &str) -> Option<UserCode> {
        let mut letters = [0u8; USER_CODE_LETTERS];
        let mut count = 0;
        for byte in text.bytes().filter(|b| !matches!(b, b'-' | b' ')) {
            let upper = byte.to_ascii_uppercase();
            if count == USER_CODE_LETTERS || !USER_CODE_ALPHABET.contains(&upper) {
                return None;
            }
            letters[count] = upper;
            count += 1;
        }
        (count == USER_CODE_LETTERS && text.len() <= 2 * USER_CODE_LETTERS)
            .then_some(UserCode(letters))
    }
}

impl std::fmt::Display for UserCode {
    /// `XXXX-XXXX`, as in the JSON and on the pages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (first, second) = self.0.split_at(USER_CODE_LETTERS / 2);
        // Only letters of the alphabet are ever stored.
        let text = |half: &[u8]| String::from_utf8_lossy(half).into_owned();
        write!(f, "{}-{}", text(first), text(second))
    }
}

/// 256 random bits as base64url: a device code, `state`, a browser
/// binding, a form token or a PKCE verifier (43 characters, within RFC
/// 7636's `[A-Za-z0-9-._~]{43,128}`).
pub(crate) fn secret(rng: &SystemRandom) -> Result<String, RandomFailed> {
    let mut bytes = [0u8; SECRET_BYTES];
    rng.fill(&mut bytes).map_err(|_| RandomFailed)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// PKCE's S256 challenge of `verifier`: base64url(SHA-256(verifier)).
pub(crate) fn challenge(verifier: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// Compares two secrets in time that does not depend on where they differ.
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |diff, (x, y)| diff | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_are_eight_letters_of_the_alphabet_written_with_a_dash() {
        let rng = SystemRandom::new();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let code = UserCode::random(&rng).unwrap();
            let text = code.to_string();
            assert_eq!(text.len(), 9, "{text}");
            assert_eq!(&text[4..5], "-");
            assert!(
                text.bytes()
                    .filter(|b| *b != b'-')
                    .all(|b| USER_CODE_ALPHABET.contains(&b))
            );
            seen.insert(code);
        }
        assert!(seen.len() > 190, "codes repeat: {}", seen.len());
    }

    #[test]
    fn typed_codes_match_in_any_case_with_or_without_the_dash() {
        let code = UserCode::parse("BCDF-GHJK").unwrap();
        for typed in [
            "bcdf-ghjk",
            "BCDFGHJK",
            "bcdfghjk",
            "Bcdf ghjk",
            " BCDF-GHJK ",
        ] {
            assert_eq!(UserCode::parse(typed), Some(code), "{typed}");
        }
        for wrong in [
            "",
            "BCDF-GHJ",
            "BCDF-GHJKL",
            "ABCD-GHJK",
            "BCDF-GHJ1",
            "BCDF_GHJK",
            "BCDFGHJKÉ",
            "B-C-D-F-G-H-J-K-----------",
        ] {
            assert_eq!(UserCode::parse(wrong), None, "{wrong}");
        }
    }

    #[test]
    fn secrets_are_43_characters_of_base64url_and_differ() {
        let rng = SystemRandom::new();
        let (a, b) = (secret(&rng).unwrap(), secret(&rng).unwrap());
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
    }

    #[test]
    fn the_s256_challenge_is_rfc_7636s_example() {
        // RFC 7636, Appendix B.
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn secrets_compare_equal_only_when_equal() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
    }
}
