//! Two network namespaces joined by a veth pair, with WireGuard endpoints in them: the real
//! `wireguard-go` (configured with `wg`) and `meshd --wg-config`. Everything a lab creates
//! is named after the test and the process id and removed on drop (processes by pid).
#![allow(dead_code)]
#![allow(clippy::expect_used)] // a failed expectation is the test failing

use std::fs;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub const WG_PORT: u16 = 51820;

/// Whether the tests can run: they need root for namespaces.
pub fn is_root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("note: not running as root; skipping (network namespaces need root)");
    }
    root
}

/// Run a command to completion; panic with its output if it fails.
pub fn run(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| {
        panic!("{program}: {e} (install: apt-get install -y wireguard-go wireguard-tools iperf3 iputils-ping iproute2)")
    });
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A WireGuard key pair from `wg genkey` / `wg pubkey`.
pub struct Keys {
    pub private: String,
    pub public: String,
}

pub fn keys() -> Keys {
    let private = text(&run("wg", &["genkey"]));
    let mut child =
        Command::new("wg").arg("pubkey").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("wg pubkey");
    use std::io::Write as _;
    child.stdin.take().expect("stdin").write_all(private.as_bytes()).expect("write key");
    let out = child.wait_with_output().expect("wg pubkey");
    Keys { private, public: text(&out) }
}

/// One side of the lab.
pub struct Side {
    pub ns: String,
    /// Underlay (veth) address.
    pub underlay: Ipv4Addr,
    /// Tunnel addresses.
    pub tunnel: Ipv4Addr,
    pub tunnel6: Ipv6Addr,
    /// The WireGuard interface's name.
    pub iface: String,
}

pub struct Lab {
    pub a: Side,
    pub b: Side,
    pub dir: PathBuf,
    children: Vec<Child>,
}

impl Lab {
    /// Namespaces `<tag>` a and b, a veth pair 192.168.<n>.1/.2, tunnel 10.<n>.0.1/.2.
    pub fn new(tag: &str, subnet: u8) -> Self {
        assert!(tag.len() <= 4);
        let pid = std::process::id() % 100_000;
        let side = |x: &str, host: u8| Side {
            ns: format!("md-{tag}-{pid}-{x}"),
            underlay: Ipv4Addr::new(192, 168, subnet, host),
            tunnel: Ipv4Addr::new(10, subnet, 0, host),
            tunnel6: Ipv6Addr::new(0xfd00, u16::from(subnet), 0, 0, 0, 0, 0, u16::from(host)),
            iface: format!("w{tag}{pid}{x}"),
        };
        let dir = std::env::temp_dir().join(format!("meshd-lab-{tag}-{pid}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("lab dir");
        let lab = Self { a: side("a", 1), b: side("b", 2), dir, children: Vec::new() };
        let (va, vb) = (format!("v{tag}{pid}a"), format!("v{tag}{pid}b"));
        for s in [&lab.a, &lab.b] {
            run("ip", &["netns", "add", &s.ns]);
            run("ip", &["-n", &s.ns, "link", "set", "lo", "up"]);
        }
        run("ip", &["link", "add", &va, "netns", &lab.a.ns, "type", "veth", "peer", "name", &vb, "netns", &lab.b.ns]);
        for (s, v) in [(&lab.a, &va), (&lab.b, &vb)] {
            run("ip", &["-n", &s.ns, "addr", "add", &format!("{}/24", s.underlay), "dev", v]);
            run("ip", &["-n", &s.ns, "link", "set", v, "up"]);
        }
        lab
    }

    /// `wireguard-go` on side a, peered with `peer` at side b.
    pub fn start_wireguard_go(&mut self, own: &Keys, peer: &Keys) {
        let a = &self.a;
        let child = Command::new("ip")
            .args(["netns", "exec", &a.ns, "wireguard-go", "-f", &a.iface])
            .env("WG_PROCESS_FOREGROUND", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("wireguard-go");
        self.children.push(child);
        let sock = PathBuf::from(format!("/var/run/wireguard/{}.sock", a.iface));
        wait_for(|| sock.exists(), "wireguard-go's control socket");
        let key_file = self.dir.join("wg-go.key");
        fs::write(&key_file, &own.private).expect("key file");
        let key_path = key_file.to_string_lossy().into_owned();
        let endpoint = format!("{}:{WG_PORT}", self.b.underlay);
        let allowed = format!("{}/32,{}/128", self.b.tunnel, self.b.tunnel6);
        let port = WG_PORT.to_string();
        run(
            "ip",
            &[
                "netns",
                "exec",
                &a.ns,
                "wg",
                "set",
                &a.iface,
                "private-key",
                &key_path,
                "listen-port",
                &port,
                "peer",
                &peer.public,
                "endpoint",
                &endpoint,
                "allowed-ips",
                &allowed,
            ],
        );
        run("ip", &["-n", &a.ns, "addr", "add", &format!("{}/24", a.tunnel), "dev", &a.iface]);
        run("ip", &["-n", &a.ns, "addr", "add", &format!("{}/64", a.tunnel6), "dev", &a.iface, "nodad"]);
        run("ip", &["-n", &a.ns, "link", "set", &a.iface, "mtu", "1420", "up"]);
    }

    /// The wg-quick file for meshd on side b.
    pub fn meshd_config(&self, own: &Keys, peer: &Keys) -> PathBuf {
        let path = self.dir.join("meshd.conf");
        let text = format!(
            "# meshd side of the lab\n[Interface]\nPrivateKey = {}\nListenPort = {WG_PORT}\nAddress = {}/24, {}/64\nMTU = 1420\n\n\
             [Peer]\nPublicKey = {}\nEndpoint = {}:{WG_PORT}\nAllowedIPs = {}/32\nAllowedIPs = {}/128\n\
             PersistentKeepalive = 25\n",
            own.private, self.b.tunnel, self.b.tunnel6, peer.public, self.a.underlay, self.a.tunnel, self.a.tunnel6
        );
        fs::write(&path, text).expect("meshd config");
        path
    }

    /// `meshd --wg-config` on side b; returns its index among the lab's children.
    pub fn start_meshd(&mut self, config: &PathBuf) -> usize {
        let b = &self.b;
        let log = fs::File::create(self.dir.join("meshd.log")).expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", &b.ns, env!("CARGO_BIN_EXE_meshd"), "--wg-config"])
            .arg(config)
            .args(["--tun", &b.iface])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("meshd");
        self.children.push(child);
        let (ns, iface) = (b.ns.clone(), b.iface.clone());
        wait_for(
            || {
                Command::new("ip")
                    .args(["-n", &ns, "addr", "show", "dev", &iface])
                    .output()
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("inet "))
            },
            "meshd's TUN with its address",
        );
        self.children.len() - 1
    }

    pub fn meshd_log(&self) -> String {
        fs::read_to_string(self.dir.join("meshd.log")).unwrap_or_default()
    }

    /// SIGTERM a child and wait for its exit status.
    pub fn terminate(&mut self, index: usize) -> std::process::ExitStatus {
        let child = &mut self.children[index];
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid"));
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "child {pid} ignored SIGTERM");
            sleep(Duration::from_millis(20));
        }
    }

    /// Whether an interface exists in a namespace.
    pub fn has_link(ns: &str, iface: &str) -> bool {
        Command::new("ip").args(["-n", ns, "link", "show", "dev", iface]).output().is_ok_and(|o| o.status.success())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for s in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", &s.ns]).output();
            let _ = fs::remove_file(format!("/var/run/wireguard/{}.sock", s.iface));
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

pub fn wait_for(mut cond: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(20));
    }
}

/// `ping` from a namespace; whether `count` replies came back.
pub fn ping(ns: &str, to: impl std::fmt::Display, count: u32) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-c", &count.to_string(), "-i", "0.2", "-W", "2", &to.to_string()])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// An iperf3 TCP run: server in `server_ns` on `server`, client in `client_ns`; with
/// `reverse` the server sends. Returns the bytes the receiving side got.
pub fn iperf(server_ns: &str, server: Ipv4Addr, client_ns: &str, port: u16, seconds: u32, reverse: bool) -> u64 {
    let port_s = port.to_string();
    let mut srv = Command::new("ip")
        .args(["netns", "exec", server_ns, "iperf3", "-s", "-1", "-p", &port_s])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 server");
    let listening = || {
        Command::new("ip")
            .args(["netns", "exec", server_ns, "ss", "-Hltn", &format!("sport = :{port}")])
            .output()
            .is_ok_and(|o| !o.stdout.is_empty())
    };
    wait_for(listening, "the iperf3 server");
    let secs = seconds.to_string();
    let ip = server.to_string();
    let mut args = vec![
        "netns",
        "exec",
        client_ns,
        "iperf3",
        "-c",
        &ip,
        "-p",
        &port_s,
        "-t",
        &secs,
        "-J",
        "--connect-timeout",
        "5000",
    ];
    if reverse {
        args.push("-R");
    }
    let out = Command::new("ip").args(&args).output().expect("iperf3 client");
    let _ = srv.kill();
    let _ = srv.wait();
    assert!(
        out.status.success(),
        "iperf3 client {}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("iperf3 JSON");
    json["end"]["sum_received"]["bytes"].as_u64().expect("bytes received")
}

/// The `meshcontrol` binary: beside `meshd` when the workspace's binaries were built
/// (`cargo test --workspace`, as CI runs it), else built here with the same profile into a
/// target directory of its own (the running `cargo test` holds the lock of this one).
pub fn meshcontrol_bin() -> PathBuf {
    let meshd = PathBuf::from(env!("CARGO_BIN_EXE_meshd"));
    let dir = meshd.parent().expect("bin dir").to_path_buf();
    let bin = dir.join("meshcontrol");
    if bin.exists() {
        return bin;
    }
    let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug").to_string();
    let target = dir.parent().expect("target dir").join("meshcontrol-for-tests");
    let nested = target.join(&profile).join("meshcontrol");
    if !nested.exists() {
        let mut cargo = Command::new(env!("CARGO"));
        cargo.args(["build", "-p", "meshcontrol", "--bin", "meshcontrol"]);
        if profile == "release" {
            cargo.arg("--release");
        }
        let status = cargo
            .env("CARGO_TARGET_DIR", &target)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo build -p meshcontrol");
        assert!(status.success(), "cargo build -p meshcontrol failed");
    }
    nested
}
