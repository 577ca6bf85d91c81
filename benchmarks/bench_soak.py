"""Soak: many streams for minutes, clients killed at random; nothing lost, nothing growing.

A real ``livespt serve`` process (CVE only, detection workers on) receives ``--streams``
concurrent streams for ``--minutes``. Each stream is its own client process
(``livespt.server.client`` streaming a simulated 128 x 128 movie at ``--fps``); a new one
starts when one ends. With probability ``--kill-fraction`` a client is killed with SIGKILL
at a random moment of its stream (a client that vanishes). Every 5 s the server's RSS
(server plus detection workers) and open file descriptors are sampled.

Reported (JSON, default ``benchmarks/results/soak.json``):

* frames sent and acknowledged by the clients, and on disk in the sessions' records; for
  killed clients, acknowledged frames missing from disk (must be 0) and whether each
  session was closed (``summary.json`` not ``running``);
* the status codes the clients saw;
* RSS and open files: after warm-up (the first minute) and at the end, and the slope
  of a line through the samples after warm-up (MB/min, files/min);
* ``GetServerInfo`` and health answered throughout (a probe every 5 s);
* whether the server died during the run (``server_died_at_s``, its exit code: negative
  is the signal that killed it) or exited cleanly on SIGTERM at the end (0).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from serve_process import start_serve

ROOT = Path(__file__).resolve().parents[1]

CLIENT = r"""
import json, sys, time, numpy as np, grpc
from livespt.server.client import LiveSptClient, StreamSettings
target, movie, fps = sys.argv[1], sys.argv[2], float(sys.argv[3])
frames = np.load(movie)
acked = 0
def paced():
    t0 = time.monotonic()
    for i, f in enumerate(frames):
        delay = t0 + i / fps - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield f
def on_update(u):
    global acked
    kind = u.WhichOneof("update")
    if kind == "started":
        print("started", u.started.session_id, flush=True)
    elif kind == "frame":
        acked += 1
        print("acked", acked, flush=True)
code = "OK"
try:
    with LiveSptClient(target) as c:
        c.stream(paced(), StreamSettings(pixel_size_um=0.1, frame_interval_s=1 / fps,
                                         exposure_s=1 / fps), on_update=on_update)
except grpc.RpcError as exc:
    code = exc.code().name
print("done", json.dumps({"sent": len(frames), "acked": acked, "code": code}), flush=True)
"""


def rss_mb(pid: int) -> float:
    """RSS of a process and its descendants, MB."""
    total = 0
    pids = [pid]
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    pids += [int(p) for p in out.split()]
    for p in pids:
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def open_files(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


class Client:
    """One client process, its stdout read on a thread."""

    def __init__(self, target: str, movie: Path, fps: float, kill_at: float | None) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", CLIENT, target, str(movie), str(fps)],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.kill_at = kill_at  # seconds after the first ack; None: runs to the end
        self.session: str | None = None
        self.acked = 0
        self.first_ack: float | None = None
        self.result: dict | None = None
        self.killed = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if not line.endswith("\n"):
                break  # cut short by SIGKILL
            word, _, rest = line.strip().partition(" ")
            if word == "started":
                self.session = rest
            elif word == "acked":
                self.acked = int(rest)
                if self.first_ack is None:
                    self.first_ack = time.monotonic()
            elif word == "done":
                self.result = json.loads(rest)

    def poll(self) -> bool:
        """Kill when due; True once the process has ended."""
        if (self.kill_at is not None and not self.killed and self.first_ack is not None
                and time.monotonic() - self.first_ack > self.kill_at):
            self.proc.kill()
            self.killed = True
        return self.proc.poll() is not None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--frames", type=int, default=300, help="frames per stream")
    ap.add_argument("--fps", type=float, default=20.0, help="each client's frame rate")
    ap.add_argument("--kill-fraction", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/soak.json")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)

    from livespt.models.simulate import MovieConfig, simulate_movie

    tmp = Path(tempfile.mkdtemp(prefix="livespt-soak-"))
    movie = simulate_movie(MovieConfig(shape_px=(128, 128), n_frames=args.frames,
                                       n_particles=10, pixel_size_um=0.1,
                                       frame_interval_s=1 / args.fps, d_um2_s=0.1, snr=10.0),
                           seed=args.seed)
    np.save(tmp / "movie.npy", movie.frames)
    sessions = tmp / "sessions"
    server, target = start_serve("--device", "cpu", "--no-models", "--detect-workers", "2",
                                 "--sessions-dir", str(sessions),
                                 "--max-sessions", str(args.streams + 4),
                                 "--log-file", str(tmp / "serve.log"))

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from livespt.server.grpc_gen.livespt.v1 import livespt_pb2 as pb
    from livespt.server.grpc_gen.livespt.v1 import livespt_pb2_grpc as pb_grpc

    probe = grpc.insecure_channel(target)
    info_stub = pb_grpc.LiveSptStub(probe)
    health = health_pb2_grpc.HealthStub(probe)

    t0 = time.monotonic()
    end = t0 + args.minutes * 60
    running: list[Client] = []
    finished: list[Client] = []
    samples = []
    probes_failed = 0
    next_sample = t0
    stream_s = args.frames / args.fps
    died_at_s = None
    while time.monotonic() < end or running:
        now = time.monotonic()
        if died_at_s is None and server.poll() is not None:
            died_at_s = round(now - t0, 1)  # a crash: no new clients; the running ones end
            end = now
        while now < end and len(running) < args.streams:
            kill_at = (rng.uniform(0.1, 0.9) * stream_s if rng.random() < args.kill_fraction
                       else None)
            running.append(Client(target, tmp / "movie.npy", args.fps, kill_at))
        for c in list(running):
            if c.poll():
                running.remove(c)
                finished.append(c)
        if now >= next_sample:
            try:
                info = info_stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=5)
                ok = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == 1
                probes_failed += int(not ok)
                active = info.active_sessions
            except grpc.RpcError:
                probes_failed += 1
                active = -1
            samples.append({"t_s": round(now - t0, 1), "rss_mb": round(rss_mb(server.pid), 1),
                            "open_files": open_files(server.pid), "active_sessions": active})
            next_sample = now + 5
        time.sleep(0.05)
    time.sleep(3)  # the server closes the last sessions
    final = {"rss_mb": round(rss_mb(server.pid), 1), "open_files": open_files(server.pid)}
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
    exit_code = server.wait(timeout=60)

    # What the clients saw against what is on disk.
    codes: collections.Counter[str] = collections.Counter()
    sent = acked = on_disk = lost = not_closed = 0
    killed = 0
    for c in finished:
        if c.killed:
            killed += 1
            codes["(killed)"] += 1
        elif c.result is not None:
            codes[c.result["code"]] += 1
            sent += c.result["sent"]
        acked += c.acked
        if c.session is None:
            continue
        summary = json.loads((sessions / c.session / "summary.json").read_text())
        frames = summary["frames"]
        on_disk += frames
        lost += max(0, c.acked - frames)
        not_closed += int(summary["status"] == "running")

    warm = [s for s in samples if s["t_s"] >= 60] or samples

    def slope(key: str) -> float:
        if len(warm) < 2:
            return float("nan")
        t = np.array([s["t_s"] for s in warm]) / 60
        y = np.array([s[key] for s in warm], float)
        return float(np.polyfit(t, y, 1)[0])

    result = {
        "benchmark": "soak",
        "command": "python benchmarks/bench_soak.py " + " ".join(argv or sys.argv[1:]),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "settings": {k: v for k, v in vars(args).items() if k != "out"} | {"out": str(args.out)},
        "server_died_at_s": died_at_s, "server_exit_code": exit_code,
        "streams_run": len(finished), "clients_killed": killed,
        "frames_sent_by_completed_clients": sent, "frames_acked": acked,
        "frames_on_disk": on_disk, "acked_frames_missing_on_disk": lost,
        "sessions_left_running": not_closed, "status_codes": dict(codes),
        "probes_failed": probes_failed,
        "rss_mb": {"after_warmup": warm[0]["rss_mb"] if warm else None,
                   "end": final["rss_mb"], "slope_mb_per_min": round(slope("rss_mb"), 3)},
        "open_files": {"after_warmup": warm[0]["open_files"] if warm else None,
                       "end": final["open_files"],
                       "slope_per_min": round(slope("open_files"), 3)},
        "samples": samples,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))


if __name__ == "__main__":
    main()
