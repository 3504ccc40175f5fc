use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use super::parse::{MAX_LINE_LEN, MAX_PEERS};
use super::*;

const KEY_A: &str = "YEocP0e2o1WT5GlvBvQzVF7EeR6z9aCk0ANZuE6B8W8=";
const KEY_B: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
const KEY_C: &str = "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=";

fn ok(text: &str) -> WgQuick {
    parse(text.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
}

fn err(text: &str) -> ParseError {
    match parse(text.as_bytes()) {
        Ok(c) => panic!("parsed: {c:?}"),
        Err(e) => e,
    }
}

fn full() -> String {
    format!(
        "# a comment\n\
         [Interface]\n\
         PrivateKey = {KEY_A}\n\
         listenport = 51820   # trailing comment\n\
         Address = 10.9.0.1/24, fd00:9::1/64\n\
         MTU = 1380\n\
         DNS = 1.1.1.1\n\
         PostUp = echo never run\n\
         \n\
         [peer]\n\
         PublicKey = {KEY_B}\n\
         PresharedKey = {KEY_C}\n\
         Endpoint = 192.0.2.7:51821\n\
         AllowedIPs = 10.9.0.2/32, fd00:9::2/128\n\
         AllowedIPs = 10.77.0.0/16\n\
         PersistentKeepalive = 25\n\
         [PEER]\n\
         PUBLICKEY = {KEY_C}\n\
         Endpoint = [2001:db8::1]:51820\n\
         AllowedIPs = 10.9.0.3\n\
         PersistentKeepalive = off\n"
    )
}

#[test]
fn a_full_file_with_comments_case_and_two_peers() {
    let c = ok(&full());
    assert_eq!(c.interface.listen_port, Some(51820));
    assert_eq!(c.interface.mtu, Some(1380));
    assert_eq!(c.interface.addresses.len(), 2);
    assert_eq!(c.interface.addresses[0].prefix_len, 24);
    assert_eq!(c.interface.ignored, vec!["DNS".to_string(), "PostUp".to_string()]);
    assert_eq!(c.peers.len(), 2);
    let p = &c.peers[0];
    assert!(p.preshared_key.is_some());
    assert_eq!(p.endpoint, Some(Endpoint::Addr(SocketAddr::from(([192, 0, 2, 7], 51821)))));
    assert_eq!(p.allowed_ips.len(), 3);
    assert_eq!(p.persistent_keepalive, Some(25));
    let q = &c.peers[1];
    assert_eq!(q.persistent_keepalive, None);
    assert_eq!(q.allowed_ips, vec![IpPrefix::host(IpAddr::V4(Ipv4Addr::new(10, 9, 0, 3)))]);
    assert!(matches!(q.endpoint, Some(Endpoint::Addr(a)) if a.is_ipv6()));
}

#[test]
fn the_runtime_config_maps_peers_routes_and_tun() {
    let c = ok(&full());
    let r = c.runtime_config(Path::new("wg0.conf"), "mesh0").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.node.mesh_v4, Ipv4Addr::new(10, 9, 0, 1));
    assert!(r.node.mesh_v6.is_some());
    assert_eq!(r.listen_port, 51820);
    assert_eq!(r.peers.len(), 2);
    assert_eq!(r.peers[0].mesh_v4, Ipv4Addr::new(10, 9, 0, 2));
    assert!(r.peers[0].mesh_v6.is_some());
    assert_eq!(r.peers[0].routes.len(), 1, "the /16 is a route, the hosts are addresses");
    assert_eq!(r.peer_options.len(), 1, "only the first peer has a PSK or keepalive");
    let tun = r.tun.unwrap_or_else(|| panic!("tun"));
    assert_eq!(tun.mtu, 1380);
    assert_eq!(tun.routes.len(), 4, "every allowed IP, each once");
}

#[test]
fn errors_name_their_line() {
    let cases: Vec<(String, usize, &str)> = vec![
        (format!("[Interface]\nPrivateKey = {KEY_A}\nListenPort = 70000\n"), 3, "ListenPort"),
        (format!("[Interface]\nPrivateKey = {KEY_A}\n\n[Peer]\nAllowedIPs = 10.0.0.1/33\n"), 5, "prefix length"),
        (format!("[Interface]\nPrivateKey = {KEY_A}\nBogus = 1\n"), 3, "unknown key"),
        ("[Interface]\nPrivateKey = short\n".to_string(), 2, "base64"),
        (format!("[Interface]\nPrivateKey = {KEY_A}\n[Peer]\nEndpoint = 1.2.3.4:5\n"), 3, "no PublicKey"),
        ("[Interface]\nListenPort = 1\n".to_string(), 1, "no PrivateKey"),
        (format!("[Interface]\nPrivateKey = {KEY_A}\n[Wat]\n"), 3, "unknown section"),
        (format!("[Interface]\nPrivateKey = {KEY_A}\nPrivateKey = {KEY_A}\n"), 3, "twice"),
        (format!("PrivateKey = {KEY_A}\n"), 1, "outside"),
        (format!("[Interface]\nPrivateKey = {KEY_A}\njust words\n"), 3, "Key = Value"),
        (format!("[Interface]\nPrivateKey = {KEY_A}\n[Interface]\n"), 3, "second"),
        (
            format!("[Interface]\nPrivateKey = {KEY_A}\n[Peer]\nPublicKey = {KEY_B}\nEndpoint = no port\n"),
            5,
            "Endpoint",
        ),
        (format!("[Interface]\nPrivateKey = {KEY_A}\nMTU = 70\n"), 3, "MTU"),
        (
            format!("[Interface]\nPrivateKey = {KEY_A}\n[Peer]\nPublicKey = {KEY_B}\n[Peer]\nPublicKey = {KEY_B}\n"),
            5,
            "twice",
        ),
        (format!("[Interface]\nPrivateKey = {KEY_A}\n[Peer\n"), 3, "section header"),
        ("\n\n".to_string(), 1, "no [Interface]"),
    ];
    for (text, line, needle) in cases {
        let e = err(&text);
        assert_eq!(e.line, line, "{text:?}: {e}");
        assert!(e.to_string().contains(needle), "{text:?}: {e}");
    }
}

#[test]
fn hostile_input_is_bounded() {
    let long = format!("[Interface]\nPrivateKey = {}\n", "A".repeat(MAX_LINE_LEN + 1));
    assert_eq!(err(&long).kind, ParseErrorKind::LineTooLong);
    assert_eq!(err("[Interface]\n\u{0}\u{ff}\n").line, 2);
    assert_eq!(parse(&[0xff, 0xfe, b'\n']).map(|_| ()), Err(ParseError { line: 1, kind: ParseErrorKind::NotUtf8 }));
    let mut many = format!("[Interface]\nPrivateKey = {KEY_A}\n");
    for i in 0..=MAX_PEERS {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&(i as u64).to_le_bytes());
        many.push_str(&format!("[Peer]\nPublicKey = {}\n", STANDARD_B64.encode(key)));
    }
    assert_eq!(err(&many).kind, ParseErrorKind::TooManyPeers);
}

#[test]
fn unsupported_address_sets_are_clear_errors() {
    let c = ok(&format!("[Interface]\nPrivateKey = {KEY_A}\nAddress = fd00::1/64\n"));
    let e = c.runtime_config(Path::new("x.conf"), "t0").map(|_| ()).unwrap_err_or_panic();
    assert!(e.starts_with("x.conf: ") && e.contains("IPv4"), "{e}");
}

use base64::engine::general_purpose::STANDARD as STANDARD_B64;
use base64::Engine as _;

trait UnwrapErr {
    fn unwrap_err_or_panic(self) -> String;
}

impl UnwrapErr for Result<(), WgConfigError> {
    fn unwrap_err_or_panic(self) -> String {
        match self {
            Ok(()) => panic!("accepted"),
            Err(e) => e.to_string(),
        }
    }
}
