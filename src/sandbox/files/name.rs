//! A file's name as a sandbox knows it: one plain name in a folder, never a path.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest name, in bytes (NAME_MAX of Linux file systems).
pub const MAX_NAME_BYTES: usize = 255;

/// A plain file name: not empty, at most `MAX_NAME_BYTES` bytes, no `/` or NUL, not `.` or
/// `..`. Checked wherever one is made or read back, so a name can never lead out of its folder.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FileName(String);

/// Why a name is not a plain file name.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("a file name must not be empty")]
    Empty,
    #[error("the file name {0:?} is longer than {MAX_NAME_BYTES} bytes")]
    TooLong(String),
    #[error("the file name {0:?} contains '/': a file name is one name, never a path")]
    Slash(String),
    #[error("the file name {0:?} contains a NUL character")]
    Nul(String),
    #[error("{0:?} is not a file name ('.' and '..' name folders)")]
    Dots(String),
}

impl FileName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for FileName {
    type Error = NameError;

    fn try_from(name: String) -> Result<Self, NameError> {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.len() > MAX_NAME_BYTES {
            let shown: String = name.chars().take(40).collect();
            return Err(NameError::TooLong(format!("{shown}…")));
        }
        if name.contains('/') {
            return Err(NameError::Slash(name));
        }
        if name.contains('\0') {
            return Err(NameError::Nul(name));
        }
        if name == "." || name == ".." {
            return Err(NameError::Dots(name));
        }
        Ok(FileName(name))
    }
}

impl From<FileName> for String {
    fn from(name: FileName) -> String {
        name.0
    }
}

impl fmt::Display for FileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> Result<FileName, NameError> {
        FileName::try_from(text.to_string())
    }

    #[test]
    fn plain_names_are_file_names() {
        for text in ["data.csv", ".hidden", "a b (1).txt", "résumé.pdf", "...", "x".repeat(255).as_str()] {
            assert_eq!(name(text).map(String::from).as_deref(), Ok(text));
        }
    }

    #[test]
    fn paths_dots_nul_empty_and_long_names_are_refused() {
        assert_eq!(name(""), Err(NameError::Empty));
        assert!(matches!(name("a/b"), Err(NameError::Slash(_))));
        assert!(matches!(name("/etc/passwd"), Err(NameError::Slash(_))));
        assert!(matches!(name("../x"), Err(NameError::Slash(_))));
        assert!(matches!(name("a\0b"), Err(NameError::Nul(_))));
        assert_eq!(name("."), Err(NameError::Dots(".".into())));
        assert_eq!(name(".."), Err(NameError::Dots("..".into())));
        assert!(matches!(name(&"x".repeat(256)), Err(NameError::TooLong(_))));
        // 128 two-byte characters: 256 bytes.
        assert!(matches!(name(&"é".repeat(128)), Err(NameError::TooLong(_))));
    }

    #[test]
    fn a_name_is_checked_when_read_from_json() {
        assert!(serde_json::from_str::<FileName>(r#""ok.txt""#).is_ok());
        let err = serde_json::from_str::<FileName>(r#""../../etc/passwd""#).expect_err("a path");
        assert!(err.to_string().contains("never a path"), "{err}");
    }
}
