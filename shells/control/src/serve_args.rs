//! The options of `meshcontrol serve`, from the command line and from a config file.
//!
//! `--config FILE` reads a TOML file whose keys are the long options without their dashes
//! (`listen = "0.0.0.0:8080"`, `oidc-issuer = "https://id.example.com"`,
//! `oidc-allowed-domains = ["example.com"]`). An option given
//! on the command line wins over the file; a list given on the command line replaces the
//! file's. Unknown keys are errors, so a typo is not silently ignored.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use crate::console::ConsoleOptions;
use crate::oidc::{OidcConfig, UserClaim};
use crate::serve::ServeConfig;

/// The largest config file read.
const MAX_FILE: u64 = 1 << 20;
const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
const DEFAULT_CHECK_MAX_AGE: u64 = 300;

#[derive(Debug, Error)]
pub enum ArgsError {
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: larger than {MAX_FILE} bytes")]
    TooLarge { path: String },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("single sign-on needs all of oidc-issuer, oidc-client-id and oidc-client-secret-file (missing {0})")]
    IncompleteOidc(&'static str),
}

/// Single sign-on through an OpenID Connect provider (register `<server-url>/oidc/callback`
/// as the client's redirect URI there). Without an issuer, the login pages take local
/// passwords (`meshcontrol users passwd`).
#[derive(Debug, Default, clap::Args, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct OidcArgs {
    /// The provider's issuer URL (discovery at ISSUER/.well-known/openid-configuration).
    #[arg(long)]
    pub oidc_issuer: Option<String>,
    #[arg(long)]
    pub oidc_client_id: Option<String>,
    /// A file holding the client secret (kept off the command line).
    #[arg(long)]
    pub oidc_client_secret_file: Option<PathBuf>,
    /// The claim that names the user: a verified `email` (default), or `sub` (as sub@issuer-host).
    #[arg(long, value_enum)]
    pub oidc_user_claim: Option<UserClaim>,
    /// Only these email domains may log in (comma-separated).
    #[arg(long, value_delimiter = ',')]
    #[serde(default)]
    pub oidc_allowed_domains: Vec<String>,
    /// Only these users may log in (comma-separated).
    #[arg(long, value_delimiter = ',')]
    #[serde(default)]
    pub oidc_allowed_users: Vec<String>,
    /// Only members of one of these groups (the token's `groups` claim) may log in.
    #[arg(long, value_delimiter = ',')]
    #[serde(default)]
    pub oidc_allowed_groups: Vec<String>,
    /// How recent a check-mode re-authentication must be, in seconds (sent as max_age; default 300).
    #[arg(long)]
    pub oidc_check_max_age: Option<u64>,
}

/// Who may sign in to the admin console at /admin.
#[derive(Debug, Default, clap::Args, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ConsoleArgs {
    /// Users who may sign in to the console (single sign-on or their local password).
    #[arg(long, value_delimiter = ',')]
    #[serde(default)]
    pub console_admins: Vec<String>,
    /// Members of these identity-provider groups may sign in to the console by single sign-on.
    #[arg(long, value_delimiter = ',')]
    #[serde(default)]
    pub console_admin_groups: Vec<String>,
    /// A file whose first line is the password of the console's local user `admin`.
    #[arg(long)]
    pub console_password_file: Option<PathBuf>,
}

#[derive(Debug, Default, clap::Args, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ServeArgs {
    /// A TOML file of these options (keys without the dashes); the command line wins.
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Where to listen (default 0.0.0.0:8080).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// The URL nodes and people reach the server at (login links); default http://LISTEN.
    #[arg(long)]
    pub server_url: Option<String>,
    /// The MagicDNS domain (default mesh.internal).
    #[arg(long)]
    pub dns_domain: Option<String>,
    #[command(flatten)]
    #[serde(flatten)]
    pub oidc: OidcArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub console: ConsoleArgs,
}

/// The command line's value, else the file's.
fn pick<T>(cli: Option<T>, file: Option<T>) -> Option<T> {
    cli.or(file)
}

fn list(cli: Vec<String>, file: Vec<String>) -> Vec<String> {
    if cli.is_empty() {
        file
    } else {
        cli
    }
}

impl ServeArgs {
    /// Reads a config file.
    pub fn from_file(path: &Path) -> Result<Self, ArgsError> {
        let shown = path.display().to_string();
        let read = |source| ArgsError::Read { path: shown.clone(), source };
        let size = std::fs::metadata(path).map_err(read)?.len();
        if size > MAX_FILE {
            return Err(ArgsError::TooLarge { path: shown });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        Self::from_toml(&shown, &text)
    }

    pub fn from_toml(name: &str, text: &str) -> Result<Self, ArgsError> {
        toml::from_str(text).map_err(|e| ArgsError::Parse { path: name.to_string(), message: e.to_string() })
    }

    /// The command line over the file named by `--config` (if any), with the defaults.
    pub fn into_config(self, state_dir: PathBuf) -> Result<ServeConfig, ArgsError> {
        let file = match &self.config {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        self.merge(file, state_dir)
    }

    fn merge(self, file: Self, state_dir: PathBuf) -> Result<ServeConfig, ArgsError> {
        let listen = pick(self.listen, file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.parse().unwrap_or(SocketAddr::from(([0, 0, 0, 0], 8080))));
        let (c, f) = (self.console, file.console);
        let console = ConsoleOptions {
            admins: list(c.console_admins, f.console_admins),
            admin_groups: list(c.console_admin_groups, f.console_admin_groups),
            password_file: pick(c.console_password_file, f.console_password_file),
        };
        let (o, f) = (self.oidc, file.oidc);
        let issuer = pick(o.oidc_issuer, f.oidc_issuer);
        let client_id = pick(o.oidc_client_id, f.oidc_client_id);
        let secret_file = pick(o.oidc_client_secret_file, f.oidc_client_secret_file);
        let oidc = match (issuer, client_id, secret_file) {
            (None, None, None) => None,
            (Some(issuer), Some(client_id), Some(client_secret_file)) => Some(OidcConfig {
                issuer,
                client_id,
                client_secret_file,
                user_claim: pick(o.oidc_user_claim, f.oidc_user_claim).unwrap_or_default(),
                allowed_domains: list(o.oidc_allowed_domains, f.oidc_allowed_domains),
                allowed_users: list(o.oidc_allowed_users, f.oidc_allowed_users),
                allowed_groups: list(o.oidc_allowed_groups, f.oidc_allowed_groups),
                wants_groups: !console.admin_groups.is_empty(),
                check_max_age: Duration::from_secs(
                    pick(o.oidc_check_max_age, f.oidc_check_max_age).unwrap_or(DEFAULT_CHECK_MAX_AGE),
                ),
            }),
            (None, ..) => return Err(ArgsError::IncompleteOidc("oidc-issuer")),
            (_, None, _) => return Err(ArgsError::IncompleteOidc("oidc-client-id")),
            (_, _, None) => return Err(ArgsError::IncompleteOidc("oidc-client-secret-file")),
        };
        Ok(ServeConfig {
            state_dir,
            listen,
            server_url: pick(self.server_url, file.server_url),
            dns_domain: pick(self.dns_domain, file.dns_domain),
            oidc,
            console,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
listen = "127.0.0.1:9000"
server-url = "https://mesh.example.com"
oidc-issuer = "https://id.example.com"
oidc-client-id = "meshcontrol"
oidc-client-secret-file = "/etc/meshcontrol/client-secret"
oidc-user-claim = "sub"
oidc-allowed-domains = ["example.com"]
console-admin-groups = ["admins"]
"#;

    fn merged(cli: ServeArgs, file: &str) -> Result<ServeConfig, ArgsError> {
        let file = ServeArgs::from_toml("meshcontrol.toml", file)?;
        cli.merge(file, PathBuf::from("/var/lib/meshcontrol"))
    }

    #[test]
    fn the_file_fills_what_the_command_line_leaves_out() {
        let cli = ServeArgs {
            listen: Some(SocketAddr::from(([0, 0, 0, 0], 443))),
            console: ConsoleArgs { console_admin_groups: vec!["ops".into()], ..ConsoleArgs::default() },
            ..ServeArgs::default()
        };
        let config = merged(cli, FILE).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.listen.port(), 443, "the command line wins");
        assert_eq!(config.server_url.as_deref(), Some("https://mesh.example.com"));
        let oidc = config.oidc.unwrap_or_else(|| panic!("no oidc"));
        assert_eq!(oidc.issuer, "https://id.example.com");
        assert_eq!(oidc.user_claim, UserClaim::Sub);
        assert_eq!(oidc.allowed_domains, vec!["example.com".to_string()]);
        assert_eq!(oidc.check_max_age, Duration::from_secs(300));
        assert_eq!(config.console.admin_groups, vec!["ops".to_string()], "a command-line list replaces the file's");
        assert!(oidc.wants_groups, "console admin groups are decided on the groups claim");
        let without = FILE.replace("console-admin-groups = [\"admins\"]", "");
        let oidc = merged(ServeArgs::default(), &without).ok().and_then(|c| c.oidc);
        assert_eq!(oidc.map(|o| o.wants_groups), Some(false));
    }

    #[test]
    fn defaults_without_a_file_and_clear_errors() {
        let config =
            ServeArgs::default().merge(ServeArgs::default(), PathBuf::from("d")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert!(config.oidc.is_none());
        let typo = merged(ServeArgs::default(), "oidc-isuer = \"x\"").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(typo.starts_with("meshcontrol.toml:") && typo.contains("oidc-isuer"), "{typo}");
        let half = merged(ServeArgs::default(), "oidc-issuer = \"https://id\"").err().map(|e| e.to_string());
        assert!(half.unwrap_or_default().contains("missing oidc-client-id"));
        let wrong = merged(ServeArgs::default(), "listen = 8080").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(wrong.contains("listen"), "{wrong}");
    }
}
