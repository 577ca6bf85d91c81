"""Each track's localization noise, estimated from its own step history.

The detector's per-spot precision is the Cramer-Rao bound of a Gaussian fit: it
knows nothing of motion blur (a smeared spot is not a Gaussian, and its fitted
centre is not its exposure-mean position) and it moves with the camera model
the server was told. Measured on the README's movie (0.1 um pixels, 50 ms):
position errors are 1.4x the reported precision at D = 0.2 um^2/s and 3.3x at
D = 1.0; on an 8-bit movie read with a wrong offset the reported precision was
5e-7 um. A sigma-known estimator fed such a sigma is biased.

What the steps themselves say does not depend on any of that. Per axis, for
consecutive frames (no gap), with ``R`` the blur coefficient
(``docs/estimators.md``)::

    E[dx_n^2]         = 2 D dt (1 - 2R) + 2 sigma^2
    E[dx_n dx_{n+1}]  = 2 R D dt - sigma^2

so ``sigma^2 = R <dx^2> + (2R - 1) <dx_n dx_{n+1}>`` (the CVE's noise estimate),
where ``sigma`` is the *effective* localization noise: whatever static error the
positions carry, blur-induced mismatch included, in the units of the positions.
The formula is linear in the moments, so it stays unbiased when D changes
along the track (each product pairs steps of one regime but for the few at a
change). Over a whole track it uses many more steps than a window holds: the
windows then use the sigma-known CVE with the track's sigma
(:class:`~livespt.server.pipeline.estimate.WindowEstimator`), whose variance is
well below the sigma-unknown CVE's, with the estimate's own variance added to
each window's interval; the change detector takes its noise floor from it too.
With blur the windows' sigma-known CVE uses both moments (the adjacent products
also carry D: ``E[dx_n dx_{n+1}] + sigma^2 = 2 R D dt``), weighted for least
variance at the track's whole-history D (:meth:`TrackNoise.diffusion`): from the
squared steps alone, the factor ``1 / (1 - 2R)`` makes it noisier than the
sigma-unknown CVE once ``sigma^2`` exceeds ~0.3 x ``2 D dt``.

A track's sigma is used once it has :data:`MIN_STEP_PAIRS` pairs of adjacent
one-frame steps; before, windows use the sigma-unknown CVE (unbiased whatever
the noise). Steps across missed frames are not used (the formula above is for
``k = 1``).

Costs: a few numpy operations per frame for all tracks (arrays indexed by a
:class:`~livespt.server.pipeline.track_slots.TrackSlots` table); memory is a
dozen floats per live track.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from livespt.models import _validate
from livespt.server.pipeline.track_slots import TrackSlots

MIN_STEP_PAIRS = 20
"""Pairs of adjacent one-frame steps a track needs before its own sigma is used.

With 20 pairs (2 axes: 40 products) the sigma^2 estimate's standard error is
about a third of ``2 D dt`` when blur is small; its variance is carried into
the windows' intervals (:func:`sigma2_variance`), so fewer would only widen
them, not bias them.
"""


def sigma2_from_moments(m2: ArrayLike, m11: ArrayLike, blur: float) -> NDArray[np.float64]:
    """Per-axis localization variance from step moments, um^2 (may be < 0 from noise).

    Parameters
    ----------
    m2 : array_like
        Mean squared one-frame step per axis, um^2.
    m11 : array_like
        Mean product of adjacent one-frame steps per axis, um^2.
    blur : float
        Blur coefficient R (0 to 1/4).
    """
    return blur * np.asarray(m2, dtype=np.float64) + (2.0 * blur - 1.0) * np.asarray(
        m11, dtype=np.float64)


def sigma2_variance(m2: ArrayLike, m11: ArrayLike, n2: ArrayLike, n11: ArrayLike,
                    blur: float) -> NDArray[np.float64]:
    """Variance of :func:`sigma2_from_moments` for Gaussian steps, um^4 (large-sample).

    The one-frame steps of one axis form a stationary MA(1) Gaussian sequence with
    variance ``v`` (estimated by ``m2``) and lag-one covariance ``c`` (``m11``).
    Summing the autocovariances of the products (Isserlis' theorem) gives the
    long-run variances ``2 v^2 + 4 c^2`` of ``dx_n^2``, ``v^2 + 3 c^2`` of
    ``dx_n dx_{n+1}`` and the long-run covariance ``4 v c`` between them; each mean
    is over two axes, ``2 n2`` and ``2 n11`` products.
    """
    v = np.maximum(np.asarray(m2, dtype=np.float64), 1e-300)
    c = np.asarray(m11, dtype=np.float64)
    n2a = 2.0 * np.maximum(np.asarray(n2, dtype=np.float64), 1.0)
    n11a = 2.0 * np.maximum(np.asarray(n11, dtype=np.float64), 1.0)
    var_m2 = (2.0 * v**2 + 4.0 * c**2) / n2a
    var_m11 = (v**2 + 3.0 * c**2) / n11a
    cov = 4.0 * v * c / np.sqrt(n2a * n11a)
    a, b = blur, 2.0 * blur - 1.0
    return np.maximum(a * a * var_m2 + b * b * var_m11 + 2.0 * a * b * cov, 0.0)


def track_sigma(frames: ArrayLike, xy_um: ArrayLike, blur: float,
                min_pairs: int = MIN_STEP_PAIRS) -> tuple[float, float]:
    """Localization noise of one whole track from its step history.

    Parameters
    ----------
    frames : array_like of int, shape (N,)
        Frame indices, increasing.
    xy_um : array_like, shape (N, 2)
        Positions, um.
    blur : float
        Blur coefficient R.
    min_pairs : int
        Fewest adjacent one-frame step pairs for an estimate.

    Returns
    -------
    sigma_um : float
        Per-axis noise (um, clipped at 0); NaN with fewer than ``min_pairs`` pairs.
    sigma2_var_um4 : float
        Variance of the sigma^2 estimate (um^4); NaN likewise.
    """
    f = np.asarray(frames, dtype=np.int64).reshape(-1)
    xy = np.asarray(xy_um, dtype=np.float64).reshape(-1, 2)
    if f.size < 3:
        return float("nan"), float("nan")
    steps = np.diff(xy, axis=0)
    one = np.diff(f) == 1
    pair = one[1:] & one[:-1]
    n2, n11 = int(one.sum()), int(pair.sum())
    if n11 < min_pairs:
        return float("nan"), float("nan")
    m2 = float(np.sum(steps[one] ** 2)) / (2 * n2)
    m11 = float(np.sum(steps[1:][pair] * steps[:-1][pair])) / (2 * n11)
    s2 = float(sigma2_from_moments(m2, m11, blur))
    var = float(sigma2_variance(m2, m11, n2, n11, blur))
    return float(np.sqrt(max(s2, 0.0))), var


class TrackNoise:
    """Running step moments of every live track, fed one frame at a time.

    Parameters
    ----------
    blur : float
        Blur coefficient R of the acquisition (0 to 1/4).
    min_pairs : int
        Fewest adjacent one-frame step pairs before a track's sigma is reported.
    """

    def __init__(self, blur: float, min_pairs: int = MIN_STEP_PAIRS) -> None:
        self.blur = _validate.in_range("blur", blur, 0.0, 0.25)
        self.min_pairs = _validate.positive_int("min_pairs", min_pairs, 1)
        self._slots = TrackSlots(64)
        cap = self._slots.capacity
        self._last_frame = np.zeros(cap, dtype=np.int64)
        self._last_xy = np.zeros((cap, 2), dtype=np.float64)
        self._last_step = np.zeros((cap, 2), dtype=np.float64)
        self._has_step = np.zeros(cap, dtype=bool)  # the previous step was a one-frame step
        self._n2 = np.zeros(cap, dtype=np.int64)  # one-frame steps
        self._s2 = np.zeros(cap, dtype=np.float64)  # their summed squares (2 axes), um^2
        self._n11 = np.zeros(cap, dtype=np.int64)  # adjacent pairs of one-frame steps
        self._s11 = np.zeros(cap, dtype=np.float64)  # their summed products, um^2
        # dispersion: squared one-frame steps two apart, u = (q_t - q_t-2) / (q_t + q_t-2)
        self._run = np.zeros(cap, dtype=np.int64)  # consecutive one-frame steps so far (<= 2)
        self._q1 = np.zeros(cap, dtype=np.float64)  # the last squared step, um^2
        self._q2 = np.zeros(cap, dtype=np.float64)  # the one before
        self._nu = np.zeros(cap, dtype=np.int64)  # pairs two apart
        self._su = np.zeros(cap, dtype=np.float64)  # their summed u^2

    def _grow(self) -> None:
        """Extend the arrays to the table's capacity (rows keep their numbers)."""
        cap = self._slots.capacity

        def grown(a: NDArray[Any]) -> NDArray[Any]:
            out = np.zeros((cap, *a.shape[1:]), dtype=a.dtype)
            out[: a.shape[0]] = a
            return out

        self._last_frame, self._last_xy = grown(self._last_frame), grown(self._last_xy)
        self._last_step, self._has_step = grown(self._last_step), grown(self._has_step)
        self._n2, self._s2 = grown(self._n2), grown(self._s2)
        self._n11, self._s11 = grown(self._n11), grown(self._s11)
        self._run, self._q1, self._q2 = grown(self._run), grown(self._q1), grown(self._q2)
        self._nu, self._su = grown(self._nu), grown(self._su)

    def update_many(self, track_ids: ArrayLike, frame: int, xy_um: ArrayLike, *,
                    interval_known: bool = True) -> None:
        """Add one point to each of several distinct tracks, all in ``frame``.

        Parameters
        ----------
        track_ids : array_like of int, shape (K,)
            Distinct track ids.
        frame : int
            Frame index (increasing along each track).
        xy_um : array_like, shape (K, 2)
            Positions, um.
        interval_known : bool
            False when the time since the previous frame is not one frame interval
            although the frame numbers say so (the timing check flagged the frame):
            the steps into ``frame`` are then not one-frame steps and are left out,
            as steps across a gap are.
        """
        ids = np.asarray(track_ids, dtype=np.int64).reshape(-1)
        if ids.size == 0:
            return
        xy = np.asarray(xy_um, dtype=np.float64).reshape(-1, 2)
        rows, new = self._slots.rows(ids)
        if self._slots.capacity > self._n2.shape[0]:
            self._grow()
        if new.size:
            r = rows[new]
            for a in (self._n2, self._s2, self._n11, self._s11, self._run, self._nu, self._su):
                a[r] = 0
            self._has_step[r] = False
            self._last_frame[r] = frame - 2  # no step from a first point
        one = ((frame - self._last_frame[rows]) == 1) & bool(interval_known)
        step = xy - self._last_xy[rows]
        r1 = rows[one]
        s1 = step[one]
        self._n2[r1] += 1
        self._s2[r1] += np.sum(s1 * s1, axis=1)
        pair = self._has_step[r1]
        rp = r1[pair]
        self._n11[rp] += 1
        self._s11[rp] += np.sum(s1[pair] * self._last_step[rp], axis=1)
        self._last_step[r1] = s1
        q = np.sum(s1 * s1, axis=1)
        two = self._run[r1] >= 2
        rt, qt, q2 = r1[two], q[two], self._q2[r1[two]]
        tot = qt + q2
        pos = tot > 0
        self._nu[rt[pos]] += 1
        self._su[rt[pos]] += ((qt[pos] - q2[pos]) / tot[pos]) ** 2
        self._q2[r1] = self._q1[r1]
        self._q1[r1] = q
        self._run[r1] = np.minimum(self._run[r1] + 1, 2)
        self._run[rows[~one]] = 0
        self._has_step[rows] = one
        self._last_frame[rows] = frame
        self._last_xy[rows] = xy

    def sigma(self, track_ids: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Current noise estimate of each track: ``(sigma_um, sigma2_var_um4)``.

        NaN for a track with fewer than ``min_pairs`` step pairs or not known.
        """
        ids = np.asarray(track_ids, dtype=np.int64).reshape(-1)
        sig = np.full(ids.size, np.nan)
        var = np.full(ids.size, np.nan)
        if ids.size == 0:
            return sig, var
        known, n2, n11, m2, m11 = self._moments(ids)
        s2 = sigma2_from_moments(m2, m11, self.blur)
        v = sigma2_variance(m2, m11, n2, n11, self.blur)
        ok = n11 >= self.min_pairs
        sk = np.where(ok, np.sqrt(np.maximum(s2, 0.0)), np.nan)
        vk = np.where(ok, v, np.nan)
        sig[known], var[known] = sk, vk
        return sig, var

    def _moments(self, ids: NDArray[np.int64]) -> tuple[NDArray[np.bool_], NDArray[np.int64],
                                                         NDArray[np.int64], NDArray[np.float64],
                                                         NDArray[np.float64]]:
        """For the known ones of ``ids``: mask, step and pair counts, per-axis m2 and m11."""
        rows = self._slots.lookup(ids.tolist())
        known = rows >= 0
        r = rows[known]
        n2, n11 = self._n2[r], self._n11[r]
        return (known, n2, n11, self._s2[r] / (2.0 * np.maximum(n2, 1)),
                self._s11[r] / (2.0 * np.maximum(n11, 1)))

    def diffusion(self, track_ids: ArrayLike, frame_interval_s: float) -> NDArray[np.float64]:
        """Each track's D over its whole step history, um^2/s (sigma-unknown CVE moments).

        ``(m2 + 2 m11) / (2 dt)``, which depends on neither the noise nor the blur
        coefficient; unclipped (may be <= 0 for a track whose steps are mostly noise).
        The window estimator weighs the two moments of its sigma-known CVE at this D
        (:func:`~livespt.models.estimators.cve.cve_batch`, ``weight_at_d_um2_s``). NaN
        for a track with fewer than ``min_pairs`` step pairs or not known.
        """
        dt = _validate.positive("frame_interval_s", frame_interval_s)
        ids = np.asarray(track_ids, dtype=np.int64).reshape(-1)
        out = np.full(ids.size, np.nan)
        if ids.size == 0:
            return out
        known, _, n11, m2, m11 = self._moments(ids)
        out[known] = np.where(n11 >= self.min_pairs, (m2 + 2.0 * m11) / (2.0 * dt), np.nan)
        return out

    def dispersion(self, track_ids: ArrayLike) -> NDArray[np.float64]:
        """Over-dispersion of each track's squared one-frame steps (1 for Gaussian steps).

        ``phi = 2 E[u^2] / (1 - E[u^2])`` with ``u = (q_t - q_{t-2}) / (q_t + q_{t-2})``
        over pairs of squared 2-D steps two apart (independent under the step model,
        whatever D, noise and blur; for Gamma-distributed ``q`` of shape ``k``,
        ``E[u^2] = 1 / (2k + 1)`` and ``phi = Var(q) / E(q)^2 / (1/k at k = 1)``: 1 for
        Gaussian steps, ~1.9 on the real movie of ``docs/accuracy.md``). The window
        estimator multiplies the variance of track-sigma windows by ``max(phi, 1)``. NaN
        for a track with fewer than ``min_pairs`` such pairs or not known.
        """
        ids = np.asarray(track_ids, dtype=np.int64).reshape(-1)
        out = np.full(ids.size, np.nan)
        if ids.size == 0:
            return out
        rows = self._slots.lookup(ids.tolist())
        known = np.flatnonzero(rows >= 0)
        r = rows[known]
        nu = self._nu[r]
        m = self._su[r] / np.maximum(nu, 1)
        out[known] = np.where(nu >= self.min_pairs, 2.0 * m / np.maximum(1.0 - m, 1e-12),
                              np.nan)
        return out

    def steps_into(self, track_ids: ArrayLike, frame: int,
                   xy_um: ArrayLike) -> NDArray[np.float64]:
        """Each track's one-frame step into ``frame``, um (K, 2); NaN where it has none.

        ``xy - last position`` for tracks seen in ``frame - 1``. Call before
        :meth:`update_many` for that frame (it reads, changes nothing); the frame
        timing check (:mod:`livespt.server.pipeline.frame_timing`) uses it.
        """
        ids = np.asarray(track_ids, dtype=np.int64).reshape(-1)
        xy = np.asarray(xy_um, dtype=np.float64).reshape(-1, 2)
        steps = np.full((ids.size, 2), np.nan)
        if ids.size == 0:
            return steps
        rows = self._slots.lookup(ids.tolist())
        known = np.flatnonzero(rows >= 0)
        r = rows[known]
        one = (frame - self._last_frame[r]) == 1
        steps[known[one]] = xy[known[one]] - self._last_xy[r[one]]
        return steps

    def drop(self, track_id: int) -> None:
        """Forget a track that ended."""
        self._slots.release(track_id)
