//! Reading a child's pipe to its end while keeping at most a fixed number of bytes: the child
//! never blocks on a full pipe, and the supervisor's memory stays bounded.

use tokio::io::{AsyncRead, AsyncReadExt};

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

    /// The kept bytes as text; invalid UTF-8 becomes U+FFFD.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Reads `reader` until end of file, keeping the first `cap` bytes and counting the rest.
pub async fn read_capped<R: AsyncRead + Unpin>(mut reader: R, cap: u64) -> Captured {
    let mut captured = Captured::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return captured,
            Ok(n) => {
                captured.total += n as u64;
                let room = cap.saturating_sub(captured.bytes.len() as u64) as usize;
                captured.bytes.extend_from_slice(&buf[..n.min(room)]);
            }
        }
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

    #[tokio::test]
    async fn keeps_the_first_bytes_and_counts_all() {
        let data = vec![b'x'; 200_000];
        let captured = read_capped(&data[..], 1000).await;
        assert_eq!(captured.bytes.len(), 1000);
        assert_eq!(captured.total, 200_000);
        assert!(captured.truncated());
    }

    #[tokio::test]
    async fn short_input_is_not_truncated() {
        let captured = read_capped(&b"hello\n"[..], 1000).await;
        assert_eq!(captured.text(), "hello\n");
        assert!(!captured.truncated());
    }

    #[tokio::test]
    async fn invalid_utf8_is_replaced() {
        let captured = read_capped(&b"ok \xff\xfe end"[..], 1000).await;
        assert_eq!(captured.text(), "ok \u{fffd}\u{fffd} end");
    }

    #[tokio::test]
    async fn tail_keeps_the_end() {
        let captured = read_tail(&b"0123456789"[..], 4).await;
        assert_eq!(captured.bytes, b"6789");
    }
}
