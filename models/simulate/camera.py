"""Camera noise model and the one definition of signal-to-noise ratio (SNR).

Noise model
-----------
For each pixel, with expected signal photons ``s`` (from the PSF) and expected
background photons ``b`` per frame (``b = background_photons * background_map``,
optionally fluctuating from frame to frame by a log-normal factor of mean 1 and
coefficient of variation ``background_cv``, which makes the background histogram
right-skewed as in real data)::

    electrons = Poisson(s + b)                        # shot noise
    ADU       = g * electrons + N(0, g^2 r^2) + o      # read noise, gain, offset
    ADU       = clip(round(ADU), 0, 2**bit_depth - 1)  # digitisation

with read noise ``r`` in electrons, gain ``g`` in ADU per electron and offset
``o`` in ADU. "Photons" always means detected photons (photo-electrons): fold the
quantum efficiency into them. An sCMOS camera has per-pixel offset, read-noise
variance and gain maps (Huang et al. 2013, Nat. Methods 10, 653): when given
they replace the scalars (``variance_map_adu2`` is the read-noise variance in
ADU^2, i.e. ``g^2 r^2`` per pixel). So the mean and variance of a pixel are
``g (s + b) + o`` and ``g^2 (s + b + r^2)`` (plus 1/12 ADU^2 from rounding).

SNR
---
SNR is defined once, here, and everywhere else refers to this definition:

    SNR = peak / sqrt(peak + b + r^2),   peak = N * f0,

where ``N`` is the photons the particle emits per frame, ``f0`` the fraction of
them in the brightest pixel of a *static* particle centred on that pixel
(:func:`livespt.models.psf.centred_pixel_fraction`, ``erf(1/(2 sqrt(2) sigma_px))^2``),
``b`` the background photons per pixel and ``r`` the read noise in electrons:
the expected peak signal over the noise standard deviation at that pixel. Gain
and offset cancel. A moving particle's blurred peak is lower, so its apparent
SNR is lower than the nominal one. The inverse, :func:`photons_for_snr`, solves
the quadratic ``peak^2 - SNR^2 peak - SNR^2 (b + r^2) = 0`` for its positive root.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from livespt.models import _validate
from livespt.models.psf import centred_pixel_fraction
from livespt.models.simulate._common import optional_map


@dataclass(frozen=True, eq=False)
class Camera:
    """Background, shot noise, read noise, gain, offset and digitisation of a camera.

    Attributes
    ----------
    background_photons : float
        Expected background photons per pixel per frame (>= 0).
    read_noise_e : float
        Gaussian read-noise standard deviation in electrons (>= 0).
    gain_adu_per_e : float
        Gain in ADU per electron (> 0).
    offset_adu : float
        Offset (baseline) in ADU (>= 0).
    bit_depth : int
        ADC bit depth in 1..16; values are clipped to ``[0, 2**bit_depth - 1]``.
    background_map : ndarray, shape (H, W), optional
        Relative background per pixel (>= 0), multiplying ``background_photons``
        (structured background: cells, autofluorescence). Must match the image.
    background_cv : float
        Coefficient of variation (>= 0) of a log-normal, mean-1 factor drawn per
        pixel and frame that multiplies the background: over-dispersed,
        right-skewed background (0: pure Poisson background).
    offset_map_adu, variance_map_adu2, gain_map_adu_per_e : ndarray, shape (H, W), optional
        sCMOS per-pixel offset (ADU), read-noise variance (ADU^2) and gain (ADU/e),
        replacing ``offset_adu``, ``(gain * read_noise_e)**2`` and ``gain_adu_per_e``.
    """

    background_photons: float = 10.0
    read_noise_e: float = 1.5
    gain_adu_per_e: float = 1.0
    offset_adu: float = 100.0
    bit_depth: int = 16
    background_map: NDArray[np.float64] | None = field(default=None, repr=False)
    background_cv: float = 0.0
    offset_map_adu: NDArray[np.float64] | None = field(default=None, repr=False)
    variance_map_adu2: NDArray[np.float64] | None = field(default=None, repr=False)
    gain_map_adu_per_e: NDArray[np.float64] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        _validate.non_negative("background_photons", self.background_photons)
        _validate.non_negative("read_noise_e", self.read_noise_e)
        _validate.positive("gain_adu_per_e", self.gain_adu_per_e)
        _validate.non_negative("offset_adu", self.offset_adu)
        _validate.positive_int("bit_depth", self.bit_depth)
        if self.bit_depth > 16:
            raise ValueError(f"bit_depth must be <= 16 (uint16 output), got {self.bit_depth}")
        _validate.non_negative("background_cv", self.background_cv)
        maps = {
            "background_map": optional_map("background_map", self.background_map,
                                           non_negative=True),
            "offset_map_adu": optional_map("offset_map_adu", self.offset_map_adu,
                                           non_negative=True),
            "variance_map_adu2": optional_map("variance_map_adu2", self.variance_map_adu2,
                                              non_negative=True),
            "gain_map_adu_per_e": optional_map("gain_map_adu_per_e", self.gain_map_adu_per_e,
                                               positive=True),
        }
        shapes = {m.shape for m in maps.values() if m is not None}
        if len(shapes) > 1:
            raise ValueError(
                f"background_map and the sCMOS maps must share one shape, got {shapes}"
            )
        for name, value in maps.items():
            object.__setattr__(self, name, value)

    @property
    def map_shape(self) -> tuple[int, int] | None:
        """Shape ``(H, W)`` of the per-pixel maps, or None when there are none."""
        for m in (self.background_map, self.offset_map_adu, self.variance_map_adu2,
                  self.gain_map_adu_per_e):
            if m is not None:
                return (int(m.shape[0]), int(m.shape[1]))
        return None

    @property
    def max_adu(self) -> int:
        """Largest value the ADC can output."""
        return 2**self.bit_depth - 1


def expose(
    expected_photons: Tensor,
    camera: Camera,
    generator: torch.Generator,
    *,
    digitize: bool = True,
) -> Tensor:
    """Turn expected signal photons into camera counts (ADU) with all noise sources.

    Parameters
    ----------
    expected_photons : Tensor, shape (..., H, W)
        Expected detected signal photons per pixel, without background (>= 0).
    camera : Camera
        Background and noise model; per-pixel maps must have shape ``(H, W)``.
    generator : torch.Generator
        Generator on the device of ``expected_photons``.
    digitize : bool
        Round to integer ADU and clip to the ADC range (True, as a camera does);
        False returns the continuous values, e.g. to test the noise model.

    Returns
    -------
    Tensor, same shape and floating dtype as ``expected_photons``
        Counts in ADU.
    """
    if not isinstance(expected_photons, Tensor) or expected_photons.ndim < 2:
        raise ValueError("expected_photons must be a torch.Tensor of shape (..., H, W)")
    if not isinstance(camera, Camera):
        raise ValueError(f"camera must be a Camera, got {type(camera)!r}")
    shape = camera.map_shape
    if shape is not None and tuple(expected_photons.shape[-2:]) != shape:
        raise ValueError(
            f"camera maps have shape {shape} but the image is {tuple(expected_photons.shape[-2:])}"
        )
    if not bool((torch.isfinite(expected_photons) & (expected_photons >= 0)).all()):
        raise ValueError("expected_photons must be finite and >= 0")
    return _expose(expected_photons, camera, generator, digitize)


def _expose(signal: Tensor, camera: Camera, gen: torch.Generator, digitize: bool) -> Tensor:
    dev, dtype = signal.device, signal.dtype
    if not dtype.is_floating_point:
        dtype = torch.float32
        signal = signal.to(dtype)

    def as_t(a: NDArray[np.float64]) -> Tensor:
        return torch.tensor(a, dtype=dtype, device=dev)  # copy: the maps are read-only

    if camera.background_map is None and camera.background_cv == 0:
        # Poisson(s + b) = Poisson(s) + Poisson(b) exactly. A uniform b is drawn
        # by table inversion (~3x faster than torch.poisson on CPU), and the
        # signal is 0 on most pixels, where torch.poisson is cheap.
        electrons = torch.poisson(signal, generator=gen) + _poisson_uniform(
            camera.background_photons, signal.shape, gen, dtype, dev
        )
    else:
        bg: Tensor | float = camera.background_photons
        if camera.background_map is not None:
            bg = camera.background_photons * as_t(camera.background_map)
        if camera.background_cv > 0 and camera.background_photons > 0:
            s2 = math.log1p(camera.background_cv**2)
            z = torch.randn(signal.shape, generator=gen, dtype=dtype, device=dev)
            bg = bg * torch.exp(math.sqrt(s2) * z - 0.5 * s2)
        electrons = torch.poisson(signal + bg, generator=gen)

    gain: Tensor | float = camera.gain_adu_per_e
    if camera.gain_map_adu_per_e is not None:
        gain = as_t(camera.gain_map_adu_per_e)
    offset: Tensor | float = camera.offset_adu
    if camera.offset_map_adu is not None:
        offset = as_t(camera.offset_map_adu)
    read_std: Tensor | float = camera.gain_adu_per_e * camera.read_noise_e
    if camera.variance_map_adu2 is not None:
        read_std = torch.sqrt(as_t(camera.variance_map_adu2))
    adu = electrons * gain + offset
    if isinstance(read_std, Tensor) or read_std > 0:
        adu = adu + torch.randn(signal.shape, generator=gen, dtype=dtype, device=dev) * read_std
    if digitize:
        adu = torch.round(adu).clamp_(0, camera.max_adu)
    return adu


def _expose_background_tensor(signal: Tensor, background: Tensor, camera: Camera,
                              gen: torch.Generator, digitize: bool) -> Tensor:
    """:func:`_expose` with a background given per pixel *and frame* as a tensor.

    ``background`` (photons, broadcastable to ``signal``) replaces
    ``camera.background_photons`` and ``background_map`` (structured, drifting
    backgrounds of training patches); ``background_cv``, gain, offset, read noise
    and digitisation are the camera's scalars (no sCMOS maps).
    """
    dev, dtype = signal.device, signal.dtype
    bg = background.to(dtype).expand_as(signal)
    if camera.background_cv > 0:
        s2 = math.log1p(camera.background_cv**2)
        z = torch.randn(signal.shape, generator=gen, dtype=dtype, device=dev)
        bg = bg * torch.exp(math.sqrt(s2) * z - 0.5 * s2)
    electrons = torch.poisson((signal + bg).clamp_min(0.0), generator=gen)
    adu = electrons * camera.gain_adu_per_e + camera.offset_adu
    read_std = camera.gain_adu_per_e * camera.read_noise_e
    if read_std > 0:
        adu = adu + torch.randn(signal.shape, generator=gen, dtype=dtype, device=dev) * read_std
    if digitize:
        adu = torch.round(adu).clamp_(0, camera.max_adu)
    return adu


def _poisson_uniform(
    lam: float, shape: torch.Size, gen: torch.Generator, dtype: torch.dtype, dev: torch.device
) -> Tensor:
    """Poisson(lam) draws for a constant ``lam`` by inverting a tabulated CDF.

    The table spans ``lam +- (12 sqrt(lam) + 20)``, outside which the Poisson
    mass is below 1e-30, and the uniforms are float64, so the draws follow the
    Poisson law to float64 rounding.
    """
    if lam == 0:
        return torch.zeros(shape, dtype=dtype, device=dev)
    half = 12.0 * math.sqrt(lam) + 20.0
    lo, hi = max(0, math.floor(lam - half)), math.ceil(lam + half)
    k = torch.arange(lo, hi + 1, dtype=torch.float64, device=dev)
    log_pmf = k * math.log(lam) - lam - torch.lgamma(k + 1.0)
    cdf = torch.cumsum(torch.exp(log_pmf), dim=0)
    u = torch.rand(shape, generator=gen, dtype=torch.float64, device=dev)
    idx = torch.searchsorted(cdf, u, right=True).clamp_max_(cdf.numel() - 1)
    return (idx + lo).to(dtype)


def snr_of(
    photons: float, psf_sigma_px: float, background_photons: float, read_noise_e: float
) -> float:
    """SNR of a particle emitting ``photons`` per frame (definition in the module docstring).

    Parameters
    ----------
    photons : float
        Detected photons per frame, >= 0.
    psf_sigma_px : float
        PSF standard deviation in pixels, > 0.
    background_photons : float
        Background photons per pixel per frame, >= 0.
    read_noise_e : float
        Read-noise standard deviation in electrons, >= 0.

    Returns
    -------
    float
        ``peak / sqrt(peak + background + read_noise^2)``, ``peak = photons * f0``.
    """
    n = _validate.non_negative("photons", photons)
    peak = n * centred_pixel_fraction(psf_sigma_px)
    var = peak + _noise_floor(background_photons, read_noise_e)
    if var == 0:
        raise ValueError("photons, background_photons and read_noise_e are all 0: SNR undefined")
    return peak / math.sqrt(var)


def photons_for_snr(
    snr: float, psf_sigma_px: float, background_photons: float, read_noise_e: float
) -> float:
    """Photons per frame that give a particle the requested SNR (inverse of :func:`snr_of`).

    Parameters
    ----------
    snr : float
        Target signal-to-noise ratio, > 0.
    psf_sigma_px : float
        PSF standard deviation in pixels, > 0.
    background_photons : float
        Background photons per pixel per frame, >= 0.
    read_noise_e : float
        Read-noise standard deviation in electrons, >= 0.

    Returns
    -------
    float
        ``peak / f0`` with ``peak = (SNR^2 + sqrt(SNR^4 + 4 SNR^2 (b + r^2))) / 2``.
    """
    q = _validate.positive("snr", snr)
    floor = _noise_floor(background_photons, read_noise_e)
    q2 = q * q
    peak = 0.5 * (q2 + math.sqrt(q2 * q2 + 4.0 * q2 * floor))
    return peak / centred_pixel_fraction(psf_sigma_px)


def _noise_floor(background_photons: Any, read_noise_e: Any) -> float:
    b = _validate.non_negative("background_photons", background_photons)
    r = _validate.non_negative("read_noise_e", read_noise_e)
    return b + r * r


def smooth_background_map(
    shape_px: tuple[int, int],
    length_px: float,
    cv: float,
    *,
    generator: torch.Generator,
) -> NDArray[np.float64]:
    """A random, smooth, positive background map of mean 1 (for ``Camera.background_map``).

    A Gaussian random field of correlation length ``length_px`` is exponentiated
    (log-normal), so the map is positive and right-skewed like real
    autofluorescence, with coefficient of variation ``cv`` between pixels.

    Parameters
    ----------
    shape_px : tuple of int
        ``(H, W)`` in pixels.
    length_px : float
        Correlation length (standard deviation of the smoothing kernel) in pixels, > 0.
    cv : float
        Coefficient of variation of the map, >= 0.
    generator : torch.Generator
        CPU generator of the random field.

    Returns
    -------
    ndarray, shape (H, W), float64
        Map with mean 1 over the image.
    """
    h = _validate.positive_int("shape_px[0]", shape_px[0])
    w = _validate.positive_int("shape_px[1]", shape_px[1])
    ell = _validate.positive("length_px", length_px)
    c = _validate.non_negative("cv", cv)
    white = torch.randn((h, w), generator=generator, dtype=torch.float64,
                        device=generator.device).cpu()
    ky = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
    kx = torch.fft.rfftfreq(w, dtype=torch.float64)[None, :]
    kernel = torch.exp(-2.0 * math.pi**2 * ell**2 * (kx**2 + ky**2))
    field_ = torch.fft.irfft2(torch.fft.rfft2(white) * kernel, s=(h, w))
    field_ = (field_ - field_.mean()) / field_.std().clamp_min(1e-300)
    s2 = math.log1p(c * c)
    out = torch.exp(math.sqrt(s2) * field_ - 0.5 * s2)
    return (out / out.mean()).numpy()
