//! Our SSH client against the real OpenSSH `sshd` (Debian's 9.2, started here on a loopback
//! port with its own host key and config): publickey login after `none`, exec with exit
//! codes, 100 MB each way byte-exact, rekeys started by either side mid-transfer.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use mesh_core::ssh::client::ClientConfig;
use mesh_core::ssh::kexinit::CIPHERS;
use mesh_core::ssh::transport::TransportConfig;
use mesh_tests::ssh_client::ClientDriver;
use mesh_tests::ssh_harness::openssh_public_key;
use mesh_tests::Pattern;

const USER_KEY: [u8; 32] = [77; 32];

/// A private sshd; killed on drop.
struct Sshd {
    child: Child,
    addr: SocketAddr,
    host_key: [u8; 32],
    dir: PathBuf,
}

impl Sshd {
    fn start(name: &str, extra_config: &str) -> Option<Self> {
        let sshd = ["/usr/sbin/sshd", "/usr/bin/sshd"].into_iter().find(|p| std::path::Path::new(p).exists())?;
        Self::start_binary(std::path::Path::new(sshd), name, extra_config)
    }

    /// OpenSSH 10's sshd, unpacked by scripts/fetch-openssh10 into target/openssh10 (its
    /// sshd-session and sshd-auth named by path, so the system's 9.2 is not involved).
    fn start_openssh10(name: &str) -> Option<Self> {
        let root = std::env::var_os("MESH_OPENSSH10")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/openssh10"));
        let sshd = root.join("usr/sbin/sshd");
        if !sshd.exists() {
            return None;
        }
        let lib = root.join("usr/lib/openssh");
        let extra = format!(
            "SshdSessionPath {}\nSshdAuthPath {}\n",
            lib.join("sshd-session").display(),
            lib.join("sshd-auth").display()
        );
        Self::start_binary(&sshd, name, &extra)
    }

    fn start_binary(sshd: &std::path::Path, name: &str, extra_config: &str) -> Option<Self> {
        let dir = std::env::temp_dir().join(format!("mesh-sshd-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).ok()?;
        let _ = std::fs::create_dir_all("/run/sshd");
        let key = dir.join("host_key");
        let status =
            Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&key).status().ok()?;
        assert!(status.success(), "ssh-keygen failed");
        let public = std::fs::read_to_string(dir.join("host_key.pub")).ok()?;
        let parsed = ssh_key::PublicKey::from_openssh(public.trim()).unwrap_or_else(|e| panic!("{e}"));
        let host_key = parsed.key_data().ed25519().map(|k| k.0).unwrap_or_else(|| panic!("not ed25519"));
        let user_public = SigningKey::from_bytes(&USER_KEY).verifying_key().to_bytes();
        std::fs::write(dir.join("authorized_keys"), format!("{}\n", openssh_public_key(&user_public))).ok()?;
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).ok()?;
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {key}\nPidFile {dir}/sshd.pid\n\
             AuthorizedKeysFile {dir}/authorized_keys\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin yes\nLogLevel ERROR\n{extra_config}\n",
            key = key.display(),
            dir = dir.display()
        );
        std::fs::write(dir.join("sshd_config"), config).ok()?;
        let mut child = Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("sshd: {e}"));
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        // Ready once it answers with its banner (a bare connect can reach the listening
        // socket before sshd serves it).
        for _ in 0..200 {
            if answers_with_a_banner(addr) {
                return Some(Self { child, addr, host_key, dir });
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("sshd did not start listening");
    }

    fn client(&self, transport: TransportConfig) -> ClientDriver {
        let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
        let config = ClientConfig {
            user,
            host_key: Some(self.host_key),
            key: Some(SigningKey::from_bytes(&USER_KEY)),
            transport,
            ..Default::default()
        };
        // A freshly started sshd on a loaded machine has been seen to reset the first
        // login (CI, once): one more try after a pause; a second failure is the test's.
        match ClientDriver::connect(self.addr, config.clone(), 5) {
            Ok(client) => client,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                println!("login to sshd reset ({e}); trying once more");
                std::thread::sleep(Duration::from_millis(500));
                ClientDriver::connect(self.addr, config, 5).unwrap_or_else(|e| panic!("login to sshd: {e}"))
            }
            Err(e) => panic!("login to sshd: {e}"),
        }
    }
}

/// Whether something on `addr` sends an SSH identification line.
fn answers_with_a_banner(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut banner = [0u8; 8];
    stream.read_exact(&mut banner).is_ok() && banner.starts_with(b"SSH-2.0-")
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn exec_with_exit_codes_and_output_for_every_cipher() {
    let Some(sshd) = Sshd::start("exec", "") else {
        println!("sshd not installed: skipped");
        return;
    };
    for cipher in CIPHERS {
        let transport = TransportConfig { ciphers: vec![cipher.to_string()], ..Default::default() };
        let mut client = sshd.client(transport);
        assert_eq!(client.session.transport().negotiated().map(|n| n.cipher_c2s.clone()), Some(cipher.to_string()));
        let result = client.exec_simple("echo out; echo err >&2; exit 5").unwrap_or_else(|e| panic!("{cipher}: {e}"));
        assert_eq!(result.stdout, b"out\n", "{cipher}");
        assert_eq!(result.stderr, b"err\n", "{cipher}");
        assert_eq!(result.exit_status, Some(5), "{cipher}");
        // A second channel on the same connection.
        let result = client.exec_simple("kill -TERM $$").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(result.exit_signal.as_deref(), Some("TERM"));
    }
}

/// Stream `total` pattern bytes into `cat > file` and back out with `cat file`, checking
/// every byte; returns the client's rekey count.
fn hundred_megabytes(sshd: &Sshd, transport: TransportConfig) -> u64 {
    const TOTAL: usize = 100 * 1024 * 1024;
    let path = sshd.dir.join("upload.bin");
    let mut client = sshd.client(transport);
    let mut produced = 0usize;
    let mut up = Pattern(11);
    let mut input = |buf: &mut [u8]| {
        let n = buf.len().min(TOTAL - produced);
        up.fill(&mut buf[..n]);
        produced += n;
        n
    };
    let result = client.exec(&format!("cat > {}", path.display()), &mut input, None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(result.exit_status, Some(0), "{}", String::from_utf8_lossy(&result.stderr));
    let mut check = Pattern(11);
    let mut expected = vec![0u8; 256 * 1024];
    let mut at = expected.len();
    let mut received = 0usize;
    let mut mismatch = None;
    let mut sink = |data: &[u8]| {
        for &b in data {
            if at == expected.len() {
                check.fill(&mut expected);
                at = 0;
            }
            if b != expected[at] && mismatch.is_none() {
                mismatch = Some(received);
            }
            at += 1;
            received += 1;
        }
    };
    let result =
        client.exec(&format!("cat {}", path.display()), &mut |_| 0, Some(&mut sink)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(result.exit_status, Some(0));
    assert_eq!(mismatch, None, "first wrong byte");
    assert_eq!(received, TOTAL);
    client.session.transport().rekeys()
}

#[test]
fn a_hundred_megabytes_each_way_with_rekeys_started_by_our_client() {
    let Some(sshd) = Sshd::start("client-rekey", "") else { return };
    let rekeys = hundred_megabytes(&sshd, TransportConfig { rekey_bytes: 16 * 1024 * 1024, ..Default::default() });
    assert!(rekeys >= 10, "only {rekeys} rekeys");
}

#[test]
fn a_hundred_megabytes_each_way_with_rekeys_started_by_sshd() {
    let Some(sshd) = Sshd::start("server-rekey", "RekeyLimit 4M") else { return };
    let rekeys = hundred_megabytes(&sshd, TransportConfig::default());
    assert!(rekeys >= 20, "only {rekeys} rekeys");
}

/// Our client offering only `kex` logs in to sshd 9.2, runs a command, and rekeys twice
/// (the session id, 64 bytes for sntrup761, stays).
fn login_with_kex(sshd: &Sshd, kex: &str) {
    let transport = TransportConfig { kex: vec![kex.to_string()], rekey_bytes: 1 << 20, ..Default::default() };
    let mut client = sshd.client(transport);
    assert_eq!(client.session.transport().negotiated().map(|n| n.kex.clone()), Some(kex.to_string()));
    let id = client.session.transport().session_id().map(<[u8]>::to_vec);
    let result = client.exec_simple("echo kex-ok").unwrap_or_else(|e| panic!("{kex}: {e}"));
    assert_eq!(result.stdout, b"kex-ok\n", "{kex}");
    let mut sent = 0usize;
    let mut input = |buf: &mut [u8]| {
        let n = buf.len().min(3 * 1024 * 1024 - sent);
        buf[..n].fill(b'x');
        sent += n;
        n
    };
    let result = client.exec("wc -c", &mut input, None).unwrap_or_else(|e| panic!("{kex}: {e}"));
    assert_eq!(String::from_utf8_lossy(&result.stdout).trim(), "3145728", "{kex}");
    assert!(client.session.transport().rekeys() >= 2, "{kex}: {} rekeys", client.session.transport().rekeys());
    assert_eq!(client.session.transport().session_id().map(<[u8]>::to_vec), id, "{kex}");
}

#[test]
fn sntrup761_both_names_and_curve25519_against_sshd() {
    let Some(sshd) = Sshd::start("kex", "") else {
        println!("sshd not installed: skipped");
        return;
    };
    for kex in ["sntrup761x25519-sha512@openssh.com", "sntrup761x25519-sha512", "curve25519-sha256"] {
        login_with_kex(&sshd, kex);
    }
    let sid_len = |kex: &str| {
        let client = sshd.client(TransportConfig { kex: vec![kex.to_string()], ..Default::default() });
        client.session.transport().session_id().map(<[u8]>::len)
    };
    assert_eq!(sid_len("sntrup761x25519-sha512"), Some(64));
    // sshd 9.2's own order puts sntrup761 first; ours puts mlkem768 first, which 9.2 lacks.
    let client = sshd.client(TransportConfig::default());
    assert_eq!(
        client.session.transport().negotiated().map(|n| n.kex.clone()).as_deref(),
        Some("sntrup761x25519-sha512")
    );
}

/// Our client against OpenSSH 10's sshd: mlkem768x25519-sha256 by default (both sides'
/// first choice), forced, and sntrup761 under its RFC name; each runs a command and
/// rekeys keeping the session id.
#[test]
fn mlkem768x25519_against_openssh10_sshd() {
    let Some(sshd) = Sshd::start_openssh10("openssh10") else {
        println!("OpenSSH 10 sshd not unpacked (scripts/fetch-openssh10): skipped");
        return;
    };
    let client = sshd.client(TransportConfig::default());
    assert_eq!(
        client.session.transport().negotiated().map(|n| n.kex.clone()).as_deref(),
        Some("mlkem768x25519-sha256")
    );
    drop(client);
    for kex in ["mlkem768x25519-sha256", "sntrup761x25519-sha512", "curve25519-sha256"] {
        login_with_kex(&sshd, kex);
    }
}
