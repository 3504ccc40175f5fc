//! SSH packet protection: 32 KiB payloads sealed and opened per second through
//! `PacketCipher` (framing, padding, sequence-number nonces, length check, tag check) vs the
//! raw primitives doing the same crypto on the same bytes in the same run.

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit};
use bytes::{BufMut, BytesMut};
use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use chacha20::ChaCha20Legacy;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ed25519_dalek::SigningKey;
use mesh_core::ssh::cipher::PacketCipher;
use mesh_core::ssh::client::{ClientConfig, ClientSession};
use mesh_core::ssh::event::SessionEvent;
use mesh_core::ssh::kexinit::{
    CIPHER_AES256_GCM, CIPHER_CHACHA20_POLY1305, KEX_CURVE25519, KEX_MLKEM768X25519, KEX_SNTRUP761X25519,
};
use mesh_core::ssh::server::{ServerConfig, ServerSession};
use mesh_core::ssh::transport::TransportConfig;
use mesh_core::ssh::wire::PACKET_HEADER;
use mesh_core::time::Instant;
use poly1305::Poly1305;
use std::time::Duration;

const PAYLOAD: usize = 32 * 1024;

fn ciphers(c: &mut Criterion) {
    let mut group = c.benchmark_group("ssh_seal_open_32k");
    group.throughput(Throughput::Bytes(PAYLOAD as u64));
    let mut rng = mesh_sim::seeded_rng(1);

    for name in [CIPHER_CHACHA20_POLY1305, CIPHER_AES256_GCM] {
        let (k, iv) = PacketCipher::key_sizes(name).unwrap_or((0, 0));
        let make = || PacketCipher::new(name, &vec![3u8; k], &vec![4u8; iv]).unwrap_or_else(|e| panic!("{e}"));
        let (mut tx, mut rx) = (make(), make());
        let mut seq = 0u32;
        // What the transport does per CHANNEL_DATA: the message written after a reserved
        // header (one copy of the data, as any SSH implementation makes), sealed in place,
        // opened in place.
        let mut packet = BytesMut::with_capacity(PAYLOAD + 128);
        group.bench_function(format!("packet_cipher/{name}"), |b| {
            b.iter(|| {
                // The cipher alone: the message already in the packet buffer.
                packet.clear();
                packet.resize(PACKET_HEADER + PAYLOAD, 0x61);
                tx.seal_packet(seq, &mut packet, &mut rng);
                let range = rx.open(seq, &mut packet);
                assert!(range.is_ok_and(|r| r.len() == PAYLOAD));
                seq = seq.wrapping_add(1);
            })
        });
        // The source sits 2 KiB away from the destination modulo 4 KiB: when the two happen
        // to be within a few dozen bytes of each other modulo 4 KiB, the CPU's store-to-load
        // aliasing check makes memcpy ~15x slower (11 µs instead of 0.7 µs for 32 KiB, measured
        // here), an accident of allocation that would otherwise decide this figure.
        let source_area = vec![0x61u8; PAYLOAD + 8192];
        packet.clear();
        let dst = packet.as_ptr() as usize + PACKET_HEADER;
        let start = (dst + 2048).wrapping_sub(source_area.as_ptr() as usize) % 4096;
        let source = &source_area[start..start + PAYLOAD];
        group.bench_function(format!("packet_cipher_with_copy/{name}"), |b| {
            b.iter(|| {
                packet.clear();
                packet.put_bytes(0, PACKET_HEADER);
                packet.extend_from_slice(source);
                tx.seal_packet(seq, &mut packet, &mut rng);
                let range = rx.open(seq, &mut packet);
                assert!(range.is_ok_and(|r| r.len() == PAYLOAD));
                seq = seq.wrapping_add(1);
            })
        });
    }

    // The raw primitives on a buffer of the same size (payload + padding + length field).
    let mut buf = vec![0x61u8; PAYLOAD + 16];
    let (main, header) = ([3u8; 32], [5u8; 32]);
    let mut seq = 0u64;
    group.bench_function(format!("raw/{CIPHER_CHACHA20_POLY1305}"), |b| {
        b.iter(|| {
            let nonce = seq.to_be_bytes();
            seq += 1;
            for _ in 0..2 {
                // seal then open: the same keystream and MAC work twice
                ChaCha20Legacy::new(&header.into(), &nonce.into()).apply_keystream(&mut buf[..4]);
                let mut stream = ChaCha20Legacy::new(&main.into(), &nonce.into());
                let mut poly_key = [0u8; 32];
                stream.apply_keystream(&mut poly_key);
                stream.seek(64u64);
                stream.apply_keystream(&mut buf[4..]);
                let tag = Poly1305::new(&poly_key.into()).compute_unpadded(&buf);
                std::hint::black_box(tag);
            }
        })
    });
    let aead = Aes256Gcm::new(&[3u8; 32].into());
    group.bench_function(format!("raw/{CIPHER_AES256_GCM}"), |b| {
        b.iter(|| {
            let nonce = [7u8; 12];
            let (aad, body) = buf.split_at_mut(4);
            let tag = aead.encrypt_in_place_detached(&nonce.into(), aad, body).unwrap_or_default();
            let ok = aead.decrypt_in_place_detached(&nonce.into(), aad, body, &tag).is_ok();
            assert!(ok);
        })
    });
    group.finish();
}

/// Server CPU for one whole login per key exchange method: identification, KEXINIT, the
/// key exchange + ed25519 signature, NEWKEYS, service request, the auth decision and
/// USERAUTH_SUCCESS. Only the time inside the server's calls is counted; the client's work
/// (key generation and decapsulation for the hybrids) is outside the measurement.
fn kex_and_auth(c: &mut Criterion) {
    let host_key = SigningKey::from_bytes(&[42; 32]);
    let host_public = host_key.verifying_key().to_bytes();
    let mut group = c.benchmark_group("ssh_login");
    let mut seed = 0u64;
    for kex in [KEX_CURVE25519, KEX_MLKEM768X25519, KEX_SNTRUP761X25519] {
        group.bench_function(format!("server_kex_and_auth/{kex}"), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    seed += 1;
                    let transport = TransportConfig { kex: vec![kex.to_string()], ..Default::default() };
                    let config = ClientConfig {
                        user: "alice".into(),
                        host_key: Some(host_public),
                        transport,
                        ..Default::default()
                    };
                    let mut client = ClientSession::new(config, mesh_sim::seeded_rng(seed), Instant::ZERO);
                    let started = std::time::Instant::now();
                    let mut server = ServerSession::new(
                        host_key.clone(),
                        ServerConfig::default(),
                        mesh_sim::seeded_rng(!seed),
                        Instant::ZERO,
                    );
                    spent += started.elapsed();
                    let mut done = false;
                    while !done {
                        let mut moved = false;
                        while let Some(bytes) = client.poll_transmit() {
                            let started = std::time::Instant::now();
                            server.handle_input(Instant::ZERO, &bytes);
                            while let Some(event) = server.poll_event() {
                                if matches!(event, SessionEvent::AuthRequest { .. }) {
                                    server.accept_auth(Instant::ZERO);
                                }
                            }
                            spent += started.elapsed();
                            moved = true;
                        }
                        let started = std::time::Instant::now();
                        let out: Vec<BytesMut> = std::iter::from_fn(|| server.poll_transmit()).collect();
                        spent += started.elapsed();
                        for bytes in out {
                            client.handle_input(Instant::ZERO, &bytes);
                            moved = true;
                        }
                        while client.poll_event().is_some() {}
                        done = client.is_authenticated() || !moved;
                    }
                    assert!(client.is_authenticated() && server.is_authenticated());
                }
                spent
            })
        });
    }
    group.finish();
}

criterion_group!(benches, ciphers, kex_and_auth);
criterion_main!(benches);
