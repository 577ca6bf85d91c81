"""Online change-of-D detection: LiveSPT's GLR detector against ruptures' PELT.

Track set (same for both, fixed seed): tracks of 100-200 frames from the project's
simulator (dt = 0.05 s, exposure = interval, 10 sub-steps, plus Gaussian localization
noise sigma uniform in 20-30 nm), D log-uniform in [0.05, 0.5] um^2/s; half the tracks
stationary, half with one 5x change (up or down at random) at a frame uniform in
30-70 % of the track length.

* ours: ``TrackChangeDetector`` fed one position at a time (online), at two operating
  points: the default target of 0.5 false alarms per 1000 track-frames and 5 per 1000.
* PELT (offline, whole track at once), two signals/costs, ``min_size`` = 5 steps
  like ours, ``jump`` = 1:
  - ``pelt_normal``: ``rpt.Pelt(model="normal")`` on the 2-D steps (zero-mean Gaussian
    with a change of covariance: the exact signal model up to the step correlation);
  - ``pelt_l2_logsq``: ``rpt.Pelt(model="l2")`` on ``log`` of the squared step length
    (a change of D is a shift of its mean; constant variance pi^2/6).
  Penalty: for each operating point, PELT's penalty is the smallest of a grid (ratio
  1.05) whose false-alarm rate on a separate set of stationary tracks (other seed,
  same distribution) does not exceed ours measured on that same set: equal
  false-alarm rates, so the comparison is of detection power and localization.

Metrics: Jaccard index as in AnDi 2024 (TP = a reported change within 10 frames of a
true one, minimum-cost matching; JSC = TP / (TP + FP + FN)), false alarms per 1000
track-frames on the stationary tracks, median latency (frames from the true change to
``detected_at_frame``, ours only: PELT sees the whole track), median |frame error|
of the TPs, and wall time per track-frame (one CPU core).

Writes JSON to ``benchmarks/results/changepoint.json`` (or ``--out``) and prints it.

    python benchmarks/bench_changepoint.py [--tracks 300] [--seed 0] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import ruptures as rpt

from models.simulate import simulate_trajectories
from server.pipeline.changepoint import ChangeConfig, TrackChangeDetector, match_change_points

T = TypeVar("T")
DT = 0.05
FACTOR = 5.0
MIN_SEGMENT_STEPS = 5
TOLERANCE_FRAMES = 10
# Operating points: our configured targets; PELT is matched to each.
TARGETS_PER_1000 = (0.5, 5.0)
# Penalty grids searched for PELT (ascending, ratio 1.05), starting where a pilot
# run on stationary tracks gave about 10-20 false alarms per 1000 track-frames.
PENALTIES = {
    "pelt_normal": np.round(14.0 * 1.05 ** np.arange(40), 3),
    "pelt_l2_logsq": np.round(9.0 * 1.05 ** np.arange(40), 3),
}


@dataclass
class Track:
    pos_um: np.ndarray  # (T, 2)
    sigma_um: float
    blur: float
    change_frames: list[int]
    d_um2_s: tuple[float, ...]


def make_tracks(n: int, seed: int, stationary_only: bool = False) -> list[Track]:
    """Half stationary, half with one 5x change (stationary_only: all stationary)."""
    rng = np.random.default_rng(seed)
    tracks = []
    for i in range(n):
        t = int(rng.integers(100, 201))
        d0 = float(np.exp(rng.uniform(np.log(0.05), np.log(0.5))))
        sigma = float(rng.uniform(0.02, 0.03))
        if stationary_only or i % 2 == 0:
            d: tuple[float, ...] = (d0,)
            changes: list[int] = []
        else:
            d = (d0, d0 * FACTOR if rng.random() < 0.5 else d0 / FACTOR)
            changes = [int(rng.integers(int(0.3 * t), int(0.7 * t) + 1))]
        tr = simulate_trajectories(1, t, list(d) if changes else d0, DT,
                                   change_frames=changes, seed=int(seed * 100_003 + i))
        pos = tr.mean_um.numpy()[0] + rng.normal(0.0, sigma, (t, 2))
        tracks.append(Track(pos, sigma, tr.blur_coefficient, changes, d))
    return tracks


def run_ours(track: Track, config: ChangeConfig) -> tuple[list[int], list[int]]:
    """Online: reported change frames and the frames at which they were reported."""
    det = TrackChangeDetector(config)
    frames, detected = [], []
    for f in range(track.pos_um.shape[0]):
        e = det.update(f, track.pos_um[f], track.sigma_um)
        if e is not None:
            frames.append(e.frame)
            detected.append(e.detected_at_frame)
    return frames, detected


def pelt_signal(track: Track, model: str) -> np.ndarray:
    steps = np.diff(track.pos_um, axis=0)
    if model == "pelt_normal":
        return steps
    # Floor avoids log(0) for a (vanishingly unlikely) zero step.
    return np.log(np.maximum(np.sum(steps**2, axis=1), 1e-30))[:, None]


def run_pelt(track: Track, model: str, penalty: float) -> list[int]:
    """Offline: change frames at one penalty (breakpoint i = first step of a new segment).

    The step from frame i to i + 1 is step i, so a breakpoint at step i reports
    frame i, the same convention as ours.
    """
    cost = "normal" if model == "pelt_normal" else "l2"
    algo = rpt.Pelt(model=cost, min_size=MIN_SEGMENT_STEPS, jump=1).fit(pelt_signal(track, model))
    return [int(b) for b in algo.predict(pen=penalty)[:-1]]


def pelt_alarm_curve(tracks: list[Track], model: str, penalties: np.ndarray) -> list[int]:
    """Total changes reported on ``tracks`` at each penalty (ascending).

    The optimal number of changes of penalized optimal partitioning (what PELT
    computes exactly) never increases with the penalty, so a track with no change
    at one penalty is not run again at higher ones.
    """
    live = list(range(len(tracks)))
    counts = []
    for pen in penalties:
        n = {i: len(run_pelt(tracks[i], model, float(pen))) for i in live}
        counts.append(sum(n.values()))
        live = [i for i in live if n[i] > 0]
    return counts


def score(tracks: list[Track], predicted: list[list[int]]) -> dict[str, Any]:
    tp = fp = fn = 0
    errors = []
    stat_alarms = stat_frames = 0
    for tr, pred in zip(tracks, predicted, strict=True):
        a, b, c = match_change_points(tr.change_frames, pred, TOLERANCE_FRAMES)
        tp, fp, fn = tp + a, fp + b, fn + c
        if tr.change_frames and a:
            errors.append(min(abs(p - tr.change_frames[0]) for p in pred))
        if not tr.change_frames:
            stat_alarms += len(pred)
            stat_frames += tr.pos_um.shape[0]
    return {
        "jaccard": tp / max(1, tp + fp + fn), "tp": tp, "fp": fp, "fn": fn,
        "false_alarms_per_1000_frames": 1000 * stat_alarms / max(1, stat_frames),
        "median_abs_frame_error": float(np.median(errors)) if errors else float("nan"),
    }


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tracks", type=int, default=300)
    ap.add_argument("--tune-tracks", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).parent / "results" / "changepoint.json")
    args = ap.parse_args()

    tracks = make_tracks(args.tracks, args.seed)
    tune = make_tracks(args.tune_tracks, args.seed + 1, stationary_only=True)
    n_frames = sum(t.pos_um.shape[0] for t in tracks)

    tune_frames = sum(t.pos_um.shape[0] for t in tune)
    # PELT's false-alarm curve on the tuning set, once per model.
    curves = {}
    for model, pens in PENALTIES.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # CostNormal's note on its diagonal loading
            counts = pelt_alarm_curve(tune, model, pens)
        curves[model] = [1000 * c / tune_frames for c in counts]

    results: dict[str, dict[str, dict[str, Any]]] = {}
    for target in TARGETS_PER_1000:
        def cfg(t: Track, target: float = target) -> ChangeConfig:
            return ChangeConfig(frame_interval_s=DT, exposure_s=DT, blur_coefficient=t.blur,
                                false_alarm_per_1000=target)

        # Ours on the tuning set: the false-alarm rate PELT is matched to.
        ours_tune_rate = 1000 * sum(len(run_ours(t, cfg(t))[0]) for t in tune) / tune_frames
        runs, seconds = timed(lambda: [run_ours(t, cfg(t)) for t in tracks])
        ours = score(tracks, [r[0] for r in runs])
        latencies: dict[str, list[int]] = {"up": [], "down": []}
        for tr, (frames, detected) in zip(tracks, runs, strict=True):
            if tr.change_frames:
                c = tr.change_frames[0]
                hits = [d for f, d in zip(frames, detected, strict=True)
                        if abs(f - c) <= TOLERANCE_FRAMES]
                if hits:
                    kind = "up" if tr.d_um2_s[1] > tr.d_um2_s[0] else "down"
                    latencies[kind].append(hits[0] - c)
        ours.update({
            "false_alarms_per_1000_frames_tuning_set": ours_tune_rate,
            "median_latency_frames": float(np.median(latencies["up"] + latencies["down"])),
            "median_latency_frames_increase": float(np.median(latencies["up"])),
            "median_latency_frames_decrease": float(np.median(latencies["down"])),
            "seconds_per_track_frame": seconds / n_frames,
            "threshold": cfg(tracks[0]).threshold,
        })
        point: dict[str, dict[str, Any]] = {"ours_glr_online": ours}
        for model, pens in PENALTIES.items():
            rates = curves[model]
            # Smallest penalty whose false-alarm rate does not exceed ours on the tuning set.
            k = next((i for i, r in enumerate(rates) if r <= ours_tune_rate), len(pens) - 1)
            pen = float(pens[k])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                preds, seconds = timed(
                    lambda m=model, p=pen: [run_pelt(t, m, p) for t in tracks])  # type: ignore[misc]
            res = score(tracks, preds)
            res.update({
                "penalty": pen,
                "false_alarms_per_1000_frames_tuning_set": rates[k],
                "seconds_per_track_frame": seconds / n_frames,
                "median_latency_frames": None,
            })
            point[model] = res
        results[f"target_{target:g}_per_1000"] = point

    out = {
        "setup": {
            "tracks": args.tracks, "track_frames": n_frames, "seed": args.seed,
            "tuning_tracks_stationary": args.tune_tracks, "frame_interval_s": DT,
            "factor": FACTOR, "lengths_frames": [100, 200], "sigma_um": [0.02, 0.03],
            "d_um2_s": [0.05, 0.5], "tolerance_frames": TOLERANCE_FRAMES,
            "min_segment_steps": MIN_SEGMENT_STEPS,
            "python": platform.python_version(), "ruptures": rpt.__version__,
            "machine": platform.machine(),
        },
        "results": results,
        "pelt_tuning_curves": {m: {"penalty": PENALTIES[m].tolist(), "false_alarms_per_1000": c}
                               for m, c in curves.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))
    print("\nmethod, target | Jaccard | FA/1000 (stationary) | median latency | us/track-frame")
    for key, point in results.items():
        for name, r in point.items():
            lat = r["median_latency_frames"]
            print(f"{name}, {key} | {r['jaccard']:.3f} | "
                  f"{r['false_alarms_per_1000_frames']:.2f} | "
                  f"{'offline' if lat is None else f'{lat:.1f}'} | "
                  f"{1e6 * r['seconds_per_track_frame']:.0f}")


if __name__ == "__main__":
    main()
