//! The job document a sandbox pod receives on stdin: the script, its resolved limits and its
//! input files, one `sandbox::Job` as JSON, byte for byte as the execution holds them.

use crate::sandbox::Job;

/// The largest job document a sandbox reads from stdin.
pub use crate::sandbox::MAX_JOB_BYTES;

/// A job document larger than a sandbox reads.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("the script and its limits take {bytes} bytes as JSON; a sandbox takes at most {max}")]
pub struct JobTooLarge {
    pub bytes: usize,
    pub max: usize,
}

/// The document for `job`; refused above what a sandbox reads.
pub fn job_document(job: &Job) -> Result<Vec<u8>, JobTooLarge> {
    // Strings and integers always serialise.
    let bytes = serde_json::to_vec(job).unwrap_or_default();
    if bytes.len() > MAX_JOB_BYTES {
        return Err(JobTooLarge { bytes: bytes.len(), max: MAX_JOB_BYTES });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::testing::limits;

    #[test]
    fn the_script_and_limits_travel_byte_for_byte_as_one_document() {
        let script = "def main():\n    return {'a': '$(HOME)', 'b': '$$', 'c': '$', 'd': 'é\\u0000'}\n";
        let bytes = job_document(&Job::new(script, limits())).expect("fits");
        let job: Job = serde_json::from_slice(&bytes).expect("a job document");
        assert_eq!(job, Job::new(script, limits()));
    }

    #[test]
    fn a_document_larger_than_a_sandbox_reads_is_refused() {
        let script = "x".repeat(MAX_JOB_BYTES);
        let err = job_document(&Job::new(script, limits())).expect_err("too large");
        assert_eq!(err.max, MAX_JOB_BYTES);
    }
}
