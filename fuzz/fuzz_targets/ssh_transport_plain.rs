//! Bytes a peer sends before keys are in use: identification line, then packets (KEXINIT
//! and anything else). Must never panic; every decoded KEXINIT must re-encode to the same
//! bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_core::ssh::kexinit::{negotiate, KexInit};
use mesh_core::ssh::packet::parse_plain;
use mesh_core::ssh::version::VersionReader;

fuzz_target!(|data: &[u8]| {
    let mut version = VersionReader::new(data.first().is_some_and(|b| b & 1 == 1));
    let Ok(Some((_id, used))) = version.feed(data) else { return };
    let mut rest = &data[used..];
    while let Ok(Some((payload, consumed))) = parse_plain(rest) {
        if let Ok(kexinit) = KexInit::decode(&rest[payload.clone()]) {
            let again = KexInit::decode(&kexinit.encode());
            assert_eq!(again.as_ref(), Ok(&kexinit));
            let _ = negotiate(&kexinit, &KexInit::server([0; 16]));
            let _ = negotiate(&KexInit::client([0; 16]), &kexinit);
        }
        rest = &rest[consumed..];
    }
});
