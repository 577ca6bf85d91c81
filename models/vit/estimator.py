"""Loading shipped weights and estimating D with them.

Weights are a ``.pt`` file written by :func:`livespt.models.vit.train.save` next
to a JSON card (same stem). Loading checks the card, the file's sha256 against
it, and uses ``torch.load(weights_only=True)``: an unknown, corrupt or tampered
file is a :class:`ModelLoadError` naming the file, never an arbitrary pickle.
File hashing, cards and the shipped folder are in :mod:`livespt.models.vit.weights`;
this module imports no training code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from livespt.models.units import d_to_um2_s
from livespt.models.vit.inputs import WindowInputs
from livespt.models.vit.model import OOD_BUFFERS, DiffusionViT, ViTConfig
from livespt.models.vit.ood import Guard, flag
from livespt.models.vit.weights import (
    WEIGHTS_DIR,
    ModelLoadError,
    read_card,
    require_shipped_weights,
    sha256,
    shipped_weights,
)

__all__ = [
    "WEIGHTS_DIR",
    "ModelLoadError",
    "ViTEstimator",
    "ViTPrediction",
    "require_shipped_weights",
    "shipped_weights",
    "to_physical",
]

Z90 = 1.6448536269514722  # two-sided 90 % interval of a Gaussian


@dataclass(frozen=True)
class ViTPrediction:
    """D and its 90 % interval for a batch of windows, in um^2/s."""

    d_um2_s: NDArray[np.float64]
    d_low_um2_s: NDArray[np.float64]
    d_high_um2_s: NDArray[np.float64]
    log_sd: NDArray[np.float64]  # SD of log D (dimensionless)


class ViTEstimator:
    """A loaded :class:`DiffusionViT`, resident on one device.

    Parameters
    ----------
    model : DiffusionViT
        The network (moved to ``device`` and set to eval mode).
    card : dict
        Its JSON card.
    device : str or torch.device
        Where it runs; on CUDA the forward pass uses bf16 autocast.
    """

    def __init__(self, model: DiffusionViT, card: dict[str, Any],
                 device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.card = card
        self.name = str(card.get("name", "vit"))
        # A CPU copy of the out-of-distribution guard: callers hold their inputs on
        # the CPU, and the guard is a small matrix product.
        self.guard = Guard.of(self.model, "cpu")

    @property
    def method(self) -> str:
        """What estimates made by this model say in their ``method`` field."""
        return f"vit:{self.name}"

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> ViTEstimator:
        """Load weights and card, checking format and sha256.

        Parameters
        ----------
        path : str or Path
            The ``.pt`` file; its card is the same path with ``.json``.
        device : str or torch.device
            Where the model is kept.

        Returns
        -------
        ViTEstimator
            The model in eval mode on ``device``, with its card.

        Raises
        ------
        ModelLoadError
            Naming the file and what is wrong with it.
        """
        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"model weights {path}: no such file")
        card = read_card(path)
        digest = sha256(path)
        if digest != card.get("sha256"):
            raise ModelLoadError(
                f"model weights {path}: sha256 {digest[:12]}... does not match the card's "
                f"{str(card.get('sha256'))[:12]}... (corrupt or replaced file)")
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            config = ViTConfig(**blob["config"])
            model = DiffusionViT(config)
            missing, unexpected = model.load_state_dict(blob["state_dict"], strict=False)
            # Weights written before the OOD guard existed load with the guard off.
            if unexpected or set(missing) - set(OOD_BUFFERS):
                raise RuntimeError(f"missing keys {missing}, unexpected keys {unexpected}")
        except Exception as exc:  # any failure here means a bad file
            raise ModelLoadError(f"model weights {path}: cannot be loaded ({exc})") from None
        return cls(model, card, device)

    @torch.no_grad()
    def predict_log(self, inputs: WindowInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log SD of ``log D*`` (px^2/frame), float32 on the model's device."""
        x = inputs.to(self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16,
                            enabled=self.device.type == "cuda"):
            mu, ls = self.model(x.images, x.geometry, x.valid, x.features, x.acquisition)
        return mu.float(), ls.float()

    def predict(self, inputs: WindowInputs, pixel_size_um: float,
                frame_interval_s: float) -> ViTPrediction:
        """D (um^2/s) with a 90 % interval for windows of one acquisition."""
        mu, ls = self.predict_log(inputs)
        return to_physical(mu, ls, pixel_size_um, frame_interval_s)

    def out_of_distribution(self, inputs: WindowInputs, mu: torch.Tensor) -> torch.Tensor:
        """True (B,) for windows unlike the training windows (:mod:`livespt.models.vit.ood`).

        ``mu`` is the model's predicted log D* for them. Weights without a fitted
        guard flag nothing.
        """
        if not self.guard.fitted:
            return torch.zeros(len(inputs), dtype=torch.bool)
        return flag(self.guard, inputs.to("cpu"), mu.detach().float().cpu())


def to_physical(mu: torch.Tensor, log_sd: torch.Tensor, pixel_size_um: float,
                frame_interval_s: float) -> ViTPrediction:
    """Convert ``log D*`` mean and log SD to D in um^2/s with a 90 % interval."""
    m = mu.double().cpu().numpy()
    s = np.exp(log_sd.double().cpu().numpy())
    def physical(log_d_star: NDArray[np.float64]) -> NDArray[np.float64]:
        return d_to_um2_s(np.exp(log_d_star), pixel_size_um, frame_interval_s)

    return ViTPrediction(
        d_um2_s=physical(m),
        d_low_um2_s=physical(m - Z90 * s),
        d_high_um2_s=physical(m + Z90 * s),
        log_sd=s,
    )
