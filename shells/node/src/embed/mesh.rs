//! [`Mesh`]: the handle an application holds. Starting opens the state directory, builds
//! the runtime without TUN, joins the tailnet through the daemon machinery and runs the
//! loop on its own thread; stopping (or dropping) ends that thread and waits for it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use mesh_core::ip::Filter;
use mesh_core::node::NodeConfig;
use tracing::{info, warn};

use super::command::{Command, Commands};
use super::config::EmbedConfig;
use super::driver::Driver;
use super::error::EmbedError;
use super::listener::Listener;
use super::status::{PeerIdentity, Status};
use super::stream::{wake, Failure, MeshStream, StreamShared};
use crate::prefs::Prefs;
use crate::runtime::control::UpRequest;
use crate::runtime::{DaemonConfig, Runtime, RuntimeConfig, Stopper};
use crate::state_dir::StateDir;

/// How long fetching the control key may take per step.
const KEY_TIMEOUT: Duration = Duration::from_secs(10);

/// A node of the tailnet inside this process.
#[derive(Debug)]
pub struct Mesh {
    commands: Commands,
    status: Arc<Status>,
    stopper: Stopper,
    thread: Option<JoinHandle<()>>,
    connect_timeout: Duration,
    /// Holds the state directory's lock; dropped after the loop's thread has ended.
    _state: StateDir,
}

impl Mesh {
    /// Open the state directory, join the tailnet and run the node on its own thread.
    /// Returns once the thread runs; [`Self::wait_running`] waits for the addresses.
    pub fn start(config: EmbedConfig) -> Result<Self, EmbedError> {
        let state = StateDir::open(&config.state_dir)?;
        let control_key = match &config.control_key {
            Some(key) => key.clone(),
            None => crate::control_key::fetch(&config.login_server, KEY_TIMEOUT)?,
        };
        // Saved prefs reconnect by the machine key; prefs for another server or name are
        // forgotten so that this start registers as asked.
        if let Some(saved) = Prefs::load(state.path())? {
            if saved.login_server != config.login_server || saved.hostname != config.hostname {
                Prefs::remove(state.path())?;
            }
        }
        let mut node = NodeConfig::new(state.node_key.clone(), Ipv4Addr::UNSPECIFIED, "");
        // No TUN: a connection to a port the application does not serve is refused.
        node.refuse_unserved_tcp = true;
        let mut runtime = Runtime::new(RuntimeConfig {
            node: node.clone(),
            peers: Vec::new(),
            peer_options: Vec::new(),
            filter: Filter::deny_all(),
            listen_port: config.listen_port,
            tun: None,
        })?;
        let (tx, rx) = mpsc::channel();
        let commands = Commands::new(tx, runtime.waker());
        let status = Arc::new(Status::default());
        runtime.set_hook(Box::new(Driver::new(rx, commands.clone(), status.clone())));
        runtime.enable_daemon(DaemonConfig {
            machine_key: state.machine_key.clone(),
            node,
            socket: None,
            state_dir: Some(state.path().to_path_buf()),
            ssh_host_key: state.ssh_host_key,
            operator_gid: None,
        })?;
        if !runtime.daemon_is_up() {
            runtime
                .up(&UpRequest {
                    login_server: config.login_server.clone(),
                    auth_key: config.auth_key.clone(),
                    hostname: config.hostname.clone(),
                    control_key,
                    ssh: false,
                    advertise_tags: Vec::new(),
                    accept_dns: false,
                    ssh_host_keys: Vec::new(),
                    // Resolved here, before the loop runs.
                    server_addr: None,
                    known: false,
                })
                .map_err(EmbedError::Up)?;
        }
        let stopper = runtime.stopper();
        info!(hostname = %config.hostname, port = runtime.udp_port(), "embedded node starting");
        let thread = std::thread::Builder::new()
            .name(format!("mesh-{}", config.hostname))
            .spawn(move || {
                if let Err(error) = runtime.run() {
                    warn!(%error, "embedded node's loop failed");
                }
                // Dropping the runtime drops the driver, which ends every handle.
                drop(runtime);
            })
            .map_err(EmbedError::Thread)?;
        Ok(Self {
            commands,
            status,
            stopper,
            thread: Some(thread),
            connect_timeout: config.connect_timeout,
            _state: state,
        })
    }

    /// Wait until the node runs on its mesh addresses (registered, netmap applied); the
    /// addresses. Fails at once if the server refused the node or the node stopped.
    pub fn wait_running(&self, timeout: Duration) -> Result<Vec<IpAddr>, EmbedError> {
        let answer = self.status.wait_for(timeout, |s| {
            if let Some(reason) = &s.rejected {
                return Some(Err(EmbedError::Rejected(reason.clone())));
            }
            if !s.addresses.is_empty() {
                return Some(Ok(s.addresses.clone()));
            }
            s.stopped.then_some(Err(EmbedError::Stopped))
        });
        answer.unwrap_or(Err(EmbedError::Timeout(timeout, "the node to run")))
    }

    /// The node's mesh addresses (empty until it runs).
    pub fn addresses(&self) -> Vec<IpAddr> {
        self.status.lock().addresses.clone()
    }

    /// The node's IPv4 mesh address, once it runs.
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        self.status.lock().addresses.iter().find_map(|a| match a {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        })
    }

    /// The name the control server gave this node.
    pub fn name(&self) -> String {
        self.status.lock().name.clone()
    }

    /// The control connection's last error, if any (why `wait_running` is waiting).
    pub fn last_error(&self) -> Option<String> {
        self.status.lock().last_error.clone()
    }

    /// The peers in the current netmap.
    pub fn peers(&self) -> Vec<PeerIdentity> {
        self.status.lock().peers.clone()
    }

    /// Who holds a mesh address, from the current netmap (as tsnet's `WhoIs`).
    pub fn whois(&self, addr: IpAddr) -> Option<PeerIdentity> {
        self.status.lock().peers.iter().find(|p| p.addresses.contains(&addr)).cloned()
    }

    /// Serve `port` on the node's mesh addresses (also before the node runs: the
    /// listener is opened on the addresses once they are known, and kept when the node
    /// moves to new ones).
    pub fn listen(&self, port: u16) -> Result<Listener, EmbedError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.commands.send(Command::Listen { port, reply })?;
        let shared = answer.recv().map_err(|_| EmbedError::Stopped)??;
        Ok(Listener::new(shared, self.commands.clone(), port))
    }

    /// Open a TCP connection over the mesh, waiting at most the configured connect
    /// timeout.
    pub fn connect(&self, remote: SocketAddr) -> Result<MeshStream, EmbedError> {
        self.connect_timeout(remote, self.connect_timeout)
    }

    pub fn connect_timeout(&self, remote: SocketAddr, timeout: Duration) -> Result<MeshStream, EmbedError> {
        if self.status.lock().addresses.is_empty() {
            return Err(EmbedError::NotRunning);
        }
        let shared = Arc::new(StreamShared::default());
        self.commands.send(Command::Connect { remote, stream: shared.clone() })?;
        match shared.wait_connected(timeout) {
            Some(Ok(local)) => {
                Ok(MeshStream::new(shared, self.commands.clone(), local, remote, self.whois(remote.ip())))
            }
            Some(Err(failure)) => Err(match failure {
                Failure::Refused => EmbedError::Refused(remote),
                Failure::NoRoute => EmbedError::NoRoute(remote),
                Failure::Stopped => EmbedError::Stopped,
                other => EmbedError::Connect { addr: remote, reason: other.io().to_string() },
            }),
            None => {
                let mut state = shared.lock();
                state.abort = true;
                wake(&shared, &mut state, &self.commands);
                Err(EmbedError::Timeout(timeout, "the connection to be established"))
            }
        }
    }

    /// End the node: the loop's thread stops and every stream and listener fails.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(thread) = self.thread.take() else { return };
        self.stopper.stop();
        if thread.join().is_err() {
            warn!("the embedded node's thread panicked");
        }
        info!("embedded node stopped");
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.shutdown();
    }
}
