//! One request answered: who the client is (for a trusted proxy, the
//! address it names in `X-Forwarded-For`), the handler's answer — a panic
//! in the handler is answered 500 —, the answer's bytes handed to the
//! transport, then the access-log line and the handler's record. In that
//! order: the client has its answer even if recording it panics. The
//! layer's own answers, to a request it could not read or that came too
//! late, go the same way.

use std::net::IpAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use super::access_log::{Printable, log_and_record};
use super::error::Error;
use super::forwarded::client_address;
use super::handler::Handler;
use super::head::Head;
use super::request::Request;
use super::response::write_response;
use super::settings::Settings;
use super::slots::Gate;
use super::stats::Stats;
use super::transport::Transport;

/// What answering needs from the server around the connection.
pub(crate) struct Context<'a, H: ?Sized> {
    pub(crate) handler: &'a H,
    pub(crate) settings: &'a Settings,
    /// Answers say `Connection: close` once shutdown has begun.
    pub(crate) shutting_down: bool,
    /// The slots of slow requests, for a turn to ask for one.
    pub(crate) slots: &'a dyn Gate,
    pub(crate) stats: &'a Stats,
}

/// A complete request from one client, as the handler will see it, not
/// answered yet.
pub(crate) struct Prepared {
    pub(crate) request: Request,
    keep_alive: bool,
    started: Instant,
}

/// Makes the request the handler sees from what was read from `peer`: who
/// the client is (for a trusted proxy, the address it names in
/// `X-Forwarded-For`), and the body.
pub(crate) fn prepare(
    settings: &Settings,
    peer: IpAddr,
    head: Head,
    body: Vec<u8>,
    started: Instant,
) -> Prepared {
    let Head {
        mut request,
        forwarded_for,
        keep_alive,
        ..
    } = head;
    let client = client_address(&settings.trusted_proxies, peer, forwarded_for.as_deref());
    request.client = Some(client);
    request.forwarded_for = forwarded_for.is_some();
    request.body = body;
    Prepared {
        request,
        keep_alive,
        started,
    }
}

/// Answers a complete request and queues the answer on `transport` (`out`
/// is the worker's write buffer). Returns whether the connection stays
/// open after it.
pub(crate) fn respond<H: Handler + ?Sized>(
    cx: &Context<'_, H>,
    transport: &mut Transport,
    prepared: Prepared,
    out: &mut Vec<u8>,
) -> bool {
    let Prepared {
        request,
        keep_alive,
        started,
    } = prepared;
    let answered = catch_unwind(AssertUnwindSafe(|| cx.handler.handle(&request)));
    let response = answered.unwrap_or_else(|_| {
        log::error!(
            "request handler panicked: {} {}; answered 500",
            request.method,
            Printable(&request.path)
        );
        Error::Internal.response()
    });
    let keep = keep_alive && !cx.shutting_down;
    // RFC 9110 §9.3.2: a HEAD response has the GET response's headers
    // (Content-Length included) but no body; sending one would be read
    // as the start of the next response on a kept-alive connection.
    let send_body = request.method != "HEAD";
    write_response(out, &response, request.minor_version, keep, send_body);
    transport.queue(out);
    log_and_record(
        cx.handler,
        &request.method,
        &request.path,
        response.status,
        response.note,
        started,
        request.client,
    );
    keep
}

/// Queues the HTTP layer's own answer to `error`, with `Connection:
/// close`. `shape` is the request as far as it could be read, for the
/// handler to decorate the answer (CORS). The client is the peer: a
/// request that could not be read names no other.
pub(crate) fn reject<H: Handler + ?Sized>(
    handler: &H,
    transport: &mut Transport,
    peer: IpAddr,
    error: &Error,
    shape: &Request,
    out: &mut Vec<u8>,
) {
    let started = Instant::now();
    let response = handler.decorate_error(shape, error.response());
    write_response(out, &response, 1, false, true);
    transport.queue(out);
    log_and_record(
        handler,
        "-",
        "-",
        response.status,
        None,
        started,
        Some(peer),
    );
}
