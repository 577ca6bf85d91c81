"""The localizer at inference: frames in; mean KDE, per-pixel variance and emitters out.

phi's estimate conditions Psi; ``n_samples`` KDE samples of each frame are drawn in one
batch with the fast sampler (:func:`~livespt.models.ddpm.diffusion.sample_ddim`) or the
seed's ancestral one; their mean and variance are the maps, and emitters are read from
them (:mod:`~livespt.models.ddpm.emitters`). Frames of any size: phi is fully
convolutional, and Psi's input is padded to its multiple of ``2 ** (levels - 1)``.

Weights are one file (``format`` :data:`WEIGHTS_FORMAT`) holding both networks, their
configurations and the schedule; :func:`save` and :func:`load` (``weights_only=True``).
A file may have a JSON card beside it (same name, ``.json``: training, metrics, sha256);
:func:`load` refuses a file whose sha256 differs from its card's. The shipped localizer
lives in :data:`SHIPPED_DIR` (apart from the transformers' folder, whose every ``.pt`` is
a transformer).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from livespt.models import _validate
from livespt.models.ddpm.diffusion import Schedule, sample_ancestral, sample_ddim
from livespt.models.ddpm.emitters import Emitters, locate_emitters
from livespt.models.ddpm.networks import (
    ConditionalUNet,
    KdeNet,
    KdeNetConfig,
    UNetConfig,
    normalise_frames,
)
from livespt.models.vit.weights import WEIGHTS_DIR, sha256

WEIGHTS_FORMAT = "livespt-ddpm/1"
PHI_FORMAT = "livespt-phi/1"
"""Format of a file holding phi alone (``livespt train phi``), for ``train ddpm --phi-from``."""
"""The ``format`` of localizer weight files."""

SHIPPED_DIR = WEIGHTS_DIR / "localizer"
"""Where the shipped localizer weights and their card are."""

TARGETS = ("residual", "kde")
"""What Psi draws (:class:`Localizer`'s ``target``)."""


def frame_generator(seed: int, frame: int) -> torch.Generator:
    """The noise source of one frame's samples: seeded by ``(seed, frame)``.

    Parameters
    ----------
    seed : int
        The request's seed (>= 0).
    frame : int
        The frame's number in its movie (>= 0).

    Returns
    -------
    torch.Generator
    """
    state = np.random.SeedSequence([int(seed), int(frame)]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


EMITTERS_FROM = ("estimate", "mean")
"""Maps the emitters can be found on (:meth:`Localizer.localize`). Both estimate the
posterior mean KDE: phi's directly, the samples' mean with sampling noise and the DDPM's
own errors. In the report (150 isolated emitters per source) phi's gave positions 1.05 x
the CRLB on our frames (the samples' mean 1.14 x, with a bias of 0.03 px) and 1.17 x on
DeepTrack2's (1.22 x); precision and recall also favour it on both (docs/localization.md)."""


@dataclass(frozen=True)
class FrameLocalization:
    """One frame's result.

    Attributes
    ----------
    mean : ndarray, shape (upsample H, upsample W)
        Mean KDE over the samples (0 to 1).
    variance : ndarray, same shape
        Per-pixel variance of the KDE over the samples.
    emitters : Emitters
        Positions (low-resolution pixels) with their SD over the samples.
    """

    mean: NDArray[np.float32]
    variance: NDArray[np.float32]
    emitters: Emitters


class Localizer:
    """phi + Psi + schedule, ready to localize.

    Parameters
    ----------
    phi : KdeNet
        The KDE network.
    psi : ConditionalUNet
        The conditional noise predictor.
    schedule : Schedule
        The schedule Psi was trained with.
    sigma_y_px : float
        KDE kernel width of the training targets (fine pixels).
    target : {"residual", "kde"}
        What Psi was trained to draw: the KDE minus phi's estimate (the default; a sample
        is phi's estimate plus a drawn residual) or the KDE itself (the seed's).
    target_scale : float
        Psi draws the target times this (:func:`~livespt.models.ddpm.train.target_scale`).
    """

    def __init__(self, phi: KdeNet, psi: ConditionalUNet, schedule: Schedule,
                 sigma_y_px: float = 3.0, target: str = "residual",
                 target_scale: float = 1.0) -> None:
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
        self.phi = phi.eval()
        self.psi = psi.eval()
        self.schedule = schedule
        self.sigma_y_px = float(sigma_y_px)
        self.target = target
        self.target_scale = _validate.positive("target_scale", target_scale)
        self.upsample = phi.config.upsample
        self.card: dict[str, Any] = {}
        """The weights' card (empty when the file has none)."""

    def sample(self, frames: Any, n_samples: int = 32, sampler: str = "fast",
               n_steps: int = 20, seed: int = 0, first_frame: int = 0,
               generators: Sequence[torch.Generator] | None = None) -> Tensor:
        """KDE samples of each frame: :meth:`draw` without phi's estimate."""
        return self.draw(frames, n_samples, sampler, n_steps, seed, first_frame, generators)[0]

    @torch.no_grad()
    def draw(self, frames: Any, n_samples: int = 32, sampler: str = "fast",
             n_steps: int = 20, seed: int = 0, first_frame: int = 0,
             generators: Sequence[torch.Generator] | None = None) -> tuple[Tensor, Tensor]:
        """KDE samples of each frame, and phi's estimate of their mean.

        Parameters
        ----------
        frames : array_like, shape (B, H, W)
            Frames in photo-electrons or ADU (offset and gain are normalised away).
        n_samples : int
            Samples per frame, drawn in one batch.
        sampler : {"fast", "ancestral"}
            ``n_steps`` DDIM steps, or the seed's 100-step ancestral sampler.
        n_steps : int
            Steps of the fast sampler.
        seed : int
            Seed of the sampler's noise. Frame ``k`` draws from
            :func:`frame_generator` ``(seed, first_frame + k)``: the same seed gives the
            same samples of a frame whichever frames it is sent or batched with.
        first_frame : int
            Number of the first frame in its movie.
        generators : sequence of torch.Generator, optional
            One per frame, instead of ``seed`` and ``first_frame``.

        Returns
        -------
        samples : Tensor, shape (B, n_samples, upsample H, upsample W)
            The KDE samples (0 to 1).
        estimate : Tensor, shape (B, upsample H, upsample W)
            phi's estimate (0 to 1), the condition of the samples: trained on the squared
            error, it estimates the posterior mean KDE directly, without sampling noise.
        """
        x = torch.as_tensor(_validate.finite_array("frames", frames, ndim=3))
        s = _validate.positive_int("n_samples", n_samples)
        if sampler not in ("fast", "ancestral"):
            raise ValueError(f"sampler must be 'fast' or 'ancestral', got {sampler!r}")
        dev = next(self.psi.parameters()).device
        cond = self.phi(normalise_frames(x).to(dev))  # (B, 1, h, w)
        estimate = cond[:, 0].clamp(0.0, 1.0).cpu()
        b, _, h, w = cond.shape
        factor = 2 ** (len(self.psi.config.multipliers) - 1)
        ph, pw = (-h) % factor, (-w) % factor
        cond = torch.nn.functional.pad(cond, (0, pw, 0, ph))
        cond = cond.repeat_interleave(s, dim=0)
        gen = (list(generators) if generators is not None
               else [frame_generator(seed, first_frame + k) for k in range(b)])
        if len(gen) != b:
            raise ValueError(f"generators: {len(gen)} for {b} frames")

        def eps(y: Tensor, t: Tensor) -> Tensor:
            return self.psi(y, t, cond)

        shape = (b * s, 1, h + ph, w + pw)
        # The KDE lies in [0, 1]; a residual in [-phi, 1 - phi], pixel by pixel.
        k = self.target_scale
        clip: tuple[float | Tensor, float | Tensor] = (
            (-cond * k, (1.0 - cond) * k) if self.target == "residual" else (0.0, k))
        if sampler == "ancestral":
            y = sample_ancestral(eps, shape, self.schedule, generator=gen, device=dev,
                                 clip=clip)
        else:
            y = sample_ddim(eps, shape, self.schedule, n_steps, generator=gen, device=dev,
                            clip=clip)
        y = y / k
        if self.target == "residual":
            y = (y + cond).clamp(0.0, 1.0)
        return y[:, 0, :h, :w].reshape(b, s, h, w).cpu(), estimate

    def localize(self, frames: Any, n_samples: int = 32, sampler: str = "fast",
                 n_steps: int = 20, seed: int = 0, threshold: float = 0.3,
                 first_frame: int = 0, emitters_from: str = "estimate"
                 ) -> list[FrameLocalization]:
        """Mean, variance and emitters of each frame (see :meth:`draw`).

        Parameters
        ----------
        frames : array_like, shape (B, H, W)
            Frames.
        n_samples, sampler, n_steps, seed, first_frame
            As for :meth:`draw`.
        threshold : float
            Smallest KDE value (of the map read, 0 to 1) at an emitter.
        emitters_from : {"estimate", "mean"}
            The map the emitters are found on: phi's estimate of the posterior mean KDE
            (the default, :data:`EMITTERS_FROM`) or the samples' mean (the seed's). Either
            way each position's SD is its spread over the samples.

        Returns
        -------
        list of FrameLocalization
            One per frame.
        """
        if emitters_from not in EMITTERS_FROM:
            raise ValueError(f"emitters_from must be one of {EMITTERS_FROM}, "
                             f"got {emitters_from!r}")
        samples, estimate = self.draw(frames, n_samples, sampler, n_steps, seed, first_frame)
        out = []
        for smp, est in zip(samples.numpy(), estimate.numpy(), strict=True):
            em = locate_emitters(smp, self.upsample, self.sigma_y_px, threshold,
                                 est if emitters_from == "estimate" else None)
            out.append(FrameLocalization(mean=smp.mean(axis=0).astype(np.float32),
                                         variance=smp.var(axis=0).astype(np.float32),
                                         emitters=em))
        return out


def save(localizer: Localizer, path: str | Path) -> Path:
    """Write a localizer's weights (both networks, configurations, schedule).

    Parameters
    ----------
    localizer : Localizer
        What to save.
    path : str or Path
        The ``.pt`` file (parent folders created).

    Returns
    -------
    Path
        ``path``.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    torch.save({
        "format": WEIGHTS_FORMAT,
        "phi_config": asdict(localizer.phi.config),
        "unet_config": asdict(localizer.psi.config),
        "schedule": asdict(localizer.schedule),
        "sigma_y_px": localizer.sigma_y_px,
        "target": localizer.target,
        "target_scale": localizer.target_scale,
        "phi": {k: v.detach().cpu() for k, v in localizer.phi.state_dict().items()},
        "psi": {k: v.detach().cpu() for k, v in localizer.psi.state_dict().items()},
    }, p)
    return p


def load(path: str | Path, device: str | torch.device = "cpu") -> Localizer:
    """Load weights written by :func:`save` (``torch.load(weights_only=True)``).

    Parameters
    ----------
    path : str or Path
        The ``.pt`` file.
    device : str or torch.device
        Where the networks run.

    Returns
    -------
    Localizer
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"localizer weights {p}: no such file")
    card = read_card(p)
    if card and card.get("sha256") != sha256(p):
        raise ValueError(f"localizer weights {p}: sha256 differs from its card "
                         f"{p.with_suffix('.json').name} (a corrupt or replaced file)")
    try:
        blob = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors alike: not a weights file
        raise ValueError(f"localizer weights {p}: not readable ({type(exc).__name__})") from None
    if not isinstance(blob, dict) or blob.get("format") != WEIGHTS_FORMAT:
        raise ValueError(f"localizer weights {p}: not a {WEIGHTS_FORMAT} file")
    pc = dict(blob["phi_config"])
    pc["dilations"] = tuple(pc["dilations"])
    uc = dict(blob["unet_config"])
    uc["multipliers"] = tuple(uc["multipliers"])
    phi = KdeNet(KdeNetConfig(**pc))
    psi = ConditionalUNet(UNetConfig(**uc))
    phi.load_state_dict(blob["phi"])
    psi.load_state_dict(blob["psi"])
    loc = Localizer(phi.to(device), psi.to(device), Schedule(**blob["schedule"]),
                    float(blob["sigma_y_px"]), str(blob.get("target", "kde")),
                    float(blob.get("target_scale", 1.0)))
    loc.card = card
    return loc


def save_phi(phi: KdeNet, sigma_y_px: float, path: str | Path) -> Path:
    """Write phi alone (``livespt train phi``): its configuration, KDE kernel and weights.

    Parameters
    ----------
    phi : KdeNet
        The trained network.
    sigma_y_px : float
        The kernel of the KDE targets it was trained on, fine pixels.
    path : str or Path
        The ``.pt`` file (parent folders created).

    Returns
    -------
    Path
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": PHI_FORMAT, "phi_config": asdict(phi.config),
                "sigma_y_px": float(sigma_y_px),
                "phi": {k: v.detach().cpu() for k, v in phi.state_dict().items()}}, p)
    return p


def load_phi(path: str | Path) -> tuple[KdeNet, float, dict[str, Any]]:
    """Phi from a phi file (:func:`save_phi`) or from a localizer file (:func:`save`).

    Parameters
    ----------
    path : str or Path
        The ``.pt`` file.

    Returns
    -------
    (KdeNet, float, dict)
        The network, its KDE kernel (fine pixels) and the file's card.

    Raises
    ------
    ValueError
        Naming the file: missing, unreadable, of another format, or not matching its card.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"phi weights {p}: no such file")
    try:
        blob = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors alike: not a weights file
        raise ValueError(f"phi weights {p}: not readable ({type(exc).__name__})") from None
    fmt = blob.get("format") if isinstance(blob, dict) else None
    if fmt == WEIGHTS_FORMAT:
        loc = load(p)
        return loc.phi, loc.sigma_y_px, loc.card
    if fmt != PHI_FORMAT:
        raise ValueError(f"phi weights {p}: neither a {PHI_FORMAT} nor a {WEIGHTS_FORMAT} file")
    card = read_card(p, PHI_FORMAT)
    if card and card.get("sha256") != sha256(p):
        raise ValueError(f"phi weights {p}: sha256 differs from its card "
                         f"{p.with_suffix('.json').name} (a corrupt or replaced file)")
    pc = dict(blob["phi_config"])
    pc["dilations"] = tuple(pc["dilations"])
    phi = KdeNet(KdeNetConfig(**pc))
    phi.load_state_dict(blob["phi"])
    return phi, float(blob["sigma_y_px"]), card


def read_card(weights: str | Path, fmt: str = WEIGHTS_FORMAT) -> dict[str, Any]:
    """The card beside a weights file (``.json``), or an empty dict when there is none.

    Parameters
    ----------
    weights : str or Path
        The ``.pt`` file.
    fmt : str
        The card's format (:data:`WEIGHTS_FORMAT`, or :data:`PHI_FORMAT` for phi alone).

    Returns
    -------
    dict

    Raises
    ------
    ValueError
        The card is not a JSON object of format ``fmt``.
    """
    path = Path(weights).with_suffix(".json")
    if not path.is_file():
        return {}
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"localizer card {path}: not valid JSON ({exc})") from None
    if not isinstance(card, dict) or card.get("format") != fmt:
        raise ValueError(f"localizer card {path}: not a {fmt} card")
    return card


def write_card(weights: str | Path, card: dict[str, Any], fmt: str = WEIGHTS_FORMAT) -> Path:
    """Write the card of a weights file, with its format and the file's sha256.

    Parameters
    ----------
    weights : str or Path
        The ``.pt`` file.
    card : dict
        Name, training, metrics (JSON-ready).
    fmt : str
        The card's format (:data:`WEIGHTS_FORMAT`, or :data:`PHI_FORMAT` for phi alone).

    Returns
    -------
    Path
        The ``.json`` written.
    """
    p = Path(weights)
    full = {"format": fmt, **card, "sha256": sha256(p)}
    out = p.with_suffix(".json")
    out.write_text(json.dumps(full, indent=2) + "\n")
    return out


def shipped_localizer() -> Path | None:
    """The shipped localizer's weights file, or None when none is installed."""
    found = sorted(SHIPPED_DIR.glob("*.pt"))
    return found[0] if found else None
