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
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import torch
from numpy.typing import NDArray

from livespt.models.simulate.camera import Camera, smooth_background_map
from livespt.models.simulate.movie import MovieConfig, simulate_movie
from livespt.server.cli.main import main
from livespt.server.cli.stream import camera_from_movie
from livespt.server.client import LiveSptClient
from livespt.server.grpc_gen.livespt.v1 import livespt_pb2 as pb
from livespt.server.grpc_gen.livespt.v1 import livespt_pb2_grpc as pb_grpc
from livespt.server.io.tiff import write_movie
from livespt.server.pipeline.camera import (
    CAMERA_FIELDS,
    QUANTIZATION_ADU2,
    REPEAT_FRAMES,
    CameraModel,
    RepeatedPixels,
    camera_record,
    check_gain,
    estimate_camera,
)
from livespt.server.service.app import EmbeddedServer, ServerOptions
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
    assert {k: server_side["camera"][k] for k in server_cam} == server_cam
    assert server_side["camera"]["held_frames"] == 0  # the CLI estimated: no second try
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


# ------------------------------------------------ the server estimates an unset camera
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    srv = EmbeddedServer(ServerOptions(port=0, out_root=tmp_path_factory.mktemp("sessions"),
                                       device="cpu", models=()))
    srv.start()
    yield srv
    srv.stop()


def _server_summary(result: Any) -> dict[str, Any]:
    return json.loads((Path(result.server_output_dir) / "summary.json").read_text())


@pytest.mark.parametrize(("generator", "gain", "offset"),
                         [("numpy", 0.5, 0.0), ("simulator", 2.0, 100.0),
                          ("numpy", 10.0, 1000.0)])
def test_the_server_estimates_an_unset_camera_from_the_first_frames(
    server: EmbeddedServer, generator: str, gain: float, offset: float
) -> None:
    """A gRPC client that gives no camera: estimated from 30 held frames, then analysed."""
    frames = GENERATORS[generator](21, gain, offset, n_frames=40)
    settings = StreamSettings(pixel_size_um=0.1, frame_interval_s=0.05)
    with LiveSptClient(server.target) as client:
        # 8 frames in flight by default: the client must allow the 30 held ones on top.
        result = client.stream(iter(frames), settings)
    assert result.frames_acked == 40
    assert json.loads(result.effective_config_json)["held_frames"] == 30
    summary = _server_summary(result)
    cam = summary["camera"]
    assert cam["held_frames"] == 30
    assert cam["source"] == {"offset_adu": "estimated", "gain_adu_per_e": "estimated",
                             "read_noise_e": "default"}
    se = cam["standard_error"]
    assert abs(cam["gain_adu_per_e"] - gain) < Z * se["gain_adu_per_e"]
    assert abs(cam["offset_adu"] - (offset - gain * READ_NOISE_E**2)) < Z * se["offset_adu"]
    assert cam["estimate"]["n_frames"] == 30
    assert summary["config"]["camera"]["source"]["gain_adu_per_e"] == "to be estimated"
    said = [w for w in result.warnings if w.startswith("CAMERA_ESTIMATE: ")]
    assert len(said) == 1 and "camera from 30 frames (photon transfer" in said[0]
    assert not [w for w in result.warnings if w.startswith("CAMERA_MODEL")]

    # The detections are those of the same stream told the true camera (the estimate's
    # offset assumes 0 e- of read noise; give the same to both).
    told = replace(settings, detector=DetectorSettings(
        camera_offset_adu=cam["offset_adu"], camera_gain_adu_per_e=gain, read_noise_e=0.0))
    with LiveSptClient(server.target) as client:
        truth = client.stream(iter(frames), told)
    assert _server_summary(truth)["camera"]["held_frames"] == 0
    ours = np.array([(p.frame, p.x_um, p.y_um, p.precision_um) for p in result.points])
    theirs = np.array([(p.frame, p.x_um, p.y_um, p.precision_um) for p in truth.points])
    assert len(ours) == len(theirs) > 200
    assert np.array_equal(ours[:, 0], theirs[:, 0])
    # Positions barely move with the gain (the fit's weights); precisions scale with
    # 1/sqrt(photons), i.e. sqrt(gain) at most: within the gain's own error.
    assert np.max(np.abs(ours[:, 1:3] - theirs[:, 1:3])) < 0.01  # um, 0.1 px
    rel = np.median(ours[:, 3] / theirs[:, 3])
    assert abs(rel - 1) < Z * se["gain_adu_per_e"] / gain


def test_a_short_stream_is_estimated_from_what_it_has_and_a_tiny_one_keeps_the_defaults(
    server: EmbeddedServer,
) -> None:
    frames = numpy_movie(22, 2.0, 100.0, n_frames=10)
    settings = StreamSettings(pixel_size_um=0.1, frame_interval_s=0.05)
    with LiveSptClient(server.target) as client:
        result = client.stream(iter(frames), settings)
        tiny = client.stream(iter(frames[:3]), settings)
    assert result.frames_acked == 10
    cam = _server_summary(result)["camera"]
    assert cam["estimate"]["n_frames"] == 10 and cam["source"]["gain_adu_per_e"] == "estimated"
    assert tiny.frames_acked == 3
    cam = _server_summary(tiny)["camera"]
    assert cam["source"] == dict.fromkeys(CAMERA_FIELDS, "default")
    assert "3 frames, fewer than the 4" in cam["description"]
    assert any("fewer than the 4" in w for w in tiny.warnings)


def test_a_paused_acquisition_is_estimated_from_the_frames_of_its_first_seconds(
    server: EmbeddedServer,
) -> None:
    """6 frames, then a pause: their results come during the pause (CAMERA_HOLD_S)."""
    frames = numpy_movie(26, 2.0, 100.0, n_frames=10)
    release, acked = threading.Event(), threading.Event()
    out: dict[str, Any] = {}

    def acquisition() -> Iterator[NDArray[np.generic]]:
        yield from frames[:6]
        release.wait(60)
        yield from frames[6:]

    def on_update(upd: pb.AnalysisUpdate) -> None:
        if upd.WhichOneof("update") == "frame" and upd.frame.index == 5:
            acked.set()

    def client() -> None:
        with LiveSptClient(server.target) as c:
            out["result"] = c.stream(acquisition(), StreamSettings(
                pixel_size_um=0.1, frame_interval_s=0.05), on_update=on_update)

    th = threading.Thread(target=client)
    th.start()
    try:
        assert acked.wait(30), "the held frames waited for the paused acquisition"
    finally:
        release.set()
        th.join(60)
    result = out["result"]
    assert result.frames_acked == 10
    cam = _server_summary(result)["camera"]
    assert cam["held_frames"] == 30 and cam["estimate"]["n_frames"] == 6
    assert cam["source"]["gain_adu_per_e"] == "estimated"


def test_estimation_off_or_fully_given_holds_nothing(server: EmbeddedServer) -> None:
    frames = numpy_movie(23, 2.0, 100.0, n_frames=6)
    with LiveSptClient(server.target) as client:
        off = client.stream(iter(frames), StreamSettings(
            pixel_size_um=0.1, frame_interval_s=0.05,
            detector=DetectorSettings(camera_estimate_frames=0)))
        given = client.stream(iter(frames), StreamSettings(
            pixel_size_um=0.1, frame_interval_s=0.05, detector=DetectorSettings(
                camera_offset_adu=100.0, camera_gain_adu_per_e=2.0, read_noise_e=1.5,
                camera_estimate_frames=50)))
    for result, source in ((off, "default"), (given, "given")):
        assert result.frames_acked == 6
        cam = _server_summary(result)["camera"]
        assert cam["held_frames"] == 0 and cam["estimate"] is None
        assert cam["source"] == dict.fromkeys(CAMERA_FIELDS, source)
        assert not [w for w in result.warnings if w.startswith("CAMERA_ESTIMATE")]


def test_8_bit_bright_field_frames_keep_the_defaults_and_are_flagged(
    server: EmbeddedServer,
) -> None:
    """Nothing to estimate from (flat, dim, 8 bit): defaults, the reason, and the checks."""
    frames = numpy_movie(24, 1.0, 10.0, read_noise=0.5, background=20.0, flat=True,
                         bits=8, n_frames=12)
    with LiveSptClient(server.target) as client:
        result = client.stream(iter(frames), StreamSettings(pixel_size_um=0.1,
                                                            frame_interval_s=0.05))
    cam = _server_summary(result)["camera"]
    assert cam["source"]["gain_adu_per_e"] == "default"
    assert "background is too flat for the gain" in cam["description"]
    model = [w for w in result.warnings if w.startswith("CAMERA_MODEL: ")]
    assert any("8-bit frames with the default offset" in w for w in model), result.warnings


def test_a_bad_frame_while_frames_are_held_ends_the_stream_after_their_results(
    server: EmbeddedServer,
) -> None:
    frames = numpy_movie(25, 2.0, 100.0, n_frames=8, size=32)
    cfg = pb.StreamConfig(pixel_size_um=0.1, frame_interval_s=0.05,
                          pixel_type=pb.PIXEL_TYPE_UINT16, height=32, width=32)
    reqs = [pb.StreamRequest(config=cfg)]
    reqs += [pb.StreamRequest(frame=pb.Frame(index=i, data=f.tobytes()))
             for i, f in enumerate(frames[:5])]
    reqs.append(pb.StreamRequest(frame=pb.Frame(index=5, data=b"\0" * 7)))
    channel = grpc.insecure_channel(server.target)
    updates = []
    with pytest.raises(grpc.RpcError) as err:
        for upd in pb_grpc.LiveSptStub(channel).StreamFrames(iter(reqs), timeout=60):
            updates.append(upd)
    channel.close()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "frame.data has 7 bytes" in err.value.details()
    assert updates[0].started.held_frames == 30
    assert [u.frame.index for u in updates if u.WhichOneof("update") == "frame"] == [0, 1, 2, 3, 4]


def test_camera_estimate_frames_is_validated_and_held_frames_fit_in_memory() -> None:
    for bad in (1, 3, 201):
        with pytest.raises(ValueError, match=r"detector\.camera_estimate_frames must be 0"):
            DetectorSettings(camera_estimate_frames=bad)
    cfg = settings_to_proto(StreamSettings(pixel_size_um=0.1, frame_interval_s=0.05,
                                           height=32, width=32))
    cfg.detector.camera_estimate_frames = 2
    with pytest.raises(ValueError, match=r"config\.detector\.camera_estimate_frames"):
        settings_from_proto(cfg, Limits())
    big = StreamSettings(pixel_size_um=0.1, frame_interval_s=0.05, pixel_type="float32",
                         height=4096, width=4096,
                         detector=DetectorSettings(camera_estimate_frames=100))
    assert big.held_frames == 4  # 64 MiB frames: 4 of them, not 100
    assert StreamSettings(pixel_size_um=0.1, frame_interval_s=0.05, height=512,
                          width=512).held_frames == 30


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
