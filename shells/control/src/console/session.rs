//! Console sessions: who signed in, for how long, and the CSRF token of their forms.
//!
//! A session is a random 256-bit token in a cookie (`meshcontrol_console`, Path=/admin,
//! HttpOnly, SameSite=Strict, Secure on https). The server keeps only its SHA-256, so the
//! map is no timing oracle for tokens and a memory dump holds no usable cookie. Every
//! form of a session carries the session's own CSRF token (a second random value, never
//! in a cookie), compared in constant time on every POST. Sessions live in memory: a
//! restart signs everyone out. They end after [`IDLE`] without a request, [`LIFETIME`] after
//! sign-in, or at sign-out.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::os_random::{self, RandomError};

pub const COOKIE: &str = "meshcontrol_console";
/// A session unused this long ends.
pub const IDLE: Duration = Duration::from_secs(3600);
/// A session ends this long after sign-in, used or not.
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at once; past it the one idle longest ends.
const MAX_SESSIONS: usize = 1024;
/// Wrong local sign-ins accepted in one [`FAILURE_WINDOW`] (all users together); past it
/// the form answers 429 until the window ends.
pub const MAX_FAILURES: u32 = 10;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// A signed-in admin, as a request sees it.
#[derive(Clone, Debug)]
pub struct Admin {
    /// The admin's name (`alice@example.com`, or `admin` for the local admin password).
    pub name: String,
    /// The CSRF token every form of this session carries.
    pub csrf: String,
    /// What the last action of this session said (shown once, on the next page).
    pub flash: Option<String>,
    key: [u8; 32],
}

impl Admin {
    /// The actor the audit log names for this admin's actions.
    pub fn actor(&self) -> String {
        format!("console:{}", self.name)
    }

    /// Whether a submitted form carries this session's CSRF token.
    pub fn csrf_ok(&self, form: &BTreeMap<String, String>) -> bool {
        form.get("csrf").is_some_and(|sent| bool::from(sent.as_bytes().ct_eq(self.csrf.as_bytes())))
    }
}

#[derive(Debug)]
struct Session {
    name: String,
    csrf: String,
    flash: Option<String>,
    created: Instant,
    used: Instant,
}

#[derive(Debug, Default)]
pub struct Sessions {
    sessions: Mutex<BTreeMap<[u8; 32], Session>>,
    /// The current window's start and its wrong sign-ins.
    failures: Mutex<Option<(Instant, u32)>>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn live(s: &Session, now: Instant) -> bool {
    now.duration_since(s.used) < IDLE && now.duration_since(s.created) < LIFETIME
}

impl Sessions {
    /// A new session for `name`: the cookie's value.
    pub fn create(&self, name: &str) -> Result<String, RandomError> {
        let token = os_random::token()?;
        let csrf = os_random::token()?;
        let now = Instant::now();
        if let Ok(mut map) = self.sessions.lock() {
            map.retain(|_, s| live(s, now));
            if map.len() >= MAX_SESSIONS {
                let oldest = map.iter().min_by_key(|(_, s)| s.used).map(|(k, _)| *k);
                if let Some(k) = oldest {
                    map.remove(&k);
                }
            }
            map.insert(digest(&token), Session { name: name.to_string(), csrf, flash: None, created: now, used: now });
        }
        Ok(token)
    }

    /// The admin whose live session cookie `headers` carry; the flash message is taken.
    pub fn admin(&self, headers: &HeaderMap) -> Option<Admin> {
        let now = Instant::now();
        let mut map = self.sessions.lock().ok()?;
        for token in cookie_values(headers, COOKIE) {
            let key = digest(token);
            let Some(s) = map.get_mut(&key) else { continue };
            if !live(s, now) {
                map.remove(&key);
                continue;
            }
            s.used = now;
            return Some(Admin { name: s.name.clone(), csrf: s.csrf.clone(), flash: s.flash.take(), key });
        }
        None
    }

    /// Shows `message` on the session's next page.
    pub fn flash(&self, admin: &Admin, message: String) {
        if let Some(s) = self.sessions.lock().ok().as_mut().and_then(|m| m.get_mut(&admin.key)) {
            s.flash = Some(message);
        }
    }

    pub fn end(&self, admin: &Admin) {
        if let Ok(mut map) = self.sessions.lock() {
            map.remove(&admin.key);
        }
    }

    /// Whether local sign-ins are refused for now (too many wrong ones lately).
    pub fn locked_out(&self) -> bool {
        let now = Instant::now();
        self.failures.lock().map_or(true, |f| {
            f.is_some_and(|(start, n)| now.duration_since(start) < FAILURE_WINDOW && n >= MAX_FAILURES)
        })
    }

    /// Counts a wrong local sign-in.
    pub fn failed(&self) {
        let now = Instant::now();
        if let Ok(mut f) = self.failures.lock() {
            *f = match *f {
                Some((start, n)) if now.duration_since(start) < FAILURE_WINDOW => Some((start, n.saturating_add(1))),
                _ => Some((now, 1)),
            };
        }
    }
}

/// The values of every cookie named `name` in `headers`.
fn cookie_values<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|c| c.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(move |(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// The `Set-Cookie` value for a session token (empty: sign-out).
pub fn cookie(token: &str, secure: bool) -> String {
    let age = if token.is_empty() { 0 } else { LIFETIME.as_secs() };
    format!(
        "{COOKIE}={token}; Path=/admin; Max-Age={age}; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_cookie(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(header::COOKIE, v);
        }
        h
    }

    #[test]
    fn a_session_is_found_by_its_cookie_only() {
        let sessions = Sessions::default();
        let token = sessions.create("alice@example.com").unwrap_or_else(|e| panic!("{e}"));
        let admin =
            sessions.admin(&with_cookie(&format!("other=1; {COOKIE}={token}"))).unwrap_or_else(|| panic!("no session"));
        assert_eq!(admin.name, "alice@example.com");
        assert_eq!(admin.actor(), "console:alice@example.com");
        assert!(sessions.admin(&with_cookie(&format!("{COOKIE}={token}x"))).is_none());
        assert!(sessions.admin(&with_cookie(&format!("x{COOKIE}={token}"))).is_none());
        assert!(sessions.admin(&HeaderMap::new()).is_none());
        let mut form = BTreeMap::new();
        assert!(!admin.csrf_ok(&form));
        form.insert("csrf".to_string(), admin.csrf.clone());
        assert!(admin.csrf_ok(&form));
        form.insert("csrf".to_string(), token.clone());
        assert!(!admin.csrf_ok(&form), "the session token is not the CSRF token");
        sessions.flash(&admin, "done".into());
        let again = sessions.admin(&with_cookie(&format!("{COOKIE}={token}"))).unwrap_or_else(|| panic!("gone"));
        assert_eq!(again.flash.as_deref(), Some("done"));
        sessions.end(&again);
        assert!(sessions.admin(&with_cookie(&format!("{COOKIE}={token}"))).is_none());
    }

    #[test]
    fn wrong_sign_ins_lock_the_form_for_a_while() {
        let sessions = Sessions::default();
        for _ in 0..MAX_FAILURES - 1 {
            sessions.failed();
        }
        assert!(!sessions.locked_out());
        sessions.failed();
        assert!(sessions.locked_out());
    }

    #[test]
    fn the_cookie_is_strict_and_http_only() {
        assert_eq!(
            cookie("t", true),
            "meshcontrol_console=t; Path=/admin; Max-Age=43200; HttpOnly; SameSite=Strict; Secure"
        );
        assert!(cookie("", false).contains("Max-Age=0"));
    }
}
