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

Throughput (``"throughput"`` in the JSON): ``ChangeDetectorBank`` fed as a live
session feeds it, N = 50 and 500 tracks alive at once, one position per track and
frame, with ``bank.update`` per track, with one ``bank.update_many`` per frame, and
with one ``TrackChangeDetector`` per track (what ``bank.update`` cost before
``update_many``); microseconds per track-update inside the calls, the fastest of 3
interleaved repeats from the same warmed-up state (the three must give the same
events). Two scenarios: tracks of 100-200 frames as above, played back to back
(histories of all lengths, as in a session); and long stationary tracks whose
history windows are full (400 steps: the most work per update).

Writes JSON to ``benchmarks/results/changepoint.json`` (or ``--out``) and prints it.

    python benchmarks/bench_changepoint.py [--tracks 300] [--seed 0] [--out PATH]
    python benchmarks/bench_changepoint.py --throughput-only  # only the throughput entry
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import ruptures as rpt

from livespt.models.simulate import simulate_trajectories
from livespt.server.pipeline.changepoint import ChangeConfig, TrackChangeDetector
from livespt.server.pipeline.changepoint_bank import ChangeDetectorBank
from livespt.server.pipeline.scoring import match_change_points

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


# --------------------------------------------------------------------------- throughput
# ChangeDetectorBank fed as a live session feeds it: every frame, one position for
# each of N tracks alive at once, per call (bank.update per track) or batched
# (bank.update_many per frame).
THROUGHPUT_TRACKS = (50, 500)
THROUGHPUT_REPEATS = 3

Frame = tuple[list[int], np.ndarray, np.ndarray, list[int]]  # ids, xy, sigma, ended ids


def mixed_schedule(n_live: int, n_frames: int, seed: int) -> list[Frame]:
    """``n_live`` lanes, each playing tracks of :func:`make_tracks` back to back.

    A lane's first track is entered at a random frame of it and each track gets a
    new id, so that the live tracks have histories of every length up to 200
    frames, as in a session; ended tracks are listed for ``bank.drop``.
    """
    rng = np.random.default_rng(seed)
    pool = make_tracks(n_live * (n_frames // 100 + 2), seed)
    # Per lane: the track playing, its next frame, its id.
    track = [pool.pop() for _ in range(n_live)]
    index = [int(rng.integers(0, 100)) for _ in range(n_live)]
    ids = list(range(n_live))
    frames: list[Frame] = []
    for _ in range(n_frames):
        ended = []
        xy = np.array([tr.pos_um[k] for tr, k in zip(track, index, strict=True)])
        sig = np.array([tr.sigma_um for tr in track])
        frame_ids = list(ids)
        for lane in range(n_live):
            index[lane] += 1
            if index[lane] == track[lane].pos_um.shape[0]:
                ended.append(ids[lane])
                track[lane], index[lane] = pool.pop(), 0
                ids[lane] = max(ids) + 1
        frames.append((frame_ids, xy, sig, ended))
    return frames


def long_schedule(n_live: int, n_frames: int, seed: int) -> list[Frame]:
    """``n_live`` stationary tracks alive throughout (free diffusion plus noise)."""
    rng = np.random.default_rng(seed)
    d = np.exp(rng.uniform(np.log(0.05), np.log(0.5), n_live))
    sigma = rng.uniform(0.02, 0.03, n_live)
    steps = rng.normal(size=(n_frames, n_live, 2)) * np.sqrt(2 * d * DT)[:, None]
    pos = np.cumsum(steps, axis=0) + rng.normal(size=steps.shape) * sigma[:, None]
    ids = list(range(n_live))
    return [(ids, pos[f], sigma, []) for f in range(n_frames)]


def feed(state: Any, frames: list[Frame], start: int, method: str) -> tuple[float, list[Any]]:
    """Feed ``frames`` (the first at frame index ``start``); seconds in the updates, events.

    ``method``: ``update_many`` (one call per frame), ``bank_update`` (one
    ``bank.update`` per track) or ``track_detector`` (one TrackChangeDetector per
    track in a dict, ``state``: (config, dict); what ``bank.update`` cost before
    ``update_many``).
    """
    seconds = 0.0
    events: list[Any] = []
    for f, (ids, xy, sig, ended) in enumerate(frames, start):
        t0 = time.perf_counter()
        if method == "update_many":
            ev = state.update_many(ids, f, xy, sig)
        elif method == "bank_update":
            ev = [e for k, tid in enumerate(ids)
                  if (e := state.update(tid, f, xy[k], float(sig[k]))) is not None]
        else:
            cfg, dets = state
            ev = []
            for k, tid in enumerate(ids):
                det = dets.get(tid)
                if det is None:
                    det = dets[tid] = TrackChangeDetector(cfg, track_id=tid)
                if (e := det.update(f, xy[k], float(sig[k]))) is not None:
                    ev.append(e)
        seconds += time.perf_counter() - t0
        events.extend((e.track_id, e.frame, e.detected_at_frame) for e in ev)
        for tid in ended:
            if method == "track_detector":
                state[1].pop(tid, None)
            else:
                state.drop(tid)
    return seconds, events


def throughput(seed: int, frames_timed: int) -> dict[str, Any]:
    """us per track-update of the three ways to feed the detector, at 50 and 500 tracks."""
    cfg = ChangeConfig(frame_interval_s=DT, exposure_s=DT)
    scenarios = {
        # Warm-up: until the mix of history lengths is steady (tracks of <= 200 frames).
        "mixed_100_200_frame_tracks": (mixed_schedule, 200),
        # Warm-up: until every window holds max_history_steps = 400 steps.
        "long_tracks_full_400_step_windows": (long_schedule, 400),
    }
    load_before = os.getloadavg()[0]
    out: dict[str, Any] = {}
    for name, (make, warm) in scenarios.items():
        out[name] = {}
        for n_live in THROUGHPUT_TRACKS:
            frames = make(n_live, warm + frames_timed, seed)
            bank = ChangeDetectorBank(cfg)
            feed(bank, frames[:warm], 0, "update_many")
            dets: tuple[ChangeConfig, dict[int, TrackChangeDetector]] = (cfg, {})
            feed(dets, frames[:warm], 0, "track_detector")
            windows = [min(bank._hi[s] - bank._restart[s], cfg.max_history_steps)
                       for s in bank._slots.live_rows().tolist()]
            best: dict[str, float] = {}
            found: dict[str, list[Any]] = {}
            # Interleaved repeats from copies of the warmed-up state; the fastest counts.
            for _ in range(THROUGHPUT_REPEATS):
                for method in ("bank_update", "update_many", "track_detector"):
                    state = copy.deepcopy(dets if method == "track_detector" else bank)
                    sec, found[method] = feed(state, frames[warm:], warm, method)
                    best[method] = min(best.get(method, np.inf), sec)
            if not found["bank_update"] == found["update_many"] == found["track_detector"]:
                raise RuntimeError(f"{name}, {n_live} tracks: the three ways disagree")
            updates = sum(len(fr[0]) for fr in frames[warm:])
            us = {m: 1e6 * s / updates for m, s in best.items()}
            out[name][f"tracks_{n_live}"] = {
                "per_call_bank_update_us_per_track_update": us["bank_update"],
                "update_many_us_per_track_update": us["update_many"],
                "per_call_track_detector_us_per_track_update": us["track_detector"],
                "speedup_update_many_vs_bank_update": us["bank_update"] / us["update_many"],
                "update_many_ms_per_frame": 1e-3 * us["update_many"] * n_live,
                "track_updates_timed": updates,
                "mean_history_steps_after_warm_up": float(np.mean(windows)),
                "events_timed": len(found["update_many"]),
            }
    out["setup"] = {
        "frames_timed": frames_timed, "repeats": THROUGHPUT_REPEATS, "seed": seed,
        "timing": "wall time inside the update calls, fastest of the interleaved repeats, "
                  "one Python thread",
        "config": "ChangeConfig(frame_interval_s=0.05), default window 400 steps",
        "python": platform.python_version(), "numpy": np.__version__,
        "machine": platform.machine(), "cpus": os.cpu_count(),
        # Other work on the machine slows all three ways (the per-call ones most).
        "load_average_1min_before_after": [load_before, os.getloadavg()[0]],
    }
    return out


def print_throughput(tp: dict[str, Any]) -> None:
    print("\nscenario, tracks | bank.update | TrackChangeDetector | update_many "
          "(us per track-update) | speedup | update_many ms/frame")
    for name, rows in tp.items():
        if name == "setup":
            continue
        for key, r in rows.items():
            print(f"{name}, {key} | {r['per_call_bank_update_us_per_track_update']:.1f} | "
                  f"{r['per_call_track_detector_us_per_track_update']:.1f} | "
                  f"{r['update_many_us_per_track_update']:.1f} | "
                  f"{r['speedup_update_many_vs_bank_update']:.1f}x | "
                  f"{r['update_many_ms_per_frame']:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tracks", type=int, default=300)
    ap.add_argument("--tune-tracks", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).parent / "results" / "changepoint.json")
    ap.add_argument("--throughput-frames", type=int, default=200,
                    help="frames timed per throughput run (after the warm-up)")
    ap.add_argument("--throughput-only", action="store_true",
                    help="only time bank.update against update_many; replace the "
                         "'throughput' entry of --out, keep the rest")
    args = ap.parse_args()

    if args.throughput_only:
        tp = throughput(args.seed, args.throughput_frames)
        prev = json.loads(args.out.read_text()) if args.out.exists() else {}
        prev["throughput"] = tp
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(prev, indent=1))
        print(json.dumps(tp, indent=1))
        print_throughput(tp)
        return

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
        "throughput": throughput(args.seed, args.throughput_frames),
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
    print_throughput(out["throughput"])


if __name__ == "__main__":
    main()
