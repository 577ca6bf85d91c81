"""``livespt train vit``: train the diffusion transformer and write weights + card."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from livespt.models.vit.estimator import WEIGHTS_DIR
from livespt.models.vit.train import preset, save, train


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is present, else ``cpu``; other names pass through."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available in this torch build")
    return name


def run_train(args: argparse.Namespace) -> Path:
    """Train with the parsed command-line arguments; return the weights path."""
    overrides: dict[str, object] = {"variant": args.variant, "seed": args.seed}
    if args.minutes is not None:
        if args.minutes <= 0:
            raise ValueError(f"--minutes must be > 0, got {args.minutes}")
        overrides["max_minutes"] = args.minutes
    if args.steps is not None:
        if args.steps < 1:
            raise ValueError(f"--steps must be >= 1, got {args.steps}")
        overrides["max_steps"] = args.steps
    init_from = getattr(args, "init_from", None)
    if init_from is not None:
        if not Path(init_from).is_file():
            raise ValueError(f"--init-from {init_from}: no such file")
        overrides["init_from"] = str(init_from)
    cfg = preset(args.preset, **overrides)
    device = resolve_device(args.device)
    if device == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    suffix = "" if args.variant == "image+features" else "-" + args.variant.replace("+", "-")
    out = Path(args.out) if args.out else WEIGHTS_DIR / f"vit-{args.preset}{suffix}.pt"
    print(f"training vit ({args.variant}, preset {args.preset}) on {device} for at most "
          f"{cfg.max_minutes} min / {cfg.max_steps} steps -> {out}", flush=True)
    model, history = train(cfg, device, log=lambda line: print(line, flush=True))
    card = save(model, cfg, history, out, metrics={"validation": history["best_validation"]})
    print(f"wrote {out} and {card}")
    return out


def run_train_localizer(args: argparse.Namespace) -> Path:
    """``livespt train localizer``: phi, then Psi on phi's estimates; one weights file."""
    from dataclasses import replace

    from livespt.models.ddpm.localizer import Localizer, save
    from livespt.models.ddpm.train import PRESETS, train_ddpm, train_phi

    if args.preset not in PRESETS:
        raise ValueError(f"--preset must be one of {sorted(PRESETS)}, got {args.preset!r}")
    cfg = replace(PRESETS[args.preset], seed=args.seed)
    if args.minutes is not None:
        if args.minutes <= 0:
            raise ValueError(f"--minutes must be > 0, got {args.minutes}")
        cfg = replace(cfg, max_minutes=args.minutes / 2)
    if args.steps is not None:
        if args.steps < 1:
            raise ValueError(f"--steps must be >= 1, got {args.steps}")
        cfg = replace(cfg, max_steps=args.steps)
    device = resolve_device(args.device)
    out = Path(args.out) if args.out else Path(f"localizer-{args.preset}.pt")
    print(f"training the localizer (preset {args.preset}) on {device}: phi, then the DDPM, "
          f"each for at most {cfg.max_minutes:g} min / {cfg.max_steps} steps -> {out}",
          flush=True)
    phi, h_phi = train_phi(cfg, device, log=lambda line: print("phi", line, flush=True))
    psi, h_psi = train_ddpm(cfg, phi, device, log=lambda line: print("ddpm", line, flush=True))
    save(Localizer(phi, psi, cfg.schedule, cfg.data.sigma_y_px), out)
    print(f"wrote {out} (phi: {h_phi['steps']} steps, DDPM: {h_psi['steps']} steps)")
    return out
