//! meshcontrol as an OpenID Connect relying party (the `openidconnect` crate does the JOSE:
//! discovery, JWKS, signature, issuer, audience, expiry, nonce).
//!
//! One login is one [`Flow`]: [`Oidc::start`] makes the authorization URL (code flow, PKCE
//! S256, a fresh `state` and `nonce`; for a check also `prompt=login` and `max_age`, so the
//! provider really asks the person again) and remembers the flow under its `state` for
//! [`FLOW_TTL`]; [`Oidc::finish`] takes the flow out (a `state` works once), exchanges the
//! code, verifies the ID token and returns who logged in. Signature algorithms are an allow
//! list of asymmetric ones (no `none`, no HMAC with a shared secret). An unknown signing key
//! makes the provider's metadata and keys be fetched again (at most every
//! [`REFRESH_EVERY`]), so a provider's key rotation needs no restart.

mod config;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use config::{Claims, OidcConfig, UserClaim};
use openidconnect::core::{
    CoreAuthPrompt, CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::{
    AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet,
    EndpointSet, IssuerUrl, Nonce, OAuth2TokenResponse as _, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    SignatureVerificationError, TokenResponse as _,
};
use thiserror::Error;
use tokio::sync::RwLock;

use crate::actor::PendingKind;

/// How long a started login may take at the provider.
pub const FLOW_TTL: Duration = Duration::from_secs(10 * 60);
/// Logins in progress at most (beyond it the oldest are dropped).
const MAX_FLOWS: usize = 10_000;
/// Fetching the provider's keys again after an unknown key, at most this often.
const REFRESH_EVERY: Duration = Duration::from_secs(30);
/// Largest userinfo answer read.
const MAX_USERINFO: usize = 64 * 1024;
/// Clock difference tolerated between the provider and this server.
const SKEW: Duration = Duration::from_secs(60);

type Client =
    CoreClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointMaybeSet, EndpointMaybeSet>;

#[derive(Debug, Error)]
pub enum OidcError {
    #[error("the identity provider's configuration: {0}")]
    Config(String),
    #[error("the identity provider could not be reached: {0}")]
    Provider(String),
    #[error("this login link is unknown, used or expired (state mismatch)")]
    UnknownState,
    #[error("the identity provider refused the login: {0}")]
    Refused(String),
    #[error("the identity provider's answer is not valid: {0}")]
    InvalidToken(String),
    #[error("{0}")]
    NotAllowed(String),
}

/// What a login is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Approving the pending registration or check of `token`.
    Pending { kind: PendingKind, token: String },
    /// Signing in to the admin console ([`crate::console`]).
    Console,
}

/// A login in progress at the provider.
#[derive(Debug)]
struct Flow {
    purpose: Purpose,
    nonce: Nonce,
    pkce: PkceCodeVerifier,
    /// Check logins: the oldest acceptable `auth_time`.
    max_age: Option<Duration>,
    started: Instant,
}

/// Who logged in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub groups: Vec<String>,
    pub purpose: Purpose,
    /// Unix seconds of the authentication at the provider, when it said.
    pub auth_time: Option<u64>,
}

/// The relying party (see the module documentation).
#[derive(Debug)]
pub struct Oidc {
    config: OidcConfig,
    client_secret: ClientSecret,
    redirect: RedirectUrl,
    http: openidconnect::reqwest::Client,
    client: RwLock<(Arc<Client>, Instant)>,
    flows: Mutex<BTreeMap<String, Flow>>,
    /// Whether logins ask for the `groups` scope (and complete groups from userinfo): when
    /// the allow lists or the console's admin groups name groups, or the provider
    /// advertises the scope (the claim fills policy groups). Otherwise never asked of a
    /// provider that does not list it: some refuse unknown scopes.
    groups_scope: bool,
}

impl Oidc {
    /// Discovers the provider; `server_url` is this server's public URL (the redirect URI
    /// is `<server_url>/oidc/callback`, registered at the provider).
    pub async fn new(config: OidcConfig, server_url: &str) -> Result<Oidc, OidcError> {
        let secret = std::fs::read_to_string(&config.client_secret_file)
            .map_err(|e| OidcError::Config(format!("{}: {e}", config.client_secret_file.display())))?;
        let client_secret = ClientSecret::new(secret.trim().to_string());
        let redirect = RedirectUrl::new(format!("{}/oidc/callback", server_url.trim_end_matches('/')))
            .map_err(|e| OidcError::Config(format!("redirect URL: {e}")))?;
        // No redirects: following them from a token endpoint opens the server to SSRF.
        let http = openidconnect::reqwest::ClientBuilder::new()
            .redirect(openidconnect::reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| OidcError::Config(e.to_string()))?;
        let (client, advertises_groups) = discover(&config, &client_secret, &redirect, &http).await?;
        let groups_scope = advertises_groups || !config.allowed_groups.is_empty() || config.wants_groups;
        Ok(Oidc {
            config,
            client_secret,
            redirect,
            http,
            client: RwLock::new((Arc::new(client), Instant::now())),
            flows: Mutex::new(BTreeMap::new()),
            groups_scope,
        })
    }

    pub fn config(&self) -> &OidcConfig {
        &self.config
    }

    /// The provider's authorization URL for `purpose`, and the `state` it carries (the
    /// caller also binds it to the browser with a cookie).
    pub async fn start(&self, purpose: Purpose) -> Result<(String, String), OidcError> {
        let client = self.client.read().await.0.clone();
        let (challenge, pkce) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
            .add_scope(Scope::new("email".into()))
            .add_scope(Scope::new("profile".into()))
            .set_pkce_challenge(challenge);
        if self.groups_scope {
            request = request.add_scope(Scope::new("groups".into()));
        }
        let check = matches!(purpose, Purpose::Pending { kind: PendingKind::Check, .. });
        let max_age = check.then_some(self.config.check_max_age);
        if let Some(age) = max_age {
            request = request.add_prompt(CoreAuthPrompt::Login).set_max_age(age);
        }
        let (url, state, nonce) = request.url();
        let flow = Flow { purpose, nonce, pkce, max_age, started: Instant::now() };
        if let Ok(mut flows) = self.flows.lock() {
            flows.retain(|_, f| f.started.elapsed() < FLOW_TTL);
            if flows.len() >= MAX_FLOWS {
                let oldest = flows.iter().min_by_key(|(_, f)| f.started).map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    flows.remove(&k);
                }
            }
            flows.insert(state.secret().clone(), flow);
        }
        Ok((url.to_string(), state.secret().clone()))
    }

    /// The provider sent the browser back with `code` for `state`: who it is. The flow is
    /// used up whatever the outcome.
    pub async fn finish(&self, state: &str, code: &str) -> Result<Identity, OidcError> {
        let flow = self.flows.lock().ok().and_then(|mut f| f.remove(state)).ok_or(OidcError::UnknownState)?;
        if flow.started.elapsed() >= FLOW_TTL {
            return Err(OidcError::UnknownState);
        }
        let client = self.client.read().await.0.clone();
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| OidcError::Config(e.to_string()))?
            .set_pkce_verifier(flow.pkce)
            .request_async(&self.http)
            .await
            .map_err(|e| OidcError::Refused(error_chain(&e)))?;
        let id_token = response.id_token().ok_or_else(|| OidcError::InvalidToken("no ID token".into()))?;
        let claims = match verify(&client, id_token, &flow.nonce, flow.max_age) {
            Err(ClaimsVerificationError::SignatureVerification(SignatureVerificationError::NoMatchingKey)) => {
                // Perhaps the provider rotated its keys: fetch them again and retry once.
                let client = self.refresh().await?;
                verify(&client, id_token, &flow.nonce, flow.max_age)
            }
            other => other,
        }
        .map_err(|e| OidcError::InvalidToken(error_chain(&e)))?;
        // Providers may keep the email and groups for the userinfo endpoint (oidc-provider
        // does, as the spec suggests when an access token is issued).
        let wants_groups = self.groups_scope && claims.groups.is_empty();
        let claims = if claims.email.is_none() || wants_groups {
            self.with_userinfo(&client, response.access_token().secret(), claims).await?
        } else {
            claims
        };
        let user = self.config.user_of(&claims, &self.issuer_host()).map_err(OidcError::NotAllowed)?;
        Ok(Identity { user, groups: claims.groups, purpose: flow.purpose, auth_time: claims.auth_time })
    }

    /// `claims` completed from the userinfo endpoint, which must name the same `sub`.
    async fn with_userinfo(
        &self,
        client: &Client,
        access_token: &str,
        mut claims: Claims,
    ) -> Result<Claims, OidcError> {
        let Some(url) = client.user_info_url() else { return Ok(claims) };
        let response = self
            .http
            .get(url.url().clone())
            .bearer_auth(access_token)
            .send()
            .await
            .map_err(|e| OidcError::Provider(format!("userinfo: {}", error_chain(&e))))?;
        if !response.status().is_success() {
            return Err(OidcError::Refused(format!("userinfo answered {}", response.status())));
        }
        let body = response.bytes().await.map_err(|e| OidcError::Provider(format!("userinfo: {e}")))?;
        if body.len() > MAX_USERINFO {
            return Err(OidcError::InvalidToken("the userinfo answer is too large".into()));
        }
        let info: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| OidcError::InvalidToken(format!("userinfo: {e}")))?;
        if info.get("sub").and_then(|s| s.as_str()) != Some(claims.sub.as_str()) {
            return Err(OidcError::InvalidToken("userinfo is about another subject".into()));
        }
        if claims.email.is_none() {
            claims.email = info.get("email").and_then(|e| e.as_str()).map(str::to_string);
            claims.email_verified = info.get("email_verified").and_then(serde_json::Value::as_bool);
        }
        if claims.groups.is_empty() {
            claims.groups = groups_in(&info);
        }
        Ok(claims)
    }

    /// The provider's metadata and keys fetched again (rate limited).
    async fn refresh(&self) -> Result<Arc<Client>, OidcError> {
        let mut current = self.client.write().await;
        if current.1.elapsed() < REFRESH_EVERY {
            return Ok(current.0.clone());
        }
        let (client, _) = discover(&self.config, &self.client_secret, &self.redirect, &self.http).await?;
        let client = Arc::new(client);
        tracing::info!(issuer = %self.config.issuer, "identity provider keys fetched again");
        *current = (client.clone(), Instant::now());
        Ok(client)
    }

    /// The provider's origin (`scheme://host[:port]`), for the login page's CSP: the
    /// authorization endpoint lives there (the issuer's origin is used; providers whose
    /// authorization endpoint is elsewhere are rare).
    pub fn origin(&self) -> String {
        openidconnect::url::Url::parse(&self.config.issuer)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_default()
    }

    fn issuer_host(&self) -> String {
        openidconnect::url::Url::parse(&self.config.issuer)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default()
    }
}

/// The token's claims, if it is valid for this client and this flow.
fn verify(
    client: &Client,
    id_token: &openidconnect::core::CoreIdToken,
    nonce: &Nonce,
    max_age: Option<Duration>,
) -> Result<Claims, ClaimsVerificationError> {
    let verifier = client.id_token_verifier().set_allowed_algs(ALLOWED_ALGS.iter().cloned());
    let verifier = match max_age {
        Some(age) => verifier.set_auth_time_verifier_fn(move |t| fresh(t.map(|t| t.timestamp()), age)),
        None => verifier,
    };
    let verified = id_token.claims(&verifier, nonce)?;
    let groups = groups_of(&id_token.to_string());
    Ok(Claims {
        sub: verified.subject().to_string(),
        email: verified.email().map(|e| e.to_string()),
        email_verified: verified.email_verified(),
        groups,
        auth_time: verified.auth_time().and_then(|t| u64::try_from(t.timestamp()).ok()),
    })
}

/// Asymmetric signatures only: never `none`, never HMAC (whose key is the client secret).
const ALLOWED_ALGS: &[CoreJwsSigningAlgorithm] = &[
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EdDsa,
];

/// The client for the provider's metadata, and whether the provider advertises the
/// `groups` scope.
async fn discover(
    config: &OidcConfig,
    secret: &ClientSecret,
    redirect: &RedirectUrl,
    http: &openidconnect::reqwest::Client,
) -> Result<(Client, bool), OidcError> {
    let issuer = IssuerUrl::new(config.issuer.clone()).map_err(|e| OidcError::Config(format!("issuer: {e}")))?;
    let metadata =
        CoreProviderMetadata::discover_async(issuer, http).await.map_err(|e| OidcError::Provider(error_chain(&e)))?;
    let groups = metadata.scopes_supported().is_some_and(|s| s.iter().any(|s| s.as_str() == "groups"));
    let client =
        CoreClient::from_provider_metadata(metadata, ClientId::new(config.client_id.clone()), Some(secret.clone()))
            .set_redirect_uri(redirect.clone());
    Ok((client, groups))
}

/// `auth_time` (Unix seconds) no older than `max_age` (and not in the future).
fn fresh(auth_time: Option<i64>, max_age: Duration) -> Result<(), String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let at = auth_time.ok_or("the provider sent no auth_time for a re-authentication")?;
    let at = u64::try_from(at).map_err(|_| "auth_time is before 1970".to_string())?;
    if at > now + SKEW.as_secs() {
        return Err("auth_time is in the future".into());
    }
    if now.saturating_sub(at) > max_age.as_secs() + SKEW.as_secs() {
        return Err(format!("the authentication is {} s old, more than {} s", now - at, max_age.as_secs()));
    }
    Ok(())
}

/// The `groups` claim of a JWT whose signature was already verified (the library's claims
/// type has no field for it): at most 256 names of at most 128 bytes.
fn groups_of(jwt: &str) -> Vec<String> {
    use base64::Engine as _;
    let Some(payload) = jwt.split('.').nth(1) else { return Vec::new() };
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload) else { return Vec::new() };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes) else { return Vec::new() };
    groups_in(&value)
}

/// A claims object's `groups`: at most 256 names of at most 128 bytes.
fn groups_in(claims: &serde_json::Value) -> Vec<String> {
    let Some(list) = claims.get("groups").and_then(|g| g.as_array()) else { return Vec::new() };
    list.iter().filter_map(|g| g.as_str()).filter(|g| g.len() <= 128).take(256).map(str::to_string).collect()
}

/// An error and its sources, one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tokens;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_time_must_be_recent_and_present() {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
        let age = Duration::from_secs(300);
        assert!(fresh(Some(now - 10), age).is_ok());
        assert!(fresh(None, age).is_err(), "missing");
        assert!(fresh(Some(now - 3600), age).is_err(), "stale");
        assert!(fresh(Some(now + 3600), age).is_err(), "future");
    }

    #[test]
    fn groups_are_read_from_the_payload_bounded() {
        use base64::Engine as _;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"groups":["eng","ops",3]}"#);
        assert_eq!(groups_of(&format!("h.{payload}.s")), ["eng", "ops"]);
        assert!(groups_of("garbage").is_empty());
    }
}
