"""Training data for image-based D estimation: small patches that follow one particle.

A live pipeline detects a particle, localizes it with some error, and crops a
patch around the pixel nearest to that localization in every frame. The
network therefore sees the particle off-centre by the sub-pixel offset plus the
localization error, and must be trained on exactly that. So, for each sequence:

1. a Brownian trajectory with motion blur (:func:`simulate_trajectories`),
   starting uniformly inside one pixel so the sub-pixel phase is uniform;
2. photons per frame from the photophysics (blinking, bleaching);
3. localized positions = true exposure-mean positions + isotropic Gaussian error
   with the Mortensen et al. (2010) precision for that frame's photons,
   background, read noise and PSF (:mod:`livespt.models.simulate.localization`);
4. each frame's patch is centred on the pixel containing the localized
   position (``round`` to the pixel grid: pixel ``j`` covers
   ``[j - 1/2, j + 1/2)``), and rendered directly on that patch's pixels -
   no full frame is ever made - then the camera noise is applied.

Only the tracked particle is rendered (no neighbours in the patch). When a
particle emits nothing in a frame (off or bleached) nothing can be localized:
``localization_sigma_um`` is NaN there and the crop stays at the last localized
position (or the first one, before any), as a tracker holding the track would do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from livespt.models import _validate
from livespt.models import psf as _psf
from livespt.models.psf import _render_gaussian_spots
from livespt.models.simulate._common import Device, as_device, make_generator
from livespt.models.simulate.camera import (
    Camera,
    _expose,
    _expose_background_tensor,
    photons_for_snr,
)
from livespt.models.simulate.localization import localization_precision_um
from livespt.models.simulate.photophysics import Photophysics, _emitted_photons
from livespt.models.simulate.psf_shapes import PsfShape, render_mixture_spots
from livespt.models.simulate.trajectories import resolve_exposure, simulate_trajectories

# Sequence-frames rendered at once; bounds memory for very large batches.
_CHUNK_PATCHES = 8192


@dataclass(frozen=True, eq=False)
class PatchSequences:
    """Patch sequences and their ground truth, all on the simulation device.

    Attributes
    ----------
    images : Tensor, shape (B, T, P, P), float32
        Camera counts in ADU of each frame's patch (row = y, column = x).
    patch_origin_um : Tensor, shape (B, T, 2), float64
        Position (x, y) in um of each patch's centre pixel, index ``P // 2``
        along both axes; patch pixel ``(i, j)`` is centred at
        ``origin + ((j - P // 2), (i - P // 2)) * pixel_size_um``.
    true_substeps_um : Tensor, shape (B, T, S, 2), float64
        True sub-step positions inside each exposure, in um.
    true_mean_um : Tensor, shape (B, T, 2), float64
        True exposure-mean positions, in um.
    localized_um : Tensor, shape (B, T, 2), float64
        Simulated localizations, in um (the crop centres before rounding).
    localization_sigma_um : Tensor, shape (B, T), float64
        Standard deviation per axis of the localization error, in um; NaN where
        the particle emitted nothing.
    d_um2_s : Tensor, shape (B, T), float64
        D in force in each frame, in um^2/s.
    photons : Tensor, shape (B, T), float64
        Expected photons emitted in each frame.
    pixel_size_um, frame_interval_s, exposure_s, psf_sigma_um : float
        The acquisition the patches were simulated for.
    expected : Tensor, shape (B, T, P, P), float32, optional
        Noise-free expected signal photons (no background), when asked for.
    """

    images: Tensor
    patch_origin_um: Tensor
    true_substeps_um: Tensor
    true_mean_um: Tensor
    localized_um: Tensor
    localization_sigma_um: Tensor
    d_um2_s: Tensor
    photons: Tensor
    pixel_size_um: float
    frame_interval_s: float
    exposure_s: float
    psf_sigma_um: float
    expected: Tensor | None = None


def simulate_patches(
    n_sequences: int,
    n_frames: int,
    *,
    patch_px: int = 15,
    pixel_size_um: float = 0.1,
    frame_interval_s: float = 0.05,
    exposure_s: float | None = None,
    d_um2_s: Any = 0.1,
    change_frames: Sequence[int] = (),
    photons: Any = None,
    snr: Any = None,
    psf_sigma_um: float | None = None,
    wavelength_um: float = 0.6,
    numerical_aperture: float = 1.4,
    camera: Camera | None = None,
    substeps: int = 10,
    photophysics: Photophysics | None = None,
    confinement_radius_um: float | None = None,
    digitize: bool = True,
    return_expected: bool = False,
    seed: int = 0,
    generator: torch.Generator | None = None,
    device: Device = "cpu",
    psf_shape: PsfShape | None = None,
    background_patches: Tensor | None = None,
    blur_error_fraction: float = 0.0,
) -> PatchSequences:
    """Simulate patch sequences cropped around noisy localizations, for training.

    Parameters
    ----------
    n_sequences : int
        Number of sequences ``B`` (one particle each), >= 1.
    n_frames : int
        Frames per sequence ``T``, >= 1.
    patch_px : int
        Patch side ``P`` in pixels, >= 1 (odd sizes have a true centre pixel).
    pixel_size_um : float
        Pixel size in um, > 0.
    frame_interval_s : float
        Time between frames in s, > 0.
    exposure_s : float, optional
        Exposure in s, ``0 < exposure_s <= frame_interval_s``; default: the interval.
    d_um2_s : float or array_like
        D in um^2/s: scalar, one per sequence ``(B,)``, or piecewise with
        ``change_frames`` (see :func:`diffusion_schedule`).
    change_frames : sequence of int
        Frames where D changes.
    photons : float or array_like, optional
        Photons per frame while emitting, scalar or ``(B,)``.
    snr : float or array_like, optional
        SNR (definition in :mod:`livespt.models.simulate.camera`), scalar or ``(B,)``;
        give exactly one of ``photons`` and ``snr``.
    psf_sigma_um : float, optional
        PSF standard deviation in um; default ``0.21 wavelength_um / numerical_aperture``.
    wavelength_um, numerical_aperture : float
        Used for the PSF when ``psf_sigma_um`` is None.
    camera : Camera, optional
        Noise model (default ``Camera()``); per-pixel maps are not supported
        because patches have no fixed place on a sensor.
    substeps : int
        Sub-steps per exposure for motion blur, >= 1.
    photophysics : Photophysics, optional
        Blinking, bleaching, brightness fluctuation (default: none).
    confinement_radius_um : float, optional
        Radius in um of a reflecting disc around each start.
    digitize : bool
        Round to integer ADU and clip to the ADC range, as a camera does.
    return_expected : bool
        Also return the noise-free expected signal photons.
    seed : int
        Seed of every random draw (ignored when ``generator`` is given).
    generator : torch.Generator, optional
        Generator on ``device``.
    device : str or torch.device
        Device of the computation and of the returned tensors.
    psf_shape : PsfShape, optional
        PSF shape (Airy, defocus, astigmatism; :mod:`livespt.models.simulate.psf_shapes`)
        whose width is ``psf_sigma_um``; default: the Gaussian PSF. The localization
        precision stays the Gaussian one for ``psf_sigma_um``.
    background_patches : Tensor, optional
        Relative background per pixel and frame, broadcastable to ``(B, T, P, P)``,
        >= 0, multiplying ``camera.background_photons`` (structured and drifting
        backgrounds); default: uniform.
    blur_error_fraction : float
        Extra localization error of motion-blurred spots, >= 0: an isotropic
        Gaussian error of SD ``blur_error_fraction`` times the RMS distance (per
        axis) of the frame's sub-step positions from their mean, added to the
        localized positions (and so to the crops) but *not* to
        ``localization_sigma_um``, as a fitter that reports the static-spot
        precision of a streak would (default 0: none, no random draw).

    Returns
    -------
    PatchSequences
        Images, patch origins and the ground truth.
    """
    b = _validate.positive_int("n_sequences", n_sequences)
    t = _validate.positive_int("n_frames", n_frames)
    size = _validate.positive_int("patch_px", patch_px)
    px = _validate.positive("pixel_size_um", pixel_size_um)
    te, dt = resolve_exposure(exposure_s, frame_interval_s)
    cam = Camera() if camera is None else camera
    if not isinstance(cam, Camera):
        raise ValueError(f"camera must be a Camera, got {type(cam)!r}")
    if cam.map_shape is not None:
        raise ValueError("camera: per-pixel maps are not supported for patches")
    ph = Photophysics() if photophysics is None else photophysics
    if not isinstance(ph, Photophysics):
        raise ValueError(f"photophysics must be a Photophysics, got {type(ph)!r}")
    sigma_um = (
        _psf.psf_sigma_um(wavelength_um, numerical_aperture)
        if psf_sigma_um is None
        else _validate.positive("psf_sigma_um", psf_sigma_um)
    )
    base = _photons_per_sequence(photons, snr, b, sigma_um / px, cam)
    dev = as_device(device)
    gen = make_generator(seed, generator, dev)
    if psf_shape is not None and not isinstance(psf_shape, PsfShape):
        raise ValueError(f"psf_shape must be a PsfShape, got {type(psf_shape)!r}")
    bg_rel: Tensor | None = None
    if background_patches is not None:
        if not isinstance(background_patches, Tensor):
            raise ValueError("background_patches must be a torch.Tensor")
        try:
            bg_rel = background_patches.to(device=dev, dtype=torch.float32).expand(
                b, t, size, size).reshape(b * t, size, size)
        except RuntimeError:
            raise ValueError(f"background_patches of shape {tuple(background_patches.shape)} "
                             f"does not broadcast to {(b, t, size, size)}") from None
        if not bool((torch.isfinite(bg_rel) & (bg_rel >= 0)).all()):
            raise ValueError("background_patches must be finite and >= 0")

    start = ((torch.rand((b, 2), generator=gen, dtype=torch.float64, device=dev) - 0.5) * px)
    traj = simulate_trajectories(
        b, t, d_um2_s, dt, te, substeps=substeps, change_frames=change_frames,
        start_um=start.cpu().numpy(), confinement_radius_um=confinement_radius_um,
        generator=gen, device=dev,
    )
    emitted = _emitted_photons(torch.as_tensor(base, device=dev), t, ph, gen)

    sigma_loc = cast(Tensor, localization_precision_um(
        emitted, sigma_um, px, cam.background_photons, cam.read_noise_e
    ))
    valid = torch.isfinite(sigma_loc)
    noise = torch.randn((b, t, 2), generator=gen, dtype=torch.float64, device=dev)
    raw = traj.mean_um + noise * torch.where(valid, sigma_loc, 0.0)[..., None]
    if blur_error_fraction < 0 or not math.isfinite(blur_error_fraction):
        raise ValueError(f"blur_error_fraction must be finite and >= 0, got {blur_error_fraction}")
    if blur_error_fraction > 0:
        spread = traj.substeps_um - traj.mean_um[:, :, None, :]
        blur_sd = spread.pow(2).mean(dim=(2, 3)).sqrt()  # (B, T), per axis
        extra = torch.randn((b, t, 2), generator=gen, dtype=torch.float64, device=dev)
        raw = raw + extra * (blur_error_fraction * blur_sd * valid)[..., None]
    localized = _hold_last_valid(raw, valid)
    sigma_loc = torch.where(valid, sigma_loc, torch.full_like(sigma_loc, float("nan")))

    centre_px = torch.floor(localized / px + 0.5)  # pixel containing the localization
    origin_um = centre_px * px
    first_px = centre_px - size // 2  # global index of the patch's pixel 0

    s = traj.substeps_um.shape[2]
    local = (traj.substeps_um / px - first_px[:, :, None, :]).reshape(b * t, s, 2)
    weights = (emitted / s).reshape(b * t, 1).expand(b * t, s)
    images = torch.empty((b * t, size, size), dtype=torch.float32, device=dev)
    expected = torch.empty_like(images) if return_expected else None
    n_comp = 1 if psf_shape is None else len(psf_shape.components(sigma_um / px)[2])
    chunk = max(64, _CHUNK_PATCHES * 10 // max(10, s * n_comp))
    for k0 in range(0, b * t, chunk):
        k1 = min(b * t, k0 + chunk)
        if psf_shape is None:
            signal = _render_gaussian_spots(
                local[k0:k1, :, 0], local[k0:k1, :, 1], weights[k0:k1], (size, size),
                sigma_um / px, torch.float32,
            )
        else:
            signal = render_mixture_spots(
                local[k0:k1, :, 0], local[k0:k1, :, 1], weights[k0:k1], (size, size),
                sigma_um / px, psf_shape, torch.float32,
            )
        if expected is not None:
            expected[k0:k1] = signal
        if bg_rel is None:
            images[k0:k1] = _expose(signal, cam, gen, digitize)
        else:
            images[k0:k1] = _expose_background_tensor(
                signal, cam.background_photons * bg_rel[k0:k1], cam, gen, digitize)

    return PatchSequences(
        images=images.reshape(b, t, size, size),
        patch_origin_um=origin_um,
        true_substeps_um=traj.substeps_um,
        true_mean_um=traj.mean_um,
        localized_um=localized,
        localization_sigma_um=sigma_loc,
        d_um2_s=traj.d_um2_s,
        photons=emitted,
        pixel_size_um=px,
        frame_interval_s=dt,
        exposure_s=te,
        psf_sigma_um=sigma_um,
        expected=None if expected is None else expected.reshape(b, t, size, size),
    )


def _photons_per_sequence(
    photons: Any, snr: Any, b: int, sigma_px: float, cam: Camera
) -> np.ndarray:
    if (photons is None) == (snr is None):
        raise ValueError("photons and snr: give exactly one of them")
    name, value = ("photons", photons) if photons is not None else ("snr", snr)
    arr = _validate.finite_array(name, value)
    if arr.ndim == 0:
        arr = np.full(b, float(arr))
    if arr.shape != (b,):
        raise ValueError(f"{name} must be a scalar or have shape ({b},), got {arr.shape}")
    if not np.all(arr > 0):
        raise ValueError(f"{name} must be > 0")
    if snr is not None:
        arr = np.array([
            photons_for_snr(q, sigma_px, cam.background_photons, cam.read_noise_e) for q in arr
        ])
    return arr


def _hold_last_valid(values: Tensor, valid: Tensor) -> Tensor:
    """Carry ``values`` (B, T, 2) forward over frames where ``valid`` (B, T) is False.

    Leading invalid frames take the first valid value; a sequence with none
    keeps its own values.
    """
    t = valid.shape[1]
    frames = torch.arange(t, device=valid.device).expand_as(valid)
    last = torch.cummax(torch.where(valid, frames, -1), dim=1).values
    first = valid.to(torch.int8).argmax(dim=1, keepdim=True).expand_as(valid)
    src = torch.where(last >= 0, last, first)
    return torch.gather(values, 1, src[..., None].expand_as(values))
