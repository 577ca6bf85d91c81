"""TIFF movies with ImageJ calibration (pixel size, frame interval).

ImageJ and Fiji read the calibration from the ImageJ image description
(``unit``, ``finterval``) and the TIFF XResolution/YResolution tags (pixels per
unit), which is what :func:`write_movie` writes and :func:`read_movie` reads back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from numpy.typing import NDArray

from livespt.models import _validate

_UM_NAMES = {"um", "micron", "microns", "µm", "\\u00B5m", "micrometer", "micrometre"}


@dataclass(frozen=True)
class Calibration:
    """Physical calibration of a movie.

    Attributes
    ----------
    pixel_size_um : float or None
        Side of one pixel in micrometres, or None when the file does not say.
    frame_interval_s : float or None
        Time between frame starts in seconds, or None when the file does not say.
    """

    pixel_size_um: float | None
    frame_interval_s: float | None


def write_movie(
    path: str | Path,
    frames: NDArray[np.uint16],
    pixel_size_um: float,
    frame_interval_s: float,
) -> Path:
    """Write a (T, H, W) uint16 movie as an ImageJ hyperstack TIFF with calibration.

    Parameters
    ----------
    path : str or Path
        Output file, usually ``movie.tif``.
    frames : ndarray of uint16, shape (T, H, W)
        The frames in camera counts (ADU).
    pixel_size_um : float
        Pixel size in micrometres.
    frame_interval_s : float
        Frame interval in seconds.

    Returns
    -------
    Path
        The path written.
    """
    px = _validate.positive("pixel_size_um", pixel_size_um)
    dt = _validate.positive("frame_interval_s", frame_interval_s)
    arr = np.asarray(frames)
    if arr.ndim != 3:
        raise ValueError(f"frames must have shape (T, H, W), got {arr.shape}")
    if arr.dtype != np.uint16:
        raise ValueError(f"frames must be uint16, got {arr.dtype}")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(
        out,
        arr,
        imagej=True,
        resolution=(1.0 / px, 1.0 / px),
        metadata={"axes": "TYX", "unit": "um", "finterval": dt},
    )
    return out


def write_maps(path: str | Path, maps: NDArray[np.float32], pixel_size_um: float,
               upsample: int) -> Path:
    """Write (T, H, W) float32 maps on a grid ``upsample`` times finer than the camera's.

    The ImageJ calibration makes Fiji show the maps in the camera frames' coordinates:
    the map pixel is ``pixel_size_um / upsample`` and the origin ``(upsample - 1) / 2`` map
    pixels, so that map pixel ``k`` is centred at ``((k + 1/2) / upsample - 1/2)`` camera
    pixels, and camera pixel ``(i, j)`` at ``(j, i) * pixel_size_um`` as everywhere.

    Parameters
    ----------
    path : str or Path
        Output file (``mean.tif``, ``variance.tif``).
    maps : ndarray of float32, shape (T, H, W)
        The maps.
    pixel_size_um : float
        The camera's pixel size in the sample, micrometres.
    upsample : int
        Map pixels per camera pixel.

    Returns
    -------
    Path
        The path written.
    """
    px = _validate.positive("pixel_size_um", pixel_size_um)
    up = _validate.positive_int("upsample", upsample)
    arr = np.asarray(maps, dtype=np.float32)
    if arr.ndim != 3:
        raise ValueError(f"maps must have shape (T, H, W), got {arr.shape}")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fine = px / up
    origin = (up - 1) / 2
    tifffile.imwrite(out, arr, imagej=True, resolution=(1.0 / fine, 1.0 / fine),
                     metadata={"axes": "TYX", "unit": "um", "xorigin": origin,
                               "yorigin": origin})
    return out


def read_calibration(path: str | Path) -> Calibration:
    """Read pixel size and frame interval from an ImageJ TIFF, where present.

    Parameters
    ----------
    path : str or Path
        A TIFF file.

    Returns
    -------
    Calibration
        Fields are None where the file carries no (micrometre) calibration.
    """
    with tifffile.TiffFile(path) as tif:
        meta = tif.imagej_metadata or {}
        page = tif.pages.first
        pixel_size: float | None = None
        unit = str(meta.get("unit", "")).strip()
        xres = page.tags.get("XResolution")
        if xres is not None and unit.lower() in _UM_NAMES:
            num, den = xres.value
            if num > 0:
                pixel_size = den / num
        interval = meta.get("finterval")
        return Calibration(
            pixel_size_um=pixel_size,
            frame_interval_s=float(interval) if interval else None,
        )


def read_movie(path: str | Path) -> tuple[NDArray[np.generic], Calibration]:
    """Read a whole TIFF movie into memory as (T, H, W) with its calibration.

    Parameters
    ----------
    path : str or Path
        A TIFF file holding one channel and one z-plane per time point.

    Returns
    -------
    frames : ndarray, shape (T, H, W)
        The frames in their stored dtype.
    calibration : Calibration
        Pixel size and frame interval where the file records them.
    """
    frames = tifffile.imread(path)
    if frames.ndim == 2:
        frames = frames[np.newaxis]
    if frames.ndim != 3:
        raise ValueError(f"{path}: expected a (T, H, W) movie, got shape {frames.shape}")
    return frames, read_calibration(path)
