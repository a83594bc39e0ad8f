//! Refresh-token encryption.
//!
//! With `ENCRYPTION_SECRET` set, the refresh token Spotify issues is never
//! handed to the client in clear: the client gets
//! `base64url(version ‖ nonce ‖ ciphertext ‖ tag)`, sealed with
//! ChaCha20-Poly1305 under a key derived from the secret by HKDF-SHA256, with
//! the Spotify client id as associated data. A stolen database of encrypted
//! tokens is useless without this server's secret, and a token minted for one
//! app cannot be replayed against another.
//!
//! Key rotation: tokens are sealed with the current key and opened with the
//! current key or any key from `ENCRYPTION_SECRET_PREVIOUS`.
//!
//! Two format versions, told apart by the first byte. Version 2 (what
//! `/swap` seals) carries the time the user signed in: its plaintext is 8
//! bytes of big-endian Unix seconds, then Spotify's refresh token, so the
//! server can say when Spotify will end the token (`lifetime.rs`). Version
//! 1 (before sign-in times) is the refresh token alone; such tokens still
//! open, carry no time, and are re-sealed as version 1, since a time made up
//! now would promise a lifetime the token does not have. Each version has
//! its own key (HKDF info names the version), so the version byte is
//! authenticated too: a token relabelled with the other version fails like a
//! tampered one, and the first 8 bytes of a version-1 token's plaintext can
//! never be read as a time.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
use std::cell::RefCell;

use crate::secret::Secret;

/// First byte of a version-1 token: the plaintext is the refresh token.
const VERSION_1: u8 = 1;
/// First byte of a version-2 token: the plaintext is the sign-in time
/// ([`SIGN_IN_TIME_BYTES`]), then the refresh token.
const VERSION_2: u8 = 2;
/// Length of the sign-in time at the start of a version-2 plaintext:
/// big-endian Unix seconds.
const SIGN_IN_TIME_BYTES: usize = 8;
/// HKDF salt; fixed so every instance with the same secret derives the same key.
const HKDF_SALT: &[u8] = b"spotify-token-swap/refresh-token/salt/v1";
/// HKDF info of the version-1 key: binds the key to this one use.
const HKDF_INFO_V1: &[u8] = b"spotify-token-swap refresh-token chacha20-poly1305 v1";
/// HKDF info of the version-2 key: another key than version 1's, so a
/// token's version byte cannot be changed without failing authentication.
const HKDF_INFO_V2: &[u8] = b"spotify-token-swap refresh-token chacha20-poly1305 v2";
/// Length of the AEAD tag.
const TAG_LEN: usize = 16;
/// Longest token text accepted for decryption; Spotify's refresh tokens are
/// about 130 characters (about 210 sealed as version 2), so this is generous
/// without letting a client make us decode megabytes.
pub const MAX_TOKEN_CHARS: usize = 4096;

/// The refresh token could not be opened. Deliberately carries no detail:
/// tampered, truncated, wrong key and wrong app all look the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidToken;

/// A token opened successfully.
#[derive(PartialEq, Eq)]
pub struct Opened {
    /// Spotify's refresh token, in clear.
    pub refresh_token: String,
    /// Whether it was sealed under a previous key.
    pub used_previous_key: bool,
    /// When the user signed in, in Unix seconds: carried by a version-2
    /// token; `None` for version 1.
    pub signed_in_at: Option<u64>,
}

impl std::fmt::Debug for Opened {
    // SECURITY: the refresh token in clear is what encryption protects; one
    // `{:?}` in a log line must not undo that.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("refresh_token", &"[redacted]")
            .field("used_previous_key", &self.used_previous_key)
            .field("signed_in_at", &self.signed_in_at)
            .finish()
    }
}

/// The keys one secret gives: one per format version.
struct Keys {
    v1: LessSafeKey,
    v2: LessSafeKey,
}

impl Keys {
    fn of(secret: &Secret) -> Keys {
        Keys {
            v1: derive_key(secret, HKDF_INFO_V1),
            v2: derive_key(secret, HKDF_INFO_V2),
        }
    }

    /// The key of format `version`, if it is one.
    fn of_version(&self, version: u8) -> Option<&LessSafeKey> {
        match version {
            VERSION_1 => Some(&self.v1),
            VERSION_2 => Some(&self.v2),
            _ => None,
        }
    }
}

/// Seals and opens refresh tokens for one Spotify app.
pub struct TokenCipher {
    current: Keys,
    previous: Vec<Keys>,
    client_id: Vec<u8>,
    rng: SystemRandom,
}

impl std::fmt::Debug for TokenCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCipher")
            .field("keys", &"[redacted]")
            .field("previous_keys", &self.previous.len())
            .finish()
    }
}

/// Nonces are fetched from the OS this many at a time, per thread: one
/// `getrandom` per 32 seals instead of one per seal.
const NONCES_PER_BATCH: usize = 32;

/// 96 fresh random bits from the OS, never handed out twice.
///
/// SECURITY: a repeated nonce under one key breaks ChaCha20-Poly1305; 96
/// random bits from the OS make that negligible. Taking them from a batch
/// changes nothing there: each thread fills its own batch from the OS and
/// hands every nonce out once (a nonce is not secret — it travels in the
/// token). If the OS RNG fails we cannot seal safely at all, so we stop
/// rather than continue.
fn fresh_nonce(rng: &SystemRandom) -> [u8; NONCE_LEN] {
    thread_local! {
        /// Random bytes for the next nonces, and how many nonces were used.
        static BATCH: RefCell<([u8; NONCE_LEN * NONCES_PER_BATCH], usize)> =
            const { RefCell::new(([0; NONCE_LEN * NONCES_PER_BATCH], NONCES_PER_BATCH)) };
    }
    BATCH.with_borrow_mut(|(bytes, used)| {
        if *used == NONCES_PER_BATCH {
            rng.fill(bytes)
                .expect("the operating system's random number generator failed");
            *used = 0;
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&bytes[*used * NONCE_LEN..][..NONCE_LEN]);
        *used += 1;
        nonce
    })
}

impl TokenCipher {
    /// Derives the keys from the current and previous secrets.
    pub fn new(current: &Secret, previous: &[Secret], client_id: &str) -> TokenCipher {
        TokenCipher {
            current: Keys::of(current),
            previous: previous.iter().map(Keys::of).collect(),
            client_id: client_id.as_bytes().to_vec(),
            rng: SystemRandom::new(),
        }
    }

    /// Encrypts a refresh token into URL-safe text: format version 2 with
    /// the sign-in time `signed_in_at` (Unix seconds), or version 1 without
    /// one — for re-sealing a version-1 token, which carries none.
    pub fn seal(&self, refresh_token: &str, signed_in_at: Option<u64>) -> String {
        let nonce = fresh_nonce(&self.rng);
        let (version, key, time) = match signed_in_at {
            Some(secs) => (VERSION_2, &self.current.v2, Some(secs.to_be_bytes())),
            None => (VERSION_1, &self.current.v1, None),
        };
        let time: &[u8] = time.as_ref().map_or(&[], |bytes| bytes);
        let plain_len = time.len() + refresh_token.len();
        let mut out = Vec::with_capacity(1 + NONCE_LEN + plain_len + TAG_LEN);
        out.push(version);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(time);
        out.extend_from_slice(refresh_token.as_bytes());
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&self.client_id),
                &mut out[1 + NONCE_LEN..],
            )
            // ChaCha20-Poly1305 only fails for inputs over 256 GiB.
            .expect("refresh token too large to seal");
        out.extend_from_slice(tag.as_ref());
        URL_SAFE_NO_PAD.encode(out)
    }

    /// Decrypts a token made by [`seal`](Self::seal), of either version,
    /// with the current or a previous key.
    pub fn open(&self, token: &str) -> Result<Opened, InvalidToken> {
        if token.len() > MAX_TOKEN_CHARS {
            return Err(InvalidToken);
        }
        let raw = URL_SAFE_NO_PAD
            .decode(token.as_bytes())
            .map_err(|_| InvalidToken)?;
        if raw.len() < 1 + NONCE_LEN + TAG_LEN {
            return Err(InvalidToken);
        }
        let version = raw[0];
        let nonce: [u8; NONCE_LEN] = raw[1..1 + NONCE_LEN].try_into().map_err(|_| InvalidToken)?;
        let sealed = &raw[1 + NONCE_LEN..];
        let keys = std::iter::once(&self.current).chain(self.previous.iter());
        for (i, keys) in keys.enumerate() {
            let key = keys.of_version(version).ok_or(InvalidToken)?;
            let mut buf = sealed.to_vec();
            let opened = key.open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&self.client_id),
                &mut buf,
            );
            if let Ok(plain) = opened {
                return read_plaintext(version, plain, i > 0);
            }
        }
        Err(InvalidToken)
    }
}

/// What an authenticated plaintext of format `version` holds.
fn read_plaintext(
    version: u8,
    plain: &[u8],
    used_previous_key: bool,
) -> Result<Opened, InvalidToken> {
    let (signed_in_at, token) = match version {
        VERSION_2 => {
            let (time, token) = plain
                .split_first_chunk::<SIGN_IN_TIME_BYTES>()
                .ok_or(InvalidToken)?;
            (Some(u64::from_be_bytes(*time)), token)
        }
        _ => (None, plain),
    };
    Ok(Opened {
        refresh_token: String::from_utf8(token.to_vec()).map_err(|_| InvalidToken)?,
        used_previous_key,
        signed_in_at,
    })
}

/// HKDF-SHA256(secret), with `info` naming the key's use → a
/// ChaCha20-Poly1305 key.
fn derive_key(secret: &Secret, info: &[u8]) -> LessSafeKey {
    struct KeyLen;
    impl hkdf::KeyType for KeyLen {
        fn len(&self) -> usize {
            CHACHA20_POLY1305.key_len()
        }
    }
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(secret.expose().as_bytes());
    let mut key = [0u8; 32];
    // `expand` and `fill` fail only when the requested length exceeds
    // 255 × the hash length; 32 bytes never does.
    prk.expand(&[info], KeyLen)
        .and_then(|okm| okm.fill(&mut key))
        .expect("HKDF output of 32 bytes");
    let unbound = UnboundKey::new(&CHACHA20_POLY1305, &key).expect("32-byte ChaCha20 key");
    LessSafeKey::new(unbound)
}

/// A new random encryption secret: 32 random bytes, base64url.
pub fn generate_secret() -> Result<String, ring::error::Unspecified> {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "an-encryption-secret-of-32-chars-or-more";
    const OTHER: &str = "a-different-secret-of-32-characters-long";
    /// A sign-in time: 2026-01-01T00:00:00Z.
    const SIGNED_IN_AT: u64 = 1_767_225_600;
    /// `AQD-v1-refresh-token`, sealed under [`SECRET`] for `app` by the
    /// server before sign-in times (format version 1).
    const SEALED_V1: &str = "AVlIdAjqM6M_jlxt6k5G1Egvg0VFlHXp-sDv6qlNqxMFO-U-d62pBCsFgGMXlqvvoQ";

    fn cipher(secret: &str, previous: &[&str], client_id: &str) -> TokenCipher {
        let previous: Vec<Secret> = previous.iter().map(|s| Secret::new(*s)).collect();
        TokenCipher::new(&Secret::new(secret), &previous, client_id)
    }

    fn opened(
        token: &str,
        previous: bool,
        signed_in_at: Option<u64>,
    ) -> Result<Opened, InvalidToken> {
        Ok(Opened {
            refresh_token: token.into(),
            used_previous_key: previous,
            signed_in_at,
        })
    }

    /// A token sealed now, of each version.
    fn both_versions(c: &TokenCipher, token: &str) -> [String; 2] {
        [c.seal(token, None), c.seal(token, Some(SIGNED_IN_AT))]
    }

    #[test]
    fn round_trip_returns_the_token_and_its_sign_in_time() {
        let c = cipher(SECRET, &[], "app");
        let sealed = c.seal("AQD-spotify-refresh-token", Some(SIGNED_IN_AT));
        assert_ne!(sealed, "AQD-spotify-refresh-token");
        assert_eq!(
            c.open(&sealed),
            opened("AQD-spotify-refresh-token", false, Some(SIGNED_IN_AT))
        );
    }

    #[test]
    fn a_token_with_a_sign_in_time_is_version_2_and_8_bytes_longer() {
        let c = cipher(SECRET, &[], "app");
        let [v1, v2] = both_versions(&c, "AQD-spotify-refresh-token")
            .map(|sealed| URL_SAFE_NO_PAD.decode(sealed).unwrap());
        assert_eq!((v1[0], v2[0]), (1, 2));
        assert_eq!(v2.len(), v1.len() + 8);
        assert_eq!(
            v1.len(),
            1 + NONCE_LEN + "AQD-spotify-refresh-token".len() + TAG_LEN
        );
    }

    #[test]
    fn sealing_without_a_sign_in_time_makes_a_version_1_token() {
        let c = cipher(SECRET, &[], "app");
        assert_eq!(
            c.open(&c.seal("AQD-token", None)),
            opened("AQD-token", false, None)
        );
    }

    #[test]
    fn a_version_1_token_sealed_before_sign_in_times_still_opens() {
        let c = cipher(SECRET, &[], "app");
        assert_eq!(
            c.open(SEALED_V1),
            opened("AQD-v1-refresh-token", false, None)
        );
        let rotated = cipher(OTHER, &[SECRET], "app");
        assert_eq!(
            rotated.open(SEALED_V1),
            opened("AQD-v1-refresh-token", true, None)
        );
    }

    #[test]
    fn a_token_relabelled_with_the_other_version_does_not_open() {
        let c = cipher(SECRET, &[], "app");
        for sealed in both_versions(&c, "AQD-spotify-refresh-token") {
            let mut raw = URL_SAFE_NO_PAD.decode(sealed).unwrap();
            raw[0] = if raw[0] == VERSION_1 {
                VERSION_2
            } else {
                VERSION_1
            };
            assert_eq!(c.open(&URL_SAFE_NO_PAD.encode(&raw)), Err(InvalidToken));
        }
    }

    #[test]
    fn a_version_2_plaintext_shorter_than_its_time_does_not_open() {
        let c = cipher(SECRET, &[], "app");
        let nonce = [7u8; NONCE_LEN];
        let mut out = vec![VERSION_2];
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&[0; SIGN_IN_TIME_BYTES - 1]);
        let tag = c
            .current
            .v2
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&c.client_id),
                &mut out[1 + NONCE_LEN..],
            )
            .unwrap();
        out.extend_from_slice(tag.as_ref());
        assert_eq!(c.open(&URL_SAFE_NO_PAD.encode(&out)), Err(InvalidToken));
    }

    #[test]
    fn resealing_under_the_current_key_keeps_the_sign_in_time() {
        let old = cipher(OTHER, &[], "app").seal("token", Some(SIGNED_IN_AT));
        let rotated = cipher(SECRET, &[OTHER], "app");
        let from_old = rotated.open(&old).unwrap();
        assert_eq!(
            Ok(&from_old),
            opened("token", true, Some(SIGNED_IN_AT)).as_ref()
        );
        let resealed = rotated.seal(&from_old.refresh_token, from_old.signed_in_at);
        assert_eq!(
            cipher(SECRET, &[], "app").open(&resealed),
            opened("token", false, Some(SIGNED_IN_AT))
        );
    }

    #[test]
    fn sealed_token_is_url_safe_text() {
        let c = cipher(SECRET, &[], "app");
        for _ in 0..50 {
            for sealed in both_versions(&c, "token+with/odd=chars") {
                assert!(
                    sealed
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                    "{sealed}"
                );
            }
        }
    }

    #[test]
    fn each_seal_uses_a_fresh_nonce() {
        let c = cipher(SECRET, &[], "app");
        assert_ne!(c.seal("same", None), c.seal("same", None));
        assert_ne!(
            c.seal("same", Some(SIGNED_IN_AT)),
            c.seal("same", Some(SIGNED_IN_AT))
        );
    }

    #[test]
    fn nonces_never_repeat_across_batches_and_threads() {
        let c = std::sync::Arc::new(cipher(SECRET, &[], "app"));
        let seal_many = |c: std::sync::Arc<TokenCipher>| {
            (0..5 * NONCES_PER_BATCH + 3)
                .map(|i| {
                    let time = (i % 2 == 0).then_some(SIGNED_IN_AT);
                    URL_SAFE_NO_PAD.decode(c.seal("same", time)).unwrap()[1..1 + NONCE_LEN].to_vec()
                })
                .collect::<Vec<_>>()
        };
        let other = {
            let c = std::sync::Arc::clone(&c);
            std::thread::spawn(move || seal_many(c))
        };
        let mut nonces = seal_many(c);
        nonces.extend(other.join().unwrap());
        let total = nonces.len();
        assert!(nonces.iter().all(|n| n.iter().any(|&b| b != 0)));
        nonces.sort();
        nonces.dedup();
        assert_eq!(nonces.len(), total, "a nonce was used twice");
    }

    #[test]
    fn refresh_rejects_tampered_token() {
        let c = cipher(SECRET, &[], "app");
        for sealed in both_versions(&c, "token") {
            let mut raw = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
            for i in 0..raw.len() {
                raw[i] ^= 0x01;
                assert_eq!(
                    c.open(&URL_SAFE_NO_PAD.encode(&raw)),
                    Err(InvalidToken),
                    "byte {i}"
                );
                raw[i] ^= 0x01;
            }
        }
    }

    #[test]
    fn refresh_rejects_truncated_token() {
        let c = cipher(SECRET, &[], "app");
        for sealed in both_versions(&c, "token") {
            for len in 0..sealed.len() {
                assert_eq!(c.open(&sealed[..len]), Err(InvalidToken), "length {len}");
            }
        }
    }

    #[test]
    fn refresh_rejects_wrong_key() {
        for sealed in both_versions(&cipher(SECRET, &[], "app"), "token") {
            assert_eq!(cipher(OTHER, &[], "app").open(&sealed), Err(InvalidToken));
        }
    }

    #[test]
    fn refresh_rejects_token_of_another_app() {
        for sealed in both_versions(&cipher(SECRET, &[], "app-one"), "token") {
            assert_eq!(
                cipher(SECRET, &[], "app-two").open(&sealed),
                Err(InvalidToken)
            );
        }
    }

    #[test]
    fn previous_key_still_opens_after_rotation() {
        let old = cipher(OTHER, &[], "app").seal("token", Some(SIGNED_IN_AT));
        let rotated = cipher(SECRET, &[OTHER], "app");
        assert_eq!(
            rotated.open(&old),
            opened("token", true, Some(SIGNED_IN_AT))
        );
        // New tokens are sealed with the new key only.
        for new in both_versions(&rotated, "token") {
            assert_eq!(cipher(OTHER, &[], "app").open(&new), Err(InvalidToken));
        }
    }

    #[test]
    fn garbage_and_plain_tokens_are_rejected() {
        let c = cipher(SECRET, &[], "app");
        for bad in [
            "",
            "AQD-plain-spotify-token",
            "!!!!",
            "AAAA",
            &"A".repeat(5000),
        ] {
            assert_eq!(c.open(bad), Err(InvalidToken), "{bad}");
        }
    }

    #[test]
    fn a_version_2_token_of_the_longest_spotify_tokens_fits_max_token_chars() {
        // Spotify's refresh tokens are about 130 characters; allow 20 times
        // that before the 8 bytes of version 2 could matter.
        let c = cipher(SECRET, &[], "app");
        let long = "A".repeat(2600);
        let sealed = c.seal(&long, Some(SIGNED_IN_AT));
        assert!(sealed.len() <= MAX_TOKEN_CHARS, "{}", sealed.len());
        assert_eq!(c.open(&sealed), opened(&long, false, Some(SIGNED_IN_AT)));
    }

    #[test]
    fn debug_output_hides_keys() {
        let c = cipher(SECRET, &[OTHER], "app");
        let debug = format!("{c:?}");
        assert!(!debug.contains(SECRET) && !debug.contains(OTHER), "{debug}");
    }

    #[test]
    fn opened_debug_hides_the_refresh_token() {
        let c = cipher(SECRET, &[], "app");
        let opened = c
            .open(&c.seal("AQD-clear-refresh-token", Some(SIGNED_IN_AT)))
            .unwrap();
        let debug = format!("{opened:?}");
        assert!(!debug.contains("AQD-clear-refresh-token"), "{debug}");
        assert_eq!(
            debug,
            r#"Opened { refresh_token: "[redacted]", used_previous_key: false, signed_in_at: Some(1767225600) }"#
        );
    }

    #[test]
    fn generated_secret_is_43_url_safe_chars() {
        let s = generate_secret().unwrap();
        assert_eq!(s.len(), 43);
        assert_eq!(URL_SAFE_NO_PAD.decode(&s).unwrap().len(), 32);
        assert_ne!(s, generate_secret().unwrap());
    }
}
