//! A worker's reusable buffers: the read buffer a turn works in, and the
//! write buffer answers are serialised into. During a turn the read buffer
//! is a [`Window`]: the bytes received and not parsed yet, with room made
//! behind them for the next read.

/// Size of a worker's read buffer: one full head plus room for what a
/// pipelining client sends behind it.
const READ_BUFFER_BYTES: usize = 16 * 1024;
/// What the write buffer starts with.
const WRITE_BUFFER_BYTES: usize = 1024;

/// A worker's reusable buffers, allocated when it serves its first
/// connection.
#[derive(Default)]
pub(crate) struct Buffers {
    read: Box<[u8]>,
    /// Where answers are serialised.
    pub(crate) write: Vec<u8>,
}

impl Buffers {
    /// Allocates the buffers, the first time.
    fn allocate(&mut self) {
        if self.read.is_empty() {
            self.read = vec![0; READ_BUFFER_BYTES].into_boxed_slice();
            self.write.reserve(WRITE_BUFFER_BYTES);
        }
    }

    /// The read buffer as a window that holds `carried` (a connection's
    /// unparsed bytes from its last turn), and the write buffer.
    pub(crate) fn window(&mut self, carried: &[u8]) -> (Window<'_>, &mut Vec<u8>) {
        self.allocate();
        let end = carried.len();
        self.read[..end].copy_from_slice(carried);
        let window = Window {
            buf: &mut self.read,
            start: 0,
            end,
        };
        (window, &mut self.write)
    }
}

/// The read buffer during one turn: `start..end` holds bytes received and
/// not parsed yet.
pub(crate) struct Window<'b> {
    buf: &'b mut [u8],
    start: usize,
    end: usize,
}

impl Window<'_> {
    /// The bytes received and not parsed yet.
    pub(crate) fn unparsed(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// The first `n` unparsed bytes are used.
    pub(crate) fn consume(&mut self, n: usize) {
        self.start += n;
    }

    /// Every unparsed byte is used (or dropped).
    pub(crate) fn consume_all(&mut self) {
        self.start = self.end;
    }

    /// Makes room for the next read: an empty window starts over at the
    /// front, and the start of a request that reaches the end moves there.
    pub(crate) fn make_room(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// Where the next read goes.
    pub(crate) fn space(&mut self) -> &mut [u8] {
        &mut self.buf[self.end..]
    }

    /// `n` bytes were read into [`Window::space`].
    pub(crate) fn filled(&mut self, n: usize) {
        self.end += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn make_room_starts_over_or_moves_a_request_to_the_front() {
        let mut buf = *b"abcdefgh";
        let mut window = Window {
            buf: &mut buf,
            start: 3,
            end: 3,
        };
        window.make_room();
        assert_eq!((window.start, window.end), (0, 0));
        window.filled(5);
        window.consume(2);
        window.make_room();
        assert_eq!(window.unparsed(), b"cde");
        window.filled(3);
        window.make_room();
        assert_eq!((window.start, window.end), (0, 6));
        assert_eq!(window.unparsed(), b"cdefgh");
        assert_eq!(window.space().len(), 2);
    }

    #[test]
    fn a_window_starts_with_the_carried_bytes() {
        let mut buffers = Buffers::default();
        let (window, _) = buffers.window(b"GET / HT");
        assert_eq!(window.unparsed(), b"GET / HT");
        assert_eq!(window.buf.len(), READ_BUFFER_BYTES);
    }
}
