//! Arbitrary bytes as an encrypted SSH packet for each cipher: length check, MAC check and
//! decryption must refuse garbage without panicking; forged packets must never open.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_core::ssh::cipher::{PacketCipher, TAG_LEN};
use mesh_core::ssh::kexinit::CIPHERS;

fuzz_target!(|data: &[u8]| {
    for name in CIPHERS {
        let Some((k, iv)) = PacketCipher::key_sizes(name) else { continue };
        let Ok(mut rx) = PacketCipher::new(name, &vec![7u8; k], &vec![9u8; iv]) else { continue };
        let Some(first4) = data.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok()) else { return };
        if let Ok(len) = rx.open_length(0, first4) {
            assert!(len <= 256 * 1024);
            let mut packet = data.to_vec();
            if packet.len() == 4 + len + TAG_LEN {
                // Random bytes cannot carry a valid tag for a key they do not know.
                assert!(rx.open(0, &mut packet).is_err());
            }
        }
    }
});
