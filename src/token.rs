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

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
use std::cell::RefCell;

use crate::secret::Secret;

/// First byte of every token: the format version.
const TOKEN_VERSION: u8 = 1;
/// HKDF salt; fixed so every instance with the same secret derives the same key.
const HKDF_SALT: &[u8] = b"spotify-token-swap/refresh-token/salt/v1";
/// HKDF info: binds the key to this one use.
const HKDF_INFO: &[u8] = b"spotify-token-swap refresh-token chacha20-poly1305 v1";
/// Length of the AEAD tag.
const TAG_LEN: usize = 16;
/// Longest token text accepted for decryption; Spotify's refresh tokens are
/// about 130 characters, so this is generous without letting a client make us
/// decode megabytes.
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
}

impl std::fmt::Debug for Opened {
    // SECURITY: the refresh token in clear is what encryption protects; one
    // `{:?}` in a log line must not undo that.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("refresh_token", &"[redacted]")
            .field("used_previous_key", &self.used_previous_key)
            .finish()
    }
}

/// Seals and opens refresh tokens for one Spotify app.
pub struct TokenCipher {
    current: LessSafeKey,
    previous: Vec<LessSafeKey>,
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
            current: derive_key(current),
            previous: previous.iter().map(derive_key).collect(),
            client_id: client_id.as_bytes().to_vec(),
            rng: SystemRandom::new(),
        }
    }

    /// Encrypts a refresh token into URL-safe text.
    pub fn seal(&self, refresh_token: &str) -> String {
        let nonce = fresh_nonce(&self.rng);
        let mut out = Vec::with_capacity(1 + NONCE_LEN + refresh_token.len() + TAG_LEN);
        out.push(TOKEN_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(refresh_token.as_bytes());
        let tag = self
            .current
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

    /// Decrypts a token made by [`seal`](Self::seal) with the current or a
    /// previous key.
    pub fn open(&self, token: &str) -> Result<Opened, InvalidToken> {
        if token.len() > MAX_TOKEN_CHARS {
            return Err(InvalidToken);
        }
        let raw = URL_SAFE_NO_PAD
            .decode(token.as_bytes())
            .map_err(|_| InvalidToken)?;
        if raw.len() < 1 + NONCE_LEN + TAG_LEN || raw[0] != TOKEN_VERSION {
            return Err(InvalidToken);
        }
        let nonce: [u8; NONCE_LEN] = raw[1..1 + NONCE_LEN].try_into().map_err(|_| InvalidToken)?;
        let sealed = &raw[1 + NONCE_LEN..];
        let keys = std::iter::once(&self.current).chain(self.previous.iter());
        for (i, key) in keys.enumerate() {
            let mut buf = sealed.to_vec();
            let opened = key.open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&self.client_id),
                &mut buf,
            );
            if let Ok(plain) = opened {
                let refresh_token = String::from_utf8(plain.to_vec()).map_err(|_| InvalidToken)?;
                return Ok(Opened {
                    refresh_token,
                    used_previous_key: i > 0,
                });
            }
        }
        Err(InvalidToken)
    }
}

/// HKDF-SHA256(secret) → a ChaCha20-Poly1305 key.
fn derive_key(secret: &Secret) -> LessSafeKey {
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
    prk.expand(&[HKDF_INFO], KeyLen)
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

    fn cipher(secret: &str, previous: &[&str], client_id: &str) -> TokenCipher {
        let previous: Vec<Secret> = previous.iter().map(|s| Secret::new(*s)).collect();
        TokenCipher::new(&Secret::new(secret), &previous, client_id)
    }

    #[test]
    fn round_trip_returns_the_token() {
        let c = cipher(SECRET, &[], "app");
        let sealed = c.seal("AQD-spotify-refresh-token");
        assert_ne!(sealed, "AQD-spotify-refresh-token");
        assert_eq!(
            c.open(&sealed),
            Ok(Opened {
                refresh_token: "AQD-spotify-refresh-token".into(),
                used_previous_key: false
            })
        );
    }

    #[test]
    fn sealed_token_is_url_safe_text() {
        let c = cipher(SECRET, &[], "app");
        for _ in 0..50 {
            let sealed = c.seal("token+with/odd=chars");
            assert!(
                sealed
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{sealed}"
            );
        }
    }

    #[test]
    fn each_seal_uses_a_fresh_nonce() {
        let c = cipher(SECRET, &[], "app");
        assert_ne!(c.seal("same"), c.seal("same"));
    }

    #[test]
    fn nonces_never_repeat_across_batches_and_threads() {
        let c = std::sync::Arc::new(cipher(SECRET, &[], "app"));
        let seal_many = |c: std::sync::Arc<TokenCipher>| {
            (0..5 * NONCES_PER_BATCH + 3)
                .map(|_| URL_SAFE_NO_PAD.decode(c.seal("same")).unwrap()[1..1 + NONCE_LEN].to_vec())
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
        let sealed = c.seal("token");
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

    #[test]
    fn refresh_rejects_truncated_token() {
        let c = cipher(SECRET, &[], "app");
        let sealed = c.seal("token");
        for len in 0..sealed.len() {
            assert_eq!(c.open(&sealed[..len]), Err(InvalidToken), "length {len}");
        }
    }

    #[test]
    fn refresh_rejects_wrong_key() {
        let sealed = cipher(SECRET, &[], "app").seal("token");
        assert_eq!(cipher(OTHER, &[], "app").open(&sealed), Err(InvalidToken));
    }

    #[test]
    fn refresh_rejects_token_of_another_app() {
        let sealed = cipher(SECRET, &[], "app-one").seal("token");
        assert_eq!(
            cipher(SECRET, &[], "app-two").open(&sealed),
            Err(InvalidToken)
        );
    }

    #[test]
    fn previous_key_still_opens_after_rotation() {
        let old = cipher(OTHER, &[], "app").seal("token");
        let rotated = cipher(SECRET, &[OTHER], "app");
        assert_eq!(
            rotated.open(&old),
            Ok(Opened {
                refresh_token: "token".into(),
                used_previous_key: true
            })
        );
        // New tokens are sealed with the new key only.
        let new = rotated.seal("token");
        assert_eq!(cipher(OTHER, &[], "app").open(&new), Err(InvalidToken));
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
    fn debug_output_hides_keys() {
        let c = cipher(SECRET, &[OTHER], "app");
        let debug = format!("{c:?}");
        assert!(!debug.contains(SECRET) && !debug.contains(OTHER), "{debug}");
    }

    #[test]
    fn opened_debug_hides_the_refresh_token() {
        let c = cipher(SECRET, &[], "app");
        let opened = c.open(&c.seal("AQD-clear-refresh-token")).unwrap();
        let debug = format!("{opened:?}");
        assert!(!debug.contains("AQD-clear-refresh-token"), "{debug}");
        assert_eq!(
            debug,
            r#"Opened { refresh_token: "[redacted]", used_previous_key: false }"#
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
