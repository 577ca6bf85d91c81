"""The localizer against the truth and the exact references, on our frames and deeptrack's.

For a weights file (``livespt train localizer``; default: the shipped one), at the seed's
settings (20 x 20 px, PSF 0.92 px, i0 = 200 photons, emitters on a disc of radius 7 px,
background 2 photons/px, read noise 1 e-), on two sources side by side:

* ``ours``: :func:`livespt.models.ddpm.evaluate.ours` (the simulator it was trained on);
* ``deeptrack``: :func:`benchmarks.accuracy.smlm_deeptrack.deeptrack_smlm` (DeepTrack2's
  pupil-function optics and noise, used as published; not seen in training).

Per source: precision and recall (1-5 emitters per frame), and for phi alone; on
isolated emitters the RMSE against the CRLB, the z-scores ``error / reported SD`` and the
reported SD against the MCMC posterior SD. Then the samplers (on our frames): the
variance map of the fast sampler (20 and 10 steps) and of the 100-step ancestral one at
several sample counts, each against a reference (the ancestral sampler with many
samples), with frames/s. Writes JSON (default ``benchmarks/results/localizer.json``), a
markdown table (``docs/localization_report.md``) and a figure
(``docs/img/localizer_report.png``). ``make localizer-report`` runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGETS = {"precision": 0.99, "recall": 0.95, "rmse_over_crlb": 1.2,
           "reported_sd_over_mcmc_sd": [0.8, 1.25], "z_score_sd": [0.8, 1.25],
           "fast_over_ancestral_frames_per_s": 10}


def samplers(loc: Any, frames: np.ndarray, ref_samples: int, counts: list[int]
             ) -> list[dict[str, Any]]:
    """Variance-map error against an ancestral reference, and frames/s, per sampler.

    Each frame is drawn on its own (large batches are slower on CPU). The error holds the
    sampling noise of both maps (a variance from ``S`` samples has a relative SD of
    ``sqrt(2 / (S - 1))`` per pixel for Gaussian samples, more for the heavy-tailed ones a
    DDPM draws) and any bias of the sampler; ``spread_kept``, the total variance over the
    reference's, shows the bias (1: the sampler keeps the ancestral sampler's spread), and
    ``spread_kept_frames`` its range over frames.
    """
    def draw(s: int, seed: int = 1, **kw: Any) -> tuple[np.ndarray, float]:
        t0 = time.perf_counter()
        var = np.stack([loc.sample(frames[f:f + 1], s, seed=seed, first_frame=f, **kw)
                        .numpy()[0].var(axis=0, ddof=1) for f in range(len(frames))])
        return var, time.perf_counter() - t0

    ref, _ = draw(ref_samples, seed=999, sampler="ancestral")
    scale = float(np.sqrt(np.mean(ref ** 2)))
    rows = []
    for name, kw in [("ancestral (100 steps)", {"sampler": "ancestral"}),
                     ("fast, 20 steps", {"sampler": "fast", "n_steps": 20}),
                     ("fast, 10 steps", {"sampler": "fast", "n_steps": 10})]:
        for s in counts:
            var, dt = draw(s, **kw)
            err = float(np.sqrt(np.mean((var - ref) ** 2))) / scale
            kept = var.sum(axis=(1, 2)) / ref.sum(axis=(1, 2))
            rows.append({"sampler": name, "samples": s,
                         "frames_per_s": round(len(frames) / dt, 3),
                         "variance_map_rel_error": round(err, 3),
                         "spread_kept": round(float(var.sum() / ref.sum()), 3),
                         "spread_kept_frames": [round(float(kept.min()), 2),
                                                round(float(kept.max()), 2)]})
    return rows


def sampler_speedups(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Each fast sampler against the ancestral one at the same sample count, and at equal error.

    ``by_samples``: frames/s over the ancestral sampler's, with both errors.
    ``at_equal_error``: for each sample count of the ancestral sampler, the fastest fast
    setting (any sample count) whose variance-map error is at most the ancestral one's,
    and its frames/s over the ancestral one's (the issue's criterion); ``None`` where no
    fast setting is that good.
    """
    anc = {r["samples"]: r for r in rows if r["sampler"].startswith("ancestral")}
    fast = [r for r in rows if not r["sampler"].startswith("ancestral")]
    by = [{"sampler": r["sampler"], "samples": r["samples"],
           "speedup": round(r["frames_per_s"] / anc[r["samples"]]["frames_per_s"], 2),
           "error": r["variance_map_rel_error"],
           "ancestral_error": anc[r["samples"]]["variance_map_rel_error"]}
          for r in fast if r["samples"] in anc]
    equal: list[dict[str, Any]] = []
    for n, a in sorted(anc.items()):
        good = [r for r in fast if r["variance_map_rel_error"] <= a["variance_map_rel_error"]]
        best = max(good, key=lambda r: r["frames_per_s"], default=None)
        equal.append({"ancestral_samples": n, "ancestral_error": a["variance_map_rel_error"],
                      "sampler": None if best is None else best["sampler"],
                      "samples": None if best is None else best["samples"],
                      "error": None if best is None else best["variance_map_rel_error"],
                      "speedup": None if best is None else
                      round(best["frames_per_s"] / a["frames_per_s"], 2)})
    return {"by_samples": by, "at_equal_error": equal}


def _speedup_text(sp: dict[str, Any]) -> str:
    lines = []
    for eq in sp["at_equal_error"]:
        head = f"Against the ancestral sampler at {eq['ancestral_samples']} samples " \
               f"(error {eq['ancestral_error']}): "
        lines.append(head + ("no fast setting is as close to the reference." if eq["speedup"]
                             is None else f"{eq['sampler']} at {eq['samples']} samples (error "
                             f"{eq['error']}) runs {eq['speedup']}x its frames/s."))
    rows = "; ".join(f"{r['sampler']} at {r['samples']}: {r['speedup']}x "
                     f"(error {r['error']} vs {r['ancestral_error']})" for r in sp["by_samples"])
    return ("\nAt equal or lower variance-map error (target: fast >= "
            f"{TARGETS['fast_over_ancestral_frames_per_s']}x):\n\n"
            + "\n".join(f"- {x}" for x in lines)
            + f"\n\nSame sample count, over the ancestral sampler: {rows}. These errors hold "
            "the sampling noise of both maps; timings are of this run.\n")


def _table(result: dict[str, Any]) -> str:
    srcs = result["sources"]
    names = list(srcs)
    lines = ["| metric | target | " + " | ".join(names) + " |",
             "|---|---|" + "---|" * len(names)]

    def row(label: str, target: str, get: Any) -> None:
        lines.append(f"| {label} | {target} | " + " | ".join(str(get(srcs[n])) for n in names)
                     + " |")

    det = lambda k: (lambda s: s["detection"][k])  # noqa: E731
    iso = lambda k: (lambda s: s["isolated"].get(k))  # noqa: E731
    iso_mean = lambda k: (lambda s: s["isolated"].get("mean", {}).get(k))  # noqa: E731
    row("precision (emitters on phi's estimate)", ">= 0.99", det("precision"))
    row("recall (emitters on phi's estimate)", ">= 0.95", det("recall"))
    for gap in ("0-1", "1-1.5", "1.5-2", "2-3", "3-inf"):
        row(f"found / emitters, nearest neighbour {gap} px", "",
            lambda s, g=gap: "{found} / {emitters}".format(
                **s["detection"].get("recall_by_neighbour_px", {}).get(
                    g, {"found": "-", "emitters": "-"})))
    row("precision (on the samples' mean)", "", det("mean_precision"))
    row("recall (on the samples' mean)", "", det("mean_recall"))
    row("isolated: CRLB (px, rms)", "", iso("crlb_rms_px"))
    row("isolated: RMSE (px)", "", iso("rmse_px"))
    row("isolated: RMSE / CRLB", "<= 1.2", iso("rmse_over_crlb"))
    row("isolated: bias x, y (px)", "", iso("bias_px"))
    row("isolated: median reported SD (px)", "", iso("median_reported_sd_px"))
    row("isolated: SD of z-scores", "0.8-1.25", iso("z_score_sd"))
    row("isolated: robust SD of z-scores", "", iso("z_score_sd_robust"))
    row("isolated: reported SD / MCMC SD (median)", "0.8-1.25",
        iso("reported_sd_over_mcmc_sd_median"))
    row("isolated, on the samples' mean: RMSE / CRLB", "", iso_mean("rmse_over_crlb"))
    row("isolated, on the samples' mean: bias x, y (px)", "", iso_mean("bias_px"))
    row("isolated, on the samples' mean: SD of z-scores", "", iso_mean("z_score_sd"))
    row("CRLB and MCMC PSF", "", lambda s: s["isolated"].get("crlb_psf"))
    out = "\n".join(lines)
    out += ("\n\n| sampler | samples | frames/s | variance-map error (relative RMS) | "
            "total variance / reference's | per frame (min-max) |\n"
            "|---|---|---|---|---|---|\n")
    out += "\n".join(f"| {r['sampler']} | {r['samples']} | {r['frames_per_s']} | "
                     f"{r['variance_map_rel_error']} | {r['spread_kept']} | "
                     f"{r['spread_kept_frames'][0]}-{r['spread_kept_frames'][1]} |"
                     for r in result["samplers"])
    return out + "\n"


def _figure(result: dict[str, Any], zs: dict[str, np.ndarray], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    grid = np.linspace(-5, 5, 201)
    for name, z in zs.items():
        ax[0].hist(np.clip(z.ravel(), -5, 5), bins=40, range=(-5, 5), density=True,
                   histtype="step", label=name.split(" (")[0])
    ax[0].plot(grid, np.exp(-grid ** 2 / 2) / np.sqrt(2 * np.pi), "k--", label="N(0, 1)")
    ax[0].set_xlabel("position error / reported SD (isolated emitters)")
    ax[0].legend()
    for name in dict.fromkeys(r["sampler"] for r in result["samplers"]):
        rows = [r for r in result["samplers"] if r["sampler"] == name]
        ax[1].plot([r["frames_per_s"] for r in rows],
                   [r["variance_map_rel_error"] for r in rows], "o-", label=name)
    ax[1].set_xscale("log")
    ax[1].set_xlabel("frames/s (CPU, this run)")
    ax[1].set_ylabel("variance map: relative RMS error")
    ax[1].legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights", type=Path, nargs="?", default=None,
                    help="a file from livespt train localizer (default: the shipped one)")
    ap.add_argument("--frames", type=int, default=150, help="frames per experiment")
    ap.add_argument("--samples", type=int, default=16, help="DDPM samples per frame")
    ap.add_argument("--steps", type=int, default=20, help="steps of the fast sampler")
    ap.add_argument("--mcmc-frames", type=int, default=20,
                    help="isolated frames also sampled by MCMC (slow)")
    ap.add_argument("--sampler-frames", type=int, default=6,
                    help="frames of the sampler comparison")
    ap.add_argument("--reference-samples", type=int, default=128,
                    help="ancestral samples of the variance-map reference")
    ap.add_argument("--sources", default="ours,deeptrack", help="comma-separated")
    ap.add_argument("--update-card", action="store_true",
                    help="also record the results under metrics.report in the weights' card, "
                         "and recompute its metrics.check (what the tests compare)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/localizer.json")
    ap.add_argument("--report", type=Path, default=ROOT / "docs/localization_report.md")
    ap.add_argument("--figure", type=Path, default=ROOT / "docs/img/localizer_report.png")
    args = ap.parse_args(argv)

    from livespt.models.ddpm.evaluate import detection, isolated, ours
    from livespt.models.ddpm.localizer import load, shipped_localizer

    weights = args.weights or shipped_localizer()
    if weights is None:
        raise SystemExit("no weights given and no localizer shipped")
    loc = load(weights)
    t_start = time.perf_counter()
    makers = {"ours": ours}
    if "deeptrack" in args.sources:
        from benchmarks.accuracy.smlm_deeptrack import deeptrack_smlm
        makers["deeptrack"] = deeptrack_smlm
    sources: dict[str, Any] = {}
    zs: dict[str, np.ndarray] = {}
    for key in args.sources.split(","):
        make = makers[key]
        multi = make(args.frames, (1, 5), 11)
        single = make(args.frames, 1, 12)
        det = detection(loc, multi, args.samples, args.steps)
        iso = isolated(loc, single, args.samples, args.steps, args.mcmc_frames)
        zs[multi.name] = np.array(iso.pop("z_scores", []))
        iso.get("mean", {}).pop("z_scores", None)
        sources[multi.name] = {"detection": det, "isolated": iso}
        print(key, json.dumps(sources[multi.name]), flush=True)
    frames = ours(args.sampler_frames, 1, 13).frames_e
    rows = samplers(loc, frames, args.reference_samples, [8, 32])
    speedups = sampler_speedups(rows)
    result = {
        "benchmark": "localizer",
        "command": "python benchmarks/bench_localizer.py " + " ".join(argv or sys.argv[1:]),
        "weights": str(weights), "card": {k: loc.card.get(k) for k in ("name", "sha256",
                                                                       "command", "date")},
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "torch_threads": __import__("torch").get_num_threads()},
        "settings": {"frames": args.frames, "samples": args.samples, "steps": args.steps,
                     "mcmc_frames": args.mcmc_frames, "i0": 200, "psf_px": 0.92,
                     "background": 2.0, "read_noise_e": 1.0},
        "sources": sources, "samplers": rows,
        "sampler_speedups": speedups,
        "targets": TARGETS, "seconds": round(time.perf_counter() - t_start, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    report = ("<!-- written by benchmarks/bench_localizer.py; do not edit by hand -->\n"
              f"# Localizer evaluation: `{loc.card.get('name', weights.stem)}`\n\n"
              f"Command: `{result['command']}` ({result['seconds']} s, "
              f"{os.cpu_count()} CPUs). Sources side by side; targets from issue 14.\n\n"
              + _table(result)
              + _speedup_text(speedups) + "\n"
              "![z-scores and samplers](img/localizer_report.png)\n")
    args.report.write_text(report)
    if args.update_card:
        from livespt.models.ddpm.evaluate import card_check
        from livespt.models.ddpm.localizer import write_card

        card = {k: v for k, v in loc.card.items() if k not in ("format", "sha256")}
        card.setdefault("metrics", {})["report"] = {
            "command": result["command"], "sources": sources, "samplers": rows}
        # the check the tests recompute, with this code's read-out
        card["metrics"]["check"] = card_check(loc)
        write_card(weights, card)
    _figure(result, zs, args.figure)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
