"""Track validation, steps with gap bookkeeping, and the step covariance model.

The model (Berglund 2010, Phys. Rev. E 82, 011917; Vestergaard et al. 2014, Phys. Rev.
E 89, 022726), per dimension: an observed position is the Brownian position averaged
over the exposure plus independent Gaussian localization noise of variance sigma^2.
For consecutive observations spanning ``k_i`` frames (``k_i > 1`` across a gap), the
steps ``s_i`` have zero mean and

- ``Var(s_i) = 2 D dt (k_i - 2R) + 2 sigma^2``,
- ``Cov(s_i, s_{i+1}) = 2 R D dt - sigma^2`` (whatever the gap lengths),
- all other covariances zero,

so the step covariance is a tridiagonal matrix ``Sigma = D Sigma_D + sigma^2 Sigma_S``,
linear in ``(D, sigma^2)``; dimensions are independent. Everything exact in this
package (standard errors, Fisher information) is built on this one fact.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from livespt.models import _validate
from livespt.models.units import blur_coefficient as _uniform_blur

MIN_POSITIONS = 3
"""A step pair is needed to separate D from sigma, hence three positions."""

MAX_BLUR = 0.25
"""R of any shutter profile lies in [0, 1/4] (Berglund 2010); uniform exposure gives <= 1/6."""


class Tridiagonal(NamedTuple):
    """A symmetric tridiagonal matrix by its diagonal (n,) and off-diagonal (n-1,)."""

    diag: NDArray[np.float64]
    off: NDArray[np.float64]


def prefix(track_id: Any) -> str:
    """Message prefix naming the track, so a user can find the offending one."""
    return "" if track_id is None else f"track {track_id}: "


def resolve_timing(
    frame_interval_s: Any,
    exposure_s: Any = None,
    blur_coefficient: Any = None,
) -> tuple[float, float]:
    """Validate the timing and return ``(dt, R)``.

    ``exposure_s=None`` means continuous exposure (``exposure_s = frame_interval_s``).
    An explicit ``blur_coefficient`` overrides ``R = exposure_s / (6 dt)``, for
    sampling whose R is known exactly (non-uniform illumination, simulations with a
    finite number of sub-steps); the exposure is still validated if given.
    """
    dt = _validate.positive("frame_interval_s", frame_interval_s)
    r = _uniform_blur(dt if exposure_s is None else exposure_s, dt)
    if blur_coefficient is not None:
        r = _validate.in_range("blur_coefficient", blur_coefficient, 0.0, MAX_BLUR)
    return dt, r


def validate_track(
    positions_um: ArrayLike,
    frames: ArrayLike | None = None,
    track_id: Any = None,
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Check one track; return positions as (N, d) float64 and frames as (N,) int64.

    Accepts (N,) positions as a one-dimensional track. Raises ``ValueError`` naming
    the parameter (and the track, when ``track_id`` is given) for empty input, NaN or
    inf, a bad shape, fewer than 3 positions, or frames that are not strictly
    increasing integers.
    """
    p = prefix(track_id)
    try:
        pos = _validate.finite_array("positions_um", positions_um)
    except ValueError as exc:
        raise ValueError(f"{p}{exc}") from None
    if pos.ndim == 1:
        pos = pos[:, None]
    # A (d, N) array passed by mistake has d rows and N columns: refuse, don't guess.
    if pos.ndim != 2 or not 1 <= pos.shape[1] <= 3:
        raise ValueError(
            f"{p}positions_um must have shape (N, d) with d = 1, 2 or 3, got {pos.shape}"
        )
    n = pos.shape[0]
    if n < MIN_POSITIONS:
        raise ValueError(f"{p}positions_um needs at least {MIN_POSITIONS} positions, got {n}")
    return pos, validate_frames(frames, n, track_id)


def validate_batch(
    positions_um: ArrayLike,
    frames: ArrayLike | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Check M tracks sharing one frame pattern; return (M, N, d) and (N,) arrays."""
    pos = _validate.finite_array("positions_um", positions_um)
    if pos.ndim == 2:
        pos = pos[:, :, None]
    if pos.ndim != 3 or not 1 <= pos.shape[2] <= 3:
        raise ValueError(
            f"positions_um must have shape (M, N, d) with d = 1, 2 or 3, got {pos.shape}"
        )
    n = pos.shape[1]
    if n < MIN_POSITIONS:
        raise ValueError(
            f"positions_um needs at least {MIN_POSITIONS} positions per track, got {n}"
        )
    return pos, validate_frames(frames, n, None)


def validate_frames(frames: ArrayLike | None, n: int, track_id: Any = None) -> NDArray[np.int64]:
    """Return frames as int64 (default ``0..n-1``), or raise if not strictly increasing."""
    p = prefix(track_id)
    if frames is None:
        return np.arange(n, dtype=np.int64)
    try:
        f = _validate.finite_array("frames", frames, ndim=1)
    except ValueError as exc:
        raise ValueError(f"{p}{exc}") from None
    if f.shape[0] != n:
        raise ValueError(f"{p}frames must have one entry per position ({n}), got {f.shape[0]}")
    if not np.array_equal(f, np.round(f)):
        raise ValueError(f"{p}frames must be integers")
    fi = f.astype(np.int64)
    bad = np.flatnonzero(np.diff(fi) <= 0)
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"{p}frames must be strictly increasing, got {fi[i]} then {fi[i + 1]} at index {i + 1}"
        )
    return fi


def validate_frames_or_count(n_positions_or_frames: Any) -> NDArray[np.int64]:
    """Frames from either a number of positions (contiguous track) or a frames array."""
    if np.ndim(n_positions_or_frames) == 0:
        n = _validate.positive_int("n_positions", n_positions_or_frames, MIN_POSITIONS)
        return np.arange(n, dtype=np.int64)
    f = np.asarray(n_positions_or_frames)
    if f.ndim != 1 or f.shape[0] < MIN_POSITIONS:
        raise ValueError(
            f"frames must be a 1-D array of at least {MIN_POSITIONS} frame indices, "
            f"got shape {f.shape}"
        )
    return validate_frames(f, f.shape[0])


def gaps(frames: NDArray[np.int64]) -> NDArray[np.float64]:
    """Frames spanned by each step (1 without missing frames)."""
    return np.diff(frames).astype(np.float64)


def is_contiguous(frames: NDArray[np.int64]) -> bool:
    """True when no frame is missing between the first and last observation."""
    return bool(frames[-1] - frames[0] == frames.shape[0] - 1)


def step_covariance_basis(
    step_gaps: NDArray[np.float64], dt: float, r: float
) -> tuple[Tridiagonal, Tridiagonal]:
    """Return ``(Sigma_D, Sigma_S)`` with ``Cov(steps) = D Sigma_D + sigma^2 Sigma_S``.

    Parameters
    ----------
    step_gaps : ndarray, shape (n,)
        Frames spanned by each step.
    dt : float
        Frame interval in s.
    r : float
        Blur coefficient R.

    Returns
    -------
    tuple of Tridiagonal
        ``Sigma_D`` in s (diag ``2 dt (k_i - 2R)``, off ``2 R dt``) and the
        dimensionless ``Sigma_S`` (diag 2, off -1).
    """
    n = step_gaps.shape[0]
    sig_d = Tridiagonal(2.0 * dt * (step_gaps - 2.0 * r), np.full(n - 1, 2.0 * r * dt))
    sig_s = Tridiagonal(np.full(n, 2.0), np.full(n - 1, -1.0))
    return sig_d, sig_s


def step_covariance(
    step_gaps: NDArray[np.float64], d_um2_s: float, sigma2_um2: float, dt: float, r: float
) -> Tridiagonal:
    """The step covariance per dimension, ``D Sigma_D + sigma^2 Sigma_S`` (um^2)."""
    sig_d, sig_s = step_covariance_basis(step_gaps, dt, r)
    return Tridiagonal(
        d_um2_s * sig_d.diag + sigma2_um2 * sig_s.diag,
        d_um2_s * sig_d.off + sigma2_um2 * sig_s.off,
    )
