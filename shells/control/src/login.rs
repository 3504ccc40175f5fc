//! How a person proves who they are on a login page: one small trait, [`LoginMethod`], so
//! that OpenID Connect can plug in beside local passwords ([`PasswordLogin`]: argon2
//! hashes set with `meshcontrol users passwd`).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use thiserror::Error;

use crate::actor::ActorHandle;
use crate::os_random;
use crate::storage::StoreHandle;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, Error)]
pub enum LoginError {
    /// Wrong name or password (which one is not said).
    #[error("wrong user name or password")]
    BadCredentials,
    #[error("the login could not be checked: {0}")]
    Unavailable(String),
}

/// A way to log in on the server's pages.
pub trait LoginMethod: Send + Sync + std::fmt::Debug {
    /// The form's fields for this method (HTML inside the page's form, after its CSRF field).
    fn form_fields(&self) -> &'static str;
    /// Who the posted form proves the person to be: a user name of the tailnet.
    fn authenticate<'a>(&'a self, form: &'a BTreeMap<String, String>) -> BoxFuture<'a, Result<String, LoginError>>;
}

#[derive(Debug, Error)]
pub enum HashError {
    #[error("hashing the password failed: {0}")]
    Hash(String),
    #[error(transparent)]
    Random(#[from] os_random::RandomError),
}

/// An argon2id hash (PHC string) of `password` with a fresh salt from the OS.
pub fn hash_password(password: &str) -> Result<String, HashError> {
    let salt = SaltString::encode_b64(&os_random::bytes::<16>()?).map_err(|e| HashError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string `hash`.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// A hash nobody knows the password of, checked against when the user or their password
/// does not exist, so a wrong name costs as much time as a wrong password.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash_password("meshcontrol decoy").unwrap_or_default())
}

/// Argon2 verifications running at once (each takes tens of milliseconds of CPU and
/// 19 MiB), so a flood of login forms cannot take every core.
const VERIFY_SLOTS: usize = 2;

/// Local passwords: user name + password against the argon2 hash in the database.
#[derive(Debug)]
pub struct PasswordLogin {
    actor: ActorHandle,
    store: StoreHandle,
    verify_slots: tokio::sync::Semaphore,
}

impl PasswordLogin {
    pub fn new(actor: ActorHandle, store: StoreHandle) -> Self {
        Self { actor, store, verify_slots: tokio::sync::Semaphore::new(VERIFY_SLOTS) }
    }

    async fn check(&self, user: String, password: String) -> Result<String, LoginError> {
        let unavailable = |e: &dyn std::fmt::Display| LoginError::Unavailable(e.to_string());
        let id = self.actor.user_id(user.clone()).await.map_err(|e| unavailable(&e))?;
        let hash = match id {
            Some(id) => self.store.run(move |s| s.password_hash(id)).await.map_err(|e| unavailable(&e))?,
            None => None,
        };
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| decoy_hash().to_string());
        let _slot = self.verify_slots.acquire().await.map_err(|e| unavailable(&e))?;
        let ok = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
            .await
            .map_err(|e| unavailable(&e))?;
        if ok && known {
            Ok(user)
        } else {
            Err(LoginError::BadCredentials)
        }
    }
}

impl LoginMethod for PasswordLogin {
    fn form_fields(&self) -> &'static str {
        concat!(
            r#"<label>User <input name="username" autocomplete="username" required></label>"#,
            r#"<label>Password <input name="password" type="password" autocomplete="current-password" required></label>"#,
        )
    }

    fn authenticate<'a>(&'a self, form: &'a BTreeMap<String, String>) -> BoxFuture<'a, Result<String, LoginError>> {
        let user = form.get("username").cloned().unwrap_or_default();
        let password = form.get("password").cloned().unwrap_or_default();
        Box::pin(self.check(user, password))
    }
}
