//! The four WireGuard messages on the wire: lengths, offsets and a classifier that rejects
//! anything malformed before any cryptography runs.

use thiserror::Error;

pub const MSG_INITIATION: u8 = 1;
pub const MSG_RESPONSE: u8 = 2;
pub const MSG_COOKIE_REPLY: u8 = 3;
pub const MSG_DATA: u8 = 4;

pub const INITIATION_LEN: usize = 148;
pub const RESPONSE_LEN: usize = 92;
pub const COOKIE_REPLY_LEN: usize = 64;
/// Type, receiver index and counter in front of every data message.
pub const DATA_HEADER_LEN: usize = 16;
/// Poly1305 tag length.
pub const TAG_LEN: usize = 16;
/// The shortest data message: a keepalive (header + tag).
pub const DATA_MIN_LEN: usize = DATA_HEADER_LEN + TAG_LEN;
/// Bytes an outbound IP packet grows by: header, up to 15 bytes of padding, tag.
pub const DATA_OVERHEAD: usize = DATA_HEADER_LEN + 15 + TAG_LEN;
/// The largest datagram accepted (UDP's limit); larger input is dropped unread.
pub const MAX_DATAGRAM_LEN: usize = 65_535;

/// Where snow's part of the initiation lives (ephemeral, static, timestamp).
pub const INITIATION_NOISE: std::ops::Range<usize> = 8..116;
/// Where snow's part of the response lives (ephemeral, empty payload tag).
pub const RESPONSE_NOISE: std::ops::Range<usize> = 12..60;

/// A handshake message's mac1 and mac2 offsets (mac2 = mac1 + 16, message ends at mac2 + 16).
pub const fn mac1_offset(len: usize) -> usize {
    len - 32
}

/// What a datagram claims to be, after checking type, reserved bytes and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    Initiation,
    Response,
    CookieReply,
    Data,
}

/// Why a datagram is not a WireGuard message.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum MessageError {
    #[error("datagram too short ({0} bytes)")]
    TooShort(usize),
    #[error("datagram too long ({0} bytes)")]
    TooLong(usize),
    #[error("unknown message type {0}")]
    UnknownType(u8),
    #[error("non-zero reserved bytes")]
    Reserved,
    #[error("message type {kind} has wrong length {len}")]
    BadLength { kind: u8, len: usize },
}

/// Classify a datagram by its header. Handshake messages must have their exact length;
/// data messages must hold at least a header and a tag.
pub fn classify(datagram: &[u8]) -> Result<MessageKind, MessageError> {
    if datagram.len() < 4 {
        return Err(MessageError::TooShort(datagram.len()));
    }
    if datagram.len() > MAX_DATAGRAM_LEN {
        return Err(MessageError::TooLong(datagram.len()));
    }
    if datagram[1..4] != [0, 0, 0] {
        return Err(MessageError::Reserved);
    }
    let (kind, ok) = match datagram[0] {
        MSG_INITIATION => (MessageKind::Initiation, datagram.len() == INITIATION_LEN),
        MSG_RESPONSE => (MessageKind::Response, datagram.len() == RESPONSE_LEN),
        MSG_COOKIE_REPLY => (MessageKind::CookieReply, datagram.len() == COOKIE_REPLY_LEN),
        MSG_DATA => (MessageKind::Data, datagram.len() >= DATA_MIN_LEN),
        t => return Err(MessageError::UnknownType(t)),
    };
    if ok {
        Ok(kind)
    } else {
        Err(MessageError::BadLength { kind: datagram[0], len: datagram.len() })
    }
}

/// Read a little-endian u32 at `at`. Callers have checked the length with [`classify`].
pub fn read_u32(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(b)
}

/// Read a little-endian u64 at `at`. Callers have checked the length with [`classify`].
pub fn read_u64(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Sender index of an initiation or response.
pub fn sender_index(msg: &[u8]) -> u32 {
    read_u32(msg, 4)
}

/// Receiver index of a response (offset 8), cookie reply or data message (offset 4).
pub fn receiver_index(kind: MessageKind, msg: &[u8]) -> u32 {
    match kind {
        MessageKind::Response => read_u32(msg, 8),
        _ => read_u32(msg, 4),
    }
}

/// Write the 4-byte header (type + reserved zeros).
pub fn write_type(buf: &mut [u8], ty: u8) {
    buf[..4].copy_from_slice(&[ty, 0, 0, 0]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_rejects_malformed() {
        assert_eq!(classify(&[1, 0]), Err(MessageError::TooShort(2)));
        assert_eq!(classify(&[9, 0, 0, 0]), Err(MessageError::UnknownType(9)));
        assert_eq!(classify(&[1, 0, 1, 0]), Err(MessageError::Reserved));
        assert_eq!(classify(&[0; 4]), Err(MessageError::UnknownType(0)));
        let mut init = vec![0u8; INITIATION_LEN];
        init[0] = MSG_INITIATION;
        assert_eq!(classify(&init), Ok(MessageKind::Initiation));
        init.push(0);
        assert!(matches!(classify(&init), Err(MessageError::BadLength { .. })));
        let mut data = vec![0u8; DATA_MIN_LEN];
        data[0] = MSG_DATA;
        assert_eq!(classify(&data), Ok(MessageKind::Data));
        assert!(classify(&data[..DATA_MIN_LEN - 1]).is_err());
    }
}
