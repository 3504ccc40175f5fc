//! Test tooling for `meshcontrol serve` as a real process: a temp state dir, the server on
//! a loopback port the OS picks, the admin CLI, a tiny HTTP client, and a node that speaks
//! the control protocol with the core's `ChannelClient` over a std `TcpStream`.
#![allow(dead_code)]

pub mod browser;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mesh_core::control::messages::{decode, encode, NodeMessage, Register, RegisterAuth, ServerMessage};
use mesh_core::control::upgrade::{upgrade_request, UpgradeReader, UpgradeStatus};
use mesh_core::control::{ChannelClient, ChannelConfig};
use mesh_core::rng::Rng;
use mesh_core::wireguard::{PrivateKey, PublicKey};

/// Generous: the machine may be busy with other builds.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let d = std::env::temp_dir().join(format!("meshcontrol-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
        Self(d)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn state(&self) -> PathBuf {
        self.0.join("state")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `meshcontrol serve`, killed (by pid) on drop.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub state: PathBuf,
    pub log: PathBuf,
}

impl Server {
    pub fn start(dir: &TempDir) -> Self {
        Self::start_with(dir, &[])
    }

    pub fn start_with(dir: &TempDir, extra: &[&str]) -> Self {
        Self::start_on(dir, "127.0.0.1:0", extra)
    }

    /// On `listen` (an address chosen beforehand, when something must know the URL first).
    pub fn start_on(dir: &TempDir, listen: &str, extra: &[&str]) -> Self {
        let state = dir.state();
        let n = std::fs::read_dir(dir.path()).map(|d| d.count()).unwrap_or(0);
        let log = dir.path().join(format!("server-{n}.log"));
        let stderr = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{e}"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_meshcontrol"))
            .arg("serve")
            .arg("--state-dir")
            .arg(&state)
            .args(["--listen", listen])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let Some(addr) = line.trim().strip_prefix("listening on http://").and_then(|a| a.parse().ok()) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server did not start: {line:?}\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        };
        Self { child, addr, state, log }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SIGKILL, by pid.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        cli(&self.state, args, None)
    }

    /// Server public key, from `/key`.
    pub fn key(&self) -> PublicKey {
        let (status, body) = http(self.addr, "GET", "/key", &[], "");
        assert_eq!(status, 200);
        parse_key(body.trim())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn parse_key(hex: &str) -> PublicKey {
    assert_eq!(hex.len(), 64, "{hex:?}");
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or_else(|e| panic!("{e}"));
    }
    PublicKey(out)
}

#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Asserts exit 0; returns stdout.
    pub fn ok(self) -> String {
        assert_eq!(self.code, 0, "{self:?}");
        self.stdout
    }
}

/// The admin CLI against the server whose state dir is `state`.
pub fn cli(state: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshcontrol"))
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .env_remove("MESHCONTROL_SERVER")
        .env_remove("MESHCONTROL_API_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin.unwrap_or_default().as_bytes());
    }
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// One HTTP/1.1 request with `Connection: close`: (status, body).
pub fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let (status, _, body) = http_full(addr, method, path, headers, body);
    (status, body)
}

/// (status, header lines, body).
pub fn http_full(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{e}"));
    stream.set_read_timeout(Some(DEADLINE)).unwrap_or_else(|e| panic!("{e}"));
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no header block: {text:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status: {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

/// A node: the control protocol over a std TcpStream.
pub struct Node {
    pub stream: TcpStream,
    pub channel: ChannelClient,
    pub machine: PrivateKey,
    pub node_key: PublicKey,
}

impl Node {
    /// Connects and sends the upgrade with record 1 right behind it; the handshake
    /// completes when the answer is read.
    pub fn connect(addr: SocketAddr, server_key: PublicKey, n: u8) -> Self {
        Self::try_connect(addr, server_key, n).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_connect(addr: SocketAddr, server_key: PublicKey, n: u8) -> Result<Self, String> {
        let machine = PrivateKey::from_bytes([n; 32]);
        let node_key = PrivateKey::from_bytes([n.wrapping_add(100); 32]).public_key();
        let mut rng = Rng::new([n.wrapping_add(50); 32]);
        let mut channel = ChannelClient::new(machine.clone(), server_key, &mut rng, ChannelConfig::default())
            .map_err(|e| e.to_string())?;
        let stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        stream.set_read_timeout(Some(Duration::from_millis(100))).map_err(|e| e.to_string())?;
        let mut out = upgrade_request(&addr.to_string());
        while let Some(bytes) = channel.poll_transmit() {
            out.extend_from_slice(&bytes);
        }
        let mut node = Self { stream, channel, machine, node_key };
        node.stream.write_all(&out).map_err(|e| e.to_string())?;
        node.finish_upgrade()?;
        Ok(node)
    }

    fn finish_upgrade(&mut self) -> Result<(), String> {
        let mut reader = UpgradeReader::new();
        let deadline = Instant::now() + DEADLINE;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            match self.stream.read(&mut buf) {
                Ok(0) => return Err("the server closed the connection during the upgrade".into()),
                Ok(n) => match reader.handle_input(&buf[..n]).map_err(|e| e.to_string())? {
                    UpgradeStatus::Pending => {}
                    UpgradeStatus::Switched { rest } => {
                        if !rest.is_empty() {
                            let _ = self.channel.handle_input(&rest);
                        }
                        return Ok(());
                    }
                },
                Err(e) if would_block(&e) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Err("no upgrade answer".into())
    }

    pub fn send(&mut self, message: &NodeMessage) {
        self.send_raw(&encode(message));
    }

    /// Sends without panicking (the server may be gone).
    pub fn try_send(&mut self, message: &NodeMessage) -> bool {
        if self.channel.send_message(&encode(message)).is_err() {
            return false;
        }
        while let Some(bytes) = self.channel.poll_transmit() {
            if self.stream.write_all(&bytes).is_err() {
                return false;
            }
        }
        true
    }

    /// Any bytes as one application message (for malformed ones).
    pub fn send_raw(&mut self, payload: &[u8]) {
        self.channel.send_message(payload).unwrap_or_else(|e| panic!("{e}"));
        self.flush();
    }

    fn flush(&mut self) {
        while let Some(bytes) = self.channel.poll_transmit() {
            self.stream.write_all(&bytes).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    /// Reads until a message arrives (`Some`), the connection ends or fails (`None`), or the
    /// deadline passes (panics).
    pub fn recv(&mut self, deadline: Duration) -> Option<ServerMessage> {
        let end = Instant::now() + deadline;
        let mut buf = [0u8; 16384];
        loop {
            if let Some(m) = self.channel.poll_message() {
                return Some(decode(&m).unwrap_or_else(|e| panic!("{e}")));
            }
            if self.channel.error().is_some() {
                return None;
            }
            assert!(Instant::now() < end, "no message from the server in {deadline:?}");
            match self.stream.read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => {
                    if self.channel.handle_input(&buf[..n]).is_err() {
                        return None;
                    }
                    self.flush();
                }
                Err(e) if would_block(&e) => {}
                Err(_) => return None,
            }
        }
    }

    /// The next message that `want` accepts, skipping keepalives and others.
    pub fn expect<T>(&mut self, what: &str, mut want: impl FnMut(&ServerMessage) -> Option<T>) -> T {
        let end = Instant::now() + DEADLINE;
        let mut seen = Vec::new();
        while Instant::now() < end {
            let left = end.saturating_duration_since(Instant::now());
            match self.recv(left) {
                Some(m) => match want(&m) {
                    Some(t) => return t,
                    None => seen.push(m),
                },
                None => panic!("the connection ended while waiting for {what}; saw {seen:?}"),
            }
        }
        panic!("no {what}; saw {seen:?}");
    }

    pub fn register(&mut self, hostname: &str, auth: RegisterAuth) {
        self.send(&NodeMessage::Register(Register {
            node_key: self.node_key,
            hostname: hostname.into(),
            ssh_host_keys: vec![],
            requested_tags: vec![],
            ssh: false,
            auth,
        }));
    }
}

pub fn would_block(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
}

/// The value of the form field `name` in a page of ours (`name="..." value="..."`).
pub fn form_value(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).unwrap_or_else(|| panic!("no {name} field in {html}")) + marker.len();
    html[start..].split('"').next().unwrap_or_default().to_string()
}
