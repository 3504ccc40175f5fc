//! The admin CLI's way to the running server: the Unix socket (`DIR/admin.sock`, acting
//! as `admin`), or HTTP with an API key (`--server URL --api-key KEY`, acting as
//! `api-key:<id>`). Both carry the same requests and replies ([`crate::admin_api`]).
//! HTTP here is plain `http://` (put TLS in front of the server, and run the CLI next to it
//! or through a tunnel).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use thiserror::Error;

use crate::admin_api::{frame, frame_len, AdminReply, AdminRequest};

/// How long a request may take before the CLI gives up.
const TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub enum Transport {
    Socket(PathBuf),
    Http { url: String, api_key: String },
}

/// The request could not be made (exit code 2); a refusal is an [`AdminReply::Error`].
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot reach the server at {0}: {1}")]
    Connect(String, String),
    #[error("{0}")]
    Protocol(String),
}

pub fn call(transport: &Transport, request: &AdminRequest) -> Result<AdminReply, ClientError> {
    match transport {
        Transport::Socket(path) => socket(path, request),
        Transport::Http { url, api_key } => http(url, api_key, request),
    }
}

fn socket(path: &PathBuf, request: &AdminRequest) -> Result<AdminReply, ClientError> {
    let shown = path.display().to_string();
    let connect = |e: std::io::Error| ClientError::Connect(shown.clone(), e.to_string());
    let proto = |e: &dyn std::fmt::Display| ClientError::Protocol(format!("{shown}: {e}"));
    let mut stream = UnixStream::connect(path).map_err(connect)?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(connect)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(connect)?;
    let body = serde_json::to_vec(request).map_err(|e| proto(&e))?;
    stream.write_all(&frame(&body).map_err(|e| proto(&e))?).map_err(|e| proto(&e))?;
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).map_err(|e| proto(&format!("no answer ({e})")))?;
    let mut reply = vec![0u8; frame_len(prefix).map_err(|e| proto(&e))?];
    stream.read_exact(&mut reply).map_err(|e| proto(&e))?;
    serde_json::from_slice(&reply).map_err(|e| proto(&e))
}

/// `http://host[:port][/prefix]` -> (authority, prefix).
fn split_url(url: &str) -> Result<(String, String), ClientError> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        ClientError::Protocol(format!("{url}: only http:// URLs are supported by the CLI (https: use a tunnel)"))
    })?;
    let (authority, prefix) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    if authority.is_empty() {
        return Err(ClientError::Protocol(format!("{url}: no host")));
    }
    let authority = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, prefix.trim_end_matches('/').to_string()))
}

fn http(url: &str, api_key: &str, request: &AdminRequest) -> Result<AdminReply, ClientError> {
    let (authority, prefix) = split_url(url)?;
    let value = serde_json::to_value(request).map_err(|e| ClientError::Protocol(e.to_string()))?;
    let op = value.get("op").and_then(|v| v.as_str()).unwrap_or_default().to_string();
    let args = value.get("args").cloned().unwrap_or_else(|| serde_json::json!({}));
    let body = serde_json::to_vec(&args).map_err(|e| ClientError::Protocol(e.to_string()))?;
    let path = if prefix.is_empty() { format!("/api/v1/{op}") } else { format!("/{prefix}/api/v1/{op}") };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClientError::Protocol(format!("cannot start the runtime: {e}")))?;
    let exchange = exchange(&authority, &path, api_key, body);
    let (status, bytes) = runtime
        .block_on(async { tokio::time::timeout(TIMEOUT, exchange).await })
        .map_err(|_| ClientError::Connect(url.to_string(), "timed out".into()))??;
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(v) if status.is_success() => Ok(AdminReply::Ok(v)),
        Ok(v) if status.is_client_error() => match v.get("error").and_then(|e| e.as_str()) {
            Some(why) => Ok(AdminReply::Error(why.to_string())),
            None => Err(ClientError::Protocol(format!("{url}: HTTP {status}"))),
        },
        _ => Err(ClientError::Protocol(format!("{url}: HTTP {status}: {}", String::from_utf8_lossy(&bytes)))),
    }
}

async fn exchange(
    authority: &str,
    path: &str,
    api_key: &str,
    body: Vec<u8>,
) -> Result<(hyper::StatusCode, Bytes), ClientError> {
    let connect = |e: &dyn std::fmt::Display| ClientError::Connect(authority.to_string(), e.to_string());
    let stream = tokio::net::TcpStream::connect(authority).await.map_err(|e| connect(&e))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| connect(&e))?;
    tokio::spawn(conn);
    let request = hyper::Request::post(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::AUTHORIZATION, format!("Bearer {api_key}"))
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    let response = sender.send_request(request).await.map_err(|e| connect(&e))?;
    let status = response.status();
    let bytes = response.into_body().collect().await.map_err(|e| connect(&e))?.to_bytes();
    Ok((status, bytes))
}
