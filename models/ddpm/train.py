"""Training of phi (the KDE network) and Psi (the conditional DDPM) on SMLM frames made on the fly.

Frames and their KDE targets come from :func:`~livespt.models.simulate.simulate_smlm`,
batch by batch, with the camera and PSF randomised per batch around the seed's settings
(:class:`SmlmDistribution`), so that a model does not learn one camera. phi is trained
first (mean squared error to the KDE, as in the seed); Psi is then trained with phi frozen,
its estimate the condition, on the L1 noise loss of :mod:`~livespt.models.ddpm.diffusion`.
Both keep an exponential moving average of their weights; the average is what is
validated and saved.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from livespt.models.ddpm.diffusion import Schedule, l1_loss
from livespt.models.ddpm.networks import (
    ConditionalUNet,
    KdeNet,
    KdeNetConfig,
    UNetConfig,
    normalise_frames,
)
from livespt.models.simulate import simulate_smlm


@dataclass(frozen=True)
class SmlmDistribution:
    """What training frames are drawn from (each batch draws its own camera and PSF).

    Attributes
    ----------
    frame_px, upsample, sigma_y_px, disc_radius_px : int, int, float, float
        Frame size, KDE refinement and kernel (fine px), emitter disc (seed 004's frame
        size, refinement and disc; the kernel is 2 fine px, not the first models' 3, whose
        read-out cannot separate emitters closer than 1.5 px: see ``emitters.py``).
    n_emitters : (int, int)
        Emitters per frame, inclusive range.
    i0_range : (float, float)
        Photons per emitter, drawn log-uniformly per batch (seed: 200).
    sigma_x_range : (float, float)
        PSF width in pixels, uniform per batch (seed: 0.92).
    background_range : (float, float)
        Background photons per pixel, uniform per batch (seed: 0).
    read_noise_range : (float, float)
        Read noise in electrons, uniform per batch (seed: 0).
    """

    frame_px: int = 20
    upsample: int = 4
    sigma_y_px: float = 2.0
    disc_radius_px: float = 7.0
    n_emitters: tuple[int, int] = (1, 5)
    i0_range: tuple[float, float] = (100.0, 1000.0)
    sigma_x_range: tuple[float, float] = (0.8, 1.2)
    background_range: tuple[float, float] = (0.0, 20.0)
    read_noise_range: tuple[float, float] = (0.0, 3.0)

    def batch(self, n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """``n`` frames (photo-electrons) and their KDE targets, one camera and PSF draw."""
        u = torch.rand(4, generator=gen, dtype=torch.float64).tolist()
        lo, hi = self.i0_range
        i0 = math.exp(math.log(lo) + u[0] * (math.log(hi) - math.log(lo)))
        sx = self.sigma_x_range[0] + u[1] * (self.sigma_x_range[1] - self.sigma_x_range[0])
        bg = self.background_range[0] + u[2] * (self.background_range[1]
                                                - self.background_range[0])
        rn = self.read_noise_range[0] + u[3] * (self.read_noise_range[1]
                                                - self.read_noise_range[0])
        b = simulate_smlm(n, n_emitters=self.n_emitters, frame_px=self.frame_px,
                          upsample=self.upsample, sigma_x_px=sx, i0=i0,
                          disc_radius_px=self.disc_radius_px, sigma_y_px=self.sigma_y_px,
                          background_photons=bg, read_noise_e=rn, generator=gen)
        return b.frames, b.kde


@dataclass(frozen=True)
class LocalizerTrainConfig:
    """One training run of phi or of Psi.

    Attributes
    ----------
    phi, unet : KdeNetConfig, UNetConfig
        Architectures.
    schedule : Schedule
        The DDPM's noise schedule.
    data : SmlmDistribution
        Training frames.
    batch_size, max_steps : int
        Frames per step, and an upper bound on steps.
    max_minutes : float
        Wall-clock budget (training stops at whichever limit comes first).
    lr : float
        AdamW learning rate (cosine decay over the budget).
    ema_decay : float
        Decay of the weights' moving average, per step.
    seed : int
        Seed of the initialisation and of the data.
    target : {"residual", "kde"}
        What Psi learns to draw: the KDE minus phi's estimate (default), or the KDE (the
        seed's). The residual is zero wherever phi is right, so a small network trained
        briefly starts from phi's answer instead of from noise.
    """

    phi: KdeNetConfig = field(default_factory=KdeNetConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    schedule: Schedule = field(default_factory=Schedule)
    data: SmlmDistribution = field(default_factory=SmlmDistribution)
    batch_size: int = 32
    max_steps: int = 100_000
    max_minutes: float = 20.0
    lr: float = 1e-3
    ema_decay: float = 0.995
    seed: int = 0
    target: str = "residual"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


def _ema(ema: nn.Module, model: nn.Module, decay: float, step: int) -> None:
    d = min(decay, (1.0 + step) / (10.0 + step))
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters(), strict=True):
            e.mul_(d).add_(p.detach(), alpha=1.0 - d)


def _loop(model: nn.Module, loss_of: Callable[[Tensor, Tensor, torch.Generator], Tensor],
          cfg: LocalizerTrainConfig, device: torch.device, log: Callable[[str], None]
          ) -> tuple[nn.Module, dict[str, Any]]:
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    ema = copy.deepcopy(model).eval()
    t0 = time.monotonic()
    budget = cfg.max_minutes * 60.0
    losses: list[float] = []
    step = 0
    while step < cfg.max_steps and time.monotonic() - t0 < budget:
        frac = min(1.0, (time.monotonic() - t0) / budget, step / cfg.max_steps)
        for g in opt.param_groups:
            g["lr"] = cfg.lr * 0.5 * (1.0 + math.cos(math.pi * frac))
        frames, kde = cfg.data.batch(cfg.batch_size, gen)
        loss = loss_of(frames.to(device), kde.to(device), gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _ema(ema, model, cfg.ema_decay, step)
        losses.append(float(loss.detach()))
        step += 1
        if step % 100 == 0:
            log(f"step {step}: loss {sum(losses[-100:]) / 100:.4f} "
                f"({time.monotonic() - t0:.0f} s)")
    return ema, {"steps": step, "frames_seen": step * cfg.batch_size,
                 "seconds": round(time.monotonic() - t0, 1),
                 "final_loss": sum(losses[-100:]) / max(1, len(losses[-100:]))}


def train_phi(cfg: LocalizerTrainConfig, device: str | torch.device = "cpu",
              log: Callable[[str], None] = print) -> tuple[KdeNet, dict[str, Any]]:
    """Train phi (mean squared error of the KDE); return its weight average and history.

    Parameters
    ----------
    cfg : LocalizerTrainConfig
        What to train, for how long.
    device : str or torch.device
        Training device (data are simulated on the CPU).
    log : callable
        Receives a progress line every 100 steps.

    Returns
    -------
    KdeNet
        In eval mode.
    dict
        Steps, frames seen, seconds, final loss.
    """
    dev = torch.device(device)
    torch.manual_seed(cfg.seed)
    phi = KdeNet(cfg.phi).to(dev)

    def loss_of(frames: Tensor, kde: Tensor, gen: torch.Generator) -> Tensor:
        return ((phi(normalise_frames(frames)) - kde[:, None]) ** 2).mean()

    ema, history = _loop(phi, loss_of, cfg, dev, log)
    assert isinstance(ema, KdeNet)
    return ema, history


def train_ddpm(cfg: LocalizerTrainConfig, phi: KdeNet, device: str | torch.device = "cpu",
               log: Callable[[str], None] = print) -> tuple[ConditionalUNet, dict[str, Any]]:
    """Train Psi with ``phi`` frozen as its condition; return its weight average and history.

    Parameters
    ----------
    cfg : LocalizerTrainConfig
        What to train, for how long.
    phi : KdeNet
        The trained KDE network (not changed).
    device : str or torch.device
        Training device.
    log : callable
        Receives a progress line every 100 steps.

    Returns
    -------
    ConditionalUNet
        In eval mode.
    dict
        Steps, frames seen, seconds, final loss.
    """
    if cfg.target not in ("residual", "kde"):
        raise ValueError(f"target must be 'residual' or 'kde', got {cfg.target!r}")
    dev = torch.device(device)
    torch.manual_seed(cfg.seed)
    psi = ConditionalUNet(cfg.unet).to(dev)
    phi = phi.to(dev).eval()

    def target(frames: Tensor, kde: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            cond = phi(normalise_frames(frames))
        return (kde[:, None] - cond if cfg.target == "residual" else kde[:, None]), cond

    scale = target_scale(lambda gen: target(*cfg.data.batch(cfg.batch_size, gen)),
                         torch.Generator().manual_seed(cfg.seed + 2), dev)
    log(f"target scale {scale:.3g} (the {cfg.target} target's RMS is {1 / scale:.3g})")

    def loss_of(frames: Tensor, kde: Tensor, gen: torch.Generator) -> Tensor:
        y0, cond = target(frames, kde)
        return l1_loss(lambda y, t: psi(y, t, cond), y0 * scale, cfg.schedule, gen)

    ema, history = _loop(psi, loss_of, cfg, dev, log)
    assert isinstance(ema, ConditionalUNet)
    history["target_scale"] = scale
    return ema, history


def target_scale(draw: Callable[[torch.Generator], tuple[Tensor, Tensor]],
                 gen: torch.Generator, device: torch.device, batches: int = 8) -> float:
    """``1 / RMS`` of the diffusion's target over a few batches: the target is scaled by it.

    The noise of the forward process has unit variance. A KDE (mostly zeros) or its
    residual from phi has an RMS of 0.02-0.1, so unscaled, the noise predictor's small
    errors are divided by ``sqrt(abar_t)`` into errors larger than the whole signal at
    most steps: the first residual model (loss 0.02) drew samples with 57 % of their
    pixels above 0.3 where phi had 2 %. Scaled to unit RMS (the role of latent
    diffusion's ``scale_factor``), the signal dominates again.

    Parameters
    ----------
    draw : callable
        ``draw(generator) -> (target, condition)`` of one training batch.
    gen : torch.Generator
        Source of the batches.
    device : torch.device
        Unused here beyond the draw (kept for symmetry with training).
    batches : int
        Batches averaged.

    Returns
    -------
    float
    """
    sq = [float((draw(gen)[0].to(torch.float64) ** 2).mean()) for _ in range(batches)]
    return 1.0 / max(math.sqrt(sum(sq) / len(sq)), 1e-6)


PRESETS: dict[str, LocalizerTrainConfig] = {
    "cpu": LocalizerTrainConfig(phi=KdeNetConfig(channels=16),
                                unet=UNetConfig(channels=8, multipliers=(1, 2, 4, 8)),
                                batch_size=32, max_minutes=20.0),
    "gpu": LocalizerTrainConfig(phi=KdeNetConfig(channels=64),
                                unet=UNetConfig(channels=64, multipliers=(1, 2, 4, 8, 8)),
                                batch_size=256, max_minutes=10.0, lr=5e-4),
    "tiny": LocalizerTrainConfig(phi=KdeNetConfig(channels=4, dilations=(1, 2)),
                                 unet=UNetConfig(channels=4, multipliers=(1, 2),
                                                 attention_heads=1, time_dim=16),
                                 batch_size=4, max_steps=3, max_minutes=1.0),
}
"""``livespt train localizer --preset NAME``: ``cpu`` (each network about 1 s per step on one
core of the 2-core machine), ``gpu`` (the seed's U-Net multipliers ``(1, 2, 4, 8, 8)``),
``tiny`` (a smoke test). ``max_minutes`` is each network's budget."""
