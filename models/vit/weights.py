"""Weight files and their JSON cards: where shipped weights live, hashing, cards.

Shared by inference (:mod:`livespt.models.vit.estimator`) and training
(:mod:`livespt.models.vit.train`), so loading weights never imports training
code. A weights file ``NAME.pt`` always comes with its card ``NAME.json``
(format, architecture, training, metrics, the file's sha256).

The shipped set is whatever the cards in :data:`WEIGHTS_DIR` promise: every
card names a ``.pt`` beside it, and every ``.pt`` there must have a card.
:func:`require_shipped_weights` turns a missing half of a pair, or a folder
without any card (an installation that lost its package data), into a
:class:`ModelLoadError` naming the file, instead of a server that silently
runs without models.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
"""Where shipped weights live (``livespt/models/weights/``, ``models/weights/`` in a checkout)."""

WEIGHTS_FORMAT = "livespt-vit/1"
"""The ``format`` of weights files and of their cards."""


class ModelLoadError(ValueError):
    """Weights that cannot be used: missing, unknown format, corrupt, or not matching the card."""


def sha256(path: str | Path) -> str:
    """Hex sha256 of a file.

    Parameters
    ----------
    path : str or Path
        The file, read in 1 MiB chunks.

    Returns
    -------
    str
        64 lowercase hex digits.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def card_path(weights: str | Path) -> Path:
    """The card of a weights file: the same path with ``.json``.

    Parameters
    ----------
    weights : str or Path
        A ``.pt`` file.

    Returns
    -------
    Path
        ``weights`` with the suffix ``.json``.
    """
    return Path(weights).with_suffix(".json")


def read_card(weights: str | Path) -> dict[str, Any]:
    """Read and check the card of a weights file (not the weights themselves).

    Parameters
    ----------
    weights : str or Path
        A ``.pt`` file; its card is :func:`card_path` of it.

    Returns
    -------
    dict
        The card, whose ``format`` is :data:`WEIGHTS_FORMAT`.

    Raises
    ------
    ModelLoadError
        The card is missing, is not a JSON object, or has another format.
    """
    path = card_path(weights)
    if not path.is_file():
        raise ModelLoadError(f"model weights {weights}: its card {path.name} is missing")
    try:
        card = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"model card {path}: not valid JSON ({exc})") from None
    if not isinstance(card, dict):
        raise ModelLoadError(f"model card {path}: not a JSON object")
    if card.get("format") != WEIGHTS_FORMAT:
        raise ModelLoadError(f"model card {path}: unknown format {card.get('format')!r}")
    return card


def write_card(weights: str | Path, card: dict[str, Any]) -> Path:
    """Write the card of a weights file (indented JSON, final newline).

    Parameters
    ----------
    weights : str or Path
        The ``.pt`` file the card describes.
    card : dict
        JSON-ready content; it should hold ``format`` and the file's ``sha256``.

    Returns
    -------
    Path
        The card written, :func:`card_path` of ``weights``.
    """
    path = card_path(weights)
    path.write_text(json.dumps(card, indent=2) + "\n")
    return path


def shipped_weights(weights_dir: Path | None = None) -> list[Path]:
    """Weight files the shipped folder promises, whether or not each is present.

    One ``.pt`` per card (``NAME.json`` promises ``NAME.pt``) and every ``.pt``
    in the folder, sorted. Loading a listed file whose weights or card are
    missing fails with a :class:`ModelLoadError` naming it; an empty list means
    the folder holds neither weights nor cards (see :func:`require_shipped_weights`).

    Parameters
    ----------
    weights_dir : Path, optional
        The folder; default :data:`WEIGHTS_DIR`.

    Returns
    -------
    list of Path
        The ``.pt`` paths, sorted by name.
    """
    folder = WEIGHTS_DIR if weights_dir is None else Path(weights_dir)
    if not folder.is_dir():
        return []
    stems = {p.stem for p in folder.glob("*.json")} | {p.stem for p in folder.glob("*.pt")}
    return sorted(folder / f"{stem}.pt" for stem in stems)


def require_shipped_weights(weights_dir: Path | None = None) -> list[Path]:
    """The shipped weight files, all present with their cards, or an error naming what is not.

    Parameters
    ----------
    weights_dir : Path, optional
        The folder; default :data:`WEIGHTS_DIR`.

    Returns
    -------
    list of Path
        At least one ``.pt`` path, sorted, each beside its card. Contents (format,
        sha256) are checked when a file is loaded, not here.

    Raises
    ------
    ModelLoadError
        The folder holds no card at all, a card's weights file is missing, or a
        weights file's card is missing; the message names the file.
    """
    folder = WEIGHTS_DIR if weights_dir is None else Path(weights_dir)
    paths = shipped_weights(folder)
    if not paths:
        raise ModelLoadError(
            f"no model weights in {folder}: the shipped weights (*.pt) and their cards "
            "(*.json) are missing from this installation")
    for p in paths:
        if not p.is_file():
            raise ModelLoadError(
                f"model weights {p}: no such file (its card {card_path(p).name} lists it)")
        if not card_path(p).is_file():
            raise ModelLoadError(f"model weights {p}: its card {card_path(p).name} is missing")
    return paths
