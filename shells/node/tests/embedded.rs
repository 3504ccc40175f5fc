//! The embedded node (`meshd::embed`, as tsnet): two nodes inside this test process, no
//! TUN, no root, no namespaces, join a real `meshcontrol serve` on loopback with a
//! reusable pre-auth key; each serves a TCP echo on its mesh address and the other
//! reaches it (1 MiB back byte-identical one way, a short exchange the other); a port
//! nobody serves fails cleanly; the accepting side learns who called (WhoIs); a stopped
//! node ends its streams with an error instead of leaving readers hanging. Runs the same
//! as root (it never creates a TUN).
#![allow(clippy::expect_used)] // a failed expectation is the test failing

mod netns;

use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use meshd::embed::{EmbedConfig, EmbedError, Listener, Mesh, MeshStream};
use netns::meshcontrol_bin;

const USER: &str = "alice@example.com";
const ECHO_PORT: u16 = 7000;
const MIB: usize = 1 << 20;

/// A `meshcontrol serve` on a free loopback port, with its own state directory.
struct Control {
    child: Child,
    dir: PathBuf,
    url: String,
}

impl Control {
    fn start(dir: &Path) -> Self {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let state = dir.join("control");
        let log = fs::File::create(dir.join("control.log")).expect("log");
        let child = Command::new(meshcontrol_bin())
            .arg("--state-dir")
            .arg(&state)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("meshcontrol serve");
        let control = Self { child, dir: dir.to_path_buf(), url: format!("http://127.0.0.1:{port}") };
        let sock = state.join("admin.sock");
        wait_for(|| sock.exists(), "meshcontrol's admin socket", || control.log());
        control
    }

    fn admin(&self, args: &[&str]) -> String {
        let out = Command::new(meshcontrol_bin())
            .arg("--state-dir")
            .arg(self.dir.join("control"))
            .args(args)
            .output()
            .expect("meshcontrol admin");
        assert!(out.status.success(), "meshcontrol {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("control.log")).unwrap_or_default()
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(mut cond: impl FnMut() -> bool, what: &str, logs: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}\n{}", logs());
        sleep(Duration::from_millis(50));
    }
}

/// Echo every connection the listener accepts until it fails; each accepted stream must
/// name its caller.
fn serve_echo(listener: Listener, caller: &'static str) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while let Ok((mut stream, from)) = listener.accept() {
            let who = stream.peer().map(|p| p.name.clone());
            assert_eq!(who.as_deref(), Some(caller), "WhoIs of {from}");
            assert_eq!(stream.peer().map(|p| p.user.as_str()), Some(USER));
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                // Errors end the echo: the test checks what the caller sees.
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                stream.shutdown_write();
                let _ = stream.flush();
            });
        }
    })
}

/// Write `data` from one thread while reading the echo in this one; the echo.
fn round_trip(stream: &MeshStream, data: &[u8]) -> Vec<u8> {
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut writer = stream;
            writer.write_all(data).expect("write");
            stream.shutdown_write();
        });
        let mut back = Vec::with_capacity(data.len());
        let mut reader = stream;
        reader.read_to_end(&mut back).expect("read the echo");
        back
    })
}

fn v4(addrs: &[IpAddr]) -> IpAddr {
    *addrs.iter().find(|a| a.is_ipv4()).expect("an IPv4 mesh address")
}

/// A control server with a user and a reusable key, in a fresh directory named by `tag`.
fn tailnet(tag: &str) -> (Control, String, PathBuf) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let dir = std::env::temp_dir().join(format!("meshd-embed-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("test dir");
    let control = Control::start(&dir);
    control.admin(&["users", "create", USER]);
    let key = control.admin(&["preauthkeys", "create", "--user", USER, "--reusable"]);
    (control, key, dir)
}

/// Nodes `embed-a` and `embed-b`, running and seeing each other; their IPv4 addresses.
fn two_nodes(control: &Control, key: &str, dir: &Path) -> (Mesh, Mesh, IpAddr, IpAddr) {
    let start = |name: &str| {
        let mut config = EmbedConfig::new(dir.join(name), control.url.clone(), key, name);
        config.connect_timeout = Duration::from_secs(5);
        Mesh::start(config).expect("start an embedded node")
    };
    let a = start("embed-a");
    let b = start("embed-b");
    let addr_a = v4(&a.wait_running(Duration::from_secs(30)).unwrap_or_else(|e| panic!("a: {e}\n{}", control.log())));
    let addr_b = v4(&b.wait_running(Duration::from_secs(30)).unwrap_or_else(|e| panic!("b: {e}\n{}", control.log())));
    assert_ne!(addr_a, addr_b);
    wait_for(|| a.whois(addr_b).is_some() && b.whois(addr_a).is_some(), "each node to see the other", || control.log());
    (a, b, addr_a, addr_b)
}

#[test]
fn two_embedded_nodes_serve_and_reach_each_other_without_tun_or_root() {
    let (control, key, dir) = tailnet("echo");
    let (a, b, addr_a, addr_b) = two_nodes(&control, &key, &dir);
    assert_eq!(a.addresses(), a.wait_running(Duration::ZERO).expect("still running"));
    assert_eq!(a.whois(addr_b).map(|p| p.name), Some("embed-b".to_string()));
    assert_eq!(b.whois(addr_a).map(|p| p.user), Some(USER.to_string()));

    // A serves an echo; B sends 1 MiB through it and gets every byte back.
    let echo_a = serve_echo(a.listen(ECHO_PORT).expect("listen on A"), "embed-b");
    assert!(matches!(a.listen(ECHO_PORT), Err(EmbedError::PortInUse(ECHO_PORT))));
    let data: Vec<u8> = (0..MIB).map(|i| (i * 7 % 253) as u8).collect();
    let started = Instant::now();
    let stream = b.connect(SocketAddr::new(addr_a, ECHO_PORT)).expect("B connects to A");
    assert_eq!(stream.peer().map(|p| p.name.as_str()), Some("embed-a"), "WhoIs on the connecting side");
    let back = round_trip(&stream, &data);
    let elapsed = started.elapsed();
    assert!(back == data, "1 MiB echoed byte-identical (got {} bytes)", back.len());
    eprintln!("1 MiB echo through A: {elapsed:?} ({:.1} MB/s each way)", MIB as f64 / elapsed.as_secs_f64() / 1e6);
    drop(stream);

    // The other direction: B serves, A connects.
    let echo_b = serve_echo(b.listen(ECHO_PORT + 1).expect("listen on B"), "embed-a");
    let stream = a.connect(SocketAddr::new(addr_b, ECHO_PORT + 1)).expect("A connects to B");
    assert_eq!(round_trip(&stream, b"hello over the mesh"), b"hello over the mesh");
    drop(stream);

    // A port nobody serves is refused (as a kernel would answer), not left to time out.
    let started = Instant::now();
    let refused = b.connect_timeout(SocketAddr::new(addr_a, 7999), Duration::from_secs(5));
    assert!(matches!(refused, Err(EmbedError::Refused(_))), "a port nobody serves: {refused:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "refused at once: {:?}", started.elapsed());
    // An address no peer holds fails at once.
    let nobody = SocketAddr::new(IpAddr::from([100, 127, 255, 254]), ECHO_PORT);
    assert!(matches!(b.connect(nobody), Err(EmbedError::NoRoute(_))));

    // A stopped node ends its streams with an error: nothing waits forever.
    let stream = b.connect(SocketAddr::new(addr_a, ECHO_PORT)).expect("B connects to A again");
    (&stream).write_all(b"ping").expect("write");
    let mut four = [0u8; 4];
    (&stream).read_exact(&mut four).expect("echoed");
    b.stop();
    let mut rest = [0u8; 16];
    let after = (&stream).read(&mut rest);
    assert!(after.is_err(), "a read after the node stopped fails: {after:?}");
    assert!((&stream).write(b"x").is_err(), "and so does a write");
    drop(stream);
    drop(echo_b);

    // Restart B from its state dir: same identity and address, no auth key needed.
    let mut config = EmbedConfig::new(dir.join("embed-b"), control.url.clone(), "", "embed-b");
    config.connect_timeout = Duration::from_secs(5);
    let b = Mesh::start(config).expect("restart B");
    let again = v4(&b.wait_running(Duration::from_secs(30)).expect("B runs again"));
    assert_eq!(again, addr_b, "same address after a restart");
    let stream = b.connect(SocketAddr::new(addr_a, ECHO_PORT)).expect("B reaches A after its restart");
    assert_eq!(round_trip(&stream, b"back again"), b"back again");
    drop(stream);
    b.stop();
    a.stop();
    echo_a.join().expect("A's echo ends when A stops");
    drop(control);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_peer_removed_from_the_netmap_ends_its_streams_with_an_error() {
    let (control, key, dir) = tailnet("gone");
    let (a, b, addr_a, _) = two_nodes(&control, &key, &dir);
    let _echo = serve_echo(a.listen(ECHO_PORT).expect("listen on A"), "embed-b");
    let mut stream = b.connect(SocketAddr::new(addr_a, ECHO_PORT)).expect("B connects to A");
    (&stream).write_all(b"ping").expect("write");
    let mut four = [0u8; 4];
    (&stream).read_exact(&mut four).expect("echoed");

    // The server forgets A: B's netmap drops it, and B's connection to it ends.
    let nodes: serde_json::Value = serde_json::from_str(&control.admin(&["nodes", "list", "--json"])).expect("JSON");
    let id = nodes
        .as_array()
        .and_then(|all| all.iter().find(|n| n["name"] == "embed-a"))
        .map(|n| n["id"].to_string())
        .expect("embed-a in the node list");
    control.admin(&["nodes", "delete", id.trim_matches('"')]);
    wait_for(|| b.whois(addr_a).is_none(), "B to forget A", || control.log());
    stream.set_read_timeout(Some(Duration::from_secs(10)));
    let after = (&stream).read(&mut four);
    let kind = after.as_ref().err().map(std::io::Error::kind);
    assert_eq!(kind, Some(std::io::ErrorKind::ConnectionReset), "a read on a stream to a peer that left: {after:?}");
    drop(stream);
    b.stop();
    a.stop();
    drop(control);
    let _ = fs::remove_dir_all(&dir);
}

/// The handles are shared between application threads.
#[test]
fn handles_are_send_and_sync() {
    fn shared<T: Send + Sync>() {}
    shared::<Mesh>();
    shared::<Listener>();
    shared::<MeshStream>();
}
