//! How the app plugs into the layer: the [`Handler`] trait it implements,
//! and the [`Record`] of each answered request it is told about.

use super::request::Request;
use super::response::Response;

/// One answered request, for metrics (the HTTP layer logs it itself).
#[derive(Debug)]
pub struct Record<'a> {
    /// The request's path (`-` when the HTTP layer could not read one).
    pub path: &'a str,
    pub(crate) status: u16,
    /// The note the handler put on its answer (`Response::note`); `None`
    /// for the layer's own answers.
    pub(crate) note: Option<u32>,
}

/// What the HTTP layer calls for each request.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request. Must not block longer than the upstream timeout.
    fn handle(&self, request: &Request) -> Response;

    /// Whether answering `request` (complete: client address and body
    /// included) may take long — for this app, a call to Spotify. The
    /// layer answers at most `worker_threads` less a small reserve such
    /// requests at once, one per worker's turn, so the reserve is always
    /// free for the others; one that finds no room waits, its request
    /// held, for the next slot. Called once per request, before
    /// [`Handler::handle`]; must be quick.
    fn is_slow(&self, _request: &Request) -> bool {
        false
    }

    /// Called once for every answered request, including those the HTTP
    /// layer rejected itself (then `path` may be `-`).
    fn record(&self, _record: &Record<'_>) {}

    /// Adds to an answer the HTTP layer made itself (a 400, 408, 411, 413,
    /// 431 …) what answers on this path carry, e.g. CORS headers.
    /// `request` holds the method, path and `Origin` as far as they could
    /// be read, and no body.
    fn decorate_error(&self, _request: &Request, response: Response) -> Response {
        response
    }
}
