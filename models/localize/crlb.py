"""Fisher information and the Cramer-Rao lower bound of emitter positions, photons and background.

For independent pixels whose reading depends on ``theta`` only through ``mu_k(theta)``
(:mod:`~livespt.models.localize.image`),

    I_ij(theta) = sum_k J(mu_k) (d mu_k / d theta_i) (d mu_k / d theta_j),

with ``J(mu) = E[(d log p(x | mu) / d mu)^2]`` the information one pixel carries about its
own mean (seed 004, eq. 3 and appendix A.3, for ``J = 1 / mu``). ``J`` depends on the noise:

* pure Poisson (``read_noise_e = 0``): ``J = 1 / mu``, exact;
* Poisson plus Gaussian read noise, ``exact=True``: the integral over ``x`` of
  ``(d p / d mu)^2 / p`` with the exact density (:func:`pixel_information`), as in Chao et
  al. 2016 for CCD/sCMOS pixels;
* ``exact=False``: the shifted-Poisson approximation ``J = 1 / (mu + r^2)``.

``crlb`` is the square root of the diagonal of ``I^-1``: no unbiased estimator has a
smaller standard deviation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import special

from livespt.models import _validate
from livespt.models.localize.image import expected_image_and_jacobian

MIN_EXACT_READ_NOISE_E = 0.15
"""Below this read noise (electrons) the exact pixel information is taken as ``1 / mu``,
the Poisson limit: at 0.15 e the two differ by less than 0.2 % for ``mu >= 0.3``
(tested); the integral's grid grows as ``1 / r``."""


def pixel_information(mu: Any, read_noise_e: float, exact: bool = True) -> NDArray[np.float64]:
    """Fisher information ``J(mu)`` one pixel carries about its own mean, per electron^2.

    Parameters
    ----------
    mu : array_like
        Expected photo-electrons, > 0.
    read_noise_e : float
        Read-noise standard deviation in electrons, >= 0.
    exact : bool
        The exact Poisson-Gaussian integral (module docstring) or ``1 / (mu + r^2)``.

    Returns
    -------
    ndarray, shape of ``mu``
        Never above ``1 / mu`` (read noise only loses information).
    """
    m = _validate.finite_array("mu", mu)
    if not np.all(m > 0):
        raise ValueError("mu must be > 0")
    r = _validate.non_negative("read_noise_e", read_noise_e)
    if not exact or r == 0:
        return np.asarray(1.0 / (m + r * r), np.float64)
    if r < MIN_EXACT_READ_NOISE_E:
        return np.asarray(1.0 / m, np.float64)
    # Pixels far from every spot share the background's mu to many digits: J is smooth,
    # so it is computed once per value rounded to 7 significant digits.
    rounded = np.asarray([float(f"{v:.7g}") for v in m.ravel()])
    values, inverse = np.unique(rounded, return_inverse=True)
    j = np.array([_exact_information(float(v), r) for v in values])
    return np.asarray(j[inverse].reshape(m.shape), np.float64)


def _exact_information(mu: float, r: float) -> float:
    """``int (dp/dmu)^2 / p dx`` for one pixel.

    ``x = n + u`` with ``n`` whole and ``u`` on a grid of ``[0, 1)`` no coarser than
    ``r / 8``: for each ``u`` the density over all ``n`` is the convolution of the Poisson
    pmf with the read-noise kernel sampled at ``u + d`` (``|d| <= 9 r + 1``).
    """
    s = np.arange(int(np.ceil(mu + 12.0 * np.sqrt(mu) + 20.0)) + 1, dtype=np.float64)
    pois = np.exp(s * np.log(mu) - mu - special.gammaln(s + 1.0))
    dpois = pois * (s / mu - 1.0)  # d Poisson(s; mu) / d mu
    half = int(np.ceil(9.0 * r)) + 1
    offsets = np.arange(-half, half + 1, dtype=np.float64)
    n_u = max(8, int(np.ceil(8.0 / r)))
    total = 0.0
    for u in np.arange(n_u) / n_u:
        kernel = np.exp(-0.5 * ((u + offsets) / r) ** 2) / (np.sqrt(2.0 * np.pi) * r)
        p = np.convolve(pois, kernel)
        dp = np.convolve(dpois, kernel)
        ok = p > 1e-300
        total += float(np.sum(dp[ok] ** 2 / p[ok]))
    return total / n_u


def fisher_information(theta: Any, shape: tuple[int, int], sigma_px: float,
                       read_noise_e: float = 0.0, exact: bool = True) -> NDArray[np.float64]:
    """The Fisher information matrix of ``theta`` for one frame.

    Parameters
    ----------
    theta : array_like, shape (3 K + 1,)
        Emitters and background (:func:`~livespt.models.localize.image.pack`).
    shape : (int, int)
        Frame size ``(H, W)`` in pixels.
    sigma_px : float
        PSF standard deviation in pixels.
    read_noise_e : float
        Read noise in electrons.
    exact : bool
        Exact pixel information, or the shifted-Poisson one (:func:`pixel_information`).

    Returns
    -------
    ndarray, shape (3 K + 1, 3 K + 1)
        In the units of ``theta`` (1/px^2, 1/e^2, ...).
    """
    mu, jac = expected_image_and_jacobian(theta, shape, sigma_px)
    assert jac is not None
    if not np.all(mu > 0):
        raise ValueError("theta gives an expected count <= 0 somewhere: the background "
                         "must be > 0 (or every pixel lit)")
    j = pixel_information(mu, read_noise_e, exact)
    flat = jac.reshape(jac.shape[0], -1)
    return np.asarray((flat * j.ravel()) @ flat.T, np.float64)


def crlb(theta: Any, shape: tuple[int, int], sigma_px: float, read_noise_e: float = 0.0,
         exact: bool = True, fixed: Any = None) -> NDArray[np.float64]:
    """Cramer-Rao lower bound on the standard deviation of each parameter.

    Parameters
    ----------
    theta : array_like, shape (3 K + 1,)
        Emitters and background (:func:`~livespt.models.localize.image.pack`).
    shape : (int, int)
        Frame size ``(H, W)`` in pixels.
    sigma_px : float
        PSF standard deviation in pixels.
    read_noise_e : float
        Read noise in electrons.
    exact : bool
        See :func:`fisher_information`.
    fixed : array_like of bool, shape (3 K + 1,), optional
        Parameters known exactly (e.g. the background): left out of the inversion;
        their bound is reported as 0.

    Returns
    -------
    ndarray, shape (3 K + 1,)
        ``sqrt(diag(I^-1))`` in the units of ``theta`` (px, e).
    """
    info = fisher_information(theta, shape, sigma_px, read_noise_e, exact)
    free = np.ones(len(info), bool) if fixed is None else ~np.asarray(fixed, bool)
    out = np.zeros(len(info))
    sub = info[np.ix_(free, free)]
    out[free] = np.sqrt(np.diag(np.linalg.inv(sub)))
    return out

