//! KEXINIT (RFC 4253 section 7.1) and algorithm negotiation, with OpenSSH's extensions:
//! strict KEX (`kex-strict-*-v00@openssh.com`, the Terrapin fix) and `ext-info-c`/`-s`.

use bytes::BytesMut;
use thiserror::Error;

use super::msg;
use super::wire::{NameList, Reader, WireError, Writer};

pub use super::kex::{
    KEX_CURVE25519, KEX_CURVE25519_LIBSSH, KEX_METHODS, KEX_MLKEM768X25519, KEX_SNTRUP761X25519,
    KEX_SNTRUP761X25519_OPENSSH,
};
pub const HOST_KEY_ED25519: &str = "ssh-ed25519";
pub const CIPHER_CHACHA20_POLY1305: &str = "chacha20-poly1305@openssh.com";
pub const CIPHER_AES256_GCM: &str = "aes256-gcm@openssh.com";
pub const CIPHER_AES128_GCM: &str = "aes128-gcm@openssh.com";
pub const STRICT_KEX_CLIENT: &str = "kex-strict-c-v00@openssh.com";
pub const STRICT_KEX_SERVER: &str = "kex-strict-s-v00@openssh.com";
pub const EXT_INFO_CLIENT: &str = "ext-info-c";
pub const EXT_INFO_SERVER: &str = "ext-info-s";

/// Our ciphers, preferred first. All are AEADs, so the MAC lists are only advertised for
/// peers that insist on a match and are never used.
pub const CIPHERS: [&str; 3] = [CIPHER_CHACHA20_POLY1305, CIPHER_AES256_GCM, CIPHER_AES128_GCM];
const MACS: [&str; 1] = ["hmac-sha2-256-etm@openssh.com"];

/// Names in a kex list that are signals, not algorithms.
fn is_pseudo(name: &str) -> bool {
    matches!(name, STRICT_KEX_CLIENT | STRICT_KEX_SERVER | EXT_INFO_CLIENT | EXT_INFO_SERVER)
        || name.starts_with("kex-strict-")
}

/// A KEXINIT message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KexInit {
    pub cookie: [u8; 16],
    pub kex: Vec<String>,
    pub host_key: Vec<String>,
    pub cipher_c2s: Vec<String>,
    pub cipher_s2c: Vec<String>,
    pub mac_c2s: Vec<String>,
    pub mac_s2c: Vec<String>,
    pub compression_c2s: Vec<String>,
    pub compression_s2c: Vec<String>,
    pub first_kex_follows: bool,
}

fn owned(list: NameList<'_>) -> Vec<String> {
    list.iter().map(str::to_string).collect()
}

fn names<const N: usize>(list: [&str; N]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

impl KexInit {
    /// What our server offers: [`KEX_METHODS`] in that order of preference, then the
    /// signals.
    pub fn server(cookie: [u8; 16]) -> Self {
        Self::ours(cookie, &KEX_METHODS, [EXT_INFO_SERVER, STRICT_KEX_SERVER])
    }

    /// What our client offers, in the same order.
    pub fn client(cookie: [u8; 16]) -> Self {
        Self::ours(cookie, &KEX_METHODS, [EXT_INFO_CLIENT, STRICT_KEX_CLIENT])
    }

    /// Our KEXINIT with the key exchange methods `kex` (preferred first) and the signals
    /// `pseudo` after them.
    pub fn ours<S: AsRef<str>>(cookie: [u8; 16], kex: &[S], pseudo: [&str; 2]) -> Self {
        Self {
            cookie,
            kex: kex.iter().map(|s| s.as_ref().to_string()).chain(pseudo.iter().map(|s| s.to_string())).collect(),
            host_key: names([HOST_KEY_ED25519]),
            cipher_c2s: names(CIPHERS),
            cipher_s2c: names(CIPHERS),
            mac_c2s: names(MACS),
            mac_s2c: names(MACS),
            compression_c2s: names(["none"]),
            compression_s2c: names(["none"]),
            first_kex_follows: false,
        }
    }

    /// Decode a KEXINIT payload (starting with its message number).
    pub fn decode(payload: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(payload);
        if r.u8()? != msg::KEXINIT {
            return Err(WireError::Truncated);
        }
        let mut cookie = [0u8; 16];
        cookie.copy_from_slice(r.bytes(16)?);
        let kex = owned(r.name_list()?);
        let host_key = owned(r.name_list()?);
        let cipher_c2s = owned(r.name_list()?);
        let cipher_s2c = owned(r.name_list()?);
        let mac_c2s = owned(r.name_list()?);
        let mac_s2c = owned(r.name_list()?);
        let compression_c2s = owned(r.name_list()?);
        let compression_s2c = owned(r.name_list()?);
        let _languages_c2s = r.name_list()?;
        let _languages_s2c = r.name_list()?;
        let first_kex_follows = r.bool()?;
        let _reserved = r.u32()?;
        r.finish()?;
        Ok(Self {
            cookie,
            kex,
            host_key,
            cipher_c2s,
            cipher_s2c,
            mac_c2s,
            mac_s2c,
            compression_c2s,
            compression_s2c,
            first_kex_follows,
        })
    }

    /// The payload (message number included).
    pub fn encode(&self) -> BytesMut {
        let mut w = Writer::message(msg::KEXINIT);
        w.raw(&self.cookie);
        for list in [
            &self.kex,
            &self.host_key,
            &self.cipher_c2s,
            &self.cipher_s2c,
            &self.mac_c2s,
            &self.mac_s2c,
            &self.compression_c2s,
            &self.compression_s2c,
        ] {
            w.name_list(list.iter().map(String::as_str));
        }
        w.name_list([]).name_list([]).bool(self.first_kex_follows).u32(0);
        w.finish()
    }
}

/// The algorithms both sides agreed on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub kex: String,
    pub host_key: String,
    pub cipher_c2s: String,
    pub cipher_s2c: String,
    /// Both sides signalled strict KEX: sequence numbers reset at NEWKEYS and any message
    /// other than the key exchange's during the first exchange is fatal.
    pub strict_kex: bool,
    /// The client asked for EXT_INFO (`server-sig-algs`).
    pub client_wants_ext_info: bool,
    /// The client sent a guessed first kex packet that must be ignored (wrong guess).
    pub ignore_first_kex_packet: bool,
}

/// No algorithm in common.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum NegotiateError {
    #[error("no common {0} algorithm")]
    NoCommon(&'static str),
}

/// The first algorithm of the client's list that the server also supports (RFC 4253).
fn choose(client: &[String], server: &[String], what: &'static str) -> Result<String, NegotiateError> {
    client.iter().filter(|c| !is_pseudo(c)).find(|c| server.contains(c)).cloned().ok_or(NegotiateError::NoCommon(what))
}

/// Negotiate from both KEXINITs.
pub fn negotiate(client: &KexInit, server: &KexInit) -> Result<Negotiated, NegotiateError> {
    let kex = choose(&client.kex, &server.kex, "key exchange")?;
    let host_key = choose(&client.host_key, &server.host_key, "host key")?;
    let cipher_c2s = choose(&client.cipher_c2s, &server.cipher_c2s, "client-to-server cipher")?;
    let cipher_s2c = choose(&client.cipher_s2c, &server.cipher_s2c, "server-to-client cipher")?;
    choose(&client.compression_c2s, &server.compression_c2s, "compression")?;
    choose(&client.compression_s2c, &server.compression_s2c, "compression")?;
    let first_real = |list: &[String]| list.iter().find(|n| !is_pseudo(n)).cloned();
    let guessed_right =
        first_real(&client.kex) == first_real(&server.kex) && client.host_key.first() == server.host_key.first();
    Ok(Negotiated {
        strict_kex: client.kex.iter().any(|n| n == STRICT_KEX_CLIENT)
            && server.kex.iter().any(|n| n == STRICT_KEX_SERVER),
        client_wants_ext_info: client.kex.iter().any(|n| n == EXT_INFO_CLIENT),
        ignore_first_kex_packet: client.first_kex_follows && !guessed_right,
        kex,
        host_key,
        cipher_c2s,
        cipher_s2c,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What OpenSSH 9.2's client sends (abridged to what matters).
    fn openssh_client() -> KexInit {
        let list = |s: &str| s.split(',').map(str::to_string).collect::<Vec<_>>();
        KexInit {
            cookie: [7; 16],
            kex: list("sntrup761x25519-sha512@openssh.com,curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256,diffie-hellman-group14-sha256,ext-info-c,kex-strict-c-v00@openssh.com"),
            host_key: list("ssh-ed25519-cert-v01@openssh.com,ecdsa-sha2-nistp256,ssh-ed25519,rsa-sha2-512"),
            cipher_c2s: list("chacha20-poly1305@openssh.com,aes128-ctr,aes256-ctr,aes128-gcm@openssh.com,aes256-gcm@openssh.com"),
            cipher_s2c: list("chacha20-poly1305@openssh.com,aes128-ctr,aes256-ctr,aes128-gcm@openssh.com,aes256-gcm@openssh.com"),
            mac_c2s: list("umac-64-etm@openssh.com,hmac-sha2-256-etm@openssh.com"),
            mac_s2c: list("umac-64-etm@openssh.com,hmac-sha2-256-etm@openssh.com"),
            compression_c2s: list("none,zlib@openssh.com"),
            compression_s2c: list("none,zlib@openssh.com"),
            first_kex_follows: false,
        }
    }

    #[test]
    fn both_roles_offer_the_hybrids_first_and_curve25519_still() {
        for ours in [KexInit::server([0; 16]), KexInit::client([0; 16])] {
            assert_eq!(&ours.kex[..5], &KEX_METHODS.map(String::from)[..]);
            assert_eq!(
                KEX_METHODS,
                [
                    "mlkem768x25519-sha256",
                    "sntrup761x25519-sha512",
                    "sntrup761x25519-sha512@openssh.com",
                    "curve25519-sha256",
                    "curve25519-sha256@libssh.org"
                ]
            );
        }
        let mut curve_only = openssh_client();
        curve_only.kex = vec![KEX_CURVE25519_LIBSSH.into()];
        let n = negotiate(&curve_only, &KexInit::server([0; 16])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n.kex, KEX_CURVE25519_LIBSSH);
    }

    #[test]
    fn encode_decode_round_trip() {
        let ours = KexInit::server([1; 16]);
        assert_eq!(KexInit::decode(&ours.encode()), Ok(ours));
        let theirs = openssh_client();
        assert_eq!(KexInit::decode(&theirs.encode()), Ok(theirs));
    }

    #[test]
    fn negotiates_with_openssh_and_detects_strict_kex_and_ext_info() {
        let n = negotiate(&openssh_client(), &KexInit::server([0; 16])).unwrap_or_else(|e| panic!("{e}"));
        // OpenSSH 9.2 offers sntrup761 under its @openssh.com name only.
        assert_eq!(n.kex, KEX_SNTRUP761X25519_OPENSSH);
        assert_eq!(n.host_key, HOST_KEY_ED25519);
        assert_eq!(n.cipher_c2s, CIPHER_CHACHA20_POLY1305);
        assert!(n.strict_kex);
        assert!(n.client_wants_ext_info);
        assert!(!n.ignore_first_kex_packet);
        // A client forcing `-c aes256-gcm@openssh.com`.
        let mut forced = openssh_client();
        forced.cipher_c2s = vec![CIPHER_AES256_GCM.into()];
        forced.cipher_s2c = vec![CIPHER_AES256_GCM.into()];
        let n = negotiate(&forced, &KexInit::server([0; 16])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((n.cipher_c2s.as_str(), n.cipher_s2c.as_str()), (CIPHER_AES256_GCM, CIPHER_AES256_GCM));
    }

    #[test]
    fn refuses_without_common_algorithms_and_ignores_pseudo_names() {
        let mut c = openssh_client();
        c.cipher_c2s = vec!["aes128-ctr".into()];
        assert_eq!(negotiate(&c, &KexInit::server([0; 16])), Err(NegotiateError::NoCommon("client-to-server cipher")));
        let mut c = openssh_client();
        c.kex = vec![STRICT_KEX_SERVER.into(), EXT_INFO_CLIENT.into()];
        assert_eq!(negotiate(&c, &KexInit::server([0; 16])), Err(NegotiateError::NoCommon("key exchange")));
        let mut c = openssh_client();
        c.first_kex_follows = true;
        let n = negotiate(&c, &KexInit::server([0; 16])).unwrap_or_else(|e| panic!("{e}"));
        assert!(n.ignore_first_kex_packet, "guessed sntrup761@openssh.com, our first is mlkem768");
        // A client whose first choice is ours guessed right.
        let mut c = openssh_client();
        c.kex.insert(0, KEX_MLKEM768X25519.into());
        c.host_key = vec![HOST_KEY_ED25519.into()];
        c.first_kex_follows = true;
        let n = negotiate(&c, &KexInit::server([0; 16])).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n.kex, KEX_MLKEM768X25519);
        assert!(!n.ignore_first_kex_packet);
    }

    #[test]
    fn malformed_kexinit_is_refused() {
        let good = KexInit::server([1; 16]).encode();
        for cut in 0..good.len() {
            assert!(KexInit::decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = good.to_vec();
        trailing.push(0);
        assert_eq!(KexInit::decode(&trailing), Err(WireError::Trailing));
    }
}
