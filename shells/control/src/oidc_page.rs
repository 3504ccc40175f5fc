//! Single sign-on on the login pages: `POST /register/<token>/sso` and
//! `POST /check/<token>/sso` (the login page's button, CSRF-checked like its password form)
//! send the browser to the identity provider; `GET /oidc/callback` takes it back, checks
//! that the `state` is one this browser started (a cookie named after the state, HttpOnly,
//! SameSite=Lax so it comes back on the provider's redirect), lets [`crate::oidc`] verify
//! the ID token, creates the user on a first registration, and approves the registration or
//! the check as that user. A check is approved only for the owner of the source node (the
//! actor enforces it) and only with a fresh `auth_time` (the flow asked for `max_age`).
//! Before approving, the ID token's group claim is recorded for the user (see
//! [`record_groups`]), so the node a registration creates is compiled with them.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;

use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::actor::PendingKind;
use crate::admin_api::AdminRequest;
use crate::console;
use crate::http::AppState;
use crate::login_page::{approve, csrf_ok, escape, gone, has_cookie, page, unavailable};
use crate::oidc::{Identity, Oidc, OidcError, Purpose, FLOW_TTL};

/// The state cookie's name for one flow (so logins in several tabs do not collide).
fn cookie_name(state: &str) -> String {
    let tag: String = state.chars().filter(char::is_ascii_alphanumeric).take(12).collect();
    format!("meshcontrol_oidc_{tag}")
}

pub(crate) fn refused(status: StatusCode, why: &str) -> Response {
    page(status, "Login failed", &format!("<p>{}</p>", escape(why)), None)
}

pub async fn start_register(
    State(app): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    start(app, PendingKind::Login, token, headers, form).await
}

pub async fn start_check(
    State(app): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    start(app, PendingKind::Check, token, headers, form).await
}

/// The login page's single sign-on button.
async fn start(
    app: AppState,
    kind: PendingKind,
    token: String,
    headers: HeaderMap,
    form: BTreeMap<String, String>,
) -> Response {
    let Some(oidc) = app.oidc.clone() else { return refused(StatusCode::NOT_FOUND, "Single sign-on is not set up.") };
    if !csrf_ok(&headers, &form) {
        app.metrics.logins_refused.fetch_add(1, Relaxed);
        return refused(
            StatusCode::FORBIDDEN,
            "The form expired or did not come from this server. Open the link again.",
        );
    }
    match app.actor.pending(kind, token.clone()).await {
        Ok(Some(_)) => {}
        Ok(None) => return gone(),
        Err(_) => return unavailable(),
    }
    redirect_to_provider(&app, &oidc, Purpose::Pending { kind, token }).await
}

/// Starts a flow for `purpose`: the state cookie, and a redirect to the provider.
pub(crate) async fn redirect_to_provider(app: &AppState, oidc: &Oidc, purpose: Purpose) -> Response {
    let (url, state) = match oidc.start(purpose).await {
        Ok(started) => started,
        Err(e) => {
            tracing::warn!(error = %e, "single sign-on: cannot start");
            return refused(StatusCode::BAD_GATEWAY, &e.to_string());
        }
    };
    let cookie = format!(
        "{}={state}; Path=/oidc/callback; Max-Age={}; HttpOnly; SameSite=Lax{}",
        cookie_name(&state),
        FLOW_TTL.as_secs(),
        if app.secure_cookies { "; Secure" } else { "" }
    );
    let mut response = StatusCode::SEE_OTHER.into_response();
    let h = response.headers_mut();
    if let (Ok(location), Ok(cookie)) = (HeaderValue::from_str(&url), HeaderValue::from_str(&cookie)) {
        h.insert(header::LOCATION, location);
        h.insert(header::SET_COOKIE, cookie);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// Whether the browser holds the cookie of `state` (set when this browser started it).
fn state_cookie_ok(headers: &HeaderMap, state: &str) -> bool {
    has_cookie(headers, &cookie_name(state), state)
}

/// The provider sends the browser back here.
pub async fn callback(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let Some(oidc) = app.oidc.clone() else { return refused(StatusCode::NOT_FOUND, "Single sign-on is not set up.") };
    let state = query.get("state").map(String::as_str).unwrap_or_default();
    if state.is_empty() || !state_cookie_ok(&headers, state) {
        app.metrics.logins_refused.fetch_add(1, Relaxed);
        tracing::info!("single sign-on: state mismatch");
        return refused(StatusCode::BAD_REQUEST, &OidcError::UnknownState.to_string());
    }
    if let Some(error) = query.get("error") {
        // The flow is over either way; forget it.
        let _ = oidc.finish(state, "").await;
        let detail = query.get("error_description").map_or(String::new(), |d| format!(": {d}"));
        return refused(StatusCode::UNAUTHORIZED, &format!("The identity provider said {error}{detail}."));
    }
    let code = query.get("code").map(String::as_str).unwrap_or_default();
    let identity = match oidc.finish(state, code).await {
        Ok(identity) => identity,
        Err(e) => {
            app.metrics.logins_refused.fetch_add(1, Relaxed);
            tracing::info!(error = %e, "single sign-on: refused");
            let status = match e {
                OidcError::UnknownState => StatusCode::BAD_REQUEST,
                OidcError::Provider(_) | OidcError::Config(_) => StatusCode::BAD_GATEWAY,
                _ => StatusCode::UNAUTHORIZED,
            };
            return refused(status, &e.to_string());
        }
    };
    let mut response = match identity.purpose.clone() {
        Purpose::Pending { kind, token } => finish_pending(&app, kind, &token, &identity).await,
        Purpose::Console => console::signin::finish_sso(&app, &identity).await,
    };
    // The cookie has done its work.
    let expired = format!("{}=; Path=/oidc/callback; Max-Age=0; HttpOnly; SameSite=Lax", cookie_name(state));
    if let Ok(v) = HeaderValue::from_str(&expired) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

/// A verified login for a pending registration or check: approve it as `user`.
async fn finish_pending(app: &AppState, kind: PendingKind, token: &str, identity: &Identity) -> Response {
    let user = identity.user.as_str();
    if kind == PendingKind::Login {
        // A first login makes the user (named by the provider, allowed by the lists).
        match app.actor.user_id(user.to_string()).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                let request = AdminRequest::UsersCreate { name: user.to_string() };
                match app.actor.admin("oidc".into(), request).await {
                    Ok(Ok(_)) => tracing::info!(user, "single sign-on: new user"),
                    Ok(Err(why)) => return refused(StatusCode::CONFLICT, &why),
                    Err(_) => return unavailable(),
                }
            }
            Err(_) => return unavailable(),
        }
    }
    if let Err(response) = record_groups(app, identity).await {
        return response;
    }
    approve(app, kind, token, user, identity.auth_time).await
}

/// Records the verified ID token's group claim for its user: the most recent sign-on says
/// which declared policy groups the IdP puts the user in (the core ignores values that are
/// no group names and bounds the rest). Someone who is not a user (a check by a stranger)
/// changes nothing here; the approval refuses them.
async fn record_groups(app: &AppState, identity: &Identity) -> Result<(), Response> {
    match app.actor.set_user_groups(identity.user.clone(), identity.groups.clone()).await {
        Ok(Ok(true)) => {
            tracing::info!(user = %identity.user, claimed = identity.groups.len(), "single sign-on: groups changed")
        }
        Ok(Ok(false)) => {}
        Ok(Err(why)) => tracing::info!(user = %identity.user, %why, "single sign-on: groups not recorded"),
        Err(_) => return Err(unavailable()),
    }
    Ok(())
}
