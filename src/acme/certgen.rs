//! What `rcgen` makes for an order: the certificate's new key and its CSR
//! (RFC 8555 §7.4, PKCS#10), and the self-signed `tls-alpn-01` certificate
//! that proves control of a name (RFC 8737 §3). Every key is ECDSA P-256,
//! made by `ring` (rcgen's `ring` backend).

use rcgen::{
    CertificateParams, CustomExtension, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256,
};
use rustls::crypto::ring::sign::any_ecdsa_type;
use rustls::pki_types::PrivateKeyDer;
use rustls::sign::CertifiedKey;

/// A fresh key for a certificate and the CSR naming `domains` with it.
pub(crate) struct Request {
    /// The CSR, DER.
    pub(crate) csr: Vec<u8>,
    /// The key, PKCS#8 DER. SECURITY: never logged; stored 0600.
    pub(crate) key_pkcs8: Vec<u8>,
}

/// A new key and its CSR for `domains` (subjectAltName; no subject: CAs
/// take the names from the extension).
pub(crate) fn request(domains: &[String]) -> Result<Request, String> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|e| format!("cannot make a certificate key: {e}"))?;
    let mut params = CertificateParams::new(domains.to_vec())
        .map_err(|e| format!("cannot make a CSR for {}: {e}", domains.join(",")))?;
    params.distinguished_name = DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .map_err(|e| format!("cannot make a CSR for {}: {e}", domains.join(",")))?;
    Ok(Request {
        csr: csr.der().to_vec(),
        key_pkcs8: key.serialize_der(),
    })
}

/// The `tls-alpn-01` certificate for `domain`: self-signed, the name as
/// its only subjectAltName, and the critical acmeIdentifier extension
/// holding the SHA-256 of the key authorization.
pub(crate) fn challenge_certificate(
    domain: &str,
    key_authorization: &str,
) -> Result<CertifiedKey, String> {
    let digest = ring::digest::digest(&ring::digest::SHA256, key_authorization.as_bytes());
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|e| format!("cannot make a challenge key: {e}"))?;
    let mut params = CertificateParams::new(vec![domain.to_string()])
        .map_err(|e| format!("cannot make the challenge certificate for {domain}: {e}"))?;
    params.distinguished_name = DistinguishedName::new();
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(digest.as_ref())];
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("cannot make the challenge certificate for {domain}: {e}"))?;
    // Not `tls::certified_key`: its check that key and certificate match
    // parses the certificate with webpki, which refuses the critical
    // acmeIdentifier extension. The key was made for it just above.
    let der = PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let signer = any_ecdsa_type(&der)
        .map_err(|e| format!("the challenge key for {domain} is not usable ({e})"))?;
    Ok(CertifiedKey::new(vec![cert.der().clone()], signer))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// id-pe-acmeIdentifier, 1.3.6.1.5.5.7.1.31, as DER content.
    const ACME_IDENTIFIER_OID: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x1f];

    fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
        haystack.windows(needle.len()).position(|w| w == needle)
    }

    #[test]
    fn the_challenge_certificate_names_the_domain_and_carries_the_digest() {
        let key = challenge_certificate("pi.example.org", "token.thumbprint").unwrap();
        let der = key.cert[0].as_ref();
        let facts = super::super::x509::facts(der).unwrap();
        assert_eq!(facts.dns_names, ["pi.example.org"]);
        let at = find(der, ACME_IDENTIFIER_OID).expect("the acmeIdentifier extension");
        // OID, critical TRUE, OCTET STRING { OCTET STRING (32) digest }.
        let digest = ring::digest::digest(&ring::digest::SHA256, b"token.thumbprint");
        let rest = &der[at + ACME_IDENTIFIER_OID.len()..];
        assert_eq!(&rest[..3], &[0x01, 0x01, 0xff], "critical");
        assert_eq!(&rest[3..7], &[0x04, 34, 0x04, 32]);
        assert_eq!(&rest[7..39], digest.as_ref());
    }

    #[test]
    fn a_request_is_a_csr_for_the_names_with_a_p256_key() {
        let names = vec!["a.example".to_string(), "b.example".to_string()];
        let request = request(&names).unwrap();
        assert!(find(&request.csr, b"a.example").is_some());
        assert!(find(&request.csr, b"b.example").is_some());
        let rng = ring::rand::SystemRandom::new();
        ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &request.key_pkcs8,
            &rng,
        )
        .expect("a P-256 key");
    }
}
