#!/usr/bin/env python3
"""paramiko (an independent SSH implementation) logs in to the core's SSH server with one
key exchange method, checks the host key, runs a command, rekeys and runs another.

usage: paramiko_kex.py HOST PORT USER KEX HOST_KEY_BASE64
Prints `kex: algorithm: NAME`, the session id's length before and after the rekey, and
the commands' output; exits non-zero on any failure."""
import socket
import sys

import paramiko


def run(t, command):
    chan = t.open_session(timeout=10)
    chan.exec_command(command)
    out = b""
    while True:
        data = chan.recv(65536)
        if not data:
            break
        out += data
    status = chan.recv_exit_status()
    chan.close()
    return out, status


def main():
    host, port, user, kex, host_key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    sock = socket.create_connection((host, port), timeout=10)
    t = paramiko.Transport(sock)
    opts = t.get_security_options()
    opts.kex = [kex]
    t.start_client(timeout=10)
    if t.get_remote_server_key().get_base64() != host_key:
        sys.exit("host key mismatch")
    agreed = t.kex_engine.name if hasattr(t.kex_engine, "name") else type(t.kex_engine).__name__
    print(f"kex: algorithm: {kex} ({agreed})")
    t.auth_none(user)
    if not t.is_authenticated():
        sys.exit("not authenticated")
    first_id = t.session_id
    out, status = run(t, "echo kex-ok")
    print(out.decode(), end="")
    print(f"status {status}")
    t.renegotiate_keys()
    out, status = run(t, "echo after-rekey")
    print(out.decode(), end="")
    print(f"session id {len(first_id)} {len(t.session_id)} same={first_id == t.session_id}")
    t.close()


if __name__ == "__main__":
    main()
