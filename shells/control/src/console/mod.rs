//! The admin console: a few server-rendered pages under `/admin` for the people who run
//! the tailnet. No scripts, no build step, nothing from elsewhere; every page is plain
//! HTML with the same security headers as the login pages, every change is a POST form
//! that carries the session's CSRF token, and every change goes through the admin API
//! ([`crate::admin_dispatch`]) as the actor `console:<admin>`, so the core decides and the
//! audit log names who did it.
//!
//! | route | page |
//! |---|---|
//! | `GET /admin/login`, `POST /admin/login`, `POST /admin/login/sso`, `POST /admin/logout` | sign-in ([`signin`]) |
//! | `GET /admin/machines`, `POST /admin/machines/{id}/{expire,delete,rename,tags}` | machines ([`machines`]) |
//! | `GET /admin/users`, `POST /admin/users/{create,delete,passwd}` | users ([`users`]) |
//! | `GET /admin/keys`, `POST /admin/keys/create`, `POST /admin/keys/{id}/revoke` | pre-auth keys ([`keys`]) |
//! | `GET /admin/policy`, `POST /admin/policy` | the policy editor with its preview ([`policy`]) |
//! | `GET /admin/pending`, `POST /admin/pending/{approve,reject}` | registrations and check holds ([`pending`]) |
//! | `GET /admin/audit` | the audit log with filters ([`audit`]) |
//!
//! Who may sign in ([`ConsoleConfig`]): the users of `--console-admins` and the members of
//! the IdP groups of `--console-admin-groups` through single sign-on, the listed users
//! also with their local password, and `admin` with the password of
//! `--console-password-file`.

pub mod audit;
pub mod keys;
pub mod machines;
pub mod pending;
pub mod policy;
pub mod session;
pub mod signin;
pub mod users;

use std::collections::BTreeMap;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::admin_api::{AdminReply, AdminRequest};
use crate::admin_dispatch::dispatch;
use crate::http::AppState;
use crate::login_page::{escape, html_response};
pub use session::{Admin, Sessions};

/// Who may sign in to the console.
#[derive(Clone, Debug, Default)]
pub struct ConsoleConfig {
    /// Users who may sign in, through single sign-on or their local password.
    pub admins: Vec<String>,
    /// IdP groups whose members may sign in through single sign-on.
    pub admin_groups: Vec<String>,
    /// The argon2 hash of the local admin password (the user `admin`).
    pub password_hash: Option<String>,
}

/// What `meshcontrol serve --console-*` says, before the password file is read.
#[derive(Clone, Debug, Default)]
pub struct ConsoleOptions {
    pub admins: Vec<String>,
    pub admin_groups: Vec<String>,
    /// A file holding the local admin password (its first line).
    pub password_file: Option<std::path::PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{0}: the console password is empty")]
    EmptyPassword(String),
    #[error("hashing the console password: {0}")]
    Hash(#[from] crate::login::HashError),
}

impl ConsoleOptions {
    /// Reads the password file (its first line is the password) and hashes it, so the
    /// server keeps no plain password in memory after start.
    pub fn load(self) -> Result<ConsoleConfig, ConsoleError> {
        let password_hash = match &self.password_file {
            None => None,
            Some(path) => {
                let shown = path.display().to_string();
                let text = zeroize::Zeroizing::new(
                    std::fs::read_to_string(path)
                        .map_err(|source| ConsoleError::Read { path: shown.clone(), source })?,
                );
                let password = text.lines().next().unwrap_or_default();
                if password.is_empty() {
                    return Err(ConsoleError::EmptyPassword(shown));
                }
                Some(crate::login::hash_password(password)?)
            }
        };
        Ok(ConsoleConfig { admins: self.admins, admin_groups: self.admin_groups, password_hash })
    }
}

impl ConsoleConfig {
    /// Whether anyone at all can sign in.
    pub fn enabled(&self) -> bool {
        !self.admins.is_empty() || !self.admin_groups.is_empty() || self.password_hash.is_some()
    }

    /// Whether a person the provider vouched for is an admin.
    pub fn is_sso_admin(&self, user: &str, groups: &[String]) -> bool {
        self.admins.iter().any(|a| a == user) || groups.iter().any(|g| self.admin_groups.contains(g))
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin", get(|| async { Redirect::to("/admin/machines") }))
        .route("/admin/", get(|| async { Redirect::to("/admin/machines") }))
        .route("/admin/login", get(signin::form).post(signin::local))
        .route("/admin/login/sso", post(signin::sso))
        .route("/admin/logout", post(signin::logout))
        .route("/admin/machines", get(machines::page))
        .route("/admin/machines/{id}/{action}", post(machines::act))
        .route("/admin/users", get(users::page))
        .route("/admin/users/{action}", post(users::act))
        .route("/admin/keys", get(keys::page))
        .route("/admin/keys/create", post(keys::create))
        .route("/admin/keys/{id}/revoke", post(keys::revoke))
        .route("/admin/policy", get(policy::page).post(policy::submit))
        .route("/admin/pending", get(pending::page))
        .route("/admin/pending/{action}", post(pending::act))
        .route("/admin/audit", get(audit::page))
}

/// The pages of the navigation bar: path and label.
const NAV: [(&str, &str); 6] = [
    ("/admin/machines", "Machines"),
    ("/admin/users", "Users"),
    ("/admin/keys", "Keys"),
    ("/admin/policy", "Policy"),
    ("/admin/pending", "Pending"),
    ("/admin/audit", "Audit log"),
];

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#1b1b1b}\
    header{background:#20305a;color:#fff;padding:.6em 1.2em;display:flex;gap:1.2em;align-items:center;flex-wrap:wrap}\
    header a{color:#fff}header a[aria-current]{font-weight:bold;text-decoration:none;border-bottom:2px solid #fff}\
    header nav{display:flex;gap:1em;flex-wrap:wrap}header form{margin-left:auto}main{padding:1em 1.2em;max-width:80em}\
    table{border-collapse:collapse;width:100%;margin:1em 0}th,td{border-bottom:1px solid #ccc;padding:.35em .5em;text-align:left;vertical-align:top}\
    th{background:#f0f2f7}form.inline{display:inline-flex;gap:.3em;margin:.1em .3em .1em 0}\
    input,select,button{font:inherit;padding:.25em .5em}textarea{width:100%;font-family:monospace;font-size:.9em}\
    .notice{background:#e6f4ea;border-left:4px solid #2e7d32;padding:.5em 1em}\
    .error{background:#fdecea;border-left:4px solid #c62828;padding:.5em 1em;white-space:pre-wrap}\
    .secret{font-family:monospace;font-size:1.1em;background:#fff8e1;padding:.5em 1em;border:1px dashed #b08800}\
    pre{background:#f6f8fa;padding:.5em 1em;overflow:auto}.add{color:#1b5e20}.del{color:#b71c1c}\
    .online{color:#2e7d32}.offline{color:#757575}label{margin-right:.8em}";

/// A console page for a signed-in admin: the navigation, the flash message, `body`.
pub fn frame(admin: &Admin, active: &str, title: &str, body: &str) -> Response {
    frame_with(admin, active, title, body, StatusCode::OK)
}

pub fn frame_with(admin: &Admin, active: &str, title: &str, body: &str, status: StatusCode) -> Response {
    let nav: String = NAV
        .iter()
        .map(|(path, label)| {
            let current = if *path == active { " aria-current=\"page\"" } else { "" };
            format!("<a href=\"{path}\"{current}>{label}</a>")
        })
        .collect();
    let flash = match &admin.flash {
        Some(message) => format!("<p class=\"notice\" role=\"status\">{}</p>", escape(message)),
        None => String::new(),
    };
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title} · meshcontrol</title>\
         <meta name=\"viewport\" content=\"width=device-width\"><style>{STYLE}</style></head><body>\
         <header><strong>meshcontrol</strong><nav aria-label=\"Console\">{nav}</nav>\
         <form method=\"post\" action=\"/admin/logout\">{csrf}<span>{who}</span> <button type=\"submit\">Sign out</button></form></header>\
         <main><h1>{title}</h1>{flash}{body}</main></body></html>",
        title = escape(title),
        csrf = csrf_field(admin),
        who = escape(&admin.name),
    );
    html_response(status, html)
}

/// The hidden CSRF field every form of a session carries.
pub fn csrf_field(admin: &Admin) -> String {
    format!("<input type=\"hidden\" name=\"csrf\" value=\"{}\">", escape(&admin.csrf))
}

/// A one-button form posting to `action`.
pub fn button(admin: &Admin, action: &str, label: &str, hidden: &[(&str, &str)]) -> String {
    let fields: String = hidden
        .iter()
        .map(|(n, v)| format!("<input type=\"hidden\" name=\"{}\" value=\"{}\">", escape(n), escape(v)))
        .collect();
    format!(
        "<form class=\"inline\" method=\"post\" action=\"{}\">{}{fields}<button type=\"submit\">{}</button></form>",
        escape(action),
        csrf_field(admin),
        escape(label)
    )
}

/// The signed-in admin, or the answer to give instead (to the sign-in page).
pub fn signed_in(app: &AppState, headers: &HeaderMap) -> Result<Admin, Box<Response>> {
    app.console_sessions.admin(headers).ok_or_else(|| Box::new(Redirect::to("/admin/login").into_response()))
}

/// The signed-in admin of a form whose CSRF token is theirs, or the refusal.
pub fn form_admin(
    app: &AppState,
    headers: &HeaderMap,
    form: &BTreeMap<String, String>,
) -> Result<Admin, Box<Response>> {
    let admin = signed_in(app, headers)?;
    if !admin.csrf_ok(form) {
        tracing::info!(admin = %admin.name, "console: a form without this session's CSRF token");
        return Err(Box::new(html_response(
            StatusCode::FORBIDDEN,
            "<!doctype html><html lang=\"en\"><title>Refused</title><h1>Refused</h1>\
             <p>The form did not come from this console session. <a href=\"/admin\">Back to the console</a>.</p>"
                .into(),
        )));
    }
    Ok(admin)
}

/// Runs an admin request as `admin`.
pub async fn run(app: &AppState, admin: &Admin, request: AdminRequest) -> Result<Value, String> {
    match dispatch(&app.actor, &app.store, admin.actor(), request).await {
        AdminReply::Ok(value) => Ok(value),
        AdminReply::Error(why) => Err(why),
    }
}

/// Runs a read-only request and decodes its answer.
pub async fn fetch<T: DeserializeOwned>(app: &AppState, admin: &Admin, request: AdminRequest) -> Result<T, String> {
    let value = run(app, admin, request).await?;
    serde_json::from_value(value).map_err(|e| format!("unexpected answer: {e}"))
}

/// After a change: remember what it said for the next page, and go there (POST, then
/// redirect, then GET: a reload does not repeat the change).
pub fn done(app: &AppState, admin: &Admin, to: &str, result: Result<String, String>) -> Response {
    let message = match result {
        Ok(message) => message,
        Err(why) => format!("Refused: {why}"),
    };
    app.console_sessions.flash(admin, message);
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(location) = HeaderValue::from_str(to) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// A page that could not be built (the server is stopping, usually).
pub fn failed(admin: &Admin, active: &str, title: &str, why: &str) -> Response {
    frame_with(
        admin,
        active,
        title,
        &format!("<p class=\"error\" role=\"alert\">{}</p>", escape(why)),
        StatusCode::SERVICE_UNAVAILABLE,
    )
}

/// `YYYY-MM-DD HH:MM` UTC, in a `<time>` element.
pub fn time(unix: u64) -> String {
    format!("<time>{} UTC</time>", crate::admin_render::show_time(unix))
}
