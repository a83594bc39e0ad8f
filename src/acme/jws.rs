//! The account key and what it signs: JWS in flattened JSON form with ES256
//! (RFC 8555 §6.2, RFC 7515, RFC 7518 §3.4), the key as a JWK (RFC 7517),
//! and its thumbprint (RFC 7638), which goes into every key authorization.
//!
//! ECDSA P-256 through `ring`: `ECDSA_P256_SHA256_FIXED_SIGNING` already
//! gives the signature as the 64 bytes `r ‖ s` JWS wants.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use serde_json::{Value, json};

/// Length of an uncompressed P-256 public key: `04 ‖ x ‖ y`.
const P256_POINT_BYTES: usize = 65;
/// Length of one coordinate.
const P256_COORDINATE_BYTES: usize = 32;

/// How a request names its signer.
pub(crate) enum Signer<'a> {
    /// The key itself (`jwk`): registering the account.
    Key,
    /// The account's URL (`kid`): everything else.
    Account(&'a str),
}

/// The ACME account's key pair.
pub(crate) struct AccountKey {
    pair: EcdsaKeyPair,
    /// PKCS#8 DER, what is stored.
    pkcs8: Vec<u8>,
    /// The public key as a JWK, members in lexicographic order and no
    /// white space: the form RFC 7638 hashes.
    jwk: String,
    thumbprint: String,
}

impl std::fmt::Debug for AccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // SECURITY: never format the private key.
        write!(f, "AccountKey({})", self.thumbprint)
    }
}

impl AccountKey {
    /// A new random key.
    pub(crate) fn generate() -> Result<AccountKey, String> {
        let rng = SystemRandom::new();
        let document = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| "the system random number generator failed".to_string())?;
        AccountKey::from_pkcs8(document.as_ref())
    }

    /// A stored key (PKCS#8 DER of a P-256 key).
    pub(crate) fn from_pkcs8(pkcs8: &[u8]) -> Result<AccountKey, String> {
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
            .map_err(|_| "not a PKCS#8 ECDSA P-256 key".to_string())?;
        let point = pair.public_key().as_ref();
        if point.len() != P256_POINT_BYTES {
            return Err("not an uncompressed P-256 public key".into());
        }
        let (x, y) = point[1..].split_at(P256_COORDINATE_BYTES);
        let jwk = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            URL_SAFE_NO_PAD.encode(x),
            URL_SAFE_NO_PAD.encode(y)
        );
        let thumbprint =
            URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, jwk.as_bytes()));
        Ok(AccountKey {
            pair,
            pkcs8: pkcs8.to_vec(),
            jwk,
            thumbprint,
        })
    }

    /// PKCS#8 DER, for storage.
    pub(crate) fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The JWK thumbprint (base64url of its SHA-256).
    pub(crate) fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    /// The request body for `url`: `payload` signed (`None`: POST-as-GET,
    /// an empty payload), with `nonce` and the signer in the protected
    /// header.
    pub(crate) fn sign(
        &self,
        signer: &Signer<'_>,
        nonce: &str,
        url: &str,
        payload: Option<&Value>,
    ) -> Result<Vec<u8>, String> {
        let mut protected = json!({ "alg": "ES256", "nonce": nonce, "url": url });
        match signer {
            Signer::Key => {
                let jwk: Value = serde_json::from_str(&self.jwk)
                    .map_err(|_| "the account key's JWK is not JSON".to_string())?;
                protected["jwk"] = jwk;
            }
            Signer::Account(kid) => protected["kid"] = Value::from(*kid),
        }
        let protected = URL_SAFE_NO_PAD.encode(protected.to_string());
        let payload = match payload {
            Some(value) => URL_SAFE_NO_PAD.encode(value.to_string()),
            None => String::new(),
        };
        let signing_input = format!("{protected}.{payload}");
        let signature = self
            .pair
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .map_err(|_| "signing with the account key failed".to_string())?;
        let body = json!({
            "protected": protected,
            "payload": payload,
            "signature": URL_SAFE_NO_PAD.encode(signature.as_ref()),
        });
        Ok(body.to_string().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};

    fn decode(text: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(text).unwrap()
    }

    #[test]
    fn a_signed_request_verifies_with_the_jwk_it_carries() {
        let key = AccountKey::generate().unwrap();
        let payload = json!({ "termsOfServiceAgreed": true });
        let body = key
            .sign(
                &Signer::Key,
                "n0nce",
                "https://ca.example/new-acct",
                Some(&payload),
            )
            .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        let protected: Value =
            serde_json::from_slice(&decode(body["protected"].as_str().unwrap())).unwrap();
        assert_eq!(protected["alg"], "ES256");
        assert_eq!(protected["nonce"], "n0nce");
        assert_eq!(protected["url"], "https://ca.example/new-acct");
        assert!(protected.get("kid").is_none());
        let jwk = &protected["jwk"];
        let mut point = vec![4u8];
        point.extend(decode(jwk["x"].as_str().unwrap()));
        point.extend(decode(jwk["y"].as_str().unwrap()));
        let input = format!(
            "{}.{}",
            body["protected"].as_str().unwrap(),
            body["payload"].as_str().unwrap()
        );
        let signature = decode(body["signature"].as_str().unwrap());
        assert_eq!(signature.len(), 64);
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point)
            .verify(input.as_bytes(), &signature)
            .expect("the signature verifies");
        assert_eq!(
            decode(body["payload"].as_str().unwrap()),
            payload.to_string().as_bytes()
        );
    }

    #[test]
    fn post_as_get_has_an_empty_payload_and_names_the_account() {
        let key = AccountKey::generate().unwrap();
        let body = key
            .sign(
                &Signer::Account("https://ca.example/acct/1"),
                "n",
                "https://ca.example/o/1",
                None,
            )
            .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["payload"], "");
        let protected: Value =
            serde_json::from_slice(&decode(body["protected"].as_str().unwrap())).unwrap();
        assert_eq!(protected["kid"], "https://ca.example/acct/1");
        assert!(protected.get("jwk").is_none());
    }

    #[test]
    fn the_thumbprint_is_that_of_rfc_7638() {
        // RFC 7638 §3.1 uses an RSA key; this checks the same rule on the
        // EC members: SHA-256 over {"crv","kty","x","y"} in that order.
        let key = AccountKey::generate().unwrap();
        let digest = ring::digest::digest(&ring::digest::SHA256, key.jwk.as_bytes());
        assert_eq!(key.thumbprint(), URL_SAFE_NO_PAD.encode(digest));
        assert!(key.jwk.starts_with(r#"{"crv":"P-256","kty":"EC","x":""#));
        assert!(!key.jwk.contains(' '));
        let again = AccountKey::from_pkcs8(key.pkcs8()).unwrap();
        assert_eq!(again.thumbprint(), key.thumbprint());
        assert!(!format!("{key:?}").contains(&URL_SAFE_NO_PAD.encode(key.pkcs8())));
    }
}
