"""``livespt localize``: localization with uncertainty of a movie, in this process or on a server.

Writes ``DIR/mean.tif`` and ``DIR/variance.tif`` (the mean and per-pixel variance of the
localizer's KDE samples, float32 stacks on its finer grid, ImageJ-calibrated so that Fiji
overlays them on the movie), ``DIR/emitters.csv`` (:data:`EMITTER_COLUMNS`) and
``DIR/summary.json`` (settings, model, counts, warnings, timing).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from livespt.server import __version__
from livespt.server.io import strict_json
from livespt.server.io.tiff import read_movie, write_maps
from livespt.server.pipeline.localize import (
    EMITTER_COLUMNS,
    Drawn,
    Localization,
    LocalizeSettings,
    TrainedOn,
    join_localizations,
    localize_frames,
)

FLAGS = {"pixel_size_um": "--pixel-size", "samples": "--samples", "sampler": "--sampler",
         "steps": "--steps", "seed": "--seed", "threshold": "--threshold",
         "offset_adu": "--camera-offset", "gain_adu_per_e": "--camera-gain"}
"""Settings fields by the flag that sets them (errors name the flag)."""


def _progress(done: int, total: int) -> None:
    if sys.stderr.isatty():
        print(f"\rlocalized {done}/{total} frames", end="" if done < total else "\n",
              file=sys.stderr, flush=True)


def run_localize(args: argparse.Namespace) -> dict[str, Any]:
    """Run ``livespt localize``; return the summary written to ``summary.json``."""
    t0 = time.perf_counter()
    path = Path(args.movie)
    if not path.is_file():
        raise ValueError(f"FRAMES: {path} is not a file")
    if args.server and args.weights:
        raise ValueError("--weights: the server uses its own localizer; drop --weights "
                         "(or --server, to localize in this process)")
    if args.frames_per_call < 1:
        raise ValueError(f"--frames-per-call must be >= 1, got {args.frames_per_call}")
    frames, cal = read_movie(path)
    px = args.pixel_size if args.pixel_size is not None else cal.pixel_size_um
    if px is None:
        raise ValueError(f"--pixel-size: {path.name} carries no micrometre calibration; give "
                         "the camera pixel size in the sample (um)")
    settings = LocalizeSettings(pixel_size_um=px, samples=args.samples, sampler=args.sampler,
                                steps=args.steps, seed=args.seed, threshold=args.threshold,
                                offset_adu=args.camera_offset, gain_adu_per_e=args.camera_gain,
                                names=FLAGS)
    if args.server:
        from livespt.server.cli.connect import connect

        with connect(args, args.server) as client:
            try:
                client.wait_ready(args.connect_timeout)
            except ConnectionError:
                raise ConnectionError(
                    f"no LiveSPT server answered at {args.server} within "
                    f"{args.connect_timeout:g} s (start one with `livespt serve`, or drop "
                    "--server to localize in this process; a TLS server needs --tls-ca; wait "
                    "longer with --connect-timeout S)") from None
            result = client.localize(frames, settings, frames_per_call=args.frames_per_call,
                                     on_part=_progress)
            model = next((m.name for m in client.info().models if m.kind == "localizer"), "")
        where = "server " + args.server
    else:
        result, model = _in_process(frames, settings, args)
        where = "in-process"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_maps(out / "mean.tif", result.mean, px, result.upsample)
    write_maps(out / "variance.tif", result.variance, px, result.upsample)
    result.emitters.to_csv(out / "emitters.csv", index=False, columns=list(EMITTER_COLUMNS))
    summary: dict[str, Any] = {
        "livespt_version": __version__,
        "input": {"file": str(path), "frames": int(frames.shape[0]),
                  "height": int(frames.shape[1]), "width": int(frames.shape[2]),
                  "dtype": str(frames.dtype)},
        "calibration": {"pixel_size_um": px,
                        "pixel_size_source": "flag" if args.pixel_size is not None else "file",
                        "map_pixel_um": px / result.upsample, "upsample": result.upsample},
        "settings": {"samples": settings.samples, "sampler": settings.sampler,
                     "steps": settings.steps if settings.sampler == "fast" else 100,
                     "seed": settings.seed, "threshold": settings.threshold,
                     "camera_offset_adu": settings.offset_adu,
                     "camera_gain_adu_per_e": settings.gain_adu_per_e},
        "analysis": where, "model": model,
        "counts": {"emitters": len(result.emitters),
                   "frames_with_emitters": int(result.emitters["frame"].nunique())},
        "warnings": [{"code": c, "message": m} for c, m in result.warnings],
        "timing_s": {"total": round(time.perf_counter() - t0, 3)},
        "files": ["mean.tif", "variance.tif", "emitters.csv", "summary.json"],
    }
    (out / "summary.json").write_text(strict_json.dumps(summary, indent=2))
    for code, msg in result.warnings:
        print(f"warning [{code}]: {msg}")
    print(f"{frames.shape[0]} frames: {len(result.emitters)} emitters; wrote {out}/"
          + ", ".join(summary["files"]))
    return summary


def _in_process(frames: np.ndarray, settings: LocalizeSettings, args: argparse.Namespace
                ) -> tuple[Localization, str]:
    """Localize with a localizer loaded here (``--weights`` or the shipped one)."""
    import torch

    from livespt.models.ddpm.localizer import load, shipped_localizer

    weights = Path(args.weights) if args.weights else shipped_localizer()
    if weights is None:
        raise ValueError("--weights: no localizer is installed; train one with livespt train "
                         "localizer and pass its file")
    loc = load(weights)
    trained = TrainedOn.from_card(loc.card)

    def draw(x: np.ndarray, s: LocalizeSettings, first: int) -> Drawn:
        smp, est = loc.draw(torch.from_numpy(x), s.samples, s.sampler, s.steps, s.seed, first)
        return smp.numpy(), est.numpy()

    parts = []
    step = args.frames_per_call
    for start in range(0, len(frames), step):
        parts.append(localize_frames(draw, frames[start:start + step], settings, loc.upsample,
                                     loc.sigma_y_px, start, trained))
        _progress(min(start + step, len(frames)), len(frames))
    return join_localizations(parts), str(loc.card.get("name", weights.stem))
