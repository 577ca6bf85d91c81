"""The likelihood of a frame given its expected image: Poisson shot noise plus Gaussian read noise.

A pixel reads ``x = s + eta`` photo-electrons with ``s ~ Poisson(mu)`` and
``eta ~ N(0, r^2)`` (camera offset subtracted, divided by the gain; ``r`` the read noise
in electrons). Two forms:

* **exact** (:func:`log_prob_exact`): ``p(x | mu) = sum_s Poisson(s; mu) N(x - s; 0, r^2)``,
  summed over every ``s`` within 10 ``r`` of ``x``; for ``r = 0`` the Poisson pmf (``x``
  must then be a whole number);
* **shifted Poisson** (:func:`neg_log_likelihood`, Huang et al. 2013, the sCMOS
  approximation): ``x + r^2 ~ Poisson(mu + r^2)`` with the Poisson pmf continued by the
  gamma function and ``x + r^2`` clipped at 0. It has the exact mean and variance, is
  smooth in ``mu`` and cheap, and is what the fitter and the sampler use; it is exact
  for ``r = 0``.

The seed (004, appendix A.2) used the pure Poisson form and ignored read noise.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import special, stats

from livespt.models import _validate
from livespt.models.localize.image import _mu_and_jacobian


def _check(frame_e: Any, mu: Any, read_noise_e: float
           ) -> tuple[NDArray[np.float64], NDArray[np.float64], float]:
    x = _validate.finite_array("frame_e", frame_e)
    m = _validate.finite_array("mu", mu)
    if x.shape != m.shape:
        raise ValueError(f"frame_e has shape {x.shape} but mu has {m.shape}")
    if not np.all(m > 0):
        raise ValueError("mu must be > 0 in every pixel (add a background)")
    return x, m, _validate.non_negative("read_noise_e", read_noise_e)


def neg_log_likelihood(frame_e: Any, mu: Any, read_noise_e: float) -> float:
    """``-log p(frame | mu)`` under the shifted-Poisson model (module docstring).

    Parameters
    ----------
    frame_e : array_like
        The frame in photo-electrons.
    mu : array_like, same shape
        Expected photo-electrons per pixel, > 0.
    read_noise_e : float
        Read-noise standard deviation in electrons, >= 0.

    Returns
    -------
    float
        Including the data-only ``log Gamma(x + r^2 + 1)`` term, so that values of
        different ``mu`` and frames compare.
    """
    x, m, r = _check(frame_e, mu, read_noise_e)
    xs = np.maximum(x + r * r, 0.0)
    ms = m + r * r
    return float(np.sum(ms - xs * np.log(ms) + special.gammaln(xs + 1.0)))


def neg_log_likelihood_and_gradient(
    frame_e: NDArray[np.float64], theta: NDArray[np.float64], sigma_px: float,
    read_noise_e: float,
) -> tuple[float, NDArray[np.float64]]:
    """The shifted-Poisson ``-log p(frame | theta)`` and its gradient by ``theta``.

    Parameters
    ----------
    frame_e : ndarray, shape (H, W)
        The frame in photo-electrons.
    theta : ndarray, shape (3 K + 1,)
        Emitters and background (:func:`~livespt.models.localize.image.pack`).
    sigma_px : float
        PSF standard deviation in pixels.
    read_noise_e : float
        Read noise in electrons.

    Returns
    -------
    nll : float
        ``inf`` where some ``mu <= 0`` (a negative background or photon count).
    gradient : ndarray, shape (3 K + 1,)
    """
    mu, jac = _mu_and_jacobian(theta, frame_e.shape, sigma_px, jacobian=True)
    assert jac is not None
    if not np.all(mu > 0):
        return float("inf"), np.zeros_like(theta)
    r2 = read_noise_e * read_noise_e
    xs = np.maximum(frame_e + r2, 0.0)
    ms = mu + r2
    nll = float(np.sum(ms - xs * np.log(ms) + special.gammaln(xs + 1.0)))
    dmu = 1.0 - xs / ms
    return nll, np.tensordot(jac, dmu, axes=2)


def shifted_nll(frame_e: NDArray[np.float64], theta: NDArray[np.float64], sigma_px: float,
                read_noise_e: float) -> float:
    """The shifted-Poisson ``-log p(frame | theta)`` up to a term of the data only.

    Unchecked and without the gradient: the sampler's inner loop. ``inf`` where some
    ``mu <= 0``. Differences between two ``theta`` equal those of
    :func:`neg_log_likelihood_and_gradient`.
    """
    mu = _mu_and_jacobian(theta, frame_e.shape, sigma_px, jacobian=False)[0]
    if not np.all(mu > 0):
        return float("inf")
    r2 = read_noise_e * read_noise_e
    ms = mu + r2
    return float(np.sum(ms - np.maximum(frame_e + r2, 0.0) * np.log(ms)))


def log_prob_exact(frame_e: Any, mu: Any, read_noise_e: float) -> NDArray[np.float64]:
    """Exact ``log p(x | mu)`` of each pixel under Poisson shot noise plus Gaussian read noise.

    Parameters
    ----------
    frame_e : array_like
        The frame in photo-electrons (whole numbers when ``read_noise_e`` is 0).
    mu : array_like, same shape
        Expected photo-electrons per pixel, > 0.
    read_noise_e : float
        Read-noise standard deviation in electrons, >= 0.

    Returns
    -------
    ndarray, same shape
        A density in ``x`` (per electron) for ``read_noise_e > 0``; the Poisson pmf's
        log for 0.
    """
    x, m, r = _check(frame_e, mu, read_noise_e)
    if r == 0:
        if not np.all((x >= 0) & (x == np.round(x))):
            raise ValueError("frame_e must hold whole numbers >= 0 when read_noise_e is 0")
        return np.asarray(stats.poisson.logpmf(x, m), np.float64)
    half = int(np.ceil(10 * r)) + 1
    flat_x, flat_m = x.ravel(), m.ravel()
    s = np.floor(flat_x)[:, None] + np.arange(-half, half + 1)[None, :]
    valid = s >= 0
    s = np.maximum(s, 0.0)
    terms = (stats.poisson.logpmf(s, flat_m[:, None])
             + stats.norm.logpdf(flat_x[:, None] - s, scale=r))
    terms = np.where(valid, terms, -np.inf)
    return np.asarray(special.logsumexp(terms, axis=1), np.float64).reshape(x.shape)
