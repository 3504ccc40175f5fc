//! Checks of the SSH configurations: values that would break the protocol or turn a limit
//! into a busy loop (a zero window, a rekey after every packet, a timer of zero) are
//! refused up front with an error that names the field, not discovered at run time.

use std::time::Duration;

use thiserror::Error;

use super::client::ClientConfig;
use super::connection::ConnectionConfig;
use super::kexinit::CIPHERS;
use super::packet::MAX_PACKET_LEN;
use super::server::ServerConfig;
use super::transport::TransportConfig;

/// An SSH configuration the core refuses.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SshConfigError {
    #[error("ssh: {0} must not be zero")]
    Zero(&'static str),
    #[error("ssh: {field} is {value}, above the protocol's limit of {limit}")]
    AboveLimit { field: &'static str, value: u64, limit: u64 },
    #[error("ssh: window {window} is smaller than max_packet {max_packet}")]
    WindowBelowPacket { window: u32, max_packet: u32 },
    #[error("ssh: unknown cipher {0:?}")]
    UnknownCipher(String),
    #[error("ssh: no cipher offered")]
    NoCipher,
}

/// Rekeying more often than every 64 KiB would spend the connection on key exchanges.
const MIN_REKEY_BYTES: u64 = 64 << 10;
/// Channels per connection beyond this are a configuration mistake (OpenSSH has no limit
/// but its file descriptors; ours are state in memory).
const MAX_CHANNELS: usize = 4096;

fn nonzero(field: &'static str, value: Duration) -> Result<(), SshConfigError> {
    if value.is_zero() {
        return Err(SshConfigError::Zero(field));
    }
    Ok(())
}

impl TransportConfig {
    pub fn validate(&self) -> Result<(), SshConfigError> {
        if self.rekey_bytes < MIN_REKEY_BYTES {
            return Err(SshConfigError::Zero("rekey_bytes (at least 64 KiB)"));
        }
        nonzero("rekey_interval", self.rekey_interval)?;
        if self.ciphers.is_empty() {
            return Err(SshConfigError::NoCipher);
        }
        if let Some(unknown) = self.ciphers.iter().find(|c| !CIPHERS.contains(&c.as_str())) {
            return Err(SshConfigError::UnknownCipher(unknown.clone()));
        }
        Ok(())
    }
}

impl ConnectionConfig {
    pub fn validate(&self) -> Result<(), SshConfigError> {
        if self.window == 0 {
            return Err(SshConfigError::Zero("window"));
        }
        if self.max_packet == 0 {
            return Err(SshConfigError::Zero("max_packet"));
        }
        // A data message must fit a packet with its headers.
        let limit = (MAX_PACKET_LEN - 1024) as u64;
        if u64::from(self.max_packet) > limit {
            return Err(SshConfigError::AboveLimit { field: "max_packet", value: self.max_packet.into(), limit });
        }
        if self.window < self.max_packet {
            return Err(SshConfigError::WindowBelowPacket { window: self.window, max_packet: self.max_packet });
        }
        if self.max_channels == 0 {
            return Err(SshConfigError::Zero("max_channels"));
        }
        if self.max_channels > MAX_CHANNELS {
            let (value, limit) = (self.max_channels as u64, MAX_CHANNELS as u64);
            return Err(SshConfigError::AboveLimit { field: "max_channels", value, limit });
        }
        Ok(())
    }
}

impl ServerConfig {
    pub fn validate(&self) -> Result<(), SshConfigError> {
        self.transport.validate()?;
        self.connection.validate()?;
        nonzero("login_grace", self.login_grace)?;
        nonzero("hold_timeout", self.hold_timeout)?;
        if self.max_auth_attempts == 0 {
            return Err(SshConfigError::Zero("max_auth_attempts"));
        }
        Ok(())
    }
}

impl ClientConfig {
    pub fn validate(&self) -> Result<(), SshConfigError> {
        self.transport.validate()?;
        self.connection.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(ServerConfig::default().validate(), Ok(()));
        assert_eq!(ClientConfig::default().validate(), Ok(()));
    }

    #[test]
    fn zero_and_oversized_values_are_refused() {
        let mut c = ServerConfig::default();
        c.connection.window = 0;
        assert_eq!(c.validate(), Err(SshConfigError::Zero("window")));
        let mut c = ServerConfig::default();
        c.transport.rekey_interval = Duration::ZERO;
        assert_eq!(c.validate(), Err(SshConfigError::Zero("rekey_interval")));
        let mut c = ServerConfig::default();
        c.transport.rekey_bytes = 0;
        assert!(c.validate().is_err());
        let mut c = ServerConfig::default();
        c.connection.max_packet = 1 << 20;
        assert!(matches!(c.validate(), Err(SshConfigError::AboveLimit { field: "max_packet", .. })));
        let mut c = ServerConfig::default();
        c.connection.window = 1024;
        assert!(matches!(c.validate(), Err(SshConfigError::WindowBelowPacket { .. })));
        let c = ServerConfig { login_grace: Duration::ZERO, ..Default::default() };
        assert_eq!(c.validate(), Err(SshConfigError::Zero("login_grace")));
        let mut c = ServerConfig::default();
        c.transport.ciphers = vec!["3des-cbc".into()];
        assert_eq!(c.validate(), Err(SshConfigError::UnknownCipher("3des-cbc".into())));
    }
}
