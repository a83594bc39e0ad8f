//! Streaming decoder for `Transfer-Encoding: chunked` request bodies.
//!
//! Fed whatever bytes have arrived, it appends decoded data to the body and
//! says how much input it consumed, so the connection never needs to hold the
//! whole encoded body. It is strict (CRLF only, hex sizes without
//! whitespace), because leniency in chunk framing is where request smuggling
//! lives, and it refuses a chunk by its announced size before reading it.

use super::error::Error;

/// Longest chunk-size line (size + extensions) accepted.
const MAX_CHUNK_LINE_BYTES: usize = 1024;
/// Most bytes of trailer section accepted.
const MAX_TRAILER_BYTES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size.
    Size { digits: usize },
    /// Skipping a chunk extension (`;name=value`).
    Extension,
    /// Expecting the LF after a size line's CR.
    SizeLf,
    /// Copying chunk data; `remaining` bytes to go.
    Data { remaining: u64 },
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or of the final CRLF).
    TrailerStart,
    /// Inside a trailer line.
    Trailer,
    /// Expecting the LF ending a trailer line.
    TrailerLf,
    /// Expecting the LF of the final empty line.
    FinalLf,
    /// The body is complete.
    Done,
}

/// Decoder state for one chunked body.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: State,
    size: u64,
    limit: usize,
    line_bytes: usize,
    trailer_bytes: usize,
}

const MALFORMED: Error = Error::BadRequest("malformed chunked body");

impl ChunkedDecoder {
    /// A decoder that refuses bodies longer than `limit` decoded bytes.
    pub fn new(limit: usize) -> ChunkedDecoder {
        ChunkedDecoder {
            state: State::Size { digits: 0 },
            size: 0,
            limit,
            line_bytes: 0,
            trailer_bytes: 0,
        }
    }

    /// Whether the final chunk and trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from `input`, appending data to `body`. Returns the number of
    /// input bytes consumed: all of them unless the body ended inside
    /// `input`, in which case the rest belongs to the next request.
    pub fn feed(&mut self, input: &[u8], body: &mut Vec<u8>) -> Result<usize, Error> {
        let mut i = 0;
        while i < input.len() {
            if self.state == State::Done {
                break;
            }
            if let State::Data { remaining } = self.state {
                let available = input.len() - i;
                // `remaining` ≤ limit ≤ usize::MAX was checked when the size
                // was read, so the conversion cannot truncate.
                let take = available.min(usize::try_from(remaining).unwrap_or(usize::MAX));
                body.extend_from_slice(&input[i..i + take]);
                i += take;
                let left = remaining - take as u64;
                self.state = if left == 0 {
                    State::DataCr
                } else {
                    State::Data { remaining: left }
                };
                continue;
            }
            let byte = input[i];
            i += 1;
            self.state = self.step(byte, body.len())?;
        }
        Ok(i)
    }

    fn step(&mut self, byte: u8, body_len: usize) -> Result<State, Error> {
        Ok(match self.state {
            State::Size { digits } => {
                self.count_line_byte()?;
                match byte {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        // Hex digit value; the match arm guarantees success.
                        let value = (byte as char).to_digit(16).unwrap_or(0) as u64;
                        self.size = self.size.checked_mul(16).ok_or(self.too_large())? + value;
                        if self.size > (self.limit - body_len.min(self.limit)) as u64 {
                            return Err(self.too_large());
                        }
                        State::Size { digits: digits + 1 }
                    }
                    b';' if digits > 0 => State::Extension,
                    b'\r' if digits > 0 => State::SizeLf,
                    _ => return Err(MALFORMED),
                }
            }
            State::Extension => {
                self.count_line_byte()?;
                match byte {
                    b'\r' => State::SizeLf,
                    b'\t' | b' '..=b'~' | 0x80..=0xff => State::Extension,
                    _ => return Err(MALFORMED),
                }
            }
            State::SizeLf => {
                if byte != b'\n' {
                    return Err(MALFORMED);
                }
                self.line_bytes = 0;
                let size = std::mem::take(&mut self.size);
                if size == 0 {
                    State::TrailerStart
                } else {
                    State::Data { remaining: size }
                }
            }
            State::DataCr if byte == b'\r' => State::DataLf,
            State::DataLf if byte == b'\n' => State::Size { digits: 0 },
            State::TrailerStart if byte == b'\r' => State::FinalLf,
            State::TrailerStart | State::Trailer => {
                self.trailer_bytes += 1;
                if self.trailer_bytes > MAX_TRAILER_BYTES {
                    return Err(Error::HeadTooLarge);
                }
                match byte {
                    b'\r' => State::TrailerLf,
                    b'\n' | 0 => return Err(MALFORMED),
                    _ => State::Trailer,
                }
            }
            State::TrailerLf if byte == b'\n' => State::TrailerStart,
            State::FinalLf if byte == b'\n' => State::Done,
            State::DataCr | State::DataLf | State::TrailerLf | State::FinalLf => {
                return Err(MALFORMED);
            }
            State::Data { .. } | State::Done => unreachable!("handled in feed"),
        })
    }

    fn count_line_byte(&mut self) -> Result<(), Error> {
        self.line_bytes += 1;
        if self.line_bytes > MAX_CHUNK_LINE_BYTES {
            return Err(MALFORMED);
        }
        Ok(())
    }

    fn too_large(&self) -> Error {
        Error::BodyTooLarge { limit: self.limit }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `step` bytes.
    fn decode(input: &[u8], step: usize) -> Result<(Vec<u8>, usize, bool), Error> {
        let mut d = ChunkedDecoder::new(64);
        let mut body = Vec::new();
        let mut consumed = 0;
        for piece in input.chunks(step) {
            let n = d.feed(piece, &mut body)?;
            consumed += n;
            if d.is_done() {
                break;
            }
        }
        Ok((body, consumed, d.is_done()))
    }

    #[test]
    fn decodes_chunks_in_any_split() {
        let input = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        for step in 1..input.len() {
            let (body, consumed, done) = decode(input, step).unwrap();
            assert_eq!(body, b"hello, world", "step {step}");
            assert!(done);
            assert_eq!(&input[consumed..], b"NEXT", "step {step}");
        }
    }

    #[test]
    fn partial_body_is_not_done() {
        let (body, consumed, done) = decode(b"5\r\nhel", 100).unwrap();
        assert_eq!(body, b"hel");
        assert_eq!(consumed, 6);
        assert!(!done);
    }

    #[test]
    fn oversized_chunk_is_refused_by_its_size() {
        let mut d = ChunkedDecoder::new(64);
        let err = d.feed(b"41\r\n", &mut Vec::new()).unwrap_err();
        assert_eq!(err, Error::BodyTooLarge { limit: 64 });
        let mut d = ChunkedDecoder::new(64);
        let err = d
            .feed(b"ffffffffffffffffffffffff\r\n", &mut Vec::new())
            .unwrap_err();
        assert_eq!(err, Error::BodyTooLarge { limit: 64 });
    }

    #[test]
    fn sum_of_chunks_is_limited() {
        let input = b"20\r\n................................\r\n21\r\n";
        let err = decode(input, 100).unwrap_err();
        assert_eq!(err, Error::BodyTooLarge { limit: 64 });
    }

    #[test]
    fn malformed_framing_is_bad_request() {
        for bad in [
            &b"\r\n"[..],
            b"x\r\n",
            b"5\nhello\r\n",
            b"5\r\nhelloXX",
            b" 5\r\nhello\r\n",
            b"5 \r\nhello\r\n",
            b"-1\r\n",
            b"0\r\n\n",
        ] {
            assert_eq!(decode(bad, 100).unwrap_err(), MALFORMED, "{bad:?}");
        }
    }

    #[test]
    fn endless_extension_is_refused() {
        let mut input = b"1;".to_vec();
        input.extend(std::iter::repeat_n(b'a', 2000));
        assert_eq!(decode(&input, 100).unwrap_err(), MALFORMED);
    }
}
