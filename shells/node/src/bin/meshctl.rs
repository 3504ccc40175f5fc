//! `meshctl`: the command line for the local meshd (its local API on a Unix socket).
//! Exit codes: 0 done, 1 refused or failed, 2 the daemon cannot be reached.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use meshd::local_api::client::{call, ClientError};
use meshd::local_api::{Request, Response, Status};

const DEFAULT_SOCKET: &str = "/var/lib/meshd/meshd.sock";
const TIMEOUT: Duration = Duration::from_secs(10);
/// How long `up` with an auth key waits for the node to be running.
const UP_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Parser)]
#[command(name = "meshctl", version, about = "Control the local meshd")]
struct Args {
    /// The daemon's local API socket.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Connect to the coordination server and join the tailnet; waits until the node has
    /// its netmap (without an auth key: prints the login URL and waits for the login).
    Up {
        /// The server, `http://host:port`.
        #[arg(long, value_name = "URL")]
        login_server: String,
        #[arg(long, value_name = "KEY", default_value = "")]
        auth_key: String,
        #[arg(long, value_name = "H")]
        hostname: Option<String>,
        /// The server's public key (hex); fetched from URL/key when absent.
        #[arg(long, value_name = "HEX")]
        control_key: Option<String>,
    },
    /// Leave the coordination server (the tunnels keep their last netmap).
    Down,
    /// This node and its peers.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// This node's mesh addresses.
    Ip {
        #[arg(short = '4', conflicts_with = "v6")]
        v4: bool,
        #[arg(short = '6')]
        v6: bool,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Unreachable(message)) => {
            eprintln!("meshctl: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Failed(message)) => {
            eprintln!("meshctl: {message}");
            ExitCode::from(1)
        }
    }
}

enum Failure {
    Unreachable(String),
    Failed(String),
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Self {
        match error {
            ClientError::Connect { .. } => Failure::Unreachable(error.to_string()),
            other => Failure::Failed(other.to_string()),
        }
    }
}

fn request(args: &Args, request: &Request) -> Result<Response, Failure> {
    let response = call(&args.socket, request, TIMEOUT)?;
    if response.ok {
        Ok(response)
    } else {
        Err(Failure::Failed(response.error.unwrap_or_else(|| "refused".into())))
    }
}

fn run(args: &Args) -> Result<(), Failure> {
    match &args.command {
        Command::Up { login_server, auth_key, hostname, control_key } => {
            let control_key = match control_key {
                Some(k) => k.clone(),
                None => fetch_key(login_server).map_err(Failure::Failed)?,
            };
            let hostname = match hostname {
                Some(h) => h.clone(),
                None => rustix::system::uname().nodename().to_string_lossy().into_owned(),
            };
            let up =
                Request::Up { login_server: login_server.clone(), auth_key: auth_key.clone(), hostname, control_key };
            request(args, &up)?;
            wait_until_running(args, auth_key.is_empty())
        }
        Command::Down => request(args, &Request::Down).map(drop),
        Command::Status { json } => {
            let status = request(args, &Request::Status)?.status.unwrap_or_default();
            if *json {
                let text = serde_json::to_string_pretty(&status).map_err(|e| Failure::Failed(e.to_string()))?;
                println!("{text}");
            } else {
                print_status(&status);
            }
            Ok(())
        }
        Command::Ip { v4, v6 } => {
            let status = request(args, &Request::Status)?.status.unwrap_or_default();
            let wanted = status.addresses.iter().filter(|a| {
                let is_v6 = a.contains(':');
                (!v4 && !v6) || (*v6 && is_v6) || (*v4 && !is_v6)
            });
            let mut any = false;
            for address in wanted {
                println!("{address}");
                any = true;
            }
            if any {
                Ok(())
            } else {
                Err(Failure::Failed("no address yet (is the node up?)".into()))
            }
        }
    }
}

/// After `up`: wait for the netmap (running), print the login URL if the server asks for
/// an interactive login (then wait without a limit), fail if the server refuses the node.
fn wait_until_running(args: &Args, interactive: bool) -> Result<(), Failure> {
    let deadline = std::time::Instant::now() + UP_TIMEOUT;
    let mut shown_url = None;
    loop {
        let status = request(args, &Request::Status)?.status.unwrap_or_default();
        match status.state.as_str() {
            "running" => return Ok(()),
            "rejected" => {
                let reason = status.last_error.unwrap_or_else(|| "refused".into());
                return Err(Failure::Failed(format!("the control server refused this node: {reason}")));
            }
            _ => {}
        }
        if let Some(url) = status.login_url.filter(|u| shown_url.as_ref() != Some(u)) {
            println!("To authenticate, visit:\n\n\t{url}\n");
            shown_url = Some(url);
        }
        if !interactive && std::time::Instant::now() > deadline {
            let reason = status.last_error.unwrap_or_else(|| "no netmap yet".into());
            return Err(Failure::Failed(format!("not running after {} s: {reason}", UP_TIMEOUT.as_secs())));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn print_status(status: &Status) {
    println!("state: {}", status.state);
    if !status.name.is_empty() {
        println!("{:<20} {:<40} self", status.name, status.addresses.join(","));
    }
    if let Some(url) = &status.login_url {
        println!("log in at: {url}");
    }
    if let Some(error) = &status.last_error {
        println!("last error: {error}");
    }
    for p in &status.peers {
        let handshake = p.last_handshake_secs.map_or_else(|| "-".to_string(), |s| format!("{s}s ago"));
        println!(
            "{:<20} {:<40} {:<22} {:<10} {}",
            p.name,
            p.addresses.join(","),
            p.endpoint.as_deref().unwrap_or("-"),
            handshake,
            if p.online { "online" } else { "offline" }
        );
    }
}

/// GET /key from the login server over plain HTTP (for tests and trusted networks; pass
/// `--control-key` elsewhere).
fn fetch_key(login_server: &str) -> Result<String, String> {
    meshd::control_key::fetch(login_server, TIMEOUT).map_err(|e| e.to_string())
}
