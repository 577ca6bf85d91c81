"""Tests of the spot detector (server/pipeline/detect.py) on simulated movies.

Scoring (``match_detections``): Hungarian assignment of detections to the true
exposure-mean positions within 2 px; particles within 2 px of the border are
not scored (nor unpaired detections there); particles closer than 2.5 px to
each other (about twice the PSF sigma, below the LoG's resolution) count as
found when one of them is found, their unpaired partner is not scored.

Run with ``-rP`` (or ``-s``) to see the printed recall, precision and RMSE.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage as ndi

from livespt.models.simulate import Camera, MovieConfig, simulate_movie
from livespt.server.pipeline.detect import (
    DetectorConfig,
    Spots,
    detect,
    log_kernel,
    quality_map,
    quality_noise_sd,
)
from livespt.server.pipeline.scoring import (
    best_f1_threshold,
    common_errors,
    match_detections,
    score_movie,
)

PIXEL_UM = 0.1
PSF_SIGMA_PX = 0.9
RADIUS_PX = PSF_SIGMA_PX * math.sqrt(2.0)  # LoG sigma = PSF sigma


def _movie(snr: float, seed: int, *, shape=(256, 256), n_frames=10, n_particles=50,
           d_um2_s=0.1, camera: Camera | None = None, start_um=None):
    cfg = MovieConfig(shape_px=shape, n_frames=n_frames, n_particles=n_particles,
                      pixel_size_um=PIXEL_UM, psf_sigma_um=PSF_SIGMA_PX * PIXEL_UM,
                      d_um2_s=d_um2_s, snr=snr, camera=camera or Camera(),
                      start_um=start_um)
    return simulate_movie(cfg, seed=seed)


def _score(movie, spots_per_frame, border_px=2.0):
    """Pooled true/false positives and errors over a movie's frames."""
    tp = fp = fn = 0
    errors, idx = [], []
    gt = movie.ground_truth
    shape = movie.frames.shape[1:]
    for t, spots in enumerate(spots_per_frame):
        g = gt[gt.frame == t]
        m = match_detections(np.column_stack([spots.x_px, spots.y_px]),
                             g[["x_um", "y_um"]].to_numpy() / PIXEL_UM, shape,
                             border_px=border_px, emitting=g.photons.to_numpy() > 0)
        tp += m.n_true_positive
        fp += m.n_false_positive
        fn += m.n_false_negative
        errors.append(m.errors_px)
        idx.append((t, m.detection_index))
    err = np.concatenate(errors)
    return tp, fp, fn, err, idx


@pytest.mark.parametrize("snr", [10.0, 20.0])
def test_recall_precision_moving_particles(snr):
    movie = _movie(snr, seed=11)
    cfg = DetectorConfig(radius_px=RADIUS_PX)  # automatic threshold, the session default
    spots = [detect(f, cfg) for f in movie.frames]
    tp, fp, fn, err, _ = _score(movie, spots)
    recall, precision = tp / (tp + fn), tp / (tp + fp)
    rmse = float(np.sqrt((err**2).sum(axis=1).mean() / 2))  # per axis
    conv = float(np.mean(np.concatenate([s.converged for s in spots])))
    print(f"\nSNR {snr:g}: {tp} TP, {fp} FP, {fn} FN; recall {recall:.4f}, "
          f"precision {precision:.4f}, RMSE {rmse:.4f} px per axis, converged {conv:.3f}")
    assert tp > 400
    assert recall >= 0.95
    assert precision >= 0.95
    # D = 0.1 um^2/s, 50 ms exposures, 0.1 um pixels: the particle moves ~0.6 px
    # (sd per axis) during the exposure and the smeared spot is not a Gaussian,
    # so the fitted centre misses the exposure-mean position by ~0.09 px, well
    # above the static precision (0.05 px at SNR 10, 0.02 px at SNR 20).
    assert rmse < 0.13
    assert conv > 0.95


def test_precision_matches_fitted_rmse_static_spots():
    """RMSE of the fitted positions equals the reported Cramer-Rao precision.

    Static, well-separated spots (8 x 8 grid, 30 px apart, random sub-pixel
    phase), without read noise (the fitted Poisson model is then exact) and
    with read noise given to the detector. With z =
    error / precision per axis and M scalar errors, RMS(z) = 1 for an efficient
    estimator, and its Monte-Carlo standard error is 1 / sqrt(2 M) (Var(z^2) = 2
    for Gaussian z). Tolerance: 4 standard errors.
    """
    rng = np.random.default_rng(4)
    grid = 20.0 + 30.0 * np.arange(8)
    xy = np.stack(np.meshgrid(grid, grid), axis=-1).reshape(-1, 2) + rng.uniform(0, 1, (64, 2))
    # (SNR, camera read noise in e-): the read-noise case tells the detector its
    # read noise, which it adds to the Poisson variance.
    for snr, rn in ((20.0, 0.0), (10.0, 0.0), (10.0, 1.5)):
        movie = _movie(snr, seed=5, n_frames=40, n_particles=64, d_um2_s=0.0,
                       camera=Camera(read_noise_e=rn), start_um=xy * PIXEL_UM)
        cfg = DetectorConfig(radius_px=RADIUS_PX, threshold=30.0, read_noise_e=rn)
        spots = [detect(f, cfg) for f in movie.frames]
        _, fp, fn, err, idx = _score(movie, spots)
        assert fn == 0 and fp == 0
        prec = np.concatenate([spots[t].precision_px[i] for t, i in idx])
        conv = np.concatenate([spots[t].converged[i] for t, i in idx])
        assert conv.all()
        z = err / prec[:, None]
        m = z.size
        rms_z = float(np.sqrt((z**2).mean()))
        se = 1.0 / math.sqrt(2 * m)
        rmse = float(np.sqrt((err**2).mean()))
        rms_prec = float(np.sqrt((prec**2).mean()))
        sig = np.concatenate([spots[t].sigma_px[i] for t, i in idx])
        phot = np.concatenate([spots[t].photons[i] for t, i in idx])
        bg = np.concatenate([spots[t].background[i] for t, i in idx])
        print(f"\nstatic SNR {snr:g}, read noise {rn:g} e-: {m} errors, RMSE {rmse:.4f} px, "
              f"RMS precision {rms_prec:.4f} px, RMS(error/precision) {rms_z:.3f} +- {se:.3f}; "
              f"sigma {sig.mean():.3f} px, photons {phot.mean():.0f} "
              f"(true {movie.config.photons_per_particle()[0]:.0f}), background {bg.mean():.2f}")
        assert abs(rms_z - 1.0) < 4 * se
        assert abs(sig.mean() - PSF_SIGMA_PX) < 0.01
        assert abs(phot.mean() / movie.config.photons_per_particle()[0] - 1) < 0.01
        assert abs(bg.mean() - 10.0) < 0.2


def test_close_pairs_are_resolved_and_fitted():
    """Pairs 4 px apart (4.4 PSF sigma): both found, fitted as well as isolated spots.

    Without the crowding treatment (Voronoi cells, then neighbour subtraction)
    the two fits drift towards each other: RMSE ~0.2 px instead of ~0.024.
    """
    rng = np.random.default_rng(6)
    grid = 15.0 + 25.0 * np.arange(9)
    centres = np.stack(np.meshgrid(grid, grid), axis=-1).reshape(-1, 2) + rng.uniform(0, 1, (81, 2))
    ang = rng.uniform(0, np.pi, 81)
    off = 2.0 * np.column_stack([np.cos(ang), np.sin(ang)])
    xy = np.concatenate([centres + off, centres - off])
    movie = _movie(20.0, seed=3, n_frames=3, n_particles=len(xy), d_um2_s=0.0,
                   start_um=xy * PIXEL_UM)
    cfg = DetectorConfig(radius_px=RADIUS_PX, threshold=30.0)
    spots = [detect(f, cfg) for f in movie.frames]
    tp, fp, fn, err, _ = _score(movie, spots)
    rmse = float(np.sqrt((err**2).mean()))
    print(f"\npairs 4 px apart, SNR 20: {tp} TP, {fp} FP, {fn} FN, RMSE {rmse:.4f} px")
    assert fn == 0 and fp == 0
    assert rmse < 0.03  # isolated static spots at SNR 20: 0.022


def test_dark_spots_inverted_movie_gives_same_detections():
    movie = _movie(10.0, seed=12, n_frames=5)
    bright = DetectorConfig(radius_px=RADIUS_PX, threshold=30.0)
    dark = replace(bright, invert=True)
    a_all, b_all = [], []
    for frame in movie.frames:
        a = detect(frame, bright)
        b = detect((65535 - frame).astype(np.uint16), dark)
        a_all.append(a)
        b_all.append(b)
        # The same maxima with the same quality (the kernel is zero-sum, so the
        # 65535 offset does not enter; float32 FFT round-off only).
        assert len(a) == len(b) > 30
        np.testing.assert_allclose(b.quality, a.quality, rtol=1e-4, atol=1e-2)
        assert np.all(np.hypot(a.x_px - b.x_px, a.y_px - b.y_px) < 0.5)
        # The fit of the dip sees ~65000 photons of background per pixel, not
        # the data's true noise (a user-inverted frame is not Poisson), so it
        # is nearly least squares: positions agree within the precision.
        ok = a.converged & b.converged
        assert ok.mean() > 0.9
        d2 = (a.x_px - b.x_px) ** 2 + (a.y_px - b.y_px) ** 2
        assert np.sqrt(d2[ok].mean() / 2) < np.sqrt((a.precision_px[ok] ** 2).mean())
        np.testing.assert_allclose(np.median(b.photons[ok] / a.photons[ok]), 1.0, atol=0.03)
    # And the inverted detections score as well against the truth.
    tp_a, fp_a, fn_a, err_a, _ = _score(movie, a_all)
    tp, fp, fn, err, _ = _score(movie, b_all)
    assert (tp, fp, fn) == (tp_a, fp_a, fn_a)
    assert tp / (tp + fn) >= 0.95 and tp / (tp + fp) >= 0.95
    assert np.sqrt((err**2).mean()) < 1.1 * np.sqrt((err_a**2).mean())


def test_dark_spots_on_light_float_background():
    """A float frame of dark particles on a light background (no camera offset)."""
    movie = _movie(20.0, seed=13, n_frames=3)
    cfg = DetectorConfig(radius_px=RADIUS_PX, threshold=30.0, invert=True, offset_adu=0.0)
    spots = [detect(2000.0 - f.astype(np.float32), cfg) for f in movie.frames]
    tp, fp, fn, err, _ = _score(movie, spots)
    assert tp / (tp + fn) >= 0.95 and tp / (tp + fp) >= 0.95
    assert np.sqrt((err**2).mean()) < 0.15


def test_median_filter_removes_salt_noise():
    movie = _movie(10.0, seed=14, n_frames=5)
    rng = np.random.default_rng(0)
    salty = movie.frames.copy()
    hot = rng.random(salty.shape) < 0.002  # ~130 hot pixels per 256 x 256 frame
    salty[hot] = 5000
    plain = DetectorConfig(radius_px=RADIUS_PX, threshold=30.0)
    filtered = replace(plain, median_filter=True)
    tp0, fp0, _, _, _ = _score(movie, [detect(f, plain) for f in salty])
    tp1, fp1, fn1, err1, _ = _score(movie, [detect(f, filtered) for f in salty])
    _, _, _, err_clean, _ = _score(movie, [detect(f, filtered) for f in movie.frames])
    rmse1, rmse_clean = np.sqrt((err1**2).mean()), np.sqrt((err_clean**2).mean())
    print(f"\nsalt noise: precision {tp0 / (tp0 + fp0):.3f} without the median filter, "
          f"{tp1 / (tp1 + fp1):.3f} with it (recall {tp1 / (tp1 + fn1):.3f}, RMSE "
          f"{rmse1:.3f} px; {rmse_clean:.3f} px on the clean movie)")
    assert tp0 / (tp0 + fp0) < 0.5  # every hot pixel is a spot without the filter
    assert tp1 / (tp1 + fp1) >= 0.95
    assert tp1 / (tp1 + fn1) >= 0.95
    assert rmse1 < 1.1 * rmse_clean


def test_median_filter_equals_scipy():
    rng = np.random.default_rng(7)
    for shape in ((64, 80), (3, 3), (5, 41)):
        img = rng.poisson(30, shape).astype(np.float32)
        ref = ndi.median_filter(img, size=3, mode="mirror")
        got = quality_map(img, DetectorConfig(radius_px=RADIUS_PX, median_filter=True))
        np.testing.assert_allclose(
            got, quality_map(ref, DetectorConfig(radius_px=RADIUS_PX)), rtol=0, atol=1e-3)


def test_dtypes_give_identical_detections():
    movie = _movie(10.0, seed=15, n_frames=1, camera=Camera(offset_adu=0.0))
    f16 = movie.frames[0]
    assert f16.max() < 255
    cfg = DetectorConfig(radius_px=RADIUS_PX, threshold=30.0, offset_adu=0.0)
    ref = detect(f16, cfg)
    assert len(ref) > 30
    for dt in (np.uint8, np.int16, np.int32, np.float32, np.float64):
        s = detect(f16.astype(dt), cfg)
        np.testing.assert_array_equal(s.x_px, ref.x_px)
        np.testing.assert_array_equal(s.y_px, ref.y_px)
    # A Python nested list is a frame too.
    assert len(detect(f16.tolist(), cfg)) == len(ref)


def test_quality_is_trackmate_log():
    rng = np.random.default_rng(1)
    img = rng.poisson(50, (60, 75)).astype(np.float32)
    for radius in (1.0, RADIUS_PX, 2.5):
        cfg = DetectorConfig(radius_px=radius)
        q = quality_map(img, cfg)
        ref = ndi.correlate(img.astype(np.float64), log_kernel(radius), mode="mirror")
        np.testing.assert_allclose(q, ref, atol=1e-3 * np.abs(ref).max())
    # TrackMate's kernel is -2 laplacian(G_sigma), sigma = radius / sqrt(2).
    q = quality_map(img, DetectorConfig(radius_px=2.0))
    gl = -2.0 * ndi.gaussian_laplace(img.astype(np.float64), 2.0 / math.sqrt(2.0))
    assert np.abs(q - gl)[12:-12, 12:-12].max() < 0.02 * gl.std()
    k = log_kernel(RADIUS_PX)
    assert k.shape == (11, 11) and abs(k.sum()) < 1e-12
    # Noise model of the quality: white noise of sd 3 ADU.
    noise = rng.normal(0.0, 3.0, (300, 300))
    sd = quality_map(noise, DetectorConfig(radius_px=RADIUS_PX)).std()
    assert sd == pytest.approx(quality_noise_sd(RADIUS_PX, 3.0), rel=0.03)


def test_spots_near_the_border_are_fitted():
    xy = np.array([[0.2, 40.3], [63.1, 20.7], [30.4, 0.0], [25.5, 63.3], [0.4, 0.3]])
    movie = _movie(20.0, seed=16, shape=(64, 64), n_frames=20, n_particles=5,
                   d_um2_s=0.0, start_um=xy * PIXEL_UM)
    cfg = DetectorConfig(radius_px=RADIUS_PX, threshold=30.0)
    spots = [detect(f, cfg) for f in movie.frames]
    _, fp, fn, err, idx = _score(movie, spots, border_px=0.0)
    assert fn == 0 and fp == 0
    conv = np.concatenate([spots[t].converged[i] for t, i in idx])
    assert conv.mean() > 0.9
    assert np.sqrt((err**2).mean()) < 0.1


def test_fit_false_and_empty_frames():
    movie = _movie(20.0, seed=17, n_frames=1)
    cfg = DetectorConfig(radius_px=RADIUS_PX, threshold=30.0, fit=False)
    s = detect(movie.frames[0], cfg)
    assert len(s) > 30 and not s.converged.any()
    assert np.isfinite(s.precision_px).all() and np.isnan(s.sigma_px).all()
    tp, _, fn, err, _ = _score(movie, [s])
    assert tp / (tp + fn) >= 0.95 and np.sqrt((err**2).mean()) < 0.3
    flat = np.full((40, 50), 100, dtype=np.uint16)
    e = detect(flat, DetectorConfig(radius_px=RADIUS_PX))
    assert isinstance(e, Spots) and len(e) == 0 and e.x_px.dtype == np.float64


def test_tiny_frames():
    # The session accepts frames from 8 x 8 pixels; the detector from 3 x 3.
    rng = np.random.default_rng(5)
    img = rng.poisson(10, (8, 9)).astype(np.float64) + 100
    img[4, 4] += 400
    s = detect(img, DetectorConfig(radius_px=RADIUS_PX, threshold=30.0))
    assert len(s) == 1 and abs(s.x_px[0] - 4) < 0.3 and abs(s.y_px[0] - 4) < 0.3
    s3 = detect(img[3:6, 3:6], DetectorConfig(radius_px=RADIUS_PX, threshold=30.0))
    assert len(s3) == 1 and np.isfinite(s3.precision_px).all()


def test_max_spots_guard_keeps_the_best():
    rng = np.random.default_rng(2)
    noise = rng.poisson(20, (128, 128)).astype(np.uint16)
    all_ = detect(noise, DetectorConfig(radius_px=RADIUS_PX, threshold=0.0, fit=False))
    few = detect(noise, DetectorConfig(radius_px=RADIUS_PX, threshold=0.0, fit=False,
                                       max_spots=25))
    assert len(all_) > 100
    assert len(few) == 25 and few.n_dropped == len(all_) - 25
    assert few.quality.min() >= np.sort(all_.quality)[-25]


def test_precision_is_always_finite():
    rng = np.random.default_rng(3)
    noise = rng.poisson(20, (128, 128)).astype(np.uint16) + 100
    s = detect(noise, DetectorConfig(radius_px=RADIUS_PX, threshold=0.0, max_spots=300))
    assert len(s) == 300
    assert np.isfinite(s.precision_px).all() and (s.precision_px > 0).all()
    assert np.isfinite(s.x_px).all() and np.isfinite(s.photons).all()


@pytest.mark.parametrize(
    ("frame", "match"),
    [
        (np.full((20, 20), np.nan), "^frame contains NaN"),
        (np.pad(np.ones((20, 20)), 0) * np.inf, "^frame contains NaN"),
        (np.full((20, 20), 1e300), "^frame contains NaN"),
        (np.zeros((3, 20, 20)), "^frame must have 2 dimensions"),
        (np.zeros(20), "^frame must have 2 dimensions"),
        (np.zeros((20, 20), dtype=bool), "^frame must have an integer or float dtype"),
        (np.zeros((20, 20), dtype=complex), "^frame must have an integer or float dtype"),
        (np.array([["a", "b"], ["c", "d"]]), "^frame must have an integer or float dtype"),
        (np.zeros((2, 20)), "^frame must be at least 3 x 3"),
    ],
)
def test_bad_frames_raise(frame, match):
    with pytest.raises(ValueError, match=match):
        detect(frame, DetectorConfig(radius_px=RADIUS_PX))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"radius_px": -1.0}, "radius_px"),
        ({"radius_px": float("nan")}, "radius_px"),
        ({"radius_px": 1.0, "threshold": -1.0}, "threshold"),
        ({"radius_px": 1.0, "threshold": float("inf")}, "threshold"),
        ({"radius_px": 1.0, "fit_window_px": 6}, "fit_window_px"),
        ({"radius_px": 1.0, "fit_window_px": 1}, "fit_window_px"),
        ({"radius_px": 1.0, "max_spots": 0}, "max_spots"),
        ({"radius_px": 1.0, "gain_adu_per_e": 0.0}, "gain_adu_per_e"),
        ({"radius_px": 1.0, "offset_adu": float("nan")}, "offset_adu"),
        ({"radius_px": 1.0, "read_noise_e": -1.0}, "read_noise_e"),
        ({"radius_px": 1.0, "median_filter": "yes"}, "median_filter"),
        ({"radius_px": 1.0, "invert": 1}, "invert"),
    ],
)
def test_bad_config_raises(kwargs, name):
    with pytest.raises(ValueError, match=f"^{name}"):
        DetectorConfig(**kwargs)


def test_bad_config_type_and_match_arguments():
    with pytest.raises(ValueError, match=r"^config"):
        detect(np.zeros((20, 20)), {"radius_px": 1.0})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^max_distance_px"):
        match_detections(np.zeros((1, 2)), np.zeros((1, 2)), (10, 10), max_distance_px=0)
    with pytest.raises(ValueError, match=r"^emitting"):
        match_detections(np.zeros((1, 2)), np.zeros((2, 2)), (10, 10), emitting=[True])


def test_match_detections_counts_close_pairs_fairly():
    truth = np.array([[10.0, 10.0], [11.5, 10.0], [30.0, 30.0], [50.0, 1.0], [40.0, 40.0]])
    # One detection for the close pair, one for the isolated particle, none for
    # the particle at (40, 40) or the one at the border, one false positive.
    det = np.array([[10.6, 10.1], [30.2, 29.9], [20.0, 20.0]])
    m = match_detections(det, truth, (64, 64))
    assert (m.n_true_positive, m.n_false_positive, m.n_false_negative) == (2, 1, 1)
    assert m.n_ignored_truth == 2  # the unresolved partner and the border particle
    # Both members of the pair found: two true positives.
    m2 = match_detections(np.array([[10.0, 10.1], [11.6, 9.9]]), truth[:2], (64, 64))
    assert (m2.n_true_positive, m2.n_false_negative) == (2, 0)


def test_score_movie_sums_the_frames_and_handles_edge_cases() -> None:
    movie = simulate_movie(MovieConfig(shape_px=(64, 64), n_frames=6, n_particles=8,
                                       pixel_size_um=PIXEL_UM, d_um2_s=0.05, snr=15.0), seed=3)
    gt = movie.ground_truth
    truth_xy = [gt[gt.frame == t][["x_um", "y_um"]].to_numpy() / PIXEL_UM for t in range(6)]

    # The truth itself: every scored particle found, no error.
    perfect = score_movie(truth_xy, gt, PIXEL_UM, (64, 64))
    assert perfect.recall == perfect.precision == perfect.f1 == 1.0
    assert perfect.rmse_px == 0.0 and perfect.n_false_positive == 0

    # Shifted by 0.3 px in x, one frame empty, one spurious detection far from all.
    shifted = [xy + np.array([0.3, 0.0]) for xy in truth_xy]
    shifted[2] = np.zeros((0, 2))
    grid = np.array([[x, y] for x in range(8, 57, 4) for y in range(8, 57, 4)], float)
    gap = np.hypot(grid[:, None, 0] - truth_xy[4][None, :, 0],
                   grid[:, None, 1] - truth_xy[4][None, :, 1]).min(axis=1)
    shifted[4] = np.vstack([shifted[4], grid[[np.argmax(gap)]]])  # far from every particle
    sc = score_movie(shifted, gt, PIXEL_UM, (64, 64))
    per_frame = [match_detections(shifted[t], truth_xy[t], (64, 64),
                                  emitting=gt[gt.frame == t].photons.to_numpy() > 0)
                 for t in range(6)]
    assert sc.n_true_positive == sum(m.n_true_positive for m in per_frame)
    assert sc.n_false_negative == sum(m.n_false_negative for m in per_frame) > 0
    assert sc.n_false_positive == sum(m.n_false_positive for m in per_frame) >= 1
    assert sc.rmse_px == pytest.approx(0.3 / math.sqrt(2))  # 0.3 px in x, 0 in y
    assert sc.median_error_px == pytest.approx(0.3)

    nothing = score_movie([np.zeros((0, 2))] * 6, gt, PIXEL_UM, (64, 64))
    assert nothing.recall == nothing.precision == nothing.f1 == 0.0
    assert math.isnan(nothing.rmse_px) and math.isnan(nothing.median_error_px)
    assert sc.counts() == {"true_positives": sc.n_true_positive,
                           "false_positives": sc.n_false_positive,
                           "false_negatives": sc.n_false_negative,
                           "recall": round(sc.recall, 4),
                           "precision": round(sc.precision, 4), "f1": round(sc.f1, 4)}
    with pytest.raises(ValueError, match="pixel_size_um"):
        score_movie(truth_xy, gt, 0.0, (64, 64))


def test_common_errors_compare_methods_on_the_particles_all_found() -> None:
    movie = simulate_movie(MovieConfig(shape_px=(64, 64), n_frames=5, n_particles=10,
                                       pixel_size_um=PIXEL_UM, d_um2_s=0.05, snr=15.0), seed=8)
    gt = movie.ground_truth
    truth_xy = [gt[gt.frame == t][["x_um", "y_um"]].to_numpy() / PIXEL_UM for t in range(5)]
    a = [xy + np.array([0.2, 0.0]) for xy in truth_xy]           # finds all, 0.2 px off in x
    b = [(xy + np.array([0.0, -0.1]))[::2] for xy in truth_xy]   # finds every other, reversed
    b = [xy[::-1] for xy in b]
    e = common_errors({"a": a, "b": b}, gt, PIXEL_UM, (64, 64))
    n_b = score_movie(b, gt, PIXEL_UM, (64, 64)).n_true_positive
    assert len(e["a"]) == len(e["b"]) == n_b > 0    # the particles b found (a found all)
    np.testing.assert_allclose(e["a"], np.tile([0.2, 0.0], (n_b, 1)), atol=1e-9)
    np.testing.assert_allclose(e["b"], np.tile([0.0, -0.1], (n_b, 1)), atol=1e-9)


def test_best_f1_threshold_separates_spots_from_noise_scores() -> None:
    movie = simulate_movie(MovieConfig(shape_px=(64, 64), n_frames=5, n_particles=10,
                                       pixel_size_um=PIXEL_UM, d_um2_s=0.05, snr=15.0), seed=9)
    gt = movie.ground_truth
    rng = np.random.default_rng(0)
    per_frame = []
    for t in range(5):
        truth = gt[gt.frame == t][["x_um", "y_um"]].to_numpy() / PIXEL_UM
        noise = rng.uniform(5, 59, size=(6, 2))  # spurious detections, low scores 0-1
        xy = np.vstack([truth, noise])
        per_frame.append((xy, np.concatenate([rng.uniform(5, 9, len(truth)),
                                              rng.uniform(0, 1, len(noise))])))
    thr = best_f1_threshold(per_frame, gt, PIXEL_UM, (64, 64))
    assert 1.0 <= thr < 5.0  # the middle of the F1 plateau lies in the gap between the two
    kept = score_movie([xy[s > thr] for xy, s in per_frame], gt, PIXEL_UM, (64, 64))
    assert kept.f1 == 1.0
    with pytest.raises(ValueError, match="no detections"):
        best_f1_threshold([(np.zeros((0, 2)), np.zeros(0))], gt, PIXEL_UM, (64, 64))
