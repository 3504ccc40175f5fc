//! The SSH decisions nodes report (accepted, denied, revoked) into the audit log, next to
//! the holds, approvals and rejections the server logs itself.
//!
//! A node may report only decisions of its own SSH server (the destination is always the
//! reporting node), each field is bounded and stripped of control characters before it
//! reaches the log, and a connection that reports faster than any real login rate is cut
//! back: at most [`AUDIT_PER_MINUTE`] entries a minute, then one entry saying how many
//! were dropped.

use std::time::Duration;

use super::{ConnId, ControlServer};
use crate::control::messages::{SshAudit, SshOutcome};
use crate::policy::NodeId;
use crate::time::Instant;

/// Reports kept per connection and minute.
pub(super) const AUDIT_PER_MINUTE: u32 = 600;
const WINDOW: Duration = Duration::from_secs(60);
/// Longest name or reason kept in an entry.
const MAX_FIELD: usize = 128;

/// One connection's report budget.
#[derive(Debug, Default)]
pub(crate) struct AuditBudget {
    window_start: Option<Instant>,
    used: u32,
    dropped: u32,
}

impl ControlServer {
    pub(super) fn ssh_audit(&mut self, now: Instant, conn: ConnId, report: SshAudit) {
        let Some(dst) = self.conn_node(conn) else { return };
        let Some(budget) = self.conns.get_mut(&conn).map(|c| &mut c.audit) else { return };
        if budget.window_start.is_none_or(|start| now.saturating_duration_since(start) >= WINDOW) {
            let dropped = std::mem::take(&mut budget.dropped);
            budget.window_start = Some(now);
            budget.used = 0;
            if dropped > 0 {
                let name = self.node_label(dst);
                self.audit("node", "ssh-audit-dropped", format!("{dropped} SSH reports from {name} over the limit"));
            }
        }
        let Some(budget) = self.conns.get_mut(&conn).map(|c| &mut c.audit) else { return };
        if budget.used >= AUDIT_PER_MINUTE {
            budget.dropped = budget.dropped.saturating_add(1);
            return;
        }
        budget.used += 1;
        let (action, why) = match &report.outcome {
            SshOutcome::Accepted => ("ssh-accept", String::new()),
            SshOutcome::Denied { reason } => ("ssh-deny", format!(": {}", clean(reason))),
            SshOutcome::Revoked => ("ssh-revoke", String::new()),
        };
        let detail =
            format!("{}{why}", self.ssh_detail(report.src, dst, &report.login, &report.local_user, report.rule));
        self.audit("node", action, detail);
    }

    /// "node 3 (alpha, alice@example.com) to node 5 (bravo) as deploy (login deploy,
    /// ssh[1])": who, where, which account and rule, the same words for every SSH entry.
    pub(super) fn ssh_detail(
        &self,
        src: Option<NodeId>,
        dst: NodeId,
        login: &str,
        local_user: &str,
        rule: Option<u32>,
    ) -> String {
        let source = match src {
            Some(id) => self.node_label(id),
            None => "an unknown node".to_string(),
        };
        let rule = rule.map_or_else(|| "no rule".to_string(), |r| format!("ssh[{r}]"));
        let local = if local_user.is_empty() { "-" } else { local_user };
        format!("{source} to {} as {} (login {}, {rule})", self.node_label(dst), clean(local), clean(login))
    }

    /// "node 3 (alpha, alice@example.com)", or "(tagged tag:a)" for tagged nodes.
    fn node_label(&self, id: NodeId) -> String {
        match self.nodes.get(&id) {
            Some(n) if n.tags.is_empty() => format!("node {} ({}, {})", id.0, n.name, self.user_name(n.user)),
            Some(n) => format!("node {} ({}, tagged {})", id.0, n.name, n.tags.join(" ")),
            None => format!("node {} (gone)", id.0),
        }
    }
}

/// An outsider's string (a node's report, a name typed at a sign-in form) as it may appear
/// in the audit log: bounded, no control characters.
pub fn clean(text: &str) -> String {
    text.chars().take(MAX_FIELD).map(|c| if c.is_control() { '?' } else { c }).collect()
}
