"""The DDPM's schedule and samplers against an exact noise predictor (models/ddpm/diffusion.py).

For data that are Gaussian per pixel, ``y_0 ~ N(m, s^2)``, the best possible noise
predictor is known in closed form: ``E[eps | y_t] = sqrt(1 - a) (y_t - sqrt(a) m) /
(a s^2 + 1 - a)`` with ``a = abar_t``. A sampler driven by it should return draws with mean
``m`` and SD ``s``; what it returns instead is the sampler's own error, free of any
network. ``s = 0.2`` is narrow against the unit noise, as the localizer's posterior is.
Tolerances: the SE of a mean of 40,000 draws is ``s / 200``; of an SD, ``s / 283``.
"""

from __future__ import annotations

import math

import pytest
import torch

from livespt.models.ddpm.diffusion import (
    SEED_SCHEDULE,
    Schedule,
    ddim_steps,
    l1_loss,
    q_sample,
    sample_ancestral,
    sample_ddim,
)

M, S, N = 0.3, 0.2, 40_000


def exact_eps(schedule: Schedule, m: float = M, s: float = S):
    ab = schedule.alpha_bars()

    def eps(y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = ab[t].to(y.dtype).view(-1, *([1] * (y.dim() - 1)))
        return (1 - a).sqrt() * (y - a.sqrt() * m) / (a * s * s + 1 - a)
    return eps


def draws(schedule: Schedule, n_steps: int, eta: float, seed: int = 0) -> torch.Tensor:
    return sample_ddim(exact_eps(schedule), (N,), schedule, n_steps, eta=eta,
                       generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_schedules_reach_noise_or_not() -> None:
    assert float(Schedule().alpha_bars()[-1]) < 1e-4
    assert float(SEED_SCHEDULE.alpha_bars()[-1]) == pytest.approx(0.60, abs=0.01)
    steps = ddim_steps(Schedule(), 10)
    assert steps[0] == 99 and steps[-1] == 0 and steps == sorted(steps, reverse=True)
    assert ddim_steps(Schedule(), 100) == list(range(99, -1, -1))
    with pytest.raises(ValueError, match="n_steps must be <= the schedule's 100 steps"):
        ddim_steps(Schedule(), 101)


def test_eta_one_on_every_step_is_the_ddpm_ancestral_step() -> None:
    """One DDIM step with eta = 1 between consecutive steps equals the DDPM update
    mean = (y - beta / sqrt(1 - abar) eps) / sqrt(alpha), variance beta~ (same noise)."""
    sch = Schedule()
    betas, ab = sch.betas(), sch.alpha_bars()
    t = 57
    torch.manual_seed(0)
    y = torch.randn(1000, dtype=torch.float64)
    eps = exact_eps(sch)(y, torch.full((1000,), t))
    z = torch.randn(1000, dtype=torch.float64)
    mean = (y - betas[t] / (1 - ab[t]).sqrt() * eps) / (1 - betas[t]).sqrt()
    var = betas[t] * (1 - ab[t - 1]) / (1 - ab[t])
    expected = mean + var.sqrt() * z
    # The same step through sample_ddim's formula.
    ab_t, ab_prev = float(ab[t]), float(ab[t - 1])
    y0 = (y - math.sqrt(1 - ab_t) * eps) / math.sqrt(ab_t)
    sigma = math.sqrt((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev))
    got = math.sqrt(ab_prev) * y0 + math.sqrt(1 - ab_prev - sigma ** 2) * eps + sigma * z
    torch.testing.assert_close(got, expected)


def test_ancestral_sampler_with_an_exact_predictor() -> None:
    y = sample_ancestral(exact_eps(Schedule()), (N,), Schedule(),
                         generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert abs(float(y.mean()) - M) < 4 * S / math.sqrt(N)
    # 100 steps of the posterior variance beta~ under-disperse narrow data by ~12 %
    # (beta~ is exact only for a point mass): inside the issue's [0.8, 1.25].
    assert 0.8 < float(y.std()) / S < 0.95


def test_the_seeds_schedule_misses_because_it_starts_from_noise_it_never_reaches() -> None:
    ours = draws(Schedule(), 100, 1.0)
    seed = draws(SEED_SCHEDULE, 100, 1.0)
    assert abs(float(ours.mean()) - M) < 4 * S / math.sqrt(N)
    assert float(seed.mean()) < M - 10 * S / math.sqrt(N)  # biased by the wrong start
    fast_seed = draws(SEED_SCHEDULE, 10, 0.0)
    assert abs(float(fast_seed.mean()) - M) > 0.05  # and badly so with few steps


@pytest.mark.parametrize(("n_steps", "eta", "low", "high"), [
    (20, 0.0, 0.84, 0.90), (20, 1.0, 0.74, 0.80), (10, 0.0, 0.72, 0.78),
])
def test_spread_kept_by_the_fast_sampler(n_steps: int, eta: float, low: float,
                                        high: float) -> None:
    """The fraction of the target SD each fast setting keeps (the numbers FAST_ETA and the
    accuracy report rest on); the mean is right in all of them."""
    y = draws(Schedule(), n_steps, eta)
    assert abs(float(y.mean()) - M) < 4 * S / math.sqrt(N) + 0.003
    assert low < float(y.std()) / S < high


def test_fixed_seed_gives_the_same_samples_and_the_loss_is_zero_for_the_exact_predictor() -> None:
    a, b = draws(Schedule(), 10, 0.5, seed=3), draws(Schedule(), 10, 0.5, seed=3)
    assert torch.equal(a, b)
    assert not torch.equal(a, draws(Schedule(), 10, 0.5, seed=4))
    # Data that are a point mass (s -> 0): the exact predictor recovers the noise exactly.
    sch = Schedule()
    y0 = torch.full((64, 4, 4), M, dtype=torch.float64)
    loss = l1_loss(exact_eps(sch, M, 0.0), y0, sch, torch.Generator().manual_seed(0))
    assert float(loss) < 1e-9
    t = torch.tensor([0, 99])
    noise = torch.randn(2, 3, dtype=torch.float64)
    yt = q_sample(torch.ones(2, 3, dtype=torch.float64), t, noise, sch)
    ab = sch.alpha_bars()[t].view(-1, 1)
    torch.testing.assert_close(yt, ab.sqrt() + (1 - ab).sqrt() * noise)
