"""TrackMate's LoG detector in a real Fiji (server/trackmate.py) against the truth and ours.

Needs a Fiji.app with TrackMate (``scripts/install-fiji`` or ``make fiji``, found by
``livespt.server.io.fiji.find_fiji``). Without one the module is skipped, with the places searched
in the reason; under CI (``CI=true``) on a machine that has the offline Fiji mirror
``scripts/install-fiji`` installs from, a missing Fiji is a failure instead.

One JVM per process: the module starts ImageJ once (module-scoped fixture, 5-15 s) and stops
the JVM at its end (no other test module uses Java in-process), while the interpreter is still
whole: left to the exit hook of ``livespt.server.io.fiji``, the JVM was destroyed during
interpreter finalization, next to gRPC's and torch's native threads, and one CI run crashed there
(segmentation fault after every test had passed). A subprocess checks that a script using
TrackMate exits promptly through that exit hook.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import time
from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import linear_sum_assignment

from livespt.models.simulate import MovieConfig, simulate_movie
from livespt.server.io import fiji
from livespt.server.io.tiff import write_movie
from livespt.server.io.trackmate import (
    LapConfig,
    lap_link,
    log_detect_spots,
    trackmate_log_detect,
    trackmate_log_detect_run,
    trackmate_track,
)
from livespt.server.io.trackmate_xml import read_trackmate_xml
from livespt.server.pipeline.detect import (
    DetectorConfig,
    detect,
    quality_noise_sd,
)
from livespt.server.pipeline.scoring import match_detections

MIRROR = Path("/work/.mirror/MorphoSource+fiji-app-pinned/repo")
FIJI = fiji.find_fiji()
_MISSING = None if FIJI is not None else \
    f"TrackMate tests need Fiji: {fiji.missing_fiji_message()}"
if _MISSING and not (os.environ.get("CI") == "true" and MIRROR.exists()):
    pytest.skip(_MISSING, allow_module_level=True)


@pytest.fixture(scope="module", autouse=True)
def _jvm_stopped_at_module_end():
    yield
    fiji.shutdown_imagej()


@pytest.fixture(scope="module", autouse=True)
def _require_fiji():
    # Under CI on a machine with the mirror, a missing Fiji fails every test of the module
    # (a collection error would stop the whole suite instead).
    if _MISSING:
        pytest.fail(f"{_MISSING} (CI with the Fiji mirror at {MIRROR}: scripts/install-fiji "
                    "--optional in .ci/run should have installed it)", pytrace=False)


ROOT = Path(__file__).resolve().parents[1]
PIXEL_UM = 0.1
PSF_SIGMA_PX = 0.9
RADIUS_PX = PSF_SIGMA_PX * math.sqrt(2.0)  # LoG sigma = PSF sigma
SHAPE = (128, 128)
N_FRAMES = 12
# 7 noise SDs of the quality (the automatic threshold of ours) for the default camera.
THRESHOLD = 7.0 * quality_noise_sd(RADIUS_PX, math.sqrt(10.0 + 1.5**2))


@pytest.fixture(scope="module")
def movie():
    # Sparse (20 particles in 128 x 128), SNR 10, D = 0.05 um^2/s with exposure = interval
    # (motion blur ~0.4 px).
    cfg = MovieConfig(shape_px=SHAPE, n_frames=N_FRAMES, n_particles=20, pixel_size_um=PIXEL_UM,
                      psf_sigma_um=PSF_SIGMA_PX * PIXEL_UM, d_um2_s=0.05, snr=10.0)
    return simulate_movie(cfg, seed=21)


@pytest.fixture(scope="module")
def tm_spots(movie) -> pd.DataFrame:
    # The one JVM start of the module.
    return trackmate_log_detect(movie.frames, PIXEL_UM, RADIUS_PX * PIXEL_UM, THRESHOLD)


def _per_frame_xy_px(spots: pd.DataFrame) -> list[np.ndarray]:
    return [spots.loc[spots.frame == t, ["x_um", "y_um"]].to_numpy() / PIXEL_UM
            for t in range(N_FRAMES)]


def _score(movie, xy_per_frame):
    tp = fp = fn = 0
    errs = []
    gt = movie.ground_truth
    for t, xy in enumerate(xy_per_frame):
        g = gt[gt.frame == t]
        m = match_detections(xy, g[["x_um", "y_um"]].to_numpy() / PIXEL_UM, SHAPE,
                             emitting=g.photons.to_numpy() > 0)
        tp += m.n_true_positive
        fp += m.n_false_positive
        fn += m.n_false_negative
        errs.append(m.errors_px)
    return tp, fp, fn, np.concatenate(errs)


def _pair(a: np.ndarray, b: np.ndarray, reach: float = 1.0):
    """Hungarian pairs of two point sets (K, 2) within ``reach`` px: (ia, ib, distances)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0)
    d = np.hypot(a[:, None, 0] - b[None, :, 0], a[:, None, 1] - b[None, :, 1])
    r, c = linear_sum_assignment(np.where(d <= reach, d, 1e6))
    ok = d[r, c] <= reach
    return r[ok], c[ok], d[r, c][ok]


def test_spot_table_layout(tm_spots):
    assert list(tm_spots.columns) == ["frame", "x_um", "y_um", "quality"]
    assert tm_spots.frame.between(0, N_FRAMES - 1).all()
    assert (tm_spots.quality > THRESHOLD).all()
    assert tm_spots.x_um.between(-0.5 * PIXEL_UM, (SHAPE[1] - 0.5) * PIXEL_UM).all()
    assert np.all(np.diff(tm_spots.frame.to_numpy()) >= 0)


def test_trackmate_finds_the_truth(movie, tm_spots):
    tp, fp, fn, err = _score(movie, _per_frame_xy_px(tm_spots))
    recall, precision = tp / (tp + fn), tp / max(tp + fp, 1)
    rmse = float(np.sqrt((err**2).mean()))  # per axis
    bias = err.mean(axis=0)
    print(f"\nTrackMate LoG: {tp} TP, {fp} FP, {fn} FN; recall {recall:.3f}, "
          f"precision {precision:.3f}, RMSE {rmse:.3f} px per axis, bias {bias}")
    assert tp > 150
    assert recall >= 0.9
    assert precision >= 0.9
    assert rmse < 0.3
    # Same pixel-centre convention as the simulator: no half-pixel shift.
    assert np.all(np.abs(bias) < 0.05)


def test_trackmate_agrees_with_our_detector(movie, tm_spots):
    """Same LoG: every maximum of ours is one of TrackMate's, with the same quality."""
    cfg_nofit = DetectorConfig(radius_px=RADIUS_PX, threshold=THRESHOLD, fit=False)
    cfg_fit = DetectorConfig(radius_px=RADIUS_PX, threshold=THRESHOLD, read_noise_e=1.5)
    n_tm = n_ours = 0
    dist, dist_fit, qrel = [], [], []
    for t, tm_xy in enumerate(_per_frame_xy_px(tm_spots)):
        ours = detect(movie.frames[t], cfg_nofit)
        fitted = detect(movie.frames[t], cfg_fit)
        ours_xy = np.column_stack([ours.x_px, ours.y_px])
        n_tm += len(tm_xy)
        n_ours += len(ours)
        ia, ib, d = _pair(tm_xy, ours_xy)
        assert len(ib) == len(ours), f"frame {t}: a maximum of ours is not one of TrackMate's"
        dist.append(d)
        q_tm = tm_spots.quality[tm_spots.frame == t].to_numpy()[ia]
        qrel.append(np.abs(q_tm - ours.quality[ib]) / ours.quality[ib])
        _, _, df = _pair(tm_xy, np.column_stack([fitted.x_px, fitted.y_px]))
        dist_fit.append(df)
    d, dfit, q = np.concatenate(dist), np.concatenate(dist_fit), np.concatenate(qrel)
    print(f"\n{n_tm} TrackMate spots, {n_ours} of ours (3x3 vs (2n+1)^2 maxima); "
          f"parabola vs TrackMate: median {np.median(d):.4f} px; fitted vs TrackMate: median "
          f"{np.median(dfit):.3f} px; quality max rel. diff {q.max():.2e}")
    # TrackMate keeps 3 x 3 maxima, we keep (2n + 1)^2 ones: it may have a few more.
    assert n_ours <= n_tm <= 1.1 * n_ours
    # Our LoG is TrackMate's (but for the zero-sum kernel, ~4e-5 of the background).
    assert q.max() < 1e-3
    # Sub-pixel: our parabolas vs ImgLib2's quadratic fit on the same quality map.
    assert np.median(d) < 0.05
    # Our Gaussian fit moves the positions by about its own error.
    assert np.median(dfit) < 0.15


def test_bad_input_is_rejected_before_java():
    frames = np.zeros((2, 16, 16), dtype=np.uint16)
    with pytest.raises(ValueError, match="movie"):
        trackmate_log_detect(np.zeros(16), 0.1, 0.13, 10.0)
    with pytest.raises(ValueError, match="pixel_size_um"):
        trackmate_log_detect(frames, 0.0, 0.13, 10.0)
    with pytest.raises(ValueError, match="radius_um"):
        trackmate_log_detect(frames, 0.1, -1.0, 10.0)
    with pytest.raises(ValueError, match="NaN"):
        trackmate_log_detect(np.full((1, 8, 8), np.nan), 0.1, 0.13, 10.0)


def test_single_frame_and_threads(tm_spots, movie):
    run = trackmate_log_detect_run(movie.frames[3], PIXEL_UM, RADIUS_PX * PIXEL_UM, THRESHOLD,
                                   n_threads=1)
    assert run.n_threads == 1 and run.detection_s > 0
    same = tm_spots[tm_spots.frame == 3].reset_index(drop=True)
    assert (run.spots.frame == 0).all()
    np.testing.assert_allclose(run.spots[["x_um", "y_um", "quality"]].to_numpy(),
                               same[["x_um", "y_um", "quality"]].to_numpy(), rtol=1e-6)


def test_find_fiji_search_order(tmp_path, monkeypatch):
    assert fiji.is_fiji_dir(FIJI)
    fake = tmp_path / "Fiji.app"
    (fake / "jars").mkdir(parents=True)
    monkeypatch.setenv(fiji.FIJI_DIR_ENV, str(fake))
    assert fiji.find_fiji() != fake.resolve()  # no TrackMate jar: not a Fiji for us
    (fake / "jars" / "TrackMate-7.5.1.jar").write_bytes(b"")
    assert fiji.find_fiji() == fake.resolve()  # $LIVESPT_FIJI_DIR comes first
    assert fiji.fiji_search_paths()[0] == fake


def test_script_using_trackmate_exits_promptly():
    """TrackMate leaves a non-daemon thread pool; the process must still end with Python."""
    script = textwrap.dedent("""
        import time
        import numpy as np
        from livespt.server.io.trackmate import trackmate_log_detect
        frames = np.random.default_rng(0).poisson(110, (3, 32, 32)).astype(np.uint16)
        frames[:, 16, 16] += 2000
        spots = trackmate_log_detect(frames, 0.1, 0.127, 100.0)
        print("done", len(spots), time.time(), flush=True)
    """)
    # A hang turns into a TimeoutExpired failure here, not into a stuck suite.
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, timeout=180)
    ended = time.time()
    assert out.returncode == 0, out.stderr[-2000:]
    fields = out.stdout.split()
    assert fields[:2] == ["done", "3"], out.stdout
    exit_s = ended - float(fields[2])
    print(f"\nexit {exit_s:.2f} s after the script's last line")
    assert exit_s < 10.0


# --------------------------------------------------------------- TrackMate files and tracking
TRACK_FRAMES = 60


@pytest.fixture(scope="module")
def track_movie():
    # 12 particles in 128 x 128 px, D = 0.05 um^2/s (RMS step 0.07 um per axis, spacing
    # ~3 um): tracks any linker should get right.
    cfg = MovieConfig(shape_px=SHAPE, n_frames=TRACK_FRAMES, n_particles=12,
                      pixel_size_um=PIXEL_UM, psf_sigma_um=PSF_SIGMA_PX * PIXEL_UM,
                      d_um2_s=0.05, snr=10.0)
    return simulate_movie(cfg, seed=5)


@pytest.fixture(scope="module")
def trackmate_file(track_movie, tmp_path_factory):
    """TrackMate's own XML of the movie (its LoG detector and LAP tracker, TmXmlWriter)."""
    path = tmp_path_factory.mktemp("tmxml") / "trackmate.xml"
    tracks = trackmate_track(track_movie.frames, PIXEL_UM, RADIUS_PX * PIXEL_UM, THRESHOLD,
                             LapConfig(max_distance_um=0.5, max_gap_frames=2),
                             frame_interval_s=0.05, xml_path=path)
    return path, tracks


def test_files_trackmate_writes_are_read_as_its_tracks(trackmate_file):
    path, tracks = trackmate_file
    data = read_trackmate_xml(path)
    assert data.version == "7.5.1" and (data.spatial_unit, data.time_unit) == ("micron", "s")
    assert data.pixel_size_um == pytest.approx(PIXEL_UM)
    assert data.frame_interval_s == pytest.approx(0.05)
    assert len(tracks) > 0.9 * 12 * TRACK_FRAMES  # nearly every spot is on a track
    got = data.points.sort_values(["track_id", "frame"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(
        got[["track_id", "spot_id", "frame", "x_um", "y_um"]],
        tracks[["track_id", "spot_id", "frame", "x_um", "y_um"]], check_dtype=False)


def test_trackmate_opens_annotated_xml_and_sees_our_features(trackmate_file, tmp_path):
    from scyjava import jimport

    from livespt.server.cli.main import main

    path, _ = trackmate_file
    out = tmp_path / "out"
    assert main(["tracks", str(path), "--out", str(out), "--exposure", "0.05",
                 "--no-models"]) == 0
    te = pd.read_csv(out / "track_estimates.csv").set_index("track_id")
    est = pd.read_csv(out / "estimates.csv")
    reader = jimport("fiji.plugin.trackmate.io.TmXmlReader")(
        jimport("java.io.File")(str(out / "annotated.xml")))
    assert reader.isReadingOk(), str(reader.getErrorMessage())
    model = reader.getModel()
    assert reader.isReadingOk(), str(reader.getErrorMessage())
    fm = model.getFeatureModel()
    assert {"LIVESPT_D", "LIVESPT_CHANGE"} <= {str(f) for f in fm.getSpotFeatures()}
    assert "LIVESPT_TRACK_D" in {str(f) for f in fm.getTrackFeatures()}
    assert str(fm.getSpotFeatureDimensions().get("LIVESPT_D")) == "NONE"
    tm = model.getTrackModel()
    n = 0
    for jid in tm.trackIDs(True):
        tid = int(jid)
        assert float(fm.getTrackFeature(jid, "LIVESPT_TRACK_D")) == pytest.approx(
            te.loc[tid, "d_um2_s"], rel=1e-12)
        windows = est[est.track_id == tid]
        centre = ((windows.frame_start + windows.frame_end) / 2).to_numpy()
        for spot in tm.trackSpots(jid):
            d = float(spot.getFeature("LIVESPT_D"))
            if len(windows) == 0:  # a track shorter than a window
                assert math.isnan(d)
                continue
            k = int(np.argmin(np.abs(centre - float(spot.getFeature("FRAME")))))
            assert d == pytest.approx(windows.d_um2_s.iloc[k], rel=1e-12)
            n += 1
    assert n > 0.9 * 12 * TRACK_FRAMES
    ds = reader.getDisplaySettings()
    assert str(ds.getTrackColorByFeature()) == "LIVESPT_TRACK_D"


def _links(points: pd.DataFrame) -> set:
    keys = list(zip(points.frame, points.x_um.round(9), points.y_um.round(9), strict=True))
    pts = points.assign(key=keys).sort_values(["track_id", "frame"])
    return {(a, b) for _, g in pts.groupby("track_id")
            for a, b in pairwise(g.key.tolist())}


@pytest.fixture(scope="module")
def live_runs(track_movie, tmp_path_factory):
    """The movie streamed through a real server with each tracker it offers."""
    from livespt.server.client import LiveSptClient, StreamSettings
    from livespt.server.service.app import EmbeddedServer, ServerOptions

    root = tmp_path_factory.mktemp("sessions")
    runs = {}
    with EmbeddedServer(ServerOptions(port=0, out_root=root, device="cpu", models=(),
                                      detect_workers=0, trackmate=True)) as srv:
        with LiveSptClient(srv.target) as client:
            assert list(client.info().trackers) == ["builtin", "trackmate", "trackmate-lap"]
            for tracker in ("builtin", "trackmate-lap", "trackmate"):
                res = client.stream(iter(track_movie.frames), StreamSettings(
                    pixel_size_um=PIXEL_UM, frame_interval_s=0.05, exposure_s=0.05,
                    tracker=tracker))
                runs[tracker] = (res, Path(res.server_output_dir))
    return runs


def test_live_trackmate_lap_links_as_the_builtin_tracker(live_runs):
    tm, out = live_runs["trackmate-lap"]
    assert tm.frames_acked == TRACK_FRAMES  # one result per frame
    pts = {k: pd.DataFrame([p.__dict__ for p in r.points]) for k, (r, _) in live_runs.items()}
    # Same detections in both runs; every one reported once.
    assert len(pts["trackmate-lap"]) == len(pts["builtin"])
    a, b = _links(pts["builtin"]), _links(pts["trackmate-lap"])
    print(f"\nlinks: builtin {len(a)}, trackmate {len(b)}, shared {len(a & b)}")
    assert len(a & b) >= 0.95 * len(a) and len(a & b) >= 0.95 * len(b)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tracker"] == "trackmate-lap"
    info = summary["tracker_info"]
    assert info["trackmate_version"] == "7.5.1" and info["block_frames"] == 20
    assert info["settings"]["LINKING_MAX_DISTANCE"] == pytest.approx(1.0)
    assert pd.read_csv(out / "tracks.csv").shape[0] == len(pts["trackmate-lap"])


def _right_links(points: pd.DataFrame, gt: pd.DataFrame) -> tuple[int, int]:
    """Links of a track between points of the same true particle (nearest within 1.5 px)."""
    owner = np.full(len(points), -1)
    pos = points.reset_index(drop=True)
    for f, idx in pos.groupby("frame").groups.items():
        p = pos.loc[idx, ["x_um", "y_um"]].to_numpy() / PIXEL_UM
        g = gt[gt.frame == f]
        q = g[["x_um", "y_um"]].to_numpy() / PIXEL_UM
        d = np.hypot(p[:, None, 0] - q[None, :, 0], p[:, None, 1] - q[None, :, 1])
        owner[np.asarray(list(idx))] = np.where(d.min(axis=1) < 1.5,
                                                g.particle_id.to_numpy()[d.argmin(axis=1)], -1)
    right = total = 0
    for _, g in pos.assign(owner=owner).sort_values("frame").groupby("track_id"):
        o = g.owner.to_numpy()
        right += int(np.sum((o[1:] == o[:-1]) & (o[1:] >= 0)))
        total += len(o) - 1
    return right, total


def test_live_trackmate_detects_and_links_the_truth(live_runs, track_movie):
    """TrackMate's LoG detector and LAP tracker in the live path, scored on the truth."""
    tm, out = live_runs["trackmate"]
    assert tm.frames_acked == TRACK_FRAMES
    pts = pd.DataFrame([p.__dict__ for p in tm.points])
    assert pts.precision_um.isna().all()  # TrackMate's LoG estimates no precision
    gt = track_movie.ground_truth
    right, total = _right_links(pts, gt)
    b_right, b_total = _right_links(
        pd.DataFrame([p.__dict__ for p in live_runs["builtin"][0].points]), gt)
    print(f"\nlinks joining one true particle: trackmate {right} of {total} "
          f"({len(pts)} points), builtin {b_right} of {b_total}")
    assert total > 0.9 * 12 * TRACK_FRAMES and right >= 0.95 * total
    # The same links as the built-in tracker's: each TrackMate point stands for the
    # built-in detection within 0.5 px of it in its frame (the detectors localize
    # differently), and links are compared through that correspondence.
    builtin = pd.DataFrame([p.__dict__ for p in live_runs["builtin"][0].points])
    key = {}
    for f, idx in pts.groupby("frame").groups.items():
        b = builtin[builtin.frame == f]
        p = pts.loc[idx, ["x_um", "y_um"]].to_numpy()
        q = b[["x_um", "y_um"]].to_numpy()
        d = np.hypot(p[:, None, 0] - q[None, :, 0], p[:, None, 1] - q[None, :, 1])
        for r, (i, j) in enumerate(zip(list(idx), d.argmin(axis=1).tolist(), strict=True)):
            if d[r, j] < 0.5 * PIXEL_UM:
                key[i] = (int(f), round(q[j, 0], 9), round(q[j, 1], 9))
    mapped = {(key[a], key[b]) for _, g in pts.sort_values("frame").groupby("track_id")
              for a, b in pairwise(g.index.tolist()) if a in key and b in key}
    b_links = _links(builtin)
    print(f"built-in links also made by trackmate: {len(b_links & mapped)} of {len(b_links)}")
    assert len(b_links & mapped) >= 0.95 * len(b_links)
    info = json.loads((out / "summary.json").read_text())["tracker_info"]
    assert info["name"] == "trackmate" and info["detector"].startswith("TrackMate LoG")


def test_live_trackmate_blocks_lose_no_link_at_borders(live_runs):
    tm, _ = live_runs["trackmate-lap"]
    live = pd.DataFrame([p.__dict__ for p in tm.points])
    # TrackMate's LAP tracker on all the stream's detections at once.
    lap = LapConfig(max_distance_um=1.0, max_gap_frames=2)
    edges = fiji.jvm_worker().call(lap_link, live.frame.to_numpy(),
                                   live[["x_um", "y_um"]].to_numpy(), lap)
    # The links' chains as tracks (a LAP tracking without splits or merges gives paths).
    nxt = dict(edges.tolist())
    heads = set(range(len(live))) - set(nxt.values())
    track = np.empty(len(live), dtype=np.int64)
    for h in heads:
        k = h
        track[k] = h
        while k in nxt:
            k = nxt[k]
            track[k] = h
    whole = live.assign(track_id=track)
    want, got = _links(whole), _links(live)
    borders = {(x, y) for x, y in want if x[0] // 20 != y[0] // 20}
    print(f"\nwhole-movie LAP links {len(want)}, live block links {len(got)}, shared "
          f"{len(want & got)}; across block borders {len(borders)}, kept {len(borders & got)}")
    assert borders and borders <= got
    assert len(want & got) >= 0.99 * len(want)


def test_stream_with_trackmate_exits_promptly(track_movie, tmp_path):
    movie = tmp_path / "movie.tif"
    write_movie(movie, track_movie.frames[:25], pixel_size_um=PIXEL_UM, frame_interval_s=0.05)
    t0 = time.time()
    out = subprocess.run([sys.executable, "-m", "livespt.server.cli.main", "stream", str(movie),
                          "--embedded", "--tracker", "trackmate", "--out", str(tmp_path / "o"),
                          "--exposure", "0.05"], cwd=ROOT, capture_output=True, text=True,
                         timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "non-daemon" not in out.stderr and "Exception" not in out.stderr, out.stderr[-2000:]
    assert len(pd.read_csv(tmp_path / "o" / "tracks.csv")) > 0.9 * 12 * 25
    # The JVM's memory is set explicitly (-Xmx2g by default), not left to the JVM.
    session = json.loads(next((tmp_path / "o" / "server_sessions").glob("*/summary.json"))
                         .read_text())
    cli = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert cli["tracker"] == "trackmate" and cli["tracker_info"] == session["tracker_info"]
    assert session["tracker_info"]["jvm_max_heap"] == "2g"
    assert 1800 < session["tracker_info"]["jvm_max_memory_mb"] <= 2048
    print(f"\nstream --tracker trackmate: {time.time() - t0:.1f} s with the JVM's start")


def test_blocks_leave_no_java_thread_behind():
    from scyjava import jimport

    from livespt.server.pipeline.detect import DetectorConfig

    worker = fiji.jvm_worker()
    rng = np.random.default_rng(0)
    frames, xy = np.repeat(np.arange(25), 40), rng.uniform(0, 20, (1000, 2))
    image = (100 + rng.poisson(10, (64, 64))).astype(np.uint16)
    image[30:33, 30:33] += 500
    cfg = DetectorConfig(radius_px=RADIUS_PX)

    def threads() -> int:
        return int(jimport("java.lang.Thread").activeCount())

    def one_block() -> None:
        worker.call(lap_link, frames, xy, LapConfig(1.0))
        worker.call(log_detect_spots, image, cfg, PIXEL_UM)

    one_block()
    before = worker.call(threads)
    for _ in range(20):
        one_block()
    assert worker.call(threads) <= before


def test_livespt_tracks_has_trackmate_track_the_movie(track_movie, tmp_path):
    from livespt.server.cli.main import main

    movie = tmp_path / "movie.tif"
    write_movie(movie, track_movie.frames, pixel_size_um=PIXEL_UM, frame_interval_s=0.05)
    out = tmp_path / "out"
    assert main(["tracks", "--movie", str(movie), "--tracker", "trackmate", "--radius",
                 str(RADIUS_PX * PIXEL_UM), "--max-distance", "0.5", "--exposure", "0.05",
                 "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["files"][0] == "trackmate.xml" and summary["input"]["tracked_by"].startswith(
        "trackmate")
    tm = read_trackmate_xml(out / "trackmate.xml")  # TrackMate's own file
    assert tm.version == "7.5.1" and tm.points.track_id.nunique() >= 10
    te = pd.read_csv(out / "track_estimates.csv")
    assert set(te.track_id) <= set(tm.points.track_id) and len(te) >= 10
    est = pd.read_csv(out / "estimates.csv")
    # The image transformer read the movie; where its windows disagree with the CVE the
    # model check lets the CVE answer, and says so.
    image_model = summary["models"][0]
    assert set(est.method) <= {f"vit:{image_model}", "cve:model-bias", "cve:ood"}
    flagged = summary["model_check"]["session_flagged"]
    print(f"\nmodel check on TrackMate's tracks: {summary['model_check']}")
    assert ("MODEL_CHECK" in [w["code"] for w in summary["warnings"]]) == flagged
    # The true D (0.05 um^2/s) is inside most whole-track intervals of the long tracks.
    long = te[te.n_spots >= 40]
    hit = ((long.d_low_um2_s <= 0.05) & (0.05 <= long.d_high_um2_s)).mean()
    assert len(long) >= 8 and hit >= 0.7, (len(long), hit)
