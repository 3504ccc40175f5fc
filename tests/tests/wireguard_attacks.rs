//! Hostile input against the WireGuard device: replays, floods, forged and malformed
//! messages, load, and spoofed inner sources. Every drop is counted; nothing panics.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::BytesMut;
use mesh_core::time::UnixTime;
use mesh_core::wireguard::{messages::*, packet_buffer, Config, DropReason, IpPrefix, PeerConfig, WireGuard};
use mesh_tests::{ipv4_udp, Pair, EPOCH};

const A: usize = 0;
const B: usize = 1;

/// `n` distinct initiations from A to B (A keeps retrying while the wire is down).
fn capture_initiations(p: &mut Pair, n: usize) -> Vec<BytesMut> {
    let up = p.up;
    p.up = [false, false];
    let peer = p.sides[A].peer;
    let _ = p.sides[A].wg.connect(p.now, peer);
    p.pump();
    while p.sent(A, MSG_INITIATION).len() < n {
        p.advance(Duration::from_secs(1));
    }
    p.up = up;
    p.log.iter().filter(|w| w.from == A && w.kind() == MSG_INITIATION).take(n).map(|w| w.payload.clone()).collect()
}

#[test]
fn replayed_initiation_is_dropped() {
    let mut p = Pair::new(11);
    let init = capture_initiations(&mut p, 1).remove(0);
    assert_eq!(p.inject(B, init.clone()), Ok(()));
    p.advance(Duration::from_secs(1));
    assert_eq!(p.inject(B, init), Err(DropReason::StaleTimestamp));
    assert_eq!(p.sides[B].wg.stats().drops.get(DropReason::StaleTimestamp), 1);
}

/// A device with A's key, as after a restart, whose wall clock is `offset_ms` ahead.
fn clone_of_a(p: &Pair, offset_ms: u64) -> WireGuard {
    let mut wg = WireGuard::new(
        Config::new(p.sides[A].key.clone()),
        mesh_sim::seeded_rng(99),
        p.now,
        UnixTime(
            EPOCH + p.now.saturating_duration_since(mesh_core::time::Instant::ZERO) + Duration::from_millis(offset_ms),
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut pc = PeerConfig::new(p.sides[B].key.public_key(), vec![IpPrefix::host(p.sides[B].mesh.into())]);
    pc.endpoint = Some(p.sides[B].underlay);
    let id = wg.add_peer(p.now, pc).unwrap_or_else(|e| panic!("{e}"));
    let _ = wg.connect(p.now, id);
    wg
}

fn first_transmit(wg: &mut WireGuard) -> BytesMut {
    wg.poll_transmit().map(|t| t.payload).unwrap_or_else(|| panic!("expected a transmit"))
}

#[test]
fn equal_timestamp_and_initiations_within_20ms_are_dropped() {
    let mut p = Pair::new(12);
    // Same key, same wall-clock instant: the timestamps are equal.
    let first = first_transmit(&mut clone_of_a(&p, 0));
    let equal = first_transmit(&mut clone_of_a(&p, 0));
    let newer = first_transmit(&mut clone_of_a(&p, 50));
    assert_eq!(p.inject(B, first), Ok(()));
    assert_eq!(p.inject(B, equal), Err(DropReason::StaleTimestamp));
    p.now += Duration::from_millis(10);
    assert_eq!(p.inject(B, newer.clone()), Err(DropReason::InitiationFlood), "newer, but within 20 ms");
    p.now += Duration::from_millis(15);
    assert_eq!(p.inject(B, newer), Ok(()), "25 ms later it is accepted");
}

#[test]
fn bad_mac1_flood_costs_no_diffie_hellman() {
    let mut p = Pair::new(13);
    let mut rng = mesh_sim::seeded_rng(5);
    let from = SocketAddr::from(([203, 0, 113, 7], 9999));
    let dh_before = p.sides[B].wg.dh_operations();
    for _ in 0..10_000 {
        let mut msg = BytesMut::zeroed(INITIATION_LEN);
        rng.fill_bytes(&mut msg[4..]);
        msg[0] = MSG_INITIATION;
        assert_eq!(p.sides[B].wg.handle_datagram(p.now, from, msg), Err(DropReason::BadMac1));
    }
    // A real initiation whose mac1 was damaged is just as cheap to refuse.
    let mut init = capture_initiations(&mut p, 1).remove(0);
    init[INITIATION_LEN - 20] ^= 1;
    assert_eq!(p.inject(B, init), Err(DropReason::BadMac1));
    assert_eq!(p.sides[B].wg.dh_operations(), dh_before, "no DH for messages with a bad mac1");
    assert_eq!(p.sides[B].wg.stats().drops.get(DropReason::BadMac1), 10_001);
    assert!(p.sides[B].wg.poll_transmit().is_none());
}

#[test]
fn under_load_only_cookie_replies_and_cookies_bind_the_address() {
    let mut p = Pair::with_configs(
        14,
        |c| c,
        |mut c| {
            c.handshake_load_threshold = 3;
            c
        },
    );
    let inits = capture_initiations(&mut p, 10);
    let a_addr = p.sides[A].underlay;
    let b = &mut p.sides[B].wg;
    for init in &inits[..3] {
        let _ = b.handle_datagram(p.now, a_addr, init.clone());
    }
    while b.poll_transmit().is_some() {}
    let dh_before = b.dh_operations();
    let mut replies = Vec::new();
    for init in &inits[3..] {
        assert_eq!(b.handle_datagram(p.now, a_addr, init.clone()), Err(DropReason::CookieRequired));
        while let Some(t) = b.poll_transmit() {
            assert_eq!(t.payload.len(), COOKIE_REPLY_LEN);
            assert_eq!(t.payload[0], MSG_COOKIE_REPLY);
            assert_eq!(t.dst, a_addr);
            replies.push(t.payload);
        }
    }
    assert_eq!(replies.len(), 7, "one cookie reply per initiation under load");
    assert_eq!(b.dh_operations(), dh_before, "under load, no DH without a cookie");

    // A takes the cookie for its latest initiation and retries with mac2.
    let last = replies.pop().unwrap_or_else(|| panic!("no reply"));
    assert_eq!(p.inject(A, last), Ok(()));
    assert_eq!(p.sides[A].wg.stats().cookie_replies_accepted, 1);
    p.up = [false, false];
    let before = p.log.len();
    p.advance(Duration::from_millis(5400));
    let retry = p.log[before..].iter().find(|w| w.kind() == MSG_INITIATION).map(|w| w.payload.clone());
    let retry = retry.unwrap_or_else(|| panic!("A retries"));
    assert_ne!(&retry[INITIATION_LEN - 16..], &[0u8; 16], "the retry carries a mac2");

    // Keep B under load, then present the retry from the wrong address and the right one.
    let b = &mut p.sides[B].wg;
    for _ in 0..5 {
        let _ = b.handle_datagram(p.now, a_addr, inits[0].clone());
    }
    while b.poll_transmit().is_some() {}
    let elsewhere = SocketAddr::from(([198, 51, 100, 1], 51820));
    assert_eq!(b.handle_datagram(p.now, elsewhere, retry.clone()), Err(DropReason::CookieRequired));
    assert!(b.poll_transmit().is_some_and(|t| t.dst == elsewhere && t.payload.len() == COOKIE_REPLY_LEN));
    assert_eq!(b.handle_datagram(p.now, a_addr, retry), Ok(()));
    assert!(b.poll_transmit().is_some_and(|t| t.payload[0] == MSG_RESPONSE));
}

#[test]
fn inner_source_outside_allowed_ips_is_dropped_and_counted() {
    let mut p = Pair::new(15);
    p.send(A, b"legit");
    let spoofed = ipv4_udp(Ipv4Addr::new(100, 64, 0, 99), p.sides[B].mesh, b"spoof");
    assert_eq!(p.sides[A].wg.handle_packet(p.now, packet_buffer(&spoofed)), Ok(()));
    p.pump();
    assert_eq!(p.sides[B].received.len(), 1, "only the legitimate packet");
    assert_eq!(p.sides[B].wg.stats().drops.get(DropReason::InnerSourceNotAllowed), 1);
}

#[test]
fn malformed_forged_and_replayed_messages_are_dropped() {
    let mut p = Pair::new(16);
    p.send(A, b"one");
    let data = p.log.iter().rev().find(|w| w.from == A && w.kind() == MSG_DATA).map(|w| w.payload.clone());
    let data = data.unwrap_or_else(|| panic!("no data message"));
    let cases: Vec<(BytesMut, DropReason)> = vec![
        (BytesMut::from(&data[..20]), DropReason::Malformed(MessageError::BadLength { kind: 4, len: 20 })),
        (BytesMut::zeroed(70_000), DropReason::Malformed(MessageError::TooLong(70_000))),
        (BytesMut::from(&[7u8, 0, 0, 0, 1, 2, 3][..]), DropReason::Malformed(MessageError::UnknownType(7))),
        (BytesMut::from(&[4u8][..]), DropReason::Malformed(MessageError::TooShort(1))),
        (
            {
                let mut m = data.clone();
                m[4..8].copy_from_slice(&0xdead_beefu32.to_le_bytes());
                m
            },
            DropReason::UnknownIndex,
        ),
        (
            {
                // A counter not seen yet, so the tag (not the replay window) must refuse it.
                let mut m = data.clone();
                m[8..16].copy_from_slice(&5000u64.to_le_bytes());
                m
            },
            DropReason::BadTag,
        ),
        (data.clone(), DropReason::Replay),
    ];
    for (msg, expected) in cases {
        assert_eq!(p.inject(B, msg), Err(expected));
    }
    // Out of window: 8200 newer packets push the first one out.
    for _ in 0..8200 {
        p.send(A, b"x");
    }
    assert_eq!(p.inject(B, data), Err(DropReason::Replay));
    assert_eq!(p.sides[B].received.len(), 8201);
    assert_eq!(p.sides[B].wg.stats().drops.total(), 8);
}
