"""Checks of the window estimators against the sigma-unknown CVE: where one fails, it steps aside.

:class:`ModelCheck` (below, first) compares a model's answers with the CVE;
:class:`TrackSigmaCheck` compares the CVE with each track's own noise
estimate with the sigma-unknown CVE; :class:`NoiseSpread` (at the end) measures how
much the windows' noise strays from their track's, which that CVE then accounts for.

The out-of-distribution guard (:mod:`livespt.models.vit.ood`) looks at one window's
inputs. A model can also be wrong on inputs that each look ordinary: a camera, PSF or
sample its simulator never made, where every window passes the guard and the answers
are still off by the same factor (measured on a real movie of beads in water: 95 % of
the windows passed the guard and the transformer's mean window D was 47 % below the
reference, the sigma-unknown CVE's 5 %). So the model's answers are also compared
with an estimator that needs no training and is unbiased for free diffusion with
localization noise and motion blur whatever the camera: the sigma-unknown CVE on
the same windows.

Over windows that do not overlap (a window is counted when it starts at least one
window length after the last counted window of its track, so the counted pairs are
independent), with ``a_k`` the model's D and ``c_k`` the CVE's, ``n`` pairs::

    mean difference  m = mean(a_k - c_k),   standard error  s = SD(a_k - c_k) / sqrt(n)

a set of pairs *disagrees* once ``n >= MIN_WINDOWS`` and both

* ``|m| > t * s``, ``t`` the two-sided ``1 - ALPHA`` quantile of Student's t with
  ``n - 1`` degrees of freedom (the disagreement is not the CVE's noise), and
* ``sum a_k / sum c_k`` is above ``1 + BIAS_LIMIT`` or below ``1 / (1 + BIAS_LIMIT)``
  (it is large enough to matter: the model's own bias on training-like data is within
  ~11 % per D decade, docs/vit.md).

For a track's pairs ``s`` is at least ``sqrt(v sum a_k^2) / n``, ``v`` the variance of
``(a_k - c_k) / a_k`` pooled over the session's pairs (from :data:`POOLED_MIN_PAIRS` on):
the CVE of a 10-point window is right-skewed, so a track whose few CVE windows happen to
be low also has a small sample SD of its differences, and the t-test alone then flags a
model much less noisy than the CVE far more often than its level (a perfect model, the
true D: 9 of 300 tracks of 30 windows flagged, 0 with the bound; the shipped features
model on 20 tracks of 120 frames: one track flagged in most sessions, none with it).

Two sets are tested after every counted window: the track's own pairs (a particle the
model gets wrong) and the session's pairs over all tracks (an acquisition the model
gets wrong: it decides within a few frames where single tracks are short). Once a set
disagrees, the windows it covers (that track's, or every window of the session) are
estimated by the CVE (with the track's own noise estimate when it has one), their
``method`` suffixed ``:model-bias``. Nothing is revised: windows already answered keep
their answer. A track ended with :meth:`ModelCheck.drop` is forgotten; the session's
pairs are kept.

False flags on data like the training data: without bias, the first condition holds
with probability ALPHA (0.27 %) per test; the second requires a 25 % disagreement on
top. Both are properties of the estimators, not fitted to any data set;
``docs/accuracy.md`` reports for every source how many windows went to the CVE this way.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.stats import t as student_t

__all__ = ["ALPHA", "BIAS_LIMIT", "METHOD_SUFFIX", "MIN_WINDOWS", "NOISE_SPREAD_MIN_WINDOWS",
           "TRACK_SIGMA_SUFFIX", "ModelCheck", "NoiseSpread", "TrackSigmaCheck"]

BIAS_LIMIT = 0.25
"""Relative disagreement of the summed model and CVE D (either way) that flags a set."""

ALPHA = 0.0027
"""Two-sided level of the test on the mean difference (that of 3 SD of a normal)."""

MIN_WINDOWS = 5
"""Non-overlapping windows a set needs before it can be flagged."""

POOLED_MIN_PAIRS = 30
"""Session pairs needed before their pooled relative variance bounds a track's standard error."""

METHOD_SUFFIX = ":model-bias"
"""Appended to the CVE ``method`` of windows of flagged tracks (or sessions)."""


@functools.lru_cache(maxsize=512)
def _t_quantile(dof: int) -> float:
    return float(student_t.ppf(1.0 - ALPHA / 2.0, dof))


def _counted(last_start: dict[int, int], window_length: int, track_ids: NDArray[np.int64],
             first_frames: NDArray[np.int64]) -> NDArray[np.bool_]:
    """Which windows a check would count, without changing its state.

    A window counts when it starts a window length or more after the last counted window
    of its track (windows in order). The caller computes the reference CVE for these
    only: about 1 in ``window_length`` windows.
    """
    seen: dict[int, int] = {}  # counted in this call
    out = np.zeros(len(track_ids), dtype=bool)
    for i, (tid, f0) in enumerate(zip(np.asarray(track_ids).tolist(),
                                      np.asarray(first_frames).tolist(), strict=True)):
        prev = seen.get(tid, last_start.get(tid))
        if prev is None or f0 - prev >= window_length:
            seen[tid] = f0
            out[i] = True
    return out


def _count(last_start: dict[int, int], window_length: int, track_ids: Any,
           first_frames: Any, *values: Any) -> Iterator[tuple[int, int | None, list[float]]]:
    """Count windows (in order of their first frame per track): the state change of ``_counted``.

    Yields ``(track, previous counted first frame or None, values)`` for each window whose
    values are all finite and that starts a window length or more after its track's last
    counted window, and records it as counted in ``last_start``.
    """
    columns = [np.asarray(v, dtype=np.float64).tolist() for v in values]
    for tid, f0, *vals in zip(np.asarray(track_ids).tolist(), np.asarray(first_frames).tolist(),
                              *columns, strict=True):
        if not all(math.isfinite(v) for v in vals):
            continue
        last = last_start.get(tid)
        if last is not None and f0 - last < window_length:
            continue
        last_start[tid] = f0
        yield tid, last, vals


class _RunningMean:
    """Running n, sum and sum of squares of a value: its mean and the mean's standard error."""

    __slots__ = ("n", "total", "total2")

    def __init__(self) -> None:
        self.n = 0
        self.total = self.total2 = 0.0

    def add(self, x: float) -> None:
        self.n += 1
        self.total += x
        self.total2 += x * x

    def mean(self) -> float:
        return self.total / self.n if self.n else math.nan

    def se(self) -> float:
        """Standard error of the mean (sample SD with n - 1; NaN below 2 values)."""
        n = self.n
        if n < 2:
            return math.nan
        mean = self.total / n
        return math.sqrt(max(self.total2 / n - mean * mean, 0.0) / (n - 1.0))


class _Pairs:
    """Running sums of a, of a^2, of c and of the differences a - c."""

    __slots__ = ("diff", "sum_a", "sum_a2", "sum_c")

    def __init__(self) -> None:
        self.diff = _RunningMean()
        self.sum_a = self.sum_a2 = self.sum_c = 0.0

    @property
    def n(self) -> int:
        return self.diff.n

    def add(self, a: float, c: float) -> None:
        self.diff.add(a - c)
        self.sum_a += a
        self.sum_a2 += a * a
        self.sum_c += c

    def disagrees(self, rel_var: float = math.nan) -> bool:
        """Whether the pairs disagree (module docstring).

        ``rel_var``: the variance of ``(a - c) / a`` pooled over the session's pairs;
        when finite, the standard error of the mean difference is at least
        ``sqrt(rel_var sum a^2) / n`` (see :class:`ModelCheck`).
        """
        n = self.n
        if n < MIN_WINDOWS or self.sum_c <= 0.0:
            return False
        ratio = self.sum_a / self.sum_c
        if 1.0 / (1.0 + BIAS_LIMIT) <= ratio <= 1.0 + BIAS_LIMIT:
            return False
        se = self.diff.se()
        if math.isfinite(rel_var):
            se = max(se, math.sqrt(rel_var * self.sum_a2) / n)
        return abs(self.diff.mean()) > _t_quantile(n - 1) * se

    def ratio(self) -> float:
        return self.sum_a / self.sum_c if self.sum_c > 0 else math.nan


class ModelCheck:
    """Running comparison of model and CVE window estimates, per track and per session.

    Parameters
    ----------
    window_length : int
        Points per window; a window is counted when its first frame is at least this
        many frames after the first frame of the last counted window of its track.

    Attributes
    ----------
    n_flagged_tracks : int
        Tracks flagged on their own pairs so far (ended ones included).
    session_flagged : bool
        Whether the session's pairs disagreed: every later window goes to the CVE.
    """

    def __init__(self, window_length: int) -> None:
        self.window_length = int(window_length)
        self._last_start: dict[int, int] = {}
        self._tracks: dict[int, _Pairs] = {}
        self._flagged: set[int] = set()
        self._session = _Pairs()
        self._rel = _RunningMean()  # (a - c) / a over the session's pairs
        self.n_flagged_tracks = 0
        self.session_flagged = False

    def update(self, track_ids: NDArray[np.int64], first_frames: NDArray[np.int64],
               d_model_um2_s: NDArray[np.float64], d_cve_um2_s: NDArray[np.float64]) -> None:
        """Add the model's and the CVE's D of windows (in order of their first frame per track).

        Parameters
        ----------
        track_ids, first_frames : ndarray of int, shape (M,)
            Track and first frame of each window.
        d_model_um2_s, d_cve_um2_s : ndarray, shape (M,)
            The model's and the sigma-unknown CVE's D of each window, um^2/s; pairs
            with a non-finite value are not counted.
        """
        if self.session_flagged:
            return
        for tid, _, (a, c) in _count(self._last_start, self.window_length, track_ids,
                                     first_frames, d_model_um2_s, d_cve_um2_s):
            self._session.add(a, c)
            if a > 0.0:
                self._rel.add((a - c) / a)
            if tid not in self._flagged:
                pairs = self._tracks.setdefault(tid, _Pairs())
                pairs.add(a, c)
                if pairs.disagrees(self.pooled_relative_variance()):
                    self._flagged.add(tid)
                    self.n_flagged_tracks += 1
        if self._session.disagrees():
            self.session_flagged = True

    def counted(self, track_ids: NDArray[np.int64],
                first_frames: NDArray[np.int64]) -> NDArray[np.bool_]:
        """Which of these windows :meth:`update` would count (none once the session is flagged)."""
        if self.session_flagged:
            return np.zeros(len(track_ids), dtype=bool)
        return _counted(self._last_start, self.window_length, track_ids, first_frames)

    def flagged(self, track_ids: NDArray[np.int64]) -> NDArray[np.bool_]:
        """Whether each track's windows should go to the CVE."""
        if self.session_flagged:
            return np.ones(len(track_ids), dtype=bool)
        return np.fromiter((t in self._flagged for t in np.asarray(track_ids).tolist()),
                           dtype=bool, count=len(track_ids))

    def pooled_relative_variance(self) -> float:
        """Variance of ``(a - c) / a`` over the session's pairs (NaN below POOLED_MIN_PAIRS)."""
        r = self._rel
        if r.n < POOLED_MIN_PAIRS:
            return math.nan
        mean = r.total / r.n
        return max(r.total2 / r.n - mean * mean, 0.0) * r.n / (r.n - 1.0)

    def session_ratio(self) -> float:
        """Sum of the model's over the CVE's D of the session's counted windows (NaN: none)."""
        return self._session.ratio()

    def session_windows(self) -> int:
        """Counted (non-overlapping) window pairs of the session."""
        return self._session.n

    def drop(self, track_id: int) -> None:
        """Forget a track that ended."""
        self._last_start.pop(track_id, None)
        self._tracks.pop(track_id, None)
        self._flagged.discard(track_id)


TRACK_SIGMA_MIN_PAIRS = 50
"""Pairs of consecutive counted windows the track-sigma check needs before it decides."""

TRACK_SIGMA_Z = 3.0
"""Standard errors by which the track-sigma windows must vary more than the plain CVE's."""

TRACK_SIGMA_SUFFIX = ":sigma-check"
"""Appended to ``cve`` for windows sent to the sigma-unknown CVE by the track-sigma check."""


class TrackSigmaCheck:
    """Session-level check that the track-sigma CVE varies less than the sigma-unknown CVE.

    The sigma-known CVE with each track's own noise estimate
    (:mod:`livespt.server.pipeline.track_noise`) has a smaller variance than the
    sigma-unknown CVE when the steps follow the model (Brownian steps, Gaussian noise,
    motion blur, evenly spaced frames): relative RMSE 0.41 against 0.57 on the README's
    movie. On a real movie it did not (0.88 against 0.70 against each track's own
    whole-track D, ``docs/accuracy.md``): the model behind the track's sigma did not
    hold there. Both estimators are computed on the same windows, so which one varies
    less is measured, not assumed. Over consecutive non-overlapping windows of a track
    (``k``, ``k + 1``; the track's D cancels when it is the same in both), with ``a``
    the track-sigma and ``c`` the sigma-unknown estimate::

        e_k = (a_{k+1} - a_k)^2 - (c_{k+1} - c_k)^2      (E = 2 Var(a) - 2 Var(c))

    and once the session has ``TRACK_SIGMA_MIN_PAIRS`` of them, if their mean exceeds
    0 by ``TRACK_SIGMA_Z`` standard errors, every later track-sigma window of the
    session is given the sigma-unknown CVE instead, ``method = cve:sigma-check``.

    Parameters
    ----------
    window_length : int
        Points per window (windows are counted when they do not overlap).

    Attributes
    ----------
    flagged : bool
        Whether the session switched to the sigma-unknown CVE.
    """

    def __init__(self, window_length: int) -> None:
        self.window_length = int(window_length)
        self._last_start: dict[int, int] = {}  # track: first frame of its last counted window
        self._last_pair: dict[int, tuple[float, float]] = {}  # and that window's (a, c)
        self._e = _RunningMean()
        self.flagged = False

    def update(self, track_ids: NDArray[np.int64], first_frames: NDArray[np.int64],
               d_track_sigma_um2_s: NDArray[np.float64],
               d_sigma_unknown_um2_s: NDArray[np.float64]) -> None:
        """Add windows estimated both ways (in order of their first frame per track)."""
        if self.flagged:
            return
        for tid, last, (a, c) in _count(self._last_start, self.window_length, track_ids,
                                        first_frames, d_track_sigma_um2_s,
                                        d_sigma_unknown_um2_s):
            if last is not None and self._last_start[tid] - last == self.window_length:
                a0, c0 = self._last_pair[tid]
                self._e.add((a - a0) ** 2 - (c - c0) ** 2)
            self._last_pair[tid] = (a, c)
        if self._e.n >= TRACK_SIGMA_MIN_PAIRS:
            self.flagged = self._e.mean() > TRACK_SIGMA_Z * self._e.se()

    def counted(self, track_ids: NDArray[np.int64],
                first_frames: NDArray[np.int64]) -> NDArray[np.bool_]:
        """Which of these windows :meth:`update` would count (none once flagged)."""
        if self.flagged:
            return np.zeros(len(track_ids), dtype=bool)
        return _counted(self._last_start, self.window_length, track_ids, first_frames)

    def z(self) -> float:
        """Mean of ``e_k`` over its standard error (> 0: the track sigma varies more)."""
        se = self._e.se()
        return self._e.mean() / se if se > 0 else math.nan

    def pairs(self) -> int:
        """Pairs of consecutive counted windows so far."""
        return self._e.n

    def drop(self, track_id: int) -> None:
        """Forget a track that ended."""
        self._last_start.pop(track_id, None)
        self._last_pair.pop(track_id, None)


NOISE_SPREAD_MIN_WINDOWS = 50
"""Counted windows :class:`NoiseSpread` needs before its estimate is used."""


class NoiseSpread:
    """Session-level spread of the windows' localization variance around their track's, um^4.

    A track's noise estimate (:mod:`livespt.server.pipeline.track_noise`) is one value
    for its whole history; a window's own noise may differ (a bead drifting through
    focus in a bright-field movie, a changing background). The sigma-known CVE of a
    window then errs by ``G delta`` from its squared steps and the other way from its
    adjacent products; :func:`~livespt.models.estimators.cve.noise_spread_samples`
    turns the gap between the two into an unbiased sample of ``S = Var(delta)``. This
    class averages them over the session's non-overlapping windows (counted like the
    other checks) and, once it has :data:`NOISE_SPREAD_MIN_WINDOWS`, reports the mean,
    clipped at 0, which the window estimator adds to each track-sigma window's
    ``sigma2_var_um4``: the weights of its two moments shift towards the combination
    that does not depend on sigma (the sigma-unknown CVE at ``w = 1 - 2R``) and its
    intervals widen, by as much as the data show. Measured on the real movie of
    ``docs/accuracy.md``: sqrt(S) = 0.0065 um^2 against a mean sigma^2 of 0.0023 um^2.

    Parameters
    ----------
    window_length : int
        Points per window (windows are counted when they do not overlap).
    """

    def __init__(self, window_length: int) -> None:
        self.window_length = int(window_length)
        self._last_start: dict[int, int] = {}
        self._s = _RunningMean()

    def counted(self, track_ids: NDArray[np.int64],
                first_frames: NDArray[np.int64]) -> NDArray[np.bool_]:
        """Which of these windows :meth:`update` would count."""
        return _counted(self._last_start, self.window_length, track_ids, first_frames)

    def update(self, track_ids: NDArray[np.int64], first_frames: NDArray[np.int64],
               samples_um4: NDArray[np.float64]) -> None:
        """Add windows' samples (:func:`~livespt.models.estimators.cve.noise_spread_samples`)."""
        for _, _, (v,) in _count(self._last_start, self.window_length, track_ids,
                                 first_frames, samples_um4):
            self._s.add(v)

    def variance_um4(self) -> float:
        """``S`` in um^4 to add to the track-sigma windows' sigma^2 variance (0 until known)."""
        if self._s.n < NOISE_SPREAD_MIN_WINDOWS:
            return 0.0
        return max(self._s.mean(), 0.0)

    def summary(self) -> dict[str, float | int | bool | None]:
        """Windows counted, ``sqrt(S)`` (um^2), its z against 0, and whether it is in use."""
        se = self._s.se()
        mean = self._s.mean() if self._s.n else math.nan
        return {"windows": self._s.n,
                "in_use": self._s.n >= NOISE_SPREAD_MIN_WINDOWS,
                "sigma2_sd_um2": (round(math.sqrt(max(mean, 0.0)), 6)
                                  if math.isfinite(mean) else None),
                "z": round(mean / se, 2) if se > 0 and math.isfinite(mean) else None}

    def drop(self, track_id: int) -> None:
        """Forget a track that ended."""
        self._last_start.pop(track_id, None)
