//! Arbitrary bytes as one local API request line (what any caller allowed on meshd's Unix
//! socket sends). Must never panic; a request that parses encodes back to one that parses
//! to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshd::local_api::{Request, MAX_REQUEST};

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_REQUEST {
        return;
    }
    let Ok(request) = serde_json::from_slice::<Request>(data) else { return };
    let text = serde_json::to_vec(&request).expect("a parsed request encodes");
    let again: Request = serde_json::from_slice(&text).expect("an encoded request parses");
    assert_eq!(again, request);
});
