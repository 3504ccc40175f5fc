//! Check mode: a node holds an SSH login that matched a `check` rule and asks the server.

use super::{ConnId, ControlServer};
use crate::control::messages::{CheckAnswer, CheckRequest, ServerMessage};
use crate::time::Instant;

impl ControlServer {
    // ---- check mode ----------------------------------------------------------------------

    pub(super) fn check(&mut self, now: Instant, conn: ConnId, request: CheckRequest) {
        let answer = match self.nodes.get(&request.src) {
            None => CheckAnswer::Rejected { reason: "unknown source node".into() },
            Some(n) if !n.tags.is_empty() => {
                CheckAnswer::Rejected { reason: "tagged nodes cannot pass check mode: no person is behind them".into() }
            }
            Some(_) => CheckAnswer::Rejected { reason: "check approval is not available on this server yet".into() },
        };
        self.send(now, conn, ServerMessage::CheckAnswer { id: request.id, answer });
    }
}
