//! A sandbox pod's output as it happens: the kept bytes of the script's stdout and stderr, written
//! as frame lines to the pod's own stderr, which is its log; the API follows that log to stream
//! an execution's events. One frame is `pyexec-output <stream> <base64>` on a line of its own.
//! Only the supervisor writes them, from what it read off the script's pipes, so a script cannot
//! forge one, and base64 keeps every byte (a character split between two frames included).
//!
//! Frames are coalesced: a stream's bytes go out when they reach `FRAME_BYTES` or at the next
//! tick (`TICK`), so a script printing a byte at a time makes a few frames a second, not one
//! per byte, and the log stays within a bound the controller can read (`log_bytes`).

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use tokio::task::JoinHandle;

use super::capture::{OutputTap, Stream};

/// What starts every frame line.
pub const PREFIX: &str = "pyexec-output ";
/// The most bytes of one stream a frame holds before it is written.
pub const FRAME_BYTES: usize = 16 * 1024;
/// How often bytes waiting in a frame are written.
pub const TICK: Duration = Duration::from_millis(50);
/// A frame's bytes beside its base64: the prefix, the stream's name, a space and the newline.
const FRAME_OVERHEAD: u64 = (PREFIX.len() + "stdout".len() + 2) as u64;

/// The frame line for `bytes` of `stream`, newline included.
pub fn frame(stream: Stream, bytes: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    format!("{PREFIX}{} {encoded}\n", stream.as_str())
}

/// The stream and bytes of a frame line (its newline optional); none for any other line.
pub fn parse(line: &str) -> Option<(Stream, Vec<u8>)> {
    let rest = line.trim_end_matches(['\n', '\r']).strip_prefix(PREFIX)?;
    let (stream, encoded) = rest.split_once(' ')?;
    let stream = match stream {
        "stdout" => Stream::Stdout,
        "stderr" => Stream::Stderr,
        _ => return None,
    };
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    Some((stream, bytes))
}

/// The most log bytes the frames of a run take: `output_bytes` kept in all, over `seconds`.
/// Each stream writes at most one frame a tick, plus one for each full frame.
pub fn log_bytes(output_bytes: u64, seconds: u64) -> u64 {
    let ticks = seconds.saturating_mul(1000) / TICK.as_millis() as u64 + 2;
    let frames = 2 * ticks + output_bytes / FRAME_BYTES as u64;
    output_bytes.div_ceil(3) * 4 + frames * (FRAME_OVERHEAD + 4)
}

/// An output tap that writes frames to `out` (the pod's stderr): coalesced per stream, flushed
/// each tick and by `finish`.
pub struct FrameWriter {
    shared: Arc<Shared>,
    ticker: JoinHandle<()>,
}

struct Shared {
    pending: Mutex<Pending>,
}

struct Pending {
    out: Box<dyn Write + Send>,
    /// Bytes not yet written, per stream, in the order they came.
    bytes: [Vec<u8>; 2],
}

impl Pending {
    fn write(&mut self, stream: Stream) {
        let bytes = std::mem::take(&mut self.bytes[stream as usize]);
        if bytes.is_empty() {
            return;
        }
        // A closed stderr means nobody follows the log; the envelope is still the record.
        let _ = self.out.write_all(frame(stream, &bytes).as_bytes()).and_then(|()| self.out.flush());
    }

    fn write_all(&mut self) {
        self.write(Stream::Stdout);
        self.write(Stream::Stderr);
    }
}

impl Shared {
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl FrameWriter {
    /// Starts the ticker; call within a tokio runtime.
    pub fn start(out: Box<dyn Write + Send>) -> FrameWriter {
        let shared = Arc::new(Shared { pending: Mutex::new(Pending { out, bytes: [Vec::new(), Vec::new()] }) });
        let ticking = shared.clone();
        let ticker = tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                ticking.pending().write_all();
            }
        });
        FrameWriter { shared, ticker }
    }

    /// The tap to hand to the run; it writes through this writer.
    pub fn tap(&self) -> Arc<dyn OutputTap> {
        Arc::new(Tap(self.shared.clone()))
    }

    /// Writes what is waiting and stops ticking: the run is over.
    pub fn finish(self) {
        self.ticker.abort();
        self.shared.pending().write_all();
    }
}

struct Tap(Arc<Shared>);

impl OutputTap for Tap {
    fn chunk(&self, stream: Stream, bytes: &[u8]) {
        let mut pending = self.0.pending();
        pending.bytes[stream as usize].extend_from_slice(bytes);
        if pending.bytes[stream as usize].len() >= FRAME_BYTES {
            // The other stream's older bytes go first, so the order between the two holds.
            let other = match stream {
                Stream::Stdout => Stream::Stderr,
                Stream::Stderr => Stream::Stdout,
            };
            pending.write(other);
            pending.write(stream);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Write whose bytes the test can read.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn frames(out: &Shared) -> Vec<(Stream, Vec<u8>)> {
        let text = String::from_utf8(out.0.lock().expect("lock").clone()).expect("frames are text");
        text.lines().map(|line| parse(line).expect("every line a frame")).collect()
    }

    #[test]
    fn a_frame_reads_back_byte_for_byte_and_other_lines_are_not_frames() {
        let bytes = [b'a', 0xe2, 0x82, b'\n', 0, 0xff];
        let line = frame(Stream::Stderr, &bytes);
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        assert_eq!(parse(&line), Some((Stream::Stderr, bytes.to_vec())));
        assert_eq!(parse("pyexec-output stdin AAAA"), None);
        assert_eq!(parse("pyexec-output stdout not base64!"), None);
        assert_eq!(parse("{\"outcome\":\"success\"}"), None);
        assert_eq!(parse("2026 INFO pyexec-output stdout AAAA"), None, "only at the start of a line");
    }

    #[tokio::test]
    async fn many_small_chunks_become_few_frames_and_finish_writes_the_rest() {
        let out = Shared::default();
        let writer = FrameWriter::start(Box::new(out.clone()));
        let tap = writer.tap();
        for _ in 0..1000 {
            tap.chunk(Stream::Stdout, b"x");
        }
        tap.chunk(Stream::Stderr, b"err");
        writer.finish();
        let frames = frames(&out);
        assert!(frames.len() <= 4, "coalesced: {} frames", frames.len());
        let stdout: Vec<u8> =
            frames.iter().filter(|(s, _)| *s == Stream::Stdout).flat_map(|(_, b)| b.clone()).collect();
        assert_eq!(stdout, vec![b'x'; 1000]);
        assert!(frames.contains(&(Stream::Stderr, b"err".to_vec())));
    }

    #[tokio::test]
    async fn a_full_frame_is_written_at_once_after_the_other_streams_older_bytes() {
        let out = Shared::default();
        let writer = FrameWriter::start(Box::new(out.clone()));
        let tap = writer.tap();
        tap.chunk(Stream::Stderr, b"first");
        tap.chunk(Stream::Stdout, &vec![b'y'; FRAME_BYTES]);
        let frames = frames(&out);
        assert_eq!(frames.len(), 2, "written without waiting for a tick");
        assert_eq!(frames[0], (Stream::Stderr, b"first".to_vec()));
        assert_eq!(frames[1].1.len(), FRAME_BYTES);
        writer.finish();
    }

    #[test]
    fn the_log_bound_covers_base64_and_a_frame_per_tick_per_stream() {
        let one_mib = 1 << 20;
        let bound = log_bytes(one_mib, 10);
        assert!(bound >= one_mib * 4 / 3, "{bound}");
        assert!(bound < one_mib * 4 / 3 + 32 * 1024, "{bound}");
        assert!(log_bytes(0, 300) >= 2 * 6000 * (PREFIX.len() as u64 + 8));
    }
}
