//! The state directory (`ACME_STATE_DIR`): the account key, the account's
//! URL and the certificate with its key, per CA.
//!
//! ```text
//! ACME_STATE_DIR/                          0700
//!   acme-v02.api.letsencrypt.org-directory/  0700, one folder per directory URL
//!     account.pem                          0600  the account key (PKCS#8)
//!     account-url                          0600  the account's URL at that CA
//!     certificate.pem                      0600  the chain, then its key (PKCS#8)
//! ```
//!
//! A folder per directory URL, so switching between a CA's staging and
//! production directories never presents one's account to the other, and
//! switching back finds the old account. Every file is written whole to a
//! temporary name and renamed over the old one, so a crash or power cut
//! mid-write (a Pi's SD card) leaves the old file or the new, never half;
//! the certificate and its key are one file for the same reason.
//! SECURITY: keys are private; the folders are 0700 and every file is
//! created 0600, whatever the umask.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};

/// Mode of the folders: the owner only.
const DIR_MODE: u32 = 0o700;
/// Mode of the files: the owner only.
const FILE_MODE: u32 = 0o600;
/// Characters of base64 per PEM line (RFC 7468).
const PEM_LINE_CHARS: usize = 64;
const ACCOUNT_KEY: &str = "account.pem";
const ACCOUNT_URL: &str = "account-url";
const CERTIFICATE: &str = "certificate.pem";

/// A stored chain (end entity first) and its key (PKCS#8 DER).
pub(crate) type StoredCertificate = (Vec<CertificateDer<'static>>, Vec<u8>);

/// One CA's folder in the state directory.
#[derive(Debug, Clone)]
pub(crate) struct Storage {
    dir: PathBuf,
}

impl Storage {
    /// Creates (or tightens to 0700) the state directory and the folder of
    /// `directory_url` in it.
    pub(crate) fn open(state_dir: &Path, directory_url: &str) -> Result<Storage, String> {
        let dir = folder(state_dir, directory_url);
        for path in [state_dir, dir.as_path()] {
            private_dir(path)
                .map_err(|e| format!("ACME_STATE_DIR: cannot use '{}': {e}", path.display()))?;
        }
        Ok(Storage { dir })
    }

    /// Where the certificate is kept.
    pub(crate) fn certificate_path(&self) -> PathBuf {
        self.dir.join(CERTIFICATE)
    }

    /// The account key (PKCS#8 DER), if one is stored.
    pub(crate) fn account_key(&self) -> Result<Option<Vec<u8>>, String> {
        let Some(pem) = self.read(ACCOUNT_KEY)? else {
            return Ok(None);
        };
        PrivatePkcs8KeyDer::from_pem_slice(&pem)
            .map(|key| Some(key.secret_pkcs8_der().to_vec()))
            .map_err(|_| format!("'{}' holds no PKCS#8 key", self.path(ACCOUNT_KEY).display()))
    }

    pub(crate) fn save_account_key(&self, pkcs8: &[u8]) -> Result<(), String> {
        self.write(ACCOUNT_KEY, &pem("PRIVATE KEY", pkcs8))
    }

    /// The account's URL at this CA, if known.
    pub(crate) fn account_url(&self) -> Result<Option<String>, String> {
        Ok(self
            .read(ACCOUNT_URL)?
            .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_string())
            .filter(|url| !url.is_empty()))
    }

    pub(crate) fn save_account_url(&self, url: &str) -> Result<(), String> {
        self.write(ACCOUNT_URL, format!("{url}\n").as_bytes())
    }

    /// Forgets the account's URL (the CA no longer knows it).
    pub(crate) fn forget_account_url(&self) -> Result<(), String> {
        match fs::remove_file(self.path(ACCOUNT_URL)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(format!(
                "cannot remove '{}': {e}",
                self.path(ACCOUNT_URL).display()
            )),
            _ => Ok(()),
        }
    }

    /// The stored certificate chain and its key (PKCS#8 DER), if any.
    pub(crate) fn certificate(&self) -> Result<Option<StoredCertificate>, String> {
        let Some(pem) = self.read(CERTIFICATE)? else {
            return Ok(None);
        };
        let unusable = || {
            format!(
                "'{}' is not a certificate and key",
                self.certificate_path().display()
            )
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .map_err(|_| unusable())?;
        let key = PrivatePkcs8KeyDer::from_pem_slice(&pem).map_err(|_| unusable())?;
        if chain.is_empty() {
            return Err(unusable());
        }
        Ok(Some((chain, key.secret_pkcs8_der().to_vec())))
    }

    /// Stores a chain (PEM, as the CA sent it) and its key.
    pub(crate) fn save_certificate(&self, chain_pem: &str, key_pkcs8: &[u8]) -> Result<(), String> {
        let mut contents = chain_pem.trim_end().as_bytes().to_vec();
        contents.push(b'\n');
        contents.extend_from_slice(&pem("PRIVATE KEY", key_pkcs8));
        self.write(CERTIFICATE, &contents)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn read(&self, name: &str) -> Result<Option<Vec<u8>>, String> {
        match fs::read(self.path(name)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read '{}': {e}", self.path(name).display())),
        }
    }

    /// Writes `name` whole: a temporary file (0600), flushed to disk, then
    /// renamed over the old one, and the folder flushed too.
    fn write(&self, name: &str, contents: &[u8]) -> Result<(), String> {
        let target = self.path(name);
        let staging = self.path(&format!(".{name}.new"));
        let written = (|| {
            let _ = fs::remove_file(&staging);
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(FILE_MODE)
                .open(&staging)?;
            file.write_all(contents)?;
            file.sync_all()?;
            fs::rename(&staging, &target)?;
            File::open(&self.dir)?.sync_all()
        })();
        written.map_err(|e| format!("cannot write '{}': {e}", target.display()))
    }
}

/// The folder of `directory_url`: its host, port and path with every
/// character but letters, digits, `.` and `-` as `_` (`/` as `-`).
fn folder(state_dir: &Path, directory_url: &str) -> PathBuf {
    let bare = directory_url
        .strip_prefix("https://")
        .unwrap_or(directory_url)
        .trim_end_matches('/');
    let name: String = bare
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' => c,
            '/' => '-',
            _ => '_',
        })
        .collect();
    // Never `.` or `..`.
    state_dir.join(name.trim_start_matches('.'))
}

/// Where the certificate for `directory_url` is kept, for the health
/// check (which pins it) without creating anything.
pub(crate) fn certificate_file(state_dir: &Path, directory_url: &str) -> PathBuf {
    folder(state_dir, directory_url).join(CERTIFICATE)
}

/// Creates `path` 0700 (with its parents), or makes an existing one 0700.
fn private_dir(path: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)?;
    let mode = fs::metadata(path)?.permissions().mode() & 0o777;
    if mode != DIR_MODE {
        fs::set_permissions(path, Permissions::from_mode(DIR_MODE))?;
    }
    Ok(())
}

/// DER as PEM with `label`.
pub(crate) fn pem(label: &str, der: &[u8]) -> Vec<u8> {
    let text = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in text.as_bytes().chunks(PEM_LINE_CHARS) {
        // Base64 is ASCII.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sts-acme-{label}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn folders_are_0700_and_files_0600_whatever_was_there() {
        let state = temp_dir("modes");
        fs::create_dir_all(&state).unwrap();
        fs::set_permissions(&state, Permissions::from_mode(0o755)).unwrap();
        let storage = Storage::open(&state, "https://ca.example/dir").unwrap();
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&storage.dir), 0o700);
        storage.save_account_key(b"key bytes").unwrap();
        storage
            .save_account_url("https://ca.example/acct/7")
            .unwrap();
        storage
            .save_certificate(
                "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
                b"k",
            )
            .unwrap();
        for name in [ACCOUNT_KEY, ACCOUNT_URL, CERTIFICATE] {
            assert_eq!(mode(&storage.path(name)), 0o600, "{name}");
        }
        assert_eq!(storage.account_key().unwrap().unwrap(), b"key bytes");
        assert_eq!(
            storage.account_url().unwrap().as_deref(),
            Some("https://ca.example/acct/7")
        );
        let (chain, key) = storage.certificate().unwrap().unwrap();
        assert_eq!((chain.len(), key.as_slice()), (1, &b"k"[..]));
        storage.forget_account_url().unwrap();
        assert_eq!(storage.account_url().unwrap(), None);
        let names: Vec<_> = fs::read_dir(&storage.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "no temporary file left: {names:?}");
        fs::remove_dir_all(&state).unwrap();
    }

    #[test]
    fn each_directory_url_has_its_folder() {
        let state = Path::new("/state");
        assert_eq!(
            folder(state, "https://acme-v02.api.letsencrypt.org/directory"),
            state.join("acme-v02.api.letsencrypt.org-directory")
        );
        assert_eq!(
            folder(state, "https://127.0.0.1:14000/dir"),
            state.join("127.0.0.1_14000-dir")
        );
        assert_eq!(folder(state, "https://../x"), state.join("-x"));
    }

    #[test]
    fn nothing_stored_is_none() {
        let state = temp_dir("empty");
        let storage = Storage::open(&state, "https://ca.example/dir").unwrap();
        assert_eq!(storage.account_key().unwrap(), None);
        assert_eq!(storage.account_url().unwrap(), None);
        assert!(storage.certificate().unwrap().is_none());
        storage.forget_account_url().unwrap();
        fs::remove_dir_all(&state).unwrap();
    }
}
