//! A sandbox pod's one job, delivered on its stdin (`pyexec sandbox --job-on-stdin`): what the
//! pod says when it is ready for it, how much it reads, and what it answers when no job, or no
//! valid job, came. The controller builds on these constants; they are the protocol.

use std::io::Read;

use super::job::Job;

/// The line written to stderr once the sandbox is prepared (its interpreter started, the
/// preloaded modules imported), before stdin is read: the controller writes the job after it.
pub const READY_MARKER: &str = "pyexec-sandbox: ready for one job";

/// Largest job document read from stdin, in bytes; a longer one is refused unread. A
/// PythonExecution must fit etcd's 1.5 MiB request limit, and JSON escaping at most sextuples a
/// script (a control character becomes `\u00XX`): every job a controller can hold fits.
pub const MAX_JOB_BYTES: usize = 16 << 20;

/// Exit code when stdin ended with no byte at all (the attach session closed, or SIGTERM came,
/// before a job): proof that no job ran, so the job may go to another pod.
pub const NO_JOB_EXIT_CODE: u8 = 3;

/// The termination message (`--termination-log`) when no job came; no envelope is printed.
pub const NO_JOB_MESSAGE: &str = "no_job: no job arrived on stdin; nothing ran";

/// Exit code when stdin held something that is not one job document (not JSON, cut short, an
/// unknown field, larger than MAX_JOB_BYTES): a sandbox_failure envelope names the problem.
/// Bytes did arrive, so unlike NO_JOB_EXIT_CODE this is no proof about what the sender sent.
pub const INVALID_JOB_EXIT_CODE: u8 = 4;

/// What arrived on stdin.
#[derive(Debug)]
pub enum Delivery {
    /// End of file before any byte.
    Nothing,
    Job(Box<Job>),
    Invalid(InvalidJob),
}

/// Why what arrived is not a job.
#[derive(Debug, thiserror::Error)]
pub enum InvalidJob {
    #[error("the job on stdin is larger than {MAX_JOB_BYTES} bytes")]
    TooLarge,
    #[error("the job on stdin is not a job (one JSON document: script and limits): {0}")]
    NotAJob(#[source] serde_json::Error),
    #[error("reading the job from stdin: {0}")]
    Unreadable(#[source] std::io::Error),
}

/// Reads this process's stdin to its end on a thread of its own: a read of stdin cannot be
/// cancelled, and one on tokio's blocking pool would hold the runtime's shutdown until stdin
/// ends (after a SIGTERM while waiting, say).
pub async fn from_stdin() -> Delivery {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let reader = std::thread::Builder::new().name("job-on-stdin".into()).spawn(move || {
        let _ = sender.send(read(std::io::stdin().lock()));
    });
    if let Err(err) = reader {
        return Delivery::Invalid(InvalidJob::Unreadable(err));
    }
    receiver.await.unwrap_or_else(|_| {
        Delivery::Invalid(InvalidJob::Unreadable(std::io::Error::other("the thread reading stdin ended early")))
    })
}

/// Reads `input` to its end (at most MAX_JOB_BYTES + 1 bytes) and says what it held.
pub fn read(input: impl Read) -> Delivery {
    let mut bytes = Vec::new();
    match input.take(MAX_JOB_BYTES as u64 + 1).read_to_end(&mut bytes) {
        Ok(_) => parse(&bytes),
        Err(err) => Delivery::Invalid(InvalidJob::Unreadable(err)),
    }
}

/// What a complete read of stdin amounts to.
pub fn parse(bytes: &[u8]) -> Delivery {
    if bytes.is_empty() {
        return Delivery::Nothing;
    }
    if bytes.len() > MAX_JOB_BYTES {
        return Delivery::Invalid(InvalidJob::TooLarge);
    }
    match serde_json::from_slice::<Job>(bytes) {
        Ok(job) => Delivery::Job(Box::new(job)),
        Err(err) => Delivery::Invalid(InvalidJob::NotAJob(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::limits::testing::small_limits;

    fn job() -> Job {
        Job::new("def main():\n    return {'$$': '$(HOME) é'}\n", small_limits())
    }

    #[test]
    fn no_byte_at_all_is_no_job() {
        assert!(matches!(parse(b""), Delivery::Nothing));
    }

    #[test]
    fn one_job_document_is_the_job_byte_for_byte() {
        let bytes = serde_json::to_vec(&job()).expect("json");
        match parse(&bytes) {
            Delivery::Job(delivered) => assert_eq!(*delivered, job()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn whitespace_a_cut_document_or_a_second_document_is_invalid_not_nothing() {
        let bytes = serde_json::to_vec(&job()).expect("json");
        let twice = [bytes.clone(), bytes.clone()].concat();
        for input in [&b"\n"[..], &bytes[..bytes.len() / 2], &twice[..]] {
            assert!(matches!(parse(input), Delivery::Invalid(InvalidJob::NotAJob(_))), "{input:?}");
        }
    }

    #[test]
    fn a_document_over_the_limit_is_refused_unparsed() {
        assert!(matches!(parse(&vec![b' '; MAX_JOB_BYTES + 1]), Delivery::Invalid(InvalidJob::TooLarge)));
    }

    #[test]
    fn reading_stops_one_byte_past_the_limit() {
        let endless = std::io::repeat(b'x');
        assert!(matches!(read(endless), Delivery::Invalid(InvalidJob::TooLarge)));
        let bytes = serde_json::to_vec(&job()).expect("json");
        assert!(matches!(read(&bytes[..]), Delivery::Job(_)));
    }
}
