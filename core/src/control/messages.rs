//! The messages of the control protocol, both directions, and their encoding.
//!
//! Each message travels as one application message of the secure channel: a version byte
//! ([`VERSION`]) and then the message in `postcard` (serde's compact binary form). A
//! decoder allocates no more than its input can describe, and the channel bounds the input.
//!
//! Netmap deltas avoid the traps Tailscale's format has (REFERENCE.md): removals are an
//! explicit list (an empty peer list never means "unchanged"), and a filter or SSH rule set
//! that did not change is `None`, while an empty one (deny all) is `Some(vec![])`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ip::filter::FilterRule;
use crate::policy::{NodeId, NodeSshRule};
use crate::wireguard::{IpPrefix, PublicKey};

/// The encoding's version; a message of another version is refused by name.
pub const VERSION: u8 = 1;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum MessageError {
    #[error("empty message")]
    Empty,
    #[error("message version {0}, this build speaks {VERSION}")]
    Version(u8),
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// Node -> server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeMessage {
    /// Join the tailnet (or come back: a known machine key with the same node key is
    /// simply recognised).
    Register(Register),
    /// Start the map stream: a full netmap, then deltas.
    Map { endpoints: Vec<SocketAddr> },
    /// The node's UDP endpoints changed.
    Endpoints(Vec<SocketAddr>),
    /// A login matched a `check` rule: may it proceed?
    Check(CheckRequest),
    /// Replace the node key (the machine key stays).
    RotateKey { node_key: PublicKey },
    /// Leave the tailnet: the node is removed.
    Logout,
    /// What the node's SSH server decided about a login, for the server's audit log.
    SshAudit(SshAudit),
}

/// One SSH decision a node took (holds are logged by the server when it creates them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshAudit {
    /// The node the login came from; `None` when it was not in the node's netmap.
    pub src: Option<NodeId>,
    /// The login name the client asked for.
    pub login: String,
    /// The local account it maps to (empty when none).
    pub local_user: String,
    /// The index of the policy's `ssh` entry that decided (`None`: no rule matched).
    pub rule: Option<u32>,
    pub outcome: SshOutcome,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SshOutcome {
    Accepted,
    Denied {
        reason: String,
    },
    /// A live connection ended because the netmap no longer allows it.
    Revoked,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Register {
    pub node_key: PublicKey,
    pub hostname: String,
    /// OpenSSH public key lines of the node's SSH host keys.
    pub ssh_host_keys: Vec<String>,
    pub requested_tags: Vec<String>,
    /// Serves SSH on its mesh address (`meshctl up --ssh`).
    pub ssh: bool,
    pub auth: RegisterAuth,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegisterAuth {
    /// A pre-authentication key (`meshcontrol preauthkeys create`).
    AuthKey(String),
    /// No key: the server answers with a login URL.
    Interactive,
    /// Already registered: identified by the machine key of the channel.
    Known,
}

impl std::fmt::Debug for RegisterAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegisterAuth::AuthKey(_) => f.write_str("AuthKey(<redacted>)"),
            RegisterAuth::Interactive => f.write_str("Interactive"),
            RegisterAuth::Known => f.write_str("Known"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRequest {
    /// Chosen by the node; the answer carries it back.
    pub id: u64,
    /// The node the login comes from.
    pub src: NodeId,
    pub local_user: String,
    /// The index of the policy's `ssh` entry that asked for the check.
    pub rule: u32,
}

/// Server -> node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerMessage {
    Registered(Registered),
    /// Interactive registration: the user must log in at `url`.
    LoginNeeded {
        url: String,
    },
    /// The request was refused; nothing changed.
    Rejected {
        reason: String,
    },
    Map(Netmap),
    Delta(MapDelta),
    /// Sent when nothing else was for about 50 s; a node reconnects after 120 s of silence.
    KeepAlive,
    CheckAnswer {
        id: u64,
        answer: CheckAnswer,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    pub node: NodeId,
    pub name: String,
    pub user: String,
    pub addresses: Vec<IpAddr>,
    /// Unix seconds; `None` for nodes whose key never expires (tagged nodes).
    pub key_expiry: Option<u64>,
}

/// A peer as a node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub id: NodeId,
    /// DNS label (`laptop`); the FQDN is `<name>.<dns_domain>`.
    pub name: String,
    pub user: String,
    pub tags: Vec<String>,
    pub node_key: PublicKey,
    pub addresses: Vec<IpAddr>,
    pub routes: Vec<IpPrefix>,
    pub endpoints: Vec<SocketAddr>,
    pub ssh_host_keys: Vec<String>,
    pub key_expiry: Option<u64>,
    pub online: bool,
}

/// Everything a node needs: the first message of a map stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Netmap {
    /// Increases with every map message of the stream.
    pub version: u64,
    /// Shared with the peers' maps on the server (encoded the same either way).
    pub node: Arc<Peer>,
    /// Shared with every other node's map on the server (encoded the same either way).
    pub peers: Vec<Arc<Peer>>,
    /// Shared with the server's compiled state (and other nodes of the same class).
    pub filter: Arc<Vec<FilterRule>>,
    pub ssh: Arc<Vec<NodeSshRule>>,
    pub dns_domain: String,
}

/// What changed since the previous map message.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapDelta {
    pub version: u64,
    /// Peers added or changed (whole entries, sorted by id).
    pub upsert: Vec<Arc<Peer>>,
    /// Peers gone (sorted).
    pub remove: Vec<NodeId>,
    /// A new filter (`Some(vec![])` denies everything), or `None`: unchanged.
    pub filter: Option<Arc<Vec<FilterRule>>>,
    pub ssh: Option<Arc<Vec<NodeSshRule>>>,
    /// This node's own entry changed (addresses, key expiry, name).
    pub node: Option<Arc<Peer>>,
}

impl MapDelta {
    pub fn is_empty(&self) -> bool {
        self.upsert.is_empty()
            && self.remove.is_empty()
            && self.filter.is_none()
            && self.ssh.is_none()
            && self.node.is_none()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckAnswer {
    /// The login may proceed; the user authenticated this long ago.
    Approved {
        authenticated_secs_ago: u64,
    },
    /// Not yet: show `url`, keep holding; another answer follows.
    Pending {
        url: String,
    },
    Rejected {
        reason: String,
    },
}

/// A message as bytes: the version, then postcard.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    let mut out = vec![VERSION];
    // Serializing these types into a Vec cannot fail (no maps with non-string keys,
    // no sequences of unknown length); an error would leave just the version byte,
    // which every decoder refuses.
    if let Ok(body) = postcard::to_allocvec(message) {
        out.extend_from_slice(&body);
    }
    out
}

/// Decodes one message; every byte must be used.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, MessageError> {
    let (&version, body) = bytes.split_first().ok_or(MessageError::Empty)?;
    if version != VERSION {
        return Err(MessageError::Version(version));
    }
    let (message, rest) = postcard::take_from_bytes(body).map_err(|e| MessageError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(MessageError::Malformed(format!("{} bytes after the message", rest.len())));
    }
    Ok(message)
}
