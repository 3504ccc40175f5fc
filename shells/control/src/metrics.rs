//! What the shell measures, served at `/metrics` in Prometheus' text format. Counters are
//! atomics bumped where things happen; gauges of the core (nodes, online nodes, compiles)
//! are read from the actor at scrape time.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mesh_core::control::messages::ServerMessage;

#[derive(Debug, Default)]
pub struct Metrics {
    pub connections_total: AtomicU64,
    pub connections_open: AtomicU64,
    pub handshake_failures: AtomicU64,
    pub decode_errors: AtomicU64,
    pub messages_received: AtomicU64,
    pub sent_map: AtomicU64,
    pub sent_delta: AtomicU64,
    pub sent_keepalive: AtomicU64,
    pub sent_other: AtomicU64,
    /// Connections dropped because their send queue was full.
    pub send_queue_overflows: AtomicU64,
    pub core_calls: AtomicU64,
    pub core_micros: AtomicU64,
    pub commits: AtomicU64,
    pub changes_committed: AtomicU64,
    pub commit_micros: AtomicU64,
    pub admin_requests: AtomicU64,
    pub admin_refused: AtomicU64,
    pub logins_approved: AtomicU64,
    pub logins_refused: AtomicU64,
}

/// What the actor reports at scrape time.
#[derive(Clone, Copy, Debug, Default)]
pub struct Gauges {
    pub nodes: u64,
    pub online: u64,
    pub users: u64,
    pub compiles: u64,
    pub pending_logins: u64,
    pub pending_checks: u64,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Metrics {
    pub fn count_sent(&self, message: &ServerMessage) {
        let counter = match message {
            ServerMessage::Map(_) => &self.sent_map,
            ServerMessage::Delta(_) => &self.sent_delta,
            ServerMessage::KeepAlive => &self.sent_keepalive,
            _ => &self.sent_other,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn core_call(&self, took: Duration) {
        self.core_calls.fetch_add(1, Ordering::Relaxed);
        self.core_micros.fetch_add(micros(took), Ordering::Relaxed);
    }

    pub fn commit(&self, changes: usize, took: Duration) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.changes_committed.fetch_add(changes as u64, Ordering::Relaxed);
        self.commit_micros.fetch_add(micros(took), Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self, g: Gauges) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let secs = |c: &AtomicU64| get(c) as f64 / 1e6;
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, lines: &[(String, String)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in lines {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let one = |v: u64| vec![(String::new(), v.to_string())];
        metric("meshcontrol_nodes", "gauge", "Registered nodes.", &one(g.nodes));
        metric("meshcontrol_nodes_online", "gauge", "Nodes with a live map stream.", &one(g.online));
        metric("meshcontrol_users", "gauge", "Users.", &one(g.users));
        metric("meshcontrol_pending_logins", "gauge", "Interactive logins waiting.", &one(g.pending_logins));
        metric("meshcontrol_pending_checks", "gauge", "SSH check holds waiting.", &one(g.pending_checks));
        metric("meshcontrol_policy_compiles_total", "counter", "Whole-tailnet policy compiles.", &one(g.compiles));
        metric(
            "meshcontrol_connections_total",
            "counter",
            "Control connections accepted.",
            &one(get(&self.connections_total)),
        );
        metric("meshcontrol_connections_open", "gauge", "Open control connections.", &one(get(&self.connections_open)));
        metric(
            "meshcontrol_handshake_failures_total",
            "counter",
            "Control connections whose secure channel failed.",
            &one(get(&self.handshake_failures)),
        );
        metric(
            "meshcontrol_decode_errors_total",
            "counter",
            "Malformed node messages (each closed its connection).",
            &one(get(&self.decode_errors)),
        );
        metric(
            "meshcontrol_messages_received_total",
            "counter",
            "Node messages received.",
            &one(get(&self.messages_received)),
        );
        let sent = [
            ("map", &self.sent_map),
            ("delta", &self.sent_delta),
            ("keepalive", &self.sent_keepalive),
            ("other", &self.sent_other),
        ];
        let sent: Vec<_> = sent.iter().map(|(k, c)| (format!("{{type=\"{k}\"}}"), get(c).to_string())).collect();
        metric("meshcontrol_messages_sent_total", "counter", "Server messages sent, by type.", &sent);
        metric(
            "meshcontrol_send_queue_overflows_total",
            "counter",
            "Connections dropped because they did not read their messages.",
            &one(get(&self.send_queue_overflows)),
        );
        metric("meshcontrol_core_calls_total", "counter", "Calls into the ControlServer.", &one(get(&self.core_calls)));
        metric(
            "meshcontrol_core_seconds_total",
            "counter",
            "Time spent in ControlServer calls.",
            &[(String::new(), format!("{:.6}", secs(&self.core_micros)))],
        );
        metric("meshcontrol_commits_total", "counter", "Database transactions committed.", &one(get(&self.commits)));
        metric(
            "meshcontrol_changes_committed_total",
            "counter",
            "Durable changes committed.",
            &one(get(&self.changes_committed)),
        );
        metric(
            "meshcontrol_commit_seconds_total",
            "counter",
            "Time spent committing (fsync included).",
            &[(String::new(), format!("{:.6}", secs(&self.commit_micros)))],
        );
        metric(
            "meshcontrol_admin_requests_total",
            "counter",
            "Admin requests (socket and HTTP).",
            &one(get(&self.admin_requests)),
        );
        metric("meshcontrol_admin_refused_total", "counter", "Admin requests refused.", &one(get(&self.admin_refused)));
        metric(
            "meshcontrol_logins_total",
            "counter",
            "Login page submissions, by result.",
            &[
                ("{result=\"approved\"}".into(), get(&self.logins_approved).to_string()),
                ("{result=\"refused\"}".into(), get(&self.logins_refused).to_string()),
            ],
        );
        out
    }
}
