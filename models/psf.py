"""Pixel-integrated Gaussian point-spread function (PSF).

The PSF is an isotropic 2-D Gaussian of standard deviation ``sigma`` (Zhang et al.
2007), integrated over square pixels (Seitz, seed 004, eq. 2 and appendix A.1).
Pixel ``j`` has its centre at coordinate ``j`` and covers ``[j - 0.5, j + 0.5)`` in
pixel units (x is the column, y the row), so the fraction of a unit-mass spot
centred at ``c`` that lands in pixel ``j`` along one axis is::

    dE_j(c) = 1/2 [erf((j + 1/2 - c) / (sqrt(2) sigma)) - erf((j - 1/2 - c) / (sqrt(2) sigma))]

and a 2-D image is separable, ``I[i, j] = N dE_i(c_y) dE_j(c_x)``. Many spots
(particles, or the sub-steps of a blurred particle) add up as
``I = EY^T diag(w) EX``, one matrix product per frame instead of a per-pixel loop.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from livespt.models import _validate

_SQRT2 = math.sqrt(2.0)
# Pixels farther than _Z_CUT * sqrt(2) sigma from a spot get exactly 0: the
# Gaussian mass beyond is erfc(8) / 2 < 1e-29, far below float64 resolution of 1.
_Z_CUT = 8.0

# Gaussian approximation of the Airy disc (Zhang et al. 2007, widefield):
# sigma = 0.21 lambda / NA.
_AIRY_TO_GAUSS = 0.21


def psf_sigma_um(wavelength_um: float, numerical_aperture: float) -> float:
    """Standard deviation of the Gaussian approximation of a widefield PSF.

    Parameters
    ----------
    wavelength_um : float
        Emission wavelength in micrometres, > 0.
    numerical_aperture : float
        Numerical aperture of the objective, > 0.

    Returns
    -------
    float
        ``0.21 * wavelength_um / numerical_aperture`` in micrometres
        (0.09 um for 600 nm light and NA 1.4).
    """
    wl = _validate.positive("wavelength_um", wavelength_um)
    na = _validate.positive("numerical_aperture", numerical_aperture)
    return _AIRY_TO_GAUSS * wl / na


def integrated_gaussian_1d(
    centres_px: Tensor,
    n_pixels: int,
    sigma_px: float | Tensor,
    *,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Fraction of a unit-mass Gaussian spot's 1-D marginal falling in each pixel.

    Parameters
    ----------
    centres_px : Tensor, shape (...)
        Spot centres in pixel units of the grid (pixel 0 is centred at 0). Give
        float64 for sub-nanometre accuracy.
    n_pixels : int
        Number of pixels along the axis, >= 1.
    sigma_px : float or Tensor broadcastable to ``centres_px``
        PSF standard deviation in pixels, > 0.
    dtype : torch.dtype, optional
        Dtype of the result (the distance to each pixel edge is always formed in
        the dtype of ``centres_px``, so float32 output loses no position accuracy).

    Returns
    -------
    Tensor, shape (..., n_pixels)
        ``dE_j`` for ``j = 0 .. n_pixels - 1``. Summed over a grid that contains
        the spot with many sigmas to spare it is 1 to rounding error.
    """
    n = _validate.positive_int("n_pixels", n_pixels)
    if not isinstance(centres_px, Tensor):
        raise ValueError(f"centres_px must be a torch.Tensor, got {type(centres_px)!r}")
    if centres_px.numel() == 0:
        raise ValueError("centres_px is empty")
    if not bool(torch.isfinite(centres_px).all()):
        raise ValueError("centres_px contains NaN or infinite values")
    if isinstance(sigma_px, Tensor):
        if not bool((torch.isfinite(sigma_px) & (sigma_px > 0)).all()):
            raise ValueError("sigma_px must be finite and > 0")
    else:
        sigma_px = _validate.positive("sigma_px", sigma_px)
    return _integrated_gaussian_1d(centres_px, n, sigma_px, dtype)


def _integrated_gaussian_1d(
    centres_px: Tensor, n_pixels: int, sigma_px: float | Tensor, dtype: torch.dtype | None
) -> Tensor:
    """Unchecked :func:`integrated_gaussian_1d`, for the simulators' inner loops."""
    out_dtype = dtype or centres_px.dtype
    if isinstance(sigma_px, Tensor):
        scale: float | Tensor = (_SQRT2 * sigma_px.to(centres_px.dtype))[..., None]
        sigma_max = float(sigma_px.max())
    else:
        scale = _SQRT2 * sigma_px
        sigma_max = sigma_px
    half = math.ceil(_Z_CUT * _SQRT2 * sigma_max) + 1
    width = 2 * half + 1
    dev = centres_px.device
    if width >= n_pixels:
        edges = torch.arange(n_pixels + 1, dtype=centres_px.dtype, device=dev) - 0.5
        return _pixel_fractions(((edges - centres_px[..., None]) / scale).to(out_dtype))
    # A spot only lights the pixels within _Z_CUT * sqrt(2) sigma of it; the
    # erfs are evaluated in that window (clamped inside the grid, so the
    # indices stay unique) and scattered into zeros, which is much cheaper than
    # evaluating every pixel of a wide frame for every spot.
    first = (torch.floor(centres_px) - half).clamp(0, n_pixels - width).to(torch.long)
    offsets = torch.arange(width + 1, device=dev)
    edges = (first[..., None] + offsets).to(centres_px.dtype) - 0.5
    vals = _pixel_fractions(((edges - centres_px[..., None]) / scale).to(out_dtype))
    out = torch.zeros((*centres_px.shape, n_pixels), dtype=out_dtype, device=dev)
    return out.scatter_(-1, first[..., None] + offsets[:-1], vals)


def _pixel_fractions(z: Tensor) -> Tensor:
    """Gaussian mass between consecutive standardised edges ``z`` (..., m+1) -> (..., m)."""
    # erf(b) - erf(a) cancels catastrophically in the tails, where both are +-1;
    # erfc of |z| keeps the relative accuracy of tiny far-from-spot fractions
    # (they matter for Fisher information and log-likelihoods, not only images).
    e = torch.special.erfc(z.abs())
    a, b = z[..., :-1], z[..., 1:]
    ea, eb = e[..., :-1], e[..., 1:]
    right = ea - eb  # whole pixel right of the centre (0 <= a < b)
    left = eb - ea  # whole pixel left of the centre (a < b <= 0)
    straddle = 2.0 - ea - eb  # pixel contains the centre (a < 0 < b)
    return 0.5 * torch.where(a >= 0, right, torch.where(b <= 0, left, straddle))


def centred_pixel_fraction(sigma_px: float) -> float:
    """Fraction of a spot's photons in the pixel it is centred on.

    Parameters
    ----------
    sigma_px : float
        PSF standard deviation in pixels, > 0.

    Returns
    -------
    float
        ``erf(1 / (2 sqrt(2) sigma_px))**2``, dimensionless.
    """
    s = _validate.positive("sigma_px", sigma_px)
    return math.erf(0.5 / (_SQRT2 * s)) ** 2


def render_gaussian_spots(
    x_px: Tensor,
    y_px: Tensor,
    photons: Tensor,
    shape_px: tuple[int, int],
    sigma_px: float,
    *,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Expected photon images of Gaussian spots, one separable matrix product per image.

    Parameters
    ----------
    x_px, y_px : Tensor, shape (N, K)
        Spot centres in pixels of each of ``N`` images (x = column, y = row;
        pixel ``(i, j)`` is centred at ``x = j, y = i``).
    photons : Tensor, shape (N, K)
        Expected photons of each spot (>= 0). A motion-blurred particle is ``S``
        spots of ``photons / S`` each, one per sub-step.
    shape_px : tuple of int
        ``(height, width)`` of the images in pixels.
    sigma_px : float
        PSF standard deviation in pixels, > 0.
    dtype : torch.dtype
        Dtype of the result; float64 gives sums exact to ~1e-12.

    Returns
    -------
    Tensor, shape (N, height, width)
        Expected photons per pixel, without background. A spot partly outside
        the image contributes only the part that falls inside.
    """
    if not (isinstance(x_px, Tensor) and isinstance(y_px, Tensor) and isinstance(photons, Tensor)):
        raise ValueError("x_px, y_px and photons must be torch.Tensors")
    if x_px.ndim != 2 or x_px.shape != y_px.shape or x_px.shape != photons.shape:
        raise ValueError(
            f"x_px, y_px and photons must share a shape (N, K), got {tuple(x_px.shape)}, "
            f"{tuple(y_px.shape)}, {tuple(photons.shape)}"
        )
    if not bool((photons >= 0).all()):
        raise ValueError("photons must be >= 0")
    h = _validate.positive_int("shape_px[0]", shape_px[0])
    w = _validate.positive_int("shape_px[1]", shape_px[1])
    s = _validate.positive("sigma_px", sigma_px)
    for name, t in (("x_px", x_px), ("y_px", y_px), ("photons", photons)):
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or infinite values")
    return _render_gaussian_spots(x_px, y_px, photons, (h, w), s, dtype)


def _render_gaussian_spots(
    x_px: Tensor,
    y_px: Tensor,
    photons: Tensor,
    shape_px: tuple[int, int],
    sigma_px: float,
    dtype: torch.dtype,
) -> Tensor:
    """Unchecked :func:`render_gaussian_spots`."""
    ex = _integrated_gaussian_1d(x_px, shape_px[1], sigma_px, dtype)  # (N, K, W)
    ey = _integrated_gaussian_1d(y_px, shape_px[0], sigma_px, dtype)  # (N, K, H)
    weighted = ey * photons.to(dtype)[..., None]
    return torch.bmm(weighted.transpose(1, 2), ex)
