"""``livespt stream``: send a movie to a server (or an embedded one) and save the results.

Writes ``DIR/tracks.csv``, ``DIR/estimates.csv``, ``DIR/changes.csv`` as the
results arrive (appended and flushed per frame, so another program can read them
live), and ``DIR/summary.json`` and ``DIR/d_vs_time.png`` at the end. The server
keeps its own copy of the same records in its session directory (named in
``summary.json``). With ``--follow PATH`` the frames come from an acquisition still
being written (:class:`~livespt.server.io.follow.FollowedFrames`: a folder of frame
files or a growing TIFF), sent as they appear until it stops (``--idle-timeout``,
``--stop-file`` or Ctrl-C); the outputs are finalized either way.

Camera (a movie file): the values the user gives (``--camera-offset``, ``--camera-gain``,
``--read-noise``) are used as given; the missing ones are estimated from the
movie's first 50 frames by photon transfer
(:func:`~livespt.server.pipeline.camera.estimate_camera`) when the frames
identify them, and left to the server's defaults otherwise. One line says what
was estimated (value ± standard error) or why not, and a given gain that the
frames contradict is flagged (``CAMERA_MODEL`` warning naming
``config.detector.camera_gain_adu_per_e``). Estimated values are sent marked as
such (``DetectorParams.camera_estimated``), so the server's summary records
their source as ``estimated`` too, and with ``camera_estimate_frames = 0``, so
the server does not hold frames to estimate again what the movie did not
identify (a client that sends nothing has the server estimate from the first
30 frames instead); ``summary.json`` here is the complete record:
``camera`` holds each value, its source (``given``, ``estimated`` or
``default``), the standard errors of the estimated ones, a note per value (the
assumption an estimate rests on, or why a default was not replaced) and the
whole estimate. With ``--follow`` the frames are not there yet: the server estimates
the values not given from the first 30 frames it receives.
"""

from __future__ import annotations

import argparse
import json
import platform
import signal
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pandas as pd
from numpy.typing import NDArray

from livespt.server import __version__
from livespt.server.cli.connect import connect
from livespt.server.client import (
    DetectorSettings,
    LinkerSettings,
    LiveSptClient,
    StreamResult,
    StreamSettings,
    WindowConfig,
)
from livespt.server.grpc_gen.livespt.v1 import livespt_pb2 as pb
from livespt.server.io.csv_records import RecordWriter
from livespt.server.io.follow import FollowedFrames
from livespt.server.io.tiff import read_calibration
from livespt.server.pipeline.camera import (
    CAMERA_FIELDS,
    CameraEstimate,
    CameraModel,
    camera_record,
    check_gain,
    estimate_camera,
)
from livespt.server.service.app import EmbeddedServer, ServerOptions
from livespt.server.service.wire import records_from_proto


def open_movie(path: str | Path) -> tuple[Any, float | None, float | None]:
    """Open a movie lazily (TIFF and every format pims reads) with its calibration.

    Returns
    -------
    frames : sequence of (H, W) arrays
        Frames are read one at a time as the stream consumes them.
    pixel_size_um, frame_interval_s : float or None
        From the file's ImageJ metadata (TIFF only), None otherwise.
    """
    import pims

    p = Path(path)
    if not p.exists():
        raise ValueError(f"MOVIE: no such file: {p}")
    is_tiff = p.suffix.lower() in (".tif", ".tiff")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pims' reader fallbacks warn as they go
            # A TIFF is read by tifffile alone: pims' fallbacks would only add a page of
            # other readers' errors (and try to download Bio-Formats).
            frames = pims.TiffStack(str(p)) if is_tiff else pims.open(str(p))
    except Exception as exc:  # pims raises many types for unreadable files
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        if is_tiff:
            why = lines[0] if lines else type(exc).__name__
            raise ValueError(f"MOVIE: cannot read {p} as TIFF: {why}") from None
        raise ValueError(
            f"MOVIE: cannot read {p}: none of the installed readers (pims) understands it; "
            "convert it to a TIFF stack") from None
    px = dt = None
    if is_tiff:
        cal = read_calibration(p)
        px, dt = cal.pixel_size_um, cal.frame_interval_s
    if len(frames) == 0:
        raise ValueError(f"MOVIE: {p} has no frames")
    if len(frames.frame_shape) != 2:
        raise ValueError(f"MOVIE: frames must be 2D (one channel, one plane), "
                         f"got frame shape {frames.frame_shape}")
    return frames, px, dt


CAMERA_FRAMES = 50
"""Frames from the start of the movie the camera is estimated from."""

_WIRE_NAME = {"offset_adu": "camera_offset_adu", "gain_adu_per_e": "camera_gain_adu_per_e",
              "read_noise_e": "read_noise_e"}


def camera_from_movie(
    frames: Any, offset_adu: float | None, gain_adu_per_e: float | None,
    read_noise_e: float | None, estimate: bool = True,
) -> tuple[CameraModel, CameraEstimate | None, list[str]]:
    """The camera model to stream with: given values, then estimates, then defaults.

    Parameters
    ----------
    frames : sequence of (H, W) arrays
        The movie (only its first :data:`CAMERA_FRAMES` frames are read).
    offset_adu, gain_adu_per_e, read_noise_e : float or None
        Values the user gave: offset (ADU), gain (ADU/e-), read noise (e-); None: not given.
    estimate : bool
        Estimate the missing values from the frames (and check a given gain).

    Returns
    -------
    camera : CameraModel
        Values and their sources (``given``, ``estimated``, ``default``).
    estimate : CameraEstimate or None
        The photon transfer estimate (None when ``estimate`` is False).
    warnings : list of str
        ``CAMERA_MODEL: ...`` when a given gain disagrees with the frames.
    """
    if not estimate:
        return CameraModel.resolve(offset_adu, gain_adu_per_e, read_noise_e), None, []
    est = estimate_camera(frames, offset_adu=offset_adu, gain_adu_per_e=gain_adu_per_e,
                          read_noise_e=read_noise_e, max_frames=CAMERA_FRAMES)
    cam = est.camera()
    warnings = [f"CAMERA_MODEL: {w}" for w in check_gain(cam, est, "config.detector.")]
    return cam, est, warnings


def _frames(seq: Any, progress: Any, stop: threading.Event) -> Iterator[NDArray[Any]]:
    for item in seq:
        if stop.is_set():  # Ctrl-C: no more frames; the stream ends normally
            return
        frame = np.asarray(item)
        if frame.dtype not in (np.uint8, np.uint16, np.float32):
            frame = frame.astype(np.float32)
        yield frame
        progress.update(1)


def plot_d_vs_time(
    estimates: pd.DataFrame, changes: pd.DataFrame, frame_interval_s: float, path: Path,
    highlight: int = 3,
) -> None:
    """Plot the whole population's sliding-window D over time, per-track medians and changes.

    Every window is a point (time of its middle, D on a log axis; D <= 0 drawn at the
    bottom edge and counted in the title), each track's median D a horizontal bar over
    the time it spans, changes of D a marker at the change (D after), and the
    ``highlight`` longest tracks a coloured line with their 90 % intervals.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.8))
    n_tracks = int(estimates["track_id"].nunique()) if len(estimates) else 0
    if len(estimates):
        t = ((estimates["frame_start"] + estimates["frame_end"]) / 2 * frame_interval_s)
        d = estimates["d_um2_s"].to_numpy(dtype=float)
        pos = d[np.isfinite(d) & (d > 0)]
        floor = float(pos.min()) / 2 if pos.size else 1e-4
        n_low = int(np.sum(~(d > 0)))
        ax.scatter(t, np.where(d > 0, d, floor), s=4, color="0.35", alpha=0.25, lw=0,
                   label=f"windows ({len(d)})", rasterized=True)
        med = estimates.assign(t=t).groupby("track_id").agg(
            t0=("t", "min"), t1=("t", "max"), d=("d_um2_s", "median"))
        med = med[med.d > 0]
        ax.hlines(med.d, med.t0, med.t1, color="tab:blue", lw=1.0,
                  alpha=0.7 if len(med) < 100 else 0.25, label=f"track medians ({len(med)})")
        longest = estimates["track_id"].value_counts().index[:highlight]
        for k, tid in enumerate(longest):
            g = estimates[estimates["track_id"] == tid]
            tg = (g["frame_start"] + g["frame_end"]) / 2 * frame_interval_s
            color = f"C{(k + 1) % 10}"
            ax.plot(tg, g["d_um2_s"].clip(lower=floor), color=color, lw=1,
                    label=f"track {tid}")
            hi = g["d_high_um2_s"].replace(np.inf, np.nan)  # unbounded: no band drawn
            ax.fill_between(tg, g["d_low_um2_s"].clip(lower=floor), hi, color=color,
                            alpha=0.12)
        if len(changes):
            ax.scatter(changes["frame"] * frame_interval_s,
                       changes["d_after_um2_s"].clip(lower=floor), marker="v", s=30,
                       color="tab:red", label=f"changes of D ({len(changes)})", zorder=5)
        ax.set_yscale("log")
        ax.set_ylim(bottom=floor / 1.5)
        ax.legend(fontsize=7, ncol=3, loc="upper right")
        low = f" ({n_low} with D <= 0: on the bottom line)" if n_low else ""
        ax.set_title(f"D of every sliding window of {n_tracks} tracks over time{low}\n"
                     f"bars: each track's median D; lines: the {min(highlight, n_tracks)} "
                     "longest tracks with their 90 % intervals; red: changes of D (D after)",
                     fontsize=9)
    else:
        ax.text(0.5, 0.5, "no window estimates", ha="center", transform=ax.transAxes)
        ax.set_title("D over time: no window estimates", fontsize=9)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("D (um$^2$/s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def server_info_dict(info: pb.ServerInfo) -> dict[str, Any]:
    """GetServerInfo as plain data, recorded in summaries so results can be traced."""
    return {
        "version": info.version,
        "device": info.device,
        "estimators": list(info.estimators),
        "trackers": list(info.trackers),
        "models": [{"name": m.name, "kind": m.kind, "sha256": m.sha256, "device": m.device}
                   for m in info.models],
    }


def save_result(result: StreamResult, out: Path, options: StreamSettings,
                extra: dict[str, Any], writer: RecordWriter) -> dict[str, Any]:
    """Finish a stream's outputs in ``out``: summary.json and d_vs_time.png.

    ``writer`` filled the CSVs as the results arrived; it is closed here.
    """
    writer.close()
    cl = np.asarray(result.client_latency_ms)
    summary: dict[str, Any] = {
        "livespt_version": __version__,
        "python": platform.python_version(),
        "session_id": result.session_id,
        "server_output_dir": result.server_output_dir,
        "effective_config": json.loads(result.effective_config_json or "{}"),
        "frames_acked": result.frames_acked,
        "tracks": len({p.track_id for p in result.points}),
        "track_points": len(result.points),
        "estimates": len(result.estimates),
        "changes": len(result.changes),
        "client_latency_p50_ms": float(np.percentile(cl, 50)) if cl.size else None,
        "client_latency_p99_ms": float(np.percentile(cl, 99)) if cl.size else None,
        "warnings": result.warnings,
        **extra,
    }
    if result.summary is not None:
        summary["server_summary"] = {
            f.name: getattr(result.summary, f.name) for f in result.summary.DESCRIPTOR.fields
        }
    summary["tracker"] = options.tracker
    session_file = Path(result.server_output_dir) / "summary.json"
    if result.server_output_dir and session_file.is_file():
        # The server's own record of its tracker (e.g. TrackMate's version and settings),
        # when its files are on this machine (--embedded, or a local server).
        summary["tracker_info"] = json.loads(session_file.read_text()).get("tracker_info")
    writer.write_summary(summary)
    est = pd.read_csv(out / "estimates.csv")
    chg = pd.read_csv(out / "changes.csv")
    plot_d_vs_time(est, chg, options.frame_interval_s, out / "d_vs_time.png")
    return summary


_FLAGS = {
    "detector.radius_um": "--radius", "detector.threshold": "--threshold",
    "detector.camera_offset_adu": "--camera-offset",
    "detector.camera_gain_adu_per_e": "--camera-gain", "detector.read_noise_e": "--read-noise",
    "linker.max_distance_um": "--max-distance", "window.length": "--window",
    "exposure_s": "--exposure", "pixel_size_um": "--pixel-size",
    "frame_interval_s": "--frame-interval", "tracker": "--tracker",
}
"""Settings fields (as their errors name them) -> the ``livespt stream`` flag that sets them."""


def flagged_message(message: str) -> str:
    """A settings error with the flag that sets the field it names in front (``--radius: ...``)."""
    for name, flag in _FLAGS.items():
        if message.startswith(name):
            return f"{flag}: {message}"
    return message


def _stream_settings(args: argparse.Namespace, px: float, dt: float, camera: CameraModel,
                     sent: dict[str, Any], given: Any, server_estimate: bool = False
                     ) -> StreamSettings:
    """The stream settings from the flags (raises ValueError naming the settings field).

    ``server_estimate``: the server estimates the camera values not sent (``--follow``,
    whose frames are not there yet to estimate from here).
    """
    d0, l0, w0 = DetectorSettings(), LinkerSettings(), WindowConfig()
    return StreamSettings(
        pixel_size_um=px, frame_interval_s=dt, exposure_s=args.exposure or 0.0,
        detector=DetectorSettings(
            radius_um=given(args.radius, d0.radius_um), threshold=args.threshold or 0.0,
            dark_spots=args.dark_spots, median_filter=args.median_filter,
            camera_offset_adu=sent["offset_adu"], camera_gain_adu_per_e=sent["gain_adu_per_e"],
            read_noise_e=sent["read_noise_e"],
            camera_estimated=tuple(_WIRE_NAME[n] for n in CAMERA_FIELDS
                                   if camera.source[n] == "estimated"),
            # Estimated here (or turned off by the user): the server does not hold
            # frames to estimate again what the movie did not identify.
            camera_estimate_frames=d0.camera_estimate_frames if server_estimate else 0),
        linker=LinkerSettings(max_distance_um=given(args.max_distance, l0.max_distance_um)),
        window=WindowConfig(length=given(args.window, w0.length)),
        tracker=args.tracker, name=str(args.movie if args.movie else args.follow),
    )


class Resender:
    """Frames sent but not yet acknowledged, to be sent again to a new session after a reconnect.

    Iterating yields the frames still unacknowledged from the last stream (in order)
    and then new frames from ``frames``; :meth:`ack` forgets every frame up to an
    acknowledged index, so a frame acknowledged once is never sent again.
    """

    def __init__(self, frames: Iterator[NDArray[Any]]) -> None:
        self._source = frames
        self._unacked: deque[tuple[int, NDArray[Any]]] = deque()
        self._replay: deque[tuple[int, NDArray[Any]]] = deque()
        self._next = 0

    def start(self) -> int:
        """Prepare a new stream; return the index of its first frame."""
        self._replay, self._unacked = self._unacked, deque()
        return self._replay[0][0] if self._replay else self._next

    def first_unacked(self) -> int:
        """Index of the oldest frame not acknowledged (the next new one if none)."""
        return self._unacked[0][0] if self._unacked else self._next

    def __iter__(self) -> Iterator[NDArray[Any]]:
        while self._replay:
            item = self._replay.popleft()
            self._unacked.append(item)
            yield item[1]
        for frame in self._source:
            self._unacked.append((self._next, frame))
            self._next += 1
            yield frame

    def ack(self, index: int) -> None:
        """Forget the frames up to ``index`` (acknowledged by the server)."""
        while self._unacked and self._unacked[0][0] <= index:
            self._unacked.popleft()


def shift_ids(records: list[Any], offset: list[int]) -> list[Any]:
    """Records with ``offset[0]`` added to their track ids; ``offset[1]``: the largest id so far.

    Track ids restart at 0 in a new session; after a reconnect they are shifted past
    those already written, so one id never names two tracks in the files.
    """
    if not records:
        return records
    out = [replace(r, track_id=r.track_id + offset[0]) for r in records] if offset[0] else records
    offset[1] = max(offset[1], max(r.track_id for r in out))
    return out


def run_stream(args: argparse.Namespace) -> dict[str, Any]:
    """Run ``livespt stream`` from parsed flags; returns the summary written."""
    from tqdm import tqdm

    follow = getattr(args, "follow", None)
    if (args.movie is None) == (follow is None):
        raise ValueError("MOVIE: give a movie file, or --follow PATH for an acquisition being "
                         "written (not both)")
    source: FollowedFrames | None = None
    if follow is not None:
        source = FollowedFrames(follow, idle_timeout_s=args.idle_timeout,
                                stop_file=args.stop_file)
        frames: Any = source
        px_file, dt_file = None, None
    else:
        frames, px_file, dt_file = open_movie(args.movie)
    px = args.pixel_size if args.pixel_size is not None else px_file
    dt = args.frame_interval if args.frame_interval is not None else dt_file
    if source is not None and (px is None or dt is None):
        # The calibration of the first frame file (or the stack), once there is one.
        first = source.first_calibration()
        px = px if px is not None else first[0]
        dt = dt if dt is not None else first[1]
    what = "the movie" if source is None else "the followed frames"
    if px is None:
        raise ValueError(f"--pixel-size is required ({what} carry no calibration)")
    if dt is None:
        raise ValueError(f"--frame-interval is required ({what} carry no frame interval)")
    if args.exposure is not None and not args.exposure > 0:
        raise ValueError(f"--exposure must be > 0 s (at most the frame interval), "
                         f"got {args.exposure}")

    def given(value: Any, default: Any) -> Any:
        # A flag given as 0 or below must reach the settings' checks (which name the
        # field), not turn into the server default the wire's 0 stands for.
        return default if value is None else value

    # Every flag is checked before the frames are read for the camera estimate.
    try:
        DetectorSettings(camera_offset_adu=args.camera_offset,
                         camera_gain_adu_per_e=args.camera_gain, read_noise_e=args.read_noise)
        _stream_settings(args, px, dt, CameraModel.resolve(None, None, None),
                         dict.fromkeys(CAMERA_FIELDS), given)
    except ValueError as exc:
        raise ValueError(flagged_message(str(exc))) from None
    if source is None:
        camera, cam_est, cam_warnings = camera_from_movie(
            frames, args.camera_offset, args.camera_gain, args.read_noise,
            estimate=args.camera_estimate)
    else:  # no frames yet: the server estimates what is not given
        camera = CameraModel.resolve(args.camera_offset, args.camera_gain, args.read_noise)
        cam_est, cam_warnings = None, []
    if cam_est is not None:
        print(cam_est.describe())
    for w in cam_warnings:
        print(f"warning: {w}")
    sent = {n: (getattr(camera, n) if camera.source[n] != "default" else None)
            for n in CAMERA_FIELDS}
    try:
        options = _stream_settings(args, px, dt, camera, sent, given,
                                   server_estimate=source is not None and args.camera_estimate)
    except ValueError as exc:
        raise ValueError(flagged_message(str(exc))) from None
    given_tls = [f for f in ("tls_ca", "token_file", "tls_cert", "tls_key")
                 if getattr(args, f, None)]
    if args.embedded and given_tls:
        raise ValueError(f"--{given_tls[0].replace('_', '-')} goes with --server (the "
                         "embedded server is in this process)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    embedded: EmbeddedServer | None = None
    if args.embedded:
        fiji_dir = getattr(args, "fiji_dir", None)
        embedded = EmbeddedServer(ServerOptions(
            port=0, out_root=out / "server_sessions", device="cpu",
            trackmate=args.tracker.startswith("trackmate"),
            fiji_dir=Path(fiji_dir) if fiji_dir else None)).start()
        target = embedded.target
    else:
        target = args.server
    t0 = time.perf_counter()
    n_changes = 0
    # The records are appended to the files as they arrive (a reader sees them live).
    writer = RecordWriter(out)
    # The first Ctrl-C ends the stream as if the movie ended there (the frames sent are
    # analysed and every output is finalized); a second one aborts at once.
    stop = threading.Event()

    def on_sigint(*_: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        if source is not None:
            source.stop()
        print("\nCtrl-C: no more frames are sent; finishing those in flight and writing the "
              "outputs (Ctrl-C again to abort)", file=sys.stderr, flush=True)

    previous_sigint = (signal.signal(signal.SIGINT, on_sigint)
                       if threading.current_thread() is threading.main_thread() else None)
    reconnects = 0
    try:
        with tqdm(total=None if source is not None else len(frames), unit="frame",
                  desc="following" if source is not None else "streaming") as bar:
            sender = Resender(_frames(frames, bar, stop))
            offset = [0, -1]  # track-id offset of this session, largest id written
            written = StreamResult()  # every record written, over all sessions

            def on_update(upd: pb.AnalysisUpdate) -> None:
                nonlocal n_changes
                if upd.WhichOneof("update") == "frame":
                    sender.ack(upd.frame.index)
                    p, e, c = records_from_proto(upd.frame)
                    p, e, c = shift_ids(p, offset), shift_ids(e, offset), shift_ids(c, offset)
                    writer.write([*p, *e, *c])
                    written.frames_acked += 1
                    written.points += p
                    written.estimates += e
                    written.changes += c
                if upd.WhichOneof("update") == "warning":
                    # Any: the generated stub's `Warning` type is shadowed by the builtin.
                    w: Any = upd.warning
                    bar.write(f"warning: {w.code}: {w.message}")
                if upd.WhichOneof("update") == "frame" and upd.frame.changes:
                    n_changes += len(upd.frame.changes)
                    for c in upd.frame.changes:
                        bar.write(f"frame {upd.frame.index}: track {c.track_id} D "
                                  f"{c.d_before_um2_s:.3g} -> {c.d_after_um2_s:.3g} um^2/s "
                                  f"from frame {c.frame}")
                    bar.set_postfix(changes=n_changes)

            result: StreamResult | None = None
            while True:
                with (connect(args, target) if getattr(args, "server", None)
                      else LiveSptClient(target)) as client:
                    client.wait_ready(timeout_s=getattr(args, "connect_timeout", 5.0)
                                      if reconnects == 0 else args.reconnect_timeout)
                    if reconnects == 0:
                        info = server_info_dict(client.info())
                    first_index = sender.start()
                    try:
                        part = client.stream(iter(sender), options, on_update=on_update,
                                             first_index=first_index)
                    except grpc.RpcError as exc:
                        lost = callable(getattr(exc, "code", None)) and exc.code() in (
                            grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
                        if source is None or not lost:
                            raise
                        # The server went away during a followed acquisition: a new session
                        # on the server that comes back continues with the frames not yet
                        # acknowledged (none is sent twice once acknowledged) and track ids
                        # after those written.
                        reconnects += 1
                        bar.write(f"server lost ({exc.code().name}); reconnecting to {target} "
                                  f"(frames from {sender.first_unacked()} are sent again)")
                        offset[0] = offset[1] + 1
                        continue
                result = part
                break
    finally:
        if previous_sigint is not None:
            signal.signal(signal.SIGINT, previous_sigint)
        if embedded is not None:
            embedded.stop()
        writer.close()
    elapsed = time.perf_counter() - t0
    assert result is not None  # the loop ends with a result or raises
    if reconnects:  # the records of every session, as written (ids shifted)
        result.points, result.estimates, result.changes = (
            written.points, written.estimates, written.changes)
        result.frames_acked = written.frames_acked
    result.warnings[:0] = cam_warnings
    follow_record = None if source is None else {
        "path": str(follow), "frames": source.n_yielded, "ended_by": source.ended_by,
        "reconnects": reconnects}
    if source is not None:
        print(f"followed {follow}: {source.n_yielded} frames, ended: {source.ended_by}")
    interrupted = stop.is_set() and source is None
    summary = save_result(result, out, options, {
        "movie": str(args.movie) if args.movie else None,
        "follow": follow_record,
        "camera": camera_record(camera, cam_est),
        "server": "embedded" if args.embedded else target,
        "server_info": info,
        "interrupted": ({"by": "Ctrl-C", "frames_sent": result.frames_acked,
                         "frames_in_movie": len(frames)} if interrupted else None),
        "elapsed_s": round(elapsed, 3),
        "frames_per_s": round(result.frames_acked / elapsed, 2) if elapsed > 0 else None,
    }, writer)
    print(f"{result.frames_acked} frames in {elapsed:.1f} s: {summary['tracks']} tracks, "
          f"{summary['estimates']} window estimates, {summary['changes']} changes of D; "
          f"wrote {out}/tracks.csv, estimates.csv, changes.csv, summary.json, d_vs_time.png")
    if interrupted:
        print(f"interrupted by Ctrl-C after {result.frames_acked} of {len(frames)} frames; the "
              f"server's copy of the session is in {result.server_output_dir}")
    return summary
