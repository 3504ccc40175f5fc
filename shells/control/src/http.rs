//! The routes of the one TCP port (axum over hyper 1; the accept loop is
//! [`crate::http_server`]), the control protocol's upgrade among them.
//!
//! | route | what |
//! |---|---|
//! | `GET /health` | `200 ok` |
//! | `GET /metrics` | Prometheus text ([`crate::metrics`]) |
//! | `GET /key` | the server's public key: 64 lowercase hex characters and a newline |
//! | `POST /control` + `Upgrade: meshcontrol-v1` | `101`, then the control channel ([`crate::connection`]) |
//! | `POST /api/v1/<op>` | the admin API ([`crate::admin_api`]), `Authorization: Bearer mskapi-...` |
//! | `GET`/`POST /register/<token>`, `/check/<token>` | the login pages ([`crate::login_page`]) |
//! | `POST /register/<token>/sso`, `/check/<token>/sso`, `GET /oidc/callback` | single sign-on ([`crate::oidc_page`]) |
//! | `/admin/...` | the admin console ([`crate::console`]) |

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hyper_util::rt::TokioIo;
use mesh_core::control::server::ConnId;
use mesh_core::control::upgrade::{is_upgrade_request, UPGRADE_PROTOCOL};
use mesh_core::wireguard::PrivateKey;
use tokio::sync::Semaphore;

use crate::actor::ActorHandle;
use crate::admin_api::{AdminReply, AdminRequest, MAX_FRAME};
use crate::admin_dispatch::dispatch;
use crate::console::{ConsoleConfig, Sessions};
use crate::login::LoginMethod;
use crate::metrics::Metrics;
use crate::oidc::Oidc;
use crate::storage::StoreHandle;
use crate::{connection, console, login_page, oidc_page, os_random};

/// What every handler shares.
#[derive(Clone, Debug)]
pub struct AppState {
    pub actor: ActorHandle,
    pub store: StoreHandle,
    pub metrics: Arc<Metrics>,
    pub server_key: Arc<PrivateKey>,
    pub next_conn: Arc<AtomicU64>,
    pub login: Arc<dyn LoginMethod>,
    /// Single sign-on, when configured ([`crate::oidc_page`]).
    pub oidc: Option<Arc<Oidc>>,
    /// The server URL is https: cookies are `Secure`.
    pub secure_cookies: bool,
    /// One permit per open control connection ([`MAX_CONTROL_CONNECTIONS`]).
    pub control_slots: Arc<Semaphore>,
    /// Wrong logins per page token ([`crate::login_page`] stops after a few).
    pub login_failures: Arc<Mutex<BTreeMap<String, u32>>>,
    /// Who may sign in to the admin console, and who has ([`crate::console`]).
    pub console: Arc<ConsoleConfig>,
    pub console_sessions: Arc<Sessions>,
}

/// Control connections open at once; past it the upgrade is answered 503.
pub const MAX_CONTROL_CONNECTIONS: usize = 16 * 1024;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/key", get(key))
        .route("/control", post(control))
        .route("/api/v1/{*op}", post(api).layer(DefaultBodyLimit::max(MAX_FRAME)))
        .route("/register/{token}", get(login_page::register_get).post(login_page::register_post))
        .route("/check/{token}", get(login_page::check_get).post(login_page::check_post))
        .route("/register/{token}/sso", post(oidc_page::start_register))
        .route("/check/{token}/sso", post(oidc_page::start_check))
        .route("/oidc/callback", get(oidc_page::callback))
        .merge(console::routes())
        .with_state(state)
}

async fn metrics(State(app): State<AppState>) -> Response {
    match app.actor.gauges().await {
        Ok(gauges) => {
            let mut r = app.metrics.render(gauges).into_response();
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
            r
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

async fn key(State(app): State<AppState>) -> String {
    format!("{}\n", os_random::hex(&app.server_key.public_key().0))
}

/// The control upgrade: answer 101 and serve the channel on the upgraded connection.
/// Bytes the node sent behind its request (record 1) come first out of the upgraded IO.
async fn control(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
) -> Response {
    let headers = req.headers().iter().map(|(n, v)| (n.as_str(), v.as_bytes()));
    if !is_upgrade_request(req.method().as_str(), req.uri().path(), headers) {
        return (StatusCode::BAD_REQUEST, format!("expected Upgrade: {UPGRADE_PROTOCOL}\n")).into_response();
    }
    let Ok(permit) = app.control_slots.clone().try_acquire_owned() else {
        tracing::warn!(%peer, "too many control connections; refusing an upgrade");
        return (StatusCode::SERVICE_UNAVAILABLE, "too many control connections\n").into_response();
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let conn = ConnId(app.next_conn.fetch_add(1, Relaxed));
    tracing::debug!(conn = conn.0, %peer, "control upgrade");
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let key = PrivateKey::clone(&app.server_key);
                connection::serve(TokioIo::new(upgraded), conn, key, app.actor, app.metrics).await;
            }
            Err(e) => tracing::info!(conn = conn.0, error = %e, "control upgrade failed"),
        }
        drop(permit);
    });
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = response.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static(UPGRADE_PROTOCOL));
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    response
}

fn error(status: StatusCode, why: impl Into<String>) -> Response {
    (status, Json(AdminReply::Error(why.into()))).into_response()
}

/// `POST /api/v1/<op>` with the request's `args` as the JSON body (empty: `{}`).
async fn api(State(app): State<AppState>, Path(op): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(secret) = bearer else {
        return error(StatusCode::UNAUTHORIZED, "an API key is needed (Authorization: Bearer mskapi-...)");
    };
    let id = match app.actor.verify_api_key(secret.to_string()).await {
        Ok(Some(id)) => id,
        Ok(None) => return error(StatusCode::UNAUTHORIZED, "the API key is not valid"),
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let args: serde_json::Value = if body.iter().all(u8::is_ascii_whitespace) {
        serde_json::json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")),
        }
    };
    let request: AdminRequest = match serde_json::from_value(serde_json::json!({"op": op, "args": args})) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("not an admin request: {e}")),
    };
    match dispatch(&app.actor, &app.store, format!("api-key:{id}"), request).await {
        AdminReply::Ok(value) => Json(value).into_response(),
        AdminReply::Error(why) => error(StatusCode::UNPROCESSABLE_ENTITY, why),
    }
}
