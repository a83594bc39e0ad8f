//! Reading the documents the consistency tests check.

use std::path::Path;

/// The markers around the README's configuration table.
pub(super) const TABLE_BEGIN: &str = "<!-- settings table: begin -->\n";
pub(super) const TABLE_END: &str = "<!-- settings table: end -->";

/// One file of the repository, read at test time.
pub(super) struct Doc {
    pub(super) text: String,
}

impl Doc {
    pub(super) fn read(path: &'static str) -> Doc {
        let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
        let text = std::fs::read_to_string(&full)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", full.display()));
        Doc { text }
    }
}
