"""Does AnalyzeTracks slow a live stream down? Abandoned and patient calls beside a stream.

For each ``--tracks-workers`` value (default: 0, a thread of the server, then 1, a
worker process), a real ``livespt serve`` process (CVE only, 2 detection workers) receives
one live stream (a simulated 256 x 256 movie with 24 particles, paced at
``--fps``) three times, in the same run:

* ``alone``: nothing else;
* ``abandoned``: every ``--every`` seconds an AnalyzeTracks call of 10 tracks of 4,000
  points with 1,000-frame windows (about 20 s of work on one core) whose client gives up
  after 1 s (its deadline): the server must stop that work (a thread stops at the next
  track; a worker process is killed);
* ``patient``: the same calls with a 300 s deadline, so they are computed whole (they
  queue for the one thread or worker).

For each phase: the stream's per-frame latency as the server measures it (frame arrival
to result, p50/p99/max, ms) and as the client sees it (frame sent to result received),
the CPU seconds the server used, and the AnalyzeTracks calls sent and how they ended.
The client's latency is the one to read: when the server's event loop is starved (the
GIL), frames wait before the server's clock starts. The issue that asked for the separate
pool measured, before it, a worst frame latency raised from 16 ms to 4.4 s by two
abandoned calls (a probe, not this script).

Writes ``benchmarks/results/tracks_interference.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from serve_process import start_serve

ROOT = Path(__file__).resolve().parents[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children so far (s)."""
    total = 0.0
    pids = [pid] + [int(p) for p in subprocess.run(
        ["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()]
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            pass
    return total


def heavy_request(pb: Any) -> Any:
    """10 tracks of 4,000 points, windows of 1,000 frames (about 2 s of work per track)."""
    rng = np.random.default_rng(0)
    req = pb.AnalyzeTracksRequest(frame_interval_s=0.05, exposure_s=0.05,
                                  window=pb.WindowParams(length=1000))
    for k in range(10):
        xy = rng.normal(0, 0.05, (4000, 2)).cumsum(axis=0)
        req.tracks.add(track_id=k, frames=list(range(4000)), x_um=xy[:, 0].tolist(),
                       y_um=xy[:, 1].tolist())
    return req


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 1) if values else float("nan")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=400, help="frames per stream")
    ap.add_argument("--fps", type=float, default=20.0)
    ap.add_argument("--every", type=float, default=3.0,
                    help="seconds between AnalyzeTracks calls")
    ap.add_argument("--tracks-workers", default="0,1",
                    help="the server's --tracks-workers values to compare, in one run "
                         "(0: a thread of the server; 1: one worker process)")
    ap.add_argument("--out", type=Path,
                    default=ROOT / "benchmarks/results/tracks_interference.json")
    args = ap.parse_args(argv)

    import grpc

    from livespt.models.simulate import MovieConfig, simulate_movie
    from livespt.server.client import LiveSptClient, StreamSettings
    from livespt.server.grpc_gen.livespt.v1 import livespt_pb2 as pb
    from livespt.server.grpc_gen.livespt.v1 import livespt_pb2_grpc as pb_grpc
    from livespt.server.service.settings import DetectorSettings

    movie = simulate_movie(MovieConfig(shape_px=(256, 256), n_frames=args.frames,
                                       n_particles=24, pixel_size_um=0.1,
                                       frame_interval_s=1 / args.fps, d_um2_s=0.1, snr=10.0),
                           seed=0).frames
    tmp = Path(tempfile.mkdtemp(prefix="livespt-interference-"))
    request = heavy_request(pb)
    server, target = None, ""

    def phase(kind: str) -> dict:
        stop = threading.Event()
        ended: dict[str, int] = {}

        def caller() -> None:
            channel = grpc.insecure_channel(target, options=[
                ("grpc.max_send_message_length", 64 << 20)])
            stub = pb_grpc.LiveSptStub(channel)
            futures = []
            while not stop.wait(args.every):
                futures.append(stub.AnalyzeTracks.future(
                    request, timeout=1.0 if kind == "abandoned" else 300.0))
            for f in futures:
                try:
                    f.result()
                    name = "OK"
                except grpc.RpcError as exc:
                    name = exc.code().name
                ended[name] = ended.get(name, 0) + 1
            channel.close()

        thread = threading.Thread(target=caller) if kind != "alone" else None
        sent_at: dict[int, float] = {}
        client_ms: list[float] = []
        server_ms: list[float] = []

        def paced():
            t0 = time.monotonic()
            for i, f in enumerate(movie):
                delay = t0 + i / args.fps - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                sent_at[i] = time.monotonic()
                yield f

        def on_update(u: pb.AnalysisUpdate) -> None:
            if u.WhichOneof("update") == "frame":
                client_ms.append((time.monotonic() - sent_at[u.frame.index]) * 1e3)
                server_ms.append(u.frame.latency_ms)

        cpu0 = cpu_seconds(server.pid)
        t0 = time.monotonic()
        if thread is not None:
            thread.start()
        with LiveSptClient(target) as client:
            # No camera estimate: its hold would delay the first frames in every phase.
            client.stream(paced(), StreamSettings(
                pixel_size_um=0.1, frame_interval_s=1 / args.fps, exposure_s=1 / args.fps,
                detector=DetectorSettings(camera_estimate_frames=0)), on_update=on_update)
        stop.set()
        if thread is not None:
            thread.join()
        if kind == "patient":  # wait for the queued calls' work to end before the next phase
            time.sleep(1)
        return {
            "frames_acked": len(server_ms),
            "server_latency_ms": {"p50": pct(server_ms, 50), "p99": pct(server_ms, 99),
                                  "max": round(max(server_ms), 1)},
            "client_latency_ms": {"p50": pct(client_ms, 50), "p99": pct(client_ms, 99),
                                  "max": round(max(client_ms), 1)},
            "server_cpu_s": round(cpu_seconds(server.pid) - cpu0, 1),
            "wall_s": round(time.monotonic() - t0, 1),
            "analyze_tracks_calls": ended,
        }

    modes = {}
    for workers in args.tracks_workers.split(","):
        server, target = start_serve("--device", "cpu", "--no-models", "--detect-workers", "2",
                                     "--tracks-workers", workers,
                                     "--sessions-dir", str(tmp / f"sessions-{workers}"),
                                     "--log-file", str(tmp / f"serve-{workers}.log"))
        phases = {kind: phase(kind) for kind in ("alone", "abandoned", "patient")}
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        alone = phases["alone"]["client_latency_ms"]
        modes[f"--tracks-workers {workers}"] = {
            "phases": phases,
            "client_latency_ratios_to_alone": {
                kind: {q: round(p["client_latency_ms"][q] / alone[q], 2) if alone[q] else None
                       for q in ("p50", "p99", "max")}
                for kind, p in phases.items() if kind != "alone"}}
    result = {
        "benchmark": "tracks_interference",
        "command": "python benchmarks/bench_tracks_interference.py "
                   + " ".join(argv or sys.argv[1:]),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "settings": {k: str(v) for k, v in vars(args).items()},
        "note": ("server_cpu_s counts the server and its children: AnalyzeTracks worker "
                 "processes are children of the forkserver and are not in it"),
        "modes": modes,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
