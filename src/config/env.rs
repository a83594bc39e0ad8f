//! Reading the variables: which one gives a setting and its text. A
//! secret is taken verbatim, any other value trimmed, and empty counts as
//! unset (unless the setting says an empty value means something); a
//! setting's aliases must agree; a secret may come from the file its
//! `{name}_FILE` names (systemd `LoadCredential=`); a fallback variable
//! (`PORT`) gives a value when the setting itself is unset.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::error::{ConfigError, Problem};

/// The variable that names the apps.
pub(crate) const APPS_VAR: &str = "SPOTIFY_APPS";
/// What every app's own variables begin with.
pub(super) const APP_PREFIX: &str = "SPOTIFY_APP_";

/// How a setting may be given, besides under its own name.
pub(super) struct Form {
    /// Other names for it; set together, they must agree.
    pub(super) aliases: &'static [&'static str],
    /// `{name}_FILE` may name a file holding the value instead.
    pub(super) file_form: bool,
    /// Taken verbatim (not trimmed) and kept in a [`Secret`](super::Secret),
    /// so `check-config` shows `[redacted]`; its parser reports problems
    /// without quoting it (a test checks both).
    pub(super) secret: bool,
    /// Read when the setting is unset.
    pub(super) fallback: Option<Fallback>,
    /// Set but empty is a value (an empty list), not "unset".
    pub(super) empty_is_a_value: bool,
    /// What becomes of it when `SPOTIFY_APPS` is set.
    pub(super) with_apps: WithApps,
}

/// What becomes of a setting when `SPOTIFY_APPS` is set.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum WithApps {
    /// It applies as ever: to the server, or to every app.
    Applies,
    /// It is the single-app form of an app's own setting
    /// `SPOTIFY_APP_<NAME>_{0}`: with `SPOTIFY_APPS`, setting it is a
    /// problem (each app gives its own).
    Replaced(&'static str),
    /// It is not read: the single-app form of an app's secret, which the
    /// shipped systemd unit always sets (as `_FILE`).
    Unread,
}

impl Form {
    /// Only the variable itself.
    pub(super) const PLAIN: Form = Form {
        aliases: &[],
        file_form: false,
        secret: false,
        fallback: None,
        empty_is_a_value: false,
        with_apps: WithApps::Applies,
    };
    /// A secret, also readable from `{name}_FILE` (systemd `LoadCredential=`).
    pub(super) const SECRET: Form = Form {
        file_form: true,
        secret: true,
        ..Form::PLAIN
    };
}

/// Another variable that gives a setting when it is unset.
pub(super) struct Fallback {
    pub(super) name: &'static str,
    /// Its value, turned into one of the setting's.
    pub(super) to_value: fn(&str) -> String,
}

/// The variables as given.
pub(super) struct Env(HashMap<String, String>);

impl Env {
    /// The variables from `(name, value)` pairs.
    pub(super) fn new<I, K, V>(vars: I) -> Env
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Env(vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect())
    }

    /// Every variable's name.
    pub(super) fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// `name`'s value, trimmed; empty counts as unset.
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    /// `name`'s value under `form`'s rules.
    fn get_for(&self, form: &Form, name: &str) -> Option<String> {
        if form.secret {
            // Verbatim: a secret may begin or end with a space.
            return self.0.get(name).filter(|v| !v.is_empty()).cloned();
        }
        if form.empty_is_a_value {
            return self.0.get(name).map(|v| v.trim().to_string());
        }
        self.get(name).map(String::from)
    }

    /// The value of the setting `setting` given as `form` allows, and the
    /// variable it came from: its name, an alias, its `_FILE` form or its
    /// fallback. `None`: unset.
    pub(super) fn value_of(
        &self,
        setting: &str,
        form: &Form,
    ) -> Result<Option<(String, String)>, ConfigError> {
        let names = std::iter::once(setting).chain(form.aliases.iter().copied());
        let given: Vec<(&str, String)> = names
            .filter_map(|name| Some((name, self.get_for(form, name)?)))
            .collect();
        if let [(name, text), rest @ ..] = given.as_slice() {
            if let Some((alias, _)) = rest.iter().find(|(_, other)| other != text) {
                return Err(ConfigError::Differ {
                    name: name.to_string(),
                    alias: alias.to_string(),
                });
            }
        }
        let file = if form.file_form {
            self.get(&file_var(setting)).map(PathBuf::from)
        } else {
            None
        };
        match (given.into_iter().next(), file) {
            (Some(_), Some(_)) => Err(ConfigError::BothSet {
                name: setting.to_string(),
            }),
            (Some((name, text)), None) => Ok(Some((name.to_string(), text))),
            (None, Some(path)) => match read_secret_file(&path) {
                Ok(text) => Ok(Some((setting.to_string(), text))),
                Err(problem) => Err(ConfigError::Invalid {
                    var: file_var(setting),
                    problem,
                }),
            },
            (None, None) => Ok(form.fallback.as_ref().and_then(|fallback| {
                let text = self.get(fallback.name)?;
                Some((fallback.name.to_string(), (fallback.to_value)(text)))
            })),
        }
    }
}

/// The variable of `field` for the app `name`: `SPOTIFY_APP_TV_CLIENT_ID`
/// (NAME upper-cased, `-` as `_`).
pub(crate) fn app_var(name: &str, field: &str) -> String {
    let upper = name.to_ascii_uppercase().replace('-', "_");
    format!("{APP_PREFIX}{upper}_{field}")
}

/// The pattern of `field`'s variables: `SPOTIFY_APP_<NAME>_CLIENT_ID`.
pub(super) fn app_pattern(field: &str) -> String {
    format!("{APP_PREFIX}<NAME>_{field}")
}

/// The variable that names a file holding `name`'s value.
pub(super) fn file_var(name: &str) -> String {
    format!("{name}_FILE")
}

/// Reads a secret file; a single trailing newline (or CRLF) is dropped.
fn read_secret_file(path: &Path) -> Result<String, Problem> {
    let text = std::fs::read_to_string(path).map_err(|e| Problem::Unreadable {
        path: path.to_path_buf(),
        error: e.to_string(),
    })?;
    let text = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    if text.is_empty() {
        return Err(Problem::EmptyFile(path.to_path_buf()));
    }
    Ok(text.to_string())
}

/// The process environment as UTF-8 pairs (others cannot be ours).
pub(super) fn process_vars() -> impl Iterator<Item = (String, String)> {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
}

#[cfg(test)]
mod tests {
    use crate::config::error::{ConfigError, Problem};
    use crate::config::testing::with;
    use crate::config::{Config, Listen};

    #[test]
    fn port_alone_binds_all_interfaces() {
        let c = with(&[("PORT", "5000")]).unwrap();
        assert_eq!(c.listen, Listen::Addr("0.0.0.0:5000".parse().unwrap()));
        let c = with(&[("PORT", "5000"), ("LISTEN_ADDR", "127.0.0.1:9000")]).unwrap();
        assert_eq!(c.listen, Listen::Addr("127.0.0.1:9000".parse().unwrap()));
    }

    #[test]
    fn callback_url_is_an_alias_for_redirect_uri() {
        let c = Config::from_vars([
            ("SPOTIFY_CLIENT_ID", "cid"),
            ("SPOTIFY_CLIENT_SECRET", "s"),
            ("SPOTIFY_CLIENT_CALLBACK_URL", "myapp://cb"),
        ])
        .unwrap();
        assert_eq!(c.apps[0].redirect_uri.as_str(), "myapp://cb");
    }

    #[test]
    fn secret_file_drops_one_trailing_newline() {
        let dir = std::env::temp_dir().join(format!("sts-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret");
        std::fs::write(&path, "from-file\n").unwrap();
        let c = Config::from_vars([
            ("SPOTIFY_CLIENT_ID", "cid"),
            ("SPOTIFY_CLIENT_SECRET_FILE", path.to_str().unwrap()),
            ("SPOTIFY_REDIRECT_URI", "x://y"),
        ])
        .unwrap();
        assert_eq!(c.apps[0].client_secret.expose(), "from-file");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_secret_is_taken_verbatim_and_other_values_trimmed() {
        let c = Config::from_vars([
            ("SPOTIFY_CLIENT_ID", " cid "),
            ("SPOTIFY_CLIENT_SECRET", " spaced "),
            ("SPOTIFY_REDIRECT_URI", "x://y"),
        ])
        .unwrap();
        assert_eq!(c.apps[0].client_id, "cid");
        assert_eq!(c.apps[0].client_secret.expose(), " spaced ");
    }

    #[test]
    fn a_problem_names_the_variable_the_value_came_from() {
        let errs = with(&[("PORT", "nope")]).unwrap_err();
        assert_eq!(
            errs.0,
            vec![ConfigError::Invalid {
                var: "PORT".into(),
                problem: Problem::NotHostPort("0.0.0.0:nope".into()),
            }]
        );
        let errs = with(&[("ENCRYPTION_SECRET_FILE", "/nonexistent/secret")]).unwrap_err();
        assert!(
            errs.to_string().starts_with(
                "configuration error: ENCRYPTION_SECRET_FILE: cannot read '/nonexistent/secret'"
            ),
            "{errs}"
        );
    }

    #[test]
    fn alias_that_disagrees_is_a_problem_and_one_that_agrees_is_not() {
        let errs = with(&[("SPOTIFY_CLIENT_CALLBACK_URL", "other://cb")]).unwrap_err();
        assert_eq!(
            errs.to_string(),
            "configuration error: SPOTIFY_REDIRECT_URI and SPOTIFY_CLIENT_CALLBACK_URL differ; \
             set only one"
        );
        assert!(with(&[("SPOTIFY_CLIENT_CALLBACK_URL", "myapp://callback")]).is_ok());
    }

    #[test]
    fn a_secret_given_twice_is_a_problem() {
        let errs = with(&[("SPOTIFY_CLIENT_SECRET_FILE", "/no/such/file")]).unwrap_err();
        assert_eq!(
            errs.0,
            vec![ConfigError::BothSet {
                name: "SPOTIFY_CLIENT_SECRET".into()
            }]
        );
    }

    #[test]
    fn empty_trusted_proxies_trusts_no_one() {
        let c = with(&[("TRUSTED_PROXIES", "")]).unwrap();
        assert!(c.http.trusted_proxies.is_empty());
    }
}
