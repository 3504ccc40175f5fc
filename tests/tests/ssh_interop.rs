//! The real OpenSSH client (Debian's `ssh`) against our server transport, over loopback TCP:
//! version exchange, KEXINIT, curve25519-sha256 with an ssh-ed25519 host key, NEWKEYS and
//! an encrypted SERVICE_REQUEST/SERVICE_ACCEPT, for each cipher, then authentication
//! decided on the first request. Channels do not exist yet, so the connection ends when the
//! client opens its session; the tests check from the client's own debug log how far it got.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use mesh_core::rng::Rng;
use mesh_core::ssh::kexinit::CIPHERS;
use mesh_core::ssh::transport::{ServerTransport, TransportEvent};

/// How the server answers the first authentication request.
#[derive(Clone, Copy)]
enum Decision {
    Accept,
    Deny(&'static str),
}

fn run_client_against_server(cipher: &str, decision: Decision) -> (String, Vec<TransportEvent>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let mut client = Command::new("ssh")
        .args([
            "-vvv",
            "-p",
            &port.to_string(),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "KexAlgorithms=curve25519-sha256",
            "-c",
            cipher,
            "tester@127.0.0.1",
            "true",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn ssh: {e}"));
    let (mut stream, _) = listener.accept().unwrap_or_else(|e| panic!("accept: {e}"));
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut server = ServerTransport::new(SigningKey::from_bytes(&[42u8; 32]), Rng::from_seed(9));
    let mut events = Vec::new();
    let mut buf = [0u8; 65536];
    'conn: loop {
        while let Some(out) = server.poll_transmit() {
            if stream.write_all(&out).is_err() {
                break 'conn;
            }
        }
        while let Some(e) = server.poll_event() {
            if matches!(e, TransportEvent::AuthRequest { .. }) {
                match decision {
                    Decision::Accept => server.accept_auth(),
                    Decision::Deny(why) => server.deny_auth(Some(why)),
                }
            }
            events.push(e);
        }
        if server.poll_transmit_pending() {
            continue;
        }
        if server.is_closed() {
            break;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => server.handle_input(&buf[..n]),
        }
    }
    while let Some(e) = server.poll_event() {
        events.push(e);
    }
    drop(stream);
    let mut log = String::new();
    if let Some(mut err) = client.stderr.take() {
        let _ = err.read_to_string(&mut log);
    }
    let _ = client.wait();
    (log, events)
}

#[test]
fn openssh_client_completes_key_exchange_and_service_request_with_every_cipher() {
    for cipher in CIPHERS {
        let (log, events) = run_client_against_server(cipher, Decision::Accept);
        let tail: String = log.lines().rev().take(25).collect::<Vec<_>>().join("\n");
        assert!(log.contains("SSH2_MSG_SERVICE_ACCEPT received"), "{cipher}: client log tail:\n{tail}");
        assert!(log.contains(&format!("cipher: {cipher}")), "{cipher} was not negotiated:\n{tail}");
        assert!(log.contains("server-sig-algs=<ssh-ed25519>"), "{cipher}: EXT_INFO not seen:\n{tail}");
        assert!(
            events
                .iter()
                .any(|e| matches!(e, TransportEvent::Keyed { negotiated, .. } if negotiated.cipher_c2s == cipher)),
            "{cipher}: {events:?}"
        );
        assert!(events.contains(&TransportEvent::UserauthRequested), "{cipher}: {events:?}");
        println!(
            "{cipher}: {}",
            log.lines()
                .filter(|l| l.contains("SSH2_MSG_SERVICE_ACCEPT")
                    || l.contains("kex: server->client")
                    || l.contains("Server host key"))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
}

#[test]
fn authentication_is_decided_on_the_first_request_whatever_the_method() {
    let (log, events) = run_client_against_server(CIPHERS[0], Decision::Accept);
    assert!(
        log.contains("Authenticated to 127.0.0.1") && log.contains("using \"none\""),
        "{}",
        log.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
    assert!(events.contains(&TransportEvent::Authenticated { user: "tester".into() }), "{events:?}");

    let (log, events) =
        run_client_against_server(CIPHERS[1], Decision::Deny("tester is not allowed here by the tailnet policy"));
    assert!(log.contains("tester is not allowed here by the tailnet policy"), "banner shown:\n{log}");
    assert!(log.contains("Permission denied"), "{log}");
    assert!(!events.iter().any(|e| matches!(e, TransportEvent::Authenticated { .. })), "{events:?}");
}
