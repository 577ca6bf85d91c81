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

Domain randomisation (issue 10): each batch also draws its camera (gain
0.5-10 ADU/e-, offset 0-1000 ADU, read noise 0-10 e-, 16-bit, or in a quarter of
the batches 8-bit with a gain that lets bright spots clip), its motion-blur
sampling (5-50 sub-steps per exposure, exposure / interval 0.2-1), its PSF
(Gaussian, Airy, defocus or astigmatic, sigma 0.7-2 px, reported to the network
with a 10 % error), a structured (gradient, blob) and drifting background in
half of the batches, per-frame brightness fluctuation, and a misreported
localization precision (per-batch factor, 15 % log-normal). Patches are
normalised per frame (``patch_norm="frame"``), so gain and offset do not reach
the network.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from livespt.models.psf import centred_pixel_fraction
from livespt.models.simulate import Camera, Photophysics, photons_for_snr, simulate_patches
from livespt.models.simulate.psf_shapes import PsfShape
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
        Sub-steps per exposure (motion blur) of the clean-camera windows
        (validation, evaluation).
    substeps_range : tuple of int
        Sub-steps per exposure of the training windows, log-uniform per batch.
    gain_adu_per_e_range : tuple of float
        Camera gain, log-uniform (16-bit batches).
    offset_adu_range : tuple of float
        Camera offset, uniform (16-bit batches; 8-bit batches draw 0-30 ADU).
    read_noise_e_range : tuple of float
        Read noise in electrons, uniform.
    p_8bit : float
        Fraction of batches digitised to 8 bits, with a gain drawn so that the
        median spot peaks at 0.4-1.5x the range (bright spots clip).
    p_airy, p_defocus, p_astigmatic : float
        Fractions of batches with these PSF shapes (the rest: Gaussian);
        :mod:`livespt.models.simulate.psf_shapes`.
    psf_sigma_report_cv : float
        The PSF sigma given to the network is the true one times a log-normal
        factor of this CV, per batch (users know their PSF roughly).
    p_structured_background : float
        Fraction of batches with a structured, drifting background: a linear
        gradient (up to ``background_gradient_max`` relative change across the
        patch), in half of those a blob, and a per-window drift over time (log
        slope up to ``background_drift_max`` over the window) with 10 % per-frame jitter.
    background_gradient_max, background_drift_max : float
        See ``p_structured_background``.
    precision_report_cv : float
        The localization precision given to the network is the true one times a
        log-normal factor of this CV, per batch.
    blur_error_max : float
        Motion-blurred spots are localized worse than their reported (static-spot)
        precision says: an extra error of SD ``f`` times the RMS spread of the
        exposure's sub-steps, ``f`` uniform in [0, blur_error_max] per batch
        (:func:`simulate_patches` ``blur_error_fraction``). On the README movie
        (D = 1 um^2/s at 100 nm / 50 ms) the live fitter reports a median 9 nm where
        the localizations' robust error SD is 16 nm: f ~ 0.1 (the shipped
        ``vit-cpu`` was continued with f up to 0.6, from an outlier-inflated
        measurement; see docs/vit.md).
    """

    d_star_range: tuple[float, float] = (0.005, 20.0)
    snr_range: tuple[float, float] = (4.0, 60.0)
    psf_sigma_px_range: tuple[float, float] = (0.7, 2.0)
    exposure_ratio_range: tuple[float, float] = (0.2, 1.0)
    length_range: tuple[int, int] = (5, 30)
    background_photons_range: tuple[float, float] = (1.0, 100.0)
    background_cv_max: float = 0.5
    brightness_cv_max: float = 0.5
    p_blinking: float = 0.3
    p_bleach_max: float = 0.02
    patch_px: int = 15
    substeps: int = 10
    substeps_range: tuple[int, int] = (5, 50)
    gain_adu_per_e_range: tuple[float, float] = (0.5, 10.0)
    offset_adu_range: tuple[float, float] = (0.0, 1000.0)
    read_noise_e_range: tuple[float, float] = (0.0, 10.0)
    p_8bit: float = 0.25
    p_airy: float = 0.25
    p_defocus: float = 0.15
    p_astigmatic: float = 0.2
    psf_sigma_report_cv: float = 0.1
    p_structured_background: float = 0.5
    background_gradient_max: float = 0.5
    background_drift_max: float = 0.5
    precision_report_cv: float = 0.15
    blur_error_max: float = 0.25

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
    images_adu: Tensor | None = None  # (B, T, P, P) camera counts, to re-prepare
    patch_origin_um: Tensor | None = None  # (B, T, 2)
    valid: Tensor | None = None  # (B, T)
    reported_sigma_um: Tensor | None = None  # (B, T) the precision the inputs were given
    reported_psf_sigma_um: float | None = None

    def inputs_for(self, patch_norm: str) -> WindowInputs:
        """The inputs with patches normalised as ``patch_norm`` (a model's ``patch_norm``)."""
        if self.images_adu is None or self.patch_origin_um is None or self.valid is None:
            return self.inputs
        a = self.acquisition
        sig = self.sigma_um if self.reported_sigma_um is None else self.reported_sigma_um
        psf = (a["psf_sigma_um"] if self.reported_psf_sigma_um is None
               else self.reported_psf_sigma_um)
        return prepare(self.images_adu, self.patch_origin_um, self.localized_um, sig,
                       self.frames, self.valid, pixel_size_um=a["pixel_size_um"],
                       frame_interval_s=a["frame_interval_s"], exposure_s=a["exposure_s"],
                       psf_sigma_um=psf, patch_norm=patch_norm)


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
    patch_norm: str = "frame",
    camera: Camera | None = None,
    substeps: int | None = None,
    psf_shape: PsfShape | None = None,
    blur_error: float = 0.0,
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
        Draw blinking, brightness fluctuation, over-dispersed background and the
        domain randomisation (camera, sub-steps, PSF shape, structured background,
        misreported precision and PSF width); False: a clean camera, Gaussian PSF,
        ``dist.substeps``, for controlled evaluations.
    patch_norm : str
        Patch normalisation of the inputs (the model's ``ViTConfig.patch_norm``).
    camera : Camera, optional
        Fixed camera, only with ``realistic=False`` (its background replaces the drawn one).
    substeps : int, optional
        Fixed sub-steps per exposure (``realistic=False``; default ``dist.substeps``).
    psf_shape : PsfShape, optional
        Fixed PSF shape (``realistic=False``; default Gaussian).
    blur_error : float
        Fixed ``blur_error_fraction`` of :func:`simulate_patches` (``realistic=False``).

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
    bg_cv = _uniform(0.0, dist.background_cv_max, gen, dev) if realistic else 0.0
    n_sub = dist.substeps if substeps is None else int(substeps)
    shape = psf_shape
    bg_patches: Tensor | None = None
    sigma_report, psf_report = 1.0, 1.0
    if realistic:
        cam, n_sub, shape, sigma_report, psf_report = _draw_domain(
            dist, gen, dev, bg, bg_cv, snr, psf_sigma_px)
        if torch.rand(1, generator=gen, device=dev).item() < dist.p_structured_background:
            n_frames_max = length + length // 4 + 3
            bg_patches = _structured_background(n, n_frames_max, dist, gen, dev)
        blur_error = _uniform(0.0, dist.blur_error_max, gen, dev)
    else:
        cam = Camera(background_photons=bg) if camera is None else camera
    camera = cam
    photo = Photophysics(p_off=0.05 if blinking else 0.0, p_on=0.5,
                         p_bleach=_uniform(0.0, dist.p_bleach_max, gen, dev) if realistic
                         else 0.0,
                         brightness_cv=_uniform(0.0, dist.brightness_cv_max, gen, dev)
                         if realistic else 0.0)
    # Blinking drops points: simulate enough frames for ``length`` points in most windows.
    n_frames = length + (length // 4 + 3 if blinking else 0)
    if bg_patches is not None:
        bg_patches = bg_patches[:, :n_frames]
    d_um2_s = d_star.to(dev, torch.float64) * px**2 / dt
    sim = simulate_patches(
        n, n_frames, patch_px=dist.patch_px, pixel_size_um=px, frame_interval_s=dt,
        exposure_s=exposure_ratio * dt, d_um2_s=d_um2_s, snr=snr.cpu().numpy(),
        psf_sigma_um=psf_sigma_px * px, camera=camera, substeps=n_sub,
        photophysics=photo, generator=gen, device=dev, psf_shape=shape,
        background_patches=bg_patches, blur_error_fraction=blur_error,
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
    inputs = prepare(images, origin, loc, sig * sigma_report, frames, valid, pixel_size_um=px,
                     frame_interval_s=dt, exposure_s=exposure_ratio * dt,
                     psf_sigma_um=psf_sigma_px * psf_report * px, patch_norm=patch_norm)
    return Batch(
        inputs=inputs,
        log_d_star=torch.log(d_star.to(dev)).to(torch.float32),
        d_um2_s=d_um2_s,
        snr=snr.to(dev),
        localized_um=loc,
        sigma_um=sig,
        frames=frames,
        acquisition={"pixel_size_um": px, "frame_interval_s": dt,
                     "exposure_s": exposure_ratio * dt, "psf_sigma_um": psf_sigma_px * px,
                     "substeps": float(n_sub)},
        images_adu=images,
        patch_origin_um=origin,
        valid=valid,
        reported_sigma_um=sig * sigma_report,
        reported_psf_sigma_um=psf_sigma_px * psf_report * px,
    )


def _draw_domain(dist: TrainingDistribution, gen: torch.Generator, dev: torch.device,
                 bg: float, bg_cv: float, snr: Tensor, psf_sigma_px: float,
                 ) -> tuple[Camera, int, PsfShape | None, float, float]:
    """One batch's camera, sub-steps, PSF shape and the errors of the reported precision and PSF."""
    rn = _uniform(*dist.read_noise_e_range, gen, dev)
    if torch.rand(1, generator=gen, device=dev).item() < dist.p_8bit:
        offset = _uniform(0.0, 30.0, gen, dev)
        snr_med = float(snr.median())
        peak = photons_for_snr(snr_med, psf_sigma_px, bg, rn) * centred_pixel_fraction(
            psf_sigma_px)
        u = float(_log_uniform(0.4, 1.5, 1, gen, dev).item())
        gain = max(0.02, u * (250.0 - offset) / (bg + peak))
        bits = 8
    else:
        gain = float(_log_uniform(*dist.gain_adu_per_e_range, 1, gen, dev).item())
        offset = _uniform(*dist.offset_adu_range, gen, dev)
        bits = 16
    cam = Camera(background_photons=bg, background_cv=bg_cv, read_noise_e=rn,
                 gain_adu_per_e=gain, offset_adu=offset, bit_depth=bits)
    lo, hi = dist.substeps_range
    n_sub = round(float(_log_uniform(float(lo), float(hi), 1, gen, dev).item()))
    r = torch.rand(1, generator=gen, device=dev).item()
    shape: PsfShape | None = None
    if r < dist.p_airy:
        shape = PsfShape("airy", ring_weight=_uniform(0.05, 0.12, gen, dev))
    elif r < dist.p_airy + dist.p_defocus:
        shape = PsfShape("defocus", ring_weight=_uniform(0.2, 0.6, gen, dev),
                         ring_radius=_uniform(1.2, 2.5, gen, dev),
                         core_scale=_uniform(1.0, 1.4, gen, dev))
    elif r < dist.p_airy + dist.p_defocus + dist.p_astigmatic:
        a = _uniform(0.05, 0.35, gen, dev)
        shape = PsfShape("astigmatic",
                         astigmatism=a if torch.rand(1, generator=gen, device=dev).item() < 0.5
                         else 1.0 / (1.0 + a) - 1.0)
    sig_f = math.exp(dist.precision_report_cv * torch.randn(1, generator=gen, device=dev).item())
    psf_f = math.exp(dist.psf_sigma_report_cv * torch.randn(1, generator=gen, device=dev).item())
    return cam, n_sub, shape, sig_f, psf_f


def _structured_background(n: int, t: int, dist: TrainingDistribution, gen: torch.Generator,
                           dev: torch.device) -> Tensor:
    """Relative background (n, t, P, P): gradient, sometimes a blob, drift and jitter; mean ~1."""
    p = dist.patch_px
    g = dist.background_gradient_max
    idx = (torch.arange(p, dtype=torch.float32, device=dev) - p // 2) / p
    gx = (torch.rand(n, 1, 1, generator=gen, device=dev) * 2 - 1) * g
    gy = (torch.rand(n, 1, 1, generator=gen, device=dev) * 2 - 1) * g
    rel = 1.0 + gx * idx[None, None, :] + gy * idx[None, :, None]  # (n, P, P)
    if torch.rand(1, generator=gen, device=dev).item() < 0.5:
        cx = (torch.rand(n, 1, 1, generator=gen, device=dev) * 2 - 1) * p
        cy = (torch.rand(n, 1, 1, generator=gen, device=dev) * 2 - 1) * p
        amp = torch.rand(n, 1, 1, generator=gen, device=dev)
        wid = 2.0 + 4.0 * torch.rand(n, 1, 1, generator=gen, device=dev)
        xx = torch.arange(p, dtype=torch.float32, device=dev) - p // 2
        r2 = (xx[None, None, :] - cx) ** 2 + (xx[None, :, None] - cy) ** 2
        rel = rel + amp * torch.exp(-r2 / (2 * wid**2))
    tt = torch.linspace(-0.5, 0.5, t, device=dev)
    slope = (torch.rand(n, 1, generator=gen, device=dev) * 2 - 1) * dist.background_drift_max
    drift = torch.exp(slope * tt[None, :] + 0.1 * torch.randn(n, t, generator=gen, device=dev))
    return (rel[:, None] * drift[..., None, None]).clamp_min(0.0)
