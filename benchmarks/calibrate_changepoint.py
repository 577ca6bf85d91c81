"""Calibrate the change detector's threshold table (server/pipeline/changepoint.py).

Under "no change", the detector's dispersion-corrected score is pivotal when the
normalized squared steps ``y`` are i.i.d. exponential: its law does not depend on D.
This script runs the detector's exact procedure (window of ``max_history_steps``,
minimum segment ``m``, history restart at the estimated change after every alarm)
on i.i.d. unit-exponential ``y``, vectorized over many tracks at once, with each
track carrying one threshold from a grid. Alarms are counted in steady state (after
a burn-in of ``max_history_steps`` steps). Per ``m``, a coarse pilot run places 14
thresholds spanning 20 to 0.03 alarms per 1000 track-frames and shares the frames so
that each expects about the same number of alarms; ``log(rate)`` is then fitted by a
Poisson-weighted quadratic in the threshold, and the fit is inverted at the table's
rates.

It prints the constants to paste into ``changepoint.py`` and writes the raw counts
to ``benchmarks/results/changepoint_calibration.json``.

    python benchmarks/calibrate_changepoint.py [--frames 2000000] [--alarms 50] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from livespt.server.pipeline.changepoint import (
    CALIBRATION_MAX_HISTORY_STEPS,
    segment_log_likelihood,
)

RATES_PER_1000 = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
MIN_SEGMENTS = (5, 6, 8, 10, 12, 15, 20)


def count_alarms(
    thresholds: np.ndarray, n_steps: int, window: int, m: int, burn_in: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, int]:
    """Run one track per threshold; return alarms counted after burn-in, frames counted."""
    b = thresholds.size
    y = rng.exponential(size=(b, n_steps))
    prefix = np.zeros((b, n_steps + 1))
    np.cumsum(y, axis=1, out=prefix[:, 1:])
    restart = np.zeros(b, dtype=np.int64)
    alarms = np.zeros(b, dtype=np.int64)
    rows = np.arange(b)
    for t in range(2 * m, n_steps + 1):  # t = steps stored
        lo = np.maximum(restart, t - window)
        j = np.arange(max(0, t - window) + m, t - m + 1)  # candidates of the widest window
        p_lo = prefix[rows, lo][:, None]
        p_t = prefix[:, t][:, None]
        p_j = prefix[:, j]
        n1 = (j[None, :] - lo[:, None]).astype(np.float64)
        valid = n1 >= m
        n1 = np.where(valid, n1, 1.0)
        n = (t - lo).astype(np.float64)[:, None]
        llr = (
            segment_log_likelihood(n1, p_j - p_lo, 0.0)
            + segment_log_likelihood((t - j).astype(np.float64), p_t - p_j, 0.0)
            - segment_log_likelihood(n, p_t - p_lo, 0.0)
        )
        llr = np.where(valid, llr, -np.inf)
        best = np.argmax(llr, axis=1)
        score = llr[rows, best]
        hit = score > thresholds
        if np.any(hit):
            restart[hit] = j[best[hit]]
            if t > burn_in:
                alarms[hit] += 1
    return alarms, n_steps - burn_in


def run_grid(h: np.ndarray, frames: np.ndarray, per_track: int, window: int, m: int,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Alarms and counted track-frames for each threshold of ``h`` (all in one batch)."""
    n_tracks = np.maximum(2, np.ceil(frames / per_track)).astype(int)
    thr = np.repeat(h, n_tracks)
    alarms, counted = count_alarms(thr, per_track + window, window, m, window, rng)
    a = np.array([alarms[thr == v].sum() for v in h])
    return a, (n_tracks * counted).astype(np.float64)


def fit_thresholds(h: np.ndarray, alarms: np.ndarray, frames: np.ndarray,
                   rates_per_1000: tuple[float, ...]) -> np.ndarray:
    """Invert a Poisson-weighted quadratic fit of log(rate per 1000) against threshold."""
    ok = alarms > 0
    rate = alarms[ok] / frames[ok] * 1000.0
    w = np.sqrt(alarms[ok])  # 1 / SD of log(count)
    coef = np.polyfit(h[ok], np.log(rate), 2, w=w)
    grid = np.linspace(h.min() - 2, h.max() + 2, 40001)
    fitted = np.polyval(coef, grid)
    # Keep the decreasing branch of the parabola, then invert (np.interp needs
    # increasing x).
    keep = np.concatenate(([True], np.diff(fitted) < 0))
    order = np.argsort(fitted[keep])
    return np.interp(np.log(rates_per_1000), fitted[keep][order], grid[keep][order])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=2_000_000,
                    help="most counted track-frames per threshold")
    ap.add_argument("--alarms", type=float, default=50.0,
                    help="expected alarms per threshold the frames are shared for")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-segments", type=int, nargs="*", default=list(MIN_SEGMENTS))
    ap.add_argument("--window", type=int, default=CALIBRATION_MAX_HISTORY_STEPS)
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).parent / "results" / "changepoint_calibration.json")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    w = args.window
    results = {}
    table = []
    per_track = 4 * w  # counted frames per track, after a burn-in of w steps
    for m in args.min_segments:
        t0 = time.perf_counter()
        # Pilot: a coarse rate curve, to place the thresholds and share the frames.
        hp = np.arange(2.0, 13.01, 1.0)
        pa, pf = run_grid(hp, np.full(hp.size, args.frames // 20), per_track, w, m, rng)
        hp_at = fit_thresholds(hp, pa, pf, (20.0, 0.03))
        # Main run: 14 thresholds spanning rates 20 .. 0.03 per 1000, each given
        # frames for about `alarms` expected alarms (at most --frames).
        h = np.round(np.linspace(hp_at[0], hp_at[1], 14), 3)
        expected_rate = np.exp(np.interp(h, hp_at, np.log([20.0, 0.03]))) / 1000
        frames = np.minimum(args.alarms / expected_rate, args.frames)
        a, fr = run_grid(h, frames, per_track, w, m, rng)
        hs = fit_thresholds(h, a, fr, RATES_PER_1000)
        table.append([round(float(x), 2) for x in hs])
        results[str(m)] = {
            "thresholds_grid": h.tolist(), "alarms": a.tolist(), "track_frames": fr.tolist(),
            "rate_per_1000": (a / fr * 1000).tolist(),
            "fitted_thresholds": table[-1], "seconds": time.perf_counter() - t0,
        }
        print(f"m={m}: {table[-1]}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    out = {"window": w, "rates_per_1000": list(RATES_PER_1000),
           "min_segments": list(args.min_segments), "per_min_segment": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"CALIBRATION_MAX_HISTORY_STEPS = {w}")
    print(f"CALIBRATION_RATES_PER_1000 = {RATES_PER_1000}")
    print(f"CALIBRATION_MIN_SEGMENT_STEPS = {tuple(args.min_segments)}")
    print("CALIBRATION_THRESHOLDS = (")
    for row in table:
        print(f"    ({', '.join(f'{x:.2f}' for x in row)}),")
    print(")")


if __name__ == "__main__":
    main()
