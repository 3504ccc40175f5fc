//! Every WireGuard timer transition of DESIGN.md, in virtual time, between two devices.

use std::time::Duration;

use mesh_core::wireguard::{messages::*, DropReason, Event};
use mesh_tests::Pair;

const A: usize = 0;
const B: usize = 1;

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// Both sides send a packet every second until `until` seconds.
fn chatter(p: &mut Pair, from_a: bool, from_b: bool, until: f64) {
    while p.secs(p.now) < until {
        if from_a {
            p.send(A, b"ping");
        }
        if from_b {
            p.send(B, b"pong");
        }
        p.advance(secs(1.0));
    }
}

#[test]
fn handshake_then_data_both_ways() {
    let mut p = Pair::new(1);
    p.send(A, b"hello");
    assert_eq!(p.sent(A, MSG_INITIATION).len(), 1);
    assert_eq!(p.sent(B, MSG_RESPONSE).len(), 1);
    assert_eq!(p.sides[B].received.len(), 1, "staged packet flushed after the handshake");
    p.send(B, b"back");
    assert_eq!(p.sides[A].received.len(), 1);
    let got = &p.sides[A].received[0];
    assert_eq!(got.peer, p.sides[A].peer);
    assert_eq!(&got.packet[28..], b"back");
    assert!(p.sides[A].events.iter().any(|(_, e)| matches!(e, Event::SessionEstablished { initiator: true, .. })));
    assert!(p.sides[B].events.iter().any(|(_, e)| matches!(e, Event::SessionEstablished { initiator: false, .. })));
    // Static-static secrets are precomputed per peer: es, ee and se are the only DH left.
    assert_eq!(p.sides[A].wg.dh_operations(), 3);
    assert_eq!(p.sides[B].wg.dh_operations(), 3);
}

#[test]
fn initiator_rekeys_at_120s_and_responder_does_not() {
    let mut p = Pair::new(2);
    chatter(&mut p, true, true, 150.0);
    let a_inits: Vec<f64> = p.sent(A, MSG_INITIATION).iter().map(|t| p.secs(*t)).collect();
    assert_eq!(p.sent(B, MSG_INITIATION).len(), 0, "the responder never rekeys on age at 120 s");
    assert_eq!(a_inits.len(), 2, "{a_inits:?}");
    assert!((120.0..=121.0).contains(&a_inits[1]), "rekey at {a_inits:?}");
    // Traffic kept flowing across the rekey.
    assert!(p.sides[B].received.len() >= 148, "{}", p.sides[B].received.len());
}

#[test]
fn initiator_rekeys_on_receive_at_165s() {
    // A opens the session and then stays silent; B sends once at 160 s and once at 166 s.
    // A's keepalive answers would rekey through the send path (age > 120 s), so look at
    // what the receive itself triggers: nothing at 160 s, an initiation at 166 s.
    let mut p = Pair::new(3);
    p.send(A, b"open");
    p.advance_to(p.now + secs(160.0));
    p.send(B, b"at 160");
    assert_eq!(p.sent(A, MSG_INITIATION).len(), 1, "receiving at 160 s does not rekey");
    p.advance_to(p.now + secs(6.0));
    let before = p.sent(A, MSG_INITIATION).len();
    let t = p.now;
    p.send(B, b"at 166");
    let after: Vec<Duration> =
        p.sent(A, MSG_INITIATION).iter().filter(|&&at| at >= t).map(|at| at.saturating_duration_since(t)).collect();
    assert_eq!(after, vec![Duration::ZERO], "receiving at 166 s rekeys at once (before: {before})");
    assert_eq!(p.sent(B, MSG_INITIATION).len(), 0, "the responder never initiates here");
}

#[test]
fn sessions_are_rejected_after_180s() {
    let mut p = Pair::new(4);
    p.send(A, b"x");
    p.up = [false, false];
    p.advance_to(p.now + secs(179.0));
    // Seal a packet on B's session just before the limit and hold it.
    let before = p.log.len();
    p.send(B, b"late");
    let held = p.log[before..].iter().find(|w| w.kind() == MSG_DATA).map(|w| w.payload.clone());
    let held = held.unwrap_or_else(|| panic!("B should still send on its session at 179 s"));
    p.advance(secs(2.0));
    p.up = [true, true];
    assert_eq!(p.inject(A, held), Err(DropReason::SessionExpired));
    // At 181 s A must not send on the old session: it stages and initiates instead.
    p.up = [false, false];
    let before = p.log.len();
    p.send(A, b"new");
    let kinds: Vec<u8> = p.log[before..].iter().map(|w| w.kind()).collect();
    assert_eq!(kinds, vec![MSG_INITIATION]);
}

#[test]
fn retries_every_5s_with_jitter_and_gives_up_after_90s() {
    let mut p = Pair::new(5);
    p.up = [true, false];
    p.send(A, b"lost");
    p.advance(secs(200.0));
    let inits: Vec<f64> = p.sent(A, MSG_INITIATION).iter().map(|t| p.secs(*t)).collect();
    for w in inits.windows(2) {
        let gap = w[1] - w[0];
        assert!((5.0..5.334).contains(&gap), "retry gap {gap} in {inits:?}");
    }
    assert!(inits.last().is_some_and(|&t| (85.0..=90.0).contains(&t)), "{inits:?}");
    let gave_up: Vec<f64> = p.sides[A]
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::PeerUnreachable { .. }))
        .map(|(t, _)| p.secs(*t))
        .collect();
    assert_eq!(gave_up.len(), 1);
    assert!((90.0..96.0).contains(&gave_up[0]), "{gave_up:?}");
    assert!(p.sides[A].wg.stats().staged_dropped >= 1);
}

#[test]
fn keepalive_10s_after_receiving_when_idle() {
    let mut p = Pair::new(6);
    p.send(A, b"a");
    p.advance(secs(20.0));
    p.send(A, b"b");
    let t_data = p.now;
    p.advance(secs(20.0));
    let keepalives: Vec<f64> = p
        .log
        .iter()
        .filter(|w| w.from == B && w.is_keepalive() && w.at > t_data)
        .map(|w| w.at.saturating_duration_since(t_data).as_secs_f64())
        .collect();
    assert_eq!(keepalives, vec![10.0], "B answers the data with one keepalive after 10 s");
    // A receives nothing to acknowledge (keepalives are not data): no keepalive from A.
    assert!(!p.log.iter().any(|w| w.from == A && w.is_keepalive() && w.at > t_data));
}

#[test]
fn new_handshake_after_15s_without_reply() {
    let mut p = Pair::new(7);
    p.send(A, b"a");
    p.advance(secs(30.0));
    p.up = [true, false];
    let t = p.now;
    p.send(A, b"unanswered");
    p.advance(secs(20.0));
    let inits: Vec<f64> = p
        .sent(A, MSG_INITIATION)
        .iter()
        .filter(|&&at| at > t)
        .map(|at| at.saturating_duration_since(t).as_secs_f64())
        .collect();
    assert!(!inits.is_empty());
    assert!((15.0..15.334).contains(&inits[0]), "{inits:?}");
}

#[test]
fn keys_are_zeroed_after_540s() {
    let mut p = Pair::new(8);
    p.send(A, b"a");
    assert!(p.sides[A].wg.peer_status(p.sides[A].peer).is_some_and(|s| s.session.is_some()));
    p.advance(secs(539.0));
    assert!(p.sides[A].wg.peer_status(p.sides[A].peer).is_some_and(|s| s.session.is_some()));
    p.advance(secs(2.0));
    for side in &p.sides {
        let zeroed: Vec<f64> = side
            .events
            .iter()
            .filter(|(_, e)| matches!(e, Event::KeysZeroed { .. }))
            .map(|(t, _)| p.secs(*t))
            .collect();
        assert_eq!(zeroed.len(), 1);
        assert!((540.0..=540.5).contains(&zeroed[0]), "{zeroed:?}");
        assert!(side.wg.peer_status(side.peer).is_some_and(|s| s.session.is_none()));
    }
    // A fresh handshake works afterwards.
    p.send(A, b"again");
    assert_eq!(p.sides[B].received.len(), 2);
}

#[test]
fn message_count_limits_rekey_and_reject() {
    // Limits lowered through the configuration so the counter can be driven to them.
    let limits = |mut c: mesh_core::wireguard::Config| {
        c.rekey_after_messages = 100;
        c.reject_after_messages = 150;
        c
    };
    let mut p = Pair::with_configs(9, limits, limits);
    p.send(A, b"first");
    p.advance(secs(6.0)); // past the 5 s initiation rate limit
    p.up = [true, false]; // B's responses are lost: no new session.
    for _ in 0..199 {
        p.send(A, b"more");
    }
    let data = p.sent(A, MSG_DATA).len();
    assert_eq!(data, 150, "counters 0..149 are used, then the session refuses to send");
    let inits = p.sent(A, MSG_INITIATION);
    assert_eq!(inits.len(), 2, "one rekey attempt once the counter passed 100 (rate-limited to one per 5 s)");
    assert_eq!(p.sides[B].received.len(), 150);
}

#[test]
fn persistent_keepalive_every_interval_when_idle() {
    let mut p = Pair::new(10);
    let peer = p.sides[A].peer;
    let mut status = p.sides[A].wg.peer_status(peer).unwrap_or_else(|| panic!("peer"));
    let mut config = mesh_core::wireguard::PeerConfig::new(status.public_key, std::mem::take(&mut status.allowed_ips));
    config.persistent_keepalive = Some(Duration::from_secs(25));
    let now = p.now;
    assert_eq!(p.sides[A].wg.update_peer(now, peer, config), Ok(()));
    p.send(A, b"a");
    let t = p.now;
    p.advance(secs(80.0));
    let keepalives: Vec<f64> = p
        .log
        .iter()
        .filter(|w| w.from == A && w.is_keepalive() && w.at > t)
        .map(|w| w.at.saturating_duration_since(t).as_secs_f64())
        .collect();
    // B's keepalive answering the data (at 10 s) is authenticated traffic too and pushes
    // the persistent keepalive back: 10 + 25, then every 25 s.
    assert_eq!(keepalives, vec![35.0, 60.0]);
}

#[test]
fn roaming_follows_authenticated_packets_only() {
    let mut p = Pair::new(11);
    p.send(A, b"a");
    // A moves: its next data message arrives from a new address.
    p.up = [false, true];
    p.send(A, b"from the new address");
    let msg = p.log.iter().rev().find(|w| w.from == A && w.kind() == MSG_DATA).map(|w| w.payload.clone());
    let msg = msg.unwrap_or_else(|| panic!("no data"));
    let roamed = std::net::SocketAddr::from(([198, 51, 100, 7], 1234));
    let now = p.now;
    let b_peer = p.sides[B].peer;
    // A forged copy from yet another address is refused and moves nothing.
    let mut forged = msg.clone();
    forged[20] ^= 1;
    let elsewhere = std::net::SocketAddr::from(([203, 0, 113, 9], 9));
    assert_eq!(p.sides[B].wg.handle_datagram(now, elsewhere, forged), Err(DropReason::BadTag));
    assert_eq!(p.sides[B].wg.handle_datagram(now, roamed, msg), Ok(()));
    assert_eq!(p.sides[B].wg.peer_status(b_peer).and_then(|s| s.endpoint), Some(roamed));
    let packet = mesh_tests::ipv4_udp(p.sides[B].mesh, p.sides[A].mesh, b"reply");
    assert_eq!(p.sides[B].wg.handle_packet(now, mesh_core::wireguard::packet_buffer(&packet)), Ok(()));
    assert_eq!(p.sides[B].wg.poll_transmit().map(|t| t.dst), Some(roamed), "replies follow the roam");
}

#[test]
fn preshared_keys_must_match() {
    let psk = |k: [u8; 32]| {
        move |p: &mut Pair, side: usize| {
            let peer = p.sides[side].peer;
            let status = p.sides[side].wg.peer_status(peer).unwrap_or_else(|| panic!("peer"));
            let mut config = mesh_core::wireguard::PeerConfig::new(status.public_key, status.allowed_ips);
            config.preshared_key = Some(mesh_core::wireguard::PresharedKey::from_bytes(k));
            let now = p.now;
            assert_eq!(p.sides[side].wg.update_peer(now, peer, config), Ok(()));
        }
    };
    let mut same = Pair::new(12);
    psk([7; 32])(&mut same, A);
    psk([7; 32])(&mut same, B);
    same.send(A, b"with psk");
    assert_eq!(same.sides[B].received.len(), 1);

    let mut different = Pair::new(13);
    psk([7; 32])(&mut different, A);
    psk([8; 32])(&mut different, B);
    different.send(A, b"mismatch");
    assert!(different.sides[B].received.is_empty());
    assert_eq!(different.sides[A].wg.stats().drops.get(DropReason::HandshakeFailed), 1, "the response fails to open");
}

#[test]
fn peers_are_added_changed_and_removed_at_runtime() {
    let mut p = Pair::new(14);
    p.send(A, b"a");
    let a_on_b = p.sides[B].peer;
    let now = p.now;
    assert_eq!(p.sides[B].wg.remove_peer(a_on_b), Ok(()));
    assert!(p.sides[B].wg.route(p.sides[A].mesh.into()).is_none(), "its allowed IPs are gone");
    p.send(A, b"to a removed peer");
    assert_eq!(p.sides[B].received.len(), 1);
    assert!(p.sides[B].wg.stats().drops.get(DropReason::UnknownIndex) >= 1);
    // Added again (a new PeerId), it handshakes afresh once A notices the silence.
    let mut config = mesh_core::wireguard::PeerConfig::new(
        p.sides[A].key.public_key(),
        vec![mesh_core::wireguard::IpPrefix::host(p.sides[A].mesh.into())],
    );
    config.endpoint = Some(p.sides[A].underlay);
    let new_id = p.sides[B].wg.add_peer(now, config.clone()).unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(new_id, a_on_b);
    assert_eq!(p.sides[B].wg.add_peer(now, config), Err(mesh_core::wireguard::ConfigError::DuplicatePeer));
    p.sides[B].peer = new_id;
    p.advance(secs(16.0));
    p.send(A, b"after re-adding");
    assert!(p.sides[B].received.iter().any(|r| r.peer == new_id && &r.packet[28..] == b"after re-adding"));
}

/// The 15 s "no reply" timer draws its jitter when it is armed, not on every data packet:
/// a burst leaves the device's RNG where a single packet does, so the initiation that the
/// timer provokes carries the same random sender index either way.
#[test]
fn a_burst_of_data_draws_no_extra_randomness() {
    let initiation_after = |packets: usize| {
        let mut p = Pair::new(14);
        p.send(A, b"handshake");
        p.up[B] = false; // B's keepalives never reach A: A's timer fires.
        for _ in 0..packets {
            p.send(A, b"burst");
        }
        let before = p.log.len();
        p.advance(secs(16.0));
        let init = p.log[before..].iter().find(|w| w.from == A && w.kind() == MSG_INITIATION).cloned();
        let init = init.unwrap_or_else(|| panic!("no initiation after the silence"));
        (init.at, init.payload[4..8].to_vec())
    };
    assert_eq!(initiation_after(1), initiation_after(100));
}

#[test]
fn a_persistent_keepalive_of_zero_is_off_and_time_moves_on() {
    let mut p = Pair::new(12);
    let peer = p.sides[A].peer;
    let mut status = p.sides[A].wg.peer_status(peer).unwrap_or_else(|| panic!("peer"));
    let mut config = mesh_core::wireguard::PeerConfig::new(status.public_key, std::mem::take(&mut status.allowed_ips));
    config.persistent_keepalive = Some(Duration::ZERO);
    let now = p.now;
    assert_eq!(p.sides[A].wg.update_peer(now, peer, config), Ok(()));
    p.send(A, b"a");
    // Every deadline lies in the future after its timeout ran (a zero interval used to
    // leave poll_timeout at `now`: a busy loop).
    for _ in 0..100 {
        let Some(at) = p.sides[A].wg.poll_timeout() else { break };
        p.sides[A].wg.handle_timeout(at);
        assert!(p.sides[A].wg.poll_timeout().is_none_or(|next| next > at), "deadline stuck at {at:?}");
    }
    let t = p.now;
    p.advance(secs(80.0));
    let keepalives = p.log.iter().filter(|w| w.from == A && w.is_keepalive() && w.at > t).count();
    assert!(keepalives <= 1, "no persistent keepalives: {keepalives}");
}
