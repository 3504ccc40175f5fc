//! The session's environment, built from scratch.
//!
//! Nothing of the daemon's environment leaks in. The runtime sets HOME, USER, LOGNAME,
//! SHELL, PATH, MAIL, SSH_CLIENT, SSH_CONNECTION and, with a pty, TERM and SSH_TTY; the
//! client's variables (already accepted by policy) come after and may not replace those, nor
//! steer the dynamic loader or the shell's start-up (`LD_*`, `DYLD_*`, `BASH_ENV`, ...).

use std::ffi::OsString;

use super::error::{clip, SessionError};
use super::user::TargetUser;
use super::SessionRequest;

/// Most client environment variables a session accepts.
pub const MAX_ENV_VARS: usize = 64;
/// Longest client environment variable (name plus value) a session accepts.
pub const MAX_ENV_VAR_BYTES: usize = 4096;

/// Longest `ssh_client` / `ssh_connection` value (two addresses and ports fit easily).
const MAX_FIELD_BYTES: usize = 256;
/// Longest terminal name kept for TERM.
const MAX_TERM_BYTES: usize = 64;

const PATH_USER: &str = "/usr/local/bin:/usr/bin:/bin";
const PATH_ROOT: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Variables the runtime sets from trusted data; a client value never replaces them.
const RESERVED: [&str; 7] = ["HOME", "USER", "LOGNAME", "SHELL", "PATH", "MAIL", "TERM"];
/// Prefix of the connection variables, also reserved.
const RESERVED_PREFIX: &str = "SSH_";

/// Prefixes of dynamic-loader variables (glibc, musl, macOS).
const LOADER_PREFIXES: [&str; 2] = ["LD_", "DYLD_"];
/// Other variables that load code or change how libc or the shell start up.
const DANGEROUS: [&str; 13] = [
    "BASH_ENV",
    "ENV",
    "SHELLOPTS",
    "BASHOPTS",
    "IFS",
    "PS4",
    "GCONV_PATH",
    "GLIBC_TUNABLES",
    "LOCPATH",
    "NLSPATH",
    "HOSTALIASES",
    "RES_OPTIONS",
    "LOCALDOMAIN",
];

/// Bounds and filters the client's variables: too many, or one too long, is an error;
/// unusable or unsafe names are dropped (logged), as sshd drops what AcceptEnv does not list.
/// A later duplicate replaces an earlier one.
pub(crate) fn accept_client_env(env: &[(String, String)]) -> Result<Vec<(String, String)>, SessionError> {
    if env.len() > MAX_ENV_VARS {
        return Err(SessionError::TooManyEnvVars(env.len()));
    }
    let mut accepted: Vec<(String, String)> = Vec::with_capacity(env.len());
    for (name, value) in env {
        if name.len().saturating_add(value.len()) > MAX_ENV_VAR_BYTES {
            return Err(SessionError::EnvVarTooLong(clip(name)));
        }
        if let Some(reason) = refusal(name, value) {
            tracing::debug!(name = %clip(name), reason, "dropping client environment variable");
            continue;
        }
        accepted.retain(|(seen, _)| seen != name);
        accepted.push((name.clone(), value.clone()));
    }
    Ok(accepted)
}

/// Why a client variable is not passed on, if it is not.
fn refusal(name: &str, value: &str) -> Option<&'static str> {
    if !is_identifier(name) {
        Some("name is not a shell identifier")
    } else if LOADER_PREFIXES.iter().any(|prefix| name.starts_with(prefix)) || DANGEROUS.contains(&name) {
        Some("variable can load code")
    } else if RESERVED.contains(&name) || name.starts_with(RESERVED_PREFIX) {
        Some("variable is set by the session runtime")
    } else if value.contains('\0') {
        Some("value contains NUL")
    } else {
        None
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`: rules out '=', NUL and anything a shell could not export.
fn is_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|first| first.is_ascii_alphabetic() || first == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A terminal name fit for terminfo lookup (no path separators), else `dumb`.
fn term_name(term: &str) -> &str {
    let plain = !term.is_empty()
        && term.len() <= MAX_TERM_BYTES
        && term.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+'));
    if plain {
        term
    } else {
        "dumb"
    }
}

/// A daemon-supplied value: no NUL, bounded.
fn field<'a>(value: &'a str, what: &'static str) -> Result<&'a str, SessionError> {
    if value.len() > MAX_FIELD_BYTES || value.contains('\0') {
        return Err(SessionError::InvalidField(what));
    }
    Ok(value)
}

/// The complete environment: runtime variables, then the accepted client variables.
pub(crate) fn build(
    user: &TargetUser,
    request: &SessionRequest,
    client: Vec<(String, String)>,
    tty: Option<&str>,
) -> Result<Vec<(OsString, OsString)>, SessionError> {
    let path = if user.uid.is_root() { PATH_ROOT } else { PATH_USER };
    let mut env: Vec<(OsString, OsString)> = vec![
        ("HOME".into(), user.home.clone().into_os_string()),
        ("USER".into(), user.name.clone().into()),
        ("LOGNAME".into(), user.name.clone().into()),
        ("SHELL".into(), user.shell.clone().into_os_string()),
        ("PATH".into(), path.into()),
        ("MAIL".into(), format!("/var/mail/{}", user.name).into()),
        ("SSH_CLIENT".into(), field(&request.ssh_client, "ssh_client")?.into()),
        ("SSH_CONNECTION".into(), field(&request.ssh_connection, "ssh_connection")?.into()),
    ];
    if let Some(socket) = &request.agent_socket {
        env.push(("SSH_AUTH_SOCK".into(), socket.clone().into_os_string()));
    }
    if let (Some(tty), Some(pty)) = (tty, &request.pty) {
        env.push(("TERM".into(), term_name(&pty.term).into()));
        env.push(("SSH_TTY".into(), tty.into()));
    }
    env.extend(client.into_iter().map(|(name, value)| (name.into(), value.into())));
    Ok(env)
}

#[cfg(test)]
#[allow(clippy::expect_used)] // a failed expectation is the test failing
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    #[test]
    fn unsafe_and_reserved_names_are_dropped() {
        let env = pairs(&[
            ("LANG", "C.UTF-8"),
            ("LD_PRELOAD", "/tmp/evil.so"),
            ("LD_LIBRARY_PATH", "/tmp"),
            ("DYLD_INSERT_LIBRARIES", "x"),
            ("BASH_ENV", "/tmp/x"),
            ("GLIBC_TUNABLES", "x"),
            ("A=B", "c"),
            ("", "empty"),
            ("1ABC", "digit first"),
            ("BASH_FUNC_f%%", "() { :; }"),
            ("NUL\0NAME", "x"),
            ("VALUE_NUL", "a\0b"),
            ("PATH", "/tmp"),
            ("HOME", "/tmp"),
            ("SSH_CLIENT", "forged"),
            ("SSH_AUTH_SOCK", "/tmp/agent"),
            ("LC_ALL", "C"),
            ("_x9", "ok"),
        ]);
        let accepted = accept_client_env(&env).expect("within bounds");
        assert_eq!(accepted, pairs(&[("LANG", "C.UTF-8"), ("LC_ALL", "C"), ("_x9", "ok")]));
    }

    #[test]
    fn later_duplicate_wins() {
        let accepted = accept_client_env(&pairs(&[("A", "1"), ("B", "2"), ("A", "3")])).expect("within bounds");
        assert_eq!(accepted, pairs(&[("B", "2"), ("A", "3")]));
    }

    #[test]
    fn bounds_are_errors() {
        let many: Vec<(String, String)> = (0..=MAX_ENV_VARS).map(|i| (format!("V{i}"), String::new())).collect();
        assert!(matches!(accept_client_env(&many), Err(SessionError::TooManyEnvVars(n)) if n == MAX_ENV_VARS + 1));
        assert!(accept_client_env(&many[..MAX_ENV_VARS]).is_ok());
        let long = vec![("BIG".to_string(), "x".repeat(MAX_ENV_VAR_BYTES))];
        assert!(matches!(accept_client_env(&long), Err(SessionError::EnvVarTooLong(_))));
        let fits = vec![("BIG".to_string(), "x".repeat(MAX_ENV_VAR_BYTES - 3))];
        assert!(accept_client_env(&fits).is_ok());
    }

    #[test]
    fn terminal_names() {
        assert_eq!(term_name("xterm-256color"), "xterm-256color");
        assert_eq!(term_name("rxvt-unicode+x.y"), "rxvt-unicode+x.y");
        assert_eq!(term_name(""), "dumb");
        assert_eq!(term_name("../../tmp/evil"), "dumb");
        assert_eq!(term_name("a b"), "dumb");
        assert_eq!(term_name(&"x".repeat(65)), "dumb");
    }

    #[test]
    fn fields_are_bounded() {
        assert!(field("100.64.0.2 51234 22", "ssh_client").is_ok());
        assert!(matches!(field("a\0b", "ssh_client"), Err(SessionError::InvalidField("ssh_client"))));
        assert!(field(&"1".repeat(MAX_FIELD_BYTES + 1), "ssh_connection").is_err());
    }
}
