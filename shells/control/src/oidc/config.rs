//! What `meshcontrol serve --oidc-*` configures, and the pure half of a login: turning a
//! verified ID token's claims into a tailnet user name, and the allow lists.
//!
//! User names: with `--oidc-user-claim email` (the default) the name is the token's
//! `email`, lower-cased, and the provider must say `email_verified: true` (a provider that
//! lets people type any address would otherwise let them claim anyone's nodes); with `sub`
//! it is `sub@<issuer host>`, so names stay unique across providers and still look like the
//! policy's `user@domain`. The allow lists (`--oidc-allowed-domains`, `-users`, `-groups`)
//! each apply when given, all of them at once: a user must pass every list that is set.
//! Groups come from the token's `groups` claim (an array of strings).

use std::path::PathBuf;
use std::time::Duration;

/// Which claim names the user.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserClaim {
    #[default]
    Email,
    Sub,
}

/// The provider and the rules for who may log in.
#[derive(Clone, Debug, Default)]
pub struct OidcConfig {
    /// The issuer URL (discovery at `<issuer>/.well-known/openid-configuration`).
    pub issuer: String,
    pub client_id: String,
    /// Read from a file (never on a command line).
    pub client_secret_file: PathBuf,
    pub user_claim: UserClaim,
    /// Email domains allowed to log in (empty: any).
    pub allowed_domains: Vec<String>,
    /// User names allowed to log in (empty: any).
    pub allowed_users: Vec<String>,
    /// Groups of which a user must be in one (empty: any).
    pub allowed_groups: Vec<String>,
    /// Ask for the `groups` scope even when the provider does not list it: something
    /// besides the allow lists decides on groups (the console's admin groups).
    pub wants_groups: bool,
    /// How recent a check-mode login must be (`max_age` sent to the provider, and the
    /// oldest `auth_time` accepted).
    pub check_max_age: Duration,
}

/// The claims a login is decided on (already verified by the token's signature).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Claims {
    pub sub: String,
    pub email: Option<String>,
    pub email_verified: Option<bool>,
    pub groups: Vec<String>,
    /// Unix seconds.
    pub auth_time: Option<u64>,
}

/// Longest user name taken from a token.
const MAX_NAME: usize = 128;

impl OidcConfig {
    /// The tailnet user `claims` belong to, if the allow lists let them in; the reason in
    /// words when not.
    pub fn user_of(&self, claims: &Claims, issuer_host: &str) -> Result<String, String> {
        let name = match self.user_claim {
            UserClaim::Email => {
                let email = claims.email.as_deref().ok_or("the provider sent no email address")?;
                if claims.email_verified != Some(true) {
                    return Err(format!("the provider has not verified the address {email}"));
                }
                email.trim().to_ascii_lowercase()
            }
            UserClaim::Sub => format!("{}@{issuer_host}", claims.sub),
        };
        let plain = !name.is_empty()
            && name.len() <= MAX_NAME
            && name.matches('@').count() == 1
            && name.chars().all(|c| c.is_ascii_alphanumeric() || "@._+-".contains(c));
        if !plain {
            return Err("the user name from the provider is not a plain user@domain name".into());
        }
        let domain = name.rsplit('@').next().unwrap_or_default();
        if !self.allowed_domains.is_empty() && !self.allowed_domains.iter().any(|d| d.eq_ignore_ascii_case(domain)) {
            return Err(format!("users of {domain} may not log in here"));
        }
        if !self.allowed_users.is_empty() && !self.allowed_users.iter().any(|u| u.eq_ignore_ascii_case(&name)) {
            return Err(format!("{name} may not log in here"));
        }
        if !self.allowed_groups.is_empty() && !claims.groups.iter().any(|g| self.allowed_groups.contains(g)) {
            return Err(format!("{name} is in none of the groups allowed to log in here"));
        }
        Ok(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(email: &str, verified: bool, groups: &[&str]) -> Claims {
        Claims {
            sub: "u-123".into(),
            email: Some(email.into()),
            email_verified: Some(verified),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            auth_time: None,
        }
    }

    #[test]
    fn names_come_from_verified_email_or_sub_and_pass_every_allow_list() {
        let mut config = OidcConfig::default();
        assert_eq!(config.user_of(&claims("Alice@Example.com", true, &[]), "idp"), Ok("alice@example.com".into()));
        assert!(config.user_of(&claims("alice@example.com", false, &[]), "idp").is_err(), "unverified");
        assert!(config.user_of(&claims("a b@example.com", true, &[]), "idp").is_err(), "not plain");
        assert!(config.user_of(&Claims { email: None, ..claims("x", true, &[]) }, "idp").is_err());
        config.user_claim = UserClaim::Sub;
        assert_eq!(config.user_of(&claims("ignored", false, &[]), "idp.example"), Ok("u-123@idp.example".into()));
        config.user_claim = UserClaim::Email;
        config.allowed_domains = vec!["example.com".into()];
        config.allowed_groups = vec!["eng".into()];
        assert!(config.user_of(&claims("bob@other.org", true, &["eng"]), "idp").is_err(), "domain");
        assert!(config.user_of(&claims("bob@example.com", true, &["sales"]), "idp").is_err(), "group");
        assert_eq!(config.user_of(&claims("bob@example.com", true, &["eng"]), "idp"), Ok("bob@example.com".into()));
        config.allowed_users = vec!["carol@example.com".into()];
        assert!(config.user_of(&claims("bob@example.com", true, &["eng"]), "idp").is_err(), "user list");
    }
}
