//! Arbitrary bytes as an IP packet: the header parser, then the filter and the flow table
//! over whatever parsed. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_core::ip::{Filter, FilterRule, FlowKey, FlowTable, Origin, PacketInfo, PortRange};
use mesh_core::time::Instant;

fuzz_target!(|data: &[u8]| {
    let Ok(info) = PacketInfo::parse(data) else { return };
    assert!(info.total_len <= data.len());
    let filter = Filter::new(vec![FilterRule {
        srcs: vec!["100.64.0.0/10".parse().unwrap_or_else(|e| panic!("{e}"))].into(),
        dsts: vec![("0.0.0.0/0".parse().unwrap_or_else(|e| panic!("{e}")), PortRange::single(22))],
        protos: vec![],
    }]);
    let mut flows = FlowTable::new(4, [7; 16]);
    if filter.allows(&info) {
        flows.insert(Instant::ZERO, FlowKey::inbound(&info), Origin::Remote, None);
    }
    flows.insert(Instant::ZERO, FlowKey::outbound(&info), Origin::Local, None);
    let _ = flows.touch(Instant::ZERO, &FlowKey::inbound(&info));
});
