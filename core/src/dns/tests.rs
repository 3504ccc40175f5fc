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
