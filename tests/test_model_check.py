"""The model check: a model biased on a track (or a whole session) steps aside for the CVE."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom

from livespt.models.estimators import cve_batch
from livespt.models.simulate import simulate_trajectories
from livespt.server.pipeline.model_check import ALPHA, METHOD_SUFFIX, MIN_WINDOWS, ModelCheck

DT = 0.05
SIGMA_UM = 0.03
LENGTH = 10
N_TRACKS = 300
N_WINDOWS = 30


@pytest.fixture(scope="module")
def pairs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per track and non-overlapping window: the true D, the sigma-known and the
    sigma-unknown CVE (two unbiased estimators; the first plays an unbiased model)."""
    rng = np.random.default_rng(5)
    d = np.exp(rng.uniform(math.log(0.05), math.log(1.0), N_TRACKS))
    traj = simulate_trajectories(N_TRACKS, N_WINDOWS * LENGTH, d_um2_s=d,
                                 frame_interval_s=DT, exposure_s=DT, seed=6)
    xy = traj.mean_um.numpy() + rng.normal(0.0, SIGMA_UM, (N_TRACKS, N_WINDOWS * LENGTH, 2))
    win = xy.reshape(N_TRACKS * N_WINDOWS, LENGTH, 2)
    known = cve_batch(win, DT, exposure_s=DT, sigma_um=SIGMA_UM).d_um2_s
    unknown = cve_batch(win, DT, exposure_s=DT, sigma_um=None).d_um2_s
    return d, known.reshape(N_TRACKS, N_WINDOWS), unknown.reshape(N_TRACKS, N_WINDOWS)


def _feed(check: ModelCheck, model: np.ndarray, cve: np.ndarray) -> None:
    """Window k of every track, k = 0, 1, ... (as a live stream delivers them)."""
    ids = np.arange(model.shape[0])
    for k in range(model.shape[1]):
        check.update(ids, np.full(ids.size, k * LENGTH), model[:, k], cve[:, k])


def _null_bound(n_tracks: int) -> int:
    # Each track is tested once per counted window from the MIN_WINDOWS-th on; each test
    # flags an unbiased track with probability <= ALPHA (the t-test alone; the 25 % rule
    # only removes flags), so by the union bound a track is flagged with probability
    # <= tests * ALPHA. Upper 99.9 % binomial quantile of the flagged count.
    per_track = (N_WINDOWS - MIN_WINDOWS + 1) * ALPHA
    return int(binom.ppf(0.999, n_tracks, per_track))


def test_an_unbiased_model_is_not_flagged(pairs) -> None:
    _, known, unknown = pairs
    check = ModelCheck(LENGTH)
    _feed(check, known, unknown)
    flagged = int(check.flagged(np.arange(N_TRACKS)).sum())
    print(f"\nunbiased: {flagged} of {N_TRACKS} tracks flagged (bound {_null_bound(N_TRACKS)}), "
          f"session ratio {check.session_ratio():.3f} over {check.session_windows()} windows")
    assert not check.session_flagged
    assert check.session_windows() == N_TRACKS * N_WINDOWS
    assert abs(check.session_ratio() - 1.0) < 0.05
    assert flagged <= _null_bound(N_TRACKS)


def test_a_precise_unbiased_model_is_not_flagged_by_the_cves_skew(pairs) -> None:
    # A model much less noisy than the CVE (here: the true D itself). The sigma-unknown
    # CVE of a 10-point window is right-skewed, so a track whose few CVE windows happen
    # to be low also has a small sample SD of the differences: the t-test alone flagged
    # such tracks far above its level (the shipped features model had one of 20 tracks of
    # 120 frames flagged in most sessions). The session's pooled relative variance bounds
    # each track's standard error from below: 0 of 300 tracks flagged here, 9 without the
    # bound (both within the union bound over the repeated tests asserted below).
    d, _, unknown = pairs
    model = np.repeat(d[:, None], N_WINDOWS, axis=1)
    check = ModelCheck(LENGTH)
    _feed(check, model, unknown)
    flagged = int(check.flagged(np.arange(N_TRACKS)).sum())
    print(f"\nprecise model: {flagged} of {N_TRACKS} tracks flagged (bound "
          f"{_null_bound(N_TRACKS)}), pooled relative variance "
          f"{check.pooled_relative_variance():.3f}")
    assert not check.session_flagged
    assert flagged <= _null_bound(N_TRACKS)


def test_a_model_biased_on_some_tracks_is_flagged_on_those(pairs) -> None:
    _, known, unknown = pairs
    biased = np.zeros(N_TRACKS, dtype=bool)
    biased[::10] = True  # 30 tracks where the model answers 40 % low
    model = np.where(biased[:, None], 0.6 * known, known)
    check = ModelCheck(LENGTH)
    _feed(check, model, unknown)
    flagged = check.flagged(np.arange(N_TRACKS))
    print(f"\n{flagged[biased].sum()} of {biased.sum()} biased tracks flagged, "
          f"{flagged[~biased].sum()} of {(~biased).sum()} others; session ratio "
          f"{check.session_ratio():.3f}")
    assert not check.session_flagged  # 10 % of the tracks do not make the session biased
    assert flagged[biased].mean() >= 0.8
    assert flagged[~biased].sum() <= _null_bound(int((~biased).sum()))
    assert check.n_flagged_tracks == int(flagged.sum())
    # An ended track is forgotten.
    tid = int(np.flatnonzero(flagged)[0])
    check.drop(tid)
    assert not check.flagged(np.array([tid]))[0]


def test_a_model_biased_for_the_whole_acquisition_is_flagged_at_once(pairs) -> None:
    _, known, unknown = pairs
    check = ModelCheck(LENGTH)
    ids = np.arange(N_TRACKS)
    # first windows of every track: 300 pairs, enough for the session
    check.update(ids, np.zeros(N_TRACKS, dtype=np.int64), 0.6 * known[:, 0], unknown[:, 0])
    assert check.session_flagged
    assert check.flagged(np.array([0, 12345])).all()  # also tracks not seen yet
    assert check.session_ratio() == pytest.approx(0.6 * known[:, 0].sum() / unknown[:, 0].sum())


def test_overlapping_windows_are_counted_once_per_window_length() -> None:
    check = ModelCheck(LENGTH)
    ids = np.zeros(3 * LENGTH, dtype=np.int64)
    starts = np.arange(3 * LENGTH)  # stride-1 windows of one track
    check.update(ids, starts, np.ones(ids.size), np.ones(ids.size))
    assert check.session_windows() == 3  # starts 0, 10, 20
    check.update(np.array([0]), np.array([25]), np.array([1.0]), np.array([math.nan]))
    assert check.session_windows() == 3  # non-finite pairs are not counted


# --------------------------------------------------------- through the window estimator
@pytest.fixture(scope="module")
def features_model():
    from livespt.server.inference.resident import ModelRegistry

    reg = ModelRegistry(None, "cpu")
    yield reg.track_model
    reg.close()


def test_the_window_estimator_lets_the_cve_answer_for_a_biased_model(
        features_model, monkeypatch) -> None:
    from livespt.models.vit.estimator import ViTPrediction
    from livespt.server.pipeline.estimate import Acquisition, WindowEstimator
    from livespt.server.pipeline.windows import DueWindows, WindowConfig, sliding_windows

    rng = np.random.default_rng(9)
    n, frames = 20, 120
    traj = simulate_trajectories(n, frames, d_um2_s=0.3, frame_interval_s=DT, exposure_s=DT,
                                 seed=10)
    xy = traj.mean_um.numpy() + rng.normal(0.0, 0.02, (n, frames, 2))
    cfg = WindowConfig(length=LENGTH)
    due = DueWindows.concat([sliding_windows(cfg, i, np.arange(frames), xy[i],
                                             np.full(frames, 0.02)) for i in range(n)],
                            LENGTH, None)
    acq = Acquisition(frame_interval_s=DT, exposure_s=DT)

    honest = WindowEstimator(cfg, acq, features_model)
    out = honest.estimate(due)
    methods = {e.method for e in out}
    print(f"\nshipped features model on its own kind of tracks: {methods}, session ratio "
          f"{honest.check.session_ratio():.3f}")
    assert methods <= {features_model.method, "cve:ood"}
    assert honest.n_model_bias == 0 and not honest.check.session_flagged

    original = features_model.estimate_guarded

    def halved(*args, **kwargs):
        pred, ood = original(*args, **kwargs)
        return ViTPrediction(0.5 * pred.d_um2_s, 0.5 * pred.d_low_um2_s,
                             0.5 * pred.d_high_um2_s, pred.log_sd), ood

    monkeypatch.setattr(features_model, "estimate_guarded", halved)
    biased = WindowEstimator(cfg, acq, features_model)
    out_b = biased.estimate(due)
    assert biased.check.session_flagged
    flagged = [e for e in out_b if e.method.endswith(METHOD_SUFFIX)]
    assert len(flagged) == biased.n_model_bias > 0.9 * len(out_b)
    # Their answer is the CVE's: the same as an estimator without a model gives.
    plain = {(e.track_id, e.frame_start): e for e in WindowEstimator(cfg, acq).estimate(due)}
    for e in flagged:
        ref = plain[(e.track_id, e.frame_start)]
        assert e.method == ref.method + METHOD_SUFFIX
        assert e.d_um2_s == pytest.approx(ref.d_um2_s, rel=1e-12)


# --------------------------------------------------------------- the track-sigma check
def test_track_sigma_check_keeps_the_track_sigma_where_the_model_holds(pairs) -> None:
    """Model tracks: the sigma-known CVE varies less than the sigma-unknown one: kept."""
    from livespt.server.pipeline.model_check import TrackSigmaCheck

    _, known, unknown = pairs
    check = TrackSigmaCheck(LENGTH)
    ids = np.arange(N_TRACKS)
    for k in range(N_WINDOWS):
        check.update(ids, np.full(N_TRACKS, k * LENGTH), known[:, k], unknown[:, k])
    print(f"\nmodel tracks: z = {check.z():.1f} over {check.pairs()} pairs")
    assert check.pairs() == N_TRACKS * (N_WINDOWS - 1)
    assert not check.flagged and check.z() < -3.0


def test_track_sigma_check_switches_when_the_track_sigma_varies_more(pairs) -> None:
    from livespt.server.pipeline.model_check import TRACK_SIGMA_MIN_PAIRS, TrackSigmaCheck

    d, _, unknown = pairs
    rng = np.random.default_rng(3)
    # an estimator centred like the CVE but with 1.5x its spread around the track's D
    worse = d[:, None] + 1.5 * (unknown - d[:, None]) + 0.01 * rng.normal(size=unknown.shape)
    check = TrackSigmaCheck(LENGTH)
    ids = np.arange(N_TRACKS)
    for k in range(N_WINDOWS):
        check.update(ids, np.full(N_TRACKS, k * LENGTH), worse[:, k], unknown[:, k])
        if check.flagged:
            break
    print(f"\nworse track sigma: flagged after window {k}, {check.pairs()} pairs")
    assert check.flagged and TRACK_SIGMA_MIN_PAIRS <= check.pairs() <= 3 * N_TRACKS
    check.drop(0)  # ended tracks are forgotten; the session's decision stays
    assert check.flagged


def test_window_estimator_uses_the_sigma_unknown_cve_after_the_switch(monkeypatch) -> None:
    import livespt.server.pipeline.model_check as mc
    from livespt.server.pipeline.estimate import Acquisition, WindowEstimator
    from livespt.server.pipeline.windows import DueWindows, WindowConfig, sliding_windows

    rng = np.random.default_rng(12)
    n, frames = 60, 60
    traj = simulate_trajectories(n, frames, d_um2_s=0.2, frame_interval_s=DT, exposure_s=DT,
                                 seed=13)
    xy = traj.mean_um.numpy() + rng.normal(0.0, SIGMA_UM, (n, frames, 2))
    cfg = WindowConfig(length=LENGTH, stride=LENGTH)
    due = DueWindows.concat([sliding_windows(cfg, i, np.arange(frames), xy[i],
                                             np.full(frames, np.nan)) for i in range(n)],
                            LENGTH, None)
    due = due.with_track_noise(np.full(len(due), SIGMA_UM), np.zeros(len(due)))
    acq = Acquisition(frame_interval_s=DT, exposure_s=DT)
    est = WindowEstimator(cfg, acq, use_fitted_sigma=False)
    out = est.estimate(due)
    assert {e.method for e in out} == {"cve:track-sigma"} and not est.sigma_check.flagged
    # Force the decision: the next windows get the sigma-unknown CVE, said in `method`.
    monkeypatch.setattr(mc, "TRACK_SIGMA_Z", -1e9)
    switched = WindowEstimator(cfg, acq, use_fitted_sigma=False)
    out2 = switched.estimate(due)
    assert switched.sigma_check.flagged
    plain = WindowEstimator(cfg, acq, use_fitted_sigma=False).estimate(
        DueWindows(due.track_ids, due.frames, due.values))
    assert {e.method for e in out2} == {"cve:sigma-check"}
    assert switched.n_sigma_check == len(out2)
    np.testing.assert_allclose([e.d_um2_s for e in out2], [e.d_um2_s for e in plain],
                               rtol=1e-12)


# ------------------------------------------------------------------ the noise spread
def _due_with_track_noise(noise_sd_per_window: np.ndarray, seed: int, d: float = 0.2):
    """Tracks of 120 frames whose noise SD changes every LENGTH frames (one value per
    window); each track's noise as the session would know it: the RMS over its windows."""
    from livespt.server.pipeline.windows import DueWindows, WindowConfig, sliding_windows

    n, n_win = noise_sd_per_window.shape
    frames = n_win * LENGTH
    rng = np.random.default_rng(seed)
    traj = simulate_trajectories(n, frames, d_um2_s=d, frame_interval_s=DT, exposure_s=DT,
                                 seed=seed + 1)
    sd = np.repeat(noise_sd_per_window, LENGTH, axis=1)[:, :, None]
    xy = traj.mean_um.numpy() + rng.normal(size=(n, frames, 2)) * sd
    cfg = WindowConfig(length=LENGTH, stride=LENGTH)
    due = DueWindows.concat([sliding_windows(cfg, i, np.arange(frames), xy[i],
                                             np.full(frames, np.nan)) for i in range(n)],
                            LENGTH, None)
    track_sd = np.sqrt(np.mean(noise_sd_per_window**2, axis=1))[due.track_ids]
    return cfg, due.with_track_noise(track_sd, np.zeros(len(due)), None,
                                     np.full(len(due), d))


@pytest.mark.parametrize("varies", [False, True])
def test_noise_spread_is_measured_and_used_by_the_track_sigma_windows(varies: bool) -> None:
    from livespt.server.pipeline.estimate import Acquisition, WindowEstimator
    from livespt.server.pipeline.model_check import NOISE_SPREAD_MIN_WINDOWS

    rng = np.random.default_rng(21)
    n, n_win, d = 300, 12, 0.2
    # per window, noise SD either constant or drawn between 0.3x and 1.7x the base
    # (0.08 um: sigma^2 = 0.3 x 2 D dt, where a changing noise level matters)
    base = 0.08 * np.ones((n, n_win))
    sd = base * rng.uniform(0.3, 1.7, base.shape) if varies else base
    cfg, due = _due_with_track_noise(sd, seed=22, d=d)
    est = WindowEstimator(cfg, Acquisition(frame_interval_s=DT, exposure_s=DT),
                          use_fitted_sigma=False)
    out = est.estimate(due)
    summary = est.noise_spread.summary()
    assert summary["windows"] == len(due) >= NOISE_SPREAD_MIN_WINDOWS
    # the true spread of each window's noise variance around its track's
    true_var = float(np.mean((sd**2 - np.mean(sd**2, axis=1, keepdims=True)) ** 2))
    print(f"\nvaries={varies}: sqrt(S) {summary['sigma2_sd_um2']} um^2 "
          f"(true {math.sqrt(true_var):.2e}), z {summary['z']}")
    if varies:
        assert summary["z"] > 5.0
        assert est.noise_spread.variance_um4() == pytest.approx(true_var, rel=0.5)
    else:
        assert abs(summary["z"]) < 4.0
    # the windows answered after the spread was known cover D as they claim
    late = [e for e in out if e.frame_start >= (n_win // 2) * LENGTH]
    covered = np.mean([e.d_low_um2_s <= d <= e.d_high_um2_s for e in late])
    assert abs(covered - 0.9) <= 5.0 * math.sqrt(0.09 / len(late))
