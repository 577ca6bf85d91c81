"""Building and running the gRPC server: ``livespt serve`` and the embedded server.

The server is a ``grpc.aio`` server (the documented fast path for Python gRPC)
with standard health checking and server reflection, explicit message-size
limits, and a graceful shutdown on SIGINT/SIGTERM that lets in-flight frames
finish and sessions flush their outputs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from livespt.models.ddpm.localizer import shipped_localizer
from livespt.models.vit.weights import ModelLoadError
from livespt.server.grpc_gen.livespt.v1 import livespt_pb2 as pb
from livespt.server.inference.localizer import ResidentLocalizer
from livespt.server.inference.resident import BatchingOptions, ModelRegistry
from livespt.server.service.detection_pool import (
    Detected,
    DetectionPool,
    DetectionTask,
    patches_for,
)
from livespt.server.service.security import (
    TlsFiles,
    TokenAuth,
    check_exposure,
    server_credentials,
)
from livespt.server.service.servicer import LiveSptService, add_to_server
from livespt.server.service.session import (
    BLOCK_CONTEXT_FRAMES,
    BLOCK_FRAMES,
    BlockTrackerFactory,
    ExternalTracker,
    prune_sessions,
    recover_stale_sessions,
)
from livespt.server.service.settings import Limits, StreamSettings
from livespt.server.service.tracks_pool import TracksPool

log = logging.getLogger("livespt.server")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["LiveSpt"].full_name


def keepalive_options(interval_s: float, timeout_s: float) -> list[tuple[str, int]]:
    """The channel arguments of the server's gRPC keepalive (none when ``interval_s`` is 0).

    Parameters
    ----------
    interval_s : float
        The server pings each connection after this many seconds without traffic (s).
    timeout_s : float
        A connection whose ping is not answered within this time is closed (s); its
        streams are cancelled and their sessions closed with their records.

    Returns
    -------
    list of (str, int)
        Also lets clients ping as often as every 10 s (``LiveSptClient`` pings each
        60 s), more often is answered with GOAWAY after two strikes.
    """
    if interval_s <= 0:
        return []
    return [("grpc.keepalive_time_ms", round(interval_s * 1000)),
            ("grpc.keepalive_timeout_ms", round(timeout_s * 1000)),
            # grpc core (1.85) times an unanswered ping by this one, not keepalive_timeout
            ("grpc.http2.ping_timeout_ms", round(timeout_s * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ("grpc.http2.max_ping_strikes", 2)]


GRACE_S = 10.0


@dataclass(frozen=True)
class ServerOptions:
    """How to run a server.

    Attributes
    ----------
    host : str
        Bind address; 127.0.0.1 by default (remote access is opt-in).
    port : int
        TCP port; 0 picks a free one.
    out_root : Path
        Parent folder of the sessions' output directories.
    device : str
        ``auto``, ``cpu`` or ``cuda``.
    limits : Limits
        Server-side limits.
    workers : int
        Threads for the live streams' tracking stage and, with ``detect_workers=0``,
        detection.
    detect_workers : int
        Worker processes of the detection stage, shared by all streams (0: detect
        in the threads instead). Default: the number of CPUs, at most 8.
    shutdown_grace_s : float
        On SIGINT/SIGTERM, how long running streams may continue before they are cut
        (their sessions are closed and flushed either way).
    models : tuple of Path, optional
        Weight files to keep resident; None: every shipped file under
        ``models/weights/``; an empty tuple: none (CVE estimates only).
    batching : BatchingOptions
        Dynamic batching of model calls across sessions.
    trackmate : bool
        Also offer the trackers ``trackmate`` (TrackMate's LoG detector and LAP
        tracker) and ``trackmate-lap`` (LiveSPT's detector, TrackMate's LAP tracker),
        through one JVM in this process, started by the first session that asks for
        one; start-up fails with a clear error when no Fiji is found.
    fiji_dir : Path, optional
        The Fiji.app for ``trackmate``; default: the places ``make fiji`` installs to.
    jvm_max_heap : str
        Maximum heap of that JVM (``-Xmx``), e.g. ``"2g"``: set explicitly, not left to
        the JVM's default of a quarter of the machine's memory.
    tracks_workers : int
        Worker processes for AnalyzeTracks, at a lower CPU priority than the live
        streams (calls beyond them queue; 0: one thread of the server instead).
    tls : TlsFiles, optional
        Serve TLS (mutual TLS with a client CA); None: plaintext.
    tokens : tuple of str
        Bearer tokens a call must carry (health checking excepted); empty: no token
        asked.
    insecure : bool
        Allow a non-loopback ``host`` without TLS and a token (a warning is logged).
    reflection : bool
        Offer gRPC server reflection.
    keep_sessions, keep_days : int, float
        Retention of ended sessions' folders: at most this many / none older than this
        many days, applied at start and whenever a session ends; 0: keep all.
    localizer : str
        ``shipped``: the shipped localizer when one is installed (else none); ``none``;
        or a weights file (start-up fails when it cannot be loaded).
    keepalive_s, keepalive_timeout_s : float
        gRPC keepalive (:func:`keepalive_options`): a connection silent for
        ``keepalive_s`` seconds is pinged and closed when no answer comes within
        ``keepalive_timeout_s``, so a client whose machine or network vanished (no
        TCP close) is found in about 80 s by default; 0: no keepalive.
    """

    host: str = "127.0.0.1"
    port: int = 50051
    out_root: Path = Path("livespt_sessions")
    device: str = "auto"
    limits: Limits = field(default_factory=Limits)
    workers: int = max(2, os.cpu_count() or 2)
    detect_workers: int = min(8, os.cpu_count() or 1)
    shutdown_grace_s: float = GRACE_S
    models: tuple[Path, ...] | None = None
    batching: BatchingOptions = field(default_factory=BatchingOptions)
    trackmate: bool = False
    fiji_dir: Path | None = None
    jvm_max_heap: str = "2g"
    tracks_workers: int = 1
    tls: TlsFiles | None = None
    tokens: tuple[str, ...] = ()
    insecure: bool = False
    reflection: bool = True
    keep_sessions: int = 0
    keep_days: float = 0.0
    keepalive_s: float = 60.0
    keepalive_timeout_s: float = 20.0
    localizer: str = "shipped"


def resolve_device(device: str) -> str:
    """Map ``auto`` to ``cuda`` when a GPU is usable, else ``cpu``; validate the name."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda, got {device!r}")
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    return device


class RunningServer:
    """A started ``grpc.aio`` server with its service (for tests and the embedded mode)."""

    def __init__(self, server: grpc.aio.Server, service: LiveSptService, port: int,
                 health_servicer: health.aio.HealthServicer,
                 executor: ThreadPoolExecutor) -> None:
        self.server = server
        self.service = service
        self.port = port
        self.health = health_servicer
        self.executor = executor
        self.detection = service.detection

    async def stop(self, grace_s: float = GRACE_S) -> None:
        """Stop accepting calls, let running ones finish for ``grace_s``, then close."""
        self.service.shutting_down = True
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
        self.detection.close()
        self.service.tracks.close()
        self.service.localize_executor.shutdown(wait=True)
        if self.service.localizer is not None:
            self.service.localizer.close()
        self.executor.shutdown(wait=True)
        if self.service.registry is not None:
            self.service.registry.close()


def load_localizer(choice: str, device: str, max_delay_ms: float) -> ResidentLocalizer | None:
    """The localizer ``--localizer`` names: ``shipped`` (if installed), ``none`` or a file.

    Raises
    ------
    ModelLoadError
        A named file that is missing or cannot be loaded.
    """
    if choice == "none":
        return None
    path = shipped_localizer() if choice == "shipped" else Path(choice)
    if path is None:
        log.info("no localizer installed: Localize answers FAILED_PRECONDITION")
        return None
    try:
        return ResidentLocalizer(path, device, max_delay_ms)
    except ValueError as exc:
        raise ModelLoadError(f"--localizer: {exc}") from None


async def start_server(opts: ServerOptions) -> RunningServer:
    """Create, bind and start a server; returns once it accepts calls."""
    device = resolve_device(opts.device)
    warning = check_exposure(opts.host, opts.tls is not None, bool(opts.tokens), opts.insecure)
    if warning is not None:
        log.warning(warning)
    credentials = server_credentials(opts.tls) if opts.tls is not None else None
    stale = recover_stale_sessions(Path(opts.out_root))
    pruned = prune_sessions(Path(opts.out_root), opts.keep_sessions, opts.keep_days)
    if pruned:
        log.info("retention: deleted %d ended session(s)", len(pruned))
    if stale:
        log.warning("%d session(s) of a server that died were still marked running; their "
                    "summaries now say so: %s", len(stale), ", ".join(stale))
    limits = opts.limits
    # Loaded before binding: a missing or corrupt weight file fails start-up.
    registry = ModelRegistry(None if opts.models is None else list(opts.models), device,
                             opts.batching)
    block_trackers = (trackmate_factories(opts.fiji_dir, opts.jvm_max_heap) if opts.trackmate
                      else {})
    try:  # after the checks above: a refused start-up loads nothing more
        localizer = load_localizer(opts.localizer, device, opts.batching.max_delay_ms)
    except ModelLoadError:
        registry.close()
        raise
    executor = ThreadPoolExecutor(max_workers=opts.workers, thread_name_prefix="livespt")
    detection = DetectionPool(opts.detect_workers, executor)
    server = grpc.aio.server(
        interceptors=[TokenAuth(opts.tokens)] if opts.tokens else None,
        options=[
            ("grpc.max_receive_message_length", limits.max_message_bytes),
            ("grpc.max_send_message_length", limits.max_message_bytes),
            # A second server on a port in use fails to start (no silent sharing).
            ("grpc.so_reuseport", 0),
            *keepalive_options(opts.keepalive_s, opts.keepalive_timeout_s),
        ],
    )
    track_model = registry.track_model
    tracks = TracksPool(opts.tracks_workers, limits,
                        track_model.path if track_model is not None else None, device,
                        thread_model=track_model)
    service = LiveSptService(Path(opts.out_root), limits, executor, device, registry, detection,
                             block_trackers, tracks, localizer)
    if opts.keep_sessions > 0 or opts.keep_days > 0:
        service.on_session_end = lambda: executor.submit(
            prune_sessions, Path(opts.out_root), opts.keep_sessions, opts.keep_days,
            frozenset(service.sessions))
    add_to_server(service, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if opts.reflection:
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME),
            server,
        )
    address = f"{opts.host}:{opts.port}"
    try:
        port = (server.add_secure_port(address, credentials) if credentials is not None
                else server.add_insecure_port(address))
    except RuntimeError:  # grpc raises "Failed to bind" for a port in use
        port = 0
    if port == 0:
        detection.close()
        executor.shutdown(wait=False)
        service.localize_executor.shutdown(wait=False)
        if localizer is not None:
            localizer.close()
        raise OSError(f"could not bind {opts.host}:{opts.port}: the port is in use (another "
                      "livespt serve?) or the address is not this machine's; choose --port")
    await server.start()
    await health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    log.info("LiveSPT serving on %s:%d (device %s, models: %s, localizer: %s, detection "
             "processes: %d)", opts.host, port, device,
             ", ".join(m.estimator.name for m in registry.models) or "none",
             localizer.name if localizer is not None else "none", opts.detect_workers)
    return RunningServer(server, service, port, health_servicer, executor)


def trackmate_factories(fiji_dir: Path | None,
                        max_heap: str = "2g") -> dict[str, BlockTrackerFactory]:
    """What makes a session's TrackMate tracker: ``trackmate`` and ``trackmate-lap``.

    ``trackmate``: TrackMate's LoG detector on each frame and its LAP tracker;
    ``trackmate-lap``: LiveSPT's detector and TrackMate's LAP tracker. Both link in
    blocks (:mod:`livespt.server.pipeline.block_link`) through the process's one JVM
    thread. Checks at once that a Fiji with TrackMate is there
    (``FijiNotFoundError`` naming the places searched); the JVM starts with the first
    session that uses one.
    """
    from livespt.server.io import fiji
    from livespt.server.io.trackmate import (
        LapConfig,
        TrackMateLinker,
        jvm_max_memory_mb,
        log_detect_spots,
    )

    if not re.fullmatch(r"[1-9][0-9]*[kKmMgG]", max_heap):
        raise ValueError(f"--jvm-heap must be a size such as 512m or 2g, got {max_heap!r}")
    worker = fiji.jvm_worker(fiji_dir, max_heap)

    def linker(settings: StreamSettings, detector: str) -> tuple[TrackMateLinker,
                                                                 dict[str, Any]]:
        lap = LapConfig(max_distance_um=settings.linker.max_distance_um,
                        max_gap_frames=settings.linker.max_gap_frames)
        link = TrackMateLinker(lap, fiji_dir)
        return link, {"name": settings.tracker, "trackmate_version": link.version(),
                      "detector": detector,
                      "linking": "TrackMate LAP tracker (SimpleSparseLAPTracker) in blocks",
                      "jvm_max_heap": worker.max_heap,
                      "jvm_max_memory_mb": round(worker.call(jvm_max_memory_mb), 1),
                      "block_frames": BLOCK_FRAMES,
                      "overlap_frames": lap.max_gap_frames + 1 + BLOCK_CONTEXT_FRAMES,
                      "settings": lap.as_dict()}

    def lap_only(settings: StreamSettings) -> ExternalTracker:
        link, info = linker(settings, "LiveSPT (LoG + Gaussian MLE fit)")
        return ExternalTracker(link, info)

    def full(settings: StreamSettings) -> ExternalTracker:
        link, info = linker(settings, "TrackMate LoG (LogDetectorFactory; positions and "
                                      "quality only, no precision)")
        px = settings.pixel_size_um

        def detect(frame: Any, task: DetectionTask) -> Detected:
            spots = worker.call(log_detect_spots, frame, task.config, px)
            return Detected(spots, patches_for(frame, spots, task))

        return ExternalTracker(link, info, detect)

    return {"trackmate": full, "trackmate-lap": lap_only}


def serve(opts: ServerOptions) -> None:
    """Run a server in the foreground until SIGINT or SIGTERM (``livespt serve``)."""

    async def main() -> None:
        running = await start_server(opts)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        # Handlers first: a supervisor may send SIGTERM as soon as it reads the line below.
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        reg = running.service.registry
        names = ", ".join(f"{m.name} ({m.variant})" for m in reg.models) if reg else ""
        print(f"LiveSPT {pb.DESCRIPTOR.package} listening on {opts.host}:{running.port} "
              f"(device {running.service.device}, models: {names or 'none, CVE only'}, "
              f"sessions under {opts.out_root})", flush=True)
        await stop.wait()
        print("shutting down: finishing in-flight frames, flushing sessions", flush=True)
        await running.stop(opts.shutdown_grace_s)
        print("stopped", flush=True)

    asyncio.run(main())


class EmbeddedServer:
    """A server on a background thread of this process (``--embedded``, tests, the demo).

    The thread runs its own event loop through ``asyncio.run`` for the server's whole
    life, so shutdown (graceful stop, then loop teardown) happens inside that loop.
    Use as a context manager; ``target`` is the address to connect to.
    """

    def __init__(self, opts: ServerOptions | None = None) -> None:
        self.opts = opts or ServerOptions(port=0)
        self.running: RunningServer | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._grace_s = GRACE_S
        self._thread = threading.Thread(target=self._run, daemon=True, name="livespt-embedded")

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            try:
                self.running = await start_server(self.opts)
            except BaseException as exc:
                self._error = exc
                self._started.set()
                return
            self._started.set()
            await self._stop.wait()
            await self.running.stop(self._grace_s)

        asyncio.run(main())

    @property
    def target(self) -> str:
        """``host:port`` of the running server."""
        assert self.running is not None, "server not started"
        return f"{self.opts.host}:{self.running.port}"

    def start(self) -> EmbeddedServer:
        """Start the server and wait until it accepts calls."""
        self._thread.start()
        if not self._started.wait(timeout=60):
            raise TimeoutError("embedded server did not start within 60 s")
        if self._error is not None:
            raise self._error
        return self

    def stop(self, grace_s: float = GRACE_S) -> None:
        """Stop gracefully (in-flight calls get ``grace_s``) and end the thread."""
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._grace_s = grace_s
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=grace_s + 30)
        self.running = None

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
