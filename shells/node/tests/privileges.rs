//! What the session process must not inherit from the daemon: ambient capabilities.
#![allow(clippy::expect_used)] // a failed expectation is the test failing

mod support;

use meshd::session::{ExitStatus, Session};
use rustix::thread::{capabilities, configure_capability_in_ambient_set, set_capabilities, CapabilitySet};
use support::{is_root, read_to_end, request, wait_exit};

/// A daemon given an ambient capability (systemd's AmbientCapabilities=) would pass it on
/// through exec to a session that keeps its uid (root here, or the daemon's own user); the
/// kernel clears the ambient set only when root switches to another uid.
#[test]
fn ambient_capabilities_do_not_reach_the_session() {
    if !is_root() {
        return;
    }
    // Capabilities are per thread, and the session is forked from this one.
    let before = capabilities(None).expect("capget");
    let mut raised = before;
    raised.inheritable |= CapabilitySet::NET_BIND_SERVICE;
    set_capabilities(None, raised).expect("capset");
    configure_capability_in_ambient_set(CapabilitySet::NET_BIND_SERVICE, true).expect("raise ambient");
    let spawned = Session::spawn(&request("root", Some("grep '^CapAmb:' /proc/$$/status")));
    // Back to how the thread was, before any assertion can fail.
    configure_capability_in_ambient_set(CapabilitySet::NET_BIND_SERVICE, false).expect("lower ambient");
    set_capabilities(None, before).expect("capset");

    let mut session = spawned.expect("spawn");
    let output = read_to_end(&session);
    assert_eq!(wait_exit(&mut session), ExitStatus::Code(0), "{output:?}");
    assert_eq!(output.stdout_text().split_whitespace().collect::<Vec<_>>(), ["CapAmb:", "0000000000000000"]);
}
