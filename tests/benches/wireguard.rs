//! WireGuard benchmarks (BENCHMARKS.md has figures and commands):
//! - `seal_open/<size>`: one packet through the whole device pair (route, seal, frame,
//!   classify, open, replay window, inner-source check) vs the raw ChaCha20-Poly1305 AEAD
//!   sealing and opening the same bytes in place.
//! - `handshake`: complete handshakes (initiation, response, confirmation) per second, both
//!   sides in one process, vs boringtun doing the same.

use std::net::Ipv4Addr;
use std::time::Duration;

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey as BtPublic, StaticSecret};
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use mesh_core::wireguard::packet_buffer;
use mesh_tests::{ipv4_udp, Pair};

fn seal_open(c: &mut Criterion) {
    let mut group = c.benchmark_group("seal_open");
    for size in [64usize, 1420, 65_000] {
        group.throughput(Throughput::Bytes(size as u64));
        let packet = ipv4_udp(Ipv4Addr::new(100, 64, 0, 1), Ipv4Addr::new(100, 64, 0, 2), &vec![0xab; size - 28]);

        let aead = ChaCha20Poly1305::new(&[7u8; 32].into());
        let mut counter = 0u64;
        group.bench_with_input(BenchmarkId::new("raw_aead", size), &packet, |b, packet| {
            b.iter_batched(
                || packet_buffer(packet),
                |mut buf| {
                    counter += 1;
                    let mut nonce = [0u8; 12];
                    nonce[4..].copy_from_slice(&counter.to_le_bytes());
                    let tag = aead.encrypt_in_place_detached(&nonce.into(), &[], &mut buf[16..]).unwrap_or_default();
                    let ok = aead.decrypt_in_place_detached(&nonce.into(), &[], &mut buf[16..], &tag).is_ok();
                    assert!(ok);
                    buf
                },
                BatchSize::SmallInput,
            )
        });

        let mut pair = Pair::new(1);
        pair.send(0, b"handshake");
        let [a, b] = &mut pair.sides;
        let from = a.underlay;
        let now = pair.now;
        group.bench_with_input(BenchmarkId::new("device_pair", size), &packet, |bench, packet| {
            bench.iter_batched(
                || packet_buffer(packet),
                |buf| {
                    let _ = a.wg.handle_packet(now, buf);
                    let t = a.wg.poll_transmit().map(|t| t.payload).unwrap_or_default();
                    let _ = b.wg.handle_datagram(now, from, t);
                    let r = b.wg.poll_received();
                    assert!(r.is_some());
                    r
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn handshakes(c: &mut Criterion) {
    let mut group = c.benchmark_group("handshake");
    group.throughput(Throughput::Elements(1));

    // Both devices driven directly, message by message, as boringtun is below.
    let mut pair = Pair::new(2);
    let [a, b] = &mut pair.sides;
    let (a_addr, b_addr, peer) = (a.underlay, b.underlay, a.peer);
    let mut now = pair.now;
    group.bench_function("mesh_core", |bench| {
        bench.iter(|| {
            // Past the 5 s initiation rate limit.
            now += Duration::from_secs(6);
            let _ = a.wg.connect(now, peer);
            let init = a.wg.poll_transmit().map(|t| t.payload).unwrap_or_default();
            let _ = b.wg.handle_datagram(now, a_addr, init);
            let resp = b.wg.poll_transmit().map(|t| t.payload).unwrap_or_default();
            let _ = a.wg.handle_datagram(now, b_addr, resp);
            let keepalive = a.wg.poll_transmit().map(|t| t.payload).unwrap_or_default();
            assert_eq!(b.wg.handle_datagram(now, a_addr, keepalive), Ok(()));
            while a.wg.poll_event().is_some() {}
            while b.wg.poll_event().is_some() {}
        })
    });

    let a_secret = StaticSecret::from([1u8; 32]);
    let b_secret = StaticSecret::from([2u8; 32]);
    let a_public = BtPublic::from(&a_secret);
    let b_public = BtPublic::from(&b_secret);
    let mut bt_a = Tunn::new(a_secret, b_public, None, None, 1, None);
    let mut bt_b = Tunn::new(b_secret, a_public, None, None, 2, None);
    let mut buf_a = vec![0u8; 2048];
    let mut buf_b = vec![0u8; 2048];
    group.bench_function("boringtun", |b| {
        b.iter(|| {
            // boringtun (built with mock-instant in this workspace) rate-limits by its clock.
            mock_instant::MockClock::advance(Duration::from_secs(6));
            // Its per-peer handshake rate limiter is reset by the timer tick, as in production.
            let _ = bt_b.update_timers(&mut buf_b);
            let _ = bt_a.update_timers(&mut buf_a);
            let init = match bt_a.format_handshake_initiation(&mut buf_a, true) {
                TunnResult::WriteToNetwork(d) => d.to_vec(),
                other => panic!("initiation: {other:?}"),
            };
            let resp = match bt_b.decapsulate(None, &init, &mut buf_b) {
                TunnResult::WriteToNetwork(d) => d.to_vec(),
                other => panic!("response: {other:?}"),
            };
            // boringtun sends nothing after the response unless asked: send the keepalive
            // that confirms the session to the responder, as we do.
            let keepalive = match bt_a.decapsulate(None, &resp, &mut buf_a) {
                TunnResult::WriteToNetwork(d) => d.to_vec(),
                TunnResult::Done => match bt_a.encapsulate(&[], &mut buf_a) {
                    TunnResult::WriteToNetwork(d) => d.to_vec(),
                    other => panic!("keepalive: {other:?}"),
                },
                other => panic!("after response: {other:?}"),
            };
            let done = bt_b.decapsulate(None, &keepalive, &mut buf_b);
            assert!(matches!(done, TunnResult::Done), "{done:?}");
        })
    });
    group.finish();
}

criterion_group!(benches, seal_open, handshakes);
criterion_main!(benches);
