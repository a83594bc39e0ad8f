//! Tests that hold what an operator reads to the settings table and to the
//! server's own numbers: the README (its configuration table, the
//! variables it names, its Limits section), `systemd/env.example` and the
//! two units. Each failure names the file, the line and what to change.
//!
//! The rules (one test per bullet, three for the units):
//!
//! - **The README's configuration table** is exactly [`settings_table`].
//! - **Every variable named** — a word of capitals, digits and `_` that has
//!   a `_` or is followed by `=` — in the README, `env.example` or a unit
//!   is a setting, an alias, a `_FILE` form or a fallback of one, an app's
//!   setting (`SPOTIFY_APP_TV_CLIENT_ID`, or the pattern
//!   `SPOTIFY_APP_<NAME>_…`), or one of [`NOT_SETTINGS`], which says why
//!   each is there.
//! - **`env.example`**: a line `NAME=value` sets a variable; a line
//!   `#NAME=value` (`#` right before the name) is commented out and shows
//!   what applies while it stays so: for a setting with a default, exactly
//!   that default; for one without (required, or off when unset) an
//!   example. Every value shown is one the server accepts. Examples for a
//!   setting with a default go in the comment above, as prose.
//! - **Stated defaults**: `NAME (default V` in any of these files, and in
//!   `env.example` also `(default V` after another word in the comment
//!   above a `NAME=` line (then of that line's setting), must be the
//!   setting's default; `N at once` must be the burst of `M a minute` said
//!   on the same line, or else of the default rate.
//! - **Units**: the socket's `Backlog=` is [`crate::http::LISTEN_BACKLOG`]
//!   and its `ListenStream=` the default `LISTEN_ADDR`; the service's
//!   `LimitNOFILE=` and `MemoryMax=` are what the README and
//!   `MAX_CONNECTIONS` say they are, and the connections they leave with
//!   the default workers are the number they state (`N under the shipped
//!   unit`, `N connections by the open files`), as is each line
//!   `MemoryMax=NM: A connections (B on an HTTPS port)` of the unit's
//!   comments; `per worker and R` is the reserve `MAX_CONNECTIONS` keeps; `TasksMax=` exceeds the default workers plus
//!   the margin `env.example` asks for; `TimeoutStopSec=` exceeds the default
//!   `UPSTREAM_TIMEOUT_SECS` plus the shutdown grace the unit and the
//!   README state (the same in both).
//! - **README Limits**: a row naming a setting with a numeric default
//!   states that default first; the listen-backlog row states
//!   `LISTEN_BACKLOG`.
//!
//! Not checked: numbers that are the code's and not a setting's (the
//! thread count the README gives, the queue and head limits).

mod text;

use super::apps::is_app_variable;
use super::setting::Setting;
use super::settings::{DEFAULT_LISTEN_ADDR, SETTINGS, settings_table};
use text::{
    Doc, TABLE_BEGIN, TABLE_END, assignment, number_at, numbers_after, numbers_before, variables,
};

const README: &str = "README.md";
const ENV_EXAMPLE: &str = "systemd/env.example";
const SERVICE: &str = "systemd/spotify-token-swap.service";
const SOCKET: &str = "systemd/spotify-token-swap.socket";

/// Variables the documents may name that are not settings, and why.
const NOT_SETTINGS: &[(&str, &str)] = &[
    ("LISTEN_FDS", "socket activation (systemd)"),
    ("LISTEN_PID", "socket activation (systemd)"),
    ("WATCHDOG_USEC", "the watchdog interval (systemd)"),
    ("CREDENTIALS_DIRECTORY", "LoadCredential= copies (systemd)"),
    ("READY", "the sd_notify message READY=1"),
    ("RLIMIT_NOFILE", "the kernel's open-files limit"),
    ("AF_INET", "RestrictAddressFamilies= (systemd)"),
    ("AF_INET6", "RestrictAddressFamilies= (systemd)"),
    ("AF_UNIX", "RestrictAddressFamilies= (systemd)"),
    ("REFRESH_TOKEN", "a shell variable of a curl example"),
    ("QUOTA_EXCEEDED", "Spotify's reason for a quota 429"),
    // Proxy variables the server ignores (UPSTREAM_PROXY sets a proxy).
    ("HTTP_PROXY", "ignored proxy variable"),
    ("HTTPS_PROXY", "ignored proxy variable"),
    ("ALL_PROXY", "ignored proxy variable"),
    ("NO_PROXY", "ignored proxy variable"),
    // Knobs of the tests and scripts (docs/building.md), not of the server.
    ("STS_BIN", "test knob"),
    ("STS_RUNNER", "test knob"),
    ("STS_PER_TURN", "test knob"),
    ("STS_CHROMIUM", "test knob"),
    ("STS_REQUIRE_BROWSER", "test knob"),
    ("STS_REQUIRE_DNS_TEST", "test knob"),
    ("STS_REQUIRE_NETNS_TEST", "test knob"),
];

/// Fails with every problem found, one per line.
fn verdict(problems: Vec<String>) {
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

/// The setting `name` gives: its own name, an alias, its `_FILE` form or
/// its fallback.
fn owner(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| {
        s.name == name
            || s.alternatives().iter().any(|a| a == name)
            || s.form.fallback.as_ref().is_some_and(|f| f.name == name)
    })
}

/// The default of the setting `name`, as a whole number.
fn default_number(name: &str) -> u64 {
    let setting = owner(name).unwrap_or_else(|| panic!("{name} is not a setting"));
    setting
        .default()
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("{name} has no numeric default"))
}

#[test]
fn readme_table_matches_the_settings() {
    let readme = Doc::read(README).text;
    let start = readme
        .find(TABLE_BEGIN)
        .expect("README.md lacks the begin marker")
        + TABLE_BEGIN.len();
    let len = readme[start..]
        .find(TABLE_END)
        .expect("README.md lacks the end marker");
    let expected = settings_table();
    assert!(
        readme[start..start + len] == expected,
        "README.md's configuration table differs from SETTINGS in src/config/settings.rs; \
         between its markers it should read:\n{expected}"
    );
}

#[test]
fn documents_name_only_settings() {
    let mut problems = Vec::new();
    for doc in [README, ENV_EXAMPLE, SERVICE, SOCKET].map(Doc::read) {
        for (n, line) in doc.lines() {
            for word in variables(line) {
                let named = owner(word).is_some() || is_app_variable(word);
                if !named && !NOT_SETTINGS.iter().any(|(name, _)| *name == word) {
                    problems.push(format!(
                        "{}:{n}: names {word}, which is no setting (nor an alias, `_FILE` form \
                         or fallback of one): write the setting it means, or add it to \
                         NOT_SETTINGS in src/config/consistency/mod.rs with the reason",
                        doc.path
                    ));
                }
            }
        }
    }
    let overlap = NOT_SETTINGS
        .iter()
        .filter(|(name, _)| owner(name).is_some());
    problems.extend(overlap.map(|(name, _)| format!("NOT_SETTINGS lists {name}, a setting")));
    verdict(problems);
}

#[test]
fn env_example_shows_defaults_and_values_the_server_accepts() {
    let doc = Doc::read(ENV_EXAMPLE);
    let mut problems = Vec::new();
    for (n, line) in doc.lines() {
        let Some((commented, name, value)) = assignment(line) else {
            continue;
        };
        let at = format!("{}: `{line}`", doc.at(n));
        let Some(setting) = owner(name) else {
            problems.push(format!("{at}: {name} is no setting; remove the line"));
            continue;
        };
        if let (true, Some(default)) = (commented && setting.name == name, setting.default()) {
            if value != default {
                problems.push(format!(
                    "{at} shows `{value}`, but {name}'s default is `{default}`: write \
                     `#{name}={default}` (a commented-out line shows the default; give an \
                     example in the comment above)"
                ));
            }
        }
        if let Err(errors) = accepts(name, value) {
            problems.push(format!(
                "{at}: the server refuses it ({errors}); fix the value"
            ));
        }
    }
    verdict(problems);
}

/// Whether the server starts with `name=value` on top of the required
/// settings.
fn accepts(name: &str, value: &str) -> Result<(), super::ConfigErrors> {
    let own = owner(name).map(|s| s.name);
    let mut vars: Vec<(&str, &str)> = super::testing::base()
        .into_iter()
        .filter(|(base, _)| owner(base).map(|s| s.name) != own)
        .collect();
    vars.push((name, value));
    super::Config::from_vars(vars).map(drop)
}

#[test]
fn stated_defaults_and_bursts_are_the_settings() {
    let mut problems = Vec::new();
    for doc in [README, ENV_EXAMPLE, SERVICE, SOCKET].map(Doc::read) {
        let lines: Vec<(usize, &str)> = doc.lines().collect();
        for (i, &(n, line)) in lines.iter().enumerate() {
            for (name, value) in stated_defaults(&doc, &lines[i..]) {
                let at = doc.at(n);
                match owner(&name).and_then(Setting::default) {
                    Some(default) if default == value => {}
                    Some(default) => problems.push(format!(
                        "{at}: says {name}'s default is `{value}`; it is `{default}`: write that"
                    )),
                    None => problems.push(format!(
                        "{at}: states a default `{value}` for {name}, which has none: drop it"
                    )),
                }
            }
            let rate = numbers_before(line, " a minute")
                .first()
                .copied()
                .unwrap_or_else(|| default_number("RATE_LIMIT_PER_MINUTE"));
            let per_minute = u32::try_from(rate).expect("a rate per minute fits in u32");
            let burst = u64::from(crate::ratelimit::burst(per_minute));
            for stated in numbers_before(line, " at once") {
                if stated != burst {
                    problems.push(format!(
                        "{}: says {stated} at once; {rate} a minute allows {burst} at once \
                         (ratelimit::burst): write {burst}",
                        doc.at(n)
                    ));
                }
            }
        }
    }
    verdict(problems);
}

/// The defaults the first of `lines` states, with the setting each is of:
/// `NAME (default V`, or in `env.example` `(default V` after another word,
/// of the next `NAME=` line's setting.
fn stated_defaults(doc: &Doc, lines: &[(usize, &str)]) -> Vec<(String, String)> {
    let line = lines[0].1;
    let mut found = Vec::new();
    for (at, phrase) in line.match_indices("(default ") {
        let value = line[at + phrase.len()..]
            .split([')', ';', ' '])
            .next()
            .unwrap_or("")
            .trim_end_matches([',', '.'])
            .trim_matches('`');
        let before = line[..at].trim_end().trim_end_matches('`');
        let named = before.rsplit([' ', '`', '#', '(']).next().unwrap_or("");
        let name = if before.ends_with(|c: char| c.is_ascii_uppercase()) && !named.is_empty() {
            Some(named.to_string())
        } else if doc.path == ENV_EXAMPLE && line.starts_with('#') {
            lines
                .iter()
                .find_map(|(_, next)| Some(assignment(next)?.1.to_string()))
        } else {
            None
        };
        found.extend(name.map(|name| (name, value.to_string())));
    }
    found
}

#[test]
fn the_socket_unit_listens_as_the_server_does() {
    let socket = Doc::read(SOCKET);
    let mut problems = Vec::new();
    let (n, backlog) = socket.directive_number("Backlog");
    let ours = crate::http::LISTEN_BACKLOG as u64;
    if backlog != ours {
        problems.push(format!(
            "{SOCKET}:{n}: Backlog={backlog}, but the server listens again with a backlog of \
             {ours} (crate::http::LISTEN_BACKLOG): write Backlog={ours}"
        ));
    }
    let (n, stream) = socket.directive("ListenStream");
    if stream != DEFAULT_LISTEN_ADDR {
        problems.push(format!(
            "{SOCKET}:{n}: ListenStream={stream}, but LISTEN_ADDR's default is \
             {DEFAULT_LISTEN_ADDR}: write ListenStream={DEFAULT_LISTEN_ADDR}"
        ));
    }
    verdict(problems);
}

/// The default `MAX_CONNECTIONS` under `LimitNOFILE=open_files` and,
/// if given, `MemoryMax=` of `memory_mib` MiB, with the default workers.
fn default_connections(open_files: u64, memory_mib: Option<u64>, tls: bool) -> u64 {
    let limits = crate::http::ProcessLimits {
        open_files: Some(open_files),
        memory: memory_mib.map(|mib| mib << 20),
    };
    let workers = default_number("WORKER_THREADS") as usize;
    crate::http::default_max_connections(limits, workers, tls).connections as u64
}

/// The unit's `MemoryMax=`, in MiB (the unit writes it with `M`).
fn memory_max_mib(service: &Doc) -> u64 {
    let (n, value) = service.directive("MemoryMax");
    value
        .strip_suffix('M')
        .and_then(number_at)
        .unwrap_or_else(|| panic!("{SERVICE}:{n}: write MemoryMax= in M (MiB), not {value}"))
}

#[test]
fn open_files_and_connections_agree_with_the_service_unit() {
    let service = Doc::read(SERVICE);
    let (_, limit) = service.directive_number("LimitNOFILE");
    let memory = memory_max_mib(&service);
    let by_files = default_connections(limit, None, false);
    let shipped = default_connections(limit, Some(memory), false);
    // What the open-files limit leaves aside besides the workers.
    let workers = default_number("WORKER_THREADS");
    let probe = 100_000;
    let reserve = probe - workers - default_connections(probe, None, false);
    let mut problems = Vec::new();
    for doc in [Doc::read(README), service] {
        for (n, line) in doc.lines() {
            let at = doc.at(n);
            let mut check = |stated: Vec<u64>, truth: u64, what: &str| {
                for number in stated.into_iter().filter(|&s| s != truth) {
                    problems.push(format!(
                        "{at}: says {number}; {what} is {truth}: write that"
                    ));
                }
            };
            check(
                numbers_after(line, "LimitNOFILE="),
                limit,
                "the unit's LimitNOFILE=",
            );
            check(
                numbers_before(line, " in the unit"),
                limit,
                "the unit's LimitNOFILE=",
            );
            let default = "MAX_CONNECTIONS under the unit's LimitNOFILE=, MemoryMax= and default \
                           workers";
            check(
                numbers_before(line, " under the shipped unit"),
                shipped,
                default,
            );
            let what = "the descriptors MAX_CONNECTIONS leaves besides one per worker";
            check(numbers_after(line, "per worker and "), reserve, what);
            let what = "MAX_CONNECTIONS under the unit's LimitNOFILE= alone";
            check(
                numbers_before(line, " connections by the open files"),
                by_files,
                what,
            );
            if doc.path == README {
                let what = "the unit's MemoryMax= (MiB)";
                check(numbers_after(line, "MemoryMax="), memory, what);
            }
            // `MemoryMax=NM: A connections (B on an HTTPS port)`, in the
            // unit's comments: what each value implies.
            let Some(mib) = numbers_after(line, "#   MemoryMax=").first().copied() else {
                continue;
            };
            let what = format!("MAX_CONNECTIONS under MemoryMax={mib}M");
            let plain = default_connections(limit, Some(mib), false);
            check(numbers_before(line, " connections ("), plain, &what);
            let tls = default_connections(limit, Some(mib), true);
            check(numbers_before(line, " on an HTTPS port"), tls, &what);
        }
    }
    verdict(problems);
}

#[test]
fn threads_and_stop_time_fit_the_service_unit() {
    let (service, env_example, readme) = (
        Doc::read(SERVICE),
        Doc::read(ENV_EXAMPLE),
        Doc::read(README),
    );
    let mut problems = Vec::new();
    let workers = default_number("WORKER_THREADS");
    let margin = env_example
        .lines()
        .find_map(|(_, line)| numbers_after(line, "above this + ").first().copied())
        .expect("env.example no longer says how far above WORKER_THREADS TasksMax= must be");
    let (n, tasks) = service.directive_number("TasksMax");
    if tasks <= workers + margin {
        problems.push(format!(
            "{SERVICE}:{n}: TasksMax={tasks}, but {ENV_EXAMPLE} asks for more than WORKER_THREADS \
             ({workers} by default) + {margin}: raise it"
        ));
    }
    let grace = |doc: &Doc, phrase: &str| {
        doc.lines()
            .find_map(|(n, line)| Some((n, *numbers_after(line, phrase).first()?)))
            .unwrap_or_else(|| panic!("{}: no `{phrase}N s` (the shutdown grace)", doc.path))
    };
    let (_, unit_grace) = grace(&service, "UPSTREAM_TIMEOUT_SECS + ");
    let (line, readme_grace) = grace(&readme, "`UPSTREAM_TIMEOUT_SECS` + ");
    if readme_grace != unit_grace {
        problems.push(format!(
            "{README}:{line}: shutdown takes UPSTREAM_TIMEOUT_SECS + {readme_grace} s, the unit \
             says + {unit_grace} s: make both say the server's shutdown grace \
             (SHUTDOWN_GRACE, src/http/)"
        ));
    }
    let (n, stop) = service.directive_number("TimeoutStopSec");
    let upstream = default_number("UPSTREAM_TIMEOUT_SECS");
    if stop <= upstream + unit_grace {
        problems.push(format!(
            "{SERVICE}:{n}: TimeoutStopSec={stop}s, but a shutdown may take \
             UPSTREAM_TIMEOUT_SECS ({upstream} by default) + {unit_grace} s: raise it"
        ));
    }
    verdict(problems);
}

/// The rows of the README's Limits table that state a default checked here.
const LIMITS_ROWS: [&str; 6] = [
    "WORKER_THREADS",
    "LISTEN_BACKLOG",
    "MAX_CONNECTIONS_PER_CLIENT",
    "RATE_LIMIT_PER_MINUTE",
    "UPSTREAM_TIMEOUT_SECS",
    "DEVICE_MAX_PENDING",
];

#[test]
fn readme_limits_state_the_defaults() {
    let readme = Doc::read(README);
    let mut in_limits = false;
    let (mut problems, mut checked) = (Vec::new(), Vec::new());
    for (n, line) in readme.lines() {
        if line.starts_with("## ") {
            in_limits = line == "## Limits";
        }
        let cells: Vec<&str> = line.split(" | ").collect();
        let [first, default, ..] = cells.as_slice() else {
            continue;
        };
        if !in_limits {
            continue;
        }
        let stated = number_at(default.trim_start_matches(['`', ' ']));
        let named = variables(first).into_iter().filter_map(owner);
        let mut expected: Vec<(String, u64)> = named
            .filter(|s| s.default().is_some_and(|d| d.parse::<u64>().is_ok()))
            .map(|s| (s.name.to_string(), default_number(s.name)))
            .collect();
        if first.contains("listen backlog") {
            expected.push(("LISTEN_BACKLOG".into(), crate::http::LISTEN_BACKLOG as u64));
        }
        for (what, truth) in expected {
            if stated != Some(truth) {
                problems.push(format!(
                    "{README}:{n}: the Limits row for {what} states {default:?}; the default \
                     is {truth}: start the cell with {truth}"
                ));
            }
            checked.push(what);
        }
    }
    for row in LIMITS_ROWS
        .iter()
        .filter(|row| !checked.iter().any(|c| c == *row))
    {
        problems.push(format!(
            "{README}: the table under `## Limits` has no row for {row} (first cell naming \
             it, second its default): put it back, or drop it from LIMITS_ROWS"
        ));
    }
    verdict(problems);
}
