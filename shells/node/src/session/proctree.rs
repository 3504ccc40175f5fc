//! Containment without a cgroup: the session's processes found through /proc.
//!
//! A member is the leader (until reaped), any process in the leader's session or process
//! group (the leader called setsid, so both ids are its pid; background jobs and
//! double-forked daemons keep them), and any descendant of a member by parent pid, which
//! catches a child that called setsid while its parent lives. What this misses, and only a
//! cgroup catches, is a process that left the session *and* lost its parent (setsid, then
//! the parent exited).
//!
//! Reuse of the leader's pid: Linux keeps a pid number allocated while any process still
//! uses it as a session or group id, so while a member lives nobody else can have it. After
//! the leader is reaped, a live process *with* the leader's pid therefore proves the old
//! session is gone, and the session-id match is skipped. Members must also have started
//! no earlier than the leader (start times from /proc/<pid>/stat).

use std::collections::HashSet;
use std::fs;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Scan rounds: each stops what it finds; a round finding nothing new ends the search.
const MAX_ROUNDS: usize = 16;
/// Longest /proc/<pid>/stat read (the command name is at most 64 bytes).
const MAX_STAT_BYTES: usize = 4096;

/// The fields of /proc/<pid>/stat that containment needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub(crate) pid: i32,
    pub(crate) state: u8,
    pub(crate) ppid: i32,
    pub(crate) pgrp: i32,
    pub(crate) session: i32,
    /// Clock ticks after boot.
    pub(crate) start_time: u64,
}

/// A session leader and what identifies its processes.
#[derive(Debug)]
pub(crate) struct ProcessTree {
    leader: Pid,
    leader_start: u64,
}

impl ProcessTree {
    /// Call right after spawn, while the leader is our unreaped child (its pid cannot be
    /// reused before we reap it).
    pub(crate) fn new(leader: Pid) -> ProcessTree {
        let leader_start = read_stat(leader.as_raw()).map_or(0, |stat| stat.start_time);
        ProcessTree { leader, leader_start }
    }

    /// SIGKILLs every member. Members are first stopped (SIGSTOP cannot be caught), in
    /// rounds until a scan finds none not yet stopped: a stopped process cannot fork, and
    /// nobody dies before the last scan, so no parent link is lost midway (killing a parent
    /// first would orphan its setsid'd child before the scan could see whose it was).
    /// `leader_reaped`: the leader's pid may now be someone else's.
    pub(crate) fn kill(&self, leader_reaped: bool) {
        let mut stopped: HashSet<i32> = HashSet::new();
        let mut settled = false;
        for _ in 0..MAX_ROUNDS {
            let fresh: Vec<i32> =
                self.members(&scan(), leader_reaped).into_iter().filter(|pid| !stopped.contains(pid)).collect();
            if fresh.is_empty() {
                settled = true;
                break;
            }
            for pid in fresh {
                // ESRCH: it exited meanwhile.
                let _ = kill(Pid::from_raw(pid), Signal::SIGSTOP);
                stopped.insert(pid);
            }
        }
        if !settled {
            tracing::warn!(leader = self.leader.as_raw(), "session processes still forking after {MAX_ROUNDS} scans");
        }
        for pid in stopped {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }

    /// The live (non-zombie) members among `procs`, never ourselves.
    pub(crate) fn members(&self, procs: &[ProcStat], leader_reaped: bool) -> Vec<i32> {
        let leader = self.leader.as_raw();
        let ours = std::process::id() as i32;
        let sid_is_ours = !leader_reaped || !procs.iter().any(|p| p.pid == leader);
        let candidate = |p: &ProcStat| p.pid != ours && p.pid != 1 && p.start_time >= self.leader_start;
        let mut members: HashSet<i32> = procs
            .iter()
            .filter(|p| candidate(p))
            .filter(|p| {
                (!leader_reaped && p.pid == leader) || (sid_is_ours && (p.session == leader || p.pgrp == leader))
            })
            .map(|p| p.pid)
            .collect();
        // Descendants by parent pid, to a fixed point (at most one pass per tree level).
        loop {
            let before = members.len();
            for p in procs.iter().filter(|p| candidate(p)) {
                if members.contains(&p.ppid) {
                    members.insert(p.pid);
                }
            }
            if members.len() == before {
                break;
            }
        }
        let zombies: HashSet<i32> =
            procs.iter().filter(|p| p.state == b'Z' || p.state == b'X').map(|p| p.pid).collect();
        let mut live: Vec<i32> = members.into_iter().filter(|pid| !zombies.contains(pid)).collect();
        live.sort_unstable();
        live
    }
}

/// Every process /proc shows now (those that vanish mid-scan are skipped).
fn scan() -> Vec<ProcStat> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str().and_then(|name| name.parse::<i32>().ok()))
        .filter_map(read_stat)
        .collect()
}

fn read_stat(pid: i32) -> Option<ProcStat> {
    let bytes = fs::read(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(bytes.get(..MAX_STAT_BYTES).unwrap_or(&bytes))
}

/// Parses `pid (comm) state ppid pgrp session ... starttime ...`. The command name may
/// hold spaces and parentheses, so the fields start after the *last* ')'.
pub(crate) fn parse_stat(stat: &[u8]) -> Option<ProcStat> {
    let open = stat.iter().position(|&b| b == b'(')?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    let pid = std::str::from_utf8(stat.get(..open)?).ok()?.trim().parse().ok()?;
    let rest = std::str::from_utf8(stat.get(close + 1..)?).ok()?;
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let number = |i: usize| fields.get(i).and_then(|f| f.parse::<i64>().ok());
    let state = *fields.first()?.as_bytes().first()?;
    // Fields after the name, counted from 0: state, ppid, pgrp, session, ..., starttime (19).
    Some(ProcStat {
        pid,
        state,
        ppid: i32::try_from(number(1)?).ok()?,
        pgrp: i32::try_from(number(2)?).ok()?,
        session: i32::try_from(number(3)?).ok()?,
        start_time: u64::try_from(number(19)?).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(pid: i32, ppid: i32, session: i32, start_time: u64) -> ProcStat {
        ProcStat { pid, state: b'S', ppid, pgrp: session, session, start_time }
    }

    #[test]
    fn stat_lines_with_hostile_command_names_parse() {
        let line = b"4242 (a) b (c) R 7 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 98765 1 2\n";
        let parsed = parse_stat(line);
        assert_eq!(
            parsed,
            Some(ProcStat { pid: 4242, state: b'R', ppid: 7, pgrp: 4242, session: 4242, start_time: 98765 })
        );
        assert_eq!(parse_stat(b"12 (x) S 1 2"), None);
        assert_eq!(parse_stat(b"garbage"), None);
    }

    #[test]
    fn members_are_the_session_and_its_descendants() {
        let tree = ProcessTree { leader: Pid::from_raw(100), leader_start: 50 };
        let procs = [
            stat(100, 9, 100, 50),   // leader
            stat(101, 100, 100, 51), // background job
            stat(102, 100, 102, 52), // setsid child, parent alive
            stat(103, 102, 102, 53), // its child
            stat(104, 1, 100, 54),   // double-forked, kept the session
            stat(105, 1, 105, 55),   // setsid and orphaned: only a cgroup finds it
            stat(106, 9, 106, 10),   // unrelated
            stat(107, 100, 100, 49), // "child" older than the leader: a stale pid, not ours
        ];
        assert_eq!(tree.members(&procs, false), vec![100, 101, 102, 103, 104]);
    }

    #[test]
    fn after_the_leader_is_reaped_its_reused_pid_disowns_the_session_id() {
        let tree = ProcessTree { leader: Pid::from_raw(100), leader_start: 50 };
        let orphans = [stat(101, 1, 100, 51), stat(102, 101, 102, 52)];
        assert_eq!(tree.members(&orphans, true), vec![101, 102]);
        // Pid 100 is alive again, so no process can still have session 100 from our leader.
        let reused = [stat(100, 9, 100, 90), stat(101, 100, 100, 91)];
        assert_eq!(tree.members(&reused, true), Vec::<i32>::new());
    }

    #[test]
    fn zombies_are_not_members() {
        let tree = ProcessTree { leader: Pid::from_raw(100), leader_start: 50 };
        let mut zombie = stat(100, 9, 100, 50);
        zombie.state = b'Z';
        assert_eq!(tree.members(&[zombie, stat(101, 100, 100, 51)], false), vec![101]);
    }
}
