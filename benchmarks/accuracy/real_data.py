"""Real (not simulated) single-particle-tracking movies with a known diffusion coefficient.

The movies are not part of the repository. ``scripts/get-real-data`` builds a local cache
from an offline git mirror of their source, one folder per movie::

    ${LIVESPT_REAL_DATA_DIR:-~/.cache/livespt/real-data}/<name>/frames.tif   uint8 (T, H, W)
                                                              /meta.json    calibration, reference

and :func:`load_real_movie` reads it, raising :class:`DataUnavailable` when it is absent
(tests then skip with that message).

Movies
------
``bulk_water``
    soft-matter/trackpy-examples ``sample_data/bulk_water``: 1 um latex spheres diffusing in
    water, 300 frames of 424 x 640 pixels, 0.3509 um/px (2.85 px/um), 1/24 s per frame,
    exposure unknown. Particles are dark on a bright background. Reference
    D = 0.40 um^2/s (trackpy walkthrough: ensemble MSD = A t^n with A = 1.602 um^2/s^n,
    n = 1.08, A = 4 D); Stokes-Einstein for 1 um at 20 C gives 0.43 um^2/s. The MSD is
    not linear at short lags (motion blur or smoothing, irregular frame timing): see
    ``RealMovie.meta["reference_d_caveats"]``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

__all__ = [
    "DEFAULT_CACHE_DIR",
    "DataUnavailable",
    "RealMovie",
    "default_cache_dir",
    "load_real_movie",
]

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "livespt" / "real-data"
"""Cache root used when neither ``cache_dir`` nor ``$LIVESPT_REAL_DATA_DIR`` is given."""

_META = "meta.json"


class DataUnavailable(Exception):
    """A real-data movie is not in the local cache (run ``scripts/get-real-data``)."""


@dataclass(frozen=True)
class RealMovie:
    """A real movie with its calibration and reference diffusion coefficient.

    Attributes
    ----------
    name : str
        Movie name, e.g. ``"bulk_water"``.
    frames : numpy.ndarray
        Image stack, shape (T, H, W), as stored (``uint8`` for ``bulk_water``), in counts.
    pixel_size_um : float
        Pixel size in the sample plane, in um per pixel.
    frame_interval_s : float
        Time between frame starts, in s (mean interval where the timing is irregular).
    exposure_s : float or None
        Exposure time per frame, in s; None when the source does not state it.
    reference_d_um2_s : float
        Reference diffusion coefficient, in um^2/s.
    reference_source : str
        Where ``reference_d_um2_s`` comes from and how it was obtained.
    license : str
        License of the data as found in its source.
    source : str
        Source repository URL and commit.
    dark_particles : bool
        True when particles are darker than the background (invert before a bright-spot
        detector, e.g. ``255 - frames`` for ``uint8``).
    meta : Mapping[str, Any]
        The whole ``meta.json`` (Stokes-Einstein value and assumptions, caveats, checksums).
    """

    name: str
    frames: np.ndarray = field(repr=False, compare=False)
    pixel_size_um: float
    frame_interval_s: float
    exposure_s: float | None
    reference_d_um2_s: float
    reference_source: str = field(repr=False)
    license: str = field(repr=False)
    source: str
    dark_particles: bool = False
    meta: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def n_frames(self) -> int:
        """Number of frames T."""
        return int(self.frames.shape[0])

    @property
    def duration_s(self) -> float:
        """Time from the first to the last frame start, in s."""
        return (self.n_frames - 1) * self.frame_interval_s


def default_cache_dir() -> Path:
    """Cache root: ``$LIVESPT_REAL_DATA_DIR`` if set, else :data:`DEFAULT_CACHE_DIR`.

    Returns
    -------
    pathlib.Path
        Folder holding one sub-folder per movie.
    """
    env = os.environ.get("LIVESPT_REAL_DATA_DIR")
    return Path(env).expanduser() if env else DEFAULT_CACHE_DIR


def _movie_dir(name: str, cache_dir: Path | None) -> Path:
    """Folder of movie ``name``: ``cache_dir/name``, or ``cache_dir`` itself if it holds it."""
    root = default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()
    if (root / _META).is_file():
        try:
            if json.loads((root / _META).read_text()).get("name") == name:
                return root
        except (OSError, ValueError):
            pass
    return root / name


def load_real_movie(name: str = "bulk_water", cache_dir: Path | None = None) -> RealMovie:
    """Load a real movie and its calibration from the local cache.

    Parameters
    ----------
    name : str, default "bulk_water"
        Movie name (the cache sub-folder).
    cache_dir : pathlib.Path or None, default None
        Cache root holding ``<name>/``, or the movie folder itself (the one holding
        ``meta.json``). None: ``$LIVESPT_REAL_DATA_DIR``, else
        ``~/.cache/livespt/real-data``.

    Returns
    -------
    RealMovie
        Frames (T, H, W), pixel size (um), frame interval (s), exposure (s or None),
        reference D (um^2/s) with its source, license and provenance.

    Raises
    ------
    DataUnavailable
        The movie is not in the cache, or the cache is incomplete or unreadable; the
        message says to run ``scripts/get-real-data``.
    """
    folder = _movie_dir(name, cache_dir)
    hint = (
        f"run scripts/get-real-data (it needs the offline mirror of the data source; "
        f"see its --help) to build {folder}"
    )
    meta_path = folder / _META
    if not meta_path.is_file():
        raise DataUnavailable(f"real-data movie {name!r} not found: no {meta_path}; {hint}")
    try:
        meta: dict[str, Any] = json.loads(meta_path.read_text())
        tif_path = folder / str(meta.get("file", "frames.tif"))
        frames = tifffile.imread(tif_path)
        movie = RealMovie(
            name=str(meta["name"]),
            frames=frames,
            pixel_size_um=float(meta["pixel_size_um"]),
            frame_interval_s=float(meta["frame_interval_s"]),
            exposure_s=None if meta.get("exposure_s") is None else float(meta["exposure_s"]),
            reference_d_um2_s=float(meta["reference_d_um2_s"]),
            reference_source=str(meta["reference_d_source"]),
            license=str(meta["license"]),
            source=f"{meta['source_repository']} @ {meta['source_commit']}: {meta['source_path']}",
            dark_particles=meta.get("particles_appear") == "dark",
            meta=meta,
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataUnavailable(
            f"real-data movie {name!r} in {folder} is incomplete or unreadable "
            f"({type(exc).__name__}: {exc}); {hint} (with --force)"
        ) from exc
    if movie.name != name:
        raise DataUnavailable(f"{meta_path} describes {movie.name!r}, not {name!r}; {hint}")
    expected = tuple(meta.get(k) for k in ("n_frames", "height", "width"))
    if frames.ndim != 3 or (None not in expected and frames.shape != expected):
        raise DataUnavailable(
            f"{tif_path}: frames of shape {frames.shape}, expected {expected}; {hint} "
            f"(with --force)"
        )
    return movie
