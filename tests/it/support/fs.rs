//! Throwaway directories for certificates, secret files and sockets.

use std::env;
use std::path::{Path, PathBuf};

/// A fresh directory in the system temporary directory, removed with its
/// contents on drop. Names never repeat within a process, so tests running
/// in parallel never share one.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `sts-<label>-<pid>-<n>`.
    ///
    /// # Panics
    /// If the directory cannot be created.
    pub fn new(label: &str) -> TempDir {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = env::temp_dir().join(format!("sts-{label}-{}-{n}", std::process::id()));
        // A leftover from a crashed run with a recycled pid: start clean.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        TempDir(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `<dir>/<name>` as text, for environment variables.
    pub fn file(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }

    /// Replaces `<dir>/<name>` with `contents` atomically (a sibling file
    /// renamed over it, as certbot and editors do), so a server reading it
    /// concurrently sees the old or the new contents, never half of one.
    /// Returns the path as text.
    ///
    /// # Panics
    /// If the file cannot be written.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> String {
        let target = self.0.join(name);
        let staging = self.0.join(format!(".{name}.new"));
        std::fs::write(&staging, contents)
            .and_then(|()| std::fs::rename(&staging, &target))
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", target.display()));
        target.to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
