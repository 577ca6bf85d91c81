"""``livespt tracks``: D and changes of D of the tracks in a TrackMate XML or CSV file.

Reads the file (:mod:`livespt.server.io.trackmate_xml`,
:mod:`livespt.server.io.trackmate_csv`), analyses every track (linear segment)
with :func:`livespt.server.pipeline.tracks.analyze_tracks` in this process, or
through a server's ``AnalyzeTracks`` with ``--server``, and writes into ``--out``:
``track_estimates.csv``, ``estimates.csv``, ``changes.csv`` (DESIGN.md columns,
``track_id`` as in the file, plus ``segment``), ``annotated.xml`` (XML input: the
original file with the results as TrackMate features), ``summary.json`` and
``d_per_track.png``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from livespt.server import __version__
from livespt.server.io import strict_json
from livespt.server.io.trackmate_csv import read_trackmate_csv
from livespt.server.io.trackmate_xml import (
    SPOT_FEATURES,
    TRACK_FEATURES,
    TrackMateTracks,
    read_trackmate_xml,
    write_annotated_xml,
)
from livespt.server.pipeline.changepoint import ChangeConfig
from livespt.server.pipeline.estimate import Acquisition
from livespt.server.pipeline.file_tracks import METHOD_CODES, FileAnalysis, tracks_from_points
from livespt.server.pipeline.tracks import Track, TrackAnalysis, analyze_tracks
from livespt.server.pipeline.windows import WindowConfig
from livespt.server.service.settings import ChangeSettings, exposure_assumed_message


def _positive(flag: str, value: float | None) -> float | None:
    if value is not None and not (np.isfinite(value) and value > 0):
        raise ValueError(f"{flag} must be a positive number, got {value}")
    return value


def read_track_file(path: Path, *, all_tracks: bool, pixel_size_um: float | None,
                    frame_interval_s: float | None, edges: str | None = None
                    ) -> TrackMateTracks:
    """Read a TrackMate XML or CSV file by its content (``<`` first: XML)."""
    if not path.is_file():
        raise ValueError(f"FILE: {path} does not exist or is not a file")
    if _is_xml(path):
        if edges is not None:
            raise ValueError("--edges applies to CSV input (an XML file holds its edges)")
        return read_trackmate_xml(path, all_tracks=all_tracks, pixel_size_um=pixel_size_um,
                                  frame_interval_s=frame_interval_s)
    if all_tracks:
        raise ValueError("--all-tracks applies to XML files (a CSV holds no track filter)")
    if edges is not None and not Path(edges).is_file():
        raise ValueError(f"--edges: {edges} does not exist or is not a file")
    return read_trackmate_csv(path, pixel_size_um=pixel_size_um,
                              frame_interval_s=frame_interval_s, edges=edges)


def run_tracks(args: argparse.Namespace) -> dict[str, Any]:
    """Run ``livespt tracks``; return the summary written to ``summary.json``."""
    t0 = time.perf_counter()
    if args.movie is not None and args.server:
        raise ValueError("--movie: the image patches are cut and analysed in this process; "
                         "drop --server (AnalyzeTracks carries no images)")
    if args.movie is not None and args.no_models:
        raise ValueError("--movie: the patches are for the image transformer; drop "
                         "--no-models (or --movie, for the features transformer or the CVE)")
    px = _positive("--pixel-size", args.pixel_size)
    dt_flag = _positive("--frame-interval", args.frame_interval)
    exposure = _positive("--exposure", args.exposure)
    if args.window is not None and args.window < 3:
        raise ValueError(f"--window must be >= 3 positions, got {args.window}")
    window = WindowConfig(length=args.window) if args.window else WindowConfig()
    change = ChangeSettings(disabled=bool(args.no_changes),
                            false_alarm_per_1000=float(args.false_alarms))
    if args.tracker == "trackmate":
        src = track_movie_with_trackmate(args, px, dt_flag)
    elif args.file is None:
        raise ValueError("FILE: give a TrackMate XML or CSV file (or --movie MOVIE --tracker "
                         "trackmate to have TrackMate track the movie)")
    else:
        src = Path(args.file)
    data = read_track_file(src, all_tracks=args.all_tracks, pixel_size_um=px,
                           frame_interval_s=dt_flag, edges=args.edges)
    dt = data.frame_interval_s
    if exposure is not None and exposure > dt:
        raise ValueError(f"--exposure: {exposure:g} s is longer than the frame interval "
                         f"{dt:g} s")
    if data.points.empty:
        raise ValueError(f"{src}: the file holds no track (of {data.n_tracks_in_file} tracks in "
                         "the file, none selected; --all-tracks reads unfiltered ones)")
    tracks, ids = tracks_from_points(data.points)
    t_read = time.perf_counter() - t0
    analysis, models = _analyse(tracks, args, dt, exposure, data.pixel_size_um, window, change)
    result = FileAnalysis.from_analysis(analysis, ids)
    warnings = [*data.warnings, *result.warnings]
    if exposure is None and args.server is None:  # the server adds its own
        warnings.append(("EXPOSURE", exposure_assumed_message(dt, "--exposure")))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result.track_estimates.to_csv(out / "track_estimates.csv", index=False)
    result.estimates.to_csv(out / "estimates.csv", index=False)
    result.changes.to_csv(out / "changes.csv", index=False)
    written = ["track_estimates.csv", "estimates.csv", "changes.csv"]
    if args.tracker == "trackmate":
        written.insert(0, "trackmate.xml")
    is_xml = _is_xml(src)
    if is_xml:
        write_annotated_xml(src, out / "annotated.xml", result.spot_values(data.points),
                            result.track_values())
        written.append("annotated.xml")
    _plot(result.track_estimates, out / "d_per_track.png")
    written += ["summary.json", "d_per_track.png"]
    summary: dict[str, Any] = {
        "livespt_version": __version__,
        "input": {"file": str(src), "format": "trackmate-xml" if is_xml else "trackmate-csv",
                  "tracked_by": "trackmate (this run)" if args.tracker else "the file",
                  "trackmate_version": data.version,
                  "spatial_unit": data.spatial_unit, "time_unit": data.time_unit,
                  "tracks_in_file": data.n_tracks_in_file,
                  "tracks_analysed": int(ids["track_id"].nunique()),
                  "segments": len(ids), "all_tracks": bool(args.all_tracks),
                  "movie": args.movie},
        "calibration": {"pixel_size_um": data.pixel_size_um, "frame_interval_s": dt,
                        "exposure_s": exposure if exposure is not None else dt,
                        "exposure_assumed": exposure is None},
        "settings": {"window_length": window.length, "window_stride": window.stride,
                     "change_detection": not change.disabled,
                     "false_alarm_per_1000": change.false_alarm_per_1000},
        "analysis": "server " + args.server if args.server else "in-process",
        "models": models,
        "model_check": result.model_check,
        "methods": result.track_estimates["method"].value_counts().to_dict()
        if len(result.track_estimates) else {},
        "window_methods": result.estimates["method"].value_counts().to_dict()
        if len(result.estimates) else {},
        "method_codes": METHOD_CODES,
        "features_added": {"spot": [f[0] for f in SPOT_FEATURES],
                           "track": [f[0] for f in TRACK_FEATURES]},
        "counts": {"track_estimates": len(result.track_estimates),
                   "window_estimates": len(result.estimates), "changes": len(result.changes),
                   "too_short": len(result.short_tracks)},
        "short_tracks": result.short_tracks.to_dict(orient="records"),
        "warnings": [{"code": c, "message": m} for c, m in warnings],
        "timing_s": {"read": round(t_read, 3), "total": round(time.perf_counter() - t0, 3)},
        "files": written,
    }
    (out / "summary.json").write_text(strict_json.dumps(summary, indent=2))
    for code, msg in warnings:
        print(f"warning [{code}]: {msg}")
    print(f"{len(ids)} track segments ({ids['track_id'].nunique()} tracks): "
          f"{len(result.track_estimates)} track estimates, {len(result.estimates)} window "
          f"estimates, {len(result.changes)} changes of D; wrote {out}/" + ", ".join(written))
    return summary


def track_movie_with_trackmate(args: argparse.Namespace, pixel_size_um: float | None,
                               frame_interval_s: float | None) -> Path:
    """Track ``--movie`` with TrackMate in this process; return its XML file in ``--out``.

    TrackMate's LoG detector (radius ``--radius``, threshold ``--threshold`` or LiveSPT's
    automatic one on the first frame, dark spots inverted first) and its LAP tracker
    (``--max-distance``, ``--max-gap``) run on the whole movie at once, as in TrackMate's
    GUI; its own ``TmXmlWriter`` writes ``trackmate.xml``.
    """
    from livespt.server.cli.stream import open_movie
    from livespt.server.io.trackmate import LapConfig, trackmate_track
    from livespt.server.pipeline.detect import DetectorConfig, automatic_threshold

    if args.movie is None:
        raise ValueError("--tracker trackmate: TrackMate tracks a movie: give --movie MOVIE")
    if args.file is not None:
        raise ValueError("--tracker trackmate: the tracks come from TrackMate; drop FILE "
                         f"({args.file}) or drop --tracker")
    if args.server:
        raise ValueError("--tracker trackmate: TrackMate runs in this process; drop --server")
    try:
        frames, px_file, dt_file = open_movie(args.movie)
    except ValueError as exc:
        raise ValueError(f"--movie: {str(exc).removeprefix('MOVIE: ')}") from None
    px = pixel_size_um if pixel_size_um is not None else px_file
    dt = frame_interval_s if frame_interval_s is not None else dt_file
    if px is None or dt is None:
        raise ValueError("--tracker trackmate: the movie carries no calibration; give "
                         "--pixel-size (um) and --frame-interval (s)")
    for flag, v in (("--radius", args.radius), ("--max-distance", args.max_distance)):
        if not (np.isfinite(v) and v > 0):
            raise ValueError(f"{flag} must be a positive number of um, got {v}")
    if args.max_gap < 0:
        raise ValueError(f"--max-gap must be >= 0 frames, got {args.max_gap}")
    movie = np.stack([np.asarray(f, dtype=np.float32) for f in frames])
    if args.dark_spots:
        movie = -movie
    threshold = args.threshold
    if threshold is None:
        threshold = automatic_threshold(movie[0], DetectorConfig(radius_px=args.radius / px))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    xml = out / "trackmate.xml"
    trackmate_track(movie, px, args.radius, threshold,
                    LapConfig(max_distance_um=args.max_distance, max_gap_frames=args.max_gap),
                    frame_interval_s=dt, xml_path=xml, fiji_dir=args.fiji_dir)
    print(f"TrackMate tracked {args.movie} (LoG radius {args.radius:g} um, threshold "
          f"{threshold:.4g}; LAP {args.max_distance:g} um, gaps up to {args.max_gap}): {xml}")
    return xml


def _is_xml(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(256).lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<")


def _analyse(tracks: list[Track], args: argparse.Namespace, dt: float, exposure: float | None,
             pixel_size_um: float | None, window: WindowConfig,
             change: ChangeSettings) -> tuple[TrackAnalysis, list[str]]:
    if args.server:
        from livespt.server.cli.connect import connect

        with connect(args, args.server) as client:
            try:
                client.wait_ready(timeout_s=10.0)
            except ConnectionError:
                raise ConnectionError(
                    f"--server: no LiveSPT server answered at {args.server} within 10 s "
                    "(start one with `livespt serve`, or drop --server to analyse in this "
                    "process)") from None
            names = [m.name for m in client.info().models
                     if "analyze_tracks" in m.used_for]
            return client.analyze_tracks(tracks, dt, exposure_s=exposure,
                                         pixel_size_um=pixel_size_um, window=window,
                                         change=change), names
    te = exposure if exposure is not None else dt
    acquisition = Acquisition(frame_interval_s=dt, exposure_s=te, pixel_size_um=pixel_size_um)
    cfg = None if change.disabled else ChangeConfig(
        frame_interval_s=dt, exposure_s=te, false_alarm_per_1000=change.false_alarm_per_1000)
    registry = None
    model = None
    if not args.no_models:
        from livespt.server.inference.resident import ModelRegistry

        registry = ModelRegistry(None, "cpu")
        model = registry.track_model
        if args.movie is not None:
            model = registry.window_model
            if model is None:
                raise ValueError("--movie: no image transformer is installed")
            tracks = with_patches(tracks, args.movie, pixel_size_um, model.patch_px,
                                  dark=args.dark_spots)
    try:
        names = [model.estimator.name] if model is not None else []
        return analyze_tracks(tracks, acquisition, window, cfg, model), names
    finally:
        if registry is not None:
            registry.close()


def with_patches(tracks: list[Track], movie: str, pixel_size_um: float | None, size: int,
                 dark: bool = False) -> list[Track]:
    """The tracks with a ``size`` x ``size`` patch cut around each position from ``movie``.

    Parameters
    ----------
    tracks : list of Track
        Tracks in um; their frames index the movie's frames (0 = the first).
    movie : str
        The movie file (TIFF or what pims reads).
    pixel_size_um : float or None
        Pixel size of the movie, um (from the track file or ``--pixel-size``).
    size : int
        Patch side, pixels (the image model's).
    dark : bool
        Dark particles on a light background: patches are inverted.

    Raises
    ------
    ValueError
        Naming ``--movie`` or ``--pixel-size``: no pixel size, a track frame beyond
        the movie, or positions outside the frames.
    """
    from livespt.server.cli.stream import open_movie
    from livespt.server.service.detection_pool import crop_patches

    if pixel_size_um is None:
        raise ValueError("--movie: the pixel size is needed to find the spots in the movie; "
                         "give --pixel-size (um)")
    try:
        frames, _, _ = open_movie(movie)
    except ValueError as exc:
        raise ValueError(f"--movie: {str(exc).removeprefix('MOVIE: ')}") from None
    n, (h, w) = len(frames), frames.frame_shape
    last = max(int(t.frames[-1]) for t in tracks)
    if last >= n:
        raise ValueError(f"--movie: the tracks reach frame {last}, the movie has {n} frames "
                         "(frames 0 .. n-1); is it the movie the tracks come from?")
    xy = np.concatenate([t.xy_um for t in tracks]) / pixel_size_um
    if np.any(xy < -0.5) or np.any(xy[:, 0] > w - 0.5) or np.any(xy[:, 1] > h - 0.5):
        raise ValueError(f"--movie: positions fall outside its {w} x {h} pixel frames at "
                         f"{pixel_size_um:g} um per pixel; check --pixel-size")
    f_all = np.concatenate([t.frames for t in tracks])
    out = np.empty((len(f_all), size, size), np.float32)
    order = np.argsort(f_all, kind="stable")
    bounds = np.searchsorted(f_all[order], np.arange(n + 1))
    for t in np.unique(f_all).tolist():
        rows = order[bounds[t]:bounds[t + 1]]
        img = np.asarray(frames[t], dtype=np.float32)
        out[rows] = crop_patches(-img if dark else img, xy[rows, 0], xy[rows, 1], size)
    starts = np.concatenate([[0], np.cumsum([len(t) for t in tracks])])
    return [replace(t, patches=out[a:b]) for t, a, b in zip(tracks, starts[:-1], starts[1:],
                                                             strict=True)]


def _plot(track_estimates: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    d = track_estimates["d_um2_s"].to_numpy(dtype=float) if len(track_estimates) else np.zeros(0)
    d = d[np.isfinite(d) & (d > 0)]
    if d.size:
        edges = np.logspace(np.log10(d.min()), np.log10(d.max()) + 1e-9,
                            max(5, min(40, d.size // 3)))
        ax.hist(d, bins=edges.tolist())
        ax.set_xscale("log")
    ax.set_xlabel("track D (um^2/s)")
    ax.set_ylabel("tracks")
    ax.set_title(f"D per track ({d.size} with D > 0 of {len(track_estimates)})")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
