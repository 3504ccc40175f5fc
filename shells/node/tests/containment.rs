//! Killing a session ends everything it started: background jobs and setsid'd children,
//! through its cgroup v2 where the host has one, and through the /proc-scan fallback
//! without.
#![allow(clippy::expect_used)] // a failed expectation is the test failing

mod support;

use std::path::{Path, PathBuf};
use std::time::Instant;

use meshd::session::{CgroupPolicy, ExitStatus, Session, SessionConfig};
use support::{is_root, read_to_end, read_until, request, wait_all_gone, wait_exit, TestUser, TIMEOUT};

/// Starts a background job and a child that leaves the session with setsid, prints both
/// pids, then (with `then`) keeps running or exits. Their stdio is /dev/null once they
/// run, so the session's output ends when the shell does.
fn escapees(then: &str) -> String {
    format!(
        "sleep 1000 </dev/null >/dev/null 2>&1 & echo bg=$!; \
         setsid sh -c 'echo sid=$$; exec sleep 1000 </dev/null >/dev/null 2>&1' & \
         i=0; until grep -q '(sleep)' /proc/$!/stat 2>/dev/null || [ $i -ge 1000 ]; do i=$((i+1)); sleep 0.01; done; \
         echo ready; {then}"
    )
}

/// The pids printed as `bg=` and `sid=`.
fn pids(output: &str) -> Vec<i32> {
    let pids: Vec<i32> = output
        .lines()
        .filter_map(|line| line.strip_prefix("bg=").or_else(|| line.strip_prefix("sid=")))
        .filter_map(|pid| pid.trim().parse().ok())
        .collect();
    assert_eq!(pids.len(), 2, "{output:?}");
    pids
}

/// Whether this host has a cgroup2 mount at all (then sessions must get a cgroup).
fn host_has_cgroup2() -> bool {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let found = mountinfo.lines().any(|line| line.split(" - ").nth(1).is_some_and(|tail| tail.starts_with("cgroup2 ")));
    if !found {
        eprintln!("note: no cgroup2 mount; the cgroup tests only check the fallback");
    }
    found
}

/// Kills leftovers of a failed test so they do not linger for 1000 s (only processes that
/// still are our `sleep 1000`, in case a pid was reused).
struct Reap(Vec<i32>);

impl Drop for Reap {
    fn drop(&mut self) {
        for pid in &self.0 {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if cmdline == b"sleep\x001000\x00" {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), nix::sys::signal::SIGKILL);
            }
        }
    }
}

fn wait_removed(path: &Path) {
    let deadline = Instant::now() + TIMEOUT;
    while path.exists() {
        assert!(Instant::now() < deadline, "cgroup {} not removed", path.display());
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The leader has exited and been reaped, so its process group id means nothing any more:
/// only the cgroup still knows the session's processes.
#[test]
fn revoking_after_the_leader_exited_kills_background_and_setsid_children() {
    if !is_root() || !host_has_cgroup2() {
        return;
    }
    let mut session = Session::spawn(&request("root", Some(&escapees("exit 0")))).expect("spawn");
    let cgroup: PathBuf = session.cgroup().expect("a host with cgroup2 gives each session a cgroup").to_path_buf();
    let output = read_to_end(&session).stdout_text();
    let pids = pids(&output);
    let _reap = Reap(pids.clone());
    assert_eq!(wait_exit(&mut session), ExitStatus::Code(0));
    assert!(pids.iter().all(|pid| support::is_running(*pid)), "{pids:?} should outlive the shell");
    // The cgroup stays while its processes run.
    assert_eq!(session.cgroup(), Some(cgroup.as_path()));

    session.kill();
    wait_all_gone(&pids);
    drop(session);
    wait_removed(&cgroup);
}

#[test]
fn revoking_a_running_session_kills_the_setsid_child_too() {
    if !is_root() || !host_has_cgroup2() {
        return;
    }
    let Some(user) = TestUser::create("/bin/sh") else {
        return;
    };
    // As another user: the child joins its cgroup before dropping root.
    let mut session = Session::spawn(&request(&user.name, Some(&escapees("exec sleep 1000")))).expect("spawn");
    let cgroup = session.cgroup().expect("cgroup").to_path_buf();
    let output = read_until(&session, |out| String::from_utf8_lossy(out).contains("ready")).stdout_text();
    let mut all = pids(&output);
    all.push(session.pid());
    let _reap = Reap(all.clone());
    let members = std::fs::read_to_string(cgroup.join("cgroup.procs")).expect("cgroup.procs");
    for pid in &all {
        assert!(members.lines().any(|line| line == pid.to_string()), "{pid} not in {members:?}");
    }
    session.kill();
    wait_all_gone(&all);
    assert!(matches!(wait_exit(&mut session), ExitStatus::Signal { name, .. } if name == "KILL"));
    drop(session);
    wait_removed(&cgroup);
}

#[test]
fn a_session_that_ends_by_itself_leaves_no_cgroup() {
    if !is_root() || !host_has_cgroup2() {
        return;
    }
    let mut session = Session::spawn(&request("root", Some("cat /proc/self/cgroup"))).expect("spawn");
    let cgroup = session.cgroup().expect("cgroup").to_path_buf();
    let output = read_to_end(&session).stdout_text();
    let name = cgroup.file_name().and_then(|name| name.to_str()).expect("name");
    assert!(output.lines().any(|line| line.starts_with("0::") && line.ends_with(name)), "{output:?}");
    assert_eq!(wait_exit(&mut session), ExitStatus::Code(0));
    assert_eq!(session.cgroup(), None);
    assert!(!cgroup.exists());
}

/// Dropping the session (the daemon forgets it) ends its leftovers too.
#[test]
fn dropping_a_session_ends_its_leftovers() {
    if !is_root() || !host_has_cgroup2() {
        return;
    }
    let mut session = Session::spawn(&request("root", Some(&escapees("exit 0")))).expect("spawn");
    let cgroup = session.cgroup().expect("cgroup").to_path_buf();
    let pids = pids(&read_to_end(&session).stdout_text());
    let _reap = Reap(pids.clone());
    assert_eq!(wait_exit(&mut session), ExitStatus::Code(0));
    drop(session);
    wait_all_gone(&pids);
    wait_removed(&cgroup);
}

/// Without a cgroup, the /proc scan finds the setsid child through its parent.
#[test]
fn without_a_cgroup_revoking_still_kills_the_setsid_child() {
    if !is_root() {
        return;
    }
    let config = SessionConfig { cgroups: CgroupPolicy::Disabled, ..SessionConfig::default() };
    let mut session = Session::spawn_with(&config, &request("root", Some(&escapees("wait")))).expect("spawn");
    assert_eq!(session.cgroup(), None);
    let output = read_until(&session, |out| String::from_utf8_lossy(out).contains("ready")).stdout_text();
    let mut all = pids(&output);
    all.push(session.pid());
    let _reap = Reap(all.clone());
    session.kill();
    wait_all_gone(&all);
    assert!(matches!(wait_exit(&mut session), ExitStatus::Signal { .. }));
}

/// Without a cgroup and after the leader is reaped, the scan still finds the background
/// job by its session id. (The setsid'd orphan is what only a cgroup can find.)
#[test]
fn without_a_cgroup_revoking_after_the_leader_exited_kills_background_jobs() {
    if !is_root() {
        return;
    }
    let config = SessionConfig { cgroups: CgroupPolicy::Disabled, ..SessionConfig::default() };
    let mut session = Session::spawn_with(&config, &request("root", Some(&escapees("exit 0")))).expect("spawn");
    let pids = pids(&read_to_end(&session).stdout_text());
    let _reap = Reap(pids.clone());
    assert_eq!(wait_exit(&mut session), ExitStatus::Code(0));
    session.kill();
    wait_all_gone(&pids[..1]);
}

/// Parents that are no cgroup, or where no cgroup can be made, fall back (with a warning)
/// and the session still runs and is still killed.
#[test]
fn an_unusable_cgroup_parent_falls_back_to_the_scan() {
    if !is_root() {
        return;
    }
    let mut parents = vec![std::env::temp_dir(), PathBuf::from("/nonexistent/meshd")];
    if let Some(mount) = cgroup2_mount() {
        // On a cgroup2 file system, but a file (mkdir fails) and a missing directory.
        parents.push(mount.join("cgroup.procs"));
        parents.push(mount.join("meshd-no-such-parent"));
    }
    for parent in parents {
        let config = SessionConfig { cgroups: CgroupPolicy::Under(parent.clone()), ..SessionConfig::default() };
        let mut session = Session::spawn_with(&config, &request("root", Some(&escapees("wait")))).expect("spawn");
        assert_eq!(session.cgroup(), None, "{}", parent.display());
        let output = read_until(&session, |out| String::from_utf8_lossy(out).contains("ready")).stdout_text();
        let mut all = pids(&output);
        all.push(session.pid());
        let _reap = Reap(all.clone());
        session.kill();
        wait_all_gone(&all);
        wait_exit(&mut session);
        let leftovers: Vec<_> = std::fs::read_dir(std::env::temp_dir())
            .expect("temp dir")
            .filter_map(Result::ok)
            .filter(|entry| {
                entry.file_name().to_string_lossy().starts_with(&format!("meshd-session-{}-", std::process::id()))
            })
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}

/// A configured parent on the cgroup2 mount is used.
#[test]
fn a_configured_parent_cgroup_is_used() {
    if !is_root() {
        return;
    }
    let Some(mount) = cgroup2_mount() else {
        return;
    };
    let parent = mount.join(format!("meshd-test-parent-{}", std::process::id()));
    std::fs::create_dir(&parent).expect("create parent cgroup");
    let config = SessionConfig { cgroups: CgroupPolicy::Under(parent.clone()), ..SessionConfig::default() };
    let mut session = Session::spawn_with(&config, &request("root", Some("true"))).expect("spawn");
    assert_eq!(session.cgroup().and_then(Path::parent), Some(parent.as_path()));
    read_to_end(&session);
    wait_exit(&mut session);
    drop(session);
    std::fs::remove_dir(&parent).expect("the session's cgroup is gone, so the parent is empty");
}

/// The first cgroup2 mount point in /proc/self/mountinfo.
fn cgroup2_mount() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|line| {
        let (head, tail) = line.split_once(" - ")?;
        tail.starts_with("cgroup2 ").then(|| head.split(' ').nth(4).map(PathBuf::from)).flatten()
    })
}
