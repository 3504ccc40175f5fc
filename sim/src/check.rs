//! Helpers that make a failing simulated test reproducible: it must say its seed and how to
//! run it again.
//!
//! A test picks its seed with [`seed_from_env`], so `MESHSIM_SEED=<seed> cargo test ...`
//! replays a failure, and asserts with [`crate::World::check`] or [`sim_assert!`], which
//! panic with the seed, the rerun command and the last trace records.

/// Environment variable that overrides a simulated test's seed.
pub const SEED_ENV: &str = "MESHSIM_SEED";

/// The seed in `MESHSIM_SEED` if set and numeric, else `default`. Read once by the test,
/// outside the world: the world itself never looks at the environment.
pub fn seed_from_env(default: u64) -> u64 {
    std::env::var(SEED_ENV).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(default)
}

/// `sim_assert!(world, condition, "format", args...)`: like `assert!`, but the panic message
/// carries the world's seed, the command to rerun and the last trace records.
#[macro_export]
macro_rules! sim_assert {
    ($world:expr, $cond:expr $(,)?) => {
        if !$cond {
            $world.fail(concat!("assertion failed: ", stringify!($cond)));
        }
    };
    ($world:expr, $cond:expr, $($arg:tt)+) => {
        if !$cond {
            $world.fail(format!($($arg)+));
        }
    };
}
