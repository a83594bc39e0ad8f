//! Several Spotify apps on one server: `SPOTIFY_APPS` names them, and each
//! app's own settings are `SPOTIFY_APP_<NAME>_<FIELD>` (NAME upper-cased,
//! `-` as `_`).
//!
//! Those variables' names depend on the apps, so they are not rows of
//! `SETTINGS`: [`APP_SETTINGS`] has one row per field of an app — the
//! pattern `SPOTIFY_APP_<NAME>_CLIENT_ID` —, with its form, whether it is
//! required, its line in the README's table, its parser into the app's
//! draft and how `check-config` shows it. `SPOTIFY_APPS` itself is a row of
//! `SETTINGS`, whose parser ([`app_names`]) is here. After the rows of
//! `SETTINGS`, [`read`] reads each named app's variables, and reports every
//! variable of the `SPOTIFY_APP_` form that is no app's setting (a typo in
//! a name would otherwise leave a setting silently unread); [`settle`]
//! checks what involves several apps.
//!
//! Without `SPOTIFY_APPS`, the one app is made of the single-app settings
//! (`SPOTIFY_CLIENT_ID` …), exactly as before; with it, those are refused
//! (`WithApps` in `env.rs`).

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use super::draft::{AppDraft, Draft};
use super::env::{APP_PREFIX, APPS_VAR, Env, Form, app_pattern, app_var, file_var};
use super::error::{ConfigError, Problem};
use super::parse::{client_id, cors, join_uris, list, redirect_uri, redirect_uris};
use super::public_url::DEVICE_PATHS;
use super::setting::{WhenUnset, set};
use super::{AppConfig, Config, Cors};
use crate::secret::Secret;

/// Most apps one server serves: Spotify allows 25 client ids per developer
/// account; this leaves room for a few accounts.
const MAX_APPS: usize = 64;
/// Longest app name, in characters: it is a path segment and part of
/// variable names.
const MAX_APP_NAME_CHARS: usize = 32;

/// One field of an app: everything parsing, `check-config` and the README
/// need to know about `SPOTIFY_APP_<NAME>_{field}`.
pub(crate) struct AppSetting {
    /// What follows `SPOTIFY_APP_<NAME>_`.
    pub(super) field: &'static str,
    /// Other ways to give it (only a `_FILE` form here).
    pub(super) form: Form,
    /// What applies when it is unset.
    pub(super) when_unset: WhenUnset,
    /// Its row in the README's table.
    pub(super) about: &'static str,
    /// Parses a value into its field of the app's draft.
    pub(super) parse: fn(&mut AppDraft, &str) -> Result<(), Problem>,
    /// The effective value, for `check-config`.
    pub(super) show: fn(&AppConfig) -> String,
}

/// Every field of an app, in the order `check-config` and the README list
/// them. The single-app settings they replace say so in their rows.
pub(crate) static APP_SETTINGS: &[AppSetting] = &[
    AppSetting {
        field: "CLIENT_ID",
        form: Form::PLAIN,
        when_unset: WhenUnset::Required,
        about: "the client id of the app named NAME in `SPOTIFY_APPS`; each app has its own",
        parse: |d, v| set(&mut d.client_id, client_id(v)?),
        show: |app| app.client_id.clone(),
    },
    AppSetting {
        field: "CLIENT_SECRET",
        form: Form::SECRET,
        when_unset: WhenUnset::Required,
        about: "that app's client secret; re-read on `SIGHUP`",
        parse: |d, v| set(&mut d.client_secret, Secret::new(v)),
        show: |app| app.client_secret.to_string(),
    },
    AppSetting {
        field: "REDIRECT_URI",
        form: Form::PLAIN,
        when_unset: WhenUnset::Required,
        about: "the redirect URI registered for that app",
        parse: |d, v| set(&mut d.redirect_uri, redirect_uri(v)?),
        show: |app| app.redirect_uri.to_string(),
    },
    AppSetting {
        field: "ALLOWED_REDIRECT_URIS",
        form: Form::PLAIN,
        when_unset: WhenUnset::Off(""),
        about: "extra redirect URIs a client of that app may name in a swap (comma-separated)",
        parse: |d, v| set(&mut d.allowed_redirect_uris, redirect_uris(v)?),
        show: |app| join_uris(&app.allowed_redirect_uris),
    },
    AppSetting {
        field: "CORS_ALLOW_ORIGINS",
        form: Form::PLAIN,
        when_unset: WhenUnset::Off("(CORS off)"),
        about: "browser origins allowed to call that app's endpoints (comma-separated, or `*`)",
        parse: |d, v| set(&mut d.cors, cors(v)?),
        show: |app| shown_cors(&app.cors),
    },
];

impl AppSetting {
    /// Reads this field of the app `name` from `env` into `draft`.
    fn apply(&self, env: &Env, name: &str, draft: &mut AppDraft) -> Result<(), ConfigError> {
        let var = app_var(name, self.field);
        let (var, text) = match env.value_of(&var, &self.form)? {
            Some(value) => value,
            None => match self.when_unset {
                WhenUnset::Required => {
                    let alternatives = if self.form.file_form {
                        vec![file_var(&var)]
                    } else {
                        Vec::new()
                    };
                    return Err(ConfigError::Missing {
                        name: var,
                        alternatives,
                    });
                }
                WhenUnset::Default(_) | WhenUnset::Off(_) => return Ok(()),
            },
        };
        (self.parse)(draft, &text).map_err(|problem| ConfigError::Invalid { var, problem })
    }

    /// Its row of the README's configuration table, in Markdown.
    fn readme_row(&self) -> String {
        let name = app_pattern(self.field);
        let mut names = format!("`{name}`");
        if self.form.file_form {
            let _ = write!(names, " or `{}`", file_var(&name));
        }
        let default = match self.when_unset {
            WhenUnset::Required => format!("(required with `{APPS_VAR}`)"),
            WhenUnset::Default(value) => format!("`{value}`"),
            WhenUnset::Off(meaning) => meaning.to_string(),
        };
        format!("| {names} | {default} | {} |", self.about).replace("|  |", "| |")
    }
}

/// `SPOTIFY_APPS`: the apps' names, in order.
pub(super) fn app_names(text: &str) -> Result<Vec<String>, Problem> {
    let names = list(text);
    if names.is_empty() {
        return Err(Problem::NoApps);
    }
    let bad: Vec<String> = names.iter().filter(|n| !is_app_name(n)).cloned().collect();
    if !bad.is_empty() {
        return Err(Problem::NotAppNames {
            names: bad,
            max_chars: MAX_APP_NAME_CHARS,
        });
    }
    let mut seen = HashSet::new();
    if let Some(twice) = names.iter().find(|n| !seen.insert(n.as_str())) {
        return Err(Problem::AppListedTwice(twice.clone()));
    }
    if names.len() > MAX_APPS {
        return Err(Problem::TooManyApps {
            count: names.len(),
            max: MAX_APPS,
        });
    }
    Ok(names)
}

/// `[a-z0-9-]{1,32}`: a path segment as it is, and part of a variable's
/// name once upper-cased with `-` as `_`.
fn is_app_name(name: &str) -> bool {
    (1..=MAX_APP_NAME_CHARS).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Whether a word of a document names an app's variable: one app's
/// (`SPOTIFY_APP_TV_CLIENT_ID`), or the start of a pattern
/// (`SPOTIFY_APP_<NAME>_…` reads as the word `SPOTIFY_APP_`).
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "only the documents' checks ask")
)]
pub(super) fn is_app_variable(word: &str) -> bool {
    let Some(rest) = word.strip_prefix(APP_PREFIX) else {
        return false;
    };
    rest.is_empty()
        || APP_SETTINGS.iter().any(|setting| {
            let own = |suffix: &str| {
                rest.strip_suffix(suffix)
                    .and_then(|name| name.strip_suffix('_'))
                    .is_some_and(|name| !name.is_empty())
            };
            own(setting.field) || (setting.form.file_form && own(&file_var(setting.field)))
        })
}

/// The fields of an app, for a message: `CLIENT_ID, CLIENT_SECRET, …`.
fn field_list() -> String {
    let fields: Vec<&str> = APP_SETTINGS.iter().map(|s| s.field).collect();
    fields.join(", ")
}

/// Reads the variables of every app `SPOTIFY_APPS` names into `draft`,
/// and reports each variable of the `SPOTIFY_APP_` form that is no setting
/// of those apps (all of them, without `SPOTIFY_APPS`). A `SPOTIFY_APPS`
/// that could not be read was reported already: nothing more then.
pub(super) fn read(env: &Env, draft: &mut Draft) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let mut strays: Vec<&str> = env
        .names()
        .filter(|name| name.starts_with(APP_PREFIX) && env.get(name).is_some())
        .collect();
    strays.sort_unstable();
    if env.get(APPS_VAR).is_none() {
        errors.extend(
            strays
                .into_iter()
                .map(|var| ConfigError::AppSettingWithoutApps {
                    var: var.to_string(),
                }),
        );
        return errors;
    }
    let Some(names) = &draft.app_names else {
        return errors;
    };
    let mut known = HashSet::new();
    for name in names {
        let mut app = AppDraft {
            name: name.clone(),
            ..AppDraft::default()
        };
        for setting in APP_SETTINGS {
            errors.extend(setting.apply(env, name, &mut app).err());
            let var = app_var(name, setting.field);
            if setting.form.file_form {
                known.insert(file_var(&var));
            }
            known.insert(var);
        }
        draft.apps.push(app);
    }
    errors.extend(
        strays
            .into_iter()
            .filter(|var| !known.contains(*var))
            .map(|var| ConfigError::NotAnAppSetting {
                var: var.to_string(),
                fields: field_list(),
            }),
    );
    errors
}

/// What involves several apps: each has its own client id, and no app's
/// path is a plain endpoint's path too (`/{name}{SWAP_PATH}` against
/// `REFRESH_PATH`). Values not read are not checked again.
pub(super) fn settle(draft: &Draft) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let mut first: HashMap<&str, &str> = HashMap::new();
    for app in &draft.apps {
        let Some(id) = app.client_id.as_deref() else {
            continue;
        };
        if let Some(other) = first.get(id) {
            errors.push(ConfigError::SameClientId {
                var: app_var(&app.name, "CLIENT_ID"),
                first: app_var(other, "CLIENT_ID"),
            });
        } else {
            first.insert(id, &app.name);
        }
    }
    let plain = [
        ("SWAP_PATH", draft.swap_path.as_deref()),
        ("REFRESH_PATH", draft.refresh_path.as_deref()),
    ];
    for app in &draft.apps {
        for (_, own) in plain {
            let Some(path) = own.map(|own| format!("/{}{own}", app.name)) else {
                continue;
            };
            if draft.public_url.is_some() && DEVICE_PATHS.contains(&path.as_str()) {
                errors.push(ConfigError::DevicePathTaken {
                    var: format!("{APPS_VAR} (app '{}')", app.name),
                    path,
                });
                continue;
            }
            if let Some((setting, _)) = plain.iter().find(|(_, p)| *p == Some(path.as_str())) {
                errors.push(ConfigError::AppPathTaken {
                    app: app.name.clone(),
                    path,
                    setting,
                });
            }
        }
    }
    errors
}

/// The rows of the README's configuration table for the apps' fields.
pub(super) fn readme_rows() -> String {
    let mut rows = String::new();
    for setting in APP_SETTINGS {
        rows.push_str(&setting.readme_row());
        rows.push('\n');
    }
    rows
}

/// `SPOTIFY_APPS` as `check-config` shows it: with several apps, every
/// app's variables (secrets redacted) and the paths that serve it, on the
/// lines that follow.
pub(super) fn shown(c: &Config) -> String {
    if c.one_app().is_some() {
        return "(unset: one app, from SPOTIFY_CLIENT_ID)".into();
    }
    let names: Vec<&str> = c.apps.iter().filter_map(|a| a.name.as_deref()).collect();
    let mut text = format!(
        "{} ({} apps; a request that names none is served by {})",
        names.join(","),
        names.len(),
        names.first().copied().unwrap_or_default()
    );
    for app in &c.apps {
        let name = app.name.as_deref().unwrap_or_default();
        for setting in APP_SETTINGS {
            let _ = write!(
                text,
                "\n{}={}",
                app_var(name, setting.field),
                (setting.show)(app)
            );
        }
        let _ = write!(
            text,
            "\napp {name}: /{name}{swap}, /{name}{refresh}; or client_id={id} on {swap}, {refresh}",
            swap = c.swap_path,
            refresh = c.refresh_path,
            id = app.client_id
        );
    }
    text
}

/// A CORS setting as `check-config` shows it.
pub(super) fn shown_cors(cors: &Cors) -> String {
    match cors {
        Cors::Off => "off".into(),
        Cors::Any => "*".into(),
        Cors::List(origins) => origins.join(","),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three apps' variables, and `extra`.
    pub(crate) fn three(extra: &[(&str, &str)]) -> Result<Config, super::super::ConfigErrors> {
        let mut vars = vec![
            ("SPOTIFY_APPS", "music,tv,car-2"),
            ("SPOTIFY_APP_MUSIC_CLIENT_ID", "id-music"),
            ("SPOTIFY_APP_MUSIC_CLIENT_SECRET", "secret-music-plugh"),
            ("SPOTIFY_APP_MUSIC_REDIRECT_URI", "music://cb"),
            ("SPOTIFY_APP_TV_CLIENT_ID", "id-tv"),
            ("SPOTIFY_APP_TV_CLIENT_SECRET", "secret-tv-plugh"),
            ("SPOTIFY_APP_TV_REDIRECT_URI", "tv://cb"),
            ("SPOTIFY_APP_CAR_2_CLIENT_ID", "id-car"),
            ("SPOTIFY_APP_CAR_2_CLIENT_SECRET", "secret-car-plugh"),
            ("SPOTIFY_APP_CAR_2_REDIRECT_URI", "car://cb"),
        ];
        vars.retain(|(name, _)| !extra.iter().any(|(n, _)| n == name));
        vars.extend(extra.iter().filter(|(_, v)| !v.is_empty()));
        Config::from_vars(vars)
    }

    fn problems(extra: &[(&str, &str)]) -> Vec<String> {
        let errors = three(extra).unwrap_err();
        errors.0.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn three_apps_are_read_in_order_with_their_own_settings() {
        let c = three(&[
            (
                "SPOTIFY_APP_TV_ALLOWED_REDIRECT_URIS",
                "tv://other, tv://third",
            ),
            (
                "SPOTIFY_APP_CAR_2_CORS_ALLOW_ORIGINS",
                "https://car.example",
            ),
        ])
        .unwrap();
        let names: Vec<_> = c.apps.iter().map(|a| a.name.as_deref().unwrap()).collect();
        assert_eq!(names, ["music", "tv", "car-2"]);
        let ids: Vec<_> = c.apps.iter().map(|a| a.client_id.as_str()).collect();
        assert_eq!(ids, ["id-music", "id-tv", "id-car"]);
        assert_eq!(c.apps[1].client_secret.expose(), "secret-tv-plugh");
        assert!(c.apps[1].redirect_uri_allowed("tv://third"));
        assert!(!c.apps[0].redirect_uri_allowed("tv://third"));
        assert!(!c.apps[1].redirect_uri_allowed("music://cb"));
        assert_eq!(
            c.apps[2].cors,
            Cors::List(vec!["https://car.example".into()])
        );
        assert_eq!(c.apps[0].cors, Cors::Off);
        assert!(c.one_app().is_none());
    }

    #[test]
    fn an_app_secret_may_come_from_a_file() {
        let dir = std::env::temp_dir().join(format!("sts-apps-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tv-client-secret");
        std::fs::write(&path, "from-a-file\n").unwrap();
        let c = three(&[
            ("SPOTIFY_APP_TV_CLIENT_SECRET", ""),
            ("SPOTIFY_APP_TV_CLIENT_SECRET_FILE", path.to_str().unwrap()),
        ]);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(c.unwrap().apps[1].client_secret.expose(), "from-a-file");
    }

    #[test]
    fn bad_names_are_each_one_line_naming_spotify_apps() {
        for (list, line) in [
            (
                "music,TV,a b",
                "SPOTIFY_APPS: 'TV', 'a b' are not app names (1 to 32 of a-z, 0-9 and -)",
            ),
            ("music,tv,music", "SPOTIFY_APPS: 'music' is listed twice"),
            (" , ", "SPOTIFY_APPS names no app"),
            (
                "tv_2",
                "SPOTIFY_APPS: 'tv_2' is not an app name (1 to 32 of a-z, 0-9 and -)",
            ),
        ] {
            assert_eq!(problems(&[("SPOTIFY_APPS", list)]), [line], "{list}");
        }
        let long = "a".repeat(MAX_APP_NAME_CHARS + 1);
        assert_eq!(problems(&[("SPOTIFY_APPS", &long)]).len(), 1);
        let many: Vec<String> = (0..=MAX_APPS).map(|i| format!("app{i}")).collect();
        assert_eq!(
            problems(&[("SPOTIFY_APPS", &many.join(","))]),
            ["SPOTIFY_APPS lists 65 apps; at most 64"]
        );
    }

    #[test]
    fn each_missing_or_duplicate_app_setting_is_one_line_naming_its_variable() {
        assert_eq!(
            problems(&[
                ("SPOTIFY_APP_TV_CLIENT_ID", ""),
                ("SPOTIFY_APP_CAR_2_CLIENT_SECRET", ""),
                ("SPOTIFY_APP_MUSIC_REDIRECT_URI", ""),
            ]),
            [
                "SPOTIFY_APP_MUSIC_REDIRECT_URI is required",
                "SPOTIFY_APP_TV_CLIENT_ID is required",
                "SPOTIFY_APP_CAR_2_CLIENT_SECRET (or SPOTIFY_APP_CAR_2_CLIENT_SECRET_FILE) is \
                 required",
            ]
        );
        assert_eq!(
            problems(&[("SPOTIFY_APP_CAR_2_CLIENT_ID", "id-music")]),
            ["SPOTIFY_APP_CAR_2_CLIENT_ID is the same client id as \
                 SPOTIFY_APP_MUSIC_CLIENT_ID; each app has its own"]
        );
        assert_eq!(
            problems(&[("SPOTIFY_APP_TV_CLIENT_ID", "id:tv")]),
            ["SPOTIFY_APP_TV_CLIENT_ID must not contain ':'"]
        );
    }

    #[test]
    fn single_app_settings_beside_spotify_apps_are_refused_but_the_secret_is_not_read() {
        assert_eq!(
            problems(&[
                ("SPOTIFY_CLIENT_ID", "cid"),
                ("SPOTIFY_CLIENT_CALLBACK_URL", "x://cb"),
                ("ALLOWED_REDIRECT_URIS", "x://other"),
                ("CORS_ALLOW_ORIGINS", "*"),
            ]),
            [
                "SPOTIFY_CLIENT_ID is set together with SPOTIFY_APPS: give each app its own \
                 SPOTIFY_APP_<NAME>_CLIENT_ID, and unset SPOTIFY_CLIENT_ID",
                "SPOTIFY_CLIENT_CALLBACK_URL is set together with SPOTIFY_APPS: give each app \
                 its own SPOTIFY_APP_<NAME>_REDIRECT_URI, and unset SPOTIFY_CLIENT_CALLBACK_URL",
                "ALLOWED_REDIRECT_URIS is set together with SPOTIFY_APPS: give each app its own \
                 SPOTIFY_APP_<NAME>_ALLOWED_REDIRECT_URIS, and unset ALLOWED_REDIRECT_URIS",
                "CORS_ALLOW_ORIGINS is set together with SPOTIFY_APPS: give each app its own \
                 SPOTIFY_APP_<NAME>_CORS_ALLOW_ORIGINS, and unset CORS_ALLOW_ORIGINS",
            ]
        );
        // What the shipped unit always sets, even to a file that is empty
        // or missing: not read.
        let c = three(&[("SPOTIFY_CLIENT_SECRET_FILE", "/nonexistent/client-secret")]);
        assert!(c.is_ok(), "{:?}", c.err());
        assert!(three(&[("SPOTIFY_CLIENT_SECRET", "x")]).is_ok());
    }

    #[test]
    fn app_variables_that_are_no_apps_setting_are_named() {
        assert_eq!(
            problems(&[
                ("SPOTIFY_APP_RADIO_CLIENT_ID", "id-radio"),
                ("SPOTIFY_APP_TV_CLIENT_IDD", "x"),
                ("SPOTIFY_APP_TV_REDIRECT_URI_FILE", "/x"),
            ]),
            [
                "SPOTIFY_APP_RADIO_CLIENT_ID is no setting of an app in SPOTIFY_APPS \
                 (SPOTIFY_APP_<NAME>_CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, \
                 ALLOWED_REDIRECT_URIS, CORS_ALLOW_ORIGINS, with NAME upper-cased and - as _)",
                "SPOTIFY_APP_TV_CLIENT_IDD is no setting of an app in SPOTIFY_APPS \
                 (SPOTIFY_APP_<NAME>_CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, \
                 ALLOWED_REDIRECT_URIS, CORS_ALLOW_ORIGINS, with NAME upper-cased and - as _)",
                "SPOTIFY_APP_TV_REDIRECT_URI_FILE is no setting of an app in SPOTIFY_APPS \
                 (SPOTIFY_APP_<NAME>_CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, \
                 ALLOWED_REDIRECT_URIS, CORS_ALLOW_ORIGINS, with NAME upper-cased and - as _)",
            ]
        );
        let errors = Config::from_vars([
            ("SPOTIFY_CLIENT_ID", "cid"),
            ("SPOTIFY_CLIENT_SECRET", "s"),
            ("SPOTIFY_REDIRECT_URI", "x://cb"),
            ("SPOTIFY_APP_TV_CLIENT_ID", "id-tv"),
        ])
        .unwrap_err();
        assert_eq!(
            errors.to_string(),
            "configuration error: SPOTIFY_APP_TV_CLIENT_ID is an app's setting, but \
             SPOTIFY_APPS is not set: list the apps there (SPOTIFY_APPS=name,name,…)"
        );
    }

    #[test]
    fn documents_may_name_an_apps_variables_and_their_pattern() {
        for word in [
            "SPOTIFY_APP_",
            "SPOTIFY_APP_TV_CLIENT_ID",
            "SPOTIFY_APP_CAR_2_CLIENT_SECRET_FILE",
            "SPOTIFY_APP_MUSIC_CORS_ALLOW_ORIGINS",
        ] {
            assert!(is_app_variable(word), "{word}");
        }
        for word in [
            "SPOTIFY_APPS",
            "SPOTIFY_APP_CLIENT_ID",
            "SPOTIFY_APP_TV_REDIRECT_URI_FILE",
            "SPOTIFY_APP_TV_SECRET",
        ] {
            assert!(!is_app_variable(word), "{word}");
        }
    }

    #[test]
    fn an_app_path_that_is_a_plain_path_is_refused() {
        assert_eq!(
            problems(&[("SWAP_PATH", "/token"), ("REFRESH_PATH", "/tv/token")]),
            [
                "SPOTIFY_APPS: app 'tv' is served at /tv/token, which is REFRESH_PATH; rename \
                 the app or change REFRESH_PATH"
            ]
        );
    }

    #[test]
    fn check_config_lists_every_app_with_secrets_redacted() {
        let text = three(&[("SPOTIFY_APP_TV_ALLOWED_REDIRECT_URIS", "tv://other")])
            .unwrap()
            .describe();
        for line in [
            "SPOTIFY_APPS=music,tv,car-2 (3 apps; a request that names none is served by music)\n",
            "SPOTIFY_APP_MUSIC_CLIENT_ID=id-music\n",
            "SPOTIFY_APP_MUSIC_CLIENT_SECRET=[redacted]\n",
            "SPOTIFY_APP_TV_REDIRECT_URI=tv://cb\n",
            "SPOTIFY_APP_TV_ALLOWED_REDIRECT_URIS=tv://other\n",
            "SPOTIFY_APP_CAR_2_CORS_ALLOW_ORIGINS=off\n",
            "app tv: /tv/swap, /tv/refresh; or client_id=id-tv on /swap, /refresh\n",
            "SPOTIFY_CLIENT_ID=(per app: SPOTIFY_APP_<NAME>_CLIENT_ID)\n",
            "SPOTIFY_CLIENT_SECRET=(not read: SPOTIFY_APPS is set)\n",
        ] {
            assert!(text.contains(line), "{line}{text}");
        }
        assert!(!text.contains("plugh"), "{text}");
    }
}
