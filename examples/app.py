#!/usr/bin/env python3
"""An app for the pairing gateway: pairs with a runner by its code, sends commands and prints
the output; without commands it is a terminal on the runner (``runner.py --pty``).

    python examples/app.py --url http://127.0.0.1:8080 --code K7M2P9QXRT-H4X9QTR "uname -a"
    python examples/app.py --url http://127.0.0.1:8080 --code K7M2P9QXRT-H4X9QTR

Only the nameplate (before the last '-') reaches the gateway; the secret runs the key
exchange with the runner. A wrong secret exits with status 2 (the runner shows a new code).
See ``--help`` and pairing_client/cli.py for the exit statuses and the terminal's keys.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from pairing_client.cli import app_main

if __name__ == "__main__":
    sys.exit(app_main())
