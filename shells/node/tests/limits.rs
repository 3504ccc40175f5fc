//! Sessions get the limits the daemon started with, not the ones it raised. Alone in its
//! binary: it changes this process's limits.
#![allow(clippy::expect_used)] // a failed expectation is the test failing

mod support;

use meshd::session::{ExitStatus, ResourceLimits, Session, SessionConfig, SESSION_NOFILE_SOFT_MAX};
use nix::sys::resource::{getrlimit, rlim_t, setrlimit, Resource, RLIM_INFINITY};
use support::{is_root, read_to_end, request, wait_exit};

const SHOW: &str = "ulimit -Sn; ulimit -Hn; ulimit -Sc; ulimit -Hc";

fn shown(limit: rlim_t) -> String {
    if limit == RLIM_INFINITY {
        "unlimited".into()
    } else {
        limit.to_string()
    }
}

fn session_limits(config: &SessionConfig) -> Vec<String> {
    let mut session = Session::spawn_with(config, &request("root", Some(SHOW))).expect("spawn");
    let output = read_to_end(&session);
    assert_eq!(wait_exit(&mut session), ExitStatus::Code(0), "{output:?}");
    output.stdout_text().lines().map(str::to_string).collect()
}

/// Without CAP_SYS_RESOURCE (containers) hard limits cannot be raised, so the daemon's
/// "startup" limits are lowered soft limits, and the raise goes up to the hard ones.
#[test]
fn limits_the_daemon_raised_are_reset_for_sessions() {
    if !is_root() {
        return;
    }
    let nofile = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    let core = getrlimit(Resource::RLIMIT_CORE).expect("getrlimit");
    assert!(nofile.1 > 600, "hard NOFILE limit {} too low for this test", nofile.1);
    setrlimit(Resource::RLIMIT_NOFILE, 512, nofile.1).expect("lower NOFILE");
    setrlimit(Resource::RLIMIT_CORE, 0, core.1).expect("lower CORE");
    // At startup, before raising.
    let config = SessionConfig { limits: ResourceLimits::capture(), ..SessionConfig::default() };
    // What a daemon does next: as many descriptors as allowed, core dumps for debugging.
    setrlimit(Resource::RLIMIT_NOFILE, nofile.1, nofile.1).expect("raise NOFILE");
    setrlimit(Resource::RLIMIT_CORE, core.1, core.1).expect("raise CORE");

    let restored = session_limits(&config);
    // Without a capture from before the raise, at least the NOFILE soft limit is capped.
    let capped = session_limits(&SessionConfig::default());

    setrlimit(Resource::RLIMIT_NOFILE, nofile.0, nofile.1).expect("restore NOFILE");
    setrlimit(Resource::RLIMIT_CORE, core.0, core.1).expect("restore CORE");

    assert_eq!(restored, [shown(512), shown(nofile.1), shown(0), shown(core.1)]);
    let cap = shown(SESSION_NOFILE_SOFT_MAX.min(nofile.1));
    assert_eq!(capped, [cap, shown(nofile.1), shown(core.1), shown(core.1)]);
}
