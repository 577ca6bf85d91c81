"""Our spot detector against TrackMate's LoG detector (a real Fiji, in-process) and trackpy.

Same simulated movies for every method: sparse 256 x 256 uint16 movies (40 particles, PSF
sigma 0.9 px, 0.1 um pixels, default camera: 10 background photons/px, 1.5 e- read noise,
offset 100 ADU), SNR 8, 12 and 25 (the simulator's definition, ``docs/simulator.md``: peak
pixel of a static, pixel-centred particle over its noise SD), each in two motion settings,
exposure = frame interval = 50 ms:

* ``slow``: D = 0.02 um^2/s (RMS displacement over one exposure 0.45 px per axis);
* ``blurred``: D = 0.2 um^2/s (1.4 px per axis, 2 px in 2D, smeared over the whole exposure).

Methods, all single-threaded on the same frames:

* ``ours``: ``server.pipeline.detect.detect`` (TrackMate's LoG + Poisson MLE Gaussian fit),
  ``read_noise_e=1.5``; with a tuned threshold and with its automatic threshold (the
  session default, 7 robust noise SDs of the quality map);
* ``trackmate``: TrackMate 7.5.1's ``LogDetectorFactory`` (sub-pixel localization on, no
  median filter), same radius (``sqrt(2)`` x PSF sigma = 0.127 um), run through
  ``livespt.server.io.trackmate`` (each frame's detector with one thread); with a tuned
  threshold and with TrackMate's own automatic choice, Otsu's threshold on the qualities of
  all spots found at threshold 0 (``TMUtils.otsuThreshold``: TrackMate's GUI "auto" for the quality
  filter; TrackMate's default detector threshold is 0, i.e. no filtering at all);
* ``trackpy``: ``trackpy.locate`` (diameter 5 px, its defaults), tuned ``minmass``.

Tuning, as in ``bench_detect.py``: each threshold (our quality, TrackMate's quality,
trackpy's ``minmass``) is the middle of the plateau of best F1 on a separate calibration
movie (other seed, same settings), found by running once permissively and filtering after
(all three thresholds are pure post-filters on the maxima). Scoring: Hungarian matching
within 2 px with ``server.pipeline.scoring.match_detections`` (2 px border band; particles
closer than 2.5 px count as found when one of them is). RMSE is per axis, against the
exposure-mean position, in nm; it is also given over the particles that all tuned methods
found (their hard cases differ), and the median 2D error (a few close pairs merged into
one spot, ~130 nm off, dominate the RMSE of bright movies). Speed: median over passes of
the mean wall time per frame; for TrackMate, the time inside its detector
(``SpotDetector.process``) and the end-to-end time including the copy into an ImagePlus
and reading the spots back through JPype.

Writes JSON to ``benchmarks/results/detect_trackmate.json`` (or ``--out``) and prints a
table. Needs a Fiji with TrackMate (``scripts/install-fiji``).

    python benchmarks/bench_detect_trackmate.py [--frames 50] [--passes 3] [--no-trackpy]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from livespt.models.simulate import MovieConfig, simulate_movie
from livespt.server.io import fiji
from livespt.server.io.trackmate import trackmate_log_detect_run
from livespt.server.pipeline.detect import DetectorConfig, detect, quality_noise_sd
from livespt.server.pipeline.scoring import best_f1_threshold, common_errors, score_movie

SHAPE = (256, 256)
N_PARTICLES = 40
PIXEL_UM = 0.1
PSF_SIGMA_PX = 0.9
RADIUS_PX = PSF_SIGMA_PX * math.sqrt(2.0)
FRAME_INTERVAL_S = 0.05
SNRS = (8.0, 12.0, 25.0)
MOTION = {"slow": 0.02, "blurred": 0.2}  # D in um^2/s
TP_DIAMETER = 5
MAX_DIST_PX = 2.0
NOISE_SD = quality_noise_sd(RADIUS_PX, math.sqrt(10.0 + 1.5**2))


def _movie(snr: float, d: float, n_frames: int, seed: int) -> Any:
    cfg = MovieConfig(shape_px=SHAPE, n_frames=n_frames, n_particles=N_PARTICLES,
                      pixel_size_um=PIXEL_UM, frame_interval_s=FRAME_INTERVAL_S,
                      psf_sigma_um=PSF_SIGMA_PX * PIXEL_UM, d_um2_s=d, snr=snr)
    return simulate_movie(cfg, seed=seed)


def _score(movie: Any, xy_per_frame: list[np.ndarray]) -> dict[str, Any]:
    sc = score_movie(xy_per_frame, movie.ground_truth, PIXEL_UM, SHAPE,
                     max_distance_px=MAX_DIST_PX)
    has = sc.n_true_positive > 0
    return {
        **sc.counts(),
        "rmse_nm": round(1e3 * PIXEL_UM * sc.rmse_px, 2) if has else None,
        # 2D distance: robust to the few merged close pairs that dominate a bright RMSE.
        "median_error_nm": round(1e3 * PIXEL_UM * sc.median_error_px, 2) if has else None,
    }


def _tune(movie: Any, per_frame: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Threshold on a per-detection score that maximises F1 on a calibration movie."""
    return best_f1_threshold(per_frame, movie.ground_truth, PIXEL_UM, SHAPE,
                             max_distance_px=MAX_DIST_PX)


def _tm_per_frame(spots: Any, n_frames: int) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for t in range(n_frames):
        s = spots[spots.frame == t]
        out.append((s[["x_um", "y_um"]].to_numpy() / PIXEL_UM, s.quality.to_numpy()))
    return out


def _ours_per_frame(frames: np.ndarray, cfg: DetectorConfig
                    ) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for f in frames:
        s = detect(f, cfg)
        out.append((np.column_stack([s.x_px, s.y_px]), s.quality))
    return out


def _tp_locate(frame: np.ndarray, minmass: float | None) -> Any:
    import trackpy

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return trackpy.locate(frame, TP_DIAMETER, minmass=minmass)


def _otsu(values: np.ndarray) -> float:
    """TrackMate's own Otsu threshold (``TMUtils.otsuThreshold``) of the given qualities."""
    from jpype import JArray, JDouble
    from scyjava import jimport

    tm_utils = jimport("fiji.plugin.trackmate.util.TMUtils")
    return float(tm_utils.otsuThreshold(JArray(JDouble)(np.ascontiguousarray(values,
                                                                           dtype=np.float64))))


def _common_rmse(movie: Any, xy_by_method: dict[str, list[np.ndarray]]) -> dict[str, Any]:
    """Per-axis RMSE (nm) of each method over the particles that every method found."""
    out: dict[str, Any] = {}
    for k, arr in common_errors(xy_by_method, movie.ground_truth, PIXEL_UM, SHAPE).items():
        out["n"] = len(arr)
        out[f"rmse_nm_{k}"] = round(1e3 * PIXEL_UM * float(np.sqrt((arr**2).mean())), 2)
    return out


def _scenario(snr: float, motion: str, n_frames: int, n_calib: int, passes: int,
              with_trackpy: bool) -> dict[str, Any]:
    d = MOTION[motion]
    seed = int(10 * snr) + (0 if motion == "slow" else 1000)
    calib = _movie(snr, d, n_calib, seed=seed + 500)
    test = _movie(snr, d, n_frames, seed=seed)
    radius_um = RADIUS_PX * PIXEL_UM
    permissive = 3.0 * NOISE_SD

    # --- tuning on the calibration movie
    thr_ours = _tune(calib, _ours_per_frame(calib.frames, DetectorConfig(
        radius_px=RADIUS_PX, threshold=permissive, read_noise_e=1.5)))
    tm_cal = trackmate_log_detect_run(calib.frames, PIXEL_UM, radius_um, permissive,
                                      frame_interval_s=FRAME_INTERVAL_S)
    thr_tm = _tune(calib, _tm_per_frame(tm_cal.spots, n_calib))
    minmass = None
    if with_trackpy:
        tp_cal = []
        for f in calib.frames:
            df = _tp_locate(f, None)
            tp_cal.append((df[["x", "y"]].to_numpy(), df["mass"].to_numpy()))
        minmass = _tune(calib, tp_cal)

    # --- test movie, methods alternating pass by pass
    cfg = DetectorConfig(radius_px=RADIUS_PX, threshold=thr_ours, read_noise_e=1.5)
    cfg_auto = DetectorConfig(radius_px=RADIUS_PX, read_noise_e=1.5)
    frames = test.frames
    detect(frames[0], cfg)  # warm-up (FFT plans)
    times: dict[str, list[float]] = {k: [] for k in
                                     ("ours", "ours_auto", "tm_detector", "tm_total", "trackpy")}
    out_ours: list[Any] = []
    out_auto: list[Any] = []
    out_tp: list[Any] = []
    tm_run = None
    for _ in range(passes):
        t0 = time.perf_counter()
        out_ours = [detect(f, cfg) for f in frames]
        times["ours"].append((time.perf_counter() - t0) / len(frames))
        t0 = time.perf_counter()
        out_auto = [detect(f, cfg_auto) for f in frames]
        times["ours_auto"].append((time.perf_counter() - t0) / len(frames))
        t0 = time.perf_counter()
        tm_run = trackmate_log_detect_run(frames, PIXEL_UM, radius_um, thr_tm,
                                          frame_interval_s=FRAME_INTERVAL_S)
        times["tm_total"].append((time.perf_counter() - t0) / len(frames))
        times["tm_detector"].append(tm_run.detection_s / len(frames))
        if with_trackpy:
            t0 = time.perf_counter()
            out_tp = [_tp_locate(f, minmass) for f in frames]
            times["trackpy"].append((time.perf_counter() - t0) / len(frames))
    assert tm_run is not None
    # TrackMate's automatic choice: Otsu on the qualities of everything found at threshold 0.
    tm_all = trackmate_log_detect_run(frames, PIXEL_UM, radius_um, 0.0,
                                      frame_interval_s=FRAME_INTERVAL_S)
    thr_otsu = _otsu(tm_all.spots.quality.to_numpy())

    def ms(key: str) -> float:
        return round(1e3 * statistics.median(times[key]), 3)

    xy_ours = [np.column_stack([s.x_px, s.y_px]) for s in out_ours]
    xy_tm = [xy for xy, _ in _tm_per_frame(tm_run.spots, n_frames)]
    res: dict[str, Any] = {
        "snr": snr, "motion": motion, "d_um2_s": d,
        "blur_rms_px_per_axis": round(math.sqrt(2 * d * FRAME_INTERVAL_S) / PIXEL_UM, 2),
        "photons": round(float(test.config.photons_per_particle()[0]), 1),
        "ours": {"threshold_quality": round(thr_ours, 2),
                 "threshold_in_noise_sd": round(thr_ours / NOISE_SD, 2),
                 "ms_per_frame": ms("ours"), **_score(test, xy_ours)},
        "ours_auto_threshold": {
            "threshold_quality_mean": round(float(np.mean([s.threshold for s in out_auto])), 2),
            "ms_per_frame": ms("ours_auto"),
            **_score(test, [np.column_stack([s.x_px, s.y_px]) for s in out_auto])},
        "trackmate": {"threshold_quality": round(thr_tm, 2),
                      "threshold_in_noise_sd": round(thr_tm / NOISE_SD, 2),
                      "ms_per_frame_detector": ms("tm_detector"),
                      "ms_per_frame_end_to_end": ms("tm_total"),
                      **_score(test, xy_tm)},
        "trackmate_otsu_threshold": {
            "threshold_quality": round(thr_otsu, 2),
            "spots_at_threshold_0_per_frame": round(len(tm_all.spots) / n_frames, 1),
            **_score(test, [xy[q > thr_otsu] for xy, q in
                            _tm_per_frame(tm_all.spots, n_frames)])},
    }
    methods = {"ours": xy_ours, "trackmate": xy_tm}
    if with_trackpy:
        xy_tp = [df[["x", "y"]].to_numpy() for df in out_tp]
        res["trackpy"] = {"minmass": round(float(minmass or 0.0), 2),
                          "ms_per_frame": ms("trackpy"), **_score(test, xy_tp)}
        methods["trackpy"] = xy_tp
    res["common_true_positives"] = _common_rmse(test, methods)
    return res


def _table(scenarios: list[dict[str, Any]], with_trackpy: bool) -> str:
    rows = ["| SNR | motion | method | threshold | recall | precision | F1 | RMSE nm "
            "| RMSE nm, common | median error nm | ms/frame |",
            "| ---: | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for s in scenarios:
        c = s["common_true_positives"]
        entries = [
            ("ours", "ours", f"tuned {s['ours']['threshold_quality']:g}", c.get("rmse_nm_ours"),
             f"{s['ours']['ms_per_frame']:.1f}"),
            ("ours, auto threshold", "ours_auto_threshold",
             f"auto (mean {s['ours_auto_threshold']['threshold_quality_mean']:g})", None,
             f"{s['ours_auto_threshold']['ms_per_frame']:.1f}"),
            ("TrackMate LoG", "trackmate", f"tuned {s['trackmate']['threshold_quality']:g}",
             c.get("rmse_nm_trackmate"),
             f"{s['trackmate']['ms_per_frame_detector']:.1f} "
             f"({s['trackmate']['ms_per_frame_end_to_end']:.1f} end to end)"),
            ("TrackMate LoG, Otsu", "trackmate_otsu_threshold",
             f"Otsu {s['trackmate_otsu_threshold']['threshold_quality']:g}", None, ""),
        ]
        if with_trackpy and "trackpy" in s:
            entries.append(("trackpy", "trackpy", f"minmass {s['trackpy']['minmass']:g}",
                            c.get("rmse_nm_trackpy"), f"{s['trackpy']['ms_per_frame']:.1f}"))
        for name, key, thr, common, speed in entries:
            r = s[key]
            rows.append(f"| {s['snr']:g} | {s['motion']} | {name} | {thr} | {r['recall']:.3f} "
                        f"| {r['precision']:.3f} | {r['f1']:.3f} | {r['rmse_nm']} "
                        f"| {common if common is not None else ''} | {r['median_error_nm']} "
                        f"| {speed} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--frames", type=int, default=50, help="test frames per movie")
    ap.add_argument("--calibration-frames", type=int, default=10, help="tuning frames")
    ap.add_argument("--passes", type=int, default=3, help="timed passes per method")
    ap.add_argument("--no-trackpy", action="store_true", help="leave trackpy out")
    ap.add_argument("--out", default="benchmarks/results/detect_trackmate.json",
                    help="output JSON")
    args = ap.parse_args()
    with_trackpy = not args.no_trackpy
    if with_trackpy:
        try:
            import trackpy  # noqa: F401
        except ImportError:
            with_trackpy = False

    load_before = os.getloadavg()
    t_start = time.perf_counter()
    ij = fiji.start_imagej()
    jvm_start_s = time.perf_counter() - t_start
    from scyjava import jimport

    system = jimport("java.lang.System")
    # JIT warm-up of TrackMate's code paths (the first frames run several times slower).
    warm = _movie(12.0, 0.02, 20, seed=4242).frames
    for _ in range(3):
        trackmate_log_detect_run(warm, PIXEL_UM, RADIUS_PX * PIXEL_UM, 3.0 * NOISE_SD)
    scenarios = [_scenario(snr, motion, args.frames, args.calibration_frames, args.passes,
                           with_trackpy)
                 for motion in MOTION for snr in SNRS]

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    fiji_dir = fiji.find_fiji()
    result = {
        "benchmark": "detect_trackmate",
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": {
            "cpu_count": os.cpu_count(),
            "load_average_1min_before_after": [round(load_before[0], 2),
                                               round(os.getloadavg()[0], 2)],
            "python": platform.python_version(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "numpy": np.__version__,
            "java": f"{system.getProperty('java.vendor')} {system.getProperty('java.version')}",
            "imagej": str(ij.getVersion()),
            "trackmate_jar": sorted(p.name for p in (fiji_dir / "jars").glob("TrackMate-*.jar"))
            if fiji_dir else None,
            "pyimagej": version("pyimagej"),
            "scyjava": version("scyjava"),
            "jpype1": version("jpype1"),
            "trackpy": version("trackpy") if with_trackpy else None,
            "jvm_and_imagej_start_s": round(jvm_start_s, 1),
        },
        "setup": {
            "shape_px": list(SHAPE),
            "particles": N_PARTICLES,
            "pixel_size_um": PIXEL_UM,
            "psf_sigma_px": PSF_SIGMA_PX,
            "radius_um": round(RADIUS_PX * PIXEL_UM, 4),
            "frame_interval_s": FRAME_INTERVAL_S,
            "exposure": "= frame interval, 10 sub-steps (motion blur over the whole exposure)",
            "noise": "Poisson(signal + 10 photons/px) + 1.5 e- read noise, offset 100 ADU, uint16",
            "quality_noise_sd": round(NOISE_SD, 3),
            "test_frames": args.frames,
            "calibration_frames": args.calibration_frames,
            "timed_passes": args.passes,
            "matching": "Hungarian within 2 px (server.pipeline.scoring.match_detections): 2 px "
                        "border band, particles closer than 2.5 px found when one is",
            "thresholds": "tuned: middle of the best-F1 plateau on a separate calibration "
                          "movie (other seed); auto: ours = 7 robust SDs of the quality map, "
                          "TrackMate = TMUtils.otsuThreshold of all qualities at threshold 0",
            "threads": "all single-threaded; TrackMate: each frame's LogDetector with "
                       "setNumThreads(1), frames one after the other",
            "rmse": "per axis, nm, against the exposure-mean position; 'common' over the "
                    "particles every tuned method found",
        },
        "scenarios": scenarios,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["machine"], indent=2))
    print(_table(scenarios, with_trackpy))


if __name__ == "__main__":
    main()
