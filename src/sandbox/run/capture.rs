//! Reading a child's pipe to its end while keeping at most a fixed number of bytes: the
//! supervisor's memory stays bounded, and output past the cap is drained at a bounded pace.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Which of a run's output pipes a chunk came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Where the kept bytes of a run's stdout and stderr also go, as they are read (an execution's
/// stream of events). Only kept bytes are passed on, so the output caps hold there too.
pub trait OutputTap: Send + Sync + 'static {
    fn chunk(&self, stream: Stream, bytes: &[u8]);
}

impl std::fmt::Debug for dyn OutputTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OutputTap")
    }
}

/// An output tap, shared by the run's readers and whoever made it.
pub type Tap = Arc<dyn OutputTap>;

/// What was read from one pipe.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Captured {
    /// The first `cap` bytes.
    pub bytes: Vec<u8>,
    /// Every byte that arrived, kept or not.
    pub total: u64,
}

impl Captured {
    pub fn truncated(&self) -> bool {
        self.total > self.bytes.len() as u64
    }

    /// Counts `chunk` and keeps what of it fits under `cap` kept bytes; returns how many bytes
    /// of it were kept, and whether it is now past the cap.
    pub fn keep_first(&mut self, chunk: &[u8], cap: u64) -> (usize, bool) {
        self.total += chunk.len() as u64;
        let room = cap.saturating_sub(self.bytes.len() as u64) as usize;
        let kept = chunk.len().min(room);
        self.bytes.extend_from_slice(&chunk[..kept]);
        (kept, self.truncated())
    }

    /// The kept bytes as text; invalid UTF-8 becomes U+FFFD.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// The pause between reads once a pipe is past its cap: at most one 64 KiB read per
/// millisecond (tens of MB/s, the timer's granularity) of output nobody keeps.
const PAST_CAP_PAUSE: Duration = Duration::from_millis(1);

/// A pipe read to its end in the background, keeping its first `cap` bytes, whose bytes so far
/// can be taken before its end: once `drained`, every byte written into it until then is in.
/// (nsjail holds the write ends of its jail's pipes until it exits, so end of file comes only
/// after the jailed process has ended.)
pub struct Reading {
    captured: Arc<Mutex<Captured>>,
    /// A duplicate of the read end, to ask the kernel whether bytes wait in the pipe.
    probe: Option<OwnedFd>,
    /// Notified after each chunk read, and at end of file.
    chunk: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Reading {
    /// Starts reading `reader`; what is kept is also passed to `tap`, as `stream`'s, if given.
    pub fn start<R: AsyncRead + AsFd + Unpin + Send + 'static>(
        mut reader: R,
        cap: u64,
        tap: Option<(Tap, Stream)>,
    ) -> Reading {
        let probe = reader.as_fd().try_clone_to_owned().ok();
        let captured = Arc::new(Mutex::new(Captured::default()));
        let chunk = Arc::new(Notify::new());
        let (into, notify) = (captured.clone(), chunk.clone());
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                // Appended in the same poll as the read: a byte out of the pipe is a byte in here.
                let (kept, past_cap) = into.lock().unwrap_or_else(|p| p.into_inner()).keep_first(&buf[..n], cap);
                if let (Some((tap, stream)), true) = (&tap, kept > 0) {
                    tap.chunk(*stream, &buf[..kept]);
                }
                notify.notify_one();
                if past_cap {
                    // Nothing more is kept: drain at a bounded pace, so that a flood costs the
                    // service almost no CPU and its writer mostly waits on a full pipe.
                    tokio::time::sleep(PAST_CAP_PAUSE).await;
                }
            }
            notify.notify_one();
        });
        Reading { captured, probe, chunk, task }
    }

    /// Whether no byte waits in the pipe: everything written into it so far has been captured.
    pub fn drained(&self) -> bool {
        let Some(fd) = &self.probe else { return false };
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(0) => true,
            // Readable: bytes wait, or every writer has closed (the reader sees that end soon).
            Ok(_) => fds[0].revents().is_some_and(|events| !events.contains(PollFlags::POLLIN)),
            Err(_) => false,
        }
    }

    /// Resolves once another chunk has been read (or the pipe ended) since the last call.
    pub async fn next_chunk(&self) {
        self.chunk.notified().await;
    }

    /// Whether what was read so far ends with a newline and nothing was cut off.
    pub fn ends_a_line(&self) -> bool {
        let captured = self.captured.lock().unwrap_or_else(|p| p.into_inner());
        !captured.truncated() && captured.bytes.last() == Some(&b'\n')
    }

    /// Looks at what was read so far.
    pub fn inspect<T>(&self, look: impl FnOnce(&Captured) -> T) -> T {
        look(&self.captured.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Waits up to `grace` for the pipe's end (a pipe still held open by something outside
    /// the jail must not hold the request), then stops reading and returns what was read. The
    /// reader stops only at an await, so a chunk it has read is always in.
    pub async fn finish(&mut self, grace: Duration) -> Captured {
        // (A zero timeout would still wait for the timer's next tick, a millisecond.)
        if grace.is_zero() || tokio::time::timeout(grace, &mut self.task).await.is_err() {
            self.task.abort();
            let _ = (&mut self.task).await;
        }
        std::mem::take(&mut *self.captured.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Reads `reader` until end of file, keeping the last `cap` bytes (for logs, whose end matters).
pub async fn read_tail<R: AsyncRead + Unpin>(mut reader: R, cap: usize) -> Captured {
    let mut captured = Captured::default();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return captured,
            Ok(n) => {
                captured.total += n as u64;
                captured.bytes.extend_from_slice(&buf[..n]);
                if captured.bytes.len() > cap {
                    let excess = captured.bytes.len() - cap;
                    captured.bytes.drain(..excess);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Captured` fed `data` in 64 KiB chunks, as `Reading` feeds it.
    fn kept(data: &[u8], cap: u64) -> Captured {
        let mut captured = Captured::default();
        for chunk in data.chunks(64 * 1024) {
            captured.keep_first(chunk, cap);
        }
        captured
    }

    #[test]
    fn keeps_the_first_bytes_and_counts_all() {
        let data = vec![b'x'; 200_000];
        let captured = kept(&data, 1000);
        assert_eq!(captured.bytes.len(), 1000);
        assert_eq!(captured.total, 200_000);
        assert!(captured.truncated());
    }

    #[test]
    fn short_input_is_not_truncated() {
        let captured = kept(b"hello\n", 1000);
        assert_eq!(captured.text(), "hello\n");
        assert!(!captured.truncated());
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let captured = kept(b"ok \xff\xfe end", 1000);
        assert_eq!(captured.text(), "ok \u{fffd}\u{fffd} end");
    }

    #[tokio::test]
    async fn tail_keeps_the_end() {
        let captured = read_tail(&b"0123456789"[..], 4).await;
        assert_eq!(captured.bytes, b"6789");
    }
}
