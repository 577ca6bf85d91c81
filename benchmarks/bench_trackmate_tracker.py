"""Live ``--tracker trackmate`` / ``trackmate-lap`` against the built-in tracker: frames/s.

One embedded server offers all three trackers (``trackmate``: TrackMate's LoG detector
and LAP tracker; ``trackmate-lap``: LiveSPT's detector, TrackMate's LAP tracker; both
through the process's JVM thread, linking in blocks of 20 frames); the same simulated
512 x 512 movie is streamed with each, alternated ``--repeats`` times after one warm-up
stream per tracker (the JVM's start is in the first warm-up). Needs a Fiji (``make fiji``).

Writes JSON (default ``benchmarks/results/trackmate_tracker.json``) and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from livespt.models.simulate import MovieConfig, simulate_movie
from livespt.server.client import DetectorSettings, LiveSptClient, StreamSettings
from livespt.server.service.app import EmbeddedServer, ServerOptions

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--particles", type=int, nargs="+", default=[50, 200])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/trackmate_tracker.json"))
    args = ap.parse_args()
    res: dict = {"machine": platform.platform(), "cpus": os.cpu_count(),
                 "python": platform.python_version(), "frames": args.frames, "cases": []}
    with tempfile.TemporaryDirectory() as d, EmbeddedServer(ServerOptions(
            port=0, out_root=Path(d), device="cpu", models=(), trackmate=True)) as srv, \
            LiveSptClient(srv.target) as client:
        for n in args.particles:
            movie = simulate_movie(MovieConfig(shape_px=(512, 512), n_frames=args.frames,
                                               n_particles=n, d_um2_s=0.1, snr=10.0), seed=n)
            frames = list(movie.frames)

            def run(tracker: str, frames: list = frames) -> float:
                t0 = time.perf_counter()
                r = client.stream(iter(frames), StreamSettings(
                    pixel_size_um=0.1, frame_interval_s=0.05, exposure_s=0.05,
                    tracker=tracker, detector=DetectorSettings(camera_estimate_frames=0)))
                assert r.frames_acked == len(frames)
                return time.perf_counter() - t0

            trackers = ("builtin", "trackmate-lap", "trackmate")
            warm = {t: run(t) for t in trackers}
            walls: dict[str, list[float]] = {t: [] for t in trackers}
            for _ in range(args.repeats):
                for t in walls:
                    walls[t].append(run(t))
            case = {"particles": n, "warm_up_s": warm}
            for t, w in walls.items():
                case[t] = {"frames_per_s": args.frames / float(np.median(w)), "wall_s": w}
            for t in trackers[1:]:
                case[f"{t}_over_builtin_frames_per_s"] = (
                    case[t]["frames_per_s"] / case["builtin"]["frames_per_s"])
            res["cases"].append(case)
            print(json.dumps(case), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
