//! The chunked body decoder, fed in pieces split at fuzzer-chosen points.
//!
//! Input layout (see fuzz/corpus/chunked/ for examples):
//! - bytes 0–1: the decoder's limit, u16 little-endian;
//! - byte 2: `k`, the number of split points (taken mod 16);
//! - next `k` bytes: gaps between split points (piece lengths; a piece may
//!   be empty, and a split past the end is ignored);
//! - the rest: the encoded body.
//!
//! Invariants checked besides "never panics":
//! - the decoded body never exceeds the limit;
//! - consumed ≤ input, and all input is consumed unless the body is done;
//! - one piece or many: the same body, consumed count and done state; an
//!   error in one is an error in the other;
//! - when done, the consumed prefix alone decodes to the same body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spotify_token_swap::http::ChunkedDecoder;

/// Body, input bytes consumed, done — or an error.
type Outcome = Result<(Vec<u8>, usize, bool), ()>;

fn decode(input: &[u8], limit: usize, cuts: &[usize]) -> Outcome {
    let mut decoder = ChunkedDecoder::new(limit);
    let mut body = Vec::new();
    let mut consumed = 0;
    let mut start = 0;
    for end in cuts.iter().copied().chain([input.len()]) {
        let piece = &input[start..end];
        start = end;
        let result = decoder.feed(piece, &mut body);
        assert!(
            body.len() <= limit,
            "decoded {} bytes past the limit {limit}",
            body.len()
        );
        let used = result.map_err(|_| ())?;
        assert!(used <= piece.len(), "consumed {used} of {}", piece.len());
        consumed += used;
        if decoder.is_done() {
            break;
        }
        assert_eq!(used, piece.len(), "stopped early without being done");
    }
    Ok((body, consumed, decoder.is_done()))
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let limit = usize::from(u16::from_le_bytes([data[0], data[1]]));
    let k = usize::from(data[2] % 16);
    let Some(gaps) = data.get(3..3 + k) else {
        return;
    };
    let input = &data[3 + k..];
    let mut cuts = Vec::with_capacity(k);
    let mut at = 0;
    for &gap in gaps {
        at += usize::from(gap);
        if at > input.len() {
            break;
        }
        cuts.push(at);
    }

    let whole = decode(input, limit, &[]);
    let pieces = decode(input, limit, &cuts);
    let bytewise = decode(input, limit, &(1..input.len()).collect::<Vec<_>>());
    assert_eq!(whole, pieces, "split at {cuts:?}");
    assert_eq!(whole, bytewise, "fed byte by byte");
    if let Ok((body, consumed, true)) = whole {
        assert!(consumed <= input.len());
        assert_eq!(
            decode(&input[..consumed], limit, &[]),
            Ok((body, consumed, true)),
            "the consumed prefix alone decodes differently"
        );
    }
});
