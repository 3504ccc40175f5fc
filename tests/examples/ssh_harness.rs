//! Serve the core's SSH server on a loopback port (for bench/ssh.sh and for trying it by
//! hand): prints `port <N>` and the known_hosts line, then serves until killed.
//! Every login is accepted and runs as the current user, or `MESH_HARNESS_USER`.
//! `MESH_HARNESS_KEX` (a comma-separated list) restricts the key exchange methods offered,
//! so bench/ssh-audit.sh can show the server as it was before the hybrids. Test tooling,
//! never shipped.

use mesh_tests::ssh_harness::{Harness, HarnessConfig};

fn main() -> std::io::Result<()> {
    let mut config = HarnessConfig::default();
    if let Ok(user) = std::env::var("MESH_HARNESS_USER") {
        config.local_user = user;
    }
    if let Ok(kex) = std::env::var("MESH_HARNESS_KEX") {
        config.server.transport.kex = kex.split(',').map(str::to_string).collect();
    }
    let harness = Harness::start(config)?;
    println!("port {}", harness.port());
    println!("{}", harness.known_hosts_line());
    loop {
        std::thread::park();
    }
}
