//! `meshd --wg-config` against the real `wireguard-go` (configured with `wg`), each in its
//! own network namespace, joined by a veth pair: ping and iperf3 TCP both ways, a garbage
//! flood at meshd's port, clean shutdown; and the errors meshd reports before it starts.
//! As root (CI); without root the namespace tests print a note and return.
#![allow(clippy::expect_used)] // a failed expectation is the test failing

mod netns;

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::process::Command;
use std::time::{Duration, Instant};

use netns::{iperf, is_root, keys, ping, Lab, WG_PORT};

fn lab_with_both(tag: &str, subnet: u8) -> (Lab, usize) {
    let (go_keys, meshd_keys) = (keys(), keys());
    let mut lab = Lab::new(tag, subnet);
    lab.start_wireguard_go(&go_keys, &meshd_keys);
    let config = lab.meshd_config(&meshd_keys, &go_keys);
    let meshd = lab.start_meshd(&config);
    (lab, meshd)
}

#[test]
fn meshd_and_wireguard_go_ping_and_carry_iperf3_both_ways() {
    if !is_root() {
        return;
    }
    let (mut lab, meshd) = lab_with_both("io", 81);
    assert!(ping(&lab.b.ns, lab.a.tunnel, 3), "meshd -> wireguard-go ping\n{}", lab.meshd_log());
    assert!(ping(&lab.a.ns, lab.b.tunnel, 3), "wireguard-go -> meshd ping\n{}", lab.meshd_log());
    assert!(ping(&lab.b.ns, lab.a.tunnel6, 3), "meshd -> wireguard-go ping over IPv6\n{}", lab.meshd_log());
    assert!(ping(&lab.a.ns, lab.b.tunnel6, 3), "wireguard-go -> meshd ping over IPv6\n{}", lab.meshd_log());
    // Client on meshd's side: first it sends, then (-R) it receives.
    let sent = iperf(&lab.a.ns, lab.a.tunnel, &lab.b.ns, 5301, 2, false);
    let received = iperf(&lab.a.ns, lab.a.tunnel, &lab.b.ns, 5302, 2, true);
    assert!(sent > 0 && received > 0, "meshd sent {sent} B, received {received} B");
    // And with the client on wireguard-go's side.
    let sent = iperf(&lab.b.ns, lab.b.tunnel, &lab.a.ns, 5303, 2, false);
    assert!(sent > 0, "wireguard-go sent {sent} B");
    eprintln!("iperf3 through the tunnel: {sent} B and {received} B");

    // SIGTERM: a clean exit that takes the TUN (and its routes) away.
    let status = lab.terminate(meshd);
    assert!(status.success(), "meshd exit: {status}\n{}", lab.meshd_log());
    assert!(!Lab::has_link(&lab.b.ns, &lab.b.iface), "the TUN is gone after shutdown");
    let routes = Command::new("ip").args(["-n", &lab.b.ns, "route"]).output().expect("ip route");
    assert!(!String::from_utf8_lossy(&routes.stdout).contains(&lab.b.iface), "no route left on the TUN");
}

/// A cheap deterministic generator for garbage.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Send garbage at `to` from inside network namespace `ns` (a thread that joins it).
fn flood(ns: &str, to: SocketAddr, datagrams: usize) {
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(&path).expect("netns file");
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let socket = UdpSocket::bind("0.0.0.0:0").expect("bind");
            let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
            let mut buf = [0u8; 2048];
            for i in 0..datagrams {
                let len = match i % 4 {
                    0 => 148, // initiation-sized
                    1 => 92,  // response-sized
                    2 => 32 + (rng.next() as usize % 1500),
                    _ => rng.next() as usize % buf.len(),
                };
                for b in buf.iter_mut().take(len) {
                    *b = rng.next() as u8;
                }
                if len >= 4 {
                    // Message types 1-4 with zero reserved bytes, so each reaches its parser.
                    buf[0] = (i % 4) as u8 + 1;
                    buf[1..4].fill(0);
                }
                let _ = socket.send_to(&buf[..len], to);
            }
        });
    });
}

#[test]
fn a_garbage_flood_at_meshds_port_leaves_the_tunnel_working() {
    if !is_root() {
        return;
    }
    let (mut lab, meshd) = lab_with_both("fl", 82);
    assert!(ping(&lab.b.ns, lab.a.tunnel, 1), "tunnel up before the flood\n{}", lab.meshd_log());
    let target = SocketAddr::from((lab.b.underlay, WG_PORT));
    let started = Instant::now();
    flood(&lab.a.ns, target, 200_000);
    eprintln!("200000 garbage datagrams in {:?}", started.elapsed());
    assert!(ping(&lab.a.ns, lab.b.tunnel, 3), "wireguard-go -> meshd after the flood\n{}", lab.meshd_log());
    assert!(ping(&lab.b.ns, lab.a.tunnel, 3), "meshd -> wireguard-go after the flood");
    let received = iperf(&lab.a.ns, lab.a.tunnel, &lab.b.ns, 5311, 1, true);
    assert!(received > 0);
    let status = lab.terminate(meshd);
    assert!(status.success(), "meshd survived the flood and exits cleanly: {status}");
}

fn meshd(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meshd")).args(args).output().expect("meshd");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_wg_quick_file_with_an_error_is_reported_with_its_line() {
    let dir = std::env::temp_dir().join(format!("meshd-badconf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("bad.conf");
    let text =
        "[Interface]\nPrivateKey = YEocP0e2o1WT5GlvBvQzVF7EeR6z9aCk0ANZuE6B8W8=\n# fine so far\nListenPort = many\n";
    std::fs::write(&path, text).expect("write");
    let (code, stderr) = meshd(&["--wg-config", &path.to_string_lossy()]);
    assert_ne!(code, 0);
    let expected = format!("{}:4: ", path.display());
    assert!(stderr.contains(&expected) && stderr.contains("ListenPort"), "{stderr}");

    let (code, stderr) = meshd(&["--wg-config", &dir.join("missing.conf").to_string_lossy()]);
    assert_ne!(code, 0);
    assert!(stderr.contains("missing.conf"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_tun_name_already_in_use_is_a_clear_error() {
    if !is_root() {
        return;
    }
    let lab = Lab::new("nu", 83);
    let keys_a = keys();
    let config = lab.dir.join("in-use.conf");
    let text = format!("[Interface]\nPrivateKey = {}\nAddress = 10.83.0.2/24\n", keys_a.private);
    std::fs::write(&config, text).expect("write");
    // `lo` exists in every namespace.
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.b.ns, env!("CARGO_BIN_EXE_meshd"), "--wg-config"])
        .arg(&config)
        .args(["--tun", "lo"])
        .output()
        .expect("meshd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("`lo` is already in use"), "{stderr}");
    assert!(Lab::has_link(&lab.b.ns, "lo"), "the existing interface is untouched");
    std::thread::sleep(Duration::from_millis(1));
}
