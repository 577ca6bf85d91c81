"""Training of :class:`DiffusionViT` on windows simulated on the fly.

Two presets: ``cpu`` (a smaller model that trains to a useful state in about
25 minutes on 2 cores) and ``gpu`` (the report's "Normal" size, mixed precision,
large batches). Data are simulated on the training device, batch by batch, so
no dataset is stored and no window is seen twice.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
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
from livespt.models.vit.ood import FIT_BATCH, fit_guard
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
    ood_windows : int
        Fresh training windows for the out-of-distribution guard's mean and
        covariance, and as many again for its thresholds (0: no guard).
    init_from : str, optional
        Weights file (``.pt`` of the same architecture) to continue training from,
        with a new warm-up and cosine schedule over this run's budget; its feature
        standardisation is kept (None: a fresh model).
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
    ood_windows: int = 16384
    init_from: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


PRESETS: dict[str, TrainConfig] = {
    "cpu": TrainConfig(
        model=ViTConfig(dim=64, depth=4, heads=4, mlp_dim=128, cnn_channels=8,
                        patch_norm="frame"),
        batch_size=128, max_minutes=25.0, lr=1.5e-3),
    "gpu": TrainConfig(
        model=ViTConfig(dim=64, depth=6, heads=4, mlp_dim=128, cnn_channels=16,
                        patch_norm="frame"),
        batch_size=1024, max_minutes=25.0, lr=1e-3, warmup_steps=500, val_windows=8000,
        ood_windows=65536),
    "tiny": TrainConfig(
        model=ViTConfig(dim=32, depth=2, heads=2, mlp_dim=64, cnn_channels=8,
                        patch_norm="frame"),
        batch_size=32, max_steps=30, max_minutes=2.0, val_windows=128, val_every=10,
        ood_windows=512),
}
"""Named training configurations (``livespt train vit --preset NAME``)."""

FEATURES_DATA = replace(TrainingDistribution(), d_star_range=(0.005, 200.0),
                        exposure_ratio_range=(0.001, 1.0))
"""Training windows of the ``features`` variant (positions only: ``AnalyzeTracks``).

Wider than the image variants' in two ways. ``D*`` up to 200 px^2/frame: the image
models' limit of 20 comes from their 15 x 15 px patches (a step of ~6 px), which a
model of positions does not have, and tracks from other software reach further (the
AnDi generator's two-state tracks at 0.1 um / 50 ms reach 25; a model trained to 20
shrinks those towards its range, -28 % median). Exposures down to 0.001 frame
intervals: tracks from stroboscopic or short-exposure acquisitions, and instantaneous
simulated positions, are blur-free, which exposures of 0.2-1 intervals never are.
"""


def validation_set(n: int, dist: TrainingDistribution, device: torch.device,
                   seed: int = 12345, length: int = 10, snr: float = 10.0,
                   patch_norm: str = "window") -> list[Any]:
    """Fixed windows for model selection: ``length`` points at one SNR, a clean camera.

    ``patch_norm`` is the model's (``ViTConfig.patch_norm``); the windows are the
    same for both, only the normalisation of their patches differs.
    """
    gen = torch.Generator(device=device).manual_seed(seed)
    out = []
    for k in range(0, n, 500):
        m = min(500, n - k)
        out.append(simulate_windows(
            m, dist, gen, length=length, snr=torch.full((m,), snr, dtype=torch.float64),
            psf_sigma_px=1.2, exposure_ratio=1.0, realistic=False, patch_norm=patch_norm,
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
    norm = cfg.model.patch_norm
    if cfg.init_from:
        blob = torch.load(cfg.init_from, map_location="cpu", weights_only=True)
        if ViTConfig(**blob["config"]) != cfg.model:
            raise ValueError(f"init_from {cfg.init_from}: another architecture "
                             f"({blob['config']})")
        model.load_state_dict(blob["state_dict"], strict=False)
    else:
        feats = torch.cat([simulate_windows(256, cfg.data, gen, patch_norm=norm).inputs.features
                           for _ in range(8)])
        model.fit_feature_scaling(feats)
    val = validation_set(cfg.val_windows, cfg.data, dev, patch_norm=norm)
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
        batch = simulate_windows(cfg.batch_size, cfg.data, gen, patch_norm=norm)
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
    guard: dict[str, Any] = {}
    if cfg.ood_windows > 0:
        t1 = time.monotonic()
        guard = fit_guard(model, lambda: simulate_windows(
            FIT_BATCH, cfg.data, gen, patch_norm=norm).inputs, n_windows=cfg.ood_windows)
        guard["minutes"] = round((time.monotonic() - t1) / 60, 2)
        log(f"OOD guard: threshold {guard['threshold']:.2f} "
            f"(flags {guard['flagged_fraction_on_training_windows']:.4f} of training windows)")
    return model, {"steps": step, "windows_seen": seen, "ood_guard": guard,
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
    hist = {k: v for k, v in history.items() if k != "validation"}
    if cfg.init_from:
        # The runs the start weights came from, so that the card tells the whole story.
        parent = Path(cfg.init_from).with_suffix(".json")
        if parent.is_file():
            prev = json.loads(parent.read_text())
            before = prev.get("history", {})
            runs = list(before.get("previous_runs", []))
            runs.append({"file": Path(cfg.init_from).name, "sha256": prev.get("sha256"),
                         "training": prev.get("training"), "simulator": prev.get("simulator"),
                         "history": {k: v for k, v in before.items() if k != "previous_runs"}})
            hist["previous_runs"] = runs
    card = {
        "name": path.stem,
        "format": WEIGHTS_FORMAT,
        "architecture": cfg.model.to_dict(),
        "parameters": count_parameters(model),
        "training": {k: v for k, v in cfg.to_dict().items() if k not in ("model", "data")},
        "simulator": cfg.data.to_dict(),
        "history": hist,
        "validation_curve": history.get("validation", []),
        "metrics": metrics or {},
        "sha256": sha256(path),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "livespt_version": __version__,
        "units": "predicts log D* with D* = D * frame_interval / pixel_size^2 (px^2/frame)",
    }
    return write_card(path, card)


def preset(name: str, **overrides: Any) -> TrainConfig:
    """A named preset with fields replaced (``variant``, ``max_minutes``, ...).

    The ``features`` variant trains on :data:`FEATURES_DATA` unless ``data`` is given.
    """
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
    cfg = PRESETS[name]
    model_keys = {k: overrides.pop(k) for k in list(overrides)
                  if k in ViTConfig.__dataclass_fields__}
    if model_keys:
        cfg = replace(cfg, model=replace(cfg.model, **model_keys))
    if cfg.model.variant == "features" and "data" not in overrides:
        cfg = replace(cfg, data=FEATURES_DATA)
    return replace(cfg, **overrides) if overrides else cfg


def refit_guard(path: Path, data: TrainingDistribution | None = None, n_windows: int = 16384,
                seed: int = 7, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Fit (again) the out-of-distribution guard of a weights file, in place.

    The network's weights are untouched; the guard's buffers are replaced, the
    file rewritten, and its card's ``history.ood_guard`` and ``sha256`` updated.
    Used for weights trained before the guard existed (their distribution is
    read from their card) or trained with an older guard.

    Parameters
    ----------
    path : Path
        A ``.pt`` file with its card.
    data : TrainingDistribution, optional
        Where the fitting windows come from; default: the card's ``simulator``.
    n_windows : int
        Windows for the mean and covariance, and as many for the thresholds.
    seed : int
        Seed of the fitting windows.
    log : callable
        Receives one line.

    Returns
    -------
    dict
        What the card records.
    """
    from livespt.models.vit.weights import read_card

    path = Path(path)
    card = read_card(path)
    blob = torch.load(path, map_location="cpu", weights_only=True)
    model = DiffusionViT(ViTConfig(**blob["config"]))
    model.load_state_dict(blob["state_dict"], strict=False)
    model.eval()
    if data is None:
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                                  for k, v in card["simulator"].items()
                                  if k in TrainingDistribution.__dataclass_fields__}
        data = TrainingDistribution(**fields)
    gen = torch.Generator().manual_seed(seed)
    norm = model.config.patch_norm
    t0 = time.monotonic()
    guard = fit_guard(model, lambda: simulate_windows(FIT_BATCH, data, gen,
                                                      patch_norm=norm).inputs,
                      n_windows=n_windows)
    guard["minutes"] = round((time.monotonic() - t0) / 60, 2)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"format": blob["format"], "config": blob["config"], "state_dict": state}, path)
    card.setdefault("history", {})["ood_guard"] = guard
    card["simulator_for_ood_guard"] = data.to_dict()
    card["sha256"] = sha256(path)
    write_card(path, card)
    log(f"{path.name}: OOD guard threshold {guard['threshold']:.2f}, flags "
        f"{guard['flagged_fraction_on_training_windows']:.4f} of training windows")
    return guard
