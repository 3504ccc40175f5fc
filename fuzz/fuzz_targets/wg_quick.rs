//! Arbitrary bytes as a wg-quick file (`meshd --wg-config`). Must never panic; an error
//! names a line within the file; a parsed file turns into a runtime configuration or a
//! clear error without resolving names (endpoints given by name are skipped here).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use meshd::wg_config::{parse, Endpoint};

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Err(error) => {
            let lines = data.split(|&b| b == b'\n').count();
            assert!(error.line >= 1 && error.line <= lines.max(1), "line {} of {lines}", error.line);
            let _ = error.to_string();
        }
        Ok(config) => {
            if config.peers.iter().any(|p| matches!(p.endpoint, Some(Endpoint::Host { .. }))) {
                return;
            }
            if let Ok(runtime) = config.runtime_config(Path::new("fuzz.conf"), "fuzz0") {
                assert_eq!(runtime.peers.len(), config.peers.len());
            }
        }
    }
});
