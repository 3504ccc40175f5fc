//! `meshcontrol`: the coordination server (`serve`) and its admin tools.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use meshcontrol::admin_cli::{self, AdminCommand, ApikeysCommand, AuditArgs, AuthCommand, NodesCommand};
use meshcontrol::admin_cli::{PreauthkeysCommand, UsersCommand};
use meshcontrol::admin_client::Transport;
use meshcontrol::oidc::{OidcConfig, UserClaim};
use meshcontrol::serve::{self, ServeConfig};
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

/// Single sign-on through an OpenID Connect provider (register `<server-url>/oidc/callback`
/// as the client's redirect URI there). Without `--oidc-issuer`, the login pages take local
/// passwords (`meshcontrol users passwd`).
#[derive(Debug, clap::Args)]
struct OidcArgs {
    /// The provider's issuer URL (discovery at ISSUER/.well-known/openid-configuration).
    #[arg(long, requires_all = ["oidc_client_id", "oidc_client_secret_file"])]
    oidc_issuer: Option<String>,
    #[arg(long)]
    oidc_client_id: Option<String>,
    /// A file holding the client secret (kept off the command line).
    #[arg(long)]
    oidc_client_secret_file: Option<PathBuf>,
    /// The claim that names the user: a verified `email`, or `sub` (as sub@issuer-host).
    #[arg(long, value_enum, default_value = "email")]
    oidc_user_claim: UserClaim,
    /// Only these email domains may log in (comma-separated).
    #[arg(long, value_delimiter = ',')]
    oidc_allowed_domains: Vec<String>,
    /// Only these users may log in (comma-separated).
    #[arg(long, value_delimiter = ',')]
    oidc_allowed_users: Vec<String>,
    /// Only members of one of these groups (the token's `groups` claim) may log in.
    #[arg(long, value_delimiter = ',')]
    oidc_allowed_groups: Vec<String>,
    /// How recent a check-mode re-authentication must be, in seconds (sent as max_age).
    #[arg(long, default_value_t = 300)]
    oidc_check_max_age: u64,
}

impl OidcArgs {
    fn config(self) -> Option<OidcConfig> {
        Some(OidcConfig {
            issuer: self.oidc_issuer?,
            client_id: self.oidc_client_id?,
            client_secret_file: self.oidc_client_secret_file?,
            user_claim: self.oidc_user_claim,
            allowed_domains: self.oidc_allowed_domains,
            allowed_users: self.oidc_allowed_users,
            allowed_groups: self.oidc_allowed_groups,
            check_max_age: std::time::Duration::from_secs(self.oidc_check_max_age),
        })
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: HTTP and the control protocol on one port.
    Serve {
        #[arg(long, default_value = "0.0.0.0:8080")]
        listen: SocketAddr,
        /// The URL nodes and people reach the server at (login links); default http://LISTEN.
        #[arg(long)]
        server_url: Option<String>,
        /// The MagicDNS domain (default mesh.internal).
        #[arg(long)]
        dns_domain: Option<String>,
        #[command(flatten)]
        oidc: OidcArgs,
    },
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
        Command::Serve { listen, server_url, dns_domain, oidc } => {
            let oidc = oidc.config();
            return serve_command(ServeConfig { state_dir, listen, server_url, dns_domain, oidc });
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
