//! A blocking client for the local API: one request, one response line.

use std::io::{self, BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use thiserror::Error;

use super::protocol::{Request, Response, MAX_REQUEST};

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot reach meshd at {path}: {error}")]
    Connect { path: String, error: io::Error },
    #[error("local API: {0}")]
    Io(#[from] io::Error),
    #[error("local API: bad response: {0}")]
    BadResponse(String),
}

/// Send `request` to the daemon at `socket` and wait (up to `timeout`) for its answer.
pub fn call(socket: &Path, request: &Request, timeout: Duration) -> Result<Response, ClientError> {
    let stream = UnixStream::connect(socket)
        .map_err(|error| ClientError::Connect { path: socket.display().to_string(), error })?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut line = serde_json::to_vec(request).map_err(|e| ClientError::BadResponse(e.to_string()))?;
    line.push(b'\n');
    // A refusal is written before the daemon closes: read it even if our write failed.
    let written = (&stream).write_all(&line);
    // Responses are bounded too (a status of many peers fits in 16 requests' size).
    let mut reader = BufReader::new(io::Read::take(&stream, 16 * MAX_REQUEST as u64));
    let mut answer = String::new();
    let read = reader.read_line(&mut answer);
    if answer.is_empty() {
        written?;
        read?;
        return Err(ClientError::BadResponse("the daemon closed the connection".into()));
    }
    serde_json::from_str(answer.trim_end()).map_err(|e| ClientError::BadResponse(e.to_string()))
}
