"""Mean squared displacement (MSD) curve and the three classical MSD fits of D.

The model, for a lag of n frames in d dimensions (Berglund 2010; Michalet 2010):

    MSD(n) = 2 d D dt (n - 2R) + 2 d sigma^2,

exactly linear in ``n - 2R``, so a least-squares line through the MSD values is an
unbiased estimator of D for any fixed weights: slope / (2 d dt). The MSD values are
quadratic forms of the steps (a lag-n displacement is a sum of steps), so the variance
of every fit is exact (:mod:`livespt.models.estimators.quadform`) and the interval is built
by test inversion, as for the CVE.

Fits (``fit=``):

- ``"full"``: unweighted least squares over lags 1..max_lag (default N//4, at least 2,
  at most ``MAX_DEFAULT_LAG``).
- ``"optimal"``: Michalet's (2010) iterated optimal number of points for the slope,
  ``p = floor(2 + 2.3 x^0.52)`` with ``x = sigma^2 / (D dt)``, starting from p = 2.
- ``"weighted"``: weighted least squares over lags 1..max_lag (default N//2, at most
  ``MAX_DEFAULT_LAG``) with weights ``1 / Var(MSD(n))``, the exact finite-N variance
  of each MSD value for pure diffusion (sigma = 0, blur included): the analogue of
  Qian et al.'s weights, independent of the data, so the fit stays exactly unbiased.

References
----------
Qian, Sheetz & Elson, Biophys. J. 60, 910 (1991).
Michalet, Phys. Rev. E 82, 041914 (2010).
Berglund, Phys. Rev. E 82, 011917 (2010).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray

from livespt.models import _validate
from livespt.models.estimators import _tracks
from livespt.models.estimators.cve import _confidence, cve_point_estimates
from livespt.models.estimators.quadform import (
    Thinning,
    VarianceCoefficients,
    contiguous_msd_variance_coefficients,
    contiguous_msd_variance_diagonal,
    interval_by_test_inversion,
    pair_weight_variance_coefficients,
    position_pairs,
    variance,
)
from livespt.models.estimators.result import Estimate, EstimateBatch

METHOD = "msd"
FITS = ("full", "optimal", "weighted")

DENSE_MAX_STEPS = 1500
"""Tracks with missing frames and at most this many steps get the exact variance from a
dense (N-1) x (N-1) matrix (O(N^2) time and memory: a few such arrays of 18 MB at the
limit, ~0.3 s). Longer
gapped tracks use the gap-free closed form over the frames they span, corrected as if
frames were missing at random (:class:`quadform.Thinning`): an approximation, the only
one in this module. Tracks without gaps are exact at any length."""

MAX_DEFAULT_LAG = 1000
"""Cap of the default lag ranges of the full and weighted fits (N // 4 and N // 2). The MSD
costs O(N L) and the exact variance O(L^2) for L lags: without the cap a 10^5-position
track would take minutes, for a fit whose variance is dominated by its longest, most
correlated lags anyway. An explicit ``max_lag`` is honoured at that cost."""

OPTIMAL_MAX_ITERATIONS = 20
"""Michalet's rule converges in a few iterations; a track that cycles keeps the last p."""

_INITIAL_LAGS = 64
"""Lags computed first for the optimal fit; more only when the rule asks for them."""


def _lag_sums(
    pos: NDArray[np.float64], frames: NDArray[np.int64], max_lag: int
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Sums over pairs of squared displacements (summed over dimensions), lags 1..max_lag.

    Returns ``(sums (M, L), counts (L,))``; O(M N L d).
    """
    m, n, _ = pos.shape
    sums = np.zeros((m, max_lag))
    counts = np.zeros(max_lag, dtype=np.int64)
    contiguous = _tracks.is_contiguous(frames)
    for j in range(1, min(max_lag, n - 1) + 1):
        lag = frames[j:] - frames[:-j]
        keep = np.flatnonzero(lag <= max_lag)
        if keep.size == 0:
            continue
        if contiguous:
            # without gaps an index offset j is a lag of j frames
            diff = pos[:, j:, :] - pos[:, :-j, :]
            sums[:, j - 1] = np.einsum("mkd,mkd->m", diff, diff)
            counts[j - 1] = n - j
        else:
            diff = pos[:, j:, :][:, keep] - pos[:, :-j, :][:, keep]
            sq = np.einsum("mkd,mkd->mk", diff, diff)
            col = lag[keep] - 1
            onehot = sp.csr_matrix(
                (np.ones(keep.size), (np.arange(keep.size), col)), shape=(keep.size, max_lag)
            )
            sums += np.asarray((onehot.T @ sq.T).T)
            counts += np.bincount(col, minlength=max_lag)
    return sums, counts


def msd_curve(
    positions_um: ArrayLike,
    frames: ArrayLike | None = None,
    max_lag: int | None = None,
) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.int64]]:
    """Time-averaged MSD of one track, with missing frames handled.

    Parameters
    ----------
    positions_um : array_like, shape (N, d) or (N,)
        Positions in um.
    frames : array_like of int, shape (N,), optional
        Frames of the positions, strictly increasing (default ``0..N-1``).
    max_lag : int, optional
        Largest lag in frames (default: the frames spanned, ``frames[-1] - frames[0]``).

    Returns
    -------
    lags : ndarray of int, shape (L,)
        ``1..max_lag`` in frames.
    msd_um2 : ndarray, shape (L,)
        Mean over all position pairs whose frame difference equals the lag of the
        squared displacement summed over dimensions (um^2); NaN where no pair exists.
    counts : ndarray of int, shape (L,)
        Number of pairs at each lag.
    """
    pos, fr = _tracks.validate_track(positions_um, frames)
    span = int(fr[-1] - fr[0])
    lmax = span if max_lag is None else _validate.positive_int("max_lag", max_lag)
    sums, counts = _lag_sums(pos[None], fr, lmax)
    with np.errstate(invalid="ignore", divide="ignore"):
        msd = np.where(counts > 0, sums[0] / counts, np.nan)
    return np.arange(1, lmax + 1, dtype=np.int64), msd, counts


class _MsdTable:
    """Per-dimension MSD values of M tracks sharing frames, extended on demand."""

    def __init__(self, pos: NDArray[np.float64], frames: NDArray[np.int64]) -> None:
        self.pos = pos
        self.frames = frames
        self.span = int(frames[-1] - frames[0])
        self.ndim = pos.shape[2]
        self.max_lag = 0
        self.y = np.zeros((pos.shape[0], 0))
        self.counts = np.zeros(0, dtype=np.int64)

    def ensure(self, max_lag: int) -> None:
        max_lag = min(max_lag, self.span)
        if max_lag <= self.max_lag:
            return
        sums, counts = _lag_sums(self.pos, self.frames, max_lag)
        with np.errstate(invalid="ignore", divide="ignore"):
            self.y = np.where(counts > 0, sums / (np.maximum(counts, 1) * self.ndim), 0.0)
        self.counts = counts
        self.max_lag = max_lag


def _lag_counts(frames: NDArray[np.int64], max_lag: int) -> NDArray[np.int64]:
    _, _, lag = position_pairs(frames, max_lag)
    return np.bincount(lag, minlength=max_lag + 1)[1:]


def _second_available_lag(frames: NDArray[np.int64], prefix: str) -> int:
    """Smallest L such that two lags <= L have pairs (a line needs two points)."""
    span = int(frames[-1] - frames[0])
    lmax = min(span, 8)
    while True:
        available = np.flatnonzero(_lag_counts(frames, lmax) > 0) + 1
        if available.size >= 2:
            return int(available[1])
        if lmax >= span:
            raise ValueError(f"{prefix}frames: fewer than two distinct lags have pairs")
        lmax = min(span, 2 * lmax)


def _resolve_max_lag(max_lag: Any, default: int, frames: NDArray[np.int64], prefix: str) -> int:
    span = int(frames[-1] - frames[0])
    need = _second_available_lag(frames, prefix)
    if max_lag is None:
        # the default is a rule of thumb: widen it when gaps leave fewer than two lags
        return min(span, max(default, need))
    lmax = _validate.positive_int("max_lag", max_lag, 2)
    if lmax > span:
        raise ValueError(
            f"{prefix}max_lag ({lmax}) exceeds the frames spanned by the track ({span})"
        )
    if lmax < need:
        raise ValueError(
            f"{prefix}max_lag ({lmax}) leaves fewer than two lags with position pairs; "
            f"use at least {need}"
        )
    return lmax


def _default_max_lag(fit: str, n_positions: int) -> int:
    """Rule-of-thumb lag ranges: a quarter (full) or half (weighted) of the positions."""
    share = n_positions // 4 if fit == "full" else n_positions // 2
    return max(2, min(share, MAX_DEFAULT_LAG))


def _weighted_line(
    w: NDArray[np.float64], x: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Coefficients of slope and intercept of ``y = c + s x`` by weighted least squares.

    ``w``: (M, L) weights, ``x``: (L,) abscissae. Returns ``(g_slope, g_intercept)``,
    each (M, L), so that ``slope = sum(g_slope * y)``: the fit is linear in the MSD
    values, which is what makes its variance a quadratic form of the steps.
    """
    s0 = w.sum(axis=1, keepdims=True)
    s1 = (w * x).sum(axis=1, keepdims=True)
    s2 = (w * x * x).sum(axis=1, keepdims=True)
    det = s0 * s2 - s1 * s1
    g_slope = w * (s0 * x - s1) / det
    g_intercept = w * (s2 - s1 * x) / det
    return g_slope, g_intercept


class _Fit:
    """Result of fitting lines through MSD values: estimates and the slope coefficients."""

    def __init__(self, table: _MsdTable, w: NDArray[np.float64], dt: float, r: float) -> None:
        lags = np.arange(1, table.max_lag + 1, dtype=np.float64)
        if w.shape[1] != table.max_lag:
            raise AssertionError("weights must cover the lags of the table")
        w = w * (table.counts > 0)
        g_slope, g_int = _weighted_line(w, lags - 2.0 * r)
        self.h = g_slope / (2.0 * dt)  # D_hat = sum h_n m_n (per-dimension MSD)
        self.d = (self.h * table.y).sum(axis=1)
        self.sigma2 = 0.5 * (g_int * table.y).sum(axis=1)
        used = w > 0
        self.max_lag = np.where(used.any(axis=1), table.max_lag - np.argmax(used[:, ::-1], 1), 0)


def _lag_mask(max_lags: NDArray[np.int64], width: int) -> NDArray[np.float64]:
    return (np.arange(1, width + 1)[None, :] <= max_lags[:, None]).astype(np.float64)


def _thinning(frames: NDArray[np.int64], counts: NDArray[np.int64]) -> tuple[int, Thinning]:
    """Frames spanned and the presence of pairs and positions relative to a gap-free track."""
    span = int(frames[-1] - frames[0])
    lags = np.arange(1, counts.shape[0] + 1)
    return span, Thinning(counts / (span + 1.0 - lags), frames.shape[0] / (span + 1.0))


def _variance_coefficients(
    h: NDArray[np.float64],
    frames: NDArray[np.int64],
    counts: NDArray[np.int64],
    dt: float,
    r: float,
) -> VarianceCoefficients:
    """Per-dimension variance coefficients of ``sum_n h_n m_n`` for each row of h."""
    used = np.flatnonzero(np.any(h != 0.0, axis=0))
    width = int(used[-1]) + 1 if used.size else 1
    h = h[:, :width]
    counts = counts[:width]
    # tracks sharing a fit (full, optimal with the same p) share the variance
    uniq, inverse = np.unique(h, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    lags = np.arange(1, width + 1, dtype=np.int64)
    n_steps = frames.shape[0] - 1
    if _tracks.is_contiguous(frames):
        q = contiguous_msd_variance_coefficients(uniq, lags, n_steps, dt, r)
    elif n_steps <= DENSE_MAX_STEPS:
        sig_d, sig_s = _tracks.step_covariance_basis(_tracks.gaps(frames), dt, r)
        lag_weights = np.zeros((uniq.shape[0], width + 1))
        lag_weights[:, 1:] = uniq / np.maximum(counts, 1)
        q = pair_weight_variance_coefficients(frames, lag_weights, sig_d, sig_s)
    else:
        span, thinning = _thinning(frames, counts)
        q = contiguous_msd_variance_coefficients(uniq, lags, span, dt, r, thinning)
    return VarianceCoefficients(q.dd[inverse], q.ds[inverse], q.ss[inverse])


def _diffusion_only_weights(
    frames: NDArray[np.int64], counts: NDArray[np.int64], dt: float, r: float
) -> NDArray[np.float64]:
    """Weights ``1 / Var(m_n)`` of the MSD values for pure diffusion (sigma = 0), (L,).

    The exact finite-N, blur-aware analogue of Qian et al.'s (1991) weights. They do not
    depend on the data (Var is proportional to D^2 at sigma = 0), which keeps the fit
    exactly unbiased and its standard error exact. Exact without gaps; with gaps the
    gap-free variance over the frames spanned with the random-thinning correction.
    """
    lags = np.arange(1, counts.shape[0] + 1, dtype=np.int64)
    if _tracks.is_contiguous(frames):
        q = contiguous_msd_variance_diagonal(lags, frames.shape[0] - 1, dt, r)
    else:
        span, thinning = _thinning(frames, counts)
        q = contiguous_msd_variance_diagonal(lags, span, dt, r, thinning)
    with np.errstate(divide="ignore"):
        return np.where(counts > 0, 1.0 / np.asarray(q.dd), 0.0)


def _fit_arrays(
    pos: NDArray[np.float64],
    frames: NDArray[np.int64],
    dt: float,
    r: float,
    fit: str,
    max_lag: Any,
    confidence: float,
    prefix: str,
) -> tuple[
    NDArray[np.float64],
    NDArray[np.float64],
    NDArray[np.float64],
    NDArray[np.float64],
    NDArray[np.float64],
    NDArray[np.int64],
]:
    """MSD fit of (M, N, d) positions sharing frames: (d, low, high, se, sigma2, max_lag)."""
    if fit not in FITS:
        raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
    m, n, ndim = pos.shape
    table = _MsdTable(pos, frames)
    if fit == "full":
        lmax = _resolve_max_lag(max_lag, _default_max_lag(fit, n), frames, prefix)
        table.ensure(lmax)
        result = _Fit(table, np.ones((m, lmax)), dt, r)
    elif fit == "weighted":
        lmax = _resolve_max_lag(max_lag, _default_max_lag(fit, n), frames, prefix)
        table.ensure(lmax)
        w = _diffusion_only_weights(frames, table.counts, dt, r)
        result = _Fit(table, np.broadcast_to(w, (m, lmax)), dt, r)
    else:
        span = int(frames[-1] - frames[0])
        cap = span if max_lag is None else _resolve_max_lag(max_lag, span, frames, prefix)
        p_low = _second_available_lag(frames, prefix)
        p = np.full(m, max(2, p_low), dtype=np.int64)
        table.ensure(min(cap, max(_INITIAL_LAGS, int(p.max()))))
        for _ in range(OPTIMAL_MAX_ITERATIONS):
            result = _Fit(table, _lag_mask(p, table.max_lag), dt, r)
            with np.errstate(divide="ignore", invalid="ignore"):
                x = np.where(
                    result.d > 0.0, np.maximum(result.sigma2, 0.0) / (result.d * dt), np.inf
                )
            p_new = np.floor(2.0 + 2.3 * np.minimum(x, 1e12) ** 0.52)
            p_new = np.clip(p_new, max(2, p_low), cap).astype(np.int64)
            if np.array_equal(p_new, p):
                break
            p = p_new
            table.ensure(int(p.max()))
        result = _Fit(table, _lag_mask(p, table.max_lag), dt, r)
    q = _variance_coefficients(result.h, frames, table.counts, dt, r)
    # The variance needs sigma^2, a nuisance here. The fit's intercept extrapolates the
    # line back from up to max_lag; the CVE's sigma^2 (in effect from lags 1 and 2) has
    # a smaller spread and is the same for every fit, so all three share one plug-in.
    _, sigma2_plugin = cve_point_estimates(pos, frames, dt, r)
    low, high, se = interval_by_test_inversion(result.d, q, sigma2_plugin, ndim, confidence)
    return result.d, low, high, se, result.sigma2, result.max_lag.astype(np.int64)


def msd_fit(
    positions_um: ArrayLike,
    frame_interval_s: float,
    frames: ArrayLike | None = None,
    *,
    exposure_s: float | None = None,
    fit: str = "full",
    max_lag: int | None = None,
    confidence: float = 0.9,
    blur_coefficient: float | None = None,
    track_id: Any = None,
) -> Estimate:
    """Estimate D of one track by a straight-line fit to its MSD curve.

    Fits ``MSD(n) / d = 2 D dt (n - 2R) + 2 sigma^2`` over lags n (frames) with pairs.

    Parameters
    ----------
    positions_um : array_like, shape (N, d) or (N,)
        Positions in um, N >= 3.
    frame_interval_s : float
        Frame interval in s.
    frames : array_like of int, shape (N,), optional
        Frames of the positions, strictly increasing; missing frames are gaps and
        each lag uses the pairs whose frame difference equals it.
    exposure_s : float, optional
        Exposure in s (default: the frame interval); ``R = exposure_s / (6 dt)``.
    fit : {"full", "optimal", "weighted"}
        ``"full"``: unweighted, lags 1..max_lag (default ``max(2, N // 4)``, at most
        ``MAX_DEFAULT_LAG`` = 1000).
        ``"optimal"``: Michalet's iterated ``p = floor(2 + 2.3 x^0.52)``,
        ``x = sigma^2 / (D dt)`` from the current fit (``x = inf`` when D <= 0),
        starting at p = 2, clamped to ``[2, max_lag]`` (default: the frames spanned,
        N - 1 without gaps), at most 20 iterations.
        ``"weighted"``: weights ``1 / Var(MSD(n))``, the exact finite-N variance of
        each MSD value for pure diffusion (the analogue of Qian et al.'s weights,
        with blur; independent of the data), lags 1..max_lag (default
        ``max(2, N // 2)``, at most 1000).
    max_lag : int, optional
        Largest lag in frames (>= 2, <= frames spanned); see ``fit``.
    confidence : float
        Level of the two-sided interval, default 0.9.
    blur_coefficient : float, optional
        Exact R in ``[0, 1/4]``, overriding the one derived from the exposure.
    track_id : object, optional
        Named in error messages and copied to the result.

    Returns
    -------
    Estimate
        ``method="msd"``, ``variant=fit``, ``max_lag`` the largest lag used.
        ``d_um2_s`` (slope / (2 dt)) and ``sigma2_um2`` (intercept / 2) are not clipped.
        The standard error is the exact standard deviation of the fit for the lags and
        weights it used (the optimal p depends on the data and is treated as fixed),
        evaluated at the zero-clipped estimate of D and at the CVE's estimate of
        sigma^2 (more precise than the fit's intercept; see the module notes).

    Notes
    -----
    "full" and "weighted" use lags and weights fixed before seeing the data, and the
    model is exactly linear in ``n - 2R``: they are exactly unbiased. "optimal" picks
    its lag count from the data, which biases it low by a few percent (measured: -2 %
    at x = 0.1 to -7 % at x = 5 with 50 steps, -13 % at x = 5 with 20 steps; see
    docs/estimators.md). With missing frames, when fewer than two lags <= the
    default max_lag have pairs, the default is widened to the second lag that has.

    References
    ----------
    Michalet, Phys. Rev. E 82, 041914 (2010); Qian, Sheetz & Elson, Biophys. J. 60,
    910 (1991); Berglund, Phys. Rev. E 82, 011917 (2010).
    """
    pos, fr = _tracks.validate_track(positions_um, frames, track_id)
    dt, r = _tracks.resolve_timing(frame_interval_s, exposure_s, blur_coefficient)
    conf = _confidence(confidence)
    d, low, high, se, sigma2, lags = _fit_arrays(
        pos[None], fr, dt, r, fit, max_lag, conf, _tracks.prefix(track_id)
    )
    return Estimate(
        d_um2_s=float(d[0]),
        d_low_um2_s=float(low[0]),
        d_high_um2_s=float(high[0]),
        se_um2_s=float(se[0]),
        sigma2_um2=float(sigma2[0]),
        n_positions=int(fr.shape[0]),
        n_steps=int(fr.shape[0] - 1),
        method=METHOD,
        variant=fit,
        track_id=track_id,
        confidence=conf,
        max_lag=int(lags[0]),
    )


def msd_fit_batch(
    positions_um: ArrayLike,
    frame_interval_s: float,
    frames: ArrayLike | None = None,
    *,
    exposure_s: float | None = None,
    fit: str = "full",
    max_lag: int | None = None,
    confidence: float = 0.9,
    blur_coefficient: float | None = None,
) -> EstimateBatch:
    """MSD fit of M tracks sharing their frames; as :func:`msd_fit`, vectorized.

    Parameters
    ----------
    positions_um : array_like, shape (M, N, d) or (M, N)
        Positions in um.
    frame_interval_s, exposure_s, fit, max_lag, confidence, blur_coefficient
        As in :func:`msd_fit`.
    frames : array_like of int, shape (N,), optional
        Frames shared by all tracks.

    Returns
    -------
    EstimateBatch
        Arrays of shape (M,), ``max_lag`` per track.
    """
    pos, fr = _tracks.validate_batch(positions_um, frames)
    dt, r = _tracks.resolve_timing(frame_interval_s, exposure_s, blur_coefficient)
    conf = _confidence(confidence)
    d, low, high, se, sigma2, lags = _fit_arrays(pos, fr, dt, r, fit, max_lag, conf, "")
    return EstimateBatch(
        d_um2_s=d,
        d_low_um2_s=low,
        d_high_um2_s=high,
        se_um2_s=se,
        sigma2_um2=sigma2,
        n_positions=int(fr.shape[0]),
        n_steps=int(fr.shape[0] - 1),
        method=METHOD,
        variant=fit,
        confidence=conf,
        max_lag=lags,
    )


def msd_fit_variance(
    n_positions_or_frames: int | ArrayLike,
    d_um2_s: float,
    sigma_um: float,
    frame_interval_s: float,
    exposure_s: float | None = None,
    ndim: int = 2,
    fit: str = "full",
    max_lag: int | None = None,
    *,
    blur_coefficient: float | None = None,
) -> float:
    """Exact variance of the "full" or "weighted" MSD fit for a track length or frame pattern.

    Both fits use lags and weights that do not depend on the data, so their variance
    is that of a fixed quadratic form of the steps (see :mod:`quadform`). The
    "optimal" fit picks its lags from the data; its variance at a given p is that of
    ``fit="full", max_lag=p``.

    Parameters
    ----------
    n_positions_or_frames : int or array_like of int
        Number of positions of a gap-free track, or the frames of the positions.
    d_um2_s : float
        True D in um^2/s (> 0).
    sigma_um : float
        Localization precision per dimension in um (>= 0).
    frame_interval_s : float
        Frame interval in s.
    exposure_s : float, optional
        Exposure in s (default: the frame interval).
    ndim : int
        Number of dimensions d.
    fit : {"full", "weighted"}
        The fit, with its default lags as in :func:`msd_fit`.
    max_lag : int, optional
        Largest lag in frames, as in :func:`msd_fit`.
    blur_coefficient : float, optional
        Exact R, overriding the one derived from the exposure.

    Returns
    -------
    float
        ``Var(D_hat)`` in (um^2/s)^2.
    """
    if fit not in ("full", "weighted"):
        raise ValueError(
            f"fit must be 'full' or 'weighted' (the optimal fit's lags depend on the data; "
            f"use fit='full' with max_lag=p), got {fit!r}"
        )
    frames = _tracks.validate_frames_or_count(n_positions_or_frames)
    d = _validate.positive("d_um2_s", d_um2_s)
    s2 = _validate.non_negative("sigma_um", sigma_um) ** 2
    nd = _validate.positive_int("ndim", ndim)
    dt, r = _tracks.resolve_timing(frame_interval_s, exposure_s, blur_coefficient)
    lmax = _resolve_max_lag(max_lag, _default_max_lag(fit, frames.shape[0]), frames, "")
    counts = _lag_counts(frames, lmax)
    if fit == "full":
        w = (counts > 0).astype(np.float64)
    else:
        w = _diffusion_only_weights(frames, counts, dt, r)
    lags = np.arange(1, lmax + 1, dtype=np.float64)
    g_slope, _ = _weighted_line(w[None, :], lags - 2.0 * r)
    q = _variance_coefficients(g_slope / (2.0 * dt), frames, counts, dt, r)
    return float(variance(q, d, s2, nd)[0])
