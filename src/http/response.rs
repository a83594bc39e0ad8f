//! An answer, and how it is written on the wire: the status line,
//! `Content-Type` and `Content-Length`, the handler's headers, `Connection`,
//! then the body (none to a HEAD request, none with a 204).
//!
//! A [`Response`] is the layer's own small type (status, headers, body,
//! content type); the app builds its answers, errors included, out of it.

/// A response to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(&'static str, String)>,
    /// JSON unless `content_type` says otherwise; empty for 204.
    pub(crate) body: Vec<u8>,
    pub(crate) content_type: &'static str,
    /// The handler's own note about this answer, handed back to it in the
    /// [`Record`](super::Record) of the request (the layer does nothing
    /// else with it); `None` unless the handler sets one.
    pub(crate) note: Option<u32>,
}

/// Media type of every body the server writes, except `/metrics` and pages.
pub(crate) const JSON: &str = "application/json";

impl Response {
    /// A JSON response.
    pub fn json(status: u16, body: Vec<u8>) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body,
            content_type: JSON,
            note: None,
        }
    }

    /// A response without a body (204).
    pub(crate) fn empty(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            content_type: JSON,
            note: None,
        }
    }

    /// An error answer in the OAuth shape every error of this server has:
    /// `{"error": code, "error_description": description}`.
    pub(crate) fn error(status: u16, code: &str, description: &str) -> Response {
        let body = serde_json::json!({
            "error": code,
            "error_description": description,
        });
        Response::json(status, body.to_string().into_bytes())
    }

    /// Adds a header.
    pub(crate) fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// The value of a header this response carries.
    #[cfg(test)]
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reason phrase for the statuses this server writes.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        303 => "See Other",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Serialises a response into `out`; without its body if `send_body` is
/// false (an answer to HEAD).
pub(crate) fn write_response(
    out: &mut Vec<u8>,
    response: &Response,
    minor_version: u8,
    keep_alive: bool,
    send_body: bool,
) {
    use std::fmt::Write as _;
    out.clear();
    let mut head = String::with_capacity(256);
    let _ = write!(
        head,
        "HTTP/1.1 {} {}\r\n",
        response.status,
        reason(response.status)
    );
    if response.status != 204 {
        let _ = write!(
            head,
            "Content-Type: {}\r\nContent-Length: {}\r\n",
            response.content_type,
            response.body.len()
        );
    }
    for (name, value) in &response.headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    if !keep_alive {
        head.push_str("Connection: close\r\n");
    } else if minor_version == 0 {
        head.push_str("Connection: keep-alive\r\n");
    }
    head.push_str("\r\n");
    out.extend_from_slice(head.as_bytes());
    if send_body {
        out.extend_from_slice(&response.body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_answer_is_json_with_code_and_description() {
        let r = Response::error(400, "invalid_request", "the field 'code' is required");
        assert_eq!(r.status, 400);
        assert_eq!(r.content_type, "application/json");
        assert_eq!(
            r.body,
            br#"{"error":"invalid_request","error_description":"the field 'code' is required"}"#
        );
    }

    #[test]
    fn response_head_says_close_when_closing() {
        let mut out = Vec::new();
        let r = Response::json(200, b"{}".to_vec()).with_header("Cache-Control", "no-store");
        write_response(&mut out, &r, 1, false, true);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\
             Cache-Control: no-store\r\nConnection: close\r\n\r\n{}"
        );
    }

    #[test]
    fn response_to_head_has_length_but_no_body() {
        let mut out = Vec::new();
        let r = Response::json(200, br#"{"status":"ok"}"#.to_vec());
        write_response(&mut out, &r, 1, true, false);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n"
        );
    }
}
