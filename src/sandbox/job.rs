//! The one document a sandbox is handed: the script, the limits it runs under, resolved, and
//! the files it finds in its working directory.
//! The same type crosses every boundary (the local supervisor, a ready sandbox waiting for its
//! job, a sandbox pod), serialised as JSON.

use serde::{Deserialize, Serialize};

use super::files::InputFiles;
use super::limits::Limits;

/// One execution's work: run `script` under `limits`, once, with `files` in its working
/// directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    pub script: String,
    pub limits: Limits,
    /// Left out of the document when there are none: a job without files reads as before.
    #[serde(default, skip_serializing_if = "InputFiles::is_empty")]
    pub files: InputFiles,
}

impl Job {
    /// A job without input files.
    pub fn new(script: impl Into<String>, limits: Limits) -> Self {
        Job { script: script.into(), limits, files: InputFiles::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::limits::testing::small_limits as limits;

    #[test]
    fn a_job_survives_json_byte_for_byte() {
        let files = serde_json::from_value(serde_json::json!({"in.csv": "a\n1\n", "b": {"base64": "AA=="}}));
        let job =
            Job { files: files.expect("files"), ..Job::new("def main():\n    return {'$$': '$(HOME)'}\n", limits()) };
        let text = serde_json::to_string(&job).expect("serialise");
        let back: Job = serde_json::from_str(&text).expect("deserialise");
        assert_eq!(back, job);
    }

    #[test]
    fn a_job_with_an_unknown_field_is_refused() {
        let mut value = serde_json::to_value(Job::new("", limits())).expect("value");
        value["extra"] = serde_json::json!(1);
        assert!(serde_json::from_value::<Job>(value).is_err());
    }

    #[test]
    fn a_job_without_files_is_the_document_it_always_was() {
        let text = serde_json::to_string(&Job::new("x", limits())).expect("json");
        assert!(!text.contains(r#""files""#), "{text}");
    }
}
