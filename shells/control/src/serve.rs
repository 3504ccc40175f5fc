//! `meshcontrol serve`: the state directory, the server key, the database, the actor that
//! owns the core, the admin socket and the one TCP port; runs until SIGINT/SIGTERM or a
//! fatal error.
//!
//! The state directory (mode 0700 when created) holds `server.key`, `meshcontrol.db` (with
//! its WAL files) and `admin.sock`. Once the port is bound, one line goes to standard
//! output: `listening on http://ADDR:PORT` (with the real port when `--listen` said 0).

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use mesh_core::control::server::{ControlServer, ServerConfig};
use thiserror::Error;
use tokio::sync::Semaphore;

use crate::actor::{Actor, ActorError};
use crate::clock::{unix_now, Clock};
use crate::console::{ConsoleError, ConsoleOptions};
use crate::http::{router, AppState, MAX_CONTROL_CONNECTIONS};
use crate::login::PasswordLogin;
use crate::metrics::Metrics;
use crate::oidc::{Oidc, OidcConfig, OidcError};
use crate::storage::sqlite::SqliteStore;
use crate::storage::{StoreError, StoreHandle};
use crate::{admin_socket, http_server, os_random, server_key};

#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub state_dir: PathBuf,
    pub listen: SocketAddr,
    /// How nodes and people reach the server (login links); default `http://<listen>`.
    pub server_url: Option<String>,
    pub dns_domain: Option<String>,
    /// Single sign-on; `None`: local passwords only.
    pub oidc: Option<OidcConfig>,
    /// Who may sign in to the admin console.
    pub console: ConsoleOptions,
}

#[derive(Debug, Error)]
pub enum ServeError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error(transparent)]
    Key(#[from] server_key::KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the stored policy does not parse: {0}")]
    Policy(#[from] mesh_core::policy::PolicyError),
    #[error(transparent)]
    Random(#[from] os_random::RandomError),
    #[error(transparent)]
    Socket(#[from] admin_socket::SocketError),
    #[error(transparent)]
    Actor(#[from] ActorError),
    #[error("the control server stopped")]
    ActorGone,
    #[error(transparent)]
    Oidc(#[from] OidcError),
    #[error(transparent)]
    Console(#[from] ConsoleError),
}

fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> ServeError + '_ {
    move |source| ServeError::Io { path: path.display().to_string(), source }
}

pub async fn run(config: ServeConfig) -> Result<(), ServeError> {
    let console = config.console.clone().load()?;
    if !console.enabled() {
        tracing::info!(
            "the admin console is off (no --console-password-file, --console-admins or --console-admin-groups)"
        );
    }
    let dir = &config.state_dir;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io(dir))?;
    let key = server_key::load_or_create(&dir.join("server.key"))?;
    let store = StoreHandle::spawn(Box::new(SqliteStore::open(&dir.join("meshcontrol.db"))?))?;
    let state = store.run(|s| s.load()).await?;
    tracing::info!(users = state.users.len(), nodes = state.nodes.len(), "loaded the database");

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Io { path: config.listen.to_string(), source })?;
    let local = listener.local_addr().map_err(|source| ServeError::Io { path: config.listen.to_string(), source })?;
    let server_url = config.server_url.clone().unwrap_or_else(|| format!("http://{local}"));
    if config.server_url.is_none() && local.ip().is_unspecified() {
        tracing::warn!(%server_url, "no --server-url: login links name an address nobody can reach; set it");
    }
    let mut server_config = ServerConfig { server_url: server_url.clone(), ..ServerConfig::default() };
    if let Some(domain) = &config.dns_domain {
        server_config.dns_domain = domain.clone();
    }
    let server = ControlServer::new(server_config, os_random::bytes::<32>()?, state, unix_now())?;

    let metrics = Arc::new(Metrics::default());
    let (actor, handle) = Actor::new(server, store.clone(), Clock::new(), metrics.clone());
    let mut actor_task = tokio::spawn(actor.run());

    let socket = admin_socket::bind(&dir.join("admin.sock"))?;
    tokio::spawn(admin_socket::serve(socket, handle.clone(), store.clone()));

    let oidc = match config.oidc.clone() {
        Some(c) => {
            let oidc = Oidc::new(c, &server_url).await?;
            tracing::info!(issuer = %oidc.config().issuer, "single sign-on through OpenID Connect");
            Some(Arc::new(oidc))
        }
        None => None,
    };
    let app = AppState {
        oidc,
        actor: handle.clone(),
        store: store.clone(),
        metrics,
        server_key: Arc::new(key),
        next_conn: Arc::new(AtomicU64::new(1)),
        login: Arc::new(PasswordLogin::new(handle.clone(), store.clone())),
        secure_cookies: server_url.starts_with("https://"),
        control_slots: Arc::new(Semaphore::new(MAX_CONTROL_CONNECTIONS)),
        login_failures: Arc::default(),
        console: Arc::new(console),
        console_sessions: Arc::default(),
    };
    let public = os_random::hex(&app.server_key.public_key().0);
    tracing::info!(%local, %server_url, server_key = %public, "serving");
    let mut out = std::io::stdout();
    let _ = writeln!(out, "listening on http://{local}").and_then(|()| out.flush());

    tokio::select! {
        () = http_server::serve(listener, router(app)) => Ok(()),
        r = &mut actor_task => match r {
            Ok(Ok(())) => Err(ServeError::ActorGone),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(ServeError::ActorGone),
        },
        () = shutdown_signal() => {
            tracing::info!("shutting down");
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
