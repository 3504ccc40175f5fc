//! `meshcontrol`: the coordination server and its admin tools.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use meshcontrol::{inventory, policy_cmd};

#[derive(Debug, Parser)]
#[command(name = "meshcontrol", version, about = "The mesh coordination server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Work with policy files (offline; no server needed).
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
}

/// Exit codes: 0 done, 1 the policy is invalid, 2 the command could not run.
const INVALID: u8 = 1;
const FAILED: u8 = 2;

fn read(path: &PathBuf) -> Result<String, ExitCode> {
    std::fs::read_to_string(path).map_err(|e| {
        eprintln!("meshcontrol: {}: {e}", path.display());
        ExitCode::from(FAILED)
    })
}

fn run(cli: Cli) -> Result<(), ExitCode> {
    match cli.command {
        Command::Policy { command: PolicyCommand::Check { file } } => {
            let text = read(&file)?;
            match policy_cmd::check(&file.display().to_string(), &text) {
                Ok(summary) => println!("{summary}"),
                Err(e) => {
                    eprintln!("{e}");
                    return Err(ExitCode::from(INVALID));
                }
            }
        }
        Command::Policy { command: PolicyCommand::Compile { file, nodes, node, json } } => {
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
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}
