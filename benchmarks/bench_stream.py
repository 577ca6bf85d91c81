"""Whole live path over loopback: frames/s, frame-to-update latency, memory, peers.

For simulated 512x512 uint16 movies with 50 and 500 particles (SNR 10):

* ``livespt serve`` in its own process; the client streams over 127.0.0.1
  (a) as fast as the server acknowledges (throughput; ``--repeats`` runs,
  median) and (b) paced at a fixed rate below capacity (latency from sending a
  frame to receiving its results);
* the same server with ``--detect-workers 0`` (detection in its threads instead
  of worker processes), its throughput runs alternated with (a);
* the transport ceiling in the same run: a raw grpcio bidirectional stream in
  its own process that only echoes a small ack per frame of the same bytes;
* the in-process pipeline without gRPC (what the transport costs);
* trackpy ``locate`` + ``link`` on the same frames, same machine, same run;
* server memory (RSS of the server and its detection workers) sampled along a
  long stream (should stay flat).

Writes JSON (default ``benchmarks/results/stream.json``) and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from livespt.models.simulate import MovieConfig, simulate_movie
from livespt.server.client import DetectorSettings, LiveSptClient, StreamSettings

PX, DT = 0.1, 0.05
# Speed only: no camera estimate (it would hold the first 30 frames of every stream and
# put the hold into the latencies; its cost is in docs/architecture.md).
NO_HOLD = DetectorSettings(camera_estimate_frames=0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants (detection workers), MB."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    tree, frontier = {pid}, [pid]
    while frontier:
        p = frontier.pop()
        for child, parent in parents.items():
            if parent == p and child not in tree:
                tree.add(child)
                frontier.append(child)
    total = 0.0
    for p in tree:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            continue
    return total


def start_server(sessions: Path, models: bool = False,
                 detect_workers: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """``livespt serve`` in its own process: classical (CVE) windows, or the shipped models.

    ``detect_workers``: the server's ``--detect-workers`` (None: its default).
    """
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "livespt.server.cli.main", "serve", "--port", str(port),
         "--device", "cpu",
         "--sessions-dir", str(sessions), *([] if models else ["--no-models"]),
         *([] if detect_workers is None else ["--detect-workers", str(detect_workers)])],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = f"127.0.0.1:{port}"
    with LiveSptClient(target) as c:
        c.wait_ready(60)
    return proc, target


ECHO_SERVER = r'''
import sys, grpc
from concurrent import futures
def echo(it, ctx):
    for i, msg in enumerate(it):
        yield len(msg).to_bytes(8, "little")
srv = grpc.server(futures.ThreadPoolExecutor(4), options=[
    ("grpc.max_receive_message_length", 64 << 20)])
h = grpc.method_handlers_generic_handler(
    "bench.Echo", {"Stream": grpc.stream_stream_rpc_method_handler(echo)})
srv.add_generic_rpc_handlers((h,))
srv.add_insecure_port("127.0.0.1:" + sys.argv[1]); srv.start(); srv.wait_for_termination()
'''


def echo_ceiling(frames: np.ndarray) -> dict[str, Any]:
    """Frames/s of a raw grpcio bytes stream with a 8-byte ack per frame."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, str(port)])
    try:
        ch = grpc_channel(f"127.0.0.1:{port}")
        import grpc

        grpc.channel_ready_future(ch).result(timeout=30)
        call = ch.stream_stream("/bench.Echo/Stream", request_serializer=None,
                                response_deserializer=None)
        payloads = [f.tobytes() for f in frames]
        t0 = time.perf_counter()
        n = sum(1 for _ in call(iter(payloads)))
        elapsed = time.perf_counter() - t0
        ch.close()
        return {"frames": n, "seconds": round(elapsed, 3), "frames_per_s": round(n / elapsed, 1),
                "mb_per_s": round(n * frames[0].nbytes / elapsed / 1e6, 1)}
    finally:
        proc.terminate()
        proc.wait()


def grpc_channel(target: str) -> Any:
    import grpc

    return grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 << 20)])


def stream_throughput(target: str, movie: Any) -> dict[str, Any]:
    frames = movie.frames
    with LiveSptClient(target) as c:
        t0 = time.perf_counter()
        res = c.stream(iter(frames), StreamSettings(PX, DT, detector=NO_HOLD))
        elapsed = time.perf_counter() - t0
    lat = np.asarray(res.client_latency_ms)
    xy = [[] for _ in range(len(frames))]  # type: list[list[tuple[float, float]]]
    for p in res.points:
        xy[p.frame].append((p.x_um / PX, p.y_um / PX))
    return {"frames": res.frames_acked, "seconds": round(elapsed, 3),
            "frames_per_s": round(res.frames_acked / elapsed, 1),
            "spots_per_frame": round(len(res.points) / max(res.frames_acked, 1), 1),
            "detection": _f1_scores(movie, [np.asarray(v).reshape(-1, 2) for v in xy]),
            "client_latency_p50_ms_unpaced": round(float(np.percentile(lat, 50)), 2)}


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median frames/s, plus every run's frames/s."""
    ordered = sorted(runs, key=lambda r: r["frames_per_s"])
    return {**ordered[len(ordered) // 2],
            "frames_per_s_runs": [r["frames_per_s"] for r in runs]}


def stream_paced(target: str, frames: np.ndarray, fps: float) -> dict[str, Any]:
    def paced():
        t0 = time.perf_counter()
        for i, f in enumerate(frames):
            wait = t0 + i / fps - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            yield f

    with LiveSptClient(target) as c:
        res = c.stream(paced(), StreamSettings(PX, DT, detector=NO_HOLD))
    lat = np.asarray(res.client_latency_ms)
    srv = np.asarray(res.server_latency_ms)
    return {"rate_fps": fps, "frames": res.frames_acked,
            "client_latency_p50_ms": round(float(np.percentile(lat, 50)), 2),
            "client_latency_p99_ms": round(float(np.percentile(lat, 99)), 2),
            "server_latency_p50_ms": round(float(np.percentile(srv, 50)), 2),
            "server_latency_p99_ms": round(float(np.percentile(srv, 99)), 2)}


def in_process_pipeline(frames: np.ndarray, out: Path) -> dict[str, Any]:
    from livespt.server.service.session import Session
    from livespt.server.service.settings import StreamSettings

    s = StreamSettings(pixel_size_um=PX, frame_interval_s=DT, exposure_s=DT, pixel_type="uint16",
                       detector=NO_HOLD,
                       height=frames.shape[1], width=frames.shape[2])
    sess = Session(s, out, "bench")
    t0 = time.perf_counter()
    for i, f in enumerate(frames):
        sess.process(i, f)
    elapsed = time.perf_counter() - t0
    sess.close("completed")
    return {"frames": len(frames), "frames_per_s": round(len(frames) / elapsed, 1)}


def _f1_scores(movie: Any, xy_per_frame: list[np.ndarray]) -> dict[str, float]:
    from livespt.server.pipeline.scoring import score_movie

    sc = score_movie(xy_per_frame, movie.ground_truth, PX, movie.frames.shape[1:])
    return {"recall": round(sc.recall, 4), "precision": round(sc.precision, 4),
            "f1": round(sc.f1, 4)}


def _tp_xy(f: Any, n_frames: int) -> list[np.ndarray]:
    return [f.loc[f["frame"] == t, ["x", "y"]].to_numpy() for t in range(n_frames)]


def tune_minmass(cfg: MovieConfig, diameter: int) -> float:
    """trackpy's minmass maximising F1 on a calibration movie (other seed, 10 frames)."""
    import trackpy as tp

    calib = simulate_movie(MovieConfig(**{**cfg.__dict__, "n_frames": 10}), seed=999)
    f = tp.batch(calib.frames, diameter, minmass=0, processes=1)
    grid = np.quantile(f["mass"], np.linspace(0, 0.995, 80))
    f1 = [_f1_scores(calib, _tp_xy(f[f["mass"] > g], 10))["f1"] for g in grid]
    best = grid[np.asarray(f1) >= max(f1) - 1e-4]
    return float(np.median(best))


def trackpy_peer(movie: Any, cfg: MovieConfig) -> dict[str, Any]:
    import trackpy as tp

    tp.quiet()
    frames = movie.frames
    diameter = 2 * int(np.ceil((4 * cfg.sigma_px + 1) / 2)) - 1  # smallest odd >= 4 sigma + 1
    minmass = tune_minmass(cfg, diameter)
    t0 = time.perf_counter()
    f = tp.batch(frames, diameter, minmass=minmass, processes=1)
    t1 = time.perf_counter()
    tp.link(f, search_range=1.0 / PX, memory=2)
    t2 = time.perf_counter()
    return {"diameter_px": diameter, "minmass_tuned": round(minmass, 1),
            "spots_per_frame": round(len(f) / len(frames), 1),
            "detection": _f1_scores(movie, _tp_xy(f, len(frames))),
            "locate_s": round(t1 - t0, 3), "link_s": round(t2 - t1, 3),
            "frames_per_s": round(len(frames) / (t2 - t0), 1),
            "numba": _has("numba")}


def _has(mod: str) -> bool:
    try:
        __import__(mod)
        return True
    except ImportError:
        return False


def memory_over_long_stream(target: str, pid: int, frames: np.ndarray,
                            repeats: int) -> dict[str, Any]:
    samples = []

    def frames_iter():
        for r in range(repeats):
            yield from frames
            samples.append((r + 1) * len(frames))

    rss: list[float] = []
    with LiveSptClient(target) as c:
        def on_update(upd):
            if upd.WhichOneof("update") == "frame" and (upd.frame.index + 1) % len(frames) == 0:
                rss.append(rss_mb(pid))
        c.stream(frames_iter(), StreamSettings(PX, DT, detector=NO_HOLD), on_update=on_update)
    return {"frames": repeats * len(frames), f"rss_mb_every_{len(frames)}_frames":
            [round(x, 1) for x in rss],
            "rss_growth_mb_second_half": round(rss[-1] - rss[len(rss) // 2], 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--long-repeats", type=int, default=10,
                    help="memory run: the 50-particle movie is streamed this many times")
    ap.add_argument("--repeats", type=int, default=3,
                    help="throughput runs per server setup, alternated (median reported)")
    ap.add_argument("--out", default="benchmarks/results/stream.json")
    args = ap.parse_args()
    from livespt.server.service.app import ServerOptions

    result: dict[str, Any] = {
        "benchmark": "stream",
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(),
                    "loadavg_start": os.getloadavg()},
        "server_detect_workers_default": ServerOptions().detect_workers,
        "command": "python benchmarks/bench_stream.py " + " ".join(sys.argv[1:]),
        "cases": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        proc, target = start_server(Path(tmp) / "sessions")
        # Peer in the same run: the same server detecting in its threads (no worker
        # processes), as before the detection stage moved to processes.
        proc_t, target_t = start_server(Path(tmp) / "sessions_t", detect_workers=0)
        try:
            for n_particles in (50, 500):
                cfg = MovieConfig(shape_px=(512, 512), n_frames=args.frames,
                                  n_particles=n_particles, pixel_size_um=PX,
                                  frame_interval_s=DT, d_um2_s=0.1, snr=10.0)
                movie = simulate_movie(cfg, seed=n_particles)
                frames = movie.frames
                case: dict[str, Any] = {}
                case["echo_ceiling"] = echo_ceiling(frames)
                runs: dict[str, list[dict[str, Any]]] = {"processes": [], "threads": []}
                for _ in range(args.repeats):  # alternated, so drift hits both alike
                    runs["processes"].append(stream_throughput(target, movie))
                    runs["threads"].append(stream_throughput(target_t, movie))
                case["livespt_stream"] = _median_run(runs["processes"])
                case["livespt_stream_detect_in_threads"] = _median_run(runs["threads"])
                case["ratio_detect_processes_over_threads"] = round(
                    case["livespt_stream"]["frames_per_s"]
                    / case["livespt_stream_detect_in_threads"]["frames_per_s"], 2)
                rate = min(100.0, 0.7 * case["livespt_stream"]["frames_per_s"])
                case["livespt_paced"] = stream_paced(target, frames, rate)
                case["livespt_in_process"] = in_process_pipeline(
                    frames, Path(tmp) / f"p{n_particles}")
                case["trackpy_locate_link"] = trackpy_peer(movie, cfg)
                case["ratio_livespt_stream_over_trackpy"] = round(
                    case["livespt_stream"]["frames_per_s"]
                    / case["trackpy_locate_link"]["frames_per_s"], 2)
                case["ratio_livespt_stream_over_echo"] = round(
                    case["livespt_stream"]["frames_per_s"]
                    / case["echo_ceiling"]["frames_per_s"], 3)
                result["cases"][f"512x512_{n_particles}_particles"] = case
                print(json.dumps({n_particles: case}, indent=2), flush=True)
            cfg = MovieConfig(shape_px=(512, 512), n_frames=200, n_particles=50,
                              pixel_size_um=PX, frame_interval_s=DT, d_um2_s=0.1, snr=10.0)
            frames = simulate_movie(cfg, seed=1).frames
            result["memory"] = memory_over_long_stream(target, proc.pid, frames,
                                                       args.long_repeats)
        finally:
            for p in (proc, proc_t):
                p.terminate()
                p.wait(timeout=60)
        from livespt.models.vit import shipped_weights

        if shipped_weights():
            # The same 50-particle stream with the shipped transformer estimating every
            # window (CPU, through the dynamic batcher) instead of the CVE.
            proc, target = start_server(Path(tmp) / "sessions_vit", models=True)
            try:
                cfg = MovieConfig(shape_px=(512, 512), n_frames=args.frames, n_particles=50,
                                  pixel_size_um=PX, frame_interval_s=DT, d_um2_s=0.1, snr=10.0)
                movie = simulate_movie(cfg, seed=50)
                case = {"livespt_stream": stream_throughput(target, movie)}
                rate = min(100.0, 0.7 * case["livespt_stream"]["frames_per_s"])
                case["livespt_paced"] = stream_paced(target, movie.frames, rate)
                result["cases"]["512x512_50_particles_transformer_windows"] = case
                print(json.dumps({"transformer": case}, indent=2), flush=True)
            finally:
                proc.terminate()
                proc.wait(timeout=60)
    result["machine"]["loadavg_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
