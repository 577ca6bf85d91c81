"""Brownian trajectories sampled inside each exposure, as a camera sees them.

Time model
----------
Frame ``t`` starts at ``t * dt`` (``dt`` = frame interval). The camera integrates
over an exposure ``t_E`` (``0 < t_E <= dt``) at the start of the interval; the
particle keeps moving during the dark rest ``dt - t_E``. Inside each exposure the
position is sampled at ``S`` sub-step times, the midpoints

    tau_j = (j + 1/2) t_E / S,   j = 0 .. S-1,

and the position the camera records (the centroid of the blurred spot) is their
mean ``M_t``. The path is exact Brownian motion at those times: Gaussian
increments of variance ``2 D tau`` per dimension between consecutive sample
times, plus the frame starts, so that every increment lies inside one frame
interval and uses the D in force in that frame.

Effective blur coefficient
--------------------------
For Brownian motion ``Cov(x(a+dt) - x(a), x(b+dt) - x(b)) = 2 D (dt - |a - b|)``
for ``|a - b| <= dt``. Averaging over the sub-steps,

    E[(M_{t+1} - M_t)^2] = 2 D (dt - mean_ij |tau_i - tau_j|) = 2 D dt (1 - 2 R),
    R = (mean_j tau_j - m) / dt,   m = mean_ij min(tau_i, tau_j),

which for the midpoints above is ``R = (t_E - 2 m) / (2 dt)
= t_E / (6 dt) * (1 - 1/S^2)``. It tends to the continuous-exposure value
``t_E / (6 dt)`` (Berglund 2010; :func:`livespt.models.units.blur_coefficient`) as
``S`` grows, and is 0 for ``S = 1`` (a single instantaneous sample: no blur).
Lags of ``n >= 1`` frames give ``2 D dt (n - 2 R)``; estimators that assume the
continuous value should be fed :func:`effective_blur_coefficient` when ``S`` is
small.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from livespt.models import _validate
from livespt.models.simulate._common import Device, as_device, make_generator, positions_array

# Frames integrated at once before checking for a wall crossing in a confined
# simulation; large enough to amortise the check, small enough to bound the
# memory of the free-path trial.
_CONFINEMENT_CHUNK_STEPS = 512


@dataclass(frozen=True, eq=False)
class Trajectories:
    """Simulated positions of ``P`` particles over ``T`` frames, ``S`` sub-steps each.

    Attributes
    ----------
    substeps_um : Tensor, shape (P, T, S, 2), float64
        Positions (x, y) in micrometres at the sub-step times inside each exposure.
    mean_um : Tensor, shape (P, T, 2), float64
        Mean of the sub-step positions over the exposure: what a camera records.
    d_um2_s : Tensor, shape (P, T), float64
        Diffusion coefficient in um^2/s in force during frame ``t``.
    substep_times_s : tuple of float
        The ``S`` sample times inside an exposure, in seconds from the frame start.
    frame_interval_s : float
        Time between frame starts in seconds.
    exposure_s : float
        Exposure time in seconds.
    """

    substeps_um: Tensor
    mean_um: Tensor
    d_um2_s: Tensor
    substep_times_s: tuple[float, ...]
    frame_interval_s: float
    exposure_s: float

    @property
    def blur_coefficient(self) -> float:
        """Exact blur coefficient R of this sub-step averaging (see module docstring)."""
        return _blur_from_times(np.asarray(self.substep_times_s), self.frame_interval_s)


def resolve_exposure(exposure_s: Any, frame_interval_s: Any) -> tuple[float, float]:
    """Return ``(exposure_s, frame_interval_s)`` checked, the exposure defaulting to the interval.

    Parameters
    ----------
    exposure_s : float or None
        Exposure in seconds, ``0 < exposure_s <= frame_interval_s``; None means
        continuous illumination (exposure = frame interval).
    frame_interval_s : float
        Time between frame starts in seconds, > 0.

    Returns
    -------
    tuple of float
        ``(exposure_s, frame_interval_s)``.
    """
    dt = _validate.positive("frame_interval_s", frame_interval_s)
    if exposure_s is None:
        return dt, dt
    _validate.positive("exposure_s", exposure_s)
    return _validate.exposure_and_interval(exposure_s, dt)


def substep_times_s(exposure_s: float, substeps: int) -> NDArray[np.float64]:
    """Sub-step sample times inside an exposure: the midpoints ``(j + 1/2) t_E / S``.

    Parameters
    ----------
    exposure_s : float
        Exposure time in seconds, > 0.
    substeps : int
        Number of samples per exposure, >= 1.

    Returns
    -------
    ndarray, shape (substeps,)
        Times in seconds from the start of the frame.
    """
    te = _validate.positive("exposure_s", exposure_s)
    s = _validate.positive_int("substeps", substeps)
    return (np.arange(s, dtype=np.float64) + 0.5) * (te / s)


def effective_blur_coefficient(exposure_s: float, frame_interval_s: float, substeps: int) -> float:
    """Exact blur coefficient R of the simulator's discrete sub-step averaging.

    With sub-step times ``tau_j`` (:func:`substep_times_s`) and
    ``m = mean_ij min(tau_i, tau_j)``, ``R = (t_E - 2 m) / (2 dt)
    = t_E / (6 dt) * (1 - 1 / S^2)``, such that the one-frame mean squared step
    of exposure-mean positions is ``2 D dt (1 - 2 R)`` per dimension. It tends to
    ``t_E / (6 dt)`` (continuous exposure) as ``substeps`` grows.

    Parameters
    ----------
    exposure_s : float
        Exposure time in seconds, ``0 < exposure_s <= frame_interval_s``.
    frame_interval_s : float
        Time between frame starts in seconds, > 0.
    substeps : int
        Number of sub-steps per exposure, >= 1.

    Returns
    -------
    float
        R, dimensionless, in ``[0, 1/6)``.
    """
    te, dt = resolve_exposure(exposure_s, frame_interval_s)
    return _blur_from_times(substep_times_s(te, substeps), dt)


def _blur_from_times(tau: NDArray[np.float64], dt: float) -> float:
    # mean_ij min(tau_i, tau_j) in O(S log S): the k-th smallest of S times is the
    # minimum of 2 (S - k) - 1 ordered pairs (k from 0).
    t = np.sort(tau)
    s = t.size
    m = float(np.dot(t, 2.0 * (s - np.arange(s)) - 1.0)) / (s * s)
    return (float(t.mean()) - m) / dt


def diffusion_schedule(
    d_um2_s: Any, n_particles: int, n_frames: int, change_frames: Sequence[int] = ()
) -> NDArray[np.float64]:
    """Expand a D specification to the D in force for each particle and frame.

    Parameters
    ----------
    d_um2_s : float or array_like
        Diffusion coefficient(s) in um^2/s, >= 0. Without ``change_frames``: a
        scalar (all particles) or shape ``(P,)`` (one per particle). With
        ``change_frames``: shape ``(n_segments,)`` (the same for every particle)
        or ``(P, n_segments)``, ``n_segments = len(change_frames) + 1``.
    n_particles : int
        Number of particles ``P``, >= 1.
    n_frames : int
        Number of frames ``T``, >= 1.
    change_frames : sequence of int
        Strictly increasing frames ``0 < c < T`` where D changes: segment ``k``
        applies from frame ``change_frames[k - 1]`` on (segment 0 from frame 0).

    Returns
    -------
    ndarray, shape (P, T)
        D in um^2/s for each particle and frame.
    """
    p = _validate.positive_int("n_particles", n_particles)
    t = _validate.positive_int("n_frames", n_frames)
    changes = _change_frames(change_frames, t)
    if isinstance(d_um2_s, Tensor):
        d_um2_s = d_um2_s.detach().cpu().numpy()
    d = _validate.finite_array("d_um2_s", d_um2_s)
    if not np.all(d >= 0):
        raise ValueError("d_um2_s must be >= 0 (a diffusion coefficient cannot be negative)")
    n_seg = len(changes) + 1
    if d.ndim == 0:
        per_segment = np.full((p, n_seg), float(d))
    elif not changes:
        if d.shape not in ((p,), (p, 1)):
            raise ValueError(
                f"d_um2_s must be a scalar or have shape ({p},) (one per particle), got "
                f"{d.shape}; give change_frames for piecewise-constant D"
            )
        per_segment = d.reshape(p, 1)
    elif d.shape == (n_seg,):
        per_segment = np.broadcast_to(d, (p, n_seg))
    elif d.shape == (p, n_seg):
        per_segment = d
    else:
        raise ValueError(
            f"d_um2_s must have shape ({n_seg},) or ({p}, {n_seg}) for {len(changes)} "
            f"change_frames, got {d.shape}"
        )
    segment_of_frame = np.searchsorted(np.asarray(changes, dtype=np.int64), np.arange(t), "right")
    return np.ascontiguousarray(per_segment[:, segment_of_frame], dtype=np.float64)


def _change_frames(change_frames: Any, n_frames: int) -> list[int]:
    try:
        changes = list(change_frames)
    except TypeError:
        raise ValueError(
            f"change_frames must be a sequence of frame indices, got {change_frames!r}"
        ) from None
    out = [_validate.positive_int("change_frames", c, minimum=1) for c in changes]
    if any(c >= n_frames for c in out):
        raise ValueError(f"change_frames must lie in [1, n_frames - 1 = {n_frames - 1}], got {out}")
    if any(b <= a for a, b in itertools.pairwise(out)):
        raise ValueError(f"change_frames must be strictly increasing, got {out}")
    return out


def simulate_trajectories(
    n_particles: int,
    n_frames: int,
    d_um2_s: Any,
    frame_interval_s: float,
    exposure_s: float | None = None,
    *,
    substeps: int = 10,
    change_frames: Sequence[int] = (),
    start_um: Any = None,
    confinement_radius_um: float | None = None,
    seed: int = 0,
    generator: torch.Generator | None = None,
    device: Device = "cpu",
) -> Trajectories:
    """Simulate 2-D Brownian motion sampled inside each camera exposure.

    Parameters
    ----------
    n_particles : int
        Number of particles ``P``, >= 1.
    n_frames : int
        Number of frames ``T``, >= 1.
    d_um2_s : float or array_like
        Diffusion coefficient(s) in um^2/s, >= 0; see :func:`diffusion_schedule`
        for per-particle and piecewise-constant forms.
    frame_interval_s : float
        Time between frame starts in seconds, > 0.
    exposure_s : float, optional
        Exposure in seconds, ``0 < exposure_s <= frame_interval_s``; default: the
        frame interval (continuous illumination).
    substeps : int
        Samples per exposure ``S``, >= 1 (1 = no motion blur).
    change_frames : sequence of int
        Frames where D changes (see :func:`diffusion_schedule`).
    start_um : array_like, shape (P, 2), optional
        Positions (x, y) in um at time 0 (start of the first exposure); default 0.
    confinement_radius_um : float, optional
        Radius in um of a reflecting disc centred on each start. Each sub-step
        increment that leaves the disc is folded back radially, which converges
        to reflecting Brownian motion as the sub-step shrinks.
    seed : int
        Seed of the random draws (ignored when ``generator`` is given).
    generator : torch.Generator, optional
        Generator on ``device`` to draw from instead of a fresh seeded one.
    device : str or torch.device
        Device of the returned tensors.

    Returns
    -------
    Trajectories
        Sub-step positions, exposure means and the D schedule.
    """
    p = _validate.positive_int("n_particles", n_particles)
    t = _validate.positive_int("n_frames", n_frames)
    s = _validate.positive_int("substeps", substeps)
    te, dt = resolve_exposure(exposure_s, frame_interval_s)
    d = diffusion_schedule(d_um2_s, p, t, change_frames)
    radius = (
        None
        if confinement_radius_um is None
        else _validate.positive("confinement_radius_um", confinement_radius_um)
    )
    start = np.zeros((p, 2)) if start_um is None else positions_array("start_um", start_um, p)
    dev = as_device(device)
    gen = make_generator(seed, generator, dev)

    tau = substep_times_s(te, s)
    # Increments: frame start -> tau_0 -> ... -> tau_{S-1} -> next frame start.
    durations = np.diff(np.concatenate(([0.0], tau, [dt])))
    d_t = torch.as_tensor(d, dtype=torch.float64, device=dev)
    dur_t = torch.as_tensor(durations, dtype=torch.float64, device=dev)
    std = torch.sqrt(2.0 * d_t[:, :, None] * dur_t)  # (P, T, S+1)
    noise = torch.randn((p, t, s + 1, 2), generator=gen, dtype=torch.float64, device=dev)
    steps = (noise * std[..., None]).reshape(p, t * (s + 1), 2)
    start_t = torch.as_tensor(start, dtype=torch.float64, device=dev)
    if radius is None:
        rel = torch.cumsum(steps, dim=1)
    else:
        rel = _integrate_in_disc(steps, radius)
    path = (rel + start_t[:, None, :]).reshape(p, t, s + 1, 2)
    sub = path[:, :, :s, :].contiguous()
    return Trajectories(
        substeps_um=sub,
        mean_um=sub.mean(dim=2),
        d_um2_s=d_t,
        substep_times_s=tuple(float(x) for x in tau),
        frame_interval_s=dt,
        exposure_s=te,
    )


def _integrate_in_disc(steps: Tensor, radius: float) -> Tensor:
    """Cumulate increments ``(P, N, 2)`` inside a reflecting disc centred on 0.

    Reflection makes the path depend on its past, so it cannot be one cumsum.
    Chunks where no particle reaches the wall are still integrated with a
    cumsum; only chunks with a crossing are walked increment by increment
    (vectorised over particles).
    """
    p, n, _ = steps.shape
    out = torch.empty_like(steps)
    pos = torch.zeros((p, 2), dtype=steps.dtype, device=steps.device)
    r2 = radius * radius
    for k0 in range(0, n, _CONFINEMENT_CHUNK_STEPS):
        k1 = min(n, k0 + _CONFINEMENT_CHUNK_STEPS)
        free = pos[:, None, :] + torch.cumsum(steps[:, k0:k1], dim=1)
        if bool((free.square().sum(-1) <= r2).all()):
            out[:, k0:k1] = free
        else:
            for k in range(k0, k1):
                pos = _fold_into_disc(pos + steps[:, k], radius)
                out[:, k] = pos
        pos = out[:, k1 - 1]
    return out


def _fold_into_disc(pos: Tensor, radius: float) -> Tensor:
    """Reflect points outside the disc back along their radius (a triangle-wave fold).

    The fold handles increments longer than the diameter too, which a single
    mirror ``2 r - |x|`` would send outside again.
    """
    dist = torch.linalg.vector_norm(pos, dim=-1, keepdim=True)
    # Signed coordinate along the ray, folded into [-r, r] with period 4 r: a
    # negative result means the point went through the centre to the far side.
    folded = radius - torch.abs(torch.remainder(dist + radius, 4 * radius) - 2 * radius)
    scale = torch.where(dist > radius, folded / dist.clamp_min(1e-300), torch.ones_like(dist))
    return pos * scale
