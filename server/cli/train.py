"""``livespt train vit``: train the diffusion transformer and write weights + card."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from livespt.models.vit.estimator import WEIGHTS_DIR
from livespt.models.vit.train import preset, save, train
from livespt.models.vit.weights import sha256


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
    from datetime import datetime, timezone

    from livespt.models.ddpm.evaluate import card_check
    from livespt.models.ddpm.localizer import Localizer, save, write_card
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
    kde_sigma = getattr(args, "kde_sigma", None)
    if kde_sigma is not None:
        if not (math.isfinite(kde_sigma) and 0.5 <= kde_sigma <= 8):
            raise ValueError(f"--kde-sigma must be in [0.5, 8] fine pixels, got {kde_sigma}")
        cfg = replace(cfg, data=replace(cfg.data, sigma_y_px=kde_sigma))
    device = resolve_device(args.device)
    out = Path(args.out) if args.out else Path(f"localizer-{args.preset}.pt")
    phi_from = getattr(args, "phi_from", None)
    if phi_from is not None:
        from livespt.models.ddpm.localizer import load

        src = load(phi_from)  # ValueError names the file
        if src.phi.config != cfg.phi:
            raise ValueError(f"--phi-from {phi_from}: its phi ({src.phi.config}) is not the "
                             f"preset's ({cfg.phi})")
        if src.sigma_y_px != cfg.data.sigma_y_px:
            raise ValueError(f"--phi-from {phi_from}: its phi draws KDEs of kernel "
                             f"{src.sigma_y_px:g} fine px, not {cfg.data.sigma_y_px:g} "
                             "(set --kde-sigma to match)")
        if args.minutes is not None:
            cfg = replace(cfg, max_minutes=args.minutes)  # all of it for the DDPM
        print(f"training the localizer's DDPM (preset {args.preset}) on {device} with the phi "
              f"of {phi_from}, for at most {cfg.max_minutes:g} min / {cfg.max_steps} steps "
              f"-> {out}", flush=True)
        phi = src.phi
        h_phi = {"from": str(phi_from), "sha256": sha256(phi_from),
                 "card_history": src.card.get("history", {}).get("phi")}
    else:
        print(f"training the localizer (preset {args.preset}) on {device}: phi, then the "
              f"DDPM, each for at most {cfg.max_minutes:g} min / {cfg.max_steps} steps -> "
              f"{out}", flush=True)
        phi, h_phi = train_phi(cfg, device, log=lambda line: print("phi", line, flush=True))
    psi, h_psi = train_ddpm(cfg, phi, device, log=lambda line: print("ddpm", line, flush=True))
    loc = Localizer(phi, psi, cfg.schedule, cfg.data.sigma_y_px, cfg.target,
                    h_psi["target_scale"])
    save(loc, out)
    print("evaluating the card's check (livespt.models.ddpm.evaluate.CARD_CHECK)", flush=True)
    params = {name: sum(p.numel() for p in net.parameters()) for name, net in
              (("phi", phi), ("psi", psi))}
    card = write_card(out, {
        "name": out.stem, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["livespt", "train", "localizer", "--preset", args.preset,
                             *(["--minutes", f"{args.minutes:g}"] if args.minutes else []),
                             *(["--phi-from", str(phi_from)] if phi_from else []),
                             *(["--kde-sigma", f"{kde_sigma:g}"] if kde_sigma else []),
                             "--seed", str(args.seed)]),
        "device": str(device), "torch": torch.__version__, "parameters": params,
        "upsample": loc.upsample, "target": cfg.target,
        "training": cfg.to_dict(), "history": {"phi": h_phi, "ddpm": h_psi},
        "metrics": {"check": card_check(loc)}})
    print(f"wrote {out} and {card} (phi: {h_phi.get('steps', 'kept')} steps, DDPM: "
          f"{h_psi['steps']} steps)")
    return out
