//! The real OpenSSH client (Debian's `ssh`, `scp`, `sftp`) against the core's SSH server,
//! served on loopback by the harness with real processes (tests/src/ssh_harness), with
//! `StrictHostKeyChecking=yes` and the harness's host key in a known_hosts file.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::time::Duration;

use mesh_core::ssh::kexinit::CIPHERS;
use mesh_core::ssh::server::ServerConfig;
use mesh_tests::ssh_harness::{Harness, HarnessConfig};
use mesh_tests::Pattern;

/// A harness and a scratch directory with its known_hosts.
struct Fixture {
    harness: Harness,
    dir: PathBuf,
}

impl Fixture {
    fn new(name: &str) -> Self {
        Self::with_config(name, HarnessConfig::default())
    }

    fn with_config(name: &str, config: HarnessConfig) -> Self {
        let harness = Harness::start(config).unwrap_or_else(|e| panic!("harness: {e}"));
        let dir = std::env::temp_dir().join(format!("mesh-ssh-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.join("known_hosts"), format!("{}\n", harness.known_hosts_line()))
            .unwrap_or_else(|e| panic!("{e}"));
        Self { harness, dir }
    }

    /// Options every client gets: no config file, the strict known_hosts, no keys, no prompts.
    fn common_options(&self) -> Vec<String> {
        let known = self.dir.join("known_hosts");
        [
            "-F",
            "/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            &format!("UserKnownHostsFile={}", known.display()),
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "IdentityFile=/dev/null",
            "-o",
            "ConnectTimeout=10",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    fn ssh(&self, extra: &[&str], command: &str) -> Command {
        self.ssh_program(Path::new("ssh"), extra, command)
    }

    /// [`Self::ssh`] with another `ssh` binary (OpenSSH 10 from a private directory).
    fn ssh_program(&self, program: &Path, extra: &[&str], command: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(self.common_options()).args(["-p", &self.harness.port().to_string()]).args(extra);
        cmd.arg("tester@127.0.0.1");
        if !command.is_empty() {
            cmd.arg(command);
        }
        cmd
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("spawn: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn exec_returns_stdout_stderr_and_the_exit_code() {
    let f = Fixture::new("exec");
    let out = run(f.ssh(&[], "echo out; echo err >&2; exit 7"));
    assert_eq!(text(&out.stdout), "out\n", "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "err\n");
    assert_eq!(out.status.code(), Some(7));
    // A signal is reported as such (ssh exits 255 and says so).
    let out = run(f.ssh(&[], "kill -TERM $$"));
    assert_eq!(out.status.code(), Some(255), "{}", text(&out.stderr));
}

#[test]
fn every_cipher_forced_in_turn() {
    let f = Fixture::new("ciphers");
    for cipher in CIPHERS {
        let out = run(f.ssh(&["-v", "-c", cipher, "-o", "KexAlgorithms=curve25519-sha256"], "echo $SSH_CONNECTION"));
        let log = text(&out.stderr);
        assert!(out.status.success(), "{cipher}: {log}");
        assert!(log.contains(&format!("cipher: {cipher}")), "{cipher} not negotiated: {log}");
        assert!(text(&out.stdout).starts_with("127.0.0.1 "), "{}", text(&out.stdout));
    }
}

#[test]
fn send_env_passes_accepted_variables_only() {
    let f = Fixture::new("env");
    let mut cmd = f.ssh(
        &["-o", "SendEnv=MESH_TEST_GREETING", "-o", "SendEnv=LD_PRELOAD", "-o", "SendEnv=NOT_ACCEPTED"],
        "echo \"$MESH_TEST_GREETING|${LD_PRELOAD:-none}|${NOT_ACCEPTED:-none}\"",
    );
    cmd.env("MESH_TEST_GREETING", "hello there").env("LD_PRELOAD", "/tmp/evil.so").env("NOT_ACCEPTED", "x");
    let out = run(cmd);
    assert_eq!(text(&out.stdout), "hello there|none|none\n", "{}", text(&out.stderr));
}

#[test]
fn a_tt_shell_on_a_pty_answers_a_command() {
    let f = Fixture::new("pty");
    let (child, mut stdin) = spawn_piped(f.ssh(&["-tt"], ""));
    stdin.write_all(b"echo answer=$((6*7)); tty; stty size; exit 3\n").unwrap_or_else(|e| panic!("{e}"));
    let out = wait_with_timeout(child, Duration::from_secs(20));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("answer=42"), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("/dev/pts/"), "{stdout}");
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    drop(stdin);
}

/// Start `cmd` with all three streams piped; its stdin is handed out separately.
fn spawn_piped(mut cmd: Command) -> (Child, ChildStdin) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn: {e}"));
    let stdin = child.stdin.take().unwrap_or_else(|| panic!("stdin"));
    (child, stdin)
}

fn wait_with_timeout(mut child: Child, limit: Duration) -> Output {
    let start = std::time::Instant::now();
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
            panic!("timed out: {}\n{}", text(&out.stdout), text(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Pipe `total` bytes through `cat` on the far side and check every byte that comes back;
/// returns the client's stderr.
fn cat_round_trip(f: &Fixture, extra: &[&str], total: usize) -> String {
    let (mut child, mut stdin) = spawn_piped(f.ssh(extra, "cat"));
    let writer = std::thread::spawn(move || {
        let mut pattern = Pattern(0x9e37_79b9_7f4a_7c15);
        let mut buf = vec![0u8; 256 * 1024];
        let mut sent = 0;
        while sent < total {
            let n = buf.len().min(total - sent);
            pattern.fill(&mut buf[..n]);
            if stdin.write_all(&buf[..n]).is_err() {
                break;
            }
            sent += n;
        }
        sent
    });
    let mut stdout = child.stdout.take().unwrap_or_else(|| panic!("stdout"));
    // The checker regenerates the stream in the same 256 KiB chunks (multiples of 8).
    let mut expected = Pattern(0x9e37_79b9_7f4a_7c15);
    let mut want = vec![0u8; 256 * 1024];
    let mut want_at = want.len();
    let mut got = vec![0u8; 256 * 1024];
    let mut received = 0usize;
    loop {
        let n = stdout.read(&mut got).unwrap_or(0);
        if n == 0 {
            break;
        }
        let mut i = 0;
        while i < n {
            if want_at == want.len() {
                expected.fill(&mut want);
                want_at = 0;
            }
            let m = (want.len() - want_at).min(n - i);
            assert!(got[i..i + m] == want[want_at..want_at + m], "byte mismatch near offset {}", received + i);
            want_at += m;
            i += m;
        }
        received += n;
    }
    let sent = writer.join().unwrap_or(0);
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let status = child.wait().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sent, total, "{err}");
    assert_eq!(received, total, "{err}");
    assert!(status.success(), "{err}");
    err
}

#[test]
fn five_hundred_megabytes_through_cat_both_ways_byte_exact() {
    let f = Fixture::new("bulk");
    cat_round_trip(&f, &[], 500 * 1024 * 1024);
}

#[test]
fn a_rekey_mid_transfer_keeps_every_byte() {
    let f = Fixture::new("rekey");
    let log = cat_round_trip(&f, &["-v", "-o", "RekeyLimit=1M"], 32 * 1024 * 1024);
    let kexes = log.matches("SSH2_MSG_NEWKEYS received").count();
    assert!(kexes >= 10, "expected many key exchanges, saw {kexes}:\n{log}");
}

#[test]
fn local_forwarding_reaches_a_local_echo_server() {
    let f = Fixture::new("forward");
    let echo_port = echo_server();
    let local_port = free_port();
    let forward = format!("{local_port}:127.0.0.1:{echo_port}");
    let ssh = f.ssh(&["-N", "-o", "ExitOnForwardFailure=yes", "-L", &forward], "").stdin(Stdio::null()).spawn();
    let mut ssh = ssh.unwrap_or_else(|e| panic!("{e}"));
    echo_lines_through(local_port);
    let _ = ssh.kill();
    let _ = ssh.wait();
}

#[test]
fn remote_forwarding_brings_connections_back_to_the_client() {
    // ssh -R: the harness listens (tcpip-forward) and opens forwarded-tcpip channels.
    let f = Fixture::new("rforward");
    let echo_port = echo_server();
    let remote_port = free_port();
    let forward = format!("{remote_port}:127.0.0.1:{echo_port}");
    let ssh = f.ssh(&["-N", "-o", "ExitOnForwardFailure=yes", "-R", &forward], "").stdin(Stdio::null()).spawn();
    let mut ssh = ssh.unwrap_or_else(|e| panic!("{e}"));
    echo_lines_through(remote_port);
    echo_lines_through(remote_port);
    let _ = ssh.kill();
    let _ = ssh.wait();
}

/// A free loopback port (bound and released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

/// A line echo server on loopback; returns its port.
fn echo_server() -> u16 {
    let echo = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = echo.local_addr().map(|a| a.port()).unwrap_or(0);
    std::thread::spawn(move || {
        for stream in echo.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = stream;
                let mut writer = reader.try_clone().unwrap_or_else(|e| panic!("{e}"));
                let _ = std::io::copy(&mut reader, &mut writer);
            });
        }
    });
    port
}

/// Connect to `port` (waiting for the forward to come up) and check 50 echoed lines.
fn echo_lines_through(port: u16) {
    let mut stream = None;
    for _ in 0..200 {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
            stream = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let stream = stream.unwrap_or_else(|| panic!("forwarded port {port} never opened"));
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap_or_else(|e| panic!("{e}"));
    let mut writer = stream.try_clone().unwrap_or_else(|e| panic!("{e}"));
    let mut reader = BufReader::new(stream);
    for i in 0..50 {
        writeln!(writer, "line {i} through the tunnel").unwrap_or_else(|e| panic!("{e}"));
        let mut line = String::new();
        reader.read_line(&mut line).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(line, format!("line {i} through the tunnel\n"));
    }
}

fn write_file(path: &Path, len: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; len];
    Pattern(seed).fill(&mut data);
    std::fs::write(path, &data).unwrap_or_else(|e| panic!("{e}"));
    data
}

#[test]
fn sftp_and_scp_round_trips_through_the_system_sftp_server() {
    let f = Fixture::new("sftp");
    let data = write_file(&f.dir.join("source.bin"), 3 * 1024 * 1024 + 17, 7);
    let port = f.harness.port().to_string();
    let batch = f.dir.join("batch");
    std::fs::write(
        &batch,
        format!(
            "put {src} {dir}/uploaded.bin\nget {dir}/uploaded.bin {dir}/downloaded.bin\nls {dir}\n",
            src = f.dir.join("source.bin").display(),
            dir = f.dir.display()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut sftp = Command::new("sftp");
    sftp.args(f.common_options()).args(["-P", &port, "-b"]).arg(&batch).arg("tester@127.0.0.1");
    let out = run(sftp);
    assert!(out.status.success(), "sftp: {}\n{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(std::fs::read(f.dir.join("downloaded.bin")).ok().as_deref(), Some(&data[..]));

    // scp over SFTP (the 9.x default) and the legacy protocol (`-O`, runs `scp -t` remotely).
    for (mode, flags) in [("sftp", vec![]), ("legacy", vec!["-O"])] {
        let remote = f.dir.join(format!("scp-{mode}.bin"));
        let back = f.dir.join(format!("scp-{mode}-back.bin"));
        let mut up = Command::new("scp");
        up.args(f.common_options()).args(["-P", &port]).args(&flags);
        up.arg(f.dir.join("source.bin")).arg(format!("tester@127.0.0.1:{}", remote.display()));
        let out = run(up);
        assert!(out.status.success(), "scp {mode} up: {}", text(&out.stderr));
        let mut down = Command::new("scp");
        down.args(f.common_options()).args(["-P", &port]).args(&flags);
        down.arg(format!("tester@127.0.0.1:{}", remote.display())).arg(&back);
        let out = run(down);
        assert!(out.status.success(), "scp {mode} down: {}", text(&out.stderr));
        assert_eq!(std::fs::read(&back).ok().as_deref(), Some(&data[..]), "scp {mode}");
    }
}

#[test]
fn a_changed_host_key_is_refused_by_the_client() {
    let f = Fixture::new("hostkey");
    std::fs::write(
        f.dir.join("known_hosts"),
        format!("[127.0.0.1]:{} {}\n", f.harness.port(), mesh_tests::ssh_harness::openssh_public_key(&[1; 32])),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = run(f.ssh(&[], "true"));
    assert_eq!(out.status.code(), Some(255));
    assert!(text(&out.stderr).contains("HOST IDENTIFICATION HAS CHANGED"), "{}", text(&out.stderr));
}

#[test]
fn idle_pre_auth_connections_time_out_and_are_released() {
    let config = HarnessConfig {
        server: ServerConfig { login_grace: Duration::from_secs(2), ..Default::default() },
        ..Default::default()
    };
    let f = Fixture::with_config("idle", config);
    let mut streams: Vec<TcpStream> = (0..1000)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", f.harness.port())).unwrap_or_else(|e| panic!("{e}"));
            s.write_all(b"SSH-2.0-idle\r\n").unwrap_or_else(|e| panic!("{e}"));
            s
        })
        .collect();
    let start = std::time::Instant::now();
    while f.harness.accepted_connections() < 1000 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(f.harness.accepted_connections(), 1000);
    while f.harness.live_connections() > 0 && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(f.harness.live_connections(), 0, "connections still held after the grace time");
    // Every client sees the server's DISCONNECT and then the end of the stream.
    for s in &mut streams {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap_or_else(|e| panic!("{e}"));
        let mut all = Vec::new();
        let _ = s.read_to_end(&mut all);
        assert!(all.starts_with(b"SSH-2.0-meshd"), "{:?}", &all[..all.len().min(40)]);
    }
}

/// The key exchange names the installed `ssh` knows (`ssh -Q kex`).
fn ssh_kex_names() -> Vec<String> {
    let out = run({
        let mut c = Command::new("ssh");
        c.args(["-Q", "kex"]);
        c
    });
    text(&out.stdout).lines().map(str::to_string).collect()
}

/// Each of our key exchange methods that this OpenSSH knows, forced in turn, runs a
/// command; its debug output names the method. (OpenSSH 9.2 knows sntrup761 under both
/// names and no mlkem768; those it does not know are reported and skipped.)
#[test]
fn every_known_kex_method_forced_in_turn_runs_a_command() {
    use mesh_core::ssh::kexinit::KEX_METHODS;
    let known = ssh_kex_names();
    let f = Fixture::new("kex");
    let mut ran = 0;
    for name in KEX_METHODS {
        if !known.iter().any(|k| k == name) {
            println!("ssh does not know {name}: skipped");
            continue;
        }
        let out = run(f.ssh(&["-v", "-o", &format!("KexAlgorithms={name}")], "echo kex-ok"));
        let log = text(&out.stderr);
        assert!(out.status.success(), "{name}: {log}");
        assert!(log.contains(&format!("kex: algorithm: {name}")), "{name} not negotiated: {log}");
        assert_eq!(text(&out.stdout), "kex-ok\n", "{name}");
        ran += 1;
    }
    assert!(ran >= 2, "no post-quantum method tried: ssh knows {known:?}");
}

/// Unforced, OpenSSH's default list meets ours on the best hybrid it has.
#[test]
fn openssh_picks_a_hybrid_by_default() {
    let known = ssh_kex_names();
    // Debian's 9.2 lists sntrup761x25519-sha512 (either name: the prefix matches both).
    let expected = if known.iter().any(|k| k == "mlkem768x25519-sha256") {
        "mlkem768x25519-sha256"
    } else {
        "sntrup761x25519-sha512"
    };
    let f = Fixture::new("kex-default");
    let out = run(f.ssh(&["-v"], "true"));
    let log = text(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains(&format!("kex: algorithm: {expected}")), "{log}");
}

/// Rekeys under sntrup761 (SHA-512: a 64-byte session id) mid-transfer keep every byte.
#[test]
fn a_rekey_under_sntrup761_mid_transfer_keeps_every_byte() {
    let f = Fixture::new("rekey-sntrup");
    let log = cat_round_trip(
        &f,
        &["-v", "-o", "RekeyLimit=1M", "-o", "KexAlgorithms=sntrup761x25519-sha512@openssh.com"],
        8 * 1024 * 1024,
    );
    assert!(log.contains("kex: algorithm: sntrup761x25519-sha512@openssh.com"), "{log}");
    let kexes = log.matches("SSH2_MSG_NEWKEYS received").count();
    assert!(kexes >= 4, "expected several key exchanges, saw {kexes}:\n{log}");
}

/// OpenSSH 10's client, unpacked by scripts/fetch-openssh10 into target/openssh10 (the
/// system's 9.2 stays as it is); `None` when it is not there.
fn openssh10_ssh() -> Option<PathBuf> {
    let path = std::env::var_os("MESH_OPENSSH10")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/openssh10"));
    let ssh = path.join("usr/bin/ssh");
    ssh.exists().then_some(ssh)
}

/// OpenSSH 10 offers mlkem768x25519-sha256 first: forced and by default, it is what we
/// negotiate, and a command runs; sntrup761 under its RFC name too, and a rekey under
/// mlkem keeps every byte.
#[test]
fn openssh10_negotiates_mlkem768x25519_and_runs_a_command() {
    let Some(ssh) = openssh10_ssh() else {
        println!("OpenSSH 10 not unpacked (scripts/fetch-openssh10): skipped");
        return;
    };
    let f = Fixture::new("openssh10");
    for (extra, expected) in [
        (vec!["-v"], "mlkem768x25519-sha256"),
        (vec!["-v", "-o", "KexAlgorithms=mlkem768x25519-sha256"], "mlkem768x25519-sha256"),
        (vec!["-v", "-o", "KexAlgorithms=sntrup761x25519-sha512"], "sntrup761x25519-sha512"),
        (vec!["-v", "-o", "KexAlgorithms=curve25519-sha256"], "curve25519-sha256"),
    ] {
        let out = run(f.ssh_program(&ssh, &extra, "echo kex-ok"));
        let log = text(&out.stderr);
        assert!(out.status.success(), "{expected}: {log}");
        assert!(log.contains(&format!("kex: algorithm: {expected}")), "{expected} not negotiated: {log}");
        assert_eq!(text(&out.stdout), "kex-ok\n");
    }
    let out = run(f.ssh_program(&ssh, &["-v", "-o", "RekeyLimit=256K"], "head -c 2000000 /dev/zero"));
    let log = text(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(out.stdout.len() == 2_000_000 && out.stdout.iter().all(|&b| b == 0), "{} bytes", out.stdout.len());
    let kexes = log.matches("SSH2_MSG_NEWKEYS received").count();
    // The first exchange and at least one rekey (how many more depends on timing: a clean
    // CI machine saw exactly one in 2 MB).
    assert!(kexes >= 2, "expected a rekey under mlkem768x25519, saw {kexes}:\n{log}");
}

/// The private Python venv .ci/run makes in target/pyenv (or `MESH_PYENV`): paramiko,
/// kyber-py, ansible-pylibssh and ssh-audit, pinned there.
fn pyenv() -> PathBuf {
    std::env::var_os("MESH_PYENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pyenv"))
}

/// The venv's python, if `check` (a Python statement) runs there.
fn pyenv_python_where(check: &str) -> Option<PathBuf> {
    let python = pyenv().join("bin/python");
    let ok = Command::new(&python).args(["-c", check]).output().is_ok_and(|o| o.status.success());
    ok.then_some(python)
}

/// The venv's python with paramiko's mlkem768, or `None`.
fn paramiko_python() -> Option<PathBuf> {
    pyenv_python_where("import paramiko.kex_mlkem as k; assert k.KexMLKEM768X25519.is_available()")
}

/// paramiko 5.1 (its own mlkem768x25519-sha256 and curve25519; no sntrup761) logs in with
/// each method, checks our host key, runs a command, rekeys (the session id stays) and
/// runs another.
#[test]
fn paramiko_negotiates_mlkem768x25519_runs_commands_and_rekeys() {
    let Some(python) = paramiko_python() else {
        println!("paramiko with mlkem768 not installed (target/pyenv, see .ci/run): skipped");
        return;
    };
    let f = Fixture::new("paramiko");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/paramiko_kex.py");
    let key = f.harness.host_key_openssh();
    let key_b64 = key.split_whitespace().nth(1).unwrap_or_default().to_string();
    for kex in ["mlkem768x25519-sha256", "curve25519-sha256@libssh.org"] {
        let mut cmd = Command::new(&python);
        cmd.arg(&script).args(["127.0.0.1", &f.harness.port().to_string(), "tester", kex, &key_b64]);
        let out = run(cmd);
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{kex}: {stdout}\n{}", text(&out.stderr));
        assert!(stdout.contains(&format!("kex: algorithm: {kex}")), "{stdout}");
        assert!(stdout.contains("kex-ok\nstatus 0\nafter-rekey\n"), "{stdout}");
        assert!(stdout.contains("session id 32 32 same=True"), "{stdout}");
    }
}

/// The ML-KEM-768 known answer in core/src/ssh/kex/tests.rs (SHA-256 of ek, SHA-256 of the
/// ciphertext, the shared secret; d = 00..1f, z = 20..3f, m = 40..5f) from kyber-py, an
/// independent FIPS 203 implementation, when the venv has it.
#[test]
fn mlkem768_known_answer_matches_kyber_py() {
    let python = pyenv().join("bin/python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/mlkem_kat.py");
    let Ok(out) = Command::new(&python).arg(&script).output() else {
        println!("no target/pyenv (see .ci/run): skipped");
        return;
    };
    if !out.status.success() && text(&out.stderr).contains("No module named 'kyber_py'") {
        println!("kyber-py not installed: skipped");
        return;
    }
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "0b7934c83125c788995e2ba6bd761e33046b3e40571be53e023309a29f398cc9\n\
         dbf4e9aa48b078ad46ec1c9c47bda8c2d2fec9d0e7a21bd48d2238a2abedb856\n\
         9cddd089ffe70e3996e76f7c8d06746df34d07e8657bc0fcf2bb0e1c3084aea1\n"
    );
}

/// PuTTY's `plink` (0.78: sntrup761x25519 only under its `@openssh.com` name), or `None`.
fn plink() -> Option<PathBuf> {
    let ok = Command::new("plink").arg("-V").output().is_ok_and(|o| o.status.success());
    ok.then(|| PathBuf::from("plink"))
}

/// The key exchange name-list of the first KEXINIT plink sent, from its `-sshlog` packet
/// log (hex dumps: `  OFFSET  XX XX .. XX  ascii`).
fn plink_offered_kex(log: &str) -> Vec<String> {
    let mut bytes = Vec::new();
    let mut inside = false;
    for line in log.lines() {
        if line.starts_with("Outgoing packet #0x0, type 20 ") {
            inside = true;
            continue;
        }
        if !inside {
            continue;
        }
        let Some(dump) = line.strip_prefix("  ") else { break };
        // Sixteen hex bytes after the offset; the ASCII column follows two spaces later.
        let hex = dump.get(10..).unwrap_or_default();
        for pair in hex.split(' ').take(16).filter(|p| p.len() == 2) {
            match u8::from_str_radix(pair, 16) {
                Ok(b) => bytes.push(b),
                Err(_) => break,
            }
        }
    }
    // KEXINIT payload after the type byte: cookie (16), then the kex name-list.
    let Some(len) = bytes.get(16..20).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize) else {
        return Vec::new();
    };
    let list = bytes.get(20..20 + len).unwrap_or_default();
    String::from_utf8_lossy(list).split(',').map(str::to_string).collect()
}

/// PuTTY's plink 0.78 against our server: by default it offers sntrup761x25519 first,
/// under the `@openssh.com` name only, and we agree on it (its event log says "NTRU Prime
/// / Curve25519 hybrid", SHA-512); rekeys under it keep every byte; with curve25519 put
/// first in its saved settings it gets curve25519. The host key is pinned by fingerprint.
#[test]
fn plink_negotiates_sntrup761x25519_at_openssh_com_runs_a_command_and_rekeys() {
    let Some(plink) = plink() else {
        println!("plink not installed (putty-tools, see .ci/run): skipped");
        return;
    };
    let f = Fixture::new("plink");
    let key = ssh_key::PublicKey::from_openssh(&f.harness.host_key_openssh()).unwrap_or_else(|e| panic!("{e}"));
    let fingerprint = key.fingerprint(ssh_key::HashAlg::Sha256).to_string();
    // PuTTY keeps its settings under $HOME/.putty: a private home, one saved session each.
    let home = f.dir.join("home");
    let sessions = home.join(".putty/sessions");
    std::fs::create_dir_all(&sessions).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(sessions.join("default-kex"), "RekeyBytes=1M\n").unwrap_or_else(|e| panic!("{e}"));
    // Listing ntru-curve25519 after ecdh keeps PuTTY from putting it back first.
    std::fs::write(sessions.join("curve-first"), "KEX=ecdh,ntru-curve25519,WARN\n").unwrap_or_else(|e| panic!("{e}"));
    let port = f.harness.port().to_string();
    let login = |session: &str, command: &str| {
        let log = f.dir.join(format!("{session}.log"));
        let _ = std::fs::remove_file(&log);
        let mut cmd = Command::new(&plink);
        cmd.env("HOME", &home).args(["-load", session, "-batch", "-v", "-ssh", "-P", &port]);
        cmd.args(["-hostkey", &fingerprint, "-l", "tester", "-sshlog"]).arg(&log);
        cmd.args(["127.0.0.1", command]);
        let out = run(cmd);
        let packets = std::fs::read_to_string(&log).unwrap_or_default();
        (out, packets)
    };

    let (out, packets) = login("default-kex", "echo plink-ok");
    let events = text(&out.stderr);
    assert!(out.status.success(), "{events}");
    assert_eq!(text(&out.stdout), "plink-ok\n", "{events}");
    assert!(events.contains("Doing NTRU Prime / Curve25519 hybrid key exchange, using hash SHA-512"), "{events}");
    let offered = plink_offered_kex(&packets);
    assert_eq!(offered.first().map(String::as_str), Some("sntrup761x25519-sha512@openssh.com"), "{offered:?}");
    assert!(!offered.iter().any(|k| k == "sntrup761x25519-sha512"), "{offered:?}");

    let (out, _) = login("default-kex", "head -c 4000000 /dev/zero");
    let events = text(&out.stderr);
    assert!(out.status.success(), "{events}");
    assert!(out.stdout.len() == 4_000_000 && out.stdout.iter().all(|&b| b == 0), "{} bytes", out.stdout.len());
    let kexes = events.matches("Doing NTRU Prime / Curve25519 hybrid key exchange").count();
    assert!(events.contains("Initiating key re-exchange") && kexes >= 2, "no rekey under sntrup761: {events}");

    let (out, packets) = login("curve-first", "echo plink-ok");
    let events = text(&out.stderr);
    assert!(out.status.success(), "{events}");
    assert_eq!(text(&out.stdout), "plink-ok\n");
    assert!(events.contains("Doing ECDH key exchange with curve Curve25519, using hash SHA-256"), "{events}");
    assert_eq!(plink_offered_kex(&packets).first().map(String::as_str), Some("curve448-sha512"));
}

/// The venv's python with ansible-pylibssh (libssh 0.12 built in), or `None`.
fn pylibssh_python() -> Option<PathBuf> {
    pyenv_python_where("import pylibsshext.session")
}

/// ansible-pylibssh (libssh 0.12, C) checks our host key against a known_hosts file,
/// negotiates each of our methods when forced, mlkem768x25519 by default, and runs
/// commands; libssh's own log names the agreed method.
#[test]
fn libssh_negotiates_each_hybrid_and_runs_commands() {
    let Some(python) = pylibssh_python() else {
        println!("ansible-pylibssh not installed (target/pyenv, see .ci/run): skipped");
        return;
    };
    let f = Fixture::new("libssh");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pylibssh_kex.py");
    let known = f.dir.join("known_hosts");
    for (kex, expected) in [
        ("default", "mlkem768x25519-sha256"),
        ("mlkem768x25519-sha256", "mlkem768x25519-sha256"),
        ("sntrup761x25519-sha512", "sntrup761x25519-sha512"),
        ("sntrup761x25519-sha512@openssh.com", "sntrup761x25519-sha512@openssh.com"),
        ("curve25519-sha256", "curve25519-sha256"),
    ] {
        let mut cmd = Command::new(&python);
        cmd.arg(&script).args(["127.0.0.1", &f.harness.port().to_string(), "tester", kex]).arg(&known);
        let out = run(cmd);
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{kex}: {stdout}\n{}", text(&out.stderr));
        assert!(stdout.contains("with libssh v0.12"), "{stdout}");
        assert!(stdout.contains(&format!("kex: algorithm: {expected}\n")), "{kex}: {stdout}");
        assert!(stdout.contains("kex-ok\nstatus 0\n300000\nstatus 0\n"), "{kex}: {stdout}");
    }
}

/// ssh-audit 3.9 against our server: the three hybrids are offered first and draw no
/// warning; the only findings are the two curve25519 names (kept for older clients,
/// "does not provide protection against post-quantum attacks"); nothing fails.
#[test]
fn ssh_audit_finds_only_the_classical_fallbacks() {
    let audit = pyenv().join("bin/ssh-audit");
    if !audit.exists() {
        println!("ssh-audit not installed (target/pyenv, see .ci/run): skipped");
        return;
    }
    let f = Fixture::new("ssh-audit");
    let mut cmd = Command::new(&audit);
    cmd.args(["-n", "--skip-rate-test", "-p", &f.harness.port().to_string(), "127.0.0.1"]);
    let out = run(cmd);
    let report = text(&out.stdout);
    let kex: Vec<&str> = report.lines().filter_map(|l| l.strip_prefix("(kex) ")).collect();
    let names: Vec<&str> = kex.iter().filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(
        names.get(..5),
        Some(
            &[
                "mlkem768x25519-sha256",
                "sntrup761x25519-sha512",
                "sntrup761x25519-sha512@openssh.com",
                "curve25519-sha256",
                "curve25519-sha256@libssh.org"
            ][..]
        ),
        "{report}"
    );
    assert!(!report.contains("[fail]"), "{report}");
    let warned: Vec<&str> = report
        .lines()
        .filter(|l| l.contains("[warn]"))
        .filter_map(|l| l.strip_prefix("(kex) ").and_then(|l| l.split_whitespace().next()))
        .collect();
    let warnings = report.matches("[warn]").count();
    assert_eq!(warned, ["curve25519-sha256", "curve25519-sha256@libssh.org"], "{report}");
    assert_eq!(warnings, 2, "{report}");
}
