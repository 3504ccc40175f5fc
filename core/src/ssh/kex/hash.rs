//! What the negotiated method decides about hashing: the hash of the exchange hash H and
//! of key derivation (RFC 4253 sections 8 and 7.2), and how the shared secret K enters
//! both. curve25519-sha256 (RFC 8731) puts K in as an `mpint` under SHA-256; the hybrid
//! post-quantum methods (draft-ietf-sshm-mlkem-hybrid-kex, RFC 9941) put their
//! already-hashed K in as a `string`, under SHA-256 (mlkem768x25519) or SHA-512
//! (sntrup761x25519).
//!
//! K (raw and encoded) and every derived key are wiped on drop. (sha2 0.10 does not wipe
//! its own block buffer.)

use sha2::digest::generic_array::GenericArray;
use sha2::{Digest, Sha256, Sha512};
use zeroize::{ZeroizeOnDrop, Zeroizing};

use super::super::wire::{peer_text, Writer};

/// The hash a key exchange method uses for H and key derivation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KexHash {
    Sha256,
    Sha512,
}

impl KexHash {
    /// Output bytes (the length of H, and of one derivation block).
    pub const fn output_len(self) -> usize {
        match self {
            KexHash::Sha256 => 32,
            KexHash::Sha512 => 64,
        }
    }

    /// HASH(parts...) written straight into `out` (exactly [`Self::output_len`] bytes), so that no
    /// copy of a secret digest is left on the stack.
    pub fn hash_into(self, parts: &[&[u8]], out: &mut [u8]) {
        match self {
            KexHash::Sha256 => {
                let mut d = Sha256::new();
                for p in parts {
                    d.update(p);
                }
                d.finalize_into(GenericArray::from_mut_slice(out));
            }
            KexHash::Sha512 => {
                let mut d = Sha512::new();
                for p in parts {
                    d.update(p);
                }
                d.finalize_into(GenericArray::from_mut_slice(out));
            }
        }
    }

    /// HASH(parts...) in a wiped buffer.
    pub fn hash(self, parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(vec![0u8; self.output_len()]);
        self.hash_into(parts, &mut out);
        out
    }
}

/// How K is encoded where it is hashed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KEncoding {
    /// RFC 4253's `mpint` (curve25519-sha256, RFC 8731 section 3.1).
    Mpint,
    /// A plain `string` (the hybrid methods: K is already a hash output, so no sign or
    /// leading-zero rules apply).
    String,
}

/// `bytes` (unsigned, big-endian) as an SSH `mpint` (RFC 4251 section 5): leading zeros
/// dropped, a 0x00 prepended when the top bit is set, length-prefixed. Wiped on drop: the
/// only `mpint` here is the shared secret.
pub fn mpint(bytes: &[u8]) -> Zeroizing<Vec<u8>> {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    let digits = &bytes[first..];
    let pad = digits.first().is_some_and(|&b| b & 0x80 != 0);
    let len = digits.len() + usize::from(pad);
    // Sized up front: growing would leave copies behind in freed memory.
    let mut out = Zeroizing::new(Vec::with_capacity(4 + len));
    out.extend_from_slice(&(len as u32).to_be_bytes());
    if pad {
        out.push(0);
    }
    out.extend_from_slice(digits);
    out
}

/// `bytes` as an SSH `string`, in a wiped buffer sized up front.
fn secret_string(bytes: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(4 + bytes.len()));
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
    out
}

/// The shared secret K of one exchange, with what its method says about hashing it.
/// Wiped on drop; `Debug` shows only the method's properties.
#[derive(ZeroizeOnDrop)]
pub struct SharedSecret {
    #[zeroize(skip)]
    hash: KexHash,
    #[zeroize(skip)]
    encoding: KEncoding,
    raw: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedSecret")
            .field("hash", &self.hash)
            .field("encoding", &self.encoding)
            .finish_non_exhaustive()
    }
}

impl SharedSecret {
    pub fn new(hash: KexHash, encoding: KEncoding, raw: Zeroizing<Vec<u8>>) -> Self {
        Self { hash, encoding, raw }
    }

    /// K as its method feeds it to the hash (`mpint` or `string`), wiped on drop.
    pub fn encoded(&self) -> Zeroizing<Vec<u8>> {
        match self.encoding {
            KEncoding::Mpint => mpint(&self.raw),
            KEncoding::String => secret_string(&self.raw),
        }
    }

    /// K's raw bytes (the X25519 result, or the hybrid's hash output).
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    pub fn hash(&self) -> KexHash {
        self.hash
    }

    pub fn k_encoding(&self) -> KEncoding {
        self.encoding
    }
}

/// What the exchange hash covers. (`Debug` leaves out the shared secret.)
#[derive(Clone, Copy)]
pub struct HashInputs<'a> {
    pub client_id: &'a [u8],
    pub server_id: &'a [u8],
    pub client_kexinit: &'a [u8],
    pub server_kexinit: &'a [u8],
    pub host_key: &'a [u8],
    pub client_public: &'a [u8],
    pub server_public: &'a [u8],
    /// The shared secret, which also says which hash and encoding apply.
    pub shared: &'a SharedSecret,
}

impl std::fmt::Debug for HashInputs<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashInputs")
            .field("client_id", &peer_text(self.client_id, 255, false))
            .field("server_id", &peer_text(self.server_id, 255, false))
            .finish_non_exhaustive()
    }
}

/// H = HASH(V_C || V_S || I_C || I_S || K_S || Q_C || Q_S || K), each a `string` except
/// K, encoded as its method says (hashed from its own wiped buffer, not copied after the
/// public parts). H is as long as the method's hash.
pub fn exchange_hash(i: &HashInputs<'_>) -> Vec<u8> {
    let mut w = Writer::new();
    for s in
        [i.client_id, i.server_id, i.client_kexinit, i.server_kexinit, i.host_key, i.client_public, i.server_public]
    {
        w.string(s);
    }
    let k = i.shared.encoded();
    let hash = i.shared.hash();
    let mut h = vec![0u8; hash.output_len()];
    hash.hash_into(&[&w.finish(), &k], &mut h);
    h
}

/// Key material `letter` ('A'..='F') of `len` bytes under the current method's hash:
/// K1 = HASH(K || H || letter || session_id), K(n+1) = HASH(K || H || K1 || ... || Kn).
/// `session_id` is the FIRST exchange's H whatever its length (a rekey with another
/// method keeps it). Each block is hashed straight into the wiped output.
pub fn derive(shared: &SharedSecret, h: &[u8], letter: u8, session_id: &[u8], len: usize) -> Zeroizing<Vec<u8>> {
    let hash = shared.hash();
    let block = hash.output_len();
    let k = shared.encoded();
    let blocks = len.div_ceil(block).max(1);
    let mut out = Zeroizing::new(vec![0u8; blocks * block]);
    let (first, _) = out.split_at_mut(block);
    hash.hash_into(&[&k, h, &[letter], session_id], first);
    for n in 1..blocks {
        let (done, rest) = out.split_at_mut(n * block);
        hash.hash_into(&[&k, h, done], &mut rest[..block]);
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(hash: KexHash, encoding: KEncoding, raw: &[u8]) -> SharedSecret {
        SharedSecret::new(hash, encoding, Zeroizing::new(raw.to_vec()))
    }

    #[test]
    fn mpint_matches_rfc_4251_examples() {
        assert_eq!(*mpint(&[]), vec![0, 0, 0, 0]);
        assert_eq!(*mpint(&[0, 0]), vec![0, 0, 0, 0]);
        assert_eq!(
            *mpint(&[0x09, 0xa3, 0x78, 0xf9, 0xb2, 0xe3, 0x32, 0xa7]),
            vec![0, 0, 0, 8, 0x09, 0xa3, 0x78, 0xf9, 0xb2, 0xe3, 0x32, 0xa7]
        );
        assert_eq!(*mpint(&[0x80]), vec![0, 0, 0, 2, 0, 0x80]);
        assert_eq!(*mpint(&[0, 0x7f]), vec![0, 0, 0, 1, 0x7f]);
    }

    #[test]
    fn hybrid_k_is_a_string_not_an_mpint() {
        // A leading zero and a top bit: an mpint would strip or pad, a string keeps it.
        let raw = [0x80, 0x01];
        assert_eq!(*secret(KexHash::Sha256, KEncoding::String, &raw).encoded(), vec![0, 0, 0, 2, 0x80, 1]);
        assert_eq!(*secret(KexHash::Sha256, KEncoding::Mpint, &raw).encoded(), vec![0, 0, 0, 3, 0, 0x80, 1]);
        let raw = [0x00, 0x01];
        assert_eq!(*secret(KexHash::Sha256, KEncoding::String, &raw).encoded(), vec![0, 0, 0, 2, 0, 1]);
        assert_eq!(*secret(KexHash::Sha256, KEncoding::Mpint, &raw).encoded(), vec![0, 0, 0, 1, 1]);
    }

    #[test]
    fn derivation_extends_by_rehashing_and_depends_on_every_input() {
        for (hash, block) in [(KexHash::Sha256, 32), (KexHash::Sha512, 64)] {
            let k = secret(hash, KEncoding::Mpint, &[1, 2, 3]);
            let h = vec![7u8; block];
            let long = derive(&k, &h, b'C', &h, 2 * block);
            let short = derive(&k, &h, b'C', &h, block);
            assert_eq!(&long[..block], &short[..]);
            let second = hash.hash(&[&mpint(&[1, 2, 3]), &h, &short]);
            assert_eq!(&long[block..], &second[..]);
            assert_ne!(derive(&k, &h, b'D', &h, block), short);
            assert_ne!(derive(&secret(hash, KEncoding::Mpint, &[1, 2, 4]), &h, b'C', &h, block), short);
            let top_bit = secret(hash, KEncoding::Mpint, &[0x81, 2, 3]);
            let top_bit_string = secret(hash, KEncoding::String, &[0x81, 2, 3]);
            assert_ne!(derive(&top_bit_string, &h, b'C', &h, block), derive(&top_bit, &h, b'C', &h, block));
            // A 32-byte session id (from a first curve25519 exchange) under SHA-512.
            if block == 64 {
                assert_ne!(derive(&k, &h, b'C', &h[..32], block), short);
            }
        }
    }
}
