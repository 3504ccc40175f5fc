//! Daemon mode (`meshd --state-dir`): the local API and the control connection in the
//! runtime's loop. `up` starts a [`ControlLink`]; each netmap it brings is applied to the
//! node (peers and filter) and, the first time the node's own addresses are known or
//! whenever they change, the node is rebuilt on them (same key) and the TUN gets them
//! with routes for the tailnet ranges.

use std::net::IpAddr;
use std::path::PathBuf;

use mesh_core::control::client::ClientEvent;
use mesh_core::node::{Node, NodeConfig};
use mesh_core::wireguard::{IpPrefix, PrivateKey};
use mio::{Registry, Token};
use tracing::{info, warn};

use super::control::{ControlLink, UpRequest};
use super::{clock, fill_random, Runtime, RuntimeError, API, CONTROL};
use crate::local_api::{LocalApi, PeerStatus, Request, Response, Status};
use crate::prefs::Prefs;
use crate::state_dir::to_hex;

/// What daemon mode needs beyond the runtime's config.
#[derive(Debug)]
pub struct DaemonConfig {
    pub machine_key: PrivateKey,
    /// The node as it is rebuilt when its addresses are learned (key, SSH, sizes).
    pub node: NodeConfig,
    /// The local API's socket (none: no local API, as for an embedded node, which its
    /// application drives).
    pub socket: Option<PathBuf>,
    /// Where `up`'s prefs are kept (none: not kept).
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug)]
pub(super) struct Daemon {
    machine_key: PrivateKey,
    template: NodeConfig,
    api: Option<LocalApi>,
    registry: Registry,
    control: Option<ControlLink>,
    state_dir: Option<PathBuf>,
}

impl Daemon {
    pub(super) fn control_link(&self) -> Option<&ControlLink> {
        self.control.as_ref()
    }
}

impl Runtime {
    /// Serve the local API on `config.socket`; the control connection waits for `up`.
    pub fn enable_daemon(&mut self, config: DaemonConfig) -> Result<(), RuntimeError> {
        let registry = self.poll.registry().try_clone().map_err(RuntimeError::Poll)?;
        let api = match &config.socket {
            Some(socket) => {
                let api = LocalApi::bind(socket, &registry, API)?;
                info!(socket = %socket.display(), "local API listening");
                Some(api)
            }
            None => None,
        };
        self.daemon = Some(Daemon {
            machine_key: config.machine_key,
            template: config.node,
            api,
            registry,
            control: None,
            state_dir: config.state_dir.clone(),
        });
        let saved = config.state_dir.as_deref().map(Prefs::load).transpose();
        match saved {
            Ok(Some(Some(prefs))) => {
                info!(server = %prefs.login_server, "reconnecting as before the restart");
                let up = UpRequest {
                    login_server: prefs.login_server,
                    auth_key: String::new(),
                    hostname: prefs.hostname,
                    control_key: prefs.control_key,
                    known: true,
                };
                if let Err(error) = self.up(&up) {
                    warn!(%error, "saved prefs not usable; waiting for up");
                }
            }
            Ok(_) => {}
            Err(error) => warn!(%error, "saved prefs not readable; waiting for up"),
        }
        Ok(())
    }

    pub(super) fn daemon_timeout(&self) -> Option<mesh_core::time::Instant> {
        self.daemon.as_ref()?.control.as_ref()?.client.poll_timeout()
    }

    pub(super) fn daemon_timers(&mut self) {
        let now = self.clock.now();
        let Some(link) = self.daemon.as_mut().and_then(|d| d.control.as_mut()) else { return };
        if link.client.poll_timeout().is_some_and(|at| at <= now) {
            link.handle_timeout(now);
            self.drain_control();
        }
    }

    /// Readiness of a daemon token; whether the token was one.
    pub(super) fn daemon_event(&mut self, token: Token) -> bool {
        let Some(daemon) = &mut self.daemon else { return false };
        if token == CONTROL {
            let now = self.clock.now();
            if let Some(link) = &mut daemon.control {
                link.handle_ready(&daemon.registry, now);
            }
            self.drain_control();
            return true;
        }
        let Some(mut api) = daemon.api.take() else { return false };
        let owned = api.owns(token);
        if owned {
            api.handle_event(token, |request| self.answer(request));
        }
        if let Some(daemon) = &mut self.daemon {
            daemon.api = Some(api);
        }
        owned
    }

    fn drain_control(&mut self) {
        let now = self.clock.now();
        let Some(daemon) = &mut self.daemon else { return };
        let Some(link) = &mut daemon.control else { return };
        let events = link.drain(&daemon.registry, now);
        for event in events {
            match event {
                ClientEvent::NetmapChanged => self.apply_netmap(),
                ClientEvent::Registered(_) => self.save_prefs(),
                _ => {}
            }
        }
        self.with_hook(|hook, cx| hook.control_changed(cx));
        self.drain_node();
    }

    /// Whether a control connection was asked for (by `up`, or by saved prefs).
    pub(crate) fn daemon_is_up(&self) -> bool {
        self.daemon.as_ref().is_some_and(|d| d.control.is_some())
    }

    fn save_prefs(&self) {
        let Some(daemon) = &self.daemon else { return };
        let (Some(dir), Some(link)) = (&daemon.state_dir, &daemon.control) else { return };
        if let Err(error) = link.prefs.save(dir) {
            warn!(%error, "cannot save prefs (a restart will wait for up)");
        }
    }

    fn answer(&mut self, request: Request) -> Response {
        match request {
            Request::Up { login_server, auth_key, hostname, control_key } => {
                let up = UpRequest { login_server, auth_key, hostname, control_key, known: false };
                match self.up(&up) {
                    Ok(()) => Response::ok(),
                    Err(message) => Response::error(message),
                }
            }
            Request::Down => {
                if let Some(daemon) = &mut self.daemon {
                    if let Some(mut link) = daemon.control.take() {
                        link.close(&daemon.registry);
                        info!("down: control connection closed");
                    }
                    if let Some(dir) = &daemon.state_dir {
                        if let Err(error) = Prefs::remove(dir) {
                            return Response::error(error.to_string());
                        }
                    }
                }
                Response::ok()
            }
            Request::Status => Response { ok: true, error: None, status: Some(self.status()) },
        }
    }

    pub(crate) fn up(&mut self, request: &UpRequest) -> Result<(), String> {
        let mut seed = [0u8; 32];
        fill_random(&mut seed).map_err(|e| e.to_string())?;
        let now = self.clock.now();
        let udp_port = self.udp_port().unwrap_or(0);
        let node_key = self.node.public_key();
        let Some(daemon) = &mut self.daemon else { return Err("not in daemon mode".into()) };
        let machine_key = daemon.machine_key.clone();
        let link = ControlLink::new(request, machine_key, node_key, seed, now, CONTROL, udp_port)
            .map_err(|e| e.to_string())?;
        if let Some(mut old) = daemon.control.replace(link) {
            old.close(&daemon.registry);
        }
        info!(server = %request.login_server, hostname = %request.hostname, "up");
        self.drain_control();
        Ok(())
    }

    /// The client's netmap onto the node (rebuilt first if its own addresses changed).
    fn apply_netmap(&mut self) {
        let now = self.clock.now();
        let Some(daemon) = &self.daemon else { return };
        let Some(state) = daemon.control.as_ref().and_then(|l| l.client.netmap()) else { return };
        let addresses = state.node.addresses.clone();
        let (peers, filter, domain) = (state.node_peers(), state.node_filter(), state.dns_domain.clone());
        if addresses.iter().any(|a| !self.node.addrs().contains(a)) {
            if let Err(error) = self.rebuild_node(&addresses, &domain) {
                warn!(%error, "cannot move the node to its addresses");
                return;
            }
        }
        self.node.set_netmap(now, peers);
        self.node.set_filter(now, filter);
        self.drain_node();
        self.flush();
    }

    fn rebuild_node(&mut self, addresses: &[IpAddr], domain: &str) -> Result<(), RuntimeError> {
        let Some(daemon) = &self.daemon else { return Ok(()) };
        let mut config = daemon.template.clone();
        let Some(v4) = addresses.iter().find_map(|a| match a {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        }) else {
            return Ok(());
        };
        config.mesh_v4 = v4;
        config.mesh_v6 = addresses.iter().find_map(|a| match a {
            IpAddr::V6(v6) => Some(*v6),
            IpAddr::V4(_) => None,
        });
        config.dns_domain = domain.to_string();
        let mut seed = [0u8; mesh_core::rng::SEED_LEN];
        fill_random(&mut seed)?;
        self.node = Node::new(config, seed, self.clock.now(), clock::unix_now())?;
        info!(?addresses, "node addresses");
        self.with_hook(|hook, cx| hook.node_replaced(cx));
        if let Some(tun) = &self.tun {
            let with_len: Vec<(IpAddr, u8)> =
                addresses.iter().map(|a| (*a, if a.is_ipv4() { 32 } else { 128 })).collect();
            let routes: Vec<IpPrefix> = [
                IpPrefix::new(IpAddr::V4(std::net::Ipv4Addr::new(100, 64, 0, 0)), 10),
                IpPrefix::new(IpAddr::V6(std::net::Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 0)), 48),
            ]
            .into_iter()
            .flatten()
            .filter(|r| with_len.iter().any(|(a, _)| a.is_ipv4() == r.addr().is_ipv4()))
            .collect();
            tun.add_addresses(&with_len, u16::try_from(self.mtu).unwrap_or(1280), &routes)?;
        }
        Ok(())
    }

    fn status(&self) -> Status {
        let now = self.clock.now();
        let link = self.daemon.as_ref().and_then(|d| d.control.as_ref());
        let mut status = Status {
            state: link.map_or("stopped", |l| l.state.as_str()).to_string(),
            public_key: to_hex(&self.node.public_key().0),
            ..Status::default()
        };
        let Some(link) = link else { return status };
        status.login_server = Some(link.login_server.clone());
        status.last_error = link.last_error.clone();
        status.login_url = link.login_url.clone();
        if let Some(r) = &link.registered {
            status.name = r.name.clone();
            status.addresses = r.addresses.iter().map(IpAddr::to_string).collect();
        }
        let Some(state) = link.client.netmap() else { return status };
        status.name = state.node.name.clone();
        status.addresses = state.node.addresses.iter().map(IpAddr::to_string).collect();
        for peer in state.peers.values() {
            let wg = self.node.peer_id(&peer.node_key).and_then(|id| self.node.wireguard().peer_status(id));
            status.peers.push(PeerStatus {
                name: peer.name.clone(),
                user: peer.user.clone(),
                addresses: peer.addresses.iter().map(IpAddr::to_string).collect(),
                public_key: to_hex(&peer.node_key.0),
                endpoint: wg
                    .as_ref()
                    .and_then(|w| w.endpoint)
                    .or_else(|| peer.endpoints.first().copied())
                    .map(|e| e.to_string()),
                last_handshake_secs: wg
                    .as_ref()
                    .and_then(|w| w.session)
                    .map(|s| now.saturating_duration_since(s.created).as_secs()),
                online: peer.online,
                rx_bytes: wg.as_ref().map_or(0, |w| w.stats.rx_bytes),
                tx_bytes: wg.as_ref().map_or(0, |w| w.stats.tx_bytes),
            });
        }
        status
    }
}
