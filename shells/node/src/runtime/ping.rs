//! `meshctl ping`: ICMP echo requests the daemon sends into its own tunnel (as if from the
//! TUN, so the filter and WireGuard treat them like any packet of this node) and the
//! replies picked out of the packets bound for the TUN. A few pings are remembered for
//! `meshctl` to ask about; the oldest are forgotten first.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::Duration;

use bytes::BytesMut;
use mesh_core::ip::echo::{echo_reply, echo_request, may_be_echo_reply};
use mesh_core::time::Instant;
use mesh_core::wireguard::DATA_HEADER_LEN;

use crate::local_api::PingReport;

/// Pings remembered at most.
const MAX_PINGS: usize = 64;
/// A reply later than this does not count.
pub const PING_TIMEOUT: Duration = Duration::from_secs(5);
const PAYLOAD: &[u8] = b"meshctl ping";

#[derive(Debug)]
struct Ping {
    report: PingReport,
    seq: u16,
    to: IpAddr,
    sent: Instant,
}

#[derive(Debug)]
pub struct Pinger {
    ident: u16,
    next_seq: u16,
    next_id: u64,
    pings: VecDeque<Ping>,
}

impl Pinger {
    /// `ident`: the ICMP identifier of this daemon's echoes (random per start).
    pub fn new(ident: u16) -> Self {
        Self { ident, next_seq: 1, next_id: 1, pings: VecDeque::new() }
    }

    /// A new echo from `from` to `report.address`: the packet to hand to the node as if
    /// read from the TUN, and the ping's id.
    pub fn start(&mut self, now: Instant, from: IpAddr, to: IpAddr, mut report: PingReport) -> Option<(u64, BytesMut)> {
        let seq = self.next_seq;
        let packet = echo_request(from, to, self.ident, seq, PAYLOAD, DATA_HEADER_LEN)?;
        self.next_seq = self.next_seq.wrapping_add(1);
        let id = self.next_id;
        self.next_id += 1;
        report.id = id;
        if self.pings.len() >= MAX_PINGS {
            self.pings.pop_front();
        }
        self.pings.push_back(Ping { report, seq, to, sent: now });
        Some((id, packet))
    }

    /// Whether a ping waits for its reply (only then are TUN packets looked at).
    pub fn waiting(&self) -> bool {
        self.pings.iter().any(|p| p.report.rtt_us.is_none() && !p.report.timed_out)
    }

    /// Look for replies among the IP packets bound for the TUN.
    pub fn observe(&mut self, now: Instant, packets: &[BytesMut]) {
        for ip in packets {
            if !may_be_echo_reply(ip) {
                continue;
            }
            let Some(reply) = echo_reply(ip) else { continue };
            if reply.ident != self.ident {
                continue;
            }
            if let Some(ping) = self.pings.iter_mut().find(|p| p.seq == reply.seq && p.to == reply.from) {
                if ping.report.rtt_us.is_none() && !ping.report.timed_out {
                    let rtt = now.saturating_duration_since(ping.sent);
                    ping.report.rtt_us = Some(u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX));
                }
            }
        }
    }

    /// Where ping `id` stands (timed out once [`PING_TIMEOUT`] has passed).
    pub fn report(&mut self, now: Instant, id: u64) -> Option<PingReport> {
        let ping = self.pings.iter_mut().find(|p| p.report.id == id)?;
        if ping.report.rtt_us.is_none() && now.saturating_duration_since(ping.sent) > PING_TIMEOUT {
            ping.report.timed_out = true;
        }
        Some(ping.report.clone())
    }
}
