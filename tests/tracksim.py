"""Test-only simulator of SPT tracks, in plain numpy.

Brownian motion sampled at ``substeps`` equally spaced instants inside each exposure
(midpoints of ``substeps`` equal slices), the positions averaged over those instants,
plus Gaussian localization noise; optionally frames dropped to make gaps. It does not
use the project's torch simulator, so the estimator tests stand on their own.

Averaging K point samples is not the continuous average: the blur coefficient of this
sampling is exactly ``R_K = (t_E / (6 dt)) (1 - 1/K^2)`` (R equals half the mean
absolute difference of two sampling instants, divided by dt), and the model of the
estimators (Gaussian steps, tridiagonal covariance) holds exactly with it. Tests pass
``blur_coefficient=R_K`` so that Monte-Carlo comparisons carry no modelling error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class SimulatedTracks:
    """Positions (M, N, d) in um, shared frames (N,), and the exact blur coefficient."""

    positions_um: NDArray[np.float64]
    frames: NDArray[np.int64]
    blur_coefficient: float


def blur_of_sampling(exposure_s: float, frame_interval_s: float, substeps: int) -> float:
    """Exact R of averaging ``substeps`` midpoint samples over the exposure."""
    if exposure_s == 0.0:
        return 0.0
    return exposure_s / (6.0 * frame_interval_s) * (1.0 - 1.0 / substeps**2)


def simulate_tracks(
    n_tracks: int,
    n_frames: int,
    d_um2_s: float,
    frame_interval_s: float,
    *,
    exposure_s: float | None = None,
    sigma_um: float = 0.0,
    ndim: int = 2,
    substeps: int = 10,
    drop_fraction: float = 0.0,
    seed: int = 0,
) -> SimulatedTracks:
    """Simulate M tracks of ``n_frames`` frames (fewer positions if frames are dropped).

    Parameters
    ----------
    n_tracks, n_frames : int
        Number of tracks M and of frames per track before dropping.
    d_um2_s : float
        Diffusion coefficient in um^2/s.
    frame_interval_s : float
        Frame interval in s.
    exposure_s : float, optional
        Exposure in s, default the whole interval; 0 samples instantaneous positions.
    sigma_um : float
        Localization noise (standard deviation per dimension) in um.
    ndim : int
        Dimensions.
    substeps : int
        Sampling instants per exposure.
    drop_fraction : float
        Probability that a frame is missing (same pattern for all tracks; first and
        last frames are kept).
    seed : int
        Seed of the generator.
    """
    rng = np.random.default_rng(seed)
    dt = frame_interval_s
    te = dt if exposure_s is None else exposure_s
    k = 1 if te == 0.0 else substeps
    h = te / k
    # time from the last sample of one exposure to the first of the next
    between = dt - te + h
    inc = rng.standard_normal((n_tracks, n_frames, k, ndim))
    inc[:, :, 1:, :] *= np.sqrt(2.0 * d_um2_s * h)
    inc[:, :, 0, :] *= np.sqrt(2.0 * d_um2_s * between)
    inc[:, 0, 0, :] = 0.0
    path = np.cumsum(inc.reshape(n_tracks, n_frames * k, ndim), axis=1)
    pos = path.reshape(n_tracks, n_frames, k, ndim).mean(axis=2)
    pos += sigma_um * rng.standard_normal(pos.shape)
    frames = np.arange(n_frames, dtype=np.int64)
    if drop_fraction > 0.0:
        keep = rng.random(n_frames) >= drop_fraction
        keep[0] = keep[-1] = True
        pos = pos[:, keep]
        frames = frames[keep]
    return SimulatedTracks(pos, frames, blur_of_sampling(te, dt, k))


# ------------------------------------------------------------------ Monte-Carlo bands
#
# Statistical claims are tested against bands of Z standard errors of the Monte-Carlo
# estimate. Z = 5: a correct claim fails one comparison with probability 6e-7 under the
# normal approximation, so the ~200 comparisons of the suite fail by chance with
# probability ~1e-4; the seeds are fixed, so a pass is reproducible.

Z = 5.0


def mean_band(n_samples: int, variance: float) -> float:
    """Half-width for a sample mean: Z sqrt(Var / M)."""
    return Z * float(np.sqrt(variance / n_samples))


def variance_band(values: NDArray[np.float64]) -> float:
    """Half-width for a sample variance: Z sqrt((m4 - m2^2) / M).

    The variance of the sample variance of M iid draws is (mu4 - sigma^4) / M to leading
    order, with mu4 the fourth central moment (for a Gaussian, 2 sigma^4 / M, the
    chi-square result); estimates are quadratic forms, far from Gaussian for short
    tracks, so mu4 is taken from the sample itself.
    """
    c = values - values.mean()
    m2 = float(np.mean(c * c))
    m4 = float(np.mean(c**4))
    return Z * float(np.sqrt((m4 - m2 * m2) / values.shape[0]))


def coverage_band(n_samples: int, level: float) -> float:
    """Half-width for an observed coverage: Z sqrt(p (1 - p) / M), binomial."""
    return Z * float(np.sqrt(level * (1.0 - level) / n_samples))
