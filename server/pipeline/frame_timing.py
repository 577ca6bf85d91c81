"""Frame timing check: whether the frames are evenly spaced in time, as every estimate assumes.

Every D the server reports divides by the frame interval, and the windows, the track
noise and the change detector take frame ``n + 1`` to come one interval after frame
``n``. A camera that drops a frame under load, or a timestamp jitter, breaks that
silently: the step into the frame after a dropped one spans two intervals. Measured
on a real movie (trackpy-examples ``bulk_water``, 24 frames/s): the steps into every
12th frame are 1.6-2.1x longer, over ~230 tracks each, than the same tracks' other
steps.

The steps themselves tell. For each track with at least ``MIN_TRACK_STEPS`` one-frame
steps, its step into the current frame over the mean of its earlier one-frame steps
(steps into flagged frames left out, so that a stage jump does not make the track's
later steps look short),

    r_i = |x_i(t) - x_i(t - 1)|^2 / mean_i(|step|^2),

is, for a 2-D Gaussian step, a unit exponential whatever D, noise and blur are; a
frame whose interval is ``k`` times the usual one multiplies it by about ``k``. The
frame's statistic is the *median* of ``r_i`` over its tracks (mislinked steps, whose
``r_i`` can be 100, do not move it), divided by the baseline: the median of the
earlier frames' medians (at least ``MIN_BASELINE_FRAMES`` of them; before, frames are
not tested). With ``n`` tracks the log of a median of unit exponentials has standard
error ``1 / (ln 2 sqrt(n)) = 1.44 / sqrt(n)``. A frame is *flagged* when at least
``MIN_TRACKS`` tracks take part and its ratio ``m`` differs from 1 by more than ``Z``
standard errors (in log) and by more than ``RATIO_LIMIT`` either way (``m > 1.3``: a
longer interval, e.g. a dropped frame; ``m < 1 / 1.3``: a shorter one, e.g. a repeated
frame). The same ratio after subtracting the frame's common displacement (the median
step vector over the tracks) is reported too: a stage jump or drift moves every
particle alike and is removed by it, a longer interval is not.

Power: a doubled interval shows as a ratio of ~1.5-1.9 (the localization noise adds
the same to every step); with 400 tracks in the frame that is 6-9 standard errors and
always found, with 200 about half the time (tests/test_frame_timing.py), with fewer
than ~100 rarely: the check is for crowded fields, where one frame holds the steps of
many particles. The check warns (``FRAME_TIMING``, naming the frames and the ratios) and
the session summary lists every flagged frame. The session then leaves the steps into a
flagged frame, whose duration is unknown, out of each track's noise estimate
(:meth:`TrackNoise.update_many` with ``interval_known=False``) and out of the change
detector (no step across the interval: its false-alarm rate is calibrated for steps of
the stated interval); the windows keep them (on the real movie 84 % of the windows hold
such a step, and their D is no worse than the others'). Timestamps are not read;
a client that knows the acquisition times can send the frame after a dropped one with
the next ``frame.index`` (a gap, which the linker, windows and change detector
handle). Thresholds are properties of the statistic (Z = 5: a normal tail of 6e-7 per
frame), not fitted to any movie.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from livespt.server.pipeline.track_slots import TrackSlots

__all__ = ["MIN_TRACKS", "MIN_TRACK_STEPS", "RATIO_LIMIT", "FlaggedFrame", "FrameTiming", "Z"]

MIN_TRACKS = 20
"""Tracks with a step into a frame (and enough history) needed to test that frame."""

MIN_TRACK_STEPS = 10
"""Earlier one-frame steps a track needs before its step ratio is used."""

Z = 5.0
"""Standard errors by which a frame's mean step ratio must differ from 1."""

RATIO_LIMIT = 1.3
"""A frame's step ratio must also be above this or below its inverse."""

MIN_BASELINE_FRAMES = 10
MAX_BASELINE_FRAMES = 500  # the baseline follows the movie's latest frames
"""Tested frames needed for the baseline before frames are flagged."""

_LOG_MEDIAN_SE = 1.0 / math.log(2.0)
"""sqrt(n) x the standard error of log(median) of n unit exponentials."""


@dataclass(frozen=True)
class FlaggedFrame:
    """A frame whose steps are unlike the tracks' other steps.

    Attributes
    ----------
    frame : int
        Frame index (the steps end in it).
    ratio : float
        Median over tracks of step^2 / the track's mean step^2, over the baseline
        (the median of earlier frames' medians).
    ratio_without_common : float
        The same after subtracting the frame's mean step vector (common motion).
    n_tracks : int
        Tracks that took part.
    z : float
        log(ratio) in standard errors.
    """

    frame: int
    ratio: float
    ratio_without_common: float
    n_tracks: int
    z: float

    def describe(self) -> str:
        """One line for a warning."""
        kind = ("a longer interval (a dropped frame?)" if self.ratio > 1
                else "a shorter interval (a repeated frame?)")
        return (f"frame {self.frame}: the steps into it are {self.ratio:.2f}x the tracks' "
                f"usual step^2 over {self.n_tracks} tracks ({self.z:+.1f} SE; "
                f"{self.ratio_without_common:.2f}x after removing their common "
                f"displacement): {kind}")


class FrameTiming:
    """Tests every frame's steps against the tracks' own history (see the module docstring).

    Attributes
    ----------
    flagged : list of FlaggedFrame
        Every flagged frame so far.
    n_tested : int
        Frames that had enough tracks to be tested.
    """

    def __init__(self) -> None:
        self.flagged: list[FlaggedFrame] = []
        self.n_tested = 0
        self._medians: list[float] = []
        self._slots = TrackSlots(64)
        self._n = np.zeros(self._slots.capacity, dtype=np.int64)  # steps counted
        self._s2 = np.zeros(self._slots.capacity)  # their summed squares, um^2

    def test(self, frame: int, track_ids: ArrayLike, steps_um: ArrayLike) -> FlaggedFrame | None:
        """Test one frame and learn its steps; return it when flagged (also in :attr:`flagged`).

        Parameters
        ----------
        frame : int
            The frame the steps end in.
        track_ids : array_like of int, shape (K,)
            Distinct tracks with a point in ``frame``.
        steps_um : array_like, shape (K, 2)
            Each track's step from ``frame - 1`` into ``frame``, um; NaN where the track
            has no point in ``frame - 1`` (e.g.
            :meth:`~livespt.server.pipeline.track_noise.TrackNoise.steps_into`).
        """
        ids = np.asarray(track_ids, dtype=np.int64).reshape(-1)
        steps = np.asarray(steps_um, dtype=np.float64).reshape(-1, 2)
        if ids.size == 0:
            return None
        rows, new = self._slots.rows(ids)
        if self._slots.capacity > self._n.shape[0]:
            self._grow()
        self._n[rows[new]] = 0
        self._s2[rows[new]] = 0.0
        has = np.all(np.isfinite(steps), axis=1)
        r2 = np.where(has, np.sum(np.where(has[:, None], steps, 0.0) ** 2, axis=1), 0.0)
        flag = self._test(frame, steps, r2, rows, has)
        if flag is None:  # a flagged frame's steps are not the tracks' usual steps
            self._n[rows[has]] += 1
            self._s2[rows[has]] += r2[has]
        return flag

    def drop(self, track_id: int) -> None:
        """Forget a track that ended."""
        self._slots.release(track_id)

    def _grow(self) -> None:
        cap = self._slots.capacity
        n, s2 = np.zeros(cap, dtype=np.int64), np.zeros(cap)
        n[: self._n.shape[0]] = self._n
        s2[: self._s2.shape[0]] = self._s2
        self._n, self._s2 = n, s2

    def _test(self, frame: int, steps: NDArray[np.float64], r2: NDArray[np.float64],
              rows: NDArray[np.intp], has: NDArray[np.bool_]) -> FlaggedFrame | None:
        ok = has & (self._n[rows] >= MIN_TRACK_STEPS)
        n = int(ok.sum())
        if n < MIN_TRACKS:
            return None
        self.n_tested += 1
        m2 = self._s2[rows[ok]] / self._n[rows[ok]]
        s = steps[ok]
        med = float(np.median(r2[ok] / m2))
        history = self._medians[-MAX_BASELINE_FRAMES:]
        self._medians.append(med)
        if len(history) < MIN_BASELINE_FRAMES or med <= 0:
            return None
        base = float(np.median(history))
        ratio = med / base
        z = math.log(ratio) / (_LOG_MEDIAN_SE / math.sqrt(n))
        if abs(z) <= Z or (1.0 / RATIO_LIMIT <= ratio <= RATIO_LIMIT):
            return None
        c = s - np.median(s, axis=0)
        flag = FlaggedFrame(int(frame), ratio,
                            float(np.median(np.sum(c * c, axis=1) / m2)) / base, n, float(z))
        self.flagged.append(flag)
        return flag

    def summary(self, max_frames: int = 50) -> dict[str, object]:
        """For the session summary: tested and flagged frames (the first ``max_frames``)."""
        frames = [f.frame for f in self.flagged]
        out: dict[str, object] = {
            "frames_tested": self.n_tested,
            "frames_flagged": len(frames),
            "flagged": [{"frame": f.frame, "ratio": round(f.ratio, 3),
                         "ratio_without_common_motion": round(f.ratio_without_common, 3),
                         "tracks": f.n_tracks, "z": round(f.z, 1)}
                        for f in self.flagged[:max_frames]],
        }
        if len(frames) >= 3:
            gaps = np.diff(frames)
            if np.all(gaps == gaps[0]):
                out["period_frames"] = int(gaps[0])
        return out
