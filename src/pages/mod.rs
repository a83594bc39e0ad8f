//! The device-login pages: three small templates in the binary (enter the
//! code, confirm and continue to Spotify, a message), every value
//! HTML-escaped, and the headers every page carries.
//!
//! No template engine: three pages of fixed markup with a few escaped
//! values are `format!` calls. The pages work without JavaScript (the CSP
//! allows none), load nothing from anywhere (no images, fonts or scripts;
//! their one stylesheet is inline), fit a phone (`meta viewport`), and
//! never show a token or an authorization code.

use crate::http::Response;

/// Media type of the pages.
const HTML: &str = "text/html; charset=utf-8";

/// The one stylesheet, inline: readable on a phone, nothing fetched.
const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;\
margin:0;padding:1.5rem;background:#f6f6f6;color:#191414;line-height:1.5}\
main{max-width:26rem;margin:0 auto;overflow-wrap:anywhere;background:#fff;padding:1.5rem;border-radius:.75rem}\
h1{font-size:1.4rem;margin:0 0 1rem}\
label{display:block;font-weight:600;margin-bottom:.5rem}\
input{box-sizing:border-box;width:100%;font-size:1.5rem;letter-spacing:.15em;padding:.6rem;\
text-transform:uppercase;border:2px solid #999;border-radius:.5rem;margin-bottom:1rem}\
button{width:100%;font-size:1.1rem;padding:.8rem;border:0;border-radius:2rem;background:#1db954;\
color:#fff;font-weight:700}\
.code{font-family:ui-monospace,monospace;font-size:1.3rem;letter-spacing:.1em;white-space:nowrap}\
ul{padding-left:1.2rem}.note{color:#555;font-size:.9rem}";

/// The headers of every page. `accounts`: Spotify's accounts service,
/// which the Continue form is redirected to.
pub(crate) fn response(status: u16, html: String, accounts: &str) -> Response {
    let mut response = Response::json(status, html.into_bytes());
    response.content_type = HTML;
    // SECURITY: no script, frame, image or font from anywhere, and forms
    // go only here or (by the 303 after Continue) to Spotify; the page
    // cannot be framed (clickjacking the Continue button), is never cached
    // (a shared device's history shows nothing), and its address — which
    // carries the user code — is sent to no one as a Referer.
    response
        .with_header(
            "Content-Security-Policy",
            format!("default-src 'none'; style-src 'unsafe-inline'; form-action 'self' {accounts}"),
        )
        .with_header("X-Frame-Options", "DENY")
        .with_header("Referrer-Policy", "no-referrer")
        .with_header("Cache-Control", "no-store")
        .with_header("X-Content-Type-Options", "nosniff")
}

/// The page asking for the code the device shows; `problem`: why the last
/// one was not taken.
pub(crate) fn enter_code(problem: Option<&str>) -> String {
    let problem = problem
        .map(|text| format!("<p><strong>{}</strong></p>", escape(text)))
        .unwrap_or_default();
    page(
        "Sign in a device",
        &format!(
            "{problem}<form method=\"get\" action=\"/device\">\
             <label for=\"user_code\">Enter the code your device shows</label>\
             <input id=\"user_code\" name=\"user_code\" autocomplete=\"off\" \
             autocapitalize=\"characters\" spellcheck=\"false\" maxlength=\"16\" \
             placeholder=\"XXXX-XXXX\" required>\
             <button type=\"submit\">Next</button></form>"
        ),
    )
}

/// The page that names the app (by its name in `SPOTIFY_APPS`, else its
/// client id) and scopes and offers to continue. `form_token`: the value
/// the form sends back with its cookie.
pub(crate) fn confirm(
    app: Option<&str>,
    client_id: &str,
    scopes: &[&str],
    user_code: &str,
    form_token: &str,
) -> String {
    let app = match app {
        Some(name) => format!("the app <strong>{}</strong>", escape(name)),
        None => format!(
            "this server's Spotify app (client id <strong>{}</strong>)",
            escape(client_id)
        ),
    };
    let scopes = if scopes.is_empty() {
        "<p>It asks for no extra permissions (your public profile only).</p>".to_string()
    } else {
        let items: String = scopes
            .iter()
            .map(|scope| format!("<li><code>{}</code></li>", escape(scope)))
            .collect();
        format!("<p>It asks for:</p><ul>{items}</ul>")
    };
    page(
        "Sign in a device",
        &format!(
            "<p>A device showing the code <span class=\"code\">{code}</span> wants to use \
             Spotify as you, through {app}.</p>{scopes}\
             <form method=\"post\" action=\"/device\">\
             <input type=\"hidden\" name=\"user_code\" value=\"{code}\">\
             <input type=\"hidden\" name=\"form_token\" value=\"{token}\">\
             <button type=\"submit\">Continue to Spotify</button></form>\
             <p class=\"note\">Only continue if you started this on your own device and \
             the code matches what it shows.</p>",
            code = escape(user_code),
            token = escape(form_token),
        ),
    )
}

/// A page that only says something: a title and one paragraph.
pub(crate) fn message(title: &str, text: &str) -> String {
    page(title, &format!("<p>{}</p>", escape(text)))
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>{STYLE}</style></head>\n\
         <body><main><h1>{title}</h1>{body}</main></body></html>\n",
        title = escape(title),
    )
}

/// Text made safe for HTML content and quoted attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_in_text_and_attributes() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        let html = confirm(Some("<script>"), "id", &["a\"b"], "BCDF-GHJK", "t\"k");
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("value=\"t&quot;k\""));
        assert!(html.contains("<code>a&quot;b</code>"));
    }

    #[test]
    fn every_page_has_a_language_a_viewport_and_nothing_external() {
        for html in [
            enter_code(Some("no such code")),
            confirm(None, "id<", &["streaming"], "BCDF-GHJK", "tok"),
            message("Signed in", "Return to your device."),
        ] {
            assert!(
                html.starts_with("<!doctype html>\n<html lang=\"en\">"),
                "{html}"
            );
            assert!(html.contains("<meta name=\"viewport\""));
            for external in ["http:", "https:", "<script", "<img", "<link", "//"] {
                assert!(!html.contains(external), "{external} in {html}");
            }
        }
    }

    #[test]
    fn pages_carry_the_security_headers() {
        let response = response(200, message("t", "x"), "https://accounts.spotify.com");
        assert_eq!(response.content_type, "text/html; charset=utf-8");
        assert_eq!(
            response.header("Content-Security-Policy"),
            Some(
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' https://accounts.spotify.com"
            )
        );
        assert_eq!(response.header("X-Frame-Options"), Some("DENY"));
        assert_eq!(response.header("Referrer-Policy"), Some("no-referrer"));
        assert_eq!(response.header("Cache-Control"), Some("no-store"));
    }
}
