//! A job's input files: their form in a request and in a job document, and the caps one
//! request's files must keep (pure checks; the HTTP layer answers 400 with their message).

use std::collections::BTreeMap;

use base64::Engine;
use clap::Args;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::name::{FileName, NameError};
use crate::sandbox::limits::Limits;

const MIB: u64 = 1024 * 1024;

/// One input file's content: text, written as UTF-8, or bytes, as standard base64 with padding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
#[schemars(deny_unknown_fields)]
pub enum FileContent {
    /// The file's text.
    Text(String),
    /// The file's bytes.
    Base64 {
        #[schemars(extend("format" = "byte"))]
        base64: String,
    },
}

/// The input files of one job, by name, each name once.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
#[schemars(inline)]
pub struct InputFiles(#[schemars(with = "BTreeMap<String, FileContent>")] BTreeMap<FileName, FileContent>);

/// The server's caps on a request's input files.
#[derive(Args, Clone, Debug)]
pub struct InputFileSettings {
    /// Most files one request may send in `files` (400 past it).
    #[arg(long, env = "PYEXEC_MAX_INPUT_FILES", default_value_t = 32)]
    pub max_input_files: usize,
    /// Most bytes one request's files may hold in all, decoded (400 past it). In the body, base64
    /// takes 4/3 of the bytes it holds: --max-request-bytes must leave room for it.
    #[arg(long, env = "PYEXEC_MAX_INPUT_FILES_BYTES", default_value_t = 8 << 20)]
    pub max_input_files_bytes: u64,
}

/// Why a request's files are refused.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("\"files\" must be an object mapping file names to contents, not {0}")]
    NotAnObject(&'static str),
    #[error("files: {0}")]
    Name(#[from] NameError),
    #[error("files[{0:?}] must be a string (its text) or {{\"base64\": \"…\"}} (its bytes)")]
    Content(String),
    #[error("files[{name:?}].base64 is not valid base64 ({source}): send the standard alphabet with padding and no line breaks (base64 -w0)")]
    Base64 {
        name: String,
        #[source]
        source: base64::DecodeError,
    },
    #[error("files: \"output\" is the folder the script's files come back from; give the file another name")]
    Reserved,
    #[error("files: {count} files sent; this server takes at most {max} (--max-input-files)")]
    TooMany { count: usize, max: usize },
    #[error("files: {bytes} bytes sent in all (decoded); this server takes at most {max} (--max-input-files-bytes)")]
    TooLarge { bytes: u64, max: u64 },
    #[error("files[{name:?}] holds {bytes} bytes, more than limits.file_size_mb ({mb} MiB) lets a file hold")]
    AboveFileSize { name: String, bytes: u64, mb: u64 },
    #[error("files: {bytes} bytes in all, more than the script's /tmp holds (limits.tmp_mb, {mb} MiB)")]
    AboveTmp { bytes: u64, mb: u64 },
}

impl InputFiles {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&FileName, &FileContent)> {
        self.0.iter()
    }

    /// A request's `files` value: an object whose keys are file names and whose values are a
    /// string (text) or `{"base64": "…"}`.
    pub fn from_json(value: Value) -> Result<Self, InputError> {
        let Value::Object(entries) = value else {
            return Err(InputError::NotAnObject(json_type(&value)));
        };
        let mut files = BTreeMap::new();
        for (name, content) in entries {
            let name = FileName::try_from(name)?;
            let content = match content {
                Value::String(text) => FileContent::Text(text),
                Value::Object(mut fields) if fields.len() == 1 => match fields.remove("base64") {
                    Some(Value::String(base64)) => FileContent::Base64 { base64 },
                    _ => return Err(InputError::Content(name.into())),
                },
                _ => return Err(InputError::Content(name.into())),
            };
            files.insert(name, content);
        }
        Ok(InputFiles(files))
    }

    /// Checks the files against the server's caps and the run's limits (each file within
    /// `file_size_mb`, all of them within `tmp_mb`); returns their decoded size in all.
    pub fn check(&self, caps: &InputFileSettings, limits: &Limits) -> Result<u64, InputError> {
        if self.0.len() > caps.max_input_files {
            return Err(InputError::TooMany { count: self.0.len(), max: caps.max_input_files });
        }
        let mut total = 0u64;
        for (name, content) in &self.0 {
            if name.as_str() == "output" {
                return Err(InputError::Reserved);
            }
            let bytes = decoded_len(name, content)?;
            if bytes > limits.file_size_mb * MIB {
                return Err(InputError::AboveFileSize { name: name.to_string(), bytes, mb: limits.file_size_mb });
            }
            total += bytes;
        }
        if total > caps.max_input_files_bytes {
            return Err(InputError::TooLarge { bytes: total, max: caps.max_input_files_bytes });
        }
        if total > limits.tmp_mb * MIB {
            return Err(InputError::AboveTmp { bytes: total, mb: limits.tmp_mb });
        }
        Ok(total)
    }
}

/// The bytes a file's content holds once decoded; refused when its base64 is not valid.
fn decoded_len(name: &FileName, content: &FileContent) -> Result<u64, InputError> {
    match content {
        FileContent::Text(text) => Ok(text.len() as u64),
        FileContent::Base64 { base64 } => base64::engine::general_purpose::STANDARD
            .decode(base64)
            .map(|bytes| bytes.len() as u64)
            .map_err(|source| InputError::Base64 { name: name.to_string(), source }),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::limits::testing::default_limits;
    use serde_json::json;

    fn caps() -> InputFileSettings {
        InputFileSettings { max_input_files: 3, max_input_files_bytes: 100 }
    }

    fn files(value: Value) -> InputFiles {
        InputFiles::from_json(value).expect("valid files")
    }

    #[test]
    fn text_and_base64_contents_are_read_and_counted_decoded() {
        let files = files(json!({"a.csv": "x,y\n1,2\n", "b.bin": {"base64": "AAEC/w=="}}));
        assert_eq!(files.len(), 2);
        assert_eq!(files.check(&caps(), &default_limits()).expect("within the caps"), 8 + 4);
    }

    #[test]
    fn a_job_document_carries_the_files_as_they_were_sent() {
        let files = files(json!({"a.txt": "é", "b": {"base64": "AA=="}}));
        let text = serde_json::to_string(&files).expect("json");
        assert_eq!(text, r#"{"a.txt":"é","b":{"base64":"AA=="}}"#);
        assert_eq!(serde_json::from_str::<InputFiles>(&text).expect("read back"), files);
    }

    #[test]
    fn bad_names_and_shapes_are_refused_with_what_is_wrong() {
        let err = |value: Value| InputFiles::from_json(value).expect_err("refused").to_string();
        assert!(err(json!({"../x": "a"})).contains("never a path"));
        assert!(err(json!({"": "a"})).contains("must not be empty"));
        assert!(err(json!({"..": "a"})).contains("name folders"));
        assert!(err(json!({"a": 1})).starts_with("files[\"a\"] must be a string"));
        assert!(err(json!({"a": {"base64": "AA==", "x": 1}})).starts_with("files[\"a\"] must be"));
        assert!(err(json!({"a": {"text": "x"}})).starts_with("files[\"a\"] must be"));
        assert_eq!(err(json!(["a"])), "\"files\" must be an object mapping file names to contents, not an array");
    }

    #[test]
    fn bad_base64_is_refused_naming_the_file() {
        for bad in ["AAE", "A===", "AA==\n", "not base64!", "AA== "] {
            let files = files(json!({"f.bin": {"base64": bad}}));
            let err = files.check(&caps(), &default_limits()).expect_err(bad).to_string();
            assert!(err.starts_with("files[\"f.bin\"].base64 is not valid base64"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_count_and_size_caps_are_kept() {
        let four = files(json!({"a": "", "b": "", "c": "", "d": ""}));
        let err = four.check(&caps(), &default_limits()).expect_err("four files");
        assert_eq!(err.to_string(), "files: 4 files sent; this server takes at most 3 (--max-input-files)");
        let large = files(json!({"a": "x".repeat(60), "b": {"base64": "A".repeat(56)}}));
        let err = large.check(&caps(), &default_limits()).expect_err("102 bytes");
        assert!(matches!(err, InputError::TooLarge { bytes: 102, max: 100 }), "{err}");
        let exact = files(json!({"a": "x".repeat(58), "b": {"base64": "A".repeat(56)}}));
        assert_eq!(exact.check(&caps(), &default_limits()).expect("100 bytes"), 100);
    }

    #[test]
    fn files_must_fit_the_runs_file_size_and_tmp_limits() {
        let roomy = InputFileSettings { max_input_files: 10, max_input_files_bytes: 1 << 30 };
        let limits = Limits { file_size_mb: 1, tmp_mb: 2, ..default_limits() };
        let big = files(json!({"big": "x".repeat(MIB as usize + 1)}));
        assert!(matches!(big.check(&roomy, &limits), Err(InputError::AboveFileSize { .. })));
        let mb = "x".repeat(MIB as usize);
        let many = files(json!({"a": mb, "b": mb, "c": "x"}));
        assert!(matches!(many.check(&roomy, &limits), Err(InputError::AboveTmp { .. })));
    }

    #[test]
    fn output_is_not_an_input_files_name() {
        let files = files(json!({"output": "x"}));
        assert!(matches!(files.check(&caps(), &default_limits()), Err(InputError::Reserved)));
    }
}
