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
    """``livespt train localizer | phi | ddpm`` (``args.model``).

    ``localizer``: phi, then the DDPM on phi's estimates (half of ``--minutes`` each), one
    localizer file. ``phi``: phi alone, for all of ``--minutes``, a phi file. ``ddpm``: the
    DDPM alone, for all of ``--minutes``, on the phi of ``--phi-from`` (a phi file or a
    localizer file; also accepted by ``localizer``), a localizer file.
    """
    from dataclasses import replace
    from datetime import datetime, timezone

    from livespt.models.ddpm.evaluate import card_check
    from livespt.models.ddpm.localizer import (
        PHI_FORMAT,
        Localizer,
        load_phi,
        save,
        save_phi,
        write_card,
    )
    from livespt.models.ddpm.train import PRESETS, train_ddpm, train_phi

    what = getattr(args, "model", "localizer")
    if args.preset not in PRESETS:
        raise ValueError(f"--preset must be one of {sorted(PRESETS)}, got {args.preset!r}")
    cfg = replace(PRESETS[args.preset], seed=args.seed)
    phi_from = getattr(args, "phi_from", None)
    if what == "ddpm" and phi_from is None:
        raise ValueError("--phi-from is required by train ddpm (a file from livespt train phi "
                         "or train localizer)")
    if getattr(args, "init_from", None) is not None:
        raise ValueError(f"--init-from is for train vit; train {what} starts from scratch "
                         "(train ddpm --phi-from keeps a trained phi)")
    if what == "phi" and phi_from is not None:
        raise ValueError("--phi-from: train phi trains phi; use it with train ddpm")
    if args.minutes is not None:
        if args.minutes <= 0:
            raise ValueError(f"--minutes must be > 0, got {args.minutes}")
        # the whole budget goes to the one network trained here
        one = what == "phi" or phi_from is not None
        cfg = replace(cfg, max_minutes=args.minutes if one else args.minutes / 2)
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
    stem = "phi" if what == "phi" else "localizer"
    out = Path(args.out) if args.out else Path(f"{stem}-{args.preset}.pt")
    command = " ".join(["livespt", "train", what, "--preset", args.preset,
                        *(["--minutes", f"{args.minutes:g}"] if args.minutes else []),
                        *(["--phi-from", str(phi_from)] if phi_from else []),
                        *(["--kde-sigma", f"{kde_sigma:g}"] if kde_sigma else []),
                        "--seed", str(args.seed)])
    if phi_from is not None:
        phi, sigma_y, src_card = load_phi(phi_from)  # ValueError names the file
        if phi.config != cfg.phi:
            raise ValueError(f"--phi-from {phi_from}: its phi ({phi.config}) is not the "
                             f"preset's ({cfg.phi})")
        if sigma_y != cfg.data.sigma_y_px:
            raise ValueError(f"--phi-from {phi_from}: its phi draws KDEs of kernel "
                             f"{sigma_y:g} fine px, not {cfg.data.sigma_y_px:g} "
                             "(set --kde-sigma to match)")
        print(f"training the localizer's DDPM (preset {args.preset}) on {device} with the phi "
              f"of {phi_from}, for at most {cfg.max_minutes:g} min / {cfg.max_steps} steps "
              f"-> {out}", flush=True)
        phi = phi.to(device)
        h_phi = {"from": str(phi_from), "sha256": sha256(phi_from),
                 "card_history": src_card.get("history", {}).get("phi")}
    else:
        print(f"training {'phi' if what == 'phi' else 'the localizer'} (preset "
              f"{args.preset}) on {device}: {'phi' if what == 'phi' else 'phi, then the DDPM'}"
              f", {'' if what == 'phi' else 'each '}for at most {cfg.max_minutes:g} min / "
              f"{cfg.max_steps} steps -> {out}", flush=True)
        phi, h_phi = train_phi(cfg, device, log=lambda line: print("phi", line, flush=True))
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if what == "phi":
        save_phi(phi, cfg.data.sigma_y_px, out)
        card = write_card(out, {"name": out.stem, "date": when, "command": command,
                                "device": str(device), "torch": torch.__version__,
                                "training": cfg.to_dict(), "history": {"phi": h_phi}},
                          PHI_FORMAT)
        print(f"wrote {out} and {card} (phi: {h_phi.get('steps')} steps)")
        return out
    psi, h_psi = train_ddpm(cfg, phi, device, log=lambda line: print("ddpm", line, flush=True))
    loc = Localizer(phi, psi, cfg.schedule, cfg.data.sigma_y_px, cfg.target,
                    h_psi["target_scale"])
    save(loc, out)
    print("evaluating the card's check (livespt.models.ddpm.evaluate.CARD_CHECK)", flush=True)
    params = {name: sum(p.numel() for p in net.parameters()) for name, net in
              (("phi", phi), ("psi", psi))}
    card = write_card(out, {
        "name": out.stem, "date": when, "command": command,
        "device": str(device), "torch": torch.__version__, "parameters": params,
        "upsample": loc.upsample, "target": cfg.target,
        "training": cfg.to_dict(), "history": {"phi": h_phi, "ddpm": h_psi},
        "metrics": {"check": card_check(loc)}})
    print(f"wrote {out} and {card} (phi: {h_phi.get('steps', 'kept')} steps, DDPM: "
          f"{h_psi['steps']} steps)")
    return out
