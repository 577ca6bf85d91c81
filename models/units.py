"""Physical units and the few conversions every module shares.

Public interfaces speak micrometres (um), seconds (s) and um^2/s. Conversions to
pixels or to dimensionless model units happen here and nowhere else.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch
from numpy.typing import NDArray

from livespt.models import _validate

Q = TypeVar("Q", float, NDArray[np.float64], torch.Tensor)
"""A physical quantity: a scalar, a numpy array or a torch tensor."""


def blur_coefficient(exposure_s: float, frame_interval_s: float) -> float:
    """Motion-blur coefficient R for uniform illumination during the exposure.

    For a camera that integrates uniformly over an exposure ``t_E`` at the start of
    each frame interval ``dt`` (Berglund 2010, Phys. Rev. E 82, 011917),
    ``R = t_E / (6 dt)``; continuous illumination (``t_E = dt``) gives 1/6 and a
    stroboscopic flash (``t_E -> 0``) gives 0.

    Parameters
    ----------
    exposure_s : float
        Exposure time in seconds, ``0 <= exposure_s <= frame_interval_s``.
    frame_interval_s : float
        Time between frame starts in seconds, > 0.

    Returns
    -------
    float
        R, dimensionless, in ``[0, 1/6]``.
    """
    te, dt = _validate.exposure_and_interval(exposure_s, frame_interval_s)
    return te / (6.0 * dt)


def um_to_px(value_um: Q, pixel_size_um: float) -> Q:
    """Convert lengths from micrometres to pixels.

    Parameters
    ----------
    value_um : float, ndarray or Tensor
        Lengths or positions in um (any shape).
    pixel_size_um : float
        Pixel size in um, > 0.

    Returns
    -------
    same type as ``value_um``
        In pixels.
    """
    return value_um / _validate.positive("pixel_size_um", pixel_size_um)


def px_to_um(value_px: Q, pixel_size_um: float) -> Q:
    """Convert lengths from pixels to micrometres (see :func:`um_to_px`)."""
    return value_px * _validate.positive("pixel_size_um", pixel_size_um)


def pixel_centre_um(position_um: NDArray[np.float64], pixel_size_um: float) -> NDArray[np.float64]:
    """Centre of the pixel that contains each position, in um.

    Pixel ``(i, j)`` has its centre at ``(x, y) = (j, i) * pixel_size_um`` (the
    convention of the detector and the simulator), so the pixel containing
    ``x`` is ``floor(x / pixel_size + 1/2)``. Patches for the image models are
    cropped around this pixel.

    Parameters
    ----------
    position_um : ndarray
        Positions in um (any shape).
    pixel_size_um : float
        Pixel size in um, > 0.

    Returns
    -------
    ndarray
        Same shape, um.
    """
    return px_to_um(np.floor(um_to_px(np.asarray(position_um, dtype=np.float64),
                                      pixel_size_um) + 0.5), pixel_size_um)


def d_to_px2_per_frame(d_um2_s: Q, pixel_size_um: float, frame_interval_s: float) -> Q:
    """Convert diffusion coefficients from um^2/s to px^2/frame (``D* = D dt / px^2``)."""
    px = _validate.positive("pixel_size_um", pixel_size_um)
    dt = _validate.positive("frame_interval_s", frame_interval_s)
    return d_um2_s * dt / px**2


def d_to_um2_s(d_px2_frame: Q, pixel_size_um: float, frame_interval_s: float) -> Q:
    """Convert diffusion coefficients from px^2/frame to um^2/s (``D = D* px^2 / dt``)."""
    px = _validate.positive("pixel_size_um", pixel_size_um)
    dt = _validate.positive("frame_interval_s", frame_interval_s)
    return d_px2_frame * px**2 / dt
