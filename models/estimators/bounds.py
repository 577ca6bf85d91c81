"""Cramer-Rao lower bounds on the variance of unbiased estimators of D.

The steps of a track are Gaussian with zero mean and the tridiagonal covariance
``Sigma(theta) = D Sigma_D + sigma^2 Sigma_S``, theta = (D, sigma^2), independently in
each of d dimensions (:mod:`livespt.models.estimators._tracks`). The Fisher information of a
zero-mean Gaussian is

    I_ij = (d / 2) tr(Sigma^-1 dSigma/dtheta_i Sigma^-1 dSigma/dtheta_j),

and no unbiased estimator of D has a variance below ``[I^-1]_DD`` when sigma^2 is
estimated too, or below ``1 / I_DD`` when sigma is known (Berglund 2010; Vestergaard
et al. 2014 compare the CVE with it).

For long tracks without gaps, Whittle's spectral form gives the information per step
and dimension, ``I_ij = (1/2) < f_i f_j / f^2 >`` with the step spectrum
``f(w) = a + 2 b cos(w)``, ``a = Var(step)``, ``b = Cov(adjacent steps)``, the average
over ``w`` in ``[-pi, pi]`` in closed form (:func:`fisher_information_large_n`).

Limits (checked in the tests): with sigma -> 0 and R = 0, sigma known gives
``Var >= 2 D^2 / (N d)`` (N steps; that of the mean squared step), while sigma unknown
gives ``6 D^2 / (N d)``, three times more, and exactly the CVE's large-N variance there
(at x = sigma^2 / (D dt) - 2R = 0 the CVE attains the exact bound at every N).

References
----------
Berglund, Phys. Rev. E 82, 011917 (2010). Vestergaard, Blainey & Flyvbjerg, Phys. Rev. E
89, 022726 (2014). Whittle, J. R. Stat. Soc. B 15, 125 (1953).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.linalg import LinAlgError, cho_solve_banded, cholesky_banded

from livespt.models import _validate
from livespt.models.estimators import _tracks
from livespt.models.estimators._tracks import Tridiagonal

EXACT_MAX_STEPS = 1000
"""Above this many steps, the information of a track without gaps is computed as
``I(N) = N I_step + E`` with ``I_step`` Whittle's per-step information and the end
correction ``E = I(N0) - N0 I_step`` from exact computations at N0 = 500, 1000, 2000, ...
until E stops changing (relative EXTRAPOLATION_RTOL of I(N)). The information is
additive up to end effects that decay geometrically along the track, over ~sqrt(x/2)
steps for noise-dominated tracks (x = sigma^2 / (D dt)), so N0 = 1000 suffices unless
x > ~10^4. Tracks with gaps are always computed exactly, in O(N^2) time, O(N) memory
(about 0.05 s at 1000 steps, 0.5 s at 4000)."""

EXTRAPOLATION_RTOL = 1e-9

_BLOCK = 256
"""Columns of Sigma^-1 solved at a time: O(N * _BLOCK) memory."""


def _parameters(
    d_um2_s: Any, sigma_um: Any, frame_interval_s: Any, exposure_s: Any, ndim: Any, blur: Any
) -> tuple[float, float, float, float, int]:
    d = _validate.positive("d_um2_s", d_um2_s)
    sigma = _validate.non_negative("sigma_um", sigma_um)
    nd = _validate.positive_int("ndim", ndim)
    dt, r = _tracks.resolve_timing(frame_interval_s, exposure_s, blur)
    return d, sigma**2, dt, r, nd


def _times_tridiagonal_left(t: Tridiagonal, x: NDArray[np.float64]) -> NDArray[np.float64]:
    """``T @ X`` for tridiagonal T and dense X of shape (n, k)."""
    out = t.diag[:, None] * x
    out[:-1] += t.off[:, None] * x[1:]
    out[1:] += t.off[:, None] * x[:-1]
    return out


def _exact_information(
    frames: NDArray[np.int64], d: float, s2: float, dt: float, r: float, ndim: int
) -> NDArray[np.float64]:
    """``(d/2) tr(S^-1 S_i S^-1 S_j)`` by blocks of columns of ``S^-1``: O(N^2), O(N) memory."""
    sig_d, sig_s = _tracks.step_covariance_basis(_tracks.gaps(frames), dt, r)
    n = sig_d.diag.shape[0]
    ab = np.zeros((2, n))
    ab[0, 1:] = d * sig_d.off + s2 * sig_s.off
    ab[1] = d * sig_d.diag + s2 * sig_s.diag
    try:
        chol = cholesky_banded(ab)
    except LinAlgError:
        # only reachable at the edge R = 1/4, sigma = 0, where the smallest eigenvalue
        # of the finite step covariance is O(D dt / N^2) and rounding can win
        raise ValueError(
            "blur_coefficient: the step covariance is numerically singular (R = 1/4 with sigma = 0)"
        ) from None
    traces = np.zeros((2, 2))
    basis = (sig_d, sig_s)
    for start in range(0, n, _BLOCK):
        stop = min(n, start + _BLOCK)
        # columns start-1 .. stop of S^-1 (one more on each side) give both
        # (S^-1 T)[:, block] = S^-1[:, j-1] T_{j-1,j} + S^-1[:, j] T_jj + S^-1[:, j+1] T_{j+1,j}
        # and T S^-1[:, block]; one banded solve per block.
        lo, hi = max(0, start - 1), min(n, stop + 1)
        unit = np.zeros((n, hi - lo))
        unit[np.arange(lo, hi), np.arange(hi - lo)] = 1.0
        inv_ext = cho_solve_banded((chol, False), unit)
        inv = inv_ext[:, start - lo : stop - lo]
        x = []
        for t in basis:
            xt = inv * t.diag[start:stop]
            first = 1 if start == 0 else 0  # column j = 0 has no j - 1
            xt[:, first:] += (
                inv_ext[:, start - lo - 1 + first : stop - lo - 1]
                * t.off[start - 1 + first : stop - 1]
            )
            last = stop - 1 if stop == n else stop  # column j = n - 1 has no j + 1
            xt[:, : last - start] += inv_ext[:, start - lo + 1 : last - lo + 1] * t.off[start:last]
            x.append(xt)
        # tr(S^-1 A S^-1 B) = sum_ij (S^-1 A)_ij (S^-1 B)_ji, and (S^-1 B)_ji over the
        # block's rows j is (B S^-1)_ij over its columns.
        y = [_times_tridiagonal_left(t, inv) for t in basis]
        for i in range(2):
            for j in range(2):
                traces[i, j] += float(np.sum(x[i] * y[j]))
    return 0.5 * ndim * traces


def _contiguous_information(
    n_steps: int, d: float, s2: float, dt: float, r: float, ndim: int
) -> NDArray[np.float64]:
    """Exact information of a gap-free track; long tracks by converged end corrections."""
    if n_steps <= EXACT_MAX_STEPS:
        return _exact_information(np.arange(n_steps + 1), d, s2, dt, r, ndim)
    per_step = ndim * _whittle_per_step(d, s2, dt, r)
    tol = EXTRAPOLATION_RTOL * float(np.max(np.abs(n_steps * per_step)))
    n0 = EXACT_MAX_STEPS // 2
    edge = _exact_information(np.arange(n0 + 1), d, s2, dt, r, ndim) - n0 * per_step
    while True:
        n1 = min(2 * n0, n_steps)
        edge_next = _exact_information(np.arange(n1 + 1), d, s2, dt, r, ndim) - n1 * per_step
        # the end correction I(N) - N I_step has converged when doubling N leaves it
        # unchanged; otherwise double again (at worst up to the full track)
        if n1 == n_steps or float(np.max(np.abs(edge_next - edge))) <= tol:
            return edge_next + n_steps * per_step
        edge, n0 = edge_next, n1


def _whittle_per_step(d: float, s2: float, dt: float, r: float) -> NDArray[np.float64]:
    """Fisher information per step and dimension of a long gap-free track (2 x 2)."""
    a = 2.0 * d * dt * (1.0 - 2.0 * r) + 2.0 * s2
    c = 2.0 * (2.0 * r * d * dt - s2)  # f(w) = a + c cos(w)
    # a - |c| = min f > 0 for D > 0 and R < 1/4 (or sigma > 0)
    s = np.sqrt((a - c) * (a + c))
    m0 = a / s**3  # <1/f^2>
    m1 = -c / s**3  # <cos/f^2>
    m2 = (2.0 * a - (s * s + a * s + a * a) / (s + a)) / s**3  # <cos^2/f^2>, stable as c -> 0
    # df/dD = a_D + c_D cos(w), df/dsigma^2 = a_S + c_S cos(w)
    av = np.array([2.0 * dt * (1.0 - 2.0 * r), 2.0])
    cv = np.array([4.0 * r * dt, -2.0])
    return 0.5 * (
        np.outer(av, av) * m0 + (np.outer(av, cv) + np.outer(cv, av)) * m1 + np.outer(cv, cv) * m2
    )


def fisher_information_exact(
    n_positions_or_frames: int | ArrayLike,
    d_um2_s: float,
    sigma_um: float,
    frame_interval_s: float,
    exposure_s: float | None = None,
    ndim: int = 2,
    *,
    blur_coefficient: float | None = None,
) -> NDArray[np.float64]:
    """Exact Fisher information matrix of (D, sigma^2) from one track.

    Parameters
    ----------
    n_positions_or_frames : int or array_like of int
        Number of positions of a gap-free track (>= 3), or the strictly increasing frames
        of the observed positions (gaps allowed).
    d_um2_s : float
        D in um^2/s (> 0).
    sigma_um : float
        Localization precision per dimension in um (>= 0).
    frame_interval_s : float
        Frame interval in s.
    exposure_s : float, optional
        Exposure in s (default: the frame interval).
    ndim : int
        Number of dimensions d.
    blur_coefficient : float, optional
        Exact R, overriding the one derived from the exposure.

    Returns
    -------
    ndarray, shape (2, 2)
        Information for theta = (D in um^2/s, sigma^2 in um^2); O(N^2) time, O(N)
        memory (see ``EXACT_MAX_STEPS`` for long tracks without gaps).
    """
    frames = _tracks.validate_frames_or_count(n_positions_or_frames)
    d, s2, dt, r, nd = _parameters(
        d_um2_s, sigma_um, frame_interval_s, exposure_s, ndim, blur_coefficient
    )
    if _tracks.is_contiguous(frames):
        return _contiguous_information(frames.shape[0] - 1, d, s2, dt, r, nd)
    return _exact_information(frames, d, s2, dt, r, nd)


def fisher_information_large_n(
    n_steps: int,
    d_um2_s: float,
    sigma_um: float,
    frame_interval_s: float,
    exposure_s: float | None = None,
    ndim: int = 2,
    *,
    blur_coefficient: float | None = None,
) -> NDArray[np.float64]:
    """Large-N Fisher information of (D, sigma^2) of a gap-free track, Whittle's form.

    Per step and dimension ``I_ij = (1/2) <f_i f_j / f^2>`` with ``f(w) = a + c cos w``,
    ``a = 2 D dt (1 - 2R) + 2 sigma^2``, ``c = 2 (2 R D dt - sigma^2)``,
    ``s = sqrt(a^2 - c^2)``: ``<1/f^2> = a / s^3``, ``<cos/f^2> = -c / s^3``,
    ``<cos^2/f^2> = [2a - (s^2 + a s + a^2) / (s + a)] / s^3``. The total is ``N d``
    times that; it differs from the exact information by an O(1) end correction.

    Parameters
    ----------
    n_steps : int
        Number of steps N (>= 1).
    d_um2_s, sigma_um, frame_interval_s, exposure_s, ndim, blur_coefficient
        As in :func:`fisher_information_exact`.

    Returns
    -------
    ndarray, shape (2, 2)
        Information for theta = (D, sigma^2).
    """
    n = _validate.positive_int("n_steps", n_steps)
    d, s2, dt, r, nd = _parameters(
        d_um2_s, sigma_um, frame_interval_s, exposure_s, ndim, blur_coefficient
    )
    if r >= 0.25 and s2 == 0.0:
        raise ValueError(
            "blur_coefficient: the step covariance is singular (R = 1/4 with sigma = 0)"
        )
    return n * nd * _whittle_per_step(d, s2, dt, r)


def _bound(info: NDArray[np.float64], sigma_known: bool) -> float:
    if sigma_known:
        return float(1.0 / info[0, 0])
    return float(info[1, 1] / (info[0, 0] * info[1, 1] - info[0, 1] ** 2))


def crlb_d_exact(
    n_positions_or_frames: int | ArrayLike,
    d_um2_s: float,
    sigma_um: float,
    frame_interval_s: float,
    exposure_s: float | None = None,
    ndim: int = 2,
    sigma_known: bool = False,
    *,
    blur_coefficient: float | None = None,
) -> float:
    """Cramer-Rao bound on Var(D_hat) from the exact finite-N Fisher information.

    Parameters
    ----------
    n_positions_or_frames : int or array_like of int
        Number of positions of a gap-free track, or the frames of the observed
        positions (gaps allowed).
    d_um2_s : float
        True D in um^2/s (> 0).
    sigma_um : float
        Localization precision per dimension in um (>= 0).
    frame_interval_s : float
        Frame interval in s.
    exposure_s : float, optional
        Exposure in s (default: the frame interval).
    ndim : int
        Number of dimensions d (default 2).
    sigma_known : bool
        ``True``: sigma is known, bound ``1 / I_DD``; ``False``: sigma^2 is a nuisance
        parameter estimated from the same track, bound ``[I^-1]_DD``.
    blur_coefficient : float, optional
        Exact R, overriding the one derived from the exposure.

    Returns
    -------
    float
        Lower bound on the variance of any unbiased estimator of D, (um^2/s)^2.

    References
    ----------
    Berglund, Phys. Rev. E 82, 011917 (2010); Vestergaard, Blainey & Flyvbjerg, Phys.
    Rev. E 89, 022726 (2014).
    """
    info = fisher_information_exact(
        n_positions_or_frames,
        d_um2_s,
        sigma_um,
        frame_interval_s,
        exposure_s,
        ndim,
        blur_coefficient=blur_coefficient,
    )
    return _bound(info, sigma_known)


def crlb_d_large_n(
    n_steps: int,
    d_um2_s: float,
    sigma_um: float,
    frame_interval_s: float,
    exposure_s: float | None = None,
    ndim: int = 2,
    sigma_known: bool = False,
    *,
    blur_coefficient: float | None = None,
) -> float:
    """Large-N Cramer-Rao bound on Var(D_hat) of a gap-free track of ``n_steps`` steps.

    Parameters are those of :func:`crlb_d_exact` with ``n_steps`` in place of the
    positions; the information is :func:`fisher_information_large_n`. Relative to
    :func:`crlb_d_exact` the difference is O(1/N).

    Returns
    -------
    float
        Bound in (um^2/s)^2.
    """
    info = fisher_information_large_n(
        n_steps,
        d_um2_s,
        sigma_um,
        frame_interval_s,
        exposure_s,
        ndim,
        blur_coefficient=blur_coefficient,
    )
    return _bound(info, sigma_known)
