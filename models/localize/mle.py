"""Maximum-likelihood localization of a known number of emitters in one frame.

Minimises the shifted-Poisson negative log-likelihood
(:func:`~livespt.models.localize.likelihood.neg_log_likelihood_and_gradient`) over
positions, photons and background with L-BFGS-B and its analytic gradient, positions
bounded to the frame, photons and background to positive values. It is the reference
the networks are compared with: asymptotically unbiased and efficient, its standard
deviation reaches the Cramer-Rao bound (:mod:`~livespt.models.localize.crlb`, tested).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import optimize

from livespt.models import _validate
from livespt.models.localize.likelihood import neg_log_likelihood_and_gradient


@dataclass(frozen=True)
class Fit:
    """A maximum-likelihood fit.

    Attributes
    ----------
    theta : ndarray, shape (3 K + 1,)
        ``(x_1, y_1, N_1, ..., b)``: pixels and photo-electrons.
    nll : float
        Negative log-likelihood at ``theta``.
    converged : bool
        Whether the optimiser reported convergence.
    """

    theta: NDArray[np.float64]
    nll: float
    converged: bool


def fit_emitters(frame_e: Any, init_theta: Any, sigma_px: float, read_noise_e: float = 0.0,
                 fixed: Any = None) -> Fit:
    """Maximum-likelihood ``theta`` of a frame, started from ``init_theta``.

    Parameters
    ----------
    frame_e : array_like, shape (H, W)
        The frame in photo-electrons (offset subtracted, divided by the gain).
    init_theta : array_like, shape (3 K + 1,)
        Starting point (:func:`~livespt.models.localize.image.pack`), e.g. from a
        detector; ``K`` is fixed by it.
    sigma_px : float
        PSF standard deviation in pixels.
    read_noise_e : float
        Read noise in electrons.
    fixed : array_like of bool, shape (3 K + 1,), optional
        Parameters held at their starting value (e.g. a known background).

    Returns
    -------
    Fit
    """
    frame = _validate.finite_array("frame_e", frame_e, ndim=2)
    theta0 = _validate.finite_array("init_theta", init_theta, ndim=1)
    if theta0.size % 3 != 1:
        raise ValueError(f"init_theta must have shape (3 K + 1,), got {theta0.shape}")
    sigma = _validate.positive("sigma_px", sigma_px)
    r = _validate.non_negative("read_noise_e", read_noise_e)
    free = np.ones(theta0.size, bool) if fixed is None else ~np.asarray(fixed, bool)
    h, w = frame.shape
    k = (theta0.size - 1) // 3
    low = np.array([-0.5, -0.5, 1e-6] * k + [1e-9])
    high = np.array([w - 0.5, h - 0.5, np.inf] * k + [np.inf])
    start = np.clip(theta0, low, high)
    # Scaled variables: photons and background in units of their starting value, so
    # that one step moves positions and intensities alike.
    scale = np.where(np.arange(theta0.size) % 3 == 2, np.maximum(start, 1.0), 1.0)
    scale[-1] = max(start[-1], 1.0)

    def objective(z: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
        theta = start.copy()
        theta[free] = z * scale[free]
        nll, grad = neg_log_likelihood_and_gradient(frame, theta, sigma, r)
        return nll, grad[free] * scale[free]

    res = optimize.minimize(objective, start[free] / scale[free], jac=True, method="L-BFGS-B",
                            bounds=list(zip(low[free] / scale[free], high[free] / scale[free],
                                            strict=True)),
                            options={"maxiter": 500, "ftol": 1e-12, "gtol": 1e-8})
    theta = start.copy()
    theta[free] = res.x * scale[free]
    return Fit(theta=theta, nll=float(res.fun), converged=bool(res.success))
