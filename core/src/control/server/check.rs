//! Check mode: a node holds an SSH login that matched a `check` rule and asks the server.
//!
//! The server answers at once when an approval for (source node, destination node, local
//! user) is still within the rule's `checkPeriod`; otherwise it creates a hold with a URL,
//! which the node shows as its banner, and answers again when the hold is approved (the
//! user logs in at the URL, or `meshcontrol auth approve`), rejected, or times out (30
//! minutes). `checkPeriod: always` approves one login and remembers nothing. Tagged
//! sources never pass: no person is behind them.

use super::{ApprovalRecord, Change, ConnId, ControlServer, Output, PendingCheck, CHECK_HOLD};
use crate::control::messages::{CheckAnswer, CheckRequest, ServerMessage};
use crate::policy::{CheckPeriod, SshAction, SshRule};
use crate::time::Instant;

/// What identifies a rule across policy edits: its content, not its position.
pub(super) fn fingerprint(rule: &SshRule) -> String {
    format!("{:?}|{:?}|{:?}|{:?}|{:?}", rule.action, rule.srcs, rule.dsts, rule.users, rule.check_period)
}

impl ControlServer {
    pub(super) fn check(&mut self, now: Instant, conn: ConnId, request: CheckRequest) {
        let id = request.id;
        let reject = |reason: &str| CheckAnswer::Rejected { reason: reason.into() };
        let Some(dst) = self.conn_node(conn) else {
            return self.send(now, conn, ServerMessage::CheckAnswer { id, answer: reject("register first") });
        };
        let answer = match (self.nodes.get(&request.src), self.policy.ssh.get(request.rule as usize)) {
            _ if crate::policy::check_local_user(&request.local_user).is_err() && request.local_user != "root" => {
                reject("not a local user name")
            }
            (None, _) => reject("unknown source node"),
            (Some(n), _) if !n.tags.is_empty() => {
                reject("tagged nodes cannot pass check mode: no person is behind them")
            }
            (_, None) => reject("no such ssh rule (the policy changed)"),
            (_, Some(rule)) if rule.action != SshAction::Check => reject("that ssh rule is not a check rule"),
            (Some(_), Some(rule)) => {
                let print = fingerprint(rule);
                let key = (request.src, dst, request.local_user.clone());
                let period = rule.check_period;
                match self.approvals.get(&key) {
                    Some(a) if a.rule == print && a.expires > self.unix && period != CheckPeriod::Always => {
                        CheckAnswer::Approved { authenticated_secs_ago: self.unix.saturating_sub(a.authenticated) }
                    }
                    _ if self.pending_checks.values().filter(|p| p.dst == dst).count() >= super::MAX_HOLDS_PER_NODE => {
                        reject("too many logins are waiting for a check on this node")
                    }
                    _ => {
                        let token = self.token();
                        let url = format!("{}/check/{token}", self.config.server_url.trim_end_matches('/'));
                        let (always, period) = match period {
                            CheckPeriod::Always => (true, 0),
                            CheckPeriod::Seconds(s) => (false, s),
                        };
                        let detail = self.check_detail(&request, dst);
                        self.pending_checks.insert(
                            token,
                            PendingCheck {
                                conn,
                                request,
                                dst,
                                fingerprint: print,
                                always,
                                period,
                                expires: now + CHECK_HOLD,
                            },
                        );
                        self.audit("node", "ssh-check-hold", detail);
                        CheckAnswer::Pending { url }
                    }
                }
            }
        };
        self.send(now, conn, ServerMessage::CheckAnswer { id, answer });
    }

    /// The audit log's words for a check of `request` on node `dst`.
    fn check_detail(&self, request: &CheckRequest, dst: crate::policy::NodeId) -> String {
        self.ssh_detail(Some(request.src), dst, &request.local_user, &request.local_user, Some(request.rule))
    }

    /// Sends the answer of a held check to its node and forgets the hold.
    pub(super) fn answer_check(&mut self, now: Instant, token: &str, answer: CheckAnswer) {
        if let Some(p) = self.pending_checks.remove(token) {
            if self.conns.get(&p.conn).is_some_and(|c| c.node == Some(p.dst)) {
                self.send(now, p.conn, ServerMessage::CheckAnswer { id: p.request.id, answer });
            }
        }
    }

    /// The user behind a held login re-authenticated just now (or an admin approved it).
    pub fn approve_check(&mut self, now: Instant, actor: &str, token: &str) -> Result<(), super::AdminError> {
        self.approve_check_authenticated(now, actor, token, self.unix)
    }

    /// The user behind a held login authenticated at `authenticated` (unix seconds: the ID
    /// token's `auth_time`, which the shell checked is recent). The approval lasts the
    /// rule's `checkPeriod` from then, not from now, and the node's banner says how long
    /// ago it was. A time in the future counts as now.
    pub fn approve_check_authenticated(
        &mut self,
        now: Instant,
        actor: &str,
        token: &str,
        authenticated: u64,
    ) -> Result<(), super::AdminError> {
        let authenticated = authenticated.min(self.unix);
        let p = self.pending_checks.get(token).cloned().ok_or_else(|| super::AdminError::NoPending(token.into()))?;
        if self.nodes.get(&p.request.src).is_none_or(|n| !n.tags.is_empty()) {
            self.answer_check(now, token, CheckAnswer::Rejected { reason: "the source node is gone or tagged".into() });
            return Err(super::AdminError::Invalid(
                "the source node is gone or now tagged: no person is behind it".into(),
            ));
        }
        if !p.always {
            let record = ApprovalRecord {
                src: p.request.src,
                dst: p.dst,
                local_user: p.request.local_user.clone(),
                authenticated,
                expires: authenticated.saturating_add(p.period),
                rule: p.fingerprint.clone(),
            };
            self.approvals.insert((record.src, record.dst, record.local_user.clone()), record.clone());
            self.out.push_back(Output::Persist(Change::Approval(record)));
        }
        let detail = self.check_detail(&p.request, p.dst);
        self.audit(actor, "ssh-check-approve", detail);
        let authenticated_secs_ago = self.unix - authenticated;
        self.answer_check(now, token, CheckAnswer::Approved { authenticated_secs_ago });
        Ok(())
    }

    pub fn reject_check(&mut self, now: Instant, actor: &str, token: &str) -> Result<(), super::AdminError> {
        let p = self.pending_checks.get(token).cloned().ok_or_else(|| super::AdminError::NoPending(token.into()))?;
        let detail = self.check_detail(&p.request, p.dst);
        self.audit(actor, "ssh-check-reject", detail);
        self.answer_check(now, token, CheckAnswer::Rejected { reason: "the check was rejected".into() });
        Ok(())
    }

    /// After a policy change: approvals whose rule is gone or changed are forgotten.
    pub(super) fn forget_stale_approvals(&mut self) {
        let current: Vec<String> = self.policy.ssh.iter().map(fingerprint).collect();
        let stale: Vec<(crate::policy::NodeId, crate::policy::NodeId, String)> =
            self.approvals.iter().filter(|(_, a)| !current.contains(&a.rule)).map(|(k, _)| k.clone()).collect();
        for (src, dst, local_user) in stale {
            self.approvals.remove(&(src, dst, local_user.clone()));
            self.out.push_back(Output::Persist(Change::ApprovalRemoved { src, dst, local_user }));
        }
    }

    /// Holds waiting for approval: (token, source node, destination node, local user).
    pub fn pending_checks(&self) -> impl Iterator<Item = (&str, u64, u64, &str)> {
        self.pending_checks.iter().map(|(t, p)| (t.as_str(), p.request.src.0, p.dst.0, p.request.local_user.as_str()))
    }
}
