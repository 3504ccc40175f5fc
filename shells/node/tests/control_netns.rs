//! `meshd --state-dir` with `meshctl` against a real `meshcontrol serve`: the server in
//! one network namespace holding a bridge, two nodes in two others on veth pairs into it.
//! A user and a reusable pre-auth key come from the admin CLI; both nodes `meshctl up`;
//! each node's `meshctl status --json` lists the other and ping works both ways over the
//! mesh addresses. Also the local API's refusals: a second meshd on the same state dir,
//! malformed and oversized requests (the daemon keeps serving). As root; without root the
//! test prints a note and returns.
#![allow(clippy::expect_used)] // a failed expectation is the test failing

mod netns;
mod support;

use std::fs;
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use netns::{is_root, meshcontrol_bin, ping, run};

const CONTROL_PORT: u16 = 18080;

struct Tailnet {
    server_ns: String,
    nodes: Vec<String>,
    dir: PathBuf,
    children: Vec<Child>,
    bridge_ip: String,
}

impl Tailnet {
    fn new(tag: &str, subnet: u8, nodes: usize) -> Self {
        let pid = std::process::id() % 100_000;
        let server_ns = format!("mc-{tag}-{pid}-s");
        let dir = std::env::temp_dir().join(format!("meshd-ctl-{tag}-{pid}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("lab dir");
        let mut net = Self {
            server_ns: server_ns.clone(),
            nodes: Vec::new(),
            dir,
            children: Vec::new(),
            bridge_ip: format!("192.168.{subnet}.1"),
        };
        run("ip", &["netns", "add", &server_ns]);
        run("ip", &["-n", &server_ns, "link", "set", "lo", "up"]);
        let bridge = format!("br{tag}{pid}");
        run("ip", &["-n", &server_ns, "link", "add", &bridge, "type", "bridge"]);
        run("ip", &["-n", &server_ns, "addr", "add", &format!("{}/24", net.bridge_ip), "dev", &bridge]);
        run("ip", &["-n", &server_ns, "link", "set", &bridge, "up"]);
        for i in 0..nodes {
            let ns = format!("mc-{tag}-{pid}-{i}");
            run("ip", &["netns", "add", &ns]);
            net.nodes.push(ns.clone());
            run("ip", &["-n", &ns, "link", "set", "lo", "up"]);
            let (outer, inner) = (format!("v{tag}{pid}s{i}"), format!("v{tag}{pid}n{i}"));
            run(
                "ip",
                &["link", "add", &outer, "netns", &server_ns, "type", "veth", "peer", "name", &inner, "netns", &ns],
            );
            run("ip", &["-n", &server_ns, "link", "set", &outer, "master", &bridge]);
            run("ip", &["-n", &server_ns, "link", "set", &outer, "up"]);
            let addr = format!("192.168.{subnet}.{}/24", i + 2);
            run("ip", &["-n", &ns, "addr", "add", &addr, "dev", &inner]);
            run("ip", &["-n", &ns, "link", "set", &inner, "up"]);
        }
        net
    }

    fn url(&self) -> String {
        format!("http://{}:{CONTROL_PORT}", self.bridge_ip)
    }

    fn server_dir(&self) -> PathBuf {
        self.dir.join("control")
    }

    fn node_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("node{i}"))
    }

    fn start_server(&mut self) -> usize {
        self.start_server_with(&[])
    }

    fn start_server_with(&mut self, extra: &[&str]) -> usize {
        let log = fs::File::create(self.dir.join("control.log")).expect("log");
        let listen = format!("{}:{CONTROL_PORT}", self.bridge_ip);
        let child = Command::new("ip")
            .args(["netns", "exec", &self.server_ns])
            .arg(meshcontrol_bin())
            .arg("--state-dir")
            .arg(self.server_dir())
            .args(["serve", "--listen", &listen])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("meshcontrol serve");
        self.children.push(child);
        let sock = self.server_dir().join("admin.sock");
        wait_for(|| sock.exists(), "meshcontrol's admin socket", || self.logs());
        self.children.len() - 1
    }

    fn admin(&self, args: &[&str]) -> String {
        let out = Command::new(meshcontrol_bin())
            .arg("--state-dir")
            .arg(self.server_dir())
            .args(args)
            .output()
            .expect("meshcontrol admin");
        assert!(out.status.success(), "meshcontrol {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn start_node(&mut self, i: usize) -> usize {
        let log = fs::File::create(self.dir.join(format!("node{i}.log"))).expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.nodes[i], env!("CARGO_BIN_EXE_meshd"), "--state-dir"])
            .arg(self.node_dir(i))
            .args(["--tun", "mesh0"])
            .env("RUST_LOG", "info,meshd=debug,netlink_packet_route=error")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("meshd");
        self.children.push(child);
        let sock = self.node_dir(i).join("meshd.sock");
        // Connectable, not merely present: a killed daemon leaves its socket file behind.
        wait_for(|| UnixStream::connect(&sock).is_ok(), "meshd's local API socket", || self.logs());
        self.children.len() - 1
    }

    /// Signal child `index` and wait for it; its exit code.
    fn kill(&mut self, index: usize, signal: nix::sys::signal::Signal) -> Option<i32> {
        let child = &mut self.children[index];
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
        let _ = nix::sys::signal::kill(pid, signal);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.code();
            }
            assert!(Instant::now() < deadline, "meshd {pid} ignored {signal}");
            sleep(Duration::from_millis(20));
        }
    }

    fn meshctl(&self, i: usize, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.nodes[i], env!("CARGO_BIN_EXE_meshctl"), "--socket"])
            .arg(self.node_dir(i).join("meshd.sock"))
            .args(args)
            .output()
            .expect("meshctl")
    }

    /// `ip netns exec` bind-mounts this file over /etc/resolv.conf for what runs in node
    /// `i`'s namespace: meshd's `--accept-dns` edits it, `ping NAME` resolves through it.
    fn resolv_conf(&self, i: usize) -> PathBuf {
        Path::new("/etc/netns").join(&self.nodes[i]).join("resolv.conf")
    }

    /// The server's id of the node named `name`.
    fn node_id(&self, name: &str) -> u64 {
        let nodes: serde_json::Value = serde_json::from_str(&self.admin(&["nodes", "list", "--json"])).expect("nodes");
        nodes
            .as_array()
            .and_then(|n| n.iter().find(|n| n["name"] == name))
            .and_then(|n| n["id"].as_u64())
            .unwrap_or_else(|| panic!("{name}'s id"))
    }

    fn set_policy(&self, text: &str) {
        let file = self.dir.join("policy.hujson");
        fs::write(&file, text).expect("policy file");
        self.admin(&["policy", "set", "--file", file.to_str().expect("path")]);
    }

    fn up(&self, i: usize, key: &str, extra: &[&str]) {
        let url = self.url();
        let hostname = format!("node{i}");
        let mut args = vec!["up", "--login-server", &url, "--auth-key", key, "--hostname", &hostname];
        args.extend_from_slice(extra);
        let out = self.meshctl(i, &args);
        assert!(out.status.success(), "meshctl up: {}\n{}", String::from_utf8_lossy(&out.stderr), self.logs());
    }

    fn status(&self, i: usize) -> serde_json::Value {
        let out = self.meshctl(i, &["status", "--json"]);
        assert!(out.status.success(), "meshctl status: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        for name in ["control.log", "node0.log", "node1.log", "node2.log", "second.log"] {
            let text = fs::read_to_string(self.dir.join(name)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            all.push_str(&format!("--- {name}\n"));
            for line in tail.into_iter().rev() {
                all.push_str(line);
                all.push('\n');
            }
        }
        all
    }
}

impl Drop for Tailnet {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in self.nodes.iter().chain(std::iter::once(&self.server_ns)) {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            let _ = fs::remove_dir_all(Path::new("/etc/netns").join(ns));
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn wait_for(mut cond: impl FnMut() -> bool, what: &str, logs: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}\n{}", logs());
        sleep(Duration::from_millis(100));
    }
}

/// One raw request line to the local API; its answer.
fn raw_request(socket: &Path, line: &[u8]) -> serde_json::Value {
    let mut stream = UnixStream::connect(socket).expect("local API");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let _ = stream.write_all(line);
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).expect("an answer");
    serde_json::from_str(answer.trim()).expect("JSON answer")
}

fn status_key(status: &serde_json::Value) -> String {
    status["public_key"].as_str().map(str::to_string).unwrap_or_default()
}

fn peer_names(status: &serde_json::Value) -> Vec<String> {
    status["peers"]
        .as_array()
        .map(|peers| peers.iter().filter_map(|p| p["name"].as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

#[test]
fn two_meshd_nodes_join_through_meshcontrol_and_ping_both_ways() {
    if !is_root() {
        return;
    }
    let mut net = Tailnet::new("up", 91, 2);
    let server = net.start_server();
    net.admin(&["users", "create", "alice@example.com"]);
    let key = net.admin(&["preauthkeys", "create", "--user", "alice@example.com", "--reusable"]);
    assert!(!key.is_empty() && !key.contains(char::is_whitespace), "pre-auth key: {key:?}");
    let mut daemons = Vec::new();
    for i in 0..2 {
        daemons.push(net.start_node(i));
        let status = net.status(i);
        assert_eq!(status["state"], "stopped", "before up: {status}");
    }

    // A second meshd on the same state dir is refused; the first keeps serving.
    let second = Command::new("ip")
        .args(["netns", "exec", &net.nodes[0], env!("CARGO_BIN_EXE_meshd"), "--state-dir"])
        .arg(net.node_dir(0))
        .args(["--tun", "mesh1", "--port", "0"])
        .output()
        .expect("second meshd");
    assert!(!second.status.success(), "a second meshd on the same state dir must be refused");
    assert!(String::from_utf8_lossy(&second.stderr).contains("in use"), "{}", String::from_utf8_lossy(&second.stderr));

    // Malformed and oversized requests are answered with errors, never a crash.
    let socket = net.node_dir(0).join("meshd.sock");
    let answer = raw_request(&socket, b"this is not json\n");
    assert_eq!(answer["ok"], false, "{answer}");
    let answer = raw_request(&socket, b"{\"cmd\":\"format_disk\"}\n");
    assert_eq!(answer["ok"], false, "{answer}");
    let mut huge = vec![b'x'; 100 * 1024];
    huge.push(b'\n');
    let answer = raw_request(&socket, &huge);
    assert_eq!(answer["ok"], false, "{answer}");
    assert_eq!(net.status(0)["state"], "stopped");

    // A caller that is neither root nor the daemon's user: with the socket's mode 0600 it
    // cannot connect (exit 2); opened up, the peer-credential check refuses it (exit 1).
    let as_nobody = |socket: &Path| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", env!("CARGO_BIN_EXE_meshctl"), "--socket"])
            .arg(socket)
            .arg("status")
            .output()
            .expect("setpriv meshctl")
    };
    let denied = as_nobody(&socket);
    assert_eq!(denied.status.code(), Some(2), "{}", String::from_utf8_lossy(&denied.stderr));
    use std::os::unix::fs::PermissionsExt as _;
    for path in [&net.dir, &net.node_dir(0)] {
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    fs::set_permissions(&socket, fs::Permissions::from_mode(0o666)).expect("chmod socket");
    let refused = as_nobody(&socket);
    assert_eq!(refused.status.code(), Some(1), "{}", String::from_utf8_lossy(&refused.stderr));
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("permission denied"), "{message}");
    fs::set_permissions(&socket, fs::Permissions::from_mode(0o600)).expect("chmod socket");
    fs::set_permissions(net.node_dir(0), fs::Permissions::from_mode(0o700)).expect("chmod");
    assert_eq!(net.status(0)["state"], "stopped", "the daemon keeps serving");

    // An operator group's members may call: a third meshd with `--operator-group nogroup`
    // (nobody's primary group) and its socket outside its state dir.
    let op_socket = net.dir.join("op.sock");
    let op = Command::new("ip")
        .args(["netns", "exec", &net.nodes[0], env!("CARGO_BIN_EXE_meshd"), "--state-dir"])
        .arg(net.dir.join("op"))
        .args(["--tun", "mesh2", "--port", "0", "--operator-group", "nogroup", "--socket"])
        .arg(&op_socket)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("operator meshd");
    net.children.push(op);
    let op_index = net.children.len() - 1;
    wait_for(|| UnixStream::connect(&op_socket).is_ok(), "the operator meshd's socket", || net.logs());
    let allowed = as_nobody(&op_socket);
    assert_eq!(allowed.status.code(), Some(0), "operator: {}", String::from_utf8_lossy(&allowed.stderr));
    assert_eq!(net.kill(op_index, nix::sys::signal::Signal::SIGTERM), Some(0));

    // A wrong auth key: the server refuses, `up` says so (exit 1), the daemon keeps serving.
    let url = net.url();
    let out = net.meshctl(0, &["up", "--login-server", &url, "--auth-key", "not-a-key", "--hostname", "node0"]);
    assert_eq!(out.status.code(), Some(1), "up with a bad key: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(net.status(0)["state"], "rejected");

    // Both nodes up with the reusable key (the control key fetched from /key).
    for i in 0..2 {
        let hostname = format!("node{i}");
        let out = net.meshctl(i, &["up", "--login-server", &url, "--auth-key", &key, "--hostname", &hostname]);
        assert!(out.status.success(), "meshctl up: {}\n{}", String::from_utf8_lossy(&out.stderr), net.logs());
    }
    let mut statuses = Vec::new();
    for i in 0..2 {
        let other = format!("node{}", 1 - i);
        wait_for(|| peer_names(&net.status(i)).contains(&other), &format!("node{i} to list {other}"), || net.logs());
        statuses.push(net.status(i));
    }
    let address = |s: &serde_json::Value| -> String {
        s["addresses"]
            .as_array()
            .and_then(|a| a.iter().filter_map(|x| x.as_str()).find(|x| !x.contains(':')).map(str::to_string))
            .expect("an IPv4 mesh address")
    };
    let (a0, a1) = (address(&statuses[0]), address(&statuses[1]));
    assert_ne!(a0, a1);
    let ip = net.meshctl(0, &["ip", "-4"]);
    assert_eq!(String::from_utf8_lossy(&ip.stdout).trim(), a0);
    assert!(ping(&net.nodes[0], &a1, 3), "node0 -> node1 ping\n{}", net.logs());
    assert!(ping(&net.nodes[1], &a0, 3), "node1 -> node0 ping\n{}", net.logs());
    let status = net.status(0);
    let peer = &status["peers"][0];
    assert!(peer["last_handshake_secs"].as_u64().is_some(), "a handshake after ping: {status}");
    assert!(peer["endpoint"].as_str().is_some(), "an endpoint: {status}");

    // The control server goes away: traffic goes on over the last netmap, the nodes
    // notice and, once it is back, reconnect on their own (the client's backoff).
    net.kill(server, nix::sys::signal::Signal::SIGTERM);
    let _ = fs::remove_file(net.server_dir().join("admin.sock"));
    wait_for(|| net.status(0)["state"] == "connecting", "node0 to notice the server left", || net.logs());
    assert!(ping(&net.nodes[0], &a1, 3), "node0 -> node1 ping without the server\n{}", net.logs());
    assert!(ping(&net.nodes[1], &a0, 3), "node1 -> node0 ping without the server\n{}", net.logs());
    net.start_server();
    for i in 0..2 {
        wait_for(|| net.status(i)["state"] == "running", &format!("node{i} back on the server"), || net.logs());
    }

    // kill -9 and start again: the lock is free, the identity and address are the same,
    // and the tunnel comes back.
    let node1_key = status_key(&net.status(1));
    net.kill(daemons[1], nix::sys::signal::Signal::SIGKILL);
    daemons[1] = net.start_node(1);
    assert_eq!(status_key(&net.status(1)), node1_key, "same node key after a restart");
    // No `up` needed: the daemon saved what the last one asked for and reconnects by its
    // machine key.
    wait_for(|| net.status(1)["state"] == "running", "node1 running again", || net.logs());
    assert_eq!(address(&net.status(1)), a1, "same address after a restart");
    // The restarted side speaks first (its handshake replaces the session node0 still
    // holds; node0 alone would wait out WireGuard's 15 s before a new handshake).
    assert!(ping(&net.nodes[1], &a0, 3), "node1 -> node0 ping after the restart\n{}", net.logs());
    assert!(ping(&net.nodes[0], &a1, 3), "node0 -> node1 ping after the restart\n{}", net.logs());

    // SIGTERM: a clean exit that removes the TUN and the socket.
    let code = net.kill(daemons[1], nix::sys::signal::Signal::SIGTERM);
    assert_eq!(code, Some(0), "meshd exit on SIGTERM\n{}", net.logs());
    assert!(!net.node_dir(1).join("meshd.sock").exists(), "socket removed");
    let links = Command::new("ip").args(["-n", &net.nodes[1], "link", "show", "dev", "mesh0"]).output();
    assert!(links.is_ok_and(|o| !o.status.success()), "TUN removed");

    // down: the daemon leaves the server (the registration kept); meshctl against a missing socket exits 2.
    assert!(net.node_dir(0).join("prefs.json").exists(), "prefs saved after registration");
    let out = net.meshctl(0, &["down"]);
    assert!(out.status.success());
    assert_eq!(net.status(0)["state"], "stopped");
    let prefs: serde_json::Value =
        serde_json::from_slice(&fs::read(net.node_dir(0).join("prefs.json")).expect("prefs kept")).expect("prefs");
    assert_eq!(prefs["want_running"], false, "down: a restart stays down");
    let missing = Command::new(env!("CARGO_BIN_EXE_meshctl"))
        .args(["--socket", "/nonexistent/meshd.sock", "status"])
        .output()
        .expect("meshctl");
    assert_eq!(missing.status.code(), Some(2));
}

/// Every node's IPv4 mesh address, by index.
fn ipv4_of(status: &serde_json::Value) -> String {
    status["addresses"]
        .as_array()
        .and_then(|a| a.iter().filter_map(|x| x.as_str()).find(|x| !x.contains(':')).map(str::to_string))
        .expect("an IPv4 mesh address")
}

#[test]
fn three_nodes_resolve_each_other_by_name_and_follow_the_policy() {
    if !is_root() {
        return;
    }
    let mut net = Tailnet::new("dns", 92, 3);
    net.start_server();
    net.admin(&["users", "create", "alice@example.com"]);
    let key = net.admin(&["preauthkeys", "create", "--user", "alice@example.com", "--reusable"]);
    let original = "nameserver 192.0.2.53\nsearch example.org\n";
    for i in 0..3 {
        let conf = net.resolv_conf(i);
        fs::create_dir_all(conf.parent().expect("dir")).expect("/etc/netns/NS");
        fs::write(&conf, original).expect("resolv.conf");
        net.start_node(i);
    }
    for i in 0..3 {
        // node1 serves SSH: its host key goes out with the netmap.
        let extra: &[&str] = if i == 1 { &["--accept-dns", "--ssh"] } else { &["--accept-dns"] };
        net.up(i, &key, extra);
    }
    for i in 0..3 {
        wait_for(|| peer_names(&net.status(i)).len() == 2, &format!("node{i} to list both others"), || net.logs());
        wait_for(|| net.status(i)["dns_configured"] == true, &format!("node{i}'s resolver"), || net.logs());
    }
    let domain = net.status(0)["dns_domain"].as_str().expect("domain").to_string();
    assert!(!domain.is_empty());
    let conf = fs::read_to_string(net.resolv_conf(0)).expect("resolv.conf");
    assert!(conf.contains("nameserver 100.100.100.100\nnameserver 192.0.2.53\n"), "{conf}");
    assert!(conf.contains(&format!("search {domain} example.org")), "{conf}");

    // Ping by MagicDNS name, every pair both ways (short names one way, FQDNs the other).
    for i in 0..3 {
        for j in 0..3 {
            if i == j {
                continue;
            }
            let name = if i < j { format!("node{j}") } else { format!("node{j}.{domain}") };
            assert!(ping(&net.nodes[i], &name, 2), "node{i} -> {name} by name\n{}", net.logs());
        }
    }
    let addrs: Vec<String> = (0..3).map(|i| ipv4_of(&net.status(i))).collect();
    for i in 0..3 {
        let status = net.status(i);
        for peer in status["peers"].as_array().expect("peers") {
            let secs = peer["last_handshake_secs"].as_u64();
            assert!(secs.is_some_and(|s| s < 60), "node{i}: a recent handshake with {}: {status}", peer["name"]);
        }
    }

    // meshctl's own tools: ping through the tunnel with the path, whois, ip HOST, metrics.
    let out = net.meshctl(0, &["ping", "-c", "2", "node1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "meshctl ping: {text} {}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&format!("pong from node1 ({})", addrs[1])) && text.contains(" via 192.168.92.3:"), "{text}");
    let out = net.meshctl(0, &["whois", &addrs[2], "--json"]);
    let whois: serde_json::Value = serde_json::from_slice(&out.stdout).expect("whois JSON");
    assert_eq!(whois["name"], "node2");
    assert_eq!(whois["user"], "alice@example.com");
    let out = net.meshctl(0, &["whois", "100.127.255.254"]);
    assert_eq!(out.status.code(), Some(1), "whois of nobody");
    let out = net.meshctl(1, &["ip", "-4", &format!("node2.{domain}")]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), addrs[2]);
    // node1's host key reaches node0 as a known_hosts line by name, FQDN and address, and
    // it is the key node1's SSH server presents (asked by OpenSSH's ssh-keyscan).
    let out = net.meshctl(0, &["known-hosts"]);
    let known = String::from_utf8_lossy(&out.stdout).to_string();
    let prefix = format!("node1,node1.{domain},{}", addrs[1]);
    let line = known
        .lines()
        .find(|l| l.starts_with(&prefix) && l.contains(" ssh-ed25519 "))
        .unwrap_or_else(|| panic!("node1 in known-hosts: {known}"));
    assert_eq!(known.lines().count(), 1, "only node1 serves SSH: {known}");
    let key = line.split_whitespace().nth(2).expect("key").to_string();
    let scan = Command::new("ip")
        .args(["netns", "exec", &net.nodes[0], "ssh-keyscan", "-t", "ed25519", "-T", "5", &addrs[1]])
        .output()
        .expect("ssh-keyscan");
    let scanned = String::from_utf8_lossy(&scan.stdout).to_string();
    assert!(scanned.lines().any(|l| l.ends_with(&key)), "ssh-keyscan: {scanned} vs {key}");
    let out = net.meshctl(0, &["debug", "metrics"]);
    let metrics: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metrics JSON");
    assert!(metrics["event_loop"]["udp_rx"]["packets"].as_u64().is_some_and(|n| n > 0), "{metrics}");
    assert!(metrics["node"]["dns_queries"].as_u64().is_some_and(|n| n > 0), "{metrics}");

    // `up` again with SSH on: the node is rebuilt on the same addresses (the TUN keeps
    // them), its host key reaches the others, and traffic goes on.
    net.up(0, &key, &["--accept-dns", "--ssh"]);
    assert_eq!(net.status(0)["ssh"], true);
    wait_for(
        || String::from_utf8_lossy(&net.meshctl(2, &["known-hosts"]).stdout).lines().count() == 2,
        "node0's host key at node2",
        || net.logs(),
    );
    assert!(ping(&net.nodes[0], "node2", 2), "node0 -> node2 after the rebuild\n{}", net.logs());
    let tun = Command::new("ip").args(["-n", &net.nodes[0], "-br", "addr", "show", "dev", "mesh0"]).output();
    let tun = String::from_utf8_lossy(&tun.expect("ip addr").stdout).to_string();
    assert_eq!(tun.matches(&format!("{}/32", addrs[0])).count(), 1, "one IPv4 address on the TUN: {tun}");

    // A policy that lets node0-node1 and node1-node2 talk, but not node0-node2: within 2 s
    // of `policy set` the pair's pings fail; the others keep working.
    let policy = format!(
        r#"{{
          // pairs by address
          "acls": [
            {{"action": "accept", "src": ["{a0}", "{a1}"], "dst": ["{a0}:*", "{a1}:*"]}},
            {{"action": "accept", "src": ["{a1}", "{a2}"], "dst": ["{a1}:*", "{a2}:*"]}},
          ],
        }}"#,
        a0 = addrs[0],
        a1 = addrs[1],
        a2 = addrs[2]
    );
    net.set_policy(&policy);
    sleep(Duration::from_secs(2));
    assert!(!ping(&net.nodes[0], &addrs[2], 2), "node0 -> node2 must be denied 2 s after policy set\n{}", net.logs());
    assert!(!ping(&net.nodes[2], &addrs[0], 2), "node2 -> node0 must be denied\n{}", net.logs());
    assert!(ping(&net.nodes[0], &addrs[1], 2), "node0 -> node1 stays allowed\n{}", net.logs());
    assert!(ping(&net.nodes[2], &addrs[1], 2), "node2 -> node1 stays allowed\n{}", net.logs());

    // A deleted node disappears from every peer's status.
    let id = net.node_id("node1");
    net.admin(&["nodes", "delete", &id.to_string()]);
    for i in [0, 2] {
        wait_for(|| !peer_names(&net.status(i)).contains(&"node1".to_string()), "node1 gone", || net.logs());
    }
    assert!(!ping(&net.nodes[0], &addrs[1], 1), "a deleted node is unreachable");

    // down puts the original resolv.conf back; logout forgets the registration.
    let out = net.meshctl(0, &["down"]);
    assert!(out.status.success());
    assert_eq!(fs::read_to_string(net.resolv_conf(0)).expect("resolv.conf"), original);
    assert_eq!(net.status(0)["peers"].as_array().map_or(0, Vec::len), 0, "down: no peers");
    assert!(net.node_dir(0).join("prefs.json").exists(), "down keeps the registration");
    let out = net.meshctl(2, &["logout"]);
    assert!(out.status.success());
    assert_eq!(fs::read_to_string(net.resolv_conf(2)).expect("resolv.conf"), original);
    assert!(!net.node_dir(2).join("prefs.json").exists(), "logout forgets the registration");
}

/// `ssh` with only `known` trusted, as OpenSSH runs it for a user with no keys anywhere.
fn ssh_command(ns: &str, known: &Path, destination: &str, command: &str) -> Command {
    ssh_with(ns, known, &[], destination, command)
}

/// [`ssh_command`] with more options (before the destination).
fn ssh_with(ns: &str, known: &Path, options: &[&str], destination: &str, command: &str) -> Command {
    let mut ssh = Command::new("ip");
    ssh.args(["netns", "exec", ns, "ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known.display()))
        .args(["-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10"])
        .args(options)
        .arg(destination);
    if !command.is_empty() {
        ssh.arg(command);
    }
    ssh
}

#[test]
fn ssh_by_identity_runs_as_the_mapped_user_and_is_revoked_with_the_policy() {
    if !is_root() || !Path::new("/usr/bin/ssh").exists() {
        return;
    }
    let Some(user) = support::TestUser::create("/bin/bash") else { return };
    let open = r#"{
      "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
      "ssh": [{"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self"], "users": ["autogroup:nonroot"],
               "acceptEnv": ["MESH_OK_*"]}],
    }"#;
    let (mut net, known, a1) = ssh_lab("ssh", 93, open);
    let dest = format!("{}@{a1}", user.name);

    // Who the session runs as, and its exit code.
    let out = ssh_command(&net.nodes[0], &known, &dest, "whoami; id -u; echo $HOME; exit 7").output().expect("ssh");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let uid = nix::unistd::User::from_name(&user.name).expect("lookup").expect("user").uid.as_raw();
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        [user.name.as_str(), &uid.to_string(), &format!("/home/{}", user.name)],
        "ssh output; stderr: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        net.logs()
    );
    assert_eq!(out.status.code(), Some(7), "the exit code comes through");

    // meshctl ssh: by name, with the netmap's keys only.
    let out = Command::new("ip")
        .args(["netns", "exec", &net.nodes[0], env!("CARGO_BIN_EXE_meshctl"), "--socket"])
        .arg(net.node_dir(0).join("meshd.sock"))
        .args(["ssh", &format!("{}@node1", user.name), "--", "-o", "BatchMode=yes", "echo", "by-name"])
        .env("XDG_CONFIG_HOME", net.dir.join("config"))
        .output()
        .expect("meshctl ssh");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "by-name", "{}", String::from_utf8_lossy(&out.stderr));

    // root is not a nonroot user: denied with the reason as the banner.
    let out = ssh_command(&net.nodes[0], &known, &format!("root@{a1}"), "true").output().expect("ssh");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(255), "root denied: {stderr}");
    assert!(stderr.contains("does not let this node log in here as \"root\""), "the banner says why: {stderr}");

    // A locked account is refused at login, with the reason, as OpenSSH refuses it.
    user.admin("usermod", &["-L", &user.name]);
    let out = ssh_command(&net.nodes[0], &known, &dest, "true").output().expect("ssh");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(255), "locked: {stderr}");
    assert!(stderr.contains("locked"), "the banner says why: {stderr}");
    user.admin("usermod", &["-p", "*", &user.name]);

    // acceptEnv: the allowed variable arrives, the other does not.
    let env_options = ["-o", "SendEnv=MESH_OK_A", "-o", "SendEnv=MESH_NO_B"];
    let out = ssh_with(&net.nodes[0], &known, &env_options, &dest, "echo \"$MESH_OK_A:$MESH_NO_B\"")
        .env("MESH_OK_A", "yes")
        .env("MESH_NO_B", "no")
        .output()
        .expect("ssh");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "yes:", "{}", String::from_utf8_lossy(&out.stderr));

    // direct-tcpip (ssh -W) reaches a service on node1's loopback.
    let service = Command::new("ip")
        .args(["netns", "exec", &net.nodes[1], "python3", "-c"])
        .arg(
            "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
             s.bind(('127.0.0.1',8099))\ns.listen()\nprint('up',flush=True)\n\
             c,_=s.accept()\nc.sendall(b'hello-forward\\n')\nc.close()",
        )
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 service");
    // Listening once it says so (a sleep races a loaded machine).
    let mut service = service;
    let mut up = String::new();
    BufReader::new(service.stdout.take().expect("service stdout")).read_line(&mut up).expect("service up");
    assert_eq!(up.trim(), "up");
    net.children.push(service);
    let out = ssh_with(&net.nodes[0], &known, &["-W", "127.0.0.1:8099"], &dest, "")
        .stdin(Stdio::null())
        .output()
        .expect("ssh -W");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hello-forward",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A live session and a forwarding-only connection (ssh -N -L) end within 2 s of a
    // policy without the rule, the session's processes too.
    let mut live = ssh_command(&net.nodes[0], &known, &dest, "sleep 600 & sleep 600")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ssh");
    let mut forward = ssh_with(&net.nodes[0], &known, &["-N", "-L", "18099:127.0.0.1:8099"], &dest, "")
        .stderr(Stdio::null())
        .spawn()
        .expect("ssh -N -L");
    wait_for(
        || Command::new("pgrep").args(["-u", &user.name, "sleep"]).output().is_ok_and(|o| o.status.success()),
        "the remote sleep",
        || net.logs(),
    );
    wait_for(
        || {
            let ss =
                Command::new("ip").args(["netns", "exec", &net.nodes[0], "ss", "-Hltn", "sport = :18099"]).output();
            ss.is_ok_and(|o| !o.stdout.is_empty())
        },
        "the -L forward listening",
        || net.logs(),
    );
    assert!(forward.try_wait().expect("wait").is_none(), "the forward is up");
    let closed = r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#;
    net.set_policy(closed);
    let changed = Instant::now();
    let status = loop {
        if let Some(status) = live.try_wait().expect("wait") {
            break status;
        }
        assert!(changed.elapsed() < Duration::from_secs(10), "the session outlived the policy\n{}", net.logs());
        sleep(Duration::from_millis(20));
    };
    let took = changed.elapsed();
    let forward_done = loop {
        if forward.try_wait().expect("wait").is_some() {
            break changed.elapsed();
        }
        assert!(changed.elapsed() < Duration::from_secs(10), "ssh -N -L outlived the policy\n{}", net.logs());
        sleep(Duration::from_millis(20));
    };
    assert!(forward_done < Duration::from_secs(2), "the forward revoked after {forward_done:?}");
    let mut stderr = String::new();
    if let Some(mut pipe) = live.stderr.take() {
        use std::io::Read as _;
        let _ = pipe.read_to_string(&mut stderr);
    }
    eprintln!("revoked after {took:?}: {stderr}");
    assert!(!status.success());
    assert!(stderr.contains("Access revoked"), "{stderr}");
    assert!(took < Duration::from_secs(2), "revoked after {took:?}");
    wait_for(
        || Command::new("pgrep").args(["-u", &user.name]).output().is_ok_and(|o| !o.status.success()),
        "the session's processes to be gone",
        || net.logs(),
    );
    // And a new login is refused.
    let out = ssh_command(&net.nodes[0], &known, &dest, "true").output().expect("ssh");
    assert_eq!(out.status.code(), Some(255));

    // The rule back; then the source node is deleted: its live session ends as fast.
    net.set_policy(open);
    sleep(Duration::from_millis(500));
    let mut live = ssh_command(&net.nodes[0], &known, &dest, "sleep 600")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ssh");
    wait_for(
        || Command::new("pgrep").args(["-u", &user.name, "sleep"]).output().is_ok_and(|o| o.status.success()),
        "the remote sleep",
        || net.logs(),
    );
    let id = net.node_id("node0");
    net.admin(&["nodes", "delete", &id.to_string()]);
    let deleted = Instant::now();
    while live.try_wait().expect("wait").is_none() {
        assert!(deleted.elapsed() < Duration::from_secs(10), "the session outlived its node\n{}", net.logs());
        sleep(Duration::from_millis(20));
    }
    let took = deleted.elapsed();
    assert!(took < Duration::from_secs(2), "revoked {took:?} after the source node was deleted");

    // Every decision reached the server's audit log: who, from where, as whom, which rule.
    let audit = net.admin(&["audit", "--limit", "1000"]);
    let lines = |action: &str| audit.lines().filter(|l| l.contains(action)).map(str::to_string).collect::<Vec<_>>();
    let accepted = lines("ssh-accept");
    assert!(
        accepted.iter().any(|l| l.contains(&format!("as {}", user.name)) && l.contains("ssh[0]")),
        "accepts in the audit log:\n{audit}"
    );
    assert!(accepted.iter().all(|l| l.contains("(node0, alice@example.com) to node") && l.contains("(node1,")));
    assert!(lines("ssh-deny").iter().any(|l| l.contains("login root")), "the root denial:\n{audit}");
    assert!(lines("ssh-deny").iter().any(|l| l.contains("locked")), "the locked account:\n{audit}");
    assert!(lines("ssh-revoke").len() >= 2, "the revoked session and forward:\n{audit}");

    // Port 22 is served on the mesh addresses only: from the underlay (node0, and node1
    // itself) nothing answers.
    let underlay = "192.168.93.3";
    for ns in [&net.nodes[0], &net.nodes[1]] {
        let out = ssh_command(ns, &known, &format!("{}@{underlay}", user.name), "true").output().expect("ssh");
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(stderr.contains("Connection refused"), "port 22 on the underlay from {ns}: {stderr}");
    }
    drop(user);
}

/// `meshctl known-hosts` of node `i` in a file, once it lists a host key.
fn known_hosts_of(net: &Tailnet, i: usize) -> PathBuf {
    let known = net.dir.join("known_hosts");
    wait_for(
        || {
            let out = net.meshctl(i, &["known-hosts"]);
            fs::write(&known, &out.stdout).expect("known_hosts");
            !out.stdout.is_empty()
        },
        "a peer's host key",
        || net.logs(),
    );
    known
}

/// Two nodes of one user with `policy`: node1 serves SSH, node0 holds node1's host key in
/// the returned known_hosts file. Also node1's IPv4 mesh address.
fn ssh_lab(tag: &str, subnet: u8, policy: &str) -> (Tailnet, PathBuf, String) {
    let mut net = Tailnet::new(tag, subnet, 2);
    net.start_server();
    net.admin(&["users", "create", "alice@example.com"]);
    let key = net.admin(&["preauthkeys", "create", "--user", "alice@example.com", "--reusable"]);
    net.set_policy(policy);
    for i in 0..2 {
        net.start_node(i);
    }
    net.up(1, &key, &["--ssh"]);
    net.up(0, &key, &[]);
    wait_for(|| peer_names(&net.status(0)).contains(&"node1".to_string()), "node0 to list node1", || net.logs());
    let a1 = ipv4_of(&net.status(1));
    let known = known_hosts_of(&net, 0);
    (net, known, a1)
}

/// The pending check holds' tokens on the server.
fn check_tokens(net: &Tailnet) -> Vec<String> {
    let list: serde_json::Value = serde_json::from_str(&net.admin(&["auth", "list", "--json"])).expect("auth list");
    list.as_array()
        .map(|a| {
            a.iter().filter(|p| p["kind"] == "check").filter_map(|p| p["token"].as_str().map(str::to_string)).collect()
        })
        .unwrap_or_default()
}

#[test]
fn ssh_check_mode_holds_until_the_server_approves_and_remembers_for_the_period() {
    if !is_root() || !Path::new("/usr/bin/ssh").exists() {
        return;
    }
    let Some(user) = support::TestUser::create("/bin/bash") else { return };
    let policy = |period: &str| {
        format!(
            r#"{{
              "acls": [{{"action": "accept", "src": ["*"], "dst": ["*:*"]}}],
              "ssh": [{{"action": "check", "checkPeriod": "{period}", "src": ["autogroup:member"],
                        "dst": ["autogroup:self"], "users": ["autogroup:nonroot"]}}],
            }}"#
        )
    };
    let (net, known, a1) = ssh_lab("chk", 94, &policy("12h"));
    let dest = format!("{}@{a1}", user.name);
    let held = |net: &Tailnet| {
        let child = ssh_command(&net.nodes[0], &known, &dest, "echo checked")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ssh");
        let mut token = Vec::new();
        wait_for(
            || {
                token = check_tokens(net);
                !token.is_empty()
            },
            "a check hold on the server",
            || net.logs(),
        );
        (child, token.remove(0))
    };

    // The login is held, the banner says why and where; approval lets it through.
    let (child, token) = held(&net);
    sleep(Duration::from_millis(300));
    net.admin(&["auth", "approve", &token]);
    let out = child.wait_with_output().expect("ssh");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "checked", "{stderr}\n{}", net.logs());
    assert!(stderr.contains("# SSH requires an additional check."), "{stderr}");
    assert!(stderr.contains("# To authenticate, visit: http://192.168.94.1:"), "{stderr}");
    assert!(stderr.contains("# Authentication checked just now."), "{stderr}");

    // Within the check period the next login is not held.
    let started = Instant::now();
    let out = ssh_command(&net.nodes[0], &known, &dest, "echo again").output().expect("ssh");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "again", "{}", String::from_utf8_lossy(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(check_tokens(&net).is_empty());

    // checkPeriod "always": every login is held; a rejection ends it.
    net.set_policy(&policy("always"));
    sleep(Duration::from_millis(500));
    let (child, token) = held(&net);
    net.admin(&["auth", "reject", &token]);
    let out = child.wait_with_output().expect("ssh");
    assert_eq!(out.status.code(), Some(255), "rejected: {}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty());
    drop(user);
}

#[test]
fn scp_sftp_and_an_interactive_terminal_through_the_daemon() {
    if !is_root() || !Path::new("/usr/bin/ssh").exists() || !Path::new("/usr/bin/tmux").exists() {
        return;
    }
    let Some(user) = support::TestUser::create("/bin/bash") else { return };
    let open = r#"{
      "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
      "ssh": [{"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self"], "users": ["autogroup:nonroot"]}],
    }"#;
    let (net, known, a1) = ssh_lab("scp", 95, open);
    let dest = format!("{}@{a1}", user.name);
    let options = |known: &Path| {
        vec![
            "-F".to_string(),
            "/dev/null".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            format!("UserKnownHostsFile={}", known.display()),
        ]
    };

    // 100 MB of random bytes there with scp and back with sftp: byte-exact, owned by the user.
    let source = net.dir.join("payload");
    let mut payload = vec![0u8; 100 << 20];
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
    for chunk in payload.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bytes = x.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    fs::write(&source, &payload).expect("payload");
    let remote = format!("/home/{}/payload", user.name);
    let started = Instant::now();
    let scp = Command::new("ip")
        .args(["netns", "exec", &net.nodes[0], "scp", "-q"])
        .args(options(&known))
        .arg(&source)
        .arg(format!("{dest}:{remote}"))
        .output()
        .expect("scp");
    assert!(scp.status.success(), "scp: {}\n{}", String::from_utf8_lossy(&scp.stderr), net.logs());
    assert_eq!(fs::read(&remote).expect("remote copy"), payload, "scp byte-exact");
    use std::os::unix::fs::MetadataExt as _;
    let uid = nix::unistd::User::from_name(&user.name).expect("lookup").expect("user").uid.as_raw();
    assert_eq!(fs::metadata(&remote).expect("meta").uid(), uid, "owned by the mapped user");
    let back = net.dir.join("back");
    let batch = net.dir.join("batch");
    fs::write(&batch, format!("get {remote} {}\n", back.display())).expect("batch");
    let sftp = Command::new("ip")
        .args(["netns", "exec", &net.nodes[0], "sftp", "-q"])
        .args(options(&known))
        .arg("-b")
        .arg(&batch)
        .arg(&dest)
        .output()
        .expect("sftp");
    assert!(sftp.status.success(), "sftp: {}", String::from_utf8_lossy(&sftp.stderr));
    eprintln!("100 MB by scp and back by sftp: {:?}", started.elapsed());
    assert_eq!(fs::read(&back).expect("sftp copy"), payload, "sftp byte-exact");

    // An interactive shell on a terminal (ssh -tt in tmux): a command runs, `exit` ends it.
    let session = format!("meshd-tt-{}", std::process::id());
    let command = format!(
        "ip netns exec {} ssh -tt {} {dest}; echo ssh-exit=$? > {}",
        net.nodes[0],
        options(&known).join(" "),
        net.dir.join("tt-exit").display()
    );
    let tmux = |args: &[&str]| Command::new("tmux").args(args).output().expect("tmux");
    assert!(tmux(&["new-session", "-d", "-s", &session, "-x", "120", "-y", "30", &command]).status.success());
    let capture = || String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", &session]).stdout).to_string();
    wait_for(|| capture().contains('$'), "a shell prompt", capture);
    tmux(&["send-keys", "-t", &session, "echo tty=$(tty) user=$(whoami)", "Enter"]);
    wait_for(|| capture().contains(&format!("user={}", user.name)), "the command's output", capture);
    assert!(capture().contains("tty=/dev/pts/"), "{}", capture());
    tmux(&["send-keys", "-t", &session, "exit 3", "Enter"]);
    let exit = net.dir.join("tt-exit");
    wait_for(|| exit.exists(), "ssh -tt to end", capture);
    let _ = tmux(&["kill-session", "-t", &session]);
    assert_eq!(fs::read_to_string(&exit).expect("exit").trim(), "ssh-exit=3");
    let _ = fs::remove_file(&remote);
    drop(user);
}

/// The fields of /proc/<pid>/status a privilege check looks at.
fn proc_status_field<'a>(status: &'a str, name: &str) -> &'a str {
    status.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':'))).unwrap_or("").trim()
}

#[test]
fn forwarding_agent_privileges_and_uid_0_names_follow_the_rule() {
    if !is_root() || !Path::new("/usr/bin/ssh-agent").exists() || !Path::new("/usr/bin/setpriv").exists() {
        return;
    }
    let Some(user) = support::TestUser::create("/bin/bash") else { return };
    let Some(other) = support::TestUser::create("/bin/bash") else { return };
    // The first rule withholds forwarding from `other`; the second gives the rest all of it.
    let policy = format!(
        r#"{{
          "acls": [{{"action": "accept", "src": ["*"], "dst": ["*:*"]}}],
          "ssh": [
            {{"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self"], "users": ["{}"],
              "allowLocalPortForwarding": false, "allowAgentForwarding": false}},
            {{"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self"], "users": ["autogroup:nonroot"]}},
          ],
        }}"#,
        other.name
    );
    let (mut net, known, a1) = ssh_lab("fwd", 96, &policy);
    let dest = format!("{}@{a1}", user.name);

    // Agent forwarding: a real ssh-agent on node0 with one key; the session on node1 sees
    // it through a socket of the user's, mode 0600, that another user cannot use.
    let agent_sock = net.dir.join("agent.sock");
    let agent = Command::new("ssh-agent").arg("-D").arg("-a").arg(&agent_sock).stdout(Stdio::null()).spawn();
    net.children.push(agent.expect("ssh-agent"));
    wait_for(|| agent_sock.exists(), "ssh-agent's socket", || net.logs());
    let key = net.dir.join("id_agent");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "agent-key-7", "-f"])
        .arg(&key)
        .status();
    assert!(made.expect("ssh-keygen").success());
    let added = Command::new("ssh-add").arg(&key).env("SSH_AUTH_SOCK", &agent_sock).output().expect("ssh-add");
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    let mut session = ssh_with(
        &net.nodes[0],
        &known,
        &["-A"],
        &dest,
        "echo \"$SSH_AUTH_SOCK\"; stat -c '%U %a' \"$SSH_AUTH_SOCK\"; ssh-add -l; sleep 3",
    )
    .env("SSH_AUTH_SOCK", &agent_sock)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("ssh -A");
    let mut out = BufReader::new(session.stdout.take().expect("stdout"));
    let mut line = || {
        let mut l = String::new();
        out.read_line(&mut l).expect("read");
        l.trim().to_string()
    };
    let remote_sock = line();
    assert!(remote_sock.starts_with('/'), "SSH_AUTH_SOCK in the session: {remote_sock:?}\n{}", net.logs());
    assert_eq!(line(), format!("{} 600", user.name), "the socket is the user's, 0600");
    assert!(line().contains("agent-key-7"), "the session lists the forwarded key");
    let as_user = |name: &str| {
        Command::new("runuser")
            .args(["-u", name, "--", "env", &format!("SSH_AUTH_SOCK={remote_sock}"), "ssh-add", "-l"])
            .output()
            .expect("runuser")
    };
    let theirs = as_user(&user.name);
    assert!(String::from_utf8_lossy(&theirs.stdout).contains("agent-key-7"), "the user reaches the agent");
    let foreign = as_user(&other.name);
    assert!(!foreign.status.success(), "another user must not reach the agent");
    assert!(String::from_utf8_lossy(&foreign.stderr).contains("Permission denied"), "{foreign:?}");
    assert!(session.wait().expect("wait").success());
    wait_for(|| !Path::new(&remote_sock).exists(), "the agent socket to go with the connection", || net.logs());

    // The rule without forwarding: -W (direct-tcpip) is refused, -A gives no socket; a
    // plain command still runs.
    let other_dest = format!("{}@{a1}", other.name);
    let out = ssh_with(&net.nodes[0], &known, &["-W", "127.0.0.1:9"], &other_dest, "")
        .stdin(Stdio::null())
        .output()
        .expect("ssh -W");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success() && stderr.contains("administratively prohibited"), "-W refused: {stderr}");
    let out = ssh_with(&net.nodes[0], &known, &["-A"], &other_dest, "echo \"agent=${SSH_AUTH_SOCK:-none}\"")
        .env("SSH_AUTH_SOCK", &agent_sock)
        .output()
        .expect("ssh -A");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "agent=none", "{}", String::from_utf8_lossy(&out.stderr));

    // Privileges, read from /proc: exactly the user's uid, gid and supplementary groups, no
    // capabilities, and root cannot be regained.
    let group = format!("meshg{}", std::process::id());
    user.admin("groupadd", &[&group]);
    user.admin("usermod", &["-a", "-G", &group, &user.name]);
    let out = ssh_command(
        &net.nodes[0],
        &known,
        &dest,
        "cat /proc/self/status; setpriv --reuid=0 --regid=0 --clear-groups id -u",
    )
    .output()
    .expect("ssh");
    let status = String::from_utf8_lossy(&out.stdout).to_string();
    let entry = nix::unistd::User::from_name(&user.name).expect("lookup").expect("user");
    let (uid, gid) = (entry.uid.as_raw(), entry.gid.as_raw());
    assert_eq!(proc_status_field(&status, "Uid"), format!("{uid}\t{uid}\t{uid}\t{uid}"), "{status}");
    assert_eq!(proc_status_field(&status, "Gid"), format!("{gid}\t{gid}\t{gid}\t{gid}"));
    let id_groups = Command::new("id").args(["-G", &user.name]).output().expect("id -G");
    let mut want: Vec<u32> =
        String::from_utf8_lossy(&id_groups.stdout).split_whitespace().filter_map(|g| g.parse().ok()).collect();
    let mut got: Vec<u32> =
        proc_status_field(&status, "Groups").split_whitespace().filter_map(|g| g.parse().ok()).collect();
    want.sort_unstable();
    got.sort_unstable();
    assert_eq!(got, want, "supplementary groups as NSS has them");
    assert!(want.len() >= 2, "the test group is among them: {want:?}");
    for caps in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        assert_eq!(proc_status_field(&status, caps), "0000000000000000", "{caps}");
    }
    assert!(!out.status.success(), "setpriv to uid 0 must fail");
    assert!(!status.lines().any(|l| l.trim() == "0"), "no command ran as root: {status}");
    let _ = Command::new("groupdel").arg(&group).status();

    // Names that are, or look like, uid 0 never log in under autogroup:nonroot: `0`, ` 0`,
    // `00`, root, and an alias account with uid 0.
    // (A TestUser, so it is deleted whatever happens.)
    let alias = support::TestUser { name: format!("meshr{}", std::process::id()) };
    user.admin("useradd", &["-o", "-u", "0", "-g", "0", "-M", "-N", "-p", "*", "-s", "/bin/bash", &alias.name]);
    for name in ["0", " 0", "00", "root", alias.name.as_str()] {
        let out = ssh_with(&net.nodes[0], &known, &["-l", name], &a1, "id -u").output().expect("ssh");
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(255), "{name:?} must not log in: {stderr}");
        assert!(out.stdout.is_empty(), "{name:?} ran something");
    }
    drop(alias);
    drop(other);
    drop(user);
}

/// tests/oidc: the test identity provider and the browser driver (`npm ci` installs them).
fn oidc_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/oidc")
}

/// The test OpenID provider (tests/oidc/provider.mjs) on `port` of the server namespace's
/// loopback, its client secret `secret`: the secret file's path.
fn start_provider(net: &mut Tailnet, port: u16, secret: &str) -> String {
    let file = net.dir.join("client-secret");
    fs::write(&file, format!("{secret}\n")).expect("secret");
    let redirect = format!("{}/oidc/callback", net.url());
    let mut provider = Command::new("ip")
        .args(["netns", "exec", &net.server_ns, "node"])
        .arg(oidc_dir().join("provider.mjs"))
        .args([&port.to_string(), &redirect, secret])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("provider");
    let mut line = String::new();
    BufReader::new(provider.stdout.take().expect("provider stdout")).read_line(&mut line).expect("provider line");
    assert!(line.starts_with("issuer "), "{line}");
    net.children.push(provider);
    file.to_str().expect("path").to_string()
}

/// A real Chromium in the server's namespace signs in at `link` as `person`: the page it
/// ends on (JSON: status, title, text, url). Screenshots go to target/sso-screenshots/.
fn browse(net: &Tailnet, link: &str, person: &str, name: &str) -> serde_json::Value {
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/sso-screenshots");
    let out = Command::new("ip")
        .args(["netns", "exec", &net.server_ns, "node"])
        .arg(oidc_dir().join("browser.mjs"))
        .args([link, person])
        .arg(shots)
        .arg(name)
        .output()
        .expect("node browser.mjs");
    assert!(out.status.success(), "browser: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("browser JSON")
}

#[test]
fn single_sign_on_joins_a_node_and_approves_a_held_ssh_login_in_a_real_browser() {
    if !is_root()
        || !Path::new("/usr/bin/ssh").exists()
        || !Path::new("/usr/bin/chromium").exists()
        || !oidc_dir().join("node_modules/oidc-provider").exists()
    {
        eprintln!("note: needs root, ssh, chromium and tests/oidc/node_modules; skipping");
        return;
    }
    let Some(user) = support::TestUser::create("/bin/bash") else { return };
    let mut net = Tailnet::new("sso", 97, 2);
    // The identity provider, in the server's namespace on its loopback.
    let secret = start_provider(&mut net, 9555, "sso-test-secret");
    net.start_server_with(&[
        "--server-url",
        &net.url(),
        "--oidc-issuer",
        "http://127.0.0.1:9555",
        "--oidc-client-id",
        "meshcontrol",
        "--oidc-client-secret-file",
        &secret,
    ]);
    net.set_policy(
        r#"{
          "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
          "ssh": [{"action": "check", "checkPeriod": "15s", "src": ["autogroup:member"],
                   "dst": ["autogroup:self"], "users": ["autogroup:nonroot"]}],
        }"#,
    );
    for i in 0..2 {
        net.start_node(i);
    }

    // `meshctl up` without a key prints the link; alice signs in; the command returns.
    let url = net.url();
    let mut up = Command::new("ip")
        .args(["netns", "exec", &net.nodes[0], env!("CARGO_BIN_EXE_meshctl"), "--socket"])
        .arg(net.node_dir(0).join("meshd.sock"))
        .args(["up", "--login-server", &url, "--hostname", "node0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("meshctl up");
    let mut out = BufReader::new(up.stdout.take().expect("up stdout"));
    let link = loop {
        let mut l = String::new();
        assert!(out.read_line(&mut l).expect("read") > 0, "meshctl up ended without a link\n{}", net.logs());
        if let Some(link) = l.trim().strip_prefix("http://").map(|rest| format!("http://{rest}")) {
            break link;
        }
    };
    assert!(link.contains("/register/"), "{link}");
    let page = browse(&net, &link, "alice", "meshctl-up");
    assert_eq!(page["status"], 200, "{page}\n{}", net.logs());
    let status = up.wait().expect("meshctl up");
    assert!(status.success(), "meshctl up returns once registered");
    let nodes = net.admin(&["nodes", "list", "--json"]);
    assert!(nodes.contains("alice@example.com"), "node0 is alice's: {nodes}");

    // node1 joins alice's tailnet with a key and serves SSH.
    let key = net.admin(&["preauthkeys", "create", "--user", "alice@example.com", "--reusable"]);
    net.up(1, &key, &["--ssh"]);
    wait_for(|| peer_names(&net.status(0)).contains(&"node1".to_string()), "node0 to list node1", || net.logs());
    let a1 = ipv4_of(&net.status(1));
    let known = known_hosts_of(&net, 0);

    // An SSH login is held by the check; alice re-authenticates in the browser; it proceeds.
    let dest = format!("{}@{a1}", user.name);
    let held_login = |shot: &str| {
        let child = ssh_command(&net.nodes[0], &known, &dest, "echo through-sso")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ssh");
        let mut token = Vec::new();
        wait_for(
            || {
                token = check_tokens(&net);
                !token.is_empty()
            },
            "a check hold",
            || net.logs(),
        );
        let link = format!("{}/check/{}", net.url(), token.remove(0));
        let page = browse(&net, &link, "alice", shot);
        assert_eq!(page["status"], 200, "{page}");
        let out = child.wait_with_output().expect("ssh");
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "through-sso", "{stderr}");
        assert!(stderr.contains("# To authenticate, visit:"), "{stderr}");
        (link, Instant::now())
    };
    let (link, approved) = held_login("ssh-check");
    // Within the 15 s check period the next login is not held (a held one would block: it
    // is waited for with a deadline).
    let mut unheld = ssh_command(&net.nodes[0], &known, &dest, "echo unheld")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ssh");
    let deadline = Instant::now() + Duration::from_secs(10);
    while unheld.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = unheld.kill();
            panic!("a login within the check period was held\n{}", net.logs());
        }
        sleep(Duration::from_millis(50));
    }
    let out = unheld.wait_with_output().expect("ssh");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "unheld", "{stderr}");
    assert!(!stderr.contains("To authenticate"), "not held within the period: {stderr}");
    // The check link is used up: the browser sees the expired page.
    let again = browse(&net, &link, "alice", "ssh-check-reused");
    assert_eq!(again["status"], 404, "{again}");
    // After the period, the login is held again.
    sleep(Duration::from_secs(16).saturating_sub(approved.elapsed()));
    held_login("ssh-check-after-period");
    drop(user);
}

/// A real Chromium in the server's namespace that the test steers a step at a time
/// (tests/oidc/drive.mjs): each step answers with the page it ends on.
struct Chromium {
    child: Child,
    stdin: std::process::ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Chromium {
    fn start(net: &Tailnet) -> Self {
        let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/sso-screenshots");
        let mut child = Command::new("ip")
            .args(["netns", "exec", &net.server_ns, "node"])
            .arg(oidc_dir().join("drive.mjs"))
            .arg(shots)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node drive.mjs");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Self { child, stdin, stdout }
    }

    /// One step; panics when the browser could not do it.
    fn step(&mut self, command: serde_json::Value) -> serde_json::Value {
        writeln!(self.stdin, "{command}").expect("to the browser");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("from the browser");
        let page: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert_eq!(page["ok"], true, "{command} failed: {page}");
        page
    }

    fn goto(&mut self, url: &str) -> serde_json::Value {
        self.step(serde_json::json!({"op": "goto", "url": url}))
    }

    fn click(&mut self, selector: &str) -> serde_json::Value {
        self.step(serde_json::json!({"op": "click", "selector": selector}))
    }

    fn fill(&mut self, selector: &str, value: &str) {
        self.step(serde_json::json!({"op": "fill", "selector": selector, "value": value}));
    }

    fn shot(&mut self, name: &str) {
        self.step(serde_json::json!({"op": "shot", "name": name}));
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn text(page: &serde_json::Value) -> &str {
    page["text"].as_str().unwrap_or_default()
}

#[test]
fn the_admin_console_in_a_real_browser_expires_a_machine_edits_the_policy_and_approves_a_hold() {
    if !is_root()
        || !Path::new("/usr/bin/ssh").exists()
        || !Path::new("/usr/bin/chromium").exists()
        || !oidc_dir().join("node_modules/oidc-provider").exists()
    {
        eprintln!("note: needs root, ssh, chromium and tests/oidc/node_modules; skipping");
        return;
    }
    let Some(user) = support::TestUser::create("/bin/bash") else { return };
    let mut net = Tailnet::new("console", 98, 3);
    let secret = start_provider(&mut net, 9556, "console-test-secret");
    // alice is in the provider's group eng, bob in sales: eng runs the tailnet.
    net.start_server_with(&[
        "--server-url",
        &net.url(),
        "--oidc-issuer",
        "http://127.0.0.1:9556",
        "--oidc-client-id",
        "meshcontrol",
        "--oidc-client-secret-file",
        &secret,
        "--console-admin-groups",
        "eng",
    ]);
    let accept = r#"{
      "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
      "ssh": [{"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self"], "users": ["autogroup:nonroot"]}],
    }"#;
    net.set_policy(accept);
    net.admin(&["users", "create", "alice@example.com"]);
    let key = net.admin(&["preauthkeys", "create", "--user", "alice@example.com", "--reusable"]);
    for i in 0..3 {
        net.start_node(i);
        net.up(i, &key, if i == 1 { &["--ssh"] } else { &[] });
    }
    wait_for(|| peer_names(&net.status(0)).len() == 2, "node0 to list both peers", || net.logs());
    let a1 = ipv4_of(&net.status(1));
    let known = known_hosts_of(&net, 0);
    let nodes: serde_json::Value = serde_json::from_str(&net.admin(&["nodes", "list", "--json"])).expect("nodes");
    let id_of = |name: &str| {
        nodes.as_array().and_then(|a| a.iter().find(|n| n["name"] == name)).and_then(|n| n["id"].as_u64()).expect("id")
    };

    let mut browser = Chromium::start(&net);
    let console = format!("{}/admin", net.url());

    // Signing in: bob is no admin; alice (group eng) is.
    let page = browser.goto(&console);
    assert!(page["url"].as_str().unwrap_or_default().ends_with("/admin/login"), "{page}");
    browser.shot("console-01-sign-in");
    let page = browser.step(serde_json::json!({"op": "sso", "person": "bob"}));
    assert_eq!(page["status"], 403, "{page}");
    assert!(text(&page).contains("bob@example.com may not use this console"), "{page}");
    browser.shot("console-02-bob-refused");
    browser.step(serde_json::json!({"op": "fresh"}));
    browser.goto(&format!("{console}/login"));
    let page = browser.step(serde_json::json!({"op": "sso", "person": "alice"}));
    assert!(page["url"].as_str().unwrap_or_default().ends_with("/admin/machines"), "{page}\n{}", net.logs());
    for name in ["node0", "node1", "node2", "alice@example.com", "online"] {
        assert!(text(&page).contains(name), "{name} on the machines page: {page}");
    }
    browser.shot("console-03-machines");

    // Expire node2 from the console: its peers drop it.
    let page = browser.click(&format!("form[action=\"/admin/machines/{}/expire\"] button", id_of("node2")));
    assert!(text(&page).contains("key expired"), "{page}");
    browser.shot("console-04-machine-expired");
    wait_for(
        || !peer_names(&net.status(0)).contains(&"node2".to_string()),
        "node0 to drop the expired node2",
        || net.logs(),
    );
    assert!(peer_names(&net.status(0)).contains(&"node1".to_string()));

    // The users and keys pages; a key made in the browser is shown once.
    browser.goto(&format!("{console}/users"));
    browser.shot("console-05-users");
    browser.goto(&format!("{console}/keys"));
    let page = browser.click("form[action=\"/admin/keys/create\"] button");
    assert!(text(&page).contains("it is not shown again") && text(&page).contains("mskey-"), "{page}");
    browser.shot("console-06-key-created");

    // The policy editor: an invalid policy shows its line and is not saved.
    let before = net.admin(&["policy", "get"]);
    browser.goto(&format!("{console}/policy"));
    let invalid = "{\n  \"acls\": [\n    {\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"]},\n    {\"action\": \"accept\", \"src\": [\"group:missing\"], \"dst\": [\"*:22\"]},\n  ],\n}\n";
    browser.fill("#policy-text", invalid);
    let page = browser.click("#save");
    assert_eq!(page["status"], 422, "{page}");
    assert!(text(&page).contains("policy.hujson:4:"), "the error names line 4: {page}");
    browser.shot("console-07-policy-error");
    assert_eq!(net.admin(&["policy", "get"]), before, "nothing saved");
    // A valid one: SSH into node1 now needs a check. The preview names node1's change.
    let check = r#"{
  "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
  "ssh": [{"action": "check", "checkPeriod": "1h", "src": ["autogroup:member"], "dst": ["autogroup:self"], "users": ["autogroup:nonroot"]}],
}
"#;
    browser.fill("#policy-text", check);
    let page = browser.click("#preview");
    assert!(text(&page).contains("What would change") && text(&page).contains("ssh check"), "{page}");
    browser.shot("console-08-policy-preview");
    assert_eq!(net.admin(&["policy", "get"]), before, "a preview saves nothing");
    browser.fill("#policy-text", check);
    let page = browser.click("#save");
    assert!(text(&page).contains("Saved: every node receives the new policy"), "{page}");
    browser.shot("console-09-policy-saved");

    // The nodes have it: the next login to node1 is held, and the console approves it.
    sleep(Duration::from_millis(500));
    let dest = format!("{}@{a1}", user.name);
    let ssh = ssh_command(&net.nodes[0], &known, &dest, "echo approved-in-console")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ssh");
    wait_for(|| !check_tokens(&net).is_empty(), "a check hold", || net.logs());
    let page = browser.goto(&format!("{console}/pending"));
    assert!(text(&page).contains("SSH check"), "{page}");
    browser.shot("console-10-pending");
    let page = browser.click("form[action=\"/admin/pending/approve\"] button");
    assert!(text(&page).contains("Approved."), "{page}");
    let out = ssh.wait_with_output().expect("ssh");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "approved-in-console", "{stderr}");
    assert!(stderr.contains("# To authenticate, visit:"), "it was held: {stderr}");

    // Each action is in the audit log, under alice's console actor.
    let page = browser.goto(&format!("{console}/audit?actor=console%3Aalice%40example.com"));
    for action in ["console-sign-in", "node-expire", "preauthkey-create", "policy-set", "ssh-check-approve"] {
        assert!(text(&page).contains(action), "{action} in the audit log: {page}");
    }
    browser.shot("console-11-audit");
    let page = browser.goto(&format!("{console}/audit?action=console-sign-in-refused"));
    assert!(text(&page).contains("bob@example.com is not an admin"), "{page}");
    drop(browser);
    drop(user);
}
