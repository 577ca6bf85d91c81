"""AnDi-challenge trajectories (``andi-datasets``) through LiveSPT's track analysis path.

``andi-datasets`` 2.1.13 requires ``numpy<=1.26.4`` and cannot live in ``.venv`` (numpy
2.x), so it is installed into its own environment (``make install-thirdparty``:
``.venv-thirdparty``) and :mod:`benchmarks.accuracy.andi_generate` runs there as a
subprocess that writes an .npz file; this module reads it. Nothing of andi-datasets is
imported here.

The trajectories are instantaneous samples (no exposure, no motion blur); Gaussian
localization noise of SD ``sigma`` per axis (uniform per track in ``sigma_range_um``) is
added here and given to the analysis as each point's precision. They go through
:func:`livespt.server.pipeline.tracks.analyze_tracks` (what ``AnalyzeTracks`` and
``livespt tracks`` run) with the resident ``features``
transformer for the windows when it is given, the sliding-window configuration of a
live stream (10 points, stride 1),
and the change detector at its default target (0.5 false alarms per 1000 track-frames)
with blur coefficient 0 (``exposure_s = 0``); the window estimator's acquisition has an
exposure of 1e-4 frame intervals (it must be > 0; blur coefficient ~2e-5).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from benchmarks.accuracy.metrics import TruthD

__all__ = ["AndiSet", "ThirdPartyUnavailable", "analyze_andi", "generate_andi",
           "thirdparty_python"]

REPO = Path(__file__).resolve().parents[2]
GENERATOR = Path(__file__).with_name("andi_generate.py")
EXPOSURE_FRACTION = 1e-4
"""Exposure given to the window estimator, in frame intervals (instantaneous samples)."""


class ThirdPartyUnavailable(RuntimeError):
    """The separate environment with andi-datasets is missing or broken."""


def thirdparty_python() -> Path:
    """Interpreter of the andi-datasets environment.

    ``$LIVESPT_THIRDPARTY_PYTHON`` if set, else ``.venv-thirdparty/bin/python`` in the
    repository.

    Raises
    ------
    ThirdPartyUnavailable
        When it does not exist or cannot import ``andi_datasets``.
    """
    env = os.environ.get("LIVESPT_THIRDPARTY_PYTHON")
    py = Path(env) if env else REPO / ".venv-thirdparty" / "bin" / "python"
    hint = "run `make install-thirdparty` (creates .venv-thirdparty with andi-datasets)"
    if not py.exists():
        raise ThirdPartyUnavailable(f"no {py}: {hint}")
    proc = subprocess.run([str(py), "-c", "import andi_datasets"], capture_output=True,
                          text=True, check=False, timeout=120)
    if proc.returncode != 0:
        raise ThirdPartyUnavailable(f"{py} cannot import andi_datasets "
                                    f"({proc.stderr.strip()[-300:]}): {hint}")
    return py


@dataclass(frozen=True, eq=False)
class AndiSet:
    """Trajectories from andi-datasets.

    Attributes
    ----------
    positions_um : ndarray, shape (N, T, 2)
        Noise-free positions, um.
    d_um2_s : ndarray, shape (N, T)
        D of the step starting at each frame, um^2/s (andi's label).
    meta : dict
        Generator settings and versions (andi-datasets, stochastic, numpy).
    """

    positions_um: NDArray[np.float64]
    d_um2_s: NDArray[np.float64]
    meta: dict[str, Any] = field(default_factory=dict)


def generate_andi(kind: str, n: int, frames: int, seed: int, cache_dir: Path, *,
                  frame_interval_s: float = 0.05, pixel_size_um: float = 0.1,
                  d_range_um2_s: tuple[float, float] = (0.02, 1.0), ratio: float = 5.0,
                  p_switch: float = 0.005) -> AndiSet:
    """Generate (or reuse from ``cache_dir``) an andi-datasets trajectory set.

    Parameters are those of :func:`benchmarks.accuracy.andi_generate.generate`.

    Raises
    ------
    ThirdPartyUnavailable
        When the andi-datasets environment is missing.
    """
    args = ["--kind", kind, "--n", str(n), "--frames", str(frames), "--seed", str(seed),
            "--frame-interval", repr(frame_interval_s), "--pixel-size", repr(pixel_size_um),
            "--d-min", repr(d_range_um2_s[0]), "--d-max", repr(d_range_um2_s[1]),
            "--ratio", repr(ratio), "--p-switch", repr(p_switch)]
    key = hashlib.sha256(" ".join(args).encode()).hexdigest()[:16]
    out = Path(cache_dir) / f"andi_{kind}_{key}.npz"
    if not out.exists():
        py = thirdparty_python()
        proc = subprocess.run([str(py), str(GENERATOR), *args, "--out", str(out)],
                              capture_output=True, text=True, check=False, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"andi generator failed:\n{(proc.stdout + proc.stderr)[-2000:]}")
    z = np.load(out)
    return AndiSet(z["positions_um"], z["d_um2_s"], json.loads(str(z["meta_json"])))


@dataclass(frozen=True, eq=False)
class AndiResult:
    """An andi set after the track analysis, in the tables :mod:`.metrics` scores."""

    points: pd.DataFrame
    estimates: pd.DataFrame
    changes: pd.DataFrame
    truth_d: TruthD
    track_estimates: pd.DataFrame
    warnings: list[tuple[str, str]]
    frame_interval_s: float
    exposure_s: float


def analyze_andi(data: AndiSet, *, sigma_range_um: tuple[float, float] = (0.02, 0.03),
                 seed: int = 0, model: Any = None, window_length: int = 10) -> AndiResult:
    """Add localization noise and run :func:`~livespt.server.pipeline.tracks.analyze_tracks`.

    Parameters
    ----------
    data : AndiSet
        Trajectories.
    sigma_range_um : tuple of float
        Per-track localization SD per axis, uniform in this range, um.
    seed : int
        Seed of the noise.
    model : ResidentModel, optional
        The resident features transformer for the windows (None: the CVE).
    window_length : int
        Window length in points (stride 1).
    """
    from livespt.server.pipeline.changepoint import ChangeConfig
    from livespt.server.pipeline.estimate import Acquisition
    from livespt.server.pipeline.tracks import Track, analyze_tracks
    from livespt.server.pipeline.windows import WindowConfig

    dt = float(data.meta["frame_interval_s"])
    n, t, _ = data.positions_um.shape
    rng = np.random.default_rng(seed)
    sigma = rng.uniform(*sigma_range_um, n)
    noisy = data.positions_um + rng.standard_normal(data.positions_um.shape) * sigma[:, None, None]
    frames = np.arange(t)
    tracks = [Track.from_arrays(i, frames, noisy[i, :, 0], noisy[i, :, 1], np.full(t, sigma[i]))
              for i in range(n)]
    exposure = EXPOSURE_FRACTION * dt
    out = analyze_tracks(tracks, Acquisition(frame_interval_s=dt, exposure_s=exposure),
                         WindowConfig(length=window_length, stride=1),
                         ChangeConfig(frame_interval_s=dt, exposure_s=0.0), model=model)
    points = pd.DataFrame({
        "track_id": np.repeat(np.arange(n), t), "frame": np.tile(frames, n),
        "x_um": noisy[..., 0].ravel(), "y_um": noisy[..., 1].ravel(),
        "precision_um": np.repeat(sigma, t), "particle_id": np.repeat(np.arange(n), t),
        "x_true_um": data.positions_um[..., 0].ravel(),
        "y_true_um": data.positions_um[..., 1].ravel()})
    est = pd.DataFrame([vars(w) for w in out.windows])
    chg = pd.DataFrame([vars(c) for c in out.changes],
                       columns=["track_id", "frame", "detected_at_frame", "d_before_um2_s",
                                "d_after_um2_s", "score"])
    trk = pd.DataFrame([vars(e) for e in out.tracks])
    return AndiResult(points, est, chg, TruthD(data.d_um2_s.copy()), trk, out.warnings, dt,
                      exposure)
