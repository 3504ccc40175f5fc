//! The control channel's throughput: one 1 MiB message sealed by the node
//! (`send_message`, `poll_transmit`) and received by the server (`handle_input`,
//! `poll_message`), vs the raw AEAD sealing and opening the same records in place in the
//! same run (with one copy of the plaintext, as any sender makes).

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mesh_core::control::channel::MAX_RECORD_PLAINTEXT;
use mesh_core::control::{ChannelClient, ChannelConfig, ChannelServer};
use mesh_core::wireguard::PrivateKey;

const MESSAGE: usize = 1 << 20;

fn nonce(counter: u64) -> chacha20poly1305::Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    n.into()
}

fn control(c: &mut Criterion) {
    let mut group = c.benchmark_group("control_1mib");
    group.throughput(Throughput::Bytes(MESSAGE as u64));
    let mut rng = mesh_sim::seeded_rng(1);
    let server_key = PrivateKey::from_bytes([2; 32]);
    let config = ChannelConfig::default();
    let client = ChannelClient::new(PrivateKey::from_bytes([1; 32]), server_key.public_key(), &mut rng, config);
    let mut client = client.unwrap_or_else(|e| panic!("{e}"));
    let mut server = ChannelServer::new(server_key, &mut rng, config).unwrap_or_else(|e| panic!("{e}"));
    while let Some(bytes) = client.poll_transmit() {
        server.handle_input(&bytes).unwrap_or_else(|e| panic!("{e}"));
    }
    while let Some(bytes) = server.poll_transmit() {
        client.handle_input(&bytes).unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(client.is_established());
    let message = vec![0x61u8; MESSAGE];
    group.bench_function("channel", |b| {
        b.iter(|| {
            client.send_message(&message).unwrap_or_else(|e| panic!("{e}"));
            while let Some(bytes) = client.poll_transmit() {
                server.handle_input(&bytes).unwrap_or_else(|e| panic!("{e}"));
            }
            assert_eq!(server.poll_message().map(|m| m.len()), Some(MESSAGE));
        })
    });

    let (tx, rx) = (ChaCha20Poly1305::new(&[3u8; 32].into()), ChaCha20Poly1305::new(&[3u8; 32].into()));
    let mut record = vec![0u8; MAX_RECORD_PLAINTEXT];
    let mut counter = 0u64;
    group.bench_function("raw_aead", |b| {
        b.iter(|| {
            for chunk in message.chunks(MAX_RECORD_PLAINTEXT) {
                let buf = &mut record[..chunk.len()];
                buf.copy_from_slice(chunk);
                let tag = tx.encrypt_in_place_detached(&nonce(counter), &[], buf);
                let tag = tag.unwrap_or_else(|e| panic!("{e}"));
                rx.decrypt_in_place_detached(&nonce(counter), &[], buf, &tag).unwrap_or_else(|e| panic!("{e}"));
                counter += 1;
            }
        })
    });
}

criterion_group!(benches, control);
criterion_main!(benches);
