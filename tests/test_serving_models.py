"""Resident models over a real gRPC server on 127.0.0.1: info, live windows, AnalyzeTracks, errors.

Small models are trained in a few seconds here (the point is the serving path: loading,
batching, which estimates use which model); the shipped weights' accuracy is checked in
test_shipped_weights.py and measured by ``livespt evaluate vit``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from livespt.models.simulate import MovieConfig, simulate_movie
from livespt.models.vit import ModelLoadError
from livespt.models.vit.train import preset, save, train
from livespt.server.cli.main import main
from livespt.server.client import LiveSptClient, StreamSettings, WindowConfig
from livespt.server.grpc_gen.livespt.v1 import livespt_pb2 as pb
from livespt.server.grpc_gen.livespt.v1 import livespt_pb2_grpc as pb_grpc
from livespt.server.service.app import EmbeddedServer, ServerOptions

PX, DT = 0.1, 0.05


def _train(tmp: Path, variant: str) -> Path:
    cfg = preset("tiny", variant=variant, max_steps=2, val_windows=32, val_every=2)
    model, history = train(cfg, "cpu", log=lambda _: None)
    path = tmp / f"vit-test-{variant.replace('+', '-')}.pt"
    save(model, cfg, history, path)
    return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("weights")
    return {v: _train(tmp, v) for v in ("image+features", "features")}


@pytest.fixture(scope="module")
def server(weights: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("sessions")
    srv = EmbeddedServer(ServerOptions(port=0, out_root=root, device="cpu",
                                       models=tuple(weights.values())))
    srv.start()
    yield srv
    srv.stop()


def test_server_info_lists_the_resident_models(server: EmbeddedServer,
                                               weights: dict[str, Path]) -> None:
    with LiveSptClient(server.target) as c:
        info = c.info()
    by_variant = {m.variant: m for m in info.models if m.kind == "estimator"}
    assert set(by_variant) == {"image+features", "features"}
    assert [m.kind for m in info.models if m.kind != "estimator"] == ["localizer"]
    assert list(by_variant["image+features"].used_for) == ["stream"]
    assert list(by_variant["features"].used_for) == ["analyze_tracks"]
    card = json.loads(weights["features"].with_suffix(".json").read_text())
    assert by_variant["features"].sha256 == card["sha256"]
    assert json.loads(by_variant["features"].card_json)["parameters"] == card["parameters"]
    assert info.limits.max_batch_windows == 256 and info.limits.max_batch_delay_ms == 2.0
    assert "vit:vit-test-image-features" in info.estimators


def test_live_windows_are_estimated_by_the_image_model(server: EmbeddedServer) -> None:
    cfg = MovieConfig(shape_px=(96, 96), n_frames=30, n_particles=6, pixel_size_um=PX,
                      frame_interval_s=DT, d_um2_s=0.1, snr=15.0)
    movie = simulate_movie(cfg, seed=3)
    with LiveSptClient(server.target) as c:
        res = c.stream(movie.frames, StreamSettings(PX, DT))
    assert res.frames_acked == 30 and res.estimates
    # The first windows go to the model. This model is trained for seconds only: where
    # its answers disagree with the CVE on the same windows, the model check lets the
    # CVE answer (server/pipeline/model_check.py), with ':model-bias' in the method.
    first = min(e.frame_end for e in res.estimates)
    assert {e.method for e in res.estimates if e.frame_end == first} \
        == {"vit:vit-test-image-features"}
    for e in res.estimates:
        assert e.method == "vit:vit-test-image-features" or e.method.endswith(":model-bias")
        assert 0 < e.d_low_um2_s < e.d_um2_s < e.d_high_um2_s
        assert e.frame_end - e.frame_start >= 9
    summary = json.loads((Path(res.server_output_dir) / "summary.json").read_text())
    assert summary["estimators"]["window"] == "vit:vit-test-image-features"
    assert summary["models"][0]["variant"] == "image+features"
    n_bias = sum(e.method.endswith(":model-bias") for e in res.estimates)
    assert summary["windows_model_bias"] == n_bias
    assert (n_bias > 0) == (summary["model_check"]["session_flagged"]
                            or summary["tracks_model_bias"] > 0)


def test_a_window_length_the_model_cannot_take_falls_back_to_the_cve(
    server: EmbeddedServer,
) -> None:
    cfg = MovieConfig(shape_px=(64, 64), n_frames=45, n_particles=3, pixel_size_um=PX,
                      frame_interval_s=DT, d_um2_s=0.1, snr=15.0)
    movie = simulate_movie(cfg, seed=4)
    with LiveSptClient(server.target) as c:
        res = c.stream(movie.frames, StreamSettings(PX, DT, window=WindowConfig(length=40)))
    assert any("window.length 40" in w for w in res.warnings)
    assert res.estimates and {e.method for e in res.estimates} <= {"cve", "cve:track-sigma"}


def test_analyze_tracks_windows_use_the_features_model(server: EmbeddedServer) -> None:
    rng = np.random.default_rng(5)
    xy = np.cumsum(rng.normal(0, np.sqrt(2 * 0.2 * DT), size=(40, 2)), axis=0)
    req = pb.AnalyzeTracksRequest(frame_interval_s=DT, pixel_size_um=PX, tracks=[
        pb.Track(track_id=7, frames=list(range(40)), x_um=xy[:, 0], y_um=xy[:, 1],
                 precision_um=[0.02] * 40)])
    import grpc

    with grpc.insecure_channel(server.target) as ch:
        resp = pb_grpc.LiveSptStub(ch).AnalyzeTracks(req, timeout=30)
    assert len(resp.windows) == 40 - 10 + 1
    assert {w.method for w in resp.windows} == {"vit:vit-test-features"}
    assert all(0 < w.d_low_um2_s < w.d_um2_s < w.d_high_um2_s for w in resp.windows)
    assert resp.tracks[0].method == "cve"  # whole tracks: the CVE, near the bound when long


def test_a_corrupt_model_stops_start_up_with_a_clear_error(
    weights: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "broken.pt"
    bad.write_bytes(weights["features"].read_bytes()[:-100])
    bad.with_suffix(".json").write_text(weights["features"].with_suffix(".json").read_text())
    with pytest.raises(ModelLoadError, match="broken"):
        EmbeddedServer(ServerOptions(port=0, out_root=tmp_path, device="cpu",
                                     models=(bad,))).start()
    rc = main(["serve", "--port", "0", "--device", "cpu", "--model", str(bad),
               "--sessions-dir", str(tmp_path)])
    assert rc == 2
    assert "broken.pt: sha256" in capsys.readouterr().err
