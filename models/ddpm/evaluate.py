"""How well a localizer does, against the truth and the exact references.

Data come as :class:`SmlmSet` (frames in photo-electrons, true positions, and the camera
and PSF they were made with), from any simulator: :func:`ours` makes them with
:func:`~livespt.models.simulate.simulate_smlm`; ``benchmarks/accuracy/smlm_deeptrack.py``
with DeepTrack2's optics and noise (a pupil-function PSF, not our Gaussian).

* :func:`detection`: precision and recall of the emitters, matched one to one within
  0.5 px (frames of several emitters);
* :func:`isolated`: frames of one emitter: RMSE of the position, its ratio to the CRLB,
  the z-scores ``error / reported SD`` (their SD is 1 when the reported SD is right) and
  the reported SD over the MCMC posterior SD of the same frame. CRLB and MCMC use the
  pixel-integrated Gaussian PSF of ``psf_sigma_px``: exact for our data, an approximation
  for a PSF of another shape (``gaussian_psf`` says which, and the report labels it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from livespt.models.ddpm.emitters import Emitters, locate_emitters, match_positions
from livespt.models.ddpm.localizer import EMITTERS_FROM, Localizer
from livespt.models.localize import crlb, fit_emitters, pack, sample_posterior


@dataclass
class SmlmSet:
    """Frames with known emitters.

    Attributes
    ----------
    name : str
        The data's source, for reports.
    frames_e : ndarray, shape (N, H, W)
        Frames in photo-electrons (offset removed, divided by the gain).
    positions_px : list of ndarray, shape (K, 2)
        True ``(x, y)`` of each frame's emitters, pixels.
    photons, background, read_noise_e, psf_sigma_px : float
        Photons per emitter, background photons per pixel, read noise (e-) and the
        Gaussian PSF width (px) they were made with (or its Gaussian equivalent).
    gaussian_psf : bool
        Whether the PSF is the pixel-integrated Gaussian (the CRLB and MCMC are exact).
    """

    name: str
    frames_e: NDArray[np.float64]
    positions_px: list[NDArray[np.float64]]
    photons: float
    background: float
    read_noise_e: float
    psf_sigma_px: float
    gaussian_psf: bool


def ours(n_frames: int, n_emitters: int | tuple[int, int], seed: int, i0: float = 200.0,
         background: float = 2.0, read_noise_e: float = 1.0, sigma_px: float = 0.92
         ) -> SmlmSet:
    """Frames from our simulator at the seed's settings (20 x 20 px, disc of radius 7 px).

    Parameters
    ----------
    n_frames : int
        Frames.
    n_emitters : int or (int, int)
        Emitters per frame (fixed, or an inclusive range).
    seed : int
        Seed.
    i0, background, read_noise_e, sigma_px : float
        Photons per emitter, background photons per pixel, read noise (e-), PSF SD (px).

    Returns
    -------
    SmlmSet
    """
    from livespt.models.simulate import simulate_smlm

    b = simulate_smlm(n_frames, n_emitters=n_emitters, i0=i0, sigma_x_px=sigma_px,
                      background_photons=background, read_noise_e=read_noise_e, seed=seed)
    pos = [b.positions_px[k][b.mask[k]].numpy() for k in range(n_frames)]
    return SmlmSet("ours (simulate_smlm)", b.frames.numpy().astype(np.float64), pos, i0,
                   background, read_noise_e, sigma_px, True)


CHUNK_FRAMES = 8
"""Frames drawn per call (one batch of ``frames x samples`` images). On 2 CPUs, 48 frames
of 16 samples at once drew 0.41 frames/s, in chunks of 8 0.63 (1-4: 0.63-0.96, noisy)."""


NEIGHBOUR_BINS_PX = ((0.0, 1.0), (1.0, 1.5), (1.5, 2.0), (2.0, 3.0), (3.0, float("inf")))
"""Bins of the distance from an emitter to its nearest neighbour (px) for the recall."""


def _read(loc: Localizer, frames: NDArray[np.float64], samples: int, steps: int,
          threshold: float) -> dict[str, list[Emitters]]:
    """Each frame's emitters by every read-out (:data:`EMITTERS_FROM`), same samples."""
    out: dict[str, list[Emitters]] = {r: [] for r in EMITTERS_FROM}
    for start in range(0, len(frames), CHUNK_FRAMES):
        smp, est = loc.draw(frames[start:start + CHUNK_FRAMES], samples, n_steps=steps,
                            first_frame=start)
        for sm, es in zip(smp.numpy(), est.numpy(), strict=True):
            for r in EMITTERS_FROM:
                out[r].append(locate_emitters(sm, loc.upsample, loc.sigma_y_px, threshold,
                                              es if r == "estimate" else None))
    return out


def _count_by_neighbour(truth: NDArray[np.float64], hit: set[int],
                        by_gap: dict[str, list[int]]) -> None:
    """Add each true emitter (found or not) to its bin of :data:`NEIGHBOUR_BINS_PX`."""
    d = np.linalg.norm(truth[:, None] - truth[None], axis=2)
    d[np.diag_indices(len(truth))] = np.inf
    gaps = d.min(axis=1)
    for (lo, hi), key in zip(NEIGHBOUR_BINS_PX, by_gap, strict=True):
        inside = np.nonzero((gaps >= lo) & (gaps < hi))[0]
        by_gap[key][0] += sum(int(i) in hit for i in inside)
        by_gap[key][1] += len(inside)


def detection(loc: Localizer, data: SmlmSet, samples: int = 16, steps: int = 20,
              threshold: float = 0.3) -> dict[str, Any]:
    """Precision and recall of the emitters found (matched within 0.5 px).

    Parameters
    ----------
    loc : Localizer
        The localizer.
    data : SmlmSet
        Frames with their true emitters.
    samples, steps, threshold
        As :meth:`Localizer.localize` (fast sampler, seed 0).

    Returns
    -------
    dict
        ``precision``, ``recall``, ``emitters``, ``found`` of the emitters found on phi's
        estimate (what users get), and ``mean_precision``, ``mean_recall``, ``mean_found``
        of those found on the samples' mean (the seed's read-out); and
        ``recall_by_neighbour_px``: on phi's estimate, emitters found and emitters in each
        bin of the distance to their nearest neighbour (:data:`NEIGHBOUR_BINS_PX`).
    """
    read = _read(loc, data.frames_e, samples, steps, threshold)
    counts = {r: [0, 0, 0] for r in EMITTERS_FROM}
    by_gap: dict[str, list[int]] = {f"{lo:g}-{hi:g}": [0, 0] for lo, hi in NEIGHBOUR_BINS_PX}
    for r in EMITTERS_FROM:
        for k, em in enumerate(read[r]):
            truth = data.positions_px[k]
            found = np.stack([em.x_px, em.y_px], axis=1)
            pairs = match_positions(truth, found)
            m = len(pairs)
            c = counts[r]
            c[0], c[1], c[2] = c[0] + m, c[1] + len(found) - m, c[2] + len(truth) - m
            if r == "estimate":
                _count_by_neighbour(truth, {i for i, _ in pairs}, by_gap)

    def ratio(a: int, b: int) -> float:
        return round(a / b, 4) if b else float("nan")

    tp, fp, fn = counts["estimate"]
    mtp, mfp, mfn = counts["mean"]
    return {"precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn),
            "emitters": tp + fn, "found": tp + fp,
            "mean_precision": ratio(mtp, mtp + mfp), "mean_recall": ratio(mtp, mtp + mfn),
            "mean_found": mtp + mfp,
            "recall_by_neighbour_px": {k: {"found": v[0], "emitters": v[1]}
                                       for k, v in by_gap.items()}}


def _errors(ems: list[Emitters], data: SmlmSet) -> tuple[list[int], NDArray[np.float64],
                                                           NDArray[np.float64]]:
    """Frames with a detection, and each one's error and reported SD of the nearest find."""
    frames, err, sd = [], [], []
    for k, em in enumerate(ems):
        truth = data.positions_px[k][0]
        if len(em.x_px) == 0:
            continue
        j = int(np.argmin(np.hypot(em.x_px - truth[0], em.y_px - truth[1])))
        frames.append(k)
        err.append([em.x_px[j] - truth[0], em.y_px[j] - truth[1]])
        sd.append([em.x_sd_px[j], em.y_sd_px[j]])
    return frames, np.array(err).reshape(-1, 2), np.array(sd).reshape(-1, 2)


def isolated(loc: Localizer, data: SmlmSet, samples: int = 16, steps: int = 20,
             mcmc_frames: int = 0, threshold: float = 0.3) -> dict[str, Any]:
    """Position error against the CRLB, and the reported SD against the truth and MCMC.

    Parameters
    ----------
    loc : Localizer
        The localizer.
    data : SmlmSet
        Frames of one emitter each.
    samples, steps, threshold
        As :meth:`Localizer.localize`.
    mcmc_frames : int
        The first frames also sampled by MCMC (4,000 samples after 1,000 of burn-in).

    Returns
    -------
    dict
        For the emitters found on phi's estimate (what users get):
        ``frames_with_a_detection``, ``rmse_px``, ``bias_px`` (mean error, x and y),
        ``crlb_rms_px``, ``rmse_over_crlb``, ``median_reported_sd_px``, ``z_score_sd``,
        ``reported_sd_over_mcmc_sd_median``, ``crlb_psf`` (``exact`` or ``gaussian
        approximation``) and ``z_scores`` (one ``(x, y)`` pair per frame with a
        detection); under ``mean`` the same for those found on the samples' mean.
    """
    shape = data.frames_e.shape[1:]
    read = _read(loc, data.frames_e, samples, steps, threshold)
    bound, mcmc_sd = {}, {}
    for k in range(len(data.frames_e)):
        truth = data.positions_px[k][0]
        theta = pack([truth[0]], [truth[1]], [data.photons], max(data.background, 1e-3))
        bound[k] = crlb(theta, shape, data.psf_sigma_px, data.read_noise_e)[:2]
        if k < mcmc_frames:
            frame = data.frames_e[k]
            fit = fit_emitters(frame, theta, data.psf_sigma_px, data.read_noise_e)
            chain = sample_posterior(frame, fit.theta, data.psf_sigma_px, data.read_noise_e,
                                     n_samples=4000, burn_in=1000, seed=k)
            mcmc_sd[k] = chain.sd()[:2]
    out: dict[str, Any] = {}
    for r in EMITTERS_FROM:
        frames, err_a, sd_a = _errors(read[r], data)
        if not frames:
            out[r] = {"frames_with_a_detection": 0}
            continue
        bound_a = np.array([bound[k] for k in frames])
        vs_mcmc = np.array([sd_a[i] / mcmc_sd[k] for i, k in enumerate(frames)
                            if k in mcmc_sd]).reshape(-1, 2)
        z = err_a / np.maximum(sd_a, 1e-9)
        out[r] = {
            "frames": len(data.frames_e), "frames_with_a_detection": len(frames),
            "rmse_px": round(float(np.sqrt(np.mean(err_a ** 2))), 4),
            "bias_px": np.round(err_a.mean(axis=0), 4).tolist(),
            "median_abs_error_px": round(float(np.median(np.abs(err_a))), 4),
            "crlb_rms_px": round(float(np.sqrt(np.mean(bound_a ** 2))), 4),
            "rmse_over_crlb": round(float(np.sqrt(np.mean(err_a ** 2)
                                                  / np.mean(bound_a ** 2))), 3),
            "median_reported_sd_px": round(float(np.median(sd_a)), 4),
            "z_score_sd": round(float(np.std(z)), 3),
            "z_score_sd_robust": round(float(1.4826 * np.median(np.abs(z - np.median(z)))), 3),
            "reported_sd_over_mcmc_sd_median": (round(float(np.median(vs_mcmc)), 3)
                                                if len(vs_mcmc) else None),
            "mcmc_frames": len(vs_mcmc),
            "crlb_psf": "exact" if data.gaussian_psf else "gaussian approximation",
            "z_scores": np.round(z, 3).tolist(),
        }
    result = dict(out["estimate"])
    result["mean"] = out["mean"]
    return result


CARD_CHECK = {"detection_frames": 20, "isolated_frames": 20, "samples": 8, "steps": 20,
              "seed_detection": 101, "seed_isolated": 102}
"""The small evaluation stored in a shipped card's ``metrics.check``, recomputed by the
tests (same data, same samples: the same numbers within float tolerance)."""


def card_check(loc: Localizer) -> dict[str, Any]:
    """:data:`CARD_CHECK`'s evaluation on our simulator (under a minute on one core).

    Small on purpose (a test recomputes it): a reproduction check of the file, not an
    accuracy claim; those are in the report (``benchmarks/bench_localizer.py``).
    """
    c = CARD_CHECK
    det = detection(loc, ours(c["detection_frames"], (1, 5), c["seed_detection"]),
                    c["samples"], c["steps"])
    iso = isolated(loc, ours(c["isolated_frames"], 1, c["seed_isolated"]), c["samples"],
                   c["steps"])
    return {"settings": dict(c), "precision": det["precision"], "recall": det["recall"],
            "rmse_px": iso.get("rmse_px"), "z_score_sd": iso.get("z_score_sd"),
            "median_reported_sd_px": iso.get("median_reported_sd_px")}
