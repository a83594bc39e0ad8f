//! Reading the documents the consistency tests check: a file of the
//! repository with numbered lines, and the small scanners that find
//! variables, assignments and stated numbers in a line.

use std::path::Path;

/// The markers around the README's configuration table.
pub(super) const TABLE_BEGIN: &str = "<!-- settings table: begin -->\n";
pub(super) const TABLE_END: &str = "<!-- settings table: end -->";

/// One file of the repository, read at test time.
pub(super) struct Doc {
    pub(super) path: &'static str,
    pub(super) text: String,
}

impl Doc {
    pub(super) fn read(path: &'static str) -> Doc {
        let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
        let text = std::fs::read_to_string(&full)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", full.display()));
        Doc { path, text }
    }

    /// Where line `n` is, for a message: a row of the README's
    /// configuration table is changed in `SETTINGS`.
    pub(super) fn at(&self, n: usize) -> String {
        let table = self.text.find(TABLE_BEGIN).zip(self.text.find(TABLE_END));
        let line_of = |offset: usize| self.text[..offset].lines().count();
        match table {
            Some((begin, end)) if (line_of(begin)..=line_of(end)).contains(&n) => {
                format!(
                    "{}:{n} (a row of SETTINGS in src/config/settings.rs)",
                    self.path
                )
            }
            _ => format!("{}:{n}", self.path),
        }
    }

    /// Its lines, numbered from 1.
    pub(super) fn lines(&self) -> impl Iterator<Item = (usize, &str)> {
        self.text.lines().enumerate().map(|(i, line)| (i + 1, line))
    }

    /// The line and value of a unit's `key=` directive.
    pub(super) fn directive(&self, key: &str) -> (usize, &str) {
        let prefix = format!("{key}=");
        self.lines()
            .find_map(|(n, line)| Some((n, line.strip_prefix(&prefix)?)))
            .unwrap_or_else(|| {
                panic!(
                    "{}: no {key}= line; keep one, or change this test",
                    self.path
                )
            })
    }

    /// The whole number a unit's `key=` directive holds (a unit such as
    /// `s` after it is ignored).
    pub(super) fn directive_number(&self, key: &str) -> (usize, u64) {
        let (n, value) = self.directive(key);
        let number = number_at(value)
            .unwrap_or_else(|| panic!("{}:{n}: {key}={value} is not a number", self.path));
        (n, number)
    }
}

/// The number (digits, `,` between thousands) at the start of `text`.
pub(super) fn number_at(text: &str) -> Option<u64> {
    let len = text
        .find(|c: char| !(c.is_ascii_digit() || c == ','))
        .unwrap_or(text.len());
    text[..len].replace(',', "").parse().ok()
}

/// The numbers right before each `phrase` in `line`.
pub(super) fn numbers_before(line: &str, phrase: &str) -> Vec<u64> {
    line.match_indices(phrase)
        .filter_map(|(at, _)| {
            let head = &line[..at];
            let start = head
                .rfind(|c: char| !(c.is_ascii_digit() || c == ','))
                .map_or(0, |i| i + 1);
            number_at(&head[start..])
        })
        .collect()
}

/// The numbers right after each `phrase` in `line`.
pub(super) fn numbers_after(line: &str, phrase: &str) -> Vec<u64> {
    line.match_indices(phrase)
        .filter_map(|(at, _)| number_at(&line[at + phrase.len()..]))
        .collect()
}

/// The words of `line` that look like variables: capitals, digits and
/// `_`, with a `_` or followed by `=`.
pub(super) fn variables(line: &str) -> Vec<&str> {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(start) = rest.find(is_word) {
        let len = rest[start..]
            .find(|c| !is_word(c))
            .unwrap_or(rest.len() - start);
        let word = &rest[start..start + len];
        rest = &rest[start + len..];
        let capitals = word.starts_with(|c: char| c.is_ascii_uppercase())
            && word
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if capitals && (word.contains('_') || rest.starts_with('=')) {
            found.push(word);
        }
    }
    found
}

/// An `env.example` line `NAME=value` or `#NAME=value`: whether it is
/// commented out, the name and the value.
pub(super) fn assignment(line: &str) -> Option<(bool, &str, &str)> {
    let (commented, rest) = match line.strip_prefix('#') {
        Some(rest) => (true, rest),
        None => (false, line),
    };
    let (name, value) = rest.split_once('=')?;
    let is_name = name.starts_with(|c: char| c.is_ascii_uppercase())
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    is_name.then_some((commented, name, value))
}
