//! One transport session: the two ChaCha20-Poly1305 keys a handshake produced, their
//! indices, the send counter and the replay window. Seal and open work in place.

use bytes::BytesMut;
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Tag};
use zeroize::ZeroizeOnDrop;

use super::constants::{REJECT_AFTER_MESSAGES, REJECT_AFTER_TIME};
use super::messages::{write_type, DATA_HEADER_LEN, MSG_DATA, TAG_LEN};
use super::replay::ReplayWindow;
use crate::time::Instant;

/// Transport keys and counters of one session. The keys are wiped on drop (chacha20poly1305
/// wipes its key); `Debug` leaves them out.
#[derive(ZeroizeOnDrop)]
pub struct Keypair {
    send: ChaCha20Poly1305,
    recv: ChaCha20Poly1305,
    #[zeroize(skip)]
    pub local_index: u32,
    #[zeroize(skip)]
    pub remote_index: u32,
    #[zeroize(skip)]
    pub created: Instant,
    /// Whether we sent the initiation that produced this session (only the initiator
    /// rekeys on age).
    #[zeroize(skip)]
    pub is_initiator: bool,
    /// The counter of the next message we send.
    #[zeroize(skip)]
    pub send_counter: u64,
    #[zeroize(skip)]
    replay: ReplayWindow,
}

impl std::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keypair")
            .field("local_index", &self.local_index)
            .field("remote_index", &self.remote_index)
            .field("created", &self.created)
            .field("is_initiator", &self.is_initiator)
            .field("send_counter", &self.send_counter)
            .finish()
    }
}

/// Why a data message did not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// Counter already seen or older than the window.
    Replay,
    /// Authentication tag mismatch.
    Tag,
}

fn nonce(counter: u64) -> chacha20poly1305::Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    n.into()
}

impl Keypair {
    pub fn new(
        send_key: &[u8; 32],
        recv_key: &[u8; 32],
        local_index: u32,
        remote_index: u32,
        created: Instant,
        is_initiator: bool,
    ) -> Self {
        Self {
            send: ChaCha20Poly1305::new(send_key.into()),
            recv: ChaCha20Poly1305::new(recv_key.into()),
            local_index,
            remote_index,
            created,
            is_initiator,
            send_counter: 0,
            replay: ReplayWindow::default(),
        }
    }

    /// Whether this session may still carry packets (age and message limits).
    pub fn is_usable(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.created) < REJECT_AFTER_TIME && self.send_counter < REJECT_AFTER_MESSAGES
    }

    /// Encrypt in place. `buf` holds [`DATA_HEADER_LEN`] bytes of headroom followed by the
    /// plaintext; on return it is the complete data message. Grows the buffer only by the
    /// padding and the tag, which fit in place when the caller reserved `DATA_OVERHEAD`.
    pub fn seal(&mut self, buf: &mut BytesMut) {
        let counter = self.send_counter;
        self.send_counter += 1;
        let plain_len = buf.len().saturating_sub(DATA_HEADER_LEN);
        let padded = plain_len.div_ceil(16) * 16;
        buf.resize(DATA_HEADER_LEN + padded, 0);
        write_type(&mut buf[..4], MSG_DATA);
        buf[4..8].copy_from_slice(&self.remote_index.to_le_bytes());
        buf[8..16].copy_from_slice(&counter.to_le_bytes());
        // Only fails for messages beyond 256 GiB; ours are at most 64 KiB.
        let tag =
            self.send.encrypt_in_place_detached(&nonce(counter), &[], &mut buf[DATA_HEADER_LEN..]).unwrap_or_default();
        buf.extend_from_slice(&tag);
    }

    /// Decrypt the data message in `buf` (whole datagram) in place and update the replay
    /// window. On success `buf[DATA_HEADER_LEN..len - TAG_LEN]` is the padded plaintext.
    pub fn open(&mut self, counter: u64, buf: &mut [u8]) -> Result<(), OpenError> {
        if !self.replay.check(counter) {
            return Err(OpenError::Replay);
        }
        let tag_at = buf.len() - TAG_LEN;
        let tag = Tag::clone_from_slice(&buf[tag_at..]);
        self.recv
            .decrypt_in_place_detached(&nonce(counter), &[], &mut buf[DATA_HEADER_LEN..tag_at], &tag)
            .map_err(|_| OpenError::Tag)?;
        if self.replay.update(counter) {
            Ok(())
        } else {
            Err(OpenError::Replay)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_hygiene::{assert_redacted, assert_zod, SECRET};

    #[test]
    fn keys_are_wiped_and_never_printed() {
        assert_zod::<Keypair>();
        let (mut send, mut recv) = ([0u8; 32], [0u8; 32]);
        send.copy_from_slice(&SECRET[..32]);
        recv.copy_from_slice(&SECRET[32..]);
        let keypair = Keypair::new(&send, &recv, 1, 2, Instant::from_micros(0), true);
        assert_redacted("Keypair", &keypair, &SECRET);
    }
}
