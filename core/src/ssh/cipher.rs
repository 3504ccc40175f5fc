//! Packet protection after NEWKEYS: `chacha20-poly1305@openssh.com` (OpenSSH's PROTOCOL.chacha20poly1305)
//! and `aes128/256-gcm@openssh.com` (RFC 5647). Both are AEADs, so there is no separate MAC.
//!
//! Receiving is in two steps so that nothing is buffered for a hostile length:
//! [`PacketCipher::open_length`] reads `packet_length` from the first 4 bytes (decrypting
//! them for ChaCha20-Poly1305) and checks it against [`MAX_PACKET_LEN`]; only then does the
//! caller wait for the rest and call [`PacketCipher::open`], which verifies the tag before
//! decrypting anything.
//!
//! Keys are wiped on drop: the ChaCha20 keys here, the AES round keys and GHASH key by the
//! `aes`/`polyval` `zeroize` features, and each packet's Poly1305 key after use.

use std::ops::Range;

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes128Gcm, Aes256Gcm, KeyInit};
use bytes::{BufMut, BytesMut};
use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use chacha20::ChaCha20Legacy;
use poly1305::Poly1305;
use thiserror::Error;
use zeroize::{ZeroizeOnDrop, Zeroizing};

use super::kexinit::{CIPHER_AES128_GCM, CIPHER_AES256_GCM, CIPHER_CHACHA20_POLY1305};
use super::packet::{MAX_PACKET_LEN, MIN_PADDING};
use super::wire::PACKET_HEADER;
use crate::ct;
use crate::rng::Rng;

pub const TAG_LEN: usize = 16;

/// A packet that cannot be accepted: the connection ends.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum CipherError {
    #[error("unknown cipher")]
    Unknown,
    #[error("packet length {0} out of range")]
    Length(u32),
    #[error("message authentication failed")]
    Mac,
    #[error("padding invalid")]
    Padding,
}

/// One direction's packet protection. `Debug` names the cipher only.
#[derive(ZeroizeOnDrop)]
pub enum PacketCipher {
    ChaCha20Poly1305 {
        main: [u8; 32],
        header: [u8; 32],
    },
    Aes128Gcm {
        /// Wipes itself (the `aes` and `polyval` `zeroize` features).
        #[zeroize(skip)]
        aead: Box<Aes128Gcm>,
        iv: [u8; 12],
    },
    Aes256Gcm {
        /// Wipes itself, as above.
        #[zeroize(skip)]
        aead: Box<Aes256Gcm>,
        iv: [u8; 12],
    },
}

impl std::fmt::Debug for PacketCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PacketCipher::ChaCha20Poly1305 { .. } => "ChaCha20Poly1305",
            PacketCipher::Aes128Gcm { .. } => "Aes128Gcm",
            PacketCipher::Aes256Gcm { .. } => "Aes256Gcm",
        })
    }
}

impl PacketCipher {
    /// Key material needed by `name`: (key bytes, IV bytes).
    pub fn key_sizes(name: &str) -> Option<(usize, usize)> {
        match name {
            CIPHER_CHACHA20_POLY1305 => Some((64, 0)),
            CIPHER_AES128_GCM => Some((16, 12)),
            CIPHER_AES256_GCM => Some((32, 12)),
            _ => None,
        }
    }

    /// The cipher `name` with derived `key` and `iv` (see [`Self::key_sizes`]).
    pub fn new(name: &str, key: &[u8], iv: &[u8]) -> Result<Self, CipherError> {
        let (klen, ivlen) = Self::key_sizes(name).ok_or(CipherError::Unknown)?;
        let key = key.get(..klen).ok_or(CipherError::Unknown)?;
        let iv: Option<[u8; 12]> = iv.get(..ivlen).and_then(|v| v.try_into().ok());
        Ok(match name {
            CIPHER_CHACHA20_POLY1305 => PacketCipher::ChaCha20Poly1305 {
                main: key[..32].try_into().map_err(|_| CipherError::Unknown)?,
                header: key[32..64].try_into().map_err(|_| CipherError::Unknown)?,
            },
            CIPHER_AES128_GCM => PacketCipher::Aes128Gcm {
                aead: Box::new(Aes128Gcm::new_from_slice(key).map_err(|_| CipherError::Unknown)?),
                iv: iv.ok_or(CipherError::Unknown)?,
            },
            _ => PacketCipher::Aes256Gcm {
                aead: Box::new(Aes256Gcm::new_from_slice(key).map_err(|_| CipherError::Unknown)?),
                iv: iv.ok_or(CipherError::Unknown)?,
            },
        })
    }

    fn block_size(&self) -> usize {
        match self {
            PacketCipher::ChaCha20Poly1305 { .. } => 8,
            _ => 16,
        }
    }

    /// GCM's per-packet nonce: the fixed 4 bytes, then the 8-byte invocation counter that
    /// starts at the derived IV and grows by one per packet (RFC 5647 section 7.1).
    fn gcm_nonce(iv: &mut [u8; 12]) -> [u8; 12] {
        let nonce = *iv;
        let mut counter = [0u8; 8];
        counter.copy_from_slice(&iv[4..]);
        iv[4..].copy_from_slice(&u64::from_be_bytes(counter).wrapping_add(1).to_be_bytes());
        nonce
    }

    /// Frame and protect packet number `seq` in place: `packet` holds [`PACKET_HEADER`]
    /// reserved bytes and then the payload; the header, padding and tag are filled in.
    pub fn seal_packet(&mut self, seq: u32, packet: &mut BytesMut, rng: &mut Rng) {
        let block = self.block_size();
        let payload_len = packet.len().saturating_sub(PACKET_HEADER);
        // The length field is outside the padded part for both AEADs.
        let mut padding = block - (1 + payload_len) % block;
        if padding < MIN_PADDING {
            padding += block;
        }
        let len = 1 + payload_len + padding;
        packet[..4].copy_from_slice(&(len as u32).to_be_bytes());
        packet[4] = padding as u8;
        let mut pad = [0u8; 32];
        rng.fill_bytes(&mut pad[..padding]);
        packet.reserve(padding + TAG_LEN);
        packet.put_slice(&pad[..padding]);
        let out = packet;
        match self {
            PacketCipher::ChaCha20Poly1305 { main, header } => {
                let nonce = u64::from(seq).to_be_bytes();
                // Keys by reference: no unwiped copies (the cipher states wipe themselves).
                ChaCha20Legacy::new((&*header).into(), &nonce.into()).apply_keystream(&mut out[..4]);
                let mut stream = ChaCha20Legacy::new((&*main).into(), &nonce.into());
                let mut poly_key = Zeroizing::new([0u8; 32]);
                stream.apply_keystream(&mut poly_key[..]);
                stream.seek(64u64);
                stream.apply_keystream(&mut out[4..]);
                let tag = Poly1305::new((&*poly_key).into()).compute_unpadded(out);
                out.put_slice(&tag);
            }
            PacketCipher::Aes128Gcm { aead, iv } => gcm_seal(aead.as_ref(), iv, out),
            PacketCipher::Aes256Gcm { aead, iv } => gcm_seal(aead.as_ref(), iv, out),
        }
    }

    /// The `packet_length` of packet `seq` from its first 4 bytes, checked; the whole
    /// packet is `4 + length + TAG_LEN` bytes.
    pub fn open_length(&self, seq: u32, first4: [u8; 4]) -> Result<usize, CipherError> {
        let mut len = first4;
        if let PacketCipher::ChaCha20Poly1305 { header, .. } = self {
            let nonce = u64::from(seq).to_be_bytes();
            ChaCha20Legacy::new(header.into(), &nonce.into()).apply_keystream(&mut len);
        }
        let n = u32::from_be_bytes(len);
        let n_usize = n as usize;
        if !(MIN_PADDING + 1..=MAX_PACKET_LEN).contains(&n_usize) || !n_usize.is_multiple_of(self.block_size()) {
            return Err(CipherError::Length(n));
        }
        Ok(n_usize)
    }

    /// Verify and decrypt packet `seq` in place (`packet` = length field, body, tag, as
    /// received); returns where the payload lies in `packet`.
    pub fn open(&mut self, seq: u32, packet: &mut [u8]) -> Result<Range<usize>, CipherError> {
        let first4: [u8; 4] = packet.get(..4).and_then(|b| b.try_into().ok()).ok_or(CipherError::Mac)?;
        let len = self.open_length(seq, first4)?;
        self.open_with_length(seq, packet, len)
    }

    /// [`Self::open`] with the length [`Self::open_length`] already returned for this packet.
    pub(crate) fn open_with_length(
        &mut self,
        seq: u32,
        packet: &mut [u8],
        len: usize,
    ) -> Result<Range<usize>, CipherError> {
        if packet.len() != 4 + len + TAG_LEN {
            return Err(CipherError::Mac);
        }
        let (body, tag) = packet.split_at_mut(4 + len);
        match self {
            PacketCipher::ChaCha20Poly1305 { main, .. } => {
                let nonce = u64::from(seq).to_be_bytes();
                let mut stream = ChaCha20Legacy::new((&*main).into(), &nonce.into());
                let mut poly_key = Zeroizing::new([0u8; 32]);
                stream.apply_keystream(&mut poly_key[..]);
                let expected = Poly1305::new((&*poly_key).into()).compute_unpadded(body);
                if !ct::eq(&expected, tag) {
                    return Err(CipherError::Mac);
                }
                stream.seek(64u64);
                stream.apply_keystream(&mut body[4..]);
                body[..4].copy_from_slice(&(len as u32).to_be_bytes());
            }
            PacketCipher::Aes128Gcm { aead, iv } => gcm_open(aead.as_ref(), iv, body, tag)?,
            PacketCipher::Aes256Gcm { aead, iv } => gcm_open(aead.as_ref(), iv, body, tag)?,
        }
        let padding = usize::from(packet[4]);
        if padding < MIN_PADDING || padding >= len {
            return Err(CipherError::Padding);
        }
        Ok(5..4 + len - padding)
    }
}

/// AES-GCM sealing of a framed packet in place: the length field is the associated data,
/// the rest is encrypted and the tag appended. Encryption fails only beyond 2^36 bytes,
/// far above [`MAX_PACKET_LEN`].
fn gcm_seal<A: AeadInPlace<NonceSize = aes_gcm::aead::consts::U12, TagSize = aes_gcm::aead::consts::U16>>(
    aead: &A,
    iv: &mut [u8; 12],
    out: &mut BytesMut,
) {
    let nonce = PacketCipher::gcm_nonce(iv);
    let (aad, body) = out.split_at_mut(4);
    let tag = aead.encrypt_in_place_detached(&nonce.into(), aad, body).unwrap_or_default();
    out.put_slice(&tag);
}

/// AES-GCM opening in place: `body` is the length field and the encrypted rest.
fn gcm_open<A: AeadInPlace<NonceSize = aes_gcm::aead::consts::U12, TagSize = aes_gcm::aead::consts::U16>>(
    aead: &A,
    iv: &mut [u8; 12],
    body: &mut [u8],
    tag: &[u8],
) -> Result<(), CipherError> {
    let nonce = PacketCipher::gcm_nonce(iv);
    let (aad, rest) = body.split_at_mut(4);
    aead.decrypt_in_place_detached(&nonce.into(), aad, rest, aes_gcm::Tag::from_slice(tag))
        .map_err(|_| CipherError::Mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seal `payload` as packet `seq` the one way there is: laid out with the header
    /// reserved, then framed and protected in place.
    fn seal(tx: &mut PacketCipher, seq: u32, payload: &[u8], rng: &mut Rng) -> Vec<u8> {
        let mut packet = BytesMut::new();
        packet.put_bytes(0, PACKET_HEADER);
        packet.put_slice(payload);
        tx.seal_packet(seq, &mut packet, rng);
        packet.to_vec()
    }

    fn pair(name: &str) -> (PacketCipher, PacketCipher) {
        let (k, iv) = PacketCipher::key_sizes(name).unwrap_or((0, 0));
        let key: Vec<u8> = (0..k as u8).collect();
        let ivb: Vec<u8> = (100..100 + iv as u8).collect();
        let make = || PacketCipher::new(name, &key, &ivb).unwrap_or_else(|e| panic!("{e}"));
        (make(), make())
    }

    #[test]
    fn round_trip_every_cipher_and_size() {
        let mut rng = crate::rng::test_rng(1);
        for name in [CIPHER_CHACHA20_POLY1305, CIPHER_AES128_GCM, CIPHER_AES256_GCM] {
            let (mut tx, mut rx) = pair(name);
            for (seq, n) in (0u32..).zip([0usize, 1, 15, 16, 17, 100, 32_768]) {
                let payload: Vec<u8> = (0..n).map(|i| i as u8).collect();
                let mut packet = seal(&mut tx, seq, &payload, &mut rng);
                let first4 = [packet[0], packet[1], packet[2], packet[3]];
                let len = rx.open_length(seq, first4).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(packet.len(), 4 + len + TAG_LEN);
                let range = rx.open(seq, &mut packet).unwrap_or_else(|e| panic!("{name} n={n}: {e}"));
                assert_eq!(&packet[range], &payload[..], "{name}");
            }
        }
    }

    #[test]
    fn every_flipped_byte_fails_the_mac() {
        let mut rng = crate::rng::test_rng(2);
        for name in [CIPHER_CHACHA20_POLY1305, CIPHER_AES256_GCM] {
            let (mut tx, _) = pair(name);
            let packet = seal(&mut tx, 7, b"exec true", &mut rng);
            for at in 0..packet.len() {
                let (_, mut rx) = pair(name);
                if name == CIPHER_AES256_GCM {
                    // GCM's nonce counts packets: bring the receiver to the same one.
                    let (mut dummy_tx, _) = pair(name);
                    let mut earlier = seal(&mut dummy_tx, 6, b"", &mut rng);
                    let _ = rx.open(6, &mut earlier);
                }
                let mut flipped = packet.clone();
                flipped[at] ^= 0x01;
                let result = rx.open(7, &mut flipped);
                assert!(
                    matches!(result, Err(CipherError::Mac | CipherError::Length(_))),
                    "{name}: flip at {at} gave {result:?}"
                );
            }
        }
    }

    #[test]
    fn wrong_sequence_number_fails() {
        let mut rng = crate::rng::test_rng(3);
        let (mut tx, mut rx) = pair(CIPHER_CHACHA20_POLY1305);
        let mut packet = seal(&mut tx, 1, b"x", &mut rng);
        assert!(rx.open(2, &mut packet).is_err());
    }

    #[test]
    fn hostile_length_refused_before_buffering() {
        let (_, rx) = pair(CIPHER_AES128_GCM);
        assert_eq!(rx.open_length(0, [0xff; 4]), Err(CipherError::Length(u32::MAX)));
        assert!(matches!(rx.open_length(0, [0, 0, 0, 17]), Err(CipherError::Length(17))));
    }
}
