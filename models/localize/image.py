"""The expected image of a few emitters, and its derivatives: the model every reference shares.

A frame of ``H x W`` pixels (pixel ``(i, j)`` centred at ``x = j``, ``y = i`` in pixel
units, covering ``[j - 1/2, j + 1/2)``) holds ``K`` emitters, each at ``(x_k, y_k)`` pixels
with ``N_k`` photons in the frame, on a flat background of ``b`` photons per pixel. With
the pixel-integrated isotropic Gaussian PSF of width ``sigma`` pixels (seed 004, eq. 2)
the expected photo-electrons in pixel ``(i, j)`` are

    mu_ij = b + sum_k N_k dE(j; x_k) dE(i; y_k),
    dE(j; x) = 1/2 [erf((j + 1/2 - x) / (sqrt(2) sigma)) - erf((j - 1/2 - x) / (sqrt(2) sigma))].

Parameters are packed in one vector ``theta = (x_1, y_1, N_1, ..., x_K, y_K, N_K, b)``
(:func:`pack`, :func:`unpack`): positions in pixels, photons and background in
photo-electrons (camera offset subtracted, divided by the gain).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import special

from livespt.models import _validate

_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)


def pack(x_px: Any, y_px: Any, photons: Any, background: float) -> NDArray[np.float64]:
    """The parameter vector ``(x_1, y_1, N_1, ..., x_K, y_K, N_K, b)``.

    Parameters
    ----------
    x_px, y_px : array_like, shape (K,)
        Emitter positions in pixels.
    photons : array_like, shape (K,)
        Photo-electrons of each emitter in the frame.
    background : float
        Background photo-electrons per pixel.

    Returns
    -------
    ndarray, shape (3 K + 1,)
    """
    x = np.atleast_1d(np.asarray(x_px, np.float64))
    y = np.atleast_1d(np.asarray(y_px, np.float64))
    n = np.atleast_1d(np.asarray(photons, np.float64))
    if not x.shape == y.shape == n.shape or x.ndim != 1:
        raise ValueError(f"x_px, y_px and photons must have one shape (K,), got {x.shape}, "
                         f"{y.shape}, {n.shape}")
    return np.concatenate([np.stack([x, y, n], axis=1).ravel(), [float(background)]])


def unpack(theta: Any) -> tuple[NDArray[np.float64], NDArray[np.float64],
                                NDArray[np.float64], float]:
    """``(x_px, y_px, photons, background)`` of a parameter vector (see :func:`pack`)."""
    t = np.asarray(theta, np.float64)
    if t.ndim != 1 or t.size % 3 != 1:
        raise ValueError(f"theta must have shape (3 K + 1,), got {t.shape}")
    e = t[:-1].reshape(-1, 3)
    return e[:, 0], e[:, 1], e[:, 2], float(t[-1])


def pixel_fractions(centres_px: NDArray[np.float64], n_pixels: int, sigma_px: float,
                    derivative: bool = True
                    ) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]:
    """Fraction of each spot's 1-D marginal in each pixel, and its derivative by the centre.

    Parameters
    ----------
    centres_px : ndarray, shape (K,)
        Spot centres in pixels.
    n_pixels : int
        Pixels along the axis.
    sigma_px : float
        PSF standard deviation in pixels.
    derivative : bool
        Also return the derivative.

    Returns
    -------
    fractions : ndarray, shape (K, n_pixels)
        ``dE(j; c)``, accurate to relative rounding error in the tails (erfc of ``|z|``).
    derivative : ndarray, shape (K, n_pixels), or None
        ``d dE(j; c) / dc`` per pixel of centre shift.
    """
    edges = np.arange(n_pixels + 1, dtype=np.float64) - 0.5
    d = edges[None, :] - np.asarray(centres_px, np.float64)[:, None]
    z = d / (_SQRT2 * sigma_px)
    e = special.erfc(np.abs(z))
    a, b = z[:, :-1], z[:, 1:]
    ea, eb = e[:, :-1], e[:, 1:]
    frac = 0.5 * np.where(a >= 0, ea - eb, np.where(b <= 0, eb - ea, 2.0 - ea - eb))
    if not derivative:
        return frac, None
    density = np.exp(-0.5 * (d / sigma_px) ** 2) / (_SQRT2PI * sigma_px)
    return frac, density[:, :-1] - density[:, 1:]


def expected_image(theta: Any, shape: tuple[int, int], sigma_px: float
                   ) -> NDArray[np.float64]:
    """Expected photo-electrons per pixel, ``mu`` (module docstring).

    Parameters
    ----------
    theta : array_like, shape (3 K + 1,)
        Emitters and background (:func:`pack`).
    shape : (int, int)
        Frame size ``(H, W)`` in pixels.
    sigma_px : float
        PSF standard deviation in pixels.

    Returns
    -------
    ndarray, shape (H, W)
    """
    return expected_image_and_jacobian(theta, shape, sigma_px, jacobian=False)[0]


def expected_image_and_jacobian(theta: Any, shape: tuple[int, int], sigma_px: float,
                                jacobian: bool = True
                                ) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]:
    """``mu`` and ``d mu / d theta``.

    Parameters
    ----------
    theta : array_like, shape (3 K + 1,)
        Emitters and background (:func:`pack`).
    shape : (int, int)
        Frame size ``(H, W)`` in pixels.
    sigma_px : float
        PSF standard deviation in pixels.
    jacobian : bool
        Also return the derivatives.

    Returns
    -------
    mu : ndarray, shape (H, W)
        Expected photo-electrons per pixel.
    jac : ndarray, shape (3 K + 1, H, W), or None
        Derivative of ``mu`` by each parameter, in the order of ``theta``.
    """
    sigma = _validate.positive("sigma_px", sigma_px)
    return _mu_and_jacobian(_validate.finite_array("theta", theta, ndim=1), shape, sigma,
                            jacobian)


def _mu_and_jacobian(theta: NDArray[np.float64], shape: tuple[int, int], sigma: float,
                     jacobian: bool
                     ) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]:
    """Unchecked :func:`expected_image_and_jacobian`, for the fitter's and sampler's loops."""
    h, w = shape
    x, y, n, b = unpack(theta)
    fx, dfx = pixel_fractions(x, w, sigma, jacobian)
    fy, dfy = pixel_fractions(y, h, sigma, jacobian)
    unit = fy[:, :, None] * fx[:, None, :]  # (K, H, W): each emitter's PSF, unit photons
    mu = b + np.einsum("k,kij->ij", n, unit)
    if dfx is None or dfy is None:
        return mu, None
    jac = np.empty((3 * len(n) + 1, h, w))
    jac[0:-1:3] = n[:, None, None] * fy[:, :, None] * dfx[:, None, :]
    jac[1:-1:3] = n[:, None, None] * dfy[:, :, None] * fx[:, None, :]
    jac[2:-1:3] = unit
    jac[-1] = 1.0
    return mu, jac
