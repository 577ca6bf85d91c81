"""Checks and plumbing shared by the simulator modules (not public API).

The generic checks live in :mod:`livespt.models._validate`; the few here are specific to
the simulator (probabilities, seeds, devices, optional arrays) and follow the
same rule: a :class:`ValueError` whose message starts with the parameter name.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from livespt.models import _validate

Device = str | torch.device


def probability(name: str, value: Any) -> float:
    """Return ``value`` as a float in ``[0, 1]``, or raise."""
    return _validate.in_range(name, value, 0.0, 1.0)


def make_generator(
    seed: Any, generator: torch.Generator | None, device: Device
) -> torch.Generator:
    """Return ``generator`` if given, else a new one on ``device`` seeded with ``seed``.

    A generator must live on the device whose random numbers it draws, so the
    same seed gives the same numbers on one kind of device (CPU and CUDA streams
    differ from each other).
    """
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator, got {type(generator)!r}")
        return generator
    s = _validate.positive_int("seed", seed, minimum=0)
    g = torch.Generator(device=torch.device(device))
    g.manual_seed(s)
    return g


def as_device(device: Any) -> torch.device:
    """Return ``device`` as a :class:`torch.device`, or raise naming ``device``."""
    try:
        return torch.device(device)
    except (TypeError, RuntimeError) as exc:
        raise ValueError(f"device must name a torch device, got {device!r}: {exc}") from None


def optional_map(
    name: str, values: Any, positive: bool = False, non_negative: bool = False
) -> NDArray[np.float64] | None:
    """Validate an optional 2-D per-pixel map (finite; optionally > 0 or >= 0)."""
    if values is None:
        return None
    arr = _validate.finite_array(name, values, ndim=2)
    if positive and not np.all(arr > 0):
        raise ValueError(f"{name} must be > 0 everywhere")
    if non_negative and not np.all(arr >= 0):
        raise ValueError(f"{name} must be >= 0 everywhere")
    arr.setflags(write=False)
    return arr


def positions_array(name: str, values: Any, n: int) -> NDArray[np.float64]:
    """Validate an ``(n, 2)`` array of finite (x, y) positions."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    arr = _validate.finite_array(name, values, ndim=2)
    if arr.shape != (n, 2):
        raise ValueError(f"{name} must have shape ({n}, 2), got {arr.shape}")
    return arr


def shape_2d(name: str, value: Any) -> tuple[int, int]:
    """Validate an image shape ``(height, width)`` of positive integers."""
    try:
        h, w = value
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (height, width), got {value!r}") from None
    return (_validate.positive_int(f"{name}[0]", h), _validate.positive_int(f"{name}[1]", w))
