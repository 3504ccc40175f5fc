//! `meshsim`: run the full-mesh scenario for a seed and print what happened.
//!
//! The last line is always `trace hash: <64 hex digits>`: the same seed and arguments give
//! the same hash on every machine, a different seed a different one. Wall time is measured
//! here, outside the world, and never feeds back into it.
//!
//! With no arguments it runs seed 1: 10 nodes for 5 virtual minutes over WAN links (no
//! random loss, occasional duplication and reordering) with chaos (partitions, crashes and
//! restarts), in well under a second of wall time in release mode.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use mesh_sim::{ChaosConfig, LinkConfig, Scenario, ScenarioConfig};

/// Simulate N mesh nodes (WireGuard, packet filter, userspace TCP: the core's composed node)
/// in a full mesh, exchanging traffic under faults, in virtual time.
#[derive(Debug, Parser)]
#[command(name = "meshsim", version)]
struct Args {
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Number of nodes.
    #[arg(long, default_value_t = 10)]
    nodes: usize,
    /// Virtual minutes to simulate.
    #[arg(long, default_value_t = 5.0)]
    minutes: f64,
    /// Datagram loss on every link, in percent.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Mean gap between two packets of one node, in virtual milliseconds.
    #[arg(long, default_value_t = 100)]
    interval_ms: u64,
    /// Run without random partitions and crashes.
    #[arg(long)]
    no_chaos: bool,
}

/// Virtual time excluded from the steady-state rate (the initial handshakes).
const WARMUP: Duration = Duration::from_secs(20);

#[allow(clippy::disallowed_methods)] // wall time for the report, outside the world
fn wall_clock() -> std::time::Instant {
    std::time::Instant::now()
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !(0.0..=100.0).contains(&args.loss) || !args.minutes.is_finite() || args.minutes < 0.0 || args.nodes < 2 {
        eprintln!("meshsim: need --nodes >= 2, --minutes >= 0 and --loss within 0..=100");
        return ExitCode::FAILURE;
    }
    let config = ScenarioConfig {
        seed: args.seed,
        nodes: args.nodes,
        link: LinkConfig::wan().with_loss(args.loss / 100.0),
        traffic_interval: Duration::from_millis(args.interval_ms.max(1)),
        chaos: (!args.no_chaos).then(ChaosConfig::default),
    };
    let started = wall_clock();
    let mut world = match Scenario::full_mesh(config) {
        Ok(world) => world,
        Err(error) => {
            eprintln!("meshsim: cannot build the world: {error}");
            return ExitCode::FAILURE;
        }
    };
    let setup = started.elapsed();
    // Two legs, to report the steady state apart from the initial handshake storm. Running
    // to an intermediate instant does not change which events run, or their order.
    let total = Duration::from_secs_f64(args.minutes * 60.0);
    let warmup = WARMUP.min(total);
    let run_started = wall_clock();
    world.run_for(warmup);
    let warm_wall = run_started.elapsed();
    let warm_stats = world.stats().clone();
    world.run_for(total - warmup);
    let wall = run_started.elapsed();
    let summary = world.summary();
    let stats = &summary.stats;
    println!("{summary}");
    println!(
        "wall time: {:.3} s (+{:.3} s setup); {:.0} events/s, {:.0} datagrams/s through WireGuard, {:.0} app packets/s",
        wall.as_secs_f64(),
        setup.as_secs_f64(),
        stats.events_per_second(wall),
        stats.datagrams_per_second(wall),
        stats.app_sent as f64 / wall.as_secs_f64().max(1e-9)
    );
    let steady = wall.saturating_sub(warm_wall).as_secs_f64().max(1e-9);
    if total > warmup {
        println!(
            "after the first {} s: {:.0} events/s, {:.0} datagrams/s through WireGuard",
            warmup.as_secs(),
            (stats.events - warm_stats.events) as f64 / steady,
            (stats.datagrams_delivered - warm_stats.datagrams_delivered) as f64 / steady,
        );
    }
    println!("trace hash: {}", mesh_sim::trace::hex(&summary.trace_hash));
    ExitCode::SUCCESS
}
