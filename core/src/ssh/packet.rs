//! The binary packet protocol (RFC 4253 section 6) before keys are in use: length, padding
//! length, payload, random padding. The length is checked before anything is buffered for
//! it: no packet may exceed [`MAX_PACKET_LEN`].

use std::ops::Range;

use bytes::{BufMut, BytesMut};
use thiserror::Error;

use super::wire::PACKET_HEADER;
use crate::rng::Rng;

/// Largest `packet_length` accepted (DESIGN.md: 256 KiB).
pub const MAX_PACKET_LEN: usize = 256 * 1024;
/// Cipher block size before keys are in use (and the minimum for all ciphers).
pub const PLAIN_BLOCK: usize = 8;
/// Minimum random padding (RFC 4253).
pub const MIN_PADDING: usize = 4;

/// A malformed packet: the connection must end.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum PacketError {
    #[error("packet length {0} out of range")]
    Length(u32),
    #[error("padding length {0} invalid")]
    Padding(u8),
    #[error("packet not a multiple of the block size")]
    Alignment,
}

/// Where the payload of an unencrypted packet at the front of `buf` lies, and how many
/// bytes the packet takes; `Ok(None)` while more bytes are needed.
pub fn parse_plain(buf: &[u8]) -> Result<Option<(Range<usize>, usize)>, PacketError> {
    let Some(head) = buf.get(..4) else { return Ok(None) };
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let len_usize = len as usize;
    if !(MIN_PADDING + 1..=MAX_PACKET_LEN).contains(&len_usize) {
        return Err(PacketError::Length(len));
    }
    if !(4 + len_usize).is_multiple_of(PLAIN_BLOCK) {
        return Err(PacketError::Alignment);
    }
    let total = 4 + len_usize;
    if buf.len() < total {
        return Ok(None);
    }
    let padding = buf[4];
    if usize::from(padding) < MIN_PADDING || usize::from(padding) >= len_usize {
        return Err(PacketError::Padding(padding));
    }
    Ok(Some((5..total - usize::from(padding), total)))
}

/// Frame an unencrypted packet in place, with random padding: `packet` holds
/// [`PACKET_HEADER`] reserved bytes and then the payload (as [`super::wire::Writer::packet`]
/// lays it out). The only framing before keys are in use; there is no copying variant.
pub fn frame_plain_packet(packet: &mut BytesMut, rng: &mut Rng) {
    let payload_len = packet.len().saturating_sub(PACKET_HEADER);
    let mut padding = PLAIN_BLOCK - (5 + payload_len) % PLAIN_BLOCK;
    if padding < MIN_PADDING {
        padding += PLAIN_BLOCK;
    }
    let len = 1 + payload_len + padding;
    packet[..4].copy_from_slice(&(len as u32).to_be_bytes());
    packet[4] = padding as u8;
    let mut pad = [0u8; 2 * PLAIN_BLOCK];
    rng.fill_bytes(&mut pad[..padding]);
    packet.put_slice(&pad[..padding]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_in_pieces() {
        let mut rng = crate::rng::test_rng(1);
        for n in 0..40 {
            let payload: Vec<u8> = (0..n as u8).collect();
            let mut framed = BytesMut::new();
            framed.put_bytes(0, PACKET_HEADER);
            framed.put_slice(&payload);
            frame_plain_packet(&mut framed, &mut rng);
            assert_eq!(framed.len() % PLAIN_BLOCK, 0);
            for cut in 0..framed.len() {
                assert_eq!(parse_plain(&framed[..cut]), Ok(None));
            }
            let (range, used) =
                parse_plain(&framed).unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("n={n}"));
            assert_eq!(&framed[range], &payload[..]);
            assert_eq!(used, framed.len());
        }
    }

    #[test]
    fn hostile_lengths_are_refused_from_the_header_alone() {
        assert_eq!(parse_plain(&[0xff, 0xff, 0xff, 0xff]), Err(PacketError::Length(u32::MAX)));
        assert_eq!(parse_plain(&[0, 0, 0, 0]), Err(PacketError::Length(0)));
        assert_eq!(parse_plain(&[0, 4, 0, 4]), Err(PacketError::Length(0x40004)));
        assert_eq!(parse_plain(&[0, 0, 0, 13]), Err(PacketError::Alignment));
        assert_eq!(parse_plain(&[0, 0, 0, 12, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), Err(PacketError::Padding(3)));
        assert_eq!(parse_plain(&[0, 0, 0, 12, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), Err(PacketError::Padding(12)));
    }
}
