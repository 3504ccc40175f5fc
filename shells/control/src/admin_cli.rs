//! The admin commands of `meshcontrol` (headscale's shape): each builds one
//! [`AdminRequest`], sends it through the [`Transport`], and prints the result, as a table
//! for people or as JSON with `--json`. Exit codes: 0 done, 1 refused by the server (its
//! error is printed), 2 could not run (no server, bad arguments, unreadable file).

use std::path::PathBuf;
use std::time::Duration;

use crate::admin_api::{AdminReply, AdminRequest, Secret};
use crate::admin_client::{call, Transport};
use crate::admin_render::{render, Show};
use clap::{Args, Subcommand};

pub const OK: u8 = 0;
pub const REFUSED: u8 = 1;
pub const FAILED: u8 = 2;

#[derive(Debug, Args)]
pub struct Json {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    Create {
        name: String,
    },
    List(Json),
    Rename {
        old: String,
        new: String,
    },
    Delete {
        name: String,
    },
    /// Set the user's password for the login pages (one line of stdin; prompted, not
    /// echoed, on a terminal).
    Passwd {
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum PreauthkeysCommand {
    /// Create a key; it is printed once (only its hash is kept).
    Create {
        #[arg(long)]
        user: String,
        #[arg(long)]
        reusable: bool,
        #[arg(long)]
        ephemeral: bool,
        /// Tags for the nodes it registers: tag:a,tag:b.
        #[arg(long, value_delimiter = ',')]
        tags: Vec<String>,
        /// How long the key works: 30m, 1h, 7d, ...
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        expiration: Duration,
        #[command(flatten)]
        json: Json,
    },
    List {
        #[arg(long)]
        user: Option<String>,
        #[command(flatten)]
        json: Json,
    },
    Expire {
        id: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum NodesCommand {
    List(Json),
    Expire {
        id: u64,
    },
    Delete {
        id: u64,
    },
    Tag {
        id: u64,
        /// tag:a,tag:b (empty: remove all tags).
        #[arg(long, value_delimiter = ',', num_args = 0..)]
        tags: Vec<String>,
    },
    Rename {
        id: u64,
        name: String,
    },
    /// Approve a pending interactive login for a user.
    Register {
        /// The token of the login URL (or the whole URL).
        #[arg(long)]
        key: String,
        #[arg(long)]
        user: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApikeysCommand {
    /// Create an API key for the HTTP admin API; it is printed once.
    Create {
        #[arg(long, default_value = "90d", value_parser = parse_duration)]
        expiration: Duration,
        #[command(flatten)]
        json: Json,
    },
    List(Json),
    Expire {
        id: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Pending interactive logins and SSH check holds.
    List(Json),
    /// Approve a check hold, or a pending login (with --user).
    Approve {
        token: String,
        #[arg(long)]
        user: Option<String>,
    },
    Reject {
        token: String,
    },
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The newest N entries.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    #[arg(long)]
    pub actor: Option<String>,
    /// Only actions starting with this (`node-`, `ssh-check`).
    #[arg(long)]
    pub action: Option<String>,
    /// Only entries whose detail contains this.
    #[arg(long)]
    pub contains: Option<String>,
    #[command(flatten)]
    pub json: Json,
}

/// An admin command ready to send.
#[derive(Debug)]
pub enum AdminCommand {
    Users(UsersCommand),
    Preauthkeys(PreauthkeysCommand),
    Nodes(NodesCommand),
    Apikeys(ApikeysCommand),
    Auth(AuthCommand),
    Audit(AuditArgs),
    PolicyGet,
    PolicySet { file: PathBuf },
}

/// `30s`, `15m`, `1h`, `7d`, `2w` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("{text:?} is not a duration like 30m, 1h or 7d"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h, d or w")),
    };
    n.checked_mul(scale)
        .filter(|&s| s <= 100 * 365 * 86_400)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is longer than 100 years"))
}

/// One line of standard input; on a terminal, prompted and not echoed.
fn read_password() -> Result<String, String> {
    use rustix::termios::{isatty, tcgetattr, tcsetattr, LocalModes, OptionalActions};
    let stdin = std::io::stdin();
    let saved = if isatty(&stdin) {
        eprint!("Password: ");
        let saved = tcgetattr(&stdin).map_err(|e| format!("cannot read the terminal: {e}"))?;
        let mut quiet = saved.clone();
        quiet.local_modes.remove(LocalModes::ECHO);
        tcsetattr(&stdin, OptionalActions::Now, &quiet).map_err(|e| format!("cannot set the terminal: {e}"))?;
        Some(saved)
    } else {
        None
    };
    let mut input = String::new();
    let read = stdin.read_line(&mut input);
    if let Some(saved) = saved {
        let _ = tcsetattr(&stdin, OptionalActions::Now, &saved);
        eprintln!();
    }
    read.map_err(|e| format!("cannot read the password: {e}"))?;
    Ok(input.trim_end_matches(['\r', '\n']).to_string())
}

/// The token of a login URL, or the token itself.
fn token_of(key: &str) -> String {
    key.trim().trim_end_matches('/').rsplit('/').next().unwrap_or_default().to_string()
}

/// Builds the request: `Err` is a message and an exit code (the command could not run).
fn request(command: AdminCommand) -> Result<(AdminRequest, Show), String> {
    Ok(match command {
        AdminCommand::Users(c) => match c {
            UsersCommand::Create { name } => (AdminRequest::UsersCreate { name }, Show::Id("created user")),
            UsersCommand::List(j) => (AdminRequest::UsersList {}, Show::Users(j.json)),
            UsersCommand::Rename { old, new } => (AdminRequest::UsersRename { old, new }, Show::Done("renamed")),
            UsersCommand::Delete { name } => (AdminRequest::UsersDelete { name }, Show::Done("deleted")),
            UsersCommand::Passwd { name } => {
                let password = read_password()?;
                if password.is_empty() {
                    return Err("give the password on the first line of standard input".into());
                }
                (AdminRequest::UsersPasswd { name, password: Secret(password) }, Show::Done("password set"))
            }
        },
        AdminCommand::Preauthkeys(c) => match c {
            PreauthkeysCommand::Create { user, reusable, ephemeral, tags, expiration, json } => (
                AdminRequest::PreauthkeysCreate {
                    user,
                    reusable,
                    ephemeral,
                    tags,
                    expiration_secs: expiration.as_secs(),
                },
                Show::Created(json.json),
            ),
            PreauthkeysCommand::List { user, json } => {
                (AdminRequest::PreauthkeysList { user }, Show::AuthKeys(json.json))
            }
            PreauthkeysCommand::Expire { id } => (AdminRequest::PreauthkeysExpire { id }, Show::Done("expired")),
        },
        AdminCommand::Nodes(c) => match c {
            NodesCommand::List(j) => (AdminRequest::NodesList {}, Show::Nodes(j.json)),
            NodesCommand::Expire { id } => (AdminRequest::NodesExpire { id }, Show::Done("expired")),
            NodesCommand::Delete { id } => (AdminRequest::NodesDelete { id }, Show::Done("deleted")),
            NodesCommand::Tag { id, tags } => {
                let tags = tags.into_iter().filter(|t| !t.is_empty()).collect();
                (AdminRequest::NodesTag { id, tags }, Show::Done("tagged"))
            }
            NodesCommand::Rename { id, name } => (AdminRequest::NodesRename { id, name }, Show::Done("renamed")),
            NodesCommand::Register { key, user } => {
                (AdminRequest::NodesRegister { token: token_of(&key), user }, Show::Id("registered node"))
            }
        },
        AdminCommand::Apikeys(c) => match c {
            ApikeysCommand::Create { expiration, json } => {
                (AdminRequest::ApikeysCreate { expiration_secs: expiration.as_secs() }, Show::Created(json.json))
            }
            ApikeysCommand::List(j) => (AdminRequest::ApikeysList {}, Show::ApiKeys(j.json)),
            ApikeysCommand::Expire { id } => (AdminRequest::ApikeysExpire { id }, Show::Done("expired")),
        },
        AdminCommand::Auth(c) => match c {
            AuthCommand::List(j) => (AdminRequest::AuthList {}, Show::Pending(j.json)),
            AuthCommand::Approve { token, user } => {
                (AdminRequest::AuthApprove { token: token_of(&token), user }, Show::Done("approved"))
            }
            AuthCommand::Reject { token } => {
                (AdminRequest::AuthReject { token: token_of(&token) }, Show::Done("rejected"))
            }
        },
        AdminCommand::Audit(a) => (
            AdminRequest::Audit { limit: Some(a.limit), actor: a.actor, action: a.action, contains: a.contains },
            Show::Audit(a.json.json),
        ),
        AdminCommand::PolicyGet => (AdminRequest::PolicyGet {}, Show::Policy),
        AdminCommand::PolicySet { file } => {
            let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            (AdminRequest::PolicySet { text }, Show::Done("policy set"))
        }
    })
}

/// Runs one admin command; returns the exit code.
pub fn run(command: AdminCommand, transport: &Transport) -> u8 {
    // The server names the policy `policy`; errors are shown against the user's file.
    let policy_file = match &command {
        AdminCommand::PolicySet { file } => Some(file.display().to_string()),
        _ => None,
    };
    let (request, show) = match request(command) {
        Ok(r) => r,
        Err(why) => {
            eprintln!("meshcontrol: {why}");
            return FAILED;
        }
    };
    match call(transport, &request) {
        Ok(AdminReply::Ok(value)) => match render(show, value) {
            Ok(text) => {
                print!("{text}");
                OK
            }
            Err(why) => {
                eprintln!("meshcontrol: {why}");
                FAILED
            }
        },
        Ok(AdminReply::Error(why)) => {
            let why = match (&policy_file, why.strip_prefix("policy:")) {
                (Some(file), Some(rest)) => format!("{file}:{rest}"),
                _ => why,
            };
            eprintln!("{why}");
            REFUSED
        }
        Err(e) => {
            eprintln!("meshcontrol: {e}");
            FAILED
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_duration("1y").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    #[test]
    fn tokens_come_from_urls_or_alone() {
        assert_eq!(token_of("http://h:1/register/abc"), "abc");
        assert_eq!(token_of("abc"), "abc");
        assert_eq!(token_of(" http://h/check/abc/ "), "abc");
    }
}
