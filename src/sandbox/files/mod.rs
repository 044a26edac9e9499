//! Files a job brings into its sandbox and files a run leaves behind for its answer.
//!
//! In: a request's `files` (name → text or base64) travel in the `Job`; the harness writes them
//! read-only into the script's working directory (`/tmp`) before the script's first line.
//! Out: what the script leaves in `OUTPUT_DIR` (and the figures it left open) comes back in the
//! envelope as `OutputFile`s, within the job's `output_files_bytes`.

pub mod input;
pub mod media_type;
pub mod name;
pub mod output;

pub use input::{FileContent, InputError, InputFileSettings, InputFiles};
pub use name::{FileName, NameError};
pub use output::{OutputFile, OutputFiles};

/// The folder a script leaves its files in: `output/` in the working directory it starts in.
pub const OUTPUT_DIR: &str = "/tmp/output";
