"""``livespt serve`` as a real process: it listens on loopback and shuts down gracefully."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

from livespt.server.client import LiveSptClient, StreamSettings


def wait_listening(proc: subprocess.Popen) -> re.Match:
    """The server's "listening on HOST:PORT" line (log lines may come before it)."""
    seen = []
    for line in proc.stdout:
        m = re.search(r"listening on (127\.0\.0\.1):(\d+)", line)
        if m:
            return m
        seen.append(line)
    raise AssertionError("the server did not start: " + "".join(seen)[-2000:])


def test_sigterm_flushes_running_sessions_and_exits_cleanly(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "livespt.server.cli.main", "serve", "--port", "0", "--device", "cpu",
         "--sessions-dir", str(tmp_path), "--shutdown-grace", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        m = wait_listening(proc)
        target = f"{m.group(1)}:{m.group(2)}"

        acked = threading.Event()
        hold = threading.Event()
        results: dict = {}

        def frames():
            rng = np.random.default_rng(0)
            for _ in range(20):
                yield (100 + rng.poisson(10, (64, 64))).astype(np.uint16)
            hold.wait(30)  # the acquisition pauses: the stream stays open

        def on_update(u) -> None:
            if u.WhichOneof("update") == "frame" and u.frame.index == 19:
                acked.set()

        def client() -> None:
            with LiveSptClient(target) as c:
                try:
                    c.stream(frames(), StreamSettings(0.1, 0.05), on_update=on_update)
                except Exception as exc:  # the server cuts the stream after its grace
                    results["error"] = exc

        th = threading.Thread(target=client)
        th.start()
        assert acked.wait(60), "frames were not acknowledged"
        t0 = time.time()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
        out = proc.stdout.read()
        hold.set()
        th.join(timeout=30)
        assert rc == 0, out
        assert "stopped" in out
        assert time.time() - t0 < 30
        (session,) = list(tmp_path.iterdir())
        summary = json.loads((session / "summary.json").read_text())
        assert summary["status"] == "server shutdown"
        assert summary["frames"] == 20
        tracks = pd.read_csv(session / "tracks.csv")
        assert len(tracks) == summary["track_points"]
    finally:
        if proc.poll() is None:
            proc.kill()


def test_log_file_records_sessions_and_a_taken_port_refuses_a_second_server(
        tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    cmd = [sys.executable, "-m", "livespt.server.cli.main", "serve", "--device", "cpu",
           "--no-models", "--detect-workers", "0", "--sessions-dir", str(tmp_path / "s")]
    proc = subprocess.Popen([*cmd, "--port", "0", "--log-file", str(log)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        m = wait_listening(proc)
        target, port = f"{m.group(1)}:{m.group(2)}", m.group(2)
        frames = [(100 + np.random.default_rng(k).poisson(10, (32, 32))).astype(np.uint16)
                  for k in range(3)]
        with LiveSptClient(target) as c:
            c.stream(frames, StreamSettings(0.1, 0.05))
        # The same port again: refused in one line, not shared (no SO_REUSEPORT).
        second = subprocess.run([*cmd, "--port", port], capture_output=True, text=True,
                                timeout=120)
        assert second.returncode != 0
        assert f"could not bind 127.0.0.1:{port}: the port is in use" in second.stderr
        assert "Traceback" not in second.stderr
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert re.search(r"INFO livespt\.server: LiveSPT serving on 127\.0\.0\.1:" + port, text)
    assert re.search(r"session \S+ started: peer ipv4:127\.0\.0\.1:\d+, 32 x 32 uint16", text)
    assert re.search(r"session \S+ ended: completed; 3 frames, \d+ tracks, peer ipv4:", text)


def test_after_sigkill_workers_and_shared_memory_go_and_the_next_start_closes_records(
        tmp_path: Path) -> None:
    """SIGKILL of the server: its detection workers, the forkserver and the resource tracker
    exit, its shared-memory blocks are unlinked, and a server started next on the same
    sessions folder marks the session that was running as ended by the server's death."""
    import glob
    import os

    before = set(glob.glob("/dev/shm/psm_*"))
    cmd = [sys.executable, "-m", "livespt.server.cli.main", "serve", "--device", "cpu",
           "--no-models", "--detect-workers", "2", "--sessions-dir", str(tmp_path)]
    proc = subprocess.Popen([*cmd, "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    acked = threading.Event()
    release = threading.Event()
    try:
        m = wait_listening(proc)
        target = f"{m.group(1)}:{m.group(2)}"

        def frames():
            rng = np.random.default_rng(0)
            for _ in range(20):
                yield (100 + rng.poisson(10, (256, 256))).astype(np.uint16)
            release.wait(60)

        def client() -> None:
            with LiveSptClient(target) as c, contextlib.suppress(Exception):
                c.stream(frames(), StreamSettings(0.1, 0.05),
                         on_update=lambda u: acked.set() if u.WhichOneof("update") == "frame"
                         and u.frame.index == 19 else None)

        th = threading.Thread(target=client, daemon=True)
        th.start()
        assert acked.wait(60)
        group = subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True,
                               text=True).stdout.split()
        children = [int(p) for p in group if int(p) != proc.pid]
        assert len(children) >= 3  # resource tracker, forkserver, 2 workers
        blocks = set(glob.glob("/dev/shm/psm_*")) - before
        proc.kill()
        proc.wait(timeout=30)  # reaped, as a shell or supervisor would
        deadline = time.monotonic() + 30
        while any(os.path.exists(f"/proc/{p}") for p in children):
            assert time.monotonic() < deadline, [
                open(f"/proc/{p}/cmdline").read() for p in children
                if os.path.exists(f"/proc/{p}")]
            time.sleep(0.2)
        assert not (blocks & set(glob.glob("/dev/shm/psm_*")))
    finally:
        release.set()
        if proc.poll() is None:
            proc.kill()
    (session,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert json.loads((session / "summary.json").read_text())["status"] == "running"
    second = subprocess.Popen([*cmd, "--port", "0"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        wait_listening(second)
        status = json.loads((session / "summary.json").read_text())["status"]
        assert status.startswith("server died: the session was found running"), status
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=60) == 0
    finally:
        if second.poll() is None:
            second.kill()


def test_out_of_open_files_is_resource_exhausted_and_the_server_goes_on(
        tmp_path: Path) -> None:
    """Under an open-file limit of 64, 60 concurrent streams: those that cannot open their
    files get RESOURCE_EXHAUSTED naming the cause (no path), none UNKNOWN, and the server
    still answers."""
    import collections
    import resource

    import grpc
    from server_helpers import background_frames, config, frame_msg

    from livespt.server.grpc_gen.livespt.v1 import livespt_pb2 as pb
    from livespt.server.grpc_gen.livespt.v1 import livespt_pb2_grpc as pb_grpc

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    proc = subprocess.Popen(
        [sys.executable, "-m", "livespt.server.cli.main", "serve", "--port", "0", "--device",
         "cpu", "--no-models", "--detect-workers", "0", "--max-sessions", "200",
         "--sessions-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=low_limit)
    try:
        m = wait_listening(proc)
        channel = grpc.insecure_channel(f"{m.group(1)}:{m.group(2)}")
        stub = pb_grpc.LiveSptStub(channel)
        release = threading.Event()
        codes: collections.Counter[str] = collections.Counter()
        details: dict[str, str] = {}

        def one() -> None:
            def requests():
                yield pb.StreamRequest(config=config())
                yield frame_msg(0, next(background_frames(1)))
                release.wait(30)
            try:
                for _ in stub.StreamFrames(requests(), timeout=60):
                    pass
                codes["OK"] += 1
            except grpc.RpcError as exc:
                codes[exc.code().name] += 1
                details[exc.code().name] = exc.details()

        threads = [threading.Thread(target=one) for _ in range(60)]
        for t in threads:
            t.start()
            time.sleep(0.05)
        time.sleep(3)
        release.set()
        for t in threads:
            t.join(timeout=60)
        assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}, (codes, details)
        assert codes["RESOURCE_EXHAUSTED"] > 0 and codes["OK"] > 0, codes
        assert details["RESOURCE_EXHAUSTED"].startswith("the server is out of open files")
        assert str(tmp_path) not in details["RESOURCE_EXHAUSTED"]
        assert stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10).version
        channel.close()
    finally:
        proc.kill()
