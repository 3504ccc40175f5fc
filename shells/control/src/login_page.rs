//! The login pages: `/register/<token>` (an interactive registration waits for its user)
//! and `/check/<token>` (an SSH login held by a `check` rule). Server-rendered HTML, no
//! third-party assets. The form carries a CSRF token that must equal the value of an
//! HttpOnly, SameSite=Strict cookie set with the form (Secure when the server URL is
//! https); the person is identified by the [`LoginMethod`](crate::login::LoginMethod), and
//! the core decides the rest (`approve_login` / `approve_check` with that user as actor;
//! a check only by the owner of the source node).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;

use axum::extract::{Form, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::actor::PendingKind;
use crate::http::AppState;
use crate::login::LoginError;
use crate::os_random;

const COOKIE: &str = "meshcontrol_csrf";
/// Wrong logins on one link before it stops taking more (ask for a new link).
const MAX_FAILURES: u32 = 10;
/// Tokens whose failures are remembered; past it the oldest memory is dropped.
const MAX_TRACKED: usize = 10_000;

fn failures(app: &AppState, token: &str) -> u32 {
    app.login_failures.lock().map_or(MAX_FAILURES, |m| m.get(token).copied().unwrap_or(0))
}

fn fail(app: &AppState, token: &str) {
    if let Ok(mut m) = app.login_failures.lock() {
        if m.len() >= MAX_TRACKED && !m.contains_key(token) {
            m.clear();
        }
        *m.entry(token.to_string()).or_insert(0) += 1;
    }
}

pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub(crate) fn path(kind: PendingKind, token: &str) -> String {
    match kind {
        PendingKind::Login => format!("/register/{token}"),
        PendingKind::Check => format!("/check/{token}"),
    }
}

/// A page with the headers every login page carries (no framing, no caching, no referrer:
/// the URL holds the token).
pub(crate) fn page(status: StatusCode, title: &str, body: &str, cookie: Option<String>) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <meta name=\"viewport\" content=\"width=device-width\"><style>\
         body{{font-family:sans-serif;max-width:28em;margin:3em auto;padding:0 1em}}\
         label{{display:block;margin:.8em 0}}input{{display:block;width:100%;padding:.4em}}\
         button{{margin-top:1em;padding:.5em 1.5em}}</style></head>\
         <body><h1>{title}</h1>{body}</body></html>",
        title = escape(title)
    );
    let mut response = html_response(status, html);
    if let Some(cookie) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// The policy every page of the server has: nothing from elsewhere, no scripts, forms
/// only to this server, never framed.
pub(crate) const PAGE_CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'";

/// An HTML page with the headers every page of the server carries (no framing, no
/// caching, no referrer: URLs and pages hold tokens and secrets).
pub(crate) fn html_response(status: StatusCode, html: String) -> Response {
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_CSP));
    response
}

pub(crate) fn gone() -> Response {
    page(StatusCode::NOT_FOUND, "Link expired", "<p>This link is not valid any more: it expired or was used.</p>", None)
}

pub(crate) fn unavailable() -> Response {
    page(StatusCode::SERVICE_UNAVAILABLE, "Unavailable", "<p>The server is shutting down.</p>", None)
}

/// The form, with a fresh CSRF token and its cookie.
async fn form(app: &AppState, kind: PendingKind, token: &str, status: StatusCode, note: &str) -> Response {
    let info = match app.actor.pending(kind, token.to_string()).await {
        Ok(Some(info)) => info,
        Ok(None) => return gone(),
        Err(_) => return unavailable(),
    };
    let Ok(csrf) = os_random::token() else { return unavailable() };
    let action = path(kind, token);
    let cookie = format!(
        "{COOKIE}={csrf}; Path={action}; Max-Age=1800; HttpOnly; SameSite=Strict{}",
        if app.secure_cookies { "; Secure" } else { "" }
    );
    let who = match &info.owner {
        Some(owner) => format!("<p>Only {} may approve it.</p>", escape(owner)),
        None => String::new(),
    };
    let note = if note.is_empty() { String::new() } else { format!("<p><strong>{}</strong></p>", escape(note)) };
    // With single sign-on, its button comes first; local passwords stay below it.
    let sso = match &app.oidc {
        Some(_) => format!(
            "<form method=\"post\" action=\"{action}/sso\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <button type=\"submit\" id=\"sso\">Continue with single sign-on</button></form>\
             <p>Or with a local password:</p>",
            action = escape(&action),
        ),
        None => String::new(),
    };
    let body = format!(
        "<p>{desc}</p>{who}{note}{sso}<form method=\"post\" action=\"{action}\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">{fields}<button type=\"submit\">Approve</button></form>",
        desc = escape(&info.description),
        action = escape(&action),
        fields = app.login.form_fields(),
    );
    let mut response = page(status, "Log in to approve", &body, Some(cookie));
    if let Some(oidc) = &app.oidc {
        allow_forms_to(&mut response, &oidc.origin());
    }
    response
}

/// Lets the page's forms also go to `origin`: the SSO button's answer redirects to the
/// provider, and form-action covers redirects.
pub(crate) fn allow_forms_to(response: &mut Response, origin: &str) {
    let csp = PAGE_CSP.replace("form-action 'self'", &format!("form-action 'self' {origin}"));
    if let Ok(v) = HeaderValue::from_str(&csp) {
        response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, v);
    }
}

pub(crate) fn csrf_ok(headers: &HeaderMap, form: &BTreeMap<String, String>) -> bool {
    let Some(sent) = form.get("csrf").filter(|t| !t.is_empty()) else { return false };
    has_cookie(headers, COOKIE, sent)
}

/// Whether the request carries cookie `name` with value `expected` (compared in constant
/// time; every cookie of that name is looked at).
pub(crate) fn has_cookie(headers: &HeaderMap, name: &str, expected: &str) -> bool {
    let cookies = headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok());
    let mut found = false;
    for (n, value) in cookies.flat_map(|c| c.split(';')).filter_map(|pair| pair.trim().split_once('=')) {
        found |= n == name && bool::from(value.as_bytes().ct_eq(expected.as_bytes()));
    }
    found
}

async fn submit(
    app: AppState,
    kind: PendingKind,
    token: String,
    headers: HeaderMap,
    form: BTreeMap<String, String>,
) -> Response {
    if !csrf_ok(&headers, &form) {
        app.metrics.logins_refused.fetch_add(1, Relaxed);
        return page(
            StatusCode::FORBIDDEN,
            "Refused",
            "<p>The form expired or did not come from this server. Open the link again.</p>",
            None,
        );
    }
    // The link first: an unknown or used link is refused before any password is checked,
    // so the page is no oracle for passwords and bogus links cost no argon2 run.
    match app.actor.pending(kind, token.clone()).await {
        Ok(Some(_)) => {}
        Ok(None) => return gone(),
        Err(_) => return unavailable(),
    }
    if failures(&app, &token) >= MAX_FAILURES {
        app.metrics.logins_refused.fetch_add(1, Relaxed);
        return page(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many attempts",
            "<p>Too many wrong logins on this link. Start the login again for a new one.</p>",
            None,
        );
    }
    let user = match app.login.authenticate(&form).await {
        Ok(user) => user,
        Err(LoginError::BadCredentials) => {
            fail(&app, &token);
            app.metrics.logins_refused.fetch_add(1, Relaxed);
            tracing::info!(kind = ?kind, "login page: wrong credentials");
            return form_again(&app, kind, &token, "Wrong user name or password.").await;
        }
        Err(e) => {
            tracing::warn!(error = %e, "login page: cannot check the login");
            return unavailable();
        }
    };
    approve(&app, kind, &token, &user, None).await
}

/// `user` proved who they are (at `authenticated`, unix seconds; `None`: now): approve the
/// pending login or check as them.
pub(crate) async fn approve(
    app: &AppState,
    kind: PendingKind,
    token: &str,
    user: &str,
    authenticated: Option<u64>,
) -> Response {
    let user = user.to_string();
    match app.actor.approve(kind, token.to_string(), user.clone(), authenticated).await {
        Ok(Ok(())) => {
            app.metrics.logins_approved.fetch_add(1, Relaxed);
            tracing::info!(kind = ?kind, user, "login page: approved");
            let done = match kind {
                PendingKind::Login => "The node is registered. You can close this page.",
                PendingKind::Check => "The SSH login may proceed. You can close this page.",
            };
            page(StatusCode::OK, "Approved", &format!("<p>{done}</p>"), None)
        }
        Ok(Err(why)) => {
            app.metrics.logins_refused.fetch_add(1, Relaxed);
            tracing::info!(kind = ?kind, user, %why, "login page: refused");
            page(StatusCode::CONFLICT, "Not approved", &format!("<p>{}</p>", escape(&why)), None)
        }
        Err(_) => unavailable(),
    }
}

async fn form_again(app: &AppState, kind: PendingKind, token: &str, note: &str) -> Response {
    form(app, kind, token, StatusCode::UNAUTHORIZED, note).await
}

pub async fn register_get(State(app): State<AppState>, Path(token): Path<String>) -> Response {
    form(&app, PendingKind::Login, &token, StatusCode::OK, "").await
}

pub async fn register_post(
    State(app): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    submit(app, PendingKind::Login, token, headers, form).await
}

pub async fn check_get(State(app): State<AppState>, Path(token): Path<String>) -> Response {
    form(&app, PendingKind::Check, &token, StatusCode::OK, "").await
}

pub async fn check_post(
    State(app): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    submit(app, PendingKind::Check, token, headers, form).await
}
