//! The HTTP/1.1 Upgrade that turns a connection to the server's HTTP port into a control
//! channel (see the [module doc](super)). The node writes [`upgrade_request`] and reads the
//! answer with an [`UpgradeReader`]; the server, which serves HTTP with a real HTTP stack,
//! only needs [`is_upgrade_request`] to recognise the request (and [`upgrade_response`] if it
//! writes the answer itself).

use bytes::Bytes;
use thiserror::Error;

/// The request path of the upgrade.
pub const UPGRADE_PATH: &str = "/control";
/// The protocol named in the `Upgrade` header, both ways.
pub const UPGRADE_PROTOCOL: &str = "meshcontrol-v1";
/// Longest response header block the node reads (status line, headers and the empty line).
pub const MAX_HEADER_LEN: usize = 8 * 1024;
/// Most header lines in the response.
const MAX_HEADERS: usize = 64;
/// Longest reason phrase (or wrong protocol name) kept in an error.
const MAX_SHOWN: usize = 256;

/// The node's upgrade request to `host` (the `Host` header: the server's name, with a port
/// when it is not the default). `host` comes from the node's configuration; bytes that
/// cannot appear in a `Host` header (controls, spaces, non-ASCII) are left out, so a bad
/// configuration cannot inject header lines.
pub fn upgrade_request(host: &str) -> Vec<u8> {
    let host: String = host.chars().filter(|c| c.is_ascii_graphic()).collect();
    format!(
        "POST {UPGRADE_PATH} HTTP/1.1\r\nHost: {host}\r\nUpgrade: {UPGRADE_PROTOCOL}\r\nConnection: upgrade\r\n\r\n"
    )
    .into_bytes()
}

/// The server's answer that switches the connection to the control channel.
pub fn upgrade_response() -> Vec<u8> {
    format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: {UPGRADE_PROTOCOL}\r\nConnection: upgrade\r\n\r\n")
        .into_bytes()
}

/// Whether a request is the control upgrade: `POST` to [`UPGRADE_PATH`] with an `Upgrade`
/// header naming [`UPGRADE_PROTOCOL`] and a `Connection` header with the `upgrade` option
/// (header names and these tokens compared without regard to case, as HTTP says; the
/// method and path exactly). `headers` are (name, value) pairs as the HTTP stack gives them.
pub fn is_upgrade_request<'a>(
    method: &str,
    path: &str,
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> bool {
    let (mut upgrade, mut connection) = (false, false);
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("upgrade") {
            upgrade |= has_token(value, UPGRADE_PROTOCOL);
        } else if name.eq_ignore_ascii_case("connection") {
            connection |= has_token(value, "upgrade");
        }
    }
    method == "POST" && path == UPGRADE_PATH && upgrade && connection
}

/// Whether a comma-separated header value lists `token` (without regard to case).
fn has_token(value: &[u8], token: &str) -> bool {
    value.split(|&b| b == b',').any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Where reading the server's answer stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpgradeStatus {
    /// The header block is not complete yet: feed more bytes.
    Pending,
    /// The server switched to the control channel. `rest` are the bytes that came after
    /// the header block: the start of the channel's stream, for its `handle_input`.
    Switched { rest: Bytes },
}

/// Why the upgrade failed. The connection should be closed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum UpgradeError {
    #[error("the server answered {code} {reason:?} instead of 101 Switching Protocols")]
    Status { code: u16, reason: String },
    #[error("the server's 101 response has no Upgrade header")]
    MissingUpgrade,
    #[error("the server's 101 response upgrades to {0:?}, not {UPGRADE_PROTOCOL}")]
    WrongUpgrade(String),
    #[error("the server's response header is longer than {MAX_HEADER_LEN} bytes")]
    HeaderTooLarge,
    #[error("malformed HTTP response: {0}")]
    Malformed(String),
}

/// The node's reader of the server's answer to [`upgrade_request`], sans-IO: feed it the
/// bytes read from the connection until it says [`UpgradeStatus::Switched`] or fails. It
/// holds at most [`MAX_HEADER_LEN`] bytes plus one read.
#[derive(Debug, Default)]
pub struct UpgradeReader {
    buf: Vec<u8>,
    state: ReaderState,
}

#[derive(Debug, Default)]
enum ReaderState {
    #[default]
    Reading,
    Switched,
    Failed(UpgradeError),
}

impl UpgradeReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes read from the connection. After [`UpgradeStatus::Switched`] every further byte
    /// belongs to the channel and is handed back as `rest` unchanged; after an error every
    /// call returns that error.
    pub fn handle_input(&mut self, bytes: &[u8]) -> Result<UpgradeStatus, UpgradeError> {
        match &self.state {
            ReaderState::Reading => {}
            ReaderState::Switched => return Ok(UpgradeStatus::Switched { rest: Bytes::copy_from_slice(bytes) }),
            ReaderState::Failed(e) => return Err(e.clone()),
        }
        self.buf.extend_from_slice(bytes);
        match self.parse() {
            Ok(Some(header_len)) => {
                let rest = Bytes::copy_from_slice(self.buf.get(header_len..).unwrap_or_default());
                self.buf = Vec::new();
                self.state = ReaderState::Switched;
                Ok(UpgradeStatus::Switched { rest })
            }
            Ok(None) => Ok(UpgradeStatus::Pending),
            Err(e) => {
                self.buf = Vec::new();
                self.state = ReaderState::Failed(e.clone());
                Err(e)
            }
        }
    }

    /// The length of the header block once it is complete and valid, `None` while bytes
    /// are missing.
    fn parse(&self) -> Result<Option<usize>, UpgradeError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let header_len = match response.parse(&self.buf) {
            Ok(httparse::Status::Complete(n)) if n <= MAX_HEADER_LEN => n,
            Ok(httparse::Status::Complete(_)) => return Err(UpgradeError::HeaderTooLarge),
            Ok(httparse::Status::Partial) if self.buf.len() > MAX_HEADER_LEN => {
                return Err(UpgradeError::HeaderTooLarge)
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(UpgradeError::Malformed(e.to_string())),
        };
        let code = response.code.unwrap_or_default();
        if code != 101 {
            return Err(UpgradeError::Status { code, reason: shown(response.reason.unwrap_or_default().as_bytes()) });
        }
        if response.version != Some(1) {
            return Err(UpgradeError::Malformed("101 Switching Protocols in an HTTP/1.0 response".into()));
        }
        let mut upgrades = response.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("upgrade")).peekable();
        if upgrades.peek().is_none() {
            return Err(UpgradeError::MissingUpgrade);
        }
        for header in upgrades {
            if !header.value.trim_ascii().eq_ignore_ascii_case(UPGRADE_PROTOCOL.as_bytes()) {
                return Err(UpgradeError::WrongUpgrade(shown(header.value)));
            }
        }
        Ok(Some(header_len))
    }
}

/// Text from the server for an error message: at most [`MAX_SHOWN`] bytes, lossily decoded.
fn shown(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes.get(..MAX_SHOWN).unwrap_or(bytes)).into_owned()
}

/// The server's reader of a node's upgrade request, sans-IO, for a server that has no
/// HTTP stack of its own in front of the channel (the simulator; `meshcontrol` uses
/// hyper's upgrade instead). Anything but the control upgrade is an error; the answer to a
/// valid request is [`upgrade_response`].
#[derive(Debug, Default)]
pub struct RequestReader {
    buf: Vec<u8>,
    done: bool,
}

impl RequestReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes read from the connection; `Switched { rest }` once the request is complete.
    pub fn handle_input(&mut self, bytes: &[u8]) -> Result<UpgradeStatus, UpgradeError> {
        if self.done {
            return Ok(UpgradeStatus::Switched { rest: Bytes::copy_from_slice(bytes) });
        }
        self.buf.extend_from_slice(bytes);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        let header_len = match request.parse(&self.buf) {
            Ok(httparse::Status::Complete(n)) if n <= MAX_HEADER_LEN => n,
            Ok(httparse::Status::Complete(_)) => return Err(UpgradeError::HeaderTooLarge),
            Ok(httparse::Status::Partial) if self.buf.len() > MAX_HEADER_LEN => {
                return Err(UpgradeError::HeaderTooLarge)
            }
            Ok(httparse::Status::Partial) => return Ok(UpgradeStatus::Pending),
            Err(e) => return Err(UpgradeError::Malformed(e.to_string())),
        };
        let headers = request.headers.iter().map(|h| (h.name, h.value));
        if !is_upgrade_request(request.method.unwrap_or_default(), request.path.unwrap_or_default(), headers) {
            return Err(UpgradeError::Malformed("not a control upgrade request".into()));
        }
        let rest = Bytes::copy_from_slice(self.buf.get(header_len..).unwrap_or_default());
        self.buf = Vec::new();
        self.done = true;
        Ok(UpgradeStatus::Switched { rest })
    }
}
