//! SSH packet protection: 32 KiB payloads sealed and opened per second through
//! `PacketCipher` (framing, padding, sequence-number nonces, length check, tag check) vs the
//! raw primitives doing the same crypto on the same bytes in the same run.

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit};
use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use chacha20::ChaCha20Legacy;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mesh_core::rng::Rng;
use mesh_core::ssh::cipher::PacketCipher;
use mesh_core::ssh::kexinit::{CIPHER_AES256_GCM, CIPHER_CHACHA20_POLY1305};
use poly1305::Poly1305;

const PAYLOAD: usize = 32 * 1024;

fn ciphers(c: &mut Criterion) {
    let mut group = c.benchmark_group("ssh_seal_open_32k");
    group.throughput(Throughput::Bytes(PAYLOAD as u64));
    let payload = vec![0x61u8; PAYLOAD];
    let mut rng = Rng::from_seed(1);

    for name in [CIPHER_CHACHA20_POLY1305, CIPHER_AES256_GCM] {
        let (k, iv) = PacketCipher::key_sizes(name).unwrap_or((0, 0));
        let make = || PacketCipher::new(name, &vec![3u8; k], &vec![4u8; iv]).unwrap_or_else(|e| panic!("{e}"));
        let (mut tx, mut rx) = (make(), make());
        let mut seq = 0u32;
        group.bench_function(format!("packet_cipher/{name}"), |b| {
            b.iter(|| {
                let mut packet = tx.seal(seq, &payload, &mut rng);
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

criterion_group!(benches, ciphers);
criterion_main!(benches);
