"""Shared by the tests that run Debian's ImageJ 1.x under a virtual X server."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

IJ_JAR = Path("/usr/share/java/ij.jar")


def require_imagej(javac: bool = False) -> None:
    """Skip with a reason where ImageJ, Java or xvfb-run is absent; under CI, fail instead.

    ``.ci/run`` installs them (``apt-get install imagej xvfb xauth``, and
    ``openjdk-17-jdk-headless`` for ``javac``), so their absence there is a failure, not a
    silent skip. ``javac``: the test also compiles Java (the dialog driver).
    """
    tools = ("java", "xvfb-run") + (("javac",) if javac else ())
    missing = [n for n in tools if shutil.which(n) is None]
    if not IJ_JAR.exists():
        missing.append(str(IJ_JAR))
    if missing:
        reason = (f"ImageJ not available ({', '.join(missing)}): apt-get install imagej xvfb "
                  "xauth openjdk-17-jdk-headless")
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
