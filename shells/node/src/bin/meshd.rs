//! `meshd`: the node daemon. Today one mode: `meshd --wg-config FILE [--tun NAME]` runs a
//! wg-quick file's interface so plain WireGuard peers can talk to it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use meshd::runtime::Runtime;
use meshd::wg_config;
use tracing::{error, info, warn};

#[derive(Debug, Parser)]
#[command(name = "meshd", version, about = "The mesh node daemon")]
struct Args {
    /// Run the interface of a wg-quick file (no coordination server).
    #[arg(long, value_name = "FILE")]
    wg_config: PathBuf,
    /// TUN device name (default: the file's name without `.conf`, else `meshd0`).
    #[arg(long, value_name = "NAME")]
    tun: Option<String>,
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
    let config = wg_config::load(&args.wg_config).map_err(|e| e.to_string())?;
    for key in &config.interface.ignored {
        warn!(key, "wg-quick key not acted on by meshd");
    }
    for prefix in config.default_routes() {
        warn!(prefix = %format!("{}/{}", prefix.addr(), prefix.len()), "default route not installed (no policy routing)");
    }
    let tun = args.tun.clone().unwrap_or_else(|| default_tun_name(&args.wg_config));
    let runtime_config = config.runtime_config(&args.wg_config, &tun).map_err(|e| e.to_string())?;
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
