//! DNS over TCP (RFC 1035 4.2.2, RFC 7766 8): every message behind a 2-byte big-endian
//! length. [`TcpFramer`] is one connection's state, sans-IO: bytes read from the connection
//! go in, whole queries come out; answers go in and come out framed, and stay until the
//! connection has taken every byte (a short send keeps the rest for
//! [`crate::tcp::TcpEvent::Writable`]).
//!
//! Bounded by back-pressure instead of by dropping: no query is handed out while an answer
//! is still being written, and [`TcpFramer::wants_input`] says to stop reading while a whole
//! query waits, so a client that pipelines faster than it reads is held back by its own TCP
//! window. The input therefore never holds more than one partial message and one read;
//! anything beyond [`MAX_INPUT`] is a caller that ignored the framer, refused as an error.

use thiserror::Error;

/// Largest DNS message a 2-byte length can announce.
pub const MAX_MESSAGE_LEN: usize = u16::MAX as usize;
/// Most input bytes held: one partial message and its prefix, plus one read of that size.
pub const MAX_INPUT: usize = 2 * (2 + MAX_MESSAGE_LEN);

/// Why the framer refused: the connection should be aborted.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum FramerError {
    #[error("{0} bytes of DNS-over-TCP input buffered, more than {MAX_INPUT}")]
    InputOverflow(usize),
    #[error("a DNS message of {0} bytes does not fit a 2-byte length")]
    TooLong(usize),
}

/// One DNS-over-TCP connection: unread request bytes and the unsent part of the answer.
#[derive(Clone, Debug, Default)]
pub struct TcpFramer {
    input: Vec<u8>,
    output: Vec<u8>,
    /// How much of `output` the connection has taken.
    written: usize,
}

impl TcpFramer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes read from the connection.
    pub fn handle_input(&mut self, bytes: &[u8]) -> Result<(), FramerError> {
        let len = self.input.len() + bytes.len();
        if len > MAX_INPUT {
            return Err(FramerError::InputOverflow(len));
        }
        self.input.extend_from_slice(bytes);
        Ok(())
    }

    /// Whether to read more from the connection: only when no whole query is waiting and
    /// no answer is being written, so that TCP's flow control holds the client back.
    pub fn wants_input(&self) -> bool {
        self.pending_output().is_empty() && self.query_len().is_none()
    }

    /// The next whole query, without its length prefix; `None` while more bytes are
    /// needed or while the previous answer is still being written.
    pub fn poll_query(&mut self) -> Option<Vec<u8>> {
        if !self.pending_output().is_empty() {
            return None;
        }
        let len = self.query_len()?;
        let query = self.input.get(2..2 + len)?.to_vec();
        self.input.drain(..2 + len);
        Some(query)
    }

    /// Frame `answer` for sending (after what is still pending).
    pub fn queue_answer(&mut self, answer: &[u8]) -> Result<(), FramerError> {
        let len = u16::try_from(answer.len()).map_err(|_| FramerError::TooLong(answer.len()))?;
        self.output.extend_from_slice(&len.to_be_bytes());
        self.output.extend_from_slice(answer);
        Ok(())
    }

    /// Answer bytes not yet taken by the connection.
    pub fn pending_output(&self) -> &[u8] {
        self.output.get(self.written..).unwrap_or_default()
    }

    /// The connection took `n` bytes of [`Self::pending_output`].
    pub fn output_written(&mut self, n: usize) {
        self.written = (self.written + n).min(self.output.len());
        if self.written == self.output.len() {
            self.output.clear();
            self.written = 0;
        }
    }

    /// The length of the message at the front of the input, once all of it is there.
    fn query_len(&self) -> Option<usize> {
        let len = usize::from(u16::from_be_bytes([*self.input.first()?, *self.input.get(1)?]));
        (self.input.len() >= 2 + len).then_some(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn framed(message: &[u8]) -> Vec<u8> {
        let mut out = (message.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(message);
        out
    }

    proptest! {
        /// Whatever the read boundaries, the queries come out whole and in order.
        #[test]
        fn queries_survive_any_split(
            messages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..8),
            cuts in proptest::collection::vec(1usize..200, 1..20),
        ) {
            let stream: Vec<u8> = messages.iter().flat_map(|m| framed(m)).collect();
            let mut framer = TcpFramer::new();
            let mut out = Vec::new();
            let (mut at, mut cut) = (0, cuts.iter().cycle());
            while at < stream.len() || framer.query_len().is_some() {
                if framer.wants_input() && at < stream.len() {
                    let end = (at + cut.next().copied().unwrap_or(1)).min(stream.len());
                    prop_assert!(framer.handle_input(&stream[at..end]).is_ok());
                    at = end;
                }
                while let Some(q) = framer.poll_query() {
                    out.push(q);
                }
            }
            prop_assert_eq!(out, messages);
        }
    }

    #[test]
    fn an_answer_written_in_pieces_holds_back_the_next_query() {
        let mut framer = TcpFramer::new();
        let mut input = framed(b"one");
        input.extend(framed(b"two"));
        assert_eq!(framer.handle_input(&input), Ok(()));
        assert_eq!(framer.poll_query().as_deref(), Some(&b"one"[..]));
        assert_eq!(framer.queue_answer(b"answer"), Ok(()));
        assert!(!framer.wants_input());
        assert_eq!(framer.pending_output(), &framed(b"answer")[..]);
        framer.output_written(3);
        assert_eq!(framer.pending_output(), b"nswer");
        assert_eq!(framer.poll_query(), None, "one answer at a time");
        framer.output_written(5);
        assert_eq!(framer.pending_output(), b"");
        assert!(!framer.wants_input(), "a whole query is waiting");
        assert_eq!(framer.poll_query().as_deref(), Some(&b"two"[..]));
        assert!(framer.wants_input());
    }

    #[test]
    fn bounds() {
        let mut framer = TcpFramer::new();
        assert_eq!(framer.queue_answer(&vec![0; MAX_MESSAGE_LEN + 1]), Err(FramerError::TooLong(MAX_MESSAGE_LEN + 1)));
        assert_eq!(framer.handle_input(&[0xff; MAX_INPUT]), Ok(()));
        assert_eq!(framer.handle_input(&[0]), Err(FramerError::InputOverflow(MAX_INPUT + 1)));
    }
}
