"""The localizer against the exact references, at the seed's settings, on our simulator.

Frames from ``simulate_smlm`` (20 x 20 px, PSF 0.92 px, i0 = 200, emitters on a disc of
radius 7 px; background and read noise as given). For a weights file from
``livespt train localizer``:

* emitters (1-5 per frame): precision and recall of the emitters read from the mean of
  the samples, matched one to one within 0.5 px;
* isolated emitters: RMSE of the positions against the exact CRLB, the reported SD
  (over the DDPM's samples) against the MCMC posterior SD of the same frame, and the
  z-scores ``error / reported SD``;
* speed: frames/s of the fast and the ancestral samplers at the same number of samples.

Only our own simulator so far: a third-party SMLM simulator is not wired in yet, so these
numbers are not evidence about other data. Writes JSON (default
``benchmarks/results/localizer.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights", type=Path, help="a file from livespt train localizer")
    ap.add_argument("--frames", type=int, default=200, help="frames per experiment")
    ap.add_argument("--samples", type=int, default=32, help="DDPM samples per frame")
    ap.add_argument("--steps", type=int, default=20, help="steps of the fast sampler")
    ap.add_argument("--background", type=float, default=2.0)
    ap.add_argument("--read-noise", type=float, default=1.0)
    ap.add_argument("--mcmc-frames", type=int, default=20,
                    help="isolated frames also sampled by MCMC (slow)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/localizer.json")
    args = ap.parse_args(argv)

    from livespt.models.ddpm.emitters import match_positions
    from livespt.models.ddpm.localizer import load
    from livespt.models.localize import crlb, fit_emitters, pack, sample_posterior
    from livespt.models.simulate import simulate_smlm

    loc = load(args.weights)
    sim = {"background_photons": args.background, "read_noise_e": args.read_noise}

    # 1. Detection, 1-5 emitters per frame.
    batch = simulate_smlm(args.frames, n_emitters=(1, 5), seed=11, **sim)
    tp = fp = fn = 0
    for k, res in enumerate(loc.localize(batch.frames.numpy(), args.samples,
                                         n_steps=args.steps)):
        truth = batch.positions_px[k][batch.mask[k]].numpy()
        found = np.stack([res.emitters.x_px, res.emitters.y_px], axis=1)
        m = len(match_positions(truth, found))
        tp, fp, fn = tp + m, fp + len(found) - m, fn + len(truth) - m
    detection = {"precision": round(tp / max(1, tp + fp), 4),
                 "recall": round(tp / max(1, tp + fn), 4), "emitters": tp + fn}

    # 2. Isolated emitters: error, reported SD, CRLB, MCMC.
    iso = simulate_smlm(args.frames, n_emitters=1, seed=12, **sim)
    results = loc.localize(iso.frames.numpy(), args.samples, n_steps=args.steps)
    err, sd, bound, z, vs_mcmc = [], [], [], [], []
    for k, res in enumerate(results):
        truth = iso.positions_px[k, 0].numpy()
        if len(res.emitters.x_px) == 0:
            continue
        j = int(np.argmin(np.hypot(res.emitters.x_px - truth[0], res.emitters.y_px - truth[1])))
        e = np.array([res.emitters.x_px[j] - truth[0], res.emitters.y_px[j] - truth[1]])
        s = np.array([res.emitters.x_sd_px[j], res.emitters.y_sd_px[j]])
        theta = pack([truth[0]], [truth[1]], [200.0], max(args.background, 1e-3))
        c = crlb(theta, (20, 20), 0.92, args.read_noise)[:2]
        err.append(e)
        sd.append(s)
        bound.append(c)
        z.append(e / np.maximum(s, 1e-9))
        if k < args.mcmc_frames:
            frame = iso.frames[k].numpy().astype(np.float64)
            fit = fit_emitters(frame, theta, 0.92, args.read_noise)
            chain = sample_posterior(frame, fit.theta, 0.92, args.read_noise, n_samples=4000,
                                     burn_in=1000, seed=k)
            vs_mcmc.append(s / chain.sd()[:2])
    err_a, sd_a, bound_a, z_a = map(np.array, (err, sd, bound, z))
    isolated = {
        "frames_with_a_detection": len(err),
        "rmse_px": round(float(np.sqrt(np.mean(err_a ** 2))), 4),
        "crlb_rms_px": round(float(np.sqrt(np.mean(bound_a ** 2))), 4),
        "rmse_over_crlb": round(float(np.sqrt(np.mean(err_a ** 2) / np.mean(bound_a ** 2))), 3),
        "median_reported_sd_px": round(float(np.median(sd_a)), 4),
        "z_score_sd": round(float(np.std(z_a)), 3),
        "reported_sd_over_mcmc_sd_median": (round(float(np.median(np.array(vs_mcmc))), 3)
                                            if vs_mcmc else None),
        "mcmc_frames": len(vs_mcmc),
    }

    # 3. Speed, same samples per frame.
    frames = iso.frames[:8].numpy()
    speed = {}
    for name, kw in [("fast", {"sampler": "fast", "n_steps": args.steps}),
                     ("ancestral", {"sampler": "ancestral"})]:
        t0 = time.perf_counter()
        loc.sample(frames, args.samples, **kw)
        speed[name] = round(len(frames) / (time.perf_counter() - t0), 3)
    speed["fast_over_ancestral"] = round(speed["fast"] / speed["ancestral"], 2)

    result = {
        "benchmark": "localizer",
        "command": "python benchmarks/bench_localizer.py " + " ".join(argv or sys.argv[1:]),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "data": "simulate_smlm (ours only), 20 x 20 px, PSF 0.92 px, i0 = 200",
        "settings": {k: str(v) for k, v in vars(args).items()},
        "detection": detection, "isolated": isolated, "frames_per_s": speed,
        "targets": {"precision": 0.99, "recall": 0.95, "rmse_over_crlb": 1.2,
                    "reported_sd_over_mcmc_sd": [0.8, 1.25], "z_score_sd": [0.8, 1.25]},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
