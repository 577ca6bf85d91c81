"""Where AnalyzeTracks runs: worker processes at a lower CPU priority than the live streams.

A thread of the server process was not enough: ``benchmarks/bench_tracks_interference.py``
measured a live stream's frames waiting a median 225 ms (p99 14.8 s) beside AnalyzeTracks
calls computed in a server thread, against 21 ms alone, because the analysis held the GIL
and a core the stream needed. So each of ``workers`` slots is one process of its own
(``forkserver``, like the detection workers), started on first use, ``nice`` 10, holding
the features transformer when the server has one. A request goes to a free slot as bytes
and comes back as bytes; requests beyond the slots wait for one. When a caller gives up
(deadline, cancel) its slot's process is killed at once and restarted for the next
request: nothing keeps computing for nobody. A worker exits when the server dies (its pipe
closes).

``workers = 0`` runs requests in one thread of the server instead (tests, tiny machines),
stopped at the next track when the caller gives up.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from livespt.server.grpc_gen.livespt.v1 import livespt_pb2 as pb
from livespt.server.pipeline.tracks import AnalysisStopped, analyze_tracks
from livespt.server.pipeline.windows import WindowConfig
from livespt.server.service import wire
from livespt.server.service.settings import (
    LimitExceeded,
    Limits,
    check_track_request_size,
    exposure_assumed_message,
)

log = logging.getLogger("livespt.server")

WORKER_NICE = 10
"""How much lower the workers' CPU priority is than the server's (``os.nice``)."""

Outcome = tuple[str, Any]
"""``("ok", response bytes)``, ``("resource", message)``, ``("invalid", message)`` or
``("internal", traceback text for the log)``."""


def analyze_request(request: bytes, limits: Limits, model: Any = None,
                    stop: threading.Event | None = None) -> Outcome:
    """Decode, check, analyse and encode one AnalyzeTracks request.

    Parameters
    ----------
    request : bytes
        A serialised ``AnalyzeTracksRequest``.
    limits : Limits
        The server's limits (points per call).
    model : ResidentModel, optional
        The features transformer (None: CVE estimates).
    stop : threading.Event, optional
        Set when the caller gave up (thread mode).

    Returns
    -------
    Outcome
        What the servicer turns into a response or a status.
    """
    try:
        req = pb.AnalyzeTracksRequest.FromString(request)
        w0 = WindowConfig()
        check_track_request_size([len(t.frames) for t in req.tracks],
                                 req.window.length or w0.length,
                                 req.window.stride or w0.stride, limits)
        tracks, acquisition, window, change = wire.track_request_from_proto(req)
        response = wire.analysis_to_proto(
            analyze_tracks(tracks, acquisition, window, change, model, stop=stop))
        if req.exposure_s == 0:  # the frame interval was assumed: say so
            response.warnings.append(pb.Warning(code="EXPOSURE", message=(
                exposure_assumed_message(req.frame_interval_s))))
        return "ok", response.SerializeToString()
    except LimitExceeded as exc:
        return "resource", str(exc)
    except ValueError as exc:
        return "invalid", str(exc)
    except AnalysisStopped:
        return "stopped", ""
    except Exception:
        return "internal", traceback.format_exc()


def _worker_main(conn: Connection, limits: dict[str, Any], model_path: str | None,
                 device: str) -> None:
    """A slot's process: requests in, outcomes out, until the server's end closes."""
    os.nice(WORKER_NICE)
    lim = Limits(**limits)
    model = None
    if model_path is not None:
        from livespt.server.inference.resident import ModelRegistry

        model = ModelRegistry([Path(model_path)], device).track_model
    while True:
        try:
            request = conn.recv_bytes()
        except (EOFError, OSError):
            return  # the server is gone
        conn.send(analyze_request(request, lim, model))


class _Slot:
    """One worker process and the server's end of its pipe (started on first use)."""

    def __init__(self, ctx: Any, args: tuple[Any, ...]) -> None:
        self._ctx = ctx
        self._args = args
        self.process: Any = None
        self.conn: Connection | None = None

    def ensure(self) -> Connection:
        if self.process is None or not self.process.is_alive():
            here, there = self._ctx.Pipe()
            self.process = self._ctx.Process(target=_worker_main, args=(there, *self._args),
                                             daemon=True, name="livespt-tracks")
            self.process.start()
            there.close()
            self.conn = here
        assert self.conn is not None
        return self.conn

    def kill(self) -> None:
        if self.process is not None and self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        if self.conn is not None:
            self.conn.close()
        self.process, self.conn = None, None


class TracksPool:
    """AnalyzeTracks workers (module docstring).

    Parameters
    ----------
    workers : int
        Worker processes (requests at once); 0: one thread of the server.
    limits : Limits
        The server's limits.
    model_path : Path, optional
        Weights of the features transformer, loaded in each worker (None: CVE only).
    device : str
        Device of that model.
    thread_model : ResidentModel, optional
        The server's own features model, for ``workers = 0``.
    """

    def __init__(self, workers: int, limits: Limits, model_path: Path | None = None,
                 device: str = "cpu", thread_model: Any = None) -> None:
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.limits = limits
        self.workers = workers
        self._thread_model = thread_model
        self._threads = ThreadPoolExecutor(1, thread_name_prefix="livespt-tracks")
        self._io = ThreadPoolExecutor(max(1, workers), thread_name_prefix="livespt-tracks-io")
        ctx = multiprocessing.get_context(
            "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn")
        args = (asdict(limits), str(model_path) if model_path else None, device)
        self._slots = [_Slot(ctx, args) for _ in range(workers)]
        self._free: asyncio.Queue[int] | None = None

    async def run(self, request: bytes) -> Outcome:
        """The outcome of one request; cancelling the caller kills its worker."""
        loop = asyncio.get_running_loop()
        if self.workers == 0:
            stop = threading.Event()
            try:
                return await loop.run_in_executor(
                    self._threads, analyze_request, request, self.limits,
                    self._thread_model, stop)
            finally:
                stop.set()  # a cancelled call stops at the next track
        if self._free is None:
            self._free = asyncio.Queue()
            for k in range(self.workers):
                self._free.put_nowait(k)
        k = await self._free.get()
        slot = self._slots[k]
        done = False
        try:
            conn = await loop.run_in_executor(self._io, slot.ensure)
            await loop.run_in_executor(self._io, conn.send_bytes, request)
            outcome: Outcome = await loop.run_in_executor(self._io, conn.recv)
            done = True
            return outcome
        except (EOFError, OSError) as exc:  # the worker died (killed, out of memory)
            log.error("AnalyzeTracks worker died: %s", exc)
            return "internal", f"the worker process died ({exc})"
        finally:
            if not done:
                slot.kill()  # given up, or dead: a fresh process for the next request
            self._free.put_nowait(k)

    def close(self) -> None:
        """Stop the workers and threads."""
        for slot in self._slots:
            slot.kill()
        self._threads.shutdown(wait=False, cancel_futures=True)
        self._io.shutdown(wait=False, cancel_futures=True)
