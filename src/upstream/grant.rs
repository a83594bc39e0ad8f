//! What the client asks Spotify for, and its form body for the token
//! endpoint (RFC 6749 §4.1.3 and §6, with PKCE's `code_verifier`).

/// Room reserved for the form body; a code and a redirect URI fit in it.
const FORM_CAPACITY_BYTES: usize = 256;

/// What the client asks Spotify for.
pub(crate) enum Grant<'a> {
    /// Exchange an authorization code (`/swap`).
    AuthorizationCode {
        code: &'a str,
        redirect_uri: &'a str,
        code_verifier: Option<&'a str>,
    },
    /// Exchange a refresh token (`/refresh`).
    RefreshToken { refresh_token: &'a str },
}

/// The form body for Spotify's token endpoint.
pub(super) fn encode_form(grant: &Grant<'_>) -> String {
    let mut form = form_urlencoded::Serializer::new(String::with_capacity(FORM_CAPACITY_BYTES));
    match grant {
        Grant::AuthorizationCode {
            code,
            redirect_uri,
            code_verifier,
        } => {
            form.append_pair("grant_type", "authorization_code")
                .append_pair("code", code)
                .append_pair("redirect_uri", redirect_uri);
            if let Some(verifier) = code_verifier {
                form.append_pair("code_verifier", verifier);
            }
        }
        Grant::RefreshToken { refresh_token } => {
            form.append_pair("grant_type", "refresh_token")
                .append_pair("refresh_token", refresh_token);
        }
    }
    form.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_form_has_grant_code_and_redirect() {
        let form = encode_form(&Grant::AuthorizationCode {
            code: "a b&c",
            redirect_uri: "myapp://cb",
            code_verifier: None,
        });
        assert_eq!(
            form,
            "grant_type=authorization_code&code=a+b%26c&redirect_uri=myapp%3A%2F%2Fcb"
        );
    }

    #[test]
    fn swap_form_forwards_code_verifier() {
        let form = encode_form(&Grant::AuthorizationCode {
            code: "c",
            redirect_uri: "r",
            code_verifier: Some("v"),
        });
        assert!(form.ends_with("&code_verifier=v"), "{form}");
    }

    #[test]
    fn refresh_form_has_grant_and_token() {
        let form = encode_form(&Grant::RefreshToken {
            refresh_token: "t+/=",
        });
        assert_eq!(form, "grant_type=refresh_token&refresh_token=t%2B%2F%3D");
    }
}
