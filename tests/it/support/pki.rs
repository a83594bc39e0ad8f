//! Throwaway certificates for the TLS tests, made by the `openssl` command
//! line in a temporary directory: a CA, a server certificate for IP
//! 127.0.0.1 signed by it, and on demand more CAs, certificates, expired
//! certificates and stray keys.

use std::process::{Command, Stdio};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, SupportedProtocolVersion};

use super::TempDir;

/// The `openssl` configuration the certificates are made with: no prompts,
/// CA and server extensions that rustls/webpki accept, and a minimal
/// `openssl ca` setup, which is the one way OpenSSL 3.0 can set arbitrary
/// validity dates (for the expired certificate).
const OPENSSL_CNF: &str = "\
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = placeholder
[ v3_ca ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[ v3_server ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ ca ]
default_ca = testca
[ testca ]
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = any
copy_extensions = none
unique_subject = no
[ any ]
commonName = supplied
";

/// A directory of certificates: `ca.pem`/`ca.key` (the first CA) and
/// `server.pem`/`server.key` (a certificate for 127.0.0.1 signed by it).
/// More are made on demand.
pub struct Pki {
    /// The directory; tests write extra files into it.
    pub dir: TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        let pki = Pki {
            dir: TempDir::new("pki"),
        };
        pki.dir.write("openssl.cnf", OPENSSL_CNF);
        pki.dir.write("index.txt", "");
        pki.dir.write("serial", "1000\n");
        pki.make_ca("ca");
        pki.make_server_cert("ca", "server");
        pki
    }

    /// `<dir>/<name>` as text.
    pub fn path(&self, name: &str) -> String {
        self.dir.file(name)
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.path().join(name))
            .unwrap_or_else(|e| panic!("cannot read {name}: {e}"))
    }

    /// Runs `openssl` in the directory with `command` split at whitespace
    /// (every argument here is a word: file names are relative).
    fn openssl(&self, command: &str) {
        let args: Vec<&str> = command.split_whitespace().collect();
        let out = Command::new("openssl")
            .args(&args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run openssl (is it installed?): {e}"));
        assert!(
            out.status.success(),
            "openssl {command} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A new P-256 key in `<name>.key` and a request for it in `<name>.csr`.
    pub fn make_key_and_request(&self, name: &str, cn: &str) {
        self.openssl(&format!(
            "req -new -config openssl.cnf -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
             -keyout {name}.key -out {name}.csr -subj /CN={cn}"
        ));
    }

    /// A self-signed CA: `<name>.pem`, `<name>.key`.
    pub fn make_ca(&self, name: &str) {
        self.openssl(&format!(
            "req -x509 -config openssl.cnf -extensions v3_ca -newkey ec \
             -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {name}.key -out {name}.pem \
             -days 3 -subj /CN=sts-test-{name}"
        ));
    }

    /// A certificate for IP 127.0.0.1 signed by CA `ca`, valid from now
    /// for 3 days: `<name>.pem`, `<name>.key`.
    pub fn make_server_cert(&self, ca: &str, name: &str) {
        self.make_key_and_request(name, "127.0.0.1");
        self.openssl(&format!(
            "x509 -req -in {name}.csr -CA {ca}.pem -CAkey {ca}.key -CAcreateserial -days 3 \
             -extfile openssl.cnf -extensions v3_server -out {name}.pem"
        ));
    }

    /// Like [`Pki::make_server_cert`], but valid only on 1 January 2020
    /// (`openssl ca` is the OpenSSL 3.0 way to set both dates).
    pub fn make_expired_cert(&self, ca: &str, name: &str) {
        self.make_key_and_request(name, "127.0.0.1");
        self.openssl(&format!(
            "ca -batch -config openssl.cnf -cert {ca}.pem -keyfile {ca}.key -in {name}.csr \
             -out {name}.pem -startdate 20200101000000Z -enddate 20200102000000Z \
             -extfile openssl.cnf -extensions v3_server"
        ));
    }

    /// The first certificate of `<name>`, as DER.
    pub fn der(&self, name: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(&self.read(name))
            .unwrap_or_else(|e| panic!("{name} holds no certificate: {e:?}"))
    }

    /// Every certificate in `<name>`, as DER: a chain to serve.
    pub fn chain(&self, name: &str) -> Vec<CertificateDer<'static>> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&self.read(name))
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{name} is not a PEM certificate chain: {e:?}"));
        assert!(!chain.is_empty(), "{name} holds no certificate");
        chain
    }

    /// The private key in `<name>`.
    pub fn key(&self, name: &str) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(&self.read(name))
            .unwrap_or_else(|e| panic!("{name} holds no private key: {e:?}"))
    }

    /// A rustls (ring) server configuration serving `<cert>.pem` with
    /// `<cert>.key`, offering only `versions` (`rustls::ALL_VERSIONS`: TLS
    /// 1.2 and 1.3), with rustls's defaults otherwise: an in-memory cache of
    /// 256 sessions (TLS 1.2 session ids, TLS 1.3 stateful tickets) and two
    /// TLS 1.3 tickets per connection.
    ///
    /// # Panics
    /// If the certificate and key are not a usable pair.
    pub fn server_config(
        &self,
        cert: &str,
        versions: &[&'static SupportedProtocolVersion],
    ) -> Arc<ServerConfig> {
        let config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(versions)
                .expect("ring supports TLS 1.2 and 1.3")
                .with_no_client_auth()
                .with_single_cert(
                    self.chain(&format!("{cert}.pem")),
                    self.key(&format!("{cert}.key")),
                )
                .unwrap_or_else(|e| panic!("{cert}.pem and {cert}.key are not a usable pair: {e}"));
        Arc::new(config)
    }
}
