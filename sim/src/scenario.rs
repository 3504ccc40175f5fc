//! The full-mesh scenario shared by `meshsim` and the simulated tests.
//!
//! N nodes, each a peer of every other in its netmap (allowed IP = the other's mesh address /32,
//! endpoint = its underlay address), every link with the same configuration, and the traffic
//! application sending a small packet to a random peer about every `traffic_interval`.
//! Optionally the chaos schedule injects partitions and crashes. Tests take the world this
//! returns and add their own faults and checks.

use std::time::Duration;

use crate::error::SimError;
use crate::faults::ChaosConfig;
use crate::link::LinkConfig;
use crate::traffic::TrafficConfig;
use crate::world::World;

/// Parameters of [`Scenario::full_mesh`].
#[derive(Clone, Debug, PartialEq)]
pub struct ScenarioConfig {
    pub seed: u64,
    pub nodes: usize,
    /// Every link, both directions.
    pub link: LinkConfig,
    /// Mean gap between two packets of one node.
    pub traffic_interval: Duration,
    /// Random faults; `None` for a fault-free run (tests inject their own).
    pub chaos: Option<ChaosConfig>,
}

impl Default for ScenarioConfig {
    /// Seed 1, 3 nodes, [`LinkConfig::wan`], a packet per node every 100 ms, no chaos.
    fn default() -> Self {
        Self { seed: 1, nodes: 3, link: LinkConfig::wan(), traffic_interval: Duration::from_millis(100), chaos: None }
    }
}

impl ScenarioConfig {
    /// The `meshsim` command that runs this scenario on its own (without a test's extra
    /// steps).
    pub fn meshsim_command(&self, minutes: f64) -> String {
        let mut cmd = format!(
            "cargo run --release -p mesh-sim --bin meshsim -- --seed {} --nodes {} --minutes {minutes} --loss {} --interval-ms {}",
            self.seed,
            self.nodes,
            self.link.loss * 100.0,
            self.traffic_interval.as_millis()
        );
        if self.chaos.is_none() {
            cmd.push_str(" --no-chaos");
        }
        cmd
    }
}

/// Builders of ready-to-run worlds.
#[derive(Debug)]
pub struct Scenario;

impl Scenario {
    /// A world of `config.nodes` nodes in a full WireGuard mesh with traffic running (and
    /// chaos, if configured), at virtual time zero. Call [`World::run_for`] to run it.
    pub fn full_mesh(config: ScenarioConfig) -> Result<World, SimError> {
        let mut world = World::new(config.seed, config.link.clone());
        for _ in 0..config.nodes {
            world.add_node()?;
        }
        world.connect_full_mesh()?;
        world.start_traffic(TrafficConfig { interval: config.traffic_interval });
        if config.chaos.is_some() {
            world.set_chaos(config.chaos.clone());
        }
        world.set_rerun_hint(format!(
            "set MESHSIM_SEED={} and rerun the test (see mesh_sim::seed_from_env); the scenario alone: {}",
            config.seed,
            config.meshsim_command(1.0)
        ));
        Ok(world)
    }
}
