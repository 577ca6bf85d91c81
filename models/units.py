"""Physical units and the few conversions every module shares.

Public interfaces speak micrometres (um), seconds (s) and um^2/s. Conversions to
pixels or to dimensionless model units happen here and nowhere else.
"""

from __future__ import annotations

from livespt.models import _validate


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


def um_to_px(value_um: float, pixel_size_um: float) -> float:
    """Convert a length in micrometres to pixels."""
    return value_um / _validate.positive("pixel_size_um", pixel_size_um)


def px_to_um(value_px: float, pixel_size_um: float) -> float:
    """Convert a length in pixels to micrometres."""
    return value_px * _validate.positive("pixel_size_um", pixel_size_um)


def d_to_px2_per_frame(d_um2_s: float, pixel_size_um: float, frame_interval_s: float) -> float:
    """Convert a diffusion coefficient from um^2/s to px^2/frame."""
    px = _validate.positive("pixel_size_um", pixel_size_um)
    dt = _validate.positive("frame_interval_s", frame_interval_s)
    return _validate.non_negative("d_um2_s", d_um2_s) * dt / px**2


def d_to_um2_s(d_px2_frame: float, pixel_size_um: float, frame_interval_s: float) -> float:
    """Convert a diffusion coefficient from px^2/frame to um^2/s."""
    px = _validate.positive("pixel_size_um", pixel_size_um)
    dt = _validate.positive("frame_interval_s", frame_interval_s)
    return d_px2_frame * px**2 / dt
