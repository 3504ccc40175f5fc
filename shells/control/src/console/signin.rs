//! Signing in to the console and out of it.
//!
//! The sign-in page carries a CSRF token that must equal an HttpOnly, SameSite=Strict
//! cookie set with it (the session does not exist yet, so the double-submit pattern of the
//! login pages). Single sign-on goes through the same relying party as registrations
//! ([`crate::oidc_page`]) with [`Purpose::Console`]; the callback lands in
//! [`finish_sso`]. Local sign-ins are argon2-checked and counted: after
//! [`session::MAX_FAILURES`] wrong ones in a minute the form answers 429 for the rest of
//! it. Every sign-in, refusal and sign-out goes into the audit log.

use std::collections::BTreeMap;

use axum::extract::{Form, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use mesh_core::control::server::audit_text;

use super::session::{self, Admin};
use crate::http::AppState;
use crate::login::{verify_password, LoginError};
use crate::login_page::{allow_forms_to, escape, has_cookie, html_response, page, unavailable};
use crate::oidc::{Identity, Purpose};
use crate::oidc_page::{redirect_to_provider, refused};
use crate::os_random;

const CSRF_COOKIE: &str = "meshcontrol_console_login";
/// The local admin's name, for `--console-password-file`.
pub const LOCAL_ADMIN: &str = "admin";

fn csrf_ok(headers: &HeaderMap, form: &BTreeMap<String, String>) -> bool {
    form.get("csrf").filter(|t| !t.is_empty()).is_some_and(|sent| has_cookie(headers, CSRF_COOKIE, sent))
}

/// `GET /admin/login`.
pub async fn form(State(app): State<AppState>, headers: HeaderMap) -> Response {
    if app.console_sessions.admin(&headers).is_some() {
        return see_other("/admin/machines", None);
    }
    sign_in_page(&app, StatusCode::OK, "")
}

fn sign_in_page(app: &AppState, status: StatusCode, note: &str) -> Response {
    let config = &app.console;
    if !config.enabled() {
        return page(
            StatusCode::NOT_FOUND,
            "Console not enabled",
            "<p>Nobody may sign in to this server's console. Start <code>meshcontrol serve</code> with \
             <code>--console-password-file</code>, <code>--console-admins</code> or \
             <code>--console-admin-groups</code>.</p>",
            None,
        );
    }
    let Ok(csrf) = os_random::token() else { return unavailable() };
    let cookie = format!(
        "{CSRF_COOKIE}={csrf}; Path=/admin/login; Max-Age=1800; HttpOnly; SameSite=Strict{}",
        if app.secure_cookies { "; Secure" } else { "" }
    );
    let note = if note.is_empty() {
        String::new()
    } else {
        format!("<p role=\"alert\"><strong>{}</strong></p>", escape(note))
    };
    let sso_possible = app.oidc.is_some() && (!config.admins.is_empty() || !config.admin_groups.is_empty());
    let sso = if sso_possible {
        format!(
            "<form method=\"post\" action=\"/admin/login/sso\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <button type=\"submit\" id=\"sso\">Sign in with single sign-on</button></form>"
        )
    } else {
        String::new()
    };
    let local = if config.password_hash.is_some() || !config.admins.is_empty() {
        format!(
            "{or}<form method=\"post\" action=\"/admin/login\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <label>User <input name=\"username\" autocomplete=\"username\" required></label>\
             <label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\
             <button type=\"submit\" id=\"local\">Sign in</button></form>",
            or = if sso.is_empty() { "" } else { "<p>Or with a local password:</p>" }
        )
    } else {
        String::new()
    };
    let body = format!("<p>The tailnet's admin console.</p>{note}{sso}{local}");
    let mut response = page(status, "Sign in to the console", &body, Some(cookie));
    if let (true, Some(oidc)) = (sso_possible, &app.oidc) {
        allow_forms_to(&mut response, &oidc.origin());
    }
    response
}

fn see_other(to: &'static str, cookie: Option<String>) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let h = response.headers_mut();
    h.insert(header::LOCATION, HeaderValue::from_static(to));
    if let Some(v) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.insert(header::SET_COOKIE, v);
    }
    response
}

fn forged() -> Response {
    page(
        StatusCode::FORBIDDEN,
        "Refused",
        "<p>The form expired or did not come from this server. <a href=\"/admin/login\">Sign in again</a>.</p>",
        None,
    )
}

/// `POST /admin/login`: a local password.
pub async fn local(
    State(app): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    if !csrf_ok(&headers, &form) {
        return forged();
    }
    if app.console_sessions.locked_out() {
        return sign_in_page(&app, StatusCode::TOO_MANY_REQUESTS, "Too many wrong sign-ins. Wait a minute.");
    }
    let user = form.get("username").map(|u| u.trim().to_string()).unwrap_or_default();
    let password = form.get("password").cloned().unwrap_or_default();
    let ok = if user == LOCAL_ADMIN {
        match app.console.password_hash.clone() {
            Some(hash) => tokio::task::spawn_blocking(move || verify_password(&password, &hash)).await.unwrap_or(false),
            None => false,
        }
    } else if app.console.admins.contains(&user) {
        match app.login.authenticate(&form).await {
            Ok(name) => name == user,
            Err(LoginError::BadCredentials) => false,
            Err(e) => {
                tracing::warn!(error = %e, "console: cannot check a sign-in");
                return unavailable();
            }
        }
    } else {
        // Not an admin: the same answer as a wrong password, after the same work.
        let _ = app.login.authenticate(&form).await;
        false
    };
    if !ok {
        app.console_sessions.failed();
        tracing::info!(user = %audit_text(&user), "console: wrong sign-in");
        if app.actor.audit("console", "console-sign-in-refused", audit_text(&user)).await.is_err() {
            return unavailable();
        }
        return sign_in_page(&app, StatusCode::UNAUTHORIZED, "Wrong user name or password.");
    }
    start_session(&app, &user, "local password").await
}

/// A session for `name`: its cookie, the audit entry, and on to the machines.
async fn start_session(app: &AppState, name: &str, how: &str) -> Response {
    let Ok(token) = app.console_sessions.create(name) else { return unavailable() };
    if app.actor.audit(&format!("console:{name}"), "console-sign-in", format!("{name} by {how}")).await.is_err() {
        return unavailable();
    }
    tracing::info!(admin = name, how, "console: signed in");
    let cookie = session::cookie(&token, app.secure_cookies);
    if how == "single sign-on" {
        // This answer ends a redirect chain that began at the provider, so the browser
        // would not send the new SameSite=Strict cookie on a redirect; a page of our own
        // moves on instead (its navigation starts here).
        let mut response = html_response(
            StatusCode::OK,
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta http-equiv=\"refresh\" content=\"0;url=/admin/machines\"><title>Signed in</title></head>\
             <body><p>Signed in. <a href=\"/admin/machines\">Continue to the console</a>.</p></body></html>"
                .into(),
        );
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            response.headers_mut().insert(header::SET_COOKIE, v);
        }
        return response;
    }
    see_other("/admin/machines", Some(cookie))
}

/// `POST /admin/login/sso`: off to the provider.
pub async fn sso(
    State(app): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    let Some(oidc) = app.oidc.clone() else { return refused(StatusCode::NOT_FOUND, "Single sign-on is not set up.") };
    if !csrf_ok(&headers, &form) {
        return forged();
    }
    redirect_to_provider(&app, &oidc, Purpose::Console).await
}

/// The provider vouched for `identity` (allow lists passed): a session if they are an admin.
pub async fn finish_sso(app: &AppState, identity: &Identity) -> Response {
    if !app.console.is_sso_admin(&identity.user, &identity.groups) {
        tracing::info!(user = %identity.user, "console: not an admin");
        if app
            .actor
            .audit("console", "console-sign-in-refused", format!("{} is not an admin", identity.user))
            .await
            .is_err()
        {
            return unavailable();
        }
        return refused(StatusCode::FORBIDDEN, &format!("{} may not use this console.", identity.user));
    }
    start_session(app, &identity.user, "single sign-on").await
}

/// `POST /admin/logout`.
pub async fn logout(
    State(app): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    let admin: Admin = match super::form_admin(&app, &headers, &form) {
        Ok(admin) => admin,
        Err(response) => return *response,
    };
    app.console_sessions.end(&admin);
    if app.actor.audit(&admin.actor(), "console-sign-out", admin.name.clone()).await.is_err() {
        return unavailable();
    }
    see_other("/admin/login", Some(session::cookie("", app.secure_cookies)))
}
