"""Single-molecule localization microscopy (SMLM) frames with kernel-density targets.

Follows the data of Seitz (seed 004, section 4 and appendix A.1): small
low-resolution frames of a few static emitters and, for each, a noise-free
kernel density estimate (KDE) on a grid ``upsample`` times finer, the training
pair of a DeepSTORM-like network and of the DDPM that samples around it.

* Emitters: ``K`` per frame (fixed, or uniform on an inclusive range), uniform
  on a disc of radius ``disc_radius_px`` centred in the frame.
* Frame (eq. 1, 2): expected photons ``i0 dE(x) dE(y)`` per emitter with the
  pixel-integrated Gaussian PSF of width ``sigma_x_px``, plus background;
  ``x = Poisson(expected + background) + N(0, read_noise^2)`` in photo-electrons
  (offset subtracted, gain 1, as in the paper's model).
* KDE (eq. 4): ``y = sum_n dE(u_n; sigma_y) dE(v_n; sigma_y)`` on the fine grid
  with ``sigma_y_px`` in fine pixels, scaled to ``[0, 1]`` per frame by its
  maximum (all zeros for a frame without emitters).

Coordinates are low-resolution pixels with the project convention (pixel
``(i, j)`` centred at ``x = j, y = i``, covering ``[j - 1/2, j + 1/2)``). Fine
pixel ``k`` subdivides low-resolution pixel ``k // upsample``, so a position
``x`` is at ``(x + 1/2) * upsample - 1/2`` in fine pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from livespt.models import _validate
from livespt.models.psf import _render_gaussian_spots
from livespt.models.simulate._common import Device, as_device, make_generator


@dataclass(frozen=True, eq=False)
class SMLMBatch:
    """A batch of SMLM frames with their KDE targets and ground-truth emitters.

    Attributes
    ----------
    frames : Tensor, shape (B, frame_px, frame_px), float32
        Noisy frames in photo-electrons.
    kde : Tensor, shape (B, frame_px * upsample, frame_px * upsample), float32
        Noise-free KDE targets scaled to ``[0, 1]`` per frame.
    positions_px : Tensor, shape (B, Kmax, 2), float64
        Emitter positions (x, y) in low-resolution pixels; padding rows are 0.
    mask : Tensor, shape (B, Kmax), bool
        True for real emitters, False for padding.
    """

    frames: Tensor
    kde: Tensor
    positions_px: Tensor
    mask: Tensor


def simulate_smlm(
    n_frames: int,
    *,
    n_emitters: int | tuple[int, int] = (1, 5),
    frame_px: int = 20,
    upsample: int = 4,
    sigma_x_px: float = 0.92,
    i0: float = 200.0,
    disc_radius_px: float = 7.0,
    sigma_y_px: float = 3.0,
    background_photons: float = 0.0,
    read_noise_e: float = 0.0,
    seed: int = 0,
    generator: torch.Generator | None = None,
    device: Device = "cpu",
) -> SMLMBatch:
    """Simulate SMLM frames and their KDE targets (seed 004 setup by default).

    Parameters
    ----------
    n_frames : int
        Number of frames ``B``, >= 1.
    n_emitters : int or tuple of int
        Emitters per frame: a fixed number, or an inclusive range ``(low, high)``
        drawn uniformly per frame (``0 <= low <= high``, ``high >= 1``).
    frame_px : int
        Side of the low-resolution frame in pixels, >= 1.
    upsample : int
        Fine-grid factor of the KDE, >= 1.
    sigma_x_px : float
        PSF standard deviation in low-resolution pixels, > 0.
    i0 : float
        Expected photons per emitter per frame, > 0.
    disc_radius_px : float
        Radius in low-resolution pixels of the disc, centred in the frame, on
        which emitters are uniform (> 0).
    sigma_y_px : float
        KDE kernel standard deviation in fine pixels, > 0.
    background_photons : float
        Expected background photons per low-resolution pixel, >= 0.
    read_noise_e : float
        Gaussian read noise in electrons, >= 0.
    seed : int
        Seed of the random draws (ignored when ``generator`` is given).
    generator : torch.Generator, optional
        Generator on ``device``.
    device : str or torch.device
        Device of the computation and of the returned tensors.

    Returns
    -------
    SMLMBatch
        Frames, KDE targets, padded emitter positions and their mask.
    """
    b = _validate.positive_int("n_frames", n_frames)
    k_lo, k_hi = _emitter_range(n_emitters)
    n_px = _validate.positive_int("frame_px", frame_px)
    up = _validate.positive_int("upsample", upsample)
    sx = _validate.positive("sigma_x_px", sigma_x_px)
    amp = _validate.positive("i0", i0)
    radius = _validate.positive("disc_radius_px", disc_radius_px)
    sy = _validate.positive("sigma_y_px", sigma_y_px)
    bg = _validate.non_negative("background_photons", background_photons)
    rn = _validate.non_negative("read_noise_e", read_noise_e)
    dev = as_device(device)
    gen = make_generator(seed, generator, dev)

    count = torch.randint(k_lo, k_hi + 1, (b,), generator=gen, device=dev)
    mask = torch.arange(k_hi, device=dev)[None, :] < count[:, None]
    # Uniform on a disc: radius ~ R sqrt(U) makes the density flat in area.
    u = torch.rand((b, k_hi, 2), generator=gen, dtype=torch.float64, device=dev)
    r = radius * torch.sqrt(u[..., 0])
    phi = 2.0 * math.pi * u[..., 1]
    centre = 0.5 * (n_px - 1)
    pos = torch.stack((centre + r * torch.cos(phi), centre + r * torch.sin(phi)), dim=-1)
    pos = torch.where(mask[..., None], pos, torch.zeros_like(pos))
    weight = mask.to(torch.float64)

    expected = _render_gaussian_spots(pos[..., 0], pos[..., 1], amp * weight, (n_px, n_px),
                                      sx, torch.float32)
    frames = torch.poisson(expected + bg, generator=gen)
    if rn > 0:
        frames = frames + rn * torch.randn(frames.shape, generator=gen, device=dev)

    fine = (pos + 0.5) * up - 0.5
    kde = _render_gaussian_spots(fine[..., 0], fine[..., 1], weight, (n_px * up, n_px * up),
                                 sy, torch.float32)
    peak = kde.amax(dim=(1, 2), keepdim=True)
    kde = torch.where(peak > 0, kde / peak.clamp_min(1e-30), kde)
    return SMLMBatch(frames=frames, kde=kde, positions_px=pos, mask=mask)


def _emitter_range(n_emitters: Any) -> tuple[int, int]:
    if isinstance(n_emitters, tuple | list):
        if len(n_emitters) != 2:
            raise ValueError(f"n_emitters must be an int or a (low, high) pair, got {n_emitters!r}")
        lo = _validate.positive_int("n_emitters", n_emitters[0], minimum=0)
        hi = _validate.positive_int("n_emitters", n_emitters[1], minimum=1)
        if lo > hi:
            raise ValueError(f"n_emitters must have low <= high, got {n_emitters!r}")
        return lo, hi
    k = _validate.positive_int("n_emitters", n_emitters)
    return k, k
