"""The camera model estimated from the frames (photon transfer), checked, and used by the CLI.

Movies come from two generators: the project's simulator (smooth log-normal
background map) and a small independent numpy generator written here (a
gradient plus a Gaussian blob of background, Gaussian spots on random walks),
so the estimator is not only validated on data made by our own simulator.
Every tolerance is the estimator's own standard error (4 of them), checked for
calibration in a Monte-Carlo test.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.typing import NDArray

from livespt.models.simulate.camera import Camera, smooth_background_map
from livespt.models.simulate.movie import MovieConfig, simulate_movie
from livespt.server.cli.main import main
from livespt.server.cli.stream import camera_from_movie, camera_record
from livespt.server.grpc_gen.livespt.v1 import livespt_pb2 as pb
from livespt.server.io.tiff import write_movie
from livespt.server.pipeline.camera import (
    CAMERA_FIELDS,
    QUANTIZATION_ADU2,
    REPEAT_FRAMES,
    CameraModel,
    RepeatedPixels,
    check_gain,
    estimate_camera,
)
from livespt.server.service.settings import DetectorSettings, Limits, StreamSettings
from livespt.server.service.wire import settings_from_proto, settings_to_proto

READ_NOISE_E = 1.5
Z = 4.0  # standard errors allowed between an estimate and the truth


def numpy_movie(seed: int, gain: float, offset: float, read_noise: float = READ_NOISE_E, *,
                background: float = 20.0, flat: bool = False, n_frames: int = 30,
                size: int = 128, n_spots: int = 10, photons: float = 800.0,
                bits: int = 16) -> NDArray[np.generic]:
    """An independent movie: photons -> Poisson -> gain, offset, read noise -> round, clip."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    if flat:
        bg = np.full((size, size), background)
    else:
        blob = np.exp(-((xx - 0.3 * size) ** 2 + (yy - 0.6 * size) ** 2) / (2 * (0.15 * size) ** 2))
        bg = background * (0.4 + 1.2 * xx / size + blob)
    pos = rng.uniform(5, size - 5, (n_spots, 2))
    out = np.empty((n_frames, size, size))
    for t in range(n_frames):
        pos += rng.normal(0, 1.5, pos.shape)
        signal = np.zeros((size, size))
        for py, px in pos:
            signal += photons / (2 * np.pi * 1.3**2) * np.exp(
                -((yy - py) ** 2 + (xx - px) ** 2) / (2 * 1.3**2))
        electrons = rng.poisson(bg + signal)
        out[t] = gain * electrons + offset + rng.normal(0, gain * read_noise, (size, size))
    out = np.clip(np.round(out), 0, 2**bits - 1)
    return out.astype(np.uint8 if bits == 8 else np.uint16)


def simulated_movie(seed: int, gain: float, offset: float, read_noise: float = READ_NOISE_E, *,
                    background: float = 20.0, cv: float = 0.5, n_frames: int = 30,
                    size: int = 128, bits: int = 16) -> NDArray[np.generic]:
    """The project's simulator: diffusing particles on a smooth log-normal background."""
    gen = torch.Generator().manual_seed(seed + 1000)
    bmap = smooth_background_map((size, size), 12.0, cv, generator=gen) if cv > 0 else None
    cam = Camera(background_photons=background, read_noise_e=read_noise, gain_adu_per_e=gain,
                 offset_adu=offset, bit_depth=bits, background_map=bmap)
    cfg = MovieConfig(shape_px=(size, size), n_frames=n_frames, n_particles=10,
                      pixel_size_um=0.1, frame_interval_s=0.05, d_um2_s=0.5, snr=8.0, camera=cam)
    frames = simulate_movie(cfg, seed=seed).frames
    return frames.astype(np.uint8) if bits == 8 else frames


GENERATORS = {"numpy": numpy_movie, "simulator": simulated_movie}


@pytest.mark.parametrize("generator", sorted(GENERATORS))
@pytest.mark.parametrize("offset", [0.0, 100.0, 1000.0])
@pytest.mark.parametrize("gain", [0.5, 2.0, 10.0])
def test_gain_and_offset_are_recovered_within_their_standard_errors(
    generator: str, gain: float, offset: float
) -> None:
    frames = GENERATORS[generator](1, gain, offset)
    est = estimate_camera(frames)
    g = est.gain_adu_per_e
    assert g.identifiable and g.value is not None and g.se is not None, g.note
    assert g.se / gain < 0.10
    assert abs(g.value - gain) < Z * g.se
    # Without the read noise, the intercept gives the offset that assumes 0 e-:
    # the true offset minus g r^2, which the note says.
    o = est.offset_adu
    assert o.identifiable and o.value is not None and o.se is not None
    assert abs(o.value - (offset - gain * READ_NOISE_E**2)) < Z * o.se
    assert "read noise 0 e-" in o.note and "g^2 r^2 - g o" in o.note
    assert not est.read_noise_e.identifiable and "needs the offset" in est.read_noise_e.note
    assert est.quantization_adu2 == QUANTIZATION_ADU2
    cam = est.camera()
    assert cam.source == {"offset_adu": "estimated", "gain_adu_per_e": "estimated",
                          "read_noise_e": "default"}
    assert cam.gain_adu_per_e == g.value and cam.read_noise_e == 0.0


@pytest.mark.parametrize("generator", sorted(GENERATORS))
def test_a_declared_read_noise_gives_the_offset_and_a_declared_offset_the_read_noise(
    generator: str,
) -> None:
    gain, offset = 2.0, 100.0
    frames = GENERATORS[generator](2, gain, offset)
    with_rn = estimate_camera(frames, read_noise_e=READ_NOISE_E)
    o = with_rn.offset_adu
    assert o.value is not None and o.se is not None
    assert abs(o.value - offset) < Z * o.se
    assert with_rn.camera().source["read_noise_e"] == "given"

    with_off = estimate_camera(frames, offset_adu=offset)
    r = with_off.read_noise_e
    assert r.identifiable and r.value is not None and r.se is not None
    assert abs(r.value - READ_NOISE_E) < Z * r.se and r.se < 0.5
    assert not with_off.offset_adu.identifiable
    assert with_off.camera().source == {"offset_adu": "given", "gain_adu_per_e": "estimated",
                                        "read_noise_e": "estimated"}


@pytest.mark.slow
def test_standard_errors_are_calibrated() -> None:
    # Over independent movies, (estimate - truth) / se is about N(0, 1): the
    # standard errors are neither optimistic nor wasteful. With n = 16 the mean
    # of z has SD 0.25 and the sample SD of z about 0.18: bounds of 3 of those.
    n = 16
    for generator in (numpy_movie, simulated_movie):
        z = []
        for seed in range(100, 100 + n):
            g = estimate_camera(generator(seed, 2.0, 100.0, size=96, n_frames=24)).gain_adu_per_e
            assert g.value is not None and g.se is not None
            z.append((g.value - 2.0) / g.se)
        assert abs(np.mean(z)) < 3 / np.sqrt(n)
        assert 0.5 < np.std(z, ddof=1) < 1.6


@pytest.mark.parametrize("generator", sorted(GENERATORS))
def test_a_flat_dim_background_gives_not_identifiable_rather_than_a_number(
    generator: str,
) -> None:
    if generator == "numpy":
        frames = numpy_movie(3, 2.0, 100.0, background=3.0, flat=True)
    else:
        frames = simulated_movie(3, 2.0, 100.0, background=3.0, cv=0.0)
    est = estimate_camera(frames)
    for name in CAMERA_FIELDS:
        q = est.quantity(name)
        assert not q.identifiable and q.value is None and q.se is None
    assert "too flat" in est.gain_adu_per_e.note
    assert est.reliability is not None and est.reliability < 0.5
    assert "needs the gain" in est.offset_adu.note
    assert set(est.camera().source.values()) == {"default"}
    json.dumps(est.to_dict(), allow_nan=False)  # strict JSON, no NaN
    # With the gain declared, the same flat frames do give the offset.
    with_gain = estimate_camera(frames, gain_adu_per_e=2.0)
    o = with_gain.offset_adu
    assert o.identifiable and o.value is not None and o.se is not None
    assert abs(o.value - (100.0 - 2.0 * READ_NOISE_E**2)) < Z * o.se


def test_bright_field_like_frames_are_not_identifiable() -> None:
    # Dark particles on a bright, flat, transmitted-light background (8-bit).
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[0:128, 0:128]
    pos = rng.uniform(10, 118, (8, 2))
    frames = np.empty((30, 128, 128))
    for t in range(30):
        pos += rng.normal(0, 1.5, pos.shape)
        transmitted = np.ones((128, 128))
        for py, px in pos:
            transmitted *= 1 - 0.6 * np.exp(-((yy - py) ** 2 + (xx - px) ** 2) / 8.0)
        frames[t] = 0.05 * rng.poisson(4000 * transmitted) + 10 + rng.normal(0, 1, (128, 128))
    est = estimate_camera(np.clip(np.round(frames), 0, 255).astype(np.uint8))
    assert not est.gain_adu_per_e.identifiable and "too flat" in est.gain_adu_per_e.note
    assert set(est.camera().source.values()) == {"default"}


def test_an_over_dispersed_background_is_flagged_not_fitted() -> None:
    # A background that fluctuates beyond Poisson (log-normal, 20 % per pixel and
    # frame) adds variance growing as the level squared: a straight line through
    # it would give a gain 2.5x too high.
    gen = torch.Generator().manual_seed(12)
    bmap = smooth_background_map((128, 128), 12.0, 0.5, generator=gen)
    cam = Camera(background_photons=20.0, read_noise_e=READ_NOISE_E, gain_adu_per_e=2.0,
                 offset_adu=100.0, background_map=bmap, background_cv=0.2)
    cfg = MovieConfig(shape_px=(128, 128), n_frames=30, n_particles=10, pixel_size_um=0.1,
                      frame_interval_s=0.05, d_um2_s=0.5, snr=8.0, camera=cam)
    est = estimate_camera(simulate_movie(cfg, seed=12).frames)
    assert not est.gain_adu_per_e.identifiable
    assert "faster than linearly" in est.gain_adu_per_e.note
    assert est.curvature_z is not None and est.curvature_z > 3


def test_too_few_counts_are_not_identifiable_and_say_why() -> None:
    # Gain 0.1 ADU/e- on 8 bits: the noise is below half an ADU, rounding dominates.
    est = estimate_camera(numpy_movie(5, 0.1, 5.0, 1.0, background=3.0, bits=8))
    for name in CAMERA_FIELDS:
        assert not est.quantity(name).identifiable
    assert "below half an ADU" in est.gain_adu_per_e.note


@pytest.mark.parametrize("generator", sorted(GENERATORS))
def test_8_bit_frames(generator: str) -> None:
    frames = GENERATORS[generator](6, 1.0, 10.0, background=40.0, bits=8)
    assert frames.dtype == np.uint8
    est = estimate_camera(frames, offset_adu=10.0)
    assert est.quantization_adu2 == QUANTIZATION_ADU2
    g, r = est.gain_adu_per_e, est.read_noise_e
    assert g.value is not None and g.se is not None and r.value is not None and r.se is not None
    assert abs(g.value - 1.0) < Z * g.se and g.se < 0.1
    # The read noise is only right because the 1/12 ADU^2 of rounding is taken out.
    assert abs(r.value - READ_NOISE_E) < Z * r.se


def test_saturated_tiles_are_left_out() -> None:
    # Offset 200 on 8 bits: the bright half of the background saturates at 255.
    frames = numpy_movie(7, 1.0, 200.0, background=30.0, bits=8)
    assert (frames == 255).mean() > 0.02
    est = estimate_camera(frames)
    g = est.gain_adu_per_e
    assert g.value is not None and g.se is not None
    assert abs(g.value - 1.0) < Z * g.se


def test_an_inconsistent_declared_gain_is_flagged_naming_the_field() -> None:
    frames = simulated_movie(8, 2.0, 100.0)
    est = estimate_camera(frames, gain_adu_per_e=5.0)
    # The offset would rest on a gain the frames contradict: not estimated.
    assert not est.offset_adu.identifiable and "disagrees" in est.offset_adu.note
    declared = CameraModel.resolve(None, 5.0, None)
    [warning] = check_gain(declared, est, "config.detector.")
    assert warning.startswith("config.detector.camera_gain_adu_per_e = 5 (given)")
    g = est.gain_adu_per_e
    assert f"{g.value:.3g} ± {g.se:.2g} ADU/e-" in warning and "2.5x lower" in warning
    # Frames work as well as an estimate; a consistent gain, an estimated one, or
    # frames that do not identify the gain give no warning.
    assert check_gain(CameraModel.resolve(None, 5.0, None), frames) == [warning.replace(
        "config.detector.", "")]
    assert check_gain(CameraModel.resolve(None, 2.1, None), est) == []
    assert check_gain(CameraModel.resolve(None, 5.0, None, ["gain_adu_per_e"]), est) == []
    flat = simulated_movie(8, 2.0, 100.0, background=3.0, cv=0.0)
    assert check_gain(declared, flat) == []


def test_bad_frames_and_parameters_raise_or_are_not_identifiable() -> None:
    with pytest.raises(ValueError, match=r"frames must have shape \(T, H, W\)"):
        estimate_camera(np.zeros((16, 16)))
    bad = np.ones((5, 16, 16))
    bad[2, 3, 3] = np.nan
    with pytest.raises(ValueError, match="frames must be finite"):
        estimate_camera(bad)
    with pytest.raises(ValueError, match="gain_adu_per_e must be > 0"):
        estimate_camera(np.ones((5, 16, 16)), gain_adu_per_e=0.0)
    est = estimate_camera(np.ones((3, 16, 16), np.uint16))
    assert "at least 4 frames" in est.gain_adu_per_e.note
    est = estimate_camera(np.ones((6, 4, 4), np.uint16))
    assert "smaller than one 8 x 8 px tile" in est.gain_adu_per_e.note
    # Frames are read lazily: a generator works and only max_frames are taken.
    frames = numpy_movie(9, 2.0, 100.0, n_frames=12)
    lazy = estimate_camera((f for f in frames), max_frames=8)
    assert lazy.n_frames == 8
    assert lazy.to_dict() == estimate_camera(frames[:8]).to_dict()


def test_estimated_source_travels_on_the_wire_and_is_validated() -> None:
    det = DetectorSettings(camera_offset_adu=98.0, camera_gain_adu_per_e=2.0,
                           camera_estimated=("camera_gain_adu_per_e", "camera_offset_adu"))
    assert det.camera().source == {"offset_adu": "estimated", "gain_adu_per_e": "estimated",
                                   "read_noise_e": "default"}
    s = StreamSettings(pixel_size_um=0.1, frame_interval_s=0.05, height=8, width=8,
                       detector=det)
    back = settings_from_proto(settings_to_proto(s), Limits())
    assert back.detector.camera() == det.camera()
    assert back.to_dict()["camera"]["source"]["gain_adu_per_e"] == "estimated"
    with pytest.raises(ValueError, match=r"^detector.camera_estimated names read_noise_e"):
        DetectorSettings(camera_estimated=("read_noise_e",))
    with pytest.raises(ValueError, match=r"^detector.camera_estimated: unknown field 'gain'"):
        DetectorSettings(camera_gain_adu_per_e=2.0, camera_estimated=("gain",))
    cfg = settings_to_proto(s)
    cfg.detector.camera_estimated.append("read_noise_e")
    with pytest.raises(ValueError, match=r"^config.detector.camera_estimated names read_noise_e"):
        settings_from_proto(cfg, Limits())
    assert isinstance(cfg, pb.StreamConfig)


def test_client_record_without_estimation() -> None:
    frames = simulated_movie(10, 2.0, 100.0, n_frames=8, size=32)
    cam, est, warnings = camera_from_movie(frames, None, 3.0, None, estimate=False)
    assert est is None and warnings == []
    record = camera_record(cam, est)
    assert record["source"] == {"offset_adu": "default", "gain_adu_per_e": "given",
                                "read_noise_e": "default"}
    assert record["note"]["offset_adu"] == "estimation off" and record["estimate"] is None
    assert record["standard_error"] == dict.fromkeys(CAMERA_FIELDS)


def test_stream_estimates_the_camera_and_records_values_sources_and_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gain, offset = 2.0, 100.0
    movie = write_movie(tmp_path / "movie.tif", simulated_movie(11, gain, offset, size=96),
                        0.1, 0.05)
    assert main(["stream", str(movie), "--embedded", "--out", str(tmp_path / "a")]) == 0
    printed = capsys.readouterr().out
    assert "camera from 30 frames (photon transfer" in printed
    assert "ADU/e- (estimated)" in printed
    assert "read noise 0 e- (default: needs the offset" in printed
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    cam = summary["camera"]
    assert cam["source"] == {"offset_adu": "estimated", "gain_adu_per_e": "estimated",
                             "read_noise_e": "default"}
    se = cam["standard_error"]
    assert abs(cam["gain_adu_per_e"] - gain) < Z * se["gain_adu_per_e"]
    assert abs(cam["offset_adu"] - (offset - gain * READ_NOISE_E**2)) < Z * se["offset_adu"]
    assert se["read_noise_e"] is None and "needs the offset" in cam["note"]["read_noise_e"]
    assert cam["estimate"]["method"] == "photon_transfer"
    # The server analysed with the same values and records them as estimated too.
    server_cam = summary["effective_config"]["camera"]
    assert server_cam["source"] == cam["source"]
    assert server_cam["gain_adu_per_e"] == pytest.approx(cam["gain_adu_per_e"])
    server_side = json.loads(
        (Path(summary["server_summary"]["output_dir"]) / "summary.json").read_text())
    assert server_side["camera"] == server_cam
    assert not [w for w in summary["warnings"] if "camera_gain" in w]

    # A given gain the frames contradict: used as given, and flagged by name.
    assert main(["stream", str(movie), "--embedded", "--camera-gain", "5",
                 "--out", str(tmp_path / "b")]) == 0
    assert "warning: CAMERA_MODEL: config.detector.camera_gain_adu_per_e = 5" in (
        capsys.readouterr().out)
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["camera"]["source"]["gain_adu_per_e"] == "given"
    assert summary["camera"]["gain_adu_per_e"] == 5.0
    flagged = [w for w in summary["warnings"] if "camera_gain_adu_per_e" in w]
    assert len(flagged) == 1 and flagged[0].startswith("CAMERA_MODEL: ")


def test_stream_without_estimation_uses_the_defaults_and_says_so(tmp_path: Path) -> None:
    movie = write_movie(tmp_path / "movie.tif", simulated_movie(12, 2.0, 100.0, size=64,
                                                                n_frames=12), 0.1, 0.05)
    assert main(["stream", str(movie), "--embedded", "--no-camera-estimate",
                 "--out", str(tmp_path / "a")]) == 0
    cam = json.loads((tmp_path / "a" / "summary.json").read_text())["camera"]
    assert cam["source"] == dict.fromkeys(CAMERA_FIELDS, "default")
    assert cam["estimate"] is None and cam["note"]["gain_adu_per_e"] == "estimation off"


# --------------------------------------------------------------- repeated pixels
@pytest.mark.parametrize(("gain", "offset", "bits"), [(0.5, 100.0, 16), (2.0, 100.0, 16),
                                                      (10.0, 1000.0, 16), (1.0, 10.0, 8)])
def test_camera_noise_repeats_pixels_as_often_as_the_model_predicts(
        gain: float, offset: float, bits: int) -> None:
    # Independent frames from a camera that the model describes: the fraction of pixels
    # equal to the previous frame's value is the predicted one within Z binomial standard
    # errors (20 frame pairs of 32 x 32 compared pixels) plus 5 % for the approximation of
    # the prediction, and nothing is flagged.
    movie = numpy_movie(3, gain, offset, bits=bits, n_frames=21)
    check = RepeatedPixels(CameraModel.resolve(offset, gain, READ_NOISE_E))
    assert all(check.add(f) is None for f in movie)
    s = check.summary()
    print(f"\ngain {gain}, {bits}-bit: repeated {s['repeated_fraction']}, predicted "
          f"{s['predicted_fraction']}")
    assert s["frame_pairs"] == REPEAT_FRAMES and not s["warned"]
    n = REPEAT_FRAMES * (movie.shape[1] // 4) * (movie.shape[2] // 4)
    p = s["predicted_fraction"]
    assert abs(s["repeated_fraction"] - p) <= Z * np.sqrt(p * (1 - p) / n) + 0.05 * p


def test_frames_that_repeat_their_pixels_are_flagged_once_and_floats_are_not_checked() -> None:
    # Compressed or duplicated frames: 60 % of the pixels copied from the previous frame
    # (a lossy video codec keeps unchanged blocks; the real movie of docs/accuracy.md
    # repeats 59 % where its camera model predicts 2.5 %).
    movie = numpy_movie(4, 2.0, 100.0, n_frames=21)
    rng = np.random.default_rng(5)
    for t in range(1, movie.shape[0]):
        keep = rng.random(movie.shape[1:]) < 0.6
        movie[t][keep] = movie[t - 1][keep]
    check = RepeatedPixels(CameraModel.resolve(100.0, 2.0, READ_NOISE_E))
    warnings = [w for f in movie if (w := check.add(f)) is not None]
    assert len(warnings) == 1
    assert "repeat the previous frame's value exactly" in warnings[0]
    assert "compressed, denoised or duplicated" in warnings[0]
    assert check.summary()["warned"] and check.summary()["repeated_fraction"] > 0.5
    floats = RepeatedPixels(CameraModel.resolve(100.0, 2.0, READ_NOISE_E))
    assert all(floats.add(f.astype(np.float32)) is None for f in movie)
    assert floats.summary()["checked"] is False and floats.done
