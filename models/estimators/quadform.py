"""Mean and variance of quadratic forms of the steps, and the test-inversion interval.

Every estimator of this package is, per dimension, a quadratic form ``q = s^T A s`` of
the Gaussian step vector ``s ~ N(0, Sigma)`` (averaged over the d independent
dimensions), with ``Sigma = D Sigma_D + sigma^2 Sigma_S`` tridiagonal (see
:mod:`livespt.models.estimators._tracks`). Then exactly

    E[q] = tr(A Sigma),        Var[q] = 2 tr(A Sigma A Sigma),

and, as ``Sigma`` is linear in ``(D, sigma^2)``, the variance is a quadratic polynomial

    Var[q] = dd D^2 + ds D sigma^2 + ss sigma^4

whose three coefficients depend only on A, the frames, dt and R, never on the data.
The interval for D is then obtained by test inversion (:func:`interval_by_test_inversion`).

Three ways to get the coefficients, chosen for cost:

- ``A`` tridiagonal (CVE): band products, exact, O(N) at any N.
- ``A`` a combination of MSD lags on a track without missing frames: closed form of
  the lag-lag covariance of the MSD (:func:`msd_lag_covariance_contiguous`), exact,
  O(L^2) for L lags at any N.
- ``A`` a combination of MSD lags on a track with missing frames: A built densely from
  the pair weights (:func:`dense_a_from_pair_weights`), exact, O(N^2) time and memory;
  for very long tracks with missing frames, the closed form with a random-thinning
  correction (:class:`Thinning`), approximate.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import ndtri

from livespt.models.estimators._tracks import Tridiagonal

_CHUNK_ELEMENTS = 1 << 18
"""Elements per temporary array in chunked computations (2 MiB of float64)."""


class VarianceCoefficients(NamedTuple):
    """Per-dimension ``Var = dd * D^2 + ds * D * sigma^2 + ss * sigma^4``.

    Units: ``dd`` in (estimate unit / (um^2/s))^2, and so on; for an estimator of D in
    um^2/s, ``dd`` is dimensionless, ``ds`` in 1/s and ``ss`` in 1/s^2. Fields are
    floats or arrays of shape (M,) for M tracks.
    """

    dd: NDArray[np.float64]
    ds: NDArray[np.float64]
    ss: NDArray[np.float64]


def tridiagonal_mean_coefficients(
    a: Tridiagonal, sig_d: Tridiagonal, sig_s: Tridiagonal
) -> tuple[float, float]:
    """Return ``(tr(A Sigma_D), tr(A Sigma_S))``: ``E[s^T A s] = D t_D + sigma^2 t_S``."""
    t_d = float(np.dot(a.diag, sig_d.diag) + 2.0 * np.dot(a.off, sig_d.off))
    t_s = float(np.dot(a.diag, sig_s.diag) + 2.0 * np.dot(a.off, sig_s.off))
    return t_d, t_s


def _product_bands(a: Tridiagonal, x: Tridiagonal) -> tuple[NDArray[np.float64], ...]:
    """The five diagonals of the pentadiagonal product ``A X`` of two symmetric tridiagonals.

    Returns ``(d0, up1, lo1, up2, lo2)``: main diagonal (n), first super- and
    sub-diagonal (n - 1), second super- and sub-diagonal (n - 2).
    """
    a0, a1, x0, x1 = a.diag, a.off, x.diag, x.off
    d0 = a0 * x0
    d0[1:] += a1 * x1
    d0[:-1] += a1 * x1
    up1 = a0[:-1] * x1 + a1 * x0[1:]
    lo1 = a1 * x0[:-1] + a0[1:] * x1
    up2 = a1[:-1] * x1[1:]
    lo2 = a1[1:] * x1[:-1]
    return d0, up1, lo1, up2, lo2


def _trace_of_product(p: tuple[NDArray[np.float64], ...],
                      q: tuple[NDArray[np.float64], ...]) -> float:
    """``tr(P Q)`` for two pentadiagonals given by :func:`_product_bands`."""
    return float(np.dot(p[0], q[0]) + np.dot(p[1], q[2]) + np.dot(p[2], q[1])
                 + np.dot(p[3], q[4]) + np.dot(p[4], q[3]))


def tridiagonal_variance_coefficients(
    a: Tridiagonal, sig_d: Tridiagonal, sig_s: Tridiagonal
) -> VarianceCoefficients:
    """Exact variance coefficients of ``s^T A s`` for a tridiagonal A, in O(N).

    ``A Sigma_X`` is pentadiagonal, so ``tr(A Sigma_X A Sigma_Y)`` is a sum over its
    five diagonals, computed band by band.
    """
    p_d = _product_bands(a, sig_d)
    p_s = _product_bands(a, sig_s)
    return VarianceCoefficients(
        np.float64(2.0 * _trace_of_product(p_d, p_d)),
        np.float64(4.0 * _trace_of_product(p_d, p_s)),
        np.float64(2.0 * _trace_of_product(p_s, p_s)),
    )


def _times_tridiagonal(a: NDArray[np.float64], t: Tridiagonal) -> NDArray[np.float64]:
    """``A @ T`` for dense A of shape (..., n, n) and tridiagonal T, in O(n^2)."""
    out = a * t.diag
    out[..., :, 1:] += a[..., :, :-1] * t.off
    out[..., :, :-1] += a[..., :, 1:] * t.off
    return out


def dense_variance_coefficients(
    a: NDArray[np.float64], sig_d: Tridiagonal, sig_s: Tridiagonal
) -> VarianceCoefficients:
    """Exact variance coefficients of ``s^T A s`` for dense symmetric A of shape (..., n, n)."""
    p_d = _times_tridiagonal(a, sig_d)
    p_s = _times_tridiagonal(a, sig_s)
    # tr(P Q) = sum_ij P_ij Q_ji
    t_dd = np.einsum("...ij,...ji->...", p_d, p_d)
    t_ds = np.einsum("...ij,...ji->...", p_d, p_s)
    t_ss = np.einsum("...ij,...ji->...", p_s, p_s)
    return VarianceCoefficients(2.0 * t_dd, 4.0 * t_ds, 2.0 * t_ss)


def position_pairs(
    frames: NDArray[np.int64], max_lag: int
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """All position pairs ``(a, b)``, ``a < b``, whose frame difference (lag) is <= max_lag.

    Frames strictly increase, so a lag of L frames spans at most L positions: only
    index offsets up to ``max_lag`` need to be scanned, O(N max_lag).
    """
    a_list, b_list, lag_list = [], [], []
    n = frames.shape[0]
    for j in range(1, min(max_lag, n - 1) + 1):
        lag = frames[j:] - frames[:-j]
        keep = np.flatnonzero(lag <= max_lag)
        a_list.append(keep)
        b_list.append(keep + j)
        lag_list.append(lag[keep])
    if not a_list:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    return np.concatenate(a_list), np.concatenate(b_list), np.concatenate(lag_list)


def dense_a_from_pair_weights(
    frames: NDArray[np.int64], lag_weights: NDArray[np.float64]
) -> NDArray[np.float64]:
    """The matrix A of ``sum_pairs w(lag) (x_b - x_a)^2`` as a form in the steps.

    Parameters
    ----------
    frames : ndarray, shape (N,)
        Frames of the observed positions.
    lag_weights : ndarray, shape (M, L + 1)
        Weight of every pair of lag ``n`` (index n, in frames) for each of M forms;
        lags above L get weight 0.

    Returns
    -------
    ndarray, shape (M, N - 1, N - 1)
        ``A_ij`` (steps i <= j) is the total weight of the pairs ``(a, b)`` that cover
        both steps, ``a <= i`` and ``b >= j + 1``: a 2-D cumulative sum of the pair
        weights.
    """
    m, lmax1 = lag_weights.shape
    npos = frames.shape[0]
    a_idx, b_idx, lag = position_pairs(frames, lmax1 - 1)
    w = np.zeros((m, npos, npos))
    w[:, a_idx, b_idx] = lag_weights[:, lag]
    s = np.cumsum(np.cumsum(w[:, :, ::-1], axis=2)[:, :, ::-1], axis=1)
    upper = np.triu(s[:, : npos - 1, 1:])
    return upper + np.swapaxes(np.triu(upper, 1), 1, 2)


def pair_weight_variance_coefficients(
    frames: NDArray[np.float64 | np.int64],
    lag_weights: NDArray[np.float64],
    sig_d: Tridiagonal,
    sig_s: Tridiagonal,
) -> VarianceCoefficients:
    """Exact variance coefficients for M pair-weighted forms, chunked to bound memory."""
    fr = np.asarray(frames, dtype=np.int64)
    m = lag_weights.shape[0]
    npos = fr.shape[0]
    chunk = max(1, _CHUNK_ELEMENTS // (npos * npos))
    parts = []
    for start in range(0, m, chunk):
        a = dense_a_from_pair_weights(fr, lag_weights[start : start + chunk])
        parts.append(dense_variance_coefficients(a, sig_d, sig_s))
    return VarianceCoefficients(
        np.concatenate([np.atleast_1d(p.dd) for p in parts]),
        np.concatenate([np.atleast_1d(p.ds) for p in parts]),
        np.concatenate([np.atleast_1d(p.ss) for p in parts]),
    )


def _power_sum_2(v: NDArray[np.float64]) -> NDArray[np.float64]:
    return v * (v + 1.0) * (2.0 * v + 1.0) / 6.0


def _power_sum_3(v: NDArray[np.float64]) -> NDArray[np.float64]:
    return (v * (v + 1.0) / 2.0) ** 2


class Thinning(NamedTuple):
    """Missing frames described as a random thinning of a gap-free track.

    ``pair_fraction[n - 1]`` is the fraction of the lag-n pairs of the gap-free track over
    the same frames that are present, ``position_fraction`` that of the positions.
    """

    pair_fraction: NDArray[np.float64]
    position_fraction: float


def msd_lag_covariance_contiguous(
    n_steps: int, lag_n: ArrayLike, lag_m: ArrayLike, thinning: Thinning | None = None
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Closed-form covariance of per-dimension MSD values of a track without gaps.

    With N steps (N + 1 positions), ``m_n`` the per-dimension MSD at lag n averaged
    over its ``C_n = N + 1 - n`` pairs, and the observed variogram
    ``gamma(k) = alpha |k| + beta [k != 0]`` with ``alpha = 2 D dt`` and
    ``beta = 2 sigma^2 - 4 R D dt``, two displacements of lags n and m whose starts
    differ by delta have covariance ``alpha O(delta) + beta E(delta) / 2``: O is the
    overlap length of the intervals ``[0, n]`` and ``[delta, delta + m]`` and
    ``E = [delta = 0] + [delta = n - m] - [delta = n] - [delta = -m]``. Hence

        Cov(m_n, m_m) = 2 / (C_n C_m) * sum_delta count(delta) c(delta)^2
                      = 2 / (C_n C_m) * (alpha^2 T_OO + alpha beta T_OE
                                         + beta^2 T_EE / 4),

    where count(delta) is the number of start pairs at offset delta. O and count are
    piecewise linear with the same breakpoints, so each T is a sum of cubic
    polynomials over integer ranges: O(1) per lag pair, exact at any N.

    With ``thinning`` (an approximation for long tracks with missing frames, N then being
    the frames spanned), each pair of pairs counts with the probability that its
    positions are present, as if frames were missing independently: ``pi_n pi_m`` for
    four distinct positions, ``min(pi_n, pi_m, pi_n pi_m / rho)`` for pairs sharing an
    end (delta in {0, n - m, n, -m}), ``pi_n`` for a pair with itself, where ``pi_n`` is
    the fraction of lag-n pairs present and rho that of positions; ``C_n`` becomes
    ``pi_n (N + 1 - n)``.

    Parameters
    ----------
    n_steps : int
        Steps of the track (N).
    lag_n, lag_m : array_like of int
        Lags in frames, broadcast against each other, each in ``1..N``.
    thinning : Thinning, optional
        Presence of pairs and positions for a track with missing frames.

    Returns
    -------
    tuple of ndarray
        ``(K_OO, K_OE, K_EE)``, the three sums already multiplied by ``2/(C_n C_m)``.
    """
    big_n = float(n_steps)
    n = np.asarray(lag_n, dtype=np.float64)
    m = np.asarray(lag_m, dtype=np.float64)
    mu = np.minimum(n, m)
    kappa = big_n - np.maximum(n, m) + 1.0  # count on the plateau between the breakpoints
    k = big_n - n - m + 1.0  # count(e) = k + e on both slopes
    same = n == m
    lower = np.maximum(1.0, -k)  # count(e) >= 0 on the slopes

    def slope_sum(upper: NDArray[np.float64]) -> NDArray[np.float64]:
        # sum_{e=lower}^{upper} (k + e) e^2, zero for an empty range
        total = k * (_power_sum_2(upper) - _power_sum_2(lower - 1.0)) + (
            _power_sum_3(upper) - _power_sum_3(lower - 1.0)
        )
        return np.where(upper >= lower, total, 0.0)

    t_oo = (
        slope_sum(mu) + slope_sum(mu - same) + np.maximum(0.0, np.abs(n - m) - 1.0) * kappa * mu**2
    )
    t_oe = 2.0 * kappa * mu
    t_ee = np.where(same, 4.0, 2.0) * kappa + 2.0 * np.maximum(0.0, k)
    scale = 2.0 / ((big_n + 1.0 - n) * (big_n + 1.0 - m))
    if thinning is None:
        return scale * t_oo, scale * t_oe, scale * t_ee

    # the terms of pairs sharing an end: c = alpha mu + beta/2 at delta = 0 and n - m
    # (count kappa), c = -beta/2 at delta = n and -m (count max(0, k)); for n = m,
    # delta = 0 is the pair with itself, c = alpha n + beta
    k_pos = np.maximum(0.0, k)
    shared = (
        np.where(same, 0.0, 2.0 * kappa * mu**2),
        np.where(same, 0.0, 2.0 * kappa * mu),
        np.where(same, 0.0, 2.0 * kappa) + 2.0 * k_pos,
    )
    itself = (
        np.where(same, kappa * n**2, 0.0),
        np.where(same, 2.0 * kappa * n, 0.0),
        np.where(same, 4.0 * kappa, 0.0),
    )
    pi_n = np.asarray(thinning.pair_fraction)[n.astype(np.int64) - 1]
    pi_m = np.asarray(thinning.pair_fraction)[m.astype(np.int64) - 1]
    p4 = pi_n * pi_m
    p3 = np.minimum(np.minimum(pi_n, pi_m), p4 / thinning.position_fraction)
    p2 = np.where(same, pi_n, 0.0)
    scale = scale / np.maximum(p4, 1e-300)
    k_oo, k_oe, k_ee = (
        scale * (p4 * t_all + (p3 - p4) * t_shared + (p2 - p4) * t_self)
        for t_all, t_shared, t_self in zip((t_oo, t_oe, t_ee), shared, itself, strict=True)
    )
    return k_oo, k_oe, k_ee


def _alpha_beta_to_d_sigma(
    q_oo: NDArray[np.float64],
    q_oe: NDArray[np.float64],
    q_ee: NDArray[np.float64],
    dt: float,
    r: float,
) -> VarianceCoefficients:
    # alpha = 2 dt D and beta = 2 sigma^2 - 4 R dt D, expanded in powers of D, sigma^2
    dd = 4.0 * dt**2 * q_oo - 8.0 * r * dt**2 * q_oe + 4.0 * r**2 * dt**2 * q_ee
    ds = 4.0 * dt * q_oe - 4.0 * r * dt * q_ee
    return VarianceCoefficients(dd, ds, q_ee)


def contiguous_msd_variance_coefficients(
    h: NDArray[np.float64],
    lags: NDArray[np.int64],
    n_steps: int,
    dt: float,
    r: float,
    thinning: Thinning | None = None,
) -> VarianceCoefficients:
    """Variance coefficients of ``sum_n h_n m_n`` (per dimension) on tracks without gaps.

    Parameters
    ----------
    h : ndarray, shape (M, L)
        Coefficients of the per-dimension MSD values at ``lags`` for M tracks.
    lags : ndarray, shape (L,)
        Lags in frames.
    n_steps : int
        Steps of each track.
    dt, r : float
        Frame interval (s) and blur coefficient.
    thinning : Thinning, optional
        Approximate missing frames (see :func:`msd_lag_covariance_contiguous`).

    Returns
    -------
    VarianceCoefficients
        Arrays of shape (M,); the lag-lag covariance is evaluated in row blocks so that
        memory stays bounded for thousands of lags.
    """
    h2 = np.atleast_2d(h)
    lag = np.asarray(lags, dtype=np.float64)
    q = np.zeros((3, h2.shape[0]))
    block = max(1, _CHUNK_ELEMENTS // max(1, lag.shape[0]))
    for start in range(0, lag.shape[0], block):
        rows = slice(start, start + block)
        ks = msd_lag_covariance_contiguous(n_steps, lag[rows, None], lag[None, :], thinning)
        for i, kmat in enumerate(ks):
            q[i] += np.einsum("mi,ij,mj->m", h2[:, rows], kmat, h2)
    return _alpha_beta_to_d_sigma(q[0], q[1], q[2], dt, r)


def contiguous_msd_variance_diagonal(
    lags: NDArray[np.int64], n_steps: int, dt: float, r: float, thinning: Thinning | None = None
) -> VarianceCoefficients:
    """Variance coefficients of each per-dimension MSD value ``m_n``, shape (L,)."""
    k_oo, k_oe, k_ee = msd_lag_covariance_contiguous(n_steps, lags, lags, thinning)
    return _alpha_beta_to_d_sigma(k_oo, k_oe, k_ee, dt, r)


def variance(
    q: VarianceCoefficients, d_um2_s: ArrayLike, sigma2_um2: ArrayLike, ndim: int
) -> NDArray[np.float64]:
    """Variance of the estimate averaged over ``ndim`` independent dimensions."""
    d = np.asarray(d_um2_s, dtype=np.float64)
    s2 = np.asarray(sigma2_um2, dtype=np.float64)
    return np.asarray((q.dd * d * d + q.ds * d * s2 + q.ss * s2 * s2) / ndim)


def interval_by_test_inversion(
    d_hat: ArrayLike,
    q: VarianceCoefficients,
    sigma2_plugin: ArrayLike,
    ndim: int,
    confidence: float,
    extra_var: ArrayLike = 0.0,
    dispersion: ArrayLike = 1.0,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Interval ``{D >= 0 : (D_hat - D)^2 <= z^2 Var(D)}`` and the standard error.

    At fixed ``sigma^2`` (the plug-in, clipped at 0), ``Var(D) = c0 + c1 D + c2 D^2``,
    so the set is where ``a D^2 + b D + c <= 0`` with ``a = 1 - z^2 c2``,
    ``b = -(2 D_hat + z^2 c1)``, ``c = D_hat^2 - z^2 c0``: closed-form roots.

    - ``a > 0``: a bounded interval ``[max(0, r1), r2]``.
    - ``a <= 0``: the variance grows as fast as the distance, so no D is too large to
      be rejected: the upper end is ``inf``.
    - No ``D >= 0`` accepted (``D_hat`` far below zero, which noise alone rarely
      produces): ``[0, 0]``, the data point to no detectable motion.

    Unlike ``D_hat +- z se`` the interval never goes negative, and its width follows
    the D dependence of the variance (the analogue of the Wilson score interval).

    Parameters
    ----------
    d_hat : array_like
        Estimates of D in um^2/s, shape (M,) or scalar.
    q : VarianceCoefficients
        Per-dimension variance coefficients of the estimator.
    sigma2_plugin : array_like
        Localization variance per dimension (um^2) at which the variance is evaluated;
        negative values are clipped at 0.
    ndim : int
        Number of dimensions averaged.
    confidence : float
        Two-sided level in (0, 1).
    extra_var : array_like
        Variance added to ``Var(D)`` whatever D, (um^2/s)^2 (e.g. from an
        estimated, not known, ``sigma^2``); 0 by default.
    dispersion : array_like
        Factor (>= 1 in use) on the model variance ``c0 + c1 D + c2 D^2``: the
        over-dispersion of the squared steps when they are heavier-tailed than
        Gaussian (``Var(q) / E(q)^2`` over its Gaussian value, e.g. estimated from a
        track's whole step history); 1 by default.

    Returns
    -------
    tuple of ndarray
        ``(low, high, se)`` in um^2/s; ``se`` is the standard deviation at
        ``(max(D_hat, 0), max(sigma2_plugin, 0))``.
    """
    d = np.asarray(d_hat, dtype=np.float64)
    s2 = np.maximum(np.asarray(sigma2_plugin, dtype=np.float64), 0.0)
    phi = np.asarray(dispersion, dtype=np.float64)
    c2 = np.broadcast_to(np.asarray(q.dd, dtype=np.float64) * phi / ndim, d.shape)
    c1 = np.asarray(q.ds, dtype=np.float64) * phi * s2 / ndim
    c0 = (np.asarray(q.ss, dtype=np.float64) * phi * s2 * s2 / ndim
          + np.asarray(extra_var, dtype=np.float64))
    z2 = float(ndtri(0.5 + 0.5 * confidence)) ** 2  # normal quantile (norm.ppf, 100x cheaper)

    a = 1.0 - z2 * c2
    b = -(2.0 * d + z2 * c1)
    c = d * d - z2 * c0
    disc = b * b - 4.0 * a * c
    root = np.sqrt(np.maximum(disc, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        # stable pair of roots: qq = -(b + sign(b) root) / 2, roots qq / a and c / qq
        qq = -0.5 * (b + np.where(b >= 0.0, root, -root))
        r_a = qq / a
        r_c = c / qq
    r_lo = np.fmin(r_a, r_c)
    r_hi = np.fmax(r_a, r_c)

    bounded = a > 0.0
    accepted_bounded = bounded & (disc >= 0.0) & (r_hi >= 0.0)
    low = np.where(accepted_bounded, np.maximum(r_lo, 0.0), 0.0)
    high = np.where(accepted_bounded, r_hi, 0.0)

    # a <= 0: accepted set is unbounded above; D = 0 accepted iff c <= 0, otherwise it
    # starts at the single positive root (for a = 0 exactly: the linear root -c / b).
    with np.errstate(divide="ignore", invalid="ignore"):
        linear_root = np.where(b < 0.0, -c / b, np.inf)
    first = np.where(a < 0.0, r_hi, linear_root)
    unbounded_low = np.where(c <= 0.0, 0.0, first)
    unbounded_ok = np.isfinite(unbounded_low)
    low = np.where(bounded, low, np.where(unbounded_ok, unbounded_low, 0.0))
    high = np.where(bounded, high, np.where(unbounded_ok, np.inf, 0.0))

    d_plug = np.maximum(d, 0.0)
    se = np.sqrt(np.maximum(c0 + c1 * d_plug + c2 * d_plug * d_plug, 0.0))
    return low, high, se
