//! What people see of a run (DESIGN §6 "Run status and logs, for people"): its state at the
//! provider now, and the end of its logs. Apart from `Executor::status`, which the engine reads:
//! these only answer a person's request and change nothing.

use super::ExecutorError;

/// A run as the provider reports it now, in the provider's own words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunView {
    /// Azure: `inProgress`, `canceling`, `completed` or `unknown`.
    pub state: String,
    /// Azure: `succeeded`, `failed`, `canceled`…; `None` while the run goes on.
    pub result: Option<String>,
    /// The run's page at the provider.
    pub url: Option<String>,
}

/// The end of a run's logs: at most the `max_bytes` asked for, valid UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLogs {
    pub text: String,
    /// Earlier text was left out to stay within `max_bytes`.
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ViewError {
    /// This kind of executor has no way to show it; the text says what ("the logs of its runs").
    #[error("{0}")]
    NotSupported(String),
    /// The provider could not be asked, or refused.
    #[error(transparent)]
    Provider(#[from] ExecutorError),
}

/// Keeps the last `keep` bytes of a stream read chunk by chunk, never holding more than twice
/// that: a log of gigabytes costs a pass over it, not its size in memory.
#[derive(Debug)]
pub struct Tail {
    keep: usize,
    buffer: Vec<u8>,
    /// Bytes dropped from the front so far.
    dropped: u64,
}

impl Tail {
    pub fn new(keep: usize) -> Tail {
        Tail {
            keep,
            buffer: Vec::new(),
            dropped: 0,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        if chunk.len() >= self.keep {
            self.dropped = self
                .dropped
                .saturating_add((self.buffer.len() + chunk.len() - self.keep) as u64);
            self.buffer.clear();
            self.buffer
                .extend_from_slice(&chunk[chunk.len() - self.keep..]);
            return;
        }
        self.buffer.extend_from_slice(chunk);
        if self.buffer.len() > self.keep.saturating_mul(2) {
            self.compact();
        }
    }

    fn compact(&mut self) {
        let excess = self.buffer.len().saturating_sub(self.keep);
        if excess > 0 {
            self.buffer.drain(..excess);
            self.dropped = self.dropped.saturating_add(excess as u64);
        }
    }

    /// The last `keep` bytes, and whether anything before them was dropped. A cut inside a
    /// UTF-8 character leaves its continuation bytes out, so the text starts on a character.
    pub fn finish(mut self) -> (Vec<u8>, bool) {
        self.compact();
        let cut = self.dropped > 0;
        if cut {
            let partial = self
                .buffer
                .iter()
                .take(3)
                .take_while(|b| (**b & 0b1100_0000) == 0b1000_0000)
                .count();
            self.buffer.drain(..partial);
        }
        (self.buffer, cut)
    }
}

/// The last `max_bytes` bytes of `bytes` as text: invalid UTF-8 becomes U+FFFD, and the cut
/// falls on a character boundary (the answer may be a few bytes shorter than `max_bytes`, never
/// longer). `true` when something was left out.
pub fn utf8_tail(bytes: &[u8], max_bytes: usize) -> (String, bool) {
    let text = String::from_utf8_lossy(bytes);
    if text.len() <= max_bytes {
        return (text.into_owned(), false);
    }
    let mut start = text.len() - max_bytes;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    (text[start..].to_owned(), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tail_keeps_the_last_bytes_whatever_the_chunks() {
        let text: Vec<u8> = (0..10_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        for chunk in [1, 7, 100, 999, 5_000, 20_000] {
            let mut tail = Tail::new(1_000);
            for piece in text.chunks(chunk) {
                tail.push(piece);
                assert!(
                    tail.buffer.len() <= 2_000 + chunk.min(1_000),
                    "chunk {chunk}"
                );
            }
            let (kept, cut) = tail.finish();
            assert_eq!(kept, text[9_000..], "chunk {chunk}");
            assert!(cut);
        }
        let mut short = Tail::new(1_000);
        short.push(b"hello");
        assert_eq!(short.finish(), (b"hello".to_vec(), false));
    }

    #[test]
    fn a_cut_tail_starts_on_a_character() {
        // "é" is two bytes, "✓" three: keep 4 bytes of "aé✓" (6 bytes) = the second half of
        // "é" and "✓"; the orphan byte goes.
        let mut tail = Tail::new(4);
        tail.push("aé✓".as_bytes());
        let (kept, cut) = tail.finish();
        assert_eq!(String::from_utf8(kept).unwrap(), "✓");
        assert!(cut);
    }

    #[test]
    fn utf8_tail_never_exceeds_the_bound_nor_splits_a_character() {
        let text = "ligne 1 ✓ déployé\nligne 2 ✗ échec\n".repeat(50);
        for max in 1..text.len() + 2 {
            let (tail, cut) = utf8_tail(text.as_bytes(), max);
            assert!(tail.len() <= max, "{max}");
            assert!(text.ends_with(&tail), "{max}");
            assert_eq!(cut, max < text.len(), "{max}");
            // At most a character's worth shorter than asked.
            assert!(
                tail.len() + 3 >= max.min(text.len()),
                "{max}: {}",
                tail.len()
            );
        }
        let (invalid, _) = utf8_tail(b"ok \xff\xfe end", 100);
        assert_eq!(invalid, "ok \u{fffd}\u{fffd} end");
    }
}
