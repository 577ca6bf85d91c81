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

import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import linear_sum_assignment

from livespt.models.simulate import MovieConfig, simulate_movie
from livespt.server.io import fiji
from livespt.server.io.trackmate import trackmate_log_detect, trackmate_log_detect_run
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
