//! The name-list parser: never panics, and what it accepts has no empty names and only
//! printable ASCII without commas in names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_core::ssh::wire::NameList;

fuzz_target!(|data: &[u8]| {
    if let Ok(list) = NameList::parse(data) {
        for name in list.iter() {
            assert!(!name.is_empty() && name.len() <= 64);
            assert!(name.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b','));
        }
    }
});
