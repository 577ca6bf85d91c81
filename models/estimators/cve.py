"""Covariance-based estimator (CVE) of the diffusion coefficient.

Vestergaard, Blainey & Flyvbjerg (2014), "Optimal estimation of diffusion coefficients
from single-particle trajectories", Phys. Rev. E 89, 022726. Per dimension, with
``<dx^2>`` the mean squared step and ``<dx_n dx_{n+1}>`` the mean product of adjacent
steps (both also averaged over the d dimensions):

- sigma unknown: ``D = <dx^2> / (2 dt) + <dx_n dx_{n+1}> / dt`` and
  ``sigma^2 = R <dx^2> + (2R - 1) <dx_n dx_{n+1}>``;
- sigma known: ``D = (<dx^2> - 2 sigma^2) / (2 (1 - 2R) dt)``;
- sigma known, both moments (``weight_at_d_um2_s`` given): with blur (R > 0) the
  adjacent products carry information on D too, ``<dx_n dx_{n+1}> = 2 R D dt -
  sigma^2``, so the estimate combines ``D_a`` (the line above) and
  ``D_b = (<dx_n dx_{n+1}> + sigma^2) / (2 R dt)`` with the weight of least variance.

All are unbiased under the blur + noise model and need no fit. Missing frames are
handled by the moment equations of the model (see :func:`cve`), which reduce to the
formulas above without gaps.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from livespt.models import _validate
from livespt.models.estimators import _tracks
from livespt.models.estimators._tracks import Tridiagonal
from livespt.models.estimators.quadform import (
    VarianceCoefficients,
    interval_by_test_inversion,
    tridiagonal_variance_coefficients,
    variance,
)
from livespt.models.estimators.result import Estimate, EstimateBatch

METHOD = "cve"


def _cve_form(frames: NDArray[np.int64], dt: float, r: float, sigma_known: bool) -> Tridiagonal:
    """The per-dimension matrix A with ``D_hat = s^T A s`` (plus a constant if sigma known)."""
    k = _tracks.gaps(frames)
    n = k.shape[0]
    kbar = float(k.mean())
    if sigma_known:
        return Tridiagonal(np.full(n, 1.0 / (2.0 * dt * (kbar - 2.0 * r) * n)), np.zeros(n - 1))
    return Tridiagonal(
        np.full(n, 1.0 / (2.0 * dt * kbar * n)),
        np.full(n - 1, 1.0 / (2.0 * dt * kbar * (n - 1))),
    )


def _product_form(frames: NDArray[np.int64], dt: float, r: float) -> Tridiagonal:
    """The matrix of ``D_b = (m1 + sigma^2) / (2 R dt)`` (without its constant)."""
    n = _tracks.gaps(frames).shape[0]
    return Tridiagonal(np.zeros(n), np.full(n - 1, 1.0 / (4.0 * r * dt * (n - 1))))


@lru_cache(maxsize=4096)
def _known_pair_coefficients(
    gaps: tuple[int, ...], dt: float, r: float
) -> tuple[VarianceCoefficients, VarianceCoefficients, VarianceCoefficients]:
    """Variance coefficients of ``D_a``, of ``D_b`` and of their covariance, per dimension."""
    frames = np.concatenate([[0], np.cumsum(gaps)]).astype(np.int64)
    sig_d, sig_s = _tracks.step_covariance_basis(_tracks.gaps(frames), dt, r)
    a = _cve_form(frames, dt, r, True)
    b = _product_form(frames, dt, r)
    qa = tridiagonal_variance_coefficients(a, sig_d, sig_s)
    qb = tridiagonal_variance_coefficients(b, sig_d, sig_s)
    qab = tridiagonal_variance_coefficients(Tridiagonal(a.diag + b.diag, a.off + b.off),
                                            sig_d, sig_s)
    # Var(a + b) = Var(a) + Var(b) + 2 Cov(a, b), coefficient by coefficient
    qc = VarianceCoefficients(*(np.float64((x - y - z) / 2.0)
                                for x, y, z in zip(qab, qa, qb, strict=True)))
    return qa, qb, qc


MIN_BLUR_FOR_PRODUCTS = 1e-3
"""Below this blur coefficient the adjacent products say (almost) nothing about D:
the sigma-known CVE then uses the squared steps only."""


def _known_both_moments(
    pos: NDArray[np.float64],
    frames: NDArray[np.int64],
    dt: float,
    r: float,
    sigma2: float | NDArray[np.float64],
    sigma2_var: float | NDArray[np.float64],
    d_ref: float | NDArray[np.float64],
    dispersion: float | NDArray[np.float64],
) -> tuple[NDArray[np.float64], VarianceCoefficients, NDArray[np.float64], NDArray[np.float64]]:
    """Sigma-known CVE from both moments: ``(d, coefficients, extra variance, weight)``.

    ``D = w D_a + (1 - w) D_b`` with ``D_a = (m2 - 2 sigma^2) / (2 dt (kbar - 2R))`` and
    ``D_b = (m1 + sigma^2) / (2 R dt)``, both unbiased, so any fixed ``w`` is. ``w``
    minimizes the variance at ``(d_ref, sigma^2)``, counting the variance of an
    estimated sigma^2 (``D_a`` and ``D_b`` move in opposite directions with it). It is
    computed from ``d_ref``, not from the window, so it does not depend on the data it
    weighs: choose ``d_ref`` from elsewhere (e.g. the whole track).
    """
    kbar = float(_tracks.gaps(frames).mean())
    steps = np.diff(pos, axis=1)
    m2 = np.mean(steps * steps, axis=(1, 2))
    m1 = np.mean(steps[:, 1:] * steps[:, :-1], axis=(1, 2))
    s2 = np.broadcast_to(np.asarray(sigma2, dtype=np.float64), m2.shape)
    d_a = (m2 - 2.0 * s2) / (2.0 * dt * (kbar - 2.0 * r))
    d_b = (m1 + s2) / (2.0 * r * dt)
    qa, qb, qc = _known_pair_coefficients(tuple(np.diff(frames).tolist()), float(dt), float(r))
    ndim = pos.shape[2]
    # d D_a / d sigma^2 and d D_b / d sigma^2
    g_a, g_b = -1.0 / (dt * (kbar - 2.0 * r)), 1.0 / (2.0 * r * dt)
    var_s2 = np.asarray(sigma2_var, dtype=np.float64)
    phi = np.asarray(dispersion, dtype=np.float64)
    dr = np.maximum(np.asarray(d_ref, dtype=np.float64), 0.0)
    sp = np.maximum(s2, 0.0)
    v_a = phi * variance(qa, dr, sp, ndim) + var_s2 * g_a * g_a
    v_b = phi * variance(qb, dr, sp, ndim) + var_s2 * g_b * g_b
    c_ab = phi * variance(qc, dr, sp, ndim) + var_s2 * g_a * g_b
    den = v_a + v_b - 2.0 * c_ab
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(den > 0.0, (v_b - c_ab) / den, 1.0)
    w = np.clip(np.where(np.isfinite(w), w, 1.0), 0.0, 1.0)
    w = np.broadcast_to(w, m2.shape)
    d_hat = w * d_a + (1.0 - w) * d_b
    u = 1.0 - w
    q = VarianceCoefficients(w * w * qa.dd + u * u * qb.dd + 2.0 * w * u * qc.dd,
                             w * w * qa.ds + u * u * qb.ds + 2.0 * w * u * qc.ds,
                             w * w * qa.ss + u * u * qb.ss + 2.0 * w * u * qc.ss)
    g = w * g_a + u * g_b
    return d_hat, q, var_s2 * g * g, w


def noise_spread_samples(
    positions_um: ArrayLike,
    frame_interval_s: float,
    frames: ArrayLike | None = None,
    *,
    sigma_um: ArrayLike,
    weight_at_d_um2_s: ArrayLike,
    exposure_s: float | None = None,
    sigma2_var_um4: float | ArrayLike = 0.0,
    dispersion: float | ArrayLike = 1.0,
    blur_coefficient: float | None = None,
) -> NDArray[np.float64]:
    """Per window, a sample of how far its noise variance strays from ``sigma_um**2``, um^4.

    The two sigma-known estimates of one window, ``D_a`` from the squared steps and
    ``D_b`` from the adjacent products (module docstring), are both unbiased when the
    window's localization variance is ``sigma^2``. If it is ``sigma^2 + delta``, they
    move apart by ``G delta`` with ``G = 1 / (dt (kbar - 2R)) + 1 / (2 R dt)``. So for
    ``u = D_a - D_b``::

        E[u^2] = phi V_u(D, sigma^2) + G^2 (Var(sigma^2 estimate) + S),

    ``V_u`` the model variance of ``u`` (exact, :mod:`.quadform`), ``phi`` the steps'
    over-dispersion and ``S = Var(delta)`` the spread of the windows' noise variance
    around the track's (a bead moving through focus, changing background). Each
    sample ``(u^2 - phi V_u - G^2 Var(sigma^2)) / G^2`` has mean ``S``: 0 where the
    model holds. Averaged over many windows it gives ``S``, which the window estimator
    adds to ``sigma2_var_um4``: the moments' weights and the intervals then account for
    it (:class:`~livespt.server.pipeline.model_check.NoiseSpread`).

    Parameters
    ----------
    positions_um : array_like, shape (M, N, d)
        Positions of M windows sharing ``frames``, um.
    frame_interval_s : float
        Frame interval, s.
    frames : array_like of int, shape (N,), optional
        Frames of the windows' points (default ``0..N-1``).
    sigma_um : array_like, shape (M,) or scalar
        Each window's track noise per axis, um.
    weight_at_d_um2_s : array_like, shape (M,) or scalar
        D at which ``V_u`` is evaluated (the track's), um^2/s, >= 0.
    exposure_s, blur_coefficient
        As in :func:`cve`.
    sigma2_var_um4 : float or array_like
        Variance of ``sigma_um**2`` as an estimate, um^4.
    dispersion : float or array_like
        Over-dispersion factor ``phi`` (>= 1).

    Returns
    -------
    ndarray, shape (M,)
        Samples in um^4 (may be negative); NaN for every window when the blur
        coefficient is below :data:`MIN_BLUR_FOR_PRODUCTS` (then the products carry
        no D and the two estimates cannot be told apart from a noise change).
    """
    pos, fr = _tracks.validate_batch(positions_um, frames)
    dt, r = _tracks.resolve_timing(frame_interval_s, exposure_s, blur_coefficient)
    m = pos.shape[0]
    if r < MIN_BLUR_FOR_PRODUCTS or fr.shape[0] < 3:
        return np.full(m, np.nan)
    s2 = np.broadcast_to(np.asarray(sigma_um, dtype=np.float64) ** 2, (m,))
    kbar = float(_tracks.gaps(fr).mean())
    steps = np.diff(pos, axis=1)
    m2 = np.mean(steps * steps, axis=(1, 2))
    m1 = np.mean(steps[:, 1:] * steps[:, :-1], axis=(1, 2))
    u = (m2 - 2.0 * s2) / (2.0 * dt * (kbar - 2.0 * r)) - (m1 + s2) / (2.0 * r * dt)
    qa, qb, qc = _known_pair_coefficients(tuple(np.diff(fr).tolist()), float(dt), float(r))
    qu = VarianceCoefficients(qa.dd + qb.dd - 2.0 * qc.dd, qa.ds + qb.ds - 2.0 * qc.ds,
                              qa.ss + qb.ss - 2.0 * qc.ss)
    dr = np.maximum(np.asarray(weight_at_d_um2_s, dtype=np.float64), 0.0)
    v_u = np.asarray(dispersion, dtype=np.float64) * variance(qu, dr, s2, pos.shape[2])
    g = 1.0 / (dt * (kbar - 2.0 * r)) + 1.0 / (2.0 * r * dt)
    var_s2 = np.asarray(sigma2_var_um4, dtype=np.float64)
    return np.asarray((u * u - v_u) / (g * g) - var_s2, dtype=np.float64)


def _cve_coefficients(
    frames: NDArray[np.int64], dt: float, r: float, sigma_known: bool
) -> VarianceCoefficients:
    # The coefficients depend on the frames only through their gaps, and a live
    # stream asks for the same few patterns (gap-free windows, one missed frame...)
    # thousands of times a second: cache them.
    gaps = tuple(np.diff(frames).tolist())
    return _cve_coefficients_cached(gaps, float(dt), float(r), bool(sigma_known))


@lru_cache(maxsize=4096)
def _cve_coefficients_cached(
    gaps: tuple[int, ...], dt: float, r: float, sigma_known: bool
) -> VarianceCoefficients:
    frames = np.concatenate([[0], np.cumsum(gaps)]).astype(np.int64)
    sig_d, sig_s = _tracks.step_covariance_basis(_tracks.gaps(frames), dt, r)
    return tridiagonal_variance_coefficients(_cve_form(frames, dt, r, sigma_known), sig_d, sig_s)


def cve_point_estimates(
    pos: NDArray[np.float64],
    frames: NDArray[np.int64],
    dt: float,
    r: float,
    sigma2_known: float | NDArray[np.float64] | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """CVE ``(D, sigma^2)`` of (M, N, d) validated positions sharing ``frames``.

    ``sigma2_known`` is one value for all tracks or one per track, shape (M,).
    """
    steps = np.diff(pos, axis=1)
    m2 = np.mean(steps * steps, axis=(1, 2))
    m1 = np.mean(steps[:, 1:] * steps[:, :-1], axis=(1, 2))
    kbar = float(_tracks.gaps(frames).mean())
    if sigma2_known is None:
        # E[m2] = 2 D dt (kbar - 2R) + 2 sigma^2 and E[m1] = 2 R D dt - sigma^2, solved
        # for (D, sigma^2): the gap lengths enter only through their mean kbar.
        d_hat = (m2 + 2.0 * m1) / (2.0 * dt * kbar)
        sigma2 = 2.0 * r * dt * d_hat - m1
    else:
        d_hat = (m2 - 2.0 * sigma2_known) / (2.0 * dt * (kbar - 2.0 * r))
        sigma2 = np.broadcast_to(np.asarray(sigma2_known, dtype=np.float64), d_hat.shape).copy()
    return d_hat, sigma2


def _cve_arrays(
    pos: NDArray[np.float64],
    frames: NDArray[np.int64],
    dt: float,
    r: float,
    sigma2_known: float | NDArray[np.float64] | None,
    confidence: float,
    sigma2_var: float | NDArray[np.float64] = 0.0,
    dispersion: float | NDArray[np.float64] = 1.0,
    d_ref: float | NDArray[np.float64] | None = None,
) -> tuple[NDArray[np.float64], ...]:
    """CVE for (M, N, d) positions sharing ``frames``: (d, low, high, se, sigma2)."""
    if (sigma2_known is not None and d_ref is not None and r >= MIN_BLUR_FOR_PRODUCTS
            and frames.shape[0] >= 3):
        d_hat, qw, extra_w, _ = _known_both_moments(pos, frames, dt, r, sigma2_known,
                                                    sigma2_var, d_ref, dispersion)
        s2 = np.broadcast_to(np.asarray(sigma2_known, dtype=np.float64), d_hat.shape).copy()
        low, high, se = interval_by_test_inversion(d_hat, qw, s2, pos.shape[2], confidence,
                                                   extra_var=extra_w, dispersion=dispersion)
        return d_hat, low, high, se, s2
    d_hat, sigma2 = cve_point_estimates(pos, frames, dt, r, sigma2_known)
    q = _cve_coefficients(frames, dt, r, sigma2_known is not None)
    extra: float | NDArray[np.float64] = 0.0
    if sigma2_known is not None:
        # D_hat = (m2 - 2 sigma^2) / (2 dt (kbar - 2R)): an estimated sigma^2 adds
        # Var(sigma^2) / (dt (kbar - 2R))^2.
        kbar = float(_tracks.gaps(frames).mean())
        extra = np.asarray(sigma2_var, dtype=np.float64) / (dt * (kbar - 2.0 * r)) ** 2
    low, high, se = interval_by_test_inversion(d_hat, q, sigma2, pos.shape[2], confidence,
                                               extra_var=extra, dispersion=dispersion)
    return d_hat, low, high, se, sigma2


def cve_d_windows(positions_um: ArrayLike, frames: ArrayLike,
                  frame_interval_s: float) -> NDArray[np.float64]:
    """Sigma-unknown CVE point estimates of M windows, each with its own frames.

    The D of :func:`cve_batch` with ``sigma_um=None`` (no interval), for windows whose
    frame patterns may differ: ``(m2 + 2 m1) / (2 dt kbar)`` per window, which does not
    depend on the blur coefficient, so one vectorized pass serves every pattern. For
    checks that compare another estimator with it on many windows.

    Parameters
    ----------
    positions_um : array_like, shape (M, N, d)
        Positions, um.
    frames : array_like of int, shape (M, N)
        Each window's frames, strictly increasing.
    frame_interval_s : float
        Frame interval, s.

    Returns
    -------
    ndarray, shape (M,)
        D, um^2/s.
    """
    pos = np.asarray(positions_um, dtype=np.float64)
    fr = np.asarray(frames, dtype=np.int64)
    if pos.ndim != 3 or fr.shape != pos.shape[:2] or pos.shape[1] < 3:
        raise ValueError(f"positions_um must be (M, N >= 3, d) and frames (M, N), got "
                         f"{pos.shape} and {fr.shape}")
    dt = _validate.positive("frame_interval_s", frame_interval_s)
    steps = np.diff(pos, axis=1)
    m2 = np.mean(steps * steps, axis=(1, 2))
    m1 = np.mean(steps[:, 1:] * steps[:, :-1], axis=(1, 2))
    kbar = (fr[:, -1] - fr[:, 0]) / (fr.shape[1] - 1.0)
    return np.asarray((m2 + 2.0 * m1) / (2.0 * dt * kbar), dtype=np.float64)


def _confidence(confidence: Any) -> float:
    c = _validate.in_range("confidence", confidence, 0.0, 1.0)
    if c in (0.0, 1.0):
        raise ValueError(f"confidence must be strictly between 0 and 1, got {c!r}")
    return c


def _sigma2(sigma_um: Any) -> float | None:
    return None if sigma_um is None else _validate.non_negative("sigma_um", sigma_um) ** 2


def _sigma2_batch(sigma_um: Any, m: int) -> float | NDArray[np.float64] | None:
    if sigma_um is None or np.ndim(sigma_um) == 0:
        return _sigma2(sigma_um)
    sig = _validate.finite_array("sigma_um", sigma_um, ndim=1)
    if sig.shape != (m,):
        raise ValueError(f"sigma_um must be a scalar or have shape ({m},), got {sig.shape}")
    if np.any(sig < 0):
        raise ValueError("sigma_um must be >= 0")
    return sig**2


def cve(
    positions_um: ArrayLike,
    frame_interval_s: float,
    frames: ArrayLike | None = None,
    *,
    exposure_s: float | None = None,
    sigma_um: float | None = None,
    confidence: float = 0.9,
    blur_coefficient: float | None = None,
    track_id: Any = None,
    weight_at_d_um2_s: float | None = None,
) -> Estimate:
    """Estimate D of one track with the covariance-based estimator (CVE).

    Parameters
    ----------
    positions_um : array_like, shape (N, d) or (N,)
        Positions in um, d = 1, 2 or 3, N >= 3.
    frame_interval_s : float
        Time between frames in s.
    frames : array_like of int, shape (N,), optional
        Frame index of each position, strictly increasing; gaps are missing frames.
        Default ``0..N-1``.
    exposure_s : float, optional
        Exposure time in s (default: the frame interval, continuous exposure); sets the
        blur coefficient ``R = exposure_s / (6 frame_interval_s)``.
    sigma_um : float, optional
        Known localization precision per dimension in um (>= 0). Given: the
        "sigma-known" variant; omitted: "sigma-unknown", which estimates sigma^2 too.
        From the squared steps alone (the default), the sigma-known variant has the
        smaller variance only while the noise is small: with continuous exposure
        (R = 1/6) and ``sigma^2 > ~0.3 x 2 D dt`` it is the noisier of the two,
        because the blur factor ``1 / (1 - 2R)`` scales its sampling error (see
        ``weight_at_d_um2_s``).
    confidence : float
        Level of the two-sided interval, default 0.9.
    blur_coefficient : float, optional
        Exact R in ``[0, 1/4]``, overriding the one derived from the exposure.
    track_id : object, optional
        Named in error messages and copied to the result.
    weight_at_d_um2_s : float, optional
        With ``sigma_um`` and blur (R >= 1e-3): use the adjacent products too, as
        ``w D_a + (1 - w) D_b`` (module docstring) with the ``w`` of least variance
        at this D (um^2/s, >= 0; e.g. the whole track's D when this is a window of
        it). Variant ``"sigma-known, both moments"``; never noisier than either
        sigma-known form nor, with the true D and sigma, than the sigma-unknown CVE.
        It does not use the data it weighs, so the estimate stays unbiased for
        any value; a wrong one only costs efficiency.

    Returns
    -------
    Estimate
        ``method="cve"``. ``d_um2_s`` is unbiased and may be <= 0 for short noisy
        tracks (it is not clipped); the interval (by test inversion, see
        :func:`livespt.models.estimators.quadform.interval_by_test_inversion`) is >= 0. The
        standard error is exact for the model, evaluated at the estimated
        (zero-clipped) D and sigma^2.

    Notes
    -----
    With N steps ``dx_i`` spanning ``k_i`` frames, ``m2 = <dx_i^2>`` over the steps and
    ``m1 = <dx_i dx_{i+1}>`` over adjacent step pairs (all averaged over dimensions),
    the model gives ``E[m2] = 2 D dt (kbar - 2R) + 2 sigma^2`` and
    ``E[m1] = 2 R D dt - sigma^2`` with ``kbar`` the mean of ``k_i``. Solving,

    - sigma unknown: ``D = (m2 + 2 m1) / (2 dt kbar)``, ``sigma^2 = 2 R dt D - m1``;
    - sigma known: ``D = (m2 - 2 sigma^2) / (2 dt (kbar - 2R))``.

    Without gaps (``kbar = 1``) these are Vestergaard et al.'s formulas; with gaps they
    stay exactly unbiased and use every step and every adjacent step pair (the
    adjacent covariance does not depend on the gap lengths). Steps across gaps enter
    with equal weight, which costs some efficiency when gaps are long and frequent;
    the reported standard error accounts for it exactly.

    References
    ----------
    Vestergaard, Blainey & Flyvbjerg, Phys. Rev. E 89, 022726 (2014).
    Berglund, Phys. Rev. E 82, 011917 (2010).
    """
    pos, fr = _tracks.validate_track(positions_um, frames, track_id)
    dt, r = _tracks.resolve_timing(frame_interval_s, exposure_s, blur_coefficient)
    d_ref = (None if weight_at_d_um2_s is None
             else _validate.non_negative("weight_at_d_um2_s", weight_at_d_um2_s))
    out = _cve_arrays(pos[None], fr, dt, r, _sigma2(sigma_um), _confidence(confidence),
                      d_ref=d_ref)
    d_hat, low, high, se, sigma2 = (float(a[0]) for a in out)
    return Estimate(
        d_um2_s=d_hat,
        d_low_um2_s=low,
        d_high_um2_s=high,
        se_um2_s=se,
        sigma2_um2=sigma2,
        n_positions=int(fr.shape[0]),
        n_steps=int(fr.shape[0] - 1),
        method=METHOD,
        variant=_variant(sigma_um, d_ref, r),
        track_id=track_id,
        confidence=float(confidence),
    )


def cve_batch(
    positions_um: ArrayLike,
    frame_interval_s: float,
    frames: ArrayLike | None = None,
    *,
    exposure_s: float | None = None,
    sigma_um: float | ArrayLike | None = None,
    confidence: float = 0.9,
    blur_coefficient: float | None = None,
    sigma2_var_um4: float | ArrayLike = 0.0,
    dispersion: float | ArrayLike = 1.0,
    weight_at_d_um2_s: float | ArrayLike | None = None,
) -> EstimateBatch:
    """CVE of M tracks at once; same parameters and results as :func:`cve`.

    Parameters
    ----------
    positions_um : array_like, shape (M, N, d) or (M, N)
        Positions in um of M tracks of N positions each.
    sigma_um : float or array_like of shape (M,), optional
        Known localization precision per dimension in um, one for all tracks or one
        per track (e.g. each window's mean fitted precision); None: sigma unknown.
    sigma2_var_um4 : float or array_like of shape (M,)
        Variance (um^4) of ``sigma_um**2`` when it is itself an estimate (e.g. from
        the track's whole step history); widens the intervals accordingly. 0:
        sigma exactly known. Ignored when ``sigma_um`` is None.
    dispersion : float or array_like of shape (M,)
        Factor (>= 1) on the estimator's model variance for steps heavier-tailed than
        Gaussian (see :func:`~livespt.models.estimators.quadform.interval_by_test_inversion`);
        widens the intervals only, the estimates do not change. 1: Gaussian steps.
    weight_at_d_um2_s : float or array_like of shape (M,), optional
        As in :func:`cve`, one for all tracks or one per track (um^2/s, >= 0; NaN
        is not allowed). The weights also count ``sigma2_var_um4`` and ``dispersion``.
    frame_interval_s, exposure_s, confidence, blur_coefficient
        As in :func:`cve`.
    frames : array_like of int, shape (N,), optional
        Frames shared by all M tracks (e.g. one sliding window of a live stream).

    Returns
    -------
    EstimateBatch
        Arrays of shape (M,). The variance coefficients are computed once for the
        shared frame pattern, so the cost is a few passes over the positions.
    """
    pos, fr = _tracks.validate_batch(positions_um, frames)
    dt, r = _tracks.resolve_timing(frame_interval_s, exposure_s, blur_coefficient)
    var = np.asarray(sigma2_var_um4, dtype=np.float64)
    if var.ndim > 1 or (var.ndim == 1 and var.shape != (pos.shape[0],)) or not np.all(var >= 0):
        raise ValueError(f"sigma2_var_um4 must be >= 0, a scalar or shape ({pos.shape[0]},)")
    phi = np.asarray(dispersion, dtype=np.float64)
    if phi.ndim > 1 or (phi.ndim == 1 and phi.shape != (pos.shape[0],)) \
            or not np.all(phi >= 1.0):
        raise ValueError(f"dispersion must be >= 1, a scalar or shape ({pos.shape[0]},)")
    d_ref = None
    if weight_at_d_um2_s is not None:
        d_ref = np.asarray(weight_at_d_um2_s, dtype=np.float64)
        if d_ref.ndim > 1 or (d_ref.ndim == 1 and d_ref.shape != (pos.shape[0],)) \
                or not np.all(np.isfinite(d_ref)) or not np.all(d_ref >= 0):
            raise ValueError(f"weight_at_d_um2_s must be finite and >= 0 (um^2/s), a scalar "
                             f"or shape ({pos.shape[0]},)")
    d_hat, low, high, se, sigma2 = _cve_arrays(
        pos, fr, dt, r, _sigma2_batch(sigma_um, pos.shape[0]), _confidence(confidence), var,
        phi, d_ref
    )
    return EstimateBatch(
        d_um2_s=d_hat,
        d_low_um2_s=low,
        d_high_um2_s=high,
        se_um2_s=se,
        sigma2_um2=sigma2,
        n_positions=int(fr.shape[0]),
        n_steps=int(fr.shape[0] - 1),
        method=METHOD,
        variant=_variant(sigma_um, d_ref, r),
        confidence=float(confidence),
    )


def _variant(sigma_um: Any, d_ref: Any, r: float) -> str:
    if sigma_um is None:
        return "sigma-unknown"
    if d_ref is not None and r >= MIN_BLUR_FOR_PRODUCTS:
        return "sigma-known, both moments"
    return "sigma-known"


def cve_relative_variance(
    n_steps: int,
    d_um2_s: float,
    sigma_um: float,
    frame_interval_s: float,
    exposure_s: float | None = None,
    ndim: int = 2,
    *,
    blur_coefficient: float | None = None,
) -> float:
    """Vestergaard et al.'s relative variance ``Var(D_hat) / D^2`` of the sigma-unknown CVE.

    ``[(6 + 4x + 2x^2) / N + 4 (1 + x)^2 / N^2] / d`` with ``x = sigma^2 / (D dt) - 2R``
    (Vestergaard et al. 2014, divided by d for d independent dimensions). It is exact
    in its two leading orders in 1/N; the exact finite-N variance of the estimator as
    implemented (adjacent products averaged over their N - 1 pairs) is
    :func:`cve_variance`, larger by a relative O(1/N^2): at x = 0, R = 0 the exact
    value is ``(6/N + 4/(N(N-1))) / d``. The difference is 0.6-1.3 % at N = 10 and
    below 0.06 % at N = 50 (checked in the tests).

    Parameters
    ----------
    n_steps : int
        Number of steps N (>= 2).
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
    blur_coefficient : float, optional
        Exact R, overriding the one derived from the exposure.

    Returns
    -------
    float
        Dimensionless relative variance; the relative standard error is its root.
    """
    n = _validate.positive_int("n_steps", n_steps, 2)
    d = _validate.positive("d_um2_s", d_um2_s)
    sigma = _validate.non_negative("sigma_um", sigma_um)
    nd = _validate.positive_int("ndim", ndim)
    dt, r = _tracks.resolve_timing(frame_interval_s, exposure_s, blur_coefficient)
    x = sigma**2 / (d * dt) - 2.0 * r
    return ((6.0 + 4.0 * x + 2.0 * x * x) / n + 4.0 * (1.0 + x) ** 2 / n**2) / nd


def cve_variance(
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
    """Exact variance of the CVE (um^4/s^2) for a given track length or frame pattern.

    Computed as ``2 tr(A Sigma A Sigma) / d`` with tridiagonal A and Sigma, in O(N); valid
    with gaps, where :func:`cve_relative_variance` does not apply.

    Parameters
    ----------
    n_positions_or_frames : int or array_like of int
        Number of positions of a track without gaps, or the frames of the positions.
    d_um2_s, sigma_um, frame_interval_s, exposure_s, ndim, blur_coefficient
        As in :func:`cve_relative_variance`.
    sigma_known : bool
        Variance of the sigma-known variant instead of sigma-unknown.

    Returns
    -------
    float
        ``Var(D_hat)`` in (um^2/s)^2.
    """
    fr = _tracks.validate_frames_or_count(n_positions_or_frames)
    d = _validate.positive("d_um2_s", d_um2_s)
    sigma = _validate.non_negative("sigma_um", sigma_um)
    nd = _validate.positive_int("ndim", ndim)
    dt, r = _tracks.resolve_timing(frame_interval_s, exposure_s, blur_coefficient)
    q = _cve_coefficients(fr, dt, r, sigma_known)
    return float(variance(q, d, sigma**2, nd))
