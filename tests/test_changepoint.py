"""Tests of the online change-of-D detector (server/pipeline/changepoint.py).

Statistical tests run on tracks from the project's simulator (dt = 0.05 s, exposure =
interval, 10 sub-steps, plus Gaussian localization noise of 20-30 nm), with fixed
seeds; their tolerances are Monte-Carlo bands (Poisson for alarm counts). Measured
numbers are printed (``pytest -s``) and quoted in docs/pipeline.md.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from scipy.stats import poisson

from livespt.models.simulate import simulate_trajectories
from livespt.server.pipeline.changepoint import (
    CALIBRATION_MIN_SEGMENT_STEPS,
    CALIBRATION_RATES_PER_1000,
    CALIBRATION_THRESHOLDS,
    MEDIAN_CONFIRM_Z,
    ChangeConfig,
    ChangePoint,
    TrackChangeDetector,
    calibrated_threshold,
)
from livespt.server.pipeline.changepoint_bank import ChangeDetectorBank
from livespt.server.pipeline.scoring import change_point_pairs, match_change_points

DT = 0.05


def simulate(
    n_tracks: int, n_frames: int, d_um2_s: object, sigma_um: float,
    change_frames: Sequence[int] = (), seed: int = 0,
) -> tuple[np.ndarray, float]:
    """Noisy positions (P, T, 2) in um and the simulator's exact blur coefficient."""
    tr = simulate_trajectories(n_tracks, n_frames, d_um2_s, DT, change_frames=change_frames,
                               seed=seed)
    rng = np.random.default_rng(seed + 10_000)
    pos = tr.mean_um.numpy() + rng.normal(0.0, sigma_um, (n_tracks, n_frames, 2))
    return pos, tr.blur_coefficient


def run(config: ChangeConfig, pos: np.ndarray, sigma_um: float,
        keep: np.ndarray | None = None) -> list[list[ChangePoint]]:
    """Feed each track (optionally only the frames where ``keep``) to its own detector."""
    out = []
    for p in range(pos.shape[0]):
        det = TrackChangeDetector(config, track_id=p)
        events = []
        for f in range(pos.shape[1]):
            if keep is not None and not keep[p, f]:
                continue
            e = det.update(f, pos[p, f], sigma_um)
            if e is not None:
                events.append(e)
        out.append(events)
    return out


def config(blur: float, **kw: Any) -> ChangeConfig:
    return ChangeConfig(frame_interval_s=DT, exposure_s=DT, blur_coefficient=blur, **kw)


def poisson_upper(expected: float, p: float = 1e-3) -> int:
    """Count exceeded with probability < p when the mean is ``expected``."""
    return int(poisson.ppf(1 - p, expected))


# --------------------------------------------------------------------------- detection


@pytest.mark.parametrize(("d_before", "d_after", "max_latency"), [(0.1, 0.5, 9), (0.5, 0.1, 16)])
def test_detects_5x_change_with_small_latency_and_location_error(
    d_before: float, d_after: float, max_latency: float
) -> None:
    n, t, c, sigma = 100, 200, 100, 0.025
    pos, blur = simulate(n, t, [d_before, d_after], sigma, [c], seed=1)
    events = run(config(blur), pos, sigma)
    found = [min(ev, key=lambda e: abs(e.frame - c)) for ev in events if ev]
    found = [e for e in found if abs(e.frame - c) <= 10]
    rate = len(found) / n
    latency = np.median([e.detected_at_frame - c for e in found])
    err = np.abs([e.frame - c for e in found])
    print(f"\n{d_before}->{d_after}: detected {rate:.3f}, median latency {latency} frames, "
          f"median |frame error| {np.median(err)}, 90th pct {np.percentile(err, 90)}")
    # Misses: a false alarm shortly before the change restarts the history and
    # leaves few old-regime steps to compare with, or the change arrives on top of a
    # chance excursion and is first located too early (a second event follows).
    assert rate >= 0.9
    assert latency <= max_latency
    assert np.median(err) <= 2
    assert np.percentile(err, 90) <= 6
    # (4) D before and after: median within 20 % of the truth.
    before = np.median([e.d_before_um2_s for e in found])
    after = np.median([e.d_after_um2_s for e in found])
    print(f"  median d_before {before:.4f} (true {d_before}), d_after {after:.4f} (true {d_after})")
    assert before == pytest.approx(d_before, rel=0.2)
    assert after == pytest.approx(d_after, rel=0.2)
    # Intervals: ordered, and covering the truth most of the time (nominal 90 %, but
    # the change position is selected, and the few steps after it are the extreme ones).
    for e in found:
        assert e.d_before_low_um2_s <= e.d_before_um2_s <= e.d_before_high_um2_s
        assert e.d_after_low_um2_s <= e.d_after_um2_s <= e.d_after_high_um2_s
        assert e.steps_before >= 5 and e.steps_after >= 5
        assert e.score > config(blur).threshold
    cover_b = np.mean([e.d_before_low_um2_s <= d_before <= e.d_before_high_um2_s for e in found])
    cover_a = np.mean([e.d_after_low_um2_s <= d_after <= e.d_after_high_um2_s for e in found])
    print(f"  90 % interval coverage: before {cover_b:.2f}, after {cover_a:.2f}")
    assert cover_b >= 0.75 and cover_a >= 0.6


def test_successive_changes_are_found() -> None:
    n, t, sigma = 20, 360, 0.02
    pos, blur = simulate(n, t, [0.1, 0.5, 0.1], sigma, [120, 240], seed=2)
    events = run(config(blur), pos, sigma)
    tp = fp = fn = 0
    for ev in events:
        a, b, c = match_change_points([120, 240], [e.frame for e in ev])
        tp, fp, fn = tp + a, fp + b, fn + c
    print(f"\ntwo changes: TP {tp} FP {fp} FN {fn}")
    assert fn <= 1
    assert tp / (tp + fp + fn) >= 0.85


# --------------------------------------------------------------------------- false alarms


@pytest.mark.parametrize(("d", "sigma", "two_sided"), [(0.1, 0.025, True), (0.5, 0.02, True),
                                                        (0.01, 0.03, False)])
def test_false_alarm_rate_in_steady_state_matches_calibration(
    d: float, sigma: float, two_sided: bool
) -> None:
    # Long stationary tracks, alarms counted after the history window has filled:
    # the regime the threshold table is calibrated in. A high target rate (5 per
    # 1000) makes the Monte-Carlo check tight with few frames. Noise-dominated
    # tracks (x = sigma^2 / (D dt) - 2R = 1.5) are conservative (D >= 0 binds).
    n, t, burn = 40, 1100, 400
    target = 5.0
    pos, blur = simulate(n, t, d, sigma, seed=3)
    cfg = config(blur, false_alarm_per_1000=target)
    events = run(cfg, pos, sigma)
    alarms = sum(1 for ev in events for e in ev if e.detected_at_frame >= burn)
    frames = n * (t - burn)
    expected = target * frames / 1000
    print(f"\nD={d} sigma={sigma}: {alarms} alarms in {frames} track-frames "
          f"({alarms / frames * 1000:.2f} per 1000, target {target})")
    assert alarms <= poisson_upper(expected)
    if two_sided:
        # The GLR alone is calibrated (measured 0.9-1.1 x target); the median
        # confirmation (confirmed_by_medians) then drops the alarms whose step medians
        # do not differ by 3 standard errors: measured 0.41-0.45 x target here. The
        # table has not been recalibrated with the confirmation in the loop, so the
        # configured rate is an upper bound, not the rate itself.
        assert alarms >= 0.3 * expected


def test_false_alarms_on_short_stationary_tracks_within_target() -> None:
    # Track lengths as in the benchmark (100-200 frames): below the steady-state
    # target since the history is short for part of each track.
    n, t = 300, 200
    target = ChangeConfig(frame_interval_s=DT).false_alarm_per_1000
    d = np.where(np.arange(n) % 2 == 0, 0.1, 0.5)
    pos, blur = simulate(n, t, d, 0.025, seed=4)
    events = run(config(blur), pos, 0.025)
    alarms = sum(len(ev) for ev in events)
    frames = n * t
    print(f"\nstationary 200-frame tracks: {alarms} alarms in {frames} track-frames "
          f"({alarms / frames * 1000:.3f} per 1000, target {target})")
    assert alarms <= poisson_upper(target * frames / 1000)


@pytest.mark.parametrize("case", ["student-t noise", "sigma 10x too small"])
def test_false_alarms_hold_off_the_model(case: str) -> None:
    """Constant D, steps the model does not describe: heavy-tailed localization noise
    (Student t, 3 degrees of freedom: 1.7x the stated sigma and infinite kurtosis) or a
    sigma given 10x too small. The rate must stay within the configured 0.5 per 1000
    (one-sided Poisson bound). Without the median confirmation the t-noise case gave
    1.9 per 1000 (this module's docstring)."""
    n, t, sigma = 200, 500, 0.03
    pos, blur = simulate(n, t, 0.2, 0.0, seed=21)
    rng = np.random.default_rng(22)
    if case == "student-t noise":
        pos = pos + rng.standard_t(3, size=pos.shape) * sigma
        given = sigma
    else:
        pos = pos + rng.normal(size=pos.shape) * sigma
        given = sigma / 10
    cfg = config(blur)
    events = run(cfg, pos, given)
    alarms = sum(len(ev) for ev in events)
    frames = n * t
    print(f"\n{case}: {alarms} alarms in {frames} track-frames "
          f"({alarms / frames * 1000:.2f} per 1000, configured {cfg.false_alarm_per_1000})")
    assert alarms <= poisson_upper(cfg.false_alarm_per_1000 * frames / 1000)


def test_gaps_are_modelled() -> None:
    # 25 % of the frames missing at random: steps over k frames have variance
    # 2 D dt (k - 2R) + 2 sigma^2. A detector that ignored k would see the gap steps
    # as a higher D and alarm; this one stays within its target, and still finds
    # a change.
    n, t, sigma, target = 40, 1100, 0.025, 5.0
    rng = np.random.default_rng(5)
    keep = rng.random((n, t)) > 0.25
    pos, blur = simulate(n, t, 0.1, sigma, seed=5)
    events = run(config(blur, false_alarm_per_1000=target), pos, sigma, keep)
    frames = int(keep[:, 400:].sum())
    alarms = sum(1 for ev in events for e in ev if e.detected_at_frame >= 400)
    print(f"\ngaps: {alarms} alarms in {frames} track-frames, target {target} per 1000")
    assert alarms <= poisson_upper(target * frames / 1000)

    pos, blur = simulate(30, 200, [0.5, 0.1], sigma, [100], seed=6)
    events = run(config(blur), pos, sigma, keep[:30, :200])
    hits = sum(match_change_points([100], [e.frame for e in ev])[0] for ev in events)
    assert hits >= 27


def test_no_step_across_an_interval_of_unknown_length() -> None:
    # A camera that stalls for 8 frames: the positions after each stalled interval are
    # far from the ones before. Fed as steps of one interval they are a higher D (an
    # alarm); told that the intervals are unknown, the detector takes no step across
    # them and its history is that of the track without them.
    pos, blur = simulate(1, 200, 0.1, 0.025, seed=21)
    xy = pos[0].copy()
    stalled = np.arange(120, 128)
    rng = np.random.default_rng(22)
    for f in stalled:
        xy[f:] += rng.normal(0.0, 1.0, 2)  # steps of ~1.4 um (D = 0.1: ~0.1 um)
    cfg = config(blur)
    told, fed_all = TrackChangeDetector(cfg), TrackChangeDetector(cfg)
    bank = ChangeDetectorBank(cfg)
    ev_told, ev_all, ev_bank = [], [], []
    for f in range(xy.shape[0]):
        known = f not in stalled
        ev_told.append(told.update(f, xy[f], 0.025, interval_known=known))
        ev_bank.append(bank.update(0, f, xy[f], 0.025, interval_known=known))
        ev_all.append(fed_all.update(f, xy[f], 0.025))
    assert any(e is not None for e in ev_all)
    assert all(e is None for e in ev_told) and all(e is None for e in ev_bank)
    assert told.n_steps == xy.shape[0] - 1 - stalled.size
    # What crossed the stalled intervals does not matter: the track without the jumps,
    # told the same, has the same history and score.
    ref = TrackChangeDetector(cfg)
    for f in range(xy.shape[0]):
        ref.update(f, pos[0, f], 0.025, interval_known=f not in stalled)
    assert ref.n_steps == told.n_steps
    assert ref.last_score == pytest.approx(told.last_score, rel=1e-9, abs=1e-12)
    assert bank.last_score(0) == pytest.approx(told.last_score, rel=1e-9, abs=1e-12)


# --------------------------------------------------------------------------- Jaccard


def test_jaccard_on_tracks_with_zero_or_one_5x_change() -> None:
    # As in the AnDi 2024 challenge: change points matched within 10 frames,
    # JSC = TP / (TP + FP + FN) over the set.
    n, t, sigma = 160, 200, 0.025
    rng = np.random.default_rng(7)
    tp = fp = fn = 0
    for i in range(n):
        d0 = float(rng.choice([0.1, 0.5]))
        if i % 2 == 0:
            truth: list[int] = []
            pos, blur = simulate(1, t, d0, sigma, seed=100 + i)
        else:
            c = int(rng.integers(50, 150))
            truth = [c]
            pos, blur = simulate(1, t, [d0, 0.5 if d0 == 0.1 else 0.1], sigma, [c], seed=100 + i)
        (events,) = run(config(blur), pos, sigma)
        a, b, m = match_change_points(truth, [e.frame for e in events], 10)
        tp, fp, fn = tp + a, fp + b, fn + m
    jsc = tp / (tp + fp + fn)
    print(f"\nJaccard {jsc:.3f} (TP {tp}, FP {fp}, FN {fn})")
    assert jsc >= 0.8


def test_match_change_points() -> None:
    assert match_change_points([], []) == (0, 0, 0)
    assert match_change_points([50], []) == (0, 0, 1)
    assert match_change_points([], [3, 9]) == (0, 2, 0)
    assert match_change_points([50], [45, 58]) == (1, 1, 0)
    assert match_change_points([50], [61]) == (0, 1, 1)
    # The assignment maximizes matches: 55 must go to 60, not to the closer 50.
    assert match_change_points([50, 60], [41, 55]) == (2, 0, 0)
    with pytest.raises(ValueError, match="tolerance_frames"):
        match_change_points([1], [1], -1)
    # The pairs behind the counts: indices into the true and the predicted frames.
    t_idx, p_idx = change_point_pairs([50, 60], [41, 55, 90])
    assert sorted(zip(t_idx.tolist(), p_idx.tolist(), strict=True)) == [(0, 0), (1, 1)]


def test_resolvable_changes_are_scored_apart() -> None:
    # The accuracy report's second Jaccard: only true changes with >= 5 frame steps to the
    # neighbouring change or the track's ends; a report matched to another change counts
    # neither way, an unmatched report is still a false positive.
    import pandas as pd

    from benchmarks.accuracy.metrics import TruthD, change_scores

    d = np.full((1, 100), 0.1)
    d[0, 3:] = 0.5    # change at 3: 3 steps before it (not resolvable)
    d[0, 40:] = 0.1   # change at 40: resolvable
    d[0, 97:] = 0.5   # change at 97: 2 steps to the end (not resolvable)
    points = pd.DataFrame({"track_id": 0, "frame": np.arange(100), "particle_id": 0})
    changes = pd.DataFrame({"track_id": [0, 0, 0], "frame": [4, 42, 70]})
    s = change_scores(points, changes, TruthD(d))
    assert (s["true_positives"], s["false_positives"], s["false_negatives"]) == (2, 1, 1)
    assert s["resolvable_changes"] == 1
    assert (s["resolvable_true_positives"], s["resolvable_false_positives"],
            s["resolvable_false_negatives"]) == (1, 1, 0)
    assert s["jaccard_resolvable"] == pytest.approx(0.5)


# --------------------------------------------------------------------------- exactness


def _reference_scores(frames: np.ndarray, xy: np.ndarray, sig: np.ndarray, dt: float,
                      blur: float, m: int, w: int, threshold: float
                      ) -> tuple[list[float], list[tuple[int, int]]]:
    """Direct O(n^2) evaluation of the documented statistic, restarts included."""
    steps: list[tuple[int, float, float, float, float]] = []
    restart = 0
    scores, events = [], []
    for i in range(1, len(frames)):
        k = frames[i] - frames[i - 1]
        a = 2 * dt * (k - 2 * blur)
        s = sig[i - 1] ** 2 + sig[i] ** 2
        q = float(np.sum((xy[i] - xy[i - 1]) ** 2))
        steps.append((int(frames[i - 1]), q / (2 * a), s / a, a, s))
        hi = len(steps)
        lo = max(restart, hi - w)
        if hi - lo < 2 * m:
            scores.append(0.0)
            continue
        y = np.array([st[1] for st in steps[lo:hi]])
        c = np.array([st[2] for st in steps[lo:hi]])

        def loglik(yy: np.ndarray, cc: np.ndarray) -> float:
            u = max(yy.mean(), cc.mean())
            return -len(yy) * math.log(u) - yy.sum() / u

        full = loglik(y, c)
        llr = [loglik(y[:j], c[:j]) + loglik(y[j:], c[j:]) - full
               for j in range(m, hi - lo - m + 1)]
        jb = int(np.argmax(llr))
        d0 = max(0.0, float(np.mean(y - c)))
        a_mean = np.mean([st[3] for st in steps[lo:hi]])
        s_mean = np.mean([st[4] for st in steps[lo:hi]])
        rho = (2 * blur * d0 * dt - s_mean / 2) / (a_mean * d0 + s_mean)
        score = llr[jb] / (1 + 2 * rho**2)
        scores.append(score)
        split = m + jb
        med1, med2 = np.median(y[:split]), np.median(y[split:])
        se = math.sqrt(1 / split + 1 / (len(y) - split)) / math.log(2)
        # dispersion: pairs of y two steps apart, phi = 2 E[u^2] / (1 - E[u^2])
        pairs = [(y[t] - y[t - 2]) / (y[t] + y[t - 2]) for t in range(2, len(y))
                 if y[t] + y[t - 2] > 0]
        mu2 = float(np.mean(np.square(pairs))) if len(pairs) >= 10 else math.nan
        phi = 2 * mu2 / (1 - mu2) if len(pairs) >= 10 else 1.0
        if (score > threshold and abs(math.log(med2 / med1)) > MEDIAN_CONFIRM_Z * se
                and score / max(phi, 1.0) > threshold):
            restart = lo + split
            events.append((int(frames[i]), steps[restart][0]))
    return scores, events


def test_matches_direct_evaluation_with_gaps_varying_sigma_and_compaction() -> None:
    rng = np.random.default_rng(8)
    n = 700
    frames = np.cumsum(rng.integers(1, 4, n))
    sig = rng.uniform(0.0, 0.04, n)
    d = np.where((frames // 150) % 2 == 0, 0.05, 0.4)
    blur = 0.15
    steps = rng.normal(size=(n, 2)) * np.sqrt(2 * d * DT * (np.diff(frames, prepend=0) - 2 * blur)
                                              )[:, None]
    xy = np.cumsum(steps, axis=0) + rng.normal(size=(n, 2)) * sig[:, None]
    cfg = config(blur, max_history_steps=40, min_segment_steps=6)
    ref_scores, ref_events = _reference_scores(frames, xy, sig, DT, blur, 6, 40, cfg.threshold)
    det = TrackChangeDetector(cfg)
    scores, events = [], []
    for i in range(n):
        e = det.update(int(frames[i]), xy[i], float(sig[i]))
        if i:
            scores.append(det.last_score)
        if e is not None:
            events.append((e.detected_at_frame, e.frame))
    assert len(ref_events) >= 5  # restarts and compactions (window 40, 700 steps) happen
    assert events == ref_events
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-9, atol=1e-9)


def test_score_is_scale_invariant() -> None:
    # D in other units (positions x 10, sigma x 10): identical scores and events.
    pos, blur = simulate(1, 300, [0.1, 0.5], 0.02, [150], seed=9)
    a, b = TrackChangeDetector(config(blur)), TrackChangeDetector(config(blur))
    for f in range(300):
        ea = a.update(f, pos[0, f], 0.02)
        eb = b.update(f, 10 * pos[0, f], 0.2)
        assert a.last_score == pytest.approx(b.last_score, rel=1e-9, abs=1e-9)
        assert (ea is None) == (eb is None)
        if ea is not None and eb is not None:
            assert ea.frame == eb.frame
            assert eb.d_after_um2_s == pytest.approx(100 * ea.d_after_um2_s)


# --------------------------------------------------------------------------- calibration


def test_calibrated_threshold_table() -> None:
    rates = CALIBRATION_RATES_PER_1000
    for m, row in zip(CALIBRATION_MIN_SEGMENT_STEPS, CALIBRATION_THRESHOLDS, strict=True):
        assert len(row) == len(rates)
        assert all(np.diff(row) < 0)  # a higher target rate needs a lower threshold
        for r, h in zip(rates, row, strict=True):
            assert calibrated_threshold(r, m) == pytest.approx(h)
    # Beyond the table's longest minimal segment the last row is used (conservative).
    last = CALIBRATION_MIN_SEGMENT_STEPS[-1]
    assert calibrated_threshold(0.5, last + 7) == calibrated_threshold(0.5, last)
    mid = calibrated_threshold(0.3, 5)
    assert calibrated_threshold(0.5, 5) < mid < calibrated_threshold(0.2, 5)
    assert ChangeConfig(frame_interval_s=0.1, score_threshold=3.0).threshold == 3.0


# --------------------------------------------------------------------------- API and errors


def test_event_fields_and_restart() -> None:
    pos, blur = simulate(1, 200, [0.5, 0.05], 0.02, [100], seed=11)
    det = TrackChangeDetector(config(blur), track_id="t7")
    events = [e for f in range(200) if (e := det.update(f, pos[0, f], 0.02)) is not None]
    assert events
    e = events[-1]
    assert e.track_id == "t7"
    assert e.frame < e.detected_at_frame
    assert e.steps_after == e.detected_at_frame - e.frame
    row = e.to_dict()
    for col in ("frame", "detected_at_frame", "d_before_um2_s", "d_after_um2_s", "score"):
        assert col in row
    # After the event the history holds only the new regime's steps.
    assert det.n_steps == 200 - 1 - e.frame
    det.reset()
    assert det.n_steps == 0 and det.last_frame is None


def test_bank_routes_tracks_and_is_bounded() -> None:
    pos, blur = simulate(3, 200, [0.5, 0.05], 0.02, [100], seed=12)
    cfg = config(blur)
    solo = run(cfg, pos, 0.02)
    bank = ChangeDetectorBank(cfg)
    got: dict[int, list[ChangePoint]] = {0: [], 1: [], 2: []}
    for f in range(200):  # interleaved, as a session feeds them
        for p in range(3):
            e = bank.update(p, f, pos[p, f], 0.02)
            if e is not None:
                got[p].append(e)
    assert [got[p] for p in range(3)] == solo
    assert len(bank) == 3 and 1 in bank
    bank.drop(1)
    bank.drop(99)  # unknown: no error
    assert len(bank) == 2 and 1 not in bank

    small = ChangeDetectorBank(cfg, max_tracks=2)
    for f, tid in enumerate(("a", "b", "a", "c")):  # "b" is least recently used at "c"
        small.update(tid, f, (0.0, 0.0), 0.02)
    assert "b" not in small and "a" in small and "c" in small and small.evicted == 1


# --------------------------------------------------------------------------- batched bank


class _ReferenceBank:
    """The bank as it was before ``update_many``: one TrackChangeDetector per track, LRU."""

    def __init__(self, config: ChangeConfig, max_tracks: int) -> None:
        self.config, self.max_tracks, self.evicted = config, max_tracks, 0
        self.detectors: OrderedDict[Any, TrackChangeDetector] = OrderedDict()

    def update(self, tid: Any, frame: int, xy: Any, sigma: float,
               interval_known: bool = True) -> ChangePoint | None:
        det = self.detectors.get(tid)
        if det is None:
            det = self.detectors[tid] = TrackChangeDetector(self.config, track_id=tid)
            while len(self.detectors) > self.max_tracks:
                self.detectors.popitem(last=False)
                self.evicted += 1
        else:
            self.detectors.move_to_end(tid)
        return det.update(frame, xy, sigma, interval_known=interval_known)

    def drop(self, tid: Any) -> None:
        self.detectors.pop(tid, None)


def _assert_same_events(got: Sequence[ChangePoint], want: Sequence[ChangePoint]) -> None:
    """Same events in the same order: integers and ids equal, floats to 1e-9 relative."""
    assert len(got) == len(want), (got, want)
    for g, w in zip(got, want, strict=True):
        a, b = g.to_dict(), w.to_dict()
        assert a.keys() == b.keys()
        for key, value in b.items():
            if isinstance(value, float):
                assert a[key] == pytest.approx(value, rel=1e-9, abs=1e-12), (key, g, w)
            else:
                assert a[key] == value and type(a[key]) is type(value), (key, g, w)


@pytest.mark.parametrize(
    ("window", "min_segment", "max_tracks", "id_kind"),
    [
        (400, 5, 100_000, "array"),  # full default window, no eviction, numpy int ids
        (40, 6, 100_000, "list"),  # short window: compactions every ~40 steps
        (60, 5, 110, "str"),  # fewer slots than live tracks: evictions, re-created tracks
    ],
)
def test_update_many_matches_per_call_updates(
    window: int, min_segment: int, max_tracks: int, id_kind: str
) -> None:
    # 300 tracks over 360 frames: each starts at its own frame, lives 8-300 frames
    # (some too short to be tested), misses 15 % of its frames, and has 5x changes
    # of D at frames 120 and 240 (if alive then). Ended tracks are dropped (70 %) or
    # left to linger; 10 tracks are dropped mid-life and come back as new tracks.
    # 5 % of the frames come after an interval of unknown length (interval_known False).
    # Each frame is fed in a random order to update_many, to update in a loop, and
    # to the bank as it was (one TrackChangeDetector per track).
    n, t = 300, 360
    rng = np.random.default_rng(13)
    d0 = np.exp(rng.uniform(np.log(0.05), np.log(0.5), n))
    up = rng.random(n) < 0.5
    d = np.column_stack([d0, np.where(up, 5 * d0, d0 / 5), d0])
    pos, blur = simulate(n, t, d, 0.025, [120, 240], seed=14)
    first = rng.integers(0, t - 8, n)
    last = np.minimum(first + rng.integers(8, 301, n), t)  # exclusive
    seen = rng.random((n, t)) < 0.85
    sig = rng.uniform(0.0, 0.04, (n, t))
    cut = dict(zip(rng.choice(n, 10, replace=False).tolist(),
                   rng.integers(0, t, 10).tolist(), strict=True))
    names: list[Any] = [f"t{p}" for p in range(n)] if id_kind == "str" else list(range(n))
    known = rng.random(t) > 0.05
    cfg = config(blur, max_history_steps=window, min_segment_steps=min_segment,
                 false_alarm_per_1000=5.0)
    many = ChangeDetectorBank(cfg, max_tracks=max_tracks)
    loop = ChangeDetectorBank(cfg, max_tracks=max_tracks)
    ref = _ReferenceBank(cfg, max_tracks)
    n_events = n_compared = 0
    for f in range(t):
        live = np.flatnonzero((first <= f) & (f < last) & seen[:, f])
        live = rng.permutation(live)
        ids = [names[p] for p in live.tolist()]
        track_ids: Any = np.array(ids, dtype=np.int64) if id_kind == "array" else ids
        k = bool(known[f])
        got = many.update_many(track_ids, f, pos[live, f], sig[live, f], interval_known=k)
        one = [e for p, tid in zip(live.tolist(), ids, strict=True)
               if (e := loop.update(tid, f, pos[p, f], float(sig[p, f]),
                                    interval_known=k)) is not None]
        want = [e for p, tid in zip(live.tolist(), ids, strict=True)
                if (e := ref.update(tid, f, pos[p, f], float(sig[p, f]), k)) is not None]
        _assert_same_events(got, want)
        _assert_same_events(one, want)
        n_events += len(want)
        for tid in ids:
            if tid in ref.detectors:
                score = ref.detectors[tid].last_score
                assert many.last_score(tid) == pytest.approx(score, rel=1e-9, abs=1e-12)
                assert loop.last_score(tid) == pytest.approx(score, rel=1e-9, abs=1e-12)
                n_compared += 1
        ended = np.flatnonzero(last == f + 1).tolist()
        gone = [names[p] for p in ended if rng.random() < 0.7]
        gone += [names[p] for p, c in cut.items() if c == f]
        for tid in gone:
            for bank in (many, loop, ref):
                bank.drop(tid)
        assert len(many) == len(loop) == len(ref.detectors)
        assert many.evicted == loop.evicted == ref.evicted
        assert all(tid in many for tid in ref.detectors)
    print(f"\nwindow {window}, max_tracks {max_tracks}: {n_events} events, "
          f"{n_compared} scores compared, {ref.evicted} evictions")
    assert n_events >= 40
    if max_tracks < n:
        assert ref.evicted >= 50


def test_update_many_evicts_within_a_call_as_per_call_updates() -> None:
    pos, blur = simulate(2, 200, [0.5, 0.05], 0.02, [100], seed=15)
    cfg = config(blur)
    # A track updated early in a call and evicted later in it: its event is reported.
    solo = TrackChangeDetector(cfg, track_id="a")
    fire = next(f for f in range(200) if solo.update(f, pos[0, f], 0.02) is not None)
    bank = ChangeDetectorBank(cfg, max_tracks=1)
    for f in range(fire):
        bank.update("a", f, pos[0, f], 0.02)
    events = bank.update_many(["a", "b"], fire, pos[:, fire], np.full(2, 0.02))
    assert [e.track_id for e in events] == ["a"]
    assert "a" not in bank and "b" in bank and bank.evicted == 1
    # A track evicted earlier in the call by a new one comes back as a new track.
    many, ref = ChangeDetectorBank(cfg, max_tracks=2), _ReferenceBank(cfg, 2)
    batches = [["a", "b"], ["c", "a"], ["a", "b", "c"], ["b"], ["c", "a"]]
    for f, ids in enumerate(batches * 40):
        xy = pos[0, f] + 0.1 * np.arange(len(ids))[:, None]
        got = many.update_many(ids, f, xy, np.full(len(ids), 0.02))
        want = [e for i, tid in enumerate(ids) if (e := ref.update(tid, f, xy[i], 0.02))]
        _assert_same_events(got, want)
        assert list(many._slots) == list(ref.detectors)  # same tracks, same LRU order
        for tid in ref.detectors:
            assert many.last_score(tid) == pytest.approx(ref.detectors[tid].last_score,
                                                         rel=1e-9, abs=1e-12)
        assert many.evicted == ref.evicted
    assert ref.evicted > 100


def test_update_many_reuses_slots_and_shrinks() -> None:
    # White box: the slot arrays grow with the live tracks, are reused after drops
    # and repacked when few tracks are left, without changing any track's state.
    pos, blur = simulate(1000, 60, 0.2, 0.02, seed=16)
    cfg = config(blur, max_history_steps=20)
    bank, ref = ChangeDetectorBank(cfg), _ReferenceBank(cfg, 100_000)
    ids = np.arange(1000)
    for f in range(30):
        bank.update_many(ids, f, pos[:, f], np.full(1000, 0.02))
    assert len(bank) == 1000 and bank._hi.shape[0] == 1024
    for tid in range(10, 1000):
        bank.drop(tid)
    assert len(bank) == 10 and bank._hi.shape[0] <= 32
    for p in range(10):
        for f in range(30):
            ref.update(p, f, pos[p, f], 0.02)
    for f in range(30, 60):
        got = bank.update_many(ids[:10], f, pos[:10, f], np.full(10, 0.02))
        want = [e for p in range(10) if (e := ref.update(p, f, pos[p, f], 0.02))]
        _assert_same_events(got, want)
        for p in range(10):
            assert bank.last_score(p) == pytest.approx(ref.detectors[p].last_score, rel=1e-9)
    # Tracks coming and going: the slots of dropped tracks are reused.
    churn = ChangeDetectorBank(cfg)
    live = list(range(50))
    for f in range(60):
        churn.update_many(live, f, pos[[tid % 1000 for tid in live], f], np.full(50, 0.02))
        for tid in live[:5]:
            churn.drop(tid)
        live = live[5:] + [live[-1] + k for k in range(1, 6)]
    assert len(churn) == 45 and churn._hi.shape[0] <= 64


def test_update_many_rejects_bad_input_and_changes_nothing() -> None:
    cfg = ChangeConfig(frame_interval_s=0.05)
    bank = ChangeDetectorBank(cfg)
    assert bank.update_many([], 0, np.zeros((0, 2)), np.zeros(0)) == []
    xy, sig = np.zeros((3, 2)), np.full(3, 0.02)
    bank.update_many([1, 2, 3], 5, xy, sig)
    bad: list[tuple[tuple[Any, ...], str]] = [
        (([1, 2, 2], 6, xy, sig), "distinct"),
        (([1, [2], 3], 6, xy, sig), "hashable"),
        ((np.array([[1, 2, 3]]), 6, xy, sig), "track_ids"),
        ((np.array([1.0, 2.0, 3.0]), 6, xy, sig), "track_ids"),
        (([1, 2, 3], 5, xy, sig), "frame"),  # not after the tracks' last frame
        (([4, 3], 5, xy[:2], sig[:2]), "frame"),
        (([1, 2, 3], 6.0, xy, sig), "frame"),
        (([1, 2, 3], -1, xy, sig), "frame"),
        (([1, 2, 3], 6, xy[:2], sig), "xy_um"),
        (([1, 2, 3], 6, np.zeros((3, 3)), sig), "xy_um"),
        (([1, 2, 3], 6, np.array([[0, 0], [0, np.nan], [0, 0]]), sig), "xy_um"),
        (([1, 2, 3], 6, xy, sig[:2]), "sigma_um"),
        (([1, 2, 3], 6, xy, np.array([0.02, -0.01, 0.02])), "sigma_um"),
        (([1, 2, 3], 6, xy, np.array([0.02, np.inf, 0.02])), "sigma_um"),
    ]
    for args, name in bad:
        with pytest.raises(ValueError, match=name):
            bank.update_many(*args)
    # Nothing was changed: the tracks continue from frame 5, and no new track exists.
    assert len(bank) == 3 and 4 not in bank
    bank.update_many(np.array([3, 1, 2]), 6, xy + 0.01, 0.02)  # a scalar sigma is allowed
    with pytest.raises(KeyError):
        bank.last_score(4)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"frame_interval_s": 0.0}, "frame_interval_s"),
        ({"frame_interval_s": float("nan")}, "frame_interval_s"),
        ({"frame_interval_s": 0.05, "exposure_s": 0.06}, "exposure_s"),
        ({"frame_interval_s": 0.05, "exposure_s": -0.01}, "exposure_s"),
        ({"frame_interval_s": 0.05, "false_alarm_per_1000": 0.0}, "false_alarm_per_1000"),
        ({"frame_interval_s": 0.05, "false_alarm_per_1000": 100.0}, "false_alarm_per_1000"),
        ({"frame_interval_s": 0.05, "min_segment_steps": 2}, "min_segment_steps"),
        ({"frame_interval_s": 0.05, "min_segment_steps": 5.0}, "min_segment_steps"),
        ({"frame_interval_s": 0.05, "max_history_steps": 9}, "max_history_steps"),
        ({"frame_interval_s": 0.05, "max_history_steps": 10_000}, "max_history_steps"),
        ({"frame_interval_s": 0.05, "blur_coefficient": 0.3}, "blur_coefficient"),
        ({"frame_interval_s": 0.05, "score_threshold": -1.0}, "score_threshold"),
        ({"frame_interval_s": 0.05, "confidence": 1.0}, "confidence"),
    ],
)
def test_config_errors_name_the_field(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        ChangeConfig(**kwargs)  # type: ignore[arg-type]


def test_update_errors_name_the_argument() -> None:
    det = TrackChangeDetector(ChangeConfig(frame_interval_s=0.05))
    det.update(3, (0.0, 0.0), 0.02)
    bad = [
        ((3, (0.1, 0.1), 0.02), "frame"),  # not increasing
        ((2, (0.1, 0.1), 0.02), "frame"),
        ((4.0, (0.1, 0.1), 0.02), "frame"),
        ((True, (0.1, 0.1), 0.02), "frame"),
        ((-1, (0.1, 0.1), 0.02), "frame"),
        ((4, (0.1, 0.1, 0.1), 0.02), "xy_um"),
        ((4, (0.1, float("nan")), 0.02), "xy_um"),
        ((4, "ab", 0.02), "xy_um"),
        ((4, (0.1, 0.1), -0.01), "sigma_um"),
        ((4, (0.1, 0.1), float("inf")), "sigma_um"),
    ]
    for args, name in bad:
        with pytest.raises(ValueError, match=name):
            det.update(*args)  # type: ignore[arg-type]
    # A rejected position leaves the state untouched.
    assert det.last_frame == 3
    det.update(4, (0.1, 0.1), 0.02)
    with pytest.raises(ValueError, match="config"):
        TrackChangeDetector({"frame_interval_s": 0.05})  # type: ignore[arg-type]
    bank = ChangeDetectorBank(ChangeConfig(frame_interval_s=0.05))
    with pytest.raises(ValueError, match="track_id"):
        bank.update([1], 0, (0.0, 0.0), 0.02)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_tracks"):
        ChangeDetectorBank(ChangeConfig(frame_interval_s=0.05), max_tracks=0)
