//! [`Secret`]: a string that never shows itself. The client secret, the
//! encryption secrets and the keys made from them pass through logs, `Debug`
//! output and `check-config` only as `[redacted]`. Also the shortest an
//! encryption secret may be.

use std::fmt;

/// Shortest accepted encryption secret, in characters.
pub(crate) const MIN_ENCRYPTION_SECRET_CHARS: usize = 32;

/// A secret string. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself; call sites are the few places that need it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let secret = Secret::new("plugh-0123456789");
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(secret.to_string(), "[redacted]");
        assert_eq!(secret.expose(), "plugh-0123456789");
    }
}
