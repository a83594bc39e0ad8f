//! Reading a request body once its head is in: refused by its announced
//! length when too large (never allocated), then taken as `Content-Length`
//! bytes or decoded chunk by chunk as it arrives, across turns, and a
//! `100 Continue` when the client waits for one. Room for the body is
//! made when its first bytes arrive, not when it is announced.

use std::time::Instant;

use super::chunked::ChunkedDecoder;
use super::error::Error;
use super::head::Head;
use super::limits::MAX_BODY_BYTES;

/// First allocation for a chunked body, whose length is not announced.
const CHUNKED_BODY_START_BYTES: usize = 512;

/// A request whose head is in and whose body is not complete yet.
pub(crate) struct Pending {
    pub(crate) head: Head,
    /// Bytes of the head on the wire (what was kept of it is less).
    head_bytes: usize,
    pub(crate) body: Vec<u8>,
    /// For a chunked body; else the body is `Content-Length` bytes.
    chunked: Option<ChunkedDecoder>,
    pub(crate) started: Instant,
    continue_sent: bool,
}

impl Pending {
    /// Waits for the body `head` (`head_bytes` long) announces, or refuses
    /// it by its announced length.
    pub(crate) fn new(head: Head, head_bytes: usize, started: Instant) -> Result<Pending, Error> {
        if let Some(length) = head.content_length {
            // SECURITY: refuse by number; never allocate what was announced.
            if length > MAX_BODY_BYTES as u64 {
                return Err(Error::BodyTooLarge {
                    limit: MAX_BODY_BYTES,
                });
            }
        }
        let chunked = head.chunked.then(|| ChunkedDecoder::new(MAX_BODY_BYTES));
        Ok(Pending {
            head,
            head_bytes,
            body: Vec::new(),
            chunked,
            started,
            continue_sent: false,
        })
    }

    /// Bytes of this request the connection holds: its head as it came,
    /// and the body so far.
    pub(crate) fn held(&self) -> usize {
        self.head_bytes + self.body.len()
    }

    /// Takes what `rest` holds of the body: how many bytes were its, and
    /// whether the body is complete.
    pub(crate) fn take(&mut self, rest: &[u8]) -> Result<(usize, bool), Error> {
        if self.body.capacity() == 0 && !rest.is_empty() {
            // SECURITY: room for what was announced (at most MAX_BODY_BYTES,
            // checked in `new`), made only once the body has begun: an
            // announced body that never comes costs nothing.
            let capacity = self
                .head
                .content_length
                .map_or(CHUNKED_BODY_START_BYTES, |n| n as usize)
                .min(MAX_BODY_BYTES);
            self.body.reserve_exact(capacity);
        }
        match &mut self.chunked {
            Some(decoder) => {
                let used = decoder.feed(rest, &mut self.body)?;
                Ok((used, decoder.is_done()))
            }
            None => {
                // Checked against MAX_BODY_BYTES when the head came in.
                let length = self.head.content_length.unwrap_or(0) as usize;
                let take = (length - self.body.len()).min(rest.len());
                self.body.extend_from_slice(&rest[..take]);
                Ok((take, self.body.len() == length))
            }
        }
    }

    /// Whether to send `100 Continue` now: the client asked for it (HTTP/1.1),
    /// nothing of the body has come (`rest` was empty), and it was not sent
    /// yet. True once.
    pub(crate) fn continue_due(&mut self, rest_was_empty: bool) -> bool {
        let due = self.head.expect_continue
            && self.head.request.minor_version >= 1
            && rest_was_empty
            && self.body.is_empty()
            && !self.continue_sent;
        self.continue_sent |= due;
        due
    }
}
