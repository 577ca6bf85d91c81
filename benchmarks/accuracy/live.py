"""Run a movie through LiveSPT's live path as a user would, and read what it wrote.

``livespt stream MOVIE.tif --embedded --out DIR --pixel-size ... --frame-interval ...
--exposure ... --camera-offset ... --camera-gain ... --read-noise ... --radius ...
--max-distance ...`` (a separate process, the installed console script), then
``DIR/tracks.csv``, ``estimates.csv``, ``changes.csv`` and ``summary.json``. With
``server="HOST:PORT"`` the same command streams to a running server instead of starting
an embedded one; ``in_process=True`` calls the same command-line entry point
(:func:`livespt.server.cli.main.main`) inside this process, which saves the ~8 s start of a
new Python with torch and the models (the tests use it with one shared server).

Settings a user would choose, all derived from what the acquisition says:

* ``--radius``: ``sqrt(2)`` x the PSF SD ``0.21 wavelength / NA`` (docs/pipeline.md);
* ``--max-distance``: 3 x the RMS 2-D step ``sqrt(4 D_max dt)`` of the fastest particle
  expected, rounded up to 0.1 um, and never below the server default of 1 um;
* the camera's offset, gain and read noise as the camera's data sheet gives them.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tifffile
from numpy.typing import NDArray

__all__ = ["LiveResult", "StreamSettings", "livespt_command", "max_distance_for", "run_live",
           "write_tiff"]


@dataclass(frozen=True)
class StreamSettings:
    """The flags of ``livespt stream`` used for one movie (physical units)."""

    pixel_size_um: float
    frame_interval_s: float
    exposure_s: float | None = None
    camera_offset_adu: float | None = None
    camera_gain_adu_per_e: float | None = None
    read_noise_e: float | None = None
    radius_um: float | None = None
    max_distance_um: float | None = None
    dark_spots: bool = False
    window: int | None = None

    def flags(self) -> list[str]:
        """The command-line flags, in the order ``livespt stream --help`` lists them."""
        out = ["--pixel-size", repr(self.pixel_size_um),
               "--frame-interval", repr(self.frame_interval_s)]
        for flag, value in (("--exposure", self.exposure_s), ("--window", self.window),
                            ("--camera-offset", self.camera_offset_adu),
                            ("--camera-gain", self.camera_gain_adu_per_e),
                            ("--read-noise", self.read_noise_e),
                            ("--radius", self.radius_um),
                            ("--max-distance", self.max_distance_um)):
            if value is not None:
                out += [flag, repr(value)]
        if self.dark_spots:
            out.append("--dark-spots")
        return out


@dataclass(frozen=True, eq=False)
class LiveResult:
    """What ``livespt stream`` wrote, read back.

    Attributes
    ----------
    tracks, estimates, changes : pandas.DataFrame
        ``tracks.csv``, ``estimates.csv`` and ``changes.csv`` as written.
    summary : dict
        ``summary.json``.
    server_summary : dict
        The server's own ``summary.json`` of the session (``server_output_dir``): window
        methods, the model check, the frame timing check; empty when not readable.
    out_dir : pathlib.Path
        The output folder.
    command : list of str
        The command that produced it (for the report).
    wall_s : float
        Wall time of the command, s (start-up included).
    """

    tracks: pd.DataFrame
    estimates: pd.DataFrame
    changes: pd.DataFrame
    summary: dict[str, Any]
    out_dir: Path
    server_summary: dict[str, Any] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)
    wall_s: float = math.nan


def max_distance_for(d_max_um2_s: float, frame_interval_s: float) -> float:
    """Linking radius a user would set: 3 RMS 2-D steps of the fastest particle (>= 1 um)."""
    r = 3.0 * math.sqrt(4.0 * d_max_um2_s * frame_interval_s)
    return max(1.0, math.ceil(r * 10.0) / 10.0)


def write_tiff(path: Path, frames: NDArray[Any]) -> Path:
    """Write a (T, H, W) stack as a plain multi-page TIFF (tifffile; no calibration tags)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, np.ascontiguousarray(frames))
    return path


def livespt_command() -> list[str]:
    """The installed ``livespt`` console script next to this interpreter (else ``-m``)."""
    script = Path(sys.executable).with_name("livespt")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "livespt.server.cli.main"]


def read_outputs(out_dir: Path, command: list[str], wall_s: float) -> LiveResult:
    """Read the files ``livespt stream`` wrote into ``out_dir`` (and the server's summary)."""
    summary = json.loads((out_dir / "summary.json").read_text())
    server_file = Path(summary.get("server_output_dir") or out_dir / "-") / "summary.json"
    return LiveResult(
        tracks=pd.read_csv(out_dir / "tracks.csv"),
        estimates=pd.read_csv(out_dir / "estimates.csv"),
        changes=pd.read_csv(out_dir / "changes.csv"),
        summary=summary, out_dir=out_dir,
        server_summary=json.loads(server_file.read_text()) if server_file.is_file() else {},
        command=command, wall_s=wall_s,
    )


def run_live(movie_path: Path, out_dir: Path, settings: StreamSettings, *,
             server: str | None = None, in_process: bool = False,
             timeout_s: float = 1200.0) -> LiveResult:
    """Stream a movie with ``livespt stream`` and read its outputs.

    Parameters
    ----------
    movie_path : pathlib.Path
        TIFF movie.
    out_dir : pathlib.Path
        ``--out`` folder.
    settings : StreamSettings
        The acquisition and detector flags.
    server : str, optional
        ``HOST:PORT`` of a running server; None: ``--embedded``.
    in_process : bool
        Call the command-line entry point in this process instead of a new one.
    timeout_s : float
        Limit for the subprocess, s.

    Returns
    -------
    LiveResult

    Raises
    ------
    RuntimeError
        The command failed; the message holds the end of its output.
    """
    target = ["--server", server] if server else ["--embedded"]
    args = ["stream", str(movie_path), *target, "--out", str(out_dir), *settings.flags()]
    command = [*livespt_command(), *args]
    t0 = time.perf_counter()
    if in_process:
        from livespt.server.cli.main import main

        rc = main(args)
        if rc != 0:
            raise RuntimeError(f"livespt {' '.join(args)} exited with {rc}")
    else:
        env = {**os.environ, "TQDM_DISABLE": "1"}
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s,
                              env=env, check=False)
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr)[-3000:]
            raise RuntimeError(f"{' '.join(command)} exited with {proc.returncode}:\n{tail}")
    return read_outputs(out_dir, command, time.perf_counter() - t0)
