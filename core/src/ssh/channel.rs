//! The typed contents of connection-protocol messages (RFC 4254 and OpenSSH's
//! PROTOCOL): channel kinds of CHANNEL_OPEN, channel requests, global requests. Decoding
//! borrows nothing past the call and bounds every string by the packet it came in.

use super::terminal::{encode_modes, parse_modes, ModesError};
use super::wire::{peer_text, Reader, WireError, Writer};

/// A channel, named by our (local) channel number. Made only by the connection that owns
/// the channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId(pub(crate) u32);

impl ChannelId {
    /// Our channel number (for logs and traces).
    pub fn as_u32(self) -> u32 {
        self.0
    }
}

/// What a channel carries (the CHANNEL_OPEN type and its fields).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChannelKind {
    Session,
    /// `ssh -L`: the client asks the server to connect to `host:port`.
    DirectTcpip {
        host: String,
        port: u32,
        originator: String,
        originator_port: u32,
    },
    /// A connection to a port the client asked the server to listen on (`ssh -R`).
    ForwardedTcpip {
        address: String,
        port: u32,
        originator: String,
        originator_port: u32,
    },
    /// The server reaching the client's SSH agent.
    AuthAgent,
    /// Any other type (x11, tun@openssh.com, ...): refused.
    Other(String),
}

impl ChannelKind {
    pub fn type_name(&self) -> &str {
        match self {
            ChannelKind::Session => "session",
            ChannelKind::DirectTcpip { .. } => "direct-tcpip",
            ChannelKind::ForwardedTcpip { .. } => "forwarded-tcpip",
            ChannelKind::AuthAgent => "auth-agent@openssh.com",
            ChannelKind::Other(name) => name,
        }
    }

    /// The type-specific fields after the common CHANNEL_OPEN header.
    pub fn decode(type_name: &[u8], r: &mut Reader<'_>) -> Result<Self, WireError> {
        let kind = match type_name {
            b"session" => ChannelKind::Session,
            b"direct-tcpip" => ChannelKind::DirectTcpip {
                host: r.utf8()?.to_string(),
                port: r.u32()?,
                originator: r.utf8()?.to_string(),
                originator_port: r.u32()?,
            },
            b"forwarded-tcpip" => ChannelKind::ForwardedTcpip {
                address: r.utf8()?.to_string(),
                port: r.u32()?,
                originator: r.utf8()?.to_string(),
                originator_port: r.u32()?,
            },
            b"auth-agent@openssh.com" => ChannelKind::AuthAgent,
            other => return Ok(ChannelKind::Other(peer_text(other, 64, false))),
        };
        r.finish()?;
        Ok(kind)
    }

    pub fn encode_fields(&self, w: &mut Writer) {
        match self {
            ChannelKind::DirectTcpip { host: a, port, originator, originator_port }
            | ChannelKind::ForwardedTcpip { address: a, port, originator, originator_port } => {
                w.string(a.as_bytes()).u32(*port).string(originator.as_bytes()).u32(*originator_port);
            }
            ChannelKind::Session | ChannelKind::AuthAgent | ChannelKind::Other(_) => {}
        }
    }
}

/// A `pty-req`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PtyRequest {
    pub term: String,
    pub cols: u32,
    pub rows: u32,
    pub width_px: u32,
    pub height_px: u32,
    /// Parsed terminal modes, (opcode, argument) in order.
    pub modes: Vec<(u8, u32)>,
}

/// A CHANNEL_REQUEST's type and fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChannelRequest {
    Pty(PtyRequest),
    Env {
        name: String,
        value: String,
    },
    Shell,
    Exec(Vec<u8>),
    Subsystem(String),
    WindowChange {
        cols: u32,
        rows: u32,
        width_px: u32,
        height_px: u32,
    },
    Signal(String),
    ExitStatus(u32),
    ExitSignal {
        signal: String,
        core_dumped: bool,
        message: String,
    },
    AuthAgent,
    /// OpenSSH's "no more data will be read" hint: no reply, nothing to do.
    Eow,
    /// Unknown or unsupported (x11-req, keepalive@openssh.com, ...): answered with failure.
    Other(String),
}

/// A channel request that cannot be decoded.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum RequestError {
    #[error("{0}")]
    Wire(#[from] WireError),
    #[error("{0}")]
    Modes(#[from] ModesError),
}

impl ChannelRequest {
    pub fn type_name(&self) -> &str {
        match self {
            ChannelRequest::Pty(_) => "pty-req",
            ChannelRequest::Env { .. } => "env",
            ChannelRequest::Shell => "shell",
            ChannelRequest::Exec(_) => "exec",
            ChannelRequest::Subsystem(_) => "subsystem",
            ChannelRequest::WindowChange { .. } => "window-change",
            ChannelRequest::Signal(_) => "signal",
            ChannelRequest::ExitStatus(_) => "exit-status",
            ChannelRequest::ExitSignal { .. } => "exit-signal",
            ChannelRequest::AuthAgent => "auth-agent-req@openssh.com",
            ChannelRequest::Eow => "eow@openssh.com",
            ChannelRequest::Other(name) => name,
        }
    }

    /// The fields after `want_reply`.
    pub fn decode(type_name: &[u8], r: &mut Reader<'_>) -> Result<Self, RequestError> {
        let request = match type_name {
            b"pty-req" => ChannelRequest::Pty(PtyRequest {
                term: r.utf8()?.to_string(),
                cols: r.u32()?,
                rows: r.u32()?,
                width_px: r.u32()?,
                height_px: r.u32()?,
                modes: parse_modes(r.string()?)?,
            }),
            b"env" => ChannelRequest::Env { name: r.utf8()?.to_string(), value: r.utf8()?.to_string() },
            b"shell" => ChannelRequest::Shell,
            b"exec" => ChannelRequest::Exec(r.string()?.to_vec()),
            b"subsystem" => ChannelRequest::Subsystem(r.utf8()?.to_string()),
            b"window-change" => {
                ChannelRequest::WindowChange { cols: r.u32()?, rows: r.u32()?, width_px: r.u32()?, height_px: r.u32()? }
            }
            b"signal" => ChannelRequest::Signal(r.utf8()?.to_string()),
            b"exit-status" => ChannelRequest::ExitStatus(r.u32()?),
            b"exit-signal" => {
                let signal = r.utf8()?.to_string();
                let core_dumped = r.bool()?;
                let message = r.utf8()?.to_string();
                let _language = r.string()?;
                ChannelRequest::ExitSignal { signal, core_dumped, message }
            }
            b"auth-agent-req@openssh.com" => ChannelRequest::AuthAgent,
            b"eow@openssh.com" => ChannelRequest::Eow,
            other => return Ok(ChannelRequest::Other(peer_text(other, 64, false))),
        };
        r.finish()?;
        Ok(request)
    }

    pub fn encode_fields(&self, w: &mut Writer) {
        match self {
            ChannelRequest::Pty(p) => {
                w.string(p.term.as_bytes()).u32(p.cols).u32(p.rows).u32(p.width_px).u32(p.height_px);
                w.string(&encode_modes(&p.modes));
            }
            ChannelRequest::Env { name, value } => {
                w.string(name.as_bytes()).string(value.as_bytes());
            }
            ChannelRequest::Exec(command) => {
                w.string(command);
            }
            ChannelRequest::Subsystem(name) | ChannelRequest::Signal(name) => {
                w.string(name.as_bytes());
            }
            ChannelRequest::WindowChange { cols, rows, width_px, height_px } => {
                w.u32(*cols).u32(*rows).u32(*width_px).u32(*height_px);
            }
            ChannelRequest::ExitStatus(code) => {
                w.u32(*code);
            }
            ChannelRequest::ExitSignal { signal, core_dumped, message } => {
                w.string(signal.as_bytes()).bool(*core_dumped).string(message.as_bytes()).string(b"");
            }
            ChannelRequest::Shell | ChannelRequest::AuthAgent | ChannelRequest::Eow | ChannelRequest::Other(_) => {}
        }
    }
}

/// A GLOBAL_REQUEST's type and fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GlobalRequest {
    /// `ssh -R`: listen on `address:port` (0 = pick one) and open forwarded-tcpip channels.
    TcpipForward {
        address: String,
        port: u32,
    },
    CancelTcpipForward {
        address: String,
        port: u32,
    },
    /// keepalive@openssh.com, no-more-sessions@openssh.com, hostkeys-00@openssh.com, ...:
    /// answered with failure (as OpenSSH expects for keepalives).
    Other(String),
}

impl GlobalRequest {
    pub fn type_name(&self) -> &str {
        match self {
            GlobalRequest::TcpipForward { .. } => "tcpip-forward",
            GlobalRequest::CancelTcpipForward { .. } => "cancel-tcpip-forward",
            GlobalRequest::Other(name) => name,
        }
    }

    pub fn decode(type_name: &[u8], r: &mut Reader<'_>) -> Result<Self, WireError> {
        let request = match type_name {
            b"tcpip-forward" => GlobalRequest::TcpipForward { address: r.utf8()?.to_string(), port: r.u32()? },
            b"cancel-tcpip-forward" => {
                GlobalRequest::CancelTcpipForward { address: r.utf8()?.to_string(), port: r.u32()? }
            }
            // Unknown requests may carry anything; it is not read.
            other => return Ok(GlobalRequest::Other(peer_text(other, 64, false))),
        };
        r.finish()?;
        Ok(request)
    }

    pub fn encode_fields(&self, w: &mut Writer) {
        match self {
            GlobalRequest::TcpipForward { address, port } | GlobalRequest::CancelTcpipForward { address, port } => {
                w.string(address.as_bytes()).u32(*port);
            }
            GlobalRequest::Other(_) => {}
        }
    }
}

/// CHANNEL_OPEN_FAILURE reason codes (RFC 4254 section 5.1).
pub mod open_failure {
    pub const ADMINISTRATIVELY_PROHIBITED: u32 = 1;
    pub const CONNECT_FAILED: u32 = 2;
    pub const UNKNOWN_CHANNEL_TYPE: u32 = 3;
    pub const RESOURCE_SHORTAGE: u32 = 4;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(request: ChannelRequest) {
        let mut w = Writer::new();
        request.encode_fields(&mut w);
        let bytes = w.finish();
        let decoded = ChannelRequest::decode(request.type_name().as_bytes(), &mut Reader::new(&bytes));
        assert_eq!(decoded, Ok(request));
    }

    #[test]
    fn requests_round_trip() {
        round_trip(ChannelRequest::Pty(PtyRequest {
            term: "xterm".into(),
            cols: 80,
            rows: 24,
            width_px: 0,
            height_px: 0,
            modes: vec![(1, 3), (128, 38400)],
        }));
        round_trip(ChannelRequest::Env { name: "LANG".into(), value: "C.UTF-8".into() });
        round_trip(ChannelRequest::Exec(b"echo \xff".to_vec()));
        round_trip(ChannelRequest::Subsystem("sftp".into()));
        round_trip(ChannelRequest::WindowChange { cols: 1, rows: 2, width_px: 3, height_px: 4 });
        round_trip(ChannelRequest::ExitSignal { signal: "TERM".into(), core_dumped: true, message: "x".into() });
        round_trip(ChannelRequest::ExitStatus(7));
        round_trip(ChannelRequest::Shell);
    }

    #[test]
    fn truncated_or_trailing_fields_are_errors() {
        let mut r = Reader::new(&[0, 0, 0, 9, b'a']);
        assert_eq!(ChannelRequest::decode(b"exec", &mut r), Err(RequestError::Wire(WireError::Truncated)));
        let mut r = Reader::new(&[0, 0, 0, 1, 1, 9]);
        assert_eq!(ChannelRequest::decode(b"exit-status", &mut r), Err(RequestError::Wire(WireError::Trailing)));
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(ChannelRequest::decode(b"x11-req", &mut r), Ok(ChannelRequest::Other("x11-req".into())));
    }
}
