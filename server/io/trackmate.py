"""TrackMate's LoG detector and LAP tracker, run by a real Fiji inside this process.

* :func:`trackmate_log_detect` hands a movie to TrackMate 7
  (``fiji.plugin.trackmate.detection.LogDetectorFactory``) through pyimagej and
  returns its spots, to compare LiveSPT's detector
  (:mod:`livespt.server.pipeline.detect`, a re-implementation of the same LoG plus
  a Gaussian MLE fit) with the original (``tests/test_trackmate.py``,
  ``benchmarks/bench_detect_trackmate.py``).
* :func:`lap_link` links spots with TrackMate's LAP tracker
  (``SimpleSparseLAPTrackerFactory``: frame-to-frame linking, then gap closing;
  no splits or merges); :class:`TrackMateLinker` is the whole-block linker the
  live path's :class:`~livespt.server.pipeline.block_link.BlockLinker` calls
  (``--tracker trackmate``), through the process's one JVM thread
  (:func:`livespt.server.io.fiji.jvm_worker`).
* :func:`log_detect_spots` runs TrackMate's LoG detector on one frame for the live
  path (``--tracker trackmate``): positions and quality, no precision (TrackMate's
  LoG gives none).
* :func:`trackmate_track` detects and tracks a whole movie with TrackMate and can
  save TrackMate's own XML file (``TmXmlWriter``).

Fiji is found and started by :mod:`livespt.server.io.fiji` (``scripts/install-fiji``
installs one); the first call pays the JVM and ImageJ start (5-15 s).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from livespt.models import _validate
from livespt.server.io import fiji

__all__ = ["LapConfig", "TrackMateLinker", "TrackMateRun", "lap_link", "log_detect_spots",
           "trackmate_log_detect",
           "trackmate_log_detect_run", "trackmate_track", "trackmate_version"]

SPOT_COLUMNS = ("frame", "x_um", "y_um", "quality")

# TrackMate's detector is not known to be re-entrant through one gateway:
# one detection at a time per process.
_run_lock = threading.Lock()


@dataclass(frozen=True)
class TrackMateRun:
    """Spots of one TrackMate detection and what it cost.

    Attributes
    ----------
    spots : pandas.DataFrame
        Columns ``frame, x_um, y_um, quality`` (see :func:`trackmate_log_detect`).
    detection_s : float
        Wall-clock seconds in TrackMate's detector (``SpotDetector.process``,
        all frames).
    transfer_s : float
        The rest: copying the movie into an ImagePlus and reading the spots back.
    n_threads : int
        Threads of each frame's detector (``setNumThreads``).
    """

    spots: pd.DataFrame
    detection_s: float
    transfer_s: float
    n_threads: int


def _to_imageplus(movie: np.ndarray, pixel_size_um: float, frame_interval_s: float) -> Any:
    """A calibrated ImageJ 1 ``ImagePlus`` (float32, frames as T, 1 channel, 1 slice)."""
    from jpype import JArray, JFloat
    from scyjava import jimport

    image_plus = jimport("ij.ImagePlus")
    image_stack = jimport("ij.ImageStack")
    float_processor = jimport("ij.process.FloatProcessor")
    t, h, w = movie.shape
    stack = image_stack(w, h)
    for k in range(t):
        # float32 holds any uint16 value exactly; JPype copies the buffer at C speed.
        pixels = JArray(JFloat)(np.ascontiguousarray(movie[k], dtype=np.float32).ravel())
        stack.addSlice(f"t{k + 1}", float_processor(w, h, pixels))
    imp = image_plus("livespt", stack)
    imp.setDimensions(1, 1, t)  # channels, z-slices, frames: a time series, not a z-stack
    imp.setOpenAsHyperStack(True)
    cal = imp.getCalibration()
    cal.pixelWidth = float(pixel_size_um)
    cal.pixelHeight = float(pixel_size_um)
    cal.pixelDepth = 1.0
    cal.xOrigin = 0.0
    cal.yOrigin = 0.0
    cal.setUnit("micron")
    cal.frameInterval = float(frame_interval_s)
    cal.setTimeUnit("s")
    return imp


def trackmate_log_detect_run(
    movie: Any,
    pixel_size_um: float,
    radius_um: float,
    threshold: float,
    median_filter: bool = False,
    subpixel: bool = True,
    *,
    frame_interval_s: float = 1.0,
    n_threads: int | None = None,
    fiji_dir: Any = None,
) -> TrackMateRun:
    """Run TrackMate's LoG detector on a movie; spots plus timings.

    Same as :func:`trackmate_log_detect` (see it for the parameters and the
    coordinate convention), with ``frame_interval_s`` (ImagePlus calibration
    only), ``n_threads`` (threads of each frame's detector, default 1: frames
    run one after the other, as our single-threaded detector) and the time
    spent in TrackMate's detector reported separately from the copies across
    the Python/Java boundary.
    """
    arr = np.asarray(movie)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1] < 3 or arr.shape[2] < 3 or arr.shape[0] < 1:
        raise ValueError(f"movie must have shape (T, H, W) with H, W >= 3, got {np.shape(movie)}")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"movie must hold integers or floats, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        raise ValueError("movie has NaN or infinite values")
    px = _validate.positive("pixel_size_um", pixel_size_um)
    rad = _validate.positive("radius_um", radius_um)
    thr = float(threshold)
    if not np.isfinite(thr):
        raise ValueError(f"threshold must be finite, got {threshold}")
    dt = _validate.positive("frame_interval_s", frame_interval_s)
    if n_threads is not None:
        _validate.positive_int("n_threads", n_threads)

    fiji.start_imagej(fiji_dir)
    from scyjava import jimport

    j_double = jimport("java.lang.Double")
    j_boolean = jimport("java.lang.Boolean")
    j_integer = jimport("java.lang.Integer")
    settings_cls = jimport("fiji.plugin.trackmate.Settings")
    tm_utils = jimport("fiji.plugin.trackmate.util.TMUtils")
    log_factory = jimport("fiji.plugin.trackmate.detection.LogDetectorFactory")
    threads = 1 if n_threads is None else int(n_threads)

    frames: list[int] = []
    xs: list[float] = []
    ys: list[float] = []
    qs: list[float] = []
    with _run_lock:
        t0 = time.perf_counter()
        imp = _to_imageplus(arr, px, dt)
        settings = settings_cls(imp)
        img = tm_utils.rawWraps(imp)
        factory = log_factory()
        ds = factory.getDefaultSettings()
        ds.put("TARGET_CHANNEL", j_integer(1))
        ds.put("RADIUS", j_double(rad))
        ds.put("THRESHOLD", j_double(thr))
        ds.put("DO_MEDIAN_FILTERING", j_boolean(bool(median_filter)))
        ds.put("DO_SUBPIXEL_LOCALIZATION", j_boolean(bool(subpixel)))
        if not factory.checkSettings(ds) or not factory.setTarget(img, ds):
            raise ValueError(f"TrackMate rejected the settings: {factory.getErrorMessage()}")
        interval = tm_utils.getInterval(img, settings)  # the whole frame (no ROI)
        detection_s = 0.0
        for t in range(arr.shape[0]):
            # What TrackMate.execDetection does for each frame, minus its frame-level
            # thread pool, which TrackMate 7.5.1 never shuts down (two non-daemon
            # threads leaked per call; they would also keep the JVM from exiting).
            t1 = time.perf_counter()
            det = factory.getDetector(interval, t)
            det.setNumThreads(threads)
            if not det.checkInput() or not det.process():
                raise RuntimeError(f"TrackMate detection failed in frame {t}: "
                                   f"{det.getErrorMessage()}")
            result = det.getResult()
            detection_s += time.perf_counter() - t1
            for spot in result:
                frames.append(t)
                xs.append(float(spot.getFeature("POSITION_X")))
                ys.append(float(spot.getFeature("POSITION_Y")))
                qs.append(float(spot.getFeature("QUALITY")))
        imp.close()
        total_s = time.perf_counter() - t0

    df = pd.DataFrame({
        "frame": np.asarray(frames, dtype=np.int64),
        "x_um": np.asarray(xs, dtype=np.float64),
        "y_um": np.asarray(ys, dtype=np.float64),
        "quality": np.asarray(qs, dtype=np.float64),
    }, columns=list(SPOT_COLUMNS))
    df = df.sort_values(["frame", "y_um", "x_um"], kind="stable").reset_index(drop=True)
    return TrackMateRun(spots=df, detection_s=detection_s, transfer_s=total_s - detection_s,
                        n_threads=threads)


def trackmate_log_detect(
    movie: Any,
    pixel_size_um: float,
    radius_um: float,
    threshold: float,
    median_filter: bool = False,
    subpixel: bool = True,
) -> pd.DataFrame:
    """Detect spots with TrackMate's LoG detector in a real Fiji (pyimagej, in-process).

    The movie is copied into a float32 ImageJ ``ImagePlus`` calibrated in um
    (frames along T), and only TrackMate's detection step runs: the
    ``LogDetectorFactory`` is given the image (``setTarget``) and its detector
    runs on every frame, as ``TrackMate.execDetection`` does (which is not
    called: TrackMate 7.5.1 leaks a thread pool per call). No initial quality
    filter, no spot features beyond position and quality, no tracking.

    Parameters
    ----------
    movie : array_like, shape (T, H, W) or (H, W)
        Frames in camera units (ADU), any integer or float dtype.
    pixel_size_um : float
        Pixel size in um (ImagePlus pixel width and height).
    radius_um : float
        TrackMate's "estimated object radius" in um (``RADIUS``); its LoG has
        ``sigma = radius / sqrt(2)``. ``radius_um = sqrt(2) * psf_sigma_um``
        matches LiveSPT's ``DetectorConfig(radius_px=...)`` times the pixel size.
    threshold : float
        TrackMate's quality threshold (``THRESHOLD``): local maxima of the LoG
        response above it are kept. TrackMate's own default is 0.
    median_filter : bool
        3 x 3 median filter before the LoG (``DO_MEDIAN_FILTERING``).
    subpixel : bool
        Quadratic sub-pixel refinement of the maxima (``DO_SUBPIXEL_LOCALIZATION``).

    Returns
    -------
    pandas.DataFrame
        Columns ``frame`` (0-based, TrackMate's ``FRAME``), ``x_um``, ``y_um``
        (um) and ``quality`` (the LoG response at the maximum, image units),
        sorted by frame, then y, then x.

    Notes
    -----
    Coordinates: TrackMate (ImgLib2) puts pixel centres at integer pixel
    coordinates, and a spot's position is its pixel coordinate times the pixel
    size, with the ImagePlus origin ignored (set to 0 here). LiveSPT uses the
    same convention: pixel ``(i, j)`` (row, column) is centred at
    ``(x, y) = (j, i) * pixel_size_um`` (:mod:`livespt.models.simulate.movie`,
    ``docs/simulator.md``; ``Spots.x_px`` of :mod:`livespt.server.pipeline.detect`). So
    TrackMate's ``POSITION_X``/``POSITION_Y`` are returned unchanged and are
    directly comparable with the simulator's ground truth ``x_um, y_um`` and
    with ``Spots.x_px * pixel_size_um`` (checked in ``tests/test_trackmate.py``
    to agree within about 0.1 px).

    Raises
    ------
    ValueError
        Bad movie shape/values or parameters, or settings TrackMate rejects.
    livespt.server.io.fiji.FijiNotFoundError
        No Fiji with TrackMate is installed (see ``scripts/install-fiji``).
    RuntimeError
        ImageJ could not start, or TrackMate's detection failed.
    """
    return trackmate_log_detect_run(movie, pixel_size_um, radius_um, threshold,
                                    median_filter, subpixel).spots


# ---------------------------------------------------------------------------
# LAP tracking
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class LapConfig:
    """Settings of TrackMate's simple LAP tracker (``SimpleSparseLAPTrackerFactory``).

    Attributes
    ----------
    max_distance_um : float
        ``LINKING_MAX_DISTANCE``: farthest frame-to-frame link, um (> 0).
    max_gap_frames : int
        Most frames a track may skip (``MAX_FRAME_GAP`` is this + 1, TrackMate's
        frame difference of a gap link), >= 0; 0 turns gap closing off.
    gap_distance_um : float, optional
        ``GAP_CLOSING_MAX_DISTANCE``, um; default ``max_distance_um``.
    """

    max_distance_um: float
    max_gap_frames: int = 2
    gap_distance_um: float | None = None

    def __post_init__(self) -> None:
        _validate.positive("max_distance_um", self.max_distance_um)
        _validate.positive_int("max_gap_frames", self.max_gap_frames, minimum=0)
        if self.gap_distance_um is not None:
            _validate.positive("gap_distance_um", self.gap_distance_um)

    def as_dict(self) -> dict[str, Any]:
        """TrackMate's names and values of these settings (for summaries)."""
        return {"TRACKER": "SIMPLE_SPARSE_LAP_TRACKER",
                "LINKING_MAX_DISTANCE": self.max_distance_um,
                "ALLOW_GAP_CLOSING": self.max_gap_frames > 0,
                "GAP_CLOSING_MAX_DISTANCE": self.gap_distance_um or self.max_distance_um,
                "MAX_FRAME_GAP": self.max_gap_frames + 1}


def _lap_settings(config: LapConfig) -> Any:
    from scyjava import jimport

    j_double = jimport("java.lang.Double")
    j_integer = jimport("java.lang.Integer")
    j_boolean = jimport("java.lang.Boolean")
    factory = jimport("fiji.plugin.trackmate.tracking.sparselap.SimpleSparseLAPTrackerFactory")()
    ts = factory.getDefaultSettings()
    ts.put("LINKING_MAX_DISTANCE", j_double(float(config.max_distance_um)))
    ts.put("ALLOW_GAP_CLOSING", j_boolean(config.max_gap_frames > 0))
    ts.put("GAP_CLOSING_MAX_DISTANCE",
           j_double(float(config.gap_distance_um or config.max_distance_um)))
    ts.put("MAX_FRAME_GAP", j_integer(int(config.max_gap_frames) + 1))
    return factory, ts


def trackmate_version() -> str:
    """Version of the TrackMate jar on the running JVM's class path ("" when unknown)."""
    from scyjava import jimport

    pkg = jimport("fiji.plugin.trackmate.TrackMate")().getClass().getPackage()
    v = pkg.getImplementationVersion() if pkg is not None else None
    return str(v) if v is not None else ""


def jvm_max_memory_mb() -> float:
    """The running JVM's maximum heap (``Runtime.maxMemory``), MiB."""
    from scyjava import jimport

    return float(jimport("java.lang.Runtime").getRuntime().maxMemory()) / 2**20


def lap_link(frames: Any, xy_um: Any, config: LapConfig) -> np.ndarray:
    """Link spots with TrackMate's LAP tracker; call on the JVM's thread.

    Parameters
    ----------
    frames : array_like of int, shape (N,)
        Frame of each spot.
    xy_um : array_like, shape (N, 2)
        Positions, um.
    config : LapConfig
        Tracker settings.

    Returns
    -------
    ndarray of int, shape (E, 2)
        The links as rows of the input (earlier spot, later spot).
    """
    from scyjava import jimport

    f = np.asarray(frames, dtype=np.int64).reshape(-1)
    xy = np.asarray(xy_um, dtype=np.float64).reshape(-1, 2)
    if f.size != len(xy):
        raise ValueError(f"frames and xy_um must have the same length, got {f.size}, {len(xy)}")
    if f.size == 0:
        return np.zeros((0, 2), np.int64)
    spot_cls = jimport("fiji.plugin.trackmate.Spot")
    collection = jimport("fiji.plugin.trackmate.SpotCollection")()
    j_integer = jimport("java.lang.Integer")
    row_of: dict[int, int] = {}
    for i, (t, (x, y)) in enumerate(zip(f.tolist(), xy.tolist(), strict=True)):
        spot = spot_cls(x, y, 0.0, 0.1, 1.0)
        collection.add(spot, j_integer(t))
        row_of[int(spot.ID())] = i
    collection.setVisible(True)
    factory, ts = _lap_settings(config)
    tracker = factory.create(collection, ts)
    tracker.setNumThreads(1)
    if not tracker.checkInput() or not tracker.process():
        raise RuntimeError(f"TrackMate's LAP tracker failed: {tracker.getErrorMessage()}")
    graph = tracker.getResult()
    edges = [(row_of[int(graph.getEdgeSource(e).ID())], row_of[int(graph.getEdgeTarget(e).ID())])
             for e in graph.edgeSet()]
    out = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    swap = f[out[:, 0]] > f[out[:, 1]]
    out[swap] = out[swap][:, ::-1]
    return out


class TrackMateLinker:
    """Whole-block linker for the live path: TrackMate's LAP tracker on the JVM thread.

    Calls :func:`lap_link` through :func:`livespt.server.io.fiji.jvm_worker`, so one
    thread drives the JVM whatever thread the session runs in.

    Parameters
    ----------
    config : LapConfig
        Tracker settings.
    fiji_dir : path-like, optional
        Fiji.app to start the JVM from (first use only).
    """

    def __init__(self, config: LapConfig, fiji_dir: Any = None) -> None:
        self.config = config
        self.worker = fiji.jvm_worker(fiji_dir)

    def __call__(self, frames: np.ndarray, xy_um: np.ndarray) -> np.ndarray:
        """Links of one block (:data:`livespt.server.pipeline.block_link.LinkBlock`)."""
        out: np.ndarray = self.worker.call(lap_link, frames, xy_um, self.config)
        return out

    def version(self) -> str:
        """TrackMate's version (starts the JVM if needed)."""
        out: str = self.worker.call(trackmate_version)
        return out


def trackmate_track(
    movie: Any, pixel_size_um: float, radius_um: float, threshold: float, lap: LapConfig, *,
    frame_interval_s: float = 1.0, xml_path: Any = None, fiji_dir: Any = None,
) -> pd.DataFrame:
    """Detect (LoG) and track (LAP) a whole movie with TrackMate, as its GUI would.

    Runs in the calling thread (starting ImageJ there if needed), for scripts,
    tests and benchmarks; the server goes through :class:`TrackMateLinker`.

    Parameters
    ----------
    movie : array_like, shape (T, H, W)
        The frames.
    pixel_size_um, radius_um, threshold :
        As :func:`trackmate_log_detect`.
    lap : LapConfig
        Tracker settings.
    frame_interval_s : float
        Frame interval (calibration of the saved file).
    xml_path : path-like, optional
        Where to save TrackMate's XML file (``TmXmlWriter``: log, model with
        physical units um and s, settings), as a TrackMate user would.
    fiji_dir : path-like, optional
        Fiji.app to start from.

    Returns
    -------
    pandas.DataFrame
        ``track_id, spot_id, frame, x_um, y_um, quality``: the spots of TrackMate's
        tracks (visible ones).
    """
    run = trackmate_log_detect_run(movie, pixel_size_um, radius_um, threshold,
                                   frame_interval_s=frame_interval_s, fiji_dir=fiji_dir)
    from scyjava import jimport

    arr = np.asarray(movie)
    with _run_lock:
        imp = _to_imageplus(arr if arr.ndim == 3 else arr[None], pixel_size_um,
                            frame_interval_s)
        settings = jimport("fiji.plugin.trackmate.Settings")(imp)
        settings.detectorFactory = jimport(
            "fiji.plugin.trackmate.detection.LogDetectorFactory")()
        ds = settings.detectorFactory.getDefaultSettings()
        ds.put("RADIUS", jimport("java.lang.Double")(float(radius_um)))
        ds.put("THRESHOLD", jimport("java.lang.Double")(float(threshold)))
        settings.detectorSettings = ds
        factory, ts = _lap_settings(lap)
        settings.trackerFactory = factory
        settings.trackerSettings = ts
        model = jimport("fiji.plugin.trackmate.Model")()
        model.setPhysicalUnits("micron", "s")
        spot_cls = jimport("fiji.plugin.trackmate.Spot")
        spots = jimport("fiji.plugin.trackmate.SpotCollection")()
        j_integer = jimport("java.lang.Integer")
        sp = run.spots
        for t, x, y, q in zip(sp["frame"].tolist(), sp["x_um"].tolist(), sp["y_um"].tolist(),
                              sp["quality"].tolist(), strict=True):
            spot = spot_cls(x, y, 0.0, float(radius_um), q)
            spot.putFeature("POSITION_T", jimport("java.lang.Double")(t * frame_interval_s))
            spots.add(spot, j_integer(t))
        spots.setVisible(True)
        model.setSpots(spots, False)
        trackmate = jimport("fiji.plugin.trackmate.TrackMate")(model, settings)
        trackmate.setNumThreads(1)
        if not trackmate.execTracking():
            raise RuntimeError(f"TrackMate tracking failed: {trackmate.getErrorMessage()}")
        trackmate.computeEdgeFeatures(False)
        trackmate.computeTrackFeatures(False)
        trackmate.execTrackFiltering(False)
        rows = []
        tm = model.getTrackModel()
        for tid in tm.trackIDs(True):
            for spot in tm.trackSpots(tid):
                rows.append((int(tid), int(spot.ID()), int(spot.getFeature("FRAME")),
                             float(spot.getFeature("POSITION_X")),
                             float(spot.getFeature("POSITION_Y")),
                             float(spot.getFeature("QUALITY"))))
        if xml_path is not None:
            writer = jimport("fiji.plugin.trackmate.io.TmXmlWriter")(
                jimport("java.io.File")(str(xml_path)))
            writer.appendLog("LiveSPT trackmate_track")
            writer.appendModel(model)
            writer.appendSettings(settings)
            writer.writeToFile()
        imp.close()
    df = pd.DataFrame(rows, columns=["track_id", "spot_id", "frame", "x_um", "y_um", "quality"])
    return df.sort_values(["track_id", "frame"], kind="stable").reset_index(drop=True)


def log_detect_spots(frame: Any, config: Any, pixel_size_um: float) -> Any:
    """TrackMate's LoG detector on one frame, as LiveSPT's :class:`Spots`; call on the JVM thread.

    TrackMate sees the image LiveSPT's detector works on
    (:func:`~livespt.server.pipeline.detect.detection_image`: ADU, negated for dark
    spots, median-filtered if asked) with the same radius and threshold
    (``config.threshold``, or LiveSPT's automatic one for this frame), so the two
    detectors' qualities are in the same units. TrackMate's LoG localizes by a
    parabola through the quality map and estimates nothing else: precision,
    photons, background and width are NaN.

    Parameters
    ----------
    frame : array_like, shape (H, W)
        Camera frame, ADU.
    config : livespt.server.pipeline.detect.DetectorConfig
        The session's detector settings.
    pixel_size_um : float
        Pixel size, um.

    Returns
    -------
    livespt.server.pipeline.detect.Spots
    """
    from livespt.server.pipeline.detect import Spots, automatic_threshold, detection_image

    img = detection_image(frame, config)
    thr = config.threshold if config.threshold is not None else automatic_threshold(frame,
                                                                                    config)
    run = trackmate_log_detect_run(img, pixel_size_um, config.radius_px * pixel_size_um, thr)
    sp = run.spots
    k = len(sp)
    nan = np.full(k, np.nan)
    return Spots(x_px=sp["x_um"].to_numpy() / pixel_size_um,
                 y_px=sp["y_um"].to_numpy() / pixel_size_um, precision_px=nan,
                 photons=nan.copy(), background=nan.copy(), sigma_px=nan.copy(),
                 quality=sp["quality"].to_numpy(dtype=np.float64),
                 converged=np.zeros(k, dtype=bool), n_dropped=0, threshold=float(thr))
