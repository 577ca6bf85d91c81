"""The diffusion process of the localizer's DDPM: noise schedule, training loss and samplers.

Seed 004 (section 2.3): ``y_t = sqrt(abar_t) y_0 + sqrt(1 - abar_t) eps`` with
``abar_t = prod (1 - beta)``, a network that predicts ``eps`` from ``(y_t, t, condition)``
trained with an L1 loss, ``T = 100`` steps of a linear schedule.

**The seed's schedule does not reach noise.** Its ``beta_t`` runs from 1e-4 to 1e-2, so
``abar_T = 0.60``: after all 100 steps ``y_T`` still holds ``sqrt(0.60) = 0.78`` of the
target, yet sampling starts from pure noise ``N(0, I)``. With an exact noise predictor
(Gaussian data, tests) that start alone leaves the samples' mean and spread wrong by tens
of per cent. :class:`Schedule` keeps ``T = 100`` and the linear form but ends at
``beta = 0.2`` (``abar_T = 2e-5``); :data:`SEED_SCHEDULE` is the seed's, for comparison.
The samplers only need ``eps_model(y_t, t) -> eps`` (the condition bound in), so they are
tested here against an exact noise predictor (data that are Gaussian per pixel), where
the answer is known:

* :func:`sample_ancestral`: the seed's sampler, all ``T`` steps,
  ``y_{t-1} = mean(y_t, eps) + sigma_t z`` with the posterior variance
  ``beta~_t = beta_t (1 - abar_{t-1}) / (1 - abar_t)``;
* :func:`sample_ddim`: a few steps ``t_1 > t_2 > ...`` (DDIM, Song et al. 2021) with
  stochasticity ``eta``: ``eta = 1`` on all steps is the ancestral sampler (tested);
  ``eta = 0`` is deterministic. Only a stochastic sampler draws from the posterior: the
  deterministic one maps the starting noise to one answer per noise, and its spread
  over many starts is the spread of the posterior only where the network is exact.
  :data:`FAST_ETA` is what the accuracy report chooses; the spread kept at each ``eta``
  and number of steps is measured in the tests and the report.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from livespt.models import _validate

EpsModel = Callable[[Tensor, Tensor], Tensor]
"""``eps_model(y_t, t)`` -> predicted noise, ``t`` a (B,) long tensor of steps in [0, T)."""

FAST_ETA = 0.0
"""Default ``eta`` of :func:`sample_ddim`: with an exact noise predictor and 20 steps it
keeps 87 % of the spread of the target distribution, ``eta = 1`` 77 % (tests)."""


@dataclass(frozen=True)
class Schedule:
    """A linear noise schedule: ``T = 100`` steps from 1e-4 to 0.2 (module docstring).

    Attributes
    ----------
    steps : int
        ``T``.
    beta_start, beta_end : float
        First and last ``beta_t``.
    """

    steps: int = 100
    beta_start: float = 1e-4
    beta_end: float = 0.2

    def __post_init__(self) -> None:
        _validate.positive_int("steps", self.steps, minimum=2)
        _validate.in_range("beta_start", self.beta_start, 1e-8, 0.5)
        _validate.in_range("beta_end", self.beta_end, self.beta_start, 0.999)

    def betas(self) -> Tensor:
        """``beta_t`` for ``t = 0 .. T-1``, float64."""
        return torch.linspace(self.beta_start, self.beta_end, self.steps, dtype=torch.float64)

    def alpha_bars(self) -> Tensor:
        """``abar_t = prod_{s <= t} (1 - beta_s)``, float64."""
        return torch.cumprod(1.0 - self.betas(), dim=0)


SEED_SCHEDULE = Schedule(100, 1e-4, 1e-2)
"""Seed 004's schedule: ``abar_T = 0.60``, far from noise (module docstring)."""


def q_sample(y0: Tensor, t: Tensor, noise: Tensor, schedule: Schedule) -> Tensor:
    """``y_t = sqrt(abar_t) y_0 + sqrt(1 - abar_t) noise`` (the forward process).

    Parameters
    ----------
    y0 : Tensor, shape (B, ...)
        Clean targets.
    t : Tensor, shape (B,), long
        Steps in ``[0, T)``.
    noise : Tensor, same shape as ``y0``
        Standard normal noise.
    schedule : Schedule
        The noise schedule.

    Returns
    -------
    Tensor, shape of ``y0``
    """
    ab = schedule.alpha_bars().to(y0.device)[t].to(y0.dtype)
    ab = ab.view(-1, *([1] * (y0.dim() - 1)))
    return ab.sqrt() * y0 + (1 - ab).sqrt() * noise


def l1_loss(eps_model: EpsModel, y0: Tensor, schedule: Schedule,
            generator: torch.Generator | None = None) -> Tensor:
    """The seed's training loss: mean ``|eps - eps_model(y_t, t)|`` over random ``t``.

    Parameters
    ----------
    eps_model : callable
        The network with its condition bound in.
    y0 : Tensor, shape (B, ...)
        Clean targets.
    schedule : Schedule
        The noise schedule.
    generator : torch.Generator, optional
        Source of ``t`` and the noise.

    Returns
    -------
    Tensor, scalar
    """
    b = y0.shape[0]
    # Drawn on the CPU (where the generator lives), then moved: same draws on any device.
    t = torch.randint(0, schedule.steps, (b,), generator=generator).to(y0.device)
    noise = torch.randn(y0.shape, generator=generator, dtype=y0.dtype).to(y0.device)
    return (noise - eps_model(q_sample(y0, t, noise, schedule), t)).abs().mean()


def ddim_steps(schedule: Schedule, n_steps: int) -> list[int]:
    """``n_steps`` steps from ``T - 1`` down to 0, evenly spaced in log signal-to-noise.

    ``log(abar_t / (1 - abar_t))`` is split evenly and each point taken to its nearest
    step (duplicates dropped, so fewer steps may come back when ``n_steps`` is close to
    ``T``). With an exact noise predictor this keeps far more of the spread than steps
    evenly spaced in ``t``, which leave the last, decisive part of the chain (high
    signal-to-noise) to one or two steps (measured in the tests).

    Parameters
    ----------
    schedule : Schedule
        The noise schedule.
    n_steps : int
        In ``[1, T]``; ``T`` gives every step.

    Returns
    -------
    list of int
        Strictly decreasing.
    """
    n = _validate.positive_int("n_steps", n_steps)
    if n > schedule.steps:
        raise ValueError(f"n_steps must be <= the schedule's {schedule.steps} steps, got {n}")
    if n == 1:
        return [schedule.steps - 1]
    if n == schedule.steps:
        return list(range(schedule.steps - 1, -1, -1))
    ab = schedule.alpha_bars()
    log_snr = torch.log(ab / (1 - ab))  # decreasing in t
    out: list[int] = []
    for v in torch.linspace(float(log_snr[-1]), float(log_snr[0]), n, dtype=torch.float64):
        t = int(torch.argmin((log_snr - v).abs()))
        if t not in out:
            out.append(t)
    return out


Generators = torch.Generator | Sequence[torch.Generator] | None
"""Noise source of a sampler: one generator, one per equal block of rows, or None."""


def _randn(shape: tuple[int, ...], generator: Generators, dtype: torch.dtype) -> Tensor:
    """Standard normal noise on the CPU; a sequence of generators fills equal row blocks.

    One generator per frame makes a frame's samples the same whichever frames it is
    batched with.
    """
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(shape, generator=generator, dtype=dtype)
    gens = list(generator)
    if not gens or shape[0] % len(gens):
        raise ValueError(f"{len(gens)} generators cannot fill {shape[0]} rows equally")
    rows = (shape[0] // len(gens), *shape[1:])
    return torch.cat([torch.randn(rows, generator=g, dtype=dtype) for g in gens])


def _clamp(y: Tensor, lo: float | Tensor, hi: float | Tensor) -> Tensor:
    """``y`` bounded by scalars or tensors (torch.clamp takes one kind at a time)."""
    if isinstance(lo, Tensor) or isinstance(hi, Tensor):
        return torch.minimum(torch.maximum(y, torch.as_tensor(lo).to(y)), torch.as_tensor(hi).to(y))
    return y.clamp(lo, hi)


@torch.no_grad()
def sample_ddim(eps_model: EpsModel, shape: tuple[int, ...], schedule: Schedule,
                n_steps: int, eta: float = FAST_ETA, generator: Generators = None,
                device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                clip: tuple[float | Tensor, float | Tensor] | None = None) -> Tensor:
    """Draw samples with the generalised DDIM update over ``n_steps`` steps.

    Parameters
    ----------
    eps_model : callable
        ``eps_model(y_t, t)`` with the condition bound in.
    shape : tuple of int
        ``(B, ...)``: B samples at once (e.g. many samples of one frame, or frames).
    schedule : Schedule
        The noise schedule the model was trained with.
    n_steps : int
        Steps taken (:func:`ddim_steps`); ``T`` with ``eta = 1`` is the ancestral sampler.
    eta : float
        In ``[0, 1]``: 0 deterministic, 1 the DDPM posterior variance on each step.
    generator : torch.Generator or sequence of them, optional
        Source of the starting noise and of each step's noise (fixed seed: same samples);
        a sequence gives each its equal block of rows (e.g. one per frame).
    device, dtype
        Where and in which precision the samples are made.
    clip : (float or Tensor, float or Tensor), optional
        Bounds for the predicted clean target ``y_0`` at each step (e.g. the KDE's
        ``(0, 1)``; tensors broadcast against ``shape``, e.g. per-pixel bounds of a
        residual); None: no clipping.

    Returns
    -------
    Tensor, shape ``shape``
        Samples of ``y_0``.
    """
    e = _validate.in_range("eta", eta, 0.0, 1.0)
    steps = ddim_steps(schedule, n_steps)
    ab = schedule.alpha_bars()
    y = _randn(shape, generator, dtype).to(device)
    b = shape[0]
    for k, t in enumerate(steps):
        ab_t = float(ab[t])
        ab_prev = float(ab[steps[k + 1]]) if k + 1 < len(steps) else 1.0
        tt = torch.full((b,), t, dtype=torch.long, device=device)
        eps = eps_model(y, tt)
        y0 = (y - math.sqrt(1 - ab_t) * eps) / math.sqrt(ab_t)
        if clip is not None:
            y0 = _clamp(y0, *clip)
            eps = (y - math.sqrt(ab_t) * y0) / math.sqrt(1 - ab_t)
        sigma = e * math.sqrt((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev))
        y = math.sqrt(ab_prev) * y0 + math.sqrt(max(1 - ab_prev - sigma ** 2, 0.0)) * eps
        if sigma > 0:
            z = _randn(shape, generator, dtype).to(device)
            y = y + sigma * z
    return y


def sample_ancestral(eps_model: EpsModel, shape: tuple[int, ...], schedule: Schedule,
                     generator: Generators = None,
                     device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                     clip: tuple[float | Tensor, float | Tensor] | None = None) -> Tensor:
    """The seed's sampler: every one of the ``T`` steps, posterior variance ``beta~_t``.

    Parameters
    ----------
    eps_model : callable
        ``eps_model(y_t, t)`` with the condition bound in.
    shape : tuple of int
        ``(B, ...)``.
    schedule : Schedule
        The noise schedule.
    generator : torch.Generator or sequence of them, optional
        Source of the noise (as :func:`sample_ddim`).
    device, dtype
        Where and in which precision.
    clip : (float or Tensor, float or Tensor), optional
        Bounds for the predicted clean target at each step (as :func:`sample_ddim`).

    Returns
    -------
    Tensor, shape ``shape``
    """
    return sample_ddim(eps_model, shape, schedule, schedule.steps, eta=1.0,
                       generator=generator, device=device, dtype=dtype, clip=clip)
