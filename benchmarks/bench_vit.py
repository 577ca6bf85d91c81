"""Transformer throughput: windows/s with and without dynamic batching, CPU and (if present) GPU.

For each shipped weight file (or ``--weights``), on 10-point windows:

* ``direct``: one forward pass per large batch (the model's ceiling);
* ``per_session_unbatched``: S concurrent sessions, each running its own forward pass
  on its frame's windows (W windows per call) - what a server without a batcher does;
* ``dynamic_batching``: the same sessions submitting to one shared
  :class:`livespt.server.inference.batcher.DynamicBatcher` (one forward pass per gathered batch).

Input preparation (features, normalisation) is timed separately: in the server it
runs in each session's worker thread. Writes JSON (default
``benchmarks/results/vit.json``) and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import threading
import time
from pathlib import Path
from typing import Any

import torch

from livespt.models.vit.data import TrainingDistribution, simulate_windows
from livespt.models.vit.estimator import ViTEstimator, shipped_weights
from livespt.models.vit.inputs import concat_inputs, prepare
from livespt.server.inference.batcher import DynamicBatcher, split_tensors


def _windows(n: int, device: torch.device) -> Any:
    gen = torch.Generator().manual_seed(0)
    return simulate_windows(n, TrainingDistribution(), gen, length=10, realistic=False)


def _rate(fn: Any, n_items: int, min_s: float = 3.0) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    reps = 0
    while time.perf_counter() - t0 < min_s:
        fn()
        reps += 1
    return reps * n_items / (time.perf_counter() - t0)


def bench_model(path: Path, device: str, sessions: int, per_call: int) -> dict[str, Any]:
    est = ViTEstimator.load(path, device)
    batch = _windows(4096, torch.device("cpu"))
    x = batch.inputs
    res: dict[str, Any] = {"model": est.name, "variant": est.model.config.variant,
                           "device": device}
    for bs in (256, 1024, 4096):
        part = concat_inputs([x]) if bs == 4096 else _slice(x, bs)
        res[f"direct_batch_{bs}_windows_per_s"] = round(_rate(lambda p=part: est.predict_log(p),
                                                               bs), 1)
    small = [_slice(x, per_call, k * per_call) for k in range(sessions)]

    def unbatched() -> None:
        threads = [threading.Thread(target=est.predict_log, args=(s,)) for s in small]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    res["per_session_unbatched_windows_per_s"] = round(_rate(unbatched, sessions * per_call), 1)
    with DynamicBatcher(lambda inp: est.predict_log(inp), concat=concat_inputs,
                        split=split_tensors, size=len, max_batch=4096,
                        max_delay_ms=2.0) as batcher:
        def batched() -> None:
            threads = [threading.Thread(target=batcher, args=(s,)) for s in small]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        res["dynamic_batching_windows_per_s"] = round(_rate(batched, sessions * per_call), 1)
        res["dynamic_batching_stats"] = {k: (round(v, 2) if isinstance(v, float) else v)
                                         for k, v in batcher.stats.items()}
    res["batching_speedup"] = round(res["dynamic_batching_windows_per_s"]
                                    / res["per_session_unbatched_windows_per_s"], 2)
    a = batch.acquisition
    loc = batch.localized_um[:1024]
    origin = torch.floor(loc / a["pixel_size_um"] + 0.5) * a["pixel_size_um"]

    def prep() -> None:
        prepare(x.images[:1024], origin, loc, batch.sigma_um[:1024], batch.frames[:1024],
                x.valid[:1024], **a)

    res["input_preparation_windows_per_s"] = round(_rate(prep, 1024), 1)
    return res


def _slice(x: Any, n: int, start: int = 0) -> Any:
    from livespt.models.vit.inputs import WindowInputs

    return WindowInputs(*(getattr(x, k)[start:start + n] for k in
                          ("images", "geometry", "valid", "features", "acquisition")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", nargs="*", default=None)
    ap.add_argument("--sessions", type=int, default=8, help="concurrent sessions")
    ap.add_argument("--per-call", type=int, default=50, help="windows per session call")
    ap.add_argument("--out", default="benchmarks/results/vit.json")
    args = ap.parse_args()
    paths = [Path(p) for p in args.weights] if args.weights else shipped_weights()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    out: dict[str, Any] = {
        "command": "python benchmarks/bench_vit.py",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "sessions": args.sessions, "windows_per_session_call": args.per_call,
        "window_points": 10, "results": []}
    for p in paths:
        for d in devices:
            r = bench_model(p, d, args.sessions, args.per_call)
            out["results"].append(r)
            print(json.dumps(r), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
