//! Tests that hold what an operator reads to the settings table: the
//! README's configuration table is exactly [`settings_table`].

mod text;

use super::settings::settings_table;
use text::{Doc, TABLE_BEGIN, TABLE_END};

const README: &str = "README.md";

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
