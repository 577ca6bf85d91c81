"""A ``livespt serve`` process for the benchmarks that measure a real server.

Started with ``--port 0`` from this Python, with the given flags; its address read from its
``listening on HOST:PORT`` line; killed when the benchmark exits, also when it fails
half-way (a failed run must not leave a server behind).
"""

from __future__ import annotations

import atexit
import re
import subprocess
import sys


def start_serve(*flags: str) -> tuple[subprocess.Popen[str], str]:
    """Start ``livespt serve --port 0 FLAGS...``; the process and its ``host:port``."""
    server = subprocess.Popen(
        [sys.executable, "-m", "livespt.server.cli.main", "serve", "--port", "0", *flags],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    atexit.register(lambda: server.poll() is None and server.kill())
    assert server.stdout is not None
    for line in server.stdout:
        m = re.search(r"listening on (\S+):(\d+)", line)
        if m:
            return server, f"{m.group(1)}:{m.group(2)}"
    raise RuntimeError(f"the server did not start (exit code {server.wait()})")
