"""Models loaded once at server start, resident on the device, shared by all sessions.

Each model gets one :class:`~livespt.server.inference.batcher.DynamicBatcher`: the sessions' worker
threads submit their windows of the frame, the batcher runs one forward pass
for everything that arrived within ``max_delay_ms`` (up to ``max_batch``
windows). Which model does what:

* the live stream uses a model that sees the images (variant ``image+features``,
  else ``image``): patches are cropped around each localized spot;
* ``AnalyzeTracks`` receives positions only, so it uses a ``features`` model.

Whether a model can take a stream's windows, and the CVE fallback, are decided
by the window estimator (:mod:`livespt.server.pipeline.estimate`); every
estimate says which method made it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from livespt.models.vit.estimator import ViTEstimator, ViTPrediction, to_physical
from livespt.models.vit.inputs import WindowInputs, concat_inputs
from livespt.models.vit.weights import ModelLoadError, require_shipped_weights
from livespt.server.inference.batcher import DynamicBatcher, split_tensors

log = logging.getLogger("livespt.server")


@dataclass(frozen=True)
class BatchingOptions:
    """Dynamic batching of model calls.

    Attributes
    ----------
    max_batch : int, optional
        Most windows per forward pass; None: 4096 on CUDA, 256 on CPU (on CPU,
        larger batches run slower per window: ``benchmarks/bench_vit.py``).
    max_delay_ms : float
        Longest a request waits for others to join its batch, ms.
    """

    max_batch: int | None = None
    max_delay_ms: float = 2.0

    def batch_limit(self, device: str) -> int:
        """``max_batch``, or the device's default."""
        if self.max_batch is not None:
            return self.max_batch
        return 4096 if str(device).startswith("cuda") else 256


class ResidentModel:
    """One loaded model and its batcher.

    Parameters
    ----------
    estimator : ViTEstimator
        The loaded network, on its device.
    path : Path
        Where its weights came from.
    batching : BatchingOptions
        Batch size and delay limits.
    """

    def __init__(self, estimator: ViTEstimator, path: Path, batching: BatchingOptions) -> None:
        self.estimator = estimator
        self.path = path
        self.batcher: DynamicBatcher[WindowInputs, tuple[Tensor, ...]] = DynamicBatcher(
            self._run, concat=concat_inputs, split=split_tensors, size=len,
            max_batch=batching.batch_limit(str(estimator.device)),
            max_delay_ms=batching.max_delay_ms,
            name=f"batcher[{estimator.name}]")

    def _run(self, inputs: WindowInputs) -> tuple[Tensor, ...]:
        mu, ls = self.estimator.predict_log(inputs)
        return mu.cpu(), ls.cpu()

    @property
    def name(self) -> str:
        """The model's name, from its card."""
        return self.estimator.name

    @property
    def variant(self) -> str:
        """``image+features``, ``image`` or ``features``."""
        return self.estimator.model.config.variant

    @property
    def method(self) -> str:
        """The ``method`` of estimates made with this model."""
        return self.estimator.method

    @property
    def max_frames(self) -> int:
        """Longest window the model takes, points."""
        return self.estimator.model.config.max_frames

    @property
    def patch_norm(self) -> str:
        """How the model's patches are normalised (``window`` or ``frame``)."""
        return self.estimator.model.config.patch_norm

    @property
    def patch_px(self) -> int:
        """Patch side the model expects, pixels."""
        return self.estimator.model.config.patch_px

    def estimate(self, inputs: WindowInputs, pixel_size_um: float,
                 frame_interval_s: float) -> ViTPrediction:
        """D with 90 % intervals for windows of one acquisition, batched with other callers."""
        mu, ls = self.batcher(inputs)
        return to_physical(mu, ls, pixel_size_um, frame_interval_s)

    def estimate_guarded(self, inputs: WindowInputs, pixel_size_um: float,
                         frame_interval_s: float) -> tuple[ViTPrediction, NDArray[np.bool_]]:
        """:meth:`estimate`, and for each window whether it is out of the training distribution.

        The guard (:mod:`livespt.models.vit.ood`) runs on the CPU in the caller's
        thread, outside the batched forward pass.
        """
        mu, ls = self.batcher(inputs)
        ood = self.estimator.out_of_distribution(inputs, mu).numpy().astype(bool)
        return to_physical(mu, ls, pixel_size_um, frame_interval_s), ood

    @property
    def has_guard(self) -> bool:
        """Whether the model's weights carry a fitted out-of-distribution guard."""
        return self.estimator.guard.fitted

    def info(self) -> dict[str, Any]:
        """What GetServerInfo and session summaries report about this model."""
        card = self.estimator.card
        return {"name": self.estimator.name, "variant": self.variant, "file": str(self.path),
                "sha256": card.get("sha256"), "parameters": card.get("parameters"),
                "device": str(self.estimator.device), "date": card.get("date"),
                "metrics": card.get("metrics", {}), "ood_guard": self.has_guard}


class ModelRegistry:
    """The models of a server.

    Parameters
    ----------
    paths : list of Path or None
        Weight files to load; None: every shipped file under ``models/weights/``
        (the set the shipped cards promise, which must all be present: an
        installation without them fails rather than serving CVE estimates only);
        an empty list: no model.
    device : str
        Torch device for all models.
    batching : BatchingOptions
        Dynamic batching limits.

    Raises
    ------
    livespt.models.vit.ModelLoadError
        When a file is missing, corrupt or does not match its card, or (with
        ``paths=None``) when no shipped weights are installed; start-up fails. For
        the shipped set, the one-line message also says how to run without models.
    """

    def __init__(self, paths: list[Path] | None, device: str,
                 batching: BatchingOptions | None = None) -> None:
        self.batching = batching or BatchingOptions()
        self.device = device
        self.models: list[ResidentModel] = []
        if device == "cpu":
            torch.set_num_threads(max(1, torch.get_num_threads()))
        try:
            for p in require_shipped_weights() if paths is None else paths:
                est = ViTEstimator.load(p, device)
                self.models.append(ResidentModel(est, Path(p), self.batching))
                log.info("model %s (%s) resident on %s", est.name, est.model.config.variant,
                         device)
        except ModelLoadError as exc:
            self.close()
            if paths is not None:
                raise
            raise ModelLoadError(f"{exc}; reinstall livespt to restore the shipped models, "
                                 "or start without models (--no-models: CVE estimates "
                                 "only)") from None
        self.window_model = self._pick(("image+features", "image"))
        self.track_model = self._pick(("features",))

    def _pick(self, variants: tuple[str, ...]) -> ResidentModel | None:
        for v in variants:
            for m in self.models:
                if m.variant == v:
                    return m
        return None

    def info(self) -> list[dict[str, Any]]:
        """One entry per loaded model, with its role."""
        out = []
        for m in self.models:
            d = m.info()
            d["used_for"] = [role for role, r in (("stream", self.window_model),
                                                  ("analyze_tracks", self.track_model))
                             if r is m]
            out.append(d)
        return out

    def close(self) -> None:
        """Stop the batchers (queued work is finished first)."""
        for m in self.models:
            m.batcher.close()
