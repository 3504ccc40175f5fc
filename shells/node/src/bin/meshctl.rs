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
        /// Serve SSH on this node's mesh addresses, authorized by the policy.
        #[arg(long)]
        ssh: bool,
        /// Register with these tags (the key or the login must be allowed them).
        #[arg(long, value_name = "tag:x,...", value_delimiter = ',')]
        advertise_tags: Vec<String>,
        /// Point the system resolver at MagicDNS for the tailnet's names.
        #[arg(long)]
        accept_dns: bool,
    },
    /// Leave the tailnet: tunnels and resolver settings go, the registration stays (a
    /// later `up` needs no key).
    Down,
    /// `down`, and forget the registration.
    Logout,
    /// This node and its peers.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Mesh addresses: this node's, or HOST's (a peer's name, FQDN or address).
    Ip {
        #[arg(short = '4', conflicts_with = "v6")]
        v4: bool,
        #[arg(short = '6')]
        v6: bool,
        host: Option<String>,
    },
    /// ICMP echo to a peer through the tunnel, showing the path it took.
    Ping {
        host: String,
        /// Echoes to send.
        #[arg(short = 'c', long, default_value_t = 4)]
        count: u32,
    },
    /// Who has this mesh address: node, user, tags, key.
    Whois {
        address: String,
        #[arg(long)]
        json: bool,
    },
    /// known_hosts lines for every peer serving SSH (by name, FQDN and address).
    KnownHosts,
    /// The system `ssh` to a peer, with the peers' host keys known and nothing else
    /// trusted (StrictHostKeyChecking=yes): no prompt, ever.
    Ssh {
        /// `[user@]host`
        destination: String,
        /// Passed to ssh after the destination (a command).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Internals.
    Debug {
        #[command(subcommand)]
        what: DebugCommand,
    },
}

#[derive(Debug, Subcommand)]
enum DebugCommand {
    /// The event loop's counters (packets and bytes per direction, system calls and batch
    /// sizes, drops by reason) and the node's, as JSON.
    Metrics,
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
        Command::Up { login_server, auth_key, hostname, control_key, ssh, advertise_tags, accept_dns } => {
            let control_key = match control_key {
                Some(k) => k.clone(),
                None => fetch_key(login_server).map_err(Failure::Failed)?,
            };
            let hostname = match hostname {
                Some(h) => h.clone(),
                None => rustix::system::uname().nodename().to_string_lossy().into_owned(),
            };
            // Resolved here, so the daemon's loop never waits for a resolver.
            let server_addr = Some(
                meshd::control_key::resolve(login_server).map_err(|e| Failure::Failed(e.to_string()))?.to_string(),
            );
            let up = Request::Up {
                server_addr,
                login_server: login_server.clone(),
                auth_key: auth_key.clone(),
                hostname,
                control_key,
                ssh: *ssh,
                advertise_tags: advertise_tags.clone(),
                accept_dns: *accept_dns,
            };
            request(args, &up)?;
            wait_until_running(args, auth_key.is_empty())
        }
        Command::Down => request(args, &Request::Down).map(drop),
        Command::Logout => request(args, &Request::Logout).map(drop),
        Command::Status { json } => {
            let status = status(args)?;
            if *json {
                print_json(&status)
            } else {
                print_status(&status);
                Ok(())
            }
        }
        Command::Ip { v4, v6, host } => {
            let status = status(args)?;
            let addresses = match host {
                None => status.addresses.clone(),
                Some(host) => find_host(&status, host)?.1,
            };
            let wanted = addresses.iter().filter(|a| {
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
                Err(Failure::Failed("no such address (is the node up?)".into()))
            }
        }
        Command::Ping { host, count } => ping(args, host, *count),
        Command::Whois { address, json } => {
            let status = status(args)?;
            let peer = status
                .peers
                .iter()
                .find(|p| p.addresses.iter().any(|a| a == address.trim()))
                .ok_or_else(|| Failure::Failed(format!("{address}: no peer has this address")))?;
            if *json {
                return print_json(peer);
            }
            println!("name:    {} ({})", peer.name, peer.fqdn);
            println!("user:    {}", peer.user);
            if !peer.tags.is_empty() {
                println!("tags:    {}", peer.tags.join(","));
            }
            println!("address: {}", peer.addresses.join(", "));
            println!("key:     {}", peer.public_key);
            Ok(())
        }
        Command::KnownHosts => {
            print!("{}", known_hosts(&status(args)?));
            Ok(())
        }
        Command::Ssh { destination, args: ssh_args } => ssh(args, destination, ssh_args),
        Command::Debug { what: DebugCommand::Metrics } => {
            let metrics = request(args, &Request::Metrics)?.metrics.unwrap_or_default();
            print_json(&metrics)
        }
    }
}

fn status(args: &Args) -> Result<Status, Failure> {
    Ok(request(args, &Request::Status)?.status.unwrap_or_default())
}

fn print_json(value: &impl serde::Serialize) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Failure::Failed(e.to_string()))?;
    println!("{text}");
    Ok(())
}

/// A node by name, FQDN (a trailing dot allowed) or address: its name and addresses.
fn find_host(status: &Status, host: &str) -> Result<(String, Vec<String>), Failure> {
    let wanted = host.trim().trim_end_matches('.').to_ascii_lowercase();
    let matches = |name: &str, fqdn: &str, addresses: &[String]| {
        name.eq_ignore_ascii_case(&wanted) || fqdn.eq_ignore_ascii_case(&wanted) || addresses.contains(&wanted)
    };
    if !status.name.is_empty() && matches(&status.name, &status.fqdn, &status.addresses) {
        return Ok((status.name.clone(), status.addresses.clone()));
    }
    status
        .peers
        .iter()
        .find(|p| matches(&p.name, &p.fqdn, &p.addresses))
        .map(|p| (p.name.clone(), p.addresses.clone()))
        .ok_or_else(|| Failure::Failed(format!("{host}: no such node in the tailnet")))
}

/// The address to reach a node at: its IPv4 one, else the first.
fn preferred_address(addresses: &[String]) -> Option<String> {
    addresses.iter().find(|a| !a.contains(':')).or_else(|| addresses.first()).cloned()
}

/// `count` echoes a second apart; success if any came back.
fn ping(args: &Args, host: &str, count: u32) -> Result<(), Failure> {
    let status = status(args)?;
    let (name, addresses) = find_host(&status, host)?;
    let address = preferred_address(&addresses).ok_or_else(|| Failure::Failed(format!("{name} has no address")))?;
    let mut pongs = 0;
    for i in 0..count {
        let started = request(args, &Request::Ping { address: address.clone() })?.ping.unwrap_or_default();
        let report = loop {
            std::thread::sleep(Duration::from_millis(5));
            let report = request(args, &Request::PingResult { id: started.id })?.ping.unwrap_or_default();
            if report.rtt_us.is_some() || report.timed_out {
                break report;
            }
        };
        let path = report.endpoint.as_deref().map_or_else(|| "no endpoint".to_string(), |e| format!("via {e}"));
        match report.rtt_us {
            Some(us) => {
                pongs += 1;
                println!("pong from {} ({}) {path} in {:.2} ms", report.peer, report.address, us as f64 / 1000.0);
            }
            None => println!("no reply from {} ({}) {path}", report.peer, report.address),
        }
        if i + 1 < count {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    if pongs > 0 {
        Ok(())
    } else {
        Err(Failure::Failed(format!("no reply from {name}")))
    }
}

/// One known_hosts line per peer host key: `name,fqdn,address... key`.
fn known_hosts(status: &Status) -> String {
    let mut out = String::new();
    for peer in &status.peers {
        let mut names = vec![peer.name.clone()];
        if !peer.fqdn.is_empty() {
            names.push(peer.fqdn.clone());
        }
        names.extend(peer.addresses.iter().cloned());
        for key in &peer.ssh_host_keys {
            // Keys come from the server; anything that could break the line is skipped.
            let clean =
                |s: &str| !s.is_empty() && !s.contains(|c: char| c.is_whitespace() || c == ',' || c.is_control());
            if names.iter().all(|n| clean(n)) && !key.contains(|c: char| c.is_control()) {
                out.push_str(&format!("{} {key}\n", names.join(",")));
            }
        }
    }
    out
}

/// Write the peers' host keys to ~/.config/meshctl/ssh_known_hosts and become `ssh` with
/// them as the only keys it trusts.
fn ssh(args: &Args, destination: &str, ssh_args: &[String]) -> Result<(), Failure> {
    use std::os::unix::process::CommandExt as _;
    let status = status(args)?;
    let host = destination.rsplit_once('@').map_or(destination, |(_, h)| h);
    let (_, addresses) = find_host(&status, host)?;
    let address = preferred_address(&addresses).ok_or_else(|| Failure::Failed(format!("{host} has no address")))?;
    let file = known_hosts_file().map_err(Failure::Failed)?;
    write_known_hosts(&file, &status).map_err(Failure::Failed)?;
    let error = std::process::Command::new("ssh")
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", file.display()))
        .args(["-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes"])
        .args(["-o", "UpdateHostKeys=no", "-o", "HostKeyAlgorithms=ssh-ed25519"])
        .arg("-o")
        .arg(format!("HostName={address}"))
        .arg(destination)
        .args(ssh_args)
        .exec();
    // exec returns only on failure.
    Err(Failure::Failed(format!("ssh: {error}")))
}

fn known_hosts_file() -> Result<PathBuf, String> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .ok_or("neither XDG_CONFIG_HOME nor HOME is set")?;
    Ok(base.join("meshctl").join("ssh_known_hosts"))
}

fn write_known_hosts(file: &std::path::Path, status: &Status) -> Result<(), String> {
    let dir = file.parent().ok_or("no directory for known_hosts")?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, known_hosts(status)).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, file).map_err(|e| format!("{}: {e}", file.display()))
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
