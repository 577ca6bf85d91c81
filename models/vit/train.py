"""Training of :class:`DiffusionViT` on windows simulated on the fly.

Two presets: ``cpu`` (a smaller model that trains to a useful state in about
25 minutes on 2 cores) and ``gpu`` (the report's "Normal" size, mixed precision,
large batches). Data are simulated on the training device, batch by batch, so
no dataset is stored and no window is seen twice.
"""

from __future__ import annotations

import copy
import datetime as _dt
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from livespt.models import __version__
from livespt.models.vit.data import TrainingDistribution, simulate_windows
from livespt.models.vit.inputs import WindowInputs
from livespt.models.vit.model import DiffusionViT, ViTConfig, count_parameters, gaussian_nll
from livespt.models.vit.weights import WEIGHTS_FORMAT, sha256, write_card


@dataclass(frozen=True)
class TrainConfig:
    """One training run.

    Attributes
    ----------
    model : ViTConfig
        Architecture.
    data : TrainingDistribution
        What the windows are drawn from.
    batch_size : int
        Windows per optimisation step.
    max_steps : int
        Upper bound on steps.
    max_minutes : float
        Wall-clock budget; training stops at whichever limit comes first.
    lr : float
        Peak AdamW learning rate (linear warm-up, cosine decay over the budget).
    weight_decay : float
        AdamW weight decay.
    warmup_steps : int
        Linear warm-up steps.
    val_windows : int
        Windows in the fixed validation set (10 points, SNR 10, clean camera).
    val_every : int
        Steps between validations; the best validation state is kept.
    ema_decay : float
        Weights are validated, kept and shipped as an exponential moving average
        of the training weights with this decay per step (0: no averaging); it
        removes most of the checkpoint-to-checkpoint noise of on-the-fly data.
    seed : int
        Seed of the model initialisation and of the data stream.
    """

    model: ViTConfig = field(default_factory=ViTConfig)
    data: TrainingDistribution = field(default_factory=TrainingDistribution)
    batch_size: int = 128
    max_steps: int = 100_000
    max_minutes: float = 25.0
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 200
    val_windows: int = 2000
    val_every: int = 250
    ema_decay: float = 0.998
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


PRESETS: dict[str, TrainConfig] = {
    "cpu": TrainConfig(
        model=ViTConfig(dim=64, depth=4, heads=4, mlp_dim=128, cnn_channels=8),
        batch_size=128, max_minutes=25.0, lr=1.5e-3),
    "gpu": TrainConfig(
        model=ViTConfig(dim=64, depth=6, heads=4, mlp_dim=128, cnn_channels=16),
        batch_size=1024, max_minutes=25.0, lr=1e-3, warmup_steps=500, val_windows=8000),
    "tiny": TrainConfig(
        model=ViTConfig(dim=32, depth=2, heads=2, mlp_dim=64, cnn_channels=8),
        batch_size=32, max_steps=30, max_minutes=2.0, val_windows=128, val_every=10),
}
"""Named training configurations (``livespt train vit --preset NAME``)."""


def validation_set(n: int, dist: TrainingDistribution, device: torch.device,
                   seed: int = 12345, length: int = 10, snr: float = 10.0) -> list[Any]:
    """Fixed windows for model selection: ``length`` points at one SNR, a clean camera."""
    gen = torch.Generator(device=device).manual_seed(seed)
    out = []
    for k in range(0, n, 500):
        m = min(500, n - k)
        out.append(simulate_windows(
            m, dist, gen, length=length, snr=torch.full((m,), snr, dtype=torch.float64),
            psf_sigma_px=1.2, exposure_ratio=1.0, realistic=False,
            d_star=torch.exp(torch.empty(m, dtype=torch.float64, device=device).uniform_(
                math.log(0.02), math.log(5.0), generator=gen))))
    return out


@torch.no_grad()
def evaluate(model: DiffusionViT, batches: list[Any]) -> dict[str, float]:
    """Relative RMSE of D, NLL and 90 % coverage on fixed batches."""
    model.eval()
    rel, nll, cover = [], [], []
    for b in batches:
        mu, ls = _forward(model, b.inputs)
        t = b.log_d_star
        rel.append(torch.exp(mu - t) - 1.0)
        nll.append(ls + 0.5 * ((t - mu) * torch.exp(-ls)) ** 2)
        cover.append(((t - mu).abs() <= 1.6449 * torch.exp(ls)).float())
    r = torch.cat(rel)
    return {"rel_rmse": float(r.pow(2).mean().sqrt()),
            "median_rel_bias": float(r.median()),
            "nll": float(torch.cat(nll).mean()),
            "coverage90": float(torch.cat(cover).mean())}


@torch.no_grad()
def _ema_update(ema: DiffusionViT, model: DiffusionViT, decay: float, step: int) -> None:
    """``ema = d ema + (1 - d) model`` with ``d = min(decay, (1 + step) / (10 + step))``."""
    d = min(decay, (1.0 + step) / (10.0 + step))
    for e, p in zip(ema.state_dict().values(), model.state_dict().values(), strict=True):
        if e.dtype.is_floating_point:
            e.mul_(d).add_(p.detach(), alpha=1.0 - d)
        else:
            e.copy_(p)


def _forward(model: DiffusionViT, x: WindowInputs) -> tuple[torch.Tensor, torch.Tensor]:
    return model(x.images, x.geometry, x.valid, x.features, x.acquisition)


def train(
    cfg: TrainConfig,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] = print,
) -> tuple[DiffusionViT, dict[str, Any]]:
    """Train a model; return it (best validation state) and its history.

    Parameters
    ----------
    cfg : TrainConfig
        What to train, for how long.
    device : str or torch.device
        Training (and simulation) device; mixed precision (bf16) on CUDA.
    log : callable
        Receives one progress line per validation.

    Returns
    -------
    model : DiffusionViT
        In eval mode, on ``device``.
    history : dict
        Steps, windows seen, wall time, validation metrics.
    """
    dev = torch.device(device)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator(device=dev).manual_seed(cfg.seed + 1)
    model = DiffusionViT(cfg.model).to(dev)
    feats = torch.cat([simulate_windows(256, cfg.data, gen).inputs.features for _ in range(8)])
    model.fit_feature_scaling(feats)
    val = validation_set(cfg.val_windows, cfg.data, dev)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    amp = dev.type == "cuda"
    t0 = time.monotonic()
    budget = cfg.max_minutes * 60.0
    ema = copy.deepcopy(model).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    best: dict[str, Any] = {"nll": math.inf}
    best_state: dict[str, torch.Tensor] = {}
    history: list[dict[str, Any]] = []
    step = seen = 0
    while step < cfg.max_steps and time.monotonic() - t0 < budget:
        frac = min(1.0, (time.monotonic() - t0) / budget, step / cfg.max_steps)
        lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) * 0.5 * (1 + math.cos(math.pi * frac))
        for g in opt.param_groups:
            g["lr"] = lr
        model.train()
        batch = simulate_windows(cfg.batch_size, cfg.data, gen)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            mu, ls = _forward(model, batch.inputs)
        loss = gaussian_nll(mu.float(), ls.float(), batch.log_d_star)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        seen += cfg.batch_size
        _ema_update(ema, model, cfg.ema_decay, step)
        if step % cfg.val_every == 0 or step == cfg.max_steps:
            m = evaluate(ema, val)
            m.update(step=step, windows=seen, minutes=round((time.monotonic() - t0) / 60, 2),
                     train_nll=float(loss.detach()))
            history.append(m)
            log(f"step {step:6d}  windows {seen:8d}  {m['minutes']:6.2f} min  "
                f"val rel RMSE {m['rel_rmse']:.3f}  NLL {m['nll']:.3f}  "
                f"coverage {m['coverage90']:.3f}")
            if m["nll"] < best["nll"]:
                best = m
                best_state = {k: v.detach().clone() for k, v in ema.state_dict().items()}
    if not history or history[-1]["step"] != step:
        m = evaluate(ema, val)
        m.update(step=step, windows=seen, minutes=round((time.monotonic() - t0) / 60, 2))
        history.append(m)
        if m["nll"] < best["nll"]:
            best, best_state = m, ema.state_dict()
    model.load_state_dict(best_state if best_state else ema.state_dict())
    model.eval()
    return model, {"steps": step, "windows_seen": seen,
                   "minutes": round((time.monotonic() - t0) / 60, 2),
                   "best_validation": best, "validation": history,
                   "parameters": count_parameters(model),
                   "device": str(dev), "torch": torch.__version__}


def save(model: DiffusionViT, cfg: TrainConfig, history: dict[str, Any], path: Path,
         metrics: dict[str, Any] | None = None) -> Path:
    """Write the weights (``path``) and their JSON card (``path`` with ``.json``).

    The card records the architecture, training configuration, simulator
    parameters, metrics, the weights' sha256 and the date;
    :meth:`livespt.models.vit.estimator.ViTEstimator.load` checks it.

    Parameters
    ----------
    model : DiffusionViT
        The trained network (saved from CPU copies of its tensors).
    cfg : TrainConfig
        How it was trained.
    history : dict
        What :func:`train` returned beside the model.
    path : Path
        The weights file to write (parent folders are created).
    metrics : dict, optional
        Extra metrics for the card.

    Returns
    -------
    Path
        The card written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"format": WEIGHTS_FORMAT, "config": cfg.model.to_dict(), "state_dict": state},
               path)
    card = {
        "name": path.stem,
        "format": WEIGHTS_FORMAT,
        "architecture": cfg.model.to_dict(),
        "parameters": count_parameters(model),
        "training": {k: v for k, v in cfg.to_dict().items() if k not in ("model", "data")},
        "simulator": cfg.data.to_dict(),
        "history": {k: v for k, v in history.items() if k != "validation"},
        "validation_curve": history.get("validation", []),
        "metrics": metrics or {},
        "sha256": sha256(path),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "livespt_version": __version__,
        "units": "predicts log D* with D* = D * frame_interval / pixel_size^2 (px^2/frame)",
    }
    return write_card(path, card)


def preset(name: str, **overrides: Any) -> TrainConfig:
    """A named preset with fields replaced (``variant``, ``max_minutes``, ...)."""
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
    cfg = PRESETS[name]
    model_keys = {k: overrides.pop(k) for k in list(overrides)
                  if k in ViTConfig.__dataclass_fields__}
    if model_keys:
        cfg = replace(cfg, model=replace(cfg.model, **model_keys))
    return replace(cfg, **overrides) if overrides else cfg
