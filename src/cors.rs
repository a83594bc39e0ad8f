//! CORS headers for browser apps that call the token endpoints directly
//! (`CORS_ALLOW_ORIGINS`): an allowed `Origin` is echoed with
//! `Vary: Origin`, and a preflight (`OPTIONS`) also gets the methods,
//! headers and how long to cache the answer. A disallowed origin gets no
//! CORS header at all.

use crate::config::Cors;
use crate::http::{Request, Response};

/// `Access-Control-Max-Age` for preflight answers, in seconds.
const CORS_MAX_AGE_SECS: u32 = 600;

/// Adds the CORS headers `cors` allows for `request` to `response`.
pub(crate) fn decorate(cors: &Cors, request: &Request, mut response: Response) -> Response {
    let Some(origin) = request.origin.as_deref() else {
        return response;
    };
    if !cors.allows(origin) {
        return response;
    }
    response
        .headers
        .push(("Access-Control-Allow-Origin", origin.to_string()));
    response.headers.push(("Vary", "Origin".to_string()));
    if request.method == "OPTIONS" {
        response
            .headers
            .push(("Access-Control-Allow-Methods", "POST".to_string()));
        response
            .headers
            .push(("Access-Control-Allow-Headers", "Content-Type".to_string()));
        response
            .headers
            .push(("Access-Control-Max-Age", CORS_MAX_AGE_SECS.to_string()));
    }
    response
}
