//! Daemon mode (`meshd --state-dir`): the local API and the control connection in the
//! runtime's loop. `up` starts a [`ControlLink`]; each netmap it brings is applied to the
//! node (peers and filter) and, the first time the node's own addresses are known or
//! whenever they change, the node is rebuilt on them (same key) and the TUN gets them
//! with routes for the tailnet ranges. Also `down`/`logout`, `ping` ([`super::ping`]),
//! the system resolver for `--accept-dns` ([`crate::system_dns`]) and `debug metrics`.

use std::net::IpAddr;
use std::path::PathBuf;

use mesh_core::control::client::ClientEvent;
use mesh_core::dns::MAGIC_DNS_ADDR;
use mesh_core::ip::Filter;
use mesh_core::node::{Node, NodeConfig, SshServerConfig};
use mesh_core::wireguard::{IpPrefix, PrivateKey};
use mio::{Registry, Token};
use tracing::{info, warn};

use super::control::{ControlLink, UpRequest};
use super::ping::Pinger;
use super::{clock, fill_random, Runtime, RuntimeError, API, CONTROL};
use crate::local_api::{LocalApi, PeerStatus, PingReport, Request, Response, Status};
use crate::prefs::Prefs;
use crate::state_dir::{ssh_host_key_line, to_hex};
use crate::system_dns::SystemDns;

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
    /// The SSH host key's seed, served with `up --ssh`.
    pub ssh_host_key: [u8; 32],
    /// Members of this group may use the local API as root can (`meshd --operator-group`).
    pub operator_gid: Option<u32>,
}

#[derive(Debug)]
pub(super) struct Daemon {
    machine_key: PrivateKey,
    template: NodeConfig,
    api: Option<LocalApi>,
    registry: Registry,
    pub(super) control: Option<ControlLink>,
    state_dir: Option<PathBuf>,
    ssh_host_key: [u8; 32],
    /// What the current `up` asked for.
    ssh: bool,
    accept_dns: bool,
    /// The resolver configuration made for `--accept-dns` (state dir only).
    system_dns: Option<SystemDns>,
    pub(super) pinger: Pinger,
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
                let api = LocalApi::bind(socket, &registry, API, config.operator_gid)?;
                info!(socket = %socket.display(), "local API listening");
                Some(api)
            }
            None => None,
        };
        let mut ident = [0u8; 2];
        fill_random(&mut ident)?;
        self.daemon = Some(Daemon {
            machine_key: config.machine_key,
            template: config.node,
            api,
            registry,
            control: None,
            system_dns: config.state_dir.as_deref().map(|dir| SystemDns::new(dir, IpAddr::V4(MAGIC_DNS_ADDR))),
            state_dir: config.state_dir.clone(),
            ssh_host_key: config.ssh_host_key,
            ssh: false,
            accept_dns: false,
            pinger: Pinger::new(u16::from_be_bytes(ident)),
        });
        let saved = config.state_dir.as_deref().map(Prefs::load).transpose();
        match saved {
            Ok(Some(Some(prefs))) if !prefs.want_running => info!("down before the restart; waiting for up"),
            Ok(Some(Some(prefs))) => {
                info!(server = %prefs.login_server, "reconnecting as before the restart");
                let up = UpRequest {
                    login_server: prefs.login_server,
                    auth_key: String::new(),
                    hostname: prefs.hostname,
                    control_key: prefs.control_key,
                    ssh: prefs.ssh,
                    advertise_tags: prefs.advertise_tags,
                    accept_dns: prefs.accept_dns,
                    ssh_host_keys: Vec::new(),
                    server_addr: None,
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

    pub(super) fn drain_control(&mut self) {
        let now = self.clock.now();
        let Some(daemon) = &mut self.daemon else { return };
        let Some(link) = &mut daemon.control else { return };
        let events = link.drain(&daemon.registry, now);
        for event in events {
            match event {
                ClientEvent::NetmapChanged => self.apply_netmap(),
                ClientEvent::Registered(_) => self.save_prefs(),
                ClientEvent::CheckAnswer { id, answer } => self.handle_check_answer(id, answer),
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
            Request::Up {
                login_server,
                auth_key,
                hostname,
                control_key,
                ssh,
                advertise_tags,
                accept_dns,
                server_addr,
            } => {
                let server_addr = match server_addr.map(|a| a.parse::<std::net::SocketAddr>()).transpose() {
                    Ok(addr) => addr,
                    Err(_) => return Response::error("server_addr: not a socket address"),
                };
                // Registered before on this server (then `down`): the machine key is enough.
                let known = auth_key.is_empty()
                    && self
                        .daemon
                        .as_ref()
                        .and_then(|d| d.state_dir.as_deref())
                        .and_then(|dir| Prefs::load(dir).ok().flatten())
                        .is_some_and(|p| p.login_server == login_server && p.control_key == control_key);
                let up = UpRequest {
                    login_server,
                    auth_key,
                    hostname,
                    control_key,
                    ssh,
                    advertise_tags,
                    accept_dns,
                    ssh_host_keys: Vec::new(),
                    server_addr,
                    known,
                };
                match self.up(&up) {
                    Ok(()) => Response::ok(),
                    Err(message) => Response::error(message),
                }
            }
            Request::Down => match self.down(false) {
                Ok(()) => Response::ok(),
                Err(message) => Response::error(message),
            },
            Request::Logout => match self.down(true) {
                Ok(()) => Response::ok(),
                Err(message) => Response::error(message),
            },
            Request::Status => Response { ok: true, status: Some(self.status()), ..Response::default() },
            Request::Ping { address } => match self.start_ping(&address) {
                Ok(report) => Response { ok: true, ping: Some(report), ..Response::default() },
                Err(message) => Response::error(message),
            },
            Request::PingResult { id } => {
                let now = self.clock.now();
                match self.daemon.as_mut().and_then(|d| d.pinger.report(now, id)) {
                    Some(report) => Response { ok: true, ping: Some(report), ..Response::default() },
                    None => Response::error(format!("no ping {id}")),
                }
            }
            Request::Metrics => Response { ok: true, metrics: Some(self.metrics_json()), ..Response::default() },
        }
    }

    /// Leave the tailnet: no control connection, no peers, no resolver configuration.
    /// `forget`: also the registration (logout).
    fn down(&mut self, forget: bool) -> Result<(), String> {
        let now = self.clock.now();
        let Some(daemon) = &mut self.daemon else { return Ok(()) };
        if let Some(mut link) = daemon.control.take() {
            link.close(&daemon.registry);
            info!(forget, "down: control connection closed");
        }
        if let Some(dns) = &mut daemon.system_dns {
            dns.restore().map_err(|e| e.to_string())?;
        }
        if let Some(dir) = &daemon.state_dir {
            let result = match (forget, Prefs::load(dir)) {
                (true, _) | (false, Ok(None)) => Prefs::remove(dir),
                (false, Ok(Some(prefs))) => Prefs { want_running: false, ..prefs }.save(dir),
                (false, Err(error)) => {
                    warn!(%error, "prefs not readable; removed");
                    Prefs::remove(dir)
                }
            };
            result.map_err(|e| e.to_string())?;
        }
        self.node.set_netmap(now, Vec::new());
        self.node.set_filter(now, Filter::deny_all());
        self.drain_node();
        self.flush();
        Ok(())
    }

    /// Send an echo to `address` (a peer's mesh address) through the tunnel.
    fn start_ping(&mut self, address: &str) -> Result<PingReport, String> {
        let to: IpAddr = address.trim().parse().map_err(|_| format!("`{address}` is not an IP address"))?;
        let from = *self
            .node
            .addrs()
            .iter()
            .find(|a| a.is_ipv4() == to.is_ipv4() && !a.is_unspecified())
            .ok_or("this node has no mesh address of that family (is it up?)")?;
        let peer = self
            .netmap()
            .and_then(|state| state.peers.values().find(|p| p.addresses.contains(&to)).cloned())
            .ok_or_else(|| format!("{to} is no peer's address"))?;
        let endpoint = self
            .node
            .peer_id(&peer.node_key)
            .and_then(|id| self.node.wireguard().peer_status(id))
            .and_then(|w| w.endpoint)
            .or_else(|| peer.endpoints.first().copied())
            .map(|e| e.to_string());
        let report = PingReport { peer: peer.name.clone(), address: to.to_string(), endpoint, ..PingReport::default() };
        let now = self.clock.now();
        let Some(daemon) = &mut self.daemon else { return Err("not in daemon mode".into()) };
        let (id, packet) = daemon.pinger.start(now, from, to, report.clone()).ok_or("cannot build the echo")?;
        self.node.handle_tun_packet(now, packet);
        self.drain_node();
        self.flush();
        Ok(PingReport { id, ..report })
    }

    fn metrics_json(&self) -> serde_json::Value {
        let stats = self.node.stats();
        serde_json::json!({
            "event_loop": self.metrics(),
            "node": {
                "inbound_malformed": stats.inbound_malformed,
                "inbound_filtered": stats.inbound_filtered,
                "inbound_not_for_us": stats.inbound_not_for_us,
                "inbound_to_tun": stats.inbound_to_tun,
                "inbound_to_stack": stats.inbound_to_stack,
                "outbound_malformed": stats.outbound_malformed,
                "outbound_no_route": stats.outbound_no_route,
                "outbound_dropped": stats.outbound_dropped,
                "dns_queries": stats.dns_queries,
                "flows_cut": stats.flows_cut,
                "flows": self.node.flow_count(),
            },
            "wireguard": format!("{:?}", self.node.wireguard().stats()),
        })
    }

    pub(crate) fn up(&mut self, request: &UpRequest) -> Result<(), String> {
        let mut seed = [0u8; 32];
        fill_random(&mut seed).map_err(|e| e.to_string())?;
        let now = self.clock.now();
        let udp_port = self.udp_port().unwrap_or(0);
        let node_key = self.node.public_key();
        let Some(daemon) = &mut self.daemon else { return Err("not in daemon mode".into()) };
        let machine_key = daemon.machine_key.clone();
        let request = &UpRequest { ssh_host_keys: vec![ssh_host_key_line(&daemon.ssh_host_key)], ..request.clone() };
        let link = ControlLink::new(request, machine_key, node_key, seed, now, CONTROL, udp_port)
            .map_err(|e| e.to_string())?;
        if let Some(mut old) = daemon.control.replace(link) {
            old.close(&daemon.registry);
        }
        let ssh_changed = daemon.ssh != request.ssh;
        daemon.ssh = request.ssh;
        daemon.accept_dns = request.accept_dns;
        if !request.accept_dns {
            if let Some(dns) = &mut daemon.system_dns {
                dns.restore().map_err(|e| e.to_string())?;
            }
        }
        if ssh_changed && self.node.addrs().iter().any(|a| !a.is_unspecified()) {
            // SSH is part of the node: rebuild it on its addresses with SSH on or off.
            let addresses = self.node.addrs().to_vec();
            let domain = self.daemon_domain();
            self.rebuild_node(&addresses, &domain).map_err(|e| e.to_string())?;
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
        // Logins the new netmap no longer allows end first, while their peer and flow are
        // still there to carry "Access revoked." (a deleted source would never hear it).
        self.recheck_ssh();
        self.node.set_netmap(now, peers);
        self.node.set_filter(now, filter);
        self.drain_node();
        self.flush();
        let link = self.tun.as_ref().map(|t| t.name().to_string());
        if let Some(daemon) = &mut self.daemon {
            if let (true, Some(dns)) = (daemon.accept_dns, &mut daemon.system_dns) {
                if let Err(error) = dns.apply(link.as_deref(), &domain) {
                    warn!(%error, "cannot configure the system resolver for MagicDNS");
                }
            }
        }
    }

    /// The control client's current netmap (none before the first, or out of daemon mode).
    pub(super) fn netmap(&self) -> Option<&mesh_core::control::client::NetmapState> {
        self.daemon.as_ref()?.control.as_ref()?.client.netmap()
    }

    /// The tailnet's DNS domain from the current netmap.
    fn daemon_domain(&self) -> String {
        self.netmap().map(|s| s.dns_domain.clone()).unwrap_or_default()
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
        config.ssh =
            daemon.ssh.then(|| SshServerConfig::new(ed25519_dalek::SigningKey::from_bytes(&daemon.ssh_host_key)));
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
            tun.set_addresses(&with_len, u16::try_from(self.mtu).unwrap_or(1280), &routes)?;
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
        if let Some(daemon) = &self.daemon {
            status.ssh = daemon.ssh;
            status.dns_configured = daemon.system_dns.as_ref().is_some_and(SystemDns::is_applied);
        }
        let Some(state) = link.client.netmap() else { return status };
        let fqdn = |name: &str| format!("{name}.{}", state.dns_domain);
        status.name = state.node.name.clone();
        status.fqdn = fqdn(&state.node.name);
        status.dns_domain = state.dns_domain.clone();
        status.tags = state.node.tags.clone();
        status.addresses = state.node.addresses.iter().map(IpAddr::to_string).collect();
        for peer in state.peers.values() {
            let wg = self.node.peer_id(&peer.node_key).and_then(|id| self.node.wireguard().peer_status(id));
            status.peers.push(PeerStatus {
                name: peer.name.clone(),
                fqdn: fqdn(&peer.name),
                user: peer.user.clone(),
                tags: peer.tags.clone(),
                ssh_host_keys: peer.ssh_host_keys.clone(),
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
