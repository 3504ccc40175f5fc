//! SSH in the daemon (`up --ssh`): the core serves port 22 on the mesh addresses and
//! reports each session's events tagged with the WireGuard peer that opened it; this file
//! decides each login from the netmap's SSH rules ([`ssh_access`]), holds `check` logins
//! while the control server asks the user to re-authenticate, runs the channels of
//! accepted logins with meshd's [`ChannelHost`], and ends every live connection a new
//! netmap no longer allows ("Access revoked.").
//!
//! Identity: the caller is the node whose WireGuard key carried the connection, looked up
//! in the netmap; whatever the client says in its auth request is only the login name it
//! asks for. Every auth method gets the same decision.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use mesh_core::control::client::NetmapState;
use mesh_core::control::messages::{CheckAnswer, CheckRequest, SshAudit, SshOutcome};
use mesh_core::node::{SessionId, SshEvent};
use mesh_core::policy::{ssh_access, NodeId, SshAccess};
use mesh_core::ssh::event::SessionEvent;
use mesh_core::time::Instant;
use mesh_core::wireguard::PeerId;
use mio::Token;
use tracing::{debug, info};

use super::Runtime;
use crate::ssh_service::{ChannelHost, ChannelPolicy, ChannelTarget, Tokens};

/// Tokens at and above this are the SSH service's (child descriptors, forwards).
pub(super) const SSH_TOKENS: usize = 1 << 40;
/// How often a session's exit is looked for when no SIGCHLD came (a missed signal costs
/// this much latency at most).
const EXIT_POLL: Duration = Duration::from_millis(250);
/// A check hold ends after this long without an answer (Tailscale holds 30 minutes too).
const CHECK_HOLD: Duration = Duration::from_secs(30 * 60);
const REVOKED: &str = "Access revoked.\r\n";

/// Where one connection's login stands.
#[derive(Debug)]
enum Login {
    /// No auth request yet.
    Waiting,
    /// A check request is out; the login is held.
    Held { request: CheckRequest, since: Instant },
    /// Logged in: its channels run.
    Running(Box<ChannelHost>),
}

#[derive(Debug)]
struct SshConn {
    peer: PeerId,
    remote: SocketAddr,
    /// What the login asked for and was decided on (kept for re-checks).
    requested_user: String,
    local_user: String,
    source: Option<NodeId>,
    /// The policy `ssh` entry that let it in (or holds it).
    rule: Option<u32>,
    login: Login,
}

/// The daemon's SSH connections and their tokens.
#[derive(Debug, Default)]
pub(super) struct SshSessions {
    conns: BTreeMap<SessionId, SshConn>,
    tokens: SshTokens,
    next_check: u64,
    /// When the sessions were last looked at for exits.
    last_poll: Option<Instant>,
}

#[derive(Debug, Default)]
struct SshTokens {
    next: usize,
    map: HashMap<Token, (SessionId, ChannelTarget)>,
}

/// One session's view of the token table.
struct SessionTokens<'a> {
    table: &'a mut SshTokens,
    session: SessionId,
}

impl Tokens for SessionTokens<'_> {
    fn token(&mut self, target: ChannelTarget) -> Token {
        let token = Token(SSH_TOKENS + self.table.next);
        self.table.next += 1;
        self.table.map.insert(token, (self.session, target));
        token
    }

    fn forget(&mut self, token: Token) {
        self.table.map.remove(&token);
    }
}

impl SshSessions {
    /// When the loop must look at the sessions again without an event (exit polling, check
    /// holds running out).
    pub(super) fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        let mut next = None;
        let exit_poll = self.last_poll.map_or(now, |at| at + EXIT_POLL);
        for conn in self.conns.values() {
            let at = match &conn.login {
                Login::Running(host) if host.has_processes() => exit_poll,
                Login::Held { since, .. } => *since + CHECK_HOLD,
                _ => continue,
            };
            next = Some(next.map_or(at, |n: Instant| n.min(at)));
        }
        next
    }
}

/// The netmap peer behind a WireGuard peer: its node id and name.
fn source_of(netmap: &NetmapState, key: &mesh_core::wireguard::PublicKey) -> Option<(NodeId, String)> {
    netmap.peers.values().find(|p| p.node_key == *key).map(|p| (p.id, p.name.clone()))
}

impl Runtime {
    /// One SSH event from the node.
    pub(super) fn handle_ssh_event(&mut self, event: SshEvent) {
        let now = self.clock.now();
        match event {
            SshEvent::Opened { session, peer, remote } => {
                let conn = SshConn {
                    peer,
                    remote,
                    requested_user: String::new(),
                    local_user: String::new(),
                    source: None,
                    rule: None,
                    login: Login::Waiting,
                };
                self.ssh.conns.insert(session, conn);
            }
            SshEvent::Session { session, event: SessionEvent::AuthRequest { user }, .. } => {
                self.decide_login(now, session, &user);
            }
            SshEvent::Session { session, event: SessionEvent::Connection(event), .. } => {
                let Some(conn) = self.ssh.conns.get_mut(&session) else { return };
                let Login::Running(host) = &mut conn.login else { return };
                let registry = self.poll.registry();
                let mut tokens = SessionTokens { table: &mut self.ssh.tokens, session };
                self.node.ssh_session(now, session, |s| host.on_event(s, now, event, registry, &mut tokens));
                self.service_ssh(session);
            }
            SshEvent::Session { .. } => {}
            SshEvent::Writable { session } => self.service_ssh(session),
            SshEvent::Closed { session, .. } => {
                if let Some(conn) = self.ssh.conns.remove(&session) {
                    self.end_ssh(session, conn);
                }
            }
        }
    }

    fn end_ssh(&mut self, session: SessionId, mut conn: SshConn) {
        match &mut conn.login {
            Login::Running(host) => {
                host.shutdown(self.poll.registry(), &mut SessionTokens { table: &mut self.ssh.tokens, session });
            }
            Login::Held { request, .. } => {
                let id = request.id;
                if let Some(link) = self.daemon.as_mut().and_then(|d| d.control.as_mut()) {
                    link.client.cancel_check(id);
                }
            }
            Login::Waiting => {}
        }
        debug!(session = session.as_u64(), user = %conn.local_user, "SSH connection over");
    }

    /// Accept, deny with a banner, or hold for a check; each decision goes to the control
    /// server's audit log (holds are logged there when the server makes them).
    fn decide_login(&mut self, now: Instant, session: SessionId, requested: &str) {
        let Some(conn) = self.ssh.conns.get(&session) else { return };
        let peer = conn.peer;
        let key = self.node.netmap_peer(peer).map(|p| p.public_key);
        let (Some(netmap), Some(key)) = (self.netmap(), key) else {
            return self.deny(now, session, "this node has no netmap to decide logins with");
        };
        let Some((source, source_name)) = source_of(netmap, &key) else {
            let why = "the connecting node is not in this node's netmap";
            self.audit_ssh(None, requested, "", None, SshOutcome::Denied { reason: why.into() });
            return self.deny(now, session, why);
        };
        let rules = netmap.ssh.clone();
        let decision = ssh_access(&rules, source, requested);
        let (local_user, allow_root, rule, check) = match decision {
            SshAccess::Deny(why) => {
                info!(%source_name, requested, %why, "SSH login denied");
                self.audit_ssh(Some(source), requested, "", None, SshOutcome::Denied { reason: why.to_string() });
                return self.deny(now, session, &why.to_string());
            }
            SshAccess::Accept { local_user, allow_root, rule } => (local_user, allow_root, rule.clone(), false),
            SshAccess::Check { local_user, allow_root, rule } => (local_user, allow_root, rule.clone(), true),
        };
        if let Err(why) = account_usable(&local_user, allow_root) {
            info!(%source_name, requested, local_user, why, "SSH login denied");
            let outcome = SshOutcome::Denied { reason: why.clone() };
            self.audit_ssh(Some(source), requested, &local_user, Some(rule.rule), outcome);
            return self.deny(now, session, &why);
        }
        let Some(conn) = self.ssh.conns.get_mut(&session) else { return };
        conn.requested_user = requested.to_string();
        conn.local_user = local_user.clone();
        conn.source = Some(source);
        conn.rule = Some(rule.rule);
        if check {
            let id = self.ssh.next_check;
            self.ssh.next_check += 1;
            let request = CheckRequest { id, src: source, local_user: local_user.clone(), rule: rule.rule };
            let Some(link) = self.daemon.as_mut().and_then(|d| d.control.as_mut()) else {
                return self.deny(now, session, "no control connection to run the check");
            };
            link.client.request_check(request.clone());
            conn.login = Login::Held { request, since: now };
            info!(%source_name, requested, local_user, rule = rule.rule, "SSH login held for a check");
            self.node.ssh_session(now, session, |s| s.auth_banner(now, "# SSH requires an additional check.\r\n"));
            self.drain_control();
            return;
        }
        info!(%source_name, requested, local_user, rule = rule.rule, "SSH login accepted");
        self.audit_ssh(Some(source), requested, &local_user, Some(rule.rule), SshOutcome::Accepted);
        self.start_login(now, session, local_user, allow_root, &rule);
    }

    /// One SSH decision for the control server's audit log (queued while it is away).
    fn audit_ssh(
        &mut self,
        src: Option<NodeId>,
        login: &str,
        local_user: &str,
        rule: Option<u32>,
        outcome: SshOutcome,
    ) {
        let Some(link) = self.daemon.as_mut().and_then(|d| d.control.as_mut()) else { return };
        let report = SshAudit { src, login: login.into(), local_user: local_user.into(), rule, outcome };
        link.client.report_ssh(report);
        self.drain_control();
    }

    fn start_login(
        &mut self,
        now: Instant,
        session: SessionId,
        local_user: String,
        allow_root: bool,
        rule: &mesh_core::policy::NodeSshRule,
    ) {
        // `-R` ports are bound on the mesh address (reachable only through the tunnel), or
        // on loopback without a TUN.
        let remote_bind = match (&self.tun, self.node.addrs().first()) {
            (Some(_), Some(addr)) => *addr,
            _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
        };
        let policy = ChannelPolicy {
            local_user,
            allow_root,
            accept_env: rule.accept_env.to_vec(),
            forwarding: rule.forwarding,
            remote_bind,
        };
        let Some(conn) = self.ssh.conns.get_mut(&session) else { return };
        let local = SocketAddr::new(self.node.addrs().first().copied().unwrap_or(remote_bind), 22);
        conn.login = Login::Running(Box::new(ChannelHost::new(policy, conn.remote, local, now)));
        self.node.ssh_session(now, session, |s| s.accept_auth(now));
        self.service_ssh(session);
    }

    fn deny(&mut self, now: Instant, session: SessionId, why: &str) {
        let banner = format!("{why}\r\n");
        self.node.ssh_session(now, session, |s| s.deny_auth(now, Some(&banner)));
    }

    /// A check answer from the control server.
    pub(super) fn handle_check_answer(&mut self, id: u64, answer: CheckAnswer) {
        let now = self.clock.now();
        let session = self.ssh.conns.iter().find_map(|(s, c)| match &c.login {
            Login::Held { request, .. } if request.id == id => Some(*s),
            _ => None,
        });
        let Some(session) = session else { return };
        match answer {
            CheckAnswer::Pending { url } => {
                let banner = format!("# To authenticate, visit: {url}\r\n");
                self.node.ssh_session(now, session, |s| s.auth_banner(now, &banner));
            }
            CheckAnswer::Rejected { reason } => {
                info!(id, %reason, "SSH check rejected");
                self.deny(now, session, &format!("check failed: {reason}"));
            }
            CheckAnswer::Approved { authenticated_secs_ago } => {
                // Decided again on the current netmap: the policy may have changed meanwhile.
                let Some(conn) = self.ssh.conns.get(&session) else { return };
                let (requested, held_user, source) =
                    (conn.requested_user.clone(), conn.local_user.clone(), conn.source);
                match self.current_access(&requested, source) {
                    Some((local_user, allow_root, rule)) if local_user == held_user => {
                        info!(id, authenticated_secs_ago, local_user, "SSH check approved");
                        self.audit_ssh(source, &requested, &local_user, Some(rule.rule), SshOutcome::Accepted);
                        let banner = format!("# Authentication checked {}.\r\n", ago(authenticated_secs_ago));
                        self.node.ssh_session(now, session, |s| s.auth_banner(now, &banner));
                        self.start_login(now, session, local_user, allow_root, &rule);
                    }
                    _ => self.deny(now, session, "the tailnet policy changed during the check"),
                }
            }
        }
        self.drain_node();
        self.flush();
    }

    /// The local account, root permission and rule that let `source` log in as
    /// `requested` on the current netmap (either action).
    fn current_access(
        &self,
        requested: &str,
        source: Option<NodeId>,
    ) -> Option<(String, bool, mesh_core::policy::NodeSshRule)> {
        match ssh_access(&self.netmap()?.ssh, source?, requested) {
            SshAccess::Accept { local_user, allow_root, rule } | SshAccess::Check { local_user, allow_root, rule } => {
                Some((local_user, allow_root, rule.clone()))
            }
            SshAccess::Deny(_) => None,
        }
    }

    /// A new netmap: every live login is decided again; one that is no longer allowed
    /// (rule gone, source gone, another local user) ends with "Access revoked.".
    pub(super) fn recheck_ssh(&mut self) {
        let now = self.clock.now();
        let mut revoked = Vec::new();
        for (session, conn) in &self.ssh.conns {
            if matches!(conn.login, Login::Waiting) {
                continue;
            }
            // The same node behind the connection's WireGuard key, and the same decision.
            let key = self.node.netmap_peer(conn.peer).map(|p| p.public_key);
            let same_source = self
                .netmap()
                .zip(key)
                .and_then(|(netmap, key)| source_of(netmap, &key))
                .is_some_and(|(id, _)| Some(id) == conn.source);
            let still = same_source
                && self
                    .current_access(&conn.requested_user, conn.source)
                    .is_some_and(|(local_user, _, _)| local_user == conn.local_user);
            if !still {
                revoked.push(*session);
            }
        }
        for session in revoked {
            info!(session = session.as_u64(), "SSH access revoked");
            if let Some(mut conn) = self.ssh.conns.remove(&session) {
                let (login, local_user) = (conn.requested_user.clone(), conn.local_user.clone());
                self.audit_ssh(conn.source, &login, &local_user, conn.rule, SshOutcome::Revoked);
                if let Login::Running(host) = &mut conn.login {
                    self.node.ssh_session(now, session, |s| host.notify_all(s, now, REVOKED));
                }
                self.end_ssh(session, conn);
            }
            self.node.ssh_session(now, session, |s| s.disconnect(now, "Access revoked."));
        }
        self.drain_node();
        self.flush();
    }

    /// A descriptor of an SSH channel is ready.
    pub(super) fn ssh_ready(&mut self, token: Token, readable: bool, writable: bool) {
        let Some(&(session, target)) = self.ssh.tokens.map.get(&token) else { return };
        if let Some(Login::Running(host)) = self.ssh.conns.get_mut(&session).map(|c| &mut c.login) {
            host.mark_ready(target, readable, writable);
        }
        self.service_ssh(session);
        // What the session wrote leaves now, not with the next packet that wakes the loop.
        self.drain_node();
        self.flush();
    }

    /// Every session looked at: exits (after SIGCHLD or the poll), held checks running out.
    pub(super) fn ssh_timers(&mut self) {
        let now = self.clock.now();
        self.ssh.last_poll = Some(now);
        let sessions: Vec<SessionId> = self.ssh.conns.keys().copied().collect();
        for session in sessions {
            let expired = matches!(
                self.ssh.conns.get(&session).map(|c| &c.login),
                Some(Login::Held { since, .. }) if now.saturating_duration_since(*since) >= CHECK_HOLD
            );
            if expired {
                if let Some(conn) = self.ssh.conns.get(&session) {
                    let (src, login, local_user) = (conn.source, conn.requested_user.clone(), conn.local_user.clone());
                    let reason = "the check was not completed in time".to_string();
                    self.audit_ssh(src, &login, &local_user, conn.rule, SshOutcome::Denied { reason });
                }
                self.deny(now, session, "the check was not completed in time");
                continue;
            }
            self.service_ssh(session);
        }
        self.drain_node();
        self.flush();
    }

    /// Move what one session's channels can move now.
    fn service_ssh(&mut self, session: SessionId) {
        let now = self.clock.now();
        for _ in 0..16 {
            let budget = self.node.ssh_budget(session);
            let Some(Login::Running(host)) = self.ssh.conns.get_mut(&session).map(|c| &mut c.login) else { return };
            let registry = self.poll.registry();
            let mut tokens = SessionTokens { table: &mut self.ssh.tokens, session };
            let progress = self.node.ssh_session(now, session, |s| host.service(s, now, budget, registry, &mut tokens));
            if progress != Some(true) {
                break;
            }
        }
    }
}

/// "just now", "5 minutes ago", "3 hours ago": how long ago a check's user authenticated.
fn ago(secs: u64) -> String {
    let (n, unit) = match secs {
        0..=59 => return "just now".to_string(),
        60..=3599 => (secs / 60, "minute"),
        3600..=86_399 => (secs / 3600, "hour"),
        _ => (secs / 86_400, "day"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

/// Whether `name` is a local account a session may run as (NSS, `getent` semantics; locked,
/// expired and nologin refused as OpenSSH does), said in words for the banner when not.
fn account_usable(name: &str, allow_root: bool) -> Result<(), String> {
    crate::session::check_account(name, allow_root).map_err(|error| {
        debug!(%error, name, "account refused");
        error.to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::ago;

    #[test]
    fn check_ages_read_as_a_person_would_say_them() {
        assert_eq!(ago(5), "just now");
        assert_eq!(ago(60), "1 minute ago");
        assert_eq!(ago(7200), "2 hours ago");
        assert_eq!(ago(3 * 86_400 + 5), "3 days ago");
    }
}
