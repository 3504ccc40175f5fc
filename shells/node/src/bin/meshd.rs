//! `meshd`: the node daemon. Two modes:
//! - `meshd --state-dir DIR [--tun NAME] [--port N] [--socket PATH]`: keys in DIR, the
//!   local API on a Unix socket (default `DIR/meshd.sock`), the control connection once
//!   `meshctl up` asks for it.
//! - `meshd --wg-config FILE [--tun NAME]` runs a wg-quick file's interface so plain
//!   WireGuard peers can talk to it.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use mesh_core::ip::Filter;
use mesh_core::node::NodeConfig;
use meshd::runtime::{DaemonConfig, Runtime, RuntimeConfig, TunConfig};
use meshd::state_dir::StateDir;
use meshd::wg_config;
use tracing::{error, info, warn};

#[derive(Debug, Parser)]
#[command(name = "meshd", version, about = "The mesh node daemon")]
struct Args {
    /// Run the interface of a wg-quick file (no coordination server).
    #[arg(long, value_name = "FILE", conflicts_with = "state_dir", required_unless_present = "state_dir")]
    wg_config: Option<PathBuf>,
    /// Daemon mode: keys and the lock live here (created 0700).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// TUN device name (wg-config: the file's name without `.conf`, else `meshd0`).
    #[arg(long, value_name = "NAME")]
    tun: Option<String>,
    /// Daemon mode: WireGuard's UDP port (0: any).
    #[arg(long, value_name = "N", default_value_t = 41641)]
    port: u16,
    /// Daemon mode: the local API socket (default DIR/meshd.sock, which only root can
    /// reach; give operators a socket outside DIR, e.g. /run/meshd.sock).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Daemon mode: members of this group may use meshctl as root can.
    #[arg(long, value_name = "GROUP")]
    operator_group: Option<String>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,netlink_packet_route=error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            // The message leads with FILE:LINE for configuration errors.
            eprintln!("meshd: {message}");
            error!("{message}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    match (&args.wg_config, &args.state_dir) {
        (Some(file), _) => run_wg_config(args, file),
        (None, Some(dir)) => run_daemon(args, dir),
        (None, None) => Err("one of --wg-config or --state-dir is needed".into()),
    }
}

fn run_daemon(args: &Args, dir: &Path) -> Result<(), String> {
    let state = StateDir::open(dir).map_err(|e| e.to_string())?;
    let tun = args.tun.clone().unwrap_or_else(|| "meshd0".to_string());
    let node = NodeConfig::new(state.node_key.clone(), Ipv4Addr::UNSPECIFIED, "");
    let config = RuntimeConfig {
        node: node.clone(),
        peers: Vec::new(),
        peer_options: Vec::new(),
        filter: Filter::deny_all(),
        listen_port: args.port,
        tun: Some(TunConfig { name: tun.clone(), mtu: 1280, addresses: Vec::new(), routes: Vec::new() }),
    };
    let mut runtime = Runtime::new(config).map_err(|e| e.to_string())?;
    runtime.stop_on_signals().map_err(|e| e.to_string())?;
    let socket = args.socket.clone().unwrap_or_else(|| state.path().join("meshd.sock"));
    let machine_key = state.machine_key.clone();
    let operator_gid = match &args.operator_group {
        None => None,
        Some(name) => match nix::unistd::Group::from_name(name) {
            Ok(Some(group)) => Some(group.gid.as_raw()),
            Ok(None) => return Err(format!("--operator-group {name}: no such group")),
            Err(e) => return Err(format!("--operator-group {name}: {e}")),
        },
    };
    runtime
        .enable_daemon(DaemonConfig {
            machine_key,
            node,
            socket: Some(socket),
            state_dir: Some(state.path().to_path_buf()),
            ssh_host_key: state.ssh_host_key,
            operator_gid,
        })
        .map_err(|e| e.to_string())?;
    info!(tun, port = runtime.udp_port(), "meshd running (daemon mode)");
    let result = runtime.run().map_err(|e| e.to_string());
    info!(metrics = ?runtime.metrics(), "final counters");
    drop(runtime); // removes the TUN, its routes and the socket
    drop(state); // releases the lock
    result
}

fn run_wg_config(args: &Args, file: &Path) -> Result<(), String> {
    let config = wg_config::load(file).map_err(|e| e.to_string())?;
    for key in &config.interface.ignored {
        warn!(key, "wg-quick key not acted on by meshd");
    }
    for prefix in config.default_routes() {
        warn!(prefix = %format!("{}/{}", prefix.addr(), prefix.len()), "default route not installed (no policy routing)");
    }
    let tun = args.tun.clone().unwrap_or_else(|| default_tun_name(file));
    let runtime_config = config.runtime_config(file, &tun).map_err(|e| e.to_string())?;
    let mut runtime = Runtime::new(runtime_config).map_err(|e| e.to_string())?;
    runtime.stop_on_signals().map_err(|e| e.to_string())?;
    info!(tun, port = runtime.udp_port(), peers = config.peers.len(), "meshd running");
    let result = runtime.run().map_err(|e| e.to_string());
    info!(metrics = ?runtime.metrics(), "final counters");
    drop(runtime); // removes the TUN and its routes
    result
}

/// `wg0` for `/etc/wireguard/wg0.conf` (as wg-quick names it), if that is a usable name.
fn default_tun_name(path: &std::path::Path) -> String {
    path.file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| {
            !s.is_empty()
                && s.len() <= 15
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        })
        .map_or_else(|| "meshd0".to_string(), str::to_string)
}
