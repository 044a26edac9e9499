//! What a run returns of its output folder: the files, checked as the harness reported them,
//! and the names of those it left out; and how many bytes such a report may take.

use base64::Engine;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::media_type::media_type;
use super::name::{FileName, NameError};

/// Most files one run returns; the harness leaves out the rest (`harness/files.py`,
/// `_MAX_OUTPUT_FILES`): each costs the supervisor a name and a record beside its bytes.
pub const MAX_OUTPUT_FILES: usize = 64;
/// Most names `files_omitted` lists (`_MAX_OMITTED_NAMES`); more omitted files are not named.
pub const MAX_OMITTED_NAMES: usize = 64;
/// Report bytes one returned or omitted file may take beside its content: a name of at most
/// 255 bytes, JSON-escaped (six bytes for one at worst), and the keys around it.
const REPORT_BYTES_PER_FILE: u64 = 2048;

/// A file the script left in its output folder, as the response carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OutputFile {
    /// Its name in the output folder.
    #[schemars(with = "String")]
    pub name: FileName,
    /// Its size in bytes.
    #[schemars(with = "i64")]
    pub size: u64,
    /// Its media type, from its name's extension (`application/octet-stream` when unknown).
    pub media_type: String,
    /// Its bytes, standard base64 with padding.
    pub content_base64: String,
}

/// A file as the harness reports it: its name and bytes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportedFile {
    pub name: String,
    pub content_base64: String,
}

/// The files a run returns, and the names of those left out (past the cap, not regular files,
/// names that are not plain UTF-8 names).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutputFiles {
    pub files: Vec<OutputFile>,
    pub omitted: Vec<String>,
}

/// Why reported files were not what the harness writes: the report is forged.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReportedFilesError {
    #[error("more than {MAX_OUTPUT_FILES} files")]
    TooMany,
    #[error("more than {MAX_OMITTED_NAMES} omitted names")]
    TooManyOmitted,
    #[error("an output file's name: {0}")]
    Name(#[from] NameError),
    #[error("the output file {0:?} appears twice")]
    Repeated(String),
    #[error("the output file {0:?} is not valid base64")]
    Base64(String),
    #[error("the output files take more than the {0} bytes allowed")]
    AboveCap(u64),
}

impl OutputFiles {
    /// The files a harness reported, checked against what the harness writes: plain names,
    /// each once, valid base64, at most `MAX_OUTPUT_FILES` files of at most `cap` bytes in all,
    /// at most `MAX_OMITTED_NAMES` omitted names. Sizes and media types are decided here.
    pub fn accept(reported: Vec<ReportedFile>, omitted: Vec<String>, cap: u64) -> Result<Self, ReportedFilesError> {
        if reported.len() > MAX_OUTPUT_FILES {
            return Err(ReportedFilesError::TooMany);
        }
        if omitted.len() > MAX_OMITTED_NAMES {
            return Err(ReportedFilesError::TooManyOmitted);
        }
        let mut files: Vec<OutputFile> = Vec::with_capacity(reported.len());
        let mut total = 0u64;
        for ReportedFile { name, content_base64 } in reported {
            let name = FileName::try_from(name)?;
            if files.iter().any(|file| file.name == name) {
                return Err(ReportedFilesError::Repeated(name.into()));
            }
            let size = base64::engine::general_purpose::STANDARD
                .decode(&content_base64)
                .map_err(|_| ReportedFilesError::Base64(name.to_string()))?
                .len() as u64;
            total += size;
            if total > cap {
                return Err(ReportedFilesError::AboveCap(cap));
            }
            let media_type = media_type(name.as_str()).to_string();
            files.push(OutputFile { name, size, media_type, content_base64 });
        }
        Ok(OutputFiles { files, omitted })
    }

    pub fn truncated(&self) -> bool {
        !self.omitted.is_empty()
    }
}

/// The most bytes the files part of a harness's report takes when the files hold at most
/// `cap` bytes: their base64, and the names and keys of every returned or omitted file.
pub fn report_bytes(cap: u64) -> u64 {
    cap.div_ceil(3) * 4 + (MAX_OUTPUT_FILES + MAX_OMITTED_NAMES) as u64 * REPORT_BYTES_PER_FILE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reported(name: &str, base64: &str) -> ReportedFile {
        ReportedFile { name: name.into(), content_base64: base64.into() }
    }

    #[test]
    fn reported_files_get_their_size_and_media_type() {
        let out =
            OutputFiles::accept(vec![reported("plot.png", "iVBORw=="), reported("a", "")], vec![], 100).expect("valid");
        assert_eq!(out.files[0].size, 4);
        assert_eq!(out.files[0].media_type, "image/png");
        assert_eq!(out.files[1].size, 0);
        assert_eq!(out.files[1].media_type, "application/octet-stream");
        assert!(!out.truncated());
    }

    #[test]
    fn the_cap_counts_decoded_bytes_in_all() {
        let four = "AAAAAA==";
        assert!(OutputFiles::accept(vec![reported("a", four), reported("b", four)], vec![], 8).is_ok());
        let err = OutputFiles::accept(vec![reported("a", four), reported("b", four)], vec![], 7).expect_err("9 bytes");
        assert_eq!(err, ReportedFilesError::AboveCap(7));
    }

    #[test]
    fn what_the_harness_never_writes_is_refused() {
        let accept = |files: Vec<ReportedFile>, omitted: Vec<String>| OutputFiles::accept(files, omitted, 1 << 20);
        assert!(matches!(accept(vec![reported("../etc/passwd", "")], vec![]), Err(ReportedFilesError::Name(_))));
        assert!(matches!(accept(vec![reported("a", "%%%")], vec![]), Err(ReportedFilesError::Base64(_))));
        assert!(matches!(
            accept(vec![reported("a", ""), reported("a", "")], vec![]),
            Err(ReportedFilesError::Repeated(_))
        ));
        let many = (0..=MAX_OUTPUT_FILES).map(|i| reported(&i.to_string(), "")).collect();
        assert_eq!(accept(many, vec![]).expect_err("65 files"), ReportedFilesError::TooMany);
        let omitted = (0..=MAX_OMITTED_NAMES).map(|i| i.to_string()).collect();
        assert_eq!(accept(vec![], omitted).expect_err("65 names"), ReportedFilesError::TooManyOmitted);
    }

    #[test]
    fn omitted_names_make_the_files_truncated() {
        let out = OutputFiles::accept(vec![], vec!["big.bin".into()], 0).expect("valid");
        assert!(out.truncated());
    }

    #[test]
    fn the_report_bound_covers_base64_and_names() {
        assert_eq!(report_bytes(3), 4 + 128 * 2048);
        assert_eq!(report_bytes(8 << 20), (8u64 << 20).div_ceil(3) * 4 + 128 * 2048);
    }
}
