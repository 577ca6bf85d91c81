"""Translation between wire messages (protobuf) and the objects of the analysis, in one place.

Settings, records and track analyses cross the wire here and nowhere else; the
servicer and the Python client call these functions. Zero values on the wire
mean "server default" (except ``optional`` fields, where unset does), and every
error names the field as it appears on the wire (``config.window.length``,
``tracks[3] (track_id 7): ...``), so a client in any language knows what to fix.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from livespt.server.grpc_gen.livespt.v1 import livespt_pb2 as pb
from livespt.server.pipeline.changepoint import ChangeConfig
from livespt.server.pipeline.estimate import Acquisition
from livespt.server.pipeline.localize import (
    EMITTER_COLUMNS,
    Localization,
    LocalizeSettings,
    check_frames,
    output_bytes,
)
from livespt.server.pipeline.records import ChangeEvent, TrackEstimate, TrackPoint, WindowEstimate
from livespt.server.pipeline.tracks import Track, TrackAnalysis
from livespt.server.pipeline.windows import WindowConfig
from livespt.server.service.settings import (
    ChangeSettings,
    DetectorSettings,
    Limits,
    LinkerSettings,
    StreamSettings,
    check_calibration,
)

PIXEL_TYPE_BY_NAME: dict[str, int] = {
    "uint8": pb.PIXEL_TYPE_UINT8, "uint16": pb.PIXEL_TYPE_UINT16,
    "float32": pb.PIXEL_TYPE_FLOAT32,
}
PIXEL_TYPE_NAMES = {v: k for k, v in PIXEL_TYPE_BY_NAME.items()}
TRACKER_BY_NAME = {"builtin": pb.TRACKER_BUILTIN, "trackmate": pb.TRACKER_TRACKMATE,
                   "trackmate-lap": pb.TRACKER_TRACKMATE_LAP}
TRACKER_NAMES = {pb.TRACKER_UNSPECIFIED: "builtin", pb.TRACKER_BUILTIN: "builtin",
                 pb.TRACKER_TRACKMATE: "trackmate", pb.TRACKER_TRACKMATE_LAP: "trackmate-lap"}


def _or(value: Any, default: Any) -> Any:
    return value if value != 0 else default


# ------------------------------------------------------------------ settings
def settings_from_proto(cfg: pb.StreamConfig, limits: Limits,
                        trackers: Sequence[str] = ("builtin",)) -> StreamSettings:
    """Validate a wire ``StreamConfig``, fill in defaults, and check the server's limits.

    Parameters
    ----------
    cfg : livespt.v1.StreamConfig
        The first message of a StreamFrames call.
    limits : Limits
        Server-side limits the declared frame size is checked against.
    trackers : sequence of str
        The trackers the server offers.

    Returns
    -------
    StreamSettings
        The effective settings.

    Raises
    ------
    ValueError
        Naming the wire field (``config.<path>``).
    """
    if cfg.pixel_type not in PIXEL_TYPE_NAMES:
        names = ", ".join(pb.PixelType.Name(k) for k in PIXEL_TYPE_NAMES)
        got = (pb.PixelType.Name(cfg.pixel_type) if cfg.pixel_type in pb.PixelType.values()
               else str(cfg.pixel_type))
        raise ValueError(f"config.pixel_type must be one of {names}, got {got}")
    if cfg.tracker not in TRACKER_NAMES:
        raise ValueError(f"config.tracker: unknown value {cfg.tracker}")
    det, lk, win, ch = cfg.detector, cfg.linker, cfg.window, cfg.change
    d0, l0, w0, c0 = DetectorSettings(), LinkerSettings(), WindowConfig(), ChangeSettings()
    try:
        settings = StreamSettings(
            pixel_size_um=cfg.pixel_size_um,
            frame_interval_s=cfg.frame_interval_s,
            exposure_s=cfg.exposure_s,
            pixel_type=PIXEL_TYPE_NAMES[cfg.pixel_type],
            height=cfg.height,
            width=cfg.width,
            detector=DetectorSettings(
                radius_um=_or(det.radius_um, d0.radius_um),
                threshold=det.threshold,
                median_filter=det.median_filter,
                dark_spots=det.dark_spots,
                camera_offset_adu=(det.camera_offset_adu if det.HasField("camera_offset_adu")
                                   else None),
                camera_gain_adu_per_e=(det.camera_gain_adu_per_e
                                       if det.HasField("camera_gain_adu_per_e") else None),
                read_noise_e=det.read_noise_e if det.HasField("read_noise_e") else None,
                camera_estimated=tuple(det.camera_estimated),
                camera_estimate_frames=(det.camera_estimate_frames
                                        if det.HasField("camera_estimate_frames") else None)),
            linker=LinkerSettings(
                max_distance_um=_or(lk.max_distance_um, l0.max_distance_um),
                max_gap_frames=(lk.max_gap_frames if lk.HasField("max_gap_frames")
                                else l0.max_gap_frames)),
            window=WindowConfig(length=_or(win.length, w0.length),
                                stride=_or(win.stride, w0.stride)),
            change=ChangeSettings(
                disabled=ch.disabled,
                false_alarm_per_1000=_or(ch.false_alarm_per_1000, c0.false_alarm_per_1000)),
            tracker=TRACKER_NAMES[cfg.tracker],
            name=cfg.name,
        )
        settings.check_server(limits, trackers)
    except ValueError as exc:
        raise ValueError(f"config.{exc}") from None
    return settings


def settings_to_proto(s: StreamSettings) -> pb.StreamConfig:
    """The wire ``StreamConfig`` of settings (every field explicit)."""
    d = s.detector
    return pb.StreamConfig(
        pixel_size_um=s.pixel_size_um,
        frame_interval_s=s.frame_interval_s,
        exposure_s=0.0 if s.exposure_assumed else s.exposure_s,  # 0: not given
        pixel_type=PIXEL_TYPE_BY_NAME[s.pixel_type],  # type: ignore[arg-type]
        height=s.height,
        width=s.width,
        detector=pb.DetectorParams(
            radius_um=d.radius_um, threshold=d.threshold, median_filter=d.median_filter,
            dark_spots=d.dark_spots, camera_offset_adu=d.camera_offset_adu,
            camera_gain_adu_per_e=d.camera_gain_adu_per_e, read_noise_e=d.read_noise_e,
            camera_estimated=list(d.camera_estimated),
            camera_estimate_frames=d.camera_estimate_frames),
        linker=pb.LinkerParams(max_distance_um=s.linker.max_distance_um,
                               max_gap_frames=s.linker.max_gap_frames),
        window=pb.WindowParams(length=s.window.length, stride=s.window.stride),
        change=pb.ChangeParams(disabled=s.change.disabled,
                               false_alarm_per_1000=s.change.false_alarm_per_1000),
        tracker=TRACKER_BY_NAME[s.tracker],
        name=s.name,
    )


# ------------------------------------------------------------------- records
def point_to_proto(p: TrackPoint) -> pb.TrackPoint:
    """A track point on the wire."""
    return pb.TrackPoint(track_id=p.track_id, frame=p.frame, x_um=p.x_um, y_um=p.y_um,
                         precision_um=p.precision_um)


def estimate_to_proto(e: WindowEstimate) -> pb.WindowEstimate:
    """A window estimate on the wire."""
    return pb.WindowEstimate(track_id=e.track_id, frame_start=e.frame_start,
                             frame_end=e.frame_end, d_um2_s=e.d_um2_s,
                             d_low_um2_s=e.d_low_um2_s, d_high_um2_s=e.d_high_um2_s,
                             method=e.method)


def change_to_proto(c: ChangeEvent) -> pb.ChangeEvent:
    """A change event on the wire."""
    return pb.ChangeEvent(track_id=c.track_id, frame=c.frame,
                          detected_at_frame=c.detected_at_frame,
                          d_before_um2_s=c.d_before_um2_s, d_after_um2_s=c.d_after_um2_s,
                          score=c.score)


def frame_result_to_proto(index: int, n_spots: int, points: list[TrackPoint],
                          estimates: list[WindowEstimate], changes: list[ChangeEvent],
                          latency_ms: float) -> pb.AnalysisUpdate:
    """One frame's results as an update."""
    return pb.AnalysisUpdate(frame=pb.FrameResult(
        index=index, latency_ms=latency_ms, n_spots=n_spots,
        points=[point_to_proto(p) for p in points],
        estimates=[estimate_to_proto(e) for e in estimates],
        changes=[change_to_proto(c) for c in changes],
    ))


def records_from_proto(update: pb.FrameResult) -> tuple[
        list[TrackPoint], list[WindowEstimate], list[ChangeEvent]]:
    """Decode a FrameResult into the records the CSV files hold."""
    points = [TrackPoint(p.track_id, p.frame, p.x_um, p.y_um, p.precision_um)
              for p in update.points]
    estimates = [WindowEstimate(e.track_id, e.frame_start, e.frame_end, e.d_um2_s,
                                e.d_low_um2_s, e.d_high_um2_s, e.method)
                 for e in update.estimates]
    changes = [ChangeEvent(c.track_id, c.frame, c.detected_at_frame, c.d_before_um2_s,
                           c.d_after_um2_s, c.score) for c in update.changes]
    return points, estimates, changes


def summary_to_proto(summary: dict[str, Any], output_dir: str) -> pb.AnalysisUpdate:
    """The last update of a stream, from a session summary."""
    def finite(x: float) -> float:
        return x if math.isfinite(x) else 0.0

    return pb.AnalysisUpdate(summary=pb.StreamSummary(
        frames=summary["frames"], tracks=summary["tracks"],
        track_points=summary["track_points"], estimates=summary["estimates"],
        changes=summary["changes"], latency_p50_ms=finite(summary["latency_p50_ms"]),
        latency_p99_ms=finite(summary["latency_p99_ms"]), output_dir=output_dir))


# ------------------------------------------------------------ AnalyzeTracks
def track_request_from_proto(
    request: pb.AnalyzeTracksRequest,
) -> tuple[list[Track], Acquisition, WindowConfig, ChangeConfig | None]:
    """Checked tracks and settings of an ``AnalyzeTracks`` request.

    Raises
    ------
    ValueError
        Naming the wire field.
    """
    dt = request.frame_interval_s
    te = request.exposure_s or dt  # 0 on the wire: the frame interval
    # Acquisition checks all three, naming the field (pixel_size_um 0: unknown).
    acquisition = Acquisition(frame_interval_s=dt, exposure_s=te,
                              pixel_size_um=request.pixel_size_um or None)
    check_calibration(request.pixel_size_um or None, dt)
    w0 = WindowConfig()
    window = WindowConfig(length=_or(request.window.length, w0.length),
                          stride=_or(request.window.stride, w0.stride))
    change = None
    if not request.change.disabled:
        rate = _or(request.change.false_alarm_per_1000, ChangeSettings().false_alarm_per_1000)
        try:
            change = ChangeConfig(frame_interval_s=dt, exposure_s=te,
                                  false_alarm_per_1000=rate)
        except ValueError as exc:
            raise ValueError(f"change.{exc}") from None
    tracks = [
        Track.from_arrays(tr.track_id, np.asarray(tr.frames, dtype=np.int64), tr.x_um, tr.y_um,
                          tr.precision_um, where=f"tracks[{i}] (track_id {tr.track_id})")
        for i, tr in enumerate(request.tracks)]
    return tracks, acquisition, window, change


def track_estimate_to_proto(t: TrackEstimate) -> pb.TrackEstimate:
    """A whole-track estimate on the wire."""
    return pb.TrackEstimate(track_id=t.track_id, n_spots=t.n_spots, d_um2_s=t.d_um2_s,
                            d_low_um2_s=t.d_low_um2_s, d_high_um2_s=t.d_high_um2_s,
                            method=t.method)


def track_request_to_proto(
    tracks: list[Track], frame_interval_s: float, exposure_s: float | None,
    pixel_size_um: float | None, window: WindowConfig, change: ChangeSettings,
) -> pb.AnalyzeTracksRequest:
    """An ``AnalyzeTracks`` request (the client's side of :func:`track_request_from_proto`).

    ``exposure_s`` and ``pixel_size_um`` None: not given (0 on the wire).
    """
    return pb.AnalyzeTracksRequest(
        frame_interval_s=frame_interval_s, exposure_s=exposure_s or 0.0,
        pixel_size_um=pixel_size_um or 0.0,
        window=pb.WindowParams(length=window.length, stride=window.stride),
        change=pb.ChangeParams(disabled=change.disabled,
                               false_alarm_per_1000=change.false_alarm_per_1000),
        tracks=[pb.Track(track_id=t.track_id, frames=t.frames.tolist(),
                         x_um=t.xy_um[:, 0].tolist(), y_um=t.xy_um[:, 1].tolist(),
                         precision_um=([] if np.all(np.isnan(t.precision_um))
                                       else t.precision_um.tolist()))
                for t in tracks])


def analysis_from_proto(response: pb.AnalyzeTracksResponse) -> TrackAnalysis:
    """Decode an ``AnalyzeTracks`` response."""
    _, windows, changes = records_from_proto(pb.FrameResult(
        estimates=response.windows, changes=response.changes))
    return TrackAnalysis(
        tracks=[TrackEstimate(t.track_id, t.n_spots, t.d_um2_s, t.d_low_um2_s, t.d_high_um2_s,
                              t.method) for t in response.tracks],
        windows=windows, changes=changes,
        warnings=[(w.code, w.message) for w in response.warnings])


def analysis_to_proto(a: TrackAnalysis) -> pb.AnalyzeTracksResponse:
    """A track analysis as the ``AnalyzeTracks`` response."""
    return pb.AnalyzeTracksResponse(
        tracks=[track_estimate_to_proto(t) for t in a.tracks],
        windows=[estimate_to_proto(e) for e in a.windows],
        changes=[change_to_proto(c) for c in a.changes],
        warnings=[pb.Warning(code=code, message=msg) for code, msg in a.warnings],
    )


# ------------------------------------------------------------------ Localize
SAMPLER_BY_NAME = {"fast": pb.SAMPLER_FAST, "ancestral": pb.SAMPLER_ANCESTRAL}
SAMPLER_NAMES = {pb.SAMPLER_UNSPECIFIED: "fast", pb.SAMPLER_FAST: "fast",
                 pb.SAMPLER_ANCESTRAL: "ancestral"}


def localize_request_from_proto(req: pb.LocalizeRequest, limits: Limits, upsample: int
                                ) -> tuple[np.ndarray, LocalizeSettings, int]:
    """Frames, settings and first frame number of a ``Localize`` request.

    Parameters
    ----------
    req : pb.LocalizeRequest
        The request.
    limits : Limits
        The server's limits (pixels per frame, message size).
    upsample : int
        The localizer's map pixels per camera pixel (the answer's size is checked).

    Returns
    -------
    ndarray of float32, shape (T, H, W)
        The frames (checked: finite).
    LocalizeSettings
    int
        ``first_frame``.

    Raises
    ------
    ValueError
        A field out of range, named as on the wire.
    OverflowError
        The answer's maps would exceed the message limit.
    """
    if req.pixel_type not in PIXEL_TYPE_NAMES:
        raise ValueError(f"pixel_type must be one of {', '.join(PIXEL_TYPE_BY_NAME)} "
                         f"(PIXEL_TYPE_UINT8, ...), got {req.pixel_type}")
    dtype = np.dtype(PIXEL_TYPE_NAMES[req.pixel_type]).newbyteorder("<")
    h, w = int(req.height), int(req.width)
    if h < 8 or w < 8:
        raise ValueError(f"height and width must be >= 8 pixels, got {h} x {w}")
    if h * w > limits.max_frame_pixels:
        raise ValueError(f"height * width = {h * w} pixels exceeds the server limit of "
                         f"{limits.max_frame_pixels}")
    frame_bytes = h * w * dtype.itemsize
    if len(req.data) == 0 or len(req.data) % frame_bytes:
        raise ValueError(f"data must hold whole frames of {h} x {w} {dtype.name} "
                         f"({frame_bytes} bytes each), got {len(req.data)} bytes")
    n = len(req.data) // frame_bytes
    if req.sampler not in SAMPLER_NAMES:
        raise ValueError(f"sampler must be SAMPLER_FAST or SAMPLER_ANCESTRAL, got {req.sampler}")
    need = output_bytes(n, h, w, upsample)
    if need > limits.max_message_bytes:
        per = output_bytes(1, h, w, upsample)
        raise OverflowError(f"the maps of {n} frames of {h} x {w} take {need} bytes, over the "
                            f"message limit of {limits.max_message_bytes}: send at most "
                            f"{max(0, limits.max_message_bytes // per)} frames per call")
    settings = LocalizeSettings(
        pixel_size_um=req.pixel_size_um, samples=_or(req.samples, 32),
        sampler=SAMPLER_NAMES[req.sampler], steps=_or(req.steps, 20), seed=int(req.seed),
        threshold=_or(req.threshold, 0.3),
        offset_adu=req.camera_offset_adu if req.HasField("camera_offset_adu") else None,
        gain_adu_per_e=(req.camera_gain_adu_per_e if req.HasField("camera_gain_adu_per_e")
                        else None),
        names={"offset_adu": "camera_offset_adu", "gain_adu_per_e": "camera_gain_adu_per_e"})
    frames = check_frames(np.frombuffer(req.data, dtype=dtype).reshape(n, h, w), "data")
    return frames, settings, int(req.first_frame)


def localize_request_to_proto(frames: np.ndarray, settings: LocalizeSettings,
                              first_frame: int = 0) -> pb.LocalizeRequest:
    """A ``Localize`` request (frames uint8, uint16 or float32, shape (T, H, W))."""
    arr = np.asarray(frames)
    if arr.ndim == 2:
        arr = arr[None]
    name = arr.dtype.name
    if name not in PIXEL_TYPE_BY_NAME:
        arr, name = arr.astype(np.float32), "float32"
    req = pb.LocalizeRequest(
        pixel_type=PIXEL_TYPE_BY_NAME[name],  # type: ignore[arg-type]
        height=arr.shape[1], width=arr.shape[2],
        data=np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes(),
        pixel_size_um=settings.pixel_size_um, samples=settings.samples,
        sampler=SAMPLER_BY_NAME[settings.sampler], steps=settings.steps, seed=settings.seed,
        threshold=settings.threshold, first_frame=first_frame)
    if settings.offset_adu is not None:
        req.camera_offset_adu = settings.offset_adu
    if settings.gain_adu_per_e is not None:
        req.camera_gain_adu_per_e = settings.gain_adu_per_e
    return req


def localization_to_proto(loc: Localization, model: str) -> pb.LocalizeResponse:
    """A localization as the ``Localize`` answer."""
    t, h, w = loc.mean.shape
    e = loc.emitters
    return pb.LocalizeResponse(
        frames=t, height=h, width=w, upsample=loc.upsample,
        mean=loc.mean.astype("<f4").tobytes(), variance=loc.variance.astype("<f4").tobytes(),
        emitters=[pb.Emitter(frame=int(f), x_um=x, y_um=y, x_sd_um=sx, y_sd_um=sy,
                             photons=n, peak=pk)
                  for f, x, y, sx, sy, n, pk in zip(
                      *(e[c].to_numpy().tolist() for c in EMITTER_COLUMNS), strict=True)],
        warnings=[pb.Warning(code=c, message=m) for c, m in loc.warnings], model=model)


def localization_from_proto(resp: pb.LocalizeResponse) -> Localization:
    """The ``Localize`` answer as a :class:`Localization`."""
    import pandas as pd

    shape = (resp.frames, resp.height, resp.width)
    table = pd.DataFrame([[getattr(m, c) for c in EMITTER_COLUMNS] for m in resp.emitters],
                         columns=list(EMITTER_COLUMNS))
    table["frame"] = table["frame"].astype(np.int64)
    return Localization(
        mean=np.frombuffer(resp.mean, "<f4").reshape(shape).astype(np.float32),
        variance=np.frombuffer(resp.variance, "<f4").reshape(shape).astype(np.float32),
        emitters=table, upsample=resp.upsample,
        warnings=[(w.code, w.message) for w in resp.warnings])


# ------------------------------------------------------------ GetServerInfo
def server_info_to_proto(
    version: str, device: str, models: list[dict[str, Any]], trackers: list[str],
    limits: Limits, max_batch_windows: int, max_batch_delay_ms: float,
    active_sessions: int = 0, localizer: dict[str, Any] | None = None,
) -> pb.ServerInfo:
    """The ``GetServerInfo`` answer.

    Parameters
    ----------
    version, device : str
        LiveSPT version and compute device.
    models : list of dict
        :meth:`ModelRegistry.info` entries (name, variant, sha256, ..., used_for).
    trackers : list of str
        Trackers the server runs.
    limits : Limits
        Server-side limits.
    max_batch_windows : int
        Most windows per forward pass (0: no model).
    max_batch_delay_ms : float
        Longest a window waits for its batch, ms.
    active_sessions : int
        StreamFrames calls open now.
    localizer : dict, optional
        :meth:`ResidentLocalizer.info` of the localizer, when one is loaded.
    """
    extra = [] if localizer is None else [pb.ModelInfo(
        name=localizer["name"], kind="localizer", sha256=localizer["sha256"] or "",
        device=localizer["device"], used_for=localizer["used_for"],
        parameters=localizer["parameters"],
        card_json=json.dumps({**localizer["card"], "upsample": localizer["upsample"]}))]
    return pb.ServerInfo(
        version=version,
        device=device,
        models=[pb.ModelInfo(
            name=m["name"], kind="estimator", sha256=m["sha256"] or "", device=m["device"],
            variant=m["variant"], used_for=m["used_for"], parameters=m["parameters"] or 0,
            card_json=json.dumps({k: v for k, v in m.items() if k != "used_for"}))
            for m in models] + extra,
        estimators=["cve", *(f"vit:{m['name']}" for m in models)],
        trackers=trackers,
        limits=pb.Limits(
            max_message_bytes=limits.max_message_bytes,
            max_frame_pixels=limits.max_frame_pixels,
            max_sessions=limits.max_sessions,
            max_batch_windows=max_batch_windows,
            max_batch_delay_ms=max_batch_delay_ms,
            max_window_frames=limits.max_window_frames,
            max_gap_frames=limits.max_gap_frames,
            max_name_chars=limits.max_name_chars,
            max_track_points=limits.max_track_points,
            stream_idle_s=limits.stream_idle_s,
        ),
        active_sessions=active_sessions,
    )
