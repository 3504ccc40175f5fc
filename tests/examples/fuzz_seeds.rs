//! Writes the corpus seeds of the WireGuard fuzz targets: real handshakes and data between
//! the fuzz fixture's device and its peer, so the fuzzers start past the easy rejections.
//!
//! `cargo run -p mesh-tests --example fuzz_seeds -- fuzz/corpus`

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::BytesMut;
use mesh_core::time::{Instant, UnixTime};
use mesh_core::wireguard::{packet_buffer, Config, IpPrefix, PeerConfig, WireGuard};
use mesh_tests::ipv4_udp;

#[path = "../../fuzz/fuzz_targets/common.rs"]
mod common;
#[path = "../../fuzz/fuzz_targets/control_fixture.rs"]
mod control_fixture;

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let d = dir.join(target);
    std::fs::create_dir_all(&d)?;
    std::fs::write(d.join(format!("seed-{name}")), bytes)
}

fn frame(out: &mut Vec<u8>, datagram: &[u8]) {
    out.extend_from_slice(&(datagram.len() as u16).to_be_bytes());
    out.push(0);
    out.extend_from_slice(datagram);
}

fn main() -> std::io::Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "fuzz/corpus".into());
    let dir = Path::new(&dir);
    let now = Instant::from_micros(1_000_000);
    let device_addr = SocketAddr::from(([192, 0, 2, 1], 51820));
    let peer_addr = SocketAddr::from(common::PEER_ADDR);

    // The fuzz fixture's device, constructed exactly as the targets do, so its responses
    // (and so the session keys) are the same when the seed is replayed.
    let mut device = common::device();
    let mut peer = WireGuard::new(
        Config::new(common::peer_key()),
        mesh_sim::seeded_rng(2),
        now,
        UnixTime(Duration::from_secs(1_700_000_000)),
    )
    .map_err(std::io::Error::other)?;
    let mut pc = PeerConfig::new(common::device_key().public_key(), vec![IpPrefix::host([100, 64, 0, 1].into())]);
    pc.endpoint = Some(device_addr);
    peer.add_peer(now, pc).map_err(std::io::Error::other)?;

    let packet = ipv4_udp([100, 64, 0, 2].into(), [100, 64, 0, 1].into(), b"seed payload");
    let _ = peer.handle_packet(now, packet_buffer(&packet));
    let mut to_device: Vec<BytesMut> = Vec::new();
    let mut sequence = Vec::new();
    for _ in 0..4 {
        while let Some(t) = peer.poll_transmit() {
            to_device.push(t.payload);
        }
        for d in to_device.drain(..) {
            frame(&mut sequence, &d);
            if d[0] == 1 {
                write(dir, "wg_responder", "initiation-body", &d[4..116])?;
                write(dir, "wg_datagram", "initiation", &{
                    let mut one = Vec::new();
                    frame(&mut one, &d);
                    one
                })?;
            }
            let _ = device.handle_datagram(now, peer_addr, d);
        }
        while let Some(t) = device.poll_transmit() {
            let _ = peer.handle_datagram(now, device_addr, t.payload);
        }
    }
    write(dir, "wg_datagram", "handshake-and-data", &sequence)?;
    let mut replay = Vec::new();
    for c in [0u16, 1, 1, 64, 3, 9000, 2] {
        replay.push(0);
        replay.extend_from_slice(&c.to_le_bytes());
    }
    write(dir, "wg_replay_window", "mixed", &replay)?;

    // IP packets: the UDP packet above, a TCP SYN to port 22 and an ICMP echo request.
    write(dir, "ip_packet", "udp", &packet)?;
    let mut syn = ipv4_udp([100, 64, 0, 2].into(), [100, 64, 0, 1].into(), &[0u8; 12]);
    syn[9] = 6;
    syn[20..22].copy_from_slice(&40000u16.to_be_bytes());
    syn[22..24].copy_from_slice(&22u16.to_be_bytes());
    syn[32] = 5 << 4;
    syn[33] = 0x02;
    write(dir, "ip_packet", "tcp-syn", &syn)?;
    let mut echo = ipv4_udp([100, 64, 0, 2].into(), [100, 64, 0, 1].into(), &[]);
    echo[9] = 1;
    echo[20..28].copy_from_slice(&[8, 0, 0, 0, 0x12, 0x34, 0, 1]);
    write(dir, "ip_packet", "icmp-echo", &echo)?;

    // DNS: A query for alpha.tail.mesh, PTR query for 1.0.64.100.in-addr.arpa.
    let query = |name: &str, qtype: u8| {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, qtype, 0, 1]);
        q
    };
    write(dir, "dns_query", "a", &query("alpha.tail.mesh", 1))?;
    write(dir, "dns_query", "ptr", &query("1.0.64.100.in-addr.arpa", 12))?;
    // DNS over TCP: a read size (first byte), then length-prefixed queries, pipelined.
    let tcp = |piece: u8, queries: &[Vec<u8>]| {
        let mut out = vec![piece];
        for q in queries {
            out.extend_from_slice(&(q.len() as u16).to_be_bytes());
            out.extend_from_slice(q);
        }
        out
    };
    write(dir, "dns_tcp", "one", &tcp(63, &[query("alpha.tail.mesh", 1)]))?;
    let pipelined = [query("alpha.tail.mesh", 1), query("1.0.64.100.in-addr.arpa", 12), query("beta", 28)];
    write(dir, "dns_tcp", "pipelined-small-reads", &tcp(2, &pipelined))?;
    // SSH before keys: an identification line and a framed KEXINIT.
    let mut ssh = b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n".to_vec();
    let kexinit = mesh_core::ssh::kexinit::KexInit::client([3; 16]).encode();
    let mut packet = {
        let mut w = mesh_core::ssh::wire::Writer::new();
        w.raw(&kexinit);
        w.finish_packet()
    };
    mesh_core::ssh::packet::frame_plain_packet(&mut packet, &mut mesh_sim::seeded_rng(3));
    ssh.extend_from_slice(&packet);
    write(dir, "ssh_transport_plain", "kexinit", &ssh)?;
    write(dir, "ssh_name_list", "kex", b"curve25519-sha256,curve25519-sha256@libssh.org,ext-info-c")?;
    write(dir, "ssh_name_list", "kex-pq", mesh_core::ssh::kexinit::KEX_METHODS.join(",").as_bytes())?;
    // Connection protocol: a pty-req (selector 0) with terminal modes, an env (selector 1).
    {
        use mesh_core::ssh::channel::{ChannelRequest, PtyRequest};
        use mesh_core::ssh::wire::Writer;
        let pty = ChannelRequest::Pty(PtyRequest {
            term: "xterm-256color".into(),
            cols: 80,
            rows: 24,
            width_px: 640,
            height_px: 480,
            modes: vec![(1, 3), (53, 1), (128, 38400), (129, 38400)],
        });
        let mut w = Writer::new();
        w.u8(0);
        pty.encode_fields(&mut w);
        write(dir, "ssh_channel_request", "pty", &w.finish())?;
        let mut w = Writer::new();
        w.u8(1);
        ChannelRequest::Env { name: "LANG".into(), value: "C.UTF-8".into() }.encode_fields(&mut w);
        write(dir, "ssh_channel_request", "env", &w.finish())?;
        // A session opened, accepted, data, a window adjust, an exec request, EOF, close.
        let mut seq = Vec::new();
        let mut message = |action: u8, body: &[u8]| {
            seq.push(action);
            seq.extend_from_slice(&(body.len() as u16).to_be_bytes());
            seq.extend_from_slice(body);
        };
        let mut open = Writer::message(mesh_core::ssh::msg::CHANNEL_OPEN);
        open.string(b"session").u32(7).u32(65536).u32(1024);
        message(0, &open.finish());
        message(0x80, &[]);
        let mut data = Writer::message(mesh_core::ssh::msg::CHANNEL_DATA);
        data.u32(0).string(b"hello");
        message(0, &data.finish());
        message(0x82, &[]);
        let mut exec = Writer::message(mesh_core::ssh::msg::CHANNEL_REQUEST);
        exec.u32(0).string(b"exec").bool(true).string(b"true");
        message(0, &exec.finish());
        message(0x83, &[]);
        message(0, &[mesh_core::ssh::msg::CHANNEL_WINDOW_ADJUST, 0, 0, 0, 0, 0, 0, 1, 0]);
        message(0x81, b"reply");
        message(0, &[mesh_core::ssh::msg::CHANNEL_EOF, 0, 0, 0, 0]);
        message(0, &[mesh_core::ssh::msg::CHANNEL_CLOSE, 0, 0, 0, 0]);
        write(dir, "ssh_connection", "session", &seq)?;
    }
    // A whole login as our client sends it to the fuzz target's server (same host key, RNG
    // and time, so the server answers exactly as it did here): the fuzzer starts with keys in
    // use and reaches SERVICE_REQUEST and USERAUTH_REQUEST. First byte: the target's split.
    // One seed per key exchange: `login` is the default (mlkem768x25519-sha256), the others
    // force sntrup761x25519-sha512 and curve25519-sha256.
    for (name, kex) in [
        ("login", None),
        ("login-sntrup761", Some(mesh_core::ssh::kexinit::KEX_SNTRUP761X25519)),
        ("login-curve25519", Some(mesh_core::ssh::kexinit::KEX_CURVE25519)),
    ] {
        use mesh_core::ssh::client::{ClientConfig, ClientSession};
        use mesh_core::ssh::server::{ServerConfig, ServerSession};
        use mesh_core::ssh::transport::TransportConfig;
        let key = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
        let mut server =
            ServerSession::new(key, ServerConfig::default(), mesh_core::rng::Rng::new([1; 32]), Instant::ZERO);
        let mut transport = TransportConfig::default();
        if let Some(kex) = kex {
            transport.kex = vec![kex.to_string()];
        }
        let config = ClientConfig { user: "fuzz".into(), transport, ..Default::default() };
        let mut client = ClientSession::new(config, mesh_sim::seeded_rng(7), Instant::ZERO);
        let mut stream = vec![40u8];
        for _ in 0..20 {
            while let Some(bytes) = client.poll_transmit() {
                stream.extend_from_slice(&bytes);
                server.handle_input(Instant::ZERO, &bytes);
            }
            while let Some(bytes) = server.poll_transmit() {
                client.handle_input(Instant::ZERO, &bytes);
            }
            while server.poll_event().is_some() || client.poll_event().is_some() {}
        }
        write(dir, "ssh_server_transport", name, &stream)?;
    }
    control_channel_seeds(dir)?;
    println!("seeds written under {}", dir.display());
    Ok(())
}

/// The control channel target: the fixture's real handshake, so each mode starts past the
/// easy rejections. First byte: the mode; second: the read size less one.
fn control_channel_seeds(dir: &Path) -> std::io::Result<()> {
    use control_fixture::*;
    let target = "control_channel";
    let fail = |e: mesh_core::control::ChannelError| std::io::Error::other(e.to_string());
    // Server mode: record 1 and the node's messages (a small one, an empty one, one of
    // two records), sealed with the keys the target's server derives.
    let (mut client, mut server) = (client(), server());
    for len in [5, 0, 70_000] {
        client.send_message(&payload(0, len)).map_err(fail)?;
    }
    let mut up = drain(|| client.poll_transmit());
    server.handle_input(&up).map_err(fail)?;
    let m2 = drain(|| server.poll_transmit());
    client.handle_input(&m2).map_err(fail)?;
    up.extend_from_slice(&drain(|| client.poll_transmit()));
    let seed = |mode: u8, piece: u8, body: &[u8]| [&[mode, piece][..], body].concat();
    write(dir, target, "server-handshake-and-messages", &seed(MODE_SERVER, 255, &up))?;
    write(dir, target, "server-handshake-bytewise", &seed(MODE_SERVER, 0, &up[..200]))?;

    // Client mode: operations on an established pair.
    let ops = [
        &[OP_SERVER_SENDS, 0, 6][..],                // 12 bytes
        &[OP_CLIENT_SENDS, 0, 4],                    // 8 bytes
        &[OP_SERVER_SENDS, 0x80, 0x00],              // 65536 bytes: two records
        &[OP_SERVER_SENDS, 0, 0],                    // empty
        &[OP_SERVER_SENDS_FLIPPED, 0, 10, 0, 30, 3], // 20 bytes, bit 3 of byte 30 flipped
    ]
    .concat();
    write(dir, target, "client-ops", &seed(MODE_CLIENT, 16, &ops))?;
    // 131070 bytes: too large for the client.
    let ops = [OP_SERVER_SENDS, 0xff, 0xff, OP_RAW_BYTES, 3, 0, 1, 9, OP_SERVER_SENDS, 0, 1];
    write(dir, target, "client-too-large-and-raw", &seed(MODE_CLIENT, 255, &ops))?;

    // Upgrade mode: the 101, message 2 and a message from the fixture's server, which is
    // what the fixture's client reads after its upgrade.
    let (_, mut server, m2) = established();
    server.send_message(b"netmap").map_err(fail)?;
    let mut down = mesh_core::control::upgrade::upgrade_response();
    down.extend_from_slice(&m2);
    down.extend_from_slice(&drain(|| server.poll_transmit()));
    write(dir, target, "upgrade-switched", &seed(MODE_UPGRADE, 6, &down))?;
    write(
        dir,
        target,
        "upgrade-refused",
        &seed(MODE_UPGRADE, 255, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
    )?;
    Ok(())
}
