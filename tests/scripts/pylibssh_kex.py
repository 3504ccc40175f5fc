#!/usr/bin/env python3
"""ansible-pylibssh (libssh 0.12, an independent SSH implementation in C) logs in to the
core's SSH server with one key exchange method, checks the host key against a known_hosts
file, and runs commands.

usage: pylibssh_kex.py HOST PORT USER KEX KNOWN_HOSTS
KEX is one method name, or `default` for libssh's own list.
Prints libssh's own record of the negotiated method (`kex: algorithm: NAME`, from its
log), the libssh version, and the commands' output; exits non-zero on any failure."""
import logging
import re
import sys

from pylibsshext import __full_version__
from pylibsshext.session import Session


class Negotiated(logging.Handler):
    """Keeps libssh's `ssh_kex_select_methods` line (it names the agreed algorithms)."""

    def __init__(self):
        super().__init__()
        self.kex = None

    def emit(self, record):
        m = re.search(r"Negotiated ([^,\s]+),", record.getMessage())
        if m and self.kex is None:
            self.kex = m.group(1)


def main():
    host, port, user, kex, known_hosts = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    negotiated = Negotiated()
    root = logging.getLogger()
    root.addHandler(negotiated)
    root.setLevel(logging.DEBUG)
    print(__full_version__)
    s = Session()
    s.set_log_level(logging.DEBUG)
    if kex != "default":
        s.set_ssh_options("key_exchange_algorithms", kex)
    s.set_ssh_options("knownhosts", known_hosts)
    s.connect(host=host, port=port, user=user, look_for_keys=False, host_key_checking=True, timeout=10)
    print(f"kex: algorithm: {negotiated.kex}")
    for command in ["echo kex-ok", "head -c 300000 /dev/zero | wc -c"]:
        chan = s.new_channel()
        result = chan.exec_command(command)
        print(result.stdout.decode(), end="")
        print(f"status {result.returncode}")
        chan.close()
    s.close()


if __name__ == "__main__":
    main()
