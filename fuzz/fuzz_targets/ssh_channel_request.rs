//! The typed parsers of the connection protocol: channel requests (pty-req with its
//! terminal modes, env, exec, signal, exit-signal, ...), channel kinds and global requests.
//! Must never panic; whatever decodes must re-encode and decode to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_core::ssh::channel::{ChannelKind, ChannelRequest, GlobalRequest};
use mesh_core::ssh::terminal::{encode_modes, parse_modes};
use mesh_core::ssh::wire::{Reader, Writer};

const REQUESTS: [&[u8]; 12] = [
    b"pty-req",
    b"env",
    b"shell",
    b"exec",
    b"subsystem",
    b"window-change",
    b"signal",
    b"exit-status",
    b"exit-signal",
    b"auth-agent-req@openssh.com",
    b"x11-req",
    b"keepalive@openssh.com",
];
const KINDS: [&[u8]; 5] = [b"session", b"direct-tcpip", b"forwarded-tcpip", b"auth-agent@openssh.com", b"x11"];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    if let Ok(modes) = parse_modes(body) {
        assert_eq!(parse_modes(&encode_modes(&modes)), Ok(modes));
    }
    let name = REQUESTS[usize::from(selector) % REQUESTS.len()];
    if let Ok(request) = ChannelRequest::decode(name, &mut Reader::new(body)) {
        let mut w = Writer::new();
        request.encode_fields(&mut w);
        let again = ChannelRequest::decode(request.type_name().as_bytes(), &mut Reader::new(&w.finish()));
        assert_eq!(again, Ok(request));
    }
    let kind = KINDS[usize::from(selector) % KINDS.len()];
    let _ = ChannelKind::decode(kind, &mut Reader::new(body));
    let global: &[u8] = if selector & 1 == 0 { b"tcpip-forward" } else { b"cancel-tcpip-forward" };
    let _ = GlobalRequest::decode(global, &mut Reader::new(body));
});
