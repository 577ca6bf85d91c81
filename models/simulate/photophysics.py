"""Photophysics: how many photons each particle emits in each frame.

Blinking is a two-state (on/off) Markov chain with per-frame switching
probabilities ``p_off`` (on -> off) and ``p_on`` (off -> on); its stationary
on-fraction is ``p_on / (p_on + p_off)`` and every chain starts in it.
Bleaching is permanent: after each frame a particle bleaches with probability
``p_bleach``, so it still emits in frame ``t`` with probability
``(1 - p_bleach)**t`` (independently of blinking; real dyes bleach from the on
state, which this ignores). An optional frame-to-frame brightness fluctuation
multiplies the photons by a log-normal factor of mean 1 and coefficient of
variation ``brightness_cv``. States are per frame: a particle does not switch
in the middle of an exposure.

The chain is drawn without a loop over frames: dwell times of a two-state
Markov chain are geometric, so alternating on/off run lengths are drawn at once
and each frame's state is the parity of the number of runs that ended before it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from livespt.models import _validate
from livespt.models.simulate._common import Device, as_device, make_generator, probability


@dataclass(frozen=True)
class Photophysics:
    """Blinking, bleaching and brightness fluctuation of the emitters.

    Attributes
    ----------
    p_off : float
        Per-frame probability that an emitting particle turns off, in [0, 1].
    p_on : float
        Per-frame probability that a dark particle turns back on, in [0, 1].
    p_bleach : float
        Per-frame probability of permanent bleaching, in [0, 1].
    brightness_cv : float
        Coefficient of variation (>= 0) of a log-normal, mean-1 factor drawn per
        particle and frame that multiplies the photons (0: constant brightness).
    """

    p_off: float = 0.0
    p_on: float = 1.0
    p_bleach: float = 0.0
    brightness_cv: float = 0.0

    def __post_init__(self) -> None:
        probability("p_off", self.p_off)
        probability("p_on", self.p_on)
        probability("p_bleach", self.p_bleach)
        _validate.non_negative("brightness_cv", self.brightness_cv)

    @property
    def on_fraction(self) -> float:
        """Stationary fraction of frames spent on, ``p_on / (p_on + p_off)`` (1 if never off)."""
        if self.p_off == 0:
            return 1.0
        return self.p_on / (self.p_on + self.p_off)

    @property
    def is_trivial(self) -> bool:
        """True when every particle emits the same photons in every frame."""
        return self.p_off == 0 and self.p_bleach == 0 and self.brightness_cv == 0


def emission_states(
    n_particles: int,
    n_frames: int,
    photophysics: Photophysics,
    *,
    seed: int = 0,
    generator: torch.Generator | None = None,
    device: Device = "cpu",
) -> Tensor:
    """Whether each particle emits in each frame (blinking and bleaching).

    Parameters
    ----------
    n_particles, n_frames : int
        Number of particles ``P`` and frames ``T``, >= 1.
    photophysics : Photophysics
        Switching and bleaching probabilities per frame.
    seed : int
        Seed of the random draws (ignored when ``generator`` is given).
    generator : torch.Generator, optional
        Generator on ``device`` to draw from.
    device : str or torch.device
        Device of the result.

    Returns
    -------
    Tensor, shape (P, T), bool
        True where the particle is on and not yet bleached.
    """
    p = _validate.positive_int("n_particles", n_particles)
    t = _validate.positive_int("n_frames", n_frames)
    if not isinstance(photophysics, Photophysics):
        raise ValueError(f"photophysics must be a Photophysics, got {type(photophysics)!r}")
    dev = as_device(device)
    gen = make_generator(seed, generator, dev)
    return _emission_states(p, t, photophysics, gen, dev)


def _emission_states(
    p: int, t: int, ph: Photophysics, gen: torch.Generator, dev: torch.device
) -> Tensor:
    frames = torch.arange(t, device=dev, dtype=torch.float64)
    on = torch.ones((p, t), dtype=torch.bool, device=dev)
    if ph.p_off > 0:
        start_on = torch.rand((p, 1), generator=gen, device=dev, dtype=torch.float64)
        start_on = start_on < ph.on_fraction
        # T runs always suffice: every run lasts at least one frame.
        runs = torch.arange(t, device=dev)
        leaves_on = start_on ^ (runs % 2 == 1)[None, :]  # (P, T): run k is an on-run
        p_leave = torch.where(
            leaves_on,
            torch.tensor(ph.p_off, dtype=torch.float64, device=dev),
            torch.tensor(ph.p_on, dtype=torch.float64, device=dev),
        )
        lengths = _geometric(p_leave, gen)
        ends = torch.cumsum(lengths, dim=1)
        n_ended = torch.searchsorted(ends, frames.expand(p, t).contiguous(), right=True)
        on = start_on ^ (n_ended % 2 == 1)
    if ph.p_bleach > 0:
        u = torch.ones((p, 1), dtype=torch.float64, device=dev) * ph.p_bleach
        bleach_frame = _geometric(u, gen)  # first frame no longer emitting
        on = on & (frames[None, :] < bleach_frame)
    return on


def _geometric(p_success: Tensor, gen: torch.Generator) -> Tensor:
    """Geometric numbers of trials ``>= 1`` (inverse CDF); ``inf`` where ``p = 0``."""
    u = 1.0 - torch.rand(p_success.shape, generator=gen, device=p_success.device,
                         dtype=torch.float64)  # in (0, 1], so log(u) is finite
    k = torch.ceil(torch.log(u) / torch.log1p(-p_success)).clamp_min(1.0)
    return torch.where(p_success > 0, k, torch.full_like(k, math.inf))


def emitted_photons(
    photons: Any,
    n_frames: int,
    photophysics: Photophysics,
    *,
    n_particles: int | None = None,
    seed: int = 0,
    generator: torch.Generator | None = None,
    device: Device = "cpu",
) -> Tensor:
    """Expected detected photons of each particle in each frame.

    Parameters
    ----------
    photons : float or array_like, shape (P,)
        Photons detected per frame from an emitting particle (> 0).
    n_frames : int
        Number of frames ``T``, >= 1.
    photophysics : Photophysics
        Blinking, bleaching and brightness fluctuation.
    n_particles : int, optional
        Number of particles ``P``; required when ``photons`` is a scalar.
    seed : int
        Seed of the random draws (ignored when ``generator`` is given).
    generator : torch.Generator, optional
        Generator on ``device`` to draw from.
    device : str or torch.device
        Device of the result.

    Returns
    -------
    Tensor, shape (P, T), float64
        Photons per frame; 0 while the particle is off or bleached.
    """
    t = _validate.positive_int("n_frames", n_frames)
    if not isinstance(photophysics, Photophysics):
        raise ValueError(f"photophysics must be a Photophysics, got {type(photophysics)!r}")
    base = _validate.finite_array("photons", photons)
    if base.ndim == 0:
        if n_particles is None:
            raise ValueError("n_particles must be given when photons is a scalar")
        base = np.full(_validate.positive_int("n_particles", n_particles), float(base))
    elif base.ndim != 1 or (n_particles is not None and base.shape[0] != n_particles):
        raise ValueError(f"photons must be a scalar or have shape (n_particles,), got {base.shape}")
    if not np.all(base > 0):
        raise ValueError("photons must be > 0")
    dev = as_device(device)
    gen = make_generator(seed, generator, dev)
    return _emitted_photons(torch.as_tensor(base, device=dev), t, photophysics, gen)


def _emitted_photons(base: Tensor, t: int, ph: Photophysics, gen: torch.Generator) -> Tensor:
    p = base.shape[0]
    out = base.to(torch.float64)[:, None].expand(p, t).clone()
    if ph.is_trivial:
        return out
    out = out * _emission_states(p, t, ph, gen, base.device)
    if ph.brightness_cv > 0:
        # Log-normal with mean 1: log X ~ N(-s^2/2, s^2), s^2 = log(1 + cv^2).
        s2 = math.log1p(ph.brightness_cv**2)
        z = torch.randn((p, t), generator=gen, dtype=torch.float64, device=base.device)
        out = out * torch.exp(math.sqrt(s2) * z - 0.5 * s2)
    return out
