#!/usr/bin/env python3
"""A runner daemon for the pairing gateway: the machine that an app controls.

It prints ``pairing code: <nameplate>-<secret>``: type it into the app. Everything between
the app and this runner is end-to-end encrypted (CPace over the code's secret, then
XChaCha20-Poly1305 records): the gateway relays ciphertext. ``--plain`` keeps the unencrypted
protocol for apps that do not encrypt. ``--pty`` gives each app a shell; ``--exec`` runs each
input as a command; by default it echoes. See ``--help`` and pairing_client/cli.py.

    python examples/runner.py --url http://127.0.0.1:8080 --runner-id laptop-1 --pty

Needs the client extra (pysodium over the system libsodium) besides python-socketio.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from pairing_client.cli import runner_main

if __name__ == "__main__":
    runner_main()
