"""JSON that every language reads: no NaN or Infinity tokens, numpy scalars as numbers.

Python's ``json`` writes ``NaN`` and ``Infinity`` for non-finite floats, which are not JSON
(JavaScript's ``JSON.parse``, Go, Java reject them). Every summary LiveSPT writes goes
through :func:`dumps`: a non-finite float becomes ``null``.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np


def _clean(o: Any) -> Any:
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, (bool, np.bool_)):
        return bool(o)
    if isinstance(o, (int, np.integer)):
        return int(o)
    if isinstance(o, (float, np.floating)):
        return float(o) if math.isfinite(float(o)) else None
    if isinstance(o, np.ndarray):
        return _clean(o.tolist())
    if o is None or isinstance(o, str):
        return o
    return str(o)


def dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` of ``obj`` with non-finite floats as ``null`` (strict JSON).

    Parameters
    ----------
    obj : Any
        Nested dicts, lists, numbers (numpy's too), strings; anything else is written
        as its ``str``.
    **kwargs
        Passed to :func:`json.dumps` (``indent``, ``sort_keys``).
    """
    return json.dumps(_clean(obj), allow_nan=False, **kwargs)
