"""Track analysis: D per whole track, per sliding window, and changes of D, for tracks given whole.

Tracks that arrive complete (``AnalyzeTracks``; later TrackMate files and batch
runs) skip detection and linking and go through the same window estimator and
change detector as a live stream:

* each whole track: the CVE (close to the Cramer-Rao bound for long tracks),
  with the localization noise estimated from the track itself;
* its sliding windows (:func:`~livespt.server.pipeline.windows.sliding_windows`):
  the :class:`~livespt.server.pipeline.estimate.WindowEstimator` (a resident
  features model, an image model when the tracks carry patches cut from their
  movie, or the CVE);
* changes of D: the change detector over the track's whole step history, with
  each point's precision, or the track's own CVE noise estimate where a point
  has none (0 would make noisy tracks alarm).

Costs: the whole-track CVE is O(N) per track; windows are estimated in one
batch for all tracks; the change detector is O(N * history) per track. Memory:
the windows of all tracks at once, ``M x length x 3`` floats.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike, NDArray

from livespt.models.estimators import cve
from livespt.server.pipeline.changepoint import ChangeConfig
from livespt.server.pipeline.changepoint_bank import ChangeDetectorBank
from livespt.server.pipeline.estimate import Acquisition, WindowEstimator
from livespt.server.pipeline.records import ChangeEvent, TrackEstimate, WindowEstimate
from livespt.server.pipeline.windows import DueWindows, WindowConfig, sliding_windows

if TYPE_CHECKING:
    from livespt.server.inference.resident import ResidentModel

MIN_TRACK_POINTS = 3
"""Fewest positions a track needs for a D estimate."""


MAX_POSITION_UM = 1e6
"""Largest |x| or |y| of a track point, um (a metre: anything larger is a unit mistake)."""

MAX_PRECISION_UM = 1e3
"""Largest localization precision of a track point, um."""


@dataclass(frozen=True)
class Track:
    """One track: positions in um at strictly increasing frames (gaps allowed).

    Attributes
    ----------
    track_id : int
        The caller's id (unique among the tracks of one analysis).
    frames : ndarray of int, shape (N,)
        Frame index of each position, strictly increasing.
    xy_um : ndarray, shape (N, 2)
        Positions, um.
    precision_um : ndarray, shape (N,)
        Localization precision per axis, um; NaN where unknown.
    patches : ndarray, shape (N, P, P), float32, optional
        An image patch around each position (cut from the movie the track comes
        from), for an image model.
    """

    track_id: int
    frames: NDArray[np.int64]
    xy_um: NDArray[np.float64]
    precision_um: NDArray[np.float64]
    patches: NDArray[np.float32] | None = None

    @classmethod
    def from_arrays(cls, track_id: int, frames: ArrayLike, x_um: ArrayLike, y_um: ArrayLike,
                    precision_um: ArrayLike | None = None, where: str = "track") -> Track:
        """Build a checked track from columns.

        Parameters
        ----------
        track_id : int
            The track's id.
        frames, x_um, y_um : array_like, shape (N,)
            Frames (strictly increasing) and positions (um, finite).
        precision_um : array_like, shape (N,) or empty, optional
            Localization precision per axis (um); empty or None: unknown.
        where : str
            How error messages name this track (e.g. ``tracks[3] (track_id 7)``).

        Raises
        ------
        ValueError
            Naming ``where`` and the field: lengths differ, NaN or infinite
            positions, frames not strictly increasing.
        """
        f = np.asarray(frames, dtype=np.int64).reshape(-1)
        x = np.asarray(x_um, dtype=np.float64).reshape(-1)
        y = np.asarray(y_um, dtype=np.float64).reshape(-1)
        n = f.size
        if x.size != n or y.size != n:
            raise ValueError(f"{where}: frames, x_um and y_um must have the same length, "
                             f"got {n}, {x.size}, {y.size}")
        p = (np.full(n, np.nan) if precision_um is None
             else np.asarray(precision_um, dtype=np.float64).reshape(-1))
        if p.size == 0:
            p = np.full(n, np.nan)
        if p.size != n:
            raise ValueError(f"{where}: precision_um must be empty or have {n} values, "
                             f"got {p.size}")
        xy = np.column_stack([x, y])
        if n and not np.all(np.isfinite(xy)):
            raise ValueError(f"{where}: x_um/y_um contain NaN or infinite values")
        if n and np.abs(xy).max() > MAX_POSITION_UM:
            raise ValueError(f"{where}: x_um/y_um must be within +-{MAX_POSITION_UM:g} um "
                             f"(got {np.abs(xy).max():.3g}): positions are in micrometres")
        if n and (f.min() < 0):
            raise ValueError(f"{where}: frames must be >= 0, got {int(f.min())}")
        if n > 1 and np.any(np.diff(f) <= 0):
            raise ValueError(f"{where}: frames must strictly increase")
        known = p[np.isfinite(p)]
        if np.any(known < 0) or np.any(np.isinf(p)) or np.any(known > MAX_PRECISION_UM):
            raise ValueError(f"{where}: precision_um must be in [0, {MAX_PRECISION_UM:g}] um "
                             "(NaN: unknown)")
        return cls(int(track_id), f, xy, p)

    def __len__(self) -> int:
        return int(self.frames.size)


@dataclass
class TrackAnalysis:
    """What :func:`analyze_tracks` found.

    Attributes
    ----------
    tracks : list of TrackEstimate
        D of each whole track with at least :data:`MIN_TRACK_POINTS` positions.
    windows : list of WindowEstimate
        D of every sliding window, track by track.
    changes : list of ChangeEvent
        Changes of D, track by track.
    warnings : list of (code, message)
        E.g. ``TRACK_TOO_SHORT``, why a model was not used, or ``MODEL_CHECK`` when
        the model's windows disagreed with the CVE and the CVE answered.
    model_check : dict
        The model check over the analysis (``session_flagged``, ``model_over_cve``,
        ``windows_compared``); empty without a model.
    """

    tracks: list[TrackEstimate] = field(default_factory=list)
    windows: list[WindowEstimate] = field(default_factory=list)
    changes: list[ChangeEvent] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    model_check: dict[str, object] = field(default_factory=dict)


class AnalysisStopped(Exception):
    """:func:`analyze_tracks` was stopped (its caller gave up)."""


def analyze_tracks(
    tracks: Sequence[Track],
    acquisition: Acquisition,
    window: WindowConfig,
    change: ChangeConfig | None = None,
    model: ResidentModel | None = None,
    stop: threading.Event | None = None,
) -> TrackAnalysis:
    """Estimate D per track and per sliding window, and find changes of D.

    Parameters
    ----------
    tracks : sequence of Track
        Checked tracks with unique ids.
    acquisition : Acquisition
        Frame interval, exposure and (optionally) pixel size.
    window : WindowConfig
        Sliding-window length (points) and stride.
    change : ChangeConfig, optional
        Change-detector settings; None: no change detection.
    model : ResidentModel, optional
        A resident transformer for the windows: a features model, or an image model
        when every track carries its patches (:attr:`Track.patches`).
    stop : threading.Event, optional
        Checked before each track and before the window stage: once set (the caller
        gave up), :class:`AnalysisStopped` is raised.

    Returns
    -------
    TrackAnalysis

    Raises
    ------
    ValueError
        When there is no track or two tracks share an id.
    AnalysisStopped
        When ``stop`` was set.
    """
    if len(tracks) == 0:
        raise ValueError("tracks is empty: send at least one track")
    estimator = WindowEstimator(window, acquisition, model)
    out = TrackAnalysis(warnings=[("MODEL_NOT_USED", w) for w in estimator.warnings])
    bank = ChangeDetectorBank(change) if change is not None else None
    parts: list[DueWindows] = []
    seen: set[int] = set()
    for i, tr in enumerate(tracks):
        if stop is not None and stop.is_set():
            raise AnalysisStopped(f"stopped before tracks[{i}]")
        where = f"tracks[{i}] (track_id {tr.track_id})"
        if tr.track_id in seen:
            raise ValueError(f"{where}: track_id is not unique")
        seen.add(tr.track_id)
        n = len(tr)
        if n < MIN_TRACK_POINTS:
            out.warnings.append(("TRACK_TOO_SHORT", f"{where}: needs at least "
                                 f"{MIN_TRACK_POINTS} positions to estimate D, got {n}"))
            continue
        est = cve(tr.xy_um, acquisition.frame_interval_s, tr.frames,
                  exposure_s=acquisition.exposure_s, track_id=tr.track_id)
        out.tracks.append(TrackEstimate(tr.track_id, n, est.d_um2_s, est.d_low_um2_s,
                                        est.d_high_um2_s, est.method))
        parts.append(sliding_windows(window, tr.track_id, tr.frames, tr.xy_um, tr.precision_um,
                                     tr.patches))
        if bank is not None:
            sigma_track = float(np.sqrt(max(est.sigma2_um2, 0.0)))
            sigma = np.where(np.isfinite(tr.precision_um), tr.precision_um, sigma_track)
            for k in range(n):
                ev = bank.update(tr.track_id, int(tr.frames[k]), tr.xy_um[k], float(sigma[k]))
                if ev is not None:
                    out.changes.append(ChangeEvent.from_detector(tr.track_id, ev))
            bank.drop(tr.track_id)
    if stop is not None and stop.is_set():
        raise AnalysisStopped("stopped before the window stage")
    out.windows = estimator.estimate(DueWindows.concat(parts, window.length,
                                                       estimator.patch_px))
    if model is not None:
        check = estimator.check
        ratio = check.session_ratio()
        out.model_check = {"session_flagged": check.session_flagged,
                           "model_over_cve": round(ratio, 4) if np.isfinite(ratio) else None,
                           "windows_compared": check.session_windows()}
        if check.session_flagged:
            out.warnings.append(("MODEL_CHECK", (
                f"the model's window D is {ratio:.2f}x the sigma-unknown CVE's over "
                f"{check.session_windows()} windows, beyond the CVE's noise and by more than "
                "25 %: the CVE answers these windows (method cve:model-bias)")))
    return out
