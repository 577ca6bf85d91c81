"""Movies with known ground truth for the accuracy report: what they are and our simulator's.

:class:`MovieSpec` describes a movie in physical units; the same spec is rendered by our
simulator (:func:`simulator_movie`, ``livespt.models.simulate``) and by DeepTrack2
(:func:`benchmarks.accuracy.deeptrack_movies.deeptrack_movie`). Both take D per particle,
changes of D and start positions from :func:`diffusion_plan` (same seed, same plan), and
draw their own Brownian paths and noise.

Truth convention (both renderers and :class:`ImageMovie`): ``ground_truth`` has one row per
particle and frame whose exposure-mean position lies in the field of view, with columns
``particle_id, frame, x_um, y_um, d_um2_s, photons``; pixel ``(i, j)`` is centred at
``(x, y) = (j, i) * pixel_size_um``; ``d_um2_s`` is the D in force during that frame.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

__all__ = ["DiffusionPlan", "ImageMovie", "MovieSpec", "diffusion_plan", "simulator_movie"]

@dataclass(frozen=True)
class MovieSpec:
    """A movie to simulate, in physical units (shared by the deeptrack and our simulator).

    Attributes
    ----------
    name : str
        Label used in reports.
    shape_px : tuple of int
        ``(height, width)`` in pixels.
    n_frames, n_particles : int
        Frames and particles (particles start uniformly over the field and diffuse
        freely: they leave and enter it).
    pixel_size_um, frame_interval_s, exposure_s : float
        Pixel size (um), frame interval (s), exposure (s, <= interval).
    substeps : int
        Sub-steps per exposure (motion blur).
    d_range_um2_s : tuple of float
        D of each particle, log-uniform in this range, um^2/s.
    change_fraction : float
        Fraction of particles whose D changes once by ``change_factor`` (up, or down
        when up would leave the range) at a frame uniform in ``change_window`` of the movie.
    change_factor : float
        Ratio of D after / before a change (or its inverse).
    change_window : tuple of float
        Fractions of the movie between which changes happen.
    photons : float
        Detected photons per particle and frame.
    background_photons : float
        Background photons per pixel and frame.
    gain_adu_per_e, offset_adu, read_noise_e : float
        Camera: ADU per photo-electron, offset (ADU), read noise (e- RMS).
    numerical_aperture, wavelength_um : float
        Objective NA and emission wavelength (um).
    seed : int
        Seed of everything random.
    """

    name: str = "deeptrack"
    shape_px: tuple[int, int] = (128, 128)
    n_frames: int = 150
    n_particles: int = 30
    pixel_size_um: float = 0.1
    frame_interval_s: float = 0.05
    exposure_s: float = 0.05
    substeps: int = 10
    d_range_um2_s: tuple[float, float] = (0.02, 1.0)
    change_fraction: float = 0.0
    change_factor: float = 5.0
    change_window: tuple[float, float] = (0.25, 0.75)
    photons: float = 800.0
    background_photons: float = 10.0
    gain_adu_per_e: float = 2.0
    offset_adu: float = 100.0
    read_noise_e: float = 1.5
    numerical_aperture: float = 1.4
    wavelength_um: float = 0.6
    seed: int = 0
    padding_px: int = field(default=16, repr=False)

    @property
    def psf_sigma_um(self) -> float:
        """Gaussian-equivalent PSF SD, ``0.21 wavelength / NA`` (um): what a user would enter."""
        return 0.21 * self.wavelength_um / self.numerical_aperture

    @property
    def d_max_um2_s(self) -> float:
        """Largest D any particle can have, um^2/s."""
        return float(self.d_range_um2_s[1])


    def as_dict(self) -> dict[str, Any]:
        """The spec as plain data (for JSON)."""
        return asdict(self)


@dataclass(frozen=True, eq=False)
class DiffusionPlan:
    """D of every particle and frame, its changes and the start positions.

    Attributes
    ----------
    d_um2_s : ndarray, shape (P, T)
        D in force during each frame, um^2/s.
    change_frames : dict of int to int
        Particle -> first frame of its new D (particles that change once).
    start_um : ndarray, shape (P, 2)
        ``(x, y)`` at time 0, um, uniform over the field of view.
    """

    d_um2_s: NDArray[np.float64]
    change_frames: dict[int, int]
    start_um: NDArray[np.float64]


def diffusion_plan(spec: MovieSpec) -> DiffusionPlan:
    """D per particle (log-uniform), single changes by ``change_factor``, start positions.

    Drawn from ``numpy.random.default_rng(spec.seed)``, so two renderers given the same
    spec simulate the same particles (D, change, start) along different random paths.
    """
    rng = np.random.default_rng(spec.seed)
    p, t = spec.n_particles, spec.n_frames
    lo, hi = spec.d_range_um2_s
    d0 = np.exp(rng.uniform(math.log(lo), math.log(hi), p))
    d = np.repeat(d0[:, None], t, axis=1)
    changes: dict[int, int] = {}
    n_change = round(spec.change_fraction * p)
    for i in rng.choice(p, size=n_change, replace=False):
        c = int(rng.integers(int(spec.change_window[0] * t), int(spec.change_window[1] * t)))
        new = d0[i] * spec.change_factor
        if new > hi:
            new = d0[i] / spec.change_factor
        d[i, c:] = new
        changes[int(i)] = c
    h, w = spec.shape_px
    start = (np.column_stack([rng.uniform(0, w, p), rng.uniform(0, h, p)]) - 0.5) \
        * spec.pixel_size_um
    return DiffusionPlan(d, changes, start)


@dataclass(frozen=True, eq=False)
class ImageMovie:
    """A movie with its truth, from any renderer.

    Attributes
    ----------
    frames : ndarray, shape (T, H, W), uint16
        Camera counts, ADU.
    ground_truth : pandas.DataFrame
        As described in the module docstring.
    change_frames : dict of int to int
        Particle -> frame of its change of D.
    spec : MovieSpec
        What was simulated.
    source : str
        ``"simulator"`` (ours) or ``"deeptrack"``.
    info : dict
        Renderer, versions and settings, for the report.
    """

    frames: NDArray[np.uint16]
    ground_truth: pd.DataFrame
    change_frames: dict[int, int]
    spec: MovieSpec
    source: str
    info: dict[str, Any] = field(default_factory=dict)


def ground_truth_table(spec: MovieSpec, mean_um: NDArray[np.float64],
                       d_um2_s: NDArray[np.float64]) -> pd.DataFrame:
    """Truth rows of particle-frames whose exposure-mean position lies in the field of view.

    Parameters
    ----------
    spec : MovieSpec
        Frame geometry and photons.
    mean_um : ndarray, shape (P, T, 2)
        Exposure-mean ``(x, y)``, um.
    d_um2_s : ndarray, shape (P, T)
        D in force during each frame.
    """
    h, w = spec.shape_px
    x_px, y_px = mean_um[..., 0] / spec.pixel_size_um, mean_um[..., 1] / spec.pixel_size_um
    inside = (x_px >= -0.5) & (x_px < w - 0.5) & (y_px >= -0.5) & (y_px < h - 0.5)
    pid, frame = np.nonzero(inside)
    return pd.DataFrame({
        "particle_id": pid.astype(np.int64), "frame": frame.astype(np.int64),
        "x_um": mean_um[pid, frame, 0], "y_um": mean_um[pid, frame, 1],
        "d_um2_s": d_um2_s[pid, frame], "photons": np.full(pid.size, float(spec.photons)),
    })


def simulator_movie(spec: MovieSpec) -> ImageMovie:
    """The spec rendered by LiveSPT's own simulator (``livespt.models.simulate``).

    A Gaussian PSF of SD ``0.21 wavelength / NA``, 10 sub-steps per exposure (as
    ``spec.substeps``), Poisson photons, Gaussian read noise, gain and offset
    (:class:`livespt.models.simulate.Camera`).
    """
    from livespt.models.simulate import Camera, MovieConfig, simulate_movie

    plan = diffusion_plan(spec)
    frames_of_change = sorted(set(plan.change_frames.values()))
    # The simulator takes piecewise-constant D with change frames shared by all particles:
    # one segment per distinct change frame, each particle's D read at the segment's start.
    seg_start = [0, *frames_of_change]
    d_seg = plan.d_um2_s[:, seg_start]
    config = MovieConfig(
        shape_px=spec.shape_px, n_frames=spec.n_frames, n_particles=spec.n_particles,
        pixel_size_um=spec.pixel_size_um, frame_interval_s=spec.frame_interval_s,
        exposure_s=spec.exposure_s, d_um2_s=d_seg if frames_of_change else d_seg[:, 0],
        change_frames=frames_of_change, substeps=spec.substeps,
        wavelength_um=spec.wavelength_um, numerical_aperture=spec.numerical_aperture,
        photons=spec.photons,
        camera=Camera(background_photons=spec.background_photons,
                      read_noise_e=spec.read_noise_e, gain_adu_per_e=spec.gain_adu_per_e,
                      offset_adu=spec.offset_adu),
        start_um=plan.start_um,
    )
    movie = simulate_movie(config, seed=spec.seed)
    d = movie.trajectories.d_um2_s.cpu().numpy()
    if not np.allclose(d, plan.d_um2_s):
        raise RuntimeError("simulator D schedule differs from the plan (bug in the harness)")
    truth = ground_truth_table(spec, movie.trajectories.mean_um.cpu().numpy(), d)
    info = {"renderer": "livespt.models.simulate", "psf": "pixel-integrated Gaussian",
            "psf_sigma_um": config.sigma_um, "blur_coefficient": config.blur_coefficient}
    return ImageMovie(movie.frames, truth, dict(plan.change_frames), spec, "simulator", info)
