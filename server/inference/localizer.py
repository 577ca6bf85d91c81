"""The localizer (DeepSTORM + DDPM) resident on the server's device, batched across callers.

Each ``Localize`` call submits its frames with their settings; the batcher's thread takes
what arrived within ``max_delay_ms`` and draws the samples of every frame that shares a
frame size, sampler, step count and sample count in one batch. Each frame draws its noise
from its own generator, seeded by the call's seed and the frame's number in its movie, so
a frame's samples do not depend on which calls it was batched with (tested).

A caller that leaves (cancel, deadline, dropped connection) sets its ``gone`` event; its
frames are then taken out of the queue if their batch has not started (:class:`CallerGone`
is raised in its place), so a vanished client's frames cost nothing more. A batch already
running is finished: it may hold other callers' frames.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from livespt.models.ddpm.localizer import Localizer, frame_generator, load
from livespt.server.inference.batcher import DynamicBatcher
from livespt.server.pipeline.localize import Drawn, LocalizeSettings, TrainedOn

log = logging.getLogger("livespt.server")

MAX_BATCH_FRAMES = 64
"""Most frames drawn in one batch (each with its samples)."""
GONE_POLL_S = 0.1
"""How often a waiting call looks whether its caller has left, seconds."""


class CallerGone(Exception):
    """The caller left before its frames' batch started; they were not drawn."""


@dataclass(frozen=True)
class _Job:
    frames: NDArray[np.float32]
    settings: LocalizeSettings
    first_frame: int

    @property
    def key(self) -> tuple[int, int, int, str, int]:
        s = self.settings
        steps = s.steps if s.sampler == "fast" else 0
        return (*self.frames.shape[1:], s.samples, s.sampler, steps)


class ResidentLocalizer:
    """The loaded localizer and its batcher.

    Parameters
    ----------
    path : Path
        Weights file (with its card beside it, when it has one).
    device : str
        Torch device.
    max_delay_ms : float
        Longest a call waits for others to join its batch, ms.
    """

    def __init__(self, path: Path, device: str, max_delay_ms: float = 2.0) -> None:
        self.path = Path(path)
        self.localizer: Localizer = load(self.path, device)
        self.device = device
        self.batcher: DynamicBatcher[list[_Job], list[Drawn]] = DynamicBatcher(
            self._run, concat=lambda jobs: [j for part in jobs for j in part],
            split=_split, size=lambda jobs: sum(len(j.frames) for j in jobs),
            max_batch=MAX_BATCH_FRAMES, max_delay_ms=max_delay_ms, name="batcher[localizer]")
        log.info("localizer %s resident on %s", self.name, device)

    @property
    def name(self) -> str:
        """The weights' name (the card's, else the file's stem)."""
        return str(self.localizer.card.get("name", self.path.stem))

    @property
    def upsample(self) -> int:
        """Fine pixels per camera pixel."""
        return int(self.localizer.upsample)

    @property
    def trained_on(self) -> TrainedOn:
        """What the model was trained on, from its card (users' data are checked against it)."""
        return TrainedOn.from_card(self.localizer.card)

    def draw(self, frames: NDArray[np.float32], settings: LocalizeSettings,
             first_frame: int, gone: threading.Event | None = None) -> Drawn:
        """Samples of ``frames`` and phi's estimate (:data:`Drawn`), batched with others.

        Parameters
        ----------
        frames, settings, first_frame
            As :data:`~livespt.server.pipeline.localize.Draw`.
        gone : threading.Event, optional
            Set when the caller has left: its frames are dropped if not yet drawn.

        Raises
        ------
        CallerGone
            ``gone`` was set before the frames' batch started.
        """
        future = self.batcher.submit([_Job(frames, settings, first_frame)])
        while True:
            try:
                return future.result(timeout=GONE_POLL_S if gone is not None else None)[0]
            except FutureTimeout:
                assert gone is not None
                if gone.is_set() and future.cancel():
                    raise CallerGone("the caller left before its frames were drawn") from None

    def _run(self, jobs: list[_Job]) -> list[Drawn]:
        out: list[Drawn | None] = [None] * len(jobs)
        groups: dict[tuple[Any, ...], list[int]] = {}
        for k, job in enumerate(jobs):
            groups.setdefault(job.key, []).append(k)
        for members in groups.values():
            s = jobs[members[0]].settings
            frames = np.concatenate([jobs[k].frames for k in members])
            gens = [frame_generator(jobs[k].settings.seed, jobs[k].first_frame + i)
                    for k in members for i in range(len(jobs[k].frames))]
            smp, est = self.localizer.draw(torch.from_numpy(frames), s.samples, s.sampler,
                                           s.steps, generators=gens)
            smp_a, est_a = smp.numpy(), est.numpy()
            start = 0
            for k in members:
                n = len(jobs[k].frames)
                out[k] = (smp_a[start:start + n], est_a[start:start + n])
                start += n
        return [o for o in out if o is not None]

    def info(self) -> dict[str, Any]:
        """What GetServerInfo reports about the localizer."""
        card = self.localizer.card
        params = sum(p.numel() for net in (self.localizer.phi, self.localizer.psi)
                     for p in net.parameters())
        return {"name": self.name, "kind": "localizer", "file": str(self.path),
                "sha256": card.get("sha256"), "parameters": params, "device": self.device,
                "date": card.get("date"), "metrics": card.get("metrics", {}),
                "used_for": ["localize"], "upsample": self.upsample, "card": card}

    def close(self) -> None:
        """Stop the batcher (queued calls are finished first)."""
        self.batcher.close()


def _split(out: list[Drawn], sizes: list[int]) -> list[list[Drawn]]:
    """One part per call: each call was one job, so one array each."""
    return [[o] for o in out]
