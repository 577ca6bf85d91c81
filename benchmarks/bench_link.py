"""Speed and accuracy of the online linker against trackpy, on the same detections.

Detections are the simulator's ground truth (exposure-mean positions from
``simulate_trajectories``, D uniform in 0.1-0.5 um^2/s, frame interval 0.05 s)
plus Gaussian localization noise (0.03 um), kept only inside a field of
512 x 512 pixels of 0.1 um (51.2 x 51.2 um), so particles also leave and enter.
Each scene is run with every detection and with 10 % of them missed at random.

* ours: ``OnlineLinker`` fed one frame at a time (``link`` then ``ended``), as a
  live session does; the per-frame arrays are prepared before the clock starts.
* trackpy: ``trackpy.link`` on the same DataFrame (it groups frames itself),
  same search range and ``memory`` = our ``max_gap_frames``. trackpy's search
  range stays fixed across a gap; ours grows like sqrt(elapsed frames).

Both are scored link by link (:func:`livespt.server.pipeline.scoring.link_scores`).
Writes JSON to ``benchmarks/results/link.json`` (or ``--out``) and prints it.

    python benchmarks/bench_link.py [--frames 200] [--repeats 5] [--out PATH]

``machine.load_average_1min`` is the load at start and end of the run: the two
linkers run alternately, so their ratio is fair on a busy machine, while their
absolute frames/s are not.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import scipy
import trackpy

from livespt.models.simulate import simulate_trajectories
from livespt.server.pipeline.link import LinkerConfig, OnlineLinker
from livespt.server.pipeline.scoring import link_scores

SHAPE_PX = 512
PIXEL_UM = 0.1
DT_S = 0.05
D_RANGE = (0.1, 0.5)
SIGMA_LOC_UM = 0.03
MAX_DISTANCE_UM = 1.0
MAX_GAP_FRAMES = 2


def detections(n_particles: int, n_frames: int, drop: float, seed: int) -> pd.DataFrame:
    """Ground truth + noise inside the field: ``frame, particle, x, y`` (um), shuffled per frame."""
    rng = np.random.default_rng(seed)
    field = SHAPE_PX * PIXEL_UM
    tr = simulate_trajectories(
        n_particles, n_frames, rng.uniform(*D_RANGE, size=n_particles), DT_S, substeps=10,
        start_um=rng.uniform(0.0, field, size=(n_particles, 2)), seed=seed,
    )
    xy = tr.mean_um.numpy() + rng.normal(0.0, SIGMA_LOC_UM, size=(n_particles, n_frames, 2))
    # Same "inside" rule as the movie simulator's ground truth table.
    edge = -0.5 * PIXEL_UM
    keep = np.all((xy >= edge) & (xy < field + edge), axis=2)
    keep &= rng.random(keep.shape) >= drop
    pid, frame = np.nonzero(keep)
    df = pd.DataFrame({"frame": frame, "particle": pid, "x": xy[pid, frame, 0],
                       "y": xy[pid, frame, 1], "shuffle": rng.random(pid.size)})
    return df.sort_values(["frame", "shuffle"]).drop(columns="shuffle").reset_index(drop=True)


def run_ours(df: pd.DataFrame, n_frames: int) -> Callable[[], np.ndarray]:
    frames = df["frame"].to_numpy()
    xy = df[["x", "y"]].to_numpy()
    bounds = np.searchsorted(frames, np.arange(n_frames + 1))
    per_frame = [xy[bounds[t]:bounds[t + 1]] for t in range(n_frames)]
    config = LinkerConfig(max_distance_um=MAX_DISTANCE_UM, max_gap_frames=MAX_GAP_FRAMES)

    def run() -> np.ndarray:
        linker = OnlineLinker(config)
        out = []
        for t, pos in enumerate(per_frame):
            out.append(linker.link(t, pos))
            linker.ended(t)
        linker.close()
        return np.concatenate(out)

    return run


def run_trackpy(df: pd.DataFrame) -> Callable[[], np.ndarray]:
    def run() -> np.ndarray:
        out = trackpy.link(df, MAX_DISTANCE_UM, memory=MAX_GAP_FRAMES,
                           pos_columns=["x", "y"], t_column="frame")
        return out.loc[df.index, "particle"].to_numpy()

    return run


def timed(fns: dict[str, Callable[[], np.ndarray]],
          repeats: int) -> dict[str, tuple[list[float], np.ndarray]]:
    """Time each function ``repeats`` times, alternating, so load hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    results: dict[str, np.ndarray] = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - t0)
    return {name: (times[name], results[name]) for name in fns}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--frames", type=int, default=200, help="frames per scene")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per linker (median kept)")
    ap.add_argument("--out", default="benchmarks/results/link.json", help="output JSON")
    args = ap.parse_args()
    trackpy.quiet()
    # Other work on the machine slows both linkers alike (they run side by
    # side), but record it: absolute frames/s depend on it.
    load_at_start = os.getloadavg()[0]

    scenes = []
    for n_particles in (50, 500):
        for drop in (0.0, 0.1):
            df = detections(n_particles, args.frames, drop, seed=n_particles)
            frames, truth = df["frame"].to_numpy(), df["particle"].to_numpy()
            row: dict[str, object] = {
                "n_particles": n_particles,
                "missed_fraction": drop,
                "frames": args.frames,
                "detections": len(df),
            }
            runs = timed({"ours": run_ours(df, args.frames), "trackpy": run_trackpy(df)},
                         args.repeats)
            for name, (times, track) in runs.items():
                med = statistics.median(times)
                s = link_scores(frames, truth, track)
                row[name] = {
                    "seconds_median": round(med, 4),
                    "seconds_all": [round(t, 4) for t in times],
                    "frames_per_s": round(args.frames / med, 1),
                    "link_precision": round(s.precision, 5),
                    "link_recall": round(s.recall, 5),
                    "links_predicted": s.n_predicted,
                    "links_true": s.n_true,
                }
            ours, peer = row["ours"], row["trackpy"]
            assert isinstance(ours, dict) and isinstance(peer, dict)
            row["speedup_ours_over_trackpy"] = round(
                peer["seconds_median"] / ours["seconds_median"], 2)
            scenes.append(row)

    result = {
        "benchmark": "link",
        "machine": {
            "cpu_count": os.cpu_count(),
            "load_average_1min": [round(load_at_start, 2), round(os.getloadavg()[0], 2)],
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "pandas": pd.__version__,
            "trackpy": trackpy.__version__,
            "trackpy_numba": importlib.util.find_spec("numba") is not None,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
        },
        "setup": {
            "field_px": [SHAPE_PX, SHAPE_PX],
            "pixel_size_um": PIXEL_UM,
            "frame_interval_s": DT_S,
            "d_um2_s_uniform": list(D_RANGE),
            "localization_sigma_um": SIGMA_LOC_UM,
            "max_distance_um (trackpy search_range)": MAX_DISTANCE_UM,
            "max_gap_frames (trackpy memory)": MAX_GAP_FRAMES,
            "ours": "OnlineLinker.link + ended per frame, defaults otherwise",
            "trackpy": "trackpy.link on the whole DataFrame, default link strategy",
        },
        "scenes": scenes,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
