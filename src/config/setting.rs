//! What one row of the settings table is: a variable's name, the other ways
//! to give it ([`Form`], read by `env.rs`), what applies when it is unset ([`WhenUnset`]), its
//! line in the README, the parser that fills its field of the [`Draft`] and
//! how `check-config` shows its effective value. [`Setting::apply`] reads
//! one row; the table itself is in `settings.rs`.

use std::fmt::Write as _;

use super::Config;
use super::draft::Draft;
use super::env::{APPS_VAR, Env, Form, WithApps, app_pattern, file_var};
use super::error::{ConfigError, Problem};

/// One environment variable: everything parsing, `check-config` and the
/// README need to know about it.
pub(crate) struct Setting {
    /// The variable.
    pub(super) name: &'static str,
    /// Other ways to give it.
    pub(super) form: Form,
    /// What applies when it is unset.
    pub(super) when_unset: WhenUnset,
    /// Its row in the README's table.
    pub(super) about: &'static str,
    /// Parses a value into its field of the draft.
    pub(super) parse: fn(&mut Draft, &str) -> Result<(), Problem>,
    /// The effective value, for `check-config`.
    pub(super) show: fn(&Config) -> String,
}

/// What a setting is when its variable is unset.
pub(super) enum WhenUnset {
    /// Nothing: a problem.
    Required,
    /// This value, parsed as if it had been set.
    Default(&'static str),
    /// Its field stays empty or off; the README says what that means.
    Off(&'static str),
}

impl Setting {
    /// Reads this setting from `env` into its field of `draft`.
    pub(super) fn apply(&self, env: &Env, draft: &mut Draft) -> Result<(), ConfigError> {
        if env.get(APPS_VAR).is_some() {
            match self.form.with_apps {
                WithApps::Applies => {}
                WithApps::Unread => return Ok(()),
                WithApps::Replaced(field) => return self.refuse_beside_apps(env, field),
            }
        }
        let (var, text) = match env.value_of(self.name, &self.form)? {
            Some(value) => value,
            None => match self.when_unset {
                WhenUnset::Required => {
                    return Err(ConfigError::Missing {
                        name: self.name.to_string(),
                        alternatives: self.alternatives(),
                    });
                }
                WhenUnset::Default(text) => (self.name.to_string(), text.to_string()),
                WhenUnset::Off(_) => return Ok(()),
            },
        };
        (self.parse)(draft, &text).map_err(|problem| ConfigError::Invalid { var, problem })
    }

    /// With `SPOTIFY_APPS`, an app's setting of the single-app form is a
    /// problem if it is set, under any of its names.
    fn refuse_beside_apps(&self, env: &Env, field: &'static str) -> Result<(), ConfigError> {
        let names = std::iter::once(&self.name).chain(self.form.aliases);
        match names.copied().find(|name| env.get(name).is_some()) {
            Some(var) => Err(ConfigError::ReplacedByApps {
                var: var.to_string(),
                field,
            }),
            None => Ok(()),
        }
    }

    /// The other variables that can give this setting.
    pub(super) fn alternatives(&self) -> Vec<String> {
        let mut names: Vec<String> = self.form.aliases.iter().map(|a| a.to_string()).collect();
        if self.form.file_form {
            names.push(file_var(self.name));
        }
        names
    }

    /// The value that applies when it is unset, if it has one.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "only the documents' checks ask")
    )]
    pub(super) fn default(&self) -> Option<&'static str> {
        match self.when_unset {
            WhenUnset::Default(value) => Some(value),
            WhenUnset::Required | WhenUnset::Off(_) => None,
        }
    }

    /// Its row of the README's configuration table, in Markdown.
    pub(super) fn readme_row(&self) -> String {
        let name = self.name;
        let mut names = format!("`{name}`");
        if self.form.file_form {
            let _ = write!(names, " or `{}`", file_var(name));
        }
        let default = match (&self.when_unset, self.form.with_apps) {
            (WhenUnset::Required, WithApps::Applies) => "(required)".to_string(),
            (WhenUnset::Required, _) => format!("(required without `{APPS_VAR}`)"),
            (WhenUnset::Default(value), _) => format!("`{value}`"),
            (WhenUnset::Off(meaning), _) => meaning.to_string(),
        };
        let mut about = self.about.to_string();
        for alias in self.form.aliases {
            let _ = write!(about, "; `{alias}` is accepted as an alias");
        }
        match self.form.with_apps {
            WithApps::Applies => {}
            WithApps::Replaced(field) => {
                let _ = write!(
                    about,
                    "; with `{APPS_VAR}`, each app's `{}` instead (see \
                     [Several apps](#several-apps))",
                    app_pattern(field)
                );
            }
            WithApps::Unread => {
                let _ = write!(
                    about,
                    "; not read when `{APPS_VAR}` is set (the shipped unit always sets \
                     the `_FILE` form)"
                );
            }
        }
        let row = format!("| {names} | {default} | {about} |");
        // An empty cell is one space, as people write it.
        row.replace("|  |", "| |")
    }
}

/// Stores a parsed value in its field of the draft (the end of most
/// parsers).
pub(super) fn set<T>(field: &mut Option<T>, value: T) -> Result<(), Problem> {
    *field = Some(value);
    Ok(())
}
