"""The localizer at inference: frames in; mean KDE, per-pixel variance and emitters out.

phi's estimate conditions Psi; ``n_samples`` KDE samples of each frame are drawn in one
batch with the fast sampler (:func:`~livespt.models.ddpm.diffusion.sample_ddim`) or the
seed's ancestral one; their mean and variance are the maps, and emitters are read from
them (:mod:`~livespt.models.ddpm.emitters`). Frames of any size: phi is fully
convolutional, and Psi's input is padded to its multiple of ``2 ** (levels - 1)``.

Weights are one file (``format`` :data:`WEIGHTS_FORMAT`) holding both networks, their
configurations and the schedule; :func:`save` and :func:`load` (``weights_only=True``).
"""

from __future__ import annotations

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

WEIGHTS_FORMAT = "livespt-ddpm/1"
"""The ``format`` of localizer weight files."""


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
    """

    def __init__(self, phi: KdeNet, psi: ConditionalUNet, schedule: Schedule,
                 sigma_y_px: float = 3.0) -> None:
        self.phi = phi.eval()
        self.psi = psi.eval()
        self.schedule = schedule
        self.sigma_y_px = float(sigma_y_px)
        self.upsample = phi.config.upsample

    @torch.no_grad()
    def sample(self, frames: Any, n_samples: int = 32, sampler: str = "fast",
               n_steps: int = 20, seed: int = 0) -> Tensor:
        """KDE samples of each frame.

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
            Seed of the sampler's noise (same seed, same samples).

        Returns
        -------
        Tensor, shape (B, n_samples, upsample H, upsample W)
        """
        x = torch.as_tensor(_validate.finite_array("frames", frames, ndim=3))
        s = _validate.positive_int("n_samples", n_samples)
        if sampler not in ("fast", "ancestral"):
            raise ValueError(f"sampler must be 'fast' or 'ancestral', got {sampler!r}")
        dev = next(self.psi.parameters()).device
        cond = self.phi(normalise_frames(x).to(dev))  # (B, 1, h, w)
        b, _, h, w = cond.shape
        factor = 2 ** (len(self.psi.config.multipliers) - 1)
        ph, pw = (-h) % factor, (-w) % factor
        cond = torch.nn.functional.pad(cond, (0, pw, 0, ph))
        cond = cond.repeat_interleave(s, dim=0)
        gen = torch.Generator().manual_seed(seed)

        def eps(y: Tensor, t: Tensor) -> Tensor:
            return self.psi(y, t, cond)

        shape = (b * s, 1, h + ph, w + pw)
        if sampler == "ancestral":
            y = sample_ancestral(eps, shape, self.schedule, generator=gen, device=dev,
                                 clip=(0.0, 1.0))
        else:
            y = sample_ddim(eps, shape, self.schedule, n_steps, generator=gen, device=dev,
                            clip=(0.0, 1.0))
        return y[:, 0, :h, :w].reshape(b, s, h, w).cpu()

    def localize(self, frames: Any, n_samples: int = 32, sampler: str = "fast",
                 n_steps: int = 20, seed: int = 0, threshold: float = 0.3
                 ) -> list[FrameLocalization]:
        """Mean, variance and emitters of each frame (see :meth:`sample`).

        Parameters
        ----------
        frames : array_like, shape (B, H, W)
            Frames.
        n_samples, sampler, n_steps, seed
            As for :meth:`sample`.
        threshold : float
            Smallest mean KDE value at an emitter.

        Returns
        -------
        list of FrameLocalization
            One per frame.
        """
        samples = self.sample(frames, n_samples, sampler, n_steps, seed).numpy()
        out = []
        for smp in samples:
            em = locate_emitters(smp, self.upsample, self.sigma_y_px, threshold)
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
    blob = torch.load(p, map_location="cpu", weights_only=True)
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
    return Localizer(phi.to(device), psi.to(device), Schedule(**blob["schedule"]),
                     float(blob["sigma_y_px"]))
