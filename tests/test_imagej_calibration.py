"""Real ImageJ opens ``livespt simulate`` movies with their calibration.

Runs Debian's ImageJ 1.x under a virtual X server (``apt-get install imagej xvfb
xauth``, done by ``.ci/run``). Skipped with a reason where ImageJ is absent, except
under CI, where its absence is a failure rather than a silent skip.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from imagej_helpers import IJ_JAR, require_imagej

from livespt.server.io.tiff import write_movie

MACRO = Path(__file__).parent / "imagej" / "calibration.ijm"


def test_imagej_reads_pixel_size_and_frame_interval(tmp_path: Path) -> None:
    require_imagej()
    movie = tmp_path / "movie.tif"
    frames = np.random.default_rng(0).integers(100, 200, size=(7, 16, 24), dtype=np.uint16)
    write_movie(movie, frames, pixel_size_um=0.108, frame_interval_s=0.033)
    out = subprocess.run(
        ["xvfb-run", "-a", "timeout", "120", "java", "-jar", str(IJ_JAR), "-batch", str(MACRO),
         str(movie)],
        capture_output=True, text=True, timeout=180,
    )
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("unit=")), None)
    assert line is not None, out.stdout + out.stderr
    fields = dict(re.findall(r"(\w+)=(\S+)", line))
    assert fields["unit"] in ("µm", "um", "micron")
    assert float(fields["pw"]) == pytest.approx(0.108, abs=1e-6)
    assert float(fields["finterval"]) == pytest.approx(0.033, abs=1e-6)
    # A time series (frames), not a z-stack (slices): TrackMate relies on this.
    assert fields["frames"] == "7" and fields["slices"] == "1"
    assert fields["bitDepth"] == "16"
