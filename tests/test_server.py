"""The live gRPC path end to end, over a real server on 127.0.0.1.

Simulated movies with known ground truth are streamed through the real server
(grpc.aio, in a background thread of this process) by the real client library.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pandas as pd
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from server_helpers import background_frames, config, frame_msg, match_track_points

from livespt.models.estimators import cve_variance
from livespt.models.simulate import MovieConfig, simulate_movie
from livespt.server.client import ChangeSettings, LiveSptClient, StreamSettings
from livespt.server.grpc_gen.livespt.v1 import livespt_pb2 as pb
from livespt.server.grpc_gen.livespt.v1 import livespt_pb2_grpc as pb_grpc
from livespt.server.service.app import EmbeddedServer, ServerOptions
from livespt.server.service.settings import Limits

PX = 0.1
DT = 0.05


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> EmbeddedServer:
    # No resident model: these tests check the classical live path (CVE windows) against
    # its known variance; the transformer path is tested in test_serving_models.py.
    root = tmp_path_factory.mktemp("sessions")
    srv = EmbeddedServer(ServerOptions(port=0, out_root=root, device="cpu", models=(),
                                       limits=Limits(max_frame_pixels=1024 * 1024)))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def stub(server: EmbeddedServer) -> pb_grpc.LiveSptStub:
    channel = grpc.insecure_channel(server.target)
    yield pb_grpc.LiveSptStub(channel)
    channel.close()


def _stream(client: LiveSptClient, movie_frames: np.ndarray, **kw: object):
    return client.stream(iter(movie_frames), StreamSettings(pixel_size_um=PX,
                                                           frame_interval_s=DT, **kw))


# ----------------------------------------------------------------- service basics
def test_info_health_and_reflection(server: EmbeddedServer) -> None:
    channel = grpc.insecure_channel(server.target)
    info = pb_grpc.LiveSptStub(channel).GetServerInfo(pb.GetServerInfoRequest(), timeout=10)
    assert info.version and info.device == "cpu"
    assert "cve" in info.estimators and "builtin" in info.trackers
    assert info.limits.max_frame_pixels == 1024 * 1024
    assert info.limits.max_message_bytes > 1024 * 1024 * 4

    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "livespt.v1.LiveSpt"):
        resp = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING

    refl = reflection_pb2_grpc.ServerReflectionStub(channel)
    answers = refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
        list_services="")]), timeout=10)
    names = {s.name for a in answers for s in a.list_services_response.service}
    assert "livespt.v1.LiveSpt" in names and "grpc.health.v1.Health" in names
    channel.close()


# ---------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def sparse_run(server: EmbeddedServer) -> dict:
    """60 frames of 256x256 with 40 particles at SNR 12, two D values, streamed once."""
    d_values = np.where(np.arange(40) % 2 == 0, 0.05, 0.3)
    cfg = MovieConfig(shape_px=(256, 256), n_frames=60, n_particles=40, pixel_size_um=PX,
                      frame_interval_s=DT, d_um2_s=d_values, snr=12.0)
    movie = simulate_movie(cfg, seed=7)
    with LiveSptClient(server.target) as client:
        result = _stream(client, movie.frames)
    points = pd.DataFrame([p.__dict__ for p in result.points])
    return {"movie": movie, "result": result, "points": points, "d_values": d_values,
            "sigma_px": cfg.sigma_px}


def test_every_frame_is_acknowledged_in_order_with_a_summary(sparse_run: dict) -> None:
    res = sparse_run["result"]
    assert res.frames_acked == 60
    assert res.summary is not None and res.summary.frames == 60
    assert res.summary.track_points == len(res.points)
    assert all(lat > 0 for lat in res.server_latency_ms)
    # The server persisted the same records in its session directory.
    out = Path(res.server_output_dir)
    assert len(pd.read_csv(out / "tracks.csv")) == len(res.points)
    assert len(pd.read_csv(out / "estimates.csv")) == len(res.estimates)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["frames"] == 60
    assert summary["tracker"] == "builtin" and summary["device"] == "cpu"
    # Every window counted under the method that answered it.
    est = pd.read_csv(out / "estimates.csv")
    assert summary["windows_by_method"] == est["method"].value_counts().to_dict()
    assert summary["merged_blurred_detections"] >= 0


def test_detection_recall_and_precision_at_snr_12(sparse_run: dict) -> None:
    m = match_track_points(sparse_run["points"], sparse_run["movie"].ground_truth, PX,
                         shape_px=(256, 256))
    counted = m[m["counted"]]
    recall = counted["track_id"].notna()[counted["particle_id"].notna()].mean()
    precision = counted["particle_id"].notna()[counted["track_id"].notna()].mean()
    rmse_px = float(np.sqrt(np.nanmean(counted["dist_px"] ** 2)))
    print(f"detection: recall {recall:.3f}, precision {precision:.3f}, RMSE {rmse_px:.3f} px")
    assert recall >= 0.95
    assert precision >= 0.95
    assert rmse_px < 0.5


def test_links_are_correct(sparse_run: dict) -> None:
    m = match_track_points(sparse_run["points"], sparse_run["movie"].ground_truth, PX)
    m = m.dropna(subset=["particle_id", "track_id"]).sort_values(["track_id", "frame"])
    same_track = m["track_id"].to_numpy()[1:] == m["track_id"].to_numpy()[:-1]
    same_particle = m["particle_id"].to_numpy()[1:] == m["particle_id"].to_numpy()[:-1]
    correct = same_particle[same_track].mean()
    print(f"links: {same_track.sum()} links, {correct:.3%} join the same particle")
    assert correct >= 0.95


def test_per_track_d_within_the_cve_tolerance(server: EmbeddedServer, sparse_run: dict) -> None:
    """Whole-track D from AnalyzeTracks on the streamed tracks vs the truth.

    Each long track's z = (D_hat - D) / SD_CVE(N, D, sigma) is about standard normal;
    |z| < 3 holds with probability 0.997, so >= 90 % of tracks must satisfy it (a
    generous margin for localization outliers), and the mean z must be within
    4 / sqrt(n) of 0 plus a 0.3 allowance for the detector's sigma being estimated.
    """
    points = sparse_run["points"]
    m = match_track_points(points, sparse_run["movie"].ground_truth, PX)
    owner = m.dropna(subset=["track_id", "particle_id"]).groupby("track_id")["particle_id"]
    purity = owner.agg(lambda s: s.value_counts().iloc[0] / len(s))
    major = owner.agg(lambda s: s.value_counts().index[0])
    long_pure = [t for t, g in points.groupby("track_id")
                 if len(g) >= 40 and purity.get(t, 0) == 1.0]
    assert len(long_pure) >= 15
    req = pb.AnalyzeTracksRequest(frame_interval_s=DT)
    for t in long_pure:
        g = points[points["track_id"] == t]
        req.tracks.append(pb.Track(track_id=int(t), frames=g["frame"].tolist(),
                                   x_um=g["x_um"].tolist(), y_um=g["y_um"].tolist()))
    with LiveSptClient(server.target) as client:
        resp = client.stub.AnalyzeTracks(req, timeout=60)
    z = []
    for est in resp.tracks:
        d_true = float(sparse_run["d_values"][int(major[est.track_id])])
        g = points[points["track_id"] == est.track_id]
        sigma = float(g["precision_um"].median())
        sd = np.sqrt(cve_variance(g["frame"].to_numpy(), d_true, sigma, DT))
        z.append((est.d_um2_s - d_true) / sd)
        assert est.method == "cve"
    z = np.array(z)
    print(f"per-track D: n={z.size}, mean z {z.mean():.2f}, sd z {z.std():.2f}")
    assert np.mean(np.abs(z) < 3) >= 0.9
    assert abs(z.mean()) < 4 / np.sqrt(z.size) + 0.3


def test_window_estimates_cover_the_truth(sparse_run: dict) -> None:
    res = sparse_run["result"]
    m = match_track_points(sparse_run["points"], sparse_run["movie"].ground_truth, PX)
    owner = (m.dropna(subset=["track_id", "particle_id"]).groupby("track_id")["particle_id"]
             .agg(lambda s: s.value_counts().index[0]))
    est = pd.DataFrame([e.__dict__ for e in res.estimates])
    # A track's first windows: sigma-unknown CVE; once it has 20 step pairs, its own noise.
    assert set(est["method"]) == {"cve", "cve:track-sigma"}
    first = est.groupby("track_id")["frame_start"].transform("min") == est["frame_start"]
    assert (est.loc[first, "method"] == "cve").all()
    assert (est["frame_end"] - est["frame_start"] >= 9).all()
    est = est[est["track_id"].isin(owner.index)]
    d_true = sparse_run["d_values"][owner.loc[est["track_id"]].astype(int).to_numpy()]
    covered = (est["d_low_um2_s"].to_numpy() <= d_true) & (d_true <= est["d_high_um2_s"])
    # Overlapping windows are correlated, so no binomial band: a loose check that the
    # nominal 90 % intervals are not badly miscalibrated.
    print(f"window coverage: {covered.mean():.3f} over {len(est)} windows")
    assert 0.8 <= covered.mean() <= 0.98
    own = (est["method"] == "cve:track-sigma").to_numpy()
    print(f"  with the track's own sigma: {covered[own].mean():.3f} over {own.sum()} windows")
    assert 0.8 <= covered[own].mean() <= 0.98


def test_a_5x_change_of_d_is_detected_within_a_few_frames(server: EmbeddedServer) -> None:
    n_particles, change = 12, 50
    cfg = MovieConfig(shape_px=(192, 192), n_frames=110, n_particles=n_particles,
                      pixel_size_um=PX, frame_interval_s=DT,
                      d_um2_s=np.array([0.04, 0.2]), change_frames=(change,), snr=15.0)
    movie = simulate_movie(cfg, seed=3)
    with LiveSptClient(server.target) as client:
        res = _stream(client, movie.frames)
    points = pd.DataFrame([p.__dict__ for p in res.points])
    m = match_track_points(points, movie.ground_truth, PX)
    m = m.dropna(subset=["track_id", "particle_id"])
    spanning = [t for t, g in m.groupby("track_id")
                if g["frame"].min() <= change - 20 and g["frame"].max() >= change + 20]
    assert len(spanning) >= 6
    changes = pd.DataFrame([c.__dict__ for c in res.changes])
    hits = 0
    for t in spanning:
        c = changes[changes["track_id"] == t] if len(changes) else changes
        good = c[(c["frame"] - change).abs() <= 5] if len(c) else c
        if len(good):
            hits += 1
            ev = good.iloc[0]
            assert ev["detected_at_frame"] >= ev["frame"]
            assert ev["d_after_um2_s"] > 2 * ev["d_before_um2_s"]
    print(f"changes: {hits}/{len(spanning)} spanning tracks, events {len(changes)}")
    assert hits / len(spanning) >= 0.8


def test_stationary_tracks_raise_few_false_alarms(server: EmbeddedServer) -> None:
    cfg = MovieConfig(shape_px=(192, 192), n_frames=150, n_particles=15, pixel_size_um=PX,
                      frame_interval_s=DT, d_um2_s=0.1, snr=15.0)
    movie = simulate_movie(cfg, seed=4)
    with LiveSptClient(server.target) as client:
        res = _stream(client, movie.frames, change=ChangeSettings(false_alarm_per_1000=0.5))
    track_frames = len(res.points)
    # Expected false alarms at the configured rate: 0.5 per 1000 track-frames, i.e.
    # about 1 over ~2000 track-frames; a Poisson(1.1) count exceeds 5 with p < 0.001.
    expected = 0.5 * track_frames / 1000
    print(f"false alarms: {len(res.changes)} over {track_frames} track-frames")
    assert len(res.changes) <= expected + 4 * np.sqrt(expected) + 1


def test_a_dropped_frame_is_reported_and_listed_in_the_summary(server: EmbeddedServer) -> None:
    # 400 slow particles; the camera "drops" movie frame 35: the stream's frame 35 is the
    # movie's frame 36, two intervals after the stream's frame 34.
    cfg = MovieConfig(shape_px=(320, 320), n_frames=50, n_particles=400, pixel_size_um=PX,
                      frame_interval_s=DT, d_um2_s=0.05, snr=15.0)
    movie = simulate_movie(cfg, seed=8)
    frames = np.delete(movie.frames, 35, axis=0)
    with LiveSptClient(server.target) as client:
        res = _stream(client, frames)
    timing = [w for w in res.warnings if w.startswith("FRAME_TIMING")]
    print(f"\n{timing}")
    assert len(timing) == 1 and "frame 35:" in timing[0] and "dropped frame" in timing[0]
    summary = json.loads((Path(res.server_output_dir) / "summary.json").read_text())
    flagged = summary["frame_timing"]["flagged"]
    assert [f["frame"] for f in flagged] == [35]
    # two intervals instead of one: (2 - 2R) / (1 - 2R) = 2.5 with full-frame exposure
    # (R = 1/6), less with localization noise
    assert 1.5 < flagged[0]["ratio"] < 3.0
    assert summary["frame_timing"]["frames_tested"] >= 25


# ---------------------------------------------------------------- bad input
def _healthy_stream_in_background(server: EmbeddedServer) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def run() -> None:
        def slow_frames():
            for f in background_frames(30, seed=1):
                time.sleep(0.01)
                yield f
        with LiveSptClient(server.target) as client:
            out["result"] = client.stream(slow_frames(), StreamSettings(PX, DT))

    th = threading.Thread(target=run)
    th.start()
    return th, out


def _with_radius(cfg: pb.StreamConfig, radius_um: float) -> pb.StreamConfig:
    cfg.detector.radius_um = radius_um
    return cfg


BAD_STREAMS = {
    "frame before config": (
        lambda: [frame_msg(0, np.zeros((32, 32), np.uint16))],
        grpc.StatusCode.FAILED_PRECONDITION, "config"),
    "config twice": (
        lambda: [pb.StreamRequest(config=config()), pb.StreamRequest(config=config())],
        grpc.StatusCode.FAILED_PRECONDITION, "config"),
    "no messages": (lambda: [], grpc.StatusCode.FAILED_PRECONDITION, "config"),
    "invalid pixel size": (
        lambda: [pb.StreamRequest(config=config(pixel_size_um=-0.1))],
        grpc.StatusCode.INVALID_ARGUMENT, "config.pixel_size_um"),
    "exposure beyond interval": (
        lambda: [pb.StreamRequest(config=config(exposure_s=0.1))],
        grpc.StatusCode.INVALID_ARGUMENT, "config.exposure_s"),
    "unknown dtype": (
        lambda: [pb.StreamRequest(config=config(pixel_type=pb.PIXEL_TYPE_UNSPECIFIED))],
        grpc.StatusCode.INVALID_ARGUMENT, "config.pixel_type"),
    "frame larger than the limit": (
        lambda: [pb.StreamRequest(config=config(height=4096, width=4096))],
        grpc.StatusCode.INVALID_ARGUMENT, "config.height"),
    "wrong byte count": (
        lambda: [pb.StreamRequest(config=config()),
                 frame_msg(0, np.zeros((32, 31), np.uint16))],
        grpc.StatusCode.INVALID_ARGUMENT, "frame.data"),
    "dtype mismatch": (
        lambda: [pb.StreamRequest(config=config()), frame_msg(0, np.zeros((32, 32), np.uint8))],
        grpc.StatusCode.INVALID_ARGUMENT, "frame.data"),
    "index out of order": (
        lambda: [pb.StreamRequest(config=config()),
                 frame_msg(5, np.full((32, 32), 100, np.uint16)),
                 frame_msg(5, np.full((32, 32), 100, np.uint16))],
        grpc.StatusCode.INVALID_ARGUMENT, "frame.index"),
    "NaN in a float frame": (
        lambda: [pb.StreamRequest(config=config(pixel_type=pb.PIXEL_TYPE_FLOAT32)),
                 frame_msg(0, np.full((32, 32), np.nan, np.float32))],
        grpc.StatusCode.INVALID_ARGUMENT, "frame.data"),
    "spot radius below half a pixel": (
        lambda: [pb.StreamRequest(config=_with_radius(config(pixel_size_um=0.35), 0.15))],
        grpc.StatusCode.INVALID_ARGUMENT, "config.detector.radius_um = 0.15 um is 0.429 px"),
    "unavailable tracker": (
        lambda: [pb.StreamRequest(config=config(tracker=pb.TRACKER_TRACKMATE))],
        grpc.StatusCode.INVALID_ARGUMENT, "config.tracker"),
}


@pytest.mark.parametrize("case", list(BAD_STREAMS))
def test_bad_input_ends_only_its_own_stream(
    server: EmbeddedServer, stub: pb_grpc.LiveSptStub, case: str
) -> None:
    make, code, field = BAD_STREAMS[case]
    th, healthy = _healthy_stream_in_background(server)
    with pytest.raises(grpc.RpcError) as err:
        for _ in stub.StreamFrames(iter(make()), timeout=30):
            pass
    assert err.value.code() == code
    assert field in err.value.details()
    th.join(timeout=60)
    assert healthy["result"].frames_acked == 30
    assert healthy["result"].summary is not None


def test_abort_is_recorded_in_the_session_summary(
    server: EmbeddedServer, stub: pb_grpc.LiveSptStub
) -> None:
    reqs = [pb.StreamRequest(config=config()), frame_msg(0, np.full((32, 32), 100, np.uint16)),
            frame_msg(1, np.zeros((3,), np.uint16))]
    updates = []
    with pytest.raises(grpc.RpcError):
        for u in stub.StreamFrames(iter(reqs), timeout=30):
            updates.append(u)
    out = Path(updates[0].started.output_dir)
    # The client sees the error as soon as it is sent; the server closes the session
    # right after, so wait for it (bounded) before reading the summary.
    service = server.running.service
    deadline = time.time() + 20
    while updates[0].started.session_id in service.sessions and time.time() < deadline:
        time.sleep(0.05)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"].startswith("aborted: frame.data")
    assert summary["frames"] == 1


def test_a_bad_frame_ends_the_stream_after_every_earlier_frame_is_answered(
    stub: pb_grpc.LiveSptStub,
) -> None:
    # Frames are detected ahead of tracking (two-stage pipeline): the frames received
    # before the bad one must still be tracked, answered and persisted.
    good = list(background_frames(6, seed=4))
    reqs = [pb.StreamRequest(config=config())]
    reqs += [frame_msg(i, f) for i, f in enumerate(good)]
    reqs.append(frame_msg(6, np.zeros((32, 30), np.uint16)))
    updates = []
    with pytest.raises(grpc.RpcError) as err:
        for u in stub.StreamFrames(iter(reqs), timeout=30):
            updates.append(u)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "frame.data" in err.value.details()
    assert [u.frame.index for u in updates if u.WhichOneof("update") == "frame"] == list(range(6))


def test_client_vanishing_mid_stream_frees_the_session_and_keeps_outputs(
    server: EmbeddedServer,
) -> None:
    cfg = MovieConfig(shape_px=(64, 64), n_frames=40, n_particles=4, pixel_size_um=PX,
                      frame_interval_s=DT, d_um2_s=0.1, snr=15.0)
    frames = simulate_movie(cfg, seed=9).frames
    channel = grpc.insecure_channel(server.target)
    stub = pb_grpc.LiveSptStub(channel)

    def requests():
        yield pb.StreamRequest(config=config(height=64, width=64))
        for i, f in enumerate(frames):
            yield frame_msg(i, f)
        time.sleep(30)  # the client stays connected but silent, then vanishes

    call = stub.StreamFrames(requests())
    started, acked = None, 0
    for u in call:
        if u.WhichOneof("update") == "started":
            started = u.started
        elif u.WhichOneof("update") == "frame":
            acked += 1
            if acked == 40:
                break
    call.cancel()
    channel.close()
    service = server.running.service
    deadline = time.time() + 20
    while started.session_id in service.sessions and time.time() < deadline:
        time.sleep(0.05)
    assert started.session_id not in service.sessions
    out = Path(started.output_dir)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "client disconnected"
    assert summary["frames"] == 40
    tracks = pd.read_csv(out / "tracks.csv")
    assert tracks["frame"].max() == 39 and len(tracks) == summary["track_points"]


# ---------------------------------------------------------------- AnalyzeTracks
def test_analyze_tracks_bad_input(stub: pb_grpc.LiveSptStub) -> None:
    cases = [
        (pb.AnalyzeTracksRequest(frame_interval_s=DT), "tracks is empty"),
        (pb.AnalyzeTracksRequest(frame_interval_s=0, tracks=[pb.Track()]), "frame_interval_s"),
        (pb.AnalyzeTracksRequest(frame_interval_s=DT, tracks=[
            pb.Track(track_id=3, frames=[0, 1, 2], x_um=[0, 1], y_um=[0, 1, 2])]),
         "tracks[0] (track_id 3)"),
        (pb.AnalyzeTracksRequest(frame_interval_s=DT, tracks=[
            pb.Track(track_id=4, frames=[0, 1, 2], x_um=[0, float("nan"), 1], y_um=[0, 1, 2])]),
         "NaN"),
        (pb.AnalyzeTracksRequest(frame_interval_s=DT, tracks=[
            pb.Track(track_id=5, frames=[0, 2, 1], x_um=[0, 1, 2], y_um=[0, 1, 2])]),
         "strictly increase"),
    ]
    for req, text in cases:
        with pytest.raises(grpc.RpcError) as err:
            stub.AnalyzeTracks(req, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert text in err.value.details()


def test_an_assumed_exposure_is_said_before_the_first_frame(server: EmbeddedServer) -> None:
    frames = list(background_frames(3))
    with LiveSptClient(server.target) as client:
        assumed = client.stream(iter(frames), StreamSettings(PX, DT))
        given = client.stream(iter(frames), StreamSettings(PX, DT, exposure_s=0.01))
    said = [w for w in assumed.warnings if w.startswith("EXPOSURE: ")]
    assert len(said) == 1 and "config.exposure_s not given: the frame interval (0.05 s)" in said[0]
    assert json.loads(assumed.effective_config_json)["exposure_assumed"] is True
    assert not [w for w in given.warnings if w.startswith("EXPOSURE")]
    assert json.loads(given.effective_config_json)["exposure_assumed"] is False


def test_analyze_tracks_warns_about_short_tracks_and_estimates_the_rest(
    stub: pb_grpc.LiveSptStub,
) -> None:
    rng = np.random.default_rng(2)
    xy = np.cumsum(rng.normal(0, np.sqrt(2 * 0.2 * DT), size=(60, 2)), axis=0)
    req = pb.AnalyzeTracksRequest(frame_interval_s=DT, tracks=[
        pb.Track(track_id=1, frames=[0, 1], x_um=[0, 0.1], y_um=[0, 0.1]),
        pb.Track(track_id=2, frames=list(range(60)), x_um=xy[:, 0], y_um=xy[:, 1]),
    ])
    resp = stub.AnalyzeTracks(req, timeout=30)
    # the exposure was not given: the frame interval is assumed, and said to be
    assert [w.code for w in resp.warnings] == ["TRACK_TOO_SHORT", "EXPOSURE"]
    assert "track_id 1" in resp.warnings[0].message
    assert resp.warnings[1].message.startswith("exposure_s not given: the frame interval")
    req.exposure_s = DT
    assert [w.code for w in stub.AnalyzeTracks(req, timeout=30).warnings] == ["TRACK_TOO_SHORT"]
    assert [t.track_id for t in resp.tracks] == [2]
    t = resp.tracks[0]
    assert t.d_low_um2_s <= t.d_um2_s <= t.d_high_um2_s and t.n_spots == 60
    assert len(resp.windows) == 60 - 10 + 1


def test_a_client_with_no_server_gets_one_clear_error() -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with LiveSptClient(f"127.0.0.1:{port}") as client, \
            pytest.raises(ConnectionError, match=f"no LiveSPT server answered at 127.0.0.1:{port}"):
        client.wait_ready(timeout_s=1.0)
