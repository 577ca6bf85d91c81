"""Full-frame single-particle tracking movies with ground truth.

Each particle follows the Brownian path of :mod:`livespt.models.simulate.trajectories`;
each of its ``S`` sub-steps inside an exposure is rendered through the
pixel-integrated Gaussian PSF (:mod:`livespt.models.psf`) with ``photons / S`` photons,
so the frame integrates the motion blur. Photophysics
(:mod:`livespt.models.simulate.photophysics`) sets the photons per frame, and the camera
(:mod:`livespt.models.simulate.camera`) adds background, shot and read noise, gain,
offset and 16-bit digitisation. Frames are rendered in chunks so memory stays
bounded for long movies.

Pixel convention: pixel ``(i, j)`` (row, column) is centred at
``x = j * pixel_size_um, y = i * pixel_size_um`` and covers
``[j - 1/2, j + 1/2) x [i - 1/2, i + 1/2)`` pixels, so the field of view spans
``[-1/2, W - 1/2) x [-1/2, H - 1/2)`` pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from numpy.typing import NDArray
from torch import Tensor

from livespt.models import _validate
from livespt.models import psf as _psf
from livespt.models.psf import _render_gaussian_spots
from livespt.models.simulate._common import (
    Device,
    as_device,
    make_generator,
    positions_array,
    shape_2d,
)
from livespt.models.simulate.camera import Camera, _expose, photons_for_snr, snr_of
from livespt.models.simulate.photophysics import Photophysics, _emitted_photons
from livespt.models.simulate.trajectories import (
    Trajectories,
    diffusion_schedule,
    effective_blur_coefficient,
    resolve_exposure,
    simulate_trajectories,
)

# Working memory allowed for one chunk of frames (PSF factors, images, noise).
_CHUNK_BYTES = 128 * 2**20
# Bytes of working memory per (spot, pixel) pair while rendering: the dense
# float32 PSF factors EX, EY and the photon-weighted copy of EY.
_BYTES_PER_SPOT_EDGE = 12
_BYTES_PER_PIXEL = 24

GROUND_TRUTH_COLUMNS = ("particle_id", "frame", "x_um", "y_um", "d_um2_s", "photons")


@dataclass(frozen=True, eq=False)
class MovieConfig:
    """Everything that defines a simulated movie, in physical units (validated on creation).

    Attributes
    ----------
    shape_px : tuple of int
        ``(height, width)`` of the frames in pixels.
    n_frames : int
        Number of frames, >= 1.
    n_particles : int
        Number of particles, >= 1.
    pixel_size_um : float
        Pixel size in um (sample plane), > 0.
    frame_interval_s : float
        Time between frame starts in s, > 0.
    exposure_s : float, optional
        Exposure in s, ``0 < exposure_s <= frame_interval_s``; default: the interval.
    d_um2_s : float or array_like
        Diffusion coefficient in um^2/s, >= 0: a scalar, one per particle
        ``(P,)``, or piecewise constant ``(n_segments,)`` / ``(P, n_segments)``
        together with ``change_frames``.
    change_frames : sequence of int
        Frames where D changes; segment ``k`` applies from ``change_frames[k-1]`` on.
    substeps : int
        Sub-steps per exposure used to render motion blur, >= 1.
    psf_sigma_um : float, optional
        PSF standard deviation in um; default ``0.21 wavelength_um / numerical_aperture``.
    wavelength_um : float
        Emission wavelength in um (used when ``psf_sigma_um`` is None).
    numerical_aperture : float
        Objective NA (used when ``psf_sigma_um`` is None).
    photons : float or array_like, optional
        Detected photons per particle per frame while emitting, scalar or ``(P,)``.
    snr : float, optional
        Signal-to-noise ratio (definition in :mod:`livespt.models.simulate.camera`); give
        exactly one of ``photons`` and ``snr``.
    camera : Camera
        Background and noise model.
    photophysics : Photophysics
        Blinking, bleaching and brightness fluctuation.
    confinement_radius_um : float, optional
        Radius in um of a reflecting disc around each particle's start.
    start_um : array_like, shape (P, 2), optional
        Start positions (x, y) in um; default uniform over the field of view.
    chunk_frames : int, optional
        Frames rendered at once; default from a 128 MiB working-memory budget.
    """

    shape_px: tuple[int, int] = (512, 512)
    n_frames: int = 100
    n_particles: int = 50
    pixel_size_um: float = 0.1
    frame_interval_s: float = 0.05
    exposure_s: float | None = None
    d_um2_s: Any = 0.1
    change_frames: Sequence[int] = ()
    substeps: int = 10
    psf_sigma_um: float | None = None
    wavelength_um: float = 0.6
    numerical_aperture: float = 1.4
    photons: Any = None
    snr: float | None = None
    camera: Camera = field(default_factory=Camera)
    photophysics: Photophysics = field(default_factory=Photophysics)
    confinement_radius_um: float | None = None
    start_um: Any = field(default=None, repr=False)
    chunk_frames: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape_px", shape_2d("shape_px", self.shape_px))
        _validate.positive_int("n_frames", self.n_frames)
        _validate.positive_int("n_particles", self.n_particles)
        _validate.positive("pixel_size_um", self.pixel_size_um)
        resolve_exposure(self.exposure_s, self.frame_interval_s)
        diffusion_schedule(self.d_um2_s, self.n_particles, self.n_frames, self.change_frames)
        object.__setattr__(self, "change_frames", tuple(int(c) for c in self.change_frames))
        _validate.positive_int("substeps", self.substeps)
        if self.psf_sigma_um is not None:
            _validate.positive("psf_sigma_um", self.psf_sigma_um)
        else:
            _psf.psf_sigma_um(self.wavelength_um, self.numerical_aperture)
        if (self.photons is None) == (self.snr is None):
            raise ValueError("photons and snr: give exactly one of them")
        if self.snr is not None:
            _validate.positive("snr", self.snr)
        else:
            self.photons_per_particle()
        if not isinstance(self.camera, Camera):
            raise ValueError(f"camera must be a Camera, got {type(self.camera)!r}")
        shape = self.camera.map_shape
        if shape is not None and shape != self.shape_px:
            raise ValueError(f"camera maps have shape {shape}, but shape_px is {self.shape_px}")
        if not isinstance(self.photophysics, Photophysics):
            raise ValueError(
                f"photophysics must be a Photophysics, got {type(self.photophysics)!r}"
            )
        if self.confinement_radius_um is not None:
            _validate.positive("confinement_radius_um", self.confinement_radius_um)
        if self.start_um is not None:
            positions_array("start_um", self.start_um, self.n_particles)
        if self.chunk_frames is not None:
            _validate.positive_int("chunk_frames", self.chunk_frames)

    @property
    def sigma_um(self) -> float:
        """PSF standard deviation in um (given, or from wavelength and NA)."""
        if self.psf_sigma_um is not None:
            return float(self.psf_sigma_um)
        return _psf.psf_sigma_um(self.wavelength_um, self.numerical_aperture)

    @property
    def sigma_px(self) -> float:
        """PSF standard deviation in pixels."""
        return self.sigma_um / self.pixel_size_um

    @property
    def exposure(self) -> float:
        """Exposure in s (the frame interval when ``exposure_s`` is None)."""
        return resolve_exposure(self.exposure_s, self.frame_interval_s)[0]

    @property
    def blur_coefficient(self) -> float:
        """Exact blur coefficient R of the simulated sub-step averaging."""
        return effective_blur_coefficient(self.exposure, self.frame_interval_s, self.substeps)

    def photons_per_particle(self) -> NDArray[np.float64]:
        """Photons per frame of each particle while it emits, shape ``(P,)``."""
        if self.snr is not None:
            n = photons_for_snr(self.snr, self.sigma_px, self.camera.background_photons,
                                self.camera.read_noise_e)
            return np.full(self.n_particles, n)
        arr = _validate.finite_array("photons", self.photons)
        if arr.ndim == 0:
            arr = np.full(self.n_particles, float(arr))
        if arr.shape != (self.n_particles,):
            raise ValueError(f"photons must be a scalar or have shape ({self.n_particles},), "
                             f"got {arr.shape}")
        if not np.all(arr > 0):
            raise ValueError("photons must be > 0")
        return arr

    def nominal_snr(self) -> NDArray[np.float64]:
        """SNR of each particle (:mod:`livespt.models.simulate.camera`), shape ``(P,)``."""
        return np.array([
            snr_of(n, self.sigma_px, self.camera.background_photons, self.camera.read_noise_e)
            for n in self.photons_per_particle()
        ])


@dataclass(frozen=True, eq=False)
class Movie:
    """A simulated movie and its ground truth.

    Attributes
    ----------
    frames : ndarray, shape (T, H, W), uint16
        Camera counts in ADU.
    ground_truth : pandas.DataFrame
        Columns ``particle_id, frame, x_um, y_um, d_um2_s, photons``: one row per
        particle and frame whose exposure-mean position lies in the field of
        view; ``photons`` is the expected photons emitted that frame (0 while off
        or bleached).
    trajectories : Trajectories
        Full positions, also outside the field of view (um, on the device used).
    photons : Tensor, shape (P, T), float64
        Expected photons emitted per particle and frame.
    config : MovieConfig
        The configuration that produced the movie.
    expected : ndarray, shape (T, H, W), float32, optional
        Noise-free expected signal photons per pixel (no background), when asked for.
    """

    frames: NDArray[np.uint16]
    ground_truth: pd.DataFrame
    trajectories: Trajectories
    photons: Tensor
    config: MovieConfig
    expected: NDArray[np.float32] | None = None


def render_expected(
    substeps_um: Tensor,
    photons: Tensor,
    shape_px: tuple[int, int],
    pixel_size_um: float,
    psf_sigma_um: float,
    *,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Noise-free expected signal photons per pixel of blurred particles.

    Parameters
    ----------
    substeps_um : Tensor, shape (P, T, S, 2)
        Sub-step positions (x, y) in um (``Trajectories.substeps_um``).
    photons : Tensor, shape (P, T)
        Photons emitted per particle and frame, spread evenly over the sub-steps.
    shape_px : tuple of int
        ``(height, width)`` in pixels.
    pixel_size_um : float
        Pixel size in um, > 0.
    psf_sigma_um : float
        PSF standard deviation in um, > 0.
    dtype : torch.dtype
        Dtype of the result (float64: photon sums exact to ~1e-12).

    Returns
    -------
    Tensor, shape (T, H, W)
        Expected photons per pixel, without background; light falling outside
        the field of view is lost, as on a camera.
    """
    if not isinstance(substeps_um, Tensor) or substeps_um.ndim != 4 or substeps_um.shape[-1] != 2:
        raise ValueError("substeps_um must be a torch.Tensor of shape (P, T, S, 2)")
    if not isinstance(photons, Tensor) or tuple(photons.shape) != tuple(substeps_um.shape[:2]):
        raise ValueError(f"photons must be a torch.Tensor of shape {tuple(substeps_um.shape[:2])}")
    if not bool(torch.isfinite(substeps_um).all()):
        raise ValueError("substeps_um contains NaN or infinite values")
    if not bool((torch.isfinite(photons) & (photons >= 0)).all()):
        raise ValueError("photons must be finite and >= 0")
    shape = shape_2d("shape_px", shape_px)
    px = _validate.positive("pixel_size_um", pixel_size_um)
    sigma_px = _validate.positive("psf_sigma_um", psf_sigma_um) / px
    return _render_frames(substeps_um, photons.to(substeps_um.device), shape, px, sigma_px, dtype)


def _render_frames(
    sub_um: Tensor,
    photons: Tensor,
    shape: tuple[int, int],
    px: float,
    sigma_px: float,
    dtype: torch.dtype,
) -> Tensor:
    p, t, s, _ = sub_um.shape
    # (P, T, S, 2) -> one image per frame, P*S spots of photons/S each.
    pos = (sub_um / px).permute(1, 0, 2, 3).reshape(t, p * s, 2)
    w = (photons / s).T[:, :, None].expand(t, p, s).reshape(t, p * s)
    return _render_gaussian_spots(pos[..., 0], pos[..., 1], w, shape, sigma_px, dtype)


def simulate_movie(
    config: MovieConfig,
    seed: int = 0,
    device: Device = "cpu",
    *,
    generator: torch.Generator | None = None,
    return_expected: bool = False,
) -> Movie:
    """Simulate a movie of diffusing particles as a camera records it.

    Parameters
    ----------
    config : MovieConfig
        What to simulate.
    seed : int
        Seed of every random draw (ignored when ``generator`` is given). The same
        seed on the same kind of device gives the same movie.
    device : str or torch.device
        Device for the computation ("cpu", "cuda", ...); outputs come back as numpy.
    generator : torch.Generator, optional
        Generator on ``device`` to draw from instead of a fresh seeded one.
    return_expected : bool
        Also return the noise-free expected signal (``Movie.expected``).

    Returns
    -------
    Movie
        Frames (uint16), ground truth, trajectories and photons per frame.
    """
    if not isinstance(config, MovieConfig):
        raise ValueError(f"config must be a MovieConfig, got {type(config)!r}")
    dev = as_device(device)
    gen = make_generator(seed, generator, dev)
    c = config
    h, w = c.shape_px
    px = c.pixel_size_um
    p, t = c.n_particles, c.n_frames

    if c.start_um is None:
        u = torch.rand((p, 2), generator=gen, dtype=torch.float64, device=dev)
        extent = torch.tensor([w, h], dtype=torch.float64, device=dev)
        start: Any = ((u * extent - 0.5) * px).cpu().numpy()
    else:
        start = c.start_um
    traj = simulate_trajectories(
        p, t, c.d_um2_s, c.frame_interval_s, c.exposure,
        substeps=c.substeps, change_frames=c.change_frames, start_um=start,
        confinement_radius_um=c.confinement_radius_um, generator=gen, device=dev,
    )
    base = torch.as_tensor(c.photons_per_particle(), dtype=torch.float64, device=dev)
    photons = _emitted_photons(base, t, c.photophysics, gen)

    frames = np.empty((t, h, w), dtype=np.uint16)
    expected = np.empty((t, h, w), dtype=np.float32) if return_expected else None
    chunk = c.chunk_frames or _auto_chunk(p * c.substeps, h, w)
    for t0 in range(0, t, chunk):
        t1 = min(t, t0 + chunk)
        signal = _render_frames(traj.substeps_um[:, t0:t1], photons[:, t0:t1], (h, w), px,
                                c.sigma_px, torch.float32)
        if expected is not None:
            expected[t0:t1] = signal.cpu().numpy()
        adu = _expose(signal, c.camera, gen, digitize=True)
        frames[t0:t1] = adu.to(torch.int32).cpu().numpy().astype(np.uint16)

    return Movie(
        frames=frames,
        ground_truth=_ground_truth(traj, photons, c),
        trajectories=traj,
        photons=photons,
        config=c,
        expected=expected,
    )


def _auto_chunk(n_spots: int, h: int, w: int) -> int:
    per_frame = _BYTES_PER_SPOT_EDGE * n_spots * (h + w + 2) + _BYTES_PER_PIXEL * h * w
    return int(max(1, min(256, _CHUNK_BYTES // per_frame)))


def _ground_truth(traj: Trajectories, photons: Tensor, c: MovieConfig) -> pd.DataFrame:
    h, w = c.shape_px
    mean = traj.mean_um.cpu().numpy()
    x_px, y_px = mean[..., 0] / c.pixel_size_um, mean[..., 1] / c.pixel_size_um
    inside = (x_px >= -0.5) & (x_px < w - 0.5) & (y_px >= -0.5) & (y_px < h - 0.5)
    pid, frame = np.nonzero(inside)  # row-major: sorted by particle, then frame
    return pd.DataFrame({
        "particle_id": pid.astype(np.int64),
        "frame": frame.astype(np.int64),
        "x_um": mean[pid, frame, 0],
        "y_um": mean[pid, frame, 1],
        "d_um2_s": traj.d_um2_s.cpu().numpy()[pid, frame],
        "photons": photons.cpu().numpy()[pid, frame],
    }, columns=list(GROUND_TRUTH_COLUMNS))
