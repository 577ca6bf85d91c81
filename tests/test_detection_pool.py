"""Detection in worker processes (server/service/detection_pool.py).

The workers must give exactly what the server process itself would detect, and
a worker that dies (killed, out of memory) must cost no stream a frame: its
frames are detected again in a fresh pool.
"""

from __future__ import annotations

import json
import os
import signal
from dataclasses import fields
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from livespt.models.simulate import MovieConfig, simulate_movie
from livespt.server.client import LiveSptClient, StreamSettings
from livespt.server.grpc_gen.livespt.v1 import livespt_pb2 as pb
from livespt.server.pipeline.detect import DetectorConfig, Spots
from livespt.server.service.app import EmbeddedServer, ServerOptions
from livespt.server.service.detection_pool import DetectionPool, DetectionTask, detect_and_crop

PX, DT = 0.1, 0.05


def _exit_worker() -> None:
    """Run in a worker: end its process abruptly, as the OOM killer would."""
    os._exit(3)


@pytest.fixture(scope="module")
def movie():
    cfg = MovieConfig(shape_px=(96, 96), n_frames=60, n_particles=12, pixel_size_um=PX,
                      frame_interval_s=DT, d_um2_s=0.1, snr=12.0)
    return simulate_movie(cfg, seed=4)


def _assert_same_spots(a: Spots, b: Spots) -> None:
    assert len(a) == len(b) > 0
    for f in fields(Spots):
        np.testing.assert_array_equal(getattr(a, f.name), getattr(b, f.name), err_msg=f.name)


def test_workers_detect_exactly_what_the_server_process_detects(movie) -> None:
    task = DetectionTask(DetectorConfig(radius_px=1.5), patch_px=9)
    pool = DetectionPool(2)
    try:
        futures = [pool.submit(f, task) for f in movie.frames[:10]]
        for frame, fut in zip(movie.frames[:10], futures, strict=True):
            got, want = fut.result(timeout=60), detect_and_crop(frame, task)
            _assert_same_spots(got.spots, want.spots)
            assert got.patches is not None and got.patches.shape == (len(got.spots), 9, 9)
            np.testing.assert_array_equal(got.patches, want.patches)
        pids = pool.worker_pids()
        assert len(pids) == 2 and os.getpid() not in pids
    finally:
        pool.close()


def _shm_blocks() -> set[str]:
    # SharedMemory's blocks (multiprocessing's semaphores live there too, as sem.*).
    return {p.name for p in Path("/dev/shm").glob("psm_*")}


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no /dev/shm on this system")
def test_frames_travel_in_reused_shared_memory_freed_at_close(movie) -> None:
    before = _shm_blocks()
    task = DetectionTask(DetectorConfig(radius_px=1.5))
    pool = DetectionPool(2)
    try:
        futures: list = []
        for i, frame in enumerate(movie.frames):  # 4 frames in flight, as a stream
            futures.append(pool.submit(frame, task))
            if i >= 3:
                j = i - 3
                got = futures[j].result(timeout=60)
                _assert_same_spots(got.spots, detect_and_crop(movie.frames[j], task).spots)
        for fut in futures[-3:]:
            fut.result(timeout=60)
        in_use = _shm_blocks() - before
        # 60 frames went through a handful of reused blocks, all of one frame's size.
        assert 1 <= len(in_use) <= 5
        assert all((Path("/dev/shm") / n).stat().st_size == movie.frames[0].nbytes
                   for n in in_use)
    finally:
        pool.close()
    assert _shm_blocks() - before == set()


def test_without_shared_memory_frames_go_through_the_pipe(
        movie, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import livespt.server.service.detection_pool as detection

    def no_shm(*args: object, **kw: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(detection, "SharedMemory", no_shm)
    task = DetectionTask(DetectorConfig(radius_px=1.5))
    pool = DetectionPool(1)
    try:
        got = pool.submit(movie.frames[3], task).result(timeout=60)
        _assert_same_spots(got.spots, detect_and_crop(movie.frames[3], task).spots)
    finally:
        pool.close()
    assert "no shared memory for frames" in caplog.text


def test_detection_errors_reach_the_caller_unchanged() -> None:
    pool = DetectionPool(1)
    try:
        fut = pool.submit(np.zeros((2, 2), np.uint16), DetectionTask(DetectorConfig(1.5)))
        with pytest.raises(ValueError, match="frame must be at least 3 x 3"):
            fut.result(timeout=60)
    finally:
        pool.close()


def test_a_call_that_kills_its_worker_twice_fails_and_the_pool_serves_on(movie) -> None:
    pool = DetectionPool(1)
    try:
        first = pool.worker_pids()
        with pytest.raises(RuntimeError, match="died twice"):
            pool.call(_exit_worker).result(timeout=60)
        # The pool was replaced (twice); the next frame is detected normally.
        task = DetectionTask(DetectorConfig(radius_px=1.5))
        got = pool.submit(movie.frames[0], task).result(timeout=60)
        _assert_same_spots(got.spots, detect_and_crop(movie.frames[0], task).spots)
        assert pool.worker_pids() and not set(pool.worker_pids()) & set(first)
    finally:
        pool.close()


def test_a_closed_pool_refuses_work(movie) -> None:
    pool = DetectionPool(1)
    pool.close()
    with pytest.raises(RuntimeError, match="closed"):
        pool.submit(movie.frames[0], DetectionTask(DetectorConfig(1.5))).result(timeout=10)


def test_negative_worker_count_is_refused() -> None:
    with pytest.raises(ValueError, match="workers must be >= 0"):
        DetectionPool(-1)


def _points(res) -> pd.DataFrame:
    return pd.DataFrame([(p.track_id, p.frame, p.x_um, p.y_um) for p in res.points],
                        columns=["track_id", "frame", "x_um", "y_um"])


def test_a_worker_killed_mid_stream_costs_no_frame(tmp_path: Path, movie) -> None:
    opts = StreamSettings(PX, DT)
    # Reference: detection in the server's threads, no worker processes.
    with EmbeddedServer(ServerOptions(port=0, out_root=tmp_path / "threads", device="cpu",
                                      models=(), detect_workers=0)) as srv:
        assert srv.running is not None and srv.running.detection.worker_pids() == []
        with LiveSptClient(srv.target) as c:
            reference = c.stream(iter(movie.frames), opts)

    with EmbeddedServer(ServerOptions(port=0, out_root=tmp_path / "procs", device="cpu",
                                      models=(), detect_workers=2)) as srv:
        assert srv.running is not None
        pool = srv.running.detection
        before = pool.worker_pids()
        assert len(before) == 2
        killed: list[int] = []

        def kill_one(update: pb.AnalysisUpdate) -> None:
            if update.WhichOneof("update") == "frame" and update.frame.index == 20 and not killed:
                killed.append(before[0])
                os.kill(before[0], signal.SIGKILL)

        with LiveSptClient(srv.target) as c:
            res = c.stream(iter(movie.frames), opts, on_update=kill_one)
        after = pool.worker_pids()

    assert killed, "the worker was never killed"
    assert res.frames_acked == len(movie.frames) == reference.frames_acked
    assert res.summary is not None and res.summary.frames == len(movie.frames)
    # The pool was replaced, and the frames the dead worker held were detected again:
    # the results are those of the undisturbed reference run, point for point.
    assert len(after) == 2 and before[0] not in after
    pd.testing.assert_frame_equal(_points(res), _points(reference))
    assert len(res.estimates) == len(reference.estimates) > 0


class _FailsMarkedFrames:
    """The server's real pool, except that frames whose first pixel is 7777 fail as a
    frame whose worker died twice does (the one failure a client cannot cause)."""

    def __init__(self, real: DetectionPool) -> None:
        self.real = real

    def submit(self, frame: np.ndarray, task: DetectionTask):
        if frame[0, 0] == 7777:
            from concurrent.futures import Future

            fut: Future = Future()
            fut.set_exception(RuntimeError("a detection worker process died twice"))
            return fut
        return self.real.submit(frame, task)


def test_a_failed_detection_ends_only_its_stream_after_earlier_frames(
        tmp_path: Path, movie) -> None:
    import grpc

    with EmbeddedServer(ServerOptions(port=0, out_root=tmp_path, device="cpu", models=(),
                                      detect_workers=1)) as srv:
        assert srv.running is not None
        service = srv.running.service
        service.detection = _FailsMarkedFrames(service.detection)  # type: ignore[assignment]
        frames = movie.frames[:12].copy()
        frames[7, 0, 0] = 7777
        acked: list[int] = []

        def on_update(u: pb.AnalysisUpdate) -> None:
            if u.WhichOneof("update") == "frame":
                acked.append(u.frame.index)

        with LiveSptClient(srv.target) as c:
            with pytest.raises(grpc.RpcError) as err:
                c.stream(iter(frames), StreamSettings(PX, DT), on_update=on_update)
            assert err.value.code() == grpc.StatusCode.INTERNAL
            assert "frame 7: detection failed" in err.value.details()
            # Every frame before the failed one was answered; the server serves on.
            assert acked == list(range(7))
            res = c.stream(iter(movie.frames[:12]), StreamSettings(PX, DT))
            assert res.frames_acked == 12
    summaries = [json.loads(p.read_text()) for p in tmp_path.glob("*/summary.json")]
    assert sorted(s["status"].split(":")[0] for s in summaries) == ["aborted", "completed"]
