//! What an unfinished execution has printed so far, for its event stream: the kept chunks of
//! stdout and stderr in the order they were read, and a count that watchers wait on. It lives
//! only while the execution runs; a finished execution's output is in its envelope.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::sandbox::run::capture::{OutputTap, Stream};

pub struct OutputLog {
    chunks: Mutex<Vec<(Stream, Vec<u8>)>>,
    count: watch::Sender<usize>,
}

impl OutputLog {
    pub fn new() -> Arc<OutputLog> {
        Arc::new(OutputLog { chunks: Mutex::new(Vec::new()), count: watch::channel(0).0 })
    }

    /// The chunks from the `from`th on.
    pub fn since(&self, from: usize) -> Vec<(Stream, Vec<u8>)> {
        let chunks = self.chunks.lock().unwrap_or_else(|p| p.into_inner());
        chunks.get(from..).map(<[_]>::to_vec).unwrap_or_default()
    }

    /// Changes each time a chunk arrives.
    pub fn subscribe(&self) -> watch::Receiver<usize> {
        self.count.subscribe()
    }
}

impl OutputTap for OutputLog {
    fn chunk(&self, stream: Stream, bytes: &[u8]) {
        let count = {
            let mut chunks = self.chunks.lock().unwrap_or_else(|p| p.into_inner());
            chunks.push((stream, bytes.to_vec()));
            chunks.len()
        };
        self.count.send_replace(count);
    }
}

/// Turns a pipe's bytes into text chunk by chunk: a character split between two chunks is held
/// back until its end arrives; invalid bytes become U+FFFD.
#[derive(Default)]
pub struct Utf8Chunks {
    pending: Vec<u8>,
}

impl Utf8Chunks {
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let complete = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            // Only an unfinished character at the very end waits for more.
            Err(err) if err.error_len().is_none() => err.valid_up_to(),
            Err(_) => self.pending.len(),
        };
        let rest = self.pending.split_off(complete);
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending = rest;
        text
    }

    /// What is held back, once no more will come.
    pub fn finish(&mut self) -> String {
        String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_split_between_chunks_comes_whole() {
        let euro = "€".as_bytes();
        let mut text = Utf8Chunks::default();
        assert_eq!(text.push(&[b'a', euro[0]]), "a");
        assert_eq!(text.push(&euro[1..2]), "");
        assert_eq!(text.push(&[euro[2], b'b']), "€b");
        assert_eq!(text.finish(), "");
    }

    #[test]
    fn invalid_bytes_are_replaced_and_an_unfinished_end_is_flushed() {
        let mut text = Utf8Chunks::default();
        assert_eq!(text.push(b"ok \xff end"), "ok \u{fffd} end");
        assert_eq!(text.push(&"€".as_bytes()[..2]), "");
        assert_eq!(text.finish(), "\u{fffd}");
    }

    #[test]
    fn the_log_keeps_chunks_in_order_and_counts_them() {
        let log = OutputLog::new();
        let count = log.subscribe();
        log.chunk(Stream::Stdout, b"one");
        log.chunk(Stream::Stderr, b"two");
        assert_eq!(*count.borrow(), 2);
        assert_eq!(log.since(1), vec![(Stream::Stderr, b"two".to_vec())]);
        assert!(log.since(5).is_empty());
    }
}
