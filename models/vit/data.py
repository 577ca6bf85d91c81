"""Training windows simulated on the fly, on the training device.

Each batch draws its acquisition (PSF width, exposure / interval, camera
background and its over-dispersion, blinking, brightness fluctuation) and, per
window, D (log-uniform) and SNR (log-uniform), then simulates patch sequences
with :func:`livespt.models.simulate.simulate_patches` - noisy localizations, sub-pixel
offsets, motion blur - and keeps each window's localized points (frames where
the particle emitted nothing are dropped, as a tracker's gap would drop them).
The list of what broke on real data in the report's section 5.3 (unstable
intensity, blinking, non-Gaussian background, off-centre particles) is what the
distribution covers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from livespt.models.simulate import Camera, Photophysics, simulate_patches
from livespt.models.vit.inputs import WindowInputs, prepare

PIXEL_SIZE_UM = 0.1
FRAME_INTERVAL_S = 0.05
"""Simulation units (the network only sees dimensionless inputs, so any pair serves)."""


@dataclass(frozen=True)
class TrainingDistribution:
    """What the training windows are drawn from.

    Attributes
    ----------
    d_star_range : tuple of float
        ``D* = D dt / px^2`` range in px^2 per frame, drawn log-uniform.
    snr_range : tuple of float
        SNR range (definition in docs/simulator.md), drawn log-uniform.
    psf_sigma_px_range : tuple of float
        PSF standard deviation in pixels, uniform.
    exposure_ratio_range : tuple of float
        Exposure / frame interval, uniform in (0, 1].
    length_range : tuple of int
        Points per window, uniform (inclusive).
    background_photons_range : tuple of float
        Background photons per pixel per frame, log-uniform.
    background_cv_max : float
        Largest over-dispersion of the background (log-normal, per pixel and frame).
    brightness_cv_max : float
        Largest per-frame brightness fluctuation (log-normal).
    p_blinking : float
        Fraction of batches with blinking (p_off 0.05, p_on 0.5).
    p_bleach_max : float
        Largest per-frame bleaching probability, drawn uniform per batch (a bleached
        particle is found no more: its window ends early).
    patch_px : int
        Patch side in pixels.
    substeps : int
        Sub-steps per exposure (motion blur).
    """

    d_star_range: tuple[float, float] = (0.005, 20.0)
    snr_range: tuple[float, float] = (4.0, 60.0)
    psf_sigma_px_range: tuple[float, float] = (0.7, 1.6)
    exposure_ratio_range: tuple[float, float] = (0.2, 1.0)
    length_range: tuple[int, int] = (5, 30)
    background_photons_range: tuple[float, float] = (2.0, 50.0)
    background_cv_max: float = 0.5
    brightness_cv_max: float = 0.4
    p_blinking: float = 0.3
    p_bleach_max: float = 0.02
    patch_px: int = 15
    substeps: int = 10

    def to_dict(self) -> dict[str, object]:
        """JSON-ready fields."""
        return asdict(self)


@dataclass
class Batch:
    """Network inputs and the truth for a batch of windows."""

    inputs: WindowInputs
    log_d_star: Tensor  # (B,) float32, target
    d_um2_s: Tensor  # (B,) float64, true D in um^2/s
    snr: Tensor  # (B,)
    localized_um: Tensor  # (B, T, 2) localized points, padded
    sigma_um: Tensor  # (B, T) localization precision
    frames: Tensor  # (B, T) frame indices of the points
    acquisition: dict[str, float]


def _log_uniform(lo: float, hi: float, n: int, gen: torch.Generator, dev: torch.device) -> Tensor:
    u = torch.rand(n, generator=gen, device=dev, dtype=torch.float64)
    return torch.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))


def _uniform(lo: float, hi: float, gen: torch.Generator, dev: torch.device) -> float:
    return float(lo + (hi - lo) * torch.rand(1, generator=gen, device=dev).item())


def simulate_windows(
    n: int,
    dist: TrainingDistribution,
    gen: torch.Generator,
    *,
    length: int | None = None,
    d_star: Tensor | None = None,
    snr: Tensor | None = None,
    psf_sigma_px: float | None = None,
    exposure_ratio: float | None = None,
    realistic: bool = True,
) -> Batch:
    """One batch of ``n`` windows sharing one acquisition.

    Parameters
    ----------
    n : int
        Windows in the batch.
    dist : TrainingDistribution
        What is drawn.
    gen : torch.Generator
        Random source; its device is the simulation device.
    length : int, optional
        Points per window (default: drawn from ``dist.length_range``).
    d_star, snr : Tensor, optional
        Fixed per-window ``D*`` (px^2/frame) and SNR (default: drawn).
    psf_sigma_px, exposure_ratio : float, optional
        Fixed acquisition (default: drawn).
    realistic : bool
        Draw blinking, brightness fluctuation and over-dispersed background
        (False: a clean camera, for controlled evaluations).

    Returns
    -------
    Batch
    """
    dev = gen.device
    px, dt = PIXEL_SIZE_UM, FRAME_INTERVAL_S
    if length is None:
        lo, hi = dist.length_range
        length = int(torch.randint(lo, hi + 1, (1,), generator=gen, device=dev).item())
    if d_star is None:
        d_star = _log_uniform(*dist.d_star_range, n, gen, dev)
    if snr is None:
        snr = _log_uniform(*dist.snr_range, n, gen, dev)
    if psf_sigma_px is None:
        psf_sigma_px = _uniform(*dist.psf_sigma_px_range, gen, dev)
    if exposure_ratio is None:
        exposure_ratio = _uniform(*dist.exposure_ratio_range, gen, dev)
    blinking = realistic and torch.rand(1, generator=gen, device=dev).item() < dist.p_blinking
    bg = float(_log_uniform(*dist.background_photons_range, 1, gen, dev).item())
    camera = Camera(background_photons=bg,
                    background_cv=_uniform(0.0, dist.background_cv_max, gen, dev) if realistic
                    else 0.0)
    photo = Photophysics(p_off=0.05 if blinking else 0.0, p_on=0.5,
                         p_bleach=_uniform(0.0, dist.p_bleach_max, gen, dev) if realistic
                         else 0.0,
                         brightness_cv=_uniform(0.0, dist.brightness_cv_max, gen, dev)
                         if realistic else 0.0)
    # Blinking drops points: simulate enough frames for ``length`` points in most windows.
    n_frames = length + (length // 4 + 3 if blinking else 0)
    d_um2_s = d_star.to(dev, torch.float64) * px**2 / dt
    sim = simulate_patches(
        n, n_frames, patch_px=dist.patch_px, pixel_size_um=px, frame_interval_s=dt,
        exposure_s=exposure_ratio * dt, d_um2_s=d_um2_s, snr=snr.cpu().numpy(),
        psf_sigma_um=psf_sigma_px * px, camera=camera, substeps=dist.substeps,
        photophysics=photo, generator=gen, device=dev,
    )
    found = torch.isfinite(sim.localization_sigma_um)
    # Compact each window's localized points to the front, keep at most ``length``.
    order = torch.argsort((~found).to(torch.int8), dim=1, stable=True)[:, :length]
    take = order

    def g(x: Tensor) -> Tensor:
        idx = take.reshape(n, length, *([1] * (x.ndim - 2))).expand(n, length, *x.shape[2:])
        return torch.gather(x, 1, idx)

    valid = torch.gather(found, 1, take)
    frames = take.to(torch.int64)
    images = g(sim.images)
    origin = g(sim.patch_origin_um)
    loc = g(sim.localized_um)
    sig = g(sim.localization_sigma_um)
    inputs = prepare(images, origin, loc, sig, frames, valid, pixel_size_um=px,
                     frame_interval_s=dt, exposure_s=exposure_ratio * dt,
                     psf_sigma_um=psf_sigma_px * px)
    return Batch(
        inputs=inputs,
        log_d_star=torch.log(d_star.to(dev)).to(torch.float32),
        d_um2_s=d_um2_s,
        snr=snr.to(dev),
        localized_um=loc,
        sigma_um=sig,
        frames=frames,
        acquisition={"pixel_size_um": px, "frame_interval_s": dt,
                     "exposure_s": exposure_ratio * dt, "psf_sigma_um": psf_sigma_px * px},
    )
