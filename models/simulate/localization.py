"""Localization error model: how well a fitted spot centre can be known.

The simulator's "localized" positions are the true exposure-mean positions plus
isotropic Gaussian error whose standard deviation per axis is the Mortensen et
al. (2010, Nat. Methods 7, 377, eq. 6) precision of a least-squares Gaussian fit
to a pixelated spot::

    sigma_loc^2 = F (sigma_a^2 / N) (16/9 + 8 pi sigma_a^2 b / (N a^2)),
    sigma_a^2   = sigma_psf^2 + a^2 / 12,

with ``N`` detected photons, ``a`` the pixel size, ``b`` the background photons
per pixel and ``F`` the excess-noise factor (1 for sCMOS/CCD, 2 for EMCCD).
Gaussian read noise of ``r`` electrons is counted as ``r^2`` extra background
photons (its variance), the usual Poisson approximation (Huang et al. 2013).
Motion blur is not in the formula: a blurred spot is wider, so for fast particles
real fitters do worse than this.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from livespt.models import _validate


def localization_precision_um(
    photons: float | Tensor,
    psf_sigma_um: float,
    pixel_size_um: float,
    background_photons: float,
    read_noise_e: float = 0.0,
    *,
    excess_noise_factor: float = 1.0,
) -> float | Tensor:
    """Mortensen et al. (2010) localization precision per axis.

    Parameters
    ----------
    photons : float or Tensor
        Detected photons of the spot (> 0; a Tensor is evaluated elementwise and
        gives ``inf`` where it is 0).
    psf_sigma_um : float
        PSF standard deviation in um, > 0.
    pixel_size_um : float
        Pixel size in um, > 0.
    background_photons : float
        Background photons per pixel, >= 0.
    read_noise_e : float
        Read-noise standard deviation in electrons, >= 0.
    excess_noise_factor : float
        1 for sCMOS/CCD cameras, 2 for EMCCDs (>= 1).

    Returns
    -------
    float or Tensor
        Standard deviation of the position error per axis in um.
    """
    s = _validate.positive("psf_sigma_um", psf_sigma_um)
    a = _validate.positive("pixel_size_um", pixel_size_um)
    b = _validate.non_negative("background_photons", background_photons)
    r = _validate.non_negative("read_noise_e", read_noise_e)
    f = _validate.in_range("excess_noise_factor", excess_noise_factor, 1.0, math.inf)
    sa2 = s * s + a * a / 12.0
    b_eff = b + r * r
    if isinstance(photons, Tensor):
        if not bool((torch.isfinite(photons) & (photons >= 0)).all()):
            raise ValueError("photons must be finite and >= 0")
        n = photons.to(torch.float64).clamp_min(1e-300)
        var = f * sa2 / n * (16.0 / 9.0 + 8.0 * math.pi * sa2 * b_eff / (n * a * a))
        return torch.where(photons > 0, torch.sqrt(var), torch.full_like(var, math.inf))
    n_f = _validate.positive("photons", photons)
    var_f = f * sa2 / n_f * (16.0 / 9.0 + 8.0 * math.pi * sa2 * b_eff / (n_f * a * a))
    return float(np.sqrt(var_f))
