//! Form / JSON field parsing of the token endpoints' bodies.
//!
//! Input layout: byte 0 picks the content type (low 3 bits) and the field
//! set (bit 3: /swap's or /refresh's); the rest is the body.
//!
//! Invariants checked besides "never panics": every returned field is one of
//! the known ones, none twice, and unsupported content types are refused
//! whatever the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spotify_token_swap::Error;
use spotify_token_swap::fields::parse_fields;

const CONTENT_TYPES: [Option<&str>; 8] = [
    Some("application/x-www-form-urlencoded"),
    Some("application/json"),
    None,
    Some("application/json; charset=utf-8"),
    Some("Application/X-WWW-Form-Urlencoded ; charset=UTF-8"),
    Some("text/plain"),
    Some(""),
    Some("multipart/form-data; boundary=x"),
];
const SWAP: &[&str] = &["code", "redirect_uri", "code_verifier"];
const REFRESH: &[&str] = &["refresh_token"];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[usize::from(selector & 7)];
    let known = if selector & 8 == 0 { SWAP } else { REFRESH };
    match parse_fields(content_type, body, known) {
        Ok(pairs) => {
            for (i, (name, _)) in pairs.iter().enumerate() {
                assert!(known.contains(name), "unknown field {name}");
                assert!(
                    pairs[..i].iter().all(|(n, _)| n != name),
                    "{name} returned twice"
                );
            }
            assert!(pairs.len() <= known.len());
            assert!(selector & 7 < 5, "{content_type:?} accepted");
        }
        Err(e) => {
            if selector & 7 >= 5 {
                assert_eq!(e, Error::UnsupportedMediaType);
            }
        }
    }
});
