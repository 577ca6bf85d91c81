"""Speed and accuracy of the spot detector against trackpy ``locate``, same movies.

Measures, on simulated 512x512 uint16 movies (SNR 10, PSF sigma 0.9 px, D = 0.1
um^2/s with motion blur, 50 and 500 particles):

* ours: ``server.pipeline.detect.detect`` (TrackMate LoG + batched Poisson MLE
  fit), with a tuned threshold, with the automatic threshold (the session's
  default), and without the fit (``fit=False``: LoG maxima + parabola);
* trackpy ``locate`` (bandpass, grey-dilation maxima, centroid refinement,
  ``characterize=True``: its defaults), diameter the smallest odd integer
  >= 4 sigma + 1 (5 px: the spot out to 2.2 sigma).

Fair tuning: each method's threshold (our LoG quality, trackpy's ``minmass``)
is the one that maximises F1 on a separate calibration movie (other seed, same
settings), found by running once permissively and filtering afterwards (both
thresholds are pure post-filters on the detected maxima). Accuracy against the
ground truth: Hungarian matching within 2 px with
``server.pipeline.scoring.match_detections`` (2 px border band and close pairs
(< 2.5 px) scored as in ``tests/test_detect.py``). Speed: both run
single-threaded in this process on the same frames, alternately; frames/s from
the median over passes of the mean time per frame (wall clock; process CPU
time is recorded as well).

Writes JSON to ``benchmarks/results/detect.json`` (or ``--out``) and prints it.

    python benchmarks/bench_detect.py [--frames 50] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy
import trackpy
import trackpy.try_numba

from livespt.models.simulate import MovieConfig, simulate_movie
from livespt.server.pipeline.detect import (
    DetectorConfig,
    Spots,
    detect,
    quality_noise_sd,
)
from livespt.server.pipeline.scoring import best_f1_threshold, common_errors, score_movie

SHAPE = (512, 512)
PIXEL_UM = 0.1
PSF_SIGMA_PX = 0.9
SNR = 10.0
D_UM2_S = 0.1
RADIUS_PX = PSF_SIGMA_PX * math.sqrt(2.0)
TP_DIAMETER = 2 * math.ceil((4 * PSF_SIGMA_PX + 1) / 2) - 1  # smallest odd >= 4 sigma + 1
MAX_DIST_PX = 2.0


def _movie(n_particles: int, n_frames: int, seed: int) -> Any:
    cfg = MovieConfig(shape_px=SHAPE, n_frames=n_frames, n_particles=n_particles,
                      pixel_size_um=PIXEL_UM, psf_sigma_um=PSF_SIGMA_PX * PIXEL_UM,
                      d_um2_s=D_UM2_S, snr=SNR)
    return simulate_movie(cfg, seed=seed)


def _score(movie: Any, xy_per_frame: list[np.ndarray]) -> dict[str, Any]:
    sc = score_movie(xy_per_frame, movie.ground_truth, PIXEL_UM, SHAPE,
                     max_distance_px=MAX_DIST_PX)
    has = sc.n_true_positive > 0
    return {
        **sc.counts(),
        "rmse_px_per_axis": round(sc.rmse_px, 4) if has else None,
        "median_error_px": round(sc.median_error_px, 4) if has else None,
    }


def _tune(movie: Any, per_frame: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Threshold on a per-detection score that maximises F1 on a calibration movie."""
    return best_f1_threshold(per_frame, movie.ground_truth, PIXEL_UM, SHAPE,
                             max_distance_px=MAX_DIST_PX)


def _ours_xy(s: Spots) -> np.ndarray:
    return np.column_stack([s.x_px, s.y_px])


def _tp_locate(frame: np.ndarray, minmass: float | None) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return trackpy.locate(frame, TP_DIAMETER, minmass=minmass)


def _timed_passes(fn: Callable[[np.ndarray], object], frames: np.ndarray,
                  passes: int) -> tuple[list[float], list[float], list[object]]:
    """Mean wall and CPU seconds per frame of each pass; outputs of the last pass."""
    wall, cpu = [], []
    out: list[object] = []
    for _ in range(passes):
        out = []
        t0, c0 = time.perf_counter(), time.process_time()
        for f in frames:
            out.append(fn(f))
        wall.append((time.perf_counter() - t0) / len(frames))
        cpu.append((time.process_time() - c0) / len(frames))
    return wall, cpu, out


def _speed(wall: list[float], cpu: list[float]) -> dict[str, float]:
    w = statistics.median(wall)
    return {"ms_per_frame": round(1e3 * w, 3), "frames_per_s": round(1.0 / w, 1),
            "cpu_ms_per_frame": round(1e3 * statistics.median(cpu), 3),
            "ms_per_frame_best_pass": round(1e3 * min(wall), 3)}


def _scenario(n_particles: int, n_frames: int, n_calib: int, passes: int) -> dict[str, Any]:
    calib = _movie(n_particles, n_calib, seed=100 + n_particles)
    test = _movie(n_particles, n_frames, seed=1 + n_particles)
    noise_sd = quality_noise_sd(RADIUS_PX, math.sqrt(10.0 + 1.5**2))

    # --- tune both on the calibration movie
    permissive = DetectorConfig(radius_px=RADIUS_PX, threshold=3.0 * noise_sd)
    ours_cal = [(_ours_xy(s), s.quality) for s in (detect(f, permissive) for f in calib.frames)]
    thr = _tune(calib, ours_cal)
    tp_cal = []
    for f in calib.frames:
        df = _tp_locate(f, None)
        tp_cal.append((df[["x", "y"]].to_numpy(), df["mass"].to_numpy()))
    minmass = _tune(calib, tp_cal)

    # --- run on the test movie, alternating methods pass by pass
    # The camera's read noise is known to the user, as its offset and gain.
    cfg = DetectorConfig(radius_px=RADIUS_PX, threshold=thr, read_noise_e=1.5)
    cfg_auto = DetectorConfig(radius_px=RADIUS_PX, read_noise_e=1.5)
    cfg_nofit = DetectorConfig(radius_px=RADIUS_PX, threshold=thr, fit=False)
    frames = test.frames
    detect(frames[0], cfg)  # warm-up: FFT plans, kernel spectrum
    _tp_locate(frames[0], minmass)
    res: dict[str, Any] = {"n_particles": n_particles}
    w_o, c_o, w_a, c_a, w_n, c_n, w_t, c_t = ([] for _ in range(8))
    out_o: list[Any] = []
    out_a: list[Any] = []
    out_n: list[Any] = []
    out_t: list[Any] = []
    for _ in range(passes):
        w, c, out_o = _timed_passes(lambda f: detect(f, cfg), frames, 1)
        w_o += w
        c_o += c
        w, c, out_a = _timed_passes(lambda f: detect(f, cfg_auto), frames, 1)
        w_a += w
        c_a += c
        w, c, out_n = _timed_passes(lambda f: detect(f, cfg_nofit), frames, 1)
        w_n += w
        c_n += c
        w, c, out_t = _timed_passes(lambda f: _tp_locate(f, minmass), frames, 1)
        w_t += w
        c_t += c

    spots = [s for s in out_o if isinstance(s, Spots)]
    res["ours"] = {
        "threshold_quality": round(thr, 2),
        "threshold_in_noise_sd": round(thr / noise_sd, 2),
        **_speed(w_o, c_o), **_score(test, [_ours_xy(s) for s in spots]),
        "converged_fraction": round(float(np.mean(np.concatenate(
            [s.converged for s in spots]))), 4),
        "mean_spots_per_frame": round(float(np.mean([len(s) for s in spots])), 1),
    }
    auto = [s for s in out_a if isinstance(s, Spots)]
    res["ours_auto_threshold"] = {
        "threshold_quality_mean": round(float(np.mean([s.threshold for s in auto])), 2),
        **_speed(w_a, c_a), **_score(test, [_ours_xy(s) for s in auto]),
    }
    nofit = [s for s in out_n if isinstance(s, Spots)]
    res["ours_no_fit"] = {**_speed(w_n, c_n), **_score(test, [_ours_xy(s) for s in nofit])}
    res["trackpy"] = {
        "minmass": round(minmass, 2),
        **_speed(w_t, c_t),
        **_score(test, [df[["x", "y"]].to_numpy() for df in out_t]),
        "mean_spots_per_frame": round(float(np.mean([len(df) for df in out_t])), 1),
    }
    # RMSE over the particles both methods found: the methods find different
    # hard cases (close pairs, blurred spots), which otherwise weigh on the one
    # with the higher recall.
    common = common_errors({"ours": [_ours_xy(s) for s in spots],
                            "trackpy": [df[["x", "y"]].to_numpy() for df in out_t]},
                           test.ground_truth, PIXEL_UM, SHAPE)
    eo, et = common["ours"], common["trackpy"]
    res["common_true_positives"] = {
        "n": len(eo),
        "rmse_px_per_axis_ours": round(float(np.sqrt((eo**2).mean())), 4),
        "rmse_px_per_axis_trackpy": round(float(np.sqrt((et**2).mean())), 4),
    }
    res["speed_ratio_ours_over_trackpy"] = round(
        res["ours"]["frames_per_s"] / res["trackpy"]["frames_per_s"], 1)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=50, help="test frames per movie")
    ap.add_argument("--calibration-frames", type=int, default=10, help="tuning frames")
    ap.add_argument("--passes", type=int, default=3, help="timed passes per method")
    ap.add_argument("--out", default="benchmarks/results/detect.json", help="output JSON")
    args = ap.parse_args()

    load_before = os.getloadavg()
    scenarios = [_scenario(n, args.frames, args.calibration_frames, args.passes)
                 for n in (50, 500)]
    photons = MovieConfig(shape_px=SHAPE, n_particles=1, pixel_size_um=PIXEL_UM,
                          psf_sigma_um=PSF_SIGMA_PX * PIXEL_UM, snr=SNR).photons_per_particle()
    result = {
        "benchmark": "detect",
        "machine": {
            "cpu_count": os.cpu_count(),
            "load_average_1min_before_after": [round(load_before[0], 2),
                                               round(os.getloadavg()[0], 2)],
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
        },
        "setup": {
            "shape_px": list(SHAPE),
            "snr": SNR,
            "photons": round(float(photons[0]), 1),
            "psf_sigma_px": PSF_SIGMA_PX,
            "pixel_size_um": PIXEL_UM,
            "d_um2_s": D_UM2_S,
            "frame_interval_s": 0.05,
            "motion_blur": "exposure = frame interval, 10 sub-steps",
            "noise": "Poisson(signal + 10 photons/px) + 1.5 e- read noise, offset 100 ADU, uint16",
            "test_frames": args.frames,
            "calibration_frames": args.calibration_frames,
            "timed_passes": args.passes,
            "matching": "Hungarian within 2 px; 2 px border band and pairs closer than "
                        "2.5 px scored fairly (server.pipeline.scoring.match_detections)",
            "ours": f"DetectorConfig(radius_px={RADIUS_PX:.3f}, read_noise_e=1.5), fit window 7 px",
        },
        "trackpy": {
            "version": trackpy.__version__,
            "engine": "numba" if trackpy.try_numba.NUMBA_AVAILABLE else
                      "python (numba not installed)",
            "diameter_px": TP_DIAMETER,
            "call": "trackpy.locate(frame, diameter, minmass=tuned) with defaults "
                    "(preprocess=True, characterize=True, percentile=64)",
        },
        "scenarios": scenarios,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
