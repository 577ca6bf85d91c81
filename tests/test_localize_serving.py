"""Localization as a served capability: settings, wire, the Localize RPC and livespt localize.

The networks here are small and untrained (what they find does not matter): these tests
check the plumbing: ranges and error messages, determinism across batching and chunking,
the same answer in-process and over a real server on 127.0.0.1, files and calibration.
The trained model's accuracy is measured by ``benchmarks/bench_localizer.py`` and its
card by ``tests/test_shipped_weights.py``.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
from pathlib import Path

import grpc
import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from imagej_helpers import IJ_JAR, require_imagej

from livespt.models.ddpm.diffusion import Schedule
from livespt.models.ddpm.localizer import Localizer, load, save, write_card
from livespt.models.ddpm.networks import ConditionalUNet, KdeNet, KdeNetConfig, UNetConfig
from livespt.models.localize.photometry import box_photons
from livespt.models.psf import render_gaussian_spots
from livespt.models.simulate import simulate_smlm
from livespt.server.cli.main import main
from livespt.server.client import LiveSptClient
from livespt.server.grpc_gen.livespt.v1 import livespt_pb2 as pb
from livespt.server.io.tiff import read_calibration, write_movie
from livespt.server.pipeline.localize import (
    EMITTER_COLUMNS,
    PSF_MIN_SPOTS,
    LocalizeSettings,
    TrainedOn,
    check_frames,
    join_localizations,
    localize_frames,
    psf_sd_px,
)
from livespt.server.service import wire
from livespt.server.service.app import EmbeddedServer, ServerOptions
from livespt.server.service.settings import Limits

MAP_MACRO = Path(__file__).parent / "imagej" / "map_origin.ijm"


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    loc = Localizer(KdeNet(KdeNetConfig(channels=4, dilations=(1, 2))),
                    ConditionalUNet(UNetConfig(channels=4, multipliers=(1, 2),
                                               attention_heads=1, time_dim=16)),
                    Schedule())
    path = save(loc, tmp_path_factory.mktemp("w") / "tiny.pt")
    write_card(path, {"name": "tiny", "training": {"data": {"i0_range": [100.0, 1000.0],
                                                             "sigma_x_range": [0.8, 1.2]}}})
    return path


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    rng = np.random.default_rng(1)
    return (100 + 2 * rng.poisson(5, (5, 20, 24))).astype(np.uint16)


@pytest.fixture(scope="module")
def server(weights: Path, tmp_path_factory: pytest.TempPathFactory):
    srv = EmbeddedServer(ServerOptions(port=0, out_root=tmp_path_factory.mktemp("s"),
                                       device="cpu", models=(), localizer=str(weights)))
    srv.start()
    yield srv
    srv.stop()


def _draw(loc: Localizer):
    def draw(x: np.ndarray, s: LocalizeSettings, first: int):
        smp, est = loc.draw(torch.from_numpy(x), s.samples, s.sampler, s.steps, s.seed, first)
        return smp.numpy(), est.numpy()
    return draw


SETTINGS = LocalizeSettings(pixel_size_um=0.1, samples=3, steps=4, seed=7, offset_adu=100,
                            gain_adu_per_e=2.0)


# ------------------------------------------------------------------ settings and frames
@pytest.mark.parametrize(("kwargs", "message"), [
    ({"pixel_size_um": 0}, r"pixel_size_um must be in \(0, 100\] um, got 0"),
    ({"samples": 1}, r"samples must be in \[2, 256\], got 1"),
    ({"sampler": "slow"}, "sampler must be one of fast, ancestral"),
    ({"steps": 101}, r"steps must be in \[1, 100\]"),
    ({"threshold": 0}, r"threshold must be in \(0, 1\]"),
    ({"gain_adu_per_e": -1.0}, r"gain_adu_per_e must be in \(0, 10000\] ADU per electron"),
    ({"offset_adu": float("nan")}, "offset_adu must be in"),
])
def test_settings_out_of_range_name_the_field_and_the_range(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        LocalizeSettings(**{"pixel_size_um": 0.1, **kwargs})


def test_settings_errors_use_the_callers_names() -> None:
    with pytest.raises(ValueError, match="--samples must be in"):
        LocalizeSettings(pixel_size_um=0.1, samples=0, names={"samples": "--samples"})


@pytest.mark.parametrize(("value", "message"), [
    (np.zeros((2, 3, 20, 20)), r"must be \(frames, height, width\)"),
    (np.zeros((2, 6, 20)), "at least 8 x 8 pixels, got 6 x 20"),
    (np.zeros((0, 20, 20)), "no frame"),
    (np.where(np.arange(3)[:, None, None] == 2, np.nan, np.zeros((3, 9, 9))),
     "frame 2 holds NaN"),
    (np.array([["a"] * 9] * 9), "pixel type must be integer or floating point"),
])
def test_bad_frames_are_refused_with_the_reason(value, message) -> None:
    with pytest.raises(ValueError, match=message):
        check_frames(value)


# ------------------------------------------------------------------ determinism
def test_a_frames_samples_do_not_depend_on_how_the_movie_is_cut(weights: Path,
                                                                frames: np.ndarray) -> None:
    loc = load(weights)
    whole = loc.sample(frames.astype(np.float32), 3, n_steps=4, seed=7).numpy()
    cut = np.concatenate([
        loc.sample(frames[:2].astype(np.float32), 3, n_steps=4, seed=7, first_frame=0),
        loc.sample(frames[2:].astype(np.float32), 3, n_steps=4, seed=7, first_frame=2)])
    np.testing.assert_allclose(cut, whole, atol=1e-5)
    other = loc.sample(frames.astype(np.float32), 3, n_steps=4, seed=8).numpy()
    assert np.abs(other - whole).max() > 1e-3


# ------------------------------------------------------------------ photometry
def test_emitters_are_found_on_phis_estimate_with_the_samples_spread() -> None:
    """Samples with a spot at camera px (5, 6) jittered by 0.1 px, an estimate with it at
    (5.5, 6): the row is at the estimate's place, with the samples' SD."""
    rng = np.random.default_rng(4)
    shift = rng.normal(0.0, 0.1, (16, 2))
    fine = lambda v: torch.as_tensor(np.asarray(v, np.float64) * 4 + 1.5)[:, None]  # noqa: E731
    smp = render_gaussian_spots(fine(5 + shift[:, 0]), fine(6 + shift[:, 1]),
                                torch.ones(16, 1, dtype=torch.float64), (64, 64), 2.0)
    est = render_gaussian_spots(fine([5.5]), fine([6.0]), torch.ones(1, 1, dtype=torch.float64),
                                (64, 64), 2.0)

    def draw(x: np.ndarray, s: LocalizeSettings, first: int):  # type: ignore[no-untyped-def]
        return ((smp / smp.amax(dim=(1, 2), keepdim=True)).numpy()[None].astype(np.float32),
                (est / est.max()).numpy().astype(np.float32))

    out = localize_frames(draw, np.zeros((1, 16, 16), np.uint16),
                          LocalizeSettings(pixel_size_um=0.1), 4, 2.0)
    assert len(out.emitters) == 1
    row = out.emitters.iloc[0]
    assert row["x_um"] == pytest.approx(0.55, abs=2e-3)
    assert row["y_um"] == pytest.approx(0.60, abs=2e-3)
    assert row["x_sd_um"] == pytest.approx(0.1 * shift[:, 0].std(ddof=1), rel=0.05)


def test_box_photons_is_unbiased_on_a_gaussian_spot() -> None:
    from livespt.models.localize import expected_image, pack

    rng = np.random.default_rng(3)
    theta = pack([10.3], [9.6], [500.0], 4.0)
    mu = expected_image(theta, (20, 20), 0.92)
    n = 400
    est = np.array([box_photons(rng.poisson(mu).astype(float), [10.3], [9.6])[0]
                    for _ in range(n)])
    # Expected: the light in the box minus 25 times the mean of the ring (pixel 10, 10
    # holds the emitter): exact by linearity for Poisson counts.
    box, ring = mu[8:13, 8:13], mu[7:14, 7:14]
    expected = box.sum() - 25 * (ring.sum() - box.sum()) / 24
    assert 0.95 * 500 < expected < 0.96 * 500  # tails outside the box and in the ring
    assert abs(est.mean() - expected) < 4 * est.std(ddof=1) / np.sqrt(n)
    # Its SD: Poisson of the box, plus 25 times the ring mean's (24 pixels).
    sd = np.sqrt(box.sum() + 25 ** 2 * (ring.sum() - box.sum()) / 24 ** 2)
    assert est.std(ddof=1) == pytest.approx(sd, rel=4 / np.sqrt(2 * n))


# ------------------------------------------------------------------ wire
def test_request_round_trip_and_the_answers_size_limit() -> None:
    f = np.arange(2 * 10 * 12, dtype=np.uint16).reshape(2, 10, 12)
    req = wire.localize_request_to_proto(f, SETTINGS, first_frame=5)
    got, s, first = wire.localize_request_from_proto(req, Limits(), 4)
    np.testing.assert_array_equal(got, f)
    assert (s.samples, s.steps, s.seed, s.offset_adu, s.gain_adu_per_e, first) == (
        3, 4, 7, 100.0, 2.0, 5)
    req.data = req.data[:-1]
    with pytest.raises(ValueError, match=r"data must hold whole frames of 10 x 12 uint16 "
                                         r"\(240 bytes each\), got 479 bytes"):
        wire.localize_request_from_proto(req, Limits(), 4)
    small = Limits(max_frame_pixels=1000)  # messages up to 4,000 B + 1 MiB
    big = wire.localize_request_to_proto(np.zeros((50, 30, 30), np.uint16), SETTINGS)
    # 2 maps x 4 B x 16 map pixels per pixel x 900 pixels = 115,200 B a frame
    with pytest.raises(OverflowError, match="send at most 9 frames per call"):
        wire.localize_request_from_proto(big, small, 4)


# ------------------------------------------------------------------ the RPC
def _smlm_adu(n: int, sigma_px: float, seed: int) -> np.ndarray:
    """Frames of 1-5 emitters of 200 photons (background 2, read noise 1 e-), offset 100
    ADU, gain 2 ADU per electron."""
    b = simulate_smlm(n, n_emitters=(1, 5), sigma_x_px=sigma_px, background_photons=2.0,
                      read_noise_e=1.0, seed=seed)
    return (100 + 2 * b.frames.numpy()).astype(np.float32)


@pytest.mark.parametrize("sigma_px", [0.6, 0.92, 1.2, 1.5])
def test_the_psf_width_is_measured_from_the_frames(sigma_px: float) -> None:
    """16 frames (about 20-40 fits): the median fitted SD within 6 % (a fitted width at
    200 photons scatters by about 10 %, so the median of 20 by about 3 %)."""
    sd, n = psf_sd_px(_smlm_adu(16, sigma_px, 3), 100.0, 2.0)
    assert n >= 15
    assert sd == pytest.approx(sigma_px, rel=0.06)
    # unknown camera (the offset taken from the frame, gain 1): within the same tolerance
    assert psf_sd_px(_smlm_adu(16, sigma_px, 3))[0] == pytest.approx(sigma_px, rel=0.06)


def test_a_psf_outside_training_is_warned_of_with_what_to_do(weights: Path) -> None:
    draw, trained = _draw(load(weights)), TrainedOn(psf_sd_px=(0.8, 1.2))

    def codes(x: np.ndarray) -> dict[str, str]:
        return dict(localize_frames(draw, x, SETTINGS, 4, 3.0, 0, trained).warnings)

    assert "PSF_WIDTH" not in codes(_smlm_adu(16, 0.92, 4))
    narrow = codes(_smlm_adu(16, 0.6, 4))["PSF_WIDTH"]
    assert re.search(r"median PSF SD is 0\.6\d px .*trained on 0\.8 to 1\.2 px", narrow)
    assert "smaller pixel size" in narrow
    assert "bin the camera pixels 2 x 2" in codes(_smlm_adu(48, 2.0, 4))["PSF_WIDTH"]
    # no spots, no verdict; no ranges on the card, no check
    assert "PSF_WIDTH" not in codes(np.full((2, 20, 20), 100, np.float32))
    assert "PSF_WIDTH" not in dict(localize_frames(draw, _smlm_adu(16, 0.6, 4), SETTINGS,
                                                   4, 3.0, 0, TrainedOn()).warnings)
    assert PSF_MIN_SPOTS >= 10


def test_localize_over_a_real_server_equals_in_process(server: EmbeddedServer, weights: Path,
                                                       frames: np.ndarray) -> None:
    # Cut as the client cuts (2 frames a call): the same batch shapes, the same floats.
    here = join_localizations([localize_frames(_draw(load(weights)), frames[s:s + 2],
                                               SETTINGS, 4, 3.0, s) for s in (0, 2, 4)])
    with LiveSptClient(server.target) as client:
        there = client.localize(frames, SETTINGS, frames_per_call=2)
        info = client.info()
    assert there.mean.shape == (5, 80, 96)
    np.testing.assert_allclose(there.mean, here.mean, atol=1e-5)
    np.testing.assert_allclose(there.variance, here.variance, atol=1e-5)
    assert list(there.emitters.columns) == list(EMITTER_COLUMNS)
    assert len(there.emitters) == len(here.emitters)
    np.testing.assert_allclose(there.emitters[["x_um", "y_um", "photons"]].to_numpy(),
                               here.emitters[["x_um", "y_um", "photons"]].to_numpy(),
                               atol=1e-4)
    loc_info = [m for m in info.models if m.kind == "localizer"]
    assert [m.name for m in loc_info] == ["tiny"]
    with LiveSptClient(server.target) as client:  # the card's PSF range is checked there
        narrow = client.localize(_smlm_adu(16, 0.6, 4), SETTINGS, frames_per_call=16)
    assert dict(narrow.warnings)["PSF_WIDTH"].startswith("in frames 0-15, the spots' median")
    assert json.loads(loc_info[0].card_json)["upsample"] == 4


def test_concurrent_calls_are_batched_and_answered_as_alone(server: EmbeddedServer,
                                                            frames: np.ndarray) -> None:
    with LiveSptClient(server.target) as client:
        alone = [client.localize(frames[k:k + 1], SETTINGS, first_frame=k) for k in range(4)]
        batcher = server.running.service.localizer.batcher  # type: ignore[union-attr]
        before = batcher.stats
        results: dict[int, object] = {}

        def call(k: int) -> None:
            results[k] = client.localize(frames[k:k + 1], SETTINGS, first_frame=k)
        for _ in range(3):  # until at least two calls meet in one batch
            threads = [threading.Thread(target=call, args=(k,)) for k in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            after = batcher.stats
            if after["requests"] - before["requests"] > after["batches"] - before["batches"]:
                break
        assert after["requests"] - before["requests"] > after["batches"] - before["batches"]
    # Same noise, same network: equal up to float32 sums that depend on the batch's shape.
    for k in range(4):
        np.testing.assert_allclose(results[k].mean, alone[k].mean,  # type: ignore[attr-defined]
                                   atol=2e-4)


def test_a_callers_frames_are_dropped_when_it_leaves_before_they_are_drawn(
        server: EmbeddedServer, frames: np.ndarray) -> None:
    """Call A holds the batcher for seconds; B queues behind it and gives up (deadline):
    B's frames are never drawn (the batcher counts A alone), and the server goes on."""
    resident = server.running.service.localizer
    assert resident is not None
    batcher, draw = resident.batcher, resident.localizer.draw
    started = threading.Event()

    def watched(*args, **kwargs):  # type: ignore[no-untyped-def]
        started.set()
        return draw(*args, **kwargs)
    resident.localizer.draw = watched  # type: ignore[method-assign]
    slow = LocalizeSettings(pixel_size_um=0.1, samples=8, steps=100, seed=1)
    before = batcher.stats
    got: dict[str, object] = {}

    def call_a() -> None:
        with LiveSptClient(server.target) as client:
            got["a"] = client.localize(frames[:2], slow)
    a = threading.Thread(target=call_a)
    a.start()
    try:
        assert started.wait(30)
    finally:
        resident.localizer.draw = draw  # type: ignore[method-assign]
    with LiveSptClient(server.target) as client, pytest.raises(grpc.RpcError) as err:
        client.localize(frames[2:3], SETTINGS, timeout_s=0.3)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    a.join()
    assert got["a"].mean.shape == (2, 80, 96)  # type: ignore[attr-defined]
    with LiveSptClient(server.target) as client:  # C, after A: B would have run before it
        assert client.localize(frames[2:3], SETTINGS).mean.shape == (1, 80, 96)
    assert batcher.stats["requests"] - before["requests"] == 2  # A and C: B was not drawn


@pytest.mark.parametrize(("mutate", "code", "message"), [
    (lambda r: setattr(r, "data", np.full((2, 20, 24), np.nan, np.float32).tobytes())
     or setattr(r, "pixel_type", pb.PIXEL_TYPE_FLOAT32),
     grpc.StatusCode.INVALID_ARGUMENT, "data: frame 0 holds NaN"),
    (lambda r: setattr(r, "data", r.data[:-2]), grpc.StatusCode.INVALID_ARGUMENT,
     "data must hold whole frames of 20 x 24 uint16"),
    (lambda r: setattr(r, "height", 4), grpc.StatusCode.INVALID_ARGUMENT,
     "height and width must be >= 8 pixels"),
    (lambda r: setattr(r, "pixel_size_um", -0.1), grpc.StatusCode.INVALID_ARGUMENT,
     r"pixel_size_um must be in \(0, 100\] um"),
    (lambda r: setattr(r, "samples", 999), grpc.StatusCode.INVALID_ARGUMENT,
     r"samples must be in \[2, 256\]"),
    (lambda r: setattr(r, "camera_gain_adu_per_e", 0.0), grpc.StatusCode.INVALID_ARGUMENT,
     "camera_gain_adu_per_e must be in"),
    (lambda r: setattr(r, "pixel_type", 7), grpc.StatusCode.INVALID_ARGUMENT,
     "pixel_type must be one of"),
])
def test_bad_requests_get_invalid_argument_naming_the_field(server: EmbeddedServer,
                                                            frames: np.ndarray, mutate,
                                                            code, message) -> None:
    req = wire.localize_request_to_proto(frames[:2], SETTINGS)
    mutate(req)
    with LiveSptClient(server.target) as client:
        with pytest.raises(grpc.RpcError) as err:
            client.stub.Localize(req, timeout=30)
        assert err.value.code() == code
        assert re.search(message, err.value.details()), err.value.details()
        # The server goes on serving.
        assert client.localize(frames[:1], SETTINGS).mean.shape == (1, 80, 96)


def test_undecodable_bytes_and_a_server_without_localizer(tmp_path: Path) -> None:
    with EmbeddedServer(ServerOptions(port=0, out_root=tmp_path, device="cpu", models=(),
                                      localizer="none")) as srv:
        with LiveSptClient(srv.target) as client:
            raw = client.channel.unary_unary("/livespt.v1.LiveSpt/Localize")
            with pytest.raises(grpc.RpcError) as err:
                raw(b"\xff\xff\xff", timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(grpc.RpcError) as err:
                client.localize(np.zeros((1, 20, 20), np.uint16), SETTINGS)
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "no localizer" in err.value.details()
            assert not [m for m in client.info().models if m.kind == "localizer"]


def test_serve_refuses_a_localizer_file_it_cannot_load(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a weights file")
    rc = main(["serve", "--port", "0", "--no-models", "--localizer", str(bad),
               "--sessions-dir", str(tmp_path / "s")])
    assert rc != 0


# ------------------------------------------------------------------ the command
def test_livespt_localize_writes_calibrated_maps_and_emitters(tmp_path: Path, weights: Path,
                                                              frames: np.ndarray,
                                                              server: EmbeddedServer,
                                                              capsys) -> None:
    movie = write_movie(tmp_path / "movie.tif", frames, 0.08, 0.05)
    flags = ["--samples", "3", "--steps", "4", "--seed", "7", "--camera-offset", "100",
             "--camera-gain", "2", "--frames-per-call", "2"]
    assert main(["localize", str(movie), "--weights", str(weights), "--out",
                 str(tmp_path / "a"), *flags]) == 0
    assert main(["localize", str(movie), "--server", server.target, "--out",
                 str(tmp_path / "b"), *flags]) == 0
    for d in ("a", "b"):
        out = tmp_path / d
        mean = tifffile.imread(out / "mean.tif")
        assert mean.shape == (5, 80, 96) and mean.dtype == np.float32
        assert tifffile.imread(out / "variance.tif").shape == (5, 80, 96)
        cal = read_calibration(out / "mean.tif")
        assert cal.pixel_size_um == pytest.approx(0.02)
        table = pd.read_csv(out / "emitters.csv")
        assert list(table.columns) == list(EMITTER_COLUMNS)
        summary = json.loads((out / "summary.json").read_text())
        assert summary["calibration"]["pixel_size_um"] == pytest.approx(0.08)
        assert summary["model"] == "tiny"
    np.testing.assert_allclose(tifffile.imread(tmp_path / "a" / "mean.tif"),
                               tifffile.imread(tmp_path / "b" / "mean.tif"), atol=1e-5)
    a, b = (pd.read_csv(tmp_path / d / "emitters.csv") for d in "ab")
    assert len(a) == len(b)
    np.testing.assert_allclose(a[["x_um", "y_um"]], b[["x_um", "y_um"]], atol=1e-4)


def test_livespt_localize_errors_are_one_line_naming_the_flag(tmp_path: Path, weights: Path,
                                                              capsys) -> None:
    movie = tmp_path / "plain.tif"
    tifffile.imwrite(movie, np.zeros((2, 16, 16), np.uint16))
    assert main(["localize", str(movie), "--weights", str(weights)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--pixel-size" in err
    assert main(["localize", str(movie), "--weights", str(weights), "--pixel-size", "0.1",
                 "--samples", "1"]) == 2
    assert "--samples must be in [2, 256], got 1" in capsys.readouterr().err
    assert main(["localize", str(tmp_path / "none.tif")]) == 2
    assert "is not a file" in capsys.readouterr().err
    nan = tmp_path / "nan.tif"
    tifffile.imwrite(nan, np.full((1, 16, 16), np.nan, np.float32))
    assert main(["localize", str(nan), "--weights", str(weights), "--pixel-size", "0.1",
                 "--out", str(tmp_path / "n")]) == 2
    assert "frame 0 holds NaN" in capsys.readouterr().err
    assert main(["localize", str(movie), "--weights", str(tmp_path / "x.pt"),
                 "--pixel-size", "0.1"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_imagej_places_the_maps_on_the_movies_coordinates(tmp_path: Path, weights: Path,
                                                          frames: np.ndarray) -> None:
    require_imagej()
    movie = write_movie(tmp_path / "movie.tif", frames[:1], 0.1, 0.05)
    assert main(["localize", str(movie), "--weights", str(weights), "--out", str(tmp_path),
                 "--samples", "2", "--steps", "2"]) == 0
    out = subprocess.run(["xvfb-run", "-a", "timeout", "120", "java", "-jar", str(IJ_JAR),
                          "-batch", str(MAP_MACRO), str(tmp_path / "mean.tif")],
                         capture_output=True, text=True, timeout=180)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("pw=")), None)
    assert line is not None, out.stdout + out.stderr
    fields = {k: float(v) for k, v in re.findall(r"(\w+)=(\S+)", line)}
    # Map pixel 0 is centred at (0 + 1/2) / 4 - 1/2 = -0.375 camera px = -0.0375 um, and
    # map pixel 6 (camera pixel 1's centre, +-1/8) at 0.1125 um.
    assert fields["pw"] == pytest.approx(0.025)
    assert fields["x0"] == pytest.approx(-0.0375) and fields["y0"] == pytest.approx(-0.0375)
    assert fields["x6"] == pytest.approx(0.1125)
