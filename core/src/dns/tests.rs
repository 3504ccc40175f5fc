use super::*;

fn dns() -> MagicDns {
    let mut d = MagicDns::new("tail.mesh.", vec!["100.64.0.0/10".parse().unwrap_or_else(|e| panic!("{e}"))]);
    d.set_hosts([
        (
            "Alpha",
            HostAddrs {
                v4: Some(Ipv4Addr::new(100, 64, 0, 1)),
                v6: Some("fd7a::1".parse().unwrap_or(Ipv6Addr::LOCALHOST)),
            },
        ),
        ("beta", HostAddrs { v4: Some(Ipv4Addr::new(100, 64, 0, 2)), v6: None }),
    ]);
    d
}

fn query(name: &str, qtype: TYPE) -> Vec<u8> {
    let mut q = Packet::new_query(0x1234);
    q.set_flags(PacketFlag::RECURSION_DESIRED);
    q.questions.push(Question::new(Name::new_unchecked(name), QTYPE::TYPE(qtype), QCLASS::CLASS(CLASS::IN), false));
    q.build_bytes_vec().unwrap_or_else(|e| panic!("{e}"))
}

fn ask(d: &MagicDns, name: &str, qtype: TYPE) -> (RCODE, Vec<RData<'static>>) {
    let bytes = d.answer(&query(name, qtype)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let reply = Packet::parse(&bytes).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reply.id(), 0x1234);
    assert!(reply.has_flags(PacketFlag::RESPONSE));
    assert_eq!(reply.questions.len(), 1);
    (reply.rcode(), reply.answers.into_iter().map(|a| a.rdata.into_owned()).collect())
}

#[test]
fn known_names_short_and_qualified_any_case() {
    let d = dns();
    let a = RData::A(A::from(Ipv4Addr::new(100, 64, 0, 1)));
    assert_eq!(ask(&d, "alpha.tail.mesh", TYPE::A), (RCODE::NoError, vec![a.clone()]));
    assert_eq!(ask(&d, "ALPHA.Tail.Mesh.", TYPE::A), (RCODE::NoError, vec![a.clone()]));
    assert_eq!(ask(&d, "alpha", TYPE::A), (RCODE::NoError, vec![a]));
    let (rcode, answers) = ask(&d, "alpha.tail.mesh", TYPE::AAAA);
    assert_eq!(rcode, RCODE::NoError);
    assert_eq!(answers, vec![RData::AAAA(AAAA::from("fd7a::1".parse::<Ipv6Addr>().unwrap_or(Ipv6Addr::LOCALHOST)))]);
    // A node without IPv6: no data, but the name exists.
    assert_eq!(ask(&d, "beta.tail.mesh", TYPE::AAAA), (RCODE::NoError, vec![]));
    assert_eq!(ask(&d, "beta.tail.mesh", TYPE::MX), (RCODE::NoError, vec![]));
}

#[test]
fn unknown_in_domain_is_nxdomain_and_outside_is_refused() {
    let d = dns();
    assert_eq!(ask(&d, "gamma.tail.mesh", TYPE::A).0, RCODE::NameError);
    assert_eq!(ask(&d, "gamma", TYPE::A).0, RCODE::NameError);
    assert_eq!(ask(&d, "example.com", TYPE::A).0, RCODE::Refused);
    assert_eq!(ask(&d, "alpha.tail.mesh.evil.com", TYPE::A).0, RCODE::Refused);
    assert_eq!(ask(&d, "tail.mesh", TYPE::A), (RCODE::NoError, vec![]));
}

#[test]
fn reverse_lookups() {
    let d = dns();
    let (rcode, answers) = ask(&d, "2.0.64.100.in-addr.arpa", TYPE::PTR);
    assert_eq!(rcode, RCODE::NoError);
    assert_eq!(answers, vec![RData::PTR(PTR(Name::new_unchecked("beta.tail.mesh").into_owned()))]);
    let v6 = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.a.7.d.f.ip6.arpa";
    assert_eq!(ask(&d, v6, TYPE::PTR).1.len(), 1);
    assert_eq!(ask(&d, "9.0.64.100.in-addr.arpa", TYPE::PTR).0, RCODE::NameError);
    assert_eq!(ask(&d, "1.1.168.192.in-addr.arpa", TYPE::PTR).0, RCODE::Refused);
    assert_eq!(ask(&d, "x.0.64.100.in-addr.arpa", TYPE::PTR).0, RCODE::Refused);
}

#[test]
fn malformed_and_truncated_queries() {
    let d = dns();
    assert_eq!(d.answer(&[]), Err(DnsError::NoHeader));
    assert_eq!(d.answer(&[0x12, 0x34, 0, 0]), Err(DnsError::NoHeader));
    let full = query("alpha.tail.mesh", TYPE::A);
    for cut in 12..full.len() {
        let reply = d.answer(&full[..cut]).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        let parsed = Packet::parse(&reply).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed.rcode(), RCODE::FormatError, "cut at {cut}");
    }
    // A response is not answered (no reflection loops).
    let mut response = full.clone();
    response[2] |= 0x80;
    assert_eq!(d.answer(&response), Err(DnsError::NotAQuery));
    // Garbage with a header: FORMERR.
    let mut garbage = vec![0xAB; 40];
    garbage[2] = 0;
    assert!(d.answer(&garbage).is_ok());
}

/// A host whose A and AAAA answers to an ANY query take about 800 bytes: a 60-byte label
/// under a 182-byte domain, every name written out in full.
fn long_names() -> (MagicDns, String) {
    let domain = ["a", "b", "c"].map(|c| c.repeat(60)).join(".");
    let mut d = MagicDns::new(&domain, vec![]);
    let host = "h".repeat(60);
    let v6 = "fd7a::1".parse().unwrap_or(Ipv6Addr::LOCALHOST);
    d.set_hosts([(host.as_str(), HostAddrs { v4: Some(Ipv4Addr::new(100, 64, 0, 1)), v6: Some(v6) })]);
    (d, format!("{host}.{domain}"))
}

/// An ANY query for `name`, with an EDNS OPT record advertising `edns` bytes if given.
fn any_query(name: &str, edns: Option<u16>) -> Vec<u8> {
    let mut q = Packet::new_query(0x4242);
    q.questions.push(Question::new(Name::new_unchecked(name), QTYPE::ANY, QCLASS::CLASS(CLASS::IN), false));
    *q.opt_mut() =
        edns.map(|udp_packet_size| simple_dns::rdata::OPT { opt_codes: vec![], udp_packet_size, version: 0 });
    q.build_bytes_vec().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn udp_answers_past_the_limit_are_truncated_with_tc() {
    let (d, name) = long_names();
    let full = d.answer(&any_query(&name, None)).unwrap_or_else(|e| panic!("{e}"));
    assert!(full.len() > UDP_RESPONSE_LIMIT && full.len() < EDNS_RESPONSE_LIMIT, "{} bytes", full.len());
    // Without EDNS: 512 bytes at most, TC set, the question kept, no records.
    for edns in [None, Some(100), Some(600)] {
        let reply = d.answer_udp(&any_query(&name, edns)).unwrap_or_else(|e| panic!("{e}"));
        assert!(reply.len() <= UDP_RESPONSE_LIMIT.max(usize::from(edns.unwrap_or(0))), "{edns:?}");
        let parsed = Packet::parse(&reply).unwrap_or_else(|e| panic!("{e}"));
        assert!(parsed.has_flags(PacketFlag::TRUNCATION), "{edns:?}: TC");
        assert_eq!((parsed.id(), parsed.rcode()), (0x4242, RCODE::NoError));
        assert_eq!(parsed.questions.len(), 1);
        assert!(parsed.answers.is_empty() && parsed.additional_records.is_empty());
    }
    // With EDNS room for it, the whole answer (capped at 1232 whatever is advertised).
    for edns in [1232, 4096] {
        let reply = d.answer_udp(&any_query(&name, Some(edns))).unwrap_or_else(|e| panic!("{e}"));
        let parsed = Packet::parse(&reply).unwrap_or_else(|e| panic!("{e}"));
        assert!(!parsed.has_flags(PacketFlag::TRUNCATION));
        assert_eq!(parsed.answers.len(), 2);
    }
    // Over TCP nothing is cut, and short UDP answers are left alone.
    assert_eq!(Packet::parse(&full).map(|p| p.answers.len()).ok(), Some(2));
    let short = d.answer_udp(&any_query("hhh", None)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(short, d.answer(&any_query("hhh", None)).unwrap_or_else(|e| panic!("{e}")));
}
