"""Tracking stage alone: frames/s of Session.track on pre-detected 512x512 frames.

Link (blur merging, adaptive gates), window buffers, track noise, CVE windows, change
detection and the CSV records, without detection or gRPC: the part of the live path
that runs in the session's thread. Detection is done once beforehand, untimed.

To compare two versions of the code on the same machine in the same sitting, run
this file with ``PYTHONPATH`` pointing at each checkout in turn (alternate them: the
2-core VM drifts), e.g. a ``git worktree`` of the older commit::

    PYTHONPATH=/tmp/oldtree .venv/bin/python benchmarks/bench_track_stage.py --particles 50
    .venv/bin/python benchmarks/bench_track_stage.py --particles 50

Prints JSON and appends it to ``--out`` (default
``benchmarks/results/track_stage.json``, one JSON object per line).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

import livespt
from livespt.models.simulate import MovieConfig, simulate_movie
from livespt.server.service.detection_pool import detect_and_crop
from livespt.server.service.session import Session
from livespt.server.service.settings import DetectorSettings, StreamSettings


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--particles", type=int, default=50)
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/track_stage.json")
    args = ap.parse_args()
    n = args.particles
    # Half slow, half fast (D dt / px^2 = 0.5 and 5: blurred spots, wide gates).
    cfg = MovieConfig(shape_px=(512, 512), n_frames=args.frames, n_particles=n,
                      pixel_size_um=0.1, frame_interval_s=0.05,
                      d_um2_s=np.where(np.arange(n) % 2 == 0, 0.1, 1.0), snr=10.0)
    movie = simulate_movie(cfg, seed=1)
    s = StreamSettings(pixel_size_um=0.1, frame_interval_s=0.05, exposure_s=0.05,
                       detector=DetectorSettings(camera_estimate_frames=0),  # speed only
                       pixel_type="uint16", height=512, width=512)
    rates = []
    with tempfile.TemporaryDirectory() as d:
        task = Session(s, Path(d) / "detect", "bench").detection_task
        detected = [detect_and_crop(f, task) for f in movie.frames]
        for rep in range(args.repeats):
            sess = Session(s, Path(d) / str(rep), "bench")
            t0 = time.perf_counter()
            for i, x in enumerate(detected):
                sess.track(i, x)
            rates.append(len(detected) / (time.perf_counter() - t0))
            sess.close("completed")
    result = {"code": str(Path(livespt.__file__).resolve().parent), "particles": n,
              "frames": args.frames, "tracking_frames_per_s": [round(r, 1) for r in rates],
              "best": round(max(rates), 1)}
    print(json.dumps(result))
    with open(args.out, "a") as fh:
        fh.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
