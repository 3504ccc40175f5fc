//! The identification exchange (RFC 4253 section 4.2): `SSH-2.0-software comments\r\n`.
//!
//! Reading is bounded: a line is at most 255 bytes, and a client accepts at most
//! [`MAX_PRE_BANNER_LINES`] other lines from a server before its identification (a server
//! accepts none). Nothing is buffered beyond one line.

use thiserror::Error;

/// Our identification string (without CR LF).
pub const OUR_IDENTIFICATION: &str = concat!("SSH-2.0-meshd_", env!("CARGO_PKG_VERSION"));
/// RFC 4253: the identification line, CR LF included, is at most 255 bytes.
pub const MAX_LINE: usize = 255;
/// Lines a client accepts before the server's identification.
pub const MAX_PRE_BANNER_LINES: usize = 32;

/// Why the peer's identification is refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum VersionError {
    #[error("identification line longer than 255 bytes")]
    LineTooLong,
    #[error("too many lines before the identification")]
    TooManyLines,
    #[error("protocol version {0:?} is not 2.0")]
    Unsupported(String),
    #[error("identification contains invalid characters")]
    BadCharacters,
    #[error("peer sent something other than an identification line first")]
    NotSsh,
}

/// Reads the peer's identification from a byte stream.
#[derive(Debug, Clone)]
pub struct VersionReader {
    line: Vec<u8>,
    other_lines: usize,
    /// Whether lines before the identification are allowed (we are the client).
    allow_pre_banner: bool,
}

impl VersionReader {
    /// For a server (`allow_pre_banner == false`) or a client.
    pub fn new(allow_pre_banner: bool) -> Self {
        Self { line: Vec::new(), other_lines: 0, allow_pre_banner }
    }

    /// Feed received bytes. Returns the identification (without CR LF) and how many bytes
    /// of `input` it used, once complete; bytes after it belong to the packet layer.
    pub fn feed(&mut self, input: &[u8]) -> Result<Option<(String, usize)>, VersionError> {
        for (i, &b) in input.iter().enumerate() {
            if b != b'\n' {
                if self.line.len() >= MAX_LINE {
                    return Err(VersionError::LineTooLong);
                }
                self.line.push(b);
                continue;
            }
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.starts_with(b"SSH-") {
                return Self::check(line).map(|id| Some((id, i + 1)));
            }
            if !self.allow_pre_banner {
                return Err(VersionError::NotSsh);
            }
            self.other_lines += 1;
            if self.other_lines > MAX_PRE_BANNER_LINES {
                return Err(VersionError::TooManyLines);
            }
        }
        Ok(None)
    }

    fn check(line: Vec<u8>) -> Result<String, VersionError> {
        let id = String::from_utf8(line).map_err(|_| VersionError::BadCharacters)?;
        if id.bytes().any(|b| b.is_ascii_control()) {
            return Err(VersionError::BadCharacters);
        }
        let proto = id.split('-').nth(1).unwrap_or("");
        if proto != "2.0" && proto != "1.99" {
            return Err(VersionError::Unsupported(proto.to_string()));
        }
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_identification_in_pieces() {
        let mut r = VersionReader::new(false);
        assert_eq!(r.feed(b"SSH-2.0-Open"), Ok(None));
        let got = r.feed(b"SSH_9.2p1 Debian-2\r\n\x00\x00\x01");
        assert_eq!(got, Ok(Some(("SSH-2.0-OpenSSH_9.2p1 Debian-2".to_string(), 20))));
    }

    #[test]
    fn pre_banner_lines_only_for_clients_and_bounded() {
        assert_eq!(VersionReader::new(false).feed(b"hello\r\nSSH-2.0-x\r\n"), Err(VersionError::NotSsh));
        let mut client = VersionReader::new(true);
        assert!(matches!(client.feed(b"hello\r\nSSH-2.0-x\r\n"), Ok(Some(_))));
        let flood = b"x\r\n".repeat(MAX_PRE_BANNER_LINES + 1);
        assert_eq!(VersionReader::new(true).feed(&flood), Err(VersionError::TooManyLines));
    }

    #[test]
    fn refuses_long_lines_old_versions_and_control_characters() {
        assert_eq!(VersionReader::new(false).feed(&[b'S'; 300]), Err(VersionError::LineTooLong));
        assert_eq!(VersionReader::new(false).feed(b"SSH-1.5-old\r\n"), Err(VersionError::Unsupported("1.5".into())));
        assert_eq!(VersionReader::new(false).feed(b"SSH-2.0-a\x01b\r\n"), Err(VersionError::BadCharacters));
        assert!(matches!(VersionReader::new(false).feed(b"SSH-1.99-compat\n"), Ok(Some(_))));
    }
}
