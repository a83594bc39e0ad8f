//! Log priorities for journald.
//!
//! Under systemd, stderr is a stream into the journal, which stores every
//! line at priority info unless the line starts with a syslog priority
//! (`<3>` error, `<4>` warning, `<6>` info, `<7>` debug; sd-daemon(3)).
//! systemd names that stream in `JOURNAL_STREAM` (`DEVICE:INODE`, both
//! decimal); when stderr is that file, every line written here starts with
//! its priority, so `journalctl -p warning` and alerting on error priority
//! see what they should. Anywhere else — a terminal, a pipe, a file, a
//! child process that inherited `JOURNAL_STREAM` but not the stream — the
//! output stays exactly as it was.

use std::cell::Cell;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use log::{Level, Log, Metadata, Record};

/// The variable systemd sets to the device and inode of the journal stream.
pub(crate) const JOURNAL_STREAM_VAR: &str = "JOURNAL_STREAM";

/// The syslog priority prefix journald understands for `level`. Trace has
/// no syslog priority of its own and goes at debug.
pub(crate) fn priority_prefix(level: Level) -> &'static str {
    match level {
        Level::Error => "<3>",
        Level::Warn => "<4>",
        Level::Info => "<6>",
        Level::Debug | Level::Trace => "<7>",
    }
}

/// Whether `journal_stream` (the value of `JOURNAL_STREAM`) names the file
/// with device `dev` and inode `ino`.
pub(crate) fn names_file(journal_stream: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = journal_stream.trim().split_once(':') else {
        return false;
    };
    matches!((d.parse::<u64>(), i.parse::<u64>()), (Ok(d), Ok(i)) if d == dev && i == ino)
}

/// Whether this process's stderr is the journal stream systemd set up.
pub(crate) fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os(JOURNAL_STREAM_VAR) else {
        return false;
    };
    let Some(value) = value.to_str() else {
        return false;
    };
    // fstat(2) on a duplicate of fd 2, so std closes only the duplicate.
    let Ok(fd) = io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    match std::fs::File::from(fd).metadata() {
        Ok(meta) => names_file(value, meta.dev(), meta.ino()),
        Err(_) => false,
    }
}

/// Prints `text` (one or more lines) to stderr, each line with the error
/// priority when stderr is the journal: for messages written before logging
/// is set up, such as configuration errors.
pub fn eprint_error(text: &str) {
    let journal = stderr_is_journal();
    let mut out = String::with_capacity(text.len() + 16);
    for line in text.lines() {
        if journal {
            out.push_str(priority_prefix(Level::Error));
        }
        out.push_str(line);
        out.push('\n');
    }
    // One write for the whole message; stderr is unbuffered.
    let _ = io::stderr().lock().write_all(out.as_bytes());
}

thread_local! {
    /// The level of the record being written on this thread, set by
    /// [`PriorityLogger`] around the inner logger's call.
    static RECORD_LEVEL: Cell<Level> = const { Cell::new(Level::Info) };
}

/// A logger that hands each record to `inner` (which formats it into a
/// [`PrefixingStderr`]) with the record's level known to that writer.
pub(crate) struct PriorityLogger<L> {
    inner: L,
}

impl<L: Log> PriorityLogger<L> {
    /// Wraps `inner`, whose output must go to a [`PrefixingStderr`].
    pub(crate) fn new(inner: L) -> Self {
        PriorityLogger { inner }
    }
}

impl<L: Log> Log for PriorityLogger<L> {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        RECORD_LEVEL.with(|level| level.set(record.level()));
        self.inner.log(record);
        // A record that did not end in a newline is still one entry.
        self.inner.flush();
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// Stderr for a logger that writes to the journal: collects bytes into
/// lines and writes each line with the current record's priority in front,
/// in one write(2), so lines from different workers never interleave (the
/// logger holds its writer's lock for a whole record).
#[derive(Default)]
pub(crate) struct PrefixingStderr {
    line: Vec<u8>,
}

impl PrefixingStderr {
    fn emit(&mut self) -> io::Result<()> {
        if self.line.is_empty() {
            return Ok(());
        }
        let prefix = priority_prefix(RECORD_LEVEL.with(Cell::get));
        let mut out = Vec::with_capacity(prefix.len() + self.line.len() + 1);
        out.extend_from_slice(prefix.as_bytes());
        out.append(&mut self.line);
        if out.last() != Some(&b'\n') {
            out.push(b'\n');
        }
        io::stderr().lock().write_all(&out)
    }
}

impl Write for PrefixingStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            self.line.extend_from_slice(&rest[..=end]);
            self.emit()?;
            rest = &rest[end + 1..];
        }
        self.line.extend_from_slice(rest);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.emit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_follow_syslog_numbers() {
        assert_eq!(priority_prefix(Level::Error), "<3>");
        assert_eq!(priority_prefix(Level::Warn), "<4>");
        assert_eq!(priority_prefix(Level::Info), "<6>");
        assert_eq!(priority_prefix(Level::Debug), "<7>");
        assert_eq!(priority_prefix(Level::Trace), "<7>");
    }

    #[test]
    fn journal_stream_must_name_both_device_and_inode() {
        assert!(names_file("8:1234", 8, 1234));
        assert!(names_file("8:1234\n", 8, 1234));
        assert!(!names_file("8:1235", 8, 1234));
        assert!(!names_file("9:1234", 8, 1234));
        assert!(!names_file("8", 8, 1234));
        assert!(!names_file("", 8, 1234));
        assert!(!names_file("8:1234:5", 8, 1234));
        assert!(!names_file("x:1234", 8, 1234));
    }
}
