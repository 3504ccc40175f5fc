//! `meshcontrol`: the coordination server (`serve`) and its admin tools.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use meshcontrol::admin_cli::{self, AdminCommand, ApikeysCommand, AuditArgs, AuthCommand, NodesCommand};
use meshcontrol::admin_cli::{PreauthkeysCommand, UsersCommand};
use meshcontrol::admin_client::Transport;
use meshcontrol::serve::{self, ServeConfig};
use meshcontrol::serve_args::ServeArgs;
use meshcontrol::{inventory, policy_cmd};

#[derive(Debug, Parser)]
#[command(name = "meshcontrol", version, about = "The mesh coordination server")]
struct Cli {
    /// The server's state directory (key, database, admin socket).
    #[arg(long, global = true, env = "MESHCONTROL_STATE_DIR", default_value = "/var/lib/meshcontrol")]
    state_dir: PathBuf,
    /// The admin socket (default: STATE_DIR/admin.sock).
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// Talk to the server over HTTP at this URL (http://host:port) instead of the socket.
    #[arg(long, global = true, env = "MESHCONTROL_SERVER")]
    server: Option<String>,
    /// The API key for --server (`meshcontrol apikeys create`).
    #[arg(long, global = true, env = "MESHCONTROL_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: HTTP and the control protocol on one port.
    Serve(Box<ServeArgs>),
    /// Users of the tailnet.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Pre-authentication keys for registering nodes.
    Preauthkeys {
        #[command(subcommand)]
        command: PreauthkeysCommand,
    },
    Nodes {
        #[command(subcommand)]
        command: NodesCommand,
    },
    /// API keys for the HTTP admin API.
    Apikeys {
        #[command(subcommand)]
        command: ApikeysCommand,
    },
    /// Pending interactive logins and SSH check holds.
    Auth {
        #[command(subcommand)]
        command: AuthCommand,
    },
    /// The audit log: who changed what, when.
    Audit(AuditArgs),
    /// Policy files: check and compile offline; get and set on the server.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Check a policy file: exit 0 with a summary, or 1 with `file:line:col: message`.
    Check {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Show what each node would receive: its filter, SSH rules and visible peers.
    Compile {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// A JSON list of nodes: [{"name", "user", "tags", "addresses", "routes"}].
        #[arg(long)]
        nodes: PathBuf,
        /// Only this node.
        #[arg(long)]
        node: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Print the server's policy.
    Get,
    /// Replace the server's policy (refused with `file:line:col: message` if invalid).
    Set {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
}

/// Exit codes: 0 done, 1 invalid or refused, 2 the command could not run.
const INVALID: u8 = 1;
const FAILED: u8 = 2;

fn read(path: &PathBuf) -> Result<String, ExitCode> {
    std::fs::read_to_string(path).map_err(|e| {
        eprintln!("meshcontrol: {}: {e}", path.display());
        ExitCode::from(FAILED)
    })
}

fn policy_offline(command: PolicyCommand) -> Result<(), ExitCode> {
    match command {
        PolicyCommand::Check { file } => {
            let text = read(&file)?;
            match policy_cmd::check(&file.display().to_string(), &text) {
                Ok(summary) => println!("{summary}"),
                Err(e) => {
                    eprintln!("{e}");
                    return Err(ExitCode::from(INVALID));
                }
            }
        }
        PolicyCommand::Compile { file, nodes, node, json } => {
            let text = read(&file)?;
            let inventory = inventory::parse(&read(&nodes)?).map_err(|e| {
                eprintln!("meshcontrol: {}: {e}", nodes.display());
                ExitCode::from(FAILED)
            })?;
            let reports = policy_cmd::compile_report(&file.display().to_string(), &text, &inventory, node.as_deref())
                .map_err(|e| {
                eprintln!("{e}");
                ExitCode::from(INVALID)
            })?;
            if json {
                match serde_json::to_string_pretty(&reports) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("meshcontrol: {e}");
                        return Err(ExitCode::from(FAILED));
                    }
                }
            } else {
                print!("{}", policy_cmd::render(&reports));
            }
        }
        PolicyCommand::Get | PolicyCommand::Set { .. } => {}
    }
    Ok(())
}

fn serve_command(config: ServeConfig) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("meshcontrol: cannot start the runtime: {e}");
            return ExitCode::from(FAILED);
        }
    };
    match runtime.block_on(serve::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "meshcontrol stopped");
            eprintln!("meshcontrol: {e}");
            ExitCode::from(INVALID)
        }
    }
}

fn transport(
    state_dir: &std::path::Path,
    socket: Option<PathBuf>,
    server: Option<String>,
    api_key: Option<String>,
) -> Result<Transport, ExitCode> {
    match (server, api_key) {
        (Some(url), Some(api_key)) => Ok(Transport::Http { url, api_key }),
        (Some(_), None) => {
            eprintln!("meshcontrol: --server needs --api-key (or MESHCONTROL_API_KEY)");
            Err(ExitCode::from(FAILED))
        }
        (None, _) => Ok(Transport::Socket(socket.unwrap_or_else(|| state_dir.join("admin.sock")))),
    }
}

fn main() -> ExitCode {
    let Cli { state_dir, socket, server, api_key, command } = Cli::parse();
    let admin = match command {
        Command::Serve(args) => {
            return match args.into_config(state_dir) {
                Ok(config) => serve_command(config),
                Err(e) => {
                    eprintln!("meshcontrol: {e}");
                    ExitCode::from(INVALID)
                }
            };
        }
        Command::Policy { command: PolicyCommand::Get } => AdminCommand::PolicyGet,
        Command::Policy { command: PolicyCommand::Set { file } } => AdminCommand::PolicySet { file },
        Command::Policy { command } => {
            return match policy_offline(command) {
                Ok(()) => ExitCode::SUCCESS,
                Err(code) => code,
            };
        }
        Command::Users { command } => AdminCommand::Users(command),
        Command::Preauthkeys { command } => AdminCommand::Preauthkeys(command),
        Command::Nodes { command } => AdminCommand::Nodes(command),
        Command::Apikeys { command } => AdminCommand::Apikeys(command),
        Command::Auth { command } => AdminCommand::Auth(command),
        Command::Audit(args) => AdminCommand::Audit(args),
    };
    let transport = match transport(&state_dir, socket, server, api_key) {
        Ok(t) => t,
        Err(code) => return code,
    };
    ExitCode::from(admin_cli::run(admin, &transport))
}
