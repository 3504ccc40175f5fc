//! mesh-sim: a deterministic simulator that drives `mesh-core`'s sans-IO state machines in
//! virtual time over simulated links.
//!
//! A [`World`] holds nodes (each a composed [`mesh_core::node::Node`] — WireGuard, packet
//! filter with flow tracking, userspace TCP, MagicDNS — with a static key, an underlay UDP
//! address, a mesh address, a netmap and a filter), simulated applications on them (a UDP
//! traffic generator, TCP stream clients and verifying sinks, raw packet injection at the
//! TUN side), the [`Network`] of links between them (latency, jitter, loss, duplication,
//! reordering, bandwidth, MTU; symmetric and one-way partitions) and an event queue. Its clock jumps from one event to the next. Every random
//! choice derives from one seed, and a running BLAKE2s hash over the ordered trace of
//! everything that happened ([`World::trace_hash`]) shows that the same seed gives the same
//! run.
//!
//! ```no_run
//! use std::time::Duration;
//! use mesh_sim::{NodeId, Scenario, ScenarioConfig};
//!
//! let mut world = Scenario::full_mesh(ScenarioConfig { seed: 7, nodes: 4, ..Default::default() })?;
//! world.run_for(Duration::from_secs(10));
//! let (a, b) = (NodeId(0), NodeId(1));
//! world.partition(a, b);
//! let cut = world.now();
//! world.run_for(Duration::from_secs(30));
//! world.heal_all();
//! let healed = world.now();
//! world.run_for(Duration::from_secs(30));
//! mesh_sim::sim_assert!(world, world.delivered_after(a, b, healed), "no delivery after healing");
//! println!("trace hash: {}", world.trace_hash_hex());
//! # let _ = cut;
//! # Ok::<(), mesh_sim::SimError>(())
//! ```
//!
//! TCP through the composed data plane ([`World::open_tcp`], [`World::accepted_for`]):
//!
//! ```no_run
//! use std::time::Duration;
//! use mesh_sim::{LinkConfig, NodeConfig, NodeId, World};
//!
//! let mut world = World::new(7, LinkConfig::ideal(Duration::from_millis(15)));
//! let client = world.add_node()?;
//! let server = world.add_node_with(NodeConfig::default().with_sink(true))?;
//! world.connect_full_mesh()?;
//! let id = world.open_tcp(client, server, mesh_sim::SINK_PORT, 1 << 20)?;
//! world.run_for(Duration::from_secs(2));
//! if let Some(accepted) = world.accepted_for(id) {
//!     assert!(accepted.is_complete() && accepted.peer == world.node(server).peer_id(client));
//! }
//! # let _ = NodeId(0);
//! # Ok::<(), mesh_sim::SimError>(())
//! ```
//!
//! Our SSH client against our SSH server over the same data plane ([`World::serve_ssh`],
//! [`World::open_ssh`], see [`ssh_apps`]): logins decided by the WireGuard identity,
//! simulated commands, byte-exact transfers through rekeys.
//!
//! ```no_run
//! use std::time::Duration;
//! use mesh_sim::{LinkConfig, NodeConfig, NodeId, SshClientConfig, SshCommand, World};
//!
//! let mut world = World::new(7, LinkConfig::ideal(Duration::from_millis(15)));
//! let server = world.add_node_with(NodeConfig::default().with_ssh(true))?;
//! let client = world.add_node()?;
//! world.connect_full_mesh()?;
//! world.serve_ssh(server, [client], Default::default())?;
//! let script = vec![SshCommand::exec("exit 7"), SshCommand::cat(1 << 20, 1)];
//! let id = world.open_ssh(client, server, SshClientConfig::new("alice", script))?;
//! world.run_until_ssh_closed(id, Duration::from_secs(60));
//! assert_eq!(world.ssh_client(id).commands[0].exit_status, Some(7));
//! # Ok::<(), mesh_sim::SimError>(())
//! ```
//!
//! # Reading order
//!
//! Modules depend only on modules above them in this list (no two import each other), so
//! the simulator reads bottom-up, each line naming what the module imports from the crate:
//!
//! - `ids`: the names of nodes, transfers and SSH clients (nothing).
//! - `seed`: the seeded RNG every random choice forks from (nothing).
//! - `addresses`: the address plan, node `i`'s underlay and mesh addresses, ports (`ids`).
//! - `link`: one direction of a simulated link and a datagram's fate on it (`seed`, in tests).
//! - `network`: the matrix of links and partitions (`ids`, `addresses`, `link`).
//! - `faults`: partitions, crashes, restarts, and chaos that schedules them (`ids`; `seed` in
//!   tests).
//! - `trace`: the ordered, hashed record of everything that happened (`ids`, `link`,
//!   `faults`).
//! - `events`: the event queue of the virtual clock (`ids`, `faults`).
//! - `traffic`: the UDP traffic application's packets and schedule (`seed`, in tests).
//! - `error`: what a world-building request can fail with (`ids`, `addresses`).
//! - `node`: one simulated node, the core node, its netmap, filter and counters (`ids`,
//!   `addresses`, `error`).
//! - `stats`: world-wide and per-pair counters (`ids`, `link`, `node`).
//! - `apps`: the TCP stream clients and verifying sinks (`ids`).
//! - `ssh_apps`: our SSH client and server apps (`ids`, `addresses`, `apps`, `error`,
//!   `node`, `trace`).
//! - `node_apps`: the applications of one node incarnation, kept beside the node (`apps`,
//!   `ssh_apps`).
//! - `driver`: drives one node by the sans-IO contract and carries its outputs (all of the
//!   above but `seed` and `faults`).
//! - `world`: owns the nodes, their applications, the network, the queue and the clock
//!   (everything above).
//! - `scenario`: ready-made worlds (`world`, `error`, `faults`, `link`, `traffic`).
//! - `check`: seeds from the environment and `sim_assert!` for reproducible failures
//!   (nothing; the macro calls `World::fail`).

pub mod addresses;
pub mod apps;
mod check;
pub mod control;
mod driver;
mod error;
pub mod events;
pub mod faults;
pub mod ids;
pub mod link;
pub mod network;
mod node;
mod node_apps;
mod scenario;
pub mod seed;
pub mod ssh_apps;
mod stats;
pub mod trace;
pub mod traffic;
mod world;
#[cfg(test)]
mod world_tests;

pub use addresses::{mesh_range, SINK_PORT};
pub use apps::{AcceptedConn, StreamPattern, Transfer, TransferError};
pub use check::{seed_from_env, SEED_ENV};
pub use control::{ClientId, ControlLinkConfig, ControlSim};
pub use error::SimError;
pub use faults::{ChaosConfig, Fault};
pub use ids::{NodeId, SshClientId, TransferId};
pub use link::{DropCause, LinkConfig, LinkStats};
pub use network::Network;
pub use node::{allow_mesh_filter, Node, NodeConfig, NodeStats, TunStats, WgTotals, SIM_DNS_DOMAIN, TUN_CAPTURE_LEN};
pub use scenario::{Scenario, ScenarioConfig};
pub use seed::{seed_material, seeded_rng};
pub use ssh_apps::{SshClientConfig, SshClientRecord, SshCommand, SshCommandResult, SshExpect, SshServerRecord};
pub use stats::{reason_name, PairMatrix, PairStats, SimStats, Summary};
pub use trace::{Trace, TraceRecord};
pub use traffic::TrafficConfig;
pub use world::{World, STALL_WINDOW, VIRTUAL_EPOCH};
