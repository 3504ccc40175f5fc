//! `meshcontrol`, the coordination server's shell: a thin async shell over the core's
//! sans-IO `ControlServer` (quinn's model: the core decides, the shell does IO).
//!
//! - [`serve`]: `meshcontrol serve`, wiring everything together; [`serve_args`] its
//!   options (command line and config file).
//! - [`actor`]: the one task that owns the `ControlServer` and drains its outputs in order
//!   (persist before anything later); [`connection`]: one control connection (the HTTP
//!   upgrade, then the core's `ChannelServer`).
//! - [`http`]: the routes of the one TCP port (health, metrics, key, upgrade, admin API,
//!   login pages) and [`http_server`] its accept loop;
//!   [`login_page`] and [`login`] (the `LoginMethod` trait, local argon2 passwords);
//!   [`oidc`] and [`oidc_page`] (single sign-on); [`console`] (the admin console).
//! - [`storage`]: the `Store` trait and its SQLite backend with versioned migrations.
//! - The admin interface: [`admin_api`] (the protocol), [`admin_dispatch`] and
//!   [`admin_exec`] (where requests go and how they become core calls), [`admin_socket`]
//!   (the Unix socket), [`admin_client`], [`admin_cli`] and [`admin_render`] (the command line).
//! - The offline policy tools: [`policy_cmd`] and [`inventory`].

pub mod actor;
#[cfg(test)]
mod actor_tests;
pub mod admin_api;
pub mod admin_cli;
pub mod admin_client;
pub mod admin_dispatch;
pub mod admin_exec;
pub mod admin_render;
pub mod admin_socket;
pub mod clock;
pub mod connection;
pub mod console;
pub mod http;
pub mod http_server;
pub mod inventory;
pub mod login;
pub mod login_page;
pub mod metrics;
pub mod oidc;
pub mod oidc_page;
pub mod os_random;
pub mod policy_cmd;
pub mod serve;
pub mod serve_args;
pub mod server_key;
pub mod storage;
