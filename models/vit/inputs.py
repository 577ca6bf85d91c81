"""From a window of localized points and their patches to the network's dimensionless inputs.

One function, :func:`prepare`, serves training, evaluation and the live server,
so the network always sees inputs made the same way. A *window* is a run of
localized points of one track (not of frames: a frame where the particle was
not found is simply absent, and the frame gap is one of the inputs).

Everything is converted to the units of the images before it enters the
network: positions in pixels, time in frames, ``D* = D dt / px^2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from livespt.models.features import trajectory_features
from livespt.models.units import um_to_px

N_GEOM = 6
"""Per-point placement inputs: position relative to the window mean (2, px / 10),
sub-pixel offset of the localization in its patch (2, px), log precision (px),
frames skipped since the previous point."""

N_ACQ = 3
"""Acquisition inputs: exposure / interval, PSF sigma (px), median log precision (px)."""

_CLAMP = (-3.0, 10.0)

PATCH_NORMS = ("window", "frame")
"""How patches are normalised: ``window`` (the first shipped weights: border median
removed per patch, divided by the window's median spot intensity) or ``frame``
(each patch on its own: border median removed, divided by its border's noise,
``asinh``-compressed; gain, offset and the other frames do not matter)."""

N_STATS = 5
"""Per-window patch statistics (medians over the window's points) used by the
out-of-distribution guard (:mod:`livespt.models.vit.ood`): log peak over noise,
spot width (px), saturated fraction, background structure (log border noise over
neighbour-difference noise), log noise (ADU)."""

_FRAME_SCALE = 4.0  # asinh(z / 4): noise ~ +-0.25, a spot at SNR 60 ~ 3.4


@dataclass
class WindowInputs:
    """Dimensionless network inputs for B windows of up to T points (see :class:`DiffusionViT`)."""

    images: Tensor  # (B, T, P, P) float32
    geometry: Tensor  # (B, T, N_GEOM) float32
    valid: Tensor  # (B, T) bool
    features: Tensor  # (B, n_features) float32
    acquisition: Tensor  # (B, N_ACQ) float32
    stats: Tensor | None = None  # (B, N_STATS) float32, for the OOD guard

    def to(self, device: torch.device | str) -> WindowInputs:
        """The same inputs on another device."""
        return WindowInputs(
            images=self.images.to(device), geometry=self.geometry.to(device),
            valid=self.valid.to(device), features=self.features.to(device),
            acquisition=self.acquisition.to(device),
            stats=None if self.stats is None else self.stats.to(device))

    def __len__(self) -> int:
        return int(self.valid.shape[0])


def normalise_patches(images_adu: Tensor, valid: Tensor) -> Tensor:
    """Subtract each patch's background and scale each window to unit spot intensity.

    Parameters
    ----------
    images_adu : Tensor, shape (B, T, P, P)
        Camera counts (any offset and gain).
    valid : Tensor, shape (B, T), bool
        Points that exist.

    Returns
    -------
    Tensor, shape (B, T, P, P), float32
        Background (median of the patch border, per patch) removed; divided by
        the window's median spot intensity (sum over the central 5 x 5 pixels),
        times 6 so a spot's peak is of order 1; clamped to [-3, 10]. Per-window
        (not per-frame) scaling keeps the SNR visible; intensity fluctuations
        and blinking are left to the network, which is trained with them.
    """
    x = images_adu.to(torch.float32)
    p = x.shape[-1]
    border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., 1:-1, 0], x[..., 1:-1, -1]], dim=-1)
    x = x - border.median(dim=-1).values[..., None, None]
    c, h = p // 2, min(2, p // 2)
    amp = x[..., c - h:c + h + 1, c - h:c + h + 1].sum(dim=(-1, -2))  # (B, T)
    amp = torch.where(valid, amp, torch.full_like(amp, float("nan")))
    scale = torch.nanmedian(amp, dim=1).values.clamp_min(1e-3)
    scale = torch.nan_to_num(scale, nan=1.0)
    x = x / scale[:, None, None, None] * 6.0
    x = torch.where(valid[..., None, None], x, torch.zeros_like(x))
    return x.clamp(*_CLAMP)


def _border(x: Tensor) -> Tensor:
    return torch.cat([x[..., 0, :], x[..., -1, :], x[..., 1:-1, 0], x[..., 1:-1, -1]], dim=-1)


def frame_background_and_noise(images_adu: Tensor) -> tuple[Tensor, Tensor]:
    """Robust background (ADU) and noise SD (ADU) of each patch, from its border alone.

    The background is the border's median; the noise SD is the RMS of the 90 %
    of border pixels closest to it, rescaled to a Gaussian SD (a spot's tail or
    a neighbour in the border does not inflate it), with 1/12 ADU^2 of rounding
    added and a floor of 0.5 ADU (integer counts at gains well below 1 ADU/e).

    Parameters
    ----------
    images_adu : Tensor, shape (..., P, P)

    Returns
    -------
    background, noise : Tensor, shape (...), float32
    """
    x = images_adu.to(torch.float32)
    border = _border(x)
    bg = border.median(dim=-1).values
    dev = (border - bg[..., None]).abs()
    m = dev.shape[-1]
    keep = max(2, round(0.9 * m))
    low = torch.topk(dev, keep, dim=-1, largest=False).values
    # Variance of a standard Gaussian truncated to its central 90 %: 0.6227.
    var = low.pow(2).mean(-1) / 0.6227 + 1.0 / 12.0
    return bg, var.sqrt().clamp_min(0.5)


def normalise_patches_per_frame(images_adu: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Each patch on its own: ``asinh((x - background) / (4 noise))``, and its statistics.

    Gain and offset cancel (both background and noise scale with them), and a
    frame's normalised patch depends on that frame's patch only, never on the
    other frames of the window (so per-frame tokens can be cached).

    Parameters
    ----------
    images_adu : Tensor, shape (B, T, P, P)
        Camera counts (any offset and gain).
    valid : Tensor, shape (B, T), bool

    Returns
    -------
    images : Tensor, shape (B, T, P, P), float32
        Zero where not valid.
    stats : Tensor, shape (B, N_STATS), float32
        Per-window medians over valid points of: log peak over noise (central
        5 x 5), spot width (px, second moment of the part above 1 noise SD),
        saturated (>= 3 pixels at the patch maximum, itself > 5 noise SD above
        the background), background structure (log of the border's noise SD over
        the SD of differences of neighbouring border pixels: ~0 for a flat
        background, large for an edge), log noise SD (ADU).
    """
    x = images_adu.to(torch.float32)
    p = x.shape[-1]
    bg, noise = frame_background_and_noise(x)
    z = (x - bg[..., None, None]) / noise[..., None, None]
    out = torch.asinh(z / _FRAME_SCALE)
    out = torch.where(valid[..., None, None], out, torch.zeros_like(out))
    c, h = p // 2, min(2, p // 2)
    peak = z[..., c - h:c + h + 1, c - h:c + h + 1].amax(dim=(-1, -2))
    w = (z - 1.0).clamp_min(0.0)
    idx = torch.arange(p, dtype=torch.float32, device=x.device)
    tot = w.sum(dim=(-1, -2)).clamp_min(1e-6)
    mx = (w * idx).sum(dim=(-1, -2)) / tot
    my = (w * idx[:, None]).sum(dim=(-1, -2)) / tot
    r2 = (idx - mx[..., None, None]) ** 2 + (idx[:, None] - my[..., None, None]) ** 2
    width = ((w * r2).sum(dim=(-1, -2)) / tot / 2.0).sqrt()
    top = x.amax(dim=(-1, -2))
    n_top = (x >= top[..., None, None]).sum(dim=(-1, -2))
    saturated = ((n_top >= 3) & (peak > 5.0)).to(torch.float32)
    # Background structure: the border's spread over its pixel-to-pixel noise (robust SD
    # of differences of neighbours along the ring, / sqrt 2): ~1 for a flat background,
    # large for an edge or a steep gradient, which the spread absorbs but differences do not.
    ring = torch.cat([x[..., 0, :], x[..., 1:, -1], x[..., -1, :-1].flip(-1),
                      x[..., 1:-1, 0].flip(-1)], dim=-1)
    steps = (ring - torch.roll(ring, 1, dims=-1)).abs()
    local = (1.4826 / 1.4142) * steps.median(dim=-1).values
    structure = torch.log(noise / torch.sqrt(local**2 + 1.0 / 12.0).clamp_min(0.5))
    per_frame = torch.stack([torch.log(peak.clamp_min(0.5)), width, saturated, structure,
                             torch.log(noise)], dim=-1)  # (B, T, N_STATS)
    per_frame = torch.where(valid[..., None], per_frame, torch.full_like(per_frame, float("nan")))
    stats = torch.nan_to_num(torch.nanmedian(per_frame, dim=1).values, nan=0.0)
    return out, stats


def prepare(
    images_adu: Tensor,
    patch_origin_um: Tensor,
    localized_um: Tensor,
    sigma_um: Tensor,
    frames: Tensor,
    valid: Tensor,
    *,
    pixel_size_um: float,
    frame_interval_s: float,
    exposure_s: float,
    psf_sigma_um: float,
    patch_norm: str = "window",
) -> WindowInputs:
    """Network inputs for B windows of up to T points, padded at the end.

    Parameters
    ----------
    images_adu : Tensor, shape (B, T, P, P)
        Patch of each point, centred on the pixel containing its localization.
    patch_origin_um : Tensor, shape (B, T, 2)
        Position (x, y) in um of each patch's centre pixel.
    localized_um : Tensor, shape (B, T, 2)
        Localized positions in um.
    sigma_um : Tensor, shape (B, T)
        Localization precision per axis in um (NaN: unknown; the window's median
        stands in).
    frames : Tensor, shape (B, T), int
        Frame index of each point.
    valid : Tensor, shape (B, T), bool
        True for real points; each row's valid points must come first.
    pixel_size_um, frame_interval_s, exposure_s, psf_sigma_um : float
        The acquisition (um, s, s, um).
    patch_norm : str
        ``window`` or ``frame`` (:data:`PATCH_NORMS`): the normalisation the model
        was trained with (its ``ViTConfig.patch_norm``).

    Returns
    -------
    WindowInputs
    """
    if patch_norm not in PATCH_NORMS:
        raise ValueError(f"patch_norm must be one of {PATCH_NORMS}, got {patch_norm!r}")
    px = float(pixel_size_um)
    dev = images_adu.device
    valid = valid.to(torch.bool)
    vf = valid.to(torch.float64)
    n = vf.sum(1).clamp_min(1.0)
    loc = um_to_px(localized_um.to(torch.float64), px)
    loc = torch.where(valid[..., None], loc, torch.zeros_like(loc))
    mean = (loc * vf[..., None]).sum(1) / n[:, None]
    rel = (loc - mean[:, None, :]) / 10.0
    offset = loc - um_to_px(patch_origin_um.to(torch.float64), px)
    sig = um_to_px(sigma_um.to(torch.float64), px)
    sig = torch.where(valid & torch.isfinite(sig), sig, torch.full_like(sig, float("nan")))
    med = torch.nanmedian(sig, dim=1).values
    med = torch.nan_to_num(med, nan=0.3).clamp(1e-3, 10.0)
    sig = torch.where(torch.isfinite(sig), sig, med[:, None]).clamp(1e-3, 10.0)
    fr = frames.to(torch.float64)
    gap = torch.zeros_like(fr)
    gap[:, 1:] = (fr[:, 1:] - fr[:, :-1] - 1.0).clamp(0.0, 10.0)
    geometry = torch.stack(
        [rel[..., 0], rel[..., 1], offset[..., 0], offset[..., 1], torch.log(sig), gap], dim=-1)
    geometry = torch.where(valid[..., None], geometry, torch.zeros_like(geometry))
    feats = trajectory_features(torch.where(valid[..., None], loc, mean[:, None, :]), 1.0,
                                valid=valid)
    anchor = _one_step_anchor(loc, fr, valid, sig, exposure_s / frame_interval_s)
    feats = torch.cat([feats.to(torch.float64), anchor.to(feats.device)], dim=1)
    acq = torch.stack([
        torch.full_like(med, exposure_s / frame_interval_s),
        torch.full_like(med, um_to_px(psf_sigma_um, px)),
        torch.log(med),
    ], dim=1)
    framed, stats = normalise_patches_per_frame(images_adu, valid)
    return WindowInputs(
        images=framed if patch_norm == "frame" else normalise_patches(images_adu, valid),
        geometry=geometry.to(torch.float32),
        valid=valid,
        features=torch.nan_to_num(feats.to(torch.float32), nan=0.0, posinf=0.0, neginf=0.0),
        acquisition=acq.to(torch.float32).to(dev),
        stats=stats,
    )


def _one_step_anchor(loc_px: Tensor, frames: Tensor, valid: Tensor, sigma_px: Tensor,
                     exposure_ratio: float) -> Tensor:
    """Two classical summary inputs: log of a sigma-known one-step D* estimate, and its floor flag.

    ``D1 = mean over steps and axes of (dx^2 - 2 sigma^2) / (2 (g - 2 R))`` with
    ``g`` the frames spanned by the step and ``R = exposure / (6 interval)`` the
    blur coefficient: unbiased for pure diffusion, but negative for slow noisy
    windows, so it enters as ``log(max(D1, 1e-3))`` plus a flag for the floor.
    The network refines this anchor rather than learning an estimator from scratch.
    """
    r = exposure_ratio / 6.0
    step_ok = valid[:, 1:] & valid[:, :-1]
    dx2 = ((loc_px[:, 1:] - loc_px[:, :-1]) ** 2).sum(-1)  # both axes
    s2 = (sigma_px[:, 1:] ** 2 + sigma_px[:, :-1] ** 2) / 2.0
    g = (frames[:, 1:] - frames[:, :-1]).to(torch.float64).clamp_min(1.0)
    per_step = (dx2 / 2.0 - 2.0 * s2) / (2.0 * (g - 2.0 * r))
    w = step_ok.to(torch.float64)
    d1 = (per_step * w).sum(1) / w.sum(1).clamp_min(1.0)
    floor = 1e-3
    return torch.stack([torch.log(d1.clamp_min(floor)), (d1 <= floor).to(torch.float64)], dim=1)


def concat_inputs(parts: list[WindowInputs]) -> WindowInputs:
    """Stack inputs of several callers along the batch axis, padding shorter windows.

    Windows shorter than the longest are padded at the end with invalid points
    (masked out of attention), so callers with different window lengths share
    one forward pass.
    """
    if not parts:
        raise ValueError("parts is empty")
    t = max(int(p.valid.shape[1]) for p in parts)

    def pad(x: Tensor) -> Tensor:
        extra = t - x.shape[1]
        if extra == 0:
            return x
        shape = (x.shape[0], extra, *x.shape[2:])
        return torch.cat([x, torch.zeros(shape, dtype=x.dtype, device=x.device)], dim=1)

    return WindowInputs(
        images=torch.cat([pad(p.images) for p in parts]),
        geometry=torch.cat([pad(p.geometry) for p in parts]),
        valid=torch.cat([pad(p.valid) for p in parts]),
        features=torch.cat([p.features for p in parts]),
        acquisition=torch.cat([p.acquisition for p in parts]),
        stats=(torch.cat([p.stats for p in parts if p.stats is not None])
               if all(p.stats is not None for p in parts) else None),
    )
