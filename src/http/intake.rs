//! How much ciphertext a TLS peer may have rustls hold, and the reader
//! that holds it to that.
//!
//! rustls buffers what it cannot use yet: handshake messages joined from
//! fragments up to 64 KiB, and a record until its last byte arrives (up to
//! 18 KiB). Left alone, a peer that sends most of a 64 KiB ClientHello
//! and stops costs 72 kB of memory for the 10 s of the handshake deadline,
//! and one that stops inside a 16 KiB record while a request of 16 KiB
//! waits for its last byte costs 45 kB. So the bytes go to rustls through
//! [`Metered`], which counts them and lets through at most what
//! [`Intake::allowance`] says:
//!
//! - before the handshake is over, at most [`MAX_HANDSHAKE_BYTES`] in all
//!   (real ClientHellos are under 2 KiB, post-quantum key shares
//!   included); a peer that needs more is refused;
//! - after it, what rustls holds of a record not complete yet, together
//!   with what the connection holds of requests not complete yet, at most
//!   [`MAX_TLS_HELD_BYTES`]; a peer that sends more than that ahead of the
//!   server's answers is refused.
//!
//! To know what rustls holds of a record, [`Intake`] follows the records'
//! 5-byte headers in the bytes as they pass. It also hands rustls one
//! record at a time (its header, then the rest of it): rustls keeps its
//! buffer at the size of the largest record it has held for as long as
//! part of another waits in it, so the end of a 16 KiB record and the
//! first byte of the next, read together, would keep 16 KiB more for the
//! whole wait.

use std::io::{self, Read};

use super::limits::{MAX_HANDSHAKE_BYTES, MAX_TLS_HELD_BYTES};

/// Bytes of a TLS record header: type, version, length.
const RECORD_HEADER_BYTES: usize = 5;

/// What a TLS peer has sent so far, as far as the caps need to know.
#[derive(Debug, Default)]
pub(crate) struct Intake {
    /// Bytes taken in while the handshake was under way.
    handshake_bytes: usize,
    /// The header of the current record, as far as it has arrived.
    header: [u8; RECORD_HEADER_BYTES],
    header_len: usize,
    /// Bytes of the current record's payload still to come.
    payload_left: usize,
    /// Bytes of the current record that have arrived (header included);
    /// 0 between records.
    in_record: usize,
}

impl Intake {
    /// How many more bytes rustls may take now: `handshaking` whether the
    /// handshake is still under way, `held` the bytes the connection
    /// keeps of requests not complete yet. 0: the peer is over its cap.
    pub(crate) fn allowance(&self, handshaking: bool, held: usize) -> usize {
        if handshaking {
            MAX_HANDSHAKE_BYTES.saturating_sub(self.handshake_bytes)
        } else {
            MAX_TLS_HELD_BYTES.saturating_sub(held + self.in_record)
        }
    }

    /// Bytes from here to the end of the current record's header, or of
    /// its payload once the header is in.
    fn to_record_end(&self) -> usize {
        if self.header_len < RECORD_HEADER_BYTES {
            RECORD_HEADER_BYTES - self.header_len
        } else {
            self.payload_left
        }
    }

    /// Takes note of `bytes`, which rustls takes in.
    fn note(&mut self, mut bytes: &[u8], handshaking: bool) {
        if handshaking {
            self.handshake_bytes += bytes.len();
        }
        while !bytes.is_empty() {
            let taken = if self.header_len < RECORD_HEADER_BYTES {
                let n = (RECORD_HEADER_BYTES - self.header_len).min(bytes.len());
                self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
                self.header_len += n;
                if self.header_len == RECORD_HEADER_BYTES {
                    self.payload_left =
                        usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
                }
                n
            } else {
                let n = self.payload_left.min(bytes.len());
                self.payload_left -= n;
                n
            };
            self.in_record += taken;
            bytes = &bytes[taken..];
            if self.header_len == RECORD_HEADER_BYTES && self.payload_left == 0 {
                // The record is complete: rustls can decrypt it.
                self.header_len = 0;
                self.in_record = 0;
            }
        }
    }
}

/// A reader that hands rustls at most `allowance` bytes of `inner`, never
/// past the end of a record's header or payload, and tells `intake` about
/// each one.
pub(crate) struct Metered<'a, R> {
    pub(crate) inner: &'a mut R,
    pub(crate) intake: &'a mut Intake,
    pub(crate) allowance: usize,
    pub(crate) handshaking: bool,
}

impl<R: Read> Read for Metered<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let len = buf
            .len()
            .min(self.allowance)
            .min(self.intake.to_record_end());
        if len == 0 && !buf.is_empty() {
            // Never an end of stream: rustls would take it for the peer's.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.inner.read(&mut buf[..len])?;
        self.allowance -= n;
        self.intake.note(&buf[..n], self.handshaking);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(len: usize) -> Vec<u8> {
        let mut bytes = vec![0x17, 0x03, 0x03];
        bytes.extend_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
        bytes.resize(RECORD_HEADER_BYTES + len, 0xab);
        bytes
    }

    #[test]
    fn an_incomplete_record_counts_until_its_last_byte() {
        let mut intake = Intake::default();
        let two = [record(100), record(3000)].concat();
        intake.note(&two[..105], false);
        assert_eq!(intake.in_record, 0, "the first record is complete");
        intake.note(&two[105..107], false);
        assert_eq!(intake.in_record, 2, "part of a header");
        intake.note(&two[107..2000], false);
        assert_eq!(intake.in_record, 2000 - 105);
        assert_eq!(
            intake.allowance(false, 1000),
            MAX_TLS_HELD_BYTES - 1000 - 1895
        );
        intake.note(&two[2000..], false);
        assert_eq!(intake.in_record, 0);
        assert_eq!(intake.allowance(false, 0), MAX_TLS_HELD_BYTES);
    }

    #[test]
    fn the_handshake_may_take_sixteen_kib_in_all() {
        let mut intake = Intake::default();
        let hello = record(MAX_HANDSHAKE_BYTES);
        intake.note(&hello[..10_000], true);
        assert_eq!(intake.allowance(true, 0), MAX_HANDSHAKE_BYTES - 10_000);
        intake.note(&hello[10_000..MAX_HANDSHAKE_BYTES], true);
        assert_eq!(intake.allowance(true, 0), 0);
        // Once the handshake is over, only what is held counts.
        assert_eq!(
            intake.allowance(false, 0),
            MAX_TLS_HELD_BYTES - MAX_HANDSHAKE_BYTES
        );
    }

    #[test]
    fn a_metered_read_stops_at_the_allowance_and_never_reports_an_end() {
        let bytes = record(100);
        let mut source: &[u8] = &bytes;
        let mut intake = Intake::default();
        let mut metered = Metered {
            inner: &mut source,
            intake: &mut intake,
            allowance: 30,
            handshaking: true,
        };
        let mut buf = [0u8; 4096];
        assert_eq!(metered.read(&mut buf).unwrap(), 5, "the header alone");
        assert_eq!(metered.read(&mut buf).unwrap(), 25);
        let err = metered.read(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(intake.handshake_bytes, 30);
        assert_eq!(intake.in_record, 30);
    }

    #[test]
    fn a_metered_read_ends_with_its_record() {
        let two = [record(100), record(50)].concat();
        let mut source: &[u8] = &two;
        let mut intake = Intake::default();
        let mut metered = Metered {
            inner: &mut source,
            intake: &mut intake,
            allowance: usize::MAX,
            handshaking: false,
        };
        let mut buf = [0u8; 4096];
        let reads: Vec<usize> = (0..4).map(|_| metered.read(&mut buf).unwrap()).collect();
        assert_eq!(reads, [5, 100, 5, 50]);
        assert_eq!(intake.in_record, 0);
    }
}
